#!/usr/bin/env bats
# qcow2-bitmap-backup.bats - the incremental backup recipe of the README (taken from it, so the
# documented script is the tested one): a full backup the first night, then qcow2 overlays
# with only the ranges `blkfuse map --changed` lists.  Over three nights of random writes (by
# QEMU and through a blkfuse mount), every night's backup restores byte for byte, and each
# incremental run reads exactly the changed ranges from the image, and a full one exactly its
# data (bytes read, counted by `blkfuse stats`).  After a crash (the bitmap left in use) the next night is a full backup.

load helpers

ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
SIZE=$((32 << 20))

setup() {
    blkfuse_setup
    require_fuse
    require qemu-img qemu-io fallocate
    # the script of README.md's "Incremental backups from a shell script"
    awk '/^# blkfuse-backup IMAGE DIR:/ { on = 1; print prev } on && /^```$/ { exit }
         on { print } { prev = $0 }' "$ROOT/README.md" >"$T/backup.sh"
    [ "$(wc -l <"$T/backup.sh")" -gt 20 ]
    mkdir "$T/dir"
    qemu-img create -q -f qcow2 "$T/vm.qcow2" $SIZE
    qemu-io -f qcow2 -c 'write -P 0x11 0 3M' -c 'write -P 0x22 9M 5M' -c 'write -P 0x33 31M 1M' \
        "$T/vm.qcow2" >/dev/null
}

# backup: run the recipe; prints "N: read BYTES bytes".
backup() {
    sh "$T/backup.sh" "$T/vm.qcow2" "$T/dir" 3>&-
}

# changed_bytes BITMAP: the bytes `blkfuse map --changed` lists.
changed_bytes() {
    blkfuse map --changed="$1" "$T/vm.qcow2" | awk '{ n += $2 } END { print n + 0 }'
}

# data_bytes: the bytes of the image that hold data (qemu-img map): what a full backup reads,
# its holes skipped.
data_bytes() {
    qemu-img map --output=json "$T/vm.qcow2" |
        python3 -c 'import json, sys; print(sum(e["length"] for e in json.load(sys.stdin) if e["data"]))'
}

# a_night N: random writes of night N: by QEMU (qemu-io) and through a blkfuse mount (dd,
# punched holes).
a_night() {
    local i off len
    RANDOM=$1
    for ((i = 0; i < 6; i++)); do
        off=$(( (RANDOM * 997) % (SIZE - 300000) ))
        len=$(( RANDOM % 200000 + 1 ))
        qemu-io -f qcow2 -c "write -P $((RANDOM % 255 + 1)) $off $len" "$T/vm.qcow2" >/dev/null
    done
    blkfuse_mount "$T/vm.qcow2" "$T/mp"
    for ((i = 0; i < 6; i++)); do
        off=$(( (RANDOM * 997) % (SIZE - 300000) ))
        len=$(( RANDOM % 200000 + 1 ))
        dd if=/dev/urandom of="$T/mp" bs=64k iflag=count_bytes oflag=seek_bytes seek=$off \
            count=$len conv=notrunc status=none
    done
    fallocate -p -o $(( (RANDOM * 997) % (SIZE - 300000) )) -l 100000 "$T/mp"
    blkfuse unmount "$T/mp"
}

@test "backup recipe: three nights of changes restore byte for byte, reading only what changed" {
    local n want
    want=$(data_bytes)
    run backup
    echo "$output"
    [ "$status" -eq 0 ]
    # the full backup reads the data and none of the holes
    [ "$output" = "1: read $want bytes" ]
    ((want > 0 && want < SIZE))
    qemu-img convert -O raw "$T/vm.qcow2" "$T/night1.raw"

    for n in 2 3 4; do
        a_night "$n"
        want=$(changed_bytes "backup-$((n - 1))")
        run backup
        echo "night $n: $output (changed: $want bytes)"
        [ "$status" -eq 0 ]
        [ "$output" = "$n: read $want bytes" ]
        ((want > 0 && want < SIZE / 10))
        qemu-img convert -O raw "$T/vm.qcow2" "$T/night$n.raw"
    done

    # every night restores from its overlay (and the chain below it) as it was
    for n in 1 2 3 4; do
        qemu-img check -q "$T/dir/$n.qcow2"
        qemu-img convert -O raw "$T/dir/$n.qcow2" "$T/restored.raw"
        cmp "$T/restored.raw" "$T/night$n.raw"
    done
    run qemu-img info --output=json --backing-chain "$T/dir/4.qcow2"
    [ "$(grep -c '"filename"' <<<"$output")" -eq 4 ]
    # one bitmap is left: tonight's, the next night's list of changes
    run blkfuse info "$T/vm.qcow2"
    [[ $output == *"name: backup-4"* && $output != *"backup-3"* ]]
    qemu-img check "$T/vm.qcow2"
}

@test "backup recipe: after a crash (bitmap in use) the next night is a full backup" {
    local want
    run backup
    [ "$status" -eq 0 ]
    blkfuse_mount_foreground "$T/vm.qcow2" "$T/mp"
    dd if=/dev/urandom of="$T/mp" bs=64k seek=7 count=3 conv=notrunc,fsync status=none
    kill_daemon "$T/mp"
    run blkfuse map --changed=backup-1 "$T/vm.qcow2"
    echo "$output"
    [ "$status" -eq 1 ]
    [[ $output == *inconsistent* ]]

    want=$(data_bytes)
    run backup
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == *"bitmap 'backup-1' is inconsistent"* ]]    # why it is a full backup
    [ "${lines[-1]}" = "2: read $want bytes" ]
    qemu-img convert -O raw "$T/vm.qcow2" "$T/now.raw"
    qemu-img convert -O raw "$T/dir/2.qcow2" "$T/restored.raw"
    cmp "$T/restored.raw" "$T/now.raw"
}

@test "blkfuse map: --help, bad options, a missing bitmap, json output" {
    run blkfuse map --help
    [ "$status" -eq 0 ]
    [[ $output == *"--changed"* && $output == *"--output"* ]]
    run blkfuse map "$T/vm.qcow2"
    [ "$status" -eq 2 ]
    run blkfuse map --changed=x --output=xml "$T/vm.qcow2"
    [ "$status" -eq 2 ]
    run blkfuse map --changed=nope "$T/vm.qcow2"
    [ "$status" -eq 1 ]
    [[ $output == *"bitmap 'nope' not found"* ]]
    blkfuse bitmap --add -g 128k "$T/vm.qcow2" b
    qemu-io -f qcow2 -c 'write 1M 4k' -c 'write 1100k 100k' -c 'write 20M 1' "$T/vm.qcow2" \
        >/dev/null
    run blkfuse map --changed=b "$T/vm.qcow2"
    echo "$output"
    [ "$output" = "$(printf '%s\n' '1048576 262144' '20971520 131072')" ]
    run blkfuse map --changed=b --output=json "$T/vm.qcow2"
    echo "$output"
    [ "$(tr -d ' \n' <<<"$output")" = \
        '[{"start":1048576,"length":262144},{"start":20971520,"length":131072}]' ]
}

@test "blkfuse mount -r --changed: SEEK_DATA/SEEK_HOLE and st_blocks show only what changed" {
    require python3
    local r off len total=0
    blkfuse bitmap --add "$T/vm.qcow2" b
    qemu-io -f qcow2 -c 'write -P 0x44 1M 100k' -c 'write -z 9M 64k' -c 'discard 31M 128k' \
        -c 'write -P 0x55 20M 1' "$T/vm.qcow2" >/dev/null
    blkfuse map --changed=b "$T/vm.qcow2" >"$T/map"
    cat "$T/map"
    while read -r off len; do total=$((total + len)); done <"$T/map"
    ((total == 2 * 131072 + 2 * 65536))

    run blkfuse mount --changed=b "$T/vm.qcow2" "$T/mp"
    [ "$status" -eq 2 ]
    [[ $output == *"--changed needs --read-only"* ]]
    blkfuse_mount -r --changed=b "$T/vm.qcow2" "$T/mp"
    # the data segments are the changed ranges, the zeroed and discarded ones included
    python3 - "$T/mp" >"$T/seek" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
off = 0
while True:
    try:
        data = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        break
    hole = os.lseek(fd, data, os.SEEK_HOLE)
    print(data, hole - data)
    off = hole
PY
    diff "$T/map" "$T/seek"
    [ "$(stat -c %b "$T/mp")" -eq $((total / 512)) ]
    # reads: the current data, everywhere
    qemu-img convert -O raw "$T/vm.qcow2" "$T/now.raw"
    cmp "$T/mp" "$T/now.raw"
    # a copy of the data segments only holds the changed ranges
    cp --sparse=always "$T/mp" "$T/copy.raw"
    while read -r off len; do
        cmp -n "$len" "$T/copy.raw" "$T/now.raw" "$off" "$off"
    done <"$T/map"
    blkfuse unmount "$T/mp"

    # a missing or inconsistent bitmap: the mount fails and says why
    run blkfuse mount -r --changed=nope "$T/vm.qcow2" "$T/mp"
    [ "$status" -ne 0 ]
    [[ $output == *"bitmap 'nope' not found"* ]]
}
