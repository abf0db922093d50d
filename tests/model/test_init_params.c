/* test_init_params — model_init_params follows the paper: He normal (fan_out) conv weights
 * with the right std within statistical bounds, FC weight N(0, 0.01), FC bias 0, BN gamma 1
 * and beta 0 except the LAST BN of every residual branch (gamma 0; never the downsample
 * BN), running mean 0 / var 1; and it is deterministic (same seed, same bytes; another seed
 * differs). Checked on CIFAR-style resnet20 and a half-width resnet50. */
#include <stdlib.h>
#include <string.h>

#include "model/graph.h"
#include "model/model.h"
#include "tests/model/fd_check.h"

static int ends_with(const char *s, const char *t)
{
    size_t a = strlen(s), b = strlen(t);
    return a >= b && !strcmp(s + a - b, t);
}

static void check_net(const char *arch, int width, int classes, int size, const char *last_bn)
{
    model_cfg cfg = {arch, classes, size, 2, MODEL_BACKEND_CPU, 0.1f, 1e-5f};
    model_net *m, *m2;
    CHECK(model_net_create_width(&m, &cfg, width) == IH_OK, "%s", ih_last_error());
    CHECK(model_net_create_width(&m2, &cfg, width) == IH_OK, "%s", ih_last_error());
    const model_graph *g = model_net_graph(m);
    model_init_params(m, 42);
    const float *p = model_params(m);
    const model_param_seg *segs;
    size_t ns = model_param_segments(m, &segs);
    double pooled = 0, pooled_mean = 0;
    size_t pooled_n = 0;
    int zero_gammas = 0, blocks = 0;
    for (size_t s = 0; s < ns; s++) {
        const float *v = p + segs[s].offset;
        size_t n = segs[s].count;
        double sum = 0, sq = 0;
        for (size_t i = 0; i < n; i++) sum += v[i], sq += (double)v[i] * v[i];
        if (segs[s].kind == MODEL_PARAM_CONV_W || segs[s].kind == MODEL_PARAM_FC_W) {
            double want = g->seg_std[s];
            if (segs[s].kind == MODEL_PARAM_CONV_W) {
                /* fan_out = k*r*s = count / c_in; recompute from the layer independently */
                int k = 0, r = 0, cin = 0;
                for (int l = 0; l < g->nlayers; l++)
                    if (g->layers[l].op == MODEL_OP_CONV && g->layers[l].w_off == segs[s].offset) {
                        k = g->layers[l].k;
                        r = g->layers[l].r;
                        cin = g->tensors[g->layers[l].in[0]].c;
                    }
                CHECK((size_t)k * r * r * cin == n, "%s: shape", segs[s].name);
                want = sqrt(2.0 / ((double)k * r * r));
            } else {
                want = 0.01;
            }
            double sd = sqrt(sq / n);
            /* sample std of n normals: relative sd ~ 1/sqrt(2n); allow 6 sigma */
            CHECK(fabs(sd / want - 1) < 6 / sqrt(2.0 * n) + 1e-3, "%s %s: std %g want %g (n %zu)",
                  arch, segs[s].name, sd, want, n);
            CHECK(fabs(sum / n) < 6 * want / sqrt((double)n), "%s %s: mean %g", arch, segs[s].name,
                  sum / n);
            for (size_t i = 0; i < n; i++) pooled += (double)v[i] * v[i] / (want * want);
            for (size_t i = 0; i < n; i++) pooled_mean += v[i] / want;
            pooled_n += n;
        } else if (segs[s].kind == MODEL_PARAM_BN_GAMMA) {
            int last = ends_with(segs[s].name, last_bn);
            blocks += last;
            float want = last ? 0.0f : 1.0f;
            size_t bad = 0;
            for (size_t i = 0; i < n; i++) bad += v[i] != want;
            zero_gammas += want == 0.0f;
            CHECK(bad == 0, "%s %s: gamma must be %g", arch, segs[s].name, want);
        } else {
            size_t bad = 0;
            for (size_t i = 0; i < n; i++) bad += v[i] != 0.0f;
            CHECK(bad == 0, "%s %s: must be 0", arch, segs[s].name);
        }
    }
    CHECK(fabs(pooled / pooled_n - 1) < 6 / sqrt(2.0 * pooled_n), "%s: pooled normalised variance %g",
          arch, pooled / pooled_n);
    CHECK(fabs(pooled_mean / pooled_n) < 6 / sqrt((double)pooled_n), "%s: pooled mean %g", arch,
          pooled_mean / pooled_n);
    CHECK(blocks > 0 && zero_gammas == blocks, "%s: %d zero gammas for %d blocks", arch, zero_gammas,
          blocks);

    const float *st = model_state(m);
    size_t bad = 0;
    for (int l = 0; l < g->nlayers; l++)
        if (g->layers[l].op == MODEL_OP_BN) {
            int c = g->tensors[g->layers[l].out].c;
            for (int j = 0; j < c; j++)
                bad += st[g->layers[l].state_off + j] != 0.0f || st[g->layers[l].state_off + c + j] != 1.0f;
        }
    CHECK(bad == 0, "%s: running mean 0 / var 1", arch);

    model_init_params(m2, 42);
    CHECK(!memcmp(model_params(m2), p, model_num_params(m) * sizeof(float)),
          "%s: same seed must give the same bytes", arch);
    model_init_params(m2, 43);
    CHECK(memcmp(model_params(m2), p, model_num_params(m) * sizeof(float)) != 0,
          "%s: another seed must differ", arch);
    model_net_destroy(m);
    model_net_destroy(m2);
}

int main(void)
{
    check_net("resnet20", 0, 10, 32, ".bn2.gamma");
    check_net("resnet50", 32, 100, 32, ".bn3.gamma");
    return ih_test_result();
}
