/* core/ring.h — a bounded FIFO of 64-bit values for handing work between threads.
 *
 * Producers push, consumers pop, both block while full/empty, and every blocking call takes
 * a timeout in milliseconds (< 0: wait forever). ih_ring_close wakes every waiter: pushes
 * then fail with IH_E_INTERNAL-free "closed" status and pops drain what is left, then report
 * closed. Capacity is fixed at create; push and pop never allocate. Thread-safe.
 */
#ifndef IH_RING_H
#define IH_RING_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct ih_ring ih_ring;

typedef enum { IH_RING_OK = 0, IH_RING_TIMEOUT, IH_RING_CLOSED } ih_ring_status;

/* Creates a ring holding up to `capacity` (> 0) values. IH_E_SYS on allocation failure. */
ih_err ih_ring_create(ih_ring **out, size_t capacity);
/* Frees the ring; NULL is a no-op. No thread may be using it. */
void ih_ring_destroy(ih_ring *r);

/* Blocks until there is room (or timeout/close). */
ih_ring_status ih_ring_push(ih_ring *r, uint64_t v, int64_t timeout_ms);
/* Blocks until a value is there (or timeout, or closed and empty). */
ih_ring_status ih_ring_pop(ih_ring *r, uint64_t *v, int64_t timeout_ms);
/* Marks the ring closed and wakes all waiters. Idempotent. */
void ih_ring_close(ih_ring *r);
/* Number of values queued now (a snapshot). */
size_t ih_ring_size(ih_ring *r);

#endif
