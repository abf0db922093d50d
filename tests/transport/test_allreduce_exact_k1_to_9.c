/* test_allreduce_exact_k1_to_9 — allreduce equals a sequential sum, bit for bit.
 *
 * Grid: world sizes k = KMIN..KMAX (default 1..9; `--kmin 16 --kmax 16` is the slow label's
 * run) x element counts {0, 1, k-1, k+1, 10007 (prime), 1 MiB + 3} x {hd, ring}, ranks as
 * threads over the tcp fabric on 127.0.0.1, each case run twice on the same communicator
 * with different data (catches state left over between calls). Inputs are small integers,
 * so every summation order gives the same float and the check is memcmp. A 16 KiB chunk makes
 * the larger sizes cross many chunks, and 64 KiB socket buffers make senders block on full
 * sockets, which is where a ring that stops receiving while it waits to send deadlocks.
 */
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "tests/allreduce_inputs.h"
#include "tests/transport/ranks.h"

static void body(tp_rank *r)
{
    comm_ctx *c = NULL;
    if (tp_ctx_create(r, &c) != IH_OK) { tp_fail(r, "create: %s", ih_last_error()); return; }
    int k = r->world;
    size_t sizes[] = {0, 1, (size_t)(k - 1), (size_t)(k + 1), 10007, (1u << 20) + 3};
    size_t maxn = (1u << 20) + 3;
    float *buf = malloc(maxn * sizeof(float)), *ref = malloc(maxn * sizeof(float));
    comm_algo algos[] = {COMM_ALGO_HD, COMM_ALGO_RING};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0] && !r->fails; si++) {
        size_t n = sizes[si];
        for (int a = 0; a < 2 && !r->fails; a++) {
            for (int rep = 0; rep < 2 && !r->fails; rep++) {
                ar_fill(buf, ref, r->rank, k, n, rep + 2 * a); /* ref: the sequential sum */
                if (comm_coll_allreduce(c, buf, n, algos[a]) != IH_OK) {
                    tp_fail(r, "allreduce(%s, n=%zu, rep %d): %s", comm_algo_name(algos[a]), n, rep,
                            ih_last_error());
                    break;
                }
                if (n && memcmp(buf, ref, n * sizeof(float))) {
                    size_t i = ar_first_diff(buf, ref, n);
                    tp_fail(r, "allreduce(%s, n=%zu, rep %d): element %zu is %g, expected %g",
                            comm_algo_name(algos[a]), n, rep, i, (double)buf[i], (double)ref[i]);
                }
            }
        }
    }
    free(buf);
    free(ref);
    comm_ctx_destroy(c);
}

int main(int argc, char **argv)
{
    int kmin = 1, kmax = 9;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--kmin")) kmin = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--kmax")) kmax = atoi(argv[i + 1]);
    }
    tp_rank ranks[64];
    for (int k = kmin; k <= kmax; k++) {
        double t0 = ih_now_s();
        int bad = tp_run(k, ranks, body, NULL, 10000, 16 << 10, 64 << 10, "grid");
        CHECK(bad == 0, "k=%d: %d ranks saw a wrong result or an error", k, bad);
        printf("k=%d: %s (%.2f s)\n", k, bad ? "FAIL" : "exact", ih_now_s() - t0);
    }
    return ih_test_result();
}
