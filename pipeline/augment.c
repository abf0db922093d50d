/* pipeline/augment.c — crop boxes (see augment.h). */
#include "augment.h"

#include <math.h>
#include <string.h>

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

/* fb.resnet.torch datasets/imagenet.lua: pca.eigval and pca.eigvec (columns are vectors). */
static const double eigval[3] = {0.2175, 0.0188, 0.0045};
static const double eigvec[3][3] = {
    {-0.5675, 0.7192, 0.4009},
    {-0.5808, -0.0045, -0.8140},
    {-0.5836, -0.6948, 0.4203},
};
static const double grey_w[3] = {0.299, 0.587, 0.114};

/* Left-multiplies the map (M, t) by the step x' = A x + b. */
static void compose(double M[9], double t[3], const double A[9], const double b[3])
{
    double m[9], u[3];
    for (int i = 0; i < 3; i++) {
        u[i] = b[i];
        for (int j = 0; j < 3; j++) {
            m[3 * i + j] = 0;
            for (int k = 0; k < 3; k++) m[3 * i + j] += A[3 * i + k] * M[3 * k + j];
            u[i] += A[3 * i + j] * t[j];
        }
    }
    memcpy(M, m, sizeof m);
    memcpy(t, u, sizeof u);
}

void pipe_color_affine(uint64_t seed, uint64_t epoch, uint64_t sample, const pipe_color *p, const double mean[3],
                       double M[9], double t[3])
{
    ih_rng r = ih_rng_make(seed, epoch, PIPE_COLOR_STREAM | sample);
    for (int i = 0; i < 9; i++) M[i] = i % 4 == 0;
    t[0] = t[1] = t[2] = 0;
    /* RandomOrder: a uniform permutation of (brightness, contrast, saturation). */
    int order[3] = {0, 1, 2};
    for (int i = 2; i > 0; i--) {
        int j = (int)ih_rng_below(&r, (uint64_t)i + 1), x = order[i];
        order[i] = order[j];
        order[j] = x;
    }
    const float v[3] = {p->brightness, p->contrast, p->saturation};
    for (int s = 0; s < 3; s++) {
        int k = order[s];
        if (!(v[k] > 0)) continue;
        double a = 1 + v[k] * (2 * ih_rng_uniform(&r) - 1);
        double A[9] = {a, 0, 0, 0, a, 0, 0, 0, a}, b[3] = {0, 0, 0};
        if (k == 1) {
            /* blend with the mean grey of the current image: grey(M mean + t) */
            double g = 0;
            for (int i = 0; i < 3; i++) {
                double ch = t[i];
                for (int j = 0; j < 3; j++) ch += M[3 * i + j] * mean[j];
                g += grey_w[i] * ch;
            }
            b[0] = b[1] = b[2] = (1 - a) * g;
        } else if (k == 2) {
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) A[3 * i + j] += (1 - a) * grey_w[j];
        }
        compose(M, t, A, b);
    }
    if (p->lighting > 0) {
        double al[3];
        for (int j = 0; j < 3; j++) al[j] = ih_rng_normal(&r) * p->lighting;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) t[i] += 255.0 * eigvec[i][j] * al[j] * eigval[j];
    }
}

void pipe_color_apply(uint64_t seed, uint64_t epoch, uint64_t sample, const pipe_color *p, uint8_t *rgb,
                      size_t npix)
{
    if (!pipe_color_on(p) || npix == 0) return;
    double mean[3] = {0, 0, 0};
    uint64_t sum[3] = {0, 0, 0};
    for (size_t i = 0; i < npix; i++)
        for (int c = 0; c < 3; c++) sum[c] += rgb[3 * i + c];
    for (int c = 0; c < 3; c++) mean[c] = (double)sum[c] / (double)npix;
    double M[9], t[3];
    pipe_color_affine(seed, epoch, sample, p, mean, M, t);
    float m[9], u[3];
    for (int i = 0; i < 9; i++) m[i] = (float)M[i];
    for (int i = 0; i < 3; i++) u[i] = (float)t[i] + 0.5f; /* + 0.5: round on truncation */
    for (size_t i = 0; i < npix; i++) {
        float x = rgb[3 * i], y = rgb[3 * i + 1], z = rgb[3 * i + 2];
        for (int c = 0; c < 3; c++) {
            float o = m[3 * c] * x + m[3 * c + 1] * y + m[3 * c + 2] * z + u[c];
            rgb[3 * i + c] = (uint8_t)(o < 0 ? 0 : o > 255 ? 255 : o);
        }
    }
}
