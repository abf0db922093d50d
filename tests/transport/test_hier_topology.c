/* test_hier_topology — the pieces under the two-level allreduce, and its refusals.
 *
 *  1. comm_ctx_split: 5 ranks, color rank % 2 (rank 4: -1, no group), key -rank (so the
 *     order within a group is reversed): ranks, sizes and sums inside each group, then a world
 *     allreduce; comm_coll_reduce_scatter / comm_coll_allgather block semantics on the world.
 *  2. Nodes with different rank counts (a b a b a): every rank gets IH_E_USAGE naming both
 *     nodes and their counts, --hier auto falls back to flat (NULL), and the ctx still works.
 *  3. A node name over 63 bytes on rank 1: every rank fails with IH_E_USAGE (no hang), the
 *     others naming rank 1.
 *  4. IH_NODE_ID (node NULL): one node of 3; auto gives flat, on gives a working hier.
 * Ranks are threads over tcp on 127.0.0.1.
 */
#include <stdlib.h>
#include <string.h>

#include "tests/transport/ranks.h"
#include "transport/hier.h"

static void split_body(tp_rank *r)
{
    comm_ctx *c = NULL, *s = NULL;
    if (tp_ctx_create(r, &c) != IH_OK) { tp_fail(r, "create: %s", ih_last_error()); return; }
    const int color = r->rank == 4 ? -1 : r->rank % 2;
    if (comm_ctx_split(c, color, -r->rank, &s) != IH_OK) { tp_fail(r, "split: %s", ih_last_error()); goto out; }
    if (color < 0) {
        if (s) tp_fail(r, "color -1 got a sub-communicator");
    } else {
        /* color 0: ranks {2, 0}; color 1: ranks {3, 1} (by key -rank) */
        const int want_rank = r->rank < 2 ? 1 : 0;
        if (!s || comm_ctx_world(s) != 2 || comm_ctx_rank(s) != want_rank) {
            tp_fail(r, "split: rank %d of %d, expected %d of 2", s ? comm_ctx_rank(s) : -1,
                    s ? comm_ctx_world(s) : -1, want_rank);
            goto out;
        }
        float v[3] = {(float)r->rank + 1, 1, 0};
        if (comm_coll_allreduce(s, v, 3, COMM_ALGO_RING) != IH_OK) tp_fail(r, "group allreduce: %s", ih_last_error());
        else if (v[0] != (color ? 6.0f : 4.0f) || v[1] != 2) tp_fail(r, "group sum %g %g", (double)v[0], (double)v[1]);
        int root_rank = -1;
        if (comm_ctx_rank(s) == 0) root_rank = r->rank;
        if (comm_coll_broadcast(s, &root_rank, sizeof root_rank, 0) != IH_OK)
            tp_fail(r, "group broadcast: %s", ih_last_error());
        else if (root_rank != (color ? 3 : 2)) tp_fail(r, "group broadcast gave %d", root_rank);
    }
    float w = 1;
    if (comm_coll_allreduce(c, &w, 1, COMM_ALGO_HD) != IH_OK || w != 5) tp_fail(r, "world allreduce after split");
    /* reduce-scatter / allgather on the world: block r, then everything */
    float b[11], ref[11];
    for (int i = 0; i < 11; i++) {
        b[i] = (float)(r->rank * 11 + i);
        ref[i] = 0;
        for (int q = 0; q < 5; q++) ref[i] += (float)(q * 11 + i);
    }
    size_t off = 0, len = 0;
    comm_coll_block(11, 5, r->rank, &off, &len);
    if (len != (r->rank == 0 ? 3u : 2u)) tp_fail(r, "block %d has %zu elements", r->rank, len);
    if (comm_coll_reduce_scatter(c, b, 11) != IH_OK) tp_fail(r, "reduce_scatter: %s", ih_last_error());
    else if (memcmp(b + off, ref + off, len * sizeof(float))) tp_fail(r, "reduce_scatter: wrong block %d", r->rank);
    for (int i = 0; i < 11; i++)
        if (i < (int)off || i >= (int)(off + len)) b[i] = -1; /* what allgather must overwrite */
    if (comm_coll_allgather(c, b, 11) != IH_OK) tp_fail(r, "allgather: %s", ih_last_error());
    else if (memcmp(b, ref, sizeof b)) tp_fail(r, "allgather: wrong result");
out:
    comm_ctx_destroy(s);
    comm_ctx_destroy(c);
}

static void mismatch_body(tp_rank *r)
{
    comm_ctx *c = NULL;
    comm_hier *h = NULL;
    if (tp_ctx_create(r, &c) != IH_OK) { tp_fail(r, "create: %s", ih_last_error()); return; }
    comm_topo t;
    const char *name = r->rank % 2 ? "b" : "a";
    if (comm_topo_discover(c, name, &t) != IH_OK) { tp_fail(r, "topology: %s", ih_last_error()); goto out; }
    if (t.uniform || t.nnodes != 2) tp_fail(r, "a b a b a: uniform %d, %d nodes", t.uniform, t.nnodes);
    r->err = comm_hier_create(&h, c, &t);
    snprintf(r->msg, sizeof r->msg, "%s", ih_last_error());
    if (r->err != IH_E_USAGE || h) tp_fail(r, "hier over a b a b a: %s (%s)", ih_err_name(r->err), r->msg);
    else if (!strstr(r->msg, "node 'a': 3 ranks from rank 0") || !strstr(r->msg, "node 'b': 2 ranks from rank 1"))
        tp_fail(r, "the message does not name the nodes and counts: %s", r->msg);
    if (comm_hier_open(&h, c, COMM_HIER_AUTO, name) != IH_OK || h) tp_fail(r, "auto did not fall back to flat");
    if (comm_hier_open(&h, c, COMM_HIER_ON, name) != IH_E_USAGE || h) tp_fail(r, "on did not refuse");
    float w = 1;
    if (comm_coll_allreduce(c, &w, 1, COMM_ALGO_RING) != IH_OK || w != 5) tp_fail(r, "flat allreduce after the refusal");
out:
    comm_hier_destroy(h);
    comm_ctx_destroy(c);
}

static void long_name_body(tp_rank *r)
{
    comm_ctx *c = NULL;
    if (tp_ctx_create(r, &c) != IH_OK) { tp_fail(r, "create: %s", ih_last_error()); return; }
    char name[80];
    memset(name, 'x', sizeof name - 1);
    name[sizeof name - 1] = 0;
    comm_topo t;
    r->err = comm_topo_discover(c, r->rank == 1 ? name : "n", &t);
    snprintf(r->msg, sizeof r->msg, "%s", ih_last_error());
    if (r->err != IH_E_USAGE) tp_fail(r, "long name on rank 1: %s", ih_err_name(r->err));
    else if (!strstr(r->msg, "rank 1")) tp_fail(r, "does not name rank 1: %s", r->msg);
    comm_ctx_destroy(c);
}

static void env_body(tp_rank *r)
{
    comm_ctx *c = NULL;
    comm_hier *h = NULL;
    if (tp_ctx_create(r, &c) != IH_OK) { tp_fail(r, "create: %s", ih_last_error()); return; }
    if (comm_hier_open(&h, c, COMM_HIER_AUTO, NULL) != IH_OK || h) tp_fail(r, "auto on one node is not flat");
    if (comm_hier_open(&h, c, COMM_HIER_ON, NULL) != IH_OK || !h) { tp_fail(r, "on: %s", ih_last_error()); goto out; }
    const comm_topo *t = comm_hier_topo(h);
    if (t->nnodes != 1 || t->local_size != 3 || t->local_rank != r->rank || strcmp(t->node_name, "sim-node"))
        tp_fail(r, "IH_NODE_ID: %d nodes of %d, local %d, name %s", t->nnodes, t->local_size, t->local_rank, t->node_name);
    float v[4] = {1, 2, 3, 4};
    if (comm_hier_allreduce(h, v, 4, COMM_ALGO_AUTO) != IH_OK) tp_fail(r, "allreduce: %s", ih_last_error());
    else if (v[0] != 3 || v[3] != 12) tp_fail(r, "allreduce gave %g .. %g", (double)v[0], (double)v[3]);
out:
    comm_hier_destroy(h);
    comm_ctx_destroy(c);
}

int main(void)
{
    tp_rank ranks[8];
    int bad = tp_run(5, ranks, split_body, NULL, 10000, 0, 0, "split");
    CHECK(bad == 0, "split: %d ranks failed", bad);
    bad = tp_run(5, ranks, mismatch_body, NULL, 10000, 0, 0, "mismatch");
    CHECK(bad == 0, "mismatch: %d ranks failed", bad);
    printf("mismatch: %s\n", ranks[0].msg);
    bad = tp_run(3, ranks, long_name_body, NULL, 10000, 0, 0, "longname");
    CHECK(bad == 0, "long name: %d ranks failed", bad);
    printf("long name, rank 0: %s\n", ranks[0].msg);
    setenv("IH_NODE_ID", "sim-node", 1);
    bad = tp_run(3, ranks, env_body, NULL, 10000, 0, 0, "env");
    CHECK(bad == 0, "IH_NODE_ID: %d ranks failed", bad);
    unsetenv("IH_NODE_ID");
    return ih_test_result();
}
