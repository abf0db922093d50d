/* transport/boot.h — who am I: rank, world size, local rank and the rendezvous address, from
 * the launcher's environment.
 *
 * Precedence (ARCHITECTURE.md, "Bootstrap"): an MPI launcher's own variables first
 * (Open MPI OMPI_COMM_WORLD_*, then MPICH/Hydra PMI_RANK/PMI_SIZE), because under mpirun inside
 * a Slurm allocation every rank also sees SLURM_PROCID (0 or the node index); then Slurm
 * SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID, trusted only when SLURM_STEP_ID is set (a task of
 * an srun step; a batch script sees "rank 0 of N" without being a task); then torchrun-style
 * RANK/WORLD_SIZE/LOCAL_RANK (also what comm_launch_local sets); else a single rank.
 * MASTER_ADDR/MASTER_PORT name the store with every launcher. Flags override: callers
 * overwrite fields of the result (then call comm_boot_check).
 */
#ifndef COMM_BOOT_H
#define COMM_BOOT_H

#include "core/err.h"

#define COMM_BOOT_DEFAULT_PORT 29500

typedef struct {
    int rank;
    int world;
    int local_rank;
    int local_world;        /* ranks on this host; 0 if the launcher does not say */
    char master_addr[256];  /* host of rank 0's store; "" if unset (needed when world > 1) */
    int master_port;
    char source[16];        /* "openmpi", "pmi", "slurm", "torchrun", "none" */
} comm_boot_info;

/* Parses a launcher environment. `envp` is a NULL-terminated array of "NAME=value" strings
 * (pass `(const char *const *)environ` for the real one; tests pass fake ones). A pure function of envp: no
 * globals, any thread, never blocks. IH_E_USAGE with a message naming the variable when a
 * value is malformed or inconsistent (rank >= world, world > 1 without MASTER_ADDR under a
 * launcher that cannot supply it). */
ih_err comm_boot_from_env(comm_boot_info *out, const char *const *envp);

/* Validates a (possibly flag-edited) info. IH_E_USAGE naming the field. */
ih_err comm_boot_check(const comm_boot_info *b);

#endif
