/* test_loader_caffe_lmdb — an LMDB as Caffe's convert_imageset --encoded writes it (keys
 * "%08d_<filename>", Datum without channels/height/width) is indexed by a cursor scan and read
 * in key order; labels and images equal those of the same records under our keys; a single
 * LMDB data file (MDB_NOSUBDIR) opens too. */
#define _GNU_SOURCE
#include <string.h>

#include "pipeline/db.h"
#include "pipeline/loader.h"
#include "tests/check.h"
#include "tests/pipeline/fixtures.h"

enum { N = 23, B = 5, CROP = 20 };

static int read_eval(const char *db, int32_t *lab, uint8_t *img)
{
    pipe_cfg c;
    pipe_cfg_defaults(&c);
    c.lmdb_path = db, c.batch = B, c.threads = 2, c.crop = CROP, c.resize = 24, c.train = 0;
    pipe_loader *l = NULL;
    ih_err e = pipe_loader_create(&l, &c);
    CHECK(e == IH_OK, "create %s: %s", db, ih_last_error());
    if (e) return 0;
    CHECK(pipe_loader_num_classes(l) == 7, "classes %d (labels i %% 7 scanned)", pipe_loader_num_classes(l));
    pipe_batch b;
    int got = 0;
    CHECK(pipe_loader_start_epoch(l, 0, 0) == IH_OK, "start");
    while (pipe_loader_next(l, &b) == IH_OK && b.n > 0) {
        memcpy(lab + got, b.labels, (size_t)b.n * 4);
        memcpy(img + (size_t)got * CROP * CROP * 3, b.images, (size_t)b.n * CROP * CROP * 3);
        got += b.n;
        pipe_loader_release(l, &b);
    }
    CHECK(pipe_loader_bad_records(l) == 0, "bad records");
    pipe_loader_destroy(l);
    return got;
}

int main(void)
{
    char dir[256], ours[300], caffe[300], single[300];
    fx_tmpdir(dir, "caffe");
    snprintf(ours, sizeof ours, "%s/ours", dir);
    snprintf(caffe, sizeof caffe, "%s/caffe", dir);
    uint8_t *vo[N], *vc[N];
    size_t lo[N], lc[N];
    for (int i = 0; i < N; i++) {
        unsigned long jl;
        unsigned char *j = fx_jpeg(50 + i, 70 - i, i, TJPF_RGB, TJSAMP_420, 90, &jl);
        vo[i] = fx_datum(j, jl, i % 7, 50 + i, 70 - i, &lo[i]);
        vc[i] = fx_datum(j, jl, i % 7, 0, 0, &lc[i]); /* no sizes, as Caffe writes them */
        tjFree(j);
    }
    fx_write_lmdb(ours, N, (const uint8_t *const *)vo, lo, 0);
    fx_write_lmdb(caffe, N, (const uint8_t *const *)vc, lc, 1);

    pipe_db *db;
    CHECK(pipe_db_open(&db, caffe) == IH_OK, "open caffe: %s", ih_last_error());
    CHECK(pipe_db_count(db) == N && pipe_db_foreign_keys(db), "caffe keys indexed");
    char key[64];
    pipe_db_key(db, 12, key, sizeof key);
    CHECK(!strcmp(key, "00000012_img12.jpg"), "key of record 12: %s", key);
    pipe_db_close(db);
    CHECK(pipe_db_open(&db, ours) == IH_OK && !pipe_db_foreign_keys(db), "our keys detected");
    pipe_db_close(db);

    static int32_t la[N], lb[N], ls[N];
    static uint8_t ia[N * CROP * CROP * 3], ib[N * CROP * CROP * 3], is[N * CROP * CROP * 3];
    CHECK(read_eval(ours, la, ia) == N && read_eval(caffe, lb, ib) == N, "epoch sizes");
    for (int i = 0; i < N; i++) CHECK(lb[i] == i % 7, "caffe record %d label %d", i, lb[i]);
    CHECK(!memcmp(la, lb, sizeof la) && !memcmp(ia, ib, sizeof ia), "caffe LMDB reads differently from ours");

    /* The data file alone (MDB_NOSUBDIR). */
    snprintf(single, sizeof single, "%s/single.mdb", dir);
    char src[400];
    snprintf(src, sizeof src, "%s/data.mdb", caffe);
    CHECK(rename(src, single) == 0, "move data.mdb");
    CHECK(read_eval(single, ls, is) == N && !memcmp(ls, lb, sizeof ls) && !memcmp(is, ib, sizeof is),
          "single-file LMDB");
    for (int i = 0; i < N; i++) free(vo[i]), free(vc[i]);
    fx_rmtree(dir);
    return ih_test_result();
}
