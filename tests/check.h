/* tests/check.h — tiny assertion helpers shared by the test programs (header-only).
 * A failed CHECK prints file:line and the message and marks the test failed; main returns
 * ih_test_result(). Exit codes: 0 pass, 1 fail, 77 skip (SKIP() prints the reason). */
#ifndef IH_TESTS_CHECK_H
#define IH_TESTS_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int ih_test_failures;
static int ih_test_checks;

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        ih_test_checks++;                                                 \
        if (!(cond)) {                                                    \
            ih_test_failures++;                                           \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                 \
            fprintf(stderr, "\n");                                        \
        }                                                                 \
    } while (0)

#define SKIP(...)                                  \
    do {                                           \
        printf("SKIP: ");                          \
        printf(__VA_ARGS__);                       \
        printf("\n");                              \
        exit(77);                                  \
    } while (0)

static inline int ih_test_result(void)
{
    if (ih_test_failures) {
        fprintf(stderr, "%d of %d checks failed\n", ih_test_failures, ih_test_checks);
        return 1;
    }
    printf("ok: %d checks passed\n", ih_test_checks);
    return 0;
}

/* |a-b| <= atol + rtol*|ref| */
static inline int ih_close(double got, double ref, double atol, double rtol)
{
    return fabs(got - ref) <= atol + rtol * fabs(ref) && !isnan(got);
}

#endif
