#!/usr/bin/env bats
# control-clients.bats - clients of the control socket that misbehave cannot
# kill or wedge the daemon: one that disconnects while its mount is opening
# the image, one that sends requests and never reads the replies, and a
# hostile one sending a million random and mutated requests.  Each time the
# daemon's other exports keep working and `blkfuse list` answers within 1 s.

# run-tests: alone (list_within_1s times blkfuse list: a file beside it could slow it down)
load helpers
load control-helpers

setup() {
    control_setup
    STOPPED=()
}

teardown() {
    local pid
    for pid in ${STOPPED[@]+"${STOPPED[@]}"}; do
        kill -CONT "$pid" 2>/dev/null
    done
    blkfuse_teardown
}

# list_within_1s: `blkfuse list --json` answers within 1 s and shows every
# export id given as argument.
list_within_1s() {
    local start end out id
    start=$(_now_ms)
    out=$(timeout 10 blkfuse list --json) || { echo "blkfuse list failed" >&2; return 1; }
    end=$(_now_ms)
    echo "blkfuse list took $((end - start)) ms" >&2
    for id in "$@"; do
        [[ $out == *"\"id\": \"$id\""* ]] || { echo "list does not show $id: $out" >&2; return 1; }
    done
    ((end - start < 1000))
}

# no_exports: `blkfuse list --json` shows no export.
no_exports() {
    [[ $(blkfuse list --json) == "[]" ]]
}

@test "a client that disconnects while its mount opens the image leaves the daemon serving" {
    require qemu-img
    # A read of the image the client mounts must block for as long as the test
    # wants: X is a qcow2 export (daemon D1, --cache=none) whose backing file
    # is the export Y of daemon D2.  With D2 stopped, reading an unallocated
    # part of X waits for D2, while D1 still answers open and getattr.  Each
    # daemon has its own runtime directory, so `blkfuse list` does not ask the
    # stopped one.
    mkdir -m 700 "$T/run1" "$T/run2"
    make_pattern "$T/base.raw" 4M
    XDG_RUNTIME_DIR=$T/run2 blkfuse_mount "$T/base.raw" "$T/Y"
    qemu-img create -q -f qcow2 -b "$T/Y" -F raw "$T/top.qcow2"
    XDG_RUNTIME_DIR=$T/run1 blkfuse_mount --cache=none "$T/top.qcow2" "$T/X"
    local d2 d1sock
    d2=$(basename "$T"/run2/blkfuse/*.sock .sock)
    d1sock=$(echo "$T"/run1/blkfuse/*.sock)
    start_serve
    MOUNTS+=("$T/V")

    kill -STOP "$d2"
    STOPPED+=("$d2")
    # Client A asks for a mount of X (probing its format reads it) and hangs
    # up once the read is stuck in D1; client B then asks for a list, which
    # is answered in the middle of the open (showing V as opening), while A's
    # connection, closed, must stay alive under the mount until it is done.
    run python3 - "$SOCK" "$d1sock" "$d2" "$T/X" "$T/V" <<'EOF'
import json, os, signal, socket, sys, time
sock, d1sock, d2, x, v = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]

def call(path, req):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    s.sendall(json.dumps(req).encode() + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        assert chunk, "connection closed"
        buf += chunk
    return json.loads(buf)

a = socket.socket(socket.AF_UNIX)
a.connect(sock)
a.sendall(json.dumps({"cmd": "mount", "image": x, "mountpoint": v}).encode() + b"\n")
deadline = time.monotonic() + 20
while call(d1sock, {"cmd": "list"})["exports"][0]["stats"]["in_flight"] == 0:
    assert time.monotonic() < deadline, "the mount never read the image"
    time.sleep(0.02)
a.close()

reply = call(sock, {"cmd": "list"})
assert [(e["mountpoint"], e["state"]) for e in reply["exports"]] == [(v, "opening")], reply
os.kill(d2, signal.SIGCONT)
print("list during the open:", reply["exports"])
EOF
    echo "$output"
    [ "$status" -eq 0 ]
    STOPPED=()
    _pid_alive "$SERVE_PID"
    # The mount went ahead without its client, and works.
    wait_for_mount "$T/V"
    cmp "$T/V" "$T/base.raw"
    list_within_1s export0
    blkfuse unmount "$T/V"
}

@test "a client that never reads its replies wedges nothing: list, unmount and SIGTERM work" {
    make_pattern "$T/a.raw" 4M
    make_pattern "$T/b.raw" 4M
    start_serve
    blkfuse_mount --daemon "$SOCK" --id first "$T/a.raw" "$T/a.mnt"
    blkfuse_mount --daemon "$SOCK" --id second "$T/b.raw" "$T/b.mnt"

    # The hog sends 4000 list requests (their replies are far more than a
    # socket buffer holds) and waits until the first reply has arrived, so
    # the daemon is busy with its requests; then it never reads.
    python3 - "$SOCK" "$T/hog.ready" 3>&- <<'EOF' &
import select, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b'{"cmd": "list"}\n' * 4000)
select.select([s], [], [], 30)
open(sys.argv[2], "w").close()
time.sleep(600)
EOF
    PIDS+=($!)
    wait_until 20 test -e "$T/hog.ready"

    list_within_1s first second
    cmp "$T/a.mnt" "$T/a.raw"
    timeout 10 blkfuse unmount "$T/b.mnt"
    ! is_mounted "$T/b.mnt"
    list_within_1s first
    # An external unmount is noticed too.
    fusermount3 -u "$T/a.mnt"
    wait_for_unmount "$T/a.mnt"
    wait_until 10 no_exports
    kill -TERM "$SERVE_PID"
    wait_for_pid_exit "$SERVE_PID" 10
}

@test "a million random and mutated requests leave the daemon serving its other export" {
    need_tool hostile-client
    make_pattern "$T/victim.raw" 8M
    cp "$T/victim.raw" "$T/victim.ref"
    # Snapshot overlays the requests ask for go to $T.
    BLKFUSE_TMPDIR=$T start_serve
    blkfuse_mount --daemon "$SOCK" --id victim "$T/victim.raw" "$T/victim.mnt"

    # Every path in the requests lies under $T/nowhere, which does not exist:
    # no mutation can mount anything real.  No request is "quit", or names the
    # victim (then it might legitimately unmount it).
    local seed=${HOSTILE_SEED:-1}
    echo "hostile-client seed $seed (set HOSTILE_SEED to change it)"
    hostile-client --requests 1000000 --seed "$seed" --nowhere "$T/nowhere" \
        --protect victim --protect "$T/victim" --progress "$T/progress" "$SOCK" \
        >"$T/hostile.out" 2>&1 3>&- &
    local hostile=$!
    PIDS+=("$hostile")
    wait_until 30 test -e "$T/progress" || { cat "$T/hostile.out"; false; }
    # In the middle of the storm: list answers, and the export serves I/O.
    list_within_1s victim
    cmp -n 1048576 "$T/victim.mnt" "$T/victim.ref"

    wait "$hostile" || { cat "$T/hostile.out"; false; }
    cat "$T/hostile.out"
    grep -q "1000000 requests sent" "$T/hostile.out"
    _pid_alive "$SERVE_PID"
    list_within_1s victim
    # Nothing else got mounted.
    [[ $(blkfuse list --json | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))') == 1 ]]
    [[ ! -e $T/nowhere ]]

    # The export still works both ways, and the image is intact.
    head -c 65536 /dev/urandom >"$T/piece"
    dd if="$T/piece" of="$T/victim.mnt" bs=64k seek=5 conv=notrunc status=none
    dd if="$T/piece" of="$T/victim.ref" bs=64k seek=5 conv=notrunc status=none
    cmp "$T/victim.mnt" "$T/victim.ref"
    blkfuse unmount "$T/victim.mnt"
    cmp "$T/victim.raw" "$T/victim.ref"
}
