/* qcow2-check.c - qcow2 consistency check and repair: `blkfuse check`, which finds and repairs
 * what `qemu-img check` does, with the same findings, counts and wording.
 *
 * How it works: every structure that holds a cluster (header, L1 and L2 tables of the active
 * layer and of each snapshot, data and compressed clusters, the snapshot table, the bitmap
 * directory, tables and data, the refcount table and blocks) is counted in an in-memory table
 * of references, one counter per host cluster.  The refcounts on disk are then compared with
 * those references: a refcount above the references is a leak, below is a corruption.  Last,
 * the COPIED flag of every active L1 and L2 entry must say whether its cluster's refcount is
 * exactly 1.  Entries are checked on the way: alignment, reserved bits, extended L2 bitmaps,
 * references past the end of the file.
 *
 * Repairs (fix): a refcount is set to its references (leaks with BDRV_FIX_LEAKS, too-low ones
 * with BDRV_FIX_ERRORS); a refcount of 0 for a cluster in use, or broken refcount blocks, need
 * the whole refcount structure rebuilt from the references (BDRV_FIX_ERRORS): new refcount
 * blocks and table go into free clusters, become durable, and only then does the header point
 * to them (the old ones are then leaks, freed at once).  COPIED flags are corrected in place;
 * misaligned preallocated (zero) clusters become plain zero clusters.  Data is never moved or
 * dropped.  What cannot be repaired (misaligned data clusters, references past the end of the
 * file, reserved bits) stays reported, as with qemu-img.
 *
 * The check reads and writes the image file directly (bs->file), not through the driver's
 * metadata caches, and drops those caches when it changed anything.  It runs on an image
 * opened with BDRV_O_CHECK, whose open loaded the header, L1 table, refcount table and
 * snapshot list without judging them.
 *
 * Memory: one 32-bit counter per cluster of the file (a 64 KiB-cluster image of 1 TiB needs
 * 64 MiB), a few cluster-sized buffers and one L1 table at a time.  No offset read from the
 * image indexes anything before it is bounded by the file's size; tables past the end of the
 * file read as zeros.  So damage costs findings, never a crash or a huge allocation.
 *
 * The same check with every repair runs when a dirty image (lazy refcounts, not closed
 * cleanly) is opened read-write: qcow2_rebuild_refcounts, as QEMU does on opening.
 *
 * Threads: main thread, in a coroutine (bdrv_check, or the open), with the image used by
 * nothing else.
 *
 * The semantics (what is counted, what is a finding, in which words, what each mode repairs)
 * follow qemu-img check 7.2 as observed on damaged images; the code is blkfuse's own.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "block/progress.h"
#include "block/qcow2.h"
#include "block/util.h"

/* Bits of a standard (not compressed) L2 entry that must be zero: 1-8 and 56-61. */
#define L2E_STD_RESERVED_MASK   0x3f000000000001feULL
#define RB_SLOTS                16      /* refcount blocks kept in memory */
#define BME_TABLE_RESERVED      0xff000000000001feULL   /* bitmap table entry: bits 1-8, 56-63 */

typedef struct RbSlot {
    uint64_t offset;            /* host offset of the block (its key: two table entries may
                                 * point to one block in a damaged image) */
    uint8_t *buf;               /* NULL: slot unused */
    bool dirty;
    uint64_t lru;
} RbSlot;

typedef struct Check {
    BlockDriverState *bs;
    BDRVQcow2State *s;
    BdrvCheckResult *res;
    BdrvCheckMode fix;
    int64_t file_len;
    uint32_t *refs;             /* references per host cluster */
    uint64_t nb;                /* clusters that refs describes (the file's, or more) */
    uint64_t cap;               /* entries allocated in refs */
    uint64_t ref_limit;         /* highest count a refcount can hold (capped at 2^32 - 1) */
    uint64_t free_hint;         /* no cluster before this is free in refs (rebuild) */
    GArray *avoid;              /* AvoidRange: referenced clusters past the end of the file */
    uint64_t avoid_from;        /* lowest cluster of those ranges */
    bool rebuild;               /* the refcount structure must be rebuilt */
    bool changed;               /* the image was written */
    RbSlot rb[RB_SLOTS];
    uint64_t rb_clock;
} Check;

/* Frag info is counted for the active L1 table only. */
enum { WALK_FRAG_INFO = 1 };

/* A range of clusters past the end of the file that an entry refers to (not counted, being
 * past the end): a rebuild must not put refcount blocks there, where that entry would find
 * them.  Only the ranges near the end of the file are kept (a rebuild grows the file by a few
 * clusters), and at most AVOID_MAX of them. */
#define AVOID_MAX               4096
#define AVOID_NEAR              (1ULL << 30)

typedef struct AvoidRange {
    uint64_t first, end;        /* clusters [first, end) */
} AvoidRange;

static void G_GNUC_PRINTF(2, 3) report(Check *c, const char *fmt, ...)
{
    g_autofree char *line = NULL;
    va_list ap;

    if (!c->res->report) {
        return;
    }
    va_start(ap, fmt);
    line = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    c->res->report(c->res->report_opaque, line);
}

/* --- the in-memory reference table --- */

/* Make refs describe at least `need` clusters (new ones with no references). */
static int refs_grow(Check *c, uint64_t need)
{
    uint64_t n = MAX(need, c->cap + c->cap / 4);
    uint32_t *p;

    if (need <= c->nb) {
        return 0;
    }
    if (need > INT32_MAX) {
        return -EFBIG;          /* as qemu-img: more clusters than it can count */
    }
    if (need > c->cap) {
        n = MIN(n, (uint64_t)INT32_MAX);
        p = g_try_renew(uint32_t, c->refs, n);
        if (!p) {
            return -ENOMEM;
        }
        memset(p + c->cap, 0, (n - c->cap) * sizeof(*p));
        c->refs = p;
        c->cap = n;
    }
    c->nb = need;
    return 0;
}

/* Count one reference on every cluster of [offset, offset + size). */
static int count_ref(Check *c, uint64_t offset, uint64_t size)
{
    BDRVQcow2State *s = c->s;
    uint64_t first, last;

    if (size == 0) {
        return 0;
    }
    /* The last cluster may be partly past the end of the file; anything further is not. */
    if (offset > (uint64_t)INT64_MAX - size ||
        (int64_t)(offset + size) - c->file_len >= (int64_t)s->cluster_size) {
        report(c, "ERROR: counting reference for region exceeding the end of the file by one "
               "cluster or more: offset 0x%" PRIx64 " size 0x%" PRIx64, offset, size);
        c->res->corruptions++;
        if (offset <= (uint64_t)INT64_MAX - size &&
            offset < (uint64_t)c->file_len + AVOID_NEAR && c->avoid->len < AVOID_MAX) {
            AvoidRange r = { offset >> s->cluster_bits,
                             ((offset + size - 1) >> s->cluster_bits) + 1 };
            g_array_append_val(c->avoid, r);
            c->avoid_from = MIN(c->avoid_from, r.first);
        }
        return 0;
    }
    first = offset >> s->cluster_bits;
    last = (offset + size - 1) >> s->cluster_bits;
    if (last >= c->nb) {
        int ret = refs_grow(c, last + 1);
        if (ret < 0) {
            c->res->check_errors++;
            return ret;
        }
    }
    for (uint64_t k = first; k <= last; k++) {
        if (c->refs[k] >= c->ref_limit) {
            report(c, "ERROR: overflow cluster offset=0x%" PRIx64, k << s->cluster_bits);
            report(c, "Use qemu-img amend to increase the refcount entry width or qemu-img "
                   "convert to create a clean copy if the image cannot be opened for writing");
            c->res->corruptions++;
            continue;
        }
        c->refs[k]++;
    }
    return 0;
}

/* --- refcounts on disk --- */

static void rb_drop_all(Check *c)
{
    for (int i = 0; i < RB_SLOTS; i++) {
        if (c->rb[i].buf) {
            blk_vfree(c->rb[i].buf);
        }
        c->rb[i].buf = NULL;
        c->rb[i].dirty = false;
    }
}

static int coroutine_fn rb_write(Check *c, RbSlot *slot)
{
    int ret;

    if (!slot->dirty) {
        return 0;
    }
    ret = bdrv_co_pwrite(c->bs->file->bs, slot->offset, c->s->cluster_size, slot->buf, 0);
    if (ret < 0) {
        return ret;
    }
    slot->dirty = false;
    c->changed = true;
    return 0;
}

static int coroutine_fn rb_flush(Check *c)
{
    for (int i = 0; i < RB_SLOTS; i++) {
        if (c->rb[i].buf) {
            int ret = rb_write(c, &c->rb[i]);
            if (ret < 0) {
                return ret;
            }
        }
    }
    return 0;
}

/* The refcount block holding cluster ci's refcount; *slot NULL if it has none (refcount 0). */
static int coroutine_fn rb_lookup(Check *c, uint64_t ci, RbSlot **slot)
{
    BDRVQcow2State *s = c->s;
    uint64_t off = qcow2_refblock_offset(s, ci);
    RbSlot *victim = NULL;
    int ret;

    *slot = NULL;
    if (!off) {
        return 0;
    }
    if (off & (s->cluster_size - 1)) {
        return -EIO;
    }
    for (int i = 0; i < RB_SLOTS; i++) {
        RbSlot *x = &c->rb[i];
        if (x->buf && x->offset == off) {
            x->lru = ++c->rb_clock;
            *slot = x;
            return 0;
        }
        if (!victim || !x->buf || (victim->buf && x->lru < victim->lru)) {
            victim = x;
        }
    }
    if (victim->buf) {
        ret = rb_write(c, victim);
        if (ret < 0) {
            return ret;
        }
    } else {
        victim->buf = blk_blockalign(s->cluster_size);
    }
    victim->dirty = false;
    /* A block past the end of the file reads as zeros. */
    ret = bdrv_co_pread(c->bs->file->bs, off, s->cluster_size, victim->buf, 0);
    if (ret < 0) {
        blk_vfree(victim->buf);
        victim->buf = NULL;
        return ret;
    }
    victim->offset = off;
    victim->lru = ++c->rb_clock;
    *slot = victim;
    return 0;
}

static int coroutine_fn get_refcount(Check *c, uint64_t ci, uint64_t *rc)
{
    RbSlot *slot;
    int ret = rb_lookup(c, ci, &slot);

    *rc = 0;
    if (ret < 0 || !slot) {
        return ret;
    }
    *rc = qcow2_refblock_get(slot->buf, c->s->refcount_order,
                             ci & ((1ULL << c->s->rb_bits) - 1));
    return 0;
}

/* Set an existing refcount (its block must exist: the cluster had a refcount). */
static int coroutine_fn set_refcount(Check *c, uint64_t ci, uint64_t value)
{
    RbSlot *slot;
    int ret = rb_lookup(c, ci, &slot);

    if (ret < 0) {
        return ret;
    }
    if (!slot || value > c->s->refcount_max) {
        return -EIO;
    }
    qcow2_refblock_set(slot->buf, c->s->refcount_order, ci & ((1ULL << c->s->rb_bits) - 1),
                       value);
    slot->dirty = true;
    return 0;
}

/* --- walking the tables --- */

/* Clear a misaligned preallocated cluster's entry to a plain zero cluster (repair). */
static int coroutine_fn zero_l2_entry(Check *c, uint64_t l2_offset, uint8_t *l2, uint32_t i)
{
    BDRVQcow2State *s = c->s;
    size_t pos = (size_t)i * s->l2_entry_size;
    int ret;

    qcow2_l2_set(s, l2, i, s->ext_l2 ? 0 : QCOW_OFLAG_ZERO,
                 s->ext_l2 ? QCOW2_BITMAP_ZERO_ALL : 0);
    ret = bdrv_co_pwrite(c->bs->file->bs, l2_offset + pos, s->l2_entry_size, l2 + pos, 0);
    if (ret == 0) {
        c->changed = true;
    }
    return ret;
}

static int coroutine_fn walk_compressed(Check *c, uint64_t entry, uint64_t bitmap, uint32_t i,
                                        int flags)
{
    BDRVQcow2State *s = c->s;
    uint64_t host, bytes, rs, rl;

    if (entry & QCOW_OFLAG_COPIED) {
        report(c, "ERROR: coffset=0x%" PRIx64 ": copied flag must never be set for compressed "
               "clusters", entry & s->cluster_offset_mask);
        entry &= ~QCOW_OFLAG_COPIED;
        c->res->corruptions++;
    }
    if (bitmap) {
        report(c, "ERROR compressed cluster %u with non-zero subcluster allocation bitmap, "
               "entry=0x%" PRIx64, i, entry);
        c->res->corruptions++;
        return 0;
    }
    qcow2_compressed_decode(s->cluster_bits, entry, &host, &bytes, &rs, &rl);
    if (flags & WALK_FRAG_INFO) {
        /* compressed clusters share sectors: fragmented by nature */
        c->res->allocated_clusters++;
        c->res->compressed_clusters++;
        c->res->fragmented_clusters++;
    }
    return count_ref(c, host, rs + rl - host);
}

/* A normal or preallocated-zero cluster.  Returns 1 if the entry was cleared (repair). */
static int coroutine_fn walk_allocated(Check *c, uint64_t l2_offset, uint8_t *l2, uint32_t i,
                                       int flags, uint64_t *next_contiguous)
{
    BDRVQcow2State *s = c->s;
    uint64_t entry = qcow2_l2_entry(s, l2, i);
    uint64_t bitmap = qcow2_l2_bitmap(s, l2, i);
    uint64_t offset = entry & L2E_OFFSET_MASK;

    if ((bitmap >> 32) & bitmap) {
        report(c, "ERROR offset=%" PRIx64 ": Allocated cluster has corrupted subcluster "
               "allocation bitmap", offset);
        c->res->corruptions++;
    }
    if (offset & (s->cluster_size - 1)) {
        bool has_data = s->ext_l2 ? (bitmap & QCOW2_BITMAP_ALLOC_ALL) != 0 :
                                    !(entry & QCOW_OFLAG_ZERO);

        c->res->corruptions++;
        if (has_data) {
            report(c, "ERROR offset=%" PRIx64 ": Data cluster is not properly aligned; L2 "
                   "entry corrupted.", offset);
        } else {
            bool repair = c->fix & BDRV_FIX_ERRORS;
            report(c, "%s offset=%" PRIx64 ": Preallocated cluster is not properly aligned; "
                   "L2 entry corrupted.", repair ? "Repairing" : "ERROR", offset);
            if (repair) {
                int ret = zero_l2_entry(c, l2_offset, l2, i);
                if (ret < 0) {
                    report(c, "ERROR: Could not write L2 table: %s", g_strerror(-ret));
                    c->res->check_errors++;
                    return ret;
                }
                c->res->corruptions--;
                c->res->corruptions_fixed++;
                return 1;       /* nothing references the cluster any more */
            }
        }
    }
    if (flags & WALK_FRAG_INFO) {
        c->res->allocated_clusters++;
        if (*next_contiguous && offset != *next_contiguous) {
            c->res->fragmented_clusters++;
        }
        *next_contiguous = offset + s->cluster_size;
    }
    return count_ref(c, offset, s->cluster_size);
}

static int coroutine_fn walk_l2(Check *c, uint64_t l2_offset, uint8_t *l2, int flags)
{
    BDRVQcow2State *s = c->s;
    uint64_t next_contiguous = 0;
    int ret;

    ret = bdrv_co_pread(c->bs->file->bs, l2_offset, s->cluster_size, l2, 0);
    if (ret < 0) {
        report(c, "ERROR: I/O error in check_refcounts_l2");
        c->res->check_errors++;
        return ret;
    }
    for (uint32_t i = 0; i < s->l2_size; i++) {
        uint64_t entry = qcow2_l2_entry(s, l2, i);
        uint64_t bitmap = qcow2_l2_bitmap(s, l2, i);

        if (!(entry & QCOW_OFLAG_COMPRESSED) && (entry & L2E_STD_RESERVED_MASK)) {
            report(c, "ERROR found l2 entry with reserved bits set: %" PRIx64, entry);
            c->res->corruptions++;
        }
        ret = 0;
        if (entry & QCOW_OFLAG_COMPRESSED) {
            ret = walk_compressed(c, entry, bitmap, i, flags);
        } else if (entry & L2E_OFFSET_MASK) {
            /* normal, or preallocated zero */
            ret = walk_allocated(c, l2_offset, l2, i, flags, &next_contiguous);
        } else if ((s->ext_l2 || !(entry & QCOW_OFLAG_ZERO)) &&
                   (bitmap & QCOW2_BITMAP_ALLOC_ALL)) {
            report(c, "ERROR: Unallocated cluster has non-zero subcluster allocation map");
            c->res->corruptions++;
        }
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* Count an L1 table (active or a snapshot's), its L2 tables and what they reference. */
static int coroutine_fn walk_l1(Check *c, uint64_t l1_offset, uint32_t l1_size, int flags)
{
    BDRVQcow2State *s = c->s;
    uint64_t bytes = (uint64_t)l1_size * 8;
    g_autofree uint64_t *l1 = NULL;
    uint8_t *l2;
    int ret;

    ret = count_ref(c, l1_offset, bytes);
    if (ret < 0 || !l1_size) {
        return ret;
    }
    l1 = g_try_malloc(bytes);
    if (!l1) {
        c->res->check_errors++;
        return -ENOMEM;
    }
    ret = bdrv_co_pread(c->bs->file->bs, l1_offset, bytes, l1, 0);
    if (ret < 0) {
        report(c, "ERROR: I/O error in check_refcounts_l1");
        c->res->check_errors++;
        return ret;
    }
    l2 = blk_blockalign(s->cluster_size);
    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t entry = GUINT64_FROM_BE(l1[i]);
        uint64_t l2_offset = entry & L1E_OFFSET_MASK;

        if (flags & WALK_FRAG_INFO) {
            /* The active table's walk is most of a check: 0 to 80 %. */
            block_progress_report((uint64_t)i * 4, (uint64_t)l1_size * 5);
        }

        if (!entry) {
            continue;
        }
        if (entry & L1E_RESERVED_MASK) {
            report(c, "ERROR found L1 entry with reserved bits set: %" PRIx64, entry);
            c->res->corruptions++;
        }
        ret = count_ref(c, l2_offset, s->cluster_size);
        if (ret < 0) {
            break;
        }
        if (l2_offset & (s->cluster_size - 1)) {
            report(c, "ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; L1 entry "
                   "corrupted", l2_offset);
            c->res->corruptions++;
        }
        ret = walk_l2(c, l2_offset, l2, flags);
        if (ret < 0) {
            break;
        }
    }
    blk_vfree(l2);
    return ret;
}

/* The refcount blocks: each must lie in the file and be referenced exactly once. */
static int coroutine_fn walk_refblocks(Check *c)
{
    BDRVQcow2State *s = c->s;

    for (uint64_t i = 0; i < s->refcount_table_size; i++) {
        uint64_t offset = s->refcount_table[i] & REFT_OFFSET_MASK;
        uint64_t cluster = offset >> s->cluster_bits;
        int ret;

        if (s->refcount_table[i] & ~REFT_OFFSET_MASK) {
            report(c, "ERROR refcount table entry %" PRIu64 " has reserved bits set", i);
            c->res->corruptions++;
            c->rebuild = true;
            continue;
        }
        if (offset & (s->cluster_size - 1)) {
            report(c, "ERROR refcount block %" PRIu64 " is not cluster aligned; refcount table "
                   "entry corrupted", i);
            c->res->corruptions++;
            c->rebuild = true;
            continue;
        }
        if (cluster >= c->nb) {
            bool repair = c->fix & BDRV_FIX_ERRORS;

            report(c, "%s refcount block %" PRIu64 " is outside image",
                   repair ? "Repairing" : "ERROR", i);
            if (repair) {
                /* Grow the file over it, as qemu-img does: the block then reads as zeros
                 * (and the refcounts it should hold are rebuilt, being 0 for clusters in
                 * use).  Not by more than the file's size or 1 GiB: a wild offset would
                 * make a huge sparse file; that block is rebuilt elsewhere instead. */
                g_autoptr(GError) err = NULL;
                uint64_t limit = (uint64_t)c->file_len + MAX((uint64_t)c->file_len, 1ULL << 30);
                ret = -EFBIG;
                if (offset < limit && (offset >> s->cluster_bits) < INT32_MAX) {
                    ret = bdrv_co_truncate(c->bs->file->bs, offset + s->cluster_size, false,
                                           PREALLOC_MODE_OFF, &err);
                }
                if (ret == 0) {
                    c->changed = true;
                    c->file_len = bdrv_getlength(c->bs->file->bs);
                    ret = c->file_len < 0 ? (int)c->file_len :
                          refs_grow(c, DIV_ROUND_UP((uint64_t)c->file_len, s->cluster_size));
                }
                if (ret == 0) {
                    c->res->corruptions_fixed++;
                    ret = count_ref(c, offset, s->cluster_size);
                    if (ret < 0) {
                        return ret;
                    }
                    continue;
                }
                report(c, "ERROR could not resize image: %s", g_strerror(-ret));
                c->rebuild = true;
            }
            c->res->corruptions++;
            continue;
        }
        if (offset) {
            ret = count_ref(c, offset, s->cluster_size);
            if (ret < 0) {
                return ret;
            }
            if (cluster < c->nb && c->refs[cluster] != 1) {
                report(c, "ERROR refcount block %" PRIu64 " refcount=%u", i, c->refs[cluster]);
                c->res->corruptions++;
                c->rebuild = true;
            }
        }
    }
    return 0;
}

/* Count the bitmap directory, the bitmap tables and the bitmap data (when the bitmaps
 * extension is valid and consistent: otherwise QEMU ignores the bitmaps, and so their
 * clusters are leaks).  A directory or table that cannot be read as one is a corruption. */
static int coroutine_fn count_bitmaps(Check *c)
{
    BDRVQcow2State *s = c->s;
    g_autofree uint8_t *dir = NULL;
    g_autoptr(GPtrArray) list = NULL;
    g_autoptr(GError) err = NULL;
    int ret;

    if (!s->nb_bitmaps) {
        return 0;
    }
    ret = count_ref(c, s->bitmap_dir_offset, s->bitmap_dir_size);
    if (ret < 0 || s->bitmap_dir_offset + s->bitmap_dir_size > (uint64_t)c->file_len) {
        return ret;     /* past the end: reported by count_ref */
    }
    dir = g_malloc(s->bitmap_dir_size);
    ret = bdrv_co_pread(c->bs->file->bs, s->bitmap_dir_offset, s->bitmap_dir_size, dir, 0);
    if (ret < 0) {
        report(c, "ERROR cannot read the bitmap directory: %s", g_strerror(-ret));
        c->res->check_errors++;
        return 0;
    }
    list = qcow2_bitmaps_parse_dir(s, dir, s->bitmap_dir_size, s->nb_bitmaps, s->size, &err);
    if (!list) {
        report(c, "ERROR bitmap directory: %s", err->message);
        c->res->corruptions++;
        return 0;
    }
    for (guint i = 0; i < list->len; i++) {
        Qcow2Bitmap *bm = g_ptr_array_index(list, i);
        uint64_t bytes = (uint64_t)bm->table_size * 8;
        g_autofree uint64_t *table = NULL;

        ret = count_ref(c, bm->table_offset, bytes);
        if (ret < 0) {
            return ret;
        }
        if (bm->table_offset + bytes > (uint64_t)c->file_len) {
            continue;
        }
        table = g_malloc(bytes);
        ret = bdrv_co_pread(c->bs->file->bs, bm->table_offset, bytes, table, 0);
        if (ret < 0) {
            report(c, "ERROR cannot read the table of bitmap '%s': %s", bm->name,
                   g_strerror(-ret));
            c->res->check_errors++;
            continue;
        }
        for (uint32_t j = 0; j < bm->table_size; j++) {
            uint64_t e = GUINT64_FROM_BE(table[j]);
            uint64_t off = e & L2E_OFFSET_MASK;

            if ((e & BME_TABLE_RESERVED) ||
                (off && ((e & 1) || (off & (s->cluster_size - 1))))) {
                report(c, "ERROR bitmap '%s': invalid bitmap table entry %u: %#" PRIx64,
                       bm->name, j, e);
                c->res->corruptions++;
                continue;
            }
            if (off) {
                ret = count_ref(c, off, s->cluster_size);
                if (ret < 0) {
                    return ret;
                }
            }
        }
    }
    return 0;
}

/* Count every reference in the image into c->refs (zeroed first). */
static int coroutine_fn count_all(Check *c)
{
    BDRVQcow2State *s = c->s;
    int ret;

    memset(c->refs, 0, c->nb * sizeof(*c->refs));
    ret = count_ref(c, 0, s->cluster_size);                 /* header */
    if (ret == 0) {
        ret = walk_l1(c, s->l1_table_offset, s->l1_size, WALK_FRAG_INFO);
    }
    for (uint32_t i = 0; ret == 0 && i < s->nb_snapshots; i++) {
        Qcow2Snapshot *sn = &s->snapshots[i];

        if (sn->l1_table_offset & (s->cluster_size - 1)) {
            report(c, "ERROR snapshot %s (%s) l1_offset=%#" PRIx64 ": L1 table is not cluster "
                   "aligned; snapshot table entry corrupted", sn->id, sn->name,
                   sn->l1_table_offset);
            c->res->corruptions++;
            continue;
        }
        if ((uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
            report(c, "ERROR snapshot %s (%s) l1_size=%#" PRIx32 ": L1 table is too large; "
                   "snapshot table entry corrupted", sn->id, sn->name, sn->l1_size);
            c->res->corruptions++;
            continue;
        }
        ret = walk_l1(c, sn->l1_table_offset, sn->l1_size, 0);
    }
    if (ret == 0) {
        ret = count_ref(c, s->snapshots_offset, s->snapshots_size);
    }
    if (ret == 0) {
        ret = count_bitmaps(c);
    }
    if (ret == 0) {
        ret = count_ref(c, s->refcount_table_offset, (uint64_t)s->refcount_table_size * 8);
    }
    if (ret == 0) {
        ret = walk_refblocks(c);
    }
    return ret;
}

/* Compare the refcounts on disk with the references; repair what fix allows.  Sets
 * c->rebuild when a cluster in use has refcount 0 (only a rebuild can repair that). */
static int coroutine_fn compare_refcounts(Check *c, BdrvCheckMode fix, uint64_t *highest)
{
    *highest = 0;
    for (uint64_t i = 0; i < c->nb; i++) {
        uint64_t rc, ref = c->refs[i];
        int64_t *fixed = NULL;
        int ret = get_refcount(c, i, &rc);

        if ((i & 0xffff) == 0) {
            block_progress_report(c->nb * 4 + i, c->nb * 5);       /* 80 to 100 % */
        }

        if (ret < 0) {
            report(c, "Can't get refcount for cluster %" PRIu64 ": %s", i, g_strerror(-ret));
            c->res->check_errors++;
            continue;
        }
        if (rc || ref) {
            *highest = i;
        }
        if (rc == ref) {
            continue;
        }
        if (rc == 0) {
            c->rebuild = true;
        } else if (rc > ref && (fix & BDRV_FIX_LEAKS)) {
            fixed = &c->res->leaks_fixed;
        } else if (rc < ref && (fix & BDRV_FIX_ERRORS)) {
            fixed = &c->res->corruptions_fixed;
        }
        report(c, "%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
               fixed ? "Repairing" : rc < ref ? "ERROR" : "Leaked", i, rc, ref);
        if (fixed && set_refcount(c, i, ref) == 0) {
            (*fixed)++;
            continue;
        }
        if (rc < ref) {
            c->res->corruptions++;
        } else {
            c->res->leaks++;
        }
    }
    return rb_flush(c);
}

/* --- rebuilding the refcount structure --- */

/* The first cluster from start on where n clusters overlap no avoided range. */
static uint64_t skip_avoided(Check *c, uint64_t start, uint64_t n)
{
    bool moved = c->avoid->len > 0;

    while (moved) {
        moved = false;
        for (guint i = 0; i < c->avoid->len; i++) {
            AvoidRange *r = &g_array_index(c->avoid, AvoidRange, i);
            if (start < r->end && r->first < start + n) {
                start = r->end;
                moved = true;
            }
        }
    }
    return start;
}

/* First run of n clusters free in c->refs, marked used (refcount 1); grows c->refs. */
static int64_t alloc_free_run(Check *c, uint64_t n)
{
    uint64_t run = 0, start = 0, i;
    bool gap_seen = false;
    int ret;

    for (i = c->free_hint; i < c->nb && run < n; i++) {
        if (c->refs[i] || (i >= c->avoid_from && skip_avoided(c, i, 1) != i)) {
            run = 0;
        } else if (run++ == 0) {
            start = i;
            if (!gap_seen) {
                c->free_hint = i;
                gap_seen = true;
            }
        }
    }
    if (run < n) {
        if (run == 0) {
            start = c->nb;
        }
        start = skip_avoided(c, start, n);
        ret = refs_grow(c, start + n);
        if (ret < 0) {
            return ret;
        }
    }
    for (i = start; i < start + n; i++) {
        c->refs[i] = 1;
    }
    return start;
}

/* Where a new refcount structure goes: blocks[b] is the host cluster of refcount block b (0:
 * none needed), the table takes table_clusters clusters from table_at.  Placing them makes
 * them counted in c->refs, which may need more blocks or a larger table: repeat until
 * nothing changes. */
typedef struct NewRefcounts {
    uint64_t *blocks;
    uint64_t nblocks;
    uint64_t table_at;
    uint64_t table_clusters;
} NewRefcounts;

static int place_refcounts(Check *c, NewRefcounts *n)
{
    BDRVQcow2State *s = c->s;
    uint64_t per_block = 1ULL << s->rb_bits;
    uint64_t per_table_cluster = s->cluster_size / 8;
    bool again = true;

    c->free_hint = 0;           /* refs was counted afresh */
    for (int iter = 0; again && iter < 64; iter++) {
        uint64_t need = DIV_ROUND_UP(c->nb, per_block), tc;

        again = false;
        if (need > n->nblocks) {
            uint64_t *p = g_try_renew(uint64_t, n->blocks, need);
            if (!p) {
                return -ENOMEM;
            }
            memset(p + n->nblocks, 0, (need - n->nblocks) * sizeof(*p));
            n->blocks = p;
            n->nblocks = need;
        }
        for (uint64_t b = 0; b < n->nblocks; b++) {
            bool used = false;
            for (uint64_t k = b * per_block; k < MIN((b + 1) * per_block, c->nb) && !used; k++) {
                used = c->refs[k] != 0;
            }
            if (used && !n->blocks[b]) {
                int64_t at = alloc_free_run(c, 1);
                if (at < 0) {
                    return at;
                }
                n->blocks[b] = at;
                again = true;
            }
        }
        tc = DIV_ROUND_UP(n->nblocks, per_table_cluster);
        if (tc > n->table_clusters) {
            int64_t at;
            for (uint64_t k = 0; k < n->table_clusters; k++) {
                c->refs[n->table_at + k] = 0;       /* too small: give it back */
            }
            if (n->table_clusters) {
                c->free_hint = MIN(c->free_hint, n->table_at);
            }
            at = alloc_free_run(c, tc);
            if (at < 0) {
                return at;
            }
            n->table_at = at;
            n->table_clusters = tc;
            again = true;
        }
    }
    if (again || n->table_clusters * s->cluster_size > QCOW2_MAX_REFTABLE_BYTES) {
        return -EFBIG;
    }
    return 0;
}

/* Write the new refcount blocks (placed in n) with the refcounts of c->refs. */
static int coroutine_fn write_new_refblocks(Check *c, const NewRefcounts *n)
{
    BDRVQcow2State *s = c->s;
    uint64_t per_block = 1ULL << s->rb_bits;
    uint8_t *buf = blk_blockalign(s->cluster_size);
    int ret = 0;

    for (uint64_t b = 0; b < n->nblocks; b++) {
        if (!n->blocks[b]) {
            continue;
        }
        memset(buf, 0, s->cluster_size);
        for (uint64_t k = b * per_block; k < MIN((b + 1) * per_block, c->nb); k++) {
            qcow2_refblock_set(buf, s->refcount_order, k - b * per_block,
                               MIN(c->refs[k], s->refcount_max));
        }
        ret = bdrv_co_pwrite(c->bs->file->bs, n->blocks[b] << s->cluster_bits, s->cluster_size,
                             buf, 0);
        if (ret < 0) {
            report(c, "ERROR writing refblock: %s", g_strerror(-ret));
            break;
        }
        c->changed = true;
    }
    blk_vfree(buf);
    return ret;
}

/* Write the new refcount table (on-disk byte order) -> flush -> the header's table location
 * -> flush. */
static int coroutine_fn write_new_reftable(Check *c, const NewRefcounts *n,
                                           const uint64_t *table)
{
    BDRVQcow2State *s = c->s;
    uint8_t hdr[QCOW2_REFTABLE_LOC_LEN];
    int ret;

    ret = bdrv_co_pwrite(c->bs->file->bs, n->table_at << s->cluster_bits,
                         n->table_clusters * s->cluster_size, table, 0);
    if (ret == 0) {
        ret = bdrv_co_flush(c->bs->file->bs);
    }
    if (ret < 0) {
        report(c, "ERROR writing reftable: %s", g_strerror(-ret));
        return ret;
    }
    qcow2_put_reftable_loc(hdr, n->table_at << s->cluster_bits, n->table_clusters);
    ret = bdrv_co_pwrite(c->bs->file->bs, QCOW2_HDR_REFTABLE_OFFSET, sizeof(hdr), hdr, 0);
    if (ret == 0) {
        ret = bdrv_co_flush(c->bs->file->bs);
    }
    if (ret < 0) {
        report(c, "ERROR setting reftable: %s", g_strerror(-ret));
    }
    return ret;
}

/* New refcount blocks and table from c->refs, written into free clusters (which c->refs then
 * counts), made durable, and then entered into the header; the old ones become leaks. */
static int coroutine_fn rebuild_refcounts(Check *c)
{
    BDRVQcow2State *s = c->s;
    NewRefcounts n = { 0 };
    uint64_t table_entries;
    uint64_t *table = NULL;
    int ret;

    ret = place_refcounts(c, &n);
    if (ret < 0) {
        report(c, "ERROR allocating refcount structure: %s", g_strerror(-ret));
        goto out;
    }
    table_entries = n.table_clusters * (s->cluster_size / 8);
    table = blk_blockalign(n.table_clusters * s->cluster_size);
    memset(table, 0, n.table_clusters * s->cluster_size);
    for (uint64_t b = 0; b < n.nblocks; b++) {
        table[b] = GUINT64_TO_BE(n.blocks[b] << s->cluster_bits);
    }

    /* Write the blocks, then the table, then (once both are durable) the header. */
    ret = write_new_refblocks(c, &n);
    if (ret == 0) {
        ret = write_new_reftable(c, &n, table);
    }
    if (ret < 0) {
        goto out;
    }

    /* The driver's view follows the header. */
    rb_drop_all(c);
    g_free(s->refcount_table);
    s->refcount_table = g_new(uint64_t, table_entries);
    for (uint64_t i = 0; i < table_entries; i++) {
        s->refcount_table[i] = GUINT64_FROM_BE(table[i]);
    }
    s->refcount_table_size = table_entries;
    s->refcount_table_offset = n.table_at << s->cluster_bits;
    s->free_cluster_index = 0;

out:
    g_free(n.blocks);
    if (table) {
        blk_vfree(table);
    }
    if (ret < 0) {
        c->res->check_errors++;
    }
    return ret;
}

/* --- the COPIED flags --- */

static int coroutine_fn write_l1_entry(Check *c, uint32_t i)
{
    uint8_t buf[8];
    int ret;

    stbe64(buf, c->s->l1_table[i]);
    ret = bdrv_co_pwrite(c->bs->file->bs, c->s->l1_table_offset + (uint64_t)i * 8, 8, buf, 0);
    if (ret == 0) {
        c->changed = true;
    }
    return ret;
}

/* Every active L1 and L2 entry has COPIED set exactly when its cluster's refcount is 1. */
static int coroutine_fn check_copied(Check *c, BdrvCheckMode fix)
{
    BDRVQcow2State *s = c->s;
    BdrvCheckResult *res = c->res;
    uint8_t *l2 = blk_blockalign(s->cluster_size);
    bool repair;
    int ret = 0;

    /* Without FIX_ERRORS, repair only when the refcounts are known good: they were just
     * repaired, or nothing was wrong with them. */
    repair = (fix & BDRV_FIX_ERRORS) ||
             ((fix & BDRV_FIX_LEAKS) && !res->check_errors && !res->corruptions && !res->leaks);

    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t l1e = s->l1_table[i], l2_offset = l1e & L1E_OFFSET_MASK, rc;
        int dirty = 0;

        if (!l2_offset || get_refcount(c, l2_offset >> s->cluster_bits, &rc) < 0) {
            continue;
        }
        if ((rc == 1) != !!(l1e & QCOW_OFLAG_COPIED)) {
            res->corruptions++;
            report(c, "%s OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%" PRIx64
                   " refcount=%" PRIu64, repair ? "Repairing" : "ERROR", i, l1e, rc);
            if (repair) {
                s->l1_table[i] = rc == 1 ? l1e | QCOW_OFLAG_COPIED : l1e & ~QCOW_OFLAG_COPIED;
                ret = write_l1_entry(c, i);
                if (ret < 0) {
                    res->check_errors++;
                    break;
                }
                res->corruptions--;
                res->corruptions_fixed++;
            }
        }
        ret = bdrv_co_pread(c->bs->file->bs, l2_offset, s->cluster_size, l2, 0);
        if (ret < 0) {
            report(c, "ERROR: Could not read L2 table: %s", g_strerror(-ret));
            res->check_errors++;
            break;
        }
        for (uint32_t j = 0; j < s->l2_size; j++) {
            uint64_t e = qcow2_l2_entry(s, l2, j), data = e & L2E_OFFSET_MASK;

            if ((e & QCOW_OFLAG_COMPRESSED) || !data ||
                get_refcount(c, data >> s->cluster_bits, &rc) < 0) {
                continue;
            }
            if ((rc == 1) != !!(e & QCOW_OFLAG_COPIED)) {
                res->corruptions++;
                report(c, "%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64 " refcount=%"
                       PRIu64, repair ? "Repairing" : "ERROR", e, rc);
                if (repair) {
                    qcow2_l2_set(s, l2, j, rc == 1 ? e | QCOW_OFLAG_COPIED :
                                 e & ~QCOW_OFLAG_COPIED, qcow2_l2_bitmap(s, l2, j));
                    dirty++;
                }
            }
        }
        if (dirty) {
            ret = bdrv_co_pwrite(c->bs->file->bs, l2_offset, s->cluster_size, l2, 0);
            if (ret < 0) {
                report(c, "ERROR: Could not write L2 table: %s", g_strerror(-ret));
                res->check_errors++;
                break;
            }
            c->changed = true;
            res->corruptions -= dirty;
            res->corruptions_fixed += dirty;
        }
    }
    blk_vfree(l2);
    return ret;
}

/* --- the whole check --- */

/* Forget the driver's cached tables: the check wrote the file behind their back. */
static void drop_driver_caches(BDRVQcow2State *s)
{
    Qcow2Cache *caches[] = { s->l2_cache, s->rb_cache };

    for (size_t n = 0; n < G_N_ELEMENTS(caches); n++) {
        Qcow2Cache *cache = caches[n];
        for (int i = 0; cache && i < cache->size; i++) {
            Qcow2CacheEntry *e = &cache->entries[i];
            if (e->offset && !e->pins) {
                g_hash_table_remove(cache->index, &e->offset);
                e->offset = 0;
                e->dirty = false;
            }
        }
    }
}

/* Clear the dirty and corrupt bits: the image was found (or made) consistent. */
static int coroutine_fn mark_clean(Check *c)
{
    BDRVQcow2State *s = c->s;
    uint64_t bits = QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT;
    int ret;

    if (!(s->incompat & bits)) {
        return 0;
    }
    ret = bdrv_co_flush(c->bs->file->bs);
    if (ret == 0) {
        ret = qcow2_write_header_field(c->bs, QCOW2_HDR_INCOMPAT, 8, s->incompat & ~bits);
    }
    if (ret == 0) {
        ret = bdrv_co_flush(c->bs->file->bs);
    }
    if (ret < 0) {
        return ret;
    }
    s->incompat &= ~bits;
    s->dirty_set = false;
    c->changed = true;
    return 0;
}

/* Size c->refs for the file (which a repair may have grown). */
static int refs_for_file(Check *c)
{
    int ret;

    c->file_len = bdrv_getlength(c->bs->file->bs);
    if (c->file_len < 0) {
        return c->file_len;
    }
    ret = refs_grow(c, MAX(DIV_ROUND_UP((uint64_t)c->file_len, c->s->cluster_size), 1));
    return ret;
}

/* Replace the refcount structure by one built from the references, then count again: what
 * is still wrong is what the rebuild could not repair; the old structure's clusters are
 * leaks, freed at once (they are not counted as findings). */
static int coroutine_fn repair_by_rebuild(Check *c, uint64_t *highest)
{
    BdrvCheckResult *res = c->res;
    BdrvCheckResult found = *res, saved;
    BdrvCheckResult old_structure = { .report = res->report,
                                      .report_opaque = res->report_opaque };
    BdrvCheckMode fix = c->fix;
    int ret;

    report(c, "Rebuilding refcount structure");
    ret = rebuild_refcounts(c);
    if (ret == 0) {
        ret = refs_for_file(c);
    }
    if (ret < 0) {
        res->check_errors++;
        return ret;
    }
    res->corruptions = 0;
    res->leaks = 0;
    c->rebuild = false;
    c->fix = 0;                 /* this count only looks */
    ret = count_all(c);
    c->fix = fix;
    if (ret < 0) {
        return ret;
    }

    saved = *res;
    c->res = &old_structure;
    ret = compare_refcounts(c, BDRV_FIX_LEAKS, highest);
    c->res = res;
    *res = saved;
    if (ret < 0) {
        res->check_errors++;
        return ret;
    }
    if (res->corruptions < found.corruptions) {
        res->corruptions_fixed += found.corruptions - res->corruptions;
    }
    if (res->leaks < found.leaks) {
        res->leaks_fixed += found.leaks - res->leaks;
    }
    res->leaks += old_structure.leaks;      /* those the leak repair could not free */
    return 0;
}

/* Count, compare, repair as c->fix allows, then check the COPIED flags. */
static int coroutine_fn check_refcounts(Check *c)
{
    BDRVQcow2State *s = c->s;
    BdrvCheckResult *res = c->res;
    BdrvCheckResult before;
    uint64_t highest = 0;
    int ret;

    ret = refs_for_file(c);
    if (ret < 0) {
        res->check_errors++;
        return ret;
    }
    res->total_clusters = DIV_ROUND_UP(s->size, s->cluster_size);

    ret = count_all(c);
    if (ret < 0) {
        return ret;
    }
    before = *res;
    ret = compare_refcounts(c, 0, &highest);
    if (ret < 0) {
        res->check_errors++;
        return ret;
    }

    if (c->rebuild && (c->fix & BDRV_FIX_ERRORS)) {
        /* A second rebuild is needed when the first had to grow the file over clusters that
         * entries pointed to past its end (see AvoidRange): they are counted only now. */
        for (int pass = 0; c->rebuild && pass < 2; pass++) {
            ret = repair_by_rebuild(c, &highest);
            if (ret < 0) {
                return ret;
            }
        }
        if (c->rebuild) {
            report(c, "ERROR rebuilt refcount structure is still broken");
        }
    } else if (c->fix && c->rebuild) {
        report(c, "ERROR need to rebuild refcount structures");
        res->check_errors++;
        return -EIO;
    } else if (c->fix && (res->leaks || res->corruptions)) {
        /* compare again, repairing this time (the findings are reported again, as such) */
        *res = before;
        ret = compare_refcounts(c, c->fix, &highest);
        if (ret < 0) {
            res->check_errors++;
            return ret;
        }
    }

    ret = check_copied(c, c->fix);
    if (ret < 0) {
        return ret;
    }
    res->image_end_offset = (highest + 1) * s->cluster_size;
    return 0;
}

int coroutine_fn qcow2_co_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix)
{
    BDRVQcow2State *s = bs->opaque;
    Check c = {
        .bs = bs, .s = s, .res = res, .fix = fix,
        .ref_limit = MIN(s->refcount_max, (uint64_t)UINT32_MAX),
        .avoid = g_array_new(FALSE, FALSE, sizeof(AvoidRange)),
        .avoid_from = UINT64_MAX,
    };
    int ret;

    if (fix && s->read_only) {
        return -EROFS;
    }
    co_mutex_lock(&s->lock);
    ret = check_refcounts(&c);
    if (ret == 0 && fix && !res->check_errors && !res->corruptions) {
        ret = mark_clean(&c);
        if (ret < 0) {
            res->check_errors++;
        }
    }
    if (c.changed) {
        drop_driver_caches(s);
    }
    co_mutex_unlock(&s->lock);
    rb_drop_all(&c);
    g_free(c.refs);
    g_array_free(c.avoid, TRUE);
    return ret;
}

/* --- dirty images --- */

static void log_repair(void *opaque, const char *line)
{
    log_debug("%s: qcow2: %s", (const char *)opaque, line);
}

int coroutine_fn qcow2_rebuild_refcounts(BlockDriverState *bs, GError **errp)
{
    BdrvCheckResult res = { .report = log_repair, .report_opaque = bs->filename };
    int ret = qcow2_co_check(bs, &res, BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);

    if (ret < 0 || res.check_errors) {
        error_setg_errno(errp, ret < 0 ? ret : -EIO, "%s: qcow2: cannot repair the refcounts "
                         "of this image, which was not closed cleanly; see 'blkfuse check %s'",
                         bs->filename, bs->filename);
        return ret < 0 ? ret : -EIO;
    }
    if (res.corruptions) {
        error_setg(errp, "%s: qcow2: %" PRId64 " corruptions remain after repairing the "
                   "refcounts of this image, which was not closed cleanly; see 'blkfuse check "
                   "%s'", bs->filename, res.corruptions, bs->filename);
        return -EIO;
    }
    log_info("%s: qcow2: repaired %" PRId64 " leaked clusters and %" PRId64 " corruptions",
             bs->filename, res.leaks_fixed, res.corruptions_fixed);
    return 0;
}
