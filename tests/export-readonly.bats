#!/usr/bin/env bats
# export-readonly.bats - -r exports: mode 0400, EROFS for every way of writing
# (even for root), the image untouched; and the mode and owner of rw exports.

load helpers

setup() {
    export_setup 8M
}

# The image must still hold exactly what setup put there.
image_unchanged() {
    [ "$(sha256sum <"$IMG")" = "$SUM" ]
}

@test "-r exports the file with mode 0400 and the image's data" {
    blkfuse_mount -r "$IMG" "$MP"
    [ "$(stat -c %a "$MP")" = 400 ]
    cmp "$MP" "$IMG"
}

@test "-r: opening for write fails with EROFS, even for root" {
    blkfuse_mount -r "$IMG" "$MP"
    run --separate-stderr dd if=/dev/zero of="$MP" bs=4096 count=1 conv=notrunc
    [ "$status" -ne 0 ]
    [[ $stderr == *"Read-only file system"* ]]
    # Whoever runs this (root bypasses the mode bits), open(O_RDWR) is refused.
    run python3 -c 'import os, sys; os.open(sys.argv[1], os.O_RDWR)' "$MP"
    [ "$status" -ne 0 ]
    [[ $output == *"Read-only file system"* ]]
    blkfuse unmount "$MP"
    image_unchanged
}

@test "-r: truncate fails with EROFS and the size stays" {
    blkfuse_mount -r "$IMG" "$MP"
    run --separate-stderr truncate -s 4M "$MP"
    [ "$status" -ne 0 ]
    [[ $stderr == *"Read-only file system"* ]]
    run --separate-stderr truncate -s 16M "$MP"
    [ "$status" -ne 0 ]
    [ "$(stat -c %s "$MP")" -eq $((8 * 1048576)) ]
    blkfuse unmount "$MP"
    image_unchanged
}

@test "-r: chmod cannot make the file writable" {
    blkfuse_mount --read-only "$IMG" "$MP"
    chmod 0600 "$MP" 2>/dev/null || true
    [ "$(stat -c %a "$MP")" = 400 ]
    run --separate-stderr dd if=/dev/zero of="$MP" bs=512 count=1 conv=notrunc
    [ "$status" -ne 0 ]
    blkfuse unmount "$MP"
    image_unchanged
}

@test "-r: reading everything and closing leaves the image unchanged" {
    blkfuse_mount -r "$IMG" "$MP"
    cat "$MP" >/dev/null
    sync "$MP" 2>/dev/null || true
    blkfuse unmount "$MP"
    image_unchanged
}

@test "a read-write export has mode 0600 and belongs to the mounting user" {
    blkfuse_mount "$IMG" "$MP"
    [ "$(stat -c %a "$MP")" = 600 ]
    [ "$(stat -c %u:%g "$MP")" = "$(id -u):$(id -g)" ]
}
