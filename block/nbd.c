/* nbd.c - the nbd protocol driver: images served over NBD (nbd://, nbd+unix://, nbds://,
 * nbds+unix://), on libnbd's asynchronous API.
 *
 * Threads and event loops.  Every connection (a libnbd handle) has one home event loop, and only
 * the home thread drives its socket: the fd is registered there with aio_set_fd_handler for the
 * directions nbd_aio_get_direction asks for, and the home thread calls nbd_aio_notify_read/write,
 * connects, notices a dead connection, reconnects, and swaps and closes handles.
 *
 * - Shared connections (-o connections=N, default 1; N > 1 only when the server offers
 *   multi-conn) are opened with the node and live in the loop of the thread that opened it
 *   (the daemon's main thread, which runs for the daemon's whole life).  Requests of that thread
 *   (open, probe, close) use them, and so do the export's queue threads when the server does not
 *   offer multi-conn (one connection is then all the protocol allows for consistent flushes).
 *   A queue thread issues its command on the shared connection itself, under the connection's
 *   lock (libnbd handles are thread-safe; the lock only keeps the handle from being swapped
 *   meanwhile); libnbd sends it at once when the socket takes it, else the issuer asks the home
 *   thread (a coalesced bottom half) to watch for writability.  The reply is read in the home
 *   thread, whose completion callback wakes the request's coroutine in its own loop: one lock
 *   held for a non-blocking send and one cross-thread wake-up per request.
 * - When the server offers multi-conn, each queue's event loop gets N connections of its own
 *   on its first request (connected asynchronously in that loop; its requests wait meanwhile,
 *   and use the shared ones if that fails).  Its requests then never leave its thread: issue,
 *   socket, reply and wake-up are all in the queue's loop.  These connections ask for simple
 *   replies (cheaper to read); block status, which needs structured ones, goes to the shared
 *   connections.  A flush on one connection covers
 *   the writes completed on all of them (that is what multi-conn promises).  These connections
 *   are closed with the node, after the export's queue threads (and loops) have ended.
 *
 * Either way a completion callback (run in the home thread, or in the issuer if the reply was
 * already there) only schedules the request's coroutine (aio_co_schedule), never enters it:
 * libnbd holds the handle lock during callbacks.  Nothing ever blocks an event loop.
 *
 * Loss of the server.  A command that completes with ENOTCONN/ESHUTDOWN, or that cannot be
 * issued because the handle is dead, marks the connection lost: it goes to RECONNECTING, and
 * the home thread closes the handle and connects anew (backing off up to 1 s between tries)
 * until -o reconnect-timeout=SECONDS (default 30) has passed since the loss.  Meanwhile the
 * request that saw the loss and every new one wait; once the connection is back they issue their
 * commands again (a write the server had not acknowledged is sent again; one it had acknowledged
 * is done).  Past the timeout they fail with EIO and the connection is DOWN: a new request then
 * tries one connection (at most once a second) before it fails, so the export recovers by itself
 * when the server returns.
 *
 * Connecting never blocks a loop either: nbd_aio_connect_uri, then the handle's fd is watched
 * until it is ready or -o connect-timeout=SECONDS (default 10) passes (a timerfd).  At open the
 * main thread runs that in aio_run_coroutine.  (Only a host name in nbd:// is resolved with a
 * blocking getaddrinfo, inside libnbd.)
 *
 * The node's filename (shown in logs, list and info) is the URI without secrets: no password in
 * the authority, no query parameter but socket=.  The URI as given goes only to libnbd.
 */
#include "config.h"

#ifdef CONFIG_LIBNBD

#include "block/block.h"
#include "block/aio.h"
#include "block/util.h"

#include <inttypes.h>
#include <libnbd.h>

/*
 * libnbd is loaded at the first nbd: open (dlopen), not when blkfuse starts: linked in, it (and
 * gnutls and libxml2 with it) made every blkfuse command about 5 ms slower to start (an empty
 * program linked with -lnbd: 6.4 ms, against 1.5 ms).  The calls below keep libnbd's names;
 * each goes through the pointer dlsym found.
 */
#define NBD_LIB_FUNCS(X) \
    X(nbd_add_meta_context) \
    X(nbd_aio_block_status) \
    X(nbd_aio_connect_uri) \
    X(nbd_aio_flush) \
    X(nbd_aio_get_direction) \
    X(nbd_aio_get_fd) \
    X(nbd_aio_is_closed) \
    X(nbd_aio_is_connecting) \
    X(nbd_aio_is_dead) \
    X(nbd_aio_is_ready) \
    X(nbd_aio_notify_read) \
    X(nbd_aio_notify_write) \
    X(nbd_aio_pread) \
    X(nbd_aio_pwrite) \
    X(nbd_aio_trim) \
    X(nbd_aio_zero) \
    X(nbd_can_fast_zero) \
    X(nbd_can_flush) \
    X(nbd_can_fua) \
    X(nbd_can_meta_context) \
    X(nbd_can_multi_conn) \
    X(nbd_can_trim) \
    X(nbd_can_zero) \
    X(nbd_close) \
    X(nbd_create) \
    X(nbd_get_block_size) \
    X(nbd_get_errno) \
    X(nbd_get_error) \
    X(nbd_get_size) \
    X(nbd_is_read_only) \
    X(nbd_set_handle_name) \
    X(nbd_set_tls_certificates) \
    X(nbd_set_tls_psk_file) \
    X(nbd_set_tls_username) \
    X(nbd_set_pread_initialize) \
    X(nbd_set_request_structured_replies) \
    X(nbd_set_uri_allow_local_file)

static struct {
#define X(name) __typeof__(name) *name;
    NBD_LIB_FUNCS(X)
#undef X
} nbdlib;

static const char *const nbdlib_names[] = { "libnbd.so.0" };

static const LibSym nbdlib_syms[] = {
#define X(name) { 0, #name, (void **)&nbdlib.name },
    NBD_LIB_FUNCS(X)
#undef X
};

static LibLoader nbdlib_loader = {
    .driver = "nbd",
    .sonames = nbdlib_names,
    .nlibs = G_N_ELEMENTS(nbdlib_names),
    .syms = nbdlib_syms,
    .nsyms = G_N_ELEMENTS(nbdlib_syms),
    .install_hint = "Debian: libnbd0",
    .once = G_ONCE_INIT,
};

#define nbd_add_meta_context (*nbdlib.nbd_add_meta_context)
#define nbd_aio_block_status (*nbdlib.nbd_aio_block_status)
#define nbd_aio_connect_uri (*nbdlib.nbd_aio_connect_uri)
#define nbd_aio_flush (*nbdlib.nbd_aio_flush)
#define nbd_aio_get_direction (*nbdlib.nbd_aio_get_direction)
#define nbd_aio_get_fd (*nbdlib.nbd_aio_get_fd)
#define nbd_aio_is_closed (*nbdlib.nbd_aio_is_closed)
#define nbd_aio_is_connecting (*nbdlib.nbd_aio_is_connecting)
#define nbd_aio_is_dead (*nbdlib.nbd_aio_is_dead)
#define nbd_aio_is_ready (*nbdlib.nbd_aio_is_ready)
#define nbd_aio_notify_read (*nbdlib.nbd_aio_notify_read)
#define nbd_aio_notify_write (*nbdlib.nbd_aio_notify_write)
#define nbd_aio_pread (*nbdlib.nbd_aio_pread)
#define nbd_aio_pwrite (*nbdlib.nbd_aio_pwrite)
#define nbd_aio_trim (*nbdlib.nbd_aio_trim)
#define nbd_aio_zero (*nbdlib.nbd_aio_zero)
#define nbd_can_fast_zero (*nbdlib.nbd_can_fast_zero)
#define nbd_can_flush (*nbdlib.nbd_can_flush)
#define nbd_can_fua (*nbdlib.nbd_can_fua)
#define nbd_can_meta_context (*nbdlib.nbd_can_meta_context)
#define nbd_can_multi_conn (*nbdlib.nbd_can_multi_conn)
#define nbd_can_trim (*nbdlib.nbd_can_trim)
#define nbd_can_zero (*nbdlib.nbd_can_zero)
#define nbd_close (*nbdlib.nbd_close)
#define nbd_create (*nbdlib.nbd_create)
#define nbd_get_block_size (*nbdlib.nbd_get_block_size)
#define nbd_get_errno (*nbdlib.nbd_get_errno)
#define nbd_get_error (*nbdlib.nbd_get_error)
#define nbd_get_size (*nbdlib.nbd_get_size)
#define nbd_is_read_only (*nbdlib.nbd_is_read_only)
#define nbd_set_handle_name (*nbdlib.nbd_set_handle_name)
#define nbd_set_tls_certificates (*nbdlib.nbd_set_tls_certificates)
#define nbd_set_tls_psk_file (*nbdlib.nbd_set_tls_psk_file)
#define nbd_set_tls_username (*nbdlib.nbd_set_tls_username)
#define nbd_set_pread_initialize (*nbdlib.nbd_set_pread_initialize)
#define nbd_set_request_structured_replies (*nbdlib.nbd_set_request_structured_replies)
#define nbd_set_uri_allow_local_file (*nbdlib.nbd_set_uri_allow_local_file)
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define NBD_DEFAULT_CONNECT_TIMEOUT     10
#define NBD_DEFAULT_RECONNECT_TIMEOUT   30
#define NBD_MAX_CONNECTIONS             16
#define NBD_MAX_PAYLOAD                 (32 * 1024 * 1024)  /* reads and writes */
#define NBD_MAX_EFFECT                  (1024 * 1024 * 1024) /* trims and zero writes */
#define NBD_RETRY_MIN_NS                (100 * 1000 * 1000LL)
#define NBD_RETRY_MAX_NS                (1000 * 1000 * 1000LL)

typedef enum { CONN_READY, CONN_RECONNECTING, CONN_DOWN } NbdConnState;

typedef struct BDRVNbdState BDRVNbdState;

typedef struct NbdCtxConns NbdCtxConns;

typedef struct NbdConn {
    BDRVNbdState *s;
    unsigned index;
    AioContext *home;           /* the event loop that drives it */
    NbdCtxConns *set;           /* a queue's own connection: its set; NULL for a shared one */

    GMutex lock;                /* protects h (against swapping), state, gen, the times, waiters */
    struct nbd_handle *h;       /* NULL while reconnecting; swapped by the home thread only */
    NbdConnState state;
    unsigned gen;               /* bumped at every reconnection */
    int64_t deadline_ns;        /* RECONNECTING: give up at this time */
    int64_t next_try_ns;        /* DOWN: a request may start one attempt from this time */
    CoQueue waiters;            /* requests waiting for READY (or DOWN) */

    /* Home thread only */
    int fd;                     /* registered socket, or -1 */
    bool fd_dup;                /* fd is our duplicate of libnbd's (closed by detach) */
    bool watch_write;           /* fd registered for writability too */
    int kick_pending;           /* atomic: a refresh bottom half is scheduled */
    bool down_logged;           /* the error that it is DOWN was logged */
    bool reconnecting;          /* atomic: nbd_reconnect_co is scheduled or runs */
} NbdConn;

/* The connections of one queue's event loop (when the server offers multi-conn). */
struct NbdCtxConns {
    AioContext *ctx;
    unsigned n;
    NbdConn *conns;
    bool failed;                /* atomic: they could not connect: the queue uses the shared ones */
};

struct BDRVNbdState {
    char *uri;                  /* as given: for libnbd only (may hold secrets) */
    char *server;               /* "unix:PATH" or "HOST[:PORT]", for messages */
    char *tls_certs;
    char *tls_psk_file;
    char *tls_username;
    bool tls;                   /* nbds:// */
    int64_t connect_timeout_ns;
    int64_t reconnect_timeout_ns;
    AioContext *home;
    unsigned nr_conns;
    unsigned conns_asked;       /* connections=N as given */
    NbdConn *conns;
    unsigned next_conn;         /* atomic round robin */
    GMutex ctx_lock;            /* protects ctx_conns */
    GHashTable *ctx_conns;      /* AioContext * -> NbdCtxConns *: queues' own connections */

    int64_t size;
    uint32_t min_block;
    uint32_t max_payload;
    bool read_only;
    bool can_flush;
    bool can_fua;
    bool can_trim;
    bool can_zero;
    bool can_fast_zero;
    bool can_block_status;
    bool multi_conn;
    bool closing;               /* home thread: the node is being closed, stop reconnecting */

    /* st_blocks: bytes allocated on the server, from a walk over block status (at open, and
     * again in the background after writes, when someone asks) */
    int64_t allocated;          /* atomic; -ENOTSUP when unknown */
    int alloc_stale;            /* atomic: written since the last walk */
    int alloc_walking;          /* atomic: a walk is running */
};

typedef enum { CMD_READ, CMD_WRITE, CMD_FLUSH, CMD_TRIM, CMD_ZERO, CMD_BLOCK_STATUS } NbdCmdType;

typedef struct NbdCmd {
    NbdCmdType type;
    uint64_t offset;
    uint64_t len;
    void *buf;
    uint32_t flags;             /* LIBNBD_CMD_FLAG_* */
} NbdCmd;

/* What a command brought back (block status: the first extent). */
typedef struct NbdReq {
    bool have_extent;
    uint32_t extent_len;
    uint32_t extent_flags;
} NbdReq;

/*
 * One command handed to libnbd, on the heap: it has two owners, the coroutine that issued it and
 * libnbd, which holds it until it calls the .free callback (after the completion callback; or
 * instead of it when the handle is closed with the command still queued; or before the issuing
 * call returns -1).  Its coroutine is woken exactly once per command: by the first of the
 * completion callback and .free to take the wake (woken), and only if the issuer yields for it.
 * A late callback thus writes only here, never into a coroutine's stack, and never wakes a
 * coroutine that has moved on.
 */
typedef struct NbdInflight {
    Coroutine *co;
    int refs;                   /* atomic: the issuer's and libnbd's */
    int woken;                  /* atomic: someone took the right to wake co */
    int error;                  /* errno of the command, 0 = success; valid once co is woken */
    NbdReq res;
} NbdInflight;

static void nbd_conn_attach(NbdConn *c);
static void nbd_conn_detach(NbdConn *c);

/* --- URIs ------------------------------------------------------------------------------- */

static bool nbd_scheme_ok(const char *uri, bool *tls, bool *unix_socket)
{
    static const struct { const char *prefix; bool tls, unix_socket; } schemes[] = {
        { "nbd://", false, false }, { "nbd+unix://", false, true },
        { "nbds://", true, false }, { "nbds+unix://", true, true },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(schemes); i++) {
        if (g_str_has_prefix(uri, schemes[i].prefix)) {
            *tls = schemes[i].tls;
            *unix_socket = schemes[i].unix_socket;
            return true;
        }
    }
    return false;
}

/* The value of query parameter key in uri (caller frees), or NULL.  Not unescaped. */
static char *nbd_uri_query(const char *uri, const char *key)
{
    const char *q = strchr(uri, '?');
    g_auto(GStrv) params = NULL;
    size_t klen = strlen(key);

    if (!q) {
        return NULL;
    }
    params = g_strsplit(q + 1, "&", -1);
    for (char **p = params; *p; p++) {
        if (!strncmp(*p, key, klen) && (*p)[klen] == '=') {
            char *v = g_uri_unescape_string(*p + klen + 1, NULL);
            return v ? v : g_strdup(*p + klen + 1);
        }
    }
    return NULL;
}

/* "unix:PATH" or "HOST[:PORT]" of uri, for messages (caller frees). */
static char *nbd_uri_server(const char *uri, bool unix_socket)
{
    const char *auth = strstr(uri, "://") + 3;
    size_t len = strcspn(auth, "/?#");
    const char *at;

    if (unix_socket) {
        g_autofree char *sock = nbd_uri_query(uri, "socket");
        return g_strdup_printf("unix:%s", sock ? sock : "?");
    }
    at = memchr(auth, '@', len);
    if (at) {
        len -= at + 1 - auth;
        auth = at + 1;
    }
    return len ? g_strndup(auth, len) : g_strdup("localhost");
}

/* --- small event-loop helpers (coroutine context, in the calling thread's loop) ---------- */

typedef struct NbdWait {
    Coroutine *co;
    bool woken;
    bool readable, writable, timed_out;
    int tfd;
} NbdWait;

static void nbd_wait_wake(NbdWait *w)
{
    if (!w->woken) {
        w->woken = true;
        aio_co_schedule(coroutine_get_context(w->co), w->co);
    }
}

static void nbd_wait_read(void *opaque)
{
    NbdWait *w = opaque;

    w->readable = true;
    nbd_wait_wake(w);
}

static void nbd_wait_write(void *opaque)
{
    NbdWait *w = opaque;

    w->writable = true;
    nbd_wait_wake(w);
}

static void nbd_wait_timer(void *opaque)
{
    NbdWait *w = opaque;
    uint64_t n;

    if (read(w->tfd, &n, sizeof(n)) < 0) {
        /* spurious: nothing to do */
    }
    w->timed_out = true;
    nbd_wait_wake(w);
}

/* A timerfd that fires once at the monotonic time deadline_ns; -errno on failure. */
static int nbd_timerfd(int64_t deadline_ns)
{
    struct itimerspec its = { 0 };
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);

    if (fd < 0) {
        return -errno;
    }
    deadline_ns = MAX(deadline_ns, 1);
    its.it_value.tv_sec = deadline_ns / 1000000000LL;
    its.it_value.tv_nsec = deadline_ns % 1000000000LL;
    if (timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL) < 0) {
        int ret = -errno;
        close(fd);
        return ret;
    }
    return fd;
}

/* Sleep until the monotonic time deadline_ns without blocking the loop. */
static void coroutine_fn nbd_co_sleep_until(int64_t deadline_ns)
{
    AioContext *ctx = aio_get_current();
    NbdWait w = { .co = coroutine_self() };

    w.tfd = nbd_timerfd(deadline_ns);
    if (w.tfd < 0) {
        return;
    }
    aio_set_fd_handler(ctx, w.tfd, nbd_wait_timer, NULL, &w);
    coroutine_yield();
    aio_set_fd_handler(ctx, w.tfd, NULL, NULL, NULL);
    close(w.tfd);
}

/* --- connecting --------------------------------------------------------------------------- */

/*
 * A new handle set up for s (TLS, meta context); NULL with errp set.  A handle for reads and
 * writes only (a queue's own connection) asks for simple replies: a structured reply to a read
 * costs the client two more receives and the server more work (about 15% of the daemon's and
 * of nbdkit's time per 4 KiB read), and only block status needs them, which goes to the shared
 * connections.  On such a handle libnbd need not zero a read's buffer before it receives into
 * it (a 4 KiB memset per 4 KiB read, half the daemon's instructions as callgrind counts them): a
 * simple reply that succeeds has filled all of it, so no stale bytes can show through, even
 * from a server that lies.
 */
static struct nbd_handle *nbd_handle_new(BDRVNbdState *s, bool data_only, GError **errp)
{
    struct nbd_handle *h = nbd_create();

    if (!h) {
        error_setg(errp, "%s: %s", s->server, nbd_get_error());
        return NULL;
    }
    /* The URI is the user's own command line: its tls-psk-file= may name a file. */
    if (nbd_set_handle_name(h, "blkfuse") < 0 || nbd_set_uri_allow_local_file(h, true) < 0 ||
        nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
        (s->tls_certs && nbd_set_tls_certificates(h, s->tls_certs) < 0) ||
        (s->tls_psk_file && nbd_set_tls_psk_file(h, s->tls_psk_file) < 0) ||
        (s->tls_username && nbd_set_tls_username(h, s->tls_username) < 0) ||
        (data_only && (nbd_set_request_structured_replies(h, false) < 0 ||
                       nbd_set_pread_initialize(h, false) < 0))) {
        error_setg(errp, "%s: %s", s->server, nbd_get_error());
        nbd_close(h);
        return NULL;
    }
    return h;
}

/* libnbd's last error as one line without a trailing newline (caller frees). */
static char *nbd_error_line(void)
{
    const char *e = nbd_get_error();
    char *line = g_strdup(e ? e : "unknown error");

    g_strdelimit(line, "\n", ' ');
    return g_strchomp(line);
}

/*
 * Connect h to s's URI, driving the handshake from the calling thread's loop, until it is ready
 * or timeout_ns has passed.  Returns 0, or -errno with errp set (naming the server).
 */
static int coroutine_fn nbd_co_connect(BDRVNbdState *s, struct nbd_handle *h, int64_t timeout_ns,
                                       GError **errp)
{
    AioContext *ctx = aio_get_current();
    NbdWait w = { .co = coroutine_self() };
    int ret = 0;

    if (nbd_aio_connect_uri(h, s->uri) < 0) {
        g_autofree char *msg = nbd_error_line();
        error_setg(errp, "cannot connect to the NBD server %s: %s", s->server, msg);
        return -(nbd_get_errno() ? nbd_get_errno() : ECONNREFUSED);
    }
    w.tfd = nbd_timerfd(get_clock_ns() + timeout_ns);
    if (w.tfd < 0) {
        error_setg_errno(errp, w.tfd, "timerfd");
        return w.tfd;
    }
    aio_set_fd_handler(ctx, w.tfd, nbd_wait_timer, NULL, &w);
    while (nbd_aio_is_connecting(h)) {
        int fd = nbd_aio_get_fd(h);
        unsigned dir = nbd_aio_get_direction(h);

        if (fd < 0) {
            break;
        }
        w.woken = w.readable = w.writable = false;
        aio_set_fd_handler(ctx, fd, (dir & LIBNBD_AIO_DIRECTION_READ) ? nbd_wait_read : NULL,
                           (dir & LIBNBD_AIO_DIRECTION_WRITE) ? nbd_wait_write : NULL, &w);
        coroutine_yield();
        aio_set_fd_handler(ctx, fd, NULL, NULL, NULL);
        if (w.timed_out) {
            error_setg(errp, "cannot connect to the NBD server %s: no answer within %" PRId64
                       " s (-o connect-timeout=SECONDS)", s->server,
                       (int64_t)(timeout_ns / 1000000000LL));
            ret = -ETIMEDOUT;
            break;
        }
        if (w.readable && nbd_aio_notify_read(h) < 0) {
            break;
        }
        if (w.writable && nbd_aio_notify_write(h) < 0) {
            break;
        }
    }
    aio_set_fd_handler(ctx, w.tfd, NULL, NULL, NULL);
    close(w.tfd);
    if (ret == 0 && !nbd_aio_is_ready(h)) {
        g_autofree char *msg = nbd_error_line();
        error_setg(errp, "cannot connect to the NBD server %s: %s", s->server, msg);
        ret = -(nbd_get_errno() ? nbd_get_errno() : ECONNREFUSED);
    }
    return ret;
}

typedef struct NbdConnectCo {
    BDRVNbdState *s;
    struct nbd_handle *h;
    GError **errp;
    int ret;
} NbdConnectCo;

static void coroutine_fn nbd_connect_entry(void *opaque)
{
    NbdConnectCo *c = opaque;

    c->ret = nbd_co_connect(c->s, c->h, c->s->connect_timeout_ns, c->errp);
}

/* Main thread, outside coroutines: a connected handle, or NULL with errp set. */
static struct nbd_handle *nbd_connect_sync(BDRVNbdState *s, GError **errp)
{
    NbdConnectCo c = { .s = s, .errp = errp };

    c.h = nbd_handle_new(s, false, errp);
    if (!c.h) {
        return NULL;
    }
    aio_run_coroutine(nbd_connect_entry, &c);
    if (c.ret < 0) {
        nbd_close(c.h);
        return NULL;
    }
    return c.h;
}

/* --- the home thread's side of a connection ------------------------------------------------ */

/* Watch the socket for what libnbd wants now (home thread). */
static void nbd_conn_refresh(NbdConn *c);

static void nbd_conn_lost(NbdConn *c, unsigned gen);

static void nbd_conn_check(NbdConn *c)
{
    if (nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h)) {
        unsigned gen;

        nbd_conn_detach(c);
        g_mutex_lock(&c->lock);
        gen = c->gen;
        g_mutex_unlock(&c->lock);
        nbd_conn_lost(c, gen);
        return;
    }
    nbd_conn_refresh(c);
}

static void nbd_conn_readable(void *opaque)
{
    NbdConn *c = opaque;

    nbd_aio_notify_read(c->h);
    nbd_conn_check(c);
}

static void nbd_conn_writable(void *opaque)
{
    NbdConn *c = opaque;

    nbd_aio_notify_write(c->h);
    nbd_conn_check(c);
}

static void nbd_conn_refresh(NbdConn *c)
{
    bool want_write;

    if (c->fd < 0) {
        return;
    }
    want_write = nbd_aio_get_direction(c->h) & LIBNBD_AIO_DIRECTION_WRITE;
    if (want_write != c->watch_write) {
        c->watch_write = want_write;
        aio_set_fd_handler(c->home, c->fd, nbd_conn_readable,
                           want_write ? nbd_conn_writable : NULL, c);
    }
}

/*
 * The home loop watches a duplicate of the handle's socket, closed only by detach: libnbd closes
 * its own descriptor when the handle dies, and that may happen in another thread (a queue thread
 * issuing on a shared connection).  Were the loop watching libnbd's descriptor, its number could
 * be reused (by a control client, a new connection's socket) while the loop still had it
 * registered: the new file's events would be lost, and detach would remove its handler.
 */
static void nbd_conn_attach(NbdConn *c)
{
    int fd = nbd_aio_get_fd(c->h);

    c->fd = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
    c->fd_dup = c->fd >= 0;
    if (!c->fd_dup) {
        c->fd = fd;             /* out of descriptors: watch libnbd's own, as a last resort */
    }
    c->watch_write = false;
    if (c->fd >= 0) {
        aio_set_fd_handler(c->home, c->fd, nbd_conn_readable, NULL, c);
        nbd_conn_refresh(c);
    }
}

static void nbd_conn_detach(NbdConn *c)
{
    if (c->fd >= 0) {
        aio_set_fd_handler(c->home, c->fd, NULL, NULL, NULL);
        if (c->fd_dup) {
            close(c->fd);
        }
        c->fd = -1;
    }
}

static void nbd_conn_kick_bh(void *opaque)
{
    NbdConn *c = opaque;

    __atomic_store_n(&c->kick_pending, 0, __ATOMIC_RELEASE);
    g_mutex_lock(&c->lock);
    if (c->state == CONN_READY && c->h && c->fd >= 0) {
        g_mutex_unlock(&c->lock);
        nbd_conn_check(c);
        return;
    }
    g_mutex_unlock(&c->lock);
}

/*
 * Make h dead if it is not, so that libnbd fails every command still in flight on it (ENOTCONN,
 * through their completion callbacks) before it is closed: nbd_close would free them silently,
 * and their requests would wait forever.  A connection given up on while alive (a server that
 * answered ESHUTDOWN) gets here.
 */
static void nbd_kill_handle(struct nbd_handle *h)
{
    int fd = nbd_aio_get_fd(h);

    if (fd >= 0 && !nbd_aio_is_dead(h) && !nbd_aio_is_closed(h)) {
        shutdown(fd, SHUT_RDWR);
        for (int i = 0; i < 8 && !nbd_aio_is_dead(h) && !nbd_aio_is_closed(h); i++) {
            nbd_aio_notify_read(h);
        }
    }
}

/* A connection to the server came up: the shared connections given up on (DOWN) may try again
 * at their next request, without waiting out their once-a-second limit (a flush at close on a
 * shared connection whose last try failed a moment before the server came back must not fail). */
static void nbd_server_is_back(BDRVNbdState *s)
{
    for (unsigned i = 0; i < s->nr_conns; i++) {
        NbdConn *c = &s->conns[i];

        g_mutex_lock(&c->lock);
        if (c->state == CONN_DOWN) {
            c->next_try_ns = 0;
        }
        g_mutex_unlock(&c->lock);
    }
}

/*
 * Home thread: connect again until the deadline; then READY (waiters issue their commands
 * again) or DOWN (waiters fail with EIO).
 */
static void coroutine_fn nbd_reconnect_co(void *opaque)
{
    NbdConn *c = opaque;
    BDRVNbdState *s = c->s;
    struct nbd_handle *old;
    int64_t backoff = NBD_RETRY_MIN_NS;
    bool first_try = true;

    nbd_conn_detach(c);
    g_mutex_lock(&c->lock);
    old = c->h;
    c->h = NULL;
    g_mutex_unlock(&c->lock);
    if (old) {
        nbd_kill_handle(old);
        nbd_close(old);
    }

    for (;;) {
        g_autoptr(GError) err = NULL;
        int64_t now = get_clock_ns();
        int64_t deadline;
        struct nbd_handle *h;
        int ret = -EIO;

        g_mutex_lock(&c->lock);
        deadline = c->deadline_ns;
        g_mutex_unlock(&c->lock);
        h = nbd_handle_new(s, c->set != NULL, &err);
        if (h) {
            /* One full attempt even at the deadline (a retry of a DOWN connection). */
            int64_t budget = MIN(s->connect_timeout_ns, MAX(deadline - now, NBD_RETRY_MAX_NS));
            ret = nbd_co_connect(s, h, budget, &err);
            if (ret == 0 && nbd_get_size(h) != s->size) {
                error_setg(&err, "the NBD server %s now exports %" PRId64 " bytes instead of "
                           "%" PRId64, s->server, nbd_get_size(h), s->size);
                ret = -EIO;
            }
        }
        if (ret == 0) {
            g_mutex_lock(&c->lock);
            c->h = h;
            c->gen++;
            c->state = CONN_READY;
            co_queue_restart_all(&c->waiters);
            g_mutex_unlock(&c->lock);
            nbd_conn_attach(c);
            c->down_logged = false;
            __atomic_store_n(&c->reconnecting, false, __ATOMIC_RELEASE);
            nbd_server_is_back(s);
            if (c->set && c->gen == 1) {
                log_debug("%s: a queue's own connection %u is up", s->server, c->index);
            } else {
                log_info("reconnected to the NBD server %s (connection %u)", s->server,
                         c->index);
            }
            return;
        }
        if (h) {
            nbd_close(h);
        }
        if (first_try) {
            log_debug("%s: reconnecting: %s", s->server, err ? err->message : "failed");
            first_try = false;
        }
        now = get_clock_ns();
        if (now >= deadline || s->closing) {
            if (c->set && c->gen == 0) {
                /* A queue's own connection that never came up: it keeps the shared ones. */
                log_warning("%s: a queue's own connection failed (%s): it uses the shared "
                            "connections", s->server, err ? err->message : "?");
                __atomic_store_n(&c->set->failed, true, __ATOMIC_RELEASE);
                c->down_logged = true;
            }
            g_mutex_lock(&c->lock);
            c->state = CONN_DOWN;
            c->next_try_ns = now + NBD_RETRY_MAX_NS;
            co_queue_restart_all(&c->waiters);
            g_mutex_unlock(&c->lock);
            if (!c->down_logged && !s->closing) {
                c->down_logged = true;
                log_error("%s: requests fail with EIO until the server is back (tried for "
                          "%" PRId64 " s, -o reconnect-timeout=SECONDS)",
                          err ? err->message : s->server,
                          (int64_t)(s->reconnect_timeout_ns / 1000000000LL));
            }
            __atomic_store_n(&c->reconnecting, false, __ATOMIC_RELEASE);
            return;
        }
        nbd_co_sleep_until(MIN(now + backoff, deadline));
        backoff = MIN(backoff * 2, NBD_RETRY_MAX_NS);
    }
}

static void nbd_reconnect_bh(void *opaque)
{
    coroutine_enter(coroutine_create(nbd_reconnect_co, opaque));
}

/* Any thread: the connection of generation gen broke.  The first to say so starts the
 * reconnection (in the home thread); later reports of the same loss change nothing. */
static void nbd_conn_lost(NbdConn *c, unsigned gen)
{
    BDRVNbdState *s = c->s;

    g_mutex_lock(&c->lock);
    if (c->gen == gen && c->state == CONN_READY) {
        c->state = CONN_RECONNECTING;
        c->deadline_ns = get_clock_ns() + s->reconnect_timeout_ns;
        c->reconnecting = true;
        log_warning("connection %u to the NBD server %s lost: reconnecting for up to %" PRId64
                    " s (-o reconnect-timeout=SECONDS)", c->index, s->server,
                    (int64_t)(s->reconnect_timeout_ns / 1000000000LL));
        aio_bh_schedule(c->home, nbd_reconnect_bh, c);
    }
    g_mutex_unlock(&c->lock);
}

/* --- requests (coroutine context, any thread) ---------------------------------------------- */

static int nbd_extent_cb(void *opaque, const char *metacontext, uint64_t offset,
                         uint32_t *entries, size_t nr_entries, int *error)
{
    NbdInflight *f = opaque;

    if (!f->res.have_extent && nr_entries >= 2 &&
        strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0) {
        f->res.extent_len = entries[0];
        f->res.extent_flags = entries[1];
        f->res.have_extent = true;
    }
    return 0;
}

static void nbd_inflight_unref(NbdInflight *f)
{
    if (__atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        g_free(f);
    }
}

/* Take the one wake-up of f's coroutine: true for the first caller only. */
static bool nbd_inflight_take_wake(NbdInflight *f)
{
    return !__atomic_exchange_n(&f->woken, 1, __ATOMIC_ACQ_REL);
}

/* Completions that found their command's wake-up already taken: libnbd reached a command twice,
 * which it must not; counted and logged once, never acted on. */
static unsigned nbd_late_completions;

static int nbd_done_cb(void *opaque, int *error)
{
    NbdInflight *f = opaque;

    if (!nbd_inflight_take_wake(f)) {
        if (__atomic_fetch_add(&nbd_late_completions, 1, __ATOMIC_RELAXED) == 0) {
            log_warning("nbd: libnbd completed a command that was already done (ignored)");
        }
        return 1;
    }
    f->error = *error;
    /* Never enter it here: libnbd holds the handle's lock, and the coroutine may issue more. */
    aio_co_schedule(coroutine_get_context(f->co), f->co);
    return 1;   /* retire the command */
}

/* libnbd is done with f.  A command it drops without completing it (its handle closed while
 * it was still queued) failed as if the connection had been lost. */
static void nbd_inflight_free_cb(void *opaque)
{
    NbdInflight *f = opaque;

    if (nbd_inflight_take_wake(f)) {
        f->error = ENOTCONN;
        aio_co_schedule(coroutine_get_context(f->co), f->co);
    }
    nbd_inflight_unref(f);
}

static int64_t nbd_issue(struct nbd_handle *h, NbdCmd *cmd, NbdInflight *f)
{
    nbd_completion_callback done = { .callback = nbd_done_cb, .user_data = f,
                                     .free = nbd_inflight_free_cb };

    switch (cmd->type) {
    case CMD_READ:
        return nbd_aio_pread(h, cmd->buf, cmd->len, cmd->offset, done, 0);
    case CMD_WRITE:
        return nbd_aio_pwrite(h, cmd->buf, cmd->len, cmd->offset, done, cmd->flags);
    case CMD_FLUSH:
        return nbd_aio_flush(h, done, 0);
    case CMD_TRIM:
        return nbd_aio_trim(h, cmd->len, cmd->offset, done, 0);
    case CMD_ZERO:
        return nbd_aio_zero(h, cmd->len, cmd->offset, done, cmd->flags);
    case CMD_BLOCK_STATUS: {
        nbd_extent_callback extent = { .callback = nbd_extent_cb, .user_data = f };
        return nbd_aio_block_status(h, cmd->len, cmd->offset, extent, done,
                                    LIBNBD_CMD_FLAG_REQ_ONE);
    }
    }
    g_assert_not_reached();
}

static void nbd_conn_init(BDRVNbdState *s, NbdConn *c, unsigned index, AioContext *home,
                          NbdCtxConns *set)
{
    c->s = s;
    c->index = index;
    c->home = home;
    c->set = set;
    c->fd = -1;
    g_mutex_init(&c->lock);
    co_queue_init(&c->waiters);
}

/*
 * The calling queue's own connections, created (and connected, by nbd_reconnect_co in this
 * loop: requests wait for it like for a reconnection) on its first request.  ctx_lock held.
 */
static NbdCtxConns *nbd_ctx_conns_new(BDRVNbdState *s, AioContext *ctx)
{
    NbdCtxConns *set = g_new0(NbdCtxConns, 1);

    set->ctx = ctx;
    set->n = s->nr_conns;
    set->conns = g_new0(NbdConn, set->n);
    for (unsigned i = 0; i < set->n; i++) {
        NbdConn *c = &set->conns[i];
        nbd_conn_init(s, c, i, ctx, set);
        c->state = CONN_RECONNECTING;
        /* Like a reconnection: opened while the server is gone, they do not keep requests
         * waiting past reconnect-timeout (then the shared ones are tried). */
        c->deadline_ns = get_clock_ns() + MIN(s->connect_timeout_ns, s->reconnect_timeout_ns);
        c->reconnecting = true;
        aio_bh_schedule(ctx, nbd_reconnect_bh, c);
    }
    g_hash_table_insert(s->ctx_conns, ctx, set);
    return set;
}

/* The connection for a command of the calling thread: its queue's own when the server offers
 * multi-conn, else (and in the home loop, and for block status) one of the shared ones; round
 * robin among them. */
static NbdConn *nbd_pick_conn(BDRVNbdState *s, NbdCmdType type)
{
    AioContext *ctx = aio_get_current();
    unsigned i = __atomic_fetch_add(&s->next_conn, 1, __ATOMIC_RELAXED);

    if (ctx != s->home && s->multi_conn && type != CMD_BLOCK_STATUS) {
        NbdCtxConns *set;

        g_mutex_lock(&s->ctx_lock);
        set = g_hash_table_lookup(s->ctx_conns, ctx);
        if (!set) {
            set = nbd_ctx_conns_new(s, ctx);
        }
        g_mutex_unlock(&s->ctx_lock);
        if (!__atomic_load_n(&set->failed, __ATOMIC_ACQUIRE)) {
            return &set->conns[i % set->n];
        }
    }
    return &s->conns[i % s->nr_conns];
}

/* Wait (lock held, released while waiting) until c is READY; -EIO when it is DOWN; -EAGAIN
 * when it is a queue's own connection that never came up (use a shared one). */
static int coroutine_fn nbd_conn_wait_ready(NbdConn *c)
{
    bool waited = false;

    for (;;) {
        if (c->state == CONN_READY) {
            return 0;
        }
        if (c->state == CONN_DOWN && c->set && c->gen == 0) {
            return -EAGAIN;
        }
        if (c->state == CONN_DOWN) {
            if (waited || get_clock_ns() < c->next_try_ns) {
                return -EIO;
            }
            /* The server may be back: one attempt, this request waiting for it. */
            c->state = CONN_RECONNECTING;
            c->deadline_ns = get_clock_ns();
            c->next_try_ns = c->deadline_ns + NBD_RETRY_MAX_NS;
            c->reconnecting = true;
            aio_bh_schedule(c->home, nbd_reconnect_bh, c);
        }
        co_queue_wait(&c->waiters, &c->lock);
        waited = true;
    }
}

static bool nbd_error_is_loss(int err)
{
    return err == ENOTCONN || err == ESHUTDOWN || err == ECONNRESET || err == EPIPE;
}

/*
 * Issue cmd on c (READY, c->lock held; released on return) and wait for its end.  Returns the
 * command's errno (0 = success) and fills *res; *lost says the connection was found lost (the
 * command did not complete and may be issued again).
 */
static int coroutine_fn nbd_co_issue(NbdConn *c, bool home, NbdCmd *cmd, NbdReq *res,
                                     bool *lost)
{
    NbdInflight *f = g_new0(NbdInflight, 1);
    int64_t cookie;
    int err;

    f->co = coroutine_self();
    f->refs = 2;                /* ours, and libnbd's until its .free callback */
    cookie = nbd_issue(c->h, cmd, f);
    if (cookie < 0) {
        err = nbd_get_errno();
        *lost = nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h) || nbd_error_is_loss(err);
        if (!*lost) {
            g_autofree char *msg = nbd_error_line();
            log_debug("%s: %s", c->s->server, msg);
        }
        g_mutex_unlock(&c->lock);
        /* libnbd has called .free before returning -1, and that took the wake-up and
         * scheduled us: take it now, or it would resume us in the middle of a later wait.
         * (Had it not, the wake-up is ours, and a later .free wakes no one.) */
        if (!nbd_inflight_take_wake(f)) {
            coroutine_yield();
        }
        nbd_inflight_unref(f);
        return err ? err : EIO;
    }
    {
        bool want_write = nbd_aio_get_direction(c->h) & LIBNBD_AIO_DIRECTION_WRITE;
        g_mutex_unlock(&c->lock);
        if (home) {
            nbd_conn_check(c);
        } else if (want_write && !__atomic_exchange_n(&c->kick_pending, 1, __ATOMIC_ACQ_REL)) {
            aio_bh_schedule(c->home, nbd_conn_kick_bh, c);
        }
    }
    /* The one wake-up: the completion callback's, or .free's if libnbd drops the command. */
    coroutine_yield();
    err = f->error;
    *res = f->res;
    nbd_inflight_unref(f);
    *lost = nbd_error_is_loss(err);
    return err;
}

/* Issue cmd and wait for its reply, across reconnections.  Returns 0 or -errno. */
static int coroutine_fn nbd_co_cmd(BDRVNbdState *s, NbdCmd *cmd, NbdReq *res)
{
    NbdConn *c = nbd_pick_conn(s, cmd->type);
    bool home = aio_get_current() == c->home;

    for (;;) {
        unsigned gen;
        bool lost;
        int ret;

        memset(res, 0, sizeof(*res));
        g_mutex_lock(&c->lock);
        ret = nbd_conn_wait_ready(c);
        if (ret < 0) {
            g_mutex_unlock(&c->lock);
            if (ret == -EAGAIN) {
                /* This queue's own connections never came up: the shared ones. */
                c = nbd_pick_conn(s, cmd->type);
                home = aio_get_current() == c->home;
                continue;
            }
            return ret;
        }
        gen = c->gen;
        ret = nbd_co_issue(c, home, cmd, res, &lost);
        if (ret == 0) {
            return 0;
        }
        if (lost) {
            nbd_conn_lost(c, gen);
            continue;
        }
        return -ret;
    }
}

/* Written: the allocation count is stale. */
static void nbd_mark_alloc_stale(BDRVNbdState *s)
{
    if (!__atomic_load_n(&s->alloc_stale, __ATOMIC_RELAXED)) {
        __atomic_store_n(&s->alloc_stale, 1, __ATOMIC_RELAXED);
    }
}

static int coroutine_fn nbd_co_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                     void *buf, BdrvRequestFlags flags)
{
    BDRVNbdState *s = bs->opaque;
    NbdReq r;

    while (bytes > 0) {
        NbdCmd cmd = { .type = CMD_READ, .offset = offset, .buf = buf,
                       .len = MIN(bytes, s->max_payload) };
        int ret = nbd_co_cmd(s, &cmd, &r);
        if (ret < 0) {
            return ret;
        }
        offset += cmd.len;
        bytes -= cmd.len;
        buf = (uint8_t *)buf + cmd.len;
    }
    return 0;
}

static int coroutine_fn nbd_co_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      const void *buf, BdrvRequestFlags flags)
{
    BDRVNbdState *s = bs->opaque;
    NbdReq r;

    nbd_mark_alloc_stale(s);
    while (bytes > 0) {
        NbdCmd cmd = { .type = CMD_WRITE, .offset = offset, .buf = (void *)buf,
                       .len = MIN(bytes, s->max_payload),
                       .flags = (flags & BDRV_REQ_FUA) ? LIBNBD_CMD_FLAG_FUA : 0 };
        int ret = nbd_co_cmd(s, &cmd, &r);
        if (ret < 0) {
            return ret;
        }
        offset += cmd.len;
        bytes -= cmd.len;
        buf = (const uint8_t *)buf + cmd.len;
    }
    return 0;
}

static int coroutine_fn nbd_co_flush(BlockDriverState *bs)
{
    BDRVNbdState *s = bs->opaque;
    NbdCmd cmd = { .type = CMD_FLUSH };
    NbdReq r;

    /* With multi-conn, a flush on one connection covers the writes of all of them. */
    return s->can_flush ? nbd_co_cmd(s, &cmd, &r) : 0;
}

/* Trims and zero writes, split into pieces the protocol can carry. */
static int coroutine_fn nbd_co_effect(BDRVNbdState *s, NbdCmdType type, int64_t offset,
                                      int64_t bytes, uint32_t flags)
{
    uint32_t chunk = ROUND_DOWN(NBD_MAX_EFFECT, MAX(s->min_block, 1));
    NbdReq r;

    nbd_mark_alloc_stale(s);
    while (bytes > 0) {
        NbdCmd cmd = { .type = type, .offset = offset, .len = MIN(bytes, chunk),
                       .flags = flags };
        int ret = nbd_co_cmd(s, &cmd, &r);
        if (ret < 0) {
            return ret;
        }
        offset += cmd.len;
        bytes -= cmd.len;
    }
    return 0;
}

static int coroutine_fn nbd_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, BdrvRequestFlags flags)
{
    BDRVNbdState *s = bs->opaque;
    uint32_t nbd_flags = 0;
    int ret;

    if (!s->can_zero) {
        return -ENOTSUP;
    }
    if (!(flags & BDRV_REQ_MAY_UNMAP)) {
        nbd_flags |= LIBNBD_CMD_FLAG_NO_HOLE;
    }
    if (flags & BDRV_REQ_NO_FALLBACK) {
        /* The caller wants it fast or not at all: that is what NBD's fast-zero flag says. */
        if (!s->can_fast_zero) {
            return -ENOTSUP;
        }
        nbd_flags |= LIBNBD_CMD_FLAG_FAST_ZERO;
    }
    ret = nbd_co_effect(s, CMD_ZERO, offset, bytes, nbd_flags);
    return ret == -EOPNOTSUPP ? -ENOTSUP : ret;
}

static int coroutine_fn nbd_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVNbdState *s = bs->opaque;
    int ret;

    if (!s->can_trim) {
        return 0;
    }
    ret = nbd_co_effect(s, CMD_TRIM, offset, bytes, 0);
    /* A trim is advice: a server that refuses this one leaves the data, which is allowed. */
    return ret == -ENOTSUP || ret == -EOPNOTSUPP || ret == -EINVAL ? 0 : ret;
}

static int coroutine_fn nbd_co_block_status(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes, int64_t *pnum, int64_t *map,
                                            BlockDriverState **file)
{
    BDRVNbdState *s = bs->opaque;
    NbdCmd cmd = { .type = CMD_BLOCK_STATUS, .offset = offset,
                   .len = MIN(bytes, (int64_t)UINT32_MAX & ~(int64_t)(MAX(s->min_block, 1) - 1)) };
    NbdReq r;
    int ret;

    *map = offset;
    *file = bs;
    *pnum = bytes;
    if (!s->can_block_status) {
        return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
    }
    ret = nbd_co_cmd(s, &cmd, &r);
    if (ret < 0) {
        return ret;
    }
    if (!r.have_extent || r.extent_len == 0) {
        return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
    }
    *pnum = MIN((int64_t)r.extent_len, bytes);
    if (r.extent_flags & LIBNBD_STATE_ZERO) {
        return BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID |
               ((r.extent_flags & LIBNBD_STATE_HOLE) ? 0 : BDRV_BLOCK_DATA);
    }
    return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
}

/* Sum the allocated extents of the whole export; -ENOTSUP when the server does not say or the
 * map has too many pieces to walk. */
#define NBD_ALLOC_WALK_MAX 4096

static int coroutine_fn nbd_co_block_status(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes, int64_t *pnum, int64_t *map,
                                            BlockDriverState **file);

static int64_t coroutine_fn nbd_co_count_allocated(BlockDriverState *bs)
{
    BDRVNbdState *s = bs->opaque;
    int64_t offset = 0, total = 0;

    if (!s->can_block_status) {
        return -ENOTSUP;
    }
    for (int n = 0; offset < s->size; n++) {
        int64_t pnum, map;
        BlockDriverState *file;
        int ret;

        if (n == NBD_ALLOC_WALK_MAX) {
            return -ENOTSUP;
        }
        ret = nbd_co_block_status(bs, offset, s->size - offset, &pnum, &map, &file);
        if (ret < 0) {
            return ret;
        }
        if (ret & BDRV_BLOCK_DATA) {
            total += pnum;
        }
        offset += pnum;
    }
    return total;
}

static void coroutine_fn nbd_alloc_walk_co(void *opaque)
{
    BlockDriverState *bs = opaque;
    BDRVNbdState *s = bs->opaque;
    int64_t n;

    __atomic_store_n(&s->alloc_stale, 0, __ATOMIC_RELAXED);
    n = nbd_co_count_allocated(bs);
    __atomic_store_n(&s->allocated, n < 0 ? -ENOTSUP : n, __ATOMIC_RELAXED);
    __atomic_store_n(&s->alloc_walking, 0, __ATOMIC_RELEASE);
}

static void nbd_alloc_walk_bh(void *opaque)
{
    coroutine_enter(coroutine_create(nbd_alloc_walk_co, opaque));
}

/* Any thread, never yields: the last count; a stale one is refreshed in the background (in
 * the home thread) for the next caller. */
static int64_t nbd_get_allocated_file_size(BlockDriverState *bs)
{
    BDRVNbdState *s = bs->opaque;

    if (__atomic_load_n(&s->alloc_stale, __ATOMIC_RELAXED) &&
        !__atomic_exchange_n(&s->alloc_walking, 1, __ATOMIC_ACQ_REL)) {
        aio_bh_schedule(s->home, nbd_alloc_walk_bh, bs);
    }
    return __atomic_load_n(&s->allocated, __ATOMIC_RELAXED);
}

static int64_t nbd_getlength(BlockDriverState *bs)
{
    BDRVNbdState *s = bs->opaque;

    return s->size;
}

/* --- open and close (main thread) ------------------------------------------------------------ */

static bool nbd_take_uint(BlockOptions *opts, const char *key, unsigned min, unsigned max,
                          unsigned *out, GError **errp)
{
    g_autofree char *v = block_options_take(opts, key);
    char *end;
    unsigned long n;

    if (!v) {
        return true;
    }
    errno = 0;
    n = strtoul(v, &end, 10);
    if (!*v || *end || errno || n < min || n > max) {
        error_setg(errp, "option %s: expected a number from %u to %u, not '%s'", key, min, max,
                   v);
        return false;
    }
    *out = n;
    return true;
}

static bool nbd_take_options(BlockDriverState *bs, BDRVNbdState *s, BlockOptions *opts,
                             GError **errp)
{
    unsigned connect_timeout = NBD_DEFAULT_CONNECT_TIMEOUT;
    unsigned reconnect_timeout = NBD_DEFAULT_RECONNECT_TIMEOUT;

    s->conns_asked = 1;
    if (!nbd_take_uint(opts, "connections", 1, NBD_MAX_CONNECTIONS, &s->conns_asked, errp) ||
        !nbd_take_uint(opts, "connect-timeout", 1, 3600, &connect_timeout, errp) ||
        !nbd_take_uint(opts, "reconnect-timeout", 0, 86400, &reconnect_timeout, errp)) {
        error_prefix(errp, "%s", bs->filename);
        return false;
    }
    s->connect_timeout_ns = connect_timeout * 1000000000LL;
    s->reconnect_timeout_ns = reconnect_timeout * 1000000000LL;
    s->tls_certs = block_options_take(opts, "tls-certs");
    s->tls_psk_file = block_options_take(opts, "tls-psk-file");
    s->tls_username = block_options_take(opts, "tls-username");
    if ((s->tls_certs || s->tls_psk_file || s->tls_username) && !s->tls) {
        error_setg(errp, "%s: tls-certs=, tls-psk-file= and tls-username= need TLS: use an "
                   "nbds:// or nbds+unix:// URI", bs->filename);
        return false;
    }
    if (s->tls_certs && s->tls_psk_file) {
        error_setg(errp, "%s: give tls-certs= or tls-psk-file=, not both", bs->filename);
        return false;
    }
    if (s->tls_psk_file && access(s->tls_psk_file, R_OK) < 0) {
        error_setg_errno(errp, errno, "%s: tls-psk-file=%s", bs->filename, s->tls_psk_file);
        return false;
    }
    if (s->tls_certs && !g_file_test(s->tls_certs, G_FILE_TEST_IS_DIR)) {
        error_setg(errp, "%s: tls-certs=%s is not a directory", bs->filename, s->tls_certs);
        return false;
    }
    return true;
}

/* Take what the server says about the export from its first connection. */
static bool nbd_read_export_info(BlockDriverState *bs, BDRVNbdState *s, struct nbd_handle *h,
                                 int flags, GError **errp)
{
    int64_t min_block = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
    int64_t max_payload = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);

    s->size = nbd_get_size(h);
    if (s->size < 0) {
        g_autofree char *msg = nbd_error_line();
        error_setg(errp, "%s: cannot get the size from the NBD server %s: %s", bs->filename,
                   s->server, msg);
        return false;
    }
    s->read_only = nbd_is_read_only(h) == 1;
    if (s->read_only && (flags & BDRV_O_RDWR)) {
        error_setg(errp, "%s: the NBD server %s exports it read-only; mount it with -r "
                   "(--read-only)", bs->filename, s->server);
        return false;
    }
    s->can_flush = nbd_can_flush(h) == 1;
    s->can_fua = nbd_can_fua(h) == 1;
    s->can_trim = nbd_can_trim(h) == 1;
    s->can_zero = nbd_can_zero(h) == 1;
    s->can_fast_zero = nbd_can_fast_zero(h) == 1;
    s->multi_conn = nbd_can_multi_conn(h) == 1;
    s->can_block_status = nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
    s->min_block = min_block > 0 && min_block <= 65536 ? min_block : 1;
    s->max_payload = max_payload > 0 ? MIN(max_payload, NBD_MAX_PAYLOAD) : NBD_MAX_PAYLOAD;
    s->max_payload = MAX(ROUND_DOWN(s->max_payload, s->min_block), s->min_block);
    return true;
}

static void nbd_close_conns(BDRVNbdState *s)
{
    if (s->ctx_conns) {
        GHashTableIter it;
        gpointer value;

        /* The queues' own connections: their loops have stopped (an export's queue threads
         * end before its image is closed), so there is no handler to remove. */
        g_hash_table_iter_init(&it, s->ctx_conns);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
            NbdCtxConns *set = value;
            for (unsigned i = 0; i < set->n; i++) {
                if (set->conns[i].fd >= 0 && set->conns[i].fd_dup) {
                    close(set->conns[i].fd);
                }
                if (set->conns[i].h) {
                    nbd_close(set->conns[i].h);
                }
                g_mutex_clear(&set->conns[i].lock);
            }
            g_free(set->conns);
            g_free(set);
        }
        g_hash_table_destroy(s->ctx_conns);
        s->ctx_conns = NULL;
        g_mutex_clear(&s->ctx_lock);
    }
    for (unsigned i = 0; s->conns && i < s->nr_conns; i++) {
        NbdConn *c = &s->conns[i];
        if (aio_get_current() == s->home) {
            nbd_conn_detach(c);
        } else if (c->fd >= 0 && c->fd_dup) {
            close(c->fd);
        }
        if (c->h) {
            nbd_close(c->h);
        }
        g_mutex_clear(&c->lock);
    }
    g_free(s->conns);
    s->conns = NULL;
}

static void nbd_free_state(BDRVNbdState *s)
{
    nbd_close_conns(s);
    g_free(s->uri);
    g_free(s->server);
    g_free(s->tls_certs);
    g_free(s->tls_psk_file);
    g_free(s->tls_username);
}

static int nbd_open(BlockDriverState *bs, BlockOptions *opts, int flags, GError **errp)
{
    BDRVNbdState *s = bs->opaque;
    struct nbd_handle *first;
    bool unix_socket;

    if (!nbd_scheme_ok(bs->filename, &s->tls, &unix_socket)) {
        error_setg(errp, "%s: not an NBD URI: use nbd://HOST[:PORT]/EXPORT, "
                   "nbd+unix:///EXPORT?socket=PATH, nbds:// or nbds+unix://", bs->filename);
        return -EINVAL;
    }
    /* From here on, people see the URI without its secrets; libnbd gets it whole. */
    s->uri = bs->filename;
    bs->filename = uri_redact(s->uri);
    s->server = nbd_uri_server(s->uri, unix_socket);
    if (!nbd_take_options(bs, s, opts, errp)) {
        nbd_free_state(s);
        return -EINVAL;
    }
    if (!load_libraries(&nbdlib_loader, errp)) {
        nbd_free_state(s);
        return -ENOTSUP;
    }
    s->home = aio_get_current();
    g_mutex_init(&s->ctx_lock);
    s->ctx_conns = g_hash_table_new(NULL, NULL);

    first = nbd_connect_sync(s, errp);
    if (!first) {
        nbd_free_state(s);
        return -ECONNREFUSED;
    }
    if (!nbd_read_export_info(bs, s, first, flags, errp)) {
        nbd_close(first);
        nbd_free_state(s);
        return s->read_only ? -EROFS : -EIO;
    }
    if (s->can_fua) {
        bs->supported_write_flags = BDRV_REQ_FUA;
    }
    s->nr_conns = s->conns_asked;
    if (s->nr_conns > 1 && !s->multi_conn) {
        log_warning("%s: the NBD server %s does not offer multi-conn: using 1 connection, "
                    "not %u", bs->filename, s->server, s->nr_conns);
        s->nr_conns = 1;
    }
    s->conns = g_new0(NbdConn, s->nr_conns);
    for (unsigned i = 0; i < s->nr_conns; i++) {
        NbdConn *c = &s->conns[i];
        nbd_conn_init(s, c, i, s->home, NULL);
        c->state = CONN_READY;
        c->h = i == 0 ? first : nbd_connect_sync(s, errp);
        if (!c->h) {
            nbd_free_state(s);
            return -ECONNREFUSED;
        }
        nbd_conn_attach(c);
    }
    s->alloc_walking = 1;
    aio_run_coroutine(nbd_alloc_walk_co, bs);
    log_debug("%s: NBD server %s, %" PRId64 " bytes, %u connection(s)%s%s%s%s%s", bs->filename,
              s->server, s->size, s->nr_conns, s->read_only ? ", read-only" : "",
              s->can_fua ? ", fua" : "", s->can_trim ? ", trim" : "",
              s->can_fast_zero ? ", fast-zero" : s->can_zero ? ", zero" : "",
              s->can_block_status ? ", base:allocation" : "");
    return 0;
}

static void nbd_close_drv(BlockDriverState *bs)
{
    BDRVNbdState *s = bs->opaque;

    /* A background walk of the allocation, or a reconnection, runs in this (home) thread:
     * let them end (a reconnection gives up after its current attempt). */
    s->closing = true;
    for (unsigned i = 0; s->conns && i < s->nr_conns; i++) {
        while (__atomic_load_n(&s->conns[i].reconnecting, __ATOMIC_ACQUIRE)) {
            aio_poll(s->home, true);
        }
    }
    while (__atomic_load_n(&s->alloc_walking, __ATOMIC_ACQUIRE)) {
        aio_poll(s->home, true);
    }
    nbd_free_state(s);
}

static void nbd_refresh_limits(BlockDriverState *bs)
{
    BDRVNbdState *s = bs->opaque;

    bs->bl.request_alignment = s->min_block;
    bs->bl.max_transfer = s->max_payload;
}

static int nbd_get_info(BlockDriverState *bs, BlockDriverInfo *info)
{
    BDRVNbdState *s = bs->opaque;

    info->extra = g_strdup_printf("server: %s\nconnections: %u\n", s->server, s->nr_conns);
    return 0;
}

const BlockDriver bdrv_nbd = {
    .format_name                    = "nbd",
    .instance_size                  = sizeof(BDRVNbdState),
    .is_protocol                    = true,
    .protocol_prefix                = "nbd",
    .protocol_prefixes              = (const char *const[]){ "nbd+unix", "nbds", "nbds+unix",
                                                             NULL },
    .bdrv_open                      = nbd_open,
    .bdrv_close                     = nbd_close_drv,
    .bdrv_refresh_limits            = nbd_refresh_limits,
    .bdrv_co_pread                  = nbd_co_pread,
    .bdrv_co_pwrite                 = nbd_co_pwrite,
    .bdrv_co_pwrite_zeroes          = nbd_co_pwrite_zeroes,
    .bdrv_co_pdiscard               = nbd_co_pdiscard,
    .bdrv_co_flush                  = nbd_co_flush,
    .bdrv_co_block_status           = nbd_co_block_status,
    .bdrv_getlength                 = nbd_getlength,
    .bdrv_get_allocated_file_size   = nbd_get_allocated_file_size,
    .bdrv_get_info                  = nbd_get_info,
};

#endif /* CONFIG_LIBNBD */
