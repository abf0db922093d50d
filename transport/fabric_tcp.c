/* transport/fabric_tcp.c — see fabric_tcp.h.
 *
 * Progress engine: each peer has a FIFO of posted sends and one of posted receives (intrusive
 * lists through comm_req.next, so posting never allocates). The "no progress" timer restarts
 * whenever any byte moves, so a large transfer never times out while a dead or stalled peer
 * is detected after timeout_ms.
 *
 * Receive thread ("ih-comm-rx", one per fabric with world > 1, when IH_COMM_RX_THREAD=1; off
 * by default, see create): it alone drains the sockets into the posted receives, while the owner thread sends
 * (inside wait(), with non-blocking send()) and reduces the chunks already received. On a
 * loopback the two copies of every byte (into the socket at the sender, out of it at the
 * receiver) are most of the CPU work of an allreduce, and with one thread per rank the
 * receive copy and the reduction ran one after the other; with the thread they overlap. The
 * fabric is still driven by one owner thread; the rx thread is internal:
 *  - receive queues are guarded by `mu` (the owner appends, the rx thread pops); a request's
 *    buf/len are fixed before it is queued, and only the rx thread writes a queued receive's
 *    `done`, with release stores that the owner reads with acquire loads. The rx thread pops
 *    a request before it publishes done == len, so the owner may re-post it at once.
 *  - wake-ups are eventfds with a sleeping flag each (store flag, re-check, poll; the other
 *    side stores its state, then loads the flag: seq_cst on both sides, so a wake-up is never
 *    lost and there is no syscall while the other side is busy): `rx_wake_fd` tells the rx
 *    thread that a receive was posted or that it must stop, `done_fd` tells a waiting owner
 *    that a receive completed or failed.
 *  - the first error of either thread is sticky (`err`, set once under `mu` after `errmsg`);
 *    the rx thread stops at its first error and wakes the owner, which reports it; the owner
 *    joins the rx thread before wait() returns any error, because the failed operation's
 *    receive requests (on the caller's stack) are still queued.
 *  - abort() shuts the sockets down at once (peers see the failure), stops and joins the rx
 *    thread (it is woken, so this is prompt), then closes them: no fd is closed under it.
 * Without the thread (the default), wait() progresses receives itself.
 */
#define _GNU_SOURCE
#include "fabric_tcp.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/thread.h"
#include "sock.h"

typedef struct {
    int fd;
    comm_req *sq_head, *sq_tail; /* owner thread only */
    comm_req *rq_head, *rq_tail; /* under mu */
    char host[64];
} tcp_peer;

typedef struct {
    comm_fabric base;
    tcp_peer *peers;       /* [world]; peers[rank].fd = -1 */
    struct pollfd *pfds;   /* [world + 1] owner's scratch for wait() */
    int *pfd_peer;         /* [world + 1] */
    pthread_mutex_t mu;    /* receive queues, err/errmsg writers */
    pthread_mutex_t tsan_io_mu; /* see IO_LOCK */
    int err;               /* sticky first error (ih_err); atomic, set once under mu */
    char errmsg[1024];     /* written before err, never after */
    uint64_t last_rx_ns;   /* atomic: when the rx thread last moved a byte */
    /* receive thread */
    int rx_on;
    pthread_t rx;
    int rx_wake_fd, done_fd; /* eventfds, -1 when unused */
    int rx_stop;             /* atomic */
    int rx_sleeping;         /* atomic */
    int owner_waiting;       /* atomic */
    struct pollfd *rx_pfds;  /* [world + 1] rx thread's scratch */
    int *rx_pfd_peer;        /* [world + 1] */
} tcp_fabric;

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)
#define LOAD_SC(x) __atomic_load_n(&(x), __ATOMIC_SEQ_CST)
#define STORE_SC(x, v) __atomic_store_n(&(x), (v), __ATOMIC_SEQ_CST)

/* ThreadSanitizer builds only: send() and recv() calls hold `tsan_io_mu`. A receive may
 * overwrite bytes that a send of this rank read a moment earlier (the ring's allgather lands
 * where the reduce-scatter sent from); that is safe because those bytes come back only after
 * the peer received them, but the happens-before edge runs through the peer process, which
 * TSan cannot see, and it would report a race between the owner's send and the rx thread's
 * recv. Serializing the two calls gives TSan that edge: the data a recv returns was copied by
 * a send whose call had already ended, hence released the mutex first. Release builds skip
 * it, because overlapping the two kernel copies is the point of the rx thread. */
#if defined(__SANITIZE_THREAD__)
#define IH_TSAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define IH_TSAN_BUILD 1
#endif
#endif
#ifdef IH_TSAN_BUILD
#define IO_LOCK(t) pthread_mutex_lock(&(t)->tsan_io_mu)
#define IO_UNLOCK(t) pthread_mutex_unlock(&(t)->tsan_io_mu)
#else
#define IO_LOCK(t) ((void)0)
#define IO_UNLOCK(t) ((void)0)
#endif

static ih_err sticky(tcp_fabric *t) { return ih_fail((ih_err)LOAD(t->err), "%s", t->errmsg); }

static void efd_signal(int fd)
{
    uint64_t one = 1;
    ssize_t n = write(fd, &one, sizeof one);
    (void)n; /* only fails when the counter would overflow: the reader is awake then anyway */
}

static void efd_drain(int fd)
{
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof v);
    (void)n; /* EAGAIN: nothing was pending */
}

/* Records the first error (code and message) and returns 1 if this call set it. Any thread. */
static int set_err(tcp_fabric *t, ih_err code, const char *msg)
{
    int first = 0;
    pthread_mutex_lock(&t->mu);
    if (!t->err) {
        snprintf(t->errmsg, sizeof t->errmsg, "%s", msg);
        STORE(t->err, (int)code);
        first = 1;
    }
    pthread_mutex_unlock(&t->mu);
    if (t->rx_on) efd_signal(t->done_fd); /* a waiting owner reports it */
    return first;
}

static void shutdown_all(tcp_fabric *t)
{
    for (int p = 0; p < t->base.world; p++)
        if (t->peers[p].fd >= 0) shutdown(t->peers[p].fd, SHUT_RDWR);
}

static void rx_stop_join(tcp_fabric *t)
{
    if (!t->rx_on) return;
    STORE_SC(t->rx_stop, 1);
    efd_signal(t->rx_wake_fd);
    pthread_join(t->rx, NULL);
    t->rx_on = 0;
}

/* The owner's way out of wait() on any error: the caller's receive requests (often on its
 * stack) stay queued, so the rx thread must be stopped before the owner returns; the rx thread
 * itself stops touching requests at its own first error. */
static ih_err owner_fail(tcp_fabric *t)
{
    rx_stop_join(t);
    return sticky(t);
}

static void close_all(tcp_fabric *t)
{
    shutdown_all(t);
    rx_stop_join(t);
    for (int p = 0; p < t->base.world; p++) {
        if (t->peers[p].fd >= 0) {
            close(t->peers[p].fd);
            t->peers[p].fd = -1;
        }
    }
}

static void tcp_abort(comm_fabric *f, ih_err code, const char *msg)
{
    tcp_fabric *t = (tcp_fabric *)f;
    set_err(t, code, msg);
    close_all(t);
}

/* Records the first error (already formatted by ih_fail in this thread) and returns the
 * sticky one. Connections stay open until the owner calls abort(), after publishing the
 * failure (see comm.c). Any thread. */
static ih_err fail_now(tcp_fabric *t, ih_err e)
{
    set_err(t, e, ih_last_error());
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
    if (LOAD(t->err)) return sticky(t);
    IH_ASSERT(peer >= 0 && peer < t->base.world && peer != t->base.rank, "bad peer %d", peer);
    req->buf = buf;
    req->len = len;
    req->done = 0;
    req->peer = peer;
    req->kind = kind;
    req->next = NULL;
    if (len == 0) return IH_OK;
    tcp_peer *p = &t->peers[peer];
    if (kind == COMM_REQ_SEND) {
        enqueue(&p->sq_head, &p->sq_tail, req);
        return IH_OK;
    }
    pthread_mutex_lock(&t->mu);
    enqueue(&p->rq_head, &p->rq_tail, req);
    pthread_mutex_unlock(&t->mu);
    if (t->rx_on && LOAD_SC(t->rx_sleeping)) efd_signal(t->rx_wake_fd);
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

/* Sends what the kernel accepts without blocking. Owner thread. Returns bytes moved, or sets
 * the sticky error and returns SIZE_MAX. */
static size_t progress_send(tcp_fabric *t, int pi)
{
    tcp_peer *p = &t->peers[pi];
    size_t moved = 0;
    while (p->sq_head) {
        comm_req *r = p->sq_head;
        IO_LOCK(t);
        ssize_t n = send(p->fd, r->buf + r->done, r->len - r->done, MSG_NOSIGNAL | MSG_DONTWAIT);
        int en = errno;
        IO_UNLOCK(t);
        errno = en;
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
    return moved;
}

/* Receives what the socket holds into the posted receives. The rx thread (or the owner when
 * there is none). Returns bytes moved, or sets the sticky error and returns SIZE_MAX. */
static size_t progress_recv(tcp_fabric *t, int pi, int *completed)
{
    tcp_peer *p = &t->peers[pi];
    size_t moved = 0;
    for (;;) {
        pthread_mutex_lock(&t->mu);
        comm_req *r = p->rq_head;
        pthread_mutex_unlock(&t->mu);
        if (!r) break;
        size_t done = __atomic_load_n(&r->done, __ATOMIC_RELAXED); /* only this thread writes it */
        IO_LOCK(t);
        ssize_t n = recv(p->fd, r->buf + done, r->len - done, MSG_DONTWAIT);
        int en = errno;
        IO_UNLOCK(t);
        errno = en;
        if (n > 0) {
            done += (size_t)n;
            moved += (size_t)n;
            if (done == r->len) { /* pop before publishing: the owner may re-post r at once */
                pthread_mutex_lock(&t->mu);
                p->rq_head = r->next;
                if (!p->rq_head) p->rq_tail = NULL;
                pthread_mutex_unlock(&t->mu);
                STORE_SC(r->done, done);
                (*completed)++;
            } else {
                STORE(r->done, done);
            }
            continue; /* the socket may hold more: a later recv returns EAGAIN when drained */
        }
        if (n == 0) {
            fail_now(t, ih_fail(IH_E_REMOTE,
                                "rank %d (host %s) closed its connection with %zu of %zu B still "
                                "to arrive at rank %d: it exited or failed, see its log",
                                pi, p->host, r->len - done, r->len, t->base.rank));
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

/* The rx thread: drain every socket that has a posted receive; poll() when none moved. */
static void *rx_main(void *arg)
{
    tcp_fabric *t = arg;
    int world = t->base.world;
    while (!LOAD_SC(t->rx_stop)) {
        size_t moved = 0;
        int completed = 0;
        for (int pi = 0; pi < world; pi++) {
            if (pi == t->base.rank) continue;
            size_t m = progress_recv(t, pi, &completed);
            if (m == SIZE_MAX) return NULL; /* error recorded, owner woken; wait to be joined */
            moved += m;
        }
        if (moved) STORE(t->last_rx_ns, ih_now_ns());
        if (completed && LOAD_SC(t->owner_waiting)) efd_signal(t->done_fd);
        if (moved) continue;
        /* sleep: flag first, then the queues, so a receive posted after this look wakes us */
        STORE_SC(t->rx_sleeping, 1);
        int np = 0;
        pthread_mutex_lock(&t->mu);
        for (int pi = 0; pi < world; pi++) {
            if (t->peers[pi].rq_head) {
                t->rx_pfds[np] = (struct pollfd){.fd = t->peers[pi].fd, .events = POLLIN};
                t->rx_pfd_peer[np++] = pi;
            }
        }
        pthread_mutex_unlock(&t->mu);
        t->rx_pfds[np] = (struct pollfd){.fd = t->rx_wake_fd, .events = POLLIN};
        int rc = LOAD_SC(t->rx_stop) ? 0 : poll(t->rx_pfds, (nfds_t)np + 1, 1000);
        STORE_SC(t->rx_sleeping, 0);
        if (rc > 0 && (t->rx_pfds[np].revents & POLLIN)) efd_drain(t->rx_wake_fd);
        if (rc < 0 && errno != EINTR) {
            fail_now(t, ih_fail(IH_E_NET, "poll (rank %d, receive thread): %s", t->base.rank, strerror(errno)));
            return NULL;
        }
    }
    return NULL;
}

static ih_err tcp_wait(comm_fabric *f, comm_req *req, int64_t timeout_ms)
{
    tcp_fabric *t = (tcp_fabric *)f;
    uint64_t last = ih_now_ns();
    while (LOAD(req->done) < req->len) {
        if (LOAD(t->err)) return owner_fail(t);
        size_t moved = 0;
        int np = 0, completed = 0;
        /* the awaited peer first: its queue is what we block on */
        for (int k = 0; k < t->base.world; k++) {
            int pi = (req->peer + k) % t->base.world;
            tcp_peer *p = &t->peers[pi];
            if (pi == t->base.rank) continue;
            int rx_here = !t->rx_on && p->rq_head;
            if (!p->sq_head && !rx_here) continue;
            size_t m = progress_send(t, pi);
            if (m == SIZE_MAX) return owner_fail(t);
            moved += m;
            if (rx_here) {
                m = progress_recv(t, pi, &completed);
                if (m == SIZE_MAX) return owner_fail(t);
                moved += m;
            }
            short ev = (short)((p->sq_head ? POLLOUT : 0) | (!t->rx_on && p->rq_head ? POLLIN : 0));
            if (ev) {
                t->pfds[np] = (struct pollfd){.fd = p->fd, .events = ev};
                t->pfd_peer[np++] = pi;
            }
        }
        if (LOAD(req->done) >= req->len) break;
        uint64_t now = ih_now_ns();
        if (moved) { last = now; continue; }
        uint64_t rx_last = t->rx_on ? LOAD(t->last_rx_ns) : 0;
        if (rx_last > last) last = rx_last;
        uint64_t waited_ms = now > last ? (now - last) / 1000000 : 0;
        if ((int64_t)waited_ms >= timeout_ms) {
            tcp_peer *p = &t->peers[req->peer];
            t->base.stalled_peer = req->peer;
            snprintf(t->base.stalled_host, sizeof t->base.stalled_host, "%s", p->host);
            fail_now(t, ih_fail(IH_E_TIMEOUT,
                "rank %d (host %s) moved no data for %.1f s while rank %d waited to %s %zu B "
                "(%zu done): it is hung, stopped or too slow (raise IH_COMM_TIMEOUT_S if it is "
                "just slow)", req->peer, p->host, (double)timeout_ms / 1e3, t->base.rank,
                req->kind == COMM_REQ_SEND ? "send it" : "receive from it", req->len,
                (size_t)LOAD(req->done)));
            return owner_fail(t);
        }
        int ms = (int)((uint64_t)timeout_ms - waited_ms);
        if (ms > 1000) ms = 1000;
        int rc;
        if (t->rx_on) {
            t->pfds[np] = (struct pollfd){.fd = t->done_fd, .events = POLLIN};
            STORE_SC(t->owner_waiting, 1);
            if (LOAD_SC(req->done) >= req->len || LOAD(t->err)) rc = 0; /* completed meanwhile */
            else rc = poll(t->pfds, (nfds_t)np + 1, ms);
            STORE_SC(t->owner_waiting, 0);
            if (rc > 0 && (t->pfds[np].revents & POLLIN)) efd_drain(t->done_fd);
        } else {
            rc = poll(t->pfds, (nfds_t)np, ms);
        }
        if (rc < 0 && errno != EINTR) {
            fail_now(t, ih_fail(IH_E_NET, "poll: %s", strerror(errno)));
            return owner_fail(t);
        }
    }
    return IH_OK;
}

static void tcp_destroy(comm_fabric *f)
{
    tcp_fabric *t = (tcp_fabric *)f;
    if (t->peers) close_all(t);
    if (t->rx_wake_fd >= 0) close(t->rx_wake_fd);
    if (t->done_fd >= 0) close(t->done_fd);
    pthread_mutex_destroy(&t->mu);
    pthread_mutex_destroy(&t->tsan_io_mu);
    free(t->peers);
    free(t->pfds);
    free(t->pfd_peer);
    free(t->rx_pfds);
    free(t->rx_pfd_peer);
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
    t->base.stalled_peer = -1;
    t->rx_wake_fd = t->done_fd = -1;
    pthread_mutex_init(&t->mu, NULL);
    pthread_mutex_init(&t->tsan_io_mu, NULL);
    t->peers = calloc((size_t)world, sizeof *t->peers);
    t->pfds = calloc((size_t)world + 1, sizeof *t->pfds);
    t->pfd_peer = calloc((size_t)world + 1, sizeof *t->pfd_peer);
    t->rx_pfds = calloc((size_t)world + 1, sizeof *t->rx_pfds);
    t->rx_pfd_peer = calloc((size_t)world + 1, sizeof *t->rx_pfd_peer);
    if (!t->peers || !t->pfds || !t->pfd_peer || !t->rx_pfds || !t->rx_pfd_peer) {
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
    /* Off by default: on this 2-core machine with a rank per core it cost ~30% more CPU per
     * allreduce (a wake-up per chunk on each side) for no gain in time (bench/README.md). It
     * is for ranks that have a spare core. */
    const char *rxv = getenv("IH_COMM_RX_THREAD");
    if (rxv && !strcmp(rxv, "1")) {
        t->rx_wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        t->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (t->rx_wake_fd < 0 || t->done_fd < 0) {
            e = ih_fail(IH_E_SYS, "eventfd for the tcp receive thread: %s", strerror(errno));
            goto fail;
        }
        IH_TRY_GOTO(ih_thread_start(&t->rx, "ih-comm-rx", rx_main, t), e, fail);
        t->rx_on = 1;
    }
    IH_INFO(IH_LOG_NET, "tcp fabric: rank %d connected to %d peers (sockbuf %d, receive thread %s)",
            rank, world - 1, sockbuf, t->rx_on ? "on" : "off");
    *out = &t->base;
    return IH_OK;
fail:
    if (lfd >= 0) close(lfd);
    tcp_destroy(&t->base);
    return e;
}
