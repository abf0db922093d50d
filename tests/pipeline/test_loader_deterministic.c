/* test_loader_deterministic — the loader delivers the same bytes for 1 and 4 decode threads
 * and across runs; each sample is exactly the decode of record perm[pos] with the crop of
 * (seed, epoch, record); batches come in order; labels follow the permutation; the shards of
 * 3 workers cover the epoch exactly once; resume at batch b equals batch b of a full epoch;
 * eval mode gives records rank, rank+world, ... with a short last batch. Labels = record
 * index, so every label names its record. */
#define _GNU_SOURCE
#include <string.h>

#include "pipeline/decode.h"
#include "pipeline/loader.h"
#include "pipeline/shuffle.h"
#include "tests/check.h"
#include "tests/pipeline/fixtures.h"

enum { N = 75, B = 8, CROP = 32 };
#define SEED 1234

static char g_db[300];

typedef struct {
    int64_t nb;
    uint8_t *img;  /* nb * B images */
    int32_t *lab;
    int *n;
} run_out;

static void free_run(run_out *r)
{
    free(r->img);
    free(r->lab);
    free(r->n);
}

static run_out run_from(int threads, int train, int rank, int world, int epoch, int64_t first)
{
    pipe_cfg c;
    pipe_cfg_defaults(&c);
    c.lmdb_path = g_db;
    c.batch = B;
    c.threads = threads;
    c.crop = CROP;
    c.resize = 36;
    c.train = train;
    c.seed = SEED;
    c.rank = rank;
    c.world = world;
    c.slots = 3;
    run_out r = {0};
    pipe_loader *l = NULL;
    ih_err e = pipe_loader_create(&l, &c);
    CHECK(e == IH_OK, "create: %s", ih_last_error());
    if (e) return r;
    CHECK(pipe_loader_num_records(l) == N && pipe_loader_num_classes(l) == N, "records %lld classes %d",
          (long long)pipe_loader_num_records(l), pipe_loader_num_classes(l));
    r.nb = pipe_loader_batches_per_epoch(l);
    size_t ib = (size_t)CROP * CROP * 3 * B;
    r.img = calloc((size_t)r.nb, ib);
    r.lab = calloc((size_t)r.nb * B, sizeof(int32_t));
    r.n = calloc((size_t)r.nb, sizeof(int));
    CHECK(pipe_loader_start_epoch(l, epoch, first) == IH_OK, "start_epoch");
    pipe_batch b;
    for (int64_t want = first;; want++) {
        e = pipe_loader_next(l, &b);
        CHECK(e == IH_OK, "next: %s", ih_last_error());
        if (e || b.n == 0) break;
        CHECK(b.index == want, "batch %lld delivered, expected %lld", (long long)b.index, (long long)want);
        memcpy(r.img + (size_t)b.index * ib, b.images, (size_t)b.n * CROP * CROP * 3);
        memcpy(r.lab + (size_t)b.index * B, b.labels, (size_t)b.n * sizeof(int32_t));
        r.n[b.index] = b.n;
        pipe_loader_release(l, &b);
    }
    CHECK(pipe_loader_bad_records(l) == 0, "bad records");
    pipe_loader_destroy(l);
    return r;
}

static run_out run(int threads, int train, int rank, int world, int epoch)
{
    return run_from(threads, train, rank, world, epoch, 0);
}

int main(void)
{
    char dir[256];
    fx_tmpdir(dir, "loader");
    snprintf(g_db, sizeof g_db, "%s/db", dir);
    uint8_t *vals[N];
    size_t lens[N];
    unsigned char *jpg[N];
    unsigned long jl[N];
    for (int i = 0; i < N; i++) {
        int w = 40 + (i * 37) % 160, h = 40 + (i * 53) % 120;
        jpg[i] = fx_jpeg(w, h, i, TJPF_RGB, i % 3 == 0 ? TJSAMP_444 : TJSAMP_420, 90, &jl[i]);
        vals[i] = fx_datum(jpg[i], jl[i], i, w, h, &lens[i]);
    }
    fx_write_lmdb(g_db, N, (const uint8_t *const *)vals, lens, 0);
    const size_t ib = (size_t)CROP * CROP * 3 * B;

    /* Train: 1 vs 4 threads, two epochs, and a rerun. */
    run_out a0 = run(1, 1, 0, 1, 0), b0 = run(4, 1, 0, 1, 0), a1 = run(1, 1, 0, 1, 1), b1 = run(4, 1, 0, 1, 1);
    run_out again = run(3, 1, 0, 1, 0);
    CHECK(a0.nb == N / B, "batches per epoch %lld", (long long)a0.nb);
    CHECK(!memcmp(a0.img, b0.img, (size_t)a0.nb * ib) && !memcmp(a0.lab, b0.lab, (size_t)a0.nb * B * 4),
          "epoch 0: 1 and 4 threads differ");
    CHECK(!memcmp(a1.img, b1.img, (size_t)a1.nb * ib) && !memcmp(a1.lab, b1.lab, (size_t)a1.nb * B * 4),
          "epoch 1: 1 and 4 threads differ");
    CHECK(!memcmp(a0.img, again.img, (size_t)a0.nb * ib), "two runs differ");
    CHECK(memcmp(a0.lab, a1.lab, (size_t)a0.nb * B * 4), "epochs 0 and 1 have the same order");

    /* Labels follow the permutation, and each image is the decode of its record. */
    uint32_t perm[N];
    pipe_perm_build(perm, N, SEED, 0);
    pipe_decoder *dec;
    CHECK(pipe_decoder_create(&dec) == IH_OK, "decoder");
    pipe_rrc rrc = {0.08f, 1.0f, 3.0f / 4.0f, 4.0f / 3.0f};
    uint8_t want[CROP * CROP * 3];
    int wrong_lab = 0, wrong_img = 0;
    for (int64_t g = 0; g < a0.nb; g++)
        for (int j = 0; j < B; j++) {
            uint32_t rec = perm[g * B + j];
            wrong_lab += a0.lab[g * B + j] != (int32_t)rec;
            int W, H;
            pipe_crop c;
            CHECK(pipe_decoder_open(dec, jpg[rec], jl[rec], &W, &H) == IH_OK, "open");
            pipe_crop_train(SEED, 0, rec, W, H, &rrc, &c);
            CHECK(pipe_decoder_render(dec, &c, CROP, CROP, want) == IH_OK, "render");
            wrong_img += memcmp(want, a0.img + (size_t)(g * B + j) * CROP * CROP * 3, sizeof want) != 0;
        }
    CHECK(wrong_lab == 0 && wrong_img == 0, "%d labels and %d images not those of perm order", wrong_lab, wrong_img);
    pipe_decoder_destroy(dec);

    /* Shards: 3 workers, each global batch of 24 split in rank order; union = perm prefix. */
    int64_t nb3 = N / (3 * B);
    int seen[N] = {0};
    for (int r = 0; r < 3; r++) {
        run_out s = run(2, 1, r, 3, 0);
        CHECK(s.nb == nb3, "rank %d: %lld batches", r, (long long)s.nb);
        for (int64_t g = 0; g < s.nb; g++)
            for (int j = 0; j < B; j++) {
                int32_t lab = s.lab[g * B + j];
                CHECK(lab == (int32_t)perm[g * 3 * B + r * B + j], "rank %d batch %lld item %d", r, (long long)g, j);
                if (lab >= 0 && lab < N) seen[lab]++;
            }
        free_run(&s);
    }
    int once = 0, more = 0;
    for (int i = 0; i < N; i++) once += seen[i] == 1, more += seen[i] > 1;
    CHECK(once == nb3 * 3 * B && more == 0, "shards: %d seen once, %d more than once", once, more);

    /* Resume at batch 3 of epoch 1 = batches 3.. of the full epoch. */
    run_out res = run_from(2, 1, 0, 1, 1, 3);
    CHECK(!memcmp(res.img + 3 * ib, a1.img + 3 * ib, (size_t)(a1.nb - 3) * ib), "resume differs");
    CHECK(res.n[0] == 0 && res.n[3] == B, "resume started at batch 3");
    free_run(&res);

    /* Eval, rank 1 of 2: records 1, 3, ..., 73 = 37 in batches 8,8,8,8,5. */
    run_out ev = run(3, 0, 1, 2, 0), ev1 = run(1, 0, 1, 2, 0);
    CHECK(ev.nb == 5 && ev.n[4] == 5 && ev.n[0] == B, "eval batches %lld, last %d", (long long)ev.nb, ev.n[4]);
    int bad_order = 0;
    for (int k = 0; k < 37; k++) bad_order += ev.lab[k] != 2 * k + 1;
    CHECK(bad_order == 0, "eval order: %d labels wrong", bad_order);
    CHECK(!memcmp(ev.img, ev1.img, 5 * ib), "eval: 1 and 3 threads differ");
    free_run(&ev);
    free_run(&ev1);

    /* Holding slots-1 batches, restarting mid-epoch, and destroy with work in flight. */
    pipe_cfg c;
    pipe_cfg_defaults(&c);
    c.lmdb_path = g_db, c.batch = B, c.threads = 2, c.crop = CROP, c.seed = SEED, c.slots = 3;
    pipe_loader *l;
    CHECK(pipe_loader_create(&l, &c) == IH_OK, "create");
    pipe_batch x, y, z;
    CHECK(pipe_loader_next(l, &x) == IH_E_USAGE, "next before start_epoch must be a usage error");
    CHECK(pipe_loader_start_epoch(l, 0, 0) == IH_OK, "start");
    CHECK(pipe_loader_next(l, &x) == IH_OK && pipe_loader_next(l, &y) == IH_OK && x.index == 0 && y.index == 1,
          "hold two");
    CHECK(!memcmp(x.images, a0.img, ib) && !memcmp(y.images, a0.img + ib, ib), "held batches intact");
    pipe_loader_release(l, &x);
    CHECK(pipe_loader_next(l, &z) == IH_OK && z.index == 2 && !memcmp(z.images, a0.img + 2 * ib, ib), "third");
    CHECK(pipe_loader_start_epoch(l, 1, 0) == IH_OK, "restart with batches held");
    pipe_loader_release(l, &y);
    pipe_loader_release(l, &z);
    for (int64_t g = 0; g < a1.nb; g++) {
        CHECK(pipe_loader_next(l, &x) == IH_OK && x.index == g, "after restart: batch %lld", (long long)g);
        CHECK(!memcmp(x.images, a1.img + (size_t)g * ib, ib), "after restart: batch %lld differs", (long long)g);
        pipe_loader_release(l, &x);
    }
    CHECK(pipe_loader_next(l, &x) == IH_OK && x.n == 0, "end of epoch gives n == 0");
    CHECK(pipe_loader_start_epoch(l, 2, 0) == IH_OK, "start 2");
    pipe_loader_destroy(l); /* with decodes in flight */

    free_run(&a0), free_run(&b0), free_run(&a1), free_run(&b1), free_run(&again);
    for (int i = 0; i < N; i++) free(vals[i]), tjFree(jpg[i]);
    fx_rmtree(dir);
    return ih_test_result();
}
