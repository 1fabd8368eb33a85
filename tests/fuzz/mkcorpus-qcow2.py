#!/usr/bin/env python3
"""mkcorpus-qcow2.py - write the seed corpus of the qcow2 fuzzer (tests/fuzz/fuzz-qcow2.c).

Usage: tests/fuzz/mkcorpus-qcow2.py [OUTDIR]   (default: tests/fuzz/corpus/qcow2)

Makes small qcow2 images with qemu-img and qemu-io (v2 and v3; 512-byte, 4k, 64k and 2M
clusters; refcount_bits 1 to 64; extended L2; lazy refcounts, dirty and corrupt bits; zlib and
zstd compressed clusters; backing file names with and without a format; internal snapshots; a
persistent bitmap; metadata preallocation) and turns each into fuzzer inputs in the harness's
layout: IMAGE | OPS | TRAILER.  Images larger than 8 KiB are stored in the sparse "QSPR"
encoding, so that a 2M-cluster image takes a few hundred bytes.  Each image gets a few op
scripts (writes and reads, zeroing and discards, truncation, read-only block status, concurrent
pairs) and trailer flags (read-only, backing file present, small caches, snapshot, yielding
requests).  The output is deterministic for a given qemu-img version, so re-running the script
only changes files when qemu-img's output changes.
"""
import os
import struct
import subprocess
import sys
import tempfile

OP_READ, OP_WRITE, OP_ZERO, OP_DISCARD, OP_FLUSH, OP_TRUNCATE, OP_STATUS, OP_PREALLOC, \
    OP_REOPEN = range(9)

F_READ_ONLY, F_BACKING, F_WRITETHRU, F_YIELD, F_SNAPSHOT, F_SMALL_L2, F_SMALL_RB = \
    (1 << i for i in range(7))


def op(kind, offset=0, length=0, aux=0, align=0, noclamp=False, pair=False, sectors=False):
    k = kind | (align << 4) | (0x40 if noclamp else 0) | (0x80 if pair else 0)
    ln = length | 0x8000 if sectors else length  # sectors: length counts 512-byte units
    return struct.pack(">BIHB", k, offset, ln, aux)


def sparse(data):
    """The QSPR encoding: runs of non-zero 512-byte blocks as (offset, length, bytes)."""
    out = bytearray(b"QSPR" + struct.pack(">I", len(data)))
    blk = 512
    pos = 0
    while pos < len(data):
        if not any(data[pos:pos + blk]):
            pos += blk
            continue
        start = pos
        while pos < len(data) and any(data[pos:pos + blk]) and pos - start < 32768:
            pos += blk
        chunk = data[start:min(pos, len(data))].rstrip(b"\0")
        out += struct.pack(">IH", start, len(chunk)) + chunk
    return bytes(out)


def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def qemu_io(img, *cmds, fmt="qcow2"):
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    run(*args, img)


def set_incompat(img, bits):
    with open(img, "r+b") as f:
        f.seek(72)
        v = struct.unpack(">Q", f.read(8))[0]
        f.seek(72)
        f.write(struct.pack(">Q", v | bits))


SCRIPTS = {
    # writes of every alignment, reads back, flush, reopen and read again
    "rw": [op(OP_WRITE, 0, 4096, 0x11), op(OP_WRITE, 70000, 3000, 0x22),
           op(OP_READ, 0, 65535), op(OP_WRITE, 1 << 20, 8, 0x33, sectors=True),
           op(OP_FLUSH), op(OP_REOPEN), op(OP_READ, 65536, 200, sectors=True),
           op(OP_STATUS, 0, 0x7fff, sectors=True)],
    # zero writes (with and without unmap), discards, truncation down and up
    "zero": [op(OP_WRITE, 512, 1024, 0x44), op(OP_ZERO, 0, 64, 1, sectors=True, align=3),
             op(OP_ZERO, 1000, 3000, 0), op(OP_DISCARD, 65536, 256, sectors=True, align=3),
             op(OP_TRUNCATE, 3 << 20, 0, 0), op(OP_WRITE, 0xffffffff, 4096, 0x55),
             op(OP_TRUNCATE, 0x700000, 0, 4), op(OP_PREALLOC, 0, 64, sectors=True),
             op(OP_READ, 0, 0x7fff, sectors=True)],
    # two requests at a time: a write racing a read, a write racing a write
    "pairs": [op(OP_WRITE, 0, 65536 // 512, 0x66, sectors=True, pair=True),
              op(OP_READ, 0, 4096), op(OP_WRITE, 4096, 8192, 0x77, pair=True),
              op(OP_WRITE, 8192, 8192, 0x88), op(OP_ZERO, 0, 16, 1, sectors=True, pair=True),
              op(OP_READ, 0, 16, sectors=True), op(OP_FLUSH)],
    # megabyte writes into an image whose refcount blocks and table cover little: new
    # refcount blocks, a growing refcount table, then discard and reuse
    "grow": [op(OP_WRITE, 0, 2048, 0x91, sectors=True), op(OP_WRITE, 1 << 20, 2048, 0x92,
                                                            sectors=True),
             op(OP_WRITE, 2 << 20, 2048, 0x93, sectors=True), op(OP_FLUSH),
             op(OP_DISCARD, 0, 2048, sectors=True), op(OP_FLUSH),
             op(OP_WRITE, 3 << 20, 2048, 0x94, sectors=True), op(OP_REOPEN),
             op(OP_READ, 0, 2048, sectors=True)],
    # read-only: reads and block status only
    "ro": [op(OP_STATUS, 0, 0x7fff, sectors=True), op(OP_READ, 0, 0x7fff, sectors=True),
           op(OP_READ, 12345, 777), op(OP_STATUS, 300000, 2000, sectors=True)],
}


FAULT_READ, FAULT_WRITE, FAULT_FLUSH, FAULT_DISCARD, FAULT_ZERO, FAULT_TRUNCATE, \
    FAULT_PREALLOC, FAULT_ANY = (1 << i for i in range(8))


def trailer(script, flags=0, backing=0, snapshot=0, fault=0, after=0):
    ops = SCRIPTS[script]
    return b"".join(ops) + bytes([fault, after, backing, flags, snapshot, len(ops)])


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus", "qcow2")
    os.makedirs(outdir, exist_ok=True)
    seeds = {}

    with tempfile.TemporaryDirectory(prefix="blkfuse-corpus.") as t:
        def img(name, size, opts="", data=(), fmt_opts=()):
            path = os.path.join(t, name + ".qcow2")
            args = ["qemu-img", "create", "-q", "-f", "qcow2"]
            if opts:
                args += ["-o", opts]
            run(*args, *fmt_opts, path, size)
            if data:
                qemu_io(path, *data)
            return path

        def add(name, path, variants):
            with open(path, "rb") as f:
                data = f.read()
            image = data if len(data) <= 8192 else sparse(data)
            for suffix, script, kw in variants:
                seeds["%s-%s" % (name, suffix)] = image + trailer(script, **kw)

        std = [("rw", "rw", {}), ("zero", "zero", {"flags": F_SMALL_L2 | F_SMALL_RB}),
               ("ro", "ro", {"flags": F_READ_ONLY}),
               ("fault", "rw", {"fault": FAULT_WRITE | FAULT_FLUSH, "after": 3})]
        some = ["write -P 0xa1 0 1k", "write -P 0xa2 1M 512", "write -P 0xa3 3M 512"]

        add("empty", img("empty", "4M"), [("rw", "rw", {}), ("ro", "ro", {"flags": F_READ_ONLY})])
        add("v2-64k", img("v2", "4M", "compat=0.10", some), std)
        add("v3-512", img("c512", "4M", "cluster_size=512", some),
            std + [("pairs", "pairs", {"flags": F_YIELD})])
        add("v3-4k", img("c4k", "4M", "cluster_size=4k", some),
            [("pairs", "pairs", {"flags": F_YIELD | F_SMALL_L2})])
        add("v3-2M", img("c2m", "8M", "cluster_size=2M",
                         ["write -P 0xa1 0 512", "write -P 0xa2 4M 512"]), std)
        for bits in (1, 2, 4, 8, 32, 64):
            add("refbits%d" % bits,
                img("rb%d" % bits, "2M", "cluster_size=4k,refcount_bits=%d" % bits, some[:2]),
                [("rw", "rw", {"flags": F_SMALL_RB})])
        for bits in (8, 64):
            add("grow-c512-refbits%d" % bits,
                img("grow%d" % bits, "4M", "cluster_size=512,refcount_bits=%d" % bits),
                [("grow", "grow", {}), ("grow-small", "grow", {"flags": F_SMALL_L2 | F_SMALL_RB}),
                 ("grow-fault", "grow", {"fault": FAULT_WRITE, "after": 40})])
        add("grow-c4k-lazy", img("growlazy", "4M", "cluster_size=4k,refcount_bits=64,"
                                 "lazy_refcounts=on"),
            [("grow", "grow", {}), ("grow-yield", "grow", {"flags": F_YIELD})])
        add("extl2", img("extl2", "4M", "extended_l2=on,cluster_size=16k", some),
            std + [("pairs", "pairs", {"flags": F_YIELD})])
        add("lazy", img("lazy", "4M", "lazy_refcounts=on,cluster_size=4k", some),
            [("rw", "rw", {})])
        dirty = img("dirty", "4M", "lazy_refcounts=on,cluster_size=4k", some)
        set_incompat(dirty, 1)
        add("dirty", dirty, [("rw", "rw", {}), ("ro", "ro", {"flags": F_READ_ONLY})])
        corrupt = img("corrupt", "2M", "cluster_size=4k", some[:2])
        set_incompat(corrupt, 2)
        add("corrupt", corrupt, [("ro", "ro", {"flags": F_READ_ONLY})])
        add("prealloc", img("prealloc", "1M", "cluster_size=4k,preallocation=metadata",
                            some[:1]), [("zero", "zero", {})])

        # compressed clusters, zlib and zstd
        raw = os.path.join(t, "src.raw")
        run("qemu-img", "create", "-q", "-f", "raw", raw, "1M")
        qemu_io(raw, "write -P 0x61 0 64k", "write -P 0x62 192k 4k", fmt="raw")
        for ct in ("zlib", "zstd"):
            out = os.path.join(t, "comp-%s.qcow2" % ct)
            run("qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o",
                "cluster_size=4k,compression_type=%s" % ct, raw, out)
            add("compressed-" + ct, out, std)

        # backing files: relative name with a raw format, and without a format
        base = os.path.join(t, "backing")
        run("qemu-img", "create", "-q", "-f", "raw", base, "2M")
        for name in ("backing-raw", "backing-nofmt"):
            path = os.path.join(t, name + ".qcow2")
            run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k",
                "-b", "backing", "-F", "raw", path, "4M")
            if name == "backing-nofmt":
                # turn the backing format extension into an unknown one
                with open(path, "r+b") as f:
                    hdr = f.read(4096)
                    pos = hdr.index(struct.pack(">I", 0xe2792aca))
                    f.seek(pos)
                    f.write(struct.pack(">I", 0x12345678))
            qemu_io(path, *some[:2])
            add(name, path, [("rw", "rw", {"flags": F_BACKING, "backing": 0x41}),
                             ("zero", "zero", {"flags": F_BACKING, "backing": 3}),
                             ("nobacking", "ro", {"flags": F_READ_ONLY})])
        ext = img("backing-extl2", "4M", "extended_l2=on,cluster_size=16k", (),
                  ["-b", "backing", "-F", "raw"])
        qemu_io(ext, "write -P 0xb1 2k 1k", "write -P 0xb2 40k 1k")
        add("backing-extl2", ext, [("rw", "rw", {"flags": F_BACKING, "backing": 0x22}),
                                   ("pairs", "pairs", {"flags": F_BACKING | F_YIELD,
                                                       "backing": 0x7})])

        # internal snapshots
        snap = img("snap", "4M", "cluster_size=4k", some[:2])
        run("qemu-img", "snapshot", "-c", "s1", snap)
        qemu_io(snap, "write -P 0xc1 0 512", "write -P 0xc2 2M 512")
        run("qemu-img", "snapshot", "-c", "s2", snap)
        qemu_io(snap, "write -P 0xc3 4k 512")
        add("snapshots", snap, [("rw", "rw", {}), ("zero", "zero", {}),
                                ("snap1", "ro", {"flags": F_READ_ONLY | F_SNAPSHOT}),
                                ("snap2", "ro", {"flags": F_READ_ONLY | F_SNAPSHOT,
                                                 "snapshot": 1})])

        # a persistent bitmap (bitmaps extension, autoclear bit)
        bm = img("bitmap", "4M", "cluster_size=4k", some[:2])
        run("qemu-img", "bitmap", "--add", bm, "b0")
        add("bitmap", bm, [("rw", "rw", {}), ("ro", "ro", {"flags": F_READ_ONLY})])

    for old in os.listdir(outdir):
        if old not in seeds:
            os.unlink(os.path.join(outdir, old))
    for name, data in sorted(seeds.items()):
        path = os.path.join(outdir, name)
        try:
            with open(path, "rb") as f:
                if f.read() == data:
                    continue
        except FileNotFoundError:
            pass
        with open(path, "wb") as f:
            f.write(data)
    total = sum(len(d) for d in seeds.values())
    print("%d seeds, %d bytes, in %s" % (len(seeds), total, outdir))


if __name__ == "__main__":
    main()
