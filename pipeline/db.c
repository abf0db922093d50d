/* pipeline/db.c — LMDB reader by dense index (see db.h). LMDB return codes are converted
 * to ih_err here and only here (mdb_strerror in every message). */
#include "db.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct pipe_db {
    MDB_env *env;
    MDB_dbi dbi;
    int64_t count;
    char *path;
    /* Foreign key table (NULL for our keys): key i is keys[koff[i] .. koff[i+1]). */
    char *keys;
    uint64_t *koff;
};

struct pipe_db_reader {
    pipe_db *db;
    MDB_txn *txn;
};

static ih_err mdb_err(int rc, const char *what, const char *path)
{
    if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH || rc == MDB_CORRUPTED)
        return ih_fail(IH_E_DATA, "%s %s: %s: not a valid LMDB (rebuild it with tools/make_lmdb)",
                       what, path, mdb_strerror(rc));
    if (rc == MDB_READERS_FULL)
        return ih_fail(IH_E_SYS, "%s %s: %s: too many reader threads on this LMDB", what, path,
                       mdb_strerror(rc));
    return ih_fail(IH_E_SYS, "%s %s: %s", what, path, mdb_strerror(rc));
}

/* Our key format: exactly 10 decimal digits. */
static int is_our_key(const MDB_val *k, uint64_t expect)
{
    char buf[24];
    if (k->mv_size != 10) return 0;
    snprintf(buf, sizeof buf, "%010llu", (unsigned long long)expect);
    return memcmp(k->mv_data, buf, 10) == 0;
}

static ih_err scan_keys(pipe_db *db, MDB_txn *txn)
{
    MDB_cursor *cur = NULL;
    int rc = mdb_cursor_open(txn, db->dbi, &cur);
    if (rc) return mdb_err(rc, "mdb_cursor_open", db->path);
    size_t cap = 1 << 16, used = 0;
    db->keys = malloc(cap);
    db->koff = malloc(sizeof(uint64_t) * (size_t)(db->count + 1));
    if (!db->keys || !db->koff) {
        mdb_cursor_close(cur);
        return ih_fail(IH_E_SYS, "out of memory indexing the keys of %s (%lld records)", db->path,
                       (long long)db->count);
    }
    MDB_val k, v;
    int64_t i = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && i < db->count;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), i++) {
        if (used + k.mv_size > cap) {
            while (used + k.mv_size > cap) cap *= 2;
            char *nk = realloc(db->keys, cap);
            if (!nk) { mdb_cursor_close(cur); return ih_fail(IH_E_SYS, "out of memory indexing %s", db->path); }
            db->keys = nk;
        }
        db->koff[i] = used;
        memcpy(db->keys + used, k.mv_data, k.mv_size);
        used += k.mv_size;
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) return mdb_err(rc, "mdb_cursor_get", db->path);
    if (i != db->count)
        return ih_fail(IH_E_DATA, "LMDB %s: scanned %lld keys but mdb_stat says %lld", db->path,
                       (long long)i, (long long)db->count);
    db->koff[i] = used;
    return IH_OK;
}

ih_err pipe_db_open(pipe_db **out, const char *path)
{
    *out = NULL;
    struct stat st;
    if (!path || !*path) return ih_fail(IH_E_USAGE, "no LMDB path given; make one with tools/make_lmdb");
    if (stat(path, &st) != 0)
        return ih_fail(IH_E_USAGE, "LMDB %s: %s; create it with tools/make_lmdb (folder of class subfolders -> LMDB)",
                       path, strerror(errno));
    unsigned flags = MDB_RDONLY | MDB_NOTLS | MDB_NORDAHEAD;
    if (S_ISREG(st.st_mode)) {
        flags |= MDB_NOSUBDIR;
    } else if (S_ISDIR(st.st_mode)) {
        char f[4096];
        snprintf(f, sizeof f, "%s/data.mdb", path);
        if (stat(f, &st) != 0)
            return ih_fail(IH_E_USAGE, "%s is a directory without data.mdb, not an LMDB; create one with "
                           "tools/make_lmdb", path);
    } else {
        return ih_fail(IH_E_USAGE, "%s is neither an LMDB directory nor an LMDB file", path);
    }
    ih_err e = IH_OK;
    pipe_db *db = calloc(1, sizeof *db);
    MDB_txn *txn = NULL;
    if (!db || !(db->path = strdup(path))) { free(db); return ih_fail(IH_E_SYS, "out of memory"); }
    int rc = mdb_env_create(&db->env);
    if (rc) { e = mdb_err(rc, "mdb_env_create", path); goto fail; }
    mdb_env_set_maxreaders(db->env, 512);
    rc = mdb_env_open(db->env, path, flags, 0664);
    if (rc == EACCES || rc == EROFS) {
        /* A read-only copy whose lock file we may not create: safe without locks because
         * nobody writes to it. */
        mdb_env_close(db->env);
        db->env = NULL;
        rc = mdb_env_create(&db->env);
        if (!rc) rc = mdb_env_open(db->env, path, flags | MDB_NOLOCK, 0664);
    }
    if (rc) { e = mdb_err(rc, "mdb_env_open", path); goto fail; }
    rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn);
    if (rc) { e = mdb_err(rc, "mdb_txn_begin", path); goto fail; }
    rc = mdb_dbi_open(txn, NULL, 0, &db->dbi);
    if (rc) { e = mdb_err(rc, "mdb_dbi_open", path); goto fail; }
    MDB_stat ms;
    rc = mdb_stat(txn, db->dbi, &ms);
    if (rc) { e = mdb_err(rc, "mdb_stat", path); goto fail; }
    db->count = (int64_t)ms.ms_entries;
    if (db->count > 0) {
        /* Our format iff the first key is 0000000000 and the last is count-1. */
        MDB_cursor *cur = NULL;
        MDB_val k, v;
        int ours = 0;
        rc = mdb_cursor_open(txn, db->dbi, &cur);
        if (rc) { e = mdb_err(rc, "mdb_cursor_open", path); goto fail; }
        if (mdb_cursor_get(cur, &k, &v, MDB_FIRST) == 0 && is_our_key(&k, 0) &&
            mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && is_our_key(&k, (uint64_t)db->count - 1))
            ours = 1;
        mdb_cursor_close(cur);
        if (!ours) IH_TRY_GOTO(scan_keys(db, txn), e, fail);
    }
    mdb_txn_abort(txn);
    *out = db;
    return IH_OK;
fail:
    if (txn) mdb_txn_abort(txn);
    pipe_db_close(db);
    return e;
}

void pipe_db_close(pipe_db *db)
{
    if (!db) return;
    if (db->env) mdb_env_close(db->env);
    free(db->keys);
    free(db->koff);
    free(db->path);
    free(db);
}

int64_t pipe_db_count(const pipe_db *db) { return db->count; }
const char *pipe_db_path(const pipe_db *db) { return db->path; }
int pipe_db_foreign_keys(const pipe_db *db) { return db->koff != NULL; }

static void key_of(const pipe_db *db, int64_t i, MDB_val *k, char *buf)
{
    if (db->koff) {
        k->mv_data = db->keys + db->koff[i];
        k->mv_size = (size_t)(db->koff[i + 1] - db->koff[i]);
    } else {
        snprintf(buf, 24, "%010u", (unsigned)i);
        k->mv_data = buf;
        k->mv_size = 10;
    }
}

void pipe_db_key(const pipe_db *db, int64_t index, char *buf, size_t cap)
{
    char tmp[24];
    MDB_val k;
    if (cap == 0) return;
    if (index < 0 || index >= db->count) { snprintf(buf, cap, "?"); return; }
    key_of(db, index, &k, tmp);
    size_t n = k.mv_size < cap - 1 ? k.mv_size : cap - 1;
    for (size_t i = 0; i < n; i++) {
        char c = ((const char *)k.mv_data)[i];
        buf[i] = (c >= 32 && c < 127) ? c : '?';
    }
    buf[n] = 0;
}

ih_err pipe_db_reader_open(pipe_db *db, pipe_db_reader **out)
{
    *out = NULL;
    pipe_db_reader *r = calloc(1, sizeof *r);
    if (!r) return ih_fail(IH_E_SYS, "out of memory");
    r->db = db;
    int rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &r->txn);
    if (rc) { free(r); return mdb_err(rc, "mdb_txn_begin", db->path); }
    *out = r;
    return IH_OK;
}

void pipe_db_reader_close(pipe_db_reader *r)
{
    if (!r) return;
    if (r->txn) mdb_txn_abort(r->txn);
    free(r);
}

ih_err pipe_db_get(pipe_db_reader *r, int64_t index, const uint8_t **val, size_t *len)
{
    const pipe_db *db = r->db;
    IH_ASSERT(index >= 0 && index < db->count, "record %lld of %lld", (long long)index, (long long)db->count);
    char buf[24];
    MDB_val k, v;
    key_of(db, index, &k, buf);
    int rc = mdb_get(r->txn, db->dbi, &k, &v);
    if (rc == MDB_NOTFOUND) {
        char kb[64];
        pipe_db_key(db, index, kb, sizeof kb);
        return ih_fail(IH_E_DATA, "record %lld (key %s) missing in %s: keys are not dense; rebuild "
                       "with tools/make_lmdb", (long long)index, kb, db->path);
    }
    if (rc) return mdb_err(rc, "mdb_get", db->path);
    *val = v.mv_data;
    *len = v.mv_size;
    return IH_OK;
}
