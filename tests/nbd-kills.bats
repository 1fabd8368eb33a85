#!/usr/bin/env bats
# nbd-kills.bats - the NBD server killed and restarted many times while fio
# writes, reads back and verifies through blkfuse: the daemon never aborts (a
# coroutine woken twice once made it die with "coroutine scheduled twice"), no
# request fails, and every write fio had acknowledged is on the server.
#
# The suite runs a few kills per case (connections of each queue, the shared
# connection, qemu-storage-daemon, TCP); BLKFUSE_SOAK=1 runs
# NBD_SOAK_KILLS (150) of them per case.

load helpers
load nbd-helpers

setup() {
    nbd_setup file
    require fio
}

# start_kill_server: the server of $T/served.img on $T/srv.sock: nbdkit's file plugin, with
# SERVER_FILTER (nbdkit filter options around it: "--filter=F PARAM=V"); with SERVER=qsd
# qemu-storage-daemon; with SERVER=tcp nbdkit on 127.0.0.1 (the same port each time).  URI is
# the image's.
start_kill_server() {
    if [[ ${SERVER:-nbdkit} == qsd ]]; then
        start_qsd srv "$T/served.img"
        URI=$(nbd_unix_uri srv disk)
    elif [[ ${SERVER:-nbdkit} == tcp ]]; then
        # Below the ephemeral range, where the kernel gives out ports (free_port's, and the
        # client sockets' own): nothing else takes it while the server is down.
        NBD_PORT=${NBD_PORT:-$(python3 -c '
import random, socket
for _ in range(100):
    p = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    print(p)
    break')}
        rm -f "$T/srv.pid"
        nbdkit -i 127.0.0.1 -p "$NBD_PORT" -P "$T/srv.pid" file "$T/served.img" 3>&- || return 1
        NBD_PID=$(_wait_pidfile "$T/srv.pid") || return 1
        PIDS+=("$NBD_PID")
        URI=nbd://127.0.0.1:$NBD_PORT/
    else
        local filter=(${SERVER_FILTER:-})
        start_nbdkit srv "${filter[@]:0:1}" file "$T/served.img" "${filter[@]:1}"
        URI=$(nbd_unix_uri srv)
    fi
}

# fio_runs MOUNTPOINT STOPFILE: fio runs one after another until STOPFILE exists, run r
# writing region r % REGIONS of the image, every 4 KiB block of it once in random order at
# depth 16, each block read back and checked soon after it was written (verify_backlog).  Run
# r's blocks hold r + 1 and their offset (so that a lost write, which leaves an earlier run's
# block, fails the check).  Each run is logged in $T/runs.log as "RUN STATUS"; a failed run
# ends the loop.
REGIONS=4
REGION_SIZE=$((4 << 20))
# fio_job RUN [verify]: fio's options for run RUN; with "verify", those that check the file.
fio_job() {
    local r=$1
    echo --name=v --rw=randwrite --bs=4k --iodepth=16 --ioengine=libaio --direct=1 \
        --verify=pattern --verify_pattern=0x$(printf %08x $((r + 1)))%o --verify_fatal=1 \
        --verify_state_save=0 --offset=$((r % REGIONS * REGION_SIZE)) --size=$REGION_SIZE
    [[ ${2:-} == verify ]] && echo --verify_only || echo --verify_backlog=64
}
fio_runs() {
    local r=0 status
    while ! [[ -e $2 ]]; do
        status=0
        fio $(fio_job $r) --filename="$1" --output="$T/fio.$r.out" || status=$?
        echo "$r $status" >>"$T/runs.log"
        ((status == 0)) || return 1
        r=$((r + 1))
    done
}

# kills_under_fio KILLS [BLKFUSE-OPTIONS]: the server is killed (SIGKILL) and restarted
# KILLS times while fio_runs write and read, each time once 256 writes went through since the
# last restart.  Then: no fio run failed, the daemon is alive and logged no abort, and each
# region of the server's own file holds what the last run that wrote it wrote (fio
# --verify_only): nothing acknowledged was lost.
kills_under_fio() {
    local kills=$1 done=0 next pid
    shift
    make_raw "$T/served.img" $((REGIONS * REGION_SIZE))
    start_kill_server
    blkfuse_mount_foreground -f raw -o reconnect-timeout=30 "$@" "$URI" "$MP"
    pid=$BLKFUSE_PID
    fio_runs "$MP" "$T/stop" 3>&- &
    local runs_pid=$!
    PIDS+=("$runs_pid")
    # The next kill: once NEXT writes are done (or fio_runs has ended).
    kill_point() { _writes_done "$MP" "$next" || ! _pid_alive "$runs_pid"; }
    next=256
    while ((done < kills)) && _pid_alive "$runs_pid" && _pid_alive "$pid"; do
        wait_until 30 kill_point || { _show_daemon_log; return 1; }
        _pid_alive "$runs_pid" || break
        stop_server "$NBD_PID"
        start_kill_server
        done=$((done + 1))
        _writes_done "$MP" 0
        next=$((_WRITES + 256))
    done
    touch "$T/stop"
    local runs_status=0
    wait "$runs_pid" || runs_status=$?
    echo "# $done kills, $(wc -l <"$T/runs.log") fio runs" >&3
    if ! _pid_alive "$pid" || grep -qE 'scheduled twice|ERROR|assertion' "$T/daemon.log"; then
        echo "the daemon died or logged an error after $done kills:" >&2
        _show_daemon_log
        return 1
    fi
    if ((runs_status != 0)); then
        local r
        r=$(tail -n 1 "$T/runs.log" | cut -d' ' -f1)
        echo "fio run $r failed:" >&2
        cat "$T/fio.$r.out" >&2
        return 1
    fi
    ((done == kills)) || { echo "only $done kills of $kills" >&2; return 1; }
    blkfuse unmount "$MP"
    wait_for_pid_exit "$pid" 10
    # Every write fio had acknowledged is in the server's file: each region as its last run
    # left it.
    local last=$(($(wc -l <"$T/runs.log") - 1)) r
    for ((r = last; r > last - REGIONS && r >= 0; r--)); do
        fio $(fio_job $r verify) --filename="$T/served.img" --output="$T/verify.out" || {
            echo "region $((r % REGIONS)) (run $r) on the server:" >&2
            cat "$T/verify.out" >&2
            return 1
        }
    done
}

soak_kills() {
    if [[ -n ${BLKFUSE_SOAK:-} ]]; then
        echo "${NBD_SOAK_KILLS:-150}"
    else
        echo "$1"
    fi
}

@test "nbd-kills: server killed and restarted under fio, connections of each queue (multi-conn)" {
    kills_under_fio "$(soak_kills 6)" --queues 2
    EXPECTED_LOG_ERRORS="NBD server"
}

@test "nbd-kills: the same on the main loop's shared connection (no multi-conn)" {
    SERVER_FILTER="--filter=multi-conn multi-conn-mode=disable" kills_under_fio "$(soak_kills 6)" --queues 2
    EXPECTED_LOG_ERRORS="NBD server"
}

@test "nbd-kills: qemu-storage-daemon killed and restarted under fio" {
    require_qsd
    SERVER=qsd kills_under_fio "$(soak_kills 4)"
    EXPECTED_LOG_ERRORS="NBD server"
}

@test "nbd-kills: nbdkit on 127.0.0.1 killed and restarted under fio" {
    SERVER=tcp kills_under_fio "$(soak_kills 4)" --queues 2
    EXPECTED_LOG_ERRORS="NBD server"
}
