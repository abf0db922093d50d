/* tools/lmdb_inspect — look inside an LMDB of Caffe Datum records (ours or Caffe's).
 *
 *   lmdb_inspect DB                    record count, key format, record 0
 *   lmdb_inspect --show I DB           key, label, sizes, JPEG header of record I
 *   lmdb_inspect --extract I FILE DB   writes record I's image bytes to FILE
 *   lmdb_inspect --verify DB           decodes every record; lists the bad ones
 *
 * Uses the pipeline's own reader and decoder, so what it calls good the loader decodes.
 * Exit: 0 ok (and, for --verify, no bad record), 1 failure or bad records, 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "pipeline/db.h"
#include "pipeline/decode.h"
#include "pipeline/record.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: lmdb_inspect [--show I | --extract I FILE | --verify] DB\n"
            "  (no option)        record count, key format and record 0\n"
            "  --show I           key, label, Datum fields and JPEG header of record I\n"
            "  --extract I FILE   write the image bytes of record I to FILE\n"
            "  --verify           decode every record; print the bad ones (exit 1 if any)\n"
            "  --help             this text\n");
}

static int show(pipe_db *db, pipe_db_reader *rd, pipe_decoder *dec, int64_t i)
{
    const uint8_t *val;
    size_t len;
    char key[256];
    pipe_db_key(db, i, key, sizeof key);
    if (pipe_db_get(rd, i, &val, &len) != IH_OK) {
        fprintf(stderr, "lmdb_inspect: %s\n", ih_last_error());
        return 1;
    }
    pipe_datum d;
    printf("record %lld\n  key       %s\n  value     %zu bytes\n", (long long)i, key, len);
    if (pipe_datum_decode(val, len, &d) != IH_OK) {
        printf("  datum     INVALID: %s\n", ih_last_error());
        return 1;
    }
    printf("  label     %d\n  datum     channels %d height %d width %d encoded %d\n  data      %zu bytes\n",
           (int)d.label, (int)d.channels, (int)d.height, (int)d.width, d.encoded, d.size);
    int w, h, comps, prog;
    const char *cs;
    if (pipe_decoder_open(dec, d.data, d.size, &w, &h) != IH_OK) {
        printf("  image     NOT DECODABLE: %s\n", ih_last_error());
        return 1;
    }
    pipe_decoder_info(dec, &comps, &cs, &prog);
    printf("  image     JPEG %dx%d, %d components (%s)%s\n", w, h, comps, cs, prog ? ", progressive" : "");
    return 0;
}

int main(int argc, char **argv)
{
    int64_t show_i = -1, extract_i = -1;
    const char *extract_to = NULL;
    int verify = 0;
    static const struct option opts[] = {
        {"show", required_argument, 0, 's'}, {"extract", required_argument, 0, 'x'},
        {"verify", no_argument, 0, 'v'},     {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    int o;
    char *end;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 's':
            show_i = strtoll(optarg, &end, 10);
            if (*end || show_i < 0) { fprintf(stderr, "lmdb_inspect: bad record index '%s'\n", optarg); return 2; }
            break;
        case 'x':
            extract_i = strtoll(optarg, &end, 10);
            if (*end || extract_i < 0) { fprintf(stderr, "lmdb_inspect: bad record index '%s'\n", optarg); return 2; }
            if (optind >= argc) { fprintf(stderr, "lmdb_inspect: --extract I FILE\n"); return 2; }
            extract_to = argv[optind++];
            break;
        case 'v': verify = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1 || (show_i >= 0) + (extract_i >= 0) + verify > 1) {
        usage(stderr);
        return 2;
    }
    pipe_db *db = NULL;
    pipe_db_reader *rd = NULL;
    pipe_decoder *dec = NULL;
    int rc = 0;
    ih_err e = pipe_db_open(&db, argv[optind]);
    if (e == IH_OK) e = pipe_db_reader_open(db, &rd);
    if (e == IH_OK) e = pipe_decoder_create(&dec);
    if (e != IH_OK) {
        fprintf(stderr, "lmdb_inspect: %s\n", ih_last_error());
        rc = e == IH_E_USAGE ? 2 : 1;
        goto done;
    }
    int64_t n = pipe_db_count(db);
    int64_t idx = show_i >= 0 ? show_i : extract_i;
    if (idx >= n) {
        fprintf(stderr, "lmdb_inspect: record %lld out of range: %s has %lld records\n", (long long)idx, argv[optind],
                (long long)n);
        rc = 2;
        goto done;
    }
    if (show_i >= 0) {
        rc = show(db, rd, dec, show_i);
    } else if (extract_i >= 0) {
        const uint8_t *val;
        size_t len;
        pipe_datum d;
        if (pipe_db_get(rd, extract_i, &val, &len) != IH_OK || pipe_datum_decode(val, len, &d) != IH_OK) {
            fprintf(stderr, "lmdb_inspect: record %lld: %s\n", (long long)extract_i, ih_last_error());
            rc = 1;
            goto done;
        }
        FILE *f = fopen(extract_to, "wb");
        if (!f || fwrite(d.data, 1, d.size, f) != d.size || fclose(f)) {
            fprintf(stderr, "lmdb_inspect: cannot write %s: %s\n", extract_to, strerror(errno));
            rc = 1;
            goto done;
        }
        printf("wrote %zu bytes (record %lld, label %d) to %s\n", d.size, (long long)extract_i, (int)d.label,
               extract_to);
    } else if (verify) {
        int64_t bad = 0;
        double t0 = ih_now_s();
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *val, *rgb;
            size_t len;
            pipe_datum d;
            int w, h;
            ih_err r = pipe_db_get(rd, i, &val, &len);
            if (r == IH_OK) r = pipe_datum_decode(val, len, &d);
            if (r == IH_OK) r = pipe_decoder_full(dec, d.data, d.size, 8, &rgb, &w, &h);
            if (r != IH_OK) {
                char key[256];
                pipe_db_key(db, i, key, sizeof key);
                printf("bad record %lld (key %s): %s\n", (long long)i, key, ih_last_error());
                bad++;
            }
        }
        printf("verified %lld records in %.1f s: %lld bad\n", (long long)n, ih_now_s() - t0, (long long)bad);
        rc = bad ? 1 : 0;
    } else {
        printf("%s: %lld records, keys %s\n", argv[optind], (long long)n,
               pipe_db_foreign_keys(db) ? "foreign (indexed by cursor order)" : "%010u (ours)");
        if (n > 0) rc = show(db, rd, dec, 0);
    }
done:
    pipe_decoder_destroy(dec);
    pipe_db_reader_close(rd);
    pipe_db_close(db);
    return rc;
}
