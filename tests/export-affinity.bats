#!/usr/bin/env bats
# export-affinity.bats - --queues=auto over /dev/fuse (the default): a queue per CPU (up to
# 4), each pinned to its CPU while requests come one at a time (mode local: the queue on the
# client's CPU serves them), queue 0 alone on any CPU while many are in flight (mode spread),
# and back; `blkfuse stats` and `list --json` show it; --queues=N and taskset are respected;
# the data stays intact across the switches.

load helpers

# The dev transport's queues: FUSE-over-io_uring has its own (export-uring.bats).
BLKFUSE_TEST_TRANSPORT=dev

setup() {
    export_setup
    need_tool rwstress
    make_pattern "$IMG" 16M
    cp "$IMG" "$REF"
    # The CPUs this test may use, as the daemon will see them.
    CPUS=($(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))'))
}

# aff MP: the export's "affinity" object, as JSON.
aff() {
    blkfuse list --json | python3 -c '
import json, sys
mine = [e for e in json.load(sys.stdin) if e["mountpoint"] == sys.argv[1]]
assert len(mine) == 1, mine
print(json.dumps(mine[0]["affinity"]))
' "$(_abspath "$1")"
}

# check_aff MP PYTHON-EXPR [ARG...]: assert the expression over a (the affinity object) and
# q (its queues) holds; ARGs are sys.argv[3...].
check_aff() {
    local a
    a=$(aff "$1")
    echo "affinity: $a"
    python3 -c '
import json, sys
a = json.loads(sys.argv[1])
q = a["queues"]
assert eval("(" + sys.argv[2] + ")"), sys.argv[2]
' "$a" "$2" "${@:3}"
}

# read_at_depth1 CPU FILE COUNT: COUNT reads of 4 KiB, one at a time, O_DIRECT, from CPU.
read_at_depth1() {
    taskset -c "$1" dd if="$2" of=/dev/null bs=4k count="$3" iflag=direct status=none
}

# allowed_list: the CPUs of this test as a list (0-1, 0,2-3...), as the kernel prints it.
allowed_list() {
    awk '/^Cpus_allowed_list/ { print $2 }' /proc/self/status
}

@test "the default is a queue per CPU (up to 4), each pinned to its own, mode local" {
    blkfuse_mount "$IMG" "$MP"
    local want=$((${#CPUS[@]} < 4 ? ${#CPUS[@]} : 4)) name cpus n=0
    [ "$(list_field "$MP" queues)" -eq "$want" ]
    # Over /dev/fuse every waiting queue wakes for each request: replies never yield the CPU
    # (that is for FUSE-over-io_uring, export-uring.bats).
    check_aff "$MP" 'a["mode"] == "local" and len(q) == '"$want"' and
        all(x["cpu"] == int(sys.argv[3].split()[i]) and x["pinned_to"] == x["cpu"] and
            x["taking_requests"] and not x["yields_cpu"] for i, x in enumerate(q))' "${CPUS[*]}"
    while read -r name cpus; do
        echo "$name: $cpus"
        [ "$cpus" = "${CPUS[${name#fuse-q}]}" ]
        n=$((n + 1))
    done < <(queue_threads "$MP")
    [ "$n" -eq "$want" ]

    run -0 --separate-stderr blkfuse stats "$MP"
    echo "$output"
    [[ $output == *"queues: $want, local ("*"0 switches; requests:"* ]]
}

@test "a client reading one request at a time is served by the queue on its own CPU" {
    ((${#CPUS[@]} >= 2)) || skip "needs 2 CPUs"
    blkfuse_mount "$IMG" "$MP"
    local cpu a before after
    for cpu in "${CPUS[0]}" "${CPUS[1]}"; do
        before=$(aff "$MP")
        read_at_depth1 "$cpu" "$MP" 1000
        after=$(aff "$MP")
        # More than half of the reads on the queue of the client's CPU (the thread there runs
        # as soon as the client sleeps; the other one wakes on its own CPU to find nothing).
        python3 -c '
import json, sys
b, a, cpu = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
assert a["mode"] == "local" and a["switches"] == 0, a
got = {x["cpu"]: x["requests"] - y["requests"] for x, y in zip(a["queues"], b["queues"])}
print(got)
assert got[cpu] > sum(got.values()) / 2, got
' "$before" "$after" "$cpu"
    done
}

@test "many requests in flight: queue 0 alone takes them, on any CPU; one at a time again, the queues go back to their CPUs" {
    ((${#CPUS[@]} >= 2)) || skip "needs 2 CPUs"
    blkfuse_mount "$IMG" "$MP"
    local all name cpus
    all=$(allowed_list)

    rwstress --file "$MP" --offset 0 --length 16M --seed 7 --ops 4096 --depth 32 --direct --verify
    check_aff "$MP" 'a["mode"] == "spread" and a["switches"] >= 1 and q[0]["taking_requests"] and
        not any(x["taking_requests"] for x in q[1:]) and
        all(x["pinned_to"] is None for x in q)'
    while read -r name cpus; do
        echo "$name: $cpus (allowed: $all)"
        [ "$cpus" = "$all" ]
    done < <(queue_threads "$MP")
    run -0 --separate-stderr blkfuse stats "$MP"
    [[ $output == *", spread (many requests in flight"* ]]

    # 8 windows of 64 requests at depth 1 switch back.
    read_at_depth1 "${CPUS[1]}" "$MP" 1024
    check_aff "$MP" 'a["mode"] == "local" and a["switches"] >= 2 and
        all(x["taking_requests"] and x["pinned_to"] == x["cpu"] for x in q)'
    while read -r name cpus; do
        echo "$name: $cpus"
        [ "$cpus" = "${CPUS[${name#fuse-q}]}" ]
    done < <(queue_threads "$MP")
}

@test "--queues=2: two queues that take any request and are not pinned (affinity fixed)" {
    blkfuse_mount --queues=2 "$IMG" "$MP"
    local all name cpus
    all=$(allowed_list)
    read_at_depth1 "${CPUS[0]}" "$MP" 200
    rwstress --file "$MP" --offset 0 --length 16M --seed 7 --ops 1024 --depth 32 --direct
    check_aff "$MP" 'a["mode"] == "fixed" and a["switches"] == 0 and len(q) == 2 and
        all(x["cpu"] is None and x["pinned_to"] is None and x["taking_requests"] for x in q)'
    while read -r name cpus; do
        [ "$cpus" = "$all" ]
    done < <(queue_threads "$MP")
    run -0 --separate-stderr blkfuse stats "$MP"
    [[ $output == *"queues: 2, fixed (--queues=N"* ]]
}

@test "a daemon started under taskset stays on its CPUs: one CPU, one queue, pinned there" {
    ((${#CPUS[@]} >= 2)) || skip "needs 2 CPUs"
    local last=${CPUS[-1]} name cpus
    MOUNTS+=("$(_abspath "$MP")")
    taskset -c "$last" blkfuse mount --log-file "$T/daemon.log" --transport=dev "$IMG" "$MP" 3>&-
    is_mounted "$MP"
    [ "$(list_field "$MP" queues)" -eq 1 ]
    check_aff "$MP" 'a["mode"] == "local" and q[0]["cpu"] == '"$last"
    rwstress --file "$MP" --offset 0 --length 16M --seed 7 --ops 1024 --depth 32 --direct
    while read -r name cpus; do
        echo "$name: $cpus"
        # Spread or local: never outside the CPU it was given.
        [ "$cpus" = "$last" ]
    done < <(queue_threads "$MP")
}

@test "the image stays intact across the switches: writers at depth 32, 1, 32 match a reference copy" {
    blkfuse_mount "$IMG" "$MP"
    local d s=1
    for d in 32 1 32 1; do
        rwstress --file "$MP" --offset $((s * 2))M --length 2M --seed $s --ops 256 --depth $d \
            --direct --verify
        rwstress --file "$REF" --offset $((s * 2))M --length 2M --seed $s --ops 256 --depth $d
        s=$((s + 1))
    done
    check_aff "$MP" 'a["switches"] >= 1'
    cmp "$MP" "$REF"
    blkfuse unmount "$MP"
    cmp "$IMG" "$REF"
}

# spread_now MP: drive the export on MP into mode spread (32 requests in flight) and check
# that queue 0 alone takes requests.  The same burst of 512 writes (the same bytes every time),
# up to 16 times: a queue thread that keeps up with a slow client on a busy machine finds its
# requests one at a time, and needs more windows to see two at once.
spread_now() {
    local i
    for i in $(seq 16); do
        rwstress --file "$1" --offset 0 --length 16M --seed 11 --ops 512 --depth 32 --direct
        [[ $(aff "$1") != *'"mode": "spread"'* ]] || break
    done
    echo "spread after $i bursts"
    check_aff "$1" 'a["mode"] == "spread" and q[0]["taking_requests"] and
        not any(x["taking_requests"] for x in q[1:])'
}

# mount_fg_dev IMAGE MP: a foreground daemon (its pid in BLKFUSE_PID), for its exit status.
mount_fg_dev() {
    EXITS=$(grep -c exiting "$T/daemon.log" 2>/dev/null) || true
    blkfuse_mount_foreground "$1" "$2"
}

# exited_cleanly: the daemon of mount_fg_dev ended with status 0 and logged its exit.
exited_cleanly() {
    local rc=0
    wait "$BLKFUSE_PID" || rc=$?
    echo "daemon exit status $rc"
    [ "$rc" -eq 0 ]
    [ "$(grep -c exiting "$T/daemon.log")" -eq $((${EXITS:-0} + 1)) ]
}

@test "removed while in spread mode (queue 1 not taking requests): unmount, --force under load, umount from outside" {
    ((${#CPUS[@]} >= 2)) || skip "needs 2 CPUs"
    local client

    # blkfuse unmount: a clean exit, the writes in the image.
    mount_fg_dev "$IMG" "$MP"
    spread_now "$MP"
    rwstress --file "$REF" --offset 0 --length 16M --seed 11 --ops 512 --depth 32
    blkfuse unmount "$MP"
    exited_cleanly
    ! is_mounted "$MP"
    cmp "$IMG" "$REF"

    # --force while a client keeps 32 requests in flight: the client fails, the daemon ends.
    mount_fg_dev "$IMG" "$MP"
    spread_now "$MP"
    (
        while rwstress --file "$MP" --offset 0 --length 16M --seed 12 --ops 4096 --depth 32 \
            --direct; do
            :
        done
        echo "client: rwstress failed"
    ) >"$T/client.out" 2>&1 &
    client=$!
    PIDS+=("$client")
    wait_for_writes "$MP" 3000
    check_aff "$MP" 'a["mode"] == "spread"'
    blkfuse unmount --force "$MP"
    exited_cleanly
    wait "$client"
    cat "$T/client.out"
    grep -q "client: rwstress failed" "$T/client.out"
    ! is_mounted "$MP"

    # umount from outside: queue 0 sees the end of the connection and stops the others.
    require_root
    mount_fg_dev "$IMG" "$MP"
    spread_now "$MP"
    umount "$MP"
    wait_for_pid_exit "$BLKFUSE_PID"
    exited_cleanly
    ! is_mounted "$MP"
}

@test "removal racing mode switches: a client switching between depth 32 and 1 while the export is removed" {
    ((${#CPUS[@]} >= 2)) || skip "needs 2 CPUs"
    local i client switches=0 n
    for i in 1 2 3 4 5 6; do
        mount_fg_dev "$IMG" "$MP"
        rm -f "$T/stop"
        # Each turn: 96 requests 32 deep (spread), then 600 one at a time (local again).
        (
            while [[ ! -e $T/stop ]] && is_mounted "$MP"; do
                rwstress --file "$MP" --offset 0 --length 16M --seed "$i" --ops 96 --depth 32 \
                    --direct || exit 0
                read_at_depth1 "${CPUS[i % 2]}" "$MP" 600 || exit 0
            done
        ) >/dev/null 2>&1 &
        client=$!
        PIDS+=("$client")
        # Removed at a different point of the cycle each round, with requests in flight.
        wait_until 10 check_aff "$MP" 'a["switches"] >= '$((i % 3 + 1))
        n=$(aff "$MP" | python3 -c 'import json, sys; print(json.load(sys.stdin)["switches"])')
        switches=$((switches + n))
        blkfuse unmount --force "$MP"
        touch "$T/stop"
        exited_cleanly
        wait "$client" || true
        ! is_mounted "$MP"
    done
    echo "switches seen before the removals: $switches"
    ((switches >= 12))
}
