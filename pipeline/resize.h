/* pipeline/resize.h — separable fixed-point resampling of a box of an RGB image into the
 * output slot, with an optional horizontal mirror.
 *
 * Filter: a triangle (tent) kernel whose support is max(1, scale) source pixels per axis,
 * scale = box side / output side. For scale < 2 it is exactly bilinear interpolation (the
 * decoder's DCT scaling leaves at most a 2x shrink for all but huge images); when shrinking
 * by 2x or more it widens into an antialiasing filter (Pillow's "bilinear" with support).
 * Sample positions are pixel centres: u = bx + (o + 0.5) * scale - 0.5, taps clamped to the
 * image (edge pixels repeat).
 *
 * Arithmetic: vertical pass first, over the whole width of the window, into one uint16 row
 * holding value * 256 (weights Q14, sum exactly 16384, rounded); then the horizontal pass
 * (weights Q14, 32-bit accumulator) writes the uint8 output row, rounded to nearest. Error
 * against the exact filter in double precision: about 1/256 of a level plus weight
 * quantization (< 255/16384), so outputs differ by at most 1, rarely. Pure functions of their arguments: any thread, never allocates.
 */
#ifndef PIPE_RESIZE_H
#define PIPE_RESIZE_H

#include <stddef.h>
#include <stdint.h>

/* Scratch bytes pipe_resize needs for a source window sw pixels wide, box (bw, bh) and an
 * ow x oh output. */
size_t pipe_resize_scratch_bytes(int sw, double bw, double bh, int ow, int oh);

/* Resamples box (bx, by, bw, bh) of src (sw x sh RGB, row stride `stride` bytes; box in the
 * coordinates of src, bw, bh > 0) into dst (ow x oh RGB, packed), mirrored when flip.
 * `scratch` holds at least pipe_resize_scratch_bytes(sw, bw, bh, ow, oh) bytes, 16-byte
 * aligned. */
void pipe_resize(const uint8_t *src, int sw, int sh, size_t stride, double bx, double by, double bw, double bh,
                 int flip, uint8_t *dst, int ow, int oh, void *scratch);

#endif
