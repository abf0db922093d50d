/* tools/make_lmdb — folder of class subfolders (or a list file) -> LMDB of Caffe Datum
 * records with encoded JPEG bytes, readable by our loader, Caffe and DALI.
 *
 *   make_lmdb [--force] SRC_DIR OUT_LMDB            SRC_DIR/<class>/<image>
 *   make_lmdb --list FILE [--root DIR] OUT_LMDB     lines "relative/path label"
 *
 * Classes are sorted by name -> labels 0..C-1, files sorted by name; keys are "%010u" in
 * insertion order; each Datum has the original height/width, channels 3, encoded=true.
 * Every file is decoded once (all entropy-coded data, at 1/8 scale) with the pipeline's own
 * decoder; bad files are reported with path and reason and skipped. The LMDB is written to
 * OUT.tmp and renamed to OUT only when complete; OUT/labels.txt holds "label<TAB>class".
 * Exit: 0 ok, 1 failure, 2 usage.
 */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "pipeline/decode.h"
#include "pipeline/record.h"

enum { COMMIT_EVERY = 1000 };

typedef struct {
    char *path;
    int label;
    int state; /* 0 unchecked, 1 good, 2 bad */
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
    j->items[j->n].state = 0;
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

/* Removes an LMDB directory we made (data.mdb, lock.mdb, labels.txt only). */
static int remove_lmdb_dir(const char *dir)
{
    static const char *const files[] = {"data.mdb", "lock.mdb", "labels.txt"};
    char p[4200];
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        if (unlink(p) && errno != ENOENT) return -1;
    }
    return rmdir(dir);
}

static void progress(size_t done, size_t total, double t0, int tty, double *last, int final)
{
    double now = ih_now_s();
    if (!final && now - *last < (tty ? 0.25 : 5.0)) return;
    *last = now;
    double el = now - t0, rate = el > 0 ? done / el : 0;
    double eta = rate > 0 ? (total - done) / rate : 0;
    fprintf(stderr, "%smake_lmdb: %zu/%zu files (%.1f%%), %.0f img/s, ETA %.0f s%s", tty ? "\r" : "", done, total,
            total ? 100.0 * done / total : 100.0, rate, eta, tty && !final ? "   " : "\n");
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: make_lmdb [options] SRC_DIR OUT_LMDB\n"
            "       make_lmdb [options] --list FILE [--root DIR] OUT_LMDB\n"
            "Writes an LMDB of Caffe Datum records (encoded JPEG, label) with keys %%010u.\n"
            "  SRC_DIR            folder of class subfolders: SRC_DIR/<class>/<image>; classes sorted\n"
            "                     by name get labels 0..C-1, files are sorted by name\n"
            "  --list FILE        instead of SRC_DIR: lines \"relative/path label\"\n"
            "  --root DIR         folder the list's paths are relative to (default: as written)\n"
            "  --force            replace OUT_LMDB if it exists\n"
            "  --quiet            no progress line\n"
            "  --help             this text\n"
            "Every image is decoded once; bad files are reported and skipped.\n"
            "Exit status: 0 ok, 1 failure, 2 usage.\n");
}

int main(int argc, char **argv)
{
    const char *list = NULL, *root = NULL;
    int force = 0, quiet = 0;
    static const struct option opts[] = {
        {"list", required_argument, 0, 'l'}, {"root", required_argument, 0, 'r'}, {"force", no_argument, 0, 'f'},
        {"quiet", no_argument, 0, 'q'},      {"help", no_argument, 0, 'h'},       {0, 0, 0, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "fqh", opts, NULL)) != -1) {
        switch (o) {
        case 'l': list = optarg; break;
        case 'r': root = optarg; break;
        case 'f': force = 1; break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    int npos = argc - optind;
    if ((list && npos != 1) || (!list && npos != 2) || (root && !list)) {
        fprintf(stderr, "make_lmdb: %s\n", list ? "with --list give exactly one OUT_LMDB" :
                                           root ? "--root needs --list" : "need SRC_DIR and OUT_LMDB");
        usage(stderr);
        return 2;
    }
    const char *src = list ? NULL : argv[optind];
    const char *out = argv[argc - 1];

    job j = {0};
    int rc = list ? scan_list(&j, list, root) : scan_folder(&j, src);
    if (rc) return 1;

    struct stat st;
    if (lstat(out, &st) == 0) {
        if (!force) {
            fprintf(stderr, "make_lmdb: %s exists; use --force to replace it\n", out);
            return 1;
        }
        if (!S_ISDIR(st.st_mode) || remove_lmdb_dir(out)) {
            fprintf(stderr, "make_lmdb: cannot replace %s (only an LMDB folder with data.mdb/lock.mdb/labels.txt is "
                    "removed): %s\n", out, strerror(errno));
            return 1;
        }
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    if (lstat(tmp, &st) == 0 && (!S_ISDIR(st.st_mode) || remove_lmdb_dir(tmp))) {
        fprintf(stderr, "make_lmdb: stale %s is in the way and is not an LMDB folder; remove it\n", tmp);
        return 1;
    }
    if (mkdir(tmp, 0775)) {
        fprintf(stderr, "make_lmdb: cannot create %s: %s\n", tmp, strerror(errno));
        return 1;
    }

    MDB_env *env = NULL;
    MDB_dbi dbi;
    MDB_txn *txn = NULL;
    pipe_decoder *dec = NULL;
    uint8_t *fbuf = NULL;
    size_t fcap = 0;
    size_t mapsize = (size_t)(j.total_bytes + j.total_bytes / 8) + ((size_t)64 << 20);
    int mrc = mdb_env_create(&env);
    if (!mrc) mrc = mdb_env_set_mapsize(env, mapsize);
    if (!mrc) mrc = mdb_env_open(env, tmp, MDB_NOSYNC, 0664);
    if (mrc) {
        fprintf(stderr, "make_lmdb: cannot create LMDB in %s: %s\n", tmp, mdb_strerror(mrc));
        rc = 1;
        goto done;
    }
    if (pipe_decoder_create(&dec) != IH_OK) {
        fprintf(stderr, "make_lmdb: %s\n", ih_last_error());
        rc = 1;
        goto done;
    }
    {
        mrc = mdb_txn_begin(env, NULL, 0, &txn);
        if (!mrc) mrc = mdb_dbi_open(txn, NULL, 0, &dbi);
        if (!mrc) mrc = mdb_txn_commit(txn);
        txn = NULL;
        if (mrc) {
            fprintf(stderr, "make_lmdb: %s: %s\n", tmp, mdb_strerror(mrc));
            rc = 1;
            goto done;
        }
    }
    int tty = isatty(2);
    double t0 = ih_now_s(), last = 0;
    uint64_t nrec = 0, bytes = 0;
    size_t skipped = 0;
    for (size_t c0 = 0; c0 < j.n;) {
        size_t c1 = c0 + COMMIT_EVERY < j.n ? c0 + COMMIT_EVERY : j.n;
        uint64_t nrec0 = nrec, bytes0 = bytes;
        mrc = mdb_txn_begin(env, NULL, 0, &txn);
        for (size_t i = c0; i < c1 && !mrc; i++) {
            item *it = &j.items[i];
            if (it->state == 2) continue;
            size_t len = 0;
            char why[600];
            int W = 0, H = 0, ok = read_file(it->path, &fbuf, &fcap, &len, why, sizeof why) == 0;
            if (ok && it->state == 0) {
                const uint8_t *rgb;
                int sw, sh;
                ok = pipe_decoder_open(dec, fbuf, len, &W, &H) == IH_OK &&
                     pipe_decoder_full(dec, fbuf, len, 8, &rgb, &sw, &sh) == IH_OK;
                if (!ok) snprintf(why, sizeof why, "%s", ih_last_error());
            } else if (ok) {
                ok = pipe_decoder_open(dec, fbuf, len, &W, &H) == IH_OK;
            }
            if (!ok) {
                fprintf(stderr, "%smake_lmdb: skipping %s: %s\n", tty && !quiet ? "\n" : "", it->path, why);
                it->state = 2;
                skipped++;
                continue;
            }
            it->state = 1;
            pipe_datum d = {.data = fbuf, .size = len, .label = it->label, .channels = 3, .height = H, .width = W,
                            .encoded = 1};
            char key[24];
            snprintf(key, sizeof key, "%010u", (unsigned)nrec);
            MDB_val k = {10, key}, v = {pipe_datum_encoded_size(&d), NULL};
            mrc = mdb_put(txn, dbi, &k, &v, MDB_APPEND | MDB_RESERVE);
            if (mrc) break;
            pipe_datum_encode(v.mv_data, v.mv_size, &d);
            nrec++;
            bytes += v.mv_size;
            if (!quiet) progress(i + 1, j.n, t0, tty, &last, 0);
        }
        if (!mrc) mrc = mdb_txn_commit(txn);
        else mdb_txn_abort(txn);
        txn = NULL;
        if (mrc == MDB_MAP_FULL) {
            mapsize *= 2;
            mrc = mdb_env_set_mapsize(env, mapsize);
            if (mrc) break;
            nrec = nrec0; /* redo this chunk with a bigger map */
            bytes = bytes0;
            continue;
        }
        if (mrc) break;
        c0 = c1;
    }
    if (mrc) {
        fprintf(stderr, "\nmake_lmdb: writing %s: %s\n", tmp, mdb_strerror(mrc));
        rc = 1;
        goto done;
    }
    if (!quiet) progress(j.n, j.n, t0, tty, &last, 1);
    if (nrec == 0) {
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
    }
    mdb_env_close(env);
    env = NULL;
    if (rename(tmp, out)) {
        fprintf(stderr, "make_lmdb: rename %s -> %s: %s\n", tmp, out, strerror(errno));
        rc = 1;
        goto done;
    }
    printf("make_lmdb: wrote %llu records (%.1f MB) of %d classes to %s in %.1f s; skipped %zu bad file%s\n",
           (unsigned long long)nrec, bytes / 1e6, j.nclasses, out, ih_now_s() - t0, skipped, skipped == 1 ? "" : "s");
done:
    if (env) mdb_env_close(env);
    if (rc) remove_lmdb_dir(tmp);
    pipe_decoder_destroy(dec);
    free(fbuf);
    for (size_t i = 0; i < j.n; i++) free(j.items[i].path);
    free(j.items);
    for (int c = 0; c < j.nclasses; c++) free(j.classes[c]);
    free(j.classes);
    return rc;
}
