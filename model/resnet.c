/* model/resnet.c — builds the ResNet family as a model_graph.
 *
 * ImageNet-style (He et al. 2016, as in fb.resnet.torch which Goyal et al. 2017 used): stem
 * 7x7/2 conv 64, BN, ReLU, 3x3/2 max pool; four stages of basic (18/34) or bottleneck
 * (50/101) blocks; a downsampling bottleneck puts its stride on the 3x3 conv (not the 1x1);
 * projection shortcuts (1x1 conv + BN) wherever the shape changes. CIFAR-style (He et al.
 * 2016, sec. 4.2): 6n+2 layers, 3x3 conv 16, three stages of n basic blocks with 16/32/64
 * channels, stride 2 entering stages 2 and 3, projection shortcuts (option B). Both end in
 * global average pooling and a fully connected layer.
 * Parameter names follow torchvision's state_dict ("layer2.0.bn3.gamma"), BN gamma/beta
 * called gamma/beta; the last BN of each residual branch starts at gamma = 0 (Goyal et al.
 * 2017, sec. 5.1), convs get He normal init with fan_out (fb.resnet.torch, torchvision).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/graph.h"

typedef struct {
    model_graph *g;
    int cap_t, cap_l, cap_s;
    int oom;
    model_layer dummy;
} builder;

static int grow(void **p, int *cap, int need, size_t elem)
{
    if (need <= *cap) return 0;
    int nc = *cap ? *cap * 2 : 64;
    while (nc < need) nc *= 2;
    void *q = realloc(*p, (size_t)nc * elem);
    if (!q) return -1;
    *p = q;
    *cap = nc;
    return 0;
}

static int add_tensor(builder *b, int h, int w, int c)
{
    model_graph *g = b->g;
    if (grow((void **)&g->tensors, &b->cap_t, g->ntensors + 1, sizeof(model_shape))) {
        b->oom = 1;
        return 0;
    }
    g->tensors[g->ntensors] = (model_shape){h, w, c};
    return g->ntensors++;
}

static model_layer *add_layer(builder *b, model_op op, int in0, int in1)
{
    model_graph *g = b->g;
    if (grow((void **)&g->layers, &b->cap_l, g->nlayers + 1, sizeof(model_layer))) {
        b->oom = 1;
        return &b->dummy; /* written to and discarded; the build fails on b->oom */
    }
    model_layer *l = &g->layers[g->nlayers++];
    memset(l, 0, sizeof *l);
    l->op = op;
    l->in[0] = in0;
    l->in[1] = in1;
    return l;
}

static size_t add_seg(builder *b, const char *name, const char *suffix, size_t count, int kind,
                      int no_decay, model_init_kind init, double std)
{
    model_graph *g = b->g;
    if (g->nsegs == b->cap_s) { /* the three per-segment arrays grow together */
        int nc = b->cap_s ? 2 * b->cap_s : 64;
        model_param_seg *s1 = realloc(g->segs, (size_t)nc * sizeof *s1);
        if (s1) g->segs = s1;
        model_init_kind *s2 = realloc(g->seg_init, (size_t)nc * sizeof *s2);
        if (s2) g->seg_init = s2;
        double *s3 = realloc(g->seg_std, (size_t)nc * sizeof *s3);
        if (s3) g->seg_std = s3;
        if (!s1 || !s2 || !s3) {
            b->oom = 1;
            return 0;
        }
        b->cap_s = nc;
    }
    size_t len = strlen(name) + strlen(suffix) + 2;
    char *s = malloc(len);
    if (!s) {
        b->oom = 1;
        return 0;
    }
    snprintf(s, len, "%s.%s", name, suffix);
    model_param_seg *sg = &g->segs[g->nsegs];
    sg->name = s;
    sg->offset = g->nparams;
    sg->count = count;
    sg->no_decay = no_decay;
    sg->kind = kind;
    g->seg_init[g->nsegs] = init;
    g->seg_std[g->nsegs] = std;
    g->nsegs++;
    g->nparams += count;
    return sg->offset;
}

/* conv (no bias) -> new tensor */
static int conv(builder *b, int in, int k, int ksize, int stride, int pad, const char *name)
{
    model_shape x = b->g->tensors[in];
    int oh = (x.h + 2 * pad - ksize) / stride + 1, ow = (x.w + 2 * pad - ksize) / stride + 1;
    if (x.h + 2 * pad < ksize || x.w + 2 * pad < ksize) oh = ow = 0;
    int out = add_tensor(b, oh, ow, k);
    model_layer *l = add_layer(b, MODEL_OP_CONV, in, -1);
    l->out = out;
    l->k = k;
    l->r = l->s = ksize;
    l->stride = stride;
    l->pad = pad;
    /* He et al. 2015 with fan_out = k*r*s (torchvision's kaiming_normal_(mode="fan_out")) */
    l->w_off = add_seg(b, name, "weight", (size_t)k * ksize * ksize * x.c, MODEL_PARAM_CONV_W, 0,
                       MODEL_INIT_NORMAL, sqrt(2.0 / ((double)k * ksize * ksize)));
    return out;
}

static int bn(builder *b, int in, const char *name, int zero_gamma)
{
    model_shape x = b->g->tensors[in];
    int out = add_tensor(b, x.h, x.w, x.c);
    model_layer *l = add_layer(b, MODEL_OP_BN, in, -1);
    l->out = out;
    l->w_off = add_seg(b, name, "gamma", (size_t)x.c, MODEL_PARAM_BN_GAMMA, 1,
                       zero_gamma ? MODEL_INIT_ZERO : MODEL_INIT_ONE, 0);
    l->b_off = add_seg(b, name, "beta", (size_t)x.c, MODEL_PARAM_BN_BETA, 1, MODEL_INIT_ZERO, 0);
    l->state_off = b->g->nstate;
    b->g->nstate += 2 * (size_t)x.c;
    return out;
}

static int relu(builder *b, int t)
{
    model_layer *l = add_layer(b, MODEL_OP_RELU, t, -1);
    l->out = t;
    return t;
}

static int conv_bn(builder *b, int in, int k, int ksize, int stride, const char *prefix,
                   const char *conv_name, const char *bn_name, int zero_gamma)
{
    char n1[96], n2[96];
    snprintf(n1, sizeof n1, "%s%s", prefix, conv_name);
    snprintf(n2, sizeof n2, "%s%s", prefix, bn_name);
    return bn(b, conv(b, in, k, ksize, stride, ksize / 2, n1), n2, zero_gamma);
}

/* Residual join: relu(branch + shortcut). */
static int join(builder *b, int branch, int shortcut)
{
    model_shape s = b->g->tensors[branch];
    int out = add_tensor(b, s.h, s.w, s.c);
    model_layer *l = add_layer(b, MODEL_OP_ADD, branch, shortcut);
    l->out = out;
    return relu(b, out);
}

static int shortcut(builder *b, int in, int out_c, int stride, const char *prefix)
{
    if (stride == 1 && b->g->tensors[in].c == out_c) return in;
    return conv_bn(b, in, out_c, 1, stride, prefix, "downsample.0", "downsample.1", 0);
}

static int basic_block(builder *b, int in, int planes, int stride, const char *prefix)
{
    int t = relu(b, conv_bn(b, in, planes, 3, stride, prefix, "conv1", "bn1", 0));
    t = conv_bn(b, t, planes, 3, 1, prefix, "conv2", "bn2", 1);
    return join(b, t, shortcut(b, in, planes, stride, prefix));
}

static int bottleneck(builder *b, int in, int planes, int stride, const char *prefix)
{
    int t = relu(b, conv_bn(b, in, planes, 1, 1, prefix, "conv1", "bn1", 0));
    t = relu(b, conv_bn(b, t, planes, 3, stride, prefix, "conv2", "bn2", 0)); /* stride here */
    t = conv_bn(b, t, 4 * planes, 1, 1, prefix, "conv3", "bn3", 1);
    return join(b, t, shortcut(b, in, 4 * planes, stride, prefix));
}

static void head(builder *b, int t, int num_classes)
{
    int c = b->g->tensors[t].c;
    int pooled = add_tensor(b, 1, 1, c);
    model_layer *l = add_layer(b, MODEL_OP_AVGPOOL, t, -1);
    l->out = pooled;
    int logits = add_tensor(b, 1, 1, num_classes);
    l = add_layer(b, MODEL_OP_FC, pooled, -1);
    l->out = logits;
    l->k = num_classes;
    l->w_off = add_seg(b, "fc", "weight", (size_t)num_classes * c, MODEL_PARAM_FC_W, 0,
                       MODEL_INIT_NORMAL, 0.01);
    l->b_off = add_seg(b, "fc", "bias", (size_t)num_classes, MODEL_PARAM_FC_B, 1, MODEL_INIT_ZERO, 0);
}

/* Backward write flags: walking layers in reverse, the first layer to write a tensor's
 * gradient overwrites it and later ones add. */
static int set_accum(model_graph *g)
{
    char *written = calloc((size_t)g->ntensors, 1);
    if (!written) return -1;
    for (int i = g->nlayers - 1; i >= 0; i--) {
        model_layer *l = &g->layers[i];
        l->accum[0] = l->accum[1] = -1;
        if (l->op == MODEL_OP_RELU) continue;
        for (int j = 0; j < 2; j++) {
            int t = l->in[j];
            if (t <= 0) continue; /* none, or the network input */
            l->accum[j] = written[t];
            written[t] = 1;
        }
    }
    free(written);
    return 0;
}

void model_graph_destroy(model_graph *g)
{
    if (!g) return;
    for (int i = 0; i < g->nsegs; i++) free((char *)g->segs[i].name);
    free(g->segs);
    free(g->seg_init);
    free(g->seg_std);
    free(g->tensors);
    free(g->layers);
    free(g);
}

static const char *const known_archs =
    "resnet18, resnet34, resnet50, resnet101 (ImageNet-style) or resnet8, resnet14, resnet20, "
    "resnet32, resnet44, resnet56, resnet110 (CIFAR-style)";

ih_err model_graph_build(model_graph **out, const char *arch, int image_size, int num_classes,
                         int base_width)
{
    *out = NULL;
    int depth = 0;
    char tail = 0;
    if (!arch || sscanf(arch, "resnet%d%c", &depth, &tail) != 1)
        return ih_fail(IH_E_USAGE, "model: unknown arch '%s'; known: %s", arch ? arch : "(null)",
                       known_archs);
    static const int imagenet_blocks[4][5] = {
        {18, 2, 2, 2, 2}, {34, 3, 4, 6, 3}, {50, 3, 4, 6, 3}, {101, 3, 4, 23, 3}};
    const int *stages = NULL;
    for (int i = 0; i < 4; i++)
        if (imagenet_blocks[i][0] == depth) stages = imagenet_blocks[i] + 1;
    int cifar_n = 0;
    if (!stages && (depth == 8 || depth == 14 || depth == 20 || depth == 32 || depth == 44 ||
                    depth == 56 || depth == 110))
        cifar_n = (depth - 2) / 6;
    if (!stages && !cifar_n)
        return ih_fail(IH_E_USAGE, "model: unknown arch '%s'; known: %s", arch, known_archs);
    if (num_classes < 1 || image_size < 1)
        return ih_fail(IH_E_USAGE, "model %s: num_classes (%d) and image_size (%d) must be >= 1",
                       arch, num_classes, image_size);
    if (base_width <= 0) base_width = stages ? 64 : 16;

    builder b = {0};
    b.g = calloc(1, sizeof(model_graph));
    if (!b.g) return ih_fail(IH_E_SYS, "model %s: out of memory building the graph", arch);
    model_graph *g = b.g;
    g->image_size = image_size;
    g->num_classes = num_classes;
    g->base_width = base_width;
    int t = add_tensor(&b, image_size, image_size, 3);
    char prefix[64];
    if (stages) {
        t = relu(&b, conv_bn(&b, t, base_width, 7, 2, "", "conv1", "bn1", 0));
        model_shape x = g->tensors[t];
        int oh = (x.h + 2 - 3) / 2 + 1, ow = (x.w + 2 - 3) / 2 + 1;
        if (x.h < 1) oh = ow = 0;
        int p = add_tensor(&b, oh, ow, x.c);
        model_layer *l = add_layer(&b, MODEL_OP_MAXPOOL, t, -1);
        l->out = p;
        l->r = l->s = 3;
        l->stride = 2;
        l->pad = 1;
        t = p;
        for (int s = 0; s < 4; s++)
            for (int i = 0; i < stages[s]; i++) {
                snprintf(prefix, sizeof prefix, "layer%d.%d.", s + 1, i);
                int stride = (s > 0 && i == 0) ? 2 : 1;
                t = depth >= 50 ? bottleneck(&b, t, base_width << s, stride, prefix)
                                : basic_block(&b, t, base_width << s, stride, prefix);
            }
    } else {
        t = relu(&b, conv_bn(&b, t, base_width, 3, 1, "", "conv1", "bn1", 0));
        for (int s = 0; s < 3; s++)
            for (int i = 0; i < cifar_n; i++) {
                snprintf(prefix, sizeof prefix, "layer%d.%d.", s + 1, i);
                t = basic_block(&b, t, base_width << s, (s > 0 && i == 0) ? 2 : 1, prefix);
            }
    }
    head(&b, t, num_classes);
    if (b.oom || set_accum(g)) {
        model_graph_destroy(g);
        return ih_fail(IH_E_SYS, "model %s: out of memory building the graph", arch);
    }
    for (int i = 0; i < g->ntensors; i++)
        if (g->tensors[i].h < 1 || g->tensors[i].w < 1) {
            model_graph_destroy(g);
            return ih_fail(IH_E_USAGE, "model %s: image_size %d is too small for this network "
                           "(a feature map shrinks to nothing); use a larger --image-size",
                           arch, image_size);
        }
    *out = g;
    return IH_OK;
}

int model_graph_bn_joins(const model_graph *g, int *join)
{
    int count = 0;
    for (int i = 0; i < g->nlayers; i++) join[i] = -1;
    for (int i = 0; i < g->nlayers; i++) {
        const model_layer *l = &g->layers[i];
        if (l->op != MODEL_OP_BN || l->accum[0] != 0) continue;
        if (i + 1 < g->nlayers && g->layers[i + 1].op == MODEL_OP_RELU && g->layers[i + 1].in[0] == l->out)
            continue; /* a BN+ReLU, not a join's branch */
        int j = -1, readers = 0;
        for (int k = i + 1; k < g->nlayers; k++) {
            const model_layer *a = &g->layers[k];
            const int r = (a->in[0] == l->out) + (a->op == MODEL_OP_ADD && a->in[1] == l->out);
            readers += r;
            if (r && j < 0) j = k;
        }
        if (j < 0 || readers != 1 || g->layers[j].op != MODEL_OP_ADD) continue;
        /* deferred to the ADD, the BN reads its input there: nothing in between may write it */
        int overwritten = 0;
        for (int k = i + 1; k < j; k++) overwritten |= g->layers[k].out == l->in[0];
        if (overwritten) continue;
        const model_layer *a = &g->layers[j];
        const int side = a->in[0] == l->out ? 0 : 1;
        if (a->in[1 - side] == l->out || a->accum[1 - side] != 0) continue;
        if (!(j + 1 < g->nlayers && g->layers[j + 1].op == MODEL_OP_RELU && g->layers[j + 1].in[0] == a->out))
            continue;
        int taken = 0;
        for (int k = 0; k < i; k++) taken |= join[k] == j;
        if (taken) continue;
        join[i] = j;
        count++;
    }
    return count;
}
