/* test-block-io.c - unit tests for the generic I/O path (block/io.c) over the file, raw and null
 * drivers: unaligned and O_DIRECT I/O against a plain-file reference, read-modify-write
 * serialisation, write-zeroes, discard, block status, truncate, probing, backing-chain loops,
 * raw slices and options, the probed-raw first-sector guard, and inline writes.  Every test runs
 * under each I/O engine of the file driver (/block-io/ENGINE/...: auto, the default, then
 * io_uring, native, threads). */
#include "config.h"
#include "unit-helpers.h"
#include "block/block.h"
#include "block/io-engine.h"

#include <linux/magic.h>
#include <sys/syscall.h>
#include <sys/vfs.h>

static char *test_dir;          /* one temp dir for the whole binary, removed at the end */

/* --- which threads call ftruncate and lseek(SEEK_DATA/SEEK_HOLE) ----------------------------
 * Both can wait for the inode lock, so the block layer must never call them on an event-loop
 * thread (one with an AioContext); these definitions take the place of libc's in this binary
 * and count the calls of each kind. */

static unsigned blocking_calls_on_loop;     /* atomic */
static unsigned blocking_calls_off_loop;    /* atomic */

static void count_blocking_call(void)
{
    __atomic_add_fetch(aio_peek_current() ? &blocking_calls_on_loop : &blocking_calls_off_loop,
                       1, __ATOMIC_ACQ_REL);
}

int ftruncate(int fd, off_t length)
{
    count_blocking_call();
    return syscall(SYS_ftruncate, fd, length);
}

off_t lseek(int fd, off_t offset, int whence)
{
    if (whence == SEEK_DATA || whence == SEEK_HOLE) {
        count_blocking_call();
    }
    return syscall(SYS_lseek, fd, offset, whence);
}

/* Which threads call pwrite: the threads engine writes with it in workers; the io_uring engine
 * never does (its writes are SQEs); the default engine writes inline, in the event loop, where
 * the file system refuses RWF_NOWAIT writes.  slow_pwrite_us makes the pwrites of event-loop
 * threads take that long (a write blocked by dirty-page throttling, say). */
static unsigned worker_pwrite_calls;        /* atomic */
static unsigned loop_pwrite_calls;          /* atomic */
static unsigned slow_pwrite_us;             /* atomic */
static int64_t loop_pwrite_max_us;          /* atomic: the slowest event-loop pwrite since reset */

ssize_t pwrite(int fd, const void *buf, size_t n, off_t offset)
{
    if (!aio_peek_current()) {
        __atomic_add_fetch(&worker_pwrite_calls, 1, __ATOMIC_ACQ_REL);
    } else {
        int64_t start = g_get_monotonic_time(), took;
        ssize_t ret;

        __atomic_add_fetch(&loop_pwrite_calls, 1, __ATOMIC_ACQ_REL);
        if (__atomic_load_n(&slow_pwrite_us, __ATOMIC_ACQUIRE)) {
            g_usleep(__atomic_load_n(&slow_pwrite_us, __ATOMIC_ACQUIRE));
        }
        ret = syscall(SYS_pwrite64, fd, buf, n, offset);
        took = g_get_monotonic_time() - start;
        if (took > __atomic_load_n(&loop_pwrite_max_us, __ATOMIC_ACQUIRE)) {
            __atomic_store_n(&loop_pwrite_max_us, took, __ATOMIC_RELEASE);
        }
        return ret;
    }
    return syscall(SYS_pwrite64, fd, buf, n, offset);
}

/* Write-behind (file.c): the ranges whose write-back a file node started.  While
 * sync_range_hold is set, calls wait (at most 30 s, then sync_range_timed_out) until it is
 * cleared: a write that waited for its write-back start would wait as long. */
static GMutex sync_range_lock;
static GCond sync_range_cond;
static bool sync_range_hold, sync_range_timed_out;
static unsigned sync_range_calls;           /* atomic */
static int64_t sync_range_seen[8][2];       /* offset, bytes of each call (the first 8) */

int sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned int flags)
{
    gint64 deadline = g_get_monotonic_time() + 30 * G_TIME_SPAN_SECOND;
    unsigned n;

    g_mutex_lock(&sync_range_lock);
    while (sync_range_hold && !sync_range_timed_out) {
        sync_range_timed_out = !g_cond_wait_until(&sync_range_cond, &sync_range_lock, deadline);
    }
    n = __atomic_fetch_add(&sync_range_calls, 1, __ATOMIC_ACQ_REL);
    if (n < G_N_ELEMENTS(sync_range_seen)) {
        sync_range_seen[n][0] = offset;
        sync_range_seen[n][1] = nbytes;
    }
    g_mutex_unlock(&sync_range_lock);
    return syscall(SYS_sync_file_range, fd, offset, nbytes, flags);
}

static void sync_range_set_hold(bool hold)
{
    g_mutex_lock(&sync_range_lock);
    sync_range_hold = hold;
    g_cond_broadcast(&sync_range_cond);
    g_mutex_unlock(&sync_range_lock);
}

/* fdatasync from libc: the file driver's flushes in worker threads (through the ring they are
 * SQEs and this does not see them). */
static unsigned fdatasync_calls;            /* atomic */
static int fdatasync_fail;                  /* atomic: an errno the next calls fail with, or 0 */

int fdatasync(int fd)
{
    int err = __atomic_load_n(&fdatasync_fail, __ATOMIC_ACQUIRE);

    __atomic_add_fetch(&fdatasync_calls, 1, __ATOMIC_ACQ_REL);
    if (err) {
        errno = err;
        return -1;
    }
    return syscall(SYS_fdatasync, fd);
}

static char *tmp_path(const char *name)
{
    return g_build_filename(test_dir, name, NULL);
}

/* --- opening ------------------------------------------------------------------------------ */

/* bdrv_open with options given as "k=v,..." (or NULL). */
static BlockDriverState *try_open(const char *path, const char *format, const char *opts_str,
                                  int flags, GError **errp)
{
    g_autoptr(GHashTable) opts = opts_str ? block_options_new() : NULL;

    if (opts) {
        g_assert(block_options_parse(opts, opts_str, NULL));
    }
    return bdrv_open(path, format, opts, flags, errp);
}

static BlockDriverState *open_ok(const char *path, const char *format, const char *opts_str,
                                 int flags)
{
    g_autoptr(GError) err = NULL;
    BlockDriverState *bs;

    bs = try_open(path, format, opts_str, flags, &err);
    g_assert_no_error(err);
    g_assert(bs != NULL);
    return bs;
}

/* Open read-write with O_DIRECT; NULL (test skipped) if the file system refuses O_DIRECT. */
static BlockDriverState *open_direct(const char *path, const char *format, const char *opts_str)
{
    g_autoptr(GError) err = NULL;
    BlockDriverState *bs;

    bs = try_open(path, format, opts_str, BDRV_O_RDWR | BDRV_O_NOCACHE, &err);
    if (!bs && err && err->code == EINVAL && strstr(err->message, "O_DIRECT")) {
        g_test_skip(err->message);
        return NULL;
    }
    g_assert_no_error(err);
    g_assert(bs != NULL);
    return bs;
}

/* Open must fail; returns the error message (g_free). */
static char *open_fails(const char *path, const char *format, const char *opts_str, int flags)
{
    g_autoptr(GError) err = NULL;
    BlockDriverState *bs;

    bs = try_open(path, format, opts_str, flags, &err);
    g_assert_null(bs);
    if (bs) {
        bdrv_unref(bs);
    }
    g_assert_nonnull(err);
    if (g_test_verbose() && err) {
        g_test_message("expected error: %s", err->message);
    }
    return err ? g_strdup(err->message) : g_strdup("");
}

/* Compare the file's contents (plain read) with expected. */
static void check_file_contents(const char *path, const uint8_t *expected, size_t len)
{
    size_t n;
    g_autofree uint8_t *data = uh_read_file(path, &n);

    g_assert_cmpuint(n, ==, len);
    g_assert_true(memcmp(data, expected, MIN(n, len)) == 0);
}

static bool all_zero(const uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i]) {
            return false;
        }
    }
    return true;
}

/* --- unaligned reads and writes against a reference ------------------------------------------ */

#define RW_FILE_SIZE    (256 * 1024)
#define RW_MAX_LEN      9000

/* Random unaligned writes and reads through bs, mirrored into ref; unaligned buffers as well. */
static void random_rw(BlockDriverState *bs, uint8_t *ref, int64_t size, guint32 seed, int nops)
{
    GRand *r = g_rand_new_with_seed(seed);
    uint8_t *mem = g_malloc(RW_MAX_LEN + 16);

    for (int i = 0; i < nops; i++) {
        int64_t len = g_rand_int_range(r, 1, RW_MAX_LEN + 1);
        int64_t off = g_rand_int_range(r, 0, size);
        uint8_t *buf = mem + g_rand_int_range(r, 0, 8);     /* often not aligned at all */
        int ret;

        if (g_rand_int_range(r, 0, 4) == 0) {
            len = g_rand_int_range(r, 1, 600);              /* small, inside one block */
        }
        len = MIN(len, size - off);
        if (g_rand_boolean(r)) {
            uh_fill_pattern(buf, len, off, 1000 + i);
            ret = bdrv_pwrite(bs, off, len, buf);
            g_assert_cmpint(ret, ==, 0);
            memcpy(ref + off, buf, len);
        } else {
            memset(buf, 0xa5, len);
            ret = bdrv_pread(bs, off, len, buf);
            g_assert_cmpint(ret, ==, 0);
            if (memcmp(buf, ref + off, len) != 0) {
                uh_fail("op %d: read %" G_GINT64_FORMAT "+%" G_GINT64_FORMAT
                        " differs from the reference", i, off, len);
                break;
            }
        }
    }
    g_free(mem);
    g_rand_free(r);
}

static void unaligned_rw(BlockDriverState *bs, const char *path, uint8_t *ref)
{
    uint8_t *all = g_malloc(RW_FILE_SIZE);

    g_assert_cmpint(bdrv_getlength(bs), ==, RW_FILE_SIZE);
    random_rw(bs, ref, RW_FILE_SIZE, 42, 400);

    /* The whole image through the block layer, then the file itself. */
    g_assert_cmpint(bdrv_pread(bs, 0, RW_FILE_SIZE, all), ==, 0);
    g_assert_true(memcmp(all, ref, RW_FILE_SIZE) == 0);
    g_assert_cmpint(bdrv_flush(bs), ==, 0);
    bdrv_unref(bs);
    check_file_contents(path, ref, RW_FILE_SIZE);
    g_free(all);
}

static void test_buffered_unaligned_rw(void)
{
    g_autofree char *path = tmp_path("buffered.img");
    g_autofree uint8_t *ref = uh_create_pattern_file(path, RW_FILE_SIZE, 1);
    BlockDriverState *bs = open_ok(path, "raw", NULL, BDRV_O_RDWR);

    g_assert_cmpuint(bs->bl.request_alignment, ==, 1);
    unaligned_rw(bs, path, ref);
    g_unlink(path);
}

static void test_direct_unaligned_rw(void)
{
    g_autofree char *path = tmp_path("direct.img");
    g_autofree uint8_t *ref = uh_create_pattern_file(path, RW_FILE_SIZE, 2);
    BlockDriverState *bs = open_direct(path, "raw", NULL);

    if (!bs) {
        g_unlink(path);
        return;
    }
    /* O_DIRECT needs padding: this is what the test is about. */
    g_assert_cmpuint(bs->file->bs->bl.request_alignment, >, 1);
    g_assert_cmpuint(bs->bl.request_alignment, ==, bs->file->bs->bl.request_alignment);
    g_assert_cmpuint(bs->bl.mem_alignment, >, 1);
    unaligned_rw(bs, path, ref);
    g_unlink(path);
}

/* A file whose size is not a multiple of the O_DIRECT alignment: its last, partial block reads
 * short; the bytes past the end read as zeros and the bytes before it are the file's. */
static void test_direct_unaligned_eof(void)
{
    g_autofree char *path = tmp_path("direct-eof.img");
    g_autofree uint8_t *ref = uh_create_pattern_file(path, 1000, 3);
    uint8_t buf[1000];
    BlockDriverState *bs = open_direct(path, "raw", NULL);

    if (!bs) {
        g_unlink(path);
        return;
    }
    g_assert_cmpint(bdrv_getlength(bs), ==, 1000);
    memset(buf, 0, sizeof(buf));
    g_assert_cmpint(bdrv_pread(bs, 900, 100, buf), ==, 0);
    g_assert_cmpmem(buf, 100, ref + 900, 100);
    g_assert_cmpint(bdrv_pread(bs, 0, 1000, buf), ==, 0);
    g_assert_cmpmem(buf, 1000, ref, 1000);
    bdrv_unref(bs);

    /* Probing reads the first bytes the same way. */
    {
        g_autoptr(GError) err = NULL;
        bs = bdrv_open(path, NULL, NULL, BDRV_O_RDWR | BDRV_O_NOCACHE, &err);
        g_assert_no_error(err);
        if (bs) {
            g_assert_cmpstr(bs->drv->format_name, ==, "raw");
            bdrv_unref(bs);
        }
    }
    g_unlink(path);
}

/* O_DIRECT writes into the last, partial block of a file: the padding must not carry the file
 * past its end.  The file keeps its size, or grows exactly to the end of a write past it (after
 * a truncate, as a growable export does); a slice that ends inside a block leaves the file
 * after it alone. */
static void check_direct_write(BlockDriverState *bs, uint8_t *ref, int64_t off, int64_t len,
                               unsigned seed)
{
    g_autofree uint8_t *piece = g_malloc(len);

    uh_fill_pattern(piece, len, off, seed);
    g_assert_cmpint(bdrv_pwrite(bs, off, len, piece), ==, 0);
    memcpy(ref + off, piece, len);
}

static void test_direct_write_eof(void)
{
    g_autofree char *path = tmp_path("direct-write-eof.img");
    const int64_t size = 1000;
    g_autofree uint8_t *ref = g_malloc0(8192);
    g_autofree uint8_t *file = uh_create_pattern_file(path, size, 17);
    static const struct { int64_t off, len; } writes[] = {
        { 995, 3 }, { 999, 1 }, { 0, 1000 }, { 600, 400 }, { 513, 1 }, { 511, 2 },
    };
    BlockDriverState *bs = open_direct(path, "raw", NULL);

    if (!bs) {
        g_unlink(path);
        return;
    }
    memcpy(ref, file, size);
    for (size_t i = 0; i < G_N_ELEMENTS(writes); i++) {
        check_direct_write(bs, ref, writes[i].off, writes[i].len, 100 + i);
        if (uh_file_size(path) != size || bdrv_getlength(bs) != size) {
            uh_fail("write %zu (%" G_GINT64_FORMAT "+%" G_GINT64_FORMAT ") left a file of %"
                    G_GINT64_FORMAT " bytes, node length %" G_GINT64_FORMAT ", not %"
                    G_GINT64_FORMAT, i, writes[i].off, writes[i].len, uh_file_size(path),
                    bdrv_getlength(bs), size);
        }
    }
    check_file_contents(path, ref, size);

    /* Grow by 3 bytes, write them: the file ends with the write. */
    g_assert_cmpint(bdrv_truncate(bs, 1003, true, PREALLOC_MODE_OFF, NULL), ==, 0);
    check_direct_write(bs, ref, 1000, 3, 200);
    g_assert_cmpint(uh_file_size(path), ==, 1003);
    /* Grow past the next block and write the last bytes: the gap reads as zeros. */
    g_assert_cmpint(bdrv_truncate(bs, 5003, true, PREALLOC_MODE_OFF, NULL), ==, 0);
    check_direct_write(bs, ref, 4999, 4, 201);
    g_assert_cmpint(uh_file_size(path), ==, 5003);
    g_assert_cmpint(bdrv_getlength(bs), ==, 5003);
    g_assert_cmpint(bdrv_flush(bs), ==, 0);
    bdrv_unref(bs);
    check_file_contents(path, ref, 5003);

    /* A slice of 1000 bytes of an 8 KiB file: a write at its end leaves the rest of the file. */
    g_free(file);
    file = uh_create_pattern_file(path, 8192, 18);
    memcpy(ref, file, 8192);
    bs = open_direct(path, "raw", "offset=0,size=1000");
    g_assert_nonnull(bs);
    check_direct_write(bs, ref, 995, 5, 300);
    check_direct_write(bs, ref, 400, 600, 301);
    bdrv_unref(bs);
    check_file_contents(path, ref, 8192);
    g_unlink(path);
}

/* --- concurrent read-modify-write ------------------------------------------------------------ */

typedef struct RmwWriter {
    BlockDriverState *bs;
    int64_t offset;
    int64_t bytes;
    uint8_t *buf;
    int ret;
    unsigned *done;
} RmwWriter;

static void coroutine_fn rmw_writer_entry(void *opaque)
{
    RmwWriter *w = opaque;

    w->ret = bdrv_co_pwrite(w->bs, w->offset, w->bytes, w->buf, 0);
    __atomic_add_fetch(w->done, 1, __ATOMIC_RELEASE);
}

#define RMW_WRITERS 8

/* Writer W writes LEN bytes of FILL at OFF, and REF (the expected file) gets them too. */
static void rmw_writer_init(RmwWriter *w, BlockDriverState *bs, int64_t off, int64_t len,
                            uint8_t *buf, int fill, uint8_t *ref, unsigned *done)
{
    memset(buf, fill, len);
    *w = (RmwWriter){ .bs = bs, .offset = off, .bytes = len, .buf = buf,
                      .ret = -EINPROGRESS, .done = done };
    memcpy(ref + off, buf, len);
}

/* Start all RMW_WRITERS writers at once and wait for them; each must succeed. */
static void rmw_writers_run(RmwWriter *w, unsigned *done)
{
    for (int i = 0; i < RMW_WRITERS; i++) {
        coroutine_enter(coroutine_create(rmw_writer_entry, &w[i]));
    }
    uh_poll_until_count(done, RMW_WRITERS);
    for (int i = 0; i < RMW_WRITERS; i++) {
        g_assert_cmpint(w[i].ret, ==, 0);
    }
}

/* Several coroutines write different unaligned pieces of the same blocks at once; each one's
 * read-modify-write must not undo another's (the padded writes are serialised). */
static void test_direct_concurrent_rmw(void)
{
    g_autofree char *path = tmp_path("rmw.img");
    const int64_t size = 64 * 1024;
    g_autofree uint8_t *ref = g_malloc0(size);
    g_autofree uint8_t *check = g_malloc(size);
    BlockDriverState *bs;
    GRand *r = g_rand_new_with_seed(7);

    uh_write_file(path, ref, size);
    bs = open_direct(path, "raw", NULL);
    if (!bs) {
        g_rand_free(r);
        g_unlink(path);
        return;
    }
    for (int round = 0; round < 30; round++) {
        RmwWriter w[RMW_WRITERS];
        uint8_t bufs[RMW_WRITERS][1024];
        unsigned done = 0;
        /* All pieces fall into the two 4 KiB blocks at base, disjoint from each other; on odd
         * rounds writer 0 straddles the boundary between the blocks. */
        int64_t base = 4096 * g_rand_int_range(r, 1, 14);
        int64_t slot = 8192 / RMW_WRITERS;
        bool straddle = round % 2;

        for (int i = 0; i < RMW_WRITERS; i++) {
            int64_t lo = base + i * slot, hi = lo + slot;
            int64_t len, off;

            if (straddle && i == 0) {
                lo = base + 4096 - 10;
                hi = base + 4096 + 10;
            } else if (straddle && lo < base + 4096 + 10 && hi > base + 4096 - 10) {
                lo = lo < base + 4096 ? lo : base + 4096 + 10;
                hi = hi > base + 4096 ? hi : base + 4096 - 10;
            }
            len = g_rand_int_range(r, 1, hi - lo - 2);
            off = lo + g_rand_int_range(r, 1, hi - lo - len);
            if (straddle && i == 0) {
                len = 10;
                off = base + 4096 - 5;
            }
            g_assert(off > lo && off + len <= hi);
            rmw_writer_init(&w[i], bs, off, len, bufs[i], 1 + round * RMW_WRITERS + i, ref,
                            &done);
        }
        rmw_writers_run(w, &done);
    }
    g_assert_cmpint(bdrv_pread(bs, 0, size, check), ==, 0);
    g_assert_true(memcmp(check, ref, size) == 0);
    bdrv_unref(bs);
    check_file_contents(path, ref, size);
    g_rand_free(r);
    g_unlink(path);
}

/* Writers at once in the last full block and the partial block after it, each round: every
 * piece lands and the file never grows past its end. */
static void test_direct_concurrent_eof(void)
{
    g_autofree char *path = tmp_path("rmw-eof.img");
    const int64_t size = 8192 + 1000, zone = 4096 + 1000;
    g_autofree uint8_t *ref = uh_create_pattern_file(path, size, 19);
    g_autofree uint8_t *check = g_malloc(size);
    BlockDriverState *bs = open_direct(path, "raw", NULL);
    GRand *r = g_rand_new_with_seed(11);

    if (!bs) {
        g_rand_free(r);
        g_unlink(path);
        return;
    }
    for (int round = 0; round < 30; round++) {
        RmwWriter w[RMW_WRITERS];
        uint8_t bufs[RMW_WRITERS][1024];
        unsigned done = 0;
        int64_t slot = zone / RMW_WRITERS;

        for (int i = 0; i < RMW_WRITERS; i++) {
            int64_t lo = size - zone + i * slot;
            int64_t hi = i == RMW_WRITERS - 1 ? size : lo + slot;
            int64_t len = g_rand_int_range(r, 1, hi - lo + 1);
            int64_t off = lo + g_rand_int_range(r, 0, hi - lo - len + 1);

            if (i == RMW_WRITERS - 1 && round % 2) {
                off = size - len;           /* ends exactly at the end of the file */
            }
            rmw_writer_init(&w[i], bs, off, len, bufs[i], 1 + round * RMW_WRITERS + i, ref,
                            &done);
        }
        rmw_writers_run(w, &done);
        g_assert_cmpint(uh_file_size(path), ==, size);
    }
    g_assert_cmpint(bdrv_getlength(bs), ==, size);
    g_assert_cmpint(bdrv_pread(bs, 0, size, check), ==, 0);
    g_assert_true(memcmp(check, ref, size) == 0);
    /* The kernel reports a collision of buffered and direct writes in one page here. */
    g_assert_cmpint(bdrv_flush(bs), ==, 0);
    bdrv_unref(bs);
    check_file_contents(path, ref, size);
    g_rand_free(r);
    g_unlink(path);
}

/* --- write zeroes and discard --------------------------------------------------------------- */

#define ZERO_FILE_SIZE (1024 * 1024)

static void zeroes_on(BlockDriverState *bs, const char *path, uint8_t *ref)
{
    static const struct {
        int64_t offset, bytes;
        int flags;
    } ranges[] = {
        { 5000, 70000, 0 },
        { 300001, 131072 + 17, BDRV_REQ_MAY_UNMAP },
        { 524288, 262144, BDRV_REQ_MAY_UNMAP },             /* aligned: can punch a hole */
        { 1, 1, 0 },
        { 1000000, ZERO_FILE_SIZE - 1000000, BDRV_REQ_MAY_UNMAP },     /* to the end */
    };
    g_autofree uint8_t *buf = g_malloc(ZERO_FILE_SIZE);

    for (size_t i = 0; i < G_N_ELEMENTS(ranges); i++) {
        g_assert_cmpint(bdrv_pwrite_zeroes(bs, ranges[i].offset, ranges[i].bytes,
                                           ranges[i].flags), ==, 0);
        memset(ref + ranges[i].offset, 0, ranges[i].bytes);
        g_assert_cmpint(bdrv_pread(bs, 0, ZERO_FILE_SIZE, buf), ==, 0);
        if (memcmp(buf, ref, ZERO_FILE_SIZE) != 0) {
            uh_fail("after zeroing range %zu the image differs", i);
        }
    }
    g_assert_cmpint(bdrv_getlength(bs), ==, ZERO_FILE_SIZE);
    bdrv_unref(bs);
    check_file_contents(path, ref, ZERO_FILE_SIZE);
}

static void test_write_zeroes(void)
{
    g_autofree char *path = tmp_path("zeroes.img");
    g_autofree uint8_t *ref = uh_create_pattern_file(path, ZERO_FILE_SIZE, 4);

    zeroes_on(open_ok(path, "raw", NULL, BDRV_O_RDWR), path, ref);
    g_unlink(path);
}

static void test_direct_write_zeroes(void)
{
    g_autofree char *path = tmp_path("zeroes-direct.img");
    g_autofree uint8_t *ref = uh_create_pattern_file(path, ZERO_FILE_SIZE, 5);
    BlockDriverState *bs = open_direct(path, "raw", NULL);

    if (bs) {
        zeroes_on(bs, path, ref);
    }
    g_unlink(path);
}

/* NO_FALLBACK: either done efficiently (and then zeros) or -ENOTSUP, never a data write. */
static void test_write_zeroes_no_fallback(void)
{
    g_autofree char *path = tmp_path("zeroes-nofb.img");
    g_autofree uint8_t *ref = uh_create_pattern_file(path, 65536, 6);
    BlockDriverState *bs = open_ok(path, "raw", NULL, BDRV_O_RDWR);
    uint8_t buf[8192];
    int ret = bdrv_pwrite_zeroes(bs, 4096, 8192, BDRV_REQ_NO_FALLBACK);

    g_assert_true(ret == 0 || ret == -ENOTSUP);
    if (ret == 0) {
        memset(ref + 4096, 0, 8192);
    }
    g_assert_cmpint(bdrv_pread(bs, 4096, 8192, buf), ==, 0);
    g_assert_cmpmem(buf, 8192, ref + 4096, 8192);
    bdrv_unref(bs);
    g_unlink(path);
}

static void test_discard(void)
{
    g_autofree char *path = tmp_path("discard.img");
    const int64_t size = 1024 * 1024;
    g_autofree uint8_t *ref = uh_create_pattern_file(path, size, 7);
    g_autofree uint8_t *buf = g_malloc(size);
    BlockDriverState *bs = open_ok(path, "raw", NULL, BDRV_O_RDWR);
    const int64_t start = 65536, len = 262144;

    g_assert_cmpint(bdrv_flush(bs), ==, 0);
    g_assert_cmpint(bdrv_pdiscard(bs, start, len), ==, 0);
    g_assert_cmpint(bdrv_pdiscard(bs, 700001, 5000), ==, 0);      /* unaligned */
    g_assert_cmpint(bdrv_pdiscard(bs, 0, 0), ==, 0);
    g_assert_cmpint(bdrv_getlength(bs), ==, size);
    g_assert_cmpint(bdrv_pread(bs, 0, size, buf), ==, 0);

    /* Outside the ranges nothing changed; inside, each 4 KiB block is either still the data or
     * zeros (discard deallocates what it can). */
    g_assert_cmpmem(buf, start, ref, start);
    g_assert_cmpmem(buf + start + len, 700001 - start - len, ref + start + len,
                    700001 - start - len);
    g_assert_cmpmem(buf + 705001, size - 705001, ref + 705001, size - 705001);
    for (int64_t off = start; off < start + len; off += 4096) {
        g_assert_true(memcmp(buf + off, ref + off, 4096) == 0 || all_zero(buf + off, 4096));
    }
    g_test_message("allocated after discard: %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT,
                   bdrv_get_allocated_file_size(bs), size);
    bdrv_unref(bs);
    g_assert_cmpint(uh_file_size(path), ==, size);
    g_unlink(path);
}

/* --- block status ---------------------------------------------------------------------------- */

#define MiB (1024 * 1024)

/* 4 MiB sparse file: data at [1 MiB, 1 MiB + 64 KiB) and [3 MiB, 3 MiB + 4 KiB). */
static void create_sparse(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    g_autofree uint8_t *buf = g_malloc(65536);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, 4 * MiB), ==, 0);
    uh_fill_pattern(buf, 65536, MiB, 8);
    g_assert_cmpint(pwrite(fd, buf, 65536, MiB), ==, 65536);
    g_assert_cmpint(pwrite(fd, buf, 4096, 3 * MiB), ==, 4096);
    g_assert_cmpint(fdatasync(fd), ==, 0);
    close(fd);
}

static void check_status(BlockDriverState *bs, int64_t offset, int64_t bytes, int want,
                         int64_t want_pnum)
{
    int64_t pnum = -1, map = -1;
    BlockDriverState *file = NULL;
    int ret = bdrv_block_status(bs, offset, bytes, &pnum, &map, &file);

    if (g_test_verbose()) {
        g_test_message("status %" G_GINT64_FORMAT "+%" G_GINT64_FORMAT " = 0x%x, pnum %"
                       G_GINT64_FORMAT, offset, bytes, ret, pnum);
    }
    g_assert_cmpint(ret, >=, 0);
    g_assert_cmphex(ret & (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO | BDRV_BLOCK_EOF), ==, want);
    g_assert_cmpint(pnum, ==, want_pnum);
}

static void test_block_status_sparse(void)
{
    g_autofree char *path = tmp_path("sparse.img");
    BlockDriverState *bs, *file = NULL;
    int64_t pnum, map;
    int ret;

    create_sparse(path);
    bs = open_ok(path, "raw", NULL, 0);
    check_status(bs, 0, 4 * MiB, BDRV_BLOCK_ZERO, MiB);
    check_status(bs, 4096, 4 * MiB - 4096, BDRV_BLOCK_ZERO, MiB - 4096);
    check_status(bs, MiB, 3 * MiB, BDRV_BLOCK_DATA, 65536);
    check_status(bs, MiB + 4096, 8192, BDRV_BLOCK_DATA, 8192);         /* clamped to bytes */
    check_status(bs, MiB + 65536, 3 * MiB - 65536, BDRV_BLOCK_ZERO, 2 * MiB - 65536);
    check_status(bs, 3 * MiB, MiB, BDRV_BLOCK_DATA, 4096);
    check_status(bs, 3 * MiB + 4096, MiB - 4096, BDRV_BLOCK_ZERO | BDRV_BLOCK_EOF,
                 MiB - 4096);
    check_status(bs, 3 * MiB + 4096, 16 * MiB, BDRV_BLOCK_ZERO | BDRV_BLOCK_EOF,
                 MiB - 4096);                                           /* clamped to the end */

    /* The raw layer passes through to its file: allocated, at the same offset. */
    ret = bdrv_block_status(bs, MiB, 65536, &pnum, &map, &file);
    g_assert_cmpint(ret, >=, 0);
    g_assert_true(ret & BDRV_BLOCK_ALLOCATED);
    g_assert_true(ret & BDRV_BLOCK_OFFSET_VALID);
    g_assert_cmpint(map, ==, MiB);
    g_assert_true(file == bs->file->bs);

    /* At the end: nothing left, EOF. */
    ret = bdrv_block_status(bs, 4 * MiB, 4096, &pnum, NULL, NULL);
    g_assert_cmpint(ret, >=, 0);
    g_assert_true(ret & BDRV_BLOCK_EOF);
    g_assert_cmpint(pnum, ==, 0);
    bdrv_unref(bs);
    g_unlink(path);
}

/* Resizing and block status wait for the inode lock in the kernel: the file driver does both in
 * worker threads, never on the event loop (buffered and O_DIRECT nodes alike). */
static void test_off_loop(void)
{
    g_autofree char *path = tmp_path("off-loop.img");

    for (int direct = 0; direct < 2; direct++) {
        BlockDriverState *bs;
        int64_t pnum;
        unsigned on_loop, off_loop;

        create_sparse(path);
        bs = direct ? open_direct(path, "raw", NULL) : open_ok(path, "raw", NULL, BDRV_O_RDWR);
        if (!bs) {
            break;
        }
        on_loop = __atomic_load_n(&blocking_calls_on_loop, __ATOMIC_ACQUIRE);
        off_loop = __atomic_load_n(&blocking_calls_off_loop, __ATOMIC_ACQUIRE);
        g_assert_cmpint(bdrv_block_status(bs, 0, 4 * MiB, &pnum, NULL, NULL), &, BDRV_BLOCK_ZERO);
        g_assert_cmpint(bdrv_block_status(bs, MiB, 4 * MiB, &pnum, NULL, NULL), &, BDRV_BLOCK_DATA);
        g_assert_cmpint(bdrv_truncate(bs, 8 * MiB, true, PREALLOC_MODE_OFF, NULL), ==, 0);
        g_assert_cmpint(bdrv_truncate(bs, 2 * MiB, true, PREALLOC_MODE_OFF, NULL), ==, 0);
        g_assert_cmpint(bdrv_getlength(bs), ==, 2 * MiB);
        /* It happened (two truncates, at least two seeks)... */
        g_assert_cmpuint(__atomic_load_n(&blocking_calls_on_loop, __ATOMIC_ACQUIRE) +
                         __atomic_load_n(&blocking_calls_off_loop, __ATOMIC_ACQUIRE) -
                         on_loop - off_loop, >=, 4);
        /* ...and never on the event loop. */
        g_assert_cmpuint(__atomic_load_n(&blocking_calls_on_loop, __ATOMIC_ACQUIRE), ==,
                         on_loop);
        bdrv_unref(bs);
    }
    g_unlink(path);
}

/* A raw slice reports the status of its part of the file, mapped. */
static void test_block_status_slice(void)
{
    g_autofree char *path = tmp_path("sparse-slice.img");
    BlockDriverState *bs;
    int64_t pnum, map;
    int ret;

    create_sparse(path);
    bs = open_ok(path, "raw", "offset=1M,size=128k", 0);
    g_assert_cmpint(bdrv_getlength(bs), ==, 131072);
    ret = bdrv_block_status(bs, 0, 131072, &pnum, &map, NULL);
    g_assert_cmpint(ret, >=, 0);
    g_assert_true(ret & BDRV_BLOCK_DATA);
    g_assert_cmpint(pnum, ==, 65536);
    g_assert_cmpint(map, ==, MiB);
    check_status(bs, 65536, 65536, BDRV_BLOCK_ZERO | BDRV_BLOCK_EOF, 65536);
    bdrv_unref(bs);
    g_unlink(path);
}

/* --- truncate ---------------------------------------------------------------------------------- */

static void test_truncate(void)
{
    g_autofree char *path = tmp_path("truncate.img");
    const int64_t old = 65536, grown = MiB + 123, shrunk = 8193;
    g_autofree uint8_t *ref = uh_create_pattern_file(path, old, 9);
    g_autofree uint8_t *buf = g_malloc(grown);
    BlockDriverState *bs = open_ok(path, "raw", NULL, BDRV_O_RDWR);

    g_assert_cmpint(bdrv_truncate(bs, grown, true, PREALLOC_MODE_OFF, NULL), ==, 0);
    g_assert_cmpint(bdrv_getlength(bs), ==, grown);
    g_assert_cmpint(uh_file_size(path), ==, grown);
    g_assert_cmpint(bdrv_pread(bs, 0, grown, buf), ==, 0);
    g_assert_cmpmem(buf, old, ref, old);
    g_assert_true(all_zero(buf + old, grown - old));

    /* Writes reach the new end. */
    g_assert_cmpint(bdrv_pwrite(bs, grown - 10, 10, "0123456789"), ==, 0);
    g_assert_cmpint(bdrv_pread(bs, grown - 10, 10, buf), ==, 0);
    g_assert_cmpmem(buf, 10, "0123456789", 10);

    g_assert_cmpint(bdrv_truncate(bs, shrunk, true, PREALLOC_MODE_OFF, NULL), ==, 0);
    g_assert_cmpint(bdrv_getlength(bs), ==, shrunk);
    g_assert_cmpint(uh_file_size(path), ==, shrunk);
    g_assert_cmpint(bdrv_pread(bs, 0, shrunk, buf), ==, 0);
    g_assert_cmpmem(buf, shrunk, ref, shrunk);

    /* Grow again: what was cut off is gone, it reads as zeros. */
    g_assert_cmpint(bdrv_truncate(bs, old, true, PREALLOC_MODE_OFF, NULL), ==, 0);
    g_assert_cmpint(bdrv_pread(bs, 0, old, buf), ==, 0);
    g_assert_cmpmem(buf, shrunk, ref, shrunk);
    g_assert_true(all_zero(buf + shrunk, old - shrunk));
    bdrv_unref(bs);
    g_unlink(path);
}

static void test_truncate_prealloc(void)
{
    g_autofree char *path = tmp_path("truncate-prealloc.img");
    BlockDriverState *bs;
    g_autofree uint8_t *buf = g_malloc(4 * MiB);

    uh_write_file(path, NULL, 0);
    bs = open_ok(path, "raw", NULL, BDRV_O_RDWR);
    g_assert_cmpint(bdrv_truncate(bs, 2 * MiB, true, PREALLOC_MODE_FALLOC, NULL), ==, 0);
    g_assert_cmpint(bdrv_getlength(bs), ==, 2 * MiB);
    g_assert_cmpint(bdrv_get_allocated_file_size(bs), >=, 2 * MiB);
    g_assert_cmpint(bdrv_truncate(bs, 4 * MiB, true, PREALLOC_MODE_FULL, NULL), ==, 0);
    g_assert_cmpint(bdrv_getlength(bs), ==, 4 * MiB);
    g_assert_cmpint(bdrv_get_allocated_file_size(bs), >=, 4 * MiB);
    g_assert_cmpint(bdrv_pread(bs, 0, 4 * MiB, buf), ==, 0);
    g_assert_true(all_zero(buf, 4 * MiB));
    bdrv_unref(bs);
    g_unlink(path);
}

/* --- probing ---------------------------------------------------------------------------------- */

static void test_probe_raw(void)
{
    g_autofree char *path = tmp_path("probe.img");
    g_autofree char *empty = tmp_path("probe-empty.img");
    g_autofree char *missing = tmp_path("probe-missing.img");
    g_autoptr(GError) err = NULL;
    const BlockDriver *drv;

    uh_make_pattern_file(path, 65536, 10);
    drv = bdrv_probe_format(path, &err);
    g_assert_no_error(err);
    g_assert_nonnull(drv);
    if (drv) {
        g_assert_cmpstr(drv->format_name, ==, "raw");
        g_assert_true(drv == bdrv_find_format("raw"));
    }

    uh_write_file(empty, NULL, 0);
    drv = bdrv_probe_format(empty, &err);
    g_assert_no_error(err);
    g_assert_true(drv == bdrv_find_format("raw"));

    drv = bdrv_probe_format(missing, &err);
    g_assert_null(drv);
    g_assert_nonnull(err);
    if (err) {
        g_assert_nonnull(strstr(err->message, missing));
    }
    g_unlink(path);
    g_unlink(empty);
}

static bool require_qemu_img(void)
{
    if (!uh_have_command("qemu-img")) {
        g_test_skip("qemu-img is not installed");
        return false;
    }
    return true;
}

static void test_probe_qcow2(void)
{
    g_autofree char *path = tmp_path("probe.qcow2");
    g_autoptr(GError) err = NULL;
    const BlockDriver *drv;
    BlockDriverState *bs;
    uint8_t buf[4096];

    if (!require_qemu_img()) {
        return;
    }
    g_assert_cmpint(uh_sh(NULL, "qemu-img create -q -f qcow2 '%s' 1M", path), ==, 0);
    drv = bdrv_probe_format(path, &err);
    g_assert_no_error(err);
    g_assert_nonnull(drv);
    if (drv) {
        g_assert_cmpstr(drv->format_name, ==, "qcow2");
    }

    /* And an open without a format uses it. */
    bs = open_ok(path, NULL, NULL, 0);
    g_assert_cmpstr(bs->drv->format_name, ==, "qcow2");
    g_assert_cmpint(bdrv_getlength(bs), ==, MiB);
    memset(buf, 0xff, sizeof(buf));
    g_assert_cmpint(bdrv_pread(bs, 0, sizeof(buf), buf), ==, 0);
    g_assert_true(all_zero(buf, sizeof(buf)));
    bdrv_unref(bs);
    g_unlink(path);
}

/* --- backing chains that loop ---------------------------------------------------------------- */

static void test_backing_loop(void)
{
    g_autofree char *a = tmp_path("loop-a.qcow2");
    g_autofree char *b = tmp_path("loop-b.qcow2");
    g_autofree char *self = tmp_path("loop-self.qcow2");
    g_autofree char *x = tmp_path("loop-x.qcow2");
    g_autofree char *top = tmp_path("fine-top.qcow2");
    g_autofree char *base = tmp_path("fine-base.img");
    const char *formats[] = { NULL, "qcow2" };

    if (!require_qemu_img()) {
        return;
    }
    g_assert_cmpint(uh_sh(NULL, "cd '%s' && qemu-img create -q -f qcow2 loop-b.qcow2 1M && "
                          "qemu-img create -q -f qcow2 -b loop-b.qcow2 -F qcow2 loop-a.qcow2 1M &&"
                          " qemu-img rebase -u -b loop-a.qcow2 -F qcow2 loop-b.qcow2",
                          test_dir), ==, 0);
    g_assert_cmpint(uh_sh(NULL, "cd '%s' && qemu-img create -q -f qcow2 loop-self.qcow2 1M && "
                          "qemu-img rebase -u -b loop-self.qcow2 -F qcow2 loop-self.qcow2",
                          test_dir), ==, 0);

    /* A loop that does not come back to the image opened first: x -> y -> z -> y. */
    g_assert_cmpint(uh_sh(NULL, "cd '%s' && qemu-img create -q -f qcow2 loop-y.qcow2 1M && "
                          "qemu-img create -q -f qcow2 -b loop-y.qcow2 -F qcow2 loop-x.qcow2 && "
                          "qemu-img create -q -f qcow2 -b loop-y.qcow2 -F qcow2 loop-z.qcow2 && "
                          "qemu-img rebase -u -b loop-z.qcow2 -F qcow2 loop-y.qcow2",
                          test_dir), ==, 0);

    for (size_t i = 0; i < G_N_ELEMENTS(formats); i++) {
        g_autofree char *msg_x = open_fails(x, formats[i], NULL, 0);
        g_autofree char *msg_a = open_fails(a, formats[i], NULL, 0);
        g_autofree char *msg_b = open_fails(b, formats[i], NULL, BDRV_O_RDWR);
        g_autofree char *msg_self = open_fails(self, formats[i], NULL, 0);

        g_assert_nonnull(strstr(msg_x, "loop"));
        g_assert_nonnull(strstr(msg_a, "loop"));
        g_assert_nonnull(strstr(msg_b, "loop"));
        g_assert_nonnull(strstr(msg_self, "loop"));
    }

    /* A healthy chain still opens afterwards (no state left over from the failures). */
    {
        g_autofree uint8_t *ref = uh_create_pattern_file(base, MiB, 11);
        BlockDriverState *bs;
        uint8_t buf[1000];

        g_assert_cmpint(uh_sh(NULL, "qemu-img create -q -f qcow2 -b '%s' -F raw '%s'",
                              base, top), ==, 0);
        bs = open_ok(top, NULL, NULL, 0);
        g_assert_nonnull(bs->backing);
        g_assert_cmpint(bdrv_pread(bs, 12345, sizeof(buf), buf), ==, 0);
        g_assert_cmpmem(buf, sizeof(buf), ref + 12345, sizeof(buf));
        bdrv_unref(bs);
    }
    g_unlink(a);
    g_unlink(b);
    g_unlink(self);
    g_unlink(top);
    g_unlink(base);
}

/* --- raw slices and options ------------------------------------------------------------------ */

static void test_raw_slice(void)
{
    g_autofree char *path = tmp_path("slice.img");
    const int64_t size = 65536;
    g_autofree uint8_t *ref = uh_create_pattern_file(path, size, 12);
    uint8_t buf[8192];
    BlockDriverState *bs = open_ok(path, "raw", "offset=4096,size=8192", BDRV_O_RDWR);

    g_assert_cmpint(bdrv_getlength(bs), ==, 8192);
    g_assert_cmpint(bdrv_pread(bs, 0, 8192, buf), ==, 0);
    g_assert_cmpmem(buf, 8192, ref + 4096, 8192);
    g_assert_cmpint(bdrv_pread(bs, 1001, 77, buf), ==, 0);
    g_assert_cmpmem(buf, 77, ref + 4096 + 1001, 77);

    /* Writes land inside the slice, at its offset. */
    memset(buf, 0x5a, 100);
    g_assert_cmpint(bdrv_pwrite(bs, 8092, 100, buf), ==, 0);
    memcpy(ref + 4096 + 8092, buf, 100);
    g_assert_cmpint(bdrv_pwrite(bs, 0, 3, "abc"), ==, 0);
    memcpy(ref + 4096, "abc", 3);
    bdrv_unref(bs);
    check_file_contents(path, ref, size);

    /* offset alone: up to the file's end. */
    bs = open_ok(path, "raw", "offset=60k", 0);
    g_assert_cmpint(bdrv_getlength(bs), ==, size - 61440);
    g_assert_cmpint(bdrv_pread(bs, 0, 4096, buf), ==, 0);
    g_assert_cmpmem(buf, 4096, ref + 61440, 4096);
    bdrv_unref(bs);
    g_unlink(path);
}

static void test_raw_slice_bad(void)
{
    g_autofree char *path = tmp_path("slice-bad.img");
    g_autofree char *past = NULL, *past_size = NULL, *bad_value = NULL;

    uh_make_pattern_file(path, 65536, 13);
    past = open_fails(path, "raw", "offset=65537", 0);
    past_size = open_fails(path, "raw", "offset=4096,size=62k", 0);
    bad_value = open_fails(path, "raw", "offset=12x", 0);
    g_assert_nonnull(strstr(past, "offset"));
    g_assert_nonnull(strstr(past_size, "size"));
    g_assert_nonnull(strstr(bad_value, "offset"));
    g_assert_nonnull(strstr(bad_value, "12x"));

    /* With O_DIRECT the offset must be aligned. */
    {
        g_autoptr(GError) err = NULL;
        BlockOptions *opts = block_options_new();
        BlockDriverState *bs;

        g_assert_true(block_options_parse(opts, "offset=100", &err));
        bs = bdrv_open(path, "raw", opts, BDRV_O_NOCACHE, &err);
        g_hash_table_unref(opts);
        if (!bs && err && strstr(err->message, "O_DIRECT")) {
            g_test_message("no O_DIRECT here: %s", err->message);
        } else {
            g_assert_null(bs);
            g_assert_nonnull(err);
            if (err) {
                g_assert_nonnull(strstr(err->message, "multiple"));
            }
            if (bs) {
                bdrv_unref(bs);
            }
        }
    }
    g_unlink(path);
}

static void test_unknown_option(void)
{
    g_autofree char *path = tmp_path("options.img");
    g_autofree char *msg = NULL, *msg_probed = NULL, *msg_null = NULL;
    BlockDriverState *bs;

    uh_make_pattern_file(path, 4096, 14);
    msg = open_fails(path, "raw", "foo=1", 0);
    msg_probed = open_fails(path, NULL, "offset=0,bar=2", 0);
    msg_null = open_fails("null:1M", "null", "baz=3", 0);
    g_assert_nonnull(strstr(msg, "foo"));
    g_assert_nonnull(strstr(msg_probed, "bar"));
    g_assert_nonnull(strstr(msg_null, "baz"));

    /* Options some layer knows are fine, whichever layer takes them. */
    bs = open_ok(path, "raw", "locking=off,offset=512", 0);
    g_assert_cmpint(bdrv_getlength(bs), ==, 4096 - 512);
    bdrv_unref(bs);
    g_unlink(path);
}

/* --- the first-sector guard of probed raw images -------------------------------------------- */

/* A qcow2 v3 header as a guest might write it into its disk's first sector. */
static void make_qcow2_header(uint8_t *sector)
{
    memset(sector, 0, 512);
    memcpy(sector, "QFI\xfb", 4);
    stbe32(sector + 4, 3);              /* version */
    stbe64(sector + 8, 0);              /* backing file offset */
    stbe32(sector + 20, 16);            /* cluster bits */
    stbe64(sector + 24, 1 << 30);       /* size */
    stbe32(sector + 36, 1);             /* L1 size */
    stbe64(sector + 40, 0x30000);       /* L1 table offset */
    stbe64(sector + 48, 0x10000);       /* refcount table offset */
    stbe32(sector + 56, 1);             /* refcount table clusters */
    stbe32(sector + 96, 4);             /* refcount order */
    stbe32(sector + 100, 104);          /* header length */
}

static void test_raw_guard_probed(void)
{
    g_autofree char *path = tmp_path("guard.img");
    g_autofree uint8_t *ref = g_malloc0(MiB);
    uint8_t header[512], buf[512];
    BlockDriverState *bs;

    uh_write_file(path, ref, MiB);
    make_qcow2_header(header);
    bs = open_ok(path, NULL, NULL, BDRV_O_RDWR);
    g_assert_cmpstr(bs->drv->format_name, ==, "raw");
    g_assert_true(bs->open_flags & BDRV_O_PROBED);

    /* The whole header at once. */
    g_assert_cmpint(bdrv_pwrite(bs, 0, 512, header), ==, -EPERM);
    /* Everything but the magic is harmless... */
    g_assert_cmpint(bdrv_pwrite(bs, 4, 508, header + 4), ==, 0);
    memcpy(ref + 4, header + 4, 508);
    /* ...but the magic that completes it is not. */
    g_assert_cmpint(bdrv_pwrite(bs, 0, 4, header), ==, -EPERM);
    /* A future qcow2 version still claims the image (it would fail to open as qcow2)... */
    g_assert_cmpint(bdrv_pwrite(bs, 0, 8, "QFI\xfb\0\0\0\x09"), ==, -EPERM);
    /* ...but the magic with version 1, which no driver here claims, is just data. */
    g_assert_cmpint(bdrv_pwrite(bs, 0, 8, "QFI\xfb\0\0\0\x01"), ==, 0);
    memcpy(ref, "QFI\xfb\0\0\0\x01", 8);
    /* Past the first sector anything goes. */
    g_assert_cmpint(bdrv_pwrite(bs, 512, 512, header), ==, 0);
    memcpy(ref + 512, header, 512);

    g_assert_cmpint(bdrv_pread(bs, 0, 512, buf), ==, 0);
    g_assert_cmpmem(buf, 512, ref, 512);
    bdrv_unref(bs);
    check_file_contents(path, ref, MiB);

    /* A refused write left the image probing as raw. */
    {
        g_autoptr(GError) err = NULL;
        const BlockDriver *drv = bdrv_probe_format(path, &err);
        g_assert_true(drv == bdrv_find_format("raw"));
    }
    g_unlink(path);
}

static void test_raw_guard_explicit(void)
{
    g_autofree char *path = tmp_path("guard-explicit.img");
    g_autofree uint8_t *ref = g_malloc0(MiB);
    uint8_t header[512];
    BlockDriverState *bs;

    uh_write_file(path, ref, MiB);
    make_qcow2_header(header);
    bs = open_ok(path, "raw", NULL, BDRV_O_RDWR);
    g_assert_false(bs->open_flags & BDRV_O_PROBED);
    g_assert_cmpint(bdrv_pwrite(bs, 0, 512, header), ==, 0);
    memcpy(ref, header, 512);
    bdrv_unref(bs);
    check_file_contents(path, ref, MiB);
    g_unlink(path);
}

static void test_raw_guard_direct(void)
{
    g_autofree char *path = tmp_path("guard-direct.img");
    g_autofree uint8_t *ref = g_malloc0(65536);
    uint8_t header[512];
    BlockDriverState *bs;

    uh_write_file(path, ref, 65536);
    make_qcow2_header(header);
    bs = open_direct(path, NULL, NULL);
    if (!bs) {
        g_unlink(path);
        return;
    }
    g_assert_cmpint(bdrv_pwrite(bs, 0, 512, header), ==, -EPERM);
    g_assert_cmpint(bdrv_pwrite(bs, 0, 4, header), ==, 0);     /* magic without version */
    memcpy(ref, header, 4);
    g_assert_cmpint(bdrv_pwrite(bs, 4, 4, header + 4), ==, -EPERM);
    bdrv_unref(bs);
    check_file_contents(path, ref, 65536);
    g_unlink(path);
}

/* A write or zero write in a coroutine of its own, for the concurrent guard tests. */
typedef struct GuardOp {
    BlockDriverState *bs;
    bool zeroes;
    int64_t offset, bytes;
    const uint8_t *buf;
    int ret;
    unsigned *done;
} GuardOp;

static void coroutine_fn guard_op_entry(void *opaque)
{
    GuardOp *o = opaque;

    o->ret = o->zeroes ? bdrv_co_pwrite_zeroes(o->bs, o->offset, o->bytes, 0)
                       : bdrv_co_pwrite(o->bs, o->offset, o->bytes, o->buf, 0);
    __atomic_add_fetch(o->done, 1, __ATOMIC_RELEASE);
}

/* Start the two operations in this order (the first runs until it yields) and wait for both. */
static void run_guard_ops(GuardOp *first, GuardOp *second)
{
    unsigned done = 0;

    first->done = second->done = &done;
    first->ret = second->ret = -EINPROGRESS;
    coroutine_enter(coroutine_create(guard_op_entry, first));
    coroutine_enter(coroutine_create(guard_op_entry, second));
    uh_poll_until_count(&done, 2);
}

/* A probed raw image opened with fault rules: its first writes to bytes 0-3 wait a second below
 * the raw node, that is after the guard has let them through. */
static BlockDriverState *open_guard_race(const char *path, const char *rules_name)
{
    g_autofree char *rules = tmp_path(rules_name);
    g_autofree char *opts = g_strdup_printf("fault-rules=%s", rules);
    g_autofree uint8_t *zeros = g_malloc0(MiB);
    BlockDriverState *bs;

    uh_write_file(path, zeros, MiB);
    g_assert_true(g_file_set_contents(rules, "delay op=write offset=0 length=4 ms=1000\n", -1,
                                      NULL));
    bs = open_ok(path, NULL, opts, BDRV_O_RDWR);
    g_assert_cmpstr(bs->drv->format_name, ==, "raw");
    g_assert_true(bs->open_flags & BDRV_O_PROBED);
    g_unlink(rules);
    return bs;
}

/* Two writes at once into the first sector of a probed raw image: the qcow2 magic, and the rest
 * of a qcow2 header naming a backing file.  Each is harmless on its own; together they would
 * make the image a qcow2 whose backing file is any host file.  The magic is checked first and
 * then held back below the guard; the rest must be checked against the sector with the magic
 * in it, and refused. */
static void test_raw_guard_concurrent(void)
{
    g_autofree char *path = tmp_path("guard-race.img");
    uint8_t header[512], name[] = "/etc/hostname";
    BlockDriverState *bs = open_guard_race(path, "guard-race.rules");
    GuardOp magic = { .bs = bs, .offset = 0, .bytes = 4, .buf = header };
    GuardOp rest = { .bs = bs, .offset = 4, .bytes = 508, .buf = header + 4 };

    make_qcow2_header(header);
    stbe64(header + 8, 1024);                   /* backing file name at 1024 */
    stbe32(header + 16, sizeof(name) - 1);
    g_assert_cmpint(bdrv_pwrite(bs, 1024, sizeof(name) - 1, name), ==, 0);
    run_guard_ops(&magic, &rest);
    g_assert_cmpint(magic.ret, ==, 0);
    g_assert_cmpint(rest.ret, ==, -EPERM);
    bdrv_unref(bs);
    {
        g_autoptr(GError) err = NULL;
        const BlockDriver *drv = bdrv_probe_format(path, &err);
        g_assert_true(drv == bdrv_find_format("raw"));
    }
    g_unlink(path);
}

/* Zero writes to the first sector are serialised with the guarded writes too: one that starts
 * while a write of the magic is held back runs after it, and is judged with it. */
static void test_raw_guard_concurrent_zeroes(void)
{
    g_autofree char *path = tmp_path("guard-race-zeroes.img");
    uint8_t header[512], buf[512];
    BlockDriverState *bs = open_guard_race(path, "guard-race-zeroes.rules");
    GuardOp magic = { .bs = bs, .offset = 0, .bytes = 4, .buf = header };
    GuardOp zero = { .bs = bs, .zeroes = true, .offset = 0, .bytes = 512 };

    make_qcow2_header(header);
    run_guard_ops(&magic, &zero);
    g_assert_cmpint(magic.ret, ==, 0);
    g_assert_cmpint(zero.ret, ==, 0);
    g_assert_cmpint(bdrv_pread(bs, 0, 512, buf), ==, 0);
    g_assert_true(all_zero(buf, 512));          /* the zeroing came second */
    bdrv_unref(bs);
    g_unlink(path);
}

/* --- null protocol ------------------------------------------------------------------------ */

static void test_null(void)
{
    const char *formats[] = { NULL, "null", "raw" };
    g_autofree uint8_t *buf = g_malloc(MiB);

    for (size_t i = 0; i < G_N_ELEMENTS(formats); i++) {
        BlockDriverState *bs = open_ok("null:1M", formats[i], NULL, BDRV_O_RDWR);

        g_assert_cmpint(bdrv_getlength(bs), ==, MiB);
        memset(buf, 0xff, MiB);
        g_assert_cmpint(bdrv_pread(bs, 0, MiB, buf), ==, 0);
        g_assert_true(all_zero(buf, MiB));
        memset(buf, 0xff, 4096);
        g_assert_cmpint(bdrv_pwrite(bs, 100, 4096, buf), ==, 0);      /* dropped */
        g_assert_cmpint(bdrv_pread(bs, 99, 4096, buf), ==, 0);
        g_assert_true(all_zero(buf, 4096));
        g_assert_cmpint(bdrv_get_allocated_file_size(bs), ==, 0);
        bdrv_unref(bs);
    }
    {
        BlockDriverState *bs = open_ok("null:2G", NULL, NULL, 0);
        g_assert_cmpint(bdrv_getlength(bs), ==, INT64_C(2) << 30);
        bdrv_unref(bs);
    }
    {
        g_autofree char *msg = open_fails("null:12x", NULL, NULL, 0);
        g_assert_nonnull(strstr(msg, "12x"));
    }
}

static void test_flush(void)
{
    g_autofree char *path = tmp_path("flush.img");
    g_autofree uint8_t *ref = uh_create_pattern_file(path, 4096, 15);
    BlockDriverState *bs = open_ok(path, "raw", NULL, BDRV_O_RDWR);

    g_assert_cmpint(bdrv_pwrite(bs, 10, 5, "hello"), ==, 0);
    g_assert_cmpint(bdrv_flush(bs), ==, 0);
    bdrv_unref(bs);
    bs = open_ok(path, "raw", NULL, 0);
    g_assert_cmpint(bdrv_flush(bs), ==, 0);         /* read-only: nothing to do */
    bdrv_unref(bs);
    memcpy(ref + 10, "hello", 5);
    check_file_contents(path, ref, 4096);
    g_unlink(path);
}

/* The engine a test runs under, selected before it runs. */
static const char *cur_engine;

/* Write generations (io.c): a flush with nothing written to the file since the last successful
 * one is not sent to the disk; one after a write, write-zeroes, discard, truncate or a write
 * the block layer did not see (passthrough) is.  Counted where the engine flushes with libc's
 * fdatasync (in workers); under io_uring only the data is checked. */
static void test_flush_skip(void)
{
    g_autofree char *path = tmp_path("flush-skip.img");
    g_autofree uint8_t *ref = uh_create_pattern_file(path, 1024 * 1024, 16);
    g_autoptr(GError) err = NULL;
    BlockDriverState *bs = open_ok(path, "raw", NULL, BDRV_O_RDWR);
    unsigned n0 = __atomic_load_n(&fdatasync_calls, __ATOMIC_ACQUIRE);
    bool counted;

#define FLUSHES() (__atomic_load_n(&fdatasync_calls, __ATOMIC_ACQUIRE) - n0)
    g_assert_cmpint(bdrv_flush(bs), ==, 0);             /* the first one after open: sent */
    counted = FLUSHES() == 1;
    if (!counted) {
        g_test_message("fdatasync not through libc under engine %s: counts unchecked",
                       cur_engine);
    }
    g_assert_cmpint(bdrv_flush(bs), ==, 0);             /* nothing written: skipped */
    g_assert_cmpint(bdrv_flush(bs), ==, 0);
    g_assert_true(!counted || FLUSHES() == 1);
    g_assert_cmpint(bdrv_pwrite(bs, 10, 5, "hello"), ==, 0);
    memcpy(ref + 10, "hello", 5);
    g_assert_cmpint(bdrv_flush(bs), ==, 0);             /* after a write: sent */
    g_assert_true(!counted || FLUSHES() == 2);
    g_assert_cmpint(bdrv_flush(bs), ==, 0);
    g_assert_true(!counted || FLUSHES() == 2);
    g_assert_cmpint(bdrv_pwrite_zeroes(bs, 4096, 4096, 0), ==, 0);
    memset(ref + 4096, 0, 4096);
    g_assert_cmpint(bdrv_flush(bs), ==, 0);
    g_assert_true(!counted || FLUSHES() == 3);
    g_assert_cmpint(bdrv_pdiscard(bs, 65536, 65536), ==, 0);
    g_assert_cmpint(bdrv_flush(bs), ==, 0);
    g_assert_true(!counted || FLUSHES() == 4);
    g_assert_cmpint(bdrv_truncate(bs, 2 * 1024 * 1024, false, PREALLOC_MODE_OFF, &err), ==, 0);
    g_assert_no_error(err);
    g_assert_cmpint(bdrv_flush(bs), ==, 0);
    g_assert_true(!counted || FLUSHES() == 5);
    bdrv_note_unseen_writes(bs);                        /* passthrough wrote behind our back */
    g_assert_cmpint(bdrv_flush(bs), ==, 0);
    g_assert_true(!counted || FLUSHES() == 6);
    g_assert_cmpint(bdrv_flush(bs), ==, 0);
    g_assert_true(!counted || FLUSHES() == 6);
    if (counted) {      /* a failed flush makes nothing clean: the next one is sent again */
        g_assert_cmpint(bdrv_pwrite(bs, 20, 5, "world"), ==, 0);
        memcpy(ref + 20, "world", 5);
        __atomic_store_n(&fdatasync_fail, EIO, __ATOMIC_RELEASE);
        g_assert_cmpint(bdrv_flush(bs), ==, -EIO);
        __atomic_store_n(&fdatasync_fail, 0, __ATOMIC_RELEASE);
        g_assert_cmpint(FLUSHES(), ==, 7);
        g_assert_cmpint(bdrv_flush(bs), ==, 0);
        g_assert_cmpint(FLUSHES(), ==, 8);
        g_assert_cmpint(bdrv_flush(bs), ==, 0);
        g_assert_cmpint(FLUSHES(), ==, 8);
    } else {
        g_assert_cmpint(bdrv_pwrite(bs, 20, 5, "world"), ==, 0);
        memcpy(ref + 20, "world", 5);
    }
#undef FLUSHES
    bdrv_unref(bs);
    ref = g_realloc(ref, 2 * 1024 * 1024);
    memset(ref + 65536, 0, 65536);                      /* discarded: a hole */
    memset(ref + 1024 * 1024, 0, 1024 * 1024);          /* grown */
    check_file_contents(path, ref, 2 * 1024 * 1024);
    g_unlink(path);
}

/* --- the engines -------------------------------------------------------------------------- */


/* Buffered and O_DIRECT writes and reads go where the engine says: no worker thread writes
 * under io_uring; workers do under threads (the pwrite counter sees them). */
static void test_engine_used(void)
{
    g_autofree char *path = tmp_path("engine.img");
    g_autofree uint8_t *ref = uh_create_pattern_file(path, 256 * 1024, 21);
    g_autofree uint8_t *data = g_malloc(64 * 1024);
    uint8_t *back = blk_blockalign(64 * 1024);

    for (int direct = 0; direct < 2; direct++) {
        BlockDriverState *bs = direct ? open_direct(path, "raw", NULL)
                                      : open_ok(path, "raw", NULL, BDRV_O_RDWR);
        unsigned before = __atomic_load_n(&worker_pwrite_calls, __ATOMIC_ACQUIRE);
        unsigned calls;

        if (!bs) {
            break;
        }
        uh_fill_pattern(data, 64 * 1024, 0, 22 + direct);
        g_assert_cmpint(bdrv_pwrite(bs, 64 * 1024, 64 * 1024, data), ==, 0);
        g_assert_cmpint(bdrv_flush(bs), ==, 0);
        g_assert_cmpint(bdrv_pread(bs, 64 * 1024, 64 * 1024, back), ==, 0);
        g_assert_cmpmem(back, 64 * 1024, data, 64 * 1024);
        memcpy(ref + 64 * 1024, data, 64 * 1024);
        calls = __atomic_load_n(&worker_pwrite_calls, __ATOMIC_ACQUIRE) - before;
        /* auto: the ring, libaio, RWF_NOWAIT or an inline write (64 KiB is within the limit) */
        if (strcmp(cur_engine, "io_uring") == 0 || strcmp(cur_engine, "auto") == 0 ||
            (direct && strcmp(cur_engine, "native") == 0)) {
            g_assert_cmpuint(calls, ==, 0);
        } else {
            g_assert_cmpuint(calls, >, 0);
        }
        bdrv_unref(bs);
    }
    check_file_contents(path, ref, 256 * 1024);
    blk_vfree(back);
    g_unlink(path);
}

/* Closing a node releases the image locks at once, so that an open that follows finds the
 * image free: an io_uring request the kernel has completed may hold the file (and so its
 * OFD locks) for a moment after its completion (about 1 in 500 flushes here, before the
 * driver unlocked explicitly). */
static void test_engine_reopen(void)
{
    g_autofree char *path = tmp_path("reopen.img");
    g_autofree uint8_t *ref = uh_create_pattern_file(path, 64 * 1024, 23);

    for (int i = 0; i < 4000; i++) {
        BlockDriverState *bs = open_ok(path, "raw", NULL, BDRV_O_RDWR);

        if (i % 2) {
            g_assert_cmpint(bdrv_flush(bs), ==, 0);
        } else {
            g_assert_cmpint(bdrv_pwrite_zeroes(bs, 60 * 1024, 4096, 0), ==, 0);
        }
        bdrv_unref(bs);
    }
    memset(ref + 60 * 1024, 0, 4096);
    check_file_contents(path, ref, 64 * 1024);
    g_unlink(path);
}

/* aio= is checked at open: known names only, native only with O_DIRECT. */
static void test_engine_option(void)
{
    g_autofree char *path = tmp_path("engine-opt.img");
    BlockDriverState *bs;

    uh_make_pattern_file(path, 4096, 23);
    {
        g_autofree char *msg = open_fails(path, "raw", "aio=fast", BDRV_O_RDWR);
        g_assert_nonnull(strstr(msg, "unknown aio engine 'fast'"));
    }
    {
        g_autofree char *msg = open_fails(path, "raw", "aio=native", BDRV_O_RDWR);
        g_assert_nonnull(strstr(msg, "aio=native needs --cache=none"));
    }
    bs = open_ok(path, "raw", "aio=threads", BDRV_O_RDWR);
    bdrv_unref(bs);
    if (luring_available()) {
        bs = open_ok(path, "raw", "aio=io_uring", BDRV_O_RDWR);
        bdrv_unref(bs);
    } else {
        g_autofree char *msg = open_fails(path, "raw", "aio=io_uring", BDRV_O_RDWR);
        g_assert_nonnull(strstr(msg, "io_uring is not available"));
    }
    g_unlink(path);
}

/* Buffered writes where the file system refuses RWF_NOWAIT writes (ext4, tmpfs): with the default
 * engine, those up to inline-write-max (default 64 KiB) are pwrites in the event loop, larger
 * ones go to workers, but up to 1 MiB while the thread's requests come one at a time (the serial
 * hint of its AioContext, a FUSE queue's local mode); a slow inline write sends the next writes
 * to the workers; the data is right either way.  Other engines never write inline. */
static void test_inline_writes(void)
{
    g_autofree char *path = tmp_path("inline.img");
    g_autofree uint8_t *ref = uh_create_pattern_file(path, 2 * 1024 * 1024, 31);
    g_autofree uint8_t *data = g_malloc(1024 * 1024 + 1);
    static const struct { const char *opts; int64_t off, len; bool inl, serial; } w[] = {
        { "inline-write-max=128k", 4096, 4096, true },
        { "inline-write-max=128k", 70000, 131072, true },      /* exactly the limit */
        { "inline-write-max=128k", 300000, 131073, false },    /* one byte more */
        { "inline-write-max=0", 5000, 512, false },
        { NULL, 600000, 65536, true },                         /* the default limit */
        { NULL, 700000, 65537, false },
        { NULL, 4096, 1024 * 1024, true, true },               /* serial: up to 1 MiB */
        { NULL, 8192, 1024 * 1024 + 1, false, true },          /* one byte more */
        { "inline-write-max=128k", 12288, 500000, true, true },
        { "inline-write-max=0", 20000, 70000, false, true },   /* 0: never, serial or not */
    };
    bool is_auto = strcmp(cur_engine, "auto") == 0;

    for (size_t i = 0; i < G_N_ELEMENTS(w); i++) {
        BlockDriverState *bs = open_ok(path, "raw", w[i].opts, BDRV_O_RDWR);
        BlockDriverState *file = bs->file->bs;
        unsigned workers = __atomic_load_n(&worker_pwrite_calls, __ATOMIC_ACQUIRE);
        unsigned on_loop = __atomic_load_n(&loop_pwrite_calls, __ATOMIC_ACQUIRE);
        uint64_t inl;

        uh_fill_pattern(data, w[i].len, 0, 40 + i);
        __atomic_store_n(&loop_pwrite_max_us, 0, __ATOMIC_RELEASE);
        aio_set_serial(aio_get_current(), w[i].serial);
        /* The first write of a node finds out whether the file system takes RWF_NOWAIT. */
        g_assert_cmpint(bdrv_pwrite(bs, w[i].off, w[i].len, data), ==, 0);
        g_assert_cmpint(bdrv_pwrite(bs, w[i].off, w[i].len, data), ==, 0);
        aio_set_serial(aio_get_current(), false);
        memcpy(ref + w[i].off, data, w[i].len);
        inl = bdrv_file_inline_ops(file, true);
        if (!is_auto) {
            g_assert_cmpuint(inl, ==, 0);
        } else if (__atomic_load_n(&loop_pwrite_calls, __ATOMIC_ACQUIRE) == on_loop &&
                   __atomic_load_n(&worker_pwrite_calls, __ATOMIC_ACQUIRE) == workers) {
            g_test_message("the file system takes RWF_NOWAIT writes: nothing is inline");
            g_assert_cmpuint(inl, ==, 0);
        } else if (w[i].inl && inl == 1 &&
                   __atomic_load_n(&loop_pwrite_max_us, __ATOMIC_ACQUIRE) > 2000) {
            /* The first took longer than FILE_INLINE_SLOW_US (a slow machine, valgrind): the
             * second rightly went to a worker. */
            g_test_message("write %zu: the first inline write took %" G_GINT64_FORMAT " us",
                           i, __atomic_load_n(&loop_pwrite_max_us, __ATOMIC_ACQUIRE));
            g_assert_cmpuint(__atomic_load_n(&worker_pwrite_calls, __ATOMIC_ACQUIRE), >,
                             workers);
        } else if (w[i].inl) {
            g_assert_cmpuint(inl, ==, 2);
            g_assert_cmpuint(__atomic_load_n(&loop_pwrite_calls, __ATOMIC_ACQUIRE), ==,
                             on_loop + 2);
        } else {
            g_assert_cmpuint(inl, ==, 0);
            g_assert_cmpuint(__atomic_load_n(&worker_pwrite_calls, __ATOMIC_ACQUIRE), >=,
                             workers + 2);
        }
        bdrv_unref(bs);
    }
    check_file_contents(path, ref, 2 * 1024 * 1024);

    /* A slow inline write (200 ms: more than FILE_INLINE_SLOW_US) pauses inline writes for 50
     * times as long, 10 s: the next writes go to the workers. */
    if (is_auto) {
        BlockDriverState *bs = open_ok(path, "raw", NULL, BDRV_O_RDWR);
        BlockDriverState *file = bs->file->bs;
        unsigned workers;

        uh_fill_pattern(data, 8192, 0, 50);
        g_assert_cmpint(bdrv_pwrite(bs, 8192, 8192, data), ==, 0);
        if (bdrv_file_inline_ops(file, true) == 1) {
            __atomic_store_n(&slow_pwrite_us, 200 * 1000, __ATOMIC_RELEASE);
            g_assert_cmpint(bdrv_pwrite(bs, 16384, 8192, data), ==, 0);
            __atomic_store_n(&slow_pwrite_us, 0, __ATOMIC_RELEASE);
            g_assert_cmpuint(bdrv_file_inline_ops(file, true), ==, 2);
            workers = __atomic_load_n(&worker_pwrite_calls, __ATOMIC_ACQUIRE);
            g_assert_cmpint(bdrv_pwrite(bs, 24576, 8192, data), ==, 0);
            g_assert_cmpuint(bdrv_file_inline_ops(file, true), ==, 2);
            g_assert_cmpuint(__atomic_load_n(&worker_pwrite_calls, __ATOMIC_ACQUIRE), >,
                             workers);
            memcpy(ref + 16384, data, 8192);
            memcpy(ref + 24576, data, 8192);
        }
        memcpy(ref + 8192, data, 8192);
        bdrv_unref(bs);
        check_file_contents(path, ref, 2 * 1024 * 1024);
    }
    g_unlink(path);
}

static unsigned open_fds(void)
{
    g_autoptr(GDir) dir = g_dir_open("/proc/self/fd", 0, NULL);
    unsigned n = 0;

    g_assert(dir);
    while (g_dir_read_name(dir)) {
        n++;
    }
    return n;
}

/* Wait until no write-back start is queued or running (at most 30 s). */
static void wait_write_behind_idle(void)
{
    gint64 deadline = g_get_monotonic_time() + 30 * G_TIME_SPAN_SECOND;

    while (bdrv_file_write_behind_pending() && g_get_monotonic_time() < deadline) {
        g_usleep(1000);
    }
    g_assert_cmpuint(bdrv_file_write_behind_pending(), ==, 0);
}

/* Write-behind: data appended past the furthest write (at first: the length at open) starts the
 * write-back of each write-behind bytes (default 8 MiB) in a worker (sync_file_range), and the
 * write that starts it does not wait for it (the calls are held below until the writes are
 * done); rewrites inside start none, nor does write-behind=0 or O_DIRECT; the data is right
 * either way, and the node's close leaves no descriptor behind. */
static void test_write_behind(void)
{
    g_autofree char *path = tmp_path("write-behind.img");
    g_autofree uint8_t *ref = g_malloc0(4 * 1024 * 1024);
    g_autofree uint8_t *data = g_malloc(256 * 1024);
    const int64_t k128 = 128 * 1024, m1 = 1024 * 1024;
    BlockDriverState *bs, *file;
    unsigned calls, fds;

    g_free(uh_create_pattern_file(path, m1, 33));
    uh_fill_pattern(ref, m1, 0, 33);

    wait_write_behind_idle();
    fds = open_fds();
    bs = open_ok(path, "raw", "write-behind=256k", BDRV_O_RDWR);
    file = bs->file->bs;
    calls = __atomic_load_n(&sync_range_calls, __ATOMIC_ACQUIRE);
    /* Rewrites inside the file as opened: nothing starts. */
    for (int64_t off = 0; off < m1; off += k128) {
        uh_fill_pattern(data, k128, 0, 60);
        g_assert_cmpint(bdrv_pwrite(bs, off, k128, data), ==, 0);
        memcpy(ref + off, data, k128);
    }
    g_assert_cmpuint(bdrv_file_write_behind_ops(file), ==, 0);
    /* Appending: every 256 KiB, the write-back of what was appended since the last one, started
     * without waiting: both starts are still held when the writes are done. */
    sync_range_set_hold(true);
    for (int i = 0; i < 4; i++) {
        uh_fill_pattern(data, k128, 0, 61 + i);
        g_assert_cmpint(bdrv_pwrite(bs, m1 + i * k128, k128, data), ==, 0);
        memcpy(ref + m1 + i * k128, data, k128);
        g_assert_cmpuint(bdrv_file_write_behind_ops(file), ==, (i + 1) / 2);
    }
    g_assert_false(sync_range_timed_out);
    g_assert_cmpuint(bdrv_file_write_behind_pending(), ==, 2);
    g_assert_cmpuint(__atomic_load_n(&sync_range_calls, __ATOMIC_ACQUIRE), ==, calls);
    sync_range_set_hold(false);
    wait_write_behind_idle();
    g_assert_cmpuint(__atomic_load_n(&sync_range_calls, __ATOMIC_ACQUIRE), ==, calls + 2);
    if (calls + 2 <= G_N_ELEMENTS(sync_range_seen)) {
        /* the two workers may run in either order */
        int64_t (*a)[2] = &sync_range_seen[calls], (*b)[2] = &sync_range_seen[calls + 1];
        if ((*a)[0] > (*b)[0]) {
            int64_t (*t)[2] = a;
            a = b;
            b = t;
        }
        g_assert_cmpint((*a)[0], ==, m1);
        g_assert_cmpint((*a)[1], ==, 2 * k128);
        g_assert_cmpint((*b)[0], ==, m1 + 2 * k128);
        g_assert_cmpint((*b)[1], ==, 2 * k128);
    }
    /* Rewriting what was appended starts nothing either. */
    g_assert_cmpint(bdrv_pwrite(bs, m1, k128, data), ==, 0);
    memcpy(ref + m1, data, k128);
    g_assert_cmpuint(bdrv_file_write_behind_ops(file), ==, 2);
    /* A start still held when the node closes: it ends later, on its own descriptor. */
    sync_range_set_hold(true);
    uh_fill_pattern(data, 2 * k128, 0, 65);
    g_assert_cmpint(bdrv_pwrite(bs, m1 + 4 * k128, 2 * k128, data), ==, 0);
    memcpy(ref + m1 + 4 * k128, data, 2 * k128);
    g_assert_cmpuint(bdrv_file_write_behind_ops(file), ==, 3);
    bdrv_unref(bs);
    g_assert_cmpuint(bdrv_file_write_behind_pending(), ==, 1);
    sync_range_set_hold(false);
    wait_write_behind_idle();
    g_assert_false(sync_range_timed_out);
    g_assert_cmpuint(open_fds(), ==, fds);

    /* Off. */
    bs = open_ok(path, "raw", "write-behind=0", BDRV_O_RDWR);
    for (int i = 0; i < 4; i++) {
        g_assert_cmpint(bdrv_pwrite(bs, 2 * m1 + i * k128, k128, data), ==, 0);
        memcpy(ref + 2 * m1 + i * k128, data, k128);
    }
    g_assert_cmpuint(bdrv_file_write_behind_ops(bs->file->bs), ==, 0);
    bdrv_unref(bs);

    /* O_DIRECT leaves no dirty pages behind. */
    bs = try_open(path, "raw", "write-behind=128k", BDRV_O_RDWR | BDRV_O_NOCACHE, NULL);
    if (bs) {
        for (int i = 0; i < 4; i++) {
            g_assert_cmpint(bdrv_pwrite(bs, 3 * m1 + i * k128, k128, data), ==, 0);
            memcpy(ref + 3 * m1 + i * k128, data, k128);
        }
        g_assert_cmpuint(bdrv_file_write_behind_ops(bs->file->bs), ==, 0);
        bdrv_unref(bs);
        check_file_contents(path, ref, 3 * m1 + 4 * k128);
    } else {
        check_file_contents(path, ref, 2 * m1 + 4 * k128);
    }
    g_unlink(path);
}

/* Buffered reads from a file in memory (tmpfs, which refuses RWF_NOWAIT reads): with the default
 * engine those up to inline-write-max are preads in the event loop, larger ones and those of
 * other engines are not; the data is right either way. */
typedef struct SpliceReq {
    BlockDriverState *bs;
    int64_t offset, bytes;
    int pipe_fd;
    int64_t ret;
} SpliceReq;

static void coroutine_fn splice_entry(void *opaque)
{
    SpliceReq *r = opaque;

    r->ret = bdrv_co_splice_read(r->bs, r->offset, r->bytes, r->pipe_fd);
}

static int64_t splice_sync(BlockDriverState *bs, int64_t offset, int64_t bytes, int pipe_fd)
{
    SpliceReq r = { bs, offset, bytes, pipe_fd, 0 };

    aio_run_coroutine(splice_entry, &r);
    return r.ret;
}

/* Whether the kernel (or valgrind) has cachestat (Linux 6.5), which splice reads need. */
static bool have_cachestat(const char *path)
{
    uint64_t range[2] = { 0, 4096 }, cs[5];
    int fd = open(path, O_RDONLY);
    bool ok;

    g_assert_cmpint(fd, >=, 0);
    ok = syscall(451, fd, range, cs, 0) == 0;
    close(fd);
    return ok;
}

/* What the pipe holds: its bytes must be want's len bytes, and nothing more. */
static void check_pipe(int pipe_r, const uint8_t *want, size_t len)
{
    g_autofree uint8_t *got = g_malloc(len + 1);
    size_t n = 0;
    ssize_t r;

    while (n < len + 1 && (r = read(pipe_r, got + n, len + 1 - n)) > 0) {
        n += r;
    }
    g_assert_cmpuint(n, ==, len);
    g_assert_cmpmem(got, len, want, len);
}

/* Splice reads (bdrv_co_splice_read): a buffered file, and raw on one (with its offset), move a
 * cached range into a pipe; nothing is moved (-ENOTSUP) past the end of the file, from a range
 * not in the page cache, with splice-read=off, with O_DIRECT, or from a qcow2 image. */
static void test_splice_read(void)
{
    g_autofree char *path = tmp_path("splice.img");
    const int64_t size = 2 * 1024 * 1024;
    g_autofree uint8_t *ref = uh_create_pattern_file(path, size, 33);
    g_autofree uint8_t *buf = g_malloc(size);
    BlockDriverState *bs, *file;
    struct statfs sfs;
    int p[2];

    g_assert_cmpint(pipe2(p, O_CLOEXEC | O_NONBLOCK), ==, 0);
    if (fcntl(p[1], F_SETPIPE_SZ, 2 * 1024 * 1024) < 0) {
        g_assert_cmpint(fcntl(p[1], F_SETPIPE_SZ, 1024 * 1024), >, 0);
    }

    bs = open_ok(path, "raw", NULL, 0);
    file = bs->file->bs;
    g_assert_true(bs->splice_read && file->splice_read);
    if (!have_cachestat(path)) {
        /* An older kernel, or valgrind, which does not know cachestat: never spliced. */
        g_assert_cmpint(splice_sync(bs, 0, 4096, p[1]), ==, -ENOTSUP);
        check_pipe(p[0], NULL, 0);
        g_assert_cmpuint(bdrv_file_splice_ops(file), ==, 0);
        bdrv_unref(bs);
        close(p[0]);
        close(p[1]);
        g_unlink(path);
        g_test_skip("no cachestat here: splice reads are off");
        return;
    }
    g_assert_cmpint(bdrv_pread(bs, 0, size, buf), ==, 0);   /* now in the page cache */
    g_assert_cmpint(splice_sync(bs, 12345, 300000, p[1]), ==, 300000);
    check_pipe(p[0], ref + 12345, 300000);
    g_assert_cmpint(splice_sync(file, size - 4096, 4096, p[1]), ==, 4096);
    check_pipe(p[0], ref + size - 4096, 4096);
    g_assert_cmpuint(bdrv_file_splice_ops(file), ==, 2);
    /* Past the end of the file: nothing moved. */
    g_assert_cmpint(splice_sync(file, size - 4096, 4097, p[1]), ==, -ENOTSUP);
    g_assert_cmpint(splice_sync(file, size, 1, p[1]), ==, -ENOTSUP);
    check_pipe(p[0], NULL, 0);
    /* Not in the page cache (except on tmpfs, where the page cache is the storage). */
    g_assert_cmpint(statfs(path, &sfs), ==, 0);
    if (sfs.f_type != TMPFS_MAGIC) {
        int fd = open(path, O_RDONLY);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(fsync(fd), ==, 0);     /* dirty pages stay cached */
        g_assert_cmpint(posix_fadvise(fd, 0, size, POSIX_FADV_DONTNEED), ==, 0);
        close(fd);
        g_assert_cmpint(splice_sync(bs, 0, 65536, p[1]), ==, -ENOTSUP);
        check_pipe(p[0], NULL, 0);
        g_assert_cmpint(bdrv_pread(bs, 0, 65536, buf), ==, 0);
        g_assert_cmpint(splice_sync(bs, 0, 65536, p[1]), ==, 65536);
        check_pipe(p[0], ref, 65536);
    }
    bdrv_unref(bs);

    /* raw with an offset: the slice's bytes. */
    bs = open_ok(path, "raw", "offset=4096,size=1M", 0);
    g_assert_cmpint(bdrv_pread(bs, 0, 1024 * 1024, buf), ==, 0);
    g_assert_cmpint(splice_sync(bs, 100, 200000, p[1]), ==, 200000);
    check_pipe(p[0], ref + 4096 + 100, 200000);
    bdrv_unref(bs);

    /* Off: by option, with O_DIRECT (where the file system has it), for qcow2. */
    bs = open_ok(path, "raw", "splice-read=off", 0);
    g_assert_false(bs->splice_read);
    g_assert_cmpint(splice_sync(bs, 0, 4096, p[1]), ==, -ENOTSUP);
    bdrv_unref(bs);
    if (sfs.f_type != TMPFS_MAGIC) {
        bs = open_ok(path, "raw", NULL, BDRV_O_NOCACHE);
        g_assert_false(bs->splice_read);
        g_assert_cmpint(splice_sync(bs, 0, 4096, p[1]), ==, -ENOTSUP);
        bdrv_unref(bs);
    }
    check_pipe(p[0], NULL, 0);
    close(p[0]);
    close(p[1]);
    g_unlink(path);

    if (require_qemu_img()) {
        g_autofree char *qpath = tmp_path("splice.qcow2");
        g_assert_cmpint(uh_sh(NULL, "qemu-img create -q -f qcow2 '%s' 1M", qpath), ==, 0);
        bs = open_ok(qpath, "qcow2", NULL, 0);
        g_assert_false(bs->splice_read);
        g_assert_true(bs->file->bs->splice_read);
        bdrv_unref(bs);
        g_unlink(qpath);
    }
}

static void test_inline_reads_tmpfs(void)
{
    g_autofree char *dir = g_strdup("/dev/shm/blkfuse-unit.XXXXXX");
    g_autofree char *path = NULL;
    g_autofree uint8_t *ref = NULL;
    uint8_t *buf = g_malloc(256 * 1024);
    static const struct { int64_t off, len; bool inl; } r[] = {
        { 4096, 4096, true },
        { 100000, 65536, true },        /* the default limit */
        { 200000, 65537, false },       /* one byte more */
        { 1024 * 1024 - 1000, 1000, true },     /* up to the end */
    };
    bool is_auto = strcmp(cur_engine, "auto") == 0;
    BlockDriverState *bs, *file;
    struct statfs sfs;

    if (!g_mkdtemp(dir) || statfs(dir, &sfs) < 0 || sfs.f_type != TMPFS_MAGIC) {
        g_test_skip("needs /dev/shm on tmpfs");
        g_rmdir(dir);
        return;
    }
    path = g_build_filename(dir, "inline-read.img", NULL);
    ref = uh_create_pattern_file(path, 1024 * 1024, 33);
    bs = open_ok(path, "raw", NULL, BDRV_O_RDWR);
    file = bs->file->bs;
    for (size_t i = 0; i < G_N_ELEMENTS(r); i++) {
        uint64_t before = bdrv_file_inline_ops(file, false);
        int64_t in_file = MAX(0, MIN(r[i].len, 1024 * 1024 - r[i].off));

        memset(buf, 0xa5, r[i].len);
        g_assert_cmpint(bdrv_pread(bs, r[i].off, r[i].len, buf), ==, 0);
        g_assert_cmpmem(buf, in_file, ref + r[i].off, in_file);
        for (int64_t j = in_file; j < r[i].len; j++) {
            g_assert_cmpint(buf[j], ==, 0);
        }
        g_assert_cmpuint(bdrv_file_inline_ops(file, false) - before, ==,
                         is_auto && r[i].inl ? 1 : 0);
    }
    bdrv_unref(bs);
    g_unlink(path);
    g_rmdir(dir);
    g_free(buf);
}

typedef struct EngineTest {
    UhTest uh;                  /* first: what uh_run_test runs */
    const char *engine;
} EngineTest;

static void run_engine_test(gconstpointer data)
{
    const EngineTest *t = data;

    if (strcmp(t->engine, "io_uring") == 0 && !luring_available()) {
        g_test_skip("io_uring is not available here");
        return;
    }
    g_assert(bdrv_file_set_default_aio(t->engine));
    cur_engine = t->engine;
    uh_run_test(&t->uh);
    bdrv_file_set_default_aio("auto");
}


static const char *const engines[] = { "auto", "io_uring", "native", "threads" };
static const UhTest tests[] = {
    { "/buffered/unaligned-rw", test_buffered_unaligned_rw },
    { "/direct/unaligned-rw", test_direct_unaligned_rw },
    { "/direct/unaligned-eof", test_direct_unaligned_eof },
    { "/direct/concurrent-rmw", test_direct_concurrent_rmw },
    { "/direct/write-eof", test_direct_write_eof },
    { "/direct/concurrent-eof", test_direct_concurrent_eof },
    { "/write-zeroes/buffered", test_write_zeroes },
    { "/write-zeroes/direct", test_direct_write_zeroes },
    { "/write-zeroes/no-fallback", test_write_zeroes_no_fallback },
    { "/discard", test_discard },
    { "/block-status/sparse", test_block_status_sparse },
    { "/block-status/slice", test_block_status_slice },
    { "/off-loop/truncate-and-seek", test_off_loop },
    { "/truncate/grow-shrink", test_truncate },
    { "/truncate/prealloc", test_truncate_prealloc },
    { "/probe/raw", test_probe_raw },
    { "/probe/qcow2", test_probe_qcow2 },
    { "/backing/loop", test_backing_loop },
    { "/raw/slice", test_raw_slice },
    { "/raw/slice-bad", test_raw_slice_bad },
    { "/options/unknown", test_unknown_option },
    { "/raw-guard/probed", test_raw_guard_probed },
    { "/raw-guard/explicit-raw", test_raw_guard_explicit },
    { "/raw-guard/direct", test_raw_guard_direct },
    { "/raw-guard/concurrent", test_raw_guard_concurrent },
    { "/raw-guard/concurrent-zeroes", test_raw_guard_concurrent_zeroes },
    { "/null", test_null },
    { "/flush", test_flush },
    { "/flush/skip-clean", test_flush_skip },
    { "/engine/used", test_engine_used },
    { "/engine/option", test_engine_option },
    { "/engine/reopen", test_engine_reopen },
    { "/inline-writes", test_inline_writes },
    { "/write-behind", test_write_behind },
    { "/inline-reads/tmpfs", test_inline_reads_tmpfs },
    { "/splice-read", test_splice_read },
};

static EngineTest engine_tests[G_N_ELEMENTS(engines)][G_N_ELEMENTS(tests)];

int main(int argc, char **argv)
{
    int ret;

    uh_test_init(&argc, &argv);
    test_dir = uh_tmpdir_new();
    for (size_t e = 0; e < G_N_ELEMENTS(engines); e++) {
        for (size_t i = 0; i < G_N_ELEMENTS(tests); i++) {
            EngineTest *t = &engine_tests[e][i];
            t->uh.path = g_strdup_printf("/block-io/%s%s", engines[e], tests[i].path);
            t->uh.fn = tests[i].fn;
            t->engine = engines[e];
            g_test_add_data_func(t->uh.path, t, run_engine_test);
        }
    }
    ret = uh_test_run();
    for (size_t e = 0; e < G_N_ELEMENTS(engines); e++) {
        for (size_t i = 0; i < G_N_ELEMENTS(tests); i++) {
            g_free((char *)engine_tests[e][i].uh.path);
        }
    }
    uh_tmpdir_remove(test_dir);
    g_free(test_dir);
    return ret;
}
