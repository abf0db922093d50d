/* bench_train_step — training-step throughput of the model on synthetic input: forward,
 * softmax cross-entropy and backward (gradients accumulate; no optimiser), uint8 HWC images
 * copied from host memory and normalised inside the step, as the trainer feeds it.
 * Verifies first (one step: finite loss near ln(classes) -> "ok", else "WRONG"), warms up,
 * then times --repeats runs of --iters steps and prints the median and p10/p90 of
 * img/s = batch * iters / seconds. Compare with bench/torch_train_step.py in the same run
 * (scripts/gpu_check.sh does).
 *   bench_train_step [--backend=cuda|cpu] [--arch=resnet50] [--batch=32] [--image-size=224]
 *                    [--classes=1000] [--prec=bf16|fp32] [--iters=20] [--repeats=5] [--warmup=10]
 * Last line: "BENCH ours arch=.. n=.. prec=.. img_s=<median> ok=<0|1>".
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/rng.h"
#include "model/model.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const char *arch = "resnet50";
    int n = 32, size = 224, classes = 1000, iters = 20, repeats = 5, warmup = 10;
    model_backend be = MODEL_BACKEND_CUDA;
    model_precision prec = MODEL_PREC_BF16;
    static const struct option opts[] = {
        {"backend", required_argument, 0, 'b'}, {"arch", required_argument, 0, 'a'},
        {"batch", required_argument, 0, 'n'},   {"image-size", required_argument, 0, 's'},
        {"classes", required_argument, 0, 'k'}, {"prec", required_argument, 0, 'p'},
        {"iters", required_argument, 0, 'i'},   {"repeats", required_argument, 0, 'r'},
        {"warmup", required_argument, 0, 'w'},  {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'b': be = !strcmp(optarg, "cpu") ? MODEL_BACKEND_CPU : MODEL_BACKEND_CUDA; break;
        case 'a': arch = optarg; break;
        case 'n': n = atoi(optarg); break;
        case 's': size = atoi(optarg); break;
        case 'k': classes = atoi(optarg); break;
        case 'p': prec = !strcmp(optarg, "fp32") ? MODEL_PREC_FP32 : MODEL_PREC_BF16; break;
        case 'i': iters = atoi(optarg); break;
        case 'r': repeats = atoi(optarg); break;
        case 'w': warmup = atoi(optarg); break;
        default: fprintf(stderr, "usage: see the header of bench/bench_train_step.c\n"); return 2;
        }
    }
    if (be == MODEL_BACKEND_CPU) prec = MODEL_PREC_FP32;
    if (n < 1 || iters < 1 || repeats < 1 || repeats > 100 || warmup < 0) {
        fprintf(stderr, "bench_train_step: --batch, --iters >= 1, --repeats in [1, 100]\n");
        return 2;
    }
    char why[200];
    if (!model_backend_available(be, why, sizeof why)) {
        printf("# SKIP: %s\n", why);
        return 77;
    }
    model_cfg cfg = {arch, classes, size, n, be, 0.1f, 1e-5f};
    model_net *m = NULL;
    double t0 = now();
    if (model_net_create_prec(&m, &cfg, prec) != IH_OK) {
        fprintf(stderr, "bench_train_step: %s\n", ih_last_error());
        return 1;
    }
    double t_create = now() - t0;
    model_init_params(m, 1);
    size_t nimg = (size_t)n * size * size * 3;
    uint8_t *img = malloc(nimg);
    int32_t *lab = malloc((size_t)n * sizeof(int32_t));
    ih_rng r = ih_rng_make(3, 0, 0);
    for (size_t i = 0; i < nimg; i++) img[i] = (uint8_t)ih_rng_below(&r, 256);
    for (int i = 0; i < n; i++) lab[i] = (int32_t)ih_rng_below(&r, (uint64_t)classes);

    double loss = 0;
    int ok = model_train_step(m, img, lab, n, 1.0f / n, &loss, NULL) == IH_OK && isfinite(loss) &&
             fabs(loss / n - log((double)classes)) < 1.0;
    if (!ok) fprintf(stderr, "bench_train_step: verify step: loss/n %g (want ~%g) %s\n", loss / n,
                     log((double)classes), ih_last_error());
    for (int i = 0; i < warmup; i++) model_train_step(m, img, lab, n, 1.0f / n, NULL, NULL);
    model_train_step(m, img, lab, n, 1.0f / n, &loss, NULL); /* drains the queue */
    double ips[100];
    for (int rep = 0; rep < repeats; rep++) {
        double t = now();
        for (int i = 0; i < iters; i++) /* the last step asks for the loss: waits for all */
            if (model_train_step(m, img, lab, n, 1.0f / n, i == iters - 1 ? &loss : NULL, NULL) != IH_OK) {
                fprintf(stderr, "bench_train_step: %s\n", ih_last_error());
                return 1;
            }
        ips[rep] = (double)n * iters / (now() - t);
    }
    ok = ok && isfinite(loss);
    qsort(ips, (size_t)repeats, sizeof ips[0], cmp_dbl);
    double med = ips[repeats / 2], p10 = ips[repeats / 10], p90 = ips[repeats - 1 - repeats / 10];
    printf("# %-9s %-5s %-6s %5s %9s %11s %10s %10s %7s\n", "arch", "dev", "prec", "n",
           "create(s)", "median(i/s)", "p10(i/s)", "p90(i/s)", "verify");
    printf("  %-9s %-5s %-6s %5d %9.2f %11.1f %10.1f %10.1f %7s\n", arch,
           be == MODEL_BACKEND_CUDA ? "cuda" : "cpu", prec == MODEL_PREC_BF16 ? "bf16" : "fp32", n,
           t_create, med, p10, p90, ok ? "ok" : "WRONG");
    printf("BENCH ours arch=%s n=%d prec=%s img_s=%.1f ok=%d\n", arch, n,
           prec == MODEL_PREC_BF16 ? "bf16" : "fp32", med, ok);
    model_net_destroy(m);
    free(img);
    free(lab);
    return ok ? 0 : 1;
}
