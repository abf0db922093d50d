/* transport/comm_impl.h — the communicator's private state, shared by comm.c (set-up,
 * failure) and coll.c (algorithms). Not a public header. */
#ifndef COMM_IMPL_H
#define COMM_IMPL_H

#include "comm.h"
#include "fabric.h"
#include "store.h"

#define COMM_NTMP 4    /* receive staging buffers: chunks in flight during a reduction */
#define COMM_NSEND 32  /* send requests in flight */

struct comm_ctx {
    comm_boot_info boot;
    comm_fabric *fab;
    comm_store *store;
    comm_store_server *server; /* rank 0 only */
    char ns[64];
    char host[64];
    int64_t timeout_ms;
    size_t chunk_elems;        /* floats per pipelined chunk */
    float *tmp[COMM_NTMP];     /* chunk_elems each, allocated at create */
    comm_req sreq[COMM_NSEND]; /* ring of send requests */
    unsigned nsend_posted;     /* send requests posted so far in the current operation */
    struct { char *buf; size_t bytes; } reg[COMM_MAX_REG + COMM_NTMP]; /* comm_ctx_register (+ tmp) */
    int nreg;
    ih_err err;                /* sticky first error */
    char errmsg[2600];
    comm_ctx *parent;          /* comm_ctx_split: the ctx whose connections and failure protocol
                                  this view uses (NULL for a ctx of its own) */
    char label[96];            /* comm_ctx_split: names the group in failure messages */
};

/* Turns a fabric error during `op` into the ctx's sticky error: publishes the first failure
 * in the store, closes the fabric, and returns the error with a message naming the op and
 * the job's first failure. */
ih_err comm_ctx_fail(comm_ctx *c, ih_err e, const char *op);

/* comm_split.c: a fabric that maps the ranks of a sub-communicator onto its parent's
 * fabric, which keeps owning the connections. *out is destroyed with comm_fabric_destroy. */
ih_err comm_fabric_view_create(comm_fabric **out, comm_fabric *real, const int *map, int rank, int world);

#endif
