/* block.c - the block graph: driver table, cache modes, opening nodes and backing chains, probing,
 * references and image creation (the synchronous wrappers are in sync.c).
 *
 * Threads: everything here runs in the main thread; only bdrv_getlength and the allocation
 * helpers are called from I/O threads.
 */
#include "config.h"
#include "block/block.h"
#include "block/util.h"

#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

extern const BlockDriver bdrv_file;
extern const BlockDriver bdrv_null;
extern const BlockDriver bdrv_raw;
extern const BlockDriver bdrv_qcow2;
extern const BlockDriver bdrv_fault;
#ifdef CONFIG_LIBRBD
extern const BlockDriver bdrv_rbd;
#endif
#ifdef CONFIG_LIBNBD
extern const BlockDriver bdrv_nbd;
#endif

/* Every driver blkfuse has.  Protocols first; formats in probing order; filters last. */
static const BlockDriver *const block_drivers[] = {
    &bdrv_file,
    &bdrv_null,
#ifdef CONFIG_LIBRBD
    &bdrv_rbd,
#endif
#ifdef CONFIG_LIBNBD
    &bdrv_nbd,
#endif
    &bdrv_raw,
    &bdrv_qcow2,
    &bdrv_fault,
};

/* --- cache modes --- */

static const struct {
    const char *name;
    bool nocache;               /* O_DIRECT */
    bool write_through;         /* flush after every write */
} cache_modes[] = {
    [BLOCK_CACHE_WRITEBACK]     = { "writeback",    false, false },
    [BLOCK_CACHE_WRITETHROUGH]  = { "writethrough", false, true },
    [BLOCK_CACHE_NONE]          = { "none",         true,  false },
    [BLOCK_CACHE_DIRECTSYNC]    = { "directsync",   true,  true },
};

bool block_cache_mode_parse(const char *s, BlockCacheMode *mode, GError **errp)
{
    if (!s) {
        *mode = BLOCK_CACHE_WRITEBACK;
        return true;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(cache_modes); i++) {
        if (!strcmp(s, cache_modes[i].name)) {
            *mode = i;
            return true;
        }
    }
    error_setg(errp, "invalid cache mode '%s': expected writeback, writethrough, none or "
               "directsync", s);
    return false;
}

const char *block_cache_mode_name(BlockCacheMode mode)
{
    g_assert(mode < G_N_ELEMENTS(cache_modes));
    return cache_modes[mode].name;
}

int block_cache_mode_open_flags(BlockCacheMode mode)
{
    g_assert(mode < G_N_ELEMENTS(cache_modes));
    return cache_modes[mode].nocache ? BDRV_O_NOCACHE : 0;
}

bool block_cache_mode_write_through(BlockCacheMode mode)
{
    g_assert(mode < G_N_ELEMENTS(cache_modes));
    return cache_modes[mode].write_through;
}

/* Drivers added at run time by tests and fuzzers (bdrv_register_driver), searched after the
 * table. */
static GPtrArray *extra_drivers;

#define BACKING_CHAIN_MAX 256

void bdrv_register_driver(const BlockDriver *drv)
{
    if (!extra_drivers) {
        extra_drivers = g_ptr_array_new();
    }
    g_ptr_array_add(extra_drivers, (gpointer)drv);
}

const BlockDriver *bdrv_find_format(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(block_drivers); i++) {
        if (!block_drivers[i]->is_filter && strcmp(block_drivers[i]->format_name, name) == 0) {
            return block_drivers[i];
        }
    }
    for (guint i = 0; extra_drivers && i < extra_drivers->len; i++) {
        const BlockDriver *drv = extra_drivers->pdata[i];
        if (strcmp(drv->format_name, name) == 0) {
            return drv;
        }
    }
    return NULL;
}

static bool has_prefix(const BlockDriver *drv, const char *filename, size_t len)
{
    const char *p = drv->protocol_prefix;

    if (p && strlen(p) == len && strncmp(p, filename, len) == 0) {
        return true;
    }
    for (const char *const *q = drv->protocol_prefixes; q && *q; q++) {
        if (strlen(*q) == len && strncmp(*q, filename, len) == 0) {
            return true;
        }
    }
    return false;
}

const BlockDriver *bdrv_find_protocol(const char *filename)
{
    const char *colon = strchr(filename, ':');
    const char *slash = strchr(filename, '/');

    if (colon && (!slash || colon < slash)) {
        for (size_t i = 0; i < G_N_ELEMENTS(block_drivers); i++) {
            if (has_prefix(block_drivers[i], filename, colon - filename)) {
                return block_drivers[i];
            }
        }
        for (guint i = 0; extra_drivers && i < extra_drivers->len; i++) {
            if (has_prefix(extra_drivers->pdata[i], filename, colon - filename)) {
                return extra_drivers->pdata[i];
            }
        }
    }
    return &bdrv_file;
}

const char *bdrv_format_list(void)
{
    static char *list;

    if (!list) {
        GString *s = g_string_new(NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(block_drivers); i++) {
            if (!block_drivers[i]->is_protocol && !block_drivers[i]->is_filter) {
                g_string_append_printf(s, "%s%s", s->len ? ", " : "",
                                       block_drivers[i]->format_name);
            }
        }
        list = g_string_free(s, false);
    }
    return list;
}

/* --- options --- */

BlockOptions *block_options_new(void)
{
    return g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
}

bool block_options_parse(BlockOptions *opts, const char *str, GError **errp)
{
    g_auto(GStrv) parts = g_strsplit(str, ",", -1);

    for (char **p = parts; *p; p++) {
        char *eq = strchr(*p, '=');
        if (**p == '\0') {
            continue;
        }
        if (!eq || eq == *p) {
            error_setg(errp, "invalid option '%s': expected KEY=VALUE", *p);
            return false;
        }
        g_hash_table_replace(opts, g_strndup(*p, eq - *p), g_strdup(eq + 1));
    }
    return true;
}

char *block_options_take(BlockOptions *opts, const char *key)
{
    gpointer k, v;

    if (!opts || !g_hash_table_steal_extended(opts, key, &k, &v)) {
        return NULL;
    }
    g_free(k);
    return v;
}

bool block_options_take_size(BlockOptions *opts, const char *key, uint64_t *out, bool *found,
                             GError **errp)
{
    g_autofree char *v = block_options_take(opts, key);

    if (found) {
        *found = v != NULL;
    }
    if (!v) {
        return true;
    }
    if (!parse_size(v, out, errp)) {
        error_prefix(errp, "option %s", key);
        return false;
    }
    return true;
}

bool block_options_take_bool(BlockOptions *opts, const char *key, bool *out, bool *found,
                             GError **errp)
{
    g_autofree char *v = block_options_take(opts, key);

    if (found) {
        *found = v != NULL;
    }
    if (!v) {
        return true;
    }
    if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1")) {
        *out = true;
    } else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "no") ||
               !strcmp(v, "0")) {
        *out = false;
    } else {
        error_setg(errp, "option %s: expected on or off, not '%s'", key, v);
        return false;
    }
    return true;
}

static bool block_options_check_empty(BlockOptions *opts, const char *what, GError **errp)
{
    GHashTableIter it;
    gpointer key;

    if (!opts) {
        return true;
    }
    g_hash_table_iter_init(&it, opts);
    if (g_hash_table_iter_next(&it, &key, NULL)) {
        error_setg(errp, "unknown option '%s' for %s", (char *)key, what);
        return false;
    }
    return true;
}

void block_bitmap_info_free(BlockBitmapInfo *bm)
{
    if (bm) {
        g_free(bm->name);
        g_free(bm);
    }
}

void block_snapshot_info_free(BlockSnapshotInfo *sn)
{
    if (sn) {
        g_free(sn->id);
        g_free(sn->name);
        g_free(sn);
    }
}

/* --- nodes --- */

static BlockDriverState *bdrv_new(const BlockDriver *drv, const char *filename, int flags)
{
    static int node_counter;
    BlockDriverState *bs = g_new0(BlockDriverState, 1);

    bs->drv = drv;
    bs->opaque = g_malloc0(MAX(drv->instance_size, 1));
    bs->filename = g_strdup(filename);
    bs->open_flags = flags;
    bs->read_only = !(flags & BDRV_O_RDWR);
    bs->refcnt = 1;
    bs->bl.request_alignment = 1;
    bs->bl.mem_alignment = 1;
    g_mutex_init(&bs->reqs_lock);
    snprintf(bs->node_name, sizeof(bs->node_name), "#%s%d", drv->format_name, node_counter++);
    return bs;
}

static void bdrv_free(BlockDriverState *bs)
{
    g_mutex_clear(&bs->reqs_lock);
    g_free(bs->opaque);
    g_free(bs->filename);
    g_free(bs->backing_file);
    g_free(bs->backing_format);
    g_free(bs);
}

static BdrvChild *bdrv_child_new(BlockDriverState *child, const char *name)
{
    BdrvChild *c = g_new0(BdrvChild, 1);

    c->name = g_strdup(name);
    c->bs = child;
    return c;
}

static void bdrv_child_free(BdrvChild *c)
{
    if (c) {
        bdrv_unref(c->bs);
        g_free(c->name);
        g_free(c);
    }
}

static void bdrv_refresh_limits(BlockDriverState *bs)
{
    if (bs->file) {
        bs->bl.request_alignment = bs->file->bs->bl.request_alignment;
        bs->bl.mem_alignment = bs->file->bs->bl.mem_alignment;
    }
    if (bs->drv->bdrv_refresh_limits) {
        bs->drv->bdrv_refresh_limits(bs);
    }
}

void bdrv_ref(BlockDriverState *bs)
{
    __atomic_add_fetch(&bs->refcnt, 1, __ATOMIC_RELAXED);
}

void bdrv_unref(BlockDriverState *bs)
{
    if (!bs || __atomic_sub_fetch(&bs->refcnt, 1, __ATOMIC_ACQ_REL) > 0) {
        return;
    }
    if (!bs->read_only) {
        int ret = bdrv_flush(bs);
        if (ret < 0) {
            log_error("%s: flush at close failed: %s", bs->filename, g_strerror(-ret));
        }
    }
    if (bs->drv->bdrv_close) {
        bs->drv->bdrv_close(bs);
    }
    bdrv_child_free(bs->backing);
    bdrv_child_free(bs->file);
    bdrv_free(bs);
}

/* Why this build cannot open filename's protocol (an optional driver it was built without),
 * or NULL: such a name would otherwise fail as a missing local file. */
static const char *protocol_missing(const char *filename)
{
#ifndef CONFIG_LIBRBD
    if (g_str_has_prefix(filename, "rbd:")) {
        return "rbd: images need a blkfuse built with librbd (on Debian: apt-get install "
               "librbd-dev, then run configure again)";
    }
#endif
    return NULL;
}

static BlockDriverState *bdrv_open_protocol(const char *filename, BlockOptions *opts, int flags,
                                            GError **errp)
{
    const BlockDriver *drv = bdrv_find_protocol(filename);
    BlockDriverState *bs;

    if (drv == &bdrv_file && protocol_missing(filename)) {
        g_set_error(errp, BLK_ERROR, ENOTSUP, "%s: %s", filename, protocol_missing(filename));
        return NULL;
    }
    bs = bdrv_new(drv, filename, flags);

    if (drv->bdrv_open(bs, opts, flags, errp) < 0) {
        bdrv_free(bs);
        return NULL;
    }
    bdrv_refresh_limits(bs);
    return bs;
}

/* Put a filter node (drv) on top of child, opened with the one option key=value.  Takes over
 * the reference to child; returns the filter node, or NULL (child released) with errp set. */
static BlockDriverState *bdrv_open_filter(const BlockDriver *drv, BlockDriverState *child,
                                          const char *key, const char *value, GError **errp)
{
    BlockDriverState *bs = bdrv_new(drv, child->filename, child->open_flags);
    g_autoptr(GHashTable) opts = block_options_new();

    g_hash_table_insert(opts, g_strdup(key), g_strdup(value));
    bs->file = bdrv_child_new(child, "file");
    bdrv_refresh_limits(bs);
    if (drv->bdrv_open(bs, opts, bs->open_flags, errp) < 0) {
        bdrv_child_free(bs->file);
        bdrv_free(bs);
        return NULL;
    }
    bdrv_refresh_limits(bs);
    snprintf(bs->node_name, sizeof(bs->node_name), "%s", drv->format_name);
    return bs;
}

/* Score every format against the first bytes of file; raw wins only if nothing else claims it. */
static const BlockDriver *probe_buffer(const uint8_t *buf, int len, const char *filename)
{
    const BlockDriver *best = &bdrv_raw;
    int best_score = 0;

    for (size_t i = 0; i < G_N_ELEMENTS(block_drivers); i++) {
        const BlockDriver *drv = block_drivers[i];
        if (drv->bdrv_probe) {
            int score = drv->bdrv_probe(buf, len, filename);
            if (score > best_score) {
                best_score = score;
                best = drv;
            }
        }
    }
    return best;
}

const BlockDriver *bdrv_probe_buffer(const uint8_t *buf, int len, const char *filename)
{
    return probe_buffer(buf, len, filename);
}

static const BlockDriver *probe_node(BlockDriverState *file, GError **errp)
{
    enum { PROBE_LEN = 4096 };
    g_autofree uint8_t *buf = NULL;
    int64_t len = bdrv_getlength(file);
    int ret;

    if (len < 0) {
        error_setg_errno(errp, len, "%s: cannot get the image size", file->filename);
        return NULL;
    }
    len = MIN(len, PROBE_LEN);
    buf = blk_blockalign(PROBE_LEN);
    memset(buf, 0, PROBE_LEN);
    if (len > 0) {
        ret = bdrv_pread(file, 0, MIN(ROUND_UP(len, 512), PROBE_LEN), buf);
        if (ret < 0) {
            error_setg_errno(errp, ret, "%s: cannot read the image header", file->filename);
            return NULL;
        }
    }
    return probe_buffer(buf, len, file->filename);
}

const BlockDriver *bdrv_probe_format(const char *filename, GError **errp)
{
    BlockDriverState *file = bdrv_open_protocol(filename, NULL, 0, errp);
    const BlockDriver *drv;

    if (!file) {
        return NULL;
    }
    drv = probe_node(file, errp);
    bdrv_unref(file);
    return drv;
}

/* Realpaths of the images whose open is in progress, to refuse a backing chain that loops. */
static GPtrArray *opening_chain;

BlockDriverState *bdrv_open(const char *filename, const char *format, BlockOptions *opts,
                            int flags, GError **errp)
{
    const BlockDriver *drv = NULL;
    BlockDriverState *file, *bs;
    const BlockDriver *proto = bdrv_find_protocol(filename);
    g_autofree char *what = NULL;
    g_autofree char *fault_rules = block_options_take(opts, "fault-rules");

    if (format) {
        drv = bdrv_find_format(format);
        if (!drv) {
            error_setg(errp, "unknown format '%s' (known: %s)", format, bdrv_format_list());
            return NULL;
        }
    }
    if (drv && drv->is_protocol) {
        if (fault_rules) {
            error_setg(errp, "%s: fault-rules needs a format (raw, qcow2) on top of the %s "
                       "protocol", filename, drv->format_name);
            return NULL;
        }
        /* A protocol as the format must be the one the name selects: "file" for a
         * "null:..." name would leave nothing to open (and no error to say so). */
        if (drv != proto) {
            error_setg(errp, "%s: format %s does not match the file name", filename, format);
            return NULL;
        }
        bs = bdrv_open_protocol(filename, opts, flags, errp);
        if (bs && !block_options_check_empty(opts, drv->format_name, errp)) {
            bdrv_unref(bs);
            return NULL;
        }
        return bs;
    }

    file = bdrv_open_protocol(filename, opts, flags & ~BDRV_O_PROBED, errp);
    if (file && fault_rules) {
        file = bdrv_open_filter(&bdrv_fault, file, "fault-rules", fault_rules, errp);
    }
    if (!file) {
        return NULL;
    }
    if (!drv) {
        /* null: reads zeros (raw); remote protocols hold images of any format. */
        drv = proto == &bdrv_null ? &bdrv_raw : probe_node(file, errp);
        if (!drv) {
            bdrv_unref(file);
            return NULL;
        }
        flags |= BDRV_O_PROBED;
    }

    /* The protocol node's name: a remote one's is shown without secrets. */
    bs = bdrv_new(drv, file->filename, flags);
    bs->file = bdrv_child_new(file, "file");
    bdrv_refresh_limits(bs);
    if (drv->bdrv_open(bs, opts, flags, errp) < 0) {
        bdrv_child_free(bs->backing);
        bdrv_child_free(bs->file);
        bdrv_free(bs);
        return NULL;
    }
    bdrv_refresh_limits(bs);
    what = g_strdup_printf("format %s", drv->format_name);
    if (!block_options_check_empty(opts, what, errp)) {
        bdrv_unref(bs);
        return NULL;
    }
    return bs;
}

bool bdrv_backing_name_is_plain(const char *name)
{
    const char *colon = strchr(name, ':');
    const char *slash = strchr(name, '/');

    /* What bdrv_open would take for PROTOCOL:..., as QEMU does: a colon before any slash. */
    return !colon || (slash && slash < colon);
}

/*
 * Where the backing file `name` of the image file `image` is: an absolute path as it is, a
 * relative one in the image's directory (made absolute now, so that no later working directory
 * matters), and a protocol or json: name as it is when allow_remote, else refused (EREMOTE).
 * Returns the path (caller frees) or NULL with errp set.
 */
static char *resolve_backing(const char *image, const char *name, bool allow_remote,
                             GError **errp)
{
    g_autofree char *dir = NULL;
    g_autofree char *abs_dir = NULL;

    if (!bdrv_backing_name_is_plain(name)) {
        if (!allow_remote) {
            g_set_error(errp, BLK_ERROR, EREMOTE, "%s: backing file '%s' is not a local path "
                        "(a protocol or json: name); give --allow-remote-backing to open it "
                        "if you trust the image", image, name);
            return NULL;
        }
        if (g_str_has_prefix(name, "json:")) {
            error_setg(errp, "%s: backing file '%s': json: names are not supported", image, name);
            return NULL;
        }
        if (!bdrv_find_protocol(name)->protocol_prefix) {
            error_setg(errp, "%s: backing file '%s': unknown protocol '%.*s'", image, name,
                       (int)(strchr(name, ':') - name), name);
            return NULL;
        }
        return g_strdup(name);
    }
    if (g_path_is_absolute(name)) {
        return g_strdup(name);
    }
    if (!bdrv_backing_name_is_plain(image)) {
        error_setg(errp, "%s: backing file '%s' is relative, but the image is not a local file",
                   image, name);
        return NULL;
    }
    dir = g_path_get_dirname(image);
    abs_dir = g_canonicalize_filename(dir, NULL);
    return g_build_filename(abs_dir, name, NULL);
}

int bdrv_open_backing(BlockDriverState *bs, int flags, GError **errp)
{
    g_autofree char *path = NULL;
    g_autofree char *real = NULL;
    const char *image = bs->file ? bs->file->bs->filename : bs->filename;
    bool allow_remote = flags & (BDRV_O_ALLOW_REMOTE_BACKING | BDRV_O_BACKING_TRUSTED);
    g_autoptr(GError) local_err = NULL;
    BlockDriverState *backing;
    int backing_flags;

    if (!bs->backing_file || (flags & BDRV_O_NO_BACKING)) {
        return 0;
    }
    path = resolve_backing(image, bs->backing_file, allow_remote, &local_err);
    if (!path) {
        int ret = local_err->code == EREMOTE ? -EREMOTE : -EINVAL;
        g_propagate_error(errp, g_steal_pointer(&local_err));
        return ret;
    }
    if (!opening_chain) {
        opening_chain = g_ptr_array_new_with_free_func(g_free);
    }
    if (opening_chain->len == 0 && bs->file) {
        char *self = realpath(bs->file->bs->filename, NULL);
        g_ptr_array_add(opening_chain, self ? self : g_strdup(bs->file->bs->filename));
    }
    real = realpath(path, NULL);
    if (!real) {
        real = g_strdup(path);
    }
    for (guint i = 0; i < opening_chain->len; i++) {
        if (strcmp(opening_chain->pdata[i], real) == 0) {
            error_setg(errp, "%s: backing chain loops back to %s", bs->filename, path);
            g_ptr_array_set_size(opening_chain, 0);
            return -ELOOP;
        }
    }
    if (opening_chain->len >= BACKING_CHAIN_MAX) {
        error_setg(errp, "%s: backing chain is deeper than %d images", bs->filename,
                   BACKING_CHAIN_MAX);
        g_ptr_array_set_size(opening_chain, 0);
        return -ELOOP;
    }
    g_ptr_array_add(opening_chain, g_steal_pointer(&real));

    /* Read-only; a trusted name is this node's only, not its backing files'. */
    backing_flags = flags & ~(BDRV_O_RDWR | BDRV_O_PROBED | BDRV_O_BACKING_TRUSTED);
    backing = bdrv_open(path, bs->backing_format, NULL, backing_flags, errp);
    g_ptr_array_set_size(opening_chain, 0);
    if (!backing) {
        error_prefix(errp, "%s: cannot open backing file", bs->filename);
        return -EINVAL;
    }
    bs->backing = bdrv_child_new(backing, "backing");
    return 0;
}

int64_t bdrv_getlength(BlockDriverState *bs)
{
    return bs->drv->bdrv_getlength(bs);
}

int64_t bdrv_get_allocated_file_size(BlockDriverState *bs)
{
    if (bs->drv->bdrv_get_allocated_file_size) {
        return bs->drv->bdrv_get_allocated_file_size(bs);
    }
    return bs->file ? bdrv_get_allocated_file_size(bs->file->bs) : 0;
}

int bdrv_host_fd(BlockDriverState *bs)
{
    if (bs->drv->bdrv_host_fd) {
        return bs->drv->bdrv_host_fd(bs);
    }
    return bs->file ? bdrv_host_fd(bs->file->bs) : -1;
}

int64_t bdrv_refresh_length(BlockDriverState *bs)
{
    if (bs->drv->bdrv_refresh_length) {
        return bs->drv->bdrv_refresh_length(bs);
    }
    if (bs->file) {
        int64_t ret = bdrv_refresh_length(bs->file->bs);
        if (ret < 0) {
            return ret;
        }
    }
    return bdrv_getlength(bs);
}

/* --- creation --- */

static bool backing_size(const char *image, const char *backing_file, const char *backing_fmt,
                         uint64_t *size, GError **errp)
{
    /* The name comes from whoever creates the image, not from an image: any kind is opened.
     * Its own backing chain is not: the size is in its header. */
    g_autofree char *path = resolve_backing(image, backing_file, true, errp);
    BlockDriverState *bs = path ? bdrv_open(path, backing_fmt, NULL, BDRV_O_NO_BACKING, errp) :
                                  NULL;
    int64_t len;

    if (!bs) {
        error_prefix(errp, "cannot open backing file");
        return false;
    }
    len = bdrv_getlength(bs);
    bdrv_unref(bs);
    if (len < 0) {
        error_setg_errno(errp, len, "%s: cannot get the size", path);
        return false;
    }
    *size = len;
    return true;
}

bool prealloc_mode_parse(const char *str, bool allow_metadata, PreallocMode *mode,
                         GError **errp)
{
    static const char *const names[] = {
        [PREALLOC_MODE_OFF] = "off",
        [PREALLOC_MODE_METADATA] = "metadata",
        [PREALLOC_MODE_FALLOC] = "falloc",
        [PREALLOC_MODE_FULL] = "full",
    };

    for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
        if (!strcmp(str, names[i]) && (allow_metadata || i != PREALLOC_MODE_METADATA)) {
            *mode = i;
            return true;
        }
    }
    error_setg(errp, "invalid preallocation '%s' (off, %sfalloc or full)", str,
               allow_metadata ? "metadata, " : "");
    return false;
}

bool bdrv_create(const char *filename, const char *format, uint64_t size,
                 const char *backing_file, const char *backing_fmt, BlockOptions *opts,
                 GError **errp)
{
    const BlockDriver *drv = bdrv_find_format(format ? format : "raw");
    BlockDriverState *file;
    g_autofree char *what = NULL;
    int fd;
    bool ok;

    if (!drv || drv->is_protocol || !drv->bdrv_co_create) {
        error_setg(errp, "cannot create images of format '%s' (known: %s)",
                   format, bdrv_format_list());
        return false;
    }
    if (backing_file && !drv->supports_backing) {
        error_setg(errp, "format %s does not support backing files", drv->format_name);
        return false;
    }
    if (backing_file && size == 0 &&
        !backing_size(filename, backing_file, backing_fmt, &size, errp)) {
        return false;
    }
    if (bdrv_find_protocol(filename) != &bdrv_file) {
        /* Not a local file: open() below would make one named after the protocol name. */
        error_setg(errp, "%s: blkfuse creates local image files only, not %s images: create "
                   "it with the storage's own tools (for rbd: rbd create or rbd import)",
                   filename, bdrv_find_protocol(filename)->format_name);
        return false;
    }
    fd = open(filename, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        error_setg_errno(errp, errno, "%s: cannot create", filename);
        return false;
    }
    close(fd);

    file = bdrv_open_protocol(filename, NULL, BDRV_O_RDWR | BDRV_O_NO_LOCK, errp);
    if (!file) {
        return false;
    }
    ok = bdrv_create_on(drv, file, size, backing_file, backing_fmt, opts, errp) >= 0;
    what = g_strdup_printf("creating a %s image", drv->format_name);
    if (ok && !block_options_check_empty(opts, what, errp)) {
        ok = false;
    }
    bdrv_unref(file);
    if (!ok) {
        if (errp && *errp && !g_str_has_prefix((*errp)->message, filename)) {
            error_prefix(errp, "%s", filename);
        }
        unlink(filename);
    }
    return ok;
}

/* --- buffers --- */

void *blk_blockalign(size_t size)
{
    void *p;

    if (posix_memalign(&p, 4096, MAX(size, 1)) != 0) {
        g_error("out of memory allocating %zu bytes", size);
    }
    return p;
}

void blk_vfree(void *p)
{
    free(p);
}
