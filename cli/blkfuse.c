/* blkfuse.c - the blkfuse command: mount, unmount, list, stats, info, create, serve.
 *
 * Threads: the CLI is single-threaded until a daemon starts exporting; the daemon's main thread
 * runs the control socket and the export registry, and forks before any thread exists.
 * Exit status: 0 success, 1 runtime error, 2 usage error (check: see cmd_check).
 */
#include "config.h"
#include "block/aio.h"
#include "block/backend.h"
#include "block/progress.h"
#include "block/util.h"
#include "cli/control.h"
#include "cli/json-util.h"
#include "cli/mount-helper.h"
#include "cli/sd-notify.h"
#include "fuse/export.h"
#include "fuse/passthrough.h"

#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

#define EXIT_USAGE 2

/* --- option tables: the help text is generated from them --- */

typedef struct CliOption {
    const char *name;           /* long name */
    int key;                    /* short letter, or a unique value > 255 */
    const char *arg;            /* argument name, NULL for a flag */
    const char *help;
} CliOption;

typedef struct CliCommand {
    const char *name;
    const char *args;
    const char *summary;
    const CliOption *options;
    int (*run)(GHashTable *opts, int argc, char **argv);
    int min_args, max_args;
    bool anywhere;              /* options may follow operands (as in qemu-img) */
} CliCommand;

enum {
    OPT_GROWABLE = 256, OPT_CACHE, OPT_QUEUES, OPT_FOREGROUND, OPT_LOG_FILE, OPT_FORCE,
    OPT_JSON, OPT_ALLOW_OTHER, OPT_DAEMON, OPT_ID, OPT_SOCKET, OPT_SNAPSHOT,
    OPT_SNAPSHOT_NAME, OPT_ALLOW_USER, OPT_ALLOW_REMOTE_BACKING, OPT_HELP, OPT_OUTPUT,
    OPT_TRANSPORT, OPT_PASSTHROUGH, OPT_STATS, OPT_ADD, OPT_REMOVE, OPT_CLEAR, OPT_ENABLE,
    OPT_DISABLE, OPT_CHANGED, OPT_SPARSE,
};

static const CliOption help_option = { "help", OPT_HELP, NULL, "show this help and exit" };

static const CliOption mount_options[] = {
    { "format", 'f', "FORMAT", "image format (raw, qcow2); probed from the image if not given" },
    { "read-only", 'r', NULL, "export read-only (file mode 0400; writes fail with EROFS)" },
    { "growable", OPT_GROWABLE, NULL, "writes past the end grow the image instead of failing "
      "with ENOSPC" },
    { "cache", OPT_CACHE, "MODE", "writeback (default: host page cache), writethrough (flush "
      "after every write), none (O_DIRECT), directsync (O_DIRECT + flush after every write)" },
    { "queues", OPT_QUEUES, "auto|N", "threads serving the file: auto (default: one per CPU, "
      "up to 4, each serving requests on its client's CPU while they come one at a time), or N "
      "threads that take any request (/dev/fuse; the uring transport always has one per CPU)" },
    { "transport", OPT_TRANSPORT, "auto|uring|dev", "how requests reach the export: uring "
      "(FUSE-over-io_uring, when the fuse module's enable_uring parameter is Y), dev "
      "(/dev/fuse), auto (default: uring when the kernel offers it, else dev)" },
    { "options", 'o', "KEY=VALUE,...", "format and protocol options: raw offset=,size=; qcow2 "
      "l2-cache-size=; file locking=off, aio=io_uring|native|threads, inline-write-max=SIZE, "
      "write-behind=SIZE, splice-read=on|off; nbd and rbd connect-timeout=SECONDS, "
      "reconnect-timeout=SECONDS; nbd connections=N, "
      "tls-certs=DIR, tls-psk-file=FILE, tls-username=NAME; fault-rules=PATH (testing); and "
      "every option here by its long name (ro, format=qcow2, cache=none, ...), as mount(8) and "
      "fstab give them" },
    { "snapshot", OPT_SNAPSHOT, NULL, "send writes to a temporary overlay that is deleted at "
      "unmount; the image stays untouched" },
    { "snapshot-name", OPT_SNAPSHOT_NAME, "NAME", "export the internal snapshot NAME "
      "(read-only)" },
    { "changed", OPT_CHANGED, "BITMAP", "with --read-only: SEEK_DATA/SEEK_HOLE and st_blocks "
      "show only the ranges changed since the qcow2 persistent dirty bitmap BITMAP was added or "
      "cleared (reads return the current data), for incremental backups" },
    { "allow-other", OPT_ALLOW_OTHER, NULL, "let other users access the file, subject to its "
      "mode (needs user_allow_other in /etc/fuse.conf when not root)" },
    { "allow-remote-backing", OPT_ALLOW_REMOTE_BACKING, NULL, "open backing files the image "
      "names by protocol (null:, nbd:, ...), not only local paths: only for trusted images" },
    { "passthrough", OPT_PASSTHROUGH, "auto|on|off", "let the kernel read and write the image "
      "file itself (root, -f raw, --growable or --read-only, --stats=coarse); auto (default) "
      "when every promise of the export holds with it, on: refuse to mount when one does not" },
    { "stats", OPT_STATS, "full|coarse", "full (default): count every read and write; coarse: "
      "reads and writes the kernel serves itself (passthrough) go uncounted" },
    { "id", OPT_ID, "ID", "export id (default: exportN)" },
    { "daemon", OPT_DAEMON, "SOCKET", "add the export to the running 'blkfuse serve' daemon "
      "listening on SOCKET" },
    { "foreground", OPT_FOREGROUND, NULL, "stay in the foreground, logging to stderr" },
    { "log-file", OPT_LOG_FILE, "FILE", "log to FILE (default when daemonized: syslog, or "
      "RUNTIME_DIR/PID.log without /dev/log)" },
    { "verbose", 'v', NULL, "log debug messages" },
    { NULL },
};

static const CliOption unmount_options[] = {
    { "force", OPT_FORCE, NULL, "unmount even while the file is open: users' I/O fails "
      "from then on" },
    { NULL },
};

static const CliOption list_options[] = {
    { "json", OPT_JSON, NULL, "print JSON" },
    { NULL },
};

static const CliOption info_options[] = {
    { "format", 'f', "FORMAT", "image format; probed if not given" },
    { "json", OPT_JSON, NULL, "print JSON" },
    { "allow-remote-backing", OPT_ALLOW_REMOTE_BACKING, NULL, "open backing files named by "
      "protocol too (else only the image itself is shown, with a warning)" },
    { NULL },
};

static const CliOption create_options[] = {
    { "format", 'f', "FORMAT", "image format: qcow2 or raw (default raw)" },
    { "backing", 'b', "BACKING", "backing file (qcow2)" },
    { "backing-format", 'F', "FORMAT", "format of the backing file; probed if not given" },
    { "allow-remote-backing", OPT_ALLOW_REMOTE_BACKING, NULL, "let BACKING be a protocol name "
      "(null:...), which opening the image will then need --allow-remote-backing for" },
    { "options", 'o', "KEY=VALUE,...", "format options: qcow2 cluster_size=, lazy_refcounts=, "
      "extended_l2=, compression_type=, preallocation=, refcount_bits=, compat=; raw "
      "preallocation=" },
    { "progress", 'p', NULL, "show progress (of preallocation) on standard error, when it is "
      "a terminal" },
    { NULL },
};

static const CliOption serve_options[] = {
    { "socket", OPT_SOCKET, "PATH", "control socket path (default: RUNTIME_DIR/PID.sock)" },
    { "allow-user", OPT_ALLOW_USER, "USER,...", "also serve these users (names or uids) on the "
      "control socket, which --socket must put where they can reach it; they can then do "
      "anything the daemon can" },
    { "foreground", OPT_FOREGROUND, NULL, "stay in the foreground, logging to stderr" },
    { "log-file", OPT_LOG_FILE, "FILE", "log to FILE (default when daemonized: syslog, or "
      "RUNTIME_DIR/PID.log without /dev/log)" },
    { "verbose", 'v', NULL, "log debug messages" },
    { NULL },
};

static int cmd_mount(GHashTable *o, int argc, char **argv);
static int cmd_unmount(GHashTable *o, int argc, char **argv);
static int cmd_list(GHashTable *o, int argc, char **argv);
/* stats: "queues: 2, local (each serves its clients on its own CPU), 3 switches; requests:
 * 1200 on CPU 0, 35 on CPU 1". */
static void print_queues(json_t *aff)
{
    const char *mode = json_string_value(json_object_get(aff, "mode"));
    json_t *queues = json_object_get(aff, "queues");
    const char *what = "";
    bool idle = false;
    size_t i;
    json_t *q;

    if (!mode) {
        return;
    }
    json_array_foreach(queues, i, q) {
        idle |= json_is_true(json_object_get(q, "yields_cpu"));
    }
    if (!strcmp(mode, "local")) {
        what = idle ? " (requests come one at a time: each queue serves them on its client's "
                      "CPU, and yields it to the client with each reply)"
                    : " (requests come one at a time: each queue serves them on its client's CPU)";
    } else if (!strcmp(mode, "spread")) {
        what = " (many requests in flight: the queues run on any CPU)";
    } else if (!strcmp(mode, "fixed")) {
        what = " (--queues=N: each takes any request, on any CPU)";
    }
    printf("queues: %zu, %s%s, %" G_GINT64_FORMAT " switches; requests:", json_array_size(queues),
           mode, what, json_util_get_int(aff, "switches", 0));
    json_array_foreach(queues, i, q) {
        json_t *cpu = json_object_get(q, "cpu");

        printf("%s %" G_GINT64_FORMAT, i ? "," : "", json_util_get_int(q, "requests", 0));
        if (json_is_integer(cpu)) {
            printf(" on CPU %" JSON_INTEGER_FORMAT, json_integer_value(cpu));
        }
    }
    printf("\n");
}

static int cmd_stats(GHashTable *o, int argc, char **argv);
static int cmd_info(GHashTable *o, int argc, char **argv);
static int cmd_create(GHashTable *o, int argc, char **argv);
static int cmd_serve(GHashTable *o, int argc, char **argv);
static int cmd_check(GHashTable *o, int argc, char **argv);

static const CliOption check_options[] = {
    { "repair", 'r', "leaks|all", "repair leaked clusters (leaks), or leaks and every "
      "corruption that can be repaired (all); opens the image read-write" },
    { "output", OPT_OUTPUT, "human|json", "report format (default human)" },
    { "format", 'f', "FORMAT", "image format; probed if not given" },
    { "progress", 'p', NULL, "show progress on standard error, when it is a terminal" },
    { NULL },
};

static int cmd_bitmap(GHashTable *o, int argc, char **argv);

static const CliOption bitmap_options[] = {
    { "add", OPT_ADD, NULL, "add the persistent dirty bitmap BITMAP, empty and enabled (disabled "
      "with --disable too)" },
    { "remove", OPT_REMOVE, NULL, "remove BITMAP and free its clusters" },
    { "clear", OPT_CLEAR, NULL, "clear every bit of BITMAP" },
    { "enable", OPT_ENABLE, NULL, "let BITMAP track changes from now on" },
    { "disable", OPT_DISABLE, NULL, "stop BITMAP tracking changes (its bits stay)" },
    { "granularity", 'g', "SIZE", "with --add: bytes per bit, a power of two from 512 to 2G "
      "(default: the cluster size, within 4k..64k)" },
    { "format", 'f', "FORMAT", "image format; probed if not given" },
    { NULL },
};

static int cmd_map(GHashTable *o, int argc, char **argv);
static int cmd_copy_ranges(GHashTable *o, int argc, char **argv);

static const CliOption map_options[] = {
    { "changed", OPT_CHANGED, "BITMAP", "list the ranges changed since the persistent dirty "
      "bitmap BITMAP was added or cleared (needed)" },
    { "output", OPT_OUTPUT, "human|json", "human (default): one 'OFFSET LENGTH' line per "
      "range, in bytes; json: an array of {\"start\", \"length\"} objects" },
    { "format", 'f', "FORMAT", "image format; probed if not given" },
    { NULL },
};

static const CliOption copy_ranges_options[] = {
    { "sparse", OPT_SPARSE, NULL, "leave 4 KiB blocks of zeros unwritten, and skip SOURCE's "
      "holes unread (for a new DEST that reads zeros where nothing was written)" },
    { NULL },
};

static const CliCommand commands[] = {
    { "mount", "IMAGE MOUNTPOINT", "export IMAGE as the regular file MOUNTPOINT (created if "
      "missing)", mount_options, cmd_mount, 2, 2 },
    { "unmount", "MOUNTPOINT", "flush, close the image and end the export on MOUNTPOINT",
      unmount_options, cmd_unmount, 1, 1 },
    { "list", "", "list the exports of this user's daemons", list_options, cmd_list, 0, 0 },
    { "stats", "MOUNTPOINT", "show I/O counters and latency of an export", list_options,
      cmd_stats, 1, 1 },
    { "info", "IMAGE", "show an image's format, sizes, backing chain, snapshots and bitmaps",
      info_options, cmd_info, 1, 1 },
    { "create", "IMAGE [SIZE]", "create an image (SIZE defaults to the backing file's)",
      create_options, cmd_create, 1, 2 },
    { "serve", "", "run a daemon without exports; add them with 'mount --daemon SOCKET'",
      serve_options, cmd_serve, 0, 0 },
    { "check", "IMAGE", "find (and with -r repair) corruptions and leaks, like qemu-img check",
      check_options, cmd_check, 1, 1 },
    { "bitmap", "IMAGE BITMAP", "add, remove, clear, enable or disable a persistent dirty bitmap "
      "of a qcow2 image, like qemu-img bitmap", bitmap_options, cmd_bitmap, 2, 2, true },
    { "map", "IMAGE", "list the ranges of an image that changed since a bitmap was added or "
      "cleared", map_options, cmd_map, 1, 1 },
    { "copy-ranges", "SOURCE DEST", "copy the byte ranges listed on standard input ('OFFSET "
      "LENGTH' lines, as 'blkfuse map' prints them) from file SOURCE to the same offsets of file "
      "DEST, in place", copy_ranges_options, cmd_copy_ranges, 2, 2 },
};

static const CliCommand *find_command(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        if (!strcmp(commands[i].name, name)) {
            return &commands[i];
        }
    }
    return NULL;
}

static void print_options(FILE *f, const CliOption *opts)
{
    for (const CliOption *o = opts; ; o++) {
        const CliOption *opt = o->name ? o : &help_option;
        g_autofree char *left = NULL;

        if (opt->key < 256) {
            left = g_strdup_printf("-%c, --%s%s%s", opt->key, opt->name, opt->arg ? " " : "",
                                   opt->arg ? opt->arg : "");
        } else {
            left = g_strdup_printf("    --%s%s%s", opt->name, opt->arg ? "=" : "",
                                   opt->arg ? opt->arg : "");
        }
        fprintf(f, "  %-30s %s\n", left, opt->help);
        if (!o->name) {
            break;
        }
    }
}

static void command_help(const CliCommand *c)
{
    printf("Usage: blkfuse %s [OPTION]...%s%s\n%s.\n\nOptions:\n", c->name, *c->args ? " " : "",
           c->args, c->summary);
    print_options(stdout, c->options);
}

static void main_help(void)
{
    printf("Usage: blkfuse COMMAND [OPTION]... [ARG]...\n"
           "Present disk images (raw, qcow2) as regular files through FUSE.\n\nCommands:\n");
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        g_autofree char *left = g_strdup_printf("%s %s", commands[i].name, commands[i].args);
        printf("  %-24s %s\n", left, commands[i].summary);
    }
    printf("\nRun 'blkfuse COMMAND --help' for a command's options.\n"
           "Also: blkfuse --help, blkfuse --version.  See blkfuse(1).\n");
}

static int usage_error(const CliCommand *c, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static int usage_error(const CliCommand *c, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (c) {
        fprintf(stderr, "blkfuse %s: %s\nTry 'blkfuse %s --help'.\n", c->name, msg, c->name);
    } else {
        fprintf(stderr, "blkfuse: %s\nTry 'blkfuse --help'.\n", msg);
    }
    return EXIT_USAGE;
}

static int fail(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static int fail(const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    fprintf(stderr, "blkfuse: %s\n", msg);
    return EXIT_FAILURE;
}

/* Parse argv against c's table into a name -> value table ("" for flags; -o values joined with
 * commas).  Returns the index of the first operand, or -1 after a usage error / help. */
static int parse_options(const CliCommand *c, int argc, char **argv, GHashTable *out,
                         int *status)
{
    GArray *longopts = g_array_new(true, true, sizeof(struct option));
    GString *shortopts = g_string_new(c->anywhere ? ":" : "+:");
    int ret = -1;

    for (const CliOption *o = c->options; ; o++) {
        const CliOption *opt = o->name ? o : &help_option;
        struct option lo = { opt->name, opt->arg ? required_argument : no_argument, NULL,
                             opt->key };
        g_array_append_val(longopts, lo);
        if (opt->key < 256) {
            g_string_append_c(shortopts, opt->key);
            if (opt->arg) {
                g_string_append_c(shortopts, ':');
            }
        }
        if (!o->name) {
            break;
        }
    }
    optind = 1;
    opterr = 0;
    for (;;) {
        int longindex = -1;
        int key = getopt_long(argc, argv, shortopts->str, (struct option *)longopts->data,
                              &longindex);
        const CliOption *opt = NULL;

        if (key == -1) {
            ret = optind;
            break;
        }
        if (key == OPT_HELP) {
            command_help(c);
            *status = 0;
            break;
        }
        if (key == '?' || key == ':') {
            const char *bad = argv[optind - 1];
            *status = usage_error(c, key == '?' ? "unknown option '%s'" :
                                  "option '%s' needs an argument", bad);
            break;
        }
        for (const CliOption *o = c->options; o->name; o++) {
            if (o->key == key) {
                opt = o;
            }
        }
        if (opt->arg && !strcmp(opt->name, "options") && g_hash_table_contains(out, "options")) {
            char *joined = g_strjoin(",", (char *)g_hash_table_lookup(out, "options"), optarg,
                                     NULL);
            g_hash_table_replace(out, g_strdup(opt->name), joined);
        } else {
            g_hash_table_replace(out, g_strdup(opt->name), g_strdup(opt->arg ? optarg : ""));
        }
    }
    g_array_free(longopts, true);
    g_string_free(shortopts, true);
    return ret;
}

static const char *opt_str(GHashTable *o, const char *name)
{
    return g_hash_table_lookup(o, name);
}

/* The option of c named key in a -o list: its long name, with '_' for '-' (allow_other) and
 * the names mount(8) uses (ro, rw: read-only), but never -o itself. */
static const CliOption *mount_option_by_key(const CliCommand *c, const char *key)
{
    g_autofree char *name = !strcmp(key, "ro") || !strcmp(key, "rw") ? g_strdup("read-only") :
                            g_strdelimit(g_strdup(key), "_", '-');

    for (const CliOption *opt = c->options; opt->name; opt++) {
        if (!strcmp(opt->name, name) && strcmp(opt->name, "options") && key[0] != '_') {
            return opt;
        }
    }
    return NULL;
}

/*
 * Take c's own options out of its -o list (o["options"]), so that every option has a -o
 * spelling, as mount(8) and fstab give them: "-o ro,format=qcow2,cache=none,offset=1M" is
 * "--read-only --format=qcow2 --cache=none -o offset=1M".  A flag takes no value, or on/off
 * (yes/no, true/false, 1/0); rw turns read-only off, sync is cache=writethrough.  Options of
 * mount(8), systemd and fuse that mean nothing here (mount_option_is_generic) are dropped;
 * the rest stay in o["options"] for the image's drivers.  A value that contradicts the same
 * option given on the command line is an error.
 */
static bool mount_options_from_o(const CliCommand *c, GHashTable *o, GError **errp)
{
    g_auto(GStrv) items = NULL;
    g_autoptr(GString) rest = g_string_new(NULL);
    g_autoptr(GHashTable) given = g_hash_table_new(g_str_hash, g_str_equal);
    GHashTableIter it;
    gpointer key;

    if (!opt_str(o, "options")) {
        return true;
    }
    g_hash_table_iter_init(&it, o);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        g_hash_table_add(given, key);           /* what the command line set */
    }
    items = g_strsplit(opt_str(o, "options"), ",", -1);
    for (char **p = items; *p; p++) {
        char *eq = strchr(*p, '=');
        g_autofree char *k = eq ? g_strndup(*p, eq - *p) : g_strdup(*p);
        const char *v = eq ? eq + 1 : NULL;
        const CliOption *opt;
        bool on = true;

        if (!**p || mount_option_is_generic(k)) {
            continue;
        }
        if (!strcmp(k, "sync") && !v) {
            g_free(k);
            k = g_strdup("cache");
            v = "writethrough";
        }
        opt = mount_option_by_key(c, k);
        if (!opt) {
            g_string_append_printf(rest, "%s%s", rest->len ? "," : "", *p);
            continue;
        }
        if (opt->arg && (!v || !*v)) {
            error_setg(errp, "-o %s needs a value (%s=%s)", k, k, opt->arg);
            return false;
        }
        if (!opt->arg && v) {
            if (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true") ||
                !strcmp(v, "1")) {
                on = true;
            } else if (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "false") ||
                       !strcmp(v, "0")) {
                on = false;
            } else {
                error_setg(errp, "-o %s takes no value, or on or off, not '%s'", k, v);
                return false;
            }
        }
        if (!strcmp(k, "rw")) {
            on = !on;
        }
        if (g_hash_table_contains(given, opt->name)) {
            const char *cur = opt_str(o, opt->name);
            if (opt->arg ? strcmp(cur, v) != 0 : !on) {
                error_setg(errp, "-o %s contradicts --%s given as well", *p, opt->name);
                return false;
            }
            continue;
        }
        if (on) {
            g_hash_table_replace(o, g_strdup(opt->name), g_strdup(opt->arg ? v : ""));
        } else {
            g_hash_table_remove(o, opt->name);
        }
    }
    if (rest->len) {
        g_hash_table_replace(o, g_strdup("options"), g_string_free(g_steal_pointer(&rest),
                                                                    false));
    } else {
        g_hash_table_remove(o, "options");
    }
    return true;
}

static bool opt_flag(GHashTable *o, const char *name)
{
    return g_hash_table_contains(o, name);
}

/* --- the daemon --- */

typedef struct DaemonConfig {
    const BlockExportOptions *export;   /* NULL for serve */
    const char *socket_path;
    GArray *allowed_uids;               /* uid_t, or NULL */
    bool serve;
    bool foreground;
    const char *log_file;
    bool verbose;
} DaemonConfig;

static void report_to_parent(int fd, const char *msg)
{
    if (fd >= 0) {
        g_autofree char *line = g_strdup_printf("%s\n", msg);
        ssize_t r = write(fd, line, strlen(line));
        (void)r;
        close(fd);
    }
}

typedef struct SignalState {
    int fd;
    ControlServer *srv;
    bool terminating;
} SignalState;

static void signal_read(void *opaque)
{
    SignalState *s = opaque;
    struct signalfd_siginfo si;

    while (read(s->fd, &si, sizeof(si)) == sizeof(si)) {
        if (si.ssi_signo == SIGHUP) {
            log_reopen();
            log_info("log reopened (SIGHUP)");
        } else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            log_info("%s: unmounting every export and exiting", strsignal(si.ssi_signo));
            s->terminating = true;
            control_server_request_exit(s->srv);
        }
    }
}

/* Logs of daemons that did not exit cleanly stay in the runtime directory for inspection, the
 * newest CRASH_LOGS_KEPT of them: older ones go when a new daemon starts logging there. */
#define CRASH_LOGS_KEPT 8

typedef struct CrashLog {
    char *path;
    gint64 mtime;
} CrashLog;

static gint crash_log_newer_first(gconstpointer a, gconstpointer b)
{
    const CrashLog *x = a, *y = b;

    return x->mtime < y->mtime ? 1 : x->mtime > y->mtime ? -1 : strcmp(x->path, y->path);
}

/* True while a process pid exists (a zombie too: its log is not in the way yet). */
static bool process_exists(long pid)
{
    return kill(pid, 0) == 0 || errno == EPERM;
}

static void prune_crash_logs(const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    g_autoptr(GArray) logs = g_array_new(false, false, sizeof(CrashLog));
    const char *name;

    while (d && (name = g_dir_read_name(d))) {
        char *end;
        long pid = strtol(name, &end, 10);
        struct stat st;
        CrashLog l;

        if (end == name || strcmp(end, ".log") || pid <= 0 || pid > INT_MAX ||
            pid == getpid() || process_exists(pid)) {
            continue;
        }
        l.path = g_build_filename(dir, name, NULL);
        if (lstat(l.path, &st) < 0 || !S_ISREG(st.st_mode)) {
            g_free(l.path);
            continue;
        }
        l.mtime = (gint64)st.st_mtim.tv_sec * G_USEC_PER_SEC + st.st_mtim.tv_nsec / 1000;
        g_array_append_val(logs, l);
    }
    g_array_sort(logs, crash_log_newer_first);
    for (guint i = 0; i < logs->len; i++) {
        CrashLog *l = &g_array_index(logs, CrashLog, i);
        if (i >= CRASH_LOGS_KEPT) {
            unlink(l->path);
        }
        g_free(l->path);
    }
}

/* The caller's side of the fork: read the child's one-line report from FD until it closes.
 * Returns the caller's exit status: 0 once the child says the mount is live, else 1 with the
 * child's reason (or where its log is, when it died without one). */
static int daemon_await_report(const DaemonConfig *cfg, pid_t pid, int fd)
{
    char buf[4096];
    ssize_t n, len = 0;
    int status;

    while (len < (ssize_t)sizeof(buf) - 1 &&
           (n = read(fd, buf + len, sizeof(buf) - 1 - len)) != 0) {
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        len += n;
    }
    buf[len] = '\0';
    close(fd);
    g_strchomp(buf);
    if (strcmp(buf, "OK") == 0) {
        return 0;
    }
    waitpid(pid, &status, WNOHANG);
    if (len == 0) {
        g_autofree char *dir = control_runtime_dir(false, NULL);
        g_autofree char *where = cfg->log_file ? g_strdup(cfg->log_file) :
            access("/dev/log", W_OK) == 0 ? g_strdup("the system log") :
            g_strdup_printf("%s/%d.log", dir, (int)pid);
        return fail("the daemon exited before the mount was live; see %s", where);
    }
    fprintf(stderr, "blkfuse: %s\n", buf);
    return EXIT_FAILURE;
}

/* Fork the daemon off.  In the child, returns -1 with *REPORT_FD the pipe to report on; in
 * the caller, returns its exit status once the child has reported. */
static int daemon_fork(const DaemonConfig *cfg, int *report_fd)
{
    int p[2];
    pid_t pid;

    if (pipe2(p, O_CLOEXEC) < 0) {
        return fail("cannot create a pipe: %s", g_strerror(errno));
    }
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        return fail("cannot fork the daemon: %s", g_strerror(errno));
    }
    if (pid > 0) {
        close(p[1]);
        return daemon_await_report(cfg, pid, p[0]);
    }
    close(p[0]);
    *report_fd = p[1];
    setsid();
    /* Close every descriptor we inherited (but stdio until the mount is live, and the
     * pipe to the parent): a daemon holding its caller's pipes open would keep the caller
     * (a shell's $(...), a test runner) waiting for an EOF that never comes. */
    if (*report_fd > 3) {
        close_range(3, *report_fd - 1, 0);
    }
    close_range(*report_fd + 1, ~0U, 0);
    return -1;
}

/* Open the daemon's log: the --log-file, else (detached) syslog, else RUNTIME_DIR/PID.log,
 * returned in *FALLBACK_LOG for removal at a clean exit.  *LOG_FILE is what was opened (NULL:
 * stderr).  On failure, reports the reason and returns false. */
static bool daemon_open_log(const DaemonConfig *cfg, int report_fd, const char **log_file,
                            char **fallback_log)
{
    g_autoptr(GError) err = NULL;

    *log_file = cfg->log_file;
    log_set_verbose(cfg->verbose);
    if (!*log_file && !cfg->foreground) {
        if (access("/dev/log", W_OK) == 0) {
            *log_file = "syslog";
        } else {
            /* No syslog here: keep the log where 'blkfuse list' finds the daemon. */
            g_autofree char *dir = control_runtime_dir(true, NULL);
            *fallback_log = dir ? g_strdup_printf("%s/%d.log", dir, getpid()) : NULL;
            *log_file = *fallback_log;
            if (dir) {
                prune_crash_logs(dir);
            }
        }
    }
    if (!log_open(*log_file, &err)) {
        report_to_parent(report_fd, err->message);
        if (report_fd < 0) {
            fprintf(stderr, "blkfuse: %s\n", err->message);
        }
        return false;
    }
    return true;
}

/* Signals arrive through a signalfd in the main loop; block them (into MASK) before any
 * thread starts so every thread inherits the mask. */
static void daemon_block_signals(sigset_t *mask)
{
    sigemptyset(mask);
    sigaddset(mask, SIGTERM);
    sigaddset(mask, SIGINT);
    sigaddset(mask, SIGHUP);
    pthread_sigmask(SIG_BLOCK, mask, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* A loop device on our file may have to write back pages to free memory: the kernel must
     * not throttle us as if we were an ordinary writer, or reclaim can deadlock on our I/O. */
    if (prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) < 0) {
        log_debug("PR_SET_IO_FLUSHER: %s (loop devices under memory pressure may stall)",
                  g_strerror(errno));
    }
}

/* The mount is live: tell the caller, and let go of its stdio and working directory. */
static void daemon_detach(int report_fd, const char *log_file)
{
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    int errfd = log_file && strcmp(log_file, "syslog") != 0 ?
                open(log_file, O_WRONLY | O_APPEND | O_CLOEXEC) : -1;

    report_to_parent(report_fd, "OK");
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(errfd >= 0 ? errfd : null, STDERR_FILENO);   /* stray library messages */
        close(null);
    }
    if (errfd >= 0) {
        close(errfd);
    }
    if (chdir("/") < 0) {
        log_warning("chdir /: %s", g_strerror(errno));
    }
}

/* Start serving: the control socket, the signalfd in SIG and the first export, if any.
 * Returns the server, or NULL with ERRP set and nothing left behind but SIG's fd. */
static ControlServer *daemon_start(const DaemonConfig *cfg, AioContext *ctx,
                                   const sigset_t *mask, SignalState *sig, GError **errp)
{
    ControlServer *srv;
    BlockExport *exp;

    srv = control_server_new(cfg->socket_path, cfg->serve, cfg->allowed_uids, errp);
    if (!srv) {
        return NULL;
    }
    sig->srv = srv;
    sig->fd = signalfd(-1, mask, SFD_CLOEXEC | SFD_NONBLOCK);
    /* External, like the control connections: handled by the main loop, between requests. */
    aio_set_fd_handler_external(ctx, sig->fd, signal_read, NULL, sig);

    /* Signals wait until the first export is up (or has failed), even in the loops its opening
     * and closing paths run, top-level as they are here; clients are served from those loops
     * (list shows the export as opening). */
    aio_disable_external(ctx);
    exp = cfg->export ? control_server_add_export(srv, cfg->export, errp) : NULL;
    aio_enable_external(ctx);
    if (cfg->export && !exp) {
        control_server_free(srv);
        return NULL;
    }
    if (cfg->serve) {
        log_info("serving; control socket %s", control_server_path(srv));
    }
    return srv;
}

/* Run the daemon: in this process with --foreground, else in a forked child that reports to
 * the parent once the mount is live (or why it is not).  Returns the exit status. */
static int daemon_run(const DaemonConfig *cfg)
{
    g_autoptr(GError) err = NULL;
    int report_fd = -1;
    AioContext *ctx;
    ControlServer *srv;
    SignalState sig = { .fd = -1 };
    sigset_t mask;
    const char *log_file;                       /* NULL: stderr; "syslog"; or a file */
    g_autofree char *fallback_log = NULL;       /* RUNTIME_DIR/PID.log when there is no syslog */

    if (!cfg->foreground) {
        int ret = daemon_fork(cfg, &report_fd);
        if (ret >= 0) {
            return ret;
        }
    }
    if (!daemon_open_log(cfg, report_fd, &log_file, &fallback_log)) {
        return EXIT_FAILURE;
    }
    daemon_block_signals(&mask);

    ctx = aio_get_current();
    srv = daemon_start(cfg, ctx, &mask, &sig, &err);
    if (!srv) {
        if (sig.fd >= 0) {
            aio_set_fd_handler_external(ctx, sig.fd, NULL, NULL, NULL);
            close(sig.fd);
        }
        log_error("%s", err->message);
        if (report_fd >= 0) {
            report_to_parent(report_fd, err->message);
            if (fallback_log) {
                unlink(fallback_log);   /* the caller prints the error: a refusal leaves nothing */
            }
        } else if (cfg->log_file) {
            fprintf(stderr, "blkfuse: %s\n", err->message);
        }
        return EXIT_FAILURE;
    }
    if (report_fd >= 0) {
        daemon_detach(report_fd, log_file);
    }

    sd_notify_state("READY=1");         /* blkfuse.service: the socket is up (and the export) */
    while (!control_server_should_exit(srv)) {
        aio_poll(ctx, true);
    }
    sd_notify_state("STOPPING=1");
    blk_exp_close_all();
    control_server_free(srv);
    aio_set_fd_handler_external(ctx, sig.fd, NULL, NULL, NULL);
    close(sig.fd);
    log_info("exiting");
    if (fallback_log) {
        unlink(fallback_log);   /* a clean exit; after a crash the log stays for inspection */
    }
    return 0;
}

/* --- commands --- */

static bool parse_queues(const char *s, unsigned *out)
{
    char *end;
    unsigned long v;

    if (!s || !strcmp(s, "auto")) {
        *out = 0;               /* one per CPU, following the clients' CPUs */
        return true;
    }
    v = strtoul(s, &end, 10);
    if (*end || !*s || v < 1 || v > 64) {
        return false;
    }
    *out = v;
    return true;
}

/* Check the mount options of O and fill in what EO and BOPTS take from them beyond the plain
 * flags.  Returns -1 when they are usable, else the exit status of the usage error printed. */
static int mount_check_options(const CliCommand *c, GHashTable *o, BlockExportOptions *eo,
                               const DaemonConfig *cfg, GHashTable *bopts)
{
    g_autoptr(GError) err = NULL;
    BlockCacheMode cache_mode;

    if (!parse_queues(opt_str(o, "queues"), &eo->queues)) {
        return usage_error(c, "--queues needs auto or a number from 1 to 64, not '%s'",
                           opt_str(o, "queues"));
    }
    if (eo->transport && !blk_exp_transport_valid(eo->transport)) {
        return usage_error(c, "--transport must be auto, uring or dev, not '%s'", eo->transport);
    }
    if (opt_str(o, "passthrough") &&
        !fuse_passthrough_mode_parse(opt_str(o, "passthrough"), &eo->passthrough)) {
        return usage_error(c, "--passthrough must be auto, on or off, not '%s'",
                           opt_str(o, "passthrough"));
    }
    if (opt_str(o, "stats") && strcmp(opt_str(o, "stats"), "full") &&
        strcmp(opt_str(o, "stats"), "coarse")) {
        return usage_error(c, "--stats must be full or coarse, not '%s'", opt_str(o, "stats"));
    }
    eo->coarse_stats = opt_str(o, "stats") && !strcmp(opt_str(o, "stats"), "coarse");
    if (!block_cache_mode_parse(eo->cache, &cache_mode, NULL)) {
        return usage_error(c, "--cache must be writeback, writethrough, none or directsync, "
                           "not '%s'", eo->cache);
    }
    if (eo->format && !bdrv_find_format(eo->format)) {
        return usage_error(c, "unknown format '%s' (known: %s)", eo->format,
                           bdrv_format_list());
    }
    if (opt_str(o, "options") && !block_options_parse(bopts, opt_str(o, "options"), &err)) {
        return usage_error(c, "%s", err->message);
    }
    if (opt_str(o, "snapshot-name")) {
        g_hash_table_replace(bopts, g_strdup("snapshot-name"),
                             g_strdup(opt_str(o, "snapshot-name")));
    }
    if (eo->snapshot && eo->read_only) {
        return usage_error(c, "--snapshot and --read-only exclude each other");
    }
    if (opt_str(o, "changed")) {
        if (!eo->read_only) {
            return usage_error(c, "--changed needs --read-only");
        }
        g_hash_table_replace(bopts, g_strdup("changed"), g_strdup(opt_str(o, "changed")));
    }
    if (eo->id && !control_check_export_id(eo->id, &err)) {
        return usage_error(c, "--id: %s", err->message);
    }
    if (opt_str(o, "daemon") && (cfg->foreground || cfg->log_file || cfg->verbose)) {
        return usage_error(c, "--foreground, --log-file and --verbose belong to the daemon: "
                           "give them to 'blkfuse serve', not with --daemon");
    }
    return -1;
}

/* The control request that asks a running daemon for the mount of EO (options O). */
static json_t *mount_request(GHashTable *o, const BlockExportOptions *eo)
{
    json_t *req = json_object();
    g_autofree char *image = g_canonicalize_filename(eo->image, NULL);
    g_autofree char *mp = g_canonicalize_filename(eo->mountpoint, NULL);

    json_object_set_new(req, "cmd", json_string("mount"));
    /* The daemon runs elsewhere: paths go absolute; a protocol name goes as it is. */
    json_object_set_new(req, "image", json_util_string(
                            bdrv_find_protocol(eo->image)->protocol_prefix ? eo->image : image));
    json_object_set_new(req, "mountpoint", json_util_string(mp));
    if (eo->id) {
        json_object_set_new(req, "id", json_util_string(eo->id));
    }
    if (eo->format) {
        json_object_set_new(req, "format", json_util_string(eo->format));
    }
    if (opt_str(o, "options") || opt_str(o, "changed")) {
        /* --changed=BITMAP is the format option changed=BITMAP */
        g_autofree char *changed = opt_str(o, "changed") ?
            g_strdup_printf("changed=%s", opt_str(o, "changed")) : NULL;
        g_autofree char *all = g_strjoin(opt_str(o, "options") && changed ? "," : "",
                                         opt_str(o, "options") ? opt_str(o, "options") : "",
                                         changed ? changed : "", NULL);
        json_object_set_new(req, "options", json_util_string(all));
    }
    if (opt_str(o, "snapshot-name")) {
        json_object_set_new(req, "snapshot_name", json_util_string(opt_str(o, "snapshot-name")));
    }
    json_object_set_new(req, "read_only", json_boolean(eo->read_only));
    json_object_set_new(req, "growable", json_boolean(eo->growable));
    json_object_set_new(req, "allow_other", json_boolean(eo->allow_other));
    json_object_set_new(req, "snapshot", json_boolean(eo->snapshot));
    if (eo->allow_remote_backing) {
        json_object_set_new(req, "allow_remote_backing", json_true());
    }
    if (eo->cache) {
        json_object_set_new(req, "cache", json_util_string(eo->cache));
    }
    if (eo->queues) {
        json_object_set_new(req, "queues", json_integer(eo->queues));   /* absent: auto */
    }
    if (eo->transport) {
        json_object_set_new(req, "transport", json_util_string(eo->transport));
    }
    if (opt_str(o, "passthrough")) {
        json_object_set_new(req, "passthrough", json_util_string(opt_str(o, "passthrough")));
    }
    if (opt_str(o, "stats")) {
        json_object_set_new(req, "stats", json_util_string(opt_str(o, "stats")));
    }
    return req;
}

/* mount --daemon=SOCKET: the daemon at SOCKET does the mount.  Returns the exit status. */
static int mount_by_daemon(GHashTable *o, const BlockExportOptions *eo)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(json_t) req = mount_request(o, eo);
    g_autoptr(json_t) reply = control_call(opt_str(o, "daemon"), req, 60000, &err);

    if (!reply) {
        return fail("%s", err->message);
    }
    if (!json_util_get_bool(reply, "ok", false)) {
        return fail("%s", json_string_value(json_object_get(reply, "error")));
    }
    return 0;
}

static int cmd_mount(GHashTable *o, int argc, char **argv)
{
    const CliCommand *c = &commands[0];
    g_autoptr(GHashTable) bopts = block_options_new();
    BlockExportOptions eo = {
        .type = "fuse",
        .id = opt_str(o, "id"),
        .image = argv[0],
        .format = opt_str(o, "format"),
        .opts = bopts,
        .mountpoint = argv[1],
        .read_only = opt_flag(o, "read-only") || opt_flag(o, "snapshot-name"),
        .growable = opt_flag(o, "growable"),
        .allow_other = opt_flag(o, "allow-other"),
        .snapshot = opt_flag(o, "snapshot"),
        .cache = opt_str(o, "cache"),
        .transport = opt_str(o, "transport"),
        .allow_remote_backing = opt_flag(o, "allow-remote-backing"),
    };
    DaemonConfig cfg = {
        .export = &eo,
        .foreground = opt_flag(o, "foreground"),
        .log_file = opt_str(o, "log-file"),
        .verbose = opt_flag(o, "verbose"),
    };
    g_autofree char *log_abs = NULL;
    int ret = mount_check_options(c, o, &eo, &cfg, bopts);

    if (ret >= 0) {
        return ret;
    }
    if (opt_str(o, "daemon")) {
        return mount_by_daemon(o, &eo);
    }
    if (cfg.log_file) {
        log_abs = g_canonicalize_filename(cfg.log_file, NULL);
        cfg.log_file = log_abs;
    }
    return daemon_run(&cfg);
}

static int cmd_serve(GHashTable *o, int argc, char **argv)
{
    const CliCommand *c = find_command("serve");
    g_autofree char *log_abs = NULL;
    g_autofree char *sock_abs = NULL;
    g_autoptr(GArray) uids = g_array_new(false, false, sizeof(uid_t));
    g_autoptr(GError) err = NULL;
    DaemonConfig cfg = {
        .serve = true,
        .socket_path = opt_str(o, "socket"),
        .foreground = opt_flag(o, "foreground"),
        .log_file = opt_str(o, "log-file"),
        .verbose = opt_flag(o, "verbose"),
    };

    if (cfg.log_file) {
        log_abs = g_canonicalize_filename(cfg.log_file, NULL);
        cfg.log_file = log_abs;
    }
    if (cfg.socket_path) {
        sock_abs = g_canonicalize_filename(cfg.socket_path, NULL);
        cfg.socket_path = sock_abs;
    }
    if (opt_str(o, "allow-user")) {
        if (!control_parse_users(opt_str(o, "allow-user"), uids, &err)) {
            return usage_error(c, "--allow-user: %s", err->message);
        }
        if (!cfg.socket_path) {
            return usage_error(c, "--allow-user needs --socket PATH, in a directory the users "
                               "can reach (the runtime directory is private)");
        }
        cfg.allowed_uids = uids;
    }
    return daemon_run(&cfg);
}

/* Every export of every daemon in the runtime directory: an array of export objects (json_t *),
 * each borrowed from its daemon's reply in *REPLIES_OUT and given a "socket" member. */
static GPtrArray *collect_exports(GPtrArray **replies_out)
{
    g_autoptr(GPtrArray) socks = control_find_daemons();
    GPtrArray *found = g_ptr_array_new();
    GPtrArray *replies = g_ptr_array_new_with_free_func((GDestroyNotify)json_decref);

    for (guint i = 0; i < socks->len; i++) {
        g_autoptr(json_t) req = json_object();
        json_t *reply;
        json_t *exports;

        json_object_set_new(req, "cmd", json_string("list"));
        reply = control_call(socks->pdata[i], req, 10000, NULL);
        if (!reply) {
            continue;
        }
        g_ptr_array_add(replies, reply);
        exports = json_object_get(reply, "exports");
        for (guint j = 0; j < json_array_size(exports); j++) {
            json_t *exp = json_array_get(exports, j);
            json_object_set_new(exp, "socket", json_util_string(socks->pdata[i]));
            g_ptr_array_add(found, exp);
        }
    }
    *replies_out = replies;
    return found;
}

static json_t *find_export_by_mountpoint(GPtrArray *found, const char *mp)
{
    g_autofree char *real = realpath(mp, NULL);
    g_autofree char *canon = g_canonicalize_filename(mp, NULL);

    for (guint i = 0; i < found->len; i++) {
        json_t *exp = found->pdata[i];
        const char *emp = json_string_value(json_object_get(exp, "mountpoint"));
        if ((real && !g_strcmp0(emp, real)) || !g_strcmp0(emp, canon)) {
            return exp;
        }
    }
    return NULL;
}

/* Wait until process PID has exited, up to TIMEOUT_MS: 0 once it has (or never existed),
 * -ETIMEDOUT, or another -errno when it cannot be waited for.  The process is not our child (a
 * daemon detaches), so wait on a pidfd: it becomes readable when the process exits. */
static int wait_pid_exit(int pid, int timeout_ms)
{
    struct pollfd pfd = { .events = POLLIN };
    int64_t deadline = g_get_monotonic_time() + (int64_t)timeout_ms * 1000;
    int ret;

    pfd.fd = syscall(SYS_pidfd_open, pid, 0);
    if (pfd.fd < 0) {
        return errno == ESRCH ? 0 : -errno;
    }
    do {
        int64_t left = (deadline - g_get_monotonic_time()) / 1000;
        ret = poll(&pfd, 1, left > 0 ? (int)left : 0);
    } while (ret < 0 && errno == EINTR);
    ret = ret > 0 ? 0 : ret == 0 ? -ETIMEDOUT : -errno;
    close(pfd.fd);
    return ret;
}

static bool is_fuse_mount(const char *path)
{
    g_autofree char *fstype = mount_fstype_at(path);

    return fstype && g_str_has_prefix(fstype, "fuse");
}

static int cmd_unmount(GHashTable *o, int argc, char **argv)
{
    g_autoptr(GPtrArray) replies = NULL;
    g_autoptr(GPtrArray) found = collect_exports(&replies);
    json_t *exp = find_export_by_mountpoint(found, argv[0]);
    g_autoptr(json_t) req = json_object();
    g_autoptr(json_t) reply = NULL;
    g_autoptr(GError) err = NULL;
    g_autofree char *canon = g_canonicalize_filename(argv[0], NULL);
    int ret;
    int pid;

    if (!exp) {
        if (is_fuse_mount(canon)) {
            /* No daemon of ours answers for it (another user's, or its socket is gone). */
            const char *args[] = { "fusermount3", "-u", opt_flag(o, "force") ? "-z" : NULL,
                                   canon, NULL };
            int status;
            if (!opt_flag(o, "force")) {
                args[2] = canon;
                args[3] = NULL;
            }
            if (!g_spawn_sync(NULL, (char **)args, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL,
                              NULL, &status, &err) || !g_spawn_check_wait_status(status, NULL)) {
                return fail("%s: no blkfuse daemon found for it, and fusermount3 -u failed",
                            argv[0]);
            }
            fprintf(stderr, "blkfuse: %s: no control socket found; unmounted with "
                    "fusermount3\n", argv[0]);
            return 0;
        }
        return fail("%s: not a blkfuse mount (see 'blkfuse list')", argv[0]);
    }
    json_object_set_new(req, "cmd", json_string("unmount"));
    json_object_set_new(req, "mountpoint", json_incref(json_object_get(exp, "mountpoint")));
    json_object_set_new(req, "force", json_boolean(opt_flag(o, "force")));
    reply = control_call(json_string_value(json_object_get(exp, "socket")), req, 0, &err);
    if (!reply) {
        return fail("%s", err->message);
    }
    if (!json_util_get_bool(reply, "ok", false)) {
        return fail("%s", json_string_value(json_object_get(reply, "error")));
    }
    if (!json_util_get_bool(reply, "exiting", false)) {
        return 0;
    }
    /* The daemon flushed and closed the image; wait until it has exited too. */
    pid = json_util_get_int(reply, "pid", 0);
    ret = pid > 0 ? wait_pid_exit(pid, 60 * 1000) : 0;
    if (ret == -ETIMEDOUT) {
        return fail("%s: unmounted, but daemon %d has not exited after 60 s; see its log",
                    argv[0], pid);
    } else if (ret < 0) {
        return fail("%s: unmounted, but cannot wait for daemon %d to exit: %s", argv[0], pid,
                    g_strerror(-ret));
    }
    return 0;
}

static char *human_bytes(int64_t n)
{
    return format_size(n < 0 ? 0 : n);
}

/* The SINCE column: "YYYY-MM-DD HH:MM:SS" of the export's "since". */
static char *list_since(json_t *e)
{
    const char *since = json_string_value(json_object_get(e, "since"));
    char *s = g_strndup(since ? since : "", 19);

    if (s[0]) {
        s[10] = ' ';
    }
    return s;
}

/* The row of an export still opening: what is known, "opening" as its mode. */
static void list_row_opening(char **row, json_t *e)
{
    const char *id = json_string_value(json_object_get(e, "id"));
    const char *format = json_string_value(json_object_get(e, "format"));

    row[0] = g_strdup(id ? id : "-");
    row[1] = g_strdup_printf("%" G_GINT64_FORMAT, json_util_get_int(e, "pid", 0));
    row[2] = g_strdup(json_string_value(json_object_get(e, "image")));
    row[3] = g_strdup(format ? format : "-");
    row[4] = g_strdup(json_string_value(json_object_get(e, "mountpoint")));
    row[5] = g_strdup("opening");
    for (int i = 6; i < 10; i++) {
        row[i] = g_strdup("-");
    }
    row[10] = g_strdup(json_string_value(json_object_get(e, "owner")));
    row[11] = list_since(e);
}

/* The columns of export E in ROW. */
static void list_row(char **row, json_t *e)
{
    if (!g_strcmp0(json_string_value(json_object_get(e, "state")), "opening")) {
        list_row_opening(row, e);
        return;
    }
    row[0] = g_strdup(json_string_value(json_object_get(e, "id")));
    row[1] = g_strdup_printf("%" G_GINT64_FORMAT, json_util_get_int(e, "pid", 0));
    row[2] = g_strdup(json_string_value(json_object_get(e, "image")));
    row[3] = g_strdup(json_string_value(json_object_get(e, "format")));
    row[4] = g_strdup(json_string_value(json_object_get(e, "mountpoint")));
    row[5] = g_strdup_printf("%s%s%s%s", json_util_get_bool(e, "read_only", false) ?
                             "ro" : "rw",
                             json_util_get_bool(e, "growable", false) ? ",grow" : "",
                             json_util_get_bool(e, "snapshot", false) ? ",snap" : "",
                             json_util_get_bool(e, "passthrough", false) ? ",pt" : "");
    row[6] = g_strdup(json_string_value(json_object_get(e, "transport")));
    row[7] = g_strdup_printf("%" G_GINT64_FORMAT, json_util_get_int(e, "clients", 0));
    row[8] = human_bytes(json_util_get_int(e, "bytes_read", 0));
    row[9] = human_bytes(json_util_get_int(e, "bytes_written", 0));
    row[10] = g_strdup(json_string_value(json_object_get(e, "owner")));
    row[11] = list_since(e);
}

static int cmd_list(GHashTable *o, int argc, char **argv)
{
    g_autoptr(GPtrArray) replies = NULL;
    g_autoptr(GPtrArray) found = collect_exports(&replies);
    g_autoptr(GPtrArray) rows = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
    static const char *const heads[] = { "ID", "PID", "IMAGE", "FORMAT", "MOUNTPOINT", "MODE",
                                         "TRANSPORT", "CLIENTS", "READ", "WRITTEN", "OWNER",
                                         "SINCE" };
    enum { NCOL = G_N_ELEMENTS(heads) };
    int width[NCOL] = { 0 };

    if (opt_flag(o, "json")) {
        g_autoptr(json_t) arr = json_array();
        g_autofree char *text = NULL;
        for (guint i = 0; i < found->len; i++) {
            /* The export object is shared with its reply, which keeps its own reference. */
            json_array_append_new(arr, json_incref(found->pdata[i]));
        }
        text = json_dumps(arr, JSON_INDENT(2));
        printf("%s\n", text);
        return 0;
    }
    if (found->len == 0) {
        printf("no exports\n");
        return 0;
    }
    {
        char **h = g_new0(char *, NCOL + 1);       /* heads has no NULL at its end */
        for (int i = 0; i < NCOL; i++) {
            h[i] = g_strdup(heads[i]);
        }
        g_ptr_array_add(rows, h);
    }
    for (guint i = 0; i < found->len; i++) {
        json_t *e = found->pdata[i];
        char **row = g_new0(char *, NCOL + 1);
        list_row(row, e);
        g_ptr_array_add(rows, row);
    }
    for (guint r = 0; r < rows->len; r++) {
        char **row = rows->pdata[r];
        for (int i = 0; i < NCOL; i++) {
            width[i] = MAX(width[i], (int)strlen(row[i] ? row[i] : ""));
        }
    }
    for (guint r = 0; r < rows->len; r++) {
        char **row = rows->pdata[r];
        for (int i = 0; i < NCOL - 1; i++) {
            printf("%-*s  ", width[i], row[i] ? row[i] : "");
        }
        printf("%s\n", row[NCOL - 1] ? row[NCOL - 1] : "");
    }
    return 0;
}

static int cmd_stats(GHashTable *o, int argc, char **argv)
{
    g_autoptr(GPtrArray) replies = NULL;
    g_autoptr(GPtrArray) found = collect_exports(&replies);
    json_t *exp = find_export_by_mountpoint(found, argv[0]);
    const char *mode, *transport;
    json_t *stats;

    if (!exp) {
        return fail("%s: not a blkfuse mount (see 'blkfuse list')", argv[0]);
    }
    if (!g_strcmp0(json_string_value(json_object_get(exp, "state")), "opening")) {
        return fail("%s: still opening, no statistics yet (see 'blkfuse list')", argv[0]);
    }
    stats = json_object_get(exp, "stats");
    if (opt_flag(o, "json")) {
        g_autofree char *text = json_dumps(exp, JSON_INDENT(2));
        printf("%s\n", text);
        return 0;
    }
    transport = json_string_value(json_object_get(exp, "transport"));
    printf("export %s: %s on %s, transport %s, %" G_GINT64_FORMAT " clients, %" G_GINT64_FORMAT
           " in flight\n", json_string_value(json_object_get(exp, "id")),
           json_string_value(json_object_get(exp, "image")),
           json_string_value(json_object_get(exp, "mountpoint")), transport ? transport : "?",
           json_util_get_int(exp, "clients", 0), json_util_get_int(stats, "in_flight", 0));
    mode = json_string_value(json_object_get(exp, "passthrough_mode"));
    if (json_util_get_bool(exp, "passthrough", false)) {
        printf("passthrough: on (%s); reads and writes go from the kernel to the image and are "
               "not counted below\n", mode);
    } else {
        const char *why = json_string_value(json_object_get(exp, "passthrough_reason"));
        printf("passthrough: off (%s%s%s)\n", mode, why ? ": " : "", why ? why : "");
    }
    print_queues(json_object_get(exp, "affinity"));
    printf("%-14s %12s %12s %8s %14s %14s\n", "kind", "ops", "bytes", "failed",
           "avg latency us", "max latency us");
    for (int i = 0; i < BLK_STAT__MAX; i++) {
        json_t *k = json_object_get(stats, blk_stat_names[i]);
        printf("%-14s %12" G_GINT64_FORMAT " %12" G_GINT64_FORMAT " %8" G_GINT64_FORMAT
               " %14.1f %14.1f\n", blk_stat_names[i], json_util_get_int(k, "ops", 0),
               json_util_get_int(k, "bytes", 0), json_util_get_int(k, "failed", 0),
               json_util_get_double(k, "avg_latency_us", 0),
               json_util_get_double(k, "max_latency_us", 0));
    }
    return 0;
}

/* The qcow2-style facts the driver reports (version, cluster size, flags) into LAYER. */
static void info_add_driver_info(json_t *layer, BlockDriverState *p)
{
    BlockDriverInfo bdi = { 0 };

    if (!p->drv->bdrv_get_info || p->drv->bdrv_get_info(p, &bdi) < 0) {
        return;
    }
    if (bdi.version) {
        json_object_set_new(layer, "version", json_integer(bdi.version));
    }
    if (bdi.cluster_size) {
        json_object_set_new(layer, "cluster_size", json_integer(bdi.cluster_size));
    }
    if (bdi.refcount_bits) {
        json_object_set_new(layer, "refcount_bits", json_integer(bdi.refcount_bits));
    }
    json_object_set_new(layer, "extended_l2", json_boolean(bdi.extended_l2));
    json_object_set_new(layer, "lazy_refcounts", json_boolean(bdi.lazy_refcounts));
    if (bdi.compression_type) {
        json_object_set_new(layer, "compression_type", json_util_string(bdi.compression_type));
    }
    json_object_set_new(layer, "dirty", json_boolean(bdi.dirty));
    json_object_set_new(layer, "corrupt", json_boolean(bdi.corrupt));
    g_free(bdi.extra);
}

/* The internal snapshots of P, if its driver lists them, as LAYER's "snapshots". */
static void info_add_snapshots(json_t *layer, BlockDriverState *p)
{
    g_autoptr(GPtrArray) snaps = NULL;
    json_t *arr;

    if (!p->drv->bdrv_snapshot_list || p->drv->bdrv_snapshot_list(p, &snaps) < 0 || !snaps) {
        return;
    }
    arr = json_array();
    for (guint i = 0; i < snaps->len; i++) {
        BlockSnapshotInfo *sn = snaps->pdata[i];
        json_t *s = json_object();
        json_object_set_new(s, "id", json_util_string(sn->id));
        json_object_set_new(s, "name", json_util_string(sn->name));
        json_object_set_new(s, "disk_size", json_integer(sn->disk_size));
        json_object_set_new(s, "vm_state_size", json_integer(sn->vm_state_size));
        json_object_set_new(s, "date_sec", json_integer(sn->date_sec));
        json_array_append_new(arr, s);
        block_snapshot_info_free(sn);
    }
    g_ptr_array_set_free_func(snaps, NULL);
    json_object_set_new(layer, "snapshots", arr);
}

/* The persistent dirty bitmaps of P as LAYER's "bitmaps", with qemu-img info's members and
 * flag names. */
static void info_add_bitmaps(json_t *layer, BlockDriverState *p)
{
    g_autoptr(GPtrArray) bitmaps = NULL;
    json_t *arr;

    if (!p->drv->bdrv_bitmap_list || p->drv->bdrv_bitmap_list(p, &bitmaps) < 0 ||
        !bitmaps->len) {
        return;
    }
    arr = json_array();
    for (guint i = 0; i < bitmaps->len; i++) {
        BlockBitmapInfo *bm = bitmaps->pdata[i];
        json_t *b = json_object();
        json_t *bm_flags = json_array();
        if (bm->in_use) {
            json_array_append_new(bm_flags, json_string("in-use"));
        }
        if (bm->enabled) {
            json_array_append_new(bm_flags, json_string("auto"));
        }
        json_object_set_new(b, "flags", bm_flags);
        json_object_set_new(b, "name", json_util_string(bm->name));
        json_object_set_new(b, "granularity", json_integer(bm->granularity));
        json_array_append_new(arr, b);
    }
    json_object_set_new(layer, "bitmaps", arr);
}

/* One layer of the backing chain as 'blkfuse info --json' shows it. */
static json_t *info_layer(BlockDriverState *p)
{
    json_t *layer = json_object();
    BlockDriverState *file = p->file ? p->file->bs : p;
    json_t *remote = control_describe_protocol(p);

    json_object_set_new(layer, "filename", json_util_string(file->filename));
    if (remote) {
        json_object_set_new(layer, "remote", remote);
    }
    json_object_set_new(layer, "format", json_util_string(p->drv->format_name));
    json_object_set_new(layer, "virtual_size", json_integer(bdrv_getlength(p)));
    json_object_set_new(layer, "disk_size", json_integer(bdrv_get_allocated_file_size(p)));
    info_add_driver_info(layer, p);
    if (p->backing_file) {
        json_object_set_new(layer, "backing_file", json_util_string(p->backing_file));
    }
    if (p->backing_format) {
        json_object_set_new(layer, "backing_format", json_util_string(p->backing_format));
    }
    info_add_snapshots(layer, p);
    info_add_bitmaps(layer, p);
    return layer;
}

/* The "bitmaps:" section in the layout of qemu-img info. */
static void info_print_bitmaps(json_t *bitmaps)
{
    printf("bitmaps:\n");
    for (guint j = 0; j < json_array_size(bitmaps); j++) {
        json_t *b = json_array_get(bitmaps, j);
        json_t *bm_flags = json_object_get(b, "flags");
        printf("    [%u]:\n        flags:\n", j);
        for (guint k = 0; k < json_array_size(bm_flags); k++) {
            printf("            [%u]: %s\n", k, json_string_value(json_array_get(bm_flags, k)));
        }
        printf("        name: %s\n        granularity: %" G_GINT64_FORMAT "\n",
               json_string_value(json_object_get(b, "name")),
               json_util_get_int(b, "granularity", 0));
    }
}

/* The server and connections of a remote (nbd:, rbd:) layer. */
static void info_print_remote(json_t *r)
{
    if (json_string_value(json_object_get(r, "server"))) {
        printf("server: %s\n", json_string_value(json_object_get(r, "server")));
    }
    if (json_object_get(r, "connections")) {
        printf("connections: %" G_GINT64_FORMAT "\n", json_util_get_int(r, "connections", 0));
    }
}

static void info_print_snapshots(json_t *snaps)
{
    printf("snapshots:\n  %-6s %-20s %12s\n", "ID", "NAME", "DISK SIZE");
    for (guint j = 0; j < json_array_size(snaps); j++) {
        json_t *s = json_array_get(snaps, j);
        g_autofree char *sz = human_bytes(json_util_get_int(s, "disk_size", 0));
        printf("  %-6s %-20s %12s\n", json_string_value(json_object_get(s, "id")),
               json_string_value(json_object_get(s, "name")), sz);
    }
}

/* Layer I of the chain (0 the top image) as text, in the manner of qemu-img info. */
static void info_print_layer(json_t *l, guint i)
{
    g_autofree char *vs = human_bytes(json_util_get_int(l, "virtual_size", 0));
    g_autofree char *ds = human_bytes(json_util_get_int(l, "disk_size", 0));
    json_t *snaps = json_object_get(l, "snapshots");
    const char *compression = json_string_value(json_object_get(l, "compression_type"));
    const char *backing_file = json_string_value(json_object_get(l, "backing_file"));
    const char *backing_format = json_string_value(json_object_get(l, "backing_format"));
    json_t *bitmaps = json_object_get(l, "bitmaps");

    if (i > 0) {
        printf("\nbacking file %u:\n", i);
    }
    printf("image: %s\nformat: %s\nvirtual size: %s (%" G_GINT64_FORMAT " bytes)\n"
           "disk size: %s\n", json_string_value(json_object_get(l, "filename")),
           json_string_value(json_object_get(l, "format")), vs,
           json_util_get_int(l, "virtual_size", 0), ds);
    if (json_object_get(l, "cluster_size")) {
        printf("cluster size: %" G_GINT64_FORMAT "\n", json_util_get_int(l, "cluster_size", 0));
    }
    if (json_object_get(l, "version")) {
        printf("version: %" G_GINT64_FORMAT "\nrefcount bits: %" G_GINT64_FORMAT "\n"
               "extended l2: %s\nlazy refcounts: %s\ncompression type: %s\n"
               "dirty: %s\ncorrupt: %s\n", json_util_get_int(l, "version", 0),
               json_util_get_int(l, "refcount_bits", 0),
               json_util_get_bool(l, "extended_l2", false) ? "yes" : "no",
               json_util_get_bool(l, "lazy_refcounts", false) ? "yes" : "no",
               compression ? compression : "zlib",
               json_util_get_bool(l, "dirty", false) ? "yes" : "no",
               json_util_get_bool(l, "corrupt", false) ? "yes" : "no");
    }
    if (json_array_size(bitmaps) > 0) {
        info_print_bitmaps(bitmaps);
    }
    if (json_object_get(l, "remote")) {
        info_print_remote(json_object_get(l, "remote"));
    }
    if (backing_file) {
        printf("backing file: %s%s%s%s\n", backing_file, backing_format ? " (format " : "",
               backing_format ? backing_format : "", backing_format ? ")" : "");
    }
    if (json_array_size(snaps) > 0) {
        info_print_snapshots(snaps);
    }
}

static int cmd_info(GHashTable *o, int argc, char **argv)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(json_t) chain = json_array();
    int flags = BDRV_O_NO_LOCK |
                (opt_flag(o, "allow-remote-backing") ? BDRV_O_ALLOW_REMOTE_BACKING : 0);
    BlockDriverState *bs = bdrv_open(argv[0], opt_str(o, "format"), NULL, flags, &err);

    if (!bs && g_error_matches(err, BLK_ERROR, EREMOTE)) {
        /* Show what the image is, without the backing file it may not open. */
        fprintf(stderr, "blkfuse: warning: %s\n", err->message);
        g_clear_error(&err);
        bs = bdrv_open(argv[0], opt_str(o, "format"), NULL, flags | BDRV_O_NO_BACKING, &err);
    }
    if (!bs) {
        return fail("%s", err->message);
    }
    for (BlockDriverState *p = bs; p; p = p->backing ? p->backing->bs : NULL) {
        json_array_append_new(chain, info_layer(p));
    }
    bdrv_unref(bs);

    if (opt_flag(o, "json")) {
        g_autofree char *text = NULL;
        /* The top layer's members plus the whole chain: a shallow copy, as the chain holds
         * the top layer itself. */
        g_autoptr(json_t) top = json_copy(json_array_get(chain, 0));

        json_object_set_new(top, "backing_chain", json_incref(chain));
        text = json_dumps(top, JSON_INDENT(2));
        printf("%s\n", text);
        return 0;
    }
    for (guint i = 0; i < json_array_size(chain); i++) {
        info_print_layer(json_array_get(chain, i), i);
    }
    return 0;
}

/* --- progress (-p) --- */

/* Progress of the command's long operation on stderr, as qemu-img -p prints it: only when -p
 * was given and stderr is a terminal. */
typedef struct CliProgress {
    bool active;
    double shown;
} CliProgress;

static CliProgress cli_progress;

static void progress_print(void *opaque, double pct)
{
    CliProgress *p = opaque;

    if (pct == p->shown || (pct < 100.0 && pct - p->shown < 0.01)) {
        return;
    }
    p->shown = pct;
    fprintf(stderr, "\r    (%.2f/100%%)", pct);
}

static void progress_start(GHashTable *o)
{
    if (!opt_flag(o, "progress") || !isatty(STDERR_FILENO)) {
        return;
    }
    cli_progress = (CliProgress) { .active = true, .shown = -1.0 };
    block_progress_set(progress_print, &cli_progress);
    progress_print(&cli_progress, 0.0);
}

/* Clear the progress line for a line of other output on stderr. */
static void progress_clear_line(void)
{
    if (cli_progress.active) {
        fprintf(stderr, "\r%20s\r", "");
    }
}

static void progress_end(bool complete)
{
    if (!cli_progress.active) {
        return;
    }
    if (complete) {
        progress_print(&cli_progress, 100.0);
    }
    fprintf(stderr, "\n");
    block_progress_set(NULL, NULL);
    cli_progress.active = false;
}

static int cmd_create(GHashTable *o, int argc, char **argv)
{
    const CliCommand *c = &commands[5];
    g_autoptr(GHashTable) bopts = block_options_new();
    g_autoptr(GError) err = NULL;
    uint64_t size = 0;

    if (argc > 1 && !parse_size(argv[1], &size, &err)) {
        return usage_error(c, "%s", err->message);
    }
    if (argc < 2 && !opt_str(o, "backing")) {
        return usage_error(c, "a SIZE is needed when there is no backing file");
    }
    if (opt_str(o, "backing-format") && !opt_str(o, "backing")) {
        return usage_error(c, "--backing-format needs --backing");
    }
    if (opt_str(o, "backing") && !bdrv_backing_name_is_plain(opt_str(o, "backing")) &&
        !opt_flag(o, "allow-remote-backing")) {
        return usage_error(c, "--backing '%s' is not a local path (a protocol or json: name): "
                           "give --allow-remote-backing too if that is what you mean (opening "
                           "the image will need it as well; a local file name with a colon can "
                           "be written ./NAME)", opt_str(o, "backing"));
    }
    if (opt_str(o, "options") && !block_options_parse(bopts, opt_str(o, "options"), &err)) {
        return usage_error(c, "%s", err->message);
    }
    progress_start(o);
    if (!bdrv_create(argv[0], opt_str(o, "format") ? opt_str(o, "format") : "raw", size,
                     opt_str(o, "backing"), opt_str(o, "backing-format"), bopts, &err)) {
        progress_end(false);
        return fail("%s", err->message);
    }
    progress_end(true);
    return 0;
}

/* --- check --- */

/* Exit status of 'blkfuse check', as qemu-img check's. */
enum {
    CHECK_CLEAN = 0,            /* no corruption, no leak */
    CHECK_NOT_COMPLETED = 1,    /* the check failed (or the image could not be opened) */
    CHECK_CORRUPTIONS = 2,      /* corruptions are left in the image */
    CHECK_LEAKS = 3,            /* leaked clusters only */
    CHECK_UNSUPPORTED = 63,     /* the format cannot be checked (raw) */
};

static void check_report_line(void *opaque, const char *line)
{
    progress_clear_line();
    fprintf(stderr, "%s\n", line);
}

static void check_print_human(const BdrvCheckResult *r)
{
    if (!r->corruptions && !r->leaks && !r->check_errors) {
        printf("No errors were found on the image.\n");
    }
    if (r->corruptions) {
        printf("\n%" G_GINT64_FORMAT " errors were found on the image.\nData may be corrupted, "
               "or further writes to the image may corrupt it.\n", r->corruptions);
    }
    if (r->leaks) {
        printf("\n%" G_GINT64_FORMAT " leaked clusters were found on the image.\nThis means "
               "waste of disk space, but no harm to data.\n", r->leaks);
    }
    if (r->check_errors) {
        printf("\n%" G_GINT64_FORMAT " internal errors have occurred during the check.\n",
               r->check_errors);
    }
    if (r->total_clusters && r->allocated_clusters) {
        printf("%" G_GINT64_FORMAT "/%" G_GINT64_FORMAT " = %0.2f%% allocated, %0.2f%% "
               "fragmented, %0.2f%% compressed clusters\n", r->allocated_clusters,
               r->total_clusters, r->allocated_clusters * 100.0 / r->total_clusters,
               r->fragmented_clusters * 100.0 / r->allocated_clusters,
               r->compressed_clusters * 100.0 / r->allocated_clusters);
    }
    if (r->image_end_offset) {
        printf("Image end offset: %" G_GINT64_FORMAT "\n", r->image_end_offset);
    }
}

/* qemu-img's ImageCheck object: counters that are 0 are left out, check-errors never. */
static void check_print_json(const BdrvCheckResult *r, const char *filename,
                             const char *format)
{
    g_autoptr(json_t) j = json_object();
    g_autofree char *text = NULL;
    const struct { const char *key; int64_t value; } counters[] = {
        { "image-end-offset", r->image_end_offset },
        { "total-clusters", r->total_clusters },
        { "corruptions", r->corruptions },
        { "leaks", r->leaks },
        { "corruptions-fixed", r->corruptions_fixed },
        { "leaks-fixed", r->leaks_fixed },
        { "allocated-clusters", r->allocated_clusters },
        { "fragmented-clusters", r->fragmented_clusters },
        { "compressed-clusters", r->compressed_clusters },
    };

    json_object_set_new(j, "filename", json_util_string(filename));
    json_object_set_new(j, "format", json_util_string(format));
    json_object_set_new(j, "check-errors", json_integer(r->check_errors));
    for (size_t i = 0; i < G_N_ELEMENTS(counters); i++) {
        if (counters[i].value) {
            json_object_set_new(j, counters[i].key, json_integer(counters[i].value));
        }
    }
    text = json_dumps(j, JSON_INDENT(2));
    printf("%s\n", text);
}

/* Check BS with FIX into *RES; after a repair, check the image again (as qemu-img does) and
 * keep what the repair fixed in *RES.  Returns 0 or -errno. */
static int check_and_repair(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix,
                            bool json)
{
    BdrvCheckResult again = { .report = check_report_line };
    int ret;

    block_progress_range(0, fix ? 50 : 100);        /* a repair is checked again */
    ret = bdrv_check(bs, res, fix);
    if (ret != 0 || (!res->corruptions_fixed && !res->leaks_fixed)) {
        return ret;
    }
    block_progress_range(50, 100);
    if (!json) {
        progress_clear_line();
        printf("The following inconsistencies were found and repaired:\n\n"
               "    %" G_GINT64_FORMAT " leaked clusters\n"
               "    %" G_GINT64_FORMAT " corruptions\n\n"
               "Double checking the fixed image now...\n", res->leaks_fixed,
               res->corruptions_fixed);
        fflush(stdout);
    }
    ret = bdrv_check(bs, &again, 0);
    again.leaks_fixed = res->leaks_fixed;
    again.corruptions_fixed = res->corruptions_fixed;
    *res = again;
    return ret;
}

/*
 * blkfuse check [-r leaks|all] [--output=human|json] [-f FORMAT] IMAGE: qemu-img check's
 * behaviour, output and exit status.  Findings go to stderr one per line as they are found,
 * the summary to stdout.  A repair that changed anything is followed by a second, read-only
 * pass whose findings are the ones reported (with the repaired counts of the first).
 */
static int cmd_check(GHashTable *o, int argc, char **argv)
{
    const CliCommand *c = NULL;
    const char *repair = opt_str(o, "repair");
    const char *output = opt_str(o, "output") ? opt_str(o, "output") : "human";
    const char *format = opt_str(o, "format");
    bool json = !strcmp(output, "json");
    g_autoptr(GError) err = NULL;
    BdrvCheckResult res = { .report = check_report_line };
    BdrvCheckMode fix = 0;
    BlockDriverState *bs;
    int ret;

    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        if (commands[i].run == cmd_check) {
            c = &commands[i];
        }
    }
    if (repair && !strcmp(repair, "leaks")) {
        fix = BDRV_FIX_LEAKS;
    } else if (repair && !strcmp(repair, "all")) {
        fix = BDRV_FIX_LEAKS | BDRV_FIX_ERRORS;
    } else if (repair) {
        return usage_error(c, "--repair must be leaks or all, not '%s'", repair);
    }
    if (!json && strcmp(output, "human")) {
        return usage_error(c, "--output must be human or json, not '%s'", output);
    }
    if (format && !bdrv_find_format(format)) {
        return usage_error(c, "unknown format '%s' (known: %s)", format, bdrv_format_list());
    }

    /* Shared lock to check (no writer may have it open), exclusive to repair; the backing
     * chain is not needed. */
    bs = bdrv_open(argv[0], format, NULL, BDRV_O_CHECK | BDRV_O_NO_BACKING |
                   (fix ? BDRV_O_RDWR : 0), &err);
    if (!bs) {
        fail("%s", err->message);
        return CHECK_NOT_COMPLETED;
    }
    if (!bs->drv->bdrv_co_check) {
        fprintf(stderr, "blkfuse: %s: the %s format does not support checks\n", argv[0],
                bs->drv->format_name);
        bdrv_unref(bs);
        return CHECK_UNSUPPORTED;
    }
    progress_start(o);
    ret = check_and_repair(bs, &res, fix, json);
    progress_end(ret == 0);
    if (ret == 0) {
        if (json) {
            check_print_json(&res, argv[0], bs->drv->format_name);
        } else {
            check_print_human(&res);
        }
    }
    bdrv_unref(bs);
    fflush(stdout);
    if (ret < 0 || res.check_errors) {
        if (ret < 0) {
            fail("%s: check failed: %s", argv[0], g_strerror(-ret));
        } else {
            fail("%s: check failed", argv[0]);
        }
        return CHECK_NOT_COMPLETED;
    }
    return res.corruptions ? CHECK_CORRUPTIONS : res.leaks ? CHECK_LEAKS : CHECK_CLEAN;
}

/* One line: the version and the optional features built in (configure's summary). */
static void print_version(void)
{
    static const char *const features[] = {
#ifdef CONFIG_LIBURING
        "io_uring",
#endif
#ifdef CONFIG_LIBNBD
        "nbd",
#endif
#ifdef CONFIG_LIBRBD
        "rbd",
#endif
#ifdef CONFIG_ZLIB
        "zlib",
#endif
#ifdef CONFIG_ZSTD
        "zstd",
#endif
#ifdef CONFIG_SANITIZERS
        "sanitizers",
#endif
        NULL,
    };
    g_autofree char *list = g_strjoinv(", ", (char **)features);

    printf("blkfuse %s (features: %s)\n", BLKFUSE_VERSION, *list ? list : "none");
}

/* "blkfuse mount" with its options as parsed: c's own options taken out of -o first. */
static int run_mount(GHashTable *o, int argc, char **argv)
{
    const CliCommand *c = find_command("mount");
    g_autoptr(GError) err = NULL;

    if (!mount_options_from_o(c, o, &err)) {
        return usage_error(c, "%s", err->message);
    }
    return cmd_mount(o, argc, argv);
}

static int cmd_bitmap(GHashTable *o, int argc, char **argv)
{
    static const struct {
        const char *opt;
        BdrvBitmapAction action;
    } order[] = {   /* the order the actions are done in */
        { "add", BDRV_BITMAP_ADD }, { "clear", BDRV_BITMAP_CLEAR },
        { "enable", BDRV_BITMAP_ENABLE }, { "disable", BDRV_BITMAP_DISABLE },
        { "remove", BDRV_BITMAP_REMOVE },
    };
    const CliCommand *c = find_command("bitmap");
    const char *format = opt_str(o, "format");
    const char *gran = opt_str(o, "granularity");
    g_autoptr(GError) err = NULL;
    BdrvBitmapEdit edits[G_N_ELEMENTS(order)];
    uint64_t granularity = 0;
    BlockDriverState *bs;
    int n = 0, ret;

    for (size_t i = 0; i < G_N_ELEMENTS(order); i++) {
        if (opt_flag(o, order[i].opt)) {
            edits[n++] = (BdrvBitmapEdit){ .action = order[i].action, .name = argv[1] };
        }
    }
    if (n == 0) {
        return usage_error(c, "need at least one of --add, --remove, --clear, --enable, "
                           "--disable");
    }
    if (opt_flag(o, "enable") && opt_flag(o, "disable")) {
        return usage_error(c, "--enable and --disable exclude each other");
    }
    if (gran && !opt_flag(o, "add")) {
        return usage_error(c, "--granularity only goes with --add");
    }
    if (gran && (!parse_size(gran, &granularity, &err) || granularity == 0)) {
        return usage_error(c, "invalid granularity '%s'", gran);
    }
    edits[0].granularity = granularity;     /* --add comes first */
    if (format && !bdrv_find_format(format)) {
        return usage_error(c, "unknown format '%s' (known: %s)", format, bdrv_format_list());
    }
    /* exclusive: no reader or writer may have the image open; no backing file needed */
    bs = bdrv_open(argv[0], format, NULL, BDRV_O_RDWR | BDRV_O_NO_BACKING, &err);
    if (!bs) {
        return fail("%s", err->message);
    }
    if (!bs->drv->bdrv_bitmap_edit) {
        g_autofree char *fmt = g_strdup(bs->drv->format_name);
        bdrv_unref(bs);
        return fail("%s: the %s format has no persistent bitmaps (qcow2 has)", argv[0], fmt);
    }
    ret = bs->drv->bdrv_bitmap_edit(bs, edits, n, &err);
    bdrv_unref(bs);
    if (ret < 0) {
        return fail("%s", err->message);
    }
    return 0;
}

static int cmd_map(GHashTable *o, int argc, char **argv)
{
    const CliCommand *c = find_command("map");
    const char *name = opt_str(o, "changed");
    const char *output = opt_str(o, "output") ? opt_str(o, "output") : "human";
    const char *format = opt_str(o, "format");
    bool json = !strcmp(output, "json");
    g_autoptr(GError) err = NULL;
    g_autoptr(GArray) ranges = NULL;
    BlockDriverState *bs;
    int ret;

    if (!name) {
        return usage_error(c, "--changed=BITMAP is needed");
    }
    if (!json && strcmp(output, "human")) {
        return usage_error(c, "--output must be human or json, not '%s'", output);
    }
    if (format && !bdrv_find_format(format)) {
        return usage_error(c, "unknown format '%s' (known: %s)", format, bdrv_format_list());
    }
    /* shared lock: a writer may not have the image open (its bitmaps would be in use) */
    bs = bdrv_open(argv[0], format, NULL, BDRV_O_NO_BACKING, &err);
    if (!bs) {
        return fail("%s", err->message);
    }
    if (!bs->drv->bdrv_bitmap_ranges) {
        g_autofree char *fmt = g_strdup(bs->drv->format_name);
        bdrv_unref(bs);
        return fail("%s: the %s format has no persistent bitmaps (qcow2 has)", argv[0], fmt);
    }
    ret = bs->drv->bdrv_bitmap_ranges(bs, name, &ranges, &err);
    bdrv_unref(bs);
    if (ret < 0) {
        return fail("%s", err->message);
    }
    if (json) {
        g_autoptr(json_t) arr = json_array();
        g_autofree char *text = NULL;

        for (guint i = 0; i < ranges->len; i++) {
            const uint64_t *r = &g_array_index(ranges, uint64_t, 2 * i);
            json_t *e = json_object();
            json_object_set_new(e, "start", json_integer(r[0]));
            json_object_set_new(e, "length", json_integer(r[1]));
            json_array_append_new(arr, e);
        }
        text = json_dumps(arr, JSON_INDENT(2));
        printf("%s\n", text);
        return 0;
    }
    for (guint i = 0; i < ranges->len; i++) {
        const uint64_t *r = &g_array_index(ranges, uint64_t, 2 * i);
        printf("%" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT "\n", r[0], r[1]);
    }
    return 0;
}

#define COPY_CHUNK      (1024 * 1024)
#define COPY_BLOCK      4096

/* Write buf (len bytes, read from offset off) to fd at off; with sparse, only the COPY_BLOCK
 * blocks that are not all zeros.  Returns 0 or -errno. */
static int copy_out(int fd, const uint8_t *buf, size_t len, uint64_t off, bool sparse)
{
    static const uint8_t zeros[COPY_BLOCK];
    size_t start = 0;

    while (start < len) {
        size_t end = start;
        if (sparse) {
            while (start < len && !memcmp(buf + start, zeros, MIN(COPY_BLOCK, len - start))) {
                start += MIN(COPY_BLOCK, len - start);
            }
            end = start;
            while (end < len && memcmp(buf + end, zeros, MIN(COPY_BLOCK, len - end))) {
                end += MIN(COPY_BLOCK, len - end);
            }
        } else {
            end = len;
        }
        while (start < end) {
            ssize_t n = pwrite(fd, buf + start, end - start, off + start);
            if (n < 0 && errno == EINTR) {
                continue;
            } else if (n < 0) {
                return -errno;
            }
            start += n;
        }
    }
    return 0;
}

/* One copy-ranges run: SOURCE (in) to DEST (out). */
typedef struct CopyRanges {
    const char *src, *dst;
    int in, out;
    bool sparse;
    uint8_t *buf;               /* COPY_CHUNK bytes */
    uint64_t data_end;          /* SOURCE is data from where SEEK_DATA found it up to here */
    bool seek_data;             /* SOURCE answers SEEK_DATA (else --sparse reads everything) */
} CopyRanges;

/* Parse LINE, "OFFSET LENGTH" in bytes, into *off and *len; false if it is not that, or the
 * range ends past INT64_MAX. */
static bool copy_parse_range(const char *line, uint64_t *off, uint64_t *len)
{
    char *end;

    *off = g_ascii_strtoull(line, &end, 10);
    if (end == line || !g_ascii_isspace(*end)) {
        return false;
    }
    *len = g_ascii_strtoull(end, &end, 10);
    return !*end && *off <= INT64_MAX && *len <= INT64_MAX - *off;
}

/* With --sparse, holes of SOURCE read as zeros, which --sparse leaves unwritten: skip them
 * without reading them.  Moves *off (shortening *len) to the next data of SOURCE in the range
 * and returns how many bytes from there are data, or 0 when the rest of the range is a hole.
 * Without --sparse, or where SEEK_DATA does not work, returns *len. */
static uint64_t copy_skip_hole(CopyRanges *cr, uint64_t *off, uint64_t *len)
{
    if (!cr->sparse || !cr->seek_data) {
        return *len;
    }
    if (*off >= cr->data_end) {
        off_t d = lseek(cr->in, *off, SEEK_DATA);
        if (d < 0 && errno == ENXIO) {
            return 0;                           /* only a hole left */
        } else if (d < 0) {
            cr->seek_data = false;              /* not supported: read everything */
            return *len;
        }
        if ((uint64_t)d >= *off + *len) {
            return 0;
        }
        *len -= d - *off;
        *off = d;
        d = lseek(cr->in, *off, SEEK_HOLE);
        cr->data_end = d < 0 ? UINT64_MAX : (uint64_t)d;
    }
    return MIN(*len, cr->data_end - *off);
}

/* Copy LEN bytes at OFF, the range on line LINENO (LINE) of standard input.  Returns the exit
 * status: 0, or 1 after saying what failed. */
static int copy_range(CopyRanges *cr, uint64_t off, uint64_t len, unsigned lineno,
                      const char *line)
{
    while (len > 0) {
        uint64_t want = MIN(copy_skip_hole(cr, &off, &len), COPY_CHUNK);
        ssize_t n;
        int err;

        if (want == 0) {
            break;
        }
        n = pread(cr->in, cr->buf, want, off);
        if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0) {
            return fail("%s: read of %" G_GUINT64_FORMAT " bytes at %" G_GUINT64_FORMAT ": %s",
                        cr->src, want, off, g_strerror(errno));
        } else if (n == 0) {
            return fail("%s ends at %" G_GUINT64_FORMAT ", inside the range on line %u of "
                        "standard input ('%s'): wrong ranges or wrong file?", cr->src, off,
                        lineno, line);
        }
        err = copy_out(cr->out, cr->buf, n, off, cr->sparse);
        if (err < 0) {
            return fail("%s: write of %zd bytes at %" G_GUINT64_FORMAT ": %s", cr->dst, n, off,
                        g_strerror(-err));
        }
        off += n;
        len -= n;
    }
    return 0;
}

/* The end of a copy that went well: a sparse DEST reaches MAX_END, and its data is on disk.
 * Returns the exit status. */
static int copy_finish(CopyRanges *cr, uint64_t max_end)
{
    if (cr->sparse) {
        /* Zeros left unwritten at the end of a new DEST: it must still reach that far. */
        struct stat st;
        if (fstat(cr->out, &st) < 0 || ((uint64_t)st.st_size < max_end &&
                                        ftruncate(cr->out, max_end) < 0)) {
            return fail("%s: cannot extend to %" G_GUINT64_FORMAT " bytes: %s", cr->dst,
                        max_end, g_strerror(errno));
        }
    }
    if (fdatasync(cr->out) < 0) {
        return fail("%s: flush: %s", cr->dst, g_strerror(errno));
    }
    return 0;
}

/* One process for every range, where a shell loop would start a dd for each: with a thousand
 * scattered ranges, starting the processes is what the copy costs. */
static int cmd_copy_ranges(GHashTable *o, int argc, char **argv)
{
    CopyRanges cr = {
        .src = argv[0], .dst = argv[1], .sparse = opt_flag(o, "sparse"), .seek_data = true,
    };
    g_autofree uint8_t *buf = NULL;
    g_autofree char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;
    uint64_t max_end = 0;       /* the end of the last byte listed */
    int ret = 0;

    cr.in = open(cr.src, O_RDONLY | O_CLOEXEC);
    if (cr.in < 0) {
        return fail("%s: cannot open: %s", cr.src, g_strerror(errno));
    }
    cr.out = open(cr.dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (cr.out < 0) {
        int err = errno;
        close(cr.in);
        return fail("%s: cannot open for writing: %s", cr.dst, g_strerror(err));
    }
    /* Read what is listed and nothing more: no readahead past a range (through an export,
     * that would be read from the image and counted). */
    posix_fadvise(cr.in, 0, 0, POSIX_FADV_RANDOM);
    cr.buf = buf = g_malloc(COPY_CHUNK);
    while (ret == 0 && getline(&line, &cap, stdin) >= 0) {
        uint64_t off, len;

        lineno++;
        g_strstrip(line);
        if (!*line) {
            continue;
        }
        if (!copy_parse_range(line, &off, &len)) {
            ret = fail("standard input, line %u: expected 'OFFSET LENGTH' in bytes, got '%s'",
                       lineno, line);
            break;
        }
        max_end = MAX(max_end, off + len);
        ret = copy_range(&cr, off, len, lineno, line);
    }
    if (ret == 0 && ferror(stdin)) {
        ret = fail("standard input: read error: %s", g_strerror(errno));
    }
    if (ret == 0) {
        ret = copy_finish(&cr, max_end);
    }
    close(cr.in);
    if (close(cr.out) < 0 && ret == 0) {
        ret = fail("%s: %s", cr.dst, g_strerror(errno));
    }
    return ret;
}

int main(int argc, char **argv)
{
    const CliCommand *c = NULL;
    g_autoptr(GHashTable) opts = NULL;
    int status = 0;
    int first;

    if (mount_helper_invoked(argv[0])) {
        return mount_helper_main(argc, argv, run_mount);
    }
    if (argc < 2) {
        return usage_error(NULL, "no command given");
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        main_help();
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        print_version();
        return 0;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        if (!strcmp(argv[1], commands[i].name) ||
            (!strcmp(argv[1], "umount") && !strcmp(commands[i].name, "unmount"))) {
            c = &commands[i];
        }
    }
    if (!c) {
        return usage_error(NULL, argv[1][0] == '-' ? "unknown option '%s'" :
                           "unknown command '%s'", argv[1]);
    }
    opts = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    first = parse_options(c, argc - 1, argv + 1, opts, &status);
    if (first < 0) {
        return status;
    }
    argc -= first + 1;
    argv += first + 1;
    if (argc < c->min_args) {
        return usage_error(c, "missing %s", c->args);
    }
    if (argc > c->max_args) {
        return usage_error(c, "unexpected argument '%s'", argv[c->max_args]);
    }
    return c->run == cmd_mount ? run_mount(opts, argc, argv) : c->run(opts, argc, argv);
}
