/* test-fault.c - unit tests for the fault-injection filter (block/fault.c): where bdrv_open puts
 * it, every rule and keyword, every parse error, delays that leave the event loop running, and
 * counters shared by requests from several threads. */
#include "config.h"
#include "unit-helpers.h"
#include "block/backend.h"
#include "block/io-engine.h"

static char *test_dir;

static char *tmp_path(const char *name)
{
    return g_build_filename(test_dir, name, NULL);
}

/* --- running backend requests ---------------------------------------------------------------- */

typedef enum { F_READ, F_WRITE, F_ZEROES, F_DISCARD, F_FLUSH, F_TRUNCATE, F_PREALLOC,
               F_STATUS } FKind;

typedef struct FOp {
    BlockBackend *blk;
    FKind kind;
    int64_t offset, bytes;
    void *buf;
    int flags;
    int64_t pnum;
    int ret;
    bool done;                  /* atomic */
} FOp;

static void coroutine_fn fop_entry(void *opaque)
{
    FOp *o = opaque;
    g_autoptr(GError) err = NULL;

    switch (o->kind) {
    case F_READ:
        o->ret = blk_co_pread(o->blk, o->offset, o->bytes, o->buf, 0);
        break;
    case F_WRITE:
        o->ret = blk_co_pwrite(o->blk, o->offset, o->bytes, o->buf, o->flags);
        break;
    case F_ZEROES:
        o->ret = blk_co_pwrite_zeroes(o->blk, o->offset, o->bytes, o->flags);
        break;
    case F_DISCARD:
        o->ret = blk_co_pdiscard(o->blk, o->offset, o->bytes);
        break;
    case F_FLUSH:
        o->ret = blk_co_flush(o->blk);
        break;
    case F_TRUNCATE:
        o->ret = blk_co_truncate(o->blk, o->offset, true, PREALLOC_MODE_OFF, &err);
        g_assert_true((o->ret < 0) == (err != NULL));
        break;
    case F_PREALLOC:
        o->ret = blk_co_preallocate(o->blk, o->offset, o->bytes);
        break;
    case F_STATUS:
        o->ret = blk_co_block_status(o->blk, o->offset, o->bytes, &o->pnum);
        break;
    }
    __atomic_store_n(&o->done, true, __ATOMIC_RELEASE);
}

static int run_fop(FOp *o)
{
    aio_run_coroutine(fop_entry, o);
    g_assert_true(o->done);
    return o->ret;
}

static int f_read(BlockBackend *blk, int64_t offset, int64_t bytes, void *buf)
{
    FOp o = { .blk = blk, .kind = F_READ, .offset = offset, .bytes = bytes, .buf = buf };
    return run_fop(&o);
}

static int f_write(BlockBackend *blk, int64_t offset, int64_t bytes, const void *buf)
{
    FOp o = { .blk = blk, .kind = F_WRITE, .offset = offset, .bytes = bytes,
              .buf = (void *)buf };
    return run_fop(&o);
}

static int f_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes, int flags)
{
    FOp o = { .blk = blk, .kind = F_ZEROES, .offset = offset, .bytes = bytes, .flags = flags };
    return run_fop(&o);
}

static int f_discard(BlockBackend *blk, int64_t offset, int64_t bytes)
{
    FOp o = { .blk = blk, .kind = F_DISCARD, .offset = offset, .bytes = bytes };
    return run_fop(&o);
}

static int f_flush(BlockBackend *blk)
{
    FOp o = { .blk = blk, .kind = F_FLUSH };
    return run_fop(&o);
}

static int f_truncate(BlockBackend *blk, int64_t size)
{
    FOp o = { .blk = blk, .kind = F_TRUNCATE, .offset = size };
    return run_fop(&o);
}

static int f_prealloc(BlockBackend *blk, int64_t offset, int64_t bytes)
{
    FOp o = { .blk = blk, .kind = F_PREALLOC, .offset = offset, .bytes = bytes };
    return run_fop(&o);
}

static int f_status(BlockBackend *blk, int64_t offset, int64_t bytes, int64_t *pnum)
{
    FOp o = { .blk = blk, .kind = F_STATUS, .offset = offset, .bytes = bytes };
    int ret = run_fop(&o);

    *pnum = o.pnum;
    return ret;
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
    g_assert_cmpint(f_read(blk, 8192, sizeof(buf), buf), ==, 0);
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
    g_assert_cmpint(f_write(blk, 65536, sizeof(buf), buf), ==, 0);
    g_assert_cmpint(f_read(blk, 65536, sizeof(back), back), ==, 0);
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
    g_assert_cmpint(f_read(blk, 1001, sizeof(buf), buf), ==, 0);
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
    ret = f_status(blk, 0, IMG_SIZE, &pnum);
    g_assert_cmpint(ret, >=, 0);
    g_assert_true(ret & BDRV_BLOCK_ZERO);
    g_assert_cmpint(pnum, ==, 65536);
    ret = f_status(blk, 65536, IMG_SIZE - 65536, &pnum);
    g_assert_true(ret & BDRV_BLOCK_DATA);
    g_assert_cmpint(f_truncate(blk, 2 * IMG_SIZE), ==, 0);
    g_assert_cmpint(blk_getlength(blk), ==, 2 * IMG_SIZE);
    g_assert_cmpint(uh_file_size(image), ==, 2 * IMG_SIZE);
    g_assert_cmpint(f_prealloc(blk, 0, IMG_SIZE), ==, 0);
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

    g_assert_cmpint(f_read(blk, 0, 4096, buf), ==, 0);
    g_assert_cmpint(f_read(blk, 65536, 4096, buf), ==, -EIO);
    g_assert_cmpint(f_read(blk, 65536 + 4095, 1, buf), ==, -EIO);
    g_assert_cmpint(f_read(blk, 65536 - 4096, 4097, buf), ==, -EIO);
    g_assert_cmpint(f_read(blk, 65536 + 4096, 4096, buf), ==, 0);
    g_assert_cmpint(f_read(blk, 65536 - 4096, 4096, buf), ==, 0);
    g_assert_cmpint(f_read(blk, 65536, 4096, buf), ==, -EIO);      /* count=0: always */
    g_assert_cmpint(f_write(blk, 65536, 4096, ref), ==, 0);
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
        g_assert_cmpint(f_write(blk, i * 512, 512, buf), ==, i == 2 ? -ENOSPC : 0);
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
        g_assert_cmpint(f_read(blk, 0, 512, buf), ==, i >= 1 && i <= 3 ? -EPERM : 0);
    }
    for (int i = 0; i < 10; i++) {
        g_assert_cmpint(f_write(blk, 0, 512, buf), ==, i >= 4 ? -EIO : 0);
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
        g_assert_cmpint(f_read(blk, 524288, 4096, buf), ==, !strcmp(cases[i].op, "read") ?
                        expect : 0);
        if (ranged) {   /* outside the range: passes (the rule fires only once anyway) */
            g_assert_cmpint(f_read(blk, 0, 4096, buf), ==, 0);
            g_assert_cmpint(f_write(blk, 0, 4096, buf), ==, 0);
            g_assert_cmpint(f_zeroes(blk, 0, 4096, 0), ==, 0);
            g_assert_cmpint(f_discard(blk, 0, 4096), ==, 0);
            g_assert_cmpint(f_prealloc(blk, 0, 4096), ==, 0);
        }
        if (!strcmp(cases[i].op, "write")) {
            g_assert_cmpint(f_write(blk, 524288, 4096, buf), ==, expect);
        } else if (!strcmp(cases[i].op, "zero")) {
            g_assert_cmpint(f_zeroes(blk, 524288, 4096, 0), ==, expect);
        } else if (!strcmp(cases[i].op, "discard")) {
            g_assert_cmpint(f_discard(blk, 524288, 4096), ==, expect);
        } else if (!strcmp(cases[i].op, "preallocate")) {
            g_assert_cmpint(f_prealloc(blk, 524288, 4096), ==, expect);
        } else if (!strcmp(cases[i].op, "flush")) {
            g_assert_cmpint(f_flush(blk), ==, expect);
            g_assert_cmpint(f_flush(blk), ==, 0);
        } else if (!strcmp(cases[i].op, "truncate")) {
            g_assert_cmpint(f_truncate(blk, 4096), ==, expect);
            g_assert_cmpint(blk_getlength(blk), ==, IMG_SIZE);
            g_assert_cmpint(f_truncate(blk, 4096), ==, 0);
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

    g_assert_cmpint(f_write(blk, 0, 512, buf), ==, 0);   /* any #1 */
    g_assert_cmpint(f_read(blk, 0, 512, buf), ==, 0);    /* any #2, read/flush #1 */
    g_assert_cmpint(f_flush(blk), ==, 0);                /* any #3, #2 */
    g_assert_cmpint(f_read(blk, 0, 512, buf), ==, -EIO); /* any #4 fires first; #3 */
    g_assert_cmpint(f_read(blk, 0, 512, buf), ==, -ENOSPC);    /* #4 */
    g_assert_cmpint(f_write(blk, 0, 512, buf), ==, 0);
    g_assert_cmpint(f_flush(blk), ==, -ENOSPC);
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
    g_assert_cmpint(f_write(blk, 0, sizeof(buf), buf), ==, -EIO);
    g_assert_cmpint(f_read(blk, 0, sizeof(buf), buf), ==, 0);
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

    g_assert_cmpint(f_flush(blk), ==, -EIO);
    g_assert_cmpint(get_clock_ns() - start, >=, 100 * 1000000ll);
    g_assert_cmpint(f_flush(blk), ==, 0);
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
                                       "offset=0 length=1 after=18446744073709551614\n",
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
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *image = tmp_path("parse.img");
        g_autofree char *rules = write_rules("bad.rules", cases[i].text);
        g_autofree char *where = NULL;
        g_autoptr(GError) err = NULL;
        BlockBackend *blk;
        unsigned line = cases[i].text[0] == '\n' ? 2 : 1;

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
    uh_test_add("/fault/parse/ok", test_parse_ok);
    uh_test_add("/fault/parse/errors", test_parse_errors);
    uh_test_add("/fault/parse/missing-file", test_parse_missing_file);
    ret = uh_test_run();
    uh_tmpdir_remove(test_dir);
    g_free(test_dir);
    return ret;
}
