/* fuse.c - the FUSE export driver: one regular file per export, on its mountpoint, served with
 * libfuse3's low-level API; every request runs as one coroutine on its queue's event loop.
 *
 * Threads:
 * - main thread: create (mount, INIT handshake), request_shutdown, delete, and a safe removal
 *   that waits for open files to close (a timerfd for the grace period; the queue thread that
 *   handles the last RELEASE wakes it with a bottom half).
 * - one thread per queue: its own AioContext, its own /dev/fuse fd (queue 0 has the fd from
 *   fuse_session_mount; the others have FUSE_DEV_IOC_CLONE'd fds, each wrapped in a libfuse
 *   session of its own through fuse_session_custom_io, so that replies go back on the fd the
 *   request came from).  A queue reads requests, starts a coroutine for each, and replies from
 *   the same thread.  Many requests are in flight per queue.
 * - export attributes (mode, owner, times) are shared by the queues under exp->attr_lock.
 */
#include "config.h"
#include "fuse/export.h"
#include "fuse/passthrough.h"
#include "block/aio.h"
#include "block/io-engine.h"
#include "block/util.h"

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <linux/fs.h>
#include <linux/fuse.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#ifndef FALLOC_FL_KEEP_SIZE
#include <linux/falloc.h>
#endif

#define FUSE_MAX_IO         (1024 * 1024)       /* max_read and max_write */
/* libfuse reads up to its buffer size (256 pages + one page of header) into our buffer. */
#define FUSE_RBUF_SIZE      (256 * 4096 + 4096)
/* A WRITE request is fuse_in_header + fuse_write_in (80 bytes) then data: shift the buffer so
 * the data lands 4 KiB-aligned, ready for O_DIRECT without a copy. */
#define FUSE_WRITE_HDR      (sizeof(struct fuse_in_header) + sizeof(struct fuse_write_in))
#define FUSE_RBUF_SHIFT     (4096 - FUSE_WRITE_HDR)
#define FUSE_REQS_PER_WAKE  32      /* requests read per readable event before yielding */
#define FUSE_BUF_POOL_MAX   64      /* idle buffers kept per queue */
/* How long a safe removal waits for the open files to close (a close() sends RELEASE
 * asynchronously); BLKFUSE_UNMOUNT_GRACE_MS overrides it. */
#define FUSE_UNMOUNT_GRACE_MS 1000

typedef struct FuseExport FuseExport;

/* A buffer from a queue's pool: request buffers (receive) and read-reply buffers. */
typedef struct FuseBuf {
    struct FuseBuf *next;
    uint8_t *data;              /* aligned allocation of FUSE_RBUF_SIZE + 4096 */
} FuseBuf;

typedef struct FuseQueue {
    FuseExport *exp;
    unsigned index;
    struct fuse_session *se;
    int fd;
    GThread *thread;
    AioContext *ctx;
    bool ready;                 /* thread started (under exp->start_lock) */
    bool stopping;              /* queue thread: stop reading, finish in-flight, exit */
    bool disconnected;          /* the kernel ended the connection (unmounted) */
    unsigned in_flight;         /* requests of this queue (queue thread only) */
    FuseBuf *rbuf;              /* receive buffer for the next request */
    bool rbuf_taken;            /* the request being dispatched keeps rbuf */
    FuseBuf *pool;
    unsigned pool_size;
    bool drop_reply;            /* swallow the reply to our replayed INIT */
    bool patch_init;            /* passthrough: add FUSE_PASSTHROUGH to the INIT reply */
    bool init_patched;          /* ...and it went to the kernel */
    int patch_open;             /* passthrough: backing id for the OPEN reply being sent */
    struct FuseReq *free_reqs;
} FuseQueue;

struct FuseExport {
    BlockExport common;
    FuseQueue *queues;
    unsigned nr_queues;
    bool created_mountpoint;
    bool mounted;
    bool allow_other;
    bool got_init;
    uint8_t *init_msg;          /* the kernel's INIT request, replayed into the clone sessions */
    size_t init_len;

    GMutex start_lock;
    GCond start_cond;

    unsigned open_count;        /* atomic: open file handles */
    int halted;                 /* atomic: forced removal, every request fails with EIO */
    unsigned queues_running;    /* main thread */
    AioContext *main_ctx;
    const char *stop_reason;

    /* A safe removal waiting for the open files to close (main thread)... */
    bool unmount_waiting;
    int unmount_timer;          /* timerfd: the end of the grace period, or -1 */
    /* ...and whether the RELEASE that closes the last one must tell the main thread (atomic). */
    int wake_on_last_release;

    CoMutex grow_lock;          /* serialises growing the image */

    int backing_id;             /* passthrough: the image registered with the kernel, or 0 */
    int host_fd;                /* passthrough: the image's descriptor (the file node's) */

    GMutex attr_lock;
    mode_t mode;                /* permission bits of the file */
    uid_t uid;
    gid_t gid;
    struct timespec atime, mtime, ctime;
};

/* One FUSE request in flight; pooled per queue. */
typedef struct FuseReq {
    struct FuseReq *next_free;
    FuseQueue *q;
    fuse_req_t req;
    int64_t offset;
    int64_t size;
    int mode;                   /* fallocate mode, lseek whence, setattr to_set */
    int fi_flags;
    const char *wbuf;           /* write data (inside rbuf) */
    FuseBuf *rbuf;              /* receive buffer held for the write data */
    struct stat attr;           /* setattr */
} FuseReq;

static __thread FuseQueue *current_queue;

/* --- buffers and request structs --- */

static FuseBuf *fuse_buf_get(FuseQueue *q)
{
    FuseBuf *b = q->pool;

    if (b) {
        q->pool = b->next;
        q->pool_size--;
        return b;
    }
    b = g_new0(FuseBuf, 1);
    b->data = blk_blockalign(FUSE_RBUF_SIZE + 4096);
    return b;
}

static void fuse_buf_put(FuseQueue *q, FuseBuf *b)
{
    if (q->pool_size >= FUSE_BUF_POOL_MAX) {
        blk_vfree(b->data);
        g_free(b);
        return;
    }
    b->next = q->pool;
    q->pool = b;
    q->pool_size++;
}

static void fuse_pool_free(FuseQueue *q)
{
    while (q->pool) {
        FuseBuf *b = q->pool;
        q->pool = b->next;
        blk_vfree(b->data);
        g_free(b);
    }
    q->pool_size = 0;
    if (q->rbuf) {
        blk_vfree(q->rbuf->data);
        g_free(q->rbuf);
        q->rbuf = NULL;
    }
    while (q->free_reqs) {
        FuseReq *r = q->free_reqs;
        q->free_reqs = r->next_free;
        g_free(r);
    }
}

static FuseReq *fuse_req_new(fuse_req_t req)
{
    FuseQueue *q = current_queue;
    FuseReq *r = q->free_reqs;

    if (r) {
        q->free_reqs = r->next_free;
        memset(r, 0, sizeof(*r));
    } else {
        r = g_new0(FuseReq, 1);
    }
    r->q = q;
    r->req = req;
    return r;
}

/* Start the coroutine for r.  Holds a reference on the export while it runs. */
static void fuse_req_start(FuseReq *r, CoroutineEntry *entry)
{
    r->q->in_flight++;
    blk_exp_ref(&r->q->exp->common);
    coroutine_enter(coroutine_create(entry, r));
}

/* The coroutine has replied: release what it held. */
static void fuse_req_done(FuseReq *r)
{
    FuseQueue *q = r->q;

    if (r->rbuf) {
        fuse_buf_put(q, r->rbuf);
    }
    r->next_free = q->free_reqs;
    q->free_reqs = r;
    q->in_flight--;
    blk_exp_unref(&q->exp->common);
}

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
static bool fuse_refuse(fuse_req_t req, FuseExport *exp, bool writes)
{
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

/* --- attributes --- */

static void now(struct timespec *ts)
{
    clock_gettime(CLOCK_REALTIME_COARSE, ts);
}

/* Passthrough: the kernel writes the image itself, growing it past its end and changing its
 * times; take the length from the file again before using it. */
static void fuse_pt_refresh(FuseExport *exp)
{
    if (exp->common.passthrough) {
        blk_refresh_length(exp->common.blk);
    }
}

static void timespec_max(struct timespec *a, const struct timespec *b)
{
    if (b->tv_sec > a->tv_sec || (b->tv_sec == a->tv_sec && b->tv_nsec > a->tv_nsec)) {
        *a = *b;
    }
}

static void fuse_fill_attr(FuseExport *exp, struct stat *st)
{
    BlockBackend *blk = exp->common.blk;
    int64_t len, alloc;
    struct stat host;
    bool have_host;

    fuse_pt_refresh(exp);
    len = blk_getlength(blk);
    alloc = blk_get_allocated_file_size(blk);
    have_host = exp->common.passthrough && fstat(exp->host_fd, &host) == 0;

    memset(st, 0, sizeof(*st));
    st->st_ino = FUSE_ROOT_ID;
    st->st_nlink = 1;
    st->st_size = len < 0 ? 0 : len;
    st->st_blksize = 4096;
    /* Allocation of the image on the host; never more than the file could hold. */
    st->st_blocks = alloc < 0 ? DIV_ROUND_UP(st->st_size, 512) : DIV_ROUND_UP(alloc, 512);
    g_mutex_lock(&exp->attr_lock);
    st->st_mode = S_IFREG | (fuse_read_only(exp) ? exp->mode & ~0222 : exp->mode);
    st->st_uid = exp->uid;
    st->st_gid = exp->gid;
    st->st_atim = exp->atime;
    st->st_mtim = exp->mtime;
    st->st_ctim = exp->ctime;
    g_mutex_unlock(&exp->attr_lock);
    if (have_host) {
        /* Writes through the kernel change the image's times, not ours. */
        timespec_max(&st->st_mtim, &host.st_mtim);
        timespec_max(&st->st_ctim, &host.st_ctim);
    }
}

static void fuse_touch_mtime(FuseExport *exp)
{
    struct timespec ts;

    now(&ts);
    g_mutex_lock(&exp->attr_lock);
    exp->mtime = exp->ctime = ts;
    g_mutex_unlock(&exp->attr_lock);
}

static void fuse_reply_attr_now(FuseExport *exp, fuse_req_t req)
{
    struct stat st;

    fuse_fill_attr(exp, &st);
    fuse_reply_attr(req, &st, 1.0);
}

/* --- growing --- */

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

/* --- request coroutines --- */

static void coroutine_fn fuse_co_read(void *opaque)
{
    FuseReq *r = opaque;
    FuseExport *exp = r->q->exp;
    FuseBuf *b = fuse_buf_get(r->q);
    /* Clamped at the end of file (a short read, 0 at or past it), even if a truncate races. */
    int64_t n = blk_co_read_upto(exp->common.blk, r->offset, r->size, b->data);

    if (n < 0) {
        fuse_reply_err(r->req, -n);
    } else {
        fuse_reply_buf(r->req, (const char *)b->data, n);
    }
    fuse_buf_put(r->q, b);
    fuse_req_done(r);
}

static void coroutine_fn fuse_co_write(void *opaque)
{
    FuseReq *r = opaque;
    FuseExport *exp = r->q->exp;
    int64_t end = r->offset + r->size;
    int64_t len = blk_getlength(exp->common.blk);
    BdrvRequestFlags flags = (r->fi_flags & (O_DSYNC | O_SYNC)) ? BDRV_REQ_FUA : 0;
    int ret = 0;

    if (end > len) {
        if (exp->common.growable) {
            ret = fuse_grow(exp, end);
        } else if (r->offset < len) {
            r->size = len - r->offset;  /* as a device does: write what fits, a short count */
        } else {
            ret = -ENOSPC;
        }
    }
    if (ret >= 0) {
        ret = blk_co_pwrite(exp->common.blk, r->offset, r->size, r->wbuf, flags);
    }
    if (ret < 0) {
        fuse_reply_err(r->req, -ret);
    } else {
        fuse_touch_mtime(exp);
        fuse_reply_write(r->req, r->size);
    }
    fuse_req_done(r);
}

static void coroutine_fn fuse_co_flush(void *opaque)
{
    FuseReq *r = opaque;
    int ret = r->q->exp->common.read_only ? 0 : blk_co_flush(r->q->exp->common.blk);

    fuse_reply_err(r->req, ret < 0 ? -ret : 0);
    fuse_req_done(r);
}

static void coroutine_fn fuse_co_fallocate(void *opaque)
{
    FuseReq *r = opaque;
    FuseExport *exp = r->q->exp;
    BlockBackend *blk = exp->common.blk;
    int64_t end = r->offset + r->size;
    int64_t len;
    int mode = r->mode;
    int ret = 0;

    fuse_pt_refresh(exp);
    len = blk_getlength(blk);

    if (mode & FALLOC_FL_PUNCH_HOLE) {
        /* Reads as zeros afterwards; whole clusters are deallocated where the format can. */
        if (!(mode & FALLOC_FL_KEEP_SIZE) || (mode & ~(FALLOC_FL_PUNCH_HOLE |
                                                      FALLOC_FL_KEEP_SIZE))) {
            ret = -EOPNOTSUPP;
        } else if (r->offset < len) {
            ret = blk_co_pwrite_zeroes(blk, r->offset, MIN(end, len) - r->offset,
                                       BDRV_REQ_MAY_UNMAP);
        }
    } else if (mode & FALLOC_FL_ZERO_RANGE) {
        if (mode & ~(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)) {
            ret = -EOPNOTSUPP;
        } else {
            if (r->offset < len) {
                ret = blk_co_pwrite_zeroes(blk, r->offset, MIN(end, len) - r->offset, 0);
            }
            if (ret >= 0 && end > len && !(mode & FALLOC_FL_KEEP_SIZE)) {
                ret = fuse_grow(exp, end);      /* grown space reads as zeros */
            }
        }
    } else if (mode & ~FALLOC_FL_KEEP_SIZE) {
        ret = -EOPNOTSUPP;
    } else {
        /* Plain allocation: reserve what lies inside; grow (reading zeros) unless KEEP_SIZE. */
        if (r->offset < len) {
            ret = blk_co_preallocate(blk, r->offset, MIN(end, len) - r->offset);
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
    fuse_reply_err(r->req, ret < 0 ? -ret : 0);
    fuse_req_done(r);
}

static void coroutine_fn fuse_co_lseek(void *opaque)
{
    FuseReq *r = opaque;
    BlockBackend *blk = r->q->exp->common.blk;
    int64_t len;
    int64_t off = r->offset;
    bool want_data = r->mode == SEEK_DATA;
    int ret = 0;

    fuse_pt_refresh(r->q->exp);
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
    if (ret >= 0) {
        if (off >= len) {
            /* SEEK_HOLE: the end of file is a hole; SEEK_DATA: no more data. */
            if (want_data) {
                ret = -ENXIO;
            } else {
                off = len;
            }
        }
    }
    if (ret < 0) {
        fuse_reply_err(r->req, -ret);
    } else {
        fuse_reply_lseek(r->req, off);
    }
    fuse_req_done(r);
}

static void coroutine_fn fuse_co_setattr(void *opaque)
{
    FuseReq *r = opaque;
    FuseExport *exp = r->q->exp;
    int to_set = r->mode;
    int ret = 0;

    fuse_pt_refresh(exp);

    if ((to_set & FUSE_SET_ATTR_MODE) && exp->common.read_only &&
        (r->attr.st_mode & 0222)) {
        ret = -EROFS;
    }
    if (ret >= 0 && (to_set & FUSE_SET_ATTR_SIZE)) {
        if (exp->common.read_only) {
            ret = -EROFS;
        } else {
            g_autoptr(GError) err = NULL;
            co_mutex_lock(&exp->grow_lock);
            ret = blk_co_truncate(exp->common.blk, r->attr.st_size, true, PREALLOC_MODE_OFF,
                                  &err);
            co_mutex_unlock(&exp->grow_lock);
            if (ret < 0) {
                log_warning("export %s: resize to %lld bytes failed: %s", exp->common.id,
                            (long long)r->attr.st_size, err ? err->message : g_strerror(-ret));
            } else {
                fuse_touch_mtime(exp);
            }
        }
    }
    if (ret >= 0) {
        struct timespec ts;
        now(&ts);
        g_mutex_lock(&exp->attr_lock);
        if (to_set & FUSE_SET_ATTR_MODE) {
            exp->mode = r->attr.st_mode & 07777;
        }
        if (to_set & FUSE_SET_ATTR_UID) {
            exp->uid = r->attr.st_uid;
        }
        if (to_set & FUSE_SET_ATTR_GID) {
            exp->gid = r->attr.st_gid;
        }
        if (to_set & FUSE_SET_ATTR_ATIME) {
            exp->atime = r->attr.st_atim;
        }
        if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
            exp->atime = ts;
        }
        if (to_set & FUSE_SET_ATTR_MTIME) {
            exp->mtime = r->attr.st_mtim;
        }
        if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
            exp->mtime = ts;
        }
        exp->ctime = ts;
        g_mutex_unlock(&exp->attr_lock);
        fuse_reply_attr_now(exp, r->req);
    } else {
        fuse_reply_err(r->req, -ret);
    }
    fuse_req_done(r);
}

/* --- libfuse callbacks (queue thread, outside coroutines): each replies exactly once, here or
 * in the coroutine it starts --- */

static FuseExport *req_export(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

static void fuse_op_init(void *userdata, struct fuse_conn_info *conn)
{
    FuseExport *exp = userdata;

    conn->max_write = FUSE_MAX_IO;
    conn->max_read = FUSE_MAX_IO;
    conn->max_readahead = FUSE_MAX_IO;
    /* O_TRUNC arrives as a separate setattr, so open itself never changes the image. */
    conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
    if (conn->capable & FUSE_CAP_ASYNC_DIO) {
        conn->want |= FUSE_CAP_ASYNC_DIO;
    }
    exp->got_init = true;
}

static void fuse_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    fuse_reply_err(req, ENOTDIR);       /* the root is a regular file: it has no entries */
}

static void fuse_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fuse_reply_attr_now(req_export(req), req);
}

static void fuse_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                            struct fuse_file_info *fi)
{
    FuseExport *exp = req_export(req);
    FuseReq *r;

    if (fuse_refuse(req, exp, false)) {
        return;
    }
    r = fuse_req_new(req);
    r->attr = *attr;
    r->mode = to_set;
    fuse_req_start(r, fuse_co_setattr);
}

static void fuse_last_release_bh(void *opaque);

/* Count an open (delta 1) or a release (-1).  Sequentially consistent with
 * fuse_unmount_wait_begin: either it sees the last release, or the release sees it waiting. */
static void fuse_count_open(FuseExport *exp, int delta)
{
    if (__atomic_add_fetch(&exp->open_count, delta, __ATOMIC_SEQ_CST) == 0 &&
        __atomic_load_n(&exp->wake_on_last_release, __ATOMIC_SEQ_CST)) {
        blk_exp_ref(&exp->common);
        aio_bh_schedule(exp->main_ctx, fuse_last_release_bh, exp);
    }
}

/* An O_DIRECT open is answered with FOPEN_DIRECT_IO: its write(2)s then reach us through the
 * kernel's synchronous direct-I/O path, which passes a short count on to the writer (a write
 * straddling the end returns the bytes that fit).  Without it, O_DIRECT goes through the
 * asynchronous path (FUSE_CAP_ASYNC_DIO), which turns any short write into EIO; io_submit and
 * io_uring writes still take that path (fs/fuse/file.c, fuse_direct_IO).  The kernel drops the
 * range from the page cache before such a write, so buffered opens see it.  The cost: the
 * kernel refuses MAP_SHARED on such a descriptor (ENODEV) without FUSE_DIRECT_IO_ALLOW_MMAP,
 * which libfuse 3.14 cannot ask for. */
static void fuse_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    FuseExport *exp = req_export(req);

    /* Write access to a read-only export fails, even for root. */
    if (fuse_refuse(req, exp, (fi->flags & O_ACCMODE) != O_RDONLY)) {
        return;
    }
    if (exp->common.passthrough) {
        /* The kernel opens the image with the user's flags (O_DIRECT included) and serves
         * reads, writes and mmap from it; no page cache of ours to keep. */
        current_queue->patch_open = exp->backing_id;
    } else {
        fi->keep_cache = 1;             /* nobody else writes the image: keep cached pages */
        if (fi->flags & O_DIRECT) {
            fi->direct_io = 1;
        }
    }
    fuse_count_open(exp, 1);
    if (fuse_reply_open(req, fi) != 0) {
        fuse_count_open(exp, -1);       /* open was interrupted */
    }
    current_queue->patch_open = 0;
}

static void fuse_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    FuseExport *exp = req_export(req);

    fuse_count_open(exp, -1);
    fuse_reply_err(req, 0);
}

static void fuse_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                         struct fuse_file_info *fi)
{
    FuseExport *exp = req_export(req);
    FuseReq *r;

    if (fuse_refuse(req, exp, false)) {
        return;
    }
    if (size == 0) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    r = fuse_req_new(req);
    r->offset = off;
    r->size = MIN(size, FUSE_MAX_IO);
    fuse_req_start(r, fuse_co_read);
}

static void fuse_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
                          off_t off, struct fuse_file_info *fi)
{
    FuseExport *exp = req_export(req);
    FuseQueue *q = current_queue;
    FuseReq *r;

    if (fuse_refuse(req, exp, true)) {
        return;
    }
    if (size == 0) {
        fuse_reply_write(req, 0);
        return;
    }
    if (off < 0 || (int64_t)size > INT64_MAX - off) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    r = fuse_req_new(req);
    r->offset = off;
    r->size = size;
    r->wbuf = buf;
    r->fi_flags = fi ? fi->flags : 0;
    /* buf points into the receive buffer: the request keeps it until it has replied. */
    r->rbuf = q->rbuf;
    q->rbuf_taken = true;
    fuse_req_start(r, fuse_co_write);
}

static void fuse_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    FuseExport *exp = req_export(req);

    if (fuse_refuse(req, exp, false)) {
        return;
    }
    fuse_req_start(fuse_req_new(req), fuse_co_flush);
}

static void fuse_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
                          struct fuse_file_info *fi)
{
    fuse_op_flush(req, ino, fi);
}

static void fuse_op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
                              off_t length, struct fuse_file_info *fi)
{
    FuseExport *exp = req_export(req);
    FuseReq *r;

    if (fuse_refuse(req, exp, true)) {
        return;
    }
    if (offset < 0 || length <= 0 || length > INT64_MAX - offset) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    r = fuse_req_new(req);
    r->offset = offset;
    r->size = length;
    r->mode = mode;
    fuse_req_start(r, fuse_co_fallocate);
}

static void fuse_op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                          struct fuse_file_info *fi)
{
    FuseExport *exp = req_export(req);
    FuseReq *r;

    if (whence != SEEK_DATA && whence != SEEK_HOLE) {
        fuse_reply_err(req, EINVAL);    /* the kernel handles SEEK_SET/CUR/END itself */
        return;
    }
    if (fuse_refuse(req, exp, false)) {
        return;
    }
    r = fuse_req_new(req);
    r->offset = off;
    r->mode = whence;
    fuse_req_start(r, fuse_co_lseek);
}

static void fuse_op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    FuseExport *exp = req_export(req);
    struct statvfs st = { 0 };
    int64_t len = blk_getlength(exp->common.blk);

    st.f_bsize = 4096;
    st.f_frsize = 4096;
    st.f_blocks = len > 0 ? DIV_ROUND_UP(len, 4096) : 0;
    st.f_files = 1;
    st.f_namemax = 255;
    fuse_reply_statfs(req, &st);
}

static const struct fuse_lowlevel_ops fuse_ops = {
    .init       = fuse_op_init,
    .lookup     = fuse_op_lookup,
    .getattr    = fuse_op_getattr,
    .setattr    = fuse_op_setattr,
    .open       = fuse_op_open,
    .release    = fuse_op_release,
    .read       = fuse_op_read,
    .write      = fuse_op_write,
    .flush      = fuse_op_flush,
    .fsync      = fuse_op_fsync,
    .fallocate  = fuse_op_fallocate,
    .lseek      = fuse_op_lseek,
    .statfs     = fuse_op_statfs,
};

/* --- custom I/O for the clone sessions (and to replay INIT) --- */

static ssize_t clone_read(int fd, void *buf, size_t len, void *userdata)
{
    return read(fd, buf, len);
}

/* Passthrough with libfuse 3.14, which knows neither FUSE_PASSTHROUGH nor backing ids: add them
 * to the INIT and OPEN replies it built (header in iov[0], out argument in iov[1]). */
static void fuse_pt_patch_reply(FuseQueue *q, struct iovec *iov, int count)
{
    if (q->patch_init && count == 2 && iov[1].iov_len >= offsetof(struct blkfuse_init_out,
                                                                  request_timeout)) {
        struct blkfuse_init_out *out = iov[1].iov_base;
        uint64_t flags = FUSE_PASSTHROUGH | FUSE_INIT_EXT;
        out->flags |= (uint32_t)flags;
        out->flags2 |= flags >> 32;
        out->max_stack_depth = FUSE_PT_MAX_STACK_DEPTH;
        q->patch_init = false;
        q->init_patched = true;
    } else if (q->patch_open && count == 2 &&
               iov[1].iov_len == sizeof(struct blkfuse_open_out)) {
        struct blkfuse_open_out *out = iov[1].iov_base;
        out->open_flags |= FOPEN_PASSTHROUGH;
        out->backing_id = q->patch_open;
    }
}

static ssize_t clone_writev(int fd, struct iovec *iov, int count, void *userdata)
{
    FuseQueue *q = current_queue;

    if (q && (q->patch_init || q->patch_open)) {
        fuse_pt_patch_reply(q, iov, count);
    }
    if (q && q->drop_reply) {           /* the reply to the INIT we replayed: not for the kernel */
        ssize_t n = 0;
        for (int i = 0; i < count; i++) {
            n += iov[i].iov_len;
        }
        q->drop_reply = false;
        return n;
    }
    return writev(fd, iov, count);
}

static const struct fuse_custom_io clone_io = {
    .read = clone_read,
    .writev = clone_writev,
};

/* --- queue threads --- */

static void fuse_queue_read(void *opaque)
{
    FuseQueue *q = opaque;

    for (int i = 0; i < FUSE_REQS_PER_WAKE && !q->stopping; i++) {
        struct fuse_buf fbuf = { 0 };
        int ret;

        if (!q->rbuf) {
            q->rbuf = fuse_buf_get(q);
        }
        fbuf.mem = q->rbuf->data + FUSE_RBUF_SHIFT;
        fbuf.size = FUSE_RBUF_SIZE;
        ret = fuse_session_receive_buf(q->se, &fbuf);
        if (ret == -EAGAIN) {
            return;
        }
        if (ret == -EINTR) {
            continue;
        }
        if (ret <= 0 || fuse_session_exited(q->se)) {
            /* ENODEV: unmounted or the connection was aborted. */
            q->disconnected = true;
            q->stopping = true;
            return;
        }
        q->rbuf_taken = false;
        fuse_session_process_buf(q->se, &fbuf);
        if (q->rbuf_taken) {
            q->rbuf = NULL;
        }
    }
}

static void fuse_queue_stop_bh(void *opaque)
{
    FuseQueue *q = opaque;

    q->stopping = true;
}

static void fuse_queue_exited_bh(void *opaque);
static void fuse_pt_stop(FuseExport *exp);
static void fuse_unmount_wait_end(FuseExport *exp);

static gpointer fuse_queue_thread(gpointer opaque)
{
    FuseQueue *q = opaque;
    FuseExport *exp = q->exp;

    current_queue = q;
    aio_context_set_current(q->ctx);
    g_mutex_lock(&exp->start_lock);
    q->ready = true;
    g_cond_broadcast(&exp->start_cond);
    g_mutex_unlock(&exp->start_lock);

    aio_set_fd_handler(q->ctx, q->fd, fuse_queue_read, NULL, q);
    while (!q->stopping) {
        aio_poll(q->ctx, true);
    }
    aio_set_fd_handler(q->ctx, q->fd, NULL, NULL, NULL);
    while (q->in_flight > 0) {          /* let requests already started finish and reply */
        aio_poll(q->ctx, true);
    }
    laio_thread_cleanup();
    fuse_pool_free(q);
    aio_bh_schedule(exp->main_ctx, fuse_queue_exited_bh, q);
    return NULL;
}

/* Main thread: a queue thread has finished (told to stop, or it saw the mount go away).  When
 * the last one is gone: unmount if still mounted, and report the export shut down. */
static void fuse_queue_exited_bh(void *opaque)
{
    FuseQueue *q = opaque;
    FuseExport *exp = q->exp;

    g_thread_join(q->thread);
    q->thread = NULL;
    aio_context_free(q->ctx);
    q->ctx = NULL;
    if (q->disconnected && !exp->stop_reason) {
        exp->stop_reason = "unmounted";
    }
    if (--exp->queues_running > 0) {
        /* One queue saw the unmount: make sure the others stop too. */
        for (unsigned i = 0; i < exp->nr_queues; i++) {
            if (exp->queues[i].thread) {
                aio_bh_schedule(exp->queues[i].ctx, fuse_queue_stop_bh, &exp->queues[i]);
            }
        }
        return;
    }
    fuse_unmount_wait_end(exp);        /* unmounted from outside while a removal waited */
    if (exp->mounted) {
        /* Lazy unmount (libfuse detaches); closing the fds later disconnects any user left. */
        fuse_pt_stop(exp);
        fuse_session_unmount(exp->queues[0].se);
        exp->mounted = false;
    }
    blk_exp_shutdown_done(&exp->common, exp->stop_reason ? exp->stop_reason : "removed");
}

/* --- set-up --- */

static int fuse_prepare_mountpoint(FuseExport *exp, GError **errp)
{
    const char *mp = exp->common.mountpoint;
    struct stat st;

    if (stat(mp, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            error_setg(errp, "%s: is a directory; blkfuse needs a regular file as mountpoint "
                       "(give a file name; it is created if missing)", mp);
            return -EISDIR;
        }
        if (!S_ISREG(st.st_mode)) {
            error_setg(errp, "%s: not a regular file; blkfuse needs a regular file as "
                       "mountpoint", mp);
            return -EINVAL;
        }
        g_autofree char *fstype = mount_fstype_at(mp);
        if (fstype) {
            error_setg(errp, "%s: already a mountpoint (another export or mount is on it); "
                       "unmount it first", mp);
            return -EBUSY;
        }
        return 0;
    }
    if (errno != ENOENT) {
        error_setg_errno(errp, errno, "%s", mp);
        return -errno;
    }
    int fd = open(mp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) {
        error_setg_errno(errp, errno, "%s: cannot create the mountpoint", mp);
        return -errno;
    }
    close(fd);
    exp->created_mountpoint = true;
    return 0;
}

/* Does the kernel's INIT request (len bytes at msg) offer FUSE_PASSTHROUGH? */
static bool fuse_pt_kernel_offers(const uint8_t *msg, size_t len)
{
    const struct fuse_init_in *in = (const void *)(msg + sizeof(struct fuse_in_header));

    if (len < sizeof(struct fuse_in_header) + sizeof(*in) || !(in->flags & FUSE_INIT_EXT)) {
        return false;
    }
    return ((uint64_t)in->flags2 << 32) & FUSE_PASSTHROUGH;
}

/* INIT is done: if it asked for passthrough, register the image with the kernel.  The
 * descriptor is the file node's own, which holds the image locks: the kernel keeps it (and
 * them) as long as anyone can still write through it.  Returns 0, or -errno with errp set when
 * --passthrough=on cannot hold. */
static int fuse_pt_start(FuseExport *exp, GError **errp)
{
    FuseQueue *q = &exp->queues[0];
    const char *why = NULL;
    int id;

    if (!q->init_patched) {
        why = "the kernel does not offer FUSE passthrough (Linux 6.9 or later, "
              "CONFIG_FUSE_PASSTHROUGH)";
    } else {
        exp->host_fd = bdrv_host_fd(blk_bs(exp->common.blk));
        id = fuse_passthrough_backing_open(q->fd, exp->host_fd);
        if (id > 0) {
            exp->backing_id = id;
            exp->common.passthrough = true;
            return 0;
        }
        why = fuse_passthrough_open_error(id);
    }
    if (exp->common.passthrough_mode == BLK_EXP_PASSTHROUGH_ON) {
        g_set_error(errp, BLK_ERROR, EINVAL, "%s: --passthrough=on: %s", exp->common.image,
                    why);
        return -EINVAL;
    }
    log_debug("export %s: no passthrough: %s", exp->common.id, why);
    g_free(exp->common.passthrough_reason);
    exp->common.passthrough_reason = g_strdup(why);
    return 0;
}

/* Before unmounting (which closes queue 0's fd): unregister the image.  Files still open keep
 * it, and the image locks on its open file description, until they are closed. */
static void fuse_pt_stop(FuseExport *exp)
{
    if (exp->backing_id > 0) {
        fuse_passthrough_backing_close(exp->queues[0].fd, exp->backing_id);
        exp->backing_id = 0;
    }
}

/* Read and process requests on queue 0's fd, blocking, until INIT has been handled; keep a
 * copy of the INIT request to replay into the clone sessions. */
static int fuse_handshake(FuseExport *exp, GError **errp)
{
    FuseQueue *q = &exp->queues[0];
    FuseBuf *b = fuse_buf_get(q);
    int ret = 0;

    current_queue = q;
    while (!exp->got_init) {
        struct fuse_buf fbuf = { .mem = b->data, .size = FUSE_RBUF_SIZE };
        ret = fuse_session_receive_buf(q->se, &fbuf);
        if (ret == -EINTR) {
            continue;
        }
        if (ret <= 0) {
            error_setg_errno(errp, ret < 0 ? ret : ENODEV, "%s: FUSE handshake failed",
                             exp->common.mountpoint);
            ret = ret < 0 ? ret : -ENODEV;
            break;
        }
        if (!exp->init_msg && ret >= (int)sizeof(struct fuse_in_header) &&
            ((struct fuse_in_header *)b->data)->opcode == FUSE_INIT) {
            exp->init_msg = g_memdup2(b->data, ret);
            exp->init_len = ret;
            if (exp->common.passthrough_wanted) {
                q->patch_init = fuse_pt_kernel_offers(exp->init_msg, exp->init_len);
            }
        }
        fuse_session_process_buf(q->se, &fbuf);
        ret = 0;
    }
    if (ret == 0 && exp->common.passthrough_wanted) {
        ret = fuse_pt_start(exp, errp);
    }
    current_queue = NULL;
    fuse_buf_put(q, b);
    return ret;
}

static struct fuse_session *fuse_new_session(FuseExport *exp, const BlockExportOptions *opts)
{
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    g_autofree char *mount_opts = NULL;
    struct fuse_session *se;

    fuse_opt_add_arg(&args, "blkfuse");
    fuse_opt_add_opt(&mount_opts, "max_read=1048576");
    fuse_opt_add_opt(&mount_opts, "default_permissions");
    fuse_opt_add_opt(&mount_opts, "subtype=blkfuse");
    /* Not "ro" even for read-only exports: chmod/chown must still work there.  Write access
     * is refused by open (EROFS, even for root), write, fallocate and setattr instead. */
    {
        g_autofree char *fsname = g_strdup_printf("fsname=%s", exp->common.image);
        fuse_opt_add_opt_escaped(&mount_opts, fsname);
    }
    if (opts->allow_other) {
        fuse_opt_add_opt(&mount_opts, "allow_other");
    }
    fuse_opt_add_arg(&args, "-o");
    fuse_opt_add_arg(&args, mount_opts);
    se = fuse_session_new(&args, &fuse_ops, sizeof(fuse_ops), exp);
    fuse_opt_free_args(&args);
    return se;
}

static void fuse_destroy_sessions(FuseExport *exp)
{
    fuse_pt_stop(exp);
    for (unsigned i = 0; i < exp->nr_queues; i++) {
        FuseQueue *q = &exp->queues[i];
        if (q->se) {
            if (i == 0 && exp->mounted) {
                fuse_session_unmount(q->se);
                exp->mounted = false;
            }
            fuse_session_destroy(q->se);        /* closes the fd */
            q->se = NULL;
        }
    }
}

static int fuse_export_create(BlockExport *blk_exp, const BlockExportOptions *opts,
                              GError **errp)
{
    FuseExport *exp = (FuseExport *)blk_exp;
    struct timespec ts;
    int ret;

    g_mutex_init(&exp->start_lock);
    g_cond_init(&exp->start_cond);
    g_mutex_init(&exp->attr_lock);
    co_mutex_init(&exp->grow_lock);
    exp->unmount_timer = -1;
    exp->host_fd = -1;
    exp->allow_other = opts->allow_other;
    exp->main_ctx = aio_get_current();
    exp->mode = exp->common.read_only ? 0400 : 0600;
    exp->uid = getuid();
    exp->gid = getgid();
    now(&ts);
    exp->atime = exp->mtime = exp->ctime = ts;
    exp->nr_queues = exp->common.queues;
    exp->queues = g_new0(FuseQueue, exp->nr_queues);
    for (unsigned i = 0; i < exp->nr_queues; i++) {
        exp->queues[i].exp = exp;
        exp->queues[i].index = i;
        exp->queues[i].fd = -1;
    }

    ret = fuse_prepare_mountpoint(exp, errp);
    if (ret < 0) {
        goto fail;
    }

    exp->queues[0].se = fuse_new_session(exp, opts);
    if (!exp->queues[0].se) {
        error_setg(errp, "%s: cannot set up the FUSE session", exp->common.mountpoint);
        ret = -EINVAL;
        goto fail;
    }
    if (fuse_session_mount(exp->queues[0].se, exp->common.mountpoint) != 0) {
        error_setg(errp, "%s: cannot mount (is /dev/fuse available, and fusermount3 "
                   "installed? with --allow-other, is user_allow_other in /etc/fuse.conf?)",
                   exp->common.mountpoint);
        ret = -EIO;
        goto fail;
    }
    exp->mounted = true;
    exp->queues[0].fd = fuse_session_fd(exp->queues[0].se);
    if (exp->common.passthrough_wanted &&
        fuse_session_custom_io(exp->queues[0].se, &clone_io, exp->queues[0].fd) != 0) {
        error_setg(errp, "%s: cannot set up the FUSE session", exp->common.mountpoint);
        ret = -EIO;
        goto fail;
    }

    ret = fuse_handshake(exp, errp);
    if (ret < 0) {
        goto fail;
    }

    /* Extra queues: clone the fd, give it a session, replay INIT into that session. */
    for (unsigned i = 1; i < exp->nr_queues; i++) {
        FuseQueue *q = &exp->queues[i];
        uint32_t master = exp->queues[0].fd;
        int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);

        if (fd < 0 || ioctl(fd, FUSE_DEV_IOC_CLONE, &master) < 0) {
            error_setg_errno(errp, errno, "%s: cannot clone /dev/fuse for queue %u",
                             exp->common.mountpoint, i);
            if (fd >= 0) {
                close(fd);
            }
            ret = -EIO;
            goto fail;
        }
        q->se = fuse_new_session(exp, opts);
        if (!q->se || fuse_session_custom_io(q->se, &clone_io, fd) != 0) {
            error_setg(errp, "%s: cannot set up the FUSE session for queue %u",
                       exp->common.mountpoint, i);
            close(fd);
            ret = -EIO;
            goto fail;
        }
        q->fd = fd;
        if (exp->init_msg) {
            struct fuse_buf fbuf = { .mem = g_memdup2(exp->init_msg, exp->init_len),
                                     .size = exp->init_len };
            current_queue = q;
            q->drop_reply = true;
            fuse_session_process_buf(q->se, &fbuf);
            q->drop_reply = false;
            current_queue = NULL;
            g_free(fbuf.mem);
        }
    }

    for (unsigned i = 0; i < exp->nr_queues; i++) {
        FuseQueue *q = &exp->queues[i];
        fcntl(q->fd, F_SETFL, fcntl(q->fd, F_GETFL) | O_NONBLOCK);
        q->ctx = aio_context_new_unbound(errp);
        if (!q->ctx) {
            ret = -ENOMEM;
            goto fail;
        }
    }
    for (unsigned i = 0; i < exp->nr_queues; i++) {
        FuseQueue *q = &exp->queues[i];
        g_autofree char *name = g_strdup_printf("fuse-q%u", i);

        q->thread = g_thread_new(name, fuse_queue_thread, q);
        exp->queues_running++;
        g_mutex_lock(&exp->start_lock);
        while (!q->ready) {
            g_cond_wait(&exp->start_cond, &exp->start_lock);
        }
        g_mutex_unlock(&exp->start_lock);
    }
    return 0;

fail:
    /* No queue thread has started: they start last, once nothing else can fail. */
    for (unsigned i = 0; exp->queues && i < exp->nr_queues; i++) {
        if (exp->queues[i].ctx) {
            aio_context_free(exp->queues[i].ctx);
        }
    }
    fuse_destroy_sessions(exp);
    if (exp->created_mountpoint) {
        unlink(exp->common.mountpoint);
    }
    g_free(exp->queues);
    exp->queues = NULL;
    g_free(exp->init_msg);
    exp->init_msg = NULL;
    return ret;
}

static unsigned fuse_export_clients(BlockExport *blk_exp)
{
    FuseExport *exp = (FuseExport *)blk_exp;

    return __atomic_load_n(&exp->open_count, __ATOMIC_RELAXED);
}

/* Main thread: queues stop reading, finish what is in flight, and exit; the last one to go
 * unmounts (fuse_queue_exited_bh), so no reply is ever lost to an fd closed under it. */
static void fuse_stop_queues(FuseExport *exp, const char *reason)
{
    exp->stop_reason = reason;
    for (unsigned i = 0; i < exp->nr_queues; i++) {
        FuseQueue *q = &exp->queues[i];
        if (q->thread) {
            aio_bh_schedule(q->ctx, fuse_queue_stop_bh, q);
        }
    }
}

static void fuse_set_busy_error(FuseExport *exp, unsigned clients, GError **errp)
{
    g_set_error(errp, BLK_ERROR, EBUSY, "%s: in use (%u open file%s; close %s, or use --force "
                "to disconnect)", exp->common.mountpoint, clients, clients == 1 ? "" : "s",
                clients == 1 ? "it" : "them");
}

/* --- a safe removal waiting for the open files to close (main thread) ---
 * A close() sends RELEASE asynchronously, so an unmount right after one finds the file still
 * open for a moment.  The removal then waits, with the main loop running (other exports and
 * the control socket stay served): the RELEASE that closes the last file schedules
 * fuse_last_release_bh, and the removal goes ahead; if the grace period ends first
 * (fuse_unmount_deadline), it is given up with EBUSY and the export stays. */

static int64_t fuse_unmount_grace_ms(void)
{
    const char *env = g_getenv("BLKFUSE_UNMOUNT_GRACE_MS");
    char *end;
    gint64 ms;

    if (!env || !*env) {
        return FUSE_UNMOUNT_GRACE_MS;
    }
    ms = g_ascii_strtoll(env, &end, 10);
    if (*end || ms < 0 || ms > 24 * 3600 * 1000) {
        log_warning("BLKFUSE_UNMOUNT_GRACE_MS=%s is not a number of milliseconds; using %d",
                    env, FUSE_UNMOUNT_GRACE_MS);
        return FUSE_UNMOUNT_GRACE_MS;
    }
    return ms;
}

static void fuse_unmount_wait_end(FuseExport *exp)
{
    if (!exp->unmount_waiting) {
        return;
    }
    exp->unmount_waiting = false;
    __atomic_store_n(&exp->wake_on_last_release, 0, __ATOMIC_SEQ_CST);
    aio_set_fd_handler(exp->main_ctx, exp->unmount_timer, NULL, NULL, NULL);
    close(exp->unmount_timer);
    exp->unmount_timer = -1;
}

/* The grace period is over: remove the export if its files have closed, else give up. */
static void fuse_unmount_deadline(void *opaque)
{
    FuseExport *exp = opaque;
    unsigned clients = __atomic_load_n(&exp->open_count, __ATOMIC_SEQ_CST);
    g_autoptr(GError) err = NULL;
    uint64_t expirations;

    if (read(exp->unmount_timer, &expirations, sizeof(expirations)) < 0 && errno == EAGAIN) {
        return;
    }
    fuse_unmount_wait_end(exp);
    if (clients == 0) {
        fuse_stop_queues(exp, "removed");
        return;
    }
    fuse_set_busy_error(exp, clients, &err);
    blk_exp_remove_failed(&exp->common, err);
}

/* The last open file was closed (scheduled by the queue thread that handled its RELEASE). */
static void fuse_last_release_bh(void *opaque)
{
    FuseExport *exp = opaque;

    if (exp->unmount_waiting && __atomic_load_n(&exp->open_count, __ATOMIC_SEQ_CST) == 0) {
        fuse_unmount_wait_end(exp);
        fuse_stop_queues(exp, "removed");
    }
    blk_exp_unref(&exp->common);
}

static int fuse_unmount_wait_begin(FuseExport *exp, unsigned clients, GError **errp)
{
    int64_t ms = fuse_unmount_grace_ms();
    struct itimerspec its = {
        .it_value = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 + (ms == 0) },
    };
    int fd;

    fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (fd < 0 || timerfd_settime(fd, 0, &its, NULL) < 0) {
        int err = errno;
        if (fd >= 0) {
            close(fd);
        }
        error_setg_errno(errp, err, "%s: cannot wait for the open files to close",
                         exp->common.mountpoint);
        return -err;
    }
    exp->unmount_timer = fd;
    exp->unmount_waiting = true;
    aio_set_fd_handler(exp->main_ctx, fd, fuse_unmount_deadline, NULL, exp);
    __atomic_store_n(&exp->wake_on_last_release, 1, __ATOMIC_SEQ_CST);
    log_info("export %s: %s is open (%u file%s); waiting up to %" G_GINT64_FORMAT " ms for "
             "%s to close", exp->common.id, exp->common.mountpoint, clients,
             clients == 1 ? "" : "s", ms, clients == 1 ? "it" : "them");
    /* The last RELEASE may have come before the flag was set: look again. */
    if (__atomic_load_n(&exp->open_count, __ATOMIC_SEQ_CST) == 0) {
        fuse_unmount_wait_end(exp);
        fuse_stop_queues(exp, "removed");
    }
    return 0;
}

static int fuse_export_request_shutdown(BlockExport *blk_exp, bool force, GError **errp)
{
    FuseExport *exp = (FuseExport *)blk_exp;
    unsigned clients = fuse_export_clients(blk_exp);

    if (force) {
        fuse_unmount_wait_end(exp);
        __atomic_store_n(&exp->halted, 1, __ATOMIC_RELEASE);
        fuse_stop_queues(exp, "forced");
        return 0;
    }
    if (exp->unmount_waiting) {
        return 0;
    }
    if (clients > 0) {
        return fuse_unmount_wait_begin(exp, clients, errp);
    }
    fuse_stop_queues(exp, "removed");
    return 0;
}

static void fuse_export_delete(BlockExport *blk_exp)
{
    FuseExport *exp = (FuseExport *)blk_exp;

    fuse_unmount_wait_end(exp);
    fuse_destroy_sessions(exp);         /* closing the fds disconnects remaining users */
    if (exp->created_mountpoint) {
        unlink(exp->common.mountpoint);
    }
    g_free(exp->queues);
    g_free(exp->init_msg);
    g_mutex_clear(&exp->start_lock);
    g_cond_clear(&exp->start_cond);
    g_mutex_clear(&exp->attr_lock);
    co_mutex_destroy(&exp->grow_lock);
}

const BlockExportDriver blk_exp_fuse = {
    .type               = "fuse",
    .instance_size      = sizeof(FuseExport),
    .create             = fuse_export_create,
    .request_shutdown   = fuse_export_request_shutdown,
    .delete             = fuse_export_delete,
    .clients            = fuse_export_clients,
};
