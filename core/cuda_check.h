/* core/cuda_check.h — the one place where CUDA, cuDNN, cuBLAS and NCCL status codes become
 * ih_err.
 *
 * Every call into those libraries goes through one of these macros, which return (or jump to
 * a cleanup label with) IH_E_CUDA and a message naming the call, the library's error string
 * and where it happened. IH_CUDA_LAUNCHED() checks a kernel launch (cudaGetLastError), as
 * STYLE.md asks after every launch. Include from .cu files (or C files that include the CUDA
 * headers themselves); header-only, no state. Code that uses only the runtime (and NCCL)
 * defines IH_CUDA_CHECK_RUNTIME_ONLY first, so it needs no cuDNN/cuBLAS headers; the NCCL
 * macros exist when <nccl.h> was included before this header.
 */
#ifndef IH_CUDA_CHECK_H
#define IH_CUDA_CHECK_H

#include <cuda_runtime_api.h>
#ifndef IH_CUDA_CHECK_RUNTIME_ONLY
#include <cublas_v2.h>
#include <cudnn.h>
#endif

#include "core/err.h"

#define IH_CUDA_FAIL_(lib, call, msg) \
    ih_fail(IH_E_CUDA, "%s: %s failed: %s (%s:%d)", lib, #call, msg, __FILE__, __LINE__)

#define IH_CUDA(call)                                                           \
    do {                                                                        \
        cudaError_t ih_ce_ = (call);                                            \
        if (ih_ce_ != cudaSuccess)                                              \
            return IH_CUDA_FAIL_("CUDA", call, cudaGetErrorString(ih_ce_));     \
    } while (0)

#define IH_CUDNN(call)                                                          \
    do {                                                                        \
        cudnnStatus_t ih_cs_ = (call);                                          \
        if (ih_cs_ != CUDNN_STATUS_SUCCESS)                                     \
            return IH_CUDA_FAIL_("cuDNN", call, cudnnGetErrorString(ih_cs_));   \
    } while (0)

#define IH_CUBLAS(call)                                                         \
    do {                                                                        \
        cublasStatus_t ih_bs_ = (call);                                         \
        if (ih_bs_ != CUBLAS_STATUS_SUCCESS)                                    \
            return IH_CUDA_FAIL_("cuBLAS", call, cublasGetStatusString(ih_bs_)); \
    } while (0)

#define IH_CUDA_GOTO(call, errvar, label)                                       \
    do {                                                                        \
        cudaError_t ih_ce_ = (call);                                            \
        if (ih_ce_ != cudaSuccess) {                                            \
            (errvar) = IH_CUDA_FAIL_("CUDA", call, cudaGetErrorString(ih_ce_)); \
            goto label;                                                         \
        }                                                                       \
    } while (0)

#define IH_CUDNN_GOTO(call, errvar, label)                                       \
    do {                                                                         \
        cudnnStatus_t ih_cs_ = (call);                                           \
        if (ih_cs_ != CUDNN_STATUS_SUCCESS) {                                    \
            (errvar) = IH_CUDA_FAIL_("cuDNN", call, cudnnGetErrorString(ih_cs_)); \
            goto label;                                                          \
        }                                                                        \
    } while (0)

#ifdef NCCL_H_
/* ncclInProgress is not a failure: a non-blocking communicator's call is still running. */
#define IH_NCCL_FAIL_(call, r, comm)                                                         \
    ih_fail(IH_E_CUDA, "NCCL: %s failed: %s (%s) (%s:%d)", #call, ncclGetErrorString(r),     \
            ncclGetLastError(comm), __FILE__, __LINE__)
#define IH_NCCL_GOTO(call, comm, errvar, label)                                              \
    do {                                                                                     \
        ncclResult_t ih_nr_ = (call);                                                        \
        if (ih_nr_ != ncclSuccess && ih_nr_ != ncclInProgress) {                             \
            (errvar) = IH_NCCL_FAIL_(call, ih_nr_, comm);                                    \
            goto label;                                                                      \
        }                                                                                    \
    } while (0)
#define IH_NCCL(call, comm)                                                                  \
    do {                                                                                     \
        ncclResult_t ih_nr_ = (call);                                                        \
        if (ih_nr_ != ncclSuccess && ih_nr_ != ncclInProgress)                               \
            return IH_NCCL_FAIL_(call, ih_nr_, comm);                                        \
    } while (0)
#endif

/* After a <<<...>>> launch: a bad configuration shows up here, not at the next sync. */
#define IH_CUDA_LAUNCHED(what)                                                     \
    do {                                                                           \
        cudaError_t ih_ce_ = cudaGetLastError();                                   \
        if (ih_ce_ != cudaSuccess)                                                 \
            return ih_fail(IH_E_CUDA, "CUDA: launch of %s failed: %s (%s:%d)", (what), \
                           cudaGetErrorString(ih_ce_), __FILE__, __LINE__);        \
    } while (0)

#endif
