#!/usr/bin/env bats
# export-splice.bats - large READs of a raw image in the page cache are answered by splice over
# /dev/fuse (the data copied once, page cache to reader, instead of twice): they return the
# image's bytes at any offset and length, at the end of the image too; reads that cannot be
# spliced (not in the page cache, -o splice-read=off, a qcow2 image) are copied and equally
# right.  The daemon's splice calls are watched with strace.

load helpers
load control-helpers

# Splice replies are the /dev/fuse transport's (FUSE-over-io_uring has its own buffers).
BLKFUSE_TEST_TRANSPORT=dev

setup() {
    export_setup
    require strace
    make_pattern "$IMG" 16M
    # 16 MiB and 700,001 bytes more: the end is not on a page.
    head -c 700001 /dev/urandom >>"$IMG"
}

# trace_start MP / trace_stop: the daemon's splice calls, in $T/trace.
trace_start() {
    strace -f -e trace=splice -o "$T/trace" -p "$(daemon_pid "$1")" 2>"$T/strace.err" &
    STRACE_PID=$!
    wait_for_log "$T/strace.err" "attached"
}

trace_stop() {
    kill -INT "$STRACE_PID"
    wait "$STRACE_PID" || true
}

# spliced_replies: splices of a reply to /dev/fuse that succeeded.  (The data's way into the
# pipe is a splice from the image's fd; the reply's, one to /dev/fuse with its header.)
spliced_replies() {
    grep -Ec 'splice\(.*= [0-9]+$' "$T/trace" || true
}

# read_direct FILE OFFSET LENGTH BS: LENGTH bytes at OFFSET in reads of BS, O_DIRECT (each a
# READ of the export: no page cache of the FUSE file in between).
read_direct() {
    python3 - "$@" <<'PY'
import mmap, os, sys
path, off, length, bs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, bs)
out = bytearray()
while len(out) < length:
    n = os.preadv(fd, [buf], off + len(out))
    if n == 0:
        break
    out += buf[:min(n, length - len(out))]
sys.stdout.buffer.write(out)
PY
}

# check_reads MP [REF]: whole-image, unaligned and end-crossing reads through MP equal REF
# (default: the image).
check_reads() {
    local mp=$1 ref=${2:-$IMG} size
    size=$(stat -c %s "$ref")
    [ "$(stat -c %s "$mp")" -eq "$size" ]
    read_direct "$mp" 0 "$size" 524288 | cmp - "$ref"
    read_direct "$mp" 0 "$size" 1048576 | cmp - "$ref"
    read_direct "$mp" 4096 $((3 << 20)) 131072 | cmp - <(tail -c +4097 "$ref" | head -c $((3 << 20)))
    # Unaligned offsets through the page cache of the FUSE file (buffered reads, readahead).
    dd if="$mp" bs=100000 skip=7 count=20 status=none |
        cmp - <(dd if="$ref" bs=100000 skip=7 count=20 status=none)
    # Across the end: a short read.
    read_direct "$mp" $((size - 300000)) 524288 524288 | cmp - <(tail -c 300000 "$ref")
    cat "$mp" | cmp - "$ref"
}

@test "large reads of a raw image in the page cache are spliced, and return the image's bytes" {
    cat "$IMG" >/dev/null       # in the page cache
    blkfuse_mount -f raw "$IMG" "$MP"
    trace_start "$MP"
    check_reads "$MP"
    trace_stop
    echo "spliced replies: $(spliced_replies)"
    # 33 reads of 512 KiB and 24 of 128 KiB at least, each two splices: into the pipe, out.
    # (1 MiB ones only where the pipe may grow past pipe-max-size: CAP_SYS_RESOURCE.)
    (($(spliced_replies) >= 2 * (33 + 24)))
    grep -q "= 524288$" "$T/trace"
    grep -q "= 524304$" "$T/trace"
}

@test "reads not in the page cache, or with -o splice-read=off, are copied, and equally right" {
    blkfuse_mount -f raw "$IMG" "$MP"
    python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$IMG"
    trace_start "$MP"
    read_direct "$MP" 0 $((4 << 20)) 1048576 | cmp - <(head -c $((4 << 20)) "$IMG")
    trace_stop
    echo "spliced replies, first reads: $(spliced_replies)"
    [ "$(spliced_replies)" -eq 0 ]
    blkfuse unmount "$MP"

    cat "$IMG" >/dev/null
    blkfuse_mount -f raw -o splice-read=off "$IMG" "$MP"
    trace_start "$MP"
    check_reads "$MP"
    trace_stop
    [ "$(spliced_replies)" -eq 0 ]
}

@test "a qcow2 image is read by copy; its reads are right" {
    qemu-img convert -f raw -O qcow2 "$IMG" "$T/disk.qcow2"
    # The qcow2 image is a whole number of sectors: its bytes, padded with zeros.
    qemu-img convert -f qcow2 -O raw "$T/disk.qcow2" "$T/ref.raw"
    blkfuse_mount -f qcow2 "$T/disk.qcow2" "$MP"
    trace_start "$MP"
    check_reads "$MP" "$T/ref.raw"
    trace_stop
    [ "$(spliced_replies)" -eq 0 ]
}

@test "spliced reads are counted in stats, and writes in between are seen by the next read" {
    cat "$IMG" >/dev/null
    blkfuse_mount -f raw "$IMG" "$MP"
    read_direct "$MP" 0 $((8 << 20)) 524288 >/dev/null
    [ "$(blkfuse stats --json "$MP" | json_get stats read ops)" -eq 16 ]
    [ "$(blkfuse stats --json "$MP" | json_get stats read bytes)" -eq $((8 << 20)) ]
    head -c 1048576 /dev/urandom >"$T/piece"
    dd if="$T/piece" of="$MP" bs=1M seek=2 oflag=direct conv=notrunc status=none
    read_direct "$MP" $((2 << 20)) 1048576 524288 | cmp - "$T/piece"
    blkfuse unmount "$MP"
    dd if="$IMG" bs=1M skip=2 count=1 status=none | cmp - "$T/piece"
}

@test "a spliced reply that the kernel refuses goes as a copy, and the queue copies from then on" {
    # BLKFUSE_SPLICE_REPLY_FAULT: each splice of a reply to /dev/fuse fails as if the kernel
    # had refused it (EINVAL), after the data went into the pipe.
    EXPECTED_LOG_ERRORS='splicing the reply to request [0-9]+ failed'
    cat "$IMG" >/dev/null
    export BLKFUSE_SPLICE_REPLY_FAULT=1
    blkfuse_mount -f raw --queues=1 "$IMG" "$MP"
    unset BLKFUSE_SPLICE_REPLY_FAULT
    trace_start "$MP"
    read_direct "$MP" 0 $((8 << 20)) 524288 | cmp - <(head -c $((8 << 20)) "$IMG")
    trace_stop
    # One try: the data went into the pipe (a splice from the image), the reply failed.
    echo "spliced: $(spliced_replies)"
    [ "$(spliced_replies)" -eq 1 ]
    [ "$(grep -c 'splicing the reply to request' "$T/daemon.log")" -eq 1 ]
    grep -q 'copying every reply from now on' "$T/daemon.log"
    check_reads "$MP"
    run -0 --separate-stderr blkfuse stats --json "$MP"
    python3 -c '
import json, sys
s = json.loads(sys.argv[1])["stats"]
assert s["read"]["ops"] >= 16 and s["read"]["failed"] == 0, s["read"]
assert s["in_flight"] == 0, s
' "$output"
    # The queue counts the request answered once: it stops without waiting for more replies.
    run timeout 30 blkfuse unmount "$MP"
    [ "$status" -eq 0 ]
    ! is_mounted "$MP"
}

@test "spliced reads in flight when the export is forced away: the readers fail, the daemon exits cleanly" {
    cat "$IMG" >/dev/null
    blkfuse_mount_foreground -f raw "$IMG" "$MP"
    # Two readers of 512 KiB at a time, O_DIRECT, over and over: replies spliced back to back.
    local i readers=()
    for i in 1 2; do
        python3 - "$MP" <<'PY' >"$T/reader.$i" 2>&1 &
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 524288)
try:
    while True:
        for off in range(0, 16 << 20, 524288):
            os.preadv(fd, [buf], off)
except OSError as e:
    print("reader failed:", e)
PY
        readers+=($!)
        PIDS+=($!)
    done
    wait_until 10 python3 -c '
import json, subprocess, sys
s = json.loads(subprocess.check_output(["blkfuse", "stats", "--json", sys.argv[1]]))
sys.exit(0 if s["stats"]["read"]["ops"] >= 200 else 1)' "$MP"
    blkfuse unmount --force "$MP"
    local rc=0
    wait "$BLKFUSE_PID" || rc=$?
    echo "daemon exit status $rc"
    [ "$rc" -eq 0 ]
    for i in 1 2; do
        wait "${readers[i - 1]}" || true
        cat "$T/reader.$i"
        grep -q "reader failed" "$T/reader.$i"
    done
    ! is_mounted "$MP"
    grep -q exiting "$T/daemon.log"
}
