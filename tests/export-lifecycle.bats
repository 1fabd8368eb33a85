#!/usr/bin/env bats
# export-lifecycle.bats - how an export starts and ends: mount returns once the
# file is live, bad mountpoints and images are refused, the mountpoint file is
# created and removed, busy unmounts, --force, external unmounts, signals, and
# `blkfuse list`.

load helpers

setup() {
    export_setup 8M
}

# The daemon log says it exited and holds no error (teardown checks errors
# too; this makes the expectation explicit where a test is about exiting).
log_says_clean_exit() {
    grep -q 'exiting' "$BLKFUSE_LOG"
    ! grep -E "$BLKFUSE_LOG_ERROR_RE" "$BLKFUSE_LOG"
}

# --- starting ---------------------------------------------------------------------

@test "mount returns only once the export is live" {
    local i
    for i in 1 2 3; do
        MOUNTS+=("$MP")
        blkfuse mount --log-file "$BLKFUSE_LOG" "$IMG" "$MP"
        # No waiting: the very next command must see the mount and its data.
        [ "$(findmnt -n -T "$MP" -o TARGET,FSTYPE)" = "$MP fuse.blkfuse" ]
        cmp "$MP" "$IMG"
        blkfuse unmount "$MP"
    done
}

@test "mount on a directory fails with exit 1 and says a regular file is needed" {
    EXPECTED_LOG_ERRORS='is a directory'
    mkdir "$T/dir"
    run --separate-stderr blkfuse mount --log-file "$BLKFUSE_LOG" "$IMG" "$T/dir"
    [ "$status" -eq 1 ]
    [[ $stderr == *"regular file"* ]]
    [[ $stderr == *"$T/dir"* ]]
    [ -d "$T/dir" ]
    ! is_mounted "$T/dir"
}

@test "mount of a missing image fails with exit 1, names it, and creates no mountpoint" {
    EXPECTED_LOG_ERRORS='no-such\.img'
    run --separate-stderr blkfuse mount --log-file "$BLKFUSE_LOG" "$T/no-such.img" "$MP"
    [ "$status" -eq 1 ]
    [[ $stderr == *no-such.img* ]]
    [ ! -e "$MP" ]
}

# --- the mountpoint file ------------------------------------------------------------

@test "a missing mountpoint file is created and removed again at unmount" {
    [ ! -e "$MP" ]
    blkfuse_mount "$IMG" "$MP"
    [ -f "$MP" ]
    blkfuse unmount "$MP"
    [ ! -e "$MP" ]
}

@test "a pre-existing mountpoint file is left in place, unchanged, after unmount" {
    echo "I was here first" >"$MP"
    blkfuse_mount "$IMG" "$MP"
    [ "$(stat -c %s "$MP")" -eq $((8 * 1048576)) ]
    blkfuse unmount "$MP"
    ! is_mounted "$MP"
    [ "$(cat "$MP")" = "I was here first" ]
}

@test "relative image and mountpoint names work and list shows them absolute" {
    cd "$T"
    blkfuse_mount disk.img disk.mnt
    cmp disk.mnt disk.img
    run -0 blkfuse list
    [[ $output == *"$IMG"* ]]
    [[ $output == *"$MP"* ]]
    blkfuse unmount disk.mnt
    [ ! -e disk.mnt ]
}

# --- busy unmounts and --force -------------------------------------------------------

@test "unmount is refused with 'in use' while a shell holds the file open" {
    blkfuse_mount "$IMG" "$MP"
    local fd
    # Not fd 3: bats writes its results there.
    exec {fd}<"$MP"
    run --separate-stderr blkfuse unmount "$MP"
    [ "$status" -eq 1 ]
    [[ $stderr == *"in use"* ]]
    is_mounted "$MP"
    # The holder is not disturbed.
    [ "$(head -c 21 <&"$fd")" = "blkfuse pattern @0   " ]
    exec {fd}<&-
    blkfuse unmount "$MP"
    ! is_mounted "$MP"
}

@test "unmount is refused with 'in use' while another process holds the file open" {
    blkfuse_mount "$IMG" "$MP"
    sleep 60 <"$MP" 3>&- &
    PIDS+=($!)
    wait_for_open "${PIDS[-1]}"
    run --separate-stderr blkfuse unmount "$MP"
    [ "$status" -eq 1 ]
    [[ $stderr == *"in use"* ]]
    is_mounted "$MP"
    kill "${PIDS[-1]}"
    wait "${PIDS[-1]}" || true
    blkfuse unmount "$MP"
    ! is_mounted "$MP"
}

@test "unmount --force ends a busy export and the holder's next read fails" {
    local pid
    blkfuse_mount "$IMG" "$MP"
    pid=$(daemon_pid "$MP")
    local fd
    # Not fd 3: bats writes its results there.
    exec {fd}<"$MP"
    blkfuse unmount --force "$MP"
    ! is_mounted "$MP"
    wait_for_pid_exit "$pid" 0
    run head -c 10 <&"$fd"
    [ "$status" -ne 0 ]
    exec {fd}<&-
    cmp "$IMG" <(make_pattern /dev/stdout 8M)
}

# Wait until process $1 holds $MP open on its stdin: its open has been answered (and counted)
# by the daemon, so an unmount started now finds the file open.
wait_for_open() {
    wait_until 10 holds_mp "$1"
}

# holds_mp PID: process PID has $MP open on its stdin.
holds_mp() {
    [ "$(readlink "/proc/$1/fd/0" 2>/dev/null)" = "$MP" ]
}

# start_waiting_unmount: mount $IMG with an unmount grace period far longer than any test (an
# unmount that waits must end by the close or by --force, not by the grace period), hold $MP
# open in process $holder, and start `blkfuse unmount` in process $upid (output in
# $T/unmount.out); return once the daemon logs that the unmount waits for the open file.
# Sets the callers' locals holder and upid.
start_waiting_unmount() {
    BLKFUSE_UNMOUNT_GRACE_MS=120000 blkfuse_mount "$IMG" "$MP"
    sleep 600 <"$MP" 3>&- &
    holder=$!
    PIDS+=("$holder")
    wait_for_open "$holder"
    blkfuse unmount "$MP" >"$T/unmount.out" 2>&1 3>&- &
    upid=$!
    PIDS+=("$upid")
    wait_for_log "$BLKFUSE_LOG" 'is open \(1 file\); waiting up to 120000 ms'
}

# An unmount of an open file waits for it to close with the main loop running: the daemon
# answers `list` meanwhile, and the unmount ends as soon as the file is closed.
@test "while an unmount waits for the file to close, list answers; closing it ends the unmount" {
    local holder upid
    start_waiting_unmount
    run -0 timeout 10 blkfuse list
    [[ $output == *"$MP"* ]]
    # The unmount was still waiting while list answered.
    _pid_alive "$upid"
    is_mounted "$MP"
    kill "$holder"
    wait "$holder" || true
    wait "$upid" || { cat "$T/unmount.out"; false; }
    ! is_mounted "$MP"
    grep -q 'removed (removed)' "$BLKFUSE_LOG"
}

@test "an unmount of a file that stays open gives up with 'in use' after the grace period" {
    local fd
    BLKFUSE_UNMOUNT_GRACE_MS=200 blkfuse_mount "$IMG" "$MP"
    exec {fd}<"$MP"
    run --separate-stderr blkfuse unmount "$MP"
    [ "$status" -eq 1 ]
    [[ $stderr == *"in use (1 open file"* ]]
    grep -q 'not removed: .*in use' "$BLKFUSE_LOG"
    # The export goes on working, and a later unmount succeeds.
    is_mounted "$MP"
    [ "$(head -c 21 <&"$fd")" = "blkfuse pattern @0   " ]
    exec {fd}<&-
    blkfuse unmount "$MP"
    ! is_mounted "$MP"
}

@test "unmount --force ends an unmount that waits for the file to close" {
    local holder upid
    start_waiting_unmount
    blkfuse unmount --force "$MP"
    ! is_mounted "$MP"
    # The waiting unmount ends too, successfully: the export is gone.
    wait "$upid" || { cat "$T/unmount.out"; false; }
    grep -q 'removed (forced)' "$BLKFUSE_LOG"
}

# --- ending from outside -------------------------------------------------------------

@test "fusermount3 -u ends the daemon" {
    local pid
    blkfuse_mount "$IMG" "$MP"
    pid=$(daemon_pid "$MP")
    [ -n "$pid" ]
    fusermount3 -u "$MP"
    wait_for_pid_exit "$pid"
    ! is_mounted "$MP"
    log_says_clean_exit
}

@test "umount ends the daemon" {
    local pid
    require_root
    blkfuse_mount "$IMG" "$MP"
    pid=$(daemon_pid "$MP")
    [ -n "$pid" ]
    umount "$MP"
    wait_for_pid_exit "$pid"
    ! is_mounted "$MP"
    log_says_clean_exit
}

# check_signal_ends_daemon SIGNAL: write through the export, send SIGNAL to
# its daemon, and expect a clean exit with the data in the image.
check_signal_ends_daemon() {
    local sig=$1 pid
    cp "$IMG" "$T/ref.img"
    blkfuse_mount "$IMG" "$MP"
    pid=$(daemon_pid "$MP")
    [ -n "$pid" ]
    head -c 123457 /dev/urandom >"$T/piece"
    dd if="$T/piece" of="$MP" bs=123457 oflag=seek_bytes seek=4097 conv=notrunc status=none
    dd if="$T/piece" of="$T/ref.img" bs=123457 oflag=seek_bytes seek=4097 conv=notrunc status=none
    kill -s "$sig" "$pid"
    wait_for_pid_exit "$pid"
    wait_for_unmount "$MP"
    [ ! -e "$MP" ]
    cmp "$IMG" "$T/ref.img"
    log_says_clean_exit
}

@test "SIGTERM ends the daemon cleanly: unmounted, image intact, no error logged" {
    check_signal_ends_daemon TERM
}

@test "SIGINT ends the daemon cleanly: unmounted, image intact, no error logged" {
    check_signal_ends_daemon INT
}

@test "unmount returns only after the daemon has exited" {
    local pid
    blkfuse_mount "$IMG" "$MP"
    pid=$(daemon_pid "$MP")
    [ -n "$pid" ]
    blkfuse unmount "$MP"
    # No waiting: the daemon must be gone (a zombie counts as gone).
    wait_for_pid_exit "$pid" 0
    ! is_mounted "$MP"
    log_says_clean_exit
}

# --- listing ------------------------------------------------------------------------

@test "blkfuse list shows the export" {
    blkfuse_mount "$IMG" "$MP"
    run -0 --separate-stderr blkfuse list
    [[ $output == *"$MP"* ]]
    [[ $output == *"$IMG"* ]]
}

@test "blkfuse list --json parses and names the mountpoint, image and daemon pid" {
    blkfuse_mount -r "$IMG" "$MP"
    run -0 --separate-stderr blkfuse list --json
    python3 -c '
import json, sys
exports = json.loads(sys.argv[1])
mine = [e for e in exports if e["mountpoint"] == sys.argv[2]]
assert len(mine) == 1, exports
e = mine[0]
assert e["image"] == sys.argv[3], e
assert e["pid"] == int(sys.argv[4]), (e["pid"], sys.argv[4])
assert e["read_only"] is True, e
assert e["size"] == 8 * 1048576, e
' "$output" "$MP" "$IMG" "$(daemon_pid "$MP")"
}

@test "blkfuse list with no exports prints no export" {
    run -0 --separate-stderr blkfuse list --json
    python3 -c 'import json, sys; assert json.loads(sys.argv[1]) == [], sys.argv[1]' "$output"
}
