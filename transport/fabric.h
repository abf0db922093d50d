/* transport/fabric.h — the point-to-point interface the collectives are written against.
 *
 * A fabric connects the `world` ranks of one communicator pairwise and moves bytes between
 * them; it knows nothing about reductions. Messages carry no header: for each (peer,
 * direction) the fabric delivers posted requests in FIFO order, so both sides of a pair must
 * post matching lengths in the same order (the collectives are deterministic, so they do).
 * Both ends must move the same bytes in the same order, but their message boundaries may
 * differ (a sender may post one message that the receiver takes as several chunks): a fabric
 * treats each (peer, direction) as a byte stream cut by each side's own requests.
 * Implementations: tcp (fabric_tcp.c), ib (fabric_ib.c: RDMA, with zero-copy transfers
 * between buffers registered through the optional reg slot).
 *
 * Requests (comm_req) are caller-owned plain structs: posting never allocates. A request must
 * stay alive and untouched, and its buffer must stay valid, until wait() returned for it.
 *
 * Threads: a fabric is used by one thread at a time (the communicator's owner). Progress is
 * made inside wait(): waiting for one request also advances every other posted request, so a
 * send to one peer and a receive from another proceed at the same time (full duplex).
 *
 * Errors are sticky: after the first failure (peer gone, timeout) every later post and wait
 * returns that error. The owner then publishes the failure and calls abort(), which closes
 * every connection so that the peers fail at once instead of waiting for their own timeout.
 */
#ifndef COMM_FABRIC_H
#define COMM_FABRIC_H

#include <stddef.h>
#include <stdint.h>

#include "comm.h" /* comm_stats */
#include "core/err.h"

typedef struct comm_fabric comm_fabric;

enum { COMM_REQ_SEND = 1, COMM_REQ_RECV = 2 };

/* One posted transfer. Fields are the fabric's once posted; the caller only reads `done`
 * after wait() returned. */
typedef struct comm_req {
    struct comm_req *next; /* owner: fabric (per-peer FIFO link) */
    char *buf;
    size_t len;
    size_t done; /* bytes moved so far */
    int peer;
    int kind; /* COMM_REQ_SEND or COMM_REQ_RECV */
    uint64_t pos; /* owner: fabric (ib: where the request starts in its peer's byte stream) */
} comm_req;

/* The slots. Every slot is called by the fabric's single owning thread. */
typedef struct comm_fabric_ops {
    const char *name; /* "tcp", "ib" */
    /* Queue a send of `len` bytes of `buf` to `peer` (peer != own rank). Never blocks; may move
     * bytes immediately. IH_OK, or the sticky error. */
    ih_err (*post_send)(comm_fabric *f, int peer, const void *buf, size_t len, comm_req *req);
    /* Queue a receive of exactly `len` bytes from `peer` into `buf`. Never blocks. */
    ih_err (*post_recv)(comm_fabric *f, int peer, void *buf, size_t len, comm_req *req);
    /* Block until `req` completed, progressing all posted requests. Fails with IH_E_TIMEOUT
     * when no byte moved on any request for `timeout_ms` (names the peer and host), with
     * IH_E_REMOTE when a peer closed its connection, IH_E_NET on a socket error. */
    ih_err (*wait)(comm_fabric *f, comm_req *req, int64_t timeout_ms);
    /* Record `code`/`msg` as the sticky error and close every connection now, so peers see
     * the failure at once. Never blocks. Idempotent. */
    void (*abort)(comm_fabric *f, ih_err code, const char *msg);
    /* Close connections, undo every registration, and free. Never blocks for long. */
    void (*destroy)(comm_fabric *f);
    /* Optional (NULL: nothing to register, e.g. tcp). Registers [buf, buf+bytes) with the
     * device for local and remote access, so that transfers from and into it skip the staging
     * copies. Called at set-up, never in the step; blocks while the pages are pinned. The
     * caller (comm.c) guarantees the range overlaps no other registration. IH_E_SYS with the
     * size, the errno text and the locked-memory hint (`ulimit -l`) when the device refuses. */
    ih_err (*reg)(comm_fabric *f, void *buf, size_t bytes);
    /* Optional. Undoes reg for the region that starts at buf (the caller checked that it is
     * registered). No posted request may use the region. Never blocks for long. */
    void (*dereg)(comm_fabric *f, void *buf);
    /* Optional (NULL: all zero). Adds the fabric's cumulative byte counters to *out. */
    void (*stats)(const comm_fabric *f, comm_stats *out);
} comm_fabric_ops;

/* The common head of every fabric object (implementations embed it first). */
struct comm_fabric {
    const comm_fabric_ops *ops;
    int rank;
    int world;
    int stalled_peer; /* owner: fabric. Set by wait() when it fails with IH_E_TIMEOUT: the peer
                         that moved no data (-1 otherwise); comm.c uses it to find the hung rank */
    char stalled_host[64]; /* that peer's host name */
};

static inline ih_err comm_fabric_post_send(comm_fabric *f, int peer, const void *buf, size_t len,
                                           comm_req *req)
{
    return f->ops->post_send(f, peer, buf, len, req);
}
static inline ih_err comm_fabric_post_recv(comm_fabric *f, int peer, void *buf, size_t len,
                                           comm_req *req)
{
    return f->ops->post_recv(f, peer, buf, len, req);
}
static inline ih_err comm_fabric_wait(comm_fabric *f, comm_req *req, int64_t timeout_ms)
{
    return f->ops->wait(f, req, timeout_ms);
}
static inline void comm_fabric_abort(comm_fabric *f, ih_err code, const char *msg)
{
    if (f) f->ops->abort(f, code, msg);
}
/* NULL-safe. */
static inline void comm_fabric_destroy(comm_fabric *f)
{
    if (f) f->ops->destroy(f);
}

#endif
