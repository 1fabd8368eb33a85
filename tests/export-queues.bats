#!/usr/bin/env bats
# export-queues.bats - concurrent AIO load on a multi-queue export: four
# rwstress processes on disjoint ranges, each verifying its own reads, and the
# image afterwards byte-identical to the same runs applied to a plain copy.

load helpers

# --queues N is the dev transport's: FUSE-over-io_uring has one queue per CPU instead.
BLKFUSE_TEST_TRANSPORT=dev

setup() {
    blkfuse_setup
    require_fuse
    need_tool rwstress
    IMG=$T/disk.img
    REF=$T/ref.img
    MP=$T/disk.mnt
    make_pattern "$IMG" 64M
    cp "$IMG" "$REF"
}

# stress_args I: rwstress arguments for worker I (0..3): its own 16 MiB range
# and seed, 2048 of the range's 4096 blocks.
stress_args() {
    local i=$1
    echo --offset $((i * 16))M --length 16M --seed $((1000 + i)) --ops 2048 --depth 8
}

# run_workers FILE [RWSTRESS-ARGS...]: the four workers on FILE at once, each
# with --verify; fails if any of them fails.
run_workers() {
    local file=$1 i pid rc=0
    local -a pids=()
    shift
    for i in 0 1 2 3; do
        # shellcheck disable=SC2046 # word splitting of stress_args is wanted
        rwstress --file "$file" $(stress_args "$i") --verify "$@" 2>"$T/worker$i.err" &
        pids+=($!)
        PIDS+=($!)
    done
    for i in 0 1 2 3; do
        wait "${pids[$i]}" || {
            rc=1
            echo "worker $i failed: $(cat "$T/worker$i.err")" >&2
        }
    done
    return "$rc"
}

# The same four runs, one after another, on the reference copy.
apply_to_reference() {
    local i
    for i in 0 1 2 3; do
        # shellcheck disable=SC2046
        rwstress --file "$REF" $(stress_args "$i")
    done
}

# check_queues MOUNT-ARGS... -- RWSTRESS-ARGS...
check_queues() {
    local -a mount_args=() stress_args=()
    while (($#)) && [[ $1 != -- ]]; do
        mount_args+=("$1")
        shift
    done
    (($#)) && shift
    stress_args=("$@")

    blkfuse_mount "${mount_args[@]}" "$IMG" "$MP"
    run -0 blkfuse list --json
    python3 -c 'import json, sys; assert json.loads(sys.argv[1])[0]["queues"] == 4, sys.argv[1]' "$output"

    run_workers "$MP" ${stress_args[@]+"${stress_args[@]}"}
    apply_to_reference
    cmp "$MP" "$REF"
    blkfuse unmount "$MP"
    cmp "$IMG" "$REF"
}

@test "4 queues, cache=none: four O_DIRECT AIO writers at depth 8 match a reference copy" {
    check_queues --queues 4 --cache=none -- --direct
}

@test "4 queues, default cache: four O_DIRECT AIO writers at depth 8 match a reference copy" {
    check_queues --queues 4 -- --direct
}

@test "4 queues, default cache: four buffered AIO writers match a reference copy" {
    check_queues --queues=4 --
}

@test "blkfuse stats counts the writes and reads of a multi-queue export" {
    blkfuse_mount --queues 4 --cache=none "$IMG" "$MP"
    run_workers "$MP" --direct

    run -0 --separate-stderr blkfuse stats "$MP"
    echo "$output"
    # Each worker wrote and read back 2048 blocks of 4 KiB.
    [[ $output =~ (^|$'\n')write\ +8192\ +33554432\ +0\  ]]
    [[ $output =~ (^|$'\n')read\ +8192\ +33554432\ +0\  ]]

    run -0 --separate-stderr blkfuse stats --json "$MP"
    python3 -c '
import json, sys
s = json.loads(sys.argv[1])["stats"]
assert s["write"]["ops"] == 8192 and s["write"]["bytes"] == 8192 * 4096, s["write"]
assert s["write"]["failed"] == 0 and s["read"]["failed"] == 0, s
assert s["read"]["ops"] == 8192, s["read"]
assert s["in_flight"] == 0, s
' "$output"
}
