/* test_train_bad_input — ./train on bad input gives a clear message naming the problem and the
 * right exit code (2 usage, 1 data), never a crash: unknown flag, bad values, missing LMDB,
 * a folder that is not an LMDB, an LMDB whose records are not ours, a corrupt checkpoint. */
#include <lmdb.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/check.h"
#include "tests/run_cmd.h"

static char out[1 << 16];

static void expect(int want_rc, const char *want_msg, const char *args)
{
    int rc = run_cmd(out, sizeof out, "%s/bin/train %s", bin_dir(), args);
    CHECK(rc == want_rc, "`train %s`: exit %d, want %d; output:\n%s", args, rc, want_rc, out);
    CHECK(strstr(out, want_msg) != NULL, "`train %s`: output lacks \"%s\":\n%s", args, want_msg, out);
    CHECK(!strstr(out, "Segmentation") && !strstr(out, "AddressSanitizer"), "crash:\n%s", out);
}

int main(void)
{
    char tmp[] = "/tmp/ih_badinput_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    char args[4096];

    expect(2, "unknown option '--bogus'", "--bogus");
    expect(2, "--train LMDB is required", "--epochs 1");
    expect(2, "--batch-size: '0' is not an integer", "--train x -b 0");
    expect(2, "--base-lr: 'abc' is not a number", "--train x --base-lr abc");
    expect(2, "--schedule: 'linear' is not one of step, cosine", "--train x --schedule linear");
    expect(2, "needs a value", "--train");
    expect(2, "--precision: 'fp8' is not one of auto, fp32, bf16, fp16", "--train x --precision fp8");
    expect(2, "--precision bf16 needs --backend cuda", "--train x --precision bf16");
    snprintf(args, sizeof args, "--train %s/does-not-exist -o %s/run", tmp, tmp);
    expect(2, "does-not-exist", args);

    /* An empty folder is not an LMDB. */
    char p[1024];
    snprintf(p, sizeof p, "%s/empty", tmp);
    mkdir(p, 0755);
    snprintf(args, sizeof args, "--train %s -o %s/run", p, tmp);
    int rc = run_cmd(out, sizeof out, "%s/bin/train %s", bin_dir(), args);
    CHECK(rc == 1 || rc == 2, "empty folder as LMDB: exit %d\n%s", rc, out);
    CHECK(strstr(out, p) != NULL, "message should name %s:\n%s", p, out);

    /* An LMDB that is not ours: values are not Caffe Datum records. */
    snprintf(p, sizeof p, "%s/foreign.lmdb", tmp);
    mkdir(p, 0755);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    CHECK(mdb_env_create(&env) == 0 && mdb_env_open(env, p, 0, 0644) == 0, "lmdb open");
    CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0 && mdb_dbi_open(txn, NULL, 0, &dbi) == 0, "txn");
    for (int i = 0; i < 10; i++) {
        char k[16], v[64];
        snprintf(k, sizeof k, "key%d", i);
        snprintf(v, sizeof v, "this is not a datum, just text number %d", i);
        MDB_val kv = {strlen(k), k}, vv = {strlen(v), v};
        mdb_put(txn, dbi, &kv, &vv, 0);
    }
    CHECK(mdb_txn_commit(txn) == 0, "commit");
    mdb_env_close(env);
    snprintf(args, sizeof args, "--train %s -o %s/run -b 2 --arch resnet8 --image-size 16", p, tmp);
    rc = run_cmd(out, sizeof out, "%s/bin/train %s", bin_dir(), args);
    CHECK(rc == 1, "foreign LMDB: exit %d, want 1\n%s", rc, out);
    CHECK(strstr(out, p) != NULL, "message should name %s:\n%s", p, out);

    /* A corrupt checkpoint is refused with its name. */
    snprintf(p, sizeof p, "%s/bad.ckpt", tmp);
    FILE *f = fopen(p, "w");
    fputs("definitely not a checkpoint", f);
    fclose(f);
    snprintf(args, sizeof args, "--mode eval --val %s/x --checkpoint %s", tmp, p);
    expect(1, "not an imagenet-1h checkpoint", args);
    snprintf(args, sizeof args, "--mode eval --val %s/x --checkpoint %s/missing.ckpt", tmp, tmp);
    expect(2, "missing.ckpt", args);

    run_cmd(out, sizeof out, "rm -rf %s", tmp);
    return ih_test_result();
}
