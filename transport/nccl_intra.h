/* transport/nccl_intra.h — the intra-node half of the two-level allreduce on GPUs, with NCCL
 * (ARCHITECTURE.md: "NCCL reduce-scatter inside the node, the inter-node allreduce on each
 * local rank's shard, NCCL all-gather"). Built only with IH_WITH_NCCL (library
 * ih_transport_nccl); use it through comm_hier_allreduce_with(h, x, d_buf, n, stream, algo).
 *
 * One NCCL communicator per node, over the ranks of comm_hier_intra_comm(h), one GPU each. For
 * n floats on a node of L ranks, local rank l: ncclReduceScatter of the first (n/L)*L floats
 * leaves part l (n/L floats at l*(n/L)) reduced in place, and the n%L tail floats are summed on
 * every rank by ncclAllReduce; part and tail are copied to pinned host staging, allreduced
 * across nodes by our collectives (every cross-node group carries the tail, the same bits in
 * each), copied back, and ncclAllGather completes buf. Same bits on every rank of the job.
 * With one node there is no cross-node half: one in-place ncclAllReduce, no staging.
 * The staging is registered with the cross-node communicator (zero-copy on ib).
 *
 * NCCL calls on a stuck peer never return by themselves: the communicator is non-blocking,
 * and every wait polls the stream and ncclCommGetAsyncError with the world ctx's timeout, then
 * aborts the communicator (IH_E_TIMEOUT, naming the node and the call).
 */
#ifndef COMM_NCCL_INTRA_H
#define COMM_NCCL_INTRA_H

#include <stddef.h>

#include "hier.h"

/* Collective over the node's ranks: local rank 0 makes the NCCL unique id and broadcasts it
 * on the node's sub-communicator; every rank then joins with ncclCommInitRank. The calling
 * thread's current CUDA device must be this rank's GPU (model_select_device), one GPU per
 * local rank. max_elems: the largest n a call will pass (sizes the pinned staging, n/L + L
 * floats). Owned by the caller (comm_intra_destroy), used by h's thread only, with device
 * buffers and a cudaStream_t on that device passed as `stream`; destroy it before h. Blocks up
 * to the world ctx's timeout. IH_E_CUDA naming the CUDA/NCCL call; IH_E_TIMEOUT. */
ih_err comm_nccl_intra_create(comm_intra **out, comm_hier *h, size_t max_elems);

#endif
