/* tests/rdma/ib_ranks.h — run k ranks as processes over the ib fabric (header-only). The
 * test's main hosts the rendezvous store on an ephemeral port of all interfaces and forks one
 * child per rank; each child builds its comm_ctx with ib_ctx_create and exits 0 (pass) or 1
 * (failed check, message on stderr). Ranks find each other at IH_TEST_RDMA_ADDR (the VM
 * harness sets it to the rxe0 address; on a host with an RDMA device, set it to an address on
 * an RDMA netdev). Without it, or without a device, the test exits 77. */
#ifndef TESTS_RDMA_IB_RANKS_H
#define TESTS_RDMA_IB_RANKS_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "transport/comm.h"
#include "transport/store.h"

typedef struct {
    int rank, world, port;
    const char *addr; /* MASTER_ADDR the ranks use */
    char ns[32];
    int64_t timeout_ms;
    const char *ib_dev;
} ib_rank;

/* The address, or exits 77 with the reason. */
static inline const char *ib_test_addr(void)
{
    const char *a = getenv("IH_TEST_RDMA_ADDR");
    if (!a || !*a) {
        printf("SKIP: IH_TEST_RDMA_ADDR is not set: run through scripts/rxe-vm/run.sh (ctest label "
               "rdma) or set it to an address on an RDMA netdev (see shared/SOFT-ROCE.md)\n");
        exit(77);
    }
    return a;
}

static inline ih_err ib_ctx_create(const ib_rank *r, const char *fabric, comm_ctx **out)
{
    comm_boot_info b;
    memset(&b, 0, sizeof b);
    b.rank = r->rank;
    b.world = r->world;
    b.master_port = r->port;
    snprintf(b.master_addr, sizeof b.master_addr, "%s", r->addr);
    snprintf(b.source, sizeof b.source, "test");
    comm_opts o;
    memset(&o, 0, sizeof o);
    o.fabric = fabric;
    o.no_store_server = 1;
    o.timeout_ms = r->timeout_ms;
    o.ns = r->ns;
    o.ib_dev = r->ib_dev;
    return comm_ctx_create(out, &b, &o);
}

/* Forks k ranks running body (which returns the number of failed checks) and waits for them.
 * Returns how many ranks failed; status[rank] gets each wait status when non-NULL. */
static inline int ib_run(int k, const char *addr, int port, const char *ns, int64_t timeout_ms,
                         const char *ib_dev, int (*body)(const ib_rank *), int *status)
{
    pid_t pid[64];
    fflush(NULL);
    for (int i = 0; i < k; i++) {
        pid[i] = fork();
        if (pid[i] == 0) {
            ib_rank r = {.rank = i, .world = k, .port = port, .addr = addr, .timeout_ms = timeout_ms, .ib_dev = ib_dev};
            snprintf(r.ns, sizeof r.ns, "%s", ns);
            ih_log_set_rank(i);
            int fails = body(&r);
            fflush(NULL);
            _exit(fails ? 1 : 0);
        }
    }
    int bad = 0;
    for (int i = 0; i < k; i++) {
        int st = 0;
        waitpid(pid[i], &st, 0);
        if (status) status[i] = st;
        if (!WIFEXITED(st) || WEXITSTATUS(st)) bad++;
    }
    return bad;
}

/* Input element i of `rank` in repetition `rep`: small integers, so every summation order
 * gives the same float and results compare with memcmp. */
static inline float ib_value(int rank, size_t i, int rep)
{
    return (float)((int)((rank * 7u + i * 13u + (unsigned)rep * 5u) % 17u) - 8);
}

/* One allreduce of n elements with algorithm a on ib_value inputs, checked bit for bit
 * against the sequential sum (ref is scratch of n floats). Returns 1 (and prints) on failure. */
static inline int ib_check_allreduce(const ib_rank *r, comm_ctx *c, float *buf, float *ref, size_t n, comm_algo a,
                                     int rep)
{
    for (size_t i = 0; i < n; i++) {
        buf[i] = ib_value(r->rank, i, rep);
        float s = 0;
        for (int q = 0; q < r->world; q++) s += ib_value(q, i, rep);
        ref[i] = s;
    }
    if (comm_coll_allreduce(c, buf, n, a) != IH_OK) {
        fprintf(stderr, "FAIL rank %d/%d: allreduce(%s, n=%zu, rep %d): %s\n", r->rank, r->world,
                comm_algo_name(a), n, rep, ih_last_error());
        return 1;
    }
    if (n && memcmp(buf, ref, n * sizeof(float))) {
        size_t i = 0;
        while (buf[i] == ref[i]) i++;
        fprintf(stderr, "FAIL rank %d/%d: allreduce(%s, n=%zu, rep %d): element %zu is %g, expected %g\n",
                r->rank, r->world, comm_algo_name(a), n, rep, i, (double)buf[i], (double)ref[i]);
        return 1;
    }
    return 0;
}

#endif
