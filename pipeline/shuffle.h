/* pipeline/shuffle.h — the per-epoch permutation and each worker's share of it.
 *
 * The permutation of [0, n) for an epoch is a pure function of (seed, epoch): a
 * Fisher-Yates shuffle driven by ih_rng_make(seed, epoch, PIPE_SHUFFLE_STREAM), built
 * once per epoch in O(n) time and 4n bytes (1.28M records: 5 MB, ~10 ms). Every worker
 * builds the same array without communication; resuming mid-epoch is an index into it.
 *
 * Sharding (train): an epoch has floor(n / (world*batch)) global batches; worker `rank`
 * takes perm[g*world*batch + rank*batch + j], j < batch, for global batch g. The tail of
 * the permutation that does not fill a global batch is dropped (it differs per epoch, so
 * no record is dropped systematically). Pure functions, any thread.
 */
#ifndef PIPE_SHUFFLE_H
#define PIPE_SHUFFLE_H

#include <stdint.h>

/* The third RNG key used for shuffles; sample augmentations use the sample index there,
 * so the stream id sits above any record index (2^63). */
#define PIPE_SHUFFLE_STREAM 0x8000000000000000ull

/* Fills perm[0..n) with the permutation for (seed, epoch). n < 2^32. Never allocates. */
void pipe_perm_build(uint32_t *perm, uint32_t n, uint64_t seed, uint64_t epoch);

/* Global batches per epoch in train mode: floor(n / (world*batch)). */
int64_t pipe_train_batches(int64_t n, int world, int batch);

/* Position in the permutation of item j of batch g on worker rank (train mode). */
static inline int64_t pipe_train_pos(int64_t g, int rank, int world, int batch, int j)
{
    return g * (int64_t)world * batch + (int64_t)rank * batch + j;
}

/* Eval sharding: worker rank of world gets records rank, rank+world, ...; count and the
 * record index of its i-th item. */
int64_t pipe_eval_count(int64_t n, int rank, int world);
static inline int64_t pipe_eval_record(int64_t i, int rank, int world) { return i * world + rank; }

#endif
