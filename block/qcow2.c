/* qcow2.c - qcow2 format driver: header parsing and validation, open/close, guest I/O entry
 * points, flush, truncate, block status, info and image creation.
 *
 * Threads: open, close, get_info and create run in the main thread (open and close run their
 * I/O in a coroutine through aio_run_coroutine); the I/O callbacks run in coroutines in any
 * thread and serialise metadata access with BDRVQcow2State.lock (see qcow2.h).
 */
#include <errno.h>
#include <string.h>
#include "config.h"
#include "block/aio.h"
#include "block/qcow2.h"
#include "block/util.h"

#define QCOW2_V2_HEADER_LEN     72
#define QCOW2_V3_HEADER_LEN     104
#define QCOW2_CREATE_HEADER_LEN 112
#define QCOW2_L2_CACHE_MAX      (128ULL * 1024 * 1024)

static int qcow2_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    /* Any version claims the image, as in QEMU: a future version must fail to open with
     * "unsupported qcow2 version", not silently pass for a raw image. */
    if (buf_size >= 8 && ldbe32(buf) == QCOW2_MAGIC && ldbe32(buf + 4) >= 2) {
        return 100;
    }
    return 0;
}

/* Names of the incompatible feature bits set in `bits`, from the image's feature name table
 * when it has one. */
static char *feature_names(BDRVQcow2State *s, uint64_t bits)
{
    static const char *const known[] = {
        "dirty bit", "corrupt bit", "external data file", "compression type",
        "extended L2 entries",
    };
    GString *str = g_string_new(NULL);

    for (int bit = 0; bit < 64; bit++) {
        const char *name = NULL;
        char buf[48];

        if (!(bits & (1ULL << bit))) {
            continue;
        }
        for (uint32_t i = 0; s->feature_table && i + 48 <= s->feature_table_len; i += 48) {
            const uint8_t *f = (const uint8_t *)s->feature_table + i;
            if (f[0] == 0 && f[1] == bit) {
                memcpy(buf, f + 2, 46);
                buf[46] = 0;
                name = buf;
                break;
            }
        }
        if (!name && bit < (int)G_N_ELEMENTS(known)) {
            name = known[bit];
        }
        if (str->len) {
            g_string_append(str, ", ");
        }
        if (name) {
            g_string_append(str, name);
        } else {
            g_string_append_printf(str, "incompatible feature bit %d", bit);
        }
    }
    return g_string_free(str, FALSE);
}

static void qcow2_free_state(BDRVQcow2State *s)
{
    qcow2_cache_free(s->l2_cache);
    s->l2_cache = NULL;
    qcow2_cache_free(s->rb_cache);
    s->rb_cache = NULL;
    g_free(s->l1_table);
    s->l1_table = NULL;
    g_free(s->refcount_table);
    s->refcount_table = NULL;
    g_free(s->feature_table);
    s->feature_table = NULL;
    qcow2_free_snapshots(s);
    qcow2_bitmaps_free(s);
    qcow2_overlap_free(s);
    if (s->pending_frees) {
        g_array_free(s->pending_frees, TRUE);
        s->pending_frees = NULL;
    }
}

typedef struct Qcow2OpenArgs {
    BlockDriverState *bs;
    int flags;
    uint64_t l2_cache_size;          /* 0 = default */
    uint64_t rb_cache_size;          /* 0 = default */
    char *snapshot;
    char *changed;                   /* changed=BITMAP: the changed view */
    GError **errp;
    int ret;
} Qcow2OpenArgs;

static int coroutine_fn qcow2_do_open(Qcow2OpenArgs *a)
{
    BlockDriverState *bs = a->bs;
    BDRVQcow2State *s = bs->opaque;
    GError **errp = a->errp;
    const char *fn = bs->filename ? bs->filename : "image";
    uint8_t first[QCOW2_CREATE_HEADER_LEN];
    g_autofree uint8_t *hdr = NULL;
    int64_t flen;
    uint32_t magic, cluster_bits, crypt, rt_clusters, refcount_order = 4;
    uint64_t backing_off, l1_bytes, rt_bytes;
    uint32_t backing_len;
    uint64_t ext_pos, hdr_read;
    const uint8_t *bitmaps_ext = NULL;
    uint32_t bitmaps_ext_len = 0;
    int ret;

    co_mutex_init(&s->lock);
    g_mutex_init(&s->bitmap_lock);      /* futex based: nothing to clear */
    s->grow_base = -1;
    s->checking = a->flags & BDRV_O_CHECK;
    s->pending_frees = g_array_new(FALSE, FALSE, sizeof(Qcow2PendingFree));

    flen = bdrv_getlength(bs->file->bs);
    if (flen < 0) {
        error_setg_errno(errp, flen, "%s: cannot get file size", fn);
        return flen;
    }
    if (flen < QCOW2_V2_HEADER_LEN) {
        error_setg(errp, "%s: not a qcow2 image (file too short)", fn);
        return -EINVAL;
    }
    memset(first, 0, sizeof(first));
    ret = bdrv_co_pread(bs->file->bs, 0, MIN((int64_t)sizeof(first), flen), first, 0);
    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: cannot read the qcow2 header", fn);
        return ret;
    }
    magic = ldbe32(first);
    if (magic != QCOW2_MAGIC) {
        error_setg(errp, "%s: not a qcow2 image (bad magic)", fn);
        return -EINVAL;
    }
    s->version = ldbe32(first + 4);
    if (s->version != 2 && s->version != 3) {
        error_setg(errp, "%s: unsupported qcow2 version %d", fn, s->version);
        return -ENOTSUP;
    }
    cluster_bits = ldbe32(first + 20);
    if (cluster_bits < QCOW2_MIN_CLUSTER_BITS || cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
        error_setg(errp, "%s: unsupported qcow2 cluster size 2^%u", fn, cluster_bits);
        return -EINVAL;
    }
    backing_off = ldbe64(first + 8);
    backing_len = ldbe32(first + 16);
    s->size = ldbe64(first + 24);
    crypt = ldbe32(first + 32);
    s->l1_size = ldbe32(first + 36);
    s->l1_table_offset = ldbe64(first + 40);
    s->refcount_table_offset = ldbe64(first + 48);
    rt_clusters = ldbe32(first + 56);
    s->nb_snapshots = ldbe32(first + 60);
    s->snapshots_offset = ldbe64(first + 64);

    if (s->version == 3) {
        s->incompat = ldbe64(first + 72);
        s->compat = ldbe64(first + 80);
        s->autoclear = ldbe64(first + 88);
        refcount_order = ldbe32(first + 96);
        s->header_length = ldbe32(first + 100);
        if (s->header_length < QCOW2_V3_HEADER_LEN || s->header_length % 8 ||
            s->header_length > (1U << cluster_bits)) {
            error_setg(errp, "%s: invalid qcow2 header length %u", fn, s->header_length);
            return -EINVAL;
        }
        if (refcount_order > 6) {
            error_setg(errp, "%s: invalid qcow2 refcount order %u", fn, refcount_order);
            return -EINVAL;
        }
    } else {
        s->header_length = QCOW2_V2_HEADER_LEN;
    }

    /* The whole first cluster: header, extensions, backing file name. */
    hdr_read = MIN((uint64_t)flen, 1ULL << cluster_bits);
    hdr = g_malloc0(1ULL << cluster_bits);
    ret = bdrv_co_pread(bs->file->bs, 0, hdr_read, hdr, 0);
    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: cannot read the qcow2 header", fn);
        return ret;
    }

    /* Header extensions */
    ext_pos = s->header_length;
    while (ext_pos + 8 <= (1ULL << cluster_bits)) {
        uint32_t type = ldbe32(hdr + ext_pos);
        uint32_t len = ldbe32(hdr + ext_pos + 4);

        if (type == QCOW2_EXT_END) {
            break;
        }
        if (len > (1ULL << cluster_bits) - ext_pos - 8) {
            error_setg(errp, "%s: qcow2 header extension %#x is too large", fn, type);
            return -EINVAL;
        }
        switch (type) {
        case QCOW2_EXT_BACKING_FORMAT:
            if (len > QCOW2_MAX_BACKING_NAME) {
                error_setg(errp, "%s: qcow2 backing format name too long", fn);
                return -EINVAL;
            }
            g_free(bs->backing_format);
            bs->backing_format = g_strndup((char *)hdr + ext_pos + 8, len);
            break;
        case QCOW2_EXT_FEATURE_TABLE:
            g_free(s->feature_table);
            s->feature_table = g_memdup2(hdr + ext_pos + 8, len);
            s->feature_table_len = len;
            break;
        case QCOW2_EXT_CRYPTO:
            error_setg(errp, "%s: encrypted qcow2 images are not supported", fn);
            return -ENOTSUP;
        case QCOW2_EXT_BITMAPS:
            bitmaps_ext = hdr + ext_pos + 8;    /* read once the geometry is known */
            bitmaps_ext_len = len;
            break;
        default:
            break;      /* data file name, unknown: preserved, not interpreted */
        }
        ext_pos += 8 + ROUND_UP((uint64_t)len, 8);
    }

    if (s->incompat & ~QCOW2_INCOMPAT_KNOWN) {
        g_autofree char *names = feature_names(s, s->incompat & ~QCOW2_INCOMPAT_KNOWN);
        error_setg(errp, "%s: unsupported qcow2 feature: %s", fn, names);
        return -ENOTSUP;
    }
    if (s->incompat & QCOW2_INCOMPAT_DATA_FILE) {
        error_setg(errp, "%s: qcow2 images with an external data file are not supported", fn);
        return -ENOTSUP;
    }
    if (crypt != 0) {
        error_setg(errp, "%s: encrypted qcow2 images are not supported", fn);
        return -ENOTSUP;
    }
    s->compression_type = QCOW2_COMPRESSION_ZLIB;
    if (s->header_length > 104) {
        s->compression_type = hdr[104];
    }
    if (s->incompat & QCOW2_INCOMPAT_COMPRESSION) {
        if (s->compression_type != QCOW2_COMPRESSION_ZSTD) {
            error_setg(errp, "%s: unsupported qcow2 compression type %d", fn,
                       s->compression_type);
            return -ENOTSUP;
        }
    } else if (s->compression_type != QCOW2_COMPRESSION_ZLIB) {
        error_setg(errp, "%s: qcow2 compression type %d set without its feature bit", fn,
                   s->compression_type);
        return -EINVAL;
    }
    if ((s->incompat & QCOW2_INCOMPAT_EXTL2) && cluster_bits < 14) {
        error_setg(errp, "%s: qcow2 extended L2 entries need 16 KiB clusters or larger", fn);
        return -EINVAL;
    }
    qcow2_set_geometry(s, cluster_bits, s->incompat & QCOW2_INCOMPAT_EXTL2, refcount_order);
    if (bitmaps_ext) {
        /* malformed: a read-only open (or a check) goes on without the bitmaps */
        ret = qcow2_bitmaps_parse_ext(s, fn, bitmaps_ext, bitmaps_ext_len,
                                      s->checking || !(a->flags & BDRV_O_RDWR), errp);
        if (ret < 0) {
            return ret;
        }
    }

    if ((s->incompat & QCOW2_INCOMPAT_CORRUPT) && !s->checking) {
        if (a->flags & BDRV_O_RDWR) {
            error_setg(errp, "%s: qcow2 image is marked corrupt and cannot be opened "
                       "read-write; run 'qemu-img check -r all' to repair it", fn);
            return -EACCES;
        }
        log_warning("%s: qcow2 image is marked corrupt; opened read-only", fn);
    }

    /* Backing file name */
    if (backing_off) {
        if (backing_len > QCOW2_MAX_BACKING_NAME || backing_off > (1ULL << cluster_bits) ||
            backing_off + backing_len > (1ULL << cluster_bits)) {
            error_setg(errp, "%s: invalid qcow2 backing file name location", fn);
            return -EINVAL;
        }
        g_free(bs->backing_file);
        bs->backing_file = g_strndup((char *)hdr + backing_off, backing_len);
        if (!bs->backing_file[0]) {
            g_clear_pointer(&bs->backing_file, g_free);
        }
    }

    /* Sizes and the L1 table */
    if (s->size > (uint64_t)INT64_MAX - s->cluster_size) {
        error_setg(errp, "%s: invalid qcow2 image size", fn);
        return -EINVAL;
    }
    l1_bytes = (uint64_t)s->l1_size * 8;
    if (l1_bytes > QCOW2_MAX_L1_BYTES) {
        error_setg(errp, "%s: qcow2 L1 table too large (%u entries)", fn, s->l1_size);
        return -EFBIG;
    }
    if (s->l1_size < qcow2_l1_entries_for(s, s->size)) {
        error_setg(errp, "%s: qcow2 L1 table too small for the image size", fn);
        return -EINVAL;
    }
    if (s->l1_size && (s->l1_table_offset & (s->cluster_size - 1))) {
        error_setg(errp, "%s: qcow2 L1 table offset is not cluster aligned", fn);
        return -EINVAL;
    }
    if (s->l1_size && s->l1_table_offset + l1_bytes > (uint64_t)flen && !s->checking) {
        error_setg(errp, "%s: qcow2 L1 table lies beyond the end of the file", fn);
        return -EINVAL;
    }
    s->l1_table = g_new0(uint64_t, MAX(s->l1_size, 1));
    if (l1_bytes) {
        ret = bdrv_co_pread(bs->file->bs, s->l1_table_offset, l1_bytes, s->l1_table, 0);
        if (ret < 0) {
            error_setg_errno(errp, ret, "%s: cannot read the qcow2 L1 table", fn);
            return ret;
        }
        for (uint32_t i = 0; i < s->l1_size; i++) {
            s->l1_table[i] = GUINT64_FROM_BE(s->l1_table[i]);
        }
    }

    /* Refcount table */
    rt_bytes = (uint64_t)rt_clusters << cluster_bits;
    if ((rt_clusters == 0 && !s->checking) || rt_bytes > QCOW2_MAX_REFTABLE_BYTES) {
        error_setg(errp, "%s: invalid qcow2 refcount table size (%u clusters)", fn,
                   rt_clusters);
        return -EINVAL;
    }
    if (!s->refcount_table_offset || (s->refcount_table_offset & (s->cluster_size - 1)) ||
        (s->refcount_table_offset >= (uint64_t)flen && !s->checking)) {
        error_setg(errp, "%s: invalid qcow2 refcount table offset", fn);
        return -EINVAL;
    }
    s->refcount_table_size = rt_bytes / 8;
    s->refcount_table = g_new0(uint64_t, s->refcount_table_size);
    {
        uint64_t n = MIN(rt_bytes, (uint64_t)MAX(flen - (int64_t)s->refcount_table_offset, 0));
        if (n) {
            ret = bdrv_co_pread(bs->file->bs, s->refcount_table_offset, n, s->refcount_table, 0);
            if (ret < 0) {
                error_setg_errno(errp, ret, "%s: cannot read the qcow2 refcount table", fn);
                return ret;
            }
        }
    }
    for (uint32_t i = 0; i < s->refcount_table_size; i++) {
        s->refcount_table[i] = GUINT64_FROM_BE(s->refcount_table[i]);
        if (((s->refcount_table[i] & REFT_OFFSET_MASK) & (s->cluster_size - 1)) &&
            !s->checking) {
            error_setg(errp, "%s: qcow2 refcount block %u is not cluster aligned", fn, i);
            return -EINVAL;
        }
    }

    ret = qcow2_read_snapshots(bs, errp);
    if (ret < 0) {
        return ret;
    }

    /* Caches */
    {
        uint64_t l2_bytes = a->l2_cache_size;
        uint64_t need = (uint64_t)MAX(s->l1_size, 1) * s->cluster_size;
        uint64_t l2_n, rb_n;

        if (!l2_bytes) {
            l2_bytes = ((8ULL << 30) >> cluster_bits) * s->l2_entry_size;
            l2_bytes = MIN(l2_bytes, QCOW2_L2_CACHE_MAX);
            l2_bytes = MIN(l2_bytes, need);
        }
        l2_n = MAX(l2_bytes / s->cluster_size, 4);
        l2_n = MIN(l2_n, 1U << 20);
        rb_n = a->rb_cache_size ? a->rb_cache_size / s->cluster_size : l2_n / 4;
        rb_n = MIN(MAX(rb_n, 4), 1U << 18);
        s->l2_cache = qcow2_cache_new(l2_n, true, s->cluster_size);
        s->rb_cache = qcow2_cache_new(rb_n, false, s->cluster_size);
    }

    s->read_only = !(a->flags & BDRV_O_RDWR);
    if (a->snapshot) {
        if (!s->read_only) {
            error_setg(errp, "%s: qcow2 snapshot '%s' can only be opened read-only", fn,
                       a->snapshot);
            return -EINVAL;
        }
        ret = qcow2_load_snapshot(bs, a->snapshot, errp);
        if (ret < 0) {
            return ret;
        }
    }

    if (!s->read_only) {
        s->lazy_refcounts = s->version >= 3 && (s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS);
        if (!s->checking) {
            qcow2_overlap_init(bs);     /* a check writes the file directly, not through it */
        }
        if ((s->incompat & QCOW2_INCOMPAT_DIRTY) && !s->checking) {
            log_info("%s: qcow2 image was not closed cleanly; repairing refcounts", fn);
            ret = qcow2_rebuild_refcounts(bs, errp);
            if (ret < 0) {
                return ret;
            }
            qcow2_overlap_refresh(s);       /* a new refcount table and blocks */
        }
        /* Unknown autoclear features are dropped (their data may not survive our writes);
         * the bitmaps bit stays when the bitmaps are valid: they are kept up to date. */
        uint64_t keep = s->nb_bitmaps ? QCOW2_AUTOCLEAR_BITMAPS : 0;
        if (s->autoclear & ~keep) {
            ret = qcow2_write_header_field(bs, QCOW2_HDR_AUTOCLEAR, 8, s->autoclear & keep);
            if (ret == 0) {
                ret = qcow2_flush_file(bs);
            }
            if (ret < 0) {
                error_setg_errno(errp, ret, "%s: cannot update the qcow2 header", fn);
                return ret;
            }
            s->autoclear &= keep;
        }
    }
    if (!s->checking) {
        /* a check reads the bitmaps itself (qcow2-check.c) */
        ret = qcow2_bitmaps_open(bs, errp);
        if (ret < 0) {
            return ret;
        }
    }
    if (a->changed) {
        return qcow2_bitmaps_changed_view(bs, a->changed, errp);
    }
    return 0;
}

static void coroutine_fn qcow2_open_entry(void *opaque)
{
    Qcow2OpenArgs *a = opaque;
    a->ret = qcow2_do_open(a);
}

static int qcow2_open(BlockDriverState *bs, BlockOptions *opts, int flags, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2OpenArgs a = { .bs = bs, .flags = flags, .errp = errp };
    bool found;
    int ret;

    if (!block_options_take_size(opts, "l2-cache-size", &a.l2_cache_size, &found, errp) ||
        !block_options_take_size(opts, "refcount-cache-size", &a.rb_cache_size, &found,
                                 errp)) {
        return -EINVAL;
    }
    a.changed = block_options_take(opts, "changed");
    a.snapshot = block_options_take(opts, "snapshot-name");
    if (!a.snapshot) {
        a.snapshot = block_options_take(opts, "snapshot.name");
    }
    aio_run_coroutine(qcow2_open_entry, &a);
    g_free(a.snapshot);
    g_free(a.changed);
    ret = a.ret;
    if (ret < 0) {
        qcow2_free_state(s);
        return ret;
    }
    if (bs->backing_file && !(flags & BDRV_O_NO_BACKING)) {
        ret = bdrv_open_backing(bs, flags, errp);
        if (ret < 0) {
            qcow2_free_state(s);
            return ret;
        }
    }
    return 0;
}

/* Final metadata write-back; clears the dirty bit we set in lazy refcount mode. */
static int coroutine_fn qcow2_do_close(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (qcow2_is_read_only(s) || !s->l2_cache) {
        return 0;
    }
    co_mutex_lock(&s->lock);
    qcow2_bitmaps_store(bs);    /* failure logged; the bitmaps stay in use (inconsistent) */
    ret = qcow2_flush_metadata(bs);
    if (ret == 0 && s->pending_frees->len) {
        ret = qcow2_flush_metadata(bs);
    }
    if (ret == 0 && s->dirty_set && (s->incompat & QCOW2_INCOMPAT_DIRTY)) {
        ret = qcow2_flush_file(bs);
        if (ret == 0) {
            ret = qcow2_write_header_field(bs, QCOW2_HDR_INCOMPAT, 8,
                                           s->incompat & ~QCOW2_INCOMPAT_DIRTY);
        }
        if (ret == 0) {
            s->incompat &= ~QCOW2_INCOMPAT_DIRTY;
            s->dirty_set = false;
        }
    }
    if (ret == 0) {
        ret = qcow2_flush_file(bs);
    }
    if (ret == 0) {
        qcow2_trim_file(bs);    /* the space grown ahead of allocation and not used */
    }
    co_mutex_unlock(&s->lock);
    if (ret < 0 && !s->corrupt_stop) {
        log_error("%s: qcow2: cannot write metadata on close: %s", bs->filename,
                  g_strerror(-ret));
    }
    return ret;
}

static void coroutine_fn qcow2_close_entry(void *opaque)
{
    qcow2_do_close(opaque);
}

static void qcow2_close(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    if (s->l2_cache && !qcow2_is_read_only(s)) {
        aio_run_coroutine(qcow2_close_entry, bs);
    }
    qcow2_free_state(s);
}

static void qcow2_refresh_limits(BlockDriverState *bs)
{
    bs->bl.request_alignment = 1;
    bs->bl.mem_alignment = 1;      /* the file driver bounces unaligned buffers */
    bs->bl.max_transfer = 0;
}

static int64_t qcow2_getlength(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    return __atomic_load_n(&s->size, __ATOMIC_ACQUIRE);
}

static int coroutine_fn qcow2_co_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       void *buf, BdrvRequestFlags flags)
{
    BDRVQcow2State *s = bs->opaque;
    uint8_t *p = buf;
    int ret;

    while (bytes > 0) {
        Qcow2Extent ext;
        uint64_t n;

        co_mutex_lock(&s->lock);
        ret = qcow2_get_extent(bs, offset, bytes, &ext);
        co_mutex_unlock(&s->lock);
        if (ret < 0) {
            return ret;
        }
        n = ext.bytes;
        switch (ext.type) {
        case QCOW2_SC_UNALLOC_PLAIN:
        case QCOW2_SC_UNALLOC_ALLOC:
            ret = qcow2_read_backing(bs, offset, n, p);
            break;
        case QCOW2_SC_ZERO_PLAIN:
        case QCOW2_SC_ZERO_ALLOC:
            memset(p, 0, n);
            ret = 0;
            break;
        case QCOW2_SC_NORMAL:
            ret = bdrv_co_pread(bs->file->bs, ext.host, n, p, 0);
            break;
        case QCOW2_SC_COMPRESSED:
            ret = qcow2_read_entry_range(bs, offset, n, ext.entry, 0, p);
            break;
        default:
            ret = -EIO;
            break;
        }
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
        p += n;
    }
    return 0;
}

static int coroutine_fn qcow2_co_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        const void *buf, BdrvRequestFlags flags)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (qcow2_is_read_only(s)) {
        return -EROFS;
    }
    ret = qcow2_bitmaps_before_change(bs, offset, bytes);
    if (ret < 0) {
        return ret;
    }
    return qcow2_do_pwrite(bs, offset, bytes, buf);
}

static int coroutine_fn qcow2_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                               int64_t bytes, BdrvRequestFlags flags)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (qcow2_is_read_only(s)) {
        return -EROFS;
    }
    ret = qcow2_bitmaps_before_change(bs, offset, bytes);
    if (ret < 0) {
        return ret;
    }
    return qcow2_zero_range(bs, offset, bytes, flags & BDRV_REQ_MAY_UNMAP);
}

static int coroutine_fn qcow2_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (qcow2_is_read_only(s)) {
        return -EROFS;
    }
    ret = qcow2_bitmaps_before_change(bs, offset, bytes);
    if (ret < 0) {
        return ret;
    }
    return qcow2_zero_range(bs, offset, bytes, true);
}

static int coroutine_fn qcow2_co_preallocate(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;

    if (qcow2_is_read_only(s)) {
        return -EROFS;
    }
    return qcow2_reserve(bs, offset, bytes);
}

static int coroutine_fn qcow2_co_flush(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (qcow2_is_read_only(s)) {
        /* Found corrupt: acknowledged writes whose mappings were dropped unwritten are not
         * durable.  Reported once, to the first flush after the switch, as the kernel reports
         * a writeback error (every close of a reader sends a flush too). */
        if (s->corrupt_stop && __atomic_exchange_n(&s->lost_writes, false, __ATOMIC_ACQ_REL)) {
            return -EIO;
        }
        return 0;
    }
    co_mutex_lock(&s->lock);
    ret = qcow2_flush_metadata(bs);
    co_mutex_unlock(&s->lock);
    return ret;
}

static int coroutine_fn qcow2_co_block_status(BlockDriverState *bs, int64_t offset,
                                              int64_t bytes, int64_t *pnum, int64_t *map,
                                              BlockDriverState **file)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Extent ext;
    int ret;

    if (s->changed_bm) {
        return qcow2_changed_block_status(bs, offset, bytes, pnum);
    }
    co_mutex_lock(&s->lock);
    ret = qcow2_get_extent(bs, offset, bytes, &ext);
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        return ret;
    }
    *pnum = ext.bytes;
    switch (ext.type) {
    case QCOW2_SC_ZERO_PLAIN:
    case QCOW2_SC_ZERO_ALLOC:
        return BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED;
    case QCOW2_SC_NORMAL:
        *map = ext.host;
        *file = bs->file->bs;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_OFFSET_VALID;
    case QCOW2_SC_COMPRESSED:
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    default:
        return 0;
    }
}

/* Make the area [old, new) read as zeros when something else (backing data, or stale data in
 * the tail of the last cluster) would show through. */
static int coroutine_fn qcow2_zero_grown(BlockDriverState *bs, uint64_t old, uint64_t new)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t end = bs->backing_file ? new : MIN(ROUND_UP(old, s->cluster_size), new);

    if (bs->backing_file && s->version < 3 && bs->backing) {
        int64_t blen = bdrv_getlength(bs->backing->bs);
        if (blen >= 0) {
            end = MAX(MIN((uint64_t)blen, new), MIN(ROUND_UP(old, s->cluster_size), new));
        }
    }
    if (end <= old) {
        return 0;
    }
    return qcow2_zero_range(bs, old, end - old, false);
}

/* Write the new virtual size to the header and publish it.  Lock held.  Whatever the new size
 * shows (zeroed or unmapped ranges) is durable before the header says so: metadata written
 * back -> flush -> header -> flush -> s->size. */
static int coroutine_fn publish_size(BlockDriverState *bs, uint64_t size)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    ret = qcow2_flush_metadata(bs);
    if (ret == 0) {
        ret = qcow2_flush_file(bs);
    }
    if (ret == 0) {
        ret = qcow2_write_header_field(bs, QCOW2_HDR_SIZE, 8, size);
    }
    if (ret == 0) {
        ret = qcow2_flush_file(bs);
    }
    if (ret == 0) {
        __atomic_store_n(&s->size, size, __ATOMIC_RELEASE);
    }
    return ret;
}

/* Shrink to offset (< s->size).  Write order: the tail of the last cluster zeroed, then
 *  - without a backing file: the clusters beyond unmapped (L1 entries written, L2 tables
 *    written back) -> flush -> header size -> flush.  A crash in between leaves the old size
 *    with part of the range beyond the new end reading zeros (as it will), never a smaller size
 *    with clusters still mapped past it, whose data a later grow would bring back;
 *  - with a backing file, unmapped clusters show the backing file's data, which a crash must
 *    not leave inside the old size: header size -> flush -> clusters unmapped -> flush.  A
 *    crash in between leaves the new size with clusters past it out of sight (a grow of an
 *    image with a backing file zeroes the grown range, qcow2_zero_grown);
 * then the freed clusters' refcounts dropped. */
static int coroutine_fn qcow2_shrink(BlockDriverState *bs, uint64_t offset, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t old = s->size;
    int ret;

    if (s->nb_snapshots) {
        error_setg(errp, "%s: cannot shrink a qcow2 image with internal snapshots",
                   bs->filename);
        return -ENOTSUP;
    }
    if (!IS_ALIGNED(offset, s->cluster_size)) {
        ret = qcow2_zero_range(bs, offset, MIN(ROUND_UP(offset, s->cluster_size), old) - offset,
                               false);
        if (ret < 0) {
            error_setg_errno(errp, ret, "%s: cannot shrink", bs->filename);
            return ret;
        }
    }
    co_mutex_lock(&s->lock);
    if (bs->backing || bs->backing_file) {
        ret = publish_size(bs, offset);
        if (ret == 0) {
            ret = qcow2_free_beyond(bs, ROUND_UP(offset, s->cluster_size));
        }
    } else {
        ret = qcow2_free_beyond(bs, ROUND_UP(offset, s->cluster_size));
        if (ret == 0) {
            ret = publish_size(bs, offset);
        }
    }
    if (ret == 0) {
        ret = qcow2_flush_metadata(bs);     /* unmapping durable, refcounts of the freed */
    }
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: cannot shrink", bs->filename);
    }
    return ret;
}

/* Make the file reach host_end for preallocated clusters, with the requested preallocation
 * (metadata: a sparse extension).  The clusters allocated from start (the file's end before
 * they were) that lie inside the file already, between the L2 tables and refcount blocks
 * allocated with them, are reserved with fallocate (falloc and full alike: zeros written
 * there would land on that metadata).  Lock not held. */
static int coroutine_fn extend_file(BlockDriverState *bs, uint64_t start, uint64_t host_end,
                                    PreallocMode prealloc, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    PreallocMode mode = prealloc == PREALLOC_MODE_METADATA ? PREALLOC_MODE_OFF : prealloc;
    int64_t flen = bdrv_getlength(bs->file->bs);
    GError *local = NULL;
    int ret;

    if (flen < 0) {
        return 0;
    }
    if (mode != PREALLOC_MODE_OFF && start < MIN(host_end, (uint64_t)flen)) {
        ret = bdrv_co_preallocate(bs->file->bs, start, MIN(host_end, (uint64_t)flen) - start);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "%s: cannot preallocate", bs->filename);
            return ret;
        }
    }
    if (host_end <= (uint64_t)flen) {
        return 0;
    }
    ret = bdrv_co_truncate(bs->file->bs, host_end, false, mode, &local);
    if (ret < 0 && mode == PREALLOC_MODE_FULL) {
        /* write the zeros ourselves */
        uint64_t pos = flen, chunk = 1024 * 1024;
        uint8_t *z;

        g_clear_error(&local);
        co_mutex_lock(&s->lock);
        ret = qcow2_pre_write(bs, QCOW2_META_NONE, "preallocated data", pos, host_end - pos);
        co_mutex_unlock(&s->lock);
        z = blk_blockalign(chunk);
        memset(z, 0, chunk);
        while (pos < host_end && ret == 0) {
            uint64_t n = MIN(chunk, host_end - pos);
            ret = bdrv_co_pwrite(bs->file->bs, pos, n, z, 0);
            pos += n;
        }
        blk_vfree(z);
    } else if (ret < 0 && mode != PREALLOC_MODE_OFF) {
        g_clear_error(&local);
        ret = bdrv_co_truncate(bs->file->bs, host_end, false, PREALLOC_MODE_OFF, &local);
    }
    if (ret < 0) {
        if (local) {
            g_propagate_error(errp, local);
        } else {
            error_setg_errno(errp, ret, "%s: cannot preallocate", bs->filename);
        }
    }
    return ret;
}

/* Grow to offset (>= s->size), or preallocate [old, offset).  Write order: the L1 table grown
 * (its own order, see qcow2_grow_l1) -> the new area zeroed where something else would show
 * through, preallocated clusters mapped and the file extended to reach them -> flush ->
 * header size -> flush -> s->size.  Nothing can read or write the new area, and no crash can
 * show it, before it reads as zeros. */
static int coroutine_fn qcow2_grow(BlockDriverState *bs, uint64_t offset, PreallocMode prealloc,
                                   bool grown_zero, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t old = s->size;
    int ret;

    co_mutex_lock(&s->lock);
    ret = qcow2_grow_l1(bs, qcow2_l1_entries_for(s, offset));
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: cannot grow", bs->filename);
        return ret;
    }
    if (grown_zero && offset > old) {
        ret = qcow2_zero_grown(bs, old, offset);
        if (ret < 0) {
            error_setg_errno(errp, ret, "%s: cannot zero the grown area", bs->filename);
            return ret;
        }
    }
    if (prealloc != PREALLOC_MODE_OFF) {
        uint64_t host_end = 0;
        int64_t start;

        co_mutex_lock(&s->lock);
        qcow2_trim_file(bs);    /* extend_file preallocates from the file's end */
        start = bdrv_getlength(bs->file->bs);
        ret = s->corrupt_stop ? -EROFS : start < 0 ? (int)start :
              qcow2_preallocate(bs, old, offset - old, &host_end);
        co_mutex_unlock(&s->lock);
        if (ret < 0) {
            error_setg_errno(errp, ret, "%s: cannot preallocate", bs->filename);
            return ret;
        }
        ret = extend_file(bs, start, host_end, prealloc, errp);
        if (ret < 0) {
            return ret;
        }
    }
    co_mutex_lock(&s->lock);
    ret = offset != old ? publish_size(bs, offset) : qcow2_flush_metadata(bs);
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: cannot grow", bs->filename);
    }
    return ret;
}

/* Resize; lock not held.  grown_zero: make the new area read as zeros (not when creating). */
static int coroutine_fn qcow2_do_truncate(BlockDriverState *bs, uint64_t offset,
                                          PreallocMode prealloc, bool grown_zero,
                                          GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t old = s->size;
    int ret;

    if (qcow2_is_read_only(s) || s->snapshot_loaded) {
        error_setg(errp, "%s: image is read-only", bs->filename);
        return -EROFS;
    }
    if (offset > (uint64_t)INT64_MAX - s->cluster_size ||
        qcow2_l1_entries_for(s, offset) * 8 > QCOW2_MAX_L1_BYTES) {
        error_setg(errp, "%s: qcow2 image size too large for this cluster size", bs->filename);
        return -EFBIG;
    }
    if (offset == old && prealloc == PREALLOC_MODE_OFF) {
        return 0;
    }
    /* Bitmaps: those whose size changes are in use on disk before the size does; the range
     * that appears or vanishes is marked changed in the enabled ones. */
    co_mutex_lock(&s->lock);
    ret = qcow2_bitmaps_resize_begin(bs, old, offset);
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: cannot mark the qcow2 bitmaps in use", bs->filename);
        return ret;
    }
    if (offset < old) {
        ret = qcow2_shrink(bs, offset, errp);
    } else {
        ret = qcow2_grow(bs, offset, prealloc, grown_zero, errp);
    }
    co_mutex_lock(&s->lock);
    qcow2_bitmaps_resize_end(bs, old, s->size);
    co_mutex_unlock(&s->lock);
    return ret;
}

static int coroutine_fn qcow2_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                          PreallocMode prealloc, GError **errp)
{
    if (offset < 0) {
        error_setg(errp, "%s: invalid size", bs->filename);
        return -EINVAL;
    }
    /* QEMU reads the virtual size in whole sectors: keep it a multiple of 512, or the last
     * bytes would vanish for QEMU.  Growing for a write may round up; an exact size may not. */
    if (!IS_ALIGNED(offset, 512)) {
        if (exact) {
            error_setg(errp, "%s: a qcow2 image's size must be a multiple of 512 bytes, not "
                       "%" G_GINT64_FORMAT, bs->filename, offset);
            return -EINVAL;
        }
        offset = ROUND_UP(offset, 512);
    }
    return qcow2_do_truncate(bs, offset, prealloc, true, errp);
}

static int64_t qcow2_get_allocated_file_size(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    if (s->changed_bm) {
        return qcow2_changed_bytes(bs);     /* st_blocks of the changed view */
    }
    return bdrv_get_allocated_file_size(bs->file->bs);
}

static const char *compression_name(int type)
{
    return type == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib";
}

static int qcow2_get_info(BlockDriverState *bs, BlockDriverInfo *info)
{
    BDRVQcow2State *s = bs->opaque;

    info->cluster_size = s->cluster_size;
    info->version = s->version;
    info->dirty = s->incompat & QCOW2_INCOMPAT_DIRTY;
    info->corrupt = s->incompat & QCOW2_INCOMPAT_CORRUPT;
    info->refcount_bits = 1 << s->refcount_order;
    info->extended_l2 = s->ext_l2;
    info->lazy_refcounts = s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS;
    info->compression_type = compression_name(s->compression_type);
    if (s->snapshot_loaded) {
        info->extra = g_strdup("presenting: internal snapshot (read-only)\n");
    }
    return 0;
}

/* --- creation --- */

typedef struct Qcow2CreateOpts {
    uint64_t cluster_size;
    bool lazy_refcounts;
    bool extended_l2;
    int compression_type;
    PreallocMode prealloc;
    int refcount_order;
    int version;
} Qcow2CreateOpts;

static char *take_opt(BlockOptions *opts, const char *a, const char *b)
{
    char *v = block_options_take(opts, a);
    char *w = block_options_take(opts, b);
    if (v) {
        g_free(w);
        return v;
    }
    return w;
}

static bool take_bool2(BlockOptions *opts, const char *a, const char *b, bool *out,
                       GError **errp)
{
    bool found = false;
    if (!block_options_take_bool(opts, a, out, &found, errp)) {
        return false;
    }
    if (!found && !block_options_take_bool(opts, b, out, &found, errp)) {
        return false;
    }
    return true;
}

static bool parse_create_opts(BlockOptions *opts, Qcow2CreateOpts *o, GError **errp)
{
    g_autofree char *cs = NULL, *ct = NULL, *pa = NULL, *rb = NULL, *compat = NULL;

    o->cluster_size = 65536;
    o->compression_type = QCOW2_COMPRESSION_ZLIB;
    o->prealloc = PREALLOC_MODE_OFF;
    o->refcount_order = 4;
    o->version = 3;

    cs = take_opt(opts, "cluster_size", "cluster-size");
    if (cs && !parse_size(cs, &o->cluster_size, errp)) {
        return false;
    }
    if (!take_bool2(opts, "lazy_refcounts", "lazy-refcounts", &o->lazy_refcounts, errp) ||
        !take_bool2(opts, "extended_l2", "extended-l2", &o->extended_l2, errp)) {
        return false;
    }
    ct = take_opt(opts, "compression_type", "compression-type");
    if (ct) {
        if (!strcmp(ct, "zlib")) {
            o->compression_type = QCOW2_COMPRESSION_ZLIB;
        } else if (!strcmp(ct, "zstd")) {
            o->compression_type = QCOW2_COMPRESSION_ZSTD;
        } else {
            error_setg(errp, "invalid compression_type '%s' (zlib or zstd)", ct);
            return false;
        }
    }
    pa = take_opt(opts, "preallocation", "prealloc");
    if (pa && !prealloc_mode_parse(pa, true, &o->prealloc, errp)) {
        return false;
    }
    rb = take_opt(opts, "refcount_bits", "refcount-bits");
    if (rb) {
        char *end;
        guint64 v = g_ascii_strtoull(rb, &end, 10);
        if (*end || !is_power_of_2(v) || v > 64) {
            error_setg(errp, "invalid refcount_bits '%s' (a power of two from 1 to 64)", rb);
            return false;
        }
        o->refcount_order = ctz64(v);
    }
    compat = take_opt(opts, "compat", "version");
    if (compat) {
        if (!strcmp(compat, "0.10") || !strcmp(compat, "v2") || !strcmp(compat, "2")) {
            o->version = 2;
        } else if (!strcmp(compat, "1.1") || !strcmp(compat, "v3") || !strcmp(compat, "3")) {
            o->version = 3;
        } else {
            error_setg(errp, "invalid compat '%s' (0.10 or 1.1)", compat);
            return false;
        }
    }
    if (!is_power_of_2(o->cluster_size) || o->cluster_size < 512 ||
        o->cluster_size > (2 << 20)) {
        error_setg(errp, "invalid cluster_size %" G_GUINT64_FORMAT " (a power of two from 512 "
                   "to 2M)", o->cluster_size);
        return false;
    }
    if (o->version == 2) {
        if (o->lazy_refcounts || o->extended_l2 || o->refcount_order != 4 ||
            o->compression_type != QCOW2_COMPRESSION_ZLIB) {
            error_setg(errp, "lazy_refcounts, extended_l2, refcount_bits other than 16 and "
                       "compression_type=zstd need compat=1.1");
            return false;
        }
    }
    if (o->extended_l2 && o->cluster_size < 16384) {
        error_setg(errp, "extended_l2 needs cluster_size of 16k or more");
        return false;
    }
    return true;
}

static void put_ext(uint8_t *buf, size_t *pos, uint32_t type, const void *data, uint32_t len)
{
    stbe32(buf + *pos, type);
    stbe32(buf + *pos + 4, len);
    memcpy(buf + *pos + 8, data, len);
    *pos += 8 + ROUND_UP(len, 8);
}

static int coroutine_fn qcow2_co_create(BlockDriverState *file, uint64_t size,
                                        const char *backing_file, const char *backing_fmt,
                                        BlockOptions *opts, GError **errp)
{
    Qcow2CreateOpts o = { 0 };
    uint64_t cs;
    int cb;
    uint8_t *buf;
    size_t pos, hlen, need;
    uint8_t ft[8 * 48];
    size_t ftlen = 0;
    BlockDriverState fake = { 0 };
    BdrvChild child = { .name = (char *)"file", .bs = file };
    BDRVQcow2State *s;
    Qcow2OpenArgs a = { 0 };
    int ret;

    if (!parse_create_opts(opts, &o, errp)) {
        return -EINVAL;
    }
    if (backing_file && strlen(backing_file) > QCOW2_MAX_BACKING_NAME) {
        error_setg(errp, "backing file name too long");
        return -EINVAL;
    }
    if (backing_fmt && strlen(backing_fmt) > QCOW2_MAX_BACKING_NAME) {
        error_setg(errp, "backing format name too long");
        return -EINVAL;
    }
    if (backing_file && o.prealloc != PREALLOC_MODE_OFF && !o.extended_l2) {
        error_setg(errp, "a backing file and preallocation can only be used together with "
                   "extended_l2=on");
        return -EINVAL;
    }
    cs = o.cluster_size;
    cb = ctz64(cs);
    if (size > (uint64_t)INT64_MAX - cs) {
        error_setg(errp, "image size too large");
        return -EFBIG;
    }

    buf = blk_blockalign(3 * cs);
    memset(buf, 0, 3 * cs);
    hlen = o.version == 3 ? QCOW2_CREATE_HEADER_LEN : QCOW2_V2_HEADER_LEN;
    stbe32(buf, QCOW2_MAGIC);
    stbe32(buf + 4, o.version);
    stbe32(buf + 20, cb);
    stbe64(buf + 24, 0);                 /* size: set after the L1 table exists */
    stbe64(buf + 48, cs);                /* refcount table in cluster 1 */
    stbe32(buf + 56, 1);
    if (o.version == 3) {
        uint64_t incompat = 0;
        if (o.extended_l2) {
            incompat |= QCOW2_INCOMPAT_EXTL2;
        }
        if (o.compression_type != QCOW2_COMPRESSION_ZLIB) {
            incompat |= QCOW2_INCOMPAT_COMPRESSION;
        }
        stbe64(buf + 72, incompat);
        stbe64(buf + 80, o.lazy_refcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0);
        stbe32(buf + 96, o.refcount_order);
        stbe32(buf + 100, hlen);
        buf[104] = o.compression_type;

        /* feature name table, as QEMU writes it */
        {
            static const struct { uint8_t type, bit; const char *name; } feats[] = {
                { 0, 0, "dirty bit" }, { 0, 1, "corrupt bit" },
                { 0, 2, "external data file" }, { 0, 3, "compression type" },
                { 0, 4, "extended L2 entries" }, { 1, 0, "lazy refcounts" },
                { 2, 0, "bitmaps" }, { 2, 1, "raw external data" },
            };
            memset(ft, 0, sizeof(ft));
            for (size_t i = 0; i < G_N_ELEMENTS(feats); i++) {
                ft[i * 48] = feats[i].type;
                ft[i * 48 + 1] = feats[i].bit;
                strncpy((char *)ft + i * 48 + 2, feats[i].name, 46);
            }
            ftlen = sizeof(ft);
        }
    }
    need = hlen + (backing_fmt ? 8 + ROUND_UP(strlen(backing_fmt), 8) : 0) + 8 +
           (backing_file ? strlen(backing_file) : 0);
    if (need + 8 + ftlen > cs) {
        ftlen = 0;          /* small clusters: leave out the optional feature name table */
    }
    if (need > cs) {
        blk_vfree(buf);
        error_setg(errp, "backing file name does not fit in a %" G_GUINT64_FORMAT
                   "-byte header cluster", cs);
        return -EINVAL;
    }
    pos = hlen;
    if (backing_fmt) {
        put_ext(buf, &pos, QCOW2_EXT_BACKING_FORMAT, backing_fmt, strlen(backing_fmt));
    }
    if (ftlen) {
        put_ext(buf, &pos, QCOW2_EXT_FEATURE_TABLE, ft, ftlen);
    }
    pos += 8;                            /* end of extensions */
    if (backing_file) {
        size_t len = strlen(backing_file);
        stbe64(buf + 8, pos);
        stbe32(buf + 16, len);
        memcpy(buf + pos, backing_file, len);
    }
    /* refcount table -> refcount block in cluster 2, describing clusters 0-2 */
    stbe64(buf + cs, 2 * cs);
    for (int i = 0; i < 3; i++) {
        qcow2_refblock_set(buf + 2 * cs, o.refcount_order, i, 1);
    }
    ret = bdrv_co_pwrite(file, 0, 3 * cs, buf, 0);
    blk_vfree(buf);
    if (ret == 0) {
        ret = bdrv_co_flush(file);
    }
    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: cannot write the qcow2 header", file->filename);
        return ret;
    }

    /* Open what we wrote and size it through the normal code paths. */
    fake.drv = &bdrv_qcow2;
    fake.filename = file->filename;
    fake.open_flags = BDRV_O_RDWR | BDRV_O_NO_BACKING;
    fake.file = &child;
    fake.opaque = g_malloc0(sizeof(BDRVQcow2State));
    fake.backing_file = backing_file ? g_strdup(backing_file) : NULL;
    s = fake.opaque;
    a.bs = &fake;
    a.flags = BDRV_O_RDWR | BDRV_O_NO_BACKING;
    a.errp = errp;
    ret = qcow2_do_open(&a);
    if (ret == 0) {
        ret = qcow2_do_truncate(&fake, size, o.prealloc, false, errp);
    }
    if (ret == 0) {
        ret = qcow2_do_close(&fake);
        if (ret < 0) {
            error_setg_errno(errp, ret, "%s: cannot write qcow2 metadata", file->filename);
        }
    }
    qcow2_free_state(s);
    g_free(fake.opaque);
    g_free(fake.backing_file);
    g_free(fake.backing_format);
    return ret;
}

const BlockDriver bdrv_qcow2 = {
    .format_name            = "qcow2",
    .instance_size          = sizeof(BDRVQcow2State),
    .is_protocol            = false,
    .supports_backing       = true,
    .bdrv_probe             = qcow2_probe,
    .bdrv_open              = qcow2_open,
    .bdrv_close             = qcow2_close,
    .bdrv_refresh_limits    = qcow2_refresh_limits,
    .bdrv_co_pread          = qcow2_co_pread,
    .bdrv_co_pwrite         = qcow2_co_pwrite,
    .bdrv_co_pwrite_zeroes  = qcow2_co_pwrite_zeroes,
    .bdrv_co_pdiscard       = qcow2_co_pdiscard,
    .bdrv_co_preallocate    = qcow2_co_preallocate,
    .bdrv_co_flush          = qcow2_co_flush,
    .bdrv_co_truncate       = qcow2_co_truncate,
    .bdrv_co_block_status   = qcow2_co_block_status,
    .bdrv_getlength         = qcow2_getlength,
    .bdrv_get_allocated_file_size = qcow2_get_allocated_file_size,
    .bdrv_get_info          = qcow2_get_info,
    .bdrv_snapshot_list     = qcow2_snapshot_list,
    .bdrv_bitmap_list       = qcow2_bitmap_list,
    .bdrv_bitmap_edit       = qcow2_bitmap_edit,
    .bdrv_bitmap_ranges     = qcow2_bitmap_ranges,
    .bdrv_co_create         = qcow2_co_create,
    .bdrv_co_check          = qcow2_co_check,
};
