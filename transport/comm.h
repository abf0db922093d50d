/* transport/comm.h — a communicator: `world` ranks connected over one fabric, and the
 * collectives the trainer needs (allreduce sum fp32 in place, broadcast, barrier).
 *
 * A comm_ctx holds no globals, so several can live in one process (the tests run each rank
 * as a thread). Threads: one thread at a time per ctx (the trainer's comm thread); every call
 * blocks until the operation completed on this rank or failed. Every collective must be
 * called by all ranks in the same order with the same sizes and algorithm.
 *
 * Environment (tuning and debugging only; comm_opts fields win):
 *   IH_COMM_TIMEOUT_S  no-progress timeout of every wait, seconds (default 300)
 *   IH_COMM_CHUNK_KB   pipelining chunk (default 512)
 *   IH_COMM_SOCKBUF    socket buffer bytes (default 0 = kernel autotuning)
 *
 * Registered memory (RDMA): a buffer registered once with comm_ctx_register (the trainer's
 * flat gradient buffer) is sent from and received into without copies on the ib fabric
 * (fabric_ib.h); on tcp registering is a no-op. The ctx registers its own receive scratch.
 *
 * Failure: the first error is sticky. A failing rank publishes it in the store under
 * "<ns>/abort" before closing its connections, so every other rank fails within the timeout
 * with a message naming the rank that failed first, its host, and the operation.
 */
#ifndef COMM_COMM_H
#define COMM_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "boot.h"
#include "core/err.h"

typedef enum { COMM_ALGO_AUTO = 0, COMM_ALGO_HD, COMM_ALGO_RING } comm_algo;

/* Options; all-zero means defaults. */
typedef struct {
    const char *fabric;     /* "tcp" (default), "ib" (RDMA) or "auto" (see fabric_open.h) */
    int64_t timeout_ms;     /* 0: env IH_COMM_TIMEOUT_S, default 300 s */
    size_t chunk_bytes;     /* pipelining unit; 0: env IH_COMM_CHUNK_KB, default 512 KiB */
    int sockbuf;            /* socket buffer bytes; 0: env IH_COMM_SOCKBUF, default kernel autotuning */
    int no_store_server;    /* rank 0 does not start the store (the caller hosts it) */
    const char *ns;         /* store key namespace; NULL: "c" */
    const char *ib_dev;     /* ib: required RDMA device (NULL: env IH_IB_DEV, else the address's) */
    int ib_port;            /* ib: required port (0: env IH_IB_PORT, else the address's) */
} comm_opts;

typedef struct comm_ctx comm_ctx;

/* Connects `b->world` ranks: rank 0 starts the store at master_port (unless no_store_server),
 * every rank registers and connects the fabric. Blocks up to the timeout; IH_E_TIMEOUT names
 * the ranks that did not show up. The ctx owns its fabric, store client and scratch. */
ih_err comm_ctx_create(comm_ctx **out, const comm_boot_info *b, const comm_opts *opts);
/* Closes everything. NULL-safe. Never blocks for long. */
void comm_ctx_destroy(comm_ctx *c);

int comm_ctx_rank(const comm_ctx *c);
int comm_ctx_world(const comm_ctx *c);
int64_t comm_ctx_timeout_ms(const comm_ctx *c);
/* The pipelining chunk this ctx uses, bytes (after options and environment). */
size_t comm_ctx_chunk_bytes(const comm_ctx *c);
const char *comm_algo_name(comm_algo a);
/* Parses "auto", "hd", "ring". IH_E_USAGE otherwise. */
ih_err comm_algo_parse(const char *s, comm_algo *out);
/* What COMM_ALGO_AUTO runs for `bytes` on this ctx's world size. */
comm_algo comm_coll_auto_algo(const comm_ctx *c, size_t bytes);

/* Registers [buf, buf+bytes) for zero-copy transfers, once, at set-up (never in the step):
 * on ib the pages are pinned and registered with the device (blocks for that); on tcp nothing
 * happens. Local: no other rank takes part. The caller keeps owning buf and must keep it
 * valid, at the same address, until comm_ctx_unregister or comm_ctx_destroy. Collectives on
 * unregistered buffers still work (through staging copies). IH_E_USAGE for a NULL or empty
 * range, one that overlaps a registered region, or more than COMM_MAX_REG regions; IH_E_SYS
 * when the device refuses (the message has the size, the errno text and the `ulimit -l`
 * hint). The ctx's thread only (the one that calls its collectives, none in flight). */
#define COMM_MAX_REG 16
ih_err comm_ctx_register(comm_ctx *c, void *buf, size_t bytes);
/* Undoes comm_ctx_register for the region that starts at buf. Returns IH_E_USAGE (and changes
 * nothing) when buf does not start a region registered on this ctx. No collective may be in
 * flight. comm_ctx_destroy unregisters whatever is left. The ctx's thread only. */
ih_err comm_ctx_unregister(comm_ctx *c, void *buf);

/* A failure outside the collectives that the job cannot survive (a GPU copy of a bucket, a
 * NCCL call): makes it c's sticky error through the failure protocol above, so every rank
 * fails naming this one and `op`, instead of seeing it vanish. Returns the error with that
 * message; after a failure already recorded, that one. The ctx's thread only. */
ih_err comm_ctx_abort(comm_ctx *c, ih_err e, const char *op);
/* The ctx's sticky error (its parent's for a view of comm_ctx_split), IH_OK while healthy. */
ih_err comm_ctx_status(const comm_ctx *c);

/* Cumulative bytes this rank's fabric moved, by path (all zero on tcp, which has one path).
 * Counted by the sender except rx_*. A message of at least `threshold` bytes is "large": the
 * receiver tells the sender where its bytes go (fabric_ib.h). */
typedef struct {
    uint64_t eager_small; /* bytes of messages below the threshold: copied into the staging ring,
                             and out of the peer's receive ring */
    uint64_t eager_large; /* bytes of large messages that went the same way because the
                             receiver's buffer was not registered */
    uint64_t staged;      /* bytes of large messages written straight into the receiver's
                             registered buffer from the staging ring (our source was not
                             registered): one copy, on the sender */
    uint64_t direct;      /* bytes written from our registered buffer into the receiver's:
                             zero copies */
    uint64_t rx_copied;   /* received bytes copied out of our receive ring */
    uint64_t rx_direct;   /* received bytes a peer wrote straight into our registered buffer */
    size_t threshold;     /* 0: the fabric has no such path */
} comm_stats;
/* Fills *out (zeroes first). Any thread that owns the ctx; never blocks. */
void comm_ctx_stats(const comm_ctx *c, comm_stats *out);

/* buf[0..n) := sum over ranks of buf[0..n), in place. Same bits on every rank. No
 * allocation. */
ih_err comm_coll_allreduce(comm_ctx *c, float *buf, size_t n, comm_algo algo);
/* Copies root's buf[0..bytes) to every rank (pipelined binomial tree). */
ih_err comm_coll_broadcast(comm_ctx *c, void *buf, size_t bytes, int root);
/* Returns once every rank entered (dissemination barrier, ceil(log2 k) rounds). */
ih_err comm_coll_barrier(comm_ctx *c);

/* Block b of k over n elements: [*off, *off + *len); the first n % k blocks have one element
 * more. The layout of comm_coll_reduce_scatter / comm_coll_allgather. Pure. */
void comm_coll_block(size_t n, int k, int b, size_t *off, size_t *len);
/* In place, ring: afterwards block r (comm_coll_block(n, world, r)) of rank r's buf holds the
 * sum over ranks of that block; the other blocks hold partial sums (scratch). Sends
 * (k-1)/k * n floats per rank. No allocation. */
ih_err comm_coll_reduce_scatter(comm_ctx *c, float *buf, size_t n);
/* In place, ring: afterwards every rank's buf holds block q of rank q's buf for every q. */
ih_err comm_coll_allgather(comm_ctx *c, float *buf, size_t n);

/* Sub-communicators (MPI_Comm_split). Collective over `parent`: the ranks that pass the same
 * color >= 0 form one child, ranked by (key, parent rank); color -1 gets *out = NULL. A
 * child is a view: it uses the parent's connections (no new ones, no store round), so it
 * costs one small allreduce on the parent and its scratch buffers. Failures inside a child
 * go through the parent's failure protocol, so messages name parent ranks and the job's
 * first failure, and the parent (with every other child) fails too. A child and its parent
 * are used by the same one thread, one operation at a time; destroy children (with
 * comm_ctx_destroy) before the parent. IH_E_USAGE for color < -1 or |color|, |key| >= 2^23. */
ih_err comm_ctx_split(comm_ctx *parent, int color, int key, comm_ctx **out);

#endif
