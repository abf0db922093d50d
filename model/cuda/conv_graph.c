/* model/cuda/conv_graph.c — convolutions on cuDNN's backend graph API (see conv_graph.h).
 *
 * Per direction and batch size: three tensor descriptors (cuDNN's n,c,h,w dimension order
 * with strides that make c innermost: NHWC activations, KRSC filters), a convolution
 * descriptor (cross-correlation, fp32 compute), one convolution operation with alpha 1 and
 * the layer's beta, and an operation graph holding it. Engine configs come from heuristics
 * mode A, or from the fallback mode when none of A's finalizes; they are tried in the
 * heuristics' order, deterministic ones first (net.cu's PICK_ALGO policy), and the first that
 * passes the numerical-note rule, finalizes into an execution plan and needs at most the
 * workspace cap is kept. Numerical notes:
 *   - DOWN_CONVERT_INPUTS is refused in every mode (as PyTorch's cuDNN v8 path does);
 *   - fp32 exact mode also refuses TENSOR_CORE (with the above: TF32), FFT and WINOGRAD*
 *     (their error scales with the transform's tile, not with each output's terms),
 *     NONDETERMINISTIC and REDUCED_PRECISION_REDUCTION, with no second pass: the exact mode
 *     promises the same bits for the same batch and plain fp32 products and sums;
 *   - bf16/fp16 take tensor cores; a nondeterministic engine only when no deterministic one
 *     qualifies, and one with REDUCED_PRECISION_REDUCTION only when nothing else does (the
 *     operation declares fp32 compute, and the tests bound the error by fp32 accumulation).
 *   Each candidate's notes are logged at TRACE (IH_DEBUG=TRACE IH_DEBUG_SUBSYS=MODEL) for the
 *   day a layer finds no engine.
 * The descriptors a plan was built from stay alive with it (as cudnn-frontend keeps them),
 * which costs a few KB of host memory per plan and avoids relying on the backend copying them.
 * The forward with statistics (conv_graph.h) is one more operation graph under the same engine
 * search, planned on demand; with stats_required 0 a failure to plan it only drops it for that
 * batch, with a warning.
 * Execution: a variant pack (the operands' pointers and the workspace)
 * built on the first call with a pointer set and reused while the pointers stay (net.cu's
 * buffers are fixed at create); cudnnBackendExecute then only launches kernels on the handle's
 * stream with our workspace, no allocation or synchronisation, so it can be captured into a
 * CUDA graph (PyTorch's convolutions run on this API and are captured in CUDA graphs; our
 * test_cuda_conv_graph replays a capture). Engines that compile
 * at run time do so when their plan is finalized, which net.cu does at create or in set_batch,
 * both outside capture.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda_check.h"
#include "core/log.h"
#include "model/cuda/conv_graph.h"

enum { FWD = 0, BWD_DATA = 1, BWD_FILTER = 2, FWD_STATS = 3, NDIR = 4 };
static const char *const DIR_NAME[NDIR] = {"forward", "backward-data", "backward-filter",
                                           "forward+statistics"};

/* Every convolution has an x-shaped, a w-shaped and a y-shaped operand (forward: x, w, y;
 * backward data: dx, w, dy; backward filter: x, dw, dy); the forward with statistics adds the
 * shift, sum and sqsum, and a virtual fp32 intermediate (y - shift). Their unique ids: */
enum { UID_X = 1, UID_W = 2, UID_Y = 3, UID_SHIFT = 4, UID_SUM = 5, UID_SQSUM = 6, UID_D = 101 };
enum { NOPND = 6 };           /* operands of a variant pack at most (the statistics plan's) */
enum { KEEP = 24 };           /* descriptors a plan was built from, at most */

static const cudnnBackendDescriptorType_t OP_TYPE[3] = {
    CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
    CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
    CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
};
/* per convolution direction: alpha, beta, convolution, then the x-, w- and y-shaped operands */
static const cudnnBackendAttributeName_t OP_ATTR[3][6] = {
    {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA,
     CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
     CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y},
    {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA,
     CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX,
     CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY},
    {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA,
     CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X,
     CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY},
};

typedef struct {
    cudnnBackendDescriptor_t keep[KEEP]; /* what the plan was built from, in creation order
                                            (tensors, convolution, operations, the graph, the
                                            engine config) */
    int nkeep;
    cudnnBackendDescriptor_t graph; /* the operation graph (also in keep) */
    cudnnBackendDescriptor_t plan;  /* NULL: direction not planned */
    cudnnBackendDescriptor_t vpack; /* built for vp[] */
    const void *vp[NOPND + 1];      /* the operands in uid order, then the workspace */
    int64_t ws;                     /* workspace bytes */
    char what[200];                 /* engine, knobs and notes, for the log */
} dir_plan;

typedef struct {
    int n;
    int stats_tried;  /* the forward with statistics was planned (or found impossible) */
    ih_err stats_err; /* stats_required and it failed: the error, returned again */
    char stats_why[1024];
    dir_plan d[NDIR];
} batch_plans;

struct model_cuda_conv_graph {
    cudnnHandle_t h;
    model_cuda_conv_graph_desc d; /* pointers cleared; label points into label[] */
    char label[160];
    int64_t align[NDIR][NOPND];   /* promised alignment of each direction's operands */
    batch_plans *bp;              /* one entry per batch size planned so far */
    int nbp, cur;
};

/* What one candidate search saw, for the error message when nothing qualifies. */
typedef struct {
    int cfgs, tried, big, refused;
    cudnnStatus_t last;
    char msg[256]; /* cudnnGetLastErrorString at the last refusal */
} search_log;

typedef struct {
    int64_t index;
    int det, allowed, rtc;
    int rpr;           /* REDUCED_PRECISION_REDUCTION: only in the last pass (bf16/fp16) */
    unsigned notes;    /* bit i: numerical note i, for the trace log */
} engine_info;

ih_err model_cuda_conv_api_from_env(int *graph)
{
    const char *v = getenv("IH_CUDNN_API");
    *graph = 1;
    if (!v || !*v || !strcmp(v, "graph")) return IH_OK;
    if (!strcmp(v, "legacy")) {
        *graph = 0;
        return IH_OK;
    }
    return ih_fail(IH_E_USAGE, "IH_CUDNN_API=%s: unknown cuDNN API; use 'graph' (the backend graph API, "
                   "the default) or 'legacy' (cudnnConvolution* with cudnnFind)", v);
}

ih_err model_cuda_conv_fuse_from_env(int *fuse)
{
    const char *v = getenv("IH_CUDNN_FUSE");
    *fuse = 0;
    if (!v || !*v || !strcmp(v, "none")) return IH_OK;
    if (!strcmp(v, "stats")) *fuse = 1;
    else if (!strcmp(v, "stats:require")) *fuse = 2;
    else
        return ih_fail(IH_E_USAGE, "IH_CUDNN_FUSE=%s: unknown fusion; use 'none' (the default), 'stats' (each "
                       "convolution before a BN also sums its output per channel, on cuDNN's graph API, where "
                       "cuDNN has an engine for it) or 'stats:require' (the same, and an error where it has none)", v);
    return IH_OK;
}

ih_err model_cuda_bn_from_env(int *cudnn_bn)
{
    const char *v = getenv("IH_CUDNN_BN");
    *cudnn_bn = 1 | 4 | 8; /* the default: cuDNN with the joins, not asked for */
    if (!v || !*v) return IH_OK;
    *cudnn_bn = 0;
    if (!strcmp(v, "ours")) return IH_OK;
    if (!strcmp(v, "cudnn")) *cudnn_bn = 1;
    else if (!strcmp(v, "cudnn:require")) *cudnn_bn = 1 | 2;
    else if (!strcmp(v, "cudnn+add")) *cudnn_bn = 1 | 4;
    else if (!strcmp(v, "cudnn+add:require")) *cudnn_bn = 1 | 2 | 4;
    else
        return ih_fail(IH_E_USAGE, "IH_CUDNN_BN=%s: unknown BatchNorm; use 'cudnn+add' (the default: cuDNN's batch "
                       "normalization for the bf16/fp16 training step, each residual join's BN, add and ReLU as one "
                       "cuDNN call, our kernels for a layer cuDNN refuses), 'cudnn' (the same without the joins), "
                       "either with ':require' (an error where cuDNN refuses), or 'ours' (our CUDA kernels)", v);
    return IH_OK;
}

static int64_t align_of(const void *p)
{
    int64_t a = 256;
    while (a > 1 && (uintptr_t)p % (uintptr_t)a) a /= 2;
    return a;
}

static int out_size(int in, int r, int stride, int pad) { return (in + 2 * pad - r) / stride + 1; }

static void note_refusal(search_log *s, cudnnStatus_t st)
{
    s->last = st;
    cudnnGetLastErrorString(s->msg, sizeof s->msg);
}

/* A new descriptor of type t, kept with p (destroyed with it). */
static ih_err new_desc(dir_plan *p, cudnnBackendDescriptorType_t t, cudnnBackendDescriptor_t *out)
{
    *out = NULL;
    if (p->nkeep >= KEEP) return ih_fail(IH_E_INTERNAL, "cuDNN graph API: more than %d descriptors in a plan", KEEP);
    IH_CUDNN(cudnnBackendCreateDescriptor(t, &p->keep[p->nkeep]));
    *out = p->keep[p->nkeep++];
    return IH_OK;
}

/* dim: cuDNN's n,c,h,w (k,c,r,s for filters; 1,k,1,1 for per-channel vectors); the strides make
 * c innermost. virt: an intermediate that lives only inside the fused kernel. */
static ih_err set_tensor(cudnnBackendDescriptor_t t, int64_t uid, cudnnDataType_t type,
                         const int64_t dim[4], int64_t align, int virt)
{
    const int64_t str[4] = {dim[1] * dim[2] * dim[3], 1, dim[3] * dim[1], dim[1]};
    const bool v = virt != 0;
    IH_CUDNN(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type));
    IH_CUDNN(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dim));
    IH_CUDNN(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, str));
    IH_CUDNN(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
    IH_CUDNN(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align));
    if (v) IH_CUDNN(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &v));
    IH_CUDNN(cudnnBackendFinalize(t));
    return IH_OK;
}

static ih_err set_conv(cudnnBackendDescriptor_t c, int stride, int pad)
{
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    const int64_t dims = 2, dil[2] = {1, 1}, str[2] = {stride, stride}, pd[2] = {pad, pad};
    IH_CUDNN(cudnnBackendSetAttribute(c, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp));
    IH_CUDNN(cudnnBackendSetAttribute(c, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode));
    IH_CUDNN(cudnnBackendSetAttribute(c, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &dims));
    IH_CUDNN(cudnnBackendSetAttribute(c, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dil));
    IH_CUDNN(cudnnBackendSetAttribute(c, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, str));
    IH_CUDNN(cudnnBackendSetAttribute(c, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pd));
    IH_CUDNN(cudnnBackendSetAttribute(c, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pd));
    IH_CUDNN(cudnnBackendFinalize(c));
    return IH_OK;
}

/* The engine behind an engine config: global index, determinism, whether the note rule of
 * the file header admits it, and whether it compiles at run time (logged). A config whose
 * notes cannot be read is refused (the caller counts it), since the rule cannot be checked. */
static cudnnStatus_t engine_of(cudnnBackendDescriptor_t cfg, int exact, engine_info *out)
{
    cudnnBackendDescriptor_t eng = NULL;
    cudnnBackendNumericalNote_t nn[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
    cudnnBackendBehaviorNote_t bn[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
    int64_t got = 0, nnum = 0, nbeh = 0;
    memset(out, 0, sizeof *out);
    cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &eng);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    st = cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &got, &eng);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &got, &out->index);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                      CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &nnum, nn);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                                      CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &nbeh, bn);
    /* a destroy failure is not actionable */
    (void)cudnnBackendDestroyDescriptor(eng);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    out->det = 1;
    out->allowed = 1;
    for (int64_t i = 0; i < nnum && i < CUDNN_NUMERICAL_NOTE_TYPE_COUNT; i++) {
        if ((int)nn[i] >= 0 && (int)nn[i] < 32) out->notes |= 1u << (int)nn[i];
        switch (nn[i]) {
        case CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC:
            out->det = 0;
            if (exact) out->allowed = 0;
            break;
        case CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION:
            out->rpr = 1;
            if (exact) out->allowed = 0;
            break;
        /* inputs converted to a narrower type than declared: never (PyTorch's cuDNN v8 path
         * drops these too); in exact mode that is TF32 */
        case CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS: out->allowed = 0; break;
        case CUDNN_NUMERICAL_NOTE_TENSOR_CORE:
        /* transforms whose rounding error scales with the whole tile, not each output's terms:
         * not the exact mode's plain fp32 products and sums */
        case CUDNN_NUMERICAL_NOTE_FFT:
        case CUDNN_NUMERICAL_NOTE_WINOGRAD:
        case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_4x4:
        case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_6x6:
        case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_13x13:
            if (exact) out->allowed = 0;
            break;
        default: break;
        }
    }
    for (int64_t i = 0; i < nbeh && i < CUDNN_BEHAVIOR_NOTE_TYPE_COUNT; i++)
        if (bn[i] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION) out->rtc = 1;
    return CUDNN_STATUS_SUCCESS;
}

/* "k13=2 k2=5" from the config's knob choices, for the log; a read failure only degrades the
 * text (the plan exists and works). */
static void knob_text(cudnnBackendDescriptor_t cfg, char *buf, size_t len)
{
    enum { MAXK = CUDNN_KNOB_TYPE_COUNTS };
    cudnnBackendDescriptor_t k[MAXK];
    int made = 0;
    int64_t got = 0;
    size_t o = 0;
    buf[0] = 0;
    cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
    for (; made < MAXK && st == CUDNN_STATUS_SUCCESS; made++) {
        st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR, &k[made]);
        if (st != CUDNN_STATUS_SUCCESS) break;
    }
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_KNOB_CHOICES, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                      MAXK, &got, k);
    for (int64_t i = 0; st == CUDNN_STATUS_SUCCESS && i < got && i < MAXK; i++) {
        cudnnBackendKnobType_t t;
        int64_t v = 0, one = 0;
        st = cudnnBackendGetAttribute(k[i], CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE, CUDNN_TYPE_KNOB_TYPE, 1, &one, &t);
        if (st == CUDNN_STATUS_SUCCESS)
            st = cudnnBackendGetAttribute(k[i], CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE, CUDNN_TYPE_INT64, 1, &one, &v);
        if (st == CUDNN_STATUS_SUCCESS && o < len) {
            int w = snprintf(buf + o, len - o, "%sk%d=%lld", o ? " " : "", (int)t, (long long)v);
            o += w > 0 ? (size_t)w : 0;
        }
    }
    if (st != CUDNN_STATUS_SUCCESS) snprintf(buf, len, "knobs unreadable: %s", cudnnGetErrorString(st));
    for (int i = 0; i < made; i++) (void)cudnnBackendDestroyDescriptor(k[i]);
}

/* Finalizes cfg into an execution plan; on success p->plan/p->ws are set. A config that does
 * not finalize or needs more than cap bytes is no error: it is counted in s and skipped. */
static ih_err try_plan(cudnnHandle_t h, cudnnBackendDescriptor_t cfg, size_t cap, dir_plan *p,
                       search_log *s)
{
    cudnnBackendDescriptor_t plan = NULL;
    int64_t ws = 0, got = 0;
    ih_err err = IH_OK;
    IH_CUDNN(cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan));
    IH_CUDNN_GOTO(cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h),
                  err, drop);
    IH_CUDNN_GOTO(cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                           CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg), err, drop);
    cudnnStatus_t st = cudnnBackendFinalize(plan);
    if (st != CUDNN_STATUS_SUCCESS) {
        note_refusal(s, st);
        goto drop;
    }
    IH_CUDNN_GOTO(cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64,
                                           1, &got, &ws), err, drop);
    if (ws < 0 || (uint64_t)ws > (uint64_t)cap) {
        s->big++;
        goto drop;
    }
    p->plan = plan;
    p->ws = ws;
    return IH_OK;
drop:
    (void)cudnnBackendDestroyDescriptor(plan);
    return err;
}

/* Engine search for p's finalized operation graph (file header). No qualifying engine leaves
 * p->plan NULL and returns IH_OK; s says why. */
static ih_err pick_engine(model_cuda_conv_graph *g, dir_plan *p, size_t cap, search_log *s)
{
    static const cudnnBackendHeurMode_t modes[2] = {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK};
    for (int m = 0; m < 2 && !p->plan; m++) {
        cudnnBackendDescriptor_t heur = NULL, *cfg = NULL;
        engine_info *inf = NULL;
        int64_t cnt = 0, got = 0, made = 0;
        ih_err err = IH_OK;
        IH_CUDNN(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur));
        IH_CUDNN_GOTO(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
                                               CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &p->graph), err, next);
        IH_CUDNN_GOTO(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1,
                                               &modes[m]), err, next);
        cudnnStatus_t st = cudnnBackendFinalize(heur);
        if (st != CUDNN_STATUS_SUCCESS) { /* this mode has nothing for the graph: try the next */
            note_refusal(s, st);
            goto next;
        }
        IH_CUDNN_GOTO(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                               CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &cnt, NULL), err, next);
        if (cnt <= 0) goto next;
        cfg = (cudnnBackendDescriptor_t *)calloc((size_t)cnt, sizeof *cfg);
        inf = (engine_info *)calloc((size_t)cnt, sizeof *inf);
        if (!cfg || !inf) {
            err = ih_fail(IH_E_SYS, "model cuda: out of host memory (%lld engine configs)", (long long)cnt);
            goto next;
        }
        for (; made < cnt; made++)
            IH_CUDNN_GOTO(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfg[made]), err, next);
        IH_CUDNN_GOTO(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                               CUDNN_TYPE_BACKEND_DESCRIPTOR, cnt, &got, cfg), err, next);
        if (got > cnt) got = cnt;
        s->cfgs += (int)got;
        for (int64_t i = 0; i < got; i++) {
            cudnnStatus_t est = engine_of(cfg[i], g->d.exact, &inf[i]);
            if (est != CUDNN_STATUS_SUCCESS) note_refusal(s, est);
            s->refused += !inf[i].allowed;
            IH_TRACE(IH_LOG_MODEL, "model cuda: %s: candidate engine %lld, numerical notes 0x%x (bit = "
                     "cudnnBackendNumericalNote_t)%s", g->label, (long long)inf[i].index, inf[i].notes,
                     inf[i].allowed ? "" : ": refused");
        }
        /* pass 0: deterministic engines; pass 1 (not in exact mode, where a nondeterministic
         * engine is never allowed): the others; pass 2 (bf16/fp16 only): those with a reduced
         * precision reduction, rather than no engine at all */
        for (int pass = 0; pass < 3 && !p->plan; pass++)
            for (int64_t i = 0; i < got && !p->plan; i++) {
                if (!inf[i].allowed || inf[i].rpr != (pass == 2) || (pass < 2 && inf[i].det != (pass == 0)))
                    continue;
                s->tried++;
                IH_TRY_GOTO(try_plan(g->h, cfg[i], cap, p, s), err, next);
                if (!p->plan) continue;
                char kn[120];
                knob_text(cfg[i], kn, sizeof kn);
                snprintf(p->what, sizeof p->what, "engine %lld%s%s%s%s%s, %.1f MiB", (long long)inf[i].index,
                         kn[0] ? " [" : "", kn, kn[0] ? "]" : "", inf[i].det ? "" : " nondeterministic",
                         inf[i].rtc ? " runtime-compiled" : "", (double)p->ws / 1048576.0);
                if (m > 0) strncat(p->what, " (fallback heuristics)", sizeof p->what - strlen(p->what) - 1);
                if (p->nkeep < KEEP) { /* else it is destroyed with the others; the plan keeps what it needs */
                    p->keep[p->nkeep++] = cfg[i];
                    cfg[i] = NULL;
                }
            }
    next:
        for (int64_t i = 0; i < made; i++)
            if (cfg[i]) (void)cudnnBackendDestroyDescriptor(cfg[i]);
        free(cfg);
        free(inf);
        (void)cudnnBackendDestroyDescriptor(heur);
        if (err != IH_OK) return err;
    }
    return IH_OK;
}

static void destroy_dir(dir_plan *p)
{
    if (p->vpack) (void)cudnnBackendDestroyDescriptor(p->vpack);
    if (p->plan) (void)cudnnBackendDestroyDescriptor(p->plan);
    for (int i = p->nkeep - 1; i >= 0; i--)
        if (p->keep[i]) (void)cudnnBackendDestroyDescriptor(p->keep[i]);
    memset(p, 0, sizeof *p);
}

/* A pointwise operation y = mode(x[, b]) in fp32 math, kept with p. */
static ih_err pointwise_op(dir_plan *p, cudnnPointwiseMode_t mode, cudnnBackendDescriptor_t x,
                           cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t y, cudnnBackendDescriptor_t *op)
{
    cudnnBackendDescriptor_t pw = NULL;
    const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
    IH_TRY(new_desc(p, CUDNN_BACKEND_POINTWISE_DESCRIPTOR, &pw));
    IH_CUDNN(cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode));
    IH_CUDNN(cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec));
    IH_CUDNN(cudnnBackendFinalize(pw));
    IH_TRY(new_desc(p, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, op));
    IH_CUDNN(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR,
                                      CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw));
    IH_CUDNN(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                      1, &x));
    if (b)
        IH_CUDNN(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                          1, &b));
    IH_CUDNN(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                      1, &y));
    IH_CUDNN(cudnnBackendFinalize(*op));
    return IH_OK;
}

/* GenStats: per-channel sum and sum of squares of x [n,k,p,q] into sum, sq [1,k,1,1], fp32. */
static ih_err genstats_op(dir_plan *p, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t sum,
                          cudnnBackendDescriptor_t sq, cudnnBackendDescriptor_t *op)
{
    const cudnnGenStatsMode_t mode = CUDNN_GENSTATS_SUM_SQSUM;
    const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
    IH_TRY(new_desc(p, CUDNN_BACKEND_OPERATION_GEN_STATS_DESCRIPTOR, op));
    IH_CUDNN(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_GENSTATS_MODE, CUDNN_TYPE_GENSTATS_MODE, 1, &mode));
    IH_CUDNN(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_GENSTATS_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec));
    IH_CUDNN(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_GENSTATS_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                      &x));
    IH_CUDNN(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_GENSTATS_SUMDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                      &sum));
    IH_CUDNN(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_GENSTATS_SQSUMDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                      1, &sq));
    IH_CUDNN(cudnnBackendFinalize(*op));
    return IH_OK;
}

/* Builds p (all zero on entry) for direction dir at n images. On error p may hold some
 * descriptors; the caller destroys it. */
static ih_err plan_dir(model_cuda_conv_graph *g, int dir, int n, size_t cap, dir_plan *p)
{
    const model_cuda_conv_graph_desc *d = &g->d;
    const int oh = out_size(d->h, d->r, d->stride, d->pad), ow = out_size(d->w, d->s, d->stride, d->pad);
    const int64_t xd[4] = {n, d->c, d->h, d->w}, wd[4] = {d->k, d->c, d->r, d->s}, yd[4] = {n, d->k, oh, ow};
    const int64_t kd[4] = {1, d->k, 1, 1};
    const int64_t *dims[3] = {xd, wd, yd};
    const int conv_dir = dir == FWD_STATS ? FWD : dir;
    cudnnBackendDescriptor_t t[3], conv = NULL, ops[5];
    int nops = 0;
    for (int i = 0; i < 3; i++) {
        IH_TRY(new_desc(p, CUDNN_BACKEND_TENSOR_DESCRIPTOR, &t[i]));
        IH_TRY(set_tensor(t[i], UID_X + i, d->type, dims[i], g->align[dir][i], 0));
    }
    IH_TRY(new_desc(p, CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, &conv));
    IH_TRY(set_conv(conv, d->stride, d->pad));

    cudnnBackendDescriptor_t op = NULL;
    const float alpha = 1.0f, beta = conv_dir == FWD ? 0.0f : conv_dir == BWD_DATA ? d->beta_data : d->beta_filter;
    IH_TRY(new_desc(p, OP_TYPE[conv_dir], &op));
    IH_CUDNN(cudnnBackendSetAttribute(op, OP_ATTR[conv_dir][0], CUDNN_TYPE_FLOAT, 1, &alpha));
    IH_CUDNN(cudnnBackendSetAttribute(op, OP_ATTR[conv_dir][1], CUDNN_TYPE_FLOAT, 1, &beta));
    IH_CUDNN(cudnnBackendSetAttribute(op, OP_ATTR[conv_dir][2], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &conv));
    for (int i = 0; i < 3; i++)
        IH_CUDNN(cudnnBackendSetAttribute(op, OP_ATTR[conv_dir][3 + i], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t[i]));
    IH_CUDNN(cudnnBackendFinalize(op));
    ops[nops++] = op;

    if (dir == FWD_STATS) { /* the epilogue of the file header, all in fp32 */
        cudnnBackendDescriptor_t shift = NULL, sum = NULL, sq = NULL, dv = NULL;
        IH_TRY(new_desc(p, CUDNN_BACKEND_TENSOR_DESCRIPTOR, &shift));
        IH_TRY(set_tensor(shift, UID_SHIFT, CUDNN_DATA_FLOAT, kd, g->align[dir][3], 0));
        IH_TRY(new_desc(p, CUDNN_BACKEND_TENSOR_DESCRIPTOR, &sum));
        IH_TRY(set_tensor(sum, UID_SUM, CUDNN_DATA_FLOAT, kd, g->align[dir][4], 0));
        IH_TRY(new_desc(p, CUDNN_BACKEND_TENSOR_DESCRIPTOR, &sq));
        IH_TRY(set_tensor(sq, UID_SQSUM, CUDNN_DATA_FLOAT, kd, g->align[dir][5], 0));
        IH_TRY(new_desc(p, CUDNN_BACKEND_TENSOR_DESCRIPTOR, &dv));
        IH_TRY(set_tensor(dv, UID_D, CUDNN_DATA_FLOAT, yd, 16, 1));
        /* the broadcast operand second, as the support surface requires */
        IH_TRY(pointwise_op(p, CUDNN_POINTWISE_SUB, t[2], shift, dv, &ops[nops++]));
        IH_TRY(genstats_op(p, dv, sum, sq, &ops[nops++]));
    }

    IH_TRY(new_desc(p, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &p->graph));
    IH_CUDNN(cudnnBackendSetAttribute(p->graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, nops,
                                      ops));
    /* this and the plan's handle attribute are deprecated in late 9.x in favour of device
     * properties, but the 9.x releases in PyTorch's wheels (gpu_check.sh's cuDNN) need them */
    IH_CUDNN(cudnnBackendSetAttribute(p->graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &g->h));
    IH_CUDNN(cudnnBackendFinalize(p->graph));

    search_log s;
    memset(&s, 0, sizeof s);
    IH_TRY(pick_engine(g, p, cap, &s));
    if (!p->plan)
        return ih_fail(IH_E_CUDA, "no engine finalizes: %d engine configs from the heuristics (mode A, then "
                       "fallback), %d refused by their numerical notes (or unreadable notes)%s, %d tried, %d over the %zu-byte "
                       "workspace cap; last cuDNN status %s%s%s", s.cfgs, s.refused,
                       d->exact ? " (fp32 exact: deterministic, no tensor cores / TF32)" : "", s.tried, s.big,
                       cap, s.last != CUDNN_STATUS_SUCCESS ? cudnnGetErrorString(s.last) : "none",
                       s.msg[0] ? ": " : "", s.msg);
    return IH_OK;
}

/* The convolution's own directions for n images (the forward with statistics is planned on
 * demand, plan_stats). */
static ih_err plan_batch(model_cuda_conv_graph *g, int n, size_t cap, batch_plans *b)
{
    const model_cuda_conv_graph_desc *d = &g->d;
    memset(b, 0, sizeof *b);
    b->n = n;
    for (int dir = 0; dir < FWD_STATS; dir++) {
        if (dir == BWD_DATA && !d->bwd_data) continue;
        ih_err err = plan_dir(g, dir, n, cap, &b->d[dir]);
        if (err == IH_OK) continue;
        char why[512];
        snprintf(why, sizeof why, "%s", ih_last_error());
        for (int i = 0; i < NDIR; i++) destroy_dir(&b->d[i]);
        return ih_fail(err, "cuDNN graph API: %s, batch %d, %s: %s", g->label, n, DIR_NAME[dir], why);
    }
    IH_INFO(IH_LOG_MODEL, "model cuda: %s, batch %d: graph API %s: %s; %s: %s; %s: %s", g->label, n,
            DIR_NAME[FWD], b->d[FWD].what, DIR_NAME[BWD_DATA], d->bwd_data ? b->d[BWD_DATA].what : "not needed",
            DIR_NAME[BWD_FILTER], b->d[BWD_FILTER].what);
    return IH_OK;
}

/* The forward with statistics for b's batch, once: no engine is a warning (the plan stays
 * absent) or, with stats_required, an error, which later calls return again. */
static ih_err plan_stats(model_cuda_conv_graph *g, size_t cap, batch_plans *b)
{
    const model_cuda_conv_graph_desc *d = &g->d;
    if (!d->fwd_stats) return IH_OK;
    if (b->stats_tried) return b->stats_err == IH_OK ? IH_OK : ih_fail(b->stats_err, "%s", b->stats_why);
    b->stats_tried = 1;
    dir_plan *p = &b->d[FWD_STATS];
    ih_err err = plan_dir(g, FWD_STATS, b->n, cap, p);
    if (err == IH_OK) {
        IH_INFO(IH_LOG_MODEL, "model cuda: %s, batch %d: graph API %s: %s", g->label, b->n, DIR_NAME[FWD_STATS],
                p->what);
        return IH_OK;
    }
    char why[512];
    snprintf(why, sizeof why, "%s", ih_last_error());
    destroy_dir(p);
    if (d->stats_required) {
        b->stats_err = err;
        snprintf(b->stats_why, sizeof b->stats_why, "cuDNN graph API: %s, batch %d, %s (IH_CUDNN_FUSE=stats:require): %s",
                 g->label, b->n, DIR_NAME[FWD_STATS], why);
        return ih_fail(err, "%s", b->stats_why);
    }
    IH_WARN("model cuda: %s, batch %d: no fused convolution statistics (%s); the BN after it computes them "
            "(IH_CUDNN_FUSE=stats:require makes this an error)", g->label, b->n, why);
    return IH_OK;
}

ih_err model_cuda_conv_graph_create(model_cuda_conv_graph **out, cudnnHandle_t h,
                                    const model_cuda_conv_graph_desc *d, size_t ws_cap)
{
    *out = NULL;
    const char *label = d->label ? d->label : "conv";
    if (d->n < 1 || d->h < 1 || d->w < 1 || d->c < 1 || d->k < 1 || d->r < 1 || d->s < 1 || d->stride < 1 ||
        d->pad < 0 || out_size(d->h, d->r, d->stride, d->pad) < 1 || out_size(d->w, d->s, d->stride, d->pad) < 1 ||
        (d->beta_data != 0 && d->beta_data != 1) || (d->beta_filter != 0 && d->beta_filter != 1) ||
        (d->fwd_stats && (d->exact || !d->shiftp || !d->sump || !d->sqsump)))
        return ih_fail(IH_E_USAGE, "cuDNN graph API: %s: bad shape or beta (n %d, %dx%dx%d, k %d, %dx%d, "
                       "stride %d, pad %d, betas %g %g; statistics %d need bf16/fp16 and their three buffers)", label,
                       d->n, d->h, d->w, d->c, d->k, d->r, d->s, d->stride, d->pad, d->beta_data, d->beta_filter,
                       d->fwd_stats);
    model_cuda_conv_graph *g = (model_cuda_conv_graph *)calloc(1, sizeof *g);
    if (!g) return ih_fail(IH_E_SYS, "model cuda: out of host memory");
    g->h = h;
    g->d = *d;
    snprintf(g->label, sizeof g->label, "%s", label);
    g->d.label = g->label;
    const void *ops[NDIR][NOPND] = {{d->xp, d->wp, d->yp},
                                    {d->dxp, d->wp, d->dyp},
                                    {d->xp, d->dwp, d->dyp},
                                    {d->xp, d->wp, d->yp, d->shiftp, d->sump, d->sqsump}};
    for (int dir = 0; dir < NDIR; dir++)
        for (int i = 0; i < NOPND; i++) g->align[dir][i] = ops[dir][i] ? align_of(ops[dir][i]) : 1;
    g->d.xp = g->d.wp = g->d.yp = g->d.dxp = g->d.dyp = g->d.dwp = NULL;
    g->d.shiftp = g->d.sump = g->d.sqsump = NULL;
    ih_err err = model_cuda_conv_graph_set_batch(g, d->n, ws_cap);
    if (err == IH_OK) err = model_cuda_conv_graph_plan_stats(g, ws_cap);
    if (err != IH_OK) {
        model_cuda_conv_graph_destroy(g);
        return err;
    }
    *out = g;
    return IH_OK;
}

ih_err model_cuda_conv_graph_set_batch(model_cuda_conv_graph *g, int n, size_t ws_cap)
{
    for (int i = 0; i < g->nbp; i++)
        if (g->bp[i].n == n) {
            g->cur = i;
            return IH_OK;
        }
    if (n < 1) return ih_fail(IH_E_USAGE, "cuDNN graph API: %s: batch %d", g->label, n);
    batch_plans *nb = (batch_plans *)realloc(g->bp, (size_t)(g->nbp + 1) * sizeof *nb);
    if (!nb) return ih_fail(IH_E_SYS, "model cuda: out of host memory");
    g->bp = nb;
    IH_TRY(plan_batch(g, n, ws_cap, &g->bp[g->nbp]));
    g->cur = g->nbp++;
    return IH_OK;
}

ih_err model_cuda_conv_graph_plan_stats(model_cuda_conv_graph *g, size_t ws_cap)
{
    if (g->nbp == 0) return ih_fail(IH_E_INTERNAL, "cuDNN graph API: %s: no batch planned", g->label);
    return plan_stats(g, ws_cap, &g->bp[g->cur]);
}

size_t model_cuda_conv_graph_workspace(const model_cuda_conv_graph *g)
{
    int64_t m = 0;
    if (g->nbp == 0) return 0;
    for (int dir = 0; dir < NDIR; dir++)
        if (g->bp[g->cur].d[dir].ws > m) m = g->bp[g->cur].d[dir].ws;
    return (size_t)m;
}

/* ptr: the operands of dir in uid order (x-, w-, y-shaped, then shift, sum, sqsum), nptr of them */
static ih_err run(model_cuda_conv_graph *g, int dir, const void *const *ptr, int nptr, void *ws)
{
    if (g->nbp == 0 || !g->bp[g->cur].d[dir].plan)
        return ih_fail(IH_E_INTERNAL, "cuDNN graph API: %s: %s was not planned", g->label, DIR_NAME[dir]);
    dir_plan *p = &g->bp[g->cur].d[dir];
    const void *vp[NOPND + 1] = {0};
    for (int i = 0; i < nptr; i++) vp[i] = ptr[i];
    vp[NOPND] = ws;
    if (!p->vpack || memcmp(p->vp, vp, sizeof vp) != 0) {
        for (int i = 0; i < nptr; i++)
            if (align_of(ptr[i]) < g->align[dir][i])
                return ih_fail(IH_E_INTERNAL, "cuDNN graph API: %s, %s: operand %d at %p is less than the "
                               "%lld-byte alignment planned", g->label, DIR_NAME[dir], i, ptr[i],
                               (long long)g->align[dir][i]);
        if (p->vpack) (void)cudnnBackendDestroyDescriptor(p->vpack);
        p->vpack = NULL;
        memset(p->vp, 0, sizeof p->vp);
        static const int64_t uid[NOPND] = {UID_X, UID_W, UID_Y, UID_SHIFT, UID_SUM, UID_SQSUM};
        void *dp[NOPND];
        for (int i = 0; i < nptr; i++) dp[i] = (void *)ptr[i];
        IH_CUDNN(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &p->vpack));
        IH_CUDNN(cudnnBackendSetAttribute(p->vpack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, nptr, uid));
        IH_CUDNN(cudnnBackendSetAttribute(p->vpack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
                                          nptr, dp));
        IH_CUDNN(cudnnBackendSetAttribute(p->vpack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1,
                                          &ws));
        IH_CUDNN(cudnnBackendFinalize(p->vpack));
        memcpy(p->vp, vp, sizeof vp);
    }
    IH_CUDNN(cudnnBackendExecute(g->h, p->plan, p->vpack));
    return IH_OK;
}

ih_err model_cuda_conv_graph_fwd(model_cuda_conv_graph *g, const void *x, const void *w, void *y, void *ws)
{
    const void *p[3] = {x, w, y};
    return run(g, FWD, p, 3, ws);
}

ih_err model_cuda_conv_graph_bwd_data(model_cuda_conv_graph *g, const void *dy, const void *w, void *dx,
                                      void *ws)
{
    const void *p[3] = {dx, w, dy};
    return run(g, BWD_DATA, p, 3, ws);
}

ih_err model_cuda_conv_graph_bwd_filter(model_cuda_conv_graph *g, const void *x, const void *dy, void *dw,
                                        void *ws)
{
    const void *p[3] = {x, dw, dy};
    return run(g, BWD_FILTER, p, 3, ws);
}

int model_cuda_conv_graph_has_stats(const model_cuda_conv_graph *g)
{
    return g && g->nbp > 0 && g->bp[g->cur].d[FWD_STATS].plan != NULL;
}

ih_err model_cuda_conv_graph_fwd_stats(model_cuda_conv_graph *g, const void *x, const void *w, void *y,
                                       const float *shift, float *sum, float *sqsum, void *ws)
{
    const void *p[NOPND] = {x, w, y, shift, sum, sqsum};
    return run(g, FWD_STATS, p, NOPND, ws);
}

void model_cuda_conv_graph_destroy(model_cuda_conv_graph *g)
{
    if (!g) return;
    for (int i = 0; i < g->nbp; i++)
        for (int dir = 0; dir < NDIR; dir++) destroy_dir(&g->bp[i].d[dir]);
    free(g->bp);
    free(g);
}
