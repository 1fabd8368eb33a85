/* qcow2-overlap.c - qcow2 metadata-overlap protection: before a write lands on the image file,
 * check that it cannot destroy metadata (header, L1/L2 tables, refcount table and blocks,
 * snapshot table, snapshot L1 and L2 tables, bitmap directory and tables); on a hit mark the
 * image corrupt, stop writing and say how to repair it.
 *
 * Refcounts are only as good as the image: with one damaged refcount the allocator can hand out
 * a cluster that holds the L1 table, and the next L2 table written there destroys every mapping.
 * So every write to a newly allocated cluster, and every metadata write, asks qcow2_pre_write
 * first.  In-place guest writes to clusters already mapped are not checked (that is the fast
 * path; such clusters were checked when they were allocated).
 *
 * Cost: the header, the active L1 table and the refcount table are single ranges; the L2 tables
 * and refcount blocks are sorted sets of cluster indices, built from the in-memory tables and
 * kept up to date as entries change (an insertion per new table); the snapshot structures
 * never change while blkfuse has the image open, so they are sorted arrays built at open, with
 * the bitmap directory and tables (rebuilt when a directory update moves them).  A
 * check is a few comparisons and three bisections, whatever the image's size.  Memory: one
 * index per L1 and refcount table entry in use, at most the size of those tables.
 *
 * Threads: coroutines with BDRVQcow2State.lock held; qcow2_overlap_find is pure.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "block/qcow2.h"
#include "block/util.h"

/* Budget for the snapshots' L2 tables: L1 bytes read at open, and L2 tables remembered. */
#define SNAP_L1_READ_MAX    (64ULL * 1024 * 1024)
#define SNAP_L2_MAX         (1024 * 1024)

const char *qcow2_meta_name(Qcow2Meta kind)
{
    switch (kind) {
    case QCOW2_META_HEADER:    return "qcow2 header";
    case QCOW2_META_L1:        return "active L1 table";
    case QCOW2_META_L2:        return "active L2 table";
    case QCOW2_META_REFTABLE:  return "refcount table";
    case QCOW2_META_REFBLOCK:  return "refcount block";
    case QCOW2_META_SNAPSHOTS: return "snapshot table";
    case QCOW2_META_SNAP_L1:   return "snapshot L1 table";
    case QCOW2_META_SNAP_L2:   return "snapshot L2 table";
    case QCOW2_META_BITMAP_DIR:   return "bitmap directory";
    case QCOW2_META_BITMAP_TABLE: return "bitmap table";
    default:                   return "nothing";
    }
}

/* --- the check --- */

/* Does the structure at [off, off + len) share a cluster with clusters [first, last]? */
static bool range_hits(const BDRVQcow2State *s, uint64_t off, uint64_t len, uint64_t first,
                       uint64_t last)
{
    uint64_t a, b;

    if (len == 0) {
        return false;
    }
    a = off >> s->cluster_bits;
    b = (off + len - 1) >> s->cluster_bits;
    return a <= last && first <= b;
}

/* --- sorted sets of cluster indices --- */

/* First element of the sorted array a[0..n) that is >= key (n if none). */
static size_t lower_bound(const uint64_t *a, size_t n, uint64_t key)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < key) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static void set_insert(Qcow2ClusterSet *c, uint64_t x)
{
    size_t i = lower_bound(c->v, c->n, x);

    if (c->n == c->cap) {
        c->cap = MAX(c->cap * 2, 16);
        c->v = g_renew(uint64_t, c->v, c->cap);
    }
    memmove(c->v + i + 1, c->v + i, (c->n - i) * sizeof(*c->v));
    c->v[i] = x;
    c->n++;
}

/* Remove one instance of x, if there is one. */
static void set_remove(Qcow2ClusterSet *c, uint64_t x)
{
    size_t i = lower_bound(c->v, c->n, x);

    if (i < c->n && c->v[i] == x) {
        memmove(c->v + i, c->v + i + 1, (c->n - i - 1) * sizeof(*c->v));
        c->n--;
    }
}

/* The first element of c in [first, last] other than skip; false if none. */
static bool set_hit(const Qcow2ClusterSet *c, uint64_t first, uint64_t last, uint64_t skip,
                    uint64_t *hit)
{
    for (size_t i = lower_bound(c->v, c->n, first); i < c->n && c->v[i] <= last; i++) {
        if (c->v[i] != skip) {
            *hit = c->v[i];
            return true;
        }
    }
    return false;
}

static void set_free(Qcow2ClusterSet *c)
{
    g_free(c->v);
    memset(c, 0, sizeof(*c));
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The clusters the entries of table[0..n) point to (masked); 0 (no table) is left out. */
static void set_build(Qcow2ClusterSet *c, const BDRVQcow2State *s, const uint64_t *table,
                      size_t n, uint64_t mask)
{
    c->n = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t ci = (table[i] & mask) >> s->cluster_bits;
        if (!ci) {
            continue;
        }
        if (c->n == c->cap) {
            c->cap = MAX(c->cap * 2, 16);
            c->v = g_renew(uint64_t, c->v, c->cap);
        }
        c->v[c->n++] = ci;
    }
    if (c->n > 1) {             /* (qsort must not get NULL, even for no elements) */
        qsort(c->v, c->n, sizeof(*c->v), cmp_u64);
    }
}

static const Qcow2MetaRange *find_static(const BDRVQcow2State *s, uint64_t first, uint64_t last)
{
    size_t lo = 0, hi = s->n_static_meta;

    /* the first range that ends at or after `first` (ranges are sorted and disjoint) */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->static_meta[mid].last < first) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo < s->n_static_meta && s->static_meta[lo].first <= last) {
        return &s->static_meta[lo];
    }
    return NULL;
}

Qcow2Meta qcow2_overlap_find(const BDRVQcow2State *s, Qcow2Meta self, uint64_t offset,
                             uint64_t bytes, uint64_t *hit_off, uint64_t *hit_len)
{
    uint64_t first, last, self_ci, ci;
    const Qcow2MetaRange *r;

    *hit_off = *hit_len = 0;
    if (bytes == 0) {
        return QCOW2_META_NONE;
    }
    first = offset >> s->cluster_bits;
    last = (offset + bytes - 1) >> s->cluster_bits;
    self_ci = offset >> s->cluster_bits;     /* the cluster of an L2 table or refcount block */

    if (self != QCOW2_META_HEADER && first == 0) {
        *hit_len = s->cluster_size;
        return QCOW2_META_HEADER;
    }
    if (self != QCOW2_META_L1 && range_hits(s, s->l1_table_offset, (uint64_t)s->l1_size * 8,
                                            first, last)) {
        *hit_off = s->l1_table_offset;
        *hit_len = (uint64_t)s->l1_size * 8;
        return QCOW2_META_L1;
    }
    if (self != QCOW2_META_REFTABLE &&
        range_hits(s, s->refcount_table_offset, (uint64_t)s->refcount_table_size * 8, first,
                   last)) {
        *hit_off = s->refcount_table_offset;
        *hit_len = (uint64_t)s->refcount_table_size * 8;
        return QCOW2_META_REFTABLE;
    }
    r = find_static(s, first, last);
    if (r) {
        *hit_off = r->first << s->cluster_bits;
        *hit_len = (r->last - r->first + 1) << s->cluster_bits;
        return r->kind;
    }
    if (set_hit(&s->l2_set, first, last, self == QCOW2_META_L2 ? self_ci : 0, &ci)) {
        *hit_off = ci << s->cluster_bits;
        *hit_len = s->cluster_size;
        return QCOW2_META_L2;
    }
    if (set_hit(&s->rb_set, first, last, self == QCOW2_META_REFBLOCK ? self_ci : 0, &ci)) {
        *hit_off = ci << s->cluster_bits;
        *hit_len = s->cluster_size;
        return QCOW2_META_REFBLOCK;
    }
    if (set_hit(&s->snap_l2, first, last, 0, &ci)) {
        *hit_off = ci << s->cluster_bits;
        *hit_len = s->cluster_size;
        return QCOW2_META_SNAP_L2;
    }
    return QCOW2_META_NONE;
}

int coroutine_fn qcow2_pre_write(BlockDriverState *bs, Qcow2Meta self, const char *what,
                                 uint64_t offset, uint64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t hit_off, hit_len;
    Qcow2Meta hit;
    g_autofree char *why = NULL;

    if (s->corrupt_stop) {
        return -EIO;
    }
    if (!s->sets_built || s->sets_l1_offset != s->l1_table_offset ||
        s->sets_rt_offset != s->refcount_table_offset) {
        qcow2_overlap_refresh(s);
    }
    hit = qcow2_overlap_find(s, self, offset, bytes, &hit_off, &hit_len);
    if (hit == QCOW2_META_NONE) {
        return 0;
    }
    why = g_strdup_printf("prevented a write of %s at %#" G_GINT64_MODIFIER "x (%"
                          G_GUINT64_FORMAT " bytes) over the %s at %#" G_GINT64_MODIFIER "x (%"
                          G_GUINT64_FORMAT " bytes)", what, offset, bytes, qcow2_meta_name(hit),
                          hit_off, hit_len);
    qcow2_signal_corruption(bs, why);
    return -EIO;
}

int coroutine_fn qcow2_meta_pwrite(BlockDriverState *bs, Qcow2Meta self, const char *what,
                                   uint64_t offset, uint64_t bytes, const void *buf)
{
    int ret = qcow2_pre_write(bs, self, what, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    return bdrv_co_pwrite(bs->file->bs, offset, bytes, buf, 0);
}

void coroutine_fn qcow2_signal_corruption(BlockDriverState *bs, const char *why)
{
    BDRVQcow2State *s = bs->opaque;
    const char *marked = "marked corrupt";
    int ret = 0;

    if (s->corrupt_stop) {
        return;
    }
    /* From here on nothing but the corrupt bit reaches the file: writes fail, dirty tables
     * are forgotten unwritten, flush and close write nothing.  Reads go on from what is in
     * the image. */
    s->corrupt_stop = true;
    if (qcow2_cache_drop_dirty(s->l2_cache) > 0) {
        s->lost_writes = true;  /* mappings of acknowledged writes: the next flush says so */
    }
    qcow2_cache_drop_dirty(s->rb_cache);   /* only leaks (or, lazy: dirty bit set already) */
    g_array_set_size(s->pending_frees, 0);
    __atomic_store_n(&s->read_only, true, __ATOMIC_RELEASE);
    __atomic_store_n(&bs->read_only, true, __ATOMIC_RELEASE);

    if (s->version >= 3) {
        uint8_t buf[8];

        stbe64(buf, s->incompat | QCOW2_INCOMPAT_CORRUPT);
        ret = bdrv_co_pwrite(bs->file->bs, QCOW2_HDR_INCOMPAT, 8, buf, 0);
        if (ret == 0) {
            ret = bdrv_co_flush(bs->file->bs);
        }
        if (ret == 0) {
            s->incompat |= QCOW2_INCOMPAT_CORRUPT;
        } else {
            marked = "could not be marked corrupt";
        }
    } else {
        marked = "cannot be marked corrupt (qcow2 version 2)";
    }
    s->incompat |= QCOW2_INCOMPAT_CORRUPT;      /* for info, even if not on disk */
    log_error("%s: qcow2: %s; the image is damaged, %s and now read-only: run 'blkfuse check "
              "-r all' (or 'qemu-img check -r all') on it%s%s", bs->filename, why, marked,
              ret < 0 ? ": " : "", ret < 0 ? g_strerror(-ret) : "");
}

/* --- the immutable sets, built at open --- */

static int cmp_range(const void *a, const void *b)
{
    const Qcow2MetaRange *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

/* Sort and unique a[0..n); returns the new n. */
static size_t sort_unique(uint64_t *a, size_t n)
{
    size_t k = 0;

    if (n > 1) {
        qsort(a, n, sizeof(*a), cmp_u64);
    }
    for (size_t i = 0; i < n; i++) {
        if (k == 0 || a[i] != a[k - 1]) {
            a[k++] = a[i];
        }
    }
    return k;
}

static void add_range(GArray *ranges, const BDRVQcow2State *s, uint64_t off, uint64_t len,
                      Qcow2Meta kind)
{
    Qcow2MetaRange r;

    if (len == 0) {
        return;
    }
    r.first = off >> s->cluster_bits;
    r.last = (off + len - 1) >> s->cluster_bits;
    r.kind = kind;
    g_array_append_val(ranges, r);
}

/* Sort and merge overlapping ranges (a damaged image may have them; the first kind stays). */
static void build_static_ranges(BDRVQcow2State *s)
{
    GArray *ranges = g_array_new(FALSE, FALSE, sizeof(Qcow2MetaRange));
    size_t k = 0;
    Qcow2MetaRange *r;

    if (s->nb_snapshots) {
        add_range(ranges, s, s->snapshots_offset, s->snapshots_size, QCOW2_META_SNAPSHOTS);
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        add_range(ranges, s, s->snapshots[i].l1_table_offset,
                  (uint64_t)s->snapshots[i].l1_size * 8, QCOW2_META_SNAP_L1);
    }
    if (s->nb_bitmaps) {
        add_range(ranges, s, s->bitmap_dir_offset, s->bitmap_dir_size, QCOW2_META_BITMAP_DIR);
    }
    for (guint i = 0; s->bitmaps && i < s->bitmaps->len; i++) {
        Qcow2Bitmap *bm = g_ptr_array_index(s->bitmaps, i);
        add_range(ranges, s, bm->table_offset, (uint64_t)bm->table_size * 8,
                  QCOW2_META_BITMAP_TABLE);
    }
    r = (Qcow2MetaRange *)ranges->data;
    if (ranges->len > 1) {
        qsort(r, ranges->len, sizeof(*r), cmp_range);
    }
    for (guint i = 0; i < ranges->len; i++) {
        if (k && r[i].first <= r[k - 1].last) {
            r[k - 1].last = MAX(r[k - 1].last, r[i].last);
        } else {
            r[k++] = r[i];
        }
    }
    s->n_static_meta = k;
    s->static_meta = (Qcow2MetaRange *)g_array_free(ranges, FALSE);
}

/* Merge the sorted unique arrays a[0..na) and b[0..nb) into a new array. */
static uint64_t *merge_unique(const uint64_t *a, size_t na, const uint64_t *b, size_t nb,
                              size_t *n)
{
    uint64_t *out = g_new(uint64_t, na + nb + 1);
    size_t i = 0, j = 0, k = 0;

    while (i < na || j < nb) {
        uint64_t v = j >= nb || (i < na && a[i] <= b[j]) ? a[i++] : b[j++];
        if (k == 0 || out[k - 1] != v) {
            out[k++] = v;
        }
    }
    *n = k;
    return out;
}

/* The L2 tables of every snapshot, within the budget; false (with the reason logged) when the
 * budget does not allow it or a snapshot L1 table cannot be read. */
static bool coroutine_fn build_snap_l2(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t total = 0;
    uint64_t *set = NULL;
    size_t n = 0;

    set_free(&s->snap_l2);
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        total += (uint64_t)s->snapshots[i].l1_size * 8;
    }
    if (total > SNAP_L1_READ_MAX) {
        log_info("%s: qcow2: the L1 tables of %u snapshots take %" G_GUINT64_FORMAT " bytes: "
                 "their L2 tables are not checked against overlapping writes", bs->filename,
                 s->nb_snapshots, total);
        return false;
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        Qcow2Snapshot *sn = &s->snapshots[i];
        uint64_t bytes = (uint64_t)sn->l1_size * 8;
        uint64_t *l1, *merged;
        size_t m = 0, nm;
        int ret;

        if (!bytes) {
            continue;
        }
        l1 = blk_blockalign(bytes);
        ret = bdrv_co_pread(bs->file->bs, sn->l1_table_offset, bytes, l1, 0);
        if (ret < 0) {
            blk_vfree(l1);
            g_free(set);
            log_warning("%s: qcow2: cannot read the L1 table of snapshot '%s' (%s): the "
                        "snapshots' L2 tables are not checked against overlapping writes",
                        bs->filename, sn->name, g_strerror(-ret));
            return false;
        }
        for (uint32_t j = 0; j < sn->l1_size; j++) {
            uint64_t off = GUINT64_FROM_BE(l1[j]) & L1E_OFFSET_MASK;
            if (off) {
                l1[m++] = off >> s->cluster_bits;
            }
        }
        m = sort_unique(l1, m);
        merged = merge_unique(set, n, l1, m, &nm);
        blk_vfree(l1);
        g_free(set);
        set = merged;
        n = nm;
        if (n > SNAP_L2_MAX) {
            g_free(set);
            log_info("%s: qcow2: the snapshots have more than %d L2 tables: they are not "
                     "checked against overlapping writes", bs->filename, SNAP_L2_MAX);
            return false;
        }
    }
    s->snap_l2.v = set ? set : g_new(uint64_t, 1);
    s->snap_l2.n = s->snap_l2.cap = n;
    return true;
}

void qcow2_overlap_refresh(BDRVQcow2State *s)
{
    set_build(&s->l2_set, s, s->l1_table, s->l1_size, L1E_OFFSET_MASK);
    set_build(&s->rb_set, s, s->refcount_table, s->refcount_table_size, REFT_OFFSET_MASK);
    s->sets_l1_offset = s->l1_table_offset;
    s->sets_rt_offset = s->refcount_table_offset;
    s->sets_built = true;
}

/* A table entry that pointed to cluster o (0: none) now points to cluster n. */
static void set_replace(Qcow2ClusterSet *set, uint64_t o, uint64_t n)
{
    if (o == n) {
        return;
    }
    if (o) {
        set_remove(set, o);
    }
    if (n) {
        set_insert(set, n);
    }
}

void qcow2_overlap_l1_changed(BDRVQcow2State *s, uint64_t old, uint64_t new)
{
    set_replace(&s->l2_set, (old & L1E_OFFSET_MASK) >> s->cluster_bits,
                (new & L1E_OFFSET_MASK) >> s->cluster_bits);
}

void qcow2_overlap_reftable_changed(BDRVQcow2State *s, uint64_t old, uint64_t new)
{
    set_replace(&s->rb_set, (old & REFT_OFFSET_MASK) >> s->cluster_bits,
                (new & REFT_OFFSET_MASK) >> s->cluster_bits);
}

void coroutine_fn qcow2_overlap_init(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    /* nothing here fails the open: a budget overrun only narrows the set */
    qcow2_overlap_free(s);
    qcow2_overlap_refresh(s);
    build_static_ranges(s);
    build_snap_l2(bs);
}

void qcow2_overlap_static_refresh(BDRVQcow2State *s)
{
    g_free(s->static_meta);
    s->static_meta = NULL;
    s->n_static_meta = 0;
    build_static_ranges(s);
}

void qcow2_overlap_free(BDRVQcow2State *s)
{
    g_free(s->static_meta);
    s->static_meta = NULL;
    s->n_static_meta = 0;
    set_free(&s->snap_l2);
    set_free(&s->l2_set);
    set_free(&s->rb_set);
    s->sets_built = false;
}
