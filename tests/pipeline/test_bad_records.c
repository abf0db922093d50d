/* test_bad_records — undecodable records (truncated JPEG, garbage, PNG bytes, an empty
 * value, a value that is not a Datum, a corrupt entropy-coded segment) are reported once each
 * with index, key and reason, replaced by the next decodable record (its label, and exactly
 * its image), counted (distinct records; replaced samples per epoch in pipe_loader_epoch_stats
 * and the loader's end-of-epoch log line), and never crash — in eval and train mode, with 1
 * and 3 threads; a label outside labels.txt's classes is a sticky IH_E_DATA error from pipe_loader_next. */
#define _GNU_SOURCE
#include <string.h>

#include "pipeline/loader.h"
#include "tests/check.h"
#include "tests/pipeline/fixtures.h"

enum { N = 16, B = 4, CROP = 24 };

static int count_in_file(const char *path, const char *needle, const char *needle2)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[2048];
    int n = 0;
    while (fgets(line, sizeof line, f)) n += strstr(line, needle) && strstr(line, needle2);
    fclose(f);
    return n;
}

static pipe_loader *open_loader(const char *db, int train, int threads)
{
    pipe_cfg c;
    pipe_cfg_defaults(&c);
    c.lmdb_path = db, c.batch = B, c.threads = threads, c.crop = CROP, c.resize = 28, c.train = train, c.seed = 5;
    pipe_loader *l = NULL;
    CHECK(pipe_loader_create(&l, &c) == IH_OK, "create: %s", ih_last_error());
    return l;
}

/* Runs one epoch; copies labels and images (up to N) out. Returns images delivered. */
static int epoch(pipe_loader *l, int e, int32_t *lab, uint8_t *img)
{
    pipe_batch b;
    int got = 0;
    CHECK(pipe_loader_start_epoch(l, e, 0) == IH_OK, "start");
    while (pipe_loader_next(l, &b) == IH_OK && b.n > 0) {
        memcpy(lab + got, b.labels, (size_t)b.n * 4);
        memcpy(img + (size_t)got * CROP * CROP * 3, b.images, (size_t)b.n * CROP * CROP * 3);
        got += b.n;
        pipe_loader_release(l, &b);
    }
    return got;
}

int main(void)
{
    char dir[256], db[300], log[300];
    fx_tmpdir(dir, "bad");
    snprintf(db, sizeof db, "%s/db", dir);
    snprintf(log, sizeof log, "%s/log.txt", dir);
    setenv("IH_DEBUG_FILE", log, 1); /* before the first log line: warnings go to this file */
    setenv("IH_DEBUG", "INFO", 1);   /* and the end-of-epoch summaries */

    uint8_t *vals[N];
    size_t lens[N];
    unsigned char *jpg[N];
    unsigned long jl[N];
    for (int i = 0; i < N; i++) {
        jpg[i] = fx_jpeg(60 + 4 * i, 50 + 3 * i, i, TJPF_RGB, TJSAMP_420, 90, &jl[i]);
        vals[i] = fx_datum(jpg[i], jl[i], i, 0, 0, &lens[i]);
    }
    /* Bad records: 2 truncated to 30% (center crop needs rows far below), 3 garbage, 4 PNG
     * signature, 7 empty value, 8 not a Datum, 11 entropy data replaced by 0xFF bytes,
     * 15 (the last: replacement wraps to record 0) truncated to its header. */
    static const uint8_t garbage[] = "this is not an image at all, just some text bytes....";
    static const uint8_t png[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x02\0\0\0";
    free(vals[2]), vals[2] = fx_datum(jpg[2], jl[2] * 3 / 10, 2, 0, 0, &lens[2]);
    free(vals[3]), vals[3] = fx_datum(garbage, sizeof garbage, 3, 0, 0, &lens[3]);
    free(vals[4]), vals[4] = fx_datum(png, sizeof png, 4, 0, 0, &lens[4]);
    free(vals[7]), vals[7] = malloc(1), lens[7] = 0;
    free(vals[8]), vals[8] = (uint8_t *)strdup("\xff\xff\xff\xff garbage, not protobuf"), lens[8] = 20;
    memset(jpg[11] + jl[11] / 2, 0xff, jl[11] / 2 - 2);
    free(vals[11]), vals[11] = fx_datum(jpg[11], jl[11], 11, 0, 0, &lens[11]);
    free(vals[15]), vals[15] = fx_datum(jpg[15], 200, 15, 0, 0, &lens[15]);
    fx_write_lmdb(db, N, (const uint8_t *const *)vals, lens, 0);
    static const int bad[] = {2, 3, 4, 7, 8, 11, 15};
    const int nbad = sizeof bad / sizeof bad[0];

    /* Eval: records in order; bad -> next good (2,3,4 -> 5; 7,8 -> 9; 11 -> 12; 15 -> 0). */
    static const int32_t want[N] = {0, 1, 5, 5, 5, 5, 6, 9, 9, 9, 10, 12, 12, 13, 14, 0};
    int32_t lab1[N], lab3[N];
    static uint8_t img1[N * CROP * CROP * 3], img3[N * CROP * CROP * 3];
    pipe_loader *l1 = open_loader(db, 0, 1), *l3 = open_loader(db, 0, 3);
    if (!l1 || !l3) return ih_test_result();
    CHECK(epoch(l1, 0, lab1, img1) == N && epoch(l3, 0, lab3, img3) == N, "eval epoch sizes");
    CHECK(!memcmp(lab1, want, sizeof want), "replacement labels wrong");
    for (int i = 0; i < N; i++) CHECK(lab1[i] == want[i], "record %d -> label %d, want %d", i, lab1[i], want[i]);
    CHECK(!memcmp(lab1, lab3, sizeof lab1) && !memcmp(img1, img3, sizeof img1), "1 vs 3 threads differ");
    for (int k = 0; k < nbad; k++) {
        int i = bad[k], r = want[i];
        CHECK(!memcmp(img1 + (size_t)i * CROP * CROP * 3, img1 + (size_t)r * CROP * CROP * 3, CROP * CROP * 3),
              "record %d: image is not exactly record %d's", i, r);
    }
    CHECK(pipe_loader_bad_records(l1) == nbad, "bad count %lld, want %d", (long long)pipe_loader_bad_records(l1), nbad);
    pipe_epoch_stats st;
    pipe_loader_epoch_stats(l3, &st);
    CHECK(st.epoch == 0 && st.images == N && st.batches == N / B && st.replaced == nbad && st.bad_records == nbad,
          "epoch stats: epoch %d images %lld batches %lld replaced %lld bad %lld", st.epoch, (long long)st.images,
          (long long)st.batches, (long long)st.replaced, (long long)st.bad_records);
    /* A second epoch and a train epoch: still counted once, reported once. */
    CHECK(epoch(l1, 1, lab1, img1) == N, "second eval epoch");
    CHECK(pipe_loader_bad_records(l1) == nbad, "bad count after 2 epochs %lld", (long long)pipe_loader_bad_records(l1));
    pipe_loader_destroy(l1);
    pipe_loader_destroy(l3);

    pipe_loader *t1 = open_loader(db, 1, 1), *t3 = open_loader(db, 1, 3);
    if (!t1 || !t3) return ih_test_result();
    for (int e = 0; e < 3; e++) {
        CHECK(epoch(t1, e, lab1, img1) == N && epoch(t3, e, lab3, img3) == N, "train epoch");
        CHECK(!memcmp(lab1, lab3, sizeof lab1) && !memcmp(img1, img3, sizeof img1), "train: 1 vs 3 threads differ");
        for (int i = 0; i < N; i++)
            for (int k = 0; k < nbad; k++) CHECK(lab1[i] != bad[k], "train delivered bad record %d", bad[k]);
    }
    CHECK(pipe_loader_bad_records(t1) == nbad, "train bad count %lld", (long long)pipe_loader_bad_records(t1));
    pipe_loader_epoch_stats(t3, &st);
    CHECK(st.epoch == 2 && st.images == N && st.replaced == nbad, "train epoch 2 stats: epoch %d images %lld replaced %lld",
          st.epoch, (long long)st.images, (long long)st.replaced);
    pipe_loader_destroy(t1);
    pipe_loader_destroy(t3);

    /* Each bad record is named with its key and a reason, once per loader (4 loaders). */
    static const char *const reason[] = {"Premature end", "no SOI", "PNG", "empty", "Datum", "Corrupt JPEG",
                                         "Premature end"};
    for (int k = 0; k < nbad; k++) {
        char needle[512];
        snprintf(needle, sizeof needle, "record %d (key %010d) in %s: ", bad[k], bad[k], db);
        int n = count_in_file(log, needle, reason[k]);
        CHECK(n == 4, "'%s...%s' reported %d times, want once per loader (4)", needle, reason[k], n);
    }

    /* The end-of-epoch summary line: 3 eval + 2x3 train epochs, each with 7 replacements. */
    char sum[64];
    snprintf(sum, sizeof sum, "; %d replaced (bad records: %d distinct", nbad, nbad);
    int nsum = count_in_file(log, "done: 16 images in 4 batches", sum);
    CHECK(nsum == 9, "end-of-epoch summary with '%s' logged %d times, want 9", sum, nsum);

    /* Sticky error: labels.txt says 3 classes, record 5 has label 5. */
    char lt[400];
    snprintf(lt, sizeof lt, "%s/labels.txt", db);
    FILE *f = fopen(lt, "w");
    fprintf(f, "0\ta\n1\tb\n2\tc\n");
    fclose(f);
    pipe_loader *s = open_loader(db, 0, 2);
    if (s) {
        CHECK(pipe_loader_num_classes(s) == 3, "classes from labels.txt: %d", pipe_loader_num_classes(s));
        pipe_batch b;
        ih_err e = IH_OK;
        CHECK(pipe_loader_start_epoch(s, 0, 0) == IH_OK, "start");
        for (int k = 0; k < 10 && e == IH_OK; k++) {
            e = pipe_loader_next(s, &b);
            if (e == IH_OK) {
                if (b.n == 0) break;
                pipe_loader_release(s, &b);
            }
        }
        CHECK(e == IH_E_DATA && strstr(ih_last_error(), "label") && strstr(ih_last_error(), "labels.txt"),
              "out-of-range label: %d %s", e, ih_last_error());
        CHECK(pipe_loader_next(s, &b) == IH_E_DATA, "error must be sticky");
        CHECK(pipe_loader_start_epoch(s, 1, 0) == IH_E_DATA, "start_epoch after the error returns it");
        pipe_loader_destroy(s);
    }
    if (ih_test_failures) { /* show what was logged */
        FILE *lf = fopen(log, "r");
        char line[2048];
        while (lf && fgets(line, sizeof line, lf)) fputs(line, stderr);
        if (lf) fclose(lf);
    }
    for (int i = 0; i < N; i++) free(vals[i]), tjFree(jpg[i]);
    fx_rmtree(dir);
    return ih_test_result();
}
