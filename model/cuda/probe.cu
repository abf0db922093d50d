/* model/cuda/probe.cu — device query and the input-normalisation kernel (see probe.h).
 * One thread per pixel; the three channels of a pixel are adjacent in both layouts, so
 * reads and writes coalesce. CUDA_OK/CUDNN_OK turn foreign status codes into IH_E_CUDA with
 * the call and its error string.
 */
#include <cudnn.h>

extern "C" { /* core/err.h has no C++ guards of its own */
#include "core/err.h"
}
#include "model/cuda/probe.h"
#include "model/input_norm.h"

#define CUDA_OK(call)                                                                     \
    do {                                                                                  \
        cudaError_t e_ = (call);                                                          \
        if (e_ != cudaSuccess)                                                            \
            return ih_fail(IH_E_CUDA, "%s: %s (%s)", #call, cudaGetErrorString(e_),        \
                           cudaGetErrorName(e_));                                         \
    } while (0)

#define CUDA_OK_GOTO(call, err, label)                                                    \
    do {                                                                                  \
        cudaError_t e_ = (call);                                                          \
        if (e_ != cudaSuccess) {                                                          \
            (err) = ih_fail(IH_E_CUDA, "%s: %s (%s)", #call, cudaGetErrorString(e_),       \
                            cudaGetErrorName(e_));                                        \
            goto label;                                                                   \
        }                                                                                 \
    } while (0)

__global__ void normalize_u8_kernel(const uint8_t *in, float *out, size_t npix)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= npix) return;
    const float mr = (float)(255 * MODEL_MEAN_R), mg = (float)(255 * MODEL_MEAN_G),
                mb = (float)(255 * MODEL_MEAN_B);
    const float ir = (float)(1.0 / (255 * MODEL_STD_R)), ig = (float)(1.0 / (255 * MODEL_STD_G)),
                ib = (float)(1.0 / (255 * MODEL_STD_B));
    out[3 * i + 0] = ((float)in[3 * i + 0] - mr) * ir;
    out[3 * i + 1] = ((float)in[3 * i + 1] - mg) * ig;
    out[3 * i + 2] = ((float)in[3 * i + 2] - mb) * ib;
}

extern "C" ih_err model_cuda_probe(model_cuda_info *info)
{
    info->device_count = 0;
    info->runtime_version = 0;
    info->cudnn_version = cudnnGetVersion(); /* no status: a plain query of the library */
    CUDA_OK(cudaRuntimeGetVersion(&info->runtime_version));
    CUDA_OK(cudaGetDeviceCount(&info->device_count));
    return IH_OK;
}

extern "C" ih_err model_cuda_input_normalize(const uint8_t *d_in, float *d_out, size_t npix,
                                             cudaStream_t stream)
{
    if (npix == 0) return IH_OK;
    const unsigned threads = 256;
    size_t blocks = (npix + threads - 1) / threads;
    if (blocks > 0x7fffffffu)
        return ih_fail(IH_E_USAGE, "model_cuda_input_normalize: %zu pixels is too many for "
                       "one launch", npix);
    normalize_u8_kernel<<<(unsigned)blocks, threads, 0, stream>>>(d_in, d_out, npix);
    CUDA_OK(cudaGetLastError());
    return IH_OK;
}

extern "C" ih_err model_cuda_input_normalize_host(const uint8_t *host_in, float *host_out,
                                                  size_t npix)
{
    ih_err err = IH_OK;
    uint8_t *d_in = NULL;
    float *d_out = NULL;
    cudaStream_t s = NULL;
    CUDA_OK_GOTO(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), err, fail);
    CUDA_OK_GOTO(cudaMalloc((void **)&d_in, npix * 3), err, fail);
    CUDA_OK_GOTO(cudaMalloc((void **)&d_out, npix * 3 * sizeof(float)), err, fail);
    CUDA_OK_GOTO(cudaMemcpyAsync(d_in, host_in, npix * 3, cudaMemcpyHostToDevice, s), err, fail);
    IH_TRY_GOTO(model_cuda_input_normalize(d_in, d_out, npix, s), err, fail);
    CUDA_OK_GOTO(cudaMemcpyAsync(host_out, d_out, npix * 3 * sizeof(float), cudaMemcpyDeviceToHost, s),
                 err, fail);
    CUDA_OK_GOTO(cudaStreamSynchronize(s), err, fail);
fail:
    /* Cleanup errors after a failure would hide the first one; report them only if clean. */
    if (d_in && cudaFree(d_in) != cudaSuccess && err == IH_OK)
        err = ih_fail(IH_E_CUDA, "cudaFree(d_in) failed");
    if (d_out && cudaFree(d_out) != cudaSuccess && err == IH_OK)
        err = ih_fail(IH_E_CUDA, "cudaFree(d_out) failed");
    if (s && cudaStreamDestroy(s) != cudaSuccess && err == IH_OK)
        err = ih_fail(IH_E_CUDA, "cudaStreamDestroy failed");
    return err;
}
