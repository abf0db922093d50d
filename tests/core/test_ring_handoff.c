/* test_ring_handoff — the bounded ring delivers every value exactly once, in FIFO order per
 * producer, under 3 producers and 2 consumers; timeouts fire; close wakes blocked waiters. */
#include <pthread.h>
#include <string.h>

#include "core/clock.h"
#include "core/ring.h"
#include "tests/check.h"

enum { PER = 20000, NPROD = 3, NCONS = 2 };
static ih_ring *g_ring;
static unsigned char g_seen[NPROD * PER];
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_order_bad;

static void *prod(void *arg)
{
    uint64_t p = (uint64_t)(uintptr_t)arg;
    for (uint64_t i = 0; i < PER; i++) ih_ring_push(g_ring, p * PER + i, -1);
    return NULL;
}

static void *cons(void *arg)
{
    (void)arg;
    int64_t last[NPROD];
    for (int i = 0; i < NPROD; i++) last[i] = -1;
    uint64_t v;
    while (ih_ring_pop(g_ring, &v, -1) == IH_RING_OK) {
        int p = (int)(v / PER);
        int64_t i = (int64_t)(v % PER);
        pthread_mutex_lock(&g_mu);
        g_seen[v]++;
        if (i <= last[p]) g_order_bad++;
        pthread_mutex_unlock(&g_mu);
        last[p] = i;
    }
    return NULL;
}

int main(void)
{
    CHECK(ih_ring_create(&g_ring, 7) == IH_OK, "create");
    pthread_t pt[NPROD], ct[NCONS];
    for (int i = 0; i < NCONS; i++) pthread_create(&ct[i], NULL, cons, NULL);
    for (int i = 0; i < NPROD; i++) pthread_create(&pt[i], NULL, prod, (void *)(uintptr_t)i);
    for (int i = 0; i < NPROD; i++) pthread_join(pt[i], NULL);
    ih_ring_close(g_ring);
    for (int i = 0; i < NCONS; i++) pthread_join(ct[i], NULL);
    int bad = 0;
    for (int i = 0; i < NPROD * PER; i++) bad += g_seen[i] != 1;
    CHECK(bad == 0, "%d values not seen exactly once", bad);
    CHECK(g_order_bad == 0, "%d values out of per-producer order", g_order_bad);
    ih_ring_destroy(g_ring);

    /* Timeouts: pop on empty and push on full return TIMEOUT after roughly the wait. */
    ih_ring *r;
    CHECK(ih_ring_create(&r, 1) == IH_OK, "create");
    uint64_t v, t0 = ih_now_ns();
    CHECK(ih_ring_pop(r, &v, 50) == IH_RING_TIMEOUT, "pop on empty should time out");
    CHECK(ih_now_ns() - t0 >= 40000000ull, "timeout returned too early");
    CHECK(ih_ring_push(r, 1, 0) == IH_RING_OK, "push");
    CHECK(ih_ring_push(r, 2, 20) == IH_RING_TIMEOUT, "push on full should time out");
    ih_ring_close(r);
    CHECK(ih_ring_push(r, 3, -1) == IH_RING_CLOSED, "push after close");
    CHECK(ih_ring_pop(r, &v, -1) == IH_RING_OK && v == 1, "pop drains after close");
    CHECK(ih_ring_pop(r, &v, -1) == IH_RING_CLOSED, "then reports closed");
    ih_ring_destroy(r);
    ih_ring_destroy(NULL);
    return ih_test_result();
}
