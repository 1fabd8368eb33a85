# shellcheck shell=bash
# lib.sh - sourced by bench/run, never run: the scratch file system the images live on, the exports
# under test (blkfuse, qemu-storage-daemon's FUSE export, the null server), their clean-up, and the
# arithmetic of the tables (medians, ratios, geometric means).
#
# Everything a function starts is recorded here and undone by bench_cleanup (the EXIT trap of
# bench/run): blkfuse exports are unmounted (their daemon killed by pid if that fails), the other
# servers get SIGTERM by pid, loop devices and kernel mounts made here are released, the scratch
# directory is removed.  Nothing that the bench did not start is touched.

# --- state -------------------------------------------------------------------------------------

BF_MOUNTS=()            # blkfuse mountpoints
declare -A BF_PID=()    # blkfuse mountpoint -> daemon pid
SRV_PIDS=()             # other servers (qsd, nullserve) and samplers started in the background
declare -A SRV_MNT=()   # server pid -> its mountpoint
KMOUNTS=()              # kernel mounts (directories), innermost last
LOOPDEVS=()             # loop devices attached here
SCRATCH_FS=             # the ext4-in-RAM mount (directory), SCRATCH_LOOP its loop device,
SCRATCH_LOOP=           # SCRATCH_IMG the file in /dev/shm that holds its blocks
SCRATCH_IMG=
SCRATCH_DIR=            # the directory the bench created for its files (removed at exit)
EXTRA_DIRS=()           # more directories the bench created (the tmpfs part's), removed at exit
URING_RESTORE=          # the fuse module's enable_uring before --enable-uring changed it

say() { printf '%s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# --- clean-up ----------------------------------------------------------------------------------

# stop_pid PID: SIGTERM a process this script started and reap it.
stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# bf_unmount MNT: end one blkfuse export (returns once flushed and exited); kill its daemon by pid
# if the unmount fails.
bf_unmount() {
    local mnt=$1 pid=${BF_PID[$1]:-} i
    if ! "$BLKFUSE" unmount "$mnt" >>"$LOGDIR/unmount.log" 2>&1; then
        fusermount3 -u -z "$mnt" >>"$LOGDIR/unmount.log" 2>&1 || umount -l "$mnt" 2>/dev/null || true
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    fi
    # the daemon is not our child: wait for its pid to go (unmount normally returns after it has)
    if [[ -n $pid ]]; then
        for ((i = 0; i < 300; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    local -a keep=()
    local m
    for m in ${BF_MOUNTS[@]+"${BF_MOUNTS[@]}"}; do [[ $m == "$mnt" ]] || keep+=("$m"); done
    BF_MOUNTS=(${keep[@]+"${keep[@]}"})
    unset "BF_PID[$mnt]"
}

# srv_stop PID: unmount a server's mountpoint (if it still is one) and stop the server.
srv_stop() {
    local pid=$1 mnt=${SRV_MNT[$1]:-}
    if [[ -n $mnt ]] && is_fuse_mounted "$mnt"; then
        fusermount3 -u "$mnt" >>"$LOGDIR/unmount.log" 2>&1 || true
    fi
    stop_pid "$pid"
    local -a keep=()
    local p
    for p in ${SRV_PIDS[@]+"${SRV_PIDS[@]}"}; do [[ $p == "$pid" ]] || keep+=("$p"); done
    SRV_PIDS=(${keep[@]+"${keep[@]}"})
    unset "SRV_MNT[$pid]"
}

# stop_exports: end every export and background process started so far.
stop_exports() {
    local i
    for ((i = ${#BF_MOUNTS[@]} - 1; i >= 0; i--)); do bf_unmount "${BF_MOUNTS[i]}"; done
    for ((i = ${#SRV_PIDS[@]} - 1; i >= 0; i--)); do srv_stop "${SRV_PIDS[i]}"; done
}

bench_cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    set +e
    declare -F rbd_stop_cluster >/dev/null && rbd_stop_cluster
    for ((i = ${#KMOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${KMOUNTS[i]}" 2>/dev/null || umount -l "${KMOUNTS[i]}" 2>/dev/null
    done
    for ((i = ${#LOOPDEVS[@]} - 1; i >= 0; i--)); do losetup -d "${LOOPDEVS[i]}" 2>/dev/null; done
    stop_exports
    if [[ -n $SCRATCH_FS ]]; then
        umount "$SCRATCH_FS" 2>/dev/null || umount -l "$SCRATCH_FS" 2>/dev/null
    fi
    [[ -n $SCRATCH_LOOP ]] && losetup -d "$SCRATCH_LOOP" 2>/dev/null
    [[ -n $SCRATCH_IMG ]] && rm -f "$SCRATCH_IMG"
    [[ -n $SCRATCH_DIR ]] && rm -rf "$SCRATCH_DIR"
    for i in ${EXTRA_DIRS[@]+"${EXTRA_DIRS[@]}"}; do rm -rf "$i"; done
    [[ -n $URING_RESTORE ]] && echo "$URING_RESTORE" >/sys/module/fuse/parameters/enable_uring
    exit "$rc"
}

# --- scratch storage ---------------------------------------------------------------------------

# scratch_settle: before a timed run, nothing left for the kernel to do that the run would wait
# for: no dirty pages (sync), and on ext4 in RAM no deleted blocks to discard (fstrim, which also
# gives their RAM back).  Then memory is warmed: on virtual machines that hand free memory back
# to the host at once (free page reporting; this bench's machine does), the first touch of a page
# freed earlier costs a fault in the host, and a workload that fills 1 GiB of page cache paid 1-5
# s for it, whichever server it went through.  Writing WARM_MIB of a tmpfs file and deleting it
# right before the run leaves that much memory faulted in and free, which the run's allocations
# take first.
WARM_MIB=3072
scratch_settle() {
    local avail
    sync
    if [[ -n $SCRATCH_FS ]]; then
        fstrim "$SCRATCH_FS" 2>/dev/null || true
    fi
    avail=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
    if ((avail > 2 * WARM_MIB)) && [[ -d /dev/shm && -w /dev/shm ]]; then
        head -c "${WARM_MIB}M" /dev/zero >"/dev/shm/blkfuse-bench-warm.$$" 2>/dev/null || true
        rm -f "/dev/shm/blkfuse-bench-warm.$$"
    fi
}

# scratch_setup KIND SIZE: make the directory the images live in and set W to it.
#   ext4   an ext4 file system whose blocks live in RAM (a sparse file in /dev/shm, loop-mounted):
#          the file system users keep images on, without a disk's noise.  Needs root.
#   tmpfs  a directory in /dev/shm (no RWF_NOWAIT, O_DIRECT differs: the less realistic one).
scratch_setup() {
    local kind=$1 size=$2
    case $kind in
    ext4)
        [[ $(id -u) -eq 0 ]] || die "-d ext4 needs root (a loop device and a mount); use -d tmpfs"
        if ! command -v losetup >/dev/null || ! command -v mkfs.ext4 >/dev/null; then
            die "-d ext4 needs losetup and mkfs.ext4 (Debian: util-linux, e2fsprogs); or use -d tmpfs"
        fi
        SCRATCH_DIR=$(mktemp -d "${BENCH_WORK:-/var/tmp}/blkfuse-bench.XXXXXX")
        SCRATCH_IMG=$(mktemp /dev/shm/blkfuse-bench.XXXXXX.ext4)
        truncate -s "$size" "$SCRATCH_IMG"
        mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0,nodiscard "$SCRATCH_IMG" ||
            die "mkfs.ext4 of $SCRATCH_IMG failed"
        SCRATCH_LOOP=$(losetup -f --show "$SCRATCH_IMG") || die "no free loop device for the scratch ext4"
        # No -o discard: ext4 would discard the blocks of each deleted image at its next journal
        # commit, in the middle of whatever is being timed then (1-3 s of stalls in a 1 s
        # workload, for blkfuse and qsd alike).  scratch_settle trims them between runs instead,
        # which gives their RAM back all the same.
        mount "$SCRATCH_LOOP" "$SCRATCH_DIR" || die "cannot mount $SCRATCH_LOOP on $SCRATCH_DIR"
        SCRATCH_FS=$SCRATCH_DIR
        W=$SCRATCH_DIR
        STORE_DESC="ext4 in RAM (loop device on /dev/shm, $size)"
        ;;
    tmpfs)
        SCRATCH_DIR=$(mktemp -d "${BENCH_WORK:-/dev/shm}/blkfuse-bench.XXXXXX")
        W=$SCRATCH_DIR
        STORE_DESC="$(stat -f -c %T "$W") ($W)"
        [[ $(stat -f -c %T "$W") == tmpfs ]] || say "bench: warning: $W is not on tmpfs"
        ;;
    *) die "unknown storage '$kind' (ext4 or tmpfs)" ;;
    esac
    LOGDIR=$W/logs
    mkdir -p "$LOGDIR" "$W/run"
    chmod 700 "$W/run"
    # daemons of this run are invisible to the user's own 'blkfuse list', and the other way round
    export XDG_RUNTIME_DIR=$W/run
}

# --- exports -----------------------------------------------------------------------------------

is_fuse_mounted() { [[ $(findmnt -n -o FSTYPE -M "$1" 2>/dev/null) == fuse* ]]; }

# wait_mounted MNT PID: until MNT is a FUSE mount, as long as PID lives (30 s at most).
wait_mounted() {
    local mnt=$1 pid=$2 i
    for ((i = 0; i < 300; i++)); do
        is_fuse_mounted "$mnt" && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# bf_mount [blkfuse mount options] IMAGE MNT: a blkfuse export (the command returns once it is
# live); records the daemon's pid in BF_PID[MNT].
bf_mount() {
    local mnt=${!#} pid
    rm -f "$mnt"
    # shellcheck disable=SC2086  # BF_OPTS: extra options from -o, split on purpose
    "$BLKFUSE" mount --log-file "$LOGDIR/blkfuse.log" $BF_OPTS "$@" </dev/null ||
        die "blkfuse mount $* failed (log: $LOGDIR/blkfuse.log)"
    BF_MOUNTS+=("$mnt")
    pid=$(stats_field "$mnt" pid)
    [[ -n $pid ]] || die "blkfuse stats --json $mnt shows no pid"
    BF_PID[$mnt]=$pid
}

# qsd_mount FMT IMAGE MNT: qemu-storage-daemon exporting IMAGE through FUSE, writable, with its
# defaults otherwise (host page cache, thread pool).  Sets QSD_PID.
qsd_mount() {
    local fmt=$1 img=$2 mnt=$3
    rm -f "$mnt"
    touch "$mnt"
    qemu-storage-daemon \
        --blockdev "driver=file,node-name=proto0,filename=$img" \
        --blockdev "driver=$fmt,node-name=fmt0,file=proto0" \
        --export "type=fuse,id=exp0,node-name=fmt0,mountpoint=$mnt,writable=on" \
        </dev/null >>"$LOGDIR/qsd.log" 2>&1 &
    QSD_PID=$!
    SRV_PIDS+=("$QSD_PID")
    SRV_MNT[$QSD_PID]=$mnt
    wait_mounted "$mnt" "$QSD_PID" || die "qemu-storage-daemon did not mount $mnt (log: $LOGDIR/qsd.log)"
}

# null_mount SIZE MNT: bench/nullserve (libfuse's loop, no I/O).  Sets NULL_PID.
null_mount() {
    local size=$1 mnt=$2
    rm -f "$mnt"
    touch "$mnt"
    "$NULLSERVE" -s "$size" "$mnt" </dev/null >>"$LOGDIR/nullserve.log" 2>&1 &
    NULL_PID=$!
    SRV_PIDS+=("$NULL_PID")
    SRV_MNT[$NULL_PID]=$mnt
    wait_mounted "$mnt" "$NULL_PID" || die "nullserve did not mount $mnt (log: $LOGDIR/nullserve.log)"
}

# stats_field MNT NAME: a plain (string, number or boolean) field of `blkfuse stats --json MNT`,
# "" if the export has none (older blkfuse).
stats_field() {
    "$BLKFUSE" stats --json "$1" | sed -n "s/^ *\"$2\": *\"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" | head -n 1
}

# --- measurements ------------------------------------------------------------------------------

# rss_kib PID FIELD: VmRSS or VmHWM (peak) of PID in KiB, "" if it is gone.
rss_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true; }

# mib KIB: KiB as MiB with one decimal ("?" for nothing).
mib() { if [[ -n ${1:-} ]]; then awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; else echo "?"; fi; }

# --- rounds ------------------------------------------------------------------------------------

# run_rounds RESULTS MEASURE "JOB ..." NAME...: for each JOB, ROUNDS rounds in which the exports
# NAME... take turns, the order rotating by one each round (so drift over the run falls on every
# export alike).  Each turn runs `MEASURE JOB NAME`, which sets IOPS (it runs in this shell, not
# in a subshell, so it may keep state between turns); IOPS is appended, followed by a space, to
# RESULTS[NAME,JOB] (RESULTS names the caller's associative array).
run_rounds() {
    local -n rr_res=$1
    local measure=$2 jobs=$3 job r i name
    shift 3
    local -a names=("$@")
    for job in $jobs; do
        for ((r = 0; r < ROUNDS; r++)); do
            for ((i = 0; i < ${#names[@]}; i++)); do
                name=${names[(i + r) % ${#names[@]}]}
                IOPS=
                "$measure" "$job" "$name"
                # shellcheck disable=SC2004 # an associative array (by name), not arithmetic
                rr_res[$name,$job]+="$IOPS "
            done
        done
        say "   $job done"
    done
}

# now_us: wall-clock microseconds, without forking.
now_us() { local t=${EPOCHREALTIME/./}; echo "$t"; }

# median: of the numbers on stdin, one a line.
median() {
    awk 'NF' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

# calc EXPR [var=value...]: awk arithmetic, e.g. calc 'a / b' a=1 b=2.
calc() {
    local expr=$1 args=() kv
    shift
    for kv in "$@"; do args+=(-v "$kv"); done
    awk "${args[@]}" "BEGIN { print ($expr) }"
}

# geomean: of the positive numbers on stdin ("-" if there are none).
geomean() { awk '$1 > 0 { s += log($1); n++ } END { if (n) printf "%.2f", exp(s / n); else print "-" }'; }
