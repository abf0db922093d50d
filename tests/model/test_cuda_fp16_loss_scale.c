/* test_cuda_fp16_loss_scale — MODEL_PREC_FP16's dynamic loss scaling (model.h):
 *   - the scale starts at 2^16, accepts only powers of two in [1, 2^24], and exists only on
 *     fp16 nets (an fp32 net reports 1 and refuses to set one);
 *   - parameter gradients come out unscaled: the same step at S = 2^10 and S = 2^6 gives the
 *     same gradients up to fp16 rounding (relative L2 <= 1e-2, norm ratio within 1%; a scale
 *     left in would differ by 16x);
 *   - an overflowed step (loss scale 1e38: the logits' gradient is inf) is skipped by
 *     model_sgd_step: parameters bit-identical, momentum only corrected for the lr change
 *     (u x lr_new/lr_old, bit for bit), the skip counted, S halved; the next step then
 *     equals the CPU optimizer given the same history, bit for bit;
 *   - the fp16 weight copy is refreshed by the SGD kernel (eval equals eval after a re-upload).
 * Exit 77 without a device.
 */
#include <stdlib.h>
#include <string.h>

#include "model/graph.h"
#include "model/model.h"
#include "optim/sgd.h"
#include "tests/model/fd_check.h"

enum { S = 16, N = 8, K = 10 };

static int same_bits(const float *a, const float *b, size_t n) { return !memcmp(a, b, n * sizeof(float)); }

static int step(model_net *m, const uint8_t *img, const int32_t *lab, float scale)
{
    model_zero_grads(m);
    ih_err e = model_train_step(m, img, lab, N, scale, NULL, NULL);
    CHECK(e == IH_OK, "step: %s", ih_last_error());
    return e == IH_OK;
}

int main(void)
{
    char why[200];
    if (!model_backend_available(MODEL_BACKEND_CUDA, why, sizeof why)) SKIP("%s", why);
    model_cfg cfg = {"resnet8", K, S, N, MODEL_BACKEND_CUDA, 0.1f, 1e-5f};
    model_net *m = NULL, *f32 = NULL;
    CHECK(model_net_create_prec(&m, &cfg, MODEL_PREC_FP16) == IH_OK, "%s", ih_last_error());
    CHECK(model_net_create_prec(&f32, &cfg, MODEL_PREC_FP32) == IH_OK, "%s", ih_last_error());
    if (!m || !f32) return ih_test_result();
    CHECK(model_net_precision(m) == MODEL_PREC_FP16, "precision");
    int64_t skipped = -1;
    CHECK(model_loss_scale(m, &skipped) == 65536.0 && skipped == 0, "initial scale %g, skipped %lld",
          model_loss_scale(m, NULL), (long long)skipped);
    CHECK(model_set_loss_scale(m, 1000) == IH_E_USAGE, "1000 is not a power of two");
    CHECK(model_set_loss_scale(m, 33554432.0) == IH_E_USAGE, "2^25 is above the range");
    CHECK(model_set_loss_scale(f32, 1024) == IH_E_USAGE && model_loss_scale(f32, NULL) == 1.0, "fp32: no scale");
    model_net_destroy(f32);

    model_init_params(m, 6);
    const size_t np = model_num_params(m);
    const model_param_seg *ms;
    const size_t ns = model_param_segments(m, &ms);
    optim_seg *segs = calloc(ns, sizeof *segs);
    float *p = model_params(m);
    ih_rng r = ih_rng_make(41, 0, 0);
    for (size_t s = 0; s < ns; s++) {
        segs[s] = (optim_seg){ms[s].offset, ms[s].count, ms[s].no_decay};
        for (size_t i = 0; i < ms[s].count; i++) { /* no dead residual branches */
            if (ms[s].kind == MODEL_PARAM_BN_GAMMA) p[ms[s].offset + i] = (float)(0.5 + ih_rng_uniform(&r));
            if (ms[s].kind == MODEL_PARAM_BN_BETA) p[ms[s].offset + i] = (float)(0.2 * ih_rng_normal(&r));
        }
    }
    uint8_t img[N * S * S * 3];
    int32_t lab[N];
    for (size_t i = 0; i < sizeof img; i++) img[i] = (uint8_t)ih_rng_below(&r, 256);
    for (int i = 0; i < N; i++) lab[i] = (int32_t)ih_rng_below(&r, K);
    float *g1 = malloc(np * sizeof(float)), *g = malloc(np * sizeof(float)), *pr = malloc(np * sizeof(float));
    float *ur = NULL, *l1 = malloc(N * K * sizeof(float)), *l2 = malloc(N * K * sizeof(float));
    optim_sgd *o = NULL, *ref = NULL;
    optim_sgd_cfg oc = {.momentum = 0.9f, .weight_decay = 1e-2f, .nesterov = 1, .momentum_correction = 1};
    CHECK(optim_sgd_create(&o, np, segs, ns, &oc) == IH_OK && optim_sgd_create(&ref, np, segs, ns, &oc) == IH_OK,
          "%s", ih_last_error());
    if (!g1 || !g || !pr || !l1 || !l2 || !o || !ref) goto out;

    /* unscaled gradients */
    CHECK(model_set_loss_scale(m, 1024) == IH_OK, "%s", ih_last_error());
    if (!step(m, img, lab, 1.0f / N)) goto out;
    memcpy(g1, model_grads(m), np * sizeof(float));
    CHECK(model_set_loss_scale(m, 64) == IH_OK && model_loss_scale(m, NULL) == 64.0, "set 64");
    if (!step(m, img, lab, 1.0f / N)) goto out;
    {
        const float *g2 = model_grads(m);
        double num = 0, a2 = 0, b2 = 0;
        for (size_t i = 0; i < np; i++) {
            num += ((double)g1[i] - g2[i]) * ((double)g1[i] - g2[i]);
            a2 += (double)g1[i] * g1[i];
            b2 += (double)g2[i] * g2[i];
        }
        const double l2r = sqrt(num / b2), ratio = sqrt(a2 / b2);
        printf("gradients at S=1024 vs S=64: relative L2 %.3g, norm ratio %.6f\n", l2r, ratio);
        CHECK(l2r <= 1e-2 && fabs(ratio - 1) <= 1e-2, "the loss scale must not reach the gradients: rel L2 %.3g, "
              "norm ratio %.6f", l2r, ratio);
    }

    /* A: a normal step, B: overflow (skipped), C: normal again; the CPU optimizer alongside */
    CHECK(model_set_loss_scale(m, 1024) == IH_OK, "%s", ih_last_error());
    memcpy(pr, model_params(m), np * sizeof(float));
    if (!step(m, img, lab, 1.0f / N)) goto out;
    memcpy(g, model_grads(m), np * sizeof(float));
    CHECK(model_sgd_step(m, o, 0.1) == IH_OK, "%s", ih_last_error());
    optim_sgd_step(ref, pr, g, 0.1);
    CHECK(model_loss_scale(m, &skipped) == 1024.0 && skipped == 0, "A: scale %g skipped %lld",
          model_loss_scale(m, NULL), (long long)skipped);
    CHECK(same_bits(model_params(m), pr, np), "A: device SGD == CPU");

    if (!step(m, img, lab, 1e38f)) goto out; /* dz = inf */
    {
        const float *gb = model_grads(m);
        size_t bad = 0;
        for (size_t i = 0; i < np; i++) bad += !isfinite(gb[i]);
        CHECK(bad > 0, "B: a loss scale of 1e38 should overflow the gradients");
    }
    CHECK(model_sgd_step(m, o, 0.2) == IH_OK, "%s", ih_last_error());
    ur = optim_sgd_momentum(ref);
    const float c = (float)(0.2 / 0.1);
    for (size_t i = 0; i < np; i++) ur[i] *= c; /* the skipped step's momentum correction */
    optim_sgd_set_prev_lr(ref, 0.2);
    CHECK(model_loss_scale(m, &skipped) == 512.0 && skipped == 1, "B: scale %g (want 512), skipped %lld",
          model_loss_scale(m, NULL), (long long)skipped);
    CHECK(same_bits(model_params(m), pr, np), "B: an overflowed step must not change the parameters");
    CHECK(same_bits(model_sgd_momentum(m, o), ur, np), "B: the momentum gets only the lr correction");

    if (!step(m, img, lab, 1.0f / N)) goto out;
    memcpy(g, model_grads(m), np * sizeof(float));
    CHECK(model_sgd_step(m, o, 0.2) == IH_OK, "%s", ih_last_error());
    optim_sgd_step(ref, pr, g, 0.2);
    CHECK(model_eval_logits(m, img, N, l1) == IH_OK, "%s", ih_last_error());
    CHECK(same_bits(model_params(m), pr, np), "C: device SGD after a skip == CPU");
    CHECK(same_bits(model_sgd_momentum(m, o), optim_sgd_momentum(ref), np), "C: momentum");
    CHECK(model_loss_scale(m, &skipped) == 512.0 && skipped == 1, "C: scale %g skipped %lld",
          model_loss_scale(m, NULL), (long long)skipped);
    CHECK(model_eval_logits(m, img, N, l2) == IH_OK, "%s", ih_last_error()); /* params re-uploaded */
    double d = 0, sc = 0;
    for (int i = 0; i < N * K; i++) {
        d = fmax(d, fabs((double)l1[i] - l2[i]));
        sc = fmax(sc, fabs(l2[i]));
    }
    CHECK(d <= 1e-6 * sc && !isnan(d), "the SGD kernel must refresh the fp16 weights (logits differ by %.3g)", d);
out:
    free(segs);
    free(g1);
    free(g);
    free(pr);
    free(l1);
    free(l2);
    optim_sgd_destroy(o);
    optim_sgd_destroy(ref);
    model_net_destroy(m);
    return ih_test_result();
}
