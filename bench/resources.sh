# shellcheck shell=bash
# resources.sh - sourced by bench/run: what an export costs besides time.
#
#   mount time   `blkfuse mount` (it returns once the file is live) of a sparse 1 TiB qcow2 against
#                a 64 MiB one, and of a 1 TiB qcow2 with an L2 table for every 512 MiB; rounds
#                interleaved, medians.  The unmount is not timed.
#   flat RSS     the daemon's resident memory while fio reads 4 KiB blocks at random offsets over the
#                whole 1 TiB (libaio, 32 in flight), sampled every second: on the sparse image (no
#                L2 tables) and on the one with 2,048 L2 tables (128 MiB of metadata, far more than
#                the metadata cache), where reads at random offsets hit every table many times.
# The peak RSS during the fio jobs is in the jobs' sections.

# big_images: tiny.qcow2 (64 MiB), sparse.qcow2 (1 TiB, no L2 table), l2.qcow2 (1 TiB, 4 KiB
# written every 512 MiB: each of its 2,048 L2 tables exists).
big_images() {
    local i args=()
    mkdir -p "$W/res"
    qemu-img create -q -f qcow2 "$W/res/tiny.qcow2" 64M
    qemu-img create -q -f qcow2 "$W/res/sparse.qcow2" 1T
    qemu-img create -q -f qcow2 "$W/res/l2.qcow2" 1T
    for ((i = 0; i < 2048; i++)); do args+=(-c "write -q -P 7 $((i * 512))M 4k"); done
    qemu-io -f qcow2 "${args[@]}" "$W/res/l2.qcow2" >/dev/null
}

# mount_times OUT: median time of `blkfuse mount` for each image.
mount_times() {
    local out=$1 r img t0 t1 n=$MOUNT_ROUNDS
    local -A times=() med=()
    for ((r = 0; r < n; r++)); do
        for img in tiny sparse l2; do
            rm -f "$W/res/m.mnt"
            t0=$(now_us)
            # shellcheck disable=SC2086  # BF_OPTS: extra options from -o, split on purpose
            "$BLKFUSE" mount --log-file "$LOGDIR/blkfuse.log" $BF_OPTS -f qcow2 "$W/res/$img.qcow2" \
                "$W/res/m.mnt" </dev/null || die "blkfuse mount of $img.qcow2 failed (log: $LOGDIR/blkfuse.log)"
            t1=$(now_us)
            BF_MOUNTS+=("$W/res/m.mnt")
            times[$img]+="$(calc '(b - a) / 1000' a="$t0" b="$t1") "
            bf_unmount "$W/res/m.mnt"
        done
    done
    for img in tiny sparse l2; do
        med[$img]=$(tr ' ' '\n' <<<"${times[$img]}" | median)
    done
    {
        echo "### Mount time"
        echo
        echo "\`blkfuse mount\` until the file is live, median of $n round(s), milliseconds."
        echo
        echo "| qcow2 image | mount ms | slower than 64 MiB by |"
        echo "| --- | ---: | ---: |"
        for img in tiny sparse l2; do
            printf '| %s | %.1f | %s |\n' "$(img_desc "$img")" "${med[$img]}" \
                "$(calc 'sprintf("%.1f ms", x - t)' x="${med[$img]}" t="${med[tiny]}")"
        done
        echo
    } >>"$out"
    say "   mount ms: 64M ${med[tiny]}, 1T sparse ${med[sparse]}, 1T with L2 tables ${med[l2]}"
}

img_desc() {
    case $1 in
    tiny) echo "64 MiB, empty" ;;
    sparse) echo "1 TiB, sparse (no L2 table)" ;;
    l2) echo "1 TiB, an L2 table for every 512 MiB" ;;
    esac
}

# rss_run IMG OUT: RSS of the daemon while fio reads at random over the whole image for RSS_SECS.
rss_run() {
    local img=$1 out=$2 mnt=$W/res/r.mnt pid fio_pid start i s n=0 kib peak
    local -a samples=()
    bf_mount -f qcow2 "$W/res/$img.qcow2" "$mnt"
    pid=${BF_PID[$mnt]}
    start=$(rss_kib "$pid" VmRSS)
    fio --name=rss --filename="$mnt" --rw=randread --bs=4k --ioengine=libaio --iodepth=32 --direct=1 \
        --norandommap --random_generator=tausworthe64 --runtime="$RSS_SECS" --time_based \
        --output-format=terse --terse-version=3 >"$W/res/fio.out" 2>>"$LOGDIR/fio.log" &
    fio_pid=$!
    SRV_PIDS+=("$fio_pid")
    while kill -0 "$fio_pid" 2>/dev/null; do
        sleep 1
        kib=$(rss_kib "$pid" VmRSS)
        [[ -n $kib ]] && samples+=("$kib")
    done
    wait "$fio_pid" || die "fio random reads on $img.qcow2 failed (log: $LOGDIR/fio.log)"
    unset 'SRV_PIDS[-1]'
    peak=$(rss_kib "$pid" VmHWM)
    n=$(awk -F';' '{ printf "%d", $6 / 4 }' "$W/res/fio.out")    # field 6: KiB read
    bf_unmount "$mnt"
    s=${#samples[@]}
    ((s >= 4)) || die "fio on $img.qcow2 ran for less than 4 s: raise --rss-seconds"
    # RSS after mount | at 1/4, 1/2, 3/4 and the end of the run | peak | growth over the last 3/4
    local q1=${samples[s / 4]} q2=${samples[s / 2]} q3=${samples[3 * s / 4]} q4=${samples[s - 1]}
    local grow verdict
    grow=$(printf '%s\n' "${samples[@]:s/4}" | awk -v b="$q1" '$1 > m { m = $1 } END { printf "%.1f", (m - b) / 1024 }')
    verdict=$(calc 'g <= 1 ? "flat" : "grows"' g="$grow")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s MiB, %s |\n' "$(img_desc "$img")" "$n" \
        "$(mib "$start")" "$(mib "$q1")" "$(mib "$q2")" "$(mib "$q3")" "$(mib "$q4")" "$(mib "$peak")" \
        "$grow" "$verdict" >>"$out"
    say "   RSS on $img: $(mib "$start") MiB after mount, $(mib "$q4") at the end, peak $(mib "$peak"): $verdict"
}

# resources_run OUT: mount times and flat RSS; appends the section to OUT.
resources_run() {
    local out=$1
    say "== resources: mount time of 1 TiB qcow2, RSS over random reads of 1 TiB ($RSS_SECS s)"
    big_images
    mount_times "$out"
    {
        echo "### RSS while random reads cover 1 TiB"
        echo
        echo "blkfuse daemon's RSS (MiB): after the mount, then at a quarter, half, three quarters and the"
        echo "end of $RSS_SECS s of 4 KiB reads at random offsets over the whole 1 TiB (libaio, 32 in flight);"
        echo "growth: the largest sample after the first quarter minus that quarter's (flat: at most 1 MiB)."
        echo
        echo "| qcow2 image | reads | mounted | 1/4 | 1/2 | 3/4 | end | peak | growth |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    } >>"$out"
    rss_run sparse "$out"
    rss_run l2 "$out"
    echo >>"$out"
    rm -rf "$W/res"
}
