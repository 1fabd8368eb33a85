/* queue.c - the FUSE export driver: mount (libfuse3 mounts and unmounts, nothing more), the INIT
 * handshake, the queue threads, and removal (safe: waiting for open files to close; forced).
 *
 * Threads:
 * - main thread: create (mount, INIT handshake, clone fds, start the queues and wait until each
 *   has started, or failed: then the mount fails and every queue thread ends), request_shutdown,
 *   delete, and a safe removal that waits for open files to close (a timerfd for the grace
 *   period; the queue thread that handles the last RELEASE wakes it with a bottom half).
 * - one thread per queue: its own AioContext and its own /dev/fuse fd (queue 0 has the fd from
 *   the mount; the others FUSE_DEV_IOC_CLONE'd fds, so replies go back on the fd the request
 *   came from).  The transport receives requests there, the protocol starts a coroutine for
 *   each that needs one, and replies go out from the same thread.  Many requests are in flight
 *   per queue.
 */
#include "config.h"
#include "fuse/fuse-int.h"
#include "block/io-engine.h"
#include "block/util.h"

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

/* How long a safe removal waits for the open files to close (a close() sends RELEASE
 * asynchronously); BLKFUSE_UNMOUNT_GRACE_MS overrides it. */
#define FUSE_UNMOUNT_GRACE_MS 1000

static void fuse_queue_exited_bh(void *opaque);
static void fuse_unmount_wait_end(FuseExport *exp);
static void fuse_last_release_bh(void *opaque);

/* --- queue threads --- */

void fuse_queue_disconnected(FuseQueue *q)
{
    q->disconnected = true;
    q->stopping = true;
}

static void fuse_queue_stop_bh(void *opaque)
{
    FuseQueue *q = opaque;

    q->stopping = true;
}

static gpointer fuse_queue_thread(gpointer opaque)
{
    FuseQueue *q = opaque;
    FuseExport *exp = q->exp;
    const FuseTransportOps *t = exp->transport;
    g_autoptr(GError) err = NULL;

    int verdict;

    aio_context_set_current(q->ctx);
    fuse_affinity_apply(q);
    if (t->queue_start(q, &err) < 0 && !err) {
        error_setg(&err, "export %s: queue %u did not start", exp->common.id, q->index);
    }
    /* Tell create how it went, and wait for its verdict: serve only if every queue started
     * (a queue that failed would leave a half-working export, e.g. the kernel holding back
     * every request until all FUSE-over-io_uring queues have registered). */
    g_mutex_lock(&exp->start_lock);
    q->start_err = g_steal_pointer(&err);
    q->ready = true;
    g_cond_broadcast(&exp->start_cond);
    while (exp->start_verdict == 0) {
        g_cond_wait(&exp->start_cond, &exp->start_lock);
    }
    verdict = exp->start_verdict;
    g_mutex_unlock(&exp->start_lock);
    if (verdict < 0) {
        /* Nothing was dispatched yet; create joins this thread and frees the rest. */
        t->queue_stop(q);
        t->queue_cleanup(q);
        laio_thread_cleanup();
        aio_context_set_current(NULL);
        return NULL;
    }

    while (!q->stopping) {
        aio_poll(q->ctx, true);
    }
    t->queue_stop(q);
    while (q->in_flight > 0) {          /* let requests already started finish and reply */
        aio_poll(q->ctx, true);
    }
    t->queue_cleanup(q);
    laio_thread_cleanup();
    aio_bh_schedule(exp->main_ctx, fuse_queue_exited_bh, q);
    return NULL;
}

/* Main thread: queues stop receiving, finish what is in flight, and exit; the last one to go
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

/* Main thread: a queue thread has finished (told to stop, or it saw the mount go away).  When
 * the last one is gone: unmount if still mounted, and report the export shut down. */
static void fuse_queue_exited_bh(void *opaque)
{
    FuseQueue *q = opaque;
    FuseExport *exp = q->exp;

    g_thread_join(q->thread);
    q->thread = NULL;
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
    /* Every queue thread has exited: no queue can schedule on another's context any more
     * (affinity.c), so the contexts can go. */
    for (unsigned i = 0; i < exp->nr_queues; i++) {
        aio_context_free(exp->queues[i].ctx);
        exp->queues[i].ctx = NULL;
    }
    fuse_unmount_wait_end(exp);        /* unmounted from outside while a removal waited */
    if (exp->mounted) {
        /* Lazy unmount (libfuse detaches); closing the fds later disconnects any user left. */
        fuse_passthrough_stop(exp);
        fuse_session_unmount(exp->se);
        exp->mounted = false;
    }
    blk_exp_shutdown_done(&exp->common, exp->stop_reason ? exp->stop_reason : "removed");
}

/* --- open files --- */

/* Sequentially consistent with fuse_unmount_wait_begin: either it sees the last release, or
 * the release sees it waiting. */
void fuse_count_open(FuseExport *exp, int delta)
{
    if (__atomic_add_fetch(&exp->open_count, delta, __ATOMIC_SEQ_CST) == 0 &&
        __atomic_load_n(&exp->wake_on_last_release, __ATOMIC_SEQ_CST)) {
        blk_exp_ref(&exp->common);
        aio_bh_schedule(exp->main_ctx, fuse_last_release_bh, exp);
    }
}

static unsigned fuse_export_clients(BlockExport *blk_exp)
{
    FuseExport *exp = (FuseExport *)blk_exp;

    return __atomic_load_n(&exp->open_count, __ATOMIC_RELAXED);
}

static void fuse_export_queues(BlockExport *blk_exp, BlockExportQueues *info)
{
    fuse_affinity_queues((FuseExport *)blk_exp, info);
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

/* libfuse only mounts: its session gets no ops (requests never reach it). */
static const struct fuse_lowlevel_ops fuse_no_ops;

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
    se = fuse_session_new(&args, &fuse_no_ops, sizeof(fuse_no_ops), exp);
    fuse_opt_free_args(&args);
    return se;
}

/* Close the cloned fds; unmount and close the mount's own (libfuse owns it). */
static void fuse_close_fds(FuseExport *exp)
{
    for (unsigned i = 1; exp->queues && i < exp->nr_queues; i++) {
        if (exp->queues[i].fd >= 0) {
            close(exp->queues[i].fd);
            exp->queues[i].fd = -1;
        }
    }
    fuse_passthrough_stop(exp);
    if (exp->se) {
        if (exp->mounted) {
            fuse_session_unmount(exp->se);
            exp->mounted = false;
        }
        fuse_session_destroy(exp->se);          /* closes queue 0's fd */
        exp->se = NULL;
    }
}

static int fuse_mount(FuseExport *exp, const BlockExportOptions *opts, GError **errp)
{
    exp->se = fuse_new_session(exp, opts);
    if (!exp->se) {
        error_setg(errp, "%s: cannot set up the FUSE session", exp->common.mountpoint);
        return -EINVAL;
    }
    if (fuse_session_mount(exp->se, exp->common.mountpoint) != 0) {
        error_setg(errp, "%s: cannot mount (is /dev/fuse available, and fusermount3 "
                   "installed? with --allow-other, is user_allow_other in /etc/fuse.conf?)",
                   exp->common.mountpoint);
        return -EIO;
    }
    exp->mounted = true;
    exp->queues[0].fd = fuse_session_fd(exp->se);
    return 0;
}

/* Extra queues: a clone of queue 0's fd each (same connection; replies go back on the fd
 * that brought the request). */
static int fuse_clone_fds(FuseExport *exp, GError **errp)
{
    for (unsigned i = 1; i < exp->nr_queues; i++) {
        uint32_t master = exp->queues[0].fd;
        int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);

        if (fd < 0 || ioctl(fd, FUSE_DEV_IOC_CLONE, &master) < 0) {
            error_setg_errno(errp, errno, "%s: cannot clone /dev/fuse for queue %u",
                             exp->common.mountpoint, i);
            if (fd >= 0) {
                close(fd);
            }
            return -EIO;
        }
        exp->queues[i].fd = fd;
    }
    return 0;
}

/* Start the queue threads and wait until each has started (queue_start), or failed: then all
 * are told to end, and joined, and the first failure is returned. */
static int fuse_start_queues(FuseExport *exp, GError **errp)
{
    GError *first = NULL;
    unsigned failed_queue = 0;
    int verdict;

    for (unsigned i = 0; i < exp->nr_queues; i++) {
        FuseQueue *q = &exp->queues[i];
        g_autofree char *name = g_strdup_printf("fuse-q%u", i);

        q->thread = g_thread_new(name, fuse_queue_thread, q);
    }
    g_mutex_lock(&exp->start_lock);
    for (unsigned i = 0; i < exp->nr_queues; i++) {
        FuseQueue *q = &exp->queues[i];

        while (!q->ready) {
            g_cond_wait(&exp->start_cond, &exp->start_lock);
        }
        if (q->start_err && !first) {
            first = g_steal_pointer(&q->start_err);
            failed_queue = i;
        }
        g_clear_error(&q->start_err);
    }
    verdict = first ? -1 : 1;
    exp->start_verdict = verdict;
    g_cond_broadcast(&exp->start_cond);
    g_mutex_unlock(&exp->start_lock);

    if (verdict > 0) {
        exp->queues_running = exp->nr_queues;
        return 0;
    }
    for (unsigned i = 0; i < exp->nr_queues; i++) {
        g_thread_join(exp->queues[i].thread);
        exp->queues[i].thread = NULL;
    }
    g_set_error(errp, BLK_ERROR, EIO, "%s: queue %u of %u did not start (%s)%s",
                exp->common.mountpoint, failed_queue, exp->nr_queues, first->message,
                exp->transport == &fuse_transport_uring ?
                "; --transport=dev serves the export without FUSE-over-io_uring" : "");
    g_error_free(first);
    return -EIO;
}

static int fuse_export_create(BlockExport *blk_exp, const BlockExportOptions *opts,
                              GError **errp)
{
    FuseExport *exp = (FuseExport *)blk_exp;
    unsigned auto_queues;
    int ret;

    g_mutex_init(&exp->start_lock);
    g_cond_init(&exp->start_cond);
    fuse_protocol_init(exp);
    exp->transport = &fuse_transport_dev;
    exp->unmount_timer = -1;
    exp->allow_other = opts->allow_other;
    exp->main_ctx = aio_get_current();
    exp->splice_read = blk_can_splice_read(exp->common.blk);
    auto_queues = fuse_affinity_init(exp);
    exp->nr_queues = exp->common.queues ? exp->common.queues : auto_queues;
    exp->common.queues = exp->nr_queues;
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
    ret = fuse_transport_want(exp, opts, errp);
    if (ret < 0) {
        goto fail;
    }
    fuse_passthrough_want(exp);
    ret = fuse_mount(exp, opts, errp);
    if (ret < 0) {
        goto fail;
    }
    ret = fuse_dev_handshake(exp, errp);
    if (ret < 0) {
        goto fail;
    }
    ret = fuse_passthrough_start(exp, errp);
    if (ret < 0) {
        goto fail;
    }
    ret = fuse_transport_pick(exp, opts, errp);
    if (ret < 0) {
        goto fail;
    }
    if (exp->transport == &fuse_transport_dev) {
        ret = fuse_clone_fds(exp, errp);
        if (ret < 0) {
            goto fail;
        }
    } else {
        /* The handshake read INIT through the device transport's buffers on queue 0; another
         * transport brings its own state there: free those first. */
        fuse_transport_dev.queue_cleanup(&exp->queues[0]);
    }

    /* Follow the clients' CPUs with FUSE-over-io_uring and with --queues=auto. */
    fuse_affinity_setup(exp, exp->transport->queue_per_cpu || opts->queues == 0);
    for (unsigned i = 0; i < exp->nr_queues; i++) {
        FuseQueue *q = &exp->queues[i];
        if (q->fd >= 0) {
            fcntl(q->fd, F_SETFL, fcntl(q->fd, F_GETFL) | O_NONBLOCK);
        }
        q->ctx = aio_context_new_unbound(errp);
        if (!q->ctx) {
            ret = -ENOMEM;
            goto fail;
        }
    }
    ret = fuse_start_queues(exp, errp);
    if (ret < 0) {
        goto fail;
    }
    return 0;

fail:
    /* No queue thread is running: they start last, once nothing else can fail, and if one of
     * them fails to start, all have ended (fuse_start_queues). */
    for (unsigned i = 0; i < exp->nr_queues; i++) {
        if (exp->queues[i].ctx) {
            aio_context_free(exp->queues[i].ctx);
        }
        exp->transport->queue_cleanup(&exp->queues[i]);
    }
    fuse_close_fds(exp);
    if (exp->created_mountpoint) {
        unlink(exp->common.mountpoint);
    }
    g_free(exp->queues);
    exp->queues = NULL;
    fuse_protocol_cleanup(exp);
    g_mutex_clear(&exp->start_lock);
    g_cond_clear(&exp->start_cond);
    return ret;
}

static void fuse_export_delete(BlockExport *blk_exp)
{
    FuseExport *exp = (FuseExport *)blk_exp;

    fuse_unmount_wait_end(exp);
    fuse_close_fds(exp);                /* closing the fds disconnects remaining users */
    if (exp->created_mountpoint) {
        unlink(exp->common.mountpoint);
    }
    g_free(exp->queues);
    g_mutex_clear(&exp->start_lock);
    g_cond_clear(&exp->start_cond);
    fuse_protocol_cleanup(exp);
}

const BlockExportDriver blk_exp_fuse = {
    .type               = "fuse",
    .instance_size      = sizeof(FuseExport),
    .create             = fuse_export_create,
    .request_shutdown   = fuse_export_request_shutdown,
    .delete             = fuse_export_delete,
    .clients            = fuse_export_clients,
    .queues             = fuse_export_queues,
};
