/* model/cuda/conv.cu — the CUDA executor's convolutions (net_impl.h): per layer, the plans
 * made at create on cuDNN's backend graph API (conv_graph.h; the default, and always with
 * IH_CUDNN_FUSE=stats) or, with IH_CUDNN_API=legacy, on its legacy API (descriptors, the
 * heuristics' algorithm per direction, replaced in bf16/fp16 by cudnnFind's measured
 * fastest), and the three directions' dispatch on whichever the layer has. net.cu's file
 * header describes the policies.
 */
#include <string.h>

#include "core/cuda_check.h"
#include "core/log.h"
#include "model/cuda/net_impl.h"

/* ---- convolution plans ---- */

ih_err model_cuda_conv_set_batch(net *e, conv_plan *p, const model_layer *l, int n)
{
    const model_shape *xs = &e->g->tensors[l->in[0]], *ys = &e->g->tensors[l->out];
    cudnnDataType_t t = dnn_type(e->dt[l->in[0]]);
    int c = l->in[0] == 0 ? e->cpad : xs->c;
    IH_CUDNN(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NHWC, t, n, c, xs->h, xs->w));
    IH_CUDNN(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NHWC, t, n, ys->c, ys->h, ys->w));
    return IH_OK;
}

/* Index of the first acceptable result: supported, fits, deterministic (if any is); in
 * exact mode the descriptors keep FMA math, which rules tensor-core (TF32) kernels out.
 * -1 if none. */
#define PICK_ALGO(res, cnt, cap, out)                                                     \
    do {                                                                                  \
        (out) = -1;                                                                       \
        for (int pass = 0; pass < 2 && (out) < 0; pass++)                                 \
            for (int i_ = 0; i_ < (cnt); i_++) {                                          \
                if ((res)[i_].status != CUDNN_STATUS_SUCCESS || (res)[i_].memory > (cap)) continue; \
                if (pass == 0 && (res)[i_].determinism != CUDNN_DETERMINISTIC) continue;  \
                (out) = i_;                                                               \
                break;                                                                    \
            }                                                                             \
    } while (0)


/* The graph API (the default): the layer's plans on the backend graph API at max_batch, on the buffers
 * the step will use (their alignment is promised to cuDNN). Grows *ws_need. */
static ih_err conv_graph_plan(net *e, int li, size_t *ws_need)
{
    const model_layer *l = &e->g->layers[li];
    const model_shape *xs = &e->g->tensors[l->in[0]], *ys = &e->g->tensors[l->out];
    const int dt = e->dt[l->in[0]], padded = l->in[0] == 0, lp = dt != F32;
    if (ys->h != (xs->h + 2 * l->pad - l->r) / l->stride + 1 || ys->w != (xs->w + 2 * l->pad - l->s) / l->stride + 1)
        return ih_fail(IH_E_INTERNAL, "model cuda: conv layer %d: output %dx%d does not follow from its input",
                       li, ys->h, ys->w);
    char label[160];
    snprintf(label, sizeof label, "conv layer %d (%dx%dx%d -> %d, %dx%d/%d, %s)", li, xs->h, xs->w,
             padded ? e->cpad : xs->c, l->k, l->r, l->s, l->stride, dt_name(dt));
    model_cuda_conv_graph_desc d;
    memset(&d, 0, sizeof d);
    d.n = e->max_batch;
    d.h = xs->h;
    d.w = xs->w;
    d.c = padded ? e->cpad : xs->c;
    d.k = l->k;
    d.r = l->r;
    d.s = l->s;
    d.stride = l->stride;
    d.pad = l->pad;
    d.type = dnn_type(dt);
    d.exact = e->prec == MODEL_PREC_FP32;
    d.bwd_data = l->accum[0] >= 0;
    d.beta_data = (float)accum_data(l);
    d.beta_filter = (float)accum_filter(e, l);
    d.xp = e->val[l->in[0]];
    d.yp = e->val[l->out];
    d.dxp = d.bwd_data ? e->grad[l->in[0]] : NULL;
    d.dyp = e->grad[l->out];
    d.wp = padded ? e->wpad : lp ? lp_at(e->params16, l->w_off) : (const void *)(e->params + l->w_off);
    d.dwp = padded ? e->dwpad : lp ? lp_at(e->wgrad16, l->w_off) : (const void *)(e->grads + l->w_off);
    d.label = label;
    /* IH_CUDNN_FUSE=stats: the BN right after this conv, on its output, gets the statistics from
     * the conv (forward() relies on this rule: layer li + 1, partial, that BN's running mean) */
    const model_layer *next = li + 1 < e->g->nlayers ? &e->g->layers[li + 1] : NULL;
    if (e->fuse_stats && lp && next && next->op == MODEL_OP_BN && next->in[0] == l->out) {
        d.fwd_stats = 1;
        d.stats_required = e->fuse_stats == 2;
        d.shiftp = e->state + next->state_off;
        d.sump = e->partial;
        d.sqsump = e->partial + l->k;
    }
    IH_TRY(model_cuda_conv_graph_create(&e->conv[li].gp, e->dnn, &d, WS_CAP));
    size_t ws = model_cuda_conv_graph_workspace(e->conv[li].gp);
    if (ws > *ws_need) *ws_need = ws;
    return IH_OK;
}

ih_err model_cuda_conv_plan_create(net *e, int li, size_t *ws_need)
{
    if (e->graph_api) return conv_graph_plan(e, li, ws_need);
    const model_graph *g = e->g;
    const model_layer *l = &g->layers[li];
    conv_plan *p = &e->conv[li];
    const model_shape *xs = &g->tensors[l->in[0]];
    int dt = e->dt[l->in[0]];
    int exact = e->prec == MODEL_PREC_FP32;
    IH_CUDNN(cudnnCreateTensorDescriptor(&p->x));
    IH_CUDNN(cudnnCreateTensorDescriptor(&p->y));
    IH_CUDNN(cudnnCreateFilterDescriptor(&p->w));
    IH_CUDNN(cudnnCreateConvolutionDescriptor(&p->cf));
    IH_CUDNN(cudnnCreateConvolutionDescriptor(&p->cd));
    IH_CUDNN(cudnnCreateConvolutionDescriptor(&p->cw));
    IH_TRY(model_cuda_conv_set_batch(e, p, l, e->max_batch));
    IH_CUDNN(cudnnSetFilter4dDescriptor(p->w, dnn_type(dt), CUDNN_TENSOR_NHWC, l->k,
                                        l->in[0] == 0 ? e->cpad : xs->c, l->r, l->s));
    cudnnMathType_t math = exact ? CUDNN_FMA_MATH : dt != F32 ? CUDNN_TENSOR_OP_MATH : CUDNN_DEFAULT_MATH;
    cudnnConvolutionDescriptor_t cds[3] = {p->cf, p->cd, p->cw};
    for (int i = 0; i < 3; i++) {
        IH_CUDNN(cudnnSetConvolution2dDescriptor(cds[i], l->pad, l->pad, l->stride, l->stride, 1, 1,
                                                 CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
        IH_CUDNN(cudnnSetConvolutionMathType(cds[i], math));
    }
    int cnt = 0, q;
    cudnnConvolutionFwdAlgoPerf_t fr[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    IH_CUDNN(cudnnGetConvolutionForwardAlgorithm_v7(e->dnn, p->x, p->w, p->cf, p->y,
                                                    CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &cnt, fr));
    PICK_ALGO(fr, cnt, WS_CAP, q);
    if (q < 0) { /* heuristics found nothing: take the first algorithm that says it can */
        for (int a = 0; a < CUDNN_CONVOLUTION_FWD_ALGO_COUNT && q < 0; a++) {
            size_t sz = 0;
            if (cudnnGetConvolutionForwardWorkspaceSize(e->dnn, p->x, p->w, p->cf, p->y,
                    (cudnnConvolutionFwdAlgo_t)a, &sz) == CUDNN_STATUS_SUCCESS && sz <= WS_CAP) {
                q = 0;
                fr[0].algo = (cudnnConvolutionFwdAlgo_t)a;
                fr[0].memory = sz;
                fr[0].mathType = math;
            }
        }
        IH_WARN("model cuda: conv layer %d: no forward algorithm from cuDNN's heuristics (%d "
                "results, first status %s); fallback: %d", li, cnt,
                cnt ? cudnnGetErrorString(fr[0].status) : "-", q < 0 ? -1 : (int)fr[0].algo);
        if (q < 0) goto none;
    }
    p->fa = fr[q].algo;
    if (!exact) IH_CUDNN(cudnnSetConvolutionMathType(p->cf, fr[q].mathType));
    if (fr[q].memory > *ws_need) *ws_need = fr[q].memory;

    cudnnConvolutionBwdDataAlgoPerf_t dr[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    if (l->accum[0] >= 0) {
        IH_CUDNN(cudnnGetConvolutionBackwardDataAlgorithm_v7(
            e->dnn, p->w, p->y, p->cd, p->x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &cnt, dr));
        PICK_ALGO(dr, cnt, WS_CAP, q);
        if (q < 0) {
            for (int a = 0; a < CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT && q < 0; a++) {
                size_t sz = 0;
                if (cudnnGetConvolutionBackwardDataWorkspaceSize(e->dnn, p->w, p->y, p->cd, p->x,
                        (cudnnConvolutionBwdDataAlgo_t)a, &sz) == CUDNN_STATUS_SUCCESS && sz <= WS_CAP) {
                    q = 0;
                    dr[0].algo = (cudnnConvolutionBwdDataAlgo_t)a;
                    dr[0].memory = sz;
                    dr[0].mathType = math;
                }
            }
            IH_WARN("model cuda: conv layer %d: no backward-data algorithm from the heuristics; "
                    "fallback: %d", li, q < 0 ? -1 : (int)dr[0].algo);
            if (q < 0) goto none;
        }
        p->da = dr[q].algo;
        if (!exact) IH_CUDNN(cudnnSetConvolutionMathType(p->cd, dr[q].mathType));
        if (dr[q].memory > *ws_need) *ws_need = dr[q].memory;
    }
    cudnnConvolutionBwdFilterAlgoPerf_t wr[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    IH_CUDNN(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
        e->dnn, p->x, p->y, p->cw, p->w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &cnt, wr));
    PICK_ALGO(wr, cnt, WS_CAP, q);
    if (q < 0) {
        for (int a = 0; a < CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT && q < 0; a++) {
            size_t sz = 0;
            if (cudnnGetConvolutionBackwardFilterWorkspaceSize(e->dnn, p->x, p->y, p->cw, p->w,
                    (cudnnConvolutionBwdFilterAlgo_t)a, &sz) == CUDNN_STATUS_SUCCESS && sz <= WS_CAP) {
                q = 0;
                wr[0].algo = (cudnnConvolutionBwdFilterAlgo_t)a;
                wr[0].memory = sz;
                wr[0].mathType = math;
            }
        }
        IH_WARN("model cuda: conv layer %d: no backward-filter algorithm from the heuristics; "
                "fallback: %d", li, q < 0 ? -1 : (int)wr[0].algo);
        if (q < 0) goto none;
    }
    p->wa = wr[q].algo;
    if (!exact) IH_CUDNN(cudnnSetConvolutionMathType(p->cw, wr[q].mathType));
    if (wr[q].memory > *ws_need) *ws_need = wr[q].memory;
    { /* the heuristics' memory figure is an estimate: ask for the exact sizes too */
        size_t a = 0, b = 0, c = 0;
        IH_CUDNN(cudnnGetConvolutionForwardWorkspaceSize(e->dnn, p->x, p->w, p->cf, p->y, p->fa, &a));
        if (l->accum[0] >= 0)
            IH_CUDNN(cudnnGetConvolutionBackwardDataWorkspaceSize(e->dnn, p->w, p->y, p->cd, p->x,
                                                                  p->da, &b));
        IH_CUDNN(cudnnGetConvolutionBackwardFilterWorkspaceSize(e->dnn, p->x, p->y, p->cw, p->w,
                                                                p->wa, &c));
        if (a > *ws_need) *ws_need = a;
        if (b > *ws_need) *ws_need = b;
        if (c > *ws_need) *ws_need = c;
    }
    IH_TRACE(IH_LOG_MODEL, "conv layer %d (%s, %dx%dx%d -> %d, %dx%d/%d): algos fwd %d bwd-data %d "
             "bwd-filter %d", li, dt_name(dt), xs->h, xs->w, xs->c, l->k, l->r,
             l->s, l->stride, (int)p->fa, (int)p->da, (int)p->wa);
    return IH_OK;
none:
    return ih_fail(IH_E_CUDA, "cuDNN: no usable %s algorithm for conv layer %d (%dx%dx%d -> %d, "
                   "kernel %dx%d, stride %d, %s%s); this cuDNN build does not support the shape",
                   "convolution", li, xs->h, xs->w, xs->c, l->k, l->r, l->s, l->stride,
                   dt_name(dt), exact ? ", FMA math" : "");
}

/* bf16 (speed) mode: replaces the heuristics' choices by cuDNN's measured ones
 * (cudnnFind*AlgorithmEx on the real buffers at max_batch, as PyTorch's cudnn.benchmark),
 * with at most `cap` bytes of workspace. Fastest deterministic algorithm unless a
 * non-deterministic one is more than 10% faster (bf16 results are compared by L2, not bits).
 * The calls write into activations, activation gradients and the bf16 weight-gradient
 * scratch, all of which a step overwrites before reading. Grows *ws_need. */
#define FIND_PICK(res, cnt, cap, out)                                                      \
    do {                                                                                   \
        int any_ = -1, det_ = -1;                                                          \
        for (int i_ = 0; i_ < (cnt); i_++) {                                               \
            if ((res)[i_].status != CUDNN_STATUS_SUCCESS || (res)[i_].memory > (cap)) continue; \
            if (any_ < 0) any_ = i_;                                                       \
            if (det_ < 0 && (res)[i_].determinism == CUDNN_DETERMINISTIC) det_ = i_;       \
        }                                                                                  \
        (out) = det_ >= 0 && (res)[det_].time <= 1.1f * (res)[any_].time ? det_ : any_;    \
    } while (0)

ih_err model_cuda_conv_find(net *e, int li, void *ws, size_t cap, size_t *ws_need)
{
    const model_layer *l = &e->g->layers[li];
    conv_plan *p = &e->conv[li];
    int padded = l->in[0] == 0, cnt = 0, q = -1;
    const void *w = padded ? e->wpad : (const void *)lp_at(e->params16, l->w_off);
    void *dw = padded ? e->dwpad : lp_at(e->wgrad16, l->w_off);
    cudnnConvolutionFwdAlgoPerf_t fr[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    IH_CUDNN(cudnnSetConvolutionMathType(p->cf, CUDNN_TENSOR_OP_MATH));
    IH_CUDNN(cudnnFindConvolutionForwardAlgorithmEx(e->dnn, p->x, e->val[l->in[0]], p->w, w, p->cf,
                                                    p->y, e->val[l->out], CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                    &cnt, fr, ws, cap));
    FIND_PICK(fr, cnt, cap, q);
    if (q >= 0) {
        p->fa = fr[q].algo;
        if (fr[q].memory > *ws_need) *ws_need = fr[q].memory;
        IH_CUDNN(cudnnSetConvolutionMathType(p->cf, fr[q].mathType));
    }
    if (l->accum[0] >= 0) {
        cudnnConvolutionBwdDataAlgoPerf_t dr[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        IH_CUDNN(cudnnSetConvolutionMathType(p->cd, CUDNN_TENSOR_OP_MATH));
        IH_CUDNN(cudnnFindConvolutionBackwardDataAlgorithmEx(
            e->dnn, p->w, w, p->y, e->grad[l->out], p->cd, p->x, e->grad[l->in[0]],
            CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &cnt, dr, ws, cap));
        FIND_PICK(dr, cnt, cap, q);
        if (q >= 0) {
            p->da = dr[q].algo;
            if (dr[q].memory > *ws_need) *ws_need = dr[q].memory;
            IH_CUDNN(cudnnSetConvolutionMathType(p->cd, dr[q].mathType));
        }
    }
    cudnnConvolutionBwdFilterAlgoPerf_t wr[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    IH_CUDNN(cudnnSetConvolutionMathType(p->cw, CUDNN_TENSOR_OP_MATH));
    IH_CUDNN(cudnnFindConvolutionBackwardFilterAlgorithmEx(
        e->dnn, p->x, e->val[l->in[0]], p->y, e->grad[l->out], p->cw, p->w, dw,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &cnt, wr, ws, cap));
    FIND_PICK(wr, cnt, cap, q);
    if (q >= 0) {
        p->wa = wr[q].algo;
        if (wr[q].memory > *ws_need) *ws_need = wr[q].memory;
        IH_CUDNN(cudnnSetConvolutionMathType(p->cw, wr[q].mathType));
    }
    size_t a = 0, b = 0, c = 0; /* exact sizes for the chosen algorithms and math types */
    IH_CUDNN(cudnnGetConvolutionForwardWorkspaceSize(e->dnn, p->x, p->w, p->cf, p->y, p->fa, &a));
    if (l->accum[0] >= 0)
        IH_CUDNN(cudnnGetConvolutionBackwardDataWorkspaceSize(e->dnn, p->w, p->y, p->cd, p->x, p->da, &b));
    IH_CUDNN(cudnnGetConvolutionBackwardFilterWorkspaceSize(e->dnn, p->x, p->y, p->cw, p->w, p->wa, &c));
    if (a > *ws_need) *ws_need = a;
    if (b > *ws_need) *ws_need = b;
    if (c > *ws_need) *ws_need = c;
    IH_TRACE(IH_LOG_MODEL, "conv layer %d: measured algos fwd %d bwd-data %d bwd-filter %d", li,
             (int)p->fa, (int)p->da, (int)p->wa);
    return IH_OK;
}

/* The three convolution directions on the API chosen at create; alpha 1, beta from
 * accum_data/accum_filter (baked into the graph plans). Queued on s; may be captured. */
ih_err model_cuda_conv_fwd(net *e, conv_plan *p, const void *x, const void *w, void *y)
{
    static const float one = 1.0f, zero = 0.0f;
    if (p->gp) return model_cuda_conv_graph_fwd(p->gp, x, w, y, e->ws);
    IH_CUDNN(cudnnConvolutionForward(e->dnn, &one, p->x, x, p->w, w, p->cf, p->fa, e->ws, e->ws_bytes, &zero,
                                     p->y, y));
    return IH_OK;
}

ih_err model_cuda_conv_bwd_data(net *e, conv_plan *p, const model_layer *l, const void *w, const void *dy, void *dx)
{
    static const float one = 1.0f, zero = 0.0f;
    if (p->gp) return model_cuda_conv_graph_bwd_data(p->gp, dy, w, dx, e->ws);
    IH_CUDNN(cudnnConvolutionBackwardData(e->dnn, &one, p->w, w, p->y, dy, p->cd, p->da, e->ws, e->ws_bytes,
                                          accum_data(l) ? &one : &zero, p->x, dx));
    return IH_OK;
}

ih_err model_cuda_conv_bwd_filter(net *e, conv_plan *p, const model_layer *l, const void *x, const void *dy, void *dw)
{
    static const float one = 1.0f, zero = 0.0f;
    if (p->gp) return model_cuda_conv_graph_bwd_filter(p->gp, x, dy, dw, e->ws);
    IH_CUDNN(cudnnConvolutionBackwardFilter(e->dnn, &one, p->x, x, p->y, dy, p->cw, p->wa, e->ws, e->ws_bytes,
                                            accum_filter(e, l) ? &one : &zero, p->w, dw));
    return IH_OK;
}
