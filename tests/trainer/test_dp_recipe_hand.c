/* test_dp_recipe_hand — the paper's recipe across k = 1, 2, 3 workers against values computed
 * here by hand from the model API (no trainer code):
 *   lr       = base_lr * k*n / 256 (linear scaling; no warmup, before any decay), in the checkpoint;
 *   gradient = (1/(k*n)) * sum over the k*n samples of the global batch (each worker's sub-batch
 *              with its own BN statistics) of d loss_i / d w: one plain SGD step (momentum 0,
 *              no weight decay) must give w1 = w0 - lr * g;
 *   weight decay after aggregation, only on the decayed segments: the same step with wd gives
 *              w1' - w1 = -lr * wd * w0 on conv/FC weights and exactly 0 on BN gamma/beta and the
 *              FC bias;
 *   the logged loss is the mean over all k*n samples.
 * Tolerances: float32 rounding of the two paths, 1e-6 absolute on weights of size O(1). */
#include <string.h>

#include "model/model.h"
#include "pipeline/loader.h"
#include "tests/trainer/tiny_data.h"
#include "trainer/checkpoint.h"

enum { N = 4, SIDE = 16 };

static char out[1 << 18];

static int run(const char *tmp, const char *name, int k, const char *extra)
{
    int rc = run_cmd(out, sizeof out,
                     "%s/bin/train --nproc %d --train %s/train.lmdb -o %s/%s --arch resnet8 --image-size %d -b %d "
                     "--epochs 2 --base-lr 0.1 --warmup-epochs 0 --momentum 0 --no-nesterov --threads 1 "
                     "--max-iters 1 --log-every 1 --no-progress --comm-timeout 30 %s",
                     bin_dir(), k, tmp, tmp, name, SIDE, N, extra);
    if (rc) fprintf(stderr, "train %s: exit %d\n%s\n", name, rc, out);
    return rc;
}

static float *load(const char *tmp, const char *name, ckpt_meta *m)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s/checkpoint.bin", tmp, name);
    if (ckpt_read_meta(p, m)) return NULL;
    float *w = malloc(m->n_params * sizeof(float)), *s = malloc(m->n_state * sizeof(float));
    if (ckpt_load(p, m, w, s, NULL)) { free(w); w = NULL; }
    free(s);
    return w;
}

static double logged_loss(const char *tmp, const char *name)
{
    char p[1024], line[512];
    snprintf(p, sizeof p, "%s/%s/metrics.jsonl", tmp, name);
    FILE *f = fopen(p, "r");
    double v = NAN;
    if (!f) return v;
    while (fgets(line, sizeof line, f)) {
        char *k = strstr(line, "\"loss\":");
        if (k) v = atof(k + 7);
    }
    fclose(f);
    return v;
}

int main(void)
{
    char tmp[] = "/tmp/ih_dphand_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    if (make_tiny_data(tmp, 4, 48, 2)) { CHECK(0, "could not build the tiny dataset"); return ih_test_result(); }
    char lmdb[1024];
    snprintf(lmdb, sizeof lmdb, "%s/train.lmdb", tmp);
    const double wd = 0.01;
    for (int k = 1; k <= 3; k++) {
        char a[16], b[16], extra[64];
        snprintf(a, sizeof a, "nowd%d", k);
        snprintf(b, sizeof b, "wd%d", k);
        snprintf(extra, sizeof extra, "--weight-decay %g", wd);
        if (run(tmp, a, k, "--weight-decay 0") || run(tmp, b, k, extra)) { CHECK(0, "runs for k=%d", k); continue; }
        ckpt_meta ma, mb;
        float *w1 = load(tmp, a, &ma), *w1d = load(tmp, b, &mb);
        if (!w1 || !w1d) { CHECK(0, "checkpoints for k=%d: %s", k, ih_last_error()); continue; }
        const double lr = 0.1 * k * N / 256.0;
        CHECK(ma.prev_lr == lr, "k=%d: lr %.17g, want base*k*n/256 = %.17g", k, ma.prev_lr, lr);

        /* By hand: the global batch of k*n through one loader, k sub-batches of n. */
        pipe_cfg pc;
        pipe_cfg_defaults(&pc);
        pc.lmdb_path = lmdb;
        pc.batch = k * N;
        pc.crop = SIDE;
        pc.resize = (SIDE * 256 + 223) / 224;
        pc.seed = 1;
        pipe_loader *L = NULL;
        CHECK(pipe_loader_create(&L, &pc) == IH_OK, "%s", ih_last_error());
        model_cfg mc = {.arch = "resnet8", .num_classes = 4, .image_size = SIDE, .max_batch = N,
                        .backend = MODEL_BACKEND_CPU, .bn_momentum = 0.1f, .bn_eps = 1e-5f};
        model_net *m = NULL;
        CHECK(model_net_create(&m, &mc) == IH_OK, "%s", ih_last_error());
        if (!L || !m) return ih_test_result();
        model_init_params(m, 1);
        const size_t np = model_num_params(m);
        float *w0 = malloc(np * sizeof(float));
        memcpy(w0, model_params(m), np * sizeof(float));
        pipe_batch pb;
        CHECK(pipe_loader_start_epoch(L, 0, 0) == IH_OK && pipe_loader_next(L, &pb) == IH_OK && pb.n == k * N, "batch");
        model_zero_grads(m);
        double loss = 0;
        for (int v = 0; v < k; v++) {
            double ls = 0;
            CHECK(model_train_step(m, pb.images + (size_t)v * N * SIDE * SIDE * 3, pb.labels + v * N, N, 1.0f, &ls, NULL) == IH_OK,
                  "%s", ih_last_error());
            loss += ls;
        }
        pipe_loader_release(L, &pb);
        const float *gsum = model_grads(m);
        const model_param_seg *segs;
        const size_t ns = model_param_segments(m, &segs);
        double e_step = 0, e_wd = 0, moved = 0, decayed = 0;
        int nodecay_exact = 1;
        for (size_t s = 0; s < ns; s++)
            for (size_t i = segs[s].offset; i < segs[s].offset + segs[s].count; i++) {
                const double g = (double)gsum[i] / (double)(k * N);
                const double want = (double)w0[i] - lr * g;
                e_step = fmax(e_step, fabs((double)w1[i] - want));
                moved = fmax(moved, fabs(lr * g));
                const double dwd = (double)w1d[i] - (double)w1[i];
                if (segs[s].no_decay) {
                    nodecay_exact &= w1d[i] == w1[i];
                } else {
                    e_wd = fmax(e_wd, fabs(dwd - (-lr * wd * (double)w0[i])));
                    decayed = fmax(decayed, fabs(lr * wd * (double)w0[i]));
                }
            }
        const double hand_loss = loss / (double)(k * N), got_loss = logged_loss(tmp, a);
        printf("k=%d: lr %.6g; |w1 - (w0 - lr g)| <= %.3g (step size up to %.3g); |dw_wd + lr wd w0| <= %.3g "
               "(decay up to %.3g); loss %.7f vs hand %.7f\n", k, lr, e_step, moved, e_wd, decayed, got_loss, hand_loss);
        CHECK(moved > 1e-4, "k=%d: the step should move the weights", k);
        CHECK(e_step <= 1e-6, "k=%d: w1 differs from w0 - lr*g by %g", k, e_step);
        CHECK(decayed > 1e-5 && e_wd <= 1e-6, "k=%d: weight decay term off by %g (size %g)", k, e_wd, decayed);
        CHECK(nodecay_exact, "k=%d: BN gamma/beta or the FC bias were decayed", k);
        CHECK(ih_close(got_loss, hand_loss, 0, 1e-5), "k=%d: logged loss %.9g, mean over k*n samples %.9g", k, got_loss, hand_loss);
        free(w0);
        free(w1);
        free(w1d);
        model_net_destroy(m);
        pipe_loader_destroy(L);
    }
    run_cmd(out, sizeof out, "rm -rf %s", tmp);
    return ih_test_result();
}
