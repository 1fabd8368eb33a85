#!/usr/bin/env bats
# export-transport.bats - how requests reach the export: --transport=auto|uring|dev, what the
# daemon logs when auto cannot use FUSE-over-io_uring, what list and stats show, and the
# refusal of uring when the kernel does not offer it.
#
# Tests that need the kernel's FUSE-over-io_uring switch the fuse module's enable_uring
# parameter (root only) with uring_param; teardown puts the old value back.

load helpers
load control-helpers

setup() {
    export_setup 4M
}

@test "--transport takes auto, uring or dev only" {
    run --separate-stderr blkfuse mount --transport=fast "$IMG" "$MP"
    [ "$status" -eq 2 ]
    [[ $stderr == *"--transport must be auto, uring or dev, not 'fast'"* ]]
    [ ! -e "$MP" ]
}

@test "--transport=dev serves /dev/fuse; list and stats say so" {
    blkfuse_mount --transport=dev "$IMG" "$MP"
    cmp "$IMG" "$MP"
    [ "$(list_field "$MP" transport)" = dev ]
    run -0 --separate-stderr blkfuse list
    [[ ${lines[0]} == *TRANSPORT* ]]
    [[ $output == *"$MP"*" dev "* ]]
    run -0 --separate-stderr blkfuse stats "$MP"
    [[ ${lines[0]} == *"transport dev"* ]]
    run -0 --separate-stderr blkfuse stats --json "$MP"
    python3 -c 'import json, sys; assert json.loads(sys.argv[1])["transport"] == "dev"' "$output"
}

@test "--transport=uring fails and says why when the kernel's enable_uring is off" {
    uring_param N
    EXPECTED_LOG_ERRORS='enable_uring'
    run --separate-stderr blkfuse mount --log-file "$BLKFUSE_LOG" --transport=uring "$IMG" "$MP"
    [ "$status" -eq 1 ]
    [[ $stderr == *"--transport=uring"* ]]
    [[ $stderr == *"enable_uring is N"* ]]
    ! is_mounted "$MP"
    [ ! -e "$MP" ]
}

@test "auto falls back to /dev/fuse when enable_uring is off and logs it once" {
    uring_param N
    blkfuse_mount "$IMG" "$MP"
    cmp "$IMG" "$MP"
    [ "$(list_field "$MP" transport)" = dev ]
    [ "$(grep -c 'transport dev (/dev/fuse): FUSE-over-io_uring is off' "$BLKFUSE_LOG")" -eq 1 ]
}

@test "mount --daemon passes the transport to the serve daemon" {
    uring_param N
    EXPECTED_LOG_ERRORS='enable_uring'
    SOCK="$T/ctl.sock"
    start_serve
    run --separate-stderr blkfuse mount --daemon "$SOCK" --transport=uring "$IMG" "$MP"
    [ "$status" -eq 1 ]
    [[ $stderr == *"enable_uring is N"* ]]
    run -0 ctl '{"cmd": "mount", "image": "'"$IMG"'", "mountpoint": "'"$MP"'", "transport": "x"}'
    echo "$output"
    [[ $(json_get ok <<<"$output") == False && $output == *"must be auto, uring or dev"* ]]
    blkfuse_mount --daemon "$SOCK" --transport=dev "$IMG" "$MP"
    [ "$(list_field "$MP" transport)" = dev ]
    blkfuse unmount "$MP"
}

@test "a FUSE-over-io_uring queue that the kernel refuses fails the mount with the reason" {
    uring_param Y
    EXPECTED_LOG_ERRORS='did not start|refused the ring entries|queue [0-9]+: Invalid argument'
    local last=$(($(nproc) - 1)) q
    for q in 0 $last; do
        run --separate-stderr env BLKFUSE_URING_FAULT_QUEUE=$q \
            blkfuse mount --log-file "$BLKFUSE_LOG" --transport=uring "$IMG" "$MP"
        echo "$stderr"
        [ "$status" -eq 1 ]
        [[ $stderr == *"queue $q of $(nproc) did not start"* ]]
        [[ $stderr == *"the kernel refused the ring entries of queue $q"* ]]
        [[ $stderr == *"--transport=dev serves the export"* ]]
        ! is_mounted "$MP"
        [ ! -e "$MP" ]
    done
    # Nothing is left behind: the same mount without the fault works.
    blkfuse_mount --transport=uring "$IMG" "$MP"
    cmp "$IMG" "$MP"
    [ "$(list_field "$MP" transport)" = uring ]
    blkfuse unmount "$MP"
}
