/* test_relu_add_grad_fd — ReLU (also in place, whose backward reads the output), the
 * residual add and the input normalisation (double build): forwards against naive
 * versions, backwards against central finite differences, with accumulation. */
#include <string.h>

#include "model/cpu/layers.h"
#include "tests/model/fd_check.h"

enum { L = 40 };

typedef struct {
    double x[L], a[L], b[L], y[L], r[L];
} ctx;

static double loss_relu(void *p)
{
    ctx *c = p;
    model_relu_fwd_f64(L, c->x, c->y);
    double l = 0;
    for (int i = 0; i < L; i++) l += c->y[i] * c->r[i];
    return l;
}

static double loss_add(void *p)
{
    ctx *c = p;
    model_add_fwd_f64(L, c->a, c->b, c->y);
    double l = 0;
    for (int i = 0; i < L; i++) l += c->y[i] * c->r[i];
    return l;
}

int main(void)
{
    static ctx t;
    fill_normal(t.x, L, 6, 0, 1);
    for (int i = 0; i < L; i++)
        if (fabs(t.x[i]) < 1e-3) t.x[i] = 0.5; /* keep FD away from the kink */
    fill_normal(t.r, L, 6, 1, 1);
    fill_normal(t.a, L, 6, 2, 1);
    fill_normal(t.b, L, 6, 3, 1);

    loss_relu(&t);
    double yref[L], dx[L], fx[L];
    for (int i = 0; i < L; i++) yref[i] = t.x[i] > 0 ? t.x[i] : 0;
    compare_arrays("relu y", t.y, yref, L, 0, 0);
    model_relu_bwd_f64(L, t.y, t.r, dx, 0);
    fd_grad(loss_relu, &t, t.x, L, 1e-6, fx);
    compare_arrays("relu dx", dx, fx, L, 1e-8, 1e-6);
    loss_relu(&t);
    model_relu_bwd_f64(L, t.y, t.r, dx, 1);
    for (int i = 0; i < L; i++) fx[i] *= 2;
    compare_arrays("relu dx accum", dx, fx, L, 1e-8, 1e-6);

    /* in place: y == x, dx == dy */
    double v[L], g[L];
    memcpy(v, t.x, sizeof v);
    memcpy(g, t.r, sizeof g);
    model_relu_fwd_f64(L, v, v);
    model_relu_bwd_f64(L, v, g, g, 0);
    for (int i = 0; i < L; i++) fx[i] *= 0.5;
    compare_arrays("relu in place y", v, yref, L, 0, 0);
    compare_arrays("relu in place dx", g, fx, L, 1e-8, 1e-6);

    loss_add(&t);
    for (int i = 0; i < L; i++) yref[i] = t.a[i] + t.b[i];
    compare_arrays("add y", t.y, yref, L, 0, 0);
    double da[L], db[L], fa[L], fb[L];
    for (int i = 0; i < L; i++) db[i] = 1.0;
    model_add_bwd_f64(L, t.r, da, 0, db, 1);
    fd_grad(loss_add, &t, t.a, L, 1e-5, fa);
    fd_grad(loss_add, &t, t.b, L, 1e-5, fb);
    for (int i = 0; i < L; i++) fb[i] += 1.0;
    compare_arrays("add da", da, fa, L, 1e-8, 1e-6);
    compare_arrays("add db accum", db, fb, L, 1e-8, 1e-6);

    uint8_t px[6] = {0, 128, 255, 10, 20, 30};
    double xn[6], xref[6];
    const double mean[3] = {MODEL_MEAN_R, MODEL_MEAN_G, MODEL_MEAN_B},
                 std[3] = {MODEL_STD_R, MODEL_STD_G, MODEL_STD_B};
    model_input_normalize_f64(px, xn, 2);
    for (int i = 0; i < 6; i++) xref[i] = (px[i] / 255.0 - mean[i % 3]) / std[i % 3];
    compare_arrays("input normalize", xn, xref, 6, 1e-12, 1e-12);
    return ih_test_result();
}
