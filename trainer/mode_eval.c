/* trainer/mode_eval.c — top-1/top-5 of a checkpoint on a validation LMDB (resize + center crop). */
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "trainer/checkpoint.h"
#include "trainer/modes.h"
#include "trainer/session.h"

ih_err mode_eval(ih_cfg *cfg)
{
    ih_err e = IH_OK;
    pipe_loader *val = NULL;
    model_net *m = NULL;
    ckpt_meta cm;
    IH_TRY(ckpt_read_meta(cfg->checkpoint, &cm));
    if (cm.image_size != cfg->image_size) {
        IH_INFO(IH_LOG_TRAIN, "using the checkpoint's image size %d", cm.image_size);
        cfg->image_size = cm.image_size;
        cfg->resize = (cm.image_size * 256 + 223) / 224;
    }
    pipe_cfg vc;
    pipe_cfg_defaults(&vc);
    vc.lmdb_path = cfg->val_lmdb;
    vc.batch = cfg->batch;
    vc.threads = cfg->threads;
    vc.crop = cfg->image_size;
    vc.resize = cfg->resize;
    vc.train = 0;
    session_slot_memory(&vc, cfg);
    IH_TRY_GOTO(pipe_loader_create(&val, &vc), e, out);
    model_cfg mc = {.arch = cm.arch, .num_classes = cm.num_classes, .image_size = cm.image_size,
                    .max_batch = cfg->batch, .backend = session_backend(cfg), .bn_momentum = 0.1f, .bn_eps = 1e-5f};
    IH_TRY_GOTO(model_net_create_prec(&m, &mc, session_precision(cfg)), e, out);
    if (cm.n_params != model_num_params(m) || cm.n_state != model_num_state(m)) {
        e = ih_fail(IH_E_DATA, "checkpoint %s does not match a %s with %d classes", cfg->checkpoint, cm.arch, cm.num_classes);
        goto out;
    }
    IH_TRY_GOTO(ckpt_load(cfg->checkpoint, &cm, model_params(m), model_state(m), NULL), e, out);
    if (pipe_loader_num_classes(val) > cm.num_classes) {
        e = ih_fail(IH_E_DATA, "%s has labels up to %d but checkpoint %s has %d classes", cfg->val_lmdb,
                    pipe_loader_num_classes(val) - 1, cfg->checkpoint, cm.num_classes);
        goto out;
    }
    double t0 = ih_now_s(), h1, h5;
    int64_t cnt;
    IH_TRY_GOTO(eval_hits(m, val, cm.num_classes, &h1, &h5, &cnt), e, out);
    const double top1 = cnt ? h1 / (double)cnt : 0, top5 = cnt ? h5 / (double)cnt : 0;
    ih_print0("RESULT top1=%.4f top5=%.4f images=%lld seconds=%.1f\n", top1, top5, (long long)cnt, ih_now_s() - t0);
out:
    model_net_destroy(m);
    pipe_loader_destroy(val);
    return e;
}
