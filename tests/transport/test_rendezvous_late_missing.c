/* test_rendezvous_late_missing — a rank that starts late still joins; a rank that never starts
 * makes every other rank fail within the timeout, naming it.
 *
 * Late: 4 ranks, rank 3 starts 1.5 s after the others (timeout 10 s); then one allreduce must
 * be exact. Missing: 3 ranks, rank 1 never starts (timeout 1 s); ranks 0 and 2 must fail with
 * IH_E_TIMEOUT within 5 s, with a message that names rank 1.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "tests/transport/ranks.h"

static void late_body(tp_rank *r)
{
    if (r->rank == 3) {
        struct timespec ts = {1, 500000000L};
        nanosleep(&ts, NULL);
    }
    comm_ctx *c = NULL;
    if (tp_ctx_create(r, &c) != IH_OK) { tp_fail(r, "create: %s", ih_last_error()); return; }
    float v[5];
    for (int i = 0; i < 5; i++) v[i] = (float)(r->rank + i);
    if (comm_coll_allreduce(c, v, 5, COMM_ALGO_AUTO) != IH_OK) tp_fail(r, "allreduce: %s", ih_last_error());
    for (int i = 0; i < 5 && !r->fails; i++)
        if (v[i] != (float)(6 + 4 * i)) tp_fail(r, "v[%d] = %g, expected %d", i, (double)v[i], 6 + 4 * i);
    comm_ctx_destroy(c);
}

static void missing_body(tp_rank *r)
{
    if (r->rank == 1) return; /* never shows up */
    comm_ctx *c = NULL;
    double t0 = ih_now_s();
    r->err = tp_ctx_create(r, &c);
    snprintf(r->msg, sizeof r->msg, "%s", ih_last_error());
    if (r->err == IH_OK) tp_fail(r, "create succeeded without rank 1");
    if (ih_now_s() - t0 > 5.0) tp_fail(r, "took %.1f s to give up with a 1 s timeout", ih_now_s() - t0);
    comm_ctx_destroy(c);
}

int main(void)
{
    tp_rank ranks[4];
    double t0 = ih_now_s();
    int bad = tp_run(4, ranks, late_body, NULL, 10000, 0, 0, "late");
    CHECK(bad == 0, "late rank: %d ranks failed", bad);
    CHECK(ih_now_s() - t0 >= 1.4, "the late rank was not late (%.2f s)", ih_now_s() - t0);

    bad = tp_run(3, ranks, missing_body, NULL, 1000, 0, 0, "missing");
    CHECK(bad == 0, "missing rank: %d ranks misbehaved", bad);
    for (int r = 0; r < 3; r += 2) {
        CHECK(ranks[r].err == IH_E_TIMEOUT, "rank %d: got %s, expected IH_E_TIMEOUT", r, ih_err_name(ranks[r].err));
        CHECK(strstr(ranks[r].msg, "rank 1 ") || strstr(ranks[r].msg, "ranks 1"),
              "rank %d's message does not name rank 1: %s", r, ranks[r].msg);
        printf("rank %d: %s\n", r, ranks[r].msg);
    }
    return ih_test_result();
}
