/* transport/fabric_tcp.c — see fabric_tcp.h.
 *
 * Progress engine: each peer has a FIFO of posted sends and one of posted receives (intrusive
 * lists through comm_req.next, so posting never allocates). wait() first tries every queue
 * head with non-blocking send()/recv(); only when nothing moved does it poll() the sockets
 * that have work. The "no progress" timer restarts whenever any byte moves, so a large
 * transfer never times out while a dead or stalled peer is detected after timeout_ms.
 */
#define _GNU_SOURCE
#include "fabric_tcp.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "sock.h"

typedef struct {
    int fd;
    comm_req *sq_head, *sq_tail;
    comm_req *rq_head, *rq_tail;
    char host[64];
} tcp_peer;

typedef struct {
    comm_fabric base;
    tcp_peer *peers;       /* [world]; peers[rank].fd = -1 */
    struct pollfd *pfds;   /* [world] scratch for wait() */
    int *pfd_peer;         /* [world] */
    ih_err err;            /* sticky first error */
    char errmsg[1024];
} tcp_fabric;

static ih_err sticky(tcp_fabric *t) { return ih_fail(t->err, "%s", t->errmsg); }

static void close_all(tcp_fabric *t)
{
    for (int p = 0; p < t->base.world; p++) {
        if (t->peers[p].fd >= 0) {
            shutdown(t->peers[p].fd, SHUT_RDWR);
            close(t->peers[p].fd);
            t->peers[p].fd = -1;
        }
    }
}

static void tcp_abort(comm_fabric *f, ih_err code, const char *msg)
{
    tcp_fabric *t = (tcp_fabric *)f;
    if (!t->err) {
        t->err = code;
        snprintf(t->errmsg, sizeof t->errmsg, "%s", msg);
    }
    close_all(t);
}

/* Records the first error (already formatted by ih_fail) and returns it. Connections stay
 * open until the owner calls abort(), after publishing the failure (see comm.c). */
static ih_err fail_now(tcp_fabric *t, ih_err e)
{
    if (!t->err) {
        t->err = e;
        snprintf(t->errmsg, sizeof t->errmsg, "%s", ih_last_error());
    }
    return sticky(t);
}

static void enqueue(comm_req **head, comm_req **tail, comm_req *r)
{
    r->next = NULL;
    if (*tail) (*tail)->next = r;
    else *head = r;
    *tail = r;
}

static ih_err tcp_post(tcp_fabric *t, int peer, void *buf, size_t len, comm_req *req, int kind)
{
    if (t->err) return sticky(t);
    IH_ASSERT(peer >= 0 && peer < t->base.world && peer != t->base.rank, "bad peer %d", peer);
    req->buf = buf;
    req->len = len;
    req->done = 0;
    req->peer = peer;
    req->kind = kind;
    req->next = NULL;
    if (len == 0) return IH_OK;
    tcp_peer *p = &t->peers[peer];
    if (kind == COMM_REQ_SEND) enqueue(&p->sq_head, &p->sq_tail, req);
    else enqueue(&p->rq_head, &p->rq_tail, req);
    return IH_OK;
}

static ih_err tcp_post_send(comm_fabric *f, int peer, const void *buf, size_t len, comm_req *req)
{
    return tcp_post((tcp_fabric *)f, peer, (void *)(uintptr_t)buf, len, req, COMM_REQ_SEND);
}

static ih_err tcp_post_recv(comm_fabric *f, int peer, void *buf, size_t len, comm_req *req)
{
    return tcp_post((tcp_fabric *)f, peer, buf, len, req, COMM_REQ_RECV);
}

/* Moves what the kernel accepts without blocking. Returns bytes moved, or sets the sticky
 * error and returns SIZE_MAX. */
static size_t progress_peer(tcp_fabric *t, int pi)
{
    tcp_peer *p = &t->peers[pi];
    size_t moved = 0;
    while (p->sq_head) {
        comm_req *r = p->sq_head;
        ssize_t n = send(p->fd, r->buf + r->done, r->len - r->done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            r->done += (size_t)n;
            moved += (size_t)n;
            if (r->done == r->len) {
                p->sq_head = r->next;
                if (!p->sq_head) p->sq_tail = NULL;
                continue;
            }
            /* a short send means the socket buffer is full: stop retrying this one */
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            int remote = errno == EPIPE || errno == ECONNRESET;
            fail_now(t, ih_fail(remote ? IH_E_REMOTE : IH_E_NET,
                                "rank %d (host %s) dropped its connection while rank %d was sending "
                                "%zu B to it (%s): it exited or failed, see its log",
                                pi, p->host, t->base.rank, r->len, strerror(errno)));
            return SIZE_MAX;
        }
        break;
    }
    while (p->rq_head) {
        comm_req *r = p->rq_head;
        ssize_t n = recv(p->fd, r->buf + r->done, r->len - r->done, MSG_DONTWAIT);
        if (n > 0) {
            r->done += (size_t)n;
            moved += (size_t)n;
            if (r->done == r->len) {
                p->rq_head = r->next;
                if (!p->rq_head) p->rq_tail = NULL;
                continue;
            }
            continue; /* the socket may hold more: a later recv returns EAGAIN when drained */
        }
        if (n == 0) {
            fail_now(t, ih_fail(IH_E_REMOTE,
                                "rank %d (host %s) closed its connection with %zu of %zu B still "
                                "to arrive at rank %d: it exited or failed, see its log",
                                pi, p->host, r->len - r->done, r->len, t->base.rank));
            return SIZE_MAX;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            int remote = errno == ECONNRESET;
            fail_now(t, ih_fail(remote ? IH_E_REMOTE : IH_E_NET,
                                "receiving from rank %d (host %s) at rank %d: %s%s", pi, p->host,
                                t->base.rank, strerror(errno),
                                remote ? " (it exited or failed, see its log)" : ""));
            return SIZE_MAX;
        }
        break;
    }
    return moved;
}

static ih_err tcp_wait(comm_fabric *f, comm_req *req, int64_t timeout_ms)
{
    tcp_fabric *t = (tcp_fabric *)f;
    uint64_t last = ih_now_ns();
    while (req->done < req->len) {
        if (t->err) return sticky(t);
        size_t moved = 0;
        int np = 0;
        /* the awaited peer first: its queue is what we block on */
        for (int k = 0; k < t->base.world; k++) {
            int pi = (req->peer + k) % t->base.world;
            tcp_peer *p = &t->peers[pi];
            if (!p->sq_head && !p->rq_head) continue;
            size_t m = progress_peer(t, pi);
            if (m == SIZE_MAX) return sticky(t);
            moved += m;
            short ev = (short)((p->sq_head ? POLLOUT : 0) | (p->rq_head ? POLLIN : 0));
            if (ev) {
                t->pfds[np] = (struct pollfd){.fd = p->fd, .events = ev};
                t->pfd_peer[np++] = pi;
            }
        }
        if (req->done >= req->len) break;
        uint64_t now = ih_now_ns();
        if (moved) { last = now; continue; }
        uint64_t waited_ms = (now - last) / 1000000;
        if ((int64_t)waited_ms >= timeout_ms) {
            tcp_peer *p = &t->peers[req->peer];
            return fail_now(t, ih_fail(IH_E_TIMEOUT,
                "rank %d (host %s) moved no data for %.1f s while rank %d waited to %s %zu B "
                "(%zu done): it is hung, stopped or too slow (raise IH_COMM_TIMEOUT_S if it is "
                "just slow)", req->peer, p->host, (double)timeout_ms / 1e3, t->base.rank,
                req->kind == COMM_REQ_SEND ? "send it" : "receive from it", req->len, req->done));
        }
        int ms = (int)((uint64_t)timeout_ms - waited_ms);
        if (ms > 1000) ms = 1000;
        int rc = poll(t->pfds, (nfds_t)np, ms);
        if (rc < 0 && errno != EINTR)
            return fail_now(t, ih_fail(IH_E_NET, "poll: %s", strerror(errno)));
    }
    return IH_OK;
}

static void tcp_destroy(comm_fabric *f)
{
    tcp_fabric *t = (tcp_fabric *)f;
    if (t->peers) close_all(t);
    free(t->peers);
    free(t->pfds);
    free(t->pfd_peer);
    free(t);
}

static const comm_fabric_ops k_tcp_ops = {
    .name = "tcp",
    .post_send = tcp_post_send,
    .post_recv = tcp_post_recv,
    .wait = tcp_wait,
    .abort = tcp_abort,
    .destroy = tcp_destroy,
};

static const unsigned char k_hello_magic[4] = {'I', 'H', 'T', 'P'};

ih_err comm_fabric_tcp_create(comm_fabric **out, comm_store *store, const char *ns, int rank,
                              int world, int sockbuf, int64_t timeout_ms)
{
    *out = NULL;
    ih_err e = IH_OK;
    int lfd = -1;
    uint64_t deadline = ih_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    tcp_fabric *t = calloc(1, sizeof *t);
    if (!t) return ih_fail(IH_E_SYS, "out of memory for the tcp fabric");
    t->base.ops = &k_tcp_ops;
    t->base.rank = rank;
    t->base.world = world;
    t->peers = calloc((size_t)world, sizeof *t->peers);
    t->pfds = calloc((size_t)world, sizeof *t->pfds);
    t->pfd_peer = calloc((size_t)world, sizeof *t->pfd_peer);
    if (!t->peers || !t->pfds || !t->pfd_peer) {
        e = ih_fail(IH_E_SYS, "out of memory for %d tcp peers", world);
        goto fail;
    }
    for (int p = 0; p < world; p++) t->peers[p].fd = -1;
    if (world == 1) { *out = &t->base; return IH_OK; }

    char ip[128], host[64], key[300], val[512];
    int port = 0;
    comm_store_local_addr(store, ip, sizeof ip);
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    IH_TRY_GOTO(comm_sock_listen(&lfd, ip, 0, world, sockbuf, &port), e, fail);
    snprintf(key, sizeof key, "%s/addr/%d", ns, rank);
    snprintf(val, sizeof val, "%s %d %s", ip, port, host);
    IH_TRY_GOTO(comm_store_set(store, key, val, strlen(val), timeout_ms), e, fail);

    /* Addresses of all peers (hosts are needed for messages even for accepted peers). */
    for (int p = 0; p < world; p++) {
        if (p == rank) { snprintf(t->peers[p].host, sizeof t->peers[p].host, "%s", host); continue; }
        snprintf(key, sizeof key, "%s/addr/%d", ns, p);
        size_t len = 0;
        int64_t left = (int64_t)((deadline > ih_now_ns() ? deadline - ih_now_ns() : 0) / 1000000);
        e = comm_store_get(store, key, val, sizeof val - 1, &len, left);
        if (e == IH_E_TIMEOUT) {
            e = ih_fail(IH_E_TIMEOUT, "rendezvous: rank %d of %d never registered its address in "
                        "the store within %.1f s (rank %d waiting); is it started, with the same "
                        "MASTER_ADDR/MASTER_PORT and WORLD_SIZE?", p, world,
                        (double)timeout_ms / 1e3, rank);
            goto fail;
        }
        if (e) goto fail;
        val[len < sizeof val - 1 ? len : sizeof val - 1] = 0;
        char pip[128], phost[64];
        int pport = 0;
        if (sscanf(val, "%127s %d %63s", pip, &pport, phost) != 3) {
            e = ih_fail(IH_E_NET, "rendezvous: malformed address '%s' for rank %d", val, p);
            goto fail;
        }
        snprintf(t->peers[p].host, sizeof t->peers[p].host, "%s", phost);
        if (p < rank) {
            char what[160];
            snprintf(what, sizeof what, "rank %d (host %s)", p, phost);
            IH_TRY_GOTO(comm_sock_connect(&t->peers[p].fd, pip, pport, sockbuf, deadline, what), e, fail);
            comm_tcp_hello h;
            memcpy(h.magic, k_hello_magic, 4);
            comm_put_be32(h.rank, (uint32_t)rank);
            comm_put_be32(h.world, (uint32_t)world);
            IH_TRY_GOTO(comm_sock_write_all(t->peers[p].fd, &h, sizeof h, deadline, what), e, fail);
        }
    }
    for (int n = rank + 1; n < world; n++) {
        int fd = -1;
        e = comm_sock_accept(lfd, &fd, deadline, "a higher rank");
        if (e == IH_E_TIMEOUT) {
            char missing[256] = "";
            size_t o = 0;
            for (int p = rank + 1; p < world && o + 12 < sizeof missing; p++)
                if (t->peers[p].fd < 0) o += (size_t)snprintf(missing + o, sizeof missing - o, " %d", p);
            e = ih_fail(IH_E_TIMEOUT, "rendezvous: rank %d waited %.1f s for ranks%s to connect",
                        rank, (double)timeout_ms / 1e3, missing);
            goto fail;
        }
        if (e) goto fail;
        comm_tcp_hello h;
        e = comm_sock_read_all(fd, &h, sizeof h, deadline, "a connecting rank");
        uint32_t pr = comm_get_be32(h.rank);
        if (e || memcmp(h.magic, k_hello_magic, 4) || comm_get_be32(h.world) != (uint32_t)world ||
            pr <= (uint32_t)rank || pr >= (uint32_t)world || t->peers[pr].fd >= 0) {
            close(fd);
            if (!e) e = ih_fail(IH_E_NET, "rendezvous: rank %d got a bad hello (another job on "
                                "the same port, or WORLD_SIZE differs between ranks)", rank);
            goto fail;
        }
        t->peers[pr].fd = fd;
    }
    close(lfd);
    lfd = -1;
    for (int p = 0; p < world; p++) {
        if (p == rank) continue;
        comm_sock_tune(t->peers[p].fd, 0);
        IH_TRY_GOTO(comm_sock_set_nonblock(t->peers[p].fd, 1), e, fail);
    }
    IH_INFO(IH_LOG_NET, "tcp fabric: rank %d connected to %d peers (sockbuf %d)", rank, world - 1, sockbuf);
    *out = &t->base;
    return IH_OK;
fail:
    if (lfd >= 0) close(lfd);
    tcp_destroy(&t->base);
    return e;
}
