/* transport/fabric_tcp.h — the tcp fabric: one TCP connection per pair of ranks.
 *
 * Connection set-up (inside create): each rank listens on an ephemeral port at the address
 * through which it reaches the store, publishes "<ns>/addr/<rank>" = "ip port host" in the
 * store, connects to every lower rank (sending a 12-byte hello: magic, rank, world) and
 * accepts every higher rank. Sockets are then non-blocking with TCP_NODELAY and large buffers;
 * wait() drives all of them with poll(), so sends and receives on different (or the same)
 * connections progress together.
 */
#ifndef COMM_FABRIC_TCP_H
#define COMM_FABRIC_TCP_H

#include <stdint.h>

#include "fabric.h"
#include "store.h"

typedef struct {
    unsigned char magic[4]; /* "IHTP" */
    unsigned char rank[4];  /* big-endian */
    unsigned char world[4];
} comm_tcp_hello;
_Static_assert(sizeof(comm_tcp_hello) == 12, "tcp hello is 12 bytes on the wire");

/* Connects all `world` ranks. Blocks until every peer is connected or `timeout_ms` passed;
 * IH_E_TIMEOUT names the ranks that never showed up. `ns` namespaces the store keys (one per
 * communicator). sockbuf: socket buffer bytes (0 = kernel autotuning). The fabric does not
 * keep `store`. The returned fabric is owned by the caller (comm_fabric_destroy). */
ih_err comm_fabric_tcp_create(comm_fabric **out, comm_store *store, const char *ns, int rank,
                              int world, int sockbuf, int64_t timeout_ms);

#endif
