/* model/cuda/bn.cuh — BatchNorm's launchers over plain device pointers: the training forward
 * (statistics, finalize, apply; optionally from sums the convolution before it left), the
 * eval forward and the backward, each with an optional fused ReLU. net.cu's BN layers call
 * them with a layer's tensors; bench/bench_bn.cu calls the same ones to time them against
 * cuDNN's batch normalization on ResNet-50's shapes. CUDA C++, header-only (templates).
 *
 * x is m = n*h*w rows of c channels (NHWC). aux is 7c floats of per-channel scratch that the
 * backward reads from the training forward: [mean][istd][scale][shift][ka][kb][kc]. (When
 * cuDNN's BN runs the layer, bn_cudnn.cu, cuDNN saves mean and istd in the same [0, 2c), so
 * either backward follows either forward, and writes its dgamma, dbeta to [2c, 4c).)
 * partial is PMAX * 2c floats of row-block partial sums. Reductions add the partials in a
 * fixed order in double, so results are deterministic. Kernels queue on s; errors of a launch
 * are returned (ih_err), nothing synchronises.
 */
#ifndef MODEL_CUDA_BN_CUH
#define MODEL_CUDA_BN_CUH

#include <cuda_runtime_api.h>

#include "core/cuda_check.h"
#include "core/err.h"
#include "model/cuda/grid.h"
#include "model/cuda/kernels.cuh"

enum { PMAX = 1024 }; /* row blocks of a BN reduction, at most */

/* The reductions' geometry: x over groups of V channels (V = 8 when c allows), y over rows;
 * about 8 blocks per SM, at most PMAX row blocks. */
typedef struct {
    int V;
    dim3 blk, grd;
    size_t shm;
} bn_geom;

static inline bn_geom bn_geometry(size_t m, int c, int sms)
{
    bn_geom g;
    g.V = c % 8 == 0 ? 8 : 1;
    int G = c / g.V, GB = G < 32 ? G : 32, RB = 256 / GB;
    g.blk = dim3(GB, RB);
    g.grd = dim3((G + GB - 1) / GB, 1);
    size_t rows = (m + RB - 1) / RB, want = (size_t)sms * 8 / g.grd.x + 1;
    g.grd.y = (unsigned)(rows < want ? rows : want);
    if (g.grd.y > PMAX) g.grd.y = PMAX;
    g.shm = 2 * (size_t)RB * GB * g.V * sizeof(float);
    return g;
}

/* Training forward: batch statistics (or, with pre_shift, the sums of x - pre_shift that the
 * convolution left in partial[0][2][c]), running statistics updated with momentum (running
 * variance unbiased), y = relu?(gamma (x - mean) istd + beta). */
template <typename TX, typename TY>
static ih_err bn_train_fwd(cudaStream_t s, int sms, const TX *x, TY *y, size_t m, int c, const float *pre_shift,
                           float *partial, const float *gamma, const float *beta, float *aux, float *run_mean,
                           float *run_var, double momentum, double eps, int relu)
{
    bn_geom g = bn_geometry(m, c, sms);
    if (pre_shift) {
        g.grd.y = 1;
    } else {
        if (g.V == 8) bn_stats_k<TX, 8><<<g.grd, g.blk, g.shm, s>>>(x, m, c, partial);
        else bn_stats_k<TX, 1><<<g.grd, g.blk, g.shm, s>>>(x, m, c, partial);
        IH_CUDA_LAUNCHED("bn_stats_k");
    }
    bn_finalize_k<TX><<<(c + 31) / 32, dim3(32, FIN_ROWS), 0, s>>>(x, pre_shift, m, c, (int)g.grd.y, partial, gamma,
                                                                  beta, aux, run_mean, run_var, momentum, eps);
    IH_CUDA_LAUNCHED("bn_finalize_k");
    size_t len = m * c;
    if (g.V == 8) bn_apply_k<TX, TY, 8><<<model_cuda_grid(sms, len / 8, 256), 256, 0, s>>>(x, y, len, c, aux, relu);
    else bn_apply_k<TX, TY, 1><<<model_cuda_grid(sms, len, 256), 256, 0, s>>>(x, y, len, c, aux, relu);
    IH_CUDA_LAUNCHED("bn_apply_k");
    return IH_OK;
}

/* Eval forward: y = relu?(gamma (x - running mean) / sqrt(running var + eps) + beta). */
template <typename TX, typename TY>
static ih_err bn_eval_fwd(cudaStream_t s, int sms, const TX *x, TY *y, size_t m, int c, const float *gamma,
                          const float *beta, const float *run_mean, const float *run_var, double eps, float *aux,
                          int relu)
{
    bn_eval_prep_k<<<(c + 127) / 128, 128, 0, s>>>(c, gamma, beta, run_mean, run_var, eps, aux);
    IH_CUDA_LAUNCHED("bn_eval_prep_k");
    size_t len = m * c;
    if (c % 8 == 0) bn_apply_k<TX, TY, 8><<<model_cuda_grid(sms, len / 8, 256), 256, 0, s>>>(x, y, len, c, aux, relu);
    else bn_apply_k<TX, TY, 1><<<model_cuda_grid(sms, len, 256), 256, 0, s>>>(x, y, len, c, aux, relu);
    IH_CUDA_LAUNCHED("bn_apply_k(eval)");
    return IH_OK;
}

/* Backward of the training forward (aux as it left it): dgamma and dbeta are added to, times
 * gscale (1 / the loss scale); dx (NULL: not wanted) is written or, with accum, added to. With
 * relu, dy is masked by y > 0 first (y: the forward's output). */
template <typename TX, typename TG>
static ih_err bn_train_bwd(cudaStream_t s, int sms, const TX *x, const TG *dy, const TG *y, TX *dx, int accum,
                           size_t m, int c, float *partial, const float *gamma, float *dgamma, float *dbeta,
                           float *aux, double gscale, int relu)
{
    bn_geom g = bn_geometry(m, c, sms);
    if (g.V == 8) bn_bwd_reduce_k<TX, TG, 8><<<g.grd, g.blk, g.shm, s>>>(x, dy, y, m, c, aux, partial, relu);
    else bn_bwd_reduce_k<TX, TG, 1><<<g.grd, g.blk, g.shm, s>>>(x, dy, y, m, c, aux, partial, relu);
    IH_CUDA_LAUNCHED("bn_bwd_reduce_k");
    bn_bwd_finalize_k<<<(c + 31) / 32, dim3(32, FIN_ROWS), 0, s>>>(m, c, (int)g.grd.y, partial, gamma, dgamma,
                                                                  dbeta, aux, gscale);
    IH_CUDA_LAUNCHED("bn_bwd_finalize_k");
    if (!dx) return IH_OK;
    size_t len = m * c;
    if (g.V == 8)
        bn_bwd_dx_k<TX, TG, 8><<<model_cuda_grid(sms, len / 8, 256), 256, 0, s>>>(x, dy, y, dx, len, c, aux, accum, relu);
    else bn_bwd_dx_k<TX, TG, 1><<<model_cuda_grid(sms, len, 256), 256, 0, s>>>(x, dy, y, dx, len, c, aux, accum, relu);
    IH_CUDA_LAUNCHED("bn_bwd_dx_k");
    return IH_OK;
}

#endif
