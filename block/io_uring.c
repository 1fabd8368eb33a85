/* io_uring.c - block I/O through the calling thread's io_uring (the AioContext's ring, aio.h):
 * a coroutine queues one SQE and yields; the completion callback re-enters it.
 *
 * Threads: everything runs in the thread of the calling coroutine's event loop, which submits
 * the SQE before it next waits and runs the callback from aio_poll.
 */
#include "config.h"
#include "block/io-engine.h"
#include "block/aio.h"
#include "block/util.h"

#ifdef CONFIG_LIBURING
#include <liburing.h>

/* Valgrind does not see the kernel fill a buffer through the ring: tell it (a no-op outside
 * valgrind), or every read would look uninitialised under make check-valgrind. */
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#endif
#endif
#ifndef VALGRIND_MAKE_MEM_DEFINED
#define VALGRIND_MAKE_MEM_DEFINED(addr, len) ((void)(addr), (void)(len))
#endif

typedef struct LuringReq {
    AioUringOp op;
    Coroutine *co;
    int ret;
    bool done;
    void *read_buf;             /* a read's buffer, for valgrind */
} LuringReq;

G_STATIC_ASSERT(offsetof(LuringReq, op) == 0);

static void luring_done(AioUringOp *op, int res, uint32_t cqe_flags)
{
    LuringReq *req = (LuringReq *)op;   /* op is the first member */

    if (req->read_buf && res > 0) {
        VALGRIND_MAKE_MEM_DEFINED(req->read_buf, res);
    }
    req->ret = res;
    req->done = true;
    coroutine_enter(req->co);
}

bool luring_available(void)
{
    return aio_get_uring(aio_get_current()) != NULL;
}

/* Queue one SQE for req on the calling thread's ring; the caller preps it. */
static struct io_uring_sqe *luring_sqe(LuringReq *req)
{
    req->op.cb = luring_done;
    req->co = coroutine_self();
    g_assert(req->co);
    return aio_uring_get_sqe(aio_get_current(), &req->op);
}

static int coroutine_fn luring_wait(LuringReq *req)
{
    while (!req->done) {
        coroutine_yield();
    }
    return req->ret;
}

ssize_t coroutine_fn luring_co_rw(int fd, int64_t offset, void *buf, size_t len, bool write)
{
    LuringReq req = { 0 };
    struct io_uring_sqe *sqe = luring_sqe(&req);

    /* The SQE's length is 32 bits; the caller resubmits what remains. */
    len = MIN(len, LURING_MAX_RW);
    if (write) {
        io_uring_prep_write(sqe, fd, buf, len, offset);
    } else {
        io_uring_prep_read(sqe, fd, buf, len, offset);
        req.read_buf = buf;
    }
    io_uring_sqe_set_data(sqe, &req.op);
    return luring_wait(&req);
}

int coroutine_fn luring_co_fdatasync(int fd)
{
    LuringReq req = { 0 };
    struct io_uring_sqe *sqe = luring_sqe(&req);

    io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data(sqe, &req.op);
    return luring_wait(&req);
}

int coroutine_fn luring_co_fallocate(int fd, int mode, int64_t offset, int64_t len)
{
    LuringReq req = { 0 };
    struct io_uring_sqe *sqe = luring_sqe(&req);

    io_uring_prep_fallocate(sqe, fd, mode, offset, len);
    io_uring_sqe_set_data(sqe, &req.op);
    return luring_wait(&req);
}

#else /* !CONFIG_LIBURING */

bool luring_available(void)
{
    return false;
}

ssize_t coroutine_fn luring_co_rw(int fd, int64_t offset, void *buf, size_t len, bool write)
{
    return -ENOSYS;
}

int coroutine_fn luring_co_fdatasync(int fd)
{
    return -ENOSYS;
}

int coroutine_fn luring_co_fallocate(int fd, int mode, int64_t offset, int64_t len)
{
    return -ENOSYS;
}

#endif
