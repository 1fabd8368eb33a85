#!/usr/bin/env bats
# export-fallocate.bats - fallocate(2) on an export, raw and qcow2: punch hole,
# zero range, keep size, mode 0, and the modes that must fail with EOPNOTSUPP.
#
# The oracle is a raw reference copy to which the same change is applied with
# dd (zeros) or truncate (growth); the export must read like it while mounted,
# and after unmount `qemu-img compare` must find the image identical to it and
# `qemu-img check` must find a qcow2 clean.

load helpers

setup() {
    blkfuse_setup
    require_fuse
    require qemu-img fallocate
    REF=$T/ref.raw
    MP=$T/disk.mnt
}

# prepare FORMAT: a 32 MiB image of FORMAT (raw or qcow2) whose first 8 MiB
# hold a pattern and the rest is unallocated, mounted read-write on $MP; REF is
# a raw copy of its contents.  The qcow2 is filled through the mount.
prepare() {
    FMT=$1
    make_pattern "$REF" 8M
    truncate -s 32M "$REF"
    if [[ $FMT == raw ]]; then
        IMG=$T/disk.raw
        cp --sparse=always "$REF" "$IMG"
        blkfuse_mount -f raw "$IMG" "$MP"
    else
        IMG=$T/disk.qcow2
        qemu-img create -q -f qcow2 "$IMG" 32M
        blkfuse_mount -f qcow2 "$IMG" "$MP"
        dd if="$REF" of="$MP" bs=1M count=8 conv=notrunc,fsync status=none
    fi
    [ "$(size_of "$MP")" -eq $((32 * 1048576)) ]
    cmp "$MP" "$REF"
}

size_of() {
    stat -c %s "$1"
}

# read_at FILE OFFSET LENGTH: print LENGTH bytes of FILE at byte OFFSET.
read_at() {
    dd if="$1" bs=64k iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none
}

# zero_ref OFFSET LENGTH: zero that byte range of the reference copy (growing
# it if the range ends past its end, as dd does).
zero_ref() {
    dd if=/dev/zero of="$REF" bs=64k iflag=count_bytes oflag=seek_bytes \
        seek="$1" count="$2" conv=notrunc status=none
}

# reads_zeros FILE OFFSET LENGTH: true if the range holds only zero bytes.
reads_zeros() {
    local got
    got=$(read_at "$1" "$2" "$3" | wc -c)
    [ "$got" -eq "$3" ] || { echo "read $got of $3 bytes at $2" >&2; return 1; }
    read_at "$1" "$2" "$3" | cmp -n "$3" - /dev/zero
}

# image_size: the virtual size of the unmounted image, as QEMU sees it (a raw
# file's own size: qemu-img rounds it up to 512 bytes).
image_size() {
    if [[ $FMT == raw ]]; then
        size_of "$IMG"
    else
        qemu-img info --output=json -f qcow2 "$IMG" |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["virtual-size"])'
    fi
}

# finish: unmount; the image must now hold exactly the reference's contents
# and size, and a qcow2 must be clean.
finish() {
    blkfuse unmount "$MP"
    [ ! -e "$MP" ]
    if [[ $FMT == qcow2 ]]; then
        run qemu-img check "$IMG"
        echo "$output"
        [ "$status" -eq 0 ]
        [[ $output == *"No errors were found on the image."* ]]
        [[ $output != *leak* ]]
    fi
    echo "image size after unmount: $(image_size), expected $(size_of "$REF")"
    [ "$(image_size)" -eq "$(size_of "$REF")" ]
    run qemu-img compare -f "$FMT" -F raw "$IMG" "$REF"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == *"Images are identical."* ]]
}

# --- punch hole ----------------------------------------------------------------------

check_punch_hole() {
    prepare "$1"
    # 1000 .. 71000: partial clusters at both ends, whole 4k blocks inside.
    fallocate -p -o 1000 -l 70000 "$MP"
    zero_ref 1000 70000
    [ "$(size_of "$MP")" -eq $((32 * 1048576)) ]
    reads_zeros "$MP" 1000 70000
    # The bytes just around the hole are intact.
    [ "$(read_at "$MP" 999 1 | od -An -c | tr -d ' ')" != '\0' ]
    [ "$(read_at "$MP" 71000 1 | od -An -c | tr -d ' ')" != '\0' ]
    cmp "$MP" "$REF"
    # A hole across whole clusters (qcow2 64k) and a partial tail.
    fallocate -p -o $((2 * 1048576)) -l $((1048576 + 12345)) "$MP"
    zero_ref $((2 * 1048576)) $((1048576 + 12345))
    reads_zeros "$MP" $((2 * 1048576)) $((1048576 + 12345))
    cmp "$MP" "$REF"
    finish
}

@test "raw: unaligned punch hole reads zeros in exactly that range" {
    check_punch_hole raw
}

@test "qcow2: unaligned punch hole reads zeros in exactly that range" {
    check_punch_hole qcow2
}

# --- zero range ----------------------------------------------------------------------

check_zero_range() {
    local size=$((32 * 1048576))
    prepare "$1"
    fallocate -z -o 5000 -l 200000 "$MP"
    zero_ref 5000 200000
    [ "$(size_of "$MP")" -eq "$size" ]
    reads_zeros "$MP" 5000 200000
    cmp "$MP" "$REF"
    # Ending past EOF (without --keep-size) grows the file; the new part
    # reads as zeros.
    fallocate -z -o $((size - 4096)) -l 1048576 "$MP"
    truncate -s $((size - 4096 + 1048576)) "$REF"
    [ "$(size_of "$MP")" -eq $((size - 4096 + 1048576)) ]
    reads_zeros "$MP" $((size - 4096)) 1048576
    cmp "$MP" "$REF"
    finish
}

@test "raw: zero range reads zeros, and past EOF grows the file" {
    check_zero_range raw
}

@test "qcow2: zero range reads zeros, and past EOF grows the file" {
    check_zero_range qcow2
}

# --- keep size ------------------------------------------------------------------------

check_keep_size() {
    local size=$((32 * 1048576))
    prepare "$1"
    # Mode 0 and zero range with --keep-size, inside, across and past EOF.
    fallocate -n -o 12345 -l 100000 "$MP"
    [ "$(size_of "$MP")" -eq "$size" ]
    fallocate -n -o $((size - 65536)) -l 1048576 "$MP"
    [ "$(size_of "$MP")" -eq "$size" ]
    fallocate -n -o $((size + 1048576)) -l 1048576 "$MP"
    [ "$(size_of "$MP")" -eq "$size" ]
    fallocate -n -z -o $((size - 4096)) -l 1048576 "$MP"
    zero_ref $((size - 4096)) 4096
    [ "$(size_of "$MP")" -eq "$size" ]
    fallocate -n -z -o $((size + 4096)) -l 4096 "$MP"
    [ "$(size_of "$MP")" -eq "$size" ]
    cmp "$MP" "$REF"
    finish
}

@test "raw: fallocate --keep-size never changes the size" {
    check_keep_size raw
}

@test "qcow2: fallocate --keep-size never changes the size" {
    check_keep_size qcow2
}

# --- mode 0 ---------------------------------------------------------------------------

check_mode0() {
    local size=$((32 * 1048576)) blocks
    prepare "$1"
    blocks=$(stat -c %b "$MP")
    # Across the end of the data into the unallocated part, unaligned.
    fallocate -o $((6 * 1048576 + 777)) -l $((6 * 1048576)) "$MP"
    [ "$(size_of "$MP")" -eq "$size" ]
    [ "$(stat -c %b "$MP")" -ge "$blocks" ]
    cmp "$MP" "$REF"
    # At EOF: the file grows by the length, and the new part reads zeros.
    fallocate -o "$size" -l 1048576 "$MP"
    [ "$(size_of "$MP")" -eq $((size + 1048576)) ]
    # Past EOF, leaving a gap: the file grows to the end of the range.
    fallocate -o $((size + 2 * 1048576 + 512)) -l 3584 "$MP"
    [ "$(size_of "$MP")" -eq $((size + 2 * 1048576 + 4096)) ]
    truncate -s $((size + 2 * 1048576 + 4096)) "$REF"
    reads_zeros "$MP" "$size" $((2 * 1048576 + 4096))
    cmp "$MP" "$REF"
    finish
}

@test "raw: fallocate mode 0 keeps the data, and at or past EOF grows the file" {
    check_mode0 raw
}

@test "qcow2: fallocate mode 0 keeps the data, and at or past EOF grows the file" {
    check_mode0 qcow2
}

# QEMU only handles qcow2 sizes in whole 512-byte sectors (it rounds a header
# size down on open): growing to an unaligned end must still leave an image
# whose size QEMU sees as the one the export showed, with all data in it.
@test "qcow2: fallocate growing to an unaligned end leaves the size QEMU sees" {
    local size=$((32 * 1048576)) shown
    prepare qcow2
    fallocate -o $((size + 100)) -l 4000 "$MP"
    shown=$(size_of "$MP")
    [ "$shown" -ge $((size + 4100)) ]
    # The last byte of the grown file is data that must survive.
    printf 'Z' | dd of="$MP" bs=1 seek=$((shown - 1)) conv=notrunc status=none
    truncate -s "$shown" "$REF"
    printf 'Z' | dd of="$REF" bs=1 seek=$((shown - 1)) conv=notrunc status=none
    cmp "$MP" "$REF"
    finish
}

# --- unsupported modes ------------------------------------------------------------------

check_unsupported() {
    local size=$((32 * 1048576))
    prepare "$1"
    run --separate-stderr fallocate -c -o 65536 -l 65536 "$MP"
    [ "$status" -ne 0 ]
    [[ $stderr == *"Operation not supported"* ]]
    run --separate-stderr fallocate -i -o 65536 -l 65536 "$MP"
    [ "$status" -ne 0 ]
    [[ $stderr == *"Operation not supported"* ]]
    [ "$(size_of "$MP")" -eq "$size" ]
    cmp "$MP" "$REF"
    finish
}

@test "raw: collapse range and insert range fail with EOPNOTSUPP" {
    check_unsupported raw
}

@test "qcow2: collapse range and insert range fail with EOPNOTSUPP" {
    check_unsupported qcow2
}
