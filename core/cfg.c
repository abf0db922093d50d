/* core/cfg.c — getopt_long parsing and the printed table for ih_cfg. */
#define _GNU_SOURCE
#include "cfg.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

void ih_cfg_defaults(ih_cfg *c)
{
    memset(c, 0, sizeof *c);
    c->mode = IH_MODE_TRAIN;
    c->threads = 2;
    c->image_size = 224;
    c->min_scale = 0.08f;
    c->max_scale = 1.0f;
    snprintf(c->arch, sizeof c->arch, "resnet50");
    snprintf(c->backend, sizeof c->backend, "cpu");
    snprintf(c->precision, sizeof c->precision, "auto");
    c->batch = 32;
    c->epochs = 90;
    c->base_lr = 0.1;
    c->warmup_epochs = 5;
    snprintf(c->schedule, sizeof c->schedule, "step");
    c->decay_epochs[0] = 30;
    c->decay_epochs[1] = 60;
    c->decay_epochs[2] = 80;
    c->momentum = 0.9;
    c->weight_decay = 1e-4;
    c->nesterov = 1;
    c->momentum_correction = 1;
    c->seed = 1;
    snprintf(c->out_dir, sizeof c->out_dir, "run");
    c->log_every = 20;
    c->progress = -1;
    c->world = 1;
    c->accumulate = 1;
    c->bucket_mb = 25;
    c->first_bucket_mb = 1;
    snprintf(c->algo, sizeof c->algo, "auto");
    snprintf(c->hier, sizeof c->hier, "auto");
    snprintf(c->intra, sizeof c->intra, "auto");
    snprintf(c->fabric, sizeof c->fabric, "tcp");
    c->profile_iters = 20;
}

void ih_cfg_usage(FILE *f, const char *prog)
{
    fprintf(f,
        "usage: %s [--mode train|eval|profile] --train LMDB --val LMDB [options]\n"
        "       %s --nproc N [options]      (N local workers; also runs under mpirun / srun)\n"
        "\n"
        "Trains a ResNet with the recipe of Goyal et al. 2017 (linear scaling, gradual warmup,\n"
        "per-worker BN, zero-init last BN gamma, momentum correction, loss / (k*n)).\n"
        "\n"
        "data:\n"
        "  --train LMDB            training LMDB (tools/make_lmdb)\n"
        "  --val LMDB              validation LMDB (top-1/top-5 after each epoch)\n"
        "  --threads N             decode threads per worker (2)\n"
        "  --image-size PX         crop side fed to the model (224)\n"
        "  --resize PX             eval: shorter side before the center crop (image-size*256/224)\n"
        "  --min-scale F           RandomResizedCrop smallest area fraction (0.08)\n"
        "  --max-scale F           RandomResizedCrop largest area fraction (1.0)\n"
        "model:\n"
        "  --arch NAME             resnet18|34|50|101, resnet8|14|20|32|56 (CIFAR-style) (resnet50)\n"
        "  --backend cpu|cuda      compute backend (cpu)\n"
        "  --precision P           auto|fp32|bf16|fp16: compute precision; auto = fp32 on the CPU,\n"
        "                          bf16 on CUDA; fp16 uses dynamic loss scaling (CUDA only) (auto)\n"
        "  --num-classes N         classes (0: from the training data) (0)\n"
        "optimisation:\n"
        "  -b, --batch-size N      images per worker per step, n (32)\n"
        "  -e, --epochs N          epochs (90)\n"
        "  --base-lr F             lr for a global batch of 256; scaled by k*n/256 (0.1)\n"
        "  --warmup-epochs F       gradual warmup length (5)\n"
        "  --schedule step|cosine  decay after warmup (step)\n"
        "  --decay-epochs A,B,..   step decay x0.1 at these epochs (30,60,80)\n"
        "  --momentum F            (0.9)\n"
        "  --weight-decay F        not applied to BN gamma/beta and biases (1e-4)\n"
        "  --no-nesterov           plain momentum instead of Nesterov\n"
        "  --no-momentum-correction\n"
        "  --seed N                (1)\n"
        "data parallelism (k workers; lr and loss scale use the global batch k*V*n):\n"
        "  --nproc N               start N workers on this machine (mpirun/srun need no flag)\n"
        "  --accumulate V          V virtual workers per worker: V sub-batches of n, each with\n"
        "                          its own BN statistics, gradients summed (1)\n"
        "  --bucket-mb F           gradient bucket size for the allreduce (25)\n"
        "  --first-bucket-mb F     the first bucket, ready earliest in backward (1)\n"
        "  --algo auto|hd|ring     allreduce algorithm (auto)\n"
        "  --hier auto|on|off      two-level allreduce of the gradients: reduce-scatter inside each\n"
        "                          node, allreduce across nodes (with --algo), allgather; auto: on\n"
        "                          with more than one node and the same number of ranks > 1 on each (auto)\n"
        "  --intra auto|nccl|cpu   inside a node with --backend cuda: nccl reduces the gradients on the\n"
        "                          GPUs with NCCL (one GPU per rank; then the two-level allreduce is used\n"
        "                          even on one node), cpu through host memory; auto: nccl where every\n"
        "                          rank can use it and there are >1 ranks per node (auto)\n"
        "  --comm-timeout S        seconds any collective may wait for a peer (300)\n"
        "  --fabric tcp|ib|auto    transport between workers; auto: ib where every worker has a\n"
        "                          usable RDMA device, else tcp (tcp)\n"
        "  --ib-dev NAME           ib: RDMA device, e.g. mlx5_0 (the one carrying MASTER_ADDR's route)\n"
        "  --ib-port N             ib: device port (the address's)\n"
        "run control:\n"
        "  --mode train|eval|profile (train)\n"
        "  -o, --out-dir DIR       checkpoints, config.txt, metrics.jsonl (run)\n"
        "  --resume PATH|auto      resume from a checkpoint (auto: OUT-DIR/checkpoint.bin if present)\n"
        "  --checkpoint PATH       eval mode: the checkpoint to evaluate\n"
        "  --log-every N           iterations between log lines (20)\n"
        "  --max-iters N           stop after N iterations in total (0: no limit)\n"
        "  --ckpt-every N          also checkpoint every N iterations (0: epoch ends only)\n"
        "  --profile-iters N       profile mode: measured iterations (20)\n"
        "  --trace FILE            profile mode: write a Chrome trace-event JSON (Perfetto)\n"
        "  --progress / --no-progress   progress bar (default: when stdout is a TTY)\n"
        "  -h, --help\n"
        "\n"
        "debug environment: IH_DEBUG=WARN|INFO|TRACE, IH_DEBUG_SUBSYS=PIPE,MODEL,..., IH_DEBUG_FILE=path\n",
        prog, prog);
}

static ih_err parse_int(const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return ih_fail(IH_E_USAGE, "--%s: '%s' is not an integer in [%ld, %ld]", flag, s, lo, hi);
    *out = v;
    return IH_OK;
}

static ih_err parse_dbl(const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return ih_fail(IH_E_USAGE, "--%s: '%s' is not a number in [%g, %g]", flag, s, lo, hi);
    *out = v;
    return IH_OK;
}

static ih_err copy_str(const char *flag, char *dst, size_t cap, const char *s)
{
    if (strlen(s) >= cap) return ih_fail(IH_E_USAGE, "--%s: value too long (max %zu)", flag, cap - 1);
    memcpy(dst, s, strlen(s) + 1);
    return IH_OK;
}

enum {
    O_TRAIN = 1000, O_VAL, O_THREADS, O_IMAGE, O_RESIZE, O_MINS, O_MAXS, O_ARCH, O_BACKEND,
    O_NCLS, O_LR, O_WARM, O_SCHED, O_DECAY, O_MOM, O_WD, O_NONEST, O_NOMC, O_SEED, O_MODE,
    O_RESUME, O_CKPT, O_LOGEVERY, O_MAXIT, O_PROG, O_NOPROG, O_NPROC, O_ACCUM, O_BUCKET, O_FBUCKET,
    O_ALGO, O_CTIMEOUT, O_CKEVERY, O_PITERS, O_TRACE, O_FABRIC, O_IBDEV, O_IBPORT, O_HIER, O_PREC, O_INTRA
};

ih_err ih_cfg_parse(ih_cfg *c, int argc, char **argv, int *help_printed)
{
    static const struct option opts[] = {
        {"train", required_argument, 0, O_TRAIN},       {"val", required_argument, 0, O_VAL},
        {"threads", required_argument, 0, O_THREADS},   {"image-size", required_argument, 0, O_IMAGE},
        {"resize", required_argument, 0, O_RESIZE},     {"min-scale", required_argument, 0, O_MINS},
        {"max-scale", required_argument, 0, O_MAXS},    {"arch", required_argument, 0, O_ARCH},
        {"backend", required_argument, 0, O_BACKEND},   {"num-classes", required_argument, 0, O_NCLS},
        {"precision", required_argument, 0, O_PREC},
        {"batch-size", required_argument, 0, 'b'},      {"epochs", required_argument, 0, 'e'},
        {"base-lr", required_argument, 0, O_LR},        {"warmup-epochs", required_argument, 0, O_WARM},
        {"schedule", required_argument, 0, O_SCHED},    {"decay-epochs", required_argument, 0, O_DECAY},
        {"momentum", required_argument, 0, O_MOM},      {"weight-decay", required_argument, 0, O_WD},
        {"no-nesterov", no_argument, 0, O_NONEST},      {"no-momentum-correction", no_argument, 0, O_NOMC},
        {"seed", required_argument, 0, O_SEED},         {"mode", required_argument, 0, O_MODE},
        {"out-dir", required_argument, 0, 'o'},         {"resume", required_argument, 0, O_RESUME},
        {"checkpoint", required_argument, 0, O_CKPT},   {"log-every", required_argument, 0, O_LOGEVERY},
        {"max-iters", required_argument, 0, O_MAXIT},   {"progress", no_argument, 0, O_PROG},
        {"no-progress", no_argument, 0, O_NOPROG},      {"help", no_argument, 0, 'h'},
        {"nproc", required_argument, 0, O_NPROC},       {"accumulate", required_argument, 0, O_ACCUM},
        {"bucket-mb", required_argument, 0, O_BUCKET},  {"first-bucket-mb", required_argument, 0, O_FBUCKET},
        {"algo", required_argument, 0, O_ALGO},         {"comm-timeout", required_argument, 0, O_CTIMEOUT},
        {"fabric", required_argument, 0, O_FABRIC}, {"ib-dev", required_argument, 0, O_IBDEV},
        {"ib-port", required_argument, 0, O_IBPORT},
        {"ckpt-every", required_argument, 0, O_CKEVERY}, {"profile-iters", required_argument, 0, O_PITERS},
        {"trace", required_argument, 0, O_TRACE},       {"hier", required_argument, 0, O_HIER},
        {"intra", required_argument, 0, O_INTRA},
        {0, 0, 0, 0}};
    *help_printed = 0;
    optind = 1;
    opterr = 0;
    int ch;
    long iv = 0;   /* set by parse_int before use; initialised for -O3 -Wmaybe-uninitialized */
    double dv = 0;
    while ((ch = getopt_long(argc, argv, ":b:e:o:h", opts, NULL)) != -1) {
        const char *a = optarg;
        switch (ch) {
        case O_TRAIN: IH_TRY(copy_str("train", c->train_lmdb, sizeof c->train_lmdb, a)); break;
        case O_VAL: IH_TRY(copy_str("val", c->val_lmdb, sizeof c->val_lmdb, a)); break;
        case O_THREADS: IH_TRY(parse_int("threads", a, 1, 256, &iv)); c->threads = (int)iv; break;
        case O_IMAGE: IH_TRY(parse_int("image-size", a, 8, 4096, &iv)); c->image_size = (int)iv; break;
        case O_RESIZE: IH_TRY(parse_int("resize", a, 8, 8192, &iv)); c->resize = (int)iv; break;
        case O_MINS: IH_TRY(parse_dbl("min-scale", a, 1e-4, 1, &dv)); c->min_scale = (float)dv; break;
        case O_MAXS: IH_TRY(parse_dbl("max-scale", a, 1e-4, 1, &dv)); c->max_scale = (float)dv; break;
        case O_ARCH: IH_TRY(copy_str("arch", c->arch, sizeof c->arch, a)); break;
        case O_BACKEND:
            if (strcmp(a, "cpu") && strcmp(a, "cuda"))
                return ih_fail(IH_E_USAGE, "--backend: '%s' is not one of cpu, cuda", a);
            IH_TRY(copy_str("backend", c->backend, sizeof c->backend, a));
            break;
        case O_PREC:
            if (strcmp(a, "auto") && strcmp(a, "fp32") && strcmp(a, "bf16") && strcmp(a, "fp16"))
                return ih_fail(IH_E_USAGE, "--precision: '%s' is not one of auto, fp32, bf16, fp16", a);
            IH_TRY(copy_str("precision", c->precision, sizeof c->precision, a));
            break;
        case O_NCLS: IH_TRY(parse_int("num-classes", a, 0, 1000000, &iv)); c->num_classes = (int)iv; break;
        case 'b': IH_TRY(parse_int("batch-size", a, 1, 1 << 20, &iv)); c->batch = (int)iv; break;
        case 'e': IH_TRY(parse_int("epochs", a, 1, 100000, &iv)); c->epochs = (int)iv; break;
        case O_LR: IH_TRY(parse_dbl("base-lr", a, 0, 1e3, &dv)); c->base_lr = dv; break;
        case O_WARM: IH_TRY(parse_dbl("warmup-epochs", a, 0, 1e5, &dv)); c->warmup_epochs = dv; break;
        case O_SCHED:
            if (strcmp(a, "step") && strcmp(a, "cosine"))
                return ih_fail(IH_E_USAGE, "--schedule: '%s' is not one of step, cosine", a);
            IH_TRY(copy_str("schedule", c->schedule, sizeof c->schedule, a));
            break;
        case O_DECAY: {
            memset(c->decay_epochs, 0, sizeof c->decay_epochs);
            char buf[256];
            IH_TRY(copy_str("decay-epochs", buf, sizeof buf, a));
            int i = 0;
            for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (i == 8) return ih_fail(IH_E_USAGE, "--decay-epochs: at most 8 epochs");
                IH_TRY(parse_int("decay-epochs", tok, 1, 100000, &iv));
                c->decay_epochs[i++] = (int)iv;
            }
            break;
        }
        case O_MOM: IH_TRY(parse_dbl("momentum", a, 0, 1, &dv)); c->momentum = dv; break;
        case O_WD: IH_TRY(parse_dbl("weight-decay", a, 0, 1, &dv)); c->weight_decay = dv; break;
        case O_NONEST: c->nesterov = 0; break;
        case O_NOMC: c->momentum_correction = 0; break;
        case O_SEED: IH_TRY(parse_int("seed", a, 0, 0x7fffffffL, &iv)); c->seed = (uint64_t)iv; break;
        case O_MODE:
            if (!strcmp(a, "train")) c->mode = IH_MODE_TRAIN;
            else if (!strcmp(a, "eval")) c->mode = IH_MODE_EVAL;
            else if (!strcmp(a, "profile")) c->mode = IH_MODE_PROFILE;
            else return ih_fail(IH_E_USAGE, "--mode: '%s' is not one of train, eval, profile", a);
            break;
        case 'o': IH_TRY(copy_str("out-dir", c->out_dir, sizeof c->out_dir, a)); break;
        case O_RESUME: IH_TRY(copy_str("resume", c->resume, sizeof c->resume, a)); break;
        case O_CKPT: IH_TRY(copy_str("checkpoint", c->checkpoint, sizeof c->checkpoint, a)); break;
        case O_LOGEVERY: IH_TRY(parse_int("log-every", a, 1, 1 << 30, &iv)); c->log_every = (int)iv; break;
        case O_MAXIT: IH_TRY(parse_int("max-iters", a, 0, 0x7fffffffL, &iv)); c->max_iters = iv; break;
        case O_PROG: c->progress = 1; break;
        case O_NOPROG: c->progress = 0; break;
        case O_NPROC: IH_TRY(parse_int("nproc", a, 1, 1024, &iv)); c->nproc = (int)iv; break;
        case O_ACCUM: IH_TRY(parse_int("accumulate", a, 1, 4096, &iv)); c->accumulate = (int)iv; break;
        case O_BUCKET: IH_TRY(parse_dbl("bucket-mb", a, 0.001, 4096, &dv)); c->bucket_mb = dv; break;
        case O_FBUCKET: IH_TRY(parse_dbl("first-bucket-mb", a, 0.001, 4096, &dv)); c->first_bucket_mb = dv; break;
        case O_ALGO:
            if (strcmp(a, "auto") && strcmp(a, "hd") && strcmp(a, "ring"))
                return ih_fail(IH_E_USAGE, "--algo: '%s' is not one of auto, hd, ring", a);
            IH_TRY(copy_str("algo", c->algo, sizeof c->algo, a));
            break;
        case O_HIER:
            if (strcmp(a, "auto") && strcmp(a, "on") && strcmp(a, "off"))
                return ih_fail(IH_E_USAGE, "--hier: '%s' is not one of auto, on, off", a);
            IH_TRY(copy_str("hier", c->hier, sizeof c->hier, a));
            break;
        case O_INTRA:
            if (strcmp(a, "auto") && strcmp(a, "nccl") && strcmp(a, "cpu"))
                return ih_fail(IH_E_USAGE, "--intra: '%s' is not one of auto, nccl, cpu", a);
            IH_TRY(copy_str("intra", c->intra, sizeof c->intra, a));
            break;
        case O_CTIMEOUT: IH_TRY(parse_dbl("comm-timeout", a, 0.1, 1e6, &dv)); c->comm_timeout_s = dv; break;
        case O_FABRIC:
            if (strcmp(a, "tcp") && strcmp(a, "ib") && strcmp(a, "auto"))
                return ih_fail(IH_E_USAGE, "--fabric: '%s' is not one of tcp, ib, auto", a);
            IH_TRY(copy_str("fabric", c->fabric, sizeof c->fabric, a));
            break;
        case O_IBDEV: IH_TRY(copy_str("ib-dev", c->ib_dev, sizeof c->ib_dev, a)); break;
        case O_IBPORT: IH_TRY(parse_int("ib-port", a, 1, 255, &iv)); c->ib_port = (int)iv; break;
        case O_CKEVERY: IH_TRY(parse_int("ckpt-every", a, 0, 0x7fffffffL, &iv)); c->ckpt_every = iv; break;
        case O_PITERS: IH_TRY(parse_int("profile-iters", a, 1, 100000, &iv)); c->profile_iters = (int)iv; break;
        case O_TRACE: IH_TRY(copy_str("trace", c->trace, sizeof c->trace, a)); break;
        case 'h': ih_cfg_usage(stdout, argv[0]); *help_printed = 1; return IH_OK;
        case ':': return ih_fail(IH_E_USAGE, "option '%s' needs a value (see --help)", argv[optind - 1]);
        default: return ih_fail(IH_E_USAGE, "unknown option '%s' (see --help)", argv[optind - 1]);
        }
    }
    if (optind < argc) return ih_fail(IH_E_USAGE, "unexpected argument '%s' (see --help)", argv[optind]);
    return IH_OK;
}

ih_err ih_cfg_derive(ih_cfg *c)
{
    if (c->mode != IH_MODE_EVAL && !c->train_lmdb[0])
        return ih_fail(IH_E_USAGE, "--train LMDB is required in train and profile mode (make one with tools/make_lmdb)");
    if (c->mode == IH_MODE_EVAL && (!c->val_lmdb[0] || !c->checkpoint[0]))
        return ih_fail(IH_E_USAGE, "eval mode needs --val LMDB and --checkpoint PATH");
    if (c->min_scale > c->max_scale)
        return ih_fail(IH_E_USAGE, "--min-scale %g is larger than --max-scale %g", c->min_scale, c->max_scale);
    if (!strcmp(c->backend, "cpu") && (!strcmp(c->precision, "bf16") || !strcmp(c->precision, "fp16")))
        return ih_fail(IH_E_USAGE, "--precision %s needs --backend cuda (the CPU backend computes in fp32)", c->precision);
    if (!c->resize) c->resize = (c->image_size * 256 + 223) / 224;
    if (c->resize < c->image_size)
        return ih_fail(IH_E_USAGE, "--resize %d is smaller than --image-size %d", c->resize, c->image_size);
    return IH_OK;
}

void ih_cfg_print(const ih_cfg *c, FILE *f)
{
    char decay[96] = "";
    for (int i = 0, o = 0; i < 8 && c->decay_epochs[i]; i++)
        o += snprintf(decay + o, sizeof decay - (size_t)o, "%s%d", i ? "," : "", c->decay_epochs[i]);
    const long gb = (long)c->batch * c->world * c->accumulate;
    fprintf(f, "# %-22s %s\n", "setting", "value");
    fprintf(f, "  %-22s %s\n", "mode", c->mode == IH_MODE_TRAIN ? "train" : c->mode == IH_MODE_EVAL ? "eval" : "profile");
    fprintf(f, "  %-22s %s\n", "train", c->train_lmdb[0] ? c->train_lmdb : "-");
    fprintf(f, "  %-22s %s\n", "val", c->val_lmdb[0] ? c->val_lmdb : "-");
    fprintf(f, "  %-22s %s (%s, precision %s)\n", "arch", c->arch, c->backend, c->precision);
    fprintf(f, "  %-22s %d\n", "image-size", c->image_size);
    fprintf(f, "  %-22s %d\n", "resize (eval)", c->resize);
    fprintf(f, "  %-22s %.3g..%.3g\n", "crop scale", c->min_scale, c->max_scale);
    fprintf(f, "  %-22s %d\n", "decode threads", c->threads);
    fprintf(f, "  %-22s %d x %d workers x %d virtual = %ld\n", "batch n x k x V", c->batch, c->world, c->accumulate, gb);
    fprintf(f, "  %-22s %g MB first, then %g MB (%s, --hier %s, --intra %s)\n", "allreduce buckets",
            c->first_bucket_mb, c->bucket_mb, c->algo, c->hier, c->intra);
    fprintf(f, "  %-22s %s\n", "fabric", c->fabric);
    fprintf(f, "  %-22s %d\n", "epochs", c->epochs);
    fprintf(f, "  %-22s %g\n", "base lr (per 256)", c->base_lr);
    fprintf(f, "  %-22s %g  (derived: base*%ld/256)\n", "lr after warmup", c->base_lr * (double)gb / 256.0, gb);
    fprintf(f, "  %-22s %g epochs\n", "warmup", c->warmup_epochs);
    fprintf(f, "  %-22s %s%s%s\n", "schedule", c->schedule, strcmp(c->schedule, "step") ? "" : " at ", strcmp(c->schedule, "step") ? "" : decay);
    fprintf(f, "  %-22s %g (%s)%s\n", "momentum", c->momentum, c->nesterov ? "nesterov" : "plain",
            c->momentum_correction ? ", corrected" : "");
    fprintf(f, "  %-22s %g (not on BN, bias)\n", "weight decay", c->weight_decay);
    fprintf(f, "  %-22s %llu\n", "seed", (unsigned long long)c->seed);
    fprintf(f, "  %-22s %s\n", "out-dir", c->out_dir);
    if (c->ckpt_every) fprintf(f, "  %-22s every %lld iterations and at epoch ends\n", "checkpoints", (long long)c->ckpt_every);
    if (c->resume[0]) fprintf(f, "  %-22s %s\n", "resume", c->resume);
}
