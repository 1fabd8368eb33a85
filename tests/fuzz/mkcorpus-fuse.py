#!/usr/bin/env python3
"""mkcorpus-fuse.py - write the seed corpus of the FUSE protocol fuzzer (tests/fuzz/fuzz-fuse.c).

Usage: tests/fuzz/mkcorpus-fuse.py [OUTDIR]   (default: tests/fuzz/corpus/fuse)

Each input is a flags byte, then requests as the kernel writes them to /dev/fuse (struct
fuse_in_header, then the op's argument and payload; native byte order, x86-64).  The seeds cover
every op blkfuse answers (INIT, LOOKUP, GETATTR, SETATTR, OPEN, READ, WRITE, FLUSH, FSYNC,
FALLOCATE, LSEEK, STATFS, RELEASE, FORGET, BATCH_FORGET, INTERRUPT, DESTROY), one it does not,
writes and reads at and past the end, on read-only, growable and yielding exports.
"""
import os
import struct
import sys

(LOOKUP, FORGET, GETATTR, SETATTR) = (1, 2, 3, 4)
MKDIR, OPEN, READ, WRITE, STATFS, RELEASE, FSYNC, FLUSH, INIT = 9, 14, 15, 16, 17, 18, 20, 25, 26
INTERRUPT, DESTROY, BATCH_FORGET, FALLOCATE, LSEEK = 36, 38, 42, 43, 46

F_READ_ONLY, F_GROWABLE, F_YIELD, F_OWN_INIT, F_HALT = (1 << i for i in range(5))

MiB = 1 << 20
unique = 0


def req(opcode, arg=b"", payload=b""):
    global unique
    unique += 1
    body = arg + payload
    # len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding
    return struct.pack("<IIQQIIIHH", 40 + len(body), opcode, unique, 1, 0, 0, 1, 0, 0) + body


def init(minor=45, flags=0xFFFFFFFF, flags2=0xFFFFFFFF):
    return req(INIT, struct.pack("<IIIII", 7, minor, 131072, flags, flags2) + bytes(44))


def read(offset, size):
    return req(READ, struct.pack("<QQIIQII", 0, offset, size, 0, 0, 0x8002, 0))


def write(offset, data, flags=0x8002):
    return req(WRITE, struct.pack("<QQIIQII", 0, offset, len(data), 0, 0, flags, 0), data)


def setattr(valid, size=0, mode=0, mtime=0):
    return req(SETATTR, struct.pack("<IIQQQQQQIIIIIIII", valid, 0, 0, size, 0, 0, mtime, 0,
                                    0, 0, 0, mode, 0, 0, 0, 0))


def open_(flags):
    return req(OPEN, struct.pack("<II", flags, 0))


def release():
    return req(RELEASE, struct.pack("<QIIQ", 0, 0, 0, 0))


def fallocate(offset, length, mode):
    return req(FALLOCATE, struct.pack("<QQQII", 0, offset, length, mode, 0))


def lseek(offset, whence):
    return req(LSEEK, struct.pack("<QQII", 0, offset, whence, 0))


def simple(opcode, size):
    return req(opcode, bytes(size))


SEEDS = {
    "basic": (0, [simple(GETATTR, 16), open_(2), read(0, 4096),
                  write(4096, b"\xab" * 4096), read(4096, 8192), simple(FLUSH, 24),
                  release(), simple(STATFS, 0)]),
    "ends": (0, [write(MiB - 100, b"x" * 4096), write(MiB, b"y" * 10), read(MiB - 100, 4096),
                 read(MiB, 4096), read(0, 1 << 21)]),
    "growable": (F_GROWABLE, [write(MiB + 12345, b"z" * 1000), read(MiB, 20000),
                              setattr(1 << 3, size=3 * MiB), fallocate(4 * MiB, 4096, 0)]),
    "read-only": (F_READ_ONLY, [open_(2), open_(0), write(0, b"w"), setattr(1 << 0, mode=0o644),
                                setattr(1 << 3, size=0), fallocate(0, 4096, 1)]),
    "fallocate": (0, [fallocate(0, 65536, 3), fallocate(4096, 4096, 1), fallocate(0, 4096, 2),
                      fallocate(0, 8192, 0x10), fallocate(0, 0, 0), lseek(0, 3), lseek(0, 4),
                      lseek(MiB, 3), lseek(0, 0)]),
    "setattr": (0, [setattr(0x1ff, size=12345, mode=0o640, mtime=1000),
                    setattr(1 << 7 | 1 << 8), simple(GETATTR, 16)]),
    "noreply": (0, [simple(FORGET, 8), req(BATCH_FORGET, struct.pack("<II", 2, 0),
                                           struct.pack("<QQQQ", 1, 1, 1, 1)),
                    simple(INTERRUPT, 8), simple(DESTROY, 0)]),
    "unknown": (0, [req(MKDIR, struct.pack("<II", 0o755, 0), b"dir\0"), req(LOOKUP, b"", b"x\0"),
                    req(999), simple(READ, 8)]),
    "own-init": (F_OWN_INIT, [simple(GETATTR, 16), init(minor=27), init(), init(), read(0, 512)]),
    "old-init": (F_OWN_INIT, [init(minor=36, flags=0x401, flags2=0), read(0, 512)]),
    "yield": (F_YIELD, [write(i * 8192, bytes([i]) * 8192) for i in range(8)] +
              [read(i * 4096, 65536) for i in range(8)] + [simple(FSYNC, 16)]),
    "halt": (F_HALT, [open_(0), read(0, 4096), read(0, 4096)]),
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__),
                                                             "corpus", "fuse")
    os.makedirs(out, exist_ok=True)
    for name, (flags, reqs) in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes([flags]) + b"".join(reqs))


if __name__ == "__main__":
    main()
