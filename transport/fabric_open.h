/* transport/fabric_open.h — picks and connects the fabric named by comm_opts.fabric:
 * "tcp", "ib" (RDMA, when built with IH_WITH_IBVERBS) or "auto" (ib when every rank has a
 * usable RDMA device at the address through which it reaches the store, else tcp; rank 0
 * prints the choice and the reason at start-up). Used by comm.c only. */
#ifndef COMM_FABRIC_OPEN_H
#define COMM_FABRIC_OPEN_H

#include <stdint.h>

#include "comm.h"
#include "fabric.h"
#include "store.h"

/* IH_E_USAGE for an unknown name or "ib" in a build without RDMA. NULL means "tcp". */
ih_err comm_fabric_check_name(const char *name);

/* Connects `world` ranks over the fabric o->fabric (see the header comment). Blocks like the
 * fabric's create; "auto" adds one store round per rank. The caller owns *out. */
ih_err comm_fabric_open(comm_fabric **out, const comm_opts *o, comm_store *store, const char *ns,
                        int rank, int world, int sockbuf, int64_t timeout_ms);

#endif
