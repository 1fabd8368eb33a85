/* export.c - the export registry: add, find, list and remove exports; each export holds its
 * backend, and the registry plus every in-flight request hold references on the export.
 *
 * Threads: main thread only, except blk_exp_ref/unref (atomic; the final unref happens in the
 * main thread because the registry's reference is dropped last, from blk_exp_shutdown_done).
 */
#include "config.h"
#include "fuse/export.h"
#include "fuse/passthrough.h"
#include "block/aio.h"
#include "block/util.h"

#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

/* Every export driver blkfuse has. */
static const BlockExportDriver *const export_drivers[] = {
    &blk_exp_fuse,
};

static GList *exports;          /* BlockExport *, in creation order */
static unsigned next_id;
static BlockExportRemovedFunc *removed_fn;
static void *removed_opaque;
static BlockExportRemoveFailedFunc *remove_failed_fn;
static void *remove_failed_opaque;

void blk_exp_set_removed_notifier(BlockExportRemovedFunc *fn, void *opaque)
{
    removed_fn = fn;
    removed_opaque = opaque;
}

void blk_exp_set_remove_failed_notifier(BlockExportRemoveFailedFunc *fn, void *opaque)
{
    remove_failed_fn = fn;
    remove_failed_opaque = opaque;
}

static const BlockExportDriver *find_driver(const char *type)
{
    for (size_t i = 0; i < G_N_ELEMENTS(export_drivers); i++) {
        if (strcmp(export_drivers[i]->type, type) == 0) {
            return export_drivers[i];
        }
    }
    return NULL;
}

static char *absolute_path(const char *path)
{
    char *real = realpath(path, NULL);

    if (real) {
        return real;
    }
    if (g_path_is_absolute(path)) {
        return g_strdup(path);
    } else {
        g_autofree char *cwd = g_get_current_dir();
        return g_build_filename(cwd, path, NULL);
    }
}

/* --snapshot: create a temporary qcow2 overlay over the image, open it read-write (the image
 * itself only read-only, as its backing file) and unlink it at once, so that it disappears at
 * unmount or if the daemon dies. */
static BlockBackend *open_with_overlay(BlockExport *exp, const BlockExportOptions *opts,
                                       int flags, GError **errp)
{
    const char *tmpdir = g_getenv("BLKFUSE_TMPDIR") ? g_getenv("BLKFUSE_TMPDIR") : "/var/tmp";
    g_autofree char *overlay = g_build_filename(tmpdir, "blkfuse-snapshot-XXXXXX", NULL);
    g_autofree char *format = g_strdup(opts->format);
    BlockBackend *blk;
    int fd;

    if (!format) {
        const BlockDriver *drv = bdrv_probe_format(exp->image, errp);
        if (!drv) {
            return NULL;
        }
        format = g_strdup(drv->format_name);
    }
    if (opts->opts && g_hash_table_size(opts->opts) > 0) {
        error_setg(errp, "--snapshot cannot be combined with -o options");
        return NULL;
    }
    fd = g_mkstemp(overlay);
    if (fd < 0) {
        error_setg_errno(errp, errno, "%s: cannot create the temporary overlay", tmpdir);
        return NULL;
    }
    close(fd);
    if (!bdrv_create(overlay, "qcow2", 0, exp->image, format, NULL, errp)) {
        unlink(overlay);
        return NULL;
    }
    /* The overlay's backing file name is the user's image name, whatever its kind. */
    blk = blk_new_open(overlay, "qcow2", NULL, flags | BDRV_O_BACKING_TRUSTED, errp);
    unlink(overlay);
    if (!blk) {
        error_prefix(errp, "temporary overlay for %s", exp->image);
    }
    return blk;
}

/* Decide whether the driver may try passthrough: every rule of fuse/passthrough.c must hold
 * (facts holds those of the options, gathered before open).  Returns false with errp set when
 * --passthrough=on cannot hold. */
static bool decide_passthrough(BlockExport *exp, FusePassthroughFacts *facts, GError **errp)
{
    g_autofree char *why = NULL;

    if (exp->passthrough_mode == BLK_EXP_PASSTHROUGH_OFF) {
        exp->passthrough_reason = g_strdup("--passthrough=off");
        return true;
    }
    fuse_passthrough_graph_facts(facts, exp->blk);
    why = fuse_passthrough_refusals(facts);
    if (!why) {
        exp->passthrough_wanted = true;
        return true;
    }
    if (exp->passthrough_mode == BLK_EXP_PASSTHROUGH_ON) {
        g_set_error(errp, BLK_ERROR, EINVAL, "%s: --passthrough=on cannot keep the export's "
                    "promises: %s", exp->image, why);
        return false;
    }
    log_debug("export %s: no passthrough: %s", exp->id, why);
    exp->passthrough_reason = g_steal_pointer(&why);
    return true;
}

/* Free what the registry allocated for exp, and exp itself (the backend is released first). */
static void export_free(BlockExport *exp)
{
    g_free(exp->id);
    g_free(exp->image);
    g_free(exp->mountpoint);
    g_free(exp->format);
    g_free(exp->passthrough_reason);
    g_free(exp);
}

BlockExport *blk_exp_add(const BlockExportOptions *opts, GError **errp)
{
    const BlockExportDriver *drv = find_driver(opts->type ? opts->type : "fuse");
    g_autofree char *id = NULL;
    BlockExport *exp;
    FusePassthroughFacts pt_facts;
    BlockCacheMode cache;
    int flags;

    if (!drv) {
        error_setg(errp, "unknown export type '%s'", opts->type);
        return NULL;
    }
    id = opts->id ? g_strdup(opts->id) : g_strdup_printf("export%u", next_id);
    if (blk_exp_find(id)) {
        error_setg(errp, "an export with id '%s' already exists", id);
        return NULL;
    }
    if (!block_cache_mode_parse(opts->cache, &cache, errp)) {
        return NULL;
    }
    flags = block_cache_mode_open_flags(cache);
    if (!opts->read_only) {
        flags |= BDRV_O_RDWR;
    }
    if (opts->allow_remote_backing) {
        flags |= BDRV_O_ALLOW_REMOTE_BACKING;
    }

    exp = g_malloc0(drv->instance_size);
    exp->drv = drv;
    exp->id = g_steal_pointer(&id);
    exp->refcnt = 1;
    exp->image = strchr(opts->image, ':') && !g_file_test(opts->image, G_FILE_TEST_EXISTS) ?
                 g_strdup(opts->image) : absolute_path(opts->image);
    exp->mountpoint = absolute_path(opts->mountpoint);
    exp->cache = cache;
    exp->read_only = opts->read_only;
    exp->growable = opts->growable;
    exp->snapshot = opts->snapshot;
    exp->queues = opts->queues;            /* 0: auto, the driver sets how many */
    exp->owner = getuid();
    exp->since = time(NULL);
    exp->coarse_stats = opts->coarse_stats;
    exp->passthrough_mode = opts->passthrough;
    fuse_passthrough_option_facts(&pt_facts, opts);

    if (opts->snapshot) {
        exp->blk = open_with_overlay(exp, opts, flags, errp);
    } else {
        exp->blk = blk_new_open(exp->image, opts->format, opts->opts, flags, errp);
    }
    if (!exp->blk) {
        goto fail;
    }
    if (!opts->snapshot && bdrv_find_protocol(exp->image)->protocol_prefix) {
        /* A remote image is shown as its protocol node names it: without secrets. */
        BlockDriverState *top = blk_bs(exp->blk);
        g_free(exp->image);
        exp->image = g_strdup(top->file ? top->file->bs->filename : top->filename);
    }
    blk_set_write_through(exp->blk, block_cache_mode_write_through(cache));
    exp->format = g_strdup(opts->snapshot ? blk_bs(exp->blk)->backing->bs->drv->format_name :
                           blk_bs(exp->blk)->drv->format_name);
    if (!decide_passthrough(exp, &pt_facts, errp)) {
        goto fail;
    }

    if (drv->create(exp, opts, errp) < 0) {
        goto fail;
    }
    next_id++;
    exports = g_list_append(exports, exp);
    log_info("export %s: %s (%s%s%s) on %s, transport %s", exp->id, exp->image, exp->format,
             exp->read_only ? ", read-only" : "", exp->passthrough ? ", passthrough" : "",
             exp->mountpoint, exp->transport ? exp->transport : "?");
    return exp;

fail:
    blk_unref(exp->blk);
    export_free(exp);
    return NULL;
}

bool blk_exp_transport_valid(const char *name)
{
    return !strcmp(name, "auto") || !strcmp(name, "uring") || !strcmp(name, "dev");
}

BlockExport *blk_exp_find(const char *id)
{
    for (GList *l = exports; l; l = l->next) {
        BlockExport *exp = l->data;
        if (strcmp(exp->id, id) == 0) {
            return exp;
        }
    }
    return NULL;
}

BlockExport *blk_exp_find_by_mountpoint(const char *mountpoint)
{
    g_autofree char *abs = absolute_path(mountpoint);

    for (GList *l = exports; l; l = l->next) {
        BlockExport *exp = l->data;
        if (strcmp(exp->mountpoint, abs) == 0) {
            return exp;
        }
    }
    return NULL;
}

GList *blk_exp_list(void)
{
    return exports;
}

unsigned blk_exp_count(void)
{
    return g_list_length(exports);
}

unsigned blk_exp_clients(BlockExport *exp)
{
    return exp->drv->clients ? exp->drv->clients(exp) : 0;
}

bool blk_exp_queues(BlockExport *exp, BlockExportQueues *info)
{
    memset(info, 0, sizeof(*info));
    if (!exp->drv->queues) {
        return false;
    }
    exp->drv->queues(exp, info);
    return true;
}

void blk_exp_queues_clear(BlockExportQueues *info)
{
    g_free(info->queue);
    memset(info, 0, sizeof(*info));
}

int blk_exp_request_remove(BlockExport *exp, bool force, GError **errp)
{
    int ret;

    if (exp->shutting_down && !(force && !exp->forced)) {
        return 0;
    }
    ret = exp->drv->request_shutdown(exp, force, errp);
    if (ret < 0) {
        return ret;
    }
    exp->shutting_down = true;
    exp->forced |= force;
    return 0;
}

void blk_exp_shutdown_done(BlockExport *exp, const char *reason)
{
    exports = g_list_remove(exports, exp);
    log_info("export %s: %s removed (%s)", exp->id, exp->mountpoint, reason);
    if (removed_fn) {
        removed_fn(exp, reason, removed_opaque);
    }
    blk_exp_unref(exp);
}

void blk_exp_remove_failed(BlockExport *exp, const GError *err)
{
    exp->shutting_down = false;
    log_info("export %s: not removed: %s", exp->id, err->message);
    if (remove_failed_fn) {
        remove_failed_fn(exp, err, remove_failed_opaque);
    }
}

void blk_exp_close_all(void)
{
    AioContext *ctx = aio_get_current();
    GList *copy = g_list_copy(exports);

    for (GList *l = copy; l; l = l->next) {
        blk_exp_request_remove(l->data, true, NULL);
    }
    g_list_free(copy);
    while (exports) {
        aio_poll(ctx, true);
    }
}

void blk_exp_ref(BlockExport *exp)
{
    __atomic_add_fetch(&exp->refcnt, 1, __ATOMIC_RELAXED);
}

void blk_exp_unref(BlockExport *exp)
{
    if (__atomic_sub_fetch(&exp->refcnt, 1, __ATOMIC_ACQ_REL) > 0) {
        return;
    }
    blk_unref(exp->blk);        /* drains, flushes, closes the image */
    exp->drv->delete(exp);
    export_free(exp);
}
