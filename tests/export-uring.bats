#!/usr/bin/env bats
# export-uring.bats - the export over FUSE-over-io_uring: chosen by auto and by
# --transport=uring when the kernel offers it, one queue per CPU pinned to its CPU (and
# committing each reply at idle priority, where the daemon may leave it again) while requests
# come one at a time and free to run anywhere while many are in flight, the
# export's I/O tests passing over it, and the daemon leaving cleanly when the mount goes.
#
# The kernel offers FUSE-over-io_uring only while the fuse module's enable_uring parameter
# is Y: setup_file switches it on (root only; otherwise every test skips) and teardown_file
# puts the old value back.

load helpers

setup_file() {
    uring_file_on
}

teardown_file() {
    uring_file_restore
}

setup() {
    export_setup
    require_uring_file
    make_pattern "$IMG" 8M
}

# possible_cpus: how many CPUs the kernel may ever run (its FUSE-over-io_uring queues).
possible_cpus() {
    python3 -c '
n = 0
for part in open("/sys/devices/system/cpu/possible").read().strip().split(","):
    a, _, b = part.partition("-")
    n += int(b or a) - int(a) + 1
print(n)'
}

@test "--transport=uring serves the file; list and stats say uring, with a queue per CPU" {
    blkfuse_mount --transport=uring "$IMG" "$MP"
    cmp "$IMG" "$MP"
    [ "$(list_field "$MP" transport)" = uring ]
    [ "$(list_field "$MP" queues)" = "$(possible_cpus)" ]
    run -0 --separate-stderr blkfuse stats "$MP"
    [[ ${lines[0]} == *"transport uring"* ]]

    # Writes, buffered and O_DIRECT, land in the image.
    make_pattern "$T/new" 1M
    dd if="$T/new" of="$MP" bs=64k seek=16 conv=notrunc,fsync status=none
    dd if="$T/new" of="$MP" bs=4k seek=1024 oflag=direct conv=notrunc status=none
    blkfuse unmount "$MP"
    cmp -n 1048576 --ignore-initial=0:1048576 "$T/new" "$IMG"
    cmp -n 1048576 --ignore-initial=0:4194304 "$T/new" "$IMG"
    grep -q 'exiting' "$BLKFUSE_LOG"
}

@test "auto uses FUSE-over-io_uring when the kernel offers it, and logs no fallback" {
    blkfuse_mount "$IMG" "$MP"
    cmp "$IMG" "$MP"
    [ "$(list_field "$MP" transport)" = uring ]
    ! grep -q 'transport dev' "$BLKFUSE_LOG"
}

@test "each queue thread runs on its own CPU, where the kernel queues that CPU's requests" {
    blkfuse_mount --transport=uring "$IMG" "$MP"
    local name cpus n=0
    while read -r name cpus; do
        echo "$name: $cpus"
        [ "$cpus" = "${name#fuse-q}" ]
        n=$((n + 1))
    done < <(queue_threads "$MP")
    [ "$n" -eq "$(possible_cpus)" ]
}

# aff_mode MP: local or spread (list --json's affinity.mode).
aff_mode() {
    blkfuse list --json | python3 -c '
import json, sys
print([e for e in json.load(sys.stdin) if e["mountpoint"] == sys.argv[1]][0]["affinity"]["mode"])
' "$(_abspath "$1")"
}

@test "many requests in flight: the queue threads run on any CPU; one at a time again, on their own" {
    need_tool rwstress
    local cpus all name cpus_now
    cpus=($(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))'))
    ((${#cpus[@]} >= 2)) || skip "needs 2 CPUs"
    all=$(awk '/^Cpus_allowed_list/ { print $2 }' /proc/self/status)
    blkfuse_mount --transport=uring "$IMG" "$MP"

    # All from one CPU: its queue gets them all, many at once.
    taskset -c "${cpus[1]}" rwstress --file "$MP" --offset 0 --length 8M --seed 3 --ops 2048 \
        --depth 32 --direct --verify
    [ "$(aff_mode "$MP")" = spread ]
    while read -r name cpus_now; do
        echo "$name: $cpus_now (allowed: $all)"
        [ "$cpus_now" = "$all" ]
    done < <(queue_threads "$MP")

    # 8 windows of 64 requests one at a time switch back.
    taskset -c "${cpus[1]}" dd if="$MP" of=/dev/null bs=4k count=1024 iflag=direct status=none
    [ "$(aff_mode "$MP")" = local ]
    while read -r name cpus_now; do
        echo "$name: $cpus_now"
        [ "$cpus_now" = "${name#fuse-q}" ]
    done < <(queue_threads "$MP")
}

# policies MP: the scheduling policy of each queue thread, as chrt names it (SCHED_OTHER,
# SCHED_IDLE, ...), one line per policy in use.
policies() {
    local pid task
    pid=$(daemon_pid "$1")
    for task in /proc/"$pid"/task/*; do
        [[ $(cat "$task/comm") == fuse-q* ]] || continue
        chrt -p "${task##*/}" | sed -n 's/.*scheduling policy: //p'
    done | sort -u
}

# yield_info MP: "yields_cpu of every queue (True/False, or mixed) total-yields total-pauses".
yield_info() {
    blkfuse list --json | python3 -c '
import json, sys
e = [e for e in json.load(sys.stdin) if e["mountpoint"] == sys.argv[1]][0]
q = e["affinity"]["queues"]
y = {x["yields_cpu"] for x in q}
print(y.pop() if len(y) == 1 else "mixed", sum(x["yields"] for x in q),
      sum(x["yield_pauses"] for x in q))
' "$(_abspath "$1")"
}

# read_until_yields MP N: 4 KiB reads one at a time, O_DIRECT, until the queues have yielded
# N times (at most 20 s: a busy machine pauses the yields now and then).
read_until_yields() {
    local i y
    for ((i = 0; i < 200; i++)); do
        dd if="$1" of=/dev/null bs=4k count=256 iflag=direct status=none
        read -r _ y _ < <(yield_info "$1")
        ((y >= $2)) && return 0
    done
    echo "only $y yields" >&2
    return 1
}

# mount_under CMD...: blkfuse mount -v --transport=uring IMG MP, run by CMD... (chrt, setpriv).
mount_under() {
    MOUNTS+=("$(_abspath "$MP")")
    "$@" blkfuse mount -v --log-file "$T/daemon.log" --transport=uring "$IMG" "$MP" 3>&-
    is_mounted "$MP"
}

@test "one request at a time, each reply is committed at idle priority; many in flight, never" {
    require_root
    need_tool rwstress
    local cpus info
    cpus=($(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))'))
    ((${#cpus[@]} >= 2)) || skip "needs 2 CPUs"
    blkfuse_mount --transport=uring "$IMG" "$MP"
    read -r info _ < <(yield_info "$MP")
    [ "$info" = True ]
    run -0 --separate-stderr blkfuse stats "$MP"
    [[ $output == *", local (requests come one at a time: each queue serves them on its client's CPU, and yields it to the client with each reply)"* ]]
    read_until_yields "$MP" 200
    # Only for that system call: the threads are back at the daemon's policy.
    [ "$(policies "$MP")" = SCHED_OTHER ]

    taskset -c "${cpus[1]}" rwstress --file "$MP" --offset 0 --length 8M --seed 5 --ops 2048 \
        --depth 32 --direct --verify
    [ "$(aff_mode "$MP")" = spread ]
    read -r info _ < <(yield_info "$MP")
    [ "$info" = False ]
    run -0 --separate-stderr blkfuse stats "$MP"
    [[ $output != *"yields it"* ]]

    taskset -c "${cpus[0]}" dd if="$MP" of=/dev/null bs=4k count=1024 iflag=direct status=none
    [ "$(aff_mode "$MP")" = local ]
    read -r info _ < <(yield_info "$MP")
    [ "$info" = True ]
    [ "$(policies "$MP")" = SCHED_OTHER ]
    cmp "$IMG" "$MP"
    blkfuse unmount "$MP"
    ! grep -q 'idle priority' "$T/daemon.log"       # no warning that a switch failed
}

@test "idle priority only where the daemon may leave it again, and never for a real-time daemon" {
    require_root
    require setpriv prlimit
    need_tool rwstress
    local info
    # Without CAP_SYS_NICE and with RLIMIT_NICE 0, a thread may not leave SCHED_IDLE: no
    # yields, and the log says why.
    mount_under prlimit --nice=0 setpriv --bounding-set=-sys_nice --inh-caps=-sys_nice
    read -r info _ < <(yield_info "$MP")
    [ "$info" = False ]
    grep -q 'may not leave SCHED_IDLE' "$T/daemon.log"
    dd if="$MP" of=/dev/null bs=4k count=256 iflag=direct status=none
    [ "$(yield_info "$MP")" = "False 0 0" ]
    blkfuse unmount "$MP"

    # RLIMIT_NICE 20 allows the way back without the capability (raising it needs
    # CAP_SYS_RESOURCE, which some containers' root lacks).
    if prlimit --nice=20 true 2>/dev/null; then
        mount_under prlimit --nice=20 setpriv --bounding-set=-sys_nice --inh-caps=-sys_nice
        read_until_yields "$MP" 100
        [ "$(policies "$MP")" = SCHED_OTHER ]
        blkfuse unmount "$MP"
    fi

    # A daemon started SCHED_BATCH goes back to SCHED_BATCH after each yield.
    mount_under chrt --batch 0
    read_until_yields "$MP" 100
    [ "$(policies "$MP")" = SCHED_BATCH ]
    blkfuse unmount "$MP"

    # A real-time daemon keeps its priority.
    mount_under chrt --rr 1
    read -r info _ < <(yield_info "$MP")
    [ "$info" = False ]
    dd if="$MP" of=/dev/null bs=4k count=256 iflag=direct status=none
    [ "$(yield_info "$MP")" = "False 0 0" ]
    [ "$(policies "$MP")" = SCHED_RR ]
    ! grep -q 'cannot leave idle priority' "$T/daemon.log"
}

@test "umount from outside ends the daemon cleanly; the ring entries come back" {
    blkfuse_mount_foreground --transport=uring "$IMG" "$MP"
    cmp "$IMG" "$MP"
    umount "$MP"
    wait_for_pid_exit "$BLKFUSE_PID"
    grep -q 'unmounted' "$BLKFUSE_LOG"
}

@test "a forced unmount while the file is open: its I/O fails, the daemon exits" {
    blkfuse_mount --transport=uring "$IMG" "$MP"
    local pid
    pid=$(daemon_pid "$MP")
    exec 5<"$MP"
    run -0 blkfuse unmount --force "$MP"
    wait_for_pid_exit "$pid"
    run dd if=/dev/fd/5 of=/dev/null bs=4k count=1 iflag=direct
    [ "$status" -ne 0 ]
    exec 5<&-
}

@test "the export I/O tests pass over FUSE-over-io_uring" {
    need_tool rwstress
    BLKFUSE_TEST_TRANSPORT=uring run bats --tap "$BATS_TEST_DIRNAME/export-io.bats"
    echo "$output" | grep -v '^ok ' || true
    [ "$status" -eq 0 ]
    [[ $output != *"not ok"* ]]
    [[ $output == *"ok 1 "* ]]
}
