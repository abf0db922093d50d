/* trainer/checkpoint.c — see checkpoint.h. */
#define _GNU_SOURCE
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CKPT_MAGIC "IH1HCKPT"
#define CKPT_VERSION 1u

typedef struct {
    char magic[8];
    uint32_t version, header_size;
    char arch[32];
    int32_t num_classes, image_size;
    int64_t epoch, batch_in_epoch, iter;
    double prev_lr;
    uint64_t seed;
    uint64_t n_params, n_state, n_momentum;
    uint64_t checksum;
    int32_t world, accumulate, batch; /* zero in older files (the space was padding) */
    uint8_t pad[20];
} ckpt_header;
_Static_assert(sizeof(ckpt_header) == 160, "checkpoint header is 160 bytes on disk");

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t payload_sum(const float *a, size_t na, const float *b, size_t nb, const float *c, size_t nc)
{
    uint64_t h = 0xcbf29ce484222325ull;
    h = fnv1a(h, a, na * sizeof(float));
    h = fnv1a(h, b, nb * sizeof(float));
    if (c) h = fnv1a(h, c, nc * sizeof(float));
    return h;
}

static ih_err write_all(int fd, const void *p, size_t n, const char *path)
{
    const char *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return ih_fail(IH_E_SYS, "writing checkpoint %s: %s (is the disk full?)", path, strerror(errno));
        b += w;
        n -= (size_t)w;
    }
    return IH_OK;
}

/* Finishes an atomic write: fsync and close `fd` (the fully written `tmp`), rename it over
 * `path` and fsync the directory so the rename itself survives a crash. Closes fd in every
 * case; on failure removes tmp and leaves whatever was at `path` untouched. */
static ih_err commit_tmp(int fd, const char *tmp, const char *path)
{
    ih_err e = IH_OK;
    if (fsync(fd)) e = ih_fail(IH_E_SYS, "fsync %s: %s", tmp, strerror(errno));
    if (close(fd) && e == IH_OK) e = ih_fail(IH_E_SYS, "close %s: %s", tmp, strerror(errno));
    if (e == IH_OK && rename(tmp, path)) e = ih_fail(IH_E_SYS, "rename %s -> %s: %s", tmp, path, strerror(errno));
    if (e != IH_OK) {
        unlink(tmp);
        return e;
    }
    char dir[1100];
    snprintf(dir, sizeof dir, "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return IH_OK;
}

ih_err ckpt_save(const char *path, const ckpt_meta *m, const float *params, const float *state,
                 const float *momentum)
{
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    ckpt_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, CKPT_MAGIC, 8);
    h.version = CKPT_VERSION;
    h.header_size = sizeof h;
    snprintf(h.arch, sizeof h.arch, "%s", m->arch);
    h.num_classes = m->num_classes;
    h.image_size = m->image_size;
    h.epoch = m->epoch;
    h.batch_in_epoch = m->batch_in_epoch;
    h.iter = m->iter;
    h.prev_lr = m->prev_lr;
    h.seed = m->seed;
    h.n_params = m->n_params;
    h.n_state = m->n_state;
    h.n_momentum = m->n_momentum;
    h.world = m->world;
    h.accumulate = m->accumulate;
    h.batch = m->batch;
    h.checksum = payload_sum(params, m->n_params, state, m->n_state, momentum, m->n_momentum);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ih_fail(IH_E_SYS, "cannot create checkpoint %s: %s", tmp, strerror(errno));
    ih_err e;
    IH_TRY_GOTO(write_all(fd, &h, sizeof h, tmp), e, fail);
    IH_TRY_GOTO(write_all(fd, params, m->n_params * sizeof(float), tmp), e, fail);
    IH_TRY_GOTO(write_all(fd, state, m->n_state * sizeof(float), tmp), e, fail);
    if (m->n_momentum) IH_TRY_GOTO(write_all(fd, momentum, m->n_momentum * sizeof(float), tmp), e, fail);
    return commit_tmp(fd, tmp, path);
fail:
    close(fd);
    unlink(tmp);
    return e;
}

static ih_err read_header(FILE *f, const char *path, ckpt_header *h)
{
    if (fread(h, sizeof *h, 1, f) != 1 || memcmp(h->magic, CKPT_MAGIC, 8))
        return ih_fail(IH_E_DATA, "%s is not an imagenet-1h checkpoint (bad magic or too short)", path);
    if (h->version != CKPT_VERSION || h->header_size != sizeof *h)
        return ih_fail(IH_E_DATA, "%s is checkpoint version %u; this build reads version %u", path, h->version, CKPT_VERSION);
    h->arch[sizeof h->arch - 1] = 0;
    return IH_OK;
}

ih_err ckpt_read_meta(const char *path, ckpt_meta *m)
{
    FILE *f = fopen(path, "rb");
    if (!f) return ih_fail(IH_E_USAGE, "cannot open checkpoint %s: %s", path, strerror(errno));
    ckpt_header h;
    ih_err e = read_header(f, path, &h);
    fclose(f);
    if (e) return e;
    memset(m, 0, sizeof *m);
    snprintf(m->arch, sizeof m->arch, "%s", h.arch);
    m->num_classes = h.num_classes;
    m->image_size = h.image_size;
    m->epoch = h.epoch;
    m->batch_in_epoch = h.batch_in_epoch;
    m->iter = h.iter;
    m->prev_lr = h.prev_lr;
    m->seed = h.seed;
    m->n_params = h.n_params;
    m->n_state = h.n_state;
    m->n_momentum = h.n_momentum;
    m->world = h.world;
    m->accumulate = h.accumulate;
    m->batch = h.batch;
    return IH_OK;
}

ih_err ckpt_load(const char *path, const ckpt_meta *m, float *params, float *state, float *momentum)
{
    FILE *f = fopen(path, "rb");
    if (!f) return ih_fail(IH_E_USAGE, "cannot open checkpoint %s: %s", path, strerror(errno));
    ckpt_header h;
    ih_err e = read_header(f, path, &h);
    if (e) { fclose(f); return e; }
    if (h.n_params != m->n_params || h.n_state != m->n_state) {
        fclose(f);
        return ih_fail(IH_E_DATA, "%s holds %llu parameters, the model has %llu", path,
                       (unsigned long long)h.n_params, (unsigned long long)m->n_params);
    }
    int ok = fread(params, sizeof(float), h.n_params, f) == h.n_params &&
             fread(state, sizeof(float), h.n_state, f) == h.n_state;
    float *mom = momentum;
    float *scratch = NULL;
    if (ok && h.n_momentum) {
        if (!mom) mom = scratch = malloc(h.n_momentum * sizeof(float));
        ok = mom && fread(mom, sizeof(float), h.n_momentum, f) == h.n_momentum;
    }
    fclose(f);
    uint64_t sum = ok ? payload_sum(params, h.n_params, state, h.n_state, h.n_momentum ? mom : NULL, h.n_momentum) : 0;
    free(scratch);
    if (!ok) return ih_fail(IH_E_DATA, "%s is truncated; use an earlier checkpoint", path);
    if (sum != h.checksum) return ih_fail(IH_E_DATA, "%s is corrupt (checksum mismatch); use an earlier checkpoint", path);
    return IH_OK;
}

ih_err ckpt_save_safetensors(const char *path, const ckpt_tensor *t, size_t n)
{
    /* Header: {"name":{"dtype":"F32","shape":[..],"data_offsets":[b,e]},...}, padded with
     * spaces to a multiple of 8 bytes as the format recommends. */
    size_t cap = 256 + n * 256, len = 0, off = 0;
    char *hdr = malloc(cap);
    if (!hdr) return ih_fail(IH_E_SYS, "out of memory (safetensors header)");
    len += (size_t)snprintf(hdr + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = 0; i < n; i++) {
        if (strlen(t[i].name) > 160) { free(hdr); return ih_fail(IH_E_INTERNAL, "tensor name too long: %s", t[i].name); }
        len += (size_t)snprintf(hdr + len, cap - len, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[", t[i].name);
        for (int d = 0; d < 4 && t[i].shape[d]; d++)
            len += (size_t)snprintf(hdr + len, cap - len, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        len += (size_t)snprintf(hdr + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", off, off + t[i].count * sizeof(float));
        off += t[i].count * sizeof(float);
    }
    len += (size_t)snprintf(hdr + len, cap - len, "}");
    while (len % 8) hdr[len++] = ' ';
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) { free(hdr); return ih_fail(IH_E_SYS, "cannot create %s: %s", tmp, strerror(errno)); }
    ih_err e;
    uint64_t hl = len;
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)(hl >> (8 * i));
    IH_TRY_GOTO(write_all(fd, le, 8, tmp), e, fail);
    IH_TRY_GOTO(write_all(fd, hdr, len, tmp), e, fail);
    for (size_t i = 0; i < n; i++) IH_TRY_GOTO(write_all(fd, t[i].data, t[i].count * sizeof(float), tmp), e, fail);
    free(hdr);
    return commit_tmp(fd, tmp, path);
fail:
    close(fd);
    unlink(tmp);
    free(hdr);
    return e;
}
