/* sync.c - block requests run from outside a coroutine: the one set of synchronous wrappers, for
 * nodes (block.h: bdrv_pread and the rest, bdrv_check, bdrv_create's driver step) and for the
 * front door (backend.h: blk_pread and the rest), used by open paths, tools and tests.
 *
 * Every wrapper fills one SyncReq and hands it to sync_req_run, which runs the request in a new
 * coroutine on the calling thread's event loop (aio_run_coroutine) and returns its result once
 * it has finished.  A request with blk set goes through the BlockBackend (validated, counted,
 * written through); one with only bs goes to the node as the caller gave it.
 *
 * Threads: the calling thread, never from a coroutine.
 */
#include "config.h"
#include "block/backend.h"
#include "block/aio.h"

typedef enum {
    SYNC_READ, SYNC_WRITE, SYNC_ZEROES, SYNC_DISCARD, SYNC_PREALLOCATE, SYNC_FLUSH,
    SYNC_TRUNCATE, SYNC_STATUS, SYNC_CHECK, SYNC_CREATE,
} SyncKind;

/* One request of any kind, its arguments and its result. */
typedef struct SyncReq {
    SyncKind kind;
    BlockBackend *blk;          /* through the front door, or NULL: */
    BlockDriverState *bs;       /* straight to the node (SYNC_CREATE: the new, empty file) */
    int64_t offset, bytes;
    void *buf;
    BdrvRequestFlags flags;
    bool exact;
    PreallocMode prealloc;
    int64_t *pnum, *map;
    BlockDriverState **file;
    BdrvCheckResult *res;       /* SYNC_CHECK */
    BdrvCheckMode fix;
    const BlockDriver *drv;     /* SYNC_CREATE */
    uint64_t size;
    const char *backing_file, *backing_fmt;
    BlockOptions *opts;
    GError **errp;
    int ret;
} SyncReq;

static void coroutine_fn sync_req_entry(void *opaque)
{
    SyncReq *r = opaque;
    BlockBackend *blk = r->blk;
    BlockDriverState *bs = r->bs;

    switch (r->kind) {
    case SYNC_READ:
        r->ret = blk ? blk_co_pread(blk, r->offset, r->bytes, r->buf, r->flags) :
                       bdrv_co_pread(bs, r->offset, r->bytes, r->buf, r->flags);
        break;
    case SYNC_WRITE:
        r->ret = blk ? blk_co_pwrite(blk, r->offset, r->bytes, r->buf, r->flags) :
                       bdrv_co_pwrite(bs, r->offset, r->bytes, r->buf, r->flags);
        break;
    case SYNC_ZEROES:
        r->ret = blk ? blk_co_pwrite_zeroes(blk, r->offset, r->bytes, r->flags) :
                       bdrv_co_pwrite_zeroes(bs, r->offset, r->bytes, r->flags);
        break;
    case SYNC_DISCARD:
        r->ret = blk ? blk_co_pdiscard(blk, r->offset, r->bytes) :
                       bdrv_co_pdiscard(bs, r->offset, r->bytes);
        break;
    case SYNC_PREALLOCATE:
        r->ret = blk ? blk_co_preallocate(blk, r->offset, r->bytes) :
                       bdrv_co_preallocate(bs, r->offset, r->bytes);
        break;
    case SYNC_FLUSH:
        r->ret = blk ? blk_co_flush(blk) : bdrv_co_flush(bs);
        break;
    case SYNC_TRUNCATE:
        r->ret = blk ? blk_co_truncate(blk, r->offset, r->exact, r->prealloc, r->errp) :
                       bdrv_co_truncate(bs, r->offset, r->exact, r->prealloc, r->errp);
        break;
    case SYNC_STATUS:
        /* The backend's status is the one a reader sees, backing chain included. */
        r->ret = blk ? blk_co_block_status(blk, r->offset, r->bytes, r->pnum) :
                       bdrv_co_block_status(bs, r->offset, r->bytes, r->pnum, r->map, r->file);
        break;
    case SYNC_CHECK:
        r->ret = bs->drv->bdrv_co_check(bs, r->res, r->fix);
        break;
    case SYNC_CREATE:
        r->ret = r->drv->bdrv_co_create(bs, r->size, r->backing_file, r->backing_fmt, r->opts,
                                        r->errp);
        break;
    }
}

static int sync_req_run(SyncReq r)
{
    aio_run_coroutine(sync_req_entry, &r);
    return r.ret;
}

/* --- nodes (block.h) --- */

int bdrv_pread(BlockDriverState *bs, int64_t offset, int64_t bytes, void *buf)
{
    return sync_req_run((SyncReq){ .kind = SYNC_READ, .bs = bs, .offset = offset,
                                   .bytes = bytes, .buf = buf });
}

int bdrv_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes, const void *buf)
{
    return sync_req_run((SyncReq){ .kind = SYNC_WRITE, .bs = bs, .offset = offset,
                                   .bytes = bytes, .buf = (void *)buf });
}

int bdrv_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                       BdrvRequestFlags flags)
{
    return sync_req_run((SyncReq){ .kind = SYNC_ZEROES, .bs = bs, .offset = offset,
                                   .bytes = bytes, .flags = flags });
}

int bdrv_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    return sync_req_run((SyncReq){ .kind = SYNC_DISCARD, .bs = bs, .offset = offset,
                                   .bytes = bytes });
}

int bdrv_preallocate(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    return sync_req_run((SyncReq){ .kind = SYNC_PREALLOCATE, .bs = bs, .offset = offset,
                                   .bytes = bytes });
}

int bdrv_flush(BlockDriverState *bs)
{
    return sync_req_run((SyncReq){ .kind = SYNC_FLUSH, .bs = bs });
}

int bdrv_truncate(BlockDriverState *bs, int64_t offset, bool exact, PreallocMode prealloc,
                  GError **errp)
{
    return sync_req_run((SyncReq){ .kind = SYNC_TRUNCATE, .bs = bs, .offset = offset,
                                   .exact = exact, .prealloc = prealloc, .errp = errp });
}

int bdrv_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes, int64_t *pnum,
                      int64_t *map, BlockDriverState **file)
{
    return sync_req_run((SyncReq){ .kind = SYNC_STATUS, .bs = bs, .offset = offset,
                                   .bytes = bytes, .pnum = pnum, .map = map, .file = file });
}

int bdrv_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix)
{
    if (!bs->drv->bdrv_co_check) {
        return -ENOTSUP;
    }
    return sync_req_run((SyncReq){ .kind = SYNC_CHECK, .bs = bs, .res = res, .fix = fix });
}

int bdrv_create_on(const BlockDriver *drv, BlockDriverState *file, uint64_t size,
                   const char *backing_file, const char *backing_fmt, BlockOptions *opts,
                   GError **errp)
{
    return sync_req_run((SyncReq){ .kind = SYNC_CREATE, .drv = drv, .bs = file, .size = size,
                                   .backing_file = backing_file, .backing_fmt = backing_fmt,
                                   .opts = opts, .errp = errp });
}

/* --- the front door (backend.h) --- */

int blk_pread(BlockBackend *blk, int64_t offset, int64_t bytes, void *buf,
              BdrvRequestFlags flags)
{
    return sync_req_run((SyncReq){ .kind = SYNC_READ, .blk = blk, .offset = offset,
                                   .bytes = bytes, .buf = buf, .flags = flags });
}

int blk_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes, const void *buf,
               BdrvRequestFlags flags)
{
    return sync_req_run((SyncReq){ .kind = SYNC_WRITE, .blk = blk, .offset = offset,
                                   .bytes = bytes, .buf = (void *)buf, .flags = flags });
}

int blk_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes, BdrvRequestFlags flags)
{
    return sync_req_run((SyncReq){ .kind = SYNC_ZEROES, .blk = blk, .offset = offset,
                                   .bytes = bytes, .flags = flags });
}

int blk_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes)
{
    return sync_req_run((SyncReq){ .kind = SYNC_DISCARD, .blk = blk, .offset = offset,
                                   .bytes = bytes });
}

int blk_preallocate(BlockBackend *blk, int64_t offset, int64_t bytes)
{
    return sync_req_run((SyncReq){ .kind = SYNC_PREALLOCATE, .blk = blk, .offset = offset,
                                   .bytes = bytes });
}

int blk_flush(BlockBackend *blk)
{
    return sync_req_run((SyncReq){ .kind = SYNC_FLUSH, .blk = blk });
}

int blk_truncate(BlockBackend *blk, int64_t offset, bool exact, PreallocMode prealloc,
                 GError **errp)
{
    return sync_req_run((SyncReq){ .kind = SYNC_TRUNCATE, .blk = blk, .offset = offset,
                                   .exact = exact, .prealloc = prealloc, .errp = errp });
}

int blk_block_status(BlockBackend *blk, int64_t offset, int64_t bytes, int64_t *pnum)
{
    return sync_req_run((SyncReq){ .kind = SYNC_STATUS, .blk = blk, .offset = offset,
                                   .bytes = bytes, .pnum = pnum });
}
