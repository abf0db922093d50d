/* test_record_roundtrip — Caffe Datum encode/decode: round trips (our records with sizes,
 * Caffe's without, negative labels, empty data), bytes equal to a hand-encoded protobuf,
 * unknown fields skipped, and malformed inputs (every truncation, bad wire types, lengths
 * past the end, random garbage) rejected with IH_E_DATA and never read out of bounds. */
#include <string.h>

#include "core/rng.h"
#include "pipeline/record.h"
#include "tests/check.h"

int main(void)
{
    uint8_t img[300], buf[512];
    for (int i = 0; i < 300; i++) img[i] = (uint8_t)(i * 7);

    /* Round trip with sizes. */
    pipe_datum d = {.data = img, .size = 300, .label = 917, .channels = 3, .height = 375, .width = 500, .encoded = 1};
    size_t n = pipe_datum_encode(buf, sizeof buf, &d);
    CHECK(n == pipe_datum_encoded_size(&d) && n > 300, "encoded size %zu", n);
    CHECK(pipe_datum_encode(buf, n - 1, &d) == 0, "encode must refuse a short buffer");
    pipe_datum o;
    CHECK(pipe_datum_decode(buf, n, &o) == IH_OK, "decode: %s", ih_last_error());
    CHECK(o.size == 300 && o.data == buf + (n - 300 - 5) && !memcmp(o.data, img, 300), "data zero-copy and equal");
    CHECK(o.label == 917 && o.has_label && o.encoded == 1, "label %d encoded %d", o.label, o.encoded);
    CHECK(o.channels == 3 && o.height == 375 && o.width == 500, "dims %d %d %d", o.channels, o.height, o.width);

    /* Exact bytes against a hand-encoded protobuf: channels 3, height 2, width 1, data "ab",
     * label 300 (varint ac 02), encoded true. */
    static const uint8_t want[] = {0x08, 3, 0x10, 2, 0x18, 1, 0x22, 2, 'a', 'b', 0x28, 0xac, 0x02, 0x38, 1};
    pipe_datum s = {.data = (const uint8_t *)"ab", .size = 2, .label = 300, .channels = 3, .height = 2, .width = 1,
                    .encoded = 1};
    n = pipe_datum_encode(buf, sizeof buf, &s);
    CHECK(n == sizeof want && !memcmp(buf, want, n), "hand-encoded bytes differ (n=%zu)", n);

    /* Caffe convert_imageset --encoded: no channels/height/width; negative label (10-byte varint). */
    pipe_datum c = {.data = img, .size = 10, .label = -1, .encoded = 1};
    n = pipe_datum_encode(buf, sizeof buf, &c);
    CHECK(pipe_datum_decode(buf, n, &o) == IH_OK, "caffe datum: %s", ih_last_error());
    CHECK(o.label == -1 && o.width == 0 && o.height == 0 && o.channels == 0 && o.size == 10, "caffe fields");

    /* Unknown and float fields are skipped: float_data packed (6, wt 2), float_data unpacked
     * (6, wt 5), field 99 varint, field 20 fixed64, then data + label. */
    static const uint8_t ext[] = {0x32, 4, 0, 0, 0x80, 0x3f, 0x35, 0, 0, 0, 0x40, 0x98, 0x06, 5,
                                  0xa1, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0x22, 1, 'z', 0x28, 7};
    CHECK(pipe_datum_decode(ext, sizeof ext, &o) == IH_OK, "extended datum: %s", ih_last_error());
    CHECK(o.label == 7 && o.size == 1 && o.data[0] == 'z' && o.float_count == 2, "extended fields");

    /* Every strict prefix of a valid record either parses (field boundary) or fails with
     * IH_E_DATA; none reads past its length (ASan/valgrind catch that). */
    n = pipe_datum_encode(buf, sizeof buf, &d);
    int fails = 0;
    for (size_t k = 0; k < n; k++) {
        uint8_t *p = malloc(k ? k : 1);
        memcpy(p, buf, k);
        ih_err e = pipe_datum_decode(p, k, &o);
        CHECK(e == IH_OK || e == IH_E_DATA, "prefix %zu: code %d", k, e);
        fails += e != IH_OK;
        if (e == IH_OK) CHECK(o.size <= k, "prefix %zu: data size %zu", k, o.size);
        free(p);
    }
    CHECK(fails >= (int)n - 8, "only %d of %zu prefixes rejected", fails, n);

    /* Specific malformations, with a message naming the problem. */
    static const uint8_t trunc_varint[] = {0x08, 0x80};
    static const uint8_t long_len[] = {0x22, 0x10, 'a'};
    static const uint8_t group[] = {0x23, 0x24};
    static const uint8_t field0[] = {0x00, 0x01};
    static const uint8_t data_varint[] = {0x20, 0x01};
    static const uint8_t huge_varint[] = {0x22, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    static const uint8_t no_data[] = {0x28, 0x05};
    struct { const uint8_t *b; size_t n; const char *what; } bad[] = {
        {trunc_varint, sizeof trunc_varint, "truncated varint"},
        {long_len, sizeof long_len, "runs past the end"},
        {group, sizeof group, "wire type"},
        {field0, sizeof field0, "field number 0"},
        {data_varint, sizeof data_varint, "wire type 0"},
        {huge_varint, sizeof huge_varint, "length"},
        {no_data, sizeof no_data, "no data"},
        {(const uint8_t *)"", 0, "empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ih_err e = pipe_datum_decode(bad[i].b, bad[i].n, &o);
        CHECK(e == IH_E_DATA, "case '%s': code %d", bad[i].what, e);
        CHECK(strstr(ih_last_error(), bad[i].what) != NULL, "case '%s': message '%s'", bad[i].what, ih_last_error());
    }

    /* Random garbage: never crashes, always IH_OK or IH_E_DATA, data inside the buffer. */
    ih_rng r = ih_rng_make(1, 2, 3);
    int ok = 0;
    for (int t = 0; t < 20000; t++) {
        size_t k = 1 + ih_rng_below(&r, 64);
        uint8_t *p = malloc(k);
        for (size_t i = 0; i < k; i++) p[i] = (uint8_t)ih_rng_u64(&r);
        ih_err e = pipe_datum_decode(p, k, &o);
        if (e == IH_OK) {
            ok++;
            if (o.has_data) CHECK(o.data >= p && o.data + o.size <= p + k, "data outside the buffer");
        } else {
            CHECK(e == IH_E_DATA, "garbage: code %d", e);
        }
        free(p);
    }
    printf("random garbage: %d of 20000 parsed as a Datum\n", ok);
    return ih_test_result();
}
