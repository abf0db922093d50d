/* model/cuda/probe.h — the first CUDA piece of the model: a device/cuDNN query and the
 * input-normalisation kernel (uint8 HWC RGB -> float NHWC with the ImageNet mean/std of
 * model/input_norm.h), behind a C11 interface. Implemented in probe.cu (extern "C"); built
 * into ih_model_cuda only when IH_WITH_CUDA. Every CUDA/cuDNN call is checked and turned
 * into IH_E_CUDA with a message naming the call.
 */
#ifndef MODEL_CUDA_PROBE_H
#define MODEL_CUDA_PROBE_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "core/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int device_count;      /* cudaGetDeviceCount */
    int runtime_version;   /* cudaRuntimeGetVersion, e.g. 13000 */
    size_t cudnn_version;  /* cudnnGetVersion, e.g. 90800 */
} model_cuda_info;

/* Fills *info. IH_E_CUDA when the CUDA runtime cannot count devices (no driver, no device
 * node); device_count 0 is not an error. Any thread; does not block beyond driver init. */
ih_err model_cuda_probe(model_cuda_info *info);

/* Launches the normalisation of npix pixels from device buffer d_in (uint8 [npix][3]) into
 * device buffer d_out (float [npix][3]) on `stream`. Buffers are the caller's and must stay
 * valid until the stream reaches this work. IH_E_CUDA if the launch fails. Asynchronous. */
ih_err model_cuda_input_normalize(const uint8_t *d_in, float *d_out, size_t npix,
                                  cudaStream_t stream);

/* One-shot check on the current device: copies host_in over, runs the kernel on a private
 * stream, copies the result to host_out and frees everything. Blocks. Allocates (not for
 * the steady state). IH_E_CUDA on any failure. */
ih_err model_cuda_input_normalize_host(const uint8_t *host_in, float *host_out, size_t npix);

#ifdef __cplusplus
}
#endif

#endif
