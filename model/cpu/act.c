/* model/cpu/act.c — elementwise layers: input normalisation, ReLU, residual add.
 * Flat loops over contiguous NHWC buffers, written so the compiler vectorises them. */
#include "model/cpu/layers.h"

void MODEL_FN(model_input_normalize)(const uint8_t *in, real *x, size_t npix)
{
    const real mr = (real)(255 * MODEL_MEAN_R), mg = (real)(255 * MODEL_MEAN_G),
               mb = (real)(255 * MODEL_MEAN_B);
    const real ir = (real)(1.0 / (255 * MODEL_STD_R)), ig = (real)(1.0 / (255 * MODEL_STD_G)),
               ib = (real)(1.0 / (255 * MODEL_STD_B));
    for (size_t i = 0; i < npix; i++) {
        x[3 * i + 0] = ((real)in[3 * i + 0] - mr) * ir;
        x[3 * i + 1] = ((real)in[3 * i + 1] - mg) * ig;
        x[3 * i + 2] = ((real)in[3 * i + 2] - mb) * ib;
    }
}

void MODEL_FN(model_relu_fwd)(size_t len, const real *x, real *y)
{
    for (size_t i = 0; i < len; i++) y[i] = x[i] > 0 ? x[i] : 0;
}

void MODEL_FN(model_relu_bwd)(size_t len, const real *y, const real *dy, real *dx, int accum_dx)
{
    /* Multiplying by the 0/1 mask (not a ?: on data) keeps the loop branch-free: half the
     * signs are random, and a branchy in-place loop was 9% of a resnet8 step. */
    if (accum_dx)
        for (size_t i = 0; i < len; i++) dx[i] += (real)(y[i] > 0) * dy[i];
    else
        for (size_t i = 0; i < len; i++) dx[i] = (real)(y[i] > 0) * dy[i];
}

void MODEL_FN(model_add_fwd)(size_t len, const real *a, const real *b, real *y)
{
    for (size_t i = 0; i < len; i++) y[i] = a[i] + b[i];
}

static void pass_grad(size_t len, const real *dy, real *dx, int accum)
{
    if (!dx || dx == dy) return;
    if (accum)
        for (size_t i = 0; i < len; i++) dx[i] += dy[i];
    else
        for (size_t i = 0; i < len; i++) dx[i] = dy[i];
}

void MODEL_FN(model_add_bwd)(size_t len, const real *dy, real *da, int accum_da, real *db,
                             int accum_db)
{
    pass_grad(len, dy, da, accum_da);
    pass_grad(len, dy, db, accum_db);
}
