/* tests/transport/ranks.h — run k ranks as threads of this process over the real tcp fabric
 * on 127.0.0.1 (header-only). The test's main hosts the rendezvous store on an ephemeral
 * port; each rank thread calls `body`, which usually creates a comm_ctx with tp_ctx_create.
 * Per-rank results go into tp_rank (CHECK in tests/check.h is not thread-safe). */
#ifndef TESTS_TRANSPORT_RANKS_H
#define TESTS_TRANSPORT_RANKS_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/thread.h"
#include "tests/check.h"
#include "transport/comm.h"
#include "transport/store.h"

typedef struct tp_rank {
    int rank, world, port;
    const char *ns;
    int64_t timeout_ms;
    size_t chunk_bytes;
    int sockbuf;        /* 0 = the library default */
    void *user;
    int fails;          /* failed checks in this rank */
    char msg[3000];     /* the first failure, or the error text a test wants to inspect */
    ih_err err;         /* the error a body wants to report to main */
} tp_rank;

typedef void (*tp_body)(tp_rank *r);

static inline void tp_fail(tp_rank *r, const char *fmt, ...)
{
    if (!r->fails++) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->msg, sizeof r->msg, fmt, ap);
        va_end(ap);
    }
}

static inline ih_err tp_ctx_create(tp_rank *r, comm_ctx **out)
{
    comm_boot_info b;
    memset(&b, 0, sizeof b);
    b.rank = r->rank;
    b.world = r->world;
    b.master_port = r->port;
    snprintf(b.master_addr, sizeof b.master_addr, "127.0.0.1");
    snprintf(b.source, sizeof b.source, "test");
    comm_opts o;
    memset(&o, 0, sizeof o);
    o.no_store_server = 1;
    o.timeout_ms = r->timeout_ms;
    o.chunk_bytes = r->chunk_bytes;
    o.sockbuf = r->sockbuf;
    o.ns = r->ns;
    return comm_ctx_create(out, &b, &o);
}

typedef struct { tp_rank *r; tp_body body; } tp_thread_arg;

static inline void *tp_thread_main(void *p)
{
    tp_thread_arg *a = p;
    a->body(a->r);
    return NULL;
}

/* Runs `body` on k rank threads; returns the number of ranks that reported failures (and
 * prints each one's first message). ranks[] (k entries) is filled in and kept for the caller
 * to inspect. */
static inline int tp_run(int k, tp_rank *ranks, tp_body body, void *user, int64_t timeout_ms,
                         size_t chunk_bytes, int sockbuf, const char *ns)
{
    comm_store_server *srv = NULL;
    if (comm_store_server_create(&srv, "127.0.0.1", 0) != IH_OK) {
        fprintf(stderr, "FAIL: store server: %s\n", ih_last_error());
        return k;
    }
    pthread_t th[64];
    tp_thread_arg args[64];
    IH_ASSERT(k <= 64, "at most 64 rank threads");
    for (int i = 0; i < k; i++) {
        memset(&ranks[i], 0, sizeof ranks[i]);
        ranks[i].rank = i;
        ranks[i].world = k;
        ranks[i].port = comm_store_server_port(srv);
        ranks[i].ns = ns;
        ranks[i].timeout_ms = timeout_ms;
        ranks[i].chunk_bytes = chunk_bytes;
        ranks[i].sockbuf = sockbuf;
        ranks[i].user = user;
        args[i] = (tp_thread_arg){&ranks[i], body};
        char name[16];
        snprintf(name, sizeof name, "ih-rank-%d", i);
        if (ih_thread_start(&th[i], name, tp_thread_main, &args[i]) != IH_OK) {
            fprintf(stderr, "FAIL: %s\n", ih_last_error());
            exit(1);
        }
    }
    int bad = 0;
    for (int i = 0; i < k; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < k; i++)
        if (ranks[i].fails) {
            bad++;
            fprintf(stderr, "FAIL k=%d rank %d: %s\n", k, i, ranks[i].msg);
        }
    comm_store_server_destroy(srv);
    return bad;
}

#endif
