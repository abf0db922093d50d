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

/* Colour augmentation of fb.resnet.torch (Goyal et al. used its recipe): ColorJitter, i.e.
 * brightness, contrast and saturation in a random order, each blending with alpha =
 * 1 + U(-v, v) (brightness: with black; contrast: with the mean grey level; saturation: with
 * the pixel's grey, grey = 0.299 R + 0.587 G + 0.114 B); then AlexNet's PCA Lighting, adding
 * eigvec * (alpha .* eigval) with alpha ~ N(0, lighting) per channel, ImageNet eigenvalues
 * and eigenvectors as fb.resnet.torch (scaled to 0..255). A zero strength switches a step
 * off (fb.resnet.torch: 0.4, 0.4, 0.4 and 0.1). */
typedef struct {
    float brightness, contrast, saturation;
    float lighting;
} pipe_color;

/* The stream id of colour draws: ih_rng_make(seed, epoch, PIPE_COLOR_STREAM | sample), apart
 * from the crop stream (seed, epoch, sample) and the shuffle stream (bit 63). */
#define PIPE_COLOR_STREAM 0x4000000000000000ull

/* 1 when any step of p is on. */
static inline int pipe_color_on(const pipe_color *p)
{
    return p->brightness > 0 || p->contrast > 0 || p->saturation > 0 || p->lighting > 0;
}

/* The whole colour chain for (seed, epoch, sample) is one affine map per pixel, rgb' =
 * M rgb + t (every step is affine; contrast's mean grey is an affine function of the image's
 * channel means `mean`). Writes M (row-major 3x3) and t; pure. */
void pipe_color_affine(uint64_t seed, uint64_t epoch, uint64_t sample, const pipe_color *p, const double mean[3],
                       double M[9], double t[3]);

/* Applies the colour chain to npix RGB pixels in place (float maths, one rounding and a clamp
 * to 0..255 at the end; fb.resnet.torch works in float and does not clamp). Never allocates. */
void pipe_color_apply(uint64_t seed, uint64_t epoch, uint64_t sample, const pipe_color *p, uint8_t *rgb,
                      size_t npix);

/* Train box for an image of W x H (both >= 1). */
void pipe_crop_train(uint64_t seed, uint64_t epoch, uint64_t sample, int W, int H,
                     const pipe_rrc *p, pipe_crop *out);

/* Eval box: the center crop x crop window of the image resized so its shorter side is
 * `resize`, expressed in source pixels (torchvision Resize(resize) + CenterCrop(crop)). */
void pipe_crop_eval(int W, int H, int resize, int crop, pipe_crop *out);

#endif
