/* model/graph.h — a ResNet as a list of layers over numbered tensors (internal to model/
 * and its tests; the trainer uses model.h).
 *
 * The graph is precision- and backend-neutral: shapes, which tensor each layer reads and
 * writes, and where its parameters live in the flat buffers. Layers are listed in forward
 * order and parameters are laid out in the same order, so running the layers backwards
 * produces gradients from the end of the flat buffer towards its start.
 * Tensor 0 is the normalised input image; the last layer's output is the logits.
 */
#ifndef MODEL_GRAPH_H
#define MODEL_GRAPH_H

#include <stddef.h>

#include "core/err.h"
#include "model/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MODEL_OP_CONV,
    MODEL_OP_BN,
    MODEL_OP_RELU,    /* in place: out == in[0] */
    MODEL_OP_MAXPOOL,
    MODEL_OP_AVGPOOL, /* global */
    MODEL_OP_FC,
    MODEL_OP_ADD
} model_op;

typedef struct {
    int h, w, c; /* per image; the batch dimension is implicit */
} model_shape;

typedef struct {
    model_op op;
    int in[2];       /* tensor ids; in[1] only for ADD (-1 otherwise) */
    int out;         /* tensor id */
    /* Backward, per input: -1 no gradient needed (the network input), 0 overwrite the
     * input's gradient (first writer in backward order), 1 add to it. Unused for RELU,
     * which masks its own gradient in place. */
    int accum[2];
    int k, r, s, stride, pad; /* CONV: output channels, kernel; MAXPOOL: r = window */
    size_t w_off;    /* CONV/FC weights, BN gamma: offset in the flat parameters */
    size_t b_off;    /* BN beta, FC bias */
    size_t state_off;/* BN: running mean at state_off, running var at state_off + c */
} model_layer;

/* How model_init_params fills a segment. */
typedef enum { MODEL_INIT_NORMAL, MODEL_INIT_ONE, MODEL_INIT_ZERO } model_init_kind;

typedef struct {
    int image_size, num_classes, base_width;
    int ntensors, nlayers, nsegs;
    model_shape *tensors;
    model_layer *layers;
    model_param_seg *segs;    /* names owned by the graph */
    model_init_kind *seg_init;
    double *seg_std;          /* MODEL_INIT_NORMAL: standard deviation */
    size_t nparams, nstate;
} model_graph;

/* Builds `arch` ("resnet18|34|50|101", "resnet8|14|20|32|44|56|110") for square inputs of
 * image_size and num_classes outputs. base_width scales the network: 0 means the standard
 * width (64 for ImageNet-style, 16 for CIFAR-style); tests build slim copies (e.g. 4) of the
 * real topologies. IH_E_USAGE for an unknown arch or an input too small for it. The caller
 * owns *out (model_graph_destroy). Any thread; no blocking. */
ih_err model_graph_build(model_graph **out, const char *arch, int image_size, int num_classes,
                         int base_width);
void model_graph_destroy(model_graph *g);

/* model_net_create with a non-standard base width (see model_graph_build); for tests. */
ih_err model_net_create_width(model_net **out, const model_cfg *cfg, int base_width);
/* ... and with an explicit precision (model_net_create_prec). */
ih_err model_net_create_full(model_net **out, const model_cfg *cfg, int base_width,
                             model_precision prec);

/* The residual joins a backend may run as one operation, relu(BN(x) + z) (cuDNN's
 * BN_ADD_ACTIVATION): for every layer i, join[i] = the ADD layer that BN layer i can run in,
 * else -1. BN i qualifies when no ReLU follows it directly, its input gradient is written
 * (accum[0] == 0), its output is read by exactly one layer, an ADD that a ReLU on the ADD's
 * output follows, whose other input z is another tensor with its gradient written by the ADD
 * (accum 0), and no layer between the BN and the ADD writes the BN's input (the BN reads it at
 * the ADD's place). Each ADD goes to at most one BN, the first in layer order: in a projection block
 * both the branch's last BN and the shortcut's BN feed the ADD, and the branch's takes it (the
 * shortcut's then runs on its own, before the ADD, producing z). Returns the number of joins.
 * join has g->nlayers entries. */
int model_graph_bn_joins(const model_graph *g, int *join);

/* The graph behind a net (owned by the net). */
const model_graph *model_net_graph(const model_net *m);

#ifdef __cplusplus
}
#endif

#endif
