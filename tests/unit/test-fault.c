/* test-fault.c - unit tests for the fault-injection filter (block/fault.c): where bdrv_open puts
 * it, every rule and keyword, every parse error, delays that leave the event loop running,
 * counters shared by requests from several threads, the trace, and power-loss mode (buffered
 * changes, flushes, the power failure in both modes, from several threads at once). */
#include "config.h"
#include "unit-helpers.h"
#include "block/backend.h"
#include "block/io-engine.h"

#include <inttypes.h>

static char *test_dir;

static char *tmp_path(const char *name)
{
    return g_build_filename(test_dir, name, NULL);
}

/* --- images and rules ---------------------------------------------------------------------- */

#define IMG_SIZE (1024 * 1024)

/* Write a rules file name (in the test dir) with text; returns its path. */
static char *write_rules(const char *name, const char *text)
{
    char *path = tmp_path(name);

    uh_write_file(path, text, strlen(text));
    return path;
}

/* Open image (format, flags) with fault-rules=rules; NULL with *errp on failure. */
static BlockBackend *open_fault(const char *image, const char *format, int flags,
                                const char *rules, GError **errp)
{
    BlockOptions *opts = block_options_new();
    BlockBackend *blk;

    g_hash_table_insert(opts, g_strdup("fault-rules"), g_strdup(rules));
    blk = blk_new_open(image, format, opts, flags, errp);
    g_hash_table_unref(opts);
    return blk;
}

/* A raw image name of IMG_SIZE pattern bytes opened read-write through rules text. */
static BlockBackend *raw_with_rules(const char *name, const char *text, uint8_t **contents)
{
    g_autofree char *image = tmp_path(name);
    g_autofree char *rules_name = g_strconcat(name, ".rules", NULL);
    g_autofree char *rules = write_rules(rules_name, text);
    g_autoptr(GError) err = NULL;
    uint8_t *data = uh_create_pattern_file(image, IMG_SIZE, g_str_hash(name));
    BlockBackend *blk = open_fault(image, "raw", BDRV_O_RDWR, rules, &err);

    g_assert_no_error(err);
    g_assert_nonnull(blk);
    if (contents) {
        *contents = data;
    } else {
        g_free(data);
    }
    return blk;
}

/* --- where the filter goes ------------------------------------------------------------------ */

static void test_graph_raw(void)
{
    g_autofree uint8_t *ref = NULL;
    BlockBackend *blk = raw_with_rules("graph.img", "# nothing\n\n", &ref);
    BlockDriverState *bs = blk_bs(blk);
    uint8_t buf[4096];

    g_assert_cmpstr(bs->drv->format_name, ==, "raw");
    g_assert_nonnull(bs->file);
    g_assert_cmpstr(bs->file->bs->drv->format_name, ==, "fault");
    g_assert_cmpstr(bs->file->bs->node_name, ==, "fault");
    g_assert_cmpstr(bs->file->bs->file->bs->drv->format_name, ==, "file");
    g_assert_cmpstr(bs->file->bs->filename, ==, bs->file->bs->file->bs->filename);
    g_assert_cmpint(blk_getlength(blk), ==, IMG_SIZE);
    g_assert_cmpint(blk_pread(blk, 8192, sizeof(buf), buf, 0), ==, 0);
    g_assert_true(memcmp(buf, ref + 8192, sizeof(buf)) == 0);
    blk_unref(blk);
}

static void test_graph_qcow2(void)
{
    g_autofree char *image = tmp_path("graph.qcow2");
    g_autofree char *rules = write_rules("graph-qcow2.rules", "");
    g_autoptr(GError) err = NULL;
    BlockBackend *blk;
    uint8_t buf[4096], back[4096];

    g_assert_true(bdrv_create(image, "qcow2", IMG_SIZE, NULL, NULL, NULL, &err));
    g_assert_no_error(err);
    blk = open_fault(image, NULL, BDRV_O_RDWR, rules, &err);
    g_assert_no_error(err);
    g_assert_cmpstr(blk_bs(blk)->drv->format_name, ==, "qcow2");
    g_assert_cmpstr(blk_bs(blk)->file->bs->drv->format_name, ==, "fault");
    uh_fill_pattern(buf, sizeof(buf), 0, 7);
    g_assert_cmpint(blk_pwrite(blk, 65536, sizeof(buf), buf, 0), ==, 0);
    g_assert_cmpint(blk_pread(blk, 65536, sizeof(back), back, 0), ==, 0);
    g_assert_true(memcmp(buf, back, sizeof(buf)) == 0);
    blk_unref(blk);
}

/* Limits come from the child: O_DIRECT alignment shows through the filter. */
static void test_passthrough_limits(void)
{
    g_autofree char *image = tmp_path("limits.img");
    g_autofree char *rules = write_rules("limits.rules", "");
    g_autoptr(GError) err = NULL;
    g_autofree uint8_t *ref = uh_create_pattern_file(image, IMG_SIZE, 3);
    BlockBackend *blk = open_fault(image, "raw", BDRV_O_RDWR | BDRV_O_NOCACHE, rules, &err);
    BlockDriverState *filter;
    uint8_t buf[100];

    g_assert_no_error(err);
    filter = blk_bs(blk)->file->bs;
    g_assert_cmpuint(filter->bl.request_alignment, ==,
                     filter->file->bs->bl.request_alignment);
    g_assert_cmpuint(filter->bl.request_alignment, >=, 512);
    g_assert_cmpint(blk_pread(blk, 1001, sizeof(buf), buf, 0), ==, 0);
    g_assert_true(memcmp(buf, ref + 1001, sizeof(buf)) == 0);
    blk_unref(blk);
}

static void test_passthrough_status_length(void)
{
    g_autofree char *image = tmp_path("status.img");
    g_autofree char *rules = write_rules("status.rules", "");
    g_autoptr(GError) err = NULL;
    BlockBackend *blk;
    int64_t pnum;
    int ret;

    /* 1 MiB, data only in the second 64 KiB */
    g_assert_cmpint(uh_sh(NULL, "truncate -s %d '%s' && printf x | dd of='%s' bs=1 seek=65536 "
                          "conv=notrunc status=none", IMG_SIZE, image, image), ==, 0);
    blk = open_fault(image, "raw", BDRV_O_RDWR, rules, &err);
    g_assert_no_error(err);
    ret = blk_block_status(blk, 0, IMG_SIZE, &pnum);
    g_assert_cmpint(ret, >=, 0);
    g_assert_true(ret & BDRV_BLOCK_ZERO);
    g_assert_cmpint(pnum, ==, 65536);
    ret = blk_block_status(blk, 65536, IMG_SIZE - 65536, &pnum);
    g_assert_true(ret & BDRV_BLOCK_DATA);
    g_assert_cmpint(blk_truncate(blk, 2 * IMG_SIZE, true, PREALLOC_MODE_OFF, NULL), ==, 0);
    g_assert_cmpint(blk_getlength(blk), ==, 2 * IMG_SIZE);
    g_assert_cmpint(uh_file_size(image), ==, 2 * IMG_SIZE);
    g_assert_cmpint(blk_preallocate(blk, 0, IMG_SIZE), ==, 0);
    blk_unref(blk);
}

static void test_not_a_format(void)
{
    g_autofree char *image = tmp_path("notformat.img");
    g_autofree char *rules = write_rules("notformat.rules", "");
    g_autoptr(GError) err = NULL;
    BlockBackend *blk;

    uh_make_pattern_file(image, 4096, 1);
    g_assert_null(bdrv_find_format("fault"));
    g_assert_null(strstr(bdrv_format_list(), "fault"));
    blk = blk_new_open(image, "fault", NULL, 0, &err);
    g_assert_null(blk);
    g_assert_nonnull(err);
    g_clear_error(&err);
    /* A protocol opened as the format has no format node to put the filter under. */
    blk = open_fault(image, "file", 0, rules, &err);
    g_assert_null(blk);
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(err->message, "fault-rules"));
}

/* --- error rules ----------------------------------------------------------------------------- */

/* error on reads of one range: inside fails, outside and other ops pass. */
static void test_error_read_range(void)
{
    g_autofree uint8_t *ref = NULL;
    BlockBackend *blk = raw_with_rules("err-read.img",
                                       "error op=read offset=64k length=4k count=0\n", &ref);
    uint8_t buf[4096];

    g_assert_cmpint(blk_pread(blk, 0, 4096, buf, 0), ==, 0);
    g_assert_cmpint(blk_pread(blk, 65536, 4096, buf, 0), ==, -EIO);
    g_assert_cmpint(blk_pread(blk, 65536 + 4095, 1, buf, 0), ==, -EIO);
    g_assert_cmpint(blk_pread(blk, 65536 - 4096, 4097, buf, 0), ==, -EIO);
    g_assert_cmpint(blk_pread(blk, 65536 + 4096, 4096, buf, 0), ==, 0);
    g_assert_cmpint(blk_pread(blk, 65536 - 4096, 4096, buf, 0), ==, 0);
    g_assert_cmpint(blk_pread(blk, 65536, 4096, buf, 0), ==, -EIO);      /* count=0: always */
    g_assert_cmpint(blk_pwrite(blk, 65536, 4096, ref, 0), ==, 0);
    blk_unref(blk);
}

/* after=2 count=1 errno=ENOSPC: the third write fails, the others pass and land. */
static void test_error_after_count(void)
{
    g_autofree char *image = tmp_path("err-after.img");
    BlockBackend *blk = raw_with_rules("err-after.img",
                                       "error op=write after=2 errno=ENOSPC\n", NULL);
    uint8_t buf[512];
    size_t len;
    g_autofree uint8_t *data = NULL;

    for (int i = 0; i < 5; i++) {
        memset(buf, 'a' + i, sizeof(buf));
        g_assert_cmpint(blk_pwrite(blk, i * 512, 512, buf, 0), ==, i == 2 ? -ENOSPC : 0);
    }
    blk_unref(blk);
    data = uh_read_file(image, &len);
    for (int i = 0; i < 5; i++) {
        if (i == 2) {
            g_assert_cmpint(data[i * 512], !=, 'a' + i);       /* never reached the file */
        } else {
            g_assert_cmpint(data[i * 512], ==, 'a' + i);
        }
    }
}

/* count=N fires on N requests, count=0 on all from then on. */
static void test_error_count(void)
{
    BlockBackend *blk = raw_with_rules("err-count.img",
                                       "error op=read after=1 count=3 errno=EPERM\n"
                                       "error op=write after=4 count=0\n", NULL);
    uint8_t buf[512] = { 0 };

    for (int i = 0; i < 8; i++) {
        g_assert_cmpint(blk_pread(blk, 0, 512, buf, 0), ==, i >= 1 && i <= 3 ? -EPERM : 0);
    }
    for (int i = 0; i < 10; i++) {
        g_assert_cmpint(blk_pwrite(blk, 0, 512, buf, 0), ==, i >= 4 ? -EIO : 0);
    }
    blk_unref(blk);
}

/* Every op can be failed on its own; flush and truncate whatever their offset. */
static void test_error_each_op(void)
{
    static const struct { const char *op; int err; const char *name; } cases[] = {
        { "flush", EIO, "EIO" }, { "discard", EOPNOTSUPP, "EOPNOTSUPP" },
        { "zero", ENOSPC, "ENOSPC" }, { "truncate", EPERM, "EPERM" },
        { "preallocate", EDQUOT, "EDQUOT" }, { "write", EROFS, "EROFS" },
        { "read", ETIMEDOUT, "ETIMEDOUT" },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *name = g_strdup_printf("each-%s.img", cases[i].op);
        g_autofree char *rule = g_strdup_printf("error op=%s offset=512k errno=%s\n",
                                                cases[i].op, cases[i].name);
        BlockBackend *blk = raw_with_rules(name, rule, NULL);
        uint8_t buf[4096] = { 0 };
        int expect = -cases[i].err;
        bool ranged = strcmp(cases[i].op, "flush") && strcmp(cases[i].op, "truncate");

        /* every other op passes */
        g_assert_cmpint(blk_pread(blk, 524288, 4096, buf, 0), ==, !strcmp(cases[i].op, "read") ?
                        expect : 0);
        if (ranged) {   /* outside the range: passes (the rule fires only once anyway) */
            g_assert_cmpint(blk_pread(blk, 0, 4096, buf, 0), ==, 0);
            g_assert_cmpint(blk_pwrite(blk, 0, 4096, buf, 0), ==, 0);
            g_assert_cmpint(blk_pwrite_zeroes(blk, 0, 4096, 0), ==, 0);
            g_assert_cmpint(blk_pdiscard(blk, 0, 4096), ==, 0);
            g_assert_cmpint(blk_preallocate(blk, 0, 4096), ==, 0);
        }
        if (!strcmp(cases[i].op, "write")) {
            g_assert_cmpint(blk_pwrite(blk, 524288, 4096, buf, 0), ==, expect);
        } else if (!strcmp(cases[i].op, "zero")) {
            g_assert_cmpint(blk_pwrite_zeroes(blk, 524288, 4096, 0), ==, expect);
        } else if (!strcmp(cases[i].op, "discard")) {
            g_assert_cmpint(blk_pdiscard(blk, 524288, 4096), ==, expect);
        } else if (!strcmp(cases[i].op, "preallocate")) {
            g_assert_cmpint(blk_preallocate(blk, 524288, 4096), ==, expect);
        } else if (!strcmp(cases[i].op, "flush")) {
            g_assert_cmpint(blk_flush(blk), ==, expect);
            g_assert_cmpint(blk_flush(blk), ==, 0);
        } else if (!strcmp(cases[i].op, "truncate")) {
            g_assert_cmpint(blk_truncate(blk, 4096, true, PREALLOC_MODE_OFF, NULL), ==, expect);
            g_assert_cmpint(blk_getlength(blk), ==, IMG_SIZE);
            g_assert_cmpint(blk_truncate(blk, 4096, true, PREALLOC_MODE_OFF, NULL), ==, 0);
            g_assert_cmpint(blk_getlength(blk), ==, 4096);
        }
        blk_unref(blk);
    }
}

/* op=any and op lists; every matching rule counts, the first error in file order wins. */
static void test_error_any_and_lists(void)
{
    BlockBackend *blk = raw_with_rules("err-any.img",
                                       "error op=any after=3 errno=EIO  # the 4th request\n"
                                       "error op=read,flush count=0 after=3 errno=ENOSPC\n",
                                       NULL);
    uint8_t buf[512] = { 0 };

    g_assert_cmpint(blk_pwrite(blk, 0, 512, buf, 0), ==, 0);   /* any #1 */
    g_assert_cmpint(blk_pread(blk, 0, 512, buf, 0), ==, 0);    /* any #2, read/flush #1 */
    g_assert_cmpint(blk_flush(blk), ==, 0);                /* any #3, #2 */
    g_assert_cmpint(blk_pread(blk, 0, 512, buf, 0), ==, -EIO); /* any #4 fires first; #3 */
    g_assert_cmpint(blk_pread(blk, 0, 512, buf, 0), ==, -ENOSPC);    /* #4 */
    g_assert_cmpint(blk_pwrite(blk, 0, 512, buf, 0), ==, 0);
    g_assert_cmpint(blk_flush(blk), ==, -ENOSPC);
    blk_unref(blk);
}

/* Errors reach qcow2 metadata I/O too: a failed flush fails the guest's flush. */
static void test_error_under_qcow2(void)
{
    g_autofree char *image = tmp_path("err.qcow2");
    g_autofree char *rules = write_rules("err-qcow2.rules", "error op=write count=0\n");
    g_autoptr(GError) err = NULL;
    BlockBackend *blk;
    uint8_t buf[4096] = { 1 };

    g_assert_true(bdrv_create(image, "qcow2", IMG_SIZE, NULL, NULL, NULL, &err));
    blk = open_fault(image, "qcow2", BDRV_O_RDWR, rules, &err);
    g_assert_no_error(err);
    g_assert_cmpint(blk_pwrite(blk, 0, sizeof(buf), buf, 0), ==, -EIO);
    g_assert_cmpint(blk_pread(blk, 0, sizeof(buf), buf, 0), ==, 0);
    g_assert_cmpint(buf[0], ==, 0);
    blk_unref(blk);
}

/* --- delays ------------------------------------------------------------------------------------ */

typedef struct DelayedRead {
    BlockBackend *blk;
    int64_t offset;
    uint8_t buf[512];
    int ret;
    bool done;          /* atomic */
} DelayedRead;

static void coroutine_fn delayed_read_entry(void *opaque)
{
    DelayedRead *d = opaque;

    d->ret = blk_co_pread(d->blk, d->offset, sizeof(d->buf), d->buf, 0);
    __atomic_store_n(&d->done, true, __ATOMIC_RELEASE);
}

/* A delayed request waits at least ms, and the event loop serves other requests meanwhile:
 * a request started after it on the same thread completes first. */
static void test_delay(void)
{
    g_autofree uint8_t *ref = NULL;
    BlockBackend *blk = raw_with_rules("delay.img",
                                       "delay op=read offset=0 length=512 ms=300\n", &ref);
    DelayedRead slow = { .blk = blk, .offset = 0 }, fast = { .blk = blk, .offset = 4096 };
    int64_t start = get_clock_ns();

    coroutine_enter(coroutine_create(delayed_read_entry, &slow));
    coroutine_enter(coroutine_create(delayed_read_entry, &fast));
    uh_poll_until(&fast.done);
    g_assert_false(__atomic_load_n(&slow.done, __ATOMIC_ACQUIRE));
    uh_poll_until(&slow.done);
    g_assert_cmpint(get_clock_ns() - start, >=, 300 * 1000000ll);
    g_assert_cmpint(slow.ret, ==, 0);
    g_assert_cmpint(fast.ret, ==, 0);
    g_assert_true(memcmp(slow.buf, ref, 512) == 0);
    g_assert_true(memcmp(fast.buf, ref + 4096, 512) == 0);

    /* count=1 (default): the next one is not delayed (no timing assertion needed: it
     * completes without the loop having to wait for anything but the read) */
    slow.done = false;
    coroutine_enter(coroutine_create(delayed_read_entry, &slow));
    uh_poll_until(&slow.done);
    g_assert_cmpint(slow.ret, ==, 0);
    blk_unref(blk);
}

/* Delay and error on the same request: it waits, then fails. */
static void test_delay_then_error(void)
{
    BlockBackend *blk = raw_with_rules("delay-err.img",
                                       "delay op=flush ms=100\nerror op=flush errno=EIO\n",
                                       NULL);
    int64_t start = get_clock_ns();

    g_assert_cmpint(blk_flush(blk), ==, -EIO);
    g_assert_cmpint(get_clock_ns() - start, >=, 100 * 1000000ll);
    g_assert_cmpint(blk_flush(blk), ==, 0);
    blk_unref(blk);
}

/* --- several threads ------------------------------------------------------------------------- */

#define MT_THREADS 4
#define MT_WRITES 100

typedef struct MtWriter {
    BlockBackend *blk;
    int id;
    unsigned failed, done;
} MtWriter;

typedef struct MtOne {
    MtWriter *w;
    int i;
} MtOne;

static void coroutine_fn mt_write_entry(void *opaque)
{
    MtOne *one = opaque;
    uint8_t buf[512];

    memset(buf, one->w->id, sizeof(buf));
    if (blk_co_pwrite(one->w->blk, (one->w->id * MT_WRITES + one->i) * 512, 512, buf, 0) < 0) {
        one->w->failed++;
    }
    one->w->done++;
}

static gpointer mt_thread_fn(gpointer opaque)
{
    MtWriter *w = opaque;
    g_autoptr(GError) err = NULL;
    AioContext *ctx = aio_context_new(&err);
    MtOne ones[MT_WRITES];

    g_assert_no_error(err);
    for (int i = 0; i < MT_WRITES; i++) {
        ones[i] = (MtOne){ .w = w, .i = i };
        coroutine_enter(coroutine_create(mt_write_entry, &ones[i]));
    }
    while (w->done < MT_WRITES) {
        aio_poll(ctx, true);
    }
    laio_thread_cleanup();
    aio_context_free(ctx);
    return NULL;
}

/* Four threads write at once: the counters see every request exactly once. */
static void test_threads_count(void)
{
    BlockBackend *blk = raw_with_rules("threads.img",
                                       "error op=write after=100 count=50\n"
                                       "delay op=write after=10 count=20 ms=1\n", NULL);
    MtWriter w[MT_THREADS];
    GThread *threads[MT_THREADS];
    unsigned failed = 0;

    for (int t = 0; t < MT_THREADS; t++) {
        w[t] = (MtWriter){ .blk = blk, .id = t };
        threads[t] = g_thread_new("writer", mt_thread_fn, &w[t]);
    }
    for (int t = 0; t < MT_THREADS; t++) {
        g_thread_join(threads[t]);
        failed += w[t].failed;
    }
    g_assert_cmpuint(failed, ==, 50);
    blk_unref(blk);
}

/* --- trace ------------------------------------------------------------------------------------ */

static char *read_text(const char *path)
{
    size_t n;
    uint8_t *data = uh_read_file(path, &n);

    return (char *)data;
}

/* Every request, failed ones too, one line each, appended to what the file held. */
static void test_trace(void)
{
    g_autofree char *trace = tmp_path("trace.out");
    g_autofree char *text = g_strdup_printf("trace path=%s\nerror op=discard\n", trace);
    g_autofree char *got = NULL;
    BlockBackend *blk;
    uint8_t buf[4096] = { 0 };

    uh_write_file(trace, "earlier\n", 8);
    blk = raw_with_rules("trace.img", text, NULL);
    g_assert_cmpint(blk_pread(blk, 4096, 4096, buf, 0), ==, 0);
    g_assert_cmpint(blk_pwrite(blk, 8192, 512, buf, 0), ==, 0);
    g_assert_cmpint(blk_pwrite_zeroes(blk, 0, 1024, 0), ==, 0);
    g_assert_cmpint(blk_pdiscard(blk, 65536, 65536), ==, -EIO);
    g_assert_cmpint(blk_preallocate(blk, 0, 4096), ==, 0);
    g_assert_cmpint(blk_truncate(blk, 2 * IMG_SIZE, true, PREALLOC_MODE_OFF, NULL), ==, 0);
    g_assert_cmpint(blk_flush(blk), ==, 0);
    blk_unref(blk);     /* the close flushes the raw node (and so the filter), then the filter */
    got = read_text(trace);
    g_assert_cmpstr(got, ==, "earlier\n"
                    "read 4096 4096\n"
                    "write 8192 512\n"
                    "zero 0 1024\n"
                    "discard 65536 65536\n"
                    "preallocate 0 4096\n"
                    "truncate 2097152 0\n"
                    "flush 0 0\n"
                    "flush 0 0\n"
                    "flush 0 0\n");
}

/* Under qcow2 the trace shows the format's metadata I/O: a first write to an empty image writes
 * more than its data. */
static void test_trace_qcow2(void)
{
    g_autofree char *image = tmp_path("trace.qcow2");
    g_autofree char *trace = tmp_path("trace-qcow2.out");
    g_autofree char *text = g_strdup_printf("trace path=%s\n", trace);
    g_autofree char *rules = write_rules("trace-qcow2.rules", text);
    g_autofree char *got = NULL;
    g_autoptr(GError) err = NULL;
    g_auto(GStrv) lines = NULL;
    BlockBackend *blk;
    uint8_t buf[4096] = { 1 };
    unsigned writes = 0;

    g_assert_true(bdrv_create(image, "qcow2", IMG_SIZE, NULL, NULL, NULL, &err));
    blk = open_fault(image, "qcow2", BDRV_O_RDWR, rules, &err);
    g_assert_no_error(err);
    g_assert_cmpint(blk_pwrite(blk, 0, sizeof(buf), buf, 0), ==, 0);
    g_assert_cmpint(blk_flush(blk), ==, 0);
    blk_unref(blk);
    got = read_text(trace);
    lines = g_strsplit(got, "\n", -1);
    for (char **l = lines; *l; l++) {
        writes += g_str_has_prefix(*l, "write ");
    }
    g_assert_cmpuint(writes, >=, 3);    /* data, L2 table, L1 entry (and refcounts) */
}

/* --- power-loss mode --------------------------------------------------------------------------- */

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
    uh_fill_pattern(buf, len, 0, seed);
}

/* Writes stay in memory (the file does not change) but reads see them; a flush writes them;
 * the write after `after` fails with the power, as does everything later; what was flushed
 * survives and what was not is gone. */
static void test_powerfail_all(void)
{
    g_autofree char *image = tmp_path("pf-all.img");
    g_autofree uint8_t *ref = NULL;
    g_autofree uint8_t *file = NULL;
    BlockBackend *blk = raw_with_rules("pf-all.img", "powerfail after=3\n", &ref);
    uint8_t a[4096], b[4096], c[4096], back[4096];
    size_t n;

    fill(a, sizeof(a), 1);
    fill(b, sizeof(b), 2);
    fill(c, sizeof(c), 3);
    g_assert_cmpint(blk_pwrite(blk, 0, 4096, a, 0), ==, 0);                /* write #1 */
    g_assert_cmpint(blk_pread(blk, 0, 4096, back, 0), ==, 0);
    g_assert_true(memcmp(back, a, 4096) == 0);
    file = uh_read_file(image, &n);
    g_assert_true(memcmp(file, ref, IMG_SIZE) == 0);                 /* not in the file */
    g_clear_pointer(&file, g_free);
    g_assert_cmpint(blk_flush(blk), ==, 0);
    file = uh_read_file(image, &n);
    g_assert_true(memcmp(file, a, 4096) == 0);                       /* now it is */
    g_clear_pointer(&file, g_free);

    g_assert_cmpint(blk_pwrite(blk, 8192, 4096, b, 0), ==, 0);             /* #2 */
    g_assert_cmpint(blk_pwrite(blk, 8192 + 1000, 100, c, 0), ==, 0);       /* #3 (read-modify) */
    g_assert_cmpint(blk_pread(blk, 8192, 4096, back, 0), ==, 0);
    g_assert_true(memcmp(back, b, 1000) == 0);
    g_assert_true(memcmp(back + 1000, c, 100) == 0);
    g_assert_true(memcmp(back + 1100, b + 1100, 4096 - 1100) == 0);
    g_assert_cmpint(blk_pwrite(blk, 16384, 4096, c, 0), ==, -EIO);         /* #4: the power fails */
    g_assert_cmpint(blk_pread(blk, 0, 4096, back, 0), ==, -EIO);
    g_assert_cmpint(blk_pwrite(blk, 0, 4096, c, 0), ==, -EIO);
    g_assert_cmpint(blk_flush(blk), ==, -EIO);
    blk_unref(blk);

    file = uh_read_file(image, &n);
    g_assert_cmpuint(n, ==, IMG_SIZE);
    g_assert_true(memcmp(file, a, 4096) == 0);
    g_assert_true(memcmp(file + 4096, ref + 4096, IMG_SIZE - 4096) == 0);
}

/* The power can fail at a flush (op=flush): that flush fails and writes nothing. */
static void test_powerfail_at_flush(void)
{
    g_autofree char *image = tmp_path("pf-flush.img");
    g_autofree uint8_t *ref = NULL;
    g_autofree uint8_t *file = NULL;
    BlockBackend *blk = raw_with_rules("pf-flush.img", "powerfail op=flush after=1\n", &ref);
    uint8_t a[4096], b[4096];
    size_t n;

    fill(a, sizeof(a), 4);
    fill(b, sizeof(b), 5);
    g_assert_cmpint(blk_pwrite(blk, 0, 4096, a, 0), ==, 0);
    g_assert_cmpint(blk_flush(blk), ==, 0);
    g_assert_cmpint(blk_pwrite(blk, 4096, 4096, b, 0), ==, 0);
    g_assert_cmpint(blk_pwrite(blk, 8192, 4096, b, 0), ==, 0);
    g_assert_cmpint(blk_flush(blk), ==, -EIO);
    blk_unref(blk);
    file = uh_read_file(image, &n);
    g_assert_true(memcmp(file, a, 4096) == 0);
    g_assert_true(memcmp(file + 4096, ref + 4096, IMG_SIZE - 4096) == 0);
}

/* Zero writes, discards and truncates are buffered too and read back in order; the length
 * follows them; block status says data where the child does not know yet. */
static void test_powerfail_changes(void)
{
    g_autofree char *image = tmp_path("pf-changes.img");
    g_autofree uint8_t *ref = NULL;
    g_autofree uint8_t *file = NULL;
    BlockBackend *blk = raw_with_rules("pf-changes.img",
                                       "powerfail op=write after=1000\n", &ref);
    g_autofree uint8_t *model = g_malloc0(2 * IMG_SIZE);
    uint8_t a[8192], back[8192];
    int64_t pnum;
    size_t n;

    memcpy(model, ref, IMG_SIZE);
    fill(a, sizeof(a), 6);
    g_assert_cmpint(blk_pwrite_zeroes(blk, 4096, 4096, 0), ==, 0);
    memset(model + 4096, 0, 4096);
    g_assert_cmpint(blk_pdiscard(blk, 65536, 8192), ==, 0);
    memset(model + 65536, 0, 8192);
    g_assert_cmpint(blk_pwrite(blk, 65536 + 4096, 100, a, 0), ==, 0);
    memcpy(model + 65536 + 4096, a, 100);
    /* shrink ... */
    g_assert_cmpint(blk_truncate(blk, 32768, true, PREALLOC_MODE_OFF, NULL), ==, 0);
    g_assert_cmpint(blk_getlength(blk), ==, 32768);
    g_assert_cmpint(uh_file_size(image), ==, IMG_SIZE);         /* (not yet in the file) */
    /* ... and grow: zeros */
    g_assert_cmpint(blk_truncate(blk, 2 * IMG_SIZE, true, PREALLOC_MODE_OFF, NULL), ==, 0);
    memset(model + 32768, 0, 2 * IMG_SIZE - 32768);
    g_assert_cmpint(blk_getlength(blk), ==, 2 * IMG_SIZE);
    g_assert_cmpint(blk_pread(blk, 0, 8192, back, 0), ==, 0);
    g_assert_true(memcmp(back, model, 8192) == 0);
    g_assert_cmpint(blk_pread(blk, 65536, 8192, back, 0), ==, 0);
    g_assert_true(memcmp(back, model + 65536, 8192) == 0);

    /* A write past the end of the file: the length follows before any flush. */
    g_assert_cmpint(blk_truncate(blk, IMG_SIZE, true, PREALLOC_MODE_OFF, NULL), ==, 0);
    g_assert_cmpint(blk_pwrite(blk, IMG_SIZE - 4096, 4096, a, 0), ==, 0);
    memcpy(model + IMG_SIZE - 4096, a, 4096);
    g_assert_cmpint(blk_getlength(blk), ==, IMG_SIZE);
    g_assert_cmpint(blk_block_status(blk, IMG_SIZE - 4096, 4096, &pnum) & BDRV_BLOCK_DATA, !=, 0);

    g_assert_cmpint(blk_flush(blk), ==, 0);
    g_assert_cmpint(uh_file_size(image), ==, IMG_SIZE);
    blk_unref(blk);
    file = uh_read_file(image, &n);
    g_assert_cmpuint(n, ==, IMG_SIZE);
    g_assert_true(memcmp(file, model, IMG_SIZE) == 0);
}

/* A growing image (writes past the end) under power-loss mode: getlength is the end of the
 * buffered writes until the flush, and the file's own length afterwards. */
static void test_powerfail_length(void)
{
    g_autofree char *image = tmp_path("pf-len.img");
    g_autofree char *rules = write_rules("pf-len.rules", "powerfail after=5\n");
    g_autoptr(GError) err = NULL;
    BlockBackend *blk;
    BlockDriverState *filter;
    uint8_t a[4096];

    uh_make_pattern_file(image, 8192, 9);
    blk = open_fault(image, "raw", BDRV_O_RDWR, rules, &err);
    g_assert_no_error(err);
    filter = blk_bs(blk)->file->bs;
    fill(a, sizeof(a), 7);
    /* below the backend (which would refuse writes past the end): straight to the filter */
    g_assert_cmpint(bdrv_pwrite(filter, 65536, 4096, a), ==, 0);
    g_assert_cmpint(bdrv_getlength(filter), ==, 65536 + 4096);
    g_assert_cmpint(bdrv_getlength(filter->file->bs), ==, 8192);
    g_assert_cmpint(bdrv_flush(filter), ==, 0);
    g_assert_cmpint(bdrv_getlength(filter->file->bs), ==, 65536 + 4096);
    g_assert_cmpint(bdrv_getlength(filter), ==, 65536 + 4096);
    blk_unref(blk);
}

/* mode=random: a subset of the unflushed writes survives, in order, the same for the same
 * seed; each block holds its old contents or one of the values written to it, and a block
 * written twice never goes back from the second value to the first. */
static void random_run(const char *name, uint64_t seed, int which[16], unsigned kept[3])
{
    g_autofree char *image = tmp_path(name);
    g_autofree char *text = g_strdup_printf("powerfail after=32 mode=random seed=%" PRIu64
                                            "\n", seed);
    g_autofree uint8_t *ref = NULL;
    BlockBackend *blk = raw_with_rules(name, text, &ref);
    g_autofree uint8_t *result = NULL;
    uint8_t buf[512];
    size_t n;

    /* 16 blocks written twice: values (block, 1) then (block, 2) */
    for (int round = 1; round <= 2; round++) {
        for (int b = 0; b < 16; b++) {
            memset(buf, b * 4 + round, sizeof(buf));
            g_assert_cmpint(blk_pwrite(blk, b * 512, 512, buf, 0), ==, 0);
        }
    }
    g_assert_cmpint(blk_pwrite(blk, 0, 512, buf, 0), ==, -EIO);
    blk_unref(blk);
    result = uh_read_file(image, &n);
    kept[0] = kept[1] = kept[2] = 0;    /* blocks with: the old data, the first, the second */
    for (int b = 0; b < 16; b++) {
        uint8_t v = result[b * 512];
        if (memcmp(result + b * 512, ref + b * 512, 512) == 0) {
            which[b] = 0;       /* neither write survived */
        } else {
            g_assert_true(v == b * 4 + 1 || v == b * 4 + 2);
            for (int i = 0; i < 512; i++) {
                g_assert_cmpint(result[b * 512 + i], ==, v);
            }
            which[b] = v - b * 4;
        }
        kept[which[b]]++;
    }
    g_assert_true(memcmp(result + 16 * 512, ref + 16 * 512, IMG_SIZE - 16 * 512) == 0);
}

static void test_powerfail_random(void)
{
    int r1[16], r2[16], r3[16];
    unsigned k1[3], k2[3], k3[3];

    random_run("pf-rand1.img", 42, r1, k1);
    random_run("pf-rand2.img", 42, r2, k2);
    random_run("pf-rand3.img", 43, r3, k3);
    g_assert_true(memcmp(r1, r2, sizeof(r1)) == 0);
    /* 32 coin flips: with this seed, some blocks keep old data, some the first write only
     * (a later write was lost while an earlier one survived), some the second */
    g_assert_cmpuint(k1[0], >, 0);
    g_assert_cmpuint(k1[1], >, 0);
    g_assert_cmpuint(k1[2], >, 0);
    g_assert_false(memcmp(r1, r3, sizeof(r1)) == 0);
}

/* mode=lose-one index=J: every unflushed change survives but the J-th. */
static void test_powerfail_lose_one(void)
{
    for (int j = 0; j < 5; j++) {
        g_autofree char *name = g_strdup_printf("pf-lose%d.img", j);
        g_autofree char *image = tmp_path(name);
        g_autofree char *text = g_strdup_printf("powerfail after=4 mode=lose-one index=%d\n", j);
        g_autofree uint8_t *ref = NULL;
        g_autofree uint8_t *file = NULL;
        BlockBackend *blk = raw_with_rules(name, text, &ref);
        uint8_t buf[512];
        size_t n;

        for (int b = 0; b < 4; b++) {
            memset(buf, 0x40 + b, sizeof(buf));
            g_assert_cmpint(blk_pwrite(blk, b * 512, 512, buf, 0), ==, 0);
        }
        g_assert_cmpint(blk_pwrite(blk, 8192, 512, buf, 0), ==, -EIO);
        blk_unref(blk);
        file = uh_read_file(image, &n);
        for (int b = 0; b < 4; b++) {
            if (b == j) {
                g_assert_true(memcmp(file + b * 512, ref + b * 512, 512) == 0);
            } else {
                g_assert_cmpint(file[b * 512], ==, 0x40 + b);
            }
        }
    }
}

/* One log line says where the power failed. */
static void test_powerfail_log(void)
{
    g_autofree char *log = tmp_path("pf.log");
    g_autofree char *text = NULL;
    g_autoptr(GError) err = NULL;
    BlockBackend *blk = raw_with_rules("pf-log.img", "powerfail after=0 op=zero\n", NULL);
    g_auto(GStrv) lines = NULL;
    unsigned hits = 0;

    g_assert_true(log_open(log, &err));
    g_assert_cmpint(blk_pwrite_zeroes(blk, 12288, 4096, 0), ==, -EIO);
    g_assert_cmpint(blk_pwrite_zeroes(blk, 0, 4096, 0), ==, -EIO);
    g_assert_true(log_open(NULL, &err));
    blk_unref(blk);
    text = read_text(log);
    lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        hits += strstr(*l, "power failure") != NULL;
    }
    g_assert_cmpuint(hits, ==, 1);
    g_assert_nonnull(strstr(text, "power failure at zero offset 12288 length 4096"));
}

/* qcow2 on power-loss mode, the power failing at each write in turn: data whose flush
 * succeeded reads back afterwards, and qemu-img finds the image consistent. */
static void test_powerfail_qcow2(void)
{
    g_autofree char *image = tmp_path("pf.qcow2");
    uint8_t a[65536], b[65536], back[65536];
    bool failed_once = false;

    fill(a, sizeof(a), 11);
    fill(b, sizeof(b), 12);
    for (int after = 0; after < 40 && !failed_once; after++) {
        g_autofree char *text = g_strdup_printf("powerfail after=%d\n", after);
        g_autofree char *rules = write_rules("pf-qcow2.rules", text);
        g_autofree char *out = NULL;
        g_autoptr(GError) err = NULL;
        BlockBackend *blk;
        bool flushed;
        int status;

        g_assert_true(bdrv_create(image, "qcow2", IMG_SIZE, NULL, NULL, NULL, &err));
        blk = open_fault(image, "qcow2", BDRV_O_RDWR, rules, &err);
        g_assert_no_error(err);
        flushed = blk_pwrite(blk, 0, sizeof(a), a, 0) == 0 && blk_flush(blk) == 0;
        if (blk_pwrite(blk, 524288, sizeof(b), b, 0) < 0 ||
            blk_pwrite(blk, 65536, sizeof(b), b, 0) < 0) {
            failed_once = flushed;      /* the power failed after the flush: enough */
        }
        blk_unref(blk);

        blk = blk_new_open(image, "qcow2", NULL, 0, &err);
        g_assert_no_error(err);
        g_assert_cmpint(blk_pread(blk, 0, sizeof(back), back, 0), ==, 0);
        if (flushed && memcmp(back, a, sizeof(a)) != 0) {
            uh_fail("after=%d: data flushed before the power failure is lost", after);
        }
        blk_unref(blk);
        if (uh_have_command("qemu-img")) {
            status = uh_sh(&out, "qemu-img check '%s'", image);
            if (status != 0 && status != 3) {
                uh_fail("after=%d: qemu-img check exit %d: %s", after, status, out);
            }
        }
    }
    g_assert_true(failed_once);
}

/* --- power-loss mode from several threads ----------------------------------------------------- */

#define PF_THREADS 4
#define PF_ROUNDS 60

/* Each thread writes its own blocks and flushes now and then; the power fails somewhere in the
 * middle.  Every write a thread completed before it started a flush that succeeded must be in
 * the file afterwards, whatever the other threads did. */
typedef struct PfWorker {
    BlockBackend *blk;
    int id;
    int durable;        /* rounds [0, durable) were acknowledged before a successful flush */
    bool done;          /* atomic */
} PfWorker;

static void coroutine_fn pf_worker_entry(void *opaque)
{
    PfWorker *w = opaque;
    uint8_t buf[512];
    int written = 0;

    for (int round = 0; round < PF_ROUNDS; round++) {
        memset(buf, 1 + round, sizeof(buf));
        if (blk_co_pwrite(w->blk, (w->id * PF_ROUNDS + round) * 512, 512, buf, 0) < 0) {
            break;
        }
        written = round + 1;
        if (round % 5 == 4) {
            if (blk_co_flush(w->blk) < 0) {
                break;
            }
            w->durable = written;
        }
    }
    __atomic_store_n(&w->done, true, __ATOMIC_RELEASE);
}

static gpointer pf_thread_fn(gpointer opaque)
{
    PfWorker *w = opaque;
    g_autoptr(GError) err = NULL;
    AioContext *ctx = aio_context_new(&err);

    g_assert_no_error(err);
    coroutine_enter(coroutine_create(pf_worker_entry, w));
    while (!__atomic_load_n(&w->done, __ATOMIC_ACQUIRE)) {
        aio_poll(ctx, true);
    }
    laio_thread_cleanup();
    aio_context_free(ctx);
    return NULL;
}

static void test_powerfail_threads(void)
{
    g_autofree char *image = tmp_path("pf-threads.img");
    g_autofree uint8_t *file = NULL;
    BlockBackend *blk = raw_with_rules("pf-threads.img",
                                       "powerfail op=write after=150 mode=random seed=5\n",
                                       NULL);
    PfWorker w[PF_THREADS];
    GThread *threads[PF_THREADS];
    size_t n;

    for (int t = 0; t < PF_THREADS; t++) {
        w[t] = (PfWorker){ .blk = blk, .id = t };
        threads[t] = g_thread_new("pf", pf_thread_fn, &w[t]);
    }
    for (int t = 0; t < PF_THREADS; t++) {
        g_thread_join(threads[t]);
    }
    blk_unref(blk);
    file = uh_read_file(image, &n);
    for (int t = 0; t < PF_THREADS; t++) {
        for (int round = 0; round < w[t].durable; round++) {
            uint8_t v = file[(t * PF_ROUNDS + round) * 512];
            if (v != 1 + round) {
                uh_fail("thread %d round %d: flushed write lost (0x%02x)", t, round, v);
            }
        }
    }
}

/* --- parsing ------------------------------------------------------------------------------------ */

static void test_parse_ok(void)
{
    BlockBackend *blk = raw_with_rules("parse-ok.img",
                                       "# a comment\n"
                                       "\n"
                                       "   \t  \n"
                                       "error op=read,write offset=1M length=4k after=0 "
                                       "count=0 errno=ENOSPC   # trailing comment\r\n"
                                       "\terror\top=any\n"
                                       "delay op=flush ms=0\n"
                                       "delay ms=1 op=discard,zero,truncate,preallocate "
                                       "offset=0 length=1 after=18446744073709551614\n"
                                       "powerfail after=1000000 op=any mode=lose-one "
                                       "index=3 seed=7\n"
                                       "trace path=/dev/null\n",
                                       NULL);
    blk_unref(blk);
}

/* Each bad rules file fails the open with a message naming the file, the line and the word. */
static void test_parse_errors(void)
{
    static const struct { const char *text; const char *word; } cases[] = {
        { "bogus op=read\n", "'bogus'" },
        { "\nerror op=read frobnicate=1\n", "'frobnicate=1'" },
        { "error op=read after=x\n", "'after=x'" },
        { "error op=read after=-1\n", "'after=-1'" },
        { "error op=read count=1.5\n", "'count=1.5'" },
        { "error op=read offset=12q\n", "'offset=12q'" },
        { "error op=read length=0\n", "'length=0'" },
        { "error op=read length=\n", "'length='" },
        { "error op=read errno=EFOO\n", "'errno=EFOO'" },
        { "error op=read errno=5\n", "'errno=5'" },
        { "error op=read,wrte\n", "'wrte'" },
        { "error op=\n", "'op='" },
        { "error op=read,\n", "'op=read,'" },
        { "error op=read op=write\n", "'op'" },
        { "error offset=0\n", "op=" },
        { "delay op=read\n", "ms=" },
        { "delay op=read ms=99999999999\n", "'ms=99999999999'" },
        { "delay op=read ms=10 errno=EIO\n", "'errno=EIO'" },
        { "error op=read ms=10\n", "'ms=10'" },
        { "error op=read oops\n", "'oops'" },
        { "error op=read =1\n", "'=1'" },
        { "error op=read after=99999999999999999999999\n", "'after=99999999999999999999999'" },
        { "powerfail op=write\n", "after=" },
        { "powerfail after=1 mode=some\n", "'mode=some'" },
        { "powerfail after=1 mode=lose-one\n", "index=" },
        { "powerfail after=1 index=2\n", "index=" },
        { "powerfail after=1 mode=lose-one index=x\n", "'index=x'" },
        { "powerfail after=1 seed=x\n", "'seed=x'" },
        { "powerfail after=1 offset=0\n", "'offset=0'" },
        { "powerfail after=1 count=2\n", "'count=2'" },
        { "powerfail after=1 op=reed\n", "'reed'" },
        { "powerfail after=1\npowerfail after=2\n", "line 1" },
        { "trace\n", "path=" },
        { "trace path=\n", "'path='" },
        { "trace path=/nonexistent/dir/trace\n", "'path=/nonexistent/dir/trace'" },
        { "trace path=/dev/null\ntrace path=/dev/null\n", "'path=/dev/null'" },
        { "trace path=/dev/null op=read\n", "'op=read'" },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *image = tmp_path("parse.img");
        g_autofree char *rules = write_rules("bad.rules", cases[i].text);
        g_autofree char *where = NULL;
        g_autoptr(GError) err = NULL;
        BlockBackend *blk;
        /* the line of the error: the last line that holds a rule */
        unsigned line = cases[i].text[0] == '\n' ? 2 : 1;

        if (strchr(cases[i].text, '\n') != strrchr(cases[i].text, '\n') &&
            cases[i].text[0] != '\n') {
            line = 2;
        }

        uh_make_pattern_file(image, 4096, 1);
        blk = open_fault(image, "raw", BDRV_O_RDWR, rules, &err);
        if (blk) {
            uh_fail("rules '%s' were accepted", cases[i].text);
            blk_unref(blk);
            continue;
        }
        where = g_strdup_printf("%s:%u: ", rules, line);
        if (!strstr(err->message, where) || !strstr(err->message, cases[i].word)) {
            uh_fail("rules '%s': message '%s' does not name '%s' and %s", cases[i].text,
                    err->message, where, cases[i].word);
        }
        g_assert_null(strchr(err->message, '\n'));
    }
}

static void test_parse_missing_file(void)
{
    g_autofree char *image = tmp_path("missing.img");
    g_autofree char *rules = tmp_path("no-such.rules");
    g_autoptr(GError) err = NULL;

    uh_make_pattern_file(image, 4096, 1);
    g_assert_null(open_fault(image, "raw", 0, rules, &err));
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(err->message, rules));
    g_assert_nonnull(strstr(err->message, "fault-rules"));
}

int main(int argc, char **argv)
{
    int ret;

    uh_test_init(&argc, &argv);
    test_dir = uh_tmpdir_new();
    uh_test_add("/fault/graph/raw", test_graph_raw);
    uh_test_add("/fault/graph/qcow2", test_graph_qcow2);
    uh_test_add("/fault/graph/not-a-format", test_not_a_format);
    uh_test_add("/fault/passthrough/limits", test_passthrough_limits);
    uh_test_add("/fault/passthrough/status-length", test_passthrough_status_length);
    uh_test_add("/fault/error/read-range", test_error_read_range);
    uh_test_add("/fault/error/after", test_error_after_count);
    uh_test_add("/fault/error/count", test_error_count);
    uh_test_add("/fault/error/each-op", test_error_each_op);
    uh_test_add("/fault/error/any-and-lists", test_error_any_and_lists);
    uh_test_add("/fault/error/under-qcow2", test_error_under_qcow2);
    uh_test_add("/fault/delay/loop-runs", test_delay);
    uh_test_add("/fault/delay/then-error", test_delay_then_error);
    uh_test_add("/fault/threads/count", test_threads_count);
    uh_test_add("/fault/trace/ops", test_trace);
    uh_test_add("/fault/trace/qcow2", test_trace_qcow2);
    uh_test_add("/fault/powerfail/all", test_powerfail_all);
    uh_test_add("/fault/powerfail/at-flush", test_powerfail_at_flush);
    uh_test_add("/fault/powerfail/changes", test_powerfail_changes);
    uh_test_add("/fault/powerfail/length", test_powerfail_length);
    uh_test_add("/fault/powerfail/random", test_powerfail_random);
    uh_test_add("/fault/powerfail/lose-one", test_powerfail_lose_one);
    uh_test_add("/fault/powerfail/log", test_powerfail_log);
    uh_test_add("/fault/powerfail/qcow2", test_powerfail_qcow2);
    uh_test_add("/fault/powerfail/threads", test_powerfail_threads);
    uh_test_add("/fault/parse/ok", test_parse_ok);
    uh_test_add("/fault/parse/errors", test_parse_errors);
    uh_test_add("/fault/parse/missing-file", test_parse_missing_file);
    ret = uh_test_run();
    uh_tmpdir_remove(test_dir);
    g_free(test_dir);
    return ret;
}
