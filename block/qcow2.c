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

#define QCOW2_L2_CACHE_MAX      (128ULL * 1024 * 1024)

static int qcow2_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    /* Any version claims the image, as in QEMU: a future version must fail to open with
     * "unsupported qcow2 version", not silently pass for a raw image. */
    if (buf_size >= 8 && ldbe32(buf + QCOW2_HDR_MAGIC) == QCOW2_MAGIC &&
        ldbe32(buf + QCOW2_HDR_VERSION) >= 2) {
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
        char buf[QCOW2_FEAT_NAME_LEN + 1];

        if (!(bits & (1ULL << bit))) {
            continue;
        }
        for (uint32_t i = 0; s->feature_table && i + QCOW2_FEAT_ENTRY_SIZE <=
             s->feature_table_len; i += QCOW2_FEAT_ENTRY_SIZE) {
            const uint8_t *f = (const uint8_t *)s->feature_table + i;
            if (f[QCOW2_FEAT_TYPE] == QCOW2_FEAT_INCOMPAT && f[QCOW2_FEAT_BIT] == bit) {
                memcpy(buf, f + QCOW2_FEAT_NAME, QCOW2_FEAT_NAME_LEN);
                buf[QCOW2_FEAT_NAME_LEN] = 0;
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
    g_clear_pointer(&s->l2_cache, qcow2_cache_free);
    g_clear_pointer(&s->rb_cache, qcow2_cache_free);
    g_clear_pointer(&s->l1_table, g_free);
    g_clear_pointer(&s->refcount_table, g_free);
    g_clear_pointer(&s->feature_table, g_free);
    qcow2_free_snapshots(s);
    qcow2_bitmaps_free(s);
    qcow2_overlap_free(s);
    if (s->pending_frees) {
        g_array_free(g_steal_pointer(&s->pending_frees), TRUE);
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

/* What the open reads from the first cluster beyond what BDRVQcow2State keeps. */
typedef struct Qcow2HeaderScan {
    const char *fn;                  /* the image, for messages */
    int64_t flen;                    /* the file's length */
    uint32_t cluster_bits;
    uint32_t crypt;
    uint32_t rt_clusters;
    uint32_t refcount_order;
    uint64_t backing_off;
    uint32_t backing_len;
    uint8_t *cluster0;               /* the whole first cluster (owned), zero-padded */
    const uint8_t *bitmaps_ext;      /* the bitmaps extension's data in cluster0, or NULL */
    uint32_t bitmaps_ext_len;
} Qcow2HeaderScan;

static void header_scan_clear(Qcow2HeaderScan *h)
{
    g_clear_pointer(&h->cluster0, g_free);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Qcow2HeaderScan, header_scan_clear)

/* The fixed header fields (version 2, and version 3's when it is one). */
static void parse_header_fields(BDRVQcow2State *s, const uint8_t *hdr, Qcow2HeaderScan *h)
{
    h->backing_off = ldbe64(hdr + QCOW2_HDR_BACKING_OFFSET);
    h->backing_len = ldbe32(hdr + QCOW2_HDR_BACKING_SIZE);
    s->size = ldbe64(hdr + QCOW2_HDR_SIZE);
    h->crypt = ldbe32(hdr + QCOW2_HDR_CRYPT_METHOD);
    s->l1_size = ldbe32(hdr + QCOW2_HDR_L1_SIZE);
    s->l1_table_offset = ldbe64(hdr + QCOW2_HDR_L1_OFFSET);
    s->refcount_table_offset = ldbe64(hdr + QCOW2_HDR_REFTABLE_OFFSET);
    h->rt_clusters = ldbe32(hdr + QCOW2_HDR_REFTABLE_CLUSTERS);
    s->nb_snapshots = ldbe32(hdr + QCOW2_HDR_NB_SNAPSHOTS);
    s->snapshots_offset = ldbe64(hdr + QCOW2_HDR_SNAPSHOTS_OFFSET);
    h->refcount_order = 4;
    s->header_length = QCOW2_V2_HEADER_LEN;
    if (s->version == 3) {
        s->incompat = ldbe64(hdr + QCOW2_HDR_INCOMPAT);
        s->compat = ldbe64(hdr + QCOW2_HDR_COMPAT);
        s->autoclear = ldbe64(hdr + QCOW2_HDR_AUTOCLEAR);
        h->refcount_order = ldbe32(hdr + QCOW2_HDR_REFCOUNT_ORDER);
        s->header_length = ldbe32(hdr + QCOW2_HDR_HEADER_LENGTH);
    }
}

/* Read and check the fixed part of the header. */
static int coroutine_fn read_header(BlockDriverState *bs, Qcow2HeaderScan *h, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const char *fn = h->fn;
    uint8_t first[QCOW2_CREATE_HEADER_LEN];
    int ret;

    h->flen = bdrv_getlength(bs->file->bs);
    if (h->flen < 0) {
        error_setg_errno(errp, h->flen, "%s: cannot get file size", fn);
        return h->flen;
    }
    if (h->flen < QCOW2_V2_HEADER_LEN) {
        error_setg(errp, "%s: not a qcow2 image (file too short)", fn);
        return -EINVAL;
    }
    memset(first, 0, sizeof(first));
    ret = bdrv_co_pread(bs->file->bs, 0, MIN((int64_t)sizeof(first), h->flen), first, 0);
    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: cannot read the qcow2 header", fn);
        return ret;
    }
    if (ldbe32(first + QCOW2_HDR_MAGIC) != QCOW2_MAGIC) {
        error_setg(errp, "%s: not a qcow2 image (bad magic)", fn);
        return -EINVAL;
    }
    s->version = ldbe32(first + QCOW2_HDR_VERSION);
    if (s->version != 2 && s->version != 3) {
        error_setg(errp, "%s: unsupported qcow2 version %d", fn, s->version);
        return -ENOTSUP;
    }
    h->cluster_bits = ldbe32(first + QCOW2_HDR_CLUSTER_BITS);
    if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS || h->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
        error_setg(errp, "%s: unsupported qcow2 cluster size 2^%u", fn, h->cluster_bits);
        return -EINVAL;
    }
    parse_header_fields(s, first, h);
    if (s->version == 3) {
        if (s->header_length < QCOW2_V3_HEADER_LEN || s->header_length % 8 ||
            s->header_length > (1U << h->cluster_bits)) {
            error_setg(errp, "%s: invalid qcow2 header length %u", fn, s->header_length);
            return -EINVAL;
        }
        if (h->refcount_order > 6) {
            error_setg(errp, "%s: invalid qcow2 refcount order %u", fn, h->refcount_order);
            return -EINVAL;
        }
    }
    return 0;
}

/* The whole first cluster: header, extensions, backing file name. */
static int coroutine_fn read_header_cluster(BlockDriverState *bs, Qcow2HeaderScan *h,
                                            GError **errp)
{
    uint64_t csize = 1ULL << h->cluster_bits;
    int ret;

    h->cluster0 = g_malloc0(csize);
    ret = bdrv_co_pread(bs->file->bs, 0, MIN((uint64_t)h->flen, csize), h->cluster0, 0);
    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: cannot read the qcow2 header", h->fn);
    }
    return ret;
}

/* Header extensions: backing format, feature names, bitmaps (kept for check_features);
 * encryption refused; the others preserved, not interpreted. */
static int read_extensions(BlockDriverState *bs, Qcow2HeaderScan *h, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t csize = 1ULL << h->cluster_bits;
    uint64_t pos = s->header_length;

    while (pos + QCOW2_EXT_HDR_SIZE <= csize) {
        uint32_t type = ldbe32(h->cluster0 + pos + QCOW2_EXT_HDR_TYPE);
        uint32_t len = ldbe32(h->cluster0 + pos + QCOW2_EXT_HDR_LEN);
        const uint8_t *data = h->cluster0 + pos + QCOW2_EXT_HDR_SIZE;

        if (type == QCOW2_EXT_END) {
            break;
        }
        if (len > csize - pos - QCOW2_EXT_HDR_SIZE) {
            error_setg(errp, "%s: qcow2 header extension %#x is too large", h->fn, type);
            return -EINVAL;
        }
        switch (type) {
        case QCOW2_EXT_BACKING_FORMAT:
            if (len > QCOW2_MAX_BACKING_NAME) {
                error_setg(errp, "%s: qcow2 backing format name too long", h->fn);
                return -EINVAL;
            }
            g_free(bs->backing_format);
            bs->backing_format = g_strndup((const char *)data, len);
            break;
        case QCOW2_EXT_FEATURE_TABLE:
            g_free(s->feature_table);
            s->feature_table = g_memdup2(data, len);
            s->feature_table_len = len;
            break;
        case QCOW2_EXT_CRYPTO:
            error_setg(errp, "%s: encrypted qcow2 images are not supported", h->fn);
            return -ENOTSUP;
        case QCOW2_EXT_BITMAPS:
            h->bitmaps_ext = data;      /* read once the geometry is known */
            h->bitmaps_ext_len = len;
            break;
        default:
            break;      /* data file name, unknown: preserved, not interpreted */
        }
        pos += QCOW2_EXT_HDR_SIZE + ROUND_UP((uint64_t)len, 8);
    }
    return 0;
}

/* The compression type field against its incompatible feature bit. */
static int check_compression_type(BDRVQcow2State *s, const Qcow2HeaderScan *h, GError **errp)
{
    s->compression_type = QCOW2_COMPRESSION_ZLIB;
    if (s->header_length > QCOW2_HDR_COMPRESSION_TYPE) {
        s->compression_type = h->cluster0[QCOW2_HDR_COMPRESSION_TYPE];
    }
    if (s->incompat & QCOW2_INCOMPAT_COMPRESSION) {
        if (s->compression_type != QCOW2_COMPRESSION_ZSTD) {
            error_setg(errp, "%s: unsupported qcow2 compression type %d", h->fn,
                       s->compression_type);
            return -ENOTSUP;
        }
    } else if (s->compression_type != QCOW2_COMPRESSION_ZLIB) {
        error_setg(errp, "%s: qcow2 compression type %d set without its feature bit", h->fn,
                   s->compression_type);
        return -EINVAL;
    }
    return 0;
}

/* Features: refuse what we cannot handle, set the geometry, read the bitmaps extension, and
 * honour the corrupt bit. */
static int check_features(BlockDriverState *bs, const Qcow2HeaderScan *h, int flags,
                          GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const char *fn = h->fn;
    int ret;

    if (s->incompat & ~QCOW2_INCOMPAT_KNOWN) {
        g_autofree char *names = feature_names(s, s->incompat & ~QCOW2_INCOMPAT_KNOWN);
        error_setg(errp, "%s: unsupported qcow2 feature: %s", fn, names);
        return -ENOTSUP;
    }
    if (s->incompat & QCOW2_INCOMPAT_DATA_FILE) {
        error_setg(errp, "%s: qcow2 images with an external data file are not supported", fn);
        return -ENOTSUP;
    }
    if (h->crypt != 0) {
        error_setg(errp, "%s: encrypted qcow2 images are not supported", fn);
        return -ENOTSUP;
    }
    ret = check_compression_type(s, h, errp);
    if (ret < 0) {
        return ret;
    }
    if ((s->incompat & QCOW2_INCOMPAT_EXTL2) && h->cluster_bits < 14) {
        error_setg(errp, "%s: qcow2 extended L2 entries need 16 KiB clusters or larger", fn);
        return -EINVAL;
    }
    qcow2_set_geometry(s, h->cluster_bits, s->incompat & QCOW2_INCOMPAT_EXTL2,
                       h->refcount_order);
    if (h->bitmaps_ext) {
        /* malformed: a read-only open (or a check) goes on without the bitmaps */
        ret = qcow2_bitmaps_parse_ext(s, fn, h->bitmaps_ext, h->bitmaps_ext_len,
                                      s->checking || !(flags & BDRV_O_RDWR), errp);
        if (ret < 0) {
            return ret;
        }
    }

    if ((s->incompat & QCOW2_INCOMPAT_CORRUPT) && !s->checking) {
        if (flags & BDRV_O_RDWR) {
            error_setg(errp, "%s: qcow2 image is marked corrupt and cannot be opened "
                       "read-write; run 'qemu-img check -r all' to repair it", fn);
            return -EACCES;
        }
        log_warning("%s: qcow2 image is marked corrupt; opened read-only", fn);
    }
    return 0;
}

/* Backing file name */
static int read_backing_name(BlockDriverState *bs, const Qcow2HeaderScan *h, GError **errp)
{
    uint64_t csize = 1ULL << h->cluster_bits;

    if (!h->backing_off) {
        return 0;
    }
    if (h->backing_len > QCOW2_MAX_BACKING_NAME || h->backing_off > csize ||
        h->backing_off + h->backing_len > csize) {
        error_setg(errp, "%s: invalid qcow2 backing file name location", h->fn);
        return -EINVAL;
    }
    g_free(bs->backing_file);
    bs->backing_file = g_strndup((const char *)h->cluster0 + h->backing_off, h->backing_len);
    if (!bs->backing_file[0]) {
        g_clear_pointer(&bs->backing_file, g_free);
    }
    return 0;
}

/* Sizes and the L1 table */
static int coroutine_fn load_l1_table(BlockDriverState *bs, const Qcow2HeaderScan *h,
                                      GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const char *fn = h->fn;
    uint64_t l1_bytes = (uint64_t)s->l1_size * 8;
    int ret;

    if (s->size > (uint64_t)INT64_MAX - s->cluster_size) {
        error_setg(errp, "%s: invalid qcow2 image size", fn);
        return -EINVAL;
    }
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
    if (s->l1_size && s->l1_table_offset + l1_bytes > (uint64_t)h->flen && !s->checking) {
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
    return 0;
}

/* Refcount table */
static int coroutine_fn load_refcount_table(BlockDriverState *bs, const Qcow2HeaderScan *h,
                                            GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const char *fn = h->fn;
    uint64_t rt_bytes = (uint64_t)h->rt_clusters << h->cluster_bits;
    uint64_t in_file;
    int ret;

    if ((h->rt_clusters == 0 && !s->checking) || rt_bytes > QCOW2_MAX_REFTABLE_BYTES) {
        error_setg(errp, "%s: invalid qcow2 refcount table size (%u clusters)", fn,
                   h->rt_clusters);
        return -EINVAL;
    }
    if (!s->refcount_table_offset || (s->refcount_table_offset & (s->cluster_size - 1)) ||
        (s->refcount_table_offset >= (uint64_t)h->flen && !s->checking)) {
        error_setg(errp, "%s: invalid qcow2 refcount table offset", fn);
        return -EINVAL;
    }
    s->refcount_table_size = rt_bytes / 8;
    s->refcount_table = g_new0(uint64_t, s->refcount_table_size);
    in_file = MIN(rt_bytes, (uint64_t)MAX(h->flen - (int64_t)s->refcount_table_offset, 0));
    if (in_file) {
        ret = bdrv_co_pread(bs->file->bs, s->refcount_table_offset, in_file, s->refcount_table,
                            0);
        if (ret < 0) {
            error_setg_errno(errp, ret, "%s: cannot read the qcow2 refcount table", fn);
            return ret;
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
    return 0;
}

/* Caches: the L2 cache covers the whole image up to QCOW2_L2_CACHE_MAX unless told its size,
 * the refcount block cache a quarter of that. */
static void create_caches(BDRVQcow2State *s, const Qcow2OpenArgs *a)
{
    uint64_t l2_bytes = a->l2_cache_size;
    uint64_t need = (uint64_t)MAX(s->l1_size, 1) * s->cluster_size;
    uint64_t l2_n, rb_n;

    if (!l2_bytes) {
        l2_bytes = ((8ULL << 30) >> s->cluster_bits) * s->l2_entry_size;
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

/* A read-write open: lazy refcounts, overlap protection, the repair of an image that was not
 * closed cleanly, and the autoclear bits we do not keep up to date cleared. */
static int coroutine_fn prepare_for_writing(BlockDriverState *bs, const char *fn,
                                            GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t keep;
    int ret;

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
    keep = s->nb_bitmaps ? QCOW2_AUTOCLEAR_BITMAPS : 0;
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
    return 0;
}

/* Everything the first cluster says: header, extensions, features, backing file name. */
static int coroutine_fn open_header(BlockDriverState *bs, Qcow2HeaderScan *h, int flags,
                                    GError **errp)
{
    int ret;

    ret = read_header(bs, h, errp);
    if (ret < 0) {
        return ret;
    }
    ret = read_header_cluster(bs, h, errp);
    if (ret < 0) {
        return ret;
    }
    ret = read_extensions(bs, h, errp);
    if (ret < 0) {
        return ret;
    }
    ret = check_features(bs, h, flags, errp);
    if (ret < 0) {
        return ret;
    }
    return read_backing_name(bs, h, errp);
}

static int coroutine_fn qcow2_do_open(Qcow2OpenArgs *a)
{
    BlockDriverState *bs = a->bs;
    BDRVQcow2State *s = bs->opaque;
    GError **errp = a->errp;
    const char *fn = bs->filename ? bs->filename : "image";
    g_auto(Qcow2HeaderScan) h = { .fn = fn };
    int ret;

    co_mutex_init(&s->lock);
    g_mutex_init(&s->bitmap_lock);      /* futex based: nothing to clear */
    s->grow_base = -1;
    s->checking = a->flags & BDRV_O_CHECK;
    s->pending_frees = g_array_new(FALSE, FALSE, sizeof(Qcow2PendingFree));

    ret = open_header(bs, &h, a->flags, errp);
    if (ret < 0) {
        return ret;
    }
    ret = load_l1_table(bs, &h, errp);
    if (ret < 0) {
        return ret;
    }
    ret = load_refcount_table(bs, &h, errp);
    if (ret < 0) {
        return ret;
    }
    ret = qcow2_read_snapshots(bs, errp);
    if (ret < 0) {
        return ret;
    }
    create_caches(s, a);

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
        ret = prepare_for_writing(bs, fn, errp);
        if (ret < 0) {
            return ret;
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

/* Guest data of [offset, offset + bytes) is about to change: -EROFS on a read-only image,
 * else the bitmaps are told first (qcow2_bitmaps_before_change). */
static int coroutine_fn before_guest_change(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;

    if (qcow2_is_read_only(s)) {
        return -EROFS;
    }
    return qcow2_bitmaps_before_change(bs, offset, bytes);
}

static int coroutine_fn qcow2_co_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        const void *buf, BdrvRequestFlags flags)
{
    int ret = before_guest_change(bs, offset, bytes);

    return ret < 0 ? ret : qcow2_do_pwrite(bs, offset, bytes, buf);
}

static int coroutine_fn qcow2_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                               int64_t bytes, BdrvRequestFlags flags)
{
    int ret = before_guest_change(bs, offset, bytes);

    return ret < 0 ? ret : qcow2_zero_range(bs, offset, bytes, flags & BDRV_REQ_MAY_UNMAP);
}

static int coroutine_fn qcow2_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    int ret = before_guest_change(bs, offset, bytes);

    return ret < 0 ? ret : qcow2_zero_range(bs, offset, bytes, true);
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
    stbe32(buf + *pos + QCOW2_EXT_HDR_TYPE, type);
    stbe32(buf + *pos + QCOW2_EXT_HDR_LEN, len);
    memcpy(buf + *pos + QCOW2_EXT_HDR_SIZE, data, len);
    *pos += QCOW2_EXT_HDR_SIZE + ROUND_UP(len, 8);
}

/* What the options and names ask for, checked before anything is written. */
static int check_create_args(const Qcow2CreateOpts *o, uint64_t size, const char *backing_file,
                             const char *backing_fmt, GError **errp)
{
    if (backing_file && strlen(backing_file) > QCOW2_MAX_BACKING_NAME) {
        error_setg(errp, "backing file name too long");
        return -EINVAL;
    }
    if (backing_fmt && strlen(backing_fmt) > QCOW2_MAX_BACKING_NAME) {
        error_setg(errp, "backing format name too long");
        return -EINVAL;
    }
    if (backing_file && o->prealloc != PREALLOC_MODE_OFF && !o->extended_l2) {
        error_setg(errp, "a backing file and preallocation can only be used together with "
                   "extended_l2=on");
        return -EINVAL;
    }
    if (size > (uint64_t)INT64_MAX - o->cluster_size) {
        error_setg(errp, "image size too large");
        return -EFBIG;
    }
    return 0;
}

/* The feature name table, as QEMU writes it; returns its length. */
static size_t build_feature_table(uint8_t *ft, size_t ft_size)
{
    static const struct { uint8_t type, bit; const char *name; } feats[] = {
        { QCOW2_FEAT_INCOMPAT, 0, "dirty bit" },
        { QCOW2_FEAT_INCOMPAT, 1, "corrupt bit" },
        { QCOW2_FEAT_INCOMPAT, 2, "external data file" },
        { QCOW2_FEAT_INCOMPAT, 3, "compression type" },
        { QCOW2_FEAT_INCOMPAT, 4, "extended L2 entries" },
        { QCOW2_FEAT_COMPAT, 0, "lazy refcounts" },
        { QCOW2_FEAT_AUTOCLEAR, 0, "bitmaps" },
        { QCOW2_FEAT_AUTOCLEAR, 1, "raw external data" },
    };

    g_assert(ft_size >= sizeof(feats) / sizeof(feats[0]) * QCOW2_FEAT_ENTRY_SIZE);
    memset(ft, 0, ft_size);
    for (size_t i = 0; i < G_N_ELEMENTS(feats); i++) {
        uint8_t *f = ft + i * QCOW2_FEAT_ENTRY_SIZE;
        f[QCOW2_FEAT_TYPE] = feats[i].type;
        f[QCOW2_FEAT_BIT] = feats[i].bit;
        strncpy((char *)f + QCOW2_FEAT_NAME, feats[i].name, QCOW2_FEAT_NAME_LEN);
    }
    return G_N_ELEMENTS(feats) * QCOW2_FEAT_ENTRY_SIZE;
}

/* The fixed header of a new image of size 0 whose refcount table is in cluster 1; returns
 * the header's length. */
static size_t put_create_header(uint8_t *buf, const Qcow2CreateOpts *o)
{
    size_t hlen = o->version == 3 ? QCOW2_CREATE_HEADER_LEN : QCOW2_V2_HEADER_LEN;
    uint64_t incompat = 0;

    stbe32(buf + QCOW2_HDR_MAGIC, QCOW2_MAGIC);
    stbe32(buf + QCOW2_HDR_VERSION, o->version);
    stbe32(buf + QCOW2_HDR_CLUSTER_BITS, ctz64(o->cluster_size));
    stbe64(buf + QCOW2_HDR_SIZE, 0);     /* size: set after the L1 table exists */
    stbe64(buf + QCOW2_HDR_REFTABLE_OFFSET, o->cluster_size);    /* refcount table in cluster 1 */
    stbe32(buf + QCOW2_HDR_REFTABLE_CLUSTERS, 1);
    if (o->version < 3) {
        return hlen;
    }
    if (o->extended_l2) {
        incompat |= QCOW2_INCOMPAT_EXTL2;
    }
    if (o->compression_type != QCOW2_COMPRESSION_ZLIB) {
        incompat |= QCOW2_INCOMPAT_COMPRESSION;
    }
    stbe64(buf + QCOW2_HDR_INCOMPAT, incompat);
    stbe64(buf + QCOW2_HDR_COMPAT, o->lazy_refcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0);
    stbe32(buf + QCOW2_HDR_REFCOUNT_ORDER, o->refcount_order);
    stbe32(buf + QCOW2_HDR_HEADER_LENGTH, hlen);
    buf[QCOW2_HDR_COMPRESSION_TYPE] = o->compression_type;
    return hlen;
}

/* After the fixed header of hlen bytes: the extensions (backing format, feature name table
 * when it fits) and the backing file name, all in the first cluster. */
static bool put_header_tail(uint8_t *buf, size_t hlen, const Qcow2CreateOpts *o,
                            const char *backing_file, const char *backing_fmt, GError **errp)
{
    uint64_t cs = o->cluster_size;
    uint8_t ft[8 * QCOW2_FEAT_ENTRY_SIZE];
    size_t ftlen = o->version == 3 ? build_feature_table(ft, sizeof(ft)) : 0;
    size_t pos, need;

    need = hlen + (backing_fmt ? QCOW2_EXT_HDR_SIZE + ROUND_UP(strlen(backing_fmt), 8) : 0) +
           QCOW2_EXT_HDR_SIZE + (backing_file ? strlen(backing_file) : 0);
    if (need + QCOW2_EXT_HDR_SIZE + ftlen > cs) {
        ftlen = 0;          /* small clusters: leave out the optional feature name table */
    }
    if (need > cs) {
        error_setg(errp, "backing file name does not fit in a %" G_GUINT64_FORMAT
                   "-byte header cluster", cs);
        return false;
    }
    pos = hlen;
    if (backing_fmt) {
        put_ext(buf, &pos, QCOW2_EXT_BACKING_FORMAT, backing_fmt, strlen(backing_fmt));
    }
    if (ftlen) {
        put_ext(buf, &pos, QCOW2_EXT_FEATURE_TABLE, ft, ftlen);
    }
    pos += QCOW2_EXT_HDR_SIZE;           /* end of extensions */
    if (backing_file) {
        size_t len = strlen(backing_file);
        stbe64(buf + QCOW2_HDR_BACKING_OFFSET, pos);
        stbe32(buf + QCOW2_HDR_BACKING_SIZE, len);
        memcpy(buf + pos, backing_file, len);
    }
    return true;
}

/* The first three clusters of a new image of size 0: header, refcount table, and the
 * refcount block describing clusters 0-2; written and flushed. */
static int coroutine_fn write_empty_image(BlockDriverState *file, const Qcow2CreateOpts *o,
                                          const char *backing_file, const char *backing_fmt,
                                          GError **errp)
{
    uint64_t cs = o->cluster_size;
    uint8_t *buf = blk_blockalign(3 * cs);
    size_t hlen;
    int ret;

    memset(buf, 0, 3 * cs);
    hlen = put_create_header(buf, o);
    if (!put_header_tail(buf, hlen, o, backing_file, backing_fmt, errp)) {
        blk_vfree(buf);
        return -EINVAL;
    }
    /* refcount table -> refcount block in cluster 2, describing clusters 0-2 */
    stbe64(buf + cs, 2 * cs);
    for (int i = 0; i < 3; i++) {
        qcow2_refblock_set(buf + 2 * cs, o->refcount_order, i, 1);
    }
    ret = bdrv_co_pwrite(file, 0, 3 * cs, buf, 0);
    blk_vfree(buf);
    if (ret == 0) {
        ret = bdrv_co_flush(file);
    }
    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: cannot write the qcow2 header", file->filename);
    }
    return ret;
}

/* Open what write_empty_image wrote and size it through the normal code paths. */
static int coroutine_fn size_new_image(BlockDriverState *file, uint64_t size,
                                       const char *backing_file, PreallocMode prealloc,
                                       GError **errp)
{
    BlockDriverState fake = { 0 };
    BdrvChild child = { .name = (char *)"file", .bs = file };
    Qcow2OpenArgs a = { 0 };
    int ret;

    fake.drv = &bdrv_qcow2;
    fake.filename = file->filename;
    fake.open_flags = BDRV_O_RDWR | BDRV_O_NO_BACKING;
    fake.file = &child;
    fake.opaque = g_malloc0(sizeof(BDRVQcow2State));
    fake.backing_file = backing_file ? g_strdup(backing_file) : NULL;
    a.bs = &fake;
    a.flags = BDRV_O_RDWR | BDRV_O_NO_BACKING;
    a.errp = errp;
    ret = qcow2_do_open(&a);
    if (ret == 0) {
        ret = qcow2_do_truncate(&fake, size, prealloc, false, errp);
    }
    if (ret == 0) {
        ret = qcow2_do_close(&fake);
        if (ret < 0) {
            error_setg_errno(errp, ret, "%s: cannot write qcow2 metadata", file->filename);
        }
    }
    qcow2_free_state(fake.opaque);
    g_free(fake.opaque);
    g_free(fake.backing_file);
    g_free(fake.backing_format);
    return ret;
}

static int coroutine_fn qcow2_co_create(BlockDriverState *file, uint64_t size,
                                        const char *backing_file, const char *backing_fmt,
                                        BlockOptions *opts, GError **errp)
{
    Qcow2CreateOpts o = { 0 };
    int ret;

    if (!parse_create_opts(opts, &o, errp)) {
        return -EINVAL;
    }
    ret = check_create_args(&o, size, backing_file, backing_fmt, errp);
    if (ret < 0) {
        return ret;
    }
    ret = write_empty_image(file, &o, backing_file, backing_fmt, errp);
    if (ret < 0) {
        return ret;
    }
    return size_new_image(file, size, backing_file, o.prealloc, errp);
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
