/* trainer/dp.c — see dp.h.
 *
 * Hand-over between the training thread and "ih-comm": a fixed array of jobs filled in order
 * by the training thread (grad-ready callback, dp_allreduce, ...) and consumed in the same
 * order by the comm thread, under one mutex with two condition variables. The array is only
 * rewound when it is empty (after a wait for everything), so it never wraps; its capacity is
 * the number of buckets plus a few, fixed at create: nothing is allocated per step.
 * After a failed collective the comm thread keeps consuming jobs without running them (the
 * communicator's error is sticky) so the training thread never waits for a job that will not
 * run; the first error, with its message, is returned by the next wait.
 *
 * The flat gradient buffer is registered with the communicator once at create (buckets are
 * sub-ranges of it), so on the ib fabric buckets move without staging copies; unregistered
 * at destroy, after the comm thread stopped.
 *
 * With dp_opts.intra the buckets are only bookkeeping on the host view: each job reduces the
 * same range of dp_opts.dev_grads, and the comm thread first binds the model's device. With
 * dp_opts.upload (the host path) the comm thread hands each reduced bucket straight back to
 * the model (model_upload_grads: an async copy to the GPU while the next bucket's allreduce
 * runs).
 *
 * Test-only: IH_DEBUG_COMM_DELAY_MS=F sleeps F ms before each bucket's allreduce, a slow
 * fabric that does not use the CPU, to show (and test) overlap with backward.
 */
#define _GNU_SOURCE
#include "dp.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/thread.h"

enum { JOB_ALLREDUCE, JOB_BUCKET, JOB_BROADCAST };

typedef struct {
    int kind;
    void *buf;
    size_t count; /* floats (allreduce) or bytes (broadcast) */
    int root;
    double t0, t1;
} dp_job;

struct dp_ctx {
    comm_ctx *comm;
    model_net *m;
    dp_opts o;
    float *grads;
    int grads_registered; /* comm_ctx_register(grads) succeeded */
    int nb;
    size_t *blo;          /* bucket b = grads[blo[b], blo[b-1]) with blo[-1] = nparams */
    size_t nparams;
    double delay_ms;
    /* per step, training thread only */
    int next_bucket;
    int submit;           /* callbacks queue buckets (not in compute-only steps) */
    double t_first_ready;
    float stat[4];
    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    dp_job *jobs;
    int cap, head, tail;  /* jobs [head, tail) queued; [0, head) done */
    int quit;
    ih_err err;
    char errmsg[1024];
    pthread_t th;
    int th_started;
    /* last step's bucket times (profile) */
    int last_n;
    double *last_t0, *last_t1;
};

static void sleep_ms(double ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)((ms - 1000.0 * (double)(time_t)(ms / 1000)) * 1e6)};
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

static void *comm_main(void *arg)
{
    dp_ctx *d = arg;
    /* The device-side path runs CUDA/NCCL calls on this thread: the model's device first. */
    ih_err be = d->o.intra || d->o.upload ? model_bind_thread(d->m) : IH_OK;
    pthread_mutex_lock(&d->mu);
    if (be != IH_OK) {
        d->err = be;
        snprintf(d->errmsg, sizeof d->errmsg, "%s", ih_last_error());
    }
    for (;;) {
        while (d->head == d->tail && !d->quit) pthread_cond_wait(&d->cv_work, &d->mu);
        if (d->head == d->tail) break;
        dp_job *j = &d->jobs[d->head];
        const int failed = d->err != IH_OK;
        pthread_mutex_unlock(&d->mu);
        ih_err e = IH_OK;
        double t0 = ih_now_s();
        if (!failed) {
            if (j->kind == JOB_BUCKET && d->delay_ms > 0) sleep_ms(d->delay_ms);
            if (j->kind == JOB_BROADCAST)
                e = comm_coll_broadcast(d->comm, j->buf, j->count, j->root);
            else if (j->kind == JOB_BUCKET && d->o.intra) /* the same range of the device buffer */
                e = comm_hier_allreduce_with(d->o.hier, d->o.intra, d->o.dev_grads + ((float *)j->buf - d->grads),
                                             j->count, d->o.stream, d->o.algo);
            else if (j->kind == JOB_BUCKET && d->o.hier)
                e = comm_hier_allreduce(d->o.hier, j->buf, j->count, d->o.algo);
            else
                e = comm_coll_allreduce(d->comm, j->buf, j->count, d->o.algo);
            if (e == IH_OK && j->kind == JOB_BUCKET && d->o.upload) {
                const size_t lo = (size_t)((float *)j->buf - d->grads);
                e = model_upload_grads(d->m, lo, lo + j->count);
                if (e) /* the others must not wait for this rank's next collective in vain */
                    e = comm_ctx_abort(d->comm, e, "copying a reduced gradient bucket back to the GPU");
            }
        }
        double t1 = ih_now_s();
        pthread_mutex_lock(&d->mu);
        j->t0 = t0;
        j->t1 = t1;
        if (e != IH_OK && d->err == IH_OK) {
            d->err = e;
            snprintf(d->errmsg, sizeof d->errmsg, "%s", ih_last_error());
        }
        d->head++;
        pthread_cond_broadcast(&d->cv_done);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

/* Queues a job; the caller holds no lock. */
static void submit(dp_ctx *d, int kind, void *buf, size_t count, int root)
{
    pthread_mutex_lock(&d->mu);
    IH_ASSERT(d->tail < d->cap, "dp job queue overflow (%d jobs)", d->cap);
    d->jobs[d->tail++] = (dp_job){.kind = kind, .buf = buf, .count = count, .root = root};
    pthread_cond_signal(&d->cv_work);
    pthread_mutex_unlock(&d->mu);
}

/* Waits until every queued job ran; rewinds the queue. Returns the sticky error. */
static ih_err wait_all(dp_ctx *d, double *busy)
{
    ih_err e = IH_OK;
    pthread_mutex_lock(&d->mu);
    while (d->head != d->tail) {
        struct timespec dl = ih_deadline_ms(d->o.timeout_ms);
        int rc = pthread_cond_timedwait(&d->cv_done, &d->mu, &dl);
        if (rc == ETIMEDOUT && d->head != d->tail) {
            pthread_mutex_unlock(&d->mu);
            return ih_fail(IH_E_TIMEOUT, "rank %d: the communication thread did not finish %d queued "
                           "collectives within %.0f s (a peer is stuck?)", comm_ctx_rank(d->comm),
                           d->tail - d->head, (double)d->o.timeout_ms / 1e3);
        }
    }
    double b = 0;
    int nbk = 0;
    for (int i = 0; i < d->tail; i++) {
        b += d->jobs[i].t1 - d->jobs[i].t0;
        if (d->jobs[i].kind == JOB_BUCKET && nbk < d->nb) {
            d->last_t0[nbk] = d->jobs[i].t0;
            d->last_t1[nbk] = d->jobs[i].t1;
            nbk++;
        }
    }
    d->last_n = nbk;
    if (busy) *busy = b;
    d->head = d->tail = 0;
    if (d->err) e = ih_fail(d->err, "%s", d->errmsg);
    pthread_mutex_unlock(&d->mu);
    return e;
}

/* Bucket plan: walk the segments from the end of the flat buffer, cut when a bucket reaches
 * its size. Boundaries fall on segment starts, which the grad-ready offsets also are. */
static ih_err plan_buckets(dp_ctx *d)
{
    const model_param_seg *segs;
    size_t ns = model_param_segments(d->m, &segs);
    d->blo = calloc(ns + 1, sizeof *d->blo);
    if (!d->blo) return ih_fail(IH_E_SYS, "out of memory (bucket plan)");
    const double first = d->o.first_bucket_mb > 0 ? d->o.first_bucket_mb : 1;
    const double rest = d->o.bucket_mb > 0 ? d->o.bucket_mb : 25;
    size_t hi = d->nparams;
    int nb = 0;
    for (size_t i = ns; i-- > 0;) {
        const double mb = (double)(hi - segs[i].offset) * sizeof(float) / 1e6;
        if (mb >= (nb ? rest : first) || segs[i].offset == 0) {
            d->blo[nb++] = segs[i].offset;
            hi = segs[i].offset;
        }
    }
    if (nb == 0 || d->blo[nb - 1] != 0) d->blo[nb++] = 0; /* defensive: the first segment starts at 0 */
    d->nb = nb;
    return IH_OK;
}

static void on_grad_ready(void *arg, size_t offset)
{
    dp_ctx *d = arg;
    if (d->t_first_ready == 0) d->t_first_ready = ih_now_s();
    if (!d->submit) return;
    while (d->next_bucket < d->nb && d->blo[d->next_bucket] >= offset) {
        const int b = d->next_bucket++;
        const size_t hi = b ? d->blo[b - 1] : d->nparams;
        submit(d, JOB_BUCKET, d->grads + d->blo[b], hi - d->blo[b], 0);
    }
}

ih_err dp_create(dp_ctx **out, comm_ctx *comm, model_net *m, const dp_opts *o)
{
    *out = NULL;
    dp_ctx *d = calloc(1, sizeof *d);
    if (!d) return ih_fail(IH_E_SYS, "out of memory (dp)");
    ih_err e = IH_OK;
    d->comm = comm;
    d->m = m;
    d->o = *o;
    if (d->o.timeout_ms <= 0) d->o.timeout_ms = comm ? comm_ctx_timeout_ms(comm) + 30000 : 300000;
    else if (comm) d->o.timeout_ms += 30000; /* the collectives time out first, with a better message */
    d->grads = model_grads(m);
    d->nparams = model_num_params(m);
    if (o->intra && (!o->hier || !o->dev_grads || o->upload)) {
        free(d);
        return ih_fail(IH_E_USAGE, "dp: an intra-node implementation (%s) needs the two-level allreduce and "
                       "the device gradient buffer, and works there (no uploads)", o->intra->ops->name);
    }
    const char *dl = getenv("IH_DEBUG_COMM_DELAY_MS");
    d->delay_ms = dl ? atof(dl) : 0;
    IH_TRY_GOTO(plan_buckets(d), e, fail);
    d->cap = d->nb + 8;
    d->jobs = calloc((size_t)d->cap, sizeof *d->jobs);
    d->last_t0 = calloc((size_t)d->nb, sizeof(double));
    d->last_t1 = calloc((size_t)d->nb, sizeof(double));
    if (!d->jobs || !d->last_t0 || !d->last_t1) { e = ih_fail(IH_E_SYS, "out of memory (dp jobs)"); goto fail; }
    if (comm && d->nparams && !o->intra) { /* with intra the fabric moves the intra's staging */
        IH_TRY_GOTO(comm_ctx_register(comm, d->grads, d->nparams * sizeof(float)), e, fail);
        d->grads_registered = 1;
    }
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv_work, NULL);
    pthread_cond_init(&d->cv_done, NULL);
    if (comm) {
        IH_TRY_GOTO(ih_thread_start(&d->th, "ih-comm", comm_main, d), e, fail_sync);
        d->th_started = 1;
    }
    IH_INFO(IH_LOG_COMM, "%d gradient buckets over %zu parameters (first %g MB, then %g MB)", d->nb,
            d->nparams, o->first_bucket_mb, o->bucket_mb);
    *out = d;
    return IH_OK;
fail_sync:
    pthread_cond_destroy(&d->cv_done);
    pthread_cond_destroy(&d->cv_work);
    pthread_mutex_destroy(&d->mu);
fail:
    if (d->grads_registered) comm_ctx_unregister(comm, d->grads);
    free(d->last_t0);
    free(d->last_t1);
    free(d->jobs);
    free(d->blo);
    free(d);
    return e;
}

void dp_destroy(dp_ctx *d)
{
    if (!d) return;
    if (d->th_started) {
        pthread_mutex_lock(&d->mu);
        d->quit = 1;
        /* Drop what was not started: after a failure the peers will not match it anyway. */
        pthread_cond_signal(&d->cv_work);
        pthread_mutex_unlock(&d->mu);
        pthread_join(d->th, NULL);
    }
    model_set_grad_ready(d->m, NULL, NULL);
    if (d->grads_registered) comm_ctx_unregister(d->comm, d->grads);
    pthread_cond_destroy(&d->cv_done);
    pthread_cond_destroy(&d->cv_work);
    pthread_mutex_destroy(&d->mu);
    free(d->last_t0);
    free(d->last_t1);
    free(d->jobs);
    free(d->blo);
    free(d);
}

int dp_num_buckets(const dp_ctx *d) { return d->nb; }

void dp_bucket_range(const dp_ctx *d, int b, size_t *lo, size_t *hi)
{
    *lo = d->blo[b];
    *hi = b ? d->blo[b - 1] : d->nparams;
}

int dp_last_bucket_times(const dp_ctx *d, double *start, double *end, int cap)
{
    int n = d->last_n < cap ? d->last_n : cap;
    for (int i = 0; i < n; i++) {
        start[i] = d->last_t0[i];
        end[i] = d->last_t1[i];
    }
    return n;
}

ih_err dp_step(dp_ctx *d, const uint8_t *images, const int32_t *labels, int n, int V, float loss_scale,
               int stop, int local_only, dp_stats *st, dp_times *t)
{
    dp_times tm = {.t_start = ih_now_s()};
    double loss = 0;
    int correct = 0;
    const int comm = d->comm && !local_only;
    model_zero_grads(d->m);
    d->next_bucket = 0;
    d->t_first_ready = 0;
    d->submit = comm;
    for (int v = 0; v < V; v++) {
        double ls = 0;
        int c = 0;
        /* Only the last sub-batch's backward makes gradients final. */
        model_set_grad_ready(d->m, v == V - 1 ? on_grad_ready : NULL, d);
        ih_err e = model_train_step(d->m, images + (size_t)v * (size_t)n * d->o.image_bytes, labels + (size_t)v * n, n,
                                    loss_scale, &ls, &c);
        if (e) {
            model_set_grad_ready(d->m, NULL, NULL);
            return e;
        }
        loss += ls;
        correct += c;
    }
    model_set_grad_ready(d->m, NULL, NULL);
    tm.t_bwd_end = ih_now_s();
    tm.t_fwd_end = d->t_first_ready ? d->t_first_ready : tm.t_bwd_end;
    d->stat[0] = (float)loss;
    d->stat[1] = (float)correct;
    d->stat[2] = (float)(n * V);
    d->stat[3] = stop ? 1.0f : 0.0f;
    if (comm) {
        on_grad_ready(d, 0); /* whatever the model did not report (it always ends at offset 0) */
        submit(d, JOB_ALLREDUCE, d->stat, 4, 0);
        IH_TRY(wait_all(d, &tm.comm_busy));
        if (d->o.upload) IH_TRY(model_grads_uploaded(d->m));
        tm.nbuckets = d->nb;
    }
    tm.t_comm_end = ih_now_s();
    if (st) {
        /* One worker keeps its double loss; across workers the sum went through float. */
        st->loss_sum = comm ? (double)d->stat[0] : loss;
        st->correct = d->stat[1];
        st->images = d->stat[2];
        st->stop = d->stat[3] > 0;
    }
    if (t) *t = tm;
    return IH_OK;
}

ih_err dp_allreduce(dp_ctx *d, float *buf, size_t n)
{
    if (!d->comm || n == 0) return IH_OK;
    submit(d, JOB_ALLREDUCE, buf, n, 0);
    return wait_all(d, NULL);
}

ih_err dp_broadcast(dp_ctx *d, void *buf, size_t bytes, int root)
{
    if (!d->comm || bytes == 0) return IH_OK;
    submit(d, JOB_BROADCAST, buf, bytes, root);
    return wait_all(d, NULL);
}
