/* trainer/session.h — what train and profile mode share: loaders, model, optimizer, schedule,
 * the data-parallel step (dp.h), resume, checkpoints and sharded validation.
 *
 * Sharding (k workers, V virtual workers each, n images per sub-batch): the training loader of
 * rank r is built with batch V*n, so its slice of global batch g is permutation positions
 * [g*k*V*n + r*V*n, +V*n), and sub-batch v of it is exactly what virtual worker r*V+v of a
 * k*V-worker run would get. That is why one worker with --accumulate k sees the same samples,
 * in the same sub-batches, as k workers. The remainder of the permutation (N mod k*V*n) is
 * dropped each epoch (a different part each epoch, since the permutation changes).
 *
 * Initial weights: every rank initialises from the same seed, and rank 0's parameters, BN
 * state, momentum (model_sgd_momentum: the host view of the device's on CUDA) and previous lr
 * are then broadcast, so a run is consistent even if the init
 * or the checkpoint read differed (resume reads the checkpoint on rank 0 only: no shared file
 * system needed).
 *
 * BN running statistics are per worker while training (never synchronised, as in the paper);
 * before validation and before each checkpoint they are averaged over the workers, so the
 * model validated and saved is one model, the same on every rank.
 */
#ifndef TRAINER_SESSION_H
#define TRAINER_SESSION_H

#include <stdio.h>

#include "core/cfg.h"
#include "model/model.h"
#include "optim/schedule.h"
#include "optim/sgd.h"
#include "pipeline/loader.h"
#include "trainer/dp.h"
#include "transport/comm.h"
#include "transport/hier.h"

typedef struct {
    ih_cfg *cfg;
    comm_ctx *comm;     /* NULL with one worker */
    int rank, world, V;
    pipe_loader *train, *val;
    model_net *m;
    optim_sgd *opt;
    optim_seg *osegs;
    dp_ctx *dp;
    comm_hier *hier;    /* two-level allreduce of the buckets (--hier); NULL: flat */
    comm_intra *intra;  /* its intra-node half on the GPUs' gradients (--intra nccl); NULL: on the host */
    optim_sched sched;
    int ncls;
    int64_t ipe;        /* global iterations per epoch */
    float loss_scale;   /* 1 / (k*V*n) */
    int64_t epoch0, batch0, iter0; /* where to start (resume) */
    char ckpt_path[1100];
} session;

ih_err session_open(session *s, ih_cfg *cfg, comm_ctx *comm);
/* Makes pc's batch slots the model's host memory for --backend (model_host_alloc: page-locked
 * on CUDA). */
void session_slot_memory(pipe_cfg *pc, const ih_cfg *cfg);
/* --backend and --precision as the model's create arguments. */
model_backend session_backend(const ih_cfg *cfg);
model_precision session_precision(const ih_cfg *cfg);
void session_close(session *s);

/* The SGD step on the aggregated gradients, where the parameters live (model_sgd_step: on
 * CUDA a fused kernel, no host copy of parameters or gradients with one worker). Queued, not
 * waited for, on CUDA. */
ih_err session_sgd_step(session *s, double lr);

/* Collective: averages the BN running statistics over the workers. */
ih_err session_sync_bn(session *s);
/* Collective: sync BN, then rank 0 writes the checkpoint (+ .safetensors) at the given position. */
ih_err session_checkpoint(session *s, int64_t epoch, int64_t batch_in_epoch, int64_t iter);
/* Collective: top-1/top-5 over the whole validation set (each rank its shard, counts summed). */
ih_err session_validate(session *s, double *top1, double *top5, int64_t *count);

/* Writes the model's weights and BN statistics as PATH (safetensors, PyTorch names and
 * layouts: conv weights OIHW). */
ih_err export_safetensors(model_net *m, const char *path);

#endif
