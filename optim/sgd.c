/* optim/sgd.c — see sgd.h. The inner loops are plain and branch-free per segment so the
 * compiler vectorizes them; the arithmetic per element is optim_sgd_elem (sgd_elem.h), the
 * same function the CUDA backend's kernel runs. Built with -ffp-contract=off (see there). */
#include "sgd.h"

#include <stdlib.h>
#include <string.h>

struct optim_sgd {
    size_t n;
    optim_seg *segs;
    size_t nsegs;
    optim_sgd_cfg cfg;
    float *u;       /* momentum, n floats */
    double prev_lr; /* lr of the previous step; 0 before the first */
};

static int seg_cmp(const void *a, const void *b)
{
    const optim_seg *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

ih_err optim_sgd_create(optim_sgd **out, size_t n, const optim_seg *segs, size_t nsegs,
                        const optim_sgd_cfg *cfg)
{
    *out = NULL;
    optim_sgd *o = calloc(1, sizeof *o);
    if (!o) return ih_fail(IH_E_SYS, "out of memory (optimizer)");
    o->n = n;
    o->cfg = *cfg;
    o->nsegs = nsegs;
    o->segs = malloc((nsegs ? nsegs : 1) * sizeof *o->segs);
    o->u = calloc(n ? n : 1, sizeof *o->u);
    if (!o->segs || !o->u) { optim_sgd_destroy(o); return ih_fail(IH_E_SYS, "out of memory (optimizer, %zu floats)", n); }
    memcpy(o->segs, segs, nsegs * sizeof *segs);
    qsort(o->segs, nsegs, sizeof *o->segs, seg_cmp);
    size_t at = 0;
    for (size_t i = 0; i < nsegs; i++) {
        if (o->segs[i].offset != at) {
            optim_sgd_destroy(o);
            return ih_fail(IH_E_INTERNAL, "optimizer segment table has a gap or overlap at offset %zu", at);
        }
        at += o->segs[i].count;
    }
    if (at != n) {
        optim_sgd_destroy(o);
        return ih_fail(IH_E_INTERNAL, "optimizer segments cover %zu of %zu parameters", at, n);
    }
    *out = o;
    return IH_OK;
}

void optim_sgd_destroy(optim_sgd *o)
{
    if (!o) return;
    free(o->segs);
    free(o->u);
    free(o);
}

optim_sgd_plan optim_sgd_plan_step(optim_sgd *o, double lr)
{
    optim_sgd_plan p = {.lr = (float)lr, .u_scale = 1.0f, .momentum = o->cfg.momentum,
                        .weight_decay = o->cfg.weight_decay, .nesterov = o->cfg.nesterov};
    /* Momentum correction (Goyal et al. sec. 2.3): u was accumulated with lr folded in at
     * prev_lr; rescale it so the next update matches the unfolded form at lr. */
    if (o->cfg.momentum_correction && o->prev_lr > 0 && lr != o->prev_lr)
        p.u_scale = (float)(lr / o->prev_lr);
    o->prev_lr = lr;
    return p;
}

void optim_sgd_step(optim_sgd *o, float *params, const float *grads, double lr)
{
    const optim_sgd_plan p = optim_sgd_plan_step(o, lr);
    for (size_t s = 0; s < o->nsegs; s++) {
        const float wd = o->segs[s].no_decay ? 0.0f : p.weight_decay;
        float *restrict w = params + o->segs[s].offset;
        const float *restrict g = grads + o->segs[s].offset;
        float *restrict u = o->u + o->segs[s].offset;
        const size_t cnt = o->segs[s].count;
        /* one loop per form, so the branch is not inside the vectorised loop */
        if (p.nesterov)
            for (size_t i = 0; i < cnt; i++)
                w[i] = optim_sgd_elem(w[i], g[i], &u[i], p.u_scale, p.momentum, p.lr, wd, 1);
        else
            for (size_t i = 0; i < cnt; i++)
                w[i] = optim_sgd_elem(w[i], g[i], &u[i], p.u_scale, p.momentum, p.lr, wd, 0);
    }
}

size_t optim_sgd_segments(const optim_sgd *o, const optim_seg **segs)
{
    if (segs) *segs = o->segs;
    return o->nsegs;
}

size_t optim_sgd_size(const optim_sgd *o) { return o->n; }
const optim_sgd_cfg *optim_sgd_config(const optim_sgd *o) { return &o->cfg; }

float *optim_sgd_momentum(optim_sgd *o) { return o->u; }
double optim_sgd_prev_lr(const optim_sgd *o) { return o->prev_lr; }
void optim_sgd_set_prev_lr(optim_sgd *o, double lr) { o->prev_lr = lr; }
