/* trainer/session.c — see session.h. */
#define _GNU_SOURCE
#include "trainer/session.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "model/graph.h"
#include "trainer/checkpoint.h"
#include "trainer/modes.h"
#include "ih_config.h"
#if IH_WITH_NCCL
#include "transport/nccl_intra.h"
#endif

static ih_err mkdir_p(const char *path)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) && errno != EEXIST)
            return ih_fail(IH_E_USAGE, "cannot create directory %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) && errno != EEXIST)
        return ih_fail(IH_E_USAGE, "cannot create output directory %s: %s", buf, strerror(errno));
    return IH_OK;
}

/* What rank 0 found when it looked for a checkpoint; broadcast so every rank agrees. */
typedef struct {
    int32_t status;  /* 0 ok, 1 rank 0 failed (its message says why) */
    int32_t resumed;
    ckpt_meta meta;
} resume_info;

static ih_err resume_rank0(session *s, resume_info *ri)
{
    ih_cfg *cfg = s->cfg;
    const char *rp = strcmp(cfg->resume, "auto") ? cfg->resume : s->ckpt_path;
    if (!strcmp(cfg->resume, "auto") && access(rp, F_OK)) {
        ih_print0("no checkpoint at %s: starting from scratch\n", rp);
        return IH_OK;
    }
    ckpt_meta cm;
    IH_TRY(ckpt_read_meta(rp, &cm));
    if (strcmp(cm.arch, cfg->arch) || cm.num_classes != s->ncls || cm.image_size != cfg->image_size)
        return ih_fail(IH_E_USAGE, "checkpoint %s is for %s, %d classes, %dpx; this run is %s, %d classes, %dpx",
                       rp, cm.arch, cm.num_classes, cm.image_size, cfg->arch, s->ncls, cfg->image_size);
    if (cm.seed != cfg->seed)
        IH_WARN("checkpoint %s was trained with --seed %llu, resuming with --seed %llu: the data order changes",
                rp, (unsigned long long)cm.seed, (unsigned long long)cfg->seed);
    if (cm.world && (cm.world * cm.accumulate * cm.batch != s->world * s->V * cfg->batch))
        IH_WARN("checkpoint %s was written by a run with global batch %d (k=%d x V=%d x n=%d); this run's is %d: "
                "its position in the epoch is kept as a batch index, so the data order changes",
                rp, cm.world * cm.accumulate * cm.batch, cm.world, cm.accumulate, cm.batch, s->world * s->V * cfg->batch);
    if (cm.n_momentum != model_num_params(s->m))
        return ih_fail(IH_E_DATA, "checkpoint %s has no optimizer state; it cannot be resumed", rp);
    IH_TRY(ckpt_load(rp, &cm, model_params(s->m), model_state(s->m), model_sgd_momentum(s->m, s->opt)));
    ri->resumed = 1;
    ri->meta = cm;
    ih_print0("resumed from %s: epoch %lld, batch %lld, iteration %lld\n", rp, (long long)cm.epoch,
              (long long)cm.batch_in_epoch, (long long)cm.iter);
    return IH_OK;
}

model_backend session_backend(const ih_cfg *cfg)
{
    return strcmp(cfg->backend, "cuda") ? MODEL_BACKEND_CPU : MODEL_BACKEND_CUDA;
}

model_precision session_precision(const ih_cfg *cfg)
{
    return !strcmp(cfg->precision, "fp32")   ? MODEL_PREC_FP32
           : !strcmp(cfg->precision, "bf16") ? MODEL_PREC_BF16
           : !strcmp(cfg->precision, "fp16") ? MODEL_PREC_FP16
                                             : MODEL_PREC_DEFAULT;
}

/* IH_DEBUG_INTRA_VIEW (test-only): the CPU intra-node half behind a stand-in "device" buffer
 * of its own, so that the CPU tests see what NCCL would on a GPU. dp.c must hand it ranges of
 * that buffer (anything else is an error here) at the bucket's offset: each phase copies the
 * bucket in from the model's gradients at the offset it was given and back after the
 * all-gather, so a wrong offset reduces the wrong range and changes the training. */
typedef struct {
    comm_intra base;
    comm_intra *cpu;
    float *host, *dev; /* model_grads, and the stand-in (n floats) */
    size_t n;
} view_intra;

static ih_err view_range(view_intra *v, const float *buf, size_t n)
{
    if (buf < v->dev || buf > v->dev + v->n || n > (size_t)(v->dev + v->n - buf))
        return ih_fail(IH_E_INTERNAL, "IH_DEBUG_INTRA_VIEW: a bucket of %zu floats at %p is not inside the "
                       "device-side buffer [%p, +%zu): dp passed another buffer", n, (const void *)buf,
                       (void *)v->dev, v->n);
    return IH_OK;
}

static ih_err view_reduce_scatter(comm_intra *x, float *buf, size_t n, void *stream, float **shard, size_t *len)
{
    view_intra *v = (view_intra *)x;
    IH_TRY(view_range(v, buf, n));
    memcpy(buf, v->host + (buf - v->dev), n * sizeof(float));
    return v->cpu->ops->reduce_scatter(v->cpu, buf, n, stream, shard, len);
}

static ih_err view_all_gather(comm_intra *x, float *buf, size_t n, void *stream)
{
    view_intra *v = (view_intra *)x;
    IH_TRY(view_range(v, buf, n));
    IH_TRY(v->cpu->ops->all_gather(v->cpu, buf, n, stream));
    memcpy(v->host + (buf - v->dev), buf, n * sizeof(float));
    return IH_OK;
}

static void view_destroy(comm_intra *x)
{
    view_intra *v = (view_intra *)x;
    free(v->dev);
    free(v);
}

static const comm_intra_ops view_ops = {
    .name = "cpu (IH_DEBUG_INTRA_VIEW)",
    .reduce_scatter = view_reduce_scatter,
    .all_gather = view_all_gather,
    .destroy = view_destroy,
};

#if IH_WITH_NCCL
/* Whether this rank can join NCCL inside its node: *why empty if so. Collective over comm
 * (one allreduce of every rank's node and GPU UUID, so ranks that share a GPU are found
 * whatever each one's CUDA_VISIBLE_DEVICES is); every rank calls it, whatever its own state. */
static ih_err nccl_verdict(session *s, comm_ctx *comm, const comm_topo *t, int forced, model_dev_grads *dg,
                           char *why, size_t cap)
{
    const int k = s->world, me = s->rank, W = 17;
    float *tab = calloc((size_t)k * W, sizeof(float));
    if (!tab) return ih_fail(IH_E_SYS, "out of memory (GPU table)");
    if (model_device_grads(s->m, dg) != IH_OK) {
        snprintf(why, cap, "%s", ih_last_error());
        tab[(size_t)me * W] = -1;
    } else {
        tab[(size_t)me * W] = (float)(t->node + 1);
        for (int i = 0; i < 16; i++) tab[(size_t)me * W + 1 + i] = (float)dg->uuid[i];
    }
    ih_err e = comm_coll_allreduce(comm, tab, (size_t)k * W, COMM_ALGO_AUTO);
    if (e) {
        free(tab);
        return e;
    }
    if (!why[0] && t->local_size < 2 && !forced) /* forced: single-rank communicators, e.g. on one GPU */
        snprintf(why, cap, "one rank per node");
    else if (!why[0] && !t->uniform)
        snprintf(why, cap, "the nodes have different numbers of ranks (%s)", t->layout);
    for (int j = 0; j < k && !why[0]; j++)
        if (j != me && tab[(size_t)j * W] == tab[(size_t)me * W] &&
            !memcmp(&tab[(size_t)j * W + 1], &tab[(size_t)me * W + 1], 16 * sizeof(float)))
            snprintf(why, cap, "ranks %d and %d of node '%s' use the same GPU (NCCL needs one GPU per rank: "
                     "as many GPUs as ranks per node)", me < j ? me : j, me < j ? j : me, t->node_name);
    free(tab);
    return IH_OK;
}
#endif

/* --hier and --intra: the flat allreduce, the two-level one with the intra-node half on the
 * host, or with NCCL on the GPUs' gradients; fills o's hier/intra/dev_grads/stream. Collective
 * over comm when one is given, and every rank takes the same branch: the config is the same
 * everywhere, and whether NCCL can be used is agreed by an allreduce of each rank's verdict. */
static ih_err open_allreduce(session *s, comm_ctx *comm, comm_hier_mode hm, dp_opts *o)
{
    const ih_cfg *cfg = s->cfg;
    const int cuda = model_net_backend(s->m) == MODEL_BACKEND_CUDA;
    const int forced = !strcmp(cfg->intra, "nccl");
    if (forced && (!cuda || hm == COMM_HIER_OFF))
        return ih_fail(IH_E_USAGE, "--intra nccl reduces the gradients on the GPUs: it needs --backend cuda and "
                       "--hier auto or on (this run: --backend %s, --hier %s)", cfg->backend, cfg->hier);
    if (!comm) return IH_OK;
    const char *dbg = getenv("IH_DEBUG_INTRA_VIEW");
    if (dbg && !strcmp(dbg, "1") && !cuda) {
        IH_TRY(comm_hier_open(&s->hier, comm, hm, NULL));
        if (!s->hier) return IH_OK;
        view_intra *v = calloc(1, sizeof *v);
        float *dev = calloc(model_num_params(s->m), sizeof(float));
        if (!v || !dev) {
            free(v);
            free(dev);
            return ih_fail(IH_E_SYS, "out of memory (IH_DEBUG_INTRA_VIEW)");
        }
        *v = (view_intra){.base.ops = &view_ops, .cpu = comm_hier_cpu_intra(s->hier), .host = model_grads(s->m),
                          .dev = dev, .n = model_num_params(s->m)};
        s->intra = &v->base;
        o->dev_grads = dev;
        ih_print0("allreduce buckets: intra-node half through the device-side path (IH_DEBUG_INTRA_VIEW)\n");
        return IH_OK;
    }
    if (!cuda || hm == COMM_HIER_OFF || !strcmp(cfg->intra, "cpu")) return comm_hier_open(&s->hier, comm, hm, NULL);

    comm_topo t;
    IH_TRY(comm_topo_discover(comm, NULL, &t));
    char why[700] = "";
#if IH_WITH_NCCL
    model_dev_grads dg;
    IH_TRY(nccl_verdict(s, comm, &t, forced, &dg, why, sizeof why));
#else
    snprintf(why, sizeof why, "this build has no NCCL (configure where NCCL is installed: IH_WITH_NCCL)");
#endif
    float ok = why[0] ? 0.0f : 1.0f;
    IH_TRY(comm_coll_allreduce(comm, &ok, 1, COMM_ALGO_AUTO));
    if (ok < (float)s->world) {
        if (!why[0]) snprintf(why, sizeof why, "another rank cannot (its log says why)");
        if (forced) return ih_fail(IH_E_USAGE, "rank %d: --intra nccl: %s", s->rank, why);
        ih_print0("allreduce inside a node: through host memory (--intra auto: not NCCL, %s)\n", why);
        return comm_hier_open(&s->hier, comm, hm, NULL);
    }
#if IH_WITH_NCCL
    IH_TRY(comm_hier_create(&s->hier, comm, &t));
    IH_TRY(comm_nccl_intra_create(&s->intra, s->hier, model_num_params(s->m)));
    o->dev_grads = dg.grads;
    o->stream = dg.stream;
    ih_print0("allreduce: two-level with NCCL inside each node (--intra %s: %s), %s across nodes\n", cfg->intra,
              t.layout, cfg->algo);
#endif
    return IH_OK;
}

/* The loaders' batch slots come from the model's host allocator: page-locked on CUDA, so a
 * batch goes to the GPU with one asynchronous copy and no staging memcpy on the stepping
 * thread (model_host_alloc). ctx points at the backend. */
static const model_backend k_backends[2] = {MODEL_BACKEND_CPU, MODEL_BACKEND_CUDA};
static void *slot_alloc_cb(void *ctx, size_t n) { return model_host_alloc(*(const model_backend *)ctx, n); }
static void slot_free_cb(void *ctx, void *p) { model_host_free(*(const model_backend *)ctx, p); }

void session_slot_memory(pipe_cfg *pc, const ih_cfg *cfg)
{
    pc->slot_alloc = slot_alloc_cb;
    pc->slot_free = slot_free_cb;
    pc->slot_ctx = (void *)&k_backends[session_backend(cfg) == MODEL_BACKEND_CUDA];
}

ih_err session_open(session *s, ih_cfg *cfg, comm_ctx *comm)
{
    ih_err e = IH_OK;
    memset(s, 0, sizeof *s);
    s->cfg = cfg;
    s->comm = comm;
    s->rank = cfg->rank;
    s->world = cfg->world;
    s->V = cfg->accumulate;
    if (s->rank == 0) IH_TRY(mkdir_p(cfg->out_dir));

    pipe_cfg pc;
    pipe_cfg_defaults(&pc);
    pc.lmdb_path = cfg->train_lmdb;
    pc.batch = cfg->batch * s->V;
    pc.threads = cfg->threads;
    pc.crop = cfg->image_size;
    pc.resize = cfg->resize;
    pc.train = 1;
    pc.min_scale = cfg->min_scale;
    pc.max_scale = cfg->max_scale;
    pc.seed = cfg->seed;
    pc.rank = s->rank;
    pc.world = s->world;
    session_slot_memory(&pc, cfg);
    IH_TRY(pipe_loader_create(&s->train, &pc));
    if (pipe_loader_batches_per_epoch(s->train) < 1)
        return ih_fail(IH_E_USAGE, "%s has %lld records, fewer than one global batch of %d (k=%d x V=%d x n=%d); "
                       "lower --batch-size", cfg->train_lmdb, (long long)pipe_loader_num_records(s->train),
                       cfg->batch * s->world * s->V, s->world, s->V, cfg->batch);
    if (cfg->val_lmdb[0]) {
        pipe_cfg vc = pc;
        vc.lmdb_path = cfg->val_lmdb;
        vc.batch = cfg->batch;
        vc.train = 0;
        IH_TRY(pipe_loader_create(&s->val, &vc));
    }
    int ncls = cfg->num_classes;
    const int ntr = pipe_loader_num_classes(s->train), nva = s->val ? pipe_loader_num_classes(s->val) : 0;
    if (!ncls) {
        ncls = ntr > nva ? ntr : nva;
    } else if (ntr > ncls || nva > ncls) {
        return ih_fail(IH_E_USAGE, "--num-classes %d, but the data has labels up to %d", ncls, (ntr > nva ? ntr : nva) - 1);
    }
    s->ncls = ncls;

    model_cfg mc = {.arch = cfg->arch, .num_classes = ncls, .image_size = cfg->image_size,
                    .max_batch = cfg->batch, .backend = session_backend(cfg), .bn_momentum = 0.1f, .bn_eps = 1e-5f};
    IH_TRY(model_net_create_prec(&s->m, &mc, session_precision(cfg)));
    model_init_params(s->m, cfg->seed);

    const model_param_seg *segs;
    size_t nseg = model_param_segments(s->m, &segs);
    s->osegs = calloc(nseg, sizeof *s->osegs);
    if (!s->osegs) return ih_fail(IH_E_SYS, "out of memory");
    for (size_t i = 0; i < nseg; i++) s->osegs[i] = (optim_seg){segs[i].offset, segs[i].count, segs[i].no_decay};
    optim_sgd_cfg oc = {.momentum = (float)cfg->momentum, .weight_decay = (float)cfg->weight_decay,
                        .nesterov = cfg->nesterov, .momentum_correction = cfg->momentum_correction};
    IH_TRY(optim_sgd_create(&s->opt, model_num_params(s->m), s->osegs, nseg, &oc));

    comm_algo algo = COMM_ALGO_AUTO;
    IH_TRY(comm_algo_parse(cfg->algo, &algo));
    comm_hier_mode hm = COMM_HIER_AUTO;
    IH_TRY(comm_hier_mode_parse(cfg->hier, &hm));
    dp_opts dopt = {.image_bytes = (size_t)cfg->image_size * (size_t)cfg->image_size * 3,
                    .first_bucket_mb = cfg->first_bucket_mb, .bucket_mb = cfg->bucket_mb, .algo = algo,
                    .record_trace = cfg->mode == IH_MODE_PROFILE};
    IH_TRY(open_allreduce(s, comm, hm, &dopt));
    dopt.hier = s->hier;
    dopt.intra = s->intra;
    dopt.upload = !s->intra;
    IH_TRY(dp_create(&s->dp, comm, s->m, &dopt));
    /* With k > 1 and the allreduce on host memory, the CUDA backend copies each layer's
     * gradients to the host as backward completes them (model_set_grad_host); with one worker,
     * or NCCL on the device gradients, they stay on the device, where session_sgd_step uses
     * them. */
    model_set_grad_host(s->m, s->world > 1 && !s->intra);

    s->ipe = pipe_loader_batches_per_epoch(s->train);
    s->loss_scale = 1.0f / (float)((int64_t)cfg->batch * s->world * s->V);
    s->sched = (optim_sched){.base_lr = cfg->base_lr, .global_batch = (int64_t)cfg->batch * s->world * s->V,
                             .iters_per_epoch = s->ipe, .warmup_epochs = cfg->warmup_epochs, .epochs = cfg->epochs,
                             .kind = strcmp(cfg->schedule, "cosine") ? OPTIM_SCHED_STEP : OPTIM_SCHED_COSINE,
                             .decay_factor = 0.1};
    memcpy(s->sched.decay_epochs, cfg->decay_epochs, sizeof s->sched.decay_epochs);
    snprintf(s->ckpt_path, sizeof s->ckpt_path, "%s/checkpoint.bin", cfg->out_dir);

    /* Resume on rank 0, then make every rank start from rank 0's state. */
    resume_info ri;
    memset(&ri, 0, sizeof ri);
    ih_err re = IH_OK;
    if (cfg->resume[0] && s->rank == 0 && cfg->mode == IH_MODE_TRAIN) {
        re = resume_rank0(s, &ri);
        if (re) ri.status = 1;
    }
    if (s->world > 1) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", ih_last_error());
        IH_TRY(dp_broadcast(s->dp, &ri, sizeof ri, 0));
        if (re) return ih_fail(re, "%s", msg);
        if (ri.status) return ih_fail(IH_E_REMOTE, "rank 0 could not resume from a checkpoint (its message says why)");
        double prev = optim_sgd_prev_lr(s->opt);
        if (ri.resumed) prev = ri.meta.prev_lr;
        IH_TRY(dp_broadcast(s->dp, model_params(s->m), model_num_params(s->m) * sizeof(float), 0));
        IH_TRY(dp_broadcast(s->dp, model_state(s->m), model_num_state(s->m) * sizeof(float), 0));
        IH_TRY(dp_broadcast(s->dp, model_sgd_momentum(s->m, s->opt), model_num_params(s->m) * sizeof(float), 0));
        IH_TRY(dp_broadcast(s->dp, &prev, sizeof prev, 0));
        if (ri.resumed) optim_sgd_set_prev_lr(s->opt, prev);
    } else if (re) {
        return re;
    } else if (ri.resumed) {
        optim_sgd_set_prev_lr(s->opt, ri.meta.prev_lr);
    }
    if (ri.resumed) {
        s->epoch0 = ri.meta.epoch;
        s->batch0 = ri.meta.batch_in_epoch;
        s->iter0 = ri.meta.iter;
    }
    return e;
}

void session_close(session *s)
{
    dp_destroy(s->dp);
    comm_intra_destroy(s->intra); /* before the hier whose node communicator it was set up on */
    comm_hier_destroy(s->hier);
    optim_sgd_destroy(s->opt);
    free(s->osegs);
    model_net_destroy(s->m);
    pipe_loader_destroy(s->val);
    pipe_loader_destroy(s->train);
    memset(s, 0, sizeof *s);
}

ih_err session_sgd_step(session *s, double lr)
{
    return model_sgd_step(s->m, s->opt, lr);
}

ih_err session_sync_bn(session *s)
{
    if (s->world == 1) return IH_OK;
    float *st = model_state(s->m);
    const size_t n = model_num_state(s->m);
    IH_TRY(dp_allreduce(s->dp, st, n));
    const float inv = 1.0f / (float)s->world;
    for (size_t i = 0; i < n; i++) st[i] *= inv;
    return IH_OK;
}

ih_err session_checkpoint(session *s, int64_t epoch, int64_t batch_in_epoch, int64_t iter)
{
    IH_TRY(session_sync_bn(s));
    if (s->rank != 0) return IH_OK;
    ckpt_meta cm = {.num_classes = s->ncls, .image_size = s->cfg->image_size, .epoch = epoch,
                    .batch_in_epoch = batch_in_epoch, .iter = iter, .prev_lr = optim_sgd_prev_lr(s->opt),
                    .seed = s->cfg->seed, .n_params = model_num_params(s->m), .n_state = model_num_state(s->m),
                    .n_momentum = model_num_params(s->m), .world = s->world, .accumulate = s->V,
                    .batch = s->cfg->batch};
    snprintf(cm.arch, sizeof cm.arch, "%s", s->cfg->arch);
    IH_TRY(ckpt_save(s->ckpt_path, &cm, model_params(s->m), model_state(s->m), model_sgd_momentum(s->m, s->opt)));
    char st[1100];
    snprintf(st, sizeof st, "%s/model.safetensors", s->cfg->out_dir);
    IH_TRY(export_safetensors(s->m, st));
    IH_INFO(IH_LOG_CKPT, "checkpoint %s: epoch %lld batch %lld", s->ckpt_path, (long long)epoch, (long long)batch_in_epoch);
    return IH_OK;
}

ih_err session_validate(session *s, double *top1, double *top5, int64_t *count)
{
    IH_TRY(session_sync_bn(s));
    double h1, h5;
    int64_t n;
    IH_TRY(eval_hits(s->m, s->val, s->ncls, &h1, &h5, &n));
    /* Counts below 2^24 are exact in float; split larger ones so the sum stays exact. */
    float c[6] = {(float)fmod(h1, 16777216.0), (float)floor(h1 / 16777216.0), (float)fmod(h5, 16777216.0),
                  (float)floor(h5 / 16777216.0), (float)(n % 16777216), (float)(n / 16777216)};
    IH_TRY(dp_allreduce(s->dp, c, 6));
    h1 = (double)c[0] + 16777216.0 * c[1];
    h5 = (double)c[2] + 16777216.0 * c[3];
    const double nn = (double)c[4] + 16777216.0 * c[5];
    *top1 = nn > 0 ? h1 / nn : 0;
    *top5 = nn > 0 ? h5 / nn : 0;
    *count = (int64_t)nn;
    return IH_OK;
}

/* PyTorch names: "conv1.weight", "layer1.0.bn1.weight" (our "gamma"), ".bias" (our "beta"),
 * "fc.weight", "fc.bias"; BN running statistics as ".running_mean"/".running_var". */
ih_err export_safetensors(model_net *m, const char *path)
{
    const model_graph *g = model_net_graph(m);
    const float *p = model_params(m), *st = model_state(m);
    size_t nt = 0, cap = (size_t)g->nsegs + 2 * (size_t)g->nlayers;
    ckpt_tensor *t = calloc(cap, sizeof *t);
    char (*names)[192] = calloc(cap, sizeof *names);
    float *perm = malloc(g->nparams * sizeof(float)); /* conv weights KRSC -> OIHW */
    ih_err e = IH_OK;
    if (!t || !names || !perm) { e = ih_fail(IH_E_SYS, "out of memory (safetensors)"); goto out; }
    for (int li = 0; li < g->nlayers; li++) {
        const model_layer *l = &g->layers[li];
        const model_param_seg *sg = NULL;
        for (int i = 0; i < g->nsegs; i++)
            if (g->segs[i].offset == l->w_off) { sg = &g->segs[i]; break; }
        if (l->op == MODEL_OP_CONV && sg) {
            const int K = l->k, R = l->r, S = l->s, C = (int)(sg->count / ((size_t)K * R * S));
            float *dst = perm + l->w_off;
            const float *src = p + l->w_off;
            for (int k = 0; k < K; k++)
                for (int r = 0; r < R; r++)
                    for (int s2 = 0; s2 < S; s2++)
                        for (int c = 0; c < C; c++)
                            dst[(((size_t)k * C + c) * R + r) * S + s2] = src[(((size_t)k * R + r) * S + s2) * C + c];
            snprintf(names[nt], sizeof names[nt], "%s", sg->name);
            t[nt] = (ckpt_tensor){names[nt], dst, sg->count, {K, C, R, S}};
            nt++;
        } else if (l->op == MODEL_OP_BN && sg) {
            char base[160];
            snprintf(base, sizeof base, "%.*s", (int)(strlen(sg->name) - strlen(".gamma")), sg->name);
            const int C = (int)sg->count;
            snprintf(names[nt], sizeof names[nt], "%s.weight", base);
            t[nt] = (ckpt_tensor){names[nt], p + l->w_off, (size_t)C, {C}};
            nt++;
            snprintf(names[nt], sizeof names[nt], "%s.bias", base);
            t[nt] = (ckpt_tensor){names[nt], p + l->b_off, (size_t)C, {C}};
            nt++;
            snprintf(names[nt], sizeof names[nt], "%s.running_mean", base);
            t[nt] = (ckpt_tensor){names[nt], st + l->state_off, (size_t)C, {C}};
            nt++;
            snprintf(names[nt], sizeof names[nt], "%s.running_var", base);
            t[nt] = (ckpt_tensor){names[nt], st + l->state_off + C, (size_t)C, {C}};
            nt++;
        } else if (l->op == MODEL_OP_FC && sg) {
            const int O = g->num_classes, I = (int)(sg->count / (size_t)O);
            snprintf(names[nt], sizeof names[nt], "%s", sg->name);
            t[nt] = (ckpt_tensor){names[nt], p + l->w_off, sg->count, {O, I}};
            nt++;
            snprintf(names[nt], sizeof names[nt], "%.*s.bias", (int)(strlen(sg->name) - strlen(".weight")), sg->name);
            t[nt] = (ckpt_tensor){names[nt], p + l->b_off, (size_t)O, {O}};
            nt++;
        }
    }
    e = ckpt_save_safetensors(path, t, nt);
out:
    free(perm);
    free(names);
    free(t);
    return e;
}
