/* protocol.c - the FUSE protocol of an export: INIT negotiation, then one handler per op for a
 * file system whose root is one regular file (the image).  Requests come from a transport
 * (fuse-int.h); each is answered exactly once, at once or from the one coroutine it starts.
 *
 * Threads: handlers run in the queue thread that received the request, coroutines on that
 * queue's event loop; INIT runs in the main thread during create.  Export attributes (mode,
 * owner, times) are shared by the queues under exp->attr_lock.
 */
#include "config.h"
#include "fuse/fuse-int.h"
#include "block/util.h"

#include <linux/fs.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef FALLOC_FL_KEEP_SIZE
#include <linux/falloc.h>
#endif

/* The protocol version we speak: what Debian 12's header describes (7.38); the newer features
 * we use (passthrough, io_uring) are flags, which need no newer minor. */
#define FUSE_PROTO_MINOR        FUSE_KERNEL_MINOR_VERSION
#define FUSE_MAX_BACKGROUND     64
#define FUSE_MIN_MINOR          28          /* max_pages (7.28), lseek (7.24) */
#define FUSE_ATTR_VALID_SEC     1           /* how long the kernel may cache attributes */

/* The INIT flags we ask for, the same as libfuse 3.14 asked for us: asynchronous reads and
 * direct I/O, large requests, cached pages dropped when size or mtime change; and shared
 * mappings of FOPEN_DIRECT_IO opens (7.39, fuse_op_open).  Not asked:
 * FUSE_ATOMIC_O_TRUNC (O_TRUNC then arrives as a SETATTR, so OPEN never changes the image),
 * FUSE_WRITEBACK_CACHE (writes reach the image when write(2) returns), locks (the kernel keeps
 * them locally), splice. */
#define FUSE_INIT_WANT (FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_AUTO_INVAL_DATA |             \
                        FUSE_ASYNC_DIO | FUSE_HANDLE_KILLPRIV | FUSE_MAX_PAGES | FUSE_INIT_EXT | \
                        FUSE_DIRECT_IO_ALLOW_MMAP)

/* --- replies: every handler ends in exactly one of these --- */

/* spliced: the reply is READ data of out_len bytes that the transport's pipe already holds
 * (fuse_co_read_spliced); -EAGAIN then means it was not sent and req is still to answer. */
static int fuse_reply_how(FuseReq *req, bool spliced, int error, const void *arg,
                          size_t arg_len, size_t out_len)
{
    FuseQueue *q = req->q;
    const FuseTransportOps *ops = req->ops ? req->ops : q->exp->transport;
    int ret;

    /* Before the reply: the client it wakes may send its next request to another queue
     * before this thread runs again, and that must not count as two in flight. */
    fuse_affinity_answered(q);
    if (spliced) {
        ret = ops->splice_reply(req, out_len);
        if (ret == -EAGAIN) {
            fuse_affinity_unanswered(q);
            return ret;
        }
    } else {
        ret = ops->reply(req, error, arg, arg_len, out_len);
    }
    q->in_flight--;
    return ret;
}

static int fuse_reply(FuseReq *req, int error, const void *arg, size_t arg_len, size_t out_len)
{
    return fuse_reply_how(req, false, error, arg, arg_len, out_len);
}

/* err: 0 or a positive errno, as the kernel's errors are named. */
static int fuse_reply_err(FuseReq *req, int err)
{
    return fuse_reply(req, -err, NULL, 0, 0);
}

static int fuse_reply_arg(FuseReq *req, const void *arg, size_t len)
{
    return fuse_reply(req, 0, arg, len, 0);
}

/* READ: len bytes of req->out_buf. */
static int fuse_reply_data(FuseReq *req, size_t len)
{
    return fuse_reply(req, 0, NULL, 0, len);
}

/* --- common checks and attributes --- */

static bool fuse_halted(FuseExport *exp)
{
    return __atomic_load_n(&exp->halted, __ATOMIC_ACQUIRE);
}

/* Exported read-only, or the image turned read-only (a qcow2 image found corrupt). */
static bool fuse_read_only(FuseExport *exp)
{
    return exp->common.read_only || blk_is_read_only(exp->common.blk);
}

/* The checks every request handler starts with: after a forced removal everything fails with
 * EIO; a request that would write fails with EROFS on a read-only export.  Returns true if it
 * replied (the handler must then return). */
static bool fuse_refuse(FuseReq *req, bool writes)
{
    FuseExport *exp = req->q->exp;

    if (fuse_halted(exp)) {
        fuse_reply_err(req, EIO);
        return true;
    }
    if (writes && fuse_read_only(exp)) {
        fuse_reply_err(req, EROFS);
        return true;
    }
    return false;
}

static void now(struct timespec *ts)
{
    clock_gettime(CLOCK_REALTIME_COARSE, ts);
}

static void fuse_fill_attr(FuseExport *exp, struct fuse_attr *a)
{
    BlockBackend *blk = exp->common.blk;
    int64_t len, alloc;

    fuse_passthrough_refresh(exp);
    len = blk_getlength(blk);
    alloc = blk_get_allocated_file_size(blk);

    memset(a, 0, sizeof(*a));
    a->ino = FUSE_ROOT_ID;
    a->nlink = 1;
    a->size = len < 0 ? 0 : len;
    a->blksize = 4096;
    /* Allocation of the image on the host; never more than the file could hold. */
    a->blocks = alloc < 0 ? DIV_ROUND_UP(a->size, 512) : DIV_ROUND_UP((uint64_t)alloc, 512);
    g_mutex_lock(&exp->attr_lock);
    a->mode = S_IFREG | (fuse_read_only(exp) ? exp->mode & ~0222 : exp->mode);
    a->uid = exp->uid;
    a->gid = exp->gid;
    a->atime = exp->atime.tv_sec;
    a->atimensec = exp->atime.tv_nsec;
    a->mtime = exp->mtime.tv_sec;
    a->mtimensec = exp->mtime.tv_nsec;
    a->ctime = exp->ctime.tv_sec;
    a->ctimensec = exp->ctime.tv_nsec;
    g_mutex_unlock(&exp->attr_lock);
    fuse_passthrough_times(exp, a);     /* writes through the kernel change the image's */
}

static void fuse_touch_mtime(FuseExport *exp)
{
    struct timespec ts;

    now(&ts);
    g_mutex_lock(&exp->attr_lock);
    exp->mtime = exp->ctime = ts;
    g_mutex_unlock(&exp->attr_lock);
}

static void fuse_reply_attr_now(FuseReq *req)
{
    struct fuse_attr_out out = { .attr_valid = FUSE_ATTR_VALID_SEC };

    fuse_fill_attr(req->q->exp, &out.attr);
    fuse_reply_arg(req, &out, sizeof(out));
}

/* Make the export at least end bytes long (for writes past EOF on a growable export, and
 * fallocate).  Returns 0 or -errno. */
static int coroutine_fn fuse_grow(FuseExport *exp, int64_t end)
{
    int ret = 0;

    co_mutex_lock(&exp->grow_lock);
    if (blk_getlength(exp->common.blk) < end) {
        g_autoptr(GError) err = NULL;
        ret = blk_co_truncate(exp->common.blk, end, false, PREALLOC_MODE_OFF, &err);
        if (ret < 0) {
            log_warning("export %s: cannot grow to %" G_GINT64_FORMAT " bytes: %s",
                        exp->common.id, end, err ? err->message : g_strerror(-ret));
        }
    }
    co_mutex_unlock(&exp->grow_lock);
    return ret;
}

/* Start the one coroutine of req.  It holds a reference on the export while it runs. */
static void fuse_co_start(FuseReq *req, CoroutineEntry *entry)
{
    blk_exp_ref(&req->q->exp->common);
    coroutine_enter(coroutine_create(entry, req));
}

/* The coroutine has replied: drop its reference (exp, not req: req is gone). */
static void fuse_co_done(FuseExport *exp)
{
    blk_exp_unref(&exp->common);
}

/* --- INIT --- */

/* The kernel's offer: flags (the upper half with FUSE_INIT_EXT). */
static uint64_t fuse_init_kernel_flags(const FuseReq *req)
{
    const struct fuse_init_in *in = req->arg;
    uint64_t flags = in->flags;

    if ((flags & FUSE_INIT_EXT) && req->arg_len >= sizeof(struct fuse_init_in)) {
        flags |= (uint64_t)in->flags2 << 32;
    }
    return flags;
}

static void fuse_op_init(FuseReq *req)
{
    const struct fuse_init_in *in = req->arg;
    FuseExport *exp = req->q->exp;
    struct blkfuse_init_out out = { .major = FUSE_KERNEL_VERSION, .minor = FUSE_PROTO_MINOR };
    uint64_t flags;

    if (in->major > FUSE_KERNEL_VERSION) {
        /* A newer major: answer with ours, the kernel then sends INIT again. */
        fuse_reply_arg(req, &out, sizeof(out));
        return;
    }
    if (exp->got_init) {
        fuse_reply_err(req, EPROTO);        /* once per connection */
        return;
    }
    if (in->major < FUSE_KERNEL_VERSION || in->minor < FUSE_MIN_MINOR) {
        log_error("export %s: the kernel speaks FUSE %u.%u; blkfuse needs 7.%u or later",
                  exp->common.id, in->major, in->minor, FUSE_MIN_MINOR);
        fuse_reply_err(req, EPROTO);
        return;
    }
    exp->kernel_flags = fuse_init_kernel_flags(req);
    flags = exp->kernel_flags & (FUSE_INIT_WANT | exp->init_want);
    exp->init_flags = flags;
    exp->proto_minor = MIN(in->minor, FUSE_PROTO_MINOR);

    out.minor = exp->proto_minor;
    out.max_readahead = MIN(in->max_readahead, FUSE_MAX_IO);
    out.flags = (uint32_t)flags;
    out.flags2 = (uint32_t)(flags >> 32);
    out.max_write = FUSE_MAX_IO;
    out.time_gran = 1;
    out.max_pages = FUSE_MAX_IO / 4096;
    /* Asynchronous requests (readahead, async direct I/O) in flight at once: the kernel's
     * default of 12 caps depth-32 AIO well below what the queues serve. */
    out.max_background = FUSE_MAX_BACKGROUND;
    out.congestion_threshold = FUSE_MAX_BACKGROUND * 3 / 4;
    if (flags & FUSE_PASSTHROUGH) {
        out.max_stack_depth = exp->max_stack_depth;
    }
    if (fuse_reply_arg(req, &out, sizeof(out)) == 0) {
        exp->got_init = true;
    }
}

/* --- the ops --- */

static void fuse_op_lookup(FuseReq *req)
{
    fuse_reply_err(req, ENOTDIR);       /* the root is a regular file: it has no entries */
}

static void fuse_op_getattr(FuseReq *req)
{
    fuse_reply_attr_now(req);
}

static void coroutine_fn fuse_co_setattr(void *opaque)
{
    FuseReq *req = opaque;
    const struct fuse_setattr_in *in = req->arg;
    FuseExport *exp = req->q->exp;
    uint32_t valid = in->valid;
    struct timespec ts;
    int ret = 0;

    fuse_passthrough_refresh(exp);

    if ((valid & FATTR_MODE) && exp->common.read_only && (in->mode & 0222)) {
        ret = -EROFS;
    }
    if (ret >= 0 && (valid & FATTR_SIZE)) {
        if (exp->common.read_only) {
            ret = -EROFS;
        } else {
            g_autoptr(GError) err = NULL;
            co_mutex_lock(&exp->grow_lock);
            ret = blk_co_truncate(exp->common.blk, in->size, true, PREALLOC_MODE_OFF, &err);
            co_mutex_unlock(&exp->grow_lock);
            if (ret < 0) {
                log_warning("export %s: resize to %" PRIu64 " bytes failed: %s",
                            exp->common.id, (uint64_t)in->size,
                            err ? err->message : g_strerror(-ret));
            } else {
                fuse_touch_mtime(exp);
            }
        }
    }
    if (ret < 0) {
        fuse_reply_err(req, -ret);
        fuse_co_done(exp);
        return;
    }
    now(&ts);
    g_mutex_lock(&exp->attr_lock);
    if (valid & FATTR_MODE) {
        exp->mode = in->mode & 07777;
    }
    if (valid & FATTR_UID) {
        exp->uid = in->uid;
    }
    if (valid & FATTR_GID) {
        exp->gid = in->gid;
    }
    if (valid & FATTR_ATIME) {
        exp->atime = (struct timespec){ .tv_sec = in->atime, .tv_nsec = in->atimensec };
    }
    if (valid & FATTR_ATIME_NOW) {
        exp->atime = ts;
    }
    if (valid & FATTR_MTIME) {
        exp->mtime = (struct timespec){ .tv_sec = in->mtime, .tv_nsec = in->mtimensec };
    }
    if (valid & FATTR_MTIME_NOW) {
        exp->mtime = ts;
    }
    exp->ctime = ts;
    g_mutex_unlock(&exp->attr_lock);
    fuse_reply_attr_now(req);
    fuse_co_done(exp);
}

static void fuse_op_setattr(FuseReq *req)
{
    if (fuse_refuse(req, false)) {
        return;
    }
    fuse_co_start(req, fuse_co_setattr);
}

/* An O_DIRECT open is answered with FOPEN_DIRECT_IO: its write(2)s then reach us through the
 * kernel's synchronous direct-I/O path, which passes a short count on to the writer (a write
 * straddling the end returns the bytes that fit).  Without it, O_DIRECT goes through the
 * asynchronous path (FUSE_ASYNC_DIO), which turns any short write into EIO; io_submit and
 * io_uring writes still take that path (fs/fuse/file.c, fuse_direct_IO).  The kernel drops the
 * range from the page cache before such a write, so buffered opens see it.  MAP_SHARED on
 * such a descriptor needs FUSE_DIRECT_IO_ALLOW_MMAP (asked for in INIT; kernels before 6.6 do
 * not offer it and refuse the mapping with ENODEV): the mapping then goes through the page
 * cache, which the kernel writes back before each direct read or write of the range and drops
 * after a direct write, as for a buffered open. */
static void fuse_op_open(FuseReq *req)
{
    const struct fuse_open_in *in = req->arg;
    FuseExport *exp = req->q->exp;
    struct blkfuse_open_out out = { 0 };

    /* Write access to a read-only export fails, even for root. */
    if (fuse_refuse(req, (in->flags & O_ACCMODE) != O_RDONLY)) {
        return;
    }
    if (exp->common.passthrough) {
        /* The kernel opens the image with the user's flags (O_DIRECT included) and serves
         * read, write, splice and mmap from it (passthrough.h); no page cache of ours. */
        out.open_flags = FOPEN_PASSTHROUGH;
        out.backing_id = exp->backing_id;
    } else {
        out.open_flags = FOPEN_KEEP_CACHE;  /* nobody else writes the image: keep its pages */
        if (in->flags & O_DIRECT) {
            out.open_flags |= FOPEN_DIRECT_IO;
        }
    }
    fuse_count_open(exp, 1);
    if (fuse_reply_arg(req, &out, sizeof(out)) == -ENOENT) {
        fuse_count_open(exp, -1);       /* the open was interrupted: no RELEASE will come */
    }
}

/* A READ of up to size bytes at offset, answered by splice where the transport and the image
 * allow it: the data goes from the image's page cache to the reader with one copy instead of
 * two (transport-dev.c).  Returns false if it did not answer req. */
static bool coroutine_fn fuse_co_read_spliced(FuseReq *req, int64_t offset, int64_t size)
{
    FuseQueue *q = req->q;
    BlockBackend *blk = q->exp->common.blk;
    const FuseTransportOps *ops = req->ops ? req->ops : q->exp->transport;
    int64_t len, n;
    int pipe_fd;

    if (size < FUSE_SPLICE_MIN || !q->exp->splice_read || !ops->splice_pipe) {
        return false;
    }
    /* Up to the end of the image (blk_co_splice_read checks again, with resizes held off). */
    len = blk_getlength(blk);
    n = len > offset ? MIN(size, len - offset) : 0;
    if (n < FUSE_SPLICE_MIN) {
        return false;
    }
    pipe_fd = ops->splice_pipe(req, n);
    if (pipe_fd < 0) {
        return false;
    }
    if (blk_co_splice_read(blk, offset, n, pipe_fd) < 0) {
        ops->splice_cancel(req);        /* not in the page cache, or truncated meanwhile */
        return false;
    }
    /* -EAGAIN: the kernel refused the spliced reply; the caller answers with a copy. */
    return fuse_reply_how(req, true, 0, NULL, 0, n) != -EAGAIN;
}

static void coroutine_fn fuse_co_read(void *opaque)
{
    FuseReq *req = opaque;
    const struct fuse_read_in *in = req->arg;
    FuseExport *exp = req->q->exp;
    int64_t size = MIN(MIN(in->size, FUSE_MAX_IO), req->out_cap);
    int64_t n;

    if (fuse_co_read_spliced(req, in->offset, size)) {
        fuse_co_done(exp);
        return;
    }
    /* Clamped at the end of file (a short read, 0 at or past it), even if a truncate races. */
    n = blk_co_read_upto(exp->common.blk, in->offset, size, req->out_buf);
    if (n < 0) {
        fuse_reply_err(req, -n);
    } else {
        fuse_reply_data(req, n);
    }
    fuse_co_done(exp);
}

static void fuse_op_read(FuseReq *req)
{
    const struct fuse_read_in *in = req->arg;

    if (fuse_refuse(req, false)) {
        return;
    }
    if (in->size == 0) {
        fuse_reply_data(req, 0);
        return;
    }
    if (in->offset > INT64_MAX) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    fuse_co_start(req, fuse_co_read);
}

static void coroutine_fn fuse_co_write(void *opaque)
{
    FuseReq *req = opaque;
    const struct fuse_write_in *in = req->arg;
    FuseExport *exp = req->q->exp;
    int64_t offset = in->offset;
    int64_t size = in->size;
    int64_t end = offset + size;
    int64_t len = blk_getlength(exp->common.blk);
    /* in->flags: the flags of the open file (O_DSYNC on a write-through descriptor). */
    BdrvRequestFlags flags = (in->flags & (O_DSYNC | O_SYNC)) ? BDRV_REQ_FUA : 0;
    int ret = 0;

    if (end > len) {
        if (exp->common.growable) {
            ret = fuse_grow(exp, end);
        } else if (offset < len) {
            size = len - offset;        /* as a device does: write what fits, a short count */
        } else {
            ret = -ENOSPC;
        }
    }
    if (ret >= 0) {
        ret = blk_co_pwrite(exp->common.blk, offset, size, req->payload, flags);
    }
    if (ret < 0) {
        fuse_reply_err(req, -ret);
    } else {
        struct fuse_write_out out = { .size = size };
        fuse_touch_mtime(exp);
        fuse_reply_arg(req, &out, sizeof(out));
    }
    fuse_co_done(exp);
}

static void fuse_op_write(FuseReq *req)
{
    const struct fuse_write_in *in = req->arg;

    if (fuse_refuse(req, true)) {
        return;
    }
    if (in->size == 0) {
        struct fuse_write_out out = { 0 };
        fuse_reply_arg(req, &out, sizeof(out));
        return;
    }
    if (in->size > req->payload_len || in->offset > INT64_MAX ||
        in->size > INT64_MAX - in->offset) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    fuse_co_start(req, fuse_co_write);
}

static void coroutine_fn fuse_co_flush(void *opaque)
{
    FuseReq *req = opaque;
    FuseExport *exp = req->q->exp;
    int ret = 0;

    if (!exp->common.read_only) {
        if (exp->common.passthrough) {      /* the kernel wrote the image file itself */
            bdrv_note_unseen_writes(blk_bs(exp->common.blk));
        }
        ret = blk_co_flush(exp->common.blk);
    }
    fuse_reply_err(req, ret < 0 ? -ret : 0);
    fuse_co_done(exp);
}

/* FLUSH (each close) and FSYNC: the image's data reaches its disk. */
static void fuse_op_flush(FuseReq *req)
{
    if (fuse_refuse(req, false)) {
        return;
    }
    fuse_co_start(req, fuse_co_flush);
}

static void coroutine_fn fuse_co_fallocate(void *opaque)
{
    FuseReq *req = opaque;
    const struct fuse_fallocate_in *in = req->arg;
    FuseExport *exp = req->q->exp;
    BlockBackend *blk = exp->common.blk;
    int64_t offset = in->offset;
    int64_t end = offset + (int64_t)in->length;
    int64_t len;
    uint32_t mode = in->mode;
    int ret = 0;

    fuse_passthrough_refresh(exp);
    len = blk_getlength(blk);

    if (mode & FALLOC_FL_PUNCH_HOLE) {
        /* Reads as zeros afterwards; whole clusters are deallocated where the format can. */
        if (!(mode & FALLOC_FL_KEEP_SIZE) || (mode & ~(FALLOC_FL_PUNCH_HOLE |
                                                      FALLOC_FL_KEEP_SIZE))) {
            ret = -EOPNOTSUPP;
        } else if (offset < len) {
            ret = blk_co_pwrite_zeroes(blk, offset, MIN(end, len) - offset, BDRV_REQ_MAY_UNMAP);
        }
    } else if (mode & FALLOC_FL_ZERO_RANGE) {
        if (mode & ~(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)) {
            ret = -EOPNOTSUPP;
        } else {
            if (offset < len) {
                ret = blk_co_pwrite_zeroes(blk, offset, MIN(end, len) - offset, 0);
            }
            if (ret >= 0 && end > len && !(mode & FALLOC_FL_KEEP_SIZE)) {
                ret = fuse_grow(exp, end);      /* grown space reads as zeros */
            }
        }
    } else if (mode & ~FALLOC_FL_KEEP_SIZE) {
        ret = -EOPNOTSUPP;
    } else {
        /* Plain allocation: reserve what lies inside; grow (reading zeros) unless KEEP_SIZE. */
        if (offset < len) {
            ret = blk_co_preallocate(blk, offset, MIN(end, len) - offset);
        }
        if (ret >= 0 && end > len && !(mode & FALLOC_FL_KEEP_SIZE)) {
            ret = fuse_grow(exp, end);
            if (ret >= 0) {
                ret = blk_co_preallocate(blk, len, end - len);
            }
        }
    }
    if (ret >= 0 && mode != FALLOC_FL_KEEP_SIZE) {
        fuse_touch_mtime(exp);
    }
    fuse_reply_err(req, ret < 0 ? -ret : 0);
    fuse_co_done(exp);
}

static void fuse_op_fallocate(FuseReq *req)
{
    const struct fuse_fallocate_in *in = req->arg;

    if (fuse_refuse(req, true)) {
        return;
    }
    if (in->offset > INT64_MAX || in->length == 0 || in->length > INT64_MAX - in->offset) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    fuse_co_start(req, fuse_co_fallocate);
}

static void coroutine_fn fuse_co_lseek(void *opaque)
{
    FuseReq *req = opaque;
    const struct fuse_lseek_in *in = req->arg;
    FuseExport *exp = req->q->exp;
    BlockBackend *blk = exp->common.blk;
    int64_t len;
    int64_t off = in->offset;
    bool want_data = in->whence == SEEK_DATA;
    int ret = 0;

    fuse_passthrough_refresh(exp);
    len = blk_getlength(blk);

    if (off < 0) {
        ret = -EINVAL;
    } else if (off >= len) {
        ret = -ENXIO;   /* as on a local file, for SEEK_DATA and SEEK_HOLE alike */
    }
    while (ret >= 0 && off < len) {
        int64_t pnum;
        int st = blk_co_block_status(blk, off, len - off, &pnum);
        if (st < 0) {
            ret = st;
            break;
        }
        /* Data is anything that does not read as zeros. */
        bool is_data = (st & BDRV_BLOCK_DATA) && !(st & BDRV_BLOCK_ZERO);
        if (is_data == want_data) {
            break;
        }
        off += pnum;
    }
    if (ret >= 0 && off >= len) {
        /* SEEK_HOLE: the end of file is a hole; SEEK_DATA: no more data. */
        if (want_data) {
            ret = -ENXIO;
        } else {
            off = len;
        }
    }
    if (ret < 0) {
        fuse_reply_err(req, -ret);
    } else {
        struct fuse_lseek_out out = { .offset = off };
        fuse_reply_arg(req, &out, sizeof(out));
    }
    fuse_co_done(exp);
}

static void fuse_op_lseek(FuseReq *req)
{
    const struct fuse_lseek_in *in = req->arg;

    if (in->whence != SEEK_DATA && in->whence != SEEK_HOLE) {
        fuse_reply_err(req, EINVAL);    /* the kernel handles SEEK_SET/CUR/END itself */
        return;
    }
    if (fuse_refuse(req, false)) {
        return;
    }
    fuse_co_start(req, fuse_co_lseek);
}

static void fuse_op_statfs(FuseReq *req)
{
    struct fuse_statfs_out out = { 0 };
    int64_t len = blk_getlength(req->q->exp->common.blk);

    out.st.bsize = 4096;
    out.st.frsize = 4096;
    out.st.blocks = len > 0 ? DIV_ROUND_UP(len, 4096) : 0;
    out.st.files = 1;
    out.st.namelen = 255;
    fuse_reply_arg(req, &out, sizeof(out));
}

static void fuse_op_release(FuseReq *req)
{
    fuse_count_open(req->q->exp, -1);
    fuse_reply_err(req, 0);
}

/* FORGET, BATCH_FORGET: the root is never forgotten.  INTERRUPT: every request finishes
 * quickly on its own, so none is cut short.  NOTIFY_REPLY answers a retrieve we never send.
 * None of them takes an answer. */
static void fuse_op_noreply(FuseReq *req)
{
}

/* DESTROY: the kernel is done with the connection; the queues see it go away. */
static void fuse_op_destroy(FuseReq *req)
{
    fuse_reply_err(req, 0);
}

/* --- dispatch --- */

typedef struct FuseOp {
    void (*handler)(FuseReq *req);  /* NULL: ENOSYS */
    uint16_t arg_size;              /* the op's fixed in argument; what follows is payload */
    bool no_reply;
} FuseOp;

static const FuseOp fuse_ops[] = {
    [FUSE_INIT]         = { fuse_op_init, offsetof(struct fuse_init_in, flags2) },
    [FUSE_LOOKUP]       = { fuse_op_lookup, 0 },
    [FUSE_GETATTR]      = { fuse_op_getattr, sizeof(struct fuse_getattr_in) },
    [FUSE_SETATTR]      = { fuse_op_setattr, sizeof(struct fuse_setattr_in) },
    [FUSE_OPEN]         = { fuse_op_open, sizeof(struct fuse_open_in) },
    [FUSE_READ]         = { fuse_op_read, sizeof(struct fuse_read_in) },
    [FUSE_WRITE]        = { fuse_op_write, sizeof(struct fuse_write_in) },
    [FUSE_FLUSH]        = { fuse_op_flush, sizeof(struct fuse_flush_in) },
    [FUSE_FSYNC]        = { fuse_op_flush, sizeof(struct fuse_fsync_in) },
    [FUSE_FALLOCATE]    = { fuse_op_fallocate, sizeof(struct fuse_fallocate_in) },
    [FUSE_LSEEK]        = { fuse_op_lseek, sizeof(struct fuse_lseek_in) },
    [FUSE_STATFS]       = { fuse_op_statfs, 0 },
    [FUSE_RELEASE]      = { fuse_op_release, sizeof(struct fuse_release_in) },
    [FUSE_FORGET]       = { fuse_op_noreply, sizeof(struct fuse_forget_in), true },
    [FUSE_BATCH_FORGET] = { fuse_op_noreply, sizeof(struct fuse_batch_forget_in), true },
    [FUSE_INTERRUPT]    = { fuse_op_noreply, sizeof(struct fuse_interrupt_in), true },
    [FUSE_NOTIFY_REPLY] = { fuse_op_noreply, 0, true },
    [FUSE_DESTROY]      = { fuse_op_destroy, 0 },
};

bool fuse_dispatch(FuseReq *req)
{
    uint32_t opcode = req->in->opcode;
    const FuseOp *op = opcode < G_N_ELEMENTS(fuse_ops) ? &fuse_ops[opcode] : NULL;

    if (op && op->no_reply) {
        return false;
    }
    req->q->in_flight++;
    fuse_affinity_dispatched(req->q);
    if (!op || !op->handler) {
        fuse_reply_err(req, ENOSYS);
        return true;
    }
    if (req->arg_len < op->arg_size) {
        fuse_reply_err(req, EINVAL);
        return true;
    }
    if (!req->payload) {
        /* One byte stream: the argument, then the payload. */
        req->payload = (const uint8_t *)req->arg + op->arg_size;
        req->payload_len = req->arg_len - op->arg_size;
        if (opcode != FUSE_INIT) {
            req->arg_len = op->arg_size;
        }
    }
    if (!req->q->exp->got_init && opcode != FUSE_INIT) {
        fuse_reply_err(req, EIO);
        return true;
    }
    op->handler(req);
    return true;
}

/* --- set-up --- */

void fuse_protocol_init(FuseExport *exp)
{
    struct timespec ts;

    g_mutex_init(&exp->attr_lock);
    co_mutex_init(&exp->grow_lock);
    exp->mode = exp->common.read_only ? 0400 : 0600;
    exp->uid = getuid();
    exp->gid = getgid();
    now(&ts);
    exp->atime = exp->mtime = exp->ctime = ts;
}

void fuse_protocol_cleanup(FuseExport *exp)
{
    g_mutex_clear(&exp->attr_lock);
    co_mutex_destroy(&exp->grow_lock);
}
