/* transport/ibwrap.h — the one place where libibverbs and librdmacm error conventions become
 * ih_err (STYLE 9.3): verbs return an errno value, or NULL/-1 with errno; rdmacm returns -1
 * with errno. Every wrapper checks its call and, on failure, sets a message that names the
 * call, `what` (the object: "rank 3 (host h) at 192.0.2.1:4791"), strerror and, where one is
 * known, the fix (`ulimit -l`, `rdma link`, `ibstat`). Only fabric_ib.c includes this header.
 *
 * Threads: any; each wrapper only touches the objects passed to it. None blocks, except where
 * its verbs/rdmacm call does (noted).
 */
#ifndef COMM_IBWRAP_H
#define COMM_IBWRAP_H

#include <stddef.h>
#include <stdint.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "core/err.h"

/* Devices: IH_E_SYS "no RDMA device" when the list is empty. *out is freed with
 * ibv_free_device_list. */
ih_err ibw_get_device_list(struct ibv_device ***out, int *n);
/* Fills `names` with "rxe0, mlx5_0" for messages. */
void ibw_device_names(char *names, size_t cap);

ih_err ibw_alloc_pd(struct ibv_pd **out, struct ibv_context *ctx);
ih_err ibw_create_comp_channel(struct ibv_comp_channel **out, struct ibv_context *ctx);
ih_err ibw_create_cq(struct ibv_cq **out, struct ibv_context *ctx, int cqe, struct ibv_comp_channel *ch);
/* Registers len bytes; ENOMEM/EPERM/EAGAIN get the locked-memory hint with the current limit. */
ih_err ibw_reg_mr(struct ibv_mr **out, struct ibv_pd *pd, void *addr, size_t len, int access,
                  const char *what);
ih_err ibw_query_port(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *attr);
/* IH_E_NET when the port is not ACTIVE, naming device, port, state and where to look. */
ih_err ibw_check_port_active(struct ibv_context *ctx, uint8_t port);
/* Finds the GID index of IPv4 `ip` on (ctx, port): the RoCE GID ::ffff:a.b.c.d. *idx = -1
 * when the port is InfiniBand (GIDs are not IP based there; rdma_cm resolves over IPoIB) or
 * when no entry matches. *roce = 1 on an Ethernet link layer. */
ih_err ibw_find_gid(struct ibv_context *ctx, uint8_t port, const char *ip, int *idx, int *roce);
ih_err ibw_req_notify_cq(struct ibv_cq *cq);
/* Drains the completion channel (non-blocking fd): gets and acknowledges every event. */
ih_err ibw_drain_comp_channel(struct ibv_comp_channel *ch);
/* Polls up to n completions; *got = how many. */
ih_err ibw_poll_cq(struct ibv_cq *cq, int n, struct ibv_wc *wc, int *got);
ih_err ibw_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, const char *what);
ih_err ibw_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, const char *what);

ih_err ibw_create_event_channel(struct rdma_event_channel **out);
/* Makes the channel's fd non-blocking (after set-up the fabric polls it). */
ih_err ibw_event_channel_nonblock(struct rdma_event_channel *ch);
ih_err ibw_create_id(struct rdma_event_channel *ch, struct rdma_cm_id **out, void *context);
/* Binds to ip:0. IH_E_NET "not on an RDMA netdev" when the address is not local or no RDMA
 * device carries it. */
ih_err ibw_bind_listen(struct rdma_cm_id *id, const char *ip, int backlog, int *port);
ih_err ibw_resolve_addr(struct rdma_cm_id *id, const char *src_ip, const char *dst_ip, int port,
                        int timeout_ms, const char *what);
ih_err ibw_resolve_route(struct rdma_cm_id *id, int timeout_ms, const char *what);
ih_err ibw_create_qp(struct rdma_cm_id *id, struct ibv_pd *pd, struct ibv_qp_init_attr *attr,
                     const char *what);
ih_err ibw_connect(struct rdma_cm_id *id, struct rdma_conn_param *p, const char *what);
ih_err ibw_accept(struct rdma_cm_id *id, struct rdma_conn_param *p, const char *what);
ih_err ibw_migrate_id(struct rdma_cm_id *id, struct rdma_event_channel *ch);
/* Non-blocking when the channel is: *ev = NULL when no event is queued. The caller acks. */
ih_err ibw_get_cm_event(struct rdma_event_channel *ch, struct rdma_cm_event **ev);
/* Blocks up to timeout_ms for the channel's fd to be readable; *ready = 0 on timeout. */
ih_err ibw_wait_fd(int fd, int timeout_ms, int *ready);

#endif
