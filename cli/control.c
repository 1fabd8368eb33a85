/* control.c - the control socket: a line-delimited JSON server in the daemon's main loop, and
 * the client calls the CLI makes.  See control.h for the protocol and what clients may do. */
#include "config.h"
#include "cli/control.h"
#include "block/aio.h"
#include "block/util.h"
#include "fuse/export.h"
#include "fuse/passthrough.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CONTROL_LINE_MAX  (64 * 1024)   /* longest request line */
#define CONTROL_OUT_HIGH  (64 * 1024)   /* unsent replies above which requests wait */
#define CONTROL_OUT_MAX   (1024 * 1024) /* unsent replies above which the client is dropped */
#define CONTROL_CONN_MAX  64            /* connections served at once */
#define CONTROL_READ_SIZE (16 * 1024)   /* bytes read from one connection per event */
#define CONTROL_PATH_MAX  PATH_MAX      /* longest path in a request */

/*
 * A connection.  References: the server's list holds one until the connection is closed, and
 * whoever runs its requests holds one meanwhile, so closing it (the client left, its output
 * overflowed, the server stops) never frees it under a request.  fd -1: a detached connection
 * (control_server_process), whose replies just collect in out.
 */
typedef struct ControlConn {
    ControlServer *srv;
    int refcnt;
    int fd;
    GString *in;                /* received bytes not yet processed */
    GString *out;               /* replies; bytes before out_sent are sent */
    size_t out_sent;
    BlockExport *waiting_for;   /* unmount in progress: reply when this export is gone */
    bool eof;                   /* the client sends nothing more */
    bool closed;
    bool processing;            /* conn_process is running for it */
    bool resume;                /* run conn_process again from the outermost loop */
    bool reading, writing;      /* the handlers registered */
    bool nested;                /* registered as a plain handler (ControlServer.nested) */
    bool deferred;              /* its next request is a mount, run once the opening is done */
} ControlConn;

/* The export being opened (blk_exp_add runs): what "list" shows of it until it is up. */
typedef struct ControlOpening {
    char *id;                   /* as asked, or NULL */
    char *image;                /* without options or credentials (opening_image) */
    char *format;               /* as asked, or NULL */
    char *mountpoint;           /* absolute */
    time_t since;
    ControlConn *conn;          /* the client that asked; NULL for the daemon's first export */
} ControlOpening;

struct ControlServer {
    AioContext *ctx;
    int fd;                     /* listening socket, -1 when detached */
    char *path;
    char *link;                 /* RUNTIME_DIR/PID.sock -> path, when path is elsewhere */
    bool serve;
    bool dry_run;
    bool exit_requested;
    GArray *allowed_uids;       /* uid_t: served besides root and our own uid */
    GList *conns;               /* ControlConn *, open ones */
    unsigned nconns;
    ControlOpening *opening;    /* an export is being opened: one at a time */
    bool nested;                /* clients served from the opening's nested polls */
    int64_t refusal_logged;     /* monotonic time of the last refusal logged */
    unsigned refusals_unlogged;
};

static void conn_process(ControlConn *c);
static void conn_read(void *opaque);
static void conn_write(void *opaque);
static void server_accept(void *opaque);
static void server_set_nested(ControlServer *srv, bool on);

char *control_runtime_dir(bool create, GError **errp)
{
    const char *xdg = g_getenv("XDG_RUNTIME_DIR");
    char *dir;

    if (xdg && *xdg) {
        dir = g_build_filename(xdg, "blkfuse", NULL);
    } else if (geteuid() == 0) {
        dir = g_strdup("/run/blkfuse");
    } else {
        dir = g_strdup_printf("/tmp/blkfuse-%u", (unsigned)getuid());
    }
    if (create && g_mkdir_with_parents(dir, 0700) < 0) {
        error_setg_errno(errp, errno, "%s: cannot create the runtime directory", dir);
        g_free(dir);
        return NULL;
    }
    return dir;
}

/* --- connections --- */

static ControlConn *conn_new(ControlServer *srv, int fd)
{
    ControlConn *c = g_new0(ControlConn, 1);

    c->srv = srv;
    c->refcnt = 1;              /* the list's */
    c->fd = fd;
    c->in = g_string_new(NULL);
    c->out = g_string_new(NULL);
    srv->conns = g_list_prepend(srv->conns, c);
    srv->nconns++;
    return c;
}

static void conn_ref(ControlConn *c)
{
    c->refcnt++;
}

static void conn_unref(ControlConn *c)
{
    if (--c->refcnt > 0) {
        return;
    }
    g_assert(c->closed);
    g_string_free(c->in, true);
    g_string_free(c->out, true);
    g_free(c);
}

static size_t conn_pending(ControlConn *c)
{
    return c->out->len - c->out_sent;
}

/* Stop all I/O on c and drop the list's reference (c stays valid for other holders). */
static void conn_close(ControlConn *c)
{
    ControlServer *srv = c->srv;

    if (c->closed) {
        return;
    }
    c->closed = true;
    c->waiting_for = NULL;
    if (c->fd >= 0) {
        if (c->reading || c->writing) {
            aio_set_fd_handler_external(srv->ctx, c->fd, NULL, NULL, NULL);
        }
        close(c->fd);
        c->fd = -1;
    }
    srv->conns = g_list_remove(srv->conns, c);
    srv->nconns--;
    conn_unref(c);
}

/* Watch for requests while c may take more, and for writability while it has replies to send
 * (or must resume from the outermost loop: a writable socket reports at once).  While an export
 * is opening (srv->nested), every connection but the one that asked for it is watched by a
 * plain handler, which the opening's nested polls run too. */
static void conn_update_handlers(ControlConn *c)
{
    bool rd, wr, nested;
    IOHandler *io_read, *io_write;

    if (c->closed || c->fd < 0) {
        return;
    }
    rd = !c->eof && !c->waiting_for && !c->deferred && conn_pending(c) < CONTROL_OUT_HIGH &&
         c->in->len <= CONTROL_LINE_MAX;
    wr = conn_pending(c) > 0 || c->resume;
    nested = c->srv->nested && !(c->srv->opening && c->srv->opening->conn == c);
    if (rd == c->reading && wr == c->writing && nested == c->nested) {
        return;
    }
    io_read = rd ? conn_read : NULL;
    io_write = wr ? conn_write : NULL;
    if (nested) {
        aio_set_fd_handler(c->srv->ctx, c->fd, io_read, io_write, c);
    } else {
        aio_set_fd_handler_external(c->srv->ctx, c->fd, io_read, io_write, c);
    }
    c->reading = rd;
    c->writing = wr;
    c->nested = nested;
}

/* Send what the socket takes now, never waiting.  Closes c on a send error. */
static void conn_flush(ControlConn *c)
{
    while (conn_pending(c) > 0) {
        ssize_t n = send(c->fd, c->out->str + c->out_sent, conn_pending(c),
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN) {
                conn_close(c);
                return;
            }
            break;
        }
        c->out_sent += n;
    }
    if (c->out_sent == c->out->len) {
        g_string_truncate(c->out, 0);
        c->out_sent = 0;
    } else if (c->out_sent >= CONTROL_OUT_HIGH) {
        g_string_erase(c->out, 0, c->out_sent);
        c->out_sent = 0;
    }
}

/* Queue one reply line; send it at once if the socket takes it (or, during conn_process,
 * with the others at its end). */
static void conn_send(ControlConn *c, json_t *reply)
{
    g_autofree char *text = NULL;

    if (c->closed) {
        return;
    }
    /* Reading stops at CONTROL_OUT_HIGH, so this is a backstop; one large reply (a list of
     * many exports) still goes to a client that reads. */
    if (conn_pending(c) > CONTROL_OUT_MAX) {
        log_debug("control: dropping a client that does not read its replies (%zu bytes "
                  "unread)", conn_pending(c));
        conn_close(c);
        return;
    }
    text = json_dumps(reply, JSON_COMPACT);
    g_string_append(c->out, text);
    g_string_append_c(c->out, '\n');
    /* Requests run in a batch: their replies go out together at its end. */
    if (c->fd >= 0 && !c->processing) {
        if (!c->writing) {
            conn_flush(c);
        }
        conn_update_handlers(c);
    }
}

static void conn_send_error(ControlConn *c, int err, const char *field, const char *msg)
{
    g_autoptr(json_t) r = json_object();

    json_object_set_new(r, "ok", json_false());
    json_object_set_new(r, "error", json_util_string(msg));
    json_object_set_new(r, "errno", json_integer(err < 0 ? -err : err));
    if (field) {
        json_object_set_new(r, "field", json_util_string(field));
    }
    conn_send(c, r);
}

static json_t *reply_ok(void)
{
    json_t *r = json_object();

    json_object_set_new(r, "ok", json_true());
    return r;
}

/* --- export descriptions --- */

json_t *control_describe_protocol(BlockDriverState *bs)
{
    BlockDriverInfo bdi = { 0 };
    json_t *o;
    g_auto(GStrv) lines = NULL;

    while (bs->file) {
        bs = bs->file->bs;
    }
    if (!bs->drv->bdrv_get_info || bs->drv->bdrv_get_info(bs, &bdi) < 0 || !bdi.extra) {
        g_free(bdi.extra);
        return NULL;
    }
    o = json_object();
    lines = g_strsplit(bdi.extra, "\n", -1);
    for (char **l = lines; *l; l++) {
        char *sep = strstr(*l, ": ");
        char *end;
        long long n;

        if (!sep) {
            continue;
        }
        *sep = '\0';
        n = strtoll(sep + 2, &end, 10);
        if (end != sep + 2 && *end == '\0') {
            json_object_set_new(o, *l, json_integer(n));
        } else {
            json_object_set_new(o, *l, json_util_string(sep + 2));
        }
    }
    g_free(bdi.extra);
    return o;
}

/* "since" of list: a local time with its offset. */
static void format_since(time_t t, char *buf, size_t len)
{
    struct tm tm;

    localtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%S%z", &tm);
}

/* "affinity": how the queues serve now (see the man page, --queues). */
static void describe_queues(json_t *o, BlockExport *exp)
{
    BlockExportQueues info;
    json_t *aff, *arr;

    if (!blk_exp_queues(exp, &info)) {
        return;
    }
    aff = json_object();
    arr = json_array();
    json_object_set_new(aff, "mode", json_string(info.affinity));
    json_object_set_new(aff, "switches", json_integer(info.switches));
    for (unsigned i = 0; i < info.nr; i++) {
        const BlockExportQueue *q = &info.queue[i];
        json_t *j = json_object();

        json_object_set_new(j, "cpu", q->cpu >= 0 ? json_integer(q->cpu) : json_null());
        json_object_set_new(j, "pinned_to", q->pinned >= 0 ? json_integer(q->pinned)
                                                            : json_null());
        json_object_set_new(j, "taking_requests", json_boolean(q->taking));
        json_object_set_new(j, "yields_cpu", json_boolean(q->yields));
        json_object_set_new(j, "yields", json_integer(q->yields_done));
        json_object_set_new(j, "yield_pauses", json_integer(q->yield_pauses));
        json_object_set_new(j, "requests", json_integer(q->requests));
        json_array_append_new(arr, j);
    }
    json_object_set_new(aff, "queues", arr);
    json_object_set_new(o, "affinity", aff);
    blk_exp_queues_clear(&info);
}

static json_t *describe_export(BlockExport *exp)
{
    json_t *o = json_object();
    json_t *stats = json_object();
    json_t *remote;
    BlockBackendStats st;
    char since[32];

    blk_get_stats(exp->blk, &st);
    format_since(exp->since, since, sizeof(since));

    json_object_set_new(o, "id", json_util_string(exp->id));
    json_object_set_new(o, "pid", json_integer(getpid()));
    json_object_set_new(o, "state", json_string("mounted"));
    json_object_set_new(o, "image", json_util_string(exp->image));
    if ((remote = control_describe_protocol(blk_bs(exp->blk)))) {
        json_object_set_new(o, "remote", remote);
    }
    json_object_set_new(o, "format", json_util_string(exp->format));
    json_object_set_new(o, "mountpoint", json_util_string(exp->mountpoint));
    json_object_set_new(o, "read_only",
                        json_boolean(exp->read_only || blk_is_read_only(exp->blk)));
    json_object_set_new(o, "growable", json_boolean(exp->growable));
    json_object_set_new(o, "snapshot", json_boolean(exp->snapshot));
    json_object_set_new(o, "cache", json_string(block_cache_mode_name(exp->cache)));
    json_object_set_new(o, "queues", json_integer(exp->queues));
    json_object_set_new(o, "transport", json_util_string(exp->transport ? exp->transport : ""));
    json_object_set_new(o, "passthrough_mode",
                        json_string(fuse_passthrough_mode_name(exp->passthrough_mode)));
    json_object_set_new(o, "passthrough", json_boolean(exp->passthrough));
    if (!exp->passthrough && exp->passthrough_reason) {
        json_object_set_new(o, "passthrough_reason", json_util_string(exp->passthrough_reason));
    }
    json_object_set_new(o, "stats_mode", json_string(exp->coarse_stats ? "coarse" : "full"));
    json_object_set_new(o, "size", json_integer(blk_getlength(exp->blk)));
    json_object_set_new(o, "clients", json_integer(blk_exp_clients(exp)));
    json_object_set_new(o, "owner_uid", json_integer(exp->owner));
    json_object_set_new(o, "owner", json_util_string(g_get_user_name()));
    json_object_set_new(o, "since", json_util_string(since));
    json_object_set_new(o, "since_epoch", json_integer(exp->since));
    json_object_set_new(o, "bytes_read", json_integer(st.bytes[BLK_STAT_READ]));
    json_object_set_new(o, "bytes_written", json_integer(st.bytes[BLK_STAT_WRITE]));
    json_object_set_new(o, "ops_read", json_integer(st.ops[BLK_STAT_READ]));
    json_object_set_new(o, "ops_written", json_integer(st.ops[BLK_STAT_WRITE]));
    for (int i = 0; i < BLK_STAT__MAX; i++) {
        json_t *k = json_object();
        json_object_set_new(k, "ops", json_integer(st.ops[i]));
        json_object_set_new(k, "bytes", json_integer(st.bytes[i]));
        json_object_set_new(k, "failed", json_integer(st.failed[i]));
        json_object_set_new(k, "avg_latency_us",
                            json_util_real(st.ops[i] ? st.total_ns[i] / 1000.0 / st.ops[i] : 0.0));
        json_object_set_new(k, "max_latency_us", json_util_real(st.max_ns[i] / 1000.0));
        json_object_set_new(stats, blk_stat_names[i], k);
    }
    json_object_set_new(stats, "in_flight", json_integer(st.in_flight));
    json_object_set_new(o, "stats", stats);
    describe_queues(o, exp);
    return o;
}

json_t *control_describe_exports(const char *mountpoint_filter)
{
    json_t *arr = json_array();

    for (GList *l = blk_exp_list(); l; l = l->next) {
        BlockExport *exp = l->data;
        if (mountpoint_filter && strcmp(exp->mountpoint, mountpoint_filter) != 0) {
            continue;
        }
        json_array_append_new(arr, describe_export(exp));
    }
    return arr;
}

/* --- parsing --- */

#define CONTROL_JSON_DEPTH 64           /* deepest nesting of arrays and objects in a line */

/* True if v nests no more than levels arrays and objects (v itself included). */
static bool nesting_within(json_t *v, int levels)
{
    const char *key;
    json_t *child;
    size_t i;

    if (!json_is_object(v) && !json_is_array(v)) {
        return true;
    }
    if (levels == 0) {
        return false;
    }
    if (json_is_array(v)) {
        json_array_foreach(v, i, child) {
            if (!nesting_within(child, levels - 1)) {
                return false;
            }
        }
        return true;
    }
    json_object_foreach(v, key, child) {
        if (!nesting_within(child, levels - 1)) {
            return false;
        }
    }
    return true;
}

/* What went wrong, in the protocol's words for the errors its tests and clients rely on;
 * jansson's own text for the syntax errors. */
static const char *parse_error_text(const json_error_t *jerr)
{
    switch (json_error_code(jerr)) {
    case json_error_invalid_utf8:
        return "invalid UTF-8";
    case json_error_null_character:
    case json_error_null_byte_in_key:
        return "\\u0000 is not allowed in strings";
    case json_error_duplicate_key:
        return "duplicate key";
    case json_error_numeric_overflow:
        /* jansson says "too big integer", "too big negative integer", "real number overflow". */
        return strstr(jerr->text, "integer") ?
               "integer out of range: integers must fit in 64 bits" :
               "number out of range: too large for a double";
    case json_error_stack_overflow:
        return "nesting deeper than " G_STRINGIFY(CONTROL_JSON_DEPTH) " levels";
    default:
        return jerr->text;
    }
}

json_t *control_parse_json(const char *text, size_t len, GError **errp)
{
    json_error_t jerr;
    /* JSON_DECODE_ANY: a scalar parses, so that the caller can say a request is an object.
     * JSON_ALLOW_NUL stays off: \u0000 is refused, as C strings could not hold it. */
    json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);

    if (!v) {
        error_setg(errp, "invalid JSON at offset %d: %s", jerr.position,
                   parse_error_text(&jerr));
        return NULL;
    }
    if (!nesting_within(v, CONTROL_JSON_DEPTH)) {
        json_decref(v);
        error_setg(errp, "invalid JSON: nesting deeper than %d levels", CONTROL_JSON_DEPTH);
        return NULL;
    }
    return v;
}

/* --- request validation --- */

typedef enum { FIELD_STRING, FIELD_BOOL, FIELD_INT } FieldType;

/* One field a command accepts.  check: extra rule for a string (message without the field
 * name, which the caller prefixes). */
typedef struct FieldSpec {
    const char *name;
    FieldType type;
    bool required;
    int64_t min, max;                   /* FIELD_INT */
    size_t max_len;                     /* FIELD_STRING; 0: CONTROL_PATH_MAX */
    bool (*check)(const char *value, GError **errp);
} FieldSpec;

bool control_check_export_id(const char *id, GError **errp)
{
    size_t len = strlen(id);

    if (len == 0 || len > 64) {
        error_setg(errp, "an export id has 1 to 64 characters");
        return false;
    }
    for (const char *p = id; *p; p++) {
        if (!g_ascii_isalnum(*p) && !strchr("._-:@+", *p)) {
            error_setg(errp, "an export id has only letters, digits and \"._-:@+\", not '%s'",
                       id);
            return false;
        }
    }
    return true;
}

static bool check_absolute_path(const char *s, GError **errp)
{
    if (!g_path_is_absolute(s)) {
        error_setg(errp, "must be an absolute path");
        return false;
    }
    return true;
}

/* An image is an absolute path, or a name of a protocol blkfuse has ("null:1G"). */
static bool check_image(const char *s, GError **errp)
{
    if (!g_path_is_absolute(s) && !bdrv_find_protocol(s)->protocol_prefix) {
        error_setg(errp, "must be an absolute path or a protocol name such as null:SIZE");
        return false;
    }
    return true;
}

static bool check_format(const char *s, GError **errp)
{
    if (!bdrv_find_format(s)) {
        error_setg(errp, "unknown format (known: %s)", bdrv_format_list());
        return false;
    }
    return true;
}

static bool check_cache(const char *s, GError **errp)
{
    BlockCacheMode mode;

    if (!block_cache_mode_parse(s, &mode, NULL)) {
        error_setg(errp, "must be writeback, writethrough, none or directsync");
        return false;
    }
    return true;
}

static bool check_transport(const char *s, GError **errp)
{
    if (!blk_exp_transport_valid(s)) {
        error_setg(errp, "must be auto, uring or dev");
        return false;
    }
    return true;
}

static bool check_passthrough(const char *s, GError **errp)
{
    BlockExportPassthrough mode;

    if (!fuse_passthrough_mode_parse(s, &mode)) {
        error_setg(errp, "must be auto, on or off");
        return false;
    }
    return true;
}

static bool check_stats(const char *s, GError **errp)
{
    if (strcmp(s, "full") && strcmp(s, "coarse")) {
        error_setg(errp, "must be full or coarse");
        return false;
    }
    return true;
}

static bool check_options(const char *s, GError **errp)
{
    g_autoptr(GHashTable) opts = block_options_new();

    return block_options_parse(opts, s, errp);
}

static bool check_not_empty(const char *s, GError **errp)
{
    if (!*s) {
        error_setg(errp, "must not be empty");
        return false;
    }
    return true;
}

static const FieldSpec list_fields[] = {
    { "mountpoint", FIELD_STRING, .check = check_absolute_path },
    { NULL },
};

static const FieldSpec mount_fields[] = {
    { "image", FIELD_STRING, .required = true, .check = check_image },
    { "mountpoint", FIELD_STRING, .required = true, .check = check_absolute_path },
    { "id", FIELD_STRING, .max_len = 64, .check = control_check_export_id },
    { "format", FIELD_STRING, .max_len = 64, .check = check_format },
    { "options", FIELD_STRING, .check = check_options },
    { "read_only", FIELD_BOOL },
    { "growable", FIELD_BOOL },
    { "allow_other", FIELD_BOOL },
    { "snapshot", FIELD_BOOL },
    { "snapshot_name", FIELD_STRING, .check = check_not_empty },
    { "cache", FIELD_STRING, .max_len = 64, .check = check_cache },
    { "queues", FIELD_INT, .min = 1, .max = 64 },   /* absent: auto */
    { "transport", FIELD_STRING, .max_len = 16, .check = check_transport },
    { "allow_remote_backing", FIELD_BOOL },
    { "passthrough", FIELD_STRING, .max_len = 8, .check = check_passthrough },
    { "stats", FIELD_STRING, .max_len = 8, .check = check_stats },
    { NULL },
};

static const FieldSpec unmount_fields[] = {
    { "id", FIELD_STRING, .max_len = 64, .check = control_check_export_id },
    { "mountpoint", FIELD_STRING, .check = check_absolute_path },
    { "force", FIELD_BOOL },
    { NULL },
};

static const FieldSpec no_fields[] = {
    { NULL },
};

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL: return "null";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number with a fraction or exponent";
    case JSON_STRING: return "a string";
    case JSON_ARRAY: return "an array";
    case JSON_OBJECT: return "an object";
    }
    return "?";
}

/* Check one member's value against its spec; the message names the field. */
static bool check_field(const FieldSpec *f, json_t *v, GError **errp)
{
    static const char *const want[] = {
        [FIELD_STRING] = "a string", [FIELD_BOOL] = "a boolean", [FIELD_INT] = "an integer",
    };
    bool type_ok = f->type == FIELD_STRING ? json_is_string(v) :
                   f->type == FIELD_BOOL ? json_is_boolean(v) : json_is_integer(v);
    g_autoptr(GError) err = NULL;

    if (!type_ok) {
        error_setg(errp, "\"%s\": expected %s, not %s", f->name, want[f->type],
                   json_type_name(v));
        return false;
    }
    if (f->type == FIELD_INT &&
        (json_integer_value(v) < f->min || json_integer_value(v) > f->max)) {
        error_setg(errp, "\"%s\": must be from %" PRId64 " to %" PRId64 ", not %" PRId64,
                   f->name, f->min, f->max, (int64_t)json_integer_value(v));
        return false;
    }
    if (f->type == FIELD_STRING) {
        size_t max = f->max_len ? f->max_len : CONTROL_PATH_MAX;
        if (json_string_length(v) > max) {
            error_setg(errp, "\"%s\": longer than %zu bytes", f->name, max);
            return false;
        }
        if (f->check && !f->check(json_string_value(v), &err)) {
            error_setg(errp, "\"%s\": %s", f->name, err->message);
            return false;
        }
    }
    return true;
}

/* Check every member of req against fields: each known, of the right type and value, and the
 * required ones present.  On error, *bad_field names the field (or is NULL). */
static bool validate_request(const char *cmd, const FieldSpec *fields, json_t *req,
                             const char **bad_field, GError **errp)
{
    const char *key;
    json_t *v;

    *bad_field = NULL;
    json_object_foreach(req, key, v) {
        const FieldSpec *f = fields;

        if (!strcmp(key, "cmd")) {
            continue;
        }
        while (f->name && strcmp(f->name, key) != 0) {
            f++;
        }
        if (!f->name) {
            *bad_field = key;
            error_setg(errp, "\"%s\": unknown field for command %s", key, cmd);
            return false;
        }
        if (!check_field(f, v, errp)) {
            *bad_field = f->name;
            return false;
        }
    }
    for (const FieldSpec *f = fields; f->name; f++) {
        if (f->required && !json_object_get(req, f->name)) {
            *bad_field = f->name;
            error_setg(errp, "\"%s\": required by command %s", f->name, cmd);
            return false;
        }
    }
    return true;
}

/* --- an export opening --- */

/* IMAGE as list shows it while it opens, before its protocol driver names it: a URI without its
 * secrets (uri_redact), "PROTO:NAME:KEY=VALUE..." without its options, a file name absolute.
 * Caller frees. */
static char *opening_image(const char *image)
{
    const char *colon = strchr(image, ':');

    if (strstr(image, "://")) {
        return uri_redact(image);
    }
    if (colon && !g_file_test(image, G_FILE_TEST_EXISTS)) {
        const char *opts = strchr(colon + 1, ':');
        return opts ? g_strndup(image, opts - image) : g_strdup(image);
    }
    return g_canonicalize_filename(image, NULL);
}

static json_t *describe_opening(const ControlOpening *op)
{
    json_t *o = json_object();
    char since[32];

    format_since(op->since, since, sizeof(since));
    json_object_set_new(o, "id", op->id ? json_util_string(op->id) : json_null());
    json_object_set_new(o, "pid", json_integer(getpid()));
    json_object_set_new(o, "state", json_string("opening"));
    json_object_set_new(o, "image", json_util_string(op->image));
    json_object_set_new(o, "format", op->format ? json_util_string(op->format) : json_null());
    json_object_set_new(o, "mountpoint", json_util_string(op->mountpoint));
    json_object_set_new(o, "owner_uid", json_integer(getuid()));
    json_object_set_new(o, "owner", json_util_string(g_get_user_name()));
    json_object_set_new(o, "since", json_util_string(since));
    json_object_set_new(o, "since_epoch", json_integer(op->since));
    return o;
}

/* True if the request's id or mountpoint (one of them non-NULL) names the opening export. */
static bool opening_matches(ControlServer *srv, const char *id, const char *mountpoint)
{
    g_autofree char *mp = mountpoint ? g_canonicalize_filename(mountpoint, NULL) : NULL;

    if (!srv->opening) {
        return false;
    }
    return id ? !g_strcmp0(id, srv->opening->id) : !strcmp(mp, srv->opening->mountpoint);
}

/* Serve clients from the nested polls of an opening (on), or from the outermost loop only. */
static void server_set_nested(ControlServer *srv, bool on)
{
    srv->nested = on;
    if (srv->fd >= 0 && on) {
        aio_set_fd_handler(srv->ctx, srv->fd, server_accept, NULL, srv);
    } else if (srv->fd >= 0) {
        aio_set_fd_handler_external(srv->ctx, srv->fd, server_accept, NULL, srv);
    }
    for (GList *l = srv->conns; l; l = l->next) {
        conn_update_handlers(l->data);
    }
}

/*
 * Open and add the export of EO for client C (NULL: the daemon's first export).  An open may
 * wait long (a remote server's connect-timeout), in polls nested inside this call: meanwhile the
 * other clients are served from those polls, one request at a time, and see the export in list
 * as opening.  A mount of theirs waits until this open is done (it would nest its own).
 */
static BlockExport *server_add_export(ControlServer *srv, ControlConn *c,
                                      const BlockExportOptions *eo, GError **errp)
{
    ControlOpening op = {
        .id = g_strdup(eo->id),
        .image = opening_image(eo->image),
        .format = g_strdup(eo->format),
        .mountpoint = g_canonicalize_filename(eo->mountpoint, NULL),
        .since = time(NULL),
        .conn = c,
    };
    BlockExport *exp;

    g_assert(!srv->opening);
    srv->opening = &op;
    server_set_nested(srv, true);
    exp = blk_exp_add(eo, errp);
    server_set_nested(srv, false);
    srv->opening = NULL;
    g_free(op.id);
    g_free(op.image);
    g_free(op.format);
    g_free(op.mountpoint);
    if (!exp && c && !srv->serve && blk_exp_count() == 0) {
        srv->exit_requested = true;     /* its other exports were unmounted meanwhile */
    }
    for (GList *l = srv->conns; l; l = l->next) {
        ControlConn *d = l->data;
        if (d->deferred) {
            d->deferred = false;
            d->resume = true;           /* its mount runs from the outermost loop */
            conn_update_handlers(d);
        }
    }
    return exp;
}

BlockExport *control_server_add_export(ControlServer *srv, const BlockExportOptions *eo,
                                       GError **errp)
{
    return server_add_export(srv, NULL, eo, errp);
}

/* --- commands --- */

static void cmd_list(ControlConn *c, json_t *req)
{
    g_autoptr(json_t) r = reply_ok();

    const char *mp = json_string_value(json_object_get(req, "mountpoint"));
    json_t *exports = control_describe_exports(mp);

    if (c->srv->opening && (!mp || opening_matches(c->srv, NULL, mp))) {
        json_array_append_new(exports, describe_opening(c->srv->opening));
    }
    json_object_set_new(r, "pid", json_integer(getpid()));
    json_object_set_new(r, "serve", json_boolean(c->srv->serve));
    json_object_set_new(r, "exports", exports);
    conn_send(c, r);
}

static void cmd_unmount(ControlConn *c, json_t *req)
{
    const char *mp = json_string_value(json_object_get(req, "mountpoint"));
    const char *id = json_string_value(json_object_get(req, "id"));
    g_autoptr(GError) err = NULL;
    BlockExport *exp;

    if (!mp && !id) {
        conn_send_error(c, EINVAL, "mountpoint", "\"mountpoint\": required by command unmount "
                        "(or \"id\")");
        return;
    }
    if (mp && id) {
        conn_send_error(c, EINVAL, "id", "\"id\": give \"id\" or \"mountpoint\", not both");
        return;
    }
    exp = id ? blk_exp_find(id) : blk_exp_find_by_mountpoint(mp);
    if (!exp && opening_matches(c->srv, id, mp)) {
        g_autofree char *msg = g_strdup_printf("%s: still opening (its driver waits for the "
                                               "image, up to its connect timeout); unmount it "
                                               "once 'blkfuse list' shows it mounted",
                                               id ? id : mp);
        conn_send_error(c, EBUSY, NULL, msg);
        return;
    }
    if (!exp) {
        g_autofree char *msg = g_strdup_printf("%s: no such export in daemon %d",
                                               id ? id : mp, getpid());
        conn_send_error(c, ENOENT, NULL, msg);
        return;
    }
    if (c->srv->dry_run) {
        conn_send_error(c, ENOTSUP, NULL, "dry run: nothing unmounted");
        return;
    }
    if (blk_exp_request_remove(exp, json_util_get_bool(req, "force", false), &err) < 0) {
        conn_send_error(c, err->code, NULL, err->message);
        return;
    }
    c->waiting_for = exp;       /* reply from the removed notifier */
}

static void cmd_mount(ControlConn *c, json_t *req)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GHashTable) opts = block_options_new();
    const char *o = json_string_value(json_object_get(req, "options"));
    const char *snapshot_name = json_string_value(json_object_get(req, "snapshot_name"));
    const char *passthrough = json_string_value(json_object_get(req, "passthrough"));
    BlockExportOptions eo = {
        .type = "fuse",
        .id = json_string_value(json_object_get(req, "id")),
        .image = json_string_value(json_object_get(req, "image")),
        .format = json_string_value(json_object_get(req, "format")),
        .opts = opts,
        .mountpoint = json_string_value(json_object_get(req, "mountpoint")),
        .read_only = json_util_get_bool(req, "read_only", false) || snapshot_name,
        .growable = json_util_get_bool(req, "growable", false),
        .allow_other = json_util_get_bool(req, "allow_other", false),
        .snapshot = json_util_get_bool(req, "snapshot", false),
        .cache = json_string_value(json_object_get(req, "cache")),
        .queues = json_util_get_int(req, "queues", 0),
        .transport = json_string_value(json_object_get(req, "transport")),
        .allow_remote_backing = json_util_get_bool(req, "allow_remote_backing", false),
        .coarse_stats = !g_strcmp0(json_string_value(json_object_get(req, "stats")), "coarse"),
    };
    BlockExport *exp;
    g_autoptr(json_t) r = NULL;

    if (eo.snapshot && eo.read_only) {
        conn_send_error(c, EINVAL, "snapshot", snapshot_name ?
                        "\"snapshot\": cannot be combined with \"snapshot_name\"" :
                        "\"snapshot\": cannot be combined with \"read_only\"");
        return;
    }
    if (o && !block_options_parse(opts, o, &err)) {
        conn_send_error(c, EINVAL, "options", err->message);
        return;
    }
    if (passthrough) {
        fuse_passthrough_mode_parse(passthrough, &eo.passthrough);
    }
    if (snapshot_name) {
        g_hash_table_replace(opts, g_strdup("snapshot-name"), g_strdup(snapshot_name));
    }
    if (c->srv->exit_requested) {
        conn_send_error(c, ESHUTDOWN, NULL, "the daemon is exiting");
        return;
    }
    if (c->srv->dry_run) {
        conn_send_error(c, ENOTSUP, NULL, "dry run: nothing mounted");
        return;
    }
    exp = server_add_export(c->srv, c, &eo, &err);
    if (!exp) {
        conn_send_error(c, err->code, NULL, err->message);
        return;
    }
    r = reply_ok();
    json_object_set_new(r, "export", describe_export(exp));
    conn_send(c, r);
}

static void cmd_quit(ControlConn *c, json_t *req)
{
    g_autoptr(json_t) r = reply_ok();

    conn_send(c, r);
    c->srv->exit_requested = true;
}

static const struct {
    const char *name;
    void (*fn)(ControlConn *c, json_t *req);
    const FieldSpec *fields;
} commands[] = {
    { "list", cmd_list, list_fields },
    { "stats", cmd_list, list_fields },
    { "mount", cmd_mount, mount_fields },
    { "unmount", cmd_unmount, unmount_fields },
    { "quit", cmd_quit, no_fields },
};

/* Parse, validate and run one request line (len bytes, not NUL-terminated).  False: a mount
 * while another export is opening, which would nest its open inside that one's; the line is
 * left for when that open is done (c->deferred). */
static bool conn_dispatch(ControlConn *c, const char *line, size_t len)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(json_t) req = control_parse_json(line, len, &err);
    json_t *cmdv;
    const char *cmd, *bad;

    if (!req) {
        conn_send_error(c, EINVAL, NULL, err->message);
        return true;
    }
    if (!json_is_object(req)) {
        conn_send_error(c, EINVAL, NULL, "a request is a JSON object");
        return true;
    }
    cmdv = json_object_get(req, "cmd");
    if (!json_is_string(cmdv)) {
        conn_send_error(c, EINVAL, "cmd", cmdv ? "\"cmd\": expected a string" :
                        "\"cmd\": required (list, stats, mount, unmount or quit)");
        return true;
    }
    cmd = json_string_value(cmdv);
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        if (strcmp(commands[i].name, cmd) == 0) {
            if (!validate_request(cmd, commands[i].fields, req, &bad, &err)) {
                conn_send_error(c, EINVAL, bad, err->message);
                return true;
            }
            if (commands[i].fn == cmd_mount && c->srv->opening) {
                c->deferred = true;
                return false;
            }
            commands[i].fn(c, req);
            return true;
        }
    }
    conn_send_error(c, EINVAL, "cmd", "\"cmd\": unknown command (known: list, stats, mount, "
                    "unmount, quit)");
    return true;
}

/* Run the complete request lines c has received, in order, while it may: not while an unmount
 * is pending, nor while its unsent replies pile up.  Then close it if its client is done. */
static void conn_process(ControlConn *c)
{
    bool nested = c->srv->nested;       /* run from a nested poll of an opening */
    size_t done = 0;

    if (c->processing || c->closed) {
        return;
    }
    c->processing = true;
    conn_ref(c);
    c->resume = false;
    if (nested) {
        server_set_nested(c->srv, false);       /* no client runs inside this one's request */
    }
    while (!c->closed && !c->waiting_for && conn_pending(c) < CONTROL_OUT_HIGH) {
        const char *start = c->in->str + done;
        size_t avail = c->in->len - done;
        const char *nl = memchr(start, '\n', MIN(avail, CONTROL_LINE_MAX + 1));

        if (!nl) {
            if (avail > CONTROL_LINE_MAX) {
                conn_send_error(c, E2BIG, NULL, "request line longer than 64 KiB");
                c->eof = true;  /* read nothing more: close once the reply is out */
                done = c->in->len;
            }
            break;
        }
        if (!conn_dispatch(c, start, nl - start)) {
            break;
        }
        done += nl - start + 1;
    }
    if (!c->closed) {
        g_string_erase(c->in, 0, done);
        if (c->fd >= 0 && !c->writing) {
            conn_flush(c);      /* the batch's replies; may close c */
        }
    }
    if (!c->closed && c->eof && !c->waiting_for && conn_pending(c) == 0 &&
        !memchr(c->in->str, '\n', c->in->len)) {
        conn_close(c);          /* the client is done, and so are we */
    }
    conn_update_handlers(c);
    if (nested) {
        server_set_nested(c->srv, true);
    }
    c->processing = false;
    conn_unref(c);
}

static void conn_read(void *opaque)
{
    ControlConn *c = opaque;
    char buf[CONTROL_READ_SIZE];
    ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);

    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR) {
            conn_close(c);
        }
        return;
    }
    if (n == 0) {
        c->eof = true;
    } else {
        g_string_append_len(c->in, buf, n);
    }
    conn_process(c);
}

static void conn_write(void *opaque)
{
    ControlConn *c = opaque;

    conn_ref(c);
    conn_flush(c);
    conn_process(c);            /* more requests may run now, or the client is done */
    conn_unref(c);
}

/* --- accepting clients --- */

static bool uid_allowed(ControlServer *srv, uid_t uid)
{
    if (uid == 0 || uid == geteuid()) {
        return true;
    }
    for (guint i = 0; srv->allowed_uids && i < srv->allowed_uids->len; i++) {
        if (g_array_index(srv->allowed_uids, uid_t, i) == uid) {
            return true;
        }
    }
    return false;
}

/* Tell a refused client why, if its socket takes it now, and hang up. */
static void refuse(ControlServer *srv, int fd, uid_t uid, int err, const char *msg)
{
    g_autoptr(json_t) r = json_object();
    g_autofree char *text = NULL;
    g_autofree char *line = NULL;
    int64_t now = g_get_monotonic_time();
    ssize_t n;

    json_object_set_new(r, "ok", json_false());
    json_object_set_new(r, "error", json_util_string(msg));
    json_object_set_new(r, "errno", json_integer(err));
    text = json_dumps(r, JSON_COMPACT);
    line = g_strconcat(text, "\n", NULL);
    n = send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n;
    close(fd);
    /* A client could flood the log: one line per 10 s at most. */
    srv->refusals_unlogged++;
    if (!srv->refusal_logged || now - srv->refusal_logged >= 10 * G_USEC_PER_SEC) {
        log_warning("control: refused a client of uid %u: %s (%u refused since the last "
                    "such message)", (unsigned)uid, msg, srv->refusals_unlogged);
        srv->refusal_logged = now;
        srv->refusals_unlogged = 0;
    }
}

static void server_accept(void *opaque)
{
    ControlServer *srv = opaque;
    struct ucred cred;
    socklen_t len = sizeof(cred);
    int fd = accept4(srv->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

    if (fd < 0) {
        return;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        close(fd);
        return;
    }
    if (!uid_allowed(srv, cred.uid)) {
        refuse(srv, fd, cred.uid, EACCES, "permission denied: this daemon serves only its own "
               "user, root and the users given to 'blkfuse serve --allow-user'");
        return;
    }
    if (srv->nconns >= CONTROL_CONN_MAX) {
        refuse(srv, fd, cred.uid, EAGAIN, "too many control connections; try again later");
        return;
    }
    conn_update_handlers(conn_new(srv, fd));
}

/* An export is gone: answer the clients waiting for it.  This may run in a nested poll (a
 * bottom half of the FUSE driver), where no request may start: their next requests resume
 * from the outermost loop (conn_write). */
static void export_removed(BlockExport *exp, const char *reason, void *opaque)
{
    ControlServer *srv = opaque;
    GList *copy = g_list_copy(srv->conns);

    if (!srv->serve && blk_exp_count() == 0 && !srv->opening) {
        srv->exit_requested = true;
    }
    for (GList *l = copy; l; l = l->next) {
        conn_ref(l->data);
    }
    for (GList *l = copy; l; l = l->next) {
        ControlConn *c = l->data;
        if (c->waiting_for == exp) {
            g_autoptr(json_t) r = reply_ok();
            c->waiting_for = NULL;
            c->resume = true;
            json_object_set_new(r, "reason", json_util_string(reason));
            json_object_set_new(r, "exiting", json_boolean(srv->exit_requested));
            json_object_set_new(r, "pid", json_integer(getpid()));
            conn_send(c, r);
            conn_update_handlers(c);
        }
    }
    g_list_free_full(copy, (GDestroyNotify)conn_unref);
}

/* An unmount that waited for the file to close gave up (EBUSY): the export stays; answer the
 * clients waiting for it with the error (from any loop, as export_removed). */
static void export_remove_failed(BlockExport *exp, const GError *err, void *opaque)
{
    ControlServer *srv = opaque;
    GList *copy = g_list_copy(srv->conns);

    for (GList *l = copy; l; l = l->next) {
        conn_ref(l->data);
    }
    for (GList *l = copy; l; l = l->next) {
        ControlConn *c = l->data;
        if (c->waiting_for == exp) {
            c->waiting_for = NULL;
            c->resume = true;
            conn_send_error(c, err->code, NULL, err->message);
            conn_update_handlers(c);
        }
    }
    g_list_free_full(copy, (GDestroyNotify)conn_unref);
}

/* --- the server --- */

static ControlServer *server_alloc(bool serve)
{
    ControlServer *srv = g_new0(ControlServer, 1);

    srv->ctx = aio_get_current();
    srv->fd = -1;
    srv->serve = serve;
    return srv;
}

/* Bind fd to path with no access for others until the mode is set. */
static bool server_listen(ControlServer *srv, int fd, struct sockaddr_un *addr, GError **errp)
{
    mode_t old = umask(0177);
    bool ok = bind(fd, (struct sockaddr *)addr, sizeof(*addr)) == 0 && listen(fd, 64) == 0;
    int err = errno;

    umask(old);
    if (!ok) {
        error_setg_errno(errp, err, "%s: cannot listen", srv->path);
        return false;
    }
    /* With --allow-user, anyone may connect; SO_PEERCRED decides whom to serve. */
    if (chmod(srv->path, srv->allowed_uids && srv->allowed_uids->len ? 0666 : 0600) < 0) {
        error_setg_errno(errp, errno, "%s: cannot set the socket's mode", srv->path);
        return false;
    }
    return true;
}

ControlServer *control_server_new(const char *path, bool serve, GArray *allowed_uids,
                                  GError **errp)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    g_autofree char *dir = NULL;
    ControlServer *srv;
    int fd;

    dir = control_runtime_dir(true, errp);
    if (!dir) {
        return NULL;
    }
    srv = server_alloc(serve);
    if (allowed_uids && allowed_uids->len) {
        srv->allowed_uids = g_array_ref(allowed_uids);
    }
    srv->path = path ? g_strdup(path) : g_strdup_printf("%s/%d.sock", dir, getpid());
    if (strlen(srv->path) >= sizeof(addr.sun_path)) {
        error_setg(errp, "%s: socket path too long", srv->path);
        goto fail;
    }
    strcpy(addr.sun_path, srv->path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "control socket");
        goto fail;
    }
    if (path) {
        /* A given path may hold a stale socket of a daemon that died; a live one is in use. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
            close(probe);
            close(fd);
            error_setg(errp, "%s: another daemon is already listening there", srv->path);
            goto fail;
        }
        if (probe >= 0) {
            close(probe);
        }
    }
    unlink(srv->path);
    if (!server_listen(srv, fd, &addr, errp)) {
        close(fd);
        unlink(srv->path);
        goto fail;
    }
    if (path) {
        /* So that 'blkfuse list' finds this daemon with the others. */
        srv->link = g_strdup_printf("%s/%d.sock", dir, getpid());
        unlink(srv->link);
        if (symlink(srv->path, srv->link) < 0) {
            log_warning("%s: cannot link the control socket: %s", srv->link, g_strerror(errno));
            g_clear_pointer(&srv->link, g_free);
        }
    }
    srv->fd = fd;
    aio_set_fd_handler_external(srv->ctx, fd, server_accept, NULL, srv);
    blk_exp_set_removed_notifier(export_removed, srv);
    blk_exp_set_remove_failed_notifier(export_remove_failed, srv);
    return srv;

fail:
    if (srv->allowed_uids) {
        g_array_unref(srv->allowed_uids);
    }
    g_free(srv->path);
    g_free(srv);
    return NULL;
}

ControlServer *control_server_new_detached(bool dry_run)
{
    ControlServer *srv = server_alloc(true);

    srv->dry_run = dry_run;
    return srv;
}

GString *control_server_process(ControlServer *srv, const void *data, size_t len, uid_t uid)
{
    GString *out = g_string_new(NULL);
    ControlConn *c;

    if (!uid_allowed(srv, uid)) {
        g_string_append(out, "{\"ok\":false,\"error\":\"permission denied\",\"errno\":13}\n");
        return out;
    }
    c = conn_new(srv, -1);
    conn_ref(c);
    g_string_append_len(c->in, data, len);
    c->eof = true;
    /* Take the replies as they come, as a client that reads them would. */
    while (!c->closed) {
        size_t before = c->in->len;

        conn_process(c);
        g_string_append_len(out, c->out->str, c->out->len);
        if (c->in->len == before && c->out->len == 0) {
            break;              /* no progress: only an incomplete line is left */
        }
        g_string_truncate(c->out, 0);
    }
    conn_close(c);
    conn_unref(c);
    return out;
}

const char *control_server_path(ControlServer *srv)
{
    return srv->path;
}

bool control_server_should_exit(ControlServer *srv)
{
    return srv->exit_requested;
}

void control_server_request_exit(ControlServer *srv)
{
    srv->exit_requested = true;
}

void control_server_free(ControlServer *srv)
{
    if (!srv) {
        return;
    }
    while (srv->conns) {
        ControlConn *c = srv->conns->data;
        if (c->fd >= 0) {
            conn_flush(c);      /* what the socket takes now: a "quit" reply, say */
        }
        conn_close(c);
    }
    if (srv->fd >= 0) {
        aio_set_fd_handler_external(srv->ctx, srv->fd, NULL, NULL, NULL);
        close(srv->fd);
        unlink(srv->path);
    }
    if (srv->link) {
        unlink(srv->link);
        g_free(srv->link);
    }
    blk_exp_set_removed_notifier(NULL, NULL);
    blk_exp_set_remove_failed_notifier(NULL, NULL);
    if (srv->allowed_uids) {
        g_array_unref(srv->allowed_uids);
    }
    g_free(srv->path);
    g_free(srv);
}

bool control_parse_users(const char *spec, GArray *out, GError **errp)
{
    g_auto(GStrv) names = g_strsplit(spec, ",", -1);

    for (char **n = names; *n; n++) {
        uid_t uid;

        if (!**n) {
            error_setg(errp, "empty user name in '%s'", spec);
            return false;
        }
        if (strspn(*n, "0123456789") == strlen(*n)) {
            guint64 v;
            if (!g_ascii_string_to_unsigned(*n, 10, 0, UINT32_MAX - 1, &v, NULL)) {
                error_setg(errp, "invalid uid '%s'", *n);
                return false;
            }
            uid = v;
        } else {
            struct passwd pw, *res = NULL;
            char buf[4096];
            if (getpwnam_r(*n, &pw, buf, sizeof(buf), &res) != 0 || !res) {
                error_setg(errp, "unknown user '%s'", *n);
                return false;
            }
            uid = res->pw_uid;
        }
        g_array_append_val(out, uid);
    }
    return true;
}

/* --- client --- */

static int connect_to(const char *path, GError **errp)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(addr.sun_path)) {
        error_setg(errp, "%s: socket path too long", path);
        return -1;
    }
    strcpy(addr.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        g_set_error(errp, BLK_ERROR, errno, "%s: cannot connect to the daemon: %s", path,
                    g_strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

json_t *control_call(const char *path, const json_t *request, int timeout_ms,
                     GError **errp)
{
    g_autofree char *text = json_dumps(request, JSON_COMPACT);
    g_autofree char *line = g_strconcat(text, "\n", NULL);
    g_autoptr(GString) in = g_string_new(NULL);
    int64_t deadline = timeout_ms > 0 ? g_get_monotonic_time() + timeout_ms * 1000LL : 0;
    size_t len = strlen(line), done = 0;
    int fd = connect_to(path, errp);
    char *nl;

    if (fd < 0) {
        return NULL;
    }
    while (done < len) {
        ssize_t n = send(fd, line + done, len - done, MSG_NOSIGNAL);
        if (n < 0 && errno != EINTR) {
            error_setg_errno(errp, errno, "%s: cannot send to the daemon", path);
            close(fd);
            return NULL;
        }
        done += n > 0 ? n : 0;
    }
    while (!(nl = memchr(in->str, '\n', in->len))) {
        char buf[4096];
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int wait = deadline ? (int)MAX((deadline - g_get_monotonic_time()) / 1000, 0) : -1;
        ssize_t n;

        if (poll(&p, 1, wait) == 0) {
            error_setg(errp, "%s: the daemon did not answer within %d s", path,
                       timeout_ms / 1000);
            close(fd);
            return NULL;
        }
        n = recv(fd, buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            error_setg(errp, "%s: the daemon closed the connection without answering", path);
            close(fd);
            return NULL;
        }
        g_string_append_len(in, buf, n);
    }
    close(fd);
    return control_parse_json(in->str, nl - in->str, errp);
}

GPtrArray *control_find_daemons(void)
{
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *dir = control_runtime_dir(false, NULL);
    DIR *d = dir ? opendir(dir) : NULL;
    struct dirent *e;

    if (!d) {
        return out;
    }
    while ((e = readdir(d))) {
        if (!g_str_has_suffix(e->d_name, ".sock")) {
            continue;
        }
        g_autofree char *path = g_build_filename(dir, e->d_name, NULL);
        int fd = connect_to(path, NULL);
        if (fd < 0) {
            if (errno == ECONNREFUSED) {
                unlink(path);   /* its daemon is gone */
            }
            continue;
        }
        close(fd);
        g_ptr_array_add(out, g_steal_pointer(&path));
    }
    closedir(d);
    return out;
}
