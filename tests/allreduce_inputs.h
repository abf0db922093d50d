/* tests/allreduce_inputs.h — the inputs of the exact allreduce tests (tcp, two-level, NCCL,
 * ib): small integers, so every summation order gives the same float and a result compares
 * with the sequential sum bit for bit (memcmp). Header-only. */
#ifndef IH_TESTS_ALLREDUCE_INPUTS_H
#define IH_TESTS_ALLREDUCE_INPUTS_H

#include <stddef.h>

/* Element i of `rank`'s buffer in repetition `rep`: an integer in [-8, 8]. */
static inline float ar_value(int rank, size_t i, int rep)
{
    return (float)((int)((rank * 7u + i * 13u + (unsigned)rep * 5u) % 17u) - 8);
}

/* buf[0..n) := rank's inputs; ref[0..n) := the sum over ranks 0..world-1, added in rank order. */
static inline void ar_fill(float *buf, float *ref, int rank, int world, size_t n, int rep)
{
    for (size_t i = 0; i < n; i++) {
        buf[i] = ar_value(rank, i, rep);
        float s = 0;
        for (int q = 0; q < world; q++) s += ar_value(q, i, rep);
        ref[i] = s;
    }
}

/* The first i with a[i] != b[i] (bitwise equal floats compare equal here: no NaNs), or n. */
static inline size_t ar_first_diff(const float *a, const float *b, size_t n)
{
    size_t i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

#endif
