/* raw.c - the raw format driver: the image is the disk, optionally a slice of it (offset=, size=).
 *
 * A raw image whose format was probed (no -f raw) is guarded: a write to its first sector that
 * would make it probe as another format (a guest writing a qcow2 header, say) is refused, because
 * the next open would then trust that header and expose host files through a backing file.
 * Writes, zero writes and discards that touch the first sector run one at a time, each checked
 * and done under guard_lock: two writes that each look harmless on their own (the magic, and the
 * rest of a header) cannot both pass the check against the same old sector.
 *
 * Threads: requests in coroutines of any I/O thread; guard_lock is a CoMutex.
 */
#include "config.h"
#include "block/block.h"
#include "block/util.h"

#define RAW_GUARD_LEN 512

typedef struct BDRVRawState {
    uint64_t offset;            /* where the slice starts in the file */
    uint64_t size;              /* slice length; 0 with has_size false = up to the file's end */
    bool has_size;
    CoMutex guard_lock;         /* probed images: one change to the first sector at a time */
} BDRVRawState;

static int raw_open(BlockDriverState *bs, BlockOptions *opts, int flags, GError **errp)
{
    BDRVRawState *s = bs->opaque;
    int64_t file_len = bdrv_getlength(bs->file->bs);

    co_mutex_init(&s->guard_lock);
    /* A write is the file's write: FUA goes down with it. */
    bs->supported_write_flags = bs->file->bs->supported_write_flags & BDRV_REQ_FUA;
    bs->splice_read = bs->file->bs->splice_read;
    if (!block_options_take_size(opts, "offset", &s->offset, NULL, errp) ||
        !block_options_take_size(opts, "size", &s->size, &s->has_size, errp)) {
        return -EINVAL;
    }
    if (file_len < 0) {
        error_setg_errno(errp, file_len, "%s: cannot get the size", bs->filename);
        return file_len;
    }
    if (s->offset > (uint64_t)file_len) {
        error_setg(errp, "%s: offset %" G_GUINT64_FORMAT " is past the end of the file "
                   "(%" G_GINT64_FORMAT " bytes)", bs->filename, s->offset, file_len);
        return -EINVAL;
    }
    if (s->has_size && s->offset + s->size > (uint64_t)file_len) {
        error_setg(errp, "%s: offset + size (%" G_GUINT64_FORMAT ") is past the end of the "
                   "file (%" G_GINT64_FORMAT " bytes)", bs->filename, s->offset + s->size,
                   file_len);
        return -EINVAL;
    }
    if ((s->offset || s->has_size) && !IS_ALIGNED(s->offset, bs->bl.request_alignment)) {
        error_setg(errp, "%s: offset must be a multiple of %u with this cache mode",
                   bs->filename, bs->bl.request_alignment);
        return -EINVAL;
    }
    return 0;
}

static void raw_close(BlockDriverState *bs)
{
    BDRVRawState *s = bs->opaque;

    co_mutex_destroy(&s->guard_lock);
}

static int64_t raw_getlength(BlockDriverState *bs)
{
    BDRVRawState *s = bs->opaque;
    int64_t len;

    if (s->has_size) {
        return s->size;
    }
    len = bdrv_getlength(bs->file->bs);
    return len < 0 ? len : len - (int64_t)s->offset;
}

static int coroutine_fn raw_co_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                     void *buf, BdrvRequestFlags flags)
{
    BDRVRawState *s = bs->opaque;

    return bdrv_co_pread(bs->file->bs, offset + s->offset, bytes, buf, flags);
}

static int64_t coroutine_fn raw_co_splice_read(BlockDriverState *bs, int64_t offset,
                                               int64_t bytes, int pipe_fd)
{
    BDRVRawState *s = bs->opaque;

    return bdrv_co_splice_read(bs->file->bs, offset + s->offset, bytes, pipe_fd);
}

/* Does a change of [offset, offset + bytes) need the first-sector guard? */
static bool raw_guarded(BlockDriverState *bs, int64_t offset)
{
    return (bs->open_flags & BDRV_O_PROBED) && offset < RAW_GUARD_LEN;
}

/* For a probed image, under guard_lock: would writing buf (NULL: zeros, for zero writes and
 * discards, which may leave zeros) at offset change what the first sector probes as? */
static int coroutine_fn raw_check_first_sector(BlockDriverState *bs, int64_t offset,
                                               int64_t bytes, const void *buf)
{
    uint8_t *sector = blk_blockalign(RAW_GUARD_LEN);
    int64_t n = MIN(bytes, RAW_GUARD_LEN - offset);
    int ret;

    ret = bdrv_co_pread(bs, 0, RAW_GUARD_LEN, sector, 0);
    if (ret >= 0) {
        if (buf) {
            memcpy(sector + offset, buf, n);
        } else {
            memset(sector + offset, 0, n);
        }
        if (bdrv_probe_buffer(sector, RAW_GUARD_LEN, bs->filename) != bs->drv) {
            log_warning("%s: refused a write to the first sector that would make the image "
                        "look like another format; mount with -f raw to allow it",
                        bs->filename);
            ret = -EPERM;
        }
    }
    blk_vfree(sector);
    return ret;
}

typedef enum { RAW_WRITE, RAW_ZEROES, RAW_DISCARD } RawChange;

/* Pass a change on to the file, past the guard if it touches the first sector. */
static int coroutine_fn raw_co_change(BlockDriverState *bs, RawChange kind, int64_t offset,
                                      int64_t bytes, const void *buf, BdrvRequestFlags flags)
{
    BDRVRawState *s = bs->opaque;
    BlockDriverState *file = bs->file->bs;
    bool guarded = raw_guarded(bs, offset);
    int ret = 0;

    if (guarded) {
        co_mutex_lock(&s->guard_lock);
        ret = raw_check_first_sector(bs, offset, bytes, kind == RAW_WRITE ? buf : NULL);
    }
    if (ret >= 0) {
        switch (kind) {
        case RAW_WRITE:
            ret = bdrv_co_pwrite(file, offset + s->offset, bytes, buf, flags);
            break;
        case RAW_ZEROES:
            ret = bdrv_co_pwrite_zeroes(file, offset + s->offset, bytes, flags);
            break;
        case RAW_DISCARD:
            ret = bdrv_co_pdiscard(file, offset + s->offset, bytes);
            break;
        }
    }
    if (guarded) {
        co_mutex_unlock(&s->guard_lock);
    }
    return ret;
}

static int coroutine_fn raw_co_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      const void *buf, BdrvRequestFlags flags)
{
    return raw_co_change(bs, RAW_WRITE, offset, bytes, buf, flags);
}

static int coroutine_fn raw_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, BdrvRequestFlags flags)
{
    return raw_co_change(bs, RAW_ZEROES, offset, bytes, NULL, flags);
}

static int coroutine_fn raw_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    return raw_co_change(bs, RAW_DISCARD, offset, bytes, NULL, 0);
}

static int coroutine_fn raw_co_preallocate(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVRawState *s = bs->opaque;

    return bdrv_co_preallocate(bs->file->bs, offset + s->offset, bytes);
}

static int coroutine_fn raw_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                        PreallocMode prealloc, GError **errp)
{
    BDRVRawState *s = bs->opaque;

    if (s->offset || s->has_size) {
        error_setg(errp, "%s: a slice of a raw image (offset=, size=) cannot be resized",
                   bs->filename);
        return -ENOTSUP;
    }
    return bdrv_co_truncate(bs->file->bs, offset, exact, prealloc, errp);
}

static int coroutine_fn raw_co_block_status(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes, int64_t *pnum, int64_t *map,
                                            BlockDriverState **file)
{
    BDRVRawState *s = bs->opaque;

    *pnum = bytes;
    *map = offset + s->offset;
    *file = bs->file->bs;
    return BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID;
}

static int64_t raw_get_allocated_file_size(BlockDriverState *bs)
{
    return bdrv_get_allocated_file_size(bs->file->bs);
}

/* A raw image is the file itself, at the requested size (preallocation=off, falloc or full). */
static int coroutine_fn raw_co_create(BlockDriverState *file, uint64_t size,
                                      const char *backing_file, const char *backing_fmt,
                                      BlockOptions *opts, GError **errp)
{
    g_autofree char *prealloc = block_options_take(opts, "preallocation");
    PreallocMode mode = PREALLOC_MODE_OFF;

    if (prealloc && !prealloc_mode_parse(prealloc, false, &mode, errp)) {
        return -EINVAL;
    }
    return bdrv_co_truncate(file, size, true, mode, errp);
}

static int raw_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    return 1;   /* anything is a raw image, if nothing else claims it */
}

const BlockDriver bdrv_raw = {
    .format_name                    = "raw",
    .instance_size                  = sizeof(BDRVRawState),
    .bdrv_probe                     = raw_probe,
    .bdrv_open                      = raw_open,
    .bdrv_close                     = raw_close,
    .bdrv_co_pread                  = raw_co_pread,
    .bdrv_co_splice_read            = raw_co_splice_read,
    .bdrv_co_pwrite                 = raw_co_pwrite,
    .bdrv_co_pwrite_zeroes          = raw_co_pwrite_zeroes,
    .bdrv_co_pdiscard               = raw_co_pdiscard,
    .bdrv_co_preallocate            = raw_co_preallocate,
    .bdrv_co_truncate               = raw_co_truncate,
    .bdrv_co_block_status           = raw_co_block_status,
    .bdrv_getlength                 = raw_getlength,
    .bdrv_get_allocated_file_size   = raw_get_allocated_file_size,
    .bdrv_co_create                 = raw_co_create,
};
