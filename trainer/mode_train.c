/* trainer/mode_train.c — the training loop of Goyal et al. 2017 on k workers:
 *
 *   for each iteration: V sub-batches of n (each its own BN statistics), loss = sum / (k*V*n),
 *                       gradients summed over the workers by bucketed allreduce overlapped
 *                       with backward (dp.h); then, on the aggregated gradient, weight decay
 *                       and momentum: SGD step with lr from the schedule of the global batch
 *                       k*V*n (linear scaling + gradual warmup + decay, momentum correction)
 *   every --ckpt-every iterations and after each epoch: atomic checkpoint by rank 0;
 *   after each epoch: top-1/top-5 on the whole validation LMDB (sharded, counts summed).
 *
 * On SIGINT/SIGTERM the loop finishes the current iteration, writes a checkpoint that
 * records the position inside the epoch, and returns; --resume continues bit-exactly
 * because every batch is a pure function of (seed, epoch, batch index). The stop flag travels
 * with each step's statistics, so all workers stop after the same iteration.
 *
 * Test-only: IH_DEBUG_DIE_AT=R:I makes rank R kill itself (SIGKILL) at iteration I, between
 * its data and its step, while the other ranks are already in the step's allreduce.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "optim/schedule.h"
#include "optim/sgd.h"
#include "trainer/modes.h"
#include "trainer/session.h"

ih_err eval_hits(model_net *m, pipe_loader *val, int num_classes, double *top1, double *top5, int64_t *count)
{
    ih_err e = IH_OK;
    float *logits = NULL;
    int64_t n_all = 0, hit1 = 0, hit5 = 0;
    IH_TRY(pipe_loader_start_epoch(val, 0, 0));
    for (;;) {
        pipe_batch b;
        IH_TRY_GOTO(pipe_loader_next(val, &b), e, out);
        if (b.n == 0) break;
        if (!logits) {
            logits = malloc((size_t)b.n * (size_t)num_classes * sizeof *logits);
            if (!logits) { pipe_loader_release(val, &b); e = ih_fail(IH_E_SYS, "out of memory (logits)"); goto out; }
        }
        e = model_eval_logits(m, b.images, b.n, logits);
        if (e == IH_OK) {
            for (int i = 0; i < b.n; i++) {
                const float *z = logits + (size_t)i * (size_t)num_classes;
                const int y = b.labels[i];
                /* Classes not strictly below the true class: ties and NaN count against the
                 * model, so a constant or broken output can never score. */
                int rank = 0;
                for (int c = 0; c < num_classes; c++) rank += c != y && !(z[c] < z[y]);
                hit1 += rank < 1;
                hit5 += rank < 5;
            }
            n_all += b.n;
        }
        pipe_loader_release(val, &b);
        if (e) goto out;
    }
out:
    free(logits);
    if (e == IH_OK) {
        *top1 = (double)hit1;
        *top5 = (double)hit5;
        *count = n_all;
    }
    return e;
}

/* The bar is redrawn in place with \r; anything else printed while it shows clears it first. */
static void clear_bar(int *bar_on)
{
    if (*bar_on) printf("\r%*s\r", 100, "");
    *bar_on = 0;
}

static void progress_bar(int epoch, int64_t b, int64_t nb, double loss, double ips)
{
    char bar[31];
    int fill = nb ? (int)(30 * b / nb) : 0;
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    printf("\r  epoch %d [%s] %lld/%lld loss %.4f %.0f img/s   ", epoch, bar, (long long)b, (long long)nb, loss, ips);
    fflush(stdout);
}

ih_err mode_train(ih_cfg *cfg, comm_ctx *comm)
{
    ih_err e = IH_OK;
    session S;
    FILE *metrics = NULL;
    const double t_start = ih_now_s();
    IH_TRY_GOTO(session_open(&S, cfg, comm), e, fail);
    const int rank0 = S.rank == 0;
    if (rank0) {
        char p[1100];
        snprintf(p, sizeof p, "%s/config.txt", cfg->out_dir);
        FILE *cf = fopen(p, "w");
        if (cf) { ih_cfg_print(cfg, cf); fclose(cf); }
        snprintf(p, sizeof p, "%s/metrics.jsonl", cfg->out_dir);
        metrics = fopen(p, "a");
        if (!metrics) { e = ih_fail(IH_E_USAGE, "cannot write %s: %s", p, strerror(errno)); goto fail; }
        ih_cfg_print(cfg, stdout);
        fflush(stdout);
    }
    ih_print0("# %s: %zu parameters, %d classes; %lld train records, %lld iterations/epoch; %d gradient buckets%s\n",
              cfg->arch, model_num_params(S.m), S.ncls, (long long)pipe_loader_num_records(S.train), (long long)S.ipe,
              dp_num_buckets(S.dp), S.val ? "" : "; no --val: no accuracy");

    int die_rank = -1;
    long long die_iter = -1;
    const char *die = getenv("IH_DEBUG_DIE_AT");
    if (die && sscanf(die, "%d:%lld", &die_rank, &die_iter) != 2) die_rank = -1;

    const int show_bar = rank0 && (cfg->progress < 0 ? isatty(STDOUT_FILENO) : cfg->progress);
    const int64_t ipe = S.ipe;
    int64_t iter = S.iter0;
    double top1 = NAN, top5 = NAN, last_loss = NAN;
    int stopped = 0, bar_on = 0;
    for (int64_t epoch = S.epoch0; epoch < cfg->epochs && !stopped; epoch++) {
        const int64_t first = epoch == S.epoch0 ? S.batch0 : 0;
        IH_TRY_GOTO(pipe_loader_start_epoch(S.train, (int)epoch, first), e, fail);
        double win_loss = 0, ep_loss = 0, win_n = 0, win_hit = 0, ep_n = 0;
        double t_win = ih_now_s(), t_wait = 0, t_exposed = 0;
        int64_t b_idx = first;
        for (;;) {
            double t0 = ih_now_s();
            pipe_batch b;
            IH_TRY_GOTO(pipe_loader_next(S.train, &b), e, fail);
            t_wait += ih_now_s() - t0;
            if (b.n == 0) break;
            if (S.rank == die_rank && iter == die_iter) raise(SIGKILL);
            const double lr = optim_sched_lr(&S.sched, iter);
            const int want_stop = g_stop_signal || (cfg->max_iters && iter + 1 >= cfg->max_iters);
            dp_stats st;
            dp_times tm;
            e = dp_step(S.dp, b.images, b.labels, cfg->batch, S.V, S.loss_scale, want_stop, 0, &st, &tm);
            pipe_loader_release(S.train, &b);
            if (e) goto fail;
            if (!isfinite(st.loss_sum)) {
                e = ih_fail(IH_E_DATA, "loss is %g at epoch %lld iteration %lld (lr %g): training diverged; "
                            "lower --base-lr or lengthen --warmup-epochs", st.loss_sum, (long long)epoch, (long long)iter, lr);
                goto fail;
            }
            IH_TRY_GOTO(session_sgd_step(&S, lr), e, fail);
            t_exposed += tm.t_comm_end - tm.t_bwd_end;
            iter++;
            b_idx++;
            win_loss += st.loss_sum;
            ep_loss += st.loss_sum;
            win_n += st.images;
            ep_n += st.images;
            win_hit += st.correct;
            if (iter % cfg->log_every == 0 || b_idx == ipe) {
                const double dt = ih_now_s() - t_win;
                const double ips = dt > 0 ? win_n / dt : 0;
                last_loss = win_loss / win_n;
                if (rank0) {
                    clear_bar(&bar_on);
                    ih_print0("epoch %lld iter %lld/%lld loss %.4f train_top1 %.3f lr %.5f %.0f img/s data_wait %.0f%% "
                              "exposed_comm %.0f%%\n", (long long)epoch, (long long)b_idx, (long long)ipe, last_loss,
                              win_hit / win_n, lr, ips, dt > 0 ? 100 * t_wait / dt : 0, dt > 0 ? 100 * t_exposed / dt : 0);
                    fprintf(metrics, "{\"epoch\":%lld,\"iter\":%lld,\"loss\":%.17g,\"train_top1\":%.5f,\"lr\":%.17g,\"img_s\":%.1f}\n",
                            (long long)epoch, (long long)iter, last_loss, win_hit / win_n, lr, ips);
                    fflush(metrics);
                }
                win_loss = win_n = win_hit = 0;
                t_wait = t_exposed = 0;
                t_win = ih_now_s();
            } else if (show_bar) {
                const double dt = ih_now_s() - t_win;
                progress_bar((int)epoch, b_idx, ipe, win_loss / win_n, dt > 0 ? win_n / dt : 0);
                bar_on = 1;
            }
            if (st.stop) {
                stopped = 1;
                break;
            }
            if (cfg->ckpt_every && iter % cfg->ckpt_every == 0 && b_idx < ipe)
                IH_TRY_GOTO(session_checkpoint(&S, epoch, b_idx, iter), e, fail);
        }
        clear_bar(&bar_on);
        pipe_epoch_stats es;
        pipe_loader_epoch_stats(S.train, &es);
        if (es.replaced) /* every rank reports its own shard */
            IH_WARN("epoch %lld: %lld of %lld samples came from undecodable records and were replaced "
                    "(%lld distinct bad records so far; see the warnings above)", (long long)epoch,
                    (long long)es.replaced, (long long)es.images, (long long)es.bad_records);
        const int epoch_done = !stopped || b_idx == ipe;
        if (epoch_done && S.val) {
            int64_t cnt;
            IH_TRY_GOTO(session_validate(&S, &top1, &top5, &cnt), e, fail);
            ih_print0("epoch %lld val top1 %.4f top5 %.4f (%lld images) train_loss %.4f elapsed %.1fs\n",
                      (long long)epoch, top1, top5, (long long)cnt, ep_n ? ep_loss / ep_n : NAN,
                      ih_now_s() - t_start);
            if (rank0) {
                fprintf(metrics, "{\"epoch\":%lld,\"iter\":%lld,\"val_top1\":%.5f,\"val_top5\":%.5f,\"val_count\":%lld,"
                        "\"replaced_samples\":%lld,\"data_wait_s\":%.3f}\n",
                        (long long)epoch, (long long)iter, top1, top5, (long long)cnt, (long long)es.replaced, es.wait_s);
                fflush(metrics);
            }
        }
        IH_TRY_GOTO(session_checkpoint(&S, epoch_done ? epoch + 1 : epoch, epoch_done ? 0 : b_idx, iter), e, fail);
        if (stopped && g_stop_signal)
            ih_print0("stopped by signal %d: checkpoint written to %s (resume with --resume auto)\n", g_stop_signal,
                      S.ckpt_path);
    }
    if (pipe_loader_bad_records(S.train))
        IH_WARN("%lld undecodable training records were replaced (see the warnings above)",
                (long long)pipe_loader_bad_records(S.train));
    ih_print0("RESULT top1=%.4f top5=%.4f loss=%.4f seconds=%.1f iters=%lld workers=%d\n", top1, top5, last_loss,
              ih_now_s() - t_start, (long long)iter, S.world);
fail:
    if (metrics) fclose(metrics);
    session_close(&S);
    return e;
}
