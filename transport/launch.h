/* transport/launch.h — the built-in local launcher behind `./train --nproc N`.
 *
 * Starts N copies of a program on this machine, as torchrun would: each child gets RANK,
 * WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT (a free port picked
 * here unless given), and loses the MPI/PMI/Slurm rank variables that would take precedence
 * (see boot.h). SIGINT/SIGTERM/SIGHUP received by the launcher are forwarded to every child.
 * When a rank fails (non-zero exit or a signal) the launcher prints one line naming the rank,
 * its pid and its exit status (of the failures within 0.25 s of the first, the first killed
 * by a signal: its neighbours fail a moment later because of it, and may be reaped first), gives the others `grace_s` to exit on their own (they fail
 * within their communicator timeout, naming the lost rank), then sends SIGTERM, and SIGKILL
 * after another grace period.
 */
#ifndef COMM_LAUNCH_H
#define COMM_LAUNCH_H

typedef struct {
    const char *master_addr; /* NULL: 127.0.0.1 */
    int master_port;         /* 0: pick a free port */
    double grace_s;          /* 0: 10 s */
    const char *const *extra_env; /* optional NULL-terminated "NAME=value" list set in every child */
} comm_launch_opts;

typedef struct {
    int first_failed_rank; /* -1 when every rank exited 0 */
    int exit_codes[1024];  /* per rank (first 1024): exit status, or 128 + signal number */
} comm_launch_result;

/* Runs argv (argv[0] searched in PATH like execvp) as `nproc` ranks and waits for all of them.
 * Returns 0 when every rank exited 0, else the first failure's exit code (128 + signal for a
 * signal), or 1 when the launch itself failed (message on stderr). opts and res may be NULL.
 * Blocks until every child is gone. Call it from the process's only thread: it blocks
 * SIGCHLD/SIGINT/SIGTERM/SIGHUP in the calling thread while it runs (read via signalfd) and
 * restores the mask before returning. */
int comm_launch_local(int nproc, char *const argv[], const comm_launch_opts *opts,
                      comm_launch_result *res);

#endif
