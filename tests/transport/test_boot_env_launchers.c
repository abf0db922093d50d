/* test_boot_env_launchers — rank, world, local rank and rendezvous address from each
 * launcher's environment, with the precedence of ARCHITECTURE.md: MPI variables first, Slurm
 * only inside a step (SLURM_STEP_ID), then torchrun-style; malformed values are usage errors
 * naming the variable. Pure: fake environments, no processes. */
#include <string.h>

#include "tests/check.h"
#include "transport/boot.h"

static comm_boot_info parse(const char **env, ih_err *e)
{
    comm_boot_info b;
    memset(&b, 0, sizeof b);
    *e = comm_boot_from_env(&b, env);
    return b;
}

int main(void)
{
    ih_err e;
    comm_boot_info b;

    const char *none[] = {"HOME=/root", NULL};
    b = parse(none, &e);
    CHECK(e == IH_OK && b.rank == 0 && b.world == 1 && !strcmp(b.source, "none"), "no launcher: %s", b.source);

    const char *torchrun[] = {"RANK=3", "WORLD_SIZE=8", "LOCAL_RANK=1", "LOCAL_WORLD_SIZE=2",
                        "MASTER_ADDR=10.0.0.7", "MASTER_PORT=29511", NULL};
    b = parse(torchrun, &e);
    CHECK(e == IH_OK && b.rank == 3 && b.world == 8 && b.local_rank == 1 && b.local_world == 2 &&
          !strcmp(b.master_addr, "10.0.0.7") && b.master_port == 29511 && !strcmp(b.source, "torchrun"),
          "torchrun: %s rank %d world %d local %d addr %s:%d", ih_last_error(), b.rank, b.world,
          b.local_rank, b.master_addr, b.master_port);

    /* mpirun inside a Slurm allocation: SLURM_PROCID is the node index, OMPI wins */
    const char *ompi_in_slurm[] = {"SLURM_PROCID=0", "SLURM_NTASKS=2", "SLURM_STEP_ID=0", "SLURM_LOCALID=0",
                             "OMPI_COMM_WORLD_RANK=5", "OMPI_COMM_WORLD_SIZE=16",
                             "OMPI_COMM_WORLD_LOCAL_RANK=1", "OMPI_COMM_WORLD_LOCAL_SIZE=8",
                             "MASTER_ADDR=node0", NULL};
    b = parse(ompi_in_slurm, &e);
    CHECK(e == IH_OK && b.rank == 5 && b.world == 16 && b.local_rank == 1 && b.local_world == 8 &&
          !strcmp(b.source, "openmpi") && b.master_port == COMM_BOOT_DEFAULT_PORT,
          "openmpi in slurm: %s rank %d world %d src %s", ih_last_error(), b.rank, b.world, b.source);

    const char *pmi[] = {"PMI_RANK=2", "PMI_SIZE=4", "MPI_LOCALRANKID=0", "RANK=9", "WORLD_SIZE=10",
                   "MASTER_ADDR=h", NULL};
    b = parse(pmi, &e);
    CHECK(e == IH_OK && b.rank == 2 && b.world == 4 && !strcmp(b.source, "pmi"), "pmi: rank %d src %s", b.rank, b.source);

    /* a batch script sees SLURM_PROCID=0 of N but is not a task: no SLURM_STEP_ID, ignored */
    const char *batch[] = {"SLURM_PROCID=0", "SLURM_NTASKS=4", "SLURM_JOB_ID=123", NULL};
    b = parse(batch, &e);
    CHECK(e == IH_OK && b.world == 1 && !strcmp(b.source, "none"), "slurm batch script: world %d src %s", b.world, b.source);

    const char *srun[] = {"SLURM_PROCID=6", "SLURM_NTASKS=8", "SLURM_LOCALID=2", "SLURM_STEP_ID=0",
                    "SLURM_JOB_ID=4242", "SLURM_STEP_NODELIST=gpu[03-06],gpu9", NULL};
    b = parse(srun, &e);
    CHECK(e == IH_OK && b.rank == 6 && b.world == 8 && b.local_rank == 2 && !strcmp(b.source, "slurm") &&
          !strcmp(b.master_addr, "gpu03") && b.master_port == 20000 + 4242,
          "srun: %s rank %d addr %s port %d", ih_last_error(), b.rank, b.master_addr, b.master_port);

    const char *srun_addr[] = {"SLURM_PROCID=1", "SLURM_NTASKS=2", "SLURM_STEP_ID=3", "SLURM_STEP_NODELIST=n1",
                         "MASTER_ADDR=10.1.1.1", "MASTER_PORT=4000", NULL};
    b = parse(srun_addr, &e);
    CHECK(e == IH_OK && !strcmp(b.master_addr, "10.1.1.1") && b.master_port == 4000, "MASTER_* override slurm: %s:%d",
          b.master_addr, b.master_port);

    const char *bad_int[] = {"RANK=1x", "WORLD_SIZE=2", "MASTER_ADDR=h", NULL};
    b = parse(bad_int, &e);
    CHECK(e == IH_E_USAGE && strstr(ih_last_error(), "RANK='1x'"), "malformed RANK: %s", ih_last_error());

    const char *rank_ge_world[] = {"RANK=4", "WORLD_SIZE=4", "MASTER_ADDR=h", NULL};
    b = parse(rank_ge_world, &e);
    CHECK(e == IH_E_USAGE && strstr(ih_last_error(), "rank 4"), "rank >= world: %s", ih_last_error());

    const char *no_world[] = {"OMPI_COMM_WORLD_RANK=0", NULL};
    b = parse(no_world, &e);
    CHECK(e == IH_E_USAGE && strstr(ih_last_error(), "OMPI_COMM_WORLD_SIZE"), "rank without size: %s", ih_last_error());

    const char *no_addr[] = {"OMPI_COMM_WORLD_RANK=1", "OMPI_COMM_WORLD_SIZE=2", NULL};
    b = parse(no_addr, &e);
    CHECK(e == IH_E_USAGE && strstr(ih_last_error(), "MASTER_ADDR"), "mpi without MASTER_ADDR: %s", ih_last_error());

    const char *bad_port[] = {"RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=70000", NULL};
    b = parse(bad_port, &e);
    CHECK(e == IH_E_USAGE && strstr(ih_last_error(), "MASTER_PORT"), "bad port: %s", ih_last_error());

    /* flags override: edit the parsed info, then check it */
    b = parse(torchrun, &e);
    b.rank = 9;
    CHECK(comm_boot_check(&b) == IH_E_USAGE, "check accepted rank 9 of 8");
    return ih_test_result();
}
