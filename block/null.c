/* null.c - the null protocol driver: "null:SIZE" reads zeros and drops writes, to measure what
 * the export itself costs without any storage underneath. */
#include "config.h"
#include "block/block.h"
#include "block/util.h"

typedef struct BDRVNullState {
    int64_t size;
} BDRVNullState;

static int null_open(BlockDriverState *bs, BlockOptions *opts, int flags, GError **errp)
{
    BDRVNullState *s = bs->opaque;
    const char *spec = bs->filename + strlen("null:");
    uint64_t size;

    if (!parse_size(spec, &size, errp)) {
        error_prefix(errp, "%s", bs->filename);
        return -EINVAL;
    }
    s->size = size;
    return 0;
}

static int coroutine_fn null_co_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      void *buf, BdrvRequestFlags flags)
{
    memset(buf, 0, bytes);
    return 0;
}

static int coroutine_fn null_co_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       const void *buf, BdrvRequestFlags flags)
{
    return 0;
}

static int coroutine_fn null_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                              int64_t bytes, BdrvRequestFlags flags)
{
    return 0;
}

static int coroutine_fn null_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                         PreallocMode prealloc, GError **errp)
{
    BDRVNullState *s = bs->opaque;

    __atomic_store_n(&s->size, offset, __ATOMIC_RELAXED);
    return 0;
}

static int coroutine_fn null_co_block_status(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, int64_t *pnum, int64_t *map,
                                             BlockDriverState **file)
{
    *pnum = bytes;
    *map = offset;
    *file = bs;
    return BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID;
}

static int64_t null_getlength(BlockDriverState *bs)
{
    BDRVNullState *s = bs->opaque;

    return __atomic_load_n(&s->size, __ATOMIC_RELAXED);
}

static int64_t null_get_allocated_file_size(BlockDriverState *bs)
{
    return 0;
}

const BlockDriver bdrv_null = {
    .format_name                    = "null",
    .instance_size                  = sizeof(BDRVNullState),
    .is_protocol                    = true,
    .protocol_prefix                = "null",
    .bdrv_open                      = null_open,
    .bdrv_co_pread                  = null_co_pread,
    .bdrv_co_pwrite                 = null_co_pwrite,
    .bdrv_co_pwrite_zeroes          = null_co_pwrite_zeroes,
    .bdrv_co_truncate               = null_co_truncate,
    .bdrv_co_block_status           = null_co_block_status,
    .bdrv_getlength                 = null_getlength,
    .bdrv_get_allocated_file_size   = null_get_allocated_file_size,
};
