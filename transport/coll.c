/* transport/coll.c — allreduce (recursive halving/doubling, ring), broadcast, barrier.
 *
 * The algorithms only post sends/receives on the fabric interface and never see sockets.
 * Data is cut into pipelining chunks of c->chunk_elems floats. Received chunks that must be
 * reduced land in one of COMM_NTMP staging buffers; up to COMM_NTMP receives are posted ahead,
 * so while this thread reduces chunk j the kernel (tcp) or the NIC (ib) is already filling
 * chunk j+1, and the staging chunk is still in cache when it is reduced. Nothing is allocated
 * per call: requests live in the ctx (sends) or on the stack (receives).
 *
 * Ring (k ranks, rank r, segments s = 0..k-1 of the buffer): 2(k-1) steps; in step t rank r
 * receives segment (r-t-1) mod k from the left; steps t < k-1 reduce it (reduce-scatter),
 * later steps copy it (allgather). Every received chunk is forwarded to the right as soon as
 * it is ready, so the steps overlap into one stream and there is no step barrier.
 * Sends 2(k-1)/k * S per rank: bandwidth-optimal, 2(k-1) latencies.
 *
 * Halving/doubling (Rabenseifner; Thakur, Rabenseifner & Gropp 2005; gloo's
 * allreduce_halving_doubling): reduce-scatter by recursive halving (exchange half the current
 * window with rank ^ mask, mask = p/2..1), then allgather by recursive doubling in the reverse
 * order. Bandwidth-optimal like the ring with 2 log2(p) latencies instead of 2(k-1), which
 * is why it wins for small buffers at larger k.
 * Non-powers of two: the standard fold-in. With p = 2^floor(log2 k) and rem = k - p, each
 * even rank below 2*rem sends its whole buffer to the next odd rank, which reduces it and
 * takes part in the power-of-two algorithm; at the end it sends the result back. This costs
 * 2 extra latencies and 2*S bytes on the folded pairs. We chose it over the "binary blocks"
 * method because auto uses hd only for small buffers, where the cost is latency: fold-in adds
 * 2 message latencies, binary blocks adds its own steps for the block merge (and an
 * imbalance between blocks of different sizes), for markedly more code. For large buffers at
 * k that is not a power of two auto picks the ring, which has no such penalty (bench/README.md
 * has the measurements).
 */
#include <stdio.h>
#include <string.h>

#include "comm_impl.h"
#include "core/log.h"
#include "reduce.h"

/* ---- send ring: at most COMM_NSEND sends in flight; the oldest is waited for first ---- */

static ih_err send_post(comm_ctx *c, int peer, const void *buf, size_t bytes)
{
    comm_req *r = &c->sreq[c->nsend_posted % COMM_NSEND];
    if (c->nsend_posted >= COMM_NSEND) IH_TRY(comm_fabric_wait(c->fab, r, c->timeout_ms));
    IH_TRY(comm_fabric_post_send(c->fab, peer, buf, bytes, r));
    c->nsend_posted++;
    return IH_OK;
}

static ih_err send_drain(comm_ctx *c)
{
    unsigned first = c->nsend_posted > COMM_NSEND ? c->nsend_posted - COMM_NSEND : 0;
    for (unsigned i = first; i < c->nsend_posted; i++)
        IH_TRY(comm_fabric_wait(c->fab, &c->sreq[i % COMM_NSEND], c->timeout_ms));
    c->nsend_posted = 0;
    return IH_OK;
}

/* Elements [off(b), off(b+1)) form block b of m over n elements. */
static size_t blk_off(size_t n, size_t m, size_t b) { return b * (n / m) + (b < n % m ? b : n % m); }

static size_t nchunks(const comm_ctx *c, size_t len) { return (len + c->chunk_elems - 1) / c->chunk_elems; }

/* Sends sbuf[0..sn) to `peer` while receiving rn floats from it into staging chunks and adding
 * them into rdst. Either count may be 0. sbuf and rdst must not overlap. */
static ih_err xchg_reduce(comm_ctx *c, int peer, const float *sbuf, size_t sn, float *rdst, size_t rn)
{
    comm_req rq[COMM_NTMP];
    size_t ce = c->chunk_elems, nch = nchunks(c, rn), posted = 0;
    if (sn) IH_TRY(send_post(c, peer, sbuf, sn * sizeof(float)));
    for (; posted < nch && posted < COMM_NTMP; posted++) {
        size_t len = rn - posted * ce < ce ? rn - posted * ce : ce;
        IH_TRY(comm_fabric_post_recv(c->fab, peer, c->tmp[posted % COMM_NTMP], len * sizeof(float), &rq[posted % COMM_NTMP]));
    }
    for (size_t j = 0; j < nch; j++) {
        size_t len = rn - j * ce < ce ? rn - j * ce : ce;
        IH_TRY(comm_fabric_wait(c->fab, &rq[j % COMM_NTMP], c->timeout_ms));
        comm_reduce_sum_f32(rdst + j * ce, c->tmp[j % COMM_NTMP], len);
        if (posted < nch) {
            size_t pl = rn - posted * ce < ce ? rn - posted * ce : ce;
            IH_TRY(comm_fabric_post_recv(c->fab, peer, c->tmp[posted % COMM_NTMP], pl * sizeof(float),
                                         &rq[posted % COMM_NTMP]));
            posted++;
        }
    }
    return IH_OK;
}

/* Sends sbuf[0..sn) to `peer` while receiving rn floats from it straight into rdst. */
static ih_err xchg_copy(comm_ctx *c, int peer, const float *sbuf, size_t sn, float *rdst, size_t rn)
{
    comm_req rq;
    if (sn) IH_TRY(send_post(c, peer, sbuf, sn * sizeof(float)));
    IH_TRY(comm_fabric_post_recv(c->fab, peer, rdst, rn * sizeof(float), &rq));
    return comm_fabric_wait(c->fab, &rq, c->timeout_ms);
}

/* ---- recursive halving / doubling ---- */

static ih_err allreduce_hd(comm_ctx *c, float *buf, size_t n)
{
    int k = c->boot.world, r = c->boot.rank;
    int p = 1;
    while (p * 2 <= k) p *= 2;
    int rem = k - p, nr;
    if (r < 2 * rem) {
        if (r % 2 == 0) {
            IH_TRY(xchg_reduce(c, r + 1, buf, n, NULL, 0));
            nr = -1;
        } else {
            IH_TRY(xchg_reduce(c, r - 1, NULL, 0, buf, n));
            nr = r / 2;
        }
    } else {
        nr = r - rem;
    }
#define REAL(x) ((x) < rem ? 2 * (x) + 1 : (x) + rem)
    if (nr >= 0) {
        /* reduce-scatter: the window [lo, hi) of blocks halves each step; nr ends with block nr */
        size_t lo = 0, hi = (size_t)p;
        for (int mask = p / 2; mask >= 1; mask /= 2) {
            int peer = REAL(nr ^ mask);
            size_t mid = lo + (hi - lo) / 2;
            size_t klo = (nr & mask) ? mid : lo, khi = (nr & mask) ? hi : mid; /* keep */
            size_t slo = (nr & mask) ? lo : mid, shi = (nr & mask) ? mid : hi; /* send */
            size_t so = blk_off(n, (size_t)p, slo), ko = blk_off(n, (size_t)p, klo);
            IH_TRY(xchg_reduce(c, peer, buf + so, blk_off(n, (size_t)p, shi) - so, buf + ko,
                               blk_off(n, (size_t)p, khi) - ko));
            lo = klo;
            hi = khi;
        }
        /* allgather: the window doubles each step, in the reverse order of the halving */
        for (int mask = 1; mask < p; mask *= 2) {
            int peer = REAL(nr ^ mask);
            size_t mlo = (size_t)(nr & ~(mask - 1)), plo = mlo ^ (size_t)mask;
            size_t mo = blk_off(n, (size_t)p, mlo), po = blk_off(n, (size_t)p, plo);
            IH_TRY(xchg_copy(c, peer, buf + mo, blk_off(n, (size_t)p, mlo + (size_t)mask) - mo,
                             buf + po, blk_off(n, (size_t)p, plo + (size_t)mask) - po));
        }
    }
#undef REAL
    if (r < 2 * rem) {
        if (r % 2 == 0) IH_TRY(xchg_copy(c, r + 1, NULL, 0, buf, n));
        else IH_TRY(send_post(c, r - 1, buf, n * sizeof(float)));
    }
    return send_drain(c);
}

/* ---- ring ---- */

/* Posts a send only if the next slot of the send ring is free; never blocks. */
static ih_err send_try_post(comm_ctx *c, int peer, const void *buf, size_t bytes, int *posted)
{
    comm_req *r = &c->sreq[c->nsend_posted % COMM_NSEND];
    *posted = 0;
    if (c->nsend_posted >= COMM_NSEND && r->done < r->len) return IH_OK;
    IH_TRY(comm_fabric_post_send(c->fab, peer, buf, bytes, r));
    c->nsend_posted++;
    *posted = 1;
    return IH_OK;
}

/* An item is chunk j of the segment received in step t; cursors walk items in order. */
typedef struct { int t; size_t j; } ring_cur;

/* Moves `cur` onto the next existing item (segments may have no chunks); returns 0 past the
 * end. Writes the item's place in buf. With rotation `rot` (0 or -1) the segment received in
 * step t is (r - t - 1 + rot) mod k. */
static int ring_item(const comm_ctx *c, size_t n, ring_cur *cur, int nsteps, int rot, size_t *off, size_t *len)
{
    int k = c->boot.world, r = c->boot.rank;
    size_t ce = c->chunk_elems, K = (size_t)k;
    for (; cur->t < nsteps; cur->t++, cur->j = 0) {
        size_t s = (size_t)((r - cur->t - 1 + rot + 2 * k) % k), so = blk_off(n, K, s);
        size_t sl = blk_off(n, K, s + 1) - so;
        if (cur->j < nchunks(c, sl)) {
            *off = so + cur->j * ce;
            *len = sl - cur->j * ce < ce ? sl - cur->j * ce : ce;
            return 1;
        }
    }
    return 0;
}

/* Steps [t0, t1) of the ring. The allreduce is steps [0, 2(k-1)) with rot 0. With rot -1 the
 * segments shift by one so that rank r ends the reduce-scatter half (steps [0, k-1)) owning
 * segment r, and the allgather half (steps [k-1, 2(k-1))) starts from segment r. */
static ih_err ring_steps(comm_ctx *c, float *buf, size_t n, int t0, int t1, int rot)
{
    int k = c->boot.world, r = c->boot.rank;
    int right = (r + 1) % k, left = (r + k - 1) % k, nsteps = t1;
    size_t K = (size_t)k;
    comm_req rq[COMM_NTMP];
    /* step t0 sends, whole, the segment this rank holds: its own (t0 = 0) or its reduced one */
    size_t s0 = (size_t)((r - t0 + rot + 2 * k) % k), o = blk_off(n, K, s0);
    IH_TRY(send_post(c, right, buf + o, (blk_off(n, K, s0 + 1) - o) * sizeof(float)));

    /* Three cursors over the items: `post` runs up to COMM_NTMP receives ahead of `cons`;
     * `fwd` follows `cons`, forwarding each consumed item to the right when a send slot is
     * free. Forwarding must never block here: a rank blocked on a send while it no longer
     * posts receives deadlocks with a neighbour doing the same. */
    ring_cur post = {t0, 0}, cons = {t0, 0}, fwd = {t0, 0};
    size_t npost = 0, ncons = 0, nfwd = 0, off = 0, len = 0; /* set by ring_item */
    for (;;) {
        while (npost - ncons < COMM_NTMP && ring_item(c, n, &post, nsteps, rot, &off, &len)) {
            void *dst = post.t < k - 1 ? (void *)c->tmp[npost % COMM_NTMP] : (void *)(buf + off);
            IH_TRY(comm_fabric_post_recv(c->fab, left, dst, len * sizeof(float), &rq[npost % COMM_NTMP]));
            npost++;
            post.j++;
        }
        while (nfwd < ncons && ring_item(c, n, &fwd, nsteps - 1, rot, &off, &len)) {
            int ok = 0;
            IH_TRY(send_try_post(c, right, buf + off, len * sizeof(float), &ok));
            if (!ok) break;
            nfwd++;
            fwd.j++;
        }
        if (ncons == npost) break;
        ring_item(c, n, &cons, nsteps, rot, &off, &len);
        IH_TRY(comm_fabric_wait(c->fab, &rq[ncons % COMM_NTMP], c->timeout_ms));
        if (cons.t < k - 1) comm_reduce_sum_f32(buf + off, c->tmp[ncons % COMM_NTMP], len);
        ncons++;
        cons.j++;
    }
    /* every receive is done: what is left to forward can wait for slots */
    while (ring_item(c, n, &fwd, nsteps - 1, rot, &off, &len)) {
        IH_TRY(send_post(c, right, buf + off, len * sizeof(float)));
        fwd.j++;
    }
    return send_drain(c);
}

static ih_err allreduce_ring(comm_ctx *c, float *buf, size_t n)
{
    return ring_steps(c, buf, n, 0, 2 * (c->boot.world - 1), 0);
}

/* ---- public ---- */

const char *comm_algo_name(comm_algo a)
{
    return a == COMM_ALGO_HD ? "hd" : a == COMM_ALGO_RING ? "ring" : "auto";
}

ih_err comm_algo_parse(const char *s, comm_algo *out)
{
    if (!strcmp(s, "auto")) *out = COMM_ALGO_AUTO;
    else if (!strcmp(s, "hd")) *out = COMM_ALGO_HD;
    else if (!strcmp(s, "ring")) *out = COMM_ALGO_RING;
    else return ih_fail(IH_E_USAGE, "unknown allreduce algorithm '%s' (use auto, hd or ring)", s);
    return IH_OK;
}

comm_algo comm_coll_auto_algo(const comm_ctx *c, size_t bytes)
{
    int k = c->boot.world;
    int pow2 = (k & (k - 1)) == 0;
    /* Measured with bench_allreduce (bench/README.md): hd's 2 log2(p) latencies beat the
     * ring's 2(k-1) from 4 KiB up to ~1 MiB at k = 8 and to ~256-512 KiB at k = 3 and 6 (the
     * fold-in adds 2 full-buffer transfers); above, the ring's stream with no step barrier is
     * as fast or faster. At k = 2 both are one exchange, and the ring pipelines its two halves. */
    if (k <= 2) return COMM_ALGO_RING;
    return bytes <= (pow2 ? ((size_t)1 << 20) : ((size_t)512 << 10)) ? COMM_ALGO_HD : COMM_ALGO_RING;
}

ih_err comm_coll_allreduce(comm_ctx *c, float *buf, size_t n, comm_algo algo)
{
    if (c->err) return ih_fail(c->err, "%s", c->errmsg);
    if (c->boot.world == 1 || n == 0) return IH_OK;
    if (algo == COMM_ALGO_AUTO) algo = comm_coll_auto_algo(c, n * sizeof(float));
    ih_err e = algo == COMM_ALGO_HD ? allreduce_hd(c, buf, n) : allreduce_ring(c, buf, n);
    if (e) {
        char op[96];
        snprintf(op, sizeof op, "allreduce(%s, %zu B)", comm_algo_name(algo), n * sizeof(float));
        return comm_ctx_fail(c, e, op);
    }
    return IH_OK;
}

void comm_coll_block(size_t n, int k, int b, size_t *off, size_t *len)
{
    *off = blk_off(n, (size_t)k, (size_t)b);
    *len = blk_off(n, (size_t)k, (size_t)b + 1) - *off;
}

/* The two halves of the ring allreduce on their own (ring_steps with rot -1). */
static ih_err ring_half(comm_ctx *c, float *buf, size_t n, int second, const char *what)
{
    if (c->err) return ih_fail(c->err, "%s", c->errmsg);
    int k = c->boot.world;
    if (k == 1 || n == 0) return IH_OK;
    ih_err e = second ? ring_steps(c, buf, n, k - 1, 2 * (k - 1), -1) : ring_steps(c, buf, n, 0, k - 1, -1);
    if (e) {
        char op[96];
        snprintf(op, sizeof op, "%s(ring, %zu B)", what, n * sizeof(float));
        return comm_ctx_fail(c, e, op);
    }
    return IH_OK;
}

ih_err comm_coll_reduce_scatter(comm_ctx *c, float *buf, size_t n)
{
    return ring_half(c, buf, n, 0, "reduce_scatter");
}

ih_err comm_coll_allgather(comm_ctx *c, float *buf, size_t n)
{
    return ring_half(c, buf, n, 1, "allgather");
}

static ih_err broadcast_tree(comm_ctx *c, char *buf, size_t bytes, int root)
{
    int k = c->boot.world, vr = (c->boot.rank - root + k) % k;
    size_t cb = c->chunk_elems * sizeof(float), nch = (bytes + cb - 1) / cb;
    int low = 1; /* lowest set bit of vr; for the root, past the largest child */
    if (vr == 0) while (low < k) low *= 2;
    else while (!(vr & low)) low *= 2;
    int parent = (vr - low + root + k) % k;
    comm_req rq[COMM_NTMP];
    size_t posted = 0;
    for (size_t j = 0; j < nch; j++) {
        size_t len = bytes - j * cb < cb ? bytes - j * cb : cb;
        if (vr) {
            for (; posted < nch && posted < j + COMM_NTMP; posted++) {
                size_t pl = bytes - posted * cb < cb ? bytes - posted * cb : cb;
                IH_TRY(comm_fabric_post_recv(c->fab, parent, buf + posted * cb, pl, &rq[posted % COMM_NTMP]));
            }
            IH_TRY(comm_fabric_wait(c->fab, &rq[j % COMM_NTMP], c->timeout_ms));
        }
        for (int m = low / 2; m >= 1; m /= 2) /* farthest child first: it has the deepest subtree */
            if (vr + m < k) IH_TRY(send_post(c, (vr + m + root) % k, buf + j * cb, len));
    }
    return send_drain(c);
}

ih_err comm_coll_broadcast(comm_ctx *c, void *buf, size_t bytes, int root)
{
    if (c->err) return ih_fail(c->err, "%s", c->errmsg);
    IH_ASSERT(root >= 0 && root < c->boot.world, "broadcast root %d of %d", root, c->boot.world);
    if (c->boot.world == 1 || bytes == 0) return IH_OK;
    ih_err e = broadcast_tree(c, buf, bytes, root);
    if (e) {
        char op[96];
        snprintf(op, sizeof op, "broadcast(%zu B from rank %d)", bytes, root);
        return comm_ctx_fail(c, e, op);
    }
    return IH_OK;
}

static ih_err barrier_dissemination(comm_ctx *c)
{
    int k = c->boot.world, r = c->boot.rank;
    char tok = 1, got = 0;
    for (int d = 1; d < k; d *= 2) {
        comm_req rq;
        IH_TRY(send_post(c, (r + d) % k, &tok, 1));
        IH_TRY(comm_fabric_post_recv(c->fab, (r - d + k) % k, &got, 1, &rq));
        IH_TRY(comm_fabric_wait(c->fab, &rq, c->timeout_ms));
    }
    return send_drain(c);
}

ih_err comm_coll_barrier(comm_ctx *c)
{
    if (c->err) return ih_fail(c->err, "%s", c->errmsg);
    if (c->boot.world == 1) return IH_OK;
    ih_err e = barrier_dissemination(c);
    if (e) return comm_ctx_fail(c, e, "barrier");
    return IH_OK;
}
