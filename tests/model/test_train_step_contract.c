/* test_train_step_contract — model.h's promises for model_train_step / model_eval_logits:
 * gradients are ADDED (two steps = twice one step), scale linearly with loss_scale, are
 * bit-identical for the same seed and batch; errors are reported with the right code
 * (unknown arch and CUDA backend: USAGE; batch > max_batch: USAGE; bad label: DATA; BN on a
 * 1x1 map with batch 1: USAGE); eval uses (and does not change) the running statistics,
 * which training updates; the initial loss is about n*ln(classes); and a few plain SGD
 * steps learn an easy two-class problem (a smoke test of the whole step).
 * --backend=cuda [--prec=bf16] runs the same checks on the CUDA backend (fp32 exact mode by
 * default: bit-identical repeats need its deterministic algorithms); exit 77 without a device.
 * Without a usable CUDA backend, asking for one must fail with IH_E_CUDA. */
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "tests/model/fd_check.h"

enum { S = 16, N = 8, K = 4 };

static void make_batch(uint8_t *img, int32_t *lab, int n, uint64_t seed)
{
    ih_rng r = ih_rng_make(seed, 0, 0);
    for (int i = 0; i < n; i++) {
        lab[i] = (int32_t)(i % 2);
        for (int p = 0; p < S * S * 3; p++) /* class 1 bright, class 0 dark, plus noise */
            img[(size_t)i * S * S * 3 + p] = (uint8_t)((lab[i] ? 150 : 60) + ih_rng_below(&r, 60));
    }
}

int main(int argc, char **argv)
{
    model_backend be = MODEL_BACKEND_CPU;
    model_precision prec = MODEL_PREC_FP32;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--backend=cuda")) be = MODEL_BACKEND_CUDA;
        else if (!strcmp(argv[i], "--prec=bf16")) prec = MODEL_PREC_BF16;
        else if (strcmp(argv[i], "--backend=cpu")) {
            fprintf(stderr, "usage: %s [--backend=cpu|cuda] [--prec=bf16]\n", argv[0]);
            return 2;
        }
    }
    char why[200];
    if (!model_backend_available(be, why, sizeof why)) SKIP("%s", why);
    model_cfg cfg = {"resnet8", K, S, N, be, 0.1f, 1e-5f};
    model_net *m = NULL, *m2 = NULL, *bad = NULL;
    model_cfg c2 = cfg;
    c2.arch = "vgg16";
    CHECK(model_net_create(&bad, &c2) == IH_E_USAGE && bad == NULL, "unknown arch");
    c2 = cfg;
    c2.backend = MODEL_BACKEND_CUDA;
    if (!model_backend_available(MODEL_BACKEND_CUDA, NULL, 0))
        CHECK(model_net_create(&bad, &c2) == IH_E_CUDA && bad == NULL &&
                  strstr(ih_last_error(), "CUDA") != NULL,
              "no usable CUDA backend: IH_E_CUDA naming it (%s)", ih_last_error());
    CHECK(model_net_create_prec(&m, &cfg, prec) == IH_OK, "%s", ih_last_error());
    CHECK(model_net_create_prec(&m2, &cfg, prec) == IH_OK, "%s", ih_last_error());
    if (!m || !m2) return ih_test_result();
    model_init_params(m, 9);
    model_init_params(m2, 9);
    size_t np = model_num_params(m), ns = model_num_state(m);
    uint8_t img[N * S * S * 3];
    int32_t lab[N];
    make_batch(img, lab, N, 1);

    double loss;
    int correct;
    model_zero_grads(m);
    CHECK(model_train_step(m, img, lab, N, 1.0f, &loss, &correct) == IH_OK, "%s", ih_last_error());
    CHECK(fabs(loss / N - log((double)K)) < 0.05, "initial loss per sample %g vs ln K %g", loss / N,
          log((double)K));
    float *g1 = malloc(np * sizeof(float)), *s1 = malloc(ns * sizeof(float));
    memcpy(g1, model_grads(m), np * sizeof(float));
    memcpy(s1, model_state(m), ns * sizeof(float));
    CHECK(model_train_step(m, img, lab, N, 1.0f, NULL, NULL) == IH_OK, "second step");
    /* float rounding differs between the runs: tolerance relative to the largest gradient */
    double gmax = 0;
    for (size_t i = 0; i < np; i++) gmax = fmax(gmax, fabs(g1[i]));
    size_t bad_acc = 0;
    for (size_t i = 0; i < np; i++) bad_acc += !ih_close(model_grads(m)[i], 2.0 * g1[i], 1e-6 * gmax, 1e-5);
    CHECK(bad_acc == 0, "gradients must accumulate: %zu of %zu differ from 2x", bad_acc, np);

    model_zero_grads(m2);
    CHECK(model_train_step(m2, img, lab, N, 3.0f, NULL, NULL) == IH_OK, "scaled step");
    size_t bad_scale = 0;
    for (size_t i = 0; i < np; i++) bad_scale += !ih_close(model_grads(m2)[i], 3.0 * g1[i], 3e-6 * gmax, 1e-5);
    CHECK(bad_scale == 0, "loss_scale must scale gradients: %zu differ", bad_scale);
    model_init_params(m2, 9);
    model_zero_grads(m2);
    model_train_step(m2, img, lab, N, 1.0f, NULL, NULL);
    CHECK(!memcmp(model_grads(m2), g1, np * sizeof(float)), "same seed and batch: same bits");

    /* running stats: changed by training, used and untouched by eval */
    int moved = 0;
    for (size_t i = 0; i < ns; i++) moved += s1[i] != (i % 2 ? 1.0f : 0.0f);
    CHECK(moved > 0, "training must update running statistics");
    float lg[N * K], lg2[N * K];
    memcpy(s1, model_state(m), ns * sizeof(float));
    CHECK(model_eval_logits(m, img, N, lg) == IH_OK, "eval");
    CHECK(!memcmp(s1, model_state(m), ns * sizeof(float)), "eval must not change the state");
    CHECK(model_eval_logits(m, img, N, lg2) == IH_OK && !memcmp(lg, lg2, sizeof lg), "eval repeatable");
    for (size_t i = 0; i < ns; i++) model_state(m)[i] *= 1.5f;
    CHECK(model_eval_logits(m, img, N, lg2) == IH_OK && memcmp(lg, lg2, sizeof lg) != 0,
          "eval must use the running statistics");

    /* errors */
    CHECK(model_train_step(m, img, lab, N + 1, 1.0f, NULL, NULL) == IH_E_USAGE, "batch > max");
    CHECK(model_eval_logits(m, img, 0, lg) == IH_E_USAGE, "batch 0");
    int32_t badlab[N];
    memcpy(badlab, lab, sizeof lab);
    badlab[3] = K;
    CHECK(model_train_step(m, img, badlab, N, 1.0f, NULL, NULL) == IH_E_DATA, "label out of range");
    CHECK(strstr(ih_last_error(), "sample 3") != NULL, "message names the sample: %s", ih_last_error());
    model_cfg c3 = {"resnet18", 3, 32, 2, be, 0.1f, 1e-5f};
    model_net *r18;
    CHECK(model_net_create(&r18, &c3) == IH_OK, "%s", ih_last_error());
    uint8_t im1[32 * 32 * 3] = {0};
    int32_t l1 = 0;
    CHECK(model_train_step(r18, im1, &l1, 1, 1.0f, NULL, NULL) == IH_E_USAGE, "BN on 1x1 with batch 1");
    model_net_destroy(r18);

    /* learn: plain SGD on the bright/dark task */
    model_init_params(m, 1);
    double first = 0, last = 0;
    for (int step = 0; step < 25; step++) {
        make_batch(img, lab, N, 100 + (uint64_t)step);
        model_zero_grads(m);
        CHECK(model_train_step(m, img, lab, N, 1.0f / N, &loss, &correct) == IH_OK, "train");
        if (step == 0) first = loss;
        last = loss;
        float *p = model_params(m), *g = model_grads(m);
        for (size_t i = 0; i < np; i++) p[i] -= 0.1f * g[i];
    }
    CHECK(last < 0.3 * first, "25 SGD steps should learn bright vs dark: loss %g -> %g", first, last);
    free(g1);
    free(s1);
    model_net_destroy(m);
    model_net_destroy(m2);
    return ih_test_result();
}
