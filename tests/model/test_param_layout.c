/* test_param_layout — the flat parameter table: segments are contiguous and cover the
 * buffer, names are unique and torchvision-like (stem first, fc.weight/fc.bias last),
 * no_decay marks exactly BN gamma/beta and the FC bias, parameter counts equal torchvision's
 * resnet18/34/50/101 (1000 classes), the bottleneck's stride sits on its 3x3 conv, and
 * backward completes gradients from the END of the buffer towards its start: at every
 * grad-ready callback, grads[offset, end) already hold their final values and grads[0,
 * offset) are still untouched. */
#include <stdlib.h>
#include <string.h>

#include "model/graph.h"
#include "model/model.h"
#include "tests/model/fd_check.h"

static void check_segments(const model_graph *g, const char *arch)
{
    size_t off = 0, bad_nd = 0, dup = 0;
    for (int i = 0; i < g->nsegs; i++) {
        const model_param_seg *s = &g->segs[i];
        CHECK(s->offset == off && s->count > 0, "%s: segment %d (%s) at %zu, expected %zu", arch, i,
              s->name, s->offset, off);
        off = s->offset + s->count;
        int want = s->kind == MODEL_PARAM_BN_GAMMA || s->kind == MODEL_PARAM_BN_BETA ||
                   s->kind == MODEL_PARAM_FC_B;
        bad_nd += s->no_decay != want;
        for (int j = 0; j < i; j++) dup += !strcmp(g->segs[j].name, s->name);
    }
    CHECK(off == g->nparams, "%s: segments cover %zu of %zu", arch, off, g->nparams);
    CHECK(bad_nd == 0, "%s: %zu segments with a wrong no_decay flag", arch, bad_nd);
    CHECK(dup == 0, "%s: %zu duplicate names", arch, dup);
    CHECK(!strcmp(g->segs[0].name, "conv1.weight"), "%s: first is %s", arch, g->segs[0].name);
    CHECK(!strcmp(g->segs[g->nsegs - 2].name, "fc.weight") &&
          !strcmp(g->segs[g->nsegs - 1].name, "fc.bias"), "%s: fc must be last", arch);
}

typedef struct {
    model_net *m;
    size_t calls, last, bad_order, bad_below;
    double *sums; /* sum of grads[offset, end) at each call */
    size_t *offs;
} watch;

static void on_ready(void *arg, size_t offset)
{
    watch *w = arg;
    const float *g = model_grads(w->m);
    size_t n = model_num_params(w->m);
    if (w->calls && offset >= w->last) w->bad_order++;
    for (size_t i = 0; i < offset; i++) w->bad_below += g[i] != 0.0f;
    double s = 0;
    for (size_t i = offset; i < n; i++) s += g[i];
    if (w->calls < 4096) {
        w->sums[w->calls] = s;
        w->offs[w->calls] = offset;
    }
    w->last = offset;
    w->calls++;
}

int main(void)
{
    static const struct { const char *arch; size_t torchvision; } tv[] = {
        {"resnet18", 11689512}, {"resnet34", 21797672}, {"resnet50", 25557032}, {"resnet101", 44549160}};
    for (int i = 0; i < 4; i++) {
        model_graph *g;
        CHECK(model_graph_build(&g, tv[i].arch, 224, 1000, 0) == IH_OK, "%s", ih_last_error());
        CHECK(g->nparams == tv[i].torchvision, "%s: %zu params, torchvision has %zu", tv[i].arch,
              g->nparams, tv[i].torchvision);
        check_segments(g, tv[i].arch);
        const model_shape *last = &g->tensors[g->layers[g->nlayers - 3].out];
        CHECK(last->h == 7 && last->w == 7 && last->c == (i < 2 ? 512 : 2048),
              "%s: last feature map %dx%dx%d", tv[i].arch, last->h, last->w, last->c);
        if (i == 2) /* the downsampling bottleneck: stride on conv2 (3x3), not conv1 (1x1) */
            for (int l = 0; l < g->nlayers; l++) {
                const model_layer *L = &g->layers[l];
                if (L->op != MODEL_OP_CONV) continue;
                const char *name = NULL;
                for (int s = 0; s < g->nsegs; s++)
                    if (g->segs[s].offset == L->w_off) name = g->segs[s].name;
                if (name && !strcmp(name, "layer2.0.conv1.weight")) CHECK(L->stride == 1, "conv1 stride");
                if (name && !strcmp(name, "layer2.0.conv2.weight")) CHECK(L->stride == 2 && L->r == 3, "conv2 stride");
            }
        model_graph_destroy(g);
    }
    model_graph *g;
    CHECK(model_graph_build(&g, "resnet20", 32, 10, 0) == IH_OK, "resnet20");
    check_segments(g, "resnet20");
    /* 0.27M as in He et al. with option-B projections: 269,722 + 2 (1x1 conv + BN) */
    CHECK(g->nparams == 269722 + 16 * 32 + 32 * 64 + 2 * (32 + 64), "resnet20: %zu", g->nparams);
    model_graph_destroy(g);
    CHECK(model_graph_build(&g, "resnet19", 32, 10, 0) == IH_E_USAGE, "unknown arch");
    CHECK(strstr(ih_last_error(), "resnet50") != NULL, "message lists the known archs: %s", ih_last_error());

    /* backward order through the public API */
    model_cfg cfg = {"resnet14", 4, 16, 3, MODEL_BACKEND_CPU, 0.1f, 1e-5f};
    watch w = {0};
    w.sums = calloc(4096, sizeof(double));
    w.offs = calloc(4096, sizeof(size_t));
    CHECK(model_net_create(&w.m, &cfg) == IH_OK, "%s", ih_last_error());
    model_init_params(w.m, 3);
    uint8_t img[3 * 16 * 16 * 3];
    for (size_t i = 0; i < sizeof img; i++) img[i] = (uint8_t)(i * 37 % 251);
    int32_t lab[3] = {0, 3, 1};
    model_zero_grads(w.m);
    model_set_grad_ready(w.m, on_ready, &w);
    CHECK(model_train_step(w.m, img, lab, 3, 1.0f, NULL, NULL) == IH_OK, "%s", ih_last_error());
    const model_param_seg *segs;
    size_t ns = model_param_segments(w.m, &segs);
    CHECK(w.calls > ns / 3 && w.last == 0, "callbacks %zu, last offset %zu", w.calls, w.last);
    CHECK(w.bad_order == 0, "offsets must strictly decrease (%zu violations)", w.bad_order);
    CHECK(w.bad_below == 0, "%zu gradients below a ready offset were already written", w.bad_below);
    size_t n = model_num_params(w.m), changed = 0;
    for (size_t c = 0; c < w.calls && c < 4096; c++) {
        double s = 0;
        for (size_t i = w.offs[c]; i < n; i++) s += model_grads(w.m)[i];
        changed += s != w.sums[c];
    }
    CHECK(changed == 0, "%zu ready ranges changed after their callback", changed);
    model_set_grad_ready(w.m, NULL, NULL);
    model_net_destroy(w.m);
    free(w.sums);
    free(w.offs);
    return ih_test_result();
}
