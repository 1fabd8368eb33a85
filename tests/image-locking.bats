#!/usr/bin/env bats
# image-locking.bats - blkfuse takes QEMU-compatible image locks: one writer, or many readers.

load helpers

setup() {
    blkfuse_setup
    require_fuse
    require qemu-img qemu-io
    qemu-img create -q -f qcow2 "$T/disk.qcow2" 16M
}

@test "qemu-io cannot write an image blkfuse exports read-write" {
    blkfuse_mount "$T/disk.qcow2" "$T/disk.img"
    run qemu-io -c 'write 0 4k' "$T/disk.qcow2"
    [ "$status" -ne 0 ]
    [[ "$output" == *"lock"* ]]
}

@test "qemu-img info needs -U on an image blkfuse exports read-write" {
    blkfuse_mount "$T/disk.qcow2" "$T/disk.img"
    run qemu-img info "$T/disk.qcow2"
    [ "$status" -ne 0 ]
    run qemu-img info -U "$T/disk.qcow2"
    [ "$status" -eq 0 ]
}

@test "a second read-write export of one image is refused, naming the image" {
    blkfuse_mount "$T/disk.qcow2" "$T/a.img"
    run blkfuse mount --log-file "$T/second.log" "$T/disk.qcow2" "$T/b.img"
    [ "$status" -eq 1 ]
    [[ "$output" == *"disk.qcow2"*"in use"* ]]
    [ ! -e "$T/b.img" ]
}

@test "two read-only exports of one image coexist" {
    blkfuse_mount -r "$T/disk.qcow2" "$T/a.img"
    blkfuse_mount -r "$T/disk.qcow2" "$T/b.img"
    cmp "$T/a.img" "$T/b.img"
}

@test "blkfuse refuses an image that qemu-storage-daemon has open for writing" {
    require qemu-storage-daemon
    qemu-storage-daemon --blockdev driver=file,node-name=f,filename="$T/disk.qcow2" \
        --blockdev driver=qcow2,node-name=q,file=f \
        --nbd-server addr.type=unix,addr.path="$T/nbd.sock" \
        --export type=nbd,id=e,node-name=q,writable=on >"$T/qsd.log" 2>&1 &
    PIDS+=("$!")
    wait_until 5 test -S "$T/nbd.sock"
    run blkfuse mount --log-file "$T/second.log" "$T/disk.qcow2" "$T/a.img"
    [ "$status" -eq 1 ]
    [[ "$output" == *"in use by another process"* ]]
    run blkfuse mount -r --log-file "$T/second.log" "$T/disk.qcow2" "$T/a.img"
    [ "$status" -eq 1 ]
}

@test "-o locking=off skips the locks" {
    blkfuse_mount "$T/disk.qcow2" "$T/a.img"
    blkfuse_mount -r -o locking=off "$T/disk.qcow2" "$T/b.img"
    [ "$(stat -c %s "$T/b.img")" -eq $((16 * 1024 * 1024)) ]
}
