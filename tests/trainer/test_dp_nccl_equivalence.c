/* test_dp_nccl_equivalence — ./train with the gradients reduced on the GPUs (--intra nccl:
 * each bucket's range of the device gradient buffer goes through NCCL reduce-scatter inside
 * the node, the cross-node allreduce of the shard through pinned host memory, NCCL all-gather)
 * trains like one worker with --accumulate 2, as test_dp_cuda_equivalence does for the host
 * path, with the same bound and for the same reason (only the order of two-term gradient
 * sums differs; a lost, doubled or misplaced bucket moves weights by >= 1e-3).
 *
 * Runs, 6 steps of resnet8 at 16 px, bf16, IH_CUDNN_FIND=0 (same algorithms in every process),
 * small buckets so that most have a non-zero offset:
 *   - with 1 GPU or more: 2 simulated nodes x 1 rank (IH_RANKS_PER_NODE=1, --intra nccl):
 *     single-rank NCCL communicators, so every bucket takes the whole device path (NCCL calls,
 *     copy to pinned staging, tcp allreduce across the nodes, copy back) on one GPU;
 *   - with 2 GPUs or more: 1 node x 2 ranks, --intra auto, which must choose NCCL;
 * each compared with --accumulate 2 on one GPU. Exit 77 without a CUDA device or NCCL.
 */
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <string.h>

#include "model/model.h"
#include "tests/trainer/dp_ckpt.h"

#define BOUND 1e-5
enum { STEPS = 6 };

static void compare(const char *what, const dp_ck *acc, const dp_ck *par)
{
    CHECK(par->m.iter == STEPS && par->m.world == 2, "%s: iterations %lld, world %d", what, (long long)par->m.iter,
          par->m.world);
    const double dp = dp_maxdiff(acc->p, par->p, par->m.n_params), du = dp_maxdiff(acc->u, par->u, par->m.n_params);
    printf("%s: max |w - w_accumulate2| = %.3g, momentum %.3g (bound %.1g)\n", what, dp, du, BOUND);
    CHECK(dp <= BOUND && du <= BOUND, "%s: parameters differ by %g, momentum by %g (> %g)", what, dp, du, BOUND);
}

int main(void)
{
    char why[200];
    if (!model_backend_available(MODEL_BACKEND_CUDA, why, sizeof why)) SKIP("%s", why);
    int gpus = 0;
    if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus < 1) SKIP("no CUDA device");
    char tmp[] = "/tmp/ih_dpnccl_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    if (make_tiny_data(tmp, 4, 48, 2)) { CHECK(0, "could not build the tiny dataset"); return ih_test_result(); }
    const char *bk = "--backend cuda --first-bucket-mb 0.01 --bucket-mb 0.04";
    char how[256];
    dp_ck acc = {0}, two = {0}, one = {0};
    snprintf(how, sizeof how, "--accumulate 2 %s", bk);
    CHECK(dp_run(tmp, "acc2", "IH_CUDNN_FIND=0", how, STEPS, 60) == 0, "one worker, --accumulate 2");
    snprintf(how, sizeof how, "--nproc 2 --intra nccl %s", bk);
    CHECK(dp_run(tmp, "n2x1", "IH_CUDNN_FIND=0 IH_RANKS_PER_NODE=1", how, STEPS, 60) == 0,
          "2 nodes x 1 rank, --intra nccl");
    CHECK(strstr(dp_out, "two-level with NCCL inside each node") != NULL, "--intra nccl was not used:\n%s", dp_out);
    const int have_acc = dp_load(tmp, "acc2", &acc) == 0;
    if (!have_acc || dp_load(tmp, "n2x1", &two)) CHECK(0, "checkpoints");
    else compare("2 nodes x 1 GPU rank, NCCL", &acc, &two);
    if (gpus >= 2 && have_acc) {
        snprintf(how, sizeof how, "--nproc 2 %s", bk);
        CHECK(dp_run(tmp, "n1x2", "IH_CUDNN_FIND=0", how, STEPS, 60) == 0, "1 node x 2 ranks, --intra auto");
        CHECK(strstr(dp_out, "two-level with NCCL inside each node (--intra auto") != NULL,
              "--intra auto with 2 GPUs on one node did not choose NCCL:\n%s", dp_out);
        if (dp_load(tmp, "n1x2", &one)) CHECK(0, "checkpoint n1x2");
        else compare("1 node x 2 GPUs, NCCL", &acc, &one);
    } else if (gpus < 2) {
        printf("1 GPU: the 1 node x 2 GPUs case needs 2 (skipped)\n");
    }
    dp_ck_free(&acc);
    dp_ck_free(&two);
    dp_ck_free(&one);
    run_cmd(dp_out, sizeof dp_out, "rm -rf %s", tmp);
    return ih_test_result();
}
