/* test-qcow2-overlap.c - metadata-overlap protection of the qcow2 driver.
 *
 * qcow2_overlap_find on hand-made states: every kind of metadata, cluster granularity, the
 * structure a write updates.  Then real images with the refcount of one metadata cluster
 * zeroed (header, active L1 and L2 tables, refcount table and block, snapshot table, snapshot
 * L1 and L2 tables): the write that would land there fails with EIO and one log line names the
 * structure, the image is marked corrupt (qemu-img agrees), the node turns read-only and writes
 * nothing more to the file, and everything that was in the image still reads back. */
#include <sys/stat.h>
#include "block/qcow2.h"
#include "unit-helpers.h"
#include "test-qcow2-util.h"

static char *tmpdir;

#define QEMU_OR_SKIP() do { \
        if (!qt_have_qemu_img()) { g_test_skip("qemu-img/qemu-io not installed"); return; } \
    } while (0)

/* --- qcow2_overlap_find on a hand-made state ------------------------------------------------ */

/* 64 KiB clusters: header 0, refcount table 1, refcount block 2, L1 table 3, L2 tables 5 and 7,
 * snapshot table 8, snapshot L1 tables 9-10, snapshot L2 tables 12 and 14. */
typedef struct FakeImage {
    BDRVQcow2State s;
    uint64_t l1[4];
    uint64_t rt[8];
    Qcow2MetaRange st[2];
    uint64_t sl2[2];
} FakeImage;

static void fake_image(FakeImage *f)
{
    memset(f, 0, sizeof(*f));
    qcow2_set_geometry(&f->s, 16, false, 4);
    f->l1[0] = 0x50000 | QCOW_OFLAG_COPIED;
    f->l1[2] = 0x70000;
    f->rt[0] = 0x20000;
    f->st[0] = (Qcow2MetaRange){ 8, 8, QCOW2_META_SNAPSHOTS };
    f->st[1] = (Qcow2MetaRange){ 9, 10, QCOW2_META_SNAP_L1 };
    f->sl2[0] = 12;
    f->sl2[1] = 14;
    f->s.l1_table = f->l1;
    f->s.l1_size = 4;
    f->s.l1_table_offset = 0x30000;
    f->s.refcount_table = f->rt;
    f->s.refcount_table_size = 8;
    f->s.refcount_table_offset = 0x10000;
    f->s.static_meta = f->st;
    f->s.n_static_meta = 2;
    f->s.snap_l2.v = f->sl2;
    f->s.snap_l2.n = f->s.snap_l2.cap = 2;
    qcow2_overlap_refresh(&f->s);
}

/* Free what qcow2_overlap_refresh built (the rest is on the stack). */
static void fake_free(FakeImage *f)
{
    g_free(f->s.l2_set.v);
    g_free(f->s.rb_set.v);
}

static Qcow2Meta find(FakeImage *f, Qcow2Meta self, uint64_t off, uint64_t len)
{
    uint64_t ho, hl;
    return qcow2_overlap_find(&f->s, self, off, len, &ho, &hl);
}

static void test_find_kinds(void)
{
    FakeImage f;
    uint64_t ho, hl;

    fake_image(&f);
    g_assert_cmpuint(f.s.l2_set.n, ==, 2);
    g_assert_cmpuint(f.s.rb_set.n, ==, 1);

    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0, 512), ==, QCOW2_META_HEADER);
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0xffff, 1), ==, QCOW2_META_HEADER);
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0x10000 + 100, 1), ==, QCOW2_META_REFTABLE);
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0x20000, 0x10000), ==, QCOW2_META_REFBLOCK);
    /* the L1 table is 32 bytes; the rest of its cluster is its too */
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0x3f000, 4096), ==, QCOW2_META_L1);
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0x50000, 1), ==, QCOW2_META_L2);
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0x6ffff, 2), ==, QCOW2_META_L2);
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0x80000, 1), ==, QCOW2_META_SNAPSHOTS);
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0x9ffff, 1), ==, QCOW2_META_SNAP_L1);
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0xa0000, 1), ==, QCOW2_META_SNAP_L1);
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0xc0000, 0x10000), ==, QCOW2_META_SNAP_L2);
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0xd0000, 0x20000), ==, QCOW2_META_SNAP_L2);

    /* free clusters between them */
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0x40000, 0x10000), ==, QCOW2_META_NONE);
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0x60000, 0x10000), ==, QCOW2_META_NONE);
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0xb0000, 0x10000), ==, QCOW2_META_NONE);
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0xd0000, 0x10000), ==, QCOW2_META_NONE);
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0xf0000, 1 << 30), ==, QCOW2_META_NONE);
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0x40000, 0), ==, QCOW2_META_NONE);

    /* what was hit, where */
    g_assert_cmpint(qcow2_overlap_find(&f.s, QCOW2_META_NONE, 0x70010, 1, &ho, &hl), ==,
                    QCOW2_META_L2);
    g_assert_cmphex(ho, ==, 0x70000);
    g_assert_cmpuint(hl, ==, 0x10000);
    g_assert_cmpint(qcow2_overlap_find(&f.s, QCOW2_META_NONE, 0x30000, 8, &ho, &hl), ==,
                    QCOW2_META_L1);
    g_assert_cmphex(ho, ==, 0x30000);
    g_assert_cmpuint(hl, ==, 32);
    g_assert_cmpint(qcow2_overlap_find(&f.s, QCOW2_META_NONE, 0xa8000, 8, &ho, &hl), ==,
                    QCOW2_META_SNAP_L1);
    g_assert_cmphex(ho, ==, 0x90000);
    g_assert_cmpuint(hl, ==, 0x20000);
    fake_free(&f);
}

static void test_find_self(void)
{
    FakeImage f;

    fake_image(&f);
    /* a structure may be written where it is */
    g_assert_cmpint(find(&f, QCOW2_META_HEADER, 72, 8), ==, QCOW2_META_NONE);
    g_assert_cmpint(find(&f, QCOW2_META_L1, 0x30008, 8), ==, QCOW2_META_NONE);
    g_assert_cmpint(find(&f, QCOW2_META_REFTABLE, 0x10000, 8), ==, QCOW2_META_NONE);
    g_assert_cmpint(find(&f, QCOW2_META_L2, 0x50000, 0x10000), ==, QCOW2_META_NONE);
    g_assert_cmpint(find(&f, QCOW2_META_L2, 0x70000, 0x10000), ==, QCOW2_META_NONE);
    g_assert_cmpint(find(&f, QCOW2_META_REFBLOCK, 0x20000, 0x10000), ==, QCOW2_META_NONE);

    /* ... and nowhere else */
    g_assert_cmpint(find(&f, QCOW2_META_HEADER, 0, 0x20000), ==, QCOW2_META_REFTABLE);
    g_assert_cmpint(find(&f, QCOW2_META_L1, 0x50000, 8), ==, QCOW2_META_L2);
    g_assert_cmpint(find(&f, QCOW2_META_L2, 0x30000, 0x10000), ==, QCOW2_META_L1);
    g_assert_cmpint(find(&f, QCOW2_META_L2, 0x20000, 0x10000), ==, QCOW2_META_REFBLOCK);
    g_assert_cmpint(find(&f, QCOW2_META_REFBLOCK, 0x50000, 0x10000), ==, QCOW2_META_L2);
    g_assert_cmpint(find(&f, QCOW2_META_REFTABLE, 0x30000, 8), ==, QCOW2_META_L1);
    g_assert_cmpint(find(&f, QCOW2_META_L2, 0xc0000, 0x10000), ==, QCOW2_META_SNAP_L2);
    /* an L2 table write is its own cluster only: the next one is another table */
    g_assert_cmpint(find(&f, QCOW2_META_L2, 0x50000, 0x30000), ==, QCOW2_META_L2);
    fake_free(&f);
}

/* The sets follow entries as they change, including two entries pointing at one table (a
 * damaged image), and a table rebuilt from scratch sees every entry. */
static void test_find_updates(void)
{
    FakeImage f;

    fake_image(&f);
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0x40000, 1), ==, QCOW2_META_NONE);
    qcow2_overlap_l1_changed(&f.s, f.l1[3], 0x40000 | QCOW_OFLAG_COPIED);
    f.l1[3] = 0x40000 | QCOW_OFLAG_COPIED;
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0x40000, 1), ==, QCOW2_META_L2);
    /* L1 entry 0 moves from 0x50000 to 0x40000 too: 0x50000 is free, 0x40000 still taken */
    qcow2_overlap_l1_changed(&f.s, f.l1[0], 0x40000);
    f.l1[0] = 0x40000;
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0x50000, 1), ==, QCOW2_META_NONE);
    qcow2_overlap_l1_changed(&f.s, f.l1[3], 0);
    f.l1[3] = 0;
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0x40000, 1), ==, QCOW2_META_L2);
    qcow2_overlap_l1_changed(&f.s, f.l1[0], 0);
    f.l1[0] = 0;
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0x40000, 1), ==, QCOW2_META_NONE);

    qcow2_overlap_reftable_changed(&f.s, f.rt[5], 0x60000);
    f.rt[5] = 0x60000;
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0x60000, 1), ==, QCOW2_META_REFBLOCK);
    f.rt[6] = 0xe0000;                  /* behind its back: seen after a rebuild */
    qcow2_overlap_refresh(&f.s);
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0xe0000, 1), ==, QCOW2_META_REFBLOCK);
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0x60000, 1), ==, QCOW2_META_REFBLOCK);
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0x70000, 1), ==, QCOW2_META_L2);

    /* no snapshot L2 set (read-only open, or over budget) */
    f.s.snap_l2.v = NULL;
    f.s.snap_l2.n = 0;
    g_assert_cmpint(find(&f, QCOW2_META_NONE, 0xc0000, 1), ==, QCOW2_META_NONE);
    fake_free(&f);
}

/* --- real images ---------------------------------------------------------------------------- */

static char *path(const char *name)
{
    return g_build_filename(tmpdir, name, NULL);
}

static uint64_t rd64(int fd, uint64_t off)
{
    uint8_t b[8];
    g_assert_cmpint(pread(fd, b, 8, off), ==, 8);
    return ldbe64(b);
}

static uint32_t rd32(int fd, uint64_t off)
{
    uint8_t b[4];
    g_assert_cmpint(pread(fd, b, 4, off), ==, 4);
    return ldbe32(b);
}

/* Host offset of a metadata structure of the image: the first of its kind. */
static uint64_t meta_offset(const char *file, Qcow2Meta kind)
{
    int fd = open(file, O_RDONLY);
    uint64_t l1 = rd64(fd, 40), rt = rd64(fd, 48), snaps = rd64(fd, 64), off = 0;

    g_assert_cmpint(fd, >=, 0);
    switch (kind) {
    case QCOW2_META_HEADER:    off = 0; break;
    case QCOW2_META_L1:        off = l1; break;
    case QCOW2_META_L2:        off = rd64(fd, l1) & L1E_OFFSET_MASK; break;
    case QCOW2_META_REFTABLE:  off = rt; break;
    case QCOW2_META_REFBLOCK:  off = rd64(fd, rt) & REFT_OFFSET_MASK; break;
    case QCOW2_META_SNAPSHOTS: off = snaps; break;
    case QCOW2_META_SNAP_L1:   off = rd64(fd, snaps); break;
    case QCOW2_META_SNAP_L2:   off = rd64(fd, rd64(fd, snaps)) & L1E_OFFSET_MASK; break;
    default:                   g_assert_not_reached();
    }
    close(fd);
    return off;
}

/* Set the refcount of the cluster at host offset off, in the image's refcount block. */
static void set_refcount(const char *file, uint64_t off, uint64_t value)
{
    int fd = open(file, O_RDWR);
    uint32_t cb = rd32(fd, 20), order = rd32(fd, 4) >= 3 ? rd32(fd, 96) : 4;
    uint64_t cs = 1ULL << cb, ci = off >> cb, rb_bits = cb + 3 - order;
    uint64_t rb = rd64(fd, rd64(fd, 48) + (ci >> rb_bits) * 8) & REFT_OFFSET_MASK;
    g_autofree uint8_t *blk = g_malloc(cs);

    g_assert_cmpuint(rb, !=, 0);
    g_assert_cmpint(pread(fd, blk, cs, rb), ==, (ssize_t)cs);
    qcow2_refblock_set(blk, order, ci & ((1ULL << rb_bits) - 1), value);
    g_assert_cmpint(pwrite(fd, blk, cs, rb), ==, (ssize_t)cs);
    close(fd);
}

static char *file_checksum(const char *file)
{
    size_t len;
    g_autofree uint8_t *data = uh_read_file(file, &len);
    return g_compute_checksum_for_data(G_CHECKSUM_SHA256, data, len);
}

static BlockDriverState *open_rw(const char *file)
{
    g_autoptr(GError) err = NULL;
    BlockDriverState *bs = bdrv_open(file, "qcow2", NULL, BDRV_O_RDWR, &err);

    if (!bs) {
        g_error("open %s: %s", file, err->message);
    }
    return bs;
}

typedef enum {
    OP_DATA,        /* 64 KiB writes into unallocated clusters under an existing L2 table */
    OP_NEW_L2,      /* a write that needs a new L2 table */
    OP_GROW_L1,     /* a resize that needs a new L1 table */
    OP_RESERVE,     /* fallocate mode 0: preallocated clusters */
    OP_REFBLOCK,    /* an allocation that needs a new refcount block */
} OverlapOp;

typedef struct OverlapCase {
    const char *name;
    const char *setup;          /* shell in tmpdir: makes o.qcow2, writes 0x5a to [0, 1M) */
    Qcow2Meta victim;           /* whose refcount is zeroed */
    OverlapOp op;
    const char *expect;         /* in the log line */
} OverlapCase;

#define MK(opts) "qemu-img create -q -f qcow2 " opts " o.qcow2 1G && " \
                 "qemu-io -c 'write -P 0x5a 0 1M' o.qcow2 >/dev/null"
#define SNAP     " && qemu-img snapshot -c S o.qcow2 && " \
                 "qemu-io -c 'write -P 0x5a 0 64k' o.qcow2 >/dev/null"

static const OverlapCase cases[] = {
    { "header", MK(""), QCOW2_META_HEADER, OP_DATA,
      "a write of guest data at 0 (65536 bytes) over the qcow2 header" },
    { "active L1 by data", MK(""), QCOW2_META_L1, OP_DATA, "guest data at 0x30000 (65536 "
      "bytes) over the active L1 table at 0x30000 (16 bytes)" },
    { "active L1 by a new L2 table", MK(""), QCOW2_META_L1, OP_NEW_L2,
      "a new L2 table at 0x30000 (65536 bytes) over the active L1 table" },
    { "active L1, version 2", MK("-o compat=0.10"), QCOW2_META_L1, OP_DATA,
      "over the active L1 table" },
    { "active L2", MK(""), QCOW2_META_L2, OP_DATA, "over the active L2 table at 0x40000" },
    { "active L2 by a new L1 table", MK(""), QCOW2_META_L2, OP_GROW_L1,
      "a new L1 table at 0x40000 (65536 bytes) over the active L2 table" },
    { "active L2 by reserved clusters", MK(""), QCOW2_META_L2, OP_RESERVE,
      "reserved data at 0x40000" },
    { "refcount table", MK(""), QCOW2_META_REFTABLE, OP_DATA, "over the refcount table" },
    { "refcount block", MK(""), QCOW2_META_REFBLOCK, OP_DATA, "over the refcount block" },
    { "refcount table by a new refcount block", MK("-o cluster_size=512,refcount_bits=64"),
      QCOW2_META_REFTABLE, OP_REFBLOCK, "a new refcount block at 0x200 (512 bytes) over the "
      "refcount table" },
    { "snapshot table", MK("") SNAP, QCOW2_META_SNAPSHOTS, OP_DATA,
      "over the snapshot table" },
    { "snapshot L1 table", MK("") SNAP, QCOW2_META_SNAP_L1, OP_DATA,
      "over the snapshot L1 table" },
    { "snapshot L2 table", MK("") SNAP, QCOW2_META_SNAP_L2, OP_DATA,
      "over the snapshot L2 table at 0x40000" },
};

/* The damage for OP_REFBLOCK: drop the refcount table's first entry, so the next allocation
 * finds clusters 0.. "free" and places a refcount block for them after its reservation. */
static void drop_first_refblock(const char *file)
{
    int fd = open(file, O_RDWR);
    uint8_t zero[8] = { 0 };

    g_assert_cmpint(pwrite(fd, zero, 8, rd64(fd, 48)), ==, 8);
    close(fd);
}

/* Run the case's operation until it fails (a damaged refcount is found by the allocator only
 * when the clusters below it are used).  Returns the error. */
static int run_op(BlockDriverState *bs, OverlapOp op)
{
    uint8_t *buf = blk_blockalign(65536);
    int ret = 0;

    memset(buf, 0xa7, 65536);
    switch (op) {
    case OP_DATA:
    case OP_REFBLOCK:
        for (int i = 0; i < 64 && ret == 0; i++) {
            ret = bdrv_pwrite(bs, (8 << 20) + i * 65536, op == OP_REFBLOCK ? 512 : 65536, buf);
        }
        break;
    case OP_NEW_L2:
        ret = bdrv_pwrite(bs, 600 << 20, 65536, buf);
        break;
    case OP_GROW_L1:
        ret = bdrv_truncate(bs, 2LL << 30, true, PREALLOC_MODE_OFF, NULL);
        break;
    case OP_RESERVE:
        for (int i = 0; i < 64 && ret == 0; i++) {
            ret = bdrv_preallocate(bs, (8 << 20) + i * 65536, 65536);
        }
        break;
    }
    blk_vfree(buf);
    return ret;
}

static void run_case(const OverlapCase *c)
{
    g_autofree char *img = path("o.qcow2"), *log = path("o.log"), *out = NULL;
    g_autofree char *sum_after = NULL, *sum_closed = NULL, *logtext = NULL;
    g_autoptr(GError) err = NULL;
    BlockDriverState *bs;
    uint8_t *buf = blk_blockalign(1 << 20);
    int ret;

    if (g_test_verbose()) {
        g_printerr("# %s\n", c->name);
    }
    g_assert_cmpint(qt_sh(&out, "cd '%s' && rm -f o.qcow2 && %s", tmpdir, c->setup), ==, 0);
    if (c->op == OP_REFBLOCK) {
        drop_first_refblock(img);
    } else {
        set_refcount(img, meta_offset(img, c->victim), 0);
    }

    unlink(log);
    g_assert_true(log_open(log, &err));
    bs = open_rw(img);
    ret = run_op(bs, c->op);
    g_assert_true(log_open(NULL, &err));
    if (ret != -EIO) {
        g_error("%s: the operation returned %d (%s), not EIO", c->name, ret, g_strerror(-ret));
    }

    /* one line, naming the image, the structure and the offsets, saying how to repair */
    g_assert_true(g_file_get_contents(log, &logtext, NULL, NULL));
    if (g_test_verbose()) {
        g_printerr("%s", logtext);
    }
    if (!strstr(logtext, c->expect) || !strstr(logtext, "check -r all") ||
        !strstr(logtext, img) || strchr(logtext, '\n') != logtext + strlen(logtext) - 1) {
        g_error("%s: expected one log line with '%s', got:\n%s", c->name, c->expect, logtext);
    }

    /* read-only now: writes of any kind fail, reads see what the image holds */
    g_assert_true(bs->read_only);
    g_assert_cmpint(bdrv_pwrite(bs, 0, 4096, buf), ==, -EROFS);
    g_assert_cmpint(bdrv_pwrite_zeroes(bs, 0, 65536, 0), ==, -EROFS);
    g_assert_cmpint(bdrv_pdiscard(bs, 0, 65536), ==, -EROFS);
    g_assert_cmpint(bdrv_pread(bs, 0, 1 << 20, buf), ==, 0);
    for (int i = 0; i < 1 << 20; i++) {
        if (buf[i] != 0x5a) {
            g_error("%s: byte %d reads %#x after the switch", c->name, i, buf[i]);
        }
    }

    /* nothing more reaches the file: flush and close write nothing */
    sum_after = file_checksum(img);
    bdrv_flush(bs);
    bdrv_unref(bs);
    sum_closed = file_checksum(img);
    g_assert_cmpstr(sum_after, ==, sum_closed);

    /* qemu-img sees the corrupt bit (version 3), reads the data, and can repair the image */
    g_assert_cmpint(qt_sh(&out, "qemu-img info '%s'", img), ==, 0);
    if (!strstr(c->setup, "compat=0.10") && !strstr(out, "corrupt: true")) {
        g_error("%s: not marked corrupt:\n%s", c->name, out);
    }
    g_assert_cmpint(qt_sh(&out, "qemu-io -r -c 'read -P 0x5a 0 1M' '%s'", img), ==, 0);
    g_assert_cmpint(qt_sh(&out, "qemu-img check -r all '%s' && qemu-img check '%s'", img, img),
                    ==, 0);
    blk_vfree(buf);
}

static void test_overlap_images(void)
{
    QEMU_OR_SKIP();
    log_set_verbose(false);
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        run_case(&cases[i]);
    }
}

/* Writes acknowledged before the switch whose L2 entries were still cached are lost: the next
 * flush says so (once), and the image on disk stays consistent. */
static void test_overlap_lost_writes(void)
{
    g_autofree char *img = path("lost.qcow2"), *logfile = path("lost.log"), *out = NULL;
    g_autoptr(GError) err = NULL;
    BlockDriverState *bs;
    uint8_t *buf = blk_blockalign(65536);

    QEMU_OR_SKIP();
    g_assert_cmpint(qt_sh(&out, "cd '%s' && rm -f lost.qcow2 && qemu-img create -q -f qcow2 "
                          "lost.qcow2 1G && qemu-io -c 'write -P 0x5a 0 1M' lost.qcow2",
                          tmpdir), ==, 0);
    set_refcount(img, meta_offset(img, QCOW2_META_L1), 0);
    memset(buf, 0x11, 65536);
    log_set_verbose(false);
    g_assert_true(log_open(logfile, &err));
    bs = open_rw(img);
    /* no allocation: a write in place, and a zeroed cluster (only in the cached L2 table) */
    g_assert_cmpint(bdrv_pwrite(bs, 0, 65536, buf), ==, 0);
    g_assert_cmpint(bdrv_pwrite_zeroes(bs, 65536, 65536, 0), ==, 0);
    g_assert_cmpint(bdrv_pwrite(bs, 8 << 20, 65536, buf), ==, -EIO);
    g_assert_true(log_open(NULL, &err));
    g_assert_cmpint(bdrv_flush(bs), ==, -EIO);
    g_assert_cmpint(bdrv_flush(bs), ==, 0);
    bdrv_unref(bs);
    /* the in-place write is there; the zeroing was never written */
    g_assert_cmpint(qt_sh(&out, "qemu-io -r -c 'read -P 0x11 0 64k' -c 'read -P 0x5a 64k 960k' "
                          "'%s'", img), ==, 0);
    g_assert_cmpint(qt_sh(&out, "qemu-img check -r all '%s' && qemu-img check '%s'", img, img),
                    ==, 0);
    blk_vfree(buf);
}

/* No false alarm on healthy images with snapshots, backing files, compressed clusters, small
 * clusters (many refcount blocks, a growing refcount table), lazy refcounts, extended L2,
 * preallocation and resizes: random writes, zeroes and discards never trip the check. */
static void test_no_false_positives(void)
{
    static const char *const setups[] = {
        "qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=64 n.qcow2 8M",
        "qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=1 n.qcow2 8M",
        "qemu-img create -q -f qcow2 -o lazy_refcounts=on n.qcow2 8M",
        "qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=16k -b b.raw -F raw n.qcow2",
        "qemu-img create -q -f qcow2 -o preallocation=metadata,cluster_size=4k n.qcow2 8M",
        ("qemu-img convert -c -O qcow2 b.raw n.qcow2 && qemu-img snapshot -c S1 n.qcow2 && "
         "qemu-io -c 'write -P 3 1M 2M' n.qcow2 >/dev/null && qemu-img snapshot -c S2 n.qcow2"),
    };
    g_autofree char *img = path("n.qcow2"), *ref = path("nref.raw"), *out = NULL;

    QEMU_OR_SKIP();
    g_assert_cmpint(qt_sh(&out, "cd '%s' && qemu-img create -q -f raw b.raw 8M && qemu-io -f raw "
                          "-c 'write -P 7 0 8M' b.raw", tmpdir), ==, 0);
    for (size_t i = 0; i < G_N_ELEMENTS(setups); i++) {
        BlockDriverState *bs;

        g_assert_cmpint(qt_sh(&out, "cd '%s' && rm -f n.qcow2 && %s && qemu-img convert -O raw "
                              "n.qcow2 nref.raw", tmpdir, setups[i]), ==, 0);
        bs = open_rw(img);
        g_assert_cmpint(qt_random_io(bs, ref, 7 + i, 150, 256 << 10), ==, 0);
        g_assert_cmpint(bdrv_truncate(bs, 12 << 20, true, PREALLOC_MODE_OFF, NULL), ==, 0);
        g_assert_cmpint(qt_sh(NULL, "truncate -s 12M '%s'", ref), ==, 0);
        g_assert_cmpint(qt_random_io(bs, ref, 99 + i, 50, 256 << 10), ==, 0);
        g_assert_false(bs->read_only);
        bdrv_unref(bs);
        if (qt_sh(&out, "qemu-img check '%s' && qemu-img compare '%s' '%s'", img, img, ref)) {
            g_error("%s: %s", setups[i], out);
        }
    }
}

int main(int argc, char **argv)
{
    int ret;

    uh_test_init(&argc, &argv);
    tmpdir = uh_tmpdir_new();
    uh_test_add("/qcow2-overlap/find/kinds", test_find_kinds);
    uh_test_add("/qcow2-overlap/find/self", test_find_self);
    uh_test_add("/qcow2-overlap/find/updates", test_find_updates);
    uh_test_add("/qcow2-overlap/image/each-structure", test_overlap_images);
    uh_test_add("/qcow2-overlap/image/lost-writes", test_overlap_lost_writes);
    uh_test_add("/qcow2-overlap/image/no-false-positives", test_no_false_positives);
    ret = uh_test_run();
    qt_sh(NULL, "rm -rf '%s'", tmpdir);
    g_free(tmpdir);
    return ret;
}
