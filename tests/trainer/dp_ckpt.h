/* tests/trainer/dp_ckpt.h — shared by the data-parallel equivalence tests (header-only): a few
 * steps of ./train on the tiny dataset (resnet8 at 16 px, n = 4, cosine, no warmup), and the
 * checkpoint it leaves, loaded for comparison. */
#ifndef IH_TESTS_TRAINER_DP_CKPT_H
#define IH_TESTS_TRAINER_DP_CKPT_H

#include <math.h>
#include <string.h>

#include "tests/trainer/tiny_data.h"
#include "trainer/checkpoint.h"

static char dp_out[1 << 18]; /* the output of the last dp_run */

/* `env ./train how ...` writing TMP/NAME/checkpoint.bin after `steps` iterations. Returns the
 * exit status (nonzero is printed with the output). */
static int dp_run(const char *tmp, const char *name, const char *env, const char *how, int steps, int comm_timeout_s)
{
    int rc = run_cmd(dp_out, sizeof dp_out,
                     "%s %s/bin/train %s --train %s/train.lmdb -o %s/%s --arch resnet8 --image-size 16 -b 4 --epochs 2 "
                     "--base-lr 0.4 --warmup-epochs 0 --schedule cosine --threads 1 --max-iters %d --no-progress "
                     "--comm-timeout %d",
                     env, bin_dir(), how, tmp, tmp, name, steps, comm_timeout_s);
    if (rc) fprintf(stderr, "train %s (%s %s): exit %d\n%s\n", name, env, how, rc, dp_out);
    return rc;
}

typedef struct {
    ckpt_meta m;
    float *p, *s, *u; /* parameters, BN state, momentum */
} dp_ck;

static int dp_load(const char *tmp, const char *name, dp_ck *c)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/checkpoint.bin", tmp, name);
    if (ckpt_read_meta(path, &c->m)) { fprintf(stderr, "%s\n", ih_last_error()); return 1; }
    c->p = malloc(c->m.n_params * sizeof(float));
    c->s = malloc(c->m.n_state * sizeof(float));
    c->u = malloc(c->m.n_momentum * sizeof(float));
    if (ckpt_load(path, &c->m, c->p, c->s, c->u)) { fprintf(stderr, "%s\n", ih_last_error()); return 1; }
    return 0;
}

static void dp_ck_free(dp_ck *c)
{
    free(c->p);
    free(c->s);
    free(c->u);
}

/* max_i |a[i] - b[i]|, NaN if any element is NaN. */
static double dp_maxdiff(const float *a, const float *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double x = fabs((double)a[i] - (double)b[i]);
        if (x > d || x != x) d = x;
    }
    return d;
}

#endif
