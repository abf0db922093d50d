/* pipeline/loader.c — decode threads, the slot ring and in-order delivery (see loader.h).
 *
 * Work distribution: batches are issued to free slots in batch order; decode threads claim
 * chunks of PIPE_CHUNK samples of the lowest-numbered filling batch, decode each sample
 * straight into its place in the slot, and the thread that finishes a batch marks it ready.
 * The consumer takes batches strictly in order. A sample's bytes depend only on (seed,
 * epoch, record), never on the thread, so any thread count gives the same batches.
 *
 * Undecodable records are replaced by the next decodable record (index+1, +2, ... mod N),
 * with the original sample's crop/flip/colour draws; each is reported once (IH_WARN) and
 * counted (distinct records since create, replacements per epoch).
 * LMDB failures, out-of-range labels and PIPE_MAX_REPLACE bad records in a row are sticky
 * errors: recorded once, every waiter woken, and returned by every later pipe_loader_next.
 *
 * Locking: one mutex `mu` guards all shared state below; decode work runs unlocked on
 * samples the thread has claimed. Every wait is a timed wait that rechecks shutdown.
 */
#include "loader.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/thread.h"
#include "db.h"
#include "augment.h"
#include "decode.h"
#include "record.h"
#include "shuffle.h"

enum { PIPE_CHUNK = 4, PIPE_MAX_REPLACE = 64, PIPE_WAIT_MS = 200 };
#define PIPE_NEXT_TIMEOUT_S 600.0

enum slot_state { SLOT_FREE, SLOT_FILLING, SLOT_READY, SLOT_HELD };

typedef struct {
    uint8_t *images;
    int32_t *labels;
    /* all fields below guarded by mu */
    enum slot_state state;
    uint64_t gen;
    int64_t batch;
    int n, claimed, done;
} slot;

typedef struct {
    pipe_loader *l;
    int id;
    pipe_decoder *dec;    /* owner: this worker */
    pipe_db_reader *rd;   /* owner: this worker (MDB_NOTLS txn) */
} worker;

struct pipe_loader {
    pipe_cfg cfg;
    char *path;
    pipe_db *db;
    int64_t n_records;
    int num_classes;
    size_t img_bytes;
    uint32_t *perm;        /* written by start_epoch while no sample is in flight */

    pthread_mutex_t mu;
    pthread_cond_t work_cv;  /* workers: a slot became free or an epoch started */
    pthread_cond_t ready_cv; /* consumer: a batch became ready, or an error */
    pthread_cond_t idle_cv;  /* start_epoch: inflight dropped to 0 */
    int shutdown;            /* guarded by mu */
    int active;              /* guarded by mu: an epoch is running */
    uint64_t gen;            /* guarded by mu: bumped by every start_epoch */
    int epoch;               /* guarded by mu */
    int64_t nbatches;        /* batches in this worker's epoch (fixed after create) */
    int64_t next_issue;      /* guarded by mu */
    int64_t next_deliver;    /* guarded by mu */
    int inflight;            /* guarded by mu: chunks being decoded */
    ih_err err;              /* guarded by mu: sticky first error */
    char errmsg[1024];       /* guarded by mu */
    uint8_t *bad_seen;       /* guarded by mu: per record, reported already */
    int64_t bad_count;       /* guarded by mu */
    int64_t ep_replaced;     /* guarded by mu: replacements in this epoch */
    int64_t ep_batches, ep_images; /* guarded by mu */
    double ep_wait_s;        /* guarded by mu */
    int ep_logged;           /* guarded by mu */

    slot *slots;
    int nslots;
    worker *workers;
    pthread_t *threads;
    int nthreads;            /* started */
};

void pipe_cfg_defaults(pipe_cfg *c)
{
    memset(c, 0, sizeof *c);
    c->batch = 0;
    c->threads = 1;
    c->crop = 224;
    c->train = 1;
    c->resize = 256;
    c->min_scale = 0.08f;
    c->max_scale = 1.0f;
    c->min_aspect = 3.0f / 4.0f;
    c->max_aspect = 4.0f / 3.0f;
    c->seed = 0;
    c->rank = 0;
    c->world = 1;
    c->slots = 4;
    c->flip = 1;
}

static void *slot_alloc(const pipe_cfg *c, size_t n)
{
    if (c->slot_alloc) return c->slot_alloc(c->slot_ctx, n);
    void *p = NULL;
    return posix_memalign(&p, 64, n) ? NULL : p;
}

static void slot_free(const pipe_cfg *c, void *p)
{
    if (!p) return;
    if (c->slot_free) c->slot_free(c->slot_ctx, p);
    else free(p);
}

static ih_err check_cfg(const pipe_cfg *c)
{
    if (!c->lmdb_path) return ih_fail(IH_E_USAGE, "pipe_cfg.lmdb_path is not set");
    if (c->batch < 1) return ih_fail(IH_E_USAGE, "batch size %d: must be >= 1", c->batch);
    if (c->threads < 1 || c->threads > 256) return ih_fail(IH_E_USAGE, "decode threads %d: must be 1..256", c->threads);
    if (c->crop < 1 || c->crop > 4096) return ih_fail(IH_E_USAGE, "crop %d: must be 1..4096", c->crop);
    if (c->slots < 2) return ih_fail(IH_E_USAGE, "ring slots %d: must be >= 2", c->slots);
    if (c->world < 1 || c->rank < 0 || c->rank >= c->world)
        return ih_fail(IH_E_USAGE, "rank %d of world %d: need 0 <= rank < world", c->rank, c->world);
    if (c->train) {
        if (!(c->min_scale > 0 && c->min_scale <= c->max_scale && c->max_scale <= 1))
            return ih_fail(IH_E_USAGE, "crop scale (%g, %g): need 0 < min <= max <= 1", c->min_scale, c->max_scale);
        if (!(c->min_aspect > 0 && c->min_aspect <= c->max_aspect))
            return ih_fail(IH_E_USAGE, "crop aspect (%g, %g): need 0 < min <= max", c->min_aspect, c->max_aspect);
        if (!(c->brightness >= 0 && c->brightness <= 1 && c->contrast >= 0 && c->contrast <= 1 &&
              c->saturation >= 0 && c->saturation <= 1 && c->lighting >= 0 && c->lighting <= 10))
            return ih_fail(IH_E_USAGE, "colour jitter (%g, %g, %g) / lighting %g: need jitter in [0, 1], lighting "
                           "in [0, 10] (fb.resnet.torch: 0.4 and 0.1)", c->brightness, c->contrast, c->saturation,
                           c->lighting);
    } else if (c->resize < 1) {
        return ih_fail(IH_E_USAGE, "eval resize %d: must be >= 1", c->resize);
    }
    return IH_OK;
}

/* Records the first error (code + this thread's message) and wakes everyone. Locks mu. */
static void set_error(pipe_loader *l, ih_err e)
{
    pthread_mutex_lock(&l->mu);
    if (l->err == IH_OK) {
        l->err = e;
        snprintf(l->errmsg, sizeof l->errmsg, "%s", ih_last_error());
    }
    pthread_cond_broadcast(&l->ready_cv);
    pthread_cond_broadcast(&l->idle_cv);
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
}

static void report_bad(pipe_loader *l, int64_t rec, const char *reason)
{
    int fresh = 0;
    pthread_mutex_lock(&l->mu);
    if (!l->bad_seen[rec]) {
        l->bad_seen[rec] = 1;
        l->bad_count++;
        fresh = 1;
    }
    pthread_mutex_unlock(&l->mu);
    if (fresh) {
        char key[64];
        pipe_db_key(l->db, rec, key, sizeof key);
        IH_WARN("record %lld (key %s) in %s: %s; replaced by the next decodable record", (long long)rec, key,
                l->path, reason);
    }
}

/* Decodes the sample for record `rec` (or its replacement) into img/label. Returns IH_OK
 * or a sticky-class error. */
static ih_err decode_sample(worker *w, int epoch, int64_t rec, uint8_t *img, int32_t *label)
{
    pipe_loader *l = w->l;
    const pipe_cfg *c = &l->cfg;
    char reason[512];
    for (int t = 0; t < PIPE_MAX_REPLACE; t++) {
        int64_t r = (rec + t) % l->n_records;
        const uint8_t *val;
        size_t len;
        pipe_datum dm;
        int W, H;
        IH_TRY(pipe_db_get(w->rd, r, &val, &len));
        ih_err e = pipe_datum_decode(val, len, &dm);
        if (e == IH_OK && !dm.has_data) e = ih_fail(IH_E_DATA, "Datum without data (raw float_data is not supported)");
        if (e == IH_OK) e = pipe_decoder_open(w->dec, dm.data, dm.size, &W, &H);
        if (e == IH_OK) {
            pipe_crop box;
            if (c->train) {
                pipe_rrc p = {c->min_scale, c->max_scale, c->min_aspect, c->max_aspect};
                pipe_crop_train(c->seed, (uint64_t)epoch, (uint64_t)rec, W, H, &p, &box);
                if (!c->flip) box.flip = 0;
            } else {
                pipe_crop_eval(W, H, c->resize, c->crop, &box);
            }
            e = pipe_decoder_render(w->dec, &box, c->crop, c->crop, img);
            if (e == IH_OK && c->train) {
                pipe_color col = {c->brightness, c->contrast, c->saturation, c->lighting};
                pipe_color_apply(c->seed, (uint64_t)epoch, (uint64_t)rec, &col, img, (size_t)c->crop * c->crop);
            }
        }
        if (e == IH_OK) {
            if (dm.label < 0 || dm.label >= l->num_classes) {
                char key[64];
                pipe_db_key(l->db, r, key, sizeof key);
                return ih_fail(IH_E_DATA, "record %lld (key %s) in %s: label %d outside [0, %d) given by labels.txt; "
                               "rebuild the LMDB with tools/make_lmdb", (long long)r, key, l->path, (int)dm.label,
                               l->num_classes);
            }
            *label = dm.label;
            if (t > 0) {
                pthread_mutex_lock(&l->mu);
                l->ep_replaced++;
                pthread_mutex_unlock(&l->mu);
            }
            return IH_OK;
        }
        if (e != IH_E_DATA) return e;
        snprintf(reason, sizeof reason, "%s", ih_last_error());
        report_bad(l, r, reason);
    }
    return ih_fail(IH_E_DATA, "%d undecodable records in a row from record %lld in %s; check the LMDB with "
                   "tools/lmdb_inspect --verify", PIPE_MAX_REPLACE, (long long)rec, l->path);
}

static int batch_size(const pipe_loader *l, int64_t b)
{
    if (l->cfg.train) return l->cfg.batch;
    int64_t cnt = pipe_eval_count(l->n_records, l->cfg.rank, l->cfg.world);
    int64_t left = cnt - b * l->cfg.batch;
    return left < l->cfg.batch ? (int)left : l->cfg.batch;
}

/* Under mu: the filling slot with unclaimed samples and the lowest batch, issuing a new
 * batch into a free slot if there is none. NULL when there is nothing to do. */
static slot *find_work(pipe_loader *l)
{
    slot *best = NULL;
    for (int i = 0; i < l->nslots; i++) {
        slot *s = &l->slots[i];
        if (s->state == SLOT_FILLING && s->gen == l->gen && s->claimed < s->n && (!best || s->batch < best->batch))
            best = s;
    }
    if (best || !l->active || l->next_issue >= l->nbatches) return best;
    for (int i = 0; i < l->nslots; i++) {
        slot *s = &l->slots[i];
        if (s->state != SLOT_FREE) continue;
        s->state = SLOT_FILLING;
        s->gen = l->gen;
        s->batch = l->next_issue++;
        s->n = batch_size(l, s->batch);
        s->claimed = s->done = 0;
        return s;
    }
    return NULL;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    pipe_loader *l = w->l;
    const pipe_cfg *c = &l->cfg;
    pthread_mutex_lock(&l->mu);
    while (!l->shutdown) {
        slot *s = l->err == IH_OK ? find_work(l) : NULL;
        if (!s) {
            struct timespec dl = ih_deadline_ms(PIPE_WAIT_MS);
            pthread_cond_timedwait(&l->work_cv, &l->mu, &dl);
            continue;
        }
        int j0 = s->claimed, j1 = j0 + PIPE_CHUNK < s->n ? j0 + PIPE_CHUNK : s->n;
        s->claimed = j1;
        int64_t b = s->batch;
        int epoch = l->epoch;
        l->inflight++;
        pthread_mutex_unlock(&l->mu);

        ih_err e = IH_OK;
        for (int j = j0; j < j1 && e == IH_OK; j++) {
            int64_t rec = c->train ? (int64_t)l->perm[pipe_train_pos(b, c->rank, c->world, c->batch, j)]
                                   : pipe_eval_record(b * c->batch + j, c->rank, c->world);
            e = decode_sample(w, epoch, rec, s->images + (size_t)j * l->img_bytes, &s->labels[j]);
        }
        if (e != IH_OK) set_error(l, e);

        pthread_mutex_lock(&l->mu);
        l->inflight--;
        if (e == IH_OK) {
            s->done += j1 - j0;
            if (s->done == s->n) {
                s->state = SLOT_READY;
                pthread_cond_broadcast(&l->ready_cv);
            }
        }
        if (l->inflight == 0) pthread_cond_broadcast(&l->idle_cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* Reads labels.txt ("label<TAB>name" per line) in the LMDB directory: 1 + the largest label,
 * or 0 when there is no such file. */
static int classes_from_labels_txt(const char *path)
{
    char f[4096];
    snprintf(f, sizeof f, "%s/labels.txt", path);
    FILE *fp = fopen(f, "r");
    if (!fp) return 0;
    int maxl = -1, lab;
    char line[1024];
    while (fgets(line, sizeof line, fp))
        if (sscanf(line, "%d", &lab) == 1 && lab > maxl) maxl = lab;
    fclose(fp);
    return maxl + 1;
}

/* Checks that record 0 is a Datum and finds the number of classes: from labels.txt when
 * present (our LMDBs), else by scanning every record's label (foreign LMDBs). */
static ih_err scan_records(pipe_loader *l)
{
    pipe_db_reader *rd = NULL;
    ih_err e = IH_OK;
    IH_TRY(pipe_db_reader_open(l->db, &rd));
    const uint8_t *val;
    size_t len;
    pipe_datum dm;
    char key[64];
    pipe_db_key(l->db, 0, key, sizeof key);
    IH_TRY_GOTO(pipe_db_get(rd, 0, &val, &len), e, out);
    if (pipe_datum_decode(val, len, &dm) != IH_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", ih_last_error());
        e = ih_fail(IH_E_DATA, "LMDB %s does not hold Caffe Datum records (record 0, key %s: %s); make one with "
                    "tools/make_lmdb", l->path, key, why);
        goto out;
    }
    l->num_classes = classes_from_labels_txt(l->path);
    if (l->num_classes == 0) {
        int maxl = -1;
        for (int64_t i = 0; i < l->n_records; i++) {
            IH_TRY_GOTO(pipe_db_get(rd, i, &val, &len), e, out);
            if (pipe_datum_decode(val, len, &dm) == IH_OK && dm.label > maxl) maxl = dm.label;
        }
        l->num_classes = maxl + 1;
    }
out:
    pipe_db_reader_close(rd);
    return e;
}

ih_err pipe_loader_create(pipe_loader **out, const pipe_cfg *cfg)
{
    *out = NULL;
    IH_TRY(check_cfg(cfg));
    ih_err e = IH_OK;
    pipe_loader *l = calloc(1, sizeof *l);
    if (!l) return ih_fail(IH_E_SYS, "out of memory");
    l->cfg = *cfg;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->work_cv, NULL);
    pthread_cond_init(&l->ready_cv, NULL);
    pthread_cond_init(&l->idle_cv, NULL);
    l->path = strdup(cfg->lmdb_path);
    if (!l->path) { e = ih_fail(IH_E_SYS, "out of memory"); goto fail; }
    l->cfg.lmdb_path = l->path;
    IH_TRY_GOTO(pipe_db_open(&l->db, l->path), e, fail);
    l->n_records = pipe_db_count(l->db);
    if (l->n_records == 0) {
        e = ih_fail(IH_E_DATA, "LMDB %s is empty (0 records); make one with tools/make_lmdb", l->path);
        goto fail;
    }
    if (l->n_records > (int64_t)UINT32_MAX) {
        e = ih_fail(IH_E_DATA, "LMDB %s has %lld records; at most 2^32-1 are supported", l->path,
                    (long long)l->n_records);
        goto fail;
    }
    IH_TRY_GOTO(scan_records(l), e, fail);
    if (cfg->train) {
        l->nbatches = pipe_train_batches(l->n_records, cfg->world, cfg->batch);
        if (l->nbatches == 0)
            IH_WARN("LMDB %s has %lld records, fewer than world*batch = %d: train epochs are empty", l->path,
                    (long long)l->n_records, cfg->world * cfg->batch);
        l->perm = malloc(sizeof(uint32_t) * (size_t)l->n_records);
    } else {
        int64_t cnt = pipe_eval_count(l->n_records, cfg->rank, cfg->world);
        l->nbatches = (cnt + cfg->batch - 1) / cfg->batch;
    }
    l->img_bytes = (size_t)cfg->crop * (size_t)cfg->crop * 3;
    l->bad_seen = calloc((size_t)l->n_records, 1);
    l->nslots = cfg->slots;
    l->slots = calloc((size_t)l->nslots, sizeof(slot));
    l->workers = calloc((size_t)cfg->threads, sizeof(worker));
    l->threads = calloc((size_t)cfg->threads, sizeof(pthread_t));
    if ((cfg->train && !l->perm) || !l->bad_seen || !l->slots || !l->workers || !l->threads) {
        e = ih_fail(IH_E_SYS, "out of memory allocating the loader");
        goto fail;
    }
    for (int i = 0; i < l->nslots; i++) {
        l->slots[i].images = slot_alloc(cfg, l->img_bytes * (size_t)cfg->batch);
        l->slots[i].labels = slot_alloc(cfg, sizeof(int32_t) * (size_t)cfg->batch);
        if (!l->slots[i].images || !l->slots[i].labels) {
            e = ih_fail(IH_E_SYS, "out of memory: %d slots of %d x %dx%dx3 bytes", l->nslots, cfg->batch, cfg->crop,
                        cfg->crop);
            goto fail;
        }
    }
    for (int i = 0; i < cfg->threads; i++) {
        worker *w = &l->workers[i];
        w->l = l;
        w->id = i;
        IH_TRY_GOTO(pipe_decoder_create(&w->dec), e, fail);
        IH_TRY_GOTO(pipe_db_reader_open(l->db, &w->rd), e, fail);
    }
    for (int i = 0; i < cfg->threads; i++) {
        char name[24];
        snprintf(name, sizeof name, "ih-decode-%02d", i);
        IH_TRY_GOTO(ih_thread_start(&l->threads[i], name, worker_main, &l->workers[i]), e, fail);
        l->nthreads++;
    }
    IH_INFO(IH_LOG_PIPE, "loader on %s: %lld records%s, %d classes, %lld batches of %d per epoch, %d threads",
            l->path, (long long)l->n_records, pipe_db_foreign_keys(l->db) ? " (foreign keys, indexed)" : "",
            l->num_classes, (long long)l->nbatches, cfg->batch, cfg->threads);
    *out = l;
    return IH_OK;
fail:
    pipe_loader_destroy(l);
    return e;
}

void pipe_loader_destroy(pipe_loader *l)
{
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->shutdown = 1;
    pthread_cond_broadcast(&l->work_cv);
    pthread_cond_broadcast(&l->ready_cv);
    pthread_cond_broadcast(&l->idle_cv);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < l->nthreads; i++) pthread_join(l->threads[i], NULL);
    if (l->workers)
        for (int i = 0; i < l->cfg.threads; i++) {
            pipe_decoder_destroy(l->workers[i].dec);
            pipe_db_reader_close(l->workers[i].rd);
        }
    if (l->slots)
        for (int i = 0; i < l->nslots; i++) {
            slot_free(&l->cfg, l->slots[i].images);
            slot_free(&l->cfg, l->slots[i].labels);
        }
    free(l->slots);
    free(l->workers);
    free(l->threads);
    free(l->bad_seen);
    free(l->perm);
    pipe_db_close(l->db);
    free(l->path);
    pthread_cond_destroy(&l->work_cv);
    pthread_cond_destroy(&l->ready_cv);
    pthread_cond_destroy(&l->idle_cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

int64_t pipe_loader_num_records(const pipe_loader *l) { return l->n_records; }
int pipe_loader_num_classes(const pipe_loader *l) { return l->num_classes; }
int64_t pipe_loader_batches_per_epoch(const pipe_loader *l) { return l->nbatches; }

int64_t pipe_loader_bad_records(const pipe_loader *l)
{
    pipe_loader *m = (pipe_loader *)l; /* the mutex is not part of the logical state */
    pthread_mutex_lock(&m->mu);
    int64_t n = m->bad_count;
    pthread_mutex_unlock(&m->mu);
    return n;
}

void pipe_loader_epoch_stats(const pipe_loader *l, pipe_epoch_stats *out)
{
    pipe_loader *m = (pipe_loader *)l; /* the mutex is not part of the logical state */
    pthread_mutex_lock(&m->mu);
    out->epoch = m->epoch;
    out->batches = m->ep_batches;
    out->images = m->ep_images;
    out->replaced = m->ep_replaced;
    out->bad_records = m->bad_count;
    out->wait_s = m->ep_wait_s;
    pthread_mutex_unlock(&m->mu);
}

static void log_epoch(pipe_loader *l)
{
    pipe_epoch_stats st;
    pipe_loader_epoch_stats(l, &st);
    IH_INFO(IH_LOG_PIPE, "epoch %d done: %lld images in %lld batches from %s; %lld replaced (bad records: %lld "
            "distinct so far); consumer waited %.2f s for data", st.epoch, (long long)st.images,
            (long long)st.batches, l->path, (long long)st.replaced, (long long)st.bad_records, st.wait_s);
}

/* Under mu: returns the sticky error (copying its message to this thread) or IH_OK. */
static ih_err sticky(pipe_loader *l)
{
    if (l->err != IH_OK) ih_set_last_error(l->errmsg);
    return l->err;
}

ih_err pipe_loader_start_epoch(pipe_loader *l, int epoch, int64_t first_batch)
{
    if (epoch < 0 || first_batch < 0)
        return ih_fail(IH_E_USAGE, "start_epoch(%d, %lld): epoch and batch must be >= 0", epoch,
                       (long long)first_batch);
    pthread_mutex_lock(&l->mu);
    l->gen++;
    l->active = 0;
    while (l->inflight > 0 && l->err == IH_OK) {
        struct timespec dl = ih_deadline_ms(PIPE_WAIT_MS);
        pthread_cond_timedwait(&l->idle_cv, &l->mu, &dl);
    }
    /* After an error chunks may still be in flight: leave the slots alone and report. */
    ih_err e = sticky(l);
    if (e != IH_OK) {
        pthread_mutex_unlock(&l->mu);
        return e;
    }
    for (int i = 0; i < l->nslots; i++)
        if (l->slots[i].state == SLOT_FILLING || l->slots[i].state == SLOT_READY) l->slots[i].state = SLOT_FREE;
    pthread_mutex_unlock(&l->mu);

    /* No worker reads perm now: nothing is in flight and nothing can be claimed. */
    if (l->cfg.train) pipe_perm_build(l->perm, (uint32_t)l->n_records, l->cfg.seed, (uint64_t)epoch);

    pthread_mutex_lock(&l->mu);
    l->epoch = epoch;
    l->ep_replaced = 0;
    l->ep_batches = l->ep_images = 0;
    l->ep_wait_s = 0;
    l->ep_logged = 0;
    l->next_issue = l->next_deliver = first_batch < l->nbatches ? first_batch : l->nbatches;
    l->active = 1;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
    return IH_OK;
}

ih_err pipe_loader_next(pipe_loader *l, pipe_batch *out)
{
    memset(out, 0, sizeof *out);
    out->slot = -1;
    double t0 = ih_now_s();
    pthread_mutex_lock(&l->mu);
    for (;;) {
        ih_err e = sticky(l);
        if (e == IH_OK && !l->active) e = ih_fail(IH_E_USAGE, "pipe_loader_next before pipe_loader_start_epoch");
        if (e == IH_OK && l->shutdown) e = ih_fail(IH_E_INTERNAL, "pipe_loader_next during destroy");
        if (e != IH_OK) {
            pthread_mutex_unlock(&l->mu);
            return e;
        }
        if (l->next_deliver >= l->nbatches) {
            out->index = l->next_deliver;
            l->ep_wait_s += ih_now_s() - t0;
            int log_now = !l->ep_logged;
            l->ep_logged = 1;
            pthread_mutex_unlock(&l->mu);
            if (log_now) log_epoch(l);
            return IH_OK;
        }
        for (int i = 0; i < l->nslots; i++) {
            slot *s = &l->slots[i];
            if (s->state == SLOT_READY && s->gen == l->gen && s->batch == l->next_deliver) {
                s->state = SLOT_HELD;
                out->images = s->images;
                out->labels = s->labels;
                out->n = s->n;
                out->index = s->batch;
                out->slot = i;
                l->next_deliver++;
                l->ep_batches++;
                l->ep_images += s->n;
                l->ep_wait_s += ih_now_s() - t0;
                pthread_mutex_unlock(&l->mu);
                return IH_OK;
            }
        }
        if (ih_now_s() - t0 > PIPE_NEXT_TIMEOUT_S) {
            pthread_mutex_unlock(&l->mu);
            return ih_fail(IH_E_TIMEOUT, "no batch from the decode threads for %.0f s (batch %lld of %s); are all "
                           "slots held by the caller? (at most slots-1 = %d may be held)", PIPE_NEXT_TIMEOUT_S,
                           (long long)l->next_deliver, l->path, l->nslots - 1);
        }
        struct timespec dl = ih_deadline_ms(PIPE_WAIT_MS);
        pthread_cond_timedwait(&l->ready_cv, &l->mu, &dl);
    }
}

void pipe_loader_release(pipe_loader *l, pipe_batch *b)
{
    if (!b || b->slot < 0) return;
    IH_ASSERT(b->slot < l->nslots, "release of slot %d of %d", b->slot, l->nslots);
    pthread_mutex_lock(&l->mu);
    slot *s = &l->slots[b->slot];
    IH_ASSERT(s->state == SLOT_HELD, "release of batch %lld that is not held", (long long)b->index);
    s->state = SLOT_FREE;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
    b->slot = -1;
}
