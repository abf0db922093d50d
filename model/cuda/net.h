/* model/cuda/net.h — the CUDA executor: runs a model_graph forward and backward on one GPU
 * (cuDNN convolutions, cuBLAS FC, small kernels for BN/ReLU/add/pool/loss), C11 interface
 * to net.cu.
 *
 * Device buffers, all allocated at create for max_batch images: fp32 master parameters, fp32
 * gradients and fp32 BN running state with the graph's offsets (the same flat layout as the
 * CPU backend), activations and activation gradients NHWC in the compute precision, cuDNN
 * workspace, and in bf16 mode a bf16 copy of the parameters and a bf16 scratch for conv
 * weight gradients, a pinned host mirror of the gradients, and, from the first SGD step, the
 * momentum and the SGD tile table. A step allocates nothing.
 * Precision: MODEL_PREC_FP32 computes everything in fp32 without TF32 (the exact mode the
 * tests compare against the CPU); MODEL_PREC_BF16 keeps activations and conv weights in bf16
 * on tensor cores with fp32 accumulation, fp32 BN statistics, fp32 FC/loss, fp32 master
 * weights and fp32 gradients; MODEL_PREC_FP16 is the same in fp16, with dynamic loss scaling
 * (the activation gradients carry a power-of-two scale, the fp32 parameter gradients do not).
 * Threads: one thread drives an executor. Calls block until their work is done unless said.
 */
#ifndef MODEL_CUDA_NET_H
#define MODEL_CUDA_NET_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "model/graph.h"
#include "model/model.h"
#include "optim/sgd.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct model_cuda_net model_cuda_net;

/* Picks the current CUDA device, creates handles, plans every convolution (algorithms from
 * cuDNN's heuristics, deterministic ones preferred; in bf16 mode measured with cudnnFind at
 * max_batch, seconds for ResNet-50, IH_CUDNN_FIND=0 to skip) and allocates everything. g must outlive
 * the executor. IH_E_CUDA with the reason when there is no device or a library call fails
 * (the message says "no CUDA device" in the first case); IH_E_USAGE for sizes that overflow. */
ih_err model_cuda_net_create(model_cuda_net **out, const model_graph *g, int max_batch,
                             double bn_momentum, double bn_eps, model_precision prec);
void model_cuda_net_destroy(model_cuda_net *e);

/* Host <-> device copies of the flat buffers (count from the graph). Block. */
ih_err model_cuda_put_params(model_cuda_net *e, const float *params);
ih_err model_cuda_put_grads(model_cuda_net *e, const float *grads);
ih_err model_cuda_put_state(model_cuda_net *e, const float *state);
ih_err model_cuda_get_params(model_cuda_net *e, float *params);
ih_err model_cuda_get_grads(model_cuda_net *e, float *grads);
ih_err model_cuda_get_state(model_cuda_net *e, float *state);
ih_err model_cuda_zero_grads(model_cuda_net *e);

/* The pinned host gradient mirror (nparams floats, zeroed at create), owned by e and valid
 * until model_cuda_net_destroy; per-layer gradient copies land here (train_step, to_host). */
float *model_cuda_host_grads(model_cuda_net *e);

/* The device gradient buffer (nparams fp32 with the graph's offsets), a non-blocking stream
 * on e's device for another component's work on it (NCCL; owned by e, the one the uploads
 * below use), e's device ordinal, the number of devices this process sees and the device's
 * UUID (the same GPU has the same UUID in every process, whatever CUDA_VISIBLE_DEVICES says).
 * Makes e's device current for the calling thread. */
ih_err model_cuda_device_view(model_cuda_net *e, float **grads, void **stream, int *device, int *devices,
                              unsigned char uuid[16]);
/* Makes e's device current for the calling thread (another thread than the one that created
 * e, e.g. a communication thread). */
ih_err model_cuda_bind_thread(model_cuda_net *e);

/* Per-bucket return of the host path: upload_grads queues the copy of the pinned host mirror's
 * [lo, hi) to the device gradients on the exchange stream and returns; it may be called from
 * another thread bound to e's device (only CUDA calls on that stream, no executor state).
 * join_uploads (the stepping thread, after the last upload_grads of the step) makes the compute
 * stream wait for every copy queued so far, so the SGD step and the next step's kernels and
 * host copies come after them. */
ih_err model_cuda_upload_grads(model_cuda_net *e, size_t lo, size_t hi);
ih_err model_cuda_join_uploads(model_cuda_net *e);

/* Device SGD. sgd_setup (once per optimizer, allocates): the momentum buffer (zeroed) and the
 * tile table built from the optimizer's segments (tiles of at most a few thousand elements
 * inside one segment, each with its weight decay: plan->weight_decay or 0 for no_decay).
 * sgd_step queues one kernel applying optim_sgd_elem to every parameter, writing the fp32
 * master and, in bf16 mode, the bf16 copy, then refreshes the padded stem weights; does not
 * block. IH_E_INTERNAL if sgd_setup was not called. */
ih_err model_cuda_sgd_setup(model_cuda_net *e, const optim_seg *segs, size_t nsegs, float weight_decay);
ih_err model_cuda_sgd_step(model_cuda_net *e, const optim_sgd_plan *p);
ih_err model_cuda_put_momentum(model_cuda_net *e, const float *u);
ih_err model_cuda_get_momentum(model_cuda_net *e, float *u);

/* fp16 dynamic loss scaling (MODEL_PREC_FP16; model.h). loss_scale: the current scale (1 in
 * the other modes) and the number of overflowed, skipped SGD steps; waits for the last SGD
 * step's overflow flag if it is still in flight. set_loss_scale: IH_E_USAGE unless fp16 and
 * a power of two in [1, 2^24]. */
ih_err model_cuda_loss_scale(model_cuda_net *e, double *scale, int64_t *skipped);
ih_err model_cuda_set_loss_scale(model_cuda_net *e, double scale);

/* Training step as model_train_step on host images/labels (copied in; pinned images are
 * copied directly, pageable ones through a pinned staging buffer; either way the caller may
 * reuse them when this returns). The step runs as a CUDA graph captured on the first call
 * for a given (n, loss_scale, to_host) (IH_CUDA_GRAPH=0: eager launches); forward, softmax
 * cross-entropy scaled by loss_scale, backward ADDING to the device gradients, running
 * statistics updated. After each parameter layer's gradients the step records an event; with
 * to_host, the layer's newly final range is first copied (async, copy stream) into the
 * pinned host mirror and the event follows the copy. fn (may be NULL) is then called for each
 * layer in backward order as its event completes, with the range's start offset (model.h's
 * grad-ready contract). loss_sum/correct may be NULL; when both are and fn is NULL, the call
 * returns once the work is queued (images and labels are already copied). Labels must be
 * valid. */
ih_err model_cuda_train_step(model_cuda_net *e, const uint8_t *images, const int32_t *labels,
                             int n, double loss_scale, double *loss_sum, int *correct,
                             model_grad_ready_fn fn, void *arg, int to_host);

/* Inference with running statistics; writes n*num_classes logits to host memory. */
ih_err model_cuda_eval_logits(model_cuda_net *e, const uint8_t *images, int n, float *logits);

/* Waits for all queued work. */
ih_err model_cuda_sync(model_cuda_net *e);

/* Page-locked host memory on the current device's context (cudaHostAlloc, portable), for
 * buffers the GPU copies from asynchronously (the pipeline's batch slots): NULL when it cannot
 * be had. host_free takes only such pointers. */
void *model_cuda_host_alloc(size_t bytes);
void model_cuda_host_free(void *p);

/* 1 when a CUDA device is usable, else 0 and a one-line reason in why (may be NULL). */
int model_cuda_available(char *why, size_t why_len);
/* Makes GPU (local_rank mod device count) current for the calling thread. Returns 0, the device
 * count when local ranks outnumber GPUs (they then share), or -1 with `why` filled. */
int model_cuda_select_device(int local_rank, char *why, size_t why_len);

#ifdef __cplusplus
}
#endif

#endif
