/* test_model_sgd_step — model_sgd_step's contract on the CPU backend (model.h): it is
 * optim_sgd_step on the model's own parameter and gradient buffers (bit for bit, over steps
 * with an lr change), model_sgd_step refuses an optimizer of another size (IH_E_USAGE, nothing
 * changed), model_sgd_momentum is the optimizer's buffer, model_sync returns at once, and a
 * model with the host gradient mirror on (model_set_grad_host) still reports every grad-ready
 * offset in order. The CUDA backend's side of the same contract is test_cuda_sgd (gpu). */
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "optim/sgd.h"
#include "tests/model/fd_check.h"

enum { S = 16, N = 4 };

static size_t g_prev;
static int g_calls, g_order_ok = 1;

static void on_ready(void *arg, size_t off)
{
    (void)arg;
    if (!(off < g_prev)) g_order_ok = 0;
    g_prev = off;
    g_calls++;
}

int main(void)
{
    model_cfg cfg = {"resnet8", 4, S, N, MODEL_BACKEND_CPU, 0.1f, 1e-5f};
    model_net *m = NULL;
    CHECK(model_net_create(&m, &cfg) == IH_OK, "%s", ih_last_error());
    if (!m) return ih_test_result();
    model_init_params(m, 2);
    const size_t np = model_num_params(m);
    const model_param_seg *ms;
    const size_t ns = model_param_segments(m, &ms);
    optim_seg *segs = calloc(ns, sizeof *segs);
    for (size_t i = 0; i < ns; i++) segs[i] = (optim_seg){ms[i].offset, ms[i].count, ms[i].no_decay};
    optim_sgd_cfg oc = {.momentum = 0.9f, .weight_decay = 1e-2f, .nesterov = 1, .momentum_correction = 1};
    optim_sgd *o = NULL, *ref = NULL, *small = NULL;
    CHECK(optim_sgd_create(&o, np, segs, ns, &oc) == IH_OK, "%s", ih_last_error());
    CHECK(optim_sgd_create(&ref, np, segs, ns, &oc) == IH_OK, "%s", ih_last_error());
    optim_seg one = {0, np - 1, 0};
    CHECK(optim_sgd_create(&small, np - 1, &one, 1, &oc) == IH_OK, "%s", ih_last_error());
    float *p = malloc(np * sizeof(float)), *g = malloc(np * sizeof(float));
    uint8_t img[N * S * S * 3];
    int32_t lab[N];
    ih_rng r = ih_rng_make(4, 0, 0);
    for (size_t i = 0; i < sizeof img; i++) img[i] = (uint8_t)ih_rng_below(&r, 256);
    for (int i = 0; i < N; i++) lab[i] = i % 4;
    if (!o || !ref || !small || !p || !g) return ih_test_result();
    memcpy(p, model_params(m), np * sizeof(float));

    const double lrs[4] = {0.1, 0.1, 0.3, 0.03};
    model_set_grad_host(m, 1);
    for (int t = 0; t < 4; t++) {
        model_zero_grads(m);
        g_prev = np;
        g_calls = 0;
        model_set_grad_ready(m, on_ready, NULL);
        CHECK(model_train_step(m, img, lab, N, 1.0f / N, NULL, NULL) == IH_OK, "%s", ih_last_error());
        model_set_grad_ready(m, NULL, NULL);
        CHECK(g_order_ok && g_prev == 0 && g_calls > 1, "step %d: grad-ready offsets (%d calls, last %zu)", t,
              g_calls, g_prev);
        memcpy(g, model_grads(m), np * sizeof(float));
        CHECK(model_sgd_step(m, o, lrs[t]) == IH_OK, "%s", ih_last_error());
        optim_sgd_step(ref, p, g, lrs[t]);
    }
    CHECK(model_sync(m) == IH_OK, "sync");
    CHECK(!memcmp(model_params(m), p, np * sizeof(float)), "model_sgd_step must be optim_sgd_step on the CPU");
    CHECK(model_sgd_momentum(m, o) == optim_sgd_momentum(o), "the momentum view is the optimizer's buffer");
    CHECK(!memcmp(optim_sgd_momentum(o), optim_sgd_momentum(ref), np * sizeof(float)), "momentum");
    CHECK(model_sgd_step(m, small, 0.1) == IH_E_USAGE, "an optimizer of another size must be refused");
    CHECK(!memcmp(model_params(m), p, np * sizeof(float)), "a refused step changes nothing");
    free(p);
    free(g);
    free(segs);
    optim_sgd_destroy(o);
    optim_sgd_destroy(ref);
    optim_sgd_destroy(small);
    model_net_destroy(m);
    return ih_test_result();
}
