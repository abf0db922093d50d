/* test_dp_hier_equivalence — ./train with the two-level allreduce (--hier, transport/hier.h)
 * trains like the flat allreduce and like one worker with --accumulate 4.
 *
 * 4 workers as 2 simulated nodes x 2 ranks (IH_RANKS_PER_NODE=2, --hier auto, which must pick
 * the two-level allreduce and say so), 4 workers with --hier off, and one worker with
 * --accumulate 4, same seed, S steps. Only the order of the 4-term gradient sums differs, so
 * parameters and momentum agree within BOUND (as test_dp_equivalence: about 8 float32 ulps at
 * 1). Without IH_RANKS_PER_NODE, auto must stay flat (one node).
 */
#include <stdint.h>
#include <string.h>

#include "tests/trainer/dp_ckpt.h"

#define BOUND 1e-6
enum { STEPS = 6 };


int main(void)
{
    char tmp[] = "/tmp/ih_dphier_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    if (make_tiny_data(tmp, 4, 48, 2)) { CHECK(0, "could not build the tiny dataset"); return ih_test_result(); }
    dp_ck hier, flat, acc;
    memset(&hier, 0, sizeof hier);
    memset(&flat, 0, sizeof flat);
    memset(&acc, 0, sizeof acc);
    CHECK(dp_run(tmp, "hier", "IH_RANKS_PER_NODE=2", "--nproc 4 --hier auto", STEPS, 30) == 0, "4 workers, 2 nodes x 2, --hier auto");
    CHECK(strstr(dp_out, "two-level (--hier auto: 2 nodes x 2 ranks)") != NULL,
          "--hier auto on 2 simulated nodes x 2 did not report the two-level allreduce:\n%s", dp_out);
    CHECK(dp_run(tmp, "flat", "IH_DEBUG=INFO IH_DEBUG_SUBSYS=COMM", "--nproc 4", STEPS, 30) == 0, "4 workers, one node, --hier auto");
    CHECK(strstr(dp_out, "allreduce: two-level") == NULL && strstr(dp_out, "flat (--hier auto: 1 node x 4 ranks)") != NULL,
          "--hier auto on one node is not flat:\n%s", dp_out);
    CHECK(dp_run(tmp, "acc", "", "--accumulate 4", STEPS, 30) == 0, "one worker, --accumulate 4");
    if (dp_load(tmp, "hier", &hier) || dp_load(tmp, "flat", &flat) || dp_load(tmp, "acc", &acc)) {
        CHECK(0, "checkpoints");
        return ih_test_result();
    }
    CHECK(hier.m.iter == STEPS && flat.m.iter == STEPS, "iterations %lld %lld", (long long)hier.m.iter,
          (long long)flat.m.iter);
    const size_t n = hier.m.n_params;
    const double dpf = dp_maxdiff(hier.p, flat.p, n), duf = dp_maxdiff(hier.u, flat.u, n);
    const double dpa = dp_maxdiff(hier.p, acc.p, n), dua = dp_maxdiff(hier.u, acc.u, n);
    printf("two-level vs flat: parameters %.3g, momentum %.3g; vs --accumulate 4: %.3g, %.3g (bound %.1g)\n", dpf,
           duf, dpa, dua, BOUND);
    CHECK(dpf <= BOUND && duf <= BOUND, "two-level vs flat: %g %g > %g", dpf, duf, BOUND);
    CHECK(dpa <= BOUND && dua <= BOUND, "two-level vs --accumulate 4: %g %g > %g", dpa, dua, BOUND);
    dp_ck_free(&hier);
    dp_ck_free(&flat);
    dp_ck_free(&acc);
    run_cmd(dp_out, sizeof dp_out, "rm -rf %s", tmp);
    return ih_test_result();
}
