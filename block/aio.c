/* aio.c - the per-thread event loop: epoll over fd handlers, an eventfd to be woken from other
 * threads, bottom halves and scheduled coroutines.
 *
 * External handlers (aio.h) live in a second epoll set, which is itself a member of the main
 * one only while the outermost poll runs with external handlers enabled: a nested poll does not
 * see them at all, so it neither dispatches them nor wakes up for them.
 *
 * Threads: a context is polled only by its owning thread.  aio_bh_schedule/aio_co_schedule push
 * onto lock-free lists from any thread and write the eventfd only when the owner may be asleep.
 */
#include "config.h"
#include "block/aio.h"
#include "block/coroutine-int.h"
#include "block/util.h"

#include <stdlib.h>
#include <sys/epoll.h>
#ifdef CONFIG_LIBURING
#include <liburing.h>
#endif
#include <sys/eventfd.h>
#include <unistd.h>

typedef struct AioHandler {
    int fd;
    IOHandler *io_read;
    IOHandler *io_write;
    void *opaque;
    bool deleted;
    bool external;              /* registered in ext_epfd, not epfd */
} AioHandler;

typedef struct BH {
    struct BH *next;
    BHFunc *cb;
    void *opaque;
} BH;

struct AioContext {
    int epfd;
    int notify_fd;
    GHashTable *handlers;       /* fd -> AioHandler* */
    GPtrArray *deleted;         /* handlers removed during dispatch, freed after it */
    BH *bh_head;                /* atomic LIFO, reversed when run */
    CoScheduleLink *co_head;    /* atomic LIFO of scheduled coroutines */
    int sleeping;               /* atomic: owner is (about to be) blocked in epoll_wait */
    bool dispatching;           /* owner is inside aio_poll and will look at the lists again */
    int depth;                  /* aio_poll nesting (aio_run_coroutine inside a handler) */
    int ext_epfd;               /* epoll set of the external handlers, -1 until the first */
    bool ext_armed;             /* ext_epfd is a member of epfd */
    int external_disabled;      /* aio_disable_external count */
    bool serial;                /* aio_set_serial: requests come one at a time */
#ifdef CONFIG_LIBURING
    int ring_state;             /* RING_UNTRIED, RING_READY or RING_UNAVAILABLE */
    struct io_uring ring;       /* its fd is a member of epfd */
#endif
};

enum { RING_UNTRIED, RING_READY, RING_UNAVAILABLE };

/* The epoll tag of ext_epfd in epfd (any unique address). */
static char ext_tag;

static __thread AioContext *current_ctx;

static bool run_scheduled(AioContext *ctx);
static void ring_free(AioContext *ctx);
static bool ring_reap(AioContext *ctx);
static void ring_submit_pending(AioContext *ctx);

static void notify_read(void *opaque)
{
    AioContext *ctx = opaque;
    uint64_t v;

    while (read(ctx->notify_fd, &v, sizeof(v)) == sizeof(v)) {
    }
}

AioContext *aio_context_new(GError **errp)
{
    AioContext *ctx = aio_context_new_unbound(errp);

    if (ctx) {
        current_ctx = ctx;
    }
    return ctx;
}

void aio_context_set_current(AioContext *ctx)
{
    current_ctx = ctx;
}

AioContext *aio_context_new_unbound(GError **errp)
{
    AioContext *ctx = g_new0(AioContext, 1);

    ctx->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (ctx->epfd < 0) {
        error_setg_errno(errp, errno, "epoll_create1");
        g_free(ctx);
        return NULL;
    }
    ctx->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ctx->notify_fd < 0) {
        error_setg_errno(errp, errno, "eventfd");
        close(ctx->epfd);
        g_free(ctx);
        return NULL;
    }
    ctx->ext_epfd = -1;
    ctx->handlers = g_hash_table_new_full(NULL, NULL, NULL, g_free);
    ctx->deleted = g_ptr_array_new_with_free_func(g_free);
    aio_set_fd_handler(ctx, ctx->notify_fd, notify_read, NULL, ctx);
    return ctx;
}

void aio_context_free(AioContext *ctx)
{
    /* Run what is still queued (bottom halves only: no fd of the old owner is polled). */
    while (run_scheduled(ctx)) {
    }
    ring_free(ctx);
    g_hash_table_destroy(ctx->handlers);
    g_ptr_array_free(ctx->deleted, true);
    if (ctx->ext_epfd >= 0) {
        close(ctx->ext_epfd);
    }
    close(ctx->notify_fd);
    close(ctx->epfd);
    if (current_ctx == ctx) {
        current_ctx = NULL;
    }
    g_free(ctx);
}

AioContext *aio_get_current(void)
{
    if (G_UNLIKELY(!current_ctx)) {
        g_autoptr(GError) err = NULL;
        if (!aio_context_new(&err)) {
            g_error("cannot create an event loop: %s", err->message);
        }
    }
    return current_ctx;
}

AioContext *aio_peek_current(void)
{
    return current_ctx;
}

static void set_fd_handler(AioContext *ctx, int fd, IOHandler *io_read, IOHandler *io_write,
                           void *opaque, bool external)
{
    AioHandler *h = g_hash_table_lookup(ctx->handlers, GINT_TO_POINTER(fd));
    struct epoll_event ev = { 0 };
    int epfd;

    if (h && (!(io_read || io_write) || h->external != external)) {
        epoll_ctl(h->external ? ctx->ext_epfd : ctx->epfd, EPOLL_CTL_DEL, fd, NULL);
        g_hash_table_steal(ctx->handlers, GINT_TO_POINTER(fd));
        h->deleted = true;
        g_ptr_array_add(ctx->deleted, h);
        h = NULL;
    }
    if (!io_read && !io_write) {
        return;
    }
    if (external && ctx->ext_epfd < 0) {
        ctx->ext_epfd = epoll_create1(EPOLL_CLOEXEC);
        if (ctx->ext_epfd < 0) {
            g_error("epoll_create1: %s", g_strerror(errno));
        }
    }
    epfd = external ? ctx->ext_epfd : ctx->epfd;
    ev.events = (io_read ? EPOLLIN : 0) | (io_write ? EPOLLOUT : 0);
    if (!h) {
        h = g_new0(AioHandler, 1);
        h->fd = fd;
        h->external = external;
        g_hash_table_insert(ctx->handlers, GINT_TO_POINTER(fd), h);
        ev.data.ptr = h;
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            g_error("epoll_ctl add fd %d: %s", fd, g_strerror(errno));
        }
    } else {
        ev.data.ptr = h;
        epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev);
    }
    h->io_read = io_read;
    h->io_write = io_write;
    h->opaque = opaque;
}

void aio_set_fd_handler(AioContext *ctx, int fd, IOHandler *io_read, IOHandler *io_write,
                        void *opaque)
{
    set_fd_handler(ctx, fd, io_read, io_write, opaque, false);
}

void aio_set_fd_handler_external(AioContext *ctx, int fd, IOHandler *io_read,
                                 IOHandler *io_write, void *opaque)
{
    set_fd_handler(ctx, fd, io_read, io_write, opaque, true);
}

void aio_disable_external(AioContext *ctx)
{
    ctx->external_disabled++;
}

void aio_enable_external(AioContext *ctx)
{
    g_assert(ctx->external_disabled > 0);
    ctx->external_disabled--;
}

/* Make the external set a member of the main one exactly when this poll may dispatch it: the
 * outermost poll, external handlers enabled.  Changes only when the nesting does. */
static void arm_external(AioContext *ctx)
{
    bool want = ctx->ext_epfd >= 0 && ctx->depth == 1 && ctx->external_disabled == 0;
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &ext_tag };

    if (want == ctx->ext_armed) {
        return;
    }
    if (epoll_ctl(ctx->epfd, want ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, ctx->ext_epfd, &ev) < 0) {
        g_error("epoll_ctl %s external set: %s", want ? "add" : "del", g_strerror(errno));
    }
    ctx->ext_armed = want;
}

void aio_notify(AioContext *ctx)
{
    uint64_t one = 1;

    /* Pairs with the fence in aio_poll: either the owner sees our work before sleeping, or we
     * see it sleeping and wake it. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&ctx->sleeping, __ATOMIC_RELAXED)) {
        ssize_t r = write(ctx->notify_fd, &one, sizeof(one));
        (void)r;
    }
}

void aio_bh_schedule(AioContext *ctx, BHFunc *cb, void *opaque)
{
    BH *bh = g_new(BH, 1);

    bh->cb = cb;
    bh->opaque = opaque;
    bh->next = __atomic_load_n(&ctx->bh_head, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(&ctx->bh_head, &bh->next, bh, true, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED)) {
    }
    if (ctx != current_ctx || !ctx->dispatching) {
        aio_notify(ctx);
    }
}

void aio_co_schedule(AioContext *ctx, Coroutine *co)
{
    CoScheduleLink *l = coroutine_sched_link(co);

    if (!coroutine_mark_scheduled(co)) {
        g_error("coroutine scheduled twice");
    }
    l->next = __atomic_load_n(&ctx->co_head, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(&ctx->co_head, &l->next, l, true, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED)) {
    }
    if (ctx != current_ctx || !ctx->dispatching) {
        aio_notify(ctx);
    }
}

/* Run everything scheduled so far, oldest first.  Returns true if anything ran. */
static bool run_scheduled(AioContext *ctx)
{
    bool progress = false;
    BH *bh = __atomic_exchange_n(&ctx->bh_head, NULL, __ATOMIC_ACQUIRE);
    CoScheduleLink *l = __atomic_exchange_n(&ctx->co_head, NULL, __ATOMIC_ACQUIRE);
    BH *bh_rev = NULL;
    CoScheduleLink *l_rev = NULL;

    while (bh) {
        BH *next = bh->next;
        bh->next = bh_rev;
        bh_rev = bh;
        bh = next;
    }
    while (l) {
        CoScheduleLink *next = l->next;
        l->next = l_rev;
        l_rev = l;
        l = next;
    }
    while (l_rev) {
        CoScheduleLink *next = l_rev->next;
        Coroutine *co = coroutine_from_sched_link(l_rev);
        coroutine_clear_scheduled(co);
        coroutine_enter(co);
        l_rev = next;
        progress = true;
    }
    while (bh_rev) {
        BH *next = bh_rev->next;
        bh_rev->cb(bh_rev->opaque);
        g_free(bh_rev);
        bh_rev = next;
        progress = true;
    }
    return progress;
}

static bool has_scheduled(AioContext *ctx)
{
    return __atomic_load_n(&ctx->bh_head, __ATOMIC_ACQUIRE) ||
           __atomic_load_n(&ctx->co_head, __ATOMIC_ACQUIRE);
}

/* Run the handlers of one epoll event. */
static bool dispatch_event(AioHandler *h, uint32_t events)
{
    bool progress = false;

    if (h->deleted) {
        return false;
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && h->io_read) {
        h->io_read(h->opaque);
        progress = true;
    }
    if (!h->deleted && (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) && h->io_write) {
        h->io_write(h->opaque);
        progress = true;
    }
    return progress;
}

/* The external set is ready: run its handlers (only called from the outermost poll). */
static bool dispatch_external(AioContext *ctx)
{
    struct epoll_event events[64];
    bool progress = false;
    int n = epoll_wait(ctx->ext_epfd, events, G_N_ELEMENTS(events), 0);

    for (int i = 0; i < n; i++) {
        progress |= dispatch_event(events[i].data.ptr, events[i].events);
    }
    return progress;
}

bool aio_poll(AioContext *ctx, bool blocking)
{
    struct epoll_event events[64];
    bool progress;
    bool was_dispatching = ctx->dispatching;
    int timeout = 0;
    int n;

    ctx->depth++;
    arm_external(ctx);
    ctx->dispatching = true;
    progress = run_scheduled(ctx);
    progress |= ring_reap(ctx);

    if (blocking && !progress) {
        __atomic_store_n(&ctx->sleeping, 1, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        timeout = has_scheduled(ctx) ? 0 : -1;
        ctx->dispatching = false;
    }
    ring_submit_pending(ctx);   /* what the work so far queued goes out before the wait */
    n = epoll_wait(ctx->epfd, events, G_N_ELEMENTS(events), timeout);
    __atomic_store_n(&ctx->sleeping, 0, __ATOMIC_RELAXED);
    ctx->dispatching = true;

    for (int i = 0; i < n; i++) {
        if (events[i].data.ptr == &ext_tag) {
            /* A handler run before may have nested a poll, which disarmed the set. */
            if (ctx->depth == 1 && ctx->external_disabled == 0) {
                progress |= dispatch_external(ctx);
            }
            continue;
        }
        progress |= dispatch_event(events[i].data.ptr, events[i].events);
    }
    /* Completions that the task work run at the end of epoll_wait posted (even when it ended
     * with EINTR), whether or not the ring fd was reported. */
    progress |= ring_reap(ctx);
    progress |= run_scheduled(ctx);
    if (--ctx->depth == 0) {
        g_ptr_array_set_size(ctx->deleted, 0);
    }
    ctx->dispatching = was_dispatching;
    return progress;
}

typedef struct RunCo {
    CoroutineEntry *entry;
    void *opaque;
    bool done;
} RunCo;

static void coroutine_fn run_co_entry(void *opaque)
{
    RunCo *r = opaque;

    r->entry(r->opaque);
    r->done = true;
}

void aio_run_coroutine(CoroutineEntry *entry, void *opaque)
{
    AioContext *ctx = aio_get_current();
    RunCo r = { .entry = entry, .opaque = opaque };

    g_assert(!in_coroutine());
    /* Called outside any poll (a daemon opening its first image), this is the outermost poll:
     * still, no client may be served in the middle of an open. */
    aio_disable_external(ctx);
    coroutine_enter(coroutine_create(run_co_entry, &r));
    while (!r.done) {
        aio_poll(ctx, true);
    }
    aio_enable_external(ctx);
}


/* --- io_uring ------------------------------------------------------------------------------
 *
 * The ring's fd is a member of the epoll set: the loop sleeps in epoll_wait, which the ring
 * wakes when a CQE is posted, and the task work of a completion interrupts (EINTR).  SQEs are
 * queued in the SQ by aio_uring_get_sqe and submitted in one io_uring_enter before the loop
 * next waits; CQEs are reaped from the shared CQ without a system call at every aio_poll.
 */

#define RING_ENTRIES 256

#ifdef CONFIG_LIBURING

static void ring_fd_read(void *opaque)
{
    ring_reap(opaque);
}

/* Create ctx's ring; false (and the reason in *why) when the kernel or the user refuses. */
static bool ring_init(AioContext *ctx, int *why)
{
    /* COOP_TASKRUN: completions wait for the next system call of the loop instead of an IPI;
     * SUBMIT_ALL: one bad SQE does not hold back the others of the batch.  Older kernels lack
     * them: then plain SQE128. */
    static const unsigned flag_sets[] = {
        IORING_SETUP_SQE128 | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
            IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_SQE128,
    };
    const char *env = getenv("BLKFUSE_IO_URING");
    int r = -EINVAL;

    if (env && strcmp(env, "off") == 0) {
        *why = EPERM;
        return false;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(flag_sets) && r == -EINVAL; i++) {
        r = io_uring_queue_init(RING_ENTRIES, &ctx->ring, flag_sets[i]);
    }
    if (r < 0) {
        *why = -r;
        return false;
    }
    aio_set_fd_handler(ctx, ctx->ring.ring_fd, ring_fd_read, NULL, ctx);
    return true;
}

struct io_uring *aio_get_uring(AioContext *ctx)
{
    if (G_LIKELY(ctx->ring_state == RING_READY)) {
        return &ctx->ring;
    }
    if (ctx->ring_state == RING_UNTRIED) {
        int why = 0;
        if (ring_init(ctx, &why)) {
            ctx->ring_state = RING_READY;
            return &ctx->ring;
        }
        ctx->ring_state = RING_UNAVAILABLE;
        log_debug("io_uring not available (%s): falling back to libaio and worker threads",
                  why == EPERM && getenv("BLKFUSE_IO_URING") ? "BLKFUSE_IO_URING=off"
                                                              : g_strerror(why));
    }
    return NULL;
}

/* Submit the queued SQEs: the count or -errno.  EAGAIN (no memory for requests) and EBUSY
 * (CQ overflow backlog) are retried once after flushing completions; if they persist, the SQEs
 * stay queued for the next aio_poll, which reaps first. */
static int ring_submit(AioContext *ctx)
{
    int r;

    do {
        r = io_uring_submit(&ctx->ring);
    } while (r == -EINTR);
    if (r == -EAGAIN || r == -EBUSY) {
        io_uring_get_events(&ctx->ring);
        r = io_uring_submit(&ctx->ring);
    }
    return r;
}

static void ring_submit_pending(AioContext *ctx)
{
    if (ctx->ring_state == RING_READY && io_uring_sq_ready(&ctx->ring)) {
        int r = ring_submit(ctx);
        if (r < 0 && r != -EAGAIN && r != -EBUSY) {
            g_error("io_uring submit: %s", g_strerror(-r));
        }
    }
}

int aio_uring_submit(AioContext *ctx)
{
    g_assert(ctx->ring_state == RING_READY);
    return io_uring_sq_ready(&ctx->ring) ? ring_submit(ctx) : 0;
}

struct io_uring_sqe *aio_uring_get_sqe(AioContext *ctx, AioUringOp *op)
{
    struct io_uring_sqe *sqe;

    g_assert(ctx->ring_state == RING_READY);
    while (!(sqe = io_uring_get_sqe(&ctx->ring))) {
        int r = ring_submit(ctx);
        if (r < 0 && r != -EAGAIN && r != -EBUSY) {
            g_error("io_uring submit: %s", g_strerror(-r));
        }
        if (r <= 0) {
            ring_reap(ctx);     /* make room in the CQ (callbacks may queue more: fine) */
        }
    }
    memset(sqe, 0, 2 * sizeof(*sqe));   /* SQE128: two slots */
    io_uring_sqe_set_data(sqe, op);
    return sqe;
}

/* Run the callbacks of the posted CQEs.  Each CQE is released before its callback runs, so a
 * callback may queue SQEs, reap, or nest an aio_poll.  Returns true if any ran. */
static bool ring_reap(AioContext *ctx)
{
    struct io_uring_cqe *cqe;
    bool progress = false;

    if (ctx->ring_state != RING_READY) {
        return false;
    }
    while (io_uring_peek_cqe(&ctx->ring, &cqe) == 0) {
        AioUringOp *op = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        uint32_t flags = cqe->flags;

        io_uring_cqe_seen(&ctx->ring, cqe);
        if (op) {
            op->cb(op, res, flags);
        }
        progress = true;
    }
    return progress;
}

static void ring_free(AioContext *ctx)
{
    if (ctx->ring_state == RING_READY) {
        /* Ops still in flight are cancelled by the kernel; their callbacks never run. */
        aio_set_fd_handler(ctx, ctx->ring.ring_fd, NULL, NULL, NULL);
        io_uring_queue_exit(&ctx->ring);
    }
    ctx->ring_state = RING_UNTRIED;
}

#else /* !CONFIG_LIBURING */

struct io_uring *aio_get_uring(AioContext *ctx)
{
    return NULL;
}

struct io_uring_sqe *aio_uring_get_sqe(AioContext *ctx, AioUringOp *op)
{
    g_error("aio_uring_get_sqe: blkfuse was built without liburing");
}

int aio_uring_submit(AioContext *ctx)
{
    return -ENOSYS;
}

static bool ring_reap(AioContext *ctx)
{
    return false;
}

static void ring_submit_pending(AioContext *ctx)
{
}

static void ring_free(AioContext *ctx)
{
}

#endif

void aio_set_serial(AioContext *ctx, bool serial)
{
    ctx->serial = serial;
}

bool aio_current_serial(void)
{
    return current_ctx && current_ctx->serial;
}
