/* test_hier_nccl — the two-level allreduce with NCCL inside the node (nccl_intra.h) equals
 * the flat CPU allreduce and the sequential sum, bit for bit, on device buffers.
 *
 * Ranks are threads, one GPU each (rank r on device r mod G), over the tcp fabric on 127.0.0.1;
 * nodes are simulated by name. Layouts: 2 nodes x 1 GPU (needs 1 GPU: single-rank NCCL
 * communicators, so it checks the staging and the cross-node half), 1 node x G GPUs (one
 * node: the in-place ncclAllReduce; 1 node x 1 with a single GPU) and,
 * with G >= 4, 2 nodes x G/2. Sizes {0, 1, L-1, L+1, 10007, 1 MiB + 3} (L-1 and L+1 exercise
 * the n % L tail) x cross-node {hd, ring}, twice, integer-valued inputs. Exit 77 without a
 * CUDA device. Run for real by scripts/gpu_check.sh on a machine with GPUs.
 */
#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "tests/allreduce_inputs.h"
#include "tests/transport/ranks.h"
#include "transport/hier.h"
#include "transport/nccl_intra.h"

typedef struct { int nodes, local, gpus; } layout;

#define MAXN ((1u << 20) + 3)

static void body(tp_rank *r)
{
    const layout *ly = r->user;
    const int L = ly->local, k = r->world;
    comm_ctx *c = NULL;
    comm_hier *h = NULL;
    comm_intra *x = NULL;
    cudaStream_t s = NULL;
    float *d = NULL, *buf = malloc(MAXN * sizeof(float)), *flat = malloc(MAXN * sizeof(float));
    const int dev = r->rank % ly->gpus;
    cudaError_t ce = cudaSetDevice(dev);
    if (ce != cudaSuccess) { tp_fail(r, "cudaSetDevice(%d): %s", dev, cudaGetErrorString(ce)); goto out; }
    if (cudaStreamCreate(&s) != cudaSuccess || cudaMalloc((void **)&d, MAXN * sizeof(float)) != cudaSuccess) {
        tp_fail(r, "stream/buffer on device %d", dev);
        goto out;
    }
    if (tp_ctx_create(r, &c) != IH_OK) { tp_fail(r, "create: %s", ih_last_error()); goto out; }
    char node[32];
    snprintf(node, sizeof node, "gpu-node-%d", r->rank / L);
    comm_topo t;
    if (comm_topo_discover(c, node, &t) != IH_OK || comm_hier_create(&h, c, &t) != IH_OK) {
        tp_fail(r, "hier: %s", ih_last_error());
        goto out;
    }
    if (comm_nccl_intra_create(&x, h, MAXN) != IH_OK) { tp_fail(r, "nccl: %s", ih_last_error()); goto out; }
    size_t sizes[] = {0, 1, (size_t)(L - 1), (size_t)(L + 1), 10007, MAXN};
    comm_algo algos[] = {COMM_ALGO_HD, COMM_ALGO_RING};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0] && !r->fails; si++) {
        const size_t n = sizes[si];
        for (int a = 0; a < 2 && !r->fails; a++)
            for (int rep = 0; rep < 2 && !r->fails; rep++) {
                for (size_t i = 0; i < n; i++) buf[i] = flat[i] = ar_value(r->rank, i, rep + 2 * a);
                if (n && cudaMemcpy(d, buf, n * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess) {
                    tp_fail(r, "copy in");
                    break;
                }
                if (comm_hier_allreduce_with(h, x, d, n, s, algos[a]) != IH_OK) {
                    tp_fail(r, "nccl two-level (%s, n=%zu): %s", comm_algo_name(algos[a]), n, ih_last_error());
                    break;
                }
                if (n && cudaMemcpy(buf, d, n * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess) {
                    tp_fail(r, "copy out");
                    break;
                }
                if (comm_coll_allreduce(c, flat, n, COMM_ALGO_AUTO) != IH_OK) {
                    tp_fail(r, "flat: %s", ih_last_error());
                    break;
                }
                for (size_t i = 0; i < n && !r->fails; i++) {
                    float ref = 0;
                    for (int q = 0; q < k; q++) ref += ar_value(q, i, rep + 2 * a);
                    if (buf[i] != ref || flat[i] != ref)
                        tp_fail(r, "n=%zu (%s, rep %d): element %zu: nccl two-level %g, flat %g, sequential %g", n,
                                comm_algo_name(algos[a]), rep, i, (double)buf[i], (double)flat[i], (double)ref);
                }
            }
    }
out:
    comm_intra_destroy(x);
    comm_hier_destroy(h);
    comm_ctx_destroy(c);
    if (d) cudaFree(d);
    if (s) cudaStreamDestroy(s);
    free(buf);
    free(flat);
}

int main(void)
{
    int g = 0;
    cudaError_t ce = cudaGetDeviceCount(&g);
    if (ce != cudaSuccess) SKIP("no CUDA device (cudaGetDeviceCount: %s)", cudaGetErrorString(ce));
    if (g < 1) SKIP("no CUDA device (cudaGetDeviceCount = 0)");
    layout layouts[4];
    int nl = 0;
    layouts[nl++] = (layout){2, 1, g};
    if (g >= 2) layouts[nl++] = (layout){1, g > 8 ? 8 : g, g};
    if (g >= 4) layouts[nl++] = (layout){2, (g > 8 ? 8 : g) / 2, g};
    if (g < 2) { /* one node: ncclAllReduce in place instead of the three phases */
        layouts[nl++] = (layout){1, 1, g};
        printf("note: %d GPU: 2 nodes x 1 and 1 node x 1 GPU (single-rank NCCL communicators)\n", g);
    }
    tp_rank ranks[16];
    for (int i = 0; i < nl; i++) {
        double t0 = ih_now_s();
        int bad = tp_run(layouts[i].nodes * layouts[i].local, ranks, body, &layouts[i], 60000, 0, 0, "nccl");
        CHECK(bad == 0, "%d nodes x %d GPUs: %d ranks failed", layouts[i].nodes, layouts[i].local, bad);
        printf("%d nodes x %d GPUs: %s (%.2f s)\n", layouts[i].nodes, layouts[i].local, bad ? "FAIL" : "exact",
               ih_now_s() - t0);
    }
    return ih_test_result();
}
