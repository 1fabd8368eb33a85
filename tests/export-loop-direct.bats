#!/usr/bin/env bats
# export-loop-direct.bats - ext4 on a direct-I/O loop device over a qcow2
# export: mkfs, files, fsck clean; afterwards the qcow2 is clean for
# qemu-img check and holds that file system.

load helpers

setup() {
    blkfuse_setup
    require_fuse
    require_loop
    require mkfs.ext4 fsck.ext4 sha256sum qemu-img
    IMG=$T/disk.qcow2
    MP=$T/disk.mnt
    FS=$T/fs
}

# check_qcow2_loop ARGS...: the whole round trip over a qcow2 export mounted
# with ARGS.
check_qcow2_loop() {
    qemu-img create -q -f qcow2 "$IMG" 128M
    blkfuse_mount -f qcow2 "$@" "$IMG" "$MP"
    ext4_on_loop "$MP" "$FS" --direct-io=on
    blkfuse unmount "$MP"

    run qemu-img check "$IMG"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == *"No errors were found on the image."* ]]
    [[ $output != *leak* ]]

    # Independently of blkfuse: the image's contents are that file system.
    qemu-img convert -f qcow2 -O raw "$IMG" "$T/fs.raw"
    ext4_image_has_files "$T/fs.raw" "$FS"
}

@test "qcow2: ext4 on a direct-I/O loop device over the export, fsck and qemu-img check clean" {
    check_qcow2_loop
}

@test "qcow2: ext4 on a direct-I/O loop device over a cache=none export with 2 queues" {
    check_qcow2_loop --cache=none --queues=2
}
