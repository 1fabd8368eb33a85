#!/usr/bin/env bats
# rbd.bats - the rbd protocol driver against a one-node Ceph cluster started for this file
# (tests/ceph-helpers.bash): contents equal `rbd export` for raw and for a qcow2 stored in RBD,
# writes, discards and zero-writes reach the cluster, snapshots, sizes, names, the connect
# timeout, and losing the OSD (reconnect-timeout).

load helpers
load ceph-helpers

setup_file() {
    local reason
    reason=$(ceph_missing) || true
    export CEPH_SKIP=$reason
    [[ -z $CEPH_SKIP ]] || return 0
    # A short path: the daemons' admin sockets live in it (unix socket paths are short).
    CEPH_TOP=$(mktemp -d /tmp/blkfuse-ceph.XXXXXX)
    export CEPH_TOP
    ceph_start "$CEPH_TOP/cluster"
}

teardown_file() {
    [[ -z $CEPH_SKIP ]] || return 0
    ceph_stop
    rm -rf --one-file-system "$CEPH_TOP"
}

setup() {
    blkfuse_setup
    [[ -z $CEPH_SKIP ]] || skip "$CEPH_SKIP"
    require_fuse
    # Each test has its own images, named after it.
    IMG=t$BATS_TEST_NUMBER
    URI="rbd:rbd/$IMG:conf=$CEPH_CONF"
    MP=$T/disk
}

teardown() {
    blkfuse_teardown
}

# export_cmp NAME FILE: the image NAME in the cluster holds exactly FILE's bytes.
export_cmp() {
    rm -f "$T/export.raw"
    rbd export "rbd/$1" "$T/export.raw" >/dev/null 2>&1
    cmp "$T/export.raw" "$2"
}

@test "rbd: a raw image reads as 'rbd export' has it, format probed and given" {
    make_pattern "$T/ref" 12M
    rbd import "$T/ref" "rbd/$IMG" >/dev/null 2>&1
    blkfuse_mount "$URI" "$MP"
    [ "$(stat -c %s "$MP")" -eq $((12 * 1048576)) ]
    cmp "$MP" "$T/ref"
    export_cmp "$IMG" "$MP"
    blkfuse unmount "$MP"
    blkfuse_mount -f raw -r "$URI" "$MP"
    cmp "$MP" "$T/ref"
}

@test "rbd: a qcow2 stored in RBD reads as qemu-img has it, probed and with -f qcow2" {
    require qemu-img qemu-io
    qemu-img create -q -f qcow2 "$T/q.qcow2" 32M
    qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' -c 'write -P 0xa5 7M 3M' \
        -c 'write -P 0x11 31M 512k' "$T/q.qcow2" >/dev/null
    qemu-img convert -O raw "$T/q.qcow2" "$T/ref"
    rbd import "$T/q.qcow2" "rbd/$IMG" >/dev/null 2>&1
    blkfuse_mount -r "$URI" "$MP"
    [ "$(stat -c %s "$MP")" -eq $((32 * 1048576)) ]
    cmp "$MP" "$T/ref"
    blkfuse unmount "$MP"
    blkfuse_mount -r -f qcow2 "$URI" "$MP"
    cmp "$MP" "$T/ref"
}

@test "rbd: writes from several queues reach the cluster, and fsync flushes them" {
    rbd create --size 16M "rbd/$IMG"
    make_raw "$T/model" 16M
    blkfuse_mount --queues 4 "$URI" "$MP"
    head -c $((3 * 1048576 + 4096)) /dev/urandom >"$T/data"
    # Four writers at once, each on its own range.  (wait for these pids only: the cluster's
    # daemons are children of this shell too.)
    local pids=() i
    for i in 0 1 2 3; do
        dd if="$T/data" of="$MP" bs=4096 seek=$((i * 1000 + 1)) conv=notrunc,fsync \
            status=none 3>&- &
        pids+=($!)
    done
    for i in "${pids[@]}"; do
        wait "$i"
    done
    for i in 0 1 2 3; do
        dd if="$T/data" of="$T/model" bs=4096 seek=$((i * 1000 + 1)) conv=notrunc status=none
    done
    printf 'odd bytes here' | dd of="$MP" bs=1 seek=12345 conv=notrunc,fsync status=none
    printf 'odd bytes here' | dd of="$T/model" bs=1 seek=12345 conv=notrunc status=none
    cmp "$MP" "$T/model"
    # fsync returned: the data is in the cluster while the export is still mounted.
    export_cmp "$IMG" "$T/model"
    blkfuse unmount "$MP"
    export_cmp "$IMG" "$T/model"
}

@test "rbd: the size comes from the cluster; info and list show the image, no secrets" {
    rbd create --size 40M "rbd/$IMG"
    run -0 blkfuse info "$URI"
    [[ $output == *"image: rbd:rbd/$IMG"* ]]
    [[ $output == *"virtual size: 40 MiB (41943040 bytes)"* ]]
    [[ $output == *"format: raw"* ]]
    blkfuse_mount "$URI" "$MP"
    [ "$(stat -c %s "$MP")" -eq 41943040 ]
    run -0 blkfuse list
    [[ $output == *"rbd:rbd/$IMG"* ]]
    # A key in the name is refused, and never echoed.
    run blkfuse info "rbd:rbd/$IMG:conf=$CEPH_CONF:key=AQBsecretsecret=="
    [ "$status" -ne 0 ]
    [[ $output == *"keyring"* ]]
    [[ $output != *"AQBsecret"* ]]
}

@test "rbd: a snapshot is exported read-only, and needs -r" {
    make_pattern "$T/ref" 8M
    rbd import "$T/ref" "rbd/$IMG" >/dev/null 2>&1
    rbd snap create "rbd/$IMG@before" >/dev/null 2>&1
    blkfuse_mount "$URI" "$MP"
    head -c 1M /dev/urandom | dd of="$MP" bs=64k seek=3 conv=notrunc,fsync status=none
    blkfuse unmount "$MP"
    EXPECTED_LOG_ERRORS="snapshot 'before' can only be opened read-only"
    run blkfuse mount --log-file "$T/daemon.log" "rbd:rbd/$IMG@before:conf=$CEPH_CONF" "$MP"
    [ "$status" -ne 0 ]
    [[ $output == *"snapshot 'before' can only be opened read-only (mount it with --read-only)"* ]]
    blkfuse_mount -r "rbd:rbd/$IMG@before:conf=$CEPH_CONF" "$MP"
    [ "$(stat -c %a "$MP")" = 400 ]
    cmp "$MP" "$T/ref"
    run dd if=/dev/zero of="$MP" bs=4096 count=1 conv=notrunc
    [ "$status" -ne 0 ]
}

@test "rbd: bad names and missing images fail with a message naming them" {
    run blkfuse info "rbd:rbd"
    [ "$status" -ne 0 ]
    [[ $output == *"expected rbd:POOL/IMAGE"* ]]
    run blkfuse info "rbd:rbd/$IMG:conf=$CEPH_CONF:frobnicate=1"
    [ "$status" -ne 0 ]
    [[ $output == *"unknown rbd option 'frobnicate'"* ]]
    run blkfuse info "rbd:rbd/no-such-image:conf=$CEPH_CONF"
    [ "$status" -ne 0 ]
    [[ $output == *"cannot open image 'no-such-image' in pool 'rbd'"* ]]
    run blkfuse info "rbd:no-such-pool/x:conf=$CEPH_CONF"
    [ "$status" -ne 0 ]
    [[ $output == *"cannot open the pool 'no-such-pool'"* ]]
    run blkfuse info "rbd:rbd/x:conf=$T/none.conf"
    [ "$status" -ne 0 ]
    [[ $output == *"cannot read the Ceph configuration $T/none.conf"* ]]
}

@test "rbd: an unreachable monitor fails within connect-timeout, naming it" {
    local port start elapsed
    port=$(_ceph_free_port)
    printf '[global]\nmon host = v1:127.0.0.1:%s\nauth client required = none\n' "$port" \
        >"$T/dead.conf"
    EXPECTED_LOG_ERRORS="cannot connect to the Ceph monitors"
    start=$(_now_ms)
    run blkfuse mount --log-file "$T/daemon.log" -o connect-timeout=2 \
        "rbd:rbd/x:conf=$T/dead.conf" "$MP"
    elapsed=$(($(_now_ms) - start))
    [ "$status" -ne 0 ]
    [[ $output == *"cannot connect to the Ceph monitors at v1:127.0.0.1:$port"* ]]
    [[ $output == *"within 2 s (connect-timeout)"* ]]
    [ "${#lines[@]}" -eq 1 ]
    # 2 s, and some slack for a busy machine; the default would be 20 s.
    ((elapsed < 15000))
}
