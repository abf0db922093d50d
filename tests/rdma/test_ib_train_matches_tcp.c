#define _GNU_SOURCE
/* test_ib_train_matches_tcp — end to end: ./train with 2 workers (torchrun-style environment,
 * MASTER_ADDR on the RDMA netdev) for a few steps on a tiny ResNet, once with --fabric ib and
 * once with --fabric tcp, ends with byte-identical checkpoints and the same loss lines. Both
 * fabrics feed the same deterministic allreduce, so the sums are the same bits. Float code
 * is ~70x slower under the VM's TCG, hence the tiny model, images and step count.
 * Run: scripts/rxe-vm/run.sh build ./tests/rdma/test_ib_train_matches_tcp (ctest -L rdma). */
#include <string.h>
#include <unistd.h>

#include "tests/rdma/ib_ranks.h"
#include "tests/trainer/tiny_data.h"

static char out[2][1 << 18];


/* Every "loss V" / "loss=V" token of rank 0's stdout, in order (the throughput columns of
 * the same lines are timing and differ between runs). */
static void loss_lines(const char *in, char *dst, size_t cap)
{
    size_t o = 0;
    dst[0] = 0;
    for (const char *l = strstr(in, "loss"); l; l = strstr(l + 4, "loss")) {
        if (l[4] != ' ' && l[4] != '=') continue;
        size_t n = 5 + strcspn(l + 5, " \n");
        if (o + n + 2 >= cap) break;
        memcpy(dst + o, l, n);
        o += n;
        dst[o++] = '\n';
        dst[o] = 0;
    }
}

int main(void)
{
    const char *addr = ib_test_addr();
    char tmp[] = "/tmp/ih_ibtrain_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    if (make_tiny_data(tmp, 2, 8, 1)) { CHECK(0, "could not build the tiny dataset"); return ih_test_result(); }
    const char *args = "--arch resnet8 --image-size 8 -b 2 --epochs 1 --base-lr 0.4 --warmup-epochs 0 "
                       "--threads 1 --max-iters 3 --log-every 1 --no-progress --comm-timeout 60";
    const char *fab[2] = {"ib", "tcp"};
    for (int f = 0; f < 2; f++) {
        int port = free_port(f);
        int rc = run_cmd(out[f], sizeof out[f],
            "export WORLD_SIZE=2 MASTER_ADDR=%s MASTER_PORT=%d OPENBLAS_NUM_THREADS=1; "
            "RANK=1 LOCAL_RANK=1 %s/bin/train --train %s/train.lmdb -o %s/%s --fabric %s %s "
            ">%s/r1.%s.log 2>&1 & p=$!; "
            "RANK=0 LOCAL_RANK=0 %s/bin/train --train %s/train.lmdb -o %s/%s --fabric %s %s; r0=$?; "
            "wait $p; r1=$?; cat %s/r1.%s.log >&2; exit $((r0 | r1))",
            addr, port, bin_dir(), tmp, tmp, fab[f], fab[f], args, tmp, fab[f],
            bin_dir(), tmp, tmp, fab[f], fab[f], args, tmp, fab[f]);
        CHECK(rc == 0, "--fabric %s: exit %d\n%s", fab[f], rc, out[f]);
        printf("--fabric %s:\n%s\n", fab[f], out[f]);
    }
    static char la[1 << 16], lb[1 << 16];
    loss_lines(out[0], la, sizeof la);
    loss_lines(out[1], lb, sizeof lb);
    CHECK(la[0] && !strcmp(la, lb), "loss lines differ between ib and tcp:\nib:\n%s\ntcp:\n%s", la, lb);
    unsigned char *a = NULL, *b = NULL;
    char p[1024];
    snprintf(p, sizeof p, "%s/ib/checkpoint.bin", tmp);
    long na = read_file(p, &a);
    snprintf(p, sizeof p, "%s/tcp/checkpoint.bin", tmp);
    long nb = read_file(p, &b);
    CHECK(na > 160 && na == nb && !memcmp(a, b, (size_t)na),
          "checkpoints of the ib and tcp runs differ (%ld, %ld bytes)", na, nb);
    free(a);
    free(b);
    run_cmd(out[0], sizeof out[0], "rm -rf %s", tmp);
    return ih_test_result();
}
