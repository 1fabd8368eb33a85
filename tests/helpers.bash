# helpers.bash - shared set-up, teardown and utilities for blkfuse's bats tests.
#
# Every tests/*.bats file starts with `load helpers`.  That gives each test:
#
#   setup / teardown     defaults that call blkfuse_setup / blkfuse_teardown.
#                        A file that needs its own must call these first/last:
#                            setup() { blkfuse_setup; ...; }
#                            teardown() { ...; blkfuse_teardown; }
#   T                    a fresh temp dir on a real file system (O_DIRECT works
#                        there, unlike /dev/shm), removed by teardown.
#   XDG_RUNTIME_DIR      $T/run, so daemons of one test never see another's.
#   BLKFUSE_LOG          $T/daemon.log, the daemon log that teardown checks.
#   BLKFUSE_TEST_TRANSPORT
#                        if set (uring, dev), blkfuse_mount and
#                        blkfuse_mount_foreground pass --transport=IT, so a
#                        whole file can be run over one transport
#                        (tests/export-uring.bats does, for the export tests).
#   EXPECTED_LOG_ERRORS  extended regex of daemon log lines a test expects to
#                        match the error pattern; set it before the test ends.
#   MOUNTS, LOOPS, PIDS, UMOUNTS
#                        what teardown cleans up: blkfuse mountpoints, loop
#                        devices, processes, and kernel mounts (directories).
#
# A test that starts a background process must close fd 3 for it
# (`cmd 3>&- &`), or bats waits for that process before it can finish.
#
# Teardown also cleans anything mounted or loop-attached under $T that a test
# forgot to record, and fails the test if the daemon log (or a sanitizer log)
# holds an error the test did not expect.

bats_require_minimum_version 1.5.0

# mkfs.ext4, losetup and friends live in sbin, which may not be on PATH.
case ":$PATH:" in
*:/usr/sbin:*) ;;
*) PATH="$PATH:/usr/sbin:/sbin" ;;
esac

# The in-tree blkfuse (run-tests puts it first already; plain `bats` does not)
# and the test tools built from tests/tools/*.c by `make check` (rwstress).
TEST_TOOLS_DIR="$(cd "$BATS_TEST_DIRNAME/.." && pwd -P)/build/tests/tools"
PATH="$TEST_TOOLS_DIR:${TEST_TOOLS_DIR%/tests/tools}:$PATH"

# Daemon log lines matching this (extended regex) fail the test in teardown.
BLKFUSE_LOG_ERROR_RE='(ERROR|assertion|AddressSanitizer|runtime error)'

# --- skipping ------------------------------------------------------------------

# require CMD...: skip the test unless every CMD is on PATH.
require() {
    local cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || skip "needs $cmd"
    done
}

# require_fuse: skip unless /dev/fuse can be opened and fusermount3 exists.
require_fuse() {
    [[ -c /dev/fuse ]] || skip "needs /dev/fuse"
    (exec 3<>/dev/fuse) 2>/dev/null || skip "needs access to /dev/fuse"
    require fusermount3 findmnt
}

# need_tool NAME...: fail (not skip: it is part of the tree) unless each test
# tool NAME from tests/tools/ is built.
need_tool() {
    local tool
    for tool in "$@"; do
        if [[ ! -x $TEST_TOOLS_DIR/$tool ]]; then
            echo "need_tool: $TEST_TOOLS_DIR/$tool is not built (run: make check)" >&2
            return 1
        fi
    done
}

# require_root: skip unless running as uid 0.
require_root() {
    [[ $(id -u) -eq 0 ]] || skip "needs root"
}

# require_loop: skip unless root and a free loop device can be had.
require_loop() {
    require_root
    require losetup
    losetup -f >/dev/null 2>&1 || skip "needs a free loop device"
}

# --- set-up and teardown ---------------------------------------------------------

blkfuse_setup() {
    T=$(mktemp -d /tmp/blkfuse-test.XXXXXX) || return 1
    T=$(cd "$T" && pwd -P)
    export T
    # run-tests sweeps leftovers of its own run by this tag.
    printf '%s\n' "${BLKFUSE_RUN_ID:-}" >"$T/.owner"

    export XDG_RUNTIME_DIR="$T/run"
    mkdir -m 700 "$XDG_RUNTIME_DIR"
    export BLKFUSE_LOG="$T/daemon.log"

    # A daemon's stderr is gone once it daemonizes: send sanitizer reports to
    # files that teardown checks.
    export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}log_path=$T/sanitizer"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:log_path=$T/sanitizer"

    MOUNTS=()
    LOOPS=()
    PIDS=()
    UMOUNTS=()
    : "${EXPECTED_LOG_ERRORS:=}"
}

setup() {
    blkfuse_setup
}

# export_setup [SIZE]: the set-up of a test of one export: blkfuse_setup,
# require_fuse, and the usual names IMG=$T/disk.img (the image), REF=$T/ref.img
# (a reference copy, for tests that keep one) and MP=$T/disk.mnt (the
# mountpoint).  With SIZE, IMG is made a pattern image of SIZE bytes (sizes as
# make_pattern takes them) and SUM is its sha256sum.
export_setup() {
    blkfuse_setup
    require_fuse
    IMG=$T/disk.img
    REF=$T/ref.img
    MP=$T/disk.mnt
    if [[ -n ${1:-} ]]; then
        make_pattern "$IMG" "$1"
        SUM=$(sha256sum <"$IMG")
    fi
}

# --- the fuse module's enable_uring parameter --------------------------------
# The kernel offers FUSE-over-io_uring only while it is Y.  A test switches it
# with uring_param (blkfuse_teardown puts back the value it had before); a file
# whose every test needs it switches it on in setup_file with uring_file_on and
# back in teardown_file with uring_file_restore, and each test checks with
# require_uring_file.

URING_PARAM=/sys/module/fuse/parameters/enable_uring

# uring_param Y|N: set enable_uring for this test (skips without root or
# without the parameter).
uring_param() {
    require_root
    [[ -w $URING_PARAM ]] || skip "needs $URING_PARAM (a kernel with CONFIG_FUSE_IO_URING)"
    [[ -n ${URING_OLD:-} ]] || URING_OLD=$(cat "$URING_PARAM")
    echo "$1" >"$URING_PARAM"
}

# uring_param_restore: put back the value uring_param found (blkfuse_teardown).
uring_param_restore() {
    if [[ -n ${URING_OLD:-} ]]; then
        echo "$URING_OLD" >"$URING_PARAM"
        URING_OLD=
    fi
}

# uring_file_on (setup_file): switch enable_uring on for the whole file, if
# root can; the old value is kept in $BATS_FILE_TMPDIR.
uring_file_on() {
    if [[ $(id -u) -eq 0 && -w $URING_PARAM ]]; then
        cat "$URING_PARAM" >"$BATS_FILE_TMPDIR/uring-old"
        echo Y >"$URING_PARAM"
    fi
}

# uring_file_restore (teardown_file): put back what uring_file_on found.
uring_file_restore() {
    if [[ -f $BATS_FILE_TMPDIR/uring-old ]]; then
        cat "$BATS_FILE_TMPDIR/uring-old" >"$URING_PARAM"
    fi
}

# require_uring_file: skip unless uring_file_on switched enable_uring on.
require_uring_file() {
    [[ -f $BATS_FILE_TMPDIR/uring-old ]] ||
        skip "needs root and $URING_PARAM (a kernel with CONFIG_FUSE_IO_URING)"
}

# Print "TARGET FSTYPE" for every mount whose target lies inside $T, deepest
# first (reverse mount order), without touching the mounts themselves.
_mounts_under_t() {
    local target fstype
    findmnt -rn -o TARGET,FSTYPE 2>/dev/null | tac | while read -r target fstype; do
        printf -v target '%b' "$target"
        [[ $target == "$T"/* ]] && printf '%s %s\n' "$target" "$fstype"
    done
}

# Unmount one blkfuse mountpoint, as gently as still works.
_force_unmount() {
    local mp=$1
    is_mounted "$mp" || return 0
    timeout 30 blkfuse unmount --force "$mp" >>"$T/teardown.log" 2>&1
    is_mounted "$mp" || return 0
    echo "teardown: 'blkfuse unmount --force $mp' left it mounted; using fusermount3 -u -z" >&2
    fusermount3 -u -z "$mp" >>"$T/teardown.log" 2>&1
    is_mounted "$mp" || return 0
    umount -l "$mp" >>"$T/teardown.log" 2>&1
    ! is_mounted "$mp"
}

blkfuse_teardown() {
    local rc=0 mp dev pid target fstype back errors f

    uring_param_restore
    if [[ -z ${T:-} || ! -d $T ]]; then
        return 0
    fi

    # 1. Kernel mounts (e.g. ext4 on a loop device) go first: they pin the
    #    loop devices, which in turn pin the blkfuse mounts.
    for mp in ${UMOUNTS[@]+"${UMOUNTS[@]}"}; do
        mountpoint -q "$mp" 2>/dev/null && umount -l "$mp" 2>/dev/null
    done
    while read -r target fstype; do
        [[ $fstype == fuse* ]] && continue
        umount -l "$target" 2>/dev/null
    done < <(_mounts_under_t)

    # 2. Loop devices: the recorded ones, and any backed by a file in $T.
    for dev in ${LOOPS[@]+"${LOOPS[@]}"}; do
        losetup -d "$dev" 2>/dev/null
    done
    if command -v losetup >/dev/null 2>&1; then
        while read -r dev back; do
            [[ $back == "$T"/* ]] && losetup -d "$dev" 2>/dev/null
        done < <(losetup -n -l -O NAME,BACK-FILE 2>/dev/null)
    fi

    # 3. blkfuse mounts: the recorded ones, and any other FUSE mount in $T.
    for mp in ${MOUNTS[@]+"${MOUNTS[@]}"}; do
        _force_unmount "$mp"
    done
    while read -r target fstype; do
        _force_unmount "$target"
    done < <(_mounts_under_t)

    # 4. Processes the test started, and any left that mention $T
    #    (daemons whose mount went away should exit by themselves).
    for pid in ${PIDS[@]+"${PIDS[@]}"} $(pgrep -f -- "$T/" 2>/dev/null); do
        [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
        kill -0 "$pid" 2>/dev/null || continue
        kill -TERM "$pid" 2>/dev/null
        wait_for_pid_exit "$pid" 5 2>/dev/null || kill -KILL "$pid" 2>/dev/null
    done

    # 5. Anything still attached is a bug in this teardown: say so, loudly.
    if [[ -n $(_mounts_under_t) ]]; then
        echo "teardown: could not unmount:" >&2
        _mounts_under_t >&2
        rc=1
    fi

    # 6. Errors in the daemon log that the test did not expect.
    if [[ -f $T/daemon.log ]]; then
        errors=$(grep -E "$BLKFUSE_LOG_ERROR_RE" "$T/daemon.log")
        if [[ -n $errors && -n ${EXPECTED_LOG_ERRORS:-} ]]; then
            errors=$(grep -Ev -- "$EXPECTED_LOG_ERRORS" <<<"$errors")
        fi
        if [[ -n $errors ]]; then
            echo "teardown: unexpected errors in the daemon log:" >&2
            printf '%s\n' "$errors" | sed 's/^/  /' >&2
            echo "teardown: full daemon log ($T/daemon.log):" >&2
            sed 's/^/  | /' "$T/daemon.log" >&2
            rc=1
        fi
    fi
    # Sanitizer logs may hold harmless warnings (ASan warns about swapcontext
    # once per process); only reports fail.
    for f in "$T"/sanitizer.*; do
        if ! [[ -f $f ]] || ! grep -qE "$BLKFUSE_LOG_ERROR_RE" "$f"; then
            continue
        fi
        echo "teardown: sanitizer report $f:" >&2
        sed 's/^/  | /' "$f" >&2
        rc=1
    done

    # --one-file-system: never delete through a mount that survived.
    if ((rc == 0)); then
        rm -rf --one-file-system "$T"
    else
        echo "teardown: keeping $T for inspection" >&2
        # Still drop the bulky image files.
        find "$T" -xdev -type f -size +1M -delete 2>/dev/null
    fi
    return "$rc"
}

teardown() {
    blkfuse_teardown
}

# --- mounting --------------------------------------------------------------------

# Canonical absolute path of PATH without touching PATH itself (a dead FUSE
# mountpoint cannot be stat()ed).
_abspath() {
    local dir base
    dir=$(dirname -- "$1")
    base=$(basename -- "$1")
    dir=$(cd -- "$dir" 2>/dev/null && pwd -P) || dir=$(realpath -m -- "$(dirname -- "$1")")
    printf '%s/%s\n' "${dir%/}" "$base"
}

# is_mounted PATH: true if PATH is itself a FUSE mountpoint.
is_mounted() {
    local path out target fstype
    path=$(_abspath "$1")
    out=$(findmnt -n -T "$path" -o TARGET,FSTYPE 2>/dev/null | tail -n 1) || return 1
    read -r target fstype <<<"$out"
    [[ $target == "$path" && $fstype == fuse* ]]
}

# _test_transport ARGS...: print --transport=$BLKFUSE_TEST_TRANSPORT when it is
# set and ARGS choose no transport themselves.
_test_transport() {
    [[ -n ${BLKFUSE_TEST_TRANSPORT:-} && " $* " != *" --transport"* ]] || return 0
    echo "--transport=$BLKFUSE_TEST_TRANSPORT"
}

# blkfuse_mount ARGS... IMAGE MOUNTPOINT: run `blkfuse mount` with the daemon
# log in $T and record the mountpoint for teardown.  blkfuse returns once the
# mount is live; anything else is a failure, reported with the daemon log.
blkfuse_mount() {
    local mp status=0
    (($#)) || { echo "blkfuse_mount: no arguments" >&2; return 2; }
    mp=$(_abspath "${!#}")
    MOUNTS+=("$mp")
    # 3>&-: the daemon must not inherit bats' output pipe, or bats waits for it.
    # With --daemon the export joins a serve daemon, which has its own log.
    if [[ " $* " == *" --daemon "* || " $* " == *" --daemon="* ]]; then
        blkfuse mount $(_test_transport "$@") "$@" 3>&- || status=$?
    else
        blkfuse mount --log-file "$T/daemon.log" $(_test_transport "$@") "$@" 3>&- ||
            status=$?
    fi
    if ((status != 0)); then
        echo "blkfuse_mount: 'blkfuse mount $*' failed with status $status" >&2
        _show_daemon_log
        return "$status"
    fi
    if ! is_mounted "$mp"; then
        echo "blkfuse_mount: 'blkfuse mount $*' returned but $mp is not mounted" >&2
        _show_daemon_log
        return 1
    fi
}

# blkfuse_mount_foreground ARGS... IMAGE MOUNTPOINT: run the daemon with
# --foreground in the background, record it in PIDS (and BLKFUSE_PID), and wait
# for the mount.
blkfuse_mount_foreground() {
    local mp
    mp=$(_abspath "${!#}")
    MOUNTS+=("$mp")
    blkfuse mount --foreground --log-file "$T/daemon.log" $(_test_transport "$@") "$@" \
        >>"$T/foreground.out" 2>&1 3>&- &
    BLKFUSE_PID=$!
    PIDS+=("$BLKFUSE_PID")
    if ! wait_for_mount "$mp"; then
        _show_daemon_log
        sed 's/^/  > /' "$T/foreground.out" >&2
        return 1
    fi
}

_show_daemon_log() {
    if [[ -s $T/daemon.log ]]; then
        echo "daemon log:" >&2
        sed 's/^/  | /' "$T/daemon.log" >&2
    else
        echo "(daemon log is empty)" >&2
    fi
}

# Time in milliseconds, for deadlines.
_now_ms() {
    local t=${EPOCHREALTIME/[.,]/}
    echo $((t / 1000))
}

# _wait SECONDS MESSAGE CMD...: run CMD every 50 ms until it succeeds; after SECONDS, print
# MESSAGE on stderr and fail.  The one polling loop of the tests.
_wait() {
    local secs=$1 msg=$2 deadline
    shift 2
    deadline=$(($(_now_ms) + secs * 1000))
    until "$@"; do
        if (($(_now_ms) >= deadline)); then
            echo "$msg" >&2
            return 1
        fi
        sleep 0.05
    done
}

# _not CMD...: succeed when CMD fails (for _wait and wait_until).
_not() {
    ! "$@"
}

# wait_until SECONDS CMD...: wait until CMD succeeds (it is retried every 50 ms); fail after
# SECONDS, naming CMD.  For a condition no wait_for_* below names.
wait_until() {
    local secs=$1
    shift
    _wait "$secs" "wait_until: '$*' did not succeed within ${secs}s" "$@"
}

# wait_for_mount PATH [SECONDS]: wait until PATH is a FUSE mountpoint (10 s).
wait_for_mount() {
    local secs=${2:-10}
    _wait "$secs" "wait_for_mount: $1 not mounted after ${secs}s" is_mounted "$1"
}

# wait_for_unmount PATH [SECONDS]: wait until PATH is no longer mounted (10 s).
wait_for_unmount() {
    local secs=${2:-10}
    _wait "$secs" "wait_for_unmount: $1 still mounted after ${secs}s" _not is_mounted "$1"
}

# True while PID runs (a zombie counts as exited).
_pid_alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null)
    [[ -n $state && $state != Z ]]
}

# wait_for_pid_exit PID [SECONDS]: wait until PID has exited (10 s).
wait_for_pid_exit() {
    local secs=${2:-10}
    _wait "$secs" "wait_for_pid_exit: pid $1 still running after ${secs}s" _not _pid_alive "$1"
}

# _writes_done MOUNTPOINT N: the export on MOUNTPOINT has completed N write requests or more
# (its `blkfuse stats` counter); the count is left in _WRITES.
_writes_done() {
    _WRITES=$(blkfuse stats --json "$1" 2>/dev/null |
        sed -n 's/^ *"ops_written": \([0-9]*\).*/\1/p')
    ((${_WRITES:-0} >= $2))
}

# wait_for_writes MOUNTPOINT N [SECONDS]: wait until the export on MOUNTPOINT
# has completed at least N write requests (its `blkfuse stats` counter), so a
# test that interrupts a workload knows the workload really wrote (10 s).
wait_for_writes() {
    local secs=${3:-10}
    _wait "$secs" "wait_for_writes: $1 has not completed $2 writes after ${secs}s" \
        _writes_done "$1" "$2" || { echo "wait_for_writes: it completed ${_WRITES:-no}" >&2; false; }
}

# wait_for_log FILE REGEX [SECONDS]: wait until a line of FILE matches the
# extended REGEX (10 s), instead of sleeping for a daemon to get there.
wait_for_log() {
    local secs=${3:-10}
    _wait "$secs" "wait_for_log: no line matching '$2' in $1 after ${secs}s" \
        grep -Eqs -- "$2" "$1"
}

# kill_daemon MOUNTPOINT: SIGKILL the foreground daemon of blkfuse_mount_foreground
# ($BLKFUSE_PID), as a crash would end it, and take its dead mount off MOUNTPOINT.
kill_daemon() {
    kill -9 "$BLKFUSE_PID"
    wait_for_pid_exit "$BLKFUSE_PID"
    fusermount3 -u "$1" 2>/dev/null || umount -l "$1" 2>/dev/null || true
    wait_for_unmount "$1"
}

# daemon_pid MOUNTPOINT: print the pid of the blkfuse daemon serving
# MOUNTPOINT, found by its command line (a fallback until blkfuse list says).
daemon_pid() {
    local abs
    abs=$(_abspath "$1")
    pgrep -o -f -- "blkfuse.* mount .*($(_regex_quote "$abs")|$(_regex_quote "$1"))( |\$)"
}

# queue_threads MOUNTPOINT: "NAME CPUS" for each queue thread (fuse-qN) of the daemon on
# MOUNTPOINT: its name and the CPUs it may run on (Cpus_allowed_list).
queue_threads() {
    local pid task
    pid=$(daemon_pid "$1")
    for task in /proc/"$pid"/task/*; do
        [[ $(cat "$task/comm") == fuse-q* ]] || continue
        echo "$(cat "$task/comm") $(awk '/^Cpus_allowed_list/ { print $2 }' "$task/status")"
    done
}

# Quote STRING for use inside an extended regex.
_regex_quote() {
    printf '%s' "$1" | sed 's/[][\\.*^$+?(){}|]/\\&/g'
}

# list_field MOUNTPOINT FIELD: FIELD of the one export on MOUNTPOINT in
# `blkfuse list --json` (fails unless exactly one export is there; needs python3).
list_field() {
    blkfuse list --json | python3 -c '
import json, sys
mine = [e for e in json.load(sys.stdin) if e["mountpoint"] == sys.argv[1]]
assert len(mine) == 1, mine
print(mine[0][sys.argv[2]])
' "$1" "$2"
}

# --- loop devices and kernel mounts ------------------------------------------------

# attach_loop FILE [LOSETUP-OPTIONS...]: attach FILE to a free loop device,
# record it for teardown and set LOOP to its name.  Call it directly, not in
# $(...), so the record survives.
attach_loop() {
    local file=$1
    shift
    LOOP=$(losetup -f --show "$@" "$file") || return 1
    LOOPS+=("$LOOP")
}

# mount_dev DEVICE DIR [MOUNT-OPTIONS...]: mount a kernel file system on DIR
# (created if missing) and record it for teardown.
mount_dev() {
    local dev=$1 dir=$2
    shift 2
    mkdir -p "$dir"
    UMOUNTS+=("$(_abspath "$dir")")
    mount "$@" "$dev" "$dir"
}

# --- test data ---------------------------------------------------------------------

# make_raw PATH SIZE: a sparse file of SIZE (truncate(1) syntax: 64M, 1G, 4096).
make_raw() {
    rm -f "$1"
    truncate -s "$2" "$1"
}

# make_pattern PATH SIZE: a file of SIZE bytes with a deterministic, non-zero
# pattern in which every 64-byte record names its own offset, so data read
# back from the wrong place never matches.  SIZE takes K/M/G suffixes (1024).
# Each size is made once per bats file and copied from $BATS_FILE_TMPDIR after
# that (awk takes several times as long as the copy).
make_pattern() {
    local path=$1 bytes cache
    bytes=$(numfmt --from=iec -- "$2") || return 1
    cache=${BATS_FILE_TMPDIR:+$BATS_FILE_TMPDIR/make_pattern.$bytes}
    if [[ -z $cache ]]; then
        _pattern "$bytes" >"$path"
        return
    fi
    if [[ ! -f $cache ]]; then
        _pattern "$bytes" >"$cache.$BASHPID" && mv "$cache.$BASHPID" "$cache" || return 1
    fi
    cat "$cache" >"$path"
}

# _pattern BYTES: make_pattern's pattern on stdout.
_pattern() {
    awk -v n="$1" 'BEGIN {
        for (off = 0; off + 64 <= n; off += 64)
            printf "%-63s\n", sprintf("blkfuse pattern @%d", off)
        if (off < n)
            printf "%s", substr(sprintf("%-63s\n", sprintf("blkfuse pattern @%d", off)), 1, n - off)
    }'
}

# --- qcow2 images ----------------------------------------------------------------------

# bitmap_directory IMAGE: print the file offset of the bitmap directory of the qcow2
# IMAGE, from its bitmaps header extension (needs python3).  Its entries, as the qcow2
# spec lays them out: table offset (8 bytes), table size (4), flags (4, in-use is bit 0,
# auto bit 1), type (1), granularity bits (1), name size (2), extra data size (4).
bitmap_directory() {
    python3 - "$1" <<'EOF'
import struct, sys
HEADER_LENGTH = 100             # header field: the header's length, extensions follow
EXT_END, EXT_BITMAPS = 0, 0x23852875
DIRECTORY_OFFSET = 16           # in the bitmaps extension's data: the directory's offset
hdr = open(sys.argv[1], "rb").read(65536)
pos, = struct.unpack_from(">I", hdr, HEADER_LENGTH)
while True:
    ext, size = struct.unpack_from(">II", hdr, pos)
    if ext == EXT_BITMAPS:
        break
    if ext == EXT_END:
        sys.exit("bitmap_directory: %s has no bitmaps extension" % sys.argv[1])
    pos += 8 + (size + 7) // 8 * 8
print(struct.unpack_from(">Q", hdr, pos + 8 + DIRECTORY_OFFSET)[0])
EOF
}

# dirty_map IMAGE BITMAP: the ranges (START+LENGTH, one per line) that QEMU sees dirty in
# BITMAP of the qcow2 IMAGE, through qemu-nbd's export of the bitmap and qemu-img map with
# the nbd driver's x-dirty-bitmap option (dirty ranges show as "data": false).
dirty_map() {
    local img=$1 bm=$2 pid opts
    opts="driver=nbd,server.type=unix,server.path=$T/nbd.sock"
    opts+=",x-dirty-bitmap=qemu:dirty-bitmap:$bm"
    qemu-nbd -r -f qcow2 -B "$bm" -k "$T/nbd.sock" --fork --pid-file="$T/nbd.pid" "$img" ||
        return 1
    pid=$(cat "$T/nbd.pid")
    qemu-img map --output=json --image-opts "$opts" |
        sed -n 's/.*"start": \([0-9]*\), "length": \([0-9]*\),.*"data": false.*/\1+\2/p'
    # qemu-nbd without --persistent exits once its only client has gone
    wait_for_pid_exit "$pid"
}

# poke_byte FILE OFFSET VALUE: write the byte VALUE (0 to 255) at OFFSET of FILE.
poke_byte() {
    local oct
    printf -v oct '\\%03o' "$3"
    printf "$oct" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# --- loop devices and file systems ---------------------------------------------

# detach_loop DEV FILE: detach DEV and wait until no loop device holds FILE
# (the kernel lets go of the backing file asynchronously).
detach_loop() {
    losetup -d "$1"
    _wait 5 "detach_loop: $2 is still attached" _no_loop_on "$2" || {
        losetup -n -j "$2" >&2
        false
    }
}

# _no_loop_on FILE: no loop device has FILE as its backing file.
_no_loop_on() {
    [[ -z $(losetup -n -j "$1" 2>/dev/null) ]]
}

# ext4_on_loop FILE DIR [LOSETUP-OPTIONS...]: the file system round trip on a loop
# device over FILE (an export): mkfs.ext4, write_files on DIR, fsck clean, and the
# device detached again.  With --direct-io=on, checks that losetup did not fall back
# to buffered I/O (it does so silently).
ext4_on_loop() {
    local file=$1 dir=$2
    shift 2
    attach_loop "$file" "$@"
    if [[ " $* " == *" --direct-io=on "* ]]; then
        [ "$(losetup -n -O DIO "$LOOP" | tr -d ' ')" = 1 ]
    fi
    mkfs.ext4 -q -F "$LOOP"
    mount_dev "$LOOP" "$dir"
    write_files "$dir"
    sync -f "$dir/one-byte"
    umount "$dir"
    run fsck.ext4 -n -f "$LOOP"
    echo "$output"
    [ "$status" -eq 0 ]
    detach_loop "$LOOP" "$file"
}

# ext4_image_has_files IMAGE DIR: IMAGE (a raw file) is a clean ext4 holding the files
# ext4_on_loop wrote (checked mounted read-only on DIR).
ext4_image_has_files() {
    local img=$1 dir=$2
    run fsck.ext4 -n -f "$img"
    echo "$output"
    [ "$status" -eq 0 ]
    attach_loop "$img" -r
    mount_dev "$LOOP" "$dir" -o ro
    (cd "$dir" && sha256sum --quiet --strict -c "$T/sums")
    umount "$dir"
    detach_loop "$LOOP" "$img"
}

# write_files DIR: files of assorted sizes (1 byte to 20 MiB, 50 small ones) in
# DIR, and their checksums in $T/sums (check later with sha256sum -c).
write_files() {
    local dir=$1 i
    mkdir -p "$dir/sub/deeper"
    head -c 1 /dev/urandom >"$dir/one-byte"
    head -c 4097 /dev/urandom >"$dir/sub/page-and-a-byte"
    head -c $((3 * 1048576 + 17)) /dev/urandom >"$dir/sub/deeper/three-megs"
    head -c $((20 * 1048576)) /dev/urandom >"$dir/twenty-megs"
    for i in $(seq 1 50); do
        echo "small file $i" >"$dir/sub/small-$i"
    done
    (cd "$dir" && find . -type f ! -name sums -print0 | sort -z | xargs -0 sha256sum) >"$T/sums"
}
