#!/usr/bin/env bats
# daemon-serve.bats - one `blkfuse serve` daemon with two exports added by
# `mount --daemon`: list --json and stats --json, per-export counters, exports
# removed independently (fusermount3 -u, blkfuse unmount), and SIGTERM.

load helpers
load control-helpers

setup() {
    control_setup
    require qemu-img
    RAW=$T/disk.raw
    QCOW=$T/disk.qcow2
    MP1=$T/raw.mnt
    MP2=$T/qcow2.mnt
    make_pattern "$RAW" 4M
    make_pattern "$T/q.ref" 2M
    qemu-img convert -f raw -O qcow2 "$T/q.ref" "$QCOW"
}

# start_serve_here: start_serve (control-helpers.bash), and check the daemon runs and its
# control socket in the runtime directory is named after it.
start_serve_here() {
    start_serve
    _pid_alive "$SERVE_PID"
    [ -e "$XDG_RUNTIME_DIR/blkfuse/$SERVE_PID.sock" ]
}

# start_two: the serve daemon with a read-write raw export on MP1 and a
# read-only qcow2 export on MP2.
start_two() {
    start_serve_here
    blkfuse_mount --daemon "$SOCK" --id rawexp "$RAW" "$MP1"
    blkfuse_mount --daemon "$SOCK" --id qexp -r "$QCOW" "$MP2"
}

# fields ID KEY [ID KEY]...: print KEY of export ID for each pair, space-separated, from one
# `blkfuse list --json` (one python3 instead of one per field: its start-up is slow).
fields() {
    blkfuse list --json | python3 -c '
import json, sys
by_id = {e["id"]: e for e in json.load(sys.stdin)}
args = sys.argv[1:]
missing = [i for i in args[::2] if i not in by_id]
if missing:
    sys.exit("no export " + missing[0])
print(" ".join(str(by_id[i][k]) for i, k in zip(args[::2], args[1::2])))
' "$@"
}

# only_rawexp: rawexp is the only export `blkfuse list --json` gives.
only_rawexp() {
    [ "$(listed_ids)" = rawexp ]
}

# listed_ids: the ids `blkfuse list --json` gives, sorted, space-separated.
listed_ids() {
    blkfuse list --json | python3 -c '
import json, sys
print(" ".join(sorted(e["id"] for e in json.load(sys.stdin))))'
}

@test "list --json shows both exports of one serve daemon, with every field" {
    start_two
    run blkfuse list --json
    [ "$status" -eq 0 ]
    python3 - "$output" "$SERVE_PID" "$RAW" "$QCOW" "$MP1" "$MP2" <<'EOF'
import json, sys
exports = json.loads(sys.argv[1])
pid, raw, qcow, mp1, mp2 = int(sys.argv[2]), *sys.argv[3:]
assert isinstance(exports, list) and len(exports) == 2, exports
fields = ["id", "image", "format", "mountpoint", "read_only", "growable",
          "clients", "bytes_read", "bytes_written", "ops_read", "ops_written",
          "since"]
for e in exports:
    missing = [f for f in fields if f not in e]
    assert not missing, f"{e.get('id')}: missing {missing}"
    assert e["pid"] == pid, e
by_id = {e["id"]: e for e in exports}
r, q = by_id["rawexp"], by_id["qexp"]
assert (r["image"], r["format"], r["mountpoint"]) == (raw, "raw", mp1), r
assert (q["image"], q["format"], q["mountpoint"]) == (qcow, "qcow2", mp2), q
assert r["read_only"] is False and q["read_only"] is True, (r, q)
assert r["growable"] is False and q["growable"] is False, (r, q)
for e in exports:
    for f in ["clients", "bytes_read", "bytes_written", "ops_read", "ops_written"]:
        assert isinstance(e[f], int) and e[f] >= 0, (e["id"], f, e[f])
    assert isinstance(e["since"], str) and e["since"], e
EOF
}

@test "reading through one export raises its bytes_read only" {
    start_two
    local r0 q0 rops0 r q rops w
    read -r r0 rops0 q0 <<<"$(fields rawexp bytes_read rawexp ops_read qexp bytes_read)"
    dd if="$MP1" of=/dev/null bs=1M count=3 iflag=direct status=none
    read -r r rops q w <<<"$(fields rawexp bytes_read rawexp ops_read qexp bytes_read \
        rawexp bytes_written)"
    echo "rawexp bytes_read $r0 -> $r, qexp $q0 -> $q"
    [ "$r" -ge $((r0 + 3 * 1048576)) ]
    [ "$rops" -gt "$rops0" ]
    [ "$q" -eq "$q0" ]
    [ "$w" -eq 0 ]
    # And the other way round.
    read -r r0 q0 <<<"$(fields rawexp bytes_read qexp bytes_read)"
    dd if="$MP2" of=/dev/null bs=1M count=1 iflag=direct status=none
    read -r r q <<<"$(fields rawexp bytes_read qexp bytes_read)"
    [ "$q" -ge $((q0 + 1048576)) ]
    [ "$r" -eq "$r0" ]
}

@test "fusermount3 -u of one export removes just that one" {
    start_two
    fusermount3 -u "$MP2"
    wait_for_unmount "$MP2"
    # The daemon notices and drops the export; the other one still serves.
    wait_until 5 only_rawexp
    _pid_alive "$SERVE_PID"
    is_mounted "$MP1"
    cmp "$MP1" "$RAW"
    grep -q "qexp.*removed" "$T/daemon.log"
}

@test "blkfuse unmount of the last export leaves the serve daemon running" {
    start_two
    fusermount3 -u "$MP2"
    wait_for_unmount "$MP2"
    blkfuse unmount "$MP1"
    run ! is_mounted "$MP1"
    _pid_alive "$SERVE_PID"
    [[ -S $SOCK ]]
    run ctl '{"cmd": "list"}'
    echo "$output"
    [ "$status" -eq 0 ]
    python3 -c '
import json, sys
r = json.loads(sys.argv[1])
assert r["ok"] is True and r["pid"] == int(sys.argv[2]) and r["exports"] == [], r
' "$output" "$SERVE_PID"
    [ "$(blkfuse list --json | tr -d '[:space:]')" = "[]" ]
    # A new export can still be added.
    blkfuse_mount --daemon "$SOCK" "$RAW" "$MP1"
    cmp "$MP1" "$RAW"
}

@test "SIGTERM ends the serve daemon: exports unmounted, socket removed" {
    start_two
    kill -TERM "$SERVE_PID"
    wait_for_pid_exit "$SERVE_PID"
    wait_for_unmount "$MP1"
    wait_for_unmount "$MP2"
    [ ! -e "$SOCK" ]
    [ ! -e "$XDG_RUNTIME_DIR/blkfuse/$SERVE_PID.sock" ]
    grep -q "exiting" "$T/daemon.log"
    cmp "$RAW" <(make_pattern /dev/stdout 4M)
}

@test "SIGTERM ends an idle serve daemon" {
    start_serve_here
    kill -TERM "$SERVE_PID"
    wait_for_pid_exit "$SERVE_PID"
    [ ! -e "$SOCK" ]
}

@test "stats --json parses and has the ops of every kind of request" {
    start_two
    dd if=/dev/urandom of="$MP1" bs=64k count=4 conv=notrunc,fsync status=none
    dd if="$MP1" of=/dev/null bs=64k count=4 iflag=direct status=none
    run blkfuse stats --json "$MP1"
    [ "$status" -eq 0 ]
    python3 - "$output" <<'EOF'
import json, sys
s = json.loads(sys.argv[1])
st = s["stats"]
for kind in ["read", "write", "flush", "discard", "write_zeroes"]:
    assert kind in st, f"no {kind} in stats"
    for f in ["ops", "bytes", "failed"]:
        assert isinstance(st[kind][f], int), (kind, f, st[kind])
assert st["read"]["ops"] >= 1 and st["read"]["bytes"] >= 4 * 65536, st["read"]
assert st["write"]["ops"] >= 1 and st["write"]["bytes"] >= 4 * 65536, st["write"]
assert st["flush"]["ops"] >= 1, st["flush"]
assert st["discard"]["ops"] == 0 and st["write_zeroes"]["ops"] == 0, st
EOF
    # The read-only qcow2 export has its own counters.
    run blkfuse stats --json "$MP2"
    [ "$status" -eq 0 ]
    python3 -c '
import json, sys
st = json.loads(sys.argv[1])["stats"]
assert st["write"]["ops"] == 0 and st["read"]["ops"] == 0, st
' "$output"
}
