/* test_dp_hier_equivalence — ./train with the two-level allreduce (--hier, transport/hier.h)
 * trains like the flat allreduce and like one worker with --accumulate 4.
 *
 * 4 workers as 2 simulated nodes x 2 ranks (IH_RANKS_PER_NODE=2, --hier auto, which must pick
 * the two-level allreduce and say so), 4 workers with --hier off, and one worker with
 * --accumulate 4, same seed, S steps. Only the order of the 4-term gradient sums differs, so
 * parameters and momentum agree within BOUND (as test_dp_equivalence: about 8 float32 ulps at
 * 1). Without IH_RANKS_PER_NODE, auto must stay flat (one node).
 */
#include <stdint.h>
#include <string.h>

#include "tests/trainer/tiny_data.h"
#include "trainer/checkpoint.h"

#define BOUND 1e-6
enum { STEPS = 6 };

static char out[1 << 18];

static int run(const char *tmp, const char *name, const char *env, const char *how)
{
    int rc = run_cmd(out, sizeof out,
                     "%s %s/bin/train %s --train %s/train.lmdb -o %s/%s --arch resnet8 --image-size 16 -b 4 --epochs 2 "
                     "--base-lr 0.4 --warmup-epochs 0 --schedule cosine --threads 1 --max-iters %d --no-progress "
                     "--comm-timeout 30",
                     env, bin_dir(), how, tmp, tmp, name, STEPS);
    if (rc) fprintf(stderr, "train %s (%s %s): exit %d\n%s\n", name, env, how, rc, out);
    return rc;
}

typedef struct {
    ckpt_meta m;
    float *p, *s, *u;
} ck;

static int load(const char *tmp, const char *name, ck *c)
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

static double maxdiff(const float *a, const float *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double x = fabs((double)a[i] - (double)b[i]);
        if (x > d || x != x) d = x;
    }
    return d;
}

int main(void)
{
    char tmp[] = "/tmp/ih_dphier_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    if (make_tiny_data(tmp, 4, 48, 2)) { CHECK(0, "could not build the tiny dataset"); return ih_test_result(); }
    ck hier, flat, acc;
    memset(&hier, 0, sizeof hier);
    memset(&flat, 0, sizeof flat);
    memset(&acc, 0, sizeof acc);
    CHECK(run(tmp, "hier", "IH_RANKS_PER_NODE=2", "--nproc 4 --hier auto") == 0, "4 workers, 2 nodes x 2, --hier auto");
    CHECK(strstr(out, "two-level (--hier auto: 2 nodes x 2 ranks)") != NULL,
          "--hier auto on 2 simulated nodes x 2 did not report the two-level allreduce:\n%s", out);
    CHECK(run(tmp, "flat", "IH_DEBUG=INFO IH_DEBUG_SUBSYS=COMM", "--nproc 4") == 0, "4 workers, one node, --hier auto");
    CHECK(strstr(out, "allreduce: two-level") == NULL && strstr(out, "flat (--hier auto: 1 node x 4 ranks)") != NULL,
          "--hier auto on one node is not flat:\n%s", out);
    CHECK(run(tmp, "acc", "", "--accumulate 4") == 0, "one worker, --accumulate 4");
    if (load(tmp, "hier", &hier) || load(tmp, "flat", &flat) || load(tmp, "acc", &acc)) {
        CHECK(0, "checkpoints");
        return ih_test_result();
    }
    CHECK(hier.m.iter == STEPS && flat.m.iter == STEPS, "iterations %lld %lld", (long long)hier.m.iter,
          (long long)flat.m.iter);
    const size_t n = hier.m.n_params;
    const double dpf = maxdiff(hier.p, flat.p, n), duf = maxdiff(hier.u, flat.u, n);
    const double dpa = maxdiff(hier.p, acc.p, n), dua = maxdiff(hier.u, acc.u, n);
    printf("two-level vs flat: parameters %.3g, momentum %.3g; vs --accumulate 4: %.3g, %.3g (bound %.1g)\n", dpf,
           duf, dpa, dua, BOUND);
    CHECK(dpf <= BOUND && duf <= BOUND, "two-level vs flat: %g %g > %g", dpf, duf, BOUND);
    CHECK(dpa <= BOUND && dua <= BOUND, "two-level vs --accumulate 4: %g %g > %g", dpa, dua, BOUND);
    free(hier.p); free(hier.s); free(hier.u);
    free(flat.p); free(flat.s); free(flat.u);
    free(acc.p); free(acc.s); free(acc.u);
    run_cmd(out, sizeof out, "rm -rf %s", tmp);
    return ih_test_result();
}
