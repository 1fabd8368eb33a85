/* file.c - the file protocol driver: a host file or block device.  Buffered I/O runs in worker
 * threads; with O_DIRECT (--cache=none) reads and writes go through Linux native AIO, except the
 * unaligned end of a write that ends the file, which goes through the page cache (fd_tail).
 *
 * Threads: I/O callbacks run in any I/O thread's coroutines; the fd is shared and every call on
 * it is positional (pread/pwrite/fallocate), so no lock is needed.  The cached length is atomic.
 */
#include "config.h"
#include "block/block.h"
#include "block/io-engine.h"
#include "block/util.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <unistd.h>

/* QEMU's image locking layout: a shared lock on byte LOCK_PERM_BASE + n says "I use permission
 * n"; one on LOCK_SHARED_BASE + n says "I do not let others use permission n". */
#define LOCK_PERM_BASE      100
#define LOCK_SHARED_BASE    200
#define PERM_CONSISTENT_READ 0
#define PERM_WRITE          1
#define PERM_RESIZE         3

typedef struct BDRVFileState {
    int fd;
    int fd_tail;                /* O_DIRECT only: the same file without O_DIRECT, or -1 */
    bool is_bdev;
    bool use_aio;               /* O_DIRECT with libaio */
    int64_t size;               /* atomic; cached length */
    int nowait_off[2];          /* atomic, [write]: the file refuses RWF_NOWAIT reads/writes */
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

static int file_open(BlockDriverState *bs, BlockOptions *opts, int flags, GError **errp)
{
    BDRVFileState *s = bs->opaque;
    int oflags = O_CLOEXEC | ((flags & BDRV_O_RDWR) ? O_RDWR : O_RDONLY);
    struct stat st;
    bool locking = !(flags & BDRV_O_NO_LOCK);
    int64_t len;
    int ret;

    s->fd_tail = -1;
    if (!block_options_take_bool(opts, "locking", &locking, NULL, errp)) {
        return -EINVAL;
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
    len = file_query_length(s);
    if (len < 0) {
        ret = len;
        error_setg_errno(errp, ret, "%s: cannot get the size", bs->filename);
        goto fail;
    }
    s->size = len;
    if (locking) {
        ret = file_lock_image(bs, s, flags & BDRV_O_RDWR, errp);
        if (ret < 0) {
            goto fail;
        }
    }
    s->use_aio = flags & BDRV_O_NOCACHE;
    if (s->use_aio && !s->is_bdev && (flags & BDRV_O_RDWR)) {
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

    if (s->use_aio) {
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

/* O_DIRECT transfer through libaio; buf must be aligned.  Short reads at EOF read as zeros. */
static int coroutine_fn file_co_rw_aio(BDRVFileState *s, int64_t offset, int64_t bytes,
                                       void *buf, LaioType type)
{
    int64_t done = 0;

    while (done < bytes) {
        ssize_t n = laio_co_submit(s->fd, offset + done, (char *)buf + done, bytes - done, type);
        if (n == -ENOSYS) {     /* no libaio here: fall back to a worker thread */
            FileReq r = { .fd = s->fd, .offset = offset + done, .bytes = bytes - done,
                          .buf = (char *)buf + done };
            return thread_pool_run(type == LAIO_READ ? worker_pread : worker_pwrite, &r);
        }
        if (n < 0) {
            return n;
        }
        if (n == 0) {
            if (type == LAIO_WRITE) {
                return -ENOSPC;
            }
            memset((char *)buf + done, 0, bytes - done);
            break;
        }
        done += n;
    }
    return 0;
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
        if (errno == EOPNOTSUPP) {      /* e.g. tmpfs; ext4 supports reads but not writes */
            __atomic_store_n(&s->nowait_off[write], 1, __ATOMIC_RELAXED);
        }
        return 0;       /* EAGAIN (would block), or unsupported: let a worker do it */
    }
    return n;
}

static int coroutine_fn file_co_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      void *buf, BdrvRequestFlags flags)
{
    BDRVFileState *s = bs->opaque;
    FileReq r = { .fd = s->fd, .offset = offset, .bytes = bytes, .buf = buf };

    if (s->use_aio) {
        if (((uintptr_t)buf & (bs->bl.mem_alignment - 1)) == 0) {
            return file_co_rw_aio(s, offset, bytes, buf, LAIO_READ);
        } else {
            void *bounce = blk_blockalign(bytes);
            int ret = file_co_rw_aio(s, offset, bytes, bounce, LAIO_READ);
            if (ret >= 0) {
                memcpy(buf, bounce, bytes);
            }
            blk_vfree(bounce);
            return ret;
        }
    }
    if (!s->is_bdev) {
        int64_t done = file_try_nowait(s, offset, bytes, buf, false);
        if (done == bytes) {
            return 0;
        }
        if (done == 0 && offset >= file_getlength(bs)) {
            memset(buf, 0, bytes);      /* entirely past EOF */
            return 0;
        }
        r.offset += done;
        r.bytes -= done;
        r.buf = (char *)buf + done;
    }
    return thread_pool_run(worker_pread, &r);
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
            ret = file_co_rw_aio(s, offset, aligned, (void *)buf, LAIO_WRITE);
        } else {
            void *bounce = blk_blockalign(aligned);
            memcpy(bounce, buf, aligned);
            ret = file_co_rw_aio(s, offset, aligned, bounce, LAIO_WRITE);
            blk_vfree(bounce);
        }
    }
    if (ret >= 0 && aligned < bytes) {
        FileReq r = { .fd = s->fd_tail, .offset = offset + aligned, .bytes = bytes - aligned,
                      .buf = (char *)buf + aligned };
        g_assert(s->fd_tail >= 0);
        ret = thread_pool_run(worker_pwrite, &r);
    }
    return ret;
}

static int coroutine_fn file_co_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       const void *buf, BdrvRequestFlags flags)
{
    BDRVFileState *s = bs->opaque;
    FileReq r = { .fd = s->fd, .offset = offset, .bytes = bytes, .buf = (void *)buf };
    int ret;

    if (s->use_aio) {
        ret = file_co_pwrite_direct(bs, offset, bytes, buf);
    } else {
        int64_t done = s->is_bdev ? 0 : file_try_nowait(s, offset, bytes, (void *)buf, true);
        ret = 0;
        if (done < bytes) {
            r.offset += done;
            r.bytes -= done;
            r.buf = (char *)buf + done;
            ret = thread_pool_run(worker_pwrite, &r);
        }
    }
    if (ret >= 0 && !s->is_bdev) {
        file_update_size(s, offset + bytes);    /* formats (qcow2) grow their file by writing */
    }
    return ret;
}

static int coroutine_fn file_co_flush(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;
    FileReq r = { .fd = s->fd };

    return thread_pool_run(worker_fdatasync, &r);
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
        r.mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
        ret = thread_pool_run(worker_fallocate, &r);
        if (ret != -EOPNOTSUPP && ret != -ENOSYS) {
            return ret;
        }
    }
    r.mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    ret = thread_pool_run(worker_fallocate, &r);
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
        r.mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
        ret = thread_pool_run(worker_fallocate, &r);
    }
    /* Discard is advisory: a file system that cannot punch holes just keeps the data. */
    return ret == -EOPNOTSUPP || ret == -ENOSYS || ret == -ENOTTY ? 0 : ret;
}

static int coroutine_fn file_co_preallocate(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes)
{
    BDRVFileState *s = bs->opaque;
    FileReq r = { .fd = s->fd, .offset = offset, .bytes = bytes, .mode = FALLOC_FL_KEEP_SIZE };
    int ret;

    if (s->is_bdev) {
        return 0;       /* a device's blocks are all there */
    }
    ret = thread_pool_run(worker_fallocate, &r);
    return ret == -EOPNOTSUPP || ret == -ENOSYS ? 0 : ret;
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
        ret = thread_pool_run(worker_ftruncate, &r);    /* waits for the inode lock */
    }
    if (ret < 0) {
        error_setg_errno(errp, ret, "%s: cannot resize to %" G_GINT64_FORMAT " bytes",
                         bs->filename, offset);
        return ret;
    }
    __atomic_store_n(&s->size, offset, __ATOMIC_RELAXED);
    if (offset > old && prealloc != PREALLOC_MODE_OFF) {
        FileReq r = { .fd = s->fd, .offset = old, .bytes = offset - old, .mode = 0 };
        ret = thread_pool_run(worker_fallocate, &r);
        if (ret >= 0 && prealloc == PREALLOC_MODE_FULL) {
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
