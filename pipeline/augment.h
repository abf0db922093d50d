/* pipeline/augment.h — crop boxes (train: RandomResizedCrop + flip; eval: resize + center
 * crop); the resampler that writes the output image is pipeline/resize.h.
 *
 * Boxes are in source-pixel edge coordinates: the box covers [x, x+w) x [y, y+h) of the
 * original image, so a box maps to a DCT-scaled image (scale s) as [x*s, (x+w)*s).
 * Train boxes follow torchvision's RandomResizedCrop.get_params: up to 10 tries of an area
 * fraction uniform in [min_scale, max_scale] and an aspect ratio log-uniform in
 * [min_aspect, max_aspect], w = round(sqrt(area*aspect)), h = round(sqrt(area/aspect)),
 * accepted when 0 < w <= W and 0 < h <= H, with a uniform integer offset; else the
 * fallback: the central crop with the aspect ratio clamped into the range. Flip p = 0.5.
 * All draws come from ih_rng_make(seed, epoch, sample) in a fixed order.
 * Pure functions; any thread.
 */
#ifndef PIPE_AUGMENT_H
#define PIPE_AUGMENT_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double x, y, w, h; /* box in source pixels (edge coordinates) */
    int flip;          /* 1: mirror horizontally */
} pipe_crop;

typedef struct {
    float min_scale, max_scale;
    float min_aspect, max_aspect;
} pipe_rrc;

/* Train box for an image of W x H (both >= 1). */
void pipe_crop_train(uint64_t seed, uint64_t epoch, uint64_t sample, int W, int H,
                     const pipe_rrc *p, pipe_crop *out);

/* Eval box: the center crop x crop window of the image resized so its shorter side is
 * `resize`, expressed in source pixels (torchvision Resize(resize) + CenterCrop(crop)). */
void pipe_crop_eval(int W, int H, int resize, int crop, pipe_crop *out);

#endif
