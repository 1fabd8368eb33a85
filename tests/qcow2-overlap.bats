#!/usr/bin/env bats
# qcow2-overlap.bats - metadata-overlap protection through a real mount.  In a qcow2 whose L1
# table's cluster has refcount 0 (one damaged refcount entry), the allocator hands out that
# cluster for the next new one.  The write fails with EIO instead of landing on the L1 table;
# the image is marked corrupt; the export turns read-only (EROFS, no write bits, `list` says
# ro); and the 1 MiB of data in the image reads back intact, through the mount and with qemu
# after unmount.

load helpers

setup() {
    blkfuse_setup
    require_fuse
    require qemu-img qemu-io python3
    make_pattern "$T/data.raw" 1M
    cp "$T/data.raw" "$T/ref.raw"
    truncate -s 64M "$T/ref.raw"
    qemu-img convert -f raw -O qcow2 "$T/ref.raw" "$T/d.qcow2"
}

# header_field IMAGE OFFSET: the big-endian 64-bit header field at OFFSET.
header_field() {
    python3 -c 'import struct, sys
f = open(sys.argv[1], "rb"); f.seek(int(sys.argv[2]))
print(struct.unpack(">Q", f.read(8))[0])' "$1" "$2"
}

# zero_refcount IMAGE OFFSET: set the (16-bit) refcount of the cluster at host OFFSET to 0.
zero_refcount() {
    python3 -c 'import struct, sys
f = open(sys.argv[1], "r+b")
h = f.read(104)
cb, = struct.unpack(">I", h[20:24])
rt, = struct.unpack(">Q", h[48:56])
order, = struct.unpack(">I", h[96:100])
assert order == 4
ci = int(sys.argv[2]) >> cb
per_block = (1 << cb) * 8 >> order
f.seek(rt + ci // per_block * 8)
rb, = struct.unpack(">Q", f.read(8))
f.seek(rb + ci % per_block * 2)
assert struct.unpack(">H", f.read(2))[0] == 1
f.seek(rb + ci % per_block * 2)
f.write(b"\0\0")' "$1" "$2"
}

# qemu_dump IMAGE FORMAT: what `qemu-io -r` reads from the first MiB, as a hex dump.
qemu_dump() {
    qemu-io -r -f "$2" -c 'read -v 0 1M' "$1" | grep -v -e '^read ' -e ' ops; '
}

# mode_is FILE MODE: FILE's permission bits are MODE (octal, as stat %a prints them).
mode_is() {
    [ "$(stat -c %a "$1")" = "$2" ]
}

@test "qcow2 overlap: a write over the L1 table fails with EIO, the image turns corrupt and read-only, the data stays" {
    local l1
    l1=$(header_field "$T/d.qcow2" 40)
    zero_refcount "$T/d.qcow2" "$l1"
    run qemu-img check "$T/d.qcow2"
    [[ $output == *"refcount=0 reference=1"* ]]
    EXPECTED_LOG_ERRORS='qcow2: prevented a write of .* over the active L1 table'

    blkfuse_mount "$T/d.qcow2" "$T/mp"
    [ "$(stat -c %a "$T/mp")" = 600 ]
    cmp -n 1M "$T/mp" "$T/data.raw"

    # A cluster never written before: the allocator offers the L1 table's cluster.
    run --separate-stderr dd if=/dev/urandom of="$T/mp" bs=64k seek=100 count=1 conv=notrunc
    echo "$stderr"
    [ "$status" -ne 0 ]
    [[ $stderr == *"Input/output error"* ]]

    # One log line naming the image, what was written, the structure and the offsets, and the
    # repair.
    run grep -c 'prevented a write' "$T/daemon.log"
    [ "$output" = 1 ]
    printf -v l1 '%#x' "$l1"
    grep -q "$T/d.qcow2: qcow2: prevented a write of guest data at $l1 (65536 bytes) over the active L1 table at $l1 (8 bytes);.*check -r all" "$T/daemon.log"

    # Marked corrupt on disk, right away.
    run qemu-img info -U "$T/d.qcow2"
    [[ $output == *"corrupt: true"* ]]

    # The export is read-only now: writes fail, the mode loses its write bits (once the
    # kernel's attribute cache expires), `blkfuse list` says ro.
    run --separate-stderr dd if=/dev/zero of="$T/mp" bs=4k count=1 conv=notrunc
    [ "$status" -ne 0 ]
    [[ $stderr == *"Read-only file system"* ]]
    run --separate-stderr dd if=/dev/zero of="$T/mp" bs=4k count=1 seek=2000 conv=notrunc \
        oflag=direct
    [ "$status" -ne 0 ]
    wait_until 5 mode_is "$T/mp" 400
    run blkfuse list
    echo "$output"
    [[ $(grep -F "$T/mp" <<<"$output") == *" ro "* ]]

    # Everything that was in the image still reads: through the mount, and with qemu.
    cmp -n 1M "$T/mp" "$T/data.raw"
    cmp "$T/mp" "$T/ref.raw"
    blkfuse unmount "$T/mp"
    wait_for_unmount "$T/mp"
    [ "$(qemu_dump "$T/d.qcow2" qcow2)" = "$(qemu_dump "$T/ref.raw" raw)" ]
    qemu-img convert -O raw "$T/d.qcow2" "$T/after.raw"
    cmp "$T/after.raw" "$T/ref.raw"

    # Nothing but the corrupt bit was written: the refcount is still 0, and the repair the log
    # line names makes the image clean (for qemu-img too) and writable.
    run qemu-img check "$T/d.qcow2"
    [[ $output == *"refcount=0 reference=1"* ]]
    run blkfuse check "$T/d.qcow2"
    [ "$status" -eq 2 ]
    [[ $output == *"refcount=0 reference=1"* ]]
    blkfuse check -r all "$T/d.qcow2"
    qemu-img check "$T/d.qcow2"
    blkfuse_mount "$T/d.qcow2" "$T/mp"
    dd if=/dev/urandom of="$T/mp" bs=64k seek=100 count=1 conv=notrunc status=none
    cmp -n 1M "$T/mp" "$T/data.raw"
    blkfuse unmount "$T/mp"
    wait_for_unmount "$T/mp"
    qemu-img check "$T/d.qcow2"
}
