/* core/err.h — the project's error codes, checked-call macros and invariants.
 *
 * Functions that can fail for reasons outside our control return ih_err and set a
 * thread-local message (ih_last_error()). The code says who must act: the user (USAGE,
 * DATA), the machine (SYS, CUDA, NET), another rank (REMOTE, TIMEOUT) or us (INTERNAL).
 * IH_ASSERT is for programmer errors and is on in every build.
 */
#ifndef IH_ERR_H
#define IH_ERR_H

#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    IH_OK = 0,
    IH_E_USAGE,    /* bad flag, bad path, bad config: the user fixes the command */
    IH_E_DATA,     /* bad input data: the user fixes the dataset */
    IH_E_SYS,      /* OS call failed (errno): the machine */
    IH_E_CUDA,     /* CUDA/cuDNN/cuBLAS/NCCL failed: the machine */
    IH_E_NET,      /* network/fabric failed: the machine */
    IH_E_REMOTE,   /* another rank failed */
    IH_E_TIMEOUT,  /* a wait ran out: names the peer */
    IH_E_INTERNAL  /* a bug in imagenet-1h */
} ih_err;

/* Name of a code ("IH_E_DATA"). Never NULL. Any thread. */
const char *ih_err_name(ih_err e);

/* Sets this thread's last error message (printf-style) and returns `code`, so that
 * `return ih_fail(IH_E_DATA, "...")` reads naturally. Any thread; never blocks. */
ih_err ih_fail(ih_err code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* This thread's last error message ("" if none). Valid until the next ih_fail on this
 * thread. */
const char *ih_last_error(void);

/* Copies a message into this thread's last error (used to carry a worker thread's sticky
 * error to the thread that waits on it). */
void ih_set_last_error(const char *msg);

/* Logs one TRACE line for error propagation (see IH_TRY). */
void ih_err_trace(ih_err e, const char *file, int line);

#define IH_TRY(call)                                   \
    do {                                               \
        ih_err ih_try_e_ = (call);                     \
        if (ih_try_e_ != IH_OK) {                      \
            ih_err_trace(ih_try_e_, __FILE__, __LINE__); \
            return ih_try_e_;                          \
        }                                              \
    } while (0)

#define IH_TRY_GOTO(call, errvar, label)               \
    do {                                               \
        (errvar) = (call);                             \
        if ((errvar) != IH_OK) {                       \
            ih_err_trace((errvar), __FILE__, __LINE__); \
            goto label;                                \
        }                                              \
    } while (0)

void ih_assert_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

#define IH_ASSERT(cond, ...)                                        \
    do {                                                            \
        if (!(cond)) ih_assert_fail(__FILE__, __LINE__, #cond, __VA_ARGS__); \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
