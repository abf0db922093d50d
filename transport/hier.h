/* transport/hier.h — the two-level (hierarchical) allreduce: reduce-scatter inside each node,
 * allreduce of each local rank's shard across the nodes, all-gather inside each node
 * (ARCHITECTURE.md, transport: "Inside a node").
 *
 * With N nodes of L ranks and S bytes, each rank sends (L-1)/L*S twice inside its node (cheap:
 * shared memory, NVLink or loopback) and only 2(N-1)/N * S/L across nodes, where the flat ring
 * sends 2(k-1)/k * S over whatever link joins its neighbours. Node membership comes from the
 * host name (or IH_NODE_ID, which simulates several nodes on one machine); every node must
 * have the same number of ranks, because the cross-node groups are "local rank l of every
 * node".
 *
 * Environment (debug and tests): IH_NODE_ID=name overrides the host name; IH_RANKS_PER_NODE=L
 * puts ranks [iL, (i+1)L) on simulated node i.
 *
 * The intra-node half is an interface (comm_intra) with two implementations: the CPU one
 * here, our own ring reduce-scatter/allgather on the node's sub-communicator (the reference,
 * what the tests exercise), and NCCL on device buffers (nccl_intra.h). The cross-node half is
 * always our comm_coll_allreduce (hd or ring) on the sub-communicator of the ranks with the
 * same local rank, on host memory.
 *
 * Result: the exact sum for integer-valued inputs, and the same bits on every rank (each
 * element is summed once inside its owner's node, then by the deterministic cross-node
 * allreduce, then copied). The bits can differ from the flat allreduce's (another order).
 *
 * Threads and failures: like the world communicator it is built on, one thread at a time,
 * and that thread must not use the world ctx while a hier call runs. Sub-communicators are
 * views of the world ctx (comm_ctx_split), so a failure anywhere is published and named by
 * the world ctx's protocol, and every later call on either fails with that sticky error.
 */
#ifndef COMM_HIER_H
#define COMM_HIER_H

#include <stddef.h>

#include "comm.h"

typedef enum { COMM_HIER_OFF = 0, COMM_HIER_ON, COMM_HIER_AUTO } comm_hier_mode;
/* "off", "on", "auto" (on when there is more than one node and more than one rank per node,
 * and every node has the same number). IH_E_USAGE otherwise. */
ih_err comm_hier_mode_parse(const char *s, comm_hier_mode *out);
const char *comm_hier_mode_name(comm_hier_mode m);

#define COMM_NODE_NAME_MAX 63

/* Where the ranks are. Nodes are numbered in the order of their lowest rank; local ranks in
 * the order of global rank. Plain data. */
typedef struct {
    int nnodes;
    int node;                           /* this rank's node */
    int local_rank;                     /* this rank's index among its node's ranks */
    int local_size;                     /* ranks on this rank's node */
    int uniform;                        /* every node has local_size ranks */
    char node_name[COMM_NODE_NAME_MAX + 1];
    char layout[512];                   /* "2 nodes x 4 ranks", or each node's name and count */
} comm_topo;

/* Collective over c (one small allreduce): every rank names its node and learns everyone's.
 * node: this rank's node name; NULL: env IH_NODE_ID if set, else with IH_RANKS_PER_NODE=L
 * (debug: simulates nodes of L consecutive ranks, e.g. under ./train --nproc, where every
 * rank sees the same environment) "sim<rank / L>", else the host name. IH_E_USAGE on every
 * rank when some rank's name is empty or over COMM_NODE_NAME_MAX bytes; collective errors as
 * comm.h. */
ih_err comm_topo_discover(comm_ctx *c, const char *node, comm_topo *out);

/* ---- the intra-node interface ---- */

typedef struct comm_intra comm_intra;

/* Slots are called by the hier's thread only. buf is host memory for "cpu" and device memory
 * for "nccl"; stream is a cudaStream_t for "nccl" and ignored by "cpu". */
typedef struct {
    const char *name; /* "cpu", "nccl" */
    /* Reduce-scatters buf[0..n) over the node's ranks and returns in *shard / *len the HOST
     * memory that holds this local rank's part of the node's sum (cpu: inside buf; nccl:
     * pinned staging). The split into parts is the implementation's, but the same on every
     * node for the same n. Blocks until *shard is ready. */
    ih_err (*reduce_scatter)(comm_intra *x, float *buf, size_t n, void *stream, float **shard, size_t *len);
    /* Once *shard holds the sum across nodes: gathers every local rank's part into buf[0..n)
     * on every rank of the node. Blocks until buf holds the result. */
    ih_err (*all_gather)(comm_intra *x, float *buf, size_t n, void *stream);
    /* Optional: buf[0..n) := the node's sum, in place; used instead of the two above when
     * there is one node (no cross-node half, so no staging either). NULL: the two above. */
    ih_err (*allreduce)(comm_intra *x, float *buf, size_t n, void *stream);
    /* Frees the implementation (NULL when it is owned by something else). */
    void (*destroy)(comm_intra *x);
} comm_intra_ops;

/* Common head of every implementation. */
struct comm_intra {
    const comm_intra_ops *ops;
};

/* NULL-safe. */
static inline void comm_intra_destroy(comm_intra *x)
{
    if (x && x->ops->destroy) x->ops->destroy(x);
}

/* ---- the two-level allreduce ---- */

typedef struct comm_hier comm_hier;

/* Collective over `world`: splits it into the node's group (ranked by local rank) and the
 * cross-node group of this local rank (ranked by node). `t` comes from comm_topo_discover on
 * the same ctx. IH_E_USAGE, with every node's name and rank count, when the nodes have
 * different numbers of ranks. Does not own world, which must outlive the hier. */
ih_err comm_hier_create(comm_hier **out, comm_ctx *world, const comm_topo *t);
/* The trainer's and bench's entry: discovers the topology (node as in comm_topo_discover) and
 * applies `mode`: *out = NULL for off, and for auto when the layout does not benefit (one
 * node, one rank per node) or is not uniform; rank 0 prints the choice and why to stdout.
 * world NULL (one worker): *out = NULL. Collective over world unless mode is off. */
ih_err comm_hier_open(comm_hier **out, comm_ctx *world, comm_hier_mode mode, const char *node);
/* Destroys the sub-communicators. NULL-safe. */
void comm_hier_destroy(comm_hier *h);

const comm_topo *comm_hier_topo(const comm_hier *h);
/* The node's ranks (rank = local rank) and this local rank's cross-node group (rank = node):
 * owned by h, valid until comm_hier_destroy; for setting up other intra-node transports. */
comm_ctx *comm_hier_intra_comm(comm_hier *h);
comm_ctx *comm_hier_inter_comm(comm_hier *h);

/* The CPU intra-node implementation on the node's sub-communicator (host memory), owned by h:
 * what comm_hier_allreduce uses; for comm_hier_allreduce_with callers that choose at run time. */
comm_intra *comm_hier_cpu_intra(comm_hier *h);

/* buf[0..n) := sum over all ranks, in place, host memory, with the CPU intra-node half and
 * `inter` (auto, hd or ring) across nodes. No allocation. */
ih_err comm_hier_allreduce(comm_hier *h, float *buf, size_t n, comm_algo inter);
/* The same with another intra-node implementation x (buf and stream as x expects). A failure
 * in x that did not come through the world ctx's protocol (NCCL, CUDA) is published through
 * it, so the ranks of other nodes fail too. */
ih_err comm_hier_allreduce_with(comm_hier *h, comm_intra *x, float *buf, size_t n, void *stream,
                                comm_algo inter);

#endif
