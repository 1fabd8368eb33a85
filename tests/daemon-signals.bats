#!/usr/bin/env bats
# daemon-signals.bats - signals to a daemon: SIGTERM and SIGINT during writes
# end it cleanly (acknowledged writes kept, a qcow2 left consistent), SIGHUP
# reopens the log file; --foreground keeps it on the terminal, and without
# --log-file a daemonized mount never writes to the terminal.

load helpers

setup() {
    blkfuse_setup
    require_fuse
    MP=$T/disk.mnt
}

# start_writer FILE: write 64 KiB chunks into FILE in the background, chunk i
# at offset i * 64 KiB filled with byte (i % 255) + 1, through one O_DIRECT
# file descriptor (so nothing ever lands in whatever file is left at the path
# once the mount is gone), about 2 ms apart, until a write fails or 1024 chunks
# are written.  Every chunk whose write was acknowledged is appended to
# $T/acked; WRITER is the writer's pid.
start_writer() {
    : >"$T/acked"
    python3 - "$1" "$T/acked" <<'EOF' &
import mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 65536)  # page-aligned, as O_DIRECT wants
with open(sys.argv[2], "a", buffering=1) as acked:
    for i in range(1024):
        buf[:] = bytes([i % 255 + 1]) * 65536
        try:
            os.pwrite(fd, buf, i * 65536)
        except OSError:
            break
        print(i, file=acked)
        time.sleep(0.002)
EOF
    WRITER=$!
    PIDS+=("$WRITER")
}

# acked_reads FORMAT IMAGE: every acknowledged chunk reads back from IMAGE
# (checked by qemu-io, independently of blkfuse).
acked_reads() {
    local -a cmds=()
    local i
    while read -r i; do
        cmds+=(-c "read -P $((i % 255 + 1)) $((i * 65536)) 64k")
    done <"$T/acked"
    echo "$((${#cmds[@]} / 2)) chunks acknowledged in all"
    ((${#cmds[@]})) || return 0
    run qemu-io -r -f "$1" "${cmds[@]}" "$2"
    if ((status != 0)) || [[ $output == *"verification failed"* || $output == *rror* ]]; then
        echo "qemu-io exited with $status:"
        grep -v '^read [0-9]*/\|ops/sec' <<<"$output" | head -20
        return 1
    fi
}

# signal_during_writes SIGNAL FORMAT: send SIGNAL to the daemon of a FORMAT
# export while the writer runs; the daemon must flush, unmount and exit.
signal_during_writes() {
    local sig=$1 fmt=$2 img=$T/disk.$2 pid n
    require qemu-img qemu-io
    qemu-img create -q -f "$fmt" "$img" 64M
    blkfuse_mount -f "$fmt" "$img" "$MP"
    pid=$(daemon_pid "$MP")
    [ -n "$pid" ]
    start_writer "$MP"
    # Signal only once the writer has had writes acknowledged, or the test
    # proves nothing about them.
    wait_for_writes "$MP" 8
    n=$(wc -l <"$T/acked")
    echo "$n chunks acknowledged when SIG$sig was sent"
    # The workload must still be running, or this tests nothing.
    _pid_alive "$WRITER"
    [ "$n" -gt 0 ]
    [ "$n" -lt 1024 ]
    kill "-$sig" "$pid"
    wait_for_pid_exit "$pid"
    wait_for_unmount "$MP"
    wait "$WRITER" || true
    [ ! -e "$MP" ]
    cat "$T/daemon.log"
    grep -q "exiting" "$T/daemon.log"
    run ! grep -E "$BLKFUSE_LOG_ERROR_RE" "$T/daemon.log"
    if [[ $fmt == qcow2 ]]; then
        run qemu-img check "$img"
        echo "$output"
        [ "$status" -eq 0 ]
        [[ $output == *"No errors were found on the image."* ]]
        [[ $output != *leak* ]]
    fi
    acked_reads "$fmt" "$img"
}

@test "qcow2: SIGTERM during writes ends the daemon cleanly, image consistent" {
    signal_during_writes TERM qcow2
}

@test "raw: SIGINT during writes ends the daemon cleanly, writes kept" {
    signal_during_writes INT raw
}

@test "--foreground daemon exits with status 0 after SIGTERM" {
    make_pattern "$T/disk.img" 1M
    MOUNTS+=("$MP")
    blkfuse mount --foreground "$T/disk.img" "$MP" 2>"$T/fg.err" &
    local pid=$!
    PIDS+=("$pid")
    wait_for_mount "$MP"
    kill -TERM "$pid"
    local status=0
    wait "$pid" || status=$?
    [ "$status" -eq 0 ]
    run ! is_mounted "$MP"
    grep -q exiting "$T/fg.err"
}

@test "SIGHUP reopens the log file of a mount daemon" {
    local pid
    make_pattern "$T/disk.img" 1M
    blkfuse_mount "$T/disk.img" "$MP"
    pid=$(daemon_pid "$MP")
    mv "$T/daemon.log" "$T/daemon.log.1"
    kill -HUP "$pid"
    wait_for_log "$T/daemon.log" "log reopened"
    _pid_alive "$pid"
    is_mounted "$MP"
    blkfuse unmount "$MP"
    wait_for_pid_exit "$pid"
    cat "$T/daemon.log"
    [ -f "$T/daemon.log" ]
    grep -q "removed" "$T/daemon.log"
    grep -q "exiting" "$T/daemon.log"
    run ! grep -q "exiting" "$T/daemon.log.1"
    grep -q "export export0" "$T/daemon.log.1"
}

@test "SIGHUP reopens the log file of a serve daemon" {
    local sock=$T/s.sock pid
    make_pattern "$T/a.img" 1M
    make_pattern "$T/b.img" 1M
    blkfuse serve --socket "$sock" --log-file "$T/daemon.log"
    wait_until 5 test -S "$sock"
    pid=$(pgrep -o -f -- "serve --socket $sock")
    [ -n "$pid" ]
    PIDS+=("$pid")
    blkfuse_mount --daemon "$sock" --id first "$T/a.img" "$T/a.mnt"
    mv "$T/daemon.log" "$T/daemon.log.1"
    kill -HUP "$pid"
    wait_for_log "$T/daemon.log" "log reopened"
    blkfuse_mount --daemon "$sock" --id second "$T/b.img" "$T/b.mnt"
    cat "$T/daemon.log"
    grep -q "export second" "$T/daemon.log"
    run ! grep -q "export second" "$T/daemon.log.1"
    grep -q "export first" "$T/daemon.log.1"
    # Still one working daemon.
    cmp "$T/a.mnt" "$T/a.img"
    cmp "$T/b.mnt" "$T/b.img"
    kill -TERM "$pid"
    wait_for_pid_exit "$pid"
    grep -q "exiting" "$T/daemon.log"
}

@test "--foreground keeps the daemon on the terminal, logging to stderr" {
    make_pattern "$T/disk.img" 1M
    MOUNTS+=("$MP")
    blkfuse mount --foreground "$T/disk.img" "$MP" 2>"$T/fg.err" &
    local pid=$! status=0
    PIDS+=("$pid")
    wait_for_mount "$MP"
    # It is the daemon itself: still our child, serving the mount.
    _pid_alive "$pid"
    [ "$(daemon_pid "$MP")" = "$pid" ]
    cmp "$MP" "$T/disk.img"
    blkfuse unmount "$MP"
    wait "$pid" || status=$?
    [ "$status" -eq 0 ]
    cat "$T/fg.err"
    grep -q "INFO: export export0: $T/disk.img" "$T/fg.err"
    grep -q "exiting" "$T/fg.err"
}

@test "a daemonized mount without --log-file writes nothing to the terminal" {
    make_pattern "$T/disk.img" 1M
    MOUNTS+=("$MP")
    blkfuse mount "$T/disk.img" "$MP" >"$T/term.out" 2>&1
    is_mounted "$MP"
    local pid
    pid=$(daemon_pid "$MP")
    # Give the daemon the chance to misuse an inherited stdout/stderr.
    cat "$MP" >/dev/null
    blkfuse unmount "$MP" >>"$T/term.out" 2>&1
    wait_for_pid_exit "$pid"
    cat "$T/term.out"
    [ ! -s "$T/term.out" ]
}

@test "without syslog, a daemonized mount logs to RUNTIME_DIR/PID.log, removed at a clean exit" {
    [[ -S /dev/log ]] && skip "this machine has syslog (/dev/log)"
    local pid log
    make_pattern "$T/disk.img" 1M
    MOUNTS+=("$MP")
    blkfuse mount "$T/disk.img" "$MP" 3>&-
    pid=$(blkfuse list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["pid"])')
    log="$XDG_RUNTIME_DIR/blkfuse/$pid.log"
    [ -f "$log" ]
    grep -q "export export0: .*disk.img" "$log"
    blkfuse unmount "$MP"
    [ ! -e "$log" ]
}

# journal_names MOUNTPOINT: the system journal of the last minute has a blkfuse line naming
# MOUNTPOINT.
journal_names() {
    journalctl -q --since "-1min" | grep -q "blkfuse.*$1"
}

@test "a daemonized mount without --log-file logs to syslog" {
    [[ -S /dev/log ]] || skip "needs syslog (/dev/log)"
    local log
    for log in /var/log/syslog /var/log/messages ""; do
        [[ -r $log ]] && break
    done
    if [[ -z $log ]]; then
        command -v journalctl >/dev/null 2>&1 || skip "cannot read the syslog"
    fi
    make_pattern "$T/disk.img" 1M
    MOUNTS+=("$MP")
    blkfuse mount "$T/disk.img" "$MP"
    blkfuse unmount "$MP"
    if [[ -n $log ]]; then
        wait_for_log "$log" "blkfuse.*$MP"
    else
        wait_until 10 journal_names "$MP"
    fi
}
