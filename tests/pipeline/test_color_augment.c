/* test_color_augment — fb.resnet.torch's colour jitter and PCA lighting (augment.h), as a
 * pure function of (seed, epoch, sample): switched off it is the identity; the same key gives
 * the same bytes and other keys other bytes; every jitter alpha lies in [1-v, 1+v] and is
 * uniform (mean 1, variance v^2/3); brightness scales, saturation keeps grey pixels, contrast
 * keeps the mean grey level; the RandomOrder permutation takes all 6 orders; the lighting
 * offset, projected on ImageNet's eigenvectors, has std 255 * eigval * alphastd; and applying
 * the map to an image equals a float64 evaluation of the steps one after another. */
#define _GNU_SOURCE
#include <math.h>
#include <string.h>

#include "core/rng.h"
#include "pipeline/augment.h"
#include "tests/check.h"

enum { S = 20000, NPIX = 40 * 30 };

static const double grey_w[3] = {0.299, 0.587, 0.114};

/* Float64 reference of one step sequence, written here from the fb.resnet.torch definitions:
 * img in 0..255 doubles, steps in `order` with alphas `a`, then the lighting offset `t`. */
static void ref_chain(double *img, int n, const int *order, const double *a, int nsteps, const double *t)
{
    for (int s = 0; s < nsteps; s++) {
        double mean_grey = 0;
        for (int i = 0; i < n; i++) mean_grey += grey_w[0] * img[3 * i] + grey_w[1] * img[3 * i + 1] + grey_w[2] * img[3 * i + 2];
        mean_grey /= n;
        for (int i = 0; i < n; i++) {
            double g = grey_w[0] * img[3 * i] + grey_w[1] * img[3 * i + 1] + grey_w[2] * img[3 * i + 2];
            for (int c = 0; c < 3; c++) {
                double x = img[3 * i + c], blend = order[s] == 0 ? 0 : order[s] == 1 ? mean_grey : g;
                img[3 * i + c] = a[s] * x + (1 - a[s]) * blend;
            }
        }
    }
    for (int i = 0; i < n; i++)
        for (int c = 0; c < 3; c++) img[3 * i + c] += t[c];
}

int main(void)
{
    double M[9], t[3], mean[3] = {120, 100, 80};
    /* Off: identity map, and apply leaves the image alone. */
    pipe_color off = {0, 0, 0, 0};
    pipe_color_affine(1, 2, 3, &off, mean, M, t);
    for (int i = 0; i < 9; i++) CHECK(M[i] == (i % 4 == 0), "off: M[%d] = %g", i, M[i]);
    CHECK(t[0] == 0 && t[1] == 0 && t[2] == 0, "off: t != 0");
    static uint8_t img[NPIX * 3], img2[NPIX * 3], orig[NPIX * 3];
    ih_rng r = ih_rng_make(7, 7, 7);
    for (int i = 0; i < NPIX * 3; i++) orig[i] = (uint8_t)(ih_rng_u64(&r) >> 56);
    memcpy(img, orig, sizeof img);
    pipe_color_apply(1, 2, 3, &off, img, NPIX);
    CHECK(!memcmp(img, orig, sizeof img), "off: image changed");

    /* Brightness only: M = a I, a uniform in [0.6, 1.4]. */
    pipe_color br = {0.4f, 0, 0, 0};
    double sum = 0, sum2 = 0, lo = 9, hi = -9;
    for (int s = 0; s < S; s++) {
        pipe_color_affine(11, 0, (uint64_t)s, &br, mean, M, t);
        double a = M[0];
        CHECK(M[4] == a && M[8] == a && M[1] == 0 && t[0] == 0, "brightness: not a*I at sample %d", s);
        sum += a, sum2 += a * a;
        lo = fmin(lo, a), hi = fmax(hi, a);
    }
    double m = sum / S, var = sum2 / S - m * m;
    CHECK(lo >= 0.6 && hi <= 1.4 && lo < 0.61 && hi > 1.39, "brightness alpha range [%g, %g]", lo, hi);
    CHECK(fabs(m - 1) < 0.01, "brightness alpha mean %g", m);
    CHECK(fabs(var - 0.16 / 3) < 0.003, "brightness alpha variance %g, want %g", var, 0.16 / 3);

    /* Saturation only: grey pixels are fixed points (rows of M sum to 1, t = 0). */
    pipe_color sa = {0, 0, 0.4f, 0};
    for (int s = 0; s < 200; s++) {
        pipe_color_affine(11, 0, (uint64_t)s, &sa, mean, M, t);
        for (int i = 0; i < 3; i++)
            CHECK(fabs(M[3 * i] + M[3 * i + 1] + M[3 * i + 2] - 1) < 1e-12, "saturation: row %d of M sums to %g", i,
                  M[3 * i] + M[3 * i + 1] + M[3 * i + 2]);
    }
    /* Contrast only: the mean grey level maps to itself. */
    pipe_color co = {0, 0.4f, 0, 0};
    double g0 = grey_w[0] * mean[0] + grey_w[1] * mean[1] + grey_w[2] * mean[2];
    for (int s = 0; s < 200; s++) {
        pipe_color_affine(11, 0, (uint64_t)s, &co, mean, M, t);
        double g1 = 0;
        for (int i = 0; i < 3; i++) g1 += grey_w[i] * (M[3 * i] * mean[0] + M[3 * i + 1] * mean[1] + M[3 * i + 2] * mean[2] + t[i]);
        CHECK(fabs(g1 - g0) < 1e-9, "contrast: mean grey %g -> %g", g0, g1);
    }

    /* Lighting only: t = 255 * V (alpha .* eigval), alpha ~ N(0, 0.1): project back. */
    static const double ev[3] = {0.2175, 0.0188, 0.0045};
    static const double V[3][3] = {{-0.5675, 0.7192, 0.4009}, {-0.5808, -0.0045, -0.8140}, {-0.5836, -0.6948, 0.4203}};
    pipe_color li = {0, 0, 0, 0.1f};
    double ps[3] = {0}, ps2[3] = {0};
    for (int s = 0; s < S; s++) {
        pipe_color_affine(13, 1, (uint64_t)s, &li, mean, M, t);
        CHECK(M[0] == 1 && M[4] == 1 && M[1] == 0, "lighting must not scale");
        for (int j = 0; j < 3; j++) {
            double p = (V[0][j] * t[0] + V[1][j] * t[1] + V[2][j] * t[2]) / (255 * ev[j]); /* V is ~orthonormal */
            ps[j] += p, ps2[j] += p * p;
        }
    }
    for (int j = 0; j < 3; j++) {
        double mj = ps[j] / S, sd = sqrt(ps2[j] / S - mj * mj);
        CHECK(fabs(mj) < 0.004 && fabs(sd - 0.1) < 0.005, "lighting component %d: mean %g std %g, want 0 / 0.1", j, mj,
              sd);
    }

    /* Full chain: determinism, key sensitivity, all orders, and equality with the float64
     * step-by-step reference (alphas and order recovered from the same RNG draws). */
    pipe_color all = {0.4f, 0.4f, 0.4f, 0.1f};
    int orders_seen[6] = {0}, maxdiff = 0, changed = 0;
    for (int s = 0; s < 300; s++) {
        memcpy(img, orig, sizeof img);
        memcpy(img2, orig, sizeof img);
        pipe_color_apply(21, 4, (uint64_t)s, &all, img, NPIX);
        pipe_color_apply(21, 4, (uint64_t)s, &all, img2, NPIX);
        CHECK(!memcmp(img, img2, sizeof img), "sample %d: same key, different bytes", s);
        memcpy(img2, orig, sizeof img);
        pipe_color_apply(21, 5, (uint64_t)s, &all, img2, NPIX);
        changed += memcmp(img, img2, sizeof img) != 0;
        /* Recover the draws the way augment.c defines them: order = Fisher-Yates of (0,1,2)
         * with ih_rng_below(3) then ih_rng_below(2); then one uniform per step; then 3 normals. */
        ih_rng rr = ih_rng_make(21, 4, PIPE_COLOR_STREAM | (uint64_t)s);
        int order[3] = {0, 1, 2};
        for (int i = 2; i > 0; i--) {
            int j = (int)ih_rng_below(&rr, (uint64_t)i + 1), x = order[i];
            order[i] = order[j], order[j] = x;
        }
        orders_seen[order[0] * 2 + (order[1] > order[2])]++;
        double a[3], al[3], tt[3] = {0, 0, 0};
        for (int k = 0; k < 3; k++) a[k] = 1 + (double)0.4f * (2 * ih_rng_uniform(&rr) - 1);
        for (int j = 0; j < 3; j++) al[j] = ih_rng_normal(&rr) * (double)0.1f;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) tt[i] += 255.0 * V[i][j] * al[j] * ev[j];
        static double ref[NPIX * 3];
        for (int i = 0; i < NPIX * 3; i++) ref[i] = orig[i];
        ref_chain(ref, NPIX, order, a, 3, tt);
        for (int i = 0; i < NPIX * 3; i++) {
            double v = ref[i] < 0 ? 0 : ref[i] > 255 ? 255 : ref[i];
            int d = abs((int)img[i] - (int)lround(v));
            if (d > maxdiff) maxdiff = d;
        }
    }
    CHECK(maxdiff <= 1, "chain vs float64 step-by-step reference: max diff %d levels", maxdiff);
    CHECK(changed >= 299, "another epoch changed only %d of 300 samples", changed);
    for (int k = 0; k < 6; k++) CHECK(orders_seen[k] > 20, "RandomOrder: order %d seen %d times of 300", k, orders_seen[k]);
    printf("chain vs reference: max diff %d; orders %d %d %d %d %d %d\n", maxdiff, orders_seen[0], orders_seen[1],
           orders_seen[2], orders_seen[3], orders_seen[4], orders_seen[5]);
    return ih_test_result();
}
