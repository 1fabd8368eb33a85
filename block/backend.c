/* backend.c - the BlockBackend front door: validation, write-through, statistics, draining, and
 * resizes that exclude every other request.
 *
 * Threads: requests come from coroutines in any I/O thread.  A request counts itself in
 * blk->in_flight (atomic) before it looks at anything, the size included.  A truncate sets
 * blk->resizing, waits until in_flight is 0, resizes, and lets the held requests go; a request
 * that finds resizing set backs off (uncounts itself) and waits in resize_held.  Without a
 * resize pending a request costs one atomic increment, one load and one decrement: no lock.
 * resize_lock protects resize_held and resize_drained (and the sleeps on them).
 */
#include "config.h"
#include "block/backend.h"
#include "block/aio.h"
#include "block/util.h"

struct BlockBackend {
    BlockDriverState *bs;
    int refcnt;
    bool write_through;

    unsigned in_flight;         /* atomic */
    int draining;               /* atomic */
    GMutex drain_lock;
    AioContext *drain_ctx;      /* the loop blk_drain polls, woken by the last request */

    CoMutex resize_mutex;       /* one truncate at a time */
    int resizing;               /* atomic: a truncate is pending; new requests wait */
    GMutex resize_lock;
    CoQueue resize_held;        /* requests waiting for the truncate to finish */
    CoQueue resize_drained;     /* the truncate, waiting for in_flight to reach 0 */

    /* atomic counters */
    uint64_t ops[BLK_STAT__MAX], bytes[BLK_STAT__MAX], failed[BLK_STAT__MAX];
    uint64_t total_ns[BLK_STAT__MAX], max_ns[BLK_STAT__MAX];
};

const char *const blk_stat_names[BLK_STAT__MAX] = {
    [BLK_STAT_READ] = "read", [BLK_STAT_WRITE] = "write", [BLK_STAT_FLUSH] = "flush",
    [BLK_STAT_DISCARD] = "discard", [BLK_STAT_ZERO] = "write_zeroes",
};

BlockBackend *blk_new_open(const char *filename, const char *format, BlockOptions *opts,
                           int flags, GError **errp)
{
    BlockDriverState *bs = bdrv_open(filename, format, opts, flags, errp);
    BlockBackend *blk;

    if (!bs) {
        return NULL;
    }
    blk = g_new0(BlockBackend, 1);
    blk->bs = bs;
    blk->refcnt = 1;
    g_mutex_init(&blk->drain_lock);
    co_mutex_init(&blk->resize_mutex);
    g_mutex_init(&blk->resize_lock);
    co_queue_init(&blk->resize_held);
    co_queue_init(&blk->resize_drained);
    return blk;
}

void blk_ref(BlockBackend *blk)
{
    __atomic_add_fetch(&blk->refcnt, 1, __ATOMIC_RELAXED);
}

void blk_unref(BlockBackend *blk)
{
    if (!blk || __atomic_sub_fetch(&blk->refcnt, 1, __ATOMIC_ACQ_REL) > 0) {
        return;
    }
    blk_drain(blk);
    bdrv_unref(blk->bs);        /* flushes and closes */
    g_mutex_clear(&blk->drain_lock);
    co_mutex_destroy(&blk->resize_mutex);
    g_mutex_clear(&blk->resize_lock);
    g_free(blk);
}

BlockDriverState *blk_bs(BlockBackend *blk)
{
    return blk->bs;
}

bool blk_is_read_only(BlockBackend *blk)
{
    return blk->bs->read_only;
}

void blk_set_write_through(BlockBackend *blk, bool enable)
{
    blk->write_through = enable;
}

bool blk_get_write_through(BlockBackend *blk)
{
    return blk->write_through;
}

int64_t blk_getlength(BlockBackend *blk)
{
    return bdrv_getlength(blk->bs);
}

int64_t blk_get_allocated_file_size(BlockBackend *blk)
{
    return bdrv_get_allocated_file_size(blk->bs);
}

int64_t blk_refresh_length(BlockBackend *blk)
{
    return bdrv_refresh_length(blk->bs);
}

/* --- request accounting --- */

/* The increment and the loads of resizing are sequentially consistent with the truncate's
 * store of resizing and load of in_flight: a request either is seen by the truncate (which
 * waits for it) or sees the truncate (and waits for it). */
static inline void in_flight_inc(BlockBackend *blk)
{
    __atomic_add_fetch(&blk->in_flight, 1, __ATOMIC_SEQ_CST);
}

static void in_flight_dec(BlockBackend *blk)
{
    if (__atomic_sub_fetch(&blk->in_flight, 1, __ATOMIC_SEQ_CST) > 0) {
        return;
    }
    if (__atomic_load_n(&blk->resizing, __ATOMIC_SEQ_CST)) {
        g_mutex_lock(&blk->resize_lock);
        co_queue_restart_all(&blk->resize_drained);
        g_mutex_unlock(&blk->resize_lock);
    }
    if (__atomic_load_n(&blk->draining, __ATOMIC_SEQ_CST)) {
        g_mutex_lock(&blk->drain_lock);
        if (blk->drain_ctx) {
            aio_notify(blk->drain_ctx);
        }
        g_mutex_unlock(&blk->drain_lock);
    }
}

/* Count a request in flight; while a truncate is pending, wait for it first. */
static void coroutine_fn in_flight_begin(BlockBackend *blk)
{
    in_flight_inc(blk);
    if (G_LIKELY(!__atomic_load_n(&blk->resizing, __ATOMIC_SEQ_CST))) {
        return;
    }
    g_mutex_lock(&blk->resize_lock);
    while (__atomic_load_n(&blk->resizing, __ATOMIC_SEQ_CST)) {
        g_mutex_unlock(&blk->resize_lock);
        in_flight_dec(blk);             /* back off: may be what the truncate waits for */
        g_mutex_lock(&blk->resize_lock);
        if (__atomic_load_n(&blk->resizing, __ATOMIC_SEQ_CST)) {
            co_queue_wait(&blk->resize_held, &blk->resize_lock);
        }
        in_flight_inc(blk);
    }
    g_mutex_unlock(&blk->resize_lock);
}

static inline int64_t coroutine_fn req_begin(BlockBackend *blk)
{
    in_flight_begin(blk);
    return get_clock_ns();
}

static void req_end(BlockBackend *blk, BlockStatKind kind, int64_t start, int64_t bytes, int ret)
{
    uint64_t ns = get_clock_ns() - start;
    uint64_t max = __atomic_load_n(&blk->max_ns[kind], __ATOMIC_RELAXED);

    if (ret < 0) {
        __atomic_add_fetch(&blk->failed[kind], 1, __ATOMIC_RELAXED);
    } else {
        __atomic_add_fetch(&blk->ops[kind], 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&blk->bytes[kind], bytes, __ATOMIC_RELAXED);
        __atomic_add_fetch(&blk->total_ns[kind], ns, __ATOMIC_RELAXED);
        while (ns > max && !__atomic_compare_exchange_n(&blk->max_ns[kind], &max, ns, true,
                                                         __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        }
    }
    in_flight_dec(blk);
}

/* Range and permission checks shared by every request. */
static int check_request(BlockBackend *blk, int64_t offset, int64_t bytes, bool write)
{
    int64_t len;

    if (offset < 0 || bytes < 0 || bytes > INT64_MAX - offset) {
        return -EINVAL;
    }
    if (write && blk->bs->read_only) {
        return -EROFS;
    }
    len = bdrv_getlength(blk->bs);
    if (len < 0) {
        return len;
    }
    if (offset + bytes > len) {
        return write ? -ENOSPC : -EINVAL;
    }
    return 0;
}

int coroutine_fn blk_co_pread(BlockBackend *blk, int64_t offset, int64_t bytes, void *buf,
                              BdrvRequestFlags flags)
{
    int64_t start = req_begin(blk);
    int ret = check_request(blk, offset, bytes, false);

    if (ret >= 0) {
        ret = bdrv_co_pread(blk->bs, offset, bytes, buf, 0);
    }
    req_end(blk, BLK_STAT_READ, start, bytes, ret);
    return ret;
}

int64_t coroutine_fn blk_co_read_upto(BlockBackend *blk, int64_t offset, int64_t bytes,
                                      void *buf)
{
    int64_t start = req_begin(blk);
    int64_t len = bdrv_getlength(blk->bs);
    int64_t ret = len;

    if (len >= 0) {
        bytes = offset < len ? MIN(bytes, len - offset) : 0;
        ret = offset < 0 || bytes < 0 ? -EINVAL : 0;
        if (ret == 0 && bytes > 0) {
            ret = check_request(blk, offset, bytes, false);
        }
        if (ret == 0 && bytes > 0) {
            ret = bdrv_co_pread(blk->bs, offset, bytes, buf, 0);
        }
    }
    req_end(blk, BLK_STAT_READ, start, bytes, ret);
    return ret < 0 ? ret : bytes;
}

bool blk_can_splice_read(BlockBackend *blk)
{
    return blk->bs->splice_read;
}

int coroutine_fn blk_co_splice_read(BlockBackend *blk, int64_t offset, int64_t bytes,
                                    int pipe_fd)
{
    int64_t start = req_begin(blk);
    int64_t ret = check_request(blk, offset, bytes, false);

    if (ret == 0) {
        ret = bdrv_co_splice_read(blk->bs, offset, bytes, pipe_fd);
    }
    if (ret != bytes) {
        /* Not counted: the caller reads the usual way, and that read counts. */
        in_flight_dec(blk);
        return ret < 0 ? ret : -EIO;
    }
    req_end(blk, BLK_STAT_READ, start, bytes, 0);
    return 0;
}

int coroutine_fn blk_co_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes,
                               const void *buf, BdrvRequestFlags flags)
{
    int64_t start = req_begin(blk);
    int ret = check_request(blk, offset, bytes, true);

    if (ret >= 0) {
        if (blk->write_through) {
            flags |= BDRV_REQ_FUA;
        }
        ret = bdrv_co_pwrite(blk->bs, offset, bytes, buf, flags & BDRV_REQ_FUA);
    }
    req_end(blk, BLK_STAT_WRITE, start, bytes, ret);
    return ret;
}

int coroutine_fn blk_co_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes,
                                      BdrvRequestFlags flags)
{
    int64_t start = req_begin(blk);
    int ret = check_request(blk, offset, bytes, true);

    if (ret >= 0) {
        ret = bdrv_co_pwrite_zeroes(blk->bs, offset, bytes,
                                    flags & (BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK));
        if (ret >= 0 && blk->write_through) {
            ret = bdrv_co_flush(blk->bs);
        }
    }
    req_end(blk, BLK_STAT_ZERO, start, bytes, ret);
    return ret;
}

int coroutine_fn blk_co_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes)
{
    int64_t start = req_begin(blk);
    int ret = check_request(blk, offset, bytes, true);

    if (ret >= 0) {
        ret = bdrv_co_pdiscard(blk->bs, offset, bytes);
    }
    req_end(blk, BLK_STAT_DISCARD, start, bytes, ret);
    return ret;
}

int coroutine_fn blk_co_preallocate(BlockBackend *blk, int64_t offset, int64_t bytes)
{
    int ret;

    in_flight_begin(blk);
    ret = check_request(blk, offset, bytes, true);
    if (ret >= 0) {
        ret = bdrv_co_preallocate(blk->bs, offset, bytes);
    }
    in_flight_dec(blk);
    return ret;
}

int coroutine_fn blk_co_flush(BlockBackend *blk)
{
    int64_t start = req_begin(blk);
    int ret = bdrv_co_flush(blk->bs);

    req_end(blk, BLK_STAT_FLUSH, start, 0, ret);
    return ret;
}

/* Hold new requests and wait until none is in flight; then count the truncate itself (so that
 * blk_drain waits for it). */
static void coroutine_fn resize_begin(BlockBackend *blk)
{
    g_mutex_lock(&blk->resize_lock);
    __atomic_store_n(&blk->resizing, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&blk->in_flight, __ATOMIC_SEQ_CST) > 0) {
        co_queue_wait(&blk->resize_drained, &blk->resize_lock);
    }
    g_mutex_unlock(&blk->resize_lock);
    in_flight_inc(blk);
}

/* Let the held requests go. */
static void resize_end(BlockBackend *blk)
{
    g_mutex_lock(&blk->resize_lock);
    __atomic_store_n(&blk->resizing, 0, __ATOMIC_SEQ_CST);
    co_queue_restart_all(&blk->resize_held);
    g_mutex_unlock(&blk->resize_lock);
    in_flight_dec(blk);
}

int coroutine_fn blk_co_truncate(BlockBackend *blk, int64_t offset, bool exact,
                                 PreallocMode prealloc, GError **errp)
{
    int ret;

    if (offset < 0) {
        error_setg(errp, "%s: negative size", blk->bs->filename);
        return -EINVAL;
    }
    if (blk->bs->read_only) {
        g_set_error(errp, BLK_ERROR, EROFS, "%s: image is read-only", blk->bs->filename);
        return -EROFS;
    }
    co_mutex_lock(&blk->resize_mutex);
    resize_begin(blk);
    ret = bdrv_co_truncate(blk->bs, offset, exact, prealloc, errp);
    if (ret >= 0 && blk->write_through) {
        ret = bdrv_co_flush(blk->bs);
    }
    resize_end(blk);
    co_mutex_unlock(&blk->resize_mutex);
    return ret;
}

int coroutine_fn blk_co_block_status(BlockBackend *blk, int64_t offset, int64_t bytes,
                                     int64_t *pnum)
{
    int ret;

    in_flight_begin(blk);
    ret = check_request(blk, offset, bytes, false);
    if (ret >= 0) {
        ret = bdrv_co_block_status_above(blk->bs, offset, bytes, pnum);
    }
    in_flight_dec(blk);
    return ret;
}

/* Requests of this thread complete through its own loop, those of other threads wake it
 * (in_flight_dec): poll it, blocking, until none is left.  The store to draining and the load
 * of in_flight here, and the reverse in in_flight_dec, are sequentially consistent, so either
 * this loop sees in_flight at 0 or the last request sees draining and notifies. */
void blk_drain(BlockBackend *blk)
{
    AioContext *ctx = aio_get_current();
    AioContext *outer;

    g_mutex_lock(&blk->drain_lock);
    g_assert(!blk->drain_ctx || blk->drain_ctx == ctx);     /* one draining thread */
    outer = blk->drain_ctx;
    blk->drain_ctx = ctx;
    g_mutex_unlock(&blk->drain_lock);
    __atomic_add_fetch(&blk->draining, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&blk->in_flight, __ATOMIC_SEQ_CST) > 0) {
        aio_poll(ctx, true);
    }
    __atomic_sub_fetch(&blk->draining, 1, __ATOMIC_SEQ_CST);
    g_mutex_lock(&blk->drain_lock);
    blk->drain_ctx = outer;
    g_mutex_unlock(&blk->drain_lock);
}

void blk_get_stats(BlockBackend *blk, BlockBackendStats *out)
{
    for (int i = 0; i < BLK_STAT__MAX; i++) {
        out->ops[i] = __atomic_load_n(&blk->ops[i], __ATOMIC_RELAXED);
        out->bytes[i] = __atomic_load_n(&blk->bytes[i], __ATOMIC_RELAXED);
        out->failed[i] = __atomic_load_n(&blk->failed[i], __ATOMIC_RELAXED);
        out->total_ns[i] = __atomic_load_n(&blk->total_ns[i], __ATOMIC_RELAXED);
        out->max_ns[i] = __atomic_load_n(&blk->max_ns[i], __ATOMIC_RELAXED);
    }
    out->in_flight = __atomic_load_n(&blk->in_flight, __ATOMIC_RELAXED);
}
