/* test_dp_cuda_equivalence — on the CUDA backend, 2 workers x n images (--nproc 2: per-layer
 * gradient copies to pinned host memory, allreduce of the host buckets, upload, device SGD)
 * == one worker with --accumulate 2 (gradients accumulated on the device, no host copy,
 * device SGD), same seed, 6 steps of resnet8 at 16 px in the default bf16 mode. Both ranks
 * share the one GPU when there is only one.
 *
 *   max_i |w_2workers[i] - w_accumulate[i]| <= 1e-5 and the same for the momentum buffer
 *
 * The two runs differ only where a sum of the two sub-batches' gradients is formed: the
 * device adds the second sub-batch into the first's (cuBLAS beta = 1 for the FC, the BN and
 * bf16-conv kernels add in fp32) while the allreduce adds two separately rounded fp32
 * gradients; each differs by at most an ulp of the gradient, a few 1e-8 on the O(1) weights
 * after 6 steps (the CPU backend measures <= 6e-8, test_dp_equivalence). 1e-5 leaves room for
 * a bf16 weight copy that rounds the other way once (2^-9 relative on one weight, damped by
 * lr) but not for a lost, doubled or stale bucket (>= 1e-3). IH_CUDNN_FIND=0 makes both
 * processes pick the same (heuristic, deterministic-first) convolution algorithms; cudnnFind
 * would time them and could choose differently per process. The runs with 1 and 2 workers'
 * worth of data must differ by far more than the bound, which shows the test can fail.
 * Exit 77 without a CUDA device.
 */
#include <stdint.h>
#include <string.h>

#include "model/model.h"
#include "tests/trainer/dp_ckpt.h"

#define BOUND 1e-5
enum { STEPS = 6 };


int main(void)
{
    char why[200];
    if (!model_backend_available(MODEL_BACKEND_CUDA, why, sizeof why)) SKIP("%s", why);
    char tmp[] = "/tmp/ih_dpcu_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    if (make_tiny_data(tmp, 4, 48, 2)) { CHECK(0, "could not build the tiny dataset"); return ih_test_result(); }
    dp_ck acc = {0}, par = {0}, one = {0};
    CHECK(dp_run(tmp, "acc2", "IH_CUDNN_FIND=0", "--accumulate 2 --backend cuda", STEPS, 60) == 0, "one worker, --accumulate 2");
    CHECK(dp_run(tmp, "par2", "IH_CUDNN_FIND=0", "--nproc 2 --backend cuda", STEPS, 60) == 0, "2 workers");
    CHECK(dp_run(tmp, "one", "IH_CUDNN_FIND=0", "--backend cuda", STEPS, 60) == 0, "one worker");
    if (dp_load(tmp, "acc2", &acc) || dp_load(tmp, "par2", &par) || dp_load(tmp, "one", &one)) {
        CHECK(0, "checkpoints");
    } else {
        CHECK(acc.m.iter == STEPS && par.m.iter == STEPS, "iterations %lld %lld", (long long)acc.m.iter,
              (long long)par.m.iter);
        CHECK(par.m.world == 2 && acc.m.accumulate == 2, "checkpoint says world %d, accumulate %d", par.m.world,
              acc.m.accumulate);
        const double dp = dp_maxdiff(acc.p, par.p, par.m.n_params), du = dp_maxdiff(acc.u, par.u, par.m.n_params);
        const double d1 = dp_maxdiff(one.p, par.p, par.m.n_params);
        printf("cuda: max |w_2workers - w_accumulate2| = %.3g, momentum %.3g (bound %.1g); vs 1 worker %.3g\n", dp,
               du, BOUND, d1);
        CHECK(dp <= BOUND, "parameters differ by %g > %g", dp, BOUND);
        CHECK(du <= BOUND, "momentum differs by %g > %g", du, BOUND);
        CHECK(par.m.prev_lr == acc.m.prev_lr, "lr %g vs %g", par.m.prev_lr, acc.m.prev_lr);
        CHECK(d1 > 100 * BOUND, "1 worker and 2 workers should differ clearly, differ by %g", d1);
    }
    dp_ck_free(&acc);
    dp_ck_free(&par);
    dp_ck_free(&one);
    run_cmd(dp_out, sizeof dp_out, "rm -rf %s", tmp);
    return ih_test_result();
}
