/* transport/sock.h — internal TCP helpers shared by the store and the tcp fabric.
 *
 * Every function that can block takes an absolute deadline (ih_now_ns() scale) and fails with
 * IH_E_TIMEOUT once it passes. Messages name `what` (e.g. "rendezvous store 10.0.0.1:29500").
 * Any thread; each fd is used by one thread at a time.
 */
#ifndef COMM_SOCK_H
#define COMM_SOCK_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Listens on host:port (host NULL or "" = all interfaces, port 0 = ephemeral), backlog
 * `backlog`. Writes the bound port. IH_E_NET on failure. bufbytes > 0 sets the socket buffers
 * before listen(), so that accepted sockets inherit them and the window scale fits them. */
ih_err comm_sock_listen(int *fd, const char *host, int port, int backlog, int bufbytes,
                        int *bound_port);
/* Connects to host:port, retrying refused connections until `deadline_ns` (the peer may not
 * be listening yet). bufbytes as for listen, set before connect(). */
ih_err comm_sock_connect(int *fd, const char *host, int port, int bufbytes, uint64_t deadline_ns,
                         const char *what);
/* Accepts one connection before the deadline. */
ih_err comm_sock_accept(int lfd, int *fd, uint64_t deadline_ns, const char *what);
/* Writes / reads exactly `len` bytes before the deadline (fd may be blocking or not).
 * Reading EOF is IH_E_REMOTE. */
ih_err comm_sock_write_all(int fd, const void *buf, size_t len, uint64_t deadline_ns,
                           const char *what);
ih_err comm_sock_read_all(int fd, void *buf, size_t len, uint64_t deadline_ns, const char *what);
/* TCP_NODELAY and, when bufbytes > 0, SO_SNDBUF/SO_RCVBUF (forced past the sysctl cap when
 * permitted). */
void comm_sock_tune(int fd, int bufbytes);
ih_err comm_sock_set_nonblock(int fd, int on);
/* The local IPv4/IPv6 address of a connected socket, as text. */
void comm_sock_local_addr(int fd, char *out, size_t cap);

/* Big-endian wire helpers. */
static inline void comm_put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}
static inline uint32_t comm_get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

#endif
