/* tools/make_lmdb — image folders (ImageNet train or val layout) or a list file -> LMDB of
 * Caffe Datum records with encoded JPEG bytes, readable by our loader, Caffe and DALI.
 *
 *   make_lmdb [options] SRC_DIR OUT_LMDB                      SRC_DIR/<class>/<image>
 *   make_lmdb [options] --list FILE [--root DIR] OUT_LMDB     lines "relative/path label"
 *   make_lmdb [options] --val-labels FILE [--classes FILE] SRC_DIR OUT_LMDB
 *       SRC_DIR flat; FILE lines "name label" or "name wnid" (or the Kaggle LOC_val_solution
 *       CSV "ImageId,wnid ..."); names match with or without extension; a wnid is looked up
 *       in --classes (the train LMDB's labels.txt "label<TAB>name", or one name per line).
 *
 * Classes are sorted by name -> labels 0..C-1, files sorted by name; keys are "%010u" in
 * item order; each Datum has the stored image's height/width, channels 3, encoded=true.
 * `--threads` workers read and verify (decode every entropy-coded byte, at 1/8 scale) or, with
 * `--max-side N`, re-encode images whose longer side exceeds N (FFCV's max_resolution) at
 * `--quality`; the writer stores their results strictly in item order, so the database does
 * not depend on the thread count. Bad files are skipped and listed with their reason.
 * PNG files (ImageNet's train set has one named .JPEG, n02105855_2933) are converted: decoded
 * with libpng (alpha composited on white), resized like a JPEG under `--max-side`, encoded at
 * `--quality` (4:2:0, or grey for a grey PNG) and listed as converted. Built without libpng,
 * they are reported as bad with the package to install.
 *
 * Crash safety: everything is written to OUT.tmp, committed every --commit-every items,
 * with OUT.tmp/make_lmdb.progress (items done, records, bytes, bad files, a fingerprint of
 * the options and the item list) replaced atomically after each commit. OUT appears only by
 * the final rename, so a killed run never leaves a database that looks complete. `--resume`
 * continues an interrupted OUT.tmp (records past the last progress file are deleted first);
 * without it an old OUT.tmp is discarded. A resumed run gives the same records as an
 * uninterrupted one. The map grows by doubling on MDB_MAP_FULL (the chunk is redone).
 * Exit: 0 ok, 1 failure, 2 usage. Debug knob: IH_MAKE_LMDB_KILL_AFTER_COMMITS=k kills the
 * process (SIGKILL) right after the k-th commit, before its progress file (tests).
 */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/thread.h"
#include "pipeline/decode.h"
#include "pipeline/record.h"
#include "pipeline/resize.h"

#if IH_HAVE_PNG
#include <png.h>
#endif

typedef struct {
    char *path;
    int label;
    char *bad;  /* reason, when the file was rejected (scan or worker) */
} item;

typedef struct {
    item *items;
    size_t n, cap;
    char **classes; /* label -> name */
    int nclasses;
    uint64_t total_bytes;
} job;

static int add_item(job *j, const char *path, int label)
{
    if (j->n == j->cap) {
        size_t nc = j->cap ? j->cap * 2 : 1024;
        item *ni = realloc(j->items, nc * sizeof *ni);
        if (!ni) return -1;
        j->items = ni;
        j->cap = nc;
    }
    j->items[j->n].path = strdup(path);
    j->items[j->n].label = label;
    j->items[j->n].bad = NULL;
    if (!j->items[j->n].path) return -1;
    j->n++;
    struct stat st;
    if (stat(path, &st) == 0) j->total_bytes += (uint64_t)st.st_size;
    return 0;
}

static int not_hidden(const struct dirent *d) { return d->d_name[0] != '.'; }
static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Folder mode. Returns 0, or 1 after printing the reason. */
static int scan_folder(job *j, const char *src)
{
    struct dirent **cls = NULL;
    struct stat st;
    if (stat(src, &st) || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "make_lmdb: %s: %s\n", src, S_ISDIR(st.st_mode) || errno ? strerror(errno) : "not a directory");
        return 1;
    }
    int nc = scandir(src, &cls, not_hidden, by_name);
    if (nc < 0) {
        fprintf(stderr, "make_lmdb: cannot read %s: %s\n", src, strerror(errno));
        return 1;
    }
    int rc = 0;
    j->classes = calloc((size_t)nc + 1, sizeof(char *));
    for (int c = 0; c < nc; c++) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/%s", src, cls[c]->d_name);
        if (!is_dir(dir)) continue;
        int label = j->nclasses++;
        j->classes[label] = strdup(cls[c]->d_name);
        struct dirent **fs = NULL;
        int nf = scandir(dir, &fs, not_hidden, by_name);
        if (nf < 0) {
            fprintf(stderr, "make_lmdb: cannot read %s: %s\n", dir, strerror(errno));
            rc = 1;
        }
        for (int f = 0; f < nf; f++) {
            char path[8192];
            snprintf(path, sizeof path, "%s/%s", dir, fs[f]->d_name);
            if (!rc && is_file(path) && add_item(j, path, label)) {
                fprintf(stderr, "make_lmdb: out of memory\n");
                rc = 1;
            }
            free(fs[f]);
        }
        free(fs);
    }
    for (int c = 0; c < nc; c++) free(cls[c]);
    free(cls);
    if (rc) return rc;
    if (j->nclasses == 0) {
        fprintf(stderr, "make_lmdb: %s has no class subfolders (expected %s/<class>/<image>.jpg)\n", src, src);
        return 1;
    }
    if (j->n == 0) {
        fprintf(stderr, "make_lmdb: %s has %d class subfolders but no image files in them\n", src, j->nclasses);
        return 1;
    }
    return 0;
}

/* List mode: "relative/path label" per line; the class name of a label is the parent folder
 * of its first file. */
static int scan_list(job *j, const char *list, const char *root)
{
    FILE *f = fopen(list, "r");
    if (!f) {
        fprintf(stderr, "make_lmdb: cannot open list %s: %s\n", list, strerror(errno));
        return 1;
    }
    char line[8192];
    int lineno = 0, rc = 0;
    while (!rc && fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (!len || line[0] == '#') continue;
        char *sp = strrchr(line, ' ');
        if (!sp) sp = strrchr(line, '\t');
        char *end = NULL;
        long label = sp ? strtol(sp + 1, &end, 10) : -1;
        if (!sp || !end || *end || label < 0 || label > 1000000) {
            fprintf(stderr, "make_lmdb: %s:%d: expected \"relative/path label\" with label >= 0\n", list, lineno);
            rc = 1;
            break;
        }
        *sp = 0;
        char path[8192];
        snprintf(path, sizeof path, "%s%s%s", root ? root : "", root ? "/" : "", line);
        if (label >= j->nclasses) {
            char **nc = realloc(j->classes, sizeof(char *) * (size_t)(label + 1));
            if (!nc) { rc = 1; break; }
            for (long k = j->nclasses; k <= label; k++) nc[k] = NULL;
            j->classes = nc;
            j->nclasses = (int)label + 1;
        }
        if (!j->classes[label]) {
            char name[8192];
            snprintf(name, sizeof name, "%s", line);
            char *slash = strrchr(name, '/');
            if (slash) {
                *slash = 0;
                slash = strrchr(name, '/');
            }
            j->classes[label] = strdup(strchr(line, '/') ? (slash ? slash + 1 : name) : "?");
        }
        if (add_item(j, path, (int)label)) { rc = 1; break; }
    }
    fclose(f);
    if (!rc && j->n == 0) {
        fprintf(stderr, "make_lmdb: list %s names no images\n", list);
        rc = 1;
    }
    return rc;
}

static int read_file(const char *path, uint8_t **buf, size_t *cap, size_t *len, char *why, size_t whycap)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, whycap, "cannot open: %s", strerror(errno));
        return -1;
    }
    *len = 0;
    for (;;) {
        if (*len == *cap) {
            size_t nc = *cap ? *cap * 2 : 1 << 20;
            uint8_t *nb = realloc(*buf, nc);
            if (!nb) { fclose(f); snprintf(why, whycap, "out of memory"); return -1; }
            *buf = nb;
            *cap = nc;
        }
        size_t got = fread(*buf + *len, 1, *cap - *len, f);
        *len += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        snprintf(why, whycap, "read error");
        return -1;
    }
    return 0;
}

/* ---- val layout: a flat folder plus a ground-truth file */

/* Stem of a file name: without folder and extension ("a/b/x.JPEG" -> "x"). */
static void stem(const char *name, char *out, size_t cap)
{
    const char *b = strrchr(name, '/');
    b = b ? b + 1 : name;
    size_t n = strlen(b); /* truncating copy (a name longer than cap cannot match anyway) */
    if (n >= cap) n = cap - 1;
    memcpy(out, b, n);
    out[n] = 0;
    char *dot = strrchr(out, '.');
    if (dot && dot != out) *dot = 0;
}

typedef struct {
    char *stem;
    int label;
} gt_entry;

static int by_stem(const void *a, const void *b) { return strcmp(((const gt_entry *)a)->stem, ((const gt_entry *)b)->stem); }

/* Reads the class-index file: "label<TAB>name" lines (our labels.txt) or one name per line. */
static int read_classes(job *j, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "make_lmdb: cannot open class file %s: %s\n", path, strerror(errno));
        return 1;
    }
    char line[4096];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\r\n");
        line[len] = 0;
        if (!len) continue;
        int label = lineno++;
        char *name = line, *tab = strchr(line, '\t');
        if (tab) {
            *tab = 0;
            label = atoi(line);
            name = tab + 1;
        }
        if (label < 0 || label > 1000000) continue;
        if (label >= j->nclasses) {
            char **nc = realloc(j->classes, sizeof(char *) * (size_t)(label + 1));
            if (!nc) { fclose(f); return 1; }
            for (int k = j->nclasses; k <= label; k++) nc[k] = NULL;
            j->classes = nc;
            j->nclasses = label + 1;
        }
        free(j->classes[label]);
        j->classes[label] = strdup(name);
    }
    fclose(f);
    if (j->nclasses == 0) {
        fprintf(stderr, "make_lmdb: class file %s names no classes\n", path);
        return 1;
    }
    return 0;
}

static int class_label(const job *j, const char *name)
{
    for (int c = 0; c < j->nclasses; c++)
        if (j->classes[c] && !strcmp(j->classes[c], name)) return c;
    return -1;
}

/* Val mode: SRC_DIR holds the images; `gt` maps names to labels or wnids. Files without a
 * ground-truth line are listed as bad ("no label in FILE"). */
static int scan_val(job *j, const char *src, const char *gt, const char *classes)
{
    if (classes && read_classes(j, classes)) return 1;
    FILE *f = fopen(gt, "r");
    if (!f) {
        fprintf(stderr, "make_lmdb: cannot open labels %s: %s\n", gt, strerror(errno));
        return 1;
    }
    gt_entry *g = NULL;
    size_t ng = 0, cap = 0;
    char line[8192];
    int lineno = 0, rc = 0;
    while (!rc && fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0] || line[0] == '#' || !strncmp(line, "ImageId,", 8)) continue;
        char *name = line, *lab = NULL;
        char *comma = strchr(line, ',');
        if (comma) { /* Kaggle CSV: ImageId,PredictionString ("wnid x y x y ...") */
            *comma = 0;
            lab = comma + 1;
            lab[strcspn(lab, " ")] = 0;
        } else {
            lab = line + strcspn(line, " \t");
            if (*lab) *lab++ = 0;
            lab += strspn(lab, " \t");
            lab[strcspn(lab, " \t")] = 0;
        }
        char *end;
        long v = strtol(lab, &end, 10);
        int label = *lab && !*end ? (int)v : -1;
        if (*lab && *end) {
            label = class_label(j, lab);
            if (label < 0) {
                fprintf(stderr, "make_lmdb: %s:%d: class '%s' %s\n", gt, lineno, lab,
                        classes ? "is not in the class file" : "is a name: give --classes (the train LMDB's labels.txt)");
                rc = 1;
                break;
            }
        }
        if (label < 0 || v > 1000000) {
            fprintf(stderr, "make_lmdb: %s:%d: expected \"name label\" or \"name wnid\"\n", gt, lineno);
            rc = 1;
            break;
        }
        if (ng == cap) {
            cap = cap ? cap * 2 : 1024;
            gt_entry *ng2 = realloc(g, cap * sizeof *g);
            if (!ng2) { rc = 1; break; }
            g = ng2;
        }
        char st[4096];
        stem(name, st, sizeof st);
        g[ng].stem = strdup(st);
        g[ng++].label = label;
    }
    fclose(f);
    if (!rc) qsort(g, ng, sizeof *g, by_stem);
    struct dirent **fs = NULL;
    int nf = rc ? 0 : scandir(src, &fs, not_hidden, by_name);
    if (!rc && nf < 0) {
        fprintf(stderr, "make_lmdb: cannot read %s: %s\n", src, strerror(errno));
        rc = 1;
    }
    int maxl = -1;
    for (int i = 0; i < nf; i++) {
        char path[8192], st[4096];
        snprintf(path, sizeof path, "%s/%s", src, fs[i]->d_name);
        if (!rc && is_file(path)) {
            stem(fs[i]->d_name, st, sizeof st);
            gt_entry key = {st, 0}, *hit = bsearch(&key, g, ng, sizeof *g, by_stem);
            if (add_item(j, path, hit ? hit->label : 0)) rc = 1;
            else if (!hit) {
                char why[600];
                snprintf(why, sizeof why, "no label in %s", gt);
                j->items[j->n - 1].bad = strdup(why);
            } else if (hit->label > maxl) maxl = hit->label;
        }
        free(fs[i]);
    }
    free(fs);
    for (size_t i = 0; i < ng; i++) free(g[i].stem);
    free(g);
    if (!rc && j->n == 0) {
        fprintf(stderr, "make_lmdb: %s holds no image files\n", src);
        rc = 1;
    }
    if (!rc && maxl >= j->nclasses) { /* numeric labels without a class file */
        char **nc = realloc(j->classes, sizeof(char *) * (size_t)(maxl + 1));
        if (!nc) return 1;
        for (int k = j->nclasses; k <= maxl; k++) nc[k] = NULL;
        j->classes = nc;
        j->nclasses = maxl + 1;
    }
    return rc;
}

/* ---- workers: read + verify or re-encode, results handed to the writer in item order */

typedef struct {
    uint8_t *data; /* bytes to store (the file, or its re-encode); NULL when bad */
    size_t len, cap;
    int w, h;
    char why[600];
    char note[96]; /* non-empty when a non-JPEG file was converted: what it was */
} result;

typedef struct {
    job *j;
    int max_side, quality;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    size_t c0, c1;   /* guarded by mu: the chunk being processed */
    size_t next;     /* guarded by mu: next item to claim */
    size_t done;     /* guarded by mu: items of the chunk finished */
    uint64_t gen;    /* guarded by mu: bumped per chunk */
    int stop;        /* guarded by mu */
    result *res;     /* res[i - c0]; each written by the worker that claimed i */
} pool;

typedef struct {
    pool *p;
    pipe_decoder *dec; /* owner: this worker */
    tjhandle tj;       /* owner: this worker */
    uint8_t *fbuf, *rgb, *tab, *fbuf2; /* fbuf2: a decoded PNG */
    size_t fcap, rgbcap, tabcap, fcap2;
} worker;

static int grow_buf(uint8_t **b, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    uint8_t *n = realloc(*b, need);
    if (!n) return -1;
    *b = n;
    *cap = need;
    return 0;
}

/* rgb (tw x th, packed RGB) -> JPEG in r (4:2:0, or grey) at the pool's quality. */
static int encode_rgb(worker *w, const uint8_t *rgb, int tw, int th, int gray, result *r)
{
    unsigned char *out = NULL;
    unsigned long olen = 0;
    if (tjCompress2(w->tj, rgb, tw, 0, th, TJPF_RGB, &out, &olen, gray ? TJSAMP_GRAY : TJSAMP_420,
                    w->p->quality, 0)) {
        snprintf(r->why, sizeof r->why, "re-encode: %s", tjGetErrorStr2(w->tj));
        return -1;
    }
    if (grow_buf(&r->data, &r->cap, olen)) {
        tjFree(out);
        snprintf(r->why, sizeof r->why, "out of memory");
        return -1;
    }
    memcpy(r->data, out, olen);
    tjFree(out);
    r->len = olen;
    r->w = tw;
    r->h = th;
    return 0;
}

/* Longer side > max_side: decode at the largest DCT scale that keeps it >= max_side,
 * resample (antialiased) to max_side, encode 4:2:0 at `quality` (grayscale stays grey). */
static int reencode(worker *w, const uint8_t *jpg, size_t len, int W, int H, result *r)
{
    pool *p = w->p;
    int denom = 1, side = W > H ? W : H;
    while (denom < 8 && side / (denom * 2) >= p->max_side) denom *= 2;
    const uint8_t *rgb;
    int sw, sh, comps;
    if (pipe_decoder_full(w->dec, jpg, len, denom, &rgb, &sw, &sh) != IH_OK) {
        snprintf(r->why, sizeof r->why, "%s", ih_last_error());
        return -1;
    }
    pipe_decoder_info(w->dec, &comps, NULL, NULL);
    double f = (double)p->max_side / side;
    int tw = (int)(W * f + 0.5), th = (int)(H * f + 0.5);
    if (tw < 1) tw = 1;
    if (th < 1) th = 1;
    if (grow_buf(&w->rgb, &w->rgbcap, (size_t)tw * th * 3) ||
        grow_buf(&w->tab, &w->tabcap, pipe_resize_scratch_bytes(sw, sw, sh, tw, th) + 64)) {
        snprintf(r->why, sizeof r->why, "out of memory");
        return -1;
    }
    uint8_t *tab = (uint8_t *)(((uintptr_t)w->tab + 15) & ~(uintptr_t)15);
    pipe_resize(rgb, sw, sh, (size_t)sw * 3, 0, 0, sw, sh, 0, w->rgb, tw, th, tab);
    return encode_rgb(w, w->rgb, tw, th, comps == 1, r);
}

#if IH_HAVE_PNG
/* A PNG file -> JPEG record: decode to RGB (alpha over white), shrink to --max-side like a
 * JPEG, encode at --quality. */
static int convert_png(worker *w, const uint8_t *png, size_t len, result *r)
{
    pool *p = w->p;
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&img, png, len)) {
        snprintf(r->why, sizeof r->why, "PNG data that libpng cannot read: %s", img.message);
        return -1;
    }
    int gray = !(img.format & PNG_FORMAT_FLAG_COLOR);
    int W = (int)img.width, H = (int)img.height;
    if (W < 1 || H < 1 || (size_t)W * (size_t)H > ((size_t)1 << 28)) {
        png_image_free(&img);
        snprintf(r->why, sizeof r->why, "PNG of %dx%d pixels: not a usable image size", W, H);
        return -1;
    }
    img.format = PNG_FORMAT_RGB;
    static const png_color white = {255, 255, 255};
    if (grow_buf(&w->fbuf2, &w->fcap2, (size_t)W * H * 3)) {
        png_image_free(&img);
        snprintf(r->why, sizeof r->why, "out of memory for a %dx%d PNG", W, H);
        return -1;
    }
    if (!png_image_finish_read(&img, &white, w->fbuf2, 0, NULL)) {
        snprintf(r->why, sizeof r->why, "PNG data that libpng cannot decode: %s", img.message);
        png_image_free(&img);
        return -1;
    }
    png_image_free(&img);
    const uint8_t *src = w->fbuf2;
    int tw = W, th = H, side = W > H ? W : H;
    if (p->max_side > 0 && side > p->max_side) {
        double f = (double)p->max_side / side;
        tw = (int)(W * f + 0.5);
        th = (int)(H * f + 0.5);
        if (tw < 1) tw = 1;
        if (th < 1) th = 1;
        if (grow_buf(&w->rgb, &w->rgbcap, (size_t)tw * th * 3) ||
            grow_buf(&w->tab, &w->tabcap, pipe_resize_scratch_bytes(W, W, H, tw, th) + 64)) {
            snprintf(r->why, sizeof r->why, "out of memory");
            return -1;
        }
        uint8_t *tab = (uint8_t *)(((uintptr_t)w->tab + 15) & ~(uintptr_t)15);
        pipe_resize(src, W, H, (size_t)W * 3, 0, 0, W, H, 0, w->rgb, tw, th, tab);
        src = w->rgb;
    }
    if (encode_rgb(w, src, tw, th, gray, r)) return -1;
    snprintf(r->note, sizeof r->note, "PNG %dx%d%s -> JPEG %dx%d quality %d", W, H, gray ? " grey" : "", tw, th,
             p->quality);
    return 0;
}
#endif

static void process(worker *w, const item *it, result *r)
{
    size_t len = 0;
    r->len = 0;
    r->why[0] = 0;
    r->note[0] = 0;
    if (it->bad) {
        snprintf(r->why, sizeof r->why, "%s", it->bad);
        return;
    }
    if (read_file(it->path, &w->fbuf, &w->fcap, &len, r->why, sizeof r->why)) return;
    if (len >= 8 && !memcmp(w->fbuf, "\x89PNG\r\n\x1a\n", 8)) {
#if IH_HAVE_PNG
        if (convert_png(w, w->fbuf, len, r)) r->len = 0;
#else
        snprintf(r->why, sizeof r->why, "PNG data; this make_lmdb was built without libpng, so it cannot convert "
                 "it: apt-get install libpng-dev and rebuild");
#endif
        return;
    }
    int W, H;
    if (pipe_decoder_open(w->dec, w->fbuf, len, &W, &H) != IH_OK) {
        snprintf(r->why, sizeof r->why, "%s", ih_last_error());
        return;
    }
    int side = W > H ? W : H;
    if (w->p->max_side > 0 && side > w->p->max_side) {
        if (reencode(w, w->fbuf, len, W, H, r)) r->len = 0;
        return;
    }
    const uint8_t *rgb;
    int sw, sh;
    if (pipe_decoder_full(w->dec, w->fbuf, len, 8, &rgb, &sw, &sh) != IH_OK) {
        snprintf(r->why, sizeof r->why, "%s", ih_last_error());
        return;
    }
    if (grow_buf(&r->data, &r->cap, len)) {
        snprintf(r->why, sizeof r->why, "out of memory");
        return;
    }
    memcpy(r->data, w->fbuf, len);
    r->len = len;
    r->w = W;
    r->h = H;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    pool *p = w->p;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->next >= p->c1) pthread_cond_wait(&p->cv_work, &p->mu);
        if (p->stop) break;
        size_t i = p->next++;
        size_t c0 = p->c0;
        pthread_mutex_unlock(&p->mu);
        process(w, &p->j->items[i], &p->res[i - c0]);
        pthread_mutex_lock(&p->mu);
        if (++p->done == p->c1 - p->c0) pthread_cond_broadcast(&p->cv_done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Processes items [c0, c1) on the pool; blocks until all are done. */
static void run_chunk(pool *p, size_t c0, size_t c1)
{
    pthread_mutex_lock(&p->mu);
    p->c0 = c0;
    p->c1 = c1;
    p->next = c0;
    p->done = 0;
    pthread_cond_broadcast(&p->cv_work);
    while (p->done < c1 - c0) pthread_cond_wait(&p->cv_done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

/* ---- crash-safe progress */

typedef struct {
    uint64_t fingerprint;
    size_t items_done;
    uint64_t records, bytes;
    size_t nbad, nconv;
} progress_state;

static uint64_t fnv_str(uint64_t h, const char *s)
{
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return (h ^ 0xff) * 0x100000001b3ull;
}

/* Fingerprint of everything the records depend on: items (paths, labels, scan verdicts),
 * re-encode options. A resume with anything else is refused. */
static uint64_t fingerprint(const job *j, int max_side, int quality)
{
    char buf[64];
    uint64_t h = 0xcbf29ce484222325ull;
    snprintf(buf, sizeof buf, "v2 %d %d %zu", max_side, quality, j->n); /* quality: re-encodes, PNGs */
    h = fnv_str(h, buf);
    for (size_t i = 0; i < j->n; i++) {
        snprintf(buf, sizeof buf, "%d %d", j->items[i].label, j->items[i].bad != NULL);
        h = fnv_str(fnv_str(h, j->items[i].path), buf);
    }
    return h;
}

/* Writes DIR/make_lmdb.progress atomically (temp file, fsync, rename). Bad and converted
 * files so far (reason / what it was, per item) follow the counters, so a resumed run reports
 * them too. */
static int write_progress(const char *dir, const progress_state *ps, char **why, char **conv)
{
    char p[4300], t[4300];
    snprintf(p, sizeof p, "%s/make_lmdb.progress", dir);
    snprintf(t, sizeof t, "%s/make_lmdb.progress.new", dir);
    FILE *f = fopen(t, "w");
    if (!f) return -1;
    fprintf(f, "make_lmdb-progress 1\nfingerprint %016llx\nitems_done %zu\nrecords %llu\nbytes %llu\n",
            (unsigned long long)ps->fingerprint, ps->items_done, (unsigned long long)ps->records,
            (unsigned long long)ps->bytes);
    for (size_t i = 0; i < ps->items_done; i++)
        if (why[i]) fprintf(f, "bad %zu %s\n", i, why[i]);
        else if (conv[i]) fprintf(f, "conv %zu %s\n", i, conv[i]);
    int rc = fflush(f) || fsync(fileno(f));
    rc |= fclose(f);
    if (rc || rename(t, p)) return -1;
    return 0;
}

static int read_progress(const char *dir, progress_state *ps, char **why, char **conv, size_t n)
{
    char p[4300], line[8192];
    snprintf(p, sizeof p, "%s/make_lmdb.progress", dir);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    unsigned long long fp = 0, rec = 0, by = 0;
    int ok = fgets(line, sizeof line, f) && !strncmp(line, "make_lmdb-progress 1", 20) &&
             fscanf(f, " fingerprint %llx items_done %zu records %llu bytes %llu ", &fp, &ps->items_done, &rec, &by) == 4;
    ps->fingerprint = fp;
    ps->records = rec;
    ps->bytes = by;
    ps->nbad = ps->nconv = 0;
    while (ok && fgets(line, sizeof line, f)) {
        size_t i;
        int off = 0, bad = !strncmp(line, "bad ", 4);
        line[strcspn(line, "\n")] = 0;
        if (sscanf(line + 4, "%zu %n", &i, &off) < 1 || !off || i >= n || (!bad && strncmp(line, "conv ", 5))) {
            ok = 0;
            break;
        }
        char **dst = bad ? &why[i] : &conv[i];
        free(*dst);
        *dst = strdup(line + 4 + off);
        if (bad) ps->nbad++;
        else ps->nconv++;
    }
    fclose(f);
    return ok ? 0 : -1;
}

/* Removes an LMDB directory we made (data.mdb, lock.mdb, labels.txt, progress files only). */
static int remove_lmdb_dir(const char *dir)
{
    static const char *const files[] = {"data.mdb", "lock.mdb", "labels.txt", "make_lmdb.progress",
                                        "make_lmdb.progress.new"};
    char p[4200];
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        if (unlink(p) && errno != ENOENT) return -1;
    }
    return rmdir(dir);
}

static void progress_bar(size_t done, size_t start, size_t total, double t0, int tty, double *last, int final)
{
    double now = ih_now_s();
    if (!final && now - *last < (tty ? 0.25 : 10.0)) return;
    *last = now;
    double el = now - t0, rate = el > 0 ? (double)(done - start) / el : 0;
    double eta = rate > 0 ? (double)(total - done) / rate : 0;
    double frac = total ? (double)done / (double)total : 1;
    char bar[33];
    int fill = (int)(frac * 30 + 0.5);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    fprintf(stderr, "%smake_lmdb: [%s] %zu/%zu files (%.1f%%), %.0f img/s, ETA %dm%02ds%s", tty ? "\r" : "", bar, done,
            total, 100.0 * frac, rate, (int)eta / 60, (int)eta % 60, tty && !final ? "   " : "\n");
}

static void free_job(job *j)
{
    for (size_t i = 0; i < j->n; i++) {
        free(j->items[i].path);
        free(j->items[i].bad);
    }
    free(j->items);
    for (int c = 0; c < j->nclasses; c++) free(j->classes[c]);
    free(j->classes);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: make_lmdb [options] SRC_DIR OUT_LMDB\n"
            "       make_lmdb [options] --list FILE [--root DIR] OUT_LMDB\n"
            "       make_lmdb [options] --val-labels FILE [--classes FILE] SRC_DIR OUT_LMDB\n"
            "Writes an LMDB of Caffe Datum records (encoded JPEG, label) with keys %%010u.\n"
            "Input layouts:\n"
            "  SRC_DIR            folder of class subfolders: SRC_DIR/<class>/<image>; classes sorted\n"
            "                     by name get labels 0..C-1, files are sorted by name (ImageNet train)\n"
            "  --list FILE        instead of SRC_DIR: lines \"relative/path label\"\n"
            "  --root DIR         folder the list's paths are relative to (default: as written)\n"
            "  --val-labels FILE  SRC_DIR is a flat folder (ImageNet val); FILE has lines \"name label\",\n"
            "                     \"name wnid\" or the Kaggle CSV \"ImageId,wnid ...\" (extension optional)\n"
            "  --classes FILE     class names -> labels for wnids: the train LMDB's labels.txt\n"
            "                     (\"label<TAB>name\") or one name per line\n"
            "Processing:\n"
            "  --threads N        read/verify/re-encode threads (default: online CPUs); output order\n"
            "                     and bytes do not depend on N\n"
            "  --max-side N       re-encode images whose longer side exceeds N to exactly N (FFCV's\n"
            "                     max_resolution; antialiased resize, 4:2:0)\n"
            "  --quality Q        JPEG quality of re-encodes and PNG conversions, 1..100 (default 90)\n"
            "  --commit-every N   items per LMDB transaction / progress checkpoint (default 1000)\n"
            "Output:\n"
            "  --resume           continue an interrupted run from OUT_LMDB.tmp (same options)\n"
            "  --force            replace OUT_LMDB if it exists\n"
            "  --quiet            no progress bar\n"
            "  --help             this text\n"
            "Every image is decoded once; bad files are reported with the reason and skipped; PNG files\n"
            "(even when named .JPEG) are converted to JPEG and reported.\n"
            "Exit status: 0 ok, 1 failure, 2 usage.\n");
}

int main(int argc, char **argv)
{
    const char *list = NULL, *root = NULL, *val = NULL, *classes = NULL;
    int force = 0, quiet = 0, resume = 0, threads = (int)sysconf(_SC_NPROCESSORS_ONLN), max_side = 0, quality = 90;
    long commit_every = 1000;
    static const struct option opts[] = {
        {"list", required_argument, 0, 'l'},       {"root", required_argument, 0, 'r'},
        {"val-labels", required_argument, 0, 'V'}, {"classes", required_argument, 0, 'C'},
        {"threads", required_argument, 0, 't'},    {"max-side", required_argument, 0, 'm'},
        {"quality", required_argument, 0, 'Q'},    {"commit-every", required_argument, 0, 'c'},
        {"resume", no_argument, 0, 'R'},           {"force", no_argument, 0, 'f'},
        {"quiet", no_argument, 0, 'q'},            {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "fqh", opts, NULL)) != -1) {
        switch (o) {
        case 'l': list = optarg; break;
        case 'r': root = optarg; break;
        case 'V': val = optarg; break;
        case 'C': classes = optarg; break;
        case 't': threads = atoi(optarg); break;
        case 'm': max_side = atoi(optarg); break;
        case 'Q': quality = atoi(optarg); break;
        case 'c': commit_every = atol(optarg); break;
        case 'R': resume = 1; break;
        case 'f': force = 1; break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    int npos = argc - optind;
    const char *bad_usage = list && npos != 1   ? "with --list give exactly one OUT_LMDB"
                            : !list && npos != 2 ? "need SRC_DIR and OUT_LMDB"
                            : root && !list      ? "--root needs --list"
                            : list && val        ? "--list and --val-labels exclude each other"
                            : classes && !val    ? "--classes needs --val-labels"
                            : threads < 1 || threads > 256 ? "--threads must be 1..256"
                            : max_side < 0 || max_side > 65535 ? "--max-side must be 1..65535"
                            : quality < 1 || quality > 100 ? "--quality must be 1..100"
                            : commit_every < 1 ? "--commit-every must be >= 1"
                            : resume && force ? "--resume and --force exclude each other"
                                               : NULL;
    if (bad_usage) {
        fprintf(stderr, "make_lmdb: %s\n", bad_usage);
        usage(stderr);
        return 2;
    }
    const char *src = list ? NULL : argv[optind];
    const char *out = argv[argc - 1];

    job j = {0};
    int rc = list ? scan_list(&j, list, root) : val ? scan_val(&j, src, val, classes) : scan_folder(&j, src);
    if (rc) {
        free_job(&j);
        return 1;
    }

    char **why = calloc(j.n ? j.n : 1, sizeof(char *));  /* bad reason per item */
    char **conv = calloc(j.n ? j.n : 1, sizeof(char *)); /* what a converted (non-JPEG) item was */
    struct stat st;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    if (lstat(out, &st) == 0) {
        if (resume && lstat(tmp, &st) != 0) {
            printf("make_lmdb: %s is complete; nothing to resume\n", out);
            goto early; /* rc is 0 */
        }
        if (!force) {
            fprintf(stderr, "make_lmdb: %s exists; use --force to replace it\n", out);
            rc = 1;
            goto early;
        }
        if (!S_ISDIR(st.st_mode) || remove_lmdb_dir(out)) {
            fprintf(stderr, "make_lmdb: cannot replace %s (only an LMDB folder with data.mdb/lock.mdb/labels.txt is "
                    "removed): %s\n", out, strerror(errno));
            rc = 1;
            goto early;
        }
    }
    uint64_t fp = fingerprint(&j, max_side, quality);
    progress_state ps = {fp, 0, 0, 0, 0, 0};
    int resuming = 0;
    if (lstat(tmp, &st) == 0) {
        if (resume) {
            progress_state got;
            if (!S_ISDIR(st.st_mode) || read_progress(tmp, &got, why, conv, j.n)) {
                fprintf(stderr, "make_lmdb: %s has no readable progress file; cannot resume: run again without "
                        "--resume to start over\n", tmp);
                rc = 1;
                goto early;
            }
            if (got.fingerprint != fp || got.items_done > j.n) {
                fprintf(stderr, "make_lmdb: %s was made from other files or options; cannot resume: run again "
                        "without --resume to start over\n", tmp);
                rc = 1;
                goto early;
            }
            ps = got;
            resuming = 1;
        } else {
            fprintf(stderr, "make_lmdb: discarding the interrupted run in %s (use --resume to continue it)\n", tmp);
            if (!S_ISDIR(st.st_mode) || remove_lmdb_dir(tmp)) {
                fprintf(stderr, "make_lmdb: stale %s is in the way and is not an LMDB folder; remove it\n", tmp);
                rc = 1;
                goto early;
            }
        }
    }
    if (!resuming && mkdir(tmp, 0775)) {
        fprintf(stderr, "make_lmdb: cannot create %s: %s\n", tmp, strerror(errno));
        rc = 1;
        goto early;
    }

    MDB_env *env = NULL;
    MDB_dbi dbi;
    MDB_txn *txn = NULL;
    pool pl = {.j = &j, .max_side = max_side, .quality = quality};
    worker *ws = calloc((size_t)threads, sizeof *ws);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    int started = 0;
    size_t chunk = (size_t)commit_every < j.n ? (size_t)commit_every : j.n;
    pl.res = calloc(chunk ? chunk : 1, sizeof(result));
    pthread_mutex_init(&pl.mu, NULL);
    pthread_cond_init(&pl.cv_work, NULL);
    pthread_cond_init(&pl.cv_done, NULL);
    size_t mapsize = (size_t)(j.total_bytes + j.total_bytes / 8) + ((size_t)64 << 20);
    int mrc = mdb_env_create(&env);
    if (!mrc) mrc = mdb_env_set_mapsize(env, mapsize);
    if (!mrc) mrc = mdb_env_open(env, tmp, MDB_NOSYNC, 0664);
    if (mrc) {
        fprintf(stderr, "make_lmdb: cannot %s LMDB in %s: %s\n", resuming ? "open the" : "create an", tmp,
                mdb_strerror(mrc));
        rc = 1;
        goto done;
    }
    {
        /* Records past the last progress checkpoint (killed between a commit and its
         * progress file) are deleted: the items after items_done are redone. */
        MDB_stat ms;
        mrc = mdb_txn_begin(env, NULL, 0, &txn);
        if (!mrc) mrc = mdb_dbi_open(txn, NULL, 0, &dbi);
        if (!mrc) mrc = mdb_stat(txn, dbi, &ms);
        if (!mrc && ms.ms_entries < ps.records) {
            fprintf(stderr, "make_lmdb: %s holds %zu records but its progress file says %llu; cannot resume: run "
                    "again without --resume\n", tmp, ms.ms_entries, (unsigned long long)ps.records);
            mdb_txn_abort(txn);
            txn = NULL;
            rc = 1;
            goto done;
        }
        for (uint64_t k = ps.records; !mrc && k < ms.ms_entries; k++) {
            char key[24];
            snprintf(key, sizeof key, "%010u", (unsigned)k);
            MDB_val kv = {10, key};
            mrc = mdb_del(txn, dbi, &kv, NULL);
        }
        if (!mrc) mrc = mdb_txn_commit(txn);
        else mdb_txn_abort(txn);
        txn = NULL;
        if (mrc) {
            fprintf(stderr, "make_lmdb: %s: %s\n", tmp, mdb_strerror(mrc));
            rc = 1;
            goto done;
        }
        if (resuming)
            fprintf(stderr, "make_lmdb: resuming %s at file %zu of %zu (%llu records, %zu bad so far)\n", tmp,
                    ps.items_done, j.n, (unsigned long long)ps.records, ps.nbad);
    }
    for (int i = 0; i < threads; i++) {
        ws[i].p = &pl;
        ws[i].tj = tjInitCompress();
        if (pipe_decoder_create(&ws[i].dec) != IH_OK || !ws[i].tj) {
            fprintf(stderr, "make_lmdb: %s\n", ih_last_error());
            rc = 1;
            goto done;
        }
    }
    for (int i = 0; i < threads; i++) {
        char name[24];
        snprintf(name, sizeof name, "ih-mklmdb-%02d", i);
        if (ih_thread_start(&tids[i], name, worker_main, &ws[i]) != IH_OK) {
            fprintf(stderr, "make_lmdb: %s\n", ih_last_error());
            rc = 1;
            goto done;
        }
        started++;
    }
    const char *kill_env = getenv("IH_MAKE_LMDB_KILL_AFTER_COMMITS");
    long kill_after = kill_env ? atol(kill_env) : 0, commits = 0;
    int tty = isatty(2) && !quiet;
    double t0 = ih_now_s(), last = 0;
    size_t start_items = ps.items_done;
    for (size_t c0 = ps.items_done; c0 < j.n;) {
        size_t c1 = c0 + chunk < j.n ? c0 + chunk : j.n;
        run_chunk(&pl, c0, c1);
        for (;;) { /* write the chunk in item order; redone with a bigger map on MDB_MAP_FULL */
            uint64_t nrec = ps.records, bytes = ps.bytes;
            mrc = mdb_txn_begin(env, NULL, 0, &txn);
            for (size_t i = c0; i < c1 && !mrc; i++) {
                result *r = &pl.res[i - c0];
                if (!r->len) continue;
                pipe_datum d = {.data = r->data, .size = r->len, .label = j.items[i].label, .channels = 3,
                                .height = r->h, .width = r->w, .encoded = 1};
                char key[24];
                snprintf(key, sizeof key, "%010u", (unsigned)nrec);
                MDB_val k = {10, key}, v = {pipe_datum_encoded_size(&d), NULL};
                mrc = mdb_put(txn, dbi, &k, &v, MDB_APPEND | MDB_RESERVE);
                if (mrc) break;
                pipe_datum_encode(v.mv_data, v.mv_size, &d);
                nrec++;
                bytes += v.mv_size;
            }
            if (!mrc) mrc = mdb_txn_commit(txn);
            else mdb_txn_abort(txn);
            txn = NULL;
            if (mrc == MDB_MAP_FULL) {
                mapsize *= 2;
                mrc = mdb_env_set_mapsize(env, mapsize);
                if (mrc) break;
                continue;
            }
            if (!mrc) {
                ps.records = nrec;
                ps.bytes = bytes;
            }
            break;
        }
        if (mrc) break;
        if (kill_after > 0 && ++commits == kill_after) raise(SIGKILL);
        for (size_t i = c0; i < c1; i++) {
            result *r = &pl.res[i - c0];
            if (r->len && r->note[0]) {
                conv[i] = strdup(r->note);
                ps.nconv++;
                fprintf(stderr, "%smake_lmdb: converted %s: %s\n", tty ? "\n" : "", j.items[i].path, r->note);
            }
            if (r->len) continue;
            why[i] = strdup(r->why);
            ps.nbad++;
            fprintf(stderr, "%smake_lmdb: skipping %s: %s\n", tty ? "\n" : "", j.items[i].path, r->why);
        }
        ps.items_done = c1;
        if (write_progress(tmp, &ps, why, conv)) {
            fprintf(stderr, "make_lmdb: cannot write the progress file in %s: %s\n", tmp, strerror(errno));
            rc = 1;
            goto done;
        }
        if (!quiet) progress_bar(c1, start_items, j.n, t0, tty, &last, 0);
        c0 = c1;
    }
    if (mrc) {
        fprintf(stderr, "\nmake_lmdb: writing %s: %s\n", tmp, mdb_strerror(mrc));
        rc = 1;
        goto done;
    }
    if (!quiet) progress_bar(j.n, start_items, j.n, t0, tty, &last, 1);
    if (ps.records == 0) {
        fprintf(stderr, "make_lmdb: none of the %zu files could be decoded; nothing written\n", j.n);
        rc = 1;
        goto done;
    }
    mrc = mdb_env_sync(env, 1);
    if (mrc) {
        fprintf(stderr, "make_lmdb: sync %s: %s\n", tmp, mdb_strerror(mrc));
        rc = 1;
        goto done;
    }
    {
        char lp[4300];
        snprintf(lp, sizeof lp, "%s/labels.txt", tmp);
        FILE *lf = fopen(lp, "w");
        for (int c = 0; lf && c < j.nclasses; c++) fprintf(lf, "%d\t%s\n", c, j.classes[c] ? j.classes[c] : "?");
        if (!lf || fclose(lf)) {
            fprintf(stderr, "make_lmdb: cannot write %s: %s\n", lp, strerror(errno));
            rc = 1;
            goto done;
        }
        snprintf(lp, sizeof lp, "%s/make_lmdb.progress", tmp);
        unlink(lp);
    }
    mdb_env_close(env);
    env = NULL;
    if (rename(tmp, out)) {
        fprintf(stderr, "make_lmdb: rename %s -> %s: %s\n", tmp, out, strerror(errno));
        rc = 1;
        goto done;
    }
    /* Final report: counts, bytes, and every bad file with its reason (also those found
     * before a resume). */
    printf("make_lmdb: wrote %llu records (%.1f MB) of %d classes to %s in %.1f s with %d threads; skipped %zu bad "
           "file%s; converted %zu non-JPEG file%s\n", (unsigned long long)ps.records, ps.bytes / 1e6, j.nclasses, out,
           ih_now_s() - t0, threads, ps.nbad, ps.nbad == 1 ? "" : "s", ps.nconv, ps.nconv == 1 ? "" : "s");
    for (size_t i = 0; i < j.n; i++)
        if (why[i]) printf("  bad: %s: %s\n", j.items[i].path, why[i]);
        else if (conv[i]) printf("  converted: %s: %s\n", j.items[i].path, conv[i]);
done:
    pthread_mutex_lock(&pl.mu);
    pl.stop = 1;
    pthread_cond_broadcast(&pl.cv_work);
    pthread_mutex_unlock(&pl.mu);
    for (int i = 0; i < started; i++) pthread_join(tids[i], NULL);
    for (int i = 0; i < threads; i++) {
        pipe_decoder_destroy(ws[i].dec);
        if (ws[i].tj) tjDestroy(ws[i].tj);
        free(ws[i].fbuf);
        free(ws[i].fbuf2);
        free(ws[i].rgb);
        free(ws[i].tab);
    }
    free(ws);
    free(tids);
    for (size_t i = 0; i < chunk; i++) free(pl.res[i].data);
    free(pl.res);
    if (env) mdb_env_close(env);
    /* A failed run leaves OUT.tmp only when it holds resumable progress. */
    if (rc) {
        char pf[4300];
        snprintf(pf, sizeof pf, "%s/make_lmdb.progress", tmp);
        if (access(pf, F_OK)) remove_lmdb_dir(tmp);
    }
early:
    for (size_t i = 0; i < j.n; i++) {
        free(why[i]);
        free(conv[i]);
    }
    free(why);
    free(conv);
    free_job(&j);
    return rc;
}
