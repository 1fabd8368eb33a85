/* qcow2-cluster.c - qcow2 guest-to-host mapping: L2 entry decoding, reads through the mapping
 * (backing, zero, data, compressed), allocating writes with copy-on-write, zeroing/discard,
 * L1 growth, shrinking and metadata preallocation.
 *
 * Threads: coroutines; functions taking the lock say so, the others run with it held.
 */
#include <errno.h>
#include <string.h>
#include "config.h"
#include "block/qcow2.h"
#include "block/util.h"
#ifdef CONFIG_ZLIB
#include <zlib.h>
#endif
#ifdef CONFIG_ZSTD
#include <zstd.h>
#endif

/* --- pure decoding --- */

void qcow2_set_geometry(BDRVQcow2State *s, int cluster_bits, bool ext_l2, int refcount_order)
{
    s->cluster_bits = cluster_bits;
    s->cluster_size = 1U << cluster_bits;
    s->ext_l2 = ext_l2;
    s->l2_entry_size = ext_l2 ? 16 : 8;
    s->l2_bits = cluster_bits - (ext_l2 ? 4 : 3);
    s->l2_size = 1U << s->l2_bits;
    s->sc_bits = ext_l2 ? cluster_bits - 5 : cluster_bits;
    s->sc_size = 1U << s->sc_bits;
    s->csize_shift = 62 - (cluster_bits - 8);
    s->csize_mask = (1ULL << (cluster_bits - 8)) - 1;
    s->cluster_offset_mask = (1ULL << s->csize_shift) - 1;
    s->refcount_order = refcount_order;
    s->rb_bits = cluster_bits + 3 - refcount_order;
    s->refcount_max = refcount_order == 6 ? UINT64_MAX : (1ULL << (1 << refcount_order)) - 1;
}

Qcow2SubclusterType qcow2_sc_type(const BDRVQcow2State *s, uint64_t entry, uint64_t bitmap,
                                  int sc)
{
    uint64_t off = entry & L2E_OFFSET_MASK;

    if (entry & QCOW_OFLAG_COMPRESSED) {
        return QCOW2_SC_COMPRESSED;
    }
    if (!s->ext_l2) {
        if (entry & QCOW_OFLAG_ZERO) {
            if (s->version < 3) {
                return QCOW2_SC_INVALID;
            }
            return off ? QCOW2_SC_ZERO_ALLOC : QCOW2_SC_ZERO_PLAIN;
        }
        return off ? QCOW2_SC_NORMAL : QCOW2_SC_UNALLOC_PLAIN;
    } else {
        bool alloc = (bitmap >> sc) & 1;
        bool zero = (bitmap >> (32 + sc)) & 1;
        if (alloc && zero) {
            return QCOW2_SC_INVALID;
        }
        if (off) {
            return alloc ? QCOW2_SC_NORMAL : zero ? QCOW2_SC_ZERO_ALLOC : QCOW2_SC_UNALLOC_ALLOC;
        }
        if (alloc) {
            return QCOW2_SC_INVALID;
        }
        return zero ? QCOW2_SC_ZERO_PLAIN : QCOW2_SC_UNALLOC_PLAIN;
    }
}

void qcow2_compressed_decode(int cluster_bits, uint64_t entry, uint64_t *host, uint64_t *bytes,
                             uint64_t *ref_start, uint64_t *ref_len)
{
    int shift = 62 - (cluster_bits - 8);
    uint64_t off = entry & ((1ULL << shift) - 1);
    uint64_t nsect = ((entry >> shift) & ((1ULL << (cluster_bits - 8)) - 1)) + 1;

    *host = off;
    *ref_start = off & ~511ULL;
    *ref_len = nsect * 512;
    *bytes = *ref_start + *ref_len - off;
}

static bool sc_is_unalloc(Qcow2SubclusterType t)
{
    return t == QCOW2_SC_UNALLOC_PLAIN || t == QCOW2_SC_UNALLOC_ALLOC;
}

static bool sc_is_zero(Qcow2SubclusterType t)
{
    return t == QCOW2_SC_ZERO_PLAIN || t == QCOW2_SC_ZERO_ALLOC;
}

static bool has_backing_file(BlockDriverState *bs)
{
    return bs->backing || bs->backing_file;
}

/* --- reading --- */

int coroutine_fn qcow2_get_extent(BlockDriverState *bs, uint64_t offset, uint64_t max,
                                  Qcow2Extent *ext)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cluster = offset >> s->cluster_bits;
    uint64_t l1i = cluster >> s->l2_bits;
    uint32_t l2i = cluster & (s->l2_size - 1);
    uint64_t l1_end = (l1i + 1) << (s->l2_bits + s->cluster_bits);
    uint64_t end = MIN(offset + max, l1_end);
    uint64_t l2off, pos;
    void *table;
    int ret;

    memset(ext, 0, sizeof(*ext));
    if (l1i >= s->l1_size || !(s->l1_table[l1i] & L1E_OFFSET_MASK)) {
        ext->type = QCOW2_SC_UNALLOC_PLAIN;
        ext->bytes = end - offset;
        return 0;
    }
    l2off = s->l1_table[l1i] & L1E_OFFSET_MASK;
    if (l2off & (s->cluster_size - 1)) {
        return -EIO;
    }
    ret = qcow2_cache_get(bs, s->l2_cache, l2off, false, &table);
    if (ret < 0) {
        return ret;
    }

    pos = offset;
    for (uint32_t i = l2i; i < s->l2_size && pos < end; i++) {
        uint64_t e = qcow2_l2_entry(s, table, i);
        uint64_t bm = qcow2_l2_bitmap(s, table, i);
        uint64_t cstart = (cluster + (i - l2i)) << s->cluster_bits;
        uint64_t cend = MIN(cstart + s->cluster_size, end);

        while (pos < cend) {
            int sc = (pos - cstart) >> s->sc_bits;
            Qcow2SubclusterType t = qcow2_sc_type(s, e, bm, sc);
            uint64_t sc_end = MIN(cstart + ((uint64_t)(sc + 1) << s->sc_bits), cend);

            if (t == QCOW2_SC_INVALID) {
                if (pos == offset) {
                    ret = -EIO;
                    goto out;
                }
                goto done;
            }
            if (t == QCOW2_SC_NORMAL && ((e & L2E_OFFSET_MASK) & (s->cluster_size - 1))) {
                if (pos == offset) {
                    ret = -EIO;
                    goto out;
                }
                goto done;
            }
            if (pos == offset) {
                ext->type = t;
                ext->entry = e;
                ext->host = (e & L2E_OFFSET_MASK) + (pos - cstart);
            } else {
                if (t != ext->type || t == QCOW2_SC_COMPRESSED) {
                    goto done;
                }
                if (t == QCOW2_SC_NORMAL &&
                    (e & L2E_OFFSET_MASK) + (pos - cstart) != ext->host + (pos - offset)) {
                    goto done;
                }
            }
            pos = s->ext_l2 ? sc_end : cend;
        }
        if (ext->type == QCOW2_SC_COMPRESSED) {
            break;
        }
    }
done:
    ext->bytes = MIN(pos, end) - offset;
out:
    qcow2_cache_put(s->l2_cache, table);
    return ret;
}

int coroutine_fn qcow2_read_backing(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                    uint8_t *buf)
{
    int64_t blen;
    uint64_t n = 0;
    int ret;

    if (bs->backing) {
        blen = bdrv_getlength(bs->backing->bs);
        if (blen < 0) {
            return blen;
        }
        if (offset < (uint64_t)blen) {
            n = MIN(bytes, (uint64_t)blen - offset);
            ret = bdrv_co_pread(bs->backing->bs, offset, n, buf, 0);
            if (ret < 0) {
                return ret;
            }
        }
    }
    memset(buf + n, 0, bytes - n);
    return 0;
}

int coroutine_fn qcow2_decompress_cluster(BlockDriverState *bs, uint64_t entry, uint8_t *out)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t host, bytes, rs, rl;
    int64_t flen;
    uint8_t *in;
    int ret = 0;

    qcow2_compressed_decode(s->cluster_bits, entry, &host, &bytes, &rs, &rl);
    flen = bdrv_getlength(bs->file->bs);
    if (flen < 0) {
        return flen;
    }
    if (host >= (uint64_t)flen) {
        return -EIO;
    }
    in = blk_blockalign(bytes);
    memset(in, 0, bytes);
    ret = bdrv_co_pread(bs->file->bs, host, MIN(bytes, (uint64_t)flen - host), in, 0);
    if (ret < 0) {
        goto out;
    }
    if (s->compression_type == QCOW2_COMPRESSION_ZLIB) {
#ifdef CONFIG_ZLIB
        z_stream z;
        memset(&z, 0, sizeof(z));
        if (inflateInit2(&z, -12) != Z_OK) {
            ret = -EIO;
            goto out;
        }
        z.next_in = in;
        z.avail_in = bytes;
        z.next_out = out;
        z.avail_out = s->cluster_size;
        ret = inflate(&z, Z_FINISH);
        if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && z.avail_out == 0) {
            ret = 0;
        } else {
            ret = -EIO;
        }
        inflateEnd(&z);
#else
        ret = -ENOTSUP;
#endif
    } else if (s->compression_type == QCOW2_COMPRESSION_ZSTD) {
#ifdef CONFIG_ZSTD
        ZSTD_DCtx *dctx = ZSTD_createDCtx();
        ZSTD_inBuffer zin = { in, bytes, 0 };
        ZSTD_outBuffer zout = { out, s->cluster_size, 0 };
        size_t zr = 1;

        if (!dctx) {
            ret = -ENOMEM;
            goto out;
        }
        ret = 0;
        while (zout.pos < zout.size) {
            size_t in_pos = zin.pos, out_pos = zout.pos;
            zr = ZSTD_decompressStream(dctx, &zout, &zin);
            if (ZSTD_isError(zr) || (zin.pos == in_pos && zout.pos == out_pos)) {
                ret = -EIO;
                break;
            }
        }
        if (ret == 0 && zr > 0) {
            ret = -EIO;     /* more data than a cluster: damaged */
        }
        ZSTD_freeDCtx(dctx);
#else
        ret = -ENOTSUP;
#endif
    } else {
        ret = -ENOTSUP;
    }
out:
    blk_vfree(in);
    return ret;
}

int coroutine_fn qcow2_read_entry_range(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                        uint64_t entry, uint64_t bitmap, uint8_t *buf)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cstart = offset & ~(uint64_t)(s->cluster_size - 1);
    uint64_t pos = offset, end = offset + bytes;
    int ret;

    if (bytes == 0) {
        return 0;
    }
    if (entry & QCOW_OFLAG_COMPRESSED) {
        uint8_t *tmp = blk_blockalign(s->cluster_size);
        ret = qcow2_decompress_cluster(bs, entry, tmp);
        if (ret == 0) {
            memcpy(buf, tmp + (offset - cstart), bytes);
        }
        blk_vfree(tmp);
        return ret;
    }
    while (pos < end) {
        int sc = (pos - cstart) >> s->sc_bits;
        Qcow2SubclusterType t = qcow2_sc_type(s, entry, bitmap, sc);
        uint64_t n = MIN(end, cstart + ((uint64_t)(sc + 1) << s->sc_bits)) - pos;
        uint8_t *p = buf + (pos - offset);

        if (sc_is_unalloc(t)) {
            ret = qcow2_read_backing(bs, pos, n, p);
        } else if (sc_is_zero(t)) {
            memset(p, 0, n);
            ret = 0;
        } else if (t == QCOW2_SC_NORMAL) {
            ret = bdrv_co_pread(bs->file->bs, (entry & L2E_OFFSET_MASK) + (pos - cstart), n, p,
                                0);
        } else {
            ret = -EIO;
        }
        if (ret < 0) {
            return ret;
        }
        pos += n;
    }
    return 0;
}

/* --- L1/L2 updates --- */

/* Write L1 entry l1i; whatever it points to must be durable already. */
static int coroutine_fn write_l1_entry(BlockDriverState *bs, uint32_t l1i, uint64_t value)
{
    BDRVQcow2State *s = bs->opaque;
    uint8_t buf[8];
    int ret;

    ret = qcow2_pre_l2_write(bs);
    if (ret < 0) {
        return ret;
    }
    stbe64(buf, value);
    ret = qcow2_meta_pwrite(bs, QCOW2_META_L1, "an L1 table entry",
                            s->l1_table_offset + (uint64_t)l1i * 8, 8, buf);
    if (ret < 0) {
        return ret;
    }
    qcow2_overlap_l1_changed(s, s->l1_table[l1i], value);
    s->l1_table[l1i] = value;
    return 0;
}

/* Write order of a new or copied L2 table, in every refcount mode:
 *   the new cluster's refcount (the refcount blocks, then a flush; in lazy refcount mode the
 *   dirty bit instead) -> the new table -> flush -> the L1 entry -> at a later flush, the old
 *   table's refcount dropped.
 * The table is durable before the L1 entry points at it: a crash leaves the L1 entry pointing
 * at the old table (or none) and the new cluster leaked, never at a table that is not there. */
int coroutine_fn qcow2_get_l2_for_write(BlockDriverState *bs, uint32_t l1i, void **table)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t l1e = s->l1_table[l1i];
    uint64_t old = l1e & L1E_OFFSET_MASK;
    int64_t new;
    void *nt, *ot;
    int ret;

    if (old && (l1e & QCOW_OFLAG_COPIED)) {
        return qcow2_cache_get(bs, s->l2_cache, old, false, table);
    }
    new = qcow2_alloc_clusters(bs, 1);
    if (new < 0) {
        return new;
    }
    ret = qcow2_cache_get_new(bs, s->l2_cache, new, "a new L2 table", &nt);
    if (ret < 0) {
        return ret;
    }
    if (old) {
        ret = qcow2_cache_get(bs, s->l2_cache, old, false, &ot);
        if (ret < 0) {
            goto fail;
        }
        memcpy(nt, ot, s->cluster_size);
        qcow2_cache_put(s->l2_cache, ot);
    }
    ret = qcow2_cache_write(bs, s->l2_cache, nt);
    if (ret < 0) {
        goto fail;
    }
    ret = qcow2_flush_file(bs);
    if (ret < 0) {
        goto fail;
    }
    ret = write_l1_entry(bs, l1i, (uint64_t)new | QCOW_OFLAG_COPIED);
    if (ret < 0) {
        goto fail;
    }
    if (old) {
        qcow2_free_deferred(bs, old, s->cluster_size);
    }
    *table = nt;
    return 0;
fail:
    qcow2_cache_put(s->l2_cache, nt);
    return ret;
}

/* Mask of subclusters touched by [a, b) (offsets inside one cluster). */
static uint64_t sc_mask(BDRVQcow2State *s, uint64_t a, uint64_t b)
{
    int first, last;

    if (!s->ext_l2) {
        return 0;
    }
    first = a >> s->sc_bits;
    last = (b - 1) >> s->sc_bits;
    return ((last == 31 ? 0xffffffffULL : (1ULL << (last + 1)) - 1)) &
           ~((1ULL << first) - 1);
}

/* Does a write to the cluster of L2 entry e need a new host cluster (none, shared,
 * compressed, or damaged)? */
static bool cluster_needs_new(BDRVQcow2State *s, uint64_t e)
{
    uint64_t off = e & L2E_OFFSET_MASK;
    return !(e & QCOW_OFLAG_COPIED) || (e & QCOW_OFLAG_COMPRESSED) || !off ||
           (off & (s->cluster_size - 1));
}

/* Can a write of [a, b) of this cluster go straight to the host cluster? */
static bool write_in_place(BDRVQcow2State *s, uint64_t e, uint64_t bm, uint64_t a, uint64_t b)
{
    if (cluster_needs_new(s, e)) {
        return false;
    }
    if (!s->ext_l2) {
        return !(e & QCOW_OFLAG_ZERO);
    }
    {
        uint64_t m = sc_mask(s, a, b);
        return (bm & m) == m && !(bm & (m << 32));
    }
}

/* A run of k new host clusters at host for the guest clusters from cstart: the write covers
 * [a, (k - 1) * cs + blast) of it (offsets from cstart), and [ra, (k - 1) * cs + rb) is
 * written: the units (clusters, or subclusters with extended L2) it touches.  e0/bm0 and
 * last_e/last_bm are the old entries of the first and last cluster, for the fill. */
typedef struct Qcow2AllocRun {
    uint64_t cstart, host, k;
    uint64_t a, blast, ra, rb;
    uint64_t e0, bm0, last_e, last_bm;
} Qcow2AllocRun;

/* Write [rel, rel + len) of the run (offsets from cstart) with the fill [ra, a) and
 * [dend, rend) read from the old clusters, through a bounce buffer. */
static int coroutine_fn write_run_bounced(BlockDriverState *bs, const Qcow2AllocRun *r,
                                          uint64_t rel, uint64_t len, const uint8_t *buf)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t dend = (r->k - 1) * cs + r->blast, rend = (r->k - 1) * cs + r->rb;
    uint64_t da = MAX(rel, r->a), db = MIN(rel + len, dend);
    uint8_t *wbuf = blk_blockalign(len);
    int ret = 0;

    if (rel < r->a) {
        ret = qcow2_read_entry_range(bs, r->cstart + rel, r->a - rel, r->e0, r->bm0, wbuf);
    }
    if (ret == 0 && rel + len > dend) {
        g_assert(rel + len == rend);
        ret = qcow2_read_entry_range(bs, r->cstart + dend, rend - dend, r->last_e, r->last_bm,
                                     wbuf + (dend - rel));
    }
    if (ret == 0) {
        memcpy(wbuf + (da - rel), buf + (da - r->a), db - da);
        ret = bdrv_co_pwrite(bs->file->bs, r->host + rel, len, wbuf, 0);
    }
    blk_vfree(wbuf);
    return ret;
}

/* Write the run's data and its copy-on-write fill.  The clusters the write covers whole go
 * straight from the caller's buffer; only a first or last cluster that needs fill goes
 * through a bounce buffer (at most a cluster each), so a large allocating write costs one
 * pwrite of the caller's buffer, not a copy of it. */
static int coroutine_fn write_run_data(BlockDriverState *bs, const Qcow2AllocRun *r,
                                       const uint8_t *buf)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t dend = (r->k - 1) * cs + r->blast, rend = (r->k - 1) * cs + r->rb;
    bool head = r->ra < r->a, tail = rend > dend;
    uint64_t pos = r->a, mid_end = dend;
    int ret;

    if (!head && !tail) {
        return bdrv_co_pwrite(bs->file->bs, r->host + r->a, dend - r->a, buf, 0);
    }
    if (r->k == 1) {
        return write_run_bounced(bs, r, r->ra, rend - r->ra, buf);
    }
    if (head) {
        ret = write_run_bounced(bs, r, r->ra, cs - r->ra, buf);
        if (ret < 0) {
            return ret;
        }
        pos = cs;
    }
    if (tail) {
        mid_end = (r->k - 1) * cs;
    }
    if (mid_end > pos) {
        ret = bdrv_co_pwrite(bs->file->bs, r->host + pos, mid_end - pos, buf + (pos - r->a), 0);
        if (ret < 0) {
            return ret;
        }
    }
    if (tail) {
        return write_run_bounced(bs, r, (r->k - 1) * cs, r->rb, buf);
    }
    return 0;
}

/* The cluster at l2i is ours (allocated, not shared, not compressed): write [a, b) of it
 * (offsets from cstart, b = end clamped to the cluster) with the untouched parts of the units
 * it touches filled in, and mark those units written.  Returns bytes written or -errno. */
static int64_t coroutine_fn write_own_cluster(BlockDriverState *bs, void *table, uint32_t l2i,
                                              uint64_t cstart, uint64_t a, uint64_t end,
                                              const uint8_t *buf)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t e0 = qcow2_l2_entry(s, table, l2i), bm0 = qcow2_l2_bitmap(s, table, l2i);
    uint64_t host = e0 & L2E_OFFSET_MASK;
    uint64_t b = MIN(end - cstart, cs);
    uint64_t unit = s->ext_l2 ? s->sc_size : cs;
    uint64_t ra = ROUND_DOWN(a, unit), rb = MIN(ROUND_UP(b, unit), cs);
    uint8_t *wbuf;
    int ret;

    /* preallocated, or with subclusters not yet written: its first writes are checked
     * like a new cluster's (writes in place are not) */
    ret = qcow2_pre_write(bs, QCOW2_META_NONE, "guest data", host, cs);
    if (ret < 0) {
        return ret;
    }
    wbuf = blk_blockalign(rb - ra);
    ret = qcow2_read_entry_range(bs, cstart + ra, a - ra, e0, bm0, wbuf);
    if (ret == 0) {
        ret = qcow2_read_entry_range(bs, cstart + b, rb - b, e0, bm0, wbuf + (b - ra));
    }
    if (ret == 0) {
        memcpy(wbuf + (a - ra), buf, b - a);
        ret = bdrv_co_pwrite(bs->file->bs, host + ra, rb - ra, wbuf, 0);
    }
    blk_vfree(wbuf);
    if (ret < 0) {
        return ret;
    }
    s->l2_needs_flush = true;   /* data and fill durable before the entry changes */
    if (s->ext_l2) {
        uint64_t m = sc_mask(s, ra, rb);
        bm0 = (bm0 | m) & ~(m << 32);
        qcow2_l2_set(s, table, l2i, e0, bm0);
    } else {
        qcow2_l2_set(s, table, l2i, e0 & ~QCOW_OFLAG_ZERO, 0);
    }
    qcow2_cache_mark_dirty(s->l2_cache, table);
    return b - a;
}

/* Extend the run from the cluster at l2i over the following clusters of this L2 table that
 * the write reaches and that need new clusters too (all but the last are fully covered): one
 * allocation, one data write and one L2 update for the whole run.  Fills in everything of r
 * but host; r->cstart, r->a, r->e0 and r->bm0 are set by the caller. */
static void plan_alloc_run(BDRVQcow2State *s, const void *table, uint32_t l2i, uint64_t end,
                           Qcow2AllocRun *r)
{
    uint64_t cs = s->cluster_size;
    uint64_t k = 1;
    bool full0 = !s->ext_l2 || (r->e0 & QCOW_OFLAG_COMPRESSED) || (r->e0 & L2E_OFFSET_MASK);
    bool fulll;

    while (r->cstart + k * cs < end && l2i + k < s->l2_size &&
           cluster_needs_new(s, qcow2_l2_entry(s, table, l2i + k))) {
        k++;
    }
    r->k = k;
    r->blast = MIN(end - (r->cstart + (k - 1) * cs), cs);
    r->last_e = qcow2_l2_entry(s, table, l2i + k - 1);
    r->last_bm = qcow2_l2_bitmap(s, table, l2i + k - 1);
    fulll = !s->ext_l2 || (r->last_e & QCOW_OFLAG_COMPRESSED) || (r->last_e & L2E_OFFSET_MASK);
    r->ra = full0 ? 0 : ROUND_DOWN(r->a, s->sc_size);
    r->rb = fulll ? cs : MIN(ROUND_UP(r->blast, s->sc_size), cs);
}

/* The extended L2 bitmap of cluster j of the run, whose old entry was e/bm: the subclusters
 * written are allocated, those of an old host cluster keep their state, a compressed cluster
 * was written whole. */
static uint64_t run_entry_bitmap(BDRVQcow2State *s, const Qcow2AllocRun *r, uint64_t j,
                                 uint64_t e, uint64_t bm)
{
    uint64_t cs = s->cluster_size;
    uint64_t wa = j == 0 ? r->a : 0;
    uint64_t wb = j == r->k - 1 ? r->blast : cs;
    uint64_t m = sc_mask(s, ROUND_DOWN(wa, s->sc_size), MIN(ROUND_UP(wb, s->sc_size), cs));

    if (e & QCOW_OFLAG_COMPRESSED) {
        return QCOW2_BITMAP_ALLOC_ALL;     /* whole cluster was written */
    }
    if (e & L2E_OFFSET_MASK) {
        return (bm & QCOW2_BITMAP_ALLOC_ALL) | m | ((bm & QCOW2_BITMAP_ZERO_ALL) & ~(m << 32));
    }
    return m | ((bm & QCOW2_BITMAP_ZERO_ALL) & ~(m << 32));
}

/* The cluster at l2i needs a new host cluster: allocate one for it and the clusters after it
 * that the write also reaches (plan_alloc_run), write the data with its fill, point the L2
 * entries at them.  Returns bytes written or -errno. */
static int64_t coroutine_fn write_new_clusters(BlockDriverState *bs, void *table, uint32_t l2i,
                                               uint64_t cstart, uint64_t a, uint64_t end,
                                               const uint8_t *buf)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    Qcow2AllocRun run = { .cstart = cstart, .a = a, .e0 = qcow2_l2_entry(s, table, l2i),
                          .bm0 = qcow2_l2_bitmap(s, table, l2i) };
    int64_t host;
    int ret;

    plan_alloc_run(s, table, l2i, end, &run);
    host = qcow2_alloc_clusters(bs, run.k);
    if (host < 0) {
        return host;
    }
    ret = qcow2_pre_write(bs, QCOW2_META_NONE, "guest data", host, run.k * cs);
    if (ret < 0) {
        return ret;
    }
    qcow2_grow_file_ahead(bs, host + run.k * cs);
    run.host = host;
    ret = write_run_data(bs, &run, buf);
    if (ret < 0) {
        return ret;
    }
    s->l2_needs_flush = true;   /* data and fill durable before the entries */
    for (uint64_t j = 0; j < run.k; j++) {
        uint64_t e = qcow2_l2_entry(s, table, l2i + j);
        uint64_t bm = qcow2_l2_bitmap(s, table, l2i + j);
        uint64_t nbm = s->ext_l2 ? run_entry_bitmap(s, &run, j, e, bm) : 0;

        qcow2_l2_set(s, table, l2i + j, (host + j * cs) | QCOW_OFLAG_COPIED, nbm);
        qcow2_free_l2_entry(bs, e);
    }
    qcow2_cache_mark_dirty(s->l2_cache, table);
    return (run.k - 1) * cs + run.blast - a;
}

/* Slow path for the write at [offset, end) starting in a cluster that cannot be written in
 * place.  Handles one cluster, or a run of clusters needing new host clusters.  Lock held.
 * Returns bytes consumed or -errno.
 *
 * Write order of an allocating write: the new clusters' refcounts (cached) -> the data, with
 * the copy-on-write fill (the parts of each cluster, or with extended L2 of each subcluster,
 * that this write does not cover: from the old or compressed cluster, the backing file, or
 * zeros) -> the L2 entries (cached).  When the table is written back (qcow2_pre_l2_write):
 * dirty refcount blocks -> flush (lazy refcounts: the dirty bit instead) -> a flush in every
 * mode, for the data (l2_needs_flush) -> the L2 table -> at the next flush, the old clusters'
 * refcounts dropped.  So an L2 entry never points at a cluster whose refcount or contents are
 * not on disk yet: after a power loss the guest reads, in a range it wrote but did not flush,
 * the old or the new data -- never what the host cluster held before (another part of the
 * disk's freed data, or nothing at all past the end of the file).  In the default mode the
 * refcount flush is that flush; with lazy refcounts it is one flush per L2 write-back that
 * follows allocations. */
static int64_t coroutine_fn write_alloc(BlockDriverState *bs, uint64_t offset, uint64_t end,
                                        const uint8_t *buf)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cluster = offset >> s->cluster_bits;
    uint32_t l1i = cluster >> s->l2_bits;
    uint32_t l2i = cluster & (s->l2_size - 1);
    uint64_t cstart = cluster << s->cluster_bits;
    void *table;
    int64_t ret;

    ret = qcow2_get_l2_for_write(bs, l1i, &table);
    if (ret < 0) {
        return ret;
    }
    if (!cluster_needs_new(s, qcow2_l2_entry(s, table, l2i))) {
        ret = write_own_cluster(bs, table, l2i, cstart, offset - cstart, end, buf);
    } else {
        ret = write_new_clusters(bs, table, l2i, cstart, offset - cstart, end, buf);
    }
    qcow2_cache_put(s->l2_cache, table);
    return ret;
}

int coroutine_fn qcow2_do_pwrite(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                 const uint8_t *buf)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t ret = 0;

    while (bytes > 0) {
        uint64_t cluster = offset >> s->cluster_bits;
        uint64_t l1i = cluster >> s->l2_bits;
        uint32_t l2i = cluster & (s->l2_size - 1);
        uint64_t l1_end = (l1i + 1) << (s->l2_bits + s->cluster_bits);
        uint64_t end = MIN(offset + bytes, l1_end);
        uint64_t fast_len = 0, host = 0;

        co_mutex_lock(&s->lock);
        if (s->corrupt_stop) {
            co_mutex_unlock(&s->lock);
            return -EROFS;      /* found corrupt while this request waited */
        }
        if (l1i >= s->l1_size) {
            ret = qcow2_grow_l1(bs, l1i + 1);
            if (ret < 0) {
                co_mutex_unlock(&s->lock);
                return ret;
            }
        }
        if ((s->l1_table[l1i] & QCOW_OFLAG_COPIED) && (s->l1_table[l1i] & L1E_OFFSET_MASK)) {
            void *table;
            ret = qcow2_cache_get(bs, s->l2_cache, s->l1_table[l1i] & L1E_OFFSET_MASK, false,
                                  &table);
            if (ret < 0) {
                co_mutex_unlock(&s->lock);
                return ret;
            }
            for (uint32_t i = l2i; i < s->l2_size; i++) {
                uint64_t cstart = (cluster + (i - l2i)) << s->cluster_bits;
                uint64_t pos = offset + fast_len;
                uint64_t cend = MIN(cstart + s->cluster_size, end);
                uint64_t e = qcow2_l2_entry(s, table, i);
                uint64_t bm = qcow2_l2_bitmap(s, table, i);

                if (pos >= end) {
                    break;
                }
                if (!write_in_place(s, e, bm, pos - cstart, cend - cstart)) {
                    break;
                }
                if (fast_len == 0) {
                    host = (e & L2E_OFFSET_MASK) + (pos - cstart);
                } else if ((e & L2E_OFFSET_MASK) != host + fast_len) {
                    break;
                }
                fast_len += cend - pos;
            }
            qcow2_cache_put(s->l2_cache, table);
        }
        if (fast_len) {
            s->inflight_writes++;
            co_mutex_unlock(&s->lock);
            ret = bdrv_co_pwrite(bs->file->bs, host, fast_len, buf, 0);
            co_mutex_lock(&s->lock);
            s->inflight_writes--;
            co_mutex_unlock(&s->lock);
            if (ret < 0) {
                return ret;
            }
            ret = fast_len;
        } else {
            ret = write_alloc(bs, offset, end, buf);
            co_mutex_unlock(&s->lock);
            if (ret < 0) {
                return ret;
            }
        }
        offset += ret;
        bytes -= ret;
        buf += ret;
    }
    return 0;
}

/* --- zeroing and discard --- */

static int coroutine_fn write_zeros_data(BlockDriverState *bs, uint64_t offset, uint64_t bytes)
{
    uint64_t chunk = MIN(bytes, 1024 * 1024);
    uint8_t *z;
    int ret = 0;

    if (!bytes) {
        return 0;
    }
    z = blk_blockalign(chunk);
    memset(z, 0, chunk);
    while (bytes && ret == 0) {
        uint64_t n = MIN(bytes, chunk);
        ret = qcow2_do_pwrite(bs, offset, n, z);
        offset += n;
        bytes -= n;
    }
    blk_vfree(z);
    return ret;
}

/* Make a whole cluster read as zeros: its L2 entry and bitmap (*ne, *nbm) are changed from what
 * they are.  Its host cluster is kept (preallocated zeros) unless unmap or it cannot be
 * written in place, else freed; over a backing file the entry says zeros, not unallocated.
 * -ENOTSUP: a version 2 image over a backing file has no way to say zeros. */
static int zero_whole_cluster(BlockDriverState *bs, bool backing, bool unmap, uint64_t *ne,
                              uint64_t *nbm)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t e = *ne;
    bool keep = !unmap && !cluster_needs_new(s, e);

    if (!s->ext_l2) {
        if (s->version < 3) {
            if (backing) {
                return -ENOTSUP;
            }
            *ne = 0;
            keep = false;
        } else if (keep) {
            *ne = (e & (L2E_OFFSET_MASK | QCOW_OFLAG_COPIED)) | QCOW_OFLAG_ZERO;
        } else {
            *ne = backing ? QCOW_OFLAG_ZERO : 0;
        }
    } else if (keep) {
        *nbm = QCOW2_BITMAP_ZERO_ALL;
    } else {
        *ne = 0;
        *nbm = backing ? QCOW2_BITMAP_ZERO_ALL : 0;
    }
    if (!keep && (e & (L2E_OFFSET_MASK | QCOW_OFLAG_COMPRESSED))) {
        qcow2_free_l2_entry(bs, e);
    }
    return 0;
}

/* Make the subclusters of [a, b) of a cluster (subcluster-aligned, the caller guarantees) read
 * as zeros in *nbm, the bitmap of entry e.  -ENOTSUP without extended L2 or for a compressed
 * cluster. */
static int zero_subclusters(BDRVQcow2State *s, bool backing, uint64_t a, uint64_t b,
                            uint64_t e, uint64_t *nbm)
{
    uint64_t bm = *nbm, m;

    if (!s->ext_l2 || (e & QCOW_OFLAG_COMPRESSED)) {
        return -ENOTSUP;
    }
    m = sc_mask(s, a, b);
    *nbm = (bm & ~m) | (m << 32);
    if (!(e & L2E_OFFSET_MASK) && !backing) {
        *nbm = bm & ~m;     /* unallocated without backing reads zeros already */
    }
    return 0;
}

/* Zero whole clusters [offset, end) and subcluster-aligned parts by metadata, inside one L2
 * table.  Lock held.  Returns 0, -ENOTSUP for a part that needs data writes (compressed
 * cluster with subclusters), or -errno. */
static int coroutine_fn zero_meta(BlockDriverState *bs, uint64_t offset, uint64_t end,
                                  bool unmap, uint64_t *done)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t cluster = offset >> s->cluster_bits;
    uint32_t l1i = cluster >> s->l2_bits;
    uint32_t l2i = cluster & (s->l2_size - 1);
    bool backing = has_backing_file(bs);
    void *table;
    int ret;

    *done = 0;
    if (s->corrupt_stop) {
        return -EROFS;
    }
    if (l1i >= s->l1_size) {
        ret = qcow2_grow_l1(bs, l1i + 1);
        if (ret < 0) {
            return ret;
        }
    }
    if (!(s->l1_table[l1i] & L1E_OFFSET_MASK) && !backing) {
        *done = end - offset;      /* all unallocated, no backing: already zeros */
        return 0;
    }
    ret = qcow2_get_l2_for_write(bs, l1i, &table);
    if (ret < 0) {
        return ret;
    }
    for (uint32_t i = l2i; i < s->l2_size && offset + *done < end; i++) {
        uint64_t cstart = (cluster + (i - l2i)) << s->cluster_bits;
        uint64_t a = offset + *done - cstart;
        uint64_t b = MIN(end - cstart, cs);
        uint64_t e = qcow2_l2_entry(s, table, i);
        uint64_t bm = qcow2_l2_bitmap(s, table, i);
        uint64_t ne = e, nbm = bm;

        if (a == 0 && b == cs) {
            ret = zero_whole_cluster(bs, backing, unmap, &ne, &nbm);
        } else {
            ret = zero_subclusters(s, backing, a, b, ne, &nbm);
        }
        if (ret < 0) {
            break;
        }
        if (ne != e || nbm != bm) {
            qcow2_l2_set(s, table, i, ne, nbm);
            qcow2_cache_mark_dirty(s->l2_cache, table);
        }
        *done += b - a;
    }
    qcow2_cache_put(s->l2_cache, table);
    return ret == -ENOTSUP && *done ? 0 : ret;
}

int coroutine_fn qcow2_zero_range(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                  bool unmap)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t end = offset + bytes;
    uint64_t unit = s->ext_l2 ? s->sc_size : s->cluster_size;
    int ret = 0;

    while (offset < end) {
        uint64_t cstart = ROUND_DOWN(offset, s->cluster_size);
        uint64_t cend = MIN(cstart + s->cluster_size, end);
        uint64_t done = 0;

        if (!IS_ALIGNED(offset, unit) || (cend - offset) < unit) {
            /* unaligned head: plain zero data up to the next unit boundary */
            uint64_t n = MIN(ROUND_UP(offset + 1, unit), end) - offset;
            ret = write_zeros_data(bs, offset, n);
            if (ret < 0) {
                return ret;
            }
            offset += n;
            continue;
        }
        /* aligned run: up to the last unit boundary */
        {
            uint64_t l1_end = ((offset >> (s->l2_bits + s->cluster_bits)) + 1)
                              << (s->l2_bits + s->cluster_bits);
            uint64_t mend = MIN(ROUND_DOWN(end, unit), l1_end);
            if (mend <= offset) {
                ret = write_zeros_data(bs, offset, end - offset);
                return ret;
            }
            co_mutex_lock(&s->lock);
            ret = zero_meta(bs, offset, mend, unmap, &done);
            co_mutex_unlock(&s->lock);
            if (ret == -ENOTSUP && done == 0) {
                /* this cluster needs a data write */
                uint64_t n = MIN(cend, mend) - offset;
                ret = write_zeros_data(bs, offset, n);
                done = n;
            }
            if (ret < 0) {
                return ret;
            }
            offset += done;
        }
    }
    return 0;
}

/* --- resizing --- */

/* Write order: the new clusters' refcounts (refcount blocks -> flush; lazy refcounts: the
 * dirty bit) -> the new table -> flush -> header (L1 size and offset) -> flush -> at a later
 * flush, the old table's refcount dropped.  A crash leaves the old table in force or the
 * complete new one. */
int coroutine_fn qcow2_grow_l1(BlockDriverState *bs, uint64_t min_size)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t new_bytes, old_bytes;
    int64_t new_off;
    uint64_t *buf;
    uint8_t hdr[QCOW2_HDR_L1_OFFSET + 8 - QCOW2_HDR_L1_SIZE];    /* L1 size and offset */
    int ret;

    if (min_size <= s->l1_size) {
        return 0;
    }
    if (min_size * 8 > QCOW2_MAX_L1_BYTES) {
        return -EFBIG;
    }
    new_bytes = ROUND_UP(min_size * 8, s->cluster_size);
    new_off = qcow2_alloc_clusters(bs, new_bytes / s->cluster_size);
    if (new_off < 0) {
        return new_off;
    }
    buf = blk_blockalign(new_bytes);
    memset(buf, 0, new_bytes);
    for (uint32_t i = 0; i < s->l1_size; i++) {
        buf[i] = GUINT64_TO_BE(s->l1_table[i]);
    }
    ret = qcow2_pre_l2_write(bs);
    if (ret == 0) {
        ret = qcow2_meta_pwrite(bs, QCOW2_META_NONE, "a new L1 table", new_off, new_bytes, buf);
    }
    blk_vfree(buf);
    if (ret == 0) {
        ret = qcow2_flush_file(bs);
    }
    if (ret < 0) {
        return ret;
    }
    stbe32(hdr, min_size);
    stbe64(hdr + QCOW2_HDR_L1_OFFSET - QCOW2_HDR_L1_SIZE, new_off);
    ret = qcow2_meta_pwrite(bs, QCOW2_META_HEADER, "the header", QCOW2_HDR_L1_SIZE, sizeof(hdr),
                            hdr);
    if (ret == 0) {
        ret = qcow2_flush_file(bs);
    }
    if (ret < 0) {
        return ret;
    }
    old_bytes = ROUND_UP((uint64_t)s->l1_size * 8, s->cluster_size);
    if (s->l1_table_offset && old_bytes) {
        qcow2_free_deferred(bs, s->l1_table_offset, old_bytes);
    }
    s->l1_table = g_renew(uint64_t, s->l1_table, min_size);
    memset(s->l1_table + s->l1_size, 0, (min_size - s->l1_size) * 8);
    s->l1_size = min_size;
    s->l1_table_offset = new_off;
    return 0;
}

/* Order: L1 entries of whole tables cleared (written now), partial tables' entries cleared
 * (cached); the clusters' refcounts drop only after those are written and flushed
 * (qcow2_free_deferred). */
int coroutine_fn qcow2_free_beyond(BlockDriverState *bs, uint64_t from)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cf = from >> s->cluster_bits;
    int ret;

    for (uint64_t l1i = cf >> s->l2_bits; l1i < s->l1_size; l1i++) {
        uint64_t l2off = s->l1_table[l1i] & L1E_OFFSET_MASK;
        uint32_t start = l1i == (cf >> s->l2_bits) ? (cf & (s->l2_size - 1)) : 0;
        void *table;

        if (!l2off) {
            continue;
        }
        if (start == 0) {
            ret = qcow2_cache_get(bs, s->l2_cache, l2off, false, &table);
            if (ret < 0) {
                return ret;
            }
            for (uint32_t i = 0; i < s->l2_size; i++) {
                qcow2_free_l2_entry(bs, qcow2_l2_entry(s, table, i));
            }
            qcow2_cache_put(s->l2_cache, table);
            ret = write_l1_entry(bs, l1i, 0);
            if (ret < 0) {
                return ret;
            }
            qcow2_free_deferred(bs, l2off, s->cluster_size);
            continue;
        }
        ret = qcow2_get_l2_for_write(bs, l1i, &table);
        if (ret < 0) {
            return ret;
        }
        for (uint32_t i = start; i < s->l2_size; i++) {
            uint64_t e = qcow2_l2_entry(s, table, i);
            if (e || qcow2_l2_bitmap(s, table, i)) {
                qcow2_free_l2_entry(bs, e);
                qcow2_l2_set(s, table, i, 0, 0);
                qcow2_cache_mark_dirty(s->l2_cache, table);
            }
        }
        qcow2_cache_put(s->l2_cache, table);
    }
    return 0;
}

/* New host clusters for the longest run of entries from l2i (at most n) that have none (nor
 * compressed data) and, with zeros_only, read as zeros: allocated together and checked against
 * the metadata (`what` names them in the log; they may be written in place later, unchecked).
 * Returns their host offset, 0 with *run 0 when the entry at l2i has a host cluster, or
 * -errno. */
static int64_t coroutine_fn alloc_unmapped_run(BlockDriverState *bs, const void *table,
                                               uint32_t l2i, uint64_t n, bool zeros_only,
                                               const char *what, uint64_t *run)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t host;
    int ret;

    *run = 0;
    while (*run < n) {
        uint64_t e = qcow2_l2_entry(s, table, l2i + *run);
        if ((e & (L2E_OFFSET_MASK | QCOW_OFLAG_COMPRESSED)) ||
            (zeros_only && !(e & QCOW_OFLAG_ZERO))) {
            break;
        }
        (*run)++;
    }
    if (*run == 0) {
        return 0;
    }
    host = qcow2_alloc_clusters(bs, *run);
    if (host < 0) {
        return host;
    }
    ret = qcow2_pre_write(bs, QCOW2_META_NONE, what, host, *run * s->cluster_size);
    return ret < 0 ? ret : host;
}

/* Write order: the new clusters' refcounts (cached) -> the L2 entries (cached), written back as
 * in write_alloc (refcount blocks -> flush -> L2 table); the caller extends the file to reach
 * the clusters before it flushes the metadata (qcow2_grow). */
int coroutine_fn qcow2_preallocate(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                   uint64_t *host_end)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t c = offset >> s->cluster_bits;
    uint64_t cend = DIV_ROUND_UP(offset + bytes, cs);
    int ret;

    *host_end = 0;
    while (c < cend) {
        uint32_t l1i = c >> s->l2_bits;
        uint32_t l2i = c & (s->l2_size - 1);
        uint64_t n = MIN(cend - c, s->l2_size - l2i);
        void *table;

        if (l1i >= s->l1_size) {
            ret = qcow2_grow_l1(bs, l1i + 1);
            if (ret < 0) {
                return ret;
            }
        }
        ret = qcow2_get_l2_for_write(bs, l1i, &table);
        if (ret < 0) {
            return ret;
        }
        for (uint64_t i = 0; i < n;) {
            uint64_t run;
            int64_t host = alloc_unmapped_run(bs, table, l2i + i, n - i, false,
                                              "preallocated data", &run);
            if (host < 0) {
                qcow2_cache_put(s->l2_cache, table);
                return host;
            }
            if (run == 0) {
                i++;
                continue;
            }
            for (uint64_t j = 0; j < run; j++) {
                /* with a backing file, extended L2 leaves the subclusters unallocated so
                 * the backing data still shows */
                qcow2_l2_set(s, table, l2i + i + j, (host + j * cs) | QCOW_OFLAG_COPIED,
                             s->ext_l2 && !has_backing_file(bs) ? QCOW2_BITMAP_ALLOC_ALL : 0);
            }
            qcow2_cache_mark_dirty(s->l2_cache, table);
            *host_end = MAX(*host_end, host + run * cs);
            s->l2_needs_flush = true;   /* the caller extends the file: durable first */
            i += run;
        }
        qcow2_cache_put(s->l2_cache, table);
        c += n;
    }
    return 0;
}

/* Writes into new clusters past the end of the file would extend it one request at a time,
 * and an extending write is slow where a write inside the file is not: ext4 completes an
 * extending O_DIRECT write synchronously, inside libaio's io_submit, i.e. in the event loop
 * (--cache=none, 1 MiB writes: io_submit took about five times as long as inside the file).  So
 * the file grows ahead of allocation, by a quarter of its length (4 to 64 MiB), with an
 * ftruncate that the file driver runs in a worker thread; the new space is a hole (sparse)
 * that the data writes fill.
 *
 * The space past the last cluster in use is cut off at close (qcow2_trim_file), and before a
 * preallocating grow, so the image ends where QEMU would leave it.  After a crash it stays:
 * qemu-img check ignores space past the image end (it reports no error and no leak, and its
 * "Image end offset" is where the clusters in use end), and blkfuse too.  A failed growth is
 * harmless: the data write extends the file itself. */
void coroutine_fn qcow2_grow_file_ahead(BlockDriverState *bs, uint64_t host_end)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t flen = bdrv_getlength(bs->file->bs);
    uint64_t step, target;
    GError *err = NULL;

    if (flen < 0 || host_end <= (uint64_t)flen) {
        return;
    }
    step = MIN(MAX((uint64_t)flen / 4, 4 * 1024 * 1024), 64 * 1024 * 1024);
    target = ROUND_UP(host_end + step, s->cluster_size);
    if (bdrv_co_truncate(bs->file->bs, target, false, PREALLOC_MODE_OFF, &err) < 0) {
        g_clear_error(&err);
        return;
    }
    if (s->grow_base < 0) {
        s->grow_base = flen;
    }
}

/* Reserve file space for [host, host + len): the part inside the file with the file's
 * preallocate, the part beyond it by growing the file with falloc preallocation.  The file
 * must reach the clusters that entries point to, for qemu-img check. */
static int coroutine_fn reserve_host(BlockDriverState *bs, uint64_t host, uint64_t len)
{
    int64_t flen = bdrv_getlength(bs->file->bs);
    uint64_t inside;
    int ret = 0;

    if (flen < 0) {
        return flen;
    }
    inside = host < (uint64_t)flen ? MIN(len, (uint64_t)flen - host) : 0;
    if (inside) {
        ret = bdrv_co_preallocate(bs->file->bs, host, inside);
    }
    if (ret == 0 && host + len > (uint64_t)flen) {
        GError *err = NULL;
        ret = bdrv_co_truncate(bs->file->bs, host + len, false, PREALLOC_MODE_FALLOC, &err);
        if (ret < 0) {
            g_clear_error(&err);
            ret = bdrv_co_truncate(bs->file->bs, host + len, false, PREALLOC_MODE_OFF, &err);
            g_clear_error(&err);
        }
    }
    return ret;
}

/* Write order: the new clusters' refcounts and the L2 entries (cached) -> the file space
 * reserved (lock held throughout: no write-back in between) -> at write-back, the refcount
 * blocks, a flush (l2_needs_flush: in every mode, so the file reaches the clusters), the L2
 * table. */
int coroutine_fn qcow2_reserve(BlockDriverState *bs, uint64_t offset, uint64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t c = offset >> s->cluster_bits;
    uint64_t cend = DIV_ROUND_UP(offset + bytes, cs);
    bool backing = has_backing_file(bs);
    int ret = 0;

    if (s->version < 3) {
        return 0;           /* no way to say "allocated, reads as before": nothing reserved */
    }
    co_mutex_lock(&s->lock);
    if (s->corrupt_stop) {
        ret = -EROFS;
    }
    while (c < cend && ret == 0) {
        uint32_t l1i = c >> s->l2_bits;
        uint32_t l2i = c & (s->l2_size - 1);
        uint64_t n = MIN(cend - c, s->l2_size - l2i);
        void *table;

        ret = qcow2_get_l2_for_write(bs, l1i, &table);
        if (ret < 0) {
            break;
        }
        for (uint64_t i = 0; i < n && ret == 0;) {
            uint64_t run;
            /* clusters without a host cluster whose contents a preallocated entry can keep:
             * without extended L2, over a backing file, only those that read zeros */
            int64_t host = alloc_unmapped_run(bs, table, l2i + i, n - i, !s->ext_l2 && backing,
                                              "reserved data", &run);
            if (host < 0) {
                ret = host;
                break;
            }
            if (run == 0) {
                i++;
                continue;
            }
            for (uint64_t j = 0; j < run; j++) {
                uint32_t k = l2i + i + j;
                uint64_t ne = (host + j * cs) | QCOW_OFLAG_COPIED;
                if (!s->ext_l2) {
                    ne |= QCOW_OFLAG_ZERO;  /* reads zeros, as it did */
                }
                qcow2_l2_set(s, table, k, ne, qcow2_l2_bitmap(s, table, k));
            }
            qcow2_cache_mark_dirty(s->l2_cache, table);
            ret = reserve_host(bs, host, run * cs);
            s->l2_needs_flush = true;   /* the file reaches the clusters before the entries */
            i += run;
        }
        qcow2_cache_put(s->l2_cache, table);
        c += n;
    }
    co_mutex_unlock(&s->lock);
    return ret;
}
