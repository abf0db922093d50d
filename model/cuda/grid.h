/* model/cuda/grid.h — the grid rule for the CUDA executor's elementwise kernels (grid-stride
 * loops): enough blocks for the work, at most 16 per SM. One copy, for bn.cuh's launchers
 * (which take the SM count) and net_impl.h's grid_for (which takes the executor). Header-only,
 * no kernels, so any translation unit may include it.
 */
#ifndef MODEL_CUDA_GRID_H
#define MODEL_CUDA_GRID_H

#include <stddef.h>

/* Blocks for an elementwise kernel over work items of threads per block. */
static inline unsigned model_cuda_grid(int sms, size_t work, unsigned threads)
{
    size_t b = (work + threads - 1) / threads, cap = (size_t)sms * 16;
    return (unsigned)(b < 1 ? 1 : b > cap ? cap : b);
}

#endif
