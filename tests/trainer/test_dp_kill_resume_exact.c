/* test_dp_kill_resume_exact — 3 workers (--nproc 3), checkpoints every 4 iterations:
 *   A: 2 epochs uninterrupted;
 *   B: rank 1 is SIGKILLed at iteration 10 (IH_DEBUG_DIE_AT, while ranks 0 and 2 are already in
 *      the step's allreduce). Ranks 0 and 2 must exit within the communicator timeout with a
 *      message naming rank 1; the launcher names it too; the last checkpoint (iteration 8) must
 *      load (checksum) and no temporary file may be left. Then B resumes from it to the end.
 * Every loss B logged after the resume must equal A's for the same iteration, bit for bit (the
 * metrics print 17 digits), and the final checkpoints must be byte-identical. */
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/trainer/tiny_data.h"
#include "trainer/checkpoint.h"

static char out[1 << 18];

static int train(const char *tmp, const char *run, const char *env, const char *extra)
{
    int rc = run_cmd(out, sizeof out,
                     "%s %s/bin/train --nproc 3 --train %s/train.lmdb -o %s/%s --arch resnet8 --image-size 16 -b 4 "
                     "--epochs 2 --base-lr 0.4 --warmup-epochs 0 --schedule cosine --threads 1 --log-every 1 "
                     "--ckpt-every 4 --no-progress --comm-timeout 10 %s",
                     env, bin_dir(), tmp, tmp, run, extra);
    return rc;
}

/* loss text of iteration `it` in DIR/metrics.jsonl (the last line for it), "" if none. */
static void loss_at(const char *tmp, const char *run, long it, char *dst, size_t cap)
{
    char p[1024], line[512], key[64];
    snprintf(p, sizeof p, "%s/%s/metrics.jsonl", tmp, run);
    snprintf(key, sizeof key, "\"iter\":%ld,\"loss\":", it);
    dst[0] = 0;
    FILE *f = fopen(p, "r");
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        char *k = strstr(line, key);
        if (!k) continue;
        k += strlen(key);
        size_t n = strcspn(k, ",");
        snprintf(dst, cap, "%.*s", (int)n, k);
    }
    fclose(f);
}


int main(void)
{
    char tmp[] = "/tmp/ih_dpkill_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    if (make_tiny_data(tmp, 4, 48, 2)) { CHECK(0, "could not build the tiny dataset"); return ih_test_result(); }
    /* 192 records / (3 x 4) = 16 iterations per epoch, 32 in all. */
    int rc = train(tmp, "A", "", "");
    CHECK(rc == 0, "run A: exit %d\n%s", rc, out);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = train(tmp, "B", "IH_DEBUG_DIE_AT=1:10", "");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    CHECK(rc == 137, "the launcher should report rank 1's SIGKILL (exit 137), got %d:\n%s", rc, out);
    CHECK(strstr(out, "launch: rank 1 ") != NULL, "the launcher should name rank 1:\n%s", out);
    CHECK(strstr(out, "rank 0 of 3: error") && strstr(out, "rank 2 of 3: error"), "ranks 0 and 2 should fail:\n%s", out);
    CHECK(strstr(out, "rank 1 (host") != NULL, "the survivors' messages should name rank 1:\n%s", out);
    CHECK(secs < 10 + 10, "the job took %.1f s to end (timeout 10 s + grace)", secs);

    char p[1024];
    snprintf(p, sizeof p, "%s/B/checkpoint.bin.tmp", tmp);
    CHECK(access(p, F_OK) != 0, "a temporary checkpoint was left behind");
    snprintf(p, sizeof p, "%s/B/checkpoint.bin", tmp);
    ckpt_meta m;
    CHECK(ckpt_read_meta(p, &m) == IH_OK, "%s", ih_last_error());
    CHECK(m.iter == 8 && m.epoch == 0 && m.batch_in_epoch == 8, "last checkpoint at iter %lld (epoch %lld batch %lld), want 8",
          (long long)m.iter, (long long)m.epoch, (long long)m.batch_in_epoch);
    float *w = malloc(m.n_params * sizeof(float)), *s = malloc(m.n_state * sizeof(float));
    CHECK(ckpt_load(p, &m, w, s, NULL) == IH_OK, "checkpoint after the kill: %s", ih_last_error());
    free(w);
    free(s);

    rc = train(tmp, "B", "", "--resume auto");
    CHECK(rc == 0, "resume of B: exit %d\n%s", rc, out);
    CHECK(strstr(out, "epoch 0, batch 8, iteration 8") != NULL, "B should resume at iteration 8:\n%s", out);
    int same = 0;
    for (long it = 9; it <= 32; it++) {
        char a[64], b[64];
        loss_at(tmp, "A", it, a, sizeof a);
        loss_at(tmp, "B", it, b, sizeof b);
        CHECK(a[0] && !strcmp(a, b), "iteration %ld: loss %s uninterrupted, %s resumed", it, a, b);
        same += a[0] && !strcmp(a, b);
    }
    printf("%d of 24 losses after the resume equal the uninterrupted run's\n", same);
    unsigned char *ca = NULL, *cb = NULL;
    snprintf(p, sizeof p, "%s/A/checkpoint.bin", tmp);
    long na = read_file(p, &ca);
    snprintf(p, sizeof p, "%s/B/checkpoint.bin", tmp);
    long nb = read_file(p, &cb);
    CHECK(na > 160 && na == nb && !memcmp(ca, cb, (size_t)na), "final checkpoints differ (%ld vs %ld bytes)", na, nb);
    free(ca);
    free(cb);
    run_cmd(out, sizeof out, "rm -rf %s", tmp);
    return ih_test_result();
}
