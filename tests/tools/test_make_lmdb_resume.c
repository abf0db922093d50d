/* test_make_lmdb_resume — make_lmdb killed mid-way, then run with --resume, gives the same
 * records (every key and value) and labels.txt as an uninterrupted run, and reports the bad
 * files found before the kill too; a killed run never leaves OUT (only OUT.tmp); a kill
 * between a commit and its progress checkpoint (IH_MAKE_LMDB_KILL_AFTER_COMMITS) is
 * repaired; an asynchronous SIGKILL at a random point is too; without --resume the
 * interrupted OUT.tmp is discarded and the run starts over; --resume with other options is
 * refused; the output does not depend on --threads. */
#define _GNU_SOURCE
#include <signal.h>
#include <string.h>
#include <time.h>

#include "tests/tools/mk_common.h"

enum { CLASSES = 3, PER = 40 };

static int same_db(const char *a, const char *b, const char *what)
{
    size_t la, lb, na, nb;
    uint8_t *da = mk_dump(a, &la, &na), *db = mk_dump(b, &lb, &nb);
    int ok = da && db && la == lb && na == nb && !memcmp(da, db, la);
    CHECK(ok, "%s: %s (%zu records) differs from %s (%zu records)", what, b, nb, a, na);
    char pa[600], pb[600];
    snprintf(pa, sizeof pa, "%s/labels.txt", a);
    snprintf(pb, sizeof pb, "%s/labels.txt", b);
    size_t x, y;
    char *ta = mk_slurp(pa, &x), *tb = mk_slurp(pb, &y);
    CHECK(ta && tb && x == y && !memcmp(ta, tb, x), "%s: labels.txt differs", what);
    free(da), free(db), free(ta), free(tb);
    return ok;
}

static int exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

int main(void)
{
    char dir[256], src[300], p[700], ref[300], out[300], tmp[320];
    fx_tmpdir(dir, "mkresume");
    mk_init(dir);
    char tool[600];
    snprintf(tool, sizeof tool, "%s/make_lmdb", mk_tools);
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(ref, sizeof ref, "%s/ref.lmdb", dir);
    snprintf(out, sizeof out, "%s/out.lmdb", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    mkdir(src, 0775);
    for (int c = 0; c < CLASSES; c++) {
        snprintf(p, sizeof p, "%s/class%d", src, c);
        mkdir(p, 0775);
        for (int i = 0; i < PER; i++) {
            unsigned long len;
            unsigned char *j = fx_jpeg(40 + i, 30 + c * 7, c * PER + i, TJPF_RGB, TJSAMP_420, 85, &len);
            snprintf(p, sizeof p, "%s/class%d/img%03d.jpg", src, c, i);
            /* a few bad files, early and late: truncated and garbage */
            mk_put(p, j, (c * PER + i) % 37 == 5 ? len / 3 : len);
            tjFree(j);
        }
    }
    snprintf(p, sizeof p, "%s/class1/zz_text.jpg", src);
    mk_put(p, "hello", 5);

    /* Reference: uninterrupted, 1 thread; and 3 threads gives the same records. */
    CHECK(mk_sh("%s --quiet --threads 1 --commit-every 7 %s %s", tool, src, ref) == 0, "reference run");
    size_t len;
    char *o = mk_slurp(mk_out, &len);
    int nbad_ref = 0;
    for (char *q = o; q && (q = strstr(q, "  bad: ")); q++) nbad_ref++;
    CHECK(nbad_ref == 5 && strstr(o, "skipped 5 bad files"), "reference report:\n%s", o);
    free(o);
    CHECK(mk_sh("%s --quiet --threads 3 --commit-every 5 %s %s", tool, src, out) == 0, "3-thread run");
    same_db(ref, out, "--threads 3 --commit-every 5");
    fx_rmtree(out);

    /* Killed right after the 4th commit, before its progress checkpoint. */
    int st = mk_sh("IH_MAKE_LMDB_KILL_AFTER_COMMITS=4 %s --quiet --threads 2 --commit-every 7 %s %s", tool, src, out);
    CHECK(st == 128 + SIGKILL, "kill knob: status %d", st);
    CHECK(!exists(out) && exists(tmp), "after a kill: OUT must not exist, OUT.tmp must");
    st = mk_sh("%s --quiet --threads 1 --commit-every 7 --max-side 20 --resume %s %s", tool, src, out);
    o = mk_slurp(mk_out, &len);
    CHECK(st == 1 && strstr(o, "cannot resume"), "resume with other options must be refused (%d):\n%s", st, o);
    free(o);
    st = mk_sh("%s --threads 2 --commit-every 7 --resume %s %s", tool, src, out);
    o = mk_slurp(mk_out, &len);
    CHECK(st == 0 && strstr(o, "resuming") && strstr(o, "skipped 5 bad files"), "resume (%d):\n%s", st, o);
    nbad_ref = 0;
    for (char *q = o; q && (q = strstr(q, "  bad: ")); q++) nbad_ref++;
    CHECK(nbad_ref == 5, "resumed run lists %d bad files, want all 5:\n%s", nbad_ref, o);
    free(o);
    CHECK(exists(out) && !exists(tmp), "after resume: OUT exists, OUT.tmp gone");
    same_db(ref, out, "killed after commit 4, resumed");
    CHECK(mk_sh("%s --quiet --resume %s %s", tool, src, out) == 0, "resume of a complete OUT is a no-op");
    fx_rmtree(out);

    /* Asynchronous SIGKILL once the first checkpoint exists (a random point of the run). */
    char prog[400];
    snprintf(prog, sizeof prog, "%s/make_lmdb.progress", tmp);
    for (int attempt = 0; attempt < 3; attempt++) {
        fx_rmtree(tmp);
        pid_t pid = fork();
        if (pid == 0) {
            if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(126);
            execl(tool, tool, "--quiet", "--threads", "2", "--commit-every", "3", src, out, (char *)NULL);
            _exit(127);
        }
        for (int k = 0; k < 20000 && !exists(prog); k++) usleep(100);
        kill(pid, SIGKILL);
        int ws;
        waitpid(pid, &ws, 0);
        if (WIFSIGNALED(ws)) { /* killed mid-run, as wanted; else it finished first: retry */
            printf("SIGKILL after %d attempt(s), while %s existed\n", attempt + 1, exists(tmp) ? "OUT.tmp" : "no OUT.tmp");
            break;
        }
        fx_rmtree(out);
    }
    CHECK(!exists(out), "a SIGKILLed run left %s", out);
    CHECK(mk_sh("%s --quiet --resume %s %s", tool, src, out) == 0, "resume after SIGKILL");
    same_db(ref, out, "SIGKILL at a random point, resumed");
    fx_rmtree(out);

    /* Without --resume an interrupted OUT.tmp is discarded and the run starts over. */
    st = mk_sh("IH_MAKE_LMDB_KILL_AFTER_COMMITS=2 %s --quiet --commit-every 7 %s %s", tool, src, out);
    CHECK(st == 128 + SIGKILL && exists(tmp), "second kill (%d)", st);
    st = mk_sh("%s --quiet --commit-every 7 %s %s", tool, src, out);
    o = mk_slurp(mk_out, &len);
    CHECK(st == 0 && strstr(o, "discarding"), "fresh run over an interrupted one (%d):\n%s", st, o);
    free(o);
    same_db(ref, out, "discarded and rerun");

    fx_rmtree(dir);
    return ih_test_result();
}
