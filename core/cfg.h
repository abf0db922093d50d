/* core/cfg.h — the one configuration of ./train, built in one place.
 *
 * Precedence: built-in defaults, then command-line flags, then derived values (the
 * linear-scaled learning rate, the eval resize), which the table marks as derived.
 * Rank 0 prints the table at start-up and writes it next to the checkpoints.
 */
#ifndef IH_CFG_H
#define IH_CFG_H

#include <stdint.h>
#include <stdio.h>

#include "err.h"

typedef enum { IH_MODE_TRAIN = 0, IH_MODE_EVAL = 1, IH_MODE_PROFILE = 2 } ih_mode;

typedef struct {
    ih_mode mode;
    /* data */
    char train_lmdb[1024];
    char val_lmdb[1024];
    int threads;          /* decode threads per worker */
    int image_size;       /* crop side fed to the model (224) */
    int resize;           /* eval: shorter side before center crop (derived: image_size*256/224) */
    float min_scale, max_scale;
    /* model */
    char arch[32];
    char backend[16];     /* cpu | cuda */
    char precision[8];    /* auto | fp32 | bf16 | fp16 (auto: fp32 on the CPU, bf16 on CUDA) */
    int num_classes;      /* 0: from the training data */
    /* optimisation (Goyal et al. 2017) */
    int batch;            /* n, images per worker per step */
    int epochs;
    double base_lr;       /* lr for a global batch of 256 */
    double warmup_epochs;
    char schedule[16];    /* step | cosine */
    int decay_epochs[8];
    double momentum;
    double weight_decay;
    int nesterov;
    int momentum_correction;
    uint64_t seed;
    /* run control */
    char out_dir[1024];
    char resume[1024];    /* checkpoint to resume from ("" none; "auto": out_dir/checkpoint.bin if present) */
    char checkpoint[1024];/* eval mode: checkpoint to evaluate */
    int log_every;        /* iterations between log lines */
    int64_t max_iters;    /* stop after this many iterations in total (0: no limit; for tests) */
    int progress;         /* -1 auto (TTY), 0 off, 1 on */
    int64_t ckpt_every;   /* also checkpoint every N iterations (0: only at epoch end) */
    /* data parallelism (Goyal et al. 2017, sec. 3-4) */
    int nproc;            /* --nproc N: start N local workers (0: this process is one worker) */
    int accumulate;       /* V virtual workers per worker: V sub-batches of n per step (1) */
    double bucket_mb;     /* gradient bucket size after the first (25) */
    double first_bucket_mb; /* the first bucket, complete earliest in backward (1) */
    char algo[8];         /* allreduce algorithm: auto | hd | ring (across nodes with --hier) */
    char hier[8];         /* two-level allreduce of the buckets: auto | on | off */
    char intra[8];        /* its intra-node half: auto | nccl | cpu */
    double comm_timeout_s;/* every collective wait (0: IH_COMM_TIMEOUT_S or 300) */
    char fabric[8];       /* tcp | ib | auto (tcp) */
    char ib_dev[64];      /* ib: RDMA device ("" : the one that carries the address) */
    int ib_port;          /* ib: port (0: the address's) */
    /* profile mode */
    int profile_iters;    /* measured iterations (after 3 warm-up ones) */
    char trace[1024];     /* Chrome trace-event JSON file ("" none) */
    /* derived (filled by ih_cfg_derive) */
    int world;            /* k workers (from the launcher's environment) */
    int rank;             /* this worker */
} ih_cfg;

/* Built-in defaults (the paper's recipe for ResNet-50 on ImageNet). */
void ih_cfg_defaults(ih_cfg *c);

/* Parses argv into c (after defaults). Returns IH_OK, IH_E_USAGE with a message that names the
 * bad flag or value (ih_last_error), or IH_OK with *help_printed = 1 after --help. */
ih_err ih_cfg_parse(ih_cfg *c, int argc, char **argv, int *help_printed);

/* Checks cross-field constraints and fills derived values. IH_E_USAGE on conflict. */
ih_err ih_cfg_derive(ih_cfg *c);

/* Prints the configuration as a two-column table to `f`. */
void ih_cfg_print(const ih_cfg *c, FILE *f);

/* Usage text to `f`. */
void ih_cfg_usage(FILE *f, const char *prog);

#endif
