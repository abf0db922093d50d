/* bench_model_train_step — img/s of model_train_step (forward + loss + backward) on the CPU.
 *
 * Run: OPENBLAS_NUM_THREADS=2 build/tests/model/bench_model_train_step [arch] [image_size]
 *      [batch] [steps]     (defaults: resnet20 32 64 10)
 * Prints the median, min and max step time over `steps` timed steps after 2 warm-up steps,
 * and img/s = batch / median step time. Random images and labels; 10 classes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    double t[1000];
    for (int s = -2; s < steps; s++) {
        double t0 = ih_now_s(), loss;
        model_zero_grads(m);
        if (model_train_step(m, images, labels, batch, 1.0f / batch, &loss, NULL) != IH_OK) {
            fprintf(stderr, "%s\n", ih_last_error());
            return 1;
        }
        if (s >= 0) t[s] = ih_now_s() - t0;
    }
    qsort(t, (size_t)steps, sizeof(double), cmp_double);
    const char *thr = getenv("OPENBLAS_NUM_THREADS");
    printf("# arch      size batch params   blas_thr  med_ms  min_ms  max_ms   img/s\n");
    printf("%-10s %5d %5d %8zu %8s %7.1f %7.1f %7.1f %7.1f\n", arch, size, batch,
           model_num_params(m), thr ? thr : "-", t[steps / 2] * 1e3, t[0] * 1e3,
           t[steps - 1] * 1e3, batch / t[steps / 2]);
    free(images);
    free(labels);
    model_net_destroy(m);
    return 0;
}
