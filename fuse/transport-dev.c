/* transport-dev.c - the classic FUSE transport: requests are read from the queue's /dev/fuse fd,
 * replies written back to it with writev.
 *
 * Each request owns one buffer, 4 KiB + FUSE_MAX_IO bytes, 4 KiB aligned.  A request is read to
 * FUSE_WRITE_HDR bytes before the 4 KiB mark, so that a WRITE's data (after fuse_in_header and
 * fuse_write_in) lands at the mark, aligned for O_DIRECT without a copy; a READ's data is read
 * into the buffer from the mark (out_buf) and written to the kernel from there.
 *
 * Large requests get a buffer whose data area is on a transparent huge page: the 2 MiB from the
 * mark are 2 MiB aligned and madvise(MADV_HUGEPAGE)'d.  Reading a 1 MiB WRITE from /dev/fuse pins
 * the buffer page by page (get_user_pages), which a huge page makes cheaper: side by side, daemon
 * CPU per 1 MiB write 0.87 times as much on null: and 0.85-0.95 times on a raw image.  For 4 KiB
 * requests it measured a little slower (0.86-0.94 times the IOPS at depth 1), and such a buffer
 * costs 2 MiB of memory where the others take only the pages requests touch; so a queue has at
 * most FUSE_DEV_HUGE_BUFS of them, on their own free list, and reads into one only while the
 * requests it reads are large (the last one was over FUSE_DEV_BIG_REQ bytes: sequential streams
 * of large writes).  Where the kernel has no THP, there are none.
 *
 * Large READs of a raw image in the page cache are answered by splice (splice_pipe and the ops
 * after it): the reply's header is written into the queue's pipe, the block layer moves the
 * data into it from the image's page cache (file.c), and the pipe goes to /dev/fuse in one
 * splice, which copies the data once, into the reader's pages.  pread + writev copy it twice:
 * into our buffer, then out of it.  A 1 MiB reply needs a pipe of 257 pages (header and data),
 * which F_SETPIPE_SZ rounds up to 2 MiB; beyond /proc/sys/fs/pipe-max-size (1 MiB unless raised)
 * only CAP_SYS_RESOURCE gets that, and other daemons' queues splice replies of up to 1 MiB - 8 KiB
 * (O_DIRECT reads of 128-512 KiB at depth 1: about 1.2 times the IOPS; bench/RESULTS.md).
 *
 * Threads: the queue thread (its fd handler reads requests and dispatches them; replies come
 * from handlers and coroutines of that thread); the handshake in the main thread during create,
 * before the queue threads start.
 */
#include "config.h"
#include "fuse/fuse-int.h"
#include "block/block.h"
#include "block/util.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <inttypes.h>
#include <sys/uio.h>
#include <unistd.h>

#define FUSE_DEV_DATA_OFF   4096                        /* out_buf, and WRITE data */
#define FUSE_DEV_IN_OFF     (FUSE_DEV_DATA_OFF - FUSE_WRITE_HDR)
#define FUSE_DEV_BUF_SIZE   (FUSE_DEV_DATA_OFF + FUSE_MAX_IO)
#define FUSE_DEV_REQS_PER_WAKE 32   /* requests read per readable event before yielding */
#define FUSE_DEV_POOL_MAX   64      /* idle requests (and their buffers) kept per queue */
#define FUSE_DEV_HUGE_BUFS  2       /* requests per queue whose data area is a huge page */
#define FUSE_DEV_BIG_REQ    (256 * 1024)    /* after a request this large, read into those */
#define FUSE_DEV_HUGE_SIZE  (2 * 1024 * 1024)

typedef struct FuseDevReq {
    FuseReq req;                    /* first: the protocol sees this */
    struct FuseDevReq *next_free;
    uint8_t *buf;                   /* FUSE_DEV_BUF_SIZE, aligned */
    bool huge;                      /* buf from fuse_dev_huge_alloc */
    struct fuse_out_header out;
} FuseDevReq;

typedef struct FuseDevQueue {
    FuseDevReq *free;
    unsigned nr_free;
    FuseDevReq *free_huge;          /* idle requests with a huge-page buffer... */
    unsigned nr_huge;               /* ...and how many were made (they stay pooled) */
    bool big;                       /* the last request read was over FUSE_DEV_BIG_REQ */
    int pipe[2];                    /* splice replies: made at the first, -1 until then */
    ssize_t pipe_data;              /* the most data bytes a reply may have in it; 0: no
                                     * pipe; -1 until the first splice reply tries to make it */
    bool pipe_busy;                 /* between splice_pipe and splice_reply/cancel */
    bool splice_fault;              /* BLKFUSE_SPLICE_REPLY_FAULT (fuse_dev_splice_reply) */
} FuseDevQueue;

/* --- requests and their buffers --- */

static FuseDevQueue *fuse_dev_queue(FuseQueue *q)
{
    if (!q->transport_state) {
        FuseDevQueue *dq = g_new0(FuseDevQueue, 1);

        dq->pipe[0] = dq->pipe[1] = -1;
        dq->pipe_data = -1;
        q->transport_state = dq;
    }
    return q->transport_state;
}

/* A request buffer whose data area (from FUSE_DEV_DATA_OFF) is the start of 2 MiB, aligned, for
 * a transparent huge page: a mapping of FUSE_DEV_DATA_OFF + 2 MiB.  NULL if it cannot be had. */
static uint8_t *fuse_dev_huge_alloc(void)
{
    size_t len = 2 * FUSE_DEV_HUGE_SIZE;
    uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t *data, *start, *end;

    if (m == MAP_FAILED) {
        return NULL;
    }
    data = (uint8_t *)ROUND_UP((uintptr_t)m + FUSE_DEV_DATA_OFF, FUSE_DEV_HUGE_SIZE);
    start = data - FUSE_DEV_DATA_OFF;
    end = data + FUSE_DEV_HUGE_SIZE;
    /* Keep only [start, end): the rest of the reservation goes back. */
    if (start > m) {
        munmap(m, start - m);
    }
    if (end < m + len) {
        munmap(end, m + len - end);
    }
    if (madvise(data, FUSE_DEV_HUGE_SIZE, MADV_HUGEPAGE) < 0) {
        munmap(start, end - start);     /* no THP in this kernel: ordinary buffers do as well */
        return NULL;
    }
    return start;
}

static void fuse_dev_huge_free(uint8_t *buf)
{
    munmap(buf, FUSE_DEV_DATA_OFF + FUSE_DEV_HUGE_SIZE);
}

/* A request to read into: with a huge-page buffer if huge and one is idle or may be made. */
static FuseDevReq *fuse_dev_req_get(FuseQueue *q, bool huge)
{
    FuseDevQueue *dq = q->transport_state;
    FuseDevReq *r = NULL;

    if (huge && dq->free_huge) {
        r = dq->free_huge;
        dq->free_huge = r->next_free;
    } else if (huge && dq->nr_huge < FUSE_DEV_HUGE_BUFS) {
        uint8_t *buf = fuse_dev_huge_alloc();

        dq->nr_huge++;                  /* tried once per slot, whether it worked or not */
        if (buf) {
            r = g_new0(FuseDevReq, 1);
            r->buf = buf;
            r->huge = true;
        }
    }
    if (!r && dq->free) {
        r = dq->free;
        dq->free = r->next_free;
        dq->nr_free--;
    } else if (!r) {
        r = g_new0(FuseDevReq, 1);
        r->buf = blk_blockalign(FUSE_DEV_BUF_SIZE);
    }
    r->req.q = q;
    r->req.ops = &fuse_transport_dev;
    return r;
}

static void fuse_dev_req_free(FuseDevReq *r)
{
    if (r->huge) {
        fuse_dev_huge_free(r->buf);
    } else {
        blk_vfree(r->buf);
    }
    g_free(r);
}

static void fuse_dev_req_put(FuseQueue *q, FuseDevReq *r)
{
    FuseDevQueue *dq = q->transport_state;

    if (r->huge) {
        r->next_free = dq->free_huge;
        dq->free_huge = r;
        return;
    }
    if (dq->nr_free >= FUSE_DEV_POOL_MAX) {
        fuse_dev_req_free(r);
        return;
    }
    r->next_free = dq->free;
    dq->free = r;
    dq->nr_free++;
}

/* --- receiving --- */

/* Read one request into r.  Returns its length, or -errno (-EAGAIN: none waiting; -ENODEV: the
 * connection is gone). */
static ssize_t fuse_dev_read_one(FuseQueue *q, FuseDevReq *r)
{
    for (;;) {
        ssize_t n = read(q->fd, r->buf + FUSE_DEV_IN_OFF, FUSE_MAX_REQ_SIZE);
        if (n >= 0) {
            return n;
        }
        /* EINTR: a signal; ENOENT: the request went away (interrupted) while being read. */
        if (errno != EINTR && errno != ENOENT) {
            return -errno;
        }
    }
}

/* Hand a request of n bytes in r to the protocol. */
static void fuse_dev_dispatch(FuseQueue *q, FuseDevReq *r, size_t n)
{
    const struct fuse_in_header *in = (const void *)(r->buf + FUSE_DEV_IN_OFF);
    FuseReq *req = &r->req;

    if (n < sizeof(*in) || in->len != n) {
        log_warning("export %s: dropped a malformed FUSE request (%zu bytes)",
                    q->exp->common.id, n);
        fuse_dev_req_put(q, r);
        return;
    }
    req->in = in;
    req->arg = in + 1;
    req->arg_len = n - sizeof(*in);
    req->payload = NULL;
    req->payload_len = 0;
    req->out_buf = r->buf + FUSE_DEV_DATA_OFF;
    req->out_cap = FUSE_MAX_IO;
    if (!fuse_dispatch(req)) {
        fuse_dev_req_put(q, r);
    }
}

/* Now and then (fuse_affinity_probe_due), before dispatching r, look whether another request
 * is already waiting: then more than one came at once, which the requests in flight do not show
 * when each is answered at once.  Returns that request, or NULL. */
static FuseDevReq *fuse_dev_probe(FuseQueue *q, FuseDevQueue *dq, ssize_t *np)
{
    FuseDevReq *r;

    if (!fuse_affinity_probe_due(q)) {
        return NULL;
    }
    r = fuse_dev_req_get(q, dq->big);
    *np = fuse_dev_read_one(q, r);
    if (*np < 0) {
        /* EAGAIN: nothing waiting.  An error shows again at the next read. */
        fuse_dev_req_put(q, r);
        return NULL;
    }
    fuse_affinity_waiting(q, 2);
    return r;
}

/* The fd is readable: read and dispatch what is waiting, a batch at a time. */
static void fuse_dev_readable(void *opaque)
{
    FuseQueue *q = opaque;
    FuseDevReq *ahead = NULL;
    ssize_t ahead_n = 0;

    for (int i = 0; i < FUSE_DEV_REQS_PER_WAKE && !q->stopping; i++) {
        FuseDevQueue *dq = q->transport_state;
        FuseDevReq *r = ahead;
        ssize_t n = ahead_n;

        if (!r) {
            r = fuse_dev_req_get(q, dq->big);
            n = fuse_dev_read_one(q, r);
        }
        ahead = NULL;
        if (n < 0) {
            fuse_dev_req_put(q, r);
            if (n != -EAGAIN) {
                /* ENODEV: unmounted or aborted; anything else ends the connection too. */
                if (n != -ENODEV) {
                    log_warning("export %s: reading /dev/fuse failed: %s", q->exp->common.id,
                                g_strerror(-n));
                }
                fuse_queue_disconnected(q);
            }
            return;
        }
        dq->big = n > FUSE_DEV_BIG_REQ;
        ahead = fuse_dev_probe(q, dq, &ahead_n);
        fuse_dev_dispatch(q, r, n);
    }
    if (ahead) {
        fuse_dev_dispatch(q, ahead, ahead_n);   /* read, so it must be answered */
    }
}

int fuse_dev_handshake(FuseExport *exp, GError **errp)
{
    FuseQueue *q = &exp->queues[0];

    fuse_dev_queue(q);
    while (!exp->got_init) {
        FuseDevReq *r = fuse_dev_req_get(q, false);
        ssize_t n = fuse_dev_read_one(q, r);

        if (n < 0) {
            fuse_dev_req_put(q, r);
            error_setg_errno(errp, -n, "%s: FUSE handshake failed", exp->common.mountpoint);
            return n;
        }
        fuse_dev_dispatch(q, r, n);
    }
    return 0;
}

/* --- the transport ops --- */

static int fuse_dev_queue_start(FuseQueue *q, GError **errp)
{
    fuse_dev_queue(q);
    aio_set_fd_handler(q->ctx, q->fd, fuse_dev_readable, NULL, q);
    return 0;
}

static void fuse_dev_queue_listen(FuseQueue *q, bool on)
{
    aio_set_fd_handler(q->ctx, q->fd, on ? fuse_dev_readable : NULL, NULL, q);
}

static void fuse_dev_queue_stop(FuseQueue *q)
{
    aio_set_fd_handler(q->ctx, q->fd, NULL, NULL, NULL);
}

static void fuse_dev_queue_cleanup(FuseQueue *q)
{
    FuseDevQueue *dq = q->transport_state;

    if (!dq) {
        return;
    }
    if (dq->pipe[0] >= 0) {
        close(dq->pipe[0]);
        close(dq->pipe[1]);
    }
    while (dq->free) {
        FuseDevReq *r = dq->free;
        dq->free = r->next_free;
        fuse_dev_req_free(r);
    }
    while (dq->free_huge) {
        FuseDevReq *r = dq->free_huge;
        dq->free_huge = r->next_free;
        fuse_dev_req_free(r);
    }
    g_free(dq);
    q->transport_state = NULL;
}

static int fuse_dev_reply(FuseReq *req, int error, const void *out_arg, size_t out_arg_len,
                          size_t out_len)
{
    FuseDevReq *r = (FuseDevReq *)req;
    FuseQueue *q = req->q;
    struct iovec iov[2] = { { &r->out, sizeof(r->out) } };
    int cnt = 1;
    int ret = 0;

    r->out.error = error;
    r->out.unique = req->in->unique;
    if (error == 0 && out_arg_len) {
        iov[cnt++] = (struct iovec){ (void *)out_arg, out_arg_len };
    } else if (error == 0 && out_len) {
        iov[cnt++] = (struct iovec){ req->out_buf, out_len };
    }
    r->out.len = sizeof(r->out) + (cnt > 1 ? iov[1].iov_len : 0);
    while (writev(q->fd, iov, cnt) < 0) {
        if (errno == EINTR) {
            continue;
        }
        ret = -errno;
        /* ENOENT: the request was interrupted; ENODEV: the connection is gone (the reader
         * sees that too).  Anything else means a reply we built wrong. */
        if (ret != -ENOENT && ret != -ENODEV) {
            log_warning("export %s: FUSE reply to request %" PRIu64 " (op %u) failed: %s",
                        q->exp->common.id, (uint64_t)req->in->unique, req->in->opcode,
                        g_strerror(-ret));
        }
        break;
    }
    fuse_dev_req_put(q, r);
    return ret;
}

/* --- splice replies --- */

/* The queue's pipe, made at the first splice reply: as large as a reply can be (header page and
 * FUSE_MAX_IO of data), or as large as this user may make it.  False if there is none. */
static bool fuse_dev_pipe(FuseQueue *q, FuseDevQueue *dq)
{
    long page = bdrv_host_page_size();
    int size;

    if (dq->pipe_data >= 0) {
        return dq->pipe_data > 0;
    }
    dq->pipe_data = 0;
    dq->splice_fault = g_getenv("BLKFUSE_SPLICE_REPLY_FAULT") != NULL;
    if (pipe2(dq->pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        log_debug("export %s: queue %u: no pipe for splice replies (%s)", q->exp->common.id,
                  q->index, g_strerror(errno));
        dq->pipe[0] = dq->pipe[1] = -1;
        return false;
    }
    size = fcntl(dq->pipe[1], F_SETPIPE_SZ, FUSE_MAX_IO + page);
    if (size < 0) {
        /* Over pipe-max-size without CAP_SYS_RESOURCE: as much as it allows, by default
         * 1 MiB; if even that fails, the pipe's own size. */
        long max = 0;
        g_autofree char *text = NULL;

        if (g_file_get_contents("/proc/sys/fs/pipe-max-size", &text, NULL, NULL)) {
            max = strtol(text, NULL, 10);
        }
        size = max > 0 ? fcntl(dq->pipe[1], F_SETPIPE_SZ, MIN(max, FUSE_MAX_IO + page)) : -1;
        if (size < 0) {
            size = fcntl(dq->pipe[1], F_GETPIPE_SZ);
        }
    }
    /* A pipe buffer per page: the header takes one, data not starting on a page one more. */
    dq->pipe_data = size > 2 * page ? size - 2 * page : 0;
    log_debug("export %s: queue %u: splice replies of up to %zd bytes", q->exp->common.id,
              q->index, dq->pipe_data);
    return dq->pipe_data > 0;
}

/* Empty the pipe (a reply that did not go out); data goes to req's buffer, then away. */
static void fuse_dev_pipe_drain(FuseDevQueue *dq, FuseReq *req)
{
    while (read(dq->pipe[0], req->out_buf, req->out_cap) > 0) {
    }
}

static int fuse_dev_splice_pipe(FuseReq *req, size_t len)
{
    FuseDevQueue *dq = req->q->transport_state;
    struct fuse_out_header out = { .len = sizeof(out) + len, .error = 0,
                                   .unique = req->in->unique };

    if (!fuse_dev_pipe(req->q, dq) || len > (size_t)dq->pipe_data || dq->pipe_busy) {
        return -ENOTSUP;
    }
    if (write(dq->pipe[1], &out, sizeof(out)) != sizeof(out)) {
        fuse_dev_pipe_drain(dq, req);
        return -EIO;
    }
    dq->pipe_busy = true;
    return dq->pipe[1];
}

static void fuse_dev_splice_cancel(FuseReq *req)
{
    FuseDevQueue *dq = req->q->transport_state;

    fuse_dev_pipe_drain(dq, req);
    dq->pipe_busy = false;
}

static int fuse_dev_splice_reply(FuseReq *req, size_t len)
{
    FuseQueue *q = req->q;
    FuseDevQueue *dq = q->transport_state;
    size_t total = sizeof(struct fuse_out_header) + len;
    ssize_t n;
    int err;

    if (G_UNLIKELY(dq->splice_fault)) {
        /* For testing: as if the kernel refused the reply (tests/export-splice.bats). */
        n = -1;
        errno = EINVAL;
    } else {
        do {
            n = splice(dq->pipe[0], NULL, q->fd, NULL, total, 0);
        } while (n < 0 && errno == EINTR);
    }
    if (n == (ssize_t)total) {
        dq->pipe_busy = false;
        fuse_dev_req_put(q, (FuseDevReq *)req);
        return 0;
    }
    err = n < 0 ? errno : EIO;
    /* Whatever the kernel left in the pipe goes. */
    fuse_dev_splice_cancel(req);
    if (err == ENOENT || err == ENODEV) {
        fuse_dev_req_put(q, (FuseDevReq *)req);     /* interrupted, or the connection is gone */
        return -err;
    }
    /* Whatever the kernel disliked, it would likely dislike again: this queue copies from
     * now on, as with -o splice-read=off. */
    log_warning("export %s: queue %u: splicing the reply to request %" PRIu64 " failed (%s); "
                "sending it as a copy, and copying every reply from now on", q->exp->common.id,
                q->index, (uint64_t)req->in->unique, n < 0 ? g_strerror(err) : "short");
    dq->pipe_data = 0;
    return -EAGAIN;
}

const FuseTransportOps fuse_transport_dev = {
    .name           = "dev",
    .queue_start    = fuse_dev_queue_start,
    .queue_listen   = fuse_dev_queue_listen,
    .queue_stop     = fuse_dev_queue_stop,
    .queue_cleanup  = fuse_dev_queue_cleanup,
    .reply          = fuse_dev_reply,
    .splice_pipe    = fuse_dev_splice_pipe,
    .splice_reply   = fuse_dev_splice_reply,
    .splice_cancel  = fuse_dev_splice_cancel,
};
