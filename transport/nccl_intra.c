/* transport/nccl_intra.c — NCCL inside the node for the two-level allreduce (see
 * nccl_intra.h). Compiled only with IH_WITH_NCCL. Every CUDA and NCCL call is checked through
 * core/cuda_check.h; the first failure is sticky and the communicator is aborted at destroy.
 *
 * The pinned staging is registered with the cross-node sub-communicator (comm_ctx_register), so
 * on the ib fabric the shard's allreduce moves it without copies.
 *
 * The unique id travels over the node's sub-communicator (a broadcast from local rank 0),
 * not through the store: the sub-communicator is already connected, its wait has the job's
 * timeout, and a failure there goes through the job's failure protocol like any other.
 */
#define IH_CUDA_CHECK_RUNTIME_ONLY
#include <nccl.h>

#include "nccl_intra.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/cuda_check.h"
#include "core/log.h"

typedef struct {
    comm_intra base;
    ncclComm_t nc;   /* NULL once aborted */
    int L, l;        /* local size, local rank */
    char node[COMM_NODE_NAME_MAX + 1];
    int64_t timeout_ms;
    float *pinned;   /* cap floats: this rank's part and the tail, on the host */
    size_t cap;
    comm_ctx *inter; /* pinned is registered on it (zero-copy on ib) while non-NULL */
    comm_ctx *ic;    /* the node's communicator: its failure means the peers may be gone */
    ih_err err;      /* sticky first error */
    char errmsg[1024];
} nccl_intra;

static ih_err sticky(nccl_intra *x, ih_err e)
{
    if (!x->err) {
        x->err = e;
        snprintf(x->errmsg, sizeof x->errmsg, "%s", ih_last_error());
    }
    return ih_fail(x->err, "%s", x->errmsg);
}

static void nap(void)
{
    struct timespec ts = {0, 20000}; /* 20 us: far below a collective's time, cheap to poll */
    nanosleep(&ts, NULL);
}

/* A stuck NCCL kernel never returns on its own: abort the communicator, which ends it. */
static ih_err timed_out(nccl_intra *x, const char *what)
{
    ncclCommAbort(x->nc);
    x->nc = NULL;
    return ih_fail(IH_E_TIMEOUT, "NCCL: %s inside node '%s' (local rank %d of %d) did not complete "
                   "within %.1f s: a GPU rank of this node stopped, failed or never joined (see its "
                   "log); communicator aborted", what, x->node, x->l, x->L, (double)x->timeout_ms / 1e3);
}

/* Waits for a non-blocking communicator's pending call (init, group end, finalize). */
static ih_err settle(nccl_intra *x, const char *what)
{
    const uint64_t t0 = ih_now_ns();
    for (;;) {
        ncclResult_t st = ncclInProgress;
        ncclResult_t r = ncclCommGetAsyncError(x->nc, &st);
        if (r != ncclSuccess)
            return ih_fail(IH_E_CUDA, "NCCL: ncclCommGetAsyncError after %s: %s", what, ncclGetErrorString(r));
        if (st == ncclSuccess) return IH_OK;
        if (st != ncclInProgress)
            return ih_fail(IH_E_CUDA, "NCCL: %s inside node '%s' (local rank %d of %d) failed: %s (%s)", what,
                           x->node, x->l, x->L, ncclGetErrorString(st), ncclGetLastError(x->nc));
        if (ih_now_ns() - t0 > (uint64_t)x->timeout_ms * 1000000ull) return timed_out(x, what);
        nap();
    }
}

/* Waits until `s` drained, watching the communicator for asynchronous errors. */
static ih_err stream_done(nccl_intra *x, cudaStream_t s, const char *what)
{
    const uint64_t t0 = ih_now_ns();
    for (;;) {
        cudaError_t ce = cudaStreamQuery(s);
        if (ce == cudaSuccess) return IH_OK;
        if (ce != cudaErrorNotReady)
            return ih_fail(IH_E_CUDA, "CUDA: cudaStreamQuery after %s: %s", what, cudaGetErrorString(ce));
        ncclResult_t st = ncclSuccess;
        if (ncclCommGetAsyncError(x->nc, &st) == ncclSuccess && st != ncclSuccess && st != ncclInProgress)
            return ih_fail(IH_E_CUDA, "NCCL: %s inside node '%s' (local rank %d of %d) failed: %s (%s)", what,
                           x->node, x->l, x->L, ncclGetErrorString(st), ncclGetLastError(x->nc));
        if (ih_now_ns() - t0 > (uint64_t)x->timeout_ms * 1000000ull) return timed_out(x, what);
        nap();
    }
}

/* This rank's shard of buf (elements [l*cnt, (l+1)*cnt), then the tail [L*cnt, n) that every
 * rank holds whole) to the pinned staging (to_host) or back, queued on s. */
static ih_err stage(nccl_intra *x, float *buf, size_t n, int to_host, cudaStream_t s)
{
    const size_t L = (size_t)x->L, l = (size_t)x->l, cnt = n / L, tail = n % L;
    const size_t off[2] = {l * cnt, L * cnt}, len[2] = {cnt, tail}, at[2] = {0, cnt};
    for (int i = 0; i < 2; i++) {
        if (!len[i]) continue;
        float *dev = buf + off[i], *host = x->pinned + at[i];
        IH_CUDA(cudaMemcpyAsync(to_host ? (void *)host : (void *)dev, to_host ? (const void *)dev : (const void *)host,
                                len[i] * sizeof(float), to_host ? cudaMemcpyDeviceToHost : cudaMemcpyHostToDevice, s));
    }
    return IH_OK;
}

static ih_err nccl_reduce_scatter(comm_intra *xi, float *buf, size_t n, void *stream, float **shard, size_t *len)
{
    nccl_intra *x = (nccl_intra *)xi;
    cudaStream_t s = (cudaStream_t)stream;
    if (x->err) return ih_fail(x->err, "%s", x->errmsg);
    const size_t L = (size_t)x->L, l = (size_t)x->l, cnt = n / L, tail = n % L;
    if (cnt + tail > x->cap)
        return ih_fail(IH_E_USAGE, "NCCL two-level allreduce of %zu floats: more than the %zu given to "
                       "comm_nccl_intra_create", n, (x->cap - L) * L);
    ih_err e = IH_OK;
    IH_NCCL_GOTO(ncclGroupStart(), x->nc, e, fail);
    if (cnt) /* in place: recvbuff = sendbuff + rank * recvcount */
        IH_NCCL_GOTO(ncclReduceScatter(buf, buf + l * cnt, cnt, ncclFloat, ncclSum, x->nc, s), x->nc, e, fail);
    if (tail)
        IH_NCCL_GOTO(ncclAllReduce(buf + L * cnt, buf + L * cnt, tail, ncclFloat, ncclSum, x->nc, s), x->nc, e, fail);
    IH_NCCL_GOTO(ncclGroupEnd(), x->nc, e, fail);
    IH_TRY_GOTO(settle(x, "ncclReduceScatter (group end)"), e, fail);
    IH_TRY_GOTO(stage(x, buf, n, 1, s), e, fail);
    IH_TRY_GOTO(stream_done(x, s, "ncclReduceScatter"), e, fail);
    *shard = x->pinned;
    *len = cnt + tail;
    return IH_OK;
fail:
    return sticky(x, e);
}

static ih_err nccl_all_gather(comm_intra *xi, float *buf, size_t n, void *stream)
{
    nccl_intra *x = (nccl_intra *)xi;
    cudaStream_t s = (cudaStream_t)stream;
    if (x->err) return ih_fail(x->err, "%s", x->errmsg);
    const size_t L = (size_t)x->L, l = (size_t)x->l, cnt = n / L;
    ih_err e = IH_OK;
    IH_TRY_GOTO(stage(x, buf, n, 0, s), e, fail);
    if (cnt) { /* in place: sendbuff = recvbuff + rank * sendcount */
        IH_NCCL_GOTO(ncclAllGather(buf + l * cnt, buf, cnt, ncclFloat, x->nc, s), x->nc, e, fail);
        IH_TRY_GOTO(settle(x, "ncclAllGather"), e, fail);
    }
    IH_TRY_GOTO(stream_done(x, s, "ncclAllGather"), e, fail);
    return IH_OK;
fail:
    return sticky(x, e);
}

/* One node, no cross-node half: the node's sum in place on the device, no staging. */
static ih_err nccl_allreduce(comm_intra *xi, float *buf, size_t n, void *stream)
{
    nccl_intra *x = (nccl_intra *)xi;
    cudaStream_t s = (cudaStream_t)stream;
    if (x->err) return ih_fail(x->err, "%s", x->errmsg);
    ih_err e = IH_OK;
    IH_NCCL_GOTO(ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, x->nc, s), x->nc, e, fail);
    IH_TRY_GOTO(settle(x, "ncclAllReduce"), e, fail);
    IH_TRY_GOTO(stream_done(x, s, "ncclAllReduce"), e, fail);
    return IH_OK;
fail:
    return sticky(x, e);
}

static void nccl_destroy(comm_intra *xi)
{
    nccl_intra *x = (nccl_intra *)xi;
    if (x->nc) {
        /* Finalize is collective over the node; after a failure (ours, or the job's) the peers
         * may be gone and would never join it: abort. */
        int clean = 0;
        if (!x->err && (!x->ic || comm_ctx_status(x->ic) == IH_OK)) {
            ncclResult_t r = ncclCommFinalize(x->nc);
            clean = (r == ncclSuccess || r == ncclInProgress) && settle(x, "ncclCommFinalize") == IH_OK;
        }
        if (x->nc) {
            if (clean) ncclCommDestroy(x->nc);
            else ncclCommAbort(x->nc);
        }
    }
    if (x->inter) comm_ctx_unregister(x->inter, x->pinned);
    if (x->pinned) cudaFreeHost(x->pinned);
    free(x);
}

static const comm_intra_ops nccl_ops = {
    .name = "nccl",
    .reduce_scatter = nccl_reduce_scatter,
    .all_gather = nccl_all_gather,
    .allreduce = nccl_allreduce,
    .destroy = nccl_destroy,
};

/* What local rank 0 broadcasts: the id, or that it could not make one. */
typedef struct {
    int32_t ok;
    ncclUniqueId id;
} id_msg;

ih_err comm_nccl_intra_create(comm_intra **out, comm_hier *h, size_t max_elems)
{
    *out = NULL;
    const comm_topo *t = comm_hier_topo(h);
    comm_ctx *ic = comm_hier_intra_comm(h);
    nccl_intra *x = calloc(1, sizeof *x);
    if (!x) return ih_fail(IH_E_SYS, "out of memory (nccl intra)");
    ih_err e = IH_OK;
    x->base.ops = &nccl_ops;
    x->L = t->local_size;
    x->l = t->local_rank;
    snprintf(x->node, sizeof x->node, "%s", t->node_name);
    x->timeout_ms = comm_ctx_timeout_ms(ic);
    x->ic = ic;
    x->cap = max_elems / (size_t)x->L + (size_t)x->L;
    IH_CUDA_GOTO(cudaMallocHost((void **)&x->pinned, x->cap * sizeof(float)), e, fail);
    /* The cross-node allreduce runs on the staging: registered once here, so on the ib fabric
     * peers write it directly (no staging copy inside the fabric either). */
    IH_TRY_GOTO(comm_ctx_register(comm_hier_inter_comm(h), x->pinned, x->cap * sizeof(float)), e, fail);
    x->inter = comm_hier_inter_comm(h);

    id_msg m;
    memset(&m, 0, sizeof m);
    if (x->l == 0) {
        ncclResult_t r = ncclGetUniqueId(&m.id);
        m.ok = r == ncclSuccess;
        if (!m.ok) IH_WARN("ncclGetUniqueId on node '%s': %s (%s)", x->node, ncclGetErrorString(r), ncclGetLastError(NULL));
    }
    IH_TRY_GOTO(comm_coll_broadcast(ic, &m, sizeof m, 0), e, fail);
    if (!m.ok) {
        e = ih_fail(IH_E_CUDA, "NCCL: local rank 0 of node '%s' could not make the unique id (ncclGetUniqueId; "
                    "see its log)", x->node);
        goto fail;
    }
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0; /* every wait below has a timeout */
    IH_NCCL_GOTO(ncclCommInitRankConfig(&x->nc, x->L, m.id, x->l, &cfg), x->nc, e, fail);
    IH_TRY_GOTO(settle(x, "ncclCommInitRankConfig"), e, fail);
    IH_INFO(IH_LOG_COMM, "nccl: node '%s' communicator up, local rank %d of %d", x->node, x->l, x->L);
    *out = &x->base;
    return IH_OK;
fail:
    sticky(x, e); /* makes destroy abort instead of finalizing with peers that may be gone */
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", x->errmsg);
    nccl_destroy(&x->base);
    return ih_fail(e, "%s", msg);
}
