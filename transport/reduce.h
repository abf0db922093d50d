/* transport/reduce.h — the reduction kernel of the collectives. */
#ifndef COMM_REDUCE_H
#define COMM_REDUCE_H

#include <stddef.h>

/* dst[i] += src[i] for i < n. dst and src must not overlap. Any thread; pure. */
void comm_reduce_sum_f32(float *restrict dst, const float *restrict src, size_t n);

#endif
