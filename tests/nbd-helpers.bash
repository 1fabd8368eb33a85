# nbd-helpers.bash - NBD servers for the nbd driver's tests (tests/nbd*.bats):
# nbdkit and qemu-storage-daemon on a unix socket in $T or on 127.0.0.1, each
# recorded in PIDS so that teardown stops it.
#
#   nbd_setup [file]        the set-up of an nbd test: blkfuse_setup, FUSE, the
#                           driver, MP=$T/disk.mnt; with "file", nbdkit and its
#                           file plugin too
#   require_nbd_driver      skip unless this blkfuse was built with libnbd
#   start_nbdkit NAME ARGS  nbdkit on $T/NAME.sock serving ARGS (plugin and its
#                           parameters); NBD_PID is its pid
#   start_nbdkit_tcp NAME ARGS
#                           the same on 127.0.0.1, a free port: NBD_PORT
#   start_qsd NAME IMAGE [FORMAT] [EXPORT-OPTIONS]
#                           qemu-storage-daemon exporting IMAGE (a file node,
#                           or FORMAT on it) as "disk" on $T/NAME.sock, writable
#                           unless EXPORT-OPTIONS says otherwise
#   stop_server PID         kill -KILL the server and wait until it is gone
#   start_mute_server NAME  a server on $T/NAME.sock that accepts connections and
#                           never says a word; MUTE_PID is its pid, and
#                           $T/NAME.accepted exists once it has accepted one
#   listed STATE MOUNTPOINT `blkfuse list --json` answers within 5 s and shows an
#                           export on MOUNTPOINT in STATE (opening, mounted)
#   nbd_unix_uri NAME [EXPORT]
#                           nbd+unix:///EXPORT?socket=$T/NAME.sock

nbd_setup() {
    blkfuse_setup
    require_fuse
    require_nbd_driver
    MP=$T/disk.mnt
    if [[ ${1:-} == file ]]; then
        require_nbdkit
        nbdkit --dump-plugin file >/dev/null 2>&1 || skip "nbdkit has no file plugin"
    fi
}

# The driver answers a URI with "... NBD server ..."; without libnbd the name
# goes to the file driver, which knows nothing of NBD.
require_nbd_driver() {
    local out
    out=$(blkfuse info 'nbd+unix:///?socket=/nonexistent/blkfuse-probe' 2>&1) || true
    [[ $out == *"NBD server"* ]] ||
        skip "blkfuse was built without libnbd (on Debian: apt-get install libnbd-dev, then ./configure)"
}

require_nbdkit() {
    require nbdkit
    nbdkit memory --dump-plugin >/dev/null 2>&1 ||
        skip "nbdkit has no memory plugin (on Debian: apt-get install nbdkit)"
}

require_qsd() {
    require qemu-storage-daemon qemu-img
}

nbd_unix_uri() {
    echo "nbd+unix:///${2:-}?socket=$T/$1.sock"
}

# _wait_pidfile FILE: wait (10 s) until FILE holds a pid; print it.
_wait_pidfile() {
    _wait 10 "_wait_pidfile: no $1 after 10s" test -s "$1" && cat "$1"
}

start_nbdkit() {
    local name=$1
    shift
    rm -f "$T/$name.sock" "$T/$name.pid"
    # nbdkit forks into the background and writes the pid file once it listens.
    nbdkit -U "$T/$name.sock" -P "$T/$name.pid" "$@" 3>&- || return 1
    NBD_PID=$(_wait_pidfile "$T/$name.pid") || return 1
    PIDS+=("$NBD_PID")
}

# A port nothing listens on now (the kernel's choice for an ephemeral bind).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_nbdkit_tcp() {
    local name=$1
    shift
    NBD_PORT=$(free_port) || return 1
    rm -f "$T/$name.pid"
    nbdkit -i 127.0.0.1 -p "$NBD_PORT" -P "$T/$name.pid" "$@" 3>&- || return 1
    NBD_PID=$(_wait_pidfile "$T/$name.pid") || return 1
    PIDS+=("$NBD_PID")
}

start_qsd() {
    local name=$1 image=$2 format=${3:-} eopts=${4:-writable=on} node=file
    local blockdevs=(--blockdev "driver=file,node-name=file,filename=$image")
    if [[ -n $format ]]; then
        blockdevs+=(--blockdev "driver=$format,node-name=fmt,file=file")
        node=fmt
    fi
    rm -f "$T/$name.sock" "$T/$name.pid"
    qemu-storage-daemon "${blockdevs[@]}" \
        --nbd-server "addr.type=unix,addr.path=$T/$name.sock" \
        --export "type=nbd,id=exp,node-name=$node,name=disk,$eopts" \
        --pidfile "$T/$name.pid" --daemonize 3>&- || return 1
    NBD_PID=$(_wait_pidfile "$T/$name.pid") || return 1
    PIDS+=("$NBD_PID")
}

stop_server() {
    kill -KILL "$1" 2>/dev/null
    wait_for_pid_exit "$1" 10
}

start_mute_server() {
    local name=$1
    rm -f "$T/$name.sock" "$T/$name.accepted" "$T/$name.ready"
    python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(8)
open(sys.argv[3], "w").close()
conns = []
while True:
    conns.append(s.accept()[0])
    open(sys.argv[2], "w").close()' "$T/$name.sock" "$T/$name.accepted" "$T/$name.ready" 3>&- &
    MUTE_PID=$!
    PIDS+=("$MUTE_PID")
    wait_until 10 test -e "$T/$name.ready"
}

listed() {
    timeout 5 blkfuse list --json | python3 -c '
import json, sys
sys.exit(not any(e["mountpoint"] == sys.argv[2] and e["state"] == sys.argv[1]
                 for e in json.load(sys.stdin)))' "$1" "$2"
}
