#!/usr/bin/env bats
# raw-probe-guard.bats - a raw image whose format was probed cannot turn itself into another
# format through the export: writing a qcow2 header into its first sector fails with EPERM.

load helpers

setup() {
    blkfuse_setup
    require_fuse
    require qemu-img
    make_pattern "$T/disk.raw" 4M
    # The first 512 bytes of a real qcow2 image: what a guest might write.
    qemu-img create -q -f qcow2 "$T/q.qcow2" 1M
    head -c 512 "$T/q.qcow2" >"$T/header"
    cp "$T/disk.raw" "$T/ref.raw"
}

@test "a probed raw image refuses a qcow2 header in its first sector, and logs to pass -f raw" {
    blkfuse_mount "$T/disk.raw" "$T/disk.img"
    run dd if="$T/header" of="$T/disk.img" bs=512 count=1 conv=notrunc,fsync
    [ "$status" -ne 0 ]
    [[ $output == *"Operation not permitted"* ]]
    grep -q -- "-f raw" "$T/daemon.log"
    # nothing of the refused write shows, not even from the kernel's page cache
    cmp -n 4096 "$T/disk.img" "$T/ref.raw"
    # writes elsewhere, and harmless writes to sector 0, still work
    printf 'ordinary data' | dd of="$T/disk.img" bs=1 seek=100 conv=notrunc status=none
    printf 'ordinary data' | dd of="$T/ref.raw" bs=1 seek=100 conv=notrunc status=none
    blkfuse unmount "$T/disk.img"
    cmp "$T/disk.raw" "$T/ref.raw"
    [ "$(blkfuse info "$T/disk.raw" | sed -n 's/^format: //p')" = raw ]
}

@test "with -f raw the same write is allowed" {
    blkfuse_mount -f raw "$T/disk.raw" "$T/disk.img"
    dd if="$T/header" of="$T/disk.img" bs=512 count=1 conv=notrunc,fsync status=none
    blkfuse unmount "$T/disk.img"
    cmp -n 512 "$T/disk.raw" "$T/header"
}
