/* test-qcow2-image.c - the qcow2 driver on real images through the block layer: creation with
 * every option, allocation on fresh images, reading qemu-img-made images of every layout
 * (compared with `qemu-img convert -O raw`), random writes/zeroes/discards compared with a
 * raw reference and checked with `qemu-img check`, feature bits, damage, snapshots, resize. */
#include <sys/stat.h>
#include "block/qcow2.h"
#include "test-qcow2-util.h"
#include "unit-helpers.h"

static char *tmpdir;

#define QEMU_OR_SKIP() do { \
        if (!qt_have_qemu_img()) { g_test_skip("qemu-img/qemu-io not installed"); return; } \
    } while (0)

static char *path(const char *name)
{
    return g_build_filename(tmpdir, name, NULL);
}

static BlockDriverState *open_img(const char *file, const char *opts_str, int flags,
                                  GError **errp)
{
    BlockOptions *opts = block_options_new();
    BlockDriverState *bs;

    if (opts_str) {
        g_assert_true(block_options_parse(opts, opts_str, NULL));
    }
    bs = bdrv_open(file, "qcow2", opts, flags, errp);
    g_hash_table_unref(opts);
    return bs;
}

static void create_img(const char *file, uint64_t size, const char *opts_str,
                       const char *backing, const char *backing_fmt)
{
    g_autoptr(GError) err = NULL;
    BlockOptions *opts = block_options_new();

    if (opts_str) {
        g_assert_true(block_options_parse(opts, opts_str, NULL));
    }
    if (!bdrv_create(file, "qcow2", size, backing, backing_fmt, opts, &err)) {
        g_error("create %s (%s): %s", file, opts_str ? opts_str : "", err->message);
    }
    g_hash_table_unref(opts);
}

/* qemu-img check must report neither errors nor leaks. */
static void assert_check_clean(const char *file)
{
    g_autofree char *out = NULL;
    int rc = qt_sh(&out, "qemu-img check '%s' 2>&1", file);
    if (rc != 0 || strstr(out, "leaked") || strstr(out, "ERROR")) {
        g_error("qemu-img check %s (exit %d):\n%s", file, rc, out);
    }
}

static void assert_same_as_qemu(const char *file, const char *opts, const char *qemu_opts)
{
    g_autofree char *out = path("dump.raw"), *ref = path("ref.raw");
    g_autofree char *msg = NULL;

    g_assert_cmpint(qt_dump(file, opts, out), ==, 0);
    g_assert_cmpint(qt_sh(&msg, "qemu-img convert -O raw %s '%s' '%s'", qemu_opts ? qemu_opts : "",
                          file, ref), ==, 0);
    if (qemu_opts && strstr(qemu_opts, "-l")) {
        /* qemu-img keeps the active size when it reads a snapshot; blkfuse presents the
         * snapshot's own size */
        g_assert_cmpint(qt_sh(NULL, "truncate -s $(stat -c %%s '%s') '%s'", out, ref), ==, 0);
    }
    if (qt_sh(&msg, "cmp '%s' '%s'", out, ref) != 0) {
        g_error("%s: blkfuse and qemu-img read different data: %s", file, msg);
    }
}

/* --- creation --- */

static void test_create_options(void)
{
    static const char *const optsets[] = {
        "", "compat=0.10", "cluster_size=512", "cluster_size=2M", "lazy_refcounts=on",
        "extended_l2=on", "compression_type=zstd", "refcount_bits=1",
        "refcount_bits=64,cluster_size=512", "preallocation=metadata", "preallocation=falloc",
        "preallocation=full",
    };
    g_autofree char *img = path("create.qcow2");

    for (size_t i = 0; i < G_N_ELEMENTS(optsets); i++) {
        g_autoptr(GError) err = NULL;
        BlockDriverInfo info = { 0 };
        BlockDriverState *bs;

        create_img(img, 32 << 20, optsets[i][0] ? optsets[i] : NULL, NULL, NULL);
        bs = open_img(img, NULL, 0, &err);
        g_assert_nonnull(bs);
        g_assert_cmpint(bdrv_getlength(bs), ==, 32 << 20);
        g_assert_cmpint(bs->drv->bdrv_get_info(bs, &info), ==, 0);
        g_assert_cmpint(info.version, ==, strstr(optsets[i], "0.10") ? 2 : 3);
        g_assert_cmpint(info.cluster_size, ==, strstr(optsets[i], "512") ? 512 :
                        strstr(optsets[i], "2M") ? 2 << 20 : 65536);
        g_assert_cmpint(info.refcount_bits, ==, strstr(optsets[i], "bits=1") ? 1 :
                        strstr(optsets[i], "bits=64") ? 64 : 16);
        g_assert_cmpint(info.extended_l2, ==, strstr(optsets[i], "extended") != NULL);
        g_assert_cmpint(info.lazy_refcounts, ==, strstr(optsets[i], "lazy") != NULL);
        g_assert_cmpstr(info.compression_type, ==, strstr(optsets[i], "zstd") ? "zstd" : "zlib");
        g_free(info.extra);
        bdrv_unref(bs);
        if (qt_have_qemu_img()) {
            assert_check_clean(img);
            g_assert_cmpint(qt_sh(NULL, "cd '%s' && qemu-img create -q -f raw z.raw 32M && "
                                  "qemu-img compare -q create.qcow2 z.raw", tmpdir), ==, 0);
        }
    }
}

static void test_create_bad_options(void)
{
    static const char *const bad[] = {
        "cluster_size=1000", "cluster_size=4M", "refcount_bits=3", "compat=0.10,lazy_refcounts=on",
        "extended_l2=on,cluster_size=4k", "compression_type=lzo", "preallocation=maybe",
        "compat=2.0",
    };
    g_autofree char *img = path("bad.qcow2");

    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GError) err = NULL;
        BlockOptions *opts = block_options_new();
        g_assert_true(block_options_parse(opts, bad[i], NULL));
        g_assert_false(bdrv_create(img, "qcow2", 1 << 20, NULL, NULL, opts, &err));
        g_assert_nonnull(err);
        g_hash_table_unref(opts);
    }
}

/* The one preallocation parser: qcow2 create options (metadata allowed) and raw creation. */
static void test_prealloc_parse(void)
{
    static const struct { const char *s; PreallocMode mode; } ok[] = {
        { "off", PREALLOC_MODE_OFF }, { "metadata", PREALLOC_MODE_METADATA },
        { "falloc", PREALLOC_MODE_FALLOC }, { "full", PREALLOC_MODE_FULL },
    };
    g_autoptr(GError) err = NULL;
    PreallocMode mode;

    for (size_t i = 0; i < G_N_ELEMENTS(ok); i++) {
        mode = PREALLOC_MODE_OFF;
        g_assert_true(prealloc_mode_parse(ok[i].s, true, &mode, NULL));
        g_assert_cmpint(mode, ==, ok[i].mode);
        if (ok[i].mode != PREALLOC_MODE_METADATA) {
            mode = PREALLOC_MODE_OFF;
            g_assert_true(prealloc_mode_parse(ok[i].s, false, &mode, NULL));
            g_assert_cmpint(mode, ==, ok[i].mode);
        }
    }
    mode = PREALLOC_MODE_FULL;
    g_assert_false(prealloc_mode_parse("metadata", false, &mode, &err));
    g_assert_cmpstr(err->message, ==, "invalid preallocation 'metadata' (off, falloc or full)");
    g_assert_cmpint(mode, ==, PREALLOC_MODE_FULL);
    g_clear_error(&err);
    g_assert_false(prealloc_mode_parse("maybe", true, &mode, &err));
    g_assert_cmpstr(err->message, ==,
                    "invalid preallocation 'maybe' (off, metadata, falloc or full)");
}

/* --- allocation on a fresh image --- */

static void test_alloc_fresh(void)
{
    static const char *const optsets[] = {
        "cluster_size=64k", "cluster_size=512,refcount_bits=64", "compat=0.10,cluster_size=4k",
        "extended_l2=on,cluster_size=32k", "refcount_bits=1,cluster_size=1k",
        "lazy_refcounts=on",
    };
    g_autofree char *img = path("fresh.qcow2");

    for (size_t i = 0; i < G_N_ELEMENTS(optsets); i++) {
        g_autoptr(GError) err = NULL;
        BlockDriverState *bs;
        uint8_t *buf = blk_blockalign(3 << 20), *rd = blk_blockalign(3 << 20);
        int64_t offs[] = { 0, 12345, 5 << 20, (16 << 20) - 100 };

        create_img(img, 16 << 20, optsets[i], NULL, NULL);
        bs = open_img(img, NULL, BDRV_O_RDWR, &err);
        g_assert_nonnull(bs);
        for (size_t j = 0; j < G_N_ELEMENTS(offs); j++) {
            int64_t len = MIN(3 << 20, (16 << 20) - offs[j]);
            memset(buf, 0x10 + j, len);
            g_assert_cmpint(bdrv_pwrite(bs, offs[j], len, buf), ==, 0);
        }
        g_assert_cmpint(bdrv_flush(bs), ==, 0);
        bdrv_unref(bs);

        bs = open_img(img, NULL, 0, &err);
        g_assert_nonnull(bs);
        for (size_t j = 0; j < G_N_ELEMENTS(offs); j++) {
            int64_t len = MIN(3 << 20, (16 << 20) - offs[j]);
            int64_t until = j + 1 < G_N_ELEMENTS(offs) ? MIN(len, offs[j + 1] - offs[j]) : len;
            g_assert_cmpint(bdrv_pread(bs, offs[j], until, rd), ==, 0);
            for (int64_t k = 0; k < until; k++) {
                if (rd[k] != 0x10 + j) {
                    g_error("%s: byte %" G_GINT64_FORMAT " is %#x", optsets[i], offs[j] + k,
                            rd[k]);
                }
            }
        }
        g_assert_cmpint(bdrv_pread(bs, 9 << 20, 4096, rd), ==, 0);
        for (int k = 0; k < 4096; k++) {
            g_assert_cmpint(rd[k], ==, 0);
        }
        bdrv_unref(bs);
        blk_vfree(buf);
        blk_vfree(rd);
        if (qt_have_qemu_img()) {
            assert_check_clean(img);
        }
    }
}

/* --- reading qemu-img images --- */

static void make_source(void)
{
    g_autofree char *src = path("src.raw");
    g_assert_cmpint(qt_sh(NULL, "qemu-img create -q -f raw '%s' 12M && qemu-io -f raw "
                          "-c 'write -P 0x5a 0 3M' -c 'write -P 0xa5 5M 1M' "
                          "-c 'write -P 0x33 8191k 3k' -c 'write -P 1 11M 1M' '%s' >/dev/null",
                          src, src), ==, 0);
}

static void test_read_layouts(void)
{
    static const char *const layouts[] = {
        "-o compat=0.10,cluster_size=512", "-o compat=0.10,cluster_size=2M",
        "-o cluster_size=512", "-o cluster_size=2M", "-o refcount_bits=1",
        "-o refcount_bits=64", "-o extended_l2=on", "-o extended_l2=on,cluster_size=2M",
        "-c -o compression_type=zlib", "-c -o compression_type=zstd",
        "-c -o compression_type=zstd,cluster_size=2M", "-c -o compression_type=zlib,cluster_size=4k",
    };
    g_autofree char *src = path("src.raw"), *img = path("layout.qcow2");

    QEMU_OR_SKIP();
    make_source();
    for (size_t i = 0; i < G_N_ELEMENTS(layouts); i++) {
        g_assert_cmpint(qt_sh(NULL, "qemu-img convert -f raw -O qcow2 %s '%s' '%s'", layouts[i],
                              src, img), ==, 0);
        if (!strstr(layouts[i], "-c")) {
            g_assert_cmpint(qt_sh(NULL, "qemu-io -c 'write -P 0x77 1000 5000' "
                                  "-c 'write -z 6M 1M' -c 'discard 5M 64k' "
                                  "-c 'write -z 2M 100k' '%s' >/dev/null", img), ==, 0);
        }
        assert_same_as_qemu(img, NULL, NULL);
    }
}

static void test_read_prealloc(void)
{
    static const char *const modes[] = { "metadata", "falloc", "full" };
    g_autofree char *img = path("prealloc.qcow2");

    QEMU_OR_SKIP();
    for (size_t i = 0; i < G_N_ELEMENTS(modes); i++) {
        g_assert_cmpint(qt_sh(NULL, "qemu-img create -q -f qcow2 -o preallocation=%s '%s' 8M "
                              "&& qemu-io -c 'write -P 9 1M 1M' '%s' >/dev/null", modes[i], img,
                              img), ==, 0);
        assert_same_as_qemu(img, NULL, NULL);
    }
}

static void test_read_backing(void)
{
    g_autofree char *mid = path("mid.qcow2"), *top = path("top.qcow2");
    g_autofree char *ov = path("ov.qcow2");

    QEMU_OR_SKIP();
    make_source();
    /* qcow2 -> raw, qcow2 -> qcow2 -> qcow2, zero writes in the top layers */
    g_assert_cmpint(qt_sh(NULL, "cd '%s' && qemu-img create -q -f qcow2 -b src.raw -F raw "
                          "b0.qcow2 && qemu-io -c 'write -P 0x66 1M 1M' -c 'write -z 0 64k' "
                          "b0.qcow2 >/dev/null && qemu-img create -q -f qcow2 -b b0.qcow2 "
                          "-F qcow2 mid.qcow2 && qemu-io -c 'write -z 5M 512k' "
                          "-c 'write -P 0x67 1500k 1M' mid.qcow2 >/dev/null && qemu-img create "
                          "-q -f qcow2 -o extended_l2=on -b mid.qcow2 -F qcow2 top.qcow2 && "
                          "qemu-io -c 'write -z 5200k 13k' -c 'write -P 0x68 11M 3k' "
                          "-c 'write -z 2M 32k' top.qcow2 >/dev/null", tmpdir), ==, 0);
    assert_same_as_qemu(top, NULL, NULL);
    assert_same_as_qemu(mid, NULL, NULL);
    /* a backing file shorter than the overlay */
    g_assert_cmpint(qt_sh(NULL, "cd '%s' && qemu-img create -q -f raw short.raw 3M && "
                          "qemu-io -f raw -c 'write -P 0x12 0 3M' short.raw >/dev/null && "
                          "qemu-img create -q -f qcow2 -b short.raw -F raw ov.qcow2 10M && "
                          "qemu-io -c 'write -P 0x13 2M 2M' ov.qcow2 >/dev/null", tmpdir), ==, 0);
    assert_same_as_qemu(ov, NULL, NULL);
}

static void test_read_snapshot(void)
{
    g_autofree char *src = path("src.raw"), *img = path("snap.qcow2");
    g_autoptr(GError) err = NULL;
    BlockDriverState *bs;
    GPtrArray *list = NULL;

    QEMU_OR_SKIP();
    make_source();
    g_assert_cmpint(qt_sh(NULL, "qemu-img convert -f raw -O qcow2 '%s' '%s' && qemu-img "
                          "snapshot -c S1 '%s' && qemu-io -c 'write -P 0x99 0 2M' '%s' "
                          ">/dev/null && qemu-img snapshot -c S2 '%s' && qemu-img resize -q '%s' "
                          "16M && qemu-io -c 'write -P 0x98 13M 1M' '%s' >/dev/null",
                          src, img, img, img, img, img, img), ==, 0);
    assert_same_as_qemu(img, NULL, NULL);
    assert_same_as_qemu(img, "snapshot-name=S1", "-l snapshot.name=S1");
    assert_same_as_qemu(img, "snapshot-name=2", "-l snapshot.id=2");

    bs = open_img(img, NULL, 0, &err);
    g_assert_nonnull(bs);
    g_assert_cmpint(bs->drv->bdrv_snapshot_list(bs, &list), ==, 0);
    g_assert_cmpint(list->len, ==, 2);
    g_assert_cmpstr(((BlockSnapshotInfo *)list->pdata[0])->name, ==, "S1");
    g_assert_cmpint(((BlockSnapshotInfo *)list->pdata[0])->disk_size, ==, 12 << 20);
    g_ptr_array_unref(list);
    bdrv_unref(bs);

    bs = open_img(img, "snapshot-name=S1", BDRV_O_RDWR, &err);
    g_assert_null(bs);
    g_assert_nonnull(strstr(err->message, "read-only"));
    g_clear_error(&err);
    bs = open_img(img, "snapshot-name=nope", 0, &err);
    g_assert_null(bs);
}

/* --- writes --- */

typedef struct WriteCase {
    const char *name;
    const char *setup;       /* shell, in tmpdir, makes w.qcow2 */
} WriteCase;

static void run_write_case(const WriteCase *c, int nops)
{
    g_autofree char *img = path("w.qcow2"), *ref = path("wref.raw");
    g_autofree char *msg = NULL;
    g_autoptr(GError) err = NULL;
    BlockDriverState *bs;

    if (qt_sh(&msg, "cd '%s' && %s", tmpdir, c->setup) != 0) {
        g_error("%s: setup failed: %s", c->name, msg);
    }
    g_assert_cmpint(qt_sh(NULL, "qemu-img convert -O raw '%s' '%s'", img, ref), ==, 0);
    bs = open_img(img, NULL, BDRV_O_RDWR, &err);
    if (!bs) {
        g_error("%s: %s", c->name, err->message);
    }
    g_assert_cmpint(qt_random_io(bs, ref, 42, nops, 1 << 20), ==, 0);
    bdrv_unref(bs);
    assert_check_clean(img);
    if (qt_sh(&msg, "qemu-img compare '%s' '%s'", img, ref) != 0) {
        g_error("%s: image differs from the reference: %s", c->name, msg);
    }
}

static void test_write_random(void)
{
    static const WriteCase cases[] = {
        { "fresh v2", "qemu-img create -q -f qcow2 -o compat=0.10 w.qcow2 16M" },
        { "fresh 512", "qemu-img create -q -f qcow2 -o cluster_size=512 w.qcow2 16M" },
        { "fresh 2M", "qemu-img create -q -f qcow2 -o cluster_size=2M w.qcow2 16M" },
        { "refcount 64/512", "qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=64 "
                             "w.qcow2 16M" },
        { "extl2", "qemu-img create -q -f qcow2 -o extended_l2=on w.qcow2 16M" },
        { "compressed zlib", "qemu-img convert -c -f raw -O qcow2 src.raw w.qcow2" },
        { "compressed zstd", "qemu-img convert -c -f raw -O qcow2 -o compression_type=zstd "
                             "src.raw w.qcow2" },
        { "prealloc", "qemu-img create -q -f qcow2 -o preallocation=metadata w.qcow2 16M" },
        { "backing", "qemu-img convert -f raw -O qcow2 src.raw wb.qcow2 && qemu-img create -q "
                     "-f qcow2 -b wb.qcow2 -F qcow2 w.qcow2" },
        { "backing v2", "qemu-img create -q -f qcow2 -o compat=0.10 -b src.raw -F raw w.qcow2" },
        { "backing extl2", "qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=16k "
                           "-b src.raw -F raw w.qcow2" },
        { "snapshot", "qemu-img convert -f raw -O qcow2 src.raw w.qcow2 && qemu-img snapshot "
                      "-c S w.qcow2" },
        { "lazy dirty", "qemu-img create -q -f qcow2 -o lazy_refcounts=on w.qcow2 16M && "
                        "(qemu-io -c 'write -P 0x31 0 3M' -c abort w.qcow2 >/dev/null 2>&1; "
                        "true)" },
    };

    QEMU_OR_SKIP();
    make_source();
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *before = NULL, *after = NULL;
        bool snap = strstr(cases[i].name, "snapshot") != NULL;
        bool backing = strstr(cases[i].name, "backing") != NULL;

        if (g_test_verbose()) {
            g_printerr("# %s\n", cases[i].name);
        }
        run_write_case(&cases[i], g_test_quick() ? 120 : 300);
        if (snap) {
            g_assert_cmpint(qt_sh(NULL, "cd '%s' && qemu-img convert -O raw -l snapshot.name=S "
                                  "w.qcow2 snap.raw && cmp snap.raw src.raw", tmpdir), ==, 0);
        }
        if (backing) {
            g_assert_cmpint(qt_sh(&after, "cd '%s' && qemu-img convert -O raw "
                                  "$(qemu-img info w.qcow2 | sed -n 's/^backing file: //p' | "
                                  "cut -d' ' -f1) bk.raw && cmp bk.raw src.raw", tmpdir), ==, 0);
        }
        (void)before;
    }
}

static void test_truncate(void)
{
    g_autofree char *img = path("t.qcow2"), *ref = path("tref.raw");
    g_autoptr(GError) err = NULL;
    BlockDriverState *bs;
    uint8_t *buf = blk_blockalign(1 << 20);

    QEMU_OR_SKIP();
    create_img(img, 4 << 20, "cluster_size=4k", NULL, NULL);
    bs = open_img(img, NULL, BDRV_O_RDWR, &err);
    g_assert_nonnull(bs);
    memset(buf, 0xab, 1 << 20);
    g_assert_cmpint(bdrv_pwrite(bs, 3 << 20, 1 << 20, buf), ==, 0);
    /* QEMU reads sizes in whole sectors: an exact size that is not one is refused. */
    g_assert_cmpint(bdrv_truncate(bs, (3 << 20) + 1000, true, PREALLOC_MODE_OFF, NULL),
                    ==, -EINVAL);
    g_assert_cmpint(bdrv_getlength(bs), ==, 4 << 20);
    /* shrink mid-cluster */
    g_assert_cmpint(bdrv_truncate(bs, (3 << 20) + 1024, true, PREALLOC_MODE_OFF, NULL), ==, 0);
    /* grow: L1 grows */
    g_assert_cmpint(bdrv_truncate(bs, 3ULL << 30, true, PREALLOC_MODE_OFF, NULL), ==, 0);
    g_assert_cmpint(bdrv_getlength(bs), ==, 3LL << 30);
    g_assert_cmpint(bdrv_pwrite(bs, (3LL << 30) - (1 << 20), 1 << 20, buf), ==, 0);
    bdrv_unref(bs);
    assert_check_clean(img);
    g_assert_cmpint(qt_sh(NULL, "qemu-img create -q -f raw '%s' 3G && qemu-io -f raw "
                          "-c 'write -P 0xab 3M 1024' -c 'write -P 0xab 3071M 1M' '%s' "
                          ">/dev/null && qemu-img compare -q '%s' '%s'", ref, ref, img, ref),
                     ==, 0);
    blk_vfree(buf);
}

/* --- header feature bits and damage --- */

static void poke(const char *file, off_t off, const void *data, size_t len)
{
    int fd = open(file, O_WRONLY);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(pwrite(fd, data, len, off), ==, (ssize_t)len);
    close(fd);
}

static uint64_t peek64(const char *file, off_t off)
{
    uint8_t b[8];
    int fd = open(file, O_RDONLY);
    g_assert_cmpint(pread(fd, b, 8, off), ==, 8);
    close(fd);
    return ldbe64(b);
}

static void test_corrupt_bit(void)
{
    g_autofree char *img = path("corrupt.qcow2");
    g_autoptr(GError) err = NULL;
    BlockDriverState *bs;
    uint8_t v[8];

    create_img(img, 1 << 20, NULL, NULL, NULL);
    stbe64(v, QCOW2_INCOMPAT_CORRUPT);
    poke(img, 72, v, 8);
    bs = open_img(img, NULL, BDRV_O_RDWR, &err);
    g_assert_null(bs);
    g_assert_nonnull(strstr(err->message, "marked corrupt"));
    g_assert_nonnull(strstr(err->message, "qemu-img check -r all"));
    g_clear_error(&err);
    bs = open_img(img, NULL, 0, &err);
    g_assert_nonnull(bs);
    bdrv_unref(bs);
}

static void test_unknown_features(void)
{
    g_autofree char *img = path("feat.qcow2");
    g_autoptr(GError) err = NULL;
    BlockDriverState *bs;
    uint8_t v[8];

    /* unknown incompatible bit named by the feature table: rename "dirty bit" to bit 9 */
    create_img(img, 1 << 20, NULL, NULL, NULL);
    stbe64(v, 1ULL << 9);
    poke(img, 72, v, 8);
    {
        g_autofree uint8_t *hdr = g_malloc0(4096);
        int fd = open(img, O_RDWR);
        g_assert_cmpint(pread(fd, hdr, 4096, 0), ==, 4096);
        for (int pos = 112; pos + 8 < 4096;) {
            uint32_t type = ldbe32(hdr + pos), len = ldbe32(hdr + pos + 4);
            if (type == 0) {
                break;
            }
            if (type == QCOW2_EXT_FEATURE_TABLE) {
                hdr[pos + 8 + 1] = 9;           /* first entry: incompatible, now bit 9 */
                memcpy(hdr + pos + 8 + 2, "frobnication", 13);
            }
            pos += 8 + ROUND_UP(len, 8);
        }
        g_assert_cmpint(pwrite(fd, hdr, 4096, 0), ==, 4096);
        close(fd);
    }
    bs = open_img(img, NULL, 0, &err);
    g_assert_null(bs);
    g_assert_nonnull(strstr(err->message, "unsupported qcow2 feature: frobnication"));
    g_clear_error(&err);

    /* unknown autoclear bits are cleared on a read-write open */
    create_img(img, 1 << 20, NULL, NULL, NULL);
    stbe64(v, 1ULL << 7);
    poke(img, 88, v, 8);
    bs = open_img(img, NULL, 0, &err);
    g_assert_nonnull(bs);
    bdrv_unref(bs);
    g_assert_cmphex(peek64(img, 88), ==, 1ULL << 7);
    bs = open_img(img, NULL, BDRV_O_RDWR, &err);
    g_assert_nonnull(bs);
    bdrv_unref(bs);
    g_assert_cmphex(peek64(img, 88), ==, 0);

    /* external data files are refused with a clear message */
    stbe64(v, QCOW2_INCOMPAT_DATA_FILE);
    poke(img, 72, v, 8);
    bs = open_img(img, NULL, 0, &err);
    g_assert_null(bs);
    g_assert_nonnull(strstr(err->message, "external data file"));
}

static void test_dirty_rebuild(void)
{
    g_autofree char *img = path("dirty.qcow2");
    g_autoptr(GError) err = NULL;
    BlockDriverState *bs;

    QEMU_OR_SKIP();
    g_assert_cmpint(qt_sh(NULL, "qemu-img create -q -f qcow2 -o lazy_refcounts=on,cluster_size=4k "
                          "'%s' 16M && qemu-img snapshot -c S '%s' && (qemu-io -c "
                          "'write -P 0x31 0 3M' -c 'write -P 0x32 8M 100k' -c abort '%s' "
                          ">/dev/null 2>&1; true)", img, img, img), ==, 0);
    g_assert_cmphex(peek64(img, 72) & QCOW2_INCOMPAT_DIRTY, ==, QCOW2_INCOMPAT_DIRTY);
    assert_same_as_qemu(img, NULL, NULL);           /* read-only open leaves it alone */
    g_assert_cmphex(peek64(img, 72) & QCOW2_INCOMPAT_DIRTY, ==, QCOW2_INCOMPAT_DIRTY);
    bs = open_img(img, NULL, BDRV_O_RDWR, &err);
    g_assert_nonnull(bs);
    bdrv_unref(bs);
    g_assert_cmphex(peek64(img, 72) & QCOW2_INCOMPAT_DIRTY, ==, 0);
    assert_check_clean(img);
    assert_same_as_qemu(img, NULL, NULL);
}

static void test_damaged(void)
{
    static const struct { off_t off; int len; uint64_t val; const char *what; } damage[] = {
        { 4, 4, 7, "version" },
        { 20, 4, 30, "cluster bits" },
        { 20, 4, 8, "cluster bits" },
        { 36, 4, 0xffffffff, "L1 size" },
        { 36, 4, 0, "L1 size" },
        { 40, 8, 0x10001, "L1 offset" },
        { 48, 8, 0x123, "refcount table offset" },
        { 56, 4, 0x7fffffff, "refcount table clusters" },
        { 60, 4, 100000000, "snapshots" },
        { 96, 4, 9, "refcount order" },
        { 100, 4, 0x7ffffff8, "header length" },
        { 8, 8, 1 << 30, "backing name offset" },
    };
    g_autofree char *img = path("damaged.qcow2");
    uint8_t v[8];

    for (size_t i = 0; i < G_N_ELEMENTS(damage); i++) {
        g_autoptr(GError) err = NULL;
        BlockDriverState *bs;

        create_img(img, 64 << 20, NULL, NULL, NULL);
        if (damage[i].len == 4) {
            stbe32(v, damage[i].val);
        } else {
            stbe64(v, damage[i].val);
        }
        poke(img, damage[i].off, v, damage[i].len);
        bs = open_img(img, NULL, 0, &err);
        if (bs) {
            g_error("damaged %s: open succeeded", damage[i].what);
        }
        g_assert_nonnull(err);
    }

    /* a damaged L2 pointer: -EIO for that range, the rest still reads */
    {
        g_autoptr(GError) err = NULL;
        BlockDriverState *bs;
        uint8_t *buf = blk_blockalign(65536);
        uint64_t l1off;

        create_img(img, 64 << 20, NULL, NULL, NULL);
        bs = open_img(img, NULL, BDRV_O_RDWR, &err);
        memset(buf, 1, 65536);
        g_assert_cmpint(bdrv_pwrite(bs, 0, 65536, buf), ==, 0);
        bdrv_unref(bs);
        l1off = peek64(img, 40);
        stbe64(v, QCOW_OFLAG_COPIED | 0x12345);    /* misaligned L2 table */
        poke(img, l1off, v, 8);
        bs = open_img(img, NULL, 0, &err);
        g_assert_nonnull(bs);
        g_assert_cmpint(bdrv_pread(bs, 0, 4096, buf), ==, -EIO);
        bdrv_unref(bs);
        blk_vfree(buf);
    }

    /* a file too short to be an image */
    {
        g_autoptr(GError) err = NULL;
        g_assert_cmpint(truncate(img, 40), ==, 0);
        g_assert_null(open_img(img, NULL, 0, &err));
        g_assert_cmpint(truncate(img, 0), ==, 0);
    }
}


/* --- the L2 cache --- */

/* Read one byte from every L2 table's range of an 8 GiB image, twice: the first pass loads
 * each table once, the second must not miss at all with the default cache size. */
static void check_l2_cache_8g(const char *cluster_size, const char *open_opts,
                              bool expect_hits)
{
    g_autofree char *img = path("big.qcow2");
    g_autofree char *opts = g_strdup_printf("cluster_size=%s,preallocation=metadata",
                                            cluster_size);
    g_autoptr(GError) err = NULL;
    BlockDriverState *bs;
    BDRVQcow2State *s;
    uint64_t span, first, size = 8ULL << 30;
    uint8_t *buf = blk_blockalign(512);

    create_img(img, size, opts, NULL, NULL);
    bs = open_img(img, open_opts, 0, &err);
    g_assert_nonnull(bs);
    s = bs->opaque;
    span = (uint64_t)s->cluster_size / s->l2_entry_size * s->cluster_size;
    for (int pass = 0; pass < 2; pass++) {
        for (uint64_t off = 0; off < size; off += span) {
            g_assert_cmpint(bdrv_pread(bs, off, 512, buf), ==, 0);
        }
        if (pass == 0) {
            first = s->l2_cache->misses;
            g_assert_cmpuint(first, ==, size / span);   /* each table read once */
        }
    }
    if (expect_hits) {
        g_assert_cmpuint(s->l2_cache->misses, ==, first);       /* not a single miss */
    } else {
        g_assert_cmpuint(s->l2_cache->misses, >, first);
    }
    bdrv_unref(bs);
    blk_vfree(buf);
    unlink(img);
}

/* --- allocating writes of multi-cluster runs --- */

typedef struct RunWrite {
    int64_t offset, bytes;
} RunWrite;

typedef struct RunCase {
    const char *name;
    const char *setup;       /* shell, in tmpdir, makes w.qcow2 */
    RunWrite writes[12];     /* ends at bytes == 0 */
    int seq_mib;             /* then this many MiB of 1 MiB + 777 B writes, in sequence */
} RunCase;

/* Each write of a case allocates a run of clusters in one go (qcow2-cluster.c, write_alloc):
 * the run crosses an L2 table's end, a refcount block's range, starts or ends inside a
 * cluster (copy-on-write fill from zeros, the backing file or a compressed cluster) or a
 * subcluster.  qemu-img reads the result as the reference says and checks it clean. */
static void test_alloc_runs(void)
{
    static const RunCase cases[] = {
        { "4k clusters: L2 table and refcount block boundaries",
          "qemu-img create -q -f qcow2 -o cluster_size=4k w.qcow2 40M",
          { { 1536 << 10, 3 << 20 }, { 100, 5000 }, { 4095, 8194 }, { 30 << 20, 1 << 20 } },
          20 },
        { "512-byte clusters: a run over several L2 tables and refcount blocks",
          "qemu-img create -q -f qcow2 -o cluster_size=512 w.qcow2 8M",
          { { 1000, 300000 }, { 1 << 20, 1 << 20 }, { (3 << 20) + 17, (1 << 20) + 5 } }, 0 },
        { "extended L2: partial subclusters at both ends",
          "qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=16k w.qcow2 16M",
          { { 1000, 100000 }, { 5 * 16384 + 512, 3 * 16384 }, { 200000, 1 }, { 199999, 70000 },
            { 1 << 20, 1 << 20 } }, 0 },
        { "extended L2 over a backing file",
          "seq 2000000 | head -c 8M >wb.raw && qemu-img create -q -f qcow2 "
          "-o extended_l2=on,cluster_size=32k -b wb.raw -F raw w.qcow2",
          { { 33000, 100000 }, { 1 << 20, 3 << 19 }, { (4 << 20) - 700, 1400 } }, 0 },
        { "backing file: fill at both ends from it",
          "seq 2000000 | head -c 8M >wb.raw && qemu-img create -q -f qcow2 -b wb.raw -F raw "
          "w.qcow2",
          { { 70000, 200000 }, { 1 << 20, 1 << 20 }, { (3 << 20) + 1, (2 << 20) - 2 } }, 0 },
        { "compressed neighbours",
          "seq 1000000 | head -c 4M >ws.raw && qemu-img convert -c -f raw -O qcow2 ws.raw "
          "w.qcow2",
          { { 100000, 300000 }, { (1 << 20) + 1, (2 << 20) - 2 }, { 65536, 65536 } }, 0 },
    };

    QEMU_OR_SKIP();
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        const RunCase *c = &cases[i];
        g_autofree char *img = path("w.qcow2"), *ref = path("wref.raw");
        g_autofree char *msg = NULL;
        g_autoptr(GError) err = NULL;
        uint8_t *buf = blk_blockalign(4 << 20);
        BlockDriverState *bs;
        int fd, nw = 0;

        if (qt_sh(&msg, "cd '%s' && rm -f w.qcow2 && %s", tmpdir, c->setup) != 0) {
            g_error("%s: setup failed: %s", c->name, msg);
        }
        g_assert_cmpint(qt_sh(NULL, "qemu-img convert -O raw '%s' '%s'", img, ref), ==, 0);
        fd = open(ref, O_RDWR);
        g_assert_cmpint(fd, >=, 0);
        bs = open_img(img, NULL, BDRV_O_RDWR, &err);
        if (!bs) {
            g_error("%s: %s", c->name, err->message);
        }
        while (c->writes[nw].bytes) {
            nw++;
        }
        for (int j = 0; j < nw + c->seq_mib; j++) {
            RunWrite w = c->writes[j];
            if (j >= nw) {
                w.offset = (2 << 20) + (int64_t)(j - nw) * ((1 << 20) + 777);
                w.bytes = (1 << 20) + 777;
            }
            for (int64_t b = 0; b < w.bytes; b++) {
                buf[b] = j * 31 + b * 7 + (b >> 9);
            }
            g_assert_cmpint(bdrv_pwrite(bs, w.offset, w.bytes, buf), ==, 0);
            g_assert_cmpint(pwrite(fd, buf, w.bytes, w.offset), ==, w.bytes);
        }
        g_assert_cmpint(bdrv_flush(bs), ==, 0);
        bdrv_unref(bs);
        close(fd);
        blk_vfree(buf);
        assert_check_clean(img);
        if (qt_sh(&msg, "qemu-img compare -f raw -F qcow2 '%s' '%s'", ref, img) != 0) {
            g_error("%s: image differs from the reference: %s", c->name, msg);
        }
    }
}

/* One allocating write of 1 MiB into an empty image gets one contiguous run of host clusters. */
static void test_alloc_run_contiguous(void)
{
    g_autofree char *img = path("c.qcow2"), *out = NULL;
    g_autoptr(GError) err = NULL;
    uint8_t *buf = blk_blockalign(1 << 20);
    BlockDriverState *bs;

    QEMU_OR_SKIP();
    create_img(img, 64 << 20, "cluster_size=64k", NULL, NULL);
    bs = open_img(img, NULL, BDRV_O_RDWR, &err);
    g_assert_nonnull(bs);
    memset(buf, 0x5e, 1 << 20);
    g_assert_cmpint(bdrv_pwrite(bs, 3 << 20, 1 << 20, buf), ==, 0);
    bdrv_unref(bs);
    blk_vfree(buf);
    g_assert_cmpint(qt_sh(&out, "qemu-img map -f qcow2 --output=json '%s' | grep -c '\"data\": true'",
                          img), ==, 0);
    g_assert_cmpstr(g_strstrip(out), ==, "1");
    assert_check_clean(img);
}

/* qemu-img check's image end offset of file. */
static int64_t image_end(const char *file)
{
    g_autofree char *out = NULL;

    g_assert_cmpint(qt_sh(&out, "qemu-img check --output=json '%s' | "
                          "sed -n 's/.*\"image-end-offset\": *\\([0-9]*\\).*/\\1/p'", file),
                    ==, 0);
    return g_ascii_strtoll(out, NULL, 10);
}

static int64_t file_size(const char *file, int64_t *allocated)
{
    struct stat st;

    g_assert_cmpint(stat(file, &st), ==, 0);
    if (allocated) {
        *allocated = (int64_t)st.st_blocks * 512;
    }
    return st.st_size;
}

/* Allocating writes grow the file ahead of them (qcow2_grow_file_ahead); what they did not
 * use is cut off at close, so the file ends where qemu-img check says the image ends.  A copy
 * taken while it is grown (a crash) checks clean, trailing space and all.  A grow with
 * preallocation=falloc afterwards still allocates its clusters in the file. */
static void test_alloc_grow_ahead(void)
{
    g_autofree char *img = path("g.qcow2"), *copy = path("gcopy.qcow2");
    g_autoptr(GError) err = NULL;
    uint8_t *buf = blk_blockalign(1 << 20);
    int64_t grown, allocated;
    BlockDriverState *bs;

    QEMU_OR_SKIP();
    create_img(img, 64 << 20, "cluster_size=64k", NULL, NULL);
    bs = open_img(img, NULL, BDRV_O_RDWR, &err);
    g_assert_nonnull(bs);
    for (int i = 0; i < 6; i++) {
        memset(buf, 0x61 + i, 1 << 20);
        g_assert_cmpint(bdrv_pwrite(bs, (int64_t)i << 20, 1 << 20, buf), ==, 0);
    }
    g_assert_cmpint(bdrv_flush(bs), ==, 0);
    grown = file_size(img, NULL);
    g_assert_cmpint(grown, >, image_end(img));
    g_assert_cmpint(qt_sh(NULL, "cp --sparse=always '%s' '%s'", img, copy), ==, 0);
    assert_check_clean(copy);
    bdrv_unref(bs);
    g_assert_cmpint(file_size(img, NULL), ==, image_end(img));
    g_assert_cmpint(file_size(img, NULL), <, grown);
    assert_check_clean(img);

    /* grown ahead again, then a preallocating grow of the image: its clusters are allocated
     * in the file, not left in the hole that the growth made */
    bs = open_img(img, NULL, BDRV_O_RDWR, &err);
    g_assert_nonnull(bs);
    g_assert_cmpint(bdrv_pwrite(bs, 8 << 20, 1 << 20, buf), ==, 0);
    g_assert_cmpint(bdrv_truncate(bs, 96 << 20, true, PREALLOC_MODE_FALLOC, NULL), ==, 0);
    bdrv_unref(bs);
    g_assert_cmpint(file_size(img, &allocated), ==, image_end(img));
    g_assert_cmpint(allocated, >=, (32 << 20) + (7 << 20));
    assert_check_clean(img);
    blk_vfree(buf);
}

static void test_l2_cache_default(void)
{
    check_l2_cache_8g("64k", NULL, true);
    check_l2_cache_8g("4k", NULL, true);
}

static void test_l2_cache_size_option(void)
{
    /* two tables' worth of cache cannot hold 8 GiB of mappings */
    check_l2_cache_8g("64k", "l2-cache-size=128k", false);
}

int main(int argc, char **argv)
{
    int ret;

    uh_test_init(&argc, &argv);
    log_set_verbose(false);
    tmpdir = g_dir_make_tmp("test-qcow2-XXXXXX", NULL);
    g_assert_nonnull(tmpdir);

    uh_test_add("/qcow2/create/options", test_create_options);
    uh_test_add("/qcow2/create/bad-options", test_create_bad_options);
    uh_test_add("/qcow2/create/prealloc-parse", test_prealloc_parse);
    uh_test_add("/qcow2/alloc/fresh", test_alloc_fresh);
    uh_test_add("/qcow2/read/layouts", test_read_layouts);
    uh_test_add("/qcow2/read/prealloc", test_read_prealloc);
    uh_test_add("/qcow2/read/backing", test_read_backing);
    uh_test_add("/qcow2/read/snapshot", test_read_snapshot);
    uh_test_add("/qcow2/write/random", test_write_random);
    uh_test_add("/qcow2/write/truncate", test_truncate);
    uh_test_add("/qcow2/alloc/runs", test_alloc_runs);
    uh_test_add("/qcow2/alloc/run-contiguous", test_alloc_run_contiguous);
    uh_test_add("/qcow2/alloc/grow-ahead", test_alloc_grow_ahead);
    uh_test_add("/qcow2/open/corrupt-bit", test_corrupt_bit);
    uh_test_add("/qcow2/open/unknown-features", test_unknown_features);
    uh_test_add("/qcow2/open/dirty-rebuild", test_dirty_rebuild);
    uh_test_add("/qcow2/open/damaged", test_damaged);
    uh_test_add("/qcow2/l2-cache/default-covers-8g", test_l2_cache_default);
    uh_test_add("/qcow2/l2-cache/size-option", test_l2_cache_size_option);
    ret = uh_test_run();

    qt_sh(NULL, "rm -rf '%s'", tmpdir);
    g_free(tmpdir);
    return ret;
}
