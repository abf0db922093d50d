/* transport/ibwrap.c — see ibwrap.h. Converts verbs (errno value, NULL+errno) and rdmacm
 * (-1+errno) results into ih_err with messages that name the call, the object and the fix. */
#define _GNU_SOURCE
#include "ibwrap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

static ih_err fail_errno(const char *call, int err, const char *what)
{
    return ih_fail(IH_E_NET, "%s%s%s: %s", call, what ? " " : "", what ? what : "", strerror(err));
}

ih_err ibw_get_device_list(struct ibv_device ***out, int *n)
{
    *n = 0;
    errno = 0;
    *out = ibv_get_device_list(n);
    if (!*out)
        return ih_fail(IH_E_SYS, "ibv_get_device_list: %s (is rdma-core installed and the "
                       "ib_uverbs module loaded?)", strerror(errno ? errno : ENODEV));
    if (*n == 0) {
        ibv_free_device_list(*out);
        *out = NULL;
        return ih_fail(IH_E_SYS, "no RDMA device: ibv_get_device_list found none (load the "
                       "driver, or for Soft-RoCE `rdma link add rxe0 type rxe netdev <if>`, see "
                       "shared/SOFT-ROCE.md; or use --fabric tcp)");
    }
    return IH_OK;
}

void ibw_device_names(char *names, size_t cap)
{
    int n = 0;
    names[0] = 0;
    struct ibv_device **l = ibv_get_device_list(&n);
    size_t o = 0;
    for (int i = 0; l && i < n && o + 2 < cap; i++)
        o += (size_t)snprintf(names + o, cap - o, "%s%s", i ? ", " : "", ibv_get_device_name(l[i]));
    if (!n) snprintf(names, cap, "none");
    if (l) ibv_free_device_list(l);
}

ih_err ibw_alloc_pd(struct ibv_pd **out, struct ibv_context *ctx)
{
    errno = 0;
    *out = ibv_alloc_pd(ctx);
    if (!*out) return fail_errno("ibv_alloc_pd on", errno ? errno : ENOMEM, ibv_get_device_name(ctx->device));
    return IH_OK;
}

ih_err ibw_create_comp_channel(struct ibv_comp_channel **out, struct ibv_context *ctx)
{
    errno = 0;
    *out = ibv_create_comp_channel(ctx);
    if (!*out) return fail_errno("ibv_create_comp_channel on", errno ? errno : ENOMEM, ibv_get_device_name(ctx->device));
    int fl = fcntl((*out)->fd, F_GETFL);
    if (fl < 0 || fcntl((*out)->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        int err = errno;
        ibv_destroy_comp_channel(*out);
        *out = NULL;
        return fail_errno("fcntl(O_NONBLOCK) on the completion channel", err, NULL);
    }
    return IH_OK;
}

ih_err ibw_create_cq(struct ibv_cq **out, struct ibv_context *ctx, int cqe, struct ibv_comp_channel *ch)
{
    errno = 0;
    *out = ibv_create_cq(ctx, cqe, NULL, ch, 0);
    if (!*out)
        return ih_fail(IH_E_NET, "ibv_create_cq(%d entries) on %s: %s", cqe,
                       ibv_get_device_name(ctx->device), strerror(errno ? errno : ENOMEM));
    return IH_OK;
}

ih_err ibw_reg_mr(struct ibv_mr **out, struct ibv_pd *pd, void *addr, size_t len, int access,
                  const char *what)
{
    errno = 0;
    *out = ibv_reg_mr(pd, addr, len, access);
    if (*out) return IH_OK;
    int err = errno ? errno : ENOMEM;
    if (err == ENOMEM || err == EPERM || err == EAGAIN) {
        struct rlimit rl;
        char lim[64] = "unknown";
        if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
            if (rl.rlim_cur == RLIM_INFINITY) snprintf(lim, sizeof lim, "unlimited");
            else snprintf(lim, sizeof lim, "%llu KiB", (unsigned long long)rl.rlim_cur / 1024);
        }
        return ih_fail(IH_E_SYS, "ibv_reg_mr(%zu B, %s): %s: locked-memory limit too low (now %s), "
                       "raise 'ulimit -l' (e.g. 'ulimit -l unlimited', or memlock in "
                       "/etc/security/limits.conf; under Slurm, PropagateResourceLimits)",
                       len, what, strerror(err), lim);
    }
    return ih_fail(IH_E_NET, "ibv_reg_mr(%zu B, %s): %s", len, what, strerror(err));
}

ih_err ibw_query_port(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *attr)
{
    int rc = ibv_query_port(ctx, port, attr);
    if (rc)
        return ih_fail(IH_E_NET, "ibv_query_port(%s, port %u): %s (does the port exist? see "
                       "`ibv_devinfo`)", ibv_get_device_name(ctx->device), port, strerror(rc));
    return IH_OK;
}

ih_err ibw_check_port_active(struct ibv_context *ctx, uint8_t port)
{
    struct ibv_port_attr a;
    IH_TRY(ibw_query_port(ctx, port, &a));
    if (a.state != IBV_PORT_ACTIVE)
        return ih_fail(IH_E_NET, "RDMA port %s:%u is down (state %s): check the link (`ibstat`, "
                       "`rdma link`; on InfiniBand a subnet manager must run; on RoCE the netdev "
                       "must be up: `ip link`)", ibv_get_device_name(ctx->device), port,
                       ibv_port_state_str(a.state));
    return IH_OK;
}

ih_err ibw_find_gid(struct ibv_context *ctx, uint8_t port, const char *ip, int *idx, int *roce)
{
    struct ibv_port_attr a;
    *idx = -1;
    IH_TRY(ibw_query_port(ctx, port, &a));
    *roce = a.link_layer == IBV_LINK_LAYER_ETHERNET;
    if (!*roce) return IH_OK;
    struct in_addr v4;
    if (inet_pton(AF_INET, ip, &v4) != 1) return IH_OK;
    union ibv_gid want;
    memset(&want, 0, sizeof want);
    want.raw[10] = 0xff;
    want.raw[11] = 0xff;
    memcpy(&want.raw[12], &v4, 4);
    for (int i = 0; i < a.gid_tbl_len; i++) {
        union ibv_gid g;
        if (ibv_query_gid(ctx, port, i, &g)) continue; /* holes in the table are normal */
        if (!memcmp(&g, &want, sizeof g)) { *idx = i; return IH_OK; }
    }
    return IH_OK;
}

ih_err ibw_req_notify_cq(struct ibv_cq *cq)
{
    int rc = ibv_req_notify_cq(cq, 0);
    if (rc) return fail_errno("ibv_req_notify_cq", rc, NULL);
    return IH_OK;
}

ih_err ibw_drain_comp_channel(struct ibv_comp_channel *ch)
{
    for (;;) {
        struct ibv_cq *cq = NULL;
        void *cqctx = NULL;
        if (ibv_get_cq_event(ch, &cq, &cqctx)) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return IH_OK;
            return fail_errno("ibv_get_cq_event", errno, NULL);
        }
        ibv_ack_cq_events(cq, 1);
    }
}

ih_err ibw_poll_cq(struct ibv_cq *cq, int n, struct ibv_wc *wc, int *got)
{
    int rc = ibv_poll_cq(cq, n, wc);
    *got = rc > 0 ? rc : 0;
    if (rc < 0) return ih_fail(IH_E_NET, "ibv_poll_cq: failed (%d): the device is in error", rc);
    return IH_OK;
}

ih_err ibw_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, const char *what)
{
    struct ibv_send_wr *bad = NULL;
    int rc = ibv_post_send(qp, wr, &bad);
    if (rc) return fail_errno("ibv_post_send", rc, what);
    return IH_OK;
}

ih_err ibw_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, const char *what)
{
    struct ibv_recv_wr *bad = NULL;
    int rc = ibv_post_recv(qp, wr, &bad);
    if (rc) return fail_errno("ibv_post_recv", rc, what);
    return IH_OK;
}

ih_err ibw_create_event_channel(struct rdma_event_channel **out)
{
    errno = 0;
    *out = rdma_create_event_channel();
    if (!*out)
        return ih_fail(IH_E_SYS, "rdma_create_event_channel: %s (is the rdma_ucm module "
                       "loaded? /dev/infiniband/rdma_cm must exist)", strerror(errno ? errno : ENODEV));
    return IH_OK;
}

ih_err ibw_event_channel_nonblock(struct rdma_event_channel *ch)
{
    int fl = fcntl(ch->fd, F_GETFL);
    if (fl < 0 || fcntl(ch->fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return fail_errno("fcntl(O_NONBLOCK) on the rdma_cm channel", errno, NULL);
    return IH_OK;
}

ih_err ibw_create_id(struct rdma_event_channel *ch, struct rdma_cm_id **out, void *context)
{
    if (rdma_create_id(ch, out, context, RDMA_PS_TCP)) {
        *out = NULL;
        return fail_errno("rdma_create_id", errno, NULL);
    }
    return IH_OK;
}

static int sockaddr_v4(struct sockaddr_in *sa, const char *ip, int port)
{
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, ip, &sa->sin_addr) == 1;
}

ih_err ibw_bind_listen(struct rdma_cm_id *id, const char *ip, int backlog, int *port)
{
    struct sockaddr_in sa;
    if (!sockaddr_v4(&sa, ip, 0))
        return ih_fail(IH_E_USAGE, "RDMA address '%s' is not an IPv4 address", ip);
    if (rdma_bind_addr(id, (struct sockaddr *)&sa)) {
        int err = errno;
        return ih_fail(IH_E_NET, "rdma_bind_addr(%s): %s: the address is not on an RDMA netdev of "
                       "this host (see `rdma link` and `ip addr`; the ib fabric uses the address "
                       "through which this rank reaches MASTER_ADDR)", ip, strerror(err));
    }
    if (!id->verbs)
        return ih_fail(IH_E_NET, "address %s is not on an RDMA netdev: no RDMA device carries it "
                       "(see `rdma link` for the netdevs with an RDMA device, and set MASTER_ADDR to "
                       "an address on one of them; or use --fabric tcp)", ip);
    if (rdma_listen(id, backlog)) return fail_errno("rdma_listen on", errno, ip);
    *port = ntohs(rdma_get_src_port(id));
    return IH_OK;
}

ih_err ibw_resolve_addr(struct rdma_cm_id *id, const char *src_ip, const char *dst_ip, int port,
                        int timeout_ms, const char *what)
{
    struct sockaddr_in src, dst;
    if (!sockaddr_v4(&src, src_ip, 0) || !sockaddr_v4(&dst, dst_ip, port))
        return ih_fail(IH_E_NET, "bad IPv4 address %s or %s for %s", src_ip, dst_ip, what);
    if (rdma_resolve_addr(id, (struct sockaddr *)&src, (struct sockaddr *)&dst, timeout_ms))
        return fail_errno("rdma_resolve_addr to", errno, what);
    return IH_OK;
}

ih_err ibw_resolve_route(struct rdma_cm_id *id, int timeout_ms, const char *what)
{
    if (rdma_resolve_route(id, timeout_ms)) return fail_errno("rdma_resolve_route to", errno, what);
    return IH_OK;
}

ih_err ibw_create_qp(struct rdma_cm_id *id, struct ibv_pd *pd, struct ibv_qp_init_attr *attr,
                     const char *what)
{
    if (rdma_create_qp(id, pd, attr)) {
        int err = errno;
        return ih_fail(IH_E_NET, "rdma_create_qp (RC, %u send + %u recv WRs) for %s: %s%s",
                       attr->cap.max_send_wr, attr->cap.max_recv_wr, what, strerror(err),
                       err == ENOMEM ? " (lower IH_IB_SLOTS, or raise 'ulimit -l')" : "");
    }
    return IH_OK;
}

ih_err ibw_connect(struct rdma_cm_id *id, struct rdma_conn_param *p, const char *what)
{
    if (rdma_connect(id, p)) return fail_errno("rdma_connect to", errno, what);
    return IH_OK;
}

ih_err ibw_accept(struct rdma_cm_id *id, struct rdma_conn_param *p, const char *what)
{
    if (rdma_accept(id, p)) return fail_errno("rdma_accept of", errno, what);
    return IH_OK;
}

ih_err ibw_migrate_id(struct rdma_cm_id *id, struct rdma_event_channel *ch)
{
    if (rdma_migrate_id(id, ch)) return fail_errno("rdma_migrate_id", errno, NULL);
    return IH_OK;
}

ih_err ibw_get_cm_event(struct rdma_event_channel *ch, struct rdma_cm_event **ev)
{
    *ev = NULL;
    if (rdma_get_cm_event(ch, ev)) {
        *ev = NULL;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return IH_OK;
        return fail_errno("rdma_get_cm_event", errno, NULL);
    }
    return IH_OK;
}

ih_err ibw_wait_fd(int fd, int timeout_ms, int *ready)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int rc = poll(&p, 1, timeout_ms);
    if (rc < 0 && errno != EINTR) return fail_errno("poll", errno, NULL);
    *ready = rc > 0;
    return IH_OK;
}
