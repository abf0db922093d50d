/* test_loader_options — the pipe_cfg switches added for issue 3, through the loader: the
 * defaults (flip on, no colour, malloc'd slots); colour jitter + lighting on give exactly the
 * plain sample with pipe_color_apply of (seed, epoch, record) applied, the same bytes for 1
 * and 3 threads; flip off gives the unflipped sample (the exact mirror of the flipped one);
 * out-of-range strengths are IH_E_USAGE; a slot allocator hook (as for cudaHostAlloc) gets
 * every slot buffer, batches point into them, and destroy frees each once. */
#define _GNU_SOURCE
#include <string.h>

#include "pipeline/augment.h"
#include "pipeline/loader.h"
#include "tests/check.h"
#include "tests/pipeline/fixtures.h"

enum { N = 24, B = 8, CROP = 32, IMG = CROP * CROP * 3 };
#define SEED 99

static char g_db[300];

typedef struct {
    int allocs, frees;
    void *blocks[64];
    size_t sizes[64];
} hook_ctx;

static void *hook_alloc(void *ctx, size_t n)
{
    hook_ctx *h = ctx;
    void *p = NULL;
    if (h->allocs >= 64 || posix_memalign(&p, 64, n)) return NULL;
    h->blocks[h->allocs] = p;
    h->sizes[h->allocs++] = n;
    return p;
}

static void hook_free(void *ctx, void *p)
{
    hook_ctx *h = ctx;
    for (int i = 0; i < h->allocs; i++)
        if (h->blocks[i] == p) {
            h->blocks[i] = NULL;
            h->frees++;
        }
    free(p);
}

static int in_blocks(const hook_ctx *h, const void *p, size_t n)
{
    for (int i = 0; i < h->allocs; i++)
        if (h->blocks[i] && (const uint8_t *)p >= (const uint8_t *)h->blocks[i] &&
            (const uint8_t *)p + n <= (const uint8_t *)h->blocks[i] + h->sizes[i])
            return 1;
    return 0;
}

/* One train epoch into img/lab (N images: train epochs hold floor(N/B)*B = N here). */
static void run(pipe_cfg *c, int epoch, uint8_t *img, int32_t *lab, hook_ctx *h)
{
    pipe_loader *l = NULL;
    CHECK(pipe_loader_create(&l, c) == IH_OK, "create: %s", ih_last_error());
    if (!l) return;
    CHECK(pipe_loader_start_epoch(l, epoch, 0) == IH_OK, "start");
    pipe_batch b;
    int got = 0;
    while (pipe_loader_next(l, &b) == IH_OK && b.n > 0) {
        if (h) CHECK(in_blocks(h, b.images, (size_t)b.n * IMG) && in_blocks(h, b.labels, (size_t)b.n * 4),
                     "batch %lld is not in hook-allocated memory", (long long)b.index);
        memcpy(img + (size_t)got * IMG, b.images, (size_t)b.n * IMG);
        memcpy(lab + got, b.labels, (size_t)b.n * 4);
        got += b.n;
        pipe_loader_release(l, &b);
    }
    CHECK(got == N, "epoch delivered %d of %d", got, N);
    pipe_loader_destroy(l);
}

static void base_cfg(pipe_cfg *c, int threads)
{
    pipe_cfg_defaults(c);
    c->lmdb_path = g_db, c->batch = B, c->threads = threads, c->crop = CROP, c->seed = SEED, c->slots = 3;
}

int main(void)
{
    char dir[256];
    fx_tmpdir(dir, "opts");
    snprintf(g_db, sizeof g_db, "%s/db", dir);
    uint8_t *vals[N];
    size_t lens[N];
    for (int i = 0; i < N; i++) {
        unsigned long jl;
        unsigned char *j = fx_jpeg(90 + 7 * i, 70 + 5 * i, i, TJPF_RGB, i % 2 ? TJSAMP_444 : TJSAMP_420, 90, &jl);
        vals[i] = fx_datum(j, jl, i, 0, 0, &lens[i]); /* label = record index */
        tjFree(j);
    }
    fx_write_lmdb(g_db, N, (const uint8_t *const *)vals, lens, 0);

    pipe_cfg c;
    pipe_cfg_defaults(&c);
    CHECK(c.flip == 1 && c.brightness == 0 && c.contrast == 0 && c.saturation == 0 && c.lighting == 0 &&
          !c.slot_alloc && !c.slot_free, "defaults: flip on, no colour, malloc'd slots");

    static uint8_t plain[N * IMG], col1[N * IMG], col3[N * IMG], noflip[N * IMG], want[IMG];
    int32_t lp[N], l1[N], l3[N], ln[N];
    const int epoch = 2;
    base_cfg(&c, 1);
    run(&c, epoch, plain, lp, NULL);

    /* Colour on: plain sample + pipe_color_apply, any thread count. */
    pipe_color all = {0.4f, 0.4f, 0.4f, 0.1f};
    base_cfg(&c, 1);
    c.brightness = all.brightness, c.contrast = all.contrast, c.saturation = all.saturation, c.lighting = all.lighting;
    run(&c, epoch, col1, l1, NULL);
    c.threads = 3;
    run(&c, epoch, col3, l3, NULL);
    CHECK(!memcmp(col1, col3, sizeof col1) && !memcmp(l1, l3, sizeof l1), "colour: 1 vs 3 threads differ");
    CHECK(!memcmp(l1, lp, sizeof lp), "colour changed the sample order");
    int diff = 0;
    for (int i = 0; i < N; i++) {
        memcpy(want, plain + (size_t)i * IMG, IMG);
        pipe_color_apply(SEED, epoch, (uint64_t)lp[i], &all, want, CROP * CROP);
        CHECK(!memcmp(want, col1 + (size_t)i * IMG, IMG), "sample %d (record %d): not plain + pipe_color_apply", i,
              lp[i]);
        diff += memcmp(plain + (size_t)i * IMG, col1 + (size_t)i * IMG, IMG) != 0;
    }
    CHECK(diff == N, "colour changed only %d of %d samples", diff, N);

    /* Flip off: unflipped samples equal, flipped ones are exact mirrors. */
    base_cfg(&c, 2);
    c.flip = 0;
    run(&c, epoch, noflip, ln, NULL);
    int same = 0, mirrored = 0;
    for (int i = 0; i < N; i++) {
        const uint8_t *a = plain + (size_t)i * IMG, *b = noflip + (size_t)i * IMG;
        if (!memcmp(a, b, IMG)) {
            same++;
            continue;
        }
        int ok = 1;
        for (int y = 0; y < CROP && ok; y++)
            for (int x = 0; x < CROP && ok; x++)
                ok = !memcmp(a + ((size_t)y * CROP + x) * 3, b + ((size_t)y * CROP + CROP - 1 - x) * 3, 3);
        CHECK(ok, "sample %d: flip off is neither the sample nor its mirror", i);
        mirrored += ok;
    }
    CHECK(same > 3 && mirrored > 3, "flip: %d unflipped, %d mirrored of %d", same, mirrored, N);

    /* Bad strengths. */
    base_cfg(&c, 1);
    c.saturation = 1.5f;
    pipe_loader *l = NULL;
    CHECK(pipe_loader_create(&l, &c) == IH_E_USAGE && strstr(ih_last_error(), "jitter"), "saturation 1.5: %s",
          ih_last_error());
    pipe_loader_destroy(l);

    /* Slot allocator hook. */
    hook_ctx h = {0};
    base_cfg(&c, 2);
    c.slot_alloc = hook_alloc, c.slot_free = hook_free, c.slot_ctx = &h;
    static uint8_t hooked[N * IMG];
    int32_t lh[N];
    run(&c, epoch, hooked, lh, &h);
    CHECK(h.allocs == 2 * c.slots && h.frees == h.allocs, "hook: %d allocs, %d frees, want %d each", h.allocs, h.frees,
          2 * c.slots);
    CHECK(!memcmp(hooked, plain, sizeof plain), "hooked slots changed the bytes");

    for (int i = 0; i < N; i++) free(vals[i]);
    fx_rmtree(dir);
    return ih_test_result();
}
