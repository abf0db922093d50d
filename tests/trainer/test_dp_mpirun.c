/* test_dp_mpirun — a real launcher: the same short run started by Open MPI's
 * `mpirun -np 3` (rank/world from OMPI_COMM_WORLD_*, the store at MASTER_ADDR:MASTER_PORT)
 * and by `./train --nproc 3` ends with byte-identical checkpoints; under --nproc, rank 0's store
 * serves on the listening socket the launcher bound (no window in which the port is free). Skips (77) when mpirun is
 * not installed (scripts/install-deps installs openmpi-bin on Debian). */
#include <string.h>
#include <unistd.h>

#include "tests/trainer/tiny_data.h"

static char out[1 << 18];


int main(void)
{
    if (run_cmd(out, sizeof out, "command -v mpirun") != 0) SKIP("mpirun not found (apt-get install openmpi-bin)");
    char tmp[] = "/tmp/ih_dpmpi_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    if (make_tiny_data(tmp, 4, 48, 2)) { CHECK(0, "could not build the tiny dataset"); return ih_test_result(); }
    const char *args = "--arch resnet8 --image-size 16 -b 4 --epochs 1 --base-lr 0.4 --warmup-epochs 0 --threads 1 "
                       "--max-iters 6 --log-every 1 --no-progress --comm-timeout 30";
    /* As root Open MPI needs --allow-run-as-root; --oversubscribe: 3 ranks on fewer cores.
     * The store port is chosen here, so a port taken between the check and the bind is retried
     * on another (the trainer's message for that case is "Address already in use"). */
    int rc = -1;
    for (int attempt = 0; attempt < 4; attempt++) {
        rc = run_cmd(out, sizeof out,
                     "MASTER_ADDR=127.0.0.1 MASTER_PORT=%d OPENBLAS_NUM_THREADS=1 mpirun -np 3 %s --oversubscribe "
                     "-x MASTER_ADDR -x MASTER_PORT -x OPENBLAS_NUM_THREADS %s/bin/train --train %s/train.lmdb -o %s/mpi %s",
                     free_port(attempt), geteuid() == 0 ? "--allow-run-as-root" : "", bin_dir(), tmp, tmp, args);
        if (rc == 0 || !strstr(out, "Address already in use")) break;
        fprintf(stderr, "store port taken, retrying on another (attempt %d)\n", attempt + 1);
    }
    CHECK(rc == 0, "mpirun -np 3: exit %d\n%s", rc, out);
    CHECK(strstr(out, "workers=3") != NULL, "the mpirun job should have 3 workers:\n%s", out);
    rc = run_cmd(out, sizeof out, "IH_DEBUG=INFO IH_DEBUG_SUBSYS=BOOT %s/bin/train --nproc 3 --train %s/train.lmdb -o %s/local %s",
                 bin_dir(), tmp, tmp, args);
    CHECK(rc == 0, "--nproc 3: exit %d\n%s", rc, out);
    /* the launcher's port is never released between its choice and the store (launch.c) */
    CHECK(strstr(out, "(the socket the launcher bound, IH_STORE_FD)") != NULL,
          "--nproc: rank 0's store did not serve on the launcher's socket:\n%s", out);
    unsigned char *a = NULL, *b = NULL;
    char p[1024];
    snprintf(p, sizeof p, "%s/mpi/checkpoint.bin", tmp);
    long na = read_file(p, &a);
    snprintf(p, sizeof p, "%s/local/checkpoint.bin", tmp);
    long nb = read_file(p, &b);
    CHECK(na > 160 && na == nb && !memcmp(a, b, (size_t)na), "checkpoints of mpirun and --nproc differ (%ld, %ld bytes)", na, nb);
    free(a);
    free(b);
    run_cmd(out, sizeof out, "rm -rf %s", tmp);
    return ih_test_result();
}
