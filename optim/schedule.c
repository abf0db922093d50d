/* optim/schedule.c — see schedule.h. */
#include "schedule.h"

#include <math.h>

double optim_sched_target_lr(const optim_sched *s)
{
    return s->base_lr * (double)s->global_batch / 256.0;
}

double optim_sched_lr(const optim_sched *s, int64_t iter)
{
    const double target = optim_sched_target_lr(s);
    const int64_t ipe = s->iters_per_epoch > 0 ? s->iters_per_epoch : 1;
    const int64_t warm = (int64_t)llround(s->warmup_epochs * (double)ipe);
    if (iter < warm) {
        /* Gradual warmup: lr(0) = start, a constant increment per iteration, lr(warm) = target. */
        const double start = s->base_lr < target ? s->base_lr : target;
        return start + (target - start) * (double)iter / (double)warm;
    }
    const double epoch = (double)iter / (double)ipe;
    if (s->kind == OPTIM_SCHED_COSINE) {
        const double e0 = (double)warm / (double)ipe, e1 = (double)s->epochs;
        if (e1 <= e0) return target;
        double t = (epoch - e0) / (e1 - e0);
        if (t > 1) t = 1;
        return target * 0.5 * (1.0 + cos(3.14159265358979323846 * t));
    }
    double lr = target;
    const int e = (int)(iter / ipe);
    for (int i = 0; i < 8 && s->decay_epochs[i] > 0; i++)
        if (e >= s->decay_epochs[i]) lr *= s->decay_factor;
    return lr;
}
