# shellcheck shell=bash
# workloads.sh - sourced by bench/run: what users do with an exported image, timed end to end,
# blkfuse against qemu-storage-daemon's FUSE export on the same image (rounds interleaved, medians).
# Each run starts from a fresh image and its result is checked afterwards (untimed); a wrong result
# stops the bench.
#
#   restore  dd 1 GiB of random data into an empty 4 GiB image through the export (O_DIRECT, 1 MiB
#            blocks, fsync at the end): allocating writes
#   backup   cp --sparse=always of an 8 GiB image holding 1 GiB in 16 extents of 64 MiB:
#            SEEK_DATA/SEEK_HOLE and sequential reads; the copy must hold the image's contents
#   convert  qemu-img convert -O qcow2 from the export of that same image
#   loopfs   an empty 2 GiB image -> losetup -> mkfs.ext4 -> mount -> untar 2,000 files (64 MiB) ->
#            umount -> e2fsck -fn (root only); checked: qemu-img check, and the files read back
#            through a read-only export equal the tar

WORKLOADS_DEFAULT="restore backup convert loopfs"

# kmount DEV DIR [OPTIONS] / kumount DIR, loop_attach FILE [-r] / loop_detach DEV: kernel mounts and
# loop devices, recorded for the clean-up while they exist (undone in the reverse order).
kmount() {
    mkdir -p "$2"
    mount ${3:+-o "$3"} "$1" "$2" || return 1
    KMOUNTS+=("$2")
}
kumount() {
    umount "$1" || return 1
    unset 'KMOUNTS[-1]'
}
loop_attach() { # FILE [-r]: sets LOOPDEV (not a $(...): the record must stay in this shell)
    LOOPDEV=
    LOOPDEV=$(losetup -f --show ${2:+"$2"} "$1") || return 1
    LOOPDEVS+=("$LOOPDEV")
}
loop_detach() { # DEV: detached once, whatever happens (its number may be someone else's after)
    unset 'LOOPDEVS[-1]'
    losetup -d "$1"
}

# wl_inputs "WORKLOAD ...": made once, what those workloads need: 1 GiB of random data (restore);
# the 8 GiB image with 16 extents, as qcow2 and as a sparse raw file (backup, convert); a tar of
# 2,000 files of 32 KiB in 20 directories (loopfs).
wl_inputs() {
    local i args=() d
    mkdir -p "$W/wl"
    if [[ " $1 " == *" restore "* ]]; then
        head -c 1G /dev/urandom >"$W/wl/data.raw"
    fi
    if [[ " $1 " == *" backup "* || " $1 " == *" convert "* ]]; then
        qemu-img create -q -f qcow2 "$W/wl/sparse.qcow2" 8G
        for ((i = 0; i < 16; i++)); do args+=(-c "write -q -P $((i + 1)) $((i * 512))M 64M"); done
        qemu-io -f qcow2 "${args[@]}" "$W/wl/sparse.qcow2" >/dev/null
        qemu-img convert -f qcow2 -O raw -S 4k "$W/wl/sparse.qcow2" "$W/wl/sparse.raw"
    fi
    if [[ " $1 " == *" loopfs "* ]]; then
        for ((d = 1; d <= 20; d++)); do
            mkdir -p "$W/wl/tree/d$d"
            head -c $((100 * 32768)) /dev/urandom | split -b 32768 -d -a 3 - "$W/wl/tree/d$d/f"
        done
        tar -C "$W/wl" -cf "$W/wl/tree.tar" tree
        rm -rf "$W/wl/tree"
    fi
}

# run_WORKLOAD MNT FMT: one timed run through the export MNT.
run_restore() { dd if="$W/wl/data.raw" of="$1" bs=1M oflag=direct conv=notrunc,fsync status=none; }
run_backup() { cp --sparse=always "$1" "$W/wl/out.raw"; }
run_convert() { qemu-img convert -f raw -O qcow2 "$1" "$W/wl/out.qcow2"; }
run_loopfs() {
    local dev rc=0
    loop_attach "$1" || return 1
    dev=$LOOPDEV
    { mkfs.ext4 -q -F "$dev" && kmount "$dev" "$W/wl/fs" && tar -xf "$W/wl/tree.tar" -C "$W/wl/fs" &&
        kumount "$W/wl/fs" && e2fsck -fn "$dev" >>"$LOGDIR/e2fsck.log" 2>&1; } || rc=1
    loop_detach "$dev" || rc=1
    return $rc
}

# check_WORKLOAD IMAGE FMT: the result of the run that changed (or read) IMAGE is right.
check_restore() { qemu-img compare -q -f raw -F "$2" "$W/wl/data.raw" "$1"; }
check_backup() {
    local rc=0
    qemu-img compare -q -f raw -F "$2" "$W/wl/out.raw" "$W/wl/sparse.$2" || rc=1
    rm -f "$W/wl/out.raw"
    return $rc
}
check_convert() {
    local rc=0
    qemu-img compare -q -f qcow2 -F "$2" "$W/wl/out.qcow2" "$W/wl/sparse.$2" || rc=1
    rm -f "$W/wl/out.qcow2"
    return $rc
}
check_loopfs() {
    local img=$1 fmt=$2 dev rc=0
    if [[ $fmt == qcow2 ]]; then
        qemu-img check -q "$img" || return 1
    fi
    BF_OPTS='' bf_mount -r -f "$fmt" "$img" "$W/wl/check.mnt"
    loop_attach "$W/wl/check.mnt" -r || rc=1
    dev=${LOOPDEV:-}
    if ((rc == 0)); then
        if kmount "$dev" "$W/wl/fs" ro; then
            tar -df "$W/wl/tree.tar" -C "$W/wl/fs" >>"$LOGDIR/tar-compare.log" 2>&1 || rc=1
            kumount "$W/wl/fs" || rc=1
        else
            rc=1
        fi
        loop_detach "$dev" || rc=1
    fi
    bf_unmount "$W/wl/check.mnt"
    return $rc
}

# wl_fresh WORKLOAD FMT IMAGE: the image the workload starts from.
wl_fresh() {
    local fmt=$2 img=$3 size=
    case $1 in
    restore) size=4G ;;
    loopfs) size=2G ;;
    esac
    if [[ -z $size ]]; then
        cp --sparse=always "$W/wl/sparse.$fmt" "$img"
    elif [[ $fmt == raw ]]; then
        rm -f "$img"
        truncate -s "$size" "$img"
    else
        qemu-img create -q -f "$fmt" "$img" "$size"
    fi
}

# wl_timed WHO WORKLOAD FMT: one run through WHO's export (blkfuse or qsd), checked; sets SECS.
wl_timed() {
    local who=$1 wl=$2 fmt=$3 img=$W/wl/w.$3 mnt=$W/wl/e.mnt t0 t1
    wl_fresh "$wl" "$fmt" "$img"
    if [[ $who == qsd ]]; then
        qsd_mount "$fmt" "$img" "$mnt"
    else
        bf_mount -f "$fmt" "$img" "$mnt"
    fi
    scratch_settle  # nothing of the previous run left to write back or discard during this one
    t0=$(now_us)
    "run_$wl" "$mnt" "$fmt" || die "workload $wl ($fmt) failed through $who (logs: $LOGDIR)"
    t1=$(now_us)
    stop_exports
    "check_$wl" "$img" "$fmt" || die "workload $wl ($fmt) through $who: wrong result (logs: $LOGDIR)"
    rm -f "$img"
    SECS=$(calc 'sprintf("%.3f", (b - a) / 1e6)' a="$t0" b="$t1")
}

# workloads_run OUT: every workload for every format of WL_FORMATS; appends the section to OUT.
workloads_run() {
    local out=$1 wl fmt r who speedups="" list=""
    local -a A B order
    local a b s

    for wl in $WORKLOADS; do
        if [[ $wl == loopfs && $(id -u) -ne 0 ]]; then
            note "loopfs skipped: it needs root (losetup, mount)"
            continue
        fi
        list+="$wl "
    done
    [[ -n $list ]] || return 0
    say "== workloads: $list($WL_FORMATS), $ROUNDS round(s)"
    wl_inputs "$list"
    {
        echo "### Workloads"
        echo
        echo "Seconds, median of $ROUNDS round(s), each from a fresh image, each result checked;"
        echo "speedup: qsd time / blkfuse time (above 1: blkfuse is faster)."
        echo
        echo "| workload | format | blkfuse s | qsd s | speedup |"
        echo "| --- | --- | ---: | ---: | ---: |"
    } >>"$out"
    for wl in $list; do
        for fmt in $WL_FORMATS; do
            A=() B=()
            for ((r = 0; r < ROUNDS; r++)); do
                order=(blkfuse)
                if ((HAVE_QSD)); then
                    ((r % 2)) && order=(blkfuse qsd) || order=(qsd blkfuse)
                fi
                for who in "${order[@]}"; do
                    wl_timed "$who" "$wl" "$fmt"
                    if [[ $who == qsd ]]; then A+=("$SECS"); else B+=("$SECS"); fi
                done
            done
            b=$(printf '%s\n' "${B[@]}" | median)
            if ((HAVE_QSD)); then
                a=$(printf '%s\n' "${A[@]}" | median)
                s=$(calc 'b > 0 ? sprintf("%.2f", a / b) : 0' a="$a" b="$b")
                speedups+="$s "
            else
                a="-" s="-"
            fi
            echo "| $wl | $fmt | $b | $a | $s |" >>"$out"
            say "   $wl ($fmt): blkfuse $b s, qsd $a s"
        done
    done
    {
        echo
        if ((HAVE_QSD)); then
            echo "- geomean speedup blkfuse vs qsd: **$(tr ' ' '\n' <<<"$speedups" | geomean)**"
            echo
        fi
    } >>"$out"
    rm -rf "$W/wl"
}
