/* transport/launch.c — see launch.h. fork/execvpe, signals through a signalfd (so no signal
 * handler and no global state), children reaped with waitpid(WNOHANG). */
#define _GNU_SOURCE
#include "launch.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/clock.h"
#include "sock.h"

extern char **environ;

/* Variables a child must not inherit: they would outrank RANK/WORLD_SIZE (boot.h). */
static const char *const k_drop[] = {
    "RANK=", "WORLD_SIZE=", "LOCAL_RANK=", "LOCAL_WORLD_SIZE=", "MASTER_ADDR=", "MASTER_PORT=",
    "OMPI_COMM_WORLD_RANK=", "OMPI_COMM_WORLD_SIZE=", "OMPI_COMM_WORLD_LOCAL_RANK=",
    "OMPI_COMM_WORLD_LOCAL_SIZE=", "PMI_RANK=", "PMI_SIZE=", "SLURM_STEP_ID=", "IH_STORE_FD=", NULL};

static int dropped(const char *e)
{
    for (int i = 0; k_drop[i]; i++)
        if (!strncmp(e, k_drop[i], strlen(k_drop[i]))) return 1;
    return 0;
}

/* Builds a child's environment: ours minus k_drop, plus the rank variables and extra_env.
 * Returns NULL when out of memory. Freed by free_env. */
static char **build_env(int rank, int nproc, const char *addr, int port, int store_fd, const char *const *extra)
{
    size_t n = 0, ne = 0;
    while (environ[n]) n++;
    while (extra && extra[ne]) ne++;
    char **env = calloc(n + ne + 8, sizeof *env);
    if (!env) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        if (!dropped(environ[i])) env[o++] = strdup(environ[i]);
    char b[320];
    snprintf(b, sizeof b, "RANK=%d", rank); env[o++] = strdup(b);
    snprintf(b, sizeof b, "WORLD_SIZE=%d", nproc); env[o++] = strdup(b);
    snprintf(b, sizeof b, "LOCAL_RANK=%d", rank); env[o++] = strdup(b);
    snprintf(b, sizeof b, "LOCAL_WORLD_SIZE=%d", nproc); env[o++] = strdup(b);
    snprintf(b, sizeof b, "MASTER_ADDR=%s", addr); env[o++] = strdup(b);
    snprintf(b, sizeof b, "MASTER_PORT=%d", port); env[o++] = strdup(b);
    if (store_fd >= 0) { snprintf(b, sizeof b, "IH_STORE_FD=%d", store_fd); env[o++] = strdup(b); }
    for (size_t i = 0; i < ne; i++) env[o++] = strdup(extra[i]);
    for (size_t i = 0; i < o; i++)
        if (!env[i]) {
            for (size_t j = 0; j < o; j++) free(env[j]);
            free(env);
            return NULL;
        }
    return env;
}

static void free_env(char **env)
{
    if (!env) return;
    for (size_t i = 0; env[i]; i++) free(env[i]);
    free(env);
}

static int status_code(int st)
{
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return 1;
}

static void signal_all(const pid_t *pids, int nproc, int sig)
{
    for (int i = 0; i < nproc; i++)
        if (pids[i] > 0) kill(pids[i], sig); /* reaped ranks are stored negated */
}

int comm_launch_local(int nproc, char *const argv[], const comm_launch_opts *opts,
                      comm_launch_result *res)
{
    comm_launch_opts o;
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    const char *addr = o.master_addr ? o.master_addr : "127.0.0.1";
    double grace = o.grace_s > 0 ? o.grace_s : 10.0;
    if (res) {
        res->first_failed_rank = -1;
        for (int i = 0; i < 1024; i++) res->exit_codes[i] = -1;
    }
    if (nproc < 1 || !argv || !argv[0]) {
        fprintf(stderr, "launch: need nproc >= 1 and a program to run\n");
        return 1;
    }
    /* A port picked here is kept bound: the listening socket is handed to rank 0, whose
     * rendezvous store serves on it (IH_STORE_FD, store.h). Closing it and letting rank 0 bind
     * the number again left a window in which an outgoing connection of any process on the
     * machine could take the port as its local port ("Address already in use"). */
    /* A socket handed to this process by an outer launcher (it is rank 0 of that job) is not
     * for our ranks: IH_STORE_FD is dropped from their environment, and the descriptor is
     * closed at their exec. */
    const char *inh = getenv("IH_STORE_FD");
    char *inh_end = NULL;
    const long inh_fd = inh && *inh ? strtol(inh, &inh_end, 10) : -1;
    if (inh_fd > 2 && inh_fd < 1 << 20 && !*inh_end) (void)fcntl((int)inh_fd, F_SETFD, FD_CLOEXEC);
    int port = o.master_port, store_fd = -1;
    if (!port && comm_sock_listen(&store_fd, addr, 0, 1024, 0, &port) != IH_OK) {
        fprintf(stderr, "launch: cannot find a free port on %s: %s\n", addr, ih_last_error());
        return 1;
    }

    sigset_t mask, old;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &mask, &old);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    pid_t *pids = calloc((size_t)nproc, sizeof *pids);
    int rc = 0, first = -1, alive = 0, forwarded = 0;
    if (sfd < 0 || !pids) {
        fprintf(stderr, "launch: cannot set up (signalfd: %s)\n", strerror(errno));
        rc = 1;
        goto out;
    }
    for (int r = 0; r < nproc; r++) {
        char **env = build_env(r, nproc, addr, port, r == 0 ? store_fd : -1, o.extra_env);
        if (!env) {
            fprintf(stderr, "launch: out of memory building rank %d's environment\n", r);
            rc = 1;
            break;
        }
        /* Between fork and exec only async-signal-safe calls (this process may have threads, and
         * one of them may hold a lock at the fork): the failure message is formatted here. */
        char fail[600];
        int fl = snprintf(fail, sizeof fail, "launch: rank %d: cannot run '%s': ", r, argv[0]);
        if (fl < 0 || fl >= (int)sizeof fail) fl = (int)strlen(fail);
        pid_t pid = fork();
        if (pid == 0) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            if (r == 0 && store_fd >= 0) /* inherited by rank 0 only (it is close-on-exec) */
                (void)fcntl(store_fd, F_SETFD, 0);
            execvpe(argv[0], argv, env);
            const char *why = strerrordesc_np(errno); /* a static string: safe here */
            if (write(2, fail, (size_t)fl) < 0 || write(2, why ? why : "?", why ? strlen(why) : 1) < 0 ||
                write(2, "\n", 1) < 0)
                _exit(127);
            _exit(127);
        }
        free_env(env);
        if (pid < 0) {
            fprintf(stderr, "launch: fork for rank %d: %s\n", r, strerror(errno));
            rc = 1;
            break;
        }
        pids[r] = pid;
        alive++;
    }
    if (store_fd >= 0) { /* rank 0 has its copy */
        close(store_fd);
        store_fd = -1;
    }
    if (rc) /* partial start: stop what started */
        signal_all(pids, nproc, SIGTERM);

    /* A rank killed by a signal closes its sockets before it becomes a zombie, so a
     * neighbour that fails because of it can be reaped first. Failures seen within
     * SETTLE_NS of the first are therefore collected, and the reported one is the first
     * killed by a signal (an outside cause: OOM killer, segfault, kill -9), else the first
     * seen. */
    const uint64_t SETTLE_NS = 250000000ull;
    uint64_t settle_at = 0, term_at = 0, kill_at = 0;
    int first_sig = -1, nfailed = 0, reported = 0;
    int *st_of = calloc((size_t)nproc, sizeof *st_of);
    if (!st_of) { signal_all(pids, nproc, SIGTERM); rc = 1; }
    if (rc) term_at = ih_now_ns();
    while (alive > 0 || (settle_at && !reported)) {
        struct pollfd pf = {.fd = sfd, .events = POLLIN};
        poll(&pf, 1, alive > 0 ? 50 : 0);
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
            if (si.ssi_signo != SIGCHLD) {
                fprintf(stderr, "launch: got signal %u (%s); forwarding it to %d ranks\n", si.ssi_signo,
                        strsignal((int)si.ssi_signo), alive);
                signal_all(pids, nproc, (int)si.ssi_signo);
                if (!forwarded) { forwarded = (int)si.ssi_signo; if (!kill_at) kill_at = ih_now_ns() + (uint64_t)(grace * 1e9); }
            }
        }
        for (int r = 0; r < nproc && st_of; r++) {
            if (pids[r] <= 0) continue;
            int st = 0;
            pid_t w = waitpid(pids[r], &st, WNOHANG);
            if (w != pids[r]) continue;
            int code = status_code(st);
            if (res && r < 1024) res->exit_codes[r] = code;
            alive--;
            st_of[r] = st;
            pids[r] = -pids[r]; /* reaped; keep the pid for the message */
            /* After a forwarded SIGINT/SIGTERM, a rank that stops with 128+signal did what it
             * was asked (the trainer checkpoints, then exits 130): not a failure. */
            const int asked_to_stop = forwarded && code == 128 + forwarded;
            if (code != 0 && !asked_to_stop && !reported) {
                if (first == -1) { first = r; settle_at = ih_now_ns() + SETTLE_NS; }
                if (WIFSIGNALED(st) && first_sig == -1) first_sig = r;
                nfailed++;
            }
        }
        uint64_t now = ih_now_ns();
        if (settle_at && !reported && (now >= settle_at || alive == 0)) {
            reported = 1;
            if (first_sig >= 0) first = first_sig;
            int st = st_of[first];
            rc = status_code(st);
            if (WIFSIGNALED(st))
                fprintf(stderr, "launch: rank %d (pid %d) was killed by signal %d (%s)", first,
                        (int)-pids[first], WTERMSIG(st), strsignal(WTERMSIG(st)));
            else
                fprintf(stderr, "launch: rank %d (pid %d) exited with status %d", first, (int)-pids[first], rc);
            if (alive) fprintf(stderr, "; stopping the other %d ranks", alive);
            if (nfailed > 1)
                fprintf(stderr, " (%d more ranks failed within %.2f s, most likely as a consequence)",
                        nfailed - 1, (double)SETTLE_NS / 1e9);
            fprintf(stderr, "\n");
            term_at = now + (uint64_t)(grace * 1e9);
        }
        if (term_at && now >= term_at && alive > 0) {
            fprintf(stderr, "launch: %d ranks still running %.0f s after the first failure; "
                    "sending SIGTERM\n", alive, grace);
            signal_all(pids, nproc, SIGTERM);
            term_at = 0;
            kill_at = now + (uint64_t)(grace * 1e9);
        } else if (kill_at && now >= kill_at && alive > 0) {
            fprintf(stderr, "launch: %d ranks ignored SIGTERM; sending SIGKILL\n", alive);
            signal_all(pids, nproc, SIGKILL);
            kill_at = 0;
        }
    }
    free(st_of);
    if (rc == 0 && forwarded) {
        rc = 128 + forwarded;
        fprintf(stderr, "launch: all %d ranks stopped after signal %d (%s)\n", nproc, forwarded, strsignal(forwarded));
    }
out:
    if (res) res->first_failed_rank = first >= 0 ? first : -1;
    if (store_fd >= 0) close(store_fd);
    if (sfd >= 0) close(sfd);
    free(pids);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}
