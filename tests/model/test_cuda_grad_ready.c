/* test_cuda_grad_ready — the CUDA backend's per-layer gradient hand-over (model.h,
 * model_set_grad_ready + model_set_grad_host): with the host mirror on, each callback's newly
 * final range [offset, previous offset) must already hold, in host memory, exactly the
 * gradients that a plain step followed by a full download gives.
 * For each net and precision, with the captured CUDA graph and eagerly (IH_CUDA_GRAPH=0):
 *   reference: zero, one step (no callback), model_grads (the post-backward download);
 *   device mode: callbacks come with strictly decreasing offsets ending at 0, and each range,
 *     read from the device gradient buffer (model_device_grads) at its callback while the
 *     rest of backward still runs, equals the reference (what NCCL would reduce there);
 *   host mode: the host view is first filled with NaN, then at each callback the range is
 *     copied aside; after the step the copies must equal the reference bit for bit, and so
 *     must the host view;
 *   accumulation (virtual workers): two steps, only the second with callbacks, must equal two
 *     plain steps (the two graph variants share the device gradients).
 * Bit-identical because both steps run the same deterministic kernels on the same inputs
 * (fp32 exact mode; in bf16 IH_CUDNN_FIND=0 keeps cuDNN's heuristic algorithms, deterministic
 * ones first); where a bf16 algorithm is not deterministic the bf16 comparison falls back to
 * a relative L2 of 1e-3 per segment, far below the >= 1 of a range delivered before its
 * gradient was complete (a conv's bf16 gradient not yet added, a missed copy: NaN).
 * The graph runs use IH_CUDA_GRAPH=require, so a capture that fails is an error here instead
 * of a silent fall-back to eager launches.
 * BN gammas and betas are randomised first (the paper's zero gammas would make the gradients
 * of half the convs exactly 0 on both sides). Exit 77 without a device.
 */
#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>

#include "model/graph.h"
#include "model/model.h"
#include "tests/model/fd_check.h"

typedef struct {
    const float *host;   /* the model's host gradient view */
    const float *dev;    /* device mode: the device gradient buffer */
    float *snap;         /* the ranges as they were at their callback */
    size_t prev, np;
    int calls, order_ok, nan_seen, copy_failed;
} ready_ctx;

static void on_ready(void *arg, size_t off)
{
    ready_ctx *c = arg;
    c->calls++;
    if (!(off < c->prev)) {
        c->order_ok = 0;
        return;
    }
    if (c->dev) { /* the legacy default stream: no wait for the net's non-blocking streams */
        if (cudaMemcpy(c->snap + off, c->dev + off, (c->prev - off) * sizeof(float), cudaMemcpyDeviceToHost) !=
            cudaSuccess)
            c->copy_failed++;
    } else if (c->snap) {
        memcpy(c->snap + off, c->host + off, (c->prev - off) * sizeof(float));
        for (size_t i = off; i < c->prev; i++) c->nan_seen += isnan(c->host[i]);
    }
    c->prev = off;
}

static int step(model_net *m, const uint8_t *img, const int32_t *lab, int n)
{
    ih_err e = model_train_step(m, img, lab, n, 1.0f / (float)n, NULL, NULL);
    CHECK(e == IH_OK, "step: %s", ih_last_error());
    return e == IH_OK;
}

static void compare(const char *what, model_net *m, const float *got, const float *ref, int exact)
{
    const model_param_seg *segs;
    size_t ns = model_param_segments(m, &segs);
    size_t np = model_num_params(m), diff = 0;
    for (size_t i = 0; i < np; i++) diff += memcmp(&got[i], &ref[i], sizeof(float)) != 0;
    if (exact) {
        CHECK(diff == 0, "%s: %zu of %zu gradients differ from the post-backward download", what, diff, np);
        return;
    }
    for (size_t s = 0; s < ns; s++) {
        double num = 0, den = 0;
        for (size_t i = segs[s].offset; i < segs[s].offset + segs[s].count; i++) {
            double d = (double)got[i] - ref[i];
            num += d * d;
            den += (double)ref[i] * ref[i];
        }
        double l2 = den > 0 ? sqrt(num / den) : sqrt(num);
        CHECK(l2 <= 1e-3 && !isnan(l2), "%s: %s: relative L2 %.3g from the post-backward download",
              what, segs[s].name, l2);
    }
    if (diff) printf("%s: %zu of %zu differ in the last bits (non-deterministic bf16 algorithm)\n", what, diff, np);
}

static void run(const char *arch, int width, int size, int n, model_precision prec, int graph)
{
    const int classes = 10;
    setenv("IH_CUDA_GRAPH", graph ? "require" : "0", 1); /* read when the net is created */
    model_cfg cfg = {arch, classes, size, n, MODEL_BACKEND_CUDA, 0.1f, 1e-5f};
    model_net *m = NULL;
    char name[96];
    snprintf(name, sizeof name, "%s_w%d@%d %s %s", arch, width, size, prec == MODEL_PREC_BF16 ? "bf16" : "fp32",
             graph ? "graph" : "eager");
    CHECK(model_net_create_full(&m, &cfg, width, prec) == IH_OK, "%s: %s", name, ih_last_error());
    if (!m) return;
    model_init_params(m, 3);
    const size_t np = model_num_params(m), nimg = (size_t)n * size * size * 3;
    { /* random BN gammas/betas: with the paper's zero gammas half the gradients are exactly 0 */
        const model_param_seg *segs;
        size_t ns = model_param_segments(m, &segs);
        float *p = model_params(m);
        ih_rng rg = ih_rng_make(31, 0, 0);
        for (size_t s = 0; s < ns; s++)
            for (size_t i = 0; i < segs[s].count; i++) {
                if (segs[s].kind == MODEL_PARAM_BN_GAMMA) p[segs[s].offset + i] = (float)(0.5 + ih_rng_uniform(&rg));
                if (segs[s].kind == MODEL_PARAM_BN_BETA) p[segs[s].offset + i] = (float)(0.2 * ih_rng_normal(&rg));
            }
    }
    float *ref = malloc(np * sizeof(float)), *ref2 = malloc(np * sizeof(float)), *snap = malloc(np * sizeof(float));
    uint8_t *img = malloc(2 * nimg);
    int32_t *lab = malloc(2 * (size_t)n * sizeof(int32_t));
    if (!ref || !ref2 || !snap || !img || !lab) {
        CHECK(0, "out of memory");
        goto out;
    }
    ih_rng r = ih_rng_make(29, 0, 0);
    for (size_t i = 0; i < 2 * nimg; i++) img[i] = (uint8_t)ih_rng_below(&r, 256);
    for (int i = 0; i < 2 * n; i++) lab[i] = (int32_t)ih_rng_below(&r, classes);
    const int exact = prec == MODEL_PREC_FP32;
    char what[160];

    /* reference: plain steps, then the post-backward download */
    model_zero_grads(m);
    if (!step(m, img, lab, n)) goto out;
    memcpy(ref, model_grads(m), np * sizeof(float));
    if (!step(m, img + nimg, lab + n, n)) goto out;
    memcpy(ref2, model_grads(m), np * sizeof(float));

    /* device mode: order, and each range on the device at its callback (twice: the first use
     * of a graph key runs eagerly, the second is captured) */
    model_dev_grads dg;
    CHECK(model_device_grads(m, &dg) == IH_OK && dg.grads, "%s: model_device_grads: %s", name, ih_last_error());
    ready_ctx c = {0};
    for (int rep = 0; rep < 2 && dg.grads; rep++) {
        for (size_t i = 0; i < np; i++) snap[i] = NAN;
        c = (ready_ctx){.dev = dg.grads, .snap = snap, .prev = np, .np = np, .order_ok = 1};
        model_set_grad_host(m, 0);
        model_set_grad_ready(m, on_ready, &c);
        model_zero_grads(m);
        if (!step(m, img, lab, n)) goto out;
        model_set_grad_ready(m, NULL, NULL);
        CHECK(c.order_ok && c.prev == 0 && c.calls > 1, "%s: device mode: %d calls, order %s, last offset %zu", name,
              c.calls, c.order_ok ? "ok" : "WRONG", c.prev);
        CHECK(c.copy_failed == 0, "%s: device mode: %d reads of the device buffer failed", name, c.copy_failed);
        snprintf(what, sizeof what, "%s: device mode (run %d): ranges on the device at their callbacks", name, rep + 1);
        compare(what, m, snap, ref, exact);
    }

    /* host mode, one step, host view poisoned first */
    for (int acc = 0; acc < 2; acc++) {
        float *host = model_grads(m);
        for (size_t i = 0; i < np; i++) host[i] = NAN, snap[i] = NAN;
        model_zero_grads(m); /* device only: the host view keeps its NaN */
        model_set_grad_host(m, 1);
        c = (ready_ctx){.host = host, .snap = snap, .prev = np, .np = np, .order_ok = 1};
        if (acc) { /* a first virtual worker without callbacks */
            model_set_grad_ready(m, NULL, NULL);
            if (!step(m, img, lab, n)) goto out;
        }
        model_set_grad_ready(m, on_ready, &c);
        if (!step(m, img + (acc ? nimg : 0), lab + (acc ? n : 0), n)) goto out;
        model_set_grad_ready(m, NULL, NULL);
        CHECK(c.order_ok && c.prev == 0, "%s: host mode: order %s, last offset %zu", name,
              c.order_ok ? "ok" : "WRONG", c.prev);
        CHECK(c.nan_seen == 0, "%s%s: %d gradients not yet copied at their callback", name,
              acc ? " (accumulated)" : "", c.nan_seen);
        snprintf(what, sizeof what, "%s%s: ranges at their callbacks", name, acc ? " (accumulated)" : "");
        compare(what, m, snap, acc ? ref2 : ref, exact);
        snprintf(what, sizeof what, "%s%s: host view after the step", name, acc ? " (accumulated)" : "");
        compare(what, m, model_grads(m), acc ? ref2 : ref, exact);
    }
    printf("%s: %d grad-ready points checked\n", name, c.calls);
out:
    model_set_grad_ready(m, NULL, NULL);
    free(ref);
    free(ref2);
    free(snap);
    free(img);
    free(lab);
    model_net_destroy(m);
}

int main(void)
{
    char why[200];
    if (!model_backend_available(MODEL_BACKEND_CUDA, why, sizeof why)) SKIP("%s", why);
    setenv("IH_CUDNN_FIND", "0", 1);
    for (int graph = 1; graph >= 0; graph--) {
        run("resnet8", 0, 16, 8, MODEL_PREC_FP32, graph);
        run("resnet8", 0, 16, 8, MODEL_PREC_BF16, graph);
        run("resnet50", 4, 64, 4, MODEL_PREC_BF16, graph);
    }
    run("resnet50", 4, 64, 4, MODEL_PREC_FP32, 1);
    return ih_test_result();
}
