# ceph-helpers.bash - a one-node Ceph cluster for the rbd tests (load it after helpers).
#
# One monitor and one OSD with the in-memory object store, no authentication, on 127.0.0.1 at
# a free port, everything in one scratch folder; nothing touches /etc/ceph.  Boot it once per
# file in setup_file and stop it in teardown_file:
#
#   ceph_missing            print why the cluster cannot run here (a ceph package missing,
#                           blkfuse built without librbd), nothing when it can
#   ceph_start DIR          boot the cluster in DIR (created), create and initialise the pool
#                           "rbd"; exports CEPH_DIR, CEPH_CONF, CEPH_MON_ADDR, CEPH_MON_PID
#                           (the OSD's pid is in DIR/osd.pid: it changes with restarts).  Returns non-zero (with the daemons' logs on stderr)
#                           if it is not ready within 60 s.
#   ceph_stop               stop both daemons (only the pids ceph_start started) and remove
#                           CEPH_DIR
#   ceph_osd_stop           stop the OSD cleanly (SIGTERM: the memstore saves its objects to
#                           its folder, as a real OSD keeps them on disk) and wait for its exit
#   ceph_osd_start          start the OSD again and wait until the monitor has it up
#   ceph CMD... / rbd CMD... / rados CMD...
#                           the cluster's tools, pointed at CEPH_CONF and with a timeout
#
# Setting up the cluster in setup_file: bats runs setup_file in a subshell whose exported
# variables reach the tests and teardown_file.

CEPH_TOOL_TIMEOUT=${CEPH_TOOL_TIMEOUT:-60}

ceph_missing() {
    local cmd top
    for cmd in ceph-mon ceph-osd monmaptool ceph rbd uuidgen python3; do
        if ! command -v "$cmd" >/dev/null 2>&1; then
            echo "needs $cmd (on Debian: apt-get install ceph-mon ceph-osd ceph-common)"
            return 0
        fi
    done
    top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
    if ! grep -q '^#define CONFIG_LIBRBD 1' "$top/config.h" 2>/dev/null; then
        echo "blkfuse was built without librbd (on Debian: apt-get install librbd-dev, then" \
            "re-run configure)"
    fi
}

ceph() {
    timeout "$CEPH_TOOL_TIMEOUT" "$(type -P ceph)" -c "$CEPH_CONF" "$@"
}

rbd() {
    timeout "$CEPH_TOOL_TIMEOUT" "$(type -P rbd)" -c "$CEPH_CONF" "$@"
}

rados() {
    timeout "$CEPH_TOOL_TIMEOUT" "$(type -P rados)" -c "$CEPH_CONF" "$@"
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
_ceph_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

_ceph_show_logs() {
    local f
    for f in "$CEPH_DIR"/log/*.log "$CEPH_DIR"/*.out; do
        [[ -s $f ]] || continue
        echo "--- $f (last 30 lines)" >&2
        tail -n 30 "$f" | sed 's/^/  | /' >&2
    done
}

# _ceph_wait SECONDS CMD...: run CMD until it succeeds, at most SECONDS.
_ceph_wait() {
    local secs=$1 deadline
    shift
    deadline=$(($(_now_ms) + secs * 1000))
    until "$@" >/dev/null 2>&1; do
        if (($(_now_ms) >= deadline)); then
            echo "ceph: '$*' did not succeed within ${secs}s" >&2
            return 1
        fi
        sleep 0.2
    done
}

_ceph_osd_is_up() {
    [[ $(CEPH_TOOL_TIMEOUT=10 ceph osd dump 2>/dev/null | awk '$1 == "osd.0" { print $2 }') == up ]]
}

# Up, or (re)started when its process is gone: an OSD has been seen to exit silently at its
# first boot on a loaded machine; a second start finds its store and joins.
_ceph_osd_up_or_restart() {
    if ! _pid_alive "$CEPH_OSD_PID"; then
        echo "ceph: osd.0 (pid $CEPH_OSD_PID) exited before it was up; starting it again" \
            >>"$CEPH_DIR/setup.out"
        _ceph_start_osd_daemon
        return 1
    fi
    _ceph_osd_is_up
}

_ceph_start_osd_daemon() {
    command ceph-osd -c "$CEPH_CONF" -i 0 -f >>"$CEPH_DIR/osd.out" 2>&1 3>&- &
    CEPH_OSD_PID=$!
    export CEPH_OSD_PID
    echo "$CEPH_OSD_PID" >"$CEPH_DIR/osd.pid"
}

# The OSD's pid: tests run in processes of their own, so a restart in one test reaches the
# next (and teardown_file) through CEPH_DIR/osd.pid.
_ceph_osd_pid() {
    cat "$CEPH_DIR/osd.pid" 2>/dev/null
}

ceph_start() {
    local dir=$1 fsid port
    mkdir -p "$dir"/{run,log,mon,osd0}
    CEPH_DIR=$(cd "$dir" && pwd -P)
    CEPH_CONF=$CEPH_DIR/ceph.conf
    fsid=$(uuidgen)
    port=$(_ceph_free_port) || return 1
    CEPH_MON_ADDR=127.0.0.1:$port
    export CEPH_DIR CEPH_CONF CEPH_MON_ADDR
    cat >"$CEPH_CONF" <<EOF
[global]
fsid = $fsid
mon host = v1:$CEPH_MON_ADDR
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
osd objectstore = memstore
memstore device bytes = 2147483648
ms bind msgr2 = false
osd crush chooseleaf type = 0
osd fast shutdown = false
run dir = $CEPH_DIR/run
log file = $CEPH_DIR/log/\$name.log
admin socket = $CEPH_DIR/run/\$name.asok
[client]
# Clients (rbd, blkfuse) run side by side: no admin socket for them to fight over.
admin socket =
[mon.a]
mon data = $CEPH_DIR/mon
[osd.0]
osd data = $CEPH_DIR/osd0
EOF
    command monmaptool --create --addv a "[v1:$CEPH_MON_ADDR]" --fsid "$fsid" \
        "$CEPH_DIR/monmap" >>"$CEPH_DIR/setup.out" 2>&1 &&
        command ceph-mon -c "$CEPH_CONF" -i a --mkfs --monmap "$CEPH_DIR/monmap" \
            >>"$CEPH_DIR/setup.out" 2>&1 || { _ceph_show_logs; return 1; }
    command ceph-mon -c "$CEPH_CONF" -i a -f >>"$CEPH_DIR/mon.out" 2>&1 3>&- &
    CEPH_MON_PID=$!
    export CEPH_MON_PID
    if ! { ceph osd create >>"$CEPH_DIR/setup.out" 2>&1 &&
        command ceph-osd -c "$CEPH_CONF" -i 0 --mkfs >>"$CEPH_DIR/setup.out" 2>&1; }; then
        _ceph_show_logs
        return 1
    fi
    _ceph_start_osd_daemon
    if ! { _ceph_wait 60 _ceph_osd_up_or_restart &&
        ceph osd pool create rbd 8 >>"$CEPH_DIR/setup.out" 2>&1 &&
        rbd pool init rbd >>"$CEPH_DIR/setup.out" 2>&1; }; then
        _ceph_show_logs
        return 1
    fi
}

ceph_osd_stop() {
    CEPH_OSD_PID=$(_ceph_osd_pid)
    [[ -n $CEPH_OSD_PID ]] || return 0
    kill -TERM "$CEPH_OSD_PID" 2>/dev/null
    wait_for_pid_exit "$CEPH_OSD_PID" 30
}

ceph_osd_start() {
    _ceph_start_osd_daemon
    _ceph_wait 60 _ceph_osd_up_or_restart || { _ceph_show_logs; return 1; }
}

ceph_stop() {
    local pid
    [[ -n ${CEPH_DIR:-} && -d $CEPH_DIR ]] || return 0
    for pid in $(_ceph_osd_pid) ${CEPH_MON_PID:-}; do
        kill -TERM "$pid" 2>/dev/null || continue
        wait_for_pid_exit "$pid" 20 || kill -KILL "$pid" 2>/dev/null
    done
    rm -rf --one-file-system "$CEPH_DIR"
}
