/* model/cpu/layers.h — the CPU layer kernels, forward and backward, over `real`.
 *
 * Layout: activations NHWC ([n][h][w][c], c fastest), conv weights KRSC. Kernels are plain
 * functions on caller-owned buffers: they allocate nothing, keep no state, and may be called
 * from any thread on disjoint buffers (the GEMMs use OpenBLAS's own threads).
 *
 * Gradient conventions, shared by every backward:
 *   - parameter gradients (dw, dgamma, dbeta, db) are ADDED to (accumulated), so several
 *     steps or virtual workers can sum into one flat gradient buffer;
 *   - the input gradient dx is overwritten when accum_dx == 0 and added to when
 *     accum_dx == 1 (a tensor read by two layers receives the sum of both); dx == NULL
 *     skips it (the network input needs none).
 */
#ifndef MODEL_CPU_LAYERS_H
#define MODEL_CPU_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "model/cpu/real.h"
#include "model/input_norm.h"


/* in: uint8 [npix][3] RGB  out: x [npix][3] = (in - 255*mean) / (255*std). */
void MODEL_FN(model_input_normalize)(const uint8_t *in, real *x, size_t npix);

/* Convolution without bias. in: x [n,h,w,c]  weights: w [k,r,s,c]  out: y [n,oh,ow,k] with
 * oh = (h + 2 pad - r) / stride + 1 (and likewise ow). */
typedef struct {
    int n, h, w, c;      /* input */
    int k, r, s;         /* output channels, kernel height, width */
    int stride, pad;
    int oh, ow;          /* output size: fill with model_conv_out_size */
} model_conv_shape;

static inline int model_conv_out_size(int in, int kernel, int stride, int pad)
{
    return (in + 2 * pad - kernel) / stride + 1;
}

/* Workspace (in elements of `real`) that conv fwd/bwd need for batch sh->n when each GEMM
 * chunk may use up to `cap` elements (at least one image's im2col rows are always allowed).
 * 0 for 1x1 stride-1 unpadded convs, which use x directly as the GEMM operand. */
size_t MODEL_FN(model_conv_ws_len)(const model_conv_shape *sh, size_t cap);

/* y = conv(x, w). ws: ws_len elements (>= model_conv_ws_len(sh, ws_len's cap)); the batch is
 * processed in chunks of images that fit ws. */
void MODEL_FN(model_conv_fwd)(const model_conv_shape *sh, const real *x, const real *w, real *y,
                              real *ws, size_t ws_len);

/* dw += dL/dw; dx (=/+= per accum_dx) = dL/dx; dy: [n,oh,ow,k]. */
void MODEL_FN(model_conv_bwd)(const model_conv_shape *sh, const real *x, const real *w,
                              const real *dy, real *dw, real *dx, int accum_dx, real *ws,
                              size_t ws_len);

/* Batch normalisation over m = n*h*w rows of c channels: x, y [m][c]; gamma, beta,
 * running mean/var and the saved batch mean / inverse std are [c]. Scratch: c doubles and
 * 3c reals (model_bn_scratch_bytes). Training mode normalises with the batch's biased
 * variance and updates run_mean/run_var with weight `momentum` for the batch, using the
 * unbiased variance for run_var (as PyTorch). m must be >= 2 in training mode. */
size_t MODEL_FN(model_bn_scratch_bytes)(int c);
void MODEL_FN(model_bn_fwd_train)(size_t m, int c, const real *x, const real *gamma,
                                  const real *beta, real *y, real *save_mean, real *save_invstd,
                                  real *run_mean, real *run_var, double momentum, double eps,
                                  void *scratch);
void MODEL_FN(model_bn_fwd_eval)(size_t m, int c, const real *x, const real *gamma,
                                 const real *beta, const real *run_mean, const real *run_var,
                                 double eps, real *y, void *scratch);
/* Backward of the training-mode forward: dgamma, dbeta += ...; dx per accum_dx. */
void MODEL_FN(model_bn_bwd)(size_t m, int c, const real *x, const real *dy, const real *gamma,
                            const real *save_mean, const real *save_invstd, real *dgamma,
                            real *dbeta, real *dx, int accum_dx, void *scratch);

/* ReLU on len elements; y may equal x (in place). Backward uses the OUTPUT y (y > 0 iff
 * x > 0), so it also works after an in-place forward; dx may equal dy. */
void MODEL_FN(model_relu_fwd)(size_t len, const real *x, real *y);
void MODEL_FN(model_relu_bwd)(size_t len, const real *y, const real *dy, real *dx, int accum_dx);

/* y = a + b (residual add) and its backward: da, db = dy (each per its accum flag; NULL
 * skips). */
void MODEL_FN(model_add_fwd)(size_t len, const real *a, const real *b, real *y);
void MODEL_FN(model_add_bwd)(size_t len, const real *dy, real *da, int accum_da, real *db,
                             int accum_db);

/* Max pooling, window `size`, padding counts as -inf. in: x [n,h,w,c]  out: y [n,oh,ow,c];
 * argmax [n,oh,ow,c] holds the winning input index within its image (h*w*c < 2^31). */
void MODEL_FN(model_maxpool_fwd)(int n, int h, int w, int c, int size, int stride, int pad,
                                 int oh, int ow, const real *x, real *y, int32_t *argmax);
void MODEL_FN(model_maxpool_bwd)(int n, int h, int w, int c, int oh, int ow, const real *dy,
                                 const int32_t *argmax, real *dx, int accum_dx);

/* Global average pooling. in: x [n,hw,c]  out: y [n,c]. */
void MODEL_FN(model_avgpool_fwd)(int n, int hw, int c, const real *x, real *y);
void MODEL_FN(model_avgpool_bwd)(int n, int hw, int c, const real *dy, real *dx, int accum_dx);

/* Fully connected. in: x [n,cin]  weights: w [cout,cin], b [cout]  out: y [n,cout]. */
void MODEL_FN(model_fc_fwd)(int n, int cin, int cout, const real *x, const real *w,
                            const real *b, real *y);
void MODEL_FN(model_fc_bwd)(int n, int cin, int cout, const real *x, const real *w,
                            const real *dy, real *dw, real *db, real *dx, int accum_dx);

/* Softmax cross-entropy. in: logits [n,k], labels [n] in [0,k). Writes dlogits [n,k] =
 * scale * (softmax - onehot), the gradient of scale * sum_i CE_i. Returns the unscaled loss
 * sum in *loss_sum and the top-1 hits in *correct (first maximum wins ties); either may be
 * NULL. Labels must be valid (the caller checks). Computed in double internally. */
void MODEL_FN(model_softmax_ce)(int n, int k, const real *logits, const int32_t *labels,
                                double scale, real *dlogits, double *loss_sum, int *correct);

#endif
