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

    attach_loop "$MP" --direct-io=on
    # losetup falls back to buffered I/O silently: make sure it did not.
    [ "$(losetup -n -O DIO "$LOOP" | tr -d ' ')" = 1 ]
    mkfs.ext4 -q -F "$LOOP"
    mount_dev "$LOOP" "$FS"
    write_files "$FS"
    umount "$FS"
    run fsck.ext4 -n -f "$LOOP"
    echo "$output"
    [ "$status" -eq 0 ]
    detach_loop "$LOOP" "$MP"
    blkfuse unmount "$MP"

    run qemu-img check "$IMG"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == *"No errors were found on the image."* ]]
    [[ $output != *leak* ]]

    # Independently of blkfuse: the image's contents are that file system.
    qemu-img convert -f qcow2 -O raw "$IMG" "$T/fs.raw"
    run fsck.ext4 -n -f "$T/fs.raw"
    echo "$output"
    [ "$status" -eq 0 ]
    attach_loop "$T/fs.raw" -r
    mount_dev "$LOOP" "$FS" -o ro
    (cd "$FS" && sha256sum --quiet --strict -c "$T/sums")
    umount "$FS"
    detach_loop "$LOOP" "$T/fs.raw"
}

@test "qcow2: ext4 on a direct-I/O loop device over the export, fsck and qemu-img check clean" {
    check_qcow2_loop
}

@test "qcow2: ext4 on a direct-I/O loop device over a cache=none export with 2 queues" {
    check_qcow2_loop --cache=none --queues=2
}
