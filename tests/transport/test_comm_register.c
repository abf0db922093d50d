/* test_comm_register — comm_ctx_register on the tcp fabric is a harmless no-op, and misuse of
 * register/unregister fails with IH_E_USAGE and a message naming the mistake:
 *   - k = 1 and k = 3 ranks as threads: a registered buffer allreduces exactly (twice, hd and
 *     ring), the byte counters stay zero (tcp has one path), unregister then works once;
 *   - an empty range, a range overlapping a registered one, more than COMM_MAX_REG regions,
 *     and unregistering a pointer that starts no region (an unknown buffer, the inside of a
 *     region, a region already unregistered) are refused without changing anything.
 * The zero-copy path itself is tested over real RDMA in tests/rdma/test_ib_allreduce_registered. */
#include <stdlib.h>
#include <string.h>

#include "tests/transport/ranks.h"

static int has(const char *msg, const char *want) { return strstr(msg, want) != NULL; }

static void expect_usage(tp_rank *r, ih_err e, const char *want, const char *what)
{
    if (e != IH_E_USAGE) tp_fail(r, "%s: got %s, want IH_E_USAGE", what, ih_err_name(e));
    else if (!has(ih_last_error(), want)) tp_fail(r, "%s: message lacks \"%s\": %s", what, want, ih_last_error());
}

static void body(tp_rank *r)
{
    comm_ctx *c = NULL;
    if (tp_ctx_create(r, &c) != IH_OK) { tp_fail(r, "create: %s", ih_last_error()); return; }
    size_t n = 100003;
    float *buf = malloc(n * sizeof(float)), *other = malloc(64 * COMM_MAX_REG);
    ih_err e = comm_ctx_register(c, buf, n * sizeof(float));
    if (e) tp_fail(r, "register on tcp: %s", ih_last_error());
    for (int rep = 0; rep < 4 && !r->fails; rep++) {
        for (size_t i = 0; i < n; i++) buf[i] = (float)((r->rank * 5 + (int)(i % 11) + rep) % 9);
        if (comm_coll_allreduce(c, buf, n, rep % 2 ? COMM_ALGO_RING : COMM_ALGO_HD)) {
            tp_fail(r, "allreduce on a registered buffer: %s", ih_last_error());
            break;
        }
        for (size_t i = 0; i < n; i++) {
            float s = 0;
            for (int q = 0; q < r->world; q++) s += (float)((q * 5 + (int)(i % 11) + rep) % 9);
            if (buf[i] != s) { tp_fail(r, "rep %d element %zu: %g, expected %g", rep, i, (double)buf[i], (double)s); break; }
        }
    }
    comm_stats st;
    memset(&st, 0xff, sizeof st);
    comm_ctx_stats(c, &st);
    if (st.threshold || st.direct || st.staged || st.eager_large || st.eager_small || st.rx_direct || st.rx_copied)
        tp_fail(r, "tcp byte counters are not all zero");

    expect_usage(r, comm_ctx_register(c, NULL, 16), "empty range", "register(NULL)");
    expect_usage(r, comm_ctx_register(c, other, 0), "empty range", "register(0 B)");
    expect_usage(r, comm_ctx_register(c, buf + 10, 64), "overlaps the region", "register inside a region");
    expect_usage(r, comm_ctx_register(c, (char *)buf - 8, 16), "overlaps the region", "register across a region's start");
    expect_usage(r, comm_ctx_unregister(c, other), "no region registered", "unregister of an unknown buffer");
    expect_usage(r, comm_ctx_unregister(c, buf + 1), "no region registered", "unregister inside a region");
    /* the region is still there: the same overlap is still refused, then it goes once */
    expect_usage(r, comm_ctx_register(c, buf, 4), "overlaps the region", "register again");
    if (comm_ctx_unregister(c, buf)) tp_fail(r, "unregister: %s", ih_last_error());
    expect_usage(r, comm_ctx_unregister(c, buf), "no region registered", "second unregister");
    /* the limit: COMM_MAX_REG regions besides the ctx's own scratch (the region freed above) */
    int i = 0;
    for (; i < COMM_MAX_REG && !r->fails; i++)
        if (comm_ctx_register(c, (char *)other + 64 * i, 64)) tp_fail(r, "register %d of %d: %s", i + 1, COMM_MAX_REG, ih_last_error());
    expect_usage(r, comm_ctx_register(c, buf, 64), "COMM_MAX_REG", "one region too many");
    for (int j = 0; j < i; j++)
        if (comm_ctx_unregister(c, (char *)other + 64 * j)) tp_fail(r, "unregister %d: %s", j, ih_last_error());
    /* still a working communicator */
    float one = 1;
    if (comm_coll_allreduce(c, &one, 1, COMM_ALGO_AUTO) || one != (float)r->world)
        tp_fail(r, "allreduce after the misuse: %s", ih_last_error());
    comm_ctx_destroy(c);
    free(buf);
    free(other);
}

int main(void)
{
    int bad = 0;
    for (int k = 1; k <= 3; k += 2) {
        tp_rank ranks[3];
        char ns[16];
        snprintf(ns, sizeof ns, "reg%d", k);
        int b = tp_run(k, ranks, body, NULL, 20000, 0, 0, ns);
        printf("%s k=%d: register on tcp is a no-op, misuse is refused with a clear message\n", b ? "FAIL" : "ok  ", k);
        bad += b;
    }
    return bad ? 1 : 0;
}
