# control-helpers.bash - talking to a `blkfuse serve` daemon's control socket
# directly, for the tests of the control protocol (load it after helpers).
#
#   control_setup             the set-up of a control test: blkfuse_setup,
#                             require_fuse and python3, SOCK=$T/s.sock
#   start_serve [OPTION...]   start `blkfuse serve --socket $SOCK`, logging to
#                             $T/daemon.log; sets SERVE_PID (recorded in PIDS)
#   ctl JSON [SOCKET]         send one request line, print the reply line
#   ctl_ok JSON [SOCKET]      the same, failing unless the reply says "ok": true
#   ctl_expect JSON CHECK...  send JSON to $SOCK and check the reply: KEY=VALUE
#                             (member KEY prints as VALUE, as json_get prints it)
#                             or KEY~TEXT (it contains TEXT); one python3 for all
#   json_get KEY...           print a member of the JSON on stdin (a path of
#                             keys and array indexes)

# control_setup: the set-up of a test that talks to a serve daemon: blkfuse_setup,
# require_fuse, require python3 (ctl and json_get need it), and SOCK=$T/s.sock.
control_setup() {
    blkfuse_setup
    require_fuse
    require python3
    SOCK=$T/s.sock
}

# ctl JSON [SOCKET]: send JSON (one request) and print the reply line.  Fails
# if the daemon closes the connection or does not answer within 10 s.
ctl() {
    python3 -c "$_CTL_PY" "${2:-$SOCK}" "$1"
}

# ctl_expect JSON CHECK...: send JSON to $SOCK, print the request and its reply
# on stderr, and fail unless every CHECK holds: KEY=VALUE, the member KEY of the
# reply prints as VALUE (as json_get prints it: True, False, 22); KEY~TEXT, it
# contains TEXT.  The same as ctl and a json_get per check, in one python3
# (its start-up is what takes the time).
ctl_expect() {
    python3 -c "$_CTL_PY" "$SOCK" "$@"
}

# The python3 program of ctl and ctl_expect: SOCKET JSON [CHECK...].
_CTL_PY='
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
buf = b""
while not buf.endswith(b"\n"):
    chunk = s.recv(65536)
    if not chunk:
        sys.exit("ctl: the daemon closed the connection without a full reply: %r" % buf)
    buf += chunk
if len(sys.argv) == 3:
    sys.stdout.write(buf.decode())
    sys.exit(0)
sys.stderr.write("%s -> %s" % (sys.argv[2], buf.decode()))
reply = json.loads(buf)
for check in sys.argv[3:]:
    op = "=" if "=" in check.split("~")[0] else "~"
    key, want = check.split(op, 1)
    got = str(reply[key]) if key in reply else None
    if got is None or (got != want if op == "=" else want not in got):
        sys.exit("ctl_expect: %s fails: %s is %r" % (check, key, got))
'

# ctl_ok JSON [SOCKET]: like ctl, but the reply must be {"ok": true, ...}.
ctl_ok() {
    local reply
    reply=$(ctl "$@") || return 1
    if [[ $(json_get ok <<<"$reply") != True ]]; then
        echo "ctl_ok: $1 -> $reply" >&2
        return 1
    fi
    printf '%s\n' "$reply"
}

# json_get KEY...: print the member KEY (then KEY of that, ...) of the JSON
# value on stdin; integers index arrays.
json_get() {
    python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1:]:
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v)' "$@"
}

# start_serve [OPTION...]: start `blkfuse serve --socket $SOCK` with the log in
# $T/daemon.log and wait for its socket; SERVE_PID is the daemon's pid.
start_serve() {
    blkfuse serve --socket "$SOCK" --log-file "$T/daemon.log" "$@" 3>&- || return 1
    wait_until 10 test -S "$SOCK" || return 1
    SERVE_PID=$(ctl '{"cmd": "list"}' | json_get pid) || return 1
    PIDS+=("$SERVE_PID")
}
