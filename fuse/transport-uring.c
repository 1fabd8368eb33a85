/* transport-uring.c - the FUSE-over-io_uring transport: requests arrive as completions of ring
 * entries registered per queue, and each reply is committed together with the fetch of the
 * next request (one FUSE_IO_URING_CMD_COMMIT_AND_FETCH), on the queue's io_uring.
 *
 * The kernel's side (fs/fuse/dev_uring.c, 6.14 and later):
 * - INIT is answered over /dev/fuse with FUSE_OVER_IO_URING (protocol.c, when the export asks for
 *   it in init_want); the kernel then holds every new request back until each of its queues,
 *   one per possible CPU, has an entry registered.  A request is queued on the queue of the CPU
 *   that issued it (qid = CPU), so the queue thread for qid runs on that CPU while requests come
 *   one at a time: the request is served where it was issued, without a cross-CPU wake-up
 *   (affinity.c; with many in flight it may run anywhere).
 * - An entry is two buffers: a header (struct fuse_uring_req_header: fuse_in_header, then the
 *   op's fixed argument, then fuse_uring_ent_in_out) and a payload of at least max_write bytes
 *   (WRITE data and names in; READ data and out arguments back).  REGISTER hands an entry to the
 *   kernel; its completion (res 0) brings a request; COMMIT_AND_FETCH(commit_id) answers it and
 *   hands the entry back.  One entry is one request in flight.
 * - On unmount or abort, the entries the kernel holds complete with -ENOTCONN (or -ECANCELED
 *   when the ring goes away); a queue whose entries have all come back is disconnected.
 *   FORGET and INTERRUPT still travel over /dev/fuse, which queue 0 keeps reading (and where it
 *   sees ENODEV).
 *
 * Threads: everything here runs in the queue's thread, with the queue's AioContext current:
 * queue_start registers the entries, completions dispatch requests (fuse_dispatch), replies
 * (possibly later, from the request's coroutine) queue the commit SQEs.
 *
 * The ring: the queue's AioContext ring (aio_get_uring, shared with the block I/O) when it has
 * one, else a ring of the transport's own, whose fd the event loop watches.
 */
#include "config.h"
#include "fuse/fuse-int.h"
#include "block/block.h"
#include "block/util.h"

#include <errno.h>
#include <string.h>

#ifdef CONFIG_LIBURING
#include <liburing.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#define URING_ENTRIES       32      /* requests in flight per queue */
#define URING_HDR_SIZE      512     /* a fuse_uring_req_header, rounded up */
#define URING_DEV_BUF       (FUSE_MAX_REQ_SIZE + 4096)
#define URING_PARAM         "/sys/module/fuse/parameters/enable_uring"

typedef struct UringQueue UringQueue;

/* One ring entry: one request in flight.  Starts with its FuseReq (container_of). */
typedef struct UringEnt {
    FuseReq req;
    AioUringOp op;
    UringQueue *uq;
    struct fuse_uring_req_header *hdr;
    void *payload;
    struct iovec iov[2];        /* REGISTER's: header, payload */
    uint64_t commit_id;
    bool in_kernel;             /* a REGISTER or COMMIT_AND_FETCH is outstanding */
} UringEnt;

struct UringQueue {
    FuseQueue *q;
    unsigned qid;
    UringEnt ents[URING_ENTRIES];
    uint8_t *mem;               /* headers and payloads of all entries (mmap) */
    size_t mem_size;
    size_t payload_size;
    unsigned in_kernel;         /* entries with a command outstanding */
    bool gone;                  /* the kernel ended the connection */

    struct io_uring *ring;      /* the AioContext's, or &own */
    struct io_uring own;
    bool own_ring;
    bool in_cq_handler;         /* own ring: submit once the completions are handled */

    uint8_t *dev_buf;           /* queue 0: FORGET and INTERRUPT over /dev/fuse */
    bool dev_warned;
    int start_error;            /* a REGISTER failed while the queue started */
};


/* --- SQEs --- */

static struct io_uring_sqe *uring_get_sqe(UringQueue *uq, UringEnt *e)
{
    struct io_uring_sqe *sqe;

    if (!uq->own_ring) {
        return aio_uring_get_sqe(uq->q->ctx, &e->op);
    }
    sqe = io_uring_get_sqe(uq->ring);
    if (!sqe) {
        io_uring_submit(uq->ring);
        sqe = io_uring_get_sqe(uq->ring);
        g_assert(sqe);          /* the SQ holds all entries: one command each at most */
    }
    memset(sqe, 0, sizeof(*sqe));
    io_uring_sqe_set_data(sqe, &e->op);
    return sqe;
}

static void uring_submit_soon(UringQueue *uq)
{
    if (uq->own_ring && !uq->in_cq_handler) {
        io_uring_submit(uq->ring);
    }
    /* The AioContext's ring submits before its loop next waits. */
}

/* Submit what is queued now. */
static void uring_submit_now(UringQueue *uq)
{
    if (uq->own_ring) {
        if (io_uring_sq_ready(uq->ring)) {
            io_uring_submit(uq->ring);
        }
    } else {
        aio_uring_submit(uq->q->ctx);
    }
}

static void uring_submit_now_cb(void *opaque)
{
    uring_submit_now(opaque);
}

/* Put a REGISTER (commit_id 0) or a COMMIT_AND_FETCH for e in the SQ. */
static void uring_prep_cmd(UringEnt *e, uint32_t cmd_op, uint64_t commit_id)
{
    UringQueue *uq = e->uq;
    struct io_uring_sqe *sqe = uring_get_sqe(uq, e);
    struct fuse_uring_cmd_req *cr = (struct fuse_uring_cmd_req *)sqe->cmd;
    uint64_t user_data = sqe->user_data;

    memset(sqe->cmd, 0, 80);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = uq->q->exp->queues[0].fd;
    sqe->cmd_op = cmd_op;
    sqe->user_data = user_data;
    if (cmd_op == FUSE_IO_URING_CMD_REGISTER) {
        sqe->addr = (uintptr_t)e->iov;
        sqe->len = 2;
    }
    cr->qid = uq->qid;
    cr->commit_id = commit_id;
    e->in_kernel = true;
    uq->in_kernel++;
}

/* --- requests --- */

/* The kernel ended the connection: once every entry is back, the queue is disconnected. */
static void uring_check_gone(UringQueue *uq)
{
    if (uq->in_kernel == 0 && !uq->gone) {
        uq->gone = true;
        fuse_queue_disconnected(uq->q);
    }
}

/* Requests that came at once: 2 if a completion of another of the queue's ring entries is
 * already posted behind this one, else 1 (only "more than one" decides the mode).  Other
 * completions on a ring shared with the block I/O do not count: they say nothing about how
 * many requests the clients have in flight. */
static unsigned uring_arrivals(UringQueue *uq)
{
    const char *first = (const char *)&uq->ents[0];
    const char *end = (const char *)&uq->ents[URING_ENTRIES];
    struct io_uring_cqe *cqe;
    unsigned head;

    io_uring_for_each_cqe(uq->ring, head, cqe) {
        const char *data = io_uring_cqe_get_data(cqe);

        if (data >= first && data < end) {
            return 2;
        }
    }
    return 1;
}

static void uring_ent_done(AioUringOp *op, int res, uint32_t cqe_flags)
{
    UringEnt *e = (UringEnt *)((char *)op - offsetof(UringEnt, op));
    UringQueue *uq = e->uq;
    FuseReq *req = &e->req;

    e->in_kernel = false;
    uq->in_kernel--;
    if (res < 0) {
        if (!uq->start_error) {
            uq->start_error = res;
        }
        if (res != -ENOTCONN && res != -ECANCELED && res != -ECONNABORTED) {
            log_warning("export %s: FUSE-over-io_uring queue %u: %s", uq->q->exp->common.id,
                        uq->qid, g_strerror(-res));
        }
        uring_check_gone(uq);
        return;
    }
    e->commit_id = e->hdr->ring_ent_in_out.commit_id;
    req->q = uq->q;
    req->ops = &fuse_transport_uring;
    req->in = (const struct fuse_in_header *)e->hdr->in_out;
    req->arg = e->hdr->op_in;
    req->arg_len = FUSE_URING_OP_IN_OUT_SZ;
    req->payload_len = MIN(e->hdr->ring_ent_in_out.payload_sz, uq->payload_size);
    req->payload = e->payload;     /* never NULL: the argument came apart from it */
    req->out_buf = e->payload;
    req->out_cap = uq->payload_size;
    if (uq->q->stopping) {
        /* Stopped: answer without serving (the export is going away). */
        fuse_transport_uring.reply(req, -EIO, NULL, 0, 0);
        return;
    }
    /* Other requests posted too: more than one came at once (no system call to look). */
    fuse_affinity_waiting(uq->q, uring_arrivals(uq));
    if (!fuse_dispatch(req)) {
        /* FORGET and INTERRUPT travel over /dev/fuse; should one come here, the kernel still
         * waits for the commit of its entry. */
        fuse_transport_uring.reply(req, -ENOSYS, NULL, 0, 0);
    }
}

static int uring_reply(FuseReq *req, int error, const void *out_arg, size_t out_arg_len,
                       size_t out_len)
{
    UringEnt *e = (UringEnt *)req;      /* req comes first */
    UringQueue *uq = e->uq;
    struct fuse_out_header *out = (struct fuse_out_header *)e->hdr->in_out;
    uint64_t unique = req->in->unique;     /* in and out headers share the space */
    size_t len = 0;
    bool yield;

    if (error == 0 && out_arg_len > 0) {
        if (out_arg_len > uq->payload_size) {
            error = -EIO;
        } else {
            if (out_arg != e->payload) {
                memcpy(e->payload, out_arg, out_arg_len);
            }
            len = out_arg_len;
        }
    } else if (error == 0) {
        len = MIN(out_len, uq->payload_size);
    }
    if (error) {
        len = 0;
    }
    out->len = sizeof(*out) + len;
    out->error = error;
    out->unique = unique;
    e->hdr->ring_ent_in_out.payload_sz = len;
    if (uq->gone) {
        return 0;               /* the connection ended: nothing waits for the answer */
    }
    yield = fuse_affinity_yield_due(uq->q);
    if (yield) {
        /* The commit wakes the client: alone, at idle priority (affinity.c, top).  What
         * else was queued goes first, so that nothing the kernel might hand to a new worker
         * thread (which would inherit the policy) goes in that system call. */
        uring_submit_now(uq);
    }
    uring_prep_cmd(e, FUSE_IO_URING_CMD_COMMIT_AND_FETCH, e->commit_id);
    if (!yield || !fuse_affinity_yield(uq->q, uring_submit_now_cb, uq)) {
        uring_submit_soon(uq);
    }
    return 0;
}

/* --- the own ring (when the AioContext has none) --- */

static void uring_own_cq_ready(void *opaque)
{
    UringQueue *uq = opaque;
    struct io_uring_cqe *cqe;

    uq->in_cq_handler = true;
    while (io_uring_peek_cqe(uq->ring, &cqe) == 0) {
        AioUringOp *op = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        uint32_t flags = cqe->flags;

        io_uring_cqe_seen(uq->ring, cqe);
        op->cb(op, res, flags);
    }
    uq->in_cq_handler = false;
    if (io_uring_sq_ready(uq->ring)) {
        io_uring_submit(uq->ring);
    }
}

/* --- /dev/fuse on queue 0: FORGET and INTERRUPT, and ENODEV when the connection ends --- */

static void uring_dev_readable(void *opaque)
{
    UringQueue *uq = opaque;
    FuseQueue *q = uq->q;

    for (int i = 0; i < 32; i++) {
        ssize_t n = read(q->fd, uq->dev_buf, URING_DEV_BUF);
        const struct fuse_in_header *in = (const void *)uq->dev_buf;

        if (n < 0 && (errno == EINTR || errno == ENOENT)) {
            continue;           /* ENOENT: the request was interrupted meanwhile */
        }
        if (n < 0 && errno == EAGAIN) {
            return;
        }
        if (n < (ssize_t)sizeof(*in)) {
            /* ENODEV: unmounted or aborted; the entries come back as well. */
            aio_set_fd_handler(q->ctx, q->fd, NULL, NULL, NULL);
            return;
        }
        if (in->opcode == FUSE_FORGET || in->opcode == FUSE_BATCH_FORGET ||
            in->opcode == FUSE_INTERRUPT) {
            continue;           /* no answer; nothing to forget or interrupt here */
        }
        /* Everything else goes through the ring; the kernel falls back to /dev/fuse only if
         * registering failed, which fails the export's start.  Do not leave it waiting. */
        if (!uq->dev_warned) {
            log_warning("export %s: request %u over /dev/fuse while FUSE-over-io_uring is in "
                        "use; answering EIO", q->exp->common.id, in->opcode);
            uq->dev_warned = true;
        }
        struct fuse_out_header out = { .len = sizeof(out), .error = -EIO,
                                       .unique = in->unique };
        if (write(q->fd, &out, sizeof(out)) < 0 && errno != ENOENT) {
            log_debug("export %s: /dev/fuse: %s", q->exp->common.id, g_strerror(errno));
        }
    }
}

/* --- queues --- */

static int uring_setup_ring(UringQueue *uq, GError **errp)
{
    struct io_uring_params p = {
        .flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE,
        .cq_entries = URING_ENTRIES * 2,
    };
    int ret;

    uq->ring = aio_get_uring(uq->q->ctx);
    if (uq->ring && (uq->ring->flags & IORING_SETUP_SQE128)) {
        log_debug("export %s: queue %u on its event loop's io_uring", uq->q->exp->common.id,
                  uq->qid);
        return 0;               /* the uring_cmd needs 128-byte SQEs */
    }
    ret = io_uring_queue_init_params(URING_ENTRIES, &uq->own, &p);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "export %s: cannot set up the io_uring of queue %u",
                         uq->q->exp->common.id, uq->qid);
        return ret;
    }
    uq->ring = &uq->own;
    uq->own_ring = true;
    log_debug("export %s: queue %u on an io_uring of its own", uq->q->exp->common.id, uq->qid);
    aio_set_fd_handler(uq->q->ctx, uq->own.ring_fd, uring_own_cq_ready, NULL, uq);
    return 0;
}

static void uring_free_mem(UringQueue *uq)
{
    if (!uq->mem) {
        return;
    }
    if (uq->in_kernel == 0) {
        munmap(uq->mem, uq->mem_size);
    } else {
        /* The kernel still holds entries (the export was removed while mounted): it may yet
         * copy a request into them until the connection ends.  Give the memory back but keep
         * the addresses reserved, so such a copy fails instead of landing in something else. */
        mmap(uq->mem, uq->mem_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED |
             MAP_NORESERVE, -1, 0);
    }
    uq->mem = NULL;
}

/* For testing: BLKFUSE_URING_FAULT_QUEUE=N makes queue N register its entries with payload
 * buffers shorter than max_write, which the kernel refuses (EINVAL), as it would refuse a
 * queue for any other reason. */
static bool uring_fault_queue(unsigned qid)
{
    const char *env = g_getenv("BLKFUSE_URING_FAULT_QUEUE");

    return env && *env && g_ascii_strtoull(env, NULL, 10) == qid;
}

static int uring_queue_start(FuseQueue *q, GError **errp)
{
    UringQueue *uq = g_new0(UringQueue, 1);
    bool fault = uring_fault_queue(q->index);
    int ret;

    uq->q = q;
    uq->qid = q->index;
    q->transport_state = uq;
    ret = uring_setup_ring(uq, errp);
    if (ret < 0) {
        return ret;
    }

    /* Payloads first (each 4 KiB-aligned, for O_DIRECT), then the headers. */
    uq->payload_size = FUSE_MAX_IO;
    uq->mem_size = URING_ENTRIES * (uq->payload_size + URING_HDR_SIZE);
    uq->mem = mmap(NULL, uq->mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (uq->mem == MAP_FAILED) {
        uq->mem = NULL;
        error_setg_errno(errp, errno, "export %s: no memory for the ring entries of queue %u",
                         q->exp->common.id, uq->qid);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < URING_ENTRIES; i++) {
        UringEnt *e = &uq->ents[i];

        e->uq = uq;
        e->op.cb = uring_ent_done;
        e->payload = uq->mem + (size_t)i * uq->payload_size;
        e->hdr = (void *)(uq->mem + URING_ENTRIES * uq->payload_size + i * URING_HDR_SIZE);
        e->iov[0] = (struct iovec){ e->hdr, sizeof(*e->hdr) };
        e->iov[1] = (struct iovec){ e->payload, fault ? 4096 : uq->payload_size };
        uring_prep_cmd(e, FUSE_IO_URING_CMD_REGISTER, 0);
    }
    uring_submit_soon(uq);          /* every entry's REGISTER at once */
    if (q->index == 0) {
        uq->dev_buf = blk_blockalign(URING_DEV_BUF);
        aio_set_fd_handler(q->ctx, q->fd, uring_dev_readable, NULL, uq);
    }

    /* Registering fails at once (its completion is posted while it is submitted), so look for
     * failures now: then the start fails, rather than the kernel waiting for this queue. */
    if (uq->own_ring) {
        io_uring_submit(uq->ring);
    } else {
        aio_uring_submit(q->ctx);
    }
    while (aio_poll(q->ctx, false)) {
        /* run the completions posted so far */
    }
    if (uq->start_error) {
        error_setg_errno(errp, -uq->start_error, "export %s: the kernel refused the ring "
                         "entries of queue %u", q->exp->common.id, uq->qid);
        return uq->start_error;
    }
    return 0;
}

static void uring_queue_stop(FuseQueue *q)
{
    UringQueue *uq = q->transport_state;

    /* Requests still arriving on the ring are answered with EIO (uring_ent_done); the entries
     * stay with the kernel until the connection ends. */
    if (uq && q->index == 0 && uq->dev_buf) {
        aio_set_fd_handler(q->ctx, q->fd, NULL, NULL, NULL);
    }
}

static void uring_queue_cleanup(FuseQueue *q)
{
    UringQueue *uq = q->transport_state;

    if (!uq) {
        return;
    }
    if (q->index == 0 && uq->dev_buf) {
        aio_set_fd_handler(q->ctx, q->fd, NULL, NULL, NULL);
        blk_vfree(uq->dev_buf);
    }
    if (uq->own_ring) {
        aio_set_fd_handler(q->ctx, uq->own.ring_fd, NULL, NULL, NULL);
        io_uring_queue_exit(&uq->own);
    }
    uring_free_mem(uq);
    g_free(uq);
    q->transport_state = NULL;
}

const FuseTransportOps fuse_transport_uring = {
    .name           = "uring",
    .queue_per_cpu  = true,
    .queue_start    = uring_queue_start,
    .queue_stop     = uring_queue_stop,
    .queue_cleanup  = uring_queue_cleanup,
    .reply          = uring_reply,
};

/* --- choosing the transport (main thread, export create) --- */

/* Why the kernel does not offer FUSE-over-io_uring: its fuse module lacks it, or the module
 * parameter that enables it is off.  Returns false with errp set, or true if it is on. */
static bool uring_kernel_check(GError **errp)
{
    g_autofree char *val = NULL;

    if (!g_file_get_contents(URING_PARAM, &val, NULL, NULL)) {
        error_setg(errp, "this kernel has no FUSE-over-io_uring (%s is missing: a kernel "
                   "built with CONFIG_FUSE_IO_URING, 6.14 or later, has it)", URING_PARAM);
        return false;
    }
    if (val[0] != 'Y' && val[0] != 'y' && val[0] != '1') {
        error_setg(errp, "FUSE-over-io_uring is off in the kernel (%s is N; root can switch "
                   "it on with: echo Y > %s)", URING_PARAM, URING_PARAM);
        return false;
    }
    return true;
}

/* Whether this process may use io_uring at all (sysctl kernel.io_uring_disabled, seccomp):
 * a ring like the queues' is set up and dropped. */
static bool uring_probe(GError **errp)
{
    struct io_uring ring;
    struct io_uring_params p = { .flags = IORING_SETUP_SQE128 };
    int ret = io_uring_queue_init_params(4, &ring, &p);

    if (ret < 0) {
        error_setg_errno(errp, -ret, "io_uring is not available to blkfuse");
        return false;
    }
    io_uring_queue_exit(&ring);
    return true;
}

/* The kernel's FUSE-over-io_uring queues: one per possible CPU. */
static unsigned uring_nr_queues(void)
{
    g_autofree char *list = NULL;
    unsigned n = 0;

    if (g_file_get_contents("/sys/devices/system/cpu/possible", &list, NULL, NULL)) {
        for (char *p = list; *p && *p != '\n';) {
            char *end;
            unsigned long a = strtoul(p, &end, 10), b = a;
            if (end == p) {
                break;
            }
            if (*end == '-') {
                p = end + 1;
                b = strtoul(p, &end, 10);
            }
            n += b >= a ? b - a + 1 : 0;
            p = *end == ',' ? end + 1 : end;
        }
    }
    if (n == 0) {
        long c = sysconf(_SC_NPROCESSORS_CONF);
        n = c > 0 ? c : 1;
    }
    return n;
}

static bool uring_wanted(const BlockExportOptions *opts, bool *forced)
{
    *forced = opts->transport && !strcmp(opts->transport, "uring");
    return *forced || !opts->transport || !strcmp(opts->transport, "auto");
}

int fuse_transport_want(FuseExport *exp, const BlockExportOptions *opts, GError **errp)
{
    g_autoptr(GError) why = NULL;
    bool forced;

    if (!uring_wanted(opts, &forced)) {
        return 0;
    }
    if (uring_kernel_check(&why) && uring_probe(&why)) {
        exp->init_want |= FUSE_OVER_IO_URING;
        return 0;
    }
    if (forced) {
        error_setg(errp, "%s: --transport=uring: %s", exp->common.mountpoint, why->message);
        return -EOPNOTSUPP;
    }
    log_info("export %s: transport dev (/dev/fuse): %s", exp->common.id, why->message);
    return 0;
}

int fuse_transport_pick(FuseExport *exp, const BlockExportOptions *opts, GError **errp)
{
    bool forced;
    unsigned n;

    exp->transport = &fuse_transport_dev;
    if (!(exp->init_flags & FUSE_OVER_IO_URING)) {
        if (exp->init_want & FUSE_OVER_IO_URING) {
            /* Asked for, not agreed: the parameter went off meanwhile, or an older kernel. */
            g_autoptr(GError) why = NULL;
            if (uring_kernel_check(&why)) {
                g_set_error(&why, BLK_ERROR, EOPNOTSUPP, "the kernel did not offer "
                            "FUSE-over-io_uring at INIT");
            }
            if (uring_wanted(opts, &forced) && forced) {
                error_setg(errp, "%s: --transport=uring: %s", exp->common.mountpoint,
                           why->message);
                return -EOPNOTSUPP;
            }
            log_info("export %s: transport dev (/dev/fuse): %s", exp->common.id, why->message);
        }
        exp->common.transport = exp->transport->name;
        return 0;
    }

    /* One queue per possible CPU; they all use queue 0's fd (the ring commands name it). */
    exp->transport = &fuse_transport_uring;
    exp->common.transport = exp->transport->name;
    n = uring_nr_queues();
    if (n != exp->nr_queues) {
        exp->queues = g_renew(FuseQueue, exp->queues, n);
        for (unsigned i = exp->nr_queues; i < n; i++) {
            memset(&exp->queues[i], 0, sizeof(exp->queues[i]));
            exp->queues[i].exp = exp;
            exp->queues[i].index = i;
            exp->queues[i].fd = -1;
        }
        exp->nr_queues = n;
    }
    exp->common.queues = n;
    return 0;
}

#else /* !CONFIG_LIBURING */

/* Built without liburing: the dev transport only. */
int fuse_transport_want(FuseExport *exp, const BlockExportOptions *opts, GError **errp)
{
    if (opts->transport && !strcmp(opts->transport, "uring")) {
        error_setg(errp, "%s: --transport=uring: this blkfuse was built without liburing",
                   exp->common.mountpoint);
        return -EOPNOTSUPP;
    }
    if (!opts->transport || !strcmp(opts->transport, "auto")) {
        log_info("export %s: transport dev (/dev/fuse): this blkfuse was built without "
                 "liburing", exp->common.id);
    }
    return 0;
}

int fuse_transport_pick(FuseExport *exp, const BlockExportOptions *opts, GError **errp)
{
    exp->transport = &fuse_transport_dev;
    exp->common.transport = exp->transport->name;
    return 0;
}

#endif
