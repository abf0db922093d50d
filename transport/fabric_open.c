/* transport/fabric_open.c — see fabric_open.h. "auto" must give the same answer on every
 * rank (a tcp rank and an ib rank cannot talk), so each rank publishes its local verdict as
 * "<ns>/fab/<rank>" and all ranks take ib only when every verdict is ib. */
#include "fabric_open.h"

#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "fabric_tcp.h"
#include "ih_config.h"
#if IH_WITH_IBVERBS
#include "fabric_ib.h"
#endif

ih_err comm_fabric_check_name(const char *name)
{
    if (!name || !strcmp(name, "tcp") || !strcmp(name, "auto")) return IH_OK;
    if (!strcmp(name, "ib")) {
#if IH_WITH_IBVERBS
        return IH_OK;
#else
        return ih_fail(IH_E_USAGE, "fabric 'ib' is not in this build: install libibverbs-dev and "
                       "librdmacm-dev and reconfigure (IH_WITH_IBVERBS), or use --fabric tcp");
#endif
    }
    return ih_fail(IH_E_USAGE, "unknown fabric '%s' (use --fabric tcp, ib or auto)", name);
}

#if IH_WITH_IBVERBS
/* Every rank's verdict; *use_ib = all said ib. `why` gets the first rank's reason for tcp. */
static ih_err agree(comm_store *store, const char *ns, int rank, int world, int mine,
                    const char *mywhy, int64_t timeout_ms, int *use_ib, char *why, size_t cap)
{
    char key[300], val[1200];
    snprintf(key, sizeof key, "%s/fab/%d", ns, rank);
    snprintf(val, sizeof val, "%s %s", mine ? "ib" : "tcp", mywhy);
    IH_TRY(comm_store_set(store, key, val, strlen(val), timeout_ms));
    *use_ib = 1;
    snprintf(why, cap, "%s", mywhy);
    for (int p = 0; p < world; p++) {
        snprintf(key, sizeof key, "%s/fab/%d", ns, p);
        size_t len = 0;
        ih_err e = comm_store_get(store, key, val, sizeof val - 1, &len, timeout_ms);
        if (e == IH_E_TIMEOUT)
            return ih_fail(IH_E_TIMEOUT, "rendezvous: rank %d never said which fabric it can use "
                           "(--fabric auto) within %.1f s", p, (double)timeout_ms / 1e3);
        if (e) return e;
        val[len < sizeof val - 1 ? len : sizeof val - 1] = 0;
        if (*use_ib && strncmp(val, "ib ", 3)) {
            *use_ib = 0;
            snprintf(why, cap, "rank %d: %s", p, val + (strncmp(val, "tcp ", 4) ? 0 : 4));
        }
    }
    return IH_OK;
}
#endif

ih_err comm_fabric_open(comm_fabric **out, const comm_opts *o, comm_store *store, const char *ns,
                        int rank, int world, int sockbuf, int64_t timeout_ms)
{
    const char *name = o->fabric ? o->fabric : "tcp";
    IH_TRY(comm_fabric_check_name(name));
#if IH_WITH_IBVERBS
    comm_ib_opts io = {.dev = o->ib_dev, .port = o->ib_port};
    int use_ib = !strcmp(name, "ib");
    if (!strcmp(name, "auto")) {
        char ip[128], mywhy[1024], why[1100];
        comm_store_local_addr(store, ip, sizeof ip);
        int mine = comm_fabric_ib_usable(ip, &io, mywhy, sizeof mywhy);
        IH_TRY(agree(store, ns, rank, world, mine, mywhy, timeout_ms, &use_ib, why, sizeof why));
        ih_print0("# fabric: auto -> %s (%s)\n", use_ib ? "ib" : "tcp", why);
    }
    if (use_ib) return comm_fabric_ib_create(out, store, ns, rank, world, &io, timeout_ms);
#else
    if (!strcmp(name, "auto"))
        ih_print0("# fabric: auto -> tcp (this build has no RDMA support)\n");
#endif
    return comm_fabric_tcp_create(out, store, ns, rank, world, sockbuf, timeout_ms);
}
