#!/usr/bin/env bats
# control-requests.bats - the daemon validates every field of every control
# request and refuses bad ones with an error naming the field, instead of
# acting on them (a "queues": -1 once made it allocate terabytes and abort).
# tests/unit/test-control.c covers the rules one by one; this runs a sample
# through a real daemon and checks it survives them and still mounts.

load helpers
load control-helpers

setup() {
    control_setup
    make_pattern "$T/disk.raw" 4M
}

# refused JSON FIELD: the daemon answers JSON with ok false, EINVAL and an
# error naming FIELD, and nothing is mounted.
refused() {
    ctl_expect "$1" ok=False errno=22 "error~\"$2\"" "field=$2" || return 1
    ! is_mounted "$T/m"
}

@test "invalid mount fields are refused with an error naming the field; the daemon lives on" {
    start_serve
    MOUNTS+=("$T/m")
    local reply base="\"cmd\": \"mount\", \"image\": \"$T/disk.raw\", \"mountpoint\": \"$T/m\""
    refused "{$base, \"queues\": -1}" queues
    refused "{$base, \"queues\": 0}" queues
    refused "{$base, \"queues\": 1000000}" queues
    # Past int64 the parser itself refuses the number, before any field is looked at.
    reply=$(ctl "{$base, \"queues\": 18446744073709551615}")
    [[ $(json_get ok <<<"$reply") == False && $(json_get errno <<<"$reply") == 22 ]]
    [[ $(json_get error <<<"$reply") == *"integers must fit in 64 bits"* ]]
    ! is_mounted "$T/m" || false
    refused "{$base, \"queues\": \"2\"}" queues
    refused "{$base, \"queues\": 1.5}" queues
    refused "{$base, \"read_only\": \"no\"}" read_only
    refused "{$base, \"cache\": \"turbo\"}" cache
    refused "{$base, \"format\": \"vdi\"}" format
    refused "{$base, \"id\": \"../x\"}" id
    refused "{$base, \"readonly\": true}" readonly
    refused "{$base, \"options\": \"a=1,=\"}" options
    refused "{\"cmd\": \"mount\", \"image\": \"disk.raw\", \"mountpoint\": \"$T/m\"}" image
    refused "{\"cmd\": \"mount\", \"image\": \"$T/disk.raw\", \"mountpoint\": \"m\"}" mountpoint
    refused "{\"cmd\": \"mount\", \"image\": \"$T/disk.raw\"}" mountpoint
    refused '{"cmd": "list", "all": true}' all
    refused '{"cmd": "unmount", "id": "x", "force": 1}' force
    refused '{"cmd": 7}' cmd
    _pid_alive "$SERVE_PID"

    # Valid, it mounts.
    ctl_ok "{$base, \"queues\": 2, \"read_only\": true, \"id\": \"good\"}"
    is_mounted "$T/m"
    cmp "$T/m" "$T/disk.raw"
    [[ $(blkfuse list --json | json_get 0 queues) == 2 ]]
    blkfuse unmount "$T/m"
}

@test "malformed and hostile JSON gets an error reply, and the connection goes on" {
    start_serve
    run python3 - "$SOCK" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
lines = [b"not json", b"[" * 10000, b'{"cmd": "list"' , b'{"cmd": "li\x00st"}',
         b'{"cmd": "list", "mountpoint": "/\xff"}', b"9" * 60000,
         b'{"cmd": "list", "cmd": "quit"}', b'{"cmd": "list"}']
s.sendall(b"\n".join(lines) + b"\n")
f = s.makefile("rb")
replies = [json.loads(f.readline()) for _ in lines]
for line, r in zip(lines, replies):
    print(line[:40], "->", r.get("error"))
assert all(r["ok"] is False for r in replies[:-1]), replies
assert replies[-1]["ok"] is True, replies[-1]
# A line longer than 64 KiB ends the connection after one error.
s.sendall(b'{"cmd": "list", "x": "' + b"a" * 70000 + b'"}\n')
r = json.loads(f.readline())
assert "longer than 64 KiB" in r["error"], r
try:
    rest = f.readline()
except ConnectionResetError:    # it hung up on the rest of the line: fine too
    rest = b""
assert rest == b"", "the connection stayed open"
EOF
    echo "$output"
    [ "$status" -eq 0 ]
    _pid_alive "$SERVE_PID"
    ctl_ok '{"cmd": "list"}'
}
