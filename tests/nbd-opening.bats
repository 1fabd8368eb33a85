#!/usr/bin/env bats
# nbd-opening.bats - the control socket while a mount is opening: an NBD server
# that accepts the connection and never answers keeps the open waiting (up to
# connect-timeout); meanwhile the daemon answers list, stats and unmount of its
# other exports, shows the pending export as "opening", refuses to unmount it
# (EBUSY), and runs a mount asked for meanwhile once the open is over.

load helpers
load nbd-helpers
load control-helpers

setup() {
    nbd_setup
    require python3
    require_nbdkit
    SOCK=$T/s.sock
}

@test "nbd-opening: while a mount waits for a silent server, list, stats and unmount of others answer" {
    start_nbdkit mem memory 4M
    start_serve
    blkfuse_mount --daemon="$SOCK" -f raw "$(nbd_unix_uri mem)" "$T/a.mnt"
    start_mute_server mute
    blkfuse mount --daemon="$SOCK" -f raw -o connect-timeout=60 \
        "nbd+unix:///?socket=$T/mute.sock&tls-psk-file=/secret" "$MP" \
        >"$T/mute-mount.out" 2>&1 3>&- &
    local mount_pid=$!
    PIDS+=("$mount_pid")
    wait_until 10 test -e "$T/mute.accepted"

    # The mount is pending, and the daemon answers at once.
    listed opening "$MP"
    listed mounted "$T/a.mnt"
    run -0 timeout 5 blkfuse list
    [[ $output == *"nbd+unix:///?socket=$T/mute.sock"*"$MP"*opening* ]]
    [[ $output != *secret* ]]
    run -0 timeout 5 blkfuse stats "$T/a.mnt"
    run timeout 5 blkfuse stats "$MP"
    ((status == 1))
    [[ $output == *"still opening"* ]]
    run timeout 5 blkfuse unmount "$MP"
    ((status == 1))
    [[ $output == *"$MP: still opening"* ]]
    # Another mount waits for the open to end; unmounting another export does not.
    blkfuse mount --daemon="$SOCK" -f raw "$(nbd_unix_uri mem)" "$T/b.mnt" \
        >"$T/b-mount.out" 2>&1 3>&- &
    local b_pid=$!
    PIDS+=("$b_pid")
    MOUNTS+=("$T/b.mnt")
    timeout 10 blkfuse unmount "$T/a.mnt"
    ! is_mounted "$T/a.mnt"
    _pid_alive "$mount_pid"
    listed opening "$MP"

    # The server goes away: the open fails, and the waiting mount runs.
    stop_server "$MUTE_PID"
    ! wait "$mount_pid"
    grep -q "NBD server unix:$T/mute.sock" "$T/mute-mount.out"
    wait "$b_pid"
    listed mounted "$T/b.mnt"
    ! listed opening "$MP"
    blkfuse unmount "$T/b.mnt"
    EXPECTED_LOG_ERRORS="NBD server"
}

@test "nbd-opening: a mount daemon's first export, opening, is listed and cannot be unmounted yet" {
    start_mute_server mute
    blkfuse mount --log-file "$T/daemon.log" -f raw -o connect-timeout=60 \
        "nbd+unix:///?socket=$T/mute.sock" "$MP" >"$T/mute-mount.out" 2>&1 3>&- &
    local mount_pid=$!
    PIDS+=("$mount_pid")
    wait_until 10 test -e "$T/mute.accepted"
    listed opening "$MP"
    run timeout 5 blkfuse unmount "$MP"
    ((status == 1))
    [[ $output == *"still opening"* ]]
    stop_server "$MUTE_PID"
    ! wait "$mount_pid"
    grep -q "NBD server unix:$T/mute.sock" "$T/mute-mount.out"
    run -0 timeout 5 blkfuse list --json
    [[ $output == "[]" ]]
    EXPECTED_LOG_ERRORS="NBD server"
}
