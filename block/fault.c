/* fault.c - the fault-injection filter: a node between a format node and its protocol node that
 * fails, delays or traces chosen requests and can simulate a power failure, following a rules
 * file (block option fault-rules=PATH).  For tests; QEMU's blkdebug is the model of the idea.
 *
 * Rules file: one rule per line, '#' starts a comment, words separated by blanks:
 *
 *     error     op=OPS [offset=N] [length=N] [after=N] [count=N] [errno=NAME]
 *     delay     op=OPS [offset=N] [length=N] [after=N] [count=N] ms=N
 *     powerfail [op=OPS] after=N [mode=all|random|lose-one] [seed=N] [index=N]
 *     trace     path=FILE
 *
 * OPS is a comma-separated list of read, write, flush, discard, zero, truncate, preallocate, any.
 * A rule matches a request of one of its ops that overlaps [offset, offset + length) (default:
 * the whole node; flush and truncate match whatever their offset).  Every rule counts the
 * requests it matches: the first `after` pass (default 0), the next `count` fire (default 1;
 * 0 = every one from then on).  A firing error rule fails the request with errno (default EIO)
 * without passing it on; firing delay rules hold it for the sum of their ms, then it proceeds
 * (or fails, if an error rule fired as well).
 *
 * Power-loss mode (a powerfail rule): from open on, every change (write, zero, discard,
 * truncate) is kept in memory, in order, instead of reaching the child; reads and the length see
 * them.  A flush writes them to the child in order, then the child is flushed (by io.c, after
 * fault_co_flush).  Truncate is buffered like a write, not a barrier: after a power failure the
 * file may keep its old length, or keep it while later writes survive.  Preallocate does not
 * change what reads return and passes straight through.  The request after the first `after`
 * matching ones (default op=write) finds the power gone: the changes not yet written are
 * dropped (mode=all), or a random subset of them (each with probability 1/2, from the seed) is
 * written to the child in order (mode=random), or all but the index-th (from 0) are
 * (mode=lose-one: run for each index, it finds every "B reached the disk without A" ordering
 * bug between two flushes); that request and every later one fail with EIO.
 * "Written to the child" counts as durable: the simulation never undoes what the child got.
 *
 * Trace: every request is appended to FILE as one line "OP OFFSET LENGTH" (flush: 0 0;
 * truncate: the new length and 0), in the order the filter saw them, including failed ones.
 *
 * Threads: requests arrive in coroutines from several I/O threads at once.  s->lock (a GMutex,
 * never held across a yield) protects the rules' counters, the buffered changes, the length and
 * the power state.  s->child_lock (a CoMutex) serialises writing buffered changes to the child:
 * a flush holds it while it writes them out, and the power failure takes it before it drops or
 * writes the rest, so the child gets changes in order.  A delay waits on a timerfd in the
 * requesting coroutine's own event loop, so the loop keeps serving other requests.  Trace lines
 * are queued under s->lock and written by one thread of their own, so no event loop waits on
 * the trace file.  Open and close run in the main thread.
 */
#include "config.h"
#include "block/block.h"
#include "block/aio.h"
#include "block/util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

typedef enum {
    FAULT_READ, FAULT_WRITE, FAULT_FLUSH, FAULT_DISCARD, FAULT_ZERO, FAULT_TRUNCATE,
    FAULT_PREALLOCATE, FAULT_OP__MAX
} FaultOp;

static const char *const fault_op_names[FAULT_OP__MAX] = {
    [FAULT_READ] = "read", [FAULT_WRITE] = "write", [FAULT_FLUSH] = "flush",
    [FAULT_DISCARD] = "discard", [FAULT_ZERO] = "zero", [FAULT_TRUNCATE] = "truncate",
    [FAULT_PREALLOCATE] = "preallocate",
};

#define FAULT_OPS_ANY ((1u << FAULT_OP__MAX) - 1)
#define FAULT_MS_MAX (24 * 3600 * 1000)         /* a day: beyond that it is a typo */

typedef enum { RULE_ERROR, RULE_DELAY, RULE_POWERFAIL, RULE_TRACE, RULE__MAX } FaultRuleKind;

static const char *const rule_names[RULE__MAX] = {
    [RULE_ERROR] = "error", [RULE_DELAY] = "delay", [RULE_POWERFAIL] = "powerfail",
    [RULE_TRACE] = "trace",
};

typedef struct FaultRule {
    FaultRuleKind kind;
    unsigned line;              /* in the rules file, for messages */
    unsigned ops;               /* 1 << FaultOp */
    int64_t offset, end;        /* the range it matches: [offset, end) */
    uint64_t after, count;
    int err;                    /* error: positive errno */
    uint64_t ms;                /* delay */
    enum { PF_ALL, PF_RANDOM, PF_LOSE_ONE } mode;       /* powerfail */
    uint64_t seed;              /* powerfail: mode=random */
    uint64_t index;             /* powerfail: mode=lose-one */
    char *path;                 /* trace */
    uint64_t matched;           /* requests matched so far; under s->lock */
} FaultRule;

/* A change buffered in power-loss mode, not yet written to the child. */
typedef struct FaultChange {
    FaultOp op;                 /* FAULT_WRITE, _ZERO, _DISCARD or _TRUNCATE */
    int64_t offset, bytes;      /* truncate: offset is the new length, bytes 0 */
    uint8_t *data;              /* write: bytes bytes (blk_blockalign) */
    BdrvRequestFlags flags;     /* zero */
    bool exact;                 /* truncate */
    PreallocMode prealloc;      /* truncate */
    int refcnt;                 /* atomic: the pending list's and readers' references */
} FaultChange;

typedef struct BDRVFaultState {
    GPtrArray *rules;           /* FaultRule *, in file order (all kinds) */
    FaultRule *powerfail;       /* the powerfail rule (also in rules), or NULL */
    GMutex lock;

    /* trace */
    int trace_fd;               /* -1: no trace rule */
    GAsyncQueue *trace_queue;   /* char * lines, then trace_end */
    GThread *trace_thread;

    /* power-loss mode (powerfail != NULL); under lock unless noted */
    GPtrArray *pending;         /* FaultChange *, oldest first */
    int64_t length;             /* the child's length with the pending changes; atomic */
    bool power_gone;            /* atomic reads outside the lock */
    CoMutex child_lock;         /* held while buffered changes are written to the child */
} BDRVFaultState;

static char trace_end[] = "";   /* the trace queue's end mark */

static void fault_rule_free(gpointer p)
{
    FaultRule *r = p;

    g_free(r->path);
    g_free(r);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FaultRule, fault_rule_free)

/* --- the rules file --- */

static const struct { const char *name; int err; } fault_errnos[] = {
    { "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EPERM", EPERM }, { "EACCES", EACCES },
    { "EROFS", EROFS }, { "EINVAL", EINVAL }, { "ENOMEM", ENOMEM }, { "EAGAIN", EAGAIN },
    { "EDQUOT", EDQUOT }, { "EFBIG", EFBIG }, { "ENOTSUP", ENOTSUP },
    { "EOPNOTSUPP", EOPNOTSUPP }, { "ETIMEDOUT", ETIMEDOUT }, { "ENODEV", ENODEV },
    { "ENXIO", ENXIO }, { "EBUSY", EBUSY }, { "EINTR", EINTR }, { "ECANCELED", ECANCELED },
    { "ENOENT", ENOENT }, { "ENOTCONN", ENOTCONN }, { "ECONNRESET", ECONNRESET },
    { "EPIPE", EPIPE }, { "ENOMEDIUM", ENOMEDIUM }, { "EREMOTEIO", EREMOTEIO },
    { "EUCLEAN", EUCLEAN }, { "ESTALE", ESTALE }, { "EFAULT", EFAULT },
};

/* Where a rule is being parsed, for messages: "PATH:LINE: ..." */
typedef struct RuleParser {
    const char *path;
    unsigned line;
    GError **errp;
} RuleParser;

static void G_GNUC_PRINTF(2, 3) parse_error(RuleParser *p, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    error_setg(p->errp, "%s:%u: %s", p->path, p->line, msg);
}

/* A number in word (KEY=value); size: with an optional suffix (64k, 1M). */
static bool parse_number(RuleParser *p, const char *word, const char *value, bool size,
                         uint64_t max, uint64_t *out)
{
    guint64 v;

    if (size ? !parse_size(value, &v, NULL)
             : !g_ascii_string_to_unsigned(value, 10, 0, G_MAXUINT64, &v, NULL)) {
        parse_error(p, "bad number in '%s'", word);
        return false;
    }
    if (v > max) {
        parse_error(p, "number too large in '%s' (at most %" PRIu64 ")", word, max);
        return false;
    }
    *out = v;
    return true;
}

static bool parse_ops(RuleParser *p, const char *word, const char *value, unsigned *out)
{
    g_auto(GStrv) names = g_strsplit(value, ",", -1);

    *out = 0;
    if (!*value) {
        parse_error(p, "no operation in '%s'", word);
        return false;
    }
    for (char **n = names; *n; n++) {
        unsigned bit = 0;

        if (!strcmp(*n, "any")) {
            bit = FAULT_OPS_ANY;
        }
        for (int op = 0; op < FAULT_OP__MAX; op++) {
            if (!strcmp(*n, fault_op_names[op])) {
                bit = 1u << op;
            }
        }
        if (!bit) {
            parse_error(p, "unknown operation '%s' in '%s' (expected read, write, flush, "
                        "discard, zero, truncate, preallocate or any)", *n, word);
            return false;
        }
        *out |= bit;
    }
    return true;
}

static bool parse_errno(RuleParser *p, const char *word, const char *value, int *out)
{
    for (size_t i = 0; i < G_N_ELEMENTS(fault_errnos); i++) {
        if (!strcmp(value, fault_errnos[i].name)) {
            *out = fault_errnos[i].err;
            return true;
        }
    }
    parse_error(p, "unknown errno name in '%s' (EIO, ENOSPC, EPERM, ... as in errno.h)", word);
    return false;
}

/* Which keywords each kind of rule takes; the first `required` of them it must have. */
static const struct {
    const char *const keys[8];
    unsigned required;
} rule_keywords[RULE__MAX] = {
    [RULE_ERROR] = { { "op", "offset", "length", "after", "count", "errno" }, 1 },
    [RULE_DELAY] = { { "ms", "op", "offset", "length", "after", "count" }, 2 },
    [RULE_POWERFAIL] = { { "after", "op", "mode", "seed", "index" }, 1 },
    [RULE_TRACE] = { { "path" }, 1 },
};

static bool keyword_allowed(FaultRuleKind kind, const char *key)
{
    for (const char *const *k = rule_keywords[kind].keys; *k; k++) {
        if (!strcmp(*k, key)) {
            return true;
        }
    }
    return false;
}

static const char *article(FaultRuleKind kind)
{
    return strchr("aeiou", rule_names[kind][0]) ? "an" : "a";
}

/* Parse the words of one rule (words[0] is its kind) into a new rule, or NULL with errp. */
static FaultRule *parse_rule(RuleParser *p, char **words)
{
    g_autoptr(FaultRule) r = g_new0(FaultRule, 1);
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    uint64_t offset = 0, length = 0;
    int kind;

    for (kind = 0; kind < RULE__MAX; kind++) {
        if (!strcmp(words[0], rule_names[kind])) {
            break;
        }
    }
    if (kind == RULE__MAX) {
        parse_error(p, "unknown rule '%s' (expected error, delay, powerfail or trace)",
                    words[0]);
        return NULL;
    }
    r->kind = kind;
    r->line = p->line;
    r->count = 1;
    r->err = EIO;
    r->ops = kind == RULE_POWERFAIL ? 1u << FAULT_WRITE : 0;

    for (char **w = words + 1; *w; w++) {
        g_autofree char *key = NULL;
        const char *eq = strchr(*w, '='), *value;
        bool ok = true;

        if (!eq || eq == *w) {
            parse_error(p, "'%s' is not KEY=VALUE", *w);
            return NULL;
        }
        key = g_strndup(*w, eq - *w);
        value = eq + 1;
        if (!keyword_allowed(kind, key)) {
            parse_error(p, "unknown keyword '%s' for %s %s rule", *w, article(kind),
                        rule_names[kind]);
            return NULL;
        }
        if (g_hash_table_contains(seen, key)) {
            parse_error(p, "'%s' given twice", key);
            return NULL;
        }
        g_hash_table_add(seen, g_strdup(key));
        if (!strcmp(key, "op")) {
            ok = parse_ops(p, *w, value, &r->ops);
        } else if (!strcmp(key, "offset")) {
            ok = parse_number(p, *w, value, true, INT64_MAX, &offset);
        } else if (!strcmp(key, "length")) {
            ok = parse_number(p, *w, value, true, INT64_MAX, &length);
            if (ok && length == 0) {
                parse_error(p, "'%s': the length must not be 0", *w);
                ok = false;
            }
        } else if (!strcmp(key, "after")) {
            ok = parse_number(p, *w, value, false, G_MAXUINT64 - 1, &r->after);
        } else if (!strcmp(key, "count")) {
            ok = parse_number(p, *w, value, false, G_MAXUINT64 - 1, &r->count);
        } else if (!strcmp(key, "errno")) {
            ok = parse_errno(p, *w, value, &r->err);
        } else if (!strcmp(key, "ms")) {
            ok = parse_number(p, *w, value, false, FAULT_MS_MAX, &r->ms);
        } else if (!strcmp(key, "mode")) {
            if (!strcmp(value, "random")) {
                r->mode = PF_RANDOM;
            } else if (!strcmp(value, "lose-one")) {
                r->mode = PF_LOSE_ONE;
            } else if (strcmp(value, "all") != 0) {
                parse_error(p, "unknown mode in '%s' (expected all, random or lose-one)", *w);
                ok = false;
            }
        } else if (!strcmp(key, "seed")) {
            ok = parse_number(p, *w, value, false, G_MAXUINT64, &r->seed);
        } else if (!strcmp(key, "index")) {
            ok = parse_number(p, *w, value, false, G_MAXUINT64, &r->index);
        } else if (!strcmp(key, "path")) {
            r->path = g_strdup(value);
            if (!*value) {
                parse_error(p, "no file name in '%s'", *w);
                ok = false;
            }
        }
        if (!ok) {
            return NULL;
        }
    }
    for (unsigned i = 0; i < rule_keywords[kind].required; i++) {
        if (!g_hash_table_contains(seen, rule_keywords[kind].keys[i])) {
            parse_error(p, "%s %s rule needs %s=", article(kind), rule_names[kind],
                        rule_keywords[kind].keys[i]);
            return NULL;
        }
    }
    if (kind == RULE_POWERFAIL &&
        (r->mode == PF_LOSE_ONE) != g_hash_table_contains(seen, "index")) {
        parse_error(p, "mode=lose-one and index= go together");
        return NULL;
    }
    r->offset = offset;
    r->end = length && offset + length <= INT64_MAX ? (int64_t)(offset + length) : INT64_MAX;
    return g_steal_pointer(&r);
}

/* What a powerfail or trace rule needs besides its words: at most one of each, a trace file. */
static bool fault_setup_rule(BDRVFaultState *s, RuleParser *p, FaultRule *r)
{
    if (r->kind == RULE_POWERFAIL) {
        if (s->powerfail) {
            parse_error(p, "a second powerfail rule (the first is on line %u)",
                        s->powerfail->line);
            return false;
        }
        s->powerfail = r;
    } else if (r->kind == RULE_TRACE) {
        if (s->trace_fd >= 0) {
            parse_error(p, "a second trace rule ('path=%s')", r->path);
            return false;
        }
        s->trace_fd = open(r->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (s->trace_fd < 0) {
            parse_error(p, "cannot open the trace file in 'path=%s': %s", r->path,
                        g_strerror(errno));
            return false;
        }
    }
    return true;
}

static bool fault_parse_rules(BDRVFaultState *s, const char *path, GError **errp)
{
    g_autoptr(GError) local = NULL;
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    RuleParser p = { .path = path, .errp = errp };

    if (!g_file_get_contents(path, &text, NULL, &local)) {
        error_setg(errp, "fault-rules: %s", local->message);
        return false;
    }
    lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        char *hash = strchr(*l, '#');
        g_auto(GStrv) raw = NULL;
        g_autoptr(GPtrArray) words = g_ptr_array_new();
        FaultRule *r;

        p.line++;
        if (hash) {
            *hash = '\0';
        }
        raw = g_strsplit_set(*l, " \t\r", -1);
        for (char **w = raw; *w; w++) {
            if (**w) {
                g_ptr_array_add(words, *w);
            }
        }
        if (words->len == 0) {
            continue;
        }
        g_ptr_array_add(words, NULL);
        r = parse_rule(&p, (char **)words->pdata);
        if (!r) {
            return false;
        }
        g_ptr_array_add(s->rules, r);
        if (!fault_setup_rule(s, &p, r)) {
            return false;
        }
    }
    return true;
}

/* --- deciding a request's fate --- */

static bool rule_matches(const FaultRule *r, FaultOp op, int64_t offset, int64_t bytes)
{
    if (!(r->ops & (1u << op))) {
        return false;
    }
    if (op == FAULT_FLUSH || op == FAULT_TRUNCATE) {
        return true;
    }
    return offset < r->end && offset + bytes > r->offset;
}

/* Count one more matching request; does the rule fire on it? */
static bool rule_fires(FaultRule *r)
{
    uint64_t n = ++r->matched;

    return n > r->after && (r->count == 0 || n - r->after <= r->count);
}

typedef struct FaultSleep {
    AioContext *ctx;
    Coroutine *co;
    int fd;
} FaultSleep;

static void fault_sleep_done(void *opaque)
{
    FaultSleep *w = opaque;
    uint64_t expirations;

    if (read(w->fd, &expirations, sizeof(expirations)) < 0 && errno == EAGAIN) {
        return;         /* spurious wake-up: the timer has not expired yet */
    }
    aio_set_fd_handler(w->ctx, w->fd, NULL, NULL, NULL);
    coroutine_wake(w->co);
}

/* Wait ms milliseconds on a timerfd in this coroutine's event loop (which keeps running).
 * Returns 0, or -errno if no timer could be had. */
static int coroutine_fn fault_sleep(uint64_t ms)
{
    FaultSleep w = { .co = coroutine_self() };
    struct itimerspec its = {
        .it_value = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 },
    };

    w.ctx = coroutine_get_context(w.co);
    w.fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (w.fd < 0 || timerfd_settime(w.fd, 0, &its, NULL) < 0) {
        int ret = -errno;
        log_error("fault: cannot set a timer for a delay: %s", g_strerror(errno));
        if (w.fd >= 0) {
            close(w.fd);
        }
        return ret;
    }
    aio_set_fd_handler(w.ctx, w.fd, fault_sleep_done, NULL, &w);
    coroutine_yield();
    close(w.fd);
    return 0;
}

/* --- the trace --- */

static gpointer trace_thread_fn(gpointer opaque)
{
    BDRVFaultState *s = opaque;
    bool failed = false;
    char *line;

    while ((line = g_async_queue_pop(s->trace_queue)) != trace_end) {
        size_t len = strlen(line), done = 0;

        while (!failed && done < len) {
            ssize_t n = write(s->trace_fd, line + done, len - done);
            if (n < 0 && errno != EINTR) {
                log_error("fault: cannot write the trace: %s", g_strerror(errno));
                failed = true;
            }
            done += n > 0 ? n : 0;
        }
        g_free(line);
    }
    return NULL;
}

/* Under s->lock, so that lines are in the order requests were decided. */
static void trace_request(BDRVFaultState *s, FaultOp op, int64_t offset, int64_t bytes)
{
    if (s->trace_queue) {
        g_async_queue_push(s->trace_queue,
                           g_strdup_printf("%s %" PRId64 " %" PRId64 "\n", fault_op_names[op],
                                           offset, bytes));
    }
}

/* --- power-loss mode: the buffered changes --- */

static FaultChange *change_new(FaultOp op, int64_t offset, int64_t bytes)
{
    FaultChange *c = g_new0(FaultChange, 1);

    c->op = op;
    c->offset = offset;
    c->bytes = bytes;
    c->refcnt = 1;
    return c;
}

static FaultChange *change_ref(FaultChange *c)
{
    __atomic_add_fetch(&c->refcnt, 1, __ATOMIC_RELAXED);
    return c;
}

static void change_unref(gpointer p)
{
    FaultChange *c = p;

    if (__atomic_sub_fetch(&c->refcnt, 1, __ATOMIC_ACQ_REL) == 0) {
        blk_vfree(c->data);
        g_free(c);
    }
}

/* Does c change what a read of [offset, offset + bytes) returns? */
static bool change_affects(const FaultChange *c, int64_t offset, int64_t bytes)
{
    if (c->op == FAULT_TRUNCATE) {
        return c->offset < offset + bytes;      /* beyond the new end: zeros from now on */
    }
    return c->offset < offset + bytes && offset < c->offset + c->bytes;
}

/* Apply c to buf, which holds [offset, offset + bytes) as it read before c. */
static void change_apply(const FaultChange *c, int64_t offset, int64_t bytes, uint8_t *buf)
{
    int64_t start = MAX(c->offset, offset);
    int64_t end = c->op == FAULT_TRUNCATE ? offset + bytes
                                          : MIN(c->offset + c->bytes, offset + bytes);

    if (start >= end) {
        return;
    }
    if (c->op == FAULT_WRITE) {
        memcpy(buf + (start - offset), c->data + (start - c->offset), end - start);
    } else {
        memset(buf + (start - offset), 0, end - start);     /* zero, discard, truncate */
    }
}

/* Write one buffered change to the child.  Caller holds s->child_lock. */
static int coroutine_fn change_write_out(BlockDriverState *bs, FaultChange *c)
{
    BlockDriverState *child = bs->file->bs;
    g_autoptr(GError) err = NULL;
    int ret = 0;

    switch (c->op) {
    case FAULT_WRITE:
        ret = bdrv_co_pwrite(child, c->offset, c->bytes, c->data, 0);
        break;
    case FAULT_ZERO:    /* it read as zeros already: the child must not refuse to fall back */
        ret = bdrv_co_pwrite_zeroes(child, c->offset, c->bytes,
                                    c->flags & ~BDRV_REQ_NO_FALLBACK);
        break;
    case FAULT_DISCARD:
        ret = bdrv_co_pdiscard(child, c->offset, c->bytes);
        break;
    case FAULT_TRUNCATE:
        ret = bdrv_co_truncate(child, c->offset, c->exact, c->prealloc, &err);
        if (ret < 0) {
            log_error("fault: a buffered resize failed: %s", err->message);
        }
        break;
    default:
        g_assert_not_reached();
    }
    return ret;
}

/* Keep c (taking over the reference) until the next flush.  -EIO if the power is gone. */
static int fault_buffer(BlockDriverState *bs, FaultChange *c)
{
    BDRVFaultState *s = bs->opaque;
    int64_t len;

    g_mutex_lock(&s->lock);
    if (s->power_gone) {
        g_mutex_unlock(&s->lock);
        change_unref(c);
        return -EIO;
    }
    g_ptr_array_add(s->pending, c);
    len = s->length;
    if (c->op == FAULT_TRUNCATE) {
        len = c->offset;
    } else if (c->op == FAULT_WRITE) {
        len = MAX(len, c->offset + c->bytes);
    }       /* zero and discard keep the length, as the file driver's fallocate does */
    __atomic_store_n(&s->length, len, __ATOMIC_RELAXED);
    g_mutex_unlock(&s->lock);
    return 0;
}

/* Read through the child, then replay the buffered changes that touch the range, in order. */
static int coroutine_fn fault_read_buffered(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                            void *buf, BdrvRequestFlags flags)
{
    BDRVFaultState *s = bs->opaque;
    g_autoptr(GPtrArray) changes = g_ptr_array_new_with_free_func(change_unref);
    int ret;

    /* Take the changes before reading: a flush may write some of them to the child meanwhile,
     * and replaying a change the child already has changes nothing. */
    g_mutex_lock(&s->lock);
    for (guint i = 0; i < s->pending->len; i++) {
        FaultChange *c = s->pending->pdata[i];
        if (change_affects(c, offset, bytes)) {
            g_ptr_array_add(changes, change_ref(c));
        }
    }
    g_mutex_unlock(&s->lock);
    ret = bdrv_co_pread(bs->file->bs, offset, bytes, buf, flags);
    if (ret < 0) {
        return ret;
    }
    for (guint i = 0; i < changes->len; i++) {
        change_apply(changes->pdata[i], offset, bytes, buf);
    }
    return 0;
}

/* Does the i-th unflushed change survive the power failure? */
static bool change_survives(FaultRule *pf, GRand *rand, guint i)
{
    switch (pf->mode) {
    case PF_RANDOM:
        return g_rand_boolean(rand);
    case PF_LOSE_ONE:
        return i != pf->index;
    default:
        return false;
    }
}

/* The power fails now (s->power_gone is already set, so no change joins the list): drop the
 * changes the child has not got, or write the surviving ones, in order.  Logs one line. */
static void coroutine_fn fault_power_fail(BlockDriverState *bs, FaultOp op, int64_t offset,
                                          int64_t bytes)
{
    BDRVFaultState *s = bs->opaque;
    FaultRule *pf = s->powerfail;
    g_autoptr(GPtrArray) lost = NULL;
    unsigned kept = 0;

    co_mutex_lock(&s->child_lock);      /* a flush writing changes out finishes first */
    g_mutex_lock(&s->lock);
    lost = g_steal_pointer(&s->pending);
    s->pending = g_ptr_array_new_with_free_func(change_unref);
    g_mutex_unlock(&s->lock);

    if (pf->mode != PF_ALL) {
        guint32 seed[2] = { (guint32)pf->seed, (guint32)(pf->seed >> 32) };
        GRand *rand = g_rand_new_with_seed_array(seed, 2);

        for (guint i = 0; i < lost->len; i++) {
            if (change_survives(pf, rand, i)) {
                int ret = change_write_out(bs, lost->pdata[i]);
                if (ret < 0) {
                    log_error("%s: fault: writing a change that survives the power failure "
                              "failed: %s", bs->filename, g_strerror(-ret));
                }
                kept++;
            }
        }
        g_rand_free(rand);
    }
    co_mutex_unlock(&s->child_lock);
    log_warning("%s: fault: power failure at %s offset %" PRId64 " length %" PRId64
                " (after %" PRIu64 " matching requests): %u unflushed changes lost, %u kept",
                bs->filename, fault_op_names[op], offset, bytes, pf->after,
                lost->len - kept, kept);
}

/* --- deciding a request's fate --- */

/* Every request passes here first: 0 lets it proceed, -errno fails it. */
static int coroutine_fn fault_enter(BlockDriverState *bs, FaultOp op, int64_t offset,
                                    int64_t bytes)
{
    BDRVFaultState *s = bs->opaque;
    FaultRule *pf = s->powerfail;
    uint64_t delay = 0;
    int ret = 0;

    g_mutex_lock(&s->lock);
    trace_request(s, op, offset, bytes);
    if (s->power_gone) {
        g_mutex_unlock(&s->lock);
        return -EIO;
    }
    if (pf && rule_matches(pf, op, offset, bytes) && ++pf->matched > pf->after) {
        __atomic_store_n(&s->power_gone, true, __ATOMIC_RELEASE);
        g_mutex_unlock(&s->lock);
        fault_power_fail(bs, op, offset, bytes);
        return -EIO;
    }
    for (guint i = 0; i < s->rules->len; i++) {
        FaultRule *r = s->rules->pdata[i];

        if ((r->kind != RULE_ERROR && r->kind != RULE_DELAY) ||
            !rule_matches(r, op, offset, bytes) || !rule_fires(r)) {
            continue;
        }
        if (r->kind == RULE_DELAY) {
            delay += r->ms;
        } else if (ret == 0) {
            ret = -r->err;
        }
    }
    g_mutex_unlock(&s->lock);
    if (delay) {
        int err = fault_sleep(delay);
        ret = ret ? ret : err;
    }
    return ret;
}

/* --- driver callbacks --- */

static void fault_free_state(BDRVFaultState *s)
{
    if (s->trace_thread) {
        g_async_queue_push(s->trace_queue, trace_end);
        g_thread_join(s->trace_thread);
    }
    if (s->trace_queue) {
        g_async_queue_unref(s->trace_queue);
    }
    if (s->trace_fd >= 0) {
        close(s->trace_fd);
    }
    if (s->pending) {
        g_ptr_array_free(s->pending, true);
        co_mutex_destroy(&s->child_lock);
    }
    g_ptr_array_free(s->rules, true);
    g_mutex_clear(&s->lock);
}

static int fault_open(BlockDriverState *bs, BlockOptions *opts, int flags, GError **errp)
{
    BDRVFaultState *s = bs->opaque;
    g_autofree char *path = block_options_take(opts, "fault-rules");

    if (!path) {
        error_setg(errp, "%s: the fault filter needs fault-rules=PATH", bs->filename);
        return -EINVAL;
    }
    s->rules = g_ptr_array_new_with_free_func(fault_rule_free);
    s->trace_fd = -1;
    g_mutex_init(&s->lock);
    if (!fault_parse_rules(s, path, errp)) {
        fault_free_state(s);
        return -EINVAL;
    }
    if (s->powerfail) {
        s->length = bdrv_getlength(bs->file->bs);
        if (s->length < 0) {
            error_setg_errno(errp, s->length, "%s: cannot get the size", bs->filename);
            fault_free_state(s);
            return -EINVAL;
        }
        s->pending = g_ptr_array_new_with_free_func(change_unref);
        co_mutex_init(&s->child_lock);
    }
    if (s->trace_fd >= 0) {
        s->trace_queue = g_async_queue_new();
        s->trace_thread = g_thread_new("fault-trace", trace_thread_fn, s);
    }
    return 0;
}

/* After the final flush; after a power failure nothing buffered reaches the child. */
static void fault_close(BlockDriverState *bs)
{
    fault_free_state(bs->opaque);
}

static bool power_gone(BDRVFaultState *s)
{
    return __atomic_load_n(&s->power_gone, __ATOMIC_ACQUIRE);
}

static int coroutine_fn fault_co_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       void *buf, BdrvRequestFlags flags)
{
    BDRVFaultState *s = bs->opaque;
    int ret = fault_enter(bs, FAULT_READ, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    if (s->powerfail) {
        return fault_read_buffered(bs, offset, bytes, buf, flags);
    }
    return bdrv_co_pread(bs->file->bs, offset, bytes, buf, flags);
}

static int coroutine_fn fault_co_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        const void *buf, BdrvRequestFlags flags)
{
    BDRVFaultState *s = bs->opaque;
    int ret = fault_enter(bs, FAULT_WRITE, offset, bytes);
    FaultChange *c;

    if (ret < 0) {
        return ret;
    }
    if (!s->powerfail) {
        return bdrv_co_pwrite(bs->file->bs, offset, bytes, buf, flags);
    }
    c = change_new(FAULT_WRITE, offset, bytes);
    c->data = blk_blockalign(bytes);
    memcpy(c->data, buf, bytes);
    return fault_buffer(bs, c);         /* FUA: io.c flushes this node afterwards */
}

static int coroutine_fn fault_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                               int64_t bytes, BdrvRequestFlags flags)
{
    BDRVFaultState *s = bs->opaque;
    int ret = fault_enter(bs, FAULT_ZERO, offset, bytes);
    FaultChange *c;

    if (ret < 0) {
        return ret;
    }
    if (!s->powerfail) {
        return bdrv_co_pwrite_zeroes(bs->file->bs, offset, bytes, flags);
    }
    c = change_new(FAULT_ZERO, offset, bytes);
    c->flags = flags;
    return fault_buffer(bs, c);
}

static int coroutine_fn fault_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVFaultState *s = bs->opaque;
    int ret = fault_enter(bs, FAULT_DISCARD, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    if (!s->powerfail) {
        return bdrv_co_pdiscard(bs->file->bs, offset, bytes);
    }
    /* A discarded range reads as zeros here, as it does from a file (punched hole). */
    return fault_buffer(bs, change_new(FAULT_DISCARD, offset, bytes));
}

static int coroutine_fn fault_co_preallocate(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes)
{
    int ret = fault_enter(bs, FAULT_PREALLOCATE, offset, bytes);

    return ret < 0 ? ret : bdrv_co_preallocate(bs->file->bs, offset, bytes);
}

/* io.c flushes bs->file after this returns success.  In power-loss mode, the buffered changes
 * go to the child first, in order; a flush that finds the power gone fails. */
static int coroutine_fn fault_co_flush(BlockDriverState *bs)
{
    BDRVFaultState *s = bs->opaque;
    g_autoptr(GPtrArray) out = NULL;
    int ret = fault_enter(bs, FAULT_FLUSH, 0, 0);

    if (ret < 0 || !s->powerfail) {
        return ret;
    }
    co_mutex_lock(&s->child_lock);
    g_mutex_lock(&s->lock);
    if (s->power_gone) {
        ret = -EIO;
    } else {
        out = g_ptr_array_new_with_free_func(change_unref);
        for (guint i = 0; i < s->pending->len; i++) {
            g_ptr_array_add(out, change_ref(s->pending->pdata[i]));
        }
    }
    g_mutex_unlock(&s->lock);
    for (guint i = 0; out && i < out->len && ret >= 0; i++) {
        ret = change_write_out(bs, out->pdata[i]);
    }
    if (out && ret >= 0) {
        /* Only holders of child_lock remove changes: the first out->len are ours. */
        g_mutex_lock(&s->lock);
        g_ptr_array_remove_range(s->pending, 0, out->len);
        g_mutex_unlock(&s->lock);
    }
    co_mutex_unlock(&s->child_lock);
    return ret;
}

static int coroutine_fn fault_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                          PreallocMode prealloc, GError **errp)
{
    BDRVFaultState *s = bs->opaque;
    int ret = fault_enter(bs, FAULT_TRUNCATE, offset, 0);
    FaultChange *c;

    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: injected fault on resize", bs->filename);
        return ret;
    }
    if (!s->powerfail) {
        return bdrv_co_truncate(bs->file->bs, offset, exact, prealloc, errp);
    }
    c = change_new(FAULT_TRUNCATE, offset, 0);
    c->exact = exact;
    c->prealloc = prealloc;
    ret = fault_buffer(bs, c);
    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: the power is gone", bs->filename);
    }
    return ret;
}

static int coroutine_fn fault_co_block_status(BlockDriverState *bs, int64_t offset,
                                              int64_t bytes, int64_t *pnum, int64_t *map,
                                              BlockDriverState **file)
{
    BDRVFaultState *s = bs->opaque;
    bool buffered = false;

    if (power_gone(s)) {
        return -EIO;
    }
    *pnum = bytes;
    *map = offset;
    if (s->powerfail) {
        g_mutex_lock(&s->lock);
        for (guint i = 0; i < s->pending->len && !buffered; i++) {
            buffered = change_affects(s->pending->pdata[i], offset, bytes);
        }
        g_mutex_unlock(&s->lock);
    }
    if (buffered) {     /* the child does not know yet: say data, which is always safe */
        *file = bs;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
    }
    *file = bs->file->bs;
    return BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID;
}

static int64_t fault_getlength(BlockDriverState *bs)
{
    BDRVFaultState *s = bs->opaque;

    if (s->powerfail && !power_gone(s)) {
        return __atomic_load_n(&s->length, __ATOMIC_RELAXED);
    }
    return bdrv_getlength(bs->file->bs);
}

const BlockDriver bdrv_fault = {
    .format_name                    = "fault",
    .instance_size                  = sizeof(BDRVFaultState),
    .is_filter                      = true,
    .bdrv_open                      = fault_open,
    .bdrv_close                     = fault_close,
    .bdrv_co_pread                  = fault_co_pread,
    .bdrv_co_pwrite                 = fault_co_pwrite,
    .bdrv_co_pwrite_zeroes          = fault_co_pwrite_zeroes,
    .bdrv_co_pdiscard               = fault_co_pdiscard,
    .bdrv_co_preallocate            = fault_co_preallocate,
    .bdrv_co_flush                  = fault_co_flush,
    .bdrv_co_truncate               = fault_co_truncate,
    .bdrv_co_block_status           = fault_co_block_status,
    .bdrv_getlength                 = fault_getlength,
};
