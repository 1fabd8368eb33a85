/* control.c - the control socket: a line-delimited JSON server in the daemon's main loop, and
 * the client calls the CLI makes.  See control.h for the protocol. */
#include "config.h"
#include "cli/control.h"
#include "block/aio.h"
#include "block/util.h"
#include "fuse/export.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CONTROL_LINE_MAX (64 * 1024)

typedef struct ControlConn {
    ControlServer *srv;
    int fd;
    GString *in;
    BlockExport *waiting_for;   /* unmount in progress: reply when this export is gone */
    bool closing;
} ControlConn;

struct ControlServer {
    int fd;
    char *path;
    char *link;                 /* RUNTIME_DIR/PID.sock -> path, when path is elsewhere */
    bool serve;
    bool exit_requested;
    GList *conns;
};

static ControlServer *the_server;       /* for the export-removed notifier */

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

/* --- replies --- */

static void conn_send(ControlConn *c, JsonValue *reply)
{
    g_autofree char *text = json_to_string(reply);
    g_autofree char *line = g_strconcat(text, "\n", NULL);
    size_t len = strlen(line), done = 0;

    while (done < len) {
        ssize_t n = send(c->fd, line + done, len - done, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                struct pollfd p = { .fd = c->fd, .events = POLLOUT };
                poll(&p, 1, 1000);
                continue;
            }
            c->closing = true;
            return;
        }
        done += n;
    }
}

static void conn_send_error(ControlConn *c, int err, const char *msg)
{
    g_autoptr(JsonValue) r = json_new_object();

    json_object_set_bool(r, "ok", false);
    json_object_set_string(r, "error", msg);
    json_object_set_int(r, "errno", err < 0 ? -err : err);
    conn_send(c, r);
}

static JsonValue *reply_ok(void)
{
    JsonValue *r = json_new_object();

    json_object_set_bool(r, "ok", true);
    return r;
}

/* --- export descriptions --- */

static JsonValue *describe_export(BlockExport *exp)
{
    JsonValue *o = json_new_object();
    JsonValue *stats = json_new_object();
    BlockBackendStats st;
    char since[32];
    struct tm tm;

    blk_get_stats(exp->blk, &st);
    localtime_r(&exp->since, &tm);
    strftime(since, sizeof(since), "%Y-%m-%dT%H:%M:%S%z", &tm);

    json_object_set_string(o, "id", exp->id);
    json_object_set_int(o, "pid", getpid());
    json_object_set_string(o, "image", exp->image);
    json_object_set_string(o, "format", exp->format);
    json_object_set_string(o, "mountpoint", exp->mountpoint);
    json_object_set_bool(o, "read_only", exp->read_only);
    json_object_set_bool(o, "growable", exp->growable);
    json_object_set_bool(o, "snapshot", exp->snapshot);
    json_object_set_string(o, "cache", exp->cache);
    json_object_set_int(o, "queues", exp->queues);
    json_object_set_int(o, "size", blk_getlength(exp->blk));
    json_object_set_int(o, "clients", blk_exp_clients(exp));
    json_object_set_int(o, "owner_uid", exp->owner);
    {
        const char *user = g_get_user_name();
        json_object_set_string(o, "owner", user);
    }
    json_object_set_string(o, "since", since);
    json_object_set_int(o, "since_epoch", exp->since);
    json_object_set_int(o, "bytes_read", st.bytes[BLK_STAT_READ]);
    json_object_set_int(o, "bytes_written", st.bytes[BLK_STAT_WRITE]);
    json_object_set_int(o, "ops_read", st.ops[BLK_STAT_READ]);
    json_object_set_int(o, "ops_written", st.ops[BLK_STAT_WRITE]);
    for (int i = 0; i < BLK_STAT__MAX; i++) {
        JsonValue *k = json_new_object();
        json_object_set_int(k, "ops", st.ops[i]);
        json_object_set_int(k, "bytes", st.bytes[i]);
        json_object_set_int(k, "failed", st.failed[i]);
        json_object_set_double(k, "avg_latency_us",
                               st.ops[i] ? st.total_ns[i] / 1000.0 / st.ops[i] : 0.0);
        json_object_set_double(k, "max_latency_us", st.max_ns[i] / 1000.0);
        json_object_set(stats, blk_stat_names[i], k);
    }
    json_object_set_int(stats, "in_flight", st.in_flight);
    json_object_set(o, "stats", stats);
    return o;
}

JsonValue *control_describe_exports(const char *mountpoint_filter)
{
    JsonValue *arr = json_new_array();

    for (GList *l = blk_exp_list(); l; l = l->next) {
        BlockExport *exp = l->data;
        if (mountpoint_filter && strcmp(exp->mountpoint, mountpoint_filter) != 0) {
            continue;
        }
        json_array_append(arr, describe_export(exp));
    }
    return arr;
}

/* --- commands --- */

static void cmd_list(ControlConn *c, JsonValue *req)
{
    g_autoptr(JsonValue) r = reply_ok();

    json_object_set_int(r, "pid", getpid());
    json_object_set_bool(r, "serve", c->srv->serve);
    json_object_set(r, "exports", control_describe_exports(json_object_get_string(req,
                                                                            "mountpoint")));
    conn_send(c, r);
}

static BlockExport *find_export(ControlConn *c, JsonValue *req)
{
    const char *mp = json_object_get_string(req, "mountpoint");
    const char *id = json_object_get_string(req, "id");
    BlockExport *exp = id ? blk_exp_find(id) : mp ? blk_exp_find_by_mountpoint(mp) : NULL;

    if (!exp) {
        g_autofree char *msg = g_strdup_printf("%s: no such export in daemon %d",
                                               id ? id : mp ? mp : "(none given)", getpid());
        conn_send_error(c, ENOENT, msg);
    }
    return exp;
}

static void cmd_unmount(ControlConn *c, JsonValue *req)
{
    BlockExport *exp = find_export(c, req);
    g_autoptr(GError) err = NULL;

    if (!exp) {
        return;
    }
    if (blk_exp_request_remove(exp, json_object_get_bool(req, "force", false), &err) < 0) {
        conn_send_error(c, err->code, err->message);
        return;
    }
    c->waiting_for = exp;       /* reply from the removed notifier */
}

static void cmd_mount(ControlConn *c, JsonValue *req)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GHashTable) opts = block_options_new();
    const char *o = json_object_get_string(req, "options");
    BlockExportOptions eo = {
        .type = "fuse",
        .id = json_object_get_string(req, "id"),
        .image = json_object_get_string(req, "image"),
        .format = json_object_get_string(req, "format"),
        .opts = opts,
        .mountpoint = json_object_get_string(req, "mountpoint"),
        .read_only = json_object_get_bool(req, "read_only", false),
        .growable = json_object_get_bool(req, "growable", false),
        .allow_other = json_object_get_bool(req, "allow_other", false),
        .snapshot = json_object_get_bool(req, "snapshot", false),
        .cache = json_object_get_string(req, "cache"),
        .queues = json_object_get_int(req, "queues", 1),
    };
    BlockExport *exp;
    g_autoptr(JsonValue) r = NULL;

    if (!eo.image || !eo.mountpoint) {
        conn_send_error(c, EINVAL, "mount needs \"image\" and \"mountpoint\"");
        return;
    }
    if (o && !block_options_parse(opts, o, &err)) {
        conn_send_error(c, err->code, err->message);
        return;
    }
    exp = blk_exp_add(&eo, &err);
    if (!exp) {
        conn_send_error(c, err->code, err->message);
        return;
    }
    r = reply_ok();
    json_object_set(r, "export", describe_export(exp));
    conn_send(c, r);
}

static void cmd_quit(ControlConn *c, JsonValue *req)
{
    g_autoptr(JsonValue) r = reply_ok();

    conn_send(c, r);
    c->srv->exit_requested = true;
}

static const struct {
    const char *name;
    void (*fn)(ControlConn *c, JsonValue *req);
} commands[] = {
    { "list", cmd_list },
    { "stats", cmd_list },
    { "mount", cmd_mount },
    { "unmount", cmd_unmount },
    { "quit", cmd_quit },
};

static void conn_dispatch(ControlConn *c, const char *line, size_t len)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonValue) req = json_parse(line, len, &err);
    const char *cmd;

    if (!req) {
        conn_send_error(c, EINVAL, err->message);
        return;
    }
    cmd = json_object_get_string(req, "cmd");
    for (size_t i = 0; cmd && i < G_N_ELEMENTS(commands); i++) {
        if (strcmp(commands[i].name, cmd) == 0) {
            commands[i].fn(c, req);
            return;
        }
    }
    g_autofree char *msg = g_strdup_printf("unknown command '%s'", cmd ? cmd : "(none)");
    conn_send_error(c, EINVAL, msg);
}

static void conn_free(ControlConn *c)
{
    aio_set_fd_handler(aio_get_current(), c->fd, NULL, NULL, NULL);
    close(c->fd);
    c->srv->conns = g_list_remove(c->srv->conns, c);
    g_string_free(c->in, true);
    g_free(c);
}

static void conn_read(void *opaque)
{
    ControlConn *c = opaque;
    char buf[4096];
    ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
    char *nl;

    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }
    if (n <= 0) {
        if (c->waiting_for) {
            c->closing = true;  /* the client left; keep the struct until the export is gone */
            aio_set_fd_handler(aio_get_current(), c->fd, NULL, NULL, NULL);
            return;
        }
        conn_free(c);
        return;
    }
    g_string_append_len(c->in, buf, n);
    while (!c->waiting_for && (nl = memchr(c->in->str, '\n', c->in->len))) {
        size_t len = nl - c->in->str;
        g_autofree char *line = g_strndup(c->in->str, len);
        g_string_erase(c->in, 0, len + 1);
        conn_dispatch(c, line, len);
    }
    if (c->in->len > CONTROL_LINE_MAX) {
        conn_send_error(c, E2BIG, "request line too long");
        conn_free(c);
    }
}

static void server_accept(void *opaque)
{
    ControlServer *srv = opaque;
    int fd = accept4(srv->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    ControlConn *c;

    if (fd < 0) {
        return;
    }
    c = g_new0(ControlConn, 1);
    c->srv = srv;
    c->fd = fd;
    c->in = g_string_new(NULL);
    srv->conns = g_list_prepend(srv->conns, c);
    aio_set_fd_handler(aio_get_current(), fd, conn_read, NULL, c);
}

static void export_removed(BlockExport *exp, const char *reason, void *opaque)
{
    ControlServer *srv = opaque;
    GList *copy = g_list_copy(srv->conns);

    if (!srv->serve && blk_exp_count() == 0) {
        srv->exit_requested = true;
    }
    for (GList *l = copy; l; l = l->next) {
        ControlConn *c = l->data;
        if (c->waiting_for == exp) {
            c->waiting_for = NULL;
            if (c->closing) {
                conn_free(c);
                continue;
            }
            g_autoptr(JsonValue) r = reply_ok();
            json_object_set_string(r, "reason", reason);
            json_object_set_bool(r, "exiting", srv->exit_requested);
            json_object_set_int(r, "pid", getpid());
            conn_send(c, r);
        }
    }
    g_list_free(copy);
}

/* An unmount that waited for the file to close gave up (EBUSY): the export stays; answer the
 * clients waiting for it with the error. */
static void export_remove_failed(BlockExport *exp, const GError *err, void *opaque)
{
    ControlServer *srv = opaque;
    GList *copy = g_list_copy(srv->conns);

    for (GList *l = copy; l; l = l->next) {
        ControlConn *c = l->data;
        if (c->waiting_for == exp) {
            c->waiting_for = NULL;
            if (c->closing) {
                conn_free(c);
                continue;
            }
            conn_send_error(c, err->code, err->message);
        }
    }
    g_list_free(copy);
}

ControlServer *control_server_new(const char *path, bool serve, GError **errp)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    g_autofree char *dir = NULL;
    ControlServer *srv;
    int fd;

    dir = control_runtime_dir(true, errp);
    if (!dir) {
        return NULL;
    }
    srv = g_new0(ControlServer, 1);
    srv->serve = serve;
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
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 16) < 0) {
        error_setg_errno(errp, errno, "%s: cannot listen", srv->path);
        close(fd);
        goto fail;
    }
    chmod(srv->path, 0600);
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
    aio_set_fd_handler(aio_get_current(), fd, server_accept, NULL, srv);
    the_server = srv;
    blk_exp_set_removed_notifier(export_removed, srv);
    blk_exp_set_remove_failed_notifier(export_remove_failed, srv);
    return srv;

fail:
    g_free(srv->path);
    g_free(srv);
    return NULL;
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
        conn_free(srv->conns->data);
    }
    aio_set_fd_handler(aio_get_current(), srv->fd, NULL, NULL, NULL);
    close(srv->fd);
    unlink(srv->path);
    if (srv->link) {
        unlink(srv->link);
        g_free(srv->link);
    }
    blk_exp_set_removed_notifier(NULL, NULL);
    blk_exp_set_remove_failed_notifier(NULL, NULL);
    the_server = NULL;
    g_free(srv->path);
    g_free(srv);
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

JsonValue *control_call(const char *path, const JsonValue *request, int timeout_ms,
                        GError **errp)
{
    g_autofree char *text = json_to_string(request);
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
    return json_parse(in->str, nl - in->str, errp);
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
