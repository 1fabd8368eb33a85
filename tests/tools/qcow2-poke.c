/* qcow2-poke.c - read and patch single fields of a qcow2 image, to build damaged images for
 * tests (qcow2-check.bats).
 *
 * Usage: qcow2-poke IMAGE COMMAND [ARG]...
 *
 * Values are decimal or 0x-hex; a value to set may also be +N, -N (added to the current
 * value) or |N, &N, ^N (bit operations on it).  Every command prints the value it read, or
 * the value it wrote.  Cluster indices (CI) and offsets are positions in the image file.
 *
 *   header FIELD [VALUE]     a header field: magic version backing_file_offset
 *                            backing_file_size cluster_bits size crypt_method l1_size
 *                            l1_table_offset refcount_table_offset refcount_table_clusters
 *                            nb_snapshots snapshots_offset incompat compat autoclear
 *                            refcount_order header_length
 *   l1 I [VALUE]             entry I of the active L1 table
 *   l2 L1I J [VALUE]         entry J of the L2 table that L1 entry L1I points to
 *   l2bitmap L1I J [VALUE]   the subcluster bitmap of that entry (extended L2)
 *   reftable I [VALUE]       refcount table entry I
 *   refcount CI [VALUE]      refcount of host cluster CI
 *   snap N FIELD [VALUE]     l1_table_offset or l1_size of snapshot N (from 0)
 *   snapl1 N I [VALUE]       entry I of snapshot N's L1 table
 *   scramble SEED COUNT      damage COUNT random bytes (a random value, or one bit flipped)
 *                            in host clusters 1-4, 7 and 8 (the metadata of a small image
 *                            made by qemu-img: refcount table and block, L1, L2, snapshot
 *                            tables), mostly in their first 192 bytes, the same ones for the
 *                            same SEED; prints each as OFFSET:VALUE
 *
 * Exit status: 0 done, 1 the image lacks what was asked for, 2 usage error.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OFFSET_MASK 0x00fffffffffffe00ULL

static const char *prog = "qcow2-poke";

#include "tool-util.h"

static int fd;

static const struct { const char *name; int off, size; } header[] = {
    { "magic", 0, 4 }, { "version", 4, 4 }, { "backing_file_offset", 8, 8 },
    { "backing_file_size", 16, 4 }, { "cluster_bits", 20, 4 }, { "size", 24, 8 },
    { "crypt_method", 32, 4 }, { "l1_size", 36, 4 }, { "l1_table_offset", 40, 8 },
    { "refcount_table_offset", 48, 8 }, { "refcount_table_clusters", 56, 4 },
    { "nb_snapshots", 60, 4 }, { "snapshots_offset", 64, 8 }, { "incompat", 72, 8 },
    { "compat", 80, 8 }, { "autoclear", 88, 8 }, { "refcount_order", 96, 4 },
    { "header_length", 100, 4 },
};

/* Big-endian unsigned of size bytes at off (zeros past the end of the file). */
static uint64_t get(uint64_t off, int size)
{
    uint8_t b[8] = { 0 };
    uint64_t v = 0;

    if (pread(fd, b, size, off) < 0) {
        die(1, "read at %" PRIu64 ": %s", off, strerror(errno));
    }
    for (int i = 0; i < size; i++) {
        v = v << 8 | b[i];
    }
    return v;
}

static void put(uint64_t off, int size, uint64_t v)
{
    uint8_t b[8];

    for (int i = size - 1; i >= 0; i--) {
        b[i] = v & 0xff;
        v >>= 8;
    }
    if (pwrite(fd, b, size, off) != size) {
        die(1, "write at %" PRIu64 ": %s", off, strerror(errno));
    }
}

static uint64_t number(const char *s)
{
    char *end;
    uint64_t v;

    errno = 0;
    v = strtoull(s, &end, 0);
    if (!*s || *end || errno) {
        die(2, "not a number: '%s'", s);
    }
    return v;
}

static uint64_t new_value(const char *s, uint64_t old)
{
    switch (s[0]) {
    case '+': return old + number(s + 1);
    case '-': return old - number(s + 1);
    case '|': return old | number(s + 1);
    case '&': return old & number(s + 1);
    case '^': return old ^ number(s + 1);
    default: return number(s);
    }
}

/* Print the field (size bytes at off), or set it from value first. */
static void access_field(uint64_t off, int size, const char *value)
{
    uint64_t v = get(off, size);

    if (value) {
        v = new_value(value, v);
        if (size < 8) {
            v &= (1ULL << (size * 8)) - 1;
        }
        put(off, size, v);
    }
    printf("%" PRIu64 "\n", v);
}

static uint64_t hdr(const char *name)
{
    for (size_t i = 0; i < sizeof(header) / sizeof(header[0]); i++) {
        if (!strcmp(header[i].name, name)) {
            return get(header[i].off, header[i].size);
        }
    }
    die(2, "unknown header field '%s'", name);
    return 0;
}

static int l2_entry_size(void)
{
    return hdr("version") >= 3 && (hdr("incompat") & 16) ? 16 : 8;
}

static uint64_t l2_offset(uint64_t l1i)
{
    uint64_t off = get(hdr("l1_table_offset") + 8 * l1i, 8) & OFFSET_MASK;

    if (!off) {
        die(1, "L1 entry %" PRIu64 " is unallocated", l1i);
    }
    return off;
}

/* Position of snapshot n's entry in the snapshot table. */
static uint64_t snapshot(uint64_t n)
{
    uint64_t pos = hdr("snapshots_offset");

    for (uint64_t i = 0; i < hdr("nb_snapshots"); i++) {
        uint64_t id_len = get(pos + 12, 2), name_len = get(pos + 14, 2);
        uint64_t extra = get(pos + 36, 4);

        if (i == n) {
            return pos;
        }
        pos += (40 + extra + id_len + name_len + 7) & ~7ULL;
    }
    die(1, "no snapshot %" PRIu64, n);
    return 0;
}

static void refcount(uint64_t ci, const char *value)
{
    uint64_t order = hdr("version") >= 3 ? hdr("refcount_order") : 4;
    uint64_t bits = 1ULL << order;
    uint64_t per_block = (1ULL << hdr("cluster_bits")) * 8 / bits;
    uint64_t rb = get(hdr("refcount_table_offset") + 8 * (ci / per_block), 8) & ~0x1ffULL;
    uint64_t bitpos = (ci % per_block) * bits;

    if (!rb) {
        die(1, "cluster %" PRIu64 " has no refcount block", ci);
    }
    if (bits >= 8) {
        access_field(rb + bitpos / 8, bits / 8, value);
    } else {
        uint64_t byte = get(rb + bitpos / 8, 1), shift = bitpos % 8, mask = (1U << bits) - 1;
        uint64_t v = (byte >> shift) & mask;

        if (value) {
            v = new_value(value, v) & mask;
            put(rb + bitpos / 8, 1, (byte & ~(mask << shift)) | (v << shift));
        }
        printf("%" PRIu64 "\n", v);
    }
}

static void scramble(uint64_t seed, uint64_t count)
{
    /* xorshift64* (tool-util.h) from this state: a fixed sequence for a seed, the same on
     * every machine */
    Rng x = { seed * 0x9e3779b97f4a7c15ULL + 1 };
    uint64_t cs = 1ULL << hdr("cluster_bits");
    off_t len = lseek(fd, 0, SEEK_END);

    for (uint64_t i = 0; i < count; i++) {
        uint64_t r = rng_next(&x);
        static const uint64_t clusters[8] = { 1, 2, 3, 4, 4, 4, 7, 8 };
        uint64_t cluster = clusters[r % 8];
        /* most hits near the start of a table, where the entries in use are */
        uint64_t pos = (rng_next(&x) % 4) ? rng_next(&x) % 192 : rng_next(&x) % cs;
        uint64_t off = cluster * cs + pos, v;

        if ((off_t)off >= len) {
            continue;
        }
        v = get(off, 1);
        v = (rng_next(&x) & 1) ? rng_next(&x) & 0xff : v ^ (1U << (rng_next(&x) % 8));
        put(off, 1, v);
        printf("%" PRIu64 ":%" PRIu64 "\n", off, v);
    }
}

int main(int argc, char **argv)
{
    const char *cmd;
    char **a;
    int n;

    if (argc < 3 || !strcmp(argv[1], "--help")) {
        fprintf(argc < 3 ? stderr : stdout, "Usage: qcow2-poke IMAGE COMMAND [ARG]... "
                "(see the comment at the top of tests/tools/qcow2-poke.c)\n");
        return argc < 3 ? 2 : 0;
    }
    fd = open(argv[1], O_RDWR);
    if (fd < 0) {
        die(1, "%s: %s", argv[1], strerror(errno));
    }
    cmd = argv[2];
    a = argv + 3;
    n = argc - 3;
#define ARG(i) (n > (i) ? a[i] : NULL)
#define NEED(k) do { if (n < (k)) die(2, "%s needs %d arguments", cmd, k); } while (0)
    if (!strcmp(cmd, "header")) {
        NEED(1);
        for (size_t i = 0; i < sizeof(header) / sizeof(header[0]); i++) {
            if (!strcmp(header[i].name, a[0])) {
                access_field(header[i].off, header[i].size, ARG(1));
                return 0;
            }
        }
        die(2, "unknown header field '%s'", a[0]);
    } else if (!strcmp(cmd, "l1")) {
        NEED(1);
        access_field(hdr("l1_table_offset") + 8 * number(a[0]), 8, ARG(1));
    } else if (!strcmp(cmd, "l2")) {
        NEED(2);
        access_field(l2_offset(number(a[0])) + l2_entry_size() * number(a[1]), 8, ARG(2));
    } else if (!strcmp(cmd, "l2bitmap")) {
        NEED(2);
        access_field(l2_offset(number(a[0])) + 16 * number(a[1]) + 8, 8, ARG(2));
    } else if (!strcmp(cmd, "reftable")) {
        NEED(1);
        access_field(hdr("refcount_table_offset") + 8 * number(a[0]), 8, ARG(1));
    } else if (!strcmp(cmd, "refcount")) {
        NEED(1);
        refcount(number(a[0]), ARG(1));
    } else if (!strcmp(cmd, "snap")) {
        uint64_t pos;
        NEED(2);
        pos = snapshot(number(a[0]));
        if (!strcmp(a[1], "l1_table_offset")) {
            access_field(pos, 8, ARG(2));
        } else if (!strcmp(a[1], "l1_size")) {
            access_field(pos + 8, 4, ARG(2));
        } else {
            die(2, "unknown snapshot field '%s'", a[1]);
        }
    } else if (!strcmp(cmd, "snapl1")) {
        NEED(2);
        access_field(get(snapshot(number(a[0])), 8) + 8 * number(a[1]), 8, ARG(2));
    } else if (!strcmp(cmd, "scramble")) {
        NEED(2);
        scramble(number(a[0]), number(a[1]));
    } else {
        die(2, "unknown command '%s'", cmd);
    }
    return 0;
}
