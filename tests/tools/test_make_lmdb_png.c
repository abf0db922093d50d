/* test_make_lmdb_png — make_lmdb converts PNG files (also when named .JPEG, like ImageNet's
 * n02105855_2933) to JPEG records instead of dropping them:
 *   - RGB, grey and RGBA PNGs written here with libpng (the reference encoder), next to a
 *     JPEG and a truncated PNG; the records are JPEGs that TurboJPEG (the reference decoder)
 *     decodes back to the source pixels within JPEG error (PSNR bound at quality 95), with the
 *     PNG's size in the Datum; the grey PNG becomes a one-component JPEG; RGBA is composited
 *     over white; the JPEG is stored byte for byte; the truncated PNG is reported as bad;
 *   - the report lists every conversion, also after a kill and --resume;
 *   - --max-side shrinks a PNG like a JPEG (size and mean colour);
 *   - the real PNG named .JPEG of $IH_SHARED_DATA/imagenet-oddities when present (skipped
 *     with a message otherwise). */
#define _GNU_SOURCE
#include <png.h>
#include <string.h>

#include "pipeline/db.h"
#include "pipeline/record.h"
#include "tests/check.h"
#include "tests/pipeline/fixtures.h"
#include "tests/tools/mk_common.h"

static void write_png(const char *path, const uint8_t *px, int w, int h, int format)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w;
    img.height = (png_uint_32)h;
    img.format = (png_uint_32)format;
    if (!png_image_write_to_file(&img, path, 0, px, 0, NULL)) {
        fprintf(stderr, "libpng cannot write %s: %s\n", path, img.message);
        exit(1);
    }
}

/* Record i of the LMDB at db, decoded by TurboJPEG into *px (malloc'd, pf); dm->data is a
 * malloc'd copy (the database is closed on return): free it. */
static int record(const char *db, int64_t i, pipe_datum *dm, uint8_t **px, int pf, int *subsamp)
{
    pipe_db *d;
    pipe_db_reader *rd;
    const uint8_t *v;
    size_t len;
    *px = NULL;
    if (pipe_db_open(&d, db) != IH_OK) return -1;
    pipe_db_reader_open(d, &rd);
    int ok = pipe_db_get(rd, i, &v, &len) == IH_OK && pipe_datum_decode(v, len, dm) == IH_OK;
    if (!ok) dm->data = NULL;
    if (ok) {
        uint8_t *copy = malloc(dm->size ? dm->size : 1);
        memcpy(copy, dm->data, dm->size);
        dm->data = copy;
        tjhandle tj = tjInitDecompress();
        int w, h, ss, cs;
        ok = tj && dm->size > 2 && dm->data[0] == 0xFF && dm->data[1] == 0xD8 &&
             !tjDecompressHeader3(tj, dm->data, dm->size, &w, &h, &ss, &cs) && w == dm->width && h == dm->height;
        if (ok) {
            *subsamp = ss;
            *px = malloc((size_t)w * h * (size_t)tjPixelSize[pf]);
            ok = !tjDecompress2(tj, dm->data, dm->size, *px, w, 0, h, pf, TJFLAG_ACCURATEDCT);
        }
        if (tj) tjDestroy(tj);
    }
    pipe_db_reader_close(rd);
    pipe_db_close(d);
    return ok ? 0 : -1;
}

int main(void)
{
    char dir[256], src[300], p[600], db[300];
    fx_tmpdir(dir, "mkpng");
    mk_init(dir);
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(db, sizeof db, "%s/png.lmdb", dir);
    mkdir(src, 0775);
    snprintf(p, sizeof p, "%s/cls", src);
    mkdir(p, 0775);

    /* Sorted names: bad.png, grey.png, ok.jpg, rgb.JPEG, rgba.JPEG. */
    enum { RW = 61, RH = 37, GW = 20, GH = 30, AW = 16, AH = 16 };
    uint8_t rgb[RW * RH * 3], grey[GW * GH], rgba[AW * AH * 4], tmp[AW * AH * 3];
    fx_picture(rgb, RW, RH, 3, 3);
    fx_picture(grey, GW, GH, 5, 1);
    fx_picture(tmp, AW, AH, 7, 3);
    for (int i = 0; i < AW * AH; i++) {
        memcpy(rgba + 4 * i, tmp + 3 * i, 3);
        rgba[4 * i + 3] = (i % AW) < AW / 2 ? 255 : 0; /* left half opaque, right half transparent */
    }
    snprintf(p, sizeof p, "%s/cls/rgb.JPEG", src);
    write_png(p, rgb, RW, RH, PNG_FORMAT_RGB);
    snprintf(p, sizeof p, "%s/cls/grey.png", src);
    write_png(p, grey, GW, GH, PNG_FORMAT_GRAY);
    snprintf(p, sizeof p, "%s/cls/rgba.JPEG", src);
    write_png(p, rgba, AW, AH, PNG_FORMAT_RGBA);
    size_t plen;
    char *pngb = mk_slurp(p, &plen);
    snprintf(p, sizeof p, "%s/cls/bad.png", src);
    mk_put(p, pngb, plen / 2);
    free(pngb);
    unsigned long jl;
    unsigned char *jpg = fx_jpeg(40, 30, 1, TJPF_RGB, TJSAMP_420, 90, &jl);
    snprintf(p, sizeof p, "%s/cls/ok.jpg", src);
    mk_put(p, jpg, jl);

    int rc = mk_sh("%s/make_lmdb --quiet --quality 95 --commit-every 2 %s %s", mk_tools, src, db);
    size_t olen;
    char *out = mk_slurp(mk_out, &olen);
    CHECK(rc == 0, "make_lmdb exit %d:\n%s", rc, out);
    CHECK(strstr(out, "wrote 4 records") && strstr(out, "skipped 1 bad file") && strstr(out, "converted 3 non-JPEG"),
          "report:\n%s", out);
    CHECK(strstr(out, "bad.png: PNG data that libpng cannot"), "truncated PNG not named with its reason:\n%s", out);
    CHECK(strstr(out, "rgb.JPEG: PNG 61x37 -> JPEG 61x37 quality 95") && strstr(out, "grey.png: PNG 20x30 grey"),
          "conversions not listed:\n%s", out);
    free(out);

    pipe_datum dm;
    uint8_t *px;
    int ss;
    /* record 0: grey.png -> a one-component JPEG of the same pixels */
    CHECK(record(db, 0, &dm, &px, TJPF_GRAY, &ss) == 0, "record 0 is not a JPEG of the Datum's size");
    if (px) {
        CHECK(dm.width == GW && dm.height == GH && ss == TJSAMP_GRAY, "grey: %dx%d subsamp %d", dm.width, dm.height, ss);
        double q = fx_psnr(px, grey, GW * GH);
        CHECK(q > 38, "grey PSNR %.1f dB (> 38 expected at quality 95)", q);
        free(px);
    }
    free((void *)dm.data);
    /* record 1: the JPEG, byte for byte */
    CHECK(record(db, 1, &dm, &px, TJPF_RGB, &ss) == 0 && dm.size == jl && !memcmp(dm.data, jpg, jl),
          "the JPEG must be stored unchanged");
    free(px);
    free((void *)dm.data);
    /* record 2: rgb.JPEG (a PNG) */
    CHECK(record(db, 2, &dm, &px, TJPF_RGB, &ss) == 0, "record 2 is not a JPEG");
    if (px) {
        CHECK(dm.width == RW && dm.height == RH && dm.label == 0, "rgb: %dx%d label %d", dm.width, dm.height, dm.label);
        double q = fx_psnr(px, rgb, sizeof rgb);
        CHECK(q > 30, "rgb PSNR %.1f dB (> 30 expected at quality 95, 4:2:0)", q);
        free(px);
    }
    free((void *)dm.data);
    /* record 3: rgba.JPEG: opaque half = the colours, transparent half = white */
    CHECK(record(db, 3, &dm, &px, TJPF_RGB, &ss) == 0, "record 3 is not a JPEG");
    if (px) {
        double eo = 0, ew = 0;
        int no = 0, nw = 0;
        for (int y = 0; y < AH; y++)
            for (int x = 0; x < AW; x++) {
                if (x == AW / 2 - 1 || x == AW / 2) continue; /* the edge rings in JPEG */
                for (int c = 0; c < 3; c++) {
                    int v = px[(y * AW + x) * 3 + c];
                    if (x < AW / 2) eo += abs(v - tmp[(y * AW + x) * 3 + c]), no++;
                    else ew += abs(v - 255), nw++;
                }
            }
        CHECK(eo / no < 8 && ew / nw < 8, "rgba: mean error opaque %.1f, transparent-vs-white %.1f", eo / no, ew / nw);
        free(px);
    }
    free((void *)dm.data);

    /* Kill after the first commit (2 items), resume: the report still lists all 3 conversions. */
    char db2[300];
    snprintf(db2, sizeof db2, "%s/resumed.lmdb", dir);
    rc = mk_sh("IH_MAKE_LMDB_KILL_AFTER_COMMITS=2 %s/make_lmdb --quiet --quality 95 --commit-every 2 %s %s", mk_tools,
               src, db2);
    CHECK(rc == 128 + SIGKILL, "the kill knob must kill the run (exit %d)", rc);
    rc = mk_sh("%s/make_lmdb --quiet --quality 95 --commit-every 2 --resume %s %s", mk_tools, src, db2);
    out = mk_slurp(mk_out, &olen);
    CHECK(rc == 0 && strstr(out, "wrote 4 records") && strstr(out, "converted 3 non-JPEG") &&
          strstr(out, "converted: ") && strstr(out, "grey.png: PNG 20x30 grey") && strstr(out, "bad.png"),
          "resumed report (exit %d):\n%s", rc, out);
    free(out);
    size_t la, lb, na, nb;
    uint8_t *a = mk_dump(db, &la, &na), *b = mk_dump(db2, &lb, &nb);
    CHECK(a && b && la == lb && na == nb && !memcmp(a, b, la), "a resumed run must give the same records");
    free(a);
    free(b);

    /* --max-side 20: 61x37 -> 20x12, same mean colour. */
    char db3[300];
    snprintf(db3, sizeof db3, "%s/small.lmdb", dir);
    rc = mk_sh("%s/make_lmdb --quiet --quality 95 --max-side 20 %s %s", mk_tools, src, db3);
    CHECK(rc == 0, "--max-side exit %d", rc);
    CHECK(record(db3, 2, &dm, &px, TJPF_RGB, &ss) == 0, "small record 2");
    if (px) {
        CHECK(dm.width == 20 && dm.height == 12, "--max-side 20 of 61x37 gave %dx%d", dm.width, dm.height);
        for (int c = 0; c < 3; c++) {
            double ms = 0, md = 0;
            for (int i = 0; i < RW * RH; i++) ms += rgb[3 * i + c];
            for (int i = 0; i < dm.width * dm.height; i++) md += px[3 * i + c];
            ms /= RW * RH;
            md /= dm.width * dm.height;
            CHECK(fabs(ms - md) < 4, "channel %d mean %.1f, source %.1f", c, md, ms);
        }
        free(px);
    }
    free((void *)dm.data);

    /* The real one: ImageNet's PNG named .JPEG. */
    const char *sd = getenv("IH_SHARED_DATA");
    char odd[600];
    if (sd && *sd) snprintf(odd, sizeof odd, "%s/imagenet-oddities", sd);
    else snprintf(odd, sizeof odd, "%s/../shared/data/imagenet-oddities", IH_TEST_SOURCE_DIR);
    if (access(odd, R_OK)) {
        printf("note: %s not present; the real PNG-named-.JPEG check is skipped\n", odd);
    } else {
        char db4[300];
        snprintf(db4, sizeof db4, "%s/odd.lmdb", dir);
        rc = mk_sh("%s/make_lmdb --quiet %s %s", mk_tools, odd, db4);
        out = mk_slurp(mk_out, &olen);
        CHECK(rc == 0 && strstr(out, "n02105855_2933.JPEG: PNG ") && strstr(out, "skipped 0 bad"),
              "oddities (exit %d):\n%s", rc, out);
        free(out);
    }
    tjFree(jpg);
    fx_rmtree(dir);
    return ih_test_result();
}
