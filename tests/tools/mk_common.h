/* tests/tools/mk_common.h — helpers for the make_lmdb tests (header-only): the tool's path,
 * running a shell command with its output captured, writing files, and reading every
 * (key, value) of an LMDB so two databases can be compared record by record. */
#ifndef IH_TESTS_TOOLS_MK_COMMON_H
#define IH_TESTS_TOOLS_MK_COMMON_H

#include <stdarg.h>
#include <sys/wait.h>

#include "tests/check.h"
#include "tests/pipeline/fixtures.h"

static char mk_tools[512], mk_out[400];

/* Finds the tools folder ($IH_BINARY_DIR/tools or the build tree); skips when not built. */
static inline void mk_init(const char *dir)
{
    const char *bd = getenv("IH_BINARY_DIR");
    if (bd && *bd) snprintf(mk_tools, sizeof mk_tools, "%s/tools", bd);
    else snprintf(mk_tools, sizeof mk_tools, "%s", IH_TOOLS_DIR);
    char tool[600];
    snprintf(tool, sizeof tool, "%s/make_lmdb", mk_tools);
    if (access(tool, X_OK)) SKIP("%s not built", tool);
    snprintf(mk_out, sizeof mk_out, "%s/out.txt", dir);
}

/* Runs a shell command with stdout+stderr into mk_out; returns the exit status, or 128+sig
 * when it was killed by a signal. */
static int mk_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int mk_sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(cmd + n, sizeof cmd - (size_t)n, " > %s 2>&1", mk_out);
    int st = system(cmd);
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
}

static inline char *mk_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    b[*len] = 0;
    fclose(f);
    return b;
}

static inline void mk_put(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f)) {
        perror(path);
        exit(1);
    }
}

/* All records of an LMDB as one buffer "klen key vlen value ..." (malloc'd), or NULL. */
static inline uint8_t *mk_dump(const char *dir, size_t *len, size_t *count)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *cur;
    *len = *count = 0;
    if (mdb_env_create(&env)) return NULL;
    if (mdb_env_open(env, dir, MDB_RDONLY, 0664)) {
        mdb_env_close(env);
        return NULL;
    }
    size_t cap = 1 << 20;
    uint8_t *b = malloc(cap);
    mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    mdb_dbi_open(txn, NULL, 0, &dbi);
    mdb_cursor_open(txn, dbi, &cur);
    MDB_val k, v;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        while (*len + k.mv_size + v.mv_size + 16 > cap) b = realloc(b, cap *= 2);
        memcpy(b + *len, &k.mv_size, 8), *len += 8;
        memcpy(b + *len, k.mv_data, k.mv_size), *len += k.mv_size;
        memcpy(b + *len, &v.mv_size, 8), *len += 8;
        memcpy(b + *len, v.mv_data, v.mv_size), *len += v.mv_size;
        (*count)++;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return b;
}

#endif
