/* pipeline/loader.h — the input pipeline as the trainer sees it.
 *
 * A loader reads one LMDB of Caffe Datum records (encoded JPEG + label), and produces
 * batches of `batch` uint8 HWC images (crop x crop x 3, RGB) and int32 labels, strictly in
 * order, from `threads` long-lived decode threads writing into a ring of preallocated slots.
 *
 * Train mode: one permutation of [0, N) per epoch, a pure function of (seed, epoch); the
 * epoch has floor(N / (world*batch)) global batches (the remainder of the permutation is
 * dropped, so every worker sees the same number of batches); worker `rank` takes items
 * [g*world*batch + rank*batch, +batch) of the permutation for global batch g. Each sample
 * gets RandomResizedCrop + horizontal flip from the RNG keyed (seed, epoch, sample index),
 * then, when switched on, fb.resnet.torch's colour jitter and PCA lighting (augment.h) from
 * the colour stream of the same key.
 * Eval mode: records in index order, shard `rank` of `world` takes records i with
 * i % world == rank; the last batch may be short; resize shorter side then center crop.
 *
 * Threads: create/destroy/start_epoch/next/release are called by one consumer thread.
 */
#ifndef PIPE_LOADER_H
#define PIPE_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct pipe_loader pipe_loader;

typedef struct {
    const char *lmdb_path; /* directory of an LMDB environment */
    int batch;             /* images per batch on this worker (n) */
    int threads;           /* decode threads (>= 1) */
    int crop;              /* output side in pixels (224 default) */
    int train;             /* 1: random resized crop + flip; 0: resize + center crop */
    int resize;            /* eval: shorter side before the center crop (256 for crop 224) */
    float min_scale, max_scale;   /* RandomResizedCrop area fraction (0.08, 1.0) */
    float min_aspect, max_aspect; /* RandomResizedCrop aspect ratio (3/4, 4/3) */
    uint64_t seed;
    int rank, world;       /* this worker's shard */
    int slots;             /* batches in flight (ring size, >= 2) */
    /* Train augmentation switches (fields added after the first release: pipe_cfg_defaults
     * sets them; fb.resnet.torch uses flip 1, jitter 0.4/0.4/0.4, lighting 0.1). */
    int flip;              /* 1: random horizontal flip, p = 0.5 */
    float brightness, contrast, saturation; /* colour jitter strengths; 0: off */
    float lighting;        /* PCA lighting alpha std; 0: off */
    /* Slot memory (images and labels of the ring), e.g. cudaHostAlloc'd pinned memory so
     * batches can be copied to the GPU asynchronously. NULL: malloc/free. alloc returns
     * memory aligned to at least 64 bytes or NULL; both are called only from
     * pipe_loader_create/destroy, on the caller's thread. */
    void *(*slot_alloc)(void *ctx, size_t bytes);
    void (*slot_free)(void *ctx, void *p);
    void *slot_ctx;
} pipe_cfg;

/* Defaults: crop 224, resize 256, scale (0.08,1), aspect (3/4,4/3), flip on, no colour
 * jitter or lighting, 1 thread, 4 slots, rank 0 of 1, train, malloc'd slots. Caller sets
 * lmdb_path and batch. */
void pipe_cfg_defaults(pipe_cfg *c);

typedef struct {
    uint8_t *images;       /* n * crop * crop * 3 bytes, HWC RGB; owned by the loader */
    int32_t *labels;       /* n labels */
    int n;                 /* images in this batch (0: epoch finished) */
    int64_t index;         /* batch index within the epoch */
    int slot;              /* internal */
} pipe_batch;

/* Opens the LMDB and starts the decode threads (idle until start_epoch).
 * IH_E_USAGE: missing path / not an LMDB; IH_E_DATA: an LMDB that holds no Datum records.
 * The message names the path and what to do. */
ih_err pipe_loader_create(pipe_loader **out, const pipe_cfg *cfg);
/* Stops and joins the threads, frees everything. NULL is a no-op. */
void pipe_loader_destroy(pipe_loader *l);

/* Number of records in the LMDB. */
int64_t pipe_loader_num_records(const pipe_loader *l);
/* Number of classes: 1 + the largest label seen (read at create). */
int pipe_loader_num_classes(const pipe_loader *l);
/* Batches this worker gets in one epoch. */
int64_t pipe_loader_batches_per_epoch(const pipe_loader *l);

/* Begins epoch `epoch` at batch `first_batch` (0, or a later one to resume mid-epoch).
 * Any batches of a previous epoch not yet taken are discarded. */
ih_err pipe_loader_start_epoch(pipe_loader *l, int epoch, int64_t first_batch);

/* Blocks until the next batch in order is ready; out->n == 0 at the end of the epoch.
 * The batch's memory stays valid until pipe_loader_release. At most slots-1 batches may be
 * held at once. */
ih_err pipe_loader_next(pipe_loader *l, pipe_batch *out);
void pipe_loader_release(pipe_loader *l, pipe_batch *b);

/* Records that could not be decoded so far (each reported once and replaced). */
int64_t pipe_loader_bad_records(const pipe_loader *l);

/* What the current (or last) epoch delivered, for the epoch summary. */
typedef struct {
    int epoch;
    int64_t batches, images;   /* delivered by pipe_loader_next since start_epoch */
    int64_t replaced;          /* samples of this epoch whose record was undecodable and
                                  was replaced by the next decodable one */
    int64_t bad_records;       /* distinct bad records seen since create */
    double wait_s;             /* time pipe_loader_next blocked waiting for batches */
} pipe_epoch_stats;

/* Fills *out. The loader also logs these as one INFO line (subsystem PIPE) when the epoch's
 * last batch has been taken. Consumer thread; does not block beyond a mutex. */
void pipe_loader_epoch_stats(const pipe_loader *l, pipe_epoch_stats *out);

#endif
