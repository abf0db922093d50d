/* test_dp_shard_union — the trainer's sharding (session.h): worker r of k with V virtual workers
 * reads its loader with batch V*n. For k = 1..4 and V = 1, 2:
 *   - index level: over an epoch the positions all workers take cover [0, G*k*V*n) of the
 *     permutation, each once, so every record index appears at most once and exactly
 *     G*k*V*n of them appear (the remainder N mod k*V*n is dropped, as documented);
 *   - data level: worker batches concatenated in rank order are byte-identical (images and
 *     labels) to the one-worker batch of k*V*n, for the first global batches of an epoch.
 */
#include <stdint.h>
#include <string.h>

#include "pipeline/loader.h"
#include "pipeline/shuffle.h"
#include "tests/trainer/tiny_data.h"

enum { N = 3, SIDE = 16 };

static pipe_loader *open_loader(const char *lmdb, int rank, int world, int batch)
{
    pipe_cfg pc;
    pipe_cfg_defaults(&pc);
    pc.lmdb_path = lmdb;
    pc.batch = batch;
    pc.crop = SIDE;
    pc.resize = (SIDE * 256 + 223) / 224;
    pc.seed = 5;
    pc.rank = rank;
    pc.world = world;
    pipe_loader *l = NULL;
    if (pipe_loader_create(&l, &pc)) fprintf(stderr, "%s\n", ih_last_error());
    return l;
}

int main(void)
{
    char tmp[] = "/tmp/ih_dpunion_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    if (make_tiny_data(tmp, 5, 20, 1)) { CHECK(0, "could not build the tiny dataset"); return ih_test_result(); }
    char lmdb[1024];
    snprintf(lmdb, sizeof lmdb, "%s/train.lmdb", tmp);
    const uint32_t NR = 100;
    uint32_t perm[100];
    int seen[100];
    const size_t img = SIDE * SIDE * 3;
    for (int k = 1; k <= 4; k++)
        for (int V = 1; V <= 2; V++) {
            const int nb = V * N;
            /* index level, two epochs */
            for (int ep = 0; ep < 2; ep++) {
                pipe_perm_build(perm, NR, 5, (uint64_t)ep);
                memset(seen, 0, sizeof seen);
                const int64_t G = pipe_train_batches(NR, k, nb);
                int64_t total = 0, dup = 0;
                for (int64_t g = 0; g < G; g++)
                    for (int r = 0; r < k; r++)
                        for (int j = 0; j < nb; j++) {
                            int64_t pos = pipe_train_pos(g, r, k, nb, j);
                            dup += seen[perm[pos]]++ > 0;
                            total++;
                        }
                CHECK(dup == 0 && total == G * k * nb && total == NR - NR % (uint32_t)(k * nb),
                      "k=%d V=%d epoch %d: %lld samples, %lld repeated, want %u", k, V, ep, (long long)total,
                      (long long)dup, NR - NR % (uint32_t)(k * nb));
            }
            /* data level: the first 2 global batches of epoch 1 */
            pipe_loader *ref = open_loader(lmdb, 0, 1, k * nb), *w[4] = {0};
            for (int r = 0; r < k; r++) w[r] = open_loader(lmdb, r, k, nb);
            CHECK(ref != NULL, "reference loader");
            int ok = ref != NULL;
            if (ok) ok = pipe_loader_start_epoch(ref, 1, 0) == IH_OK;
            for (int r = 0; r < k && ok; r++) ok = w[r] && pipe_loader_start_epoch(w[r], 1, 0) == IH_OK;
            for (int g = 0; g < 2 && ok; g++) {
                pipe_batch rb;
                ok = pipe_loader_next(ref, &rb) == IH_OK && rb.n == k * nb;
                for (int r = 0; r < k && ok; r++) {
                    pipe_batch b;
                    ok = pipe_loader_next(w[r], &b) == IH_OK && b.n == nb;
                    if (!ok) break;
                    CHECK(!memcmp(b.images, rb.images + (size_t)r * nb * img, (size_t)nb * img) &&
                              !memcmp(b.labels, rb.labels + (size_t)r * nb, (size_t)nb * sizeof(int32_t)),
                          "k=%d V=%d: worker %d's part of global batch %d differs from the one-worker batch", k, V, r, g);
                    pipe_loader_release(w[r], &b);
                }
                if (ok) pipe_loader_release(ref, &rb);
            }
            CHECK(ok, "k=%d V=%d: loaders failed: %s", k, V, ih_last_error());
            for (int r = 0; r < k; r++) pipe_loader_destroy(w[r]);
            pipe_loader_destroy(ref);
        }
    char out[4096];
    run_cmd(out, sizeof out, "rm -rf %s", tmp);
    return ih_test_result();
}
