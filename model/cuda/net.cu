/* model/cuda/net.cu — the CUDA executor (see net.h): the same model_graph as the CPU
 * executor, run forward in layer order and backward in reverse on one stream.
 *
 * Convolutions: on NHWC tensors and KRSC (= cuDNN's NHWC filter) weights, by default on
 * cuDNN's backend graph API (conv_graph.c: per layer and direction an engine from its
 * heuristics, deterministic first, and in the fp32 exact mode without tensor cores/TF32; no
 * measurement). It measured as fast as the legacy API at n = 256 and 1.2x at n = 32 on an H100
 * (ResNet-50 bf16 step), and plans in 2 s where cudnnFind takes 16 s at n = 256.
 * IH_CUDNN_API=legacy: cuDNN's legacy API (still in cuDNN 9) instead. There the algorithm per
 * layer and direction is chosen once at create from
 * cuDNN's heuristics (cudnnGet*Algorithm_v7): the first one that is supported, fits the
 * workspace cap, is deterministic (so the same batch gives the same bits, as on the CPU) and,
 * in the fp32 exact mode, uses plain FMA math (no TF32); in bf16 mode they are then replaced
 * by cudnnFind's measured fastest (conv.cu). One workspace for all layers.
 * conv.cu's model_cuda_conv_fwd/_bwd_data/_bwd_filter dispatch per layer to either API.
 * IH_CUDNN_FUSE=stats (bf16/fp16; implies the graph API): a conv whose output goes straight
 * into a BN (layer i + 1) also sums that output per channel, shifted by the BN's running mean,
 * into partial[0][2][k] (conv_graph.h's forward with statistics), and the BN's training
 * forward finalizes from those sums instead of its own statistics pass (bn_fwd_train_t, pre).
 * Training forward only: eval runs the plain forward. Per layer and batch size, where cuDNN
 * has no engine for it the layer keeps the separate pass (stats:require: create fails).
 * BN: in bf16/fp16 training, by default on cuDNN's BN with each residual join's BN, add and
 * ReLU as one call (bn_cudnn.cu, which says what stays ours; IH_CUDNN_BN=cudnn without the
 * joins); our kernels (bn.cuh) for eval, the fp32 exact mode, IH_CUDNN_FUSE=stats, a layer
 * cuDNN refuses, and with IH_CUDNN_BN=ours.
 * A training step is captured as a CUDA graph per (batch, loss scale) and replayed; input
 * copies run on their own stream, overlapped with the previous step (put_input).
 * Precision of tensors: the normalised input has the compute type, with its 3 channels
 * padded to 16 bytes (4 fp32 or 8 bf16; cuDNN 9 has no NHWC kernel for 3 fp32 channels), and
 * the stem conv reads a padded copy of its weights and writes a padded weight gradient that
 * is folded back; a conv's output has its input's type; BN writes the compute type; pooled
 * features and logits are fp32. bf16 convs read a bf16 copy of the master weights (made when
 * parameters are put, and rewritten by the SGD kernel) and write weight gradients to a bf16
 * scratch with the same offsets, added into the fp32 gradients right after each conv (so a
 * layer's range is final at its grad-ready point); fp32 convs, BN and FC use and accumulate
 * the fp32 buffers directly.
 * Gradient hand-over (model.h, model_set_grad_ready/_host): after each parameter layer the
 * step records an event; in the host variant it first forks a copy stream that copies the
 * layer's range into a pinned host mirror. Both are recorded INSIDE the captured graph (the
 * copies as memcpy nodes on a forked branch, the events as external event-record nodes that
 * the host can wait on after cudaGraphLaunch), because running the copies outside the graph
 * would mean splitting the step into one graph per bucket or launching it eagerly, which
 * costs the host launch time the graph exists to save. One graph per variant.
 * SGD: sgd_k applies optim_sgd_elem (optim/sgd_elem.h) per element over a tile table (tiles
 * inside one optimizer segment, each with its weight decay), momentum on the device.
 * fp16 (MODEL_PREC_FP16) is bf16's path with __half and dynamic loss scaling: the loss
 * gradient is multiplied by ls (a power of two, baked into the captured graph, which is
 * recaptured when ls changes), every parameter-gradient write multiplies by 1/ls (exact), so
 * the fp32 gradients never carry the scale; sgd_step checks them for inf/NaN on the device and
 * the SGD kernel skips the update on overflow, whose flag the next step reads to halve ls.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cudnn.h>

#include "core/cuda_check.h"
#include "core/log.h"
#include "model/cuda/bn.cuh"
#include "model/cuda/kernels.cuh"
#include "model/cuda/net.h"
#include "model/cuda/probe.h"
#include "model/cuda/net_impl.h"
#include "model/input_norm.h"

/* fp16 dynamic loss scaling: initial scale, good steps before doubling, largest scale (the
 * usual AMP defaults; powers of two, so scaling and unscaling are exact) */
static const double LS_INIT = 65536.0, LS_MAX = 16777216.0;
enum { LS_GROWTH = 2000 };

static ih_err resolve_skip(net *e);

int model_cuda_available(char *why, size_t why_len)
{
    int n = 0;
    cudaError_t ce = cudaGetDeviceCount(&n);
    if (ce != cudaSuccess || n == 0) {
        if (why)
            snprintf(why, why_len, "no CUDA device (%s)",
                     ce != cudaSuccess ? cudaGetErrorString(ce) : "cudaGetDeviceCount = 0");
        return 0;
    }
    return 1;
}

void *model_cuda_host_alloc(size_t bytes)
{
    void *p = NULL;
    if (cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocPortable) != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    return p;
}

void model_cuda_host_free(void *p)
{
    if (p) (void)cudaFreeHost(p);
}

int model_cuda_select_device(int local_rank, char *why, size_t why_len)
{
    int n = 0;
    cudaError_t ce = cudaGetDeviceCount(&n);
    if (ce != cudaSuccess || n == 0) {
        if (why) snprintf(why, why_len, "no CUDA device (%s)", ce != cudaSuccess ? cudaGetErrorString(ce) : "0 devices");
        return -1;
    }
    const int dev = (local_rank < 0 ? 0 : local_rank) % n;
    ce = cudaSetDevice(dev);
    if (ce != cudaSuccess) {
        if (why) snprintf(why, why_len, "cudaSetDevice(%d): %s", dev, cudaGetErrorString(ce));
        return -1;
    }
    return local_rank >= n ? n : 0; /* > 0: more local ranks than GPUs, they share */
}

/* ---- launchers: dtype dispatch, vector width 8 when channels allow ---- */

/* A BN layer's tensors for bn.cuh's launchers. pre: the convolution before this BN left the
 * sums of its output, shifted by the running mean, in partial[0][2][c] (IH_CUDNN_FUSE=stats):
 * no statistics pass here. */
template <typename TX, typename TY>
static ih_err bn_fwd_train_t(net *e, const model_layer *l, int n, int pre)
{
    const model_shape *xs = &e->g->tensors[l->in[0]];
    float *rm = e->state + l->state_off, *rv = rm + xs->c;
    return bn_train_fwd<TX, TY>(e->s, e->sms, (const TX *)e->val[l->in[0]], (TY *)e->val[l->out],
                                (size_t)n * xs->h * xs->w, xs->c, pre ? rm : NULL, e->partial,
                                e->params + l->w_off, e->params + l->b_off, e->aux + e->aux_off[l - e->g->layers],
                                rm, rv, e->momentum, e->eps, e->fuse[l - e->g->layers]);
}

template <typename TX, typename TY>
static ih_err bn_fwd_eval_t(net *e, const model_layer *l, int n)
{
    const model_shape *xs = &e->g->tensors[l->in[0]];
    const float *rm = e->state + l->state_off;
    return bn_eval_fwd<TX, TY>(e->s, e->sms, (const TX *)e->val[l->in[0]], (TY *)e->val[l->out],
                               (size_t)n * xs->h * xs->w, xs->c, e->params + l->w_off, e->params + l->b_off, rm,
                               rm + xs->c, e->eps, e->aux + e->aux_off[l - e->g->layers], e->fuse[l - e->g->layers]);
}

template <typename TX, typename TG>
static ih_err bn_bwd_t(net *e, const model_layer *l, int n)
{
    const model_shape *xs = &e->g->tensors[l->in[0]];
    const int li = (int)(l - e->g->layers);
    TX *dx = l->accum[0] < 0 ? NULL : (TX *)e->grad[l->in[0]];
    return bn_train_bwd<TX, TG>(e->s, e->sms, (const TX *)e->val[l->in[0]], (const TG *)e->grad[l->out],
                                (const TG *)e->val[l->out], dx, l->accum[0] > 0, (size_t)n * xs->h * xs->w, xs->c,
                                e->partial, e->params + l->w_off, e->grads + l->w_off, e->grads + l->b_off,
                                e->aux + e->aux_off[li], 1.0 / e->ls, e->fuse[li]);
}

/* Calls F<TX, TY>(args) for the runtime dtypes: fp32 and the net's one low-precision type (a
 * net never mixes bf16 and fp16, so those pairs are not instantiated). */
#define DISPATCH_LP(tx, ty, LP, F, ...)                                                   \
    ((tx) == F32 ? ((ty) == F32 ? F<float, float>(__VA_ARGS__) : F<float, LP>(__VA_ARGS__))   \
                 : ((ty) == F32 ? F<LP, float>(__VA_ARGS__) : F<LP, LP>(__VA_ARGS__)))
#define DISPATCH2(tx, ty, F, ...)                                                         \
    ((tx) == F16 || (ty) == F16 ? DISPATCH_LP(tx, ty, f16, F, __VA_ARGS__)                   \
                                : DISPATCH_LP(tx, ty, bf16, F, __VA_ARGS__))
#define DISPATCH1(t, F, ...)                                                              \
    ((t) == F32 ? F<float>(__VA_ARGS__) : (t) == BF16 ? F<bf16>(__VA_ARGS__) : F<f16>(__VA_ARGS__))

template <typename T> static ih_err relu_t(net *e, int t, size_t len, int bwd)
{
    T *x = (T *)e->val[t];
    if (len % 8 == 0) {
        if (bwd) relu_bwd_k<T, 8><<<grid_for(e, len / 8, 256), 256, 0, e->s>>>(x, (T *)e->grad[t], len);
        else relu_fwd_k<T, 8><<<grid_for(e, len / 8, 256), 256, 0, e->s>>>(x, len);
    } else {
        if (bwd) relu_bwd_k<T, 1><<<grid_for(e, len, 256), 256, 0, e->s>>>(x, (T *)e->grad[t], len);
        else relu_fwd_k<T, 1><<<grid_for(e, len, 256), 256, 0, e->s>>>(x, len);
    }
    IH_CUDA_LAUNCHED("relu");
    return IH_OK;
}

template <typename T> static ih_err add_t(net *e, const model_layer *l, size_t len, int bwd)
{
    int relu = e->fuse[l - e->g->layers];
    unsigned gb = grid_for(e, len % 8 == 0 ? len / 8 : len, 256);
    if (!bwd) {
        const T *a = (const T *)e->val[l->in[0]], *b = (const T *)e->val[l->in[1]];
        T *y = (T *)e->val[l->out];
        if (len % 8 == 0) add_fwd_k<T, 8><<<gb, 256, 0, e->s>>>(a, b, y, len, relu);
        else add_fwd_k<T, 1><<<gb, 256, 0, e->s>>>(a, b, y, len, relu);
    } else {
        const T *dy = (const T *)e->grad[l->out], *y = (const T *)e->val[l->out];
        T *da = l->accum[0] >= 0 ? (T *)e->grad[l->in[0]] : NULL;
        T *db = l->accum[1] >= 0 ? (T *)e->grad[l->in[1]] : NULL;
        int aa = l->accum[0] > 0, ab = l->accum[1] > 0;
        if (len % 8 == 0) add_bwd_k<T, 8><<<gb, 256, 0, e->s>>>(dy, y, da, aa, db, ab, len, relu);
        else add_bwd_k<T, 1><<<gb, 256, 0, e->s>>>(dy, y, da, aa, db, ab, len, relu);
    }
    IH_CUDA_LAUNCHED("add");
    return IH_OK;
}

template <typename T> static ih_err maxpool_t(net *e, const model_layer *l, int n, int bwd)
{
    const model_graph *g = e->g;
    const model_shape *xs = &g->tensors[l->in[0]], *ys = &g->tensors[l->out];
    int32_t *am = e->argmax + e->arg_off[l - g->layers];
    if (!bwd) {
        size_t tot = (size_t)n * tsize(g, l->out);
        maxpool_fwd_k<T><<<grid_for(e, tot, 256), 256, 0, e->s>>>(
            (const T *)e->val[l->in[0]], (T *)e->val[l->out], am, n, xs->h, xs->w, xs->c, l->r,
            l->stride, l->pad, ys->h, ys->w);
    } else {
        if (l->accum[0] < 0) return IH_OK;
        size_t tot = (size_t)n * tsize(g, l->in[0]);
        maxpool_bwd_k<T><<<grid_for(e, tot, 256), 256, 0, e->s>>>(
            (const T *)e->grad[l->out], am, (T *)e->grad[l->in[0]], n, xs->h, xs->w, xs->c, l->r,
            l->stride, l->pad, ys->h, ys->w, l->accum[0] > 0);
    }
    IH_CUDA_LAUNCHED("maxpool");
    return IH_OK;
}

template <typename T> static ih_err avgpool_t(net *e, const model_layer *l, int n, int bwd)
{
    const model_shape *xs = &e->g->tensors[l->in[0]];
    int hw = xs->h * xs->w, c = xs->c;
    if (!bwd) {
        avgpool_fwd_k<T><<<grid_for(e, (size_t)n * c, 256), 256, 0, e->s>>>(
            (const T *)e->val[l->in[0]], (float *)e->val[l->out], n, hw, c);
    } else {
        if (l->accum[0] < 0) return IH_OK;
        avgpool_bwd_k<T><<<grid_for(e, (size_t)n * hw * c, 256), 256, 0, e->s>>>(
            (const float *)e->grad[l->out], (T *)e->grad[l->in[0]], n, hw, c, l->accum[0] > 0);
    }
    IH_CUDA_LAUNCHED("avgpool");
    return IH_OK;
}

/* Re-describes every conv for batch n (no allocation) and checks the workspace still fits;
 * for a training step (train) also the BN layers on cuDNN, which an eval-only batch size must
 * not touch (a refusal there would change the training step's path). */
static ih_err set_batch(net *e, int n, int train)
{
    if (e->bnd && train && n != e->bn_n) {
        e->bn_n = 0; /* a failure part way leaves some layers described for n: none is current */
        IH_TRY(model_cuda_bn_dnn_set_batch(e, n));
        e->bn_n = n;
    }
    if (n == e->cur_n) return IH_OK;
    const model_graph *g = e->g;
    for (int i = 0; i < g->nlayers; i++) {
        const model_layer *l = &g->layers[i];
        if (l->op != MODEL_OP_CONV) continue;
        conv_plan *p = &e->conv[i];
        if (p->gp) { /* plans for n within the workspace we have (cached per batch size) */
            IH_TRY(model_cuda_conv_graph_set_batch(p->gp, n, e->ws_bytes));
            continue;
        }
        IH_TRY(model_cuda_conv_set_batch(e, p, l, n));
        size_t a = 0, b = 0, c = 0;
        IH_CUDNN(cudnnGetConvolutionForwardWorkspaceSize(e->dnn, p->x, p->w, p->cf, p->y, p->fa, &a));
        if (l->accum[0] >= 0)
            IH_CUDNN(cudnnGetConvolutionBackwardDataWorkspaceSize(e->dnn, p->w, p->y, p->cd, p->x, p->da, &b));
        IH_CUDNN(cudnnGetConvolutionBackwardFilterWorkspaceSize(e->dnn, p->x, p->y, p->cw, p->w, p->wa, &c));
        if (a > e->ws_bytes || b > e->ws_bytes || c > e->ws_bytes)
            return ih_fail(IH_E_INTERNAL, "model cuda: conv layer %d needs %zu bytes of workspace at "
                           "batch %d, more than the %zu planned at max_batch %d", i,
                           a > b ? (a > c ? a : c) : (b > c ? b : c), n, e->ws_bytes, e->max_batch);
    }
    e->cur_n = n;
    return IH_OK;
}

/* ---- create / destroy ---- */

void model_cuda_net_destroy(net *e)
{
    if (!e) return;
    /* Nothing queued may still run when plans and buffers go: wait, then drop the captured
     * steps (they launch the plans' kernels) before anything they reference. */
    if (e->s) (void)cudaStreamSynchronize(e->s);
    if (e->xs) (void)cudaStreamSynchronize(e->xs);
    for (int v = 0; v < 2; v++)
        if (e->graph[v]) {
            (void)cudaGraphExecDestroy(e->graph[v]);
            e->graph[v] = NULL;
        }
    if (e->conv)
        for (int i = 0; i < e->g->nlayers; i++) {
            conv_plan *p = &e->conv[i];
            if (p->x) cudnnDestroyTensorDescriptor(p->x);
            if (p->y) cudnnDestroyTensorDescriptor(p->y);
            if (p->w) cudnnDestroyFilterDescriptor(p->w);
            if (p->cf) cudnnDestroyConvolutionDescriptor(p->cf);
            if (p->cd) cudnnDestroyConvolutionDescriptor(p->cd);
            if (p->cw) cudnnDestroyConvolutionDescriptor(p->cw);
        }
    /* Errors while tearing down are not actionable; the first error was reported already. */
    void *bufs[] = {e->wpad,   e->dwpad,  e->params, e->grads,  e->state,   e->params16, e->wgrad16, e->arena,
                    e->aux,    e->partial, e->argmax, e->ws,       e->d_img,   e->d_lab,
                    e->d_img_in, e->d_lab_in, e->blas_ws,
                    e->d_loss, e->d_hit, e->mom, e->tiles, e->d_skip};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) cudaFree(bufs[i]);
    /* the streams were drained above: no queued kernel still uses a plan */
    if (e->conv)
        for (int i = 0; i < e->g->nlayers; i++) model_cuda_conv_graph_destroy(e->conv[i].gp);
    model_cuda_bn_dnn_destroy(e);
    for (int v = 0; v < 2; v++) {
        if (e->pt_ev[v])
            for (int j = 0; j < e->npts; j++)
                if (e->pt_ev[v][j]) cudaEventDestroy(e->pt_ev[v][j]);
        free(e->pt_ev[v]);
    }
    if (e->gfork) cudaEventDestroy(e->gfork);
    if (e->gjoin) cudaEventDestroy(e->gjoin);
    if (e->gs) cudaStreamDestroy(e->gs);
    if (e->h_grads) cudaFreeHost(e->h_grads);
    if (e->h_skip) cudaFreeHost(e->h_skip);
    if (e->skip_ev) cudaEventDestroy(e->skip_ev);
    free(e->layer_pt);
    free(e->pt_off);
    free(e->pt_hi);
    if (e->h_img) cudaFreeHost(e->h_img);
    if (e->h_lab) cudaFreeHost(e->h_lab);
    if (e->copied) cudaEventDestroy(e->copied);
    if (e->landed_free) cudaEventDestroy(e->landed_free);
    if (e->cs) cudaStreamDestroy(e->cs);
    if (e->blas) cublasDestroy(e->blas);
    if (e->dnn) cudnnDestroy(e->dnn);
    if (e->s) cudaStreamDestroy(e->s);
    if (e->xs) cudaStreamDestroy(e->xs);
    if (e->xev) cudaEventDestroy(e->xev);
    free(e->conv);
    free(e->val);
    free(e->grad);
    free(e->dt);
    free(e->fuse);
    free(e->aux_off);
    free(e->arg_off);
    free(e->h_loss);
    free(e->h_hit);
    free(e);
}

/* The grad-ready points (model.h's contract): one per layer with parameters, in backward
 * order, each covering its layer's parameters up to the previous point's start. Offsets must
 * strictly decrease and end at 0, as the CPU executor reports them. Events for both variants,
 * the copy stream and its fork/join events. */
static ih_err ready_points(net *e)
{
    const model_graph *g = e->g;
    int nl = g->nlayers;
    e->layer_pt = (int *)malloc((size_t)nl * sizeof(int));
    e->pt_off = (size_t *)calloc((size_t)nl + 1, sizeof(size_t));
    e->pt_hi = (size_t *)calloc((size_t)nl + 1, sizeof(size_t));
    e->pt_ev[0] = (cudaEvent_t *)calloc((size_t)nl + 1, sizeof(cudaEvent_t));
    e->pt_ev[1] = (cudaEvent_t *)calloc((size_t)nl + 1, sizeof(cudaEvent_t));
    if (!e->layer_pt || !e->pt_off || !e->pt_hi || !e->pt_ev[0] || !e->pt_ev[1])
        return ih_fail(IH_E_SYS, "model cuda: out of host memory");
    size_t hi = g->nparams;
    for (int i = nl - 1; i >= 0; i--) {
        const model_layer *l = &g->layers[i];
        e->layer_pt[i] = -1;
        if (l->op != MODEL_OP_CONV && l->op != MODEL_OP_BN && l->op != MODEL_OP_FC) continue;
        if (l->w_off >= hi)
            return ih_fail(IH_E_INTERNAL, "model cuda: layer %d's parameters at %zu do not precede "
                           "those of the layers after it (%zu): backward would not complete the "
                           "gradient buffer from its end", i, l->w_off, hi);
        int j = e->npts++;
        e->layer_pt[i] = j;
        e->pt_off[j] = l->w_off;
        e->pt_hi[j] = hi;
        hi = l->w_off;
    }
    if (e->npts == 0 || hi != 0)
        return ih_fail(IH_E_INTERNAL, "model cuda: the parameter layers cover [%zu, %zu), not the "
                       "whole gradient buffer", hi, g->nparams);
    /* Blocking sync: the stepping thread waits for these through all of backward (the larger
     * part of a step); spinning would take a core from the decode threads, one per GPU, for a
     * gain of a wake-up (microseconds) on a bucket hand-over that then takes milliseconds. */
    for (int v = 0; v < 2; v++)
        for (int j = 0; j < e->npts; j++)
            IH_CUDA(cudaEventCreateWithFlags(&e->pt_ev[v][j], cudaEventDisableTiming | cudaEventBlockingSync));
    IH_CUDA(cudaStreamCreateWithFlags(&e->gs, cudaStreamNonBlocking));
    IH_CUDA(cudaEventCreateWithFlags(&e->gfork, cudaEventDisableTiming));
    IH_CUDA(cudaEventCreateWithFlags(&e->gjoin, cudaEventDisableTiming));
    return IH_OK;
}

static ih_err create_inner(net *e)
{
    const model_graph *g = e->g;
    int nt = g->ntensors, nl = g->nlayers, B = e->max_batch;
    int dev = 0;
    IH_TRY(model_cuda_conv_api_from_env(&e->graph_api));
    IH_TRY(model_cuda_conv_fuse_from_env(&e->fuse_stats));
    if (e->fuse_stats && e->prec == MODEL_PREC_FP32) {
        IH_INFO(IH_LOG_MODEL, "model cuda: IH_CUDNN_FUSE ignored in the fp32 exact mode (its sums are not "
                "the exact mode's deterministic ones)");
        e->fuse_stats = 0;
    }
    IH_TRY(model_cuda_bn_from_env(&e->cudnn_bn));
    /* cuDNN's BN is the bf16/fp16 default (bit 8: not asked for); the exact mode and the fused
     * statistics keep ours, quietly when the user did not ask for cuDNN's */
    if (e->cudnn_bn && e->prec == MODEL_PREC_FP32) {
        if (!(e->cudnn_bn & 8))
            IH_INFO(IH_LOG_MODEL, "model cuda: IH_CUDNN_BN=cudnn ignored in the fp32 exact mode (BN stays on our "
                    "deterministic kernels)");
        e->cudnn_bn = 0;
    }
    if (e->cudnn_bn && e->fuse_stats) {
        if (!(e->cudnn_bn & 8))
            return ih_fail(IH_E_USAGE, "model cuda: IH_CUDNN_BN=%s and IH_CUDNN_FUSE=stats both replace the BN's "
                           "statistics pass (cuDNN's BN computes its own; the fused one takes the convolution's "
                           "sums): unset one of them", getenv("IH_CUDNN_BN"));
        IH_INFO(IH_LOG_MODEL, "model cuda: IH_CUDNN_FUSE=stats: BN runs on our kernels (they take the fused "
                "statistics), not cuDNN's");
        e->cudnn_bn = 0;
    }
    if ((e->cudnn_bn & 8) && e->eps < CUDNN_BN_MIN_EPSILON) { /* asked for: bn_cudnn.cu's usage error */
        IH_INFO(IH_LOG_MODEL, "model cuda: BN epsilon %g is below cuDNN's minimum %g: BN runs on our kernels",
                e->eps, (double)CUDNN_BN_MIN_EPSILON);
        e->cudnn_bn = 0;
    }
    if (e->fuse_stats && !e->graph_api) {
        IH_INFO(IH_LOG_MODEL, "model cuda: IH_CUDNN_FUSE=stats runs the convolutions on cuDNN's graph API "
                "(IH_CUDNN_API=legacy ignored)");
        e->graph_api = 1;
    }
    IH_CUDA(cudaGetDevice(&dev));
    e->dev = dev;
    IH_CUDA(cudaDeviceGetAttribute(&e->sms, cudaDevAttrMultiProcessorCount, dev));
    IH_CUDA(cudaStreamCreateWithFlags(&e->s, cudaStreamNonBlocking));
    IH_CUDNN(cudnnCreate(&e->dnn));
    IH_CUDNN(cudnnSetStream(e->dnn, e->s));
    IH_CUBLAS(cublasCreate(&e->blas));
    IH_CUBLAS(cublasSetStream(e->blas, e->s));
    /* a workspace of our own, so cuBLAS allocates nothing inside a captured step */
    IH_CUDA(cudaMalloc(&e->blas_ws, (size_t)32 << 20));
    IH_CUBLAS(cublasSetWorkspace(e->blas, e->blas_ws, (size_t)32 << 20));
    IH_CUDA(cudaStreamCreateWithFlags(&e->cs, cudaStreamNonBlocking));
    IH_CUDA(cudaStreamCreateWithFlags(&e->xs, cudaStreamNonBlocking));
    IH_CUDA(cudaEventCreateWithFlags(&e->xev, cudaEventDisableTiming));
    IH_CUDA(cudaEventCreateWithFlags(&e->copied, cudaEventDisableTiming));
    IH_CUDA(cudaEventCreateWithFlags(&e->landed_free, cudaEventDisableTiming));
    IH_CUBLAS(cublasSetMathMode(e->blas, e->prec == MODEL_PREC_FP32 ? CUBLAS_PEDANTIC_MATH
                                                                    : CUBLAS_DEFAULT_MATH));
    e->val = (void **)calloc(nt, sizeof(void *));
    e->grad = (void **)calloc(nt, sizeof(void *));
    e->dt = (int *)calloc(nt, sizeof(int));
    e->fuse = (int *)calloc(nl + 1, sizeof(int));
    e->conv = (conv_plan *)calloc(nl, sizeof(conv_plan));
    e->aux_off = (size_t *)calloc(nl, sizeof(size_t));
    e->arg_off = (size_t *)calloc(nl, sizeof(size_t));
    e->h_loss = (double *)calloc(B, sizeof(double));
    e->h_hit = (int *)calloc(B, sizeof(int));
    if (!e->val || !e->grad || !e->dt || !e->fuse || !e->conv || !e->aux_off || !e->arg_off ||
        !e->h_loss || !e->h_hit)
        return ih_fail(IH_E_SYS, "model cuda: out of host memory");

    /* dtypes (see the file header) and fusion of BN/ADD + in-place ReLU */
    int cdt = e->prec == MODEL_PREC_BF16 ? BF16 : e->prec == MODEL_PREC_FP16 ? F16 : F32;
    e->lp = cdt;
    e->dt[0] = cdt;
    e->cpad = cdt != F32 ? 8 : 4;
    for (int i = 0; i < nl; i++) {
        const model_layer *l = &g->layers[i];
        int in = e->dt[l->in[0]];
        switch (l->op) {
        case MODEL_OP_CONV:
        case MODEL_OP_MAXPOOL:
        case MODEL_OP_ADD: e->dt[l->out] = in; break;
        case MODEL_OP_BN: e->dt[l->out] = cdt; break;
        case MODEL_OP_AVGPOOL:
        case MODEL_OP_FC: e->dt[l->out] = F32; break;
        case MODEL_OP_RELU: break;
        }
        if (l->op == MODEL_OP_ADD && e->dt[l->in[1]] != in)
            return ih_fail(IH_E_INTERNAL, "model cuda: layer %d adds tensors of different types", i);
        if (l->op == MODEL_OP_RELU && i > 0 && g->layers[i - 1].out == l->in[0] &&
            (g->layers[i - 1].op == MODEL_OP_BN || g->layers[i - 1].op == MODEL_OP_ADD))
            e->fuse[i - 1] = 1;
    }

    /* activations and their gradients: one arena, every buffer 256-byte aligned */
    size_t total = 0, aux = 0, args = 0;
    int cmax = 1;
    for (int t = 0; t < nt; t++) {
        size_t sz = t == 0 ? tsize(g, 0) / 3 * e->cpad : tsize(g, t);
        size_t b = ((size_t)B * sz * elsize(e->dt[t]) + 255) & ~(size_t)255;
        total += b * (t > 0 ? 2 : 1);
        if (g->tensors[t].c > cmax) cmax = g->tensors[t].c;
    }
    IH_CUDA(cudaMalloc((void **)&e->arena, total));
    size_t off = 0;
    for (int t = 0; t < nt; t++) {
        size_t sz = t == 0 ? tsize(g, 0) / 3 * e->cpad : tsize(g, t);
        size_t b = ((size_t)B * sz * elsize(e->dt[t]) + 255) & ~(size_t)255;
        e->val[t] = e->arena + off;
        off += b;
        if (t > 0) {
            e->grad[t] = e->arena + off;
            off += b;
        }
    }
    for (int i = 0; i < nl; i++) {
        const model_layer *l = &g->layers[i];
        if (l->op == MODEL_OP_CONV && l->in[0] == 0) {
            if (e->wpad || l->accum[0] >= 0)
                return ih_fail(IH_E_INTERNAL, "model cuda: layer %d: only one conv may read the "
                               "input, and it needs no input gradient", i);
            size_t pb = (size_t)l->k * l->r * l->s * e->cpad * elsize(e->dt[0]);
            IH_CUDA(cudaMalloc(&e->wpad, pb));
            IH_CUDA(cudaMalloc(&e->dwpad, pb));
        }
        if (l->op == MODEL_OP_BN) {
            e->aux_off[i] = aux;
            aux += 7 * (size_t)g->tensors[l->out].c;
        } else if (l->op == MODEL_OP_MAXPOOL) {
            e->arg_off[i] = args;
            args += (size_t)B * tsize(g, l->out);
        }
    }
    size_t np = g->nparams, ns = g->nstate;
    IH_CUDA(cudaMalloc((void **)&e->params, (np + 1) * sizeof(float)));
    IH_CUDA(cudaMalloc((void **)&e->grads, (np + 1) * sizeof(float)));
    IH_CUDA(cudaMalloc((void **)&e->state, (ns + 1) * sizeof(float)));
    IH_CUDA(cudaMemset(e->grads, 0, (np + 1) * sizeof(float)));
    IH_CUDA(cudaHostAlloc((void **)&e->h_grads, (np + 1) * sizeof(float), cudaHostAllocDefault));
    memset(e->h_grads, 0, (np + 1) * sizeof(float));
    IH_TRY(ready_points(e));
    if (cdt != F32) { /* bf16 and fp16 are both 2 bytes */
        IH_CUDA(cudaMalloc(&e->params16, (np + 1) * 2));
        IH_CUDA(cudaMalloc(&e->wgrad16, (np + 1) * 2));
        IH_CUDA(cudaMemset(e->wgrad16, 0, (np + 1) * 2));
    }
    e->ls = 1;
    if (cdt == F16) {
        e->ls = LS_INIT;
        IH_CUDA(cudaMalloc((void **)&e->d_skip, sizeof(int)));
        IH_CUDA(cudaMemset(e->d_skip, 0, sizeof(int)));
        IH_CUDA(cudaHostAlloc((void **)&e->h_skip, sizeof(int), cudaHostAllocDefault));
        *e->h_skip = 0;
        IH_CUDA(cudaEventCreateWithFlags(&e->skip_ev, cudaEventDisableTiming));
    }
    IH_CUDA(cudaMalloc((void **)&e->aux, (aux + 1) * sizeof(float)));
    IH_CUDA(cudaMalloc((void **)&e->partial, (size_t)PMAX * 2 * cmax * sizeof(float)));
    IH_CUDA(cudaMalloc((void **)&e->argmax, (args + 1) * sizeof(int32_t)));
    size_t ibytes = (size_t)B * g->image_size * g->image_size * 3;
    IH_CUDA(cudaMalloc((void **)&e->d_img, ibytes));
    IH_CUDA(cudaMalloc((void **)&e->d_img_in, ibytes));
    IH_CUDA(cudaMalloc((void **)&e->d_lab, (size_t)B * sizeof(int32_t)));
    IH_CUDA(cudaMalloc((void **)&e->d_lab_in, (size_t)B * sizeof(int32_t)));
    IH_CUDA(cudaHostAlloc((void **)&e->h_img, ibytes, cudaHostAllocDefault));
    IH_CUDA(cudaHostAlloc((void **)&e->h_lab, (size_t)B * sizeof(int32_t), cudaHostAllocDefault));
    {
        const char *genv = getenv("IH_CUDA_GRAPH");
        e->graph_off = genv && !strcmp(genv, "0");
        e->graph_require = genv && !strcmp(genv, "require");
    }
    IH_CUDA(cudaMalloc((void **)&e->d_loss, (size_t)B * sizeof(double)));
    IH_CUDA(cudaMalloc((void **)&e->d_hit, (size_t)B * sizeof(int)));

    size_t ws = 0;
    for (int i = 0; i < nl; i++)
        if (g->layers[i].op == MODEL_OP_CONV) IH_TRY(model_cuda_conv_plan_create(e, i, &ws));
    const char *fenv = getenv("IH_CUDNN_FIND");
    if (cdt != F32 && !e->graph_api && !(fenv && !strcmp(fenv, "0"))) {
        /* measure at create (seconds for ResNet-50); IH_CUDNN_FIND=0 keeps the heuristics */
        size_t cap = WS_CAP, fws = 0;
        void *tmp = NULL;
        while (cudaMalloc(&tmp, cap) != cudaSuccess && cap > ((size_t)64 << 20)) cap /= 2;
        if (!tmp) {
            (void)cudaGetLastError();
            IH_WARN("model cuda: no memory to measure convolution algorithms; keeping cuDNN's "
                    "heuristic choices");
        } else {
            ih_err fe = IH_OK;
            for (int i = 0; i < nl && fe == IH_OK; i++)
                if (g->layers[i].op == MODEL_OP_CONV) fe = model_cuda_conv_find(e, i, tmp, cap, &fws);
            cudaError_t ce = cudaFree(tmp);
            IH_TRY(fe);
            if (ce != cudaSuccess)
                return ih_fail(IH_E_CUDA, "CUDA: cudaFree(find workspace): %s", cudaGetErrorString(ce));
            ws = fws;
        }
    }
    if (e->cudnn_bn) IH_TRY(model_cuda_bn_dnn_create(e, &ws));
    e->ws_bytes = ws;
    IH_CUDA(cudaMalloc(&e->ws, ws + 1));
    e->cur_n = B;
    e->bn_n = B; /* bn_cudnn.cu described its layers at max_batch */
    IH_CUDA(cudaStreamSynchronize(e->s));
    IH_INFO(IH_LOG_MODEL, "model cuda: %s, %.1f MiB of activations+gradients for batch %d, "
            "cuDNN %s API, BN on %s, workspace %.1f MiB", cdt != F32 ? dt_name(cdt) : "fp32 (exact)",
            total / 1048576.0, B, e->graph_api ? "graph" : "legacy", e->cudnn_bn ? "cuDNN" : "our kernels",
            ws / 1048576.0);
    return IH_OK;
}

ih_err model_cuda_net_create(net **out, const model_graph *g, int max_batch, double bn_momentum,
                             double bn_eps, model_precision prec)
{
    *out = NULL;
    char why[160];
    if (!model_cuda_available(why, sizeof why))
        return ih_fail(IH_E_CUDA, "model: %s; use the CPU backend", why);
    if (max_batch < 1) return ih_fail(IH_E_USAGE, "model: max_batch %d must be >= 1", max_batch);
    net *e = (net *)calloc(1, sizeof *e);
    if (!e) return ih_fail(IH_E_SYS, "model cuda: out of memory");
    e->g = g;
    e->max_batch = max_batch;
    e->momentum = bn_momentum;
    e->eps = bn_eps;
    e->prec = prec == MODEL_PREC_FP32 || prec == MODEL_PREC_FP16 ? prec : MODEL_PREC_BF16;
    ih_err err = create_inner(e);
    if (err != IH_OK) {
        model_cuda_net_destroy(e);
        return err;
    }
    *out = e;
    return IH_OK;
}

/* ---- host copies ---- */

/* ---- dtype-dispatched launchers of the weight/gradient conversions (DISPATCH1 on a dtype) ---- */

template <typename T> static ih_err pad_stem_t(net *e, const model_layer *l)
{
    size_t rows = (size_t)l->k * l->r * l->s;
    pad_weights_k<T><<<grid_for(e, rows * e->cpad, 256), 256, 0, e->s>>>(
        e->params + l->w_off, (T *)e->wpad, rows, 3, e->cpad);
    IH_CUDA_LAUNCHED("pad_weights_k");
    return IH_OK;
}

template <typename T> static ih_err unpad_add_t(net *e, const model_layer *l, float gs)
{
    size_t rows = (size_t)l->k * l->r * l->s;
    unpad_add_k<T><<<grid_for(e, rows * 3, 256), 256, 0, e->s>>>((const T *)e->dwpad,
                                                                e->grads + l->w_off, rows, 3, e->cpad, gs);
    IH_CUDA_LAUNCHED("unpad_add_k");
    return IH_OK;
}

template <typename T> static ih_err to_lp_t(net *e)
{
    size_t np = e->g->nparams;
    to_lp_k<T><<<grid_for(e, np, 256), 256, 0, e->s>>>(e->params, (T *)e->params16, np);
    IH_CUDA_LAUNCHED("to_lp_k");
    return IH_OK;
}

template <typename T> static ih_err add_lp_t(net *e, size_t off, size_t cnt, float gs)
{
    add_lp_to_f32_k<T><<<grid_for(e, cnt, 256), 256, 0, e->s>>>((const T *)lp_at(e->wgrad16, off),
                                                               e->grads + off, cnt, gs);
    IH_CUDA_LAUNCHED("add_lp_to_f32_k");
    return IH_OK;
}

template <typename T> static ih_err sgd_t(net *e, const optim_sgd_plan *p, const int *skip)
{
    sgd_k<T><<<e->ntiles, 256, 0, e->s>>>(e->params, e->grads, e->mom, (T *)e->params16, e->tiles,
                                          *p, skip);
    IH_CUDA_LAUNCHED("sgd_k");
    return IH_OK;
}

/* The padded copy of the stem conv's weights that the stem reads (file header), from the fp32
 * master weights. Queued on s. */
static ih_err pad_stem(net *e)
{
    for (int i = 0; i < e->g->nlayers; i++) {
        const model_layer *l = &e->g->layers[i];
        if (l->op != MODEL_OP_CONV || l->in[0] != 0) continue;
        IH_TRY(DISPATCH1(e->dt[0], pad_stem_t, e, l));
    }
    return IH_OK;
}

ih_err model_cuda_put_params(net *e, const float *params)
{
    size_t np = e->g->nparams;
    IH_CUDA(cudaMemcpyAsync(e->params, params, np * sizeof(float), cudaMemcpyHostToDevice, e->s));
    if (e->params16) IH_TRY(DISPATCH1(e->lp, to_lp_t, e));
    IH_TRY(pad_stem(e));
    IH_CUDA(cudaStreamSynchronize(e->s));
    return IH_OK;
}

ih_err model_cuda_get_params(net *e, float *params)
{
    IH_CUDA(cudaMemcpyAsync(params, e->params, e->g->nparams * sizeof(float), cudaMemcpyDeviceToHost, e->s));
    IH_CUDA(cudaStreamSynchronize(e->s));
    return IH_OK;
}

float *model_cuda_host_grads(net *e) { return e->h_grads; }

ih_err model_cuda_device_view(net *e, float **grads, void **stream, int *device, int *devices,
                              unsigned char uuid[16])
{
    IH_CUDA(cudaSetDevice(e->dev));
    int n = 0;
    IH_CUDA(cudaGetDeviceCount(&n));
    cudaDeviceProp prop;
    IH_CUDA(cudaGetDeviceProperties(&prop, e->dev));
    memcpy(uuid, prop.uuid.bytes, 16);
    *grads = e->grads;
    *stream = (void *)e->xs;
    *device = e->dev;
    *devices = n;
    return IH_OK;
}

ih_err model_cuda_bind_thread(net *e)
{
    IH_CUDA(cudaSetDevice(e->dev));
    return IH_OK;
}

ih_err model_cuda_upload_grads(net *e, size_t lo, size_t hi)
{
    if (hi > e->g->nparams || lo > hi)
        return ih_fail(IH_E_INTERNAL, "model cuda: gradient range [%zu, %zu) outside [0, %zu)", lo, hi,
                       e->g->nparams);
    if (hi > lo)
        IH_CUDA(cudaMemcpyAsync(e->grads + lo, e->h_grads + lo, (hi - lo) * sizeof(float), cudaMemcpyHostToDevice,
                                e->xs));
    return IH_OK;
}

ih_err model_cuda_join_uploads(net *e)
{
    IH_CUDA(cudaEventRecord(e->xev, e->xs));
    IH_CUDA(cudaStreamWaitEvent(e->s, e->xev, 0));
    return IH_OK;
}

/* ---- SGD on the device ---- */

ih_err model_cuda_sgd_setup(net *e, const optim_seg *segs, size_t nsegs, float weight_decay)
{
    size_t nt = 0;
    for (size_t i = 0; i < nsegs; i++) nt += (segs[i].count + SGD_TILE - 1) / SGD_TILE;
    if (nt == 0 || nt > 0x7fffffffu)
        return ih_fail(IH_E_INTERNAL, "model cuda: %zu SGD tiles for %zu segments", nt, nsegs);
    sgd_tile *t = (sgd_tile *)malloc(nt * sizeof *t);
    if (!t) return ih_fail(IH_E_SYS, "model cuda: out of memory (SGD tiles)");
    size_t k = 0;
    for (size_t i = 0; i < nsegs; i++)
        for (size_t o = 0; o < segs[i].count; o += SGD_TILE) {
            size_t c = segs[i].count - o, cap = SGD_TILE;
            sgd_tile tl = {segs[i].offset + o, (unsigned)(c < cap ? c : cap),
                           segs[i].no_decay ? 0.0f : weight_decay};
            t[k++] = tl;
        }
    ih_err err = IH_OK;
    if (e->tiles) IH_CUDA_GOTO(cudaFree(e->tiles), err, out);
    e->tiles = NULL;
    IH_CUDA_GOTO(cudaMalloc((void **)&e->tiles, nt * sizeof *t), err, out);
    IH_CUDA_GOTO(cudaMemcpy(e->tiles, t, nt * sizeof *t, cudaMemcpyHostToDevice), err, out);
    e->ntiles = (unsigned)nt;
    if (!e->mom) {
        IH_CUDA_GOTO(cudaMalloc((void **)&e->mom, (e->g->nparams + 1) * sizeof(float)), err, out);
        IH_CUDA_GOTO(cudaMemset(e->mom, 0, (e->g->nparams + 1) * sizeof(float)), err, out);
    }
out:
    free(t);
    return err;
}

ih_err model_cuda_sgd_step(net *e, const optim_sgd_plan *p)
{
    if (!e->mom || !e->tiles) return ih_fail(IH_E_INTERNAL, "model cuda: SGD step before sgd_setup");
    if (e->lp != F16) {
        IH_TRY(DISPATCH1(e->lp, sgd_t, e, p, (const int *)NULL));
        return pad_stem(e);
    }
    /* fp16: skip the update if a gradient overflowed (after the allreduce, so every worker
     * decides alike: inf and NaN survive the sum), and read the flag back for the scale */
    IH_TRY(resolve_skip(e));
    IH_CUDA(cudaMemsetAsync(e->d_skip, 0, sizeof(int), e->s));
    size_t np = e->g->nparams;
    nonfinite_k<<<grid_for(e, np, 256), 256, 0, e->s>>>(e->grads, np, e->d_skip);
    IH_CUDA_LAUNCHED("nonfinite_k");
    IH_TRY(sgd_t<f16>(e, p, e->d_skip));
    IH_TRY(pad_stem(e));
    IH_CUDA(cudaMemcpyAsync(e->h_skip, e->d_skip, sizeof(int), cudaMemcpyDeviceToHost, e->s));
    IH_CUDA(cudaEventRecord(e->skip_ev, e->s));
    e->skip_pending = 1;
    return IH_OK;
}

/* fp16 dynamic loss scaling: the outcome of the last SGD step sets the next steps' scale
 * (halved after an overflow, doubled after LS_GROWTH good steps, within [1, LS_MAX]). Waits
 * for that step's flag if it is still in flight (the next step would wait for it anyway). */
static ih_err resolve_skip(net *e)
{
    if (!e->skip_pending) return IH_OK;
    IH_CUDA(cudaEventSynchronize(e->skip_ev));
    e->skip_pending = 0;
    if (*e->h_skip) {
        e->skipped++;
        e->good_steps = 0;
        if (e->ls > 1) e->ls *= 0.5;
        IH_INFO(IH_LOG_MODEL, "model cuda: fp16 gradients overflowed: step skipped, loss scale now %g",
                e->ls);
    } else if (++e->good_steps >= LS_GROWTH) {
        e->good_steps = 0;
        if (e->ls < LS_MAX) e->ls *= 2;
    }
    return IH_OK;
}

ih_err model_cuda_loss_scale(net *e, double *scale, int64_t *skipped)
{
    IH_TRY(resolve_skip(e));
    if (scale) *scale = e->ls;
    if (skipped) *skipped = e->skipped;
    return IH_OK;
}

ih_err model_cuda_set_loss_scale(net *e, double scale)
{
    if (e->lp != F16) return ih_fail(IH_E_USAGE, "model cuda: a loss scale applies to fp16 only");
    int ex;
    if (!(scale >= 1 && scale <= LS_MAX) || frexp(scale, &ex) != 0.5)
        return ih_fail(IH_E_USAGE, "model cuda: loss scale %g is not a power of two in [1, %g]", scale,
                       (double)LS_MAX);
    IH_TRY(resolve_skip(e));
    e->ls = scale;
    e->good_steps = 0;
    return IH_OK;
}

ih_err model_cuda_put_momentum(net *e, const float *u)
{
    if (!e->mom) return ih_fail(IH_E_INTERNAL, "model cuda: momentum before sgd_setup");
    IH_CUDA(cudaMemcpyAsync(e->mom, u, e->g->nparams * sizeof(float), cudaMemcpyHostToDevice, e->s));
    IH_CUDA(cudaStreamSynchronize(e->s));
    return IH_OK;
}

ih_err model_cuda_get_momentum(net *e, float *u)
{
    if (!e->mom) return ih_fail(IH_E_INTERNAL, "model cuda: momentum before sgd_setup");
    IH_CUDA(cudaMemcpyAsync(u, e->mom, e->g->nparams * sizeof(float), cudaMemcpyDeviceToHost, e->s));
    IH_CUDA(cudaStreamSynchronize(e->s));
    return IH_OK;
}

ih_err model_cuda_put_grads(net *e, const float *grads)
{
    IH_CUDA(cudaMemcpyAsync(e->grads, grads, e->g->nparams * sizeof(float), cudaMemcpyHostToDevice, e->s));
    IH_CUDA(cudaStreamSynchronize(e->s));
    return IH_OK;
}

ih_err model_cuda_put_state(net *e, const float *state)
{
    IH_CUDA(cudaMemcpyAsync(e->state, state, e->g->nstate * sizeof(float), cudaMemcpyHostToDevice, e->s));
    IH_CUDA(cudaStreamSynchronize(e->s));
    return IH_OK;
}

ih_err model_cuda_get_grads(net *e, float *grads)
{
    IH_CUDA(cudaMemcpyAsync(grads, e->grads, e->g->nparams * sizeof(float), cudaMemcpyDeviceToHost, e->s));
    IH_CUDA(cudaStreamSynchronize(e->s));
    return IH_OK;
}

ih_err model_cuda_get_state(net *e, float *state)
{
    IH_CUDA(cudaMemcpyAsync(state, e->state, e->g->nstate * sizeof(float), cudaMemcpyDeviceToHost, e->s));
    IH_CUDA(cudaStreamSynchronize(e->s));
    return IH_OK;
}

ih_err model_cuda_zero_grads(net *e)
{
    IH_CUDA(cudaMemsetAsync(e->grads, 0, e->g->nparams * sizeof(float), e->s));
    return IH_OK;
}

ih_err model_cuda_sync(net *e)
{
    IH_CUDA(cudaStreamSynchronize(e->s));
    return IH_OK;
}

/* ---- forward / backward ---- */

/* Input path. The copy stream lands the batch (and labels) in d_img_in/d_lab_in while the
 * compute stream may still run the previous step; the compute stream then moves them to
 * d_img/d_lab (device copies, ~20 us for 256 images), the fixed addresses a captured step
 * reads, and frees the landing buffers for the next batch. Pageable images are first copied
 * into pinned staging by this thread (a pageable cudaMemcpyAsync would block the thread until
 * the stream drained); pinned ones (the pipeline's) are copied directly, and *wait tells the
 * caller to wait for `copied` before returning, as the caller may reuse them afterwards. */
static ih_err put_input(net *e, const uint8_t *images, const int32_t *labels, int n, int *wait)
{
    const model_graph *g = e->g;
    size_t bytes = (size_t)n * g->image_size * g->image_size * 3;
    cudaPointerAttributes pa;
    int pinned = cudaPointerGetAttributes(&pa, images) == cudaSuccess && pa.type == cudaMemoryTypeHost;
    (void)cudaGetLastError(); /* a pageable pointer may leave an error on old drivers */
    IH_CUDA(cudaEventSynchronize(e->copied)); /* the previous copy out of the staging is done */
    const uint8_t *src = images;
    if (!pinned) {
        memcpy(e->h_img, images, bytes);
        src = e->h_img;
    }
    if (labels) memcpy(e->h_lab, labels, (size_t)n * sizeof(int32_t));
    IH_CUDA(cudaStreamWaitEvent(e->cs, e->landed_free, 0));
    IH_CUDA(cudaMemcpyAsync(e->d_img_in, src, bytes, cudaMemcpyHostToDevice, e->cs));
    if (labels)
        IH_CUDA(cudaMemcpyAsync(e->d_lab_in, e->h_lab, (size_t)n * sizeof(int32_t),
                                cudaMemcpyHostToDevice, e->cs));
    IH_CUDA(cudaEventRecord(e->copied, e->cs));
    IH_CUDA(cudaStreamWaitEvent(e->s, e->copied, 0));
    IH_CUDA(cudaMemcpyAsync(e->d_img, e->d_img_in, bytes, cudaMemcpyDeviceToDevice, e->s));
    if (labels)
        IH_CUDA(cudaMemcpyAsync(e->d_lab, e->d_lab_in, (size_t)n * sizeof(int32_t),
                                cudaMemcpyDeviceToDevice, e->s));
    IH_CUDA(cudaEventRecord(e->landed_free, e->s));
    *wait = pinned;
    return IH_OK;
}

/* IH_CUDNN_FUSE=stats: the fused-statistics plans for the current batch size, made on its
 * first training step (host work: heuristics, maybe runtime compilation; never inside a
 * capture). A no-op once made, and without the fusion. */
static ih_err plan_stats(net *e)
{
    if (!e->fuse_stats) return IH_OK;
    for (int i = 0; i < e->g->nlayers; i++)
        if (e->conv[i].gp) IH_TRY(model_cuda_conv_graph_plan_stats(e->conv[i].gp, e->ws_bytes));
    return IH_OK;
}

/* A BN layer's forward: training on cuDNN (IH_CUDNN_BN) or ours (pre: from the fused
 * statistics, IH_CUDNN_FUSE), eval ours. */
static ih_err bn_forward(net *e, const model_layer *l, int n, int train, int pre)
{
    const int tx = e->dt[l->in[0]], ty = e->dt[l->out];
    if (!train) return DISPATCH2(tx, ty, bn_fwd_eval_t, e, l, n);
    if (model_cuda_bn_dnn_has_fwd(e, l)) {
        IH_TRY(model_cuda_bn_dnn_fwd(e, l, n));
        if (model_cuda_bn_dnn_has_fwd(e, l)) return IH_OK; /* else refused just now: ours */
    }
    return DISPATCH2(tx, ty, bn_fwd_train_t, e, l, n, pre);
}

/* Forward from d_img (put_input first). No host synchronisation: may be captured. */
static ih_err forward(net *e, int n, int train)
{
    const model_graph *g = e->g;
    static const float one = 1.0f, zero = 0.0f;
    IH_TRY(set_batch(e, n, train));
    if (train && !e->capturing) IH_TRY(plan_stats(e)); /* run_step did it before a capture */
    int stats_of = -1; /* the tensor whose fused statistics are in partial (IH_CUDNN_FUSE), or -1 */
    size_t npix = (size_t)n * g->image_size * g->image_size;
    {
        const float mr = (float)(255 * MODEL_MEAN_R), mg = (float)(255 * MODEL_MEAN_G),
                    mb = (float)(255 * MODEL_MEAN_B), ir = (float)(1.0 / (255 * MODEL_STD_R)),
                    ig = (float)(1.0 / (255 * MODEL_STD_G)), ib = (float)(1.0 / (255 * MODEL_STD_B));
        if (e->dt[0] == BF16)
            input_pad_k<bf16><<<grid_for(e, npix, 256), 256, 0, e->s>>>(
                e->d_img, (bf16 *)e->val[0], npix, e->cpad, mr, mg, mb, ir, ig, ib);
        else if (e->dt[0] == F16)
            input_pad_k<f16><<<grid_for(e, npix, 256), 256, 0, e->s>>>(
                e->d_img, (f16 *)e->val[0], npix, e->cpad, mr, mg, mb, ir, ig, ib);
        else
            input_pad_k<float><<<grid_for(e, npix, 256), 256, 0, e->s>>>(
                e->d_img, (float *)e->val[0], npix, e->cpad, mr, mg, mb, ir, ig, ib);
        IH_CUDA_LAUNCHED("input_pad_k");
    }
    for (int i = 0; i < g->nlayers; i++) {
        const model_layer *l = &g->layers[i];
        const model_shape *xs = &g->tensors[l->in[0]];
        size_t len = (size_t)n * xs->h * xs->w * xs->c;
        int tx = e->dt[l->in[0]];
        switch (l->op) {
        case MODEL_OP_CONV: {
            conv_plan *p = &e->conv[i];
            const void *w = l->in[0] == 0 ? (const void *)e->wpad
                            : tx != F32   ? (const void *)lp_at(e->params16, l->w_off)
                                          : (const void *)(e->params + l->w_off);
            if (train && p->gp && model_cuda_conv_graph_has_stats(p->gp)) {
                /* the BN after it (conv.cu's conv_graph_plan rule) reads the sums from partial */
                const model_layer *bn = &g->layers[i + 1];
                IH_CUDA(cudaMemsetAsync(e->partial, 0, 2 * (size_t)l->k * sizeof(float), e->s));
                IH_TRY(model_cuda_conv_graph_fwd_stats(p->gp, e->val[l->in[0]], w, e->val[l->out],
                                                       e->state + bn->state_off, e->partial,
                                                       e->partial + l->k, e->ws));
                stats_of = l->out;
                continue; /* the next layer, with stats_of kept */
            }
            IH_TRY(model_cuda_conv_fwd(e, p, e->val[l->in[0]], w, e->val[l->out]));
            break;
        }
        case MODEL_OP_BN:
            /* IH_CUDNN_BN=cudnn+add: this BN runs at its residual join (the ADD below) */
            if (train && model_cuda_bn_dnn_deferred(e, l)) break;
            IH_TRY(bn_forward(e, l, n, train, stats_of == l->in[0]));
            break;
        case MODEL_OP_RELU:
            if (!(i > 0 && e->fuse[i - 1])) IH_TRY(DISPATCH1(tx, relu_t, e, l->in[0], len, 0));
            break;
        case MODEL_OP_MAXPOOL: IH_TRY(DISPATCH1(tx, maxpool_t, e, l, n, 0)); break;
        case MODEL_OP_AVGPOOL: IH_TRY(DISPATCH1(tx, avgpool_t, e, l, n, 0)); break;
        case MODEL_OP_FC: {
            int cin = xs->c, k = l->k;
            float *y = (float *)e->val[l->out];
            IH_CUBLAS(cublasSgemm(e->blas, CUBLAS_OP_T, CUBLAS_OP_N, k, n, cin, &one,
                                  e->params + l->w_off, cin, (const float *)e->val[l->in[0]], cin,
                                  &zero, y, k));
            bias_add_k<<<grid_for(e, (size_t)n * k, 256), 256, 0, e->s>>>(y, e->params + l->b_off, n, k);
            IH_CUDA_LAUNCHED("bias_add_k");
            break;
        }
        case MODEL_OP_ADD: {
            /* a BN deferred to here runs with the add (and the fused ReLU) as one cuDNN call;
             * after a refusal just now, the BN's forward, then the add, apart */
            int done = 0;
            const int bi = train ? model_cuda_bn_dnn_join_of(e, l) : -1;
            if (bi >= 0) {
                IH_TRY(model_cuda_bn_dnn_join_fwd(e, l, n));
                done = model_cuda_bn_dnn_join_of(e, l) >= 0;
                if (!done) IH_TRY(bn_forward(e, &g->layers[bi], n, 1, 0));
            }
            if (!done) IH_TRY(DISPATCH1(tx, add_t, e, l, len, 0));
            break;
        }
        }
        stats_of = -1; /* the sums in partial are for the layer right after their conv only */
    }
    return IH_OK;
}

/* Grad-ready point j (file header of net.h): the kernels producing grads[pt_off[j], pt_hi[j])
 * are queued on s. Variant 0 records the point's event on s. Variant 1 forks the copy stream
 * off s, copies the range into the pinned host mirror there and records the event after the
 * copy, so backward goes on while the copy runs; step_body joins gs back into s at the end.
 * While capturing, the events are recorded as "external" event-record nodes, which each
 * launch of the graph records, so the host can wait for them (cudaEventSynchronize after
 * cudaGraphLaunch); eagerly they are plain records. */
static ih_err mark_ready(net *e, int j, int to_host)
{
    const unsigned fl = e->capturing ? cudaEventRecordExternal : cudaEventRecordDefault;
    if (!to_host) {
        IH_CUDA(cudaEventRecordWithFlags(e->pt_ev[0][j], e->s, fl));
        return IH_OK;
    }
    const size_t lo = e->pt_off[j], hi = e->pt_hi[j];
    IH_CUDA(cudaEventRecord(e->gfork, e->s));
    IH_CUDA(cudaStreamWaitEvent(e->gs, e->gfork, 0));
    IH_CUDA(cudaMemcpyAsync(e->h_grads + lo, e->grads + lo, (hi - lo) * sizeof(float),
                            cudaMemcpyDeviceToHost, e->gs));
    IH_CUDA(cudaEventRecordWithFlags(e->pt_ev[1][j], e->gs, fl));
    return IH_OK;
}

static ih_err backward(net *e, int n, int to_host)
{
    const model_graph *g = e->g;
    static const float one = 1.0f, zero = 0.0f;
    for (int i = g->nlayers - 1; i >= 0; i--) {
        const model_layer *l = &g->layers[i];
        const model_shape *xs = &g->tensors[l->in[0]];
        size_t len = (size_t)n * xs->h * xs->w * xs->c;
        int tx = e->dt[l->in[0]], ty = e->dt[l->out];
        switch (l->op) {
        case MODEL_OP_CONV: {
            conv_plan *p = &e->conv[i];
            int b16 = tx != F32; /* bf16 or fp16 */
            int padded = l->in[0] == 0;
            void *dw = padded ? e->dwpad
                       : b16  ? lp_at(e->wgrad16, l->w_off)
                              : (void *)(e->grads + l->w_off);
            IH_TRY(model_cuda_conv_bwd_filter(e, p, l, e->val[l->in[0]], e->grad[l->out], dw));
            /* parameter gradients are stored unscaled: x 1/ls (fp16 loss scaling; else 1) */
            const float gs = (float)(1.0 / e->ls);
            if (padded) {
                IH_TRY(DISPATCH1(tx, unpad_add_t, e, l, gs));
            } else if (b16) {
                /* this layer's bf16/fp16 weight gradient into the fp32 gradients now, so its
                 * range is final at its grad-ready point */
                size_t cnt = (size_t)l->k * l->r * l->s * xs->c;
                IH_TRY(DISPATCH1(tx, add_lp_t, e, l->w_off, cnt, gs));
            }
            if (l->accum[0] >= 0) {
                const void *w = b16 ? (const void *)lp_at(e->params16, l->w_off)
                                    : (const void *)(e->params + l->w_off);
                IH_TRY(model_cuda_conv_bwd_data(e, p, l, w, e->grad[l->out], e->grad[l->in[0]]));
            }
            break;
        }
        case MODEL_OP_BN:
        {
            /* done at its residual join (IH_CUDNN_BN=cudnn+add) */
            if (model_cuda_bn_dnn_join_bwd_on(e, l)) break;
            int done = 0; /* by cuDNN (IH_CUDNN_BN); a refusal just now leaves it to ours */
            if (model_cuda_bn_dnn_has_bwd(e, l)) {
                IH_TRY(model_cuda_bn_dnn_bwd(e, l, n));
                done = model_cuda_bn_dnn_has_bwd(e, l);
            }
            if (!done) IH_TRY(DISPATCH2(tx, ty, bn_bwd_t, e, l, n));
            break;
        }
        case MODEL_OP_RELU:
            if (!(i > 0 && e->fuse[i - 1])) IH_TRY(DISPATCH1(tx, relu_t, e, l->in[0], len, 1));
            break;
        case MODEL_OP_MAXPOOL: IH_TRY(DISPATCH1(tx, maxpool_t, e, l, n, 1)); break;
        case MODEL_OP_AVGPOOL: IH_TRY(DISPATCH1(tx, avgpool_t, e, l, n, 1)); break;
        case MODEL_OP_FC: {
            int cin = xs->c, k = l->k;
            const float *x = (const float *)e->val[l->in[0]], *dy = (const float *)e->grad[l->out];
            const float gs = (float)(1.0 / e->ls); /* dy carries the loss scale; the grads do not */
            IH_CUBLAS(cublasSgemm(e->blas, CUBLAS_OP_N, CUBLAS_OP_T, cin, k, n, &gs, x, cin, dy, k,
                                  &one, e->grads + l->w_off, cin));
            bias_grad_k<<<(k + 127) / 128, 128, 0, e->s>>>(dy, e->grads + l->b_off, n, k, gs);
            IH_CUDA_LAUNCHED("bias_grad_k");
            if (l->accum[0] >= 0)
                IH_CUBLAS(cublasSgemm(e->blas, CUBLAS_OP_N, CUBLAS_OP_N, cin, n, k, &one,
                                      e->params + l->w_off, cin, dy, k,
                                      l->accum[0] > 0 ? &one : &zero, (float *)e->grad[l->in[0]], cin));
            break;
        }
        case MODEL_OP_ADD: {
            /* the joined BN's backward with the add's (IH_CUDNN_BN=cudnn+add); after a refusal
             * just now, the add's here and the BN's at its own place */
            int done = 0;
            const int bi = model_cuda_bn_dnn_join_of(e, l);
            if (bi >= 0 && model_cuda_bn_dnn_join_bwd_on(e, &g->layers[bi])) {
                IH_TRY(model_cuda_bn_dnn_join_bwd(e, l, n));
                done = model_cuda_bn_dnn_join_bwd_on(e, &g->layers[bi]);
            }
            if (!done) IH_TRY(DISPATCH1(tx, add_t, e, l, len, 1));
            break;
        }
        }
        if (e->layer_pt[i] >= 0) IH_TRY(mark_ready(e, e->layer_pt[i], to_host));
    }
    return IH_OK;
}

/* Forward, loss and backward from d_img/d_lab: the part of a step that is captured; with
 * to_host also the per-layer gradient copies, their stream joined back into s at the end. */
static ih_err step_body(net *e, int n, double loss_scale, int to_host)
{
    const model_graph *g = e->g;
    IH_TRY(forward(e, n, 1));
    int lt = g->layers[g->nlayers - 1].out;
    /* fp16: the activation gradients carry the loss scale ls; parameter gradients are stored
     * without it (backward multiplies them by 1/ls as it adds them) */
    softmax_ce_k<<<n, 32, 0, e->s>>>((const float *)e->val[lt], e->d_lab, g->num_classes,
                                     loss_scale * e->ls, (float *)e->grad[lt], e->d_loss, e->d_hit);
    IH_CUDA_LAUNCHED("softmax_ce_k");
    IH_TRY(backward(e, n, to_host));
    if (to_host) {
        IH_CUDA(cudaEventRecord(e->gjoin, e->gs));
        IH_CUDA(cudaStreamWaitEvent(e->s, e->gjoin, 0));
    }
    return IH_OK;
}

/* CUDA graph of step_body for (n, loss_scale), one per variant (to_host or not: the copies
 * are nodes of the graph, so the per-layer copies cost no host launches), captured on the
 * second use of a key and replayed: a ResNet-50 step is ~700 launches, whose host cost
 * (cuDNN's especially) bounds small batches. The first use of a key runs eagerly, a warm-up
 * as PyTorch's graph capture wants one: the libraries' one-time set-up (handles' lazy state,
 * kernel loading) then happens outside the capture, where it is executed, not recorded.
 * A failed capture is reported once and the executor stays eager (IH_CUDA_GRAPH=0 asks for
 * eager from the start; IH_CUDA_GRAPH=require makes a failed capture an error, for tests). */
static ih_err run_step(net *e, int n, double loss_scale, int to_host)
{
    const int v = to_host ? 1 : 0;
    if (e->graph_off) return step_body(e, n, loss_scale, to_host);
    if (!e->graph[v] || e->graph_n[v] != n || e->graph_scale[v] != loss_scale || e->graph_ls[v] != e->ls) {
        if (e->graph[v]) IH_CUDA(cudaGraphExecDestroy(e->graph[v]));
        e->graph[v] = NULL;
        if (e->warm_n[v] != n || e->warm_scale[v] != loss_scale || e->warm_ls[v] != e->ls) {
            e->warm_n[v] = n;
            e->warm_scale[v] = loss_scale;
            e->warm_ls[v] = e->ls;
            return step_body(e, n, loss_scale, to_host);
        }
        IH_TRY(set_batch(e, n, 1)); /* host-side descriptor and plan work, before the capture */
        IH_TRY(plan_stats(e));
        cudaGraph_t gr = NULL;
        IH_CUDA(cudaStreamBeginCapture(e->s, cudaStreamCaptureModeThreadLocal));
        e->capturing = 1;
        ih_err err = step_body(e, n, loss_scale, to_host);
        e->capturing = 0;
        if (err != IH_OK && to_host) { /* join the copy stream, which may have forked, before the end */
            (void)cudaEventRecord(e->gjoin, e->gs);
            (void)cudaStreamWaitEvent(e->s, e->gjoin, 0);
        }
        cudaError_t ce = cudaStreamEndCapture(e->s, &gr);
        if (err == IH_OK && ce == cudaSuccess) {
            ce = cudaGraphInstantiate(&e->graph[v], gr, 0);
            if (ce != cudaSuccess) e->graph[v] = NULL;
        }
        if (gr) (void)cudaGraphDestroy(gr);
        if (err != IH_OK || ce != cudaSuccess) {
            (void)cudaGetLastError();
            if (e->graph_require)
                return ih_fail(IH_E_CUDA, "model cuda: capturing the training step as a CUDA graph failed (%s) "
                               "and IH_CUDA_GRAPH=require", err != IH_OK ? ih_last_error() : cudaGetErrorString(ce));
            IH_WARN("model cuda: capturing the training step as a CUDA graph failed (%s); running "
                    "it eagerly from now on", err != IH_OK ? ih_last_error() : cudaGetErrorString(ce));
            e->graph_off = 1;
            for (int i = 0; i < 2; i++) {
                if (e->graph[i]) (void)cudaGraphExecDestroy(e->graph[i]);
                e->graph[i] = NULL;
            }
            return step_body(e, n, loss_scale, to_host);
        }
        e->graph_n[v] = n;
        e->graph_scale[v] = loss_scale;
        e->graph_ls[v] = e->ls;
    }
    IH_CUDA(cudaGraphLaunch(e->graph[v], e->s));
    return IH_OK;
}

ih_err model_cuda_train_step(net *e, const uint8_t *images, const int32_t *labels, int n,
                             double loss_scale, double *loss_sum, int *correct,
                             model_grad_ready_fn fn, void *arg, int to_host)
{
    int wait = 0;
    const int want = loss_sum || correct;
    IH_TRY(resolve_skip(e)); /* the loss scale of this step */
    IH_TRY(put_input(e, images, labels, n, &wait));
    IH_TRY(run_step(e, n, loss_scale, to_host));
    if (wait) IH_CUDA(cudaEventSynchronize(e->copied));
    if (fn)
        for (int j = 0; j < e->npts; j++) {
            IH_CUDA(cudaEventSynchronize(e->pt_ev[to_host ? 1 : 0][j]));
            fn(arg, e->pt_off[j]);
        }
    if (!want) return IH_OK;
    /* after the callbacks: h_loss/h_hit are pageable, so these copies block the thread */
    IH_CUDA(cudaMemcpyAsync(e->h_loss, e->d_loss, (size_t)n * sizeof(double), cudaMemcpyDeviceToHost, e->s));
    IH_CUDA(cudaMemcpyAsync(e->h_hit, e->d_hit, (size_t)n * sizeof(int), cudaMemcpyDeviceToHost, e->s));
    IH_CUDA(cudaStreamSynchronize(e->s));
    double loss = 0;
    int hits = 0;
    for (int i = 0; i < n; i++) {
        loss += e->h_loss[i];
        hits += e->h_hit[i];
    }
    if (loss_sum) *loss_sum = loss;
    if (correct) *correct = hits;
    return IH_OK;
}

ih_err model_cuda_eval_logits(net *e, const uint8_t *images, int n, float *logits)
{
    const model_graph *g = e->g;
    int wait = 0;
    IH_TRY(put_input(e, images, NULL, n, &wait));
    IH_TRY(forward(e, n, 0));
    int lt = g->layers[g->nlayers - 1].out;
    IH_CUDA(cudaMemcpyAsync(logits, e->val[lt], (size_t)n * g->num_classes * sizeof(float),
                            cudaMemcpyDeviceToHost, e->s));
    IH_CUDA(cudaStreamSynchronize(e->s));
    return IH_OK;
}
