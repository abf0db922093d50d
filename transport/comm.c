/* transport/comm.c — communicator set-up, tuning knobs and failure propagation.
 *
 * Failure protocol: the rank that sees an error first (peer closed, timeout) does
 *   1. store add "<ns>/abort" = "rank R (host H): <message>"   (first writer wins)
 *   2. close all fabric connections
 * in that order, so a rank that then sees EOF from it finds the original cause in the store
 * and names it, even when the rank that died first was not its neighbour.
 */
#define _GNU_SOURCE
#include "comm_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/env.h"
#include "core/log.h"
#include "fabric_open.h"
#include "fabric_tcp.h"

#define DEFAULT_TIMEOUT_S 300
/* 512 KiB: faster than 256 KiB for 100 MiB buffers (5 of 5 interleaved pairs at 2 ranks, median
 * +7%; 4 of 5 at 4 ranks, +3%) and a tie at 32 MiB (bench/README.md). It was held back while
 * test_allreduce_hung_rank_times_out blamed the wrong rank more often with it; the chain-of-waits
 * naming (name_stalled_root) fixed that race. IH_COMM_CHUNK_KB overrides. */
#define DEFAULT_CHUNK_KB 512
/* Socket buffers: 0 leaves them to the kernel's autotuning, which grows the receive buffer up
 * to net.ipv4.tcp_rmem's maximum (32 MiB on Debian 12) and measured faster on loopback than
 * fixing 4 or 16 MiB (bench/README.md); IH_COMM_SOCKBUF=bytes fixes them. */
#define DEFAULT_SOCKBUF 0

ih_err comm_ctx_create(comm_ctx **out, const comm_boot_info *b, const comm_opts *opts)
{
    *out = NULL;
    comm_opts o;
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    IH_TRY(comm_boot_check(b));
    IH_TRY(comm_fabric_check_name(o.fabric));
    comm_ctx *c = calloc(1, sizeof *c);
    if (!c) return ih_fail(IH_E_SYS, "out of memory for a communicator");
    ih_err e = IH_OK;
    c->boot = *b;
    snprintf(c->ns, sizeof c->ns, "%s", o.ns ? o.ns : "c");
    gethostname(c->host, sizeof c->host - 1);
    c->timeout_ms = o.timeout_ms > 0 ? o.timeout_ms
                                     : (int64_t)(ih_env_pos_double("IH_COMM_TIMEOUT_S", DEFAULT_TIMEOUT_S) * 1000);
    size_t chunk = o.chunk_bytes ? o.chunk_bytes
                                 : (size_t)ih_env_long("IH_COMM_CHUNK_KB", DEFAULT_CHUNK_KB, 4, 1 << 20) * 1024;
    c->chunk_elems = chunk / sizeof(float);
    if (c->chunk_elems < 16) c->chunk_elems = 16;
    int sockbuf = o.sockbuf ? o.sockbuf : (int)ih_env_long("IH_COMM_SOCKBUF", DEFAULT_SOCKBUF, 0, 1 << 30);
    if (sockbuf < 0) sockbuf = 0;
    for (int i = 0; i < COMM_NTMP; i++) {
        c->tmp[i] = aligned_alloc(64, (c->chunk_elems * sizeof(float) + 63) / 64 * 64);
        if (!c->tmp[i]) {
            e = ih_fail(IH_E_SYS, "out of memory for %zu B of staging buffers", COMM_NTMP * chunk);
            goto fail;
        }
    }
    if (b->world == 1) {
        IH_TRY_GOTO(comm_fabric_tcp_create(&c->fab, NULL, c->ns, 0, 1, 0, c->timeout_ms), e, fail);
        for (int i = 0; i < COMM_NTMP; i++) /* as below: the same limits for every world size */
            IH_TRY_GOTO(comm_ctx_register(c, c->tmp[i], c->chunk_elems * sizeof(float)), e, fail);
        *out = c;
        return IH_OK;
    }
    if (b->rank == 0 && !o.no_store_server)
        IH_TRY_GOTO(comm_store_server_create(&c->server, NULL, b->master_port), e, fail);
    IH_TRY_GOTO(comm_store_connect(&c->store, b->master_addr, b->master_port, c->timeout_ms), e, fail);
    IH_TRY_GOTO(comm_fabric_open(&c->fab, &o, c->store, c->ns, b->rank, b->world, sockbuf,
                                 c->timeout_ms), e, fail);
    /* The receive scratch is where reductions land: registered, peers write it directly. */
    for (int i = 0; i < COMM_NTMP; i++)
        IH_TRY_GOTO(comm_ctx_register(c, c->tmp[i], c->chunk_elems * sizeof(float)), e, fail);
    /* Every rank has read every address: after this barrier rank 0 may drop the store's
     * set-up role at any time without stranding a rank still in rendezvous. */
    IH_TRY_GOTO(comm_coll_barrier(c), e, fail);
    IH_INFO(IH_LOG_COMM, "rank %d of %d ready (chunk %zu KiB, timeout %.0f s)", b->rank, b->world,
            chunk / 1024, (double)c->timeout_ms / 1e3);
    *out = c;
    return IH_OK;
fail:
    comm_ctx_destroy(c);
    return e;
}

void comm_ctx_destroy(comm_ctx *c)
{
    if (!c) return;
    comm_fabric_destroy(c->fab);
    comm_store_destroy(c->store);
    if (c->err) /* the others may still need "<ns>/abort" to name the first failure */
        comm_store_server_linger(c->server, c->timeout_ms < 3000 ? c->timeout_ms : 3000);
    comm_store_server_destroy(c->server);
    for (int i = 0; i < COMM_NTMP; i++) free(c->tmp[i]);
    free(c);
}

ih_err comm_ctx_register(comm_ctx *c, void *buf, size_t bytes)
{
    char *b = buf;
    if (!buf || !bytes)
        return ih_fail(IH_E_USAGE, "comm_ctx_register(%p, %zu B) on rank %d: empty range", buf,
                       bytes, c->boot.rank);
    for (int i = 0; i < c->nreg; i++)
        if (b < c->reg[i].buf + c->reg[i].bytes && c->reg[i].buf < b + bytes)
            return ih_fail(IH_E_USAGE, "comm_ctx_register(%p, %zu B) on rank %d overlaps the region "
                           "registered at %p (%zu B): register each buffer once, as a whole",
                           buf, bytes, c->boot.rank, (void *)c->reg[i].buf, c->reg[i].bytes);
    if (c->nreg == COMM_MAX_REG + COMM_NTMP)
        return ih_fail(IH_E_USAGE, "comm_ctx_register(%p, %zu B) on rank %d: already %d regions "
                       "registered (COMM_MAX_REG): register one arena instead of many buffers",
                       buf, bytes, c->boot.rank, COMM_MAX_REG);
    if (c->fab && c->fab->ops->reg) IH_TRY(c->fab->ops->reg(c->fab, buf, bytes));
    c->reg[c->nreg].buf = b;
    c->reg[c->nreg].bytes = bytes;
    c->nreg++;
    return IH_OK;
}

ih_err comm_ctx_unregister(comm_ctx *c, void *buf)
{
    for (int i = 0; i < c->nreg; i++) {
        if (c->reg[i].buf != (char *)buf) continue;
        if (c->fab && c->fab->ops->dereg) c->fab->ops->dereg(c->fab, buf);
        c->reg[i] = c->reg[--c->nreg];
        return IH_OK;
    }
    return ih_fail(IH_E_USAGE, "comm_ctx_unregister(%p) on rank %d: no region registered with "
                   "comm_ctx_register starts there (%d registered)", buf, c->boot.rank, c->nreg);
}

void comm_ctx_stats(const comm_ctx *c, comm_stats *out)
{
    memset(out, 0, sizeof *out);
    if (c->fab && c->fab->ops->stats) c->fab->ops->stats(c->fab, out);
}

int comm_ctx_rank(const comm_ctx *c) { return c->boot.rank; }
int comm_ctx_world(const comm_ctx *c) { return c->boot.world; }
int64_t comm_ctx_timeout_ms(const comm_ctx *c) { return c->timeout_ms; }
size_t comm_ctx_chunk_bytes(const comm_ctx *c) { return c->chunk_elems * sizeof(float); }

/* A hung rank (alive, connections open, not calling) makes its neighbours time out, and in a
 * ring or a halving/doubling exchange the ranks waiting on THEM time out too, all within a few
 * milliseconds. Whichever publishes "<ns>/abort" first would then name its own neighbour, not
 * the hung rank. So on a timeout each rank first publishes whom it waits on
 * ("<ns>/wait/<rank>" = peer), gives the others a short window to do the same, and follows
 * the chain of waits to the rank that waits on nobody: the one that stopped. Appends that
 * finding to msg. */
static void name_stalled_root(comm_ctx *c, char *msg, size_t cap)
{
    const int me = c->boot.rank, first_peer = c->fab->stalled_peer;
    if (first_peer < 0 || first_peer >= c->boot.world) return;
    char key[160], val[96], root_host[64];
    snprintf(root_host, sizeof root_host, "%s", c->fab->stalled_host);
    snprintf(key, sizeof key, "%s/wait/%d", c->ns, me);
    snprintf(val, sizeof val, "%d %s", first_peer, root_host); /* "<peer> <peer's host>" */
    int64_t t = c->timeout_ms < 2000 ? c->timeout_ms : 2000;
    if (comm_store_set(c->store, key, val, strlen(val), t) != IH_OK) return;
    /* The other waiters time out within milliseconds of us; 300 ms covers scheduling noise. */
    struct timespec ts = {0, 300 * 1000000L};
    nanosleep(&ts, NULL);
    int p = first_peer, hops = 0;
    char chain[256];
    int o = snprintf(chain, sizeof chain, "%d -> %d", me, p);
    while (hops++ < c->boot.world) {
        size_t len = 0;
        snprintf(key, sizeof key, "%s/wait/%d", c->ns, p);
        if (comm_store_get(c->store, key, val, sizeof val - 1, &len, 0) != IH_OK) break;
        val[len < sizeof val - 1 ? len : sizeof val - 1] = 0;
        int q = atoi(val);
        if (q < 0 || q >= c->boot.world || q == me) { p = -1; break; } /* a cycle: no single root */
        p = q;
        const char *h = strchr(val, ' ');
        snprintf(root_host, sizeof root_host, "%s", h ? h + 1 : "?");
        if (o > 0 && (size_t)o < sizeof chain) o += snprintf(chain + o, sizeof chain - (size_t)o, " -> %d", p);
    }
    if (p >= 0 && p != first_peer) {
        size_t n = strlen(msg);
        snprintf(msg + n, cap - n, "; the ranks waiting in a chain (%s) all timed out: rank %d (host %s), which "
                 "waits on nobody, is the one that stopped", chain, p, root_host);
    }
}

ih_err comm_ctx_abort(comm_ctx *c, ih_err e, const char *op) { return comm_ctx_fail(c, e, op); }

ih_err comm_ctx_status(const comm_ctx *c)
{
    if (c->err) return c->err;
    return c->parent ? comm_ctx_status(c->parent) : IH_OK;
}

ih_err comm_ctx_fail(comm_ctx *c, ih_err e, const char *op)
{
    if (c->parent) { /* a view (comm_ctx_split): the parent publishes, closes and names */
        char pop[256];
        snprintf(pop, sizeof pop, "%s %s", op, c->label);
        e = comm_ctx_fail(c->parent, e, pop);
        if (!c->err) {
            c->err = e;
            snprintf(c->errmsg, sizeof c->errmsg, "%s", ih_last_error());
        }
        return ih_fail(c->err, "%s", c->errmsg);
    }
    char msg[1024], first[1400] = "";
    snprintf(msg, sizeof msg, "%s", ih_last_error());
    if (c->store && !c->err && e == IH_E_TIMEOUT) name_stalled_root(c, msg, sizeof msg);
    if (c->store && !c->err) {
        char key[128], val[1400];
        snprintf(key, sizeof key, "%s/abort", c->ns);
        snprintf(val, sizeof val, "rank %d (host %s) in %s: %s", c->boot.rank, c->host, op, msg);
        int won = 0;
        int64_t t = c->timeout_ms < 2000 ? c->timeout_ms : 2000; /* rank 0 may be gone too */
        if (comm_store_add(c->store, key, val, strlen(val), &won, t) == IH_OK && !won) {
            size_t len = 0;
            if (comm_store_get(c->store, key, first, sizeof first - 1, &len, 0) == IH_OK)
                first[len < sizeof first - 1 ? len : sizeof first - 1] = 0;
            else
                first[0] = 0;
        }
    }
    comm_fabric_abort(c->fab, e, msg);
    if (c->err) return ih_fail(c->err, "%s", c->errmsg);
    c->err = e;
    if (first[0])
        snprintf(c->errmsg, sizeof c->errmsg, "%s failed on rank %d of %d: %s [first failure in "
                 "the job: %s]", op, c->boot.rank, c->boot.world, msg, first);
    else
        snprintf(c->errmsg, sizeof c->errmsg, "%s failed on rank %d of %d: %s", op, c->boot.rank,
                 c->boot.world, msg);
    return ih_fail(e, "%s", c->errmsg);
}
