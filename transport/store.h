/* transport/store.h — the rendezvous store: a tiny key-value server at rank 0 over TCP.
 *
 * Ranks exchange their fabric addresses through it at start-up, and a failing rank posts the
 * job's first failure under the key "abort" so that every other rank can name it. Keys are
 * strings up to 255 bytes; values up to COMM_STORE_MAX_VAL bytes. `set` overwrites, `add`
 * writes only if the key is absent (first writer wins), `get` waits until the key exists.
 *
 * Wire protocol (one request, one response, in order, on one connection), big-endian:
 *   request  comm_store_req_hdr {magic 'IHST', op, keylen, vallen} key value
 *   response comm_store_resp_hdr {status (0 ok, 1 absent), vallen} value
 * The server is one thread ("ih-store") that serves all clients with poll(); get is answered
 * at once (found or absent) and the client polls, so the server holds no per-client state.
 */
#ifndef COMM_STORE_H
#define COMM_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define COMM_STORE_MAX_VAL 65536

typedef struct {
    unsigned char magic[4];
    unsigned char op[4];
    unsigned char keylen[4];
    unsigned char vallen[4];
} comm_store_req_hdr;
_Static_assert(sizeof(comm_store_req_hdr) == 16, "store request header is 16 bytes on the wire");

typedef struct {
    unsigned char status[4];
    unsigned char vallen[4];
} comm_store_resp_hdr;
_Static_assert(sizeof(comm_store_resp_hdr) == 8, "store response header is 8 bytes on the wire");

typedef struct comm_store_server comm_store_server;
typedef struct comm_store comm_store;

/* Starts the server thread listening on host:port (host NULL = all interfaces; port 0 =
 * ephemeral, see comm_store_server_port). IH_E_NET if the port cannot be bound. The server
 * owns its thread and sockets until destroy. Any thread.
 * When the environment has IH_STORE_FD=N (set by launch.c for rank 0), the first server of the
 * process serves on that inherited listening socket instead of binding, if it is one and is
 * bound to `port`: the launcher picked the port by binding it and never let it go, so no other
 * process can take it in between. */
ih_err comm_store_server_create(comm_store_server **out, const char *host, int port);
int comm_store_server_port(const comm_store_server *s);
/* Blocks until no client is connected (every rank closed its store client, normally by
 * exiting) or max_ms passed. Rank 0 calls it before tearing the store down after a failure,
 * so that the other ranks can still read the job's first failure from it. */
void comm_store_server_linger(comm_store_server *s, int64_t max_ms);
/* Stops the thread (flag, wake, join) and closes every client. NULL-safe. */
void comm_store_server_destroy(comm_store_server *s);

/* Connects to the server, retrying until timeout_ms (rank 0 may start later). IH_E_TIMEOUT
 * names host:port. The client is used by one thread at a time. */
ih_err comm_store_connect(comm_store **out, const char *host, int port, int64_t timeout_ms);
void comm_store_destroy(comm_store *s); /* NULL-safe */
/* The local address this client uses to reach the store: the address through which rank 0,
 * and so every other rank, can reach this host. Never blocks. */
void comm_store_local_addr(const comm_store *s, char *out, size_t cap);

/* Stores a value. Blocks for one round trip (bounded by timeout_ms). */
ih_err comm_store_set(comm_store *s, const char *key, const void *val, size_t len, int64_t timeout_ms);
/* Stores a value only if the key is absent; *won = 1 if this call stored it. */
ih_err comm_store_add(comm_store *s, const char *key, const void *val, size_t len, int *won,
                      int64_t timeout_ms);
/* Waits up to timeout_ms for `key`, then copies at most `cap` bytes into val and the full
 * length into *len. timeout_ms 0 = check once. IH_E_TIMEOUT if still absent ("absent" and
 * the key in the message; callers rewrite it to name the rank they waited for). */
ih_err comm_store_get(comm_store *s, const char *key, void *val, size_t cap, size_t *len,
                      int64_t timeout_ms);

#endif
