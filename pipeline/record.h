/* pipeline/record.h — Caffe `Datum` protobuf records, encoded and decoded by hand.
 *
 * message Datum { optional int32 channels = 1; optional int32 height = 2;
 *                 optional int32 width = 3; optional bytes data = 4;
 *                 optional int32 label = 5; repeated float float_data = 6;
 *                 optional bool encoded = 7 [default = false]; }
 * Our writer fills channels/height/width with the original image size and sets
 * encoded = true; Caffe's `convert_imageset --encoded` leaves them unset (0), so readers take
 * the size from the JPEG header, never from the Datum. Pure functions, any thread.
 */
#ifndef PIPE_RECORD_H
#define PIPE_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct {
    const uint8_t *data;  /* field 4: points into the decoded buffer (not a copy) */
    size_t size;          /* bytes at data */
    int32_t label;        /* field 5 (0 when absent) */
    int32_t channels, height, width; /* fields 1-3 (0 when absent: do not rely on them) */
    int encoded;          /* field 7 */
    int has_data, has_label;
    size_t float_count;   /* field 6 values seen (unused by us; raw-float Datums) */
} pipe_datum;

/* Parses `len` bytes at `buf` as a Datum. On success fills *out, whose `data` points into
 * `buf` (valid as long as `buf` is). IH_E_DATA with a message naming the byte offset and
 * what is wrong (truncated varint, length past the end, group wire type, ...) otherwise;
 * the caller prefixes the record and file. Never reads outside [buf, buf+len). Any thread. */
ih_err pipe_datum_decode(const void *buf, size_t len, pipe_datum *out);

/* Bytes pipe_datum_encode needs for `d` (fields in number order; channels/height/width
 * only when nonzero; label always; encoded only when set). */
size_t pipe_datum_encoded_size(const pipe_datum *d);

/* Writes `d` into dst (capacity cap). Returns the bytes written, or 0 when cap is too
 * small. Any thread; never allocates. */
size_t pipe_datum_encode(uint8_t *dst, size_t cap, const pipe_datum *d);

#endif
