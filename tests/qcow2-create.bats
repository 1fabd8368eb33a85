#!/usr/bin/env bats
# qcow2-create.bats - `blkfuse create -f qcow2` with every option makes images that qemu-img
# accepts (`check` clean, `info` shows the options, contents read as zeros or as the backing
# file), and rejects bad options; `blkfuse info` shows qcow2 details and snapshots.

load helpers

setup() {
    blkfuse_setup
    require qemu-img
}

# created_ok IMAGE SIZE FIELD...: qemu-img check is clean, info has each FIELD, reads zeros.
created_ok() {
    local img=$1 size=$2 field
    shift 2
    run qemu-img check "$img"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output != *leaked* ]]
    run qemu-img info "$img"
    echo "$output"
    for field in "$@"; do
        [[ $output == *"$field"* ]] || { echo "missing: $field" >&2; return 1; }
    done
    rm -f "$T/zero.raw"
    truncate -s "$size" "$T/zero.raw"
    qemu-img compare -q "$img" "$T/zero.raw"
}

@test "qcow2 create: defaults are version 3, 64 KiB clusters, 16-bit refcounts" {
    blkfuse create -f qcow2 "$T/a.qcow2" 100M
    created_ok "$T/a.qcow2" 100M "compat: 1.1" "cluster_size: 65536" "refcount bits: 16" \
        "lazy refcounts: false" "extended l2: false" "compression type: zlib" \
        "virtual size: 100 MiB"
}

@test "qcow2 create: every option" {
    blkfuse create -f qcow2 -o compat=0.10 "$T/a.qcow2" 10M
    created_ok "$T/a.qcow2" 10M "compat: 0.10"
    blkfuse create -f qcow2 -o cluster_size=512 "$T/a.qcow2" 10M
    created_ok "$T/a.qcow2" 10M "cluster_size: 512"
    blkfuse create -f qcow2 -o cluster_size=2M "$T/a.qcow2" 10M
    created_ok "$T/a.qcow2" 10M "cluster_size: 2097152"
    blkfuse create -f qcow2 -o lazy_refcounts=on "$T/a.qcow2" 10M
    created_ok "$T/a.qcow2" 10M "lazy refcounts: true"
    blkfuse create -f qcow2 -o extended_l2=on "$T/a.qcow2" 10M
    created_ok "$T/a.qcow2" 10M "extended l2: true"
    blkfuse create -f qcow2 -o compression_type=zstd "$T/a.qcow2" 10M
    created_ok "$T/a.qcow2" 10M "compression type: zstd"
    blkfuse create -f qcow2 -o refcount_bits=1 "$T/a.qcow2" 10M
    created_ok "$T/a.qcow2" 10M "refcount bits: 1"
    blkfuse create -f qcow2 -o refcount_bits=64,cluster_size=512 "$T/a.qcow2" 300M
    created_ok "$T/a.qcow2" 300M "refcount bits: 64" "cluster_size: 512"
}

@test "qcow2 create: preallocation metadata, falloc and full" {
    local p used
    for p in metadata falloc full; do
        blkfuse create -f qcow2 -o "preallocation=$p" "$T/p.qcow2" 20M
        created_ok "$T/p.qcow2" 20M "virtual size: 20 MiB"
        run qemu-img check "$T/p.qcow2"
        [[ $output == *"100.00% allocated"* ]]
        used=$(du -k "$T/p.qcow2" | cut -f1)
        if [[ $p == metadata ]]; then
            ((used < 2048))
        else
            ((used >= 20480))
        fi
    done
}

@test "qcow2 create: falloc and full preallocate past the first L2 table's reach (1.1 GiB)" {
    local p used
    for p in falloc full; do
        blkfuse create -f qcow2 -o "preallocation=$p" "$T/big.qcow2" 1100M
        run qemu-img check "$T/big.qcow2"
        [[ $output == *"100.00% allocated"* ]]
        # Every data cluster is in the file: its blocks, not only its length.
        used=$(du -k "$T/big.qcow2" | cut -f1)
        echo "$p: $used KiB used"
        ((used >= 1100 * 1024))
        rm -f "$T/big.qcow2"
    done
}

@test "qcow2 create: backing file and format, size taken from the backing file" {
    require_fuse
    qemu-img create -q -f raw "$T/base.raw" 6M
    qemu-io -f raw -c 'write -P 0x42 1M 2M' "$T/base.raw" >/dev/null
    blkfuse create -f qcow2 -b base.raw -F raw "$T/o.qcow2"
    run qemu-img info "$T/o.qcow2"
    echo "$output"
    [[ $output == *"virtual size: 6 MiB"* ]]
    [[ $output == *"backing file: base.raw"* ]]
    [[ $output == *"backing file format: raw"* ]]
    qemu-img compare -q "$T/o.qcow2" "$T/base.raw"
    blkfuse_mount "$T/o.qcow2" "$T/mp"
    cmp "$T/mp" "$T/base.raw"
    printf 'hello' | dd of="$T/mp" bs=1 seek=1500000 conv=notrunc status=none
    blkfuse unmount "$T/mp"
    wait_for_unmount "$T/mp"
    qemu-img check "$T/o.qcow2"
    cp "$T/base.raw" "$T/ref.raw"
    printf 'hello' | dd of="$T/ref.raw" bs=1 seek=1500000 conv=notrunc status=none
    qemu-img compare -q "$T/o.qcow2" "$T/ref.raw"
    # the backing file is untouched
    qemu-io -f raw -c 'read -P 0x42 1M 2M' "$T/base.raw" | grep -q 'read 2097152'
}

@test "qcow2 create: bad options are refused" {
    local o
    for o in cluster_size=1000 cluster_size=4M refcount_bits=3 compat=0.10,lazy_refcounts=on \
             extended_l2=on,cluster_size=4k compression_type=lzo preallocation=maybe compat=2.0 \
             nosuchoption=1; do
        run blkfuse create -f qcow2 -o "$o" "$T/bad.qcow2" 1M
        echo "$o: $status $output"
        [ "$status" -ne 0 ]
        [[ $output == *blkfuse:* ]]
        [ ! -e "$T/bad.qcow2" ]
    done
}

@test "qcow2 info: shows qcow2 details and internal snapshots" {
    blkfuse create -f qcow2 -o cluster_size=4k,lazy_refcounts=on "$T/i.qcow2" 8M
    qemu-img snapshot -c first "$T/i.qcow2"
    run blkfuse info "$T/i.qcow2"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == *qcow2* ]]
    [[ $output == *4096* ]]
    [[ $output == *first* ]]
}
