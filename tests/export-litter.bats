#!/usr/bin/env bats
# export-litter.bats - a refused mount leaves nothing behind: no mountpoint file it created, no
# socket, no log in the runtime directory (the error went to the caller); logs of daemons that
# did not exit cleanly are kept, the newest 8.

load helpers

setup() {
    export_setup 1M
    RUN=$XDG_RUNTIME_DIR/blkfuse
    # The refused mounts of the daemons started with --log-file say why in the log.
    EXPECTED_LOG_ERRORS='already|is a directory|No such file|unknown option|not a qcow2|invalid|too'
}

# Without --log-file a daemon logs to syslog, or to RUNTIME_DIR/PID.log without /dev/log:
# the case where it could leave a file behind.
require_no_syslog() {
    [[ -w /dev/log ]] && skip "the daemon logs to /dev/log here, not to RUNTIME_DIR/PID.log"
    return 0
}

# listing: the runtime directory and $T, but for the test's own files (the daemon log, the
# sanitizer logs of a sanitizer build).
listing() {
    (cd "$T" && find . \( -path ./daemon.log -o -name 'sanitizer.*' \) -prune -o -print | sort)
}

# refused ARGS...: blkfuse mount ARGS fails with status 1 and a message, and leaves the
# runtime directory and $T as they were.
refused() {
    local before after
    before=$(listing)
    run --separate-stderr blkfuse mount "$@"
    echo "blkfuse mount $*: status $status, stderr: $stderr"
    [ "$status" -eq 1 ]
    [ -n "$stderr" ]
    after=$(listing)
    if [[ $before != "$after" ]]; then
        diff <(echo "$before") <(echo "$after") || true
        false
    fi
}

@test "a refused mount leaves no mountpoint, socket or log (without --log-file)" {
    require_no_syslog
    mkdir -p "$RUN" "$T/dir"
    head -c 4096 /dev/urandom >"$T/garbage.qcow2"
    refused "$IMG" "$T/dir"                                 # a directory
    refused "$T/missing.img" "$MP"                          # no image
    refused -f qcow2 "$IMG" "$MP"                           # not a qcow2 image
    refused -f qcow2 "$T/garbage.qcow2" "$MP"
    refused -f raw -o bogus=1 "$IMG" "$MP"                  # an option no driver knows
    # A mountpoint already in use: the first export's socket and log stay, nothing else.
    blkfuse_mount "$IMG" "$MP"
    refused "$IMG" "$MP"
    blkfuse unmount "$MP"
    [ -z "$(ls -A "$RUN")" ]
    [ ! -e "$MP" ]
}

@test "a refused mount leaves nothing with --log-file but the log it was given" {
    mkdir "$T/dir"
    run blkfuse mount --log-file "$T/daemon.log" "$IMG" "$T/dir"
    [ "$status" -eq 1 ]
    [ -z "$(ls -A "$RUN" 2>/dev/null)" ]
    grep -q "is a directory" "$T/daemon.log"
}

@test "a mount refused by a serve daemon leaves no mountpoint" {
    blkfuse serve --socket "$T/serve.sock" --log-file "$T/daemon.log"
    mkdir "$T/dir"
    run blkfuse mount --daemon "$T/serve.sock" -f qcow2 "$IMG" "$MP"
    [ "$status" -eq 1 ]
    [ ! -e "$MP" ]
    run blkfuse mount --daemon "$T/serve.sock" "$IMG" "$T/dir"
    [ "$status" -eq 1 ]
    [ -d "$T/dir" ]
    pid=$(pgrep -f -- "serve --socket $T/serve.sock")
    kill -TERM "$pid"
    wait_for_pid_exit "$pid"
    [ ! -e "$T/serve.sock" ]
}

@test "logs of daemons that did not exit cleanly are kept, the newest 8" {
    require_no_syslog
    local pid_max i
    mkdir -p "$RUN"
    pid_max=$(cat /proc/sys/kernel/pid_max)
    # Twelve logs of dead daemons (pids no process can have), oldest first, and a file that
    # is not a daemon's log.
    for i in $(seq 1 12); do
        echo "crash $i" >"$RUN/$((pid_max + i)).log"
        touch -d "@$((1700000000 + i * 60))" "$RUN/$((pid_max + i)).log"
    done
    echo keep >"$RUN/notes.log"
    touch -d "@1600000000" "$RUN/notes.log"
    blkfuse mount "$IMG" "$MP" 3>&-
    MOUNTS+=("$MP")
    ls -l "$RUN"
    for i in $(seq 1 4); do
        [ ! -e "$RUN/$((pid_max + i)).log" ]
    done
    for i in $(seq 5 12); do
        [ -f "$RUN/$((pid_max + i)).log" ]
    done
    [ -f "$RUN/notes.log" ]
    blkfuse unmount "$MP"
    # The clean exit removed the daemon's own log; the kept ones stay.
    [ "$(ls "$RUN" | wc -l)" -eq 9 ]
}
