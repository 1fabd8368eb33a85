#!/usr/bin/env bats
# export-mountpoint.bats - what may be a mountpoint: a file already carrying a
# mount is refused however its path is spelled, a directory is refused, and the
# image file itself may be exported over.

load helpers

setup() {
    export_setup 4M
    IMG2=$T/other.img
    make_pattern "$IMG2" 2M
    # The refused mounts are logged as errors by the daemons they start.
    EXPECTED_LOG_ERRORS='already|regular file|is a directory'
}

# refused_already MOUNTPOINT-SPELLING: a second export of IMG2 on the first
# export's file, spelled that way, fails with status 1 and "already", and the
# first export is still there and still serves its image.
refused_already() {
    run --separate-stderr blkfuse mount --log-file "$T/daemon.log" "$IMG2" "$1"
    echo "status $status, stderr: $stderr"
    [ "$status" -eq 1 ]
    [[ $stderr == *already* ]]
    is_mounted "$MP"
    cmp "$MP" "$IMG"
    [ "$(blkfuse list --json | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')" -eq 1 ]
}

@test "a second export on the same path is refused with 'already'" {
    blkfuse_mount "$IMG" "$MP"
    refused_already "$MP"
}

@test "a second export on ./name from the file's directory is refused" {
    blkfuse_mount "$IMG" "$MP"
    cd "$T"
    refused_already ./disk.mnt
    refused_already disk.mnt
}

@test "a second export through a symlink to the mounted file is refused" {
    blkfuse_mount "$IMG" "$MP"
    ln -s "$MP" "$T/link"
    refused_already "$T/link"
    # A relative symlink in another directory.
    mkdir "$T/sub"
    ln -s ../disk.mnt "$T/sub/rel"
    refused_already "$T/sub/rel"
}

@test "a second export on an absolute path with // or /./ is refused" {
    blkfuse_mount "$IMG" "$MP"
    mkdir "$T/sub"
    refused_already "${T}//disk.mnt"
    refused_already "${T}/./disk.mnt"
    refused_already "/${T}/sub/../disk.mnt"
    refused_already "${T%/*}//${T##*/}/./disk.mnt"
}

@test "a file carrying another kind of mount (a bind mount) is refused" {
    require_root
    touch "$T/src" "$T/target"
    UMOUNTS+=("$T/target")
    mount --bind "$T/src" "$T/target"
    run --separate-stderr blkfuse mount --log-file "$T/daemon.log" "$IMG2" "$T/target"
    echo "status $status, stderr: $stderr"
    [ "$status" -eq 1 ]
    [[ $stderr == *already* ]]
    # The bind mount is still what is on the file.
    run ! is_mounted "$T/target"
    mountpoint -q "$T/target"
    umount "$T/target"
}

@test "a directory mountpoint is refused with 'regular file'" {
    mkdir "$T/dir"
    run --separate-stderr blkfuse mount --log-file "$T/daemon.log" "$IMG" "$T/dir"
    echo "status $status, stderr: $stderr"
    [ "$status" -eq 1 ]
    [[ $stderr == *"regular file"* ]]
    run ! is_mounted "$T/dir"
    [ -d "$T/dir" ]
    [ "$(blkfuse list --json)" = "[]" ] || [ -z "$(blkfuse list --json | tr -d '[:space:][]')" ]
}

# write_both FILE OFFSET: 100000 random bytes at OFFSET of FILE and of $T/ref, which then
# read the same.
write_both() {
    head -c 100000 /dev/urandom >"$T/piece"
    dd if="$T/piece" of="$1" bs=100000 seek="$2" oflag=seek_bytes conv=notrunc status=none
    dd if="$T/piece" of="$T/ref" bs=100000 seek="$2" oflag=seek_bytes conv=notrunc status=none
    cmp "$1" "$T/ref"
}

@test "raw: exporting over the image file itself serves and keeps the image" {
    cp "$IMG" "$T/ref"
    blkfuse_mount -f raw "$IMG" "$IMG"
    [ "$(stat -c %s "$IMG")" -eq $((4 * 1048576)) ]
    cmp "$IMG" "$T/ref"
    write_both "$IMG" 12345
    blkfuse unmount "$IMG"
    run ! is_mounted "$IMG"
    # The image existed before the mount, so it stays, now with the data.
    [ -f "$IMG" ]
    [ "$(stat -c %s "$IMG")" -eq $((4 * 1048576)) ]
    cmp "$IMG" "$T/ref"
}

@test "qcow2: exporting over the image file itself serves and keeps the image" {
    require qemu-img
    local q=$T/disk.qcow2
    qemu-img convert -f raw -O qcow2 "$IMG" "$q"
    cp "$IMG" "$T/ref"
    blkfuse_mount -f qcow2 "$q" "$q"
    [ "$(stat -c %s "$q")" -eq $((4 * 1048576)) ]
    cmp "$q" "$T/ref"
    write_both "$q" 777777
    blkfuse unmount "$q"
    [ -f "$q" ]
    qemu-img check "$q"
    run qemu-img compare -f qcow2 -F raw "$q" "$T/ref"
    echo "$output"
    [[ $output == *"Images are identical."* ]]
}
