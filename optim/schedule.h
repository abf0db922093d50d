/* optim/schedule.h — the learning-rate schedule as a pure function of the iteration.
 *
 * Linear scaling rule (Goyal et al. 2017, sec. 2.1): target = base_lr * global_batch / 256.
 * Gradual warmup (sec. 2.2): from start = min(base_lr, target) to target, by a constant
 * increment every iteration over the first warmup_epochs epochs. Then step decay x0.1 at
 * each listed epoch (30, 60, 80 of 90), or cosine from target to 0 over the remaining epochs.
 */
#ifndef OPTIM_SCHEDULE_H
#define OPTIM_SCHEDULE_H

#include <stdint.h>

enum { OPTIM_SCHED_STEP = 0, OPTIM_SCHED_COSINE = 1 };

typedef struct {
    double base_lr;         /* lr for a global batch of 256 (0.1) */
    int64_t global_batch;   /* k*n (times accumulation) */
    int64_t iters_per_epoch;
    double warmup_epochs;   /* 5 */
    int epochs;             /* 90 */
    int kind;               /* OPTIM_SCHED_STEP or OPTIM_SCHED_COSINE */
    int decay_epochs[8];    /* step: epochs where lr *= decay_factor; 0 ends the list */
    double decay_factor;    /* 0.1 */
} optim_sched;

/* The scaled target lr (after warmup, before decay). */
double optim_sched_target_lr(const optim_sched *s);
/* lr for iteration `iter` (0-based, counted over the whole run). */
double optim_sched_lr(const optim_sched *s, int64_t iter);

#endif
