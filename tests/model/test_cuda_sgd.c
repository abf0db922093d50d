/* test_cuda_sgd — model_sgd_step on the CUDA backend (the fused kernel, momentum on the device)
 * against optim_sgd_step on the CPU over the same parameters, gradients and momentum:
 * 6 steps with lr changes (momentum correction), weight decay 0.01 skipped on the no_decay
 * segments (BN gamma/beta, FC bias), Nesterov and plain momentum, fp32 and bf16 nets.
 * Tolerance: none. Both sides run optim_sgd_elem (optim/sgd_elem.h) with every float
 * operation rounded on its own (__fmul_rn/__fadd_rn on the device, -ffp-contract=off on the
 * host) on the same float inputs, so parameters and momentum must be bit-identical; on
 * failure the test prints how many elements differ and the largest difference.
 * Also checked:
 *   - the host mirrors: midway, model_params / model_sgd_momentum equal the CPU's (fetched
 *     from the device), and a write through the momentum view (x0.5 on both sides) is
 *     uploaded before the next step;
 *   - the bf16 weight copy (and the stem's padded weights) that forward reads are refreshed by
 *     the kernel: eval logits right after the SGD steps equal those after a full re-upload of
 *     the same parameters (model_params marks them written), within 1e-6 of the largest
 *     logit, while the last SGD step itself moved the logits by far more.
 * Exit 77 without a device.
 */
#include <stdlib.h>
#include <string.h>

#include "model/graph.h"
#include "model/model.h"
#include "optim/sgd.h"
#include "tests/model/fd_check.h"

enum { STEPS = 6 };

static void cmp_bits(const char *what, const float *got, const float *ref, size_t n)
{
    size_t diff = 0;
    double maxd = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &ref[i], sizeof(float))) {
            diff++;
            maxd = fmax(maxd, fabs((double)got[i] - ref[i]));
        }
    CHECK(diff == 0, "%s: %zu of %zu elements differ from the CPU (max |diff| %.3g)", what, diff, n, maxd);
}

static void run(const char *arch, int width, int size, model_precision prec, int nesterov)
{
    const int n = 4, classes = 10;
    model_cfg cfg = {arch, classes, size, n, MODEL_BACKEND_CUDA, 0.1f, 1e-5f};
    model_net *m = NULL;
    optim_sgd *og = NULL, *oc = NULL;
    float *pc = NULL, *g = NULL, *l0 = NULL, *l1 = NULL, *l2 = NULL;
    uint8_t *img = NULL;
    char name[96];
    snprintf(name, sizeof name, "%s_w%d@%d %s %s", arch, width, size, prec == MODEL_PREC_BF16 ? "bf16" : "fp32",
             nesterov ? "nesterov" : "plain");
    CHECK(model_net_create_full(&m, &cfg, width, prec) == IH_OK, "%s: %s", name, ih_last_error());
    if (!m) return;
    model_init_params(m, 5);
    const size_t np = model_num_params(m);
    const model_param_seg *ms;
    const size_t ns = model_param_segments(m, &ms);
    optim_seg *segs = calloc(ns, sizeof *segs);
    int ndecay = 0;
    for (size_t i = 0; i < ns; i++) {
        segs[i] = (optim_seg){ms[i].offset, ms[i].count, ms[i].no_decay};
        ndecay += !ms[i].no_decay;
    }
    CHECK(ndecay > 0 && ndecay < (int)ns, "%s: both kinds of segments", name);
    optim_sgd_cfg oc_cfg = {.momentum = 0.9f, .weight_decay = 1e-2f, .nesterov = nesterov, .momentum_correction = 1};
    CHECK(optim_sgd_create(&og, np, segs, ns, &oc_cfg) == IH_OK, "%s", ih_last_error());
    CHECK(optim_sgd_create(&oc, np, segs, ns, &oc_cfg) == IH_OK, "%s", ih_last_error());
    pc = malloc(np * sizeof(float));
    g = malloc(np * sizeof(float));
    const size_t nimg = (size_t)n * size * size * 3, nl = (size_t)n * classes;
    img = malloc(nimg);
    l0 = malloc(nl * sizeof(float));
    l1 = malloc(nl * sizeof(float));
    l2 = malloc(nl * sizeof(float));
    if (!og || !oc || !pc || !g || !img || !l0 || !l1 || !l2) {
        CHECK(0, "%s: setup", name);
        goto out;
    }
    memcpy(pc, model_params(m), np * sizeof(float));
    ih_rng r = ih_rng_make(23, (uint64_t)prec, (uint64_t)nesterov);
    for (size_t i = 0; i < nimg; i++) img[i] = (uint8_t)ih_rng_below(&r, 256);
    const double lrs[STEPS] = {0.1, 0.1, 0.4, 0.4, 0.04, 0.2};
    for (int t = 0; t < STEPS; t++) {
        for (size_t i = 0; i < np; i++) g[i] = (float)(0.1 * ih_rng_normal(&r));
        memcpy(model_grads(m), g, np * sizeof(float)); /* the host view: uploaded before the SGD */
        if (t == STEPS - 1) CHECK(model_eval_logits(m, img, n, l0) == IH_OK, "%s: eval: %s", name, ih_last_error());
        CHECK(model_sgd_step(m, og, lrs[t]) == IH_OK, "%s: step %d: %s", name, t, ih_last_error());
        optim_sgd_step(oc, pc, g, lrs[t]);
        if (t == 2) { /* a checkpoint's view midway, then a write through it */
            cmp_bits("params after 3 steps (host mirror)", model_params(m), pc, np);
            float *u = model_sgd_momentum(m, og), *uc = optim_sgd_momentum(oc);
            cmp_bits("momentum after 3 steps (host mirror)", u, uc, np);
            for (size_t i = 0; i < np; i++) {
                u[i] *= 0.5f;
                uc[i] *= 0.5f;
            }
        }
    }
    CHECK(optim_sgd_prev_lr(og) == lrs[STEPS - 1], "%s: prev lr", name);
    CHECK(model_eval_logits(m, img, n, l1) == IH_OK, "%s: eval: %s", name, ih_last_error());
    char what[160];
    snprintf(what, sizeof what, "%s: params after %d steps", name, STEPS);
    cmp_bits(what, model_params(m), pc, np); /* model_params also marks them written */
    snprintf(what, sizeof what, "%s: momentum after %d steps", name, STEPS);
    cmp_bits(what, model_sgd_momentum(m, og), optim_sgd_momentum(oc), np);
    CHECK(model_eval_logits(m, img, n, l2) == IH_OK, "%s: eval: %s", name, ih_last_error());
    double scale = 0, d12 = 0, d01 = 0;
    for (size_t i = 0; i < nl; i++) {
        scale = fmax(scale, fabs(l2[i]));
        d12 = fmax(d12, fabs((double)l1[i] - l2[i]));
        d01 = fmax(d01, fabs((double)l0[i] - l1[i]));
    }
    printf("%s: logits moved %.3g by the last SGD step; kernel-refreshed vs re-uploaded weights "
           "differ by %.3g (scale %.3g)\n", name, d01, d12, scale);
    CHECK(d12 <= 1e-6 * scale && !isnan(d12), "%s: forward after the device SGD reads stale weights: "
          "logits differ by %.3g from a re-upload of the same parameters (scale %.3g)", name, d12, scale);
    CHECK(d01 > 1e-3 * scale, "%s: the last SGD step should move the logits (%.3g)", name, d01);
out:
    free(segs);
    free(pc);
    free(g);
    free(img);
    free(l0);
    free(l1);
    free(l2);
    optim_sgd_destroy(og);
    optim_sgd_destroy(oc);
    model_net_destroy(m);
}

int main(void)
{
    char why[200];
    if (!model_backend_available(MODEL_BACKEND_CUDA, why, sizeof why)) SKIP("%s", why);
    for (int nesterov = 1; nesterov >= 0; nesterov--) {
        run("resnet8", 0, 16, MODEL_PREC_FP32, nesterov);
        run("resnet8", 0, 16, MODEL_PREC_BF16, nesterov);
    }
    run("resnet50", 4, 64, MODEL_PREC_BF16, 1); /* ImageNet stem (padded weights), bottlenecks */
    return ih_test_result();
}
