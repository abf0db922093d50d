/* test_bn_grad_fd — BatchNorm (double build): training forward against a naive two-pass
 * computation written here (batch mean, biased variance for normalising, running stats
 * updated with momentum and the UNBIASED variance, as PyTorch), eval forward from running
 * stats, and the training backward (dx, dgamma, dbeta) against central finite differences
 * of L = sum(y .* R), including accum_dx = 1 and parameter-gradient accumulation. */
#include <stdlib.h>
#include <string.h>

#include "model/cpu/layers.h"
#include "tests/model/fd_check.h"

enum { M = 37, C = 5 };

typedef struct {
    double x[M * C], g[C], b[C], y[M * C], r[M * C], sm[C], si[C], rm[C], rv[C];
    double scratch[4 * C * 2];
} ctx;

static double loss(void *p)
{
    ctx *c = p;
    model_bn_fwd_train_f64(M, C, c->x, c->g, c->b, c->y, c->sm, c->si, c->rm, c->rv, 0.1, 1e-5,
                           c->scratch);
    double l = 0;
    for (int i = 0; i < M * C; i++) l += c->y[i] * c->r[i];
    return l;
}

int main(void)
{
    static ctx t;
    fill_normal(t.x, M * C, 2, 0, 3);
    for (int i = 0; i < M * C; i++) t.x[i] += 1.5; /* nonzero mean */
    fill_normal(t.g, C, 2, 1, 1);
    fill_normal(t.b, C, 2, 2, 1);
    fill_normal(t.r, M * C, 2, 3, 1);
    for (int j = 0; j < C; j++) t.rm[j] = 0.5, t.rv[j] = 2.0;
    CHECK(model_bn_scratch_bytes_f64(C) <= sizeof t.scratch, "scratch size");

    /* forward vs naive */
    loss(&t);
    double yref[M * C], rm_ref[C], rv_ref[C];
    for (int j = 0; j < C; j++) {
        double mu = 0, var = 0;
        for (int i = 0; i < M; i++) mu += t.x[i * C + j];
        mu /= M;
        for (int i = 0; i < M; i++) var += (t.x[i * C + j] - mu) * (t.x[i * C + j] - mu);
        double unb = var / (M - 1);
        var /= M;
        for (int i = 0; i < M; i++)
            yref[i * C + j] = (t.x[i * C + j] - mu) / sqrt(var + 1e-5) * t.g[j] + t.b[j];
        rm_ref[j] = 0.9 * 0.5 + 0.1 * mu;
        rv_ref[j] = 0.9 * 2.0 + 0.1 * unb;
    }
    compare_arrays("bn train y", t.y, yref, M * C, 1e-12, 1e-12);
    compare_arrays("bn running mean", t.rm, rm_ref, C, 1e-12, 1e-12);
    compare_arrays("bn running var (unbiased)", t.rv, rv_ref, C, 1e-12, 1e-12);

    /* eval uses the running stats */
    double ye[M * C], yeref[M * C];
    model_bn_fwd_eval_f64(M, C, t.x, t.g, t.b, t.rm, t.rv, 1e-5, ye, t.scratch);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < C; j++)
            yeref[i * C + j] = (t.x[i * C + j] - t.rm[j]) / sqrt(t.rv[j] + 1e-5) * t.g[j] + t.b[j];
    compare_arrays("bn eval y", ye, yeref, M * C, 1e-12, 1e-12);

    /* backward vs finite differences */
    double dx[M * C], dg[C] = {0}, db[C] = {0}, fx[M * C], fg[C], fb[C];
    loss(&t);
    model_bn_bwd_f64(M, C, t.x, t.r, t.g, t.sm, t.si, dg, db, dx, 0, t.scratch);
    fd_grad(loss, &t, t.x, M * C, 1e-5, fx);
    fd_grad(loss, &t, t.g, C, 1e-5, fg);
    fd_grad(loss, &t, t.b, C, 1e-5, fb);
    compare_arrays("bn dx", dx, fx, M * C, 1e-7, 1e-6);
    compare_arrays("bn dgamma", dg, fg, C, 1e-7, 1e-6);
    compare_arrays("bn dbeta", db, fb, C, 1e-7, 1e-6);

    loss(&t);
    model_bn_bwd_f64(M, C, t.x, t.r, t.g, t.sm, t.si, dg, db, dx, 1, t.scratch);
    for (int i = 0; i < M * C; i++) fx[i] *= 2;
    for (int j = 0; j < C; j++) fg[j] *= 2, fb[j] *= 2;
    compare_arrays("bn dx accum", dx, fx, M * C, 1e-7, 1e-6);
    compare_arrays("bn dgamma accum", dg, fg, C, 1e-7, 1e-6);
    compare_arrays("bn dbeta accum", db, fb, C, 1e-7, 1e-6);
    return ih_test_result();
}
