/* model/cpu/conv.c — convolution by im2col + one GEMM per chunk of images.
 *
 * NHWC makes the im2col matrix rows [n*oh*ow][r*s*c] with (r,s,c) in KRSC order, so
 * y [n*oh*ow][k] = col * w^T is one row-major GEMM whose output is already NHWC. Within a
 * kernel row the s*c input values are contiguous in NHWC, so im2col copies runs of s*c
 * instead of single pixels. 1x1 stride-1 unpadded convs use x itself as `col`. The batch is
 * split into chunks of images whose im2col fits the workspace, which bounds memory (the
 * ResNet-50 stem at 224 would need 236 MB for 32 images) and keeps chunks cache-friendlier.
 */
#include <string.h>

#include "model/cpu/layers.h"

static int conv_is_direct(const model_conv_shape *sh)
{
    return sh->r == 1 && sh->s == 1 && sh->stride == 1 && sh->pad == 0;
}

/* Images per chunk so that one chunk's im2col fits `cap` elements (at least 1). */
static int conv_chunk(const model_conv_shape *sh, size_t cap)
{
    size_t per = (size_t)sh->oh * sh->ow * sh->r * sh->s * sh->c;
    size_t nb = per ? cap / per : 1;
    if (nb < 1) nb = 1;
    if (nb > (size_t)sh->n) nb = (size_t)sh->n;
    return (int)nb;
}

size_t MODEL_FN(model_conv_ws_len)(const model_conv_shape *sh, size_t cap)
{
    if (conv_is_direct(sh)) return 0;
    return (size_t)conv_chunk(sh, cap) * sh->oh * sh->ow * sh->r * sh->s * sh->c;
}

/* Valid kernel-tap range [lo, hi) for output position o along one axis of size `in`. */
static void tap_range(int o, int stride, int pad, int k, int in, int *lo, int *hi)
{
    int i0 = o * stride - pad;
    *lo = i0 < 0 ? -i0 : 0;
    *hi = in - i0 < k ? in - i0 : k;
    if (*hi < *lo) *hi = *lo;
}

/* col [nb*oh*ow][r*s*c] from x [nb,h,w,c]. */
static void im2col(const model_conv_shape *sh, int nb, const real *x, real *col)
{
    const int H = sh->h, W = sh->w, C = sh->c, R = sh->r, S = sh->s;
    const size_t SC = (size_t)S * C, RSC = (size_t)R * SC;
    real *row = col;
    for (int n = 0; n < nb; n++) {
        const real *xn = x + (size_t)n * H * W * C;
        for (int oh = 0; oh < sh->oh; oh++) {
            int r0, r1;
            tap_range(oh, sh->stride, sh->pad, R, H, &r0, &r1);
            for (int ow = 0; ow < sh->ow; ow++, row += RSC) {
                int s0, s1;
                tap_range(ow, sh->stride, sh->pad, S, W, &s0, &s1);
                int ih0 = oh * sh->stride - sh->pad, iw0 = ow * sh->stride - sh->pad;
                if (r0 > 0) memset(row, 0, (size_t)r0 * SC * sizeof(real));
                for (int r = r0; r < r1; r++) {
                    real *dst = row + r * SC;
                    if (s0 > 0) memset(dst, 0, (size_t)s0 * C * sizeof(real));
                    memcpy(dst + (size_t)s0 * C, xn + ((size_t)(ih0 + r) * W + (iw0 + s0)) * C,
                           (size_t)(s1 - s0) * C * sizeof(real));
                    if (s1 < S) memset(dst + (size_t)s1 * C, 0, (size_t)(S - s1) * C * sizeof(real));
                }
                if (r1 < R) memset(row + r1 * SC, 0, (size_t)(R - r1) * SC * sizeof(real));
            }
        }
    }
}

/* dx [nb,h,w,c] += scatter of dcol [nb*oh*ow][r*s*c] (dx already zeroed or accumulating). */
static void col2im(const model_conv_shape *sh, int nb, const real *col, real *dx)
{
    const int H = sh->h, W = sh->w, C = sh->c, R = sh->r, S = sh->s;
    const size_t SC = (size_t)S * C, RSC = (size_t)R * SC;
    const real *row = col;
    for (int n = 0; n < nb; n++) {
        real *dxn = dx + (size_t)n * H * W * C;
        for (int oh = 0; oh < sh->oh; oh++) {
            int r0, r1;
            tap_range(oh, sh->stride, sh->pad, R, H, &r0, &r1);
            for (int ow = 0; ow < sh->ow; ow++, row += RSC) {
                int s0, s1;
                tap_range(ow, sh->stride, sh->pad, S, W, &s0, &s1);
                int ih0 = oh * sh->stride - sh->pad, iw0 = ow * sh->stride - sh->pad;
                for (int r = r0; r < r1; r++) {
                    const real *src = row + r * SC + (size_t)s0 * C;
                    real *dst = dxn + ((size_t)(ih0 + r) * W + (iw0 + s0)) * C;
                    size_t len = (size_t)(s1 - s0) * C;
                    for (size_t i = 0; i < len; i++) dst[i] += src[i];
                }
            }
        }
    }
}

void MODEL_FN(model_conv_fwd)(const model_conv_shape *sh, const real *x, const real *w, real *y,
                              real *ws, size_t ws_len)
{
    const int K = sh->k, RSC = sh->r * sh->s * sh->c;
    const size_t in_img = (size_t)sh->h * sh->w * sh->c, out_pix = (size_t)sh->oh * sh->ow;
    if (conv_is_direct(sh)) {
        MODEL_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, sh->n * (int)out_pix, K, RSC, 1, x,
                   RSC, w, RSC, 0, y, K);
        return;
    }
    int nb = conv_chunk(sh, ws_len);
    for (int n0 = 0; n0 < sh->n; n0 += nb) {
        int cnt = sh->n - n0 < nb ? sh->n - n0 : nb;
        im2col(sh, cnt, x + (size_t)n0 * in_img, ws);
        MODEL_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, cnt * (int)out_pix, K, RSC, 1, ws, RSC,
                   w, RSC, 0, y + (size_t)n0 * out_pix * K, K);
    }
}

void MODEL_FN(model_conv_bwd)(const model_conv_shape *sh, const real *x, const real *w,
                              const real *dy, real *dw, real *dx, int accum_dx, real *ws,
                              size_t ws_len)
{
    const int K = sh->k, C = sh->c, RSC = sh->r * sh->s * sh->c;
    const size_t in_img = (size_t)sh->h * sh->w * C, out_pix = (size_t)sh->oh * sh->ow;
    if (conv_is_direct(sh)) {
        int M = sh->n * (int)out_pix;
        /* dw [k][c] += dy^T [k][M] * x [M][c];  dx [M][c] = dy [M][k] * w [k][c] */
        MODEL_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, K, C, M, 1, dy, K, x, C, 1, dw, C);
        if (dx)
            MODEL_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, C, K, 1, dy, K, w, C,
                       accum_dx ? 1 : 0, dx, C);
        return;
    }
    int nb = conv_chunk(sh, ws_len);
    for (int n0 = 0; n0 < sh->n; n0 += nb) {
        int cnt = sh->n - n0 < nb ? sh->n - n0 : nb;
        int M = cnt * (int)out_pix;
        const real *dyc = dy + (size_t)n0 * out_pix * K;
        im2col(sh, cnt, x + (size_t)n0 * in_img, ws);
        MODEL_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, K, RSC, M, 1, dyc, K, ws, RSC, 1, dw, RSC);
        if (!dx) continue;
        /* The workspace is free again: dcol [M][rsc] = dy [M][k] * w [k][rsc]. */
        MODEL_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, RSC, K, 1, dyc, K, w, RSC, 0, ws, RSC);
        real *dxc = dx + (size_t)n0 * in_img;
        if (!accum_dx) memset(dxc, 0, (size_t)cnt * in_img * sizeof(real));
        col2im(sh, cnt, ws, dxc);
    }
}
