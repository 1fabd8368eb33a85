# shellcheck shell=bash
# backup.sh - sourced by bench/run: incremental backups with persistent dirty bitmaps.
#
# The nightly script of README.md ("Incremental backups from a shell script", taken from there as
# the test tests/qcow2-bitmap-backup.bats takes it) backs up an 8 GiB qcow2 holding 1 GiB in 16
# extents: night 1 is the full backup, then QEMU (qemu-io) writes 64 MiB in 1,024 random 64 KiB
# pieces, and night 2 copies only what bitmap backup-1 says changed.  Each round starts from a
# fresh copy of the image; night 2's chain is checked against the image with qemu-img compare.

# backup_image: $W/bk/src.qcow2, the image every round starts from.
backup_image() {
    local i args=()
    mkdir -p "$W/bk"
    qemu-img create -q -f qcow2 "$W/bk/src.qcow2" 8G
    for ((i = 0; i < 16; i++)); do args+=(-c "write -q -P $((i + 1)) $((i * 512))M 64M"); done
    qemu-io -f qcow2 "${args[@]}" "$W/bk/src.qcow2" >/dev/null
    awk '/^# blkfuse-backup IMAGE DIR:/ { on = 1; print prev } on && /^```$/ { exit }
         on { print } { prev = $0 }' "$TOP/README.md" >"$W/bk/backup.sh"
    [[ -s $W/bk/backup.sh ]] || die "no backup script found in README.md"
}

# backup_changes IMAGE: 64 MiB of new data at 1,024 random 64 KiB-aligned offsets (seeded).
backup_changes() {
    local i args=()
    RANDOM=$1
    for ((i = 0; i < 1024; i++)); do
        args+=(-c "write -q -P $((i % 200 + 20)) $(( ((RANDOM << 15 | RANDOM) % 131072) * 65536 )) 64k")
    done
    qemu-io -f qcow2 "${args[@]}" "$2" >/dev/null
}

# backup_night IMAGE DIR: one run of the script, timed; sets SECS.  The script finds blkfuse on
# PATH: the one measured.
backup_night() {
    local t0 t1
    t0=$(now_us)
    PATH="$(dirname "$BLKFUSE"):$PATH" sh "$W/bk/backup.sh" "$1" "$2" >>"$LOGDIR/backup.log" 2>&1 ||
        die "backup script failed on $1 (log: $LOGDIR/backup.log)"
    t1=$(now_us)
    SECS=$(calc 'sprintf("%.3f", (b - a) / 1e6)' a="$t0" b="$t1")
}

# backup_run OUT: ROUNDS rounds of full + incremental; appends the section to OUT.
backup_run() {
    local out=$1 r img dir full=() incr=() f i ratio
    say "== incremental backup: 8 GiB qcow2 with 1 GiB of data, 64 MiB changed, $ROUNDS round(s)"
    backup_image
    for ((r = 0; r < ROUNDS; r++)); do
        img=$W/bk/vm.qcow2 dir=$W/bk/chain
        rm -rf "$dir" && mkdir -p "$dir"
        cp --sparse=always "$W/bk/src.qcow2" "$img"
        scratch_settle
        backup_night "$img" "$dir"
        full+=("$SECS")
        backup_changes $((r + 1)) "$img"
        scratch_settle
        backup_night "$img" "$dir"
        incr+=("$SECS")
        qemu-img compare -q -f qcow2 -F qcow2 "$dir/2.qcow2" "$img" ||
            die "incremental backup: night 2's chain differs from the image"
        say "   round $((r + 1)): full ${full[r]} s, incremental ${incr[r]} s"
    done
    f=$(printf '%s\n' "${full[@]}" | median)
    i=$(printf '%s\n' "${incr[@]}" | median)
    ratio=$(calc 'sprintf("%.3f", b / a)' a="$f" b="$i")
    {
        echo "### Incremental backup"
        echo
        echo "README.md's nightly script on an 8 GiB qcow2 holding 1 GiB: night 1 (full) and night 2"
        echo "after QEMU wrote 64 MiB in 1,024 random 64 KiB pieces (only what bitmap backup-1 marks"
        echo "is copied); seconds, median of $ROUNDS round(s), night 2's chain checked against the image."
        echo
        echo "| full backup s | incremental s | incremental / full |"
        echo "| ---: | ---: | ---: |"
        printf '| %s | %s | %s |\n' "$f" "$i" "$ratio"
        echo
    } >>"$out"
    rm -rf "$W/bk"
}
