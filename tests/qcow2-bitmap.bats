#!/usr/bin/env bats
# qcow2-bitmap.bats - persistent dirty bitmaps (the qcow2 bitmaps extension) kept as QEMU keeps
# them: writes, zero-writes and discards through a blkfuse mount mark exactly the granules QEMU
# marks for the same requests; a clean unmount stores them (qemu-img check clean, no leaks,
# not in use); a read-only mount writes nothing; a daemon killed with SIGKILL leaves the enabled
# bitmaps in use, which QEMU then refuses to trust; `blkfuse check` counts bitmap clusters.
#
# The oracle: QEMU's own view of each bitmap, read through qemu-nbd's export of the bitmap
# (-B NAME, the NBD meta context qemu:dirty-bitmap:NAME) and `qemu-img map` with the nbd
# driver's x-dirty-bitmap option, which reports dirty ranges as "data": false.  The expected
# map comes from a copy of the same image in which QEMU (qemu-io) did the same requests.

load helpers

setup() {
    blkfuse_setup
    require_fuse
    require qemu-img qemu-io qemu-nbd fallocate
}

# in_use_flags IMAGE: "NAME:in-use" or "NAME:-" per bitmap, from qemu-img info --output=json.
in_use_flags() {
    qemu-img info -U --output=json "$1" | tr -d ' \n' |
        grep -o '{"flags":\[[^]]*\],"name":"[^"]*"' |
        sed 's/{"flags":\[\([^]]*\)\],"name":"\([^"]*\)"/\2:\1/' |
        sed 's/:.*"in-use".*/:in-use/; s/:[^i].*\|:$/:-/'
}

# check_clean IMAGE: qemu-img check finds no errors and no leaks.
check_clean() {
    run qemu-img check "$1"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output != *leaked* ]]
}

# bitmap_image IMAGE: 64 MiB with bitmaps b64k (64 KiB granularity), b128k (128 KiB), b4k
# (4 KiB) enabled, and off (disabled), all made by qemu-img.
bitmap_image() {
    qemu-img create -q -f qcow2 "$1" 64M
    qemu-img bitmap --add "$1" b64k
    qemu-img bitmap --add -g 128k "$1" b128k
    qemu-img bitmap --add -g 4k "$1" b4k
    qemu-img bitmap --add --disable "$1" off
}

@test "qcow2 bitmap: writes, zero-writes and discards mark exactly what QEMU marks" {
    local b
    bitmap_image "$T/a.qcow2"
    cp "$T/a.qcow2" "$T/q.qcow2"
    head -c 1M /dev/urandom >"$T/data"

    blkfuse_mount "$T/a.qcow2" "$T/mp"
    dd if="$T/data" of="$T/mp" bs=64k seek=16 count=1 conv=notrunc status=none
    # the first write marked the enabled bitmaps in use (durably, before the data)
    run in_use_flags "$T/a.qcow2"
    echo "$output"
    [[ $output == *"b64k:in-use"* && $output == *"b4k:in-use"* && $output == *"off:-"* ]]
    dd if="$T/data" of="$T/mp" bs=1k seek=10240 count=300 conv=notrunc status=none
    dd if="$T/data" of="$T/mp" bs=1 seek=$((20 << 20 | 12345)) count=5000 conv=notrunc status=none
    fallocate -z -o $((30 << 20)) -l 192k "$T/mp"
    fallocate -p -o $((40 << 20)) -l 1M "$T/mp"
    dd if="$T/data" of="$T/mp" bs=64k seek=1023 count=1 conv=notrunc,fsync status=none
    blkfuse unmount "$T/mp"

    qemu-io -f qcow2 -c 'write 1M 64k' -c 'write 10M 300k' -c "write $((20 << 20 | 12288)) 8k" \
        -c "write -z $((30 << 20)) 192k" -c "discard $((40 << 20)) 1M" -c 'write 65472k 64k' \
        "$T/q.qcow2" >/dev/null

    check_clean "$T/a.qcow2"
    run in_use_flags "$T/a.qcow2"
    echo "$output"
    [[ $output != *in-use* ]]
    for b in b64k b128k b4k off; do
        dirty_map "$T/a.qcow2" "$b" >"$T/a.$b"
        dirty_map "$T/q.qcow2" "$b" >"$T/q.$b"
        echo "$b: blkfuse $(tr '\n' ' ' <"$T/a.$b") qemu $(tr '\n' ' ' <"$T/q.$b")"
        cmp "$T/a.$b" "$T/q.$b"
    done
    # the disabled bitmap stays empty; the first range of b64k is the one written
    [ ! -s "$T/a.off" ]
    [ "$(head -1 "$T/a.b64k")" = "1048576+65536" ]
    run blkfuse check "$T/a.qcow2"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == *"No errors were found"* ]]
}

# qsd_add_bitmap IMAGE NAME GRANULARITY: add a persistent bitmap with qemu-storage-daemon's
# QMP block-dirty-bitmap-add (persistent=on), stored when the daemon quits.
qsd_add_bitmap() {
    local pid
    qemu-storage-daemon --blockdev driver=file,filename="$1",node-name=file0 \
        --blockdev driver=qcow2,file=file0,node-name=fmt0 \
        --chardev socket,path="$T/qmp.sock",server=on,wait=off,id=qmp0 --monitor chardev=qmp0 \
        --pidfile "$T/qsd.pid" --daemonize 3>&- || return 1
    pid=$(cat "$T/qsd.pid")
    python3 - "$T/qmp.sock" "$2" "$3" <<'EOF' || return 1
import json, socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
f = sock.makefile("rw")
f.readline()                                    # the greeting
def cmd(execute, **args):
    f.write(json.dumps({"execute": execute, "arguments": args}) + "\n")
    f.flush()
    while True:
        r = json.loads(f.readline())
        if "error" in r:
            sys.exit("%s: %s" % (execute, r["error"]["desc"]))
        if "return" in r:
            return r["return"]
cmd("qmp_capabilities")
cmd("block-dirty-bitmap-add", node="fmt0", name=sys.argv[2], persistent=True,
    granularity=int(sys.argv[3]))
cmd("quit")
EOF
    wait_for_pid_exit "$pid"
}

@test "qcow2 bitmap: a bitmap qemu-storage-daemon added (persistent=on) is kept the same way" {
    require qemu-storage-daemon python3
    qemu-img create -q -f qcow2 "$T/a.qcow2" 64M
    qsd_add_bitmap "$T/a.qcow2" qsd 32768
    run in_use_flags "$T/a.qcow2"
    [ "$output" = "qsd:-" ]
    cp "$T/a.qcow2" "$T/q.qcow2"
    blkfuse_mount "$T/a.qcow2" "$T/mp"
    dd if=/dev/urandom of="$T/mp" bs=4k seek=100 count=3 conv=notrunc status=none
    fallocate -p -o $((8 << 20)) -l 100k "$T/mp"
    blkfuse unmount "$T/mp"
    qemu-io -f qcow2 -c 'write 400k 12k' -c "discard $((8 << 20)) 100k" "$T/q.qcow2" >/dev/null
    check_clean "$T/a.qcow2"
    dirty_map "$T/a.qcow2" qsd >"$T/a.map"
    dirty_map "$T/q.qcow2" qsd >"$T/q.map"
    cat "$T/a.map"
    [ -s "$T/a.map" ]
    cmp "$T/a.map" "$T/q.map"
}

@test "qcow2 bitmap: bits survive a second mount and add up" {
    bitmap_image "$T/a.qcow2"
    blkfuse_mount "$T/a.qcow2" "$T/mp"
    dd if=/dev/urandom of="$T/mp" bs=64k seek=2 count=1 conv=notrunc status=none
    blkfuse unmount "$T/mp"
    blkfuse_mount "$T/a.qcow2" "$T/mp"
    dd if=/dev/urandom of="$T/mp" bs=64k seek=100 count=2 conv=notrunc status=none
    blkfuse unmount "$T/mp"
    check_clean "$T/a.qcow2"
    run dirty_map "$T/a.qcow2" b64k
    echo "$output"
    [ "$output" = "$(printf '%s\n' 131072+65536 6553600+131072)" ]
}

@test "qcow2 bitmap: a read-only mount changes nothing" {
    bitmap_image "$T/a.qcow2"
    cp "$T/a.qcow2" "$T/before.qcow2"
    blkfuse_mount --read-only "$T/a.qcow2" "$T/mp"
    cat "$T/mp" >/dev/null
    run in_use_flags "$T/a.qcow2"
    [[ $output != *in-use* ]]
    blkfuse unmount "$T/mp"
    cmp "$T/a.qcow2" "$T/before.qcow2"
}

@test "qcow2 bitmap: a read-write mount without writes changes nothing" {
    bitmap_image "$T/a.qcow2"
    cp "$T/a.qcow2" "$T/before.qcow2"
    blkfuse_mount "$T/a.qcow2" "$T/mp"
    cat "$T/mp" >/dev/null
    blkfuse unmount "$T/mp"
    cmp "$T/a.qcow2" "$T/before.qcow2"
}

@test "qcow2 bitmap: growing the image grows the bitmaps, disabled ones too" {
    bitmap_image "$T/a.qcow2"
    blkfuse_mount "$T/a.qcow2" "$T/mp"
    truncate -s 80M "$T/mp"
    dd if=/dev/urandom of="$T/mp" bs=64k seek=1200 count=1 conv=notrunc status=none
    blkfuse unmount "$T/mp"
    check_clean "$T/a.qcow2"
    run in_use_flags "$T/a.qcow2"
    echo "$output"
    [[ $output != *in-use* ]]
    # QEMU accepts every bitmap at the new size (it refuses a table too small for it)
    qemu-img convert --bitmaps -O qcow2 "$T/a.qcow2" "$T/copy.qcow2"
    [ "$(qemu-img info --output=json "$T/copy.qcow2" | grep -c '"name"')" -eq 4 ]
    # the grown range is marked changed in the enabled bitmaps (it did not exist before);
    # QEMU itself marks nothing on a resize: blkfuse is on the safe side for backups
    run dirty_map "$T/a.qcow2" b64k
    echo "$output"
    [ "$output" = "67108864+16777216" ]
    run dirty_map "$T/a.qcow2" off
    [ -z "$output" ]
}

@test "qcow2 bitmap: a daemon killed with SIGKILL leaves the enabled bitmaps in use" {
    bitmap_image "$T/a.qcow2"
    blkfuse_mount_foreground "$T/a.qcow2" "$T/mp"
    # acknowledged and flushed: the write reached the image before the kill
    dd if=/dev/urandom of="$T/mp" bs=64k seek=5 count=4 conv=notrunc,fsync status=none
    kill_daemon "$T/mp"

    run in_use_flags "$T/a.qcow2"
    echo "$output"
    [[ $output == *"b64k:in-use"* && $output == *"b128k:in-use"* && $output == *"b4k:in-use"* ]]
    [[ $output == *"off:-"* ]]      # never marked: it does not change
    run qemu-img check "$T/a.qcow2"
    echo "$output"
    [[ $status -eq 0 || $status -eq 3 ]]
    # QEMU does not trust them: it refuses to copy an inconsistent bitmap
    run qemu-img convert --bitmaps -O qcow2 "$T/a.qcow2" "$T/copy.qcow2"
    echo "$output"
    [ "$status" -ne 0 ]
    [[ $output == *inconsistent* ]]

    # The next mount keeps them as they are (in use, not updated), and stores the others.
    blkfuse_mount "$T/a.qcow2" "$T/mp"
    dd if=/dev/urandom of="$T/mp" bs=64k seek=50 count=1 conv=notrunc status=none
    blkfuse unmount "$T/mp"
    run in_use_flags "$T/a.qcow2"
    echo "$output"
    [[ $output == *"b64k:in-use"* && $output == *"off:-"* ]]
    run qemu-img check "$T/a.qcow2"
    echo "$output"
    [[ $status -eq 0 || $status -eq 3 ]]
}

@test "qcow2 bitmap: blkfuse check counts bitmap clusters as referenced" {
    bitmap_image "$T/a.qcow2"
    qemu-io -f qcow2 -c 'write 0 1M' "$T/a.qcow2" >/dev/null
    run blkfuse check "$T/a.qcow2"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output != *eak* ]]
    run blkfuse check -r leaks "$T/a.qcow2"
    [ "$status" -eq 0 ]
    check_clean "$T/a.qcow2"
    run dirty_map "$T/a.qcow2" b64k
    [ "$output" = "0+1048576" ]
}

@test "qcow2 bitmap: bitmaps QEMU must ignore (autoclear bit clear) are left alone" {
    require python3
    bitmap_image "$T/a.qcow2"
    # clear the autoclear field (byte 88): as a program without bitmap support leaves it
    python3 -c 'import sys; f = open(sys.argv[1], "r+b"); f.seek(88); f.write(bytes(8))' \
        "$T/a.qcow2"
    blkfuse_mount "$T/a.qcow2" "$T/mp"
    dd if=/dev/urandom of="$T/mp" bs=64k count=1 conv=notrunc status=none
    blkfuse unmount "$T/mp"
    grep -q "bitmaps were changed by a program without bitmap support" "$T/daemon.log"
    # leaked clusters (the ignored bitmaps'), no corruption: as qemu-img sees it too
    run qemu-img check "$T/a.qcow2"
    echo "$output"
    [ "$status" -eq 3 ]
    run blkfuse check "$T/a.qcow2"
    echo "$output"
    [ "$status" -eq 3 ]
}

@test "qcow2 bitmap: a malformed bitmap directory refuses a read-write open, not a read-only one" {
    require python3
    bitmap_image "$T/a.qcow2"
    # granularity_bits of the first directory entry (byte 17) set to 40: beyond QEMU's limit
    poke_byte "$T/a.qcow2" $(($(bitmap_directory "$T/a.qcow2") + 17)) 40
    run blkfuse mount --log-file "$T/daemon.log" "$T/a.qcow2" "$T/mp"
    echo "$output"
    [ "$status" -ne 0 ]
    [[ $output == *"bitmap 'b64k': unsupported granularity"*"read-only"* ]]
    EXPECTED_LOG_ERRORS="unsupported granularity"
    blkfuse_mount --read-only "$T/a.qcow2" "$T/mp"
    cmp <(head -c 1M "$T/mp") <(head -c 1M /dev/zero)
    blkfuse unmount "$T/mp"
}

@test "qcow2 bitmap: power loss at every write of marking and storing bitmaps" {
    need_tool powerloss
    qemu-img create -q -f qcow2 -o cluster_size=4k "$T/base.qcow2" 8M
    qemu-img bitmap --add "$T/base.qcow2" b1
    qemu-img bitmap --add --disable -g 4k "$T/base.qcow2" b2
    printf '%s\n' "write 1M 64k" "flush" "truncate 12M" "write 9M 4k" "flush" >"$T/script"
    mkdir "$T/work"
    # every crash point, from the open marking b1 in use to the close storing both: qemu-img
    # check (which refuses a malformed bitmap directory) finds no corruption, data as written
    run powerloss --work="$T/work" "$T/base.qcow2" "$T/script"
    printf '%s\n' "$output" | grep -v '^    line' | tail -20
    [ "$status" -eq 0 ]
}

@test "qcow2 bitmap: the overlap check protects bitmap tables" {
    local dir table cb
    require python3
    need_tool qcow2-poke
    qemu-img create -q -f qcow2 "$T/a.qcow2" 64M
    qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' "$T/a.qcow2" >/dev/null
    qemu-img bitmap --add --disable "$T/a.qcow2" off
    # refcount 0 for the bitmap table's cluster: the allocator's next pick
    dir=$(bitmap_directory "$T/a.qcow2")
    table=$((16#$(od -An -tx1 -j "$dir" -N 8 "$T/a.qcow2" | tr -d ' \n')))
    cb=$(qcow2-poke "$T/a.qcow2" header cluster_bits)
    qcow2-poke "$T/a.qcow2" refcount $((table >> cb)) 0
    EXPECTED_LOG_ERRORS='qcow2: prevented a write of .* over the bitmap table'
    blkfuse_mount "$T/a.qcow2" "$T/mp"
    run dd if=/dev/urandom of="$T/mp" bs=64k seek=500 count=1 conv=notrunc,fsync status=none
    [ "$status" -ne 0 ]
    grep -q "over the bitmap table" "$T/daemon.log"
    blkfuse unmount "$T/mp"
    qemu-img info "$T/a.qcow2" | grep -q "corrupt: true"
}
