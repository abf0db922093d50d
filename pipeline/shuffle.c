/* pipeline/shuffle.c — see shuffle.h. */
#include "shuffle.h"

#include "core/rng.h"

void pipe_perm_build(uint32_t *perm, uint32_t n, uint64_t seed, uint64_t epoch)
{
    for (uint32_t i = 0; i < n; i++) perm[i] = i;
    ih_rng r = ih_rng_make(seed, epoch, PIPE_SHUFFLE_STREAM);
    /* Fisher-Yates, high to low: swap i with a uniform j in [0, i]. */
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = (uint32_t)ih_rng_below(&r, i);
        uint32_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}

int64_t pipe_train_batches(int64_t n, int world, int batch)
{
    if (world <= 0 || batch <= 0 || n <= 0) return 0;
    return n / ((int64_t)world * batch);
}

int64_t pipe_eval_count(int64_t n, int rank, int world)
{
    if (world <= 0 || rank < 0 || rank >= world || n <= rank) return 0;
    return (n - rank + world - 1) / world;
}
