/* coroutine.h - stackful coroutines with pooled stacks, and the locks they wait on.
 *
 * Threads: a coroutine belongs to the AioContext (event loop) of the thread that created it and
 * only ever runs in that thread.  coroutine_wake() from any thread hands it back to its home loop.
 * CoMutex and CoQueue may be shared between threads; their waiters are always resumed in their
 * own home loop.
 */
#ifndef BLOCK_COROUTINE_H
#define BLOCK_COROUTINE_H

#include <stdbool.h>
#include <glib.h>

/* Marks functions that may yield: call them only from coroutine context. */
#define coroutine_fn

typedef struct Coroutine Coroutine;
typedef struct AioContext AioContext;
typedef void coroutine_fn CoroutineEntry(void *opaque);

/* Returns a coroutine (stack from the pool) that will run entry(opaque) when first entered.
 * Its home is the calling thread's AioContext.  It is freed when entry returns. */
Coroutine *coroutine_create(CoroutineEntry *entry, void *opaque);

/* Run co until it yields or terminates.  Must be called from co's home thread. */
void coroutine_enter(Coroutine *co);

/* Give control back to whoever entered the current coroutine. */
void coroutine_fn coroutine_yield(void);

/* Resume a yielded coroutine from any thread or context: entered at once if we are in its home
 * thread outside any coroutine, else scheduled on its home loop. */
void coroutine_wake(Coroutine *co);

Coroutine *coroutine_self(void);
bool in_coroutine(void);
AioContext *coroutine_get_context(Coroutine *co);

/* Number of coroutines alive in this process (for tests and stats). */
unsigned coroutine_count(void);

/* A FIFO of waiting coroutines, safe across threads when used with the lock that protects the
 * condition being waited for. */
typedef struct CoQueue {
    GQueue waiters;
} CoQueue;

void co_queue_init(CoQueue *q);
/* Atomically release lock, wait until restarted, re-take lock.  lock may be NULL if all users
 * are in one thread. */
void coroutine_fn co_queue_wait(CoQueue *q, GMutex *lock);
/* Wake the first waiter / all waiters.  Caller holds the same lock the waiters used. */
bool co_queue_next(CoQueue *q);
void co_queue_restart_all(CoQueue *q);
bool co_queue_empty(CoQueue *q);

/* A mutex for coroutines: waiting yields instead of blocking the thread.  Safe across threads. */
typedef struct CoMutex {
    GMutex lock;        /* protects the fields below */
    bool locked;
    GQueue waiters;     /* Coroutine *, handed the lock in FIFO order */
} CoMutex;

void co_mutex_init(CoMutex *m);
void co_mutex_destroy(CoMutex *m);
void coroutine_fn co_mutex_lock(CoMutex *m);
void coroutine_fn co_mutex_unlock(CoMutex *m);

#endif
