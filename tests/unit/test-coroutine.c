/* test-coroutine.c - unit tests for coroutines, their pool, wake-ups across threads, CoMutex and
 * CoQueue (block/coroutine.c). */
#include "config.h"
#include "unit-helpers.h"

/* --- helpers -------------------------------------------------------------------------------- */

/* A log of small integers, appended to by coroutines and the test body, to check ordering. */
typedef struct Log {
    int v[64];
    int n;
} Log;

static void log_add(Log *l, int v)
{
    g_assert_cmpint(l->n, <, (int)G_N_ELEMENTS(l->v));
    l->v[l->n++] = v;
}

static void log_check(const Log *l, const int *expected, int n)
{
    g_assert_cmpmem(l->v, l->n * sizeof(int), expected, n * sizeof(int));
}

#define LOG_CHECK(l, ...) \
    do { \
        static const int exp_[] = { __VA_ARGS__ }; \
        log_check((l), exp_, G_N_ELEMENTS(exp_)); \
    } while (0)

/* Number of open file descriptors of this process. */
static int count_fds(void)
{
    GDir *d = g_dir_open("/proc/self/fd", 0, NULL);
    int n = 0;

    g_assert_nonnull(d);
    while (g_dir_read_name(d)) {
        n++;
    }
    g_dir_close(d);
    return n;
}

/* Number of mappings in this process, to see whether coroutine stacks leak. */
static int count_mappings(void)
{
    g_autofree char *maps = NULL;
    int n = 0;

    g_assert_true(g_file_get_contents("/proc/self/maps", &maps, NULL, NULL));
    for (const char *p = maps; *p; p++) {
        n += *p == '\n';
    }
    return n;
}

/* --- create, enter, yield -------------------------------------------------------------------- */

static void coroutine_fn yield_twice_entry(void *opaque)
{
    Log *l = opaque;

    log_add(l, 1);
    coroutine_yield();
    log_add(l, 3);
    coroutine_yield();
    log_add(l, 5);
}

static void test_yield_enter(void)
{
    unsigned base = coroutine_count();
    Log l = { 0 };
    Coroutine *co = coroutine_create(yield_twice_entry, &l);

    g_assert_nonnull(co);
    g_assert_cmpuint(coroutine_count(), ==, base + 1);
    g_assert_cmpint(l.n, ==, 0);        /* created, not yet run */

    coroutine_enter(co);
    log_add(&l, 2);
    coroutine_enter(co);
    log_add(&l, 4);
    g_assert_cmpuint(coroutine_count(), ==, base + 1);
    coroutine_enter(co);                /* runs to the end and is freed */
    LOG_CHECK(&l, 1, 2, 3, 4, 5);
    g_assert_cmpuint(coroutine_count(), ==, base);
}

typedef struct Counter {
    int entered;
    int rounds;
    bool done;
} Counter;

static void coroutine_fn count_rounds_entry(void *opaque)
{
    Counter *c = opaque;

    for (int i = 0; i < c->rounds; i++) {
        c->entered++;
        coroutine_yield();
    }
    c->done = true;
}

/* Each enter resumes exactly one step; opaque reaches the entry unchanged. */
static void test_yield_many(void)
{
    Counter c = { .rounds = 1000 };
    Coroutine *co = coroutine_create(count_rounds_entry, &c);
    int enters = 0;

    while (!c.done) {
        coroutine_enter(co);
        enters++;
        g_assert_cmpint(c.entered, ==, MIN(enters, c.rounds));
    }
    g_assert_cmpint(enters, ==, c.rounds + 1);
}

/* --- the pool ------------------------------------------------------------------------------ */

static void coroutine_fn nop_entry(void *opaque)
{
    int *ran = opaque;

    (*ran)++;
}

static void coroutine_fn yield_once_entry(void *opaque)
{
    int *ran = opaque;

    coroutine_yield();
    (*ran)++;
}

/* A coroutine that terminates goes back to the pool: the count drops and the next create
 * reuses it. */
static void test_pool_reuse(void)
{
    unsigned base = coroutine_count();
    Coroutine *cos[10];
    int ran = 0;
    Coroutine *a, *b;

    for (int i = 0; i < 10; i++) {
        cos[i] = coroutine_create(yield_once_entry, &ran);
        coroutine_enter(cos[i]);
    }
    g_assert_cmpuint(coroutine_count(), ==, base + 10);
    for (int i = 0; i < 10; i++) {
        coroutine_enter(cos[i]);
        g_assert_cmpuint(coroutine_count(), ==, base + 10 - i - 1);
    }
    g_assert_cmpint(ran, ==, 10);

    a = coroutine_create(nop_entry, &ran);
    coroutine_enter(a);
    b = coroutine_create(nop_entry, &ran);
    g_assert_true(a == b);              /* the stack just released was taken from the pool */
    coroutine_enter(b);
    g_assert_cmpint(ran, ==, 12);
    g_assert_cmpuint(coroutine_count(), ==, base);
}

/* Creating and finishing many coroutines one after the other uses no new stacks. */
static void test_pool_no_leak(void)
{
    unsigned base = coroutine_count();
    int ran = 0;
    int maps_before, maps_after;

    /* Warm the pool up first, so that its own growth is not counted. */
    for (int i = 0; i < 10; i++) {
        coroutine_enter(coroutine_create(nop_entry, &ran));
    }
    maps_before = count_mappings();
    for (int i = 0; i < 10000; i++) {
        coroutine_enter(coroutine_create(nop_entry, &ran));
        if (coroutine_count() != base) {
            g_assert_cmpuint(coroutine_count(), ==, base);
            break;
        }
    }
    maps_after = count_mappings();
    g_assert_cmpint(ran, ==, 10010);
    g_assert_cmpuint(coroutine_count(), ==, base);
    /* A leaked stack is at least one new mapping; allow a little noise from malloc arenas. */
    g_assert_cmpint(maps_after - maps_before, <, 20);
}

/* --- nesting and identity --------------------------------------------------------------------- */

typedef struct Nest {
    Log log;
    Coroutine *outer, *inner;
    Coroutine *seen_outer, *seen_inner, *seen_outer_after;
} Nest;

static void coroutine_fn inner_entry(void *opaque)
{
    Nest *n = opaque;

    n->seen_inner = coroutine_self();
    log_add(&n->log, 2);
    coroutine_yield();                  /* back to outer, not to the test */
    log_add(&n->log, 4);
}

static void coroutine_fn outer_entry(void *opaque)
{
    Nest *n = opaque;
    unsigned count = coroutine_count();

    n->seen_outer = coroutine_self();
    log_add(&n->log, 1);
    n->inner = coroutine_create(inner_entry, n);
    g_assert_cmpuint(coroutine_count(), ==, count + 1);
    coroutine_enter(n->inner);
    log_add(&n->log, 3);
    g_assert_true(coroutine_self() == n->outer);
    coroutine_enter(n->inner);          /* inner finishes */
    g_assert_cmpuint(coroutine_count(), ==, count);
    log_add(&n->log, 5);
    coroutine_yield();                  /* back to the test */
    n->seen_outer_after = coroutine_self();
    log_add(&n->log, 7);
}

static void test_nested(void)
{
    unsigned base = coroutine_count();
    Nest n = { 0 };

    n.outer = coroutine_create(outer_entry, &n);
    coroutine_enter(n.outer);
    log_add(&n.log, 6);
    g_assert_false(in_coroutine());
    g_assert_cmpuint(coroutine_count(), ==, base + 1);
    coroutine_enter(n.outer);
    LOG_CHECK(&n.log, 1, 2, 3, 4, 5, 6, 7);
    g_assert_true(n.seen_outer == n.outer);
    g_assert_true(n.seen_outer_after == n.outer);
    g_assert_true(n.seen_inner == n.inner);
    g_assert_true(n.inner != n.outer);
    g_assert_cmpuint(coroutine_count(), ==, base);
}

typedef struct Self {
    Coroutine *self;
    bool in;
    AioContext *ctx;
    GThread *thread;
} Self;

static void coroutine_fn self_entry(void *opaque)
{
    Self *s = opaque;

    s->self = coroutine_self();
    s->in = in_coroutine();
    s->ctx = coroutine_get_context(s->self);
    s->thread = g_thread_self();
}

static void test_self(void)
{
    Self s = { 0 };
    Coroutine *co;

    g_assert_false(in_coroutine());
    g_assert_null(coroutine_self());
    co = coroutine_create(self_entry, &s);
    g_assert_true(coroutine_get_context(co) == aio_get_current());
    coroutine_enter(co);
    g_assert_true(s.self == co);
    g_assert_true(s.in);
    g_assert_true(s.ctx == aio_get_current());
    g_assert_true(s.thread == g_thread_self());
    g_assert_false(in_coroutine());
    g_assert_null(coroutine_self());
}

/* --- coroutine_wake ---------------------------------------------------------------------------- */

typedef struct Wake {
    Coroutine *co;
    GThread *home;
    GThread *resumed_in;
    bool yielded;
    bool done;
    int waker_ran;
} Wake;

static void coroutine_fn wake_entry(void *opaque)
{
    Wake *w = opaque;

    __atomic_store_n(&w->yielded, true, __ATOMIC_RELEASE);
    coroutine_yield();
    w->resumed_in = g_thread_self();
    __atomic_store_n(&w->done, true, __ATOMIC_RELEASE);
}

static gpointer waker_thread(gpointer opaque)
{
    Wake *w = opaque;

    g_usleep(10 * 1000);    /* let the home thread go to sleep in aio_poll first */
    coroutine_wake(w->co);
    /* The coroutine must not run here: it belongs to its home thread. */
    g_assert_true(__atomic_load_n(&w->resumed_in, __ATOMIC_ACQUIRE) != g_thread_self());
    __atomic_store_n(&w->waker_ran, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_wake_from_thread(void)
{
    for (int round = 0; round < 20; round++) {
        Wake w = { .home = g_thread_self() };
        GThread *t;

        w.co = coroutine_create(wake_entry, &w);
        coroutine_enter(w.co);
        g_assert_true(w.yielded);
        t = g_thread_new("waker", waker_thread, &w);
        uh_poll_until(&w.done);
        g_thread_join(t);
        g_assert_true(w.waker_ran);
        g_assert_true(w.resumed_in == w.home);
    }
}

typedef struct ForeignWake {
    Wake *w;
    int fds_before, fds_after;
} ForeignWake;

static gpointer foreign_waker_thread(gpointer opaque)
{
    ForeignWake *f = opaque;

    f->fds_before = count_fds();
    coroutine_wake(f->w->co);
    f->fds_after = count_fds();
    return NULL;
}

/* Waking from a thread that has no event loop of its own must not leave one behind in it (an
 * event loop is an epoll fd and an eventfd that nobody would ever free). */
static void test_wake_from_foreign_thread_no_leak(void)
{
    Wake w = { .home = g_thread_self() };
    ForeignWake f = { .w = &w };
    GThread *t;

    w.co = coroutine_create(wake_entry, &w);
    coroutine_enter(w.co);
    t = g_thread_new("foreign-waker", foreign_waker_thread, &f);
    g_thread_join(t);                   /* the waker is gone before the home loop runs */
    uh_poll_until(&w.done);
    g_assert_true(w.resumed_in == w.home);
    g_assert_cmpint(f.fds_after, ==, f.fds_before);
}

/* Outside any coroutine in the home thread, coroutine_wake enters at once. */
static void test_wake_same_thread(void)
{
    Wake w = { .home = g_thread_self() };

    w.co = coroutine_create(wake_entry, &w);
    coroutine_enter(w.co);
    g_assert_false(w.done);
    coroutine_wake(w.co);
    g_assert_true(w.done);
    g_assert_true(w.resumed_in == w.home);
}

static void coroutine_fn waking_entry(void *opaque)
{
    Wake *w = opaque;

    coroutine_wake(w->co);              /* from a coroutine: must only be scheduled */
    g_assert_false(w->done);
    w->waker_ran = 1;
}

/* Inside another coroutine, coroutine_wake schedules; the event loop resumes the target. */
static void test_wake_from_coroutine(void)
{
    Wake w = { .home = g_thread_self() };

    w.co = coroutine_create(wake_entry, &w);
    coroutine_enter(w.co);
    coroutine_enter(coroutine_create(waking_entry, &w));
    g_assert_cmpint(w.waker_ran, ==, 1);
    g_assert_false(w.done);
    uh_poll_until(&w.done);
    g_assert_true(w.resumed_in == w.home);
}

/* --- CoMutex ------------------------------------------------------------------------------------ */

typedef struct MutexTest {
    CoMutex lock;
    int inside;                 /* coroutines in the critical section */
    int max_inside;
    Coroutine *holder;
    Log order;                  /* order in which the lock was taken */
    unsigned finished;
} MutexTest;

typedef struct MutexArg {
    MutexTest *t;
    int id;
} MutexArg;

static void coroutine_fn mutex_entry(void *opaque)
{
    MutexArg *a = opaque;
    MutexTest *t = a->t;

    co_mutex_lock(&t->lock);
    log_add(&t->order, a->id);
    t->inside++;
    t->max_inside = MAX(t->max_inside, t->inside);
    t->holder = coroutine_self();
    for (int i = 0; i < 5; i++) {
        uh_co_yield_to_loop();          /* everyone else gets to run meanwhile */
        g_assert_true(t->holder == coroutine_self());
        g_assert_cmpint(t->inside, ==, 1);
    }
    t->inside--;
    t->holder = NULL;
    co_mutex_unlock(&t->lock);
    t->finished++;
}

/* Coroutines that yield while holding the lock never overlap, and get it in FIFO order. */
static void test_comutex_exclusion(void)
{
    MutexTest t = { 0 };
    MutexArg args[6];

    co_mutex_init(&t.lock);
    for (int i = 0; i < 6; i++) {
        args[i] = (MutexArg){ .t = &t, .id = i };
        coroutine_enter(coroutine_create(mutex_entry, &args[i]));
    }
    /* The first holds the lock; the others are queued. */
    g_assert_cmpint(t.inside, ==, 1);
    LOG_CHECK(&t.order, 0);
    uh_poll_until_count(&t.finished, 6);
    g_assert_cmpint(t.max_inside, ==, 1);
    LOG_CHECK(&t.order, 0, 1, 2, 3, 4, 5);
    co_mutex_destroy(&t.lock);
}

static void coroutine_fn lock_unlock_entry(void *opaque)
{
    CoMutex *m = opaque;

    co_mutex_lock(m);
    co_mutex_unlock(m);
}

/* An uncontended lock neither yields nor needs the event loop. */
static void test_comutex_uncontended(void)
{
    CoMutex m;
    unsigned base = coroutine_count();

    co_mutex_init(&m);
    for (int i = 0; i < 3; i++) {
        coroutine_enter(coroutine_create(lock_unlock_entry, &m));
        g_assert_cmpuint(coroutine_count(), ==, base);  /* finished without polling */
    }
    g_assert_false(m.locked);
    co_mutex_destroy(&m);
}

#define THREADS     4
#define INCREMENTS  10000

typedef struct SharedCounter {
    CoMutex lock;
    int64_t value;
    int inside;                 /* atomic */
    int overlaps;               /* atomic */
    int wrong_thread;           /* atomic */
} SharedCounter;

typedef struct IncArg {
    SharedCounter *sc;
    GThread *thread;
    bool done;
} IncArg;

static void coroutine_fn increment_entry(void *opaque)
{
    IncArg *a = opaque;
    SharedCounter *sc = a->sc;

    for (int i = 0; i < INCREMENTS; i++) {
        int64_t v;

        co_mutex_lock(&sc->lock);
        if (__atomic_add_fetch(&sc->inside, 1, __ATOMIC_SEQ_CST) != 1) {
            __atomic_add_fetch(&sc->overlaps, 1, __ATOMIC_RELAXED);
        }
        if (g_thread_self() != a->thread) {
            __atomic_add_fetch(&sc->wrong_thread, 1, __ATOMIC_RELAXED);
        }
        v = sc->value;
        uh_co_yield_to_loop();          /* a lost update shows if the lock lets others in */
        sc->value = v + 1;
        __atomic_sub_fetch(&sc->inside, 1, __ATOMIC_SEQ_CST);
        co_mutex_unlock(&sc->lock);
    }
    a->done = true;
}

static gpointer increment_thread(gpointer opaque)
{
    IncArg *a = opaque;
    g_autoptr(GError) err = NULL;
    AioContext *ctx = aio_context_new(&err);

    g_assert_no_error(err);
    g_assert_true(aio_get_current() == ctx);
    a->thread = g_thread_self();
    coroutine_enter(coroutine_create(increment_entry, a));
    while (!a->done) {
        aio_poll(ctx, true);
    }
    aio_context_free(ctx);
    return NULL;
}

/* Coroutines in four threads, each thread with its own event loop, share one CoMutex. */
static void test_comutex_threads(void)
{
    SharedCounter sc = { 0 };
    IncArg args[THREADS];
    GThread *threads[THREADS];

    co_mutex_init(&sc.lock);
    for (int i = 0; i < THREADS; i++) {
        args[i] = (IncArg){ .sc = &sc };
        threads[i] = g_thread_new("inc", increment_thread, &args[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        g_thread_join(threads[i]);
    }
    g_assert_cmpint(sc.overlaps, ==, 0);
    g_assert_cmpint(sc.wrong_thread, ==, 0);
    g_assert_cmpint(sc.value, ==, (int64_t)THREADS * INCREMENTS);
    g_assert_false(sc.lock.locked);
    g_assert_true(g_queue_is_empty(&sc.lock.waiters));
    co_mutex_destroy(&sc.lock);
}

/* --- CoQueue ------------------------------------------------------------------------------------ */

typedef struct QueueTest {
    CoQueue q;
    Log log;
    unsigned done;
} QueueTest;

typedef struct QueueArg {
    QueueTest *t;
    int id;
} QueueArg;

static void coroutine_fn queue_entry(void *opaque)
{
    QueueArg *a = opaque;

    log_add(&a->t->log, a->id);
    co_queue_wait(&a->t->q, NULL);
    log_add(&a->t->log, 10 + a->id);
    a->t->done++;
}

static void test_coqueue_order(void)
{
    QueueTest t = { 0 };
    QueueArg args[5];
    AioContext *ctx = aio_get_current();

    co_queue_init(&t.q);
    g_assert_true(co_queue_empty(&t.q));
    g_assert_false(co_queue_next(&t.q));
    for (int i = 0; i < 5; i++) {
        args[i] = (QueueArg){ .t = &t, .id = i };
        coroutine_enter(coroutine_create(queue_entry, &args[i]));
    }
    LOG_CHECK(&t.log, 0, 1, 2, 3, 4);
    g_assert_false(co_queue_empty(&t.q));

    /* next wakes exactly the first waiter */
    g_assert_true(co_queue_next(&t.q));
    while (aio_poll(ctx, false)) {
    }
    LOG_CHECK(&t.log, 0, 1, 2, 3, 4, 10);
    g_assert_true(co_queue_next(&t.q));
    while (aio_poll(ctx, false)) {
    }
    LOG_CHECK(&t.log, 0, 1, 2, 3, 4, 10, 11);

    /* restart_all wakes the rest, in the order they started waiting */
    co_queue_restart_all(&t.q);
    g_assert_true(co_queue_empty(&t.q));
    uh_poll_until_count(&t.done, 5);
    LOG_CHECK(&t.log, 0, 1, 2, 3, 4, 10, 11, 12, 13, 14);
    g_assert_false(co_queue_next(&t.q));
}

typedef struct CondTest {
    CoQueue q;
    GMutex lock;
    bool ready;                 /* protected by lock */
    GThread *resumed_in;
    bool done;
    bool waiting;
} CondTest;

static void coroutine_fn cond_wait_entry(void *opaque)
{
    CondTest *c = opaque;

    g_mutex_lock(&c->lock);
    __atomic_store_n(&c->waiting, true, __ATOMIC_RELEASE);
    while (!c->ready) {
        co_queue_wait(&c->q, &c->lock);
    }
    g_mutex_unlock(&c->lock);
    c->resumed_in = g_thread_self();
    __atomic_store_n(&c->done, true, __ATOMIC_RELEASE);
}

static gpointer cond_signal_thread(gpointer opaque)
{
    CondTest *c = opaque;

    g_usleep(5 * 1000);
    g_mutex_lock(&c->lock);
    c->ready = true;
    co_queue_next(&c->q);
    g_mutex_unlock(&c->lock);
    return NULL;
}

/* A waiter with a lock, woken from another thread, resumes in its home thread. */
static void test_coqueue_cross_thread(void)
{
    CondTest c = { 0 };
    GThread *t;

    co_queue_init(&c.q);
    g_mutex_init(&c.lock);
    coroutine_enter(coroutine_create(cond_wait_entry, &c));
    g_assert_true(c.waiting);
    g_assert_false(c.done);
    t = g_thread_new("signal", cond_signal_thread, &c);
    uh_poll_until(&c.done);
    g_thread_join(t);
    g_assert_true(c.resumed_in == g_thread_self());
    g_assert_true(co_queue_empty(&c.q));
    g_mutex_clear(&c.lock);
}

int main(int argc, char **argv)
{
    uh_test_init(&argc, &argv);
    uh_test_add("/coroutine/yield-enter", test_yield_enter);
    uh_test_add("/coroutine/yield-many", test_yield_many);
    uh_test_add("/coroutine/pool/reuse", test_pool_reuse);
    uh_test_add("/coroutine/pool/no-leak", test_pool_no_leak);
    uh_test_add("/coroutine/nested", test_nested);
    uh_test_add("/coroutine/self", test_self);
    uh_test_add("/coroutine/wake/from-thread", test_wake_from_thread);
    uh_test_add("/coroutine/wake/foreign-thread-no-leak", test_wake_from_foreign_thread_no_leak);
    uh_test_add("/coroutine/wake/same-thread", test_wake_same_thread);
    uh_test_add("/coroutine/wake/from-coroutine", test_wake_from_coroutine);
    uh_test_add("/coroutine/comutex/exclusion", test_comutex_exclusion);
    uh_test_add("/coroutine/comutex/uncontended", test_comutex_uncontended);
    uh_test_add("/coroutine/comutex/threads", test_comutex_threads);
    uh_test_add("/coroutine/coqueue/order", test_coqueue_order);
    uh_test_add("/coroutine/coqueue/cross-thread", test_coqueue_cross_thread);
    return uh_test_run();
}
