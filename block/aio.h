/* aio.h - per-thread event loop (AioContext): fd handlers, bottom halves, coroutine scheduling.
 *
 * Threads: each thread that does block I/O runs its own AioContext (the main thread has one, every
 * FUSE queue thread has one).  aio_set_fd_handler and aio_poll are called only by the owning
 * thread; aio_bh_schedule and aio_co_schedule may be called from any thread.
 */
#ifndef BLOCK_AIO_H
#define BLOCK_AIO_H

#include <stdbool.h>
#include <stdint.h>
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

/* A hint from the owner thread: the requests it serves come one at a time now (a FUSE queue in
 * its local mode, fuse/affinity.c), so work done inline delays no other request; drivers may
 * then do more inline (block/file.c: buffered writes up to 1 MiB).  Owner thread only. */
void aio_set_serial(AioContext *ctx, bool serial);
/* Whether the calling thread's context has that hint (false without a context). */
bool aio_current_serial(void);

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

/*
 * The per-context io_uring.
 *
 * Each context may own one io_uring, created in its owner thread on first use with
 * IORING_SETUP_SQE128 (128-byte SQEs: the FUSE-over-io_uring transport submits uring_cmd SQEs on
 * the same ring as the block I/O).  The event loop waits on it: SQEs taken with
 * aio_uring_get_sqe are submitted in one batch before aio_poll next waits, and completions run
 * their callback from aio_poll in the owner thread.
 */
struct io_uring;
struct io_uring_sqe;

/* The calling context's io_uring, or NULL when io_uring is not available (kernel, seccomp,
 * sysctl kernel.io_uring_disabled, BLKFUSE_IO_URING=off in the environment): callers fall back
 * (libaio, worker threads, /dev/fuse).  Owner thread only. */
struct io_uring *aio_get_uring(AioContext *ctx);

/* A completion: embed it in your request struct; set cb before submitting. */
typedef struct AioUringOp AioUringOp;
typedef void AioUringDone(AioUringOp *op, int res, uint32_t cqe_flags);
struct AioUringOp {
    AioUringDone *cb;
};

/* A free SQE of ctx's ring (submitting the queued ones first when the SQ is full), cleared, with
 * its user_data set to op; the caller preps it (io_uring_prep_*, keeping user_data) and returns.
 * The SQEs are submitted before the event loop next waits (batched), or at once by
 * aio_uring_submit.  op->cb(op, cqe->res, cqe->flags) runs in the owner thread from aio_poll
 * (outside coroutine context; it may enter a coroutine), once per CQE (multishot ops: until a
 * CQE without IORING_CQE_F_MORE).  Owner thread only; aio_get_uring(ctx) must be non-NULL.
 * Ops still in flight when the context is freed are cancelled by the kernel without callback. */
struct io_uring_sqe *aio_uring_get_sqe(AioContext *ctx, AioUringOp *op);

/* Submit the queued SQEs now (rarely needed: aio_poll does it before it waits).  Returns the
 * number submitted or -errno. */
int aio_uring_submit(AioContext *ctx);

#endif
