/* io.c - generic I/O on nodes: alignment padding (read-modify-write) with serialisation of
 * overlapping requests, write-zeroes fallback, FUA emulation, recursive flush that skips what
 * would cover no new write (write generations), block status.
 *
 * Threads: any I/O thread, coroutine context.  bs->reqs_lock protects bs->tracked_reqs; waiters
 * sleep in a CoQueue and are woken in their own threads.
 */
#include "config.h"
#include "block/block.h"
#include "block/util.h"

#include <unistd.h>

#define ZERO_CHUNK (1024 * 1024)

typedef struct TrackedReq {
    int64_t offset, bytes;      /* aligned range */
    bool serialising;           /* read-modify-write: excludes every overlapping write */
    CoQueue waiters;
} TrackedReq;

static bool needs_tracking(BlockDriverState *bs)
{
    return bs->bl.request_alignment > 1;
}

uint32_t bdrv_host_page_size(void)
{
    static uint32_t size;

    if (!__atomic_load_n(&size, __ATOMIC_RELAXED)) {
        long n = sysconf(_SC_PAGESIZE);
        __atomic_store_n(&size, n > 4096 ? (uint32_t)n : 4096, __ATOMIC_RELAXED);
    }
    return __atomic_load_n(&size, __ATOMIC_RELAXED);
}

/* Register a write of [offset, offset+bytes), waiting first for overlapping requests it must not
 * run alongside: a serialising one excludes all overlapping writes, and vice versa.
 *
 * A serialising request covers whole host pages at least: the unaligned end of a file is written
 * through the page cache (block.h, bdrv_co_pwrite), and an O_DIRECT write into a page that a
 * buffered write is dirtying at that moment makes the kernel's page-cache invalidation fail,
 * which it reports as EIO on the next fdatasync. */
static void coroutine_fn tracked_begin(BlockDriverState *bs, TrackedReq *req, int64_t offset,
                                       int64_t bytes, bool serialising)
{
    uint32_t align = serialising ? MAX(bs->bl.request_alignment, bdrv_host_page_size())
                                 : bs->bl.request_alignment;

    req->offset = ROUND_DOWN(offset, align);
    req->bytes = ROUND_UP(offset + bytes, align) - req->offset;
    req->serialising = serialising;
    co_queue_init(&req->waiters);

    g_mutex_lock(&bs->reqs_lock);
retry:
    for (GList *l = bs->tracked_reqs; l; l = l->next) {
        TrackedReq *other = l->data;
        if ((other->serialising || serialising) &&
            other->offset < req->offset + req->bytes &&
            req->offset < other->offset + other->bytes) {
            co_queue_wait(&other->waiters, &bs->reqs_lock);
            goto retry;
        }
    }
    bs->tracked_reqs = g_list_prepend(bs->tracked_reqs, req);
    g_mutex_unlock(&bs->reqs_lock);
}

static void tracked_end(BlockDriverState *bs, TrackedReq *req)
{
    g_mutex_lock(&bs->reqs_lock);
    bs->tracked_reqs = g_list_remove(bs->tracked_reqs, req);
    co_queue_restart_all(&req->waiters);
    g_mutex_unlock(&bs->reqs_lock);
}

int coroutine_fn bdrv_co_pread(BlockDriverState *bs, int64_t offset, int64_t bytes, void *buf,
                               BdrvRequestFlags flags)
{
    uint32_t align = bs->bl.request_alignment;
    int64_t head, aligned_bytes;
    uint8_t *bounce;
    int ret;

    if (bytes == 0) {
        return 0;
    }
    if (IS_ALIGNED(offset, align) && IS_ALIGNED(bytes, align)) {
        return bs->drv->bdrv_co_pread(bs, offset, bytes, buf, flags);
    }
    head = offset % align;
    aligned_bytes = ROUND_UP(head + bytes, align);
    bounce = blk_blockalign(aligned_bytes);
    ret = bs->drv->bdrv_co_pread(bs, offset - head, aligned_bytes, bounce, flags);
    if (ret >= 0) {
        memcpy(buf, bounce + head, bytes);
    }
    blk_vfree(bounce);
    return ret;
}

int64_t coroutine_fn bdrv_co_splice_read(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         int pipe_fd)
{
    if (!bs->splice_read || !bs->drv->bdrv_co_splice_read) {
        return -ENOTSUP;
    }
    return bs->drv->bdrv_co_splice_read(bs, offset, bytes, pipe_fd);
}

/* A request that may have changed bs's storage completed (successfully or not: a failed write
 * may have written part of its range): the next flush must reach the disk. */
static void write_done(BlockDriverState *bs)
{
    __atomic_add_fetch(&bs->write_gen, 1, __ATOMIC_SEQ_CST);
}

void bdrv_note_unseen_writes(BlockDriverState *bs)
{
    for (; bs; bs = bs->file ? bs->file->bs : NULL) {
        write_done(bs);
    }
}

static int coroutine_fn do_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                  const void *buf, BdrvRequestFlags flags)
{
    int ret;

    if (!bs->drv->bdrv_co_pwrite) {
        return -EROFS;
    }
    ret = bs->drv->bdrv_co_pwrite(bs, offset, bytes, buf, flags & bs->supported_write_flags);
    write_done(bs);
    if (ret >= 0 && (flags & BDRV_REQ_FUA) && !(bs->supported_write_flags & BDRV_REQ_FUA)) {
        ret = bdrv_co_flush(bs);
    }
    return ret;
}

/* Unaligned write to a node that needs alignment: read the partial head and tail blocks, merge,
 * write the whole aligned range.  The caller holds a serialising tracked request.
 *
 * The padding never reaches past the node's end: a write into the last, partial block of a file
 * (a raw image of 1000 bytes under O_DIRECT) writes up to the end of the file, or to the end of
 * the request if that lies further, and no further, so the file keeps its size (or grows exactly
 * to the end of the request).  That one write ends unaligned; drivers take it (block.h). */
static int coroutine_fn pwrite_padded(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      const void *buf, BdrvRequestFlags flags)
{
    uint32_t align = bs->bl.request_alignment;
    int64_t start = ROUND_DOWN(offset, align);
    int64_t end = ROUND_UP(offset + bytes, align);
    int64_t len = bdrv_getlength(bs);
    uint8_t *bounce;
    int ret = 0;

    if (len < 0) {
        return len;
    }
    end = MIN(end, MAX(len, offset + bytes));
    bounce = blk_blockalign(ROUND_UP(end - start, align));

    bool head = start < offset;
    bool tail = end > offset + bytes;
    int64_t tail_block = ROUND_DOWN(end - 1, align);

    if (head) {
        ret = bs->drv->bdrv_co_pread(bs, start, align, bounce, 0);
    }
    if (ret >= 0 && tail && !(head && tail_block == start)) {
        ret = bs->drv->bdrv_co_pread(bs, tail_block, align, bounce + (tail_block - start), 0);
    }
    if (ret >= 0) {
        memcpy(bounce + (offset - start), buf, bytes);
        ret = do_pwrite(bs, start, end - start, bounce, flags);
    }
    blk_vfree(bounce);
    return ret;
}

int coroutine_fn bdrv_co_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                const void *buf, BdrvRequestFlags flags)
{
    uint32_t align = bs->bl.request_alignment;
    TrackedReq req;
    bool aligned = IS_ALIGNED(offset, align) && IS_ALIGNED(bytes, align);
    int ret;

    if (bytes == 0) {
        return 0;
    }
    if (!needs_tracking(bs)) {
        return do_pwrite(bs, offset, bytes, buf, flags);
    }
    tracked_begin(bs, &req, offset, bytes, !aligned);
    ret = aligned ? do_pwrite(bs, offset, bytes, buf, flags)
                  : pwrite_padded(bs, offset, bytes, buf, flags);
    tracked_end(bs, &req);
    return ret;
}

int coroutine_fn bdrv_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       BdrvRequestFlags flags)
{
    uint8_t *zeros;
    int ret = -ENOTSUP;

    if (bytes == 0) {
        return 0;
    }
    if (bs->drv->bdrv_co_pwrite_zeroes) {
        TrackedReq req;
        bool track = needs_tracking(bs);
        if (track) {
            tracked_begin(bs, &req, offset, bytes, false);
        }
        ret = bs->drv->bdrv_co_pwrite_zeroes(bs, offset, bytes, flags);
        write_done(bs);
        if (track) {
            tracked_end(bs, &req);
        }
    }
    if (ret != -ENOTSUP || (flags & BDRV_REQ_NO_FALLBACK)) {
        return ret;
    }

    /* Fallback: write zeros, a chunk at a time. */
    zeros = blk_blockalign(MIN(bytes, ZERO_CHUNK));
    memset(zeros, 0, MIN(bytes, ZERO_CHUNK));
    ret = 0;
    while (bytes > 0 && ret >= 0) {
        int64_t n = MIN(bytes, ZERO_CHUNK);
        ret = bdrv_co_pwrite(bs, offset, n, zeros, 0);
        offset += n;
        bytes -= n;
    }
    blk_vfree(zeros);
    return ret;
}

int coroutine_fn bdrv_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    int ret;

    if (bytes == 0 || !bs->drv->bdrv_co_pdiscard) {
        return 0;
    }
    ret = bs->drv->bdrv_co_pdiscard(bs, offset, bytes);
    write_done(bs);
    return ret;
}

int coroutine_fn bdrv_co_preallocate(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    int ret;

    if (bytes == 0 || !bs->drv->bdrv_co_preallocate) {
        return 0;
    }
    ret = bs->drv->bdrv_co_preallocate(bs, offset, bytes);
    write_done(bs);
    return ret;
}

/* The flush that began at generation gen succeeded: every write completed before it is
 * durable.  Flushes may end out of order; flushed_gen only grows. */
static void flush_done(BlockDriverState *bs, uint64_t gen)
{
    uint64_t cur = __atomic_load_n(&bs->flushed_gen, __ATOMIC_SEQ_CST);

    while (cur < gen + 1 &&
           !__atomic_compare_exchange_n(&bs->flushed_gen, &cur, gen + 1, false,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
}

int coroutine_fn bdrv_co_flush(BlockDriverState *bs)
{
    /* Read before the flush begins: a write that completes while it runs is not covered. */
    uint64_t gen = __atomic_load_n(&bs->write_gen, __ATOMIC_SEQ_CST);
    int ret = 0;

    /* A node that turned read-only after open (a qcow2 image found corrupt) still answers:
     * its driver reports writes it could not make durable. */
    if (bs->read_only && !(bs->open_flags & BDRV_O_RDWR)) {
        return 0;
    }
    /* A format or filter node always runs its flush (it may hold metadata of its own, or an
     * error to report); a leaf skips one that follows a successful flush with nothing written
     * in between (the first flush after open always runs). */
    if (!bs->file && __atomic_load_n(&bs->flushed_gen, __ATOMIC_SEQ_CST) == gen + 1) {
        return 0;
    }
    if (bs->drv->bdrv_co_flush) {
        ret = bs->drv->bdrv_co_flush(bs);
    }
    if (ret >= 0 && bs->file) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret >= 0) {
        flush_done(bs, gen);
    }
    return ret;
}

int coroutine_fn bdrv_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                  PreallocMode prealloc, GError **errp)
{
    int ret;

    if (!bs->drv->bdrv_co_truncate) {
        g_set_error(errp, BLK_ERROR, ENOTSUP, "%s: format %s cannot be resized", bs->filename,
                    bs->drv->format_name);
        return -ENOTSUP;
    }
    ret = bs->drv->bdrv_co_truncate(bs, offset, exact, prealloc, errp);
    write_done(bs);
    return ret;
}

int coroutine_fn bdrv_co_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      int64_t *pnum, int64_t *map, BlockDriverState **file)
{
    int64_t local_map = 0;
    BlockDriverState *local_file = NULL;
    int64_t len = bdrv_getlength(bs);
    int ret;

    if (len < 0) {
        return len;
    }
    if (offset >= len || bytes <= 0) {
        *pnum = 0;
        return offset >= len ? BDRV_BLOCK_EOF : 0;
    }
    bytes = MIN(bytes, len - offset);
    if (!bs->drv->bdrv_co_block_status) {
        if (bs->file) {
            ret = BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID;
            local_map = offset;
            local_file = bs->file->bs;
            *pnum = bytes;
        } else {
            *pnum = bytes;
            ret = BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
        }
    } else {
        ret = bs->drv->bdrv_co_block_status(bs, offset, bytes, pnum, &local_map, &local_file);
        if (ret < 0) {
            return ret;
        }
        g_assert(*pnum > 0 && *pnum <= bytes);
    }
    if (ret & BDRV_BLOCK_RAW) {
        int64_t n = *pnum;
        g_assert(local_file);
        ret = bdrv_co_block_status(local_file, local_map, n, pnum, map, file);
        if (ret < 0) {
            return ret;
        }
        if (*pnum == 0) {       /* past the end of the child: reads as zeros */
            *pnum = n;
            ret = BDRV_BLOCK_ZERO;
        }
        ret |= BDRV_BLOCK_ALLOCATED;
        ret &= ~BDRV_BLOCK_EOF;
    } else {
        if (map) {
            *map = local_map;
        }
        if (file) {
            *file = local_file;
        }
    }
    if (offset + *pnum == len) {
        ret |= BDRV_BLOCK_EOF;
    }
    return ret;
}

int coroutine_fn bdrv_co_block_status_above(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes, int64_t *pnum)
{
    int64_t n = bytes;
    int flags_eof = 0;

    for (BlockDriverState *p = bs; p; p = p->backing ? p->backing->bs : NULL) {
        int64_t len = bdrv_getlength(p);
        int ret;

        if (len < 0) {
            return len;
        }
        if (offset >= len) {        /* past a backing file's end: zeros */
            *pnum = n;
            return BDRV_BLOCK_ZERO | flags_eof;
        }
        ret = bdrv_co_block_status(p, offset, n, pnum, NULL, NULL);
        if (ret < 0) {
            return ret;
        }
        if (p == bs) {
            flags_eof = ret & BDRV_BLOCK_EOF;
        }
        if (ret & (BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_ZERO)) {
            return (ret & ~BDRV_BLOCK_EOF) | flags_eof;
        }
        n = *pnum;
        if (!p->backing) {
            return BDRV_BLOCK_ZERO | flags_eof;
        }
    }
    *pnum = n;
    return BDRV_BLOCK_ZERO | flags_eof;
}
