#!/usr/bin/env bats
# export-sparse.bats - holes on an export: SEEK_DATA/SEEK_HOLE follow the
# image's allocation (qemu-img map is the oracle), so cp --sparse=always and
# tar --sparse copy only data, and st_blocks is the image's host allocation.

load helpers

setup() {
    blkfuse_setup
    require_fuse
    require qemu-img qemu-io python3
    MP=$T/disk.mnt
    SIZE=$((32 * 1048576))
    # The two data extents every image of this file has, as "START END".
    EXTENTS=$'1048576 3145728\n10485760 11534336'
}

# make_qcow2 PATH: a 32 MiB qcow2 with exactly two data extents, 2 MiB of 0xaa
# at 1 MiB and 1 MiB of 0xbb at 10 MiB.
make_qcow2() {
    qemu-img create -q -f qcow2 "$1" "$SIZE"
    qemu-io -f qcow2 -c 'write -P 0xaa 1M 2M' -c 'write -P 0xbb 10M 1M' "$1" >/dev/null
}

# make_sparse_raw PATH: the same contents as a sparse raw file.
make_sparse_raw() {
    make_raw "$1" "$SIZE"
    qemu-io -f raw -c 'write -P 0xaa 1M 2M' -c 'write -P 0xbb 10M 1M' "$1" >/dev/null
}

# seek_map FILE: the data extents of FILE found with lseek(SEEK_DATA) and
# lseek(SEEK_HOLE), one "START END" line each.
seek_map() {
    python3 - "$1" <<'EOF'
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
off = 0
while off < size:
    try:
        start = os.lseek(fd, off, os.SEEK_DATA)
    except OSError as e:
        if e.errno != errno.ENXIO:
            raise
        break
    end = os.lseek(fd, start, os.SEEK_HOLE)
    if end <= start:
        sys.exit(f"SEEK_HOLE from {start} returned {end}")
    print(start, end)
    off = end
EOF
}

# qemu_map FORMAT IMAGE: the data extents qemu-img map reports ("data": true),
# adjacent ones merged, one "START END" line each.
qemu_map() {
    qemu-img map -U -f "$1" --output=json "$2" | python3 -c '
import json, sys
out = []
for e in json.load(sys.stdin):
    if not e["data"]:
        continue
    start, end = e["start"], e["start"] + e["length"]
    if out and out[-1][1] == start:
        out[-1][1] = end
    else:
        out.append([start, end])
for start, end in out:
    print(start, end)
'
}

# seek_errno FILE OFFSET WHENCE: print the result of lseek(FILE, OFFSET,
# SEEK_WHENCE), or the errno name if it fails.
seek_errno() {
    python3 -c '
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    print(os.lseek(fd, int(sys.argv[2]), getattr(os, "SEEK_" + sys.argv[3])))
except OSError as e:
    print(errno.errorcode[e.errno])
' "$@"
}

@test "qcow2: SEEK_DATA/SEEK_HOLE give the data extents of qemu-img map" {
    make_qcow2 "$T/disk.qcow2"
    run qemu_map qcow2 "$T/disk.qcow2"
    [ "$status" -eq 0 ]
    [ "$output" = "$EXTENTS" ]
    blkfuse_mount -r "$T/disk.qcow2" "$MP"
    run seek_map "$MP"
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$output" = "$EXTENTS" ]
    # From inside a hole and from inside data.
    [ "$(seek_errno "$MP" 4000000 DATA)" -eq 10485760 ]
    [ "$(seek_errno "$MP" 2000000 DATA)" -eq 2000000 ]
    [ "$(seek_errno "$MP" 2000000 HOLE)" -eq 3145728 ]
    [ "$(seek_errno "$MP" 0 HOLE)" -eq 0 ]
}

@test "qcow2: zero clusters inside data are holes, as in qemu-img map" {
    local want
    qemu-img create -q -f qcow2 "$T/disk.qcow2" "$SIZE"
    qemu-io -f qcow2 -c 'write -P 0xaa 1M 4M' -c 'write -z 2M 1M' \
        -c 'write -P 0xbb 20M 64k' "$T/disk.qcow2" >/dev/null
    want=$(qemu_map qcow2 "$T/disk.qcow2")
    [ "$want" = $'1048576 2097152\n3145728 5242880\n20971520 21037056' ]
    blkfuse_mount -r "$T/disk.qcow2" "$MP"
    run seek_map "$MP"
    echo "$output"
    [ "$output" = "$want" ]
}

@test "qcow2: SEEK_DATA past the last data fails with ENXIO" {
    make_qcow2 "$T/disk.qcow2"
    blkfuse_mount -r "$T/disk.qcow2" "$MP"
    [ "$(seek_errno "$MP" 11534336 DATA)" = ENXIO ]
    [ "$(seek_errno "$MP" $((SIZE - 1)) DATA)" = ENXIO ]
    [ "$(seek_errno "$MP" "$SIZE" DATA)" = ENXIO ]
    [ "$(seek_errno "$MP" $((SIZE + 4096)) DATA)" = ENXIO ]
    # SEEK_HOLE in the trailing hole stays put.
    [ "$(seek_errno "$MP" 20000000 HOLE)" -eq 20000000 ]
}

# As lseek(2) on a local file system (and on the sparse raw file itself):
# an offset at or past the end of the file is ENXIO for SEEK_HOLE too.
@test "SEEK_HOLE at or past EOF fails with ENXIO, as on a local file" {
    make_sparse_raw "$T/disk.raw"
    [ "$(seek_errno "$T/disk.raw" "$SIZE" HOLE)" = ENXIO ]
    make_qcow2 "$T/disk.qcow2"
    blkfuse_mount -r "$T/disk.qcow2" "$MP"
    blkfuse_mount -r -f raw "$T/disk.raw" "$T/raw.mnt"
    for mp in "$MP" "$T/raw.mnt"; do
        echo "$mp: SEEK_HOLE at EOF: $(seek_errno "$mp" "$SIZE" HOLE)," \
            "past EOF: $(seek_errno "$mp" $((SIZE + 10)) HOLE)"
        [ "$(seek_errno "$mp" $((SIZE - 1)) HOLE)" -eq $((SIZE - 1)) ]
        [ "$(seek_errno "$mp" "$SIZE" HOLE)" = ENXIO ]
        [ "$(seek_errno "$mp" $((SIZE + 10)) HOLE)" = ENXIO ]
    done
}

@test "qcow2: cp --sparse=always copies the contents, allocating only data" {
    make_qcow2 "$T/disk.qcow2"
    qemu-img convert -f qcow2 -O raw "$T/disk.qcow2" "$T/want.raw"
    blkfuse_mount -r "$T/disk.qcow2" "$MP"
    cp --sparse=always "$MP" "$T/copy.raw"
    cmp "$T/copy.raw" "$T/want.raw"
    [ "$(stat -c %s "$T/copy.raw")" -eq "$SIZE" ]
    du -k "$T/copy.raw"
    [ "$(du -k "$T/copy.raw" | cut -f1)" -lt $((SIZE / 1024 / 4)) ]
    # The copy's holes are where the image's are.
    run seek_map "$T/copy.raw"
    [ "$output" = "$EXTENTS" ]
}

@test "qcow2: tar --sparse archives the file small, and it extracts identical" {
    require tar
    make_qcow2 "$T/disk.qcow2"
    qemu-img convert -f qcow2 -O raw "$T/disk.qcow2" "$T/want.raw"
    blkfuse_mount -r "$T/disk.qcow2" "$MP"
    tar --sparse -C "$T" -cf "$T/disk.tar" disk.mnt
    ls -l "$T/disk.tar"
    [ "$(stat -c %s "$T/disk.tar")" -lt $((SIZE / 4)) ]
    blkfuse unmount "$MP"
    mkdir "$T/x"
    tar -C "$T/x" -xf "$T/disk.tar"
    cmp "$T/x/disk.mnt" "$T/want.raw"
}

@test "qcow2: st_blocks is the image's host allocation and grows with data" {
    local before after
    make_qcow2 "$T/disk.qcow2"
    blkfuse_mount "$T/disk.qcow2" "$MP"
    before=$(stat -c %b "$MP")
    [ "$before" -eq "$(stat -c %b "$T/disk.qcow2")" ]
    # Far less than the 64 Ki sectors of the virtual size, at least the data.
    [ "$before" -lt $((SIZE / 512 / 4)) ]
    [ "$before" -ge $((3 * 2048)) ]
    dd if=/dev/urandom of="$MP" bs=1M count=8 seek=16 conv=notrunc,fsync status=none
    after=$(stat -c %b "$MP")
    echo "st_blocks before $before, after $after, image file $(stat -c %b "$T/disk.qcow2")"
    [ "$after" -ge $((before + 8 * 2048)) ]
    [ "$after" -eq "$(stat -c %b "$T/disk.qcow2")" ]
}

@test "raw: SEEK_DATA/SEEK_HOLE follow a sparse raw image's holes" {
    make_sparse_raw "$T/disk.raw"
    [ "$(seek_map "$T/disk.raw")" = "$EXTENTS" ]
    [ "$(qemu_map raw "$T/disk.raw")" = "$EXTENTS" ]
    blkfuse_mount -f raw -r "$T/disk.raw" "$MP"
    run seek_map "$MP"
    echo "$output"
    [ "$output" = "$EXTENTS" ]
    [ "$(seek_errno "$MP" 4000000 DATA)" -eq 10485760 ]
    [ "$(seek_errno "$MP" 2000000 HOLE)" -eq 3145728 ]
    [ "$(seek_errno "$MP" 11534336 DATA)" = ENXIO ]
    [ "$(seek_errno "$MP" "$SIZE" DATA)" = ENXIO ]
    cp --sparse=always "$MP" "$T/copy.raw"
    cmp "$T/copy.raw" "$T/disk.raw"
    [ "$(du -k "$T/copy.raw" | cut -f1)" -lt $((SIZE / 1024 / 4)) ]
    [ "$(stat -c %b "$MP")" -eq "$(stat -c %b "$T/disk.raw")" ]
}
