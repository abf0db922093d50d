/* test_fc_grad_fd — the fully connected layer (double build) against a naive x w^T + b and
 * its backward (dx, dw, db) against central finite differences, with accumulation. */
#include "model/cpu/layers.h"
#include "tests/model/fd_check.h"

enum { N = 3, CI = 7, CO = 4 };

typedef struct {
    double x[N * CI], w[CO * CI], b[CO], y[N * CO], r[N * CO];
} ctx;

static double loss(void *p)
{
    ctx *c = p;
    model_fc_fwd_f64(N, CI, CO, c->x, c->w, c->b, c->y);
    double l = 0;
    for (int i = 0; i < N * CO; i++) l += c->y[i] * c->r[i];
    return l;
}

int main(void)
{
    static ctx t;
    fill_normal(t.x, N * CI, 4, 0, 1);
    fill_normal(t.w, CO * CI, 4, 1, 1);
    fill_normal(t.b, CO, 4, 2, 1);
    fill_normal(t.r, N * CO, 4, 3, 1);
    double yref[N * CO];
    for (int n = 0; n < N; n++)
        for (int o = 0; o < CO; o++) {
            double s = t.b[o];
            for (int i = 0; i < CI; i++) s += t.x[n * CI + i] * t.w[o * CI + i];
            yref[n * CO + o] = s;
        }
    loss(&t);
    compare_arrays("fc y", t.y, yref, N * CO, 1e-12, 1e-12);
    double dx[N * CI], dw[CO * CI] = {0}, db[CO] = {0}, fx[N * CI], fw[CO * CI], fb[CO];
    model_fc_bwd_f64(N, CI, CO, t.x, t.w, t.r, dw, db, dx, 0);
    fd_grad(loss, &t, t.x, N * CI, 1e-5, fx);
    fd_grad(loss, &t, t.w, CO * CI, 1e-5, fw);
    fd_grad(loss, &t, t.b, CO, 1e-5, fb);
    compare_arrays("fc dx", dx, fx, N * CI, 1e-8, 1e-6);
    compare_arrays("fc dw", dw, fw, CO * CI, 1e-8, 1e-6);
    compare_arrays("fc db", db, fb, CO, 1e-8, 1e-6);
    model_fc_bwd_f64(N, CI, CO, t.x, t.w, t.r, dw, db, dx, 1);
    for (int i = 0; i < N * CI; i++) fx[i] *= 2;
    for (int i = 0; i < CO * CI; i++) fw[i] *= 2;
    for (int i = 0; i < CO; i++) fb[i] *= 2;
    compare_arrays("fc dx accum", dx, fx, N * CI, 1e-8, 1e-6);
    compare_arrays("fc dw accum", dw, fw, CO * CI, 1e-8, 1e-6);
    compare_arrays("fc db accum", db, fb, CO, 1e-8, 1e-6);
    return ih_test_result();
}
