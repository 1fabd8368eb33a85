/* coroutine.c - stackful coroutines (ucontext to start, sigsetjmp/siglongjmp to switch), a
 * per-thread pool of stacks, and the CoQueue/CoMutex waiting primitives.
 *
 * Threads: every coroutine runs only in its home thread (the one that created it); the pool is
 * per thread.  Switching costs no system call: swapcontext runs once per stack, when the pool
 * grows, and all later switches are sigsetjmp/siglongjmp without saving the signal mask.
 */
#include "config.h"
#include "block/coroutine.h"
#include "block/aio.h"
#include "block/coroutine-int.h"
#include "block/util.h"

#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define CO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CO_ASAN 1
#endif
#endif
#ifdef CO_ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define CO_VALGRIND 1
#endif
#endif

#define CO_STACK_SIZE   (512 * 1024)    /* mapped lazily: untouched pages cost nothing */
#define CO_POOL_MAX     256             /* idle coroutines kept per thread */

enum { CO_ENTER = 1, CO_YIELD = 2, CO_TERMINATE = 3 };

struct Coroutine {
    CoroutineEntry *entry;
    void *opaque;
    Coroutine *caller;          /* who entered us; NULL while not running */
    AioContext *ctx;            /* home event loop */
    sigjmp_buf env;
    sigjmp_buf *init_env;       /* only during creation */
    void *stack;                /* mmap'd, with a guard page below; NULL for a thread's leader */
    size_t stack_size;
    CoScheduleLink sched;       /* aio_co_schedule's intrusive link */
    unsigned valgrind_stack_id; /* so valgrind knows this memory is a stack */
    int scheduled;              /* atomic: on some context's schedule list */
    Coroutine *pool_next;
#ifdef CO_ASAN
    void *asan_fake_stack;
    const void *asan_bottom;
    size_t asan_size;
#endif
};

typedef struct CoThread {
    Coroutine leader;           /* the thread's own stack */
    Coroutine *current;         /* running coroutine, &leader outside any */
    Coroutine *pool;
    unsigned pool_size;
} CoThread;

static __thread CoThread *co_thread;
static unsigned co_alive;       /* atomic */

static void coroutine_free(Coroutine *co)
{
#ifdef CO_VALGRIND
    VALGRIND_STACK_DEREGISTER(co->valgrind_stack_id);
#endif
    munmap((char *)co->stack - getpagesize(), co->stack_size + getpagesize());
    g_free(co);
}

static void co_thread_free(void *p)
{
    CoThread *t = p;

    while (t->pool) {
        Coroutine *co = t->pool;
        t->pool = co->pool_next;
        coroutine_free(co);
    }
    g_free(t);
}

static GPrivate co_thread_key = G_PRIVATE_INIT(co_thread_free);

static CoThread *get_co_thread(void)
{
    if (G_UNLIKELY(!co_thread)) {
        co_thread = g_new0(CoThread, 1);
        co_thread->current = &co_thread->leader;
        g_private_set(&co_thread_key, co_thread);
    }
    return co_thread;
}

/* --- AddressSanitizer needs to know which stack is live --- */

static inline void asan_start_switch(Coroutine *from, Coroutine *to, bool terminating)
{
#ifdef CO_ASAN
    __sanitizer_start_switch_fiber(terminating ? NULL : &from->asan_fake_stack,
                                   to->asan_bottom, to->asan_size);
#endif
}

static inline void asan_finish_switch(Coroutine *self, Coroutine *prev)
{
#ifdef CO_ASAN
    const void *bottom;
    size_t size;

    __sanitizer_finish_switch_fiber(self->asan_fake_stack, &bottom, &size);
    if (prev && !prev->asan_bottom) {   /* a thread's leader: learn its stack */
        prev->asan_bottom = bottom;
        prev->asan_size = size;
    }
#endif
}

/* Save from's registers and jump into to.  Returns the action with which we were resumed. */
static int co_switch(CoThread *t, Coroutine *from, Coroutine *to, int action)
{
    int ret;

    t->current = to;
    ret = sigsetjmp(from->env, 0);
    if (ret == 0) {
        asan_start_switch(from, to, action == CO_TERMINATE);
        siglongjmp(to->env, action);
    }
    asan_finish_switch(from, from->caller);
    return ret;
}

static void coroutine_trampoline(int lo, int hi)
{
    Coroutine *self = (Coroutine *)(((uintptr_t)(uint32_t)hi << 32) | (uint32_t)lo);
    CoThread *t = get_co_thread();

    /* First run: only record our context, then go back to coroutine_new(). */
    asan_finish_switch(self, t->current);
    if (!sigsetjmp(self->env, 0)) {
#ifdef CO_ASAN
        __sanitizer_start_switch_fiber(&self->asan_fake_stack, t->current->asan_bottom,
                                       t->current->asan_size);
#endif
        siglongjmp(*self->init_env, 1);
    }
    asan_finish_switch(self, self->caller);
    for (;;) {
        self->entry(self->opaque);
        co_switch(t, self, self->caller, CO_TERMINATE);
    }
}

static Coroutine *coroutine_new(CoThread *t)
{
    ucontext_t old_uc, uc;
    sigjmp_buf old_env;
    Coroutine *co = g_new0(Coroutine, 1);
    size_t page = getpagesize();
    char *map;
    uintptr_t p = (uintptr_t)co;

    map = mmap(NULL, CO_STACK_SIZE + page, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (map == MAP_FAILED) {
        g_error("cannot allocate a coroutine stack: %s", g_strerror(errno));
    }
    mprotect(map, page, PROT_NONE);     /* guard page: overflow faults instead of corrupting */
    co->stack = map + page;
    co->stack_size = CO_STACK_SIZE;
#ifdef CO_VALGRIND
    co->valgrind_stack_id = VALGRIND_STACK_REGISTER(co->stack, (char *)co->stack +
                                                    co->stack_size);
#endif
#ifdef CO_ASAN
    co->asan_bottom = co->stack;
    co->asan_size = co->stack_size;
#endif

    if (getcontext(&uc) == -1) {
        g_error("getcontext: %s", g_strerror(errno));
    }
    uc.uc_link = NULL;
    uc.uc_stack.ss_sp = co->stack;
    uc.uc_stack.ss_size = co->stack_size;
    uc.uc_stack.ss_flags = 0;
    co->init_env = &old_env;
    makecontext(&uc, (void (*)(void))coroutine_trampoline, 2, (int)(uint32_t)p,
                (int)(uint32_t)(p >> 32));
    if (!sigsetjmp(old_env, 0)) {
#ifdef CO_ASAN
        void *fake = NULL;
        __sanitizer_start_switch_fiber(&fake, co->stack, co->stack_size);
#endif
        swapcontext(&old_uc, &uc);
    }
#ifdef CO_ASAN
    {
        const void *bottom;
        size_t size;
        __sanitizer_finish_switch_fiber(NULL, &bottom, &size);
    }
#endif
    co->init_env = NULL;
    return co;
}

Coroutine *coroutine_create(CoroutineEntry *entry, void *opaque)
{
    CoThread *t = get_co_thread();
    Coroutine *co = t->pool;

    if (co) {
        t->pool = co->pool_next;
        t->pool_size--;
    } else {
        co = coroutine_new(t);
    }
    co->entry = entry;
    co->opaque = opaque;
    co->caller = NULL;
    co->ctx = aio_get_current();
    __atomic_add_fetch(&co_alive, 1, __ATOMIC_RELAXED);
    return co;
}

static void coroutine_release(CoThread *t, Coroutine *co)
{
    __atomic_sub_fetch(&co_alive, 1, __ATOMIC_RELAXED);
    if (t->pool_size < CO_POOL_MAX) {
        co->pool_next = t->pool;
        t->pool = co;
        t->pool_size++;
        return;
    }
    coroutine_free(co);
}

void coroutine_enter(Coroutine *co)
{
    CoThread *t = get_co_thread();
    Coroutine *self = t->current;
    int ret;

    if (co->caller) {
        g_error("coroutine entered while it is already running");
    }
    co->caller = self;
    ret = co_switch(t, self, co, CO_ENTER);
    if (ret == CO_TERMINATE) {
        coroutine_release(t, co);
    }
}

void coroutine_fn coroutine_yield(void)
{
    CoThread *t = get_co_thread();
    Coroutine *self = t->current;
    Coroutine *to = self->caller;

    if (!to) {
        g_error("coroutine_yield called outside a coroutine");
    }
    self->caller = NULL;
    co_switch(t, self, to, CO_YIELD);
}

void coroutine_wake(Coroutine *co)
{
    if (co->ctx == aio_peek_current() && !in_coroutine()) {
        coroutine_enter(co);
    } else {
        aio_co_schedule(co->ctx, co);
    }
}

Coroutine *coroutine_self(void)
{
    CoThread *t = get_co_thread();
    return t->current == &t->leader ? NULL : t->current;
}

bool in_coroutine(void)
{
    return co_thread && co_thread->current != &co_thread->leader;
}

AioContext *coroutine_get_context(Coroutine *co)
{
    return co->ctx;
}

unsigned coroutine_count(void)
{
    return __atomic_load_n(&co_alive, __ATOMIC_RELAXED);
}

/* Accessors for aio.c's allocation-free schedule list (coroutine-int.h). */

CoScheduleLink *coroutine_sched_link(Coroutine *co)
{
    return &co->sched;
}

Coroutine *coroutine_from_sched_link(CoScheduleLink *l)
{
    return (Coroutine *)((char *)l - offsetof(Coroutine, sched));
}

bool coroutine_mark_scheduled(Coroutine *co)
{
    return __atomic_exchange_n(&co->scheduled, 1, __ATOMIC_ACQ_REL) == 0;
}

void coroutine_clear_scheduled(Coroutine *co)
{
    __atomic_store_n(&co->scheduled, 0, __ATOMIC_RELEASE);
}

/* --- CoQueue --- */

void co_queue_init(CoQueue *q)
{
    g_queue_init(&q->waiters);
}

void coroutine_fn co_queue_wait(CoQueue *q, GMutex *lock)
{
    g_queue_push_tail(&q->waiters, coroutine_self());
    if (lock) {
        g_mutex_unlock(lock);
    }
    /* A waker in another thread schedules us on our home loop, which runs it only after this
     * yield; a waker in this thread cannot run before we yield. */
    coroutine_yield();
    if (lock) {
        g_mutex_lock(lock);
    }
}

bool co_queue_next(CoQueue *q)
{
    Coroutine *co = g_queue_pop_head(&q->waiters);

    if (!co) {
        return false;
    }
    aio_co_schedule(co->ctx, co);
    return true;
}

void co_queue_restart_all(CoQueue *q)
{
    while (co_queue_next(q)) {
    }
}

bool co_queue_empty(CoQueue *q)
{
    return g_queue_is_empty(&q->waiters);
}

/* --- CoMutex --- */

void co_mutex_init(CoMutex *m)
{
    g_mutex_init(&m->lock);
    m->locked = false;
    g_queue_init(&m->waiters);
}

void co_mutex_destroy(CoMutex *m)
{
    g_mutex_clear(&m->lock);
}

void coroutine_fn co_mutex_lock(CoMutex *m)
{
    g_mutex_lock(&m->lock);
    if (!m->locked) {
        m->locked = true;
        g_mutex_unlock(&m->lock);
        return;
    }
    g_queue_push_tail(&m->waiters, coroutine_self());
    g_mutex_unlock(&m->lock);
    coroutine_yield();          /* resumed by co_mutex_unlock, which handed us the lock */
}

void coroutine_fn co_mutex_unlock(CoMutex *m)
{
    Coroutine *next;

    g_mutex_lock(&m->lock);
    next = g_queue_pop_head(&m->waiters);
    if (!next) {
        m->locked = false;
    }
    g_mutex_unlock(&m->lock);
    if (next) {
        aio_co_schedule(next->ctx, next);
    }
}
