/* optim/sgd.h — SGD with momentum in the form of Goyal et al. 2017 (eq. 4, lr folded in):
 *
 *   u <- m*u + lr*(g + wd*w)        (wd = 0 on no_decay segments)
 *   w <- w - u                       (plain momentum)
 *   w <- w - (m*u + lr*(g + wd*w))   (Nesterov, the paper's choice; Sutskever form)
 *
 * with momentum correction: when lr changes from lr_old to lr_new, u is first scaled by
 * lr_new/lr_old (sec. 2.3, "momentum correction"), so the update equals the unfolded form.
 * Works on flat float buffers; per-parameter facts come as a segment table. The per-element
 * arithmetic is optim_sgd_elem (optim/sgd_elem.h), which a GPU backend runs too: such a
 * backend calls optim_sgd_plan_step once per step instead of optim_sgd_step and applies the
 * returned plan to its own (device) buffers, with this object's segment table.
 * Threads: one thread per optimizer; no internal threads.
 */
#ifndef OPTIM_SGD_H
#define OPTIM_SGD_H

#include <stddef.h>

#include "core/err.h"
#include "optim/sgd_elem.h"

typedef struct optim_sgd optim_sgd;

typedef struct {
    size_t offset, count;
    int no_decay;
} optim_seg;

typedef struct {
    float momentum;     /* 0.9 */
    float weight_decay; /* 1e-4 */
    int nesterov;       /* 1 */
    int momentum_correction; /* 1 */
} optim_sgd_cfg;

/* `segs` must cover [0, n) without overlap (checked: IH_E_INTERNAL otherwise). Copied. */
ih_err optim_sgd_create(optim_sgd **out, size_t n, const optim_seg *segs, size_t nsegs,
                        const optim_sgd_cfg *cfg);
void optim_sgd_destroy(optim_sgd *o);

/* One update of `params` from `grads` at learning rate `lr`. Never allocates. */
void optim_sgd_step(optim_sgd *o, float *params, const float *grads, double lr);

/* The bookkeeping half of optim_sgd_step, for an executor that applies the update elsewhere
 * (model_sgd_step on a GPU): returns what a step at `lr` applies to each element (the
 * momentum-correction factor included) and records lr as the previous lr, exactly as
 * optim_sgd_step does. The caller must then apply the plan to every element with
 * optim_sgd_elem, using wd = plan.weight_decay except 0 on no_decay segments; this object's
 * own momentum buffer is then NOT updated (the executor keeps the live one). */
optim_sgd_plan optim_sgd_plan_step(optim_sgd *o, double lr);

/* The segment table (sorted by offset, covering [0, n)) and the element count. The pointer is
 * valid until optim_sgd_destroy. */
size_t optim_sgd_segments(const optim_sgd *o, const optim_seg **segs);
size_t optim_sgd_size(const optim_sgd *o);
const optim_sgd_cfg *optim_sgd_config(const optim_sgd *o);

/* The momentum buffer (n floats) and the lr of the previous step, for checkpoints. */
float *optim_sgd_momentum(optim_sgd *o);
double optim_sgd_prev_lr(const optim_sgd *o);
void optim_sgd_set_prev_lr(optim_sgd *o, double lr);

#endif
