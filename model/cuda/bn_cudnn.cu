/* model/cuda/bn_cudnn.cu — BatchNorm's training forward and backward on cuDNN, for the CUDA
 * executor's bf16/fp16 modes when IH_CUDNN_BN=cudnn (conv_graph.h's model_cuda_bn_from_env).
 *
 * Which cuDNN BN: cudnnBatchNormalizationForwardTrainingEx / cudnnBatchNormalizationBackwardEx
 * in CUDNN_BATCHNORM_SPATIAL_PERSISTENT mode on NHWC tensors, with the ReLU fused
 * (CUDNN_BATCHNORM_OPS_BN_ACTIVATION) where the net's BN is followed by one. cuDNN 9 marks
 * these calls deprecated in favour of the graph API's norm operations, but they are what
 * PyTorch's channels-last BN calls, and bench/bench_bn.cu measured them on an H100 at 0.65x
 * our kernels' time over ResNet-50's 53 BN layers at n = 256 (0.53x at n = 32), with matching
 * outputs. Deprecation warnings are silenced in this file only.
 *
 * What stays ours (bn.cuh): the eval forward (running statistics, with the ReLU fused; cuDNN's
 * inference BN has no activation), the fp32 exact mode (deterministic, double-precision
 * reductions), a backward whose dx is not wanted or must be added to (cuDNN's persistent
 * kernels are not documented for betaDataDiff != 0), and IH_CUDNN_FUSE=stats (its BN
 * finalizes from the convolution's sums; the two options exclude each other at create).
 * A layer whose call cuDNN refuses (NOT_SUPPORTED or BAD_PARAM; it takes every ResNet-50 shape
 * in bench_bn) is logged once and runs that direction on ours from then on; with
 * IH_CUDNN_BN=cudnn:require (the tests) the refusal is an error naming the layer. The first
 * step of a batch size runs eagerly, so a refusal is settled before a step is captured.
 * The layers' aux keeps its layout: cuDNN saves the batch mean in aux[0, c) and the inverse
 * standard deviation 1/sqrt(var + eps) in aux[c, 2c), which is what our backward reads, so the
 * two backwards are interchangeable after either forward.
 *
 * Buffers, all planned at create for max_batch: one tensor descriptor per layer (re-described
 * per batch size in set_batch, no allocation), one reserve space per layer (the forward's
 * ReLU mask and whatever else the backward reads; per layer, because every BN's forward runs
 * before any backward), the executor's one workspace (grown here to the BN's need).
 * Semantics, as the CPU executor's: running statistics with factor = momentum on the batch's
 * (running variance unbiased), parameter gradients added to (betaParamDiff = 1) times 1 / the
 * fp16 loss scale (alphaParamDiff), dx written.
 */
#include <string.h>

#include <cudnn.h>

#include "core/cuda_check.h"
#include "core/log.h"
#include "model/cuda/net_impl.h"

/* the cuDNN BN there is (see the file header) */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#pragma nv_diag_suppress 1215
#pragma nv_diag_suppress 1444

static const cudnnBatchNormMode_t MODE = CUDNN_BATCHNORM_SPATIAL_PERSISTENT;

static cudnnBatchNormOps_t ops_of(const net *e, int li)
{
    return e->fuse[li] ? CUDNN_BATCHNORM_OPS_BN_ACTIVATION : CUDNN_BATCHNORM_OPS_BN;
}

/* "BN layer 3 (56x56x64, n=32, bf16)" */
static void label(const net *e, int li, int n, char *buf, size_t len)
{
    const model_shape *s = &e->g->tensors[e->g->layers[li].in[0]];
    snprintf(buf, len, "BN layer %d (%dx%dx%d, n=%d, %s%s)", li, s->h, s->w, s->c, n, dt_name(e->lp),
             e->fuse[li] ? ", ReLU fused" : "");
}

static ih_err dnn_fail(const net *e, int li, int n, const char *what, cudnnStatus_t st)
{
    char lb[96], msg[256] = "";
    label(e, li, n, lb, sizeof lb);
    cudnnGetLastErrorString(msg, sizeof msg);
    return ih_fail(IH_E_CUDA, "model cuda: cuDNN BN, %s: %s: %s%s%s; IH_CUDNN_BN=ours runs this net's BN on "
                   "our kernels", lb, what, cudnnGetErrorString(st), *msg ? ": " : "", msg);
}

/* Describes layer li's x for n images; *ws and *rs: the forward's and backward's largest
 * workspace, and the reserve space, cuDNN wants for it. Not SUCCESS: *what names the call. */
static cudnnStatus_t describe(net *e, int li, int n, size_t *ws, size_t *rs, const char **what)
{
    const model_layer *l = &e->g->layers[li];
    const model_shape *s = &e->g->tensors[l->in[0]];
    bn_dnn *b = &e->bnd[li];
    const cudnnBatchNormOps_t ops = ops_of(e, li);
    cudnnActivationDescriptor_t act = e->fuse[li] ? e->relu_act : NULL;
    size_t wf = 0, wb = 0;
    *what = "cudnnSetTensor4dDescriptor";
    cudnnStatus_t st = cudnnSetTensor4dDescriptor(b->x, CUDNN_TENSOR_NHWC, dnn_type(e->lp), n, s->c, s->h, s->w);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if (!b->p_set) {
        *what = "cudnnDeriveBNTensorDescriptor";
        st = cudnnDeriveBNTensorDescriptor(b->p, b->x, MODE);
        if (st != CUDNN_STATUS_SUCCESS) return st;
        b->p_set = 1;
    }
    *what = "cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize";
    st = cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize(e->dnn, MODE, ops, b->x, NULL, b->x, b->p, act,
                                                                   &wf);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    *what = "cudnnGetBatchNormalizationBackwardExWorkspaceSize";
    st = cudnnGetBatchNormalizationBackwardExWorkspaceSize(e->dnn, MODE, ops, b->x, b->x, b->x, NULL, b->x, b->p,
                                                           act, &wb);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    *what = "cudnnGetBatchNormalizationTrainingExReserveSpaceSize";
    st = cudnnGetBatchNormalizationTrainingExReserveSpaceSize(e->dnn, MODE, ops, act, b->x, rs);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    *ws = wf > wb ? wf : wb;
    return CUDNN_STATUS_SUCCESS;
}

static int refused(cudnnStatus_t st);
static ih_err refusal(const net *e, int li, int n, const char *what, cudnnStatus_t st, int *ours);

/* describe, where a refusal (file header) leaves the layer to ours (or, with require, fails) */
static ih_err describe_or_refuse(net *e, int li, int n, size_t *ws, size_t *rs)
{
    const char *what = "";
    *ws = *rs = 0;
    cudnnStatus_t st = describe(e, li, n, ws, rs, &what);
    if (st == CUDNN_STATUS_SUCCESS) return IH_OK;
    *ws = *rs = 0;
    if (refused(st)) return refusal(e, li, n, what, st, &e->bnd[li].ours_fwd);
    return dnn_fail(e, li, n, what, st);
}

ih_err model_cuda_bn_dnn_create(net *e, size_t *ws_need)
{
    const model_graph *g = e->g;
    const int nl = g->nlayers, B = e->max_batch;
    if (e->eps < CUDNN_BN_MIN_EPSILON)
        return ih_fail(IH_E_USAGE, "model cuda: IH_CUDNN_BN=cudnn: BN epsilon %g is below cuDNN's minimum %g; "
                       "use IH_CUDNN_BN=ours", e->eps, (double)CUDNN_BN_MIN_EPSILON);
    e->bnd = (bn_dnn *)calloc((size_t)nl, sizeof(bn_dnn));
    if (!e->bnd) return ih_fail(IH_E_SYS, "model cuda: out of host memory");
    IH_CUDNN(cudnnCreateActivationDescriptor(&e->relu_act));
    IH_CUDNN(cudnnSetActivationDescriptor(e->relu_act, CUDNN_ACTIVATION_RELU, CUDNN_NOT_PROPAGATE_NAN, 0.0));
    size_t rs_total = 0, ws_max = 0;
    int count = 0;
    for (int i = 0; i < nl; i++) {
        const model_layer *l = &g->layers[i];
        if (l->op != MODEL_OP_BN) continue;
        if (e->dt[l->in[0]] != e->lp || e->dt[l->out] != e->lp)
            return ih_fail(IH_E_INTERNAL, "model cuda: BN layer %d reads %s and writes %s, not %s: cuDNN's BN "
                           "is planned for the compute type only", i, dt_name(e->dt[l->in[0]]),
                           dt_name(e->dt[l->out]), dt_name(e->lp));
        bn_dnn *b = &e->bnd[i];
        IH_CUDNN(cudnnCreateTensorDescriptor(&b->x));
        IH_CUDNN(cudnnCreateTensorDescriptor(&b->p));
        size_t ws = 0;
        IH_TRY(describe_or_refuse(e, i, B, &ws, &b->rs_bytes));
        if (b->ours_fwd) continue;
        if (ws > ws_max) ws_max = ws;
        rs_total += (b->rs_bytes + 255) & ~(size_t)255;
        count++;
    }
    IH_CUDA(cudaMalloc((void **)&e->bn_rs, rs_total + 1));
    size_t off = 0;
    for (int i = 0; i < nl; i++) {
        if (g->layers[i].op != MODEL_OP_BN) continue;
        e->bnd[i].rs = e->bn_rs + off;
        off += (e->bnd[i].rs_bytes + 255) & ~(size_t)255;
    }
    if (ws_max > *ws_need) *ws_need = ws_max;
    IH_INFO(IH_LOG_MODEL, "model cuda: BN training on cuDNN (IH_CUDNN_BN=cudnn): %d layers, %.1f MiB of "
            "reserve space, %.1f MiB of workspace at batch %d", count, rs_total / 1048576.0, ws_max / 1048576.0, B);
    return IH_OK;
}

ih_err model_cuda_bn_dnn_set_batch(net *e, int n)
{
    for (int i = 0; i < e->g->nlayers; i++) {
        if (e->g->layers[i].op != MODEL_OP_BN || e->bnd[i].ours_fwd) continue;
        size_t ws = 0, rs = 0;
        IH_TRY(describe_or_refuse(e, i, n, &ws, &rs));
        if (e->bnd[i].ours_fwd) continue;
        if (ws > e->ws_bytes || rs > e->bnd[i].rs_bytes) {
            char lb[96];
            label(e, i, n, lb, sizeof lb);
            return ih_fail(IH_E_INTERNAL, "model cuda: cuDNN BN, %s: needs %zu bytes of workspace and %zu of "
                           "reserve space, more than the %zu and %zu planned at max_batch %d", lb, ws, rs,
                           e->ws_bytes, e->bnd[i].rs_bytes, e->max_batch);
        }
    }
    return IH_OK;
}

/* cuDNN's BN refused the call (as opposed to failing): a NOT_SUPPORTED status of any kind, or
 * BAD_PARAM for a shape its persistent kernels do not take. */
static int refused(cudnnStatus_t st)
{
    return CUDNN_STATUS_CATEGORY(st) == CUDNN_STATUS_NOT_SUPPORTED || CUDNN_STATUS_CATEGORY(st) == CUDNN_STATUS_BAD_PARAM;
}

/* A refusal: with IH_CUDNN_BN=cudnn:require the error, else a WARN and the layer's direction
 * goes to our kernels from now on (*ours set). */
static ih_err refusal(const net *e, int li, int n, const char *what, cudnnStatus_t st, int *ours)
{
    if (e->cudnn_bn == 2) return dnn_fail(e, li, n, what, st);
    char lb[96], msg[256] = "";
    label(e, li, n, lb, sizeof lb);
    cudnnGetLastErrorString(msg, sizeof msg);
    IH_WARN("model cuda: cuDNN BN, %s: %s refused (%s%s%s): this layer runs that direction on our kernels "
            "(IH_CUDNN_BN=cudnn:require makes this an error)", lb, what, cudnnGetErrorString(st), *msg ? ": " : "",
            msg);
    *ours = 1;
    return IH_OK;
}

int model_cuda_bn_dnn_has_fwd(const net *e, const model_layer *l)
{
    return e->bnd && !e->bnd[l - e->g->layers].ours_fwd;
}

ih_err model_cuda_bn_dnn_fwd(net *e, const model_layer *l, int n)
{
    const int li = (int)(l - e->g->layers);
    const int c = e->g->tensors[l->in[0]].c;
    bn_dnn *b = &e->bnd[li];
    float *rm = e->state + l->state_off, *aux = e->aux + e->aux_off[li];
    const float one = 1.f, zero = 0.f;
    cudnnStatus_t st = cudnnBatchNormalizationForwardTrainingEx(
        e->dnn, MODE, ops_of(e, li), &one, &zero, b->x, e->val[l->in[0]], NULL, NULL, b->x, e->val[l->out], b->p,
        e->params + l->w_off, e->params + l->b_off, e->momentum, rm, rm + c, e->eps, aux, aux + c,
        e->fuse[li] ? e->relu_act : NULL, e->ws, e->ws_bytes, b->rs, b->rs_bytes);
    if (refused(st)) return refusal(e, li, n, "cudnnBatchNormalizationForwardTrainingEx", st, &b->ours_fwd);
    if (st != CUDNN_STATUS_SUCCESS) return dnn_fail(e, li, n, "cudnnBatchNormalizationForwardTrainingEx", st);
    return IH_OK;
}

/* cuDNN's backward needs its own forward's reserve space; our backward reads only aux's mean
 * and inverse std, which either forward leaves. */
int model_cuda_bn_dnn_has_bwd(const net *e, const model_layer *l)
{
    const bn_dnn *b = e->bnd ? &e->bnd[l - e->g->layers] : NULL;
    return b && !b->ours_fwd && !b->ours_bwd && l->accum[0] == 0;
}

ih_err model_cuda_bn_dnn_bwd(net *e, const model_layer *l, int n)
{
    const int li = (int)(l - e->g->layers);
    const int c = e->g->tensors[l->in[0]].c;
    bn_dnn *b = &e->bnd[li];
    const float *aux = e->aux + e->aux_off[li];
    const float one = 1.f, zero = 0.f, gs = (float)(1.0 / e->ls);
    void *y = e->val[l->out];
    cudnnStatus_t st = cudnnBatchNormalizationBackwardEx(
        e->dnn, MODE, ops_of(e, li), &one, &zero, &gs, &one, b->x, e->val[l->in[0]], b->x, y, b->x, e->grad[l->out],
        NULL, NULL, b->x, e->grad[l->in[0]], b->p, e->params + l->w_off, e->params + l->b_off, e->grads + l->w_off,
        e->grads + l->b_off, e->eps, aux, aux + c, e->fuse[li] ? e->relu_act : NULL, e->ws, e->ws_bytes, b->rs,
        b->rs_bytes);
    if (refused(st)) return refusal(e, li, n, "cudnnBatchNormalizationBackwardEx", st, &b->ours_bwd);
    if (st != CUDNN_STATUS_SUCCESS) return dnn_fail(e, li, n, "cudnnBatchNormalizationBackwardEx", st);
    return IH_OK;
}

void model_cuda_bn_dnn_destroy(net *e)
{
    if (e->bnd)
        for (int i = 0; i < e->g->nlayers; i++) {
            if (e->bnd[i].x) cudnnDestroyTensorDescriptor(e->bnd[i].x);
            if (e->bnd[i].p) cudnnDestroyTensorDescriptor(e->bnd[i].p);
        }
    free(e->bnd);
    e->bnd = NULL;
    if (e->relu_act) cudnnDestroyActivationDescriptor(e->relu_act);
    e->relu_act = NULL;
    if (e->bn_rs) cudaFree(e->bn_rs);
    e->bn_rs = NULL;
}
