/* trainer/mode_profile.c — --mode=profile: the real training step, measured.
 *
 * Phases, all in the same invocation and on the same workers:
 *   1. real steps (3 warm-up, then --profile-iters measured): data wait, forward, backward,
 *      allreduce, optimizer, exactly as mode_train runs them;
 *   2. pipeline only: the loader alone for the same number of batches;
 *   3. compute only: the same step on a cached batch without the allreduce (all workers at once);
 *   4. one worker: rank 0 alone runs compute-only steps while the others wait (the baseline of
 *      the scaling efficiency).
 * Definitions (medians over the measured steps of rank 0):
 *   forward      step start -> first gradient ready (so it includes the loss and FC backward;
 *                the model has no separate forward call in training)
 *   backward     first gradient ready -> model_train_step returned
 *   allreduce total    time the comm thread spent in collectives during the step
 *   allreduce exposed  backward end -> every collective of the step done (what the step waits)
 *   overlap efficiency 1 - exposed / total: the share of communication hidden behind backward
 *   exposed_comm_frac  exposed / step
 *   scaling efficiency total img/s / (k * one-worker compute-only img/s)
 * "H2D / input prep" is 0 on the CPU backend: normalisation happens inside forward.
 * CUDA: forward and backward are measured at the host's grad-ready callbacks, which follow the
 * device (model.h), and the optimizer phase waits for the device's SGD kernel.
 * --trace FILE writes rank 0's measured steps as Chrome trace events (chrome://tracing,
 * Perfetto): one track for compute (data, forward, backward, optimizer), one for the comm
 * thread with one slice per bucket (its parameter range in the args).
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "trainer/modes.h"
#include "trainer/session.h"

enum { PH_DATA, PH_FWD, PH_BWD, PH_COMM, PH_EXPOSED, PH_OPT, PH_STEP, PH_N };
static const char *const ph_name[PH_N] = {"data wait", "forward", "backward", "allreduce total",
                                          "allreduce exposed", "optimizer", "step"};

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n, double *scratch)
{
    memcpy(scratch, v, (size_t)n * sizeof *v);
    qsort(scratch, (size_t)n, sizeof *scratch, cmp_dbl);
    return n % 2 ? scratch[n / 2] : 0.5 * (scratch[n / 2 - 1] + scratch[n / 2]);
}

/* Next training batch, starting the next epoch when one ends. */
static ih_err next_batch(session *S, int *epoch, pipe_batch *b)
{
    IH_TRY(pipe_loader_next(S->train, b));
    if (b->n) return IH_OK;
    IH_TRY(pipe_loader_start_epoch(S->train, ++*epoch, 0));
    return pipe_loader_next(S->train, b);
}

static void write_trace(const char *path, const double *ts, int P, int nb, const double *b0, const double *b1,
                        const size_t *blo, const size_t *bhi, double t_origin)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        IH_WARN("cannot write the trace %s", path);
        return;
    }
    fprintf(f, "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n");
    fprintf(f, "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":0,\"args\":{\"name\":\"compute (rank 0)\"}},\n");
    fprintf(f, "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":1,\"args\":{\"name\":\"ih-comm (rank 0)\"}}");
    static const char *const nm[] = {"data", "forward", "backward", "wait allreduce", "optimizer"};
    for (int i = 0; i < P; i++) {
        const double *t = ts + (size_t)i * 6; /* data start, step start, fwd end, bwd end, comm end, opt end */
        for (int p = 0; p < 5; p++)
            fprintf(f, ",\n{\"name\":\"%s\",\"cat\":\"compute\",\"ph\":\"X\",\"pid\":0,\"tid\":0,\"ts\":%.1f,\"dur\":%.1f,"
                       "\"args\":{\"step\":%d}}", nm[p], (t[p] - t_origin) * 1e6, (t[p + 1] - t[p]) * 1e6, i);
        for (int k = 0; k < nb; k++) {
            const double s = b0[(size_t)i * nb + k], e = b1[(size_t)i * nb + k];
            if (s <= 0) continue;
            fprintf(f, ",\n{\"name\":\"bucket %d\",\"cat\":\"comm\",\"ph\":\"X\",\"pid\":0,\"tid\":1,\"ts\":%.1f,\"dur\":%.1f,"
                       "\"args\":{\"step\":%d,\"params\":\"[%zu, %zu)\",\"MB\":%.3f}}", k, (s - t_origin) * 1e6,
                    (e - s) * 1e6, i, blo[k], bhi[k], (double)(bhi[k] - blo[k]) * 4e-6);
        }
    }
    fprintf(f, "\n]}\n");
    fclose(f);
}

ih_err mode_profile(ih_cfg *cfg, comm_ctx *comm)
{
    ih_err e = IH_OK;
    session S;
    const int P = cfg->profile_iters, W = 3;
    double *ph = NULL, *scratch = NULL, *ts = NULL, *b0 = NULL, *b1 = NULL;
    size_t *blo = NULL, *bhi = NULL;
    uint8_t *cache_img = NULL;
    int32_t *cache_lab = NULL;
    float sync = 0; /* a 1-float allreduce lines the workers up between phases */
    cfg->resume[0] = 0;
    IH_TRY_GOTO(session_open(&S, cfg, comm), e, out);
    const int rank0 = S.rank == 0, nb = dp_num_buckets(S.dp);
    const int per_step = cfg->batch * S.V;
    ph = calloc((size_t)PH_N * P, sizeof *ph);
    scratch = calloc((size_t)P, sizeof *scratch);
    ts = calloc((size_t)P * 6, sizeof *ts);
    b0 = calloc((size_t)P * nb, sizeof *b0);
    b1 = calloc((size_t)P * nb, sizeof *b1);
    blo = calloc((size_t)nb, sizeof *blo);
    bhi = calloc((size_t)nb, sizeof *bhi);
    const size_t img_bytes = (size_t)per_step * cfg->image_size * cfg->image_size * 3;
    cache_img = malloc(img_bytes);
    cache_lab = malloc((size_t)per_step * sizeof *cache_lab);
    if (!ph || !scratch || !ts || !b0 || !b1 || !blo || !bhi || !cache_img || !cache_lab) {
        e = ih_fail(IH_E_SYS, "out of memory (profile)");
        goto out;
    }
    for (int k = 0; k < nb; k++) dp_bucket_range(S.dp, k, &blo[k], &bhi[k]);
    if (rank0) ih_cfg_print(cfg, stdout);
    ih_print0("# profile: %s, %zu parameters (%.2f MB of gradients in %d buckets), %d workers x %d virtual x n=%d, "
              "%d measured steps after %d warm-up\n", cfg->arch, model_num_params(S.m),
              (double)model_num_params(S.m) * 4e-6, nb, S.world, S.V, cfg->batch, P, W);

    /* 1. the real step */
    int epoch = 0;
    IH_TRY_GOTO(pipe_loader_start_epoch(S.train, 0, 0), e, out);
    int64_t iter = 0;
    double t_real0 = 0;
    for (int i = -W; i < P; i++) {
        if (i == 0) {
            IH_TRY_GOTO(dp_allreduce(S.dp, &sync, 1), e, out); /* line the workers up */
            t_real0 = ih_now_s();
        }
        const double t0 = ih_now_s();
        pipe_batch b;
        IH_TRY_GOTO(next_batch(&S, &epoch, &b), e, out);
        const double t1 = ih_now_s();
        if (i == P - 1) {
            memcpy(cache_img, b.images, img_bytes);
            memcpy(cache_lab, b.labels, (size_t)per_step * sizeof *cache_lab);
        }
        dp_times tm;
        dp_stats st;
        e = dp_step(S.dp, b.images, b.labels, cfg->batch, S.V, S.loss_scale, 0, 0, &st, &tm);
        pipe_loader_release(S.train, &b);
        if (e) goto out;
        IH_TRY_GOTO(session_sgd_step(&S, optim_sched_lr(&S.sched, iter++)), e, out);
        IH_TRY_GOTO(model_sync(S.m), e, out); /* the device's SGD counts as "optimizer" */
        const double t2 = ih_now_s();
        if (i < 0) continue;
        ph[PH_DATA * P + i] = t1 - t0;
        ph[PH_FWD * P + i] = tm.t_fwd_end - tm.t_start;
        ph[PH_BWD * P + i] = tm.t_bwd_end - tm.t_fwd_end;
        ph[PH_COMM * P + i] = tm.comm_busy;
        ph[PH_EXPOSED * P + i] = tm.t_comm_end - tm.t_bwd_end;
        ph[PH_OPT * P + i] = t2 - tm.t_comm_end;
        ph[PH_STEP * P + i] = t2 - t0;
        double *t = ts + (size_t)i * 6;
        t[0] = t0; t[1] = tm.t_start; t[2] = tm.t_fwd_end; t[3] = tm.t_bwd_end; t[4] = tm.t_comm_end; t[5] = t2;
        if (comm) dp_last_bucket_times(S.dp, b0 + (size_t)i * nb, b1 + (size_t)i * nb, nb);
    }
    const double real_s = ih_now_s() - t_real0;

    /* 2. pipeline only */
    IH_TRY_GOTO(dp_allreduce(S.dp, &sync, 1), e, out);
    double t0 = ih_now_s();
    for (int i = 0; i < P; i++) {
        pipe_batch b;
        IH_TRY_GOTO(next_batch(&S, &epoch, &b), e, out);
        pipe_loader_release(S.train, &b);
    }
    const double pipe_s = ih_now_s() - t0;

    /* 3. compute only, all workers */
    IH_TRY_GOTO(dp_allreduce(S.dp, &sync, 1), e, out);
    t0 = ih_now_s();
    for (int i = 0; i < P; i++)
        IH_TRY_GOTO(dp_step(S.dp, cache_img, cache_lab, cfg->batch, S.V, S.loss_scale, 0, 1, NULL, NULL), e, out);
    const double comp_s = ih_now_s() - t0;

    /* 4. one worker alone */
    IH_TRY_GOTO(dp_allreduce(S.dp, &sync, 1), e, out);
    double solo_s = comp_s;
    const int PS = P > 4 ? P / 2 : P;
    if (S.world > 1) {
        if (rank0) {
            t0 = ih_now_s();
            for (int i = 0; i < PS; i++)
                IH_TRY_GOTO(dp_step(S.dp, cache_img, cache_lab, cfg->batch, S.V, S.loss_scale, 0, 1, NULL, NULL), e, out);
            solo_s = ih_now_s() - t0;
        }
        IH_TRY_GOTO(dp_allreduce(S.dp, &sync, 1), e, out);
    }

    /* Totals over workers: img/s of each phase. */
    float tot[3] = {(float)(per_step * P / real_s), (float)(per_step * P / pipe_s), (float)(per_step * P / comp_s)};
    IH_TRY_GOTO(dp_allreduce(S.dp, tot, 3), e, out);
    const double solo_ips = S.world > 1 ? per_step * PS / solo_s : per_step * P / comp_s;

    if (rank0) {
        double med[PH_N];
        for (int p = 0; p < PH_N; p++) med[p] = median(ph + (size_t)p * P, P, scratch);
        const double step = med[PH_STEP];
        const double overlap = med[PH_COMM] > 0 ? 1 - med[PH_EXPOSED] / med[PH_COMM] : 1;
        const double exposed_frac = step > 0 ? med[PH_EXPOSED] / step : 0;
        const double scaling = solo_ips > 0 ? tot[0] / (S.world * solo_ips) : 0;
        printf("\n# %-26s %10s %8s\n", "phase (rank 0, median)", "ms", "% step");
        printf("  %-26s %10.2f %8.1f\n", "data wait", med[PH_DATA] * 1e3, 100 * med[PH_DATA] / step);
        printf("  %-26s %10.2f %8.1f\n", "H2D / input prep", 0.0, 0.0);
        for (int p = PH_FWD; p <= PH_STEP; p++)
            printf("  %-26s %10.2f %8.1f\n", ph_name[p], med[p] * 1e3, 100 * med[p] / step);
        printf("\n# %-26s %10s\n", "throughput", "value");
        printf("  %-26s %10.1f\n", "img/s per worker", tot[0] / S.world);
        printf("  %-26s %10.1f\n", "img/s total", tot[0]);
        printf("  %-26s %10.1f\n", "pipeline-only img/s", tot[1]);
        printf("  %-26s %10.1f\n", "compute-only img/s", tot[2]);
        printf("  %-26s %10.1f\n", "one-worker img/s", solo_ips);
        printf("  %-26s %10.3f\n", "overlap efficiency", overlap);
        printf("  %-26s %10.3f\n", "exposed comm / step", exposed_frac);
        printf("  %-26s %10.3f\n", "scaling efficiency", scaling);
        if (cfg->trace[0]) {
            write_trace(cfg->trace, ts, P, comm ? nb : 0, b0, b1, blo, bhi, ts[0]);
            printf("# trace: %s (open in https://ui.perfetto.dev or chrome://tracing)\n", cfg->trace);
        }
        printf("RESULT workers=%d img_s=%.1f step_ms=%.2f exposed_comm_frac=%.4f overlap_eff=%.3f "
               "comm_ms=%.2f exposed_ms=%.2f scaling_eff=%.3f\n", S.world, tot[0], step * 1e3, exposed_frac, overlap,
               med[PH_COMM] * 1e3, med[PH_EXPOSED] * 1e3, scaling);
        fflush(stdout);
    }
out:
    free(cache_lab);
    free(cache_img);
    free(bhi);
    free(blo);
    free(b1);
    free(b0);
    free(ts);
    free(scratch);
    free(ph);
    session_close(&S);
    return e;
}
