/* passthrough.c - FUSE passthrough: the rules that decide whether an export keeps every promise
 * when the kernel reads and writes its image file itself, and the backing-file ioctls.
 *
 * Threads: main thread (export creation), except the ioctls, which the FUSE driver calls
 * where it handles INIT and removal.
 */
#include "config.h"
#include "fuse/passthrough.h"
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
    memset(f, 0, sizeof(*f));
    f->format_raw_given = opts->format && !strcmp(opts->format, "raw");
    f->sliced = option_given(opts->opts, "offset") || option_given(opts->opts, "size");
    f->faults = option_given(opts->opts, "fault-rules");
    f->snapshot = opts->snapshot;
    f->cache_writeback = !opts->cache || !strcmp(opts->cache, "writeback");
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
