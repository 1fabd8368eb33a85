/* util.h - small shared helpers: errors, logging, size parsing, alignment arithmetic. */
#ifndef BLOCK_UTIL_H
#define BLOCK_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>
#include <glib.h>

/* The one GError domain of blkfuse; error codes are errno values. */
#define BLK_ERROR blk_error_quark()
GQuark blk_error_quark(void);

/* Set *errp to a one-line message (no trailing newline). */
#define error_setg(errp, ...) g_set_error((errp), BLK_ERROR, EINVAL, __VA_ARGS__)
/* Same, with ": strerror(err)" appended; err is a positive or negative errno. */
void error_setg_errno(GError **errp, int err, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
/* Prefix an existing error's message with "prefix: ". */
void error_prefix(GError **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/* Logging.  Messages are one line; the logger adds "blkfuse[pid]: LEVEL: " and a newline.
 * Goes to stderr until log_open() picks a file or syslog. */
typedef enum { LOG_LEVEL_ERROR, LOG_LEVEL_WARNING, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG } LogLevel;
void blk_log(LogLevel level, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
#define log_error(...)   blk_log(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) blk_log(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...)    blk_log(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)   blk_log(LOG_LEVEL_DEBUG, __VA_ARGS__)
/* path == NULL: stderr; path == "syslog": syslog; else append to the file.  Reopen-safe. */
bool log_open(const char *path, GError **errp);
void log_reopen(void);
void log_set_verbose(bool verbose);

/* Parse a size: a number with an optional suffix k, M, G, T, P, E (powers of 1024, case
 * insensitive, optional trailing "B"/"iB").  Returns false with errp naming str. */
bool parse_size(const char *str, uint64_t *out, GError **errp);
/* Format a size for people: "1 GiB", "512 B", "1.5 MiB" (caller frees). */
char *format_size(uint64_t n);
/* A URI without its secrets (password, query but socket=, fragment), for logs and list. */
char *uri_redact(const char *uri);

#define ROUND_DOWN(n, d) ((n) / (d) * (d))
#define ROUND_UP(n, d)   (((n) + (d) - 1) / (d) * (d))
#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define IS_ALIGNED(n, d) (((n) % (d)) == 0)
#define MIN_NON_ZERO(a, b) ((a) == 0 ? (b) : ((b) == 0 ? (a) : MIN(a, b)))

static inline bool is_power_of_2(uint64_t v) { return v && !(v & (v - 1)); }
static inline int ctz64(uint64_t v) { return v ? __builtin_ctzll(v) : 64; }

/* Big-endian loads/stores for on-disk formats. */
static inline uint16_t ldbe16(const void *p) { uint16_t v; memcpy(&v, p, 2); return GUINT16_FROM_BE(v); }
static inline uint32_t ldbe32(const void *p) { uint32_t v; memcpy(&v, p, 4); return GUINT32_FROM_BE(v); }
static inline uint64_t ldbe64(const void *p) { uint64_t v; memcpy(&v, p, 8); return GUINT64_FROM_BE(v); }
static inline void stbe16(void *p, uint16_t v) { v = GUINT16_TO_BE(v); memcpy(p, &v, 2); }
static inline void stbe32(void *p, uint32_t v) { v = GUINT32_TO_BE(v); memcpy(p, &v, 4); }
static inline void stbe64(void *p, uint64_t v) { v = GUINT64_TO_BE(v); memcpy(p, &v, 8); }

/* The file system type ("ext4", "fuse.blkfuse", ...) of the mount whose mountpoint is exactly
 * path (as /proc/self/mountinfo spells it; the topmost if several), or NULL if path is not a
 * mountpoint.  Caller frees. */
char *mount_fstype_at(const char *path);

/* Nanoseconds from CLOCK_MONOTONIC. */
int64_t get_clock_ns(void);

/* --- optional client libraries, loaded when first needed --- */

/* One function to find: in library number lib of the list, stored through ptr. */
typedef struct LibSym {
    int lib;
    const char *name;
    void **ptr;
} LibSym;

/* A driver's client libraries: a static one per driver, loaded by load_libraries. */
typedef struct LibLoader {
    const char *driver;         /* names it in messages: "nbd" */
    const char *const *sonames; /* at most 8 */
    size_t nlibs;
    const LibSym *syms;
    size_t nsyms;
    const char *install_hint;   /* what to install, e.g. "Debian: librbd1" */
    GOnce once;                 /* G_ONCE_INIT */
    char why[512];
} LibLoader;

/* On the first call (thread-safe, once per loader): dlopen each soname (RTLD_NOW | RTLD_LOCAL)
 * and dlsym each function of syms from its library.  Returns whether they are all there; if not
 * (now or at the first call), sets errp to one line, "DRIVER: ...", naming the library or
 * function and what to install. */
bool load_libraries(LibLoader *l, GError **errp);

#endif
