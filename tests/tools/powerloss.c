/* powerloss.c - crash an image operation at each of its writes and check what survives.
 *
 * Usage: powerloss [OPTION]... IMAGE SCRIPT
 *
 * SCRIPT is a list of block-layer requests, one per line ('#' comments; sizes take k, M, G):
 *
 *     write OFFSET LENGTH          (contents: a pattern unique to the line)
 *     zero OFFSET LENGTH [unmap]
 *     discard OFFSET LENGTH
 *     preallocate OFFSET LENGTH
 *     truncate SIZE [off|metadata|falloc|full]
 *     flush
 *
 * Method.  The script first runs once on a copy of IMAGE through the fault-injection filter
 * with a trace rule (blkfuse's block layer, in this process: blk_new_open with fault-rules=),
 * which counts the requests that reach the image file and change it or flush it: the crash
 * points 0..K-1.  Then, for every crash point i, a fresh copy of IMAGE runs the script with
 * "powerfail after=i mode=all" (every change since the last flush is lost).  At the crash
 * points that are flushes and at the last one, where the most changes are pending (a subset of
 * an earlier point's changes is a subset of these too), it also runs with mode=lose-one for
 * each pending change (all survive but that one: this finds every pair of changes where one
 * reached the disk without the other it depends on) and, with --seeds=N, with mode=random and
 * seeds 1..N (a random subset survives, in order); --random-everywhere does both at every
 * point.  The run stops at the failed request; the image is closed (nothing
 * more reaches the file) and checked:
 *
 *   - an image left dirty (qcow2 lazy refcounts) is first opened read-write by blkfuse, which
 *     repairs it, as it would at the next mount;
 *   - `qemu-img check` reports no corruption (exit 0, or 3: leaks only) and no corrupt bit;
 *   - the model: the image, read through blkfuse's block layer (and by `qemu-img convert -O raw`
 *     without a crash, and after every crash with --qemu-read-all), holds exactly what the requests
 *     completed before the last successful flush left (and what it held before, where they did
 *     not write), except where a request after that flush (or the failed one) touched it: there
 *     a byte may hold its old value or the value of any of those requests.  The virtual size is
 *     the one at the last flush or one set by such a request.
 *
 * The run without a crash must leave exactly the model of the whole script.  Crashes between
 * the same two flushes in mode=all leave the same image, which is checked once.
 *
 * Options:
 *   -f FORMAT        image format (default qcow2)
 *   --seeds=N        also crash with mode=random and seeds 1..N (default 0)
 *   --random-everywhere  lose-one and random crashes at every point, not only at flushes
 *   --qemu-read-all  read every crashed image with qemu-img convert too
 *   --points=A-B     only crash points A..B (default: all)
 *   --work=DIR       scratch directory for the copies (default: the image's directory)
 *   --snapshot=NAME  the image has an internal snapshot NAME: it must read as before, always
 *   --test-skip-flushes  for the suite's self-test: skip the script's flushes but count them
 *                    as done, like a disk that ignores flushes; the tool must then find lost data
 *   --test-corrupt   for the self-test: zero the first refcount table entry of every crashed
 *                    qcow2 image before checking it; qemu-img check must then find corruption
 *   -v               print the model of every run, not only of failed ones
 *
 * Output: one line per failed run (FAIL ...) with the model, and a summary line.  Exit status:
 * 0 all runs passed, 1 a run failed, 2 usage or set-up error.
 */
#include "config.h"
#include "block/backend.h"
#include "block/aio.h"
#include "block/util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (64 * 1024)               /* model granularity */
#define CRASH_OPS "write,zero,discard,truncate,flush"

static gboolean opt_skip_flushes;       /* --test-skip-flushes */
static gboolean opt_test_corrupt;       /* --test-corrupt */

/* --- the script --- */

typedef enum { S_WRITE, S_ZERO, S_DISCARD, S_PREALLOC, S_TRUNCATE, S_FLUSH } StepKind;

static const char *const step_names[] = {
    [S_WRITE] = "write", [S_ZERO] = "zero", [S_DISCARD] = "discard",
    [S_PREALLOC] = "preallocate", [S_TRUNCATE] = "truncate", [S_FLUSH] = "flush",
};

typedef struct Step {
    StepKind kind;
    int64_t offset, bytes;      /* truncate: offset is the new size */
    bool unmap;                 /* zero */
    PreallocMode prealloc;      /* truncate */
    unsigned line;
} Step;

static GArray *steps;           /* Step */

/* The byte a write step puts at offset: a pattern unique to the step, rarely zero. */
static uint8_t step_byte(unsigned step, int64_t offset)
{
    uint64_t x = (uint64_t)offset * 0x9E3779B97F4A7C15ull + (step + 1) * 0xBF58476D1CE4E5B9ull;

    return (uint8_t)((x >> 56) ^ (offset >> 9)) | 1;
}

static bool parse_script(const char *path, GError **errp)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    unsigned n = 0;

    if (!g_file_get_contents(path, &text, NULL, errp)) {
        return false;
    }
    steps = g_array_new(false, true, sizeof(Step));
    lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        g_auto(GStrv) w = NULL;
        char *hash = strchr(*l, '#');
        Step s = { .line = ++n };
        guint nw;
        int kind;
        uint64_t a = 0, b = 0;

        if (hash) {
            *hash = '\0';
        }
        w = g_strsplit_set(g_strstrip(*l), " \t", -1);
        nw = g_strv_length(w);
        if (nw == 0 || !*w[0]) {
            continue;
        }
        for (kind = 0; kind < (int)G_N_ELEMENTS(step_names); kind++) {
            if (!strcmp(w[0], step_names[kind])) {
                break;
            }
        }
        s.kind = kind;
        switch (kind) {
        case S_WRITE: case S_DISCARD: case S_PREALLOC: case S_ZERO:
            if (nw < 3 || !parse_size(w[1], &a, errp) || !parse_size(w[2], &b, errp) ||
                nw > 4 || (nw == 4 && (kind != S_ZERO || strcmp(w[3], "unmap")))) {
                goto bad;
            }
            s.offset = a;
            s.bytes = b;
            s.unmap = nw == 4;
            break;
        case S_TRUNCATE:
            if (nw < 2 || nw > 3 || !parse_size(w[1], &a, errp)) {
                goto bad;
            }
            s.offset = a;
            if (nw == 3) {
                const char *m[] = { "off", "metadata", "falloc", "full" };
                s.prealloc = -1;
                for (int i = 0; i < 4; i++) {
                    if (!strcmp(w[2], m[i])) {
                        s.prealloc = i;
                    }
                }
                if ((int)s.prealloc < 0) {
                    goto bad;
                }
            }
            break;
        case S_FLUSH:
            if (nw != 1) {
                goto bad;
            }
            break;
        default:
            goto bad;
        }
        g_array_append_val(steps, s);
        continue;
bad:
        g_clear_error(errp);
        error_setg(errp, "%s:%u: cannot parse '%s'", path, n, *l);
        return false;
    }
    return true;
}

/* --- the model: sparse contents, CHUNK bytes at a time (absent = zeros) --- */

/* Chunks are shared between copies of a content and copied when one of them changes. */
typedef struct Chunk {
    int ref;
    uint8_t data[CHUNK];
} Chunk;

static void chunk_unref(gpointer p)
{
    Chunk *ch = p;

    if (--ch->ref == 0) {
        g_free(ch);
    }
}

typedef struct Content {
    GHashTable *chunks;         /* chunk index -> Chunk */
    int64_t size;
} Content;

static Content *content_new(int64_t size)
{
    Content *c = g_new0(Content, 1);

    c->chunks = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, chunk_unref);
    c->size = size;
    return c;
}

static void content_free(Content *c)
{
    if (c) {
        g_hash_table_destroy(c->chunks);
        g_free(c);
    }
}

static Content *content_copy(const Content *src)
{
    Content *c = content_new(src->size);
    GHashTableIter it;
    gpointer k, v;

    g_hash_table_iter_init(&it, src->chunks);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        ((Chunk *)v)->ref++;
        g_hash_table_insert(c->chunks, g_memdup2(k, sizeof(int64_t)), v);
    }
    return c;
}

/* The bytes of chunk idx to read, or NULL if it is all zeros. */
static const uint8_t *content_chunk(Content *c, int64_t idx)
{
    Chunk *ch = g_hash_table_lookup(c->chunks, &idx);

    return ch ? ch->data : NULL;
}

/* The bytes of chunk idx to change (created zeroed if absent, unshared if shared). */
static uint8_t *content_chunk_rw(Content *c, int64_t idx)
{
    Chunk *ch = g_hash_table_lookup(c->chunks, &idx);

    if (ch && ch->ref > 1) {
        Chunk *copy = g_memdup2(ch, sizeof(*ch));
        copy->ref = 1;
        g_hash_table_insert(c->chunks, g_memdup2(&idx, sizeof(idx)), copy);   /* drops ch */
        ch = copy;
    } else if (!ch) {
        ch = g_new0(Chunk, 1);
        ch->ref = 1;
        g_hash_table_insert(c->chunks, g_memdup2(&idx, sizeof(idx)), ch);
    }
    return ch->data;
}

/* Set [off, off + len) to zero, or to step's pattern if step >= 0. */
static void content_fill(Content *c, int64_t off, int64_t len, int step)
{
    for (int64_t pos = off; pos < off + len; ) {
        int64_t idx = pos / CHUNK, in = pos % CHUNK;
        int64_t n = MIN(CHUNK - in, off + len - pos);
        uint8_t *p;

        if (step < 0 && in == 0 && n == CHUNK) {
            int64_t key = idx;
            g_hash_table_remove(c->chunks, &key);
        } else if (step >= 0 || content_chunk(c, idx)) {
            p = content_chunk_rw(c, idx);
            for (int64_t i = 0; i < n; i++) {
                p[in + i] = step < 0 ? 0 : step_byte(step, pos + i);
            }
        }
        pos += n;
    }
}

static void content_truncate(Content *c, int64_t size)
{
    GHashTableIter it;
    gpointer k;
    int64_t top = 0;

    /* everything past the new end reads as zeros if it grows back */
    g_hash_table_iter_init(&it, c->chunks);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        top = MAX(top, (*(int64_t *)k + 1) * CHUNK);
    }
    if (top > size) {
        content_fill(c, size, top - size, -1);
    }
    c->size = size;
}

/* Load a raw file (sparse: holes are zeros) into a new content. */
static Content *content_load_raw(const char *path, GError **errp)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    Content *c;
    off_t pos = 0;

    if (fd < 0 || fstat(fd, &st) < 0) {
        error_setg_errno(errp, errno, "%s", path);
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    c = content_new(st.st_size);
    while (pos < st.st_size) {
        off_t data = lseek(fd, pos, SEEK_DATA), hole;
        if (data < 0) {
            break;              /* ENXIO: only a hole is left */
        }
        hole = lseek(fd, data, SEEK_HOLE);
        for (int64_t idx = data / CHUNK; idx * CHUNK < hole; idx++) {
            uint8_t buf[CHUNK];
            ssize_t n = pread(fd, buf, CHUNK, idx * CHUNK);
            bool zero = true;
            if (n < 0) {
                error_setg_errno(errp, errno, "%s: read", path);
                content_free(c);
                close(fd);
                return NULL;
            }
            memset(buf + n, 0, CHUNK - n);
            for (int i = 0; i < CHUNK && zero; i++) {
                zero = buf[i] == 0;
            }
            if (!zero) {
                memcpy(content_chunk_rw(c, idx), buf, CHUNK);
            }
        }
        pos = hole;
    }
    close(fd);
    return c;
}

/* Read the whole disk of blk through blkfuse's block layer, skipping what reads as zeros. */
typedef struct ReadAll {
    BlockBackend *blk;
    Content *c;
    int ret;
} ReadAll;

#define READ_MAX (1024 * 1024)

/* Read [off, off + n) of the disk (n <= READ_MAX) into the content's chunks. */
static int coroutine_fn read_piece(ReadAll *ra, int64_t off, int64_t n, uint8_t *buf)
{
    int ret = blk_co_pread(ra->blk, off, n, buf, 0);

    for (int64_t pos = off; ret >= 0 && pos < off + n; ) {
        int64_t len = MIN(CHUNK - pos % CHUNK, off + n - pos);
        const uint8_t *p = buf + (pos - off);

        for (int64_t i = 0; i < len; i++) {
            if (p[i]) {
                memcpy(content_chunk_rw(ra->c, pos / CHUNK) + pos % CHUNK, p, len);
                break;
            }
        }
        pos += len;
    }
    return ret;
}

static void coroutine_fn read_all_entry(void *opaque)
{
    ReadAll *ra = opaque;
    int64_t size = ra->c->size;
    uint8_t *buf = blk_blockalign(READ_MAX);

    /* Skip what block status says reads as zeros; read the rest in runs of up to READ_MAX
     * (block status may answer in subclusters, too small to read one at a time). */
    ra->ret = 0;
    for (int64_t off = 0; off < size && ra->ret >= 0; ) {
        int64_t start = off;

        while (off < size && off - start < READ_MAX) {
            int64_t pnum = 0;
            int st = blk_co_block_status(ra->blk, off, size - off, &pnum);

            if (st < 0) {
                ra->ret = st;
                break;
            }
            if ((st & BDRV_BLOCK_ZERO) && !(st & BDRV_BLOCK_DATA)) {
                if (off == start) {
                    start = off = off + pnum;       /* nothing to read yet: skip */
                    continue;
                }
                break;
            }
            off = MIN(off + pnum, start + READ_MAX);
        }
        if (ra->ret >= 0 && off > start) {
            ra->ret = read_piece(ra, start, off - start, buf);
        }
    }
    blk_vfree(buf);
}

static Content *content_read_blk(BlockBackend *blk, GError **errp)
{
    ReadAll ra = { .blk = blk, .c = content_new(blk_getlength(blk)) };

    aio_run_coroutine(read_all_entry, &ra);
    if (ra.ret < 0) {
        error_setg_errno(errp, ra.ret, "blkfuse cannot read the image");
        content_free(ra.c);
        return NULL;
    }
    return ra.c;
}

/* --- running the script --- */

typedef enum { RUN_DURABLE, RUN_UNFLUSHED, RUN_FAILED, RUN_NOT_RUN } StepState;

static const char *const state_names[] = {
    [RUN_DURABLE] = "flushed", [RUN_UNFLUSHED] = "done, not flushed",
    [RUN_FAILED] = "FAILED", [RUN_NOT_RUN] = "not run",
};

typedef struct Run {
    BlockBackend *blk;
    Content *cur;               /* what completed requests left */
    Content *durable;           /* cur at the last successful flush */
    GArray *state;              /* StepState per step */
    int failed_step;            /* -1: the script completed */
    int failed_ret;
    bool done;
} Run;

static int coroutine_fn do_step(BlockBackend *blk, const Step *s, unsigned idx)
{
    g_autoptr(GError) err = NULL;
    uint8_t *buf;
    int ret;

    switch (s->kind) {
    case S_WRITE:
        buf = blk_blockalign(s->bytes);
        for (int64_t i = 0; i < s->bytes; i++) {
            buf[i] = step_byte(idx, s->offset + i);
        }
        ret = blk_co_pwrite(blk, s->offset, s->bytes, buf, 0);
        blk_vfree(buf);
        return ret;
    case S_ZERO:
        return blk_co_pwrite_zeroes(blk, s->offset, s->bytes, s->unmap ? BDRV_REQ_MAY_UNMAP : 0);
    case S_DISCARD:
        return blk_co_pdiscard(blk, s->offset, s->bytes);
    case S_PREALLOC:
        return blk_co_preallocate(blk, s->offset, s->bytes);
    case S_TRUNCATE:
        ret = blk_co_truncate(blk, s->offset, true, s->prealloc, &err);
        if (ret < 0 && ret != -EIO) {
            g_printerr("powerloss: line %u: %s\n", s->line, err->message);
        }
        return ret;
    case S_FLUSH:
        return blk_co_flush(blk);
    }
    g_assert_not_reached();
}

static void apply_step(Content *c, const Step *s, unsigned idx)
{
    switch (s->kind) {
    case S_WRITE:
        content_fill(c, s->offset, s->bytes, idx);
        break;
    case S_ZERO: case S_DISCARD:        /* qcow2 and raw files: discarded ranges read zeros */
        content_fill(c, s->offset, s->bytes, -1);
        break;
    case S_TRUNCATE:
        content_truncate(c, s->offset);
        break;
    case S_PREALLOC: case S_FLUSH:
        break;
    }
}

static void coroutine_fn run_entry(void *opaque)
{
    Run *r = opaque;

    for (guint i = 0; i < steps->len; i++) {
        const Step *s = &g_array_index(steps, Step, i);
        int ret = s->kind == S_FLUSH && opt_skip_flushes ? 0 : do_step(r->blk, s, i);

        if (ret < 0) {
            r->failed_step = i;
            r->failed_ret = ret;
            g_array_index(r->state, StepState, i) = RUN_FAILED;
            break;
        }
        apply_step(r->cur, s, i);
        g_array_index(r->state, StepState, i) = RUN_UNFLUSHED;
        if (s->kind == S_FLUSH) {
            content_free(r->durable);
            r->durable = content_copy(r->cur);
            for (guint j = 0; j <= i; j++) {
                if (g_array_index(r->state, StepState, j) == RUN_UNFLUSHED) {
                    g_array_index(r->state, StepState, j) = RUN_DURABLE;
                }
            }
        }
    }
    r->done = true;
}

/* --- helpers --- */

static char *opt_format = "qcow2";
static int opt_seeds;
static char *opt_points;
static char *opt_work;
static gboolean opt_verbose;
static gboolean opt_random_everywhere;
static gboolean opt_qemu_read_all;
static char *opt_snapshot;

static Content *initial;        /* the image's contents before the script */
static Content *snapshot;       /* --snapshot's contents */
static char *image, *work_img, *work_raw, *work_rules, *work_trace, *work_log;

/* Copy the file from to to, in the kernel. */
static bool copy_file(const char *from, const char *to, GError **errp)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    struct stat st;
    bool ok = in >= 0 && out >= 0 && fstat(in, &st) == 0;

    for (off_t done = 0; ok && done < st.st_size; ) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, st.st_size - done, 0);
        if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS)) {
            n = sendfile(out, in, NULL, st.st_size - done);    /* across file systems */
        }
        ok = n > 0;
        done += n;
    }
    if (!ok) {
        error_setg_errno(errp, errno, "cannot copy %s to %s", from, to);
    }
    if (in >= 0) {
        close(in);
    }
    if (out >= 0) {
        close(out);
    }
    return ok;
}

/* Run argv; returns the exit status (or -1), output (stdout + stderr) in *out. */
static int spawn(char **out, const char *const *argv)
{
    g_autofree char *o = NULL, *e = NULL;
    g_autoptr(GError) err = NULL;
    int status;

    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &o, &e,
                      &status, &err)) {
        *out = g_strdup(err->message);
        return -1;
    }
    *out = g_strconcat(o ? o : "", e ? e : "", NULL);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static bool image_flags(const char *path, bool *dirty, bool *corrupt)
{
    uint8_t hdr[80] = { 0 };
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    bool ok = fd >= 0 && pread(fd, hdr, sizeof(hdr), 0) == sizeof(hdr);

    if (fd >= 0) {
        close(fd);
    }
    *dirty = *corrupt = false;
    if (ok && !memcmp(hdr, "QFI\xfb", 4) && ldbe32(hdr + 4) >= 3) {
        *dirty = ldbe64(hdr + 72) & 1;
        *corrupt = ldbe64(hdr + 72) & 2;
    }
    return ok;
}

/* Open work_img with rules text (NULL: no filter). */
static BlockBackend *open_work(const char *rules, int flags, GError **errp)
{
    g_autoptr(GHashTable) opts = block_options_new();

    if (rules) {
        if (!g_file_set_contents(work_rules, rules, -1, errp)) {
            return NULL;
        }
        g_hash_table_insert(opts, g_strdup("fault-rules"), g_strdup(work_rules));
    }
    return blk_new_open(work_img, opt_format, opts, flags, errp);
}

static bool power_failed(void);

static Run *run_script(const char *rules, GError **errp)
{
    Run *r = g_new0(Run, 1);
    StepState not_run = RUN_NOT_RUN;

    r->failed_step = -1;
    r->cur = content_copy(initial);
    r->durable = content_copy(initial);
    r->state = g_array_new(false, false, sizeof(StepState));
    for (guint i = 0; i < steps->len; i++) {
        g_array_append_val(r->state, not_run);
    }
    if (copy_file(image, work_img, errp) &&
        !(r->blk = open_work(rules, BDRV_O_RDWR, errp)) && rules && power_failed()) {
        /* The power failed during the open (it writes: qcow2 marks bitmaps in use): no
         * request ran; the image must still hold what it held. */
        g_clear_error(errp);
        r->failed_step = 0;
        r->failed_ret = -EIO;
        return r;
    }
    if (!r->blk) {
        content_free(r->cur);
        content_free(r->durable);
        g_array_free(r->state, true);
        g_free(r);
        return NULL;
    }
    aio_run_coroutine(run_entry, r);
    blk_unref(r->blk);          /* after a power failure, nothing more reaches the file */
    r->blk = NULL;
    return r;
}

static void run_free(Run *r)
{
    if (r) {
        content_free(r->cur);
        content_free(r->durable);
        g_array_free(r->state, true);
        g_free(r);
    }
}

static void print_model(FILE *f, Run *r)
{
    fprintf(f, "  model (size at the last flush %" PRId64 "):\n", r->durable->size);
    for (guint i = 0; i < steps->len; i++) {
        const Step *s = &g_array_index(steps, Step, i);
        fprintf(f, "    line %u: %s %" PRId64 " %" PRId64 "%s: %s\n", s->line,
                step_names[s->kind], s->offset, s->bytes, s->unmap ? " unmap" : "",
                state_names[g_array_index(r->state, StepState, i)]);
    }
}

/* --- checking a crashed image --- */

typedef struct Verdict {
    char *digest;               /* of the crashed image */
    char *problem;              /* NULL: image passed qemu-img check and reopens */
    Content *data;              /* what blkfuse reads from it */
    Content *qemu_data;         /* what qemu-img reads from it, or NULL if not asked */
} Verdict;

static void verdict_clear(Verdict *v)
{
    g_free(v->digest);
    g_free(v->problem);
    content_free(v->data);
    content_free(v->qemu_data);
    memset(v, 0, sizeof(*v));
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(Content, content_free)

static char *check_model(Run *r, Content *got, bool exact, const char *reader);

/* What qemu-img reads from path (the snapshot named by --snapshot, if snap). */
static Content *read_image_as(const char *path, bool snap, GError **errp)
{
    g_autofree char *out = NULL;
    g_autofree char *sn = snap ? g_strdup_printf("snapshot.name=%s", opt_snapshot) : NULL;
    const char *argv[] = { "qemu-img", "convert", "-f", opt_format, "-O", "raw", path,
                           work_raw, NULL, NULL, NULL };
    int status;

    if (snap) {
        memmove(argv + 4, argv + 2, 6 * sizeof(char *));
        argv[2] = "-l";
        argv[3] = sn;
    }
    unlink(work_raw);
    status = spawn(&out, argv);
    if (status != 0) {
        error_setg(errp, "qemu-img convert%s%s exit %d: %s", snap ? " -l " : "",
                   snap ? sn : "", status, out);
        return NULL;
    }
    return content_load_raw(work_raw, errp);
}

static Content *read_image(const char *path, GError **errp)
{
    return read_image_as(path, opt_snapshot != NULL, errp);
}

/* Repair if dirty, qemu-img check, read with blkfuse (and with qemu-img if qemu_read). */
static void check_image(Verdict *v, bool qemu_read)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *out = NULL;
    bool dirty, corrupt;
    BlockBackend *blk;
    int status;

    if (!image_flags(work_img, &dirty, &corrupt)) {
        v->problem = g_strdup("cannot read the image header");
        return;
    }
    if (corrupt) {
        v->problem = g_strdup("the image is marked corrupt");
        return;
    }
    if (dirty) {
        blk = open_work(NULL, BDRV_O_RDWR, &err);
        if (!blk) {
            v->problem = g_strdup_printf("blkfuse cannot open the dirty image to repair it: %s",
                                         err->message);
            return;
        }
        blk_unref(blk);
    }
    status = spawn(&out, (const char *[]){ "qemu-img", "check", "-f", opt_format, work_img,
                                           NULL });
    if (status != 0 && status != 3) {
        v->problem = g_strdup_printf("qemu-img check%s exit %d:\n%s",
                                     dirty ? " (after blkfuse's repair)" : "", status, out);
        return;
    }
    blk = open_work(NULL, 0, &err);
    if (!blk) {
        v->problem = g_strdup_printf("blkfuse cannot open the image: %s", err->message);
        return;
    }
    v->data = content_read_blk(blk, &err);
    blk_unref(blk);
    if (!v->data) {
        v->problem = g_strdup(err->message);
        return;
    }
    if (qemu_read) {
        v->qemu_data = read_image_as(work_img, false, &err);
        if (!v->qemu_data) {
            v->problem = g_strdup(err->message);
            return;
        }
    }
    if (opt_snapshot) {
        g_autofree char *problem = NULL;
        Run r = { .durable = snapshot, .cur = snapshot };
        g_autoptr(GHashTable) opts = block_options_new();
        g_autoptr(Content) sn = NULL, qsn = NULL;

        g_hash_table_insert(opts, g_strdup("snapshot-name"), g_strdup(opt_snapshot));
        blk = blk_new_open(work_img, opt_format, opts, 0, &err);
        if (blk) {
            sn = content_read_blk(blk, &err);
            blk_unref(blk);
        }
        if (sn && qemu_read) {
            qsn = read_image(work_img, &err);
        }
        if (!sn || (qemu_read && !qsn)) {
            problem = g_strdup(err->message);
        } else {
            problem = check_model(&r, sn, true, "read by blkfuse");
            if (!problem && qsn) {
                problem = check_model(&r, qsn, true, "read by qemu-img");
            }
        }
        if (problem) {
            v->problem = g_strdup_printf("snapshot %s changed: %s", opt_snapshot, problem);
        }
    }
}

/* Does every byte of got hold an allowed value?  Returns a description of the first bad
 * byte and how many there are, or NULL.  reader names who read got, for the message. */
static char *check_model(Run *r, Content *got, bool exact, const char *reader)
{
    g_autoptr(GHashTable) idx = g_hash_table_new(g_int64_hash, g_int64_equal);
    g_autoptr(GArray) pending = g_array_new(false, false, sizeof(unsigned));
    GHashTableIter it;
    gpointer k;
    int64_t bad = 0, first = -1;
    uint8_t first_got = 0, first_want = 0;
    bool size_ok;

    for (guint i = 0; i < steps->len && !exact; i++) {
        StepState st = g_array_index(r->state, StepState, i);
        if (st == RUN_UNFLUSHED || st == RUN_FAILED) {
            g_array_append_val(pending, i);
        }
    }
    size_ok = got->size == (exact ? r->cur->size : r->durable->size);
    for (guint p = 0; p < pending->len && !size_ok; p++) {
        const Step *s = &g_array_index(steps, Step, g_array_index(pending, unsigned, p));
        size_ok = s->kind == S_TRUNCATE && s->offset == got->size;
    }
    if (!size_ok) {
        return g_strdup_printf("%s%svirtual size %" PRId64 ", expected %" PRId64
                               " (or one set by an unflushed truncate)", reader ? reader : "",
                               reader ? ": " : "", got->size,
                               exact ? r->cur->size : r->durable->size);
    }

    /* Bytes can differ from the model only in chunks where either has data. */
    for (int w = 0; w < 2; w++) {
        g_hash_table_iter_init(&it, w ? got->chunks : (exact ? r->cur : r->durable)->chunks);
        while (g_hash_table_iter_next(&it, &k, NULL)) {
            g_hash_table_add(idx, k);
        }
    }
    g_hash_table_iter_init(&it, idx);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        int64_t c = *(int64_t *)k;
        Content *want = exact ? r->cur : r->durable;
        const uint8_t *g = content_chunk(got, c);
        const uint8_t *m = content_chunk(want, c);

        if (g == m || (g && m && memcmp(g, m, CHUNK) == 0 &&
                       (c + 1) * CHUNK <= got->size)) {
            continue;   /* the same bytes (and all inside the disk): nothing to look at */
        }
        for (int64_t i = 0; i < CHUNK && c * CHUNK + i < got->size; i++) {
            int64_t off = c * CHUNK + i;
            uint8_t gv = g ? g[i] : 0, mv = m ? m[i] : 0;
            bool ok = gv == mv;

            for (guint p = 0; p < pending->len && !ok; p++) {
                unsigned si = g_array_index(pending, unsigned, p);
                const Step *s = &g_array_index(steps, Step, si);
                switch (s->kind) {
                case S_WRITE:
                    ok = off >= s->offset && off < s->offset + s->bytes &&
                         gv == step_byte(si, off);
                    break;
                case S_ZERO: case S_DISCARD:
                    ok = off >= s->offset && off < s->offset + s->bytes && gv == 0;
                    break;
                case S_TRUNCATE:
                    ok = off >= s->offset && gv == 0;
                    break;
                default:
                    break;
                }
            }
            if (!ok) {
                if (first < 0 || off < first) {
                    first = off;
                    first_got = gv;
                    first_want = mv;
                }
                bad++;
            }
        }
    }
    if (!bad) {
        return NULL;
    }
    return g_strdup_printf("%s%s%" PRId64 " bad bytes; the first at offset %" PRId64 " reads "
                           "0x%02x, expected 0x%02x%s", reader ? reader : "", reader ? ": " : "",
                           bad, first, first_got, first_want,
                           pending->len ? " or a value of an unflushed request" : "");
}

/* The verdict's problem, or the first model failure of what blkfuse or qemu-img read. */
static char *judge(Verdict *v, Run *r, bool exact)
{
    char *problem;

    if (v->problem) {
        return g_strdup(v->problem);
    }
    problem = check_model(r, v->data, exact, "read by blkfuse");
    if (!problem && v->qemu_data) {
        problem = check_model(r, v->qemu_data, exact, "read by qemu-img");
    }
    return problem;
}

/* --- main --- */

/* A crash point: a traced request that changes or flushes the file. */
typedef struct Point {
    char *line;                 /* the traced request: "OP OFFSET LENGTH" */
    bool flush;
    unsigned pending;           /* changes since the last flush, before this request */
    unsigned flushes;           /* flushes before this request */
} Point;

static void point_clear(gpointer p)
{
    g_free(((Point *)p)->line);
}

/* The crash points, in order, or NULL (errp). */
static GArray *crash_points(GError **errp)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    GArray *points;
    unsigned pending = 0, flushes = 0;

    if (!g_file_get_contents(work_trace, &text, NULL, errp)) {
        return NULL;
    }
    points = g_array_new(false, false, sizeof(Point));
    g_array_set_clear_func(points, point_clear);
    lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        g_autofree char *op = g_strndup(*l, strcspn(*l, " "));
        g_autofree char *key = g_strdup_printf(",%s,", op);
        Point p = { .flush = !strcmp(op, "flush"), .pending = pending, .flushes = flushes };

        if (**l && strstr("," CRASH_OPS ",", key)) {
            p.line = g_strdup(*l);
            g_array_append_val(points, p);
            pending = p.flush ? 0 : pending + 1;
            flushes += p.flush;
        }
    }
    return points;
}

static bool power_failed(void)
{
    g_autofree char *log = NULL;

    return g_file_get_contents(work_log, &log, NULL, NULL) &&
           strstr(log, "fault: power failure") != NULL;
}

/* --test-corrupt: the first refcount table entry of work_img points nowhere. */
static void damage_refcount_table(void)
{
    uint8_t hdr[56], zero[8] = { 0 };
    int fd = open(work_img, O_RDWR | O_CLOEXEC);

    if (fd < 0 || pread(fd, hdr, sizeof(hdr), 0) != sizeof(hdr) ||
        pwrite(fd, zero, sizeof(zero), ldbe64(hdr + 48)) != sizeof(zero)) {
        g_printerr("powerloss: cannot damage %s\n", work_img);
        exit(2);
    }
    close(fd);
}

/* The changes that reached the filter since the last flush before crash point p, and p. */
static void print_pending(const Point *p)
{
    printf("  unflushed changes at the image file (lose-one index: line):\n");
    for (unsigned j = 0; j < p->pending; j++) {
        printf("    %u: %s\n", j, (p - p->pending + j)->line);
    }
    printf("  the power failed at: %s\n", p->line);
}

/* One crash run at point i with mode (the powerfail rule's words).  Returns true if it
 * passed. */
static bool crash_run(unsigned i, const Point *p, unsigned npoints, const char *mode,
                      Verdict *last_all, unsigned *checked)
{
    g_autofree char *rules = g_strdup_printf("powerfail op=" CRASH_OPS " after=%u %s\n", i,
                                             mode);
    g_autofree char *problem = NULL;
    g_autoptr(GError) err = NULL;
    Verdict other = { 0 };
    Verdict *v = &other;
    Run *r;

    g_assert_true(log_open(NULL, NULL));
    unlink(work_log);
    g_assert_true(log_open(work_log, NULL));
    r = run_script(rules, &err);
    if (!r) {
        g_printerr("powerloss: %s\n", err->message);
        exit(2);
    }
    if (opt_test_corrupt) {
        damage_refcount_table();
    }
    if (!power_failed()) {
        problem = g_strdup("the power never failed: the requests differ from the traced run's");
    } else {
        if (!strcmp(mode, "mode=all") && !opt_test_corrupt) {
            /* In mode=all the file changes only when a flush writes the buffered changes
             * out: crashes between the same two flushes leave the same image. */
            g_autofree char *key = g_strdup_printf("after %u flushes", p->flushes);
            v = last_all;
            if (v->digest && !strcmp(v->digest, key)) {
                (*checked)--;
            } else {
                verdict_clear(v);
                v->digest = g_steal_pointer(&key);
                check_image(v, opt_qemu_read_all);
            }
        } else {
            check_image(v, opt_qemu_read_all);
        }
        (*checked)++;
        problem = judge(v, r, false);
    }
    if (problem || opt_verbose) {
        printf("%s %s: crash point %u/%u %s%s%s\n", problem ? "FAIL" : "ok", image, i, npoints,
               mode, problem ? ": " : "", problem ? problem : "");
        print_model(stdout, r);
        print_pending(p);
        fflush(stdout);
    }
    verdict_clear(&other);
    run_free(r);
    return problem == NULL;
}

int main(int argc, char **argv)
{
    GOptionEntry entries[] = {
        { "format", 'f', 0, G_OPTION_ARG_STRING, &opt_format, "image format", "FORMAT" },
        { "seeds", 0, 0, G_OPTION_ARG_INT, &opt_seeds, "random seeds per point", "N" },
        { "random-everywhere", 0, 0, G_OPTION_ARG_NONE, &opt_random_everywhere,
          "random crashes at every point, not only at flushes and the last", NULL },
        { "qemu-read-all", 0, 0, G_OPTION_ARG_NONE, &opt_qemu_read_all,
          "read every checked image with qemu-img too", NULL },
        { "points", 0, 0, G_OPTION_ARG_STRING, &opt_points, "crash points A-B", "A-B" },
        { "work", 0, 0, G_OPTION_ARG_FILENAME, &opt_work, "scratch directory", "DIR" },
        { "snapshot", 0, 0, G_OPTION_ARG_STRING, &opt_snapshot, "internal snapshot to keep",
          "NAME" },
        { "test-skip-flushes", 0, 0, G_OPTION_ARG_NONE, &opt_skip_flushes,
          "self-test: skip the script's flushes but count them as done", NULL },
        { "test-corrupt", 0, 0, G_OPTION_ARG_NONE, &opt_test_corrupt,
          "self-test: damage every crashed image's refcount table", NULL },
        { "verbose", 'v', 0, G_OPTION_ARG_NONE, &opt_verbose, "print every model", NULL },
        { NULL },
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("IMAGE SCRIPT");
    g_autoptr(GError) err = NULL;
    g_autoptr(GArray) points = NULL;
    g_autofree char *rules = NULL, *problem = NULL, *dir = NULL, *base = NULL;
    Verdict last = { 0 };
    unsigned first = 0, last_point, runs = 0, checked = 0, failures = 0;
    int64_t start = get_clock_ns();
    struct rusage self, children;
    Run *r;

    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_summary(ctx, "Crash SCRIPT's requests on IMAGE at each write and "
                                 "check what survives (see the source for the method).");
    if (!g_option_context_parse(ctx, &argc, &argv, &err) || argc != 3) {
        g_printerr("powerloss: %s\n", err ? err->message : "expected IMAGE SCRIPT");
        return 2;
    }
    image = argv[1];
    if (!parse_script(argv[2], &err)) {
        g_printerr("powerloss: %s\n", err->message);
        return 2;
    }
    dir = opt_work ? g_strdup(opt_work) : g_path_get_dirname(image);
    base = g_strdup_printf("%s/powerloss-%d", dir, (int)getpid());
    work_img = g_strconcat(base, ".img", NULL);
    work_raw = g_strconcat(base, ".raw", NULL);
    work_rules = g_strconcat(base, ".rules", NULL);
    work_trace = g_strconcat(base, ".trace", NULL);
    work_log = g_strconcat(base, ".log", NULL);

    /* What the image (and its snapshot) holds before the script, as qemu-img reads it. */
    initial = read_image_as(image, false, &err);
    if (initial && opt_snapshot) {
        snapshot = read_image(image, &err);
    }
    if (!initial || (opt_snapshot && !snapshot)) {
        g_printerr("powerloss: %s\n", err->message);
        return 2;
    }
    if (!log_open(work_log, &err)) {
        g_printerr("powerloss: %s\n", err->message);
        return 2;
    }

    /* The run without a crash: find the crash points, and check the whole script's model. */
    unlink(work_trace);
    rules = g_strdup_printf("trace path=%s\n", work_trace);
    r = run_script(rules, &err);
    if (!r) {
        g_printerr("powerloss: %s\n", err->message);
        return 2;
    }
    if (r->failed_step >= 0) {
        g_printerr("powerloss: without a crash, line %u failed: %s\n",
                   g_array_index(steps, Step, r->failed_step).line,
                   g_strerror(-r->failed_ret));
        return 2;
    }
    points = crash_points(&err);
    if (!points) {
        g_printerr("powerloss: %s\n", err->message);
        return 2;
    }
    last.digest = g_strdup("no crash");
    check_image(&last, true);
    checked++;
    problem = judge(&last, r, true);
    if (problem) {
        printf("FAIL %s: without a crash: %s\n", image, problem);
        print_model(stdout, r);
        failures++;
    }
    run_free(r);

    last_point = points->len ? points->len - 1 : 0;
    if (opt_points && sscanf(opt_points, "%u-%u", &first, &last_point) != 2) {
        g_printerr("powerloss: --points takes A-B\n");
        return 2;
    }
    last_point = MIN(last_point, points->len - 1);

    for (unsigned i = first; points->len && i <= last_point; i++) {
        Point *p = &g_array_index(points, Point, i);
        /* Partial survival where the most changes are pending: at each flush and the last
         * point.  Losing one change at a time finds every "B without A" pair there. */
        bool partial = opt_random_everywhere || i + 1 == points->len || p->flush;
        unsigned lose_one = partial && p->pending > 1 ? p->pending : 0;
        unsigned seeds = partial && p->pending > 1 ? opt_seeds : 0;

        failures += !crash_run(i, p, points->len, "mode=all", &last, &checked);
        runs++;
        for (unsigned j = 0; j < lose_one; j++) {
            g_autofree char *mode = g_strdup_printf("mode=lose-one index=%u", j);
            failures += !crash_run(i, p, points->len, mode, &last, &checked);
            runs++;
        }
        for (unsigned seed = 1; seed <= seeds; seed++) {
            g_autofree char *mode = g_strdup_printf("mode=random seed=%u", seed);
            failures += !crash_run(i, p, points->len, mode, &last, &checked);
            runs++;
        }
    }
    verdict_clear(&last);
    log_open(NULL, NULL);
    unlink(work_img);
    unlink(work_raw);
    unlink(work_rules);
    unlink(work_trace);
    unlink(work_log);
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &children);
    printf("powerloss: %s: %u crash points, %u runs, %u images checked, %u failed, %.1f s "
           "(cpu %.1f s)\n", image, points->len, runs, checked, failures,
           (get_clock_ns() - start) / 1e9,
           self.ru_utime.tv_sec + self.ru_stime.tv_sec + children.ru_utime.tv_sec +
           children.ru_stime.tv_sec + (self.ru_utime.tv_usec + self.ru_stime.tv_usec +
           children.ru_utime.tv_usec + children.ru_stime.tv_usec) / 1e6);
    content_free(initial);
    content_free(snapshot);
    return failures ? 1 : 0;
}
