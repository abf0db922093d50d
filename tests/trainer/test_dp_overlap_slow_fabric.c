/* test_dp_overlap_slow_fabric — with an artificially slow fabric (IH_DEBUG_COMM_DELAY_MS: the
 * comm thread sleeps 8 ms before each bucket, without using the CPU), 2 workers and small
 * buckets (0.1 MB first, then 0.2 MB: several buckets for resnet20's 1.1 MB of gradients), the
 * profile must show the allreduce overlapped with backward: its exposed part (after backward)
 * well under its total, and the total at least the injected delay (so the delay was really
 * there). Also checks the RESULT line's fields and that the Chrome trace is written. A loaded
 * machine gets up to 3 runs for the overlap checks (see below). */
#include <math.h>
#include <string.h>

#include "tests/trainer/tiny_data.h"

static char out[1 << 18];

static double field(const char *line, const char *key)
{
    const char *p = strstr(line, key);
    return p ? atof(p + strlen(key)) : NAN;
}

int main(void)
{
    char tmp[] = "/tmp/ih_dpovl_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    if (make_tiny_data(tmp, 4, 24, 1)) { CHECK(0, "could not build the tiny dataset"); return ih_test_result(); }
    /* Timing on a shared machine: a run whose comm thread was descheduled by other load can
     * show less overlap than the code gives. Up to 3 runs; the overlap checks judge the best
     * (a build without overlap fails all three; the other checks apply to every run). */
    double best_exposed = INFINITY, best_comm = 0, best_ovl = 0, best_frac = 1, best_step = 0;
    for (int attempt = 0; attempt < 3; attempt++) {
        int rc = run_cmd(out, sizeof out,
                         "IH_DEBUG_COMM_DELAY_MS=8 %s/bin/train --nproc 2 --mode profile --train %s/train.lmdb "
                         "--arch resnet20 --image-size 16 -b 16 --threads 1 --profile-iters 6 --first-bucket-mb 0.1 "
                         "--bucket-mb 0.2 --comm-timeout 30 --trace %s/trace.json",
                         bin_dir(), tmp, tmp);
        CHECK(rc == 0, "profile: exit %d\n%s", rc, out);
        const char *r = strstr(out, "RESULT workers=");
        CHECK(r != NULL, "no RESULT line:\n%s", out);
        if (rc || !r) break;
        const double comm = field(r, "comm_ms="), exposed = field(r, "exposed_ms="), step = field(r, "step_ms=");
        const double ovl = field(r, "overlap_eff="), frac = field(r, "exposed_comm_frac=");
        printf("run %d: allreduce %.1f ms, exposed %.1f ms, step %.1f ms, overlap %.2f\n", attempt + 1, comm, exposed,
               step, ovl);
        CHECK(field(r, "workers=") == 2 && field(r, "img_s=") > 0, "RESULT fields: %s", r);
        CHECK(comm >= 3 * 8 * 0.9, "allreduce total %.1f ms should include 3+ buckets of 8 ms delay", comm);
        if (exposed / comm < best_exposed / (best_comm > 0 ? best_comm : 1)) {
            best_exposed = exposed, best_comm = comm, best_ovl = ovl, best_frac = frac, best_step = step;
        }
        if (exposed < 0.5 * comm && ovl > 0.5 && frac < 0.5) break;
    }
    CHECK(best_exposed < 0.5 * best_comm, "exposed %.1f ms is not well under the allreduce total %.1f ms: no overlap",
          best_exposed, best_comm);
    CHECK(best_ovl > 0.5 && best_frac < 0.5 && best_exposed <= best_step, "overlap %.2f, exposed fraction %.2f",
          best_ovl, best_frac);
    char p[1024];
    snprintf(p, sizeof p, "%s/trace.json", tmp);
    FILE *f = fopen(p, "r");
    CHECK(f != NULL, "no trace written");
    if (f) {
        static char buf[1 << 20];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
        CHECK(strstr(buf, "\"traceEvents\"") && strstr(buf, "\"bucket 1\"") && strstr(buf, "\"backward\""),
              "trace lacks events");
    }
    run_cmd(out, sizeof out, "rm -rf %s", tmp);
    return ih_test_result();
}
