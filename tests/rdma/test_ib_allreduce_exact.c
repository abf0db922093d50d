/* test_ib_allreduce_exact — over the ib fabric (real verbs, Soft-RoCE in the VM), allreduce
 * equals a sequential sum bit for bit, ranks as processes:
 *   1. grid k = 1..9 x n in {0, 1, k-1, k+1, 10007, 1 Mi + 3 (64 Ki + 3 above k = 4)} x {hd, ring}, each twice on the
 *      same communicator and buffers (slot and credit reuse);
 *   2. k = 3: 200 back-to-back small allreduces (n = 1..200) on one buffer, then one of
 *      64 MiB: many more pieces than slots, so every credit is used and returned many times.
 * Inputs are small integers, so every summation order gives the same float (check: memcmp).
 * A 64 KiB chunk and IH_IB_SLOT_KB=16 (set below) make 1 MiB messages cross many slots.
 * Run: scripts/rxe-vm/run.sh build ./tests/rdma/test_ib_allreduce_exact (ctest -L rdma). */
#include "tests/rdma/ib_ranks.h"
#include "transport/store.h"

static int kmax = 9;

static int grid_body(const ib_rank *r)
{
    comm_ctx *c = NULL;
    if (ib_ctx_create(r, "ib", &c) != IH_OK) {
        fprintf(stderr, "FAIL rank %d/%d: create: %s\n", r->rank, r->world, ih_last_error());
        return 1;
    }
    int k = r->world, fails = 0;
    /* the largest size crosses many slots and chunks; above k = 4 it is 64 Ki + 3 elements
     * to keep the rdma label within its CI budget (TCG, 2 vCPUs for up to 9 processes) */
    size_t sizes[] = {0, 1, (size_t)(k - 1), (size_t)(k + 1), 10007, k <= 4 ? (1u << 20) + 3 : (1u << 16) + 3};
    size_t maxn = (1u << 20) + 3;
    float *buf = malloc(maxn * sizeof(float)), *ref = malloc(maxn * sizeof(float));
    comm_algo algos[] = {COMM_ALGO_HD, COMM_ALGO_RING};
    for (size_t si = 0; si < 6 && !fails; si++)
        for (int a = 0; a < 2 && !fails; a++)
            for (int rep = 0; rep < 2 && !fails; rep++)
                fails += ib_check_allreduce(r, c, buf, ref, sizes[si], algos[a], rep + 2 * a);
    free(buf);
    free(ref);
    comm_ctx_destroy(c);
    return fails;
}

static int reuse_body(const ib_rank *r)
{
    comm_ctx *c = NULL;
    if (ib_ctx_create(r, "ib", &c) != IH_OK) {
        fprintf(stderr, "FAIL rank %d: create: %s\n", r->rank, ih_last_error());
        return 1;
    }
    int fails = 0;
    size_t big = (64u << 20) / sizeof(float);
    float *buf = malloc(big * sizeof(float)), *ref = malloc(big * sizeof(float));
    if (!fails) fails += ib_check_reuse(r, c, buf, ref, big);
    free(buf);
    free(ref);
    comm_ctx_destroy(c);
    return fails;
}

int main(int argc, char **argv)
{
    const char *addr = ib_test_addr();
    if (argc > 2 && !strcmp(argv[1], "--kmax")) kmax = atoi(argv[2]);
    setenv("IH_COMM_CHUNK_KB", "64", 0);
    setenv("IH_IB_SLOT_KB", "16", 0);
    int port;
    pid_t store = ib_store_start(&port);
    if (store < 0) return 1;
    int bad = 0;
    for (int k = 1; k <= kmax; k++) {
        char ns[32];
        snprintf(ns, sizeof ns, "grid%d", k);
        int b = ib_run(k, addr, port, ns, 60000, NULL, grid_body, NULL);
        printf("%s grid k=%d (%d ranks failed)\n", b ? "FAIL" : "ok  ", k, b);
        bad += b;
    }
    int b = ib_run(3, addr, port, "reuse", 60000, NULL, reuse_body, NULL);
    printf("%s k=3: 200 back-to-back small allreduces, then 64 MiB hd and ring (%d ranks failed)\n",
           b ? "FAIL" : "ok  ", b);
    bad += b;
    ib_store_stop(store);
    printf("%s\n", bad ? "FAIL" : "PASS");
    return bad ? 1 : 0;
}
