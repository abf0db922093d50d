/* pipeline/record.c — Caffe Datum protobuf encode/decode (see record.h).
 *
 * Wire format: each field is a varint tag (field << 3 | wire type) followed by a varint
 * (type 0), 8 bytes (1), a varint length + bytes (2) or 4 bytes (5). Unknown fields are
 * skipped by wire type so that newer Datum variants still parse; groups (3, 4) are not
 * valid in a Datum and are rejected. Every read is bounds-checked.
 */
#include "record.h"

#include <string.h>

static int get_varint(const uint8_t *p, size_t len, size_t *pos, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*pos >= len) return -1;
        uint8_t b = p[(*pos)++];
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) { *v = x; return 0; }
    }
    return -2; /* more than 10 bytes */
}

ih_err pipe_datum_decode(const void *buf, size_t len, pipe_datum *out)
{
    const uint8_t *p = buf;
    size_t pos = 0;
    memset(out, 0, sizeof *out);
    if (len == 0) return ih_fail(IH_E_DATA, "empty value (0 bytes), not a Datum");
    while (pos < len) {
        size_t at = pos;
        uint64_t tag, v;
        if (get_varint(p, len, &pos, &tag))
            return ih_fail(IH_E_DATA, "Datum: bad field tag at byte %zu of %zu", at, len);
        unsigned field = (unsigned)(tag >> 3), wt = (unsigned)(tag & 7);
        if (field == 0) return ih_fail(IH_E_DATA, "Datum: field number 0 at byte %zu", at);
        switch (wt) {
        case 0:
            if (get_varint(p, len, &pos, &v))
                return ih_fail(IH_E_DATA, "Datum: truncated varint (field %u) at byte %zu of %zu",
                               field, at, len);
            switch (field) {
            case 1: out->channels = (int32_t)v; break;
            case 2: out->height = (int32_t)v; break;
            case 3: out->width = (int32_t)v; break;
            case 5: out->label = (int32_t)v; out->has_label = 1; break;
            case 7: out->encoded = v != 0; break;
            case 4:
                return ih_fail(IH_E_DATA, "Datum: field 4 (data) has wire type 0 at byte %zu", at);
            default: break;
            }
            break;
        case 1:
            if (len - pos < 8)
                return ih_fail(IH_E_DATA, "Datum: truncated fixed64 (field %u) at byte %zu", field, at);
            pos += 8;
            break;
        case 2:
            if (get_varint(p, len, &pos, &v))
                return ih_fail(IH_E_DATA, "Datum: truncated length (field %u) at byte %zu", field, at);
            if (v > len - pos)
                return ih_fail(IH_E_DATA,
                               "Datum: field %u length %llu at byte %zu runs past the end (%zu bytes)",
                               field, (unsigned long long)v, at, len);
            if (field == 4) {
                out->data = p + pos;
                out->size = (size_t)v;
                out->has_data = 1;
            } else if (field == 6) {
                out->float_count += (size_t)v / 4; /* packed floats */
            } else if (field <= 3 || field == 5 || field == 7) {
                return ih_fail(IH_E_DATA, "Datum: field %u has wire type 2 at byte %zu", field, at);
            }
            pos += (size_t)v;
            break;
        case 5:
            if (len - pos < 4)
                return ih_fail(IH_E_DATA, "Datum: truncated fixed32 (field %u) at byte %zu", field, at);
            if (field == 6) out->float_count++;
            pos += 4;
            break;
        default:
            return ih_fail(IH_E_DATA, "Datum: invalid wire type %u (field %u) at byte %zu", wt, field, at);
        }
    }
    if (!out->has_data && out->float_count == 0)
        return ih_fail(IH_E_DATA, "Datum: no data field (%zu bytes parsed)", len);
    return IH_OK;
}

static size_t varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) { v >>= 7; n++; }
    return n;
}

static size_t put_varint(uint8_t *dst, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) { dst[n++] = (uint8_t)(v | 0x80); v >>= 7; }
    dst[n++] = (uint8_t)v;
    return n;
}

/* int32 fields are sign-extended to 64 bits on the wire (protobuf int32 semantics). */
static uint64_t i32_wire(int32_t v) { return (uint64_t)(int64_t)v; }

size_t pipe_datum_encoded_size(const pipe_datum *d)
{
    size_t n = 0;
    if (d->channels) n += 1 + varint_size(i32_wire(d->channels));
    if (d->height) n += 1 + varint_size(i32_wire(d->height));
    if (d->width) n += 1 + varint_size(i32_wire(d->width));
    n += 1 + varint_size(d->size) + d->size;
    n += 1 + varint_size(i32_wire(d->label));
    if (d->encoded) n += 2;
    return n;
}

size_t pipe_datum_encode(uint8_t *dst, size_t cap, const pipe_datum *d)
{
    size_t need = pipe_datum_encoded_size(d), n = 0;
    if (cap < need) return 0;
    if (d->channels) { dst[n++] = 1 << 3; n += put_varint(dst + n, i32_wire(d->channels)); }
    if (d->height) { dst[n++] = 2 << 3; n += put_varint(dst + n, i32_wire(d->height)); }
    if (d->width) { dst[n++] = 3 << 3; n += put_varint(dst + n, i32_wire(d->width)); }
    dst[n++] = 4 << 3 | 2;
    n += put_varint(dst + n, d->size);
    if (d->size) memcpy(dst + n, d->data, d->size);
    n += d->size;
    dst[n++] = 5 << 3;
    n += put_varint(dst + n, i32_wire(d->label));
    if (d->encoded) { dst[n++] = 7 << 3; dst[n++] = 1; }
    IH_ASSERT(n == need, "datum size %zu != %zu", n, need);
    return n;
}
