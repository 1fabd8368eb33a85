#!/usr/bin/env bats
# export-snapshot.bats - --snapshot: writes land in a temporary overlay that
# vanishes at unmount (or when the daemon dies); the image stays untouched.

load helpers

setup() {
    blkfuse_setup
    require_fuse
    require qemu-img
    MP=$T/disk.mnt
    REF=$T/ref.raw
    make_pattern "$REF" 8M
    truncate -s 16M "$REF"
}

# make_image FORMAT: IMG, an image of FORMAT with REF's contents; SUM, its md5.
make_image() {
    FMT=$1
    IMG=$T/disk.$FMT
    qemu-img convert -f raw -O "$FMT" "$REF" "$IMG"
    SUM=$(md5sum <"$IMG")
}

# overlay_of PID: the path of the snapshot overlay daemon PID holds open, from
# its /proc fd links (it is unlinked already: the " (deleted)" is dropped).
overlay_of() {
    local fd target
    for fd in /proc/"$1"/fd/*; do
        target=$(readlink "$fd") || continue
        if [[ $target == */blkfuse-snapshot-* ]]; then
            printf '%s\n' "${target% (deleted)}"
            return 0
        fi
    done
    return 1
}

# export_pid: the daemon pid that blkfuse list gives for the one export.
export_pid() {
    blkfuse list --json | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["pid"])'
}

# check_snapshot FORMAT: write through a --snapshot export, read it back, see
# it listed; after unmount the image and /var/tmp are as before.
check_snapshot() {
    local pid overlay
    make_image "$1"
    blkfuse_mount --snapshot "$IMG" "$MP"
    [ "$(stat -c %a "$MP")" = 600 ]
    head -c 3000000 /dev/urandom >"$T/piece"
    dd if="$T/piece" of="$MP" bs=1M seek=1000001 oflag=seek_bytes conv=notrunc,fsync status=none
    dd if="$T/piece" of="$REF" bs=1M seek=1000001 oflag=seek_bytes conv=notrunc status=none
    # Past the old data, into unallocated space.
    dd if="$T/piece" of="$MP" bs=1M seek=12 conv=notrunc,fsync status=none
    dd if="$T/piece" of="$REF" bs=1M seek=12 conv=notrunc status=none
    cmp "$MP" "$REF"
    # The image itself has not changed while mounted.
    [ "$(md5sum <"$IMG")" = "$SUM" ]

    run blkfuse list
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == *"$IMG"* ]]
    [[ $output == *"$MP"* ]]
    [[ $output == *snap* ]]
    [ "$(blkfuse list --json | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["snapshot"])')" = True ]

    pid=$(export_pid)
    overlay=$(overlay_of "$pid")
    echo "overlay: $overlay"
    [[ $overlay == /var/tmp/blkfuse-snapshot-* ]]

    blkfuse unmount "$MP"
    wait_for_pid_exit "$pid"
    [ ! -e "$overlay" ]
    [ "$(md5sum <"$IMG")" = "$SUM" ]
    if [[ $FMT == qcow2 ]]; then
        run qemu-img check "$IMG"
        echo "$output"
        [ "$status" -eq 0 ]
        [[ $output == *"No errors were found on the image."* ]]
    fi
}

@test "raw --snapshot: writes read back, the image and /var/tmp stay as before" {
    check_snapshot raw
}

@test "qcow2 --snapshot: writes read back, the image stays as before and clean" {
    check_snapshot qcow2
}

@test "--snapshot leaves no blkfuse-snapshot-* file in /var/tmp" {
    local before after
    make_image qcow2
    before=$(ls -d /var/tmp/blkfuse-snapshot-* 2>/dev/null | sort)
    blkfuse_mount --snapshot "$IMG" "$MP"
    dd if=/dev/urandom of="$MP" bs=64k count=16 conv=notrunc,fsync status=none
    blkfuse unmount "$MP"
    after=$(ls -d /var/tmp/blkfuse-snapshot-* 2>/dev/null | sort)
    # Other runs' overlays may come and go meanwhile; none may be new and stay.
    [ -z "$(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | grep .)" ]
}

@test "--snapshot puts the overlay in \$BLKFUSE_TMPDIR and removes it" {
    make_image qcow2
    mkdir "$T/tmpdir"
    BLKFUSE_TMPDIR=$T/tmpdir blkfuse_mount --snapshot "$IMG" "$MP"
    [[ $(overlay_of "$(export_pid)") == "$T/tmpdir/blkfuse-snapshot-"* ]]
    dd if=/dev/urandom of="$MP" bs=64k count=16 conv=notrunc,fsync status=none
    blkfuse unmount "$MP"
    [ -z "$(ls -A "$T/tmpdir")" ]
    [ "$(md5sum <"$IMG")" = "$SUM" ]
}

@test "--snapshot: the overlay is gone when the daemon is killed" {
    local pid overlay
    make_image raw
    blkfuse_mount --snapshot "$IMG" "$MP"
    dd if=/dev/urandom of="$MP" bs=64k count=16 conv=notrunc,fsync status=none
    pid=$(export_pid)
    overlay=$(overlay_of "$pid")
    [ -n "$overlay" ]
    kill -KILL "$pid"
    wait_for_pid_exit "$pid"
    [ ! -e "$overlay" ]
    [ "$(md5sum <"$IMG")" = "$SUM" ]
    # The dead mount is left for teardown (it unmounts it lazily).
}
