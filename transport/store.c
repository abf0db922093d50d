/* transport/store.c — see store.h. Setup-path code: it allocates freely, the hot path never
 * touches it. */
#define _GNU_SOURCE
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/thread.h"
#include "sock.h"

enum { OP_SET = 1, OP_GET = 2, OP_ADD = 3 };
static const unsigned char k_magic[4] = {'I', 'H', 'S', 'T'};
#define MAX_KEY 255
#define MAX_CLIENTS 1024

typedef struct { char *key; void *val; size_t len; } kv;

struct comm_store_server {
    int inherited; /* lfd came from the launcher (IH_STORE_FD) */
    int lfd;
    int wake[2];           /* self-pipe: destroy writes, the thread wakes and exits */
    int port;
    pthread_t thread;
    int started;
    /* owner: server thread */
    kv *kvs;
    size_t nkv, capkv;
    int clients[MAX_CLIENTS];
    int nclients;
    atomic_int nclients_pub; /* nclients, published for comm_store_server_linger */
    unsigned char val[COMM_STORE_MAX_VAL]; /* request value being served */
};

struct comm_store {
    int fd;
    char host[256];
    int port;
    char what[300];
};

static kv *kv_find(comm_store_server *s, const char *key)
{
    for (size_t i = 0; i < s->nkv; i++)
        if (!strcmp(s->kvs[i].key, key)) return &s->kvs[i];
    return NULL;
}

static int kv_put(comm_store_server *s, const char *key, const void *val, size_t len)
{
    kv *e = kv_find(s, key);
    if (!e) {
        if (s->nkv == s->capkv) {
            size_t nc = s->capkv ? 2 * s->capkv : 64;
            kv *n = realloc(s->kvs, nc * sizeof *n);
            if (!n) return -1;
            s->kvs = n;
            s->capkv = nc;
        }
        e = &s->kvs[s->nkv];
        e->key = strdup(key);
        e->val = NULL;
        e->len = 0;
        if (!e->key) return -1;
        s->nkv++;
    }
    void *v = malloc(len ? len : 1);
    if (!v) return -1;
    memcpy(v, val, len);
    free(e->val);
    e->val = v;
    e->len = len;
    return 0;
}

/* Serves one request from a readable client; returns -1 to drop the client. A client sends
 * whole requests, so reading the rest with a short deadline cannot stall the server long. */
static int serve_one(comm_store_server *s, int fd)
{
    comm_store_req_hdr h;
    uint64_t dl = ih_now_ns() + 5000000000ull;
    if (comm_sock_read_all(fd, &h, sizeof h, dl, "store client") != IH_OK) return -1;
    uint32_t op = comm_get_be32(h.op), kl = comm_get_be32(h.keylen), vl = comm_get_be32(h.vallen);
    if (memcmp(h.magic, k_magic, 4) || kl == 0 || kl > MAX_KEY || vl > COMM_STORE_MAX_VAL) {
        IH_WARN("rendezvous store: dropping a client that sent a malformed request "
                "(not an imagenet-1h rank? check MASTER_PORT)");
        return -1;
    }
    char key[MAX_KEY + 1];
    unsigned char *val = s->val;
    if (comm_sock_read_all(fd, key, kl, dl, "store client") != IH_OK) return -1;
    key[kl] = 0;
    if (vl && comm_sock_read_all(fd, val, vl, dl, "store client") != IH_OK) return -1;
    comm_store_resp_hdr r;
    const void *out = NULL;
    size_t outlen = 0;
    kv *e = kv_find(s, key);
    uint32_t status = 0;
    if (op == OP_SET || (op == OP_ADD && !e)) {
        if (kv_put(s, key, val, vl)) return -1;
    } else if (op == OP_ADD) {
        status = 1; /* present already: the caller did not win */
    } else if (op == OP_GET) {
        if (e) { out = e->val; outlen = e->len; }
        else status = 1;
    } else {
        return -1;
    }
    comm_put_be32(r.status, status);
    comm_put_be32(r.vallen, (uint32_t)outlen);
    if (comm_sock_write_all(fd, &r, sizeof r, dl, "store client") != IH_OK) return -1;
    if (outlen && comm_sock_write_all(fd, out, outlen, dl, "store client") != IH_OK) return -1;
    return 0;
}

static void *server_main(void *arg)
{
    comm_store_server *s = arg;
    struct pollfd *pf = calloc(MAX_CLIENTS + 2, sizeof *pf);
    if (!pf) {
        IH_WARN("rendezvous store: out of memory; the store stops serving");
        return NULL;
    }
    for (;;) {
        pf[0] = (struct pollfd){.fd = s->wake[0], .events = POLLIN};
        pf[1] = (struct pollfd){.fd = s->lfd, .events = POLLIN};
        for (int i = 0; i < s->nclients; i++)
            pf[2 + i] = (struct pollfd){.fd = s->clients[i], .events = POLLIN};
        int rc = poll(pf, (nfds_t)(2 + s->nclients), 1000);
        if (rc < 0 && errno != EINTR) break;
        if (pf[0].revents) break;
        if (pf[1].revents & POLLIN) {
            int c = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0) {
                if (s->nclients < MAX_CLIENTS) {
                    comm_sock_tune(c, 0);
                    s->clients[s->nclients++] = c;
                } else {
                    close(c);
                }
            }
        }
        for (int i = s->nclients - 1; i >= 0; i--) {
            if (!pf[2 + i].revents) continue;
            if (serve_one(s, s->clients[i]) < 0) {
                close(s->clients[i]);
                s->clients[i] = s->clients[--s->nclients];
            }
        }
        atomic_store(&s->nclients_pub, s->nclients);
    }
    free(pf);
    return NULL;
}

/* The listening socket a launcher bound for us (IH_STORE_FD, store.h), if it is one and on
 * `port` (which must be given); taken once per process. Else -1, and the caller binds. A
 * descriptor that is refused is made close-on-exec, so it does not travel further. */
static int inherited_listener(int port)
{
    static atomic_int taken;
    const char *v = getenv("IH_STORE_FD");
    if (!v || !*v || port <= 0 || atomic_exchange(&taken, 1)) return -1;
    char *end = NULL;
    long fd = strtol(v, &end, 10);
    if (*end || fd < 3 || fd > 1 << 20) {
        IH_WARN("IH_STORE_FD='%s' is not a file descriptor; binding port %d instead", v, port);
        return -1;
    }
    (void)fcntl((int)fd, F_SETFD, FD_CLOEXEC); /* ours now, or refused: not for our children */
    int acc = 0;
    socklen_t al = sizeof acc;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockopt((int)fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) || !acc ||
        getsockname((int)fd, (struct sockaddr *)&ss, &sl)) {
        IH_WARN("IH_STORE_FD=%ld is not a listening socket; binding port %d instead", fd, port);
        return -1;
    }
    const int bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                     : ((struct sockaddr_in *)&ss)->sin_port);
    if (bound != port) {
        IH_WARN("IH_STORE_FD=%ld listens on port %d, not MASTER_PORT %d; binding %d instead", fd, bound, port, port);
        return -1;
    }
    (void)listen((int)fd, 1024); /* the launcher's backlog may be smaller */
    return (int)fd;
}

ih_err comm_store_server_create(comm_store_server **out, const char *host, int port)
{
    *out = NULL;
    comm_store_server *s = calloc(1, sizeof *s);
    if (!s) return ih_fail(IH_E_SYS, "out of memory for the rendezvous store");
    s->lfd = s->wake[0] = s->wake[1] = -1;
    ih_err e = IH_OK;
    s->lfd = inherited_listener(port);
    s->inherited = s->lfd >= 0;
    if (s->inherited) s->port = port;
    else IH_TRY_GOTO(comm_sock_listen(&s->lfd, host, port, 1024, 0, &s->port), e, fail);
    if (pipe2(s->wake, O_CLOEXEC) < 0) {
        e = ih_fail(IH_E_SYS, "pipe: %s", strerror(errno));
        goto fail;
    }
    IH_TRY_GOTO(ih_thread_start(&s->thread, "ih-store", server_main, s), e, fail);
    s->started = 1;
    IH_INFO(IH_LOG_BOOT, "rendezvous store listening on port %d%s", s->port,
            s->inherited ? " (the socket the launcher bound, IH_STORE_FD)" : "");
    *out = s;
    return IH_OK;
fail:
    comm_store_server_destroy(s);
    return e;
}

int comm_store_server_port(const comm_store_server *s) { return s->port; }

void comm_store_server_linger(comm_store_server *s, int64_t max_ms)
{
    if (!s) return;
    uint64_t end = ih_now_ns() + (uint64_t)max_ms * 1000000ull;
    while (atomic_load(&s->nclients_pub) > 0 && ih_now_ns() < end) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

void comm_store_server_destroy(comm_store_server *s)
{
    if (!s) return;
    if (s->started) {
        char b = 1;
        if (write(s->wake[1], &b, 1) < 0) { /* the join below still ends it within 1 s */ }
        pthread_join(s->thread, NULL);
    }
    for (int i = 0; i < s->nclients; i++) close(s->clients[i]);
    if (s->lfd >= 0) close(s->lfd);
    if (s->wake[0] >= 0) close(s->wake[0]);
    if (s->wake[1] >= 0) close(s->wake[1]);
    for (size_t i = 0; i < s->nkv; i++) { free(s->kvs[i].key); free(s->kvs[i].val); }
    free(s->kvs);
    free(s);
}

ih_err comm_store_connect(comm_store **out, const char *host, int port, int64_t timeout_ms)
{
    *out = NULL;
    comm_store *s = calloc(1, sizeof *s);
    if (!s) return ih_fail(IH_E_SYS, "out of memory for the store client");
    snprintf(s->host, sizeof s->host, "%s", host);
    s->port = port;
    snprintf(s->what, sizeof s->what, "the rendezvous store (rank 0) at %s:%d", host, port);
    ih_err e = comm_sock_connect(&s->fd, host, port, 0, ih_now_ns() + (uint64_t)timeout_ms * 1000000ull, s->what);
    if (e) { free(s); return e; }
    comm_sock_tune(s->fd, 0);
    *out = s;
    return IH_OK;
}

void comm_store_local_addr(const comm_store *s, char *out, size_t cap)
{
    comm_sock_local_addr(s->fd, out, cap);
}

void comm_store_destroy(comm_store *s)
{
    if (!s) return;
    close(s->fd);
    free(s);
}

static ih_err roundtrip(comm_store *s, uint32_t op, const char *key, const void *val, size_t len,
                        uint32_t *status, void *out, size_t cap, size_t *outlen, int64_t timeout_ms)
{
    size_t kl = strlen(key);
    if (kl == 0 || kl > MAX_KEY || len > COMM_STORE_MAX_VAL)
        return ih_fail(IH_E_INTERNAL, "store key '%s' or value (%zu B) too long", key, len);
    uint64_t dl = ih_now_ns() + (uint64_t)(timeout_ms > 1000 ? timeout_ms : 1000) * 1000000ull;
    comm_store_req_hdr h;
    memcpy(h.magic, k_magic, 4);
    comm_put_be32(h.op, op);
    comm_put_be32(h.keylen, (uint32_t)kl);
    comm_put_be32(h.vallen, (uint32_t)len);
    IH_TRY(comm_sock_write_all(s->fd, &h, sizeof h, dl, s->what));
    IH_TRY(comm_sock_write_all(s->fd, key, kl, dl, s->what));
    if (len) IH_TRY(comm_sock_write_all(s->fd, val, len, dl, s->what));
    comm_store_resp_hdr r;
    IH_TRY(comm_sock_read_all(s->fd, &r, sizeof r, dl, s->what));
    *status = comm_get_be32(r.status);
    size_t vl = comm_get_be32(r.vallen);
    if (vl > COMM_STORE_MAX_VAL) return ih_fail(IH_E_NET, "%s sent a malformed reply", s->what);
    unsigned char skip[256];
    size_t keep = vl < cap ? vl : cap;
    if (keep) IH_TRY(comm_sock_read_all(s->fd, out, keep, dl, s->what));
    for (size_t left = vl - keep; left;) {
        size_t n = left < sizeof skip ? left : sizeof skip;
        IH_TRY(comm_sock_read_all(s->fd, skip, n, dl, s->what));
        left -= n;
    }
    if (outlen) *outlen = vl;
    return IH_OK;
}

ih_err comm_store_set(comm_store *s, const char *key, const void *val, size_t len, int64_t timeout_ms)
{
    uint32_t st;
    return roundtrip(s, OP_SET, key, val, len, &st, NULL, 0, NULL, timeout_ms);
}

ih_err comm_store_add(comm_store *s, const char *key, const void *val, size_t len, int *won,
                      int64_t timeout_ms)
{
    uint32_t st = 1;
    IH_TRY(roundtrip(s, OP_ADD, key, val, len, &st, NULL, 0, NULL, timeout_ms));
    *won = st == 0;
    return IH_OK;
}

ih_err comm_store_get(comm_store *s, const char *key, void *val, size_t cap, size_t *len,
                      int64_t timeout_ms)
{
    uint64_t dl = ih_now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ull;
    long sleep_us = 500;
    for (;;) {
        uint32_t st = 1;
        IH_TRY(roundtrip(s, OP_GET, key, NULL, 0, &st, val, cap, len, timeout_ms));
        if (st == 0) return IH_OK;
        if (ih_now_ns() >= dl)
            return ih_fail(IH_E_TIMEOUT, "key '%s' absent from %s after %.1f s", key, s->what,
                           (double)timeout_ms / 1e3);
        struct timespec ts = {0, sleep_us * 1000L}; /* backoff: 0.5 ms doubling to 50 ms */
        nanosleep(&ts, NULL);
        if (sleep_us < 50000) sleep_us *= 2;
    }
}
