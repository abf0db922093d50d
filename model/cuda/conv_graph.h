/* model/cuda/conv_graph.h — one convolution layer's three directions (forward, backward data,
 * backward filter) on cuDNN's backend graph API (cudnnBackend* descriptors): net.cu's default,
 * with its legacy cudnnConvolution* calls the alternative (IH_CUDNN_API=legacy). C11; plain C
 * over cuDNN, so the file is compiled by the C compiler.
 *
 * Layouts as in net.cu: x, y and their gradients NHWC, filters KRSC (cuDNN's NHWC filter),
 * fp32 accumulation, one data type for every tensor of the layer. alpha is 1; beta (0: the
 * output is overwritten, 1: the result is added to it) is part of the operation the plan was
 * built for, so it is fixed per object, as net.cu's call sites fix it per layer.
 * Engine choice (conv_graph.c's header): heuristics mode A, then the fallback mode, engine
 * configs in their order, the first that finalizes within the workspace cap and passes the
 * numerical-note rule: fp32 exact mode only deterministic engines without tensor-core or
 * down-converting notes; the other modes deterministic ones first. No engine: IH_E_CUDA.
 * Forward with statistics (IH_CUDNN_FUSE=stats, net.cu): optionally a fourth plan, the forward
 * convolution with an epilogue that also reduces its output per channel, as the BN after it
 * needs: sum[k] = sum over n,p,q of (y - shift[k]) and sqsum[k] = the same of (y - shift[k])^2,
 * fp32, shift an fp32 per-channel input (net.cu passes the BN's running mean: once that tracks
 * the batch mean, the one-pass variance does not cancel; at 0, early on, it is unshifted). One graph: conv -> y (stored), pointwise SUB ->
 * virtual fp32 d, GenStats(d) -> sum, sqsum, for cuDNN's generic runtime fusion engines
 * ("ConvolutionFwd fusions" with a g2 epilogue). The documented support: GenStats is an
 * epilogue operation of support surface 70 only (compute capability 7.0 to 9.0, so Hopper but
 * not Blackwell), taking fp32 or fp16 input, hence the fp32 d also for a bf16 y; surfaces 80
 * and 90 allow a single reduction, not the two that sum and sqsum would need. cuDNN's samples
 * feed GenStats the stored fp16 output directly; a SUB before it, with bf16 I/O, is not among
 * them, so whether an engine takes this graph is for a GPU run to show (no engine: see
 * stats_required). The fp16-only "ConvBNfprop" pre-compiled pattern is not used. Whether the
 * statistics add into the outputs or overwrite them is not documented, so the caller zeroes
 * sum and sqsum first (then both are right).
 * Such engines usually reduce with atomics: the numerical-note rule above takes a
 * nondeterministic engine when no deterministic one qualifies, and the log names it.
 * Threads: one thread uses an object (the executor's). Planning blocks (host work, maybe
 * runtime compilation); the run functions only queue work on the handle's stream and are
 * legal inside CUDA stream capture, provided they already ran once on the same pointers
 * (the first call per pointer set builds a host-side variant pack).
 */
#ifndef MODEL_CUDA_CONV_GRAPH_H
#define MODEL_CUDA_CONV_GRAPH_H

#include <stddef.h>

#include <cudnn.h>

#include "core/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct model_cuda_conv_graph model_cuda_conv_graph;

/* A layer to plan. Pointers are only read for their alignment, which the plans promise to
 * cuDNN; the run functions check that the pointers they get keep it. */
typedef struct {
    int n, h, w, c;        /* input x, NHWC, at the batch to plan (c: stored channels, e.g.
                              the stem's padded count) */
    int k, r, s;           /* filters: k x r x s x c */
    int stride, pad;       /* the same in both spatial dimensions; dilation 1 */
    cudnnDataType_t type;  /* x, w, y, dx, dy, dw */
    int exact;             /* 1: fp32 exact mode (deterministic, no TF32 / down-conversion) */
    int bwd_data;          /* 1: plan backward data too */
    float beta_data;       /* 0 or 1, see the file header */
    float beta_filter;
    const void *xp, *wp, *yp, *dxp, *dyp, *dwp; /* x, w, y, dx, dy, dw; dxp may be NULL when
                                                    !bwd_data */
    int fwd_stats;         /* 1: also plan the forward with statistics (file header); not in
                              the exact mode (IH_E_USAGE) */
    int stats_required;    /* with fwd_stats: 1 = no engine for it is an error as for the other
                              directions; 0 = it is logged (WARN) and the object goes without
                              (model_cuda_conv_graph_has_stats says 0 for that batch) */
    const void *shiftp, *sump, *sqsump; /* with fwd_stats: shift, sum, sqsum, k fp32 each */
    const char *label;     /* the layer in logs and errors, e.g. "conv layer 3 (56x56x64 -> 64,
                              3x3/1, bf16)"; copied */
} model_cuda_conv_graph_desc;

/* IH_CUDNN_API: unset, "" or "graph" -> *graph = 1; "legacy" -> 0; anything else IH_E_USAGE
 * with a message naming the accepted values. Any thread; reads the environment. */
ih_err model_cuda_conv_api_from_env(int *graph);

/* IH_CUDNN_FUSE: unset, "" or "none" -> 0; "stats" -> 1 (the forward with statistics where
 * cuDNN has an engine for it, logged where not); "stats:require" -> 2 (where it has none, net
 * create fails naming the layer). Anything else IH_E_USAGE naming the accepted values. */
ih_err model_cuda_conv_fuse_from_env(int *fuse);

/* IH_CUDNN_BN (which BN the CUDA executor's bf16/fp16 training step runs): bits 1 cuDNN's BN
 * (bn_cudnn.cu; a layer cuDNN refuses is logged and runs on ours), 2 require (a refusal is an
 * error instead), 4 residual joins (each block's last BN, the add and the ReLU as one
 * BN_ADD_ACTIVATION call), 8 not asked for (the default: what excludes it, the fp32 exact
 * mode, IH_CUDNN_FUSE=stats or a BN epsilon below cuDNN's minimum, turns it off instead of
 * failing, net.cu's create_inner). Unset or "" ->
 * 13 (the default, cuDNN with the joins), "ours" -> 0 (model/cuda/bn.cuh's kernels),
 * "cudnn" -> 1, "cudnn:require" -> 3, "cudnn+add" -> 5, "cudnn+add:require" -> 7. Anything
 * else IH_E_USAGE naming the accepted values. Here with the other cuDNN switches so that one
 * CPU-run test checks all their parsing. */
ih_err model_cuda_bn_from_env(int *cudnn_bn);

/* Plans the directions for d->n images (at most ws_cap bytes of workspace each) and logs the
 * engines at INFO. h: the handle the plans execute on, must outlive the object. *out owned by
 * the caller until model_cuda_conv_graph_destroy. IH_E_CUDA naming the layer, the direction,
 * the engine configs tried and cuDNN's last status when a direction has no engine or a call
 * fails (nothing is leaked then); IH_E_USAGE for bad shapes; IH_E_SYS out of host memory. */
ih_err model_cuda_conv_graph_create(model_cuda_conv_graph **out, cudnnHandle_t h,
                                    const model_cuda_conv_graph_desc *d, size_t ws_cap);

/* Makes the plans for n images current: plans them like create (but for the forward with
 * statistics: model_cuda_conv_graph_plan_stats) on the first use of n (with
 * at most ws_cap bytes of workspace), reuses them afterwards. Plans of other batch sizes are
 * kept until destroy, because a captured CUDA graph may still launch their kernels. Host work;
 * call outside stream capture. Errors as create. */
ih_err model_cuda_conv_graph_set_batch(model_cuda_conv_graph *g, int n, size_t ws_cap);

/* With fwd_stats: plans the forward with statistics for the current batch if that was not
 * tried yet (create does it for d->n; set_batch does not, so batch sizes only evaluated never
 * pay for it). Host work, outside capture. No engine: a WARN and has_stats 0, or with
 * stats_required IH_E_CUDA naming the layer and both epilogues' failures. No-op without
 * fwd_stats. */
ih_err model_cuda_conv_graph_plan_stats(model_cuda_conv_graph *g, size_t ws_cap);

/* The largest workspace, bytes, of the current plans. */
size_t model_cuda_conv_graph_workspace(const model_cuda_conv_graph *g);

/* Queue one direction on the handle's stream at the current batch; ws must hold
 * model_cuda_conv_graph_workspace bytes. y = conv(x, w); dx = beta_data dx + conv^T(dy, w);
 * dw = beta_filter dw + sum over x (x) dy. Non-blocking. IH_E_CUDA when cuDNN fails,
 * IH_E_INTERNAL for a pointer less aligned than planned or an unplanned direction. */
ih_err model_cuda_conv_graph_fwd(model_cuda_conv_graph *g, const void *x, const void *w, void *y,
                                 void *ws);
ih_err model_cuda_conv_graph_bwd_data(model_cuda_conv_graph *g, const void *dy, const void *w,
                                      void *dx, void *ws);
ih_err model_cuda_conv_graph_bwd_filter(model_cuda_conv_graph *g, const void *x, const void *dy,
                                        void *dw, void *ws);

/* 1 when the current batch has the forward-with-statistics plan (fwd_stats and an engine). */
int model_cuda_conv_graph_has_stats(const model_cuda_conv_graph *g);

/* y = conv(x, w) and the statistics of the file header into sum/sqsum (zeroed by the caller
 * on the same stream first). Errors as the others; IH_E_INTERNAL when !has_stats. */
ih_err model_cuda_conv_graph_fwd_stats(model_cuda_conv_graph *g, const void *x, const void *w, void *y,
                                       const float *shift, float *sum, float *sqsum, void *ws);

/* Frees every descriptor; NULL is a no-op. The caller makes sure no queued work still uses
 * the plans (net.cu destroys after the device buffers' cudaFree, which synchronises). */
void model_cuda_conv_graph_destroy(model_cuda_conv_graph *g);

#ifdef __cplusplus
}
#endif

#endif
