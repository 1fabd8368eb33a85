#!/usr/bin/env bats
# nbd-reconnect.bats - the NBD server goes away and comes back: requests in
# flight and new ones wait for the reconnection (-o reconnect-timeout), then
# carry on without an error and without losing an acknowledged write; past the
# timeout they fail with EIO, the daemon stays up and recovers by itself.

load helpers
load nbd-helpers

setup() {
    nbd_setup file
}

# daemon_log REGEX: wait (20 s) until the daemon log has a line matching REGEX; show the
# log when it never does.
daemon_log() {
    wait_for_log "$T/daemon.log" "$1" 20 || { sed 's/^/  | /' "$T/daemon.log" >&2; false; }
}

# bytes_written MOUNTPOINT: what the export has written so far.
bytes_written() {
    blkfuse stats --json "$1" | sed -n 's/^  "bytes_written": \([0-9]*\),*$/\1/p'
}

# _bytes_written_at_least MOUNTPOINT N: the export has written N bytes or more.
_bytes_written_at_least() {
    (($(bytes_written "$1") >= $2))
}

# kill_under_fio [FILTER PARAMETER]: fio writes and verifies through blkfuse while the
# server is killed and restarted; then what blkfuse shows must be what the server holds.
kill_under_fio() {
    make_raw "$T/served.img" 64M
    local server=(${1:-} file "$T/served.img" ${2:-})
    start_nbdkit srv "${server[@]}"
    blkfuse_mount -f raw -o reconnect-timeout=30 "$(nbd_unix_uri srv)" "$MP"
    # Random writes at depth 16, each block then read back and checked by fio.
    fio --name=v --filename="$MP" --rw=randwrite --bs=4k --size=32M --iodepth=16 \
        --ioengine=libaio --direct=1 --verify=crc32c --verify_fatal=1 --randrepeat=1 \
        --verify_state_save=0 --output="$T/fio.out" 3>&- &
    fio_pid=$!
    PIDS+=("$fio_pid")
    # Kill the server once writes flow, while fio still runs.
    wait_until 20 _bytes_written_at_least "$MP" $((1 << 20))
    stop_server "$NBD_PID"
    _pid_alive "$fio_pid"
    daemon_log "connection 0 to the NBD server unix:$T/srv.sock lost"
    start_nbdkit srv "${server[@]}"
    wait "$fio_pid"
    daemon_log "reconnected to the NBD server unix:$T/srv.sock"
    # What blkfuse shows is what the server holds.
    cp "$MP" "$T/seen.img"
    blkfuse unmount "$MP"
    cmp "$T/seen.img" "$T/served.img"
}

@test "nbd-reconnect: the server killed and restarted under fio: no error, nothing acknowledged lost" {
    require fio
    kill_under_fio
    EXPECTED_LOG_ERRORS="NBD server"
}

@test "nbd-reconnect: the same on the main loop's shared connection (a server without multi-conn)" {
    require fio
    kill_under_fio --filter=multi-conn multi-conn-mode=disable
    EXPECTED_LOG_ERRORS="NBD server"
}

@test "nbd-reconnect: a new request waits for the server to come back" {
    make_pattern "$T/served.img" 8M
    start_nbdkit srv file "$T/served.img"
    blkfuse_mount -f raw -o reconnect-timeout=30 "$(nbd_unix_uri srv)" "$MP"
    stop_server "$NBD_PID"
    # The reader starts while the server is gone: its reads notice, and wait.
    dd if="$MP" of="$T/read.img" bs=64k iflag=direct status=none 3>&- &
    dd_pid=$!
    daemon_log "lost: reconnecting"
    _pid_alive "$dd_pid"
    start_nbdkit srv file "$T/served.img"
    wait "$dd_pid"
    cmp "$T/read.img" "$T/served.img"
    blkfuse unmount "$MP"
}

@test "nbd-reconnect: past the timeout requests fail with EIO, the daemon stays up and recovers" {
    make_pattern "$T/served.img" 8M
    start_nbdkit srv file "$T/served.img"
    blkfuse_mount -f raw -o reconnect-timeout=1 "$(nbd_unix_uri srv)" "$MP"
    stop_server "$NBD_PID"
    run dd if="$MP" of=/dev/null bs=64k count=1 iflag=direct
    ((status != 0))
    [[ $output == *"Input/output error"* ]]
    daemon_log "requests fail with EIO until the server is back"
    # Still fails fast (no wait) while the server is gone; the daemon is up.
    run dd if="$MP" of=/dev/null bs=64k count=1 iflag=direct
    ((status != 0))
    run blkfuse list
    [[ $output == *"$MP"* ]]
    # The server returns: a request soon reconnects (at most one try a second).
    start_nbdkit srv file "$T/served.img"
    wait_until 10 dd if="$MP" of="$T/read.img" bs=64k iflag=direct status=none
    cmp "$T/read.img" "$T/served.img"
    blkfuse unmount "$MP"
    EXPECTED_LOG_ERRORS="NBD server"
}
