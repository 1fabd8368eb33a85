/* util.c - errors, logging, size parsing and other small helpers shared by every part. */
#include "config.h"
#include "block/util.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

G_DEFINE_QUARK(blkfuse-error-quark, blk_error)

void error_setg_errno(GError **errp, int err, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    if (err < 0) {
        err = -err;
    }
    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(errp, BLK_ERROR, err, "%s: %s", msg, g_strerror(err));
}

void error_prefix(GError **errp, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *prefix = NULL;

    if (!errp || !*errp) {
        return;
    }
    va_start(ap, fmt);
    prefix = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_prefix_error(errp, "%s: ", prefix);
}

/* --- logging --- */

static GMutex log_lock;
static FILE *log_file;          /* NULL: stderr */
static char *log_path;          /* NULL: stderr; "syslog": syslog */
static bool log_verbose;

static const char *const level_names[] = {
    [LOG_LEVEL_ERROR] = "ERROR", [LOG_LEVEL_WARNING] = "WARNING",
    [LOG_LEVEL_INFO] = "INFO", [LOG_LEVEL_DEBUG] = "DEBUG",
};

void blk_log(LogLevel level, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    if (level == LOG_LEVEL_DEBUG && !log_verbose) {
        return;
    }
    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);

    g_mutex_lock(&log_lock);
    if (log_path && strcmp(log_path, "syslog") == 0) {
        static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
        syslog(prio[level], "%s: %s", level_names[level], msg);
    } else {
        FILE *f = log_file ? log_file : stderr;
        if (log_file) {
            struct timespec ts;
            struct tm tm;
            char stamp[32];
            clock_gettime(CLOCK_REALTIME, &ts);
            localtime_r(&ts.tv_sec, &tm);
            strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
            fprintf(f, "%s.%03ld ", stamp, ts.tv_nsec / 1000000);
        }
        fprintf(f, "blkfuse[%d]: %s: %s\n", (int)getpid(), level_names[level], msg);
        fflush(f);
    }
    g_mutex_unlock(&log_lock);
}

static bool log_open_locked(GError **errp)
{
    if (log_file) {
        fclose(log_file);
        log_file = NULL;
    }
    if (!log_path) {
        return true;
    }
    if (strcmp(log_path, "syslog") == 0) {
        openlog("blkfuse", LOG_PID, LOG_DAEMON);
        return true;
    }
    log_file = fopen(log_path, "ae");
    if (!log_file) {
        error_setg_errno(errp, errno, "%s: cannot open log file", log_path);
        return false;
    }
    setvbuf(log_file, NULL, _IOLBF, 0);
    return true;
}

bool log_open(const char *path, GError **errp)
{
    bool ok;

    g_mutex_lock(&log_lock);
    g_free(log_path);
    log_path = g_strdup(path);
    ok = log_open_locked(errp);
    g_mutex_unlock(&log_lock);
    return ok;
}

void log_reopen(void)
{
    g_autoptr(GError) err = NULL;

    g_mutex_lock(&log_lock);
    log_open_locked(&err);
    g_mutex_unlock(&log_lock);
    if (err) {
        fprintf(stderr, "blkfuse: %s\n", err->message);
    }
}

void log_set_verbose(bool verbose)
{
    log_verbose = verbose;
}

/* --- sizes --- */

bool parse_size(const char *str, uint64_t *out, GError **errp)
{
    char *end;
    uint64_t n, mult = 1;
    int shift = 0;

    if (!str || !g_ascii_isdigit(*str)) {
        error_setg(errp, "invalid size '%s': expected a number with an optional suffix "
                   "(k, M, G, T)", str ? str : "");
        return false;
    }
    errno = 0;
    n = g_ascii_strtoull(str, &end, 10);
    if (errno == ERANGE) {
        error_setg(errp, "invalid size '%s': too large", str);
        return false;
    }
    switch (g_ascii_tolower(*end)) {
    case '\0': break;
    case 'b': if (end[1] == '\0') { end++; } break;
    case 'k': shift = 10; break;
    case 'm': shift = 20; break;
    case 'g': shift = 30; break;
    case 't': shift = 40; break;
    case 'p': shift = 50; break;
    case 'e': shift = 60; break;
    }
    if (shift) {
        end++;
        if (g_ascii_tolower(*end) == 'i' && g_ascii_tolower(end[1]) == 'b') {
            end += 2;
        } else if (g_ascii_tolower(*end) == 'b') {
            end++;
        }
        mult = UINT64_C(1) << shift;
    }
    if (*end != '\0') {
        error_setg(errp, "invalid size '%s': expected a number with an optional suffix "
                   "(k, M, G, T)", str);
        return false;
    }
    if (n > UINT64_MAX / mult || n * mult > INT64_MAX) {
        error_setg(errp, "invalid size '%s': too large", str);
        return false;
    }
    *out = n * mult;
    return true;
}

char *format_size(uint64_t n)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    int i = 0;
    double v = n;

    while (v >= 1024 && i < 6) {
        v /= 1024;
        i++;
    }
    if (i == 0) {
        return g_strdup_printf("%" G_GUINT64_FORMAT " B", n);
    }
    if (v == (uint64_t)v) {
        return g_strdup_printf("%" G_GUINT64_FORMAT " %s", (uint64_t)v, units[i]);
    }
    return g_strdup_printf("%.1f %s", v, units[i]);   /* never exponent notation */
}

int64_t get_clock_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * INT64_C(1000000000) + ts.tv_nsec;
}

char *mount_fstype_at(const char *path)
{
    g_autofree char *contents = NULL;
    g_auto(GStrv) lines = NULL;
    char *fstype = NULL;

    if (!g_file_get_contents("/proc/self/mountinfo", &contents, NULL, NULL)) {
        return NULL;
    }
    lines = g_strsplit(contents, "\n", -1);
    for (char **l = lines; *l; l++) {
        /* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER */
        g_auto(GStrv) f = g_strsplit(*l, " ", -1);
        guint n = g_strv_length(f);
        g_autofree char *target = NULL;

        if (n < 5) {
            continue;
        }
        target = g_strcompress(f[4]);           /* undo the \ooo escapes of mountinfo */
        if (strcmp(target, path) != 0) {
            continue;
        }
        for (guint i = 5; i + 1 < n; i++) {
            if (strcmp(f[i], "-") == 0) {
                g_free(fstype);
                fstype = g_strdup(f[i + 1]);
                break;
            }
        }
    }
    return fstype;
}

/* Under l's GOnce: NULL, or why not (in l->why). */
static gpointer load_libraries_once(gpointer opaque)
{
    LibLoader *l = opaque;
    void *h[8];

    g_assert(l->nlibs <= G_N_ELEMENTS(h));
    for (size_t i = 0; i < l->nlibs; i++) {
        h[i] = dlopen(l->sonames[i], RTLD_NOW | RTLD_LOCAL);
        if (!h[i]) {
            g_snprintf(l->why, sizeof(l->why), "cannot load %s (%s): install it (%s)",
                       l->sonames[i], dlerror(), l->install_hint);
            return l->why;
        }
    }
    for (size_t i = 0; i < l->nsyms; i++) {
        const LibSym *sym = &l->syms[i];
        *sym->ptr = dlsym(h[sym->lib], sym->name);
        if (!*sym->ptr) {
            g_snprintf(l->why, sizeof(l->why), "%s has no %s: a newer version is needed (%s)",
                       l->sonames[sym->lib], sym->name, l->install_hint);
            return l->why;
        }
    }
    return NULL;
}

bool load_libraries(LibLoader *l, GError **errp)
{
    const char *why = g_once(&l->once, load_libraries_once, l);

    if (why) {
        error_setg(errp, "%s: %s", l->driver, why);
        return false;
    }
    return true;
}

/*
 * uri without secrets, for everything people see (nbd's node name, an opening export in list):
 * the authority loses a password (user:password@ becomes user@), the query keeps only socket=, a
 * fragment goes.  A string without "://" is returned as it is.  Caller frees.
 */
char *uri_redact(const char *uri)
{
    const char *auth = strstr(uri, "://");
    const char *path, *query;
    GString *out = g_string_new(NULL);

    if (!auth) {
        g_string_append(out, uri);
        return g_string_free(out, false);
    }
    auth += 3;
    path = auth + strcspn(auth, "/?#");
    g_string_append_len(out, uri, auth - uri);
    {
        const char *at = memchr(auth, '@', path - auth);
        if (at) {
            const char *colon = memchr(auth, ':', at - auth);
            g_string_append_len(out, auth, (colon ? colon : at) - auth);
            g_string_append_c(out, '@');
            auth = at + 1;
        }
        g_string_append_len(out, auth, path - auth);
    }
    query = path + strcspn(path, "?#");
    g_string_append_len(out, path, query - path);
    if (*query == '?') {
        g_autofree char *q = g_strndup(query + 1, strcspn(query + 1, "#"));
        g_auto(GStrv) params = g_strsplit(q, "&", -1);
        bool first = true;
        for (char **p = params; *p; p++) {
            if (g_str_has_prefix(*p, "socket=")) {
                g_string_append_printf(out, "%c%s", first ? '?' : '&', *p);
                first = false;
            }
        }
    }
    return g_string_free(out, false);
}
