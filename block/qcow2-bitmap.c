/* qcow2-bitmap.c - qcow2 persistent dirty bitmaps (the bitmaps extension): read and validate
 * the bitmap directory, track guest changes in the enabled bitmaps, store them at close.
 *
 * What QEMU expects of a program that writes an image with bitmaps, and what this file does:
 *
 *  - The autoclear bit 0 says the bitmaps extension is consistent.  Without it (a program
 *    without bitmap support wrote the image) the bitmaps are ignored, as QEMU ignores them.
 *  - On a read-write open every consistent bitmap is loaded into memory; the enabled ones
 *    (flag "auto") are marked in use in the directory, durably, before the first change of
 *    guest data (QEMU marks them at open; marking them at the first write leaves an image
 *    that is only read, or whose bitmaps `blkfuse bitmap` edits, untouched).  A crash from
 *    then on leaves them in use: inconsistent, which QEMU reports ("in-use") and refuses to
 *    copy, never silently wrong.
 *  - Every guest write, zero-write, discard and resize sets the bits of the enabled bitmaps at
 *    their granularity, in memory (qcow2_bitmaps_set_dirty, from any I/O thread).
 *  - At close the bitmaps marked in use by this open are stored: new data clusters, new bitmap
 *    tables and a new directory, published by the header extension, the old clusters freed
 *    after.  Stored only at close, as QEMU does (it stores at close and inactivation): no
 *    flush point in between is worth the extra writes of every bitmap, and a crash must leave
 *    them in use anyway.
 *  - Disabled bitmaps get no bits and are left on disk as they are (not marked in use), unless
 *    a resize changes their size: then they are marked in use first and stored at close.
 *  - Bitmaps already in use at open (inconsistent) are kept as they are: never loaded, never
 *    updated, left in use (QEMU does the same; 'qemu-img bitmap --remove' is the user's way
 *    out).
 *  - A read-only open only reads the directory (for `blkfuse info`) and writes nothing.
 *
 * The bits: one cluster-sized chunk per bitmap table entry, allocated on the first bit set in
 * it (NULL chunks are zeros).  A 1 TiB image at 64 KiB granularity needs 2 MiB per bitmap when
 * every chunk is touched, 32 chunks.
 *
 * Write order of a directory update (publish_directory): the new directory into newly
 * allocated clusters -> refcounts and directory durable (flush) -> the header's bitmaps
 * extension and autoclear bit point to it -> flush -> the old directory's clusters freed.
 * Storing bitmaps (qcow2_bitmaps_store) writes their data clusters and bitmap tables into new
 * clusters first, then publishes the directory that names them, then frees the old tables and
 * data.  A crash before the header write leaves the old directory (bitmaps in use) and leaked
 * new clusters; after it, the new bitmaps and leaked old clusters: consistent at every point.
 *
 * Threads: open and close in the main thread (coroutine); qcow2_bitmaps_set_dirty in any I/O
 * thread, under s->bitmap_lock only; everything else with s->lock held.
 */
#include <errno.h>
#include <string.h>
#include "block/aio.h"
#include "block/qcow2.h"
#include "block/util.h"

/* Constraints on directory entries, QEMU's (so every image QEMU writes opens, and nothing
 * blkfuse writes is refused by QEMU). */
#define BME_MAX_TABLE_SIZE          0x8000000U
#define BME_MAX_PHYS_SIZE           0x20000000ULL
#define BME_MIN_GRANULARITY_BITS    9
#define BME_MAX_GRANULARITY_BITS    31
#define BME_MAX_NAME_SIZE           1023
#define BME_KNOWN_FLAGS             (QCOW2_BME_IN_USE | QCOW2_BME_AUTO)
#define BME_TYPE_DIRTY_TRACKING     1

/* A bitmap directory entry (big endian): these fields, then the extra data and the name,
 * padded to 8 bytes. */
#define BME_TABLE_OFFSET            0    /* u64 its bitmap table */
#define BME_TABLE_SIZE              8    /* u32 entries of the table */
#define BME_FLAGS                   12   /* u32 QCOW2_BME_* */
#define BME_TYPE                    16   /* u8 BME_TYPE_DIRTY_TRACKING */
#define BME_GRANULARITY_BITS        17   /* u8 */
#define BME_NAME_SIZE               18   /* u16 */
#define BME_EXTRA_SIZE              20   /* u32 */
#define BME_ENTRY_HDR               24

/* The bitmaps header extension's data (QCOW2_BITMAP_EXT_LEN bytes). */
#define BMEXT_NB_BITMAPS            0    /* u32 */
#define BMEXT_RESERVED              4    /* u32 zero */
#define BMEXT_DIR_SIZE              8    /* u64 bytes of the bitmap directory */
#define BMEXT_DIR_OFFSET            16   /* u64 */

/* Bitmap table entries: bits 1-8 and 56-63 reserved, bit 0 "all ones" when no offset. */
#define BME_TABLE_RESERVED_MASK     0xff000000000001feULL
#define BME_TABLE_OFFSET_MASK       0x00fffffffffffe00ULL
#define BME_TABLE_ALL_ONES          1ULL

uint64_t qcow2_bitmap_data_bytes(uint64_t size, int granularity_bits)
{
    uint64_t bits = (size >> granularity_bits) +
                    !!(size & ((1ULL << granularity_bits) - 1));
    return DIV_ROUND_UP(bits, 8);
}

uint32_t qcow2_bitmap_table_entries(const BDRVQcow2State *s, uint64_t size,
                                    int granularity_bits)
{
    return DIV_ROUND_UP(qcow2_bitmap_data_bytes(size, granularity_bits), s->cluster_size);
}

static uint64_t nbits(uint64_t size, int granularity_bits)
{
    return (size >> granularity_bits) + !!(size & ((1ULL << granularity_bits) - 1));
}

void qcow2_bitmap_free(Qcow2Bitmap *bm)
{
    if (!bm) {
        return;
    }
    for (uint32_t i = 0; bm->chunks && i < bm->nchunks; i++) {
        g_free(bm->chunks[i]);
    }
    g_free(bm->chunks);
    g_free(bm->table);
    g_free(bm->name);
    g_free(bm);
}

void qcow2_bitmaps_free(BDRVQcow2State *s)
{
    if (s->bitmaps) {
        g_ptr_array_free(s->bitmaps, TRUE);
        s->bitmaps = NULL;
    }
    s->bitmaps_tracking = false;
}

static Qcow2Bitmap *bitmap_at(const BDRVQcow2State *s, guint i)
{
    return g_ptr_array_index(s->bitmaps, i);
}

/* --- the header extension --- */

int qcow2_bitmaps_parse_ext(BDRVQcow2State *s, const char *fn, const uint8_t *data,
                            uint32_t len, bool checking, GError **errp)
{
    uint32_t nb, reserved;
    uint64_t dir_size, dir_off;
    const char *bad = NULL;

    s->nb_bitmaps = 0;
    if (s->version < 3 || !(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS)) {
        log_warning("%s: qcow2 bitmaps were changed by a program without bitmap support and "
                    "are inconsistent: ignored (their clusters are leaked; 'blkfuse check -r "
                    "leaks' frees them)", fn);
        return 0;
    }
    if (len != QCOW2_BITMAP_EXT_LEN) {
        bad = "invalid length";
    } else {
        nb = ldbe32(data + BMEXT_NB_BITMAPS);
        reserved = ldbe32(data + BMEXT_RESERVED);
        dir_size = ldbe64(data + BMEXT_DIR_SIZE);
        dir_off = ldbe64(data + BMEXT_DIR_OFFSET);
        if (reserved) {
            bad = "reserved field is not zero";
        } else if (nb == 0) {
            bad = "zero bitmaps";
        } else if (nb > QCOW2_MAX_BITMAPS) {
            bad = "more than 65535 bitmaps";
        } else if (dir_off == 0 || (dir_off & (s->cluster_size - 1))) {
            bad = "invalid bitmap directory offset";
        } else if (dir_size == 0 || dir_size > QCOW2_MAX_BITMAP_DIR_SIZE) {
            bad = "invalid bitmap directory size";
        }
    }
    if (bad && checking) {
        log_warning("%s: qcow2 bitmaps extension: %s; bitmaps ignored", fn, bad);
        return 0;
    }
    if (bad) {
        error_setg(errp, "%s: qcow2 bitmaps extension: %s; the image cannot be opened (remove "
                   "the bitmaps extension with a repair tool)", fn, bad);
        return -EINVAL;
    }
    s->nb_bitmaps = nb;
    s->bitmap_dir_size = dir_size;
    s->bitmap_dir_offset = dir_off;
    return 0;
}

#define BITMAPS_EXT_SIZE (QCOW2_EXT_HDR_SIZE + QCOW2_BITMAP_EXT_LEN)

/* The header extensions of the first cluster hdr (cs bytes; extensions from start) copied to
 * out, with the bitmaps extension replaced by ext (BITMAPS_EXT_SIZE bytes; NULL: left out) in
 * its place, or added last; *n is set to their bytes with the end marker. */
static int rebuild_extensions(const uint8_t *hdr, uint64_t start, uint64_t cs,
                              const uint8_t *ext, uint8_t *out, uint64_t *n)
{
    uint64_t pos = start;
    bool placed = !ext;

    *n = 0;
    while (pos + QCOW2_EXT_HDR_SIZE <= cs) {
        uint32_t type = ldbe32(hdr + pos + QCOW2_EXT_HDR_TYPE);
        uint32_t len = ldbe32(hdr + pos + QCOW2_EXT_HDR_LEN);
        uint64_t total = QCOW2_EXT_HDR_SIZE + ROUND_UP((uint64_t)len, 8);

        if (type == QCOW2_EXT_END) {
            break;
        }
        if (len > cs - pos - QCOW2_EXT_HDR_SIZE || pos + total > cs) {
            return -EINVAL;
        }
        if (type == QCOW2_EXT_BITMAPS) {
            if (!placed) {
                memcpy(out + *n, ext, BITMAPS_EXT_SIZE);
                *n += BITMAPS_EXT_SIZE;
                placed = true;
            }
        } else {
            memcpy(out + *n, hdr + pos, total);
            *n += total;
        }
        pos += total;
    }
    if (!placed) {
        if (*n + BITMAPS_EXT_SIZE > cs) {
            return -ENOSPC;
        }
        memcpy(out + *n, ext, BITMAPS_EXT_SIZE);
        *n += BITMAPS_EXT_SIZE;
    }
    *n += QCOW2_EXT_HDR_SIZE;               /* end of the extensions (zeros) */
    return 0;
}

/* Rewrite the autoclear field and the header extensions with the bitmaps extension naming
 * nb bitmaps in a directory of dir_size bytes at dir_off (nb == 0: no extension, autoclear
 * bit 0 clear).  The extension keeps its place when it is there, so only its own bytes change;
 * it goes last otherwise, and when the backing file name follows the extensions directly (as
 * QEMU writes it), the name moves behind the new end of the extensions (the header is then
 * written from its start, in one write, as QEMU writes it).  Lock held. */
static int coroutine_fn write_header_ext(BlockDriverState *bs, uint32_t nb, uint64_t dir_size,
                                         uint64_t dir_off)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size, n = 0, autoclear, backing_off, wstart, wend;
    uint32_t backing_len;
    g_autofree uint8_t *backing = NULL;
    g_autofree uint8_t *hdr = g_malloc0(cs);
    g_autofree uint8_t *out = g_malloc0(cs);
    uint8_t ext[BITMAPS_EXT_SIZE];
    int64_t flen = bdrv_getlength(bs->file->bs);
    int ret;

    if (flen < 0) {
        return flen;
    }
    ret = bdrv_co_pread(bs->file->bs, 0, MIN((uint64_t)flen, cs), hdr, 0);
    if (ret < 0) {
        return ret;
    }
    stbe32(ext + QCOW2_EXT_HDR_TYPE, QCOW2_EXT_BITMAPS);
    stbe32(ext + QCOW2_EXT_HDR_LEN, QCOW2_BITMAP_EXT_LEN);
    stbe32(ext + QCOW2_EXT_HDR_SIZE + BMEXT_NB_BITMAPS, nb);
    stbe32(ext + QCOW2_EXT_HDR_SIZE + BMEXT_RESERVED, 0);
    stbe64(ext + QCOW2_EXT_HDR_SIZE + BMEXT_DIR_SIZE, dir_size);
    stbe64(ext + QCOW2_EXT_HDR_SIZE + BMEXT_DIR_OFFSET, dir_off);

    backing_off = ldbe64(hdr + QCOW2_HDR_BACKING_OFFSET);
    backing_len = ldbe32(hdr + QCOW2_HDR_BACKING_SIZE);
    if (backing_off && (backing_off > cs || backing_len > cs - backing_off)) {
        return -EINVAL;                     /* checked at open; the header changed since */
    }
    if (backing_off) {
        backing = g_memdup2(hdr + backing_off, MAX(backing_len, 1));
    }
    ret = rebuild_extensions(hdr, s->header_length, cs, nb ? ext : NULL, out, &n);
    if (ret < 0) {
        return ret;
    }
    wstart = QCOW2_HDR_AUTOCLEAR;
    wend = s->header_length + n;
    if (backing_off && wend > backing_off) {
        /* the name moves behind the extensions: the header is written from byte 0 */
        if (wend + backing_len > cs) {
            return -ENOSPC;
        }
        stbe64(hdr + QCOW2_HDR_BACKING_OFFSET, wend);
        wstart = 0;
        wend += backing_len;
    } else if (wend > cs) {
        return -ENOSPC;
    }
    autoclear = (s->autoclear & ~QCOW2_AUTOCLEAR_BITMAPS) | (nb ? QCOW2_AUTOCLEAR_BITMAPS : 0);
    stbe64(hdr + QCOW2_HDR_AUTOCLEAR, autoclear);
    memcpy(hdr + s->header_length, out, n);
    if (wstart == 0) {
        memcpy(hdr + s->header_length + n, backing, backing_len);
    }
    ret = qcow2_meta_pwrite(bs, QCOW2_META_HEADER, "the header extensions", wstart,
                            wend - wstart, hdr + wstart);
    if (ret < 0) {
        return ret;
    }
    s->autoclear = autoclear;
    s->nb_bitmaps = nb;
    s->bitmap_dir_size = nb ? dir_size : 0;
    s->bitmap_dir_offset = nb ? dir_off : 0;
    return 0;
}

/* --- the directory --- */

static bool table_entry_valid(const BDRVQcow2State *s, uint64_t e)
{
    uint64_t off = e & BME_TABLE_OFFSET_MASK;

    if (e & BME_TABLE_RESERVED_MASK) {
        return false;
    }
    return !off || (!(e & BME_TABLE_ALL_ONES) && !(off & (s->cluster_size - 1)));
}

/* Why a directory entry breaks QEMU's constraints, or NULL. */
static const char *entry_problem(const BDRVQcow2State *s, uint64_t size, uint64_t table_offset,
                                 uint32_t table_size, uint32_t flags, int type, int gb,
                                 uint32_t name_size)
{
    uint64_t phys = (uint64_t)table_size * s->cluster_size;

    if (name_size == 0 || name_size > BME_MAX_NAME_SIZE) {
        return "invalid name length";
    }
    if (type != BME_TYPE_DIRTY_TRACKING) {
        return "unknown bitmap type";
    }
    if (flags & ~BME_KNOWN_FLAGS) {
        return "unknown flags";
    }
    if (gb < BME_MIN_GRANULARITY_BITS || gb > BME_MAX_GRANULARITY_BITS) {
        return "unsupported granularity";
    }
    if (table_size == 0 || table_size > BME_MAX_TABLE_SIZE || phys > BME_MAX_PHYS_SIZE) {
        return "invalid bitmap table size";
    }
    if (table_offset == 0 || (table_offset & (s->cluster_size - 1))) {
        return "invalid bitmap table offset";
    }
    if (!(flags & QCOW2_BME_IN_USE) && size > ((phys * 8) << gb)) {
        return "bitmap table too small for the image size";
    }
    return NULL;
}

GPtrArray *qcow2_bitmaps_parse_dir(const BDRVQcow2State *s, const uint8_t *dir,
                                   uint64_t dir_size, uint32_t nb, uint64_t size,
                                   GError **errp)
{
    g_autoptr(GPtrArray) list = g_ptr_array_new_with_free_func((GDestroyNotify)qcow2_bitmap_free);
    uint64_t pos = 0;

    while (pos < dir_size) {
        const uint8_t *e = dir + pos;
        uint32_t name_size, extra, flags;
        uint64_t esize;
        const char *why;
        Qcow2Bitmap *bm;

        if (dir_size - pos < BME_ENTRY_HDR) {
            error_setg(errp, "broken bitmap directory");
            return NULL;
        }
        if (list->len >= nb) {
            error_setg(errp, "more bitmaps in the bitmap directory than the header says");
            return NULL;
        }
        name_size = ldbe16(e + BME_NAME_SIZE);
        extra = ldbe32(e + BME_EXTRA_SIZE);
        esize = ROUND_UP(BME_ENTRY_HDR + (uint64_t)name_size + extra, 8);
        if (esize > dir_size - pos) {
            error_setg(errp, "broken bitmap directory");
            return NULL;
        }
        if (extra) {
            error_setg(errp, "bitmap '%.*s': extra data is not supported", (int)name_size,
                       (const char *)e + BME_ENTRY_HDR + extra);
            return NULL;
        }
        flags = ldbe32(e + BME_FLAGS);
        why = entry_problem(s, size, ldbe64(e + BME_TABLE_OFFSET), ldbe32(e + BME_TABLE_SIZE),
                            flags, e[BME_TYPE], e[BME_GRANULARITY_BITS], name_size);
        if (why) {
            error_setg(errp, "bitmap '%.*s': %s", (int)name_size,
                       (const char *)e + BME_ENTRY_HDR, why);
            return NULL;
        }
        bm = g_new0(Qcow2Bitmap, 1);
        bm->name = g_strndup((const char *)e + BME_ENTRY_HDR, name_size);
        bm->flags = flags;
        bm->granularity_bits = e[BME_GRANULARITY_BITS];
        bm->table_offset = ldbe64(e + BME_TABLE_OFFSET);
        bm->table_size = ldbe32(e + BME_TABLE_SIZE);
        bm->inconsistent = flags & QCOW2_BME_IN_USE;
        g_ptr_array_add(list, bm);
        pos += esize;
    }
    if (list->len != nb) {
        error_setg(errp, "fewer bitmaps in the bitmap directory than the header says");
        return NULL;
    }
    return g_steal_pointer(&list);
}

/* The directory of s->bitmaps, in on-disk form; *len its bytes. */
static uint8_t *build_dir(BDRVQcow2State *s, uint64_t *len)
{
    uint64_t n = 0, pos = 0;
    uint8_t *dir;

    for (guint i = 0; i < s->bitmaps->len; i++) {
        n += ROUND_UP(BME_ENTRY_HDR + strlen(bitmap_at(s, i)->name), 8);
    }
    dir = g_malloc0(ROUND_UP(MAX(n, 1), s->cluster_size));
    for (guint i = 0; i < s->bitmaps->len; i++) {
        Qcow2Bitmap *bm = bitmap_at(s, i);
        size_t name_len = strlen(bm->name);

        uint8_t *e = dir + pos;

        stbe64(e + BME_TABLE_OFFSET, bm->table_offset);
        stbe32(e + BME_TABLE_SIZE, bm->table_size);
        stbe32(e + BME_FLAGS, bm->flags);
        e[BME_TYPE] = BME_TYPE_DIRTY_TRACKING;
        e[BME_GRANULARITY_BITS] = bm->granularity_bits;
        stbe16(e + BME_NAME_SIZE, name_len);
        stbe32(e + BME_EXTRA_SIZE, 0);
        memcpy(e + BME_ENTRY_HDR, bm->name, name_len);
        pos += ROUND_UP(BME_ENTRY_HDR + name_len, 8);
    }
    *len = n;
    return dir;
}

/* Write the directory of s->bitmaps and make the header point to it (no bitmaps: drop the
 * extension).  Write order: the directory into new clusters -> refcounts and directory
 * durable -> header extension and autoclear bit -> flush -> the old directory freed (at the
 * flush_metadata that ends this).  Lock held. */
static int coroutine_fn publish_directory(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t len = 0, bytes = 0, old_off = s->bitmap_dir_offset, old_size = s->bitmap_dir_size;
    g_autofree uint8_t *dir = build_dir(s, &len);
    int64_t off = 0;
    int ret;

    if (s->bitmaps->len > QCOW2_MAX_BITMAPS || len > QCOW2_MAX_BITMAP_DIR_SIZE) {
        return -EFBIG;
    }
    if (s->bitmaps->len) {
        bytes = ROUND_UP(len, s->cluster_size);
        off = qcow2_alloc_clusters(bs, bytes >> s->cluster_bits);
        if (off < 0) {
            return off;
        }
        ret = qcow2_meta_pwrite(bs, QCOW2_META_NONE, "a new bitmap directory", off, bytes, dir);
        if (ret == 0) {
            ret = qcow2_flush_metadata(bs);
        }
        if (ret == 0) {
            ret = qcow2_flush_file(bs);
        }
        if (ret < 0) {
            qcow2_free_deferred(bs, off, bytes);
            return ret;
        }
    }
    ret = write_header_ext(bs, s->bitmaps->len, len, off);
    if (ret == 0) {
        ret = qcow2_flush_file(bs);
    }
    if (ret < 0) {
        if (off) {
            qcow2_free_deferred(bs, off, bytes);
        }
        return ret;
    }
    if (old_size) {
        qcow2_free_deferred(bs, old_off, old_size);
    }
    qcow2_overlap_static_refresh(s);
    return qcow2_flush_metadata(bs);
}

/* --- loading --- */

/* Read a bitmap table of bm->table_size entries into *table (host order), validated. */
static int coroutine_fn read_table(BlockDriverState *bs, uint64_t offset, uint32_t entries,
                                   uint64_t **table)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint64_t *t = g_new(uint64_t, entries);
    int ret = bdrv_co_pread(bs->file->bs, offset, (uint64_t)entries * 8, t, 0);

    if (ret < 0) {
        return ret;
    }
    for (uint32_t i = 0; i < entries; i++) {
        t[i] = GUINT64_FROM_BE(t[i]);
        if (!table_entry_valid(s, t[i])) {
            return -EINVAL;
        }
    }
    *table = g_steal_pointer(&t);
    return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Clear the bits of chunk i that lie at or past bit `from` of the bitmap. */
static void clear_bits_from(BDRVQcow2State *s, Qcow2Bitmap *bm, uint32_t i, uint64_t from)
{
    uint64_t per = (uint64_t)s->cluster_size * 8, base = (uint64_t)i * per, b;

    if (!bm->chunks[i] || from >= base + per) {
        return;
    }
    b = from > base ? from - base : 0;
    if (b & 7) {
        bm->chunks[i][b / 8] &= (1U << (b & 7)) - 1;
        b = ROUND_UP(b, 8);
    }
    if (b < per) {
        memset(bm->chunks[i] + b / 8, 0, (per - b) / 8);
    }
}

/* Load the bits of a consistent bitmap (directory entry validated). */
static int coroutine_fn load_bitmap(BlockDriverState *bs, Qcow2Bitmap *bm, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t flen = bdrv_getlength(bs->file->bs);
    uint32_t want = qcow2_bitmap_table_entries(s, s->size, bm->granularity_bits);
    int ret;

    if (flen < 0) {
        error_setg_errno(errp, -flen, "cannot get the file size");
        return flen;
    }
    if (bm->table_size != want) {
        error_setg(errp, "bitmap '%s' does not match the image size", bm->name);
        return -EINVAL;
    }
    if (bm->table_offset + (uint64_t)bm->table_size * 8 > (uint64_t)flen) {
        error_setg(errp, "bitmap '%s': its bitmap table lies beyond the end of the file",
                   bm->name);
        return -EINVAL;
    }
    ret = read_table(bs, bm->table_offset, bm->table_size, &bm->table);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "bitmap '%s': cannot read its bitmap table", bm->name);
        return ret;
    }
    bm->nchunks = bm->table_size;
    bm->chunks = g_new0(uint8_t *, bm->nchunks);
    bm->size = s->size;
    for (uint32_t i = 0; i < bm->nchunks; i++) {
        uint64_t off = bm->table[i] & BME_TABLE_OFFSET_MASK;

        if (!off && !(bm->table[i] & BME_TABLE_ALL_ONES)) {
            continue;
        }
        bm->chunks[i] = g_malloc(s->cluster_size);
        if (!off) {
            memset(bm->chunks[i], 0xff, s->cluster_size);
            continue;
        }
        if (off + s->cluster_size > (uint64_t)flen) {
            error_setg(errp, "bitmap '%s': its data lies beyond the end of the file", bm->name);
            return -EINVAL;
        }
        ret = bdrv_co_pread(bs->file->bs, off, s->cluster_size, bm->chunks[i], 0);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "bitmap '%s': cannot read its data", bm->name);
            return ret;
        }
    }
    if (bm->nchunks) {
        clear_bits_from(s, bm, bm->nchunks - 1, nbits(s->size, bm->granularity_bits));
    }
    for (uint32_t i = 0; i < bm->nchunks; i++) {
        if (bm->chunks[i] && all_zero(bm->chunks[i], s->cluster_size)) {
            g_clear_pointer(&bm->chunks[i], g_free);
        }
    }
    return 0;
}

int coroutine_fn qcow2_bitmaps_open(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const char *fn = bs->filename ? bs->filename : "image";
    g_autofree uint8_t *dir = NULL;
    g_autoptr(GError) local = NULL;
    int64_t flen;
    bool unmarked = false;
    int ret;

    s->bitmaps = g_ptr_array_new_with_free_func((GDestroyNotify)qcow2_bitmap_free);
    if (!s->nb_bitmaps) {
        return 0;
    }
    flen = bdrv_getlength(bs->file->bs);
    if (flen < 0) {
        error_setg_errno(errp, -flen, "%s: cannot get file size", fn);
        return flen;
    }
    if (s->bitmap_dir_offset + s->bitmap_dir_size > (uint64_t)flen) {
        g_set_error(&local, BLK_ERROR, EINVAL, "the bitmap directory lies beyond the end of "
                    "the file");
    } else {
        dir = g_malloc(s->bitmap_dir_size);
        ret = bdrv_co_pread(bs->file->bs, s->bitmap_dir_offset, s->bitmap_dir_size, dir, 0);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "%s: cannot read the qcow2 bitmap directory", fn);
            return ret;
        }
        g_ptr_array_free(s->bitmaps, TRUE);
        s->bitmaps = qcow2_bitmaps_parse_dir(s, dir, s->bitmap_dir_size, s->nb_bitmaps,
                                             s->size, &local);
    }
    if (local) {
        if (!s->bitmaps) {
            s->bitmaps = g_ptr_array_new_with_free_func((GDestroyNotify)qcow2_bitmap_free);
        }
        if (s->read_only) {
            log_warning("%s: qcow2 %s; bitmaps ignored", fn, local->message);
            return 0;
        }
        error_setg(errp, "%s: qcow2 %s; the image can only be opened read-only (copy its data "
                   "out, or remove the bitmaps with a repair tool)", fn, local->message);
        return -EINVAL;
    }
    if (s->read_only) {
        return 0;
    }

    for (guint i = 0; i < s->bitmaps->len; i++) {
        Qcow2Bitmap *bm = bitmap_at(s, i);

        if (bm->inconsistent) {
            log_debug("%s: qcow2 bitmap '%s' is in use (inconsistent): kept as it is", fn,
                      bm->name);
            continue;
        }
        ret = load_bitmap(bs, bm, &local);
        if (ret < 0) {
            error_setg(errp, "%s: qcow2 %s; the image can only be opened read-only", fn,
                       local->message);
            return ret;
        }
        unmarked |= bm->flags & QCOW2_BME_AUTO;
    }
    qcow2_overlap_static_refresh(s);    /* the directory and tables are protected */
    /* marked in use at the first change of guest data (qcow2_bitmaps_before_change) */
    __atomic_store_n(&s->bitmaps_unmarked, unmarked, __ATOMIC_RELEASE);
    return 0;
}

/* Mark the enabled bitmaps in use, durably; from then on they track changes and are stored
 * at close.  Lock held. */
static int coroutine_fn mark_in_use(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (!s->bitmaps_unmarked) {
        return 0;       /* another request did it while this one waited for the lock */
    }
    for (guint i = 0; i < s->bitmaps->len; i++) {
        Qcow2Bitmap *bm = bitmap_at(s, i);
        if (!bm->inconsistent && (bm->flags & QCOW2_BME_AUTO) &&
            !(bm->flags & QCOW2_BME_IN_USE)) {
            bm->flags |= QCOW2_BME_IN_USE;
            bm->store = true;
        }
    }
    ret = publish_directory(bs);
    if (ret < 0) {
        log_error("%s: qcow2: cannot mark the bitmaps in use, so writes fail: %s",
                  bs->filename, g_strerror(-ret));
        return ret;
    }
    __atomic_store_n(&s->bitmaps_tracking, true, __ATOMIC_RELEASE);
    __atomic_store_n(&s->bitmaps_unmarked, false, __ATOMIC_RELEASE);
    return 0;
}

int coroutine_fn qcow2_bitmaps_before_change(BlockDriverState *bs, uint64_t offset,
                                             uint64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;

    if (__atomic_load_n(&s->bitmaps_unmarked, __ATOMIC_ACQUIRE)) {
        int ret;

        co_mutex_lock(&s->lock);
        ret = mark_in_use(bs);
        co_mutex_unlock(&s->lock);
        if (ret < 0) {
            return ret;
        }
    }
    qcow2_bitmaps_set_dirty(s, offset, bytes);
    return 0;
}

/* --- the bits --- */

/* Chunk i of bm, allocated (zeros) if it was not.  bitmap_lock held. */
static uint8_t *chunk(BDRVQcow2State *s, Qcow2Bitmap *bm, uint32_t i)
{
    if (!bm->chunks[i]) {
        bm->chunks[i] = g_malloc0(s->cluster_size);
    }
    return bm->chunks[i];
}

/* Set bits [first, last] (granule numbers, inside the bitmap).  bitmap_lock held. */
static void set_bits(BDRVQcow2State *s, Qcow2Bitmap *bm, uint64_t first, uint64_t last)
{
    uint64_t per = (uint64_t)s->cluster_size * 8;

    while (first <= last) {
        uint32_t ci = first / per;
        uint64_t a = first % per, b = MIN(last - (uint64_t)ci * per, per - 1);
        uint8_t *c = chunk(s, bm, ci);

        while (a <= b && (a & 7)) {
            c[a / 8] |= 1U << (a & 7);
            a++;
        }
        if (a + 7 <= b) {
            uint64_t full = (b + 1 - a) / 8;
            memset(c + a / 8, 0xff, full);
            a += full * 8;
        }
        while (a <= b) {
            c[a / 8] |= 1U << (a & 7);
            a++;
        }
        first = (uint64_t)ci * per + b + 1;
    }
}

/* Mark [offset, offset + bytes) changed in every enabled bitmap.  bitmap_lock held. */
static void mark_changed(BDRVQcow2State *s, uint64_t offset, uint64_t bytes)
{
    for (guint i = 0; i < s->bitmaps->len; i++) {
        Qcow2Bitmap *bm = bitmap_at(s, i);
        uint64_t end = MIN(offset + bytes, bm->size);

        if (!bm->store || !(bm->flags & QCOW2_BME_AUTO) || offset >= end) {
            continue;
        }
        set_bits(s, bm, offset >> bm->granularity_bits, (end - 1) >> bm->granularity_bits);
    }
}

void qcow2_bitmaps_set_dirty(BDRVQcow2State *s, uint64_t offset, uint64_t bytes)
{
    if (!bytes || !__atomic_load_n(&s->bitmaps_tracking, __ATOMIC_ACQUIRE)) {
        return;
    }
    g_mutex_lock(&s->bitmap_lock);
    mark_changed(s, offset, bytes);
    g_mutex_unlock(&s->bitmap_lock);
}

bool qcow2_bitmap_get(BDRVQcow2State *s, const Qcow2Bitmap *bm, uint64_t nr)
{
    uint64_t per = (uint64_t)s->cluster_size * 8;
    bool set = false;

    g_mutex_lock(&s->bitmap_lock);
    if (bm->chunks && nr / per < bm->nchunks && bm->chunks[nr / per]) {
        set = bm->chunks[nr / per][(nr % per) / 8] & (1U << (nr & 7));
    }
    g_mutex_unlock(&s->bitmap_lock);
    return set;
}

/* Make bm's bits cover a guest size (bits past it cleared).  bitmap_lock held. */
static void resize_bits(BDRVQcow2State *s, Qcow2Bitmap *bm, uint64_t size)
{
    uint32_t n = qcow2_bitmap_table_entries(s, size, bm->granularity_bits);

    for (uint32_t i = n; i < bm->nchunks; i++) {
        g_free(bm->chunks[i]);
    }
    if (n > bm->nchunks) {
        bm->chunks = g_renew(uint8_t *, bm->chunks, n);
        memset(bm->chunks + bm->nchunks, 0, (n - bm->nchunks) * sizeof(*bm->chunks));
    }
    bm->nchunks = n;
    if (n) {
        clear_bits_from(s, bm, n - 1, nbits(size, bm->granularity_bits));
    }
    bm->size = size;
}

int coroutine_fn qcow2_bitmaps_resize_begin(BlockDriverState *bs, uint64_t old, uint64_t new)
{
    BDRVQcow2State *s = bs->opaque;
    bool publish = false;

    if (!s->bitmaps || old == new) {
        return 0;
    }
    for (guint i = 0; i < s->bitmaps->len; i++) {
        Qcow2Bitmap *bm = bitmap_at(s, i);

        if (bm->inconsistent) {
            continue;   /* in use already: QEMU accepts any size for it */
        }
        if (!(bm->flags & QCOW2_BME_IN_USE)) {
            bm->flags |= QCOW2_BME_IN_USE;
            publish = true;
        }
        bm->store = true;
        g_mutex_lock(&s->bitmap_lock);
        resize_bits(s, bm, MAX(old, new));
        g_mutex_unlock(&s->bitmap_lock);
    }
    if (publish) {
        int ret = publish_directory(bs);
        if (ret < 0) {
            return ret;
        }
    }
    __atomic_store_n(&s->bitmaps_tracking, true, __ATOMIC_RELEASE);
    __atomic_store_n(&s->bitmaps_unmarked, false, __ATOMIC_RELEASE);
    return 0;
}

void qcow2_bitmaps_resize_end(BlockDriverState *bs, uint64_t old, uint64_t size)
{
    BDRVQcow2State *s = bs->opaque;

    if (!s->bitmaps || old == size) {
        return;
    }
    g_mutex_lock(&s->bitmap_lock);
    mark_changed(s, MIN(old, size), MAX(old, size) - MIN(old, size));
    for (guint i = 0; i < s->bitmaps->len; i++) {
        Qcow2Bitmap *bm = bitmap_at(s, i);
        if (bm->store) {
            resize_bits(s, bm, size);
        }
    }
    g_mutex_unlock(&s->bitmap_lock);
}

/* --- storing --- */

/* Write bm's bits into new clusters and a new bitmap table; *table_off and *table (host
 * order, owned) describe them.  Nothing points to them yet: they become durable with the
 * flush that precedes the directory's publication (publish_directory).  Lock held. */
static int coroutine_fn write_bitmap(BlockDriverState *bs, Qcow2Bitmap *bm,
                                     uint64_t *table_off, uint64_t **table)
{
    BDRVQcow2State *s = bs->opaque;
    uint32_t n = bm->nchunks;
    uint64_t tbytes = ROUND_UP((uint64_t)n * 8, s->cluster_size);
    g_autofree uint64_t *t = g_new0(uint64_t, n);
    g_autofree uint64_t *be = g_malloc0(tbytes);
    int64_t off;
    int ret;

    for (uint32_t i = 0; i < n; i++) {
        if (!bm->chunks[i] || all_zero(bm->chunks[i], s->cluster_size)) {
            continue;
        }
        off = qcow2_alloc_clusters(bs, 1);
        if (off < 0) {
            ret = off;
            goto fail;
        }
        t[i] = off;
        ret = qcow2_meta_pwrite(bs, QCOW2_META_NONE, "bitmap data", off, s->cluster_size,
                                bm->chunks[i]);
        if (ret < 0) {
            goto fail;
        }
    }
    off = qcow2_alloc_clusters(bs, tbytes >> s->cluster_bits);
    if (off < 0) {
        ret = off;
        goto fail;
    }
    for (uint32_t i = 0; i < n; i++) {
        be[i] = GUINT64_TO_BE(t[i]);
    }
    ret = qcow2_meta_pwrite(bs, QCOW2_META_NONE, "a new bitmap table", off, tbytes, be);
    if (ret < 0) {
        qcow2_free_deferred(bs, off, tbytes);
        goto fail;
    }
    *table_off = off;
    *table = g_steal_pointer(&t);
    return 0;

fail:
    for (uint32_t i = 0; i < n; i++) {
        if (t[i]) {
            qcow2_free_deferred(bs, t[i], s->cluster_size);
        }
    }
    return ret;
}

/* Drop (deferred) the clusters of a bitmap table and of the data it points to. */
static void free_table(BlockDriverState *bs, uint64_t offset, uint32_t entries,
                       const uint64_t *table)
{
    BDRVQcow2State *s = bs->opaque;

    for (uint32_t i = 0; table && i < entries; i++) {
        if (table[i] & BME_TABLE_OFFSET_MASK) {
            qcow2_free_deferred(bs, table[i] & BME_TABLE_OFFSET_MASK, s->cluster_size);
        }
    }
    if (offset && entries) {
        qcow2_free_deferred(bs, offset, ROUND_UP((uint64_t)entries * 8, s->cluster_size));
    }
}

/* A bitmap table replaced by a store, freed once the directory no longer names it. */
typedef struct OldTable {
    uint64_t offset;
    uint32_t entries;
    uint64_t *table;         /* owned; NULL: a new bitmap, nothing to free */
} OldTable;

static void old_table_clear(void *p)
{
    g_free(((OldTable *)p)->table);
}

/* Store the bitmaps marked `store` and publish the directory (also when none is, with
 * publish: the directory changed).  No guest I/O may be in flight (close, bitmap edits).
 * Write order: each bitmap's data and its bitmap table into newly allocated clusters
 * (write_bitmap) -> publish_directory (refcounts, data, tables and the new directory flushed
 * before the header points to it) -> the replaced tables and their data freed, at the
 * flush_metadata that ends this.  Lock held. */
static int coroutine_fn store(BlockDriverState *bs, bool publish)
{
    BDRVQcow2State *s = bs->opaque;
    g_autoptr(GArray) old = g_array_new(FALSE, FALSE, sizeof(OldTable));
    bool any = publish;
    int ret = 0;

    g_array_set_clear_func(old, old_table_clear);
    if (!s->bitmaps || s->corrupt_stop || qcow2_is_read_only(s)) {
        return 0;
    }
    for (guint i = 0; i < s->bitmaps->len; i++) {
        any |= bitmap_at(s, i)->store;
    }
    if (!any) {
        return 0;
    }
    /* from here on no write sets bits (the image is closing, or a bitmap command runs) */
    __atomic_store_n(&s->bitmaps_tracking, false, __ATOMIC_RELEASE);

    for (guint i = 0; i < s->bitmaps->len; i++) {
        Qcow2Bitmap *bm = bitmap_at(s, i);
        OldTable o;
        uint64_t toff = 0;
        uint64_t *table = NULL;

        if (!bm->store) {
            continue;
        }
        if (bm->nchunks == 0) {
            log_warning("%s: qcow2 bitmap '%s' of an empty image cannot be stored; it stays "
                        "in use", bs->filename, bm->name);
            continue;
        }
        ret = write_bitmap(bs, bm, &toff, &table);
        if (ret < 0) {
            break;
        }
        o.offset = bm->table_offset;
        o.entries = bm->table_size;
        o.table = bm->table;
        g_array_append_val(old, o);
        bm->table = table;
        bm->table_offset = toff;
        bm->table_size = bm->nchunks;
        bm->flags &= ~QCOW2_BME_IN_USE;
        bm->store = false;
    }
    if (ret == 0) {
        ret = publish_directory(bs);
    }
    if (ret < 0) {
        log_error("%s: qcow2: cannot store the bitmaps, which stay marked in use "
                  "(inconsistent): %s", bs->filename, g_strerror(-ret));
        return ret;
    }
    for (guint i = 0; i < old->len; i++) {
        OldTable *o = &g_array_index(old, OldTable, i);
        free_table(bs, o->offset, o->entries, o->table);
    }
    return qcow2_flush_metadata(bs);
}

int coroutine_fn qcow2_bitmaps_store(BlockDriverState *bs)
{
    return store(bs, false);
}

/* --- blkfuse info and blkfuse bitmap --- */

int qcow2_bitmap_list(BlockDriverState *bs, GPtrArray **out)
{
    BDRVQcow2State *s = bs->opaque;
    GPtrArray *a = g_ptr_array_new_with_free_func((GDestroyNotify)block_bitmap_info_free);

    for (guint i = 0; s->bitmaps && i < s->bitmaps->len; i++) {
        Qcow2Bitmap *bm = bitmap_at(s, i);
        BlockBitmapInfo *info = g_new0(BlockBitmapInfo, 1);

        info->name = g_strdup(bm->name);
        info->granularity = 1ULL << bm->granularity_bits;
        info->in_use = bm->flags & QCOW2_BME_IN_USE;
        info->enabled = bm->flags & QCOW2_BME_AUTO;
        g_ptr_array_add(a, info);
    }
    *out = a;
    return 0;
}

static Qcow2Bitmap *find_bitmap(BDRVQcow2State *s, const char *name, guint *index)
{
    for (guint i = 0; i < s->bitmaps->len; i++) {
        if (!strcmp(bitmap_at(s, i)->name, name)) {
            if (index) {
                *index = i;
            }
            return bitmap_at(s, i);
        }
    }
    return NULL;
}

/* What a bitmap named in an edit is, while the edits are checked before any is done. */
typedef enum { SIM_ABSENT, SIM_CONSISTENT, SIM_INCONSISTENT } SimState;

/* Can this edit be done, after the ones before it?  sim: name -> SimState, updated. */
static bool check_edit(BDRVQcow2State *s, GHashTable *sim, uint32_t *count,
                       const BdrvBitmapEdit *e, GError **errp)
{
    SimState st = GPOINTER_TO_INT(g_hash_table_lookup(sim, e->name));

    if (e->action == BDRV_BITMAP_ADD) {
        uint64_t g = e->granularity;
        int gb = g ? ctz64(g) : 0;

        if (st != SIM_ABSENT) {
            error_setg(errp, "bitmap '%s' already exists", e->name);
            return false;
        }
        if (s->version < 3) {
            error_setg(errp, "cannot store bitmaps in qcow2 version 2 images (compat=0.10)");
            return false;
        }
        if (!*e->name || strlen(e->name) > BME_MAX_NAME_SIZE) {
            error_setg(errp, "bitmap names are 1 to %d bytes long", BME_MAX_NAME_SIZE);
            return false;
        }
        if (!is_power_of_2(g) || gb < BME_MIN_GRANULARITY_BITS ||
            gb > BME_MAX_GRANULARITY_BITS) {
            error_setg(errp, "invalid granularity %" G_GUINT64_FORMAT " (a power of two from "
                       "512 to 2G)", g);
            return false;
        }
        if (s->size == 0) {
            error_setg(errp, "cannot add a bitmap to an image of size 0");
            return false;
        }
        if ((uint64_t)qcow2_bitmap_table_entries(s, s->size, gb) * s->cluster_size >
            BME_MAX_PHYS_SIZE) {
            error_setg(errp, "bitmap '%s' would be too large at granularity %" G_GUINT64_FORMAT
                       "; use a larger granularity", e->name, g);
            return false;
        }
        if (++*count > QCOW2_MAX_BITMAPS) {
            error_setg(errp, "too many bitmaps (at most %d)", QCOW2_MAX_BITMAPS);
            return false;
        }
        g_hash_table_replace(sim, (char *)e->name, GINT_TO_POINTER(SIM_CONSISTENT));
        return true;
    }
    if (st == SIM_ABSENT) {
        error_setg(errp, "bitmap '%s' not found", e->name);
        return false;
    }
    if (e->action == BDRV_BITMAP_REMOVE) {
        (*count)--;
        g_hash_table_replace(sim, (char *)e->name, GINT_TO_POINTER(SIM_ABSENT));
        return true;
    }
    if (st == SIM_INCONSISTENT) {
        error_setg(errp, "bitmap '%s' is inconsistent (in use: not stored after its last use) "
                   "and cannot be used; remove it", e->name);
        return false;
    }
    return true;
}

typedef struct EditArgs {
    BlockDriverState *bs;
    const BdrvBitmapEdit *edits;
    int n;
    int ret;
} EditArgs;

/* Do the checked edits; removed bitmaps' clusters are freed after the new directory is
 * published (the store).  Lock held. */
static int coroutine_fn do_edits(BlockDriverState *bs, const BdrvBitmapEdit *edits, int n)
{
    BDRVQcow2State *s = bs->opaque;
    g_autoptr(GArray) removed = g_array_new(FALSE, FALSE, sizeof(OldTable));
    bool changed = false;
    int ret;

    g_array_set_clear_func(removed, old_table_clear);
    for (int i = 0; i < n; i++) {
        const BdrvBitmapEdit *e = &edits[i];
        guint idx = 0;
        Qcow2Bitmap *bm = find_bitmap(s, e->name, &idx);

        switch (e->action) {
        case BDRV_BITMAP_ADD:
            bm = g_new0(Qcow2Bitmap, 1);
            bm->name = g_strdup(e->name);
            bm->granularity_bits = ctz64(e->granularity);
            bm->flags = QCOW2_BME_AUTO;
            bm->size = s->size;
            bm->nchunks = qcow2_bitmap_table_entries(s, s->size, bm->granularity_bits);
            bm->chunks = g_new0(uint8_t *, bm->nchunks);
            bm->store = true;
            g_ptr_array_add(s->bitmaps, bm);
            break;
        case BDRV_BITMAP_REMOVE: {
            OldTable o = { .offset = bm->table_offset, .entries = bm->table_size,
                           .table = g_steal_pointer(&bm->table) };
            if (!o.table && o.offset && read_table(bs, o.offset, o.entries, &o.table) < 0) {
                /* an unreadable table of an inconsistent bitmap: its data clusters leak */
                log_warning("%s: qcow2 bitmap '%s': cannot read its bitmap table; its data "
                            "clusters are leaked", bs->filename, bm->name);
            }
            g_array_append_val(removed, o);
            g_ptr_array_remove_index(s->bitmaps, idx);
            break;
        }
        case BDRV_BITMAP_CLEAR:
            for (uint32_t k = 0; k < bm->nchunks; k++) {
                g_clear_pointer(&bm->chunks[k], g_free);
            }
            bm->store = true;
            break;
        case BDRV_BITMAP_ENABLE:
            bm->flags |= QCOW2_BME_AUTO;
            bm->store = true;
            break;
        case BDRV_BITMAP_DISABLE:
            bm->flags &= ~QCOW2_BME_AUTO;
            bm->store = true;
            break;
        }
        changed = true;
    }
    if (!changed) {
        return 0;
    }
    ret = store(bs, true);
    if (ret < 0) {
        return ret;
    }
    for (guint i = 0; i < removed->len; i++) {
        OldTable *o = &g_array_index(removed, OldTable, i);
        free_table(bs, o->offset, o->entries, o->table);
    }
    return qcow2_flush_metadata(bs);
}

static void coroutine_fn edit_entry(void *opaque)
{
    EditArgs *a = opaque;
    BDRVQcow2State *s = a->bs->opaque;

    co_mutex_lock(&s->lock);
    a->ret = do_edits(a->bs, a->edits, a->n);
    co_mutex_unlock(&s->lock);
}

int qcow2_bitmap_edit(BlockDriverState *bs, const BdrvBitmapEdit *edits, int n, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autoptr(GHashTable) sim = g_hash_table_new(g_str_hash, g_str_equal);
    g_autofree BdrvBitmapEdit *e = g_memdup2(edits, sizeof(*edits) * MAX(n, 1));
    EditArgs a = { .bs = bs, .edits = e, .n = n };
    uint32_t count;

    if (qcow2_is_read_only(s) || !s->bitmaps) {
        error_setg(errp, "%s: image is read-only", bs->filename);
        return -EROFS;
    }
    count = s->bitmaps->len;
    for (guint i = 0; i < s->bitmaps->len; i++) {
        Qcow2Bitmap *bm = bitmap_at(s, i);
        g_hash_table_replace(sim, bm->name, GINT_TO_POINTER(bm->inconsistent ?
                                                            SIM_INCONSISTENT : SIM_CONSISTENT));
    }
    for (int i = 0; i < n; i++) {
        if (e[i].action == BDRV_BITMAP_ADD && !e[i].granularity) {
            /* QEMU's default: the cluster size, within 4 KiB .. 64 KiB */
            e[i].granularity = MIN(65536, MAX(4096, s->cluster_size));
        }
        if (!check_edit(s, sim, &count, &e[i], errp)) {
            g_prefix_error(errp, "%s: ", bs->filename);
            return -EINVAL;
        }
    }
    aio_run_coroutine(edit_entry, &a);
    if (a.ret < 0) {
        error_setg_errno(errp, -a.ret, "%s: cannot store the qcow2 bitmaps", bs->filename);
    }
    return a.ret;
}

/* The dirty ranges of bm's bits, merged, clamped to bm's size.  bitmap_lock held. */
static GArray *dirty_ranges(BDRVQcow2State *s, Qcow2Bitmap *bm)
{
    GArray *r = g_array_new(FALSE, FALSE, sizeof(uint64_t) * 2);
    uint64_t per = (uint64_t)s->cluster_size * 8, gran = 1ULL << bm->granularity_bits;
    uint64_t start = 0, end = 0;    /* the range being built, in bytes */

    for (uint32_t i = 0; i < bm->nchunks; i++) {
        const uint8_t *c = bm->chunks[i];

        for (uint64_t byte = 0; c && byte < s->cluster_size; byte++) {
            if (!c[byte]) {
                continue;
            }
            for (int b = 0; b < 8; b++) {
                uint64_t off, nr = (uint64_t)i * per + byte * 8 + b;

                if (!(c[byte] & (1U << b))) {
                    continue;
                }
                off = nr * gran;
                if (off >= bm->size) {
                    break;
                }
                if (end == off && end > start) {
                    end = MIN(off + gran, bm->size);
                    continue;
                }
                if (end > start) {
                    uint64_t range[2] = { start, end - start };
                    g_array_append_val(r, range);
                }
                start = off;
                end = MIN(off + gran, bm->size);
            }
        }
    }
    if (end > start) {
        uint64_t range[2] = { start, end - start };
        g_array_append_val(r, range);
    }
    return r;
}

typedef struct LoadArgs {
    BlockDriverState *bs;
    Qcow2Bitmap *bm;
    GError **errp;
    int ret;
} LoadArgs;

static void coroutine_fn load_entry(void *opaque)
{
    LoadArgs *a = opaque;
    a->ret = load_bitmap(a->bs, a->bm, a->errp);
}

int qcow2_bitmap_ranges(BlockDriverState *bs, const char *name, GArray **ranges,
                        GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmap *bm = s->bitmaps ? find_bitmap(s, name, NULL) : NULL;

    if (!bm) {
        error_setg(errp, "%s: bitmap '%s' not found", bs->filename, name);
        return -ENOENT;
    }
    if (bm->inconsistent) {
        error_setg(errp, "%s: bitmap '%s' is inconsistent (in use: not stored after its last "
                   "use) and cannot be used; remove it and take a full backup", bs->filename,
                   name);
        return -EINVAL;
    }
    if (!bm->chunks) {
        /* a read-only open reads only the directory: load the bits now */
        LoadArgs a = { .bs = bs, .bm = bm, .errp = errp };

        aio_run_coroutine(load_entry, &a);
        if (a.ret < 0) {
            g_prefix_error(errp, "%s: ", bs->filename);
            return a.ret;
        }
    }
    g_mutex_lock(&s->bitmap_lock);
    *ranges = dirty_ranges(s, bm);
    g_mutex_unlock(&s->bitmap_lock);
    return 0;
}

/* --- the changed view (blkfuse mount -r --changed=BITMAP) --- */

int coroutine_fn qcow2_bitmaps_changed_view(BlockDriverState *bs, const char *name,
                                            GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const char *fn = bs->filename ? bs->filename : "image";
    Qcow2Bitmap *bm = s->bitmaps ? find_bitmap(s, name, NULL) : NULL;
    int ret;

    if (!s->read_only) {
        error_setg(errp, "%s: changed=%s needs a read-only open (blkfuse mount -r)", fn, name);
        return -EINVAL;
    }
    if (!bm) {
        error_setg(errp, "%s: bitmap '%s' not found", fn, name);
        return -ENOENT;
    }
    if (bm->inconsistent) {
        error_setg(errp, "%s: bitmap '%s' is inconsistent (in use: not stored after its last "
                   "use) and cannot be used", fn, name);
        return -EINVAL;
    }
    ret = load_bitmap(bs, bm, errp);
    if (ret < 0) {
        g_prefix_error(errp, "%s: ", fn);
        return ret;
    }
    s->changed_bm = bm;
    return 0;
}

/* Is granule nr of bm set?  How many granules from nr on have the same value (at most max)?
 * Whole zero chunks and zero bytes are skipped at once. */
static uint64_t same_run(BDRVQcow2State *s, const Qcow2Bitmap *bm, uint64_t nr, uint64_t max,
                         bool *dirty)
{
    uint64_t per = (uint64_t)s->cluster_size * 8, n = 0;

    *dirty = qcow2_bitmap_get(s, bm, nr);
    while (n < max) {
        uint64_t b = nr + n;
        const uint8_t *c = b / per < bm->nchunks ? bm->chunks[b / per] : NULL;

        if (!*dirty && !c) {
            n += per - b % per;             /* a chunk of zeros */
            continue;
        }
        if (!*dirty && !(b & 7) && !c[(b % per) / 8]) {
            n += 8;                         /* a byte of zeros */
            continue;
        }
        if (*dirty && !(b & 7) && c && c[(b % per) / 8] == 0xff) {
            n += 8;
            continue;
        }
        if (!!(c && (c[(b % per) / 8] & (1U << (b & 7)))) != *dirty) {
            break;
        }
        n++;
    }
    return MIN(n, max);
}

int qcow2_changed_block_status(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                               int64_t *pnum)
{
    BDRVQcow2State *s = bs->opaque;
    const Qcow2Bitmap *bm = s->changed_bm;
    int gb = bm->granularity_bits;
    uint64_t first = offset >> gb, last = (offset + bytes - 1) >> gb, end;
    bool dirty;
    uint64_t n = same_run(s, bm, first, last - first + 1, &dirty);

    end = MIN((first + n) << gb, offset + bytes);
    *pnum = end - offset;
    /* changed: data (even if it reads as zeros: a backup must copy it); else a hole */
    return dirty ? BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED :
                   BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED;
}

int64_t qcow2_changed_bytes(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    g_autoptr(GArray) r = NULL;
    int64_t total = 0;

    g_mutex_lock(&s->bitmap_lock);
    r = dirty_ranges(s, s->changed_bm);
    g_mutex_unlock(&s->bitmap_lock);
    for (guint i = 0; i < r->len; i++) {
        total += g_array_index(r, uint64_t, 2 * i + 1);
    }
    return total;
}
