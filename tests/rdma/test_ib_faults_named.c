/* test_ib_faults_named — over the ib fabric, a rank killed (SIGKILL) during a stream of
 * allreduces makes every other rank fail well within the timeout, with a message that names
 * the dead rank; and setup faults fail at once with a message naming the fault:
 *   - a device name that does not exist ("no RDMA device named"),
 *   - an address that is not on an RDMA netdev (127.0.0.1: "not on an RDMA netdev"),
 *   - a peer address nobody answers at (192.0.2.77 on rxe0's subnet: "cannot reach rank 0"),
 *   - a locked-memory limit too low for the rings (64 KiB, CAP_IPC_LOCK dropped: "ulimit -l"),
 *   - in the VM only (it owns the netdev): the RDMA port down ("is down").
 * Run: scripts/rxe-vm/run.sh build ./tests/rdma/test_ib_faults_named (ctest -L rdma). */
#define _GNU_SOURCE
#include <linux/capability.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>

#include "core/clock.h"
#include "tests/rdma/ib_ranks.h"

#define TIMEOUT_MS 20000

static int contains(const char *msg, const char *want, const char *what, int rank)
{
    if (strstr(msg, want)) return 0;
    fprintf(stderr, "FAIL rank %d (%s): message lacks \"%s\": %s\n", rank, what, want, msg);
    return 1;
}

static int killed_body(const ib_rank *r)
{
    comm_ctx *c = NULL;
    if (ib_ctx_create(r, "ib", &c) != IH_OK) {
        fprintf(stderr, "FAIL rank %d: create: %s\n", r->rank, ih_last_error());
        return 1;
    }
    size_t n = 1 << 18;
    float *buf = calloc(n, sizeof(float));
    uint64_t t0 = 0;
    for (int it = 0; it < 1000; it++) {
        if (r->rank == 2 && it == 3) raise(SIGKILL); /* mid-stream: the others are inside it */
        if (it == 3) t0 = ih_now_ns();
        if (comm_coll_allreduce(c, buf, n, it % 2 ? COMM_ALGO_RING : COMM_ALGO_HD) != IH_OK) {
            double s = (double)(ih_now_ns() - t0) / 1e9;
            char msg[3000];
            snprintf(msg, sizeof msg, "%s", ih_last_error());
            printf("rank %d failed after %.1f s: %s\n", r->rank, s, msg);
            int fails = contains(msg, "rank 2", "peer killed", r->rank);
            if (it < 3 || s > TIMEOUT_MS / 2e3) {
                fprintf(stderr, "FAIL rank %d: failed at iteration %d after %.1f s (want: iteration "
                        ">= 3, within %.0f s)\n", r->rank, it, s, TIMEOUT_MS / 2e3);
                fails++;
            }
            comm_ctx_destroy(c);
            free(buf);
            return fails;
        }
    }
    fprintf(stderr, "FAIL rank %d: 1000 allreduces succeeded with rank 2 dead\n", r->rank);
    return 1;
}

static const char *g_want;

static int setup_body(const ib_rank *r)
{
    comm_ctx *c = NULL;
    ih_err e = ib_ctx_create(r, "ib", &c);
    if (e == IH_OK) {
        fprintf(stderr, "FAIL rank %d: create succeeded, expected \"%s\"\n", r->rank, g_want);
        comm_ctx_destroy(c);
        return 1;
    }
    printf("rank %d: %s: %s\n", r->rank, ih_err_name(e), ih_last_error());
    return contains(ih_last_error(), g_want, "setup", r->rank);
}

/* Root ignores RLIMIT_MEMLOCK through CAP_IPC_LOCK: drop it, then set a small limit. */
static int memlock_body(const ib_rank *r)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    if (syscall(SYS_capget, &h, d) == 0) {
        d[0].effective &= ~(1u << CAP_IPC_LOCK);
        d[0].permitted &= ~(1u << CAP_IPC_LOCK);
        syscall(SYS_capset, &h, d);
    }
    struct rlimit rl = {64 << 10, 64 << 10};
    if (setrlimit(RLIMIT_MEMLOCK, &rl)) {
        fprintf(stderr, "FAIL rank %d: setrlimit(RLIMIT_MEMLOCK)\n", r->rank);
        return 1;
    }
    return setup_body(r);
}

int main(void)
{
    const char *addr = ib_test_addr();
    int port;
    pid_t store = ib_store_start(&port);
    if (store < 0) return 1;
    int bad = 0, st[3];
    /* a rank killed: ranks 0 and 1 must fail (exit 1 from the body means a bad message) */
    ib_run(3, addr, port, "kill", TIMEOUT_MS, NULL, killed_body, st);
    int b = !WIFSIGNALED(st[2]) || (WIFEXITED(st[0]) && WEXITSTATUS(st[0])) || (WIFEXITED(st[1]) && WEXITSTATUS(st[1]));
    printf("%s killed rank 2: the others failed naming it\n", b ? "FAIL" : "ok  ");
    bad += b;

    g_want = "no RDMA device named 'nosuch0'";
    b = ib_run(2, addr, port, "dev", 5000, "nosuch0", setup_body, NULL);
    printf("%s wrong device name\n", b ? "FAIL" : "ok  ");
    bad += b;

    g_want = "not on an RDMA netdev";
    b = ib_run(2, "127.0.0.1", port, "lo", 5000, NULL, setup_body, NULL);
    printf("%s address not on an RDMA netdev\n", b ? "FAIL" : "ok  ");
    bad += b;

    /* rank 0's published address points nowhere; only rank 1 runs (it connects to rank 0) */
    comm_store *cl = NULL;
    const char *ghost = "192.0.2.77 4791 ghost-host";
    if (comm_store_connect(&cl, "127.0.0.1", port, 5000) != IH_OK ||
        comm_store_set(cl, "unreach/ib/0", ghost, strlen(ghost), 5000) != IH_OK) {
        fprintf(stderr, "FAIL: store: %s\n", ih_last_error());
        return 1;
    }
    g_want = "cannot reach rank 0 (host ghost-host) at 192.0.2.77:4791";
    pid_t pid = fork();
    if (pid == 0) {
        ib_rank r = {.rank = 1, .world = 2, .port = port, .addr = addr, .timeout_ms = 8000};
        snprintf(r.ns, sizeof r.ns, "unreach");
        _exit(setup_body(&r) ? 1 : 0);
    }
    int s = 0;
    waitpid(pid, &s, 0);
    b = !WIFEXITED(s) || WEXITSTATUS(s);
    printf("%s unreachable peer address\n", b ? "FAIL" : "ok  ");
    bad += b;
    comm_store_destroy(cl);

    g_want = "raise 'ulimit -l'";
    b = ib_run(2, addr, port, "memlock", 5000, NULL, memlock_body, NULL);
    printf("%s locked-memory limit too low\n", b ? "FAIL" : "ok  ");
    bad += b;

    if (getenv("RXE_VM_IP") && system("ip link set dummy0 down") == 0) {
        for (int i = 0; i < 50; i++) { /* rxe follows the netdev asynchronously */
            char state[64] = "";
            FILE *f = fopen("/sys/class/infiniband/rxe0/ports/1/state", "r");
            if (f && fgets(state, sizeof state, f) && strstr(state, "DOWN")) { fclose(f); break; }
            if (f) fclose(f);
            usleep(100000);
        }
        g_want = "is down";
        b = ib_run(2, addr, port, "down", 5000, NULL, setup_body, NULL);
        printf("%s RDMA port down\n", b ? "FAIL" : "ok  ");
        bad += b;
        if (system("ip link set dummy0 up")) printf("(could not bring dummy0 back up)\n");
    }
    ib_store_stop(store);
    printf("%s\n", bad ? "FAIL" : "PASS");
    return bad ? 1 : 0;
}
