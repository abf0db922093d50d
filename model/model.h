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

/* Builds the network; IH_E_USAGE for an unknown arch (message lists the known ones). */
ih_err model_net_create(model_net **out, const model_cfg *cfg);
void model_net_destroy(model_net *m);

/* The paper's init from `seed`: He (fan_out, normal) for convs, BN gamma 1 / beta 0 except
 * the last BN of each residual block (gamma 0), FC weight N(0, 0.01), FC bias 0; running
 * mean 0 / var 1. Deterministic: same seed, same bytes. */
void model_init_params(model_net *m, uint64_t seed);

float *model_params(model_net *m);      /* host view (CPU) of the flat parameters */
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

/* Gradient-ready notification for overlapping communication with backward: during
 * model_train_step, after each layer's parameter gradients are complete, fn(arg, offset) is
 * called on the stepping thread with grads[offset, model_num_params) final for this step;
 * offsets strictly decrease within a step and the last call has offset 0. fn must not call
 * back into the model and should not block for long. fn == NULL disables it (default). */
typedef void (*model_grad_ready_fn)(void *arg, size_t offset);
void model_set_grad_ready(model_net *m, model_grad_ready_fn fn, void *arg);

/* Inference with running BN statistics: writes n*num_classes logits. */
ih_err model_eval_logits(model_net *m, const uint8_t *images, int n, float *logits);

#endif
