/* core/clock.h — monotonic time. Header-only. */
#ifndef IH_CLOCK_H
#define IH_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t ih_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline double ih_now_s(void) { return (double)ih_now_ns() * 1e-9; }

/* Absolute CLOCK_REALTIME deadline `ms` from now, for pthread_cond_timedwait. */
static inline struct timespec ih_deadline_ms(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    return ts;
}

#endif
