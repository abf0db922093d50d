/* trainer/mode_train.c — the training loop of Goyal et al. 2017 on one worker:
 *
 *   for each iteration: zero grads; forward+backward with loss = sum / (k*n);
 *                       lr from the schedule (linear scaling + gradual warmup + decay);
 *                       SGD step (weight decay table, Nesterov, momentum correction)
 *   after each epoch:   top-1/top-5 on the validation LMDB; atomic checkpoint; JSON metrics.
 *
 * On SIGINT/SIGTERM the loop finishes the current iteration, writes a checkpoint that
 * records the position inside the epoch, and returns; --resume continues bit-exactly
 * because every batch is a pure function of (seed, epoch, batch index).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "optim/schedule.h"
#include "optim/sgd.h"
#include "trainer/checkpoint.h"
#include "trainer/modes.h"

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

ih_err eval_top1_top5(model_net *m, pipe_loader *val, int num_classes, double *top1, double *top5,
                      int64_t *count)
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
        *top1 = n_all ? (double)hit1 / (double)n_all : 0;
        *top5 = n_all ? (double)hit5 / (double)n_all : 0;
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

ih_err mode_train(ih_cfg *cfg)
{
    ih_err e = IH_OK;
    pipe_loader *train = NULL, *val = NULL;
    model_net *m = NULL;
    optim_sgd *opt = NULL;
    optim_seg *osegs = NULL;
    FILE *metrics = NULL;
    const double t_start = ih_now_s();

    IH_TRY(mkdir_p(cfg->out_dir));

    pipe_cfg pc;
    pipe_cfg_defaults(&pc);
    pc.lmdb_path = cfg->train_lmdb;
    pc.batch = cfg->batch;
    pc.threads = cfg->threads;
    pc.crop = cfg->image_size;
    pc.resize = cfg->resize;
    pc.train = 1;
    pc.min_scale = cfg->min_scale;
    pc.max_scale = cfg->max_scale;
    pc.seed = cfg->seed;
    pc.rank = 0;
    pc.world = cfg->world;
    IH_TRY_GOTO(pipe_loader_create(&train, &pc), e, fail);
    if (pipe_loader_batches_per_epoch(train) < 1) {
        e = ih_fail(IH_E_USAGE, "%s has %lld records, fewer than one global batch of %d; lower --batch-size",
                    cfg->train_lmdb, (long long)pipe_loader_num_records(train), cfg->batch * cfg->world);
        goto fail;
    }
    if (cfg->val_lmdb[0]) {
        pipe_cfg vc = pc;
        vc.lmdb_path = cfg->val_lmdb;
        vc.train = 0;
        IH_TRY_GOTO(pipe_loader_create(&val, &vc), e, fail);
    }
    int ncls = cfg->num_classes;
    if (!ncls) {
        ncls = pipe_loader_num_classes(train);
        if (val && pipe_loader_num_classes(val) > ncls) ncls = pipe_loader_num_classes(val);
    } else if (pipe_loader_num_classes(train) > ncls || (val && pipe_loader_num_classes(val) > ncls)) {
        e = ih_fail(IH_E_USAGE, "--num-classes %d, but the data has labels up to %d", ncls,
                    (val && pipe_loader_num_classes(val) > pipe_loader_num_classes(train) ? pipe_loader_num_classes(val)
                                                                                        : pipe_loader_num_classes(train)) - 1);
        goto fail;
    }

    model_cfg mc = {.arch = cfg->arch, .num_classes = ncls, .image_size = cfg->image_size,
                    .max_batch = cfg->batch, .backend = strcmp(cfg->backend, "cuda") ? MODEL_BACKEND_CPU : MODEL_BACKEND_CUDA,
                    .bn_momentum = 0.1f, .bn_eps = 1e-5f};
    IH_TRY_GOTO(model_net_create(&m, &mc), e, fail);
    model_init_params(m, cfg->seed);

    const model_param_seg *segs;
    size_t nseg = model_param_segments(m, &segs);
    osegs = calloc(nseg, sizeof *osegs);
    if (!osegs) { e = ih_fail(IH_E_SYS, "out of memory"); goto fail; }
    for (size_t i = 0; i < nseg; i++) osegs[i] = (optim_seg){segs[i].offset, segs[i].count, segs[i].no_decay};
    optim_sgd_cfg oc = {.momentum = (float)cfg->momentum, .weight_decay = (float)cfg->weight_decay,
                        .nesterov = cfg->nesterov, .momentum_correction = cfg->momentum_correction};
    IH_TRY_GOTO(optim_sgd_create(&opt, model_num_params(m), osegs, nseg, &oc), e, fail);

    const int64_t ipe = pipe_loader_batches_per_epoch(train);
    optim_sched sched = {.base_lr = cfg->base_lr, .global_batch = (int64_t)cfg->batch * cfg->world,
                         .iters_per_epoch = ipe, .warmup_epochs = cfg->warmup_epochs, .epochs = cfg->epochs,
                         .kind = strcmp(cfg->schedule, "cosine") ? OPTIM_SCHED_STEP : OPTIM_SCHED_COSINE,
                         .decay_factor = 0.1};
    memcpy(sched.decay_epochs, cfg->decay_epochs, sizeof sched.decay_epochs);

    char ckpt_path[1100];
    snprintf(ckpt_path, sizeof ckpt_path, "%s/checkpoint.bin", cfg->out_dir);
    int64_t epoch0 = 0, batch0 = 0, iter = 0;
    if (cfg->resume[0]) {
        const char *rp = strcmp(cfg->resume, "auto") ? cfg->resume : ckpt_path;
        if (!strcmp(cfg->resume, "auto") && access(rp, F_OK)) {
            ih_print0("no checkpoint at %s: starting from scratch\n", rp);
        } else {
            ckpt_meta cm;
            IH_TRY_GOTO(ckpt_read_meta(rp, &cm), e, fail);
            if (strcmp(cm.arch, cfg->arch) || cm.num_classes != ncls || cm.image_size != cfg->image_size) {
                e = ih_fail(IH_E_USAGE, "checkpoint %s is for %s, %d classes, %dpx; this run is %s, %d classes, %dpx",
                            rp, cm.arch, cm.num_classes, cm.image_size, cfg->arch, ncls, cfg->image_size);
                goto fail;
            }
            if (cm.seed != cfg->seed)
                IH_WARN("checkpoint %s was trained with --seed %llu, resuming with --seed %llu: the data order changes",
                        rp, (unsigned long long)cm.seed, (unsigned long long)cfg->seed);
            if (cm.n_momentum != model_num_params(m)) {
                e = ih_fail(IH_E_DATA, "checkpoint %s has no optimizer state; it cannot be resumed", rp);
                goto fail;
            }
            IH_TRY_GOTO(ckpt_load(rp, &cm, model_params(m), model_state(m), optim_sgd_momentum(opt)), e, fail);
            optim_sgd_set_prev_lr(opt, cm.prev_lr);
            epoch0 = cm.epoch;
            batch0 = cm.batch_in_epoch;
            iter = cm.iter;
            ih_print0("resumed from %s: epoch %lld, batch %lld, iteration %lld\n", rp, (long long)epoch0,
                      (long long)batch0, (long long)iter);
        }
    }

    {
        char p[1100];
        snprintf(p, sizeof p, "%s/config.txt", cfg->out_dir);
        FILE *cf = fopen(p, "w");
        if (cf) { ih_cfg_print(cfg, cf); fclose(cf); }
        snprintf(p, sizeof p, "%s/metrics.jsonl", cfg->out_dir);
        metrics = fopen(p, "a");
        if (!metrics) { e = ih_fail(IH_E_USAGE, "cannot write %s: %s", p, strerror(errno)); goto fail; }
    }
    ih_cfg_print(cfg, stdout);
    ih_print0("# %s: %zu parameters, %d classes; %lld train records, %lld iterations/epoch%s\n", cfg->arch,
              model_num_params(m), ncls, (long long)pipe_loader_num_records(train), (long long)ipe,
              val ? "" : "; no --val: no accuracy");

    const int show_bar = cfg->progress < 0 ? isatty(STDOUT_FILENO) : cfg->progress;
    const float loss_scale = 1.0f / (float)(cfg->batch * cfg->world);
    double top1 = NAN, top5 = NAN, last_loss = NAN;
    int stopped = 0, bar_on = 0;
    for (int64_t epoch = epoch0; epoch < cfg->epochs && !stopped; epoch++) {
        IH_TRY_GOTO(pipe_loader_start_epoch(train, (int)epoch, epoch == epoch0 ? batch0 : 0), e, fail);
        double win_loss = 0, ep_loss = 0;
        int64_t win_n = 0, win_hit = 0, ep_n = 0;
        double t_win = ih_now_s(), t_wait = 0;
        int64_t b_idx = epoch == epoch0 ? batch0 : 0;
        for (;;) {
            double t0 = ih_now_s();
            pipe_batch b;
            IH_TRY_GOTO(pipe_loader_next(train, &b), e, fail);
            t_wait += ih_now_s() - t0;
            if (b.n == 0) break;
            const double lr = optim_sched_lr(&sched, iter);
            double loss_sum = 0;
            int correct = 0;
            model_zero_grads(m);
            e = model_train_step(m, b.images, b.labels, b.n, loss_scale, &loss_sum, &correct);
            pipe_loader_release(train, &b);
            if (e) goto fail;
            if (!isfinite(loss_sum)) {
                e = ih_fail(IH_E_DATA, "loss is %g at epoch %lld iteration %lld (lr %g): training diverged; "
                            "lower --base-lr or lengthen --warmup-epochs", loss_sum, (long long)epoch, (long long)iter, lr);
                goto fail;
            }
            optim_sgd_step(opt, model_params(m), model_grads(m), lr);
            iter++;
            b_idx++;
            win_loss += loss_sum;
            ep_loss += loss_sum;
            win_n += b.n;
            ep_n += b.n;
            win_hit += correct;
            if (iter % cfg->log_every == 0 || b_idx == ipe) {
                const double dt = ih_now_s() - t_win;
                const double ips = dt > 0 ? (double)win_n / dt : 0;
                last_loss = win_loss / (double)win_n;
                clear_bar(&bar_on);
                ih_print0("epoch %lld iter %lld/%lld loss %.4f train_top1 %.3f lr %.5f %.0f img/s data_wait %.0f%%\n",
                          (long long)epoch, (long long)b_idx, (long long)ipe, last_loss,
                          (double)win_hit / (double)win_n, lr, ips, dt > 0 ? 100 * t_wait / dt : 0);
                fprintf(metrics, "{\"epoch\":%lld,\"iter\":%lld,\"loss\":%.6f,\"train_top1\":%.5f,\"lr\":%.6g,\"img_s\":%.1f}\n",
                        (long long)epoch, (long long)iter, last_loss, (double)win_hit / (double)win_n, lr, ips);
                fflush(metrics);
                win_loss = 0;
                win_n = win_hit = 0;
                t_wait = 0;
                t_win = ih_now_s();
            } else if (show_bar) {
                const double dt = ih_now_s() - t_win;
                progress_bar((int)epoch, b_idx, ipe, win_loss / (double)win_n, dt > 0 ? (double)win_n / dt : 0);
                bar_on = 1;
            }
            if (g_stop_signal || (cfg->max_iters && iter >= cfg->max_iters)) {
                stopped = 1;
                break;
            }
        }
        clear_bar(&bar_on);
        const int epoch_done = !stopped || b_idx == ipe;
        ckpt_meta cm = {.num_classes = ncls, .image_size = cfg->image_size,
                        .epoch = epoch_done ? epoch + 1 : epoch, .batch_in_epoch = epoch_done ? 0 : b_idx,
                        .iter = iter, .prev_lr = optim_sgd_prev_lr(opt), .seed = cfg->seed,
                        .n_params = model_num_params(m), .n_state = model_num_state(m),
                        .n_momentum = model_num_params(m)};
        snprintf(cm.arch, sizeof cm.arch, "%s", cfg->arch);
        if (epoch_done && val) {
            int64_t cnt;
            IH_TRY_GOTO(eval_top1_top5(m, val, ncls, &top1, &top5, &cnt), e, fail);
            ih_print0("epoch %lld val top1 %.4f top5 %.4f (%lld images) train_loss %.4f elapsed %.1fs\n",
                      (long long)epoch, top1, top5, (long long)cnt, ep_n ? ep_loss / (double)ep_n : NAN,
                      ih_now_s() - t_start);
            fprintf(metrics, "{\"epoch\":%lld,\"iter\":%lld,\"val_top1\":%.5f,\"val_top5\":%.5f,\"val_count\":%lld}\n",
                    (long long)epoch, (long long)iter, top1, top5, (long long)cnt);
            fflush(metrics);
        }
        IH_TRY_GOTO(ckpt_save(ckpt_path, &cm, model_params(m), model_state(m), optim_sgd_momentum(opt)), e, fail);
        IH_INFO(IH_LOG_CKPT, "checkpoint %s: epoch %lld batch %lld", ckpt_path, (long long)cm.epoch,
                (long long)cm.batch_in_epoch);
        if (stopped && g_stop_signal)
            ih_print0("stopped by signal %d: checkpoint written to %s (resume with --resume auto)\n", g_stop_signal,
                      ckpt_path);
    }
    if (pipe_loader_bad_records(train))
        IH_WARN("%lld undecodable training records were replaced (see the warnings above)",
                (long long)pipe_loader_bad_records(train));
    ih_print0("RESULT top1=%.4f top5=%.4f loss=%.4f seconds=%.1f iters=%lld\n", top1, top5, last_loss,
              ih_now_s() - t_start, (long long)iter);
fail:
    if (metrics) fclose(metrics);
    optim_sgd_destroy(opt);
    free(osegs);
    model_net_destroy(m);
    pipe_loader_destroy(val);
    pipe_loader_destroy(train);
    return e;
}
