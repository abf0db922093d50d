/* test_resnet_grad_fd — the whole network's gradient (float64 executor, ih_model_f64) against
 * central finite differences of loss_scale * sum CE in training mode: resnet8 at 8x8 input,
 * 3 classes, batch 4. (The bottleneck/stem topologies are checked exactly against PyTorch in
 * float64 by test_resnet_vs_pytorch; by FD they need inputs too large for a quick test, since
 * BN over a handful of values per channel makes FD steps cross ReLU kinks.)
 *   1. the paper's init (last BN gamma of every block 0): a random subset of parameters plus
 *      every element of a zero-initialised gamma (whose gradient is NOT zero) and 150 of the
 *      conv feeding it (whose gradient IS zero while that gamma is 0, checked for all);
 *   2. every gamma and beta random and nonzero, so every branch carries gradient.
 * Also checks that a second backward ADDS to the gradients. */
#include <stdlib.h>
#include <string.h>

#include "model/cpu/net.h"
#include "model/graph.h"
#include "model/model.h"
#include "tests/model/fd_check.h"

typedef struct {
    model_cpu_net_f64 *x;
    double *p, *st;
    const uint8_t *img;
    const int32_t *lab;
    int n;
} ctx;

static double loss(void *v)
{
    ctx *c = v;
    double l;
    model_cpu_forward_f64(c->x, c->p, c->st, c->img, c->n, 1);
    model_cpu_loss_f64(c->x, c->lab, c->n, 0.5, &l, NULL);
    return 0.5 * l;
}

static int seg_index(const model_graph *g, const char *name)
{
    for (int i = 0; i < g->nsegs; i++)
        if (!strcmp(g->segs[i].name, name)) return i;
    return -1;
}

static void run(const char *arch, int width, int size, int classes, int n, int all_gammas,
                const char *zero_gamma_seg, const char *zero_conv_seg, int subset)
{
    model_cfg cfg = {arch, classes, size, n, MODEL_BACKEND_CPU, 0.1f, 1e-5f};
    model_net *m;
    CHECK(model_net_create_width(&m, &cfg, width) == IH_OK, "create: %s", ih_last_error());
    model_init_params(m, 11);
    const model_graph *g = model_net_graph(m);
    size_t np = g->nparams;
    ctx c = {0};
    CHECK(model_cpu_net_create_f64(&c.x, g, n, 0.1, 1e-5) == IH_OK, "f64 exec");
    c.p = malloc(np * sizeof(double));
    c.st = calloc(g->nstate + 1, sizeof(double));
    double *grad = calloc(np, sizeof(double));
    for (size_t i = 0; i < np; i++) c.p[i] = model_params(m)[i];
    ih_rng r = ih_rng_make(5, (uint64_t)all_gammas, (uint64_t)width);
    if (all_gammas)
        for (int s = 0; s < g->nsegs; s++)
            if (g->segs[s].kind == MODEL_PARAM_BN_GAMMA || g->segs[s].kind == MODEL_PARAM_BN_BETA)
                for (size_t i = 0; i < g->segs[s].count; i++)
                    c.p[g->segs[s].offset + i] = (g->segs[s].kind == MODEL_PARAM_BN_GAMMA ? 1.0 : 0.0) +
                                                 0.3 * ih_rng_normal(&r);
    uint8_t *img = malloc((size_t)n * size * size * 3);
    int32_t lab[64];
    for (size_t i = 0; i < (size_t)n * size * size * 3; i++) img[i] = (uint8_t)ih_rng_below(&r, 256);
    for (int i = 0; i < n; i++) lab[i] = (int32_t)ih_rng_below(&r, (uint64_t)classes);
    c.img = img;
    c.lab = lab;
    c.n = n;

    loss(&c);
    model_cpu_backward_f64(c.x, c.p, grad, n, NULL, NULL);

    /* indices to check: a random subset + two whole segments */
    size_t idx[4096], ni = 0;
    for (int k = 0; k < subset; k++) idx[ni++] = (size_t)ih_rng_below(&r, np);
    const char *whole[2] = {zero_gamma_seg, zero_conv_seg};
    for (int w = 0; w < 2; w++) {
        int s = seg_index(g, whole[w]);
        CHECK(s >= 0, "segment %s missing", whole[w]);
        if (s < 0) continue;
        size_t cnt = g->segs[s].count < 150 ? g->segs[s].count : 150; /* keep the test quick */
        for (size_t i = 0; i < cnt; i++) idx[ni++] = g->segs[s].offset + i;
    }
    double *an = malloc(ni * sizeof(double)), *fd = malloc(ni * sizeof(double));
    for (size_t k = 0; k < ni; k++) {
        an[k] = grad[idx[k]];
        fd_grad(loss, &c, c.p + idx[k], 1, 1e-5, fd + k);
    }
    char name[160];
    snprintf(name, sizeof name, "%s w%d %s: dL/dparam (random subset + %s + %s)", arch, width,
             all_gammas ? "all gammas random" : "paper init", zero_gamma_seg, zero_conv_seg);
    compare_arrays(name, an, fd, ni, 1e-8, 1e-5);

    int zg = seg_index(g, zero_gamma_seg), zc = seg_index(g, zero_conv_seg);
    if (zg >= 0 && zc >= 0) {
        double gmax = 0, cmax = 0;
        for (size_t i = 0; i < g->segs[zg].count; i++) gmax = fmax(gmax, fabs(grad[g->segs[zg].offset + i]));
        for (size_t i = 0; i < g->segs[zc].count; i++) cmax = fmax(cmax, fabs(grad[g->segs[zc].offset + i]));
        CHECK(gmax > 1e-6, "%s: gradient of %s must be nonzero (max %g)", name, zero_gamma_seg, gmax);
        if (all_gammas)
            CHECK(cmax > 1e-6, "%s: gradient of %s must be nonzero (max %g)", name, zero_conv_seg, cmax);
        else
            CHECK(cmax == 0, "%s: with its gamma 0, %s gets no gradient (max %g)", name, zero_conv_seg, cmax);
    }

    /* accumulation: a second step adds the same gradient */
    double *g2 = malloc(np * sizeof(double));
    memcpy(g2, grad, np * sizeof(double));
    loss(&c);
    model_cpu_backward_f64(c.x, c.p, g2, n, NULL, NULL);
    size_t bad = 0;
    for (size_t i = 0; i < np; i++)
        if (!ih_close(g2[i], 2 * grad[i], 1e-12, 1e-9)) bad++;
    CHECK(bad == 0, "%s: second backward must add: %zu of %zu differ", name, bad, np);

    free(g2);
    free(an);
    free(fd);
    free(img);
    free(grad);
    free(c.p);
    free(c.st);
    model_cpu_net_destroy_f64(c.x);
    model_net_destroy(m);
}

int main(void)
{
    for (int all = 0; all < 2; all++) {
        run("resnet8", 0, 8, 3, 4, all, "layer2.0.bn2.gamma", "layer2.0.conv2.weight", 300);
    }
    return ih_test_result();
}
