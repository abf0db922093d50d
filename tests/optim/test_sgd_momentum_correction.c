/* test_sgd_momentum_correction — the optimizer against an independent float64 simulation of
 * the UNFOLDED update (Goyal et al. eq. 3: v <- m v + g + wd w;  w <- w - lr v), which the
 * folded form with momentum correction must equal whenever lr changes; also: no weight decay
 * on no_decay segments, Nesterov form, and the segment table is validated. */
#include <string.h>

#include "core/rng.h"
#include "optim/sgd.h"
#include "tests/check.h"

enum { N = 37 };

int main(void)
{
    optim_seg segs[2] = {{0, 20, 0}, {20, 17, 1}};
    optim_sgd_cfg cfg = {.momentum = 0.9f, .weight_decay = 1e-2f, .nesterov = 0, .momentum_correction = 1};
    optim_sgd *o;
    CHECK(optim_sgd_create(&o, N, segs, 2, &cfg) == IH_OK, "create");
    float w[N], g[N];
    double wr[N], v[N];
    ih_rng r = ih_rng_make(7, 0, 0);
    for (int i = 0; i < N; i++) { w[i] = (float)ih_rng_normal(&r); wr[i] = w[i]; v[i] = 0; }
    const double lrs[] = {0.1, 0.1, 0.4, 0.4, 0.4, 0.04, 0.2, 0.2};
    double maxerr = 0;
    for (int t = 0; t < 8; t++) {
        for (int i = 0; i < N; i++) g[i] = (float)ih_rng_normal(&r);
        optim_sgd_step(o, w, g, lrs[t]);
        for (int i = 0; i < N; i++) {
            double wd = i < 20 ? 1e-2 : 0.0;
            v[i] = 0.9 * v[i] + g[i] + wd * wr[i];
            wr[i] -= lrs[t] * v[i];
            double e = fabs(w[i] - wr[i]);
            if (e > maxerr) maxerr = e;
        }
    }
    CHECK(maxerr < 1e-5, "folded+corrected vs unfolded: max abs diff %g", maxerr);

    /* Without correction, the lr jump 0.1 -> 0.4 must make the two forms differ. */
    cfg.momentum_correction = 0;
    optim_sgd *o2;
    CHECK(optim_sgd_create(&o2, N, segs, 2, &cfg) == IH_OK, "create");
    float w2[N];
    for (int i = 0; i < N; i++) w2[i] = 1.0f, g[i] = 1.0f;
    optim_sgd_step(o2, w2, g, 0.1);
    optim_sgd_step(o2, w2, g, 0.4);
    /* unfolded: v1 = 1+wd, w1 = 1 - 0.1 v1; v2 = 0.9 v1 + 1 + wd w1; w2 = w1 - 0.4 v2 */
    double v1 = 1.01, w1 = 1 - 0.1 * v1, v2 = 0.9 * v1 + 1 + 0.01 * w1, ww = w1 - 0.4 * v2;
    CHECK(fabs(w2[0] - ww) > 1e-3, "uncorrected should differ from unfolded (%g vs %g)", w2[0], ww);
    optim_sgd_destroy(o2);

    /* Nesterov (Sutskever form), one param with decay, one without, lr 0.5, two steps. */
    cfg.nesterov = 1;
    cfg.momentum_correction = 1;
    optim_seg s3[2] = {{0, 1, 0}, {1, 1, 1}};
    optim_sgd *o3;
    CHECK(optim_sgd_create(&o3, 2, s3, 2, &cfg) == IH_OK, "create");
    float w3[2] = {2.0f, 2.0f}, g3[2] = {1.0f, 1.0f};
    optim_sgd_step(o3, w3, g3, 0.5);
    optim_sgd_step(o3, w3, g3, 0.5);
    for (int p = 0; p < 2; p++) {
        double wd = p == 0 ? 0.01 : 0.0, x = 2.0, u = 0;
        for (int t = 0; t < 2; t++) {
            double d = 0.5 * (1.0 + wd * x);
            u = 0.9 * u + d;
            x -= 0.9 * u + d;
        }
        CHECK(fabs(w3[p] - x) < 1e-6, "nesterov param %d: %g vs %g", p, w3[p], x);
    }
    CHECK(w3[0] != w3[1], "weight decay must apply to segment 0 and not to segment 1");
    optim_sgd_destroy(o3);

    optim_seg bad[2] = {{0, 10, 0}, {11, 26, 0}};
    optim_sgd *o4 = NULL;
    CHECK(optim_sgd_create(&o4, N, bad, 2, &cfg) == IH_E_INTERNAL && o4 == NULL, "gap must be rejected");
    optim_sgd_destroy(o);
    return ih_test_result();
}
