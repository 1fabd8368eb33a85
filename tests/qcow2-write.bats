#!/usr/bin/env bats
# qcow2-write.bats - random writes, punched holes and zeroed ranges on qcow2 images through a
# blkfuse mount, mirrored into a raw reference: afterwards `qemu-img check` finds no errors and
# no leaks and `qemu-img compare` finds the image identical; backing files and internal
# snapshots stay unchanged; a daemon killed mid-write leaves no errors (leaks allowed).

load helpers

setup() {
    blkfuse_setup
    require_fuse
    require qemu-img qemu-io fallocate
    qemu-img create -q -f raw "$T/src.raw" 16M
    qemu-io -f raw -c 'write -P 0x5a 0 3M' -c 'write -P 0xa5 5M 1M' \
        -c 'write -P 0x33 8191k 3k' -c 'write -P 1 15M 1M' "$T/src.raw" >/dev/null
    head -c 2M /dev/urandom >"$T/pat"
}

# random_io FILE REF NOPS SEED: writes of 1 B .. 1 MiB at random (unaligned) offsets, zero
# ranges and punched holes, each done to FILE and mirrored into the raw file REF.
random_io() {
    local f=$1 ref=$2 n=$3 i kind off len size skip
    RANDOM=$4
    size=$(stat -c %s "$ref")
    for ((i = 0; i < n; i++)); do
        kind=$((RANDOM % 10))
        len=$(( ((RANDOM << 15) | RANDOM) % (1 << (RANDOM % 21)) + 1 ))
        off=$(( ((RANDOM << 15) | RANDOM) % size ))
        if ((RANDOM % 3 == 0)); then
            off=$((off / 4096 * 4096))
            len=$(( (len + 4095) / 4096 * 4096 ))
        fi
        ((off + len > size)) && len=$((size - off))
        ((len > 0)) || continue
        if ((kind < 7)); then
            skip=$((RANDOM % 4096))
            dd if="$T/pat" of="$f" iflag=skip_bytes,count_bytes oflag=seek_bytes conv=notrunc \
                bs=1M skip=$skip count=$len seek=$off status=none
            dd if="$T/pat" of="$ref" iflag=skip_bytes,count_bytes oflag=seek_bytes conv=notrunc \
                bs=1M skip=$skip count=$len seek=$off status=none
        else
            if ((kind < 9)); then
                fallocate -z -o "$off" -l "$len" "$f"
            else
                fallocate -p -o "$off" -l "$len" "$f"
            fi
            dd if=/dev/zero of="$ref" iflag=count_bytes oflag=seek_bytes conv=notrunc \
                bs=1M count=$len seek=$off status=none
        fi
    done
}

# check_clean IMAGE: no errors, no leaks.
check_clean() {
    run qemu-img check "$1"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output != *leaked* ]]
}

# exercise IMAGE [MOUNT-OPTION...]: random I/O through a mount, then check and compare.
exercise() {
    local img=$1
    shift
    qemu-img convert -O raw "$img" "$T/ref.raw"
    blkfuse_mount "$@" "$img" "$T/mp"
    random_io "$T/mp" "$T/ref.raw" 120 42
    cmp "$T/mp" "$T/ref.raw"
    blkfuse unmount "$T/mp"
    wait_for_unmount "$T/mp"
    check_clean "$img"
    qemu-img compare "$img" "$T/ref.raw"
}

@test "qcow2 write: fresh images, v2 and v3, 512-byte to 2 MiB clusters" {
    local o
    for o in compat=0.10 cluster_size=512,refcount_bits=64 cluster_size=64k \
             cluster_size=2M,refcount_bits=1; do
        rm -f "$T/w.qcow2"
        qemu-img create -q -f qcow2 -o "$o" "$T/w.qcow2" 16M
        exercise "$T/w.qcow2"
    done
}

@test "qcow2 write: extended L2 entries, two queues" {
    qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=32k "$T/w.qcow2" 16M
    exercise "$T/w.qcow2" --queues=2
}

@test "qcow2 write: compressed images, zlib and zstd" {
    local ct
    for ct in zlib zstd; do
        qemu-img convert -c -f raw -O qcow2 -o "compression_type=$ct" "$T/src.raw" "$T/w.qcow2"
        exercise "$T/w.qcow2"
    done
}

@test "qcow2 write: preallocated image" {
    qemu-img create -q -f qcow2 -o preallocation=metadata "$T/w.qcow2" 16M
    exercise "$T/w.qcow2"
}

@test "qcow2 write: fallocate reserves clusters without changing the contents" {
    local o
    for o in cluster_size=64k extended_l2=on compat=0.10; do
        rm -f "$T/w.qcow2"
        qemu-img create -q -f qcow2 -o "$o" -b "$T/src.raw" -F raw "$T/w.qcow2"
        qemu-io -c 'write -z 6M 1M' "$T/w.qcow2" >/dev/null
        qemu-img convert -O raw "$T/w.qcow2" "$T/ref.raw"
        blkfuse_mount "$T/w.qcow2" "$T/mp"
        fallocate -o 1000000 -l 9M "$T/mp"
        cmp "$T/mp" "$T/ref.raw"
        random_io "$T/mp" "$T/ref.raw" 40 11
        cmp "$T/mp" "$T/ref.raw"
        blkfuse unmount "$T/mp"
        wait_for_unmount "$T/mp"
        check_clean "$T/w.qcow2"
        qemu-img compare "$T/w.qcow2" "$T/ref.raw"
    done
    qemu-img create -q -f qcow2 "$T/n.qcow2" 16M
    blkfuse_mount "$T/n.qcow2" "$T/mp"
    fallocate -o 0 -l 8M "$T/mp"
    blkfuse unmount "$T/mp"
    wait_for_unmount "$T/mp"
    check_clean "$T/n.qcow2"
    run qemu-img check "$T/n.qcow2"
    [[ $output == *"128/256 = 50.00% allocated"* ]]
    truncate -s 16M "$T/zero.raw"
    qemu-img compare "$T/n.qcow2" "$T/zero.raw"
}

@test "qcow2 write: backing chain stays unchanged" {
    local sums
    cd "$T"
    qemu-img convert -f raw -O qcow2 src.raw base.qcow2
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
    qemu-io -c 'write -P 0x44 2M 1M' -c 'write -z 5M 64k' mid.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
    sums=$(md5sum src.raw base.qcow2 mid.qcow2)
    exercise "$T/top.qcow2"
    [ "$sums" = "$(md5sum src.raw base.qcow2 mid.qcow2)" ]
    qemu-img create -q -f qcow2 -o compat=0.10 -b src.raw -F raw v2.qcow2
    exercise "$T/v2.qcow2"
    [ "$sums" = "$(md5sum src.raw base.qcow2 mid.qcow2)" ]
}

@test "qcow2 write: internal snapshot stays unchanged" {
    qemu-img convert -f raw -O qcow2 "$T/src.raw" "$T/s.qcow2"
    qemu-img snapshot -c S "$T/s.qcow2"
    qemu-io -c 'write -P 0x99 1M 1M' "$T/s.qcow2" >/dev/null
    qemu-img convert -O raw -l snapshot.name=S "$T/s.qcow2" "$T/before.raw"
    exercise "$T/s.qcow2"
    qemu-img convert -O raw -l snapshot.name=S "$T/s.qcow2" "$T/after.raw"
    cmp "$T/before.raw" "$T/after.raw"
    cmp "$T/before.raw" "$T/src.raw"
}

@test "qcow2 write: lazy refcounts clear the dirty bit on unmount" {
    qemu-img create -q -f qcow2 -o lazy_refcounts=on "$T/w.qcow2" 16M
    exercise "$T/w.qcow2"
    run qemu-img info "$T/w.qcow2"
    [[ $output != *"dirty"*"true"* ]]
}

@test "qcow2 write: truncate grows and shrinks the image" {
    qemu-img create -q -f qcow2 -o cluster_size=4k "$T/w.qcow2" 4M
    qemu-img create -q -f raw "$T/ref.raw" 4M
    blkfuse_mount "$T/w.qcow2" "$T/mp"
    random_io "$T/mp" "$T/ref.raw" 20 7
    # A qcow2 size is a whole number of sectors, as QEMU requires: other sizes are refused.
    run truncate -s 3000001 "$T/mp"
    [ "$status" -ne 0 ]
    [[ $output == *"Invalid argument"* ]]
    [ "$(stat -c %s "$T/mp")" -eq $((4 * 1024 * 1024)) ]
    truncate -s 2999808 "$T/mp"
    truncate -s 2999808 "$T/ref.raw"
    truncate -s 40M "$T/mp"
    truncate -s 40M "$T/ref.raw"
    random_io "$T/mp" "$T/ref.raw" 20 8
    cmp "$T/mp" "$T/ref.raw"
    blkfuse unmount "$T/mp"
    wait_for_unmount "$T/mp"
    check_clean "$T/w.qcow2"
    qemu-img compare "$T/w.qcow2" "$T/ref.raw"
}

@test "qcow2 write: a daemon killed mid-write leaves no refcount errors" {
    local o pid rc
    for o in cluster_size=64k cluster_size=512,refcount_bits=64 extended_l2=on; do
        rm -f "$T/c.qcow2"
        qemu-img create -q -f qcow2 -o "$o" "$T/c.qcow2" 64M
        qemu-img create -q -f raw "$T/cref.raw" 64M
        blkfuse_mount_foreground --cache=writethrough "$T/c.qcow2" "$T/mp"
        ( random_io "$T/mp" "$T/cref.raw" 100000 3 ) 2>/dev/null &
        pid=$!
        # Kill only once allocating writes have happened and while they go on,
        # or the test proves nothing.
        wait_for_writes "$T/mp" 50 30
        _pid_alive "$pid"
        kill -9 "$BLKFUSE_PID"
        wait "$pid" || true
        wait "$BLKFUSE_PID" || true
        fusermount3 -u "$T/mp" 2>/dev/null || umount -l "$T/mp" 2>/dev/null || true
        rc=0
        qemu-img check "$T/c.qcow2" || rc=$?
        # 0: clean, 3: leaked clusters only
        [[ $rc -eq 0 || $rc -eq 3 ]]
    done
}
