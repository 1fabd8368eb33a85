/* io-engine.h - the ways a protocol driver waits for I/O without blocking its event loop: the
 * event loop's io_uring (any read, write, fdatasync, fallocate), and where io_uring is not
 * allowed, Linux native AIO (O_DIRECT) and a pool of worker threads (the rest). */
#ifndef BLOCK_IO_ENGINE_H
#define BLOCK_IO_ENGINE_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>
#include <sys/types.h>
#include "block/coroutine.h"

typedef int ThreadPoolFunc(void *opaque);

/* Run fn(opaque) in a worker thread; the calling coroutine yields until it returns, and gets
 * its return value.  opaque usually lives on the coroutine's stack. */
int coroutine_fn thread_pool_run(ThreadPoolFunc *fn, void *opaque);

/* Run fn(opaque) in a worker thread and return at once: nobody waits for it, its return value
 * is dropped, and fn owns opaque (frees it).  false if no worker could be started (then fn is
 * not called and opaque is still the caller's).  Any thread. */
bool thread_pool_submit(ThreadPoolFunc *fn, void *opaque);

typedef enum { LAIO_READ, LAIO_WRITE } LaioType;

/* Submit one O_DIRECT read or write through the calling thread's libaio context and yield until
 * it completes.  Returns bytes transferred (may be short) or -errno. */
ssize_t coroutine_fn laio_co_submit(int fd, int64_t offset, void *buf, size_t len, LaioType type);

/* Release the calling thread's libaio context (before the thread exits). */
void laio_thread_cleanup(void);

/* Whether the calling thread's event loop has an io_uring (aio_get_uring): if not, the luring_
 * functions must not be called. */
bool luring_available(void);

/* Largest transfer of one luring_co_rw (Linux's MAX_RW_COUNT). */
#define LURING_MAX_RW 0x7ffff000

/* One read or write through the calling thread's ring; yields until it completes.  Returns
 * bytes transferred (may be short: at most LURING_MAX_RW, or what the file gave) or -errno. */
ssize_t coroutine_fn luring_co_rw(int fd, int64_t offset, void *buf, size_t len, bool write);

/* fdatasync(fd) and fallocate(fd, mode, offset, len) through the ring: 0 or -errno. */
int coroutine_fn luring_co_fdatasync(int fd);
int coroutine_fn luring_co_fallocate(int fd, int mode, int64_t offset, int64_t len);

/* The engine of file nodes opened without aio=: "auto" (the default), "io_uring", "native" or
 * "threads" (tests run the block I/O suite under each).  False for an unknown name. */
bool bdrv_file_set_default_aio(const char *name);

/* How many writes (write) or reads a file node has made inline, in the calling thread (file.c;
 * for tests). */
typedef struct BlockDriverState BlockDriverState;
uint64_t bdrv_file_inline_ops(BlockDriverState *bs, bool write);
/* Reads of a file node made by splice (bdrv_co_splice_read), for tests. */
uint64_t bdrv_file_splice_ops(BlockDriverState *bs);
/* How many times a file node has started write-back of appended data (write-behind=; file.c). */
uint64_t bdrv_file_write_behind_ops(BlockDriverState *bs);
/* How many of those write-back starts, in the whole process, are still queued or running in a
 * worker thread (the write that started one did not wait for it; file.c; for tests). */
unsigned bdrv_file_write_behind_pending(void);

#endif
