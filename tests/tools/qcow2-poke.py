#!/usr/bin/env python3
"""qcow2-poke.py - read and patch single fields of a qcow2 image, to build damaged images.

Usage: qcow2-poke.py IMAGE COMMAND [ARG]...

Values are decimal or 0x-hex; a value to set may also be `+N`/`-N` (added to the current value)
or `|N`/`&N`/`^N` (bit operations on it).  Every command prints the value it read or the new
value it wrote.  Cluster indices (CI) and offsets are host (file) positions.

  header FIELD [VALUE]        a header field: magic version backing_file_offset
                              backing_file_size cluster_bits size crypt_method l1_size
                              l1_table_offset refcount_table_offset refcount_table_clusters
                              nb_snapshots snapshots_offset incompat compat autoclear
                              refcount_order header_length
  l1 I [VALUE]                entry I of the active L1 table
  l2 L1I J [VALUE]            entry J of the L2 table that L1 entry L1I points to
  l2bitmap L1I J [VALUE]      the subcluster bitmap of that entry (extended L2)
  reftable I [VALUE]          refcount table entry I
  refcount CI [VALUE]         refcount of host cluster CI
  snap N FIELD [VALUE]        field l1_table_offset or l1_size of snapshot N (from 0)
  snapl1 N I [VALUE]          entry I of snapshot N's L1 table
  offset WHAT ...             print a host offset: `offset l1`, `offset l2 L1I`,
                              `offset data L1I J` (the cluster an L2 entry points to),
                              `offset refblock I`, `offset reftable`, `offset snapl1 N`
"""
import struct
import sys

HEADER = [  # name, offset, size
    ("magic", 0, 4), ("version", 4, 4), ("backing_file_offset", 8, 8),
    ("backing_file_size", 16, 4), ("cluster_bits", 20, 4), ("size", 24, 8),
    ("crypt_method", 32, 4), ("l1_size", 36, 4), ("l1_table_offset", 40, 8),
    ("refcount_table_offset", 48, 8), ("refcount_table_clusters", 56, 4),
    ("nb_snapshots", 60, 4), ("snapshots_offset", 64, 8), ("incompat", 72, 8),
    ("compat", 80, 8), ("autoclear", 88, 8), ("refcount_order", 96, 4),
    ("header_length", 100, 4),
]
OFFSET_MASK = 0x00fffffffffffe00


class Image:
    def __init__(self, path):
        self.f = open(path, "r+b")

    def read(self, off, n):
        self.f.seek(off)
        return self.f.read(n).ljust(n, b"\0")

    def write(self, off, data):
        self.f.seek(off)
        self.f.write(data)

    def get(self, off, size):
        return int.from_bytes(self.read(off, size), "big")

    def put(self, off, size, value):
        self.write(off, value.to_bytes(size, "big"))

    def field(self, name):
        for n, off, size in HEADER:
            if n == name:
                return off, size
        sys.exit("qcow2-poke: unknown header field '%s'" % name)

    def hdr(self, name):
        return self.get(*self.field(name))

    @property
    def cluster_bits(self):
        return self.hdr("cluster_bits")

    @property
    def ext_l2(self):
        return self.hdr("version") >= 3 and bool(self.hdr("incompat") & 16)

    def l2_entry_size(self):
        return 16 if self.ext_l2 else 8

    def l2_offset(self, l1i):
        off = self.get(self.hdr("l1_table_offset") + 8 * l1i, 8) & OFFSET_MASK
        if not off:
            sys.exit("qcow2-poke: L1 entry %d is unallocated" % l1i)
        return off

    def snapshot(self, n):
        pos = self.hdr("snapshots_offset")
        for i in range(self.hdr("nb_snapshots")):
            id_len, name_len = struct.unpack(">HH", self.read(pos + 12, 4))
            extra = self.get(pos + 36, 4)
            if i == n:
                return pos
            pos += (40 + extra + id_len + name_len + 7) & ~7
        sys.exit("qcow2-poke: no snapshot %d" % n)

    def refcount_pos(self, ci):
        """(byte offset, bit shift, bits) of the refcount of host cluster ci."""
        order = self.hdr("refcount_order") if self.hdr("version") >= 3 else 4
        bits = 1 << order
        per_block = (1 << self.cluster_bits) * 8 // bits
        rb = self.get(self.hdr("refcount_table_offset") + 8 * (ci // per_block), 8)
        rb &= 0xfffffffffffffe00
        if not rb:
            sys.exit("qcow2-poke: cluster %d has no refcount block" % ci)
        bitpos = (ci % per_block) * bits
        return rb, bitpos, bits


def parse_value(text, old):
    op = text[0]
    if op in "+-|&^":
        n = int(text[1:], 0)
        return {"+": old + n, "-": old - n, "|": old | n, "&": old & n, "^": old ^ n}[op]
    return int(text, 0)


def access(img, off, size, args):
    old = img.get(off, size)
    if args:
        new = parse_value(args[0], old)
        img.put(off, size, new)
        print(new)
    else:
        print(old)


def main(argv):
    if len(argv) < 3 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(argv) > 1 else 2
    img = Image(argv[1])
    cmd, args = argv[2], argv[3:]
    n = lambda i: int(args[i], 0)
    if cmd == "header":
        off, size = img.field(args[0])
        access(img, off, size, args[1:])
    elif cmd == "l1":
        access(img, img.hdr("l1_table_offset") + 8 * n(0), 8, args[1:])
    elif cmd == "l2":
        access(img, img.l2_offset(n(0)) + img.l2_entry_size() * n(1), 8, args[2:])
    elif cmd == "l2bitmap":
        access(img, img.l2_offset(n(0)) + 16 * n(1) + 8, 8, args[2:])
    elif cmd == "reftable":
        access(img, img.hdr("refcount_table_offset") + 8 * n(0), 8, args[1:])
    elif cmd == "refcount":
        rb, bitpos, bits = img.refcount_pos(n(0))
        if bits >= 8:
            access(img, rb + bitpos // 8, bits // 8, args[1:])
        else:
            byte = img.get(rb + bitpos // 8, 1)
            shift, mask = bitpos % 8, (1 << bits) - 1
            old = (byte >> shift) & mask
            if args[1:]:
                new = parse_value(args[1], old) & mask
                img.put(rb + bitpos // 8, 1, (byte & ~(mask << shift)) | (new << shift))
                print(new)
            else:
                print(old)
    elif cmd == "snap":
        pos = img.snapshot(n(0))
        off, size = {"l1_table_offset": (0, 8), "l1_size": (8, 4)}[args[1]]
        access(img, pos + off, size, args[2:])
    elif cmd == "snapl1":
        pos = img.snapshot(n(0))
        access(img, img.get(pos, 8) + 8 * n(1), 8, args[2:])
    elif cmd == "offset":
        what = args[0]
        if what == "l1":
            print(img.hdr("l1_table_offset"))
        elif what == "reftable":
            print(img.hdr("refcount_table_offset"))
        elif what == "l2":
            print(img.l2_offset(n(1)))
        elif what == "data":
            e = img.get(img.l2_offset(n(1)) + img.l2_entry_size() * n(2), 8)
            print(e & OFFSET_MASK)
        elif what == "refblock":
            print(img.get(img.hdr("refcount_table_offset") + 8 * n(1), 8) & ~0x1ff)
        elif what == "snapl1":
            print(img.get(img.snapshot(n(1)), 8))
        else:
            sys.exit("qcow2-poke: unknown offset '%s'" % what)
    else:
        sys.exit("qcow2-poke: unknown command '%s'" % cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
