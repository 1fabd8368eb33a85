/* thread-pool.c - worker threads that run blocking system calls for coroutines.
 *
 * Threads: workers (a GThreadPool, grown on demand) run only the request's function; the
 * result goes back to the requesting coroutine through its home event loop.
 */
#include "config.h"
#include "block/io-engine.h"
#include "block/aio.h"
#include "block/util.h"

#define THREAD_POOL_MAX 32

typedef struct ThreadPoolReq {
    ThreadPoolFunc *fn;
    void *opaque;
    Coroutine *co;              /* waits for the result; NULL: submitted, owned by the worker */
    int ret;
} ThreadPoolReq;

static GThreadPool *pool;
static GOnce pool_once = G_ONCE_INIT;

static void worker(gpointer data, gpointer user_data)
{
    ThreadPoolReq *req = data;

    req->ret = req->fn(req->opaque);
    if (req->co) {
        aio_co_schedule(coroutine_get_context(req->co), req->co);
    } else {
        g_free(req);
    }
}

static gpointer pool_init(gpointer unused)
{
    g_autoptr(GError) err = NULL;
    GThreadPool *p = g_thread_pool_new(worker, NULL, THREAD_POOL_MAX, false, &err);

    if (!p) {
        g_error("cannot create the I/O thread pool: %s", err->message);
    }
    return p;
}

static bool pool_push(ThreadPoolReq *req)
{
    g_autoptr(GError) err = NULL;

    pool = g_once(&pool_once, pool_init, NULL);
    return g_thread_pool_push(pool, req, &err);
}

int coroutine_fn thread_pool_run(ThreadPoolFunc *fn, void *opaque)
{
    ThreadPoolReq req = { .fn = fn, .opaque = opaque, .co = coroutine_self() };

    g_assert(req.co);
    if (!pool_push(&req)) {
        return -EAGAIN;
    }
    coroutine_yield();
    return req.ret;
}

bool thread_pool_submit(ThreadPoolFunc *fn, void *opaque)
{
    ThreadPoolReq *req = g_new(ThreadPoolReq, 1);

    *req = (ThreadPoolReq) { .fn = fn, .opaque = opaque };
    if (!pool_push(req)) {
        g_free(req);
        return false;
    }
    return true;
}
