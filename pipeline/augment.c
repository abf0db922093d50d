/* pipeline/augment.c — crop boxes (see augment.h). */
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
