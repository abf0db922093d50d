/* pipeline/resize.c — separable fixed-point tent-filter resampling (see resize.h).
 *
 * Cost for a 224x224 output from a window W pixels wide: the vertical pass is 224*W*3
 * multiply-adds per tap over contiguous uint16 (vectorized: this file is built with the
 * vectorizer on, and the hot loops are also cloned for AVX2 on x86-64 where the compiler can
 * dispatch at load time); the horizontal pass is 224*224*3 gathers per tap.
 */
#include "resize.h"

#include <math.h>

/* Not under ThreadSanitizer: ifunc resolvers run during relocation, before the TSan runtime is
 * initialised, and crash every program that links the pipeline. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__gnu_linux__) && \
    !defined(__SANITIZE_THREAD__)
#define PIPE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define PIPE_CLONES
#endif

#define QV 8  /* the intermediate row holds value * 2^QV */
#define QW 14 /* vertical weights: Q14, sum 16384; rows are (sum + 2^5) >> (QW - QV) */
#define QH 14 /* horizontal weights: Q14, sum 16384 */

static double support_of(double box, int out)
{
    double scale = box / out; /* capped so a tap list fits 64 entries */
    return scale < 2 ? 1.0 : scale < 31 ? scale : 31;
}

static int ntaps_of(double box, int out)
{
    double s = support_of(box, out);
    return s == 1.0 ? 2 : (int)ceil(2 * s) + 1;
}

static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

size_t pipe_resize_scratch_bytes(int sw, double bw, double bh, int ow, int oh)
{
    size_t tx = (size_t)ntaps_of(bw, ow) * (size_t)ow, ty = (size_t)ntaps_of(bh, oh) * (size_t)oh;
    return align16(tx * 4) + align16(tx * 2) + align16(ty * 4) + align16(ty * 2) + align16((size_t)sw * 3 * 2) + 64;
}

/* Taps for one axis: output o (stored at slot flip ? on-1-o : o) gets ntap source indices
 * (times `mul`) and weights summing to exactly 1 << q. Returns ntap. */
static int axis_taps(double b, double box, int n, int on, int flip, int q, int mul, int32_t *idx, int16_t *wt)
{
    double scale = box / on, s = support_of(box, on);
    int ntap = ntaps_of(box, on), one = 1 << q;
    for (int o = 0; o < on; o++) {
        int slot = flip ? on - 1 - o : o;
        int32_t *ix = idx + (size_t)slot * ntap;
        int16_t *w = wt + (size_t)slot * ntap;
        double c = b + (o + 0.5) * scale - 0.5, wf[64];
        int j0;
        if (ntap == 2) {
            /* Bilinear: the centre clamped into the image, then its two neighbours. */
            if (c < 0) c = 0;
            if (c > n - 1) c = n - 1;
            j0 = (int)c;
            double f = c - j0;
            wf[0] = 1 - f;
            wf[1] = f;
        } else {
            /* Tent of half-width s: taps outside the image are dropped (weights renormalized). */
            j0 = (int)floor(c - s) + 1;
            double sum = 0;
            for (int k = 0; k < ntap && k < 64; k++) {
                int j = j0 + k;
                double x = 1 - fabs(j - c) / s;
                wf[k] = x > 0 && j >= 0 && j < n ? x : 0;
                sum += wf[k];
            }
            for (int k = 0; k < ntap && k < 64; k++) wf[k] = sum > 0 ? wf[k] / sum : (k == 0);
        }
        int total = 0, big = 0;
        for (int k = 0; k < ntap; k++) {
            int j = j0 + k;
            j = j < 0 ? 0 : j >= n ? n - 1 : j;
            ix[k] = j * mul;
            w[k] = (int16_t)lround(wf[k < 64 ? k : 63] * one);
            total += w[k];
            if (w[k] > w[big]) big = k;
        }
        w[big] = (int16_t)(w[big] + one - total);
    }
    return ntap;
}

/* tmp[x] = sum_k w[k] * rows[k][x], x < n. */
PIPE_CLONES
static void vpass2(const uint8_t *restrict r0, const uint8_t *restrict r1, int w0, int w1, uint16_t *restrict tmp,
                   int n)
{
    const int round = 1 << (QW - QV - 1);
    for (int x = 0; x < n; x++) tmp[x] = (uint16_t)((r0[x] * w0 + r1[x] * w1 + round) >> (QW - QV));
}

static void vpassn(const uint8_t *src, size_t stride, const int32_t *ix, const int16_t *w, int ntap,
                   uint16_t *restrict tmp, int n)
{
    const int round = 1 << (QW - QV - 1);
    for (int x = 0; x < n; x++) {
        int acc = round;
        for (int k = 0; k < ntap; k++) acc += src[(size_t)ix[k] * stride + x] * w[k];
        tmp[x] = (uint16_t)(acc >> (QW - QV));
    }
}

PIPE_CLONES
static void hpass2(const uint16_t *restrict tmp, const int32_t *restrict ix, const int16_t *restrict w,
                   uint8_t *restrict out, int ow)
{
    const int round = 1 << (QV + QH - 1);
    for (int o = 0; o < ow; o++) {
        const uint16_t *a = tmp + ix[2 * o], *b = tmp + ix[2 * o + 1];
        int wa = w[2 * o], wb = w[2 * o + 1];
        out[3 * o] = (uint8_t)((a[0] * wa + b[0] * wb + round) >> (QV + QH));
        out[3 * o + 1] = (uint8_t)((a[1] * wa + b[1] * wb + round) >> (QV + QH));
        out[3 * o + 2] = (uint8_t)((a[2] * wa + b[2] * wb + round) >> (QV + QH));
    }
}

static void hpassn(const uint16_t *tmp, const int32_t *ix, const int16_t *w, int ntap, uint8_t *out, int ow)
{
    const int64_t round = (int64_t)1 << (QV + QH - 1);
    for (int o = 0; o < ow; o++)
        for (int c = 0; c < 3; c++) {
            int64_t acc = round;
            for (int k = 0; k < ntap; k++) acc += (int64_t)tmp[ix[o * ntap + k] + c] * w[o * ntap + k];
            out[3 * o + c] = (uint8_t)(acc >> (QV + QH));
        }
}

void pipe_resize(const uint8_t *src, int sw, int sh, size_t stride, double bx, double by, double bw, double bh,
                 int flip, uint8_t *dst, int ow, int oh, void *scratch)
{
    int ntx = ntaps_of(bw, ow), nty = ntaps_of(bh, oh);
    size_t tx = (size_t)ntx * ow, ty = (size_t)nty * oh;
    uint8_t *p = scratch;
    int32_t *xi = (int32_t *)p;
    p += align16(tx * 4);
    int16_t *xw = (int16_t *)p;
    p += align16(tx * 2);
    int32_t *yi = (int32_t *)p;
    p += align16(ty * 4);
    int16_t *yw = (int16_t *)p;
    p += align16(ty * 2);
    uint16_t *tmp = (uint16_t *)p;
    axis_taps(bx, bw, sw, ow, flip, QH, 3, xi, xw);
    axis_taps(by, bh, sh, oh, 0, QW, 1, yi, yw);
    int n = sw * 3;
    for (int oy = 0; oy < oh; oy++) {
        const int32_t *iy = yi + (size_t)oy * nty;
        const int16_t *wy = yw + (size_t)oy * nty;
        if (nty == 2)
            vpass2(src + (size_t)iy[0] * stride, src + (size_t)iy[1] * stride, wy[0], wy[1], tmp, n);
        else
            vpassn(src, stride, iy, wy, nty, tmp, n);
        uint8_t *out = dst + (size_t)oy * ow * 3;
        if (ntx == 2) hpass2(tmp, xi, xw, out, ow);
        else hpassn(tmp, xi, xw, ntx, out, ow);
    }
}
