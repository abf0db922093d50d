/* model/cpu/net.h — the CPU executor: runs a model_graph forward and backward over `real`
 * buffers (float in ih_model, double in ih_model_f64 for the tests; see real.h).
 *
 * The executor owns every activation, activation-gradient, saved-statistics and workspace
 * buffer, all allocated at create for max_batch images; forward/backward allocate nothing.
 * Parameters, gradients and BN running state are flat buffers owned by the caller, with the
 * graph's offsets. One thread drives an executor; OpenBLAS may use its own threads.
 */
#ifndef MODEL_CPU_NET_H
#define MODEL_CPU_NET_H

#include <stdint.h>

#include "model/cpu/real.h"
#include "model/graph.h"

typedef struct MODEL_FN(model_cpu_net) MODEL_FN(model_cpu_net);

/* Elements of `real` per chunk of im2col workspace (16 MB in float). */
#define MODEL_CPU_WS_CAP ((size_t)1 << 22)

/* Allocates the executor for graph g (which must outlive it). IH_E_USAGE for max_batch < 1
 * or sizes that overflow, IH_E_SYS when memory runs out. */
ih_err MODEL_FN(model_cpu_net_create)(MODEL_FN(model_cpu_net) **out, const model_graph *g,
                                      int max_batch, double bn_momentum, double bn_eps);
void MODEL_FN(model_cpu_net_destroy)(MODEL_FN(model_cpu_net) *e);

/* Forward over n <= max_batch uint8 HWC images. train: BN uses batch statistics and updates
 * the running statistics in `state`; otherwise BN uses `state`. */
void MODEL_FN(model_cpu_forward)(MODEL_FN(model_cpu_net) *e, const real *params, real *state,
                                 const uint8_t *images, int n, int train);

/* Logits [n][num_classes] of the last forward; valid until the next forward. */
const real *MODEL_FN(model_cpu_logits)(const MODEL_FN(model_cpu_net) *e);

/* Softmax cross-entropy of the last forward's logits; stores scale * dCE/dlogits for
 * backward. Labels must be in range (the caller checks). */
void MODEL_FN(model_cpu_loss)(MODEL_FN(model_cpu_net) *e, const int32_t *labels, int n,
                              double scale, double *loss_sum, int *correct);

/* Backward of the last training forward + loss: ADDS parameter gradients into grads.
 * ready (may be NULL) is called as in model_set_grad_ready. */
void MODEL_FN(model_cpu_backward)(MODEL_FN(model_cpu_net) *e, const real *params, real *grads,
                                  int n, model_grad_ready_fn ready, void *ready_arg);

#endif
