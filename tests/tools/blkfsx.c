/* blkfsx.c - randomized exerciser for a blkfuse export, checked against a model in memory. */

/*
 * In the spirit of fsx (the file system exerciser of xfstests), written for blkfuse: it keeps
 * the expected contents and size of the exported file in memory, runs random operations
 * against the export and checks the result of each one against the model:
 *
 *   - reads and writes through buffered pread/pwrite, through a second descriptor opened
 *     O_DIRECT (aligned buffers; offsets and lengths aligned to 4096, 512 or nothing), and
 *     through a MAP_SHARED mapping (msync after most mapped writes);
 *   - batches of concurrent O_DIRECT reads and writes (Linux AIO) on disjoint bytes, and
 *     such batches racing a shrink (once grown back, the cut-off range must read as zeros),
 *     a grow, or a fallocate on other bytes: each has one correct outcome;
 *   - truncates that grow and shrink, fallocate in every mode the export supports and in
 *     the ones it must refuse with EOPNOTSUPP, fsync, fdatasync, close and reopen;
 *   - writes straddling the end (short count) and past it (ENOSPC, or growth with
 *     --growable), reads past the end;
 *   - SEEK_DATA/SEEK_HOLE (every non-zero byte must lie in a data region) and fstat
 *     (st_size exact, st_blocks between the non-zero sectors and the size plus a slack).
 *
 * After each operation the touched range (and the ends of the file when its size changed) is
 * read back through another path and compared; every --check-every operations and at the end
 * the whole file is compared through every path.  The export's rules come from the options:
 * --format=qcow2 (sizes are whole 512-byte sectors: other sizes are refused with EINVAL and
 * growth rounds up), --growable, --no-shrink; --raw-image names the raw image behind the
 * export, whose size and contents must follow the model too.
 *
 * Runs are reproducible: every choice comes from --seed, and the data an operation writes is
 * a function of the seed, the operation's number and the file offset.  On a failure blkfsx
 * prints the last operations, one replayable line each ("N KIND OFFSET LENGTH ARG"), the
 * first differing bytes, and which logged operation wrote the bad bytes if one did.
 * --log-file keeps every operation; --replay runs a (possibly trimmed) log again.
 *
 * Exit status: 0 all checks passed, 1 a check failed (or an unexpected error), 2 usage.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* O_DIRECT, fallocate */
#endif

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libaio.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <linux/falloc.h>

#ifndef FALLOC_FL_WRITE_ZEROES
#define FALLOC_FL_WRITE_ZEROES 0x80
#endif

#define BLKFSX_VERSION "1.0"
#define ALIGN_BUF 4096
#define RACE_MAX_LEN (64 * 1024)
#define OPT_MAX (INT64_MAX / 4)     /* the largest value of a numeric option */

static const char *prog = "blkfsx";

#include "tool-util.h"

/* --- operation kinds ------------------------------------------------------------------ */

typedef enum {
    OP_READ, OP_WRITE, OP_DREAD, OP_DWRITE, OP_MAPREAD, OP_MAPWRITE, OP_TRUNCATE,
    OP_FALLOC, OP_FALLOC_KEEP, OP_PUNCH, OP_ZERO, OP_ZERO_KEEP, OP_FALLOC_REFUSED,
    OP_FSYNC, OP_FDATASYNC, OP_SEEK, OP_STAT, OP_REOPEN, OP_AIO, OP_RACE_TRUNCATE,
    OP_RACE_FALLOC, OP_RACE_GROW,
    OP__MAX
} OpKind;

static const struct {
    const char *name;
    unsigned weight;        /* relative frequency */
    const char *help;
} op_info[OP__MAX] = {
    [OP_READ]           = { "read", 12, "buffered pread" },
    [OP_WRITE]          = { "write", 12, "buffered pwrite (ARG 1: zeros)" },
    [OP_DREAD]          = { "dread", 8, "O_DIRECT pread" },
    [OP_DWRITE]         = { "dwrite", 8, "O_DIRECT pwrite (ARG 1: zeros)" },
    [OP_MAPREAD]        = { "mapread", 6, "read through a MAP_SHARED mapping" },
    [OP_MAPWRITE]       = { "mapwrite", 6, "write through the mapping (ARG 1: msync MS_SYNC, "
                                           "2: MS_ASYNC, 0: none)" },
    [OP_TRUNCATE]       = { "truncate", 4, "ftruncate to OFFSET" },
    [OP_FALLOC]         = { "falloc", 2, "fallocate mode 0" },
    [OP_FALLOC_KEEP]    = { "falloc-keep", 2, "fallocate KEEP_SIZE" },
    [OP_PUNCH]          = { "punch", 3, "fallocate PUNCH_HOLE|KEEP_SIZE" },
    [OP_ZERO]           = { "zero", 2, "fallocate ZERO_RANGE" },
    [OP_ZERO_KEEP]      = { "zero-keep", 2, "fallocate ZERO_RANGE|KEEP_SIZE" },
    [OP_FALLOC_REFUSED] = { "falloc-refused", 1, "fallocate mode ARG, refused with EOPNOTSUPP" },
    [OP_FSYNC]          = { "fsync", 2, "fsync (ARG 1: on the O_DIRECT descriptor)" },
    [OP_FDATASYNC]      = { "fdatasync", 2, "fdatasync (ARG 1: on the O_DIRECT descriptor)" },
    [OP_SEEK]           = { "seek", 4, "lseek SEEK_DATA (ARG 3) or SEEK_HOLE (ARG 4)" },
    [OP_STAT]           = { "stat", 2, "fstat: st_size and st_blocks" },
    [OP_REOPEN]         = { "reopen", 1, "close and reopen both descriptors" },
    [OP_AIO]            = { "aio", 4, "ARG concurrent O_DIRECT reads and writes (Linux AIO) "
                                      "in OFFSET..+LENGTH" },
    [OP_RACE_TRUNCATE]  = { "race-truncate", 1, "shrink to OFFSET racing ARG in-flight "
                                                "O_DIRECT writes and reads, grow back" },
    [OP_RACE_FALLOC]    = { "race-falloc", 2, "fallocate mode ARG on OFFSET+LENGTH racing "
                                              "O_DIRECT writes and reads elsewhere" },
    [OP_RACE_GROW]      = { "race-grow", 1, "grow to OFFSET racing ARG in-flight O_DIRECT "
                                            "writes and reads" },
};

/* Groups accepted by --kinds and --exclude. */
static const struct {
    const char *name;
    const OpKind kinds[8];
    int n;
} op_groups[] = {
    { "direct", { OP_DREAD, OP_DWRITE, OP_AIO, OP_RACE_TRUNCATE, OP_RACE_FALLOC,
                  OP_RACE_GROW }, 6 },
    { "race", { OP_RACE_TRUNCATE, OP_RACE_FALLOC, OP_RACE_GROW }, 3 },
    { "mmap", { OP_MAPREAD, OP_MAPWRITE }, 2 },
    { "fallocate", { OP_FALLOC, OP_FALLOC_KEEP, OP_PUNCH, OP_ZERO, OP_ZERO_KEEP,
                     OP_FALLOC_REFUSED }, 6 },
    { "sync", { OP_FSYNC, OP_FDATASYNC }, 2 },
};

/* The fallocate modes the export must refuse with EOPNOTSUPP. */
static const int refused_modes[] = {
    FALLOC_FL_PUNCH_HOLE,                       /* without KEEP_SIZE */
    FALLOC_FL_COLLAPSE_RANGE,
    FALLOC_FL_INSERT_RANGE,
    FALLOC_FL_UNSHARE_RANGE,
    FALLOC_FL_UNSHARE_RANGE | FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_WRITE_ZEROES,
};

/* The fallocate modes race-falloc runs (inside the file, so none changes the size). */
static const int race_falloc_modes[] = {
    0,
    FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_ZERO_RANGE,
    FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
};

/* One operation: what to do (kind, off, len, arg: the replayable part) and what happened. */
typedef struct {
    uint64_t n;                 /* number, from 1 */
    OpKind kind;
    int64_t off, len, arg;
    int64_t size_before, size_after;
    int64_t result;             /* bytes, or 0, or -errno */
} Op;

/* One request of an AIO batch, and its result once it completed. */
typedef struct {
    bool write;
    int64_t off, len;
    int64_t res;
    bool done;
} AioReq;

/* --- options and state ------------------------------------------------------------------ */

typedef struct {
    const char *file;
    uint64_t ops;               /* 0: until the duration ends */
    double duration;            /* seconds, 0: none */
    uint64_t seed;
    int64_t max_len;
    int64_t max_size;           /* 0: from the file */
    uint64_t check_every;
    bool enabled[OP__MAX];
    bool qcow2;
    int64_t size_align;         /* sizes set by truncate must be multiples; growth rounds up */
    bool growable;
    bool no_shrink;             /* shrinking fails with EOPNOTSUPP (qcow2 with snapshots) */
    bool direct_inside;         /* O_DIRECT writes stay inside the file */
    bool blocks_check;
    int64_t blocks_slack;       /* -1: default for the format */
    const char *raw_image;
    unsigned aio_depth;
    const char *dump;
    const char *log_file;
    const char *replay;
    unsigned show_log;
    bool init_fill;
    int verbose;                /* -1 quiet, 0 normal, 1 each op */
} Opts;

static Opts o;

static struct {
    int fd, dfd;                /* buffered and O_DIRECT descriptors */
    uint8_t *map;
    int64_t map_len;
    bool map_dirty;             /* mapped writes not yet msync'ed */
    uint64_t short_writes[16];  /* short buffered writes since the mapping was made */
    int n_short_writes;         /* ... more than 16: the tail past the end is not checked */
    uint8_t *model;             /* o.max_size bytes; zero past size */
    int64_t size;
    uint8_t *buf, *buf2;        /* aligned I/O buffers, o.max_size + 2 * ALIGN_BUF bytes */
    uint8_t **aio_bufs;
    io_context_t aio;
    Op *log;                    /* ring of the last o.show_log operations */
    uint64_t log_n;
    FILE *log_file;
    FILE *replay;
    Rng rng;
    uint64_t counts[OP__MAX];
    uint64_t race_before, race_after;   /* race-truncate writes done before/after the shrink */
    uint64_t bytes_read, bytes_written;
    Op *cur;                    /* the operation being run or checked */
    AioReq *batch;              /* its AIO batch, if any, printed on a failure */
    int batch_n;
    bool cur_logged;            /* ... and it is in the log already */
    struct timespec start;
} st;

static sigjmp_buf sigbus_jmp;
static volatile sig_atomic_t sigbus_armed;

/* --- pseudo-random numbers and data ---------------------------------------------------- */

/* A value in [0, n) (0 when n <= 0). */
static int64_t rnd(Rng *r, int64_t n)
{
    return n > 0 ? (int64_t)(rng_next(r) % (uint64_t)n) : 0;
}

/* True with probability pct/100. */
static bool chance(Rng *r, int pct)
{
    return rnd(r, 100) < pct;
}

/* The random stream of operation n's inner choices (AIO layouts, which descriptor): a
 * function of the seed and n only, so a replayed operation makes the same choices. */
static void op_rng(Rng *r, uint64_t n)
{
    rng_init(r, o.seed ^ splitmix64(n * 0x51ed2701ULL + 7));
}

/* The byte operation n writes at file offset off: never zero. */
static uint8_t pattern_byte(uint64_t n, int64_t off)
{
    uint64_t w = splitmix64(o.seed ^ splitmix64(n) ^ ((uint64_t)off >> 3) * 0x9e3779b97f4a7c15ULL);
    uint8_t b = w >> ((off & 7) * 8);

    return b ? b : 0xa5;
}

static void pattern_fill(uint8_t *buf, uint64_t n, int64_t off, int64_t len, bool zeros)
{
    if (zeros) {
        memset(buf, 0, len);
        return;
    }
    for (int64_t i = 0; i < len; i++) {
        buf[i] = pattern_byte(n, off + i);
    }
}

/* --- helpers ------------------------------------------------------------------------- */

static int64_t round_up(int64_t v, int64_t a)
{
    return (v + a - 1) / a * a;
}

static int64_t round_down(int64_t v, int64_t a)
{
    return v / a * a;
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

static double elapsed(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - st.start.tv_sec) + (now.tv_nsec - st.start.tv_nsec) / 1e9;
}

static const char *errname(int64_t err)
{
    switch (err) {
    case EIO: return "EIO";
    case ENOSPC: return "ENOSPC";
    case EINVAL: return "EINVAL";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ENXIO: return "ENXIO";
    case EFBIG: return "EFBIG";
    case EPERM: return "EPERM";
    case EROFS: return "EROFS";
    case ENOTCONN: return "ENOTCONN";
    case EAGAIN: return "EAGAIN";
    default: return strerror(err);
    }
}

/* "512", "-ENOSPC": a result for messages. */
static const char *result_str(int64_t r, char *buf, size_t size)
{
    if (r < 0) {
        snprintf(buf, size, "-%s", errname(-r));
    } else {
        snprintf(buf, size, "%" PRId64, r);
    }
    return buf;
}

/* --- the operation log ------------------------------------------------------------------ */

static void op_format(const Op *op, char *buf, size_t size)
{
    char r[32];

    snprintf(buf, size, "%" PRIu64 " %s %" PRId64 " %" PRId64 " %" PRId64
             "\t# size %" PRId64 " -> %" PRId64 ", result %s",
             op->n, op_info[op->kind].name, op->off, op->len, op->arg, op->size_before,
             op->size_after, result_str(op->result, r, sizeof(r)));
}

static void log_print_last(void)
{
    uint64_t first = st.log_n > o.show_log ? st.log_n - o.show_log : 0;
    char line[256];

    if (st.log_n == 0) {
        return;
    }
    fprintf(stderr, "%s: the last %" PRIu64 " operations (N KIND OFFSET LENGTH ARG, "
            "replayable with --replay and the same --seed):\n", prog, st.log_n - first);
    for (uint64_t i = first; i < st.log_n; i++) {
        op_format(&st.log[i % o.show_log], line, sizeof(line));
        fprintf(stderr, "  %s\n", line);
    }
}

/* Record op as done (its result filled in). */
static void log_op(const Op *op)
{
    char line[256];

    st.log[st.log_n % o.show_log] = *op;
    st.log_n++;
    if (st.log_file || o.verbose > 0) {
        op_format(op, line, sizeof(line));
        if (st.log_file) {
            fprintf(st.log_file, "%s\n", line);
        }
        if (o.verbose > 0) {
            printf("%s\n", line);
        }
    }
}

/* --- failure reports --------------------------------------------------------------------- */

static void dump_model(const char *path)
{
    FILE *f = fopen(path, "w");

    if (!f || (st.size && fwrite(st.model, st.size, 1, f) != 1) || fclose(f) != 0) {
        fprintf(stderr, "%s: cannot write the model to %s: %s\n", prog, path, strerror(errno));
    }
}

/* Report a failed check of the current operation, print the log, and exit 1. */
static void fail(const char *fmt, ...)
{
    va_list ap;

    if (st.cur) {
        char line[256];
        st.cur->size_after = st.size;
        op_format(st.cur, line, sizeof(line));
        fprintf(stderr, "%s: FAILED at operation %s\n", prog, line);
    }
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    for (int i = 0; i < st.batch_n; i++) {
        char r[32];
        AioReq *q = &st.batch[i];
        fprintf(stderr, "%s:   request %d: %s %" PRId64 "+%" PRId64 ": %s\n", prog, i,
                q->write ? "write" : "read", q->off, q->len,
                q->done ? result_str(q->res, r, sizeof(r)) : "in flight");
    }
    if (st.cur && !st.cur_logged) {
        log_op(st.cur);     /* the failing one goes last in the log */
    }
    st.cur = NULL;
    log_print_last();
    fprintf(stderr, "%s: seed %" PRIu64 "; to reproduce, recreate the image as it was and run "
            "the same command line (add --ops %" PRIu64 " to stop at this operation)\n",
            prog, o.seed, st.log_n);
    if (st.log_file) {
        fflush(st.log_file);
    }
    if (o.dump) {
        dump_model(o.dump);
        fprintf(stderr, "%s: the model (expected contents) is in %s\n", prog, o.dump);
    }
    exit(1);
}

/* Could op have written b at off? */
static bool wrote_byte(const Op *op, int64_t off, uint8_t b)
{
    switch (op->kind) {
    case OP_WRITE:
    case OP_DWRITE:
    case OP_MAPWRITE:
        if (off < op->off || off >= op->off + op->len) {
            return false;
        }
        break;
    case OP_AIO:
        if (off < op->off) {
            return false;
        }
        break;
    case OP_RACE_TRUNCATE:
    case OP_RACE_FALLOC:
    case OP_RACE_GROW:
        break;      /* their requests lie anywhere in the file */
    default:
        return false;
    }
    return pattern_byte(op->n, off) == b;
}

/* The operation being run or the most recent logged one that may have written b at off. */
static const Op *find_writer(int64_t off, uint8_t b)
{
    uint64_t first = st.log_n > o.show_log ? st.log_n - o.show_log : 0;

    if (st.cur && !st.cur_logged && wrote_byte(st.cur, off, b)) {
        return st.cur;
    }
    for (uint64_t i = st.log_n; i-- > first;) {
        const Op *op = &st.log[i % o.show_log];
        if (wrote_byte(op, off, b)) {
            return op;
        }
    }
    return NULL;
}

/* got (len bytes read at off through view) differs from the model: say where and fail. */
static void fail_mismatch(const char *view, int64_t off, const uint8_t *got, int64_t len)
{
    const uint8_t *want = st.model + off;
    int64_t first = -1, last = -1, count = 0;
    int shown = 0;

    for (int64_t i = 0; i < len; i++) {
        if (got[i] != want[i]) {
            if (first < 0) {
                first = i;
            }
            last = i;
            count++;
        }
    }
    fprintf(stderr, "%s: %s of %" PRId64 "+%" PRId64 ": %" PRId64 " bytes differ between "
            "offsets %" PRId64 " and %" PRId64 " (file size %" PRId64 ")\n", prog, view, off,
            len, count, off + first, off + last, st.size);
    fprintf(stderr, "%s:   OFFSET        EXPECTED  GOT\n", prog);
    for (int64_t i = first; i <= last && shown < 16; i++) {
        if (got[i] != want[i]) {
            const Op *w = find_writer(off + i, got[i]);
            char who[96] = "";
            if (w) {
                snprintf(who, sizeof(who), "  (what op %" PRIu64 " %s wrote there)", w->n,
                         op_info[w->kind].name);
            } else if (got[i] == 0) {
                snprintf(who, sizeof(who), "  (zero)");
            }
            fprintf(stderr, "%s:   %-12" PRId64 "  0x%02x      0x%02x%s\n", prog, off + i,
                    want[i], got[i], who);
            shown++;
        }
    }
    fail("%s returned wrong data", view);
}

/* --- the model -------------------------------------------------------------------------- */

/* The size the export takes when something makes it at least end bytes long. */
static int64_t grown_size(int64_t end)
{
    return round_up(end, o.size_align);
}

static void model_resize(int64_t size)
{
    if (size < st.size) {
        memset(st.model + size, 0, st.size - size);     /* keep: zero past the size */
    }
    st.size = size;
}

static void model_write(int64_t off, const uint8_t *data, int64_t len)
{
    if (off + len > st.size) {
        model_resize(grown_size(off + len));
    }
    memcpy(st.model + off, data, len);
}

static void model_zero(int64_t off, int64_t len)
{
    if (off < st.size) {
        memset(st.model + off, 0, min64(len, st.size - off));
    }
}

/* What a write of len bytes at off must return under the export's rules. */
static int64_t expected_write(int64_t off, int64_t len)
{
    if (off + len <= st.size || o.growable) {
        return len;
    }
    return off < st.size ? st.size - off : -ENOSPC;
}

static int64_t expected_read(int64_t off, int64_t len)
{
    return off >= st.size ? 0 : min64(len, st.size - off);
}

/* 512-byte sectors holding a non-zero byte, times 512: the least the host must store. */
static int64_t nonzero_bytes(void)
{
    int64_t n = 0;

    for (int64_t s = 0; s < st.size; s += 512) {
        int64_t l = min64(512, st.size - s);
        const uint64_t *w = (const uint64_t *)(st.model + s);
        bool nz = false;
        int64_t i;
        for (i = 0; i + 8 <= l && !nz; i += 8) {
            nz = w[i / 8] != 0;
        }
        for (; i < l && !nz; i++) {
            nz = st.model[s + i] != 0;
        }
        n += nz ? 512 : 0;
    }
    return n;
}

/* --- the file ------------------------------------------------------------------------- */

static void unmap_file(void)
{
    if (st.map) {
        munmap(st.map, st.map_len);
        st.map = NULL;
        st.map_len = 0;
        st.map_dirty = false;
    }
    st.n_short_writes = 0;
}

static void open_files(void)
{
    st.fd = open(o.file, O_RDWR);
    if (st.fd < 0) {
        die(1, "%s: cannot open: %s", o.file, strerror(errno));
    }
    st.dfd = open(o.file, O_RDWR | O_DIRECT);
    if (st.dfd < 0) {
        die(1, "%s: cannot open with O_DIRECT: %s", o.file, strerror(errno));
    }
}

static void close_files(void)
{
    unmap_file();
    if (close(st.dfd) != 0) {
        fail("close of the O_DIRECT descriptor failed: %s", strerror(errno));
    }
    if (close(st.fd) != 0) {
        fail("close failed: %s", strerror(errno));
    }
    st.fd = st.dfd = -1;
}

/* Map the whole file (as large as the model says it is).  False for an empty file. */
static bool map_file(void)
{
    if (st.map && st.map_len == st.size) {
        return true;
    }
    if (st.map && st.map_dirty && msync(st.map, st.map_len, MS_SYNC) != 0) {
        fail("msync before remapping failed: %s", strerror(errno));
    }
    unmap_file();
    if (st.size == 0) {
        return false;
    }
    st.map = mmap(NULL, st.size, PROT_READ | PROT_WRITE, MAP_SHARED, st.fd, 0);
    if (st.map == MAP_FAILED) {
        st.map = NULL;
        fail("mmap of %" PRId64 " bytes failed: %s", st.size, strerror(errno));
    }
    st.map_len = st.size;
    return true;
}

/* Write mapped pages back, so the export has seen them (before lseek and st_blocks checks:
 * the kernel does not write dirty pages back for those). */
static void sync_map(void)
{
    if (st.map && st.map_dirty) {
        if (msync(st.map, st.map_len, MS_SYNC) != 0) {
            fail("msync failed: %s", strerror(errno));
        }
        st.map_dirty = false;
    }
}

static void on_sigbus(int sig)
{
    (void)sig;
    if (sigbus_armed) {
        siglongjmp(sigbus_jmp, 1);
    }
    signal(SIGBUS, SIG_DFL);
    raise(SIGBUS);
}

/* Copy len bytes between the mapping at off and buf (to_map: into the mapping); a SIGBUS
 * (the file is shorter than it should be) fails the check. */
static void map_copy(int64_t off, uint8_t *buf, int64_t len, bool to_map)
{
    if (sigsetjmp(sigbus_jmp, 1)) {
        sigbus_armed = 0;
        fail("SIGBUS accessing the mapping at %" PRId64 "+%" PRId64 " (file size %" PRId64
             "): the file is shorter than it should be", off, len, st.size);
    }
    sigbus_armed = 1;
    if (to_map) {
        memcpy(st.map + off, buf, len);
    } else {
        memcpy(buf, st.map + off, len);
    }
    sigbus_armed = 0;
}

/* pread or pwrite the whole request (a regular file returns it in one call, or an error). */
static int64_t do_pread(int fd, uint8_t *buf, int64_t len, int64_t off)
{
    ssize_t r = pread(fd, buf, len, off);

    return r < 0 ? -errno : r;
}

static int64_t do_pwrite(int fd, const uint8_t *buf, int64_t len, int64_t off)
{
    ssize_t r = pwrite(fd, buf, len, off);

    return r < 0 ? -errno : r;
}

/* --- checks ----------------------------------------------------------------------------- */

/* st_size must be the model's size; with --raw-image, so must the image file's. */
static void check_size(void)
{
    struct stat sb;

    if (fstat(st.fd, &sb) != 0) {
        fail("fstat failed: %s", strerror(errno));
    }
    if (sb.st_size != st.size) {
        fail("st_size is %" PRId64 ", expected %" PRId64, (int64_t)sb.st_size, st.size);
    }
    if (o.raw_image) {
        struct stat ib;
        if (stat(o.raw_image, &ib) != 0) {
            fail("%s: stat failed: %s", o.raw_image, strerror(errno));
        }
        if (ib.st_size != st.size) {
            fail("the raw image %s is %" PRId64 " bytes, expected %" PRId64 " (the export's "
                 "size; st_size says %" PRId64 ")", o.raw_image, (int64_t)ib.st_size, st.size,
                 (int64_t)sb.st_size);
        }
    }
}

/* st_blocks: at least the non-zero sectors of the model, at most the size rounded to 4 KiB
 * plus the slack. */
static void check_blocks(void)
{
    struct stat sb;
    int64_t alloc, least, most;

    if (!o.blocks_check) {
        return;
    }
    sync_map();
    if (fstat(st.fd, &sb) != 0) {
        fail("fstat failed: %s", strerror(errno));
    }
    alloc = (int64_t)sb.st_blocks * 512;
    least = nonzero_bytes();
    most = round_up(st.size, 4096) + o.blocks_slack;
    if (alloc < least) {
        fail("st_blocks is %" PRId64 " (%" PRId64 " bytes), but %" PRId64 " bytes of the file "
             "are non-zero sectors, which must be stored", (int64_t)sb.st_blocks, alloc, least);
    }
    if (alloc > most) {
        fail("st_blocks is %" PRId64 " (%" PRId64 " bytes), more than the size %" PRId64
             " rounded to 4 KiB plus the slack of %" PRId64 " bytes (--blocks-slack)",
             (int64_t)sb.st_blocks, alloc, st.size, o.blocks_slack);
    }
}

/* Read [off, off+len) through fd (the view's name for messages) and compare with the model,
 * clamped at the end of the file. */
static void check_read(const char *view, int fd, int64_t off, int64_t len)
{
    int64_t want = expected_read(off, len);
    int64_t got;

    if (len <= 0) {
        return;
    }
    got = do_pread(fd, st.buf2, len, off);
    if (got != want) {
        char r[32];
        fail("%s of %" PRId64 "+%" PRId64 " returned %s, expected %" PRId64, view, off, len,
             result_str(got, r, sizeof(r)), want);
    }
    if (memcmp(st.buf2, st.model + off, want) != 0) {
        fail_mismatch(view, off, st.buf2, want);
    }
}

static void check_read_direct(int64_t off, int64_t len)
{
    check_read("O_DIRECT read", st.dfd, off, len);
}

static void check_read_buffered(int64_t off, int64_t len)
{
    check_read("buffered read", st.fd, off, len);
}

/*
 * The kernel copies all of a buffered write into the page cache before the export answers;
 * when the export writes only what fits (a short count at the end of the file, or ENOSPC
 * past it), the bytes past the end stay in the cached page, marked not up to date, and a
 * mapping made before shows them until the page is read again.  They never reach the image, nor reads inside the
 * file (after a grow the page is read again): accept exactly those bytes past the end.
 */
static bool short_write_byte(int64_t off, uint8_t b)
{
    if (st.n_short_writes > (int)(sizeof(st.short_writes) / sizeof(st.short_writes[0]))) {
        return true;
    }
    for (int i = 0; i < st.n_short_writes; i++) {
        if (pattern_byte(st.short_writes[i], off) == b) {
            return true;
        }
    }
    return false;
}

/* Through the mapping: [off, off+len), and the tail of the last page past the end, which
 * must read as zeros. */
static void check_map(int64_t off, int64_t len)
{
    int64_t page = sysconf(_SC_PAGESIZE);

    if (!map_file()) {
        return;
    }
    len = min64(len, st.size - off);
    if (len > 0) {
        map_copy(off, st.buf2, len, false);
        if (memcmp(st.buf2, st.model + off, len) != 0) {
            fail_mismatch("mmap read", off, st.buf2, len);
        }
    }
    if (off + len == st.size && st.size % page) {
        int64_t tail = round_up(st.size, page) - st.size;
        map_copy(st.size, st.buf2, tail, false);
        for (int64_t i = 0; i < tail; i++) {
            if (st.buf2[i] && !short_write_byte(st.size + i, st.buf2[i])) {
                const Op *w = find_writer(st.size + i, st.buf2[i]);
                char who[64] = "";
                if (w) {
                    snprintf(who, sizeof(who), " (what op %" PRIu64 " %s wrote there)", w->n,
                             op_info[w->kind].name);
                }
                fail("mmap: byte %" PRId64 ", past the end (%" PRId64 ") in the last page, is "
                     "0x%02x instead of zero%s", st.size + i, st.size, st.buf2[i], who);
            }
        }
    }
}

static bool model_zero_range(int64_t off, int64_t end, int64_t *nz)
{
    for (int64_t i = off; i < end; i++) {
        if (st.model[i]) {
            *nz = i;
            return false;
        }
    }
    return true;
}

/* SEEK_DATA or SEEK_HOLE at off, checked against the model: a hole is never reported where
 * the model has non-zero bytes.  Returns the offset, or -ENXIO. */
static int64_t check_seek(int whence, int64_t off)
{
    const char *name = whence == SEEK_DATA ? "SEEK_DATA" : "SEEK_HOLE";
    int64_t r = lseek(st.fd, off, whence);
    int64_t nz;

    if (r < 0) {
        r = -errno;
    }
    if (off >= st.size) {
        if (r != -ENXIO) {
            fail("lseek(%" PRId64 ", %s) at or past the end (%" PRId64 ") returned %" PRId64
                 ", expected ENXIO", off, name, st.size, r);
        }
        return r;
    }
    if (r < 0 && !(r == -ENXIO && whence == SEEK_DATA)) {
        fail("lseek(%" PRId64 ", %s) failed: %s", off, name, errname(-r));
    }
    if (whence == SEEK_DATA) {
        int64_t end = r < 0 ? st.size : r;
        if (r >= 0 && (r < off || r >= st.size)) {
            fail("lseek(%" PRId64 ", SEEK_DATA) returned %" PRId64 ", outside [%" PRId64 ", %"
                 PRId64 ")", off, r, off, st.size);
        }
        if (!model_zero_range(off, end, &nz)) {
            fail("lseek(%" PRId64 ", SEEK_DATA) returned %s, skipping the non-zero byte at %"
                 PRId64, off, r < 0 ? "ENXIO" : "an offset past it", nz);
        }
    } else {
        if (r < off || r > st.size) {
            fail("lseek(%" PRId64 ", SEEK_HOLE) returned %" PRId64 ", outside [%" PRId64 ", %"
                 PRId64 "]", off, r, off, st.size);
        }
        if (r < st.size && st.model[r]) {
            fail("lseek(%" PRId64 ", SEEK_HOLE) returned %" PRId64 ", where the byte is "
                 "non-zero", off, r);
        }
    }
    return r;
}

/* Walk the whole file data region by data region. */
static void check_seek_map(void)
{
    int64_t off = 0;

    sync_map();
    while (off < st.size) {
        int64_t d = check_seek(SEEK_DATA, off);
        if (d < 0) {
            break;
        }
        off = check_seek(SEEK_HOLE, d);
        if (off <= d) {
            fail("lseek(%" PRId64 ", SEEK_HOLE) returned %" PRId64 " for an offset SEEK_DATA "
                 "called data", d, off);
        }
    }
    check_seek(SEEK_DATA, st.size);
    check_seek(SEEK_HOLE, st.size);
}

/* The raw image behind the export holds exactly the model. */
static void check_raw_image(void)
{
    int fd;
    int64_t r;

    if (!o.raw_image) {
        return;
    }
    fd = open(o.raw_image, O_RDONLY);
    if (fd < 0) {
        fail("%s: cannot open: %s", o.raw_image, strerror(errno));
    }
    r = do_pread(fd, st.buf2, st.size + 1, 0);
    close(fd);
    if (r != st.size) {
        fail("%s: read %" PRId64 " bytes of the raw image, expected %" PRId64, o.raw_image, r,
             st.size);
    }
    if (memcmp(st.buf2, st.model, st.size) != 0) {
        fail_mismatch("raw image read", 0, st.buf2, st.size);
    }
}

/* Everything, through every path. */
static void check_all(void)
{
    check_size();
    check_read_buffered(0, st.size + 1);
    check_read_direct(0, st.size + 1);
    if (o.enabled[OP_MAPREAD] || o.enabled[OP_MAPWRITE]) {
        check_map(0, st.size);
    }
    if (o.enabled[OP_SEEK]) {
        check_seek_map();
    }
    check_blocks();
    check_raw_image();
}

/* After an operation: the size, the range it touched and the ends of the file if its size
 * changed, read through view (the other path than the operation's). */
static void check_after(const Op *op, int64_t off, int64_t len, bool direct)
{
    void (*check)(int64_t, int64_t) = direct ? check_read_direct : check_read_buffered;

    check_size();
    if (len > 0 && off < st.size) {
        int64_t lo = max64(0, off - 512);
        check(lo, min64(off + len + 512, st.size) - lo);
    }
    if (op->size_before != st.size) {
        int64_t lo = max64(0, min64(op->size_before, st.size) - 4096);
        check(lo, st.size - lo + 1);
    }
}

/* --- operations ------------------------------------------------------------------------- */

static void expect_result(Op *op, int64_t want, const char *what)
{
    char a[32], b[32];

    if (op->result != want) {
        fail("%s returned %s, expected %s", what, result_str(op->result, a, sizeof(a)),
             result_str(want, b, sizeof(b)));
    }
}

static void op_read(Op *op, bool direct)
{
    int64_t want = expected_read(op->off, op->len);

    op->result = do_pread(direct ? st.dfd : st.fd, st.buf, op->len, op->off);
    expect_result(op, want, direct ? "O_DIRECT pread" : "pread");
    if (memcmp(st.buf, st.model + op->off, want) != 0) {
        fail_mismatch(direct ? "O_DIRECT pread" : "pread", op->off, st.buf, want);
    }
    st.bytes_read += want;
}

static void op_write(Op *op, bool direct)
{
    int64_t want = expected_write(op->off, op->len);

    pattern_fill(st.buf, op->n, op->off, op->len, op->arg == 1);
    op->result = do_pwrite(direct ? st.dfd : st.fd, st.buf, op->len, op->off);
    expect_result(op, want, direct ? "O_DIRECT pwrite" : "pwrite");
    if (!direct && want < op->len && st.map) {
        int max = sizeof(st.short_writes) / sizeof(st.short_writes[0]);
        if (st.n_short_writes < max) {
            st.short_writes[st.n_short_writes] = op->n;
        }
        st.n_short_writes += st.n_short_writes <= max;
    }
    if (want > 0) {
        model_write(op->off, st.buf, want);
        st.bytes_written += want;
    }
    /* Check through the other path: the page cache must not hide what the export got. */
    check_after(op, op->off, op->len, !direct);
}

static void op_mapread(Op *op)
{
    if (op->off >= st.size || !map_file()) {
        op->result = 0;
        return;
    }
    op->result = min64(op->len, st.size - op->off);
    check_map(op->off, op->len);
    st.bytes_read += op->result;
}

static void op_mapwrite(Op *op)
{
    int64_t len = min64(op->len, st.size - op->off);

    op->result = 0;
    if (len <= 0 || !map_file()) {
        return;
    }
    pattern_fill(st.buf, op->n, op->off, len, false);
    map_copy(op->off, st.buf, len, true);
    model_write(op->off, st.buf, len);
    st.map_dirty = true;
    if (op->arg) {
        int64_t page = sysconf(_SC_PAGESIZE);
        int64_t lo = round_down(op->off, page);
        if (msync(st.map + lo, op->off + len - lo, op->arg == 1 ? MS_SYNC : MS_ASYNC) != 0) {
            op->result = -errno;
            fail("msync failed: %s", strerror(errno));
        }
    }
    op->result = len;
    st.bytes_written += len;
    check_after(op, op->off, len, true);
}

static void op_truncate(Op *op)
{
    int64_t want = op->off % o.size_align ? -EINVAL : 0;

    if (want == 0 && o.no_shrink && op->off < st.size) {
        want = -EOPNOTSUPP;
    }
    op->result = ftruncate(st.fd, op->off) ? -errno : 0;
    expect_result(op, want, "ftruncate");
    if (want == 0) {
        model_resize(op->off);
    }
    check_after(op, 0, 0, true);
}

static void op_fallocate(Op *op, int mode)
{
    int64_t end = op->off + op->len;
    bool keep = mode & FALLOC_FL_KEEP_SIZE;

    op->result = fallocate(st.fd, mode, op->off, op->len) ? -errno : 0;
    expect_result(op, 0, "fallocate");
    if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
        model_zero(op->off, op->len);
    }
    if (!keep && end > st.size) {
        model_resize(grown_size(end));
    }
    check_after(op, op->off, op->len, true);
}

static void op_falloc_refused(Op *op)
{
    op->result = fallocate(st.fd, op->arg, op->off, op->len) ? -errno : 0;
    expect_result(op, -EOPNOTSUPP, "a refused fallocate mode");
    check_after(op, op->off, op->len, true);
}

static void op_sync(Op *op, bool data_only)
{
    int fd = op->arg ? st.dfd : st.fd;

    op->result = (data_only ? fdatasync(fd) : fsync(fd)) ? -errno : 0;
    expect_result(op, 0, data_only ? "fdatasync" : "fsync");
    st.map_dirty = false;       /* fsync writes mapped pages back too */
    check_size();
}

static void op_seek(Op *op)
{
    sync_map();
    op->result = check_seek(op->arg, op->off);
}

static void op_stat(Op *op)
{
    op->result = 0;
    check_size();
    check_blocks();
}

static void op_reopen(Op *op)
{
    close_files();
    open_files();
    op->result = 0;
    check_size();
}

/* --- concurrent O_DIRECT batches -------------------------------------------------------- */

/* Lay out up to count disjoint requests in [off, off+len) (the op's own random stream):
 * aligned to 512 or 4096, up to about max_len each.  Returns how many fit. */
static int aio_layout(Rng *r, int64_t off, int64_t len, int count, int64_t max_len,
                      AioReq *reqs)
{
    int64_t end = off + len;
    int64_t pos = off;
    int n = 0;

    for (int i = 0; i < count && pos < end; i++) {
        int64_t a = chance(r, 50) ? 4096 : 512;
        int64_t start = round_up(pos + rnd(r, 2 * a), a);
        int64_t l = round_up(1 + rnd(r, min64(max_len, max64(1, (end - off) / count))), a);
        if (start >= end) {
            break;
        }
        l = min64(l, round_down(end - start, a));
        if (l <= 0) {
            break;
        }
        reqs[n].write = chance(r, 60);
        reqs[n].off = start;
        reqs[n].len = l;
        n++;
        pos = start + l;
    }
    return n;
}

static void aio_submit_all(AioReq *reqs, int n, uint64_t opn, struct iocb *cbs,
                           struct iocb **cbp)
{
    for (int i = 0; i < n; i++) {
        if (reqs[i].write) {
            pattern_fill(st.aio_bufs[i], opn, reqs[i].off, reqs[i].len, false);
            io_prep_pwrite(&cbs[i], st.dfd, st.aio_bufs[i], reqs[i].len, reqs[i].off);
        } else {
            memset(st.aio_bufs[i], 0xee, reqs[i].len);
            io_prep_pread(&cbs[i], st.dfd, st.aio_bufs[i], reqs[i].len, reqs[i].off);
        }
        cbs[i].data = &reqs[i];
        cbp[i] = &cbs[i];
        reqs[i].done = false;
    }
    st.batch = reqs;
    st.batch_n = n;
    int r = io_submit(st.aio, n, cbp);
    if (r != n) {
        fail("io_submit of %d requests returned %d (%s)", n, r, r < 0 ? strerror(-r) : "short");
    }
}

/* Wait for the n requests of the batch to complete. */
static void aio_reap(int n)
{
    struct io_event ev[64];
    int done = 0;

    while (done < n) {
        int r = io_getevents(st.aio, 1, n - done, ev, NULL);
        if (r == -EINTR) {
            continue;
        }
        if (r <= 0) {
            fail("io_getevents returned %d (%s)", r, r < 0 ? strerror(-r) : "nothing");
        }
        for (int i = 0; i < r; i++) {
            AioReq *q = ev[i].data;
            q->res = (int64_t)ev[i].res;
            q->done = true;
        }
        done += r;
    }
}

/* Each request of a completed batch of disjoint requests must have run in full, each read
 * returning the model's data from before the batch (what: for messages).  Then the writes
 * go into the model. */
static void aio_check_apply(AioReq *reqs, int n, const char *what)
{
    for (int i = 0; i < n; i++) {
        AioReq *q = &reqs[i];
        if (q->res != q->len) {
            char a[32];
            fail("AIO %s of %" PRId64 "+%" PRId64 "%s returned %s, expected %" PRId64,
                 q->write ? "write" : "read", q->off, q->len, what,
                 result_str(q->res, a, sizeof(a)), q->len);
        }
        if (!q->write && memcmp(st.aio_bufs[i], st.model + q->off, q->len) != 0) {
            char view[96];
            snprintf(view, sizeof(view), "AIO O_DIRECT read%s", what);
            fail_mismatch(view, q->off, st.aio_bufs[i], q->len);
        }
    }
    for (int i = 0; i < n; i++) {
        if (reqs[i].write) {
            model_write(reqs[i].off, st.aio_bufs[i], reqs[i].len);
            st.bytes_written += reqs[i].len;
        }
    }
}

static void op_aio(Op *op)
{
    AioReq reqs[64];
    struct iocb cbs[64], *cbp[64];
    Rng r;
    int n;

    op_rng(&r, op->n);
    n = aio_layout(&r, op->off, min64(op->len, st.size - op->off), op->arg, o.max_len, reqs);
    op->result = n;
    if (n == 0) {
        return;
    }
    aio_submit_all(reqs, n, op->n, cbs, cbp);
    aio_reap(n);
    aio_check_apply(reqs, n, "");
    st.batch_n = 0;
    check_after(op, op->off, op->len, false);
}

/*
 * fallocate (mode op->arg: 0, punch, zero range) on [off, off+len) inside the file while a
 * batch of O_DIRECT requests is in flight around it, on disjoint bytes that may share its
 * clusters.  Everything must come out as if one had run after the other.
 */
static void op_race_falloc(Op *op)
{
    int64_t off = op->off, len = min64(op->len, st.size - op->off);
    AioReq reqs[64];
    struct iocb cbs[64], *cbp[64];
    Rng r;
    int n, m;

    op->result = 0;
    if (len <= 0) {
        return;
    }
    op_rng(&r, op->n);
    int count = 2 + rnd(&r, o.aio_depth - 1);
    n = aio_layout(&r, 0, off, count / 2, o.max_len, reqs);
    m = n + aio_layout(&r, off + len, st.size - off - len, count - n, o.max_len, reqs + n);
    if (m > 0) {
        aio_submit_all(reqs, m, op->n, cbs, cbp);
    }
    op->result = fallocate(st.fd, op->arg, off, len) ? -errno : 0;
    if (m > 0) {
        aio_reap(m);
    }
    expect_result(op, 0, "fallocate racing O_DIRECT requests");
    aio_check_apply(reqs, m, " racing a fallocate");
    if (op->arg & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
        model_zero(off, len);
    }
    check_after(op, off, len, true);
    if (m > 0) {
        check_after(op, reqs[0].off, reqs[m - 1].off + reqs[m - 1].len - reqs[0].off, true);
    }
    st.batch_n = 0;
}

/* Grow to op->off while a batch of O_DIRECT requests is in flight inside the old size. */
static void op_race_grow(Op *op)
{
    int64_t old = st.size, size = op->off;
    AioReq reqs[64];
    struct iocb cbs[64], *cbp[64];
    Rng r;
    int n;

    op->result = 0;
    if (size <= old || size % o.size_align) {
        return;     /* a trimmed replay log may ask for what the generator never does */
    }
    op_rng(&r, op->n);
    n = aio_layout(&r, 0, old, op->arg, RACE_MAX_LEN, reqs);
    if (n > 0) {
        aio_submit_all(reqs, n, op->n, cbs, cbp);
    }
    op->result = ftruncate(st.fd, size) ? -errno : 0;
    if (n > 0) {
        aio_reap(n);
    }
    expect_result(op, 0, "ftruncate racing O_DIRECT requests");
    aio_check_apply(reqs, n, " racing a grow");
    model_resize(size);
    check_after(op, 0, 0, true);
    if (n > 0) {
        check_after(op, reqs[0].off, reqs[n - 1].off + reqs[n - 1].len - reqs[0].off, true);
    }
    st.batch_n = 0;
}

/*
 * Shrink to op->off while a batch of O_DIRECT requests is in flight, some below the new
 * size, some entirely past it (none straddling it), then grow back.  Each request either
 * ran before the shrink (full count, correct data) or after it (past the end: ENOSPC for a
 * write, 0 bytes for a read); the requests below the new size always complete in full.
 * Whatever the interleaving, afterwards the size is the new one, and once grown back the
 * cut-off range reads as zeros: no write in flight may leave data past the new end.
 */
static void op_race_truncate(Op *op)
{
    int64_t cut = op->off, old = st.size;
    AioReq reqs[64];
    struct iocb cbs[64], *cbp[64];
    Rng r;
    int n, m = 0;

    if (cut % o.size_align || cut >= old || o.growable || o.no_shrink) {
        op->result = 0;
        return;     /* a trimmed replay log may ask for what the generator never does */
    }
    op_rng(&r, op->n);
    /* Up to 64 KiB each: one FUSE request, which runs wholly before or after the shrink. */
    n = aio_layout(&r, 0, cut, op->arg / 2, RACE_MAX_LEN, reqs);
    m = n + aio_layout(&r, cut, old - cut, op->arg - n, RACE_MAX_LEN, reqs + n);
    op->result = m;
    if (m == 0) {
        return;
    }
    aio_submit_all(reqs, m, op->n, cbs, cbp);
    if (ftruncate(st.fd, cut) != 0) {
        fail("ftruncate to %" PRId64 " racing %d requests failed: %s", cut, m, strerror(errno));
    }
    aio_reap(m);
    for (int i = 0; i < m; i++) {
        AioReq *q = &reqs[i];
        bool past = q->off >= cut;
        char a[32];
        if (reqs[i].res == q->len) {
            st.race_before += past;
            if (!q->write && memcmp(st.aio_bufs[i], st.model + q->off, q->len) != 0) {
                fail_mismatch("AIO O_DIRECT read racing a shrink", q->off, st.aio_bufs[i],
                              q->len);
            }
        } else if (past && reqs[i].res == (q->write ? -ENOSPC : 0)) {
            st.race_after++;
        } else {
            fail("AIO %s of %" PRId64 "+%" PRId64 " racing a shrink to %" PRId64 " returned %s"
                 ", expected %" PRId64 "%s", q->write ? "write" : "read", q->off, q->len, cut,
                 result_str(reqs[i].res, a, sizeof(a)), q->len,
                 past ? (q->write ? " or ENOSPC" : " or 0") : "");
        }
    }
    for (int i = 0; i < m; i++) {
        if (reqs[i].write && reqs[i].off < cut) {
            model_write(reqs[i].off, st.aio_bufs[i], reqs[i].len);
        }
    }
    model_resize(cut);
    check_size();
    if (ftruncate(st.fd, old) != 0) {
        fail("ftruncate back to %" PRId64 " after the race failed: %s", old, strerror(errno));
    }
    model_resize(old);
    check_size();
    check_read_direct(max64(0, cut - 4096), old - max64(0, cut - 4096));
    check_read_buffered(max64(0, cut - 4096), old - max64(0, cut - 4096));
    st.batch_n = 0;
}

/* --- generating operations -------------------------------------------------------------- */

static OpKind pick_kind(Rng *r)
{
    unsigned total = 0, x;
    int k;

    for (k = 0; k < OP__MAX; k++) {
        total += o.enabled[k] ? op_info[k].weight : 0;
    }
    x = rnd(r, total);
    for (k = 0; k < OP__MAX; k++) {
        unsigned w = o.enabled[k] ? op_info[k].weight : 0;
        if (x < w) {
            break;
        }
        x -= w;
    }
    return k;
}

/* A length: often small, sometimes up to max_len; aligned to a (at least a). */
static int64_t pick_len(Rng *r, int64_t a)
{
    int64_t l = chance(r, 30) ? 1 + rnd(r, 512) : 1 + rnd(r, o.max_len);

    return max64(a, round_down(l, a));
}

static int64_t pick_align(Rng *r)
{
    int x = rnd(r, 100);

    return x < 40 ? 1 : x < 70 ? 512 : 4096;
}

/* An offset: mostly inside the file, sometimes near its end so that len straddles it or
 * lies past it; aligned to a. */
static int64_t pick_off(Rng *r, int64_t a, int64_t len, bool may_pass_end)
{
    int64_t off;

    if (may_pass_end && chance(r, 20)) {
        off = st.size - len + rnd(r, 2 * len + 8192);
    } else {
        off = rnd(r, st.size);
    }
    off = round_down(max64(0, off), a);
    return off;
}

/* Keep a range that may grow the file inside max_size. */
static void clip_growth(Rng *r, Op *op)
{
    int64_t cap = round_down(o.max_size, o.size_align);

    if (grown_size(op->off + op->len) <= o.max_size) {
        return;
    }
    if (op->off >= cap) {
        op->off = rnd(r, cap);
    }
    op->len = max64(1, min64(op->len, cap - op->off));
}

static int64_t pick_size(Rng *r)
{
    int64_t s;
    int x = rnd(r, 100);

    if (x < 40) {
        s = rnd(r, o.max_size + 1);
    } else if (x < 80) {
        s = st.size + rnd(r, 2 * o.max_len + 1) - o.max_len;  /* near the current size */
    } else {
        s = o.max_size - rnd(r, o.max_len);                    /* keep the file large */
    }
    s = min64(max64(s, 0), o.max_size);
    if (o.size_align > 1 && chance(r, 80)) {
        s = round_down(s, o.size_align);
    } else if (chance(r, 50)) {
        s = round_down(s, 512);
    }
    return s;
}

static void gen_op(Op *op)
{
    Rng *r = &st.rng;
    int64_t a;

    memset(op, 0, sizeof(*op));
    op->kind = pick_kind(r);
    switch (op->kind) {
    case OP_READ:
    case OP_DREAD:
        a = op->kind == OP_DREAD ? pick_align(r) : 1;
        op->len = pick_len(r, a);
        op->off = pick_off(r, a, op->len, true);
        break;
    case OP_WRITE:
    case OP_DWRITE:
        a = op->kind == OP_DWRITE ? pick_align(r) : 1;
        op->len = pick_len(r, a);
        op->off = pick_off(r, a, op->len, true);
        op->arg = chance(r, 8);
        if (o.growable) {
            clip_growth(r, op);
        }
        if (op->kind == OP_DWRITE && o.direct_inside && op->off + op->len > st.size) {
            op->off = round_down(rnd(r, st.size), a);
            op->len = min64(op->len, st.size - op->off);
        }
        break;
    case OP_MAPREAD:
    case OP_MAPWRITE:
        op->len = pick_len(r, 1);
        op->off = rnd(r, st.size);
        op->len = max64(0, min64(op->len, st.size - op->off));
        if (op->kind == OP_MAPWRITE) {
            op->arg = chance(r, 70) ? 1 : chance(r, 50) ? 2 : 0;
        } else if (chance(r, 20)) {
            op->len = st.size - op->off;                        /* up to the end */
        }
        break;
    case OP_TRUNCATE:
        op->off = pick_size(r);
        break;
    case OP_FALLOC:
    case OP_FALLOC_KEEP:
    case OP_PUNCH:
    case OP_ZERO:
    case OP_ZERO_KEEP:
    case OP_FALLOC_REFUSED:
        a = pick_align(r);
        op->len = pick_len(r, a);
        op->off = pick_off(r, a, op->len, true);
        clip_growth(r, op);
        if (op->kind == OP_FALLOC_REFUSED) {
            op->arg = refused_modes[rnd(r, sizeof(refused_modes) / sizeof(refused_modes[0]))];
        }
        break;
    case OP_FSYNC:
    case OP_FDATASYNC:
        op->arg = chance(r, 30);
        break;
    case OP_SEEK:
        op->arg = chance(r, 50) ? SEEK_DATA : SEEK_HOLE;
        op->off = chance(r, 10) ? st.size + rnd(r, 4096) : rnd(r, st.size);
        break;
    case OP_STAT:
    case OP_REOPEN:
        break;
    case OP_AIO:
        op->arg = 2 + rnd(r, o.aio_depth - 1);
        op->len = 1 + rnd(r, min64(st.size, (int64_t)op->arg * o.max_len));
        op->off = rnd(r, st.size - op->len + 1);
        break;
    case OP_RACE_TRUNCATE:
        op->arg = 2 + rnd(r, o.aio_depth - 1);
        op->off = round_down(rnd(r, st.size), max64(o.size_align, chance(r, 50) ? 4096 : 512));
        break;
    case OP_RACE_FALLOC:
        a = pick_align(r);
        op->len = pick_len(r, a);
        op->off = round_down(rnd(r, st.size), a);
        op->len = max64(1, min64(op->len, st.size - op->off));
        op->arg = race_falloc_modes[rnd(r, sizeof(race_falloc_modes) /
                                           sizeof(race_falloc_modes[0]))];
        break;
    case OP_RACE_GROW:
        op->arg = 2 + rnd(r, o.aio_depth - 1);
        op->off = round_up(st.size + 1 + rnd(r, max64(0, o.max_size - st.size)), o.size_align);
        if (op->off > o.max_size) {
            op->off = 0;    /* already as large as it may get: nothing to do */
        }
        break;
    case OP__MAX:
        break;
    }
}

static const char *kind_names(void)
{
    static char buf[512];
    size_t n = 0;

    for (int k = 0; k < OP__MAX; k++) {
        n += snprintf(buf + n, sizeof(buf) - n, "%s%s", k ? "," : "", op_info[k].name);
    }
    return buf;
}

static OpKind kind_by_name(const char *name)
{
    for (int k = 0; k < OP__MAX; k++) {
        if (strcmp(op_info[k].name, name) == 0) {
            return k;
        }
    }
    return OP__MAX;
}

/* Read the next operation of the replay file into op.  False at its end. */
static bool read_replay_op(Op *op)
{
    char line[512], name[64];
    int64_t off, len, arg;
    uint64_t n;

    while (fgets(line, sizeof(line), st.replay)) {
        char *p = line + strspn(line, " \t");
        if (*p == '#' || *p == '\n' || *p == '\0') {
            continue;
        }
        if (sscanf(p, "%" SCNu64 " %63s %" SCNi64 " %" SCNi64 " %" SCNi64, &n, name, &off, &len,
                   &arg) != 5 || kind_by_name(name) == OP__MAX || off < 0 || len < 0) {
            die(2, "%s: not an operation line: %s", o.replay, line);
        }
        memset(op, 0, sizeof(*op));
        op->n = n;
        op->kind = kind_by_name(name);
        op->off = off;
        op->len = len;
        op->arg = arg;
        return true;
    }
    return false;
}

/* --- running -------------------------------------------------------------------------- */

static void run_op(Op *op)
{
    op->size_before = st.size;
    st.cur = op;
    switch (op->kind) {
    case OP_READ: op_read(op, false); break;
    case OP_DREAD: op_read(op, true); break;
    case OP_WRITE: op_write(op, false); break;
    case OP_DWRITE: op_write(op, true); break;
    case OP_MAPREAD: op_mapread(op); break;
    case OP_MAPWRITE: op_mapwrite(op); break;
    case OP_TRUNCATE: op_truncate(op); break;
    case OP_FALLOC: op_fallocate(op, 0); break;
    case OP_FALLOC_KEEP: op_fallocate(op, FALLOC_FL_KEEP_SIZE); break;
    case OP_PUNCH: op_fallocate(op, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE); break;
    case OP_ZERO: op_fallocate(op, FALLOC_FL_ZERO_RANGE); break;
    case OP_ZERO_KEEP: op_fallocate(op, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE); break;
    case OP_FALLOC_REFUSED: op_falloc_refused(op); break;
    case OP_FSYNC: op_sync(op, false); break;
    case OP_FDATASYNC: op_sync(op, true); break;
    case OP_SEEK: op_seek(op); break;
    case OP_STAT: op_stat(op); break;
    case OP_REOPEN: op_reopen(op); break;
    case OP_AIO: op_aio(op); break;
    case OP_RACE_TRUNCATE: op_race_truncate(op); break;
    case OP_RACE_FALLOC: op_race_falloc(op); break;
    case OP_RACE_GROW: op_race_grow(op); break;
    case OP__MAX: break;
    }
    op->size_after = st.size;
    st.counts[op->kind]++;
    log_op(op);
    st.cur = NULL;
}

/* Validate a replayed operation enough that it cannot overrun the model or the buffers. */
static bool replay_op_fits(const Op *op)
{
    int64_t end = op->off + op->len;

    switch (op->kind) {
    case OP_TRUNCATE:
    case OP_RACE_TRUNCATE:
    case OP_RACE_GROW:
        return op->off <= o.max_size && op->arg <= (int64_t)o.aio_depth;
    case OP_WRITE:
    case OP_DWRITE:
        return op->len <= o.max_len && (!o.growable || grown_size(end) <= o.max_size);
    case OP_FALLOC:
    case OP_ZERO:
        return grown_size(end) <= o.max_size;
    case OP_AIO:
        return op->arg >= 1 && op->arg <= (int64_t)o.aio_depth;
    default:
        return op->len <= o.max_size + ALIGN_BUF;
    }
}

/* The initial model: the file's contents, or (--init=fill) a pattern written over it. */
static void init_model(void)
{
    struct stat sb;

    if (fstat(st.fd, &sb) != 0) {
        die(1, "%s: fstat failed: %s", o.file, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode)) {
        die(1, "%s: not a regular file", o.file);
    }
    st.size = sb.st_size;
    if (o.max_size == 0) {
        o.max_size = max64(2 * st.size, 1 << 20);
    }
    o.max_size = round_down(max64(o.max_size, st.size), o.size_align);
    if (o.max_len > o.max_size) {
        o.max_len = max64(1, o.max_size);
    }
    if (o.blocks_slack < 0) {
        /* raw: the host file system's own metadata counted in st_blocks (ext4's extent tree
         * blocks).  qcow2: also header, L1, refcount table and blocks, L2 tables, and
         * clusters freed by a shrink that the allocator has not reused yet. */
        o.blocks_slack = (64 << 10) + o.max_size / 64 + (o.qcow2 ? (4 << 20) + o.max_size : 0);
    }
    st.model = calloc(1, o.max_size + 1);
    if (posix_memalign((void **)&st.buf, ALIGN_BUF, o.max_size + 2 * ALIGN_BUF) ||
        posix_memalign((void **)&st.buf2, ALIGN_BUF, o.max_size + 2 * ALIGN_BUF) || !st.model) {
        die(1, "cannot allocate %" PRId64 " bytes for the model", 3 * o.max_size);
    }
    if (o.init_fill) {
        pattern_fill(st.model, 0, 0, st.size, false);
        for (int64_t off = 0; off < st.size; off += 1 << 20) {
            int64_t l = min64(1 << 20, st.size - off);
            if (do_pwrite(st.fd, st.model + off, l, off) != l) {
                die(1, "%s: cannot fill at %" PRId64 ": %s", o.file, off, strerror(errno));
            }
        }
    } else {
        int64_t r = do_pread(st.fd, st.model, st.size, 0);
        if (r != st.size) {
            die(1, "%s: cannot read its %" PRId64 " bytes: %s", o.file, st.size,
                r < 0 ? strerror(-r) : "short read");
        }
    }
}

static void print_summary(void)
{
    printf("%s: seed %" PRIu64 ": %" PRIu64 " operations in %.1f s, all checks passed; final "
           "size %" PRId64 "; %.1f MiB read, %.1f MiB written\n", prog, o.seed, st.log_n,
           elapsed(), st.size, st.bytes_read / 1048576.0, st.bytes_written / 1048576.0);
    printf("%s:", prog);
    for (int k = 0; k < OP__MAX; k++) {
        if (st.counts[k]) {
            printf(" %s %" PRIu64, op_info[k].name, st.counts[k]);
        }
    }
    printf("\n");
    if (st.counts[OP_RACE_TRUNCATE]) {
        printf("%s: race-truncate: %" PRIu64 " requests past the cut ran before the shrink, %"
               PRIu64 " after it\n", prog, st.race_before, st.race_after);
    }
}

/* --- options -------------------------------------------------------------------------- */

/* Set the kinds named in list (comma-separated names or groups, or "all") to on. */
static void set_kinds(const char *list, bool on)
{
    char *copy = strdup(list), *save = NULL;

    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        OpKind k = kind_by_name(t);
        bool found = k != OP__MAX;
        if (found) {
            o.enabled[k] = on;
        } else if (strcmp(t, "all") == 0) {
            for (k = 0; k < OP__MAX; k++) {
                o.enabled[k] = on;
            }
            found = true;
        }
        for (size_t g = 0; !found && g < sizeof(op_groups) / sizeof(op_groups[0]); g++) {
            if (strcmp(op_groups[g].name, t) == 0) {
                for (int i = 0; i < op_groups[g].n; i++) {
                    o.enabled[op_groups[g].kinds[i]] = on;
                }
                found = true;
            }
        }
        if (!found) {
            die(2, "unknown operation kind '%s' (kinds: %s; groups: direct, mmap, fallocate, "
                "sync, race, all)", t, kind_names());
        }
    }
    free(copy);
}

static void usage(FILE *f)
{
    fprintf(f,
"Usage: %s [OPTION]... FILE\n"
"Run random operations against FILE (a blkfuse export) and check each against a model.\n"
"\n"
"  -N, --ops=N              operations to run (default 10000; 0: until --duration ends)\n"
"  -d, --duration=SECS      stop after SECS seconds at the latest\n"
"  -S, --seed=N             random seed (default: from the clock; printed)\n"
"  -l, --max-len=BYTES      longest single read or write (default 128k)\n"
"  -m, --max-size=BYTES     largest size the file may reach (default: twice its size,\n"
"                           at least 1M)\n"
"  -c, --check-every=N      compare the whole file every N operations (default 100;\n"
"                           0: only at the end)\n"
"  -k, --kinds=LIST         run only these operation kinds (default: all)\n"
"  -x, --exclude=LIST       do not run these kinds\n"
"      --format=raw|qcow2   the export's rules: qcow2 sizes are whole 512-byte sectors\n"
"                           (other sizes EINVAL, growth rounds up) (default raw)\n"
"      --size-align=N       sizes are multiples of N, as --format=qcow2 with 512\n"
"      --growable           the export is --growable: writes past the end grow it\n"
"      --no-shrink          shrinking fails with EOPNOTSUPP (a qcow2 with internal\n"
"                           snapshots)\n"
"      --raw-image=PATH     the raw image behind the export: its size must follow the\n"
"                           model after every operation, its contents at every check\n"
"      --blocks-slack=BYTES st_blocks may exceed the size (rounded to 4k) by this much\n"
"                           (default: 64k + max-size/64; for qcow2 4M + max-size more)\n"
"      --no-blocks-check    do not check st_blocks (an image with a backing file)\n"
"      --aio-depth=N        most requests in one aio or race-truncate batch (default 8)\n"
"      --direct-inside      O_DIRECT writes never reach past the end (to look for other\n"
"                           bugs while one there is open; the test suite never uses it)\n"
"      --init=keep|fill     the model starts as the file's contents (keep, default), or\n"
"                           a pattern is written over the whole file first (fill)\n"
"      --dump=FILE          write the model's final contents to FILE (also on failure)\n"
"      --log-file=FILE      write every operation to FILE, one replayable line each\n"
"      --replay=FILE        run the operations in FILE (same --seed) instead of random ones\n"
"      --show-log=N         operations printed on a failure (default 50)\n"
"  -v, --verbose            print every operation\n"
"  -q, --quiet              print nothing on success\n"
"  -h, --help               show this help\n"
"  -V, --version            show the version\n"
"\n"
"Operation kinds (groups: direct, mmap, fallocate, sync, race):\n", prog);
    for (int k = 0; k < OP__MAX; k++) {
        fprintf(f, "  %-16s %s\n", op_info[k].name, op_info[k].help);
    }
    fprintf(f,
"\n"
"Exit status: 0 all checks passed, 1 a check failed, 2 usage error.\n");
}

static void parse_args(int argc, char **argv)
{
    enum {
        OPT_FORMAT = 256, OPT_SIZE_ALIGN, OPT_GROWABLE, OPT_RAW_IMAGE, OPT_BLOCKS_SLACK,
        OPT_NO_BLOCKS, OPT_NO_SHRINK, OPT_DIRECT_INSIDE, OPT_AIO_DEPTH, OPT_INIT, OPT_DUMP, OPT_LOG_FILE, OPT_REPLAY, OPT_SHOW_LOG,
    };
    static const struct option longopts[] = {
        { "ops", required_argument, NULL, 'N' },
        { "duration", required_argument, NULL, 'd' },
        { "seed", required_argument, NULL, 'S' },
        { "max-len", required_argument, NULL, 'l' },
        { "max-size", required_argument, NULL, 'm' },
        { "check-every", required_argument, NULL, 'c' },
        { "kinds", required_argument, NULL, 'k' },
        { "exclude", required_argument, NULL, 'x' },
        { "format", required_argument, NULL, OPT_FORMAT },
        { "size-align", required_argument, NULL, OPT_SIZE_ALIGN },
        { "growable", no_argument, NULL, OPT_GROWABLE },
        { "raw-image", required_argument, NULL, OPT_RAW_IMAGE },
        { "blocks-slack", required_argument, NULL, OPT_BLOCKS_SLACK },
        { "no-blocks-check", no_argument, NULL, OPT_NO_BLOCKS },
        { "no-shrink", no_argument, NULL, OPT_NO_SHRINK },
        { "aio-depth", required_argument, NULL, OPT_AIO_DEPTH },
        { "direct-inside", no_argument, NULL, OPT_DIRECT_INSIDE },
        { "init", required_argument, NULL, OPT_INIT },
        { "dump", required_argument, NULL, OPT_DUMP },
        { "log-file", required_argument, NULL, OPT_LOG_FILE },
        { "replay", required_argument, NULL, OPT_REPLAY },
        { "show-log", required_argument, NULL, OPT_SHOW_LOG },
        { "verbose", no_argument, NULL, 'v' },
        { "quiet", no_argument, NULL, 'q' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { 0 }
    };
    bool have_seed = false, kinds_given = false;
    int c;

    o = (Opts){ .ops = 10000, .max_len = 128 << 10, .check_every = 100, .size_align = 1,
                .blocks_check = true, .blocks_slack = -1, .aio_depth = 8, .show_log = 50 };
    set_kinds("all", true);
    while ((c = getopt_long(argc, argv, "N:d:S:l:m:c:k:x:vqhV", longopts, NULL)) != -1) {
        switch (c) {
        case 'N': o.ops = parse_size("operation count", optarg, OPT_MAX); break;
        case 'd': o.duration = parse_size("duration", optarg, OPT_MAX); break;
        case 'S': o.seed = parse_size("seed", optarg, OPT_MAX); have_seed = true; break;
        case 'l': o.max_len = parse_size("maximum length", optarg, OPT_MAX); break;
        case 'm': o.max_size = parse_size("maximum size", optarg, OPT_MAX); break;
        case 'c': o.check_every = parse_size("check interval", optarg, OPT_MAX); break;
        case 'k':
            if (!kinds_given) {
                set_kinds("all", false);
                kinds_given = true;
            }
            set_kinds(optarg, true);
            break;
        case 'x': set_kinds(optarg, false); break;
        case OPT_FORMAT:
            if (strcmp(optarg, "qcow2") == 0) {
                o.qcow2 = true;
                o.size_align = 512;
            } else if (strcmp(optarg, "raw") == 0) {
                o.qcow2 = false;
                o.size_align = 1;
            } else {
                die(2, "unknown format '%s' (raw or qcow2)", optarg);
            }
            break;
        case OPT_SIZE_ALIGN: o.size_align = parse_size("size alignment", optarg, OPT_MAX); break;
        case OPT_GROWABLE: o.growable = true; break;
        case OPT_RAW_IMAGE: o.raw_image = optarg; break;
        case OPT_BLOCKS_SLACK: o.blocks_slack = parse_size("blocks slack", optarg, OPT_MAX); break;
        case OPT_NO_BLOCKS: o.blocks_check = false; break;
        case OPT_NO_SHRINK: o.no_shrink = true; break;
        case OPT_DIRECT_INSIDE: o.direct_inside = true; break;
        case OPT_AIO_DEPTH: o.aio_depth = parse_size("AIO depth", optarg, OPT_MAX); break;
        case OPT_INIT:
            if (strcmp(optarg, "keep") && strcmp(optarg, "fill")) {
                die(2, "unknown --init '%s' (keep or fill)", optarg);
            }
            o.init_fill = strcmp(optarg, "fill") == 0;
            break;
        case OPT_DUMP: o.dump = optarg; break;
        case OPT_LOG_FILE: o.log_file = optarg; break;
        case OPT_REPLAY: o.replay = optarg; break;
        case OPT_SHOW_LOG: o.show_log = parse_size("log length", optarg, OPT_MAX); break;
        case 'v': o.verbose = 1; break;
        case 'q': o.verbose = -1; break;
        case 'h': usage(stdout); exit(0);
        case 'V': printf("%s %s\n", prog, BLKFSX_VERSION); exit(0);
        default:
            fprintf(stderr, "Try '%s --help'.\n", prog);
            exit(2);
        }
    }
    if (optind == argc) {
        die(2, "no FILE given (try '%s --help')", prog);
    }
    if (optind + 1 < argc) {
        die(2, "unexpected argument '%s'", argv[optind + 1]);
    }
    o.file = argv[optind];
    if (o.size_align < 1 || o.max_len < 1 || o.show_log < 1) {
        die(2, "--size-align, --max-len and --show-log must be at least 1");
    }
    if (o.aio_depth < 2 || o.aio_depth > 64) {
        die(2, "--aio-depth must be 2 to 64, not %u", o.aio_depth);
    }
    if (o.ops == 0 && o.duration == 0 && !o.replay) {
        die(2, "--ops=0 needs --duration");
    }
    if ((o.growable || o.no_shrink) && o.enabled[OP_RACE_TRUNCATE]) {
        /* Growable: a write that lands after the shrink would grow the file again, with no
         * fixed outcome.  No shrink: nothing to race. */
        o.enabled[OP_RACE_TRUNCATE] = false;
    }
    if (!have_seed) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        o.seed = ((uint64_t)tv.tv_sec * 1000000 + tv.tv_usec) ^ ((uint64_t)getpid() << 32);
        o.seed %= 1000000000;
    }
    bool any = false;
    for (int k = 0; k < OP__MAX; k++) {
        any |= o.enabled[k];
    }
    if (!any && !o.replay) {
        die(2, "no operation kinds left to run");
    }
}

int main(int argc, char **argv)
{
    struct sigaction sa = { .sa_handler = on_sigbus };
    uint64_t since_check = 0;
    Op op;

    parse_args(argc, argv);
    clock_gettime(CLOCK_MONOTONIC, &st.start);
    sigaction(SIGBUS, &sa, NULL);
    open_files();
    init_model();
    rng_init(&st.rng, o.seed);
    st.log = calloc(o.show_log, sizeof(Op));
    st.aio_bufs = calloc(o.aio_depth, sizeof(uint8_t *));
    for (unsigned i = 0; i < o.aio_depth; i++) {
        if (posix_memalign((void **)&st.aio_bufs[i], ALIGN_BUF, o.max_len + 8192)) {
            die(1, "cannot allocate AIO buffers");
        }
    }
    if (io_setup(o.aio_depth, &st.aio) != 0) {
        die(1, "io_setup(%u) failed", o.aio_depth);
    }
    if (o.log_file && !(st.log_file = fopen(o.log_file, "w"))) {
        die(1, "%s: cannot create: %s", o.log_file, strerror(errno));
    }
    if (o.replay && !(st.replay = fopen(o.replay, "r"))) {
        die(1, "%s: cannot open: %s", o.replay, strerror(errno));
    }
    if (st.log_file) {
        fprintf(st.log_file, "# blkfsx seed %" PRIu64 ", %s, initial size %" PRId64 "\n",
                o.seed, o.file, st.size);
    }
    if (o.verbose >= 0) {
        printf("%s: seed %" PRIu64 ", %s: size %" PRId64 ", max size %" PRId64 ", max length %"
               PRId64 "%s%s\n", prog, o.seed, o.file, st.size, o.max_size, o.max_len,
               o.qcow2 ? ", qcow2 rules" : "", o.growable ? ", growable" : "");
        fflush(stdout);
    }
    check_all();

    for (uint64_t i = 1; o.ops == 0 || i <= o.ops; i++) {
        if (o.duration && elapsed() >= o.duration) {
            break;
        }
        if (st.replay) {
            if (!read_replay_op(&op)) {
                break;
            }
            if (!replay_op_fits(&op)) {
                die(2, "%s: operation %" PRIu64 " does not fit --max-size/--max-len/--aio-depth",
                    o.replay, op.n);
            }
        } else {
            gen_op(&op);
            op.n = i;
        }
        run_op(&op);
        if (o.check_every && ++since_check >= o.check_every) {
            st.cur = &op;       /* a failure is reported against the last operation */
            st.cur_logged = true;
            check_all();
            st.cur = NULL;
            st.cur_logged = false;
            since_check = 0;
        }
    }
    st.cur = NULL;
    check_all();
    if (fsync(st.fd) != 0) {
        fail("final fsync failed: %s", strerror(errno));
    }
    close_files();
    io_destroy(st.aio);
    if (o.dump) {
        dump_model(o.dump);
    }
    if (st.log_file) {
        fclose(st.log_file);
    }
    if (o.verbose >= 0) {
        print_summary();
    }
    return 0;
}
