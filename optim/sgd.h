/* optim/sgd.h — SGD with momentum in the form of Goyal et al. 2017 (eq. 4, lr folded in):
 *
 *   u <- m*u + lr*(g + wd*w)        (wd = 0 on no_decay segments)
 *   w <- w - u                       (plain momentum)
 *   w <- w - (m*u + lr*(g + wd*w))   (Nesterov, the paper's choice; Sutskever form)
 *
 * with momentum correction: when lr changes from lr_old to lr_new, u is first scaled by
 * lr_new/lr_old (sec. 2.3, "momentum correction"), so the update equals the unfolded form.
 * Works on flat float buffers; per-parameter facts come as a segment table.
 * Threads: one thread per optimizer; no internal threads.
 */
#ifndef OPTIM_SGD_H
#define OPTIM_SGD_H

#include <stddef.h>

#include "core/err.h"

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

/* The momentum buffer (n floats) and the lr of the previous step, for checkpoints. */
float *optim_sgd_momentum(optim_sgd *o);
double optim_sgd_prev_lr(const optim_sgd *o);
void optim_sgd_set_prev_lr(optim_sgd *o, double lr);

#endif
