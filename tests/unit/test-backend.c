/* test-backend.c - unit tests for the BlockBackend front door (block/backend.c): request
 * validation, statistics, write-through, draining, and requests from several threads. */
#include "config.h"
#include "unit-helpers.h"
#include "block/backend.h"
#include "block/io-engine.h"

#include <sys/syscall.h>

static char *test_dir;

static char *tmp_path(const char *name)
{
    return g_build_filename(test_dir, name, NULL);
}

/* --- counting (and slowing down) flushes ------------------------------------------------------
 * The file driver makes data durable with fdatasync(); this definition takes the place of libc's
 * in the test binary, so the tests see every flush that reaches the disk.  The io_uring engine
 * flushes without libc, so these tests use the threads engine (test-block-io runs the file
 * driver under every engine). */

static unsigned fdatasync_calls;        /* atomic */
static unsigned fdatasync_delay_us;     /* atomic */

int fdatasync(int fd)
{
    unsigned delay = __atomic_load_n(&fdatasync_delay_us, __ATOMIC_ACQUIRE);

    __atomic_add_fetch(&fdatasync_calls, 1, __ATOMIC_ACQ_REL);
    if (delay) {
        g_usleep(delay);
    }
    return syscall(SYS_fdatasync, fd);
}

static unsigned flushes(void)
{
    return __atomic_load_n(&fdatasync_calls, __ATOMIC_ACQUIRE);
}

/* --- running backend requests ---------------------------------------------------------------- */

typedef enum { B_READ, B_WRITE, B_ZEROES, B_DISCARD, B_FLUSH, B_TRUNCATE, B_STATUS } BKind;

typedef struct BOp {
    BlockBackend *blk;
    BKind kind;
    int64_t offset, bytes;
    void *buf;
    int flags;
    int64_t pnum;
    GError *err;
    int ret;
    bool done;                  /* atomic */
} BOp;

static void coroutine_fn bop_entry(void *opaque)
{
    BOp *o = opaque;

    switch (o->kind) {
    case B_READ:
        o->ret = blk_co_pread(o->blk, o->offset, o->bytes, o->buf, o->flags);
        break;
    case B_WRITE:
        o->ret = blk_co_pwrite(o->blk, o->offset, o->bytes, o->buf, o->flags);
        break;
    case B_ZEROES:
        o->ret = blk_co_pwrite_zeroes(o->blk, o->offset, o->bytes, o->flags);
        break;
    case B_DISCARD:
        o->ret = blk_co_pdiscard(o->blk, o->offset, o->bytes);
        break;
    case B_FLUSH:
        o->ret = blk_co_flush(o->blk);
        break;
    case B_TRUNCATE:
        o->ret = blk_co_truncate(o->blk, o->offset, true, PREALLOC_MODE_OFF, &o->err);
        break;
    case B_STATUS:
        o->ret = blk_co_block_status(o->blk, o->offset, o->bytes, &o->pnum);
        break;
    }
    __atomic_store_n(&o->done, true, __ATOMIC_RELEASE);
}

#define IMG_SIZE (1024 * 1024)
#define MiB (INT64_C(1024) * 1024)

static BlockBackend *open_blk(const char *path, const char *format, int flags)
{
    g_autoptr(GError) err = NULL;
    BlockBackend *blk = blk_new_open(path, format, NULL, flags, &err);

    g_assert_no_error(err);
    g_assert(blk != NULL);
    return blk;
}

/* A fresh raw image with pattern contents; returns the contents (g_free) and the path. */
static uint8_t *new_image(const char *name, char **path, size_t size)
{
    *path = tmp_path(name);
    return uh_create_pattern_file(*path, size, g_str_hash(name));
}

/* The same, when the contents are not needed. */
static void new_image_file(const char *name, char **path, size_t size)
{
    g_free(new_image(name, path, size));
}

static void check_file_contents(const char *path, const uint8_t *expected, size_t len)
{
    size_t n;
    g_autofree uint8_t *data = uh_read_file(path, &n);

    g_assert_cmpuint(n, ==, len);
    g_assert_true(memcmp(data, expected, MIN(n, len)) == 0);
}

/* --- validation ---------------------------------------------------------------------------------- */

static void test_read_past_end(void)
{
    g_autofree char *path = NULL;
    g_autofree uint8_t *ref = new_image("read-end.img", &path, IMG_SIZE);
    BlockBackend *blk = open_blk(path, "raw", BDRV_O_RDWR);
    uint8_t buf[4096];

    g_assert_cmpint(blk_getlength(blk), ==, IMG_SIZE);
    g_assert_cmpint(blk_pread(blk, IMG_SIZE - 10, 20, buf, 0), ==, -EINVAL);
    g_assert_cmpint(blk_pread(blk, IMG_SIZE, 1, buf, 0), ==, -EINVAL);
    g_assert_cmpint(blk_pread(blk, IMG_SIZE + 4096, 4096, buf, 0), ==, -EINVAL);
    g_assert_cmpint(blk_pread(blk, IMG_SIZE, 0, buf, 0), ==, 0);
    g_assert_cmpint(blk_pread(blk, IMG_SIZE - 4096, 4096, buf, 0), ==, 0);
    g_assert_cmpmem(buf, 4096, ref + IMG_SIZE - 4096, 4096);
    blk_unref(blk);

    blk = open_blk("null:64k", NULL, 0);
    g_assert_cmpint(blk_pread(blk, 65536 - 1, 2, buf, 0), ==, -EINVAL);
    g_assert_cmpint(blk_pread(blk, 65536 - 2, 2, buf, 0), ==, 0);
    blk_unref(blk);
    g_unlink(path);
}

static void test_write_past_end(void)
{
    g_autofree char *path = NULL;
    g_autofree uint8_t *ref = new_image("write-end.img", &path, IMG_SIZE);
    BlockBackend *blk = open_blk(path, "raw", BDRV_O_RDWR);
    uint8_t buf[4096];

    memset(buf, 0x77, sizeof(buf));
    g_assert_cmpint(blk_pwrite(blk, IMG_SIZE - 10, 20, buf, 0), ==, -ENOSPC);
    g_assert_cmpint(blk_pwrite(blk, IMG_SIZE, 1, buf, 0), ==, -ENOSPC);
    g_assert_cmpint(blk_pwrite(blk, IMG_SIZE * 2, 4096, buf, 0), ==, -ENOSPC);
    g_assert_cmpint(blk_pwrite_zeroes(blk, IMG_SIZE - 4096, 8192, 0), ==, -ENOSPC);
    g_assert_cmpint(blk_pwrite_zeroes(blk, IMG_SIZE - 4096, 8192, BDRV_REQ_MAY_UNMAP), ==, -ENOSPC);
    g_assert_cmpint(blk_pdiscard(blk, IMG_SIZE - 4096, 8192), <, 0);
    g_assert_cmpint(blk_pwrite(blk, IMG_SIZE, 0, buf, 0), ==, 0);
    /* Up to the very end is fine. */
    g_assert_cmpint(blk_pwrite(blk, IMG_SIZE - 20, 20, buf, 0), ==, 0);
    memcpy(ref + IMG_SIZE - 20, buf, 20);
    g_assert_cmpint(blk_getlength(blk), ==, IMG_SIZE);
    blk_unref(blk);
    check_file_contents(path, ref, IMG_SIZE);
    g_unlink(path);
}

static void test_read_only(void)
{
    g_autofree char *path = NULL;
    g_autofree uint8_t *ref = new_image("read-only.img", &path, IMG_SIZE);
    BlockBackend *blk = open_blk(path, "raw", 0);
    g_autoptr(GError) err = NULL;
    uint8_t buf[4096];

    g_assert_true(blk_is_read_only(blk));
    memset(buf, 0x11, sizeof(buf));
    g_assert_cmpint(blk_pwrite(blk, 0, 4096, buf, 0), ==, -EROFS);
    g_assert_cmpint(blk_pwrite(blk, 1, 1, buf, 0), ==, -EROFS);
    g_assert_cmpint(blk_pwrite_zeroes(blk, 0, 4096, 0), ==, -EROFS);
    g_assert_cmpint(blk_pwrite_zeroes(blk, 0, 4096, BDRV_REQ_MAY_UNMAP), ==, -EROFS);
    g_assert_cmpint(blk_pdiscard(blk, 0, 4096), ==, -EROFS);
    g_assert_cmpint(blk_truncate(blk, IMG_SIZE * 2, true, PREALLOC_MODE_OFF, &err), ==, -EROFS);
    g_assert_nonnull(err);
    g_assert_cmpint(blk_flush(blk), ==, 0);
    g_assert_cmpint(blk_pread(blk, 100, 4096, buf, 0), ==, 0);
    g_assert_cmpmem(buf, 4096, ref + 100, 4096);
    g_assert_cmpint(blk_getlength(blk), ==, IMG_SIZE);
    blk_unref(blk);
    check_file_contents(path, ref, IMG_SIZE);

    blk = open_blk(path, "raw", BDRV_O_RDWR);
    g_assert_false(blk_is_read_only(blk));
    blk_unref(blk);
    g_unlink(path);
}

static void test_negative(void)
{
    g_autofree char *path = NULL;
    g_autofree uint8_t *ref = new_image("negative.img", &path, IMG_SIZE);
    BlockBackend *blk = open_blk(path, "raw", BDRV_O_RDWR);
    uint8_t buf[4096] = { 0 };
    int64_t pnum;

    g_assert_cmpint(blk_pread(blk, -1, 10, buf, 0), ==, -EINVAL);
    g_assert_cmpint(blk_pread(blk, -4096, 4096, buf, 0), ==, -EINVAL);
    g_assert_cmpint(blk_pread(blk, INT64_MIN, 1, buf, 0), ==, -EINVAL);
    g_assert_cmpint(blk_pread(blk, 0, -1, buf, 0), ==, -EINVAL);
    g_assert_cmpint(blk_pwrite(blk, -1, 10, buf, 0), ==, -EINVAL);
    g_assert_cmpint(blk_pwrite(blk, 0, -4096, buf, 0), ==, -EINVAL);
    g_assert_cmpint(blk_pwrite_zeroes(blk, -512, 512, 0), ==, -EINVAL);
    g_assert_cmpint(blk_pdiscard(blk, -512, 512), ==, -EINVAL);
    g_assert_cmpint(blk_block_status(blk, -1, 512, &pnum), ==, -EINVAL);
    /* offset + bytes overflowing is not "past the end" but invalid */
    g_assert_cmpint(blk_pread(blk, INT64_MAX, INT64_MAX, buf, 0), ==, -EINVAL);
    g_assert_cmpint(blk_pwrite(blk, INT64_MAX - 10, 100, buf, 0), ==, -EINVAL);
    {
        g_autoptr(GError) err = NULL;
        g_assert_cmpint(blk_truncate(blk, -1, true, PREALLOC_MODE_OFF, &err), ==, -EINVAL);
        g_assert_nonnull(err);
    }
    g_assert_cmpint(blk_getlength(blk), ==, IMG_SIZE);
    blk_unref(blk);
    check_file_contents(path, ref, IMG_SIZE);
    g_unlink(path);
}

/* Zero-length requests are valid anywhere up to the end, and do nothing. */
static void test_zero_length(void)
{
    g_autofree char *path = NULL;
    g_autofree uint8_t *ref = new_image("zero-length.img", &path, IMG_SIZE);
    BlockBackend *blk = open_blk(path, "raw", BDRV_O_RDWR);
    uint8_t buf[1] = { 0x55 };
    BlockBackendStats st;

    for (int64_t off = 0; off <= IMG_SIZE; off += IMG_SIZE / 2) {
        g_assert_cmpint(blk_pread(blk, off, 0, buf, 0), ==, 0);
        g_assert_cmpint(blk_pwrite(blk, off, 0, buf, 0), ==, 0);
        g_assert_cmpint(blk_pwrite_zeroes(blk, off, 0, 0), ==, 0);
        g_assert_cmpint(blk_pdiscard(blk, off, 0), ==, 0);
    }
    g_assert_cmpint(buf[0], ==, 0x55);
    blk_get_stats(blk, &st);
    g_assert_cmpuint(st.failed[BLK_STAT_READ] + st.failed[BLK_STAT_WRITE], ==, 0);
    blk_unref(blk);
    check_file_contents(path, ref, IMG_SIZE);
    g_unlink(path);
}

/* The same for block status (in a child process: it used to abort). */
static void zero_length_status_child(void)
{
    BlockBackend *blk = open_blk("null:1M", NULL, 0);
    int64_t pnum = -1;
    int ret = blk_block_status(blk, 4096, 0, &pnum);

    g_assert_true(ret < 0 || pnum == 0);
    blk_unref(blk);
}

static void test_zero_length_status(void)
{
    g_assert_true(uh_run_in_child(zero_length_status_child));
}

static void test_open_fails(void)
{
    g_autofree char *path = tmp_path("does-not-exist.img");
    g_autoptr(GError) err = NULL;
    BlockBackend *blk = blk_new_open(path, "raw", NULL, 0, &err);

    g_assert_null(blk);
    g_assert_nonnull(err);
    if (err) {
        g_assert_nonnull(strstr(err->message, path));
        g_assert_nonnull(strstr(err->message, g_strerror(ENOENT)));
        g_assert_null(strchr(err->message, '\n'));
    }
    g_clear_error(&err);
    blk = blk_new_open(path, "no-such-format", NULL, 0, &err);
    g_assert_null(blk);
    g_assert_nonnull(err);
    if (err) {
        g_assert_nonnull(strstr(err->message, "no-such-format"));
    }
}

/* --- statistics ------------------------------------------------------------------------------ */

static void test_stats(void)
{
    g_autofree char *path = NULL;
    BlockBackend *blk;
    BlockBackendStats st;
    uint8_t buf[4096];

    new_image_file("stats.img", &path, IMG_SIZE);
    blk = open_blk(path, "raw", BDRV_O_RDWR);
    memset(buf, 0xee, sizeof(buf));
    blk_get_stats(blk, &st);
    for (int i = 0; i < BLK_STAT__MAX; i++) {
        g_assert_cmpuint(st.ops[i], ==, 0);
        g_assert_cmpuint(st.bytes[i], ==, 0);
        g_assert_cmpuint(st.failed[i], ==, 0);
    }

    g_assert_cmpint(blk_pread(blk, 0, 512, buf, 0), ==, 0);
    g_assert_cmpint(blk_pread(blk, 4097, 512, buf, 0), ==, 0);
    g_assert_cmpint(blk_pread(blk, 9000, 512, buf, 0), ==, 0);
    g_assert_cmpint(blk_pwrite(blk, 100, 1000, buf, 0), ==, 0);
    g_assert_cmpint(blk_pwrite(blk, 50000, 1000, buf, 0), ==, 0);
    g_assert_cmpint(blk_flush(blk), ==, 0);
    g_assert_cmpint(blk_pdiscard(blk, 65536, 4096), ==, 0);
    g_assert_cmpint(blk_pwrite_zeroes(blk, 131072, 8192, 0), ==, 0);
    g_assert_cmpint(blk_pread(blk, IMG_SIZE, 512, buf, 0), ==, -EINVAL);         /* failed */
    g_assert_cmpint(blk_pwrite(blk, IMG_SIZE, 512, buf, 0), ==, -ENOSPC);        /* failed */
    g_assert_cmpint(blk_pwrite(blk, -5, 512, buf, 0), ==, -EINVAL);              /* failed */

    blk_get_stats(blk, &st);
    g_assert_cmpuint(st.ops[BLK_STAT_READ], ==, 3);
    g_assert_cmpuint(st.bytes[BLK_STAT_READ], ==, 1536);
    g_assert_cmpuint(st.failed[BLK_STAT_READ], ==, 1);
    g_assert_cmpuint(st.ops[BLK_STAT_WRITE], ==, 2);
    g_assert_cmpuint(st.bytes[BLK_STAT_WRITE], ==, 2000);
    g_assert_cmpuint(st.failed[BLK_STAT_WRITE], ==, 2);
    g_assert_cmpuint(st.ops[BLK_STAT_FLUSH], ==, 1);
    g_assert_cmpuint(st.failed[BLK_STAT_FLUSH], ==, 0);
    g_assert_cmpuint(st.ops[BLK_STAT_DISCARD], ==, 1);
    g_assert_cmpuint(st.bytes[BLK_STAT_DISCARD], ==, 4096);
    g_assert_cmpuint(st.ops[BLK_STAT_ZERO], ==, 1);
    g_assert_cmpuint(st.bytes[BLK_STAT_ZERO], ==, 8192);
    g_assert_cmpuint(st.failed[BLK_STAT_ZERO], ==, 0);
    g_assert_cmpuint(st.in_flight, ==, 0);
    for (int i = 0; i < BLK_STAT__MAX; i++) {
        g_assert_cmpuint(st.total_ns[i], >, 0);
        g_assert_cmpuint(st.max_ns[i], >, 0);
        g_assert_cmpuint(st.max_ns[i], <=, st.total_ns[i]);
    }
    g_assert_cmpstr(blk_stat_names[BLK_STAT_READ], ==, "read");
    g_assert_cmpstr(blk_stat_names[BLK_STAT_WRITE], ==, "write");
    g_assert_cmpstr(blk_stat_names[BLK_STAT_FLUSH], ==, "flush");
    g_assert_cmpstr(blk_stat_names[BLK_STAT_DISCARD], ==, "discard");
    g_assert_cmpstr(blk_stat_names[BLK_STAT_ZERO], ==, "write_zeroes");
    blk_unref(blk);
    g_unlink(path);
}

/* --- write-through ---------------------------------------------------------------------------- */

static void test_write_through(void)
{
    g_autofree char *path = NULL;
    BlockBackend *blk;
    BlockBackendStats st;
    uint8_t buf[4096];
    unsigned n;

    new_image_file("write-through.img", &path, IMG_SIZE);
    blk = open_blk(path, "raw", BDRV_O_RDWR);
    memset(buf, 0x3c, sizeof(buf));

    /* The counter sees flushes at all. */
    n = flushes();
    g_assert_cmpint(blk_flush(blk), ==, 0);
    g_assert_cmpuint(flushes(), >, n);

    /* Write-back: a write does not flush... */
    g_assert_false(blk_get_write_through(blk));
    n = flushes();
    g_assert_cmpint(blk_pwrite(blk, 0, 4096, buf, 0), ==, 0);
    g_assert_cmpint(blk_pwrite_zeroes(blk, 8192, 4096, 0), ==, 0);
    g_assert_cmpuint(flushes(), ==, n);
    /* ...unless it asks for FUA. */
    g_assert_cmpint(blk_pwrite(blk, 4096, 100, buf, BDRV_REQ_FUA), ==, 0);
    g_assert_cmpuint(flushes(), >, n);

    /* Write-through: every write flushes. */
    blk_set_write_through(blk, true);
    g_assert_true(blk_get_write_through(blk));
    for (int i = 0; i < 3; i++) {
        n = flushes();
        g_assert_cmpint(blk_pwrite(blk, 12345 + i * 1000, 100, buf, 0), ==, 0);
        g_assert_cmpuint(flushes(), >, n);
    }
    n = flushes();
    g_assert_cmpint(blk_pwrite_zeroes(blk, 65536, 4096, 0), ==, 0);
    g_assert_cmpuint(flushes(), >, n);

    /* And back. */
    blk_set_write_through(blk, false);
    n = flushes();
    g_assert_cmpint(blk_pwrite(blk, 0, 4096, buf, 0), ==, 0);
    g_assert_cmpuint(flushes(), ==, n);

    blk_get_stats(blk, &st);
    g_assert_cmpuint(st.ops[BLK_STAT_WRITE], ==, 6);
    g_assert_cmpuint(st.failed[BLK_STAT_WRITE], ==, 0);
    blk_unref(blk);
    g_unlink(path);
}

/* --- draining ------------------------------------------------------------------------------ */

static void test_drain_idle(void)
{
    g_autofree char *path = NULL;
    BlockBackend *blk;
    BlockBackendStats st;
    int64_t start;

    new_image_file("drain-idle.img", &path, IMG_SIZE);
    blk = open_blk(path, "raw", BDRV_O_RDWR);
    start = g_get_monotonic_time();
    blk_drain(blk);
    blk_drain(blk);
    g_assert_cmpint(g_get_monotonic_time() - start, <, G_USEC_PER_SEC);
    blk_get_stats(blk, &st);
    g_assert_cmpuint(st.in_flight, ==, 0);
    blk_unref(blk);
    g_unlink(path);
}

/* A request of this thread is in flight (its flush sleeps in a worker): drain waits for it. */
static void test_drain_same_thread(void)
{
    g_autofree char *path = NULL;
    BlockBackend *blk;
    BOp o = { .kind = B_FLUSH, .ret = -EINPROGRESS };
    BlockBackendStats st;

    new_image_file("drain-same.img", &path, IMG_SIZE);
    blk = open_blk(path, "raw", BDRV_O_RDWR);
    o.blk = blk;
    __atomic_store_n(&fdatasync_delay_us, 100 * 1000, __ATOMIC_RELEASE);
    coroutine_enter(coroutine_create(bop_entry, &o));
    blk_get_stats(blk, &st);
    g_assert_cmpuint(st.in_flight, ==, 1);
    g_assert_false(o.done);
    blk_drain(blk);
    __atomic_store_n(&fdatasync_delay_us, 0, __ATOMIC_RELEASE);
    g_assert_true(o.done);
    g_assert_cmpint(o.ret, ==, 0);
    blk_get_stats(blk, &st);
    g_assert_cmpuint(st.in_flight, ==, 0);
    g_assert_cmpuint(st.ops[BLK_STAT_FLUSH], ==, 1);
    blk_unref(blk);
    g_unlink(path);
}

typedef struct IoThread {
    BlockBackend *blk;
    BOp op;
    GThread *thread;
} IoThread;

static gpointer io_thread_fn(gpointer opaque)
{
    IoThread *t = opaque;
    g_autoptr(GError) err = NULL;
    AioContext *ctx = aio_context_new(&err);

    g_assert_no_error(err);
    coroutine_enter(coroutine_create(bop_entry, &t->op));
    while (!__atomic_load_n(&t->op.done, __ATOMIC_ACQUIRE)) {
        aio_poll(ctx, true);
    }
    laio_thread_cleanup();
    aio_context_free(ctx);
    return NULL;
}

/* A request of another thread (with its own event loop) is in flight: drain waits for it. */
static void test_drain_other_thread(void)
{
    g_autofree char *path = NULL;
    BlockBackend *blk;
    IoThread t = { .op = { .kind = B_FLUSH, .ret = -EINPROGRESS } };
    BlockBackendStats st;

    new_image_file("drain-other.img", &path, IMG_SIZE);
    blk = open_blk(path, "raw", BDRV_O_RDWR);
    t.blk = t.op.blk = blk;
    __atomic_store_n(&fdatasync_delay_us, 200 * 1000, __ATOMIC_RELEASE);
    t.thread = g_thread_new("io", io_thread_fn, &t);
    do {
        g_usleep(1000);
        blk_get_stats(blk, &st);
    } while (st.in_flight == 0 && st.ops[BLK_STAT_FLUSH] == 0);
    blk_drain(blk);
    blk_get_stats(blk, &st);
    g_assert_cmpuint(st.in_flight, ==, 0);
    g_assert_cmpuint(st.ops[BLK_STAT_FLUSH], ==, 1);    /* finished, not abandoned */
    g_thread_join(t.thread);
    __atomic_store_n(&fdatasync_delay_us, 0, __ATOMIC_RELEASE);
    g_assert_cmpint(t.op.ret, ==, 0);
    blk_unref(blk);
    g_unlink(path);
}

/* --- other front-door operations ------------------------------------------------------------ */

static void test_truncate(void)
{
    g_autofree char *path = NULL;
    BlockBackend *blk;
    uint8_t buf[100];

    new_image_file("truncate.img", &path, IMG_SIZE);
    blk = open_blk(path, "raw", BDRV_O_RDWR);
    memset(buf, 0x42, sizeof(buf));
    g_assert_cmpint(blk_pwrite(blk, IMG_SIZE, 100, buf, 0), ==, -ENOSPC);
    g_assert_cmpint(blk_truncate(blk, IMG_SIZE + 100, true, PREALLOC_MODE_OFF, NULL), ==, 0);
    g_assert_cmpint(blk_getlength(blk), ==, IMG_SIZE + 100);
    g_assert_cmpint(blk_pwrite(blk, IMG_SIZE, 100, buf, 0), ==, 0);
    g_assert_cmpint(blk_truncate(blk, 4096, true, PREALLOC_MODE_OFF, NULL), ==, 0);
    g_assert_cmpint(blk_getlength(blk), ==, 4096);
    g_assert_cmpint(blk_pread(blk, 4000, 100, buf, 0), ==, -EINVAL);
    blk_unref(blk);
    g_assert_cmpint(uh_file_size(path), ==, 4096);
    g_unlink(path);
}

static void test_block_status(void)
{
    g_autofree char *path = tmp_path("status.img");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    g_autofree uint8_t *data = g_malloc(65536);
    BlockBackend *blk;
    int64_t pnum;
    int ret;

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, 2 * IMG_SIZE), ==, 0);
    memset(data, 0x99, 65536);
    g_assert_cmpint(pwrite(fd, data, 65536, IMG_SIZE), ==, 65536);
    g_assert_cmpint(syscall(SYS_fdatasync, fd), ==, 0);
    close(fd);

    blk = open_blk(path, "raw", 0);
    ret = blk_block_status(blk, 0, 2 * IMG_SIZE, &pnum);
    g_assert_cmpint(ret, >=, 0);
    g_assert_true(ret & BDRV_BLOCK_ZERO);
    g_assert_false(ret & BDRV_BLOCK_DATA);
    g_assert_cmpint(pnum, ==, IMG_SIZE);
    ret = blk_block_status(blk, IMG_SIZE, IMG_SIZE, &pnum);
    g_assert_cmpint(ret, >=, 0);
    g_assert_true(ret & BDRV_BLOCK_DATA);
    g_assert_cmpint(pnum, ==, 65536);
    g_assert_cmpint(blk_block_status(blk, 2 * IMG_SIZE - 10, 20, &pnum), ==, -EINVAL);
    blk_unref(blk);
    g_unlink(path);
}

static void test_refcount(void)
{
    g_autofree char *path = NULL;
    g_autofree uint8_t *ref = new_image("refcount.img", &path, 65536);
    BlockBackend *blk = open_blk(path, "raw", BDRV_O_RDWR);
    uint8_t buf[16];

    blk_ref(blk);
    blk_unref(blk);
    g_assert_cmpint(blk_pread(blk, 0, 16, buf, 0), ==, 0);     /* still open */
    g_assert_cmpmem(buf, 16, ref, 16);
    g_assert_true(blk_bs(blk) != NULL);
    g_assert_cmpstr(blk_bs(blk)->drv->format_name, ==, "raw");
    blk_unref(blk);
    blk_unref(NULL);
    g_unlink(path);
}

/* --- requests from several threads -------------------------------------------------------------- */

#define MT_THREADS  2
#define MT_WRITES   200

typedef struct MtWriter {
    BlockBackend *blk;
    int id;
    GRand *rand;
    int64_t offsets[MT_WRITES], lens[MT_WRITES];
    int failed;
} MtWriter;

typedef struct MtOne {
    MtWriter *w;
    int i;
    unsigned *done;
} MtOne;

static void coroutine_fn mt_write_entry(void *opaque)
{
    MtOne *one = opaque;
    MtWriter *w = one->w;
    uint8_t buf[64];

    memset(buf, 0x10 + w->id, sizeof(buf));
    if (blk_co_pwrite(w->blk, w->offsets[one->i], w->lens[one->i], buf, 0) < 0) {
        w->failed++;
    }
    (*one->done)++;
}

static gpointer mt_thread_fn(gpointer opaque)
{
    MtWriter *w = opaque;
    g_autoptr(GError) err = NULL;
    AioContext *ctx = aio_context_new(&err);
    MtOne ones[MT_WRITES];
    unsigned done = 0;

    g_assert_no_error(err);
    /* Batches of 8 at once, so requests of both threads overlap in time. */
    for (int i = 0; i < MT_WRITES; i++) {
        ones[i] = (MtOne){ .w = w, .i = i, .done = &done };
        coroutine_enter(coroutine_create(mt_write_entry, &ones[i]));
        if (i % 8 == 7) {
            while (done < (unsigned)i + 1) {
                aio_poll(ctx, true);
            }
        }
    }
    while (done < MT_WRITES) {
        aio_poll(ctx, true);
    }
    laio_thread_cleanup();
    aio_context_free(ctx);
    return NULL;
}

/* Two threads, each with its own event loop, write small unaligned pieces into the same few
 * 4 KiB blocks of an O_DIRECT image: thread t writes only bytes with offset % MT_THREADS == t,
 * so every read-modify-write of one thread covers bytes of the other.  Nothing may be lost. */
static void test_threads_rmw(void)
{
    g_autofree char *path = tmp_path("threads.img");
    const int64_t size = 16384;
    g_autofree uint8_t *zero = g_malloc0(size);
    g_autofree uint8_t *data = NULL;
    g_autoptr(GError) err = NULL;
    MtWriter w[MT_THREADS];
    GThread *threads[MT_THREADS];
    BlockBackend *blk;
    size_t n;

    uh_write_file(path, zero, size);
    blk = blk_new_open(path, "raw", NULL, BDRV_O_RDWR | BDRV_O_NOCACHE, &err);
    if (!blk && err && strstr(err->message, "O_DIRECT")) {
        g_test_skip(err->message);
        g_unlink(path);
        return;
    }
    g_assert_no_error(err);
    g_assert(blk != NULL);

    for (int t = 0; t < MT_THREADS; t++) {
        GRand *r = g_rand_new_with_seed(100 + t);
        w[t] = (MtWriter){ .blk = blk, .id = t };
        for (int i = 0; i < MT_WRITES; i++) {
            /* one byte at an offset of this thread's residue, in blocks 1..2 */
            w[t].offsets[i] = 4096 + MT_THREADS * g_rand_int_range(r, 0, 8192 / MT_THREADS) + t;
            w[t].lens[i] = 1;
        }
        g_rand_free(r);
    }
    for (int t = 0; t < MT_THREADS; t++) {
        threads[t] = g_thread_new("writer", mt_thread_fn, &w[t]);
    }
    for (int t = 0; t < MT_THREADS; t++) {
        g_thread_join(threads[t]);
        g_assert_cmpint(w[t].failed, ==, 0);
    }
    blk_unref(blk);

    data = uh_read_file(path, &n);
    g_assert_cmpuint(n, ==, size);
    for (int t = 0; t < MT_THREADS; t++) {
        for (int i = 0; i < MT_WRITES; i++) {
            if (data[w[t].offsets[i]] != 0x10 + t) {
                uh_fail("thread %d's byte at %" G_GINT64_FORMAT " is 0x%02x", t,
                        w[t].offsets[i], data[w[t].offsets[i]]);
                break;
            }
        }
    }
    g_unlink(path);
}

/* --- resizing excludes every other request ------------------------------------------------------
 * A truncate waits for the requests in flight and holds new ones, range checks included, until
 * it is done.  The fault filter's delay rule holds one request below the backend, after the
 * backend let it through, so that the other starts while it is in flight. */

static BlockBackend *open_blk_rules(const char *path, const char *format, const char *rules_text)
{
    g_autofree char *rules = g_strconcat(path, ".rules", NULL);
    g_autoptr(GHashTable) opts = block_options_new();
    g_autoptr(GError) err = NULL;
    BlockBackend *blk;

    g_assert_true(g_file_set_contents(rules, rules_text, -1, NULL));
    g_hash_table_insert(opts, g_strdup("fault-rules"), g_strdup(rules));
    blk = blk_new_open(path, format, opts, BDRV_O_RDWR, &err);
    g_assert_no_error(err);
    g_assert(blk != NULL);
    g_unlink(rules);
    return blk;
}

/* Start a, then b (a runs until it yields), and poll until both are done. */
static void run_two(BOp *a, BOp *b)
{
    a->ret = b->ret = -EINPROGRESS;
    coroutine_enter(coroutine_create(bop_entry, a));
    coroutine_enter(coroutine_create(bop_entry, b));
    uh_poll_until(&a->done);
    uh_poll_until(&b->done);
}

/* A write in flight past the new end when a shrink starts: the shrink waits for it.  (Without:
 * the write landed after the shrink and grew a raw file back; in qcow2 it allocated a cluster
 * past the new end, whose data came back with the next grow.) */
static void check_shrink_waits_for_write(const char *path, const char *format,
                                         const char *rules)
{
    BlockBackend *blk = open_blk_rules(path, format, rules);
    g_autofree uint8_t *piece = g_malloc(65536);
    g_autofree uint8_t *buf = g_malloc(3 * MiB);
    BOp w = { .blk = blk, .kind = B_WRITE, .offset = 3 * MiB, .bytes = 65536, .buf = piece };
    BOp t = { .blk = blk, .kind = B_TRUNCATE, .offset = MiB };

    memset(piece, 0xab, 65536);
    run_two(&w, &t);
    g_assert_cmpint(w.ret, ==, 0);
    g_assert_no_error(t.err);
    g_assert_cmpint(t.ret, ==, 0);
    g_assert_cmpint(blk_getlength(blk), ==, MiB);
    /* Grown again, the range that was cut off reads as zeros. */
    g_assert_cmpint(blk_truncate(blk, 4 * MiB, true, PREALLOC_MODE_OFF, NULL), ==, 0);
    g_assert_cmpint(blk_pread(blk, MiB, 3 * MiB, buf, 0), ==, 0);
    for (int64_t i = 0; i < 3 * MiB; i++) {
        if (buf[i]) {
            uh_fail("%s: byte %" G_GINT64_FORMAT " is 0x%02x after shrink and grow", format,
                    MiB + i, buf[i]);
            break;
        }
    }
    blk_unref(blk);
}

static void test_resize_waits_for_writes(void)
{
    g_autofree char *path = NULL;
    g_autoptr(GError) err = NULL;

    new_image_file("resize-raw.img", &path, 4 * MiB);
    check_shrink_waits_for_write(path, "raw", "delay op=write ms=500\n");
    g_assert_cmpint(uh_file_size(path), ==, 4 * MiB);
    g_unlink(path);

    g_free(path);
    path = tmp_path("resize.qcow2");
    g_assert_true(bdrv_create(path, "qcow2", 4 * MiB, NULL, NULL, NULL, &err));
    g_assert_no_error(err);
    /* Every write of the allocation (data, L2, refcounts) waits a little. */
    check_shrink_waits_for_write(path, "qcow2", "delay op=write ms=50 count=0\n");
    g_unlink(path);
}

/* Requests that arrive while a truncate runs wait for it, range checks included: after a shrink
 * a read past the new end fails (it does not read a range that is going away); after a grow a
 * read of the new range succeeds (it is not refused by the old size). */
static void test_resize_holds_new_requests(void)
{
    g_autofree char *path = NULL;
    BlockBackend *blk;
    uint8_t buf[4096];
    BOp t = { .kind = B_TRUNCATE, .offset = MiB };
    BOp r = { .kind = B_READ, .offset = 2 * MiB, .bytes = 4096, .buf = buf };
    BlockBackendStats st;

    new_image_file("resize-hold.img", &path, 4 * MiB);
    blk = open_blk_rules(path, "raw", "delay op=truncate ms=300 count=0\n");
    t.blk = r.blk = blk;
    run_two(&t, &r);
    g_assert_cmpint(t.ret, ==, 0);
    g_assert_cmpint(r.ret, ==, -EINVAL);

    t = (BOp){ .blk = blk, .kind = B_TRUNCATE, .offset = 4 * MiB };
    r = (BOp){ .blk = blk, .kind = B_READ, .offset = 3 * MiB, .bytes = 4096, .buf = buf };
    memset(buf, 0x5a, sizeof(buf));
    run_two(&t, &r);
    g_assert_cmpint(t.ret, ==, 0);
    g_assert_cmpint(r.ret, ==, 0);
    g_assert_cmpint(buf[0], ==, 0);
    g_assert_cmpint(buf[4095], ==, 0);
    blk_get_stats(blk, &st);
    g_assert_cmpuint(st.in_flight, ==, 0);
    blk_unref(blk);
    g_unlink(path);
}

/* Threads with event loops of their own write and read while the main thread shrinks and grows
 * the image again and again: every request finishes (held ones are woken in their own loops),
 * none fails but for the range, and the image ends with the last size. */
typedef struct ResizeWorker {
    BlockBackend *blk;
    unsigned id;
    int stop;                   /* atomic */
    unsigned ops, failed;
} ResizeWorker;

typedef struct ResizeReq {
    ResizeWorker *w;
    int64_t offset;
    bool write;
    bool done;
    uint8_t buf[4096];
} ResizeReq;

static void coroutine_fn resize_req_entry(void *opaque)
{
    ResizeReq *q = opaque;
    int ret = q->write ? blk_co_pwrite(q->w->blk, q->offset, 4096, q->buf, 0)
                       : blk_co_pread(q->w->blk, q->offset, 4096, q->buf, 0);

    /* Past the current end is the only acceptable failure. */
    if (ret < 0 && ret != -EINVAL && ret != -ENOSPC) {
        q->w->failed++;
    }
    q->w->ops++;
    q->done = true;
}

static gpointer resize_worker_fn(gpointer opaque)
{
    ResizeWorker *w = opaque;
    g_autoptr(GError) err = NULL;
    AioContext *ctx = aio_context_new(&err);
    GRand *r = g_rand_new_with_seed(w->id);

    g_assert_no_error(err);
    while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
        ResizeReq q[8];
        for (int i = 0; i < 8; i++) {
            q[i] = (ResizeReq){ .w = w, .offset = 4096 * g_rand_int_range(r, 0, 512),
                                .write = g_rand_boolean(r) };
            memset(q[i].buf, w->id + 1, sizeof(q[i].buf));
            coroutine_enter(coroutine_create(resize_req_entry, &q[i]));
        }
        for (int i = 0; i < 8; i++) {
            uh_poll_until(&q[i].done);
        }
    }
    g_rand_free(r);
    aio_context_free(ctx);
    return NULL;
}

static void test_resize_threads(void)
{
    g_autofree char *path = NULL;
    BlockBackend *blk;
    ResizeWorker w[2];
    GThread *threads[2];
    BlockBackendStats st;

    new_image_file("resize-threads.img", &path, 2 * MiB);
    blk = open_blk(path, "raw", BDRV_O_RDWR);
    for (unsigned i = 0; i < 2; i++) {
        w[i] = (ResizeWorker){ .blk = blk, .id = i };
        threads[i] = g_thread_new("resize-io", resize_worker_fn, &w[i]);
    }
    for (int i = 0; i < 200; i++) {
        g_assert_cmpint(blk_truncate(blk, i % 2 ? 2 * MiB : MiB, true, PREALLOC_MODE_OFF, NULL),
                        ==, 0);
    }
    for (unsigned i = 0; i < 2; i++) {
        __atomic_store_n(&w[i].stop, 1, __ATOMIC_RELEASE);
        g_thread_join(threads[i]);
        g_assert_cmpuint(w[i].failed, ==, 0);
        g_assert_cmpuint(w[i].ops, >, 0);
    }
    blk_get_stats(blk, &st);
    g_assert_cmpuint(st.in_flight, ==, 0);
    g_assert_cmpint(blk_getlength(blk), ==, 2 * MiB);
    blk_unref(blk);
    g_assert_cmpint(uh_file_size(path), ==, 2 * MiB);
    g_unlink(path);
}

int main(int argc, char **argv)
{
    int ret;

    uh_test_init(&argc, &argv);
    g_assert(bdrv_file_set_default_aio("threads"));
    test_dir = uh_tmpdir_new();
    uh_test_add("/backend/validate/read-past-end", test_read_past_end);
    uh_test_add("/backend/validate/write-past-end", test_write_past_end);
    uh_test_add("/backend/validate/read-only", test_read_only);
    uh_test_add("/backend/validate/negative", test_negative);
    uh_test_add("/backend/validate/zero-length", test_zero_length);
    uh_test_add("/backend/validate/zero-length-status", test_zero_length_status);
    uh_test_add("/backend/open-fails", test_open_fails);
    uh_test_add("/backend/stats", test_stats);
    uh_test_add("/backend/write-through", test_write_through);
    uh_test_add("/backend/drain/idle", test_drain_idle);
    uh_test_add("/backend/drain/same-thread", test_drain_same_thread);
    uh_test_add("/backend/drain/other-thread", test_drain_other_thread);
    uh_test_add("/backend/truncate", test_truncate);
    uh_test_add("/backend/block-status", test_block_status);
    uh_test_add("/backend/refcount", test_refcount);
    uh_test_add("/backend/threads/rmw-same-blocks", test_threads_rmw);
    uh_test_add("/backend/resize/waits-for-writes", test_resize_waits_for_writes);
    uh_test_add("/backend/resize/holds-new-requests", test_resize_holds_new_requests);
    uh_test_add("/backend/resize/threads", test_resize_threads);
    ret = uh_test_run();
    uh_tmpdir_remove(test_dir);
    g_free(test_dir);
    return ret;
}
