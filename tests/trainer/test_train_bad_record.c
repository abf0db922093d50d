/* test_train_bad_record — a training LMDB with one corrupt record (a JPEG cut in half, the way a
 * failed copy leaves it) and one non-JPEG record trains to the end: each bad record is reported
 * once with its index, the epoch summary counts the replaced samples, the run exits 0. */
#include <lmdb.h>

#include "pipeline/record.h"
#include "tests/trainer/tiny_data.h"

static char out[1 << 18];

/* Rewrites record `key` of the LMDB at `dir`: keep only `keep` bytes of its JPEG, or replace the
 * payload with `text` when it is not NULL. Returns 0 on success. */
static int damage(const char *dir, const char *key, size_t keep, const char *text)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    if (mdb_env_create(&env) || mdb_env_open(env, dir, 0, 0644)) return 1;
    if (mdb_txn_begin(env, NULL, 0, &txn) || mdb_dbi_open(txn, NULL, 0, &dbi)) return 1;
    MDB_val k = {strlen(key), (void *)key}, v;
    int rc = 1;
    if (mdb_get(txn, dbi, &k, &v) == 0) {
        pipe_datum d;
        static uint8_t buf[1 << 20];
        if (pipe_datum_decode(v.mv_data, v.mv_size, &d) == IH_OK) {
            static uint8_t copy[1 << 20];
            if (text) { d.data = (const uint8_t *)text; d.size = strlen(text); }
            else { memcpy(copy, d.data, keep); d.data = copy; d.size = keep; }
            size_t n = pipe_datum_encode(buf, sizeof buf, &d);
            MDB_val nv = {n, buf};
            rc = n == 0 || mdb_put(txn, dbi, &k, &nv, 0);
        }
    }
    if (mdb_txn_commit(txn)) rc = 1;
    mdb_env_close(env);
    return rc;
}

int main(void)
{
    char tmp[] = "/tmp/ih_badrec_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    if (make_tiny_data(tmp, 3, 16, 2)) { CHECK(0, "could not build the tiny dataset"); return ih_test_result(); }
    char db[1024];
    snprintf(db, sizeof db, "%s/train.lmdb", tmp);
    CHECK(damage(db, "0000000005", 300, NULL) == 0, "could not truncate record 5");
    CHECK(damage(db, "0000000011", 0, "not an image at all") == 0, "could not replace record 11");
    int rc = run_cmd(out, sizeof out,
                     "%s/bin/train --train %s -o %s/run --arch resnet8 --image-size 16 -b 8 --epochs 2 "
                     "--threads 2 --log-every 1000 --no-progress",
                     bin_dir(), db, tmp);
    CHECK(rc == 0, "train exit %d, want 0:\n%s", rc, out);
    CHECK(strstr(out, "RESULT") != NULL, "no RESULT line:\n%s", out);
    CHECK(strstr(out, "record 11") != NULL, "record 11 (not an image) not named:\n%s", out);
    CHECK(strstr(out, "samples came from undecodable records") != NULL, "no epoch summary of replacements:\n%s", out);
    /* Each bad record is reported once, not once per epoch. */
    int n11 = 0;
    for (const char *p = out; (p = strstr(p, "record 11")) != NULL; p++) n11++;
    CHECK(n11 == 1, "record 11 reported %d times, want once:\n%s", n11, out);
    run_cmd(out, sizeof out, "rm -rf %s", tmp);
    return ih_test_result();
}
