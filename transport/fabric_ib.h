/* transport/fabric_ib.h — the ib fabric: RDMA over InfiniBand or RoCE (libibverbs + librdmacm),
 * one RC queue pair per pair of ranks, behind the same interface as tcp (fabric.h).
 *
 * Per peer and direction the bytes form one stream that each side cuts with its own requests
 * (a sender may post a whole half-buffer that the receiver takes as pipelining chunks).
 * Nothing is registered or allocated after create, except by comm_ctx_register (set-up).
 *
 * Eager path (messages below the rendezvous threshold T, IH_IB_RDV_KB, default 64 KiB; and
 * large messages whose receive buffer is not registered): copy-in/copy-out through rings
 * registered at create.
 *   - For every peer, each rank owns a receive ring of S slots x B bytes that the peer writes
 *     into, and a send staging ring of the same shape. Ring item n (a data piece of at most B
 *     bytes, or an RTS, below) goes from a staging slot with one RDMA WRITE WITH IMMEDIATE
 *     into the peer's receive slot n%S; the immediate is its kind and n mod 2^29 (checked in
 *     order). The receiver copies pieces into its posted receives, across their boundaries.
 *   - Credits: the receiver returns consumed slots with a zero-length WRITE WITH IMMEDIATE
 *     (kind CREDIT, count). A sender writes item n only when slot n%S came back both from the
 *     peer (credit) and from its own send completion, so it never overwrites a slot the
 *     receiver still reads.
 * Rendezvous (messages of at least T bytes), zero copies when both buffers are registered:
 *   1. The sender puts an RTS item in the ring: "the next L stream bytes are one message".
 *   2. The receiver, when the RTS is next in its stream, answers for each posted receive that
 *      the message overlaps (as soon as it is posted; up to 8 answers ahead) with a reply
 *      (CTS): a 20-byte WRITE WITH IMMEDIATE into the sender's reply slot i%8 naming
 *      (address, rkey, length) in that receive's buffer when it lies in a registered region,
 *      or "eager" when it does not. Reply slot i%8 is reused only after segment i completed,
 *      which the sender cannot reach before it has read the reply.
 *   3. The sender serves the replies in order: "direct" -> RDMA WRITE WITH IMMEDIATE (kind
 *      DIRECT, reply number) in pieces of at most IH_IB_PIECE_KB (default 4 MiB, capped at
 *      the port's max_msg_sz) straight from its registered source (zero copies), or, when the
 *      source is not registered, from a staging slot (one copy); "eager" -> ring pieces.
 *   4. The receiver completes a direct segment when the immediates' byte counts add up to
 *      its length; a send request is complete when its zero-copy writes completed (the
 *      source may then be reused) and its staged bytes were copied.
 *   Both sides decide per message without a header: the sender by its own length, the
 *   receiver by the RTS in its stream (T need not be the same on every rank).
 *   The receiver opens the next large message as soon as the current one is answered in full
 *   (its RTS is then the next ring item), so consecutive chunks need no round trip each.
 *   The threshold is a sender-local choice (IH_IB_RDV_KB; 0 turns the rendezvous off). 64 KiB
 *   by measurement in the Soft-RoCE VM (bench_allreduce, 2 ranks, ring, 512 KiB chunks):
 *   with the rendezvous from 16, 64 or 256 KiB, 256 KiB and 1 MiB allreduces took 14-25 and
 *   50-56 ms against 34 and 111 ms all-eager; below 64 KiB the medians were inside the VM's
 *   noise (bimodal latency, 4 ms ticks), and that is where an extra round trip costs most.
 *   32 MiB, same run conditions: 0.041 GB/s busbw registered (all bytes direct), 0.038 not
 *   registered (staged + eager), 0.033 all-eager, raw RDMA WRITE ceiling 0.085-0.103 GB/s.
 *   Completions: one CQ with a completion channel; wait() polls, spins briefly, then sleeps
 *   on the channel and on the rdma_cm channel (which reports a peer's disconnect).
 * Byte counters per path (comm_ctx_stats) show which way the bytes went.
 * Set-up: each rank listens with rdma_cm on the address through which it reaches the store,
 * publishes "<ns>/ib/<rank>" = "ip port host", connects to every lower rank (address and
 * route resolution, RC QP, private data comm_ib_hello carrying its ring's and reply slots'
 * addresses and rkey)
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
    unsigned char ctrl[8];       /* address of the sender's reply slots for this peer (same rkey) */
} comm_ib_hello;
_Static_assert(sizeof(comm_ib_hello) == 40, "ib hello is 40 bytes (RC connect private data holds 56)");

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
