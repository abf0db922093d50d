/* test_schedule_paper — lr at chosen iterations against values computed by hand from the
 * formulas of Goyal et al. 2017 (linear scaling, gradual warmup, step decay, cosine). */
#include "optim/schedule.h"
#include "tests/check.h"

int main(void)
{
    /* The paper's 8k setup: k*n = 8192, lr = 0.1*8192/256 = 3.2; 1,281,167 images /8192 =
     * 156 iterations per epoch (rounded down); warmup 5 epochs = 780 iterations from 0.1. */
    optim_sched s = {.base_lr = 0.1, .global_batch = 8192, .iters_per_epoch = 156,
                     .warmup_epochs = 5, .epochs = 90, .kind = OPTIM_SCHED_STEP,
                     .decay_epochs = {30, 60, 80}, .decay_factor = 0.1};
    CHECK(ih_close(optim_sched_target_lr(&s), 3.2, 0, 1e-12), "target");
    CHECK(ih_close(optim_sched_lr(&s, 0), 0.1, 0, 1e-12), "iter 0 = 0.1, got %g", optim_sched_lr(&s, 0));
    /* iter 390 is halfway through warmup: 0.1 + (3.2-0.1)/2 = 1.65 */
    CHECK(ih_close(optim_sched_lr(&s, 390), 1.65, 0, 1e-12), "mid warmup %g", optim_sched_lr(&s, 390));
    /* constant increment: (3.2-0.1)/780 per iteration */
    double inc = optim_sched_lr(&s, 101) - optim_sched_lr(&s, 100);
    CHECK(ih_close(inc, 3.1 / 780, 0, 1e-9), "increment %g", inc);
    CHECK(ih_close(optim_sched_lr(&s, 780), 3.2, 0, 1e-12), "end of warmup");
    CHECK(ih_close(optim_sched_lr(&s, 30 * 156 - 1), 3.2, 0, 1e-12), "before first decay");
    CHECK(ih_close(optim_sched_lr(&s, 30 * 156), 0.32, 0, 1e-12), "epoch 30 -> 0.32");
    CHECK(ih_close(optim_sched_lr(&s, 60 * 156), 0.032, 0, 1e-12), "epoch 60 -> 0.032");
    CHECK(ih_close(optim_sched_lr(&s, 85 * 156), 0.0032, 0, 1e-12), "epoch 85 -> 0.0032");

    /* Batch 256 (k*n = 256): target = base = 0.1, warmup is flat. */
    optim_sched t = s;
    t.global_batch = 256;
    t.iters_per_epoch = 5004;
    CHECK(ih_close(optim_sched_lr(&t, 0), 0.1, 0, 1e-12), "256: flat warmup");
    CHECK(ih_close(optim_sched_lr(&t, 1000), 0.1, 0, 1e-12), "256: flat warmup");
    /* Batch 64: target 0.025 < base; warmup starts at the target (no ramp up). */
    t.global_batch = 64;
    CHECK(ih_close(optim_sched_lr(&t, 0), 0.025, 0, 1e-12), "64: %g", optim_sched_lr(&t, 0));

    /* Cosine, no warmup, 10 epochs of 100 iterations, target 3.2: at epoch 5 lr = 1.6,
     * at epoch 2.5 lr = 3.2*(1+cos(pi/4))/2. */
    optim_sched c = s;
    c.kind = OPTIM_SCHED_COSINE;
    c.warmup_epochs = 0;
    c.iters_per_epoch = 100;
    c.epochs = 10;
    CHECK(ih_close(optim_sched_lr(&c, 0), 3.2, 0, 1e-12), "cos start");
    CHECK(ih_close(optim_sched_lr(&c, 500), 1.6, 0, 1e-12), "cos mid %g", optim_sched_lr(&c, 500));
    CHECK(ih_close(optim_sched_lr(&c, 250), 3.2 * (1 + 0.70710678118654752) / 2, 0, 1e-12), "cos quarter");
    return ih_test_result();
}
