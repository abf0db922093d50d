/* transport/hier.c — topology discovery and the two-level allreduce (see hier.h).
 *
 * Discovery: every rank writes its node name, one float per byte, into its own row of a
 * k x 64 table that is zero elsewhere; one allreduce (a sum of one non-zero per element, so
 * exact) gives every rank every name, and every rank derives the same grouping from it. This
 * needs no store round per rank and goes through the communicator's failure protocol.
 *
 * The CPU intra-node half: ring reduce-scatter on the node's sub-communicator leaves local
 * rank l with block l (comm_coll_block(n, L, l)) of the node's sum; the cross-node allreduce
 * runs on that block among the ranks with local rank l; the ring allgather copies the blocks
 * back. Blocks depend only on (n, L, l), so the cross-node groups agree on their sizes.
 */
#include "hier.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm_impl.h"
#include "core/log.h"

#define NAME_ROW (COMM_NODE_NAME_MAX + 1)

ih_err comm_hier_mode_parse(const char *s, comm_hier_mode *out)
{
    if (!strcmp(s, "off")) *out = COMM_HIER_OFF;
    else if (!strcmp(s, "on")) *out = COMM_HIER_ON;
    else if (!strcmp(s, "auto")) *out = COMM_HIER_AUTO;
    else return ih_fail(IH_E_USAGE, "unknown hierarchical allreduce mode '%s' (use auto, on or off)", s);
    return IH_OK;
}

const char *comm_hier_mode_name(comm_hier_mode m)
{
    return m == COMM_HIER_ON ? "on" : m == COMM_HIER_OFF ? "off" : "auto";
}

/* Appends to t->layout, marking a cut with "..." when it is full. */
static void layout_add(comm_topo *t, const char *name, int count, int first)
{
    size_t o = strlen(t->layout), cap = sizeof t->layout;
    if (o + 4 >= cap) return;
    int w = snprintf(t->layout + o, cap - o, "%snode '%s': %d rank%s from rank %d", o ? ", " : "", name,
                     count, count > 1 ? "s" : "", first);
    if (w < 0 || (size_t)w >= cap - o) snprintf(t->layout + cap - 4, 4, "...");
}

ih_err comm_topo_discover(comm_ctx *c, const char *node, comm_topo *out)
{
    memset(out, 0, sizeof *out);
    char host[256] = "";
    const char *rpn = getenv("IH_RANKS_PER_NODE");
    if (!node) node = getenv("IH_NODE_ID");
    if ((!node || !*node) && rpn && atoi(rpn) > 0) { /* simulated: nodes of L consecutive ranks */
        snprintf(host, sizeof host, "sim%d", comm_ctx_rank(c) / atoi(rpn));
        node = host;
    }
    if (!node || !*node) {
        gethostname(host, sizeof host - 1);
        node = host;
    }
    const size_t nl = strlen(node);
    /* A bad name still takes part in the allreduce (row marked -1), so every rank fails. */
    const int bad_name = nl == 0 || nl > COMM_NODE_NAME_MAX;
    snprintf(out->node_name, sizeof out->node_name, "%s", node);
    const int k = comm_ctx_world(c), me = comm_ctx_rank(c);
    float *tab = calloc((size_t)k * NAME_ROW, sizeof(float));
    int *node_of = calloc((size_t)k, sizeof(int)), *first = calloc((size_t)k, sizeof(int));
    int *count = calloc((size_t)k, sizeof(int));
    ih_err e = IH_OK;
    if (!tab || !node_of || !first || !count) { e = ih_fail(IH_E_SYS, "out of memory for %d node names", k); goto out; }
    for (size_t i = 0; i < nl && !bad_name; i++) tab[(size_t)me * NAME_ROW + i] = (float)(unsigned char)node[i];
    if (bad_name) tab[(size_t)me * NAME_ROW] = -1;
    IH_TRY_GOTO(comm_coll_allreduce(c, tab, (size_t)k * NAME_ROW, COMM_ALGO_AUTO), e, out);
    if (bad_name) {
        e = ih_fail(IH_E_USAGE, "rank %d: node name '%s' (IH_NODE_ID or the host name) must have 1 to %d "
                    "bytes", me, node, COMM_NODE_NAME_MAX);
        goto out;
    }
    for (int q = 0; q < k; q++)
        if (tab[(size_t)q * NAME_ROW] < 0) {
            e = ih_fail(IH_E_USAGE, "rank %d has an empty node name or one over %d bytes (IH_NODE_ID or "
                        "its host name; see its log)", q, COMM_NODE_NAME_MAX);
            goto out;
        }

    /* Nodes in the order of their lowest rank; first[j] = that rank, count[j] = ranks on j. */
    int nn = 0;
    for (int q = 0; q < k; q++) {
        const float *row = tab + (size_t)q * NAME_ROW;
        int j = 0;
        while (j < nn && memcmp(row, tab + (size_t)first[j] * NAME_ROW, NAME_ROW * sizeof(float))) j++;
        if (j == nn) first[nn++] = q;
        if (q == me) out->local_rank = count[j];
        node_of[q] = j;
        count[j]++;
    }
    out->nnodes = nn;
    out->node = node_of[me];
    out->local_size = count[out->node];
    out->uniform = 1;
    for (int j = 0; j < nn; j++) out->uniform &= count[j] == count[0];
    if (out->uniform) {
        snprintf(out->layout, sizeof out->layout, "%d node%s x %d rank%s", nn, nn > 1 ? "s" : "", count[0],
                 count[0] > 1 ? "s" : "");
    } else {
        for (int j = 0; j < nn; j++) {
            char name[NAME_ROW];
            const float *row = tab + (size_t)first[j] * NAME_ROW;
            for (int i = 0; i < NAME_ROW; i++) name[i] = (char)(unsigned char)row[i];
            name[NAME_ROW - 1] = 0;
            layout_add(out, name, count[j], first[j]);
        }
    }
out:
    free(tab);
    free(node_of);
    free(first);
    free(count);
    return e;
}

/* ---- CPU intra-node half ---- */

typedef struct {
    comm_intra base;
    comm_ctx *c; /* the node's sub-communicator; owned by the hier */
} cpu_intra;

static ih_err cpu_reduce_scatter(comm_intra *x, float *buf, size_t n, void *stream, float **shard, size_t *len)
{
    (void)stream;
    cpu_intra *ci = (cpu_intra *)x;
    size_t off = 0;
    IH_TRY(comm_coll_reduce_scatter(ci->c, buf, n));
    comm_coll_block(n, comm_ctx_world(ci->c), comm_ctx_rank(ci->c), &off, len);
    *shard = buf + off;
    return IH_OK;
}

static ih_err cpu_all_gather(comm_intra *x, float *buf, size_t n, void *stream)
{
    (void)stream;
    return comm_coll_allgather(((cpu_intra *)x)->c, buf, n);
}

static const comm_intra_ops cpu_intra_ops = {
    .name = "cpu",
    .reduce_scatter = cpu_reduce_scatter,
    .all_gather = cpu_all_gather,
    .destroy = NULL, /* embedded in comm_hier */
};

/* ---- the hier ---- */

struct comm_hier {
    comm_ctx *world; /* not owned */
    comm_ctx *intra; /* this node's ranks, by local rank */
    comm_ctx *inter; /* the ranks with this local rank, by node */
    comm_topo topo;
    cpu_intra cpu;
};

ih_err comm_hier_create(comm_hier **out, comm_ctx *world, const comm_topo *t)
{
    *out = NULL;
    if (!t->uniform)
        return ih_fail(IH_E_USAGE, "the hierarchical allreduce needs the same number of ranks on every "
                       "node, but %s: start as many ranks on each node (IH_NODE_ID overrides the host "
                       "name), or use the flat allreduce (--hier off)", t->layout);
    comm_hier *h = calloc(1, sizeof *h);
    if (!h) return ih_fail(IH_E_SYS, "out of memory (hier)");
    ih_err e = IH_OK;
    h->world = world;
    h->topo = *t;
    IH_TRY_GOTO(comm_ctx_split(world, t->node, t->local_rank, &h->intra), e, fail);
    IH_TRY_GOTO(comm_ctx_split(world, t->local_rank, t->node, &h->inter), e, fail);
    IH_ASSERT(comm_ctx_world(h->intra) == t->local_size && comm_ctx_world(h->inter) == t->nnodes,
              "hier split: node group %d (expected %d), cross-node group %d (expected %d)",
              comm_ctx_world(h->intra), t->local_size, comm_ctx_world(h->inter), t->nnodes);
    snprintf(h->intra->label, sizeof h->intra->label, "inside node '%.40s' (local rank %d of %d)",
             t->node_name, t->local_rank, t->local_size);
    snprintf(h->inter->label, sizeof h->inter->label, "across nodes (local rank %d; node %d of %d)",
             t->local_rank, t->node, t->nnodes);
    h->cpu.base.ops = &cpu_intra_ops;
    h->cpu.c = h->intra;
    *out = h;
    return IH_OK;
fail:
    comm_hier_destroy(h);
    return e;
}

ih_err comm_hier_open(comm_hier **out, comm_ctx *world, comm_hier_mode mode, const char *node)
{
    *out = NULL;
    if (!world || mode == COMM_HIER_OFF) return IH_OK;
    comm_topo t;
    IH_TRY(comm_topo_discover(world, node, &t));
    if (mode == COMM_HIER_AUTO && !(t.nnodes > 1 && t.local_size > 1 && t.uniform)) {
        /* one node, or one rank per node: nothing to gain, said only in the log */
        if (!t.uniform)
            ih_print0("# allreduce: flat (--hier auto: not the same number of ranks on every node: %s)\n",
                      t.layout);
        else
            IH_INFO(IH_LOG_COMM, "allreduce: flat (--hier auto: %s)", t.layout);
        return IH_OK;
    }
    IH_TRY(comm_hier_create(out, world, &t));
    ih_print0("# allreduce: two-level (--hier %s: %s): reduce-scatter inside each node, allreduce of "
              "1/%d across nodes, allgather inside each node\n", comm_hier_mode_name(mode), t.layout,
              t.local_size);
    return IH_OK;
}

void comm_hier_destroy(comm_hier *h)
{
    if (!h) return;
    comm_ctx_destroy(h->inter);
    comm_ctx_destroy(h->intra);
    free(h);
}

const comm_topo *comm_hier_topo(const comm_hier *h) { return &h->topo; }
comm_ctx *comm_hier_intra_comm(comm_hier *h) { return h->intra; }
comm_ctx *comm_hier_inter_comm(comm_hier *h) { return h->inter; }

ih_err comm_hier_allreduce_with(comm_hier *h, comm_intra *x, float *buf, size_t n, void *stream,
                                comm_algo inter)
{
    if (h->world->err) return ih_fail(h->world->err, "%s", h->world->errmsg);
    if (n == 0) return IH_OK;
    float *shard = NULL;
    size_t len = 0;
    ih_err e = IH_OK;
    if (h->topo.nnodes == 1 && x->ops->allreduce) {
        e = x->ops->allreduce(x, buf, n, stream);
    } else {
        e = x->ops->reduce_scatter(x, buf, n, stream, &shard, &len);
        if (!e) e = comm_coll_allreduce(h->inter, shard, len, inter);
        if (!e) e = x->ops->all_gather(x, buf, n, stream);
    }
    if (e && !h->world->err) { /* not a fabric failure (NCCL, CUDA): tell the other nodes */
        char op[128];
        snprintf(op, sizeof op, "two-level allreduce (%s inside the node, %zu B)", x->ops->name,
                 n * sizeof(float));
        e = comm_ctx_fail(h->world, e, op);
    }
    return e;
}

comm_intra *comm_hier_cpu_intra(comm_hier *h) { return &h->cpu.base; }

ih_err comm_hier_allreduce(comm_hier *h, float *buf, size_t n, comm_algo inter)
{
    return comm_hier_allreduce_with(h, &h->cpu.base, buf, n, NULL, inter);
}
