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

# detach_loop DEV FILE: detach DEV and wait until no loop device holds FILE
# (the kernel lets go of the backing file asynchronously).
detach_loop() {
    local dev=$1 file=$2 i
    losetup -d "$dev"
    for ((i = 0; i < 100; i++)); do
        [[ -z $(losetup -n -j "$file" 2>/dev/null) ]] && return 0
        sleep 0.05
    done
    echo "detach_loop: $file is still attached: $(losetup -n -j "$file")" >&2
    return 1
}

# write_files DIR: files of assorted sizes in DIR, their checksums in $T/sums.
write_files() {
    local dir=$1 i
    mkdir -p "$dir/sub"
    head -c 1 /dev/urandom >"$dir/one-byte"
    head -c 4097 /dev/urandom >"$dir/sub/page-and-a-byte"
    head -c $((5 * 1048576 + 3)) /dev/urandom >"$dir/sub/five-megs"
    head -c $((16 * 1048576)) /dev/urandom >"$dir/sixteen-megs"
    for i in $(seq 1 40); do
        echo "small file $i" >"$dir/sub/small-$i"
    done
    (cd "$dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$T/sums"
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
