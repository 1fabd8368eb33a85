/* io-engine.h - the two ways a protocol driver waits for I/O without blocking its event loop:
 * a pool of worker threads (buffered I/O, fsync, fallocate) and Linux native AIO (O_DIRECT). */
#ifndef BLOCK_IO_ENGINE_H
#define BLOCK_IO_ENGINE_H

#include <stdint.h>
#include <stddef.h>
#include "block/coroutine.h"

typedef int ThreadPoolFunc(void *opaque);

/* Run fn(opaque) in a worker thread; the calling coroutine yields until it returns, and gets
 * its return value.  opaque usually lives on the coroutine's stack. */
int coroutine_fn thread_pool_run(ThreadPoolFunc *fn, void *opaque);

typedef enum { LAIO_READ, LAIO_WRITE } LaioType;

/* Submit one O_DIRECT read or write through the calling thread's libaio context and yield until
 * it completes.  Returns bytes transferred (may be short) or -errno. */
ssize_t coroutine_fn laio_co_submit(int fd, int64_t offset, void *buf, size_t len, LaioType type);

/* Release the calling thread's libaio context (before the thread exits). */
void laio_thread_cleanup(void);

#endif
