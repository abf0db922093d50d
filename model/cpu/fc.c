/* model/cpu/fc.c — the fully connected classifier: y [n,cout] = x [n,cin] * w^T + b, with
 * w [cout][cin] (PyTorch's Linear layout), as row-major GEMMs. */
#include "model/cpu/layers.h"

void MODEL_FN(model_fc_fwd)(int n, int cin, int cout, const real *x, const real *w,
                            const real *b, real *y)
{
    for (int i = 0; i < n; i++)
        for (int o = 0; o < cout; o++) y[(size_t)i * cout + o] = b[o];
    MODEL_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, n, cout, cin, 1, x, cin, w, cin, 1, y, cout);
}

void MODEL_FN(model_fc_bwd)(int n, int cin, int cout, const real *x, const real *w,
                            const real *dy, real *dw, real *db, real *dx, int accum_dx)
{
    /* dw [cout][cin] += dy^T x;  db += column sums of dy;  dx [n][cin] = dy w */
    MODEL_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, cout, cin, n, 1, dy, cout, x, cin, 1, dw, cin);
    for (int i = 0; i < n; i++)
        for (int o = 0; o < cout; o++) db[o] += dy[(size_t)i * cout + o];
    if (dx)
        MODEL_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, cin, cout, 1, dy, cout, w, cin,
                   accum_dx ? 1 : 0, dx, cin);
}
