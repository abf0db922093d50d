/* trainer/dp.h — one data-parallel training step (Goyal et al. 2017, sec. 2-4) and the
 * communication thread that overlaps the gradient allreduce with backward.
 *
 * A step on worker r of k with V virtual workers: V sub-batches of n images, each a separate
 * model_train_step (so each has its own BN batch statistics) with loss scale 1/(k*V*n),
 * gradients accumulating in the model's flat buffer. During the LAST sub-batch's backward the
 * model reports how far its gradients are final (model_set_grad_ready); the flat buffer is cut
 * into buckets from its end (first about 1 MB, then about 25 MB, at parameter-segment
 * boundaries, a pure function of the layout and the sizes, so every rank has the same plan)
 * and each bucket is queued to the thread "ih-comm" the moment its last gradient is written.
 * That thread runs comm_coll_allreduce (a plain sum; comm_hier_allreduce with dp_opts.hier, or
 * the intra-node implementation dp_opts.intra on the model's device gradients) on it while
 * backward continues. After
 * backward the step waits only for the buckets still in flight, plus one 4-float allreduce of
 * the step's statistics (loss sum, hits, images, stop flag) that keeps every rank's view of
 * the loss and of "stop now" identical.
 *
 * The comm thread owns the communicator while it runs: every collective of the trainer goes
 * through dp_allreduce / dp_broadcast, which queue a job and wait for it.
 * Threads: all functions are called by the one training thread.
 */
#ifndef TRAINER_DP_H
#define TRAINER_DP_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "model/model.h"
#include "transport/comm.h"
#include "transport/hier.h"

typedef struct dp_ctx dp_ctx;

typedef struct {
    size_t image_bytes;  /* bytes of one input image (side*side*3): the sub-batch stride */
    double first_bucket_mb, bucket_mb;
    comm_algo algo;      /* flat allreduce; across nodes with `hier` */
    comm_hier *hier;     /* non-NULL: buckets use comm_hier_allreduce (not owned; built on the
                            same comm, so only the comm thread uses it) */
    comm_intra *intra;   /* non-NULL (needs hier): buckets are reduced where the model keeps them,
                            comm_hier_allreduce_with(hier, intra, dev_grads + offset, ...), e.g.
                            NCCL on the GPU's gradients (model_device_grads); not owned. The model
                            must run with model_set_grad_host off. */
    float *dev_grads;    /* with intra: the gradient buffer intra works on (model_num_params floats) */
    void *stream;        /* with intra: passed through to it (a cudaStream_t for NCCL) */
    int upload;          /* host path (no intra): hand each reduced bucket back to the model
                            (model_upload_grads, from the comm thread) and end the step with
                            model_grads_uploaded, so the device copies overlap the allreduces */
    int64_t timeout_ms;  /* how long the training thread waits for the comm thread */
    int record_trace;    /* keep per-step bucket timings (profile mode) */
} dp_opts;

/* Timings of one step, seconds (CLOCK_MONOTONIC), for logs and the profile. */
typedef struct {
    double t_start;        /* step entered */
    double t_fwd_end;      /* first gradient ready in the last sub-batch: forward (+ loss, FC backward) */
    double t_bwd_end;      /* model_train_step of the last sub-batch returned */
    double t_comm_end;     /* every allreduce of the step finished */
    double comm_busy;      /* sum of the allreduce durations on the comm thread */
    int nbuckets;
} dp_times;

/* Global statistics of a step (summed over all workers). */
typedef struct {
    double loss_sum;   /* sum of per-sample losses */
    double correct;    /* top-1 hits */
    double images;     /* k*V*n */
    int stop;          /* some rank asked to stop after this step */
} dp_stats;

/* comm may be NULL (one worker: no thread, no copies). Does not own comm or m. */
ih_err dp_create(dp_ctx **out, comm_ctx *comm, model_net *m, const dp_opts *o);
void dp_destroy(dp_ctx *d);

int dp_num_buckets(const dp_ctx *d);
/* Bucket b covers grads[lo, hi) (b = 0 is the end of the buffer, allreduced first). */
void dp_bucket_range(const dp_ctx *d, int b, size_t *lo, size_t *hi);

/* One step: zero grads, V sub-batches of n from images/labels (V*n of them), allreduce.
 * With `local_only` the allreduce is skipped (profile: compute-only). */
ih_err dp_step(dp_ctx *d, const uint8_t *images, const int32_t *labels, int n, int V, float loss_scale,
               int stop, int local_only, dp_stats *st, dp_times *t);

/* Blocking collectives through the comm thread (identity with one worker). */
ih_err dp_allreduce(dp_ctx *d, float *buf, size_t n);
ih_err dp_broadcast(dp_ctx *d, void *buf, size_t bytes, int root);

/* Profile mode: the per-bucket [start, end) times of the last step, for the trace. */
int dp_last_bucket_times(const dp_ctx *d, double *start, double *end, int cap);

#endif
