/* bench_allreduce — allreduce bandwidth of our collectives, with this machine's ceilings
 * measured in the same run.
 *
 *   bench_allreduce --nproc 4 [--bytes 100M] [--algo hd|ring|auto|hier|all] [--fabric tcp|ib|auto]
 *                   [--iters R] [--warmup W] [--chunk-kb KB] [--max-bytes SIZE] [--no-register]
 *                   [--nodes N]
 *
 * With --nproc N it starts N ranks on this machine through the local launcher; under mpirun,
 * srun or torchrun-style variables it runs as the rank they name. Without --bytes it sweeps
 * 4 KiB..256 MiB. Each (size, algorithm) is first checked once against the exact sum of
 * integer-valued floats (#wrong column), then warmed up, then timed R times; each time is the
 * slowest rank's (a barrier starts every repeat). Rank 0 prints the median and p10/p90.
 * Ceilings measured by rank 0 before the collectives (the other ranks idle in a barrier):
 * memcpy bandwidth, one TCP stream over 127.0.0.1 one way, and B = the total of both
 * directions of one connection when both run (a full-duplex rank pair), so busbw <= B/k.
 * The buffer is registered with the communicator (comm_ctx_register: zero-copy on ib, a no-op
 * on tcp) unless --no-register; with ib, rank 0 prints how many bytes went each way
 * (comm_ctx_stats: direct, staged, eager) at the end.
 * Two-level rows (algo "hier", transport/hier.h: reduce-scatter inside each node, allreduce
 * across nodes with auto, allgather): with --algo hier, and with --algo all when there are
 * several nodes of several ranks; --nodes N simulates N nodes on one machine (e.g. --nproc 4
 * --nodes 2 is 2 nodes x 2 ranks). busbw uses the same formula for them, so it compares times.
 * The last line is machine-readable: RESULT ranks=... bytes=... algo=... busbw_GBps=...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "transport/boot.h"
#include "transport/comm.h"
#include "transport/hier.h"
#include "transport/launch.h"
#include "transport/sock.h"
#include "ih_config.h"
#if IH_WITH_IBVERBS
#include "transport/fabric_ib.h"
#endif

extern char **environ;

typedef struct {
    int nproc;
    size_t bytes;     /* 0 = sweep */
    size_t max_bytes; /* sweep limit */
    const char *algo; /* hd ring auto all */
    const char *fabric;
    int iters, warmup;
    int chunk_kb;
    int no_register;
    int nodes;        /* --nodes N: simulate N nodes (rank r on node r / ceil(k/N)); 0: host names */
} opts;

static int parse_size(const char *s, size_t *out)
{
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || v < 0) return -1;
    double m = 1;
    if (*end == 'k' || *end == 'K') m = 1024, end++;
    else if (*end == 'm' || *end == 'M') m = 1024.0 * 1024, end++;
    else if (*end == 'g' || *end == 'G') m = 1024.0 * 1024 * 1024, end++;
    if (*end == 'i' || *end == 'I') end++;
    if (*end == 'b' || *end == 'B') end++;
    if (*end) return -1;
    *out = (size_t)(v * m);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_allreduce --nproc N [--bytes SIZE (e.g. 100M; default: sweep 4K..256M)]\n"
               "         [--algo hd|ring|auto|hier|all (default all)] [--fabric tcp|ib|auto] [--iters R] [--warmup W]\n"
               "         [--chunk-kb KB] [--max-bytes SIZE (sweep limit)] [--no-register (ib: copy path)]\n"
               "         [--nodes N (simulate N nodes for the two-level rows: --algo hier, or all)]\n");
}

/* ---- ceilings (rank 0, before the collectives) ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double memcpy_gbps(void)
{
    size_t sz = 64u << 20;
    char *a = malloc(sz), *b = malloc(sz);
    if (!a || !b) { free(a); free(b); return 0; }
    memset(a, 1, sz);
    memset(b, 2, sz);
    double t[7];
    for (int i = 0; i < 7; i++) {
        double t0 = ih_now_s();
        memcpy(b, a, sz);
        t[i] = ih_now_s() - t0;
        a[i] = b[sz - 1 - (size_t)i]; /* keep the copies observable */
    }
    qsort(t, 7, sizeof t[0], cmp_double);
    free(a);
    free(b);
    return (double)sz / t[3] / 1e9;
}

typedef struct { int fd; size_t send, recv; char *buf; size_t bufsz; } stream_end;

/* Full-duplex pump of one connection end with poll(), like a rank of the tcp fabric. */
static void *pump(void *p)
{
    stream_end *e = p;
    size_t sent = 0, got = 0;
    char *rbuf = e->buf + e->bufsz / 2;
    size_t half = e->bufsz / 2;
    while (sent < e->send || got < e->recv) {
        struct pollfd pf = {.fd = e->fd, .events = (short)((sent < e->send ? POLLOUT : 0) | (got < e->recv ? POLLIN : 0))};
        poll(&pf, 1, 1000);
        if (sent < e->send) {
            size_t n = e->send - sent < half ? e->send - sent : half;
            ssize_t w = send(e->fd, e->buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0) sent += (size_t)w;
        }
        if (got < e->recv) {
            size_t n = e->recv - got < half ? e->recv - got : half;
            ssize_t r = recv(e->fd, rbuf, n, MSG_DONTWAIT);
            if (r > 0) got += (size_t)r;
            if (r == 0) break;
        }
    }
    return NULL;
}

/* One connection over 127.0.0.1 with the fabric's socket options; returns GB/s moved in
 * total: one way (duplex=0) or both ways at once (duplex=1). */
static double tcp_gbps(int duplex, int sockbuf)
{
    int lfd = -1, a = -1, b = -1, port = 0;
    double gbps = 0;
    if (comm_sock_listen(&lfd, "127.0.0.1", 0, 1, sockbuf, &port)) return 0;
    if (comm_sock_connect(&a, "127.0.0.1", port, sockbuf, ih_now_ns() + 5000000000ull, "self") ||
        comm_sock_accept(lfd, &b, ih_now_ns() + 5000000000ull, "self"))
        goto out;
    comm_sock_tune(a, 0);
    comm_sock_tune(b, 0);
    size_t total = 2u << 30, bufsz = 8u << 20;
    stream_end ea = {a, total, duplex ? total : 0, malloc(bufsz), bufsz};
    stream_end eb = {b, duplex ? total : 0, total, malloc(bufsz), bufsz};
    if (!ea.buf || !eb.buf) { free(ea.buf); free(eb.buf); goto out; }
    memset(ea.buf, 1, bufsz);
    memset(eb.buf, 2, bufsz);
    pthread_t th;
    double t0 = ih_now_s();
    pthread_create(&th, NULL, pump, &eb);
    pump(&ea);
    pthread_join(th, NULL);
    double t = ih_now_s() - t0;
    gbps = (double)total * (duplex ? 2 : 1) / t / 1e9;
    free(ea.buf);
    free(eb.buf);
out:
    if (a >= 0) close(a);
    if (b >= 0) close(b);
    close(lfd);
    return gbps;
}

/* ---- the benchmark proper ---- */

static float value(int rank, size_t i) { return (float)((int)((rank * 7u + i * 13u) % 17u) - 8); }

/* One allreduce of a table row: flat with `al`, or two-level (auto across nodes) when h. */
static ih_err row_allreduce(comm_ctx *c, comm_hier *h, float *buf, size_t n, comm_algo al)
{
    return h ? comm_hier_allreduce(h, buf, n, COMM_ALGO_AUTO) : comm_coll_allreduce(c, buf, n, al);
}

static int run_rank(const opts *o, const comm_boot_info *b)
{
    ih_log_set_rank(b->rank);
    int k = b->world, r = b->rank;
    comm_opts co;
    memset(&co, 0, sizeof co);
    co.fabric = o->fabric;
    co.chunk_bytes = o->chunk_kb > 0 ? (size_t)o->chunk_kb * 1024 : 0;
    comm_ctx *c = NULL;
    comm_hier *h = NULL;
    if (comm_ctx_create(&c, b, &co)) {
        fprintf(stderr, "bench_allreduce: rank %d: %s\n", r, ih_last_error());
        return 1;
    }
    double memcpy_bw = 0, tcp1 = 0, tcp2 = 0, rdma_bw = 0;
    int sockbuf = getenv("IH_COMM_SOCKBUF") ? atoi(getenv("IH_COMM_SOCKBUF")) : 0; /* as comm.c */
    if (r == 0) {
        memcpy_bw = memcpy_gbps();
        tcp1 = tcp_gbps(0, sockbuf > 0 ? sockbuf : 0);
        tcp2 = tcp_gbps(1, sockbuf > 0 ? sockbuf : 0);
#if IH_WITH_IBVERBS
        /* --fabric ib: the fabric's own ceiling, one RC connection writing to itself */
        if (!strcmp(o->fabric, "ib") && comm_fabric_ib_write_bw(b->master_addr, 16u << 20, 16, &rdma_bw))
            fprintf(stderr, "bench_allreduce: raw RDMA write ceiling: %s\n", ih_last_error());
#endif
    }
    if (comm_coll_barrier(c)) goto fail;

    size_t sweep[] = {4u << 10, 16u << 10, 64u << 10, 256u << 10, 1u << 20, 4u << 20, 16u << 20,
                      32u << 20, 64u << 20, 100u << 20, 256u << 20};
    size_t nsizes = sizeof sweep / sizeof sweep[0];
    if (o->bytes) { sweep[0] = o->bytes; nsizes = 1; }
    while (!o->bytes && o->max_bytes && nsizes > 1 && sweep[nsizes - 1] > o->max_bytes) nsizes--;
    size_t maxb = 0;
    for (size_t i = 0; i < nsizes; i++) maxb = sweep[i] > maxb ? sweep[i] : maxb;
    float *buf = malloc(maxb + 64);
    int maxit = 64;
    float *times = calloc((size_t)k * (size_t)maxit, sizeof(float));
    if (!buf || !times) { fprintf(stderr, "bench_allreduce: out of memory\n"); return 1; }
    if (!o->no_register && comm_ctx_register(c, buf, maxb + 64)) goto fail;
    comm_algo algos[3];
    int nalgo = 0, hrow[3] = {0, 0, 0};
    const int only_hier = !strcmp(o->algo, "hier");
    if (!strcmp(o->algo, "all")) { algos[0] = COMM_ALGO_HD; algos[1] = COMM_ALGO_RING; nalgo = 2; }
    else if (!only_hier && comm_algo_parse(o->algo, &algos[0])) { fprintf(stderr, "%s\n", ih_last_error()); return 2; }
    else nalgo = only_hier ? 0 : 1;
    /* The two-level row: with --algo hier, and with all where the layout has several nodes of
     * several ranks (hier.h; --nodes simulates nodes on one machine). */
    char node[32];
    snprintf(node, sizeof node, "sim%d", o->nodes > 0 ? r / ((k + o->nodes - 1) / o->nodes) : 0);
    if ((only_hier || !strcmp(o->algo, "all")) &&
        comm_hier_open(&h, c, only_hier ? COMM_HIER_ON : COMM_HIER_AUTO, o->nodes > 0 ? node : NULL))
        goto fail;
    if (h) {
        algos[nalgo] = COMM_ALGO_AUTO;
        hrow[nalgo++] = 1;
    }

    ih_print0("# bench_allreduce: %d ranks, fabric %s, chunk %zu KiB, timing = slowest rank, median of R\n",
              k, o->fabric, comm_ctx_chunk_bytes(c) / 1024);
    ih_print0("# ceilings measured now: memcpy %.2f GB/s; one TCP stream on 127.0.0.1 %.2f GB/s one way; "
              "B = both directions of one connection at once %.2f GB/s total, so busbw <= B/k = %.2f GB/s\n",
              memcpy_bw, tcp1, tcp2, tcp2 / k);
    if (rdma_bw > 0)
        ih_print0("# raw RDMA WRITE ceiling measured now (one RC connection at %s to itself, both ends "
                  "writing 16 MiB at once, 4 in flight each): W = %.3f GB/s total; the busbw/B*k column "
                  "uses B = W for --fabric ib\n",
                  b->master_addr, rdma_bw);
    double ceil_b = rdma_bw > 0 ? rdma_bw : tcp2;
    ih_print0("# algbw = S/t; busbw = algbw * 2(k-1)/k (nccl-tests); GB = 1e9 B\n");
    ih_print0("# %11s %5s %4s %11s %11s %11s %11s %11s %9s %6s\n", "size(B)", "algo", "R", "time(us)",
              "p10(us)", "p90(us)", "algbw(GB/s)", "busbw(GB/s)", "busbw/B*k", "#wrong");
    double last_busbw = 0;
    const char *last_algo = "";
    size_t last_bytes = 0;
    for (size_t si = 0; si < nsizes; si++) {
        size_t bytes = sweep[si] / sizeof(float) * sizeof(float), n = bytes / sizeof(float);
        for (int ai = 0; ai < nalgo; ai++) {
            comm_algo al = algos[ai];
            comm_hier *rh = hrow[ai] ? h : NULL;
            const char *name = rh ? "hier" : comm_algo_name(al == COMM_ALGO_AUTO ? comm_coll_auto_algo(c, bytes) : al);
            /* verify */
            for (size_t i = 0; i < n; i++) buf[i] = value(r, i);
            if (row_allreduce(c, rh, buf, n, al)) goto fail;
            float wrong = 0;
            for (size_t i = 0; i < n; i++) {
                float s = 0;
                for (int q = 0; q < k; q++) s += value(q, i);
                if (buf[i] != s) wrong++;
            }
            if (comm_coll_allreduce(c, &wrong, 1, COMM_ALGO_RING)) goto fail;
            int R = o->iters > 0 ? o->iters : (int)((1u << 30) / (bytes + 1));
            if (R < 5) R = 5;
            if (R > maxit) R = maxit;
            int W = o->warmup >= 0 ? o->warmup : (bytes >= (64u << 20) ? 1 : 3);
            for (int w = 0; w < W; w++)
                if (row_allreduce(c, rh, buf, n, al)) goto fail;
            memset(times, 0, (size_t)k * (size_t)R * sizeof(float));
            for (int it = 0; it < R; it++) {
                if (comm_coll_barrier(c)) goto fail;
                double t0 = ih_now_s();
                if (row_allreduce(c, rh, buf, n, al)) goto fail;
                times[(size_t)r * (size_t)R + (size_t)it] = (float)(ih_now_s() - t0);
            }
            /* gather every rank's times: a sum where each rank contributes only its own row */
            if (comm_coll_allreduce(c, times, (size_t)k * (size_t)R, COMM_ALGO_RING)) goto fail;
            double t[64];
            for (int it = 0; it < R; it++) {
                t[it] = 0;
                for (int q = 0; q < k; q++)
                    if (times[(size_t)q * (size_t)R + (size_t)it] > t[it]) t[it] = times[(size_t)q * (size_t)R + (size_t)it];
            }
            qsort(t, (size_t)R, sizeof t[0], cmp_double);
            double med = t[R / 2], p10 = t[R / 10], p90 = t[(R * 9) / 10 < R ? (R * 9) / 10 : R - 1];
            double algbw = (double)bytes / med / 1e9, busbw = algbw * 2.0 * (k - 1) / k;
            ih_print0("  %11zu %5s %4d %11.1f %11.1f %11.1f %11.3f %11.3f %9.2f %6.0f\n", bytes,
                      name, R,
                      med * 1e6, p10 * 1e6, p90 * 1e6, algbw, busbw, ceil_b > 0 ? busbw / (ceil_b / k) : 0, (double)wrong);
            if (wrong != 0) {
                fprintf(stderr, "bench_allreduce: %s at %zu B gave %.0f wrong elements\n", name, bytes, (double)wrong);
                comm_hier_destroy(h);
                comm_ctx_destroy(c);
                return 1;
            }
            last_busbw = busbw;
            last_algo = name;
            last_bytes = bytes;
        }
    }
    comm_stats cs;
    comm_ctx_stats(c, &cs);
    if (cs.threshold)
        ih_print0("# bytes sent by rank 0, by path (messages from %zu B wait for the receiver's reply; "
                  "buffer %s): direct (zero copy) %llu, staged (one copy) %llu, eager large (receiver "
                  "not registered) %llu, eager small %llu; received direct %llu, copied out %llu\n",
                  cs.threshold, o->no_register ? "not registered" : "registered",
                  (unsigned long long)cs.direct, (unsigned long long)cs.staged,
                  (unsigned long long)cs.eager_large, (unsigned long long)cs.eager_small,
                  (unsigned long long)cs.rx_direct, (unsigned long long)cs.rx_copied);
    ih_print0("RESULT ranks=%d bytes=%zu algo=%s busbw_GBps=%.3f memcpy_GBps=%.2f tcp_stream_GBps=%.2f "
              "tcp_duplex_GBps=%.2f rdma_write_GBps=%.3f\n", k, last_bytes, last_algo, last_busbw,
              memcpy_bw, tcp1, tcp2, rdma_bw);
    if (!o->no_register) comm_ctx_unregister(c, buf);
    free(buf);
    free(times);
    comm_hier_destroy(h);
    comm_ctx_destroy(c);
    return 0;
fail:
    fprintf(stderr, "bench_allreduce: rank %d: %s\n", r, ih_last_error());
    comm_hier_destroy(h);
    comm_ctx_destroy(c);
    return 1;
}

int main(int argc, char **argv)
{
    opts o = {.nproc = 0, .bytes = 0, .max_bytes = 0, .algo = "all", .fabric = "tcp", .iters = 0, .warmup = -1, .chunk_kb = 0};
    static const struct option lo[] = {
        {"nproc", required_argument, 0, 'n'}, {"bytes", required_argument, 0, 'b'},
        {"algo", required_argument, 0, 'a'},  {"fabric", required_argument, 0, 'f'},
        {"iters", required_argument, 0, 'i'}, {"warmup", required_argument, 0, 'w'},
        {"chunk-kb", required_argument, 0, 'c'}, {"max-bytes", required_argument, 0, 'm'},
        {"no-register", no_argument, 0, 'R'}, {"nodes", required_argument, 0, 'N'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "n:b:a:f:i:w:c:m:h", lo, NULL)) != -1) {
        switch (ch) {
        case 'n': o.nproc = atoi(optarg); break;
        case 'b':
            if (parse_size(optarg, &o.bytes) || o.bytes < sizeof(float)) {
                fprintf(stderr, "bench_allreduce: bad --bytes '%s' (e.g. 4K, 32M, 100M)\n", optarg);
                return 2;
            }
            break;
        case 'a': o.algo = optarg; break;
        case 'f': o.fabric = optarg; break;
        case 'i': o.iters = atoi(optarg); break;
        case 'w': o.warmup = atoi(optarg); break;
        case 'c': o.chunk_kb = atoi(optarg); break;
        case 'm':
            if (parse_size(optarg, &o.max_bytes)) {
                fprintf(stderr, "bench_allreduce: bad --max-bytes '%s'\n", optarg);
                return 2;
            }
            break;
        case 'R': o.no_register = 1; break;
        case 'N': o.nodes = atoi(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    comm_algo tmp;
    if (strcmp(o.algo, "all") && strcmp(o.algo, "hier") && comm_algo_parse(o.algo, &tmp)) {
        fprintf(stderr, "bench_allreduce: %s\n", ih_last_error());
        return 2;
    }
    comm_boot_info b;
    if (comm_boot_from_env(&b, (const char *const *)environ)) {
        fprintf(stderr, "bench_allreduce: %s\n", ih_last_error());
        return 2;
    }
    if (b.world == 1 && o.nproc > 1) {
        comm_launch_opts lopt; /* --fabric ib needs the store on an RDMA netdev: MASTER_ADDR */
        memset(&lopt, 0, sizeof lopt);
        lopt.master_addr = getenv("MASTER_ADDR");
        return comm_launch_local(o.nproc, argv, &lopt, NULL);
    }
    return run_rank(&o, &b);
}
