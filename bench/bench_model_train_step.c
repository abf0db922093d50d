/* bench_model_train_step — img/s of model_train_step (forward + loss + backward) on the CPU.
 *
 * Run: OPENBLAS_NUM_THREADS=2 build/bench/bench_model_train_step [arch] [image_size]
 *      [batch] [steps]     (defaults: resnet20 32 64 10)
 * Prints the median, min and max step time over `steps` timed steps after 2 warm-up steps,
 * img/s = batch / median step time, the same for a forward-only pass measured interleaved
 * (the same-run baseline) and OpenBLAS sgemm GFLOP/s as the ceiling, then a RESULT line.
 * Random images and labels; 10 classes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "core/clock.h"
#include "core/rng.h"
#include "model/model.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const char *arch = argc > 1 ? argv[1] : "resnet20";
    int size = argc > 2 ? atoi(argv[2]) : 32, batch = argc > 3 ? atoi(argv[3]) : 64;
    int steps = argc > 4 ? atoi(argv[4]) : 10;
    if (size < 1 || batch < 1 || steps < 1 || steps > 1000) {
        fprintf(stderr, "usage: %s [arch] [image_size] [batch] [steps<=1000]\n", argv[0]);
        return 2;
    }
    model_cfg cfg = {arch, 10, size, batch, MODEL_BACKEND_CPU, 0.1f, 1e-5f};
    model_net *m;
    if (model_net_create(&m, &cfg) != IH_OK) {
        fprintf(stderr, "%s\n", ih_last_error());
        return 1;
    }
    model_init_params(m, 1);
    size_t img = (size_t)batch * size * size * 3;
    uint8_t *images = malloc(img);
    int32_t *labels = malloc((size_t)batch * sizeof(int32_t));
    if (!images || !labels) return 1;
    ih_rng r = ih_rng_make(1, 2, 3);
    for (size_t i = 0; i < img; i++) images[i] = (uint8_t)ih_rng_below(&r, 256);
    for (int i = 0; i < batch; i++) labels[i] = (int32_t)ih_rng_below(&r, 10);
    /* Interleaved with each timed train step: a forward-only pass (model_eval_logits) of the
     * same batch, the baseline in the same run (a train step costs about 3 forwards). */
    float *logits = malloc((size_t)batch * 10 * sizeof(float));
    if (!logits) return 1;
    double t[1000], tf[1000];
    for (int s = -2; s < steps; s++) {
        double t0 = ih_now_s(), loss;
        model_zero_grads(m);
        if (model_train_step(m, images, labels, batch, 1.0f / batch, &loss, NULL) != IH_OK) {
            fprintf(stderr, "%s\n", ih_last_error());
            return 1;
        }
        double t1 = ih_now_s();
        if (model_eval_logits(m, images, batch, logits) != IH_OK) {
            fprintf(stderr, "%s\n", ih_last_error());
            return 1;
        }
        if (s >= 0) {
            t[s] = t1 - t0;
            tf[s] = ih_now_s() - t1;
        }
    }
    qsort(t, (size_t)steps, sizeof(double), cmp_double);
    qsort(tf, (size_t)steps, sizeof(double), cmp_double);
    /* Ceiling: OpenBLAS sgemm on 512x512x512 (what the convolutions' GEMMs run on), GFLOP/s =
     * 2*M*N*K / time, median of 5. */
    enum { G = 512 };
    float *a = malloc(sizeof(float) * G * G), *b = malloc(sizeof(float) * G * G), *c = malloc(sizeof(float) * G * G);
    if (!a || !b || !c) return 1;
    for (int i = 0; i < G * G; i++) { a[i] = (float)(i % 7); b[i] = (float)(i % 5); }
    double tg[5];
    for (int i = -1; i < 5; i++) {
        double t0 = ih_now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, G, G, G, 1.0f, a, G, b, G, 0.0f, c, G);
        if (i >= 0) tg[i] = ih_now_s() - t0;
    }
    qsort(tg, 5, sizeof(double), cmp_double);
    const double gflops = 2.0 * G * G * G / tg[2] * 1e-9;
    const char *thr = getenv("OPENBLAS_NUM_THREADS");
    printf("# arch      size batch params   blas_thr train_med_ms min_ms  max_ms  train_img/s fwd_med_ms fwd_img/s train/fwd sgemm_GFLOP/s\n");
    printf("%-10s %5d %5d %8zu %8s %12.1f %7.1f %7.1f %11.1f %10.1f %9.1f %9.2f %13.1f\n", arch, size, batch,
           model_num_params(m), thr ? thr : "-", t[steps / 2] * 1e3, t[0] * 1e3, t[steps - 1] * 1e3,
           batch / t[steps / 2], tf[steps / 2] * 1e3, batch / tf[steps / 2], t[steps / 2] / tf[steps / 2], gflops);
    printf("# train/fwd = median train-step time / median forward-only time (about 3 when backward costs 2 forwards)\n");
    printf("RESULT arch=%s batch=%d train_img_s=%.1f fwd_img_s=%.1f train_over_fwd=%.2f sgemm_gflops=%.1f\n", arch,
           batch, batch / t[steps / 2], batch / tf[steps / 2], t[steps / 2] / tf[steps / 2], gflops);
    free(a);
    free(b);
    free(c);
    free(logits);
    free(images);
    free(labels);
    model_net_destroy(m);
    return 0;
}
