/* model/model.c — the public model API (model.h) over the graph builder and the two
 * executors (model/cpu/net.h, model/cuda/net.h): owns the flat parameter, gradient and
 * BN-state buffers on the host, initialises them the paper's way, and checks the caller's
 * inputs before a step.
 * With the CUDA backend the host buffers are mirrors of the device's: `host_stale_*` says the
 * device changed a buffer since it was last copied back (a step writes grads and state, an
 * SGD step params and momentum; the momentum's host mirror is the bound optimizer's buffer),
 * `dev_stale_*` says the host view was handed out (and may have been written) since it was
 * last copied to the device. Views copy back lazily; steps copy in what is stale first.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/rng.h"
#include "ih_config.h"
#include "model/cpu/net.h"
#if IH_WITH_CUDA
#include "model/cuda/net.h"
#endif
#include "model/graph.h"
#include "model/model.h"

struct model_net {
    model_cfg cfg;
    model_graph *g;
    model_cpu_net *exec;         /* CPU backend */
#if IH_WITH_CUDA
    model_cuda_net *cu;          /* CUDA backend */
#endif
    model_precision prec;
    int dev_stale_params, dev_stale_grads, dev_stale_state, dev_stale_mom;
    int host_stale_params, host_stale_grads, host_stale_state, host_stale_mom;
    float *params, *grads, *state;  /* CUDA: grads is the executor's pinned mirror */
    optim_sgd *opt;              /* CUDA: the optimizer whose momentum lives on the device */
    int grad_host;               /* model_set_grad_host */
    int min_bn_rows;             /* smallest h*w of any BN input: BN training needs n*h*w >= 2 */
    model_grad_ready_fn ready;
    void *ready_arg;
};

void model_net_destroy(model_net *m)
{
    if (!m) return;
    model_cpu_net_destroy(m->exec);
#if IH_WITH_CUDA
    model_cuda_net_destroy(m->cu);
#endif
    model_graph_destroy(m->g);
    free(m->params);
    if (m->cfg.backend == MODEL_BACKEND_CPU) free(m->grads);
    free(m->state);
    free(m);
}

/* Debian's OpenBLAS (DYNAMIC_ARCH) falls back to its generic Prescott kernels on CPUs it does
 * not recognise, which virtual machines often report; forcing the core type measured 20-35%
 * faster resnet8/20 steps on an AVX-512 VM. Warn once per net, with the fix. */
static void warn_generic_blas(void)
{
    const char *core = openblas_get_corename();
    if (!core || strcmp(core, "Prescott") != 0 || getenv("OPENBLAS_CORETYPE")) return;
    __builtin_cpu_init();
    const char *better = __builtin_cpu_supports("avx512f") ? "SkylakeX"
                         : __builtin_cpu_supports("avx2")  ? "Haswell"
                                                           : NULL;
    if (better)
        IH_WARN("model: OpenBLAS chose its generic '%s' kernels on this CPU; export "
                "OPENBLAS_CORETYPE=%s before starting for faster CPU training", core, better);
}

ih_err model_net_create_full(model_net **out, const model_cfg *cfg, int base_width,
                             model_precision prec)
{
    *out = NULL;
    if (cfg->backend != MODEL_BACKEND_CPU && cfg->backend != MODEL_BACKEND_CUDA)
        return ih_fail(IH_E_USAGE, "model %s: unknown backend %d", cfg->arch ? cfg->arch : "(null)",
                       (int)cfg->backend);
    if (cfg->backend == MODEL_BACKEND_CPU && (prec == MODEL_PREC_BF16 || prec == MODEL_PREC_FP16))
        return ih_fail(IH_E_USAGE, "model %s: the CPU backend computes in fp32 only; %s needs "
                       "the CUDA backend", cfg->arch ? cfg->arch : "(null)",
                       prec == MODEL_PREC_BF16 ? "bf16" : "fp16");
    if (prec < MODEL_PREC_DEFAULT || prec > MODEL_PREC_FP16)
        return ih_fail(IH_E_USAGE, "model %s: unknown precision %d", cfg->arch ? cfg->arch : "(null)",
                       (int)prec);
#if !IH_WITH_CUDA
    if (cfg->backend == MODEL_BACKEND_CUDA)
        return ih_fail(IH_E_CUDA, "model %s: this build has no CUDA backend (configure with "
                       "-DIH_WITH_CUDA=ON where nvcc and cuDNN are installed); use the CPU backend",
                       cfg->arch ? cfg->arch : "(null)");
#endif
    if (prec == MODEL_PREC_DEFAULT)
        prec = cfg->backend == MODEL_BACKEND_CUDA ? MODEL_PREC_BF16 : MODEL_PREC_FP32;
    if (cfg->max_batch < 1)
        return ih_fail(IH_E_USAGE, "model: max_batch %d must be >= 1", cfg->max_batch);
    model_net *m = calloc(1, sizeof *m);
    if (!m) return ih_fail(IH_E_SYS, "model: out of memory");
    ih_err err = IH_OK;
    m->cfg = *cfg;
    if (!(m->cfg.bn_momentum > 0)) m->cfg.bn_momentum = 0.1f;
    if (!(m->cfg.bn_eps > 0)) m->cfg.bn_eps = 1e-5f;
    IH_TRY_GOTO(model_graph_build(&m->g, cfg->arch, cfg->image_size, cfg->num_classes, base_width),
                err, fail);
    m->prec = prec;
    if (cfg->backend == MODEL_BACKEND_CPU)
        IH_TRY_GOTO(model_cpu_net_create(&m->exec, m->g, cfg->max_batch, m->cfg.bn_momentum,
                                         m->cfg.bn_eps), err, fail);
#if IH_WITH_CUDA
    else
        IH_TRY_GOTO(model_cuda_net_create(&m->cu, m->g, cfg->max_batch, m->cfg.bn_momentum,
                                          m->cfg.bn_eps, prec), err, fail);
#endif
    m->params = calloc(m->g->nparams, sizeof(float));
#if IH_WITH_CUDA
    if (m->cu) m->grads = model_cuda_host_grads(m->cu);
    else
#endif
        m->grads = calloc(m->g->nparams, sizeof(float));
    m->state = calloc(m->g->nstate + 1, sizeof(float));
    if (!m->params || !m->grads || !m->state) {
        err = ih_fail(IH_E_SYS, "model %s: out of memory for %zu parameters", cfg->arch,
                      m->g->nparams);
        goto fail;
    }
    m->min_bn_rows = 1 << 30;
    for (int i = 0; i < m->g->nlayers; i++)
        if (m->g->layers[i].op == MODEL_OP_BN) {
            const model_shape *s = &m->g->tensors[m->g->layers[i].in[0]];
            if (s->h * s->w < m->min_bn_rows) m->min_bn_rows = s->h * s->w;
        }
    model_init_params(m, 0);
    if (cfg->backend == MODEL_BACKEND_CPU) warn_generic_blas();
    IH_INFO(IH_LOG_MODEL, "model %s: %zu parameters in %d segments, %d layers, input %dx%d, "
            "%d classes, max batch %d, %s %s", cfg->arch, m->g->nparams, m->g->nsegs,
            m->g->nlayers, cfg->image_size, cfg->image_size, cfg->num_classes, cfg->max_batch,
            cfg->backend == MODEL_BACKEND_CUDA ? "cuda" : "cpu",
            prec == MODEL_PREC_BF16 ? "bf16" : prec == MODEL_PREC_FP16 ? "fp16" : "fp32");
    *out = m;
    return IH_OK;
fail:
    model_net_destroy(m);
    return err;
}

ih_err model_net_create_width(model_net **out, const model_cfg *cfg, int base_width)
{
    return model_net_create_full(out, cfg, base_width, MODEL_PREC_DEFAULT);
}

ih_err model_net_create(model_net **out, const model_cfg *cfg)
{
    return model_net_create_full(out, cfg, 0, MODEL_PREC_DEFAULT);
}

ih_err model_net_create_prec(model_net **out, const model_cfg *cfg, model_precision prec)
{
    return model_net_create_full(out, cfg, 0, prec);
}

int model_backend_available(model_backend b, char *why, size_t why_len)
{
    if (b == MODEL_BACKEND_CPU) return 1;
#if IH_WITH_CUDA
    if (b == MODEL_BACKEND_CUDA) return model_cuda_available(why, why_len);
#endif
    if (why) snprintf(why, why_len, "no CUDA device (this build has no CUDA backend)");
    return 0;
}

ih_err model_select_device(model_backend b, int local_rank)
{
    if (b == MODEL_BACKEND_CPU) return IH_OK;
#if IH_WITH_CUDA
    char why[256];
    int r = model_cuda_select_device(local_rank, why, sizeof why);
    if (r < 0) return ih_fail(IH_E_CUDA, "model: %s; use --backend cpu", why);
    if (r > 0)
        IH_WARN("model: local rank %d but only %d GPUs on this host: ranks share GPUs (start at most %d per node)",
                local_rank, r, r);
    return IH_OK;
#else
    (void)local_rank;
    return ih_fail(IH_E_CUDA, "model: this build has no CUDA backend; use --backend cpu");
#endif
}

model_backend model_net_backend(const model_net *m) { return m->cfg.backend; }
model_precision model_net_precision(const model_net *m) { return m->prec; }

const model_graph *model_net_graph(const model_net *m) { return m->g; }

void model_init_params(model_net *m, uint64_t seed)
{
    const model_graph *g = m->g;
    for (int s = 0; s < g->nsegs; s++) {
        float *p = m->params + g->segs[s].offset;
        size_t cnt = g->segs[s].count;
        switch (g->seg_init[s]) {
        case MODEL_INIT_NORMAL:
            for (size_t i = 0; i < cnt; i++) {
                ih_rng r = ih_rng_make(seed, (uint64_t)s, i);
                p[i] = (float)(g->seg_std[s] * ih_rng_normal(&r));
            }
            break;
        case MODEL_INIT_ONE:
            for (size_t i = 0; i < cnt; i++) p[i] = 1.0f;
            break;
        case MODEL_INIT_ZERO: memset(p, 0, cnt * sizeof(float)); break;
        }
    }
    for (int i = 0; i < g->nlayers; i++)
        if (g->layers[i].op == MODEL_OP_BN) {
            int c = g->tensors[g->layers[i].out].c;
            float *rm = m->state + g->layers[i].state_off;
            for (int j = 0; j < c; j++) {
                rm[j] = 0.0f;
                rm[c + j] = 1.0f;
            }
        }
    m->dev_stale_params = m->dev_stale_state = 1;
    m->host_stale_params = m->host_stale_state = 0;
}

#if IH_WITH_CUDA
/* Device -> host view when the device is newer; the view may then be written. A failed copy
 * leaves no usable view, and these accessors cannot return an error: abort with the cause. */
static void pull(model_net *m, int *host_stale, int *dev_stale, ih_err (*get)(model_cuda_net *, float *),
                 float *dst, const char *what)
{
    if (!m->cu) return;
    if (*host_stale) {
        ih_err e = get(m->cu, dst);
        IH_ASSERT(e == IH_OK, "model: copying the %s from the GPU failed: %s", what, ih_last_error());
        *host_stale = 0;
    }
    *dev_stale = 1;
}

/* Host views that may have been written -> device, before the device uses them. */
static ih_err push(model_net *m)
{
    if (m->dev_stale_params) IH_TRY(model_cuda_put_params(m->cu, m->params));
    if (m->dev_stale_grads) IH_TRY(model_cuda_put_grads(m->cu, m->grads));
    if (m->dev_stale_state) IH_TRY(model_cuda_put_state(m->cu, m->state));
    if (m->opt && m->dev_stale_mom) IH_TRY(model_cuda_put_momentum(m->cu, optim_sgd_momentum(m->opt)));
    m->dev_stale_params = m->dev_stale_grads = m->dev_stale_state = m->dev_stale_mom = 0;
    return IH_OK;
}
#endif

float *model_params(model_net *m)
{
#if IH_WITH_CUDA
    pull(m, &m->host_stale_params, &m->dev_stale_params, model_cuda_get_params, m->params, "parameters");
#endif
    m->dev_stale_params = 1;
    return m->params;
}

float *model_grads(model_net *m)
{
#if IH_WITH_CUDA
    pull(m, &m->host_stale_grads, &m->dev_stale_grads, model_cuda_get_grads, m->grads, "gradients");
#endif
    return m->grads;
}

size_t model_num_params(const model_net *m) { return m->g->nparams; }

float *model_state(model_net *m)
{
#if IH_WITH_CUDA
    pull(m, &m->host_stale_state, &m->dev_stale_state, model_cuda_get_state, m->state,
         "BN running statistics");
#endif
    return m->state;
}
size_t model_num_state(const model_net *m) { return m->g->nstate; }

size_t model_param_segments(const model_net *m, const model_param_seg **segs)
{
    if (segs) *segs = m->g->segs;
    return (size_t)m->g->nsegs;
}

void model_zero_grads(model_net *m)
{
#if IH_WITH_CUDA
    if (m->cu) { /* on the device only: the host mirror is fetched if someone asks */
        ih_err e = model_cuda_zero_grads(m->cu);
        IH_ASSERT(e == IH_OK, "model: zeroing the GPU gradients failed: %s", ih_last_error());
        m->dev_stale_grads = 0;
        m->host_stale_grads = 1;
        return;
    }
#endif
    memset(m->grads, 0, m->g->nparams * sizeof(float));
}

void model_set_grad_ready(model_net *m, model_grad_ready_fn fn, void *arg)
{
    m->ready = fn;
    m->ready_arg = arg;
}

void model_set_grad_host(model_net *m, int on) { m->grad_host = on != 0; }

ih_err model_device_grads(model_net *m, model_dev_grads *out)
{
    memset(out, 0, sizeof *out);
#if IH_WITH_CUDA
    if (m->cu)
        return model_cuda_device_view(m->cu, &out->grads, &out->stream, &out->device, &out->devices, out->uuid);
#endif
    return ih_fail(IH_E_USAGE, "model %s: the CPU backend has no device gradients", m->cfg.arch);
}

ih_err model_upload_grads(model_net *m, size_t lo, size_t hi)
{
#if IH_WITH_CUDA
    if (m->cu && !m->grad_host) /* the host view is not this step's: it would overwrite the device's */
        return ih_fail(IH_E_USAGE, "model %s: model_upload_grads without model_set_grad_host on", m->cfg.arch);
    if (m->cu) return model_cuda_upload_grads(m->cu, lo, hi);
#endif
    (void)m;
    (void)lo;
    (void)hi;
    return IH_OK;
}

ih_err model_grads_uploaded(model_net *m)
{
#if IH_WITH_CUDA
    if (m->cu) {
        if (!m->grad_host)
            return ih_fail(IH_E_USAGE, "model %s: model_grads_uploaded without model_set_grad_host on", m->cfg.arch);
        IH_TRY(model_cuda_join_uploads(m->cu));
        m->dev_stale_grads = 0;  /* the uploads carried the host view's writes */
        m->host_stale_grads = 0; /* and the device holds what the host view does */
    }
#else
    (void)m;
#endif
    return IH_OK;
}

/* Ordinary memory for model_host_alloc, with a header word before the 64-byte-aligned block
 * that says which kind it is (so model_host_free needs no CUDA query). */
enum { HOST_PLAIN = 0x504c4e31, HOST_PINNED = 0x50494e31, HOST_HDR = 64 };

void *model_host_alloc(model_backend b, size_t bytes)
{
#if IH_WITH_CUDA
    if (b == MODEL_BACKEND_CUDA) {
        unsigned char *p = model_cuda_host_alloc(bytes + HOST_HDR);
        if (p) {
            *(unsigned *)p = HOST_PINNED;
            return p + HOST_HDR;
        }
        static int warned;
        if (!warned++)
            IH_WARN("model: page-locked host memory for the input batches was refused (%zu B; raise "
                    "`ulimit -l`?): using ordinary memory, each batch then goes through a staging copy",
                    bytes);
    }
#else
    (void)b;
#endif
    unsigned char *p = aligned_alloc(64, (bytes + HOST_HDR + 63) / 64 * 64);
    if (!p) return NULL;
    *(unsigned *)p = HOST_PLAIN;
    return p + HOST_HDR;
}

void model_host_free(model_backend b, void *ptr)
{
    (void)b;
    if (!ptr) return;
    unsigned char *p = (unsigned char *)ptr - HOST_HDR;
#if IH_WITH_CUDA
    if (*(unsigned *)p == HOST_PINNED) {
        model_cuda_host_free(p);
        return;
    }
#endif
    IH_ASSERT(*(unsigned *)p == HOST_PLAIN, "model_host_free(%p): not from model_host_alloc", ptr);
    free(p);
}

ih_err model_bind_thread(model_net *m)
{
#if IH_WITH_CUDA
    if (m->cu) return model_cuda_bind_thread(m->cu);
#else
    (void)m;
#endif
    return IH_OK;
}

ih_err model_sgd_step(model_net *m, optim_sgd *o, double lr)
{
    if (optim_sgd_size(o) != m->g->nparams)
        return ih_fail(IH_E_USAGE, "model %s: optimizer for %zu parameters, the model has %zu",
                       m->cfg.arch, optim_sgd_size(o), m->g->nparams);
#if IH_WITH_CUDA
    if (m->cu) {
        if (m->opt != o) { /* bind o: its momentum becomes the host mirror of the device's */
            if (m->opt && m->host_stale_mom)
                IH_TRY(model_cuda_get_momentum(m->cu, optim_sgd_momentum(m->opt)));
            const optim_seg *segs;
            size_t ns = optim_sgd_segments(o, &segs);
            IH_TRY(model_cuda_sgd_setup(m->cu, segs, ns, optim_sgd_config(o)->weight_decay));
            m->opt = o;
            m->dev_stale_mom = 1;
            m->host_stale_mom = 0;
        }
        IH_TRY(push(m)); /* gradients written on the host (allreduce), momentum, ... */
        const optim_sgd_plan p = optim_sgd_plan_step(o, lr);
        IH_TRY(model_cuda_sgd_step(m->cu, &p));
        m->host_stale_params = m->host_stale_mom = 1;
        return IH_OK;
    }
#endif
    optim_sgd_step(o, m->params, m->grads, lr);
    return IH_OK;
}

float *model_sgd_momentum(model_net *m, optim_sgd *o)
{
#if IH_WITH_CUDA
    if (m->cu && m->opt == o)
        pull(m, &m->host_stale_mom, &m->dev_stale_mom, model_cuda_get_momentum, optim_sgd_momentum(o),
             "momentum");
#else
    (void)m;
#endif
    return optim_sgd_momentum(o);
}

double model_loss_scale(model_net *m, int64_t *skipped_steps)
{
    double s = 1;
    if (skipped_steps) *skipped_steps = 0;
#if IH_WITH_CUDA
    if (m->cu) {
        ih_err e = model_cuda_loss_scale(m->cu, &s, skipped_steps);
        IH_ASSERT(e == IH_OK, "model: reading the fp16 loss scale failed: %s", ih_last_error());
    }
#else
    (void)m;
#endif
    return s;
}

ih_err model_set_loss_scale(model_net *m, double scale)
{
#if IH_WITH_CUDA
    if (m->cu) return model_cuda_set_loss_scale(m->cu, scale);
#endif
    (void)scale;
    return ih_fail(IH_E_USAGE, "model %s: a loss scale applies to fp16 nets only", m->cfg.arch);
}

ih_err model_sync(model_net *m)
{
#if IH_WITH_CUDA
    if (m->cu) return model_cuda_sync(m->cu);
#else
    (void)m;
#endif
    return IH_OK;
}

static ih_err check_batch(const model_net *m, const void *images, int n)
{
    if (!images)
        return ih_fail(IH_E_USAGE, "model %s: images is NULL", m->cfg.arch);
    if (n < 1 || n > m->cfg.max_batch)
        return ih_fail(IH_E_USAGE, "model %s: batch of %d images outside [1, max_batch=%d]; "
                       "raise max_batch at create", m->cfg.arch, n, m->cfg.max_batch);
    return IH_OK;
}

ih_err model_train_step(model_net *m, const uint8_t *images, const int32_t *labels, int n,
                        float loss_scale, double *loss_sum, int *correct)
{
    IH_TRY(check_batch(m, images, n));
    if (!labels) return ih_fail(IH_E_USAGE, "model %s: labels is NULL", m->cfg.arch);
    if ((long)n * m->min_bn_rows < 2)
        return ih_fail(IH_E_USAGE, "model %s: training BatchNorm needs more than one value per "
                       "channel; batch %d at image size %d has a 1x1 feature map: use a batch "
                       ">= 2", m->cfg.arch, n, m->cfg.image_size);
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= m->cfg.num_classes)
            return ih_fail(IH_E_DATA, "model %s: label %d of sample %d (of %d) is outside [0, %d); "
                           "check the dataset's labels against --num-classes", m->cfg.arch,
                           (int)labels[i], i, n, m->cfg.num_classes);
#if IH_WITH_CUDA
    if (m->cu) {
        IH_TRY(push(m));
        const int to_host = m->ready && m->grad_host;
        IH_TRY(model_cuda_train_step(m->cu, images, labels, n, loss_scale, loss_sum, correct,
                                     m->ready, m->ready_arg, to_host));
        m->host_stale_state = 1;
        /* to_host: the whole host view now holds this step's gradients, handed to the callback's
         * consumer, who may write it (an allreduce): it is the authoritative copy now */
        m->host_stale_grads = !to_host;
        m->dev_stale_grads = to_host;
        return IH_OK;
    }
#endif
    model_cpu_forward(m->exec, m->params, m->state, images, n, 1);
    model_cpu_loss(m->exec, labels, n, loss_scale, loss_sum, correct);
    model_cpu_backward(m->exec, m->params, m->grads, n, m->ready, m->ready_arg);
    return IH_OK;
}

ih_err model_eval_logits(model_net *m, const uint8_t *images, int n, float *logits)
{
    IH_TRY(check_batch(m, images, n));
    if (!logits) return ih_fail(IH_E_USAGE, "model %s: logits is NULL", m->cfg.arch);
#if IH_WITH_CUDA
    if (m->cu) {
        IH_TRY(push(m));
        return model_cuda_eval_logits(m->cu, images, n, logits);
    }
#endif
    model_cpu_forward(m->exec, m->params, m->state, images, n, 0);
    memcpy(logits, model_cpu_logits(m->exec), (size_t)n * m->cfg.num_classes * sizeof(float));
    return IH_OK;
}
