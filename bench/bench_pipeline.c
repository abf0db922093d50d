/* bench/bench_pipeline — img/s of the input pipeline's train and eval transforms for 1..T
 * decode threads on an LMDB, against two single-thread baselines measured in the same run on
 * the same records: (a) a plain full-image tjDecompress2 to RGB, (b) entropy decoding only
 * (jpeg_read_coefficients), the floor that no crop or DCT-scaling trick can beat on a whole
 * image.
 *
 *   bench_pipeline [--threads 1,2] [--repeats 5] [--batch 32] LMDB
 *
 * Method: the records are read once through the LMDB map (page cache warm). Each baseline
 * decodes every record once per repeat. Each loader configuration runs one verification and
 * warm-up epoch (epoch 0, hashed: every thread count must give the 1-thread bytes, else the
 * #wrong column counts the differing batches), then `repeats` timed epochs (1, 2, ...); a
 * timed epoch runs from pipe_loader_start_epoch to the release of its last batch and includes
 * the LMDB read, Datum parse, ROI/DCT-scaled decode, resize, flip and the slot write.
 * Reported: median img/s with p10/p90 over repeats; allocations per batch = malloc-family
 * calls (counted by interposing malloc/calloc/realloc/memalign in this program) during the
 * timed epochs / batches delivered. Last line: one machine-readable RESULT.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <malloc.h>

#include <jpeglib.h>
#include <turbojpeg.h>

#include "core/clock.h"
#include "pipeline/db.h"
#include "pipeline/loader.h"
#include "pipeline/record.h"

/* ---- allocation counting: this executable's definitions interpose glibc's for every
 * library in the process (libjpeg, LMDB, libc's own callers). */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static atomic_ullong g_allocs;

static inline void count_alloc(void) { atomic_fetch_add_explicit(&g_allocs, 1, memory_order_relaxed); }
void *malloc(size_t n) { count_alloc(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count_alloc(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count_alloc(); return __libc_realloc(p, n); }
void *memalign(size_t al, size_t n) { count_alloc(); return __libc_memalign(al, n); }
void *aligned_alloc(size_t al, size_t n) { count_alloc(); return __libc_memalign(al, n); }
int posix_memalign(void **p, size_t al, size_t n)
{
    count_alloc();
    *p = __libc_memalign(al, n);
    return *p ? 0 : 12 /* ENOMEM */;
}

static uint64_t allocs_now(void) { return atomic_load(&g_allocs); }

/* ---- helpers */

enum { MAX_T = 64, MAX_R = 101 };

typedef struct {
    const uint8_t *jpeg;
    size_t len;
} rec;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Percentile q in [0,1] of v[0..n) (sorted in place), nearest rank. */
static double pct(double *v, int n, double q)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int i = (int)(q * (n - 1) + 0.5);
    return v[i];
}

typedef struct {
    double med, p10, p90;
} stat3;

/* img/s from per-repeat times. */
static stat3 rates(const double *secs, int r, double imgs)
{
    double v[MAX_R];
    for (int i = 0; i < r; i++) v[i] = imgs / secs[i];
    stat3 s = {pct(v, r, 0.5), pct(v, r, 0.1), pct(v, r, 0.9)};
    return s;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* ---- baseline (a): full decode to RGB with TurboJPEG's one-call API, default flags */
static int full_decode_all(tjhandle tj, const rec *rs, int n, uint8_t *buf, size_t cap, int *bad)
{
    *bad = 0;
    for (int i = 0; i < n; i++) {
        int w, h, ss, cs;
        if (tjDecompressHeader3(tj, rs[i].jpeg, rs[i].len, &w, &h, &ss, &cs) || (size_t)w * h * 3 > cap ||
            tjDecompress2(tj, rs[i].jpeg, rs[i].len, buf, w, 0, h, TJPF_RGB, 0))
            (*bad)++;
    }
    return 0;
}

/* ---- baseline (b): entropy decoding only */
struct jerr {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
};
static void jerr_exit(j_common_ptr c) { longjmp(((struct jerr *)c->err)->jb, 1); }
static void jerr_quiet(j_common_ptr c, int level) { (void)c; (void)level; }

static int entropy_all(struct jpeg_decompress_struct *ci, struct jerr *je, const rec *rs, int n)
{
    volatile int bad = 0;
    for (volatile int i = 0; i < n; i++) {
        if (setjmp(je->jb)) {
            jpeg_abort_decompress(ci);
            bad++;
            continue;
        }
        jpeg_mem_src(ci, rs[i].jpeg, (unsigned long)rs[i].len);
        jpeg_read_header(ci, TRUE);
        jpeg_read_coefficients(ci);
        jpeg_abort_decompress(ci);
    }
    return bad;
}

/* ---- the loader: one per (transform, threads), all alive for the whole run so that the
 * repeats can interleave every configuration with the baselines (the machine's load drifts;
 * interleaving keeps the ratios fair). */
typedef struct {
    pipe_loader *l;
    int train, threads, crop;
    double secs[MAX_R];
    uint64_t allocs;
    int64_t batches, imgs;
    uint64_t hash0;
} bench_loader;

/* Runs one epoch; hashes the output when hash != NULL. Returns 0 or -1 (message printed). */
static int loader_epoch(bench_loader *b, int epoch, double *secs, uint64_t *hash)
{
    uint64_t h = 0xcbf29ce484222325ull, a0 = allocs_now();
    double t0 = ih_now_s();
    int64_t got = 0, nimg = 0;
    if (pipe_loader_start_epoch(b->l, epoch, 0) != IH_OK) goto fail;
    for (;;) {
        pipe_batch bt;
        if (pipe_loader_next(b->l, &bt) != IH_OK) goto fail;
        if (bt.n == 0) break;
        if (hash) {
            h = fnv(h, bt.images, (size_t)bt.n * b->crop * b->crop * 3);
            h = fnv(h, bt.labels, sizeof(int32_t) * (size_t)bt.n);
        }
        nimg += bt.n;
        got++;
        pipe_loader_release(b->l, &bt);
    }
    *secs = ih_now_s() - t0;
    if (hash) {
        *hash = h;
        return 0;
    }
    b->allocs += allocs_now() - a0;
    b->batches += got;
    b->imgs = nimg;
    return 0;
fail:
    fprintf(stderr, "bench_pipeline: %s\n", ih_last_error());
    return -1;
}

static int loader_open(bench_loader *b, const char *path, int train, int threads, int batch)
{
    pipe_cfg c;
    pipe_cfg_defaults(&c);
    c.lmdb_path = path;
    c.batch = batch;
    c.threads = threads;
    c.train = train;
    c.seed = 1;
    b->train = train;
    b->threads = threads;
    b->crop = c.crop;
    if (pipe_loader_create(&b->l, &c) != IH_OK) {
        fprintf(stderr, "bench_pipeline: %s\n", ih_last_error());
        return -1;
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_pipeline [--threads 1,2] [--repeats 5] [--batch 32] LMDB\n"
               "  img/s of the train and eval transforms vs full decode and the entropy-decode floor\n");
}

int main(int argc, char **argv)
{
    int tlist[MAX_T], nt = 0, repeats = 5, batch = 32;
    const char *tspec = "1,2";
    static const struct option opts[] = {{"threads", required_argument, 0, 't'},
                                         {"repeats", required_argument, 0, 'r'},
                                         {"batch", required_argument, 0, 'b'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "t:r:b:h", opts, NULL)) != -1) {
        switch (o) {
        case 't': tspec = optarg; break;
        case 'r': repeats = atoi(optarg); break;
        case 'b': batch = atoi(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (argc - optind != 1 || repeats < 1 || repeats >= MAX_R || batch < 1) {
        usage(stderr);
        return 2;
    }
    for (const char *p = tspec; *p && nt < MAX_T;) {
        char *end;
        long t = strtol(p, &end, 10);
        if (end == p || t < 1 || t > 256) {
            fprintf(stderr, "bench_pipeline: --threads %s: expected a list like 1,2,4\n", tspec);
            return 2;
        }
        tlist[nt++] = (int)t;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') {
            fprintf(stderr, "bench_pipeline: --threads %s: expected a list like 1,2,4\n", tspec);
            return 2;
        }
    }
    const char *path = argv[optind];

    /* Records: JPEG bytes straight from the map, read once (page cache warm). */
    pipe_db *db = NULL;
    pipe_db_reader *rd = NULL;
    if (pipe_db_open(&db, path) != IH_OK || pipe_db_reader_open(db, &rd) != IH_OK) {
        fprintf(stderr, "bench_pipeline: %s\n", ih_last_error());
        return 1;
    }
    int n = (int)pipe_db_count(db);
    rec *rs = calloc((size_t)n, sizeof *rs);
    size_t maxpix = 0;
    uint64_t total = 0;
    tjhandle tj = tjInitDecompress();
    int nrec = 0;
    for (int i = 0; i < n; i++) {
        const uint8_t *v;
        size_t len;
        pipe_datum d;
        if (pipe_db_get(rd, i, &v, &len) != IH_OK || pipe_datum_decode(v, len, &d) != IH_OK || !d.has_data) continue;
        int w, h, ss, cs;
        if (tjDecompressHeader3(tj, d.data, d.size, &w, &h, &ss, &cs)) continue;
        if ((size_t)w * h > maxpix) maxpix = (size_t)w * h;
        rs[nrec].jpeg = d.data;
        rs[nrec].len = d.size;
        total += fnv(0, d.data, d.size) & 1; /* touch every page */
        nrec++;
    }
    if (nrec == 0) {
        fprintf(stderr, "bench_pipeline: no JPEG records in %s\n", path);
        return 1;
    }
    size_t cap = maxpix * 3;
    uint8_t *buf = malloc(cap);
    double la[3] = {0};
    FILE *lf = fopen("/proc/loadavg", "r");
    if (lf) {
        if (fscanf(lf, "%lf %lf %lf", &la[0], &la[1], &la[2]) != 3) la[0] = -1;
        fclose(lf);
    }
    printf("# bench_pipeline: %s, %d records (%d JPEG headers ok), batch %d, %d repeats (median, p10/p90)\n", path, n,
           nrec, batch, repeats);
    printf("# load average at start: %.2f %.2f %.2f (numbers are noisy when it exceeds the core count)\n", la[0],
           la[1], la[2]);

    /* Baselines, verified first (#wrong: records that fail to decode). */
    struct jpeg_decompress_struct ci;
    struct jerr je;
    ci.err = jpeg_std_error(&je.pub);
    je.pub.error_exit = jerr_exit;
    je.pub.emit_message = jerr_quiet;
    jpeg_create_decompress(&ci);
    int bad_full = 0, bad_ent = 0;
    full_decode_all(tj, rs, nrec, buf, cap, &bad_full);
    bad_ent = entropy_all(&ci, &je, rs, nrec);
    /* Loaders: verification + warm-up epoch 0 (hashed), then the timed repeats. */
    int nl = 2 * nt, failed = 0;
    bench_loader *bl = calloc((size_t)nl, sizeof *bl);
    for (int i = 0; i < nl; i++) {
        double s;
        if (loader_open(&bl[i], path, i < nt, tlist[i % nt], batch) || loader_epoch(&bl[i], 0, &s, &bl[i].hash0))
            return 1;
    }
    double tf[MAX_R], te[MAX_R];
    for (int r = 0; r < repeats; r++) {
        int b;
        double t0 = ih_now_s();
        full_decode_all(tj, rs, nrec, buf, cap, &b);
        tf[r] = ih_now_s() - t0;
        t0 = ih_now_s();
        entropy_all(&ci, &je, rs, nrec);
        te[r] = ih_now_s() - t0;
        for (int i = 0; i < nl; i++)
            if (loader_epoch(&bl[i], 1 + r, &bl[i].secs[r], NULL)) return 1;
    }
    stat3 full = rates(tf, repeats, nrec), ent = rates(te, repeats, nrec);
    jpeg_destroy_decompress(&ci);
    tjDestroy(tj);
    free(buf);
    free(rs);
    pipe_db_reader_close(rd);
    pipe_db_close(db);

    printf("#\n# %-36s %7s %8s %8s %8s %7s %7s %12s %6s\n", "what", "threads", "img/s", "p10", "p90", "x_full",
           "x_floor", "allocs/batch", "#wrong");
    printf("  %-36s %7d %8.0f %8.0f %8.0f %7.2f %7.2f %12s %6d\n", "(a) full decode, tjDecompress2 RGB", 1, full.med,
           full.p10, full.p90, 1.0, full.med / ent.med, "-", bad_full);
    printf("  %-36s %7d %8.0f %8.0f %8.0f %7.2f %7.2f %12s %6d\n", "(b) entropy only, read_coefficients", 1, ent.med,
           ent.p10, ent.p90, ent.med / full.med, 1.0, "-", bad_ent);
    double train_t[MAX_T] = {0}, worst_allocs = 0;
    for (int i = 0; i < nl; i++) {
        bench_loader *b = &bl[i];
        stat3 st = rates(b->secs, repeats, (double)b->imgs);
        double apb = b->batches ? (double)b->allocs / (double)b->batches : 0;
        int wrong = b->hash0 != bl[i < nt ? 0 : nt].hash0;
        if (b->train) train_t[i] = st.med;
        if (apb > worst_allocs) worst_allocs = apb;
        if (wrong) failed = 1;
        printf("  %-36s %7d %8.0f %8.0f %8.0f %7.2f %7.2f %12.2f %6d\n",
               b->train ? "train: RRC 224 + flip, ROI/DCT" : "eval: short side 256, center 224", b->threads, st.med,
               st.p10, st.p90, st.med / full.med, st.med / ent.med, apb, wrong);
    }
    for (int i = 0; i < nl; i++) pipe_loader_destroy(bl[i].l);
    free(bl);
    /* Scaling and cores: per-thread rate of the largest thread count; cores for one GPU at
     * 3,000 img/s = 3000 / (img/s per thread). */
    double t1 = 0, t2 = 0;
    for (int k = 0; k < nt; k++) {
        if (tlist[k] == 1) t1 = train_t[k];
        if (tlist[k] == 2) t2 = train_t[k];
    }
    printf("#\n# train 1 thread: %.2fx full decode (target >= 1.05), %.2fx entropy floor (target >= 0.85)\n",
           t1 / full.med, t1 / ent.med);
    if (t1 > 0 && t2 > 0) printf("# train 2 threads / 1 thread: %.2fx (target >= 1.8)\n", t2 / t1);
    if (t1 > 0)
        printf("# cores for one GPU at 3,000 img/s = 3000 / train_1t_img_s = %.1f (full decode would need %.1f)\n",
               3000.0 / t1, 3000.0 / full.med);
    printf("# allocations per batch after warm-up (worst configuration): %.2f\n", worst_allocs);
    printf("RESULT train_1t_img_s=%.0f train_2t_img_s=%.0f full_decode_img_s=%.0f entropy_floor_img_s=%.0f "
           "allocs_per_batch=%.2f\n",
           t1, t2, full.med, ent.med, worst_allocs);
    (void)total;
    return failed ? 1 : 0;
}
