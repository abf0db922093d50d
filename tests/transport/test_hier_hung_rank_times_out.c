/* test_hier_hung_rank_times_out — a rank that stops taking part in the two-level allreduce
 * (alive, connections open, not calling) makes every other rank fail within the timeout,
 * naming it, whichever sub-communicator it waits in: the chain of waits of comm.c runs in
 * world ranks through the views.
 *
 * 4 ranks as threads, 2 nodes x 2 (node = rank / 2), timeout 1 s: one two-level allreduce,
 * then rank 2 sleeps 4 s while the others start a second one of 4 MiB. Ranks 0, 1 and 3 (its
 * cross-node peer, a rank that reaches it only through others, its node peer) must fail in
 * under 3.5 s with IH_E_TIMEOUT or IH_E_REMOTE and a message containing "rank 2 (host".
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "tests/transport/ranks.h"
#include "transport/hier.h"

static void body(tp_rank *r)
{
    comm_ctx *c = NULL;
    comm_hier *h = NULL;
    if (tp_ctx_create(r, &c) != IH_OK) { tp_fail(r, "create: %s", ih_last_error()); return; }
    char node[16];
    snprintf(node, sizeof node, "n%d", r->rank / 2);
    if (comm_hier_open(&h, c, COMM_HIER_ON, node) != IH_OK) { tp_fail(r, "hier: %s", ih_last_error()); goto out; }
    size_t n = 1u << 20;
    float *v = calloc(n, sizeof(float));
    if (comm_hier_allreduce(h, v, n, COMM_ALGO_RING) != IH_OK) tp_fail(r, "first allreduce: %s", ih_last_error());
    if (r->rank == 2) {
        struct timespec ts = {4, 0};
        nanosleep(&ts, NULL);
    } else if (!r->fails) {
        double t0 = ih_now_s();
        r->err = comm_hier_allreduce(h, v, n, COMM_ALGO_RING);
        snprintf(r->msg, sizeof r->msg, "%s", ih_last_error());
        double dt = ih_now_s() - t0;
        if (r->err == IH_OK) tp_fail(r, "two-level allreduce without rank 2 succeeded");
        if (dt > 3.5) tp_fail(r, "took %.1f s to fail with a 1 s timeout", dt);
        /* sticky, on the world ctx too */
        if (comm_coll_barrier(c) == IH_OK) tp_fail(r, "world barrier after a failure succeeded");
    }
    free(v);
out:
    comm_hier_destroy(h);
    comm_ctx_destroy(c);
}

int main(void)
{
    tp_rank ranks[4];
    int bad = tp_run(4, ranks, body, NULL, 1000, 0, 0, "hierhung");
    CHECK(bad == 0, "%d ranks misbehaved", bad);
    for (int r = 0; r < 4; r++) {
        if (r == 2) continue;
        CHECK(ranks[r].err == IH_E_TIMEOUT || ranks[r].err == IH_E_REMOTE, "rank %d: %s", r, ih_err_name(ranks[r].err));
        CHECK(strstr(ranks[r].msg, "rank 2 (host ") != NULL, "rank %d does not name rank 2: %s", r, ranks[r].msg);
        printf("rank %d: %s\n", r, ranks[r].msg);
    }
    return ih_test_result();
}
