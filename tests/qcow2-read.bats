#!/usr/bin/env bats
# qcow2-read.bats - qcow2 images qemu-img makes, in every layout, read through a blkfuse mount
# byte-identical to `qemu-img convert -O raw`.

load helpers

setup() {
    blkfuse_setup
    require_fuse
    require qemu-img qemu-io
    # a source disk with data, holes and an unaligned run
    qemu-img create -q -f raw "$T/src.raw" 12M
    qemu-io -f raw -c 'write -P 0x5a 0 3M' -c 'write -P 0xa5 5M 1M' \
        -c 'write -P 0x33 8191k 3k' -c 'write -P 1 11M 1M' "$T/src.raw" >/dev/null
}

# same_as_qemu IMAGE [MOUNT-OPTION...]: mount IMAGE read-only and compare with qemu-img.
same_as_qemu() {
    local img=$1
    shift
    local mp=$T/mp qemu_opts=()
    [[ ${1:-} == --snapshot-name=* ]] && qemu_opts=(-l "snapshot.name=${1#*=}")
    qemu-img convert -O raw "${qemu_opts[@]}" "$img" "$T/ref.raw"
    blkfuse_mount -r "$@" "$img" "$mp"
    if ((${#qemu_opts[@]})); then
        # qemu-img keeps the active size for a snapshot; blkfuse shows the snapshot's size
        truncate -s "$(stat -c %s "$mp")" "$T/ref.raw"
    fi
    if ! cmp "$mp" "$T/ref.raw"; then
        echo "$img ($*): blkfuse and qemu-img differ" >&2
        return 1
    fi
    blkfuse unmount "$mp"
    wait_for_unmount "$mp"
}

@test "qcow2 read: versions 2 and 3 with 512-byte and 2 MiB clusters" {
    local v cs
    for v in 0.10 1.1; do
        for cs in 512 64k 2M; do
            qemu-img convert -f raw -O qcow2 -o "compat=$v,cluster_size=$cs" "$T/src.raw" "$T/i.qcow2"
            qemu-io -c 'write -P 0x77 1000 5000' -c 'write -z 6M 1M' -c 'discard 5M 64k' \
                "$T/i.qcow2" >/dev/null
            same_as_qemu "$T/i.qcow2"
        done
    done
}

@test "qcow2 read: refcount widths 1 and 64 bits" {
    local rb
    for rb in 1 64; do
        qemu-img convert -f raw -O qcow2 -o "refcount_bits=$rb,cluster_size=4k" "$T/src.raw" "$T/i.qcow2"
        same_as_qemu "$T/i.qcow2"
    done
}

@test "qcow2 read: extended L2 entries with zero and unallocated subclusters" {
    qemu-img convert -f raw -O qcow2 -o extended_l2=on "$T/src.raw" "$T/i.qcow2"
    qemu-io -c 'write -P 0x77 1000 5000' -c 'write -z 6M 100k' -c 'discard 5M 64k' \
        -c 'write -z 2052k 8k' "$T/i.qcow2" >/dev/null
    same_as_qemu "$T/i.qcow2"
}

@test "qcow2 read: compressed clusters, zlib and zstd" {
    local ct cs
    for ct in zlib zstd; do
        for cs in 4k 64k 2M; do
            qemu-img convert -c -f raw -O qcow2 -o "compression_type=$ct,cluster_size=$cs" \
                "$T/src.raw" "$T/i.qcow2"
            same_as_qemu "$T/i.qcow2"
        done
    done
}

@test "qcow2 read: preallocation metadata, falloc and full" {
    local p
    for p in metadata falloc full; do
        qemu-img create -q -f qcow2 -o "preallocation=$p" "$T/i.qcow2" 8M
        qemu-io -c 'write -P 9 1M 1M' "$T/i.qcow2" >/dev/null
        same_as_qemu "$T/i.qcow2"
    done
}

@test "qcow2 read: backing chain qcow2 -> qcow2 -> raw with zero writes on top" {
    cd "$T"
    qemu-img create -q -f qcow2 -b src.raw -F raw base.qcow2
    qemu-io -c 'write -P 0x66 1M 1M' -c 'write -z 0 64k' base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
    qemu-io -c 'write -z 5M 512k' -c 'write -P 0x67 1500k 1M' mid.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -o extended_l2=on -b mid.qcow2 -F qcow2 top.qcow2
    qemu-io -c 'write -z 5200k 13k' -c 'write -P 0x68 11M 3k' -c 'write -z 2M 32k' top.qcow2 >/dev/null
    same_as_qemu "$T/top.qcow2"
    qemu-img create -q -f qcow2 -o compat=0.10 -b top.qcow2 -F qcow2 v2.qcow2
    qemu-io -c 'write -P 0x69 100k 1k' v2.qcow2 >/dev/null
    same_as_qemu "$T/v2.qcow2"
}

@test "qcow2 read: backing file shorter than the overlay reads zeros past its end" {
    cd "$T"
    qemu-img create -q -f raw short.raw 3M
    qemu-io -f raw -c 'write -P 0x12 0 3M' short.raw >/dev/null
    qemu-img create -q -f qcow2 -b short.raw -F raw ov.qcow2 10M
    qemu-io -c 'write -P 0x13 2M 2M' ov.qcow2 >/dev/null
    same_as_qemu "$T/ov.qcow2"
}

@test "qcow2 read: internal snapshot, active layer and --snapshot-name" {
    qemu-img convert -f raw -O qcow2 "$T/src.raw" "$T/s.qcow2"
    qemu-img snapshot -c S1 "$T/s.qcow2"
    qemu-io -c 'write -P 0x99 0 2M' -c 'write -z 5M 64k' "$T/s.qcow2" >/dev/null
    same_as_qemu "$T/s.qcow2"
    same_as_qemu "$T/s.qcow2" --snapshot-name=S1
}

@test "qcow2 read: dirty lazy-refcount image left by an aborted qemu-io" {
    qemu-img create -q -f qcow2 -o lazy_refcounts=on "$T/d.qcow2" 16M
    run qemu-io -c 'write -P 0x31 0 3M' -c 'write -P 0x32 8M 100k' -c abort "$T/d.qcow2"
    same_as_qemu "$T/d.qcow2"
    # a read-write mount repairs the refcounts and clears the dirty bit
    blkfuse_mount "$T/d.qcow2" "$T/mp"
    cmp "$T/mp" "$T/ref.raw"
    blkfuse unmount "$T/mp"
    wait_for_unmount "$T/mp"
    qemu-img check "$T/d.qcow2"
}

@test "qcow2 read: an image marked corrupt mounts read-only only" {
    qemu-img create -q -f qcow2 "$T/c.qcow2" 1M
    printf '\x00\x00\x00\x00\x00\x00\x00\x02' | dd of="$T/c.qcow2" bs=1 seek=72 conv=notrunc status=none
    run blkfuse mount --log-file "$T/daemon.log" "$T/c.qcow2" "$T/mp"
    [ "$status" -ne 0 ]
    [[ $output == *"marked corrupt"* ]]
    [[ $output == *"qemu-img check -r all"* ]]
    EXPECTED_LOG_ERRORS='marked corrupt'
    same_as_qemu "$T/c.qcow2"
}

@test "qcow2 read: a future qcow2 version is refused by name, not taken for raw" {
    qemu-img create -q -f qcow2 "$T/v.qcow2" 1M
    printf '\x00\x00\x00\x09' | dd of="$T/v.qcow2" bs=1 seek=4 conv=notrunc status=none
    run blkfuse info "$T/v.qcow2"
    [ "$status" -eq 1 ]
    [[ $output == *"v.qcow2: unsupported qcow2 version 9"* ]]
    run blkfuse mount --log-file "$T/v.log" "$T/v.qcow2" "$T/v.img"
    [ "$status" -eq 1 ]
    [[ $output == *"unsupported qcow2 version 9"* ]]
}
