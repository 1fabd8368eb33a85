/* backend.h - BlockBackend: the one handle users of the block graph hold.  It validates every
 * request (range, read-only, flags) so drivers can trust their input, honours write-through,
 * counts I/O per kind, and drains in-flight requests before the graph is closed.
 *
 * Threads: blk_co_* may be called concurrently from coroutines in any I/O thread; open, drain
 * and unref happen in the main thread.
 */
#ifndef BLOCK_BACKEND_H
#define BLOCK_BACKEND_H

#include "block/block.h"

typedef struct BlockBackend BlockBackend;

typedef enum {
    BLK_STAT_READ, BLK_STAT_WRITE, BLK_STAT_FLUSH, BLK_STAT_DISCARD, BLK_STAT_ZERO,
    BLK_STAT__MAX
} BlockStatKind;

typedef struct BlockBackendStats {
    uint64_t ops[BLK_STAT__MAX];
    uint64_t bytes[BLK_STAT__MAX];      /* read, written, discarded, zeroed */
    uint64_t failed[BLK_STAT__MAX];
    uint64_t total_ns[BLK_STAT__MAX];   /* summed latency */
    uint64_t max_ns[BLK_STAT__MAX];
    uint64_t in_flight;
} BlockBackendStats;

extern const char *const blk_stat_names[BLK_STAT__MAX];

/* Open filename (format NULL = probe) and return a backend holding the top node.  flags are
 * BDRV_O_*.  Returns NULL with errp set. */
BlockBackend *blk_new_open(const char *filename, const char *format, BlockOptions *opts,
                           int flags, GError **errp);
void blk_ref(BlockBackend *blk);
/* Last reference: drain, flush, close the graph. */
void blk_unref(BlockBackend *blk);

BlockDriverState *blk_bs(BlockBackend *blk);
bool blk_is_read_only(BlockBackend *blk);
/* Flush after every write (--cache=writethrough/directsync). */
void blk_set_write_through(BlockBackend *blk, bool enable);
bool blk_get_write_through(BlockBackend *blk);

int64_t blk_getlength(BlockBackend *blk);
int64_t blk_get_allocated_file_size(BlockBackend *blk);
/* Re-read the length from the host file (FUSE passthrough: the kernel writes it directly and
 * may have grown it).  Returns the new length or -errno. */
int64_t blk_refresh_length(BlockBackend *blk);

/* I/O: return 0 or -errno.  Out-of-range reads fail with -EINVAL, writes with -ENOSPC, writes
 * to a read-only backend with -EROFS. */
int coroutine_fn blk_co_pread(BlockBackend *blk, int64_t offset, int64_t bytes, void *buf,
                              BdrvRequestFlags flags);
/* Read up to bytes at offset, stopping at the end of the image as read(2) does: returns the
 * number of bytes read (0 at or past the end) or -errno.  The size is looked at while resizes
 * are held off, so a concurrent truncate shortens the read instead of failing it. */
int64_t coroutine_fn blk_co_read_upto(BlockBackend *blk, int64_t offset, int64_t bytes,
                                      void *buf);
/* Whether blk_co_splice_read may move data: the image is a buffered host file or raw on one. */
bool blk_can_splice_read(BlockBackend *blk);
/* Move bytes at offset (inside the image) into the pipe whose write end is pipe_fd, without a
 * copy through this process, if that cannot block (block.h, bdrv_co_splice_read).  Returns 0
 * (counted as a read), or -errno when it did not happen whole (not counted: read the usual way;
 * the pipe may hold part of the range).  -ENOTSUP: nothing was moved. */
int coroutine_fn blk_co_splice_read(BlockBackend *blk, int64_t offset, int64_t bytes,
                                    int pipe_fd);
int coroutine_fn blk_co_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes,
                               const void *buf, BdrvRequestFlags flags);
int coroutine_fn blk_co_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes,
                                      BdrvRequestFlags flags);
int coroutine_fn blk_co_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes);
/* Reserve storage for the range; what it reads does not change. */
int coroutine_fn blk_co_preallocate(BlockBackend *blk, int64_t offset, int64_t bytes);
int coroutine_fn blk_co_flush(BlockBackend *blk);
int coroutine_fn blk_co_truncate(BlockBackend *blk, int64_t offset, bool exact,
                                 PreallocMode prealloc, GError **errp);
/* Status as a reader sees it (backing chain included): BDRV_BLOCK_DATA and/or ZERO for the
 * extent [offset, offset + *pnum). */
int coroutine_fn blk_co_block_status(BlockBackend *blk, int64_t offset, int64_t bytes,
                                     int64_t *pnum);

/* The same requests from outside a coroutine (tools and tests), by the same mechanism as
 * block.h's bdrv_pread and friends (block/sync.c): each runs the blk_co_ function of the same
 * name in a coroutine on the calling thread's event loop and returns its result.  Never call
 * them from a coroutine. */
int blk_pread(BlockBackend *blk, int64_t offset, int64_t bytes, void *buf,
              BdrvRequestFlags flags);
int blk_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes, const void *buf,
               BdrvRequestFlags flags);
int blk_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes, BdrvRequestFlags flags);
int blk_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes);
int blk_preallocate(BlockBackend *blk, int64_t offset, int64_t bytes);
int blk_flush(BlockBackend *blk);
int blk_truncate(BlockBackend *blk, int64_t offset, bool exact, PreallocMode prealloc,
                 GError **errp);
int blk_block_status(BlockBackend *blk, int64_t offset, int64_t bytes, int64_t *pnum);

/* Wait until no request is in flight (main thread). */
void blk_drain(BlockBackend *blk);
void blk_get_stats(BlockBackend *blk, BlockBackendStats *out);

#endif
