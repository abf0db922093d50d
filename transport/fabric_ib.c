/* transport/fabric_ib.c — see fabric_ib.h for the protocol.
 *
 * Per peer and direction the bytes form one stream; each side cuts it with its own requests
 * (fabric.h), so the receiver, which knows where its buffers are, splits a large message into
 * replies ("segments"), one per receive request it overlaps.
 * Counters per peer (cumulative):
 *   sending:   e_posted ring items written (their sequence numbers), s_credit ring slots the
 *              peer gave back; st_posted/st_done staging slots used/completed (eager items and
 *              staged direct writes share them, in order); z_posted/z_done zero-copy writes;
 *              cts_seen replies arrived, cts_used replies taken. An item may be written when
 *              e_posted < s_credit + S and st_posted < st_done + S.
 *   receiving: r_arrived/r_consumed ring items; r_posted stream bytes covered by posted
 *              receives, r_cons stream bytes delivered; cts_issued/cts_done replies sent and
 *              their segments completed (at most IB_NCTS apart: the peer's reply slot i%IB_NCTS
 *              is free again once segment i is complete, since the peer read the reply before
 *              it wrote any byte of it), cts_wr_done replies whose write completed (the local
 *              copy of the reply may be reused).
 * Work requests per QP are bounded by construction (see qp_depth), and the receive queue is
 * re-armed as its completions are polled. wr_id = peer << 3 | kind.
 */
#define _GNU_SOURCE
#include "fabric_ib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/env.h"
#include "core/log.h"
#include "ibwrap.h"
#include "sock.h"

/* Immediate data: the top 3 bits say what a WRITE WITH IMMEDIATE is, the rest its number. */
enum { IMM_DATA = 0, IMM_RTS = 1, IMM_DIRECT = 2, IMM_CREDIT = 3, IMM_CTS = 4 };
#define IB_SEQ_MASK 0x1fffffffu
#define IMM(kind, v) ((uint32_t)(kind) << 29 | ((uint32_t)(v) & IB_SEQ_MASK))
#define IB_RTS_BIT 0x80000000u  /* in r_len: the ring item is an RTS, not data */
#define IB_NCTS 8               /* replies (segments) in flight per peer; divides 2^29 */
#define IB_NZ 16                /* zero-copy writes in flight per peer */
#define IB_CTS_BYTES 32         /* one reply slot */
#define IB_CTS_LEN 20           /* be64 addr, be32 rkey, be32 len, be32 direct */
#define IB_SEG_MAX (1u << 30)   /* one segment at most */
#define IB_MAX_REG 128          /* registered regions: every ctx and split view adds its own (linear lookup) */
#define IB_SPIN 200 /* empty polls before sleeping on the channels (TCG: spinning starves rxe) */
/* A peer's disconnect can overtake the completion of its last write (the CM and the CQ are
 * separate paths; rxe completes from a work queue): wait this long for that data. */
#define IB_GONE_GRACE_NS 2000000000ull
/* Rendezvous threshold: messages of at least this many KiB wait for the receiver's reply and
 * then move straight between registered buffers. See fabric_ib.h for the measurement. */
#define IB_RDV_KB_DEFAULT 64
/* Largest write: the device's max_msg_sz, at most this (a smaller piece shows progress to
 * the no-progress timeout sooner; 4 MiB costs nothing in per-request overhead). */
#define IB_PIECE_KB_DEFAULT 4096

enum { WR_CREDIT = 0, WR_EAGER = 1, WR_STAGED = 2, WR_ZCOPY = 3, WR_CTS = 4, WR_RECV = 5 };

typedef struct {
    uint64_t pos;   /* stream position of the segment's first byte */
    uint32_t len, got;
    int direct;     /* 1: the peer writes it into our buffer; 0: through the ring */
} ib_seg;

typedef struct { comm_req *req; uint32_t len; } ib_zrec;

typedef struct {
    struct rdma_cm_id *id;
    int established, gone;
    uint64_t gone_ns; /* when the peer's disconnect was seen */
    char host[64], ip[64];
    uint64_t raddr;   /* peer's receive ring for us */
    uint64_t rctrl;   /* peer's reply slots for us (our replies land there) */
    uint32_t rkey;    /* of both */
    /* sending to this peer */
    comm_req *sq_head, *sq_tail;
    size_t s_off;     /* bytes of sq_head handed to the device or copied */
    int s_rts;        /* sq_head is large and its RTS is posted */
    uint64_t e_posted, s_credit, st_posted, st_done, z_posted, z_done, cts_seen, cts_used;
    ib_zrec z[IB_NZ];
    int c_active, c_direct; /* the reply being served */
    uint64_t c_addr, c_idx;
    uint32_t c_rkey, c_len, c_off;
    /* receiving from this peer */
    comm_req *rq_head, *rq_tail;
    uint64_t r_posted, r_cons, r_arrived, r_consumed;
    uint32_t r_poff;  /* bytes of the current ring item delivered */
    uint64_t reg_end; /* end (stream position) of the large message being received */
    uint64_t cts_pos; /* end of what the issued replies cover */
    uint64_t cts_issued, cts_done, cts_wr_done;
    ib_seg seg[IB_NCTS];
    uint32_t credit_pending, credit_out;
    uint32_t *r_len;  /* [S] byte length of each receive slot's item (| IB_RTS_BIT) */
} ib_peer;

typedef struct { char *base; size_t len; struct ibv_mr *mr; } ib_region;

typedef struct {
    comm_fabric base;
    ib_peer *peers;
    uint32_t S, B;                    /* slots per peer, bytes per slot */
    size_t rdv;                       /* rendezvous threshold (bytes; 0 = never) */
    uint32_t piece;                   /* largest single write */
    char ip[64], host[64], dev[64];
    struct rdma_event_channel *cm_ch; /* listen id and, after set-up, every connection */
    struct rdma_cm_id *listen_id;
    struct ibv_context *ctx;          /* owned by librdmacm */
    struct ibv_pd *pd;
    struct ibv_comp_channel *comp_ch;
    struct ibv_cq *cq;
    char *rring, *sring;              /* [world][S][B], then [world][IB_NCTS][IB_CTS_BYTES] */
    struct ibv_mr *rmr, *smr;
    uint32_t *r_len_all;
    ib_region reg[IB_MAX_REG];        /* comm_ctx_register */
    int nreg;
    comm_stats st;
    ih_err err;
    char errmsg[1024];
} ib_fabric;

static ih_err sticky(ib_fabric *t) { return ih_fail(t->err, "%s", t->errmsg); }

static ih_err fail_now(ib_fabric *t, ih_err e)
{
    if (!t->err) {
        t->err = e;
        snprintf(t->errmsg, sizeof t->errmsg, "%s", ih_last_error());
    }
    return sticky(t);
}

static void disconnect_all(ib_fabric *t)
{
    for (int p = 0; t->peers && p < t->base.world; p++)
        if (t->peers[p].id && t->peers[p].established && !t->peers[p].gone) {
            rdma_disconnect(t->peers[p].id);
            t->peers[p].gone = 1;
        }
}

static void ib_abort(comm_fabric *f, ih_err code, const char *msg)
{
    ib_fabric *t = (ib_fabric *)f;
    if (!t->err) {
        t->err = code;
        snprintf(t->errmsg, sizeof t->errmsg, "%s", msg);
    }
    disconnect_all(t);
}

static void enqueue(comm_req **head, comm_req **tail, comm_req *r)
{
    r->next = NULL;
    if (*tail) (*tail)->next = r;
    else *head = r;
    *tail = r;
}

static void pop(comm_req **head, comm_req **tail)
{
    *head = (*head)->next;
    if (!*head) *tail = NULL;
}

static void put_be64(unsigned char *p, uint64_t v)
{
    comm_put_be32(p, (uint32_t)(v >> 32));
    comm_put_be32(p + 4, (uint32_t)v);
}
static uint64_t get_be64(const unsigned char *p)
{
    return (uint64_t)comm_get_be32(p) << 32 | comm_get_be32(p + 4);
}

static char *rslot(ib_fabric *t, int peer, uint64_t n)
{
    return t->rring + ((size_t)peer * t->S + (size_t)(n % t->S)) * t->B;
}
static char *sslot(ib_fabric *t, int peer, uint64_t n)
{
    return t->sring + ((size_t)peer * t->S + (size_t)(n % t->S)) * t->B;
}
/* Reply slot i of `peer`: in the receive area, where the peer's replies land (`in`), or in
 * the send area, our copy of a reply to it. */
static unsigned char *cslot(ib_fabric *t, int in, int peer, uint64_t i)
{
    char *area = (in ? t->rring : t->sring) + (size_t)t->base.world * t->S * t->B;
    return (unsigned char *)area + ((size_t)peer * IB_NCTS + (size_t)(i % IB_NCTS)) * IB_CTS_BYTES;
}

/* The registered region that holds all of [p, p+n), or NULL. */
static const ib_region *region_of(const ib_fabric *t, const char *p, size_t n)
{
    for (int i = 0; i < t->nreg; i++)
        if (p >= t->reg[i].base && n <= t->reg[i].len && p - t->reg[i].base <= (ptrdiff_t)(t->reg[i].len - n))
            return &t->reg[i];
    return NULL;
}

static ih_err ib_post(ib_fabric *t, int peer, void *buf, size_t len, comm_req *req, int kind);

static ih_err ib_post_send(comm_fabric *f, int peer, const void *buf, size_t len, comm_req *req)
{
    return ib_post((ib_fabric *)f, peer, (void *)(uintptr_t)buf, len, req, COMM_REQ_SEND);
}

static ih_err ib_post_recv(comm_fabric *f, int peer, void *buf, size_t len, comm_req *req)
{
    return ib_post((ib_fabric *)f, peer, buf, len, req, COMM_REQ_RECV);
}

static ih_err post_one_recv(ib_fabric *t, int peer)
{
    struct ibv_recv_wr wr;
    memset(&wr, 0, sizeof wr);
    wr.wr_id = (uint64_t)peer << 3 | WR_RECV; /* no SGE: a WRITE WITH IMM lands where it says */
    return ibw_post_recv(t->peers[peer].id->qp, &wr, "(re-arming a receive)");
}

static ih_err post_write(ib_fabric *t, int pi, uint64_t raddr, uint32_t rkey, const void *src,
                         uint32_t len, uint32_t lkey, uint32_t imm, int kind)
{
    ib_peer *p = &t->peers[pi];
    struct ibv_sge sge = {.addr = (uintptr_t)src, .length = len, .lkey = lkey};
    struct ibv_send_wr wr;
    memset(&wr, 0, sizeof wr);
    wr.wr_id = (uint64_t)pi << 3 | (uint64_t)kind;
    wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.imm_data = htonl(imm);
    wr.sg_list = len ? &sge : NULL;
    wr.num_sge = len ? 1 : 0;
    wr.wr.rdma.remote_addr = raddr;
    wr.wr.rdma.rkey = rkey;
    char what[128];
    snprintf(what, sizeof what, "to rank %d (host %s)", pi, p->host);
    return ibw_post_send(p->id->qp, &wr, what);
}

/* Turns a failed work completion into the sticky error naming peer, operation and status. */
static ih_err wc_error(ib_fabric *t, const struct ibv_wc *wc)
{
    int pi = (int)(wc->wr_id >> 3), kind = (int)(wc->wr_id & 7);
    if (t->err) return sticky(t); /* flushes after our own failure or abort */
    const char *op = kind == WR_EAGER ? "RDMA WRITE WITH IMM (eager piece) to"
                   : kind == WR_STAGED ? "RDMA WRITE WITH IMM (staged piece into the peer's buffer) to"
                   : kind == WR_ZCOPY ? "RDMA WRITE WITH IMM (zero-copy piece into the peer's buffer) to"
                   : kind == WR_CTS ? "RDMA WRITE WITH IMM (ready-to-receive reply) to"
                   : kind == WR_CREDIT ? "RDMA WRITE WITH IMM (credit return) to"
                   : "receive of a WRITE WITH IMM from";
    int remote = wc->status == IBV_WC_RETRY_EXC_ERR || wc->status == IBV_WC_RNR_RETRY_EXC_ERR ||
                 wc->status == IBV_WC_REM_ACCESS_ERR || wc->status == IBV_WC_REM_OP_ERR ||
                 wc->status == IBV_WC_WR_FLUSH_ERR;
    ih_fail(remote ? IH_E_REMOTE : IH_E_NET,
            "%s rank %d (host %s) failed at rank %d: %s (wc status %d, vendor_err 0x%x)%s", op, pi,
            pi >= 0 && pi < t->base.world ? t->peers[pi].host : "?", t->base.rank,
            ibv_wc_status_str(wc->status), (int)wc->status, wc->vendor_err,
            remote ? ": the peer is gone or unreachable (see its log)" : "");
    return fail_now(t, remote ? IH_E_REMOTE : IH_E_NET);
}

static ih_err violation(ib_fabric *t, int pi, const char *what)
{
    return fail_now(t, ih_fail(IH_E_INTERNAL, "rank %d (host %s) broke the RDMA protocol seen from "
                               "rank %d: %s (the ranks posted different byte counts, or run "
                               "different builds)", pi, t->peers[pi].host, t->base.rank, what));
}

/* One receive completion: a WRITE WITH IMM from peer pi. */
static ih_err on_imm(ib_fabric *t, int pi, uint32_t imm, uint32_t bytes)
{
    ib_peer *p = &t->peers[pi];
    uint32_t kind = imm >> 29, v = imm & IB_SEQ_MASK;
    char what[160];
    switch (kind) {
    case IMM_DATA:
    case IMM_RTS:
        if (v != (uint32_t)(p->r_arrived & IB_SEQ_MASK) || bytes > t->B || (kind == IMM_RTS && bytes != 8)) {
            snprintf(what, sizeof what, "ring item %u (%u B) where item %u (at most %u B) was due", v,
                     bytes, (uint32_t)(p->r_arrived & IB_SEQ_MASK), t->B);
            return violation(t, pi, what);
        }
        p->r_len[p->r_arrived % t->S] = bytes | (kind == IMM_RTS ? IB_RTS_BIT : 0);
        p->r_arrived++;
        return IH_OK;
    case IMM_DIRECT: {
        uint64_t d = (v - (uint32_t)(p->cts_done & IB_SEQ_MASK)) & IB_SEQ_MASK;
        ib_seg *g = &p->seg[(p->cts_done + d) % IB_NCTS];
        if (d >= p->cts_issued - p->cts_done || !g->direct || bytes > g->len - g->got) {
            snprintf(what, sizeof what, "%u B written for reply %u, which is not an open direct segment", bytes, v);
            return violation(t, pi, what);
        }
        g->got += bytes;
        return IH_OK;
    }
    case IMM_CREDIT:
        p->s_credit += v;
        return IH_OK;
    case IMM_CTS:
        if (v != (uint32_t)(p->cts_seen & IB_SEQ_MASK) || p->cts_seen - p->cts_used >= IB_NCTS) {
            snprintf(what, sizeof what, "reply %u where reply %u was due", v, (uint32_t)(p->cts_seen & IB_SEQ_MASK));
            return violation(t, pi, what);
        }
        p->cts_seen++;
        return IH_OK;
    default:
        snprintf(what, sizeof what, "unknown immediate 0x%08x", imm);
        return violation(t, pi, what);
    }
}

/* Polls the CQ dry; *n = completions handled. */
static ih_err drain_cq(ib_fabric *t, int *n)
{
    struct ibv_wc wc[32];
    *n = 0;
    for (;;) {
        int got = 0;
        ih_err e = ibw_poll_cq(t->cq, 32, wc, &got);
        if (e) return fail_now(t, e);
        for (int i = 0; i < got; i++) {
            int pi = (int)(wc[i].wr_id >> 3), kind = (int)(wc[i].wr_id & 7);
            ib_peer *p = &t->peers[pi];
            /* A peer that left flushes our QP to it: expected once it is gone (a job's ranks
             * finish at different times). If we still needed it, peer_stuck() says so. */
            if (wc[i].status == IBV_WC_WR_FLUSH_ERR && p->gone) continue;
            if (wc[i].status != IBV_WC_SUCCESS) return wc_error(t, &wc[i]);
            switch (kind) {
            case WR_EAGER:
            case WR_STAGED: p->st_done++; break;
            case WR_ZCOPY: {
                ib_zrec *z = &p->z[p->z_done % IB_NZ];
                z->req->done += z->len;
                p->z_done++;
                break;
            }
            case WR_CREDIT: p->credit_out--; break;
            case WR_CTS: p->cts_wr_done++; break;
            default:
                IH_TRY(on_imm(t, pi, ntohl(wc[i].imm_data), wc[i].byte_len));
                if (!p->gone) {
                    e = post_one_recv(t, pi);
                    if (e) return fail_now(t, e);
                }
            }
        }
        *n += got;
        if (got < 32) return IH_OK;
    }
}

/* Receiver: sends replies for the part of the current large message that posted receives
 * cover, each naming our buffer (direct, when registered) or the ring (eager). */
static ih_err issue_cts(ib_fabric *t, int pi)
{
    ib_peer *p = &t->peers[pi];
    while (p->cts_pos < p->reg_end && p->cts_issued - p->cts_done < IB_NCTS &&
           p->cts_issued - p->cts_wr_done < IB_NCTS) {
        comm_req *q = p->rq_head;
        while (q && !(q->pos <= p->cts_pos && p->cts_pos < q->pos + q->len)) q = q->next;
        if (!q) return IH_OK; /* the receive for these bytes is not posted yet */
        uint64_t end = p->reg_end < q->pos + q->len ? p->reg_end : q->pos + q->len;
        uint32_t len = end - p->cts_pos < IB_SEG_MAX ? (uint32_t)(end - p->cts_pos) : IB_SEG_MAX;
        char *dst = q->buf + (p->cts_pos - q->pos);
        const ib_region *rg = region_of(t, dst, len);
        unsigned char *c = cslot(t, 0, pi, p->cts_issued);
        put_be64(c, (uint64_t)(uintptr_t)dst);
        comm_put_be32(c + 8, rg ? rg->mr->rkey : 0);
        comm_put_be32(c + 12, len);
        comm_put_be32(c + 16, rg != NULL);
        IH_TRY(post_write(t, pi, p->rctrl + (p->cts_issued % IB_NCTS) * IB_CTS_BYTES, p->rkey, c,
                          IB_CTS_LEN, t->smr->lkey, IMM(IMM_CTS, p->cts_issued), WR_CTS));
        p->seg[p->cts_issued % IB_NCTS] = (ib_seg){.pos = p->cts_pos, .len = len, .got = 0, .direct = rg != NULL};
        p->cts_issued++;
        p->cts_pos += len;
    }
    return IH_OK;
}

/* Receiver: delivers what arrived into the posted receives, in stream order. */
static ih_err recv_progress(ib_fabric *t, int pi, int *moved)
{
    ib_peer *p = &t->peers[pi];
    IH_TRY(issue_cts(t, pi));
    for (;;) {
        comm_req *q = p->rq_head;
        /* The next large message opens as soon as the current one is replied for in full, even
         * while its bytes are still arriving, so the replies for consecutive large messages
         * (pipelining chunks) flow without a round trip between them. Its RTS being the next
         * ring item means no byte lies between the two: those would be ring items before it. */
        if (p->cts_pos == p->reg_end && p->r_consumed < p->r_arrived && !p->r_poff &&
            (p->r_len[p->r_consumed % t->S] & IB_RTS_BIT)) {
            uint64_t L = get_be64((const unsigned char *)rslot(t, pi, p->r_consumed));
            if (L == 0) return violation(t, pi, "an RTS for an empty message");
            p->cts_pos = p->r_cons > p->reg_end ? p->r_cons : p->reg_end;
            p->reg_end = p->cts_pos + L;
            p->r_consumed++;
            p->credit_pending++;
            (*moved)++;
            IH_TRY(issue_cts(t, pi));
            continue;
        }
        if (p->cts_done < p->cts_issued) { /* inside a large message, in a replied segment */
            ib_seg *g = &p->seg[p->cts_done % IB_NCTS];
            /* a direct segment is delivered whole; an eager one item by item */
            IH_ASSERT(q && g->pos + (g->direct ? 0 : g->got) == p->r_cons && q->pos + q->done == p->r_cons,
                      "ib segment at %llu, stream at %llu", (unsigned long long)g->pos,
                      (unsigned long long)p->r_cons);
            if (g->direct) {
                if (g->got < g->len) return IH_OK;
                q->done += g->len;
                p->r_cons += g->len;
                t->st.rx_direct += g->len;
            } else {
                if (p->r_consumed == p->r_arrived) return IH_OK;
                uint32_t il = p->r_len[p->r_consumed % t->S];
                /* the sender cuts the items of a segment at its end: each fits whole */
                if ((il & IB_RTS_BIT) || p->r_poff || il > g->len - g->got)
                    return violation(t, pi, "a ring item does not fit the eager segment it belongs to");
                uint32_t take = il;
                memcpy(q->buf + q->done, rslot(t, pi, p->r_consumed), take);
                q->done += take;
                p->r_cons += take;
                g->got += take;
                t->st.rx_copied += take;
                p->r_consumed++;
                p->credit_pending++;
            }
            (*moved)++;
            if (g->got == g->len) {
                p->cts_done++;
                IH_TRY(issue_cts(t, pi));
            }
            if (q->done == q->len) pop(&p->rq_head, &p->rq_tail);
            continue;
        }
        if (p->r_cons < p->reg_end) return IH_OK; /* no receive posted yet, or no reply slot */
        if (p->r_consumed == p->r_arrived) return IH_OK;
        uint32_t il = p->r_len[p->r_consumed % t->S];
        char *item = rslot(t, pi, p->r_consumed);
        if (il & IB_RTS_BIT) return violation(t, pi, "an RTS in the middle of a ring item");
        if (!q) return IH_OK;
        size_t take = il - p->r_poff < q->len - q->done ? il - p->r_poff : q->len - q->done;
        memcpy(q->buf + q->done, item + p->r_poff, take);
        q->done += take;
        p->r_cons += take;
        p->r_poff += (uint32_t)take;
        t->st.rx_copied += take;
        if (p->r_poff == il) {
            p->r_consumed++;
            p->credit_pending++;
            p->r_poff = 0;
        }
        (*moved)++;
        if (q->done == q->len) pop(&p->rq_head, &p->rq_tail);
    }
}

static int eager_room(const ib_fabric *t, const ib_peer *p)
{
    return p->e_posted < p->s_credit + t->S && p->st_posted < p->st_done + t->S;
}

/* Copies len bytes into the next staging slot and writes them into the peer's ring. */
static ih_err post_eager(ib_fabric *t, int pi, const void *src, uint32_t len, int kind)
{
    ib_peer *p = &t->peers[pi];
    char *slot = sslot(t, pi, p->st_posted);
    memcpy(slot, src, len);
    IH_TRY(post_write(t, pi, p->raddr + (uint64_t)(p->e_posted % t->S) * t->B, p->rkey, slot, len,
                      t->smr->lkey, IMM(kind, p->e_posted), WR_EAGER));
    p->e_posted++;
    p->st_posted++;
    return IH_OK;
}

/* Sender: moves the queued sends to this peer as far as credits, replies and queues allow. */
static ih_err send_progress(ib_fabric *t, int pi, int *moved)
{
    ib_peer *p = &t->peers[pi];
    while (p->sq_head) {
        comm_req *r = p->sq_head;
        if (!t->rdv || r->len < t->rdv) { /* small: eager */
            if (!eager_room(t, p)) return IH_OK;
            uint32_t n = (uint32_t)(r->len - p->s_off < t->B ? r->len - p->s_off : t->B);
            IH_TRY(post_eager(t, pi, r->buf + p->s_off, n, IMM_DATA));
            r->done += n;
            p->s_off += n;
            t->st.eager_small += n;
        } else if (!p->s_rts) { /* large: announce it, then serve the receiver's replies */
            if (!eager_room(t, p)) return IH_OK;
            unsigned char hdr[8];
            put_be64(hdr, r->len);
            IH_TRY(post_eager(t, pi, hdr, 8, IMM_RTS));
            p->s_rts = 1;
        } else if (!p->c_active) {
            if (p->cts_used == p->cts_seen) return IH_OK;
            const unsigned char *c = cslot(t, 1, pi, p->cts_used);
            p->c_addr = get_be64(c);
            p->c_rkey = comm_get_be32(c + 8);
            p->c_len = comm_get_be32(c + 12);
            p->c_direct = comm_get_be32(c + 16) != 0;
            p->c_off = 0;
            p->c_idx = p->cts_used++;
            if (p->c_len == 0 || p->c_len > r->len - p->s_off)
                return violation(t, pi, "a reply for more bytes than the message has left");
            p->c_active = 1;
            continue;
        } else if (p->c_direct) {
            uint32_t n = p->c_len - p->c_off < t->piece ? p->c_len - p->c_off : t->piece;
            char *src = r->buf + p->s_off;
            const ib_region *rg = region_of(t, src, n);
            if (rg) { /* zero copy: the device reads our buffer */
                if (p->z_posted - p->z_done >= IB_NZ) return IH_OK;
                IH_TRY(post_write(t, pi, p->c_addr + p->c_off, p->c_rkey, src, n, rg->mr->lkey,
                                  IMM(IMM_DIRECT, p->c_idx), WR_ZCOPY));
                p->z[p->z_posted % IB_NZ] = (ib_zrec){r, n};
                p->z_posted++;
                t->st.direct += n;
            } else { /* one copy, through a staging slot */
                if (p->st_posted >= p->st_done + t->S) return IH_OK;
                if (n > t->B) n = t->B;
                char *slot = sslot(t, pi, p->st_posted);
                memcpy(slot, src, n);
                IH_TRY(post_write(t, pi, p->c_addr + p->c_off, p->c_rkey, slot, n, t->smr->lkey,
                                  IMM(IMM_DIRECT, p->c_idx), WR_STAGED));
                p->st_posted++;
                r->done += n;
                t->st.staged += n;
            }
            p->s_off += n;
            p->c_off += n;
        } else { /* the receiver's buffer is not registered: through its ring */
            if (!eager_room(t, p)) return IH_OK;
            uint32_t n = p->c_len - p->c_off < t->B ? p->c_len - p->c_off : t->B;
            IH_TRY(post_eager(t, pi, r->buf + p->s_off, n, IMM_DATA));
            r->done += n;
            p->s_off += n;
            p->c_off += n;
            t->st.eager_large += n;
        }
        (*moved)++;
        if (p->c_active && p->c_off == p->c_len) p->c_active = 0;
        if (p->s_off == r->len) {
            pop(&p->sq_head, &p->sq_tail);
            p->s_off = 0;
            p->s_rts = 0;
        }
    }
    return IH_OK;
}

/* Delivers arrivals, returns credits, sends. */
static ih_err progress_peer(ib_fabric *t, int pi, int *moved)
{
    ib_peer *p = &t->peers[pi];
    IH_TRY(recv_progress(t, pi, moved));
    if (p->credit_pending && p->credit_out < t->S) {
        IH_TRY(post_write(t, pi, p->raddr, p->rkey, NULL, 0, 0, IMM(IMM_CREDIT, p->credit_pending), WR_CREDIT));
        p->credit_out++;
        p->credit_pending = 0;
    }
    return send_progress(t, pi, moved);
}

static ih_err ib_post(ib_fabric *t, int peer, void *buf, size_t len, comm_req *req, int kind)
{
    if (t->err) return sticky(t);
    IH_ASSERT(peer >= 0 && peer < t->base.world && peer != t->base.rank, "bad peer %d", peer);
    req->buf = buf;
    req->len = len;
    req->done = 0;
    req->peer = peer;
    req->kind = kind;
    req->next = NULL;
    req->pos = 0;
    if (len == 0) return IH_OK;
    ib_peer *p = &t->peers[peer];
    if (kind == COMM_REQ_SEND) {
        enqueue(&p->sq_head, &p->sq_tail, req);
        return IH_OK;
    }
    req->pos = p->r_posted;
    p->r_posted += len;
    enqueue(&p->rq_head, &p->rq_tail, req);
    ih_err e = issue_cts(t, peer); /* reply at once when a large message waits for this receive */
    return e ? fail_now(t, e) : IH_OK;
}

static ib_peer *peer_of(ib_fabric *t, struct rdma_cm_id *id)
{
    for (int p = 0; p < t->base.world; p++)
        if (t->peers[p].id == id) return &t->peers[p];
    return NULL;
}

/* Handles the rdma_cm events queued after set-up: a disconnect marks the peer gone. */
static ih_err drain_cm(ib_fabric *t)
{
    for (;;) {
        struct rdma_cm_event *ev = NULL;
        ih_err e = ibw_get_cm_event(t->cm_ch, &ev);
        if (e) return fail_now(t, e);
        if (!ev) return IH_OK;
        ib_peer *p = peer_of(t, ev->id);
        if (p && (ev->event == RDMA_CM_EVENT_DISCONNECTED || ev->event == RDMA_CM_EVENT_DEVICE_REMOVAL ||
                  ev->event == RDMA_CM_EVENT_TIMEWAIT_EXIT))
            if (!p->gone) { /* 2: the peer left (1: we disconnected) */
                p->gone = 2;
                p->gone_ns = ih_now_ns();
            }
        rdma_ack_cm_event(ev);
    }
}

/* Called after IB_SPIN rounds without progress: a peer that left while we still owe it or
 * expect from it data, or wait for its reply or for our writes to it, can never complete. */
static int peer_stuck(ib_fabric *t, int pi)
{
    ib_peer *p = &t->peers[pi];
    return p->gone == 2 && ih_now_ns() - p->gone_ns > IB_GONE_GRACE_NS &&
           (p->rq_head || p->sq_head || p->z_done < p->z_posted);
}

static ih_err ib_wait(comm_fabric *f, comm_req *req, int64_t timeout_ms)
{
    ib_fabric *t = (ib_fabric *)f;
    uint64_t last = ih_now_ns();
    int spins = 0, armed = 0;
    while (req->done < req->len) {
        if (t->err) return sticky(t);
        int wcs = 0, moved = 0;
        IH_TRY(drain_cq(t, &wcs));
        for (int k = 0; k < t->base.world; k++) {
            int pi = (req->peer + k) % t->base.world;
            if (pi == t->base.rank) continue;
            ih_err e = progress_peer(t, pi, &moved);
            if (e) return fail_now(t, e);
        }
        if (req->done >= req->len) break;
        uint64_t now = ih_now_ns();
        if (wcs || moved) { last = now; spins = 0; armed = 0; continue; }
        if (++spins < IB_SPIN) continue;
        IH_TRY(drain_cm(t));
        for (int pi = 0; pi < t->base.world; pi++)
            if (pi != t->base.rank && peer_stuck(t, pi))
                return fail_now(t, ih_fail(IH_E_REMOTE,
                    "rank %d (host %s) disconnected while rank %d still had data to %s it: it "
                    "exited or failed, see its log", pi, t->peers[pi].host, t->base.rank,
                    t->peers[pi].rq_head ? "receive from" : "send to"));
        uint64_t waited_ms = (now - last) / 1000000;
        if ((int64_t)waited_ms >= timeout_ms) {
            ib_peer *p = &t->peers[req->peer];
            t->base.stalled_peer = req->peer;
            snprintf(t->base.stalled_host, sizeof t->base.stalled_host, "%s", p->host);
            return fail_now(t, ih_fail(IH_E_TIMEOUT,
                "rank %d (host %s) moved no data for %.1f s while rank %d waited to %s %zu B "
                "(%zu done) over RDMA: it is hung, stopped or too slow (raise IH_COMM_TIMEOUT_S if "
                "it is just slow)", req->peer, p->host, (double)timeout_ms / 1e3, t->base.rank,
                req->kind == COMM_REQ_SEND ? "send it" : "receive from it", req->len, req->done));
        }
        if (!armed) { /* arm, then poll once more: a completion may have raced the arming */
            IH_TRY(ibw_req_notify_cq(t->cq));
            armed = 1;
            continue;
        }
        int ms = (int)((uint64_t)timeout_ms - waited_ms);
        if (ms > 1000) ms = 1000;
        struct pollfd pf[2] = {{.fd = t->comp_ch->fd, .events = POLLIN}, {.fd = t->cm_ch->fd, .events = POLLIN}};
        if (poll(pf, 2, ms) < 0 && errno != EINTR)
            return fail_now(t, ih_fail(IH_E_NET, "poll on the RDMA channels: %s", strerror(errno)));
        if (pf[0].revents) {
            IH_TRY(ibw_drain_comp_channel(t->comp_ch));
            armed = 0;
        }
    }
    return IH_OK;
}

/* Before disconnecting, lets the data writes already posted complete: a staged send request
 * is done once its bytes are in the staging ring, so the last pieces of a job may still be in flight
 * (tcp gets this from the kernel's graceful close). Bounded; skipped after a failure. */
static void drain_sends(ib_fabric *t)
{
    uint64_t end = ih_now_ns() + 5000000000ull;
    while (!t->err && t->cq && ih_now_ns() < end) {
        int busy = 0, n = 0;
        for (int p = 0; p < t->base.world; p++)
            busy |= t->peers[p].established && !t->peers[p].gone &&
                    (t->peers[p].st_done < t->peers[p].st_posted || t->peers[p].z_done < t->peers[p].z_posted);
        if (!busy || drain_cq(t, &n)) return;
        if (!n) usleep(100);
    }
}

static void ib_destroy(comm_fabric *f)
{
    ib_fabric *t = (ib_fabric *)f;
    if (!t) return;
    if (t->peers) drain_sends(t);
    disconnect_all(t);
    for (int p = 0; t->peers && p < t->base.world; p++) {
        if (!t->peers[p].id) continue;
        if (t->peers[p].id->qp) rdma_destroy_qp(t->peers[p].id);
        rdma_destroy_id(t->peers[p].id);
    }
    if (t->listen_id) rdma_destroy_id(t->listen_id);
    for (int i = 0; i < t->nreg; i++) ibv_dereg_mr(t->reg[i].mr);
    if (t->rmr) ibv_dereg_mr(t->rmr);
    if (t->smr) ibv_dereg_mr(t->smr);
    if (t->cq) ibv_destroy_cq(t->cq);
    if (t->comp_ch) ibv_destroy_comp_channel(t->comp_ch);
    if (t->pd) ibv_dealloc_pd(t->pd);
    if (t->cm_ch) rdma_destroy_event_channel(t->cm_ch);
    free(t->rring);
    free(t->sring);
    free(t->r_len_all);
    free(t->peers);
    free(t);
}

static ih_err ib_reg(comm_fabric *f, void *buf, size_t bytes)
{
    ib_fabric *t = (ib_fabric *)f;
    if (!t->pd) return IH_OK; /* one rank: nothing to move */
    if (t->nreg == IB_MAX_REG) /* comm.c bounds one ctx; split views add theirs here too */
        return ih_fail(IH_E_USAGE, "rank %d: cannot register %zu B at %p: the ib fabric already holds "
                       "%d registered regions (every ctx and split view adds its own)", t->base.rank,
                       bytes, buf, IB_MAX_REG);
    char what[96];
    snprintf(what, sizeof what, "buffer at %p registered by rank %d for zero-copy transfers", buf, t->base.rank);
    struct ibv_mr *mr = NULL;
    IH_TRY(ibw_reg_mr(&mr, t->pd, buf, bytes, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE, what));
    t->reg[t->nreg++] = (ib_region){.base = buf, .len = bytes, .mr = mr};
    IH_INFO(IH_LOG_NET, "ib fabric: rank %d registered %zu B at %p (rkey 0x%x)", t->base.rank, bytes, buf, mr->rkey);
    return IH_OK;
}

static void ib_dereg(comm_fabric *f, void *buf)
{
    ib_fabric *t = (ib_fabric *)f;
    for (int i = 0; i < t->nreg; i++)
        if (t->reg[i].base == (char *)buf) {
            ibv_dereg_mr(t->reg[i].mr);
            t->reg[i] = t->reg[--t->nreg];
            return;
        }
}

static void ib_stats(const comm_fabric *f, comm_stats *out)
{
    const ib_fabric *t = (const ib_fabric *)f;
    *out = t->st;
    out->threshold = t->rdv;
}

static const comm_fabric_ops k_ib_ops = {
    .name = "ib",
    .post_send = ib_post_send,
    .post_recv = ib_post_recv,
    .wait = ib_wait,
    .abort = ib_abort,
    .destroy = ib_destroy,
    .reg = ib_reg,
    .dereg = ib_dereg,
    .stats = ib_stats,
};

static const unsigned char k_magic[4] = {'I', 'H', 'I', 'B'};

static void hello_fill(const ib_fabric *t, int peer, comm_ib_hello *h)
{
    memcpy(h->magic, k_magic, 4);
    comm_put_be32(h->rank, (uint32_t)t->base.rank);
    comm_put_be32(h->world, (uint32_t)t->base.world);
    comm_put_be32(h->slots, t->S);
    comm_put_be32(h->slot_bytes, t->B);
    comm_put_be32(h->rkey, t->rmr->rkey);
    put_be64(h->addr, (uint64_t)(uintptr_t)rslot((ib_fabric *)t, peer, 0));
    put_be64(h->ctrl, (uint64_t)(uintptr_t)cslot((ib_fabric *)t, 1, peer, 0));
}

/* Checks a peer's hello; fills its ring. `expect` = the rank it must be, or -1 for any higher. */
static ih_err hello_parse(ib_fabric *t, const void *data, size_t len, int expect, int *rank_out)
{
    comm_ib_hello h;
    if (!data || len < sizeof h)
        return ih_fail(IH_E_NET, "RDMA connection without our hello (%zu B of private data): "
                       "another program on this port?", len);
    memcpy(&h, data, sizeof h);
    int r = (int)comm_get_be32(h.rank);
    if (memcmp(h.magic, k_magic, 4) || comm_get_be32(h.world) != (uint32_t)t->base.world ||
        (expect >= 0 ? r != expect : (r <= t->base.rank || r >= t->base.world || t->peers[r].id)))
        return ih_fail(IH_E_NET, "rendezvous: rank %d got a bad RDMA hello (rank %d, world %u): "
                       "another job on the same port, or WORLD_SIZE differs between ranks",
                       t->base.rank, r, comm_get_be32(h.world));
    if (comm_get_be32(h.slots) != t->S || comm_get_be32(h.slot_bytes) != t->B)
        return ih_fail(IH_E_USAGE, "rank %d uses %u RDMA slots of %u B, rank %d %u of %u B: set "
                       "IH_IB_SLOTS / IH_IB_SLOT_KB alike on every rank", r, comm_get_be32(h.slots),
                       comm_get_be32(h.slot_bytes), t->base.rank, t->S, t->B);
    t->peers[r].rkey = comm_get_be32(h.rkey);
    t->peers[r].raddr = get_be64(h.addr);
    t->peers[r].rctrl = get_be64(h.ctrl);
    *rank_out = r;
    return IH_OK;
}

/* Work requests one QP may hold. Send queue: staging-slot writes (eager items and staged
 * pieces) <= S, credit returns <= S, replies <= IB_NCTS, zero-copy pieces <= IB_NZ. Receive
 * queue: what the peer may have in flight towards us: ring items <= S, credits <= S, replies
 * <= IB_NCTS, direct pieces <= S + IB_NZ (an RNR retry, set to infinite, covers a receive
 * queue that ran dry because we did not poll). */
static uint32_t qp_depth(const ib_fabric *t, int recv)
{
    return recv ? 3 * t->S + IB_NCTS + IB_NZ + 4 : 2 * t->S + IB_NCTS + IB_NZ + 2;
}

static ih_err setup_qp(ib_fabric *t, int pi, struct rdma_cm_id *id, const char *what)
{
    if (id->verbs != t->ctx)
        return ih_fail(IH_E_NET, "%s is reached through RDMA device %s, but this rank listens on "
                       "%s: every rank must use one device (check routes, or set IH_IB_DEV)", what,
                       id->verbs ? ibv_get_device_name(id->verbs->device) : "(none)", t->dev);
    struct ibv_qp_init_attr a;
    memset(&a, 0, sizeof a);
    a.send_cq = t->cq;
    a.recv_cq = t->cq;
    a.qp_type = IBV_QPT_RC;
    a.cap.max_send_wr = qp_depth(t, 0);
    a.cap.max_recv_wr = qp_depth(t, 1);
    a.cap.max_send_sge = 1;
    a.cap.max_recv_sge = 1;
    IH_TRY(ibw_create_qp(id, t->pd, &a, what));
    t->peers[pi].id = id;
    for (uint32_t i = 0; i < qp_depth(t, 1); i++) IH_TRY(post_one_recv(t, pi));
    return IH_OK;
}

static void conn_param(struct rdma_conn_param *cp, const comm_ib_hello *h)
{
    memset(cp, 0, sizeof *cp);
    cp->private_data = h;
    cp->private_data_len = sizeof *h;
    cp->retry_count = 7;
    cp->rnr_retry_count = 7; /* never needed by construction; infinite is the safe side */
}

/* Blocks for the next event on `ch` until the deadline; *ev = NULL on timeout. */
static ih_err next_event(struct rdma_event_channel *ch, uint64_t deadline, struct rdma_cm_event **ev)
{
    *ev = NULL;
    for (;;) {
        IH_TRY(ibw_get_cm_event(ch, ev));
        if (*ev) return IH_OK;
        uint64_t now = ih_now_ns();
        if (now >= deadline) return IH_OK;
        int ready = 0, ms = (int)((deadline - now) / 1000000) + 1;
        IH_TRY(ibw_wait_fd(ch->fd, ms > 1000 ? 1000 : ms, &ready));
    }
}

/* Active side: connect to lower rank `pi`, retrying until the deadline (its listener exists,
 * but an unreachable address or a rejected request may be transient). */
static ih_err connect_peer(ib_fabric *t, int pi, int pport, uint64_t deadline, int64_t timeout_ms)
{
    ib_peer *p = &t->peers[pi];
    char what[200];
    snprintf(what, sizeof what, "rank %d (host %s) at %s:%d", pi, p->host, p->ip, pport);
    char last[600] = "";
    for (int attempt = 0;; attempt++) {
        struct rdma_event_channel *ch = NULL;
        struct rdma_cm_id *id = NULL;
        struct rdma_cm_event *ev = NULL;
        ih_err e = ibw_create_event_channel(&ch);
        if (!e) e = ibw_event_channel_nonblock(ch);
        if (!e) e = ibw_create_id(ch, &id, NULL);
        if (!e) e = ibw_resolve_addr(id, t->ip, p->ip, pport, 2000, what);
        int stage = 0; /* 0 addr, 1 route, 2 established */
        while (!e && stage < 3) {
            e = next_event(ch, deadline, &ev);
            if (e) break;
            if (!ev) {
                e = ih_fail(IH_E_TIMEOUT, "cannot reach %s over RDMA: no answer within %.1f s%s%s", what,
                            (double)timeout_ms / 1e3, last[0] ? "; last error: " : "", last);
                break;
            }
            enum rdma_cm_event_type ty = ev->event;
            int status = ev->status;
            comm_ib_hello h;
            size_t hl = 0;
            if (ty == RDMA_CM_EVENT_ESTABLISHED && ev->param.conn.private_data) {
                hl = ev->param.conn.private_data_len < sizeof h ? ev->param.conn.private_data_len : sizeof h;
                memcpy(&h, ev->param.conn.private_data, hl);
            }
            rdma_ack_cm_event(ev);
            ev = NULL;
            if (ty == RDMA_CM_EVENT_ADDR_RESOLVED && stage == 0) {
                e = ibw_resolve_route(id, 2000, what);
                stage = 1;
            } else if (ty == RDMA_CM_EVENT_ROUTE_RESOLVED && stage == 1) {
                e = setup_qp(t, pi, id, what);
                if (e) break;
                comm_ib_hello mine;
                hello_fill(t, pi, &mine);
                struct rdma_conn_param cp;
                conn_param(&cp, &mine);
                e = ibw_connect(id, &cp, what);
                stage = 2;
            } else if (ty == RDMA_CM_EVENT_ESTABLISHED && stage == 2) {
                int r = -1;
                e = hello_parse(t, &h, hl, pi, &r);
                if (e) break;
                p->established = 1;
                stage = 3;
            } else {
                snprintf(last, sizeof last, "%s (status %d: %s)", rdma_event_str(ty), status,
                         strerror(status < 0 ? -status : status));
                e = IH_E_NET; /* retried below */
                ih_fail(IH_E_NET, "RDMA connect to %s failed: %s", what, last);
            }
        }
        if (!e) {
            IH_TRY(ibw_migrate_id(id, t->cm_ch));
            rdma_destroy_event_channel(ch);
            return IH_OK;
        }
        if (id) {
            if (id->qp) rdma_destroy_qp(id);
            rdma_destroy_id(id);
        }
        p->id = NULL;
        if (ch) rdma_destroy_event_channel(ch);
        if (e != IH_E_NET || ih_now_ns() + 200000000ull >= deadline) {
            if (e == IH_E_NET && last[0])
                return ih_fail(IH_E_NET, "cannot reach %s over RDMA from %s (%s, tried %d times for "
                               "%.1f s): %s; is the address on an RDMA netdev of that host and "
                               "routable from here?", what, t->ip, t->dev, attempt + 1,
                               (double)timeout_ms / 1e3, last);
            return e;
        }
        if (!last[0]) snprintf(last, sizeof last, "%s", ih_last_error());
        usleep(100000);
    }
}

/* Passive side: accept every higher rank on the listen channel. */
static ih_err accept_peers(ib_fabric *t, uint64_t deadline, int64_t timeout_ms)
{
    int want = t->base.world - 1 - t->base.rank, got = 0;
    while (got < want) {
        struct rdma_cm_event *ev = NULL;
        IH_TRY(next_event(t->cm_ch, deadline, &ev));
        if (!ev) {
            char missing[256] = "";
            size_t o = 0;
            for (int q = t->base.rank + 1; q < t->base.world && o + 12 < sizeof missing; q++)
                if (!t->peers[q].established) o += (size_t)snprintf(missing + o, sizeof missing - o, " %d", q);
            return ih_fail(IH_E_TIMEOUT, "rendezvous: rank %d waited %.1f s for ranks%s to connect "
                           "over RDMA", t->base.rank, (double)timeout_ms / 1e3, missing);
        }
        ih_err e = IH_OK;
        struct rdma_cm_id *drop = NULL;
        if (ev->event == RDMA_CM_EVENT_CONNECT_REQUEST) {
            int r = -1;
            e = hello_parse(t, ev->param.conn.private_data, ev->param.conn.private_data_len, -1, &r);
            if (e) {
                IH_WARN("%s", ih_last_error());
                rdma_reject(ev->id, NULL, 0);
                drop = ev->id;
                e = IH_OK;
            } else {
                char what[160];
                snprintf(what, sizeof what, "rank %d (host %s)", r, t->peers[r].host);
                e = setup_qp(t, r, ev->id, what);
                if (!e) {
                    comm_ib_hello mine;
                    hello_fill(t, r, &mine);
                    struct rdma_conn_param cp;
                    conn_param(&cp, &mine);
                    e = ibw_accept(ev->id, &cp, what);
                }
            }
        } else if (ev->event == RDMA_CM_EVENT_ESTABLISHED) {
            ib_peer *p = peer_of(t, ev->id);
            if (p && !p->established) { p->established = 1; got++; }
        } else if (ev->event == RDMA_CM_EVENT_CONNECT_ERROR || ev->event == RDMA_CM_EVENT_UNREACHABLE ||
                   ev->event == RDMA_CM_EVENT_DISCONNECTED) {
            ib_peer *p = peer_of(t, ev->id);
            e = ih_fail(IH_E_NET, "rendezvous: accepting rank %d (host %s) over RDMA: %s (status %d)",
                        p ? (int)(p - t->peers) : -1, p ? p->host : "?", rdma_event_str(ev->event),
                        ev->status);
        }
        rdma_ack_cm_event(ev);
        if (drop) rdma_destroy_id(drop);
        if (e) return e;
    }
    return IH_OK;
}

/* Opens the device that carries `ip` through a listening id; checks --ib-dev/--ib-port, the
 * port state and the GID. Leaves t->listen_id, t->ctx, t->dev set. */
static ih_err open_local(ib_fabric *t, const char *ip, const comm_ib_opts *o, int *port)
{
    struct ibv_device **list = NULL;
    int n = 0;
    IH_TRY(ibw_get_device_list(&list, &n));
    const char *dev = o && o->dev && *o->dev ? o->dev : getenv("IH_IB_DEV");
    int want_port = o && o->port ? o->port : (int)ih_env_long("IH_IB_PORT", 0, 0, 255);
    int found = !dev || !*dev;
    for (int i = 0; !found && i < n; i++) found = !strcmp(ibv_get_device_name(list[i]), dev);
    ibv_free_device_list(list);
    if (!found) {
        char names[256];
        ibw_device_names(names, sizeof names);
        return ih_fail(IH_E_USAGE, "no RDMA device named '%s' (--ib-dev / IH_IB_DEV); this host "
                       "has: %s", dev, names);
    }
    IH_TRY(ibw_create_event_channel(&t->cm_ch));
    IH_TRY(ibw_event_channel_nonblock(t->cm_ch));
    IH_TRY(ibw_create_id(t->cm_ch, &t->listen_id, NULL));
    IH_TRY(ibw_bind_listen(t->listen_id, ip, t->base.world, port));
    t->ctx = t->listen_id->verbs;
    snprintf(t->dev, sizeof t->dev, "%s", ibv_get_device_name(t->ctx->device));
    uint8_t pn = t->listen_id->port_num;
    if (dev && *dev && strcmp(dev, t->dev))
        return ih_fail(IH_E_USAGE, "address %s is on RDMA device %s, not on '%s' (--ib-dev / "
                       "IH_IB_DEV): set MASTER_ADDR to an address of a netdev of %s, or drop "
                       "--ib-dev", ip, t->dev, dev, dev);
    if (want_port && want_port != pn)
        return ih_fail(IH_E_USAGE, "address %s is on %s port %u, not port %d (--ib-port / "
                       "IH_IB_PORT)", ip, t->dev, pn, want_port);
    IH_TRY(ibw_check_port_active(t->ctx, pn));
    int gid = -1, roce = 0;
    IH_TRY(ibw_find_gid(t->ctx, pn, ip, &gid, &roce));
    if (roce && gid < 0)
        return ih_fail(IH_E_NET, "%s port %u (RoCE) has no GID for %s: the address is not on "
                       "that port's netdev (see /sys/class/infiniband/%s/ports/%u/gids)", t->dev,
                       pn, ip, t->dev, pn);
    IH_INFO(IH_LOG_NET, "ib fabric: rank %d uses %s port %u (%s), %s %d, address %s", t->base.rank,
            t->dev, pn, roce ? "RoCE" : "InfiniBand", roce ? "gid index" : "gid by rdma_cm", gid, ip);
    return IH_OK;
}

int comm_fabric_ib_usable(const char *ip, const comm_ib_opts *opts, char *why, size_t cap)
{
    ib_fabric t;
    memset(&t, 0, sizeof t);
    t.base.world = 1;
    int port = 0;
    ih_err e = open_local(&t, ip, opts, &port);
    if (e) snprintf(why, cap, "%s", ih_last_error());
    else snprintf(why, cap, "%s port %u at %s", t.dev, t.listen_id->port_num, ip);
    if (t.listen_id) rdma_destroy_id(t.listen_id);
    if (t.cm_ch) rdma_destroy_event_channel(t.cm_ch);
    return e == IH_OK;
}

ih_err comm_fabric_ib_create(comm_fabric **out, comm_store *store, const char *ns, int rank,
                             int world, const comm_ib_opts *opts, int64_t timeout_ms)
{
    *out = NULL;
    ih_err e = IH_OK;
    uint64_t deadline = ih_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    ib_fabric *t = calloc(1, sizeof *t);
    if (!t) return ih_fail(IH_E_SYS, "out of memory for the ib fabric");
    t->base.ops = &k_ib_ops;
    t->base.rank = rank;
    t->base.world = world;
    t->base.stalled_peer = -1;
    t->S = (uint32_t)ih_env_long("IH_IB_SLOTS", 4, 1, 1024);
    t->B = (uint32_t)ih_env_long("IH_IB_SLOT_KB", 256, 1, 1 << 20) * 1024u;
    t->rdv = (size_t)ih_env_long("IH_IB_RDV_KB", IB_RDV_KB_DEFAULT, 0, 1 << 20) * 1024u;
    t->piece = (uint32_t)ih_env_long("IH_IB_PIECE_KB", IB_PIECE_KB_DEFAULT, 1, 1 << 20) * 1024u;
    t->peers = calloc((size_t)world, sizeof *t->peers);
    t->r_len_all = calloc((size_t)world * t->S, sizeof *t->r_len_all);
    if (!t->peers || !t->r_len_all) {
        e = ih_fail(IH_E_SYS, "out of memory for %d ib peers", world);
        goto fail;
    }
    for (int p = 0; p < world; p++) t->peers[p].r_len = t->r_len_all + (size_t)p * t->S;
    if (world == 1) { *out = &t->base; return IH_OK; }

    char key[300], val[512];
    int port = 0;
    comm_store_local_addr(store, t->ip, sizeof t->ip);
    gethostname(t->host, sizeof t->host - 1);
    IH_TRY_GOTO(open_local(t, t->ip, opts, &port), e, fail);
    struct ibv_port_attr pa;
    IH_TRY_GOTO(ibw_query_port(t->ctx, t->listen_id->port_num, &pa), e, fail);
    if (pa.max_msg_sz && t->piece > pa.max_msg_sz) t->piece = (uint32_t)pa.max_msg_sz;
    IH_TRY_GOTO(ibw_alloc_pd(&t->pd, t->ctx), e, fail);
    IH_TRY_GOTO(ibw_create_comp_channel(&t->comp_ch, t->ctx), e, fail);
    IH_TRY_GOTO(ibw_create_cq(&t->cq, t->ctx, (world - 1) * (int)(qp_depth(t, 0) + qp_depth(t, 1)) + 16,
                              t->comp_ch), e, fail);
    /* each area: the rings, then the reply slots */
    size_t ring = ((size_t)world * t->S * t->B + (size_t)world * IB_NCTS * IB_CTS_BYTES + 4095) / 4096 * 4096;
    t->rring = aligned_alloc(4096, ring);
    t->sring = aligned_alloc(4096, ring);
    if (!t->rring || !t->sring) {
        e = ih_fail(IH_E_SYS, "out of memory for 2 x %zu B of RDMA rings", ring);
        goto fail;
    }
    memset(t->rring, 0, ring);
    memset(t->sring, 0, ring);
    IH_TRY_GOTO(ibw_reg_mr(&t->rmr, t->pd, t->rring, ring, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE,
                           "receive rings"), e, fail);
    IH_TRY_GOTO(ibw_reg_mr(&t->smr, t->pd, t->sring, ring, IBV_ACCESS_LOCAL_WRITE, "send rings"), e, fail);

    snprintf(key, sizeof key, "%s/ib/%d", ns, rank);
    snprintf(val, sizeof val, "%s %d %s", t->ip, port, t->host);
    IH_TRY_GOTO(comm_store_set(store, key, val, strlen(val), timeout_ms), e, fail);
    int *ports = calloc((size_t)world, sizeof *ports);
    if (!ports) { e = ih_fail(IH_E_SYS, "out of memory"); goto fail; }
    for (int p = 0; p < world; p++) {
        if (p == rank) { snprintf(t->peers[p].host, sizeof t->peers[p].host, "%s", t->host); continue; }
        snprintf(key, sizeof key, "%s/ib/%d", ns, p);
        size_t len = 0;
        int64_t left = (int64_t)((deadline > ih_now_ns() ? deadline - ih_now_ns() : 0) / 1000000);
        e = comm_store_get(store, key, val, sizeof val - 1, &len, left);
        if (e == IH_E_TIMEOUT)
            e = ih_fail(IH_E_TIMEOUT, "rendezvous: rank %d of %d never registered its RDMA address "
                        "within %.1f s (rank %d waiting); is it started, with --fabric ib?", p,
                        world, (double)timeout_ms / 1e3, rank);
        if (!e) {
            val[len < sizeof val - 1 ? len : sizeof val - 1] = 0;
            if (sscanf(val, "%63s %d %63s", t->peers[p].ip, &ports[p], t->peers[p].host) != 3)
                e = ih_fail(IH_E_NET, "rendezvous: malformed RDMA address '%s' for rank %d", val, p);
        }
        if (e) { free(ports); goto fail; }
    }
    for (int p = 0; p < rank && !e; p++) e = connect_peer(t, p, ports[p], deadline, timeout_ms);
    free(ports);
    if (e) goto fail;
    IH_TRY_GOTO(accept_peers(t, deadline, timeout_ms), e, fail);
    rdma_destroy_id(t->listen_id); /* no more connections; the accepted ids stay */
    t->listen_id = NULL;
    IH_INFO(IH_LOG_NET, "ib fabric: rank %d connected to %d peers (%u slots x %u KiB per peer; "
            "messages from %zu KiB direct between registered buffers, pieces up to %u KiB)",
            rank, world - 1, t->S, t->B / 1024, t->rdv / 1024, t->piece / 1024);
    *out = &t->base;
    return IH_OK;
fail:
    ib_destroy(&t->base);
    return e;
}

/* Waits on `ch` for event `want`, acking it; IH_E_NET naming `what` for any other event. */
static ih_err expect_event(struct rdma_event_channel *ch, enum rdma_cm_event_type want, uint64_t deadline,
                           const char *what, struct rdma_cm_id **id)
{
    struct rdma_cm_event *ev = NULL;
    IH_TRY(next_event(ch, deadline, &ev));
    if (!ev) return ih_fail(IH_E_TIMEOUT, "%s: no %s within the deadline", what, rdma_event_str(want));
    enum rdma_cm_event_type got = ev->event;
    int status = ev->status;
    if (id) *id = ev->id;
    rdma_ack_cm_event(ev);
    if (got != want)
        return ih_fail(IH_E_NET, "%s: got %s (status %d), expected %s", what, rdma_event_str(got),
                       status, rdma_event_str(want));
    return IH_OK;
}

ih_err comm_fabric_ib_write_bw(const char *ip, size_t bytes, int iters, double *gbps)
{
    *gbps = 0;
    ih_err e = IH_OK;
    ib_fabric t;
    memset(&t, 0, sizeof t);
    t.base.world = 2;
    t.S = 4;
    ib_peer peers[2];
    memset(peers, 0, sizeof peers);
    t.peers = peers;
    struct rdma_event_channel *ach = NULL;
    struct rdma_cm_id *aid = NULL, *pid = NULL;
    char *src = NULL, *dst = NULL, *dst2 = NULL;
    struct ibv_mr *smr = NULL, *dmr = NULL, *dmr2 = NULL;
    uint64_t deadline = ih_now_ns() + 60000000000ull;
    int port = 0;
    const char *what = "raw RDMA write loopback";
    IH_TRY_GOTO(open_local(&t, ip, NULL, &port), e, out);
    IH_TRY_GOTO(ibw_alloc_pd(&t.pd, t.ctx), e, out);
    IH_TRY_GOTO(ibw_create_cq(&t.cq, t.ctx, 64, NULL), e, out);
    src = aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
    dst = aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
    dst2 = aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
    if (!src || !dst || !dst2) { e = ih_fail(IH_E_SYS, "out of memory for 3 x %zu B", bytes); goto out; }
    memset(src, 1, bytes);
    memset(dst, 0, bytes);
    memset(dst2, 0, bytes);
    IH_TRY_GOTO(ibw_reg_mr(&smr, t.pd, src, bytes, IBV_ACCESS_LOCAL_WRITE, "write-bw source"), e, out);
    IH_TRY_GOTO(ibw_reg_mr(&dmr, t.pd, dst, bytes, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE,
                           "write-bw target"), e, out);
    IH_TRY_GOTO(ibw_reg_mr(&dmr2, t.pd, dst2, bytes, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE,
                           "write-bw target"), e, out);
    IH_TRY_GOTO(ibw_create_event_channel(&ach), e, out);
    IH_TRY_GOTO(ibw_event_channel_nonblock(ach), e, out);
    IH_TRY_GOTO(ibw_create_id(ach, &aid, NULL), e, out);
    IH_TRY_GOTO(ibw_resolve_addr(aid, ip, ip, port, 2000, what), e, out);
    IH_TRY_GOTO(expect_event(ach, RDMA_CM_EVENT_ADDR_RESOLVED, deadline, what, NULL), e, out);
    IH_TRY_GOTO(ibw_resolve_route(aid, 2000, what), e, out);
    IH_TRY_GOTO(expect_event(ach, RDMA_CM_EVENT_ROUTE_RESOLVED, deadline, what, NULL), e, out);
    IH_TRY_GOTO(setup_qp(&t, 0, aid, what), e, out);
    struct rdma_conn_param cp;
    conn_param(&cp, NULL);
    cp.private_data_len = 0;
    IH_TRY_GOTO(ibw_connect(aid, &cp, what), e, out);
    IH_TRY_GOTO(expect_event(t.cm_ch, RDMA_CM_EVENT_CONNECT_REQUEST, deadline, what, &pid), e, out);
    IH_TRY_GOTO(setup_qp(&t, 1, pid, what), e, out);
    IH_TRY_GOTO(ibw_accept(pid, &cp, what), e, out);
    IH_TRY_GOTO(expect_event(ach, RDMA_CM_EVENT_ESTABLISHED, deadline, what, NULL), e, out);
    IH_TRY_GOTO(expect_event(t.cm_ch, RDMA_CM_EVENT_ESTABLISHED, deadline, what, NULL), e, out);
    uint64_t t0 = ih_now_ns();
    /* end 0 (active id) writes into dst, end 1 (passive id) into dst2, both from src */
    struct ibv_qp *qp[2] = {aid->qp, pid->qp};
    char *tgt[2] = {dst, dst2};
    uint32_t rkey[2] = {dmr->rkey, dmr2->rkey};
    int posted[2] = {0, 0}, done[2] = {0, 0};
    while (done[0] < iters || done[1] < iters) {
        for (int q = 0; q < 2; q++)
            while (posted[q] < iters && posted[q] - done[q] < 4) {
                struct ibv_sge sge = {.addr = (uintptr_t)src, .length = (uint32_t)bytes, .lkey = smr->lkey};
                struct ibv_send_wr wr;
                memset(&wr, 0, sizeof wr);
                wr.wr_id = (uint64_t)q;
                wr.opcode = IBV_WR_RDMA_WRITE;
                wr.send_flags = IBV_SEND_SIGNALED;
                wr.sg_list = &sge;
                wr.num_sge = 1;
                wr.wr.rdma.remote_addr = (uintptr_t)tgt[q];
                wr.wr.rdma.rkey = rkey[q];
                IH_TRY_GOTO(ibw_post_send(qp[q], &wr, what), e, out);
                posted[q]++;
            }
        struct ibv_wc wc[8];
        int got = 0;
        IH_TRY_GOTO(ibw_poll_cq(t.cq, 8, wc, &got), e, out);
        for (int i = 0; i < got; i++) {
            if (wc[i].status != IBV_WC_SUCCESS) {
                e = ih_fail(IH_E_NET, "%s: RDMA WRITE failed: %s", what, ibv_wc_status_str(wc[i].status));
                goto out;
            }
            if (wc[i].opcode == IBV_WC_RDMA_WRITE) done[wc[i].wr_id & 1]++;
        }
        if (!got) {
            if (ih_now_ns() > deadline) { e = ih_fail(IH_E_TIMEOUT, "%s: writes did not complete in 60 s", what); goto out; }
            usleep(50); /* yield: under TCG a busy poll starves rxe's kernel side */
        }
    }
    *gbps = 2.0 * (double)bytes * iters / ((double)(ih_now_ns() - t0) / 1e9) / 1e9;
    if (dst[bytes - 1] != 1 || dst2[bytes - 1] != 1)
        e = ih_fail(IH_E_INTERNAL, "%s: a target buffer did not change", what);
out:
    if (aid) { rdma_disconnect(aid); if (aid->qp) rdma_destroy_qp(aid); rdma_destroy_id(aid); }
    if (pid) { if (pid->qp) rdma_destroy_qp(pid); rdma_destroy_id(pid); }
    if (t.listen_id) rdma_destroy_id(t.listen_id);
    if (smr) ibv_dereg_mr(smr);
    if (dmr) ibv_dereg_mr(dmr);
    if (dmr2) ibv_dereg_mr(dmr2);
    if (t.cq) ibv_destroy_cq(t.cq);
    if (t.pd) ibv_dealloc_pd(t.pd);
    if (ach) rdma_destroy_event_channel(ach);
    if (t.cm_ch) rdma_destroy_event_channel(t.cm_ch);
    free(src);
    free(dst);
    free(dst2);
    return e;
}
