#!/usr/bin/env bats
# rbd.bats - the rbd protocol driver against a one-node Ceph cluster started for this file
# (tests/ceph-helpers.bash): contents equal `rbd export` for raw and for a qcow2 stored in RBD,
# writes, discards and zero-writes reach the cluster, snapshots, sizes, names, the connect
# timeout, and losing the OSD (reconnect-timeout).

load helpers
load control-helpers
load ceph-helpers
load nbd-helpers

setup_file() {
    local reason
    reason=$(ceph_missing) || true
    export CEPH_SKIP=$reason
    [[ -z $CEPH_SKIP ]] || return 0
    # A short path: the daemons' admin sockets live in it (unix socket paths are short).
    CEPH_TOP=$(mktemp -d /tmp/blkfuse-ceph.XXXXXX)
    export CEPH_TOP
    ceph_start "$CEPH_TOP/cluster"
}

teardown_file() {
    [[ -z $CEPH_SKIP ]] || return 0
    ceph_stop
    rm -rf --one-file-system "$CEPH_TOP"
}

setup() {
    blkfuse_setup
    [[ -z $CEPH_SKIP ]] || skip "$CEPH_SKIP"
    require_fuse
    # A test that failed while the OSD was down must not take the next ones with it.
    _pid_alive "$(_ceph_osd_pid)" || ceph_osd_start
    # Each test has its own images, named after it.
    IMG=t$BATS_TEST_NUMBER
    URI="rbd:rbd/$IMG:conf=$CEPH_CONF"
    MP=$T/disk
}

teardown() {
    blkfuse_teardown
}

# export_cmp NAME FILE: the image NAME in the cluster holds exactly FILE's bytes.
export_cmp() {
    rm -f "$T/export.raw"
    rbd export "rbd/$1" "$T/export.raw" >/dev/null 2>&1
    cmp "$T/export.raw" "$2"
}

@test "rbd: a raw image reads as 'rbd export' has it, format probed and given" {
    make_pattern "$T/ref" 12M
    rbd import "$T/ref" "rbd/$IMG" >/dev/null 2>&1
    blkfuse_mount "$URI" "$MP"
    [ "$(stat -c %s "$MP")" -eq $((12 * 1048576)) ]
    cmp "$MP" "$T/ref"
    export_cmp "$IMG" "$MP"
    blkfuse unmount "$MP"
    blkfuse_mount -f raw -r "$URI" "$MP"
    cmp "$MP" "$T/ref"
}

@test "rbd: a qcow2 stored in RBD reads as qemu-img has it, probed and with -f qcow2" {
    require qemu-img qemu-io
    qemu-img create -q -f qcow2 "$T/q.qcow2" 32M
    qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' -c 'write -P 0xa5 7M 3M' \
        -c 'write -P 0x11 31M 512k' "$T/q.qcow2" >/dev/null
    qemu-img convert -O raw "$T/q.qcow2" "$T/ref"
    rbd import "$T/q.qcow2" "rbd/$IMG" >/dev/null 2>&1
    blkfuse_mount -r "$URI" "$MP"
    [ "$(stat -c %s "$MP")" -eq $((32 * 1048576)) ]
    cmp "$MP" "$T/ref"
    blkfuse unmount "$MP"
    blkfuse_mount -r -f qcow2 "$URI" "$MP"
    cmp "$MP" "$T/ref"
}

@test "rbd: writes from several queues reach the cluster, and fsync flushes them" {
    rbd create --size 16M "rbd/$IMG"
    make_raw "$T/model" 16M
    blkfuse_mount --queues 4 "$URI" "$MP"
    head -c $((3 * 1048576 + 4096)) /dev/urandom >"$T/data"
    # Four writers at once, each on its own range.  (wait for these pids only: the cluster's
    # daemons are children of this shell too.)
    local pids=() i
    for i in 0 1 2 3; do
        dd if="$T/data" of="$MP" bs=4096 seek=$((i * 1000 + 1)) conv=notrunc,fsync \
            status=none 3>&- &
        pids+=($!)
    done
    for i in "${pids[@]}"; do
        wait "$i"
    done
    for i in 0 1 2 3; do
        dd if="$T/data" of="$T/model" bs=4096 seek=$((i * 1000 + 1)) conv=notrunc status=none
    done
    printf 'odd bytes here' | dd of="$MP" bs=1 seek=12345 conv=notrunc,fsync status=none
    printf 'odd bytes here' | dd of="$T/model" bs=1 seek=12345 conv=notrunc status=none
    cmp "$MP" "$T/model"
    # fsync returned: the data is in the cluster while the export is still mounted.
    export_cmp "$IMG" "$T/model"
    blkfuse unmount "$MP"
    export_cmp "$IMG" "$T/model"
}

@test "rbd: the size comes from the cluster; info and list show the image, no secrets" {
    rbd create --size 40M "rbd/$IMG"
    run -0 blkfuse info "$URI"
    [[ $output == *"image: rbd:rbd/$IMG"* ]]
    [[ $output == *"virtual size: 40 MiB (41943040 bytes)"* ]]
    [[ $output == *"format: raw"* ]]
    blkfuse_mount "$URI" "$MP"
    [ "$(stat -c %s "$MP")" -eq 41943040 ]
    run -0 blkfuse list
    [[ $output == *"rbd:rbd/$IMG"* ]]
    # A key in the name is refused, and never echoed.
    run blkfuse info "rbd:rbd/$IMG:conf=$CEPH_CONF:key=AQBsecretsecret=="
    [ "$status" -ne 0 ]
    [[ $output == *"keyring"* ]]
    [[ $output != *"AQBsecret"* ]]
}

@test "rbd: a snapshot is exported read-only, and needs -r" {
    make_pattern "$T/ref" 8M
    rbd import "$T/ref" "rbd/$IMG" >/dev/null 2>&1
    rbd snap create "rbd/$IMG@before" >/dev/null 2>&1
    blkfuse_mount "$URI" "$MP"
    head -c 1M /dev/urandom | dd of="$MP" bs=64k seek=3 conv=notrunc,fsync status=none
    blkfuse unmount "$MP"
    EXPECTED_LOG_ERRORS="snapshot 'before' can only be opened read-only"
    run blkfuse mount --log-file "$T/daemon.log" "rbd:rbd/$IMG@before:conf=$CEPH_CONF" "$MP"
    [ "$status" -ne 0 ]
    [[ $output == *"snapshot 'before' can only be opened read-only (mount it with --read-only)"* ]]
    blkfuse_mount -r "rbd:rbd/$IMG@before:conf=$CEPH_CONF" "$MP"
    [ "$(stat -c %a "$MP")" = 400 ]
    cmp "$MP" "$T/ref"
    run dd if=/dev/zero of="$MP" bs=4096 count=1 conv=notrunc
    [ "$status" -ne 0 ]
}

@test "rbd: an image in a namespace, with the client named by id=" {
    make_pattern "$T/ref" 4M
    rbd namespace create rbd/ns1
    rbd import "$T/ref" "rbd/ns1/$IMG" >/dev/null 2>&1
    blkfuse_mount "rbd:rbd/ns1/$IMG:id=admin:conf=$CEPH_CONF" "$MP"
    cmp "$MP" "$T/ref"
    printf 'in the namespace' | dd of="$MP" bs=1 seek=100 conv=notrunc,fsync status=none
    printf 'in the namespace' | dd of="$T/ref" bs=1 seek=100 conv=notrunc status=none
    blkfuse unmount "$MP"
    export_cmp "ns1/$IMG" "$T/ref"
    # The same name outside the namespace is another image (none here).
    run blkfuse info "$URI"
    [ "$status" -ne 0 ]
}

@test "rbd: bad names and missing images fail with a message naming them" {
    run blkfuse info "rbd:rbd"
    [ "$status" -ne 0 ]
    [[ $output == *"expected rbd:POOL/IMAGE"* ]]
    run blkfuse info "rbd:rbd/$IMG:conf=$CEPH_CONF:frobnicate=1"
    [ "$status" -ne 0 ]
    [[ $output == *"unknown rbd option 'frobnicate'"* ]]
    run blkfuse info "rbd:rbd/no-such-image:conf=$CEPH_CONF"
    [ "$status" -ne 0 ]
    [[ $output == *"cannot open image 'no-such-image' in pool 'rbd'"* ]]
    run blkfuse info "rbd:no-such-pool/x:conf=$CEPH_CONF"
    [ "$status" -ne 0 ]
    [[ $output == *"cannot open the pool 'no-such-pool'"* ]]
    run blkfuse mount --log-file "$T/daemon.log" -o reconnect-timeout=soon "$URI" "$MP"
    [ "$status" -ne 0 ]
    [[ $output == *"option reconnect-timeout needs whole seconds from 1 to 86400, not 'soon'"* ]]
    EXPECTED_LOG_ERRORS="reconnect-timeout needs whole seconds"
    # create makes local files only (it used to make one named after the protocol name).
    run blkfuse create -f qcow2 "rbd:rbd/$IMG:conf=$CEPH_CONF" 64M
    [ "$status" -ne 0 ]
    [[ $output == *"blkfuse creates local image files only, not rbd images"* ]]
    [[ ! -e "rbd:rbd" ]]
    run blkfuse info "rbd:rbd/x:conf=$T/none.conf"
    [ "$status" -ne 0 ]
    [[ $output == *"cannot read the Ceph configuration $T/none.conf"* ]]
}

@test "rbd: an unreachable monitor fails within connect-timeout, naming it" {
    local port start elapsed
    port=$(_ceph_free_port)
    printf '[global]\nmon host = v1:127.0.0.1:%s\nauth client required = none\n' "$port" \
        >"$T/dead.conf"
    EXPECTED_LOG_ERRORS="cannot connect to the Ceph monitors"
    start=$(_now_ms)
    run blkfuse mount --log-file "$T/daemon.log" -o connect-timeout=2 \
        "rbd:rbd/x:conf=$T/dead.conf" "$MP"
    elapsed=$(($(_now_ms) - start))
    [ "$status" -ne 0 ]
    [[ $output == *"cannot connect to the Ceph monitors at v1:127.0.0.1:$port"* ]]
    [[ $output == *"within 2 s (connect-timeout)"* ]]
    [ "${#lines[@]}" -eq 1 ]
    # 2 s, and some slack for a busy machine; the default would be 20 s.
    ((elapsed < 15000))
}

# fake_monitor: a TCP server on 127.0.0.1 that accepts connections and never answers (a
# monitor that hangs); FAKE_MON_PORT is its port, and $T/fake-mon.accepted exists once it has
# accepted a connection.
fake_monitor() {
    FAKE_MON_PORT=$(_ceph_free_port)
    python3 -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
conns = []
while True:
    c, _ = s.accept()
    conns.append(c)
    open(sys.argv[2], "a").close()
' "$FAKE_MON_PORT" "$T/fake-mon.accepted" 3>&- &
    PIDS+=($!)
}

@test "rbd: while a mount waits for a hung monitor, the daemon serves its other exports and list" {
    require_nbd_driver
    require_nbdkit
    # An NBD export of a server without multi-conn: the daemon's main loop reads its replies.
    make_pattern "$T/served.img" 4M
    start_nbdkit srv --filter=multi-conn file "$T/served.img" multi-conn-mode=disable
    SOCK=$T/serve.sock
    start_serve
    blkfuse_mount --daemon="$SOCK" -f raw "$(nbd_unix_uri srv)" "$T/nbd.mnt"
    fake_monitor
    printf '[global]\nmon host = v1:127.0.0.1:%s\nauth client required = none\n' \
        "$FAKE_MON_PORT" >"$T/hung.conf"
    blkfuse mount --daemon="$SOCK" -o connect-timeout=10 "rbd:rbd/x:conf=$T/hung.conf" "$MP" \
        >"$T/rbd-mount.out" 2>&1 3>&- &
    local mount_pid=$!
    PIDS+=("$mount_pid")
    wait_until 10 test -e "$T/fake-mon.accepted"
    # The daemon is connecting: the NBD export still reads, before that mount gives up, and
    # the control socket answers, showing that mount as opening.
    dd if="$T/nbd.mnt" of="$T/read.img" bs=64k iflag=direct status=none
    listed opening "$MP"
    listed mounted "$T/nbd.mnt"
    _pid_alive "$mount_pid"
    cmp "$T/read.img" "$T/served.img"
    ! wait "$mount_pid"
    grep -q "cannot connect to the Ceph monitors at v1:127.0.0.1:$FAKE_MON_PORT" "$T/rbd-mount.out"
    blkfuse unmount "$T/nbd.mnt"
    EXPECTED_LOG_ERRORS="cannot connect to the Ceph monitors"
}

@test "rbd: punch hole, zero range and discard reach the cluster; SEEK_DATA/HOLE, st_blocks" {
    make_pattern "$T/model" 16M
    rbd import "$T/model" "rbd/$IMG" >/dev/null 2>&1
    blkfuse_mount "$URI" "$MP"
    # A whole object (4 MiB at 4 MiB), part of one, and a zeroed range that stays allocated.
    fallocate -p -o 4M -l 4M "$MP"
    fallocate -p -o 12M -l 4k "$MP"
    fallocate -z -o 9M -l 100k "$MP"
    fallocate -p -o 4M -l 4M "$T/model"
    fallocate -p -o 12M -l 4k "$T/model"
    fallocate -z -o 9M -l 100k "$T/model"
    cmp "$MP" "$T/model"
    export_cmp "$IMG" "$T/model"
    # The punched object is gone from the cluster: rbd diff lists the other three.
    run -0 rbd diff --format json "rbd/$IMG"
    [[ $output == *'"offset":0,'* && $output != *'"offset":4194304,'* ]]
    [[ $output == *'"offset":8388608,'* && $output == *'"offset":12582912,'* ]]
    # SEEK_DATA/SEEK_HOLE come from the object map.
    run -0 python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print(os.lseek(fd, 0, os.SEEK_HOLE), os.lseek(fd, 4 << 20, os.SEEK_DATA))' "$MP"
    [ "$output" = "4194304 8388608" ]
    # st_blocks follows the object map (refreshed in the background): 3 objects of 4 MiB.
    local deadline=$(($(_now_ms) + 10000))
    until [ "$(stat -c %b "$MP")" -eq $((12 * 2048)) ]; do
        (($(_now_ms) < deadline)) || { stat "$MP"; false; }
        sleep 0.2
    done
}

@test "rbd: ext4 on a loop device over an RBD export, written and fsck-clean" {
    require_loop
    require mkfs.ext4 fsck.ext4
    rbd create --size 96M "rbd/$IMG"
    blkfuse_mount "$URI" "$MP"
    mkfs.ext4 -q -F "$MP"
    attach_loop "$MP"
    mount_dev "$LOOP" "$T/fs"
    write_files "$T/fs"
    umount "$T/fs"
    detach_loop "$LOOP" "$MP"
    blkfuse unmount "$MP"
    # The file system as the cluster has it.
    rm -f "$T/fs.img"
    rbd export "rbd/$IMG" "$T/fs.img" >/dev/null 2>&1
    run fsck.ext4 -n -f "$T/fs.img"
    echo "$output"
    [ "$status" -eq 0 ]
    attach_loop "$T/fs.img" -r
    mount_dev "$LOOP" "$T/fs2" -o ro
    (cd "$T/fs2" && sha256sum -c --quiet "$T/sums")
}

@test "rbd: a qcow2 in RBD written through blkfuse passes qemu-img check after rbd export" {
    require qemu-img
    qemu-img create -q -f qcow2 "$T/q.qcow2" 64M
    rbd import "$T/q.qcow2" "rbd/$IMG" >/dev/null 2>&1
    make_raw "$T/model" 64M
    blkfuse_mount "$URI" "$MP"
    head -c 5M /dev/urandom >"$T/data"
    dd if="$T/data" of="$MP" bs=64k seek=7 conv=notrunc,fsync status=none
    dd if="$T/data" of="$T/model" bs=64k seek=7 conv=notrunc status=none
    dd if="$T/data" of="$MP" bs=4096 seek=12001 count=333 conv=notrunc,fsync status=none
    dd if="$T/data" of="$T/model" bs=4096 seek=12001 count=333 conv=notrunc status=none
    fallocate -p -o 1M -l 256k "$MP"
    fallocate -p -o 1M -l 256k "$T/model"
    blkfuse unmount "$MP"
    rm -f "$T/out.qcow2"
    rbd export "rbd/$IMG" "$T/out.qcow2" >/dev/null 2>&1
    run qemu-img check "$T/out.qcow2"
    echo "$output"
    [ "$status" -eq 0 ]
    qemu-img convert -O raw "$T/out.qcow2" "$T/out.raw"
    cmp "$T/out.raw" "$T/model"
}

@test "rbd: truncate resizes a --growable image, and writes past the end grow it" {
    rbd create --size 8M "rbd/$IMG"
    blkfuse_mount --growable "$URI" "$MP"
    truncate -s 20M "$MP"
    [ "$(rbd info --format json "rbd/$IMG" | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])')" -eq $((20 * 1048576)) ]
    printf 'tail' | dd of="$MP" bs=1 seek=$((20 * 1048576)) conv=notrunc,fsync status=none
    [ "$(stat -c %s "$MP")" -eq $((20 * 1048576 + 4)) ]
    truncate -s 4M "$MP"
    blkfuse unmount "$MP"
    [ "$(rbd info --format json "rbd/$IMG" | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])')" -eq $((4 * 1048576)) ]
}

# rbd_writer FILE NBLOCKS: in the background, write 64 KiB blocks round the first NBLOCKS
# blocks of FILE with O_DIRECT, read each one back, fsync every 8 writes, until $T/stop exists;
# one line per block in $T/progress; at the end the image it expects in $T/expected and the
# longest single operation (ms) in $T/maxwait.  Sets WRITER_PID.
rbd_writer() {
    python3 - "$1" "$2" "$T" >"$T/writer.out" 2>&1 3>&- <<'PY' &
import mmap, os, sys, time
path, nblocks, tdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
bs = 65536
fd = os.open(path, os.O_RDWR | os.O_DIRECT)
buf, back = mmap.mmap(-1, bs), mmap.mmap(-1, bs)
blocks = {}
maxwait = 0
progress = open(os.path.join(tdir, "progress"), "w")
i = 0
while not os.path.exists(os.path.join(tdir, "stop")):
    n = i % nblocks
    data = (b"%08d:%08d " % (i, n)) * (bs // 18) + b"\n" * (bs % 18)
    buf[:] = data
    t = time.monotonic()
    os.pwritev(fd, [buf], n * bs)
    os.preadv(fd, [back], n * bs)
    if back[:] != data:
        sys.exit("block %d read back wrong after write %d" % (n, i))
    if i % 8 == 7:
        os.fsync(fd)
    maxwait = max(maxwait, time.monotonic() - t)
    blocks[n] = data
    progress.write("%d\n" % i)
    progress.flush()
    i += 1
os.fsync(fd)
with open(path, "rb") as f:
    image = bytearray(f.read())
for n, data in blocks.items():
    image[n * bs:(n + 1) * bs] = data
open(os.path.join(tdir, "expected"), "wb").write(image)
open(os.path.join(tdir, "maxwait"), "w").write("%d\n" % (maxwait * 1000))
PY
    WRITER_PID=$!
    PIDS+=("$WRITER_PID")
}

# progress_count: how many blocks the writer has written.
progress_count() {
    wc -l <"$T/progress" 2>/dev/null || echo 0
}

# wait_progress N: wait (60 s at most) until the writer has written N blocks.
wait_progress() {
    local deadline=$(($(_now_ms) + 60000))
    until (($(progress_count) >= $1)); do
        if (($(_now_ms) >= deadline)) || ! _pid_alive "$WRITER_PID"; then
            echo "the writer stopped at $(progress_count) blocks, before $1" >&2
            cat "$T/writer.out" >&2
            return 1
        fi
        sleep 0.1
    done
}

@test "rbd: the OSD stopped and restarted during reads and writes: they resume, nothing lost" {
    local c2 pid
    rbd create --size 16M "rbd/$IMG"
    blkfuse_mount -o reconnect-timeout=60 "$URI" "$MP"
    pid=$(daemon_pid "$MP")
    rbd_writer "$MP" 200
    wait_progress 50
    ceph_osd_stop
    # The daemon's event loops stay free while its requests wait for the OSD.
    run -0 timeout 10 blkfuse list
    [[ $output == *"$MP"* ]]
    ceph_osd_start
    c2=$(progress_count)
    wait_progress $((c2 + 50))
    touch "$T/stop"
    wait "$WRITER_PID" || { cat "$T/writer.out"; false; }
    # Something did wait for the OSD (its restart takes seconds), and nothing failed.
    echo "longest operation: $(cat "$T/maxwait") ms"
    (($(cat "$T/maxwait") >= 1000))
    kill -0 "$pid"
    blkfuse unmount "$MP"
    export_cmp "$IMG" "$T/expected"
}

@test "rbd: past reconnect-timeout requests fail with EIO; the daemon stays and serves again" {
    local pid start elapsed deadline
    make_pattern "$T/model" 8M
    rbd import "$T/model" "rbd/$IMG" >/dev/null 2>&1
    blkfuse_mount -o reconnect-timeout=3 "$URI" "$MP"
    pid=$(daemon_pid "$MP")
    # Acknowledged before the outage: must survive it.
    head -c 1M /dev/urandom >"$T/data"
    dd if="$T/data" of="$MP" bs=64k seek=32 conv=notrunc,fsync status=none
    dd if="$T/data" of="$T/model" bs=64k seek=32 conv=notrunc status=none
    ceph_osd_stop
    start=$(_now_ms)
    run dd if="$MP" of=/dev/null bs=64k skip=100 count=1 iflag=direct
    elapsed=$(($(_now_ms) - start))
    echo "$output"
    [ "$status" -ne 0 ]
    [[ $output == *"Input/output error"* ]]
    ((elapsed >= 3000 && elapsed < 30000))
    run dd if=/dev/zero of="$MP" bs=64k seek=120 count=1 oflag=direct conv=notrunc,fsync
    [ "$status" -ne 0 ]
    [[ $output == *"Input/output error"* ]]
    kill -0 "$pid"
    grep -q "did not answer within 3 s (reconnect-timeout)" "$T/daemon.log"
    ceph_osd_start
    # Serves again once the cluster has the OSD back (peering may take a moment).
    deadline=$(($(_now_ms) + 60000))
    until dd if="$MP" of=/dev/null bs=64k skip=100 count=1 iflag=direct status=none; do
        (($(_now_ms) < deadline))
    done
    dd if="$T/data" of="$MP" bs=64k seek=64 conv=notrunc,fsync status=none
    dd if="$T/data" of="$T/model" bs=64k seek=64 conv=notrunc status=none
    kill -0 "$pid"
    blkfuse unmount "$MP"
    # All but the block whose write failed (it may or may not have landed) as acknowledged.
    rm -f "$T/export.raw"
    rbd export "rbd/$IMG" "$T/export.raw" >/dev/null 2>&1
    cmp -n $((120 * 65536)) "$T/export.raw" "$T/model"
    cmp -i $((121 * 65536)) "$T/export.raw" "$T/model"
}

@test "rbd: unmount with the cluster gone ends within a few reconnect-timeouts" {
    local pid start
    rbd create --size 16M "rbd/$IMG"
    blkfuse_mount -o reconnect-timeout=2 "$URI" "$MP"
    pid=$(daemon_pid "$MP")
    head -c 1M /dev/urandom | dd of="$MP" bs=64k conv=notrunc,fsync status=none
    ceph_osd_stop
    EXPECTED_LOG_ERRORS="flush at close failed"
    # Writes librbd's cache takes (the flush at the file's close fails after the timeout) and
    # the cluster never sees: the flushes at unmount fail too.
    run dd if=/dev/urandom of="$MP" bs=64k count=4 seek=20 conv=notrunc
    start=$(_now_ms)
    run -0 timeout 60 blkfuse unmount "$MP"
    wait_for_pid_exit "$pid" 30
    echo "unmount took $(($(_now_ms) - start)) ms"
    # Two flushes (format and protocol node) and the wait for the close: 3 x 2 s, and slack.
    (($(_now_ms) - start < 30000))
    grep -q "did not answer at close" "$T/daemon.log"
    ceph_osd_start
}

@test "rbd: with the OSD down past the timeout, the daemon's other export keeps serving" {
    make_pattern "$T/ref" 4M
    rbd import "$T/ref" "rbd/$IMG" >/dev/null 2>&1
    make_pattern "$T/local.img" 4M
    SOCK=$T/serve.sock
    start_serve
    blkfuse_mount --daemon "$SOCK" -o reconnect-timeout=3 "$URI" "$MP"
    blkfuse_mount --daemon "$SOCK" "$T/local.img" "$T/local"
    ceph_osd_stop
    run dd if="$MP" of=/dev/null bs=64k count=1 iflag=direct
    [ "$status" -ne 0 ]
    [[ $output == *"Input/output error"* ]]
    # The same daemon, the same moment: the local export answers, and so does its control socket.
    cmp "$T/local" "$T/local.img"
    run -0 ctl '{"cmd": "list"}'
    kill -0 "$SERVE_PID"
    ceph_osd_start
    local deadline=$(($(_now_ms) + 60000))
    until dd if="$MP" of=/dev/null bs=64k count=1 iflag=direct status=none; do
        (($(_now_ms) < deadline))
    done
    cmp "$MP" "$T/ref"
}
