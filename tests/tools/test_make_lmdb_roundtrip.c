/* test_make_lmdb_roundtrip — runs tools/make_lmdb on a temporary folder of class subfolders
 * with good JPEGs, a truncated JPEG, PNG bytes and a text file: the LMDB holds exactly the
 * good files, in sorted class/file order, with the right labels, Datum height/width and the
 * exact file bytes; the bad files are named with a reason; labels.txt maps labels to class
 * names; the loader reads the result. Also: list-file mode, refusing to overwrite without
 * --force, and exit codes for an empty folder (1), a missing folder (1), bad usage (2);
 * lmdb_inspect --verify and --extract agree. The tool path comes from $IH_BINARY_DIR (set by
 * ctest) or the build tree. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <string.h>
#include <sys/wait.h>

#include "pipeline/db.h"
#include "pipeline/loader.h"
#include "pipeline/record.h"
#include "tests/check.h"
#include "tests/pipeline/fixtures.h"
#include "tests/tools/mk_common.h"

int main(void)
{
    char dir[256], src[300], p[600], db[300];
    fx_tmpdir(dir, "mklmdb");
    mk_init(dir);
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(db, sizeof db, "%s/train.lmdb", dir);
    mkdir(src, 0775);
    /* b_dogs is created first: order must come from sorting, not from the directory. */
    static const char *const cls[2] = {"b_dogs", "a_cats"};
    for (int c = 0; c < 2; c++) {
        snprintf(p, sizeof p, "%s/%s", src, cls[c]);
        mkdir(p, 0775);
    }
    /* Expected records: a_cats/0,1,2.jpg (label 0), b_dogs/0,1.jpg (label 1). */
    struct { const char *cls, *name; int w, h; } good[5] = {
        {"a_cats", "0.jpg", 40, 30}, {"a_cats", "1.jpg", 33, 51}, {"a_cats", "2.JPEG", 64, 64},
        {"b_dogs", "0.jpg", 17, 90}, {"b_dogs", "1.jpg", 120, 45},
    };
    unsigned char *jpg[5];
    unsigned long jl[5];
    for (int i = 4; i >= 0; i--) {
        jpg[i] = fx_jpeg(good[i].w, good[i].h, i, TJPF_RGB, TJSAMP_420, 90, &jl[i]);
        snprintf(p, sizeof p, "%s/%s/%s", src, good[i].cls, good[i].name);
        mk_put(p, jpg[i], jl[i]);
    }
    snprintf(p, sizeof p, "%s/a_cats/truncated.jpg", src);
    mk_put(p, jpg[2], jl[2] / 3);
    snprintf(p, sizeof p, "%s/b_dogs/fake.png", src);
    mk_put(p, "\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16);
    snprintf(p, sizeof p, "%s/b_dogs/notes.txt", src);
    mk_put(p, "just some notes\n", 16);
    snprintf(p, sizeof p, "%s/b_dogs/.hidden.jpg", src);
    mk_put(p, "x", 1);

    int rc = mk_sh("%s/make_lmdb --quiet %s %s", mk_tools, src, db);
    size_t olen;
    char *out = mk_slurp(mk_out, &olen);
    CHECK(rc == 0, "make_lmdb exit %d:\n%s", rc, out);
    CHECK(strstr(out, "truncated.jpg") && strstr(out, "Premature end"), "truncated file not named:\n%s", out);
    CHECK(strstr(out, "fake.png") && strstr(out, "PNG"), "PNG not named:\n%s", out);
    CHECK(strstr(out, "notes.txt") && strstr(out, "not a JPEG"), "text file not named:\n%s", out);
    CHECK(strstr(out, "wrote 5 records") && strstr(out, "skipped 3"), "summary:\n%s", out);
    CHECK(!strstr(out, "hidden"), "hidden files must be ignored");
    free(out);
    snprintf(p, sizeof p, "%s.tmp", db);
    CHECK(access(p, F_OK) != 0, "%s left behind", p);

    pipe_db *d = NULL;
    pipe_db_reader *rd = NULL;
    CHECK(pipe_db_open(&d, db) == IH_OK, "open: %s", ih_last_error());
    if (d) {
        CHECK(pipe_db_count(d) == 5 && !pipe_db_foreign_keys(d), "count %lld", (long long)pipe_db_count(d));
        CHECK(pipe_db_reader_open(d, &rd) == IH_OK, "reader");
        for (int i = 0; i < 5 && pipe_db_count(d) == 5; i++) {
            const uint8_t *v;
            size_t len;
            pipe_datum dm;
            CHECK(pipe_db_get(rd, i, &v, &len) == IH_OK && pipe_datum_decode(v, len, &dm) == IH_OK, "record %d", i);
            CHECK(dm.label == (i < 3 ? 0 : 1), "record %d label %d", i, dm.label);
            CHECK(dm.width == good[i].w && dm.height == good[i].h && dm.channels == 3 && dm.encoded,
                  "record %d: Datum %dx%dx%d encoded %d", i, dm.width, dm.height, dm.channels, dm.encoded);
            CHECK(dm.size == jl[i] && !memcmp(dm.data, jpg[i], jl[i]), "record %d: bytes differ from the file", i);
        }
        pipe_db_reader_close(rd);
        pipe_db_close(d);
    }
    snprintf(p, sizeof p, "%s/labels.txt", db);
    char *labels = mk_slurp(p, &olen);
    CHECK(labels && !strcmp(labels, "0\ta_cats\n1\tb_dogs\n"), "labels.txt: %s", labels ? labels : "(missing)");
    free(labels);

    pipe_cfg cfg;
    pipe_cfg_defaults(&cfg);
    cfg.lmdb_path = db, cfg.batch = 2, cfg.crop = 16;
    pipe_loader *l = NULL;
    CHECK(pipe_loader_create(&l, &cfg) == IH_OK && pipe_loader_num_classes(l) == 2, "loader: %s", ih_last_error());
    pipe_loader_destroy(l);

    /* Inspector agrees. */
    CHECK(mk_sh("%s/lmdb_inspect --verify %s", mk_tools, db) == 0, "lmdb_inspect --verify");
    out = mk_slurp(mk_out, &olen);
    CHECK(strstr(out, "verified 5 records") && strstr(out, "0 bad"), "verify output:\n%s", out);
    free(out);
    char ex[400];
    snprintf(ex, sizeof ex, "%s/x.jpg", dir);
    CHECK(mk_sh("%s/lmdb_inspect --extract 4 %s %s", mk_tools, ex, db) == 0, "extract");
    char *exb = mk_slurp(ex, &olen);
    CHECK(exb && olen == jl[4] && !memcmp(exb, jpg[4], olen), "extracted bytes differ");
    free(exb);

    /* Existing output: refused without --force, replaced with it. */
    CHECK(mk_sh("%s/make_lmdb --quiet %s %s", mk_tools, src, db) == 1, "overwrite without --force must fail");
    out = mk_slurp(mk_out, &olen);
    CHECK(strstr(out, "exists") && strstr(out, "--force"), "message:\n%s", out);
    free(out);
    CHECK(mk_sh("%s/make_lmdb --quiet --force %s %s", mk_tools, src, db) == 0, "--force");

    /* Empty folder, folder with an empty class, missing folder, usage. */
    char empty[300], out2[300];
    snprintf(empty, sizeof empty, "%s/empty", dir);
    snprintf(out2, sizeof out2, "%s/e.lmdb", dir);
    mkdir(empty, 0775);
    CHECK(mk_sh("%s/make_lmdb --quiet %s %s", mk_tools, empty, out2) == 1, "empty folder must exit 1");
    out = mk_slurp(mk_out, &olen);
    CHECK(strstr(out, "no class subfolders") && strstr(out, empty), "empty folder message:\n%s", out);
    free(out);
    snprintf(p, sizeof p, "%s/empty/cls", dir);
    mkdir(p, 0775);
    CHECK(mk_sh("%s/make_lmdb --quiet %s %s", mk_tools, empty, out2) == 1, "no images must exit 1");
    out = mk_slurp(mk_out, &olen);
    CHECK(strstr(out, "no image"), "no images message:\n%s", out);
    free(out);
    CHECK(access(out2, F_OK) != 0, "no LMDB may be left after a failure");
    snprintf(p, sizeof p, "%s/missing", dir);
    CHECK(mk_sh("%s/make_lmdb --quiet %s %s", mk_tools, p, out2) == 1, "missing folder must exit 1");
    out = mk_slurp(mk_out, &olen);
    CHECK(strstr(out, p) && strstr(out, "No such file"), "missing folder message:\n%s", out);
    free(out);
    CHECK(mk_sh("%s/make_lmdb %s", mk_tools, src) == 2, "one positional argument is a usage error");
    CHECK(mk_sh("%s/make_lmdb --bogus %s %s", mk_tools, src, out2) == 2, "unknown flag is a usage error");

    /* List mode: "relative/path label", order as listed. */
    char list[300];
    snprintf(list, sizeof list, "%s/list.txt", dir);
    const char *lines = "b_dogs/1.jpg 4\na_cats/0.jpg 2\nb_dogs/notes.txt 1\n";
    mk_put(list, lines, strlen(lines));
    snprintf(p, sizeof p, "%s/list.lmdb", dir);
    rc = mk_sh("%s/make_lmdb --quiet --list %s --root %s %s", mk_tools, list, src, p);
    CHECK(rc == 0, "list mode exit %d", rc);
    if (pipe_db_open(&d, p) == IH_OK) {
        CHECK(pipe_db_count(d) == 2, "list mode count %lld", (long long)pipe_db_count(d));
        pipe_db_reader_open(d, &rd);
        const uint8_t *v;
        size_t len;
        pipe_datum dm;
        CHECK(pipe_db_get(rd, 0, &v, &len) == IH_OK && pipe_datum_decode(v, len, &dm) == IH_OK && dm.label == 4 &&
              dm.size == jl[4] && !memcmp(dm.data, jpg[4], jl[4]), "list record 0");
        CHECK(pipe_db_get(rd, 1, &v, &len) == IH_OK && pipe_datum_decode(v, len, &dm) == IH_OK && dm.label == 2 &&
              dm.size == jl[0], "list record 1");
        pipe_db_reader_close(rd);
        pipe_db_close(d);
    } else {
        CHECK(0, "list LMDB: %s", ih_last_error());
    }
    for (int i = 0; i < 5; i++) tjFree(jpg[i]);
    fx_rmtree(dir);
    return ih_test_result();
}
