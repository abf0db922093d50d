/* test_crop_params — RandomResizedCrop boxes follow torchvision's definition: inside the
 * image, area fraction in [min_scale, max_scale] and aspect in [min_aspect, max_aspect] up
 * to integer rounding, log-aspect centred, both ends of the scale range reached, flip rate
 * 0.5; the fallback is the central crop with clamped aspect; same key -> same box; the eval
 * box is torchvision's Resize(256) + CenterCrop(224) mapped back to the source. */
#include <math.h>
#include <string.h>

#include "pipeline/augment.h"
#include "tests/check.h"

/* Field by field: memcmp would also compare the struct's padding, which nobody sets (it
 * differed under ASan). */
static int same_box(const pipe_crop *a, const pipe_crop *b)
{
    return a->x == b->x && a->y == b->y && a->w == b->w && a->h == b->h && a->flip == b->flip;
}

int main(void)
{
    pipe_rrc p = {0.08f, 1.0f, 3.0f / 4.0f, 4.0f / 3.0f};
    const int W = 500, H = 375, N = 40000;
    int flips = 0, fallback = 0;
    double min_a = 1, max_a = 0, sum_log_ar = 0;
    for (int i = 0; i < N; i++) {
        pipe_crop c, c2;
        pipe_crop_train(7, 3, (uint64_t)i, W, H, &p, &c);
        pipe_crop_train(7, 3, (uint64_t)i, W, H, &p, &c2);
        CHECK(same_box(&c, &c2), "sample %d: same key, different box", i);
        CHECK(c.x >= 0 && c.y >= 0 && c.x + c.w <= W && c.y + c.h <= H && c.w >= 1 && c.h >= 1,
              "sample %d: box (%g,%g,%g,%g) outside %dx%d", i, c.x, c.y, c.w, c.h, W, H);
        CHECK(c.x == floor(c.x) && c.w == floor(c.w), "integer boxes");
        double a = c.w * c.h / (W * H), ar = c.w / c.h;
        if (c.w == W && c.h == H) fallback++;
        /* Rounding w and h to integers moves area and aspect by at most ~1/side each. */
        double tol_a = (c.w + c.h + 1) / (W * H), tol_ar = ar * (1 / c.w + 1 / c.h);
        CHECK(a >= p.min_scale - tol_a && a <= p.max_scale + tol_a, "sample %d: area fraction %g", i, a);
        CHECK(ar >= p.min_aspect - tol_ar && ar <= p.max_aspect + tol_ar, "sample %d: aspect %g", i, ar);
        if (a < min_a) min_a = a;
        if (a > max_a) max_a = a;
        sum_log_ar += log(ar);
        flips += c.flip;
    }
    double fr = (double)flips / N;
    CHECK(fabs(fr - 0.5) < 0.015, "flip rate %g", fr); /* 6 sigma = 0.015 at N = 40000 */
    CHECK(min_a < 0.085 && max_a > 0.95, "area range reached [%g, %g]", min_a, max_a);
    /* On a landscape image wide boxes fit more often, so the accepted aspects lean wide; on
     * a square image the log-uniform draw must come out symmetric. */
    CHECK(sum_log_ar / N > 0.0, "landscape image: mean log aspect %g should lean wide", sum_log_ar / N);
    sum_log_ar = 0;
    for (int i = 0; i < N; i++) {
        pipe_crop c;
        pipe_crop_train(9, 0, (uint64_t)i, 400, 400, &p, &c);
        sum_log_ar += log(c.w / c.h);
    }
    CHECK(fabs(sum_log_ar / N) < 0.005, "square image: mean log aspect %g, want 0", sum_log_ar / N);
    CHECK(fallback < N / 100, "%d fallbacks for an ordinary image", fallback);

    /* A different epoch or seed draws different boxes. */
    pipe_crop a0, a1, a2;
    int same_e = 0, same_s = 0;
    for (int i = 0; i < 100; i++) {
        pipe_crop_train(7, 3, (uint64_t)i, W, H, &p, &a0);
        pipe_crop_train(7, 4, (uint64_t)i, W, H, &p, &a1);
        pipe_crop_train(8, 3, (uint64_t)i, W, H, &p, &a2);
        same_e += same_box(&a0, &a1);
        same_s += same_box(&a0, &a2);
    }
    CHECK(same_e < 5 && same_s < 5, "epochs/seeds not independent: %d %d", same_e, same_s);

    /* Fallback: a 1000x10 strip with scale (0.9, 1) cannot fit any aspect in [3/4, 4/3]:
     * central crop of width round(10 * 4/3) = 13. */
    pipe_rrc q = {0.9f, 1.0f, 3.0f / 4.0f, 4.0f / 3.0f};
    pipe_crop f;
    pipe_crop_train(1, 0, 0, 1000, 10, &q, &f);
    CHECK(f.w == 13 && f.h == 10 && f.x == (1000 - 13) / 2 && f.y == 0, "fallback box (%g,%g,%g,%g)", f.x, f.y, f.w,
          f.h);
    pipe_crop_train(1, 0, 0, 10, 1000, &q, &f);
    CHECK(f.w == 10 && f.h == 13 && f.y == (1000 - 13) / 2, "tall fallback box (%g,%g,%g,%g)", f.x, f.y, f.w, f.h);

    /* Eval: 500x375 -> resize shorter side to 256 (factor 375/256 source px per output px),
     * center 224 -> side 224*375/256 = 328.125 source px, centred. */
    pipe_crop e;
    pipe_crop_eval(500, 375, 256, 224, &e);
    CHECK(fabs(e.w - 328.125) < 1e-9 && fabs(e.h - 328.125) < 1e-9, "eval side %g x %g", e.w, e.h);
    CHECK(fabs(e.x - (500 - 328.125) / 2) < 1e-9 && fabs(e.y - (375 - 328.125) / 2) < 1e-9 && !e.flip, "eval offset");
    pipe_crop_eval(100, 300, 256, 224, &e);
    CHECK(fabs(e.w - 87.5) < 1e-9 && fabs(e.y - (300 - 87.5) / 2) < 1e-9, "portrait eval (%g,%g,%g)", e.x, e.y, e.w);
    return ih_test_result();
}
