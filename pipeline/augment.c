/* pipeline/augment.c — crop boxes and bilinear resize (see augment.h). */
#include "augment.h"

#include <math.h>

#include "core/rng.h"

void pipe_crop_train(uint64_t seed, uint64_t epoch, uint64_t sample, int W, int H,
                     const pipe_rrc *p, pipe_crop *out)
{
    ih_rng r = ih_rng_make(seed, epoch, sample);
    double area = (double)W * H;
    double la = log(p->min_aspect), lb = log(p->max_aspect);
    for (int t = 0; t < 10; t++) {
        double target = area * (p->min_scale + (p->max_scale - p->min_scale) * ih_rng_uniform(&r));
        double ar = exp(la + (lb - la) * ih_rng_uniform(&r));
        int w = (int)lround(sqrt(target * ar));
        int h = (int)lround(sqrt(target / ar));
        if (w > 0 && w <= W && h > 0 && h <= H) {
            out->x = (double)ih_rng_below(&r, (uint64_t)(W - w + 1));
            out->y = (double)ih_rng_below(&r, (uint64_t)(H - h + 1));
            out->w = w;
            out->h = h;
            out->flip = (int)(ih_rng_u64(&r) >> 63);
            return;
        }
    }
    double in_ratio = (double)W / H;
    int w = W, h = H;
    if (in_ratio < p->min_aspect) {
        h = (int)lround(W / (double)p->min_aspect);
    } else if (in_ratio > p->max_aspect) {
        w = (int)lround(H * (double)p->max_aspect);
    }
    if (w < 1) w = 1;
    if (h < 1) h = 1;
    if (w > W) w = W;
    if (h > H) h = H;
    out->x = (W - w) / 2;
    out->y = (H - h) / 2;
    out->w = w;
    out->h = h;
    out->flip = (int)(ih_rng_u64(&r) >> 63);
}

void pipe_crop_eval(int W, int H, int resize, int crop, pipe_crop *out)
{
    int s = W < H ? W : H;
    double f = (double)s / resize; /* source pixels per resized pixel */
    double side = crop * f;
    double bw = side < W ? side : W, bh = side < H ? side : H;
    out->w = bw;
    out->h = bh;
    out->x = (W - bw) / 2;
    out->y = (H - bh) / 2;
    out->flip = 0;
}

size_t pipe_resize_scratch_bytes(int ow) { return (size_t)ow * (2 * sizeof(int) + sizeof(float)); }

void pipe_resize_bilinear(const uint8_t *src, int sw, int sh, size_t stride, double bx, double by,
                          double bw, double bh, int flip, uint8_t *dst, int ow, int oh, void *tab)
{
    int *x0 = tab, *x1 = x0 + ow;
    float *fx = (float *)(x1 + ow);
    double sx = bw / ow, sy = bh / oh;
    for (int ox = 0; ox < ow; ox++) {
        double u = bx + (ox + 0.5) * sx - 0.5;
        if (u < 0) u = 0;
        if (u > sw - 1) u = sw - 1;
        int i = (int)u;
        int o = flip ? ow - 1 - ox : ox;
        x0[o] = i * 3;
        x1[o] = (i + 1 < sw ? i + 1 : i) * 3;
        fx[o] = (float)(u - i);
    }
    for (int oy = 0; oy < oh; oy++) {
        double v = by + (oy + 0.5) * sy - 0.5;
        if (v < 0) v = 0;
        if (v > sh - 1) v = sh - 1;
        int j = (int)v;
        float wy = (float)(v - j);
        const uint8_t *r0 = src + (size_t)j * stride;
        const uint8_t *r1 = src + (size_t)(j + 1 < sh ? j + 1 : j) * stride;
        uint8_t *d = dst + (size_t)oy * ow * 3;
        for (int o = 0; o < ow; o++) {
            float a = fx[o];
            for (int c = 0; c < 3; c++) {
                float top = r0[x0[o] + c] + a * (float)(r0[x1[o] + c] - r0[x0[o] + c]);
                float bot = r1[x0[o] + c] + a * (float)(r1[x1[o] + c] - r1[x0[o] + c]);
                float val = top + wy * (bot - top);
                d[o * 3 + c] = (uint8_t)(val + 0.5f);
            }
        }
    }
}
