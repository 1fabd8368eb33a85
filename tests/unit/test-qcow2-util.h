/* test-qcow2-util.h - helpers shared by the qcow2 unit tests: run block-layer coroutine calls from
 * the main thread, create/open images, random write/zero/discard workloads mirrored into a
 * raw reference file, and qemu-img as the oracle. */
#ifndef TESTS_QCOW2_UTIL_H
#define TESTS_QCOW2_UTIL_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include "block/aio.h"
#include "block/block.h"
#include "block/util.h"

/* Run a shell command; returns its exit status, output in *out if given. */
static inline int qt_sh(char **out, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static inline int qt_sh(char **out, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *cmd = NULL;
    char *argv[] = { (char *)"/bin/sh", (char *)"-c", NULL, NULL };
    g_autofree char *o = NULL, *e = NULL;
    int status = -1;
    GError *err = NULL;

    va_start(ap, fmt);
    cmd = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    argv[2] = cmd;
    if (!g_spawn_sync(NULL, argv, NULL, 0, NULL, NULL, &o, &e, &status, &err)) {
        g_printerr("spawn: %s\n", err->message);
        g_error_free(err);
        return -1;
    }
    if (out) {
        g_free(*out);   /* callers reuse one g_autofree variable for several commands */
        *out = g_strconcat(o ? o : "", e ? e : "", NULL);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static inline bool qt_have_qemu_img(void)
{
    return qt_sh(NULL, "command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") == 0;
}

/* Dump the whole image through blkfuse into a raw file. */
static inline int qt_dump(const char *img, const char *opts_str, const char *out)
{
    g_autoptr(GError) err = NULL;
    BlockOptions *opts = block_options_new();
    BlockDriverState *bs;
    int64_t len, pos = 0;
    uint8_t *buf;
    int fd, ret = 0;

    if (opts_str && !block_options_parse(opts, opts_str, &err)) {
        g_printerr("%s\n", err->message);
        return -1;
    }
    bs = bdrv_open(img, NULL, opts, 0, &err);
    g_hash_table_unref(opts);
    if (!bs) {
        g_printerr("open %s: %s\n", img, err->message);
        return -1;
    }
    len = bdrv_getlength(bs);
    fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    buf = blk_blockalign(1 << 20);
    while (pos < len) {
        int64_t n = MIN(len - pos, 1 << 20);
        ret = bdrv_pread(bs, pos, n, buf);
        if (ret < 0) {
            g_printerr("read %s at %" G_GINT64_FORMAT ": %s\n", img, pos, g_strerror(-ret));
            break;
        }
        if (pwrite(fd, buf, n, pos) != n) {
            ret = -EIO;
            break;
        }
        pos += n;
    }
    if (ftruncate(fd, len) < 0) {
        ret = -EIO;
    }
    close(fd);
    blk_vfree(buf);
    bdrv_unref(bs);
    return ret;
}

/* Random writes (1 B .. max_len), zero writes and discards, mirrored into the raw file ref.
 * Returns 0 or the first error. */
static inline int qt_random_io(BlockDriverState *bs, const char *ref, guint32 seed, int nops,
                               int64_t max_len)
{
    GRand *r = g_rand_new_with_seed(seed);
    int64_t size = bdrv_getlength(bs);
    int fd = open(ref, O_RDWR);
    uint8_t *buf = blk_blockalign(max_len), *zero = g_malloc0(max_len);
    int ret = 0;

    for (int i = 0; i < nops && ret == 0; i++) {
        int kind = g_rand_int_range(r, 0, 10);
        int64_t len = g_rand_int_range(r, 0, 4) == 0 ? g_rand_int_range(r, 1, 600)
                                                    : g_rand_int_range(r, 1, max_len + 1);
        int64_t off = g_rand_int_range(r, 0, size);
        if (g_rand_boolean(r)) {
            off = ROUND_DOWN(off, 4096);
            len = MAX(ROUND_DOWN(len, 4096), 4096);
        }
        len = MIN(len, size - off);
        if (len <= 0) {
            continue;
        }
        if (kind < 7) {
            guint8 v = g_rand_int(r);
            for (int64_t j = 0; j < len; j++) {
                buf[j] = v + j * 7 + (j >> 9);
            }
            ret = bdrv_pwrite(bs, off, len, buf);
            if (pwrite(fd, buf, len, off) != len) {
                ret = -EIO;
            }
        } else if (kind < 9) {
            ret = bdrv_pwrite_zeroes(bs, off, len, kind == 8 ? BDRV_REQ_MAY_UNMAP : 0);
            if (pwrite(fd, zero, len, off) != len) {
                ret = -EIO;
            }
        } else {
            ret = bdrv_pdiscard(bs, off, len);
            if (pwrite(fd, zero, len, off) != len) {
                ret = -EIO;
            }
        }
        if (ret == 0 && g_rand_int_range(r, 0, 20) == 0) {
            ret = bdrv_flush(bs);
        }
        if (ret < 0) {
            g_printerr("op %d kind %d at %" G_GINT64_FORMAT "+%" G_GINT64_FORMAT ": %s\n", i,
                       kind, off, len, g_strerror(-ret));
        }
    }
    close(fd);
    blk_vfree(buf);
    g_free(zero);
    g_rand_free(r);
    return ret;
}

#endif
