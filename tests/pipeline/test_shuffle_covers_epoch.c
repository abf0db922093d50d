/* test_shuffle_covers_epoch — the epoch permutation is a permutation of [0, N), a pure
 * function of (seed, epoch); the k shards of every global batch together take each position
 * of the permutation exactly once, so every index appears at most once per epoch and all
 * but the dropped remainder (< k*n) appear; different epochs and seeds give different orders. */
#include <stdlib.h>
#include <string.h>

#include "pipeline/shuffle.h"
#include "tests/check.h"

int main(void)
{
    static const uint32_t sizes[] = {1, 2, 7, 100, 1000, 1237, 4099};
    static const int worlds[] = {1, 2, 3, 5, 8};
    static const int batches[] = {1, 4, 16};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        uint32_t n = sizes[si];
        uint32_t *p = malloc(n * sizeof *p), *q = malloc(n * sizeof *q);
        unsigned char *seen = malloc(n);
        for (int epoch = 0; epoch < 3; epoch++) {
            pipe_perm_build(p, n, 42, (uint64_t)epoch);
            memset(seen, 0, n);
            int bad = 0;
            for (uint32_t i = 0; i < n; i++) {
                if (p[i] >= n || seen[p[i]]) bad++;
                else seen[p[i]] = 1;
            }
            CHECK(bad == 0, "N=%u epoch %d: not a permutation (%d bad)", n, epoch, bad);
            pipe_perm_build(q, n, 42, (uint64_t)epoch);
            CHECK(!memcmp(p, q, n * sizeof *p), "N=%u epoch %d: same (seed, epoch) gave another order", n, epoch);
            if (n >= 100) {
                pipe_perm_build(q, n, 42, (uint64_t)epoch + 1);
                CHECK(memcmp(p, q, n * sizeof *p), "N=%u: epochs %d and %d give the same order", n, epoch, epoch + 1);
                pipe_perm_build(q, n, 43, (uint64_t)epoch);
                CHECK(memcmp(p, q, n * sizeof *p), "N=%u: seeds 42 and 43 give the same order", n);
                int fixed = 0;
                for (uint32_t i = 0; i < n; i++) fixed += p[i] == i;
                CHECK(fixed < 10, "N=%u: %d fixed points, not shuffled", n, fixed);
            }
            for (size_t wi = 0; wi < sizeof worlds / sizeof worlds[0]; wi++)
                for (size_t bi = 0; bi < sizeof batches / sizeof batches[0]; bi++) {
                    int k = worlds[wi], b = batches[bi];
                    int64_t nb = pipe_train_batches(n, k, b);
                    CHECK(nb == (int64_t)(n / ((uint32_t)k * (uint32_t)b)), "batches N=%u k=%d n=%d", n, k, b);
                    memset(seen, 0, n);
                    int64_t taken = 0, dup = 0;
                    for (int r = 0; r < k; r++)
                        for (int64_t g = 0; g < nb; g++)
                            for (int j = 0; j < b; j++) {
                                int64_t pos = pipe_train_pos(g, r, k, b, j);
                                uint32_t idx = p[pos];
                                dup += seen[idx];
                                seen[idx] = 1;
                                taken++;
                            }
                    CHECK(dup == 0, "N=%u k=%d n=%d: %lld indices twice", n, k, b, (long long)dup);
                    CHECK(taken == nb * k * b && n - taken < (int64_t)k * b, "N=%u k=%d n=%d: took %lld", n, k, b,
                          (long long)taken);
                    /* The dropped ones are exactly the permutation's tail. */
                    int tail_bad = 0;
                    for (int64_t pos = taken; pos < n; pos++) tail_bad += seen[p[pos]];
                    CHECK(tail_bad == 0, "N=%u k=%d n=%d: tail overlaps the shards", n, k, b);
                }
            /* Eval sharding: i % world == rank, every record exactly once. */
            for (size_t wi = 0; wi < sizeof worlds / sizeof worlds[0]; wi++) {
                int k = worlds[wi];
                memset(seen, 0, n);
                int64_t tot = 0, bad2 = 0;
                for (int r = 0; r < k; r++)
                    for (int64_t i = 0; i < pipe_eval_count(n, r, k); i++) {
                        int64_t rec = pipe_eval_record(i, r, k);
                        if (rec < 0 || rec >= n || seen[rec] || rec % k != r) bad2++;
                        else seen[rec] = 1;
                        tot++;
                    }
                CHECK(tot == n && bad2 == 0, "eval N=%u k=%d: %lld records, %lld bad", n, k, (long long)tot,
                      (long long)bad2);
            }
        }
        free(p);
        free(q);
        free(seen);
    }
    /* Uniformity smoke check: position of element 0 over many seeds, N = 4. */
    int hist[4] = {0};
    uint32_t p4[4];
    for (int s = 0; s < 40000; s++) {
        pipe_perm_build(p4, 4, (uint64_t)s, 0);
        for (int i = 0; i < 4; i++)
            if (p4[i] == 0) hist[i]++;
    }
    for (int i = 0; i < 4; i++) CHECK(hist[i] > 9500 && hist[i] < 10500, "position %d: %d of 40000", i, hist[i]);
    return ih_test_result();
}
