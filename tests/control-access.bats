#!/usr/bin/env bats
# control-access.bats - who the control socket serves: the daemon's own user
# and root, and other users only when `blkfuse serve --allow-user` names them
# (SO_PEERCRED, whatever the socket file's mode lets through).

load helpers
load control-helpers

# The user that is not the daemon's.
OTHER_UID=65534
PY3=/usr/bin/python3

setup() {
    blkfuse_setup
    require_fuse
    require_root
    require setpriv
    [[ -x $PY3 ]] || skip "needs $PY3 (reachable by uid $OTHER_UID)"
    as_other true 2>/dev/null || skip "cannot run as uid $OTHER_UID"
    SOCK=$T/s.sock
    # Let the other user reach the socket, so only the daemon can refuse.
    chmod 0755 "$T"
    make_pattern "$T/disk.raw" 4M
}

as_other() {
    setpriv --reuid="$OTHER_UID" --regid="$OTHER_UID" --clear-groups "$@"
}

# ctl_as_other JSON: ctl, as the other user; prints the reply line, or
# "closed" if the daemon hung up without one.
ctl_as_other() {
    as_other "$PY3" - "$SOCK" "$1" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
try:
    s.sendall(sys.argv[2].encode() + b"\n")
except (BrokenPipeError, ConnectionResetError):
    pass                        # refused already: its error line may still be there
buf = b""
while not buf.endswith(b"\n"):
    try:
        chunk = s.recv(65536)
    except ConnectionResetError:
        chunk = b""
    if not chunk:
        print("closed")
        sys.exit(0)
    buf += chunk
sys.stdout.write(buf.decode())
EOF
}

@test "a client of another uid is refused, even when the socket's mode lets it connect" {
    start_serve
    [[ $(stat -c %a "$SOCK") == 600 ]]
    chmod 0666 "$SOCK"
    run ctl_as_other '{"cmd": "list"}'
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == closed || $output == *'"ok":false'*"permission denied"* ]]
    run ctl_as_other "{\"cmd\": \"mount\", \"image\": \"$T/disk.raw\", \"mountpoint\": \"$T/m\"}"
    echo "$output"
    [[ $output != *'"ok":true'* ]]
    ! is_mounted "$T/m"
    run ctl_as_other '{"cmd": "quit"}'
    _pid_alive "$SERVE_PID"
    grep -q "refused a client of uid $OTHER_UID" "$T/daemon.log"
    # Root and the daemon's own user still are served.
    ctl_ok '{"cmd": "list"}'
}

@test "serve --allow-user serves that user, and makes the socket reachable for it" {
    start_serve --allow-user "nobody"
    [[ $(stat -c %a "$SOCK") == 666 ]]
    run ctl_as_other '{"cmd": "list"}'
    echo "$output"
    [[ $output == *'"ok":true'* ]]
    # It can do what the daemon can: here, mount an image the daemon reads.
    MOUNTS+=("$T/m")
    run as_other blkfuse mount --daemon "$SOCK" -r "$T/disk.raw" "$T/m"
    echo "$output"
    [ "$status" -eq 0 ]
    is_mounted "$T/m"
    cmp "$T/m" "$T/disk.raw"
    blkfuse unmount "$T/m"
}

@test "serve --allow-user takes uids, and refuses users that are not listed" {
    start_serve --allow-user "1,$OTHER_UID"
    run ctl_as_other '{"cmd": "list"}'
    [[ $output == *'"ok":true'* ]]
    run setpriv --reuid=1 --regid=1 --clear-groups "$PY3" -c 'print(1)'
    if [[ $status -eq 0 ]]; then
        # uid 2 is not in the list.
        run setpriv --reuid=2 --regid=2 --clear-groups "$PY3" - "$SOCK" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"cmd": "list"}\n')
    print(s.recv(65536).decode() or "closed")
except (BrokenPipeError, ConnectionResetError):
    print("closed")
EOF
        echo "$output"
        [[ $output != *'"ok":true'* ]]
    fi
}

@test "serve --allow-user: bad users and a missing --socket are usage errors" {
    run blkfuse serve --allow-user no-such-user-xyz --socket "$SOCK"
    [ "$status" -eq 2 ]
    [[ $output == *"unknown user 'no-such-user-xyz'"* ]]
    run blkfuse serve --allow-user nobody
    [ "$status" -eq 2 ]
    [[ $output == *"--allow-user needs --socket"* ]]
    [[ ! -e $SOCK ]]
}
