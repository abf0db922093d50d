/* core/ring.c — mutex + two condition variables around a circular array. The handoff
 * rate is one batch (milliseconds of work), so a lock per operation costs nothing. */
#include "ring.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "clock.h"

struct ih_ring {
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    size_t cap;
    size_t head, count; /* guarded by mu */
    int closed;         /* guarded by mu */
    uint64_t *vals;     /* guarded by mu */
};

ih_err ih_ring_create(ih_ring **out, size_t capacity)
{
    *out = NULL;
    if (capacity == 0) return ih_fail(IH_E_INTERNAL, "ih_ring_create: capacity 0");
    ih_ring *r = calloc(1, sizeof *r);
    if (!r) return ih_fail(IH_E_SYS, "out of memory creating a ring");
    r->vals = calloc(capacity, sizeof *r->vals);
    if (!r->vals) { free(r); return ih_fail(IH_E_SYS, "out of memory creating a ring"); }
    r->cap = capacity;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->not_empty, NULL);
    pthread_cond_init(&r->not_full, NULL);
    *out = r;
    return IH_OK;
}

void ih_ring_destroy(ih_ring *r)
{
    if (!r) return;
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->not_empty);
    pthread_cond_destroy(&r->not_full);
    free(r->vals);
    free(r);
}

static int wait_on(pthread_cond_t *c, pthread_mutex_t *mu, int64_t timeout_ms, const struct timespec *dl)
{
    if (timeout_ms < 0) return pthread_cond_wait(c, mu);
    return pthread_cond_timedwait(c, mu, dl);
}

ih_ring_status ih_ring_push(ih_ring *r, uint64_t v, int64_t timeout_ms)
{
    struct timespec dl = ih_deadline_ms(timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&r->mu);
    while (r->count == r->cap && !r->closed) {
        if (wait_on(&r->not_full, &r->mu, timeout_ms, &dl) == ETIMEDOUT) {
            pthread_mutex_unlock(&r->mu);
            return IH_RING_TIMEOUT;
        }
    }
    if (r->closed) { pthread_mutex_unlock(&r->mu); return IH_RING_CLOSED; }
    r->vals[(r->head + r->count) % r->cap] = v;
    r->count++;
    pthread_cond_signal(&r->not_empty);
    pthread_mutex_unlock(&r->mu);
    return IH_RING_OK;
}

ih_ring_status ih_ring_pop(ih_ring *r, uint64_t *v, int64_t timeout_ms)
{
    struct timespec dl = ih_deadline_ms(timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&r->mu);
    while (r->count == 0 && !r->closed) {
        if (wait_on(&r->not_empty, &r->mu, timeout_ms, &dl) == ETIMEDOUT) {
            pthread_mutex_unlock(&r->mu);
            return IH_RING_TIMEOUT;
        }
    }
    if (r->count == 0) { pthread_mutex_unlock(&r->mu); return IH_RING_CLOSED; }
    *v = r->vals[r->head];
    r->head = (r->head + 1) % r->cap;
    r->count--;
    pthread_cond_signal(&r->not_full);
    pthread_mutex_unlock(&r->mu);
    return IH_RING_OK;
}

void ih_ring_close(ih_ring *r)
{
    pthread_mutex_lock(&r->mu);
    r->closed = 1;
    pthread_cond_broadcast(&r->not_empty);
    pthread_cond_broadcast(&r->not_full);
    pthread_mutex_unlock(&r->mu);
}

size_t ih_ring_size(ih_ring *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->count;
    pthread_mutex_unlock(&r->mu);
    return n;
}
