/* model/cuda/bn_cudnn.cu — BatchNorm's training forward and backward on cuDNN, for the CUDA
 * executor's bf16/fp16 modes: the default, and IH_CUDNN_BN=cudnn[+add][:require]
 * (conv_graph.h's model_cuda_bn_from_env; IH_CUDNN_BN=ours turns it off).
 * Made the default after its first GPU run (H200, scripts/gpu_check.sh): every GPU test passed
 * with it (:require), and the ResNet-50 bf16 step went from 3273 to 4348 img/s at n = 32 and
 * from 4891 to 6478 at n = 256 with the joins (4169 / 6098 without).
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
 * finalizes from the convolution's sums; asked for together they are a usage error, while the
 * default quietly gives way to the fused statistics), and a BN epsilon below cuDNN's minimum.
 * Caveat: the persistent kernels may reduce with scaled integer atomics, which can overflow for
 * some input ranges (why Paddle leaves this mode off by default); IH_CUDNN_BN=ours is the way
 * out if BN statistics go bad.
 * IH_CUDNN_BN=cudnn+add (and the default): a BN that is the branch of a residual join relu(BN(x) + z) (the
 * block's last BN; the ADD, its fused ReLU and the BN's output read by nothing else) is
 * deferred to the ADD's place and runs there as one BN_ADD_ACTIVATION call: y into the ADD's
 * output, and backward dx, dz (the shortcut's gradient, which the ADD writes first in
 * backward order, so no accumulation is needed) and the BN's parameter gradients. The
 * BN's own output tensor is then never written. Its grad-ready point (after its own place in
 * backward) still comes after its gradients are final.
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
 * (running variance unbiased), parameter gradients added to (cuDNN writes them to aux[2c, 4c)
 * times 1 / the fp16 loss scale, alphaParamDiff; a kernel adds them), dx written.
 */
#include <stdlib.h>
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

/* cuDNN's BN refused (as opposed to failed): a NOT_SUPPORTED status of any kind; at planning
 * (the size queries, describe) also BAD_PARAM, its answer for a shape or type its persistent
 * kernels do not take. A BAD_PARAM from an execution call stays an error: there it means a
 * misuse (a null pointer, a workspace or reserve space too small), not a shape to route
 * around. */
static int refused_at(cudnnStatus_t st, int planning)
{
    return CUDNN_STATUS_CATEGORY(st) == CUDNN_STATUS_NOT_SUPPORTED ||
           (planning && CUDNN_STATUS_CATEGORY(st) == CUDNN_STATUS_BAD_PARAM);
}
static int refused(cudnnStatus_t st) { return refused_at(st, 0); }

/* A refusal: with IH_CUDNN_BN=cudnn:require the error, else a WARN and the layer's direction
 * goes to our kernels from now on (*ours set). */
static ih_err refusal(const net *e, int li, int n, const char *what, cudnnStatus_t st, int *ours)
{
    if (e->cudnn_bn & 2) return dnn_fail(e, li, n, what, st);
    char lb[96], msg[256] = "";
    label(e, li, n, lb, sizeof lb);
    cudnnGetLastErrorString(msg, sizeof msg);
    IH_WARN("model cuda: cuDNN BN, %s: %s refused (%s%s%s): this layer runs that direction on our kernels "
            "(IH_CUDNN_BN=cudnn:require makes this an error)", lb, what, cudnnGetErrorString(st), *msg ? ": " : "",
            msg);
    *ours = 1;
    return IH_OK;
}

/* Describes layer li's x for n images; *ws and *rs: the forward's and backward's largest
 * workspace, and the reserve space, cuDNN wants for it with ops (the layer's own, or
 * BN_ADD_ACTIVATION: z, y, dz described as x). Not SUCCESS: *what names the call. */
static cudnnStatus_t describe(net *e, int li, int n, cudnnBatchNormOps_t ops, size_t *ws, size_t *rs,
                              const char **what)
{
    const model_layer *l = &e->g->layers[li];
    const model_shape *s = &e->g->tensors[l->in[0]];
    bn_dnn *b = &e->bnd[li];
    const int join = ops == CUDNN_BATCHNORM_OPS_BN_ADD_ACTIVATION;
    cudnnActivationDescriptor_t act = ops != CUDNN_BATCHNORM_OPS_BN ? e->relu_act : NULL;
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
    st = cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize(e->dnn, MODE, ops, b->x, join ? b->x : NULL, b->x,
                                                                   b->p, act, &wf);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    *what = "cudnnGetBatchNormalizationBackwardExWorkspaceSize";
    st = cudnnGetBatchNormalizationBackwardExWorkspaceSize(e->dnn, MODE, ops, b->x, b->x, b->x, join ? b->x : NULL,
                                                           b->x, b->p, act, &wb);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    *what = "cudnnGetBatchNormalizationTrainingExReserveSpaceSize";
    st = cudnnGetBatchNormalizationTrainingExReserveSpaceSize(e->dnn, MODE, ops, act, b->x, rs);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    *ws = wf > wb ? wf : wb;
    return CUDNN_STATUS_SUCCESS;
}


/* describe for the layer's own ops and, when it is planned to run at its join, for
 * BN_ADD_ACTIVATION too (the larger of each size); a refusal (file header) leaves the layer,
 * or only its join, to ours (or, with require, fails) */
static ih_err describe_or_refuse(net *e, int li, int n, size_t *ws, size_t *rs)
{
    bn_dnn *b = &e->bnd[li];
    const char *what = "";
    *ws = *rs = 0;
    cudnnStatus_t st = describe(e, li, n, ops_of(e, li), ws, rs, &what);
    if (st != CUDNN_STATUS_SUCCESS) {
        *ws = *rs = 0;
        if (refused_at(st, 1)) return refusal(e, li, n, what, st, &b->ours_fwd);
        return dnn_fail(e, li, n, what, st);
    }
    if (b->join < 0 || b->ours_add_fwd) return IH_OK;
    size_t ws2 = 0, rs2 = 0;
    st = describe(e, li, n, CUDNN_BATCHNORM_OPS_BN_ADD_ACTIVATION, &ws2, &rs2, &what);
    if (st != CUDNN_STATUS_SUCCESS) {
        if (refused_at(st, 1)) return refusal(e, li, n, what, st, &b->ours_add_fwd);
        return dnn_fail(e, li, n, what, st);
    }
    if (ws2 > *ws) *ws = ws2;
    if (rs2 > *rs) *rs = rs2;
    return IH_OK;
}

ih_err model_cuda_bn_dnn_create(net *e, size_t *ws_need)
{
    const model_graph *g = e->g;
    const int nl = g->nlayers, B = e->max_batch;
    if (e->eps < CUDNN_BN_MIN_EPSILON) /* the default gave way in net.cu's create_inner */
        return ih_fail(IH_E_USAGE, "model cuda: IH_CUDNN_BN=%s: BN epsilon %g is below cuDNN's minimum %g; "
                       "use IH_CUDNN_BN=ours", getenv("IH_CUDNN_BN"), e->eps, (double)CUDNN_BN_MIN_EPSILON);
    e->bnd = (bn_dnn *)calloc((size_t)nl, sizeof(bn_dnn));
    e->add_bn = (int *)malloc((size_t)nl * sizeof(int));
    if (!e->bnd || !e->add_bn) return ih_fail(IH_E_SYS, "model cuda: out of host memory");
    for (int i = 0; i < nl; i++) {
        e->bnd[i].join = -1;
        e->add_bn[i] = -1;
    }
    if (e->cudnn_bn & 4) {
        /* the graph's residual joins (one BN per ADD, graph.h) where all their tensors have the
         * compute type */
        int *joins_of = (int *)malloc((size_t)nl * sizeof(int));
        if (!joins_of) return ih_fail(IH_E_SYS, "model cuda: out of host memory");
        (void)model_graph_bn_joins(g, joins_of);
        for (int i = 0; i < nl; i++) {
            const int j = joins_of[i];
            if (j < 0) continue;
            const model_layer *a = &g->layers[j];
            if (e->dt[g->layers[i].in[0]] == e->lp && e->dt[a->in[0]] == e->lp && e->dt[a->in[1]] == e->lp &&
                e->dt[a->out] == e->lp && e->fuse[j] && !e->fuse[i]) {
                e->bnd[i].join = j;
                e->add_bn[j] = i;
            }
        }
        free(joins_of);
    }
    IH_CUDNN(cudnnCreateActivationDescriptor(&e->relu_act));
    IH_CUDNN(cudnnSetActivationDescriptor(e->relu_act, CUDNN_ACTIVATION_RELU, CUDNN_NOT_PROPAGATE_NAN, 0.0));
    size_t rs_total = 0, ws_max = 0;
    int count = 0, joins = 0;
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
        joins += b->join >= 0 && !b->ours_add_fwd;
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
    IH_INFO(IH_LOG_MODEL, "model cuda: BN training on cuDNN (IH_CUDNN_BN): %d layers, %d of them with their "
            "residual join, %.1f MiB of reserve space, %.1f MiB of workspace at batch %d", count, joins,
            rs_total / 1048576.0, ws_max / 1048576.0, B);
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

int model_cuda_bn_dnn_has_fwd(const net *e, const model_layer *l)
{
    return e->bnd && !e->bnd[l - e->g->layers].ours_fwd;
}

/* Layer li's training forward with ops: z (BN_ADD_ACTIVATION's added input, else NULL), y the
 * output; a refusal sets *ours (or, with require, fails). */
static ih_err fwd_call(net *e, int li, int n, cudnnBatchNormOps_t ops, const void *z, void *y, int *ours)
{
    const model_layer *l = &e->g->layers[li];
    const int c = e->g->tensors[l->in[0]].c;
    bn_dnn *b = &e->bnd[li];
    float *rm = e->state + l->state_off, *aux = e->aux + e->aux_off[li];
    const float one = 1.f, zero = 0.f;
    const char *what = z ? "cudnnBatchNormalizationForwardTrainingEx (BN_ADD_ACTIVATION)"
                         : "cudnnBatchNormalizationForwardTrainingEx";
    cudnnStatus_t st = cudnnBatchNormalizationForwardTrainingEx(
        e->dnn, MODE, ops, &one, &zero, b->x, e->val[l->in[0]], z ? b->x : NULL, z, b->x, y, b->p,
        e->params + l->w_off, e->params + l->b_off, e->momentum, rm, rm + c, e->eps, aux, aux + c,
        ops != CUDNN_BATCHNORM_OPS_BN ? e->relu_act : NULL, e->ws, e->ws_bytes, b->rs, b->rs_bytes);
    if (refused(st)) return refusal(e, li, n, what, st, ours);
    if (st != CUDNN_STATUS_SUCCESS) return dnn_fail(e, li, n, what, st);
    return IH_OK;
}

/* dgamma += d[0, c), dbeta += d[c, 2c) */
static __global__ void bn_param_add_k(const float *d, float *dgamma, float *dbeta, int c)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < c) {
        dgamma[i] += d[i];
        dbeta[i] += d[c + i];
    }
}

/* Layer li's backward with ops from y (the forward's output) and dy: dx written (the BN's
 * input gradient), dz written (BN_ADD_ACTIVATION's, else NULL), the parameter gradients added
 * to times 1 / the loss scale; a refusal sets *ours (or, with require, fails). cuDNN writes
 * the parameter gradients (betaParamDiff = 0, as PyTorch and Paddle call it; whether its
 * persistent kernels honour a blend into existing values is not something to rely on) into
 * aux[2c, 4c), unused by cuDNN's forward and backward, and a small kernel adds them in. */
static ih_err bwd_call(net *e, int li, int n, cudnnBatchNormOps_t ops, const void *y, const void *dy, void *dz,
                       int *ours)
{
    const model_layer *l = &e->g->layers[li];
    const int c = e->g->tensors[l->in[0]].c;
    bn_dnn *b = &e->bnd[li];
    const float *aux = e->aux + e->aux_off[li];
    float *dpar = e->aux + e->aux_off[li] + 2 * (size_t)c;
    const float one = 1.f, zero = 0.f, gs = (float)(1.0 / e->ls);
    const char *what = dz ? "cudnnBatchNormalizationBackwardEx (BN_ADD_ACTIVATION)" : "cudnnBatchNormalizationBackwardEx";
    cudnnStatus_t st = cudnnBatchNormalizationBackwardEx(
        e->dnn, MODE, ops, &one, &zero, &gs, &zero, b->x, e->val[l->in[0]], b->x, y, b->x, dy, dz ? b->x : NULL, dz,
        b->x, e->grad[l->in[0]], b->p, e->params + l->w_off, e->params + l->b_off, dpar, dpar + c, e->eps, aux,
        aux + c, ops != CUDNN_BATCHNORM_OPS_BN ? e->relu_act : NULL, e->ws, e->ws_bytes, b->rs, b->rs_bytes);
    if (refused(st)) return refusal(e, li, n, what, st, ours);
    if (st != CUDNN_STATUS_SUCCESS) return dnn_fail(e, li, n, what, st);
    bn_param_add_k<<<(c + 255) / 256, 256, 0, e->s>>>(dpar, e->grads + l->w_off, e->grads + l->b_off, c);
    IH_CUDA_LAUNCHED("bn_param_add_k");
    return IH_OK;
}

ih_err model_cuda_bn_dnn_fwd(net *e, const model_layer *l, int n)
{
    const int li = (int)(l - e->g->layers);
    return fwd_call(e, li, n, ops_of(e, li), NULL, e->val[l->out], &e->bnd[li].ours_fwd);
}

/* cuDNN's backward needs its own forward's reserve space (with the same ops); our backward
 * reads only aux's mean and inverse std, which every forward leaves. */
int model_cuda_bn_dnn_has_bwd(const net *e, const model_layer *l)
{
    const bn_dnn *b = e->bnd ? &e->bnd[l - e->g->layers] : NULL;
    return b && !b->ours_fwd && !b->ours_bwd && l->accum[0] == 0 && !model_cuda_bn_dnn_deferred(e, l);
}

int model_cuda_bn_dnn_deferred(const net *e, const model_layer *l)
{
    const bn_dnn *b = e->bnd ? &e->bnd[l - e->g->layers] : NULL;
    return b && b->join >= 0 && !b->ours_fwd && !b->ours_add_fwd;
}

int model_cuda_bn_dnn_join_bwd_on(const net *e, const model_layer *l)
{
    return model_cuda_bn_dnn_deferred(e, l) && !e->bnd[l - e->g->layers].ours_add_bwd;
}

int model_cuda_bn_dnn_join_of(const net *e, const model_layer *add)
{
    if (!e->add_bn) return -1;
    const int li = e->add_bn[add - e->g->layers];
    return li >= 0 && model_cuda_bn_dnn_deferred(e, &e->g->layers[li]) ? li : -1;
}

/* The ADD's other input: z */
static int z_of(const model_layer *a, const model_layer *l) { return a->in[0] == l->out ? a->in[1] : a->in[0]; }

ih_err model_cuda_bn_dnn_join_fwd(net *e, const model_layer *a, int n)
{
    const int li = model_cuda_bn_dnn_join_of(e, a);
    if (li < 0) return ih_fail(IH_E_INTERNAL, "model cuda: layer %d has no BN joined to it", (int)(a - e->g->layers));
    const model_layer *l = &e->g->layers[li];
    return fwd_call(e, li, n, CUDNN_BATCHNORM_OPS_BN_ADD_ACTIVATION, e->val[z_of(a, l)], e->val[a->out],
                    &e->bnd[li].ours_add_fwd);
}

ih_err model_cuda_bn_dnn_join_bwd(net *e, const model_layer *a, int n)
{
    const int li = model_cuda_bn_dnn_join_of(e, a);
    if (li < 0) return ih_fail(IH_E_INTERNAL, "model cuda: layer %d has no BN joined to it", (int)(a - e->g->layers));
    const model_layer *l = &e->g->layers[li];
    return bwd_call(e, li, n, CUDNN_BATCHNORM_OPS_BN_ADD_ACTIVATION, e->val[a->out], e->grad[a->out],
                    e->grad[z_of(a, l)], &e->bnd[li].ours_add_bwd);
}

ih_err model_cuda_bn_dnn_bwd(net *e, const model_layer *l, int n)
{
    const int li = (int)(l - e->g->layers);
    return bwd_call(e, li, n, ops_of(e, li), e->val[l->out], e->grad[l->out], NULL, &e->bnd[li].ours_bwd);
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
    free(e->add_bn);
    e->add_bn = NULL;
    if (e->relu_act) cudnnDestroyActivationDescriptor(e->relu_act);
    e->relu_act = NULL;
    if (e->bn_rs) cudaFree(e->bn_rs);
    e->bn_rs = NULL;
}
