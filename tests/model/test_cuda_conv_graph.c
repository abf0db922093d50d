/* test_cuda_conv_graph — one convolution layer's forward, backward data and backward filter
 * through cuDNN's backend graph API (model/cuda/conv_graph.h, net.cu's default)
 * and through the legacy API (cudnnConvolution*, IH_CUDNN_API=legacy, driven here the way net.cu
 * drives it: FMA math in fp32, deterministic algorithms first), on the same random inputs, each
 * against a float64 reference computed in this file, independent of both.
 * Shapes: ResNet's kinds of convolution: 1x1 stride 1, 3x3 stride 1, 3x3 stride 2, the 1x1
 * stride-2 projection and the 7x7 stride-2 stem whose 3 input channels are padded to net.cu's
 * cpad (4 in fp32, 8 in bf16) with zero activations and zero weights; odd spatial sizes. Each
 * at batch 5 (the planned batch), then batch 1 and 5 again (model_cuda_conv_graph_set_batch:
 * re-plan, then the cached plans). Backward data and filter with beta 0 (the output holds
 * garbage first, which must not leak in) and beta 1 (added to random old values). The graph
 * path is then captured into a CUDA graph and replayed (beta 0), as net.cu captures a step: in
 * fp32 the replay must equal the eager run bit for bit (deterministic engines).
 * Tolerances, per element, with M = the accumulated magnitude (sum of |products| over the
 * reduction, plus |old| when beta = 1):
 *   fp32 exact: |got - ref| <= 1e-5 M. fp32 accumulation of K <= ~600 terms errs by about
 *     sqrt(K) 2^-24 M ~ 2e-6 M in practice. A wrong index, stride or layout errs by far more.
 *     A TF32 engine (inputs cut to 10 bits of mantissa) errs by about 2^-11 M / sqrt(K), only
 *     2-3e-5 M at this test's K of a few hundred: the margin against TF32 is thin here, and
 *     the exact mode's refusal of tensor-core engines is what keeps it out (conv_graph.c).
 *   bf16: inputs are rounded to bf16 in the reference too, so products are exact and only fp32
 *     accumulation (<= 2e-5 M) and the final rounding of the bf16 output (half an ulp, <= 2^-8
 *     relative) remain: |got - ref| <= 2^-8 |ref| + 2e-5 M. An engine that reduces in bf16
 *     errs by ~2^-8 M and fails.
 * bf16 also runs the forward with statistics (IH_CUDNN_FUSE=stats: y and the per-channel sums of
 * y - shift and its square) against the same reference, eager and captured; see check_stats.
 * Where cuDNN has no engine for it that is a NOTE, or a failure under IH_CUDNN_FUSE=stats:require.
 * Also, before the device check: IH_CUDNN_API and IH_CUDNN_FUSE parsing (others IH_E_USAGE).
 * Seed: IH_TEST_SEED (default 1234), printed. Exit 77 without a CUDA device.
 */
#include <cuda_runtime_api.h>
#include <cudnn.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/rng.h"
#include "model/cuda/conv_graph.h"
#include "tests/check.h"

enum { NMAX = 5 };
static const size_t WS_CAP = (size_t)256 << 20;

typedef struct {
    const char *name;
    int h, w, c, k, r, stride, pad, stem; /* stem: c = the precision's cpad, 3 of them real */
} shape;

static const shape SHAPES[] = {
    {"1x1/1", 7, 7, 16, 32, 1, 1, 0, 0},
    {"3x3/1", 9, 9, 16, 16, 3, 1, 1, 0},
    {"3x3/2", 9, 9, 16, 32, 3, 2, 1, 0},
    {"1x1/2 projection", 7, 7, 32, 64, 1, 2, 0, 0},
    {"7x7/2 stem, 3 channels padded", 15, 15, 0, 16, 7, 2, 3, 1},
};

typedef struct {
    const char *name;
    cudnnDataType_t type;
    size_t es;
    int exact, cpad;
} prec;

static const prec PRECS[] = {
    {"fp32", CUDNN_DATA_FLOAT, 4, 1, 4},
    {"bf16", CUDNN_DATA_BFLOAT16, 2, 0, 8},
};

static uint64_t g_seed = 1234;

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even; no NaN/inf here */
    return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* A layer in one precision: host values (already rounded to the precision) and device buffers
 * for NMAX images. */
typedef struct {
    const shape *sh;
    const prec *pr;
    int c, oh, ow;
    size_t nx, nw, ny; /* elements at NMAX */
    double *x, *w, *dy, *dxo, *dwo;
    void *dx_d, *dw_d, *x_d, *w_d, *y_d, *dy_d;
    void *ws;
    size_t ws_bytes;
    cudnnHandle_t h;
    cudaStream_t s;
} layer;

/* Converts to the precision and back, so the reference sees what the device sees. */
static double rounded(const prec *pr, double v)
{
    return pr->type == CUDNN_DATA_FLOAT ? (double)(float)v : (double)from_bf16(to_bf16((float)v));
}

static void fill(const layer *L, double *v, size_t n, uint64_t stream, int stem_pad, int cdim)
{
    ih_rng r = ih_rng_make(g_seed, stream, 0);
    for (size_t i = 0; i < n; i++) {
        double a = rounded(L->pr, ih_rng_normal(&r));
        v[i] = stem_pad && (int)(i % (size_t)cdim) >= 3 ? 0.0 : a; /* c is innermost */
    }
}

static int upload(const layer *L, void *dst, const double *v, size_t n)
{
    void *h = malloc(n * L->pr->es);
    if (!h) return 0;
    for (size_t i = 0; i < n; i++) {
        if (L->pr->type == CUDNN_DATA_FLOAT) ((float *)h)[i] = (float)v[i];
        else ((uint16_t *)h)[i] = to_bf16((float)v[i]);
    }
    cudaError_t ce = cudaMemcpy(dst, h, n * L->pr->es, cudaMemcpyHostToDevice);
    free(h);
    CHECK(ce == cudaSuccess, "upload: %s", cudaGetErrorString(ce));
    return ce == cudaSuccess;
}

static int download(const layer *L, double *v, const void *src, size_t n)
{
    void *h = malloc(n * L->pr->es);
    if (!h) return 0;
    cudaError_t ce = cudaMemcpy(h, src, n * L->pr->es, cudaMemcpyDeviceToHost);
    CHECK(ce == cudaSuccess, "download: %s", cudaGetErrorString(ce));
    for (size_t i = 0; ce == cudaSuccess && i < n; i++)
        v[i] = L->pr->type == CUDNN_DATA_FLOAT ? ((float *)h)[i] : from_bf16(((uint16_t *)h)[i]);
    free(h);
    return ce == cudaSuccess;
}

/* float64 reference for nb images: y, dx = beta dxo + conv^T(dy, w), dw = beta dwo + x (x) dy,
 * and each element's accumulated magnitude. */
typedef struct {
    double *y, *ym, *dx, *dxm, *dw, *dwm;
} ref;

static void reference(const layer *L, int nb, int beta, ref *R)
{
    const shape *sh = L->sh;
    const int c = L->c, k = sh->k, r = sh->r;
    size_t ny = (size_t)nb * L->oh * L->ow * k, nx = (size_t)nb * sh->h * sh->w * c;
    memset(R->y, 0, ny * sizeof(double));
    memset(R->ym, 0, ny * sizeof(double));
    for (size_t i = 0; i < nx; i++) {
        R->dx[i] = beta ? L->dxo[i] : 0;
        R->dxm[i] = beta ? fabs(L->dxo[i]) : 0;
    }
    for (size_t i = 0; i < L->nw; i++) {
        R->dw[i] = beta ? L->dwo[i] : 0;
        R->dwm[i] = beta ? fabs(L->dwo[i]) : 0;
    }
    for (int n = 0; n < nb; n++)
        for (int p = 0; p < L->oh; p++)
            for (int q = 0; q < L->ow; q++)
                for (int o = 0; o < k; o++) {
                    size_t yi = (((size_t)n * L->oh + p) * L->ow + q) * k + o;
                    for (int a = 0; a < r; a++)
                        for (int b = 0; b < r; b++) {
                            int ih = p * sh->stride - sh->pad + a, iw = q * sh->stride - sh->pad + b;
                            if (ih < 0 || ih >= sh->h || iw < 0 || iw >= sh->w) continue;
                            size_t xb = (((size_t)n * sh->h + ih) * sh->w + iw) * c;
                            size_t wb = (((size_t)o * r + a) * r + b) * c;
                            for (int ch = 0; ch < c; ch++) {
                                double xv = L->x[xb + ch], wv = L->w[wb + ch], g = L->dy[yi];
                                R->y[yi] += xv * wv;
                                R->ym[yi] += fabs(xv * wv);
                                R->dx[xb + ch] += g * wv;
                                R->dxm[xb + ch] += fabs(g * wv);
                                R->dw[wb + ch] += xv * g;
                                R->dwm[wb + ch] += fabs(xv * g);
                            }
                        }
                }
}

/* Elementwise check with the file header's tolerance; prints the worst and first mismatches. */
static void compare(const layer *L, const char *what, const double *got, const double *ref_v,
                    const double *mag, const double *old, size_t n)
{
    size_t bad = 0;
    double worst = 0, worst_abs = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(got[i] - ref_v[i]);
        double tol = L->pr->exact ? 1e-5 * mag[i] : ldexp(fabs(ref_v[i]), -8) + 2e-5 * mag[i];
        /* beta 1 in bf16: engines may round the convolution to bf16 before adding the old value
         * (seen on an H100, legacy and graph alike: 1x1 backward-data and backward-filter) */
        if (old && !L->pr->exact) tol += ldexp(fabs(ref_v[i] - old[i]), -8);
        double q = d / (tol + 1e-300);
        if (q > worst || isnan(got[i])) worst = isnan(got[i]) ? INFINITY : q;
        if (d > worst_abs) worst_abs = d;
        if (!(d <= tol)) {
            if (bad < 5)
                fprintf(stderr, "  %s [%zu]: ref %.9g got %.9g (tolerance %.3g, magnitude %.3g)\n", what, i,
                        ref_v[i], got[i], tol, mag[i]);
            bad++;
        }
    }
    CHECK(bad == 0, "%s: %zu of %zu outside the tolerance, max abs diff %.3g, max diff/tolerance %.3g (seed %llu)",
          what, bad, n, worst_abs, worst, (unsigned long long)g_seed);
}

/* Sets y, dx, dw before a run: garbage for outputs that must be overwritten (beta 0), the old
 * values for those that must be added to. */
static int prime(layer *L, int beta)
{
    size_t m = L->nx > L->ny ? L->nx : L->ny;
    double *junk = malloc((m > L->nw ? m : L->nw) * sizeof(double));
    if (!junk) return 0;
    for (size_t i = 0; i < m || i < L->nw; i++) junk[i] = 1000.0 + (double)(i % 7);
    int ok = upload(L, L->y_d, junk, L->ny) && upload(L, L->dx_d, beta ? L->dxo : junk, L->nx) &&
             upload(L, L->dw_d, beta ? L->dwo : junk, L->nw);
    free(junk);
    return ok;
}

/* Downloads y, dx, dw for nb images and checks them against the reference. */
static void check_outputs(layer *L, int nb, int beta, const char *api, ref *R, double *got)
{
    char what[200];
    size_t ny = (size_t)nb * L->oh * L->ow * L->sh->k, nx = (size_t)nb * L->sh->h * L->sh->w * L->c;
    reference(L, nb, beta, R);
    const char *dir[3] = {"forward", "backward-data", "backward-filter"};
    const void *src[3] = {L->y_d, L->dx_d, L->dw_d};
    const size_t cnt[3] = {ny, nx, L->nw};
    const double *rv[3] = {R->y, R->dx, R->dw}, *mv[3] = {R->ym, R->dxm, R->dwm};
    for (int d = 0; d < 3; d++) {
        /* the graph path plans no backward-data for the stem, as net.cu (its input is the image) */
        if (d == 1 && L->sh->stem && !strncmp(api, "graph", 5)) continue;
        snprintf(what, sizeof what, "%s %s %s, batch %d, %s (beta %d)", api, L->pr->name, L->sh->name, nb, dir[d],
                 d ? beta : 0);
        const double *old = beta && d == 1 ? L->dxo : beta && d == 2 ? L->dwo : NULL;
        if (download(L, got, src[d], cnt[d])) compare(L, what, got, rv[d], mv[d], old, cnt[d]);
    }
}

static int ensure_ws(layer *L, size_t need)
{
    if (need <= L->ws_bytes && L->ws) return 1;
    if (L->ws) cudaFree(L->ws);
    L->ws = NULL;
    L->ws_bytes = 0;
    cudaError_t ce = cudaMalloc(&L->ws, need + 1);
    CHECK(ce == cudaSuccess, "workspace of %zu bytes: %s", need, cudaGetErrorString(ce));
    if (ce == cudaSuccess) L->ws_bytes = need;
    return ce == cudaSuccess;
}

#define TCUDNN(call)                                                                              \
    do {                                                                                          \
        cudnnStatus_t st_ = (call);                                                               \
        CHECK(st_ == CUDNN_STATUS_SUCCESS, "%s: %s", #call, cudnnGetErrorString(st_));            \
        if (st_ != CUDNN_STATUS_SUCCESS) goto out;                                                \
    } while (0)

/* The legacy API as net.cu uses it (conv_plan_create's PICK_ALGO without its rarely-taken
 * exhaustive fallback): the first supported algorithm within the cap, deterministic ones first,
 * FMA math in fp32, tensor-op math in bf16. */
#define PICK(res, cnt, out)                                                                       \
    do {                                                                                          \
        (out) = -1;                                                                               \
        for (int pass_ = 0; pass_ < 2 && (out) < 0; pass_++)                                      \
            for (int i_ = 0; i_ < (cnt) && (out) < 0; i_++)                                       \
                if ((res)[i_].status == CUDNN_STATUS_SUCCESS && (res)[i_].memory <= WS_CAP &&      \
                    (pass_ == 1 || (res)[i_].determinism == CUDNN_DETERMINISTIC))                  \
                    (out) = i_;                                                                   \
    } while (0)

static void legacy_run(layer *L, int nb, int beta, ref *R, double *got)
{
    cudnnTensorDescriptor_t xd = NULL, yd = NULL;
    cudnnFilterDescriptor_t wd = NULL;
    cudnnConvolutionDescriptor_t cd = NULL;
    const shape *sh = L->sh;
    const float one = 1.0f, zero = 0.0f, *bp = beta ? &one : &zero;
    cudnnConvolutionFwdAlgoPerf_t fr[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    cudnnConvolutionBwdDataAlgoPerf_t dr[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    cudnnConvolutionBwdFilterAlgoPerf_t wr[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int cnt = 0, fq = -1, dq = -1, wq = -1;
    size_t a = 0, b = 0, c = 0;
    TCUDNN(cudnnCreateTensorDescriptor(&xd));
    TCUDNN(cudnnCreateTensorDescriptor(&yd));
    TCUDNN(cudnnCreateFilterDescriptor(&wd));
    TCUDNN(cudnnCreateConvolutionDescriptor(&cd));
    TCUDNN(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NHWC, L->pr->type, nb, L->c, sh->h, sh->w));
    TCUDNN(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NHWC, L->pr->type, nb, sh->k, L->oh, L->ow));
    TCUDNN(cudnnSetFilter4dDescriptor(wd, L->pr->type, CUDNN_TENSOR_NHWC, sh->k, L->c, sh->r, sh->r));
    TCUDNN(cudnnSetConvolution2dDescriptor(cd, sh->pad, sh->pad, sh->stride, sh->stride, 1, 1,
                                           CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    TCUDNN(cudnnSetConvolutionMathType(cd, L->pr->exact ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH));
    TCUDNN(cudnnGetConvolutionForwardAlgorithm_v7(L->h, xd, wd, cd, yd, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &cnt, fr));
    PICK(fr, cnt, fq);
    TCUDNN(cudnnGetConvolutionBackwardDataAlgorithm_v7(L->h, wd, yd, cd, xd, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                       &cnt, dr));
    PICK(dr, cnt, dq);
    TCUDNN(cudnnGetConvolutionBackwardFilterAlgorithm_v7(L->h, xd, yd, cd, wd,
                                                         CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &cnt, wr));
    PICK(wr, cnt, wq);
    CHECK(fq >= 0 && dq >= 0 && wq >= 0, "legacy %s %s: no algorithm (fwd %d bwd-data %d bwd-filter %d)",
          L->pr->name, sh->name, fq, dq, wq);
    if (fq < 0 || dq < 0 || wq < 0) goto out;
    /* one descriptor, so each direction runs with the math type it was measured with (as
     * net.cu's per-direction descriptors do) */
    TCUDNN(cudnnSetConvolutionMathType(cd, L->pr->exact ? CUDNN_FMA_MATH : fr[fq].mathType));
    TCUDNN(cudnnGetConvolutionForwardWorkspaceSize(L->h, xd, wd, cd, yd, fr[fq].algo, &a));
    if (!ensure_ws(L, a) || !prime(L, beta)) goto out;
    TCUDNN(cudnnConvolutionForward(L->h, &one, xd, L->x_d, wd, L->w_d, cd, fr[fq].algo, L->ws, L->ws_bytes, &zero,
                                   yd, L->y_d));
    TCUDNN(cudnnSetConvolutionMathType(cd, L->pr->exact ? CUDNN_FMA_MATH : dr[dq].mathType));
    TCUDNN(cudnnGetConvolutionBackwardDataWorkspaceSize(L->h, wd, yd, cd, xd, dr[dq].algo, &b));
    if (!ensure_ws(L, b)) goto out;
    TCUDNN(cudnnConvolutionBackwardData(L->h, &one, wd, L->w_d, yd, L->dy_d, cd, dr[dq].algo, L->ws, L->ws_bytes,
                                        bp, xd, L->dx_d));
    TCUDNN(cudnnSetConvolutionMathType(cd, L->pr->exact ? CUDNN_FMA_MATH : wr[wq].mathType));
    TCUDNN(cudnnGetConvolutionBackwardFilterWorkspaceSize(L->h, xd, yd, cd, wd, wr[wq].algo, &c));
    if (!ensure_ws(L, c)) goto out;
    TCUDNN(cudnnConvolutionBackwardFilter(L->h, &one, xd, L->x_d, yd, L->dy_d, cd, wr[wq].algo, L->ws, L->ws_bytes,
                                          bp, wd, L->dw_d));
    {
        cudaError_t ce = cudaStreamSynchronize(L->s);
        CHECK(ce == cudaSuccess, "legacy %s %s: %s", L->pr->name, sh->name, cudaGetErrorString(ce));
        if (ce != cudaSuccess) goto out;
    }
    check_outputs(L, nb, beta, "legacy", R, got);
out:
    if (xd) cudnnDestroyTensorDescriptor(xd);
    if (yd) cudnnDestroyTensorDescriptor(yd);
    if (wd) cudnnDestroyFilterDescriptor(wd);
    if (cd) cudnnDestroyConvolutionDescriptor(cd);
}

static int graph_step(layer *L, model_cuda_conv_graph *g)
{
    ih_err e = model_cuda_conv_graph_fwd(g, L->x_d, L->w_d, L->y_d, L->ws);
    if (e == IH_OK && !L->sh->stem) e = model_cuda_conv_graph_bwd_data(g, L->dy_d, L->w_d, L->dx_d, L->ws);
    if (e == IH_OK) e = model_cuda_conv_graph_bwd_filter(g, L->x_d, L->dy_d, L->dw_d, L->ws);
    CHECK(e == IH_OK, "graph %s %s: %s", L->pr->name, L->sh->name, ih_last_error());
    return e == IH_OK;
}

/* The plan description of L at NMAX on its buffers: the layer's shape and precision, beta 0. */
static void layer_desc(const layer *L, model_cuda_conv_graph_desc *d, const char *label)
{
    memset(d, 0, sizeof *d);
    d->n = NMAX;
    d->h = L->sh->h;
    d->w = L->sh->w;
    d->c = L->c;
    d->k = L->sh->k;
    d->r = d->s = L->sh->r;
    d->stride = L->sh->stride;
    d->pad = L->sh->pad;
    d->type = L->pr->type;
    d->exact = L->pr->exact;
    d->xp = L->x_d;
    d->wp = L->w_d;
    d->yp = L->y_d;
    d->dxp = L->dx_d;
    d->dyp = L->dy_d;
    d->dwp = L->dw_d;
    d->label = label;
}

/* The graph path at NMAX, 1 and NMAX again; with beta 0 also captured and replayed. */
static void graph_run(layer *L, int beta, ref *R, double *got)
{
    model_cuda_conv_graph *g = NULL;
    model_cuda_conv_graph_desc d;
    char label[120];
    const int batches[3] = {NMAX, 1, NMAX};
    snprintf(label, sizeof label, "test %s %s", L->pr->name, L->sh->name);
    layer_desc(L, &d, label);
    d.bwd_data = !L->sh->stem;
    d.beta_data = d.beta_filter = (float)beta;
    ih_err e = model_cuda_conv_graph_create(&g, L->h, &d, WS_CAP);
    CHECK(e == IH_OK, "graph %s %s: create: %s", L->pr->name, L->sh->name, ih_last_error());
    if (e != IH_OK) return;
    for (int i = 0; i < 3; i++) {
        int nb = batches[i];
        e = model_cuda_conv_graph_set_batch(g, nb, WS_CAP);
        CHECK(e == IH_OK, "graph %s %s: set_batch(%d): %s", L->pr->name, L->sh->name, nb, ih_last_error());
        if (e != IH_OK || !ensure_ws(L, model_cuda_conv_graph_workspace(g)) || !prime(L, beta) || !graph_step(L, g))
            goto out;
        cudaError_t ce = cudaStreamSynchronize(L->s);
        CHECK(ce == cudaSuccess, "graph %s %s: %s", L->pr->name, L->sh->name, cudaGetErrorString(ce));
        if (ce != cudaSuccess) goto out;
        check_outputs(L, nb, beta, "graph", R, got);
    }
    if (!beta) { /* capture (the plans and variant packs exist: the eager run above built them) */
        size_t ny = L->ny, nx = L->nx, nw = L->nw, m = ny + nx + nw;
        double *eager = malloc(m * sizeof(double));
        cudaGraph_t cg = NULL;
        cudaGraphExec_t ex = NULL;
        if (!eager || !download(L, eager, L->y_d, ny) || !download(L, eager + ny, L->dx_d, nx) ||
            !download(L, eager + ny + nx, L->dw_d, nw) || !prime(L, 0)) {
            free(eager);
            goto out;
        }
        cudaError_t ce = cudaStreamBeginCapture(L->s, cudaStreamCaptureModeThreadLocal);
        CHECK(ce == cudaSuccess, "begin capture: %s", cudaGetErrorString(ce));
        int ok = ce == cudaSuccess && graph_step(L, g);
        if (ce == cudaSuccess) {
            ce = cudaStreamEndCapture(L->s, &cg);
            CHECK(ce == cudaSuccess, "graph %s %s: capture: %s", L->pr->name, L->sh->name, cudaGetErrorString(ce));
        }
        if (ok && ce == cudaSuccess) ce = cudaGraphInstantiate(&ex, cg, 0);
        if (ok && ce == cudaSuccess) ce = cudaGraphLaunch(ex, L->s);
        if (ok && ce == cudaSuccess) ce = cudaStreamSynchronize(L->s);
        CHECK(ce == cudaSuccess, "graph %s %s: replay: %s", L->pr->name, L->sh->name, cudaGetErrorString(ce));
        if (ok && ce == cudaSuccess) {
            check_outputs(L, NMAX, 0, "graph (captured)", R, got);
            if (L->pr->exact) {
                size_t diff = 0;
                const void *src[3] = {L->y_d, L->dx_d, L->dw_d};
                const size_t cnt[3] = {ny, nx, nw}, off[3] = {0, ny, ny + nx};
                for (int k = 0; k < 3; k++)
                    if ((k != 1 || !L->sh->stem) && download(L, got, src[k], cnt[k]))
                        for (size_t i = 0; i < cnt[k]; i++) diff += got[i] != eager[off[k] + i];
                CHECK(diff == 0, "graph %s %s: the captured replay differs from the eager run in %zu of %zu values "
                      "(fp32 exact mode promises deterministic engines)", L->pr->name, L->sh->name, diff, m);
            }
        }
        if (ex) cudaGraphExecDestroy(ex);
        if (cg) cudaGraphDestroy(cg);
        free(eager);
    }
out:
    model_cuda_conv_graph_destroy(g);
}

/* Per-channel statistics of the forward with statistics (bf16 only; IH_CUDNN_FUSE=stats) against
 * the float64 reference y: sum = sum of (y - shift), sqsum = sum of (y - shift)^2 over n, p, q.
 * Tolerance per channel: the sum over its elements of the forward's per-element bound e_i (the
 * file header's, since the engine may reduce y before or after its bf16 rounding), and for the
 * squares 2 |y_i - shift| e_i + e_i^2, plus fp32 accumulation of the m terms (m 2^-23 times the
 * sum of their magnitudes). A shift that is ignored, or sum and sqsum swapped, misses by far
 * more (the shifts are random, of the outputs' size). */
static void check_stats(const layer *L, int nb, const ref *R, const double *shift, const float *sum,
                        const float *sq, const char *api)
{
    const int k = L->sh->k;
    const size_t m = (size_t)nb * L->oh * L->ow;
    int bad = 0;
    double worst = 0;
    for (int o = 0; o < k; o++) {
        double s1 = 0, s2 = 0, t1 = 0, t2 = 0, a1 = 0, a2 = 0;
        for (size_t i = 0; i < m; i++) {
            double y = R->y[i * k + o], dd = y - shift[o];
            double e = ldexp(fabs(y), -8) + 2e-5 * R->ym[i * k + o];
            s1 += dd;
            s2 += dd * dd;
            t1 += e;
            t2 += 2 * fabs(dd) * e + e * e;
            a1 += fabs(dd) + e;
            a2 += (fabs(dd) + e) * (fabs(dd) + e);
        }
        t1 += (double)m * ldexp(a1, -23);
        t2 += (double)m * ldexp(a2, -23);
        double q1 = fabs(sum[o] - s1) / (t1 + 1e-300), q2 = fabs(sq[o] - s2) / (t2 + 1e-300);
        if (q1 > worst || isnan(sum[o])) worst = isnan(sum[o]) ? INFINITY : q1;
        if (q2 > worst || isnan(sq[o])) worst = isnan(sq[o]) ? INFINITY : q2;
        if (!(q1 <= 1) || !(q2 <= 1)) {
            if (bad < 5)
                fprintf(stderr, "  channel %d: sum ref %.9g got %.9g (tolerance %.3g); sqsum ref %.9g got %.9g "
                        "(tolerance %.3g)\n", o, s1, (double)sum[o], t1, s2, (double)sq[o], t2);
            bad++;
        }
    }
    CHECK(bad == 0, "%s %s %s, batch %d: statistics of %d of %d channels outside the tolerance, max diff/tolerance "
          "%.3g (seed %llu)", api, L->pr->name, L->sh->name, nb, bad, k, worst, (unsigned long long)g_seed);
}

/* The forward with statistics at NMAX, 1 and (captured and replayed, with the zeroing) NMAX.
 * Where cuDNN has no engine for it the plan is optional and this says so, unless
 * IH_CUDNN_FUSE=stats:require, which makes it a failure (as it does in net.cu). */
static void stats_run(layer *L, ref *R, double *got)
{
    const int k = L->sh->k;
    float *dsh = NULL, *dsum = NULL;
    float hsh[256], hsum[2 * 256];
    double shift[256];
    model_cuda_conv_graph *g = NULL;
    cudaGraph_t cg = NULL;
    cudaGraphExec_t ex = NULL;
    int fuse = 0;
    if (k > 256 || model_cuda_conv_fuse_from_env(&fuse) != IH_OK) {
        CHECK(0, "stats_run: k %d > 256 or a bad IH_CUDNN_FUSE: %s", k, ih_last_error());
        return;
    }
    ih_rng r = ih_rng_make(g_seed, 6, 0);
    for (int o = 0; o < k; o++) {
        hsh[o] = (float)(2.0 * ih_rng_normal(&r));
        shift[o] = hsh[o];
    }
    cudaError_t ce = cudaMalloc((void **)&dsh, k * sizeof(float));
    if (ce == cudaSuccess) ce = cudaMalloc((void **)&dsum, 2 * k * sizeof(float));
    if (ce == cudaSuccess) ce = cudaMemcpy(dsh, hsh, k * sizeof(float), cudaMemcpyHostToDevice);
    CHECK(ce == cudaSuccess, "stats buffers: %s", cudaGetErrorString(ce));
    if (ce != cudaSuccess) goto out;
    model_cuda_conv_graph_desc d;
    char label[120];
    snprintf(label, sizeof label, "test stats %s %s", L->pr->name, L->sh->name);
    layer_desc(L, &d, label); /* bf16 only (not exact), no backward data */
    d.fwd_stats = 1;
    d.stats_required = fuse == 2;
    d.shiftp = dsh;
    d.sump = dsum;
    d.sqsump = dsum + k;
    ih_err e = model_cuda_conv_graph_create(&g, L->h, &d, WS_CAP);
    CHECK(e == IH_OK, "stats %s %s: create: %s", L->pr->name, L->sh->name, ih_last_error());
    if (e != IH_OK) goto out;
    const int batches[2] = {NMAX, 1};
    for (int b = 0; b < 3; b++) {
        int nb = b < 2 ? batches[b] : NMAX, captured = b == 2;
        e = model_cuda_conv_graph_set_batch(g, nb, WS_CAP);
        if (e == IH_OK) e = model_cuda_conv_graph_plan_stats(g, WS_CAP); /* on demand for a new n */
        CHECK(e == IH_OK, "stats %s %s: set_batch(%d): %s", L->pr->name, L->sh->name, nb, ih_last_error());
        if (e != IH_OK) goto out;
        if (!model_cuda_conv_graph_has_stats(g)) {
            printf("NOTE %s %s, batch %d: cuDNN has no engine for the forward with statistics (see the WARN above)\n",
                   L->pr->name, L->sh->name, nb);
            continue;
        }
        if (!ensure_ws(L, model_cuda_conv_graph_workspace(g)) || !prime(L, 0)) goto out;
        if (captured) ce = cudaStreamBeginCapture(L->s, cudaStreamCaptureModeThreadLocal);
        if (ce == cudaSuccess) ce = cudaMemsetAsync(dsum, 0, 2 * k * sizeof(float), L->s);
        e = ce == cudaSuccess ? model_cuda_conv_graph_fwd_stats(g, L->x_d, L->w_d, L->y_d, dsh, dsum, dsum + k, L->ws)
                              : IH_E_CUDA;
        CHECK(e == IH_OK, "stats %s %s, batch %d: %s", L->pr->name, L->sh->name, nb,
              ce != cudaSuccess ? cudaGetErrorString(ce) : ih_last_error());
        if (captured) {
            cudaError_t ce2 = cudaStreamEndCapture(L->s, &cg);
            if (ce == cudaSuccess) ce = ce2;
            if (ce == cudaSuccess && e == IH_OK) ce = cudaGraphInstantiate(&ex, cg, 0);
            /* junk first: the replay's own zeroing must clear it */
            if (ce == cudaSuccess && e == IH_OK) ce = cudaMemsetAsync(dsum, 0x7f, 2 * k * sizeof(float), L->s);
            if (ce == cudaSuccess && e == IH_OK) ce = cudaGraphLaunch(ex, L->s);
        }
        if (ce == cudaSuccess) ce = cudaStreamSynchronize(L->s);
        if (ce == cudaSuccess) ce = cudaMemcpy(hsum, dsum, 2 * k * sizeof(float), cudaMemcpyDeviceToHost);
        CHECK(ce == cudaSuccess, "stats %s %s, batch %d: %s", L->pr->name, L->sh->name, nb, cudaGetErrorString(ce));
        if (ce != cudaSuccess || e != IH_OK) goto out;
        const char *api = captured ? "graph+stats (captured)" : "graph+stats";
        reference(L, nb, 0, R);
        char what[200];
        snprintf(what, sizeof what, "%s %s %s, batch %d, forward", api, L->pr->name, L->sh->name, nb);
        size_t ny = (size_t)nb * L->oh * L->ow * k;
        if (download(L, got, L->y_d, ny)) compare(L, what, got, R->y, R->ym, NULL, ny);
        check_stats(L, nb, R, shift, hsum, hsum + k, api);
    }
out:
    if (ex) cudaGraphExecDestroy(ex);
    if (cg) cudaGraphDestroy(cg);
    model_cuda_conv_graph_destroy(g);
    if (dsh) cudaFree(dsh);
    if (dsum) cudaFree(dsum);
}

static void run_layer(cudnnHandle_t h, cudaStream_t s, const shape *sh, const prec *pr)
{
    layer L;
    ref R;
    memset(&L, 0, sizeof L);
    memset(&R, 0, sizeof R);
    L.sh = sh;
    L.pr = pr;
    L.h = h;
    L.s = s;
    L.c = sh->stem ? pr->cpad : sh->c;
    L.oh = (sh->h + 2 * sh->pad - sh->r) / sh->stride + 1;
    L.ow = (sh->w + 2 * sh->pad - sh->r) / sh->stride + 1;
    L.nx = (size_t)NMAX * sh->h * sh->w * L.c;
    L.nw = (size_t)sh->k * sh->r * sh->r * L.c;
    L.ny = (size_t)NMAX * L.oh * L.ow * sh->k;
    size_t big = L.nx > L.ny ? L.nx : L.ny;
    if (L.nw > big) big = L.nw;
    L.x = malloc(L.nx * sizeof(double));
    L.dxo = malloc(L.nx * sizeof(double));
    L.w = malloc(L.nw * sizeof(double));
    L.dwo = malloc(L.nw * sizeof(double));
    L.dy = malloc(L.ny * sizeof(double));
    R.y = malloc(L.ny * sizeof(double));
    R.ym = malloc(L.ny * sizeof(double));
    R.dx = malloc(L.nx * sizeof(double));
    R.dxm = malloc(L.nx * sizeof(double));
    R.dw = malloc(L.nw * sizeof(double));
    R.dwm = malloc(L.nw * sizeof(double));
    double *got = malloc(big * sizeof(double));
    CHECK(L.x && L.dxo && L.w && L.dwo && L.dy && R.y && R.ym && R.dx && R.dxm && R.dw && R.dwm && got,
          "out of host memory");
    void **bufs[6] = {&L.x_d, &L.dx_d, &L.w_d, &L.dw_d, &L.y_d, &L.dy_d};
    const size_t sizes[6] = {L.nx, L.nx, L.nw, L.nw, L.ny, L.ny};
    int ok = L.x && L.dxo && L.w && L.dwo && L.dy && R.y && R.ym && R.dx && R.dxm && R.dw && R.dwm && got;
    for (int i = 0; ok && i < 6; i++) {
        cudaError_t ce = cudaMalloc(bufs[i], sizes[i] * pr->es);
        CHECK(ce == cudaSuccess, "cudaMalloc: %s", cudaGetErrorString(ce));
        ok = ce == cudaSuccess;
    }
    if (ok) {
        /* the stem's padding channels are zero in x (input_pad_k) and w (pad_weights_k) */
        fill(&L, L.x, L.nx, 1, sh->stem, L.c);
        fill(&L, L.w, L.nw, 2, sh->stem, L.c);
        fill(&L, L.dy, L.ny, 3, 0, L.c);
        fill(&L, L.dxo, L.nx, 4, 0, L.c);
        fill(&L, L.dwo, L.nw, 5, 0, L.c);
        ok = upload(&L, L.x_d, L.x, L.nx) && upload(&L, L.w_d, L.w, L.nw) && upload(&L, L.dy_d, L.dy, L.ny);
    }
    for (int beta = 0; ok && beta < 2; beta++) {
        graph_run(&L, beta, &R, got);
        legacy_run(&L, NMAX, beta, &R, got);
        legacy_run(&L, 1, beta, &R, got);
    }
    if (ok && !pr->exact) stats_run(&L, &R, got);
    printf("%s %s: graph and legacy checked\n", pr->name, sh->name);
    for (int i = 0; i < 6; i++)
        if (*bufs[i]) cudaFree(*bufs[i]);
    if (L.ws) cudaFree(L.ws);
    free(L.x);
    free(L.dxo);
    free(L.w);
    free(L.dwo);
    free(L.dy);
    free(R.y);
    free(R.ym);
    free(R.dx);
    free(R.dxm);
    free(R.dw);
    free(R.dwm);
    free(got);
}

/* IH_CUDNN_API, IH_CUDNN_FUSE and IH_CUDNN_BN parsing need no device, so they are checked before the skip. */
typedef struct {
    const char *v; /* NULL: unset */
    ih_err want;
    int value;
} env_case;

/* Each case through parse with var set to it; a refusal must name the accepted values m1, m2.
 * The caller's own setting of var is restored afterwards (stats_run reads IH_CUDNN_FUSE). */
static void check_env(const char *var, ih_err (*parse)(int *), const env_case *cases, size_t n, const char *m1,
                      const char *m2)
{
    const char *keep = getenv(var);
    char saved[64] = "";
    if (keep) snprintf(saved, sizeof saved, "%s", keep);
    for (size_t i = 0; i < n; i++) {
        int value = -1;
        if (cases[i].v) setenv(var, cases[i].v, 1);
        else unsetenv(var);
        ih_err e = parse(&value);
        CHECK(e == cases[i].want && (e != IH_OK || value == cases[i].value), "%s=%s: got %d (value %d), want %d "
              "(value %d)", var, cases[i].v ? cases[i].v : "(unset)", (int)e, value, (int)cases[i].want,
              cases[i].value);
        if (e == IH_E_USAGE)
            CHECK(strstr(ih_last_error(), m1) && strstr(ih_last_error(), m2),
                  "the message names the accepted values: %s", ih_last_error());
    }
    if (keep) setenv(var, saved, 1);
    else unsetenv(var);
}

static void check_api_env(void)
{
    static const env_case api[] = {{NULL, IH_OK, 1},    {"", IH_OK, 1},          {"legacy", IH_OK, 0},
                                   {"graph", IH_OK, 1}, {"Graph", IH_E_USAGE, 0}, {"v8", IH_E_USAGE, 0}};
    static const env_case fuse[] = {{NULL, IH_OK, 0},          {"", IH_OK, 0},         {"none", IH_OK, 0},
                                    {"stats", IH_OK, 1},       {"stats:require", IH_OK, 2},
                                    {"bn", IH_E_USAGE, 0},     {"stats:", IH_E_USAGE, 0}};
    check_env("IH_CUDNN_API", model_cuda_conv_api_from_env, api, sizeof api / sizeof api[0], "legacy", "graph");
    static const env_case bn[] = {{NULL, IH_OK, 13},      {"", IH_OK, 13},         {"ours", IH_OK, 0},
                                  {"cudnn", IH_OK, 1},    {"cudnn:require", IH_OK, 3},
                                  {"cudnn+add", IH_OK, 5}, {"cudnn+add:require", IH_OK, 7},
                                  {"cuDNN", IH_E_USAGE, 0}, {"1", IH_E_USAGE, 0}, {"cudnn:", IH_E_USAGE, 0},
                                  {"cudnn:require+add", IH_E_USAGE, 0}};
    check_env("IH_CUDNN_FUSE", model_cuda_conv_fuse_from_env, fuse, sizeof fuse / sizeof fuse[0], "stats:require",
              "none");
    check_env("IH_CUDNN_BN", model_cuda_bn_from_env, bn, sizeof bn / sizeof bn[0], "ours", "cudnn+add");
}

int main(void)
{
    int n = 0;
    check_api_env();
    if (ih_test_failures) return ih_test_result();
    cudaError_t ce = cudaGetDeviceCount(&n);
    if (ce != cudaSuccess || n == 0)
        SKIP("no CUDA device (%s)", ce != cudaSuccess ? cudaGetErrorString(ce) : "cudaGetDeviceCount = 0");
    const char *sv = getenv("IH_TEST_SEED");
    if (sv && *sv) g_seed = strtoull(sv, NULL, 10);
    printf("seed %llu (IH_TEST_SEED), cuDNN %zu\n", (unsigned long long)g_seed, cudnnGetVersion());
    cudnnHandle_t h = NULL;
    cudaStream_t s = NULL;
    cudnnStatus_t st = cudnnCreate(&h);
    CHECK(st == CUDNN_STATUS_SUCCESS, "cudnnCreate: %s", cudnnGetErrorString(st));
    ce = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    CHECK(ce == cudaSuccess, "cudaStreamCreate: %s", cudaGetErrorString(ce));
    if (st == CUDNN_STATUS_SUCCESS && ce == cudaSuccess) {
        st = cudnnSetStream(h, s);
        CHECK(st == CUDNN_STATUS_SUCCESS, "cudnnSetStream: %s", cudnnGetErrorString(st));
        for (size_t p = 0; st == CUDNN_STATUS_SUCCESS && p < sizeof PRECS / sizeof PRECS[0]; p++)
            for (size_t i = 0; i < sizeof SHAPES / sizeof SHAPES[0]; i++) run_layer(h, s, &SHAPES[i], &PRECS[p]);
    }
    if (h) cudnnDestroy(h);
    if (s) cudaStreamDestroy(s);
    return ih_test_result();
}
