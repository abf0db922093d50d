/* test_conv_grad_fd — the im2col+GEMM convolution (double build) against a naive direct
 * convolution written here, and its backward (dx and dw) against central finite
 * differences of L = sum(y .* R). Cases: 3x3 stride 1/2 pad 1, 1x1 stride 1 (the direct GEMM
 * path) and stride 2, 7x7 stride 2 pad 3 (the stem); each run with a workspace of one image
 * (many chunks) and a large one. Also checks that accum_dx=1 adds to dx and that dw
 * accumulates. */
#include <stdlib.h>
#include <string.h>

#include "model/cpu/layers.h"
#include "tests/model/fd_check.h"

typedef struct {
    model_conv_shape sh;
    double *x, *w, *y, *r, *ws;
    size_t ws_len, ny;
} ctx;

static double loss(void *p)
{
    ctx *c = p;
    model_conv_fwd_f64(&c->sh, c->x, c->w, c->y, c->ws, c->ws_len);
    double l = 0;
    for (size_t i = 0; i < c->ny; i++) l += c->y[i] * c->r[i];
    return l;
}

static void naive(const model_conv_shape *s, const double *x, const double *w, double *y)
{
    for (int n = 0; n < s->n; n++)
        for (int oh = 0; oh < s->oh; oh++)
            for (int ow = 0; ow < s->ow; ow++)
                for (int k = 0; k < s->k; k++) {
                    double acc = 0;
                    for (int r = 0; r < s->r; r++)
                        for (int q = 0; q < s->s; q++)
                            for (int c = 0; c < s->c; c++) {
                                int ih = oh * s->stride - s->pad + r, iw = ow * s->stride - s->pad + q;
                                if (ih < 0 || iw < 0 || ih >= s->h || iw >= s->w) continue;
                                acc += x[((n * s->h + ih) * s->w + iw) * s->c + c] *
                                       w[((k * s->r + r) * s->s + q) * s->c + c];
                            }
                    y[((n * s->oh + oh) * s->ow + ow) * s->k + k] = acc;
                }
}

static void run_case(int n, int h, int c, int k, int ks, int stride, int pad, int small_ws)
{
    ctx t;
    t.sh = (model_conv_shape){n, h, h + 1, c, k, ks, ks, stride, pad, 0, 0};
    t.sh.oh = model_conv_out_size(h, ks, stride, pad);
    t.sh.ow = model_conv_out_size(h + 1, ks, stride, pad);
    size_t nx = (size_t)n * h * (h + 1) * c, nw = (size_t)k * ks * ks * c;
    t.ny = (size_t)n * t.sh.oh * t.sh.ow * k;
    size_t one = (size_t)t.sh.oh * t.sh.ow * ks * ks * c;
    t.ws_len = model_conv_ws_len_f64(&t.sh, small_ws ? one : (size_t)1 << 20);
    t.x = malloc(nx * sizeof(double));
    t.w = malloc(nw * sizeof(double));
    t.y = malloc(t.ny * sizeof(double));
    t.r = malloc(t.ny * sizeof(double));
    t.ws = malloc((t.ws_len + 1) * sizeof(double));
    double *yref = malloc(t.ny * sizeof(double)), *dx = malloc(nx * sizeof(double)),
           *dw = calloc(nw, sizeof(double)), *nx_fd = malloc(nx * sizeof(double)),
           *nw_fd = malloc(nw * sizeof(double));
    fill_normal(t.x, nx, 1, 0, 1);
    fill_normal(t.w, nw, 1, 1, 1);
    fill_normal(t.r, t.ny, 1, 2, 1);
    char name[96];
    snprintf(name, sizeof name, "conv n%d h%d c%d k%d %dx%d/%d pad%d ws%s", n, h, c, k, ks, ks,
             stride, pad, small_ws ? "=1img" : "=big");

    naive(&t.sh, t.x, t.w, yref);
    loss(&t);
    char nm[128];
    snprintf(nm, sizeof nm, "%s fwd y", name);
    compare_arrays(nm, t.y, yref, t.ny, 1e-12, 1e-12);

    model_conv_bwd_f64(&t.sh, t.x, t.w, t.r, dw, dx, 0, t.ws, t.ws_len);
    fd_grad(loss, &t, t.x, nx, 1e-5, nx_fd);
    fd_grad(loss, &t, t.w, nw, 1e-5, nw_fd);
    snprintf(nm, sizeof nm, "%s dx", name);
    compare_arrays(nm, dx, nx_fd, nx, 1e-7, 1e-6);
    snprintf(nm, sizeof nm, "%s dw", name);
    compare_arrays(nm, dw, nw_fd, nw, 1e-7, 1e-6);

    /* accumulate: dx += grad (on top of dx), dw += grad again */
    model_conv_bwd_f64(&t.sh, t.x, t.w, t.r, dw, dx, 1, t.ws, t.ws_len);
    for (size_t i = 0; i < nx; i++) nx_fd[i] *= 2;
    for (size_t i = 0; i < nw; i++) nw_fd[i] *= 2;
    snprintf(nm, sizeof nm, "%s dx accum", name);
    compare_arrays(nm, dx, nx_fd, nx, 1e-7, 1e-6);
    snprintf(nm, sizeof nm, "%s dw accum", name);
    compare_arrays(nm, dw, nw_fd, nw, 1e-7, 1e-6);

    free(t.x); free(t.w); free(t.y); free(t.r); free(t.ws);
    free(yref); free(dx); free(dw); free(nx_fd); free(nw_fd);
}

int main(void)
{
    for (int small = 0; small < 2; small++) {
        run_case(2, 5, 3, 4, 3, 1, 1, small);  /* 3x3/1 pad 1 */
        run_case(3, 6, 2, 3, 3, 2, 1, small);  /* 3x3/2 pad 1 */
        run_case(2, 4, 5, 3, 1, 1, 0, small);  /* 1x1/1: direct GEMM */
        run_case(2, 5, 4, 3, 1, 2, 0, small);  /* 1x1/2 projection shortcut */
        run_case(2, 9, 3, 2, 7, 2, 3, small);  /* 7x7/2 pad 3 stem */
    }
    return ih_test_result();
}
