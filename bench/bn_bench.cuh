/* bench/bn_bench.cuh — what bench_bn.cu and bench_bn_graph.cu share: the command line, the
 * device check, ResNet-50's BN shapes, a fast deterministic fill, downloads, the relative
 * comparison, CUDA-event timing and cuDNN's Ex BN buffers. CUDA C++, header-only, for one
 * benchmark program per translation unit (bench_prog names it in messages).
 */
#ifndef BENCH_BN_BENCH_CUH
#define BENCH_BN_BENCH_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <vector>

#include "model/graph.h"

/* cuDNN 9 marks its BN and activation functions deprecated; these benchmarks call them on
 * purpose (the Ex calls are the cuDNN BN the executor runs under IH_CUDNN_BN). */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#pragma nv_diag_suppress 1215
#pragma nv_diag_suppress 1444

typedef __nv_bfloat16 bf16;

static const char *bench_prog = "bench"; /* set by main */

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t ce_ = (call);                                                                  \
        if (ce_ != cudaSuccess) {                                                                  \
            fprintf(stderr, "%s: %s: %s (line %d)\n", bench_prog, #call, cudaGetErrorString(ce_), __LINE__); \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* --batch=256 --iters=20 --repeats=5; returns -1 to go on, else the exit status (usage: 2) */
static int bench_args(int argc, char **argv, int *n, int *iters, int *repeats)
{
    static const struct option opts[] = {{"batch", required_argument, 0, 'b'},
                                         {"iters", required_argument, 0, 'i'},
                                         {"repeats", required_argument, 0, 'r'},
                                         {0, 0, 0, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (o == 'b') *n = atoi(optarg);
        else if (o == 'i') *iters = atoi(optarg);
        else if (o == 'r') *repeats = atoi(optarg);
        else {
            fprintf(stderr, "usage: %s [--batch=256] [--iters=20] [--repeats=5]\n", argv[0]);
            return 2;
        }
    }
    if (*n < 1 || *iters < 1 || *repeats < 1) {
        fprintf(stderr, "%s: --batch, --iters and --repeats must be >= 1\n", bench_prog);
        return 2;
    }
    return -1;
}

/* Device 0's name with '_' for ' ' into gpu, and its properties; 77 (after saying so) without
 * a CUDA device, else 0. */
static int bench_device(char *gpu, size_t len, cudaDeviceProp *prop)
{
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("%s: no CUDA device: skipped\n", bench_prog);
        return 77;
    }
    CK(cudaGetDeviceProperties(prop, 0));
    snprintf(gpu, len, "%s", prop->name);
    for (char *q = gpu; *q; q++)
        if (*q == ' ') *q = '_';
    return 0;
}

typedef struct {
    int h, w, c, relu, add, count; /* relu: a ReLU follows the BN; add: the BN is a residual
                                      join's branch (model_graph_bn_joins) */
} bn_shape;

/* ResNet-50's BN layers at 224 px grouped by shape, ReLU and (by_join) join; exits on failure */
static std::vector<bn_shape> resnet50_bn_shapes(bool by_join)
{
    model_graph *g = NULL;
    if (model_graph_build(&g, "resnet50", 224, 1000, 0) != IH_OK) {
        fprintf(stderr, "%s: %s\n", bench_prog, ih_last_error());
        exit(1);
    }
    std::vector<bn_shape> shapes;
    std::vector<int> joins((size_t)g->nlayers);
    (void)model_graph_bn_joins(g, joins.data());
    for (int i = 0; i < g->nlayers; i++) {
        const model_layer *l = &g->layers[i];
        if (l->op != MODEL_OP_BN) continue;
        const model_shape *s = &g->tensors[l->in[0]];
        const int relu = i + 1 < g->nlayers && g->layers[i + 1].op == MODEL_OP_RELU && g->layers[i + 1].in[0] == l->out;
        const int add = by_join && joins[i] >= 0;
        bool found = false;
        for (auto &b : shapes)
            if (b.h == s->h && b.w == s->w && b.c == s->c && b.relu == relu && b.add == add) b.count++, found = true;
        if (!found) shapes.push_back({s->h, s->w, s->c, relu, add, 1});
    }
    model_graph_destroy(g);
    return shapes;
}

/* x[i] = mean + scale * u, u uniform with unit variance from a hash of (seed, i): a fill at
 * memory speed (the biggest tensor is 400 MB). */
static __global__ void fill_k(bf16 *x, size_t n, uint32_t seed, float scale, float mean)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 16;
        h *= 2246822519u;
        h ^= h >> 13;
        h *= 3266489917u;
        h ^= h >> 16;
        const float u = (float)(h >> 8) * (1.0f / 16777216.0f); /* [0, 1) */
        x[i] = __float2bfloat16(mean + scale * 3.4641016f * (u - 0.5f));
    }
}

static void fill(bf16 *d, size_t n, uint32_t seed, float scale, float mean)
{
    fill_k<<<1024, 256>>>(d, n, seed, scale, mean);
    CK(cudaGetLastError());
}

static std::vector<float> down_bf16(const bf16 *d, size_t n)
{
    std::vector<bf16> h(n);
    CK(cudaMemcpy(h.data(), d, n * sizeof(bf16), cudaMemcpyDeviceToHost));
    std::vector<float> out(n);
    for (size_t i = 0; i < n; i++) out[i] = __bfloat162float(h[i]);
    return out;
}

/* max |a - b| / max |b| (b the reference); *off: how many elements differ by more than
 * tol * max |b| (NaN counts) */
static double rel_maxdiff(const std::vector<float> &a, const std::vector<float> &b, double tol, size_t *off)
{
    double md = 0, sc = 0;
    for (size_t i = 0; i < b.size(); i++) sc = std::max(sc, fabs((double)b[i]));
    *off = 0;
    for (size_t i = 0; i < a.size(); i++) {
        double d = fabs((double)a[i] - b[i]);
        if (std::isnan(d)) d = INFINITY;
        md = std::max(md, d);
        *off += !(d <= tol * sc);
    }
    return sc > 0 ? md / sc : md;
}

/* The gradients behind a ReLU, a and b (b the reference), whose outputs were ya and yb: where
 * exactly one of ya, yb is positive the two masks differ (the pre-activation lies within the
 * outputs' rounding of 0) and so may the gradient, by the whole incoming one; those elements
 * are counted in *flips and left out. Elsewhere *off counts elements off by more than
 * tol * max |b|. Returns max |a - b| / max |b| over the elements compared. */
static double masked_maxdiff(const std::vector<float> &ya, const std::vector<float> &yb, const bf16 *a,
                             const bf16 *b, double tol, size_t *off, size_t *flips)
{
    const size_t cnt = ya.size();
    std::vector<float> ha = down_bf16(a, cnt), hb = down_bf16(b, cnt);
    double md = 0, sc = 0;
    for (size_t i = 0; i < cnt; i++) sc = std::max(sc, fabs((double)hb[i]));
    *off = 0;
    *flips = 0;
    for (size_t i = 0; i < cnt; i++) {
        if ((ya[i] > 0) != (yb[i] > 0)) {
            ++*flips;
            continue;
        }
        double d = fabs((double)ha[i] - hb[i]);
        if (std::isnan(d)) d = INFINITY;
        md = std::max(md, d);
        *off += !(d <= tol * sc);
    }
    return sc > 0 ? md / sc : md;
}

/* rel_maxdiff of the first cnt elements of two device tensors */
static double dev_maxdiff(const bf16 *a, const bf16 *b, size_t cnt, double tol, size_t *off)
{
    return rel_maxdiff(down_bf16(a, cnt), down_bf16(b, cnt), tol, off);
}

/* Median over repeats of the mean time (ms) of iters calls of f, after 3 warm-up calls. */
template <typename F> static double time_ms(F f, int iters, int repeats)
{
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    std::vector<double> t;
    for (int i = 0; i < 3; i++) f();
    for (int r = 0; r < repeats; r++) {
        CK(cudaEventRecord(a, 0));
        for (int i = 0; i < iters; i++) f();
        CK(cudaEventRecord(b, 0));
        CK(cudaEventSynchronize(b));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms / iters);
    }
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

/* cuDNN's Ex workspace and reserve space for BN with ops on xd (z described as xd when zd),
 * grown to fit; the first failing status otherwise. */
static cudnnStatus_t bn_buffers(cudnnHandle_t dnn, cudnnBatchNormMode_t mode, cudnnBatchNormOps_t ops,
                                cudnnTensorDescriptor_t xd, cudnnTensorDescriptor_t zd, cudnnTensorDescriptor_t pd,
                                cudnnActivationDescriptor_t ad, void **ws, size_t *ws_bytes, void **rs,
                                size_t *rs_bytes)
{
    size_t wf = 0, wb = 0, rsz = 0;
    cudnnStatus_t s = cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize(dnn, mode, ops, xd, zd, xd, pd, ad, &wf);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnGetBatchNormalizationBackwardExWorkspaceSize(dnn, mode, ops, xd, xd, xd, zd, xd, pd, ad, &wb);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnGetBatchNormalizationTrainingExReserveSpaceSize(dnn, mode, ops, ad, xd, &rsz);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (std::max(wf, wb) > *ws_bytes) {
        if (*ws) CK(cudaFree(*ws));
        *ws_bytes = std::max(wf, wb);
        CK(cudaMalloc(ws, *ws_bytes));
    }
    if (rsz > *rs_bytes) {
        if (*rs) CK(cudaFree(*rs));
        *rs_bytes = rsz;
        CK(cudaMalloc(rs, *rs_bytes));
    }
    return s;
}

/* A BN benchmark's start: the program's name for messages, the command line, the device, the
 * shapes (resnet50_bn_shapes(by_join)), a cuDNN handle on the default stream, and the largest
 * tensor (elements at batch n) and channel count. -1 to go on, else the exit status (77: no
 * device). */
static int bench_start(const char *prog, int argc, char **argv, bool by_join, int *n, int *iters, int *repeats,
                       char *gpu, size_t gpu_len, std::vector<bn_shape> *shapes, cudnnHandle_t *dnn, size_t *maxlen,
                       int *cmax)
{
    bench_prog = prog;
    const int rc = bench_args(argc, argv, n, iters, repeats);
    if (rc >= 0) return rc;
    cudaDeviceProp prop;
    if (bench_device(gpu, gpu_len, &prop)) return 77;
    *shapes = resnet50_bn_shapes(by_join);
    if (cudnnCreate(dnn) != CUDNN_STATUS_SUCCESS || cudnnSetStream(*dnn, 0) != CUDNN_STATUS_SUCCESS) {
        fprintf(stderr, "%s: cudnnCreate failed\n", prog);
        return 1;
    }
    *maxlen = 0;
    *cmax = 0;
    for (auto &b : *shapes) {
        *maxlen = std::max(*maxlen, (size_t)*n * b.h * b.w * b.c);
        *cmax = std::max(*cmax, b.c);
    }
    return -1;
}

/* cuDNN's Ex BN (SPATIAL_PERSISTENT, NHWC bf16, fp32 per-channel tensors) on one shape: the
 * descriptors, the buffers (the caller's workspace and reserve space, grown by plan) and the
 * two calls. st: the first failing status (later calls then do nothing and return it). */
struct ex_bn {
    cudnnHandle_t dnn;
    cudnnTensorDescriptor_t xd = NULL, pd = NULL;
    cudnnActivationDescriptor_t act = NULL;
    const cudnnBatchNormMode_t mode = CUDNN_BATCHNORM_SPATIAL_PERSISTENT;
    cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
    void **ws, **rs;
    size_t *ws_bytes, *rs_bytes;

    ex_bn(cudnnHandle_t h, int n, const bn_shape &b, void **ws_, size_t *wsb, void **rs_, size_t *rsb)
        : dnn(h), ws(ws_), rs(rs_), ws_bytes(wsb), rs_bytes(rsb)
    {
        cudnnCreateTensorDescriptor(&xd);
        cudnnCreateTensorDescriptor(&pd);
        cudnnCreateActivationDescriptor(&act);
        st = cudnnSetActivationDescriptor(act, CUDNN_ACTIVATION_RELU, CUDNN_NOT_PROPAGATE_NAN, 0.0);
        if (st == CUDNN_STATUS_SUCCESS)
            st = cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NHWC, CUDNN_DATA_BFLOAT16, n, b.c, b.h, b.w);
        if (st == CUDNN_STATUS_SUCCESS) st = cudnnDeriveBNTensorDescriptor(pd, xd, mode);
    }
    ~ex_bn()
    {
        cudnnDestroyActivationDescriptor(act);
        cudnnDestroyTensorDescriptor(pd);
        cudnnDestroyTensorDescriptor(xd);
    }
    cudnnActivationDescriptor_t act_of(cudnnBatchNormOps_t ops) const { return ops == CUDNN_BATCHNORM_OPS_BN ? NULL : act; }
    /* the buffers ops needs (with z: BN_ADD_ACTIVATION) */
    cudnnStatus_t plan(cudnnBatchNormOps_t ops)
    {
        const bool z = ops == CUDNN_BATCHNORM_OPS_BN_ADD_ACTIVATION;
        if (st == CUDNN_STATUS_SUCCESS)
            st = bn_buffers(dnn, mode, ops, xd, z ? xd : NULL, pd, act_of(ops), ws, ws_bytes, rs, rs_bytes);
        return st;
    }
    /* y = act(BN(x) [+ z]); running statistics with factor mom; saved mean and inverse std */
    cudnnStatus_t fwd(cudnnBatchNormOps_t ops, const bf16 *x, const bf16 *z, bf16 *y, const float *gamma,
                      const float *beta, double mom, float *rm, float *rv, double eps, float *sm, float *si) const
    {
        const float one = 1.f, zero = 0.f;
        if (st != CUDNN_STATUS_SUCCESS) return st;
        return cudnnBatchNormalizationForwardTrainingEx(dnn, mode, ops, &one, &zero, xd, x, z ? xd : NULL, z, xd, y, pd,
                                                        gamma, beta, mom, rm, rv, eps, sm, si, act_of(ops), *ws,
                                                        *ws_bytes, *rs, *rs_bytes);
    }
    /* dx (and dz) written; dgamma, dbeta = gradient + param_beta x their old values */
    cudnnStatus_t bwd(cudnnBatchNormOps_t ops, const bf16 *x, const bf16 *y, const bf16 *dy, bf16 *dz, bf16 *dx,
                      const float *gamma, const float *beta, float *dg, float *db, float param_beta, double eps,
                      const float *sm, const float *si) const
    {
        const float one = 1.f, zero = 0.f;
        if (st != CUDNN_STATUS_SUCCESS) return st;
        return cudnnBatchNormalizationBackwardEx(dnn, mode, ops, &one, &zero, &one, &param_beta, xd, x, xd, y, xd, dy,
                                                 dz ? xd : NULL, dz, xd, dx, pd, gamma, beta, dg, db, eps, sm, si,
                                                 act_of(ops), *ws, *ws_bytes, *rs, *rs_bytes);
    }
};

#endif
