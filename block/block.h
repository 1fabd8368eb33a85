/* block.h - the block graph: drivers, nodes (BlockDriverState) and the generic I/O entry points.
 *
 * Threads: nodes are opened and closed in the main thread.  I/O (bdrv_co_*) runs in coroutines in
 * any thread's AioContext, concurrently from several threads; drivers with mutable metadata
 * (qcow2) protect it with a CoMutex.  Requests reaching a driver have already been validated by
 * the BlockBackend (range, read-only, flags) and aligned by block/io.c to the node's
 * request_alignment (except the end of a write that ends the node, see bdrv_co_pwrite), so
 * drivers do not check them again.
 */
#ifndef BLOCK_BLOCK_H
#define BLOCK_BLOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <glib.h>
#include "block/coroutine.h"

typedef struct BlockDriver BlockDriver;
typedef struct BlockDriverState BlockDriverState;
typedef struct BdrvChild BdrvChild;

/* Open flags (bs->open_flags) */
enum {
    BDRV_O_RDWR      = 1 << 0,  /* opened read-write */
    BDRV_O_NOCACHE   = 1 << 1,  /* bypass the host page cache (O_DIRECT) */
    BDRV_O_PROBED    = 1 << 2,  /* format was probed, not given: see raw's first-sector guard */
    BDRV_O_NO_BACKING = 1 << 3, /* do not open the backing chain */
    BDRV_O_NO_LOCK   = 1 << 4,  /* do not take image locks */
    BDRV_O_CHECK     = 1 << 5,  /* opened to be checked (blkfuse check): the format opens a
                                 * damaged image as it is, without repairing it, refusing it
                                 * or marking it corrupt; what is wrong is for the check to
                                 * report (qcow2: corrupt and dirty images open read-write,
                                 * tables past the end of the file read as zeros) */
    BDRV_O_ALLOW_REMOTE_BACKING = 1 << 6, /* open backing files named by protocol (null:...) */
    BDRV_O_BACKING_TRUSTED = 1 << 7, /* this node's backing file name is the user's (--snapshot
                                      * overlay): open it whatever its kind; not inherited */
};

/* How a node uses the host page cache (--cache): O_DIRECT or not, and whether every write is
 * flushed (write-through, done by the BlockBackend).  Checked in one place: parse it with
 * block_cache_mode_parse, then ask the functions below. */
typedef enum {
    BLOCK_CACHE_WRITEBACK,      /* host page cache, flushed on request (the default) */
    BLOCK_CACHE_WRITETHROUGH,   /* host page cache, flushed after every write */
    BLOCK_CACHE_NONE,           /* O_DIRECT, flushed on request */
    BLOCK_CACHE_DIRECTSYNC,     /* O_DIRECT, flushed after every write */
} BlockCacheMode;

/* Parse a cache mode name ("writeback", "writethrough", "none", "directsync"; NULL is the
 * default, writeback).  Returns false with errp set (errp may be NULL, for callers that say
 * it in their own words) on any other string. */
bool block_cache_mode_parse(const char *s, BlockCacheMode *mode, GError **errp);
/* The name block_cache_mode_parse takes (static). */
const char *block_cache_mode_name(BlockCacheMode mode);
/* The open flags of the mode: BDRV_O_NOCACHE or 0. */
int block_cache_mode_open_flags(BlockCacheMode mode);
/* True if every write is to be flushed (blk_set_write_through). */
bool block_cache_mode_write_through(BlockCacheMode mode);

/* Request flags */
typedef enum {
    BDRV_REQ_FUA          = 1 << 0, /* write: durable before completion */
    BDRV_REQ_MAY_UNMAP    = 1 << 1, /* write_zeroes: may deallocate */
    BDRV_REQ_NO_FALLBACK  = 1 << 2, /* write_zeroes: fail with -ENOTSUP rather than write zeros */
} BdrvRequestFlags;

/* block_status results */
enum {
    BDRV_BLOCK_DATA      = 1 << 0, /* reads come from this node's storage (or a child's) */
    BDRV_BLOCK_ZERO      = 1 << 1, /* reads as zeros */
    BDRV_BLOCK_OFFSET_VALID = 1 << 2, /* *map is the offset in *file */
    BDRV_BLOCK_ALLOCATED = 1 << 3, /* allocated in this layer (not passed to backing) */
    BDRV_BLOCK_RAW       = 1 << 4, /* pass-through: ask *file at *map for the real status */
    BDRV_BLOCK_EOF       = 1 << 5, /* range reaches the end of the node */
};

typedef enum {
    PREALLOC_MODE_OFF,
    PREALLOC_MODE_METADATA,
    PREALLOC_MODE_FALLOC,
    PREALLOC_MODE_FULL,
} PreallocMode;

/* Parse a preallocation option value: off, metadata (only when allow_metadata: formats with
 * metadata to preallocate), falloc or full.  On failure errp says what is allowed. */
bool prealloc_mode_parse(const char *str, bool allow_metadata, PreallocMode *mode,
                         GError **errp);

typedef struct BlockLimits {
    uint32_t request_alignment; /* offsets and lengths must be multiples (padding done by io.c) */
    uint32_t mem_alignment;     /* buffers must be aligned to this (bounced by the driver) */
    uint64_t max_transfer;      /* largest request the driver takes at once; 0 = unlimited */
} BlockLimits;

/* Key=value options for opening a node: driver-specific keys are removed by the driver that
 * consumes them; a key left over after open is an error ("unknown option"). */
typedef GHashTable BlockOptions;   /* char * -> char *, owned */
BlockOptions *block_options_new(void);
/* Parse "a=1,b=2" into opts; returns false with errp set on malformed input. */
bool block_options_parse(BlockOptions *opts, const char *str, GError **errp);
/* Take (remove) an option: returns the value (caller frees) or NULL if absent. */
char *block_options_take(BlockOptions *opts, const char *key);
bool block_options_take_size(BlockOptions *opts, const char *key, uint64_t *out, bool *found,
                             GError **errp);
bool block_options_take_bool(BlockOptions *opts, const char *key, bool *out, bool *found,
                             GError **errp);

/* Image-level information for `blkfuse info` (filled by bdrv_get_info and the driver). */
typedef struct BlockDriverInfo {
    int64_t cluster_size;       /* 0 if not applicable */
    int version;                /* format version, 0 if not applicable */
    bool dirty;                 /* e.g. qcow2 lazy refcounts dirty bit */
    bool corrupt;
    int refcount_bits;
    bool extended_l2;
    bool lazy_refcounts;
    const char *compression_type; /* static string or NULL */
    char *extra;                /* owned, free-form "key: value\n" lines, or NULL */
} BlockDriverInfo;

typedef struct BlockSnapshotInfo {
    char *id;
    char *name;
    int64_t vm_state_size;
    int64_t disk_size;          /* virtual disk size recorded in the snapshot */
    int64_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
} BlockSnapshotInfo;
void block_snapshot_info_free(BlockSnapshotInfo *sn);

/* A persistent dirty bitmap of an image (qcow2), for `blkfuse info`. */
typedef struct BlockBitmapInfo {
    char *name;
    uint64_t granularity;       /* bytes per bit */
    bool in_use;                /* not stored after its last use: inconsistent */
    bool enabled;               /* "auto": tracks every change */
} BlockBitmapInfo;
void block_bitmap_info_free(BlockBitmapInfo *bm);

/* A change to an image's persistent dirty bitmaps (`blkfuse bitmap`, as qemu-img bitmap). */
typedef enum {
    BDRV_BITMAP_ADD,            /* a new, empty, enabled bitmap */
    BDRV_BITMAP_CLEAR,          /* every bit cleared */
    BDRV_BITMAP_ENABLE,
    BDRV_BITMAP_DISABLE,
    BDRV_BITMAP_REMOVE,
} BdrvBitmapAction;

typedef struct BdrvBitmapEdit {
    BdrvBitmapAction action;
    const char *name;
    uint64_t granularity;       /* BDRV_BITMAP_ADD: bytes per bit, 0 = the format's default */
} BdrvBitmapEdit;

/* What bdrv_co_check may repair. */
typedef enum {
    BDRV_FIX_LEAKS  = 1 << 0,   /* clusters whose refcount is too high */
    BDRV_FIX_ERRORS = 1 << 1,   /* corruptions that can be repaired */
} BdrvCheckMode;

/* Findings of a consistency check (the numbers qemu-img check reports). */
typedef struct BdrvCheckResult {
    int64_t corruptions;        /* errors left in the image */
    int64_t leaks;              /* clusters allocated but unused, left in the image */
    int64_t check_errors;       /* the check itself failed somewhere (I/O error, memory) */
    int64_t corruptions_fixed;
    int64_t leaks_fixed;
    int64_t image_end_offset;   /* end of the last cluster in use, 0 if unknown */
    int64_t total_clusters;     /* guest clusters of the virtual disk */
    int64_t allocated_clusters; /* of those, allocated in this image */
    int64_t fragmented_clusters;
    int64_t compressed_clusters;
    /* Optional: called with each finding as one line (no newline), in the order found; the
     * lines follow qemu-img check's wording ("Leaked cluster 7 refcount=2 reference=1"). */
    void (*report)(void *opaque, const char *line);
    void *report_opaque;
} BdrvCheckResult;

/*
 * A block driver.  One per file, named bdrv_<name>, listed in block/block.c's driver table.
 * Unless noted, callbacks are called from coroutine context in any I/O thread, with the request
 * already validated and aligned.
 */
struct BlockDriver {
    const char *format_name;    /* Required. "raw", "qcow2", "file", "null" */
    size_t instance_size;       /* Required. Size of bs->opaque, zero-allocated before open */
    bool is_protocol;           /* true: opens a filename (file, null); false: format on a child */
    const char *protocol_prefix;/* Optional. "null" makes "null:..." filenames use this driver */
    const char *const *protocol_prefixes; /* Optional. More prefixes, NULL-terminated: "nbds"
                                 * makes "nbds://..." filenames use this driver too */
    bool is_filter;             /* true: inserted between a format and its protocol node by a
                                 * block option (fault: fault-rules=), never named as a format */
    bool supports_backing;      /* formats: images may name a backing file, and bdrv_co_create
                                 * takes one; false: bdrv_create refuses a backing file before
                                 * touching anything */

    /* Optional (formats). Returns a score 0..100 that buf (the first bytes of the image, buf_size
     * >= 512 unless the file is shorter) is of this format.  NULL means never probed. */
    int (*bdrv_probe)(const uint8_t *buf, int buf_size, const char *filename);

    /* Required.  Main thread, outside coroutines (use aio_run_coroutine or the bdrv_* sync
     * wrappers for I/O).  Protocols open bs->filename; formats find bs->file already attached.
     * Consumes its options from opts.  Returns 0 or -errno with errp set. */
    int (*bdrv_open)(BlockDriverState *bs, BlockOptions *opts, int flags, GError **errp);

    /* Optional.  Main thread.  Release everything; called after a final flush. */
    void (*bdrv_close)(BlockDriverState *bs);

    /* Optional.  Set bs->bl from the driver's knowledge; called after open.  NULL: inherit
     * request_alignment from bs->file if any, else 1. */
    void (*bdrv_refresh_limits)(BlockDriverState *bs);

    /* Required.  Read bytes at offset into buf.  Returns 0 or -errno. */
    int coroutine_fn (*bdrv_co_pread)(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      void *buf, BdrvRequestFlags flags);

    /* Optional.  Move bytes at offset into the pipe whose write end is pipe_fd, without
     * copying them through this process (splice), if that cannot block: returns bytes, fewer
     * only where the storage ended first; -ENOTSUP if nothing was moved (read the usual way);
     * or another -errno, after which the pipe may hold part of the range.  Only nodes with
     * bs->splice_read set are asked. */
    int64_t coroutine_fn (*bdrv_co_splice_read)(BlockDriverState *bs, int64_t offset,
                                                int64_t bytes, int pipe_fd);

    /* Optional (NULL: node is read-only).  Write bytes at offset from buf.  flags holds only
     * what bs->supported_write_flags has (BDRV_REQ_FUA); io.c emulates the rest (flush after).
     * offset is aligned to request_alignment, and so is bytes except in one case: a write that
     * ends at or past the node's current end may end unaligned (io.c pads only up to the end of
     * the node), and the driver then writes exactly those bytes, so that the node grows to
     * offset + bytes at most.  A filter passes such a write on unchanged. */
    int coroutine_fn (*bdrv_co_pwrite)(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       const void *buf, BdrvRequestFlags flags);

    /* Optional.  Make the range read as zeros, efficiently.  NULL or -ENOTSUP: io.c writes a
     * zeroed buffer instead (unless BDRV_REQ_NO_FALLBACK). */
    int coroutine_fn (*bdrv_co_pwrite_zeroes)(BlockDriverState *bs, int64_t offset,
                                              int64_t bytes, BdrvRequestFlags flags);

    /* Optional.  Deallocate the range if possible; afterwards it reads as zeros only if the
     * driver guarantees it (callers that need zeros use pwrite_zeroes with MAY_UNMAP).
     * NULL: discard is a successful no-op. */
    int coroutine_fn (*bdrv_co_pdiscard)(BlockDriverState *bs, int64_t offset, int64_t bytes);

    /* Optional.  Reserve storage for the range without changing what it reads (fallocate mode 0
     * inside the file: later writes there will not fail for lack of space).  NULL: success
     * without reserving anything. */
    int coroutine_fn (*bdrv_co_preallocate)(BlockDriverState *bs, int64_t offset, int64_t bytes);

    /* Optional.  Write this node's cached state (metadata) down to its children.  io.c then
     * flushes bs->file.  For protocols: make written data durable (fdatasync). */
    int coroutine_fn (*bdrv_co_flush)(BlockDriverState *bs);

    /* Optional (NULL: -ENOTSUP).  Resize to offset bytes.  exact=false allows rounding up.  */
    int coroutine_fn (*bdrv_co_truncate)(BlockDriverState *bs, int64_t offset, bool exact,
                                         PreallocMode prealloc, GError **errp);

    /* Optional.  Status of [offset, offset+bytes): returns BDRV_BLOCK_* flags (or -errno) and
     * sets *pnum (> 0, <= bytes) to the length that has that status; *map and *file when
     * OFFSET_VALID or RAW.  NULL: io.c answers DATA|ALLOCATED for the whole range (for formats
     * with bs->file and no callback, it forwards to bs->file as RAW). */
    int coroutine_fn (*bdrv_co_block_status)(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, int64_t *pnum, int64_t *map,
                                             BlockDriverState **file);

    /* Required.  Current virtual size in bytes, or -errno.  Any thread, must not yield. */
    int64_t (*bdrv_getlength)(BlockDriverState *bs);

    /* Optional.  Bytes the node occupies on the host (st_blocks * 512 for files).  NULL: sum of
     * the children's. */
    int64_t (*bdrv_get_allocated_file_size)(BlockDriverState *bs);

    /* Optional (protocols on a host file).  The descriptor the node reads and writes, which also
     * holds its image locks, or -1.  Any thread.  NULL: bs->file's (-1 without a file
     * child).  FUSE passthrough hands it to the kernel, which then does reads and writes. */
    int (*bdrv_host_fd)(BlockDriverState *bs);

    /* Optional.  Re-read the length from the host, where something other than this node may
     * have changed it (FUSE passthrough writes past the end grow the file in the kernel).
     * Returns the new length or -errno.  Any thread, must not yield.  NULL: the cached length
     * cannot go stale; bs->file is refreshed (if any). */
    int64_t (*bdrv_refresh_length)(BlockDriverState *bs);

    /* Optional.  Fill info (main thread). */
    int (*bdrv_get_info)(BlockDriverState *bs, BlockDriverInfo *info);

    /* Optional.  Returns the internal snapshots (array of BlockSnapshotInfo, owned). */
    int (*bdrv_snapshot_list)(BlockDriverState *bs, GPtrArray **out);

    /* Optional (NULL: no persistent bitmaps).  Returns the persistent dirty bitmaps (array of
     * BlockBitmapInfo, owned; empty when there are none).  Main thread. */
    int (*bdrv_bitmap_list)(BlockDriverState *bs, GPtrArray **out);

    /* Optional (NULL: the format has no persistent bitmaps).  Apply n edits in order to an
     * image opened read-write with no I/O in flight, and store the result before returning;
     * nothing is changed when one of them is refused (errp names the bitmap and why).  Main
     * thread (runs its I/O in a coroutine). */
    int (*bdrv_bitmap_edit)(BlockDriverState *bs, const BdrvBitmapEdit *edits, int n,
                            GError **errp);

    /* Optional (NULL: no persistent bitmaps).  The guest ranges changed while bitmap `name`
     * was enabled since it was added or cleared: pairs of uint64_t { offset, bytes }, sorted
     * and merged, in *ranges (owned).  Fails (errp) for a missing or inconsistent bitmap.
     * Main thread (reads in a coroutine). */
    int (*bdrv_bitmap_ranges)(BlockDriverState *bs, const char *name, GArray **ranges,
                              GError **errp);

    /* Optional (NULL: the format cannot be checked).  Check the image's metadata for
     * corruptions and leaks, adding them to res (whose report callback the caller sets), and
     * repair what fix allows (bs is then open read-write).  Main thread, coroutine context (via
     * bdrv_check).  bs was opened with BDRV_O_CHECK.  Returns 0 when the check ran to its end
     * (whatever it found), -errno when it could not finish. */
    int coroutine_fn (*bdrv_co_check)(BlockDriverState *bs, BdrvCheckResult *res,
                                      BdrvCheckMode fix);

    /* Optional (NULL: bdrv_create refuses the format).  Create an image file: filename's
     * protocol node is already created, empty, and opened read-write as `file`; backing_file
     * is NULL unless supports_backing.  Main thread, coroutine context (via bdrv_create).
     * Consumes its options. */
    int coroutine_fn (*bdrv_co_create)(BlockDriverState *file, uint64_t size,
                                       const char *backing_file, const char *backing_fmt,
                                       BlockOptions *opts, GError **errp);
};

struct BdrvChild {
    char *name;                 /* "file", "backing" */
    BlockDriverState *bs;       /* the child node (reference held) */
};

struct BlockDriverState {
    const BlockDriver *drv;
    void *opaque;               /* driver state, instance_size bytes */
    char *filename;             /* what was opened (protocol) or the image file (format) */
    char node_name[32];
    int open_flags;             /* BDRV_O_* */
    bool read_only;
    int refcnt;
    BlockLimits bl;
    /* Request flags the driver's bdrv_co_pwrite handles itself (BDRV_REQ_FUA), set at open;
     * io.c emulates the others (FUA: a flush after the write). */
    BdrvRequestFlags supported_write_flags;
    /* bdrv_co_splice_read may move data (set at open: a buffered host file, or a raw node on
     * one). */
    bool splice_read;

    BdrvChild *file;            /* protocol child of a format node, or NULL */
    BdrvChild *backing;         /* backing image of a format node, or NULL */
    char *backing_file;         /* name from the image header (formats), or NULL */
    char *backing_format;       /* format from the image header, or NULL */

    /* Serialisation of read-modify-write padding (block/io.c) */
    GMutex reqs_lock;
    GList *tracked_reqs;

    /* Write generations (block/io.c), atomic: write_gen counts the writes, write-zeroes,
     * discards, preallocations and truncates that completed on this node; flushed_gen is one
     * more than the write_gen the last successful flush began at (0: never flushed).  A node
     * without a file child skips a flush that would cover nothing new. */
    uint64_t write_gen;
    uint64_t flushed_gen;
};

/* --- opening and closing (main thread) --- */

/* The driver table. */
const BlockDriver *bdrv_find_format(const char *name);
/* Add a driver for this process only, searched after the table: tests and fuzzers use it for
 * an in-memory protocol.  Main thread, before opening anything with it; drv must outlive every
 * node that uses it. */
void bdrv_register_driver(const BlockDriver *drv);
const BlockDriver *bdrv_find_protocol(const char *filename);
/* Comma-separated list of format names, for help texts (static). */
const char *bdrv_format_list(void);

/* Open an image: the protocol node for filename (file or PREFIX:...) and, on top, the format node
 * (format NULL = probe).  Consumes options from opts; leftovers are an error.  Returns the top
 * node with one reference, or NULL with errp set.  A format node's backing chain is opened as
 * well unless BDRV_O_NO_BACKING.  With the option fault-rules=PATH, a fault-injection filter
 * node (block/fault.c) goes between the format node and the protocol node. */
BlockDriverState *bdrv_open(const char *filename, const char *format, BlockOptions *opts,
                            int flags, GError **errp);

/* For format drivers' open: open bs's backing chain from bs->backing_file / backing_format,
 * read-only, detecting loops.  A relative name is in the image file's directory (never the
 * current one).  A name that is not a plain local path (a protocol such as "null:" or "nbd:",
 * or "json:") is refused with -EREMOTE (GError code EREMOTE) unless flags has
 * BDRV_O_ALLOW_REMOTE_BACKING: an untrusted image must not reach a network server or a device
 * through its header.  Returns 0 or -errno (errp set). */
int bdrv_open_backing(BlockDriverState *bs, int flags, GError **errp);

/* True if name is a plain local path, not PROTOCOL:... (a colon before any slash). */
bool bdrv_backing_name_is_plain(const char *name);

void bdrv_ref(BlockDriverState *bs);
/* Drop a reference; the last one flushes, closes the driver and unrefs the children. */
void bdrv_unref(BlockDriverState *bs);

/* The format the first bytes of an image (buf, len >= 512 unless the image is shorter) probe as;
 * raw when no format claims them. */
const BlockDriver *bdrv_probe_buffer(const uint8_t *buf, int len, const char *filename);

/* Probe the format of filename from its first bytes; returns the driver or NULL (errp). */
const BlockDriver *bdrv_probe_format(const char *filename, GError **errp);

/* The host's page size, at least 4096 (read once). */
uint32_t bdrv_host_page_size(void);

/* --- generic I/O (coroutine context; validated by the caller) --- */

int coroutine_fn bdrv_co_pread(BlockDriverState *bs, int64_t offset, int64_t bytes, void *buf,
                               BdrvRequestFlags flags);
int coroutine_fn bdrv_co_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                const void *buf, BdrvRequestFlags flags);
/* The driver callback, or -ENOTSUP where the node has none or bs->splice_read is off. */
int64_t coroutine_fn bdrv_co_splice_read(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         int pipe_fd);
int coroutine_fn bdrv_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       BdrvRequestFlags flags);
int coroutine_fn bdrv_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes);
int coroutine_fn bdrv_co_preallocate(BlockDriverState *bs, int64_t offset, int64_t bytes);
/* Flush bs (driver), then its file child, recursively.  A node without a file child (file,
 * nbd, rbd, null) is flushed only if something was written to it through this block layer
 * since its last successful flush began: an fdatasync right after another one makes nothing
 * more durable.  Writes that bypass the block layer must be announced first. */
int coroutine_fn bdrv_co_flush(BlockDriverState *bs);
/* Something wrote to bs's storage without the block layer (FUSE passthrough: the kernel writes
 * the image file itself): the next flush of bs and of its file children must reach the disk. */
void bdrv_note_unseen_writes(BlockDriverState *bs);
int coroutine_fn bdrv_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                  PreallocMode prealloc, GError **errp);
/* Status of one extent starting at offset (see the driver callback); resolves RAW through the
 * file child.  Never returns *pnum == 0 for bytes > 0 inside the node. */
int coroutine_fn bdrv_co_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      int64_t *pnum, int64_t *map, BlockDriverState **file);
/* Like block_status, but follows the backing chain: the status a reader of bs sees. */
int coroutine_fn bdrv_co_block_status_above(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes, int64_t *pnum);

int64_t bdrv_getlength(BlockDriverState *bs);
int64_t bdrv_get_allocated_file_size(BlockDriverState *bs);
/* The host descriptor under bs (see the driver callback), or -1. */
int bdrv_host_fd(BlockDriverState *bs);
/* Re-read the length from the host down the file children (see the driver callback); returns
 * bs's length afterwards, or -errno. */
int64_t bdrv_refresh_length(BlockDriverState *bs);

/* --- the same requests from outside a coroutine ---
 * The one set of synchronous wrappers (block/sync.c, with backend.h's blk_ ones), for open
 * paths, tools and tests: each runs the coroutine_fn of the same name in a new coroutine on the
 * calling thread's event loop (aio_run_coroutine) and returns its result once it has finished.
 * Never call them from a coroutine; code that is in one calls the bdrv_co_ functions. */
int bdrv_pread(BlockDriverState *bs, int64_t offset, int64_t bytes, void *buf);
int bdrv_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes, const void *buf);
int bdrv_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                       BdrvRequestFlags flags);
int bdrv_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes);
int bdrv_preallocate(BlockDriverState *bs, int64_t offset, int64_t bytes);
int bdrv_flush(BlockDriverState *bs);
int bdrv_truncate(BlockDriverState *bs, int64_t offset, bool exact, PreallocMode prealloc,
                  GError **errp);
int bdrv_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes, int64_t *pnum,
                      int64_t *map, BlockDriverState **file);

/* --- checking (main thread) --- */

/* Run the format's consistency check (see bdrv_co_check); -ENOTSUP if it has none. */
int bdrv_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix);

/* --- image creation (main thread) --- */

/* bdrv_create's driver step, run as the wrappers above: drv's bdrv_co_create on file, the new,
 * empty protocol node opened read-write.  Returns 0 or -errno with errp set. */
int bdrv_create_on(const BlockDriver *drv, BlockDriverState *file, uint64_t size,
                   const char *backing_file, const char *backing_fmt, BlockOptions *opts,
                   GError **errp);

/* Create filename as format with the given virtual size (0 with a backing file: its size).
 * Consumes opts; leftovers are an error. */
bool bdrv_create(const char *filename, const char *format, uint64_t size,
                 const char *backing_file, const char *backing_fmt, BlockOptions *opts,
                 GError **errp);

/* --- buffers --- */

/* Aligned buffer suitable for any node's I/O (O_DIRECT), freed with blk_vfree. */
void *blk_blockalign(size_t size);
void blk_vfree(void *p);

#endif
