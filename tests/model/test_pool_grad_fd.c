/* test_pool_grad_fd — max pooling 3x3/2 pad 1 (the ImageNet stem's) against a naive
 * version written here (padding never wins), global average pooling, and both backwards
 * against central finite differences (double build), including accum_dx = 1. Inputs are
 * distinct random values so the max is unique and differentiable. */
#include <stdlib.h>
#include <string.h>

#include "model/cpu/layers.h"
#include "tests/model/fd_check.h"

enum { N = 2, H = 7, W = 6, C = 3, OH = 4, OW = 3 };

typedef struct {
    double x[N * H * W * C], y[N * OH * OW * C], r[N * OH * OW * C], ya[N * C], ra[N * C];
    int32_t am[N * OH * OW * C];
} ctx;

static double loss_max(void *p)
{
    ctx *c = p;
    model_maxpool_fwd_f64(N, H, W, C, 3, 2, 1, OH, OW, c->x, c->y, c->am);
    double l = 0;
    for (int i = 0; i < N * OH * OW * C; i++) l += c->y[i] * c->r[i];
    return l;
}

static double loss_avg(void *p)
{
    ctx *c = p;
    model_avgpool_fwd_f64(N, H * W, C, c->x, c->ya);
    double l = 0;
    for (int i = 0; i < N * C; i++) l += c->ya[i] * c->ra[i];
    return l;
}

int main(void)
{
    static ctx t;
    CHECK(model_conv_out_size(H, 3, 2, 1) == OH && model_conv_out_size(W, 3, 2, 1) == OW, "sizes");
    fill_normal(t.x, N * H * W * C, 3, 0, 1);
    fill_normal(t.r, N * OH * OW * C, 3, 1, 1);
    fill_normal(t.ra, N * C, 3, 2, 1);
    for (int i = 0; i < N * H * W * C; i++) t.x[i] -= 3; /* all negative: padding must not win */

    double yref[N * OH * OW * C];
    for (int n = 0; n < N; n++)
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++)
                for (int c = 0; c < C; c++) {
                    double mx = -INFINITY;
                    for (int r = 0; r < 3; r++)
                        for (int s = 0; s < 3; s++) {
                            int ih = 2 * i - 1 + r, iw = 2 * j - 1 + s;
                            if (ih < 0 || iw < 0 || ih >= H || iw >= W) continue;
                            double v = t.x[((n * H + ih) * W + iw) * C + c];
                            if (v > mx) mx = v;
                        }
                    yref[((n * OH + i) * OW + j) * C + c] = mx;
                }
    loss_max(&t);
    compare_arrays("maxpool y", t.y, yref, N * OH * OW * C, 0, 0);

    double dx[N * H * W * C], fx[N * H * W * C];
    model_maxpool_bwd_f64(N, H, W, C, OH, OW, t.r, t.am, dx, 0);
    fd_grad(loss_max, &t, t.x, N * H * W * C, 1e-6, fx);
    compare_arrays("maxpool dx", dx, fx, N * H * W * C, 1e-7, 1e-6);
    loss_max(&t);
    model_maxpool_bwd_f64(N, H, W, C, OH, OW, t.r, t.am, dx, 1);
    for (int i = 0; i < N * H * W * C; i++) fx[i] *= 2;
    compare_arrays("maxpool dx accum", dx, fx, N * H * W * C, 1e-7, 1e-6);

    double aref[N * C];
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int p = 0; p < H * W; p++) s += t.x[(n * H * W + p) * C + c];
            aref[n * C + c] = s / (H * W);
        }
    loss_avg(&t);
    compare_arrays("avgpool y", t.ya, aref, N * C, 1e-12, 1e-12);
    model_avgpool_bwd_f64(N, H * W, C, t.ra, dx, 0);
    fd_grad(loss_avg, &t, t.x, N * H * W * C, 1e-5, fx);
    compare_arrays("avgpool dx", dx, fx, N * H * W * C, 1e-8, 1e-6);
    model_avgpool_bwd_f64(N, H * W, C, t.ra, dx, 1);
    for (int i = 0; i < N * H * W * C; i++) fx[i] *= 2;
    compare_arrays("avgpool dx accum", dx, fx, N * H * W * C, 1e-8, 1e-6);
    return ih_test_result();
}
