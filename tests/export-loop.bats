#!/usr/bin/env bats
# export-loop.bats - the export as the backing file of a loop device holding
# ext4: mkfs, files written through the kernel, fsck clean, data in the image.

load helpers

setup() {
    blkfuse_setup
    require_fuse
    require_loop
    require mkfs.ext4 fsck.ext4 sha256sum
    IMG=$T/disk.img
    MP=$T/disk.mnt
    FS=$T/fs
}

# ext4 on a loop device backed by an export mounted with ARGS; LOSETUP_ARGS
# (an array, may be empty) go to losetup.
check_ext4_on_loop() {
    make_raw "$IMG" 128M
    blkfuse_mount "$@" "$IMG" "$MP"
    ext4_on_loop "$MP" "$FS" ${LOSETUP_ARGS[@]+"${LOSETUP_ARGS[@]}"}
    blkfuse unmount "$MP"
    # The image itself is a clean ext4 holding the files.
    ext4_image_has_files "$IMG" "$FS"
}

@test "ext4 on a loop device over the export: files survive, fsck is clean" {
    LOSETUP_ARGS=()
    check_ext4_on_loop
}

@test "ext4 on a direct-I/O loop device over the export: files survive, fsck is clean" {
    LOSETUP_ARGS=(--direct-io=on)
    check_ext4_on_loop
}

@test "ext4 on a direct-I/O loop device over a cache=none export with 2 queues" {
    LOSETUP_ARGS=(--direct-io=on)
    check_ext4_on_loop --cache=none --queues=2
}
