# shellcheck shell=bash
# rbd.sh - sourced by bench/run: the "rbd" part.  A one-node Ceph cluster (tests/ceph-helpers.bash:
# one monitor, one memstore OSD on 127.0.0.1) holds one image of SIZE random data; round after
# round, in rotating order:
#
#   blkfuse    fio 4 KiB random reads at depth 1 and 32 (-K) through blkfuse mount rbd:rbd/bench
#   rbd bench  `rbd bench --io-type read --io-pattern rand --io-size 4K --io-threads N` on the same
#              image: librbd's own asynchronous reads, no FUSE, no kernel
#
# What the issue asks of it: blkfuse at depth 32 at least half of what rbd bench reports.

RBD_JOBS_DEFAULT="randread-4k-qd1 randread-4k-qd32"

# The test helper's small functions, for ceph-helpers.bash.
declare -F _now_ms >/dev/null || _now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
declare -F _pid_alive >/dev/null || _pid_alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null)
    [[ -n $state && $state != Z ]]
}
declare -F wait_for_pid_exit >/dev/null || wait_for_pid_exit() {
    local i
    for ((i = 0; i < ${2:-10} * 20; i++)); do _pid_alive "$1" || return 0; sleep 0.05; done
    return 1
}

# shellcheck source=tests/ceph-helpers.bash
. "$TOP/tests/ceph-helpers.bash"

# rbd_bench_iops JOB: IOPS of `rbd bench` reading like JOB (randread-4k-qdN) for about RUNTIME
# seconds (it stops after a number of bytes: RBD_BENCH_BYTES[JOB], from the previous round).
rbd_bench_iops() {
    local job=$1 depth=${1##*-qd} bytes out
    bytes=${RBD_BENCH_BYTES[$job]:-16777216}
    out=$(rbd bench --io-type read --io-pattern rand --io-size 4K --io-threads "$depth" \
        --io-total "$bytes" rbd/bench 2>>"$LOGDIR/rbd-bench.log") ||
        die "rbd bench ($job) failed (log: $LOGDIR/rbd-bench.log)"
    # Last line: "elapsed: N   ops: N   ops/sec: X   bytes/sec: ..."
    awk '/ops\/sec:/ { for (i = 1; i <= NF; i++) if ($i == "ops/sec:") v = $(i + 1) } END { printf "%d\n", v }' <<<"$out"
}

# rbd_turn JOB NAME: a turn of run_rounds: blkfuse's fio run of JOB sets how many bytes the
# next rbd bench of JOB moves.
rbd_turn() {
    if [[ $2 == blkfuse ]]; then
        IOPS=$(fio_iops "$1" "$W/rbd.mnt")
        RBD_BENCH_BYTES[$1]=$((IOPS * RUNTIME * 4096 > 16777216 ? IOPS * RUNTIME * 4096 : 16777216))
    else
        IOPS=$(rbd_bench_iops "$1")
    fi
}

# rbd_run OUT: the rbd part; appends a Markdown section to OUT.
rbd_run() {
    local out=$1 job b a ratio
    local -a exps=(blkfuse rbd-bench)
    local -A res=() med=()
    declare -gA RBD_BENCH_BYTES=()

    say "== RBD: fio jobs against rbd bench on a one-node Ceph cluster, image of $SIZE, $ROUNDS round(s) of $RUNTIME s"
    ceph_start "$W/ceph" 2>>"$LOGDIR/ceph.log" || die "the Ceph cluster did not start (log: $LOGDIR/ceph.log)"
    RBD_CLUSTER=1
    head -c "$SIZE" /dev/urandom >"$W/rbd.raw"
    rbd import "$W/rbd.raw" rbd/bench >/dev/null 2>&1 || die "rbd import failed"
    rm -f "$W/rbd.raw"
    bf_mount -f raw "rbd:rbd/bench:conf=$CEPH_CONF" "$W/rbd.mnt"

    run_rounds res rbd_turn "$RBD_JOBS" "${exps[@]}"

    {
        echo "### fio jobs over RBD"
        echo
        echo "IOPS, median of $ROUNDS round(s) of about $RUNTIME s; a raw image of $SIZE of random data in a"
        echo "one-node Ceph cluster on this machine (one monitor, one memstore OSD, 127.0.0.1): blkfuse"
        echo "(\`rbd:rbd/bench\`, fio with O_DIRECT) against \`rbd bench --io-type read --io-pattern rand"
        echo "--io-size 4K --io-threads DEPTH\` (librbd alone) on the same image."
        echo
        echo "| job | blkfuse | rbd bench | blkfuse / rbd bench |"
        echo "| --- | ---: | ---: | ---: |"
    } >>"$out"
    for job in $RBD_JOBS; do
        b=$(tr ' ' '\n' <<<"${res[blkfuse,$job]}" | median)
        a=$(tr ' ' '\n' <<<"${res[rbd-bench,$job]}" | median)
        med[$job]=$b
        ratio=$(calc 'a > 0 ? sprintf("%.2f", b / a) : 0' a="$a" b="$b")
        echo "| $job | $b | $a | $ratio |" >>"$out"
    done
    echo >>"$out"
    if [[ -n ${med[randread-4k-qd1]:-} && -n ${med[randread-4k-qd32]:-} ]]; then
        echo "- blkfuse randread-4k qd32 / qd1: $(calc 'a > 0 ? sprintf("%.2f", b / a) : 0' \
            a="${med[randread-4k-qd1]}" b="${med[randread-4k-qd32]}"); the issue asks for" \
            "blkfuse / rbd bench at depth 32 of at least 0.5" >>"$out"
        echo >>"$out"
    fi
    stop_exports
    rbd_stop_cluster
}

# rbd_stop_cluster: stop the cluster rbd_run started (also from the clean-up after a failure).
rbd_stop_cluster() {
    if ((${RBD_CLUSTER:-0})); then
        RBD_CLUSTER=0
        ceph_stop
    fi
}
