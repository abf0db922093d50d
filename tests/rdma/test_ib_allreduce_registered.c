/* test_ib_allreduce_registered — over the ib fabric (real verbs, Soft-RoCE in the VM), with
 * buffers registered through comm_ctx_register, allreduce equals a sequential sum bit for bit
 * and the large messages move without copies:
 *   1. grid k = 1..9 x n in {0, 1, k-1, k+1, 10007, 1 Mi + 3 (64 Ki + 3 above k = 4)} x {hd,
 *      ring}, each twice on the same communicator and buffer; afterwards every rank's counters
 *      show no byte of a large message copied (eager_large = staged = 0) and, for k > 1, some
 *      bytes sent and received directly;
 *   2. mixed, k = 3: rank 1 does not register its buffer. Still exact; rank 1 sends from a
 *      staging slot into registered peers (staged > 0) and rank 0, its left neighbour in the
 *      ring, sends the allgather half into rank 1's unregistered buffer through the ring
 *      (eager_large > 0);
 *   3. k = 3, registered: 200 back-to-back small allreduces (n = 1..200), then 64 MiB hd and
 *      ring; again no large-message byte copied.
 * Inputs are small integers, so every summation order gives the same float (check: memcmp).
 * IH_COMM_CHUNK_KB=64, IH_IB_SLOT_KB=16, IH_IB_RDV_KB=16 and IH_IB_PIECE_KB=32 (set below)
 * make messages cross many slots, replies and pieces.
 * Run: scripts/rxe-vm/run.sh build ./tests/rdma/test_ib_allreduce_registered (ctest -L rdma). */
#include "tests/rdma/ib_ranks.h"
#include "transport/store.h"

static void print_stats(const ib_rank *r, const char *what, const comm_stats *s)
{
    printf("  %s k=%d rank %d: direct %llu, staged %llu, eager large %llu, eager small %llu; "
           "received direct %llu, copied %llu (threshold %zu B)\n", what, r->world, r->rank,
           (unsigned long long)s->direct, (unsigned long long)s->staged, (unsigned long long)s->eager_large,
           (unsigned long long)s->eager_small, (unsigned long long)s->rx_direct,
           (unsigned long long)s->rx_copied, s->threshold);
}

/* Both sides registered: no byte of a large message may have been copied. */
static int zero_copy_only(const ib_rank *r, comm_ctx *c, const char *what)
{
    comm_stats s;
    comm_ctx_stats(c, &s);
    print_stats(r, what, &s);
    if (r->world == 1) return 0;
    if (s.eager_large || s.staged || !s.direct || !s.rx_direct || s.threshold != 16384) {
        fprintf(stderr, "FAIL rank %d/%d (%s): with every buffer registered, large messages must all go "
                "direct: eager_large %llu, staged %llu (want 0), direct %llu, rx_direct %llu (want > 0), "
                "threshold %zu (want 16384)\n", r->rank, r->world, what, (unsigned long long)s.eager_large,
                (unsigned long long)s.staged, (unsigned long long)s.direct, (unsigned long long)s.rx_direct,
                s.threshold);
        return 1;
    }
    return 0;
}

static int grid_body(const ib_rank *r)
{
    comm_ctx *c = NULL;
    if (ib_ctx_create(r, "ib", &c) != IH_OK) {
        fprintf(stderr, "FAIL rank %d/%d: create: %s\n", r->rank, r->world, ih_last_error());
        return 1;
    }
    int k = r->world, fails = 0;
    size_t sizes[] = {0, 1, (size_t)(k - 1), (size_t)(k + 1), 10007, k <= 4 ? (1u << 20) + 3 : (1u << 16) + 3};
    size_t maxn = (1u << 20) + 3;
    float *buf = malloc(maxn * sizeof(float)), *ref = malloc(maxn * sizeof(float));
    if (comm_ctx_register(c, buf, maxn * sizeof(float)) != IH_OK) {
        fprintf(stderr, "FAIL rank %d/%d: register: %s\n", r->rank, r->world, ih_last_error());
        fails++;
    }
    comm_algo algos[] = {COMM_ALGO_HD, COMM_ALGO_RING};
    for (size_t si = 0; si < 6 && !fails; si++)
        for (int a = 0; a < 2 && !fails; a++)
            for (int rep = 0; rep < 2 && !fails; rep++)
                fails += ib_check_allreduce(r, c, buf, ref, sizes[si], algos[a], rep + 2 * a);
    if (!fails) fails += zero_copy_only(r, c, "grid");
    if (!fails && comm_ctx_unregister(c, buf) != IH_OK) {
        fprintf(stderr, "FAIL rank %d/%d: unregister: %s\n", r->rank, r->world, ih_last_error());
        fails++;
    }
    comm_ctx_destroy(c);
    free(buf);
    free(ref);
    return fails;
}

static int mixed_body(const ib_rank *r)
{
    comm_ctx *c = NULL;
    if (ib_ctx_create(r, "ib", &c) != IH_OK) {
        fprintf(stderr, "FAIL rank %d: create: %s\n", r->rank, ih_last_error());
        return 1;
    }
    int fails = 0;
    size_t maxn = (1u << 18) + 5;
    float *buf = malloc(maxn * sizeof(float)), *ref = malloc(maxn * sizeof(float));
    if (r->rank != 1 && comm_ctx_register(c, buf, maxn * sizeof(float)) != IH_OK) {
        fprintf(stderr, "FAIL rank %d: register: %s\n", r->rank, ih_last_error());
        fails++;
    }
    size_t sizes[] = {1, 4099, 10007, maxn};
    for (size_t si = 0; si < 4 && !fails; si++)
        for (int a = 0; a < 2 && !fails; a++)
            for (int rep = 0; rep < 2 && !fails; rep++)
                fails += ib_check_allreduce(r, c, buf, ref, sizes[si], a ? COMM_ALGO_RING : COMM_ALGO_HD, rep + 2 * a);
    comm_stats s;
    comm_ctx_stats(c, &s);
    print_stats(r, "mixed", &s);
    if (!fails && r->rank == 1 && (!s.staged || !s.rx_copied)) {
        fprintf(stderr, "FAIL rank 1 (not registered): staged %llu, copied out %llu; want both > 0\n",
                (unsigned long long)s.staged, (unsigned long long)s.rx_copied);
        fails++;
    }
    if (!fails && r->rank == 0 && (!s.eager_large || !s.direct)) {
        fprintf(stderr, "FAIL rank 0 (registered, sends to rank 1 which is not): eager_large %llu, "
                "direct %llu; want both > 0\n", (unsigned long long)s.eager_large, (unsigned long long)s.direct);
        fails++;
    }
    comm_ctx_destroy(c);
    free(buf);
    free(ref);
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
    if (comm_ctx_register(c, buf, big * sizeof(float)) != IH_OK) {
        fprintf(stderr, "FAIL rank %d: register: %s\n", r->rank, ih_last_error());
        fails++;
    }
    if (!fails) fails += ib_check_reuse(r, c, buf, ref, big);
    if (!fails) fails += zero_copy_only(r, c, "reuse");
    comm_ctx_destroy(c);
    free(buf);
    free(ref);
    return fails;
}

int main(int argc, char **argv)
{
    const char *addr = ib_test_addr();
    int kmax = 9;
    if (argc > 2 && !strcmp(argv[1], "--kmax")) kmax = atoi(argv[2]);
    setenv("IH_COMM_CHUNK_KB", "64", 0);
    setenv("IH_IB_SLOT_KB", "16", 0);
    setenv("IH_IB_RDV_KB", "16", 1); /* zero_copy_only() checks the threshold */
    setenv("IH_IB_PIECE_KB", "32", 0);
    int port;
    pid_t store = ib_store_start(&port);
    if (store < 0) return 1;
    int bad = 0;
    for (int k = 1; k <= kmax; k++) {
        char ns[32];
        snprintf(ns, sizeof ns, "rgrid%d", k);
        int b = ib_run(k, addr, port, ns, 60000, NULL, grid_body, NULL);
        printf("%s registered grid k=%d (%d ranks failed)\n", b ? "FAIL" : "ok  ", k, b);
        bad += b;
    }
    int b = ib_run(3, addr, port, "mixed", 60000, NULL, mixed_body, NULL);
    printf("%s k=3, rank 1 not registered: exact, staged and eager paths used (%d ranks failed)\n", b ? "FAIL" : "ok  ", b);
    bad += b;
    b = ib_run(3, addr, port, "rreuse", 60000, NULL, reuse_body, NULL);
    printf("%s k=3 registered: 200 back-to-back small allreduces, then 64 MiB hd and ring (%d ranks failed)\n",
           b ? "FAIL" : "ok  ", b);
    bad += b;
    ib_store_stop(store);
    printf("%s\n", bad ? "FAIL" : "PASS");
    return bad ? 1 : 0;
}
