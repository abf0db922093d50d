/* test_checkpoint_atomic — checkpoints round-trip exactly; a corrupted byte or a truncated file
 * is refused with the file's name; a failed save leaves the previous checkpoint intact and no
 * temporary file behind. */
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "tests/check.h"
#include "trainer/checkpoint.h"

enum { NP = 1000, NS = 40 };

int main(void)
{
    char dir[] = "/tmp/ih_ckpt_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[256], tmp[300];
    snprintf(path, sizeof path, "%s/c.bin", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    static float p[NP], s[NS], u[NP], p2[NP], s2[NS], u2[NP];
    for (int i = 0; i < NP; i++) { p[i] = (float)i * 0.5f - 3; u[i] = -(float)i; }
    for (int i = 0; i < NS; i++) s[i] = (float)i / 7;
    ckpt_meta m = {.arch = "resnet8", .num_classes = 10, .image_size = 32, .epoch = 3, .batch_in_epoch = 7,
                   .iter = 123, .prev_lr = 0.25, .seed = 9, .n_params = NP, .n_state = NS, .n_momentum = NP};
    CHECK(ckpt_save(path, &m, p, s, u) == IH_OK, "save: %s", ih_last_error());
    CHECK(access(tmp, F_OK) != 0, "temporary file left behind");
    ckpt_meta r;
    CHECK(ckpt_read_meta(path, &r) == IH_OK, "read meta: %s", ih_last_error());
    CHECK(!strcmp(r.arch, "resnet8") && r.num_classes == 10 && r.image_size == 32 && r.epoch == 3 &&
              r.batch_in_epoch == 7 && r.iter == 123 && r.prev_lr == 0.25 && r.seed == 9 && r.n_params == NP,
          "meta round trip");
    CHECK(ckpt_load(path, &r, p2, s2, u2) == IH_OK, "load: %s", ih_last_error());
    CHECK(!memcmp(p, p2, sizeof p) && !memcmp(s, s2, sizeof s) && !memcmp(u, u2, sizeof u), "payload round trip");

    /* Flip one payload byte: checksum mismatch. */
    FILE *f = fopen(path, "r+b");
    fseek(f, 160 + 4 * 500 + 1, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, 160 + 4 * 500 + 1, SEEK_SET);
    fputc(ch ^ 0x10, f);
    fclose(f);
    CHECK(ckpt_load(path, &r, p2, s2, u2) == IH_E_DATA && strstr(ih_last_error(), "corrupt") &&
              strstr(ih_last_error(), path),
          "corruption must be detected: %s", ih_last_error());

    /* Truncate. */
    CHECK(ckpt_save(path, &m, p, s, u) == IH_OK, "save");
    CHECK(truncate(path, 160 + 4 * NP) == 0, "truncate");
    CHECK(ckpt_load(path, &r, p2, s2, u2) == IH_E_DATA && strstr(ih_last_error(), "truncated"),
          "truncation must be detected: %s", ih_last_error());

    /* A save that cannot complete leaves the previous checkpoint untouched. */
    CHECK(ckpt_save(path, &m, p, s, u) == IH_OK, "save");
    char bad[300];
    snprintf(bad, sizeof bad, "%s/no/such/dir/c.bin", dir);
    CHECK(ckpt_save(bad, &m, p, s, u) == IH_E_SYS && strstr(ih_last_error(), "no/such/dir"), "bad dir: %s",
          ih_last_error());
    CHECK(ckpt_load(path, &r, p2, s2, u2) == IH_OK, "previous checkpoint still good");

    snprintf(bad, sizeof bad, "%s/not-a-ckpt", dir);
    f = fopen(bad, "w");
    fputs("hello", f);
    fclose(f);
    CHECK(ckpt_read_meta(bad, &r) == IH_E_DATA && strstr(ih_last_error(), "not an imagenet-1h checkpoint"), "magic");
    unlink(bad);
    unlink(path);
    rmdir(dir);
    return ih_test_result();
}
