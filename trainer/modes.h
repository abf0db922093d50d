/* trainer/modes.h — the modes of ./train; main.c parses the config, bootstraps the workers
 * and calls one of them. Each returns IH_OK or an error whose message (ih_last_error) is
 * ready to print. `comm` is NULL with one worker. */
#ifndef TRAINER_MODES_H
#define TRAINER_MODES_H

#include "core/cfg.h"
#include "model/model.h"
#include "pipeline/loader.h"
#include "transport/comm.h"

ih_err mode_train(ih_cfg *cfg, comm_ctx *comm);
ih_err mode_eval(ih_cfg *cfg);
ih_err mode_profile(ih_cfg *cfg, comm_ctx *comm);

/* Top-1 and top-5 hits of `m` over the whole of loader `val` (this worker's shard). */
ih_err eval_hits(model_net *m, pipe_loader *val, int num_classes, double *hit1, double *hit5, int64_t *count);

/* Set by the signal handler; the training loop checkpoints and stops when it is nonzero. */
extern volatile int g_stop_signal;

#endif
