/* qcow2.h - qcow2 format driver: on-disk constants, driver state and the interfaces between
 * qcow2.c (open/close/I/O/create), qcow2-cluster.c (L1/L2 mapping), qcow2-refcount.c
 * (refcounts, allocation), qcow2-cache.c (the L2 table and refcount block caches),
 * qcow2-snapshot.c (internal snapshot table), qcow2-check.c (check and repair),
 * qcow2-overlap.c (metadata-overlap protection) and qcow2-bitmap.c (persistent dirty bitmaps).
 *
 * Threads: all metadata (header fields, L1 table, both caches, refcount table, pending frees)
 * is protected by BDRVQcow2State.lock, a CoMutex; every function below that takes a
 * BlockDriverState is called with that lock held unless its comment says otherwise.  Guest data
 * I/O on clusters that are already allocated is done with the lock dropped.
 */
#ifndef BLOCK_QCOW2_H
#define BLOCK_QCOW2_H

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "block/block.h"
#include "block/coroutine.h"
#include "block/util.h"

#define QCOW2_MAGIC                 0x514649fbU   /* "QFI\xfb" */

#define QCOW2_INCOMPAT_DIRTY        (1ULL << 0)
#define QCOW2_INCOMPAT_CORRUPT      (1ULL << 1)
#define QCOW2_INCOMPAT_DATA_FILE    (1ULL << 2)
#define QCOW2_INCOMPAT_COMPRESSION  (1ULL << 3)
#define QCOW2_INCOMPAT_EXTL2        (1ULL << 4)
#define QCOW2_INCOMPAT_KNOWN        0x1fULL

#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ULL << 0)

#define QCOW2_AUTOCLEAR_BITMAPS     (1ULL << 0)   /* the bitmaps extension is consistent */

#define QCOW2_EXT_END               0x00000000U
#define QCOW2_EXT_BACKING_FORMAT    0xe2792acaU
#define QCOW2_EXT_FEATURE_TABLE     0x6803f857U
#define QCOW2_EXT_BITMAPS           0x23852875U
#define QCOW2_EXT_CRYPTO            0x0537be77U
#define QCOW2_EXT_DATA_FILE         0x44415441U

#define QCOW2_COMPRESSION_ZLIB      0
#define QCOW2_COMPRESSION_ZSTD      1

/* The header: byte offsets of its fields (all big endian). */
#define QCOW2_HDR_MAGIC             0    /* u32 QCOW2_MAGIC */
#define QCOW2_HDR_VERSION           4    /* u32 2 or 3 */
#define QCOW2_HDR_BACKING_OFFSET    8    /* u64 backing file name in the first cluster, or 0 */
#define QCOW2_HDR_BACKING_SIZE      16   /* u32 its length */
#define QCOW2_HDR_CLUSTER_BITS      20   /* u32 */
#define QCOW2_HDR_SIZE              24   /* u64 virtual size */
#define QCOW2_HDR_CRYPT_METHOD      32   /* u32 0 = not encrypted */
#define QCOW2_HDR_L1_SIZE           36   /* u32 entries */
#define QCOW2_HDR_L1_OFFSET         40   /* u64 */
#define QCOW2_HDR_REFTABLE_OFFSET   48   /* u64 */
#define QCOW2_HDR_REFTABLE_CLUSTERS 56   /* u32 */
#define QCOW2_HDR_NB_SNAPSHOTS      60   /* u32 */
#define QCOW2_HDR_SNAPSHOTS_OFFSET  64   /* u64 */
#define QCOW2_V2_HEADER_LEN         72   /* version 2 ends here; version 3 goes on: */
#define QCOW2_HDR_INCOMPAT          72   /* u64 incompatible feature bits */
#define QCOW2_HDR_COMPAT            80   /* u64 compatible feature bits */
#define QCOW2_HDR_AUTOCLEAR         88   /* u64 autoclear feature bits */
#define QCOW2_HDR_REFCOUNT_ORDER    96   /* u32 */
#define QCOW2_HDR_HEADER_LENGTH     100  /* u32 bytes of header before the extensions */
#define QCOW2_V3_HEADER_LEN         104  /* the shortest version 3 header */
#define QCOW2_HDR_COMPRESSION_TYPE  104  /* u8, when the header length covers it */
#define QCOW2_CREATE_HEADER_LEN     112  /* what we write: 104 + compression type, padded */

/* A header extension: u32 type, u32 length of the data, the data padded to 8 bytes. */
#define QCOW2_EXT_HDR_TYPE          0
#define QCOW2_EXT_HDR_LEN           4
#define QCOW2_EXT_HDR_SIZE          8

/* A feature name table entry (extension QCOW2_EXT_FEATURE_TABLE). */
#define QCOW2_FEAT_TYPE             0    /* u8 0 incompatible, 1 compatible, 2 autoclear */
#define QCOW2_FEAT_BIT              1    /* u8 */
#define QCOW2_FEAT_NAME             2    /* 46 bytes, NUL-padded */
#define QCOW2_FEAT_NAME_LEN         46
#define QCOW2_FEAT_ENTRY_SIZE       48
#define QCOW2_FEAT_INCOMPAT         0    /* the feature types */
#define QCOW2_FEAT_COMPAT           1
#define QCOW2_FEAT_AUTOCLEAR        2

/* L1/L2/refcount table entries */
#define QCOW_OFLAG_COPIED           (1ULL << 63)
#define QCOW_OFLAG_COMPRESSED       (1ULL << 62)
#define QCOW_OFLAG_ZERO             (1ULL << 0)
#define L1E_OFFSET_MASK             0x00fffffffffffe00ULL
#define L2E_OFFSET_MASK             0x00fffffffffffe00ULL
#define REFT_OFFSET_MASK            0xfffffffffffffe00ULL
#define L1E_RESERVED_MASK           0x7f000000000001ffULL

#define QCOW2_SUBCLUSTERS           32
#define QCOW2_BITMAP_ALLOC_ALL      0x00000000ffffffffULL
#define QCOW2_BITMAP_ZERO_ALL       0xffffffff00000000ULL

/* Implementation limits on untrusted header values (QEMU's, so every QEMU image opens). */
#define QCOW2_MIN_CLUSTER_BITS      9
#define QCOW2_MAX_CLUSTER_BITS      21
#define QCOW2_MAX_L1_BYTES          (32 * 1024 * 1024)
#define QCOW2_MAX_REFTABLE_BYTES    (8 * 1024 * 1024)
#define QCOW2_MAX_SNAPSHOTS         65536
#define QCOW2_MAX_SNAPSHOTS_BYTES   (64 * 1024 * 1024)
#define QCOW2_MAX_BACKING_NAME      1023

/* What one guest subcluster (or whole cluster without extended L2) reads as. */
typedef enum {
    QCOW2_SC_UNALLOC_PLAIN,  /* no host cluster: read the backing file (or zeros) */
    QCOW2_SC_UNALLOC_ALLOC,  /* host cluster exists, this subcluster unallocated (extended L2) */
    QCOW2_SC_ZERO_PLAIN,     /* reads as zeros, no host cluster */
    QCOW2_SC_ZERO_ALLOC,     /* reads as zeros, host cluster preallocated */
    QCOW2_SC_NORMAL,         /* data at the host offset */
    QCOW2_SC_COMPRESSED,     /* compressed cluster (never has subclusters) */
    QCOW2_SC_INVALID,        /* damaged entry */
} Qcow2SubclusterType;

/* A cache of cluster-sized metadata tables (L2 tables or refcount blocks). */
typedef struct Qcow2CacheEntry {
    uint64_t offset;         /* host offset of the table, 0 = slot free */
    void *table;             /* cluster_size bytes, aligned */
    bool dirty;
    bool stale;              /* contents dropped (image found corrupt): forget at the last put */
    int pins;                /* in use by a caller: not evictable */
    uint64_t lru;
} Qcow2CacheEntry;

typedef struct Qcow2Cache {
    Qcow2CacheEntry *entries;
    int size;
    uint32_t table_size;     /* bytes of one table: the cluster size */
    bool is_l2;              /* writing back an L2 table needs the refcounts durable first */
    uint64_t lru_counter;
    GHashTable *index;       /* offset -> entry index + 1 */
    uint64_t misses;         /* tables read from the file (for tests and tuning) */
} Qcow2Cache;

typedef struct Qcow2Snapshot {
    uint64_t l1_table_offset;
    uint32_t l1_size;
    char *id;
    char *name;
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;
    uint64_t disk_size;
    uint32_t extra_size;
} Qcow2Snapshot;

/* The kinds of qcow2 metadata, for the overlap check (qcow2-overlap.c).  A write names the
 * existing structure it updates, or QCOW2_META_NONE for anything else (guest data, a new table
 * that nothing points to yet). */
typedef enum {
    QCOW2_META_NONE = 0,
    QCOW2_META_HEADER,       /* the first cluster: header, extensions, backing file name */
    QCOW2_META_L1,           /* the active L1 table */
    QCOW2_META_L2,           /* an L2 table the active L1 table points to */
    QCOW2_META_REFTABLE,     /* the refcount table */
    QCOW2_META_REFBLOCK,     /* a refcount block the refcount table points to */
    QCOW2_META_SNAPSHOTS,    /* the snapshot table */
    QCOW2_META_SNAP_L1,      /* a snapshot's L1 table */
    QCOW2_META_SNAP_L2,      /* an L2 table a snapshot's L1 table points to */
    QCOW2_META_BITMAP_DIR,   /* the bitmap directory */
    QCOW2_META_BITMAP_TABLE, /* a bitmap table the bitmap directory points to */
} Qcow2Meta;

/* A sorted multiset of host cluster indices: where the tables of one kind are. */
typedef struct Qcow2ClusterSet {
    uint64_t *v;
    size_t n, cap;
} Qcow2ClusterSet;

/* A range of host clusters [first, last] holding one kind of metadata. */
typedef struct Qcow2MetaRange {
    uint64_t first, last;    /* cluster indices, inclusive */
    Qcow2Meta kind;
} Qcow2MetaRange;

typedef struct Qcow2PendingFree {
    uint64_t offset;
    uint64_t length;
} Qcow2PendingFree;

/* Persistent dirty bitmaps (qcow2-bitmap.c). */
#define QCOW2_BME_IN_USE            (1U << 0)   /* not stored since last used: inconsistent */
#define QCOW2_BME_AUTO              (1U << 1)   /* enabled: tracks every change */
#define QCOW2_MAX_BITMAPS           65535
#define QCOW2_MAX_BITMAP_DIR_SIZE   (1024 * QCOW2_MAX_BITMAPS)
#define QCOW2_BITMAP_EXT_LEN        24

/* One bitmap of the bitmap directory, and its bits when loaded. */
typedef struct Qcow2Bitmap {
    char *name;
    uint32_t flags;          /* the directory entry's flags as they are on disk */
    int granularity_bits;
    uint64_t table_offset;   /* its bitmap table on disk */
    uint32_t table_size;     /* entries */
    uint64_t *table;         /* that table (host byte order) when loaded, else NULL */
    uint8_t **chunks;        /* the bits: one cluster of bitmap data per table entry, NULL =
                              * all zeros (sparse); NULL when not loaded */
    uint32_t nchunks;
    uint64_t size;           /* the guest size the bits cover */
    bool inconsistent;       /* IN_USE when opened: kept as it is, never loaded nor stored */
    bool store;              /* loaded, and marked IN_USE by this open: stored at close */
} Qcow2Bitmap;

typedef struct BDRVQcow2State {
    CoMutex lock;

    /* geometry */
    int version;
    int cluster_bits;
    uint32_t cluster_size;
    bool ext_l2;
    int l2_entry_size;       /* 8, or 16 with extended L2 */
    int l2_bits;             /* log2 of entries per L2 table */
    uint32_t l2_size;        /* entries per L2 table */
    int sc_bits;             /* log2 of the subcluster size (== cluster_bits without ext L2) */
    uint32_t sc_size;
    int csize_shift;         /* compressed descriptor: sector count position */
    uint64_t csize_mask;
    uint64_t cluster_offset_mask;
    int refcount_order;
    int rb_bits;             /* log2 of refcount entries per refcount block */
    uint64_t refcount_max;
    int compression_type;

    /* header */
    uint64_t size;           /* virtual size */
    uint64_t incompat;
    uint64_t compat;
    uint64_t autoclear;
    uint32_t header_length;
    char *feature_table;     /* raw feature name table extension, or NULL */
    uint32_t feature_table_len;

    /* L1 */
    uint64_t *l1_table;      /* host byte order */
    uint32_t l1_size;
    uint64_t l1_table_offset;

    /* refcounts */
    uint64_t *refcount_table;    /* host byte order */
    uint32_t refcount_table_size;   /* entries */
    uint64_t refcount_table_offset;
    uint64_t free_cluster_index; /* allocation search hint */
    GArray *pending_frees;       /* Qcow2PendingFree: applied after the L2 tables are durable */
    bool rc_unsynced;            /* refcount metadata written but not yet flushed to disk */
    uint64_t resv_start[8], resv_end[8];  /* clusters being allocated (not yet refcounted) */
    int nresv;

    /* snapshots */
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t snapshots_size;     /* bytes of the table */
    Qcow2Snapshot *snapshots;
    bool snapshot_loaded;        /* presenting an internal snapshot (read-only) */

    Qcow2Cache *l2_cache;
    Qcow2Cache *rb_cache;

    /* metadata-overlap protection (qcow2-overlap.c) */
    Qcow2ClusterSet l2_set;      /* the L2 tables the active L1 table points to */
    Qcow2ClusterSet rb_set;      /* the refcount blocks the refcount table points to */
    bool sets_built;
    uint64_t sets_l1_offset;     /* the L1 and refcount table offsets the sets were built from: */
    uint64_t sets_rt_offset;     /* a table replaced wholesale (it moves) is read again */
    Qcow2MetaRange *static_meta; /* snapshot table and snapshot L1 tables: sorted, merged */
    size_t n_static_meta;
    Qcow2ClusterSet snap_l2;     /* the snapshots' L2 tables, unique; .v NULL when not built
                                  * (read-only open, or over budget) */
    bool corrupt_stop;           /* a write would have destroyed metadata: image marked corrupt,
                                  * nothing more is written to it */
    bool lost_writes;            /* ... and the mappings of acknowledged writes were dropped:
                                  * the next flush fails */
    bool l2_needs_flush;         /* clusters an L2 entry will newly point to (data, copy-on-
                                  * write fill, reserved space) were written since the last
                                  * flush: flush before the next L2 table write */

    /* persistent dirty bitmaps (qcow2-bitmap.c) */
    uint32_t nb_bitmaps;         /* bitmaps extension: 0 = none (or ignored: inconsistent) */
    uint64_t bitmap_dir_offset;
    uint64_t bitmap_dir_size;
    GPtrArray *bitmaps;          /* Qcow2Bitmap, in directory order, or NULL (not read) */
    GMutex bitmap_lock;          /* the bits (chunks, nchunks, size) of loaded bitmaps: set
                                  * by writes from any thread without s->lock */
    bool bitmaps_tracking;       /* some bitmap is enabled and stored at close */
    bool bitmaps_unmarked;       /* enabled bitmaps are to be marked in use before the first
                                  * change of guest data */
    Qcow2Bitmap *changed_bm;     /* read-only open with changed=NAME: block status and the
                                  * allocated size show only the ranges this bitmap marks */

    bool read_only;
    bool checking;               /* opened with BDRV_O_CHECK: damage is left to qcow2-check.c */
    bool lazy_refcounts;         /* lazy refcount mode in effect */
    bool dirty_set;              /* we set the dirty bit in the header */
    int inflight_writes;         /* guest writes in flight with the lock dropped */
    int64_t grow_base;           /* the file's length before write_alloc first grew it ahead of
                                  * allocation (qcow2_grow_file_ahead), or -1: not grown */
} BDRVQcow2State;

/* --- pure helpers (no I/O; unit-tested) --- */

/* Refcount of entry idx in a refcount block with entries of 1 << order bits. */
uint64_t qcow2_refblock_get(const void *block, int order, uint64_t idx);
void qcow2_refblock_set(void *block, int order, uint64_t idx, uint64_t value);

/* Type of subcluster sc of an L2 entry (sc is ignored without extended L2). */
Qcow2SubclusterType qcow2_sc_type(const BDRVQcow2State *s, uint64_t entry, uint64_t bitmap,
                                  int sc);
/* Decode a compressed cluster descriptor: host byte offset of the data, bytes of compressed
 * data available from there, and the sector-aligned range whose clusters it holds refcounts
 * on. */
void qcow2_compressed_decode(int cluster_bits, uint64_t entry, uint64_t *host, uint64_t *bytes,
                             uint64_t *ref_start, uint64_t *ref_len);
/* Fill the derived geometry fields of s from cluster_bits, ext_l2 and refcount_order. */
void qcow2_set_geometry(BDRVQcow2State *s, int cluster_bits, bool ext_l2, int refcount_order);

/* L2 entry access (table in on-disk byte order). */
static inline uint64_t qcow2_l2_entry(const BDRVQcow2State *s, const void *table, uint32_t i)
{
    return ldbe64((const uint8_t *)table + (size_t)i * s->l2_entry_size);
}
static inline uint64_t qcow2_l2_bitmap(const BDRVQcow2State *s, const void *table, uint32_t i)
{
    return s->ext_l2 ? ldbe64((const uint8_t *)table + (size_t)i * 16 + 8) : 0;
}
static inline void qcow2_l2_set(const BDRVQcow2State *s, void *table, uint32_t i, uint64_t entry,
                                uint64_t bitmap)
{
    stbe64((uint8_t *)table + (size_t)i * s->l2_entry_size, entry);
    if (s->ext_l2) {
        stbe64((uint8_t *)table + (size_t)i * 16 + 8, bitmap);
    }
}

/* --- metadata table caches (qcow2-cache.c) --- */

Qcow2Cache *qcow2_cache_new(int size, bool is_l2, uint32_t table_size);
void qcow2_cache_free(Qcow2Cache *c);
/* Get the table at host offset (read it unless fresh); pinned until qcow2_cache_put. */
int coroutine_fn qcow2_cache_get(BlockDriverState *bs, Qcow2Cache *c, uint64_t offset,
                                 bool fresh, void **table);
/* A new table in a cluster just allocated: checked against the metadata (qcow2_pre_write;
 * `what` names it in the log), then handed out zeroed and pinned. */
int coroutine_fn qcow2_cache_get_new(BlockDriverState *bs, Qcow2Cache *c, uint64_t offset,
                                     const char *what, void **table);
void qcow2_cache_put(Qcow2Cache *c, void *table);
void qcow2_cache_mark_dirty(Qcow2Cache *c, void *table);
/* Write one table now (clears its dirty flag). */
int coroutine_fn qcow2_cache_write(BlockDriverState *bs, Qcow2Cache *c, void *table);
/* Write every dirty table. */
int coroutine_fn qcow2_cache_flush(BlockDriverState *bs, Qcow2Cache *c);
/* Forget a table (its cluster was freed). */
void qcow2_cache_discard(Qcow2Cache *c, uint64_t offset);
bool qcow2_cache_has_dirty(Qcow2Cache *c);
/* Forget every dirty table unwritten (the image is corrupt: nothing more is written); returns
 * how many there were. */
int qcow2_cache_drop_dirty(Qcow2Cache *c);

/* --- refcounts and allocation (qcow2-refcount.c) --- */

int coroutine_fn qcow2_get_refcount(BlockDriverState *bs, uint64_t cluster_index, uint64_t *rc);
/* Add delta to the refcount of every cluster overlapping [offset, offset + length). */
int coroutine_fn qcow2_update_refcount(BlockDriverState *bs, uint64_t offset, uint64_t length,
                                       int64_t delta);
/* Allocate n contiguous free clusters (refcount 1); returns the host offset or -errno. */
int64_t coroutine_fn qcow2_alloc_clusters(BlockDriverState *bs, uint64_t n);
/* Drop one reference on the clusters of [offset, offset + length) once the metadata that
 * stopped referencing them is durable (at the next flush). */
void qcow2_free_deferred(BlockDriverState *bs, uint64_t offset, uint64_t length);
/* Drop the reference held by an L2 entry (normal, preallocated or compressed). */
void qcow2_free_l2_entry(BlockDriverState *bs, uint64_t entry);
/* Before writing L1/L2 metadata: make refcounts durable (or set the dirty bit in lazy mode),
 * and in every mode the clusters written for an entry to point to (l2_needs_flush). */
int coroutine_fn qcow2_pre_l2_write(BlockDriverState *bs);
/* The end of the last cluster with a nonzero refcount (0 if none), or -errno: what qemu-img
 * check calls the image end offset. */
int64_t coroutine_fn qcow2_refcount_end(BlockDriverState *bs);
/* Cut the space that qcow2_grow_file_ahead added past the last cluster in use, never below
 * the file's length before it first grew (no-op when it did not).  Failure only logs. */
void coroutine_fn qcow2_trim_file(BlockDriverState *bs);
/* Flush the image file: everything written before is durable (clears rc_unsynced and
 * l2_needs_flush). */
int coroutine_fn qcow2_flush_file(BlockDriverState *bs);
/* Full metadata flush in crash-safe order; applies pending frees. */
int coroutine_fn qcow2_flush_metadata(BlockDriverState *bs);

/* --- consistency check and repair (qcow2-check.c) --- */

/* The bdrv_co_check callback: qemu-img check's findings, repairs and wording. */
int coroutine_fn qcow2_co_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix);
/* Repair a dirty image (lazy refcounts) opened read-write, as 'check -r all' does, and clear
 * the dirty bit.  Fails (errp set) when the check cannot finish or corruptions remain. */
int coroutine_fn qcow2_rebuild_refcounts(BlockDriverState *bs, GError **errp);
/* Write a header field in place. */
int coroutine_fn qcow2_write_header_field(BlockDriverState *bs, int offset, int len,
                                          uint64_t value);
int coroutine_fn qcow2_mark_dirty(BlockDriverState *bs);

/* --- metadata-overlap protection (qcow2-overlap.c) --- */

/* Build the sets of immutable metadata (snapshot table, snapshot L1 and L2 tables) and the scan
 * bounds; for read-write opens, after the L1 and refcount tables and the snapshot table are
 * loaded.  The snapshots' L2 tables are left out (with a log line) when reading their L1
 * tables would take too much I/O or memory. */
void coroutine_fn qcow2_overlap_init(BlockDriverState *bs);
/* Build the sets of L2 tables and refcount blocks from the in-memory L1 and refcount tables
 * (qcow2_pre_write does it by itself when either table has moved). */
void qcow2_overlap_refresh(BDRVQcow2State *s);
/* An L1 or refcount table entry changed from old to new (entries as in the tables). */
void qcow2_overlap_l1_changed(BDRVQcow2State *s, uint64_t old, uint64_t new);
void qcow2_overlap_reftable_changed(BDRVQcow2State *s, uint64_t old, uint64_t new);
void qcow2_overlap_free(BDRVQcow2State *s);
/* The bitmap directory or tables moved: rebuild the immutable ranges (snapshot and bitmap
 * structures). */
void qcow2_overlap_static_refresh(BDRVQcow2State *s);
/* The first metadata structure that [offset, offset + bytes) overlaps, at cluster granularity,
 * other than `self` (the structure the write updates: the header, the active L1 table, the
 * refcount table, or the L2 table or refcount block in the written cluster).  Returns its kind
 * (QCOW2_META_NONE if none) and its host range in *hit_off, *hit_len.  Pure; unit-tested. */
Qcow2Meta qcow2_overlap_find(const BDRVQcow2State *s, Qcow2Meta self, uint64_t offset,
                             uint64_t bytes, uint64_t *hit_off, uint64_t *hit_len);
const char *qcow2_meta_name(Qcow2Meta kind);
/* Before writing [offset, offset + bytes) of the file: -EIO if the image was found corrupt, or
 * if the write would overlap metadata other than `self` (then the image is marked corrupt and
 * made read-only, and one line is logged naming `what`, the structure and the offsets).
 * Lock held. */
int coroutine_fn qcow2_pre_write(BlockDriverState *bs, Qcow2Meta self, const char *what,
                                 uint64_t offset, uint64_t bytes);
/* qcow2_pre_write, then the write. */
int coroutine_fn qcow2_meta_pwrite(BlockDriverState *bs, Qcow2Meta self, const char *what,
                                   uint64_t offset, uint64_t bytes, const void *buf);
/* Every write but the corrupt bit is refused from now on: mark the image corrupt (durably,
 * version 3), make the node read-only, drop dirty cached metadata and log `why` as one line.
 * Lock held. */
void coroutine_fn qcow2_signal_corruption(BlockDriverState *bs, const char *why);

/* --- mapping (qcow2-cluster.c) --- */

typedef struct Qcow2Extent {
    Qcow2SubclusterType type;
    uint64_t host;           /* host offset of the first byte (NORMAL) */
    uint64_t entry;          /* the raw L2 entry of the first cluster (COMPRESSED) */
    uint64_t bytes;          /* length of the extent */
} Qcow2Extent;

/* Mapping of [offset, offset + max) up to the first change of type or host discontinuity. */
int coroutine_fn qcow2_get_extent(BlockDriverState *bs, uint64_t offset, uint64_t max,
                                  Qcow2Extent *ext);
/* Read [offset, offset + bytes) (inside one guest cluster) as described by entry/bitmap.
 * Does data I/O; may be called with or without the lock. */
int coroutine_fn qcow2_read_entry_range(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                        uint64_t entry, uint64_t bitmap, uint8_t *buf);
/* Read guest data that is not in this layer: from the backing node, zeros past its end. */
int coroutine_fn qcow2_read_backing(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                    uint8_t *buf);
int coroutine_fn qcow2_decompress_cluster(BlockDriverState *bs, uint64_t entry, uint8_t *out);
/* The L2 table for l1_index, ready to modify (allocated or copied-on-write as needed). */
int coroutine_fn qcow2_get_l2_for_write(BlockDriverState *bs, uint32_t l1_index, void **table);
/* Guest write of [offset, offset + bytes).  Takes and drops the lock itself. */
int coroutine_fn qcow2_do_pwrite(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                 const uint8_t *buf);
/* Make [offset, offset + bytes) read as zeros; unmap frees host clusters. */
int coroutine_fn qcow2_zero_range(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                  bool unmap);
/* Grow the L1 table to at least min_size entries. */
int coroutine_fn qcow2_grow_l1(BlockDriverState *bs, uint64_t min_size);
/* Free every cluster mapped at or beyond guest offset `from` (cluster aligned). */
int coroutine_fn qcow2_free_beyond(BlockDriverState *bs, uint64_t from);
/* Allocate host clusters for [offset, offset + bytes) (metadata preallocation). */
int coroutine_fn qcow2_preallocate(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                   uint64_t *host_end);

/* Before data is written to new clusters ending at host_end: grow the file in a step ahead
 * of it when host_end is past its end. */
void coroutine_fn qcow2_grow_file_ahead(BlockDriverState *bs, uint64_t host_end);

/* Reserve host clusters for [offset, offset + bytes) without changing what it reads (fallocate
 * mode 0).  Takes the lock itself. */
int coroutine_fn qcow2_reserve(BlockDriverState *bs, uint64_t offset, uint64_t bytes);

/* --- persistent dirty bitmaps (qcow2-bitmap.c) --- */

/* The bitmaps extension's data (len bytes) as found in the header: validated as QEMU does
 * (a malformed one fails the open, errp set); recorded in s unless the autoclear bit says the
 * bitmaps are inconsistent (then ignored, with a warning).  checking: nothing fails. */
int qcow2_bitmaps_parse_ext(BDRVQcow2State *s, const char *fn, const uint8_t *data,
                            uint32_t len, bool checking, GError **errp);
/* Parse a bitmap directory (dir_size bytes at dir, nb entries expected) into Qcow2Bitmap
 * entries (names, flags, tables; nothing loaded), checking every entry against the
 * constraints QEMU enforces for an image of guest size `size`.  Pure; unit-tested.  Returns
 * the array (owned) or NULL with errp set. */
GPtrArray *qcow2_bitmaps_parse_dir(const BDRVQcow2State *s, const uint8_t *dir,
                                   uint64_t dir_size, uint32_t nb, uint64_t size,
                                   GError **errp);
/* Read the bitmap directory; on a read-write open also load the consistent bitmaps.  Lock not
 * needed (open). */
int coroutine_fn qcow2_bitmaps_open(BlockDriverState *bs, GError **errp);
/* Guest data of [offset, offset + bytes) is about to change: the first time, mark the enabled
 * bitmaps in use on disk (durably); set their bits.  Fails (the change must not happen) when
 * they cannot be marked.  Any thread, lock not held. */
int coroutine_fn qcow2_bitmaps_before_change(BlockDriverState *bs, uint64_t offset,
                                             uint64_t bytes);
/* Store the bitmaps this open tracks and clear their in-use flags (close).  Lock held. */
int coroutine_fn qcow2_bitmaps_store(BlockDriverState *bs);
/* Guest data of [offset, offset + bytes) changes: set the bits of every enabled bitmap.
 * Any thread, lock not needed. */
void qcow2_bitmaps_set_dirty(BDRVQcow2State *s, uint64_t offset, uint64_t bytes);
/* Before a resize from old to new: bitmaps not yet in use are marked so (their size is about
 * to change), every loaded bitmap is made to cover MAX(old, new).  Lock held. */
int coroutine_fn qcow2_bitmaps_resize_begin(BlockDriverState *bs, uint64_t old, uint64_t new);
/* After the resize (to `size`; failed: still old): the bits cover `size`; a range that
 * appeared or vanished is marked changed.  Lock held. */
void qcow2_bitmaps_resize_end(BlockDriverState *bs, uint64_t old, uint64_t size);
void qcow2_bitmap_free(Qcow2Bitmap *bm);
void qcow2_bitmaps_free(BDRVQcow2State *s);
/* Bytes of bitmap data for a guest size at a granularity, and the bitmap table's entries. */
uint64_t qcow2_bitmap_data_bytes(uint64_t size, int granularity_bits);
uint32_t qcow2_bitmap_table_entries(const BDRVQcow2State *s, uint64_t size,
                                    int granularity_bits);
/* The bdrv_bitmap_list, bdrv_bitmap_edit and bdrv_bitmap_ranges callbacks (blkfuse info,
 * blkfuse bitmap, blkfuse map --changed). */
int qcow2_bitmap_list(BlockDriverState *bs, GPtrArray **out);
int qcow2_bitmap_edit(BlockDriverState *bs, const BdrvBitmapEdit *edits, int n, GError **errp);
int qcow2_bitmap_ranges(BlockDriverState *bs, const char *name, GArray **ranges,
                        GError **errp);
/* The changed view (open option changed=BITMAP, read-only): load the bitmap's bits and show
 * only what it marks as data (block status, allocated size); reads are unchanged. */
int coroutine_fn qcow2_bitmaps_changed_view(BlockDriverState *bs, const char *name,
                                            GError **errp);
/* Block status in the changed view: DATA for changed ranges, ZERO (a hole) elsewhere. */
int qcow2_changed_block_status(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                               int64_t *pnum);
/* Bytes marked changed in the changed view. */
int64_t qcow2_changed_bytes(BlockDriverState *bs);
/* Is bit `nr` (granule nr) of a loaded bitmap set?  For tests.  Any thread. */
bool qcow2_bitmap_get(BDRVQcow2State *s, const Qcow2Bitmap *bm, uint64_t nr);

/* --- snapshots (qcow2-snapshot.c) --- */

int coroutine_fn qcow2_read_snapshots(BlockDriverState *bs, GError **errp);
void qcow2_free_snapshots(BDRVQcow2State *s);
/* Find by id, then by name; NULL if none. */
Qcow2Snapshot *qcow2_find_snapshot(BDRVQcow2State *s, const char *id_or_name);
int coroutine_fn qcow2_load_snapshot(BlockDriverState *bs, const char *id_or_name,
                                     GError **errp);
int qcow2_snapshot_list(BlockDriverState *bs, GPtrArray **out);

/* Opened read-only, or switched to read-only after finding the image corrupt (any thread). */
static inline bool qcow2_is_read_only(const BDRVQcow2State *s)
{
    return __atomic_load_n(&s->read_only, __ATOMIC_ACQUIRE);
}

/* The header's refcount table offset and size, next to each other: written as one piece of
 * QCOW2_REFTABLE_LOC_LEN bytes at QCOW2_HDR_REFTABLE_OFFSET when the table moves. */
#define QCOW2_REFTABLE_LOC_LEN      (QCOW2_HDR_REFTABLE_CLUSTERS + 4 - QCOW2_HDR_REFTABLE_OFFSET)
static inline void qcow2_put_reftable_loc(uint8_t *buf, uint64_t offset, uint32_t clusters)
{
    stbe64(buf, offset);
    stbe32(buf + QCOW2_HDR_REFTABLE_CLUSTERS - QCOW2_HDR_REFTABLE_OFFSET, clusters);
}

/* Host offset of the refcount block that holds cluster ci's refcount, or 0 if it has none. */
static inline uint64_t qcow2_refblock_offset(const BDRVQcow2State *s, uint64_t ci)
{
    uint64_t ti = ci >> s->rb_bits;
    return ti < s->refcount_table_size ? s->refcount_table[ti] & REFT_OFFSET_MASK : 0;
}

/* Number of L1 entries needed for a virtual size. */
static inline uint64_t qcow2_l1_entries_for(const BDRVQcow2State *s, uint64_t size)
{
    uint64_t per_l1 = (uint64_t)s->l2_size << s->cluster_bits;
    return (size + per_l1 - 1) / per_l1;
}

extern const BlockDriver bdrv_qcow2;

#endif
