/* passthrough.h - FUSE passthrough: when an export may let the kernel read and write the image
 * file itself, and the kernel interface for it (Linux 6.9+, CONFIG_FUSE_PASSTHROUGH).
 *
 * What the kernel does (verified on 6.18, tests/export-passthrough.bats): once blkfuse has
 * registered the image's descriptor (FUSE_DEV_IOC_BACKING_OPEN) and answered OPEN with
 * FOPEN_PASSTHROUGH and its backing id, read(2), write(2) (O_DIRECT too), splice, mmap and
 * copy_file_range on that open file go to the image file without reaching blkfuse.  GETATTR,
 * SETATTR (truncate), FALLOCATE, LSEEK (SEEK_DATA/SEEK_HOLE), FLUSH, FSYNC, OPEN and RELEASE
 * still do.  A write past the end grows the image in the kernel; the backing file is opened
 * with the flags of the user's open, so a read-only open stays read-only and an O_DIRECT open
 * is O_DIRECT on the image (bypassing the host page cache, unlike blkfuse's writeback mode).  The kernel keeps a
 * reference on the registered descriptor's open file description (and so on the image locks
 * held on it) until the connection ends, even if the daemon dies.
 *
 * Threads: the checks run in the main thread at export creation.
 */
#ifndef FUSE_PASSTHROUGH_H
#define FUSE_PASSTHROUGH_H

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "fuse/export.h"
#include "fuse/fuse-kernel.h"

/* The kernel's definitions are in fuse/fuse-kernel.h (FUSE_PASSTHROUGH, FOPEN_PASSTHROUGH,
 * blkfuse_init_out.max_stack_depth, blkfuse_open_out.backing_id, FUSE_DEV_IOC_BACKING_OPEN). */

/* max_stack_depth of our INIT reply: the kernel's FILESYSTEM_MAX_STACK_DEPTH, so that an image
 * on overlayfs can pass through; the mount itself then counts as that deep, so no other
 * passthrough mount can stack on it. */
#define FUSE_PT_MAX_STACK_DEPTH 2

/* --- when passthrough keeps every promise of an export --- */

/* What the rules look at, gathered from the options before the image is opened and from the
 * opened graph (fuse_passthrough_facts). */
typedef struct FusePassthroughFacts {
    bool format_raw_given;      /* -f raw (a probed raw image keeps its first-sector guard) */
    bool raw_over_file;         /* the graph is a raw node right over a file node */
    bool regular_file;          /* the image is a regular file (not a device, not null:) */
    bool sliced;                /* -o offset= or size= */
    bool faults;                /* -o fault-rules= */
    bool snapshot;              /* --snapshot (writes go to an overlay) */
    bool cache_writeback;       /* --cache=writeback (the kernel does neither O_DIRECT nor
                                 * write-through for us) */
    bool growable;
    bool read_only;
    bool coarse_stats;          /* --stats=coarse: reads and writes may go uncounted */
    bool privileged;            /* CAP_SYS_ADMIN, which FUSE_DEV_IOC_BACKING_OPEN needs */
} FusePassthroughFacts;

/* The rules that fail for f, as one line ("a; b; c"), or NULL when every one holds. */
char *fuse_passthrough_refusals(const FusePassthroughFacts *f);

/* Facts from the export's options (before open: opening consumes opts->opts). */
void fuse_passthrough_option_facts(FusePassthroughFacts *f, const BlockExportOptions *opts);
/* Facts from the opened graph. */
void fuse_passthrough_graph_facts(FusePassthroughFacts *f, BlockBackend *blk);

/* Whether this process has CAP_SYS_ADMIN in its effective set. */
bool fuse_passthrough_privileged(void);

const char *fuse_passthrough_mode_name(BlockExportPassthrough mode);
/* "auto", "on", "off"; false if s is none of them. */
bool fuse_passthrough_mode_parse(const char *s, BlockExportPassthrough *out);

/* Register fd with the FUSE connection of devfd.  Returns the backing id (> 0) or -errno. */
int fuse_passthrough_backing_open(int devfd, int fd);
void fuse_passthrough_backing_close(int devfd, int backing_id);
/* Why FUSE_DEV_IOC_BACKING_OPEN failed with err (-errno), as a reason for the user. */
const char *fuse_passthrough_open_error(int err);

#endif
