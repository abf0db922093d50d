/* test_hier_allreduce_exact — the two-level allreduce (hier.h, CPU inside the node) equals a
 * sequential sum, bit for bit, for every layout of nodes x ranks per node.
 *
 * Layouts (nodes x local): 1x1, 1x3, 2x1, 2x2, 3x2, 2x4 with ranks placed node by node, plus
 * 2x2 and 3x2 placed round-robin (rank r on node r % nodes), so node and local rank are not
 * just rank / local. Ranks are threads over the tcp fabric on 127.0.0.1 and name their node
 * through comm_topo_discover's `node` argument (what IH_NODE_ID does for processes). For each
 * element count in {0, 1, L-1, L+1, 10007 (prime), 1 MiB + 3} x cross-node algorithm {hd,
 * ring}, twice on the same communicators with different data; between sizes a flat allreduce
 * on the world ctx checks that the views and the world share the connections cleanly. Inputs
 * are small integers, so every order gives the same float and the check is memcmp. A 16 KiB
 * chunk makes the larger sizes cross many chunks.
 */
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "tests/allreduce_inputs.h"
#include "tests/transport/ranks.h"
#include "transport/hier.h"

typedef struct { int nodes, local, cyclic; } layout;

static void body(tp_rank *r)
{
    const layout *ly = r->user;
    const int k = r->world, L = ly->local;
    const int node = ly->cyclic ? r->rank % ly->nodes : r->rank / L;
    const int lrank = ly->cyclic ? r->rank / ly->nodes : r->rank % L;
    comm_ctx *c = NULL;
    comm_hier *h = NULL;
    float *buf = NULL, *ref = NULL;
    if (tp_ctx_create(r, &c) != IH_OK) { tp_fail(r, "create: %s", ih_last_error()); return; }
    char name[32];
    snprintf(name, sizeof name, "node-%d", node);
    comm_topo t;
    if (comm_topo_discover(c, name, &t) != IH_OK) { tp_fail(r, "topology: %s", ih_last_error()); goto out; }
    if (t.nnodes != ly->nodes || t.node != node || t.local_rank != lrank || t.local_size != L || !t.uniform)
        tp_fail(r, "topology: %d nodes, node %d, local %d of %d, uniform %d; expected %d, %d, %d of %d, 1 (%s)",
                t.nnodes, t.node, t.local_rank, t.local_size, t.uniform, ly->nodes, node, lrank, L, t.layout);
    if (comm_hier_create(&h, c, &t) != IH_OK) { tp_fail(r, "hier: %s", ih_last_error()); goto out; }
    size_t sizes[] = {0, 1, (size_t)(L - 1), (size_t)(L + 1), 10007, (1u << 20) + 3};
    size_t maxn = (1u << 20) + 3;
    buf = malloc(maxn * sizeof(float));
    ref = malloc(maxn * sizeof(float));
    comm_algo algos[] = {COMM_ALGO_HD, COMM_ALGO_RING};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0] && !r->fails; si++) {
        size_t n = sizes[si];
        for (int a = 0; a < 2 && !r->fails; a++) {
            for (int rep = 0; rep < 2 && !r->fails; rep++) {
                ar_fill(buf, ref, r->rank, k, n, rep + 2 * a); /* ref: the sequential sum */
                if (comm_hier_allreduce(h, buf, n, algos[a]) != IH_OK) {
                    tp_fail(r, "hier allreduce(%s, n=%zu, rep %d): %s", comm_algo_name(algos[a]), n, rep,
                            ih_last_error());
                    break;
                }
                if (n && memcmp(buf, ref, n * sizeof(float))) {
                    size_t i = ar_first_diff(buf, ref, n);
                    tp_fail(r, "hier allreduce(%s, n=%zu, rep %d): element %zu is %g, expected %g",
                            comm_algo_name(algos[a]), n, rep, i, (double)buf[i], (double)ref[i]);
                }
            }
        }
        float one = 1;
        if (!r->fails && comm_coll_allreduce(c, &one, 1, COMM_ALGO_AUTO) != IH_OK)
            tp_fail(r, "flat allreduce after the hier ones: %s", ih_last_error());
        else if (!r->fails && one != (float)k)
            tp_fail(r, "flat allreduce after the hier ones: %g, expected %d", (double)one, k);
    }
out:
    free(buf);
    free(ref);
    comm_hier_destroy(h);
    comm_ctx_destroy(c);
}

int main(void)
{
    const layout layouts[] = {{1, 1, 0}, {1, 3, 0}, {2, 1, 0}, {2, 2, 0}, {3, 2, 0}, {2, 4, 0},
                              {2, 2, 1}, {3, 2, 1}};
    tp_rank ranks[64];
    for (size_t i = 0; i < sizeof layouts / sizeof layouts[0]; i++) {
        const layout *ly = &layouts[i];
        const int k = ly->nodes * ly->local;
        double t0 = ih_now_s();
        int bad = tp_run(k, ranks, body, (void *)ly, 10000, 16 << 10, 64 << 10, "hier");
        CHECK(bad == 0, "%dx%d%s: %d ranks saw a wrong result or an error", ly->nodes, ly->local,
              ly->cyclic ? " round-robin" : "", bad);
        printf("%d nodes x %d ranks%s: %s (%.2f s)\n", ly->nodes, ly->local, ly->cyclic ? " (round-robin)" : "",
               bad ? "FAIL" : "exact", ih_now_s() - t0);
    }
    return ih_test_result();
}
