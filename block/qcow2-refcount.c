/* qcow2-refcount.c - qcow2 refcounts: refcount get/update for every refcount width, cluster
 * allocation (growing the refcount table), deferred frees, the crash-safe metadata flush.
 * (The metadata table caches are in qcow2-cache.c, the repair of dirty images in
 * qcow2-check.c.)
 *
 * Threads: everything here runs in coroutines with BDRVQcow2State.lock held.
 *
 * Ordering rules (crash safety): nothing on disk points at anything not on disk yet.
 *  - a cluster's refcount is written and flushed to disk before any L1/L2 entry that references
 *    it (qcow2_pre_l2_write, called before every L1/L2 write; lazy refcount mode sets the dirty
 *    bit instead);
 *  - a new table is written and flushed before what points to it, in every mode: an L2 table
 *    before its L1 entry, a refcount block (and its own refcount) before its refcount table
 *    entry, an L1 or refcount table before the header;
 *  - the contents of a cluster an L2 entry is about to point to (the data written there, its
 *    copy-on-write fill, reserved space) are flushed before the L2 table is written
 *    (l2_needs_flush, every mode);
 *  - a refcount is decremented only after the metadata that referenced the cluster has been
 *    rewritten and flushed (qcow2_free_deferred queues, qcow2_flush_metadata applies).
 * Each allocation path states its order where it enforces it: qcow2_get_l2_for_write,
 * write_alloc, qcow2_grow_l1, qcow2_preallocate / qcow2_reserve (qcow2-cluster.c),
 * ensure_refblock and grow_reftable (here), the resize functions (qcow2.c).
 */
#include <errno.h>
#include <string.h>
#include "block/qcow2.h"
#include "block/util.h"

/* --- pure refcount block arithmetic --- */

uint64_t qcow2_refblock_get(const void *block, int order, uint64_t idx)
{
    const uint8_t *b = block;

    switch (order) {
    case 0: case 1: case 2: {
        int bits = 1 << order;
        uint64_t bit = idx * bits;
        return (b[bit / 8] >> (bit % 8)) & ((1U << bits) - 1);
    }
    case 3:
        return b[idx];
    case 4:
        return ldbe16(b + idx * 2);
    case 5:
        return ldbe32(b + idx * 4);
    default:
        return ldbe64(b + idx * 8);
    }
}

void qcow2_refblock_set(void *block, int order, uint64_t idx, uint64_t value)
{
    uint8_t *b = block;

    switch (order) {
    case 0: case 1: case 2: {
        int bits = 1 << order;
        uint64_t bit = idx * bits;
        uint8_t mask = ((1U << bits) - 1) << (bit % 8);
        b[bit / 8] = (b[bit / 8] & ~mask) | ((value << (bit % 8)) & mask);
        break;
    }
    case 3:
        b[idx] = value;
        break;
    case 4:
        stbe16(b + idx * 2, value);
        break;
    case 5:
        stbe32(b + idx * 4, value);
        break;
    default:
        stbe64(b + idx * 8, value);
        break;
    }
}

/* --- header --- */

int coroutine_fn qcow2_write_header_field(BlockDriverState *bs, int offset, int len,
                                          uint64_t value)
{
    uint8_t buf[8];

    if (len == 8) {
        stbe64(buf, value);
    } else if (len == 4) {
        stbe32(buf, value);
    } else {
        return -EINVAL;
    }
    return qcow2_meta_pwrite(bs, QCOW2_META_HEADER, "the header", offset, len, buf);
}

int coroutine_fn qcow2_mark_dirty(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (s->dirty_set || (s->incompat & QCOW2_INCOMPAT_DIRTY)) {
        s->dirty_set = true;
        return 0;
    }
    ret = qcow2_flush_file(bs);
    if (ret < 0) {
        return ret;
    }
    ret = qcow2_write_header_field(bs, QCOW2_HDR_INCOMPAT, 8, s->incompat | QCOW2_INCOMPAT_DIRTY);
    if (ret < 0) {
        return ret;
    }
    ret = qcow2_flush_file(bs);
    if (ret < 0) {
        return ret;
    }
    s->incompat |= QCOW2_INCOMPAT_DIRTY;
    s->dirty_set = true;
    return 0;
}

/* --- refcounts --- */

int coroutine_fn qcow2_get_refcount(BlockDriverState *bs, uint64_t cluster_index, uint64_t *rc)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t off = qcow2_refblock_offset(s, cluster_index);
    void *tbl;
    int ret;

    *rc = 0;
    if (!off) {
        return 0;
    }
    ret = qcow2_cache_get(bs, s->rb_cache, off, false, &tbl);
    if (ret < 0) {
        return ret;
    }
    *rc = qcow2_refblock_get(tbl, s->refcount_order,
                             cluster_index & ((1ULL << s->rb_bits) - 1));
    qcow2_cache_put(s->rb_cache, tbl);
    return 0;
}

/* Does refcount table entry ti exist and point to a refcount block? */
static bool refblock_exists(const BDRVQcow2State *s, uint64_t ti)
{
    return ti < s->refcount_table_size && (s->refcount_table[ti] & REFT_OFFSET_MASK);
}

static bool is_reserved(BDRVQcow2State *s, uint64_t ci, uint64_t *skip_to)
{
    for (int i = 0; i < s->nresv; i++) {
        if (ci >= s->resv_start[i] && ci < s->resv_end[i]) {
            *skip_to = s->resv_end[i];
            return true;
        }
    }
    return false;
}

/* First cluster index of n free, unreserved, contiguous clusters. */
static int64_t coroutine_fn find_free(BlockDriverState *bs, uint64_t n)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t ci = s->free_cluster_index;
    uint64_t start = ci, run = 0;
    uint64_t limit = (1ULL << (56 - s->cluster_bits));
    int64_t first_free = -1;
    int64_t flen = bdrv_getlength(bs->file->bs);

    /* A valid image has no refcounts far beyond the end of its file; damaged refcount
     * metadata claiming everything must not make this scan run (nearly) forever. */
    if (flen >= 0) {
        limit = MIN(limit, ((uint64_t)flen >> s->cluster_bits) + n + (1ULL << 22));
    }

    while (ci < limit) {
        uint64_t skip, ti = ci >> s->rb_bits, rc;
        int ret;

        if (is_reserved(s, ci, &skip)) {
            ci = skip;
            run = 0;
            continue;
        }
        if (!refblock_exists(s, ti)) {
            rc = 0;
        } else {
            ret = qcow2_get_refcount(bs, ci, &rc);
            if (ret < 0) {
                return ret;
            }
        }
        if (rc == 0) {
            if (first_free < 0) {
                first_free = ci;
            }
            if (run == 0) {
                start = ci;
            }
            if (++run == n) {
                if ((uint64_t)first_free == start) {
                    s->free_cluster_index = start + n;
                } else {
                    s->free_cluster_index = first_free;
                }
                return start;
            }
        } else {
            run = 0;
        }
        ci++;
    }
    return -ENOSPC;
}

static int coroutine_fn ensure_refblock(BlockDriverState *bs, uint64_t ti);

static int coroutine_fn set_reftable_entry(BlockDriverState *bs, uint64_t ti, uint64_t off)
{
    BDRVQcow2State *s = bs->opaque;
    uint8_t buf[8];
    int ret;

    stbe64(buf, off);
    ret = qcow2_meta_pwrite(bs, QCOW2_META_REFTABLE, "a refcount table entry",
                            s->refcount_table_offset + ti * 8, 8, buf);
    if (ret < 0) {
        return ret;
    }
    qcow2_overlap_reftable_changed(s, s->refcount_table[ti], off);
    s->refcount_table[ti] = off;
    s->rc_unsynced = true;
    return 0;
}

int coroutine_fn qcow2_update_refcount(BlockDriverState *bs, uint64_t offset, uint64_t length,
                                       int64_t delta)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t first, last;
    void *tbl = NULL;
    uint64_t tbl_ti = UINT64_MAX;
    int ret = 0;

    if (length == 0) {
        return 0;
    }
    first = offset >> s->cluster_bits;
    last = (offset + length - 1) >> s->cluster_bits;
    for (uint64_t ci = first; ci <= last; ci++) {
        uint64_t ti = ci >> s->rb_bits;
        uint64_t idx = ci & ((1ULL << s->rb_bits) - 1);
        uint64_t v;

        if (ti != tbl_ti) {
            if (tbl) {
                qcow2_cache_put(s->rb_cache, tbl);
                tbl = NULL;
            }
            if (delta > 0) {
                ret = ensure_refblock(bs, ti);
                if (ret < 0) {
                    return ret;
                }
            } else if (!refblock_exists(s, ti)) {
                log_warning("%s: qcow2: freeing cluster %#" G_GINT64_MODIFIER "x without "
                            "refcount block", bs->filename, ci << s->cluster_bits);
                return -EIO;
            }
            ret = qcow2_cache_get(bs, s->rb_cache, s->refcount_table[ti] & REFT_OFFSET_MASK,
                                  false, &tbl);
            if (ret < 0) {
                return ret;
            }
            tbl_ti = ti;
        }
        v = qcow2_refblock_get(tbl, s->refcount_order, idx);
        if (delta < 0 && v < (uint64_t)-delta) {
            log_warning("%s: qcow2: refcount underflow at %#" G_GINT64_MODIFIER "x",
                        bs->filename, ci << s->cluster_bits);
            ret = -EIO;
            break;
        }
        if (delta > 0 && (uint64_t)delta > s->refcount_max - v) {
            ret = -ERANGE;
            break;
        }
        v += delta;
        qcow2_refblock_set(tbl, s->refcount_order, idx, v);
        qcow2_cache_mark_dirty(s->rb_cache, tbl);
        if (v == 0) {
            uint64_t coff = ci << s->cluster_bits;
            if (ci < s->free_cluster_index) {
                s->free_cluster_index = ci;
            }
            qcow2_cache_discard(s->l2_cache, coff);
            if (coff != (s->refcount_table[ti] & REFT_OFFSET_MASK)) {
                qcow2_cache_discard(s->rb_cache, coff);
            }
        }
    }
    if (tbl) {
        qcow2_cache_put(s->rb_cache, tbl);
    }
    return ret;
}

/* Where a new refcount table goes: `table_clusters` clusters of table at cluster index `start`,
 * followed by the new refcount blocks that the area itself needs (one for each refcount table
 * index in `need_ti` whose block does not exist yet). */
typedef struct ReftableArea {
    uint64_t entries;            /* entries of the new table */
    uint64_t start;              /* cluster index */
    uint64_t table_clusters;
    uint64_t new_blocks;         /* == need_ti->len */
    GArray *need_ti;             /* uint64_t */
} ReftableArea;

static uint64_t area_clusters(const ReftableArea *r)
{
    return r->table_clusters + r->new_blocks;
}

/* Find free space for a table of at least min_entries entries and the refcount blocks that
 * describe it: the blocks needed depend on where the area lands, and the table must cover
 * them, so search until the two agree. */
static int coroutine_fn plan_reftable_area(BlockDriverState *bs, uint64_t min_entries,
                                           ReftableArea *r)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t per_cluster = s->cluster_size / 8;

    r->entries = MAX(min_entries, (uint64_t)s->refcount_table_size * 3 / 2);
    r->entries = MAX(r->entries, per_cluster);
    r->entries = ROUND_UP(r->entries, per_cluster);
    r->new_blocks = 0;
    for (int iter = 0; iter < 64; iter++) {
        int64_t start;
        uint64_t first_ti, last_ti;

        r->table_clusters = r->entries / per_cluster;
        if (r->table_clusters * s->cluster_size > QCOW2_MAX_REFTABLE_BYTES * 4ULL) {
            return -EFBIG;
        }
        start = find_free(bs, area_clusters(r));
        if (start < 0) {
            return start;
        }
        r->start = start;
        first_ti = r->start >> s->rb_bits;
        last_ti = (r->start + area_clusters(r) - 1) >> s->rb_bits;
        if (last_ti >= r->entries) {
            r->entries = ROUND_UP(last_ti + 1, per_cluster);
            continue;
        }
        g_array_set_size(r->need_ti, 0);
        for (uint64_t ti = first_ti; ti <= last_ti; ti++) {
            if (!refblock_exists(s, ti)) {
                g_array_append_val(r->need_ti, ti);
            }
        }
        if (r->need_ti->len == r->new_blocks) {
            return 0;
        }
        r->new_blocks = r->need_ti->len;
    }
    return -EIO;
}

/* New refcount blocks, written before anything points at them; then the refcounts of the
 * area's clusters that existing blocks describe, and every dirty block written. */
static int coroutine_fn write_area_refcounts(BlockDriverState *bs, const ReftableArea *r,
                                             uint64_t *new_table)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t end = r->start + area_clusters(r);
    int ret;

    for (uint64_t j = 0; j < r->new_blocks; j++) {
        uint64_t ti = g_array_index(r->need_ti, uint64_t, j);
        uint64_t boff = (r->start + r->table_clusters + j) << s->cluster_bits;
        uint64_t base = ti << s->rb_bits;
        void *tbl;

        ret = qcow2_cache_get(bs, s->rb_cache, boff, true, &tbl);
        if (ret < 0) {
            return ret;
        }
        for (uint64_t ci = r->start; ci < end; ci++) {
            if ((ci >> s->rb_bits) == ti) {
                qcow2_refblock_set(tbl, s->refcount_order, ci - base, 1);
            }
        }
        ret = qcow2_cache_write(bs, s->rb_cache, tbl);
        qcow2_cache_put(s->rb_cache, tbl);
        if (ret < 0) {
            return ret;
        }
        new_table[ti] = boff;
    }
    /* Area clusters covered by existing refcount blocks. */
    for (uint64_t ci = r->start; ci < end; ci++) {
        if (refblock_exists(s, ci >> s->rb_bits)) {
            ret = qcow2_update_refcount(bs, ci << s->cluster_bits, 1, 1);
            if (ret < 0) {
                return ret;
            }
        }
    }
    return qcow2_cache_flush(bs, s->rb_cache);
}

/* Write the new table (entries in host order in new_table) in its area, then flush. */
static int coroutine_fn write_new_reftable(BlockDriverState *bs, const ReftableArea *r,
                                           uint64_t *new_table)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    for (uint64_t i = 0; i < r->entries; i++) {
        new_table[i] = GUINT64_TO_BE(new_table[i]);
    }
    ret = qcow2_meta_pwrite(bs, QCOW2_META_NONE, "a new refcount table",
                            r->start << s->cluster_bits, r->table_clusters * s->cluster_size,
                            new_table);
    for (uint64_t i = 0; i < r->entries; i++) {
        new_table[i] = GUINT64_FROM_BE(new_table[i]);
    }
    if (ret < 0) {
        return ret;
    }
    return qcow2_flush_file(bs);
}

/* The header's refcount table offset and size, written together, then flushed. */
static int coroutine_fn write_reftable_location(BlockDriverState *bs, uint64_t offset,
                                                uint32_t clusters)
{
    uint8_t hdr[QCOW2_REFTABLE_LOC_LEN];
    int ret;

    qcow2_put_reftable_loc(hdr, offset, clusters);
    ret = qcow2_meta_pwrite(bs, QCOW2_META_HEADER, "the header", QCOW2_HDR_REFTABLE_OFFSET,
                            sizeof(hdr), hdr);
    if (ret < 0) {
        return ret;
    }
    return qcow2_flush_file(bs);
}

/* The header points at the new table: take it into use and drop the old table's refcount
 * (in the cache, written with the next refcount write-back). */
static int coroutine_fn switch_to_new_reftable(BlockDriverState *bs, const ReftableArea *r,
                                               const uint64_t *new_table)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t old_off = s->refcount_table_offset;
    uint64_t old_tc = DIV_ROUND_UP((uint64_t)s->refcount_table_size * 8, s->cluster_size);

    g_free(s->refcount_table);
    s->refcount_table = g_new(uint64_t, r->entries);
    memcpy(s->refcount_table, new_table, r->entries * 8);
    s->refcount_table_size = r->entries;
    s->refcount_table_offset = r->start << s->cluster_bits;
    qcow2_overlap_refresh(s);       /* a new table */
    s->rc_unsynced = false;
    /* Nothing references the old table any more. */
    if (old_off && old_tc) {
        return qcow2_update_refcount(bs, old_off, old_tc * s->cluster_size, -1);
    }
    return 0;
}

/* Grow the refcount table to at least min_entries entries.  The new table and the refcount
 * blocks needed to describe it are placed together in free space and describe themselves.
 *
 * Write order: new refcount blocks and the refcounts of the new area in existing blocks ->
 * (flush) new table -> flush -> header (table offset and size) -> flush -> the old table's
 * refcount dropped (in the cache, written with the next refcount write-back).  A crash leaves
 * either the old table in force (the new area leaks) or the complete new one. */
static int coroutine_fn grow_reftable(BlockDriverState *bs, uint64_t min_entries)
{
    BDRVQcow2State *s = bs->opaque;
    ReftableArea r = { .need_ti = g_array_new(FALSE, FALSE, sizeof(uint64_t)) };
    uint64_t *new_table = NULL;
    int ret;

    ret = plan_reftable_area(bs, min_entries, &r);
    if (ret < 0) {
        goto out;
    }
    g_assert(s->nresv < 8);
    s->resv_start[s->nresv] = r.start;
    s->resv_end[s->nresv] = r.start + area_clusters(&r);
    s->nresv++;
    ret = qcow2_pre_write(bs, QCOW2_META_NONE, "a new refcount table",
                          r.start << s->cluster_bits, area_clusters(&r) << s->cluster_bits);
    if (ret < 0) {
        goto out_unreserve;
    }

    new_table = blk_blockalign(r.table_clusters * s->cluster_size);
    memset(new_table, 0, r.table_clusters * s->cluster_size);
    for (uint32_t i = 0; i < s->refcount_table_size; i++) {
        new_table[i] = s->refcount_table[i];
    }
    /* blocks -> (flush) table -> flush -> header -> flush -> old table freed */
    ret = write_area_refcounts(bs, &r, new_table);
    if (ret == 0) {
        ret = write_new_reftable(bs, &r, new_table);
    }
    if (ret == 0) {
        ret = write_reftable_location(bs, r.start << s->cluster_bits, r.table_clusters);
    }
    if (ret == 0) {
        ret = switch_to_new_reftable(bs, &r, new_table);
    }

out_unreserve:
    s->nresv--;
out:
    if (new_table) {
        blk_vfree(new_table);
    }
    g_array_free(r.need_ti, TRUE);
    return ret;
}

/* The first cluster of the range refcount block ti describes that no allocation has
 * reserved, or UINT64_MAX: where a block that describes itself can go (every cluster of a
 * range without a block is free). */
static uint64_t first_unreserved(BDRVQcow2State *s, uint64_t ti)
{
    uint64_t base = ti << s->rb_bits;

    for (uint64_t ci = base; ci < base + (1ULL << s->rb_bits); ci++) {
        uint64_t skip;
        if (!is_reserved(s, ci, &skip)) {
            return ci;
        }
        ci = skip - 1;
    }
    return UINT64_MAX;
}

/* Make sure refcount table entry ti points to a refcount block.
 *
 * Write order: the new block, and the refcount for it when it lives in another block's range
 * (every dirty refcount block) -> flush -> refcount table entry.  The table entry is what
 * makes the block count: until it is durable the new block is only a leak, and once it is, the
 * block and its own refcount are on disk. */
static int coroutine_fn ensure_refblock(BlockDriverState *bs, uint64_t ti)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t b, boff;
    void *tbl;
    int ret;

    if (ti >= s->refcount_table_size) {
        ret = grow_reftable(bs, ti + 1);
        if (ret < 0) {
            return ret;
        }
    }
    if (s->refcount_table[ti] & REFT_OFFSET_MASK) {
        return 0;
    }

    /* Prefer a block that describes itself; else one allocated elsewhere. */
    b = first_unreserved(s, ti);
    if (b != UINT64_MAX) {
        boff = b << s->cluster_bits;
    } else {
        int64_t off = qcow2_alloc_clusters(bs, 1);
        if (off < 0) {
            return off;
        }
        if (s->refcount_table[ti] & REFT_OFFSET_MASK) {
            /* the nested allocation created it after all */
            return qcow2_update_refcount(bs, off, s->cluster_size, -1);
        }
        boff = off;
    }
    ret = qcow2_cache_get_new(bs, s->rb_cache, boff, "a new refcount block", &tbl);
    if (ret < 0) {
        return ret;
    }
    if (b != UINT64_MAX) {
        qcow2_refblock_set(tbl, s->refcount_order, b - (ti << s->rb_bits), 1);
    }
    ret = qcow2_cache_write(bs, s->rb_cache, tbl);
    qcow2_cache_put(s->rb_cache, tbl);
    if (ret == 0) {
        /* the block that counts the new one, when it is not the new one itself */
        ret = qcow2_cache_flush(bs, s->rb_cache);
    }
    if (ret < 0) {
        return ret;
    }
    ret = qcow2_flush_file(bs);
    if (ret < 0) {
        return ret;
    }
    return set_reftable_entry(bs, ti, boff);
}

int64_t coroutine_fn qcow2_alloc_clusters(BlockDriverState *bs, uint64_t n)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t start;
    int ret = 0;

    if (n == 0) {
        return -EINVAL;
    }
    if (s->nresv >= 6) {
        return -EIO;
    }
    start = find_free(bs, n);
    if (start < 0) {
        return start;
    }
    s->resv_start[s->nresv] = start;
    s->resv_end[s->nresv] = start + n;
    s->nresv++;
    for (uint64_t ti = start >> s->rb_bits; ti <= (start + n - 1) >> s->rb_bits; ti++) {
        ret = ensure_refblock(bs, ti);
        if (ret < 0) {
            goto out;
        }
    }
    ret = qcow2_update_refcount(bs, (uint64_t)start << s->cluster_bits, n << s->cluster_bits, 1);
out:
    s->nresv--;
    if (ret < 0) {
        return ret;
    }
    if (s->free_cluster_index < (uint64_t)start + n && s->free_cluster_index >= (uint64_t)start) {
        s->free_cluster_index = start + n;
    }
    return (int64_t)start << s->cluster_bits;
}

void qcow2_free_deferred(BlockDriverState *bs, uint64_t offset, uint64_t length)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2PendingFree f = { .offset = offset, .length = length };

    if (length) {
        g_array_append_val(s->pending_frees, f);
    }
}

void qcow2_free_l2_entry(BlockDriverState *bs, uint64_t entry)
{
    BDRVQcow2State *s = bs->opaque;

    if (entry & QCOW_OFLAG_COMPRESSED) {
        uint64_t host, bytes, rs, rl;
        qcow2_compressed_decode(s->cluster_bits, entry, &host, &bytes, &rs, &rl);
        qcow2_free_deferred(bs, rs, rl);
    } else if (entry & L2E_OFFSET_MASK) {
        qcow2_free_deferred(bs, entry & L2E_OFFSET_MASK, s->cluster_size);
    }
}

int64_t coroutine_fn qcow2_refcount_end(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    for (uint64_t ti = s->refcount_table_size; ti-- > 0;) {
        uint64_t off = s->refcount_table[ti] & REFT_OFFSET_MASK;
        void *tbl;
        int ret;

        if (!off) {
            continue;
        }
        ret = qcow2_cache_get(bs, s->rb_cache, off, false, &tbl);
        if (ret < 0) {
            return ret;
        }
        for (uint64_t i = 1ULL << s->rb_bits; i-- > 0;) {
            if (qcow2_refblock_get(tbl, s->refcount_order, i)) {
                qcow2_cache_put(s->rb_cache, tbl);
                return (int64_t)(((ti << s->rb_bits) + i + 1) << s->cluster_bits);
            }
        }
        qcow2_cache_put(s->rb_cache, tbl);
    }
    return 0;
}

void coroutine_fn qcow2_trim_file(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t end, flen;
    GError *err = NULL;

    if (s->grow_base < 0 || s->corrupt_stop) {
        return;
    }
    end = qcow2_refcount_end(bs);
    flen = bdrv_getlength(bs->file->bs);
    if (end < 0 || flen < 0) {
        return;
    }
    end = MAX(end, s->grow_base);
    if (end < flen && bdrv_co_truncate(bs->file->bs, end, false, PREALLOC_MODE_OFF, &err) < 0) {
        log_warning("%s: qcow2: %s", bs->filename, err->message);
        g_clear_error(&err);
        return;
    }
    s->grow_base = -1;
}

int coroutine_fn qcow2_flush_file(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = bdrv_co_flush(bs->file->bs);

    if (ret == 0) {
        s->rc_unsynced = false;
        s->l2_needs_flush = false;
    }
    return ret;
}

int coroutine_fn qcow2_pre_l2_write(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (s->lazy_refcounts) {
        /* refcounts may lag; the dirty bit (durable before this write) says so */
        ret = qcow2_mark_dirty(bs);
        if (ret < 0) {
            return ret;
        }
    } else if (qcow2_cache_has_dirty(s->rb_cache)) {
        ret = qcow2_cache_flush(bs, s->rb_cache);
        if (ret < 0) {
            return ret;
        }
    }
    /* Refcount blocks just written (default mode), and in every mode the clusters that the
     * entries will newly point to (data, copy-on-write fill, reserved space), are made
     * durable first. */
    if ((s->rc_unsynced && !s->lazy_refcounts) || s->l2_needs_flush) {
        ret = qcow2_flush_file(bs);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

int coroutine_fn qcow2_flush_metadata(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (qcow2_is_read_only(s)) {
        return 0;
    }
    if (qcow2_cache_has_dirty(s->l2_cache)) {
        ret = qcow2_pre_l2_write(bs);
        if (ret < 0) {
            return ret;
        }
        ret = qcow2_cache_flush(bs, s->l2_cache);
        if (ret < 0) {
            return ret;
        }
    }
    if (s->pending_frees->len && s->inflight_writes == 0) {
        GArray *frees = s->pending_frees;

        ret = qcow2_flush_file(bs);
        if (ret < 0) {
            return ret;
        }
        s->pending_frees = g_array_new(FALSE, FALSE, sizeof(Qcow2PendingFree));
        for (guint i = 0; i < frees->len; i++) {
            Qcow2PendingFree *f = &g_array_index(frees, Qcow2PendingFree, i);
            ret = qcow2_update_refcount(bs, f->offset, f->length, -1);
            if (ret < 0) {
                log_warning("%s: qcow2: cannot free clusters at %#" G_GINT64_MODIFIER "x: %s",
                            bs->filename, f->offset, g_strerror(-ret));
            }
        }
        g_array_free(frees, TRUE);
    }
    ret = qcow2_cache_flush(bs, s->rb_cache);
    if (ret < 0) {
        return ret;
    }
    return 0;
}
