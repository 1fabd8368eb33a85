/* rwstress.c - deterministic, seeded write/verify load for blkfuse's tests. */

/*
 * Usage:
 *   rwstress --file F --offset O --length L --seed S --ops N --depth D
 *            [--direct] [--block B] [--verify]
 *   rwstress --file F --offset O --length L --seed S --ops N
 *            --size-range MIN:MAX [--verify]
 *
 * Block mode (the default): with Linux AIO at queue depth D, writes N of the
 * B-byte blocks (default 4096) in [O, O+L), chosen by a seeded permutation so
 * that each block is written at most once, then fsyncs.  With --verify it
 * reads every written block back at depth D and compares.  --direct opens the
 * file with O_DIRECT.
 *
 * Size-range mode: N buffered pwrite()s of MIN..MAX bytes at random,
 * unaligned, non-overlapping offsets in [O, O+L), in increasing offset order;
 * then fsync and, with --verify, pread() each one back.
 *
 * A block's (or write's) contents depend only on the seed and its absolute
 * file offset, so running the same command against a reference copy of an
 * image gives a byte-identical file.  Sizes accept k, M, G suffixes (1024).
 *
 * Exit status: 0 on success, 1 on an I/O error or mismatch (the message
 * names the file offset), 2 on a usage error.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* O_DIRECT */
#endif

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libaio.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *prog = "rwstress";

#include "tool-util.h"

/* --- pseudo-random numbers ------------------------------------------------ */

/* Uniform-enough value in [0, n) for n > 0. */
static uint64_t rng_below(Rng *r, uint64_t n)
{
    return rng_next(r) % n;
}

/* Contents of LEN bytes at absolute file offset OFF: a function of (seed, off). */
static void fill(uint8_t *buf, size_t len, uint64_t seed, uint64_t off)
{
    Rng r;
    size_t i;

    rng_init(&r, seed ^ splitmix64(off + 1));
    for (i = 0; i + 8 <= len; i += 8) {
        uint64_t v = rng_next(&r);
        memcpy(buf + i, &v, 8);
    }
    if (i < len) {
        uint64_t v = rng_next(&r);
        memcpy(buf + i, &v, len - i);
    }
}

/* --- options ---------------------------------------------------------------- */

typedef struct {
    const char *file;
    uint64_t offset, length, seed, ops;
    unsigned depth;
    uint64_t block;
    bool direct, verify, have_range;
    uint64_t range_min, range_max;
} Opts;

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: %s --file F --offset O --length L --seed S --ops N --depth D\n"
            "          [--direct] [--block B] [--verify]\n"
            "       %s --file F --offset O --length L --seed S --ops N\n"
            "          --size-range MIN:MAX [--verify]\n",
            prog, prog);
}

static void parse_args(int argc, char **argv, Opts *o)
{
    static const struct option longopts[] = {
        { "file", required_argument, NULL, 'f' },
        { "offset", required_argument, NULL, 'o' },
        { "length", required_argument, NULL, 'l' },
        { "seed", required_argument, NULL, 's' },
        { "ops", required_argument, NULL, 'n' },
        { "depth", required_argument, NULL, 'd' },
        { "block", required_argument, NULL, 'b' },
        { "direct", no_argument, NULL, 'D' },
        { "verify", no_argument, NULL, 'V' },
        { "size-range", required_argument, NULL, 'r' },
        { "help", no_argument, NULL, 'h' },
        { 0 }
    };
    bool have_len = false, have_ops = false;
    int c;
    char *colon;

    *o = (Opts){ .depth = 1, .block = 4096 };
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'f': o->file = optarg; break;
        case 'o': o->offset = parse_size("offset", optarg, UINT64_MAX); break;
        case 'l': o->length = parse_size("length", optarg, UINT64_MAX); have_len = true; break;
        case 's': o->seed = parse_size("seed", optarg, UINT64_MAX); break;
        case 'n': o->ops = parse_size("ops", optarg, UINT64_MAX); have_ops = true; break;
        case 'd': o->depth = parse_size("depth", optarg, UINT64_MAX); break;
        case 'b': o->block = parse_size("block", optarg, UINT64_MAX); break;
        case 'D': o->direct = true; break;
        case 'V': o->verify = true; break;
        case 'r':
            colon = strchr(optarg, ':');
            if (!colon) {
                die(2, "--size-range needs MIN:MAX, got '%s'", optarg);
            }
            *colon = '\0';
            o->range_min = parse_size("size-range minimum", optarg, UINT64_MAX);
            o->range_max = parse_size("size-range maximum", colon + 1, UINT64_MAX);
            o->have_range = true;
            break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc) {
        die(2, "unexpected argument '%s'", argv[optind]);
    }
    if (!o->file || !have_len || !have_ops) {
        usage(stderr);
        die(2, "--file, --length and --ops are required");
    }
    if (o->depth < 1 || o->depth > 1024) {
        die(2, "--depth must be 1..1024");
    }
    if (o->block < 1 || o->block > (64u << 20)) {
        die(2, "--block must be 1..64M");
    }
    if (o->have_range) {
        if (o->range_min < 1 || o->range_min > o->range_max || o->range_max > (64u << 20)) {
            die(2, "--size-range needs 1 <= MIN <= MAX <= 64M");
        }
        if (o->direct) {
            die(2, "--size-range does buffered I/O; it does not take --direct");
        }
    }
}

/* --- block mode: Linux AIO ------------------------------------------------ */

typedef struct {
    struct iocb iocb;
    uint8_t *buf;
    uint64_t off;
} Slot;

/*
 * Run NOPS block-sized I/Os of kind OPCODE (IO_CMD_PWRITE or IO_CMD_PREAD) at
 * offsets OFFS[] with at most DEPTH in flight.  Writes fill their buffers
 * first; reads are compared when they complete.  Dies on any failure.
 */
static void run_aio(const Opts *o, int fd, const uint64_t *offs, uint64_t nops, int opcode)
{
    io_context_t ctx = 0;
    Slot *slots = calloc(o->depth, sizeof(*slots));
    Slot **free_slots = calloc(o->depth, sizeof(*free_slots));
    struct io_event *events = calloc(o->depth, sizeof(*events));
    uint8_t *expect = NULL;
    unsigned nfree = o->depth;
    uint64_t next = 0, done = 0;
    int ret;

    if (!slots || !free_slots || !events) {
        die(1, "out of memory");
    }
    if (posix_memalign((void **)&expect, 4096, o->block)) {
        die(1, "out of memory");
    }
    for (unsigned i = 0; i < o->depth; i++) {
        if (posix_memalign((void **)&slots[i].buf, 4096, o->block)) {
            die(1, "out of memory");
        }
        free_slots[i] = &slots[i];
    }
    ret = io_setup(o->depth, &ctx);
    if (ret < 0) {
        die(1, "io_setup(%u): %s", o->depth, strerror(-ret));
    }

    while (done < nops) {
        /* Fill the queue. */
        while (nfree > 0 && next < nops) {
            Slot *s = free_slots[--nfree];
            struct iocb *cb = &s->iocb;

            s->off = offs[next++];
            if (opcode == IO_CMD_PWRITE) {
                fill(s->buf, o->block, o->seed, s->off);
                io_prep_pwrite(cb, fd, s->buf, o->block, s->off);
            } else {
                memset(s->buf, 0xa5, o->block);
                io_prep_pread(cb, fd, s->buf, o->block, s->off);
            }
            cb->data = s;
            ret = io_submit(ctx, 1, &cb);
            if (ret != 1) {
                die(1, "io_submit %s at offset %" PRIu64 ": %s",
                    opcode == IO_CMD_PWRITE ? "write" : "read", s->off,
                    ret < 0 ? strerror(-ret) : "not submitted");
            }
        }
        /* Reap at least one. */
        ret = io_getevents(ctx, 1, o->depth, events, NULL);
        if (ret < 0) {
            if (ret == -EINTR) {
                continue;
            }
            die(1, "io_getevents: %s", strerror(-ret));
        }
        for (int i = 0; i < ret; i++) {
            Slot *s = events[i].data;
            long res = (long)events[i].res;
            const char *what = opcode == IO_CMD_PWRITE ? "write" : "read";

            if (res < 0) {
                die(1, "%s of %" PRIu64 " bytes at offset %" PRIu64 " failed: %s",
                    what, o->block, s->off, strerror((int)-res));
            }
            if ((uint64_t)res != o->block) {
                die(1, "short %s at offset %" PRIu64 ": %ld of %" PRIu64 " bytes",
                    what, s->off, res, o->block);
            }
            if (opcode == IO_CMD_PREAD) {
                fill(expect, o->block, o->seed, s->off);
                if (memcmp(expect, s->buf, o->block) != 0) {
                    uint64_t j = 0;
                    while (expect[j] == s->buf[j]) {
                        j++;
                    }
                    die(1, "mismatch at offset %" PRIu64 " (block at offset %" PRIu64
                        "): read 0x%02x, expected 0x%02x",
                        s->off + j, s->off, s->buf[j], expect[j]);
                }
            }
            free_slots[nfree++] = s;
            done++;
        }
    }

    io_destroy(ctx);
    for (unsigned i = 0; i < o->depth; i++) {
        free(slots[i].buf);
    }
    free(slots);
    free(free_slots);
    free(events);
    free(expect);
}

static void block_mode(const Opts *o, int fd)
{
    uint64_t nblocks = o->length / o->block;
    uint64_t *perm;
    Rng r;

    if (o->ops > nblocks) {
        die(2, "--ops %" PRIu64 " exceeds the %" PRIu64 " blocks of %" PRIu64
            " bytes in the range", o->ops, nblocks, o->block);
    }
    perm = malloc((nblocks ? nblocks : 1) * sizeof(*perm));
    if (!perm) {
        die(1, "out of memory");
    }
    /* Partial Fisher-Yates: the first N entries are a seeded random choice. */
    for (uint64_t i = 0; i < nblocks; i++) {
        perm[i] = o->offset + i * o->block;
    }
    rng_init(&r, o->seed);
    for (uint64_t i = 0; i < o->ops; i++) {
        uint64_t j = i + rng_below(&r, nblocks - i);
        uint64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }

    run_aio(o, fd, perm, o->ops, IO_CMD_PWRITE);
    if (fsync(fd) < 0) {
        die(1, "fsync %s: %s", o->file, strerror(errno));
    }
    if (o->verify) {
        run_aio(o, fd, perm, o->ops, IO_CMD_PREAD);
    }
    free(perm);
}

/* --- size-range mode: buffered, unaligned --------------------------------- */

typedef struct {
    uint64_t off, len;
} Extent;

static void range_mode(const Opts *o, int fd)
{
    Extent *ext = calloc(o->ops ? o->ops : 1, sizeof(*ext));
    uint8_t *buf = malloc(o->range_max), *got = malloc(o->range_max);
    uint64_t pos = o->offset, end = o->offset + o->length, n = 0;
    /* Spread the writes out: the average gap leaves room for all of them. */
    uint64_t avg = (o->range_min + o->range_max) / 2;
    uint64_t slack = o->ops && o->length / o->ops > avg ? o->length / o->ops - avg : 0;
    Rng r;

    if (!ext || !buf || !got) {
        die(1, "out of memory");
    }
    rng_init(&r, o->seed);
    for (n = 0; n < o->ops; n++) {
        uint64_t gap = slack ? rng_below(&r, slack + 1) : rng_below(&r, 2);
        uint64_t len = o->range_min + rng_below(&r, o->range_max - o->range_min + 1);

        if (pos + gap + len > end) {
            break;
        }
        ext[n] = (Extent){ pos + gap, len };
        pos += gap + len;
    }
    if (n < o->ops) {
        die(2, "only %" PRIu64 " of %" PRIu64 " writes of %" PRIu64 "..%" PRIu64
            " bytes fit in the range", n, o->ops, o->range_min, o->range_max);
    }

    for (uint64_t i = 0; i < n; i++) {
        ssize_t ret;

        fill(buf, ext[i].len, o->seed, ext[i].off);
        ret = pwrite(fd, buf, ext[i].len, ext[i].off);
        if (ret < 0) {
            die(1, "write of %" PRIu64 " bytes at offset %" PRIu64 " failed: %s",
                ext[i].len, ext[i].off, strerror(errno));
        }
        if ((uint64_t)ret != ext[i].len) {
            die(1, "short write at offset %" PRIu64 ": %zd of %" PRIu64 " bytes",
                ext[i].off, ret, ext[i].len);
        }
    }
    if (fsync(fd) < 0) {
        die(1, "fsync %s: %s", o->file, strerror(errno));
    }
    for (uint64_t i = 0; o->verify && i < n; i++) {
        ssize_t ret;

        fill(buf, ext[i].len, o->seed, ext[i].off);
        ret = pread(fd, got, ext[i].len, ext[i].off);
        if (ret < 0) {
            die(1, "read of %" PRIu64 " bytes at offset %" PRIu64 " failed: %s",
                ext[i].len, ext[i].off, strerror(errno));
        }
        if ((uint64_t)ret != ext[i].len) {
            die(1, "short read at offset %" PRIu64 ": %zd of %" PRIu64 " bytes",
                ext[i].off, ret, ext[i].len);
        }
        if (memcmp(buf, got, ext[i].len) != 0) {
            uint64_t j = 0;
            while (buf[j] == got[j]) {
                j++;
            }
            die(1, "mismatch at offset %" PRIu64 ": read 0x%02x, expected 0x%02x",
                ext[i].off + j, got[j], buf[j]);
        }
    }
    free(ext);
    free(buf);
    free(got);
}

int main(int argc, char **argv)
{
    Opts o;
    int fd;

    parse_args(argc, argv, &o);
    fd = open(o.file, O_RDWR | (o.direct ? O_DIRECT : 0));
    if (fd < 0) {
        die(1, "cannot open %s: %s", o.file, strerror(errno));
    }
    if (o.have_range) {
        range_mode(&o, fd);
    } else {
        block_mode(&o, fd);
    }
    if (close(fd) < 0) {
        die(1, "close %s: %s", o.file, strerror(errno));
    }
    return 0;
}
