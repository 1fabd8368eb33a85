/* passthrough.c - FUSE passthrough: the rules that decide whether an export keeps every promise
 * when the kernel reads and writes its image file itself, and the backing-file ioctls.
 *
 * Threads: main thread (export creation), except the ioctls, which the FUSE driver calls
 * where it handles INIT and removal.
 */
#include "config.h"
#include "fuse/passthrough.h"
#include "fuse/fuse-int.h"
#include "block/block.h"
#include "block/util.h"

#include <errno.h>
#include <linux/capability.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

char *fuse_passthrough_refusals(const FusePassthroughFacts *f)
{
    g_autoptr(GPtrArray) why = g_ptr_array_new();

    /* The image: what the kernel reads must be what the export shows, byte for byte. */
    if (f->snapshot) {
        g_ptr_array_add(why, "--snapshot sends writes to an overlay");
    } else if (!f->raw_over_file) {
        g_ptr_array_add(why, "the image is not a raw image in a local file");
    } else if (!f->regular_file) {
        g_ptr_array_add(why, "the image is not a regular file");
    }
    if (!f->format_raw_given && !f->snapshot) {
        g_ptr_array_add(why, "the format is not given as -f raw (a probed raw image refuses "
                        "writes that would make its first sector look like another format, "
                        "which the kernel cannot check)");
    }
    if (f->sliced) {
        g_ptr_array_add(why, "-o offset=/size= export part of the file");
    }
    if (f->faults) {
        g_ptr_array_add(why, "-o fault-rules= would not see the kernel's reads and writes");
    }
    if (!f->cache_writeback) {
        g_ptr_array_add(why, "--cache is not writeback (the kernel would write through the "
                        "host page cache without flushing)");
    }
    /* The end of the file: the kernel grows the image on a write past it. */
    if (!f->growable && !f->read_only) {
        g_ptr_array_add(why, "the export is not growable (the kernel would grow the image on "
                        "a write past its end instead of failing it with ENOSPC): add "
                        "--growable");
    }
    if (!f->coarse_stats) {
        g_ptr_array_add(why, "per-request statistics are on (reads and writes would go "
                        "uncounted): add --stats=coarse");
    }
    if (!f->privileged) {
        g_ptr_array_add(why, "the kernel lets only a process with CAP_SYS_ADMIN (root) hand "
                        "it the image");
    }
    if (why->len == 0) {
        return NULL;
    }
    g_ptr_array_add(why, NULL);
    return g_strjoinv("; ", (char **)why->pdata);
}

static bool option_given(BlockOptions *opts, const char *key)
{
    return opts && g_hash_table_contains(opts, key);
}

void fuse_passthrough_option_facts(FusePassthroughFacts *f, const BlockExportOptions *opts)
{
    BlockCacheMode cache;

    memset(f, 0, sizeof(*f));
    f->format_raw_given = opts->format && !strcmp(opts->format, "raw");
    f->sliced = option_given(opts->opts, "offset") || option_given(opts->opts, "size");
    f->faults = option_given(opts->opts, "fault-rules");
    f->snapshot = opts->snapshot;
    f->cache_writeback = block_cache_mode_parse(opts->cache, &cache, NULL) &&
                         cache == BLOCK_CACHE_WRITEBACK;
    f->growable = opts->growable;
    f->read_only = opts->read_only;
    f->coarse_stats = opts->coarse_stats;
    f->privileged = fuse_passthrough_privileged();
}

void fuse_passthrough_graph_facts(FusePassthroughFacts *f, BlockBackend *blk)
{
    BlockDriverState *bs = blk_bs(blk);
    BlockDriverState *file = bs->file ? bs->file->bs : NULL;
    struct stat st;
    int fd;

    f->raw_over_file = !strcmp(bs->drv->format_name, "raw") && file &&
                       !strcmp(file->drv->format_name, "file");
    fd = f->raw_over_file ? bdrv_host_fd(bs) : -1;
    f->regular_file = fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    /* Belt and braces: a probed raw image has its guard whatever -f said. */
    if (bs->open_flags & BDRV_O_PROBED) {
        f->format_raw_given = false;
    }
}

bool fuse_passthrough_privileged(void)
{
    struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = { { 0 } };

    if (syscall(SYS_capget, &hdr, data) < 0) {
        return false;
    }
    return data[CAP_TO_INDEX(CAP_SYS_ADMIN)].effective & CAP_TO_MASK(CAP_SYS_ADMIN);
}

const char *fuse_passthrough_mode_name(BlockExportPassthrough mode)
{
    switch (mode) {
    case BLK_EXP_PASSTHROUGH_ON:
        return "on";
    case BLK_EXP_PASSTHROUGH_OFF:
        return "off";
    default:
        return "auto";
    }
}

bool fuse_passthrough_mode_parse(const char *s, BlockExportPassthrough *out)
{
    if (!strcmp(s, "auto")) {
        *out = BLK_EXP_PASSTHROUGH_AUTO;
    } else if (!strcmp(s, "on")) {
        *out = BLK_EXP_PASSTHROUGH_ON;
    } else if (!strcmp(s, "off")) {
        *out = BLK_EXP_PASSTHROUGH_OFF;
    } else {
        return false;
    }
    return true;
}

int fuse_passthrough_backing_open(int devfd, int fd)
{
    struct fuse_backing_map map = { .fd = fd };
    int id = ioctl(devfd, FUSE_DEV_IOC_BACKING_OPEN, &map);

    return id < 0 ? -errno : id;
}

void fuse_passthrough_backing_close(int devfd, int backing_id)
{
    uint32_t id = backing_id;

    if (ioctl(devfd, FUSE_DEV_IOC_BACKING_CLOSE, &id) < 0) {
        log_debug("FUSE_DEV_IOC_BACKING_CLOSE %d: %s", backing_id, g_strerror(errno));
    }
}

const char *fuse_passthrough_open_error(int err)
{
    switch (err) {
    case -EPERM:
        return "the kernel refused the image (FUSE_DEV_IOC_BACKING_OPEN needs CAP_SYS_ADMIN "
               "in the initial user namespace)";
    case -ELOOP:
        return "the image's file system is stacked too deep (overlayfs over overlayfs, or a "
               "FUSE mount that uses passthrough itself)";
    case -ENOTTY:
    case -EINVAL:
        return "the kernel does not know FUSE_DEV_IOC_BACKING_OPEN";
    default:
        return "the kernel refused the image";
    }
}

/* --- the export's side (fuse-int.h) --- */

void fuse_passthrough_want(FuseExport *exp)
{
    exp->backing_id = 0;
    exp->host_fd = -1;
    if (exp->common.passthrough_wanted) {
        exp->init_want |= FUSE_PASSTHROUGH;
        exp->max_stack_depth = FUSE_PT_MAX_STACK_DEPTH;
    }
}

/* The descriptor registered is the file node's own, which holds the image locks: the kernel
 * keeps its open file description (and so the locks) as long as anyone can still write the
 * image through it, even after the daemon is gone. */
int fuse_passthrough_start(FuseExport *exp, GError **errp)
{
    const char *why;
    int id;

    if (!exp->common.passthrough_wanted) {
        return 0;
    }
    if (!(exp->init_flags & FUSE_PASSTHROUGH)) {
        why = "the kernel does not offer FUSE passthrough (Linux 6.9 or later, "
              "CONFIG_FUSE_PASSTHROUGH)";
    } else {
        exp->host_fd = bdrv_host_fd(blk_bs(exp->common.blk));
        id = fuse_passthrough_backing_open(exp->queues[0].fd, exp->host_fd);
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

/* Files still open keep the image, and the image locks on its open file description, until
 * they are closed. */
void fuse_passthrough_stop(FuseExport *exp)
{
    if (exp->backing_id > 0) {
        fuse_passthrough_backing_close(exp->queues[0].fd, exp->backing_id);
        exp->backing_id = 0;
    }
}

void fuse_passthrough_refresh(FuseExport *exp)
{
    if (exp->common.passthrough) {
        blk_refresh_length(exp->common.blk);
    }
}

static void raise_time(uint64_t *sec, uint32_t *nsec, const struct timespec *ts)
{
    if ((uint64_t)ts->tv_sec > *sec || ((uint64_t)ts->tv_sec == *sec && ts->tv_nsec > *nsec)) {
        *sec = ts->tv_sec;
        *nsec = ts->tv_nsec;
    }
}

void fuse_passthrough_times(FuseExport *exp, struct fuse_attr *a)
{
    struct stat st;

    if (exp->common.passthrough && fstat(exp->host_fd, &st) == 0) {
        raise_time(&a->mtime, &a->mtimensec, &st.st_mtim);
        raise_time(&a->ctime, &a->ctimensec, &st.st_ctim);
    }
}
