/* test_allreduce_hung_rank_times_out — a rank that stops taking part (alive, connections open,
 * not calling) makes every other rank's allreduce fail within the timeout, naming that rank,
 * its host and the operation; never a hang.
 *
 * 4 ranks as threads, timeout 1 s: all run one allreduce, then rank 2 sleeps 4 s while the
 * others start a second 4 MiB ring allreduce. Ranks 0, 1, 3 must fail in under 4 s with
 * IH_E_TIMEOUT or IH_E_REMOTE and a message containing "rank 2", the host and "allreduce".
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "tests/transport/ranks.h"

static void body(tp_rank *r)
{
    comm_ctx *c = NULL;
    if (tp_ctx_create(r, &c) != IH_OK) { tp_fail(r, "create: %s", ih_last_error()); return; }
    size_t n = 1u << 20;
    float *v = calloc(n, sizeof(float));
    if (comm_coll_allreduce(c, v, n, COMM_ALGO_RING) != IH_OK) tp_fail(r, "first allreduce: %s", ih_last_error());
    if (r->rank == 2) {
        struct timespec ts = {4, 0};
        nanosleep(&ts, NULL);
    } else if (!r->fails) {
        double t0 = ih_now_s();
        r->err = comm_coll_allreduce(c, v, n, COMM_ALGO_RING);
        snprintf(r->msg, sizeof r->msg, "%s", ih_last_error());
        double dt = ih_now_s() - t0;
        if (r->err == IH_OK) tp_fail(r, "allreduce without rank 2 succeeded");
        if (dt > 3.5) tp_fail(r, "took %.1f s to fail with a 1 s timeout", dt);
        /* sticky: a later call fails at once with the same error */
        if (comm_coll_barrier(c) == IH_OK) tp_fail(r, "barrier after a failure succeeded");
    }
    free(v);
    comm_ctx_destroy(c);
}

int main(void)
{
    tp_rank ranks[4];
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    int bad = tp_run(4, ranks, body, NULL, 1000, 0, 0, "hung");
    CHECK(bad == 0, "%d ranks misbehaved", bad);
    for (int r = 0; r < 4; r++) {
        if (r == 2) continue;
        CHECK(ranks[r].err == IH_E_TIMEOUT || ranks[r].err == IH_E_REMOTE, "rank %d: %s", r, ih_err_name(ranks[r].err));
        CHECK(strstr(ranks[r].msg, "rank 2 (host ") != NULL, "rank %d does not name rank 2: %s", r, ranks[r].msg);
        CHECK(strstr(ranks[r].msg, host) != NULL, "rank %d does not name the host %s: %s", r, host, ranks[r].msg);
        CHECK(strstr(ranks[r].msg, "allreduce(ring") != NULL, "rank %d does not name the op: %s", r, ranks[r].msg);
        printf("rank %d: %s\n", r, ranks[r].msg);
    }
    return ih_test_result();
}
