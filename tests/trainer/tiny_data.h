/* tests/trainer/tiny_data.h — builds a tiny synthetic dataset + LMDBs with the project's own
 * tools, for the end-to-end trainer tests (header-only). */
#ifndef IH_TESTS_TINY_DATA_H
#define IH_TESTS_TINY_DATA_H

#include "tests/check.h"
#include "tests/run_cmd.h"

/* Creates DIR/train.lmdb and DIR/val.lmdb (classes x per_class images). Returns 0 on success. */
static inline int make_tiny_data(const char *dir, int classes, int train_per_class, int val_per_class)
{
    static char out[1 << 16];
    int rc = run_cmd(out, sizeof out,
                     "%s/tools/make_synthetic --out %s/synth --classes %d --train-per-class %d --val-per-class %d --seed 3",
                     bin_dir(), dir, classes, train_per_class, val_per_class);
    if (rc) { fprintf(stderr, "make_synthetic failed (%d):\n%s\n", rc, out); return 1; }
    rc = run_cmd(out, sizeof out, "%s/tools/make_lmdb %s/synth/train %s/train.lmdb", bin_dir(), dir, dir);
    if (rc) { fprintf(stderr, "make_lmdb train failed (%d):\n%s\n", rc, out); return 1; }
    rc = run_cmd(out, sizeof out, "%s/tools/make_lmdb %s/synth/val %s/val.lmdb", bin_dir(), dir, dir);
    if (rc) { fprintf(stderr, "make_lmdb val failed (%d):\n%s\n", rc, out); return 1; }
    return 0;
}

#endif
