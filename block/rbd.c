/* rbd.c - the rbd protocol driver: images in a Ceph cluster through librbd's asynchronous API,
 * named "rbd:pool[/namespace]/image[@snap][:conf=PATH][:id=USER][:keyring=PATH]".
 *
 * Threads: open talks to the cluster on a worker thread (bounded by connect-timeout) while the
 * opening thread's event loop runs on; close on a thread of its own (rbd_closer).  Requests run
 * in coroutines in any I/O thread, several threads at once: each submits to librbd
 * (thread-safe) and yields; librbd calls rbd_req_aio_done on one of its own threads, which hands
 * the result back to the coroutine's home loop (aio_co_schedule).
 * Calls librbd only offers synchronously (rbd_diff_iterate2 for block status, rbd_resize) run on
 * a worker thread of this driver, so no event loop ever waits on the cluster.
 *
 * Losing the cluster: librbd waits (and retries) while an OSD is down, so each node has a
 * watchdog thread that completes requests older than reconnect-timeout with EIO.  The request
 * stays owned by librbd until its completion arrives (any data buffer is the request's own
 * bounce buffer, never the caller's), so a late completion touches only memory that is still
 * there; close waits for every completion before freeing the node.
 */
#include "config.h"
#include "block/block.h"
#include "block/aio.h"
#include "block/io-engine.h"
#include "block/util.h"

#include <rados/librados.h>
#include <rbd/librbd.h>

/*
 * librados and librbd are loaded at the first rbd: open (dlopen), not when blkfuse starts.
 * Linked in, their C++ start-up made every blkfuse command, rbd or not, about 20 ms slower: an
 * empty program linked with -lrbd -lrados took 20 ms to start here, against 1.5 ms.  The calls
 * below keep librbd's names; each goes through the pointer dlsym found.
 */
enum { RADOS, RBD };

#define RBD_LIB_FUNCS(X) \
    X(RADOS, rados_conf_get) \
    X(RADOS, rados_conf_read_file) \
    X(RADOS, rados_conf_set) \
    X(RADOS, rados_connect) \
    X(RADOS, rados_create) \
    X(RADOS, rados_ioctx_create) \
    X(RADOS, rados_ioctx_destroy) \
    X(RADOS, rados_ioctx_set_namespace) \
    X(RADOS, rados_shutdown) \
    X(RBD, rbd_aio_create_completion) \
    X(RBD, rbd_aio_discard) \
    X(RBD, rbd_aio_flush) \
    X(RBD, rbd_aio_get_return_value) \
    X(RBD, rbd_aio_read) \
    X(RBD, rbd_aio_release) \
    X(RBD, rbd_aio_write) \
    X(RBD, rbd_aio_write_zeroes) \
    X(RBD, rbd_close) \
    X(RBD, rbd_diff_iterate2) \
    X(RBD, rbd_features_to_string) \
    X(RBD, rbd_get_features) \
    X(RBD, rbd_get_flags) \
    X(RBD, rbd_get_size) \
    X(RBD, rbd_get_stripe_count) \
    X(RBD, rbd_open) \
    X(RBD, rbd_open_read_only) \
    X(RBD, rbd_resize2)

static struct {
#define X(lib, name) __typeof__(name) *name;
    RBD_LIB_FUNCS(X)
#undef X
} rbdlib;

static const char *const rbdlib_names[] = { [RADOS] = "librados.so.2", [RBD] = "librbd.so.1" };

static const LibSym rbdlib_syms[] = {
#define X(lib, name) { lib, #name, (void **)&rbdlib.name },
    RBD_LIB_FUNCS(X)
#undef X
};

static LibLoader rbdlib_loader = {
    .driver = "rbd",
    .sonames = rbdlib_names,
    .nlibs = G_N_ELEMENTS(rbdlib_names),
    .syms = rbdlib_syms,
    .nsyms = G_N_ELEMENTS(rbdlib_syms),
    .install_hint = "Debian: librbd1, Ceph 15 or later",
    .once = G_ONCE_INIT,
};

#define rados_conf_get (*rbdlib.rados_conf_get)
#define rados_conf_read_file (*rbdlib.rados_conf_read_file)
#define rados_conf_set (*rbdlib.rados_conf_set)
#define rados_connect (*rbdlib.rados_connect)
#define rados_create (*rbdlib.rados_create)
#define rados_ioctx_create (*rbdlib.rados_ioctx_create)
#define rados_ioctx_destroy (*rbdlib.rados_ioctx_destroy)
#define rados_ioctx_set_namespace (*rbdlib.rados_ioctx_set_namespace)
#define rados_shutdown (*rbdlib.rados_shutdown)
#define rbd_aio_create_completion (*rbdlib.rbd_aio_create_completion)
#define rbd_aio_discard (*rbdlib.rbd_aio_discard)
#define rbd_aio_flush (*rbdlib.rbd_aio_flush)
#define rbd_aio_get_return_value (*rbdlib.rbd_aio_get_return_value)
#define rbd_aio_read (*rbdlib.rbd_aio_read)
#define rbd_aio_release (*rbdlib.rbd_aio_release)
#define rbd_aio_write (*rbdlib.rbd_aio_write)
#define rbd_aio_write_zeroes (*rbdlib.rbd_aio_write_zeroes)
#define rbd_close (*rbdlib.rbd_close)
#define rbd_diff_iterate2 (*rbdlib.rbd_diff_iterate2)
#define rbd_features_to_string (*rbdlib.rbd_features_to_string)
#define rbd_get_features (*rbdlib.rbd_get_features)
#define rbd_get_flags (*rbdlib.rbd_get_flags)
#define rbd_get_size (*rbdlib.rbd_get_size)
#define rbd_get_stripe_count (*rbdlib.rbd_get_stripe_count)
#define rbd_open (*rbdlib.rbd_open)
#define rbd_open_read_only (*rbdlib.rbd_open_read_only)
#define rbd_resize2 (*rbdlib.rbd_resize2)

#define RBD_DEFAULT_RECONNECT_TIMEOUT 30
#define RBD_DEFAULT_CONNECT_TIMEOUT   10
#define RBD_TIMEOUT_MAX               (24 * 3600)

typedef enum {
    RBD_OP_READ,
    RBD_OP_WRITE,
    RBD_OP_FLUSH,
    RBD_OP_DISCARD,
    RBD_OP_ZEROES,
    RBD_OP_ZEROES_THICK,
    RBD_OP_WORKER,              /* a synchronous librbd call on a worker thread */
} RBDOp;

typedef struct BDRVRBDState BDRVRBDState;
typedef struct RBDReq RBDReq;
typedef int64_t RBDWorkerFunc(BDRVRBDState *s, RBDReq *req);

struct RBDReq {
    BDRVRBDState *s;
    Coroutine *co;
    AioContext *ctx;
    RBDOp op;
    uint64_t offset;
    uint64_t bytes;
    void *buf;                  /* bounce buffer (reads and writes), freed with the request */
    int64_t deadline_us;        /* g_get_monotonic_time() after which the request fails */
    GList link;                 /* in s->inflight while nobody has answered the coroutine */
    bool answered;              /* under s->lock: the coroutine has its result (or will) */
    int64_t ret;                /* the result the coroutine sees */
    int refs;                   /* atomic: the coroutine's and librbd's (or the worker's) */

    /* RBD_OP_WORKER */
    RBDWorkerFunc *fn;
    int64_t status_end;         /* block status: end of the extent found */
    bool status_data;           /* block status: that extent holds data */
};

struct BDRVRBDState {
    rados_t cluster;
    rados_ioctx_t io;
    rbd_image_t image;
    char *pool;
    char *nspace;               /* RADOS namespace, or NULL */
    char *name;
    char *snap;                 /* snapshot, or NULL */
    char *conf;                 /* configuration file given in the name, or NULL */
    char *user;                 /* client id (without "client."), or NULL */
    char *keyring;              /* keyring file given in the name, or NULL */
    char *mon_host;             /* monitors, as the configuration names them */
    int64_t size;               /* atomic: the image size */
    uint64_t features;
    int64_t timeout_us;         /* reconnect-timeout */
    int64_t connect_timeout;    /* seconds */
    bool diff_usable;           /* block status may ask the object map (fast-diff, no fancy
                                 * striping: rbd_diff_iterate2 reports extents in order) */
    CoMutex resize_lock;        /* one resize at a time */
    int64_t allocated;          /* atomic: bytes in existing objects (object map), or -ENOTSUP */

    GMutex lock;                /* protects what follows */
    GCond cond;
    GQueue inflight;            /* RBDReq, oldest (first deadline) first */
    unsigned pending;           /* requests librbd or a worker still owns */
    bool stopping;
    bool closed;                /* the closer thread has closed the image */
    bool abandoned;             /* close stopped waiting for it: the closer frees the state */
    bool outage;                /* requests have timed out since the last success */
    uint64_t timeouts;          /* requests failed by the watchdog, in all */
    bool refreshing;            /* a background job updates allocated */
    int64_t allocated_at;       /* g_get_monotonic_time() of the last update */
    GThread *watchdog;
};

/* The node's state is its own allocation (bs->opaque points to it), so that it can outlive
 * the node when the cluster is gone at close: see rbd_close_node. */
static inline BDRVRBDState *rbd_state(BlockDriverState *bs)
{
    return *(BDRVRBDState **)bs->opaque;
}

/* One pool of worker threads for the synchronous librbd calls of every rbd node. */
static GThreadPool *rbd_workers;
static GOnce rbd_workers_once = G_ONCE_INIT;

/* --- requests --------------------------------------------------------------------------- */

static void rbd_req_unref(RBDReq *req)
{
    if (__atomic_sub_fetch(&req->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        g_free(req->buf);
        g_free(req);
    }
}

/* Answer the coroutine waiting for req (the caller holds s->lock). */
static void rbd_req_answer_locked(RBDReq *req, int64_t ret)
{
    req->answered = true;
    req->ret = ret;
    g_queue_unlink(&req->s->inflight, &req->link);
    aio_co_schedule(req->ctx, req->co);
}

/*
 * librbd (or a worker) is done with req, with result ret: answer the coroutine unless the
 * watchdog already has, and drop librbd's reference.  Any thread.
 */
static void rbd_req_done(RBDReq *req, int64_t ret)
{
    BDRVRBDState *s = req->s;

    g_mutex_lock(&s->lock);
    if (!req->co) {             /* a background job: nobody waits for it */
        s->refreshing = false;
    } else if (!req->answered) {
        /* Writes may be acknowledged by librbd's cache alone: only a read or a flush says
         * that the OSDs answer again. */
        if (s->outage && ret >= 0 && (req->op == RBD_OP_READ || req->op == RBD_OP_FLUSH)) {
            s->outage = false;
            log_info("rbd:%s/%s: the cluster answers again", s->pool, s->name);
        }
        rbd_req_answer_locked(req, ret);
    }
    if (--s->pending == 0 && s->stopping) {
        g_cond_broadcast(&s->cond);
    }
    g_mutex_unlock(&s->lock);
    rbd_req_unref(req);
}

static void rbd_req_aio_done(rbd_completion_t c, void *opaque)
{
    RBDReq *req = opaque;
    ssize_t ret = rbd_aio_get_return_value(c);

    rbd_aio_release(c);
    rbd_req_done(req, ret);
}

static void rbd_worker_run(gpointer data, gpointer unused)
{
    RBDReq *req = data;

    rbd_req_done(req, req->fn(req->s, req));
}

static gpointer rbd_workers_init(gpointer unused)
{
    g_autoptr(GError) err = NULL;
    GThreadPool *p = g_thread_pool_new(rbd_worker_run, NULL, 8, false, &err);

    if (!p) {
        g_error("cannot create the rbd worker threads: %s", err->message);
    }
    return p;
}

/* The watchdog: fail requests past their deadline with EIO.  One thread per node. */
static gpointer rbd_watchdog(gpointer opaque)
{
    BDRVRBDState *s = opaque;

    g_mutex_lock(&s->lock);
    while (!s->stopping) {
        int64_t now = g_get_monotonic_time();
        int64_t wake = now + s->timeout_us;
        unsigned failed = 0;

        while (s->inflight.head) {
            RBDReq *req = s->inflight.head->data;
            if (req->deadline_us > now) {
                wake = req->deadline_us;
                break;
            }
            rbd_req_answer_locked(req, -EIO);
            failed++;
        }
        if (failed) {
            s->timeouts += failed;
            if (!s->outage) {
                s->outage = true;
                log_warning("rbd:%s/%s: the cluster did not answer within %" G_GINT64_FORMAT
                            " s (reconnect-timeout): requests fail with EIO until it is back",
                            s->pool, s->name, s->timeout_us / G_USEC_PER_SEC);
            }
        }
        g_cond_wait_until(&s->cond, &s->lock, wake);
    }
    g_mutex_unlock(&s->lock);
    return NULL;
}

static RBDReq *rbd_req_new(BDRVRBDState *s, RBDOp op, uint64_t offset, uint64_t bytes)
{
    RBDReq *req = g_new0(RBDReq, 1);

    req->s = s;
    req->co = coroutine_self();
    req->ctx = coroutine_get_context(req->co);
    req->op = op;
    req->offset = offset;
    req->bytes = bytes;
    req->refs = 2;
    req->link.data = req;
    return req;
}

/* Start req in librbd; returns 0, or -errno when librbd refused it (nothing in flight then). */
static int rbd_req_submit(BDRVRBDState *s, RBDReq *req)
{
    rbd_completion_t c;
    int ret;

    if (req->op == RBD_OP_WORKER) {
        g_autoptr(GError) err = NULL;
        rbd_workers = g_once(&rbd_workers_once, rbd_workers_init, NULL);
        return g_thread_pool_push(rbd_workers, req, &err) ? 0 : -EAGAIN;
    }
    ret = rbd_aio_create_completion(req, rbd_req_aio_done, &c);
    if (ret < 0) {
        return ret;
    }
    switch (req->op) {
    case RBD_OP_READ:
        ret = rbd_aio_read(s->image, req->offset, req->bytes, req->buf, c);
        break;
    case RBD_OP_WRITE:
        ret = rbd_aio_write(s->image, req->offset, req->bytes, req->buf, c);
        break;
    case RBD_OP_FLUSH:
        ret = rbd_aio_flush(s->image, c);
        break;
    case RBD_OP_DISCARD:
        ret = rbd_aio_discard(s->image, req->offset, req->bytes, c);
        break;
    case RBD_OP_ZEROES:
        ret = rbd_aio_write_zeroes(s->image, req->offset, req->bytes, c, 0, 0);
        break;
    case RBD_OP_ZEROES_THICK:
        ret = rbd_aio_write_zeroes(s->image, req->offset, req->bytes, c,
                                   RBD_WRITE_ZEROES_FLAG_THICK_PROVISION, 0);
        break;
    default:
        g_assert_not_reached();
    }
    if (ret < 0) {
        rbd_aio_release(c);
    }
    return ret;
}

/*
 * Run req and wait for its result: librbd's, or -EIO from the watchdog after reconnect-timeout.
 * The caller keeps its reference (drop it with rbd_req_unref).  Returns the result (>= 0) or
 * -errno.
 */
static int64_t coroutine_fn rbd_req_run(BDRVRBDState *s, RBDReq *req)
{
    int64_t ret;

    req->deadline_us = g_get_monotonic_time() + s->timeout_us;
    g_mutex_lock(&s->lock);
    g_queue_push_tail_link(&s->inflight, &req->link);
    s->pending++;
    g_mutex_unlock(&s->lock);

    ret = rbd_req_submit(s, req);
    if (ret < 0) {
        bool woken;

        g_mutex_lock(&s->lock);
        woken = req->answered;  /* the watchdog failed it while librbd held the submitter */
        if (!woken) {
            req->answered = true;
            g_queue_unlink(&s->inflight, &req->link);
        }
        if (--s->pending == 0 && s->stopping) {
            g_cond_broadcast(&s->cond);
        }
        g_mutex_unlock(&s->lock);
        if (woken) {
            coroutine_yield();  /* take the wake-up it scheduled */
        }
        rbd_req_unref(req);     /* librbd's reference: it never took the request */
        return ret;
    }
    coroutine_yield();
    return req->ret;
}

static int64_t rbd_getlength(BlockDriverState *bs)
{
    BDRVRBDState *s = rbd_state(bs);

    return __atomic_load_n(&s->size, __ATOMIC_RELAXED);
}

static int rbd_progress_ignore(uint64_t offset, uint64_t total, void *opaque)
{
    return 0;
}

/* Worker: resize the image to req->offset bytes. */
static int64_t rbd_worker_resize(BDRVRBDState *s, RBDReq *req)
{
    int ret = rbd_resize2(s->image, req->offset, true, rbd_progress_ignore, NULL);

    if (ret == 0) {
        __atomic_store_n(&s->size, req->offset, __ATOMIC_RELAXED);
    }
    return ret;
}

/* Resize to size bytes (only growing when grow_only); returns 0 or -errno. */
static int coroutine_fn rbd_co_resize(BDRVRBDState *s, int64_t size, bool grow_only)
{
    RBDReq *req;
    int64_t ret = 0;

    co_mutex_lock(&s->resize_lock);
    if (!grow_only || size > __atomic_load_n(&s->size, __ATOMIC_RELAXED)) {
        req = rbd_req_new(s, RBD_OP_WORKER, size, 0);
        req->fn = rbd_worker_resize;
        ret = rbd_req_run(s, req);
        rbd_req_unref(req);
    }
    co_mutex_unlock(&s->resize_lock);
    return ret < 0 ? ret : 0;
}

/* rbd_diff_iterate2 callback: add up the extents that exist. */
static int rbd_diff_sum(uint64_t off, size_t len, int exists, void *opaque)
{
    if (exists) {
        *(int64_t *)opaque += len;
    }
    return 0;
}

/* Bytes in the image's existing objects, from the object map; -ENOTSUP when it cannot tell.
 * Talks to librbd synchronously: open or a worker thread. */
static int64_t rbd_count_allocated(BDRVRBDState *s)
{
    uint64_t flags;
    int64_t sum = 0;

    if (!s->diff_usable || rbd_get_flags(s->image, &flags) < 0 ||
        (flags & (RBD_FLAG_OBJECT_MAP_INVALID | RBD_FLAG_FAST_DIFF_INVALID)) ||
        rbd_diff_iterate2(s->image, NULL, 0, __atomic_load_n(&s->size, __ATOMIC_RELAXED), 1, 1,
                          rbd_diff_sum, &sum) < 0) {
        return -ENOTSUP;
    }
    return sum;
}

static int64_t rbd_worker_count_allocated(BDRVRBDState *s, RBDReq *req)
{
    __atomic_store_n(&s->allocated, rbd_count_allocated(s), __ATOMIC_RELAXED);
    return 0;
}

/*
 * st_blocks: what the object map said last time; asking again (on a worker thread) when that
 * is more than a second old, so that the next stat sees writes and discards.  Any thread, never
 * waits for the cluster.
 */
static int64_t rbd_get_allocated_file_size(BlockDriverState *bs)
{
    BDRVRBDState *s = rbd_state(bs);
    int64_t now = g_get_monotonic_time();
    RBDReq *req = NULL;

    if (!s->diff_usable) {
        return -ENOTSUP;
    }
    g_mutex_lock(&s->lock);
    if (!s->refreshing && !s->stopping && now - s->allocated_at > G_USEC_PER_SEC) {
        s->refreshing = true;
        s->allocated_at = now;
        s->pending++;
        req = g_new0(RBDReq, 1);
        req->s = s;
        req->op = RBD_OP_WORKER;
        req->fn = rbd_worker_count_allocated;
        req->refs = 1;
    }
    g_mutex_unlock(&s->lock);
    if (req) {
        rbd_workers = g_once(&rbd_workers_once, rbd_workers_init, NULL);
        if (!g_thread_pool_push(rbd_workers, req, NULL)) {
            rbd_req_done(req, -EAGAIN);
        }
    }
    return __atomic_load_n(&s->allocated, __ATOMIC_RELAXED);
}

/* --- I/O ---------------------------------------------------------------------------------- */

static int coroutine_fn rbd_co_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                     void *buf, BdrvRequestFlags flags)
{
    BDRVRBDState *s = rbd_state(bs);
    RBDReq *req = rbd_req_new(s, RBD_OP_READ, offset, bytes);
    int64_t ret;

    req->buf = g_try_malloc(bytes);
    if (!req->buf) {
        g_free(req);
        return -ENOMEM;
    }
    ret = rbd_req_run(s, req);
    if (ret >= 0) {
        /* librbd reads whole requests inside the image; a shorter answer (the image shrank
         * under us) reads as zeros past it. */
        ret = MIN(ret, bytes);
        memcpy(buf, req->buf, ret);
        memset((char *)buf + ret, 0, bytes - ret);
    }
    rbd_req_unref(req);
    return ret < 0 ? ret : 0;
}

/* Run an operation that brings no data back; returns 0 or -errno. */
static int coroutine_fn rbd_co_run_simple(BDRVRBDState *s, RBDReq *req)
{
    int64_t ret = rbd_req_run(s, req);

    rbd_req_unref(req);
    return ret < 0 ? ret : 0;
}

static int coroutine_fn rbd_co_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      const void *buf, BdrvRequestFlags flags)
{
    BDRVRBDState *s = rbd_state(bs);
    RBDReq *req;

    /* The image does not grow by writing past its end: the backend grows it first (truncate)
     * for growable exports; io.c only lets a write end past the end in that case. */
    if (offset + bytes > rbd_getlength(bs)) {
        int ret = rbd_co_resize(s, offset + bytes, true);
        if (ret < 0) {
            return ret;
        }
    }
    req = rbd_req_new(s, RBD_OP_WRITE, offset, bytes);
    req->buf = g_try_malloc(bytes);
    if (!req->buf) {
        g_free(req);
        return -ENOMEM;
    }
    memcpy(req->buf, buf, bytes);
    return rbd_co_run_simple(s, req);
}

static int coroutine_fn rbd_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, BdrvRequestFlags flags)
{
    BDRVRBDState *s = rbd_state(bs);

    /* Without MAY_UNMAP the range must stay allocated: thick-provisioned zeros. */
    return rbd_co_run_simple(s, rbd_req_new(s, (flags & BDRV_REQ_MAY_UNMAP) ? RBD_OP_ZEROES :
                                            RBD_OP_ZEROES_THICK, offset, bytes));
}

static int coroutine_fn rbd_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVRBDState *s = rbd_state(bs);

    return rbd_co_run_simple(s, rbd_req_new(s, RBD_OP_DISCARD, offset, bytes));
}

static int coroutine_fn rbd_co_flush(BlockDriverState *bs)
{
    BDRVRBDState *s = rbd_state(bs);

    return rbd_co_run_simple(s, rbd_req_new(s, RBD_OP_FLUSH, 0, 0));
}

static int coroutine_fn rbd_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                        PreallocMode prealloc, GError **errp)
{
    BDRVRBDState *s = rbd_state(bs);
    int ret;

    if (prealloc != PREALLOC_MODE_OFF) {
        g_set_error(errp, BLK_ERROR, ENOTSUP, "%s: rbd images cannot be preallocated",
                    bs->filename);
        return -ENOTSUP;
    }
    ret = rbd_co_resize(s, offset, false);
    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: cannot resize to %" G_GINT64_FORMAT " bytes",
                         bs->filename, offset);
    }
    return ret;
}

/* rbd_diff_iterate2 callback: find the extent that starts at req->offset (extents come in
 * order; whole objects, so the first may start before it). */
static int rbd_diff_extent(uint64_t off, size_t len, int exists, void *opaque)
{
    RBDReq *req = opaque;
    uint64_t end = off + len;

    if (!exists || end <= req->offset) {
        return 0;
    }
    if (!req->status_end) {
        req->status_data = off <= req->offset;
        req->status_end = req->status_data ? end : off;
        return req->status_data ? 0 : -ECANCELED;
    }
    if (off > (uint64_t)req->status_end) {
        return -ECANCELED;      /* a hole after the data extent */
    }
    req->status_end = MAX((uint64_t)req->status_end, end);
    return 0;
}

/* Worker: the allocation status at req->offset, from the object map.  Returns 1 when it has
 * an answer in req->status_*, 0 when the object map cannot tell (all data), or -errno. */
static int64_t rbd_worker_block_status(BDRVRBDState *s, RBDReq *req)
{
    uint64_t flags;
    int ret = rbd_get_flags(s->image, &flags);

    if (ret < 0) {
        return ret;
    }
    if (flags & (RBD_FLAG_OBJECT_MAP_INVALID | RBD_FLAG_FAST_DIFF_INVALID)) {
        return 0;
    }
    ret = rbd_diff_iterate2(s->image, NULL, req->offset, req->bytes, 1, 1, rbd_diff_extent,
                            req);
    if (ret < 0 && ret != -ECANCELED) {
        return ret;
    }
    if (!req->status_end) {     /* no object in the range */
        req->status_data = false;
        req->status_end = req->offset + req->bytes;
    }
    return 1;
}

static int coroutine_fn rbd_co_block_status(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes, int64_t *pnum, int64_t *map,
                                            BlockDriverState **file)
{
    BDRVRBDState *s = rbd_state(bs);
    RBDReq *req;
    int64_t ret;
    bool data = true;

    *pnum = bytes;
    *map = offset;
    *file = bs;
    if (!s->diff_usable) {
        return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
    }
    req = rbd_req_new(s, RBD_OP_WORKER, offset, bytes);
    req->fn = rbd_worker_block_status;
    ret = rbd_req_run(s, req);
    if (ret == 1) {
        data = req->status_data;
        *pnum = MIN(bytes, MAX(req->status_end - offset, 1));
    }
    rbd_req_unref(req);
    if (ret < 0) {
        return ret;
    }
    return (data ? BDRV_BLOCK_DATA : BDRV_BLOCK_ZERO) | BDRV_BLOCK_OFFSET_VALID;
}

/* --- opening and closing -------------------------------------------------------------------- */

/* Parse "rbd:pool[/namespace]/image[@snap][:key=value...]" into s.  Keys: conf, id, keyring. */
static bool rbd_parse_filename(BDRVRBDState *s, const char *filename, GError **errp)
{
    const char *spec = filename + strlen("rbd:");
    g_auto(GStrv) parts = g_strsplit(spec, ":", -1);
    g_auto(GStrv) path = NULL;
    char *at;
    guint n;

    if (!parts[0] || !*parts[0]) {
        error_setg(errp, "%s: expected rbd:POOL/IMAGE[@SNAPSHOT][:conf=PATH][:id=USER]",
                   filename);
        return false;
    }
    path = g_strsplit(parts[0], "/", -1);
    n = g_strv_length(path);
    if (n < 2 || n > 3) {
        error_setg(errp, "%s: expected rbd:POOL/IMAGE or rbd:POOL/NAMESPACE/IMAGE", filename);
        return false;
    }
    s->pool = g_strdup(path[0]);
    s->nspace = n == 3 ? g_strdup(path[1]) : NULL;
    s->name = g_strdup(path[n - 1]);
    at = strchr(s->name, '@');
    if (at) {
        s->snap = g_strdup(at + 1);
        *at = '\0';
    }
    if (!*s->pool || !*s->name || (s->nspace && !*s->nspace) || (s->snap && !*s->snap)) {
        error_setg(errp, "%s: empty pool, namespace, image or snapshot name", filename);
        return false;
    }
    for (char **p = parts + 1; *p; p++) {
        char *eq = strchr(*p, '=');
        g_autofree char *key = eq ? g_strndup(*p, eq - *p) : g_strdup(*p);
        const char *value = eq ? eq + 1 : "";

        if (!eq || !*value) {
            error_setg(errp, "%s: expected KEY=VALUE after ':', not '%s'", filename, *p);
            return false;
        }
        if (!strcmp(key, "conf")) {
            g_free(s->conf);
            s->conf = g_strdup(value);
        } else if (!strcmp(key, "id")) {
            g_free(s->user);
            s->user = g_strdup(value);
        } else if (!strcmp(key, "keyring")) {
            g_free(s->keyring);
            s->keyring = g_strdup(value);
        } else if (!strcmp(key, "key") || !strcmp(key, "password-secret")) {
            error_setg(errp, "rbd:%s/%s: keys are not taken from the image name (it shows in "
                       "logs and 'blkfuse list'): name a keyring file with :keyring=PATH or in "
                       "the Ceph configuration", s->pool, s->name);
            return false;
        } else {
            error_setg(errp, "%s: unknown rbd option '%s' (known: conf, id, keyring)", filename,
                       key);
            return false;
        }
    }
    return true;
}

/* Take option key (whole seconds, 1 to RBD_TIMEOUT_MAX) from opts into *out. */
static bool rbd_take_seconds(BlockDriverState *bs, BlockOptions *opts, const char *key,
                             int64_t *out, GError **errp)
{
    g_autofree char *v = block_options_take(opts, key);
    char *end;
    long long n;

    if (!v) {
        return true;
    }
    errno = 0;
    n = strtoll(v, &end, 10);
    if (errno || end == v || *end || n < 1 || n > RBD_TIMEOUT_MAX) {
        error_setg(errp, "%s: option %s needs whole seconds from 1 to %d, not '%s'",
                   bs->filename, key, RBD_TIMEOUT_MAX, v);
        return false;
    }
    *out = n;
    return true;
}

static int rbd_conf_set(BDRVRBDState *s, const char *key, const char *value,
                        const char *filename, GError **errp)
{
    int ret = rados_conf_set(s->cluster, key, value);

    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: cannot set the Ceph option %s=%s", filename, key, value);
    }
    return ret;
}

/* Set up the cluster handle: configuration file, user, keyring, timeouts. */
static int rbd_configure(BlockDriverState *bs, int flags, GError **errp)
{
    BDRVRBDState *s = rbd_state(bs);
    g_autofree char *mount_timeout = g_strdup_printf("%" G_GINT64_FORMAT, s->connect_timeout);
    /* librbd waits forever for an OSD that is down; this bounds how long its requests stay
     * in flight after the driver has failed them (close waits for them), well after
     * reconnect-timeout so that a cluster that comes back in time finishes them normally. */
    g_autofree char *op_timeout = g_strdup_printf("%" G_GINT64_FORMAT,
                                                  MAX(2 * s->timeout_us / G_USEC_PER_SEC, 30));
    char mon_host[1024] = "";
    int ret;

    ret = rados_create(&s->cluster, s->user);
    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: cannot create the Ceph client", bs->filename);
        return ret;
    }
    ret = rados_conf_read_file(s->cluster, s->conf);
    if (ret < 0 && s->conf) {
        error_setg_errno(errp, ret, "%s: cannot read the Ceph configuration %s", bs->filename,
                         s->conf);
        return ret;
    }
    if ((s->keyring && rbd_conf_set(s, "keyring", s->keyring, bs->filename, errp) < 0) ||
        rbd_conf_set(s, "client_mount_timeout", mount_timeout, bs->filename, errp) < 0 ||
        rbd_conf_set(s, "rados_osd_op_timeout", op_timeout, bs->filename, errp) < 0 ||
        /* (the default, said out loud) rbd_aio_* queue the request and return at once */
        rbd_conf_set(s, "rbd_non_blocking_aio", "true", bs->filename, errp) < 0 ||
        ((flags & BDRV_O_NOCACHE) &&
         rbd_conf_set(s, "rbd_cache", "false", bs->filename, errp) < 0)) {
        return -EINVAL;
    }
    if (rados_conf_get(s->cluster, "mon_host", mon_host, sizeof(mon_host)) < 0 || !*mon_host) {
        error_setg(errp, "%s: no Ceph monitor address: name a configuration with :conf=PATH "
                   "(default /etc/ceph/ceph.conf) that sets mon_host", bs->filename);
        return -EINVAL;
    }
    s->mon_host = g_strdup(mon_host);
    return 0;
}

/* Connect to the cluster, within connect-timeout. */
static int rbd_connect(BlockDriverState *bs, GError **errp)
{
    BDRVRBDState *s = rbd_state(bs);
    int ret = rados_connect(s->cluster);

    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: cannot connect to the Ceph monitors at %s (%s) within "
                         "%" G_GINT64_FORMAT " s (connect-timeout)", bs->filename, s->mon_host,
                         s->conf ? s->conf : "default configuration", s->connect_timeout);
        return ret;
    }
    ret = rados_ioctx_create(s->cluster, s->pool, &s->io);
    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: cannot open the pool '%s'", bs->filename, s->pool);
        return ret;
    }
    if (s->nspace) {
        rados_ioctx_set_namespace(s->io, s->nspace);
    }
    return 0;
}

/* Open the image (its snapshot read-only) and learn its size and features. */
static int rbd_open_image(BlockDriverState *bs, int flags, GError **errp)
{
    BDRVRBDState *s = rbd_state(bs);
    uint64_t size, stripe_count = 1;
    int ret;

    if (s->snap && (flags & BDRV_O_RDWR)) {
        g_set_error(errp, BLK_ERROR, EROFS, "%s: RBD snapshot '%s' can only be opened "
                    "read-only (mount it with --read-only)", bs->filename, s->snap);
        return -EROFS;
    }
    if (flags & BDRV_O_RDWR) {
        ret = rbd_open(s->io, s->name, &s->image, NULL);
    } else {
        ret = rbd_open_read_only(s->io, s->name, &s->image, s->snap);
    }
    if (ret < 0) {
        s->image = NULL;
        if (ret == -ENOENT && s->snap) {
            error_setg_errno(errp, ret, "%s: cannot open image '%s' or its snapshot '%s' in pool "
                             "'%s'", bs->filename, s->name, s->snap, s->pool);
        } else {
            error_setg_errno(errp, ret, "%s: cannot open image '%s' in pool '%s'", bs->filename,
                             s->name, s->pool);
        }
        return ret;
    }
    ret = rbd_get_size(s->image, &size);
    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: cannot get the image size", bs->filename);
        return ret;
    }
    s->size = size;
    rbd_get_features(s->image, &s->features);
    rbd_get_stripe_count(s->image, &stripe_count);
    s->diff_usable = (s->features & RBD_FEATURE_FAST_DIFF) && stripe_count <= 1;
    s->allocated = rbd_count_allocated(s);
    s->allocated_at = g_get_monotonic_time();
    return 0;
}

/* Close the image, the pool's context and the connection, whichever are open.  Waits for the
 * cluster: never in an event loop's thread once the image is open (see rbd_closer). */
static void rbd_disconnect(BDRVRBDState *s)
{
    if (s->image) {
        rbd_close(s->image);
        s->image = NULL;
    }
    if (s->io) {
        rados_ioctx_destroy(s->io);
        s->io = NULL;
    }
    if (s->cluster) {
        rados_shutdown(s->cluster);
        s->cluster = NULL;
    }
}

/* Free s: rbd_disconnect first (rbd_closer did, or the open failed before anything was in
 * flight). */
static void rbd_free_state(BDRVRBDState *s)
{
    rbd_disconnect(s);
    co_mutex_destroy(&s->resize_lock);
    g_mutex_clear(&s->lock);
    g_cond_clear(&s->cond);
    g_free(s->pool);
    g_free(s->nspace);
    g_free(s->name);
    g_free(s->snap);
    g_free(s->conf);
    g_free(s->user);
    g_free(s->keyring);
    g_free(s->mon_host);
    g_free(s);
}

typedef struct RBDOpenJob {
    BlockDriverState *bs;
    int flags;
    GError *err;
    int ret;
} RBDOpenJob;

/* A worker thread: everything of the open that waits for the disk or the cluster (loading the
 * libraries, reading the configuration, rados_connect for up to connect-timeout, rbd_open, the
 * object map for st_blocks). */
static int rbd_open_blocking(void *opaque)
{
    RBDOpenJob *job = opaque;
    int ret;

    if (!load_libraries(&rbdlib_loader, &job->err)) {
        return -ENOTSUP;
    }
    ret = rbd_configure(job->bs, job->flags, &job->err);
    if (ret == 0) {
        ret = rbd_connect(job->bs, &job->err);
    }
    if (ret == 0) {
        ret = rbd_open_image(job->bs, job->flags, &job->err);
    }
    return ret;
}

static void coroutine_fn rbd_open_co(void *opaque)
{
    RBDOpenJob *job = opaque;

    job->ret = thread_pool_run(rbd_open_blocking, job);
}

/*
 * Connect and open the image on a worker thread while the calling thread's event loop runs on:
 * the other exports' work that the loop carries (the main loop is the home of NBD connections
 * and of reconnections) goes on during a connect that may last connect-timeout.
 */
static int rbd_open_off_loop(BlockDriverState *bs, int flags, GError **errp)
{
    RBDOpenJob job = { .bs = bs, .flags = flags };

    if (in_coroutine()) {
        rbd_open_co(&job);              /* a backing file opened by a format's coroutine */
    } else {
        aio_run_coroutine(rbd_open_co, &job);
    }
    if (job.err) {
        g_propagate_error(errp, job.err);
    }
    return job.ret;
}

static int rbd_open_node(BlockDriverState *bs, BlockOptions *opts, int flags, GError **errp)
{
    BDRVRBDState *s = g_new0(BDRVRBDState, 1);
    int64_t timeout = RBD_DEFAULT_RECONNECT_TIMEOUT;
    int ret;

    *(BDRVRBDState **)bs->opaque = s;

    g_mutex_init(&s->lock);
    g_cond_init(&s->cond);
    co_mutex_init(&s->resize_lock);
    g_queue_init(&s->inflight);
    s->connect_timeout = RBD_DEFAULT_CONNECT_TIMEOUT;
    if (!rbd_parse_filename(s, bs->filename, errp) ||
        !rbd_take_seconds(bs, opts, "reconnect-timeout", &timeout, errp) ||
        !rbd_take_seconds(bs, opts, "connect-timeout", &s->connect_timeout, errp)) {
        ret = -EINVAL;
        goto fail;
    }
    s->timeout_us = timeout * G_USEC_PER_SEC;
    ret = rbd_open_off_loop(bs, flags, errp);
    if (ret < 0) {
        goto fail;
    }
    s->watchdog = g_thread_new("rbd-watchdog", rbd_watchdog, s);
    return 0;

fail:
    *(BDRVRBDState **)bs->opaque = NULL;
    rbd_free_state(s);
    return ret;
}

/*
 * The closer thread: wait until librbd and the workers have let go of every request (those the
 * watchdog failed too), then close the image and the connection, which also needs the cluster.
 * Frees the state itself when close gave up waiting for it.
 */
static gpointer rbd_closer(gpointer opaque)
{
    BDRVRBDState *s = opaque;
    bool abandoned;

    g_mutex_lock(&s->lock);
    while (s->pending) {
        g_cond_wait(&s->cond, &s->lock);
    }
    g_mutex_unlock(&s->lock);
    rbd_disconnect(s);

    g_mutex_lock(&s->lock);
    s->closed = true;
    abandoned = s->abandoned;
    g_cond_broadcast(&s->cond);
    g_mutex_unlock(&s->lock);
    if (abandoned) {
        rbd_free_state(s);
    }
    return NULL;
}

/*
 * Close: stop the watchdog, then close in a thread of its own, waiting for it at most
 * reconnect-timeout.  A cluster that is gone would keep rbd_close (and requests the watchdog
 * failed) waiting for good; then the node goes away without it, and the closer finishes (and
 * frees the state) if the cluster comes back, or the process exits first.
 */
static void rbd_close_node(BlockDriverState *bs)
{
    BDRVRBDState *s = rbd_state(bs);
    GThread *closer;
    int64_t deadline = g_get_monotonic_time() + s->timeout_us;
    bool closed = true;

    g_mutex_lock(&s->lock);
    s->stopping = true;
    g_cond_broadcast(&s->cond);
    g_mutex_unlock(&s->lock);
    g_thread_join(s->watchdog);

    closer = g_thread_new("rbd-close", rbd_closer, s);
    g_mutex_lock(&s->lock);
    while (!s->closed && closed) {
        closed = g_cond_wait_until(&s->cond, &s->lock, deadline) || s->closed;
    }
    if (!s->closed) {
        s->abandoned = true;
        log_warning("rbd:%s/%s: the cluster did not answer at close (%u requests in flight): "
                    "leaving the image to close when it is back", s->pool, s->name, s->pending);
    }
    closed = s->closed;
    g_mutex_unlock(&s->lock);
    if (closed) {
        g_thread_join(closer);
        rbd_free_state(s);
    } else {
        g_thread_unref(closer);
    }
}

/* "key: value" lines for info and list (the keys of "remote" in their JSON). */
static int rbd_get_info(BlockDriverState *bs, BlockDriverInfo *info)
{
    BDRVRBDState *s = rbd_state(bs);
    char features[256] = "";
    size_t len = sizeof(features);
    GString *out = g_string_new(NULL);

    rbd_features_to_string(s->features, features, &len);
    g_string_append_printf(out, "server: %s (Ceph monitors)\npool: %s\n", s->mon_host, s->pool);
    if (s->nspace) {
        g_string_append_printf(out, "namespace: %s\n", s->nspace);
    }
    g_string_append_printf(out, "image: %s\n", s->name);
    if (s->snap) {
        g_string_append_printf(out, "snapshot: %s\n", s->snap);
    }
    g_string_append_printf(out, "user: client.%s\nfeatures: %s\n", s->user ? s->user : "admin",
                           features);
    g_mutex_lock(&s->lock);
    g_string_append_printf(out, "timed out: %" G_GUINT64_FORMAT "\n", s->timeouts);
    g_mutex_unlock(&s->lock);
    info->extra = g_string_free(out, false);
    return 0;
}

const BlockDriver bdrv_rbd = {
    .format_name                    = "rbd",
    .instance_size                  = sizeof(BDRVRBDState *),
    .is_protocol                    = true,
    .protocol_prefix                = "rbd",
    .bdrv_open                      = rbd_open_node,
    .bdrv_close                     = rbd_close_node,
    .bdrv_co_pread                  = rbd_co_pread,
    .bdrv_co_pwrite                 = rbd_co_pwrite,
    .bdrv_co_pwrite_zeroes          = rbd_co_pwrite_zeroes,
    .bdrv_co_pdiscard               = rbd_co_pdiscard,
    .bdrv_co_flush                  = rbd_co_flush,
    .bdrv_co_truncate               = rbd_co_truncate,
    .bdrv_co_block_status           = rbd_co_block_status,
    .bdrv_getlength                 = rbd_getlength,
    .bdrv_get_allocated_file_size   = rbd_get_allocated_file_size,
    .bdrv_get_info                  = rbd_get_info,
};
