/* test_rng_streams — the counter-based RNG: same key same stream, different keys differ,
 * uniform moments and ih_rng_below's range/uniformity within statistical bounds. */
#include "core/rng.h"
#include "tests/check.h"

int main(void)
{
    ih_rng a = ih_rng_make(1, 2, 3), b = ih_rng_make(1, 2, 3);
    int same = 1;
    for (int i = 0; i < 1000; i++) same &= ih_rng_u64(&a) == ih_rng_u64(&b);
    CHECK(same, "same key must give the same stream");
    const uint64_t keys[4][3] = {{1, 2, 4}, {1, 3, 3}, {2, 2, 3}, {1, 3, 2}};
    for (int k = 0; k < 4; k++) {
        ih_rng x = ih_rng_make(1, 2, 3), y = ih_rng_make(keys[k][0], keys[k][1], keys[k][2]);
        int eq = 0;
        for (int i = 0; i < 1000; i++) eq += ih_rng_u64(&x) == ih_rng_u64(&y);
        CHECK(eq == 0, "key %d collides with (1,2,3) in %d draws", k, eq);
    }
    /* Moments of U[0,1): mean 1/2 and variance 1/12, N = 1e6 -> std err of mean 2.9e-4. */
    ih_rng r = ih_rng_make(42, 0, 0);
    const int N = 1000000;
    double s = 0, s2 = 0;
    for (int i = 0; i < N; i++) {
        double u = ih_rng_uniform(&r);
        CHECK(u >= 0 && u < 1, "uniform out of range: %g", u);
        s += u;
        s2 += u * u;
    }
    double mean = s / N, var = s2 / N - mean * mean;
    CHECK(fabs(mean - 0.5) < 5 * 2.9e-4, "mean %g", mean);
    CHECK(fabs(var - 1.0 / 12) < 1e-3, "variance %g", var);
    /* below(7): chi-square with 6 dof; 99.99th percentile is ~27.9. */
    long cnt[7] = {0};
    for (int i = 0; i < 700000; i++) {
        uint64_t v = ih_rng_below(&r, 7);
        CHECK(v < 7, "below out of range");
        cnt[v]++;
    }
    double chi = 0;
    for (int i = 0; i < 7; i++) chi += (cnt[i] - 100000.0) * (cnt[i] - 100000.0) / 100000.0;
    CHECK(chi < 27.9, "chi-square %g", chi);
    double ns = 0, ns2 = 0;
    for (int i = 0; i < N; i++) { double z = ih_rng_normal(&r); ns += z; ns2 += z * z; }
    CHECK(fabs(ns / N) < 0.01 && fabs(ns2 / N - 1) < 0.01, "normal moments %g %g", ns / N, ns2 / N);
    return ih_test_result();
}
