/* linux-aio.c - Linux native AIO (libaio) for O_DIRECT files: one io_context per event loop,
 * completions signalled on an eventfd that the loop watches.
 *
 * Threads: each thread's AioContext gets its own LaioState on first use; requests are
 * submitted and completed in that thread only.
 */
#include "config.h"
#include "block/io-engine.h"
#include "block/aio.h"
#include "block/util.h"

#include <libaio.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define LAIO_DEPTH   256
#define LAIO_EVENTS  64

typedef struct LaioState {
    io_context_t io_ctx;
    int efd;
    unsigned in_flight;
    CoQueue full;               /* coroutines waiting for a free slot */
} LaioState;

typedef struct LaioReq {
    struct iocb iocb;
    Coroutine *co;
    ssize_t ret;
    bool done;
} LaioReq;

static __thread LaioState *laio;

static void laio_completion(void *opaque)
{
    LaioState *s = opaque;
    struct io_event events[LAIO_EVENTS];
    uint64_t v;
    int n, completed = 0;

    if (read(s->efd, &v, sizeof(v)) != sizeof(v)) {
        return;
    }
    do {
        struct timespec zero = { 0, 0 };
        n = io_getevents(s->io_ctx, 0, LAIO_EVENTS, events, &zero);
        for (int i = 0; i < n; i++) {
            LaioReq *req = events[i].data;
            long res = (long)events[i].res;
            req->ret = res;
            req->done = true;
            s->in_flight--;
            completed++;
            coroutine_enter(req->co);
        }
    } while (n == LAIO_EVENTS);
    while (completed-- > 0 && co_queue_next(&s->full)) {
    }
}

static LaioState *laio_get(void)
{
    LaioState *s = laio;
    int r;

    if (s) {
        return s;
    }
    s = g_new0(LaioState, 1);
    r = io_setup(LAIO_DEPTH, &s->io_ctx);
    if (r < 0) {
        g_free(s);
        return NULL;
    }
    s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    co_queue_init(&s->full);
    aio_set_fd_handler(aio_get_current(), s->efd, laio_completion, NULL, s);
    laio = s;
    return s;
}

ssize_t coroutine_fn laio_co_submit(int fd, int64_t offset, void *buf, size_t len, LaioType type)
{
    LaioState *s = laio_get();
    LaioReq req = { .co = coroutine_self() };
    struct iocb *iocbs[1] = { &req.iocb };
    int r;

    if (!s) {
        return -ENOSYS;
    }
    if (type == LAIO_READ) {
        io_prep_pread(&req.iocb, fd, buf, len, offset);
    } else {
        io_prep_pwrite(&req.iocb, fd, buf, len, offset);
    }
    io_set_eventfd(&req.iocb, s->efd);
    req.iocb.data = &req;

    while (s->in_flight >= LAIO_DEPTH) {
        co_queue_wait(&s->full, NULL);
    }
    for (;;) {
        r = io_submit(s->io_ctx, 1, iocbs);
        if (r == 1) {
            break;
        }
        if (r != -EAGAIN || s->in_flight == 0) {
            return r < 0 ? r : -EIO;
        }
        co_queue_wait(&s->full, NULL);  /* kernel queue full: wait for a completion */
    }
    s->in_flight++;
    while (!req.done) {
        coroutine_yield();
    }
    return req.ret;
}

void laio_thread_cleanup(void)
{
    LaioState *s = laio;

    if (!s) {
        return;
    }
    g_assert(s->in_flight == 0);
    aio_set_fd_handler(aio_get_current(), s->efd, NULL, NULL, NULL);
    io_destroy(s->io_ctx);
    close(s->efd);
    g_free(s);
    laio = NULL;
}
