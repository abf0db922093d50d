/* transport/fabric_ib.h — the ib fabric: RDMA over InfiniBand or RoCE (libibverbs + librdmacm),
 * one RC queue pair per pair of ranks, behind the same interface as tcp (fabric.h).
 *
 * Data path (eager, copy-in/copy-out through rings registered once at create; nothing is
 * registered or allocated after create):
 *   - For every peer, each rank owns a receive ring of S slots x B bytes that the peer writes
 *     into, and a send staging ring of the same shape. A message of len bytes moves as
 *     ceil(len/B) pieces; piece n goes from staging slot n%S with one RDMA WRITE WITH IMMEDIATE
 *     into the peer's receive slot n%S, imm = n mod 2^31 (names the slot; checked in order).
 *   - Credits: the receiver copies a piece out of its slot into the posted receive buffer and
 *     then returns the slot with a zero-length WRITE WITH IMMEDIATE, imm = 2^31 | count. A
 *     sender posts piece n only after slot n%S has come back both from the peer (credit) and
 *     from its own send completion, so it never overwrites a slot the receiver still reads.
 *   - Completions: one CQ with a completion channel; wait() polls, spins briefly, then sleeps
 *     on the channel and on the rdma_cm channel (which reports a peer's disconnect).
 * Set-up: each rank listens with rdma_cm on the address through which it reaches the store,
 * publishes "<ns>/ib/<rank>" = "ip port host", connects to every lower rank (address and
 * route resolution, RC QP, private data comm_ib_hello carrying its ring's address and rkey)
 * and accepts every higher rank (the accept carries the acceptor's hello).
 */
#ifndef COMM_FABRIC_IB_H
#define COMM_FABRIC_IB_H

#include <stdint.h>

#include "fabric.h"
#include "store.h"

/* rdma_cm private data of connect and accept. */
typedef struct {
    unsigned char magic[4];      /* "IHIB" */
    unsigned char rank[4];       /* big-endian from here on */
    unsigned char world[4];
    unsigned char slots[4];      /* S */
    unsigned char slot_bytes[4]; /* B */
    unsigned char rkey[4];       /* of the sender's receive ring for this peer */
    unsigned char addr[8];       /* its address */
} comm_ib_hello;
_Static_assert(sizeof(comm_ib_hello) == 32, "ib hello is 32 bytes (fits RC connect private data)");

typedef struct {
    const char *dev;   /* required device name (NULL: env IH_IB_DEV, else the address's device) */
    int port;          /* required port (0: env IH_IB_PORT, else the address's port) */
} comm_ib_opts;

/* Connects all `world` ranks over RDMA. Blocks until every peer is connected or timeout_ms
 * passed. Errors: IH_E_SYS no device / locked-memory limit (says `ulimit -l`), IH_E_USAGE
 * unknown device, IH_E_NET port down / address not on an RDMA netdev / peer unreachable,
 * IH_E_TIMEOUT a rank never showed up. The fabric does not keep `store`. The caller owns the
 * result (comm_fabric_destroy). One thread at a time (fabric.h). */
ih_err comm_fabric_ib_create(comm_fabric **out, comm_store *store, const char *ns, int rank,
                             int world, const comm_ib_opts *opts, int64_t timeout_ms);

/* Whether this host can run the ib fabric at `ip` (the address through which it reaches the
 * store): a device carries the address and its port is active. Never fails; *why says why
 * not. Blocks briefly (opens the device). */
int comm_fabric_ib_usable(const char *ip, const comm_ib_opts *opts, char *why, size_t cap);

/* The raw ceiling for benchmarks: one RC connection from this process to itself at `ip`
 * (both ends on the same device), and both of its ends writing at once (as every rank of an
 * allreduce sends and receives at once): `iters` RDMA WRITEs of `bytes` per end, up to 4 in
 * flight per end, timed from the first post to the last completion. *gbps = total bytes of
 * both directions / t / 1e9, like the benchmark's tcp duplex ceiling. Registers and frees its
 * own buffers; blocks for the transfer (bounded by 60 s). Not for the step. */
ih_err comm_fabric_ib_write_bw(const char *ip, size_t bytes, int iters, double *gbps);

#endif
