#!/usr/bin/env bats
# system-service.bats - blkfuse.service (systemd/blkfuse.service.in): systemd-analyze verify
# finds nothing to say, its SystemCallFilter allows every system call of a daemon's life (traced
# with strace), the daemon tells systemd READY=1 and STOPPING=1 (Type=notify), and make install
# puts the unit, the mount helper, the completion and the man pages under DESTDIR.

load helpers

ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd -P)"

# The unit with ExecStart= pointing at the in-tree blkfuse, in $T.
make_unit() {
    sed "s|@bindir@|$(dirname "$(command -v blkfuse)")|g" "$ROOT/systemd/blkfuse.service.in" \
        >"$T/blkfuse.service"
}

@test "systemd-analyze verify accepts blkfuse.service without a warning" {
    require systemd-analyze
    make_unit
    run systemd-analyze verify --man=no "$T/blkfuse.service"
    echo "$output"
    [ "$status" -eq 0 ]
    [ -z "$output" ]
}

# syscall_group_names GROUP: every system call name in GROUP, nested groups expanded.
syscall_group_names() {
    local name
    systemd-analyze syscall-filter "$1" | tail -n +2 | sed 's/^ *//; /^#/d; /^$/d' |
        while read -r name; do
            if [[ $name == @* ]]; then
                syscall_group_names "$name"
            else
                echo "$name"
            fi
        done
}

@test "the unit's SystemCallFilter allows every system call of serve, mount, I/O, unmount, exit" {
    require systemd-analyze strace qemu-img
    require_fuse
    local filter group pid missing
    filter=$(sed -n 's/^SystemCallFilter=//p' "$ROOT/systemd/blkfuse.service.in")
    [ -n "$filter" ]
    for group in $filter; do
        syscall_group_names "$group"
    done | sort -u >"$T/allowed"
    [ -s "$T/allowed" ]

    qemu-img create -q -f qcow2 "$T/disk.qcow2" 16M
    make_pattern "$T/disk.raw" 1M
    # LeakSanitizer stops threads with ptrace, which strace holds: no leak check in here.
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
        strace -f -qq -o "$T/trace" blkfuse serve --foreground --socket "$T/serve.sock" \
        --log-file "$T/daemon.log" 3>&- &
    pid=$!
    PIDS+=("$pid")
    wait_until 30 test -S "$T/serve.sock"
    # write-behind=256k: the 1 MiB written below starts write-back (sync_file_range) too.
    blkfuse mount --daemon "$T/serve.sock" -o write-behind=256k "$T/disk.qcow2" "$T/q.img"
    MOUNTS+=("$T/q.img")
    dd if="$T/disk.raw" of="$T/q.img" bs=64k conv=notrunc,fsync status=none
    cmp -n 1048576 "$T/q.img" "$T/disk.raw"
    blkfuse mount --daemon "$T/serve.sock" -f raw --cache=none -o aio=threads "$T/disk.raw" \
        "$T/r.img"
    MOUNTS+=("$T/r.img")
    cmp "$T/r.img" "$T/disk.raw"
    blkfuse unmount "$T/q.img"
    umount "$T/r.img" 2>/dev/null || blkfuse unmount "$T/r.img"
    # The daemon is strace's child: SIGTERM to it, and strace exits with it.
    kill -TERM "$(pgrep -P "$pid")"
    wait "$pid" || true
    sed -nE 's/^[0-9]+ +([a-z0-9_]+)\(.*/\1/p' "$T/trace" | sort -u >"$T/used"
    [ "$(wc -l <"$T/used")" -gt 30 ]
    grep -qx sync_file_range "$T/used"
    # As root the daemon mounts itself (as a user, fusermount3 does, outside the trace's view).
    [[ $(id -u) -ne 0 ]] || grep -qx mount "$T/used"
    missing=$(comm -23 "$T/used" "$T/allowed")
    [ -z "$missing" ] || { echo "not allowed by SystemCallFilter=$filter:" $missing; false; }
}

@test "blkfuse serve --foreground tells \$NOTIFY_SOCKET READY=1, then STOPPING=1 at SIGTERM" {
    require python3
    run python3 - "$T" <<'EOF'
import os, signal, socket, subprocess, sys
t = sys.argv[1]
path = os.path.join(t, "notify.sock")
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(20)
env = dict(os.environ, NOTIFY_SOCKET=path)
p = subprocess.Popen(["blkfuse", "serve", "--foreground", "--socket", os.path.join(t, "s.sock"),
                      "--log-file", os.path.join(t, "daemon.log")], env=env)
msg = s.recv(4096).decode()
print("first:", msg, "socket there:", os.path.exists(os.path.join(t, "s.sock")))
p.send_signal(signal.SIGTERM)
print("second:", s.recv(4096).decode())
print("exit:", p.wait(20))
EOF
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == *"first: READY=1 socket there: True"* ]]
    [[ $output == *"second: STOPPING=1"* ]]
    [[ $output == *"exit: 0"* ]]
}

@test "make install DESTDIR=... installs the unit, the mount helper, the completion and the man pages" {
    require make
    [[ -f $ROOT/config.mk ]] || skip "needs a configured tree"
    run make -s -C "$ROOT" install DESTDIR="$T/dest" prefix=/usr \
        mounthelperdir=/sbin systemdunitdir=/lib/systemd/system \
        bashcompletiondir=/usr/share/bash-completion/completions
    echo "$output"
    [ "$status" -eq 0 ]
    (cd "$T/dest" && find . ! -type d | sort) | tee "$T/installed"
    [ -x "$T/dest/usr/bin/blkfuse" ]
    [ "$(readlink "$T/dest/sbin/mount.fuse.blkfuse")" = /usr/bin/blkfuse ]
    grep -qx 'ExecStart=/usr/bin/blkfuse serve --foreground --socket /run/blkfuse/blkfuse.sock' \
        "$T/dest/lib/systemd/system/blkfuse.service"
    [ -f "$T/dest/usr/share/man/man1/blkfuse.1" ]
    cmp "$T/dest/usr/share/bash-completion/completions/blkfuse" "$ROOT/completion/blkfuse.bash"
    run make -s -C "$ROOT" uninstall DESTDIR="$T/dest" prefix=/usr mounthelperdir=/sbin \
        systemdunitdir=/lib/systemd/system \
        bashcompletiondir=/usr/share/bash-completion/completions
    [ "$status" -eq 0 ]
    [ -z "$(cd "$T/dest" && find . ! -type d)" ]
}
