/* bench_bn_graph — cuDNN's BatchNorm training step on its backend graph API against the
 * deprecated cudnnBatchNormalizationForwardTrainingEx / BackwardEx calls (what bench_bn measures
 * as "cuDNN"), on every BN of ResNet-50 at 224 px, bf16 NHWC with fp32 statistics and
 * parameters, in the same run on the same inputs.
 *
 * Why: the Ex calls are deprecated in cuDNN 9; the graph API's normalization operations are
 * their supported successor. Before the GPU backend moves, this program shows whether the graph
 * API has engines for the net's BN shapes, whether they compute the same thing, what they cost
 * to plan, and how fast they run.
 *
 * Per distinct shape (h, w, c, ReLU follows or not; from model_graph_build, so exactly the net's
 * BN layers and their count): training forward (batch statistics, running-stat update with
 * momentum 0.1, eps 1e-5, saved mean and inverse standard deviation, y = relu?(gamma * xhat +
 * beta)) and backward (dgamma, dbeta, dx, through the ReLU), each the median over --repeats of
 * the mean of --iters back-to-back launches timed with CUDA events.
 *
 * The graphs (uids in the enum below; x, y, dy, dx bf16 [n,c,h,w] with NHWC strides; per-channel
 * tensors fp32 [1,c,1,1]; eps and momentum fp32 [1,1,1,1] by-value scalars read from host memory
 * at execute time):
 *   forward:  NORM_FORWARD (BATCH_NORM, TRAINING): x, scale, bias, eps, momentum, running
 *             mean/var in -> y (or the virtual y0), saved mean, saved inverse std, running
 *             mean/var out (separate buffers from the inputs, as NVIDIA's tests bind them);
 *             with ReLU: y0 virtual, POINTWISE RELU_FWD y0 -> y, and POINTWISE CMP_GT (y, a
 *             by-value bf16 0) -> mask, a BOOLEAN [n,c,h,w] tensor stored one bit per element
 *             (channel c in bit c % 8 of byte c / 8 of each NHWC position: n h w c / 8 bytes);
 *   backward: NORM_BACKWARD (BATCH_NORM): x, saved mean, saved inverse std, grad, scale ->
 *             dscale, dbias, dx, with no epsilon (cudnn-frontend's DBN node sets none when the
 *             saved statistics are given; its docs: "Only setting either (saved mean and
 *             inverse_variance) or (epsilon) is necessary");
 *             with ReLU: grad virtual bf16 = POINTWISE MUL (dy, mask).
 * That is the BN(+ReLU) / dReLU-DBN pattern of NVIDIA's cudnn-frontend batchnorm tests. Checked
 * device-less against cuDNN 9.19 (heuristics and NVRTC compilation for an sm_90 description,
 * no GPU): both compile for engine 0 (runtime-compiled; knobs OCCUPANCY, ARRAY_SIZE_PER_THREAD,
 * NUM_C_PER_BLOCK), while a RELU_BWD (dy, stored y) before NORM_BACKWARD is refused by the
 * engine's pattern match ("!dact_op->getXDesc()->getIsVirtual()": it only takes a ReLU input
 * computed in the same graph). Other builds may differ, so each graph has fallbacks, tried in
 * order until one plans: forward (y0 bf16 + mask), (y0 bf16), (y0 fp32 + mask), (y0 fp32);
 * backward (dy * mask), (RELU_BWD on y), then both again with epsilon attached; without a ReLU
 * the plain graph, backward without then with epsilon. y0 and grad in bf16 lose nothing: ReLU
 * commutes with rounding and dy * {0,1} is exact. The variant used is named in the notes under
 * the table; "na" where none plans, with cuDNN's status and last error per variant. When the
 * backward reads the mask and the forward wrote none, a small kernel packs it from y outside
 * the timed region. (The Ex API's BN_ACTIVATION forward likewise writes a reserve space that
 * its backward reads.) Engines come from heuristics mode A, then the fallback mode, tried in
 * order; the first whose execution plan finalizes is kept. plan_s is the wall time of building
 * every variant tried (descriptors, heuristics, plan finalization with its runtime compilation,
 * about 0.4-0.6 s per finalized config on this project's build machine).
 *
 * Verification before timing, reference = the Ex API: y and dx on the first 4M elements (every
 * channel), dgamma, dbeta, saved mean and inverse std, and updated running mean and variance in
 * full, tolerance 2^-7 of the tensor's max |Ex|. "ok" when every element but dx is within it and
 * at most 1 in 10^5 dx elements is not (where a pre-activation lies within rounding of 0 the
 * two ReLU masks may differ, and that dx element with them), else "DIFF". maxdiff is the largest
 * max |graph - Ex| / max |Ex| over y, dgamma, dbeta and the four statistics; "dx off" counts dx
 * elements outside the tolerance. "rv unb" tells which variance each API folds into the running
 * variance: mean over channels of (v / vb - 1) (m - 1), v the variance implied by the update
 * (rv_out - 0.9 rv_in) / 0.1, vb the biased batch variance 1/sinv^2 - eps from the same call's
 * saved inverse std, m = n h w: about 1 when the update uses the unbiased m/(m-1) vb, about 0
 * when it uses vb (resolved while 1/m is well above fp32 noise, i.e. the 7x7..28x28 rows); shown
 * as Ex/graph.
 *   bench_bn_graph [--batch=256] [--iters=20] [--repeats=5]
 * Exit 77 without a CUDA device, 0 when every shape planned and verified, else 1. Last line:
 *   RESULT gpu=.. n=.. ex_fwd_ms=.. graph_fwd_ms=.. ex_bwd_ms=.. graph_bwd_ms=.. graph_over_ex=..
 *          ok=0|1 plan_s=..
 * (the net's totals, per-shape times x count, over the shapes both APIs ran; graph_over_ex is
 * the graph API's fwd+bwd over the Ex API's: > 1 means the Ex calls are faster.)
 */
#include <string.h>
#include <time.h>

#include <string>

#include "core/rng.h"
#include "bench/bn_bench.cuh"

/* ---- graph API plumbing ---- */

/* Operand uids: the variant pack names each non-virtual tensor by these. */
enum {
    UID_X = 1, UID_Y, UID_SCALE, UID_BIAS, UID_EPS, UID_MOM, UID_RM_IN, UID_RV_IN, UID_RM_OUT,
    UID_RV_OUT, UID_SMEAN, UID_SINV, UID_MASK, UID_ZERO, UID_DY, UID_DX, UID_DSCALE, UID_DBIAS,
    UID_V0 = 100 /* virtual intermediates: the pre-ReLU y0, the post-dReLU gradient */
};
enum { KEEP = 40 };              /* descriptors one plan is built from, at most */
enum { T_VIRT = 1, T_BYVAL = 2 }; /* tensor flags */

/* One operation graph and its execution plan. The descriptors it was built from stay alive
 * with it (as cudnn-frontend keeps them). */
typedef struct {
    cudnnBackendDescriptor_t keep[KEEP];
    int nkeep;
    cudnnBackendDescriptor_t plan, vpack;
    int64_t ws;       /* workspace bytes */
    char why[400];    /* the first failure: the call, cuDNN's status and last error */
    char what[160];   /* engine and workspace, for the notes */
} gplan;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Records the first failure in p (later ones follow from it) and passes the status on. */
static cudnnStatus_t note(gplan *p, cudnnStatus_t s, const char *what)
{
    if (!p->why[0]) {
        char m[256] = "";
        cudnnGetLastErrorString(m, sizeof m);
        snprintf(p->why, sizeof p->why, "%s: %s%s%s", what, cudnnGetErrorString(s), m[0] ? ": " : "", m);
    }
    return s;
}

#define GT(p, call, what)                                                                           \
    do {                                                                                            \
        cudnnStatus_t s_ = (call);                                                                  \
        if (s_ != CUDNN_STATUS_SUCCESS) return note((p), s_, (what));                               \
    } while (0)

static void plan_destroy(gplan *p)
{
    /* destroy failures are not actionable here */
    if (p->vpack) (void)cudnnBackendDestroyDescriptor(p->vpack);
    if (p->plan) (void)cudnnBackendDestroyDescriptor(p->plan);
    for (int i = p->nkeep - 1; i >= 0; i--) (void)cudnnBackendDestroyDescriptor(p->keep[i]);
    memset(p, 0, sizeof *p);
}

static cudnnStatus_t new_desc(gplan *p, cudnnBackendDescriptorType_t t, cudnnBackendDescriptor_t *out)
{
    *out = NULL;
    if (p->nkeep >= KEEP) return note(p, CUDNN_STATUS_INTERNAL_ERROR, "more descriptors than KEEP");
    GT(p, cudnnBackendCreateDescriptor(t, &p->keep[p->nkeep]), "create descriptor");
    *out = p->keep[p->nkeep++];
    return CUDNN_STATUS_SUCCESS;
}

/* dim in cuDNN's n,c,h,w order; the strides make c innermost (NHWC; [1,c,1,1] per-channel
 * vectors get c,1,c,c like cudnn-frontend's samples). 16-byte alignment: every device operand
 * is its own cudaMalloc, the by-value scalars are alignas(16). */
static cudnnStatus_t tensor(gplan *p, int64_t uid, cudnnDataType_t type, const int64_t dim[4], int flags,
                            cudnnBackendDescriptor_t *out)
{
    const int64_t str[4] = {dim[1] * dim[2] * dim[3], 1, dim[3] * dim[1], dim[1]}, align = 16;
    const bool virt = (flags & T_VIRT) != 0, byval = (flags & T_BYVAL) != 0;
    cudnnBackendDescriptor_t t;
    GT(p, new_desc(p, CUDNN_BACKEND_TENSOR_DESCRIPTOR, &t), "tensor");
    GT(p, cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type), "tensor type");
    GT(p, cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dim), "tensor dims");
    GT(p, cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, str), "tensor strides");
    GT(p, cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid), "tensor uid");
    GT(p, cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align),
       "tensor alignment");
    if (virt)
        GT(p, cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt), "virtual");
    if (byval)
        GT(p, cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &byval), "by value");
    GT(p, cudnnBackendFinalize(t), "tensor finalize");
    *out = t;
    return CUDNN_STATUS_SUCCESS;
}

/* A pointwise operation in fp32 math. Forward modes: y = mode(x[, b]); backward modes (bwd):
 * x is the gradient dy, b the forward tensor, y the result dx (cudnn-frontend's port mapping). */
static cudnnStatus_t pointwise(gplan *p, cudnnPointwiseMode_t mode, int bwd, cudnnBackendDescriptor_t x,
                               cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t y,
                               cudnnBackendDescriptor_t *op)
{
    const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
    cudnnBackendDescriptor_t pw;
    GT(p, new_desc(p, CUDNN_BACKEND_POINTWISE_DESCRIPTOR, &pw), "pointwise");
    GT(p, cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode),
       "pointwise mode");
    GT(p, cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec),
       "pointwise precision");
    GT(p, cudnnBackendFinalize(pw), "pointwise finalize");
    GT(p, new_desc(p, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, op), "pointwise op");
    GT(p, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                   1, &pw), "pointwise op desc");
    GT(p, cudnnBackendSetAttribute(*op, bwd ? CUDNN_ATTR_OPERATION_POINTWISE_DYDESC : CUDNN_ATTR_OPERATION_POINTWISE_XDESC,
                                   CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x), "pointwise op x");
    if (b)
        GT(p, cudnnBackendSetAttribute(*op, bwd ? CUDNN_ATTR_OPERATION_POINTWISE_XDESC : CUDNN_ATTR_OPERATION_POINTWISE_BDESC,
                                       CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b), "pointwise op b");
    GT(p, cudnnBackendSetAttribute(*op, bwd ? CUDNN_ATTR_OPERATION_POINTWISE_DXDESC : CUDNN_ATTR_OPERATION_POINTWISE_YDESC,
                                   CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y), "pointwise op y");
    GT(p, cudnnBackendFinalize(*op), "pointwise op finalize");
    return CUDNN_STATUS_SUCCESS;
}

/* op's attribute a := tensor (or other descriptor) d, named by the attribute on failure */
#define SD(p, op, a, d) GT(p, cudnnBackendSetAttribute(op, a, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &(d)), #a)

/* The engine behind cfg, for the notes: "engine 7 rtc". */
static void engine_text(cudnnBackendDescriptor_t cfg, char *buf, size_t len)
{
    cudnnBackendDescriptor_t eng = NULL;
    cudnnBackendBehaviorNote_t bn[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
    int64_t got = 0, idx = -1, nb = 0;
    int rtc = 0;
    cudnnStatus_t s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &eng);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &got, &eng);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &got, &idx);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                                     CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &nb, bn);
    for (int64_t i = 0; s == CUDNN_STATUS_SUCCESS && i < nb && i < CUDNN_BEHAVIOR_NOTE_TYPE_COUNT; i++)
        rtc |= bn[i] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION;
    if (eng) (void)cudnnBackendDestroyDescriptor(eng);
    if (s == CUDNN_STATUS_SUCCESS) snprintf(buf, len, "engine %lld%s", (long long)idx, rtc ? " runtime-compiled" : "");
    else snprintf(buf, len, "engine unreadable (%s)", cudnnGetErrorString(s));
}

/* The operation graph of ops, then an engine: heuristics mode A, then fallback; the first
 * config whose plan finalizes. */
static cudnnStatus_t finish(gplan *p, cudnnHandle_t h, cudnnBackendDescriptor_t *ops, int nops)
{
    cudnnBackendDescriptor_t g;
    GT(p, new_desc(p, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &g), "graph");
    GT(p, cudnnBackendSetAttribute(g, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, nops, ops),
       "graph ops");
    /* deprecated in late 9.x in favour of device properties, still required by earlier 9.x
     * (conv_graph.c does the same) */
    GT(p, cudnnBackendSetAttribute(g, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h), "graph handle");
    GT(p, cudnnBackendFinalize(g), "operation graph finalize");

    static const cudnnBackendHeurMode_t modes[2] = {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK};
    int cfgs[2] = {0, 0};
    cudnnStatus_t last = CUDNN_STATUS_SUCCESS;
    char lastmsg[256] = "";
    for (int m = 0; m < 2 && !p->plan; m++) {
        cudnnBackendDescriptor_t heur = NULL;
        std::vector<cudnnBackendDescriptor_t> cfg;
        int64_t cnt = 0, got = 0;
        cudnnStatus_t s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur);
        if (s == CUDNN_STATUS_SUCCESS)
            s = cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &g);
        if (s == CUDNN_STATUS_SUCCESS)
            s = cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &modes[m]);
        if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(heur);
        if (s == CUDNN_STATUS_SUCCESS)
            s = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &cnt, NULL);
        for (int64_t i = 0; s == CUDNN_STATUS_SUCCESS && i < cnt; i++) {
            cudnnBackendDescriptor_t c = NULL;
            s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &c);
            if (s == CUDNN_STATUS_SUCCESS) cfg.push_back(c);
        }
        if (s == CUDNN_STATUS_SUCCESS && cnt > 0)
            s = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, cnt, &got,
                                         cfg.data());
        if (s != CUDNN_STATUS_SUCCESS) {
            last = s;
            cudnnGetLastErrorString(lastmsg, sizeof lastmsg);
            got = 0;
        }
        cfgs[m] = (int)std::min(got, cnt);
        for (int64_t i = 0; i < cfgs[m] && !p->plan; i++) {
            cudnnBackendDescriptor_t plan = NULL;
            int64_t ws = 0, one = 0;
            s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan);
            if (s == CUDNN_STATUS_SUCCESS)
                s = cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h);
            if (s == CUDNN_STATUS_SUCCESS)
                s = cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                             CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg[(size_t)i]);
            if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(plan);
            if (s == CUDNN_STATUS_SUCCESS)
                s = cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &one,
                                             &ws);
            if (s != CUDNN_STATUS_SUCCESS) {
                last = s;
                cudnnGetLastErrorString(lastmsg, sizeof lastmsg);
                if (plan) (void)cudnnBackendDestroyDescriptor(plan);
                continue;
            }
            p->plan = plan;
            p->ws = ws;
            char eng[96];
            engine_text(cfg[(size_t)i], eng, sizeof eng);
            snprintf(p->what, sizeof p->what, "%s%s, workspace %.2f MiB", eng, m ? " (fallback heuristics)" : "",
                     (double)ws / 1048576.0);
            if (p->nkeep < KEEP) { /* the config stays with the plan; else it is destroyed below */
                p->keep[p->nkeep++] = cfg[(size_t)i];
                cfg[(size_t)i] = NULL;
            }
        }
        for (cudnnBackendDescriptor_t c : cfg)
            if (c) (void)cudnnBackendDestroyDescriptor(c);
        if (heur) (void)cudnnBackendDestroyDescriptor(heur);
    }
    if (p->plan) return CUDNN_STATUS_SUCCESS;
    snprintf(p->why, sizeof p->why, "no engine: %d configs from heuristics mode A, %d from fallback; last %s%s%s",
             cfgs[0], cfgs[1], last != CUDNN_STATUS_SUCCESS ? cudnnGetErrorString(last) : "status none",
             lastmsg[0] ? ": " : "", lastmsg);
    return last != CUDNN_STATUS_SUCCESS ? last : CUDNN_STATUS_NOT_SUPPORTED;
}

/* Forward graph of the file header. relu: y0 virtual of type pre, then RELU_FWD; mask: also
 * CMP_GT(y, 0) into a BOOLEAN tensor. */
static cudnnStatus_t build_fwd(gplan *p, cudnnHandle_t h, int n, const bn_shape *b, int mask, cudnnDataType_t pre)
{
    const int64_t xd[4] = {n, b->c, b->h, b->w}, cd[4] = {1, b->c, 1, 1}, sd[4] = {1, 1, 1, 1};
    const cudnnDataType_t F = CUDNN_DATA_FLOAT, B = CUDNN_DATA_BFLOAT16;
    cudnnBackendDescriptor_t x, y, y0 = NULL, sc, bi, eps, mom, rmi, rvi, rmo, rvo, sm, si, ops[3];
    int nops = 0;
    GT(p, tensor(p, UID_X, B, xd, 0, &x), "x");
    GT(p, tensor(p, UID_Y, B, xd, 0, &y), "y");
    GT(p, tensor(p, UID_SCALE, F, cd, 0, &sc), "scale");
    GT(p, tensor(p, UID_BIAS, F, cd, 0, &bi), "bias");
    GT(p, tensor(p, UID_EPS, F, sd, T_BYVAL, &eps), "epsilon");
    GT(p, tensor(p, UID_MOM, F, sd, T_BYVAL, &mom), "momentum");
    GT(p, tensor(p, UID_RM_IN, F, cd, 0, &rmi), "running mean in");
    GT(p, tensor(p, UID_RV_IN, F, cd, 0, &rvi), "running var in");
    GT(p, tensor(p, UID_RM_OUT, F, cd, 0, &rmo), "running mean out");
    GT(p, tensor(p, UID_RV_OUT, F, cd, 0, &rvo), "running var out");
    GT(p, tensor(p, UID_SMEAN, F, cd, 0, &sm), "saved mean");
    GT(p, tensor(p, UID_SINV, F, cd, 0, &si), "saved inv std");
    if (b->relu) GT(p, tensor(p, UID_V0, pre, xd, T_VIRT, &y0), "pre-ReLU y0");

    const cudnnBackendNormMode_t mode = CUDNN_BATCH_NORM;
    const cudnnBackendNormFwdPhase_t phase = CUDNN_NORM_FWD_TRAINING;
    cudnnBackendDescriptor_t op;
    GT(p, new_desc(p, CUDNN_BACKEND_OPERATION_NORM_FORWARD_DESCRIPTOR, &op), "norm forward");
    GT(p, cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_NORM_FWD_MODE, CUDNN_TYPE_NORM_MODE, 1, &mode), "norm mode");
    GT(p, cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_NORM_FWD_PHASE, CUDNN_TYPE_NORM_FWD_PHASE, 1, &phase),
       "norm phase");
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_FWD_XDESC, x);
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_FWD_MEAN_DESC, sm);
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_FWD_INV_VARIANCE_DESC, si);
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_FWD_SCALE_DESC, sc);
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_FWD_BIAS_DESC, bi);
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_FWD_EPSILON_DESC, eps);
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_FWD_EXP_AVG_FACTOR_DESC, mom);
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_FWD_INPUT_RUNNING_MEAN_DESC, rmi);
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_FWD_INPUT_RUNNING_VAR_DESC, rvi);
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_FWD_OUTPUT_RUNNING_MEAN_DESC, rmo);
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_FWD_OUTPUT_RUNNING_VAR_DESC, rvo);
    cudnnBackendDescriptor_t norm_y = b->relu ? y0 : y;
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_FWD_YDESC, norm_y);
    GT(p, cudnnBackendFinalize(op), "norm forward finalize");
    ops[nops++] = op;
    if (b->relu) GT(p, pointwise(p, CUDNN_POINTWISE_RELU_FWD, 0, y0, NULL, y, &ops[nops++]), "relu");
    if (b->relu && mask) {
        cudnnBackendDescriptor_t zero, mk;
        GT(p, tensor(p, UID_ZERO, B, sd, T_BYVAL, &zero), "zero");
        GT(p, tensor(p, UID_MASK, CUDNN_DATA_BOOLEAN, xd, 0, &mk), "mask");
        GT(p, pointwise(p, CUDNN_POINTWISE_CMP_GT, 0, y, zero, mk, &ops[nops++]), "mask");
    }
    return finish(p, h, ops, nops);
}

/* Backward graph of the file header. relu: the gradient through the ReLU first, from y
 * (RELU_BWD) or from the bit mask (MUL); eps: also hand NORM_BACKWARD the epsilon. */
static cudnnStatus_t build_bwd(gplan *p, cudnnHandle_t h, int n, const bn_shape *b, int mask, int with_eps)
{
    const int64_t xd[4] = {n, b->c, b->h, b->w}, cd[4] = {1, b->c, 1, 1}, sd[4] = {1, 1, 1, 1};
    const cudnnDataType_t F = CUDNN_DATA_FLOAT, B = CUDNN_DATA_BFLOAT16;
    cudnnBackendDescriptor_t x, dy, dx, sc, sm, si, ds, db, grad, eps = NULL, ops[2];
    int nops = 0;
    GT(p, tensor(p, UID_X, B, xd, 0, &x), "x");
    GT(p, tensor(p, UID_DY, B, xd, 0, &dy), "dy");
    GT(p, tensor(p, UID_DX, B, xd, 0, &dx), "dx");
    GT(p, tensor(p, UID_SCALE, F, cd, 0, &sc), "scale");
    GT(p, tensor(p, UID_SMEAN, F, cd, 0, &sm), "saved mean");
    GT(p, tensor(p, UID_SINV, F, cd, 0, &si), "saved inv std");
    GT(p, tensor(p, UID_DSCALE, F, cd, 0, &ds), "dscale");
    GT(p, tensor(p, UID_DBIAS, F, cd, 0, &db), "dbias");
    if (with_eps) GT(p, tensor(p, UID_EPS, F, sd, T_BYVAL, &eps), "epsilon");
    grad = dy;
    if (b->relu) {
        cudnnBackendDescriptor_t fwd;
        GT(p, tensor(p, UID_V0, B, xd, T_VIRT, &grad), "post-dReLU gradient");
        if (mask) {
            GT(p, tensor(p, UID_MASK, CUDNN_DATA_BOOLEAN, xd, 0, &fwd), "mask");
            GT(p, pointwise(p, CUDNN_POINTWISE_MUL, 0, dy, fwd, grad, &ops[nops++]), "dy * mask");
        } else {
            GT(p, tensor(p, UID_Y, B, xd, 0, &fwd), "y");
            GT(p, pointwise(p, CUDNN_POINTWISE_RELU_BWD, 1, dy, fwd, grad, &ops[nops++]), "relu backward");
        }
    }
    const cudnnBackendNormMode_t mode = CUDNN_BATCH_NORM;
    cudnnBackendDescriptor_t op;
    GT(p, new_desc(p, CUDNN_BACKEND_OPERATION_NORM_BACKWARD_DESCRIPTOR, &op), "norm backward");
    GT(p, cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_NORM_BWD_MODE, CUDNN_TYPE_NORM_MODE, 1, &mode), "norm mode");
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_BWD_XDESC, x);
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_BWD_MEAN_DESC, sm);
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_BWD_INV_VARIANCE_DESC, si);
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_BWD_DYDESC, grad);
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_BWD_SCALE_DESC, sc);
    if (eps) SD(p, op, CUDNN_ATTR_OPERATION_NORM_BWD_EPSILON_DESC, eps);
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_BWD_DSCALE_DESC, ds);
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_BWD_DBIAS_DESC, db);
    SD(p, op, CUDNN_ATTR_OPERATION_NORM_BWD_DXDESC, dx);
    GT(p, cudnnBackendFinalize(op), "norm backward finalize");
    ops[nops++] = op;
    return finish(p, h, ops, nops);
}

/* The variant pack: n operands by uid, and the workspace; built once per plan (the buffers
 * are fixed for the shape). */
static cudnnStatus_t bind(gplan *p, int n, const int64_t *uid, void **ptr, void *ws)
{
    GT(p, cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &p->vpack), "variant pack");
    GT(p, cudnnBackendSetAttribute(p->vpack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uid), "uids");
    GT(p, cudnnBackendSetAttribute(p->vpack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptr),
       "pointers");
    GT(p, cudnnBackendSetAttribute(p->vpack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws),
       "workspace");
    GT(p, cudnnBackendFinalize(p->vpack), "variant pack finalize");
    return CUDNN_STATUS_SUCCESS;
}

/* ---- data ---- */

/* The ReLU bit mask cuDNN's BOOLEAN tensors use (NVIDIA's batchnorm tests): NHWC with channel c
 * in bit c % 8 of byte c / 8, so byte i holds y[8i .. 8i+7] > 0 (c a multiple of 8). */
__global__ void mask_k(const bf16 *y, uint8_t *mask, size_t bytes)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < bytes; i += (size_t)gridDim.x * blockDim.x) {
        unsigned v = 0;
        for (int k = 0; k < 8; k++) v |= (unsigned)(__bfloat162float(y[8 * i + k]) > 0.f) << k;
        mask[i] = (uint8_t)v;
    }
}

static std::vector<float> down_f(const float *d, size_t n)
{
    std::vector<float> h(n);
    CK(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}

static void up_f(float *d, const std::vector<float> &h) { CK(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice)); }

/* mean over channels of (v / vb - 1)(m - 1): v the variance the running-variance update implies
 * (rv_out - (1 - mom) rv_in) / mom, vb = 1/sinv^2 - eps the biased batch variance (file header). */
static double unbiased_score(const std::vector<float> &rv_out, float rv_in, const std::vector<float> &sinv, double mom,
                             double eps, double m)
{
    double s = 0;
    for (size_t i = 0; i < rv_out.size(); i++) {
        const double v = ((double)rv_out[i] - (1 - mom) * rv_in) / mom;
        const double vb = 1.0 / ((double)sinv[i] * sinv[i]) - eps;
        s += (v / vb - 1) * (m - 1);
    }
    return rv_out.empty() ? NAN : s / (double)rv_out.size();
}

/* t ms as "%.1f" us, or "na" */
static const char *us(double t_ms, char buf[16])
{
    if (std::isnan(t_ms)) snprintf(buf, 16, "na");
    else snprintf(buf, 16, "%.1f", 1e3 * t_ms);
    return buf;
}

static float *dalloc_f(size_t n)
{
    float *p = NULL;
    CK(cudaMalloc(&p, n * sizeof(float)));
    return p;
}

int main(int argc, char **argv)
{
    int n = 256, iters = 20, repeats = 5, cmax = 0;
    char gpu[256];
    std::vector<bn_shape> shapes; /* grouped by shape and whether a ReLU follows */
    cudnnHandle_t dnn;
    size_t maxlen = 0;
    const int rc = bench_start("bench_bn_graph", argc, argv, false, &n, &iters, &repeats, gpu, sizeof gpu, &shapes,
                               &dnn, &maxlen, &cmax);
    if (rc >= 0) return rc;
    bf16 *x, *dy, *y_ex, *y_g, *dx_ex, *dx_g;
    uint8_t *mask;
    CK(cudaMalloc(&x, maxlen * sizeof(bf16)));
    CK(cudaMalloc(&dy, maxlen * sizeof(bf16)));
    CK(cudaMalloc(&y_ex, maxlen * sizeof(bf16)));
    CK(cudaMalloc(&y_g, maxlen * sizeof(bf16)));
    CK(cudaMalloc(&dx_ex, maxlen * sizeof(bf16)));
    CK(cudaMalloc(&dx_g, maxlen * sizeof(bf16)));
    CK(cudaMalloc(&mask, maxlen / 8 + 1));
    /* per-channel fp32: the shared gamma, beta; the Ex API's running mean/var (updated in place),
     * saved mean/inv std, dgamma, dbeta; the graph's running mean/var in and out, saved, grads */
    float *gamma = dalloc_f(cmax), *beta = dalloc_f(cmax);
    float *ex_rm = dalloc_f(cmax), *ex_rv = dalloc_f(cmax), *ex_sm = dalloc_f(cmax), *ex_si = dalloc_f(cmax),
          *ex_dg = dalloc_f(cmax), *ex_db = dalloc_f(cmax);
    float *g_rmi = dalloc_f(cmax), *g_rvi = dalloc_f(cmax), *g_rmo = dalloc_f(cmax), *g_rvo = dalloc_f(cmax),
          *g_sm = dalloc_f(cmax), *g_si = dalloc_f(cmax), *g_dg = dalloc_f(cmax), *g_db = dalloc_f(cmax);
    void *ws = NULL, *rs = NULL, *gws = NULL;
    size_t ws_bytes = 0, rs_bytes = 0, gws_bytes = 0;
    const double eps = 1e-5, mom = 0.1;
    /* the by-value scalars: the variant pack points at host memory read at execute time */
    alignas(16) static float eps_f = (float)1e-5, mom_f = 0.1f;
    alignas(16) static bf16 zero_b = __float2bfloat16(0.f);

    printf("# BN layers of resnet50 at 224 px, n=%d, bf16 NHWC (fp32 statistics), %s, cuDNN %zu; "
           "cudnnBatchNormalization*Ex (SPATIAL_PERSISTENT) vs the backend graph API; times in us (median of %d x %d)\n",
           n, gpu, cudnnGetVersion(), repeats, iters);
    printf("# %-14s %4s %5s %10s %10s %10s %10s %9s %7s %11s %7s %7s\n", "h x w x c", "relu", "count", "Ex fwd",
           "graph fwd", "Ex bwd", "graph bwd", "maxdiff", "dx off", "rv unb", "plan s", "verify");
    double tot[4] = {0, 0, 0, 0}, plan_s = 0;
    int all_ok = 1;
    std::vector<std::string> notes;
    ih_rng r = ih_rng_make(5, 0, 0);
    for (auto &b : shapes) {
        const int c = b.c;
        const size_t m = (size_t)n * b.h * b.w, len = m * c;
        char nm[32];
        snprintf(nm, sizeof nm, "%dx%dx%d", b.h, b.w, c);
        fill(x, len, 11u + (uint32_t)c, 2.0f, 0.5f);
        fill(dy, len, 17u + (uint32_t)c, 1.0f, 0.0f);
        std::vector<float> hg(c), hb(c);
        for (int i = 0; i < c; i++) {
            hg[i] = (float)(0.5 + ih_rng_uniform(&r));
            hb[i] = (float)(0.2 * ih_rng_normal(&r));
        }
        up_f(gamma, hg);
        up_f(beta, hb);

        /* Ex API: NHWC bf16 x/y/dy/dx, fp32 derived per-channel tensors */
        ex_bn ex(dnn, n, b, &ws, &ws_bytes, &rs, &rs_bytes);
        const cudnnBatchNormOps_t eops = b.relu ? CUDNN_BATCHNORM_OPS_BN_ACTIVATION : CUDNN_BATCHNORM_OPS_BN;
        cudnnStatus_t es = ex.plan(eops);
        auto ex_fwd = [&]() { return ex.fwd(eops, x, NULL, y_ex, gamma, beta, mom, ex_rm, ex_rv, eps, ex_sm, ex_si); };
        /* parameter gradients overwritten (beta 0), as the graph's NORM_BACKWARD writes them */
        auto ex_bwd = [&]() {
            return ex.bwd(eops, x, y_ex, dy, NULL, dx_ex, gamma, beta, ex_dg, ex_db, 0.f, eps, ex_sm, ex_si);
        };

        /* graph API: the variants of the file header, the first that plans */
        std::string why, fwhat, bwhat;
        gplan fp, bp;
        memset(&fp, 0, sizeof fp);
        memset(&bp, 0, sizeof bp);
        int fmask = 0, bmask = 0, beps = 0;
        cudnnStatus_t gs = CUDNN_STATUS_NOT_SUPPORTED;
        /* the order of the file header: the mask patterns first (what cuDNN's BN engine plans) */
        static const struct { int mask; cudnnDataType_t pre; const char *tag; } fv[4] = {
            {1, CUDNN_DATA_BFLOAT16, "y0 bf16 + mask"},
            {0, CUDNN_DATA_BFLOAT16, "y0 bf16"},
            {1, CUDNN_DATA_FLOAT, "y0 fp32 + mask"},
            {0, CUDNN_DATA_FLOAT, "y0 fp32"}};
        static const struct { int mask, eps; const char *tag, *plain_tag; } bv[4] = {
            {1, 0, "dy * mask", NULL}, {0, 0, "RELU_BWD on y", "no eps"}, {1, 1, "dy * mask, eps", NULL},
            {0, 1, "RELU_BWD on y, eps", "eps"}};
        const int maskable = b.relu && c % 8 == 0; /* the bit mask packs 8 channels a byte */
        const double t0 = now_s();
        for (int v = 0; v < 4; v++) {
            if (fv[v].mask && !maskable) continue;
            if (!b.relu && fv[v].pre != CUDNN_DATA_BFLOAT16) continue; /* no y0 without a ReLU */
            const char *tag = b.relu ? fv[v].tag : "plain";
            gs = build_fwd(&fp, dnn, n, &b, fv[v].mask, fv[v].pre);
            if (gs == CUDNN_STATUS_SUCCESS) {
                fmask = fv[v].mask;
                fwhat = std::string(tag) + ": " + fp.what;
                break;
            }
            why += std::string("fwd[") + tag + "] " + fp.why + "; ";
            plan_destroy(&fp);
        }
        const double t1 = now_s();
        if (gs == CUDNN_STATUS_SUCCESS) {
            gs = CUDNN_STATUS_NOT_SUPPORTED;
            for (int v = 0; v < 4; v++) {
                if (bv[v].mask && !maskable) continue;
                const char *tag = b.relu ? bv[v].tag : bv[v].plain_tag;
                gs = build_bwd(&bp, dnn, n, &b, bv[v].mask, bv[v].eps);
                if (gs == CUDNN_STATUS_SUCCESS) {
                    bmask = bv[v].mask;
                    beps = bv[v].eps;
                    bwhat = std::string(tag) + ": " + bp.what;
                    break;
                }
                why += std::string("bwd[") + tag + "] " + bp.why + "; ";
                plan_destroy(&bp);
            }
        }
        const double t2 = now_s();
        plan_s += t2 - t0;
        if (gs == CUDNN_STATUS_SUCCESS) {
            if ((size_t)std::max(fp.ws, bp.ws) > gws_bytes) {
                if (gws) CK(cudaFree(gws));
                gws_bytes = (size_t)std::max(fp.ws, bp.ws);
                CK(cudaMalloc(&gws, gws_bytes));
            }
            /* forward: the mask and its zero last, bound only when the graph has them */
            const int64_t fu[14] = {UID_X,      UID_Y,      UID_SCALE, UID_BIAS,  UID_EPS,  UID_MOM,  UID_RM_IN,
                                    UID_RV_IN,  UID_RM_OUT, UID_RV_OUT, UID_SMEAN, UID_SINV, UID_MASK, UID_ZERO};
            void *fptr[14] = {x, y_g, gamma, beta, &eps_f, &mom_f, g_rmi, g_rvi, g_rmo, g_rvo, g_sm, g_si, mask, &zero_b};
            int64_t bu[10] = {UID_X, UID_DY, UID_DX, UID_SCALE, UID_SMEAN, UID_SINV, UID_DSCALE, UID_DBIAS};
            void *bptr[10] = {x, dy, dx_g, gamma, g_sm, g_si, g_dg, g_db};
            int nb = 8;
            if (b.relu) {
                bu[nb] = bmask ? UID_MASK : UID_Y;
                bptr[nb++] = bmask ? (void *)mask : (void *)y_g;
            }
            if (beps) {
                bu[nb] = UID_EPS;
                bptr[nb++] = &eps_f;
            }
            gs = bind(&fp, fmask ? 14 : 12, fu, fptr, gws);
            if (gs == CUDNN_STATUS_SUCCESS) gs = bind(&bp, nb, bu, bptr, gws);
            if (gs != CUDNN_STATUS_SUCCESS) why += std::string("variant pack: ") + fp.why + bp.why;
        }
        const bool planned = gs == CUDNN_STATUS_SUCCESS;
        /* where a crash below (a sticky CUDA error exits) happened */
        fprintf(stderr, "bench_bn_graph: %s relu %d: %s in %.2f s; running\n", nm, b.relu,
                planned ? "planned" : "no graph plan", t2 - t0);
        auto g_fwd = [&]() { return cudnnBackendExecute(dnn, fp.plan, fp.vpack); };
        auto g_bwd = [&]() { return cudnnBackendExecute(dnn, bp.plan, bp.vpack); };
        /* the mask the backward reads, when the forward does not write it (outside the timing) */
        auto g_mask = [&]() {
            if (b.relu && bmask && !fmask) {
                mask_k<<<1024, 256>>>(y_g, mask, len / 8);
                CK(cudaGetLastError());
            }
        };

        /* correctness first: the running statistics from rm = 0, rv = 1, one call of each */
        const std::vector<float> z0(c, 0.f), o1(c, 1.f);
        up_f(ex_rm, z0);
        up_f(ex_rv, o1);
        up_f(g_rmi, z0);
        up_f(g_rvi, o1);
        if (es == CUDNN_STATUS_SUCCESS) es = ex_fwd();
        if (es == CUDNN_STATUS_SUCCESS) es = ex_bwd();
        if (gs == CUDNN_STATUS_SUCCESS) gs = g_fwd();
        if (gs == CUDNN_STATUS_SUCCESS) {
            g_mask();
            gs = g_bwd();
        }
        if (planned && gs != CUDNN_STATUS_SUCCESS) {
            char msg[256] = "";
            cudnnGetLastErrorString(msg, sizeof msg);
            why += std::string("execute: ") + cudnnGetErrorString(gs) + (msg[0] ? ": " : "") + msg;
        }
        CK(cudaDeviceSynchronize());
        double tef = NAN, tgf = NAN, teb = NAN, tgb = NAN, md = NAN, unb_e = NAN, unb_g = NAN;
        size_t dxoff = 0;
        const char *verdict = "na";
        if (es != CUDNN_STATUS_SUCCESS) {
            why = std::string("Ex API: ") + cudnnGetErrorString(es) + "; " + why;
        } else if (gs == CUDNN_STATUS_SUCCESS) {
            const size_t cmpn = std::min(len, (size_t)1 << 22);
            const double tol = 1.0 / 128;
            size_t off = 0, o;
            md = rel_maxdiff(down_bf16(y_g, cmpn), down_bf16(y_ex, cmpn), tol, &off);
            (void)rel_maxdiff(down_bf16(dx_g, cmpn), down_bf16(dx_ex, cmpn), tol, &dxoff);
            const float *pg[6] = {g_dg, g_db, g_sm, g_si, g_rmo, g_rvo}, *pe[6] = {ex_dg, ex_db, ex_sm, ex_si, ex_rm, ex_rv};
            for (int k = 0; k < 6; k++) {
                md = std::max(md, rel_maxdiff(down_f(pg[k], c), down_f(pe[k], c), tol, &o));
                off += o;
            }
            unb_e = unbiased_score(down_f(ex_rv, c), 1.f, down_f(ex_si, c), mom, eps, (double)m);
            unb_g = unbiased_score(down_f(g_rvo, c), 1.f, down_f(g_si, c), mom, eps, (double)m);
            const int ok = off == 0 && dxoff * 100000 <= cmpn;
            verdict = ok ? "ok" : "DIFF";
            all_ok &= ok;
            tef = time_ms([&]() { (void)ex_fwd(); }, iters, repeats);
            tgf = time_ms([&]() { (void)g_fwd(); }, iters, repeats);
            teb = time_ms([&]() { (void)ex_bwd(); }, iters, repeats);
            tgb = time_ms([&]() { (void)g_bwd(); }, iters, repeats);
            CK(cudaGetLastError());
            tot[0] += b.count * tef;
            tot[1] += b.count * tgf;
            tot[2] += b.count * teb;
            tot[3] += b.count * tgb;
        }
        if (!(es == CUDNN_STATUS_SUCCESS && gs == CUDNN_STATUS_SUCCESS)) {
            all_ok = 0;
            if (es == CUDNN_STATUS_SUCCESS) {
                tef = time_ms([&]() { (void)ex_fwd(); }, iters, repeats);
                teb = time_ms([&]() { (void)ex_bwd(); }, iters, repeats);
            }
        }
        char unb[32], c1[16], c2[16], c3[16], c4[16];
        snprintf(unb, sizeof unb, "%.2f/%.2f", unb_e, unb_g);
        printf("  %-14s %4d %5d %10s %10s %10s %10s %9.2e %7zu %11s %7.2f %7s%s%s\n", nm, b.relu, b.count,
               us(tef, c1), us(tgf, c2), us(teb, c3), us(tgb, c4), md, dxoff, unb, t2 - t0, verdict,
               verdict[0] == 'n' ? "  " : "", verdict[0] == 'n' ? why.c_str() : "");
        fflush(stdout);
        char head[96];
        snprintf(head, sizeof head, "# %s relu %d: plan fwd %.2f s, bwd %.2f s; ", nm, b.relu, t1 - t0, t2 - t1);
        notes.push_back(std::string(head) + "fwd " + (fwhat.empty() ? "none" : fwhat) + "; bwd " +
                        (bwhat.empty() ? "none" : bwhat) +
                        (b.relu && bmask && !fmask ? " (mask packed from y by our kernel, untimed)" : "") +
                        (verdict[0] != 'n' && !why.empty() ? "; refused first: " + why : ""));
        plan_destroy(&fp);
        plan_destroy(&bp);
    }
    int nbn = 0;
    for (auto &b : shapes) nbn += b.count;
    char nm[32];
    snprintf(nm, sizeof nm, "all %d BNs", nbn);
    printf("  %-14s %4s %5d %10.1f %10.1f %10.1f %10.1f %9s %7s %11s %7.2f %7s\n", nm, "", nbn, 1e3 * tot[0],
           1e3 * tot[1], 1e3 * tot[2], 1e3 * tot[3], "", "", "", plan_s, all_ok ? "ok" : "DIFF/na");
    const double ratio = tot[0] + tot[2] > 0 ? (tot[1] + tot[3]) / (tot[0] + tot[2]) : NAN;
    printf("# graph fwd+bwd / Ex fwd+bwd = %.2f (> 1: the Ex calls are faster); totals over the shapes both ran\n",
           ratio);
    for (auto &s : notes) printf("%s\n", s.c_str());
    printf("RESULT gpu=%s n=%d ex_fwd_ms=%.3f graph_fwd_ms=%.3f ex_bwd_ms=%.3f graph_bwd_ms=%.3f graph_over_ex=%.2f "
           "ok=%d plan_s=%.2f\n",
           gpu, n, tot[0], tot[1], tot[2], tot[3], ratio, all_ok, plan_s);
    cudnnDestroy(dnn);
    return all_ok ? 0 : 1;
}
