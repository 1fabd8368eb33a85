/* fuse-int.h - internals of the FUSE export shared by its parts: the protocol (protocol.c: INIT
 * and the ops), the transports that bring requests and take replies (transport-dev.c: read and
 * writev on /dev/fuse; transport-uring.c: FUSE-over-io_uring), and the queue threads and export
 * lifecycle (queue.c).
 *
 * The transport interface:
 * - A transport fills a FuseReq (embedded first in its own request struct) for each request it
 *   receives and calls fuse_dispatch() in the queue thread.
 * - The protocol answers each request exactly once through fuse_reply_*() (which call the
 *   transport's reply op), at once or later from a coroutine; never FORGET, BATCH_FORGET or
 *   INTERRUPT, for which fuse_dispatch returns false: the transport frees those itself.
 * - The transport keeps the request's buffers (in, arg, payload, out_buf) alive until its reply.
 *
 * Threads: fuse_dispatch and every reply run in the queue thread that received the request
 * (q->ctx is that thread's AioContext); INIT may also be handled in the main thread during
 * create, before any queue thread runs.
 */
#ifndef FUSE_FUSE_INT_H
#define FUSE_FUSE_INT_H

#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <glib.h>
#include "fuse/export.h"
#include "fuse/fuse-kernel.h"
#include "block/aio.h"
#include "block/coroutine.h"

#define FUSE_MAX_IO         (1024 * 1024)       /* max_read and max_write */
/* The largest request: a WRITE header and argument, then max_write bytes of data. */
#define FUSE_WRITE_HDR      (sizeof(struct fuse_in_header) + sizeof(struct fuse_write_in))
#define FUSE_MAX_REQ_SIZE   (FUSE_WRITE_HDR + FUSE_MAX_IO)
/* READs from this size on are answered by splice where possible (protocol.c): below it the
 * copy it saves costs less than its extra system calls. */
#define FUSE_SPLICE_MIN     (64 * 1024)

typedef struct FuseExport FuseExport;
typedef struct FuseQueue FuseQueue;
typedef struct FuseReq FuseReq;
typedef struct FuseTransportOps FuseTransportOps;

/* One request, whatever transport brought it.  The transport's own request struct starts
 * with it (container_of back). */
struct FuseReq {
    FuseQueue *q;
    /* The transport that brought it: the reply goes back there (a uring queue also answers
     * requests that came over /dev/fuse).  NULL: the export's transport. */
    const FuseTransportOps *ops;
    const struct fuse_in_header *in;
    /* The op's in argument (fuse_read_in, fuse_write_in, ...).  A transport that receives the
     * request as one byte stream (dev) sets arg to everything after the header and leaves
     * payload NULL: fuse_dispatch splits it at the op's argument size. */
    const void *arg;
    size_t arg_len;
    const void *payload;        /* WRITE data, LOOKUP name...; NULL if none */
    size_t payload_len;
    /* Where READ data is to land: the transport's buffer, 4 KiB aligned (O_DIRECT), at least
     * FUSE_MAX_IO bytes; out_cap is its size. */
    void *out_buf;
    size_t out_cap;
};

struct FuseTransportOps {
    const char *name;           /* "dev", "uring": shown by list and stats */
    /* Queue N gets the requests issued on CPU N (uring), not any request (dev). */
    bool queue_per_cpu;

    /* Optional.  Queue thread: take requests (on) or leave them to the other queues (off).
     * Needed unless queue_per_cpu. */
    void (*queue_listen)(FuseQueue *q, bool on);

    /* Required.  Queue thread, once, q->ctx current: start receiving requests (register fd
     * handlers or ring entries).  Returns 0, or -errno with errp set. */
    int (*queue_start)(FuseQueue *q, GError **errp);

    /* Required.  Queue thread, q->stopping set: receive no more requests.  Requests in flight
     * still reply through the transport afterwards. */
    void (*queue_stop)(FuseQueue *q);

    /* Required.  Queue thread, after the last reply of the queue: free the queue's resources. */
    void (*queue_cleanup)(FuseQueue *q);

    /* Required.  Answer req (then the transport frees it: req must not be used again).
     * error: 0 or -errno.  Then either out_arg_len bytes of out_arg, or out_len bytes of
     * req->out_buf (READ), never both.  Returns 0, or -ENOENT when the kernel no longer waits
     * for the answer (the request was interrupted or the connection aborted; a transport that
     * learns this only later returns 0), or another -errno. */
    int (*reply)(FuseReq *req, int error, const void *out_arg, size_t out_arg_len,
                 size_t out_len);

    /* Optional, all three or none: answer a READ with data moved into a pipe (splice) instead
     * of copied into req->out_buf.  splice_pipe puts the reply's header, for len bytes of data,
     * in the queue's pipe and returns the pipe's write end for the data, or -errno if it
     * cannot (no pipe, len too large for it).  Then exactly one of: splice_reply, once the len
     * bytes are in the pipe, sends header and data and frees req (returns as reply does);
     * splice_cancel, if they could not be put there, empties the pipe (req stays: answer it
     * with reply).  splice_reply returns -EAGAIN, req kept and the pipe emptied, if the kernel
     * refused the spliced reply: answer it with reply.  Nothing else may use the queue's pipe
     * meanwhile: no yield in between. */
    int (*splice_pipe)(FuseReq *req, size_t len);
    int (*splice_reply)(FuseReq *req, size_t len);
    void (*splice_cancel)(FuseReq *req);
};

extern const FuseTransportOps fuse_transport_dev;
extern const FuseTransportOps fuse_transport_uring;

/* One queue: a thread with its own event loop and /dev/fuse fd. */
struct FuseQueue {
    FuseExport *exp;
    unsigned index;
    int fd;                     /* /dev/fuse: queue 0 the mount's, others FUSE_DEV_IOC_CLONE */
    GThread *thread;
    AioContext *ctx;
    bool ready;                 /* queue_start done (under exp->start_lock)... */
    GError *start_err;          /* ...and why it failed, or NULL */
    bool stopping;              /* queue thread: stop receiving, finish in-flight, exit */
    bool disconnected;          /* the kernel ended the connection (unmounted) */
    unsigned in_flight;         /* requests dispatched, not yet replied (queue thread only) */

    uint64_t requests;          /* requests dispatched (queue thread writes, atomic) */

    /* Where the thread runs (affinity.c; queue thread only but aff_cpu): */
    int aff_cpu;                /* the CPU it is pinned to in LOCAL mode, or -1 */
    int aff_pinned;             /* the CPU it is pinned to now, or -1 */
    bool aff_listening;         /* taking requests (dev: its fd is watched) */
    bool aff_idle;              /* commits replies at idle priority (atomic: read by list) */
    int64_t aff_yield_paused_until; /* no yields before (monotonic us) */
    unsigned aff_yield_since_slow; /* yields since the last that took too long */
    uint64_t aff_yields;        /* replies committed at idle priority (atomic: read by list) */
    uint64_t aff_yield_pauses;  /* pauses of them (atomic: read by list) */
    unsigned aff_count;         /* requests in this window */
    unsigned aff_calm;          /* windows in a row at depth 1 */
    unsigned aff_depth;         /* the most requests the export had in flight, or the queue
                                 * found waiting at once, in this window */
    void *transport_state;      /* the transport's, from queue_start to queue_cleanup */
};

struct FuseExport {
    BlockExport common;
    FuseQueue *queues;
    unsigned nr_queues;
    const FuseTransportOps *transport;
    struct fuse_session *se;    /* libfuse: mount and unmount only */
    bool created_mountpoint;
    bool mounted;
    bool allow_other;

    /* Which CPU serves a request (affinity.c): */
    bool aff_on;                /* set before the queues start, then fixed */
    int aff_mode;               /* atomic: FUSE_AFF_LOCAL or FUSE_AFF_SPREAD */
    unsigned aff_in_flight;     /* atomic: requests of every queue dispatched, not answered */
    unsigned aff_switches;      /* atomic: mode switches */
    bool aff_known;             /* aff_allowed was read */
    bool aff_yield;             /* LOCAL-mode queues commit replies at idle priority (set
                                 * before they start; atomic: cleared if that fails) */
    int aff_policy;             /* the daemon's scheduling policy: back to it after each yield */
    cpu_set_t aff_allowed;      /* the CPUs the daemon was allowed at create */

    /* INIT negotiation (protocol.c).  Before mounting, parts that need a kernel feature ask for
     * it; it is agreed if the kernel offers it: */
    uint64_t init_want;         /* FUSE_OVER_IO_URING, FUSE_PASSTHROUGH, ... */
    uint32_t max_stack_depth;   /* the INIT reply's, for FUSE_PASSTHROUGH */
    /* ...and after INIT: */
    bool got_init;
    uint32_t proto_minor;       /* the protocol minor version in use */
    uint64_t kernel_flags;      /* what the kernel offered */
    uint64_t init_flags;        /* what was agreed (our INIT reply) */
    bool splice_read;           /* large READs may be answered by splice (blk_can_splice_read) */

    /* Passthrough (passthrough.c), after INIT: */
    int backing_id;             /* the image registered with the kernel, or 0 */
    int host_fd;                /* the image's descriptor (the file node's), or -1 */

    GMutex start_lock;
    GCond start_cond;
    int start_verdict;          /* under start_lock: 0 until every queue has started; then 1
                                 * (serve), or -1 (one failed: all clean up and exit) */

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

    GMutex attr_lock;
    mode_t mode;                /* permission bits of the file */
    uid_t uid;
    gid_t gid;
    struct timespec atime, mtime, ctime;
};

/* --- protocol.c --- */

/* Handle one request (queue thread; or the main thread for INIT during create).  Returns true
 * if it is or will be answered through the transport's reply, false if it takes no answer
 * (FORGET, BATCH_FORGET, INTERRUPT): the transport then frees it at once. */
bool fuse_dispatch(FuseReq *req);

/* Set up the export's attributes and locks (before mounting) and free them (delete). */
void fuse_protocol_init(FuseExport *exp);
void fuse_protocol_cleanup(FuseExport *exp);

/* --- passthrough.c --- */

/* Before mounting: ask for FUSE_PASSTHROUGH in INIT if the export's rules all hold. */
void fuse_passthrough_want(FuseExport *exp);
/* After INIT: register the image with the kernel, or say why not (exp->common).  Returns 0, or
 * -errno with errp set when --passthrough=on cannot hold. */
int fuse_passthrough_start(FuseExport *exp, GError **errp);
/* Before unmounting (which closes queue 0's fd): unregister the image. */
void fuse_passthrough_stop(FuseExport *exp);
/* The kernel writes the image itself, growing it and changing its times: before using the
 * length, take it from the file again (no-op without passthrough). */
void fuse_passthrough_refresh(FuseExport *exp);
/* With passthrough, raise a's times to the image file's. */
void fuse_passthrough_times(FuseExport *exp, struct fuse_attr *a);

/* --- queue.c --- */

/* Queue thread: the kernel ended the connection (ENODEV: unmounted, or aborted). */
void fuse_queue_disconnected(FuseQueue *q);

/* Any thread: count an open (delta 1) or a release (-1); the release of the last open file
 * wakes a safe removal waiting for it. */
void fuse_count_open(FuseExport *exp, int delta);

/* --- affinity.c --- */

#define FUSE_AFFINITY_WINDOW 64     /* requests between two looks at the export's depth */
#define FUSE_AFFINITY_PROBE  8      /* requests between two looks for requests waiting */
#define FUSE_AFFINITY_CALM   8      /* windows at depth 1 before going back to LOCAL */
#define FUSE_AUTO_QUEUES_MAX 4      /* --queues=auto over /dev/fuse: one per CPU, up to this */
enum { FUSE_AFF_LOCAL, FUSE_AFF_SPREAD };

/* Main thread, at create: read the CPUs the daemon may use; returns the queues of
 * --queues=auto. */
unsigned fuse_affinity_init(FuseExport *exp);
/* Main thread, before the queue threads start (the transport chosen): follow: whether the
 * queues move between LOCAL and SPREAD (else they run where the scheduler puts them). */
void fuse_affinity_setup(FuseExport *exp, bool follow);
/* Queue thread: take the export's mode (at start, and when another queue switched it). */
void fuse_affinity_apply(FuseQueue *q);
/* Queue thread, FUSE-over-io_uring: the system call that commits a reply, commit(opaque), at
 * SCHED_IDLE for that call only (see the top of affinity.c).  due: whether to (mode,
 * permission, pause); fuse_affinity_yield: false, commit not called, if the switch failed. */
#define FUSE_YIELD_SLOW_US       200         /* two yields longer than this... */
#define FUSE_YIELD_SLOW_SPAN     256         /* within this many yields... */
#define FUSE_YIELD_PAUSE_FACTOR  50          /* pause them for this many times as long, */
#define FUSE_YIELD_PAUSE_MIN_US  (100 * 1000)        /* at least this */
#define FUSE_YIELD_PAUSE_MAX_US  (10 * 1000 * 1000)  /* and at most this */
bool fuse_affinity_yield_due(FuseQueue *q);
bool fuse_affinity_yield(FuseQueue *q, void (*commit)(void *), void *opaque);
/* Queue thread: a window of FUSE_AFFINITY_WINDOW requests has ended. */
void fuse_affinity_window(FuseQueue *q);
/* "local", "spread", or "fixed" when not following. */
const char *fuse_affinity_mode_name(FuseExport *exp);
/* Main thread: the queues' state, for list and stats. */
void fuse_affinity_queues(FuseExport *exp, BlockExportQueues *info);

/* Queue thread, for each request dispatched (in_flight counts it)... */
static inline void fuse_affinity_dispatched(FuseQueue *q)
{
    FuseExport *exp = q->exp;
    unsigned all;

    __atomic_store_n(&q->requests, q->requests + 1, __ATOMIC_RELAXED);
    if (!exp->aff_on) {
        return;
    }
    all = __atomic_add_fetch(&exp->aff_in_flight, 1, __ATOMIC_RELAXED);
    if (all > q->aff_depth) {
        q->aff_depth = all;
    }
    if (++q->aff_count >= FUSE_AFFINITY_WINDOW) {
        fuse_affinity_window(q);
    }
}

/* Transport, before dispatching a request: whether to look for another request waiting
 * already (it costs a system call over /dev/fuse; once per FUSE_AFFINITY_PROBE requests). */
static inline bool fuse_affinity_probe_due(FuseQueue *q)
{
    return q->exp->aff_on && q->aff_count % FUSE_AFFINITY_PROBE == 0;
}

/* Transport, before dispatching a request: n requests (this one included) were waiting at
 * once, whether or not they will be in flight together (a request answered at once never
 * counts more than one in flight). */
static inline void fuse_affinity_waiting(FuseQueue *q, unsigned n)
{
    if (n > q->aff_depth) {
        q->aff_depth = n;
    }
}

/* ...and answered. */
static inline void fuse_affinity_answered(FuseQueue *q)
{
    if (q->exp->aff_on) {
        __atomic_sub_fetch(&q->exp->aff_in_flight, 1, __ATOMIC_RELAXED);
    }
}

/* ...or not after all: the transport did not send the reply (req is still to answer). */
static inline void fuse_affinity_unanswered(FuseQueue *q)
{
    if (q->exp->aff_on) {
        __atomic_add_fetch(&q->exp->aff_in_flight, 1, __ATOMIC_RELAXED);
    }
}

/* --- transport-dev.c --- */

/* Main thread, during create: read and answer requests on queue 0's fd, blocking, until INIT
 * has been answered.  Returns 0, or -errno with errp set. */
int fuse_dev_handshake(FuseExport *exp, GError **errp);

/* --- transport-uring.c: choosing the transport (main thread, during create) --- */

/* Before mounting: ask for FUSE-over-io_uring at INIT (init_want) unless --transport=dev, or
 * io_uring cannot be had.  Fails (errp) if --transport=uring cannot be met; auto logs why it
 * will use /dev/fuse. */
int fuse_transport_want(FuseExport *exp, const BlockExportOptions *opts, GError **errp);

/* After INIT: exp->transport is uring if the kernel agreed (one queue per possible CPU: the
 * queues are resized), else dev (failing for --transport=uring, logging for auto). */
int fuse_transport_pick(FuseExport *exp, const BlockExportOptions *opts, GError **errp);

#endif
