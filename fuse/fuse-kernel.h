/* fuse-kernel.h - the kernel's FUSE protocol: <linux/fuse.h> plus the newer definitions that
 * Debian 12's header (protocol 7.38) lacks.  Each is guarded, so a newer header wins.
 *
 * Values from the kernel's include/uapi/linux/fuse.h (7.40: passthrough; 7.42: io_uring).
 */
#ifndef FUSE_FUSE_KERNEL_H
#define FUSE_FUSE_KERNEL_H

#include <stdint.h>
#include <linux/fuse.h>
#include <sys/ioctl.h>

/* --- INIT flags (the upper 32 bits travel in fuse_init_in/out.flags2, with FUSE_INIT_EXT) --- */
#ifndef FUSE_DIRECT_IO_ALLOW_MMAP
#define FUSE_DIRECT_IO_ALLOW_MMAP   (1ULL << 36)    /* 7.39 */
#endif
#ifndef FUSE_PASSTHROUGH
#define FUSE_PASSTHROUGH            (1ULL << 37)    /* 7.40 */
#endif
#ifndef FUSE_NO_EXPORT_SUPPORT
#define FUSE_NO_EXPORT_SUPPORT      (1ULL << 38)
#endif
#ifndef FUSE_HAS_RESEND
#define FUSE_HAS_RESEND             (1ULL << 39)
#endif
#ifndef FUSE_ALLOW_IDMAP
#define FUSE_ALLOW_IDMAP            (1ULL << 40)
#endif
#ifndef FUSE_OVER_IO_URING
#define FUSE_OVER_IO_URING          (1ULL << 41)    /* 7.42 */
#endif

/* --- OPEN reply flags --- */
#ifndef FOPEN_PARALLEL_DIRECT_WRITES
#define FOPEN_PARALLEL_DIRECT_WRITES (1 << 6)
#endif
#ifndef FOPEN_PASSTHROUGH
#define FOPEN_PASSTHROUGH           (1 << 7)        /* 7.40: backing_id in fuse_open_out */
#endif

/* --- INIT reply, as of 7.40 (7.38's header calls max_stack_depth unused[0]) --- */
struct blkfuse_init_out {
    uint32_t major;
    uint32_t minor;
    uint32_t max_readahead;
    uint32_t flags;
    uint16_t max_background;
    uint16_t congestion_threshold;
    uint32_t max_write;
    uint32_t time_gran;
    uint16_t max_pages;
    uint16_t map_alignment;
    uint32_t flags2;
    uint32_t max_stack_depth;       /* 7.40, with FUSE_PASSTHROUGH */
    uint16_t request_timeout;       /* 7.43 */
    uint16_t unused[11];
};
_Static_assert(sizeof(struct blkfuse_init_out) == sizeof(struct fuse_init_out),
               "INIT reply layout");

/* --- OPEN reply, as of 7.40 (padding became backing_id) --- */
struct blkfuse_open_out {
    uint64_t fh;
    uint32_t open_flags;
    int32_t backing_id;             /* with FOPEN_PASSTHROUGH */
};
_Static_assert(sizeof(struct blkfuse_open_out) == sizeof(struct fuse_open_out),
               "OPEN reply layout");

/* --- passthrough backing files (7.40) --- */
#ifndef FUSE_DEV_IOC_BACKING_OPEN
struct fuse_backing_map {
    int32_t fd;
    uint32_t flags;
    uint64_t padding;
};
#define FUSE_DEV_IOC_MAGIC          229
#define FUSE_DEV_IOC_BACKING_OPEN   _IOW(FUSE_DEV_IOC_MAGIC, 1, struct fuse_backing_map)
#define FUSE_DEV_IOC_BACKING_CLOSE  _IOW(FUSE_DEV_IOC_MAGIC, 2, uint32_t)
#endif

/* --- FUSE-over-io_uring (7.42) --- */
#ifndef FUSE_URING_IN_OUT_HEADER_SZ
#define FUSE_URING_IN_OUT_HEADER_SZ 128
#define FUSE_URING_OP_IN_OUT_SZ     128

/* Part of fuse_uring_req_header: written by the kernel on fetch, by us on commit. */
struct fuse_uring_ent_in_out {
    uint64_t flags;
    uint64_t commit_id;             /* echo in fuse_uring_cmd_req.commit_id */
    uint32_t payload_sz;            /* bytes valid in the payload buffer, either direction */
    uint32_t padding;
    uint64_t reserved;
};

/* The header buffer of a ring entry (iov[0] of REGISTER; iov[1] is the payload buffer). */
struct fuse_uring_req_header {
    char in_out[FUSE_URING_IN_OUT_HEADER_SZ];  /* fuse_in_header / fuse_out_header */
    char op_in[FUSE_URING_OP_IN_OUT_SZ];       /* the op's fixed in argument */
    struct fuse_uring_ent_in_out ring_ent_in_out;
};

enum fuse_uring_cmd {
    FUSE_IO_URING_CMD_INVALID = 0,
    FUSE_IO_URING_CMD_REGISTER = 1,             /* register the entry, fetch a request */
    FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2,     /* commit a reply, fetch the next */
};

/* In the 80-byte command area of an SQE128. */
struct fuse_uring_cmd_req {
    uint64_t flags;
    uint64_t commit_id;
    uint16_t qid;
    uint8_t padding[6];
};
#endif

#endif
