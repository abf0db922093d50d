/* model/cuda/kernels.cuh — the small CUDA kernels of the CUDA executor (net.cu): BatchNorm
 * (statistics, apply, backward), ReLU, residual add, max/average pooling, FC bias, softmax
 * cross-entropy, the fp32<->bf16 parameter/gradient conversions and the fused SGD step.
 * Internal to net.cu.
 *
 * Layout NHWC: a tensor is m = n*h*w rows of c contiguous channels. Elementwise kernels give
 * each thread V consecutive elements (one 16/32-byte vector when V = 8 and c % 8 == 0, else
 * V = 1), all inside one row, so channel = flat index % c. Reductions over rows (BN) use a
 * 2-D block: x over groups of V channels, y over rows; each block writes one partial sum per
 * channel, and a per-channel finalize kernel adds the partials in double in a fixed order,
 * so results are deterministic. Activations may be float, bf16 or fp16; all arithmetic is fp32
 * (statistics in double), as on the CPU.
 * Conventions as the CPU layers (model/cpu/layers.h): parameter gradients are added to;
 * input gradients are overwritten or added per the graph's accum flag. A BN or ADD followed
 * by an in-place ReLU runs fused: forward clamps, backward masks dy by (y > 0).
 */
#ifndef MODEL_CUDA_KERNELS_CUH
#define MODEL_CUDA_KERNELS_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "optim/sgd_elem.h"

typedef __nv_bfloat16 bf16;
typedef __half f16;

__device__ __forceinline__ float tof(float x) { return x; }
__device__ __forceinline__ float tof(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float tof(f16 x) { return __half2float(x); }
template <typename T> __device__ __forceinline__ T fromf(float x);
template <> __device__ __forceinline__ float fromf<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 fromf<bf16>(float x) { return __float2bfloat16(x); }
template <> __device__ __forceinline__ f16 fromf<f16>(float x) { return __float2half(x); }

template <typename T, int V> struct alignas(sizeof(T) * V) vec_t {
    T v[V];
};
template <typename T, int V> __device__ __forceinline__ vec_t<T, V> ldv(const T *p)
{
    return *reinterpret_cast<const vec_t<T, V> *>(p);
}
template <typename T, int V> __device__ __forceinline__ void stv(T *p, const vec_t<T, V> &v)
{
    *reinterpret_cast<vec_t<T, V> *>(p) = v;
}

#define GRID_STRIDE(i, count, step)                                                      \
    for (size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * (step); i < (count); \
         i += (size_t)gridDim.x * blockDim.x * (step))

/* ---- BatchNorm, training forward ---- */

/* Partial sums over this block's rows of (x - x[row 0]) and its square, per channel: the
 * shift by the first row keeps the one-pass variance free of cancellation when |mean| >>
 * std. partial: [gridDim.y][2][c]. Block (GB, RB), GB*V channels per block. */
template <typename T, int V>
__global__ void bn_stats_k(const T *x, size_t m, int c, float *partial)
{
    extern __shared__ float sh[]; /* [2][RB][GB*V] */
    int tx = threadIdx.x, ty = threadIdx.y, GB = blockDim.x, RB = blockDim.y;
    int ch0 = (blockIdx.x * GB + tx) * V;
    bool on = ch0 < c;
    float s1[V], s2[V], base[V];
    for (int j = 0; j < V; j++) s1[j] = s2[j] = base[j] = 0.f;
    if (on) {
        vec_t<T, V> b = ldv<T, V>(x + ch0);
        for (int j = 0; j < V; j++) base[j] = tof(b.v[j]);
        for (size_t r = (size_t)blockIdx.y * RB + ty; r < m; r += (size_t)gridDim.y * RB) {
            vec_t<T, V> v = ldv<T, V>(x + r * c + ch0);
            for (int j = 0; j < V; j++) {
                float d = tof(v.v[j]) - base[j];
                s1[j] += d;
                s2[j] += d * d;
            }
        }
    }
    int w = GB * V;
    for (int j = 0; j < V; j++) {
        sh[(0 * RB + ty) * w + tx * V + j] = s1[j];
        sh[(1 * RB + ty) * w + tx * V + j] = s2[j];
    }
    __syncthreads();
    if (ty == 0 && on)
        for (int j = 0; j < V; j++) {
            float a = 0, b = 0;
            for (int r = 0; r < RB; r++) {
                a += sh[(0 * RB + r) * w + tx * V + j];
                b += sh[(1 * RB + r) * w + tx * V + j];
            }
            partial[((size_t)blockIdx.y * 2 + 0) * c + ch0 + j] = a;
            partial[((size_t)blockIdx.y * 2 + 1) * c + ch0 + j] = b;
        }
}

/* The per-channel sums of nparts partial rows [nparts][2][c], in double and in a fixed order
 * (so deterministic): block (32, FIN_ROWS) covers 32 channels, thread row ty adds the parts
 * ty, ty + FIN_ROWS, ...; then row 0 adds the FIN_ROWS results in order. One thread per
 * channel looping over up to 1024 parts serialised ~100 BN layers per step on latency.
 * Returns the two sums on threads ty == 0 (others get garbage); ch may be >= c. */
enum { FIN_ROWS = 16 };
__device__ __forceinline__ void sum_parts(const float *partial, int c, int nparts, int ch,
                                          double *s1, double *s2)
{
    __shared__ double sh[2][FIN_ROWS][32];
    int tx = threadIdx.x, ty = threadIdx.y;
    double a = 0, b = 0;
    if (ch < c)
        for (int p = ty; p < nparts; p += FIN_ROWS) {
            a += partial[((size_t)p * 2 + 0) * c + ch];
            b += partial[((size_t)p * 2 + 1) * c + ch];
        }
    sh[0][ty][tx] = a;
    sh[1][ty][tx] = b;
    __syncthreads();
    a = b = 0;
    if (ty == 0)
        for (int r = 0; r < FIN_ROWS; r++) {
            a += sh[0][r][tx];
            b += sh[1][r][tx];
        }
    *s1 = a;
    *s2 = b;
}

/* aux per BN layer: [mean][istd][scale][shift][ka][kb][kc], c floats each (under cuDNN's BN,
 * bn_cudnn.cu: mean and istd as here, [2c, 4c) its dgamma and dbeta). The partial sums
 * are of x minus a per-channel shift: the first row x[0, ch] (bn_stats_k), or shift[ch] when
 * shift is not NULL (the convolution's fused statistics, IH_CUDNN_FUSE=stats, which shift by
 * the running mean; shift may be run_mean: it is read before run_mean is updated, by the same
 * thread). Launch: grid ceil(c/32), block (32, FIN_ROWS). */
template <typename T>
__global__ void bn_finalize_k(const T *x, const float *shift, size_t m, int c, int nparts,
                              const float *partial, const float *gamma, const float *beta, float *aux,
                              float *run_mean, float *run_var, double momentum, double eps)
{
    int ch = blockIdx.x * 32 + threadIdx.x;
    double s1, s2;
    sum_parts(partial, c, nparts, ch, &s1, &s2);
    if (ch >= c || threadIdx.y != 0) return;
    double dm = s1 / (double)m, var = s2 / (double)m - dm * dm;
    if (var < 0) var = 0;
    double mean = (shift ? (double)shift[ch] : (double)tof(x[ch])) + dm, istd = 1.0 / sqrt(var + eps);
    aux[ch] = (float)mean;
    aux[c + ch] = (float)istd;
    aux[2 * c + ch] = (float)(gamma[ch] * istd);
    aux[3 * c + ch] = beta[ch];
    double unbiased = m > 1 ? var * (double)m / (double)(m - 1) : var;
    run_mean[ch] = (float)((1 - momentum) * run_mean[ch] + momentum * mean);
    run_var[ch] = (float)((1 - momentum) * run_var[ch] + momentum * unbiased);
}

/* Inference: center = running mean, scale = gamma / sqrt(running var + eps). */
__global__ void bn_eval_prep_k(int c, const float *gamma, const float *beta, const float *run_mean,
                               const float *run_var, double eps, float *aux)
{
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    aux[ch] = run_mean[ch];
    aux[2 * c + ch] = (float)(gamma[ch] / sqrt((double)run_var[ch] + eps));
    aux[3 * c + ch] = beta[ch];
}

/* y = (x - center) * scale + shift, clamped at 0 when relu. */
template <typename TX, typename TY, int V>
__global__ void bn_apply_k(const TX *x, TY *y, size_t len, int c, const float *aux, int relu)
{
    const float *center = aux, *scale = aux + 2 * c, *shift = aux + 3 * c;
    GRID_STRIDE(i, len, V)
    {
        int ch = (int)(i % c);
        vec_t<TX, V> a = ldv<TX, V>(x + i);
        vec_t<TY, V> o;
        for (int j = 0; j < V; j++) {
            float v = (tof(a.v[j]) - center[ch + j]) * scale[ch + j] + shift[ch + j];
            o.v[j] = fromf<TY>(relu ? fmaxf(v, 0.f) : v);
        }
        stv<TY, V>(y + i, o);
    }
}

/* ---- BatchNorm backward ---- */

/* Partial sums of dy' and dy' * (x - mean), dy' = dy masked by y > 0 when relu. */
template <typename TX, typename TG, int V>
__global__ void bn_bwd_reduce_k(const TX *x, const TG *dy, const TG *y, size_t m, int c,
                                const float *mean, float *partial, int relu)
{
    extern __shared__ float sh[];
    int tx = threadIdx.x, ty = threadIdx.y, GB = blockDim.x, RB = blockDim.y;
    int ch0 = (blockIdx.x * GB + tx) * V;
    bool on = ch0 < c;
    float s1[V], s2[V];
    for (int j = 0; j < V; j++) s1[j] = s2[j] = 0.f;
    if (on)
        for (size_t r = (size_t)blockIdx.y * RB + ty; r < m; r += (size_t)gridDim.y * RB) {
            vec_t<TX, V> xv = ldv<TX, V>(x + r * c + ch0);
            vec_t<TG, V> gv = ldv<TG, V>(dy + r * c + ch0);
            vec_t<TG, V> yv;
            if (relu) yv = ldv<TG, V>(y + r * c + ch0);
            for (int j = 0; j < V; j++) {
                float g = tof(gv.v[j]);
                if (relu && !(tof(yv.v[j]) > 0.f)) g = 0.f;
                s1[j] += g;
                s2[j] += g * (tof(xv.v[j]) - mean[ch0 + j]);
            }
        }
    int w = GB * V;
    for (int j = 0; j < V; j++) {
        sh[(0 * RB + ty) * w + tx * V + j] = s1[j];
        sh[(1 * RB + ty) * w + tx * V + j] = s2[j];
    }
    __syncthreads();
    if (ty == 0 && on)
        for (int j = 0; j < V; j++) {
            float a = 0, b = 0;
            for (int r = 0; r < RB; r++) {
                a += sh[(0 * RB + r) * w + tx * V + j];
                b += sh[(1 * RB + r) * w + tx * V + j];
            }
            partial[((size_t)blockIdx.y * 2 + 0) * c + ch0 + j] = a;
            partial[((size_t)blockIdx.y * 2 + 1) * c + ch0 + j] = b;
        }
}

/* dgamma += gs*sum(dy'*xhat), dbeta += gs*sum(dy'); dx = ka*dy' + kb*(x - mean) + kc.
 * gs undoes the fp16 loss scale in the parameter gradients only (1 otherwise: exact).
 * Launch: grid ceil(c/32), block (32, FIN_ROWS). */
__global__ void bn_bwd_finalize_k(size_t m, int c, int nparts, const float *partial,
                                  const float *gamma, float *dgamma, float *dbeta, float *aux,
                                  double gs)
{
    int ch = blockIdx.x * 32 + threadIdx.x;
    double sdy, sdyx;
    sum_parts(partial, c, nparts, ch, &sdy, &sdyx);
    if (ch >= c || threadIdx.y != 0) return;
    double is = aux[c + ch], g = gamma[ch];
    dgamma[ch] += (float)(sdyx * is * gs);
    dbeta[ch] += (float)(sdy * gs);
    double a = g * is;
    aux[4 * c + ch] = (float)a;
    aux[5 * c + ch] = (float)(-g * is * is * is * sdyx / (double)m);
    aux[6 * c + ch] = (float)(-a * sdy / (double)m);
}

template <typename TX, typename TG, int V>
__global__ void bn_bwd_dx_k(const TX *x, const TG *dy, const TG *y, TX *dx, size_t len, int c,
                            const float *aux, int accum, int relu)
{
    const float *mean = aux, *ka = aux + 4 * c, *kb = aux + 5 * c, *kc = aux + 6 * c;
    GRID_STRIDE(i, len, V)
    {
        int ch = (int)(i % c);
        vec_t<TX, V> xv = ldv<TX, V>(x + i);
        vec_t<TG, V> gv = ldv<TG, V>(dy + i);
        vec_t<TG, V> yv;
        vec_t<TX, V> dv;
        if (relu) yv = ldv<TG, V>(y + i);
        if (accum) dv = ldv<TX, V>(dx + i);
        for (int j = 0; j < V; j++) {
            float g = tof(gv.v[j]);
            if (relu && !(tof(yv.v[j]) > 0.f)) g = 0.f;
            float v = ka[ch + j] * g + kb[ch + j] * (tof(xv.v[j]) - mean[ch + j]) + kc[ch + j];
            dv.v[j] = fromf<TX>(accum ? tof(dv.v[j]) + v : v);
        }
        stv<TX, V>(dx + i, dv);
    }
}

/* ---- ReLU (unfused), residual add ---- */

template <typename T, int V> __global__ void relu_fwd_k(T *x, size_t len)
{
    GRID_STRIDE(i, len, V)
    {
        vec_t<T, V> a = ldv<T, V>(x + i);
        for (int j = 0; j < V; j++) a.v[j] = fromf<T>(fmaxf(tof(a.v[j]), 0.f));
        stv<T, V>(x + i, a);
    }
}

/* In place on the gradient: dy *= (y > 0). */
template <typename T, int V> __global__ void relu_bwd_k(const T *y, T *dy, size_t len)
{
    GRID_STRIDE(i, len, V)
    {
        vec_t<T, V> a = ldv<T, V>(y + i), g = ldv<T, V>(dy + i);
        for (int j = 0; j < V; j++)
            if (!(tof(a.v[j]) > 0.f)) g.v[j] = fromf<T>(0.f);
        stv<T, V>(dy + i, g);
    }
}

template <typename T, int V>
__global__ void add_fwd_k(const T *a, const T *b, T *y, size_t len, int relu)
{
    GRID_STRIDE(i, len, V)
    {
        vec_t<T, V> u = ldv<T, V>(a + i), v = ldv<T, V>(b + i), o;
        for (int j = 0; j < V; j++) {
            float s = tof(u.v[j]) + tof(v.v[j]);
            o.v[j] = fromf<T>(relu ? fmaxf(s, 0.f) : s);
        }
        stv<T, V>(y + i, o);
    }
}

template <typename T, int V>
__global__ void add_bwd_k(const T *dy, const T *y, T *da, int acc_a, T *db, int acc_b, size_t len,
                          int relu)
{
    GRID_STRIDE(i, len, V)
    {
        vec_t<T, V> g = ldv<T, V>(dy + i), yv, o;
        if (relu) yv = ldv<T, V>(y + i);
        float gf[V];
        for (int j = 0; j < V; j++) {
            gf[j] = tof(g.v[j]);
            if (relu && !(tof(yv.v[j]) > 0.f)) gf[j] = 0.f;
        }
        if (da) {
            if (acc_a) o = ldv<T, V>(da + i);
            for (int j = 0; j < V; j++) o.v[j] = fromf<T>(acc_a ? tof(o.v[j]) + gf[j] : gf[j]);
            stv<T, V>(da + i, o);
        }
        if (db) {
            if (acc_b) o = ldv<T, V>(db + i);
            for (int j = 0; j < V; j++) o.v[j] = fromf<T>(acc_b ? tof(o.v[j]) + gf[j] : gf[j]);
            stv<T, V>(db + i, o);
        }
    }
}

/* ---- pooling ---- */

/* One thread per output element; argmax = winning input index within its image (padding
 * never wins; first maximum wins ties, as on the CPU). */
template <typename T>
__global__ void maxpool_fwd_k(const T *x, T *y, int32_t *argmax, int n, int h, int w, int c,
                              int size, int stride, int pad, int oh, int ow)
{
    size_t total = (size_t)n * oh * ow * c;
    GRID_STRIDE(o, total, 1)
    {
        int ch = (int)(o % c);
        size_t p = o / c;
        int j = (int)(p % ow), i = (int)(p / ow % oh);
        size_t b = p / ((size_t)ow * oh);
        const T *xb = x + b * h * w * c;
        float best = 0.f;
        int bi = -1;
        for (int r = 0; r < size; r++) {
            int ih = i * stride - pad + r;
            if (ih < 0 || ih >= h) continue;
            for (int s = 0; s < size; s++) {
                int iw = j * stride - pad + s;
                if (iw < 0 || iw >= w) continue;
                int idx = (ih * w + iw) * c + ch;
                float v = tof(xb[idx]);
                if (bi < 0 || v > best) {
                    best = v;
                    bi = idx;
                }
            }
        }
        y[o] = fromf<T>(best);
        argmax[o] = bi;
    }
}

/* Gather form (no atomics, deterministic): each input element sums dy of the outputs whose
 * window covers it and whose argmax is this element. */
template <typename T>
__global__ void maxpool_bwd_k(const T *dy, const int32_t *argmax, T *dx, int n, int h, int w,
                              int c, int size, int stride, int pad, int oh, int ow, int accum)
{
    size_t total = (size_t)n * h * w * c;
    GRID_STRIDE(e, total, 1)
    {
        int ch = (int)(e % c);
        size_t p = e / c;
        int iw = (int)(p % w), ih = (int)(p / w % h);
        size_t b = p / ((size_t)w * h);
        int idx = (ih * w + iw) * c + ch;
        int lo_i = ih + pad - size + 1, lo_j = iw + pad - size + 1;
        lo_i = lo_i <= 0 ? 0 : (lo_i + stride - 1) / stride;
        lo_j = lo_j <= 0 ? 0 : (lo_j + stride - 1) / stride;
        int hi_i = min(oh - 1, (ih + pad) / stride), hi_j = min(ow - 1, (iw + pad) / stride);
        float s = 0.f;
        for (int i = lo_i; i <= hi_i; i++)
            for (int j = lo_j; j <= hi_j; j++) {
                size_t o = ((b * oh + i) * ow + j) * c + ch;
                if (argmax[o] == idx) s += tof(dy[o]);
            }
        dx[e] = fromf<T>(accum ? tof(dx[e]) + s : s);
    }
}

/* Global average pool to fp32 [n][c]. */
template <typename T> __global__ void avgpool_fwd_k(const T *x, float *y, int n, int hw, int c)
{
    size_t total = (size_t)n * c;
    GRID_STRIDE(o, total, 1)
    {
        size_t b = o / c;
        int ch = (int)(o % c);
        const T *xb = x + b * hw * c + ch;
        float s = 0.f;
        for (int p = 0; p < hw; p++) s += tof(xb[(size_t)p * c]);
        y[o] = s * (1.0f / hw);
    }
}

template <typename T>
__global__ void avgpool_bwd_k(const float *dy, T *dx, int n, int hw, int c, int accum)
{
    size_t total = (size_t)n * hw * c;
    float inv = 1.0f / hw;
    GRID_STRIDE(e, total, 1)
    {
        int ch = (int)(e % c);
        size_t b = e / ((size_t)hw * c);
        float v = dy[b * c + ch] * inv;
        dx[e] = fromf<T>(accum ? tof(dx[e]) + v : v);
    }
}

/* ---- FC bias, loss ---- */

__global__ void bias_add_k(float *y, const float *b, int n, int k)
{
    GRID_STRIDE(e, (size_t)n * k, 1) y[e] += b[e % k];
}

__global__ void bias_grad_k(const float *dy, float *db, int n, int k, float gs)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= k) return;
    float s = 0.f;
    for (int i = 0; i < n; i++) s += dy[(size_t)i * k + j];
    db[j] += s * gs;
}

/* One warp per sample: loss_i = logsumexp(z) - z[label] and dz = scale*(softmax - onehot),
 * in double like the CPU; hit_i = argmax (first maximum) == label. */
__global__ void softmax_ce_k(const float *z, const int32_t *labels, int k, double scale,
                             float *dz, double *loss, int *hit)
{
    int i = blockIdx.x, lane = threadIdx.x;
    const float *zi = z + (size_t)i * k;
    float best = -INFINITY;
    int bi = k;
    for (int j = lane; j < k; j += 32)
        if (zi[j] > best) { best = zi[j]; bi = j; }
    for (int off = 16; off; off >>= 1) {
        float ob = __shfl_xor_sync(0xffffffffu, best, off);
        int oi = __shfl_xor_sync(0xffffffffu, bi, off);
        if (ob > best || (ob == best && oi < bi)) { best = ob; bi = oi; }
    }
    double sum = 0;
    for (int j = lane; j < k; j += 32) sum += exp((double)zi[j] - (double)best);
    for (int off = 16; off; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    double lse = (double)best + log(sum);
    int lab = labels[i];
    for (int j = lane; j < k; j += 32)
        dz[(size_t)i * k + j] = (float)(scale * (exp((double)zi[j] - lse) - (j == lab)));
    if (lane == 0) {
        loss[i] = lse - (double)zi[lab];
        hit[i] = bi == lab;
    }
}

/* ---- the input: uint8 HWC RGB -> normalised, channels padded with zeros to cpad ---- */

/* cuDNN's NHWC kernels want 16-byte channel rows, so the 3-channel input (and the stem conv's
 * weights) are stored with cpad = 4 (fp32) or 8 (bf16) channels. */
template <typename T>
__global__ void input_pad_k(const uint8_t *in, T *x, size_t npix, int cpad, float mr, float mg,
                            float mb, float ir, float ig, float ib)
{
    GRID_STRIDE(p, npix, 1)
    {
        const uint8_t *q = in + 3 * p;
        T *o = x + p * cpad;
        o[0] = fromf<T>(((float)q[0] - mr) * ir);
        o[1] = fromf<T>(((float)q[1] - mg) * ig);
        o[2] = fromf<T>(((float)q[2] - mb) * ib);
        for (int j = 3; j < cpad; j++) o[j] = fromf<T>(0.f);
    }
}

/* w [rows][c] fp32 -> wp [rows][cpad] (zeros beyond c), and dwp back: dw[rows][c] += dwp. */
template <typename T>
__global__ void pad_weights_k(const float *w, T *wp, size_t rows, int c, int cpad)
{
    GRID_STRIDE(e, rows * cpad, 1)
    {
        int j = (int)(e % cpad);
        wp[e] = fromf<T>(j < c ? w[e / cpad * c + j] : 0.f);
    }
}

template <typename T>
__global__ void unpad_add_k(const T *dwp, float *dw, size_t rows, int c, int cpad, float gs)
{
    GRID_STRIDE(e, rows * c, 1) dw[e] += tof(dwp[e / c * cpad + e % c]) * gs;
}

/* ---- master weights and gradients ---- */

/* fp32 master weights -> their bf16/fp16 copy (round to nearest) */
template <typename T> __global__ void to_lp_k(const float *a, T *b, size_t len)
{
    GRID_STRIDE(i, len, 1) b[i] = fromf<T>(a[i]);
}

/* a bf16/fp16 weight gradient added into the fp32 gradients, times gs (the inverse fp16 loss
 * scale, a power of two; 1 otherwise, which is exact) */
template <typename T> __global__ void add_lp_to_f32_k(const T *a, float *b, size_t len, float gs)
{
    GRID_STRIDE(i, len, 1) b[i] += tof(a[i]) * gs;
}

/* *flag = 1 if some g[i] is inf or NaN (fp16 loss scaling: an overflowed step). */
__global__ void nonfinite_k(const float *g, size_t len, int *flag)
{
    GRID_STRIDE(i, len, 1)
    if (!isfinite(g[i])) *flag = 1;
}

/* ---- SGD (optim/sgd.h) on the flat buffers ---- */

/* A tile: at most SGD_TILE consecutive parameters inside one optimizer segment, so one
 * block applies one weight decay (0 on no_decay segments). Built once by sgd_setup. */
enum { SGD_TILE = 4096 };
typedef struct sgd_tile { /* named: net_impl.h declares it */
    size_t off;
    unsigned cnt;
    float wd;
} sgd_tile;

/* One block per tile: w, u updated by optim_sgd_elem (the CPU's arithmetic, bit for bit), and
 * the bf16/fp16 copy of w rewritten in the same pass when w16 is not NULL. skip (fp16 loss
 * scaling; NULL otherwise) set: the step overflowed, so w is left alone and only the momentum
 * correction is applied, to keep u consistent with the lr the optimizer recorded. */
template <typename T>
__global__ void sgd_k(float *w, const float *g, float *u, T *w16, const sgd_tile *tiles,
                      optim_sgd_plan p, const int *skip)
{
    const sgd_tile t = tiles[blockIdx.x];
    if (skip && *skip) {
        if (p.u_scale != 1.0f)
            for (unsigned i = threadIdx.x; i < t.cnt; i += blockDim.x)
                u[t.off + i] = OPTIM_MUL(p.u_scale, u[t.off + i]);
        return;
    }
    for (unsigned i = threadIdx.x; i < t.cnt; i += blockDim.x) {
        const size_t j = t.off + i;
        float uj = u[j];
        const float wj = optim_sgd_elem(w[j], g[j], &uj, p.u_scale, p.momentum, p.lr, t.wd, p.nesterov);
        u[j] = uj;
        w[j] = wj;
        if (w16) w16[j] = fromf<T>(wj);
    }
}

#endif
