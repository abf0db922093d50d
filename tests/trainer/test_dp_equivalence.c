/* test_dp_equivalence — k workers x n images == one worker with --accumulate k (k*n per step,
 * k sub-batches each with its own BN statistics), same seed, for k = 1, 2, 3, 4 (3 is not a
 * power of two: the allreduce folds a rank in). After S steps the parameters and the momentum
 * must agree to float32 rounding:
 *
 *   max_i |w_k[i] - w_acc[i]| <= 1e-6 and the same for the momentum buffer
 *
 * (the weights are O(1): 1e-6 is about 8 float32 ulps at 1; measured: 0 for k = 1, <= 6e-8
 * for k = 2..4 after 6 steps). The two runs do the same arithmetic except the order of the k-term gradient sum (allreduce
 * tree vs. sequential accumulation into the flat buffer), which changes each gradient element
 * by a few float32 ulps; through S SGD steps that stays within BOUND. k = 1 must be bit-exact
 * (--nproc 1 is one worker). To show the test can fail, runs with different k (different global
 * batch, so different lr and data) must differ by far more than BOUND.
 */
#include <stdint.h>
#include <string.h>

#include "tests/trainer/dp_ckpt.h"

#define BOUND 1e-6
enum { STEPS = 6 };


int main(void)
{
    char tmp[] = "/tmp/ih_dpeq_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    if (make_tiny_data(tmp, 4, 48, 2)) { CHECK(0, "could not build the tiny dataset"); return ih_test_result(); }
    dp_ck acc[5], par[5];
    memset(acc, 0, sizeof acc);
    memset(par, 0, sizeof par);
    for (int k = 1; k <= 4; k++) {
        char a[32], p[32], how[64];
        snprintf(a, sizeof a, "acc%d", k);
        snprintf(p, sizeof p, "par%d", k);
        snprintf(how, sizeof how, "--accumulate %d", k);
        CHECK(dp_run(tmp, a, "", how, STEPS, 30) == 0, "one worker, --accumulate %d", k);
        snprintf(how, sizeof how, "--nproc %d", k);
        CHECK(dp_run(tmp, p, "", how, STEPS, 30) == 0, "%d workers", k);
        if (dp_load(tmp, a, &acc[k]) || dp_load(tmp, p, &par[k])) { CHECK(0, "checkpoints for k=%d", k); continue; }
        CHECK(acc[k].m.iter == STEPS && par[k].m.iter == STEPS, "k=%d: iterations %lld %lld", k,
              (long long)acc[k].m.iter, (long long)par[k].m.iter);
        CHECK(par[k].m.world == k && acc[k].m.accumulate == k, "k=%d: checkpoint says world %d, accumulate %d", k,
              par[k].m.world, acc[k].m.accumulate);
        const double dp = dp_maxdiff(acc[k].p, par[k].p, par[k].m.n_params);
        const double du = dp_maxdiff(acc[k].u, par[k].u, par[k].m.n_params);
        printf("k=%d: max |w_workers - w_accumulate| = %.3g, momentum %.3g (bound %.1g)\n", k, dp, du, BOUND);
        if (k == 1) CHECK(dp == 0 && du == 0, "k=1 must be bit-exact: %g %g", dp, du);
        CHECK(dp <= BOUND, "k=%d: parameters differ by %g > %g", k, dp, BOUND);
        CHECK(du <= BOUND, "k=%d: momentum differs by %g > %g", k, du, BOUND);
        CHECK(par[k].m.prev_lr == acc[k].m.prev_lr, "k=%d: lr %g vs %g", k, par[k].m.prev_lr, acc[k].m.prev_lr);
    }
    for (int k = 2; k <= 4; k++)
        if (par[k].p && par[k - 1].p) {
            double d = dp_maxdiff(par[k].p, par[k - 1].p, par[k].m.n_params);
            CHECK(d > 100 * BOUND, "runs with k=%d and k=%d should differ clearly, differ by %g", k, k - 1, d);
        }
    for (int k = 1; k <= 4; k++) {
        dp_ck_free(&acc[k]);
        dp_ck_free(&par[k]);
    }
    run_cmd(dp_out, sizeof dp_out, "rm -rf %s", tmp);
    return ih_test_result();
}
