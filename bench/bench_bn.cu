/* bench_bn — our BatchNorm kernels (model/cuda/bn.cuh, what the CUDA executor runs) against
 * cuDNN's batch normalization on every BN of ResNet-50 at 224 px, bf16 NHWC with fp32
 * statistics and parameters, in the same run on the same buffers.
 *
 * Why: the GPU backend's issue asks for BN on cuDNN. cuDNN 9 offers it as
 * cudnnBatchNormalizationForwardTrainingEx / BackwardEx (deprecated in cuDNN 9 but what
 * PyTorch's channels-last BN still calls, with the SPATIAL_PERSISTENT mode and the BN+ReLU
 * fusion), so this is the cuDNN BN a ResNet-50 step would get. This program times both on the
 * net's own shapes; the executor keeps whichever the numbers favour.
 *
 * Per distinct shape (h, w, c, ReLU fused or not; from model_graph_build, so exactly the net's
 * BN layers and their count): training forward (statistics, running-stat update, normalise,
 * ReLU) and backward (dgamma, dbeta, dx, through the ReLU), each the median over --repeats of
 * --iters back-to-back launches timed with CUDA events. Before timing, the two implementations'
 * y and dx are compared on the first 4M elements (bf16 outputs, tolerance 2^-7 of the tensor's
 * max |cuDNN|): "ok" when every y element is within it and at most 1 in 10^5 dx elements is
 * not (where a pre-activation lies within fp32 rounding of 0, the two ReLU masks may differ
 * and that dx element with them), else "DIFF". maxdiff is y's max |ours - cuDNN| / max |cuDNN|,
 * "dx off" the count of dx elements outside the tolerance. The table's last row is the whole
 * net (per-shape times x count).
 *   bench_bn [--batch=256] [--iters=20] [--repeats=5]
 * Exit 77 without a CUDA device. Last line:
 *   RESULT gpu=.. n=.. ours_fwd_ms=.. cudnn_fwd_ms=.. ours_bwd_ms=.. cudnn_bwd_ms=..
 *          cudnn_over_ours=.. maxdiff=.. ok=0|1 add_ours_ms=.. add_cudnn_ms=..
 *          add_cudnn_over_ours=.. add_ok=0|1
 * (cudnn_over_ours: cuDNN's fwd+bwd time over ours; > 1 means ours is faster.)
 * A second table times each block's last BN with its residual join (relu(BN(x) + z)): ours as
 * the executor runs it (the BN, then the add kernel with the ReLU; backward the add kernel's
 * two gradients, then the BN's) against cuDNN's BN_ADD_ACTIVATION in one call, checked the
 * same way (y = the join's output; dx and dz together, 2 in 10^5 allowed), except that
 * elements where the two ReLU masks differ ("flips": ours rounds the BN's output to bf16
 * before the add, cuDNN rounds the sum once, so a sum within that rounding of 0 may fall on
 * either side; about 1 in 2000 on the H200) are counted apart and left out of the dx/dz
 * check (at most 1 in 100 allowed); add_* sum it over the net's joins. The exit status follows the first table only.
 */
#include <string.h>

#include "core/rng.h"
#include "model/cuda/bn.cuh"
#include "bench/bn_bench.cuh"

int main(int argc, char **argv)
{
    int n = 256, iters = 20, repeats = 5, cmax = 0;
    char gpu[256];
    std::vector<bn_shape> shapes; /* grouped by shape, fused ReLU and residual join */
    cudnnHandle_t dnn;
    size_t maxlen = 0;
    const int rc = bench_start("bench_bn", argc, argv, true, &n, &iters, &repeats, gpu, sizeof gpu, &shapes, &dnn,
                               &maxlen, &cmax);
    if (rc >= 0) return rc;
    cudaStream_t st = 0;
    size_t addlen = 0; /* the largest BN+add+ReLU tensor */
    for (auto &b : shapes)
        if (b.add) addlen = std::max(addlen, (size_t)n * b.h * b.w * b.c);
    bf16 *x, *y, *dy, *dx, *y2, *dx2;
    bf16 *z = NULL, *ya = NULL, *y2a = NULL, *dbn = NULL, *dz = NULL, *dz2 = NULL; /* the add rows' */
    float *par, *aux, *partial;
    void *ws = NULL, *rs = NULL;
    if (addlen) {
        CK(cudaMalloc(&z, addlen * sizeof(bf16)));
        CK(cudaMalloc(&ya, addlen * sizeof(bf16)));
        CK(cudaMalloc(&y2a, addlen * sizeof(bf16)));
        CK(cudaMalloc(&dbn, addlen * sizeof(bf16)));
        CK(cudaMalloc(&dz, addlen * sizeof(bf16)));
        CK(cudaMalloc(&dz2, addlen * sizeof(bf16)));
    }
    CK(cudaMalloc(&x, maxlen * sizeof(bf16)));
    CK(cudaMalloc(&y, maxlen * sizeof(bf16)));
    CK(cudaMalloc(&dy, maxlen * sizeof(bf16)));
    CK(cudaMalloc(&dx, maxlen * sizeof(bf16)));
    CK(cudaMalloc(&y2, maxlen * sizeof(bf16)));
    CK(cudaMalloc(&dx2, maxlen * sizeof(bf16)));
    /* gamma, beta, running mean, running var, dgamma, dbeta, saved mean, saved inv var */
    CK(cudaMalloc(&par, 8 * (size_t)cmax * sizeof(float)));
    CK(cudaMalloc(&aux, 7 * (size_t)cmax * sizeof(float)));
    CK(cudaMalloc(&partial, (size_t)PMAX * 2 * cmax * sizeof(float)));
    size_t ws_bytes = 0, rs_bytes = 0;
    const double eps = 1e-5, mom = 0.1;
    int sms = 0;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));

    printf("# BN layers of resnet50 at 224 px, n=%d, bf16 NHWC (fp32 statistics), %s; times in us (median of %d x %d)\n",
           n, gpu, repeats, iters);
    printf("# %-14s %4s %5s %10s %10s %10s %10s %9s %7s %7s\n", "h x w x c", "relu", "count", "ours fwd",
           "cuDNN fwd", "ours bwd", "cuDNN bwd", "maxdiff", "dx off", "verify");
    double tot[4] = {0, 0, 0, 0}, worst = 0;
    /* BN + residual add + ReLU: ours (BN, then the add kernel) against cuDNN's
     * BN_ADD_ACTIVATION, per shape; printed as a second table */
    struct add_row {
        char nm[32];
        int count;
        double of, cf, ob, cb, md;
        size_t off, flips;
        const char *verdict;
    };
    std::vector<add_row> adds;
    int add_ok = 1, add_cudnn_ok = 1;
    int all_ok = 1, cudnn_ok = 1;
    ih_rng r = ih_rng_make(5, 0, 0);
    for (auto &b : shapes) {
        const int c = b.c;
        const size_t m = (size_t)n * b.h * b.w, len = m * c;
        fill(x, len, 11u + (uint32_t)c, 2.0f, 0.5f);
        fill(dy, len, 17u + (uint32_t)c, 1.0f, 0.0f);
        std::vector<float> hp(8 * (size_t)c, 0.f);
        for (int i = 0; i < c; i++) {
            hp[i] = (float)(0.5 + ih_rng_uniform(&r)); /* gamma */
            hp[c + i] = (float)(0.2 * ih_rng_normal(&r)); /* beta */
            hp[3 * c + i] = 1.f;                      /* running var */
        }
        CK(cudaMemcpy(par, hp.data(), hp.size() * sizeof(float), cudaMemcpyHostToDevice));
        float *gamma = par, *beta = par + c, *rm = par + 2 * c, *rv = par + 3 * c, *dgam = par + 4 * c,
              *dbet = par + 5 * c, *smean = par + 6 * c, *sinv = par + 7 * c;

        auto ours_fwd = [&]() {
            if (bn_train_fwd<bf16, bf16>(st, sms, x, y, m, c, NULL, partial, gamma, beta, aux, rm, rv, mom, eps,
                                         b.relu) != IH_OK) {
                fprintf(stderr, "bench_bn: %s\n", ih_last_error());
                exit(1);
            }
        };
        auto ours_bwd = [&]() {
            if (bn_train_bwd<bf16, bf16>(st, sms, x, dy, y, dx, 0, m, c, partial, gamma, dgam, dbet, aux, 1.0,
                                         b.relu) != IH_OK) {
                fprintf(stderr, "bench_bn: %s\n", ih_last_error());
                exit(1);
            }
        };

        /* cuDNN: NHWC bf16 x/y/dy/dx, fp32 derived per-channel tensors */
        ex_bn ex(dnn, n, b, &ws, &ws_bytes, &rs, &rs_bytes);
        const cudnnBatchNormOps_t ops = b.relu ? CUDNN_BATCHNORM_OPS_BN_ACTIVATION : CUDNN_BATCHNORM_OPS_BN;
        cudnnStatus_t s = ex.plan(ops);
        auto cudnn_fwd = [&]() { return ex.fwd(ops, x, NULL, y2, gamma, beta, mom, rm, rv, eps, smean, sinv); };
        auto cudnn_bwd = [&]() {
            return ex.bwd(ops, x, y2, dy, NULL, dx2, gamma, beta, dgam, dbet, 1.f, eps, smean, sinv);
        };
        double tf = NAN, tcf = NAN, tb = NAN, tcb = NAN, md = NAN;
        size_t dxoff = 0;
        const char *verdict = "na";
        /* correctness first: one of each, then compare */
        ours_fwd();
        ours_bwd();
        if (s == CUDNN_STATUS_SUCCESS) s = cudnn_fwd();
        if (s == CUDNN_STATUS_SUCCESS) s = cudnn_bwd();
        CK(cudaDeviceSynchronize());
        if (s == CUDNN_STATUS_SUCCESS) {
            /* the first rows (every channel; statistics are over all rows, so a wrong one shows) */
            const size_t cmpn = std::min(len, (size_t)1 << 22);
            const double tol = 1.0 / 128;
            size_t yoff = 0;
            md = dev_maxdiff(y, y2, cmpn, tol, &yoff);
            (void)dev_maxdiff(dx, dx2, cmpn, tol, &dxoff);
            const int ok = yoff == 0 && dxoff * 100000 <= cmpn;
            verdict = ok ? "ok" : "DIFF";
            all_ok &= ok;
            worst = std::max(worst, md);
            tcf = time_ms([&]() { (void)cudnn_fwd(); }, iters, repeats);
            tcb = time_ms([&]() { (void)cudnn_bwd(); }, iters, repeats);
        } else {
            cudnn_ok = 0;
            fprintf(stderr, "bench_bn: cuDNN BN on %dx%dx%d (relu %d): %s\n", b.h, b.w, c, b.relu,
                    cudnnGetErrorString(s));
        }
        tf = time_ms(ours_fwd, iters, repeats);
        tb = time_ms(ours_bwd, iters, repeats);
        CK(cudaGetLastError());
        char nm[32];
        snprintf(nm, sizeof nm, "%dx%dx%d", b.h, b.w, c);
        printf("  %-14s %4d %5d %10.1f %10.1f %10.1f %10.1f %9.2e %7zu %7s\n", nm, b.relu, b.count, 1e3 * tf,
               1e3 * tcf, 1e3 * tb, 1e3 * tcb, md, dxoff, verdict);
        tot[0] += b.count * tf;
        tot[1] += b.count * tcf;
        tot[2] += b.count * tb;
        tot[3] += b.count * tcb;
        if (b.add) {
            add_row ar = {"", b.count, NAN, NAN, NAN, NAN, NAN, 0, 0, "na"};
            snprintf(ar.nm, sizeof ar.nm, "%dx%dx%d", b.h, b.w, c);
            fill(z, len, 23u + (uint32_t)c, 1.0f, 0.2f);
            const bool v8 = c % 8 == 0;
            const unsigned gb = model_cuda_grid(sms, v8 ? len / 8 : len, 256);
            auto ours_fwd_add = [&]() {
                if (bn_train_fwd<bf16, bf16>(st, sms, x, y, m, c, NULL, partial, gamma, beta, aux, rm, rv, mom, eps, 0) !=
                    IH_OK) {
                    fprintf(stderr, "bench_bn: %s\n", ih_last_error());
                    exit(1);
                }
                if (v8) add_fwd_k<bf16, 8><<<gb, 256, 0, st>>>(y, z, ya, len, 1);
                else add_fwd_k<bf16, 1><<<gb, 256, 0, st>>>(y, z, ya, len, 1);
            };
            auto ours_bwd_add = [&]() {
                if (v8) add_bwd_k<bf16, 8><<<gb, 256, 0, st>>>(dy, ya, dbn, 0, dz, 0, len, 1);
                else add_bwd_k<bf16, 1><<<gb, 256, 0, st>>>(dy, ya, dbn, 0, dz, 0, len, 1);
                if (bn_train_bwd<bf16, bf16>(st, sms, x, dbn, y, dx, 0, m, c, partial, gamma, dgam, dbet, aux, 1.0, 0) !=
                    IH_OK) {
                    fprintf(stderr, "bench_bn: %s\n", ih_last_error());
                    exit(1);
                }
            };
            const cudnnBatchNormOps_t ops2 = CUDNN_BATCHNORM_OPS_BN_ADD_ACTIVATION;
            cudnnStatus_t s2 = s == CUDNN_STATUS_SUCCESS ? ex.plan(ops2) : s;
            auto cudnn_fwd_add = [&]() { return ex.fwd(ops2, x, z, y2a, gamma, beta, mom, rm, rv, eps, smean, sinv); };
            auto cudnn_bwd_add = [&]() {
                return ex.bwd(ops2, x, y2a, dy, dz2, dx2, gamma, beta, dgam, dbet, 1.f, eps, smean, sinv);
            };
            ours_fwd_add();
            ours_bwd_add();
            CK(cudaGetLastError());
            if (s2 == CUDNN_STATUS_SUCCESS) s2 = cudnn_fwd_add();
            if (s2 == CUDNN_STATUS_SUCCESS) s2 = cudnn_bwd_add();
            CK(cudaDeviceSynchronize());
            if (s2 == CUDNN_STATUS_SUCCESS) {
                const size_t cmpn = std::min(len, (size_t)1 << 22);
                const double tol = 1.0 / 128;
                size_t yoff = 0, dxo = 0, dzo = 0, fl = 0;
                const std::vector<float> hy = down_bf16(ya, cmpn), hy2 = down_bf16(y2a, cmpn);
                ar.md = rel_maxdiff(hy, hy2, tol, &yoff);
                /* ours rounds the BN's output to bf16 before the add, cuDNN rounds once: where
                 * the sum lies within that rounding of 0 the ReLU masks may differ (y agreeing
                 * within tol bounds how far from 0), and dx, dz with them; elsewhere they agree */
                (void)masked_maxdiff(hy, hy2, dx, dx2, tol, &dxo, &fl);
                (void)masked_maxdiff(hy, hy2, dz, dz2, tol, &dzo, &ar.flips);
                ar.off = dxo + dzo;
                const int ok = yoff == 0 && ar.off * 100000 <= 2 * cmpn && ar.flips * 100 <= cmpn;
                ar.verdict = ok ? "ok" : "DIFF";
                add_ok &= ok;
                ar.cf = time_ms([&]() { (void)cudnn_fwd_add(); }, iters, repeats);
                ar.cb = time_ms([&]() { (void)cudnn_bwd_add(); }, iters, repeats);
            } else {
                add_cudnn_ok = 0;
                fprintf(stderr, "bench_bn: cuDNN BN_ADD_ACTIVATION on %dx%dx%d: %s\n", b.h, b.w, c,
                        cudnnGetErrorString(s2));
            }
            ar.of = time_ms(ours_fwd_add, iters, repeats);
            ar.ob = time_ms(ours_bwd_add, iters, repeats);
            CK(cudaGetLastError());
            adds.push_back(ar);
        }
    }
    int nbn = 0;
    for (auto &b : shapes) nbn += b.count;
    char nm[32];
    snprintf(nm, sizeof nm, "all %d BNs", nbn);
    printf("  %-14s %4s %5d %10.1f %10.1f %10.1f %10.1f %9.2e %7s %7s\n", nm, "", nbn, 1e3 * tot[0],
           1e3 * tot[1], 1e3 * tot[2], 1e3 * tot[3], worst, "", cudnn_ok ? (all_ok ? "ok" : "DIFF") : "na");
    double ratio = cudnn_ok ? (tot[1] + tot[3]) / (tot[0] + tot[2]) : NAN;
    printf("# cuDNN fwd+bwd / ours fwd+bwd = %.2f (> 1: ours faster)\n", ratio);
    /* the residual joins: BN + add + ReLU, ours (two kernels' worth of passes) vs cuDNN's fused */
    double at[4] = {0, 0, 0, 0}, aworst = 0;
    int nadd = 0;
    printf("# BN + residual add + ReLU (each block's last BN and its join): ours = BN, then the add kernel; "
           "cuDNN = CUDNN_BATCHNORM_OPS_BN_ADD_ACTIVATION\n");
    printf("# %-14s %5s %10s %10s %10s %10s %9s %7s %7s %7s\n", "h x w x c", "count", "ours fwd", "cuDNN fwd", "ours bwd",
           "cuDNN bwd", "maxdiff", "flips", "dxz off", "verify");
    for (auto &a : adds) {
        printf("  %-14s %5d %10.1f %10.1f %10.1f %10.1f %9.2e %7zu %7zu %7s\n", a.nm, a.count, 1e3 * a.of, 1e3 * a.cf,
               1e3 * a.ob, 1e3 * a.cb, a.md, a.flips, a.off, a.verdict);
        at[0] += a.count * a.of;
        at[1] += a.count * a.cf;
        at[2] += a.count * a.ob;
        at[3] += a.count * a.cb;
        aworst = std::max(aworst, a.md);
        nadd += a.count;
    }
    snprintf(nm, sizeof nm, "all %d joins", nadd);
    printf("  %-14s %5d %10.1f %10.1f %10.1f %10.1f %9.2e %7s %7s %7s\n", nm, nadd, 1e3 * at[0], 1e3 * at[1],
           1e3 * at[2], 1e3 * at[3], aworst, "", "", add_cudnn_ok && nadd ? (add_ok ? "ok" : "DIFF") : "na");
    double aratio = add_cudnn_ok && nadd ? (at[1] + at[3]) / (at[0] + at[2]) : NAN;
    printf("# cuDNN BN_ADD_ACTIVATION fwd+bwd / ours (BN + add) fwd+bwd = %.2f (> 1: ours faster)\n", aratio);
    printf("RESULT gpu=%s n=%d ours_fwd_ms=%.3f cudnn_fwd_ms=%.3f ours_bwd_ms=%.3f cudnn_bwd_ms=%.3f "
           "cudnn_over_ours=%.2f maxdiff=%.2e ok=%d add_ours_ms=%.3f add_cudnn_ms=%.3f add_cudnn_over_ours=%.2f "
           "add_ok=%d\n",
           gpu, n, tot[0], tot[1], tot[2], tot[3], ratio, worst, cudnn_ok && all_ok, at[0] + at[2], at[1] + at[3],
           aratio, add_cudnn_ok && add_ok && nadd > 0);
    cudnnDestroy(dnn);
    return cudnn_ok && all_ok ? 0 : 1;
}
