#!/usr/bin/env bats
# export-exerciser.bats - blkfsx (tests/tools/blkfsx.c), the randomized exerciser, against
# real mounts: raw and qcow2 in every cache mode, with --queues 4 and --growable, each run
# checked operation by operation against blkfsx's model of the file; qcow2 images with an
# internal snapshot, a backing file and compressed clusters; I/O racing resizes and
# fallocate.  Afterwards qemu-img check finds a qcow2 clean and qemu-img convert -O raw
# equals the model's final contents.
#
# The seeds are fixed, so a run is the same every time (but for what a race decides).
# Environment (make soak sets them):
#   BLKFSX_OPS    operations per run [1000]
#   BLKFSX_SECS   run each test this many seconds instead of BLKFSX_OPS operations
#   BLKFSX_SEED   a seed for every test instead of the fixed ones; "random": a new one each
#   BLKFSX_SIZE   the image's initial size [1M]; the file may grow to twice that
#   BLKFSX_ARGS   more blkfsx options for every run (e.g. -x race-truncate)
# A failing run prints the command that repeats it.

load helpers

setup() {
    blkfuse_setup
    require_fuse
    require qemu-img
    need_tool blkfsx
    MP=$T/disk.mnt
    MODEL=$T/model.raw
}

# seed_for FIXED: the seed of this test.
seed_for() {
    case ${BLKFSX_SEED:-} in
    "") echo "$1" ;;
    random) od -An -N4 -tu4 /dev/urandom | tr -d ' ' ;;
    *) echo "$BLKFSX_SEED" ;;
    esac
}

# make_image FMT CREATE-OPTIONS [SIZE]: a fresh image $IMG of SIZE (default $BLKFSX_SIZE
# or 1M; raw: sparse).
make_image() {
    local fmt=$1 opts=$2 size=${3:-${BLKFSX_SIZE:-1M}}
    IMG=$T/disk.$fmt
    rm -f "$IMG"
    if [[ $fmt == raw ]]; then
        truncate -s "$size" "$IMG"
    else
        qemu-img create -q -f qcow2 ${opts:+-o "$opts"} "$IMG" "$size"
    fi
}

# image_virtual_size: the virtual size of the unmounted qcow2 $IMG.
image_virtual_size() {
    qemu-img info --output=json -f qcow2 "$IMG" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["virtual-size"])'
}

# verify_image FMT: the unmounted $IMG holds exactly $MODEL: a qcow2 passes qemu-img check
# without errors or leaks, and qemu-img convert -O raw gives the model's bytes (a raw
# image's size rounded up to 512 bytes by QEMU, the extra bytes zeros).
verify_image() {
    local fmt=$1 size conv_size
    size=$(stat -c %s "$MODEL")
    if [[ $fmt == qcow2 ]]; then
        run qemu-img check "$IMG"
        echo "$output"
        [ "$status" -eq 0 ]
        [[ $output == *"No errors were found on the image."* ]]
        [[ $output != *leak* ]]
        [ "$(image_virtual_size)" -eq "$size" ]
    else
        [ "$(stat -c %s "$IMG")" -eq "$size" ]
        cmp "$IMG" "$MODEL"
    fi
    qemu-img convert -f "$fmt" -O raw "$IMG" "$T/converted.raw"
    conv_size=$(stat -c %s "$T/converted.raw")
    echo "model $size bytes, qemu-img convert $conv_size bytes"
    [ "$conv_size" -eq $(((size + 511) / 512 * 512)) ]
    cmp -n "$size" "$T/converted.raw" "$MODEL"
    if ((conv_size > size)); then
        cmp -i "$size:0" -n $((conv_size - size)) "$T/converted.raw" /dev/zero
    fi
}

# exercise FMT SEED CREATE-OPTIONS [MOUNT-OPTIONS...] [-- BLKFSX-OPTIONS...]: make the
# image (or let the function named in $PREPARE make $IMG), mount it, run blkfsx with the
# export's rules, unmount, verify the image.
exercise() {
    local fmt=$1 seed create_opts=$3 mount_desc
    local -a mount_args=() fsx_args=() length=()
    seed=$(seed_for "$2")
    shift 3
    while (($#)) && [[ $1 != -- ]]; do
        mount_args+=("$1")
        shift
    done
    (($#)) && shift
    fsx_args=("$@")
    if [[ $fmt == raw ]]; then
        fsx_args+=(--raw-image "$T/disk.raw")
    fi
    if [[ " ${mount_args[*]} " == *" --growable "* ]]; then
        fsx_args+=(--growable)
    fi
    if [[ -n ${BLKFSX_SECS:-} ]]; then
        length=(--ops 0 --duration "$BLKFSX_SECS")
    else
        length=(--ops "${BLKFSX_OPS:-1000}")
    fi
    # shellcheck disable=SC2206 # BLKFSX_ARGS is a list of options
    fsx_args+=(${BLKFSX_ARGS:-})

    if [[ -n ${PREPARE:-} ]]; then
        IMG=$T/disk.$fmt
        "$PREPARE"
    else
        make_image "$fmt" "$create_opts"
    fi
    blkfuse_mount -f "$fmt" "${mount_args[@]}" "$IMG" "$MP"
    run blkfsx --seed "$seed" "${length[@]}" --format "$fmt" --dump "$MODEL" \
        --log-file "$T/ops.log" "${fsx_args[@]}" "$MP"
    echo "$output"
    if ((status != 0)); then
        mount_desc="blkfuse mount -f $fmt ${mount_args[*]}"
        echo "image: $fmt, ${BLKFSX_SIZE:-1M}${create_opts:+, -o $create_opts}; $mount_desc"
        echo "repeat with: BLKFSX_SEED=$seed BLKFSX_OPS=<the failing operation's number>" \
            "${BLKFSX_SIZE:+BLKFSX_SIZE=$BLKFSX_SIZE }${BLKFSX_ARGS:+BLKFSX_ARGS='$BLKFSX_ARGS' }" \
            "bats -f '$BATS_TEST_DESCRIPTION' tests/export-exerciser.bats"
        return 1
    fi
    # The summary line, for the run-tests output.
    grep -m1 'operations in' <<<"$output" | sed 's/^/# /' >&3
    blkfuse unmount "$MP"
    verify_image "$fmt"
}

# --- raw, every cache mode --------------------------------------------------------------

@test "blkfsx: raw, cache=writeback" {
    exercise raw 1001 "" -- --init=fill
}

@test "blkfsx: raw, cache=writethrough" {
    exercise raw 1002 "" --cache=writethrough
}

@test "blkfsx: raw, cache=none" {
    exercise raw 1003 "" --cache=none -- --init=fill
}

@test "blkfsx: raw, cache=directsync" {
    exercise raw 1004 "" --cache=directsync
}

# --- qcow2, every cache mode, assorted cluster sizes --------------------------------------

@test "blkfsx: qcow2 512-byte clusters, cache=writeback" {
    exercise qcow2 2001 cluster_size=512 -- --init=fill
}

@test "blkfsx: qcow2 4k clusters, cache=writethrough" {
    exercise qcow2 2002 cluster_size=4k --cache=writethrough
}

@test "blkfsx: qcow2, cache=none" {
    exercise qcow2 2003 "" --cache=none -- --init=fill
}

@test "blkfsx: qcow2, cache=directsync" {
    exercise qcow2 2004 "" --cache=directsync
}

# --- more queues, growable ---------------------------------------------------------------

@test "blkfsx: raw, --queues 4" {
    exercise raw 3001 "" --queues 4 -- --init=fill
}

@test "blkfsx: qcow2 extended L2 32k clusters, --queues 4, cache=none" {
    exercise qcow2 3002 extended_l2=on,cluster_size=32k --queues 4 --cache=none
}

@test "blkfsx: raw, --growable" {
    exercise raw 4001 "" --growable
}

@test "blkfsx: qcow2 lazy refcounts, --growable" {
    exercise qcow2 4002 lazy_refcounts=on --growable -- --init=fill
}

# --- images with shared clusters, a backing file, compressed clusters ---------------------

# $T/pattern.raw: $BLKFSX_SIZE (or 1M) of non-zero data.
make_pattern_image() {
    make_pattern "$T/pattern.raw" "${BLKFSX_SIZE:-1M}"
}

prepare_snapshot() {
    make_pattern_image
    qemu-img convert -O qcow2 "$T/pattern.raw" "$IMG"
    qemu-img snapshot -c before "$IMG"
}

# Writes copy the clusters the snapshot shares; shrinking is refused (EOPNOTSUPP), as in
# QEMU; the snapshot still holds the old contents afterwards.
@test "blkfsx: qcow2 with an internal snapshot (no shrinking)" {
    local size
    PREPARE=prepare_snapshot exercise qcow2 6001 "" -- --no-shrink
    size=$(stat -c %s "$T/pattern.raw")
    qemu-img convert -l before -O raw "$IMG" "$T/snapshot.raw"
    cmp -n "$size" "$T/snapshot.raw" "$T/pattern.raw"
}

prepare_overlay() {
    make_pattern_image
    qemu-img convert -O qcow2 "$T/pattern.raw" "$T/base.qcow2"
    qemu-img create -q -f qcow2 -b "$T/base.qcow2" -F qcow2 "$IMG"
}

# Reads of unallocated clusters go to the backing file; after a shrink and a grow they read
# zeros.  (st_blocks is not checked: the backing file's data is not stored in the overlay.)
@test "blkfsx: qcow2 overlay on a backing file" {
    PREPARE=prepare_overlay exercise qcow2 6002 "" -- --no-blocks-check
    qemu-img convert -O raw "$T/base.qcow2" "$T/base.raw"
    cmp "$T/base.raw" "$T/pattern.raw"
}

prepare_compressed() {
    make_pattern_image
    qemu-img convert -c -O qcow2 -o compression_type=zstd "$T/pattern.raw" "$IMG"
}

# Every cluster starts compressed: writes rewrite them by copy-on-write.  (st_blocks is not
# checked: compressed data takes less room than the bytes it holds.)
@test "blkfsx: qcow2 with zstd-compressed clusters" {
    PREPARE=prepare_compressed exercise qcow2 6003 "" -- --no-blocks-check
}

# --- I/O racing resizes and fallocate ---------------------------------------------------------

# Only batches of concurrent O_DIRECT requests, and shrinks, grows and fallocates racing
# them: once grown back after a shrink, the cut-off range must read as zeros.
@test "blkfsx: raw, --queues 4, resizes and fallocate racing O_DIRECT I/O" {
    exercise raw 5001 "" --queues 4 -- --kinds race,aio,dread --init=fill
}

@test "blkfsx: qcow2, --queues 4, resizes and fallocate racing O_DIRECT I/O" {
    exercise qcow2 5002 "" --queues 4 -- --kinds race,aio,dread --init=fill
}

# --- the tool itself -------------------------------------------------------------------------

@test "blkfsx --help, --version and bad options" {
    run -0 blkfsx --help
    [[ $output == "Usage: blkfsx "* ]]
    [[ $output == *race-truncate* ]]
    run -0 blkfsx --version
    [[ $output == "blkfsx "* ]]
    run -2 blkfsx
    [[ $output == *"no FILE"* ]]
    run -2 blkfsx --bogus "$T/x"
    run -2 blkfsx --kinds nosuchkind "$T/x"
    [[ $output == *"unknown operation kind 'nosuchkind'"* ]]
    run -2 blkfsx --format vmdk "$T/x"
    run -2 blkfsx --ops 0 "$T/x"
}

# A wrong rule (the export is not growable) must fail: exit 1, the failing operation,
# the log of replayable lines; replaying those lines on a fresh image fails the same way.
@test "blkfsx fails with a replayable log when the export breaks a rule" {
    make_image raw "" 1M
    blkfuse_mount -f raw "$IMG" "$MP"
    run -1 blkfsx --seed 7 --ops 500 --growable --kinds write,read "$MP"
    echo "$output"
    [[ $output == *"FAILED at operation "*" write "* ]]
    [[ $output == *"pwrite returned -ENOSPC, expected "* ]]
    grep -E '^  [0-9]+ (read|write) ' <<<"$output" | sed 's/^  //' >"$T/replay"
    [ -s "$T/replay" ]
    blkfuse unmount "$MP"

    make_image raw "" 1M
    blkfuse_mount -f raw "$IMG" "$MP"
    run -1 blkfsx --seed 7 --growable --replay "$T/replay" "$MP"
    echo "$output"
    [[ $output == *"pwrite returned -ENOSPC, expected "* ]]
}

# Data that differs from the model is reported with its offsets, expected and found bytes.
@test "blkfsx reports wrong data: offsets, expected and found bytes" {
    make_image raw "" 1M
    blkfuse_mount -f raw "$IMG" "$MP"
    # The raw image it is told to compare with is a stale copy: the first check fails.
    cp "$IMG" "$T/stale.raw"
    run -1 blkfsx --seed 9 --ops 50 --check-every 10 --kinds write --raw-image "$T/stale.raw" "$MP"
    echo "$output"
    [[ $output == *"raw image read of 0+1048576: "*" bytes differ between offsets "* ]]
    [[ $output == *"OFFSET        EXPECTED  GOT"* ]]
    [[ $output == *"(zero)"* ]]
}

# Replaying a run's whole log on a fresh image gives the same contents.  (A test of the
# tool: the kinds that meet known defects of the export are left out.)
@test "blkfsx --log-file and --replay repeat a run exactly" {
    make_image qcow2 "" 1M
    blkfuse_mount -f qcow2 "$IMG" "$MP"
    run -0 blkfsx --seed 11 --ops 400 --format qcow2 --exclude race-truncate,dwrite \
        --log-file "$T/ops.log" --dump "$T/first.raw" "$MP"
    blkfuse unmount "$MP"

    make_image qcow2 "" 1M
    blkfuse_mount -f qcow2 "$IMG" "$MP"
    run -0 blkfsx --seed 11 --format qcow2 --replay "$T/ops.log" --dump "$MODEL" "$MP"
    echo "$output"
    [[ $output == *": 400 operations in "* ]]
    blkfuse unmount "$MP"
    cmp "$T/first.raw" "$MODEL"
    verify_image qcow2
}
