/* test_launch_rank_killed — real processes through the local launcher: a clean run exits 0;
 * a rank killed (SIGKILL) in the middle of allreduces makes every other rank fail with a
 * message naming it and the operation, and the launcher returns its status (128+9).
 *
 * The test runs itself: without RANK in the environment it is the launcher; with RANK it is
 * a rank (mode and output folder passed in IH_TEST_MODE / IH_TEST_OUT). Ranks write their
 * final error to OUT/rankN.txt.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "tests/check.h"
#include "tests/transport/self_launch.h"
#include "transport/comm.h"
#include "transport/launch.h"

extern char **environ;

static int rank_main(const char *mode, const char *out)
{
    comm_boot_info b;
    comm_ctx *c = NULL;
    ih_err e = comm_boot_from_env(&b, (const char *const *)environ);
    if (!e) e = comm_ctx_create(&c, &b, NULL);
    size_t n = 1u << 20;
    float *v = calloc(n, sizeof(float));
    int killing = !strcmp(mode, "kill");
    if (!e && killing && b.rank == 2) {
        pthread_t th;
        pthread_create(&th, NULL, sl_killer, NULL);
    }
    /* clean mode: 5 allreduces; kill mode: until the failure (bounded by 30 s) */
    double t0 = ih_now_s();
    for (int it = 0; !e && (killing ? ih_now_s() - t0 < 30 : it < 5); it++) {
        for (size_t i = 0; i < n; i++) v[i] = 1.0f;
        e = comm_coll_allreduce(c, v, n, it % 2 ? COMM_ALGO_HD : COMM_ALGO_RING);
        if (!e && v[n - 1] != (float)b.world) e = ih_fail(IH_E_INTERNAL, "wrong sum %g", (double)v[n - 1]);
    }
    sl_write_result(out, b.rank, e);
    free(v);
    comm_ctx_destroy(c);
    return e ? 1 : 0;
}

int main(int argc, char **argv)
{
    (void)argc;
    const char *mode = getenv("IH_TEST_MODE"), *out = getenv("IH_TEST_OUT");
    if (getenv("RANK") && mode && out) return rank_main(mode, out);

    char dir[] = "/tmp/ih-launch-XXXXXX";
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    char outv[600];
    snprintf(outv, sizeof outv, "IH_TEST_OUT=%s", dir);
    char msg[4096];
    comm_launch_result res;

    const char *env_clean[] = {"IH_TEST_MODE=clean", outv, "IH_COMM_TIMEOUT_S=10", NULL};
    comm_launch_opts o = {.grace_s = 5, .extra_env = env_clean};
    int rc = comm_launch_local(3, argv, &o, &res);
    CHECK(rc == 0 && res.first_failed_rank == -1, "clean run: rc %d, first failed rank %d", rc, res.first_failed_rank);
    sl_read_result(dir, 0, msg, sizeof msg);
    CHECK(!strcmp(msg, "ok"), "clean run, rank 0: %s", msg);

    const char *env_kill[] = {"IH_TEST_MODE=kill", outv, "IH_COMM_TIMEOUT_S=5", NULL};
    o.extra_env = env_kill;
    double t0 = ih_now_s();
    rc = comm_launch_local(4, argv, &o, &res);
    double dt = ih_now_s() - t0;
    CHECK(rc == 128 + SIGKILL, "launcher returned %d, expected %d (the killed rank's status)", rc, 128 + SIGKILL);
    CHECK(res.first_failed_rank == 2, "first failed rank %d, expected 2", res.first_failed_rank);
    CHECK(dt < 5.0, "the job took %.1f s to end after a rank died (others should fail at once)", dt);
    for (int r = 0; r < 4; r++) {
        sl_read_result(dir, r, msg, sizeof msg); /* also removes the file (rank 2's is the clean run's) */
        if (r == 2) continue;
        CHECK(res.exit_codes[r] == 1, "rank %d exited %d, expected 1 (failed on its own)", r, res.exit_codes[r]);
        CHECK(strstr(msg, "rank 2 (host ") != NULL, "rank %d's message does not name rank 2: %s", r, msg);
        CHECK(strstr(msg, "allreduce(") != NULL, "rank %d's message does not name the op: %s", r, msg);
        printf("rank %d: %s\n", r, msg);
    }
    rmdir(dir);
    return ih_test_result();
}
