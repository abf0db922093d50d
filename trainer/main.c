/* trainer/main.c — ./train: parse the configuration, find this worker's place in the job,
 * then run one mode. Wiring only.
 *
 *   ./train --train data/train.lmdb --val data/val.lmdb --arch resnet50 -b 32
 *   ./train --nproc 8 --train ... (8 local workers: this process re-executes itself 8 times
 *                                 with RANK/WORLD_SIZE/MASTER_* set, and waits)
 *   mpirun -np 256 ./train ...   / srun -n 256 ./train ...   (the launcher's environment)
 *   ./train --mode eval --val data/val.lmdb --checkpoint run/checkpoint.bin
 *
 * Exit codes: 0 ok, 1 failure, 2 usage, 130 stopped by a signal (after a checkpoint); under
 * --nproc, the first failing rank's code (128 + signal if it was killed).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/cfg.h"
#include "core/log.h"
#include "trainer/modes.h"
#include "model/model.h"
#include "transport/boot.h"
#include "transport/comm.h"
#include "transport/launch.h"

extern char **environ;

volatile int g_stop_signal;

static void on_signal(int sig) { g_stop_signal = sig; }

/* --nproc N: run this binary N times with the same arguments minus --nproc. Each worker gets
 * an equal share of the cores for BLAS unless OPENBLAS_NUM_THREADS is already set. */
static int launch_local(int nproc, int argc, char **argv)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) { perror("train: readlink /proc/self/exe"); return 1; }
    self[n] = 0;
    char **av = calloc((size_t)argc + 1, sizeof *av);
    if (!av) return 1;
    int k = 0;
    av[k++] = self;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--nproc")) { i++; continue; }
        if (!strncmp(argv[i], "--nproc=", 8)) continue;
        av[k++] = argv[i];
    }
    av[k] = NULL;
    static char blas[64];
    static const char *env[2];
    if (!getenv("OPENBLAS_NUM_THREADS")) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        long per = cores / nproc > 1 ? cores / nproc : 1;
        snprintf(blas, sizeof blas, "OPENBLAS_NUM_THREADS=%ld", per);
        env[0] = blas;
    }
    comm_launch_opts lo;
    memset(&lo, 0, sizeof lo);
    lo.extra_env = (void *)env;
    int rc = comm_launch_local(nproc, av, &lo, NULL);
    free(av);
    return rc;
}

int main(int argc, char **argv)
{
    ih_cfg cfg;
    ih_cfg_defaults(&cfg);
    int help = 0;
    if (ih_cfg_parse(&cfg, argc, argv, &help) != IH_OK || (!help && ih_cfg_derive(&cfg) != IH_OK)) {
        fprintf(stderr, "train: %s\n", ih_last_error());
        return 2;
    }
    if (help) return 0;
    if (cfg.nproc > 0) return launch_local(cfg.nproc, argc, argv);

    comm_boot_info bi;
    if (comm_boot_from_env(&bi, (void *)environ) != IH_OK) {
        fprintf(stderr, "train: %s\n", ih_last_error());
        return 2;
    }
    cfg.world = bi.world;
    cfg.rank = bi.rank;
    ih_log_set_rank(bi.rank);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    ih_err e = IH_OK;
    comm_ctx *comm = NULL;
    /* One GPU per local rank (--nproc, mpirun and srun all set the local rank). */
    if (!strcmp(cfg.backend, "cuda")) e = model_select_device(MODEL_BACKEND_CUDA, bi.local_rank);
    if (e != IH_OK) {
        fprintf(stderr, "train: rank %d: %s\n", bi.rank, ih_last_error());
        return 1;
    }
    if (cfg.mode == IH_MODE_EVAL) {
        /* Eval mode is one process: the other ranks of a launched job have nothing to do. */
        e = bi.rank == 0 ? mode_eval(&cfg) : IH_OK;
    } else {
        if (bi.world > 1) {
            comm_opts co;
            memset(&co, 0, sizeof co);
            co.timeout_ms = (int64_t)(cfg.comm_timeout_s * 1000);
            co.fabric = cfg.fabric;
            co.ib_dev = cfg.ib_dev[0] ? cfg.ib_dev : NULL;
            co.ib_port = cfg.ib_port;
            e = comm_ctx_create(&comm, &bi, &co);
        }
        if (e == IH_OK) e = cfg.mode == IH_MODE_PROFILE ? mode_profile(&cfg, comm) : mode_train(&cfg, comm);
    }
    if (e != IH_OK) {
        if (bi.world > 1)
            fprintf(stderr, "train: rank %d of %d: error: %s\n", bi.rank, bi.world, ih_last_error());
        else
            fprintf(stderr, "train: error: %s\n", ih_last_error());
    }
    comm_ctx_destroy(comm);
    if (e != IH_OK) return e == IH_E_USAGE ? 2 : 1;
    return g_stop_signal ? 130 : 0;
}
