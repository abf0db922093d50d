/* model/model.h — a ResNet as the trainer sees it, on one backend.
 *
 * Parameters live in one contiguous float buffer and gradients in another with the same
 * offsets; parameters are ordered so that backward writes gradients from the END of the
 * flat buffer towards its start (the FC layer last in the buffer, the stem conv first), so
 * a gradient bucket is a contiguous byte range that is complete early in backward.
 * BatchNorm running statistics are kept in a separate flat "state" buffer (not trained,
 * never allreduced, checkpointed).
 *
 * Layout: activations NHWC, conv weights KRSC ([out][kh][kw][in]), FC weights [out][in].
 * Input: uint8 HWC RGB images; normalisation (ImageNet mean/std) happens inside the model.
 * Threads: one thread drives a model; the backend may use its own threads (BLAS) inside.
 */
#ifndef MODEL_MODEL_H
#define MODEL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "optim/sgd.h" /* model_sgd_step: the model applies the optimizer on its own device */

typedef struct model_net model_net;

typedef enum { MODEL_BACKEND_CPU = 0, MODEL_BACKEND_CUDA = 1 } model_backend;

typedef struct {
    const char *arch;  /* "resnet18|34|50|101", "resnet8|14|20|32|56" (CIFAR-style, 3 stages) */
    int num_classes;
    int image_size;    /* input side (square), e.g. 224 or 32 */
    int max_batch;     /* largest n passed to forward */
    model_backend backend;
    float bn_momentum; /* running-stat update weight of the new batch (0.1) */
    float bn_eps;      /* 1e-5 */
} model_cfg;

/* One row of the parameter table: a contiguous range of the flat buffer. `no_decay` marks
 * BN gamma/beta (and biases), which get no weight decay (Goyal et al. 2017, sec. 5.1). */
typedef struct {
    const char *name; /* e.g. "layer2.0.bn3.gamma" */
    size_t offset, count;
    int no_decay;
    int kind;         /* MODEL_PARAM_CONV_W, ... (for init and tests) */
} model_param_seg;

enum { MODEL_PARAM_CONV_W, MODEL_PARAM_BN_GAMMA, MODEL_PARAM_BN_BETA, MODEL_PARAM_FC_W, MODEL_PARAM_FC_B };

/* Builds the network; IH_E_USAGE for an unknown arch (message lists the known ones).
 * MODEL_BACKEND_CUDA: IH_E_CUDA when the build has no CUDA backend or no device is usable
 * (the message says which); it computes in bf16 (see model_net_create_prec). */
ih_err model_net_create(model_net **out, const model_cfg *cfg);

/* Compute precision. DEFAULT: fp32 on the CPU, bf16 on CUDA. FP32 on CUDA is the exact mode
 * (no TF32) that the tests compare with the CPU; BF16 (CUDA only) keeps activations and conv
 * weights in bf16 on tensor cores, with fp32 master weights, gradients, BN statistics and
 * loss. FP16 (CUDA only) is the same in fp16 with dynamic loss scaling: backward runs on
 * activation gradients multiplied by a power-of-two scale S (initially 2^16), and the fp32
 * parameter gradients are stored divided by S again (exact), so model_grads, the allreduce and
 * the optimizer see ordinary gradients. model_sgd_step skips the update (momentum correction
 * only) when some gradient is inf/NaN, which is the same decision on every worker after the
 * allreduce, and the next step halves S; S doubles after 2000 good steps (model_loss_scale).
 * The CPU backend accepts only DEFAULT and FP32 (IH_E_USAGE otherwise). */
typedef enum {
    MODEL_PREC_DEFAULT = 0,
    MODEL_PREC_FP32 = 1,
    MODEL_PREC_BF16 = 2,
    MODEL_PREC_FP16 = 3
} model_precision;
ih_err model_net_create_prec(model_net **out, const model_cfg *cfg, model_precision prec);
void model_net_destroy(model_net *m);

/* The paper's init from `seed`: He (fan_out, normal) for convs, BN gamma 1 / beta 0 except
 * the last BN of each residual block (gamma 0), FC weight N(0, 0.01), FC bias 0; running
 * mean 0 / var 1. Deterministic: same seed, same bytes. */
void model_init_params(model_net *m, uint64_t seed);

/* Host views of the flat buffers. On the CPU backend they ARE the buffers. On CUDA the
 * buffers live on the device and these are host mirrors kept coherent on demand: a call
 * copies the device buffer to the host if the device changed it since the last copy (a step
 * writes grads and state, model_sgd_step writes params and momentum), and marks the mirror
 * as possibly written, so the next device call first copies it back. So fetch the pointer
 * again after every step, and write through it only until the next model_* call that runs on
 * the device. The trainer touches none of them per step on CUDA (model_sgd_step works on the
 * device); checkpoints, broadcasts and tests do. The gradient mirror is pinned memory owned by
 * the net, at a fixed address for its lifetime. */
float *model_params(model_net *m);      /* host view of the flat parameters */
float *model_grads(model_net *m);       /* host view of the flat gradients */
size_t model_num_params(const model_net *m);
float *model_state(model_net *m);       /* BN running mean/var, flat */
size_t model_num_state(const model_net *m);
size_t model_param_segments(const model_net *m, const model_param_seg **segs);

/* Sets all gradients to zero. */
void model_zero_grads(model_net *m);

/* Training step on n images: BN uses batch statistics (and updates running stats), loss =
 * sum over the n samples of cross-entropy times `loss_scale` (1/(k*n) for the paper's
 * normalisation); gradients of that loss are ADDED to the gradient buffer (so virtual
 * workers accumulate). Outputs: *loss_sum = unscaled sum of per-sample losses, *correct =
 * top-1 hits. Any output pointer may be NULL. */
ih_err model_train_step(model_net *m, const uint8_t *images, const int32_t *labels, int n,
                        float loss_scale, double *loss_sum, int *correct);

/* 1 when `b` can create nets here (CPU: always; CUDA: built in and a device is usable), else
 * 0 with a one-line reason in why (e.g. "no CUDA device (...)"; why may be NULL). */
int model_backend_available(model_backend b, char *why, size_t why_len);

/* Which backend and precision the net runs (DEFAULT already resolved). */
model_backend model_net_backend(const model_net *m);
model_precision model_net_precision(const model_net *m);

/* Gradient-ready notification for overlapping communication with backward: during
 * model_train_step, after each layer's parameter gradients are complete, fn(arg, offset) is
 * called on the stepping thread with grads[offset, model_num_params) final for this step;
 * offsets strictly decrease within a step and the last call has offset 0. fn must not call
 * back into the model and should not block for long. fn == NULL disables it (default).
 * CUDA backend: the step runs asynchronously and the calls come as the device gets there
 * (each layer's gradients are followed by a recorded event; the stepping thread waits for the
 * events in order and calls fn after each), overlapped with the rest of backward. What
 * "final" means depends on model_set_grad_host:
 *   off (default): final in device memory; the host view is NOT updated (progress only:
 *     timing, or a consumer that works on the device);
 *   on: the newly completed range [offset, previous offset) has also been copied into the
 *     host gradient view (pinned; an async copy on a copy stream, ordered after the kernels
 *     that produced it) before fn is called, so fn may hand that host range to another
 *     thread (dp.c's allreduce), which may read AND write it. After such a step the host
 *     view is the authoritative copy: model_sgd_step (or the next step) uploads it first.
 * The copies, events and callbacks cover the whole buffer, so the host view is complete when
 * model_train_step returns. On the CPU backend both settings are the same. */
typedef void (*model_grad_ready_fn)(void *arg, size_t offset);
void model_set_grad_ready(model_net *m, model_grad_ready_fn fn, void *arg);
void model_set_grad_host(model_net *m, int on);

/* The device side of the gradients, for a consumer that reduces them where they are (NCCL
 * inside a node): use it with model_set_grad_host off, so the grad-ready callback means "final
 * in device memory" and the device buffer stays the authoritative copy. The consumer may read
 * and write grads[offset, previous offset) from the callback on, on `stream` (or any stream of
 * that device), and must have finished (synchronized) before the next model_* call that runs
 * on the device (model_sgd_step), which then uses the device buffer as it is. */
typedef struct {
    float *grads;  /* device memory: model_num_params floats with model_grads' offsets */
    void *stream;  /* a cudaStream_t of the net's device, owned by the net (created on first use) */
    int device;    /* the net's CUDA device ordinal */
    int devices;   /* CUDA devices this process sees */
    unsigned char uuid[16]; /* the GPU's UUID: equal in two processes iff they share the GPU */
} model_dev_grads;
/* Fills *out and makes the net's device current for the calling thread. IH_E_USAGE on the CPU
 * backend (out zeroed); IH_E_CUDA. */
ih_err model_device_grads(model_net *m, model_dev_grads *out);
/* Makes the net's device current for the calling thread (a thread other than the one that
 * created the net, before it touches the device buffers). IH_OK at once on the CPU. */
ih_err model_bind_thread(model_net *m);

/* The host path's way back, per bucket (model_set_grad_host on): when a consumer has finished
 * writing the host view's range [lo, hi) of a step's gradients (a bucket's allreduce), it
 * calls model_upload_grads, which queues that range's copy to the device at once, so the
 * copies overlap the other buckets' allreduces instead of one upload of the whole buffer in
 * model_sgd_step. It may be called from another thread than the stepping one, bound with
 * model_bind_thread, during or after model_train_step. After the last range of the step, the
 * stepping thread calls model_grads_uploaded: the device buffer is then the authoritative copy
 * again and nothing is uploaded before the SGD step. The caller must have handed back every
 * range it wrote (else the device misses those writes). CPU backend: both are no-ops. */
ih_err model_upload_grads(model_net *m, size_t lo, size_t hi);
ih_err model_grads_uploaded(model_net *m);

/* One SGD step (optim/sgd.h: momentum in the paper's form, momentum correction, Nesterov,
 * no weight decay on o's no_decay segments) of the parameters from the gradients, on the
 * device that holds them. CPU: exactly optim_sgd_step(o, params, grads, lr). CUDA: one fused
 * kernel over the flat buffers running optim_sgd_elem (optim/sgd_elem.h, the CPU's arithmetic
 * to the bit), which also refreshes the bf16 weight copy (and the padded stem weights); the
 * momentum lives on the device and o's buffer becomes its host mirror (model_sgd_momentum).
 * Gradients written through the host view (an allreduce) are uploaded first. Queued
 * asynchronously on CUDA (model_sync waits). The first call binds o to m (allocates the device
 * momentum and segment tiles, uploads o's momentum); o must outlive m's use of it. Errors:
 * IH_E_USAGE when o's size is not model_num_params, IH_E_CUDA. One thread, the stepping one. */
ih_err model_sgd_step(model_net *m, optim_sgd *o, double lr);

/* Host view of o's momentum buffer, coherent with the device (the on-demand mirror of the
 * parameters: fetched from the device if a model_sgd_step changed it, and uploaded before the
 * next step because the caller may write it). Use this, not optim_sgd_momentum, for
 * checkpoints and broadcasts. CPU: optim_sgd_momentum(o). Aborts if a device copy fails. */
float *model_sgd_momentum(model_net *m, optim_sgd *o);

/* Waits until the work queued on the device (a model_sgd_step) is done; IH_OK at once on the
 * CPU. For timing. */
ih_err model_sync(model_net *m);

/* FP16 loss scaling (see model_precision): the current scale S (1 in other precisions) and how
 * many model_sgd_step calls were skipped for overflow; waits for the last SGD step. Aborts if
 * the device fails. model_set_loss_scale sets S (a power of two in [1, 2^24]; IH_E_USAGE
 * otherwise or when the net is not FP16), e.g. to resume or to test. */
double model_loss_scale(model_net *m, int64_t *skipped_steps);
ih_err model_set_loss_scale(model_net *m, double scale);

/* Inference with running BN statistics: writes n*num_classes logits. */
ih_err model_eval_logits(model_net *m, const uint8_t *images, int n, float *logits);

/* Host memory for the input batches of backend `b` (the pipeline's slots, pipe_cfg.slot_alloc):
 * on CUDA page-locked, so the step copies a batch to the GPU asynchronously straight from it
 * instead of first copying it into a staging buffer on the stepping thread; when the system
 * refuses page-locked memory (a locked-memory limit), a warning and ordinary memory, which
 * still works, the slower way. CPU: ordinary memory. Aligned to at least 64 bytes; NULL when
 * out of memory. model_host_free releases either kind. Call after model_select_device. */
void *model_host_alloc(model_backend b, size_t bytes);
void model_host_free(model_backend b, void *p);

/* Picks this process's device for backend `b`: GPU (local_rank mod GPUs per host) for CUDA, a
 * no-op for the CPU. Call once, before model_net_create, from the thread that will drive the
 * model. IH_E_CUDA when the backend is not usable here. */
ih_err model_select_device(model_backend b, int local_rank);

#endif
