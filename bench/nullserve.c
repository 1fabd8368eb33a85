/*
 * nullserve.c - a FUSE file that does no I/O, served by libfuse's own loop: the ceiling of `make bench`.
 *
 * Reads return zeros from one static buffer, writes are acknowledged and dropped, flush and fsync
 * succeed.  What is left is the cost of the FUSE round trip through libfuse's multi-threaded loop
 * (one cloned /dev/fuse descriptor per thread), which no image export can beat while it answers in
 * user space.  blkfuse's own null:SIZE export is the other half of the ceiling (bench/jobs.sh).
 *
 *   nullserve [-s SIZE] MOUNTPOINT      SIZE in bytes or with a K/M/G/T suffix (default 1G)
 *
 * The mountpoint is a regular file, as with blkfuse.  Runs in the foreground until unmounted
 * (fusermount3 -u MOUNTPOINT) or sent SIGTERM/SIGINT.
 */
#define FUSE_USE_VERSION 312   /* fuse_loop_cfg_*(): libfuse 3.12 and later */
#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NULLSERVE_MAX_IO (1U << 20)     /* largest read or write, the same as blkfuse's */

static char zero_buf[NULLSERVE_MAX_IO];
static uint64_t file_size = 1ULL << 30;

static void ns_init(void *userdata, struct fuse_conn_info *conn)
{
    conn->max_write = NULLSERVE_MAX_IO;
    conn->max_read = NULLSERVE_MAX_IO;  /* equals the max_read mount option below */
}

static void ns_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct stat st;

    if (ino != FUSE_ROOT_ID) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    memset(&st, 0, sizeof(st));
    st.st_ino = ino;
    st.st_mode = S_IFREG | 0600;
    st.st_nlink = 1;
    st.st_uid = getuid();
    st.st_gid = getgid();
    st.st_size = (off_t)file_size;
    st.st_blksize = 4096;
    fuse_reply_attr(req, &st, 3600.0);
}

static void ns_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fi->direct_io = 1;                  /* every read and write reaches us, like an O_DIRECT job */
    fi->keep_cache = 0;
    fuse_reply_open(req, fi);
}

static void ns_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    uint64_t pos = (uint64_t)off;

    if (pos >= file_size) {
        size = 0;
    } else if (size > file_size - pos) {
        size = (size_t)(file_size - pos);
    }
    if (size > sizeof(zero_buf)) {
        size = sizeof(zero_buf);
    }
    fuse_reply_buf(req, zero_buf, size);
}

static void ns_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    fuse_reply_write(req, size);
}

static void ns_ok(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fuse_reply_err(req, 0);
}

static void ns_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops ns_ops = {
    .init    = ns_init,
    .getattr = ns_getattr,
    .open    = ns_open,
    .read    = ns_read,
    .write   = ns_write,
    .flush   = ns_ok,
    .release = ns_ok,
    .fsync   = ns_fsync,
};

/* SIZE with an optional K/M/G/T suffix (powers of 1024); 0 on a malformed or zero size. */
static uint64_t parse_size(const char *s)
{
    char *end;
    unsigned long long v;
    int shift = 0;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s) {
        return 0;
    }
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': shift = 10; break;
    case 'm': case 'M': shift = 20; break;
    case 'g': case 'G': shift = 30; break;
    case 't': case 'T': shift = 40; break;
    default: return 0;
    }
    if (*end && end[1] != '\0') {
        return 0;
    }
    if (shift && v > (UINT64_MAX >> shift)) {
        return 0;
    }
    return (uint64_t)v << shift;
}

static int usage(void)
{
    fprintf(stderr, "usage: nullserve [-s SIZE] MOUNTPOINT\n");
    return 2;
}

int main(int argc, char **argv)
{
    char *fuse_argv[] = { argv[0], "-o", "max_read=1048576,fsname=nullserve,subtype=nullserve", NULL };
    struct fuse_args args = FUSE_ARGS_INIT(3, fuse_argv);
    struct fuse_loop_config *cfg;
    struct fuse_session *se;
    const char *mnt;
    int opt, ret;

    while ((opt = getopt(argc, argv, "s:h")) != -1) {
        switch (opt) {
        case 's':
            file_size = parse_size(optarg);
            if (!file_size) {
                fprintf(stderr, "nullserve: bad size '%s' (a number with K, M, G or T)\n", optarg);
                return 2;
            }
            break;
        default:
            return usage();
        }
    }
    if (optind != argc - 1) {
        return usage();
    }
    mnt = argv[optind];

    se = fuse_session_new(&args, &ns_ops, sizeof(ns_ops), NULL);
    if (!se) {
        fprintf(stderr, "nullserve: cannot create the FUSE session\n");
        return 1;
    }
    if (fuse_set_signal_handlers(se) != 0 || fuse_session_mount(se, mnt) != 0) {
        fprintf(stderr, "nullserve: cannot mount %s (is it an existing regular file?)\n", mnt);
        fuse_session_destroy(se);
        return 1;
    }
    cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(cfg, 1);
    fuse_loop_cfg_set_idle_threads(cfg, 16);
    ret = fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    return ret ? 1 : 0;
}
