/* test_make_lmdb_layouts — ImageNet layouts and re-encoding in make_lmdb: a val folder (flat)
 * with ground truth as "name wnid" + the train LMDB's labels.txt as class file, as
 * "name label", and as Kaggle's LOC_val_solution.csv, all give the same records with the
 * right labels and the train run's labels.txt; an image without a ground-truth line is
 * reported as bad; an unknown wnid is an error naming the line. --max-side N re-encodes
 * exactly the images whose longer side exceeds N (to N, aspect kept, Datum size updated, the
 * picture preserved: PSNR vs the source), keeps the others byte-identical, and the loader
 * reads the result. */
#define _GNU_SOURCE
#include <string.h>

#include "pipeline/db.h"
#include "pipeline/decode.h"
#include "pipeline/loader.h"
#include "pipeline/record.h"
#include "tests/tools/mk_common.h"

static const char *const wnids[3] = {"n01440764", "n01443537", "n01484850"};

/* Record i of an LMDB: label, Datum width/height and image bytes (copied). */
static int record(const char *db, int64_t i, int *label, int *w, int *h, uint8_t **img, size_t *len)
{
    pipe_db *d = NULL;
    pipe_db_reader *r = NULL;
    const uint8_t *v;
    size_t vl;
    pipe_datum dm;
    int ok = pipe_db_open(&d, db) == IH_OK && pipe_db_reader_open(d, &r) == IH_OK && pipe_db_get(r, i, &v, &vl) == IH_OK &&
             pipe_datum_decode(v, vl, &dm) == IH_OK;
    if (ok) {
        *label = dm.label, *w = dm.width, *h = dm.height;
        *img = malloc(dm.size);
        memcpy(*img, dm.data, dm.size);
        *len = dm.size;
    }
    pipe_db_reader_close(r);
    pipe_db_close(d);
    return ok;
}

int main(void)
{
    char dir[256], tr[300], val[300], p[800], db[400], gt[400], cls[500];
    fx_tmpdir(dir, "mklayout");
    mk_init(dir);
    char tool[600];
    snprintf(tool, sizeof tool, "%s/make_lmdb", mk_tools);
    snprintf(tr, sizeof tr, "%s/train", dir);
    snprintf(val, sizeof val, "%s/val", dir);
    mkdir(tr, 0775);
    mkdir(val, 0775);
    /* train: 3 wnid folders with 2 images each (labels 0..2 by sorted wnid). */
    for (int c = 0; c < 3; c++) {
        snprintf(p, sizeof p, "%s/%s", tr, wnids[c]);
        mkdir(p, 0775);
        for (int i = 0; i < 2; i++) {
            unsigned long len;
            unsigned char *j = fx_jpeg(48, 40, c * 2 + i, TJPF_RGB, TJSAMP_444, 90, &len);
            snprintf(p, sizeof p, "%s/%s/%s_%d.JPEG", tr, wnids[c], wnids[c], i);
            mk_put(p, j, len);
            tjFree(j);
        }
    }
    snprintf(db, sizeof db, "%s/train.lmdb", dir);
    CHECK(mk_sh("%s --quiet %s %s", tool, tr, db) == 0, "train run");
    snprintf(cls, sizeof cls, "%s/labels.txt", db);

    /* val: 8 images ILSVRC2012_val_%08d.JPEG, label of image k = (k * 2) % 3; image 8 has no
     * ground truth. Sizes: some larger than 64 px on the long side. */
    const int nval = 8;
    int want[8];
    for (int k = 1; k <= nval + 1; k++) {
        unsigned long len;
        int w = k % 2 ? 150 + 10 * k : 50, h = k % 3 ? 40 + k : 120;
        unsigned char *j = fx_jpeg(w, h, 100 + k, k == 4 ? TJPF_GRAY : TJPF_RGB, TJSAMP_420, 92, &len);
        snprintf(p, sizeof p, "%s/ILSVRC2012_val_%08d.JPEG", val, k);
        mk_put(p, j, len);
        tjFree(j);
        if (k <= nval) want[k - 1] = (k * 2) % 3;
    }
    /* Three ground-truth formats. */
    const char *fmt_name[3] = {"name wnid", "name label", "Kaggle CSV"};
    char ref_db[400] = "";
    for (int f = 0; f < 3; f++) {
        snprintf(gt, sizeof gt, "%s/gt%d.txt", dir, f);
        FILE *g = fopen(gt, "w");
        if (f == 2) fprintf(g, "ImageId,PredictionString\n");
        for (int k = nval; k >= 1; k--) { /* any order */
            if (f == 0) fprintf(g, "ILSVRC2012_val_%08d.JPEG %s\n", k, wnids[want[k - 1]]);
            if (f == 1) fprintf(g, "ILSVRC2012_val_%08d.JPEG\t%d\n", k, want[k - 1]);
            if (f == 2) fprintf(g, "ILSVRC2012_val_%08d,%s 1 2 30 40 %s 5 6 7 8\n", k, wnids[want[k - 1]], wnids[0]);
        }
        fclose(g);
        snprintf(db, sizeof db, "%s/val%d.lmdb", dir, f);
        int st = mk_sh("%s --quiet --val-labels %s %s %s %s %s", tool, gt, f == 1 ? "" : "--classes", f == 1 ? "" : cls,
                       val, db);
        size_t len;
        char *o = mk_slurp(mk_out, &len);
        CHECK(st == 0 && strstr(o, "wrote 8 records") && strstr(o, "ILSVRC2012_val_00000009.JPEG: no label in"),
              "%s: status %d:\n%s", fmt_name[f], st, o);
        free(o);
        for (int k = 0; k < nval; k++) {
            int lab = -1, w, h;
            uint8_t *img;
            size_t il;
            CHECK(record(db, k, &lab, &w, &h, &img, &il) && lab == want[k], "%s: record %d label %d, want %d",
                  fmt_name[f], k, lab, want[k]);
            if (lab >= 0) free(img);
        }
        if (f == 0) {
            snprintf(ref_db, sizeof ref_db, "%s", db);
            snprintf(p, sizeof p, "%s/labels.txt", db);
            size_t a, b;
            char *x = mk_slurp(p, &a), *y = mk_slurp(cls, &b);
            CHECK(x && y && a == b && !memcmp(x, y, a), "val labels.txt must be the train run's");
            free(x), free(y);
        } else {
            size_t la, lb, na, nb;
            uint8_t *da = mk_dump(ref_db, &la, &na), *dbb = mk_dump(db, &lb, &nb);
            CHECK(da && dbb && la == lb && !memcmp(da, dbb, la), "%s: records differ from 'name wnid'", fmt_name[f]);
            free(da), free(dbb);
        }
    }
    /* An unknown wnid names the line. */
    snprintf(gt, sizeof gt, "%s/gtbad.txt", dir);
    FILE *g = fopen(gt, "w");
    fprintf(g, "ILSVRC2012_val_00000001.JPEG n01440764\nILSVRC2012_val_00000002.JPEG n99999999\n");
    fclose(g);
    snprintf(db, sizeof db, "%s/valbad.lmdb", dir);
    int st = mk_sh("%s --quiet --val-labels %s --classes %s %s %s", tool, gt, cls, val, db);
    size_t len;
    char *o = mk_slurp(mk_out, &len);
    CHECK(st == 1 && strstr(o, "gtbad.txt:2") && strstr(o, "n99999999"), "unknown wnid (%d):\n%s", st, o);
    free(o);

    /* --max-side 64: long side > 64 re-encoded to exactly 64; others kept byte-identical. */
    snprintf(db, sizeof db, "%s/val64.lmdb", dir);
    snprintf(gt, sizeof gt, "%s/gt1.txt", dir);
    CHECK(mk_sh("%s --quiet --threads 2 --max-side 64 --quality 95 --val-labels %s %s %s", tool, gt, val, db) == 0,
          "max-side run");
    pipe_decoder *dec;
    pipe_decoder_create(&dec);
    int reenc = 0;
    for (int k = 0; k < nval; k++) {
        int l0, w0, h0, l1, w1, h1;
        uint8_t *a, *b;
        size_t la, lb;
        if (!record(ref_db, k, &l0, &w0, &h0, &a, &la) || !record(db, k, &l1, &w1, &h1, &b, &lb)) {
            CHECK(0, "record %d missing", k);
            continue;
        }
        int side = w0 > h0 ? w0 : h0;
        if (side <= 64) {
            CHECK(la == lb && !memcmp(a, b, la) && w1 == w0 && h1 == h0, "record %d (%dx%d) must be kept as is", k, w0, h0);
        } else {
            reenc++;
            double f = 64.0 / side;
            int ew = (int)(w0 * f + 0.5), eh = (int)(h0 * f + 0.5);
            int W, H;
            CHECK(pipe_decoder_open(dec, b, lb, &W, &H) == IH_OK && W == ew && H == eh && w1 == ew && h1 == eh,
                  "record %d: %dx%d -> %dx%d (Datum %dx%d), want %dx%d", k, w0, h0, W, H, w1, h1, ew, eh);
            /* The picture survives: the re-encode vs the source rendered at the same size. */
            static uint8_t x[64 * 64 * 3], y[64 * 64 * 3];
            pipe_crop whole = {0, 0, w0, h0, 0};
            int ok = pipe_decoder_open(dec, a, la, &W, &H) == IH_OK && pipe_decoder_render(dec, &whole, ew, eh, x) == IH_OK;
            pipe_crop whole1 = {0, 0, ew, eh, 0};
            ok = ok && pipe_decoder_open(dec, b, lb, &W, &H) == IH_OK && pipe_decoder_render(dec, &whole1, ew, eh, y) == IH_OK;
            double ps = ok ? fx_psnr(x, y, (size_t)ew * eh * 3) : 0;
            /* 4:2:0 at q95 on pictures as small as 64x14 with sharp edges: >= 25 dB (garbage or
             * a shifted picture scores 10-15 dB). */
            CHECK(ps > 25, "record %d: re-encode PSNR %.1f dB vs the source", k, ps);
        }
        CHECK(l1 == l0, "record %d label changed", k);
        free(a), free(b);
    }
    CHECK(reenc >= 3, "only %d images were large enough to re-encode", reenc);
    pipe_decoder_destroy(dec);
    pipe_cfg c;
    pipe_cfg_defaults(&c);
    c.lmdb_path = db, c.batch = 4, c.crop = 32, c.threads = 2;
    pipe_loader *l = NULL;
    CHECK(pipe_loader_create(&l, &c) == IH_OK, "loader on the re-encoded LMDB: %s", ih_last_error());
    if (l) {
        pipe_batch b;
        CHECK(pipe_loader_start_epoch(l, 0, 0) == IH_OK && pipe_loader_next(l, &b) == IH_OK && b.n == 4, "batch");
        pipe_loader_release(l, &b);
        CHECK(pipe_loader_bad_records(l) == 0, "bad records in the re-encoded LMDB");
        pipe_loader_destroy(l);
    }
    fx_rmtree(dir);
    return ih_test_result();
}
