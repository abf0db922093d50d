/* model/cpu/pool.c — max pooling (the ImageNet stem's 3x3/2 pad 1) and global average
 * pooling, NHWC. Max pooling records the winning input index per output so backward is a
 * scatter; padding never wins (it counts as -inf, as in PyTorch). */
#include <string.h>

#include "model/cpu/layers.h"

void MODEL_FN(model_maxpool_fwd)(int n, int h, int w, int c, int size, int stride, int pad,
                                 int oh, int ow, const real *x, real *y, int32_t *argmax)
{
    for (int b = 0; b < n; b++) {
        const real *xb = x + (size_t)b * h * w * c;
        for (int i = 0; i < oh; i++)
            for (int j = 0; j < ow; j++) {
                size_t o = (((size_t)b * oh + i) * ow + j) * c;
                real *yo = y + o;
                int32_t *ao = argmax + o;
                int first = 1;
                for (int r = 0; r < size; r++) {
                    int ih = i * stride - pad + r;
                    if (ih < 0 || ih >= h) continue;
                    for (int s = 0; s < size; s++) {
                        int iw = j * stride - pad + s;
                        if (iw < 0 || iw >= w) continue;
                        int32_t base = (int32_t)(((size_t)ih * w + iw) * c);
                        const real *xi = xb + base;
                        if (first) {
                            for (int k = 0; k < c; k++) { yo[k] = xi[k]; ao[k] = base + k; }
                            first = 0;
                        } else {
                            for (int k = 0; k < c; k++)
                                if (xi[k] > yo[k]) { yo[k] = xi[k]; ao[k] = base + k; }
                        }
                    }
                }
            }
    }
}

void MODEL_FN(model_maxpool_bwd)(int n, int h, int w, int c, int oh, int ow, const real *dy,
                                 const int32_t *argmax, real *dx, int accum_dx)
{
    size_t in_img = (size_t)h * w * c, out_img = (size_t)oh * ow * c;
    if (!accum_dx) memset(dx, 0, (size_t)n * in_img * sizeof(real));
    for (int b = 0; b < n; b++) {
        real *dxb = dx + (size_t)b * in_img;
        const real *dyb = dy + (size_t)b * out_img;
        const int32_t *ab = argmax + (size_t)b * out_img;
        for (size_t o = 0; o < out_img; o++) dxb[ab[o]] += dyb[o];
    }
}

void MODEL_FN(model_avgpool_fwd)(int n, int hw, int c, const real *x, real *y)
{
    const real inv = (real)(1.0 / hw);
    for (int b = 0; b < n; b++) {
        real *yb = y + (size_t)b * c;
        const real *xb = x + (size_t)b * hw * c;
        for (int k = 0; k < c; k++) yb[k] = 0;
        for (int p = 0; p < hw; p++)
            for (int k = 0; k < c; k++) yb[k] += xb[(size_t)p * c + k];
        for (int k = 0; k < c; k++) yb[k] *= inv;
    }
}

void MODEL_FN(model_avgpool_bwd)(int n, int hw, int c, const real *dy, real *dx, int accum_dx)
{
    const real inv = (real)(1.0 / hw);
    for (int b = 0; b < n; b++) {
        const real *dyb = dy + (size_t)b * c;
        real *dxb = dx + (size_t)b * hw * c;
        for (int p = 0; p < hw; p++) {
            real *d = dxb + (size_t)p * c;
            if (accum_dx)
                for (int k = 0; k < c; k++) d[k] += dyb[k] * inv;
            else
                for (int k = 0; k < c; k++) d[k] = dyb[k] * inv;
        }
    }
}
