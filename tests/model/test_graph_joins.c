/* test_graph_joins — model_graph_bn_joins (graph.h), the residual joins relu(BN(x) + z) that a
 * backend may run as one operation (cuDNN's BN_ADD_ACTIVATION under IH_CUDNN_BN=cudnn+add):
 *   - every residual block's ADD is joined by exactly one BN, the branch's last one (bn3 in
 *     bottlenecks, bn2 in basic blocks), never the projection shortcut's (downsample.1), which
 *     must run before the ADD as its other input; so resnet50 has 16 joins, resnet18 8,
 *     resnet8 (CIFAR-style) 3, one per ADD;
 *   - the joined BN's output is an input of its ADD and read by nothing else;
 *   - each rule rejects when broken on a copy of the graph: an ADD whose other input's
 *     gradient is added to (accum 1), a BN whose input gradient is added to, an ADD with no
 *     ReLU after it (the op fuses the ReLU), a BN output read twice, and a layer between the
 *     BN and its ADD (a projection block's shortcut conv) writing the BN's input in place.
 * Names come from the parameter segments (torchvision's), an independent record of which
 * BN is which. */
#include <stdlib.h>
#include <string.h>

#include "model/graph.h"
#include "model/model.h"
#include "tests/check.h"

/* the name of BN layer l's gamma segment, or "?" */
static const char *bn_name(const model_graph *g, const model_layer *l)
{
    for (int s = 0; s < g->nsegs; s++)
        if (g->segs[s].offset == l->w_off && g->segs[s].kind == MODEL_PARAM_BN_GAMMA) return g->segs[s].name;
    return "?";
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static void check_net(const char *arch, int size, int want, const char *branch_bn)
{
    model_graph *g = NULL;
    CHECK(model_graph_build(&g, arch, size, 10, 0) == IH_OK, "%s: %s", arch, ih_last_error());
    if (!g) return;
    int *join = malloc((size_t)g->nlayers * sizeof(int)), *claims = calloc((size_t)g->nlayers, sizeof(int));
    CHECK(join && claims, "out of memory");
    if (!join || !claims) goto out;
    const int n = model_graph_bn_joins(g, join);
    int adds = 0, counted = 0;
    for (int i = 0; i < g->nlayers; i++) adds += g->layers[i].op == MODEL_OP_ADD;
    CHECK(n == want && adds == want, "%s: %d joins and %d ADDs, want %d of each", arch, n, adds, want);
    for (int i = 0; i < g->nlayers; i++) {
        if (join[i] < 0) continue;
        counted++;
        const model_layer *l = &g->layers[i], *a = &g->layers[join[i]];
        const char *nm = bn_name(g, l);
        CHECK(l->op == MODEL_OP_BN && a->op == MODEL_OP_ADD, "%s: layer %d joined to layer %d: not a BN and an ADD",
              arch, i, join[i]);
        CHECK(ends_with(nm, branch_bn), "%s: %s joined, want the branch's %s", arch, nm, branch_bn);
        CHECK(!strstr(nm, "downsample"), "%s: the shortcut's %s joined", arch, nm);
        CHECK(a->in[0] == l->out || a->in[1] == l->out, "%s: %s's output is not an input of its ADD", arch, nm);
        claims[join[i]]++;
    }
    CHECK(counted == n, "%s: %d joins returned, %d in the table", arch, n, counted);
    for (int j = 0; j < g->nlayers; j++)
        if (g->layers[j].op == MODEL_OP_ADD)
            CHECK(claims[j] == 1, "%s: ADD layer %d joined by %d BNs, want 1", arch, j, claims[j]);
    printf("%s: %d joins, one per ADD, all %s\n", arch, n, branch_bn);
out:
    free(join);
    free(claims);
    model_graph_destroy(g);
}

/* Breaks one rule on the first join of resnet18's graph and expects that join to go. */
static void check_rules(void)
{
    static const char *what[] = {"the other input's gradient added to", "the BN's input gradient added to",
                                 "no ReLU after the ADD", "the BN's output read twice",
                                 "the BN's input overwritten before the ADD"};
    for (int rule = 0; rule < 5; rule++) {
        model_graph *g = NULL;
        CHECK(model_graph_build(&g, "resnet18", 64, 10, 8) == IH_OK, "%s", ih_last_error());
        if (!g) return;
        int *join = malloc((size_t)g->nlayers * sizeof(int));
        CHECK(join != NULL, "out of memory");
        if (!join) {
            model_graph_destroy(g);
            return;
        }
        const int before = model_graph_bn_joins(g, join);
        int bi = -1; /* the first join; for rule 4 the first with layers between the BN and the ADD */
        for (int i = 0; i < g->nlayers && bi < 0; i++)
            if (join[i] >= 0 && (rule != 4 || join[i] > i + 1)) bi = i;
        CHECK(bi >= 0, "resnet18: no join to break");
        if (bi >= 0) {
            model_layer *l = &g->layers[bi], *a = &g->layers[join[bi]];
            const int side = a->in[0] == l->out ? 0 : 1;
            if (rule == 0) a->accum[1 - side] = 1;
            if (rule == 1) l->accum[0] = 1;
            if (rule == 2) g->layers[join[bi] + 1].op = MODEL_OP_AVGPOOL; /* only its op is read */
            if (rule == 3) a->in[1 - side] = l->out;                      /* x + x */
            if (rule == 4) g->layers[bi + 1].out = l->in[0];              /* written in place */
            const int after = model_graph_bn_joins(g, join);
            /* rule 4: the shortcut's BN may take the freed ADD instead, so the count may stay */
            CHECK(join[bi] == -1 && (rule == 4 ? after <= before : after == before - 1),
                  "resnet18 with %s: BN layer %d still joined, or a join too many (%d joins, %d before)", what[rule],
                  bi, after, before);
        }
        free(join);
        model_graph_destroy(g);
    }
}

int main(void)
{
    check_net("resnet50", 64, 16, "bn3.gamma");
    check_net("resnet18", 64, 8, "bn2.gamma");
    check_net("resnet8", 16, 3, "bn2.gamma");
    check_rules();
    return ih_test_result();
}
