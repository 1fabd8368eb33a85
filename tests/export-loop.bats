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

    attach_loop "$MP" ${LOSETUP_ARGS[@]+"${LOSETUP_ARGS[@]}"}
    if [[ " ${LOSETUP_ARGS[*]-} " == *" --direct-io=on "* ]]; then
        # losetup falls back to buffered I/O silently: make sure it did not.
        [ "$(losetup -n -O DIO "$LOOP" | tr -d ' ')" = 1 ]
    fi
    mkfs.ext4 -q -F "$LOOP"
    mount_dev "$LOOP" "$FS"
    write_files "$FS"
    sync -f "$FS/one-byte"
    umount "$FS"
    run fsck.ext4 -n -f "$LOOP"
    echo "$output"
    [ "$status" -eq 0 ]
    detach_loop "$LOOP" "$MP"
    blkfuse unmount "$MP"

    # The image itself is a clean ext4 holding the files.
    run fsck.ext4 -n -f "$IMG"
    echo "$output"
    [ "$status" -eq 0 ]
    attach_loop "$IMG" -r
    mount_dev "$LOOP" "$FS" -o ro
    (cd "$FS" && sha256sum --quiet --strict -c "$T/sums")
    umount "$FS"
    detach_loop "$LOOP" "$IMG"
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
