/* test_dp_hier_equivalence — ./train with the two-level allreduce (--hier, transport/hier.h)
 * trains like the flat allreduce and like one worker with --accumulate 4.
 *
 * 4 workers as 2 simulated nodes x 2 ranks (IH_RANKS_PER_NODE=2, --hier auto, which must pick
 * the two-level allreduce and say so), 4 workers with --hier off, and one worker with
 * --accumulate 4, same seed, S steps. Only the order of the 4-term gradient sums differs, so
 * parameters and momentum agree within BOUND (as test_dp_equivalence: about 8 float32 ulps at
 * 1). Without IH_RANKS_PER_NODE, auto must stay flat (one node).
 *
 * The device-side bucket path (dp_opts.intra: what --intra nccl uses on GPUs, each bucket
 * reduced at its offset in the model's device gradient buffer) is run on the CPU with the CPU
 * intra-node implementation behind a stand-in device buffer of its own (IH_DEBUG_INTRA_VIEW=1,
 * session.c): handing it the host buffer is an error there, and a wrong offset reduces the
 * wrong range. The sums are those of the two-level run, and with 2 nodes x 2 ranks each has
 * two terms per level (a + b, commutative), whatever the bucket boundaries, so it must agree
 * with it to the bit (with 3 or more ranks per level the ring's order would depend on the
 * blocks). Small buckets (about 8 for resnet8's 78k parameters) give most of them a non-zero
 * offset. Both mistakes, put into dp.c on purpose, failed this test. And --intra nccl on the CPU backend is a
 * usage error that says what it needs.
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
    dp_ck view;
    memset(&view, 0, sizeof view);
    CHECK(dp_run(tmp, "view", "IH_RANKS_PER_NODE=2 IH_DEBUG_INTRA_VIEW=1",
                 "--nproc 4 --hier auto --first-bucket-mb 0.01 --bucket-mb 0.04", STEPS, 30) == 0,
          "4 workers, 2 nodes x 2, buckets through the device-side path");
    CHECK(strstr(dp_out, "through the device-side path") != NULL, "IH_DEBUG_INTRA_VIEW=1 was not used:\n%s", dp_out);
    CHECK(dp_run(tmp, "nccl", "", "--intra nccl", 1, 30) != 0 &&
          strstr(dp_out, "--intra nccl reduces the gradients on the GPUs: it needs --backend cuda") != NULL,
          "--intra nccl on the CPU backend should fail with a usage message:\n%s", dp_out);
    if (dp_load(tmp, "hier", &hier) || dp_load(tmp, "flat", &flat) || dp_load(tmp, "acc", &acc) ||
        dp_load(tmp, "view", &view)) {
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
    const double dpv = dp_maxdiff(hier.p, view.p, n), duv = dp_maxdiff(hier.u, view.u, n);
    CHECK(dpv == 0 && duv == 0, "the device-side bucket path differs from the two-level allreduce: parameters "
          "%g, momentum %g (must be bit-identical)", dpv, duv);
    dp_ck_free(&view);
    dp_ck_free(&hier);
    dp_ck_free(&flat);
    dp_ck_free(&acc);
    run_cmd(dp_out, sizeof dp_out, "rm -rf %s", tmp);
    return ih_test_result();
}
