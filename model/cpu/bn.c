/* model/cpu/bn.c — batch normalisation over NHWC rows, training and inference.
 *
 * Rows of c channels are contiguous, so every pass is an outer loop over rows and an inner,
 * vectorisable loop over channels with per-channel arrays. Statistics are accumulated in
 * double (two passes: mean, then centred squares) so a float build stays accurate for
 * m = n*h*w in the millions. Training forward saves the batch mean and 1/sqrt(var+eps);
 * backward recomputes x_hat from x (nothing else is stored).
 * Backward, per channel with sums over the m rows:
 *   dgamma += sum(dy * xhat), dbeta += sum(dy),
 *   dx = gamma*istd * (dy - sum(dy)/m - xhat * sum(dy*xhat)/m)
 * folded into dx = a*dy + b*(x - mean) + c per channel.
 */
#include <math.h>
#include <string.h>

#include "model/cpu/layers.h"

size_t MODEL_FN(model_bn_scratch_bytes)(int c)
{
    return (size_t)c * (2 * sizeof(double) + 3 * sizeof(real));
}

/* y = (x - center)*scale + shift per channel. Centring first (rather than folding the mean
 * into shift) avoids cancellation when |mean| >> std, which float training hits. */
static void affine(size_t m, int c, const real *x, const real *center, const real *scale,
                   const real *shift, real *y)
{
    for (size_t i = 0; i < m; i++) {
        const real *xi = x + i * c;
        real *yi = y + i * c;
        for (int j = 0; j < c; j++) yi[j] = (xi[j] - center[j]) * scale[j] + shift[j];
    }
}

void MODEL_FN(model_bn_fwd_train)(size_t m, int c, const real *x, const real *gamma,
                                  const real *beta, real *y, real *save_mean, real *save_invstd,
                                  real *run_mean, real *run_var, double momentum, double eps,
                                  void *scratch)
{
    double *acc = scratch, *acc2 = acc + c;
    real *scale = (real *)(acc2 + c), *shift = scale + c, *mean = shift + c;
    memset(acc, 0, 2 * (size_t)c * sizeof(double));
    for (size_t i = 0; i < m; i++) {
        const real *xi = x + i * c;
        for (int j = 0; j < c; j++) acc[j] += xi[j];
    }
    for (int j = 0; j < c; j++) mean[j] = (real)(acc[j] / (double)m);
    for (size_t i = 0; i < m; i++) {
        const real *xi = x + i * c;
        for (int j = 0; j < c; j++) {
            double d = (double)(xi[j] - mean[j]);
            acc2[j] += d * d;
        }
    }
    for (int j = 0; j < c; j++) {
        double mu = acc[j] / (double)m, var = acc2[j] / (double)m;
        double istd = 1.0 / sqrt(var + eps);
        save_mean[j] = (real)mu;
        save_invstd[j] = (real)istd;
        scale[j] = (real)(gamma[j] * istd);
        shift[j] = beta[j];
        double unbiased = m > 1 ? acc2[j] / (double)(m - 1) : var;
        run_mean[j] = (real)((1 - momentum) * run_mean[j] + momentum * mu);
        run_var[j] = (real)((1 - momentum) * run_var[j] + momentum * unbiased);
    }
    affine(m, c, x, save_mean, scale, shift, y);
}

void MODEL_FN(model_bn_fwd_eval)(size_t m, int c, const real *x, const real *gamma,
                                 const real *beta, const real *run_mean, const real *run_var,
                                 double eps, real *y, void *scratch)
{
    real *scale = (real *)((double *)scratch + 2 * c), *shift = scale + c;
    for (int j = 0; j < c; j++) {
        double istd = 1.0 / sqrt((double)run_var[j] + eps);
        scale[j] = (real)(gamma[j] * istd);
        shift[j] = beta[j];
    }
    affine(m, c, x, run_mean, scale, shift, y);
}

void MODEL_FN(model_bn_bwd)(size_t m, int c, const real *x, const real *dy, const real *gamma,
                            const real *save_mean, const real *save_invstd, real *dgamma,
                            real *dbeta, real *dx, int accum_dx, void *scratch)
{
    double *sdy = scratch, *sdyx = sdy + c; /* sum(dy), sum(dy * (x - mean)) */
    real *ka = (real *)(sdyx + c), *kb = ka + c, *kc = kb + c;
    memset(sdy, 0, 2 * (size_t)c * sizeof(double));
    for (size_t i = 0; i < m; i++) {
        const real *xi = x + i * c, *dyi = dy + i * c;
        for (int j = 0; j < c; j++) {
            sdy[j] += dyi[j];
            sdyx[j] += (double)(dyi[j] * (xi[j] - save_mean[j]));
        }
    }
    for (int j = 0; j < c; j++) {
        double is = save_invstd[j], g = gamma[j];
        dgamma[j] += (real)(sdyx[j] * is);
        dbeta[j] += (real)sdy[j];
        double a = g * is, b = -g * is * is * is * sdyx[j] / (double)m;
        ka[j] = (real)a;
        kb[j] = (real)b;
        kc[j] = (real)(-a * sdy[j] / (double)m);
    }
    if (!dx) return;
    for (size_t i = 0; i < m; i++) {
        const real *xi = x + i * c, *dyi = dy + i * c;
        real *dxi = dx + i * c;
        if (accum_dx)
            for (int j = 0; j < c; j++) dxi[j] += ka[j] * dyi[j] + kb[j] * (xi[j] - save_mean[j]) + kc[j];
        else
            for (int j = 0; j < c; j++) dxi[j] = ka[j] * dyi[j] + kb[j] * (xi[j] - save_mean[j]) + kc[j];
    }
}
