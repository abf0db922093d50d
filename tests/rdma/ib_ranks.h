/* tests/rdma/ib_ranks.h — run k ranks as processes over the ib fabric (header-only). The
 * test's main hosts the rendezvous store on an ephemeral port of all interfaces and forks one
 * child per rank; each child builds its comm_ctx with ib_ctx_create and exits 0 (pass) or 1
 * (failed check, message on stderr). Ranks find each other at IH_TEST_RDMA_ADDR (the VM
 * harness sets it to the rxe0 address; on a host with an RDMA device, set it to an address on
 * an RDMA netdev). Without it, or without a device, the test exits 77. */
#ifndef TESTS_RDMA_IB_RANKS_H
#define TESTS_RDMA_IB_RANKS_H

#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "tests/allreduce_inputs.h"
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

/* The ranks' store, in a process of its own. ib_run forks the ranks from the test process
 * without exec: a store server thread in that process could hold a lock (ASan's allocator's,
 * say) at the fork and leave the child deadlocked (seen: a rank that never registered, under
 * ASan). With the server in another process the test process stays single-threaded. Returns
 * the server's pid (stop it with ib_store_stop; it also dies with this process) and its port
 * in *port, or -1 with the reason printed. */
static inline pid_t ib_store_start(int *port)
{
    int fd[2];
    *port = -1;
    if (pipe(fd)) return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        comm_store_server *srv = NULL;
        int p = comm_store_server_create(&srv, NULL, 0) == IH_OK ? comm_store_server_port(srv) : -1;
        if (p < 0) fprintf(stderr, "FAIL: store: %s\n", ih_last_error());
        if (write(fd[1], &p, sizeof p) != (ssize_t)sizeof p || p < 0) _exit(1);
        close(fd[1]);
        for (;;) pause();
    }
    close(fd[1]);
    int p = -1;
    if (pid > 0 && (read(fd[0], &p, sizeof p) != (ssize_t)sizeof p || p < 0)) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        pid = -1;
    }
    close(fd[0]);
    if (pid < 0) return -1;
    *port = p;
    return pid;
}

static inline void ib_store_stop(pid_t pid)
{
    if (pid <= 0) return;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
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
    /* A rank that hangs must fail the test, not hang it: ranks still running 2 x timeout_ms +
     * 120 s after the start are named and killed. */
    int bad = 0, left = k, st[64] = {0}, done[64] = {0};
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const double limit_s = 2.0 * (double)timeout_ms / 1e3 + 120.0;
    while (left > 0) {
        for (int i = 0; i < k; i++)
            if (!done[i] && waitpid(pid[i], &st[i], WNOHANG) == pid[i]) done[i] = 1, left--;
        if (!left) break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9 > limit_s) {
            for (int i = 0; i < k; i++)
                if (!done[i]) {
                    fprintf(stderr, "FAIL rank %d/%d: still running after %.0f s: hung; killed\n", i, k, limit_s);
                    kill(pid[i], SIGKILL);
                    waitpid(pid[i], &st[i], 0);
                    done[i] = 1;
                }
            break;
        }
        struct timespec nap = {0, 20 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    for (int i = 0; i < k; i++) {
        if (status) status[i] = st[i];
        if (!WIFEXITED(st[i]) || WEXITSTATUS(st[i])) bad++;
        if (WIFSIGNALED(st[i])) /* e.g. the VM's OOM killer (SIGKILL), or a crash */
            fprintf(stderr, "note: rank %d/%d was killed by signal %d (%s)\n", i, k, WTERMSIG(st[i]),
                    strsignal(WTERMSIG(st[i])));
    }
    return bad;
}

/* One allreduce of n elements with algorithm a on ar_value inputs, checked bit for bit
 * against the sequential sum (ref is scratch of n floats). Returns 1 (and prints) on failure. */
static inline int ib_check_allreduce(const ib_rank *r, comm_ctx *c, float *buf, float *ref, size_t n, comm_algo a,
                                     int rep)
{
    ar_fill(buf, ref, r->rank, r->world, n, rep);
    if (comm_coll_allreduce(c, buf, n, a) != IH_OK) {
        fprintf(stderr, "FAIL rank %d/%d: allreduce(%s, n=%zu, rep %d): %s\n", r->rank, r->world,
                comm_algo_name(a), n, rep, ih_last_error());
        return 1;
    }
    if (n && memcmp(buf, ref, n * sizeof(float))) {
        size_t i = ar_first_diff(buf, ref, n);
        fprintf(stderr, "FAIL rank %d/%d: allreduce(%s, n=%zu, rep %d): element %zu is %g, expected %g\n",
                r->rank, r->world, comm_algo_name(a), n, rep, i, (double)buf[i], (double)ref[i]);
        return 1;
    }
    return 0;
}

/* Buffer reuse and credits: 200 back-to-back small allreduces (n = 1..200, alternating hd and
 * ring) on the same buffers, then `big` floats with hd and ring. buf/ref hold big floats.
 * Returns the failures (0: all exact); stops at the first. */
static inline int ib_check_reuse(const ib_rank *r, comm_ctx *c, float *buf, float *ref, size_t big)
{
    int fails = 0;
    for (size_t n = 1; n <= 200 && !fails; n++)
        fails += ib_check_allreduce(r, c, buf, ref, n, n % 2 ? COMM_ALGO_HD : COMM_ALGO_RING, (int)n);
    for (int a = 0; a < 2 && !fails; a++)
        fails += ib_check_allreduce(r, c, buf, ref, big, a ? COMM_ALGO_RING : COMM_ALGO_HD, 7 + a);
    return fails;
}

#endif
