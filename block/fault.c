/* fault.c - the fault-injection filter: a node between a format node and its protocol node that
 * fails or delays chosen requests, following a rules file (block option fault-rules=PATH).  For
 * tests; QEMU's blkdebug is the model of the idea.
 *
 * Rules file: one rule per line, '#' starts a comment, words separated by blanks:
 *
 *     error  op=OPS [offset=N] [length=N] [after=N] [count=N] [errno=NAME]
 *     delay  op=OPS [offset=N] [length=N] [after=N] [count=N] ms=N
 *
 * OPS is a comma-separated list of read, write, flush, discard, zero, truncate, preallocate, any.
 * A rule matches a request of one of its ops that overlaps [offset, offset + length) (default:
 * the whole node; flush and truncate match whatever their offset).  Every rule counts the
 * requests it matches: the first `after` pass (default 0), the next `count` fire (default 1;
 * 0 = every one from then on).  A firing error rule fails the request with errno (default EIO)
 * without passing it on; firing delay rules hold it for the sum of their ms, then it proceeds
 * (or fails, if an error rule fired as well).
 *
 * Threads: requests arrive in coroutines from several I/O threads at once.  s->lock (a GMutex,
 * never held across a yield) protects the rules' counters.  A delay waits on a timerfd in the
 * requesting coroutine's own event loop, so the loop keeps serving other requests.  Open and
 * close run in the main thread.
 */
#include "config.h"
#include "block/block.h"
#include "block/aio.h"
#include "block/util.h"

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

typedef enum { RULE_ERROR, RULE_DELAY, RULE__MAX } FaultRuleKind;

static const char *const rule_names[RULE__MAX] = {
    [RULE_ERROR] = "error", [RULE_DELAY] = "delay",
};

typedef struct FaultRule {
    FaultRuleKind kind;
    unsigned line;              /* in the rules file, for messages */
    unsigned ops;               /* 1 << FaultOp */
    int64_t offset, end;        /* the range it matches: [offset, end) */
    uint64_t after, count;
    int err;                    /* error: positive errno */
    uint64_t ms;                /* delay */
    uint64_t matched;           /* requests matched so far; under s->lock */
} FaultRule;

typedef struct BDRVFaultState {
    GPtrArray *rules;           /* FaultRule *, in file order */
    GMutex lock;
} BDRVFaultState;

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
    g_autofree FaultRule *r = g_new0(FaultRule, 1);
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    uint64_t offset = 0, length = 0;
    int kind;

    for (kind = 0; kind < RULE__MAX; kind++) {
        if (!strcmp(words[0], rule_names[kind])) {
            break;
        }
    }
    if (kind == RULE__MAX) {
        parse_error(p, "unknown rule '%s' (expected error or delay)", words[0]);
        return NULL;
    }
    r->kind = kind;
    r->line = p->line;
    r->count = 1;
    r->err = EIO;

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
    r->offset = offset;
    r->end = length && offset + length <= INT64_MAX ? (int64_t)(offset + length) : INT64_MAX;
    return g_steal_pointer(&r);
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

/* Wait ms milliseconds on a timerfd in this coroutine's event loop (which keeps running). */
static void coroutine_fn fault_sleep(uint64_t ms)
{
    FaultSleep w = { .co = coroutine_self() };
    struct itimerspec its = {
        .it_value = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 },
    };

    w.ctx = coroutine_get_context(w.co);
    w.fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (w.fd < 0) {
        g_error("fault: timerfd_create: %s", g_strerror(errno));
    }
    if (timerfd_settime(w.fd, 0, &its, NULL) < 0) {
        g_error("fault: timerfd_settime: %s", g_strerror(errno));
    }
    aio_set_fd_handler(w.ctx, w.fd, fault_sleep_done, NULL, &w);
    coroutine_yield();
    close(w.fd);
}

/* Every request passes here first: 0 lets it proceed, -errno fails it. */
static int coroutine_fn fault_enter(BlockDriverState *bs, FaultOp op, int64_t offset,
                                    int64_t bytes)
{
    BDRVFaultState *s = bs->opaque;
    uint64_t delay = 0;
    int ret = 0;

    g_mutex_lock(&s->lock);
    for (guint i = 0; i < s->rules->len; i++) {
        FaultRule *r = s->rules->pdata[i];

        if (!rule_matches(r, op, offset, bytes) || !rule_fires(r)) {
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
        fault_sleep(delay);
    }
    return ret;
}

/* --- driver callbacks --- */

static int fault_open(BlockDriverState *bs, BlockOptions *opts, int flags, GError **errp)
{
    BDRVFaultState *s = bs->opaque;
    g_autofree char *path = block_options_take(opts, "fault-rules");

    if (!path) {
        error_setg(errp, "%s: the fault filter needs fault-rules=PATH", bs->filename);
        return -EINVAL;
    }
    s->rules = g_ptr_array_new_with_free_func(g_free);
    g_mutex_init(&s->lock);
    if (!fault_parse_rules(s, path, errp)) {
        g_ptr_array_free(s->rules, true);
        g_mutex_clear(&s->lock);
        return -EINVAL;
    }
    return 0;
}

static void fault_close(BlockDriverState *bs)
{
    BDRVFaultState *s = bs->opaque;

    g_ptr_array_free(s->rules, true);
    g_mutex_clear(&s->lock);
}

static int coroutine_fn fault_co_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       void *buf, BdrvRequestFlags flags)
{
    int ret = fault_enter(bs, FAULT_READ, offset, bytes);

    return ret < 0 ? ret : bdrv_co_pread(bs->file->bs, offset, bytes, buf, flags);
}

static int coroutine_fn fault_co_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        const void *buf, BdrvRequestFlags flags)
{
    int ret = fault_enter(bs, FAULT_WRITE, offset, bytes);

    return ret < 0 ? ret : bdrv_co_pwrite(bs->file->bs, offset, bytes, buf, flags);
}

static int coroutine_fn fault_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                               int64_t bytes, BdrvRequestFlags flags)
{
    int ret = fault_enter(bs, FAULT_ZERO, offset, bytes);

    return ret < 0 ? ret : bdrv_co_pwrite_zeroes(bs->file->bs, offset, bytes, flags);
}

static int coroutine_fn fault_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    int ret = fault_enter(bs, FAULT_DISCARD, offset, bytes);

    return ret < 0 ? ret : bdrv_co_pdiscard(bs->file->bs, offset, bytes);
}

static int coroutine_fn fault_co_preallocate(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes)
{
    int ret = fault_enter(bs, FAULT_PREALLOCATE, offset, bytes);

    return ret < 0 ? ret : bdrv_co_preallocate(bs->file->bs, offset, bytes);
}

/* io.c flushes bs->file after this returns success. */
static int coroutine_fn fault_co_flush(BlockDriverState *bs)
{
    return fault_enter(bs, FAULT_FLUSH, 0, 0);
}

static int coroutine_fn fault_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                          PreallocMode prealloc, GError **errp)
{
    int ret = fault_enter(bs, FAULT_TRUNCATE, offset, 0);

    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: injected fault on resize", bs->filename);
        return ret;
    }
    return bdrv_co_truncate(bs->file->bs, offset, exact, prealloc, errp);
}

static int coroutine_fn fault_co_block_status(BlockDriverState *bs, int64_t offset,
                                              int64_t bytes, int64_t *pnum, int64_t *map,
                                              BlockDriverState **file)
{
    *pnum = bytes;
    *map = offset;
    *file = bs->file->bs;
    return BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID;
}

static int64_t fault_getlength(BlockDriverState *bs)
{
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
