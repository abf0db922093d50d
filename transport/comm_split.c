/* transport/comm_split.c — sub-communicators as views of their parent (comm_ctx_split).
 *
 * A child needs no connections of its own: the parent's fabric already connects every pair
 * of ranks, and for each (peer, direction) it delivers requests in the order they were posted.
 * The child's fabric is a view that maps child ranks to parent ranks and posts on the parent's
 * fabric. Because the parent and its children are driven by one thread, one operation at a
 * time, and every rank runs the same sequence of operations, the byte streams between two
 * ranks stay matched whichever communicator posted them. A view has no store and publishes
 * nothing itself: comm_ctx_fail hands a child's failure to the parent, so the job's failure
 * protocol ("<ns>/abort", the chain of waits, closing every connection) runs once, in parent
 * ranks, for whichever communicator saw the failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm_impl.h"
#include "core/log.h"

typedef struct {
    comm_fabric base;
    comm_fabric *real;          /* the parent's fabric; not owned */
    void *reg[COMM_MAX_REG];    /* what this view registered on `real`, undone at destroy */
    int nreg;
    int map[];                  /* child rank -> parent rank, base.world entries */
} view_fabric;

static ih_err view_post_send(comm_fabric *f, int peer, const void *buf, size_t len, comm_req *req)
{
    view_fabric *v = (view_fabric *)f;
    IH_ASSERT(peer >= 0 && peer < f->world && peer != f->rank, "view send to rank %d of %d", peer, f->world);
    return comm_fabric_post_send(v->real, v->map[peer], buf, len, req);
}

static ih_err view_post_recv(comm_fabric *f, int peer, void *buf, size_t len, comm_req *req)
{
    view_fabric *v = (view_fabric *)f;
    IH_ASSERT(peer >= 0 && peer < f->world && peer != f->rank, "view receive from rank %d of %d", peer, f->world);
    return comm_fabric_post_recv(v->real, v->map[peer], buf, len, req);
}

static ih_err view_wait(comm_fabric *f, comm_req *req, int64_t timeout_ms)
{
    view_fabric *v = (view_fabric *)f;
    ih_err e = comm_fabric_wait(v->real, req, timeout_ms);
    f->stalled_peer = v->real->stalled_peer; /* a parent rank: comm_ctx_fail names it in parent ranks */
    return e;
}

static void view_abort(comm_fabric *f, ih_err code, const char *msg)
{
    comm_fabric_abort(((view_fabric *)f)->real, code, msg);
}

/* Registrations live on the parent's fabric: the view forwards them, so a child's scratch is
 * a zero-copy target like the parent's, and it undoes its own at destroy (the real fabric
 * outlives the view). comm.c bounds each ctx by COMM_MAX_REG, but the real fabric holds the
 * parent's and every child's: each child adds its COMM_NTMP scratch buffers (the two-level
 * allreduce: world 4 + gradients 1 + two children 8 = 13 of fabric_ib's 128). */
static ih_err view_reg(comm_fabric *f, void *buf, size_t bytes)
{
    view_fabric *v = (view_fabric *)f;
    if (v->real->ops->reg) IH_TRY(v->real->ops->reg(v->real, buf, bytes));
    v->reg[v->nreg++] = buf;
    return IH_OK;
}

static void view_dereg(comm_fabric *f, void *buf)
{
    view_fabric *v = (view_fabric *)f;
    if (v->real->ops->dereg) v->real->ops->dereg(v->real, buf);
    for (int i = 0; i < v->nreg; i++)
        if (v->reg[i] == buf) {
            v->reg[i] = v->reg[--v->nreg];
            break;
        }
}

static void view_destroy(comm_fabric *f)
{
    view_fabric *v = (view_fabric *)f;
    while (v->nreg > 0) view_dereg(f, v->reg[v->nreg - 1]);
    free(v);
}

static const comm_fabric_ops view_ops = {
    .name = "view",
    .post_send = view_post_send,
    .post_recv = view_post_recv,
    .wait = view_wait,
    .abort = view_abort,
    .destroy = view_destroy,
    .reg = view_reg,
    .dereg = view_dereg,
};

ih_err comm_fabric_view_create(comm_fabric **out, comm_fabric *real, const int *map, int rank, int world)
{
    view_fabric *v = calloc(1, sizeof *v + (size_t)world * sizeof(int));
    if (!v) return ih_fail(IH_E_SYS, "out of memory for a sub-communicator of %d ranks", world);
    v->base.ops = &view_ops;
    v->base.rank = rank;
    v->base.world = world;
    v->base.stalled_peer = -1;
    v->real = real;
    memcpy(v->map, map, (size_t)world * sizeof(int));
    *out = &v->base;
    return IH_OK;
}

/* The limit keeps colors and keys exact in the float allreduce that exchanges them. */
#define SPLIT_MAX (1 << 23)

ih_err comm_ctx_split(comm_ctx *parent, int color, int key, comm_ctx **out)
{
    *out = NULL;
    const int k = parent->boot.world, me = parent->boot.rank;
    if (color < -1 || color >= SPLIT_MAX || key <= -SPLIT_MAX || key >= SPLIT_MAX)
        return ih_fail(IH_E_USAGE, "comm_ctx_split on rank %d: color %d / key %d outside (-2^23, 2^23)",
                       me, color, key);
    /* Everyone's (color, key): a sum where each rank fills only its own row. */
    float *tab = calloc(2 * (size_t)k, sizeof(float));
    int *map = calloc((size_t)k, sizeof(int));
    comm_ctx *c = NULL;
    ih_err e = IH_OK;
    if (!tab || !map) { e = ih_fail(IH_E_SYS, "out of memory splitting %d ranks", k); goto fail; }
    tab[2 * me] = (float)color;
    tab[2 * me + 1] = (float)key;
    IH_TRY_GOTO(comm_coll_allreduce(parent, tab, 2 * (size_t)k, COMM_ALGO_AUTO), e, fail);
    if (color < 0) goto fail; /* e == IH_OK: not in any child */
    /* members in (key, parent rank) order: insertion sort, k is small and this is set-up */
    int n = 0, rank = -1;
    for (int q = 0; q < k; q++) {
        if ((int)tab[2 * q] != color) continue;
        int i = n++;
        while (i > 0 && (int)tab[2 * map[i - 1] + 1] > (int)tab[2 * q + 1]) {
            map[i] = map[i - 1];
            i--;
        }
        map[i] = q;
    }
    for (int i = 0; i < n; i++)
        if (map[i] == me) rank = i;
    IH_ASSERT(rank >= 0, "rank %d is not in its own split group", me);

    c = calloc(1, sizeof *c);
    if (!c) { e = ih_fail(IH_E_SYS, "out of memory for a sub-communicator"); goto fail; }
    c->boot = parent->boot;
    c->boot.rank = rank;
    c->boot.world = n;
    c->parent = parent;
    snprintf(c->ns, sizeof c->ns, "%.40s/split%d", parent->ns, color);
    snprintf(c->label, sizeof c->label, "in the sub-communicator of color %d (its rank %d of %d)", color,
             rank, n);
    memcpy(c->host, parent->host, sizeof c->host);
    c->timeout_ms = parent->timeout_ms;
    c->chunk_elems = parent->chunk_elems;
    for (int i = 0; i < COMM_NTMP; i++) {
        c->tmp[i] = aligned_alloc(64, (c->chunk_elems * sizeof(float) + 63) / 64 * 64);
        if (!c->tmp[i]) {
            e = ih_fail(IH_E_SYS, "out of memory for a sub-communicator's staging buffers");
            goto fail;
        }
    }
    IH_TRY_GOTO(comm_fabric_view_create(&c->fab, parent->fab, map, rank, n), e, fail);
    for (int i = 0; i < COMM_NTMP; i++)
        IH_TRY_GOTO(comm_ctx_register(c, c->tmp[i], c->chunk_elems * sizeof(float)), e, fail);
    IH_INFO(IH_LOG_COMM, "split: color %d -> rank %d of %d (parent rank %d of %d)", color, rank, n, me, k);
    *out = c;
    c = NULL;
fail:
    comm_ctx_destroy(c);
    free(tab);
    free(map);
    return e;
}
