/* file.c - the file protocol driver: a host file or block device.
 *
 * I/O engines (option aio=, as QEMU names them), chosen per request in the calling thread:
 * - io_uring (default where the event loop has a ring): reads that the page cache cannot serve
 *   at once, all writes, fdatasync and fallocate are SQEs on the calling thread's ring;
 * - native: O_DIRECT reads and writes through libaio, the rest in worker threads;
 * - threads: everything in worker threads.
 * Without aio=, io_uring is used where the loop has a ring, else native for O_DIRECT and threads;
 * but buffered writes where RWF_NOWAIT writes are refused are made inline (below), or else go to
 * threads (file_co_pwrite).
 * Buffered reads first try RWF_NOWAIT in the loop itself (a page cache hit needs no engine).
 * With O_DIRECT (--cache=none), the unaligned end of a write that ends the file goes through
 * the page cache (fd_tail).  ftruncate and lseek(SEEK_DATA/SEEK_HOLE) always run in workers
 * (they wait for the inode lock), as do block device ioctls.
 *
 *
 * Inline writes (a bounded exception to "nothing blocks an event loop"): ext4 and tmpfs refuse
 * RWF_NOWAIT for buffered writes, so without them each such write paid two cross-CPU wake-ups
 * (loop -> worker -> loop), which cost more than the copy into the page cache itself (4 KiB
 * random writes at depth 1: 1.4 times the IOPS inline; profile in bench/RESULTS.md).  So with
 * aio= unset, a buffered write of at most inline-write-max bytes (default 64 KiB, 0: never) is a
 * plain pwrite in the calling thread, where a page-cache write takes microseconds.  What could
 * make it wait is bounded:
 * - not while another write, fallocate or ftruncate of the node is in a worker or the ring (it
 *   would wait for their inode lock): those requests count themselves in s->busy;
 * - an inline write that took longer than FILE_INLINE_SLOW_US (dirty-page throttling, a journal
 *   commit, reclaim; or just the thread preempted on a busy machine) stops inline writes of the
 *   node for FILE_INLINE_PAUSE_FACTOR times as long as it took (at most FILE_INLINE_PAUSE_MAX_US),
 *   the writes going to the workers meanwhile: slow inline writes block the loop at most 1/50
 *   of the time (a 200 ms dirty-throttling sleep: 10 s of worker writes after it).
 * - larger writes, up to FILE_INLINE_SERIAL_MAX (1 MiB), only while the thread's requests come
 *   one at a time (aio_current_serial: a FUSE queue in its local mode): then no other request waits
 *   behind the copy, and the worker's two wake-ups cost more than it (1 MiB writes at depth 1:
 *   47-48% of the ceiling against 32-37% through the workers, bench/RESULTS.md).
 * aio=threads, io_uring and native never write inline.
 * Reads from a file in memory (tmpfs, ramfs), which refuses RWF_NOWAIT reads as well, are made
 * inline the same way, up to the same size and with the same pause: they copy from memory and
 * wait for nothing (but swap), where the ring or a worker cost two wake-ups.
 *
 * Splice reads (bdrv_co_splice_read, option splice-read, default on): a caller that has a pipe
 * (the FUSE export answering a large read over /dev/fuse) may have the data moved into it from the
 * page cache without a copy through this process.  Only where it cannot block: a buffered file
 * (not O_DIRECT, not a block device), the whole range inside the file and in the page cache
 * (cachestat, Linux 6.5; without it, never).  Anything else is -ENOTSUP, and the caller reads
 * the usual way.
 *
 * Write-behind: data appended past everything written to the file before (an image being
 * filled: a restore into an empty qcow2, a file system written for the first time) stays dirty in
 * the host page cache until the next flush, which then writes all of it back while the writer
 * waits (0.6-0.9 s per 512 MiB on the bench machine).  So once write-behind bytes (option
 * write-behind=SIZE, default 8 MiB, 0: never) have been appended, their write-back is started
 * (sync_file_range SYNC_FILE_RANGE_WRITE in a worker thread, on a dup of the fd; the write that
 * crosses the mark does not wait for it, unless FILE_WB_DETACHED_MAX such starts are still
 * queued or running in the process: then it waits for its own, which bounds them) while the
 * writes go on, and the flush finds little left to do.  Rewrites inside what was written
 * before (the file's length at open is the first high-water mark) start nothing: their pages
 * are dirtied again and again, and write-back now would be wasted.
 *
 * Threads: I/O callbacks run in any I/O thread's coroutines; the fd is shared and every call on
 * it is positional (pread/pwrite/fallocate), so no lock is needed.  The cached length is atomic.
 */
#include "config.h"
#include "block/aio.h"
#include "block/block.h"
#include "block/progress.h"
#include "block/io-engine.h"
#include "block/util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

/* QEMU's image locking layout: a shared lock on byte LOCK_PERM_BASE + n says "I use permission
 * n"; one on LOCK_SHARED_BASE + n says "I do not let others use permission n". */
#define LOCK_PERM_BASE      100
#define LOCK_SHARED_BASE    200
#define PERM_CONSISTENT_READ 0
#define PERM_WRITE          1
#define PERM_RESIZE         3

/* Inline writes (above): the default size limit, what counts as slow, and the pause after a
 * slow one: FILE_INLINE_PAUSE_FACTOR times as long as it took, at most FILE_INLINE_PAUSE_MAX_US. */
#define FILE_INLINE_MAX_DEFAULT (64 * 1024)
#define FILE_INLINE_SERIAL_MAX  (1024 * 1024)   /* inline writes while requests come singly */
#define FILE_INLINE_SLOW_US     2000
#define FILE_INLINE_PAUSE_FACTOR 50
#define FILE_INLINE_PAUSE_MAX_US (10 * 1000 * 1000)
#define FILE_WRITE_BEHIND_DEFAULT (8 * 1024 * 1024)
#define FILE_WB_DETACHED_MAX    4

typedef enum { FILE_AIO_AUTO, FILE_AIO_IO_URING, FILE_AIO_NATIVE, FILE_AIO_THREADS } FileAio;

static const char *const file_aio_names[] = {
    [FILE_AIO_AUTO] = "auto", [FILE_AIO_IO_URING] = "io_uring", [FILE_AIO_NATIVE] = "native",
    [FILE_AIO_THREADS] = "threads",
};

/* The engine of nodes opened without aio= (tests run everything under each engine). */
static FileAio file_default_aio = FILE_AIO_AUTO;

typedef struct BDRVFileState {
    int fd;
    int fd_tail;                /* O_DIRECT only: the same file without O_DIRECT, or -1 */
    bool is_bdev;
    bool direct;                /* opened with O_DIRECT */
    FileAio aio;
    int64_t size;               /* atomic; cached length */
    int nowait_off[2];          /* atomic, [write]: the file refuses RWF_NOWAIT reads/writes */
    bool fd_lent;               /* fd handed out (FUSE passthrough): its locks outlive us */
    const char *filename;       /* bs->filename, for the log */
    uint64_t inline_max;        /* buffered writes up to this many bytes inline; 0: never */
    int busy;                   /* atomic: writes, fallocate, ftruncate in workers or the ring */
    int64_t inline_paused_until;    /* atomic, monotonic us: no inline writes before this */
    uint64_t inline_ops[2];     /* atomic, [write]: made inline (bdrv_file_inline_ops) */
    bool mem_fs;                /* tmpfs or ramfs: reads are inline too */
    uint64_t write_behind;      /* start write-back every this many appended bytes; 0: never */
    int64_t wb_hwm;             /* atomic: the end of the furthest write (at open: the length) */
    int64_t wb_started;         /* atomic: write-back started up to here */
    uint64_t wb_ops;            /* atomic: write-backs started (bdrv_file_write_behind_ops) */
    bool splice_read;           /* atomic: splice reads allowed (off once cachestat fails) */
    uint64_t splice_ops;        /* atomic: reads made by splice (bdrv_file_splice_ops) */
} BDRVFileState;

typedef struct FileReq {
    int fd;
    int64_t offset;
    int64_t bytes;
    void *buf;
    int mode;                   /* fallocate mode, or ioctl number */
} FileReq;

static int64_t file_query_length(BDRVFileState *s)
{
    struct stat st;

    if (s->is_bdev) {
        uint64_t n;
        if (ioctl(s->fd, BLKGETSIZE64, &n) < 0) {
            return -errno;
        }
        return n;
    }
    if (fstat(s->fd, &st) < 0) {
        return -errno;
    }
    return st.st_size;
}

/* Test with F_OFD_GETLK whether someone else holds a lock on byte; true if free. */
static bool lock_byte_free(int fd, int byte)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };

    return fcntl(fd, F_OFD_GETLK, &fl) < 0 || fl.l_type == F_UNLCK;
}

static int lock_byte(int fd, int byte)
{
    struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };

    return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* Take image locks compatible with QEMU's: a writer uses read, write and resize and shares
 * none of write and resize; a reader uses read and does not share write or resize either (the
 * image must not change under it).  So any number of readers, or one writer, as with QEMU. */
static int file_lock_image(BlockDriverState *bs, BDRVFileState *s, bool write, GError **errp)
{
    static const int used_rw[] = { PERM_CONSISTENT_READ, PERM_WRITE, PERM_RESIZE };
    static const int used_ro[] = { PERM_CONSISTENT_READ };
    static const int unshared[] = { PERM_WRITE, PERM_RESIZE };
    const int *used = write ? used_rw : used_ro;
    size_t n_used = write ? G_N_ELEMENTS(used_rw) : G_N_ELEMENTS(used_ro);
    size_t n_unshared = G_N_ELEMENTS(unshared);

    /* Someone else refusing to share a permission we need? */
    for (size_t i = 0; i < n_used; i++) {
        if (!lock_byte_free(s->fd, LOCK_SHARED_BASE + used[i])) {
            error_setg(errp, "%s: image is in use by another process (QEMU or blkfuse) that "
                       "does not share %s access; stop it first", bs->filename,
                       used[i] == PERM_CONSISTENT_READ ? "read" : "write");
            return -EBUSY;
        }
    }
    /* Someone else using a permission we refuse to share? */
    for (size_t i = 0; i < n_unshared; i++) {
        if (!lock_byte_free(s->fd, LOCK_PERM_BASE + unshared[i])) {
            error_setg(errp, "%s: image is in use by another process (QEMU or blkfuse) that "
                       "writes it; stop it first", bs->filename);
            return -EBUSY;
        }
    }
    for (size_t i = 0; i < n_used; i++) {
        int ret = lock_byte(s->fd, LOCK_PERM_BASE + used[i]);
        if (ret < 0 && ret != -ENOLCK && ret != -EOPNOTSUPP) {
            error_setg_errno(errp, ret, "%s: cannot lock the image", bs->filename);
            return ret;
        }
    }
    for (size_t i = 0; i < n_unshared; i++) {
        int ret = lock_byte(s->fd, LOCK_SHARED_BASE + unshared[i]);
        if (ret < 0 && ret != -ENOLCK && ret != -EOPNOTSUPP) {
            error_setg_errno(errp, ret, "%s: cannot lock the image", bs->filename);
            return ret;
        }
    }
    return 0;
}

/* Smallest O_DIRECT transfer the file accepts: 512 or 4096. */
static uint32_t probe_direct_alignment(BDRVFileState *s)
{
    void *buf = blk_blockalign(4096);
    uint32_t align = 4096;

    if (s->is_bdev) {
        int sz;
        if (ioctl(s->fd, BLKSSZGET, &sz) == 0 && sz > 0) {
            align = sz;
        }
    } else if (pread(s->fd, buf, 512, 0) >= 0) {
        align = 512;
    }
    blk_vfree(buf);
    return align;
}

/* A second descriptor for the file open as s->fd, without O_DIRECT; -1 with errno set. */
static int file_reopen_buffered(BDRVFileState *s, const char *filename)
{
    g_autofree char *self = g_strdup_printf("/proc/self/fd/%d", s->fd);
    int fd = open(self, O_RDWR | O_CLOEXEC);

    return fd >= 0 || errno != ENOENT ? fd : open(filename, O_RDWR | O_CLOEXEC);
}

bool bdrv_file_set_default_aio(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(file_aio_names); i++) {
        if (strcmp(name, file_aio_names[i]) == 0) {
            file_default_aio = i;
            return true;
        }
    }
    return false;
}

/* Take the aio= option: the engine this node uses.  Checked against the cache mode and what
 * this thread's event loop offers. */
static bool file_take_aio(BlockDriverState *bs, BlockOptions *opts, int flags, FileAio *aio,
                          GError **errp)
{
    g_autofree char *name = block_options_take(opts, "aio");
    size_t i;

    *aio = file_default_aio;
    if (!name) {
        return true;
    }
    for (i = 1; i < G_N_ELEMENTS(file_aio_names); i++) {
        if (strcmp(name, file_aio_names[i]) == 0) {
            break;
        }
    }
    if (i == G_N_ELEMENTS(file_aio_names)) {
        error_setg(errp, "%s: unknown aio engine '%s': use io_uring, native or threads",
                   bs->filename, name);
        return false;
    }
    *aio = i;
    if (*aio == FILE_AIO_NATIVE && !(flags & BDRV_O_NOCACHE)) {
        error_setg(errp, "%s: aio=native needs --cache=none or directsync (libaio would block "
                   "on the page cache); use aio=io_uring or aio=threads", bs->filename);
        return false;
    }
    if (*aio == FILE_AIO_IO_URING && !luring_available()) {
        error_setg(errp, "%s: aio=io_uring: io_uring is not available here (built without "
                   "liburing, refused by the kernel or sysctl kernel.io_uring_disabled, or "
                   "BLKFUSE_IO_URING=off); use aio=native or aio=threads", bs->filename);
        return false;
    }
    return true;
}

static bool file_use_ring(BDRVFileState *s);

/* The engine requests of the calling thread use, for the log. */
static const char *file_engine_name(BDRVFileState *s, bool direct)
{
    if (file_use_ring(s)) {
        return "io_uring";
    }
    return direct && s->aio != FILE_AIO_THREADS ? "native (libaio)" : "threads";
}

static int file_open(BlockDriverState *bs, BlockOptions *opts, int flags, GError **errp)
{
    BDRVFileState *s = bs->opaque;
    int oflags = O_CLOEXEC | ((flags & BDRV_O_RDWR) ? O_RDWR : O_RDONLY);
    struct stat st;
    bool locking = !(flags & BDRV_O_NO_LOCK);
    int64_t len;
    int ret;

    s->fd_tail = -1;
    s->filename = bs->filename;
    s->inline_max = FILE_INLINE_MAX_DEFAULT;
    s->write_behind = FILE_WRITE_BEHIND_DEFAULT;
    s->splice_read = true;
    if (!block_options_take_bool(opts, "locking", &locking, NULL, errp) ||
        !block_options_take_bool(opts, "splice-read", &s->splice_read, NULL, errp) ||
        !file_take_aio(bs, opts, flags, &s->aio, errp) ||
        !block_options_take_size(opts, "inline-write-max", &s->inline_max, NULL, errp) ||
        !block_options_take_size(opts, "write-behind", &s->write_behind, NULL, errp)) {
        return -EINVAL;
    }
    if (s->aio != FILE_AIO_AUTO || (flags & BDRV_O_NOCACHE)) {
        s->inline_max = 0;      /* a forced engine does every write; O_DIRECT has its own */
    }
    if (flags & BDRV_O_NOCACHE) {
        oflags |= O_DIRECT;
    }
    s->fd = open(bs->filename, oflags);
    if (s->fd < 0) {
        ret = -errno;
        if (ret == -EINVAL && (flags & BDRV_O_NOCACHE)) {
            error_setg(errp, "%s: the file system does not support O_DIRECT; use "
                       "--cache=writeback", bs->filename);
        } else {
            error_setg_errno(errp, ret, "%s", bs->filename);
        }
        return ret;
    }
    if (fstat(s->fd, &st) < 0) {
        ret = -errno;
        error_setg_errno(errp, ret, "%s", bs->filename);
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        ret = -EISDIR;
        error_setg(errp, "%s: is a directory, not a disk image", bs->filename);
        goto fail;
    }
    s->is_bdev = S_ISBLK(st.st_mode);
    {
        struct statfs sfs;
        s->mem_fs = fstatfs(s->fd, &sfs) == 0 &&
                    (sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC);
    }
    len = file_query_length(s);
    if (len < 0) {
        ret = len;
        error_setg_errno(errp, ret, "%s: cannot get the size", bs->filename);
        goto fail;
    }
    s->size = len;
    s->wb_hwm = s->wb_started = len;
    if (locking) {
        ret = file_lock_image(bs, s, flags & BDRV_O_RDWR, errp);
        if (ret < 0) {
            goto fail;
        }
    }
    s->direct = flags & BDRV_O_NOCACHE;
    s->splice_read = s->splice_read && !s->direct && !s->is_bdev;
    bs->splice_read = s->splice_read;
    log_debug("%s: I/O engine %s", bs->filename, file_engine_name(s, s->direct));
    if (s->direct && !s->is_bdev && (flags & BDRV_O_RDWR)) {
        s->fd_tail = file_reopen_buffered(s, bs->filename);
        if (s->fd_tail < 0) {
            ret = -errno;
            error_setg_errno(errp, ret, "%s", bs->filename);
            goto fail;
        }
    }
    return 0;

fail:
    close(s->fd);
    s->fd = -1;
    return ret;
}

static void file_close(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;

    if (s->fd >= 0) {
        /* Drop the image locks before close: an io_uring request the kernel has completed
         * may still hold the open file description for a moment, and with it the locks, so
         * that the image would still look in use to an open that follows at once.  Not for an
         * fd lent to the kernel, whose locks must last as long as the kernel can write. */
        if (!s->fd_lent) {
            struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET };
            fcntl(s->fd, F_OFD_SETLK, &fl);
        }
        close(s->fd);
        s->fd = -1;
    }
    if (s->fd_tail >= 0) {
        close(s->fd_tail);
        s->fd_tail = -1;
    }
}

static void file_refresh_limits(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;

    if (s->direct) {
        bs->bl.request_alignment = probe_direct_alignment(s);
        bs->bl.mem_alignment = 4096;
    } else {
        bs->bl.request_alignment = 1;
        bs->bl.mem_alignment = 1;
    }
}

static int64_t file_getlength(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;

    return __atomic_load_n(&s->size, __ATOMIC_RELAXED);
}

static int file_host_fd(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;

    s->fd_lent = true;
    return s->fd;
}

/* The kernel may have grown the file behind our back (FUSE passthrough writes). */
static int64_t file_refresh_length(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;
    int64_t len = file_query_length(s);

    if (len >= 0) {
        __atomic_store_n(&s->size, len, __ATOMIC_RELAXED);
    }
    return len;
}

static int64_t file_get_allocated_file_size(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;
    struct stat st;

    if (fstat(s->fd, &st) < 0) {
        return -errno;
    }
    return s->is_bdev ? file_getlength(bs) : (int64_t)st.st_blocks * 512;
}

/* --- worker-thread functions: each returns 0/bytes or -errno --- */

static int worker_pread(void *opaque)
{
    FileReq *r = opaque;
    int64_t done = 0;

    while (done < r->bytes) {
        ssize_t n = pread(r->fd, (char *)r->buf + done, r->bytes - done, r->offset + done);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (n == 0) {           /* past EOF: zeros */
            memset((char *)r->buf + done, 0, r->bytes - done);
            break;
        }
        done += n;
    }
    return 0;
}

static int worker_pwrite(void *opaque)
{
    FileReq *r = opaque;
    int64_t done = 0;

    while (done < r->bytes) {
        ssize_t n = pwrite(r->fd, (char *)r->buf + done, r->bytes - done, r->offset + done);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (n == 0) {
            return -ENOSPC;
        }
        done += n;
    }
    return 0;
}

static int worker_writeback(void *opaque)
{
    FileReq *r = opaque;

    return sync_file_range(r->fd, r->offset, r->bytes, SYNC_FILE_RANGE_WRITE) < 0 ? -errno : 0;
}

/* Write-back starts submitted and not yet done (process-wide: they outlive their node).  At
 * most FILE_WB_DETACHED_MAX at once; beyond, a write waits for its own (file_write_behind). */
static int file_wb_detached;

/* worker_writeback on a FileReq of its own, whose fd is a dup (the node may be closed first). */
static int worker_writeback_detached(void *opaque)
{
    FileReq *r = opaque;

    worker_writeback(r);        /* a hint: a failure is the flush's to report */
    close(r->fd);
    g_free(r);
    __atomic_sub_fetch(&file_wb_detached, 1, __ATOMIC_RELEASE);
    return 0;
}

/* Start worker_writeback(r) in a worker without waiting for it: false if it cannot be (too
 * many in flight, no fd or worker left), then the caller runs it itself. */
static bool file_writeback_submit(const FileReq *r)
{
    FileReq *own;

    if (__atomic_add_fetch(&file_wb_detached, 1, __ATOMIC_ACQUIRE) > FILE_WB_DETACHED_MAX) {
        goto fail;
    }
    own = g_memdup2(r, sizeof(*r));
    own->fd = fcntl(r->fd, F_DUPFD_CLOEXEC, 0);
    if (own->fd >= 0 && thread_pool_submit(worker_writeback_detached, own)) {
        return true;
    }
    if (own->fd >= 0) {
        close(own->fd);
    }
    g_free(own);
fail:
    __atomic_sub_fetch(&file_wb_detached, 1, __ATOMIC_RELEASE);
    return false;
}

unsigned bdrv_file_write_behind_pending(void)
{
    return __atomic_load_n(&file_wb_detached, __ATOMIC_ACQUIRE);
}

static int worker_fdatasync(void *opaque)
{
    FileReq *r = opaque;

    return fdatasync(r->fd) < 0 ? -errno : 0;
}

static int worker_fallocate(void *opaque)
{
    FileReq *r = opaque;

    return fallocate(r->fd, r->mode, r->offset, r->bytes) < 0 ? -errno : 0;
}

static int worker_ftruncate(void *opaque)
{
    FileReq *r = opaque;

    return ftruncate(r->fd, r->offset) < 0 ? -errno : 0;
}

/* lseek(SEEK_DATA) from offset and, when data starts right there, lseek(SEEK_HOLE) from offset,
 * for file_co_block_status.  Both may wait for the inode lock, so a worker makes them. */
typedef struct SeekReq {
    int fd;
    off_t offset;
    off_t data;                 /* out: next data at or after offset, or -errno */
    off_t hole;                 /* out: next hole at or after offset (if data == offset) */
} SeekReq;

static int worker_seek(void *opaque)
{
    SeekReq *r = opaque;

    r->data = lseek(r->fd, r->offset, SEEK_DATA);
    if (r->data < 0) {
        r->data = -errno;
        return 0;
    }
    if (r->data == r->offset) {
        r->hole = lseek(r->fd, r->offset, SEEK_HOLE);
        if (r->hole < 0) {
            r->hole = -errno;
        }
    }
    return 0;
}

static int worker_ioctl_range(void *opaque)
{
    FileReq *r = opaque;
    uint64_t range[2] = { r->offset, r->bytes };

    return ioctl(r->fd, r->mode, range) < 0 ? -errno : 0;
}

/* A write, fallocate or ftruncate of the node enters (+1) or leaves (-1) a worker or the ring:
 * inline writes wait until none is left (they would wait for its inode lock). */
static void file_busy(BDRVFileState *s, int delta)
{
    __atomic_add_fetch(&s->busy, delta, __ATOMIC_RELAXED);
}

/* Whether this request goes through the calling thread's io_uring. */
static bool file_use_ring(BDRVFileState *s)
{
    return (s->aio == FILE_AIO_AUTO || s->aio == FILE_AIO_IO_URING) && luring_available();
}

/* Read or write all of [offset, offset + bytes) of fd (s->fd, or fd_tail): short transfers are
 * resubmitted, reads past EOF read as zeros, a write that makes no progress fails with ENOSPC.
 * Through the ring (unless !ring_ok); or libaio for O_DIRECT (direct: buf aligned); or a worker
 * thread, which also takes over what the ring or libaio refuse (EAGAIN, ECANCELED, ENOSYS). */
static int coroutine_fn file_co_rw(BDRVFileState *s, int fd, int64_t offset, int64_t bytes,
                                   void *buf, bool write, bool direct, bool ring_ok)
{
    bool ring = ring_ok && file_use_ring(s);
    bool native = !ring && direct && s->aio != FILE_AIO_THREADS;
    int64_t done = 0;
    int ret = 0;

    if (write) {
        file_busy(s, 1);
    }
    while ((ring || native) && done < bytes) {
        char *p = (char *)buf + done;
        ssize_t n = ring ? luring_co_rw(fd, offset + done, p, bytes - done, write)
                         : laio_co_submit(fd, offset + done, p, bytes - done,
                                          write ? LAIO_WRITE : LAIO_READ);
        if (n == -EINTR) {
            continue;
        }
        if (n == -EAGAIN || n == -ECANCELED || n == -ENOSYS) {
            break;              /* the rest in a worker thread */
        }
        if (n < 0) {
            ret = n;
            goto out;
        }
        if (n == 0) {
            if (write) {
                ret = -ENOSPC;
                goto out;
            }
            memset(p, 0, bytes - done);
            goto out;
        }
        done += n;
    }
    if (done < bytes) {
        FileReq r = { .fd = fd, .offset = offset + done, .bytes = bytes - done,
                      .buf = (char *)buf + done };
        ret = thread_pool_run(write ? worker_pwrite : worker_pread, &r);
    }
out:
    if (write) {
        file_busy(s, -1);
    }
    return ret;
}

/* fdatasync or fallocate: through the ring, or a worker thread. */
static int coroutine_fn file_co_fdatasync(BDRVFileState *s)
{
    FileReq r = { .fd = s->fd };
    int ret;

    if (file_use_ring(s)) {
        do {
            ret = luring_co_fdatasync(s->fd);
        } while (ret == -EINTR);
        if (ret != -EAGAIN && ret != -ECANCELED) {
            return ret;
        }
    }
    return thread_pool_run(worker_fdatasync, &r);
}

static int coroutine_fn file_co_fallocate(BDRVFileState *s, int mode, int64_t offset,
                                          int64_t bytes)
{
    FileReq r = { .fd = s->fd, .offset = offset, .bytes = bytes, .mode = mode };
    int ret = -EAGAIN;

    file_busy(s, 1);
    if (file_use_ring(s)) {
        do {
            ret = luring_co_fallocate(s->fd, mode, offset, bytes);
        } while (ret == -EINTR);
    }
    if (ret == -EAGAIN || ret == -ECANCELED) {
        ret = thread_pool_run(worker_fallocate, &r);
    }
    file_busy(s, -1);
    return ret;
}

/* The file refuses RWF_NOWAIT reads or writes (once per node): say what happens instead. */
static void file_log_nowait_off(BDRVFileState *s, bool write)
{
    if (write && s->inline_max) {
        log_debug("%s: the file system refuses RWF_NOWAIT writes: buffered writes of up to %"
                  PRIu64 " bytes are made inline", s->filename, s->inline_max);
    } else if (write) {
        log_debug("%s: the file system refuses RWF_NOWAIT writes: buffered writes go to worker "
                  "threads", s->filename);
    } else if (s->mem_fs && s->inline_max) {
        log_debug("%s: a file in memory that refuses RWF_NOWAIT reads: buffered reads of up to %"
                  PRIu64 " bytes are made inline", s->filename, s->inline_max);
    }
}

/* Buffered I/O that the page cache can satisfy at once needs no worker thread: try it with
 * RWF_NOWAIT, which never blocks (it fails with EAGAIN instead), here in the event loop.
 * Returns bytes done (possibly fewer than asked, or 0), never blocking. */
static int64_t file_try_nowait(BDRVFileState *s, int64_t offset, int64_t bytes, void *buf,
                               bool write)
{
    struct iovec iov = { .iov_base = buf, .iov_len = bytes };
    ssize_t n;

    if (__atomic_load_n(&s->nowait_off[write], __ATOMIC_RELAXED)) {
        return 0;
    }
    n = write ? pwritev2(s->fd, &iov, 1, offset, RWF_NOWAIT)
              : preadv2(s->fd, &iov, 1, offset, RWF_NOWAIT);
    if (n < 0) {
        /* EOPNOTSUPP: e.g. tmpfs; ext4 takes reads but not writes */
        if (errno == EOPNOTSUPP && !__atomic_exchange_n(&s->nowait_off[write], 1,
                                                        __ATOMIC_RELAXED)) {
            file_log_nowait_off(s, write);
        }
        return 0;       /* EAGAIN (would block), or unsupported: let a worker do it */
    }
    return n;
}

/* Whether a buffered write of bytes may be made inline now (see the top of the file). */
static bool file_inline_ok(BDRVFileState *s, int64_t bytes)
{
    int64_t max = s->inline_max;

    if (max && aio_current_serial()) {
        max = MAX(max, FILE_INLINE_SERIAL_MAX);     /* nothing waits behind it */
    }
    return bytes <= max && !s->is_bdev &&
           __atomic_load_n(&s->nowait_off[true], __ATOMIC_RELAXED) &&
           __atomic_load_n(&s->busy, __ATOMIC_RELAXED) == 0 &&
           g_get_monotonic_time() >= __atomic_load_n(&s->inline_paused_until, __ATOMIC_RELAXED);
}

/* Whether a buffered read of bytes that RWF_NOWAIT could not make may be made inline now: from a
 * file in memory only (see the top of the file). */
static bool file_inline_read_ok(BDRVFileState *s, int64_t bytes)
{
    return s->mem_fs && bytes <= (int64_t)s->inline_max &&
           __atomic_load_n(&s->nowait_off[false], __ATOMIC_RELAXED) &&
           g_get_monotonic_time() >= __atomic_load_n(&s->inline_paused_until, __ATOMIC_RELAXED);
}

/* A buffered write or read in the calling thread: 0 or -errno (reads past EOF read zeros).  If
 * it was slow, inline I/O of the node pauses. */
static int file_rw_inline(BlockDriverState *bs, BDRVFileState *s, int64_t offset, int64_t bytes,
                          void *buf, bool write)
{
    int64_t start = g_get_monotonic_time();
    int64_t done = 0, took;
    int ret = 0;

    while (done < bytes) {
        char *p = (char *)buf + done;
        ssize_t n = write ? pwrite(s->fd, p, bytes - done, offset + done)
                          : pread(s->fd, p, bytes - done, offset + done);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            ret = -errno;
            break;
        }
        if (n == 0) {
            if (write) {
                ret = -ENOSPC;
            } else {
                memset(p, 0, bytes - done);     /* past EOF */
            }
            break;
        }
        done += n;
    }
    __atomic_add_fetch(&s->inline_ops[write], 1, __ATOMIC_RELAXED);
    took = g_get_monotonic_time() - start;
    if (took > FILE_INLINE_SLOW_US) {
        int64_t pause = MIN((int64_t)FILE_INLINE_PAUSE_FACTOR * took, FILE_INLINE_PAUSE_MAX_US);
        __atomic_store_n(&s->inline_paused_until, start + took + pause, __ATOMIC_RELAXED);
        log_debug("%s: an inline %s of %" G_GINT64_FORMAT " bytes took %" G_GINT64_FORMAT
                  " us; I/O goes to worker threads for %" G_GINT64_FORMAT " ms", bs->filename,
                  write ? "write" : "read", bytes, took, pause / 1000);
    }
    return ret;
}

uint64_t bdrv_file_inline_ops(BlockDriverState *bs, bool write)
{
    BDRVFileState *s = bs->opaque;

    return __atomic_load_n(&s->inline_ops[write], __ATOMIC_RELAXED);
}

static int coroutine_fn file_co_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      void *buf, BdrvRequestFlags flags)
{
    BDRVFileState *s = bs->opaque;
    int64_t done = 0;

    if (s->direct) {
        if (((uintptr_t)buf & (bs->bl.mem_alignment - 1)) == 0) {
            return file_co_rw(s, s->fd, offset, bytes, buf, false, true, true);
        } else {
            void *bounce = blk_blockalign(bytes);
            int ret = file_co_rw(s, s->fd, offset, bytes, bounce, false, true, true);
            if (ret >= 0) {
                memcpy(buf, bounce, bytes);
            }
            blk_vfree(bounce);
            return ret;
        }
    }
    if (!s->is_bdev) {
        done = file_try_nowait(s, offset, bytes, buf, false);
        if (done == bytes) {
            return 0;
        }
        if (done == 0 && offset >= file_getlength(bs)) {
            memset(buf, 0, bytes);      /* entirely past EOF */
            return 0;
        }
        if (file_inline_read_ok(s, bytes - done)) {
            return file_rw_inline(bs, s, offset + done, bytes - done, (char *)buf + done, false);
        }
    }
    return file_co_rw(s, s->fd, offset + done, bytes - done, (char *)buf + done, false, false,
                      true);
}

#ifndef __NR_cachestat
#define __NR_cachestat 451      /* Linux 6.5, the same number on every architecture */
#endif

struct file_cachestat_range {
    uint64_t off;
    uint64_t len;
};

struct file_cachestat {
    uint64_t nr_cache;
    uint64_t nr_dirty;
    uint64_t nr_writeback;
    uint64_t nr_evicted;
    uint64_t nr_recently_evicted;
};

/* Whether every page of [offset, offset + bytes) is in the page cache, so that splicing it
 * cannot wait for the disk.  A kernel without cachestat (or a seccomp filter) turns splice
 * reads off for the node. */
static bool file_range_cached(BDRVFileState *s, int64_t offset, int64_t bytes)
{
    struct file_cachestat_range range = { offset, bytes };
    struct file_cachestat cs;
    uint32_t page = bdrv_host_page_size();
    uint64_t pages = (offset + bytes - 1) / page - offset / page + 1;

    if (syscall(__NR_cachestat, s->fd, &range, &cs, 0) < 0) {
        if (errno == ENOSYS || errno == EPERM) {
            log_debug("%s: no cachestat (%s): reads are copied, never spliced", s->filename,
                      g_strerror(errno));
            __atomic_store_n(&s->splice_read, false, __ATOMIC_RELAXED);
        }
        return false;
    }
    return cs.nr_cache >= pages;
}

static int64_t coroutine_fn file_co_splice_read(BlockDriverState *bs, int64_t offset,
                                                int64_t bytes, int pipe_fd)
{
    BDRVFileState *s = bs->opaque;
    loff_t pos = offset;
    int64_t done = 0;

    if (!__atomic_load_n(&s->splice_read, __ATOMIC_RELAXED) || bytes <= 0 ||
        offset + bytes > file_getlength(bs) || !file_range_cached(s, offset, bytes)) {
        return -ENOTSUP;
    }
    while (done < bytes) {
        /* NONBLOCK: a pipe too small for the range fails instead of waiting for a reader. */
        ssize_t n = splice(s->fd, &pos, pipe_fd, NULL, bytes - done, SPLICE_F_NONBLOCK);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return done == 0 && (errno == EINVAL || errno == EAGAIN) ? -ENOTSUP : -errno;
        }
        if (n == 0) {
            break;              /* the file ended (truncated meanwhile) */
        }
        done += n;
    }
    __atomic_add_fetch(&s->splice_ops, 1, __ATOMIC_RELAXED);
    return done;
}

uint64_t bdrv_file_splice_ops(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;

    return __atomic_load_n(&s->splice_ops, __ATOMIC_RELAXED);
}

static void file_update_size(BDRVFileState *s, int64_t end)
{
    int64_t cur = __atomic_load_n(&s->size, __ATOMIC_RELAXED);

    while (end > cur &&
           !__atomic_compare_exchange_n(&s->size, &cur, end, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
    }
}

/* O_DIRECT write.  Its end is unaligned only where it ends the file (block.h): O_DIRECT cannot
 * write that partial block without padding the file to a whole block, so those last bytes go
 * through the page cache, with fd_tail.  Direct I/O stays coherent with them: before a direct
 * read or write of a range the kernel writes back (and for writes drops) its cached pages, and
 * fdatasync covers the whole file whichever descriptor wrote it. */
static int coroutine_fn file_co_pwrite_direct(BlockDriverState *bs, int64_t offset,
                                              int64_t bytes, const void *buf)
{
    BDRVFileState *s = bs->opaque;
    int64_t aligned = ROUND_DOWN(bytes, bs->bl.request_alignment);
    int ret = 0;

    if (aligned > 0) {
        if (((uintptr_t)buf & (bs->bl.mem_alignment - 1)) == 0) {
            ret = file_co_rw(s, s->fd, offset, aligned, (void *)buf, true, true, true);
        } else {
            void *bounce = blk_blockalign(aligned);
            memcpy(bounce, buf, aligned);
            ret = file_co_rw(s, s->fd, offset, aligned, bounce, true, true, true);
            blk_vfree(bounce);
        }
    }
    if (ret >= 0 && aligned < bytes) {
        g_assert(s->fd_tail >= 0);
        ret = file_co_rw(s, s->fd_tail, offset + aligned, bytes - aligned,
                         (char *)buf + aligned, true, false, true);
    }
    return ret;
}

/* A buffered write of [offset, end) is done: if it raised the high-water mark and write-behind
 * bytes are appended since write-back was last started, start it for them (see the top of the
 * file).  Only a hint: a failure is the flush's to report. */
static void coroutine_fn file_write_behind(BDRVFileState *s, int64_t offset, int64_t end)
{
    int64_t hwm = __atomic_load_n(&s->wb_hwm, __ATOMIC_RELAXED);
    int64_t from;

    if (!s->write_behind || end <= hwm) {
        return;                 /* off, or a rewrite inside what was written before */
    }
    while (end > hwm && !__atomic_compare_exchange_n(&s->wb_hwm, &hwm, end, true,
                                                     __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    from = __atomic_load_n(&s->wb_started, __ATOMIC_RELAXED);
    if (end - from >= (int64_t)s->write_behind &&
        __atomic_compare_exchange_n(&s->wb_started, &from, end, false, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED)) {
        FileReq r = { .fd = s->fd, .offset = MIN(from, offset), .bytes = end - MIN(from, offset) };

        __atomic_add_fetch(&s->wb_ops, 1, __ATOMIC_RELAXED);
        if (!file_writeback_submit(&r)) {
            thread_pool_run(worker_writeback, &r);
        }
    }
}

uint64_t bdrv_file_write_behind_ops(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;

    return __atomic_load_n(&s->wb_ops, __ATOMIC_RELAXED);
}

static int coroutine_fn file_co_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       const void *buf, BdrvRequestFlags flags)
{
    BDRVFileState *s = bs->opaque;
    int ret;

    if (s->direct) {
        ret = file_co_pwrite_direct(bs, offset, bytes, buf);
    } else {
        /* A write the page cache takes at once needs no engine: RWF_NOWAIT in the loop.  Where
         * the file system refuses that (ext4, tmpfs), the ring would punt every buffered write
         * to its kernel worker, which runs the writes of one file strictly one after the other
         * (io-wq hashes them by inode): at depth 32 that measured 0.4-0.9 times the throughput
         * of the worker threads, whose wake-ups overlap.  So there, unless aio=io_uring is
         * forced, buffered writes are made inline (bounded: file_inline_ok), or else go to the
         * threads. */
        int64_t done = s->is_bdev ? 0 : file_try_nowait(s, offset, bytes, (void *)buf, true);
        bool ring_ok = s->aio == FILE_AIO_IO_URING ||
                       !__atomic_load_n(&s->nowait_off[true], __ATOMIC_RELAXED);

        if (done < bytes && file_inline_ok(s, bytes - done)) {
            ret = file_rw_inline(bs, s, offset + done, bytes - done, (char *)buf + done, true);
        } else {
            ret = file_co_rw(s, s->fd, offset + done, bytes - done, (char *)buf + done, true,
                             false, ring_ok);
        }
        if (ret >= 0) {
            file_write_behind(s, offset, offset + bytes);
        }
    }
    if (ret >= 0 && !s->is_bdev) {
        file_update_size(s, offset + bytes);    /* formats (qcow2) grow their file by writing */
    }
    return ret;
}

static int coroutine_fn file_co_flush(BlockDriverState *bs)
{
    return file_co_fdatasync(bs->opaque);
}

static int coroutine_fn file_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                              int64_t bytes, BdrvRequestFlags flags)
{
    BDRVFileState *s = bs->opaque;
    FileReq r = { .fd = s->fd, .offset = offset, .bytes = bytes };
    int ret;

    if (s->is_bdev) {
        r.mode = BLKZEROOUT;
        ret = thread_pool_run(worker_ioctl_range, &r);
        return ret == -EINVAL || ret == -EOPNOTSUPP || ret == -ENOTTY ? -ENOTSUP : ret;
    }
    if (flags & BDRV_REQ_MAY_UNMAP) {
        ret = file_co_fallocate(s, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, bytes);
        if (ret != -EOPNOTSUPP && ret != -ENOSYS) {
            return ret;
        }
    }
    ret = file_co_fallocate(s, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, bytes);
    if (ret == -EOPNOTSUPP || ret == -ENOSYS || ret == -EINVAL) {
        return -ENOTSUP;
    }
    return ret;
}

static int coroutine_fn file_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVFileState *s = bs->opaque;
    FileReq r = { .fd = s->fd, .offset = offset, .bytes = bytes };
    int ret;

    if (s->is_bdev) {
        r.mode = BLKDISCARD;
        ret = thread_pool_run(worker_ioctl_range, &r);
    } else {
        ret = file_co_fallocate(s, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, bytes);
    }
    /* Discard is advisory: a file system that cannot punch holes just keeps the data. */
    return ret == -EOPNOTSUPP || ret == -ENOSYS || ret == -ENOTTY ? 0 : ret;
}

static int coroutine_fn file_co_preallocate(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes)
{
    BDRVFileState *s = bs->opaque;
    int ret;

    if (s->is_bdev) {
        return 0;       /* a device's blocks are all there */
    }
    ret = file_co_fallocate(s, FALLOC_FL_KEEP_SIZE, offset, bytes);
    return ret == -EOPNOTSUPP || ret == -ENOSYS ? 0 : ret;
}

/* preallocation=full, as QEMU's: write zeros over [start, end), so that every block is
 * allocated and written (fallocate alone leaves unwritten extents, and thin storage unbacked);
 * reports progress (block/progress.h). */
static int coroutine_fn file_write_zeros(BlockDriverState *bs, int64_t start, int64_t end)
{
    const int64_t chunk = 4 * 1024 * 1024;
    uint8_t *zeros = blk_blockalign(chunk);
    int ret = 0;

    memset(zeros, 0, chunk);
    for (int64_t pos = start; pos < end && ret >= 0; pos += chunk) {
        ret = bdrv_co_pwrite(bs, pos, MIN(chunk, end - pos), zeros, 0);
        block_progress_report(MIN(pos + chunk, end) - start, end - start);
    }
    blk_vfree(zeros);
    return ret < 0 ? ret : 0;
}

static int coroutine_fn file_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                         PreallocMode prealloc, GError **errp)
{
    BDRVFileState *s = bs->opaque;
    int64_t old = file_getlength(bs);
    int ret = 0;

    if (s->is_bdev) {
        if (offset > old || (exact && offset != old)) {
            error_setg(errp, "%s: a block device cannot be resized", bs->filename);
            return -ENOTSUP;
        }
        return 0;
    }
    {
        FileReq r = { .fd = s->fd, .offset = offset };
        file_busy(s, 1);
        ret = thread_pool_run(worker_ftruncate, &r);    /* waits for the inode lock */
        file_busy(s, -1);
    }
    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: cannot resize to %" G_GINT64_FORMAT " bytes",
                         bs->filename, offset);
        return ret;
    }
    __atomic_store_n(&s->size, offset, __ATOMIC_RELAXED);
    if (offset > old && prealloc != PREALLOC_MODE_OFF) {
        ret = file_co_fallocate(s, 0, old, offset - old);
        if (ret >= 0 && prealloc == PREALLOC_MODE_FULL && !s->direct) {
            ret = file_write_zeros(bs, old, offset);
        } else if (ret >= 0 && prealloc == PREALLOC_MODE_FULL) {
            ret = bdrv_co_pwrite_zeroes(bs, old, offset - old, BDRV_REQ_NO_FALLBACK);
            if (ret == -ENOTSUP) {
                ret = 0;        /* fallocate'd space of a regular file already reads as zeros */
            }
        }
        if (ret < 0) {
            error_setg_errno(errp, ret, "%s: cannot preallocate", bs->filename);
        }
    }
    return ret;
}

static int coroutine_fn file_co_block_status(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, int64_t *pnum, int64_t *map,
                                             BlockDriverState **file)
{
    BDRVFileState *s = bs->opaque;
    SeekReq r = { .fd = s->fd, .offset = offset };

    *map = offset;
    *file = bs;
    if (s->is_bdev) {
        *pnum = bytes;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
    }
    thread_pool_run(worker_seek, &r);
    if (r.data < 0) {
        *pnum = bytes;
        if (r.data == -ENXIO) { /* no data after offset: a hole up to EOF */
            return BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID;
        }
        return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;   /* unsupported: all data */
    }
    if (r.data > offset) {
        *pnum = MIN(bytes, r.data - offset);
        return BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID;
    }
    if (r.hole <= offset) {     /* error, or no answer: data */
        *pnum = bytes;
    } else {
        *pnum = MIN(bytes, r.hole - offset);
    }
    return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
}

const BlockDriver bdrv_file = {
    .format_name                    = "file",
    .instance_size                  = sizeof(BDRVFileState),
    .is_protocol                    = true,
    .bdrv_open                      = file_open,
    .bdrv_close                     = file_close,
    .bdrv_refresh_limits            = file_refresh_limits,
    .bdrv_co_pread                  = file_co_pread,
    .bdrv_co_splice_read            = file_co_splice_read,
    .bdrv_co_pwrite                 = file_co_pwrite,
    .bdrv_co_pwrite_zeroes          = file_co_pwrite_zeroes,
    .bdrv_co_pdiscard               = file_co_pdiscard,
    .bdrv_co_preallocate            = file_co_preallocate,
    .bdrv_co_flush                  = file_co_flush,
    .bdrv_co_truncate               = file_co_truncate,
    .bdrv_co_block_status           = file_co_block_status,
    .bdrv_getlength                 = file_getlength,
    .bdrv_host_fd                   = file_host_fd,
    .bdrv_refresh_length            = file_refresh_length,
    .bdrv_get_allocated_file_size   = file_get_allocated_file_size,
};
