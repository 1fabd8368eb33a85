/* fuzz-qcow2.c - libFuzzer harness: open a qcow2 image through the real block layer
 * (blk_new_open, the backend, the qcow2 driver) over an in-memory file and run a short script
 * of reads, writes, zero writes, discards, flushes, truncates, block status queries and
 * reopens on it.  Every call must return cleanly: crashes, hangs, sanitizer reports, leaks and
 * unbounded allocations are bugs; errors (EIO, EINVAL, ...) are fine.
 *
 * Input layout (see tests/fuzz/README.md for the details and tests/fuzz/mkcorpus-qcow2.py,
 * which writes inputs in this layout):
 *
 *   IMAGE | OPS (N records of 8 bytes) | TRAILER (6 bytes: fault ops, fault after,
 *                                                 backing, flags, snapshot, N)
 *
 * IMAGE is the image file, either as is or, when it starts with "QSPR", in a sparse encoding
 * (so that images with large clusters stay small): "QSPR", u32 file length, then records
 * (u32 offset, u16 length, data) up to the end of IMAGE.  All integers are big-endian.
 *
 * The image is opened read-write or read-only, optionally with tiny metadata caches, a
 * snapshot or write-through; a backing file named in the image is opened only when its name is
 * a plain relative name, and then it is a second in-memory file (raw, a pattern), else the
 * open is refused as blkfuse would refuse an unknown file.  With fault ops set, the fault
 * filter (block/fault.c) fails the chosen requests of the qcow2 node to its file after a given
 * number have passed, so that every error path of the driver runs too.  Nothing touches the
 * host's files (the fault rules live in a memfd).
 */
#include "config.h"
#include "fuzz.h"
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include "block/aio.h"
#include "block/backend.h"
#include "block/block.h"
#include "block/util.h"
#include "tests/fuzz/memfile.h"

#define IMG_NAME        MEMFILE_PREFIX ":/img/disk.qcow2"
#define TRAILER_LEN     6
#define OP_LEN          8
#define MAX_OPS         32
#define MAX_IO          (1024 * 1024)      /* bytes one read or write may move */
#define MAX_FILE        (64 * 1024 * 1024) /* largest image file a sparse IMAGE may describe */

/* TRAILER flags */
enum {
    F_READ_ONLY   = 1 << 0,
    F_BACKING     = 1 << 1,     /* a backing file exists (else opening one fails) */
    F_WRITETHRU   = 1 << 2,
    F_YIELD       = 1 << 3,     /* requests yield: paired ops really run concurrently */
    F_SNAPSHOT    = 1 << 4,     /* read-only: present snapshot "1".."4" (TRAILER byte 4) */
    F_SMALL_L2    = 1 << 5,     /* 4-table caches: evictions and write-backs everywhere */
    F_SMALL_RB    = 1 << 6,
};

enum {
    OP_READ, OP_WRITE, OP_ZERO, OP_DISCARD, OP_FLUSH, OP_TRUNCATE, OP_STATUS, OP_PREALLOC,
    OP_REOPEN, OP_WRITE2, OP__MAX
};

typedef struct Op {
    uint8_t kind;               /* low nibble: OP_*; bits 4-5: alignment; 6: no clamp;
                                 * 7: run together with the next op */
    uint32_t offset;
    uint16_t length;            /* bit 15: in 512-byte units */
    uint8_t aux;                /* data pattern, request flags */
} Op;

typedef struct Fuzz {
    BlockBackend *blk;
    int flags;
    uint8_t tflags;
    uint8_t snapshot;
    uint8_t fault_ops;          /* bit per op of the fault filter (0: no filter) */
    uint8_t fault_after;        /* bits 0-5: requests that pass first; 6: keep failing;
                                 * 7: ENOSPC instead of EIO */
    int64_t cluster_size;
} Fuzz;

typedef struct OpRun {
    Fuzz *fz;
    Op op;
    uint8_t *iobuf;             /* MAX_IO bytes */
    bool done;
} OpRun;

/* I/O buffers, one per concurrent op, allocated once: a fresh megabyte per op costs more than
 * the op.  Data sits at the end so that overruns hit ASan's redzone. */
static uint8_t *iobufs[2];

static uint32_t ld32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Fill the in-memory image file from IMAGE (plain or sparse). */
static void load_image(MemFile *f, const uint8_t *p, size_t len)
{
    if (len >= 8 && memcmp(p, "QSPR", 4) == 0) {
        uint32_t flen = MIN(ld32(p + 4), MAX_FILE);
        size_t pos = 8;

        while (pos + 6 <= len) {
            uint32_t off = ld32(p + pos);
            uint16_t n = p[pos + 4] << 8 | p[pos + 5];
            pos += 6;
            n = MIN(n, len - pos);
            if ((uint64_t)off + n <= MAX_FILE) {
                memfile_write(f, off, p + pos, n);
            }
            pos += n;
        }
        if (f->size < flen) {
            memfile_truncate(f, flen);
        }
    } else {
        memfile_write(f, 0, p, len);
        memfile_truncate(f, len);
    }
}

/* A raw backing file with a recognisable pattern; its size is often not cluster aligned. */
static void make_backing(uint8_t sel)
{
    MemFile *b = memfile_new(MEMFILE_PREFIX ":/img/backing");
    int64_t size = (int64_t)(sel & 0x3f) * 65536 + (sel & 0x40 ? 1536 : 0);
    uint8_t buf[4096];

    for (int64_t pos = 0; pos < size; pos += sizeof(buf)) {
        for (size_t i = 0; i < sizeof(buf); i += 8) {
            stbe64(buf + i, 0xb000000000000000ULL | (uint64_t)(pos + i));
        }
        memfile_write(b, pos, buf, MIN((int64_t)sizeof(buf), size - pos));
    }
    memfile_truncate(b, size);
    memfile_fallback = b;       /* every relative backing name finds it */
}

/* Is the backing file name one the harness can serve from memory?  Only plain relative names:
 * absolute names and protocol prefixes would reach the host. */
static bool backing_name_ok(const char *name)
{
    return name[0] != '/' && !strchr(name, ':');
}

static bool verbose;
static int rules_fd = -1;       /* memfd holding the fault rules */

/* Write the fault rule for this input; false if there is none. */
static bool write_fault_rules(Fuzz *fz)
{
    static const char *const names[] = {
        "read", "write", "flush", "discard", "zero", "truncate", "preallocate", "any",
    };
    g_autoptr(GString) ops = g_string_new(NULL);
    g_autofree char *rule = NULL;

    for (int i = 0; i < 8; i++) {
        if (fz->fault_ops & (1 << i)) {
            g_string_append_printf(ops, "%s%s", ops->len ? "," : "", names[i]);
        }
    }
    if (!ops->len) {
        return false;
    }
    rule = g_strdup_printf("error op=%s after=%d count=%d errno=%s\n", ops->str,
                           fz->fault_after & 0x3f, fz->fault_after & 0x40 ? 0 : 1,
                           fz->fault_after & 0x80 ? "ENOSPC" : "EIO");
    if (ftruncate(rules_fd, 0) < 0 ||
        pwrite(rules_fd, rule, strlen(rule), 0) != (ssize_t)strlen(rule)) {
        abort();
    }
    return true;
}

static BlockBackend *open_image(Fuzz *fz)
{
    g_autoptr(GError) err = NULL;
    BlockOptions *opts = block_options_new();
    BlockBackend *blk;
    BlockDriverState *bs;
    BlockDriverInfo info = { 0 };

    if (fz->tflags & F_SMALL_L2) {
        g_hash_table_insert(opts, g_strdup("l2-cache-size"), g_strdup("1"));
    }
    if (fz->tflags & F_SMALL_RB) {
        g_hash_table_insert(opts, g_strdup("refcount-cache-size"), g_strdup("1"));
    }
    if ((fz->tflags & F_SNAPSHOT) && !(fz->flags & BDRV_O_RDWR)) {
        g_hash_table_insert(opts, g_strdup("snapshot-name"),
                            g_strdup_printf("%d", fz->snapshot % 4 + 1));
    }
    if (write_fault_rules(fz)) {
        g_hash_table_insert(opts, g_strdup("fault-rules"),
                            g_strdup_printf("/proc/self/fd/%d", rules_fd));
    }
    /* The backing chain is opened below, once its name is known to stay in memory. */
    blk = blk_new_open(IMG_NAME, "qcow2", opts, fz->flags | BDRV_O_NO_BACKING, &err);
    g_hash_table_unref(opts);
    if (!blk) {
        if (!err) {
            fprintf(stderr, "blk_new_open failed without an error message\n");
            abort();
        }
        if (verbose) {
            fprintf(stderr, "open: %s\n", err->message);
        }
        return NULL;
    }
    bs = blk_bs(blk);
    if (bs->backing_file) {
        int ret;

        if (!backing_name_ok(bs->backing_file)) {
            if (verbose) {
                fprintf(stderr, "open: backing file '%s' refused\n", bs->backing_file);
            }
            blk_unref(blk);
            return NULL;
        }
        /* A relative name is not resolved against a protocol image (fuzzmem:...): name the
         * in-memory backing file that every relative name stands for, and let it be opened. */
        g_free(bs->backing_file);
        bs->backing_file = g_strdup(MEMFILE_PREFIX ":/img/backing");
        ret = bdrv_open_backing(bs, fz->flags | BDRV_O_ALLOW_REMOTE_BACKING, &err);
        if (ret < 0) {
            if (!err) {
                fprintf(stderr, "bdrv_open_backing failed without an error message\n");
                abort();
            }
            if (verbose) {
                fprintf(stderr, "open: %s\n", err->message);
            }
            blk_unref(blk);
            return NULL;
        }
    }
    blk_set_write_through(blk, fz->tflags & F_WRITETHRU);
    if (bs->drv->bdrv_get_info && bs->drv->bdrv_get_info(bs, &info) == 0) {
        fz->cluster_size = info.cluster_size;
        g_free(info.extra);
    }
    if (bs->drv->bdrv_snapshot_list) {
        GPtrArray *snaps = NULL;
        if (bs->drv->bdrv_snapshot_list(bs, &snaps) == 0 && snaps) {
            g_ptr_array_unref(snaps);
        }
    }
    return blk;
}

static void fill_pattern(uint8_t *buf, int64_t len, int64_t offset, uint8_t seed)
{
    memset(buf, seed, len);
    for (int64_t i = (512 - offset % 512) % 512; i + 8 <= len; i += 512) {
        stbe64(buf + i, offset + i);
    }
}

/* Offset and length of an op, mapped into (or, with bit 6, around) the current size. */
static void op_range(Fuzz *fz, const Op *op, int64_t *offset, int64_t *bytes)
{
    int64_t size = MAX(blk_getlength(fz->blk), 0);
    int64_t align[] = { 1, 512, 4096, MAX(fz->cluster_size, 1) };
    int64_t off = op->offset % (size + 1);
    int64_t len = op->length & 0x7fff;

    off = ROUND_DOWN(off, align[(op->kind >> 4) & 3]);
    if (op->length & 0x8000) {
        len *= 512;
    }
    len = MIN(len, MAX_IO);
    if (!(op->kind & 0x40)) {
        len = MIN(len, size - off);
    }
    *offset = off;
    *bytes = len;
}

static void coroutine_fn run_op(void *opaque)
{
    OpRun *r = opaque;
    Fuzz *fz = r->fz;
    const Op *op = &r->op;
    int64_t off, len;
    uint8_t *buf;
    int ret = 0;

    op_range(fz, op, &off, &len);
    buf = r->iobuf + MAX_IO - MIN(len, MAX_IO);
    switch ((op->kind & 0xf) % OP__MAX) {
    case OP_READ:
        ret = blk_co_pread(fz->blk, off, len, buf, 0);
        break;
    case OP_WRITE:
    case OP_WRITE2:
        fill_pattern(buf, len, off, op->aux);
        ret = blk_co_pwrite(fz->blk, off, len, buf, op->aux & 1 ? BDRV_REQ_FUA : 0);
        break;
    case OP_ZERO:
        ret = blk_co_pwrite_zeroes(fz->blk, off, len,
                                   (op->aux & 1 ? BDRV_REQ_MAY_UNMAP : 0) |
                                   (op->aux & 2 ? BDRV_REQ_NO_FALLBACK : 0));
        break;
    case OP_DISCARD:
        ret = blk_co_pdiscard(fz->blk, off, len);
        break;
    case OP_FLUSH:
        ret = blk_co_flush(fz->blk);
        break;
    case OP_TRUNCATE: {
        /* up to twice the size plus 8 MiB (plus 1 MiB with metadata preallocation, which
         * allocates every new cluster); whole sectors unless aux says otherwise */
        int64_t size = MAX(blk_getlength(fz->blk), 0);
        bool prealloc = op->aux & 4;
        int64_t new_size = op->offset % (prealloc ? size + (1 << 20) + 1
                                                  : 2 * size + (8 << 20) + 1);
        GError *err = NULL;
        if (!(op->aux & 1)) {
            new_size = ROUND_DOWN(new_size, 512);
        }
        ret = blk_co_truncate(fz->blk, new_size, !(op->aux & 2),
                              prealloc ? PREALLOC_MODE_METADATA : PREALLOC_MODE_OFF, &err);
        off = new_size;
        g_clear_error(&err);
        break;
    }
    case OP_STATUS:
        for (int i = 0; i < 64 && len > 0; i++) {
            int64_t pnum = 0;
            ret = blk_co_block_status(fz->blk, off, len, &pnum);
            if (ret < 0 || pnum <= 0) {
                break;
            }
            off += pnum;
            len -= pnum;
        }
        break;
    case OP_PREALLOC:
        ret = blk_co_preallocate(fz->blk, off, len);
        break;
    default:
        break;
    }
    if (verbose) {
        fprintf(stderr, "op %d at %" PRId64 "+%" PRId64 ": %s\n", (op->kind & 0xf) % OP__MAX,
                off, len, ret < 0 ? g_strerror(-ret) : "ok");
    }
    r->done = true;
}

/* Run ops [i, i + n) concurrently; returns when all are done. */
static void run_ops(Fuzz *fz, const Op *ops, int n)
{
    OpRun runs[2];
    AioContext *ctx = aio_get_current();

    for (int k = 0; k < n; k++) {
        runs[k] = (OpRun){ .fz = fz, .op = ops[k], .iobuf = iobufs[k] };
        coroutine_enter(coroutine_create(run_op, &runs[k]));
    }
    for (int k = 0; k < n; k++) {
        while (!runs[k].done) {
            aio_poll(ctx, true);
        }
    }
}

static void decode_op(const uint8_t *p, Op *op)
{
    op->kind = p[0];
    op->offset = ld32(p + 1);
    op->length = p[5] << 8 | p[6];
    op->aux = p[7];
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    bdrv_register_driver(&bdrv_fuzzmem);
    /* Damaged images make the driver log warnings: keep them out of the fuzzer's output
     * (FUZZ_LOG=1 shows them, and why opens fail). */
    verbose = getenv("FUZZ_LOG") != NULL;
    if (!verbose) {
        log_open("/dev/null", NULL);
    }
    aio_get_current();
    rules_fd = memfd_create("fuzz-qcow2-fault-rules", MFD_CLOEXEC);
    if (rules_fd < 0) {
        perror("memfd_create");
        abort();
    }
    iobufs[0] = g_malloc(MAX_IO);
    iobufs[1] = g_malloc(MAX_IO);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Fuzz fz = { 0 };
    Op ops[MAX_OPS];
    const uint8_t *trailer;
    size_t nops, img_len;
    MemFile *img;

    if (size < TRAILER_LEN) {
        return 0;
    }
    trailer = data + size - TRAILER_LEN;
    nops = MIN((size_t)trailer[5] % (MAX_OPS + 1), (size - TRAILER_LEN) / OP_LEN);
    img_len = size - TRAILER_LEN - nops * OP_LEN;
    for (size_t i = 0; i < nops; i++) {
        decode_op(data + img_len + i * OP_LEN, &ops[i]);
    }
    fz.fault_ops = trailer[0];
    fz.fault_after = trailer[1];
    fz.tflags = trailer[3];
    fz.snapshot = trailer[4];
    fz.flags = fz.tflags & F_READ_ONLY ? 0 : BDRV_O_RDWR;
    memfile_yield = fz.tflags & F_YIELD;

    img = memfile_new(IMG_NAME);
    load_image(img, data, img_len);
    if (fz.tflags & F_BACKING) {
        make_backing(trailer[2]);
    }

    fz.blk = open_image(&fz);
    for (size_t i = 0; fz.blk && i < nops; i++) {
        if ((ops[i].kind & 0xf) % OP__MAX == OP_REOPEN) {
            blk_unref(fz.blk);
            /* aux bit 0: come back read-only (only if we were read-write) */
            if (ops[i].aux & 1) {
                fz.flags &= ~BDRV_O_RDWR;
            }
            fz.blk = open_image(&fz);
            continue;
        }
        if ((ops[i].kind & 0x80) && i + 1 < nops &&
            (ops[i + 1].kind & 0xf) % OP__MAX != OP_REOPEN) {
            run_ops(&fz, &ops[i], 2);
            i++;
        } else {
            run_ops(&fz, &ops[i], 1);
        }
    }
    if (fz.blk) {
        blk_unref(fz.blk);
    }
    memfile_clear();
    return 0;
}
