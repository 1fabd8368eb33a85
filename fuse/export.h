/* export.h - the export registry: exports by id, each holding a BlockBackend, added, queried and
 * removed (safely: refused while in use; or forcibly: users are disconnected).
 *
 * Threads: the registry lives in the main thread.  Export drivers may run I/O threads; they
 * report a finished shutdown with blk_exp_shutdown_done() from the main thread.
 */
#ifndef FUSE_EXPORT_H
#define FUSE_EXPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>
#include <glib.h>
#include "block/backend.h"

typedef struct BlockExport BlockExport;
typedef struct BlockExportQueues BlockExportQueues;

/* --passthrough: let the kernel read and write the image itself (fuse/passthrough.h). */
typedef enum {
    BLK_EXP_PASSTHROUGH_AUTO,   /* when every promise of the export holds with it */
    BLK_EXP_PASSTHROUGH_ON,     /* the same, but refuse to mount when one does not */
    BLK_EXP_PASSTHROUGH_OFF,
} BlockExportPassthrough;

typedef struct BlockExportOptions {
    const char *type;           /* "fuse" */
    const char *id;             /* NULL: "export<N>" */
    const char *image;          /* image file name, as given */
    const char *format;         /* NULL: probe */
    BlockOptions *opts;         /* format/protocol options (-o) */
    const char *mountpoint;
    bool read_only;
    bool growable;
    bool allow_other;
    bool snapshot;              /* writes go to a temporary overlay */
    const char *cache;          /* block_cache_mode_parse: NULL = writeback */
    unsigned queues;            /* 0: auto (one per CPU, following the clients' CPUs) */
    /* How requests reach the export: "uring" (FUSE-over-io_uring: fails if the kernel does not
     * offer it), "dev" (reads and writes on /dev/fuse), or "auto"/NULL (uring when the kernel
     * offers it, else dev, saying so once in the log). */
    const char *transport;
    bool allow_remote_backing;  /* open backing files named by protocol (BDRV_O_ALLOW_...) */
    BlockExportPassthrough passthrough;
    bool coarse_stats;          /* --stats=coarse: reads and writes may go uncounted */
} BlockExportOptions;

typedef struct BlockExportDriver {
    const char *type;
    size_t instance_size;       /* >= sizeof(BlockExport), which must come first */

    /* Required.  Start serving exp (exp->blk is open).  Returns 0 or -errno with errp set. */
    int (*create)(BlockExport *exp, const BlockExportOptions *opts, GError **errp);

    /* Required.  Begin removal (main thread, must not block).  Safe (force false): while users
     * hold the export open, either return -EBUSY with errp set, or return 0 and wait for them
     * (without blocking), then go on or, if they stay, call blk_exp_remove_failed().  Forced:
     * make users' I/O fail, then stop (a safe removal still waiting becomes forced).  The
     * driver calls blk_exp_shutdown_done() once no request is in flight and it no longer
     * touches exp->blk. */
    int (*request_shutdown)(BlockExport *exp, bool force, GError **errp);

    /* Required.  Free the driver's resources (after shutdown is done). */
    void (*delete)(BlockExport *exp);

    /* Optional.  Number of users holding the export open. */
    unsigned (*clients)(BlockExport *exp);

    /* Optional.  How the queues serve now: fills *info (blk_exp_queues). */
    void (*queues)(BlockExport *exp, BlockExportQueues *info);
} BlockExportDriver;

struct BlockExport {
    const BlockExportDriver *drv;
    char *id;
    BlockBackend *blk;
    int refcnt;                 /* registry + in-flight requests */
    char *image;                /* absolute path */
    char *format;
    char *mountpoint;           /* absolute path */
    BlockCacheMode cache;
    bool read_only;
    bool growable;
    bool snapshot;
    unsigned queues;
    const char *transport;      /* in use, set by the driver's create: "dev", "uring" */
    uid_t owner;
    time_t since;
    bool shutting_down;
    bool forced;
    bool coarse_stats;
    BlockExportPassthrough passthrough_mode;    /* as asked */
    bool passthrough_wanted;    /* every rule of the options and the graph holds: the driver
                                 * tries the kernel's part (set before create) */
    bool passthrough;           /* in use (set by the driver) */
    char *passthrough_reason;   /* why not in use, or NULL */
};

/* Called in the main thread whenever an export has been removed (by request or because its
 * mount went away); reason is "unmounted", "removed" or "forced". */
typedef void BlockExportRemovedFunc(BlockExport *exp, const char *reason, void *opaque);
void blk_exp_set_removed_notifier(BlockExportRemovedFunc *fn, void *opaque);

/* Called in the main thread when a removal in progress was given up and the export stays
 * (err->code EBUSY: its file was still open when the grace period ended). */
typedef void BlockExportRemoveFailedFunc(BlockExport *exp, const GError *err, void *opaque);
void blk_exp_set_remove_failed_notifier(BlockExportRemoveFailedFunc *fn, void *opaque);

/* Whether name is a transport that BlockExportOptions.transport accepts. */
bool blk_exp_transport_valid(const char *name);

/* Open the image and start an export.  Returns it (owned by the registry) or NULL (errp). */
BlockExport *blk_exp_add(const BlockExportOptions *opts, GError **errp);
BlockExport *blk_exp_find(const char *id);
/* mountpoint is compared after realpath(). */
BlockExport *blk_exp_find_by_mountpoint(const char *mountpoint);
/* Exports in order of creation (the list belongs to the registry). */
GList *blk_exp_list(void);
unsigned blk_exp_count(void);
unsigned blk_exp_clients(BlockExport *exp);

/* How an export's queues serve now, for list and stats. */
typedef struct BlockExportQueue {
    int cpu;                    /* the CPU it serves its clients on while in mode local, or -1 */
    int pinned;                 /* the CPU it is pinned to now, or -1 */
    bool taking;                /* takes requests now */
    bool yields;                /* commits replies at idle priority (mode local, uring) */
    uint64_t yields_done;       /* replies committed so */
    uint64_t yield_pauses;      /* pauses of that (a CPU busy with other work) */
    uint64_t requests;          /* requests served */
} BlockExportQueue;

struct BlockExportQueues {
    const char *affinity;       /* "local", "spread", or "fixed" (not following: --queues=N) */
    uint64_t switches;          /* between local and spread */
    unsigned nr;
    BlockExportQueue *queue;    /* nr of them */
};

/* Fill *info (free with blk_exp_queues_clear); false if the driver does not say. */
bool blk_exp_queues(BlockExport *exp, BlockExportQueues *info);
void blk_exp_queues_clear(BlockExportQueues *info);

/* Begin removing exp.  Returns 0 (removal in progress: the removed notifier fires when done,
 * or the remove-failed notifier if a safe removal gives up because the file stays open) or
 * -errno (errp set). */
int blk_exp_request_remove(BlockExport *exp, bool force, GError **errp);
/* Forcibly remove every export and wait until they are gone (exit path). */
void blk_exp_close_all(void);

void blk_exp_ref(BlockExport *exp);
void blk_exp_unref(BlockExport *exp);

/* For drivers: shutdown finished (main thread).  reason as for the notifier. */
void blk_exp_shutdown_done(BlockExport *exp, const char *reason);
/* For drivers: a safe removal that request_shutdown accepted did not happen; the export stays
 * and may be removed again later (main thread). */
void blk_exp_remove_failed(BlockExport *exp, const GError *err);

extern const BlockExportDriver blk_exp_fuse;

#endif
