/* test_train_loss_falls — a tiny end-to-end run (synthetic JPEGs -> LMDB -> loader -> resnet8 ->
 * SGD) where the training loss must fall well below its start (ln 4 = 1.386 for 4 classes) and
 * the validation accuracy must beat chance (0.25); the RESULT line and metrics file exist. */
#include "tests/trainer/tiny_data.h"

static char out[1 << 18];

int main(void)
{
    char tmp[] = "/tmp/ih_lossfalls_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    if (make_tiny_data(tmp, 4, 48, 16)) { CHECK(0, "could not build the tiny dataset"); return ih_test_result(); }
    int rc = run_cmd(out, sizeof out,
                     "%s/bin/train --train %s/train.lmdb --val %s/val.lmdb -o %s/run --arch resnet8 "
                     "--image-size 24 -b 16 --epochs 8 --base-lr 0.4 --warmup-epochs 1 --schedule cosine "
                     "--min-scale 0.35 --threads 2 --log-every 4 --no-progress",
                     bin_dir(), tmp, tmp, tmp);
    CHECK(rc == 0, "train exit %d:\n%s", rc, out);
    /* Loss of the first and last logged windows, from metrics.jsonl. */
    char path[1024];
    snprintf(path, sizeof path, "%s/run/metrics.jsonl", tmp);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "no %s", path);
    double first = -1, last = -1, top1 = -1;
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        char *l = strstr(line, "\"loss\":");
        if (l) { double v = atof(l + 7); if (first < 0) first = v; last = v; }
        char *t = strstr(line, "\"val_top1\":");
        if (t) top1 = atof(t + 11);
    }
    if (f) fclose(f);
    printf("first loss %.4f, last loss %.4f, val top1 %.3f\n", first, last, top1);
    CHECK(first > 1.0, "first loss %.4f should be near ln(4)", first);
    CHECK(last < 0.7 * first, "loss did not fall: first %.4f last %.4f", first, last);
    CHECK(top1 > 0.4, "val top1 %.3f not above chance 0.25 by a margin", top1);
    CHECK(strstr(out, "RESULT top1=") != NULL, "no RESULT line:\n%s", out);
    run_cmd(out, sizeof out, "rm -rf %s", tmp);
    return ih_test_result();
}
