/* pipeline/decode.h — JPEG decoding for the pipeline: header, cropped DCT-scaled decode
 * straight into an output image, and a full check decode (make_lmdb, lmdb_inspect).
 *
 * A decode of box B into an ow x oh output picks the smallest DCT scale s in
 * {1/8, 1/4, 1/2, 1} with B.w*s >= ow and B.h*s >= oh (so the resampler never upsamples
 * because of the scale), decodes only the scaled window around B (jpeg_crop_scanline for
 * columns, jpeg_skip_scanlines above, stop after the last needed row), converts to RGB
 * (grayscale via libjpeg, CMYK/YCCK by hand, Adobe-inverted or not) and resamples bilinearly.
 * Rows below the window are never decoded, so a file truncated below the window decodes.
 *
 * Errors are libjpeg's fatal errors plus the warnings that mean missing or garbage image
 * data (premature end of file or of a data segment, bad Huffman code: libjpeg would pad
 * with grey); benign warnings (e.g. extraneous bytes before a marker) are tolerated. All are IH_E_DATA with a reason ("not a JPEG (PNG signature)", libjpeg's text).
 *
 * Threads: a pipe_decoder is owned by one thread (it holds a libjpeg decompressor and
 * scratch buffers that grow to the largest window seen, then stay).
 */
#ifndef PIPE_DECODE_H
#define PIPE_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "augment.h"
#include "core/err.h"

typedef struct pipe_decoder pipe_decoder;

/* IH_E_SYS on allocation failure. Caller owns *out. */
ih_err pipe_decoder_create(pipe_decoder **out);
void pipe_decoder_destroy(pipe_decoder *d);

/* Identifies well-known non-JPEG formats by magic bytes: returns "PNG", "GIF", "BMP",
 * "WebP", "TIFF", or NULL when data starts with a JPEG SOI marker (FF D8) or is unknown. */
const char *pipe_sniff_format(const uint8_t *data, size_t len);

/* Reads the JPEG header of data[0..len): image size and components. IH_E_DATA with the
 * reason on failure. The data must stay valid until pipe_decoder_render returns. */
ih_err pipe_decoder_open(pipe_decoder *d, const uint8_t *data, size_t len, int *w, int *h);

/* Decodes the opened image's box c into dst (ow x oh x 3, packed RGB), mirrored if c->flip.
 * IH_E_DATA on corrupt data; dst may then be partly written. */
ih_err pipe_decoder_render(pipe_decoder *d, const pipe_crop *c, int ow, int oh, uint8_t *dst);

/* Decodes the whole image at scale 1/denom (1, 2, 4 or 8) to RGB in the decoder's buffer:
 * *rgb valid until the next call on d; *w, *h the scaled size. Every scanline is read, so
 * any truncation or corruption is reported. Used for checks and tests. */
ih_err pipe_decoder_full(pipe_decoder *d, const uint8_t *data, size_t len, int denom,
                         const uint8_t **rgb, int *w, int *h);

/* The scale denominator (1, 2, 4, 8) render uses for box c and an ow x oh output. */
int pipe_decode_scale_denom(const pipe_crop *c, int ow, int oh);

/* Components and colour space name of the last opened image ("YCbCr", "GRAY", "CMYK",
 * "YCCK", "RGB"), for messages and inspection. */
void pipe_decoder_info(const pipe_decoder *d, int *components, const char **colorspace, int *progressive);

#endif
