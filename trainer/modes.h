/* trainer/modes.h — the modes of ./train; main.c parses the config and calls one of them.
 * Each returns IH_OK or an error whose message (ih_last_error) is ready to print. */
#ifndef TRAINER_MODES_H
#define TRAINER_MODES_H

#include "core/cfg.h"
#include "model/model.h"
#include "pipeline/loader.h"

ih_err mode_train(ih_cfg *cfg);
ih_err mode_eval(ih_cfg *cfg);

/* Top-1/top-5 of `m` over the whole of loader `val` (eval mode). Shared by both modes. */
ih_err eval_top1_top5(model_net *m, pipe_loader *val, int num_classes, double *top1, double *top5,
                      int64_t *count);

/* Set by the signal handler; the training loop checkpoints and stops when it is nonzero. */
extern volatile int g_stop_signal;

#endif
