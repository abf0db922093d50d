/* pipeline/decode.c — libjpeg (turbo) decode with crop + DCT scaling (see decode.h).
 *
 * Error handling: libjpeg reports fatal errors through error_exit, which must not return;
 * ours formats the message into the decoder and longjmps back to the caller's setjmp. All
 * locals written after setjmp that are read after the longjmp are volatile or re-derived.
 *
 * Memory: libjpeg allocates its per-image structures (JPOOL_IMAGE: scanline buffers, IDCT
 * and upsampler state) with malloc at every jpeg_start_decompress and frees them at the end
 * of each image. We take over that pool: the memory manager's alloc_small/alloc_large/
 * alloc_sarray/alloc_barray for JPOOL_IMAGE come from a per-decoder arena that is reset,
 * not freed, when libjpeg frees the pool, and that grows (once) to the largest image seen.
 * So steady-state decoding does no malloc. The permanent pool and the virtual arrays of
 * progressive/multi-scan images stay with libjpeg's own manager (the latter still malloc
 * per image: rare in datasets, and correct).
 */
#include "decode.h"

#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

#include "resize.h"

#define MAX_WINDOW_BYTES ((size_t)1 << 30)

struct err_mgr {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
};

/* Per-image arena: one block of `cap` bytes, bump-allocated; requests that do not fit are
 * malloc'd as spills and linked, and the next reset replaces block + spills by one block of
 * their total size. 64-byte alignment (libjpeg-turbo's SIMD wants 32). */
typedef struct spill {
    struct spill *next;
} spill;

enum { ARENA_ALIGN = 64 };

struct pipe_decoder {
    struct jpeg_decompress_struct cinfo;
    struct err_mgr jerr;
    struct jpeg_memory_mgr orig; /* libjpeg's own methods (the struct is patched in place) */
    uint8_t *arena;
    size_t arena_cap, arena_used;
    spill *spills;
    size_t spill_bytes;
    int opened; /* header read, decompressor holds the image */
    uint8_t *buf;  /* window / full image RGB */
    size_t buf_cap;
    uint8_t *row;  /* one CMYK scanline */
    size_t row_cap;
    void *tab;     /* resampler scratch */
    size_t tab_cap;
};

static void on_error(j_common_ptr c)
{
    struct err_mgr *e = (struct err_mgr *)c->err;
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jb, 1);
}

static void on_message(j_common_ptr c, int level)
{
    if (level >= 0) return; /* trace messages */
    /* Warnings that mean part of the image is missing or garbage (libjpeg pads it with grey
     * and carries on) are errors for us; benign ones (extraneous bytes before a marker,
     * common in ImageNet, unknown APPn data) are tolerated. */
    int code = c->err->msg_code;
    if (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER || code == JWRN_HUFF_BAD_CODE) on_error(c);
    c->err->num_warnings++;
}

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

static void *arena_alloc(pipe_decoder *d, size_t n)
{
    n = round_up(n ? n : 1, ARENA_ALIGN);
    if (d->arena && d->arena_cap - d->arena_used >= n) {
        void *p = d->arena + d->arena_used;
        d->arena_used += n;
        return p;
    }
    void *q = NULL;
    if (posix_memalign(&q, ARENA_ALIGN, ARENA_ALIGN + n)) return NULL;
    spill *sp = q;
    sp->next = d->spills;
    d->spills = sp;
    d->spill_bytes += n;
    return (uint8_t *)q + ARENA_ALIGN;
}

/* Called when libjpeg frees JPOOL_IMAGE: everything handed out is dead. */
static void arena_reset(pipe_decoder *d)
{
    if (d->spills) {
        size_t want = round_up(d->arena_used + d->spill_bytes + d->spill_bytes / 4, 4096);
        while (d->spills) {
            spill *n = d->spills->next;
            free(d->spills);
            d->spills = n;
        }
        d->spill_bytes = 0;
        void *q = NULL;
        if (!posix_memalign(&q, ARENA_ALIGN, want)) {
            free(d->arena);
            d->arena = q;
            d->arena_cap = want;
        } /* else: keep the old block; the next image spills again */
    }
    d->arena_used = 0;
}

static pipe_decoder *dec_of(j_common_ptr c) { return (pipe_decoder *)c->client_data; }

static void *mm_alloc_small(j_common_ptr c, int pool, size_t n)
{
    pipe_decoder *d = dec_of(c);
    if (pool != JPOOL_IMAGE) return d->orig.alloc_small(c, pool, n);
    void *p = arena_alloc(d, n);
    if (!p) ERREXIT1(c, JERR_OUT_OF_MEMORY, 7);
    return p;
}

static void *mm_alloc_large(j_common_ptr c, int pool, size_t n)
{
    pipe_decoder *d = dec_of(c);
    if (pool != JPOOL_IMAGE) return d->orig.alloc_large(c, pool, n);
    void *p = arena_alloc(d, n);
    if (!p) ERREXIT1(c, JERR_OUT_OF_MEMORY, 8);
    return p;
}

/* Rows padded to 64 bytes, like libjpeg-turbo's own (its SIMD code may touch the padding). */
static JSAMPARRAY mm_alloc_sarray(j_common_ptr c, int pool, JDIMENSION per_row, JDIMENSION rows)
{
    pipe_decoder *d = dec_of(c);
    if (pool != JPOOL_IMAGE) return d->orig.alloc_sarray(c, pool, per_row, rows);
    size_t rb = round_up((size_t)per_row * sizeof(JSAMPLE), ARENA_ALIGN);
    JSAMPARRAY a = mm_alloc_small(c, pool, sizeof(JSAMPROW) * rows);
    uint8_t *blk = mm_alloc_large(c, pool, rb * rows);
    for (JDIMENSION i = 0; i < rows; i++) a[i] = (JSAMPROW)(blk + rb * i);
    return a;
}

static JBLOCKARRAY mm_alloc_barray(j_common_ptr c, int pool, JDIMENSION per_row, JDIMENSION rows)
{
    pipe_decoder *d = dec_of(c);
    if (pool != JPOOL_IMAGE) return d->orig.alloc_barray(c, pool, per_row, rows);
    size_t rb = round_up((size_t)per_row * sizeof(JBLOCK), ARENA_ALIGN);
    JBLOCKARRAY a = mm_alloc_small(c, pool, sizeof(JBLOCKROW) * rows);
    uint8_t *blk = mm_alloc_large(c, pool, rb * rows);
    for (JDIMENSION i = 0; i < rows; i++) a[i] = (JBLOCKROW)(blk + rb * i);
    return a;
}

static void mm_free_pool(j_common_ptr c, int pool)
{
    pipe_decoder *d = dec_of(c);
    if (pool == JPOOL_IMAGE) arena_reset(d);
    d->orig.free_pool(c, pool);
}

/* Points libjpeg's per-image allocations at the arena (see the file comment). */
static void install_arena(pipe_decoder *d)
{
    struct jpeg_memory_mgr *m = d->cinfo.mem;
    d->orig = *m;
    d->cinfo.client_data = d;
    m->alloc_small = mm_alloc_small;
    m->alloc_large = mm_alloc_large;
    m->alloc_sarray = mm_alloc_sarray;
    m->alloc_barray = mm_alloc_barray;
    m->free_pool = mm_free_pool;
}

ih_err pipe_decoder_create(pipe_decoder **out)
{
    *out = NULL;
    pipe_decoder *d = calloc(1, sizeof *d);
    if (!d) return ih_fail(IH_E_SYS, "out of memory creating a JPEG decoder");
    d->cinfo.err = jpeg_std_error(&d->jerr.pub);
    d->jerr.pub.error_exit = on_error;
    d->jerr.pub.emit_message = on_message;
    if (setjmp(d->jerr.jb)) {
        ih_err e = ih_fail(IH_E_SYS, "jpeg_create_decompress: %s", d->jerr.msg);
        free(d);
        return e;
    }
    jpeg_create_decompress(&d->cinfo);
    install_arena(d);
    /* 2 MiB covers libjpeg's image pool for windows up to ~4000 px wide, so the arena rarely
     * has to grow after the first images. */
    d->arena_cap = (size_t)2 << 20;
    if (posix_memalign((void **)&d->arena, ARENA_ALIGN, d->arena_cap)) d->arena = NULL, d->arena_cap = 0;
    /* Scratch for a 512x512 window and 1024-wide outputs up front; grows only for larger. */
    d->buf_cap = 1024 * 1024 * 3;
    d->row_cap = 4096 * 4;
    d->tab_cap = pipe_resize_scratch_bytes(1024, 512, 512, 224, 224);
    d->buf = malloc(d->buf_cap);
    d->row = malloc(d->row_cap);
    if (posix_memalign(&d->tab, ARENA_ALIGN, d->tab_cap)) d->tab = NULL;
    if (!d->buf || !d->row || !d->tab) {
        pipe_decoder_destroy(d);
        return ih_fail(IH_E_SYS, "out of memory creating a JPEG decoder");
    }
    *out = d;
    return IH_OK;
}

void pipe_decoder_destroy(pipe_decoder *d)
{
    if (!d) return;
    jpeg_destroy_decompress(&d->cinfo); /* frees the image pool first: the arena is idle */
    arena_reset(d);
    free(d->arena);
    free(d->buf);
    free(d->row);
    free(d->tab);
    free(d);
}

/* Like grow, for buffers that must stay 64-byte aligned (no realloc: contents are scratch). */
static int grow_aligned(void **p, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 4096;
    while (n < need) n *= 2;
    void *q = NULL;
    if (posix_memalign(&q, ARENA_ALIGN, n)) return -1;
    free(*p);
    *p = q;
    *cap = n;
    return 0;
}

static int grow(void **p, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 4096;
    while (n < need) n *= 2;
    void *q = realloc(*p, n);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

const char *pipe_sniff_format(const uint8_t *p, size_t n)
{
    if (n >= 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8)) return "PNG";
    if (n >= 6 && (!memcmp(p, "GIF87a", 6) || !memcmp(p, "GIF89a", 6))) return "GIF";
    if (n >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4)) return "WebP";
    if (n >= 4 && (!memcmp(p, "II*\0", 4) || !memcmp(p, "MM\0*", 4))) return "TIFF";
    if (n >= 2 && p[0] == 'B' && p[1] == 'M') return "BMP";
    return NULL;
}

ih_err pipe_decoder_open(pipe_decoder *d, const uint8_t *data, size_t len, int *w, int *h)
{
    if (d->opened) {
        jpeg_abort_decompress(&d->cinfo);
        d->opened = 0;
    }
    if (len == 0) return ih_fail(IH_E_DATA, "empty image (0 bytes)");
    const char *fmt = pipe_sniff_format(data, len);
    if (fmt) return ih_fail(IH_E_DATA, "not a JPEG (%s signature)", fmt);
    if (len < 4 || data[0] != 0xFF || data[1] != 0xD8)
        return ih_fail(IH_E_DATA, "not a JPEG (no SOI marker; starts %02x %02x)", data[0],
                       len > 1 ? data[1] : 0);
    d->jerr.pub.num_warnings = 0;
    if (setjmp(d->jerr.jb)) {
        jpeg_abort_decompress(&d->cinfo);
        return ih_fail(IH_E_DATA, "bad JPEG header: %s", d->jerr.msg);
    }
    jpeg_mem_src(&d->cinfo, data, (unsigned long)len);
    jpeg_read_header(&d->cinfo, TRUE);
    d->opened = 1;
    *w = (int)d->cinfo.image_width;
    *h = (int)d->cinfo.image_height;
    return IH_OK;
}

int pipe_decode_scale_denom(const pipe_crop *c, int ow, int oh)
{
    for (int denom = 8; denom > 1; denom /= 2)
        if (c->w / denom >= ow && c->h / denom >= oh) return denom;
    return 1;
}

static int is_cmyk(const struct jpeg_decompress_struct *ci)
{
    return ci->jpeg_color_space == JCS_CMYK || ci->jpeg_color_space == JCS_YCCK;
}

/* CMYK scanline -> RGB. Adobe (Photoshop) files store inverted CMYK. */
static void cmyk_to_rgb(const uint8_t *in, uint8_t *out, int n, int inverted)
{
    for (int i = 0; i < n; i++) {
        int c = in[4 * i], m = in[4 * i + 1], y = in[4 * i + 2], k = in[4 * i + 3];
        if (!inverted) { c = 255 - c; m = 255 - m; y = 255 - y; k = 255 - k; }
        out[3 * i] = (uint8_t)((c * k + 127) / 255);
        out[3 * i + 1] = (uint8_t)((m * k + 127) / 255);
        out[3 * i + 2] = (uint8_t)((y * k + 127) / 255);
    }
}

/* Starts decompression at 1/denom with RGB (or CMYK) output. Inside the caller's setjmp. */
static void start(pipe_decoder *d, int denom)
{
    struct jpeg_decompress_struct *ci = &d->cinfo;
    ci->scale_num = 1;
    ci->scale_denom = (unsigned)denom;
    ci->out_color_space = is_cmyk(ci) ? JCS_CMYK : JCS_RGB;
    ci->dct_method = JDCT_ISLOW;
    ci->do_fancy_upsampling = TRUE;
    jpeg_start_decompress(ci);
}

/* Reads `rows` scanlines of `width` pixels into d->buf (RGB, stride width*3). */
static void read_rows(pipe_decoder *d, int rows, int width)
{
    struct jpeg_decompress_struct *ci = &d->cinfo;
    if (ci->out_color_space == JCS_CMYK) {
        for (int r = 0; r < rows; r++) {
            JSAMPROW row = d->row;
            if (jpeg_read_scanlines(ci, &row, 1) != 1) ERREXIT(ci, JERR_BAD_BUFFER_MODE);
            cmyk_to_rgb(d->row, d->buf + (size_t)r * width * 3, width, ci->saw_Adobe_marker);
        }
        return;
    }
    /* Several rows per call: libjpeg then hands over whole row groups without its own
     * intermediate copies. */
    enum { BATCH = 16 };
    JSAMPROW ptr[BATCH];
    for (int r = 0; r < rows;) {
        int k = rows - r < BATCH ? rows - r : BATCH;
        for (int i = 0; i < k; i++) ptr[i] = d->buf + (size_t)(r + i) * width * 3;
        JDIMENSION got = jpeg_read_scanlines(ci, ptr, (JDIMENSION)k);
        if (got == 0) ERREXIT(ci, JERR_BAD_BUFFER_MODE);
        r += (int)got;
    }
}

/* The body of render, inside the caller's setjmp. Returns 0, or -1 when the window is too
 * large to buffer (the decompressor is then aborted). */
static int render_impl(pipe_decoder *d, const pipe_crop *c, int ow, int oh, uint8_t *dst)
{
    struct jpeg_decompress_struct *ci = &d->cinfo;
    int denom = pipe_decode_scale_denom(c, ow, oh);
    start(d, denom);
    int sw = (int)ci->output_width, sh = (int)ci->output_height;
    double s = 1.0 / denom;
    /* Window in scaled pixels: the box plus the resampling filter's reach (one pixel for
     * bilinear; the tent's half-width when it antialiases). */
    double bx = c->x * s, by = c->y * s, bw = c->w * s, bh = c->h * s;
    int mx = 1 + (int)ceil(bw / ow), my = 1 + (int)ceil(bh / oh);
    int x0 = (int)bx - mx, y0 = (int)by - my;
    int x1 = (int)(bx + bw) + mx + 1, y1 = (int)(by + bh) + my + 1;
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > sw) x1 = sw;
    if (y1 > sh) y1 = sh;
    JDIMENSION xoff = 0, cw = (JDIMENSION)sw;
    if (x1 - x0 < sw) {
        xoff = (JDIMENSION)x0;
        cw = (JDIMENSION)(x1 - x0);
        jpeg_crop_scanline(ci, &xoff, &cw); /* widens the window to iMCU boundaries */
    }
    size_t need = (size_t)cw * (size_t)(y1 - y0) * 3;
    if (need > MAX_WINDOW_BYTES || grow((void **)&d->buf, &d->buf_cap, need) ||
        grow((void **)&d->row, &d->row_cap, (size_t)cw * 4) ||
        grow_aligned(&d->tab, &d->tab_cap, pipe_resize_scratch_bytes((int)cw, bw, bh, ow, oh))) {
        jpeg_abort_decompress(ci);
        return -1;
    }
    if (y0 > 0) jpeg_skip_scanlines(ci, (JDIMENSION)y0);
    read_rows(d, y1 - y0, (int)cw);
    jpeg_abort_decompress(ci); /* rows below the window are not needed */
    pipe_resize(d->buf, (int)cw, y1 - y0, (size_t)cw * 3, bx - xoff, by - y0, bw, bh, c->flip, dst, ow, oh, d->tab);
    return 0;
}

ih_err pipe_decoder_render(pipe_decoder *d, const pipe_crop *c, int ow, int oh, uint8_t *dst)
{
    IH_ASSERT(d->opened, "render without open");
    IH_ASSERT(ow >= 1 && oh >= 1 && c->w > 0 && c->h > 0, "render of box %gx%g into %dx%d", c->w, c->h, ow, oh);
    d->opened = 0;
    if (setjmp(d->jerr.jb)) {
        jpeg_abort_decompress(&d->cinfo);
        return ih_fail(IH_E_DATA, "%s", d->jerr.msg);
    }
    if (render_impl(d, c, ow, oh, dst))
        return ih_fail(IH_E_DATA, "crop window of a %ux%u image too large to buffer", d->cinfo.image_width,
                       d->cinfo.image_height);
    return IH_OK;
}

static int full_impl(pipe_decoder *d, int denom, int *w, int *h)
{
    struct jpeg_decompress_struct *ci = &d->cinfo;
    start(d, denom);
    int sw = (int)ci->output_width, sh = (int)ci->output_height;
    size_t need = (size_t)sw * (size_t)sh * 3;
    if (need > MAX_WINDOW_BYTES || grow((void **)&d->buf, &d->buf_cap, need) ||
        grow((void **)&d->row, &d->row_cap, (size_t)sw * 4)) {
        jpeg_abort_decompress(ci);
        return -1;
    }
    read_rows(d, sh, sw);
    jpeg_finish_decompress(ci);
    *w = sw;
    *h = sh;
    return 0;
}

ih_err pipe_decoder_full(pipe_decoder *d, const uint8_t *data, size_t len, int denom,
                         const uint8_t **rgb, int *w, int *h)
{
    int W, H;
    IH_TRY(pipe_decoder_open(d, data, len, &W, &H));
    d->opened = 0;
    if (setjmp(d->jerr.jb)) {
        jpeg_abort_decompress(&d->cinfo);
        return ih_fail(IH_E_DATA, "%s", d->jerr.msg);
    }
    if (full_impl(d, denom, w, h)) return ih_fail(IH_E_DATA, "image %dx%d too large to buffer", W, H);
    *rgb = d->buf;
    return IH_OK;
}

void pipe_decoder_info(const pipe_decoder *d, int *components, const char **colorspace, int *progressive)
{
    const struct jpeg_decompress_struct *ci = &d->cinfo;
    static const char *const names[] = {"unknown", "GRAY", "RGB", "YCbCr", "CMYK", "YCCK"};
    int cs = (int)ci->jpeg_color_space;
    if (components) *components = ci->num_components;
    if (colorspace) *colorspace = cs >= 0 && cs <= 5 ? names[cs] : "other";
    if (progressive) *progressive = ci->progressive_mode;
}
