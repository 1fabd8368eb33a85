/* aio.h - per-thread event loop (AioContext): fd handlers, bottom halves, coroutine scheduling.
 *
 * Threads: each thread that does block I/O runs its own AioContext (the main thread has one, every
 * FUSE queue thread has one).  aio_set_fd_handler and aio_poll are called only by the owning
 * thread; aio_bh_schedule and aio_co_schedule may be called from any thread.
 */
#ifndef BLOCK_AIO_H
#define BLOCK_AIO_H

#include <stdbool.h>
#include <glib.h>
#include "block/coroutine.h"

typedef void IOHandler(void *opaque);
typedef void BHFunc(void *opaque);

/* Returns a new event loop; it becomes the calling thread's current context. */
AioContext *aio_context_new(GError **errp);
/* A new event loop for another thread, which adopts it with aio_context_set_current(). */
AioContext *aio_context_new_unbound(GError **errp);
void aio_context_set_current(AioContext *ctx);
/* Free a context; its owner thread must no longer poll it. */
void aio_context_free(AioContext *ctx);

/* The calling thread's context, created on first use. */
AioContext *aio_get_current(void);
/* The calling thread's context, or NULL if it has none (never creates one). */
AioContext *aio_peek_current(void);

/* Watch fd for readability (io_read) and/or writability (io_write); both NULL removes it. */
void aio_set_fd_handler(AioContext *ctx, int fd, IOHandler *io_read, IOHandler *io_write,
                        void *opaque);

/*
 * The same for an "external" fd: one through which the outside world asks for work (control
 * socket and its connections, signals), as opposed to the I/O that work waits for.  External
 * handlers run only in the outermost aio_poll of the context, and not while external handlers
 * are disabled: a nested poll (aio_run_coroutine opening an image inside a handler, a drain)
 * neither runs them nor wakes up for them.  So a handler that starts such a poll is never
 * re-entered, and nothing it uses is freed under it by a request of another client.
 * Re-registering an fd with the other kind moves it.
 */
void aio_set_fd_handler_external(AioContext *ctx, int fd, IOHandler *io_read,
                                 IOHandler *io_write, void *opaque);

/* Disable/enable external handlers (counted: nested pairs are fine).  Owner thread only. */
void aio_disable_external(AioContext *ctx);
void aio_enable_external(AioContext *ctx);

/* Run cb(opaque) once, soon, in ctx's thread.  Thread-safe; never blocks. */
void aio_bh_schedule(AioContext *ctx, BHFunc *cb, void *opaque);

/* Enter co in ctx's thread.  Thread-safe; allocation-free. */
void aio_co_schedule(AioContext *ctx, Coroutine *co);

/* Wake ctx's thread if it is blocked in aio_poll. */
void aio_notify(AioContext *ctx);

/* Dispatch ready handlers and bottom halves; if blocking and nothing was ready, wait for events.
 * Returns true if any progress was made. */
bool aio_poll(AioContext *ctx, bool blocking);

/* Run entry(opaque) in a new coroutine and poll ctx until it finishes (for set-up paths and
 * tools outside the event loop).  External handlers do not run meanwhile, even when called
 * outside any aio_poll.  Must not be called from coroutine context. */
void aio_run_coroutine(CoroutineEntry *entry, void *opaque);

/* Internal to coroutine.c: the link used by aio_co_schedule. */
typedef struct CoScheduleLink {
    struct CoScheduleLink *next;
} CoScheduleLink;

#endif
