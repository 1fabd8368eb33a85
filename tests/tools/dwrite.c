/* dwrite.c - one write(2) or one Linux AIO write, and what it returned, for blkfuse's tests. */

/*
 * Usage: dwrite [--direct] [--aio] [--fill BYTE] FILE OFFSET LENGTH
 *
 * Opens FILE write-only (with O_DIRECT if --direct), writes LENGTH bytes of BYTE (default 0x5a)
 * at OFFSET with one pwrite(2), or with one io_submit(2) of an IOCB_CMD_PWRITE (--aio), and
 * prints what the write returned: the byte count, or the errno name (EIO, ENOSPC, ...).  The
 * buffer is 4 KiB-aligned, as O_DIRECT wants.
 *
 * Exit status: 0 when the write returned anything (the answer is on stdout), 1 when the file
 * could not be opened or the AIO could not be set up, 2 on a usage error.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* O_DIRECT, strerrorname_np */
#endif

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libaio.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(void)
{
    fprintf(stderr, "usage: dwrite [--direct] [--aio] [--fill BYTE] FILE OFFSET LENGTH\n");
    exit(2);
}

static long long number(const char *s)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 0);
    if (errno || end == s || *end || v < 0) {
        fprintf(stderr, "dwrite: '%s' is not a number\n", s);
        exit(2);
    }
    return v;
}

static void print_result(long long ret)
{
    if (ret >= 0) {
        printf("%lld\n", ret);
    } else {
        const char *name = strerrorname_np(-ret);
        printf("%s\n", name ? name : "unknown errno");
    }
}

/* One AIO write, waited for; returns its result (bytes or -errno). */
static long long aio_write(int fd, void *buf, size_t len, long long off)
{
    io_context_t ctx = 0;
    struct iocb cb, *cbs[1] = { &cb };
    struct io_event ev;
    int ret;

    ret = io_setup(1, &ctx);
    if (ret < 0) {
        fprintf(stderr, "dwrite: io_setup: %s\n", strerror(-ret));
        exit(1);
    }
    io_prep_pwrite(&cb, fd, buf, len, off);
    ret = io_submit(ctx, 1, cbs);
    if (ret != 1) {
        io_destroy(ctx);
        return ret < 0 ? ret : -EIO;
    }
    do {
        ret = io_getevents(ctx, 1, 1, &ev, NULL);
    } while (ret == -EINTR);
    io_destroy(ctx);
    if (ret != 1) {
        fprintf(stderr, "dwrite: io_getevents: %s\n", strerror(-ret));
        exit(1);
    }
    return (long)ev.res;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "direct", no_argument, NULL, 'd' },
        { "aio", no_argument, NULL, 'a' },
        { "fill", required_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int flags = O_WRONLY | O_CLOEXEC, fill = 0x5a, c, fd;
    bool aio = false;
    long long off, len, ret;
    void *buf;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd': flags |= O_DIRECT; break;
        case 'a': aio = true; break;
        case 'f': fill = number(optarg) & 0xff; break;
        default: usage();
        }
    }
    if (argc - optind != 3) {
        usage();
    }
    off = number(argv[optind + 1]);
    len = number(argv[optind + 2]);
    if (posix_memalign(&buf, 4096, len ? len : 1)) {
        fprintf(stderr, "dwrite: out of memory\n");
        return 1;
    }
    memset(buf, fill, len);
    fd = open(argv[optind], flags);
    if (fd < 0) {
        fprintf(stderr, "dwrite: %s: %s\n", argv[optind], strerror(errno));
        return 1;
    }
    if (aio) {
        ret = aio_write(fd, buf, len, off);
    } else {
        ret = pwrite(fd, buf, len, off);
        if (ret < 0) {
            ret = -errno;
        }
    }
    print_result(ret);
    close(fd);
    free(buf);
    return 0;
}
