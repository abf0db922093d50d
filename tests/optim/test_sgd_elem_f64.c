/* test_sgd_elem_f64 — the per-element SGD arithmetic that the CPU (optim_sgd_step) and the
 * CUDA kernel (model_sgd_step) share, optim_sgd_elem in optim/sgd_elem.h, against a float64
 * reference of the folded update written here:
 *
 *   u <- (lr_t/lr_{t-1}) u   when lr changes (momentum correction)
 *   u <- m u + lr (g + wd w),  w <- w - u            (plain)
 *   u <- m u + lr (g + wd w),  w <- w - (m u + d)    (Nesterov; d = lr (g + wd w))
 *
 * with wd = 0 on no_decay segments, over 12 steps with lr changes (warmup-like rise, a x0.1
 * decay, a rise again), both forms, with and without correction, on three segments (decay,
 * no_decay, decay) whose sizes are not multiples of any vector width.
 * Tolerance: each step rounds about 6 float operations per element (relative 2^-24 each), on
 * values of size <= ~10; after 12 steps the float state may drift from the float64 one by
 * about 12 * 6 * 6e-8 * 10 ~ 4e-5 in the worst case, so |got - ref| <= 1e-4 + 1e-5 |ref|.
 * A wrong form, a decay on a no_decay segment or a missed correction is off by >= 1e-2 (the
 * test checks that the uncorrected and the corrected runs differ by more than that).
 * Also: optim_sgd_plan_step's bookkeeping (u_scale exactly 1 without a change, lr_new/lr_old
 * with one, prev_lr advanced) and that optim_sgd_step equals the plan applied element by
 * element (what model_sgd_step does on the GPU), to the bit.
 */
#include <string.h>

#include "core/rng.h"
#include "optim/sgd.h"
#include "tests/check.h"

enum { N = 53, STEPS = 12 };

static const optim_seg SEGS[3] = {{0, 21, 0}, {21, 13, 1}, {34, 19, 0}};
static const double LRS[STEPS] = {0.05, 0.1, 0.15, 0.2, 0.2, 0.2, 0.02, 0.02, 0.02, 0.3, 0.3, 0.1};

static int no_decay(int i) { return i >= 21 && i < 34; }

/* Runs the optimizer and the float64 reference from the same start; returns the max error
 * (relative to the tolerance: <= 1 passes) and leaves the final float weights in w_out. */
static double run(int nesterov, int correct, float *w_out)
{
    const double m = 0.9, wd = 0.05;
    optim_sgd_cfg cfg = {.momentum = (float)m, .weight_decay = (float)wd, .nesterov = nesterov,
                         .momentum_correction = correct};
    optim_sgd *o = NULL;
    CHECK(optim_sgd_create(&o, N, SEGS, 3, &cfg) == IH_OK, "create: %s", ih_last_error());
    if (!o) return 1e9;
    float w[N], g[N];
    double wr[N], ur[N];
    ih_rng r = ih_rng_make(17, (uint64_t)nesterov, (uint64_t)correct);
    for (int i = 0; i < N; i++) {
        w[i] = (float)(2.0 * ih_rng_normal(&r));
        wr[i] = w[i];
        ur[i] = 0;
    }
    double worst = 0, prev = 0;
    for (int t = 0; t < STEPS; t++) {
        for (int i = 0; i < N; i++) g[i] = (float)ih_rng_normal(&r);
        const double lr = (float)LRS[t]; /* the optimizer folds in lr as a float */
        optim_sgd_step(o, w, g, LRS[t]);
        for (int i = 0; i < N; i++) {
            if (correct && prev > 0 && LRS[t] != prev) ur[i] *= LRS[t] / prev;
            const double d = lr * (g[i] + (no_decay(i) ? 0.0 : wd) * wr[i]);
            ur[i] = m * ur[i] + d;
            wr[i] -= nesterov ? m * ur[i] + d : ur[i];
        }
        prev = LRS[t];
        const float *u = optim_sgd_momentum(o);
        for (int i = 0; i < N; i++) {
            const double ew = fabs(w[i] - wr[i]) / (1e-4 + 1e-5 * fabs(wr[i]));
            const double eu = fabs(u[i] - ur[i]) / (1e-4 + 1e-5 * fabs(ur[i]));
            if (!(ew <= worst)) worst = ew;
            if (!(eu <= worst)) worst = eu;
        }
    }
    memcpy(w_out, w, sizeof w);
    optim_sgd_destroy(o);
    return worst;
}

int main(void)
{
    float wa[N], wb[N];
    for (int nesterov = 0; nesterov < 2; nesterov++)
        for (int correct = 0; correct < 2; correct++) {
            double e = run(nesterov, correct, correct ? wa : wb);
            printf("nesterov %d correction %d: max error / tolerance = %.3g\n", nesterov, correct, e);
            CHECK(e <= 1.0, "nesterov %d correction %d: error %.3g x the tolerance", nesterov, correct, e);
            if (correct) {
                double d = 0;
                for (int i = 0; i < N; i++) d = fmax(d, fabs(wa[i] - wb[i]));
                CHECK(d > 1e-2, "nesterov %d: momentum correction must matter here (%g)", nesterov, d);
            }
        }

    /* plan bookkeeping */
    optim_sgd_cfg cfg = {.momentum = 0.9f, .weight_decay = 1e-4f, .nesterov = 1, .momentum_correction = 1};
    optim_sgd *o = NULL, *o2 = NULL;
    CHECK(optim_sgd_create(&o, N, SEGS, 3, &cfg) == IH_OK, "create");
    CHECK(optim_sgd_create(&o2, N, SEGS, 3, &cfg) == IH_OK, "create");
    if (!o || !o2) return ih_test_result();
    optim_sgd_plan p = optim_sgd_plan_step(o, 0.1);
    CHECK(p.u_scale == 1.0f && p.lr == 0.1f && optim_sgd_prev_lr(o) == 0.1, "first step: no correction");
    p = optim_sgd_plan_step(o, 0.1);
    CHECK(p.u_scale == 1.0f, "same lr: u_scale exactly 1 (%.9g)", p.u_scale);
    p = optim_sgd_plan_step(o, 0.4);
    CHECK(p.u_scale == 4.0f && optim_sgd_prev_lr(o) == 0.4, "lr x4: u_scale %g", p.u_scale);
    const optim_seg *segs;
    CHECK(optim_sgd_segments(o, &segs) == 3 && segs[1].no_decay && optim_sgd_size(o) == N, "segments");

    /* optim_sgd_step == the plan applied per element with the segments' decay, bit for bit */
    float w1[N], w2[N], u2[N] = {0}, g[N];
    ih_rng r = ih_rng_make(5, 0, 0);
    for (int i = 0; i < N; i++) w1[i] = w2[i] = (float)ih_rng_normal(&r);
    const double lrs[4] = {0.1, 0.3, 0.3, 0.03};
    for (int t = 0; t < 4; t++) {
        for (int i = 0; i < N; i++) g[i] = (float)ih_rng_normal(&r);
        optim_sgd_step(o2, w1, g, lrs[t]);
        /* sgd.h: the factor is (float)(lr_new / lr_old) */
        const float c = t > 0 && lrs[t] != lrs[t - 1] ? (float)(lrs[t] / lrs[t - 1]) : 1.0f;
        const optim_sgd_plan q = {.lr = (float)lrs[t], .u_scale = c, .momentum = cfg.momentum,
                                  .weight_decay = cfg.weight_decay, .nesterov = cfg.nesterov};
        for (int i = 0; i < N; i++)
            w2[i] = optim_sgd_elem(w2[i], g[i], &u2[i], q.u_scale, q.momentum, q.lr,
                                   no_decay(i) ? 0.0f : q.weight_decay, q.nesterov);
    }
    CHECK(!memcmp(w1, w2, sizeof w1) && !memcmp(optim_sgd_momentum(o2), u2, sizeof u2),
          "optim_sgd_step must equal optim_sgd_elem applied with its plan");
    optim_sgd_destroy(o);
    optim_sgd_destroy(o2);
    return ih_test_result();
}
