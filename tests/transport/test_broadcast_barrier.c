/* test_broadcast_barrier — broadcast delivers the root's bytes exactly, and no rank leaves a
 * barrier before every rank entered it.
 *
 * k = 1..9 ranks as threads over tcp. Broadcast: sizes {0, 1, 1000, 1 MiB + 5} bytes from
 * roots {0, k/2, k-1}, twice each. Barrier: 20 rounds; before each, rank r sleeps r*0.3 ms
 * and increments a shared counter; after it, every rank must see round*k arrivals.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/transport/ranks.h"

typedef struct { atomic_int arrived; } shared;

static void body(tp_rank *r)
{
    comm_ctx *c = NULL;
    shared *sh = r->user;
    if (tp_ctx_create(r, &c) != IH_OK) { tp_fail(r, "create: %s", ih_last_error()); return; }
    int k = r->world;
    size_t sizes[] = {0, 1, 1000, (1u << 20) + 5};
    unsigned char *buf = malloc((1u << 20) + 5);
    int roots[] = {0, k / 2, k - 1};
    for (int ri = 0; ri < 3 && !r->fails; ri++) {
        for (size_t si = 0; si < 4 && !r->fails; si++) {
            for (int rep = 0; rep < 2 && !r->fails; rep++) {
                size_t n = sizes[si];
                int root = roots[ri];
                for (size_t i = 0; i < n; i++)
                    buf[i] = (unsigned char)(r->rank == root ? (i * 31 + (size_t)rep + (size_t)root) : 0xEE);
                if (comm_coll_broadcast(c, buf, n, root) != IH_OK) {
                    tp_fail(r, "broadcast(%zu B, root %d): %s", n, root, ih_last_error());
                    break;
                }
                for (size_t i = 0; i < n; i++)
                    if (buf[i] != (unsigned char)(i * 31 + (size_t)rep + (size_t)root)) {
                        tp_fail(r, "broadcast(%zu B, root %d, rep %d): byte %zu is %u", n, root, rep, i, buf[i]);
                        break;
                    }
            }
        }
    }
    for (int round = 1; round <= 20 && !r->fails; round++) {
        struct timespec ts = {0, 300000L * r->rank};
        nanosleep(&ts, NULL);
        atomic_fetch_add(&sh->arrived, 1);
        if (comm_coll_barrier(c) != IH_OK) { tp_fail(r, "barrier: %s", ih_last_error()); break; }
        int seen = atomic_load(&sh->arrived);
        if (seen < round * k) tp_fail(r, "left barrier round %d having seen %d of %d arrivals", round, seen, round * k);
        /* a second barrier keeps fast ranks from starting the next round's increment early */
        if (comm_coll_barrier(c) != IH_OK) { tp_fail(r, "barrier: %s", ih_last_error()); break; }
    }
    free(buf);
    comm_ctx_destroy(c);
}

int main(void)
{
    tp_rank ranks[16];
    for (int k = 1; k <= 9; k++) {
        shared sh;
        atomic_init(&sh.arrived, 0);
        int bad = tp_run(k, ranks, body, &sh, 30000, 16 << 10, 64 << 10, "bcast");
        CHECK(bad == 0, "k=%d: %d ranks failed", k, bad);
    }
    return ih_test_result();
}
