/* model/cpu/net.c — runs a model_graph on the CPU: forward in layer order, backward in
 * reverse layer order (so parameter gradients complete from the end of the flat buffer
 * towards its start). Every tensor has its own value and gradient buffer for max_batch
 * images; an in-place ReLU shares its input's. Which backward write overwrites a gradient
 * and which adds to it comes from the graph (model_layer.accum), so no buffer is cleared
 * per step.
 */
#include <stdlib.h>
#include <string.h>

#include "model/cpu/layers.h"
#include "model/cpu/net.h"

struct MODEL_FN(model_cpu_net) {
    const model_graph *g;
    int max_batch;
    double momentum, eps;
    real **val, **grad;        /* per tensor; grad[0] == NULL (the input needs none) */
    real *val_arena, *grad_arena;
    size_t *aux_off;           /* per layer: BN saved mean/invstd, in aux */
    real *aux;
    size_t *arg_off;           /* per layer: MAXPOOL argmax, in argmax */
    int32_t *argmax;
    real *ws;                  /* im2col workspace */
    size_t ws_len;
    void *bn_scratch;
};

typedef MODEL_FN(model_cpu_net) net;

static size_t tsize(const model_graph *g, int t)
{
    const model_shape *s = &g->tensors[t];
    return (size_t)s->h * s->w * s->c;
}

static model_conv_shape conv_shape(const model_graph *g, const model_layer *l, int n)
{
    const model_shape *x = &g->tensors[l->in[0]], *y = &g->tensors[l->out];
    model_conv_shape sh = {n, x->h, x->w, x->c, l->k, l->r, l->s, l->stride, l->pad, y->h, y->w};
    return sh;
}

void MODEL_FN(model_cpu_net_destroy)(net *e)
{
    if (!e) return;
    free(e->val);
    free(e->grad);
    free(e->val_arena);
    free(e->grad_arena);
    free(e->aux_off);
    free(e->aux);
    free(e->arg_off);
    free(e->argmax);
    free(e->ws);
    free(e->bn_scratch);
    free(e);
}

ih_err MODEL_FN(model_cpu_net_create)(net **out, const model_graph *g, int max_batch,
                                      double bn_momentum, double bn_eps)
{
    *out = NULL;
    if (max_batch < 1) return ih_fail(IH_E_USAGE, "model: max_batch %d must be >= 1", max_batch);
    net *e = calloc(1, sizeof *e);
    if (!e) goto oom;
    e->g = g;
    e->max_batch = max_batch;
    e->momentum = bn_momentum;
    e->eps = bn_eps;
    size_t nt = (size_t)g->ntensors, nl = (size_t)g->nlayers;
    e->val = calloc(nt, sizeof *e->val);
    e->grad = calloc(nt, sizeof *e->grad);
    e->aux_off = calloc(nl, sizeof *e->aux_off);
    e->arg_off = calloc(nl, sizeof *e->arg_off);
    if (!e->val || !e->grad || !e->aux_off || !e->arg_off) goto oom;

    /* Every tensor id is one buffer; an in-place ReLU writes its input's id (out == in). */
    size_t per_img = 0, per_img_grad = 0;
    for (int t = 0; t < g->ntensors; t++) {
        per_img += tsize(g, t);
        if (t > 0) per_img_grad += tsize(g, t);
    }
    size_t aux = 0, args = 0, ws = 0, scratch = 0;
    for (int i = 0; i < g->nlayers; i++) {
        const model_layer *l = &g->layers[i];
        if (l->op == MODEL_OP_BN) {
            e->aux_off[i] = aux;
            aux += 2 * (size_t)g->tensors[l->out].c;
            size_t sb = MODEL_FN(model_bn_scratch_bytes)(g->tensors[l->out].c);
            if (sb > scratch) scratch = sb;
        } else if (l->op == MODEL_OP_MAXPOOL) {
            e->arg_off[i] = args;
            args += tsize(g, l->out);
        } else if (l->op == MODEL_OP_CONV) {
            model_conv_shape sh = conv_shape(g, l, max_batch);
            size_t w = MODEL_FN(model_conv_ws_len)(&sh, MODEL_CPU_WS_CAP);
            if (w > ws) ws = w;
        }
    }
    if (per_img > ((size_t)1 << 40) / sizeof(real) / (size_t)max_batch) {
        MODEL_FN(model_cpu_net_destroy)(e);
        return ih_fail(IH_E_USAGE, "model: %zu floats of activations per image x max_batch %d "
                       "is too large; lower the batch size or image size", per_img, max_batch);
    }
    e->val_arena = malloc(per_img * max_batch * sizeof(real));
    e->grad_arena = malloc(per_img_grad * max_batch * sizeof(real));
    e->aux = malloc((aux + 1) * sizeof(real));
    e->argmax = malloc((args * max_batch + 1) * sizeof(int32_t));
    e->ws = malloc((ws + 1) * sizeof(real));
    e->ws_len = ws;
    e->bn_scratch = malloc(scratch + 1);
    if (!e->val_arena || !e->grad_arena || !e->aux || !e->argmax || !e->ws || !e->bn_scratch)
        goto oom;
    size_t vo = 0, go = 0;
    for (int t = 0; t < g->ntensors; t++) {
        e->val[t] = e->val_arena + vo * max_batch;
        vo += tsize(g, t);
        if (t > 0) {
            e->grad[t] = e->grad_arena + go * max_batch;
            go += tsize(g, t);
        }
    }
    for (int i = 0; i < g->nlayers; i++)
        IH_ASSERT(g->layers[i].op != MODEL_OP_RELU || g->layers[i].out == g->layers[i].in[0],
                  "model: layer %d: only in-place ReLU is supported", i);
    *out = e;
    return IH_OK;
oom:
    MODEL_FN(model_cpu_net_destroy)(e);
    return ih_fail(IH_E_SYS, "model: out of memory allocating activations for max_batch %d; "
                   "lower the batch size", max_batch);
}

const real *MODEL_FN(model_cpu_logits)(const net *e) { return e->val[e->g->layers[e->g->nlayers - 1].out]; }

void MODEL_FN(model_cpu_forward)(net *e, const real *params, real *state, const uint8_t *images,
                                 int n, int train)
{
    const model_graph *g = e->g;
    IH_ASSERT(n >= 1 && n <= e->max_batch, "model: batch %d outside [1, %d]", n, e->max_batch);
    MODEL_FN(model_input_normalize)(images, e->val[0], (size_t)n * g->image_size * g->image_size);
    for (int i = 0; i < g->nlayers; i++) {
        const model_layer *l = &g->layers[i];
        const model_shape *xs = &g->tensors[l->in[0]], *ys = &g->tensors[l->out];
        const real *x = e->val[l->in[0]];
        real *y = e->val[l->out];
        size_t m = (size_t)n * xs->h * xs->w;
        switch (l->op) {
        case MODEL_OP_CONV: {
            model_conv_shape sh = conv_shape(g, l, n);
            MODEL_FN(model_conv_fwd)(&sh, x, params + l->w_off, y, e->ws, e->ws_len);
            break;
        }
        case MODEL_OP_BN: {
            real *rm = state + l->state_off, *rv = rm + xs->c;
            if (train)
                MODEL_FN(model_bn_fwd_train)(m, xs->c, x, params + l->w_off, params + l->b_off, y,
                                             e->aux + e->aux_off[i], e->aux + e->aux_off[i] + xs->c,
                                             rm, rv, e->momentum, e->eps, e->bn_scratch);
            else
                MODEL_FN(model_bn_fwd_eval)(m, xs->c, x, params + l->w_off, params + l->b_off, rm,
                                            rv, e->eps, y, e->bn_scratch);
            break;
        }
        case MODEL_OP_RELU: MODEL_FN(model_relu_fwd)(m * xs->c, x, y); break;
        case MODEL_OP_MAXPOOL:
            MODEL_FN(model_maxpool_fwd)(n, xs->h, xs->w, xs->c, l->r, l->stride, l->pad, ys->h,
                                        ys->w, x, y, e->argmax + e->arg_off[i] * e->max_batch);
            break;
        case MODEL_OP_AVGPOOL: MODEL_FN(model_avgpool_fwd)(n, xs->h * xs->w, xs->c, x, y); break;
        case MODEL_OP_FC:
            MODEL_FN(model_fc_fwd)(n, xs->c, l->k, x, params + l->w_off, params + l->b_off, y);
            break;
        case MODEL_OP_ADD: MODEL_FN(model_add_fwd)(m * xs->c, x, e->val[l->in[1]], y); break;
        }
    }
}

void MODEL_FN(model_cpu_loss)(net *e, const int32_t *labels, int n, double scale,
                              double *loss_sum, int *correct)
{
    int t = e->g->layers[e->g->nlayers - 1].out;
    MODEL_FN(model_softmax_ce)(n, e->g->num_classes, e->val[t], labels, scale, e->grad[t],
                               loss_sum, correct);
}

void MODEL_FN(model_cpu_backward)(net *e, const real *params, real *grads, int n,
                                  model_grad_ready_fn ready, void *ready_arg)
{
    const model_graph *g = e->g;
    for (int i = g->nlayers - 1; i >= 0; i--) {
        const model_layer *l = &g->layers[i];
        const model_shape *xs = &g->tensors[l->in[0]], *ys = &g->tensors[l->out];
        const real *x = e->val[l->in[0]], *dy = e->grad[l->out];
        real *dx = l->accum[0] >= 0 ? e->grad[l->in[0]] : NULL;
        int acc = l->accum[0] > 0;
        size_t m = (size_t)n * xs->h * xs->w;
        switch (l->op) {
        case MODEL_OP_CONV: {
            model_conv_shape sh = conv_shape(g, l, n);
            MODEL_FN(model_conv_bwd)(&sh, x, params + l->w_off, dy, grads + l->w_off, dx, acc,
                                     e->ws, e->ws_len);
            break;
        }
        case MODEL_OP_BN:
            MODEL_FN(model_bn_bwd)(m, xs->c, x, dy, params + l->w_off, e->aux + e->aux_off[i],
                                   e->aux + e->aux_off[i] + xs->c, grads + l->w_off,
                                   grads + l->b_off, dx, acc, e->bn_scratch);
            break;
        case MODEL_OP_RELU:
            MODEL_FN(model_relu_bwd)(m * xs->c, e->val[l->out], e->grad[l->out], e->grad[l->out], 0);
            break;
        case MODEL_OP_MAXPOOL:
            if (dx)
                MODEL_FN(model_maxpool_bwd)(n, xs->h, xs->w, xs->c, ys->h, ys->w, dy,
                                            e->argmax + e->arg_off[i] * e->max_batch, dx, acc);
            break;
        case MODEL_OP_AVGPOOL:
            if (dx) MODEL_FN(model_avgpool_bwd)(n, xs->h * xs->w, xs->c, dy, dx, acc);
            break;
        case MODEL_OP_FC:
            MODEL_FN(model_fc_bwd)(n, xs->c, l->k, x, params + l->w_off, dy, grads + l->w_off,
                                   grads + l->b_off, dx, acc);
            break;
        case MODEL_OP_ADD:
            MODEL_FN(model_add_bwd)(m * xs->c, dy, dx, acc,
                                    l->accum[1] >= 0 ? e->grad[l->in[1]] : NULL, l->accum[1] > 0);
            break;
        }
        if (ready && (l->op == MODEL_OP_CONV || l->op == MODEL_OP_BN || l->op == MODEL_OP_FC))
            ready(ready_arg, l->w_off);
    }
}
