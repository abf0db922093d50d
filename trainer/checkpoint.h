/* trainer/checkpoint.h — atomic, self-checking checkpoints for exact resume.
 *
 * File layout (little-endian, as written by the host): a fixed 160-byte header (magic
 * "IH1HCKPT", version, arch, classes, image size, position, sizes, previous lr, seed and an
 * FNV-1a 64 checksum of the payload), then the payload: parameters, BN running state and
 * momentum, each as float32 arrays. Written to PATH.tmp, fsync'ed, renamed over PATH and the
 * directory fsync'ed, so a crash leaves either the old or the new checkpoint, never half of one.
 */
#ifndef TRAINER_CHECKPOINT_H
#define TRAINER_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct {
    char arch[32];
    int32_t num_classes;
    int32_t image_size;
    int64_t epoch;          /* epoch to run next */
    int64_t batch_in_epoch; /* first batch of that epoch still to run */
    int64_t iter;           /* global iterations done */
    double prev_lr;         /* lr of the last step (momentum correction) */
    uint64_t seed;
    uint64_t n_params, n_state, n_momentum;
    int32_t world, accumulate, batch; /* the run's k, V, n (0 in checkpoints of older builds) */
} ckpt_meta;

/* Writes meta + arrays atomically to `path`. IH_E_SYS naming the path on any I/O failure
 * (the old checkpoint, if any, is left intact). */
ih_err ckpt_save(const char *path, const ckpt_meta *meta, const float *params, const float *state,
                 const float *momentum);

/* Reads the header of `path` into *meta. IH_E_USAGE if missing, IH_E_DATA if not a checkpoint
 * or of another version (the message names the file). */
ih_err ckpt_read_meta(const char *path, ckpt_meta *meta);

/* Reads the arrays; sizes must equal meta's (the caller checks them against its model first).
 * `momentum` may be NULL (eval). IH_E_DATA on a short file or checksum mismatch. */
ih_err ckpt_load(const char *path, const ckpt_meta *meta, float *params, float *state, float *momentum);

/* Writes the parameters as a .safetensors file for PyTorch users (safetensors.torch.load_file):
 * an 8-byte little-endian header length, a JSON header with one entry per parameter segment
 * {"dtype":"F32","shape":[...],"data_offsets":[begin,end]} (plus the BN running statistics
 * under their PyTorch names when `state` is given), then the raw float32 data. Names are the
 * model's segment names with PyTorch's weight/bias for BN gamma/beta. Atomic like ckpt_save.
 * `names`/`offsets`/`counts`/`shapes` describe n tensors of `data` (shapes: up to 4 dims,
 * 0-terminated). */
typedef struct {
    const char *name;
    const float *data;
    size_t count;
    int64_t shape[4];
} ckpt_tensor;
ih_err ckpt_save_safetensors(const char *path, const ckpt_tensor *t, size_t n);

#endif
