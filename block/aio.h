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
 * tools outside the event loop).  Must not be called from coroutine context. */
void aio_run_coroutine(CoroutineEntry *entry, void *opaque);

/* Internal to coroutine.c: the link used by aio_co_schedule. */
typedef struct CoScheduleLink {
    struct CoScheduleLink *next;
} CoScheduleLink;

#endif
