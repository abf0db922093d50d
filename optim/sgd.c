/* optim/sgd.c — see sgd.h. The inner loops are plain and branch-free per segment so the
 * compiler vectorizes them. */
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

void optim_sgd_step(optim_sgd *o, float *params, const float *grads, double lr)
{
    const float m = o->cfg.momentum;
    if (o->cfg.momentum_correction && o->prev_lr > 0 && lr != o->prev_lr) {
        /* Momentum correction (Goyal et al. sec. 2.3): u was accumulated with lr folded in
         * at prev_lr; rescale it so the next update matches the unfolded form at lr. */
        const float c = (float)(lr / o->prev_lr);
        for (size_t i = 0; i < o->n; i++) o->u[i] *= c;
    }
    const float flr = (float)lr;
    for (size_t s = 0; s < o->nsegs; s++) {
        const float wd = o->segs[s].no_decay ? 0.0f : o->cfg.weight_decay;
        float *restrict w = params + o->segs[s].offset;
        const float *restrict g = grads + o->segs[s].offset;
        float *restrict u = o->u + o->segs[s].offset;
        const size_t cnt = o->segs[s].count;
        if (o->cfg.nesterov) {
            for (size_t i = 0; i < cnt; i++) {
                float d = flr * (g[i] + wd * w[i]);
                u[i] = m * u[i] + d;
                w[i] -= m * u[i] + d;
            }
        } else {
            for (size_t i = 0; i < cnt; i++) {
                u[i] = m * u[i] + flr * (g[i] + wd * w[i]);
                w[i] -= u[i];
            }
        }
    }
    o->prev_lr = lr;
}

float *optim_sgd_momentum(optim_sgd *o) { return o->u; }
double optim_sgd_prev_lr(const optim_sgd *o) { return o->prev_lr; }
void optim_sgd_set_prev_lr(optim_sgd *o, double lr) { o->prev_lr = lr; }
