/* optim/sgd_elem.h — the per-element SGD update of optim/sgd.h, shared by the host loop
 * (optim/sgd.c) and the CUDA kernel (model/cuda/net.cu), so the CPU tests of sgd.c cover the
 * arithmetic the GPU runs. Header-only; compiles as C11 and as CUDA (host and device).
 *
 * For one parameter w with gradient g and momentum u (Goyal et al. 2017, eq. 4, lr folded in):
 *
 *   u <- c*u                      momentum correction (c = lr_new/lr_old, else exactly 1)
 *   d  = lr*(g + wd*w)            (wd = 0 on no_decay segments)
 *   u <- m*u + d
 *   w <- w - u                    plain momentum
 *   w <- w - (m*u + d)            Nesterov (Sutskever form)
 *
 * Bit-identical on both sides: every operation is one IEEE-754 float operation rounded to
 * nearest, in this order. On the device each one is an explicit __fmul_rn/__fadd_rn (nvcc
 * would otherwise contract a*b+c into an FMA with a single rounding); on the host sgd.c is
 * compiled with -ffp-contract=off for the same reason (optim/CMakeLists.txt). Multiplying by
 * c = 1.0f is exact, so applying "no correction" as c = 1 changes no bit.
 */
#ifndef OPTIM_SGD_ELEM_H
#define OPTIM_SGD_ELEM_H

#if defined(__CUDACC__)
#define OPTIM_HD __host__ __device__
#else
#define OPTIM_HD
#endif

#if defined(__CUDA_ARCH__)
#define OPTIM_MUL(a, b) __fmul_rn((a), (b))
#define OPTIM_ADD(a, b) __fadd_rn((a), (b))
#define OPTIM_SUB(a, b) __fsub_rn((a), (b))
#else
#define OPTIM_MUL(a, b) ((a) * (b))
#define OPTIM_ADD(a, b) ((a) + (b))
#define OPTIM_SUB(a, b) ((a) - (b))
#endif

/* What one step applies to every element, decided once per step by optim_sgd_plan_step
 * (optim/sgd.h). Plain data, passed by value to kernels. */
typedef struct {
    float lr;       /* this step's learning rate, rounded to float */
    float u_scale;  /* momentum correction factor applied to u first; exactly 1 when none */
    float momentum; /* m */
    float weight_decay; /* wd of segments that decay; no_decay segments use 0 */
    int nesterov;   /* 1: Nesterov form, 0: plain momentum */
} optim_sgd_plan;

/* One element: updates *u and returns the new w. wd is 0 on no_decay segments. */
static inline OPTIM_HD float optim_sgd_elem(float w, float g, float *u, float c, float m, float lr,
                                            float wd, int nesterov)
{
    const float d = OPTIM_MUL(lr, OPTIM_ADD(g, OPTIM_MUL(wd, w)));
    const float un = OPTIM_ADD(OPTIM_MUL(m, OPTIM_MUL(c, *u)), d);
    *u = un;
    return OPTIM_SUB(w, nesterov ? OPTIM_ADD(OPTIM_MUL(m, un), d) : un);
}

#endif
