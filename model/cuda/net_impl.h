/* model/cuda/net_impl.h — the CUDA executor's state, shared by its two translation units:
 * net.cu (create, the step, BN/pool/loss launchers, SGD, host copies) and conv.cu (the
 * convolution plans on cuDNN's legacy or graph API, and the three directions' dispatch).
 * Internal: nothing outside model/cuda includes it; the interface is net.h. CUDA C++.
 */
#ifndef MODEL_CUDA_NET_IMPL_H
#define MODEL_CUDA_NET_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "core/err.h"
#include "model/cuda/conv_graph.h"
#include "model/cuda/grid.h"
#include "model/cuda/net.h"
#include "model/graph.h"

enum { F32 = 0, BF16 = 1, F16 = 2 };
static const size_t WS_CAP = (size_t)1 << 30; /* cuDNN workspace cap, bytes */

typedef struct {
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t cf, cd, cw; /* per direction: each keeps its math type */
    cudnnConvolutionFwdAlgo_t fa;
    cudnnConvolutionBwdDataAlgo_t da;
    cudnnConvolutionBwdFilterAlgo_t wa;
    model_cuda_conv_graph *gp;   /* the graph-API plans (the default; the rest unused then) */
} conv_plan;

/* A BN layer on cuDNN (IH_CUDNN_BN=cudnn, bn_cudnn.cu) */
typedef struct {
    cudnnTensorDescriptor_t x, p; /* x (= y, dy, dx) at the current batch; the per-channel tensors */
    void *rs;                     /* reserve space, forward to backward, sized at max_batch */
    size_t rs_bytes;
    int p_set;                    /* p derived from x */
    int ours_fwd, ours_bwd;       /* cuDNN refused that direction (IH_CUDNN_BN=cudnn): ours runs it */
    int join;                     /* IH_CUDNN_BN=cudnn+add: the ADD layer this BN runs in (BN_ADD_ACTIVATION), or -1 */
    int ours_add_fwd, ours_add_bwd; /* cuDNN refused that direction of the join: BN and ADD run apart */
} bn_dnn;

struct model_cuda_net {
    const model_graph *g;
    int max_batch, cur_n, sms;
    int bn_n;                      /* the batch the cuDNN BN layers are described for (training steps only) */
    int dev;                       /* CUDA device ordinal (current at create) */
    cudaStream_t xs;               /* another component's work on the gradients (NCCL, the
                                      per-bucket uploads of the host path) */
    cudaEvent_t xev;               /* joins xs into s (model_cuda_join_uploads) */
    double momentum, eps;
    model_precision prec;
    int graph_api;                 /* 1 unless IH_CUDNN_API=legacy (conv_graph.h), read at create */
    int fuse_stats;                /* IH_CUDNN_FUSE: 0 none, 1 stats, 2 stats:require (bf16/fp16) */
    int cudnn_bn;                  /* IH_CUDNN_BN (bf16/fp16), read at create: 0 ours, else bits 1 cuDNN,
                                      2 require, 4 residual joins (conv_graph.h) */
    int *add_bn;                   /* per layer: for an ADD, the BN joined into it (IH_CUDNN_BN=cudnn+add), or -1 */
    bn_dnn *bnd;                   /* per layer (BN only) when BN trains on cuDNN, else NULL */
    cudnnActivationDescriptor_t relu_act; /* the ReLU cuDNN's BN fuses */
    unsigned char *bn_rs;          /* the BN layers' reserve spaces, one allocation */
    cudaStream_t s;
    cudnnHandle_t dnn;
    cublasHandle_t blas;
    float *params, *grads, *state; /* fp32 master, flat */
    void *params16, *wgrad16;      /* bf16/fp16 modes: 2-byte copies with the flat offsets */
    int lp;                        /* the low-precision type: BF16, F16, or F32 (exact mode) */
    /* fp16 dynamic loss scaling (file header); ls = 1 in the other modes */
    double ls;                     /* current loss scale, a power of two */
    int good_steps;                /* steps since the last overflow or growth */
    int64_t skipped;               /* overflowed steps (not applied) */
    int *d_skip, *h_skip;          /* the last SGD step's overflow flag; pinned copy */
    cudaEvent_t skip_ev;           /* h_skip landed */
    int skip_pending;              /* an SGD step's flag not yet read */
    int cpad;                      /* channels of the stored input tensor (3 padded) */
    void *wpad, *dwpad;            /* the input conv's padded weights and weight gradient */
    unsigned char *arena;
    void **val, **grad;            /* per tensor; grad[0] = NULL */
    int *dt;                       /* per tensor: F32 or lp */
    int *fuse;                     /* per layer: 1 = BN/ADD with the next (ReLU) layer fused */
    conv_plan *conv;               /* per layer (CONV only) */
    float *aux, *partial;
    size_t *aux_off, *arg_off;
    int32_t *argmax;
    void *ws;
    size_t ws_bytes;
    uint8_t *d_img, *d_img_in;     /* graph input; copy-stream landing buffer */
    int32_t *d_lab, *d_lab_in;
    uint8_t *h_img;                /* pinned staging for pageable callers' images */
    int32_t *h_lab;                /* pinned staging for labels */
    cudaStream_t cs;               /* input copies, overlapped with the previous step */
    cudaEvent_t copied, landed_free; /* input landed on the device; landing buffer reusable */
    /* the captured training step per variant (0: events only, 1: with host gradient copies),
     * each for its graph_n / graph_scale */
    cudaGraphExec_t graph[2];
    int graph_n[2], graph_off, capturing;
    int graph_require;             /* IH_CUDA_GRAPH=require: a failed capture is an error */
    double graph_scale[2], graph_ls[2]; /* graph_ls: the fp16 loss scale baked in */
    /* the key of the last eager warm-up step per variant: a key is captured on its second use */
    int warm_n[2];
    double warm_scale[2], warm_ls[2];
    /* grad-ready points: one per parameter layer, in backward order; point j covers
     * grads[pt_off[j], pt_hi[j]) and completes with event pt_ev[variant][j] */
    int npts;
    int *layer_pt;                 /* per layer: its point, or -1 */
    size_t *pt_off, *pt_hi;
    cudaEvent_t *pt_ev[2];
    cudaStream_t gs;               /* gradient copies to the host (joins the captured step) */
    cudaEvent_t gfork, gjoin;
    float *h_grads;                /* pinned host gradient mirror */
    float *mom;                    /* device momentum (sgd_setup) */
    struct sgd_tile *tiles;        /* device tile table (sgd_setup; kernels.cuh) */
    unsigned ntiles;
    void *blas_ws;
    double *d_loss, *h_loss;
    int *d_hit, *h_hit;
};

typedef model_cuda_net net;


static inline size_t tsize(const model_graph *g, int t)
{
    const model_shape *s = &g->tensors[t];
    return (size_t)s->h * s->w * s->c;
}

static inline size_t elsize(int dt) { return dt == F32 ? 4 : 2; }
static inline cudnnDataType_t dnn_type(int dt)
{
    return dt == BF16 ? CUDNN_DATA_BFLOAT16 : dt == F16 ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT;
}
static inline const char *dt_name(int dt) { return dt == BF16 ? "bf16" : dt == F16 ? "fp16" : "fp32"; }
/* element off of a 2-byte (bf16/fp16) flat buffer */
static inline void *lp_at(void *base, size_t off) { return (char *)base + 2 * off; }

static inline unsigned grid_for(const net *e, size_t work, unsigned threads)
{
    return model_cuda_grid(e->sms, work, threads);
}

/* beta of a conv's backward data / backward filter (1: accumulate into the gradient), one
 * rule for both APIs, since the graph plans are built with it: dx accumulates where the
 * graph says so; fp32 weight gradients accumulate into the fp32 gradients, while the bf16/fp16
 * scratch and the stem's padded gradient are overwritten and added afterwards. */
static inline int accum_data(const model_layer *l) { return l->accum[0] > 0; }
static inline int accum_filter(const net *e, const model_layer *l) { return e->dt[l->in[0]] == F32 && l->in[0] != 0; }

/* ---- bn_cudnn.cu: BN's training forward and backward on cuDNN (IH_CUDNN_BN=cudnn) ---- */

/* Descriptors and reserve spaces of every BN layer at max_batch (bf16/fp16, after e->dt and
 * e->fuse are set); grows *ws_need to cuDNN's BN workspace. IH_E_CUDA naming the layer when
 * cuDNN refuses a shape. */
ih_err model_cuda_bn_dnn_create(net *e, size_t *ws_need);
/* Re-describes every BN layer for n images; IH_E_INTERNAL if cuDNN would need more workspace
 * or reserve space than planned. Host work, no allocation. */
ih_err model_cuda_bn_dnn_set_batch(net *e, int n);
/* 1 when cuDNN runs l's training forward: BN on cuDNN and not refused for l before. */
int model_cuda_bn_dnn_has_fwd(const net *e, const model_layer *l);
/* The training forward of BN layer l (y, running statistics, aux's mean and inverse std).
 * A refusal under IH_CUDNN_BN=cudnn is logged and leaves has_fwd 0 for l: the caller then
 * asks has_fwd again and runs ours. */
ih_err model_cuda_bn_dnn_fwd(net *e, const model_layer *l, int n);
/* 1 when cuDNN runs l's backward: its forward ran on cuDNN, neither direction was refused,
 * and dx is written (not added to, not unwanted). */
int model_cuda_bn_dnn_has_bwd(const net *e, const model_layer *l);
/* Refusals as for the forward (has_bwd then 0). */
ih_err model_cuda_bn_dnn_bwd(net *e, const model_layer *l, int n);
/* IH_CUDNN_BN=cudnn+add: a BN that is the branch of a residual join relu(BN(x) + z) runs in
 * the ADD's place, as one BN_ADD_ACTIVATION call, forward and backward.
 * deferred: l's training forward runs at its join (skip it at l); join_bwd_on: and its
 * backward too (skip it at l; otherwise, after a refused join backward, our BN backward runs
 * at l); join_of: the BN layer an ADD runs, or -1. */
int model_cuda_bn_dnn_deferred(const net *e, const model_layer *l);
int model_cuda_bn_dnn_join_bwd_on(const net *e, const model_layer *l);
int model_cuda_bn_dnn_join_of(const net *e, const model_layer *add);
/* y = relu(BN(x) + z) into the ADD's output (running statistics, aux as the forward). A refusal
 * under IH_CUDNN_BN=cudnn+add is logged and leaves join_of -1: the caller then runs the BN's
 * forward and the ADD apart. */
ih_err model_cuda_bn_dnn_join_fwd(net *e, const model_layer *add, int n);
/* dx (the BN's input gradient), dz (the ADD's other input gradient, written) and the BN's
 * parameter gradients (added to, x 1 / loss scale) from the ADD's output gradient. A refusal
 * leaves join_bwd_on 0: the caller then runs the ADD's backward, and the BN's runs at its own
 * place. */
ih_err model_cuda_bn_dnn_join_bwd(net *e, const model_layer *add, int n);
void model_cuda_bn_dnn_destroy(net *e);

/* ---- conv.cu ---- */

/* The layer's plans at max_batch: legacy descriptors and heuristic algorithms, or (graph_api)
 * conv_graph.h's plans on the buffers the step uses; grows *ws_need to their workspace. */
ih_err model_cuda_conv_plan_create(net *e, int li, size_t *ws_need);
/* bf16/fp16 on the legacy API: replaces the heuristic algorithms by cudnnFind's measured
 * fastest (deterministic first), with ws (cap bytes) as the scratch; grows *ws_need. */
ih_err model_cuda_conv_find(net *e, int li, void *ws, size_t cap, size_t *ws_need);
/* Legacy API: re-describes the layer's tensors for batch n (no allocation). */
ih_err model_cuda_conv_set_batch(net *e, conv_plan *p, const model_layer *l, int n);
/* The three directions, alpha 1 and beta from accum_data/accum_filter, queued on e->s (may be
 * captured): y = conv(x, w); dx (+)= conv^T(dy, w); dw (+)= x (x) dy. */
ih_err model_cuda_conv_fwd(net *e, conv_plan *p, const void *x, const void *w, void *y);
ih_err model_cuda_conv_bwd_data(net *e, conv_plan *p, const model_layer *l, const void *w, const void *dy,
                                void *dx);
ih_err model_cuda_conv_bwd_filter(net *e, conv_plan *p, const model_layer *l, const void *x, const void *dy,
                                  void *dw);

#endif
