/* transport/boot.c — see boot.h. */
#include "boot.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *env_get(const char *const *envp, const char *name)
{
    size_t n = strlen(name);
    for (const char *const *e = envp; e && *e; e++)
        if (!strncmp(*e, name, n) && (*e)[n] == '=') return *e + n + 1;
    return NULL;
}

/* Strict decimal int in [lo, hi]; IH_E_USAGE naming the variable otherwise. */
static ih_err env_int(const char *const *envp, const char *name, int lo, int hi, int *out, int *found)
{
    const char *v = env_get(envp, name);
    *found = v != NULL;
    if (!v) return IH_OK;
    char *end = NULL;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi)
        return ih_fail(IH_E_USAGE, "environment variable %s='%s' is not an integer in [%d, %d]",
                       name, v, lo, hi);
    *out = (int)x;
    return IH_OK;
}

/* Reads rank/world/local rank/local world from one launcher's variable names. *hit = 1 when
 * the rank variable is present. */
static ih_err read_style(const char *const *envp, comm_boot_info *b, const char *rank_v,
                         const char *world_v, const char *local_v, const char *lworld_v, int *hit)
{
    int f = 0;
    IH_TRY(env_int(envp, rank_v, 0, INT_MAX - 1, &b->rank, hit));
    if (!*hit) return IH_OK;
    IH_TRY(env_int(envp, world_v, 1, INT_MAX, &b->world, &f));
    if (!f) return ih_fail(IH_E_USAGE, "%s is set but %s is not", rank_v, world_v);
    if (local_v) IH_TRY(env_int(envp, local_v, 0, INT_MAX - 1, &b->local_rank, &f));
    if (lworld_v) IH_TRY(env_int(envp, lworld_v, 1, INT_MAX, &b->local_world, &f));
    return IH_OK;
}

/* Slurm node lists look like "node[03-05,7],gpu1": the rendezvous host is the first name. */
static void first_slurm_host(const char *list, char *out, size_t cap)
{
    size_t o = 0;
    const char *p = list;
    while (*p && *p != ',' && *p != '[' && o + 1 < cap) out[o++] = *p++;
    if (*p == '[') {
        p++;
        while (*p >= '0' && *p <= '9' && o + 1 < cap) out[o++] = *p++;
    }
    out[o] = 0;
}

ih_err comm_boot_from_env(comm_boot_info *out, const char *const *envp)
{
    comm_boot_info b;
    memset(&b, 0, sizeof b);
    b.world = 1;
    b.master_port = COMM_BOOT_DEFAULT_PORT;
    snprintf(b.source, sizeof b.source, "none");
    int hit = 0, f = 0;

    IH_TRY(read_style(envp, &b, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                      "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", &hit));
    if (hit) snprintf(b.source, sizeof b.source, "openmpi");
    if (!hit) {
        IH_TRY(read_style(envp, &b, "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS", &hit));
        if (hit) snprintf(b.source, sizeof b.source, "pmi");
    }
    if (!hit && env_get(envp, "SLURM_STEP_ID")) {
        IH_TRY(read_style(envp, &b, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", NULL, &hit));
        if (hit) {
            snprintf(b.source, sizeof b.source, "slurm");
            int jobid = 0;
            IH_TRY(env_int(envp, "SLURM_JOB_ID", 0, INT_MAX, &jobid, &f));
            /* Jobs sharing a node must not share a port: derive one from the job id. */
            if (f) b.master_port = 20000 + jobid % 20000;
            const char *nl = env_get(envp, "SLURM_STEP_NODELIST");
            if (!nl) nl = env_get(envp, "SLURM_JOB_NODELIST");
            if (nl) first_slurm_host(nl, b.master_addr, sizeof b.master_addr);
        }
    }
    if (!hit) {
        IH_TRY(read_style(envp, &b, "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", &hit));
        if (hit) snprintf(b.source, sizeof b.source, "torchrun");
    }
    const char *ma = env_get(envp, "MASTER_ADDR");
    if (ma && *ma) snprintf(b.master_addr, sizeof b.master_addr, "%s", ma);
    IH_TRY(env_int(envp, "MASTER_PORT", 1, 65535, &b.master_port, &f));
    if (b.world > 1 && !b.master_addr[0])
        return ih_fail(IH_E_USAGE, "rank %d of %d (from %s variables) has no rendezvous address: "
                       "set MASTER_ADDR (and MASTER_PORT, default %d) to rank 0's host, e.g. "
                       "mpirun -x MASTER_ADDR=node0", b.rank, b.world, b.source, COMM_BOOT_DEFAULT_PORT);
    IH_TRY(comm_boot_check(&b));
    *out = b;
    return IH_OK;
}

ih_err comm_boot_check(const comm_boot_info *b)
{
    if (b->world < 1) return ih_fail(IH_E_USAGE, "world size %d must be >= 1", b->world);
    if (b->rank < 0 || b->rank >= b->world)
        return ih_fail(IH_E_USAGE, "rank %d is outside [0, %d) (source: %s)", b->rank, b->world, b->source);
    if (b->local_rank < 0 || (b->local_world && b->local_rank >= b->local_world))
        return ih_fail(IH_E_USAGE, "local rank %d is outside [0, %d)", b->local_rank, b->local_world);
    if (b->world > 1 && (b->master_port < 1 || b->master_port > 65535))
        return ih_fail(IH_E_USAGE, "MASTER_PORT %d is not a TCP port", b->master_port);
    return IH_OK;
}
