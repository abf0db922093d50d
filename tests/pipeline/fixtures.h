/* tests/pipeline/fixtures.h — helpers shared by the pipeline and tools tests (header-only):
 * temporary folders, small JPEGs made with TurboJPEG (independent of our decoder), and LMDBs
 * written directly through the LMDB API with our keys or Caffe's "%08d_<name>" keys.
 * Include after defining _GNU_SOURCE (nftw). */
#ifndef IH_TESTS_PIPELINE_FIXTURES_H
#define IH_TESTS_PIPELINE_FIXTURES_H

#include <ftw.h>
#include <lmdb.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "pipeline/record.h"

/* Makes a fresh folder under $TMPDIR (or /tmp) into buf (>= 256 bytes); exits 1 on failure. */
static inline void fx_tmpdir(char *buf, const char *tag)
{
    const char *t = getenv("TMPDIR");
    snprintf(buf, 256, "%s/ih-%s-XXXXXX", t && *t ? t : "/tmp", tag);
    if (!mkdtemp(buf)) {
        perror("mkdtemp");
        exit(1);
    }
}

static inline int fx_rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(p);
}

static inline void fx_rmtree(const char *dir) { nftw(dir, fx_rm_one, 16, FTW_DEPTH | FTW_PHYS); }

/* A smooth test picture (gradients + low-frequency waves + a few edges) whose content
 * depends on `id`; w*h*3 bytes RGB (or 4 channels when cmyk: inverted CMYK of the RGB). */
static inline void fx_picture(uint8_t *px, int w, int h, int id, int channels)
{
    double a = 0.02 + 0.01 * (id % 7), b = 0.03 + 0.007 * (id % 5);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double r = 128 + 90 * sin(a * x + 0.3 * id) * cos(b * y);
            double g = 255.0 * x / (w > 1 ? w - 1 : 1);
            double bl = 255.0 * y / (h > 1 ? h - 1 : 1);
            if (((x / 24) + (y / 24) + id) % 5 == 0) bl = 255 - bl; /* some edges */
            uint8_t v[3] = {(uint8_t)r, (uint8_t)g, (uint8_t)bl};
            uint8_t *p = px + ((size_t)y * w + x) * (size_t)channels;
            if (channels == 1) p[0] = (uint8_t)((v[0] + v[1] + v[2]) / 3);
            else for (int c = 0; c < 3; c++) p[c] = v[c];
            if (channels == 4) p[3] = 255; /* inverted CMYK (Adobe): C'=R, M'=G, Y'=B, K'=255 */
        }
}

/* JPEG of fx_picture(w, h, id): pf TJPF_RGB / TJPF_GRAY / TJPF_CMYK. Caller frees with tjFree. */
static inline unsigned char *fx_jpeg(int w, int h, int id, int pf, int subsamp, int quality, unsigned long *size)
{
    int ch = pf == TJPF_GRAY ? 1 : pf == TJPF_CMYK ? 4 : 3;
    uint8_t *px = malloc((size_t)w * h * ch);
    fx_picture(px, w, h, id, ch);
    tjhandle tj = tjInitCompress();
    unsigned char *out = NULL;
    *size = 0;
    if (tjCompress2(tj, px, w, 0, h, pf, &out, size, pf == TJPF_GRAY ? TJSAMP_GRAY : subsamp, quality, 0)) {
        fprintf(stderr, "tjCompress2: %s\n", tjGetErrorStr2(tj));
        exit(1);
    }
    tjDestroy(tj);
    free(px);
    return out;
}

/* Writes an LMDB folder `dir` (created) with n values; key i is "%010u" (caffe = 0) or
 * "%08d_img<i>.jpg" (caffe = 1). Exits 1 on failure. */
static inline void fx_write_lmdb(const char *dir, int n, const uint8_t *const *vals, const size_t *lens, int caffe)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    mkdir(dir, 0775);
    int rc = mdb_env_create(&env);
    if (!rc) rc = mdb_env_set_mapsize(env, (size_t)256 << 20);
    if (!rc) rc = mdb_env_open(env, dir, 0, 0664);
    if (!rc) rc = mdb_txn_begin(env, NULL, 0, &txn);
    if (!rc) rc = mdb_dbi_open(txn, NULL, 0, &dbi);
    for (int i = 0; i < n && !rc; i++) {
        char key[64];
        if (caffe) snprintf(key, sizeof key, "%08d_img%d.jpg", i, i);
        else snprintf(key, sizeof key, "%010u", (unsigned)i);
        MDB_val k = {strlen(key), key}, v = {lens[i], (void *)vals[i]};
        rc = mdb_put(txn, dbi, &k, &v, 0);
    }
    if (!rc) rc = mdb_txn_commit(txn);
    if (rc) {
        fprintf(stderr, "fx_write_lmdb %s: %s\n", dir, mdb_strerror(rc));
        exit(1);
    }
    mdb_env_close(env);
}

/* Datum bytes (malloc'd) for an image with label; dims written when w,h > 0. */
static inline uint8_t *fx_datum(const uint8_t *img, size_t len, int label, int w, int h, size_t *out_len)
{
    pipe_datum d = {.data = img, .size = len, .label = label, .channels = w > 0 ? 3 : 0, .height = h, .width = w,
                    .encoded = 1};
    size_t n = pipe_datum_encoded_size(&d);
    uint8_t *b = malloc(n);
    *out_len = pipe_datum_encode(b, n, &d);
    return b;
}

/* Peak signal-to-noise ratio of two n-byte images, in dB (999 when identical). */
static inline double fx_psnr(const uint8_t *a, const uint8_t *b, size_t n)
{
    double se = 0;
    for (size_t i = 0; i < n; i++) se += (double)(a[i] - b[i]) * (a[i] - b[i]);
    if (se == 0) return 999;
    return 10 * log10(255.0 * 255.0 * n / se);
}

#endif
