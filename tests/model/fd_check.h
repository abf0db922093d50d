/* tests/model/fd_check.h — helpers for the model tests (header-only): central finite
 * differences in float64, seeded random fills, and an array comparison that prints the
 * tensor name, the max abs and rel diff and the first 5 mismatches, as STYLE.md asks. */
#ifndef IH_TESTS_MODEL_FD_CHECK_H
#define IH_TESTS_MODEL_FD_CHECK_H

#include <math.h>
#include <stddef.h>
#include <stdio.h>

#include "core/rng.h"
#include "tests/check.h"

typedef double (*fd_loss_fn)(void *ctx);

/* out[i] = (f(v + h e_i) - f(v - h e_i)) / 2h for i < n; v is restored. */
static inline void fd_grad(fd_loss_fn f, void *ctx, double *v, size_t n, double h, double *out)
{
    for (size_t i = 0; i < n; i++) {
        double save = v[i];
        v[i] = save + h;
        double lp = f(ctx);
        v[i] = save - h;
        double lm = f(ctx);
        v[i] = save;
        out[i] = (lp - lm) / (2 * h);
    }
}

static inline void fill_normal(double *v, size_t n, uint64_t seed, uint64_t stream, double scale)
{
    ih_rng r = ih_rng_make(seed, stream, 0);
    for (size_t i = 0; i < n; i++) v[i] = scale * ih_rng_normal(&r);
}

/* Checks |got-ref| <= atol + rtol|ref| elementwise; on failure prints the report. Returns the
 * number of mismatches and counts one CHECK. */
static inline size_t compare_arrays(const char *name, const double *got, const double *ref,
                                    size_t n, double atol, double rtol)
{
    double max_abs = 0, max_rel = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(got[i] - ref[i]), rel = d / (fabs(ref[i]) + 1e-30);
        if (d > max_abs) max_abs = d;
        if (rel > max_rel && fabs(ref[i]) > atol) max_rel = rel;
        if (!ih_close(got[i], ref[i], atol, rtol)) {
            if (bad < 5)
                fprintf(stderr, "  %s[%zu]: ref %.10g got %.10g\n", name, i, ref[i], got[i]);
            bad++;
        }
    }
    CHECK(bad == 0, "%s: %zu of %zu mismatches (atol %g rtol %g), max abs diff %.3g, max rel diff "
          "%.3g", name, bad, n, atol, rtol, max_abs, max_rel);
    return bad;
}

#endif
