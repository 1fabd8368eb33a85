/* test-aio.c - unit tests for the per-thread event loop (block/aio.c): bottom halves from any
 * thread, blocking polls woken from other threads, fd handlers, aio_run_coroutine and the worker
 * thread pool (block/thread-pool.c). */
#include "config.h"
#include "unit-helpers.h"
#include "block/io-engine.h"

/* --- bottom halves ---------------------------------------------------------------------------- */

typedef struct BhCount {
    unsigned runs;              /* atomic */
    unsigned wrong_thread;      /* atomic */
    GThread *owner;
} BhCount;

static void count_bh(void *opaque)
{
    BhCount *c = opaque;

    if (g_thread_self() != c->owner) {
        __atomic_add_fetch(&c->wrong_thread, 1, __ATOMIC_RELAXED);
    }
    __atomic_add_fetch(&c->runs, 1, __ATOMIC_RELEASE);
}

/* Drain everything that is ready without blocking. */
static void poll_idle(AioContext *ctx)
{
    for (int i = 0; i < 1000 && aio_poll(ctx, false); i++) {
    }
}

static void test_bh_same_thread(void)
{
    AioContext *ctx = aio_get_current();
    BhCount c = { .owner = g_thread_self() };

    poll_idle(ctx);
    aio_bh_schedule(ctx, count_bh, &c);
    g_assert_cmpuint(c.runs, ==, 0);            /* soon, not now */
    g_assert_true(aio_poll(ctx, false));
    g_assert_cmpuint(c.runs, ==, 1);
    g_assert_false(aio_poll(ctx, false));       /* once */
    g_assert_cmpuint(c.runs, ==, 1);

    /* Blocking poll with a bottom half pending returns at once. */
    aio_bh_schedule(ctx, count_bh, &c);
    g_assert_true(aio_poll(ctx, true));
    g_assert_cmpuint(c.runs, ==, 2);
    g_assert_cmpuint(c.wrong_thread, ==, 0);
}

typedef struct OrderLog {
    int v[16];
    int n;
} OrderLog;

typedef struct OrderArg {
    OrderLog *log;
    int id;
} OrderArg;

static void order_bh(void *opaque)
{
    OrderArg *a = opaque;

    a->log->v[a->log->n++] = a->id;
}

/* Bottom halves scheduled by one thread run oldest first. */
static void test_bh_order(void)
{
    AioContext *ctx = aio_get_current();
    OrderLog log = { 0 };
    OrderArg args[8];

    for (int i = 0; i < 8; i++) {
        args[i] = (OrderArg){ .log = &log, .id = i };
        aio_bh_schedule(ctx, order_bh, &args[i]);
    }
    poll_idle(ctx);
    g_assert_cmpint(log.n, ==, 8);
    for (int i = 0; i < log.n; i++) {
        g_assert_cmpint(log.v[i], ==, i);
    }
}

typedef struct Resched {
    AioContext *ctx;
    int runs;
} Resched;

static void resched_bh(void *opaque)
{
    Resched *r = opaque;

    if (++r->runs < 3) {
        aio_bh_schedule(r->ctx, resched_bh, r);
    }
}

/* A bottom half scheduled from a bottom half runs on a later poll; a blocking poll sees it
 * (no lost wake-up while the loop is dispatching). */
static void test_bh_from_bh(void)
{
    Resched r = { .ctx = aio_get_current() };

    aio_bh_schedule(r.ctx, resched_bh, &r);
    while (r.runs < 3) {
        g_assert_true(aio_poll(r.ctx, true));
    }
    g_assert_cmpint(r.runs, ==, 3);
    g_assert_false(aio_poll(r.ctx, false));
}

#define BH_THREADS      4
#define BH_PER_THREAD   250

typedef struct BhThreadArg {
    AioContext *ctx;
    BhCount *count;
} BhThreadArg;

static gpointer schedule_bhs_thread(gpointer opaque)
{
    BhThreadArg *a = opaque;

    for (int i = 0; i < BH_PER_THREAD; i++) {
        aio_bh_schedule(a->ctx, count_bh, a->count);
        if (i % 50 == 0) {
            g_usleep(100);
        }
    }
    return NULL;
}

/* Bottom halves scheduled from other threads each run once, in the owner thread. */
static void test_bh_other_threads(void)
{
    AioContext *ctx = aio_get_current();
    BhCount c = { .owner = g_thread_self() };
    BhThreadArg arg = { .ctx = ctx, .count = &c };
    GThread *threads[BH_THREADS];

    for (int i = 0; i < BH_THREADS; i++) {
        threads[i] = g_thread_new("bh", schedule_bhs_thread, &arg);
    }
    uh_poll_until_count(&c.runs, BH_THREADS * BH_PER_THREAD);
    for (int i = 0; i < BH_THREADS; i++) {
        g_thread_join(threads[i]);
    }
    poll_idle(ctx);
    g_assert_cmpuint(c.runs, ==, BH_THREADS * BH_PER_THREAD);
    g_assert_cmpuint(c.wrong_thread, ==, 0);
}

/* --- blocking polls ------------------------------------------------------------------------- */

typedef struct Delayed {
    AioContext *ctx;
    BhCount *count;
    gulong delay_us;
} Delayed;

static gpointer delayed_bh_thread(gpointer opaque)
{
    Delayed *d = opaque;

    if (d->delay_us) {
        g_usleep(d->delay_us);
    }
    aio_bh_schedule(d->ctx, count_bh, d->count);
    return NULL;
}

/* aio_poll(blocking) with nothing to do sleeps until another thread schedules a bottom half.
 * Without delay the schedule races with going to sleep: a lost wake-up hangs (watchdog). */
static void test_poll_blocking_wakeup(void)
{
    AioContext *ctx = aio_get_current();

    poll_idle(ctx);
    for (int round = 0; round < 300; round++) {
        BhCount c = { .owner = g_thread_self() };
        Delayed d = { .ctx = ctx, .count = &c, .delay_us = round < 3 ? 20000 : round % 7 };
        GThread *t = g_thread_new("bh-later", delayed_bh_thread, &d);

        while (__atomic_load_n(&c.runs, __ATOMIC_ACQUIRE) == 0) {
            aio_poll(ctx, true);
        }
        g_thread_join(t);
        g_assert_cmpuint(c.runs, ==, 1);
        g_assert_cmpuint(c.wrong_thread, ==, 0);
    }
}

static void test_poll_nonblocking_idle(void)
{
    AioContext *ctx = aio_get_current();
    int64_t start;

    poll_idle(ctx);
    start = g_get_monotonic_time();
    g_assert_false(aio_poll(ctx, false));
    g_assert_cmpint(g_get_monotonic_time() - start, <, G_USEC_PER_SEC);
}

typedef struct Notifier {
    AioContext *ctx;
    int sent;                   /* atomic: notifications the thread has started to send */
    bool woken;                 /* atomic: set by the polling thread */
} Notifier;

/* Let the polling thread go to sleep first, then notify it every millisecond until it says it
 * woke.  The counter is raised before each aio_notify, so a poll that returns because of one
 * always sees it non-zero. */
static gpointer notify_thread(gpointer opaque)
{
    Notifier *n = opaque;

    g_usleep(20 * 1000);
    while (!__atomic_load_n(&n->woken, __ATOMIC_ACQUIRE)) {
        __atomic_add_fetch(&n->sent, 1, __ATOMIC_RELEASE);
        aio_notify(n->ctx);
        g_usleep(1000);
    }
    return NULL;
}

/* aio_notify wakes a thread blocked in aio_poll, and a blocking aio_poll with nothing to do
 * does not return before it is notified. */
static void test_poll_notify(void)
{
    AioContext *ctx = aio_get_current();
    Notifier n = { .ctx = ctx };
    GThread *t;
    int sent;

    poll_idle(ctx);
    t = g_thread_new("notify", notify_thread, &n);
    aio_poll(ctx, true);
    sent = __atomic_load_n(&n.sent, __ATOMIC_ACQUIRE);
    __atomic_store_n(&n.woken, true, __ATOMIC_RELEASE);
    g_thread_join(t);
    /* 0 would mean aio_poll returned with nothing to wake it: it did not block. */
    g_assert_cmpint(sent, >=, 1);
}

/* --- fd handlers ---------------------------------------------------------------------------- */

typedef struct PipeTest {
    AioContext *ctx;
    int fds[2];
    int reads;
    int writes;
    char last;
    bool remove_self;
    struct PipeTest *other;     /* handler to remove from this one's callback */
} PipeTest;

static void pipe_open(PipeTest *p)
{
    p->ctx = aio_get_current();
    g_assert_cmpint(pipe2(p->fds, O_NONBLOCK | O_CLOEXEC), ==, 0);
}

static void pipe_close(PipeTest *p)
{
    close(p->fds[0]);
    close(p->fds[1]);
}

static void pipe_put(PipeTest *p, char c)
{
    g_assert_cmpint(write(p->fds[1], &c, 1), ==, 1);
}

static void pipe_read_cb(void *opaque)
{
    PipeTest *p = opaque;
    char c;

    while (read(p->fds[0], &c, 1) == 1) {
        p->last = c;
        p->reads++;
    }
    if (p->remove_self) {
        aio_set_fd_handler(p->ctx, p->fds[0], NULL, NULL, NULL);
    }
    if (p->other) {
        aio_set_fd_handler(p->ctx, p->other->fds[0], NULL, NULL, NULL);
    }
}

static void test_fd_read(void)
{
    PipeTest p = { 0 };

    pipe_open(&p);
    aio_set_fd_handler(p.ctx, p.fds[0], pipe_read_cb, NULL, &p);
    poll_idle(p.ctx);
    g_assert_cmpint(p.reads, ==, 0);            /* nothing to read: not called */

    pipe_put(&p, 'a');
    g_assert_true(aio_poll(p.ctx, false));
    g_assert_cmpint(p.reads, ==, 1);
    g_assert_cmpint(p.last, ==, 'a');
    g_assert_false(aio_poll(p.ctx, false));     /* level-triggered, but drained */

    pipe_put(&p, 'b');
    g_assert_true(aio_poll(p.ctx, true));
    g_assert_cmpint(p.reads, ==, 2);
    g_assert_cmpint(p.last, ==, 'b');

    /* Removed: more data does not call it. */
    aio_set_fd_handler(p.ctx, p.fds[0], NULL, NULL, NULL);
    pipe_put(&p, 'c');
    g_assert_false(aio_poll(p.ctx, false));
    g_assert_cmpint(p.reads, ==, 2);
    pipe_close(&p);
}

static void test_fd_remove_in_callback(void)
{
    PipeTest p = { .remove_self = true };

    pipe_open(&p);
    aio_set_fd_handler(p.ctx, p.fds[0], pipe_read_cb, NULL, &p);
    pipe_put(&p, 'x');
    g_assert_true(aio_poll(p.ctx, false));
    g_assert_cmpint(p.reads, ==, 1);

    pipe_put(&p, 'y');
    g_assert_false(aio_poll(p.ctx, false));
    g_assert_cmpint(p.reads, ==, 1);

    /* It can be added again afterwards. */
    p.remove_self = false;
    aio_set_fd_handler(p.ctx, p.fds[0], pipe_read_cb, NULL, &p);
    g_assert_true(aio_poll(p.ctx, false));
    g_assert_cmpint(p.reads, ==, 2);
    g_assert_cmpint(p.last, ==, 'y');
    aio_set_fd_handler(p.ctx, p.fds[0], NULL, NULL, NULL);
    pipe_close(&p);
}

/* Two fds ready in the same poll: whichever callback runs first removes the other handler, which
 * then must not be called (nor its freed memory touched). */
static void test_fd_remove_other_in_callback(void)
{
    PipeTest a = { 0 }, b = { 0 };

    pipe_open(&a);
    pipe_open(&b);
    a.other = &b;
    b.other = &a;
    aio_set_fd_handler(a.ctx, a.fds[0], pipe_read_cb, NULL, &a);
    aio_set_fd_handler(b.ctx, b.fds[0], pipe_read_cb, NULL, &b);
    pipe_put(&a, '1');
    pipe_put(&b, '2');
    g_assert_true(aio_poll(a.ctx, false));
    g_assert_cmpint(a.reads + b.reads, ==, 1);
    g_assert_false(aio_poll(a.ctx, false));
    g_assert_cmpint(a.reads + b.reads, ==, 1);
    /* The survivor removed the other; remove the survivor too. */
    aio_set_fd_handler(a.ctx, a.reads ? a.fds[0] : b.fds[0], NULL, NULL, NULL);
    pipe_close(&a);
    pipe_close(&b);
}

static void pipe_write_cb(void *opaque)
{
    PipeTest *p = opaque;

    p->writes++;
    aio_set_fd_handler(p->ctx, p->fds[1], NULL, NULL, NULL);
}

static void test_fd_write(void)
{
    PipeTest p = { 0 };
    char c;

    pipe_open(&p);
    aio_set_fd_handler(p.ctx, p.fds[1], NULL, pipe_write_cb, &p);
    g_assert_true(aio_poll(p.ctx, false));
    g_assert_cmpint(p.writes, ==, 1);
    g_assert_cmpint(p.reads, ==, 0);
    g_assert_false(aio_poll(p.ctx, false));
    g_assert_cmpint(read(p.fds[0], &c, 1), ==, -1);
    pipe_close(&p);
}

static void other_read_cb(void *opaque)
{
    PipeTest *p = opaque;
    char c;

    while (read(p->fds[0], &c, 1) == 1) {
        p->writes++;            /* counted apart from pipe_read_cb */
    }
}

/* Setting a handler again for the same fd replaces it. */
static void test_fd_replace(void)
{
    PipeTest p = { 0 };

    pipe_open(&p);
    aio_set_fd_handler(p.ctx, p.fds[0], pipe_read_cb, NULL, &p);
    aio_set_fd_handler(p.ctx, p.fds[0], other_read_cb, NULL, &p);
    pipe_put(&p, 'z');
    g_assert_true(aio_poll(p.ctx, false));
    g_assert_cmpint(p.reads, ==, 0);
    g_assert_cmpint(p.writes, ==, 1);
    aio_set_fd_handler(p.ctx, p.fds[0], NULL, NULL, NULL);
    pipe_close(&p);
}

/* --- external fd handlers ------------------------------------------------------------------- */

typedef struct NestedPoll {
    PipeTest *p;
    bool blocking;
    bool ran;
    bool progress;              /* what the nested aio_poll returned */
    int reads_seen;             /* p->reads during the nested poll */
    BhCount *wake;              /* blocking: a thread schedules a bottom half counted here */
} NestedPoll;

/* A bottom half that polls the loop again: the nesting aio_run_coroutine does in a handler. */
static void nested_poll_bh(void *opaque)
{
    NestedPoll *n = opaque;

    n->progress = aio_poll(n->p->ctx, n->blocking);
    n->reads_seen = n->p->reads;
    n->ran = true;
}

/* An external handler runs in the outermost poll only; a nested poll leaves it alone. */
static void test_external_outer_only(void)
{
    PipeTest p = { 0 };
    NestedPoll n = { .p = &p };

    pipe_open(&p);
    aio_set_fd_handler_external(p.ctx, p.fds[0], pipe_read_cb, NULL, &p);
    poll_idle(p.ctx);
    pipe_put(&p, 'e');
    aio_bh_schedule(p.ctx, nested_poll_bh, &n);
    aio_poll(p.ctx, false);
    g_assert_true(n.ran);
    g_assert_cmpint(n.reads_seen, ==, 0);
    g_assert_false(n.progress);                 /* the ready fd was not even reported */

    /* The next outermost poll runs it. */
    poll_idle(p.ctx);
    g_assert_cmpint(p.reads, ==, 1);
    g_assert_cmpint(p.last, ==, 'e');
    aio_set_fd_handler_external(p.ctx, p.fds[0], NULL, NULL, NULL);
    pipe_close(&p);
}

/* A nested blocking poll sleeps despite a ready external fd (it does not spin on it) and
 * wakes for the bottom half another thread schedules. */
static void test_external_nested_no_spin(void)
{
    PipeTest p = { 0 };
    BhCount c = { .owner = g_thread_self() };
    NestedPoll n = { .p = &p, .blocking = true };
    Delayed d = { .count = &c, .delay_us = 20000 };
    GThread *t;

    pipe_open(&p);
    d.ctx = p.ctx;
    aio_set_fd_handler_external(p.ctx, p.fds[0], pipe_read_cb, NULL, &p);
    poll_idle(p.ctx);
    pipe_put(&p, 's');
    t = g_thread_new("bh-later", delayed_bh_thread, &d);
    aio_bh_schedule(p.ctx, nested_poll_bh, &n);
    aio_poll(p.ctx, false);
    g_thread_join(t);
    g_assert_true(n.ran);
    g_assert_true(n.progress);                  /* woken by the bottom half, not the fd */
    g_assert_cmpuint(c.runs, ==, 1);
    g_assert_cmpint(n.reads_seen, ==, 0);
    poll_idle(p.ctx);
    g_assert_cmpint(p.reads, ==, 1);
    aio_set_fd_handler_external(p.ctx, p.fds[0], NULL, NULL, NULL);
    pipe_close(&p);
}

typedef struct ExtRun {
    PipeTest *p;
    int reads_seen;
} ExtRun;

static void coroutine_fn ext_run_entry(void *opaque)
{
    ExtRun *e = opaque;

    uh_co_yield_to_loop();
    uh_co_yield_to_loop();
    e->reads_seen = e->p->reads;
}

/* aio_run_coroutine outside any poll (a daemon opening its first image) is the outermost
 * poll, and still serves no external handler. */
static void test_external_run_coroutine(void)
{
    PipeTest p = { 0 };
    ExtRun e = { .p = &p, .reads_seen = -1 };

    pipe_open(&p);
    aio_set_fd_handler_external(p.ctx, p.fds[0], pipe_read_cb, NULL, &p);
    poll_idle(p.ctx);
    pipe_put(&p, 'r');
    aio_run_coroutine(ext_run_entry, &e);
    g_assert_cmpint(e.reads_seen, ==, 0);
    g_assert_cmpint(p.reads, ==, 0);
    poll_idle(p.ctx);
    g_assert_cmpint(p.reads, ==, 1);
    aio_set_fd_handler_external(p.ctx, p.fds[0], NULL, NULL, NULL);
    pipe_close(&p);
}

/* aio_disable_external holds external handlers off, counted; ordinary ones still run. */
static void test_external_disable(void)
{
    PipeTest ext = { 0 }, plain = { 0 };

    pipe_open(&ext);
    pipe_open(&plain);
    aio_set_fd_handler_external(ext.ctx, ext.fds[0], pipe_read_cb, NULL, &ext);
    aio_set_fd_handler(plain.ctx, plain.fds[0], pipe_read_cb, NULL, &plain);
    aio_disable_external(ext.ctx);
    aio_disable_external(ext.ctx);
    pipe_put(&ext, 'x');
    pipe_put(&plain, 'y');
    poll_idle(ext.ctx);
    g_assert_cmpint(ext.reads, ==, 0);
    g_assert_cmpint(plain.reads, ==, 1);
    aio_enable_external(ext.ctx);
    poll_idle(ext.ctx);
    g_assert_cmpint(ext.reads, ==, 0);
    aio_enable_external(ext.ctx);
    poll_idle(ext.ctx);
    g_assert_cmpint(ext.reads, ==, 1);

    /* Moved to the ordinary kind, it runs nested too; and back. */
    aio_set_fd_handler(ext.ctx, ext.fds[0], pipe_read_cb, NULL, &ext);
    aio_disable_external(ext.ctx);
    pipe_put(&ext, 'z');
    poll_idle(ext.ctx);
    g_assert_cmpint(ext.reads, ==, 2);
    aio_enable_external(ext.ctx);
    aio_set_fd_handler_external(ext.ctx, ext.fds[0], NULL, NULL, NULL);
    aio_set_fd_handler(plain.ctx, plain.fds[0], NULL, NULL, NULL);
    pipe_close(&ext);
    pipe_close(&plain);
}

/* --- aio_run_coroutine and aio_co_schedule ----------------------------------------------------- */

typedef struct RunTest {
    Coroutine *co;
    AioContext *ctx;
    int step;
    bool finished;
    GThread *resumed_in;
    gulong delay_us;
} RunTest;

static void wake_bh(void *opaque)
{
    RunTest *r = opaque;

    g_assert_cmpint(r->step, ==, 1);
    r->step = 2;
    coroutine_wake(r->co);
}

static void coroutine_fn run_bh_entry(void *opaque)
{
    RunTest *r = opaque;

    r->co = coroutine_self();
    r->step = 1;
    aio_bh_schedule(aio_get_current(), wake_bh, r);
    coroutine_yield();
    g_assert_cmpint(r->step, ==, 2);
    r->step = 3;
    uh_co_yield_to_loop();              /* and once more through the loop */
    r->resumed_in = g_thread_self();
    r->finished = true;
}

/* aio_run_coroutine returns only once the coroutine has finished, however it waits. */
static void test_run_coroutine_bh(void)
{
    RunTest r = { 0 };
    unsigned base = coroutine_count();

    aio_run_coroutine(run_bh_entry, &r);
    g_assert_true(r.finished);
    g_assert_cmpint(r.step, ==, 3);
    g_assert_true(r.resumed_in == g_thread_self());
    g_assert_cmpuint(coroutine_count(), ==, base);
    g_assert_false(in_coroutine());
}

static gpointer bh_later_thread(gpointer opaque)
{
    RunTest *r = opaque;

    g_usleep(r->delay_us);
    aio_bh_schedule(r->ctx, wake_bh, r);
    return NULL;
}

static void coroutine_fn run_thread_bh_entry(void *opaque)
{
    RunTest *r = opaque;
    GThread *t;

    r->co = coroutine_self();
    r->ctx = aio_get_current();
    r->step = 1;
    t = g_thread_new("bh-later", bh_later_thread, r);
    coroutine_yield();
    g_thread_join(t);
    r->resumed_in = g_thread_self();
    r->finished = true;
}

/* The wake-up comes from a bottom half another thread schedules while the loop sleeps. */
static void test_run_coroutine_thread_bh(void)
{
    RunTest r = { .delay_us = 20000 };

    aio_run_coroutine(run_thread_bh_entry, &r);
    g_assert_true(r.finished);
    g_assert_cmpint(r.step, ==, 2);
    g_assert_true(r.resumed_in == g_thread_self());
}

static void coroutine_fn plain_entry(void *opaque)
{
    int *n = opaque;

    (*n)++;
}

/* A coroutine that never yields. */
static void test_run_coroutine_no_yield(void)
{
    int n = 0;

    aio_run_coroutine(plain_entry, &n);
    g_assert_cmpint(n, ==, 1);
}

typedef struct SchedTest {
    AioContext *ctx;
    Coroutine *co;
    GThread *resumed_in;
    bool done;
} SchedTest;

static void coroutine_fn sched_entry(void *opaque)
{
    SchedTest *s = opaque;

    coroutine_yield();
    s->resumed_in = g_thread_self();
    __atomic_store_n(&s->done, true, __ATOMIC_RELEASE);
}

static gpointer co_schedule_thread(gpointer opaque)
{
    SchedTest *s = opaque;

    g_usleep(5000);
    aio_co_schedule(s->ctx, s->co);
    return NULL;
}

/* aio_co_schedule from another thread enters the coroutine in the context's thread. */
static void test_co_schedule_other_thread(void)
{
    SchedTest s = { .ctx = aio_get_current() };
    GThread *t;

    s.co = coroutine_create(sched_entry, &s);
    coroutine_enter(s.co);
    t = g_thread_new("co-schedule", co_schedule_thread, &s);
    uh_poll_until(&s.done);
    g_thread_join(t);
    g_assert_true(s.resumed_in == g_thread_self());
}

/* --- event loops in other threads ---------------------------------------------------------- */

typedef struct LoopThread {
    AioContext *ctx;            /* set by the thread (bound) or given (unbound) */
    bool unbound;
    bool ready;                 /* atomic */
    bool stop;                  /* set by a bottom half in the thread */
    BhCount count;
    GThread *thread;
} LoopThread;

static void stop_bh(void *opaque)
{
    LoopThread *l = opaque;

    l->stop = true;
}

static gpointer loop_thread(gpointer opaque)
{
    LoopThread *l = opaque;

    if (l->unbound) {
        aio_context_set_current(l->ctx);
    } else {
        g_autoptr(GError) err = NULL;
        l->ctx = aio_context_new(&err);
        g_assert_no_error(err);
    }
    g_assert_true(aio_get_current() == l->ctx);
    l->count.owner = g_thread_self();
    __atomic_store_n(&l->ready, true, __ATOMIC_RELEASE);
    while (!l->stop) {
        aio_poll(l->ctx, true);
    }
    if (!l->unbound) {
        aio_context_free(l->ctx);
    }
    return NULL;
}

static void run_loop_thread(LoopThread *l)
{
    l->thread = g_thread_new("loop", loop_thread, l);
    while (!__atomic_load_n(&l->ready, __ATOMIC_ACQUIRE)) {
        g_usleep(1000);
    }
    for (int i = 0; i < 100; i++) {
        aio_bh_schedule(l->ctx, count_bh, &l->count);
    }
    aio_bh_schedule(l->ctx, stop_bh, l);
    g_thread_join(l->thread);
    g_assert_cmpuint(l->count.runs, ==, 100);
    g_assert_cmpuint(l->count.wrong_thread, ==, 0);
}

/* A thread with its own loop (aio_context_new) runs the bottom halves others schedule on it. */
static void test_context_other_thread(void)
{
    AioContext *mine = aio_get_current();
    LoopThread l = { 0 };

    run_loop_thread(&l);
    g_assert_true(aio_get_current() == mine);   /* ours is untouched */
}

/* aio_context_new_unbound does not become the caller's loop; another thread adopts it. */
static void test_context_unbound(void)
{
    g_autoptr(GError) err = NULL;
    AioContext *mine = aio_get_current();
    LoopThread l = { .unbound = true };

    l.ctx = aio_context_new_unbound(&err);
    g_assert_no_error(err);
    g_assert_nonnull(l.ctx);
    g_assert_true(aio_get_current() == mine);
    run_loop_thread(&l);
    aio_context_free(l.ctx);
    g_assert_true(aio_get_current() == mine);
}

/* --- thread pool ------------------------------------------------------------------------------ */

typedef struct PoolReq {
    int value;
    GThread *ran_in;
    GThread *caller;
    GThread *resumed_in;
    int ret;
} PoolReq;

static int pool_fn(void *opaque)
{
    PoolReq *p = opaque;

    p->ran_in = g_thread_self();
    return p->value;
}

static void coroutine_fn pool_entry(void *opaque)
{
    PoolReq *p = opaque;

    p->caller = g_thread_self();
    p->ret = thread_pool_run(pool_fn, p);
    p->resumed_in = g_thread_self();
}

static void test_thread_pool_value(void)
{
    static const int values[] = { 42, 0, -EIO, 1 << 30 };

    for (size_t i = 0; i < G_N_ELEMENTS(values); i++) {
        PoolReq p = { .value = values[i] };

        aio_run_coroutine(pool_entry, &p);
        g_assert_cmpint(p.ret, ==, values[i]);
        g_assert_nonnull(p.ran_in);
        g_assert_true(p.ran_in != p.caller);            /* on a worker thread */
        g_assert_true(p.resumed_in == p.caller);        /* back home afterwards */
        g_assert_true(p.caller == g_thread_self());
    }
}

#define POOL_PARALLEL 4

typedef struct Rendezvous {
    GMutex lock;
    GCond cond;
    int arrived;
} Rendezvous;

typedef struct ParallelReq {
    Rendezvous *rv;
    int id;
    int ret;
    unsigned *done;
} ParallelReq;

/* Wait until POOL_PARALLEL calls are running at the same time (or give up after 10 s). */
static int rendezvous_fn(void *opaque)
{
    ParallelReq *p = opaque;
    Rendezvous *rv = p->rv;
    gint64 deadline = g_get_monotonic_time() + 10 * G_TIME_SPAN_SECOND;
    int ret = 100 + p->id;

    g_mutex_lock(&rv->lock);
    rv->arrived++;
    g_cond_broadcast(&rv->cond);
    while (rv->arrived < POOL_PARALLEL) {
        if (!g_cond_wait_until(&rv->cond, &rv->lock, deadline)) {
            ret = -ETIMEDOUT;
            break;
        }
    }
    g_mutex_unlock(&rv->lock);
    return ret;
}

static void coroutine_fn parallel_entry(void *opaque)
{
    ParallelReq *p = opaque;

    p->ret = thread_pool_run(rendezvous_fn, p);
    __atomic_add_fetch(p->done, 1, __ATOMIC_RELEASE);
}

/* Requests from several coroutines run on workers at the same time. */
static void test_thread_pool_parallel(void)
{
    Rendezvous rv = { .arrived = 0 };
    ParallelReq reqs[POOL_PARALLEL];
    unsigned done = 0;

    g_mutex_init(&rv.lock);
    g_cond_init(&rv.cond);
    for (int i = 0; i < POOL_PARALLEL; i++) {
        reqs[i] = (ParallelReq){ .rv = &rv, .id = i, .done = &done };
        coroutine_enter(coroutine_create(parallel_entry, &reqs[i]));
    }
    uh_poll_until_count(&done, POOL_PARALLEL);
    for (int i = 0; i < POOL_PARALLEL; i++) {
        g_assert_cmpint(reqs[i].ret, ==, 100 + i);
    }
    g_mutex_clear(&rv.lock);
    g_cond_clear(&rv.cond);
}

int main(int argc, char **argv)
{
    uh_test_init(&argc, &argv);
    uh_test_add("/aio/bh/same-thread", test_bh_same_thread);
    uh_test_add("/aio/bh/order", test_bh_order);
    uh_test_add("/aio/bh/from-bh", test_bh_from_bh);
    uh_test_add("/aio/bh/other-threads", test_bh_other_threads);
    uh_test_add("/aio/poll/nonblocking-idle", test_poll_nonblocking_idle);
    uh_test_add("/aio/poll/blocking-wakeup", test_poll_blocking_wakeup);
    uh_test_add("/aio/poll/notify", test_poll_notify);
    uh_test_add("/aio/fd/read", test_fd_read);
    uh_test_add("/aio/fd/remove-in-callback", test_fd_remove_in_callback);
    uh_test_add("/aio/fd/remove-other-in-callback", test_fd_remove_other_in_callback);
    uh_test_add("/aio/fd/write", test_fd_write);
    uh_test_add("/aio/fd/replace", test_fd_replace);
    uh_test_add("/aio/external/outer-only", test_external_outer_only);
    uh_test_add("/aio/external/nested-no-spin", test_external_nested_no_spin);
    uh_test_add("/aio/external/run-coroutine", test_external_run_coroutine);
    uh_test_add("/aio/external/disable", test_external_disable);
    uh_test_add("/aio/run-coroutine/bh", test_run_coroutine_bh);
    uh_test_add("/aio/run-coroutine/thread-bh", test_run_coroutine_thread_bh);
    uh_test_add("/aio/run-coroutine/no-yield", test_run_coroutine_no_yield);
    uh_test_add("/aio/co-schedule/other-thread", test_co_schedule_other_thread);
    uh_test_add("/aio/context/other-thread", test_context_other_thread);
    uh_test_add("/aio/context/unbound", test_context_unbound);
    uh_test_add("/aio/thread-pool/value", test_thread_pool_value);
    uh_test_add("/aio/thread-pool/parallel", test_thread_pool_parallel);
    return uh_test_run();
}
