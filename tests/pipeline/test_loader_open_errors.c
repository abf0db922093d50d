/* test_loader_open_errors — pipe_loader_create fails with a clear, actionable error:
 * missing path and a folder that is not an LMDB -> IH_E_USAGE naming the path and
 * tools/make_lmdb; a file that is not an LMDB -> IH_E_DATA; an LMDB whose records are not
 * Datum -> IH_E_DATA naming record 0 and its key; bad config values -> IH_E_USAGE. */
#define _GNU_SOURCE
#include <string.h>

#include "pipeline/loader.h"
#include "tests/check.h"
#include "tests/pipeline/fixtures.h"

static ih_err try_open(const char *path, int batch)
{
    pipe_cfg c;
    pipe_cfg_defaults(&c);
    c.lmdb_path = path;
    c.batch = batch;
    pipe_loader *l = NULL;
    ih_err e = pipe_loader_create(&l, &c);
    pipe_loader_destroy(l);
    return e;
}

int main(void)
{
    char dir[256], p[400];
    fx_tmpdir(dir, "openerr");

    snprintf(p, sizeof p, "%s/nope", dir);
    CHECK(try_open(p, 4) == IH_E_USAGE, "missing path");
    CHECK(strstr(ih_last_error(), p) && strstr(ih_last_error(), "make_lmdb"), "message: %s", ih_last_error());

    CHECK(try_open(dir, 4) == IH_E_USAGE, "folder without data.mdb");
    CHECK(strstr(ih_last_error(), dir) && strstr(ih_last_error(), "make_lmdb"), "message: %s", ih_last_error());

    snprintf(p, sizeof p, "%s/file.jpg", dir);
    FILE *f = fopen(p, "w");
    for (int i = 0; i < 3000; i++) fputs("not an lmdb ", f);
    fclose(f);
    CHECK(try_open(p, 4) == IH_E_DATA, "file that is not an LMDB: %s", ih_last_error());
    CHECK(strstr(ih_last_error(), p) != NULL, "message names the file: %s", ih_last_error());

    snprintf(p, sizeof p, "%s/notdatum", dir);
    const uint8_t *vals[2] = {(const uint8_t *)"\x0f\x0f\x0f", (const uint8_t *)"xyz"};
    size_t lens[2] = {3, 3};
    fx_write_lmdb(p, 2, vals, lens, 0);
    CHECK(try_open(p, 4) == IH_E_DATA, "records that are not Datum");
    CHECK(strstr(ih_last_error(), p) && strstr(ih_last_error(), "0000000000") && strstr(ih_last_error(), "Datum"),
          "message: %s", ih_last_error());

    snprintf(p, sizeof p, "%s/empty", dir);
    fx_write_lmdb(p, 0, vals, lens, 0);
    CHECK(try_open(p, 4) == IH_E_DATA && strstr(ih_last_error(), "empty"), "empty LMDB: %s", ih_last_error());

    CHECK(try_open(p, 0) == IH_E_USAGE && strstr(ih_last_error(), "batch"), "batch 0: %s", ih_last_error());
    pipe_cfg c;
    pipe_cfg_defaults(&c);
    c.lmdb_path = p, c.batch = 2, c.rank = 2, c.world = 2;
    pipe_loader *l = NULL;
    CHECK(pipe_loader_create(&l, &c) == IH_E_USAGE && !l, "rank 2 of 2: %s", ih_last_error());
    pipe_loader_destroy(NULL);
    fx_rmtree(dir);
    return ih_test_result();
}
