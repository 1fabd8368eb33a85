# shellcheck shell=bash
# jobs.sh - sourced by bench/run: the fio jobs.  For one image format, the same fio job runs through
# four exports in turn, round after round (the order rotating each round, so drift over the run
# falls on every export alike):
#
#   blkfuse    the image, mounted by blkfuse (with bench/run -o's options)
#   qsd        a copy of the image, exported by qemu-storage-daemon's FUSE export (if installed)
#   nullserve  bench/nullserve.c: libfuse's loop answering without I/O
#   null:      blkfuse's null:SIZE driver: blkfuse's own transport answering without I/O
#
# The ceiling of a job is the better of the last two: no server that does I/O can beat a server
# that does none on the same FUSE transport.  A job is named KIND-BS-DEPTH: KIND seqread, seqwrite,
# randread or randwrite; BS a fio block size (4k, 1M); DEPTH qd1 (psync), qdN (libaio, N in
# flight) or Njobs (N psync processes).  Every job is O_DIRECT over the whole image, time-based.

JOBS_DEFAULT="seqread-1M-qd1 seqwrite-1M-qd1 randread-4k-qd1 randwrite-4k-qd1 randread-4k-qd32 randwrite-4k-qd32 randread-4k-4jobs"

# job_args NAME: the fio options of job NAME; fails for a name that is not KIND-BS-DEPTH.
job_args() {
    local kind bs depth rest rw engine=psync qd=1 nj=1
    IFS=- read -r kind bs depth rest <<<"$1"
    [[ -z $rest && $bs =~ ^[0-9]+[kKmM]?$ ]] || return 1
    case $kind in
    seqread) rw="read" ;;
    seqwrite) rw="write" ;;
    randread | randwrite) rw=$kind ;;
    *) return 1 ;;
    esac
    case $depth in
    qd1) ;;
    qd[1-9]*) qd=${depth#qd}; engine=libaio ;;
    [1-9]*jobs) nj=${depth%jobs} ;;
    *) return 1 ;;
    esac
    [[ $qd =~ ^[0-9]+$ && $nj =~ ^[0-9]+$ ]] || return 1
    echo "--rw=$rw --bs=$bs --ioengine=$engine --iodepth=$qd --numjobs=$nj"
}

# fio_turn JOB NAME: a turn of run_rounds: IOPS of fio JOB on the file of export NAME,
# ${file[NAME]} (the caller's associative array file).
# shellcheck disable=SC2034 # IOPS is what run_rounds reads
fio_turn() { IOPS=$(fio_iops "$1" "${file[$2]}"); }

# fio_iops JOB FILE: run JOB on FILE for $RUNTIME seconds; print its IOPS (reads + writes).
fio_iops() {
    local job=$1 file=$2 args out
    args=$(job_args "$job")
    # shellcheck disable=SC2086  # args: the job's options, split on purpose
    out=$(fio --name=bench --filename="$file" $args --direct=1 --size="$SIZE" \
        --runtime="$RUNTIME" --time_based --group_reporting \
        --output-format=terse --terse-version=3 2>>"$LOGDIR/fio.log") ||
        die "fio $job on $file failed (log: $LOGDIR/fio.log)"
    # terse v3: field 8 read IOPS, 49 write IOPS
    tail -n 1 <<<"$out" | awk -F';' '{ printf "%d\n", $8 + $49 }'
}

# jobs_images FMT: a.FMT (for qsd) and b.FMT (for blkfuse), SIZE of random data, every cluster
# allocated: reads are of real data and writes overwrite.
jobs_images() {
    local fmt=$1
    head -c "$SIZE" /dev/urandom >"$W/seed.raw"
    if [[ $fmt == raw ]]; then
        mv "$W/seed.raw" "$W/b.raw"
    else
        qemu-img convert -f raw -O "$fmt" "$W/seed.raw" "$W/b.$fmt"
        rm -f "$W/seed.raw"
    fi
    ((HAVE_QSD)) && cp "$W/b.$fmt" "$W/a.$fmt"
    scratch_settle
    return 0
}

# jobs_format FMT OUT [TITLE]: the jobs on a FMT image; appends its Markdown section to OUT, headed
# "fio jobs, FMT" or "fio jobs, TITLE".
jobs_format() {
    local fmt=$1 out=$2 title=${3:-$1} job
    local -a exps=(blkfuse)
    local -A file=() res=()
    local bf_pid bfnull_pid qsd_pid= how

    say "== fio jobs, $title: $fmt image of $SIZE, $ROUNDS round(s) of $RUNTIME s"
    jobs_images "$fmt"
    bf_mount -f "$fmt" "$W/b.$fmt" "$W/b.mnt"
    file[blkfuse]=$W/b.mnt
    bf_pid=${BF_PID[$W/b.mnt]}
    if ((HAVE_QSD)); then
        qsd_mount "$fmt" "$W/a.$fmt" "$W/a.mnt"
        file[qsd]=$W/a.mnt
        qsd_pid=$QSD_PID
        exps+=(qsd)
    fi
    null_mount "$SIZE" "$W/c.mnt"
    file[nullserve]=$W/c.mnt
    BF_OPTS=$NULL_OPTS bf_mount "null:$SIZE" "$W/d.mnt"
    file[null]=$W/d.mnt
    bfnull_pid=${BF_PID[$W/d.mnt]}
    exps+=(nullserve null)
    # the run's transport is that of its first export (the uring part switches it for itself)
    [[ -n $TRANSPORT ]] || TRANSPORT=$(stats_field "$W/b.mnt" transport)
    how=$(stats_field "$W/b.mnt" transport),$(stats_field "$W/b.mnt" passthrough)

    run_rounds res fio_turn "$JOBS" "${exps[@]}"

    {
        echo "### fio jobs, $title"
        echo
        echo "IOPS, median of $ROUNDS round(s) of $RUNTIME s; image $SIZE of random data, every cluster allocated."
        echo "ratio: blkfuse / qsd (above 1: blkfuse is faster); ceiling: the better of nullserve and"
        echo "blkfuse's null: (exports that do no I/O); null:/ns: blkfuse's transport against libfuse's."
        echo
        echo "| job | blkfuse | qsd | ratio | nullserve | null: | share of ceiling | null:/ns |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    } >>"$out"
    local b a c d ceil ratio share nr ratios="" shares="" nulls="" slow="" slow_r=""
    for job in $JOBS; do
        b=$(tr ' ' '\n' <<<"${res[blkfuse,$job]}" | median)
        c=$(tr ' ' '\n' <<<"${res[nullserve,$job]}" | median)
        d=$(tr ' ' '\n' <<<"${res[null,$job]}" | median)
        ceil=$(calc 'c > d ? c : d' c="$c" d="$d")
        share=$(calc 'x > 0 ? sprintf("%.0f", 100 * b / x) : 0' b="$b" x="$ceil")
        nr=$(calc 'c > 0 ? sprintf("%.2f", d / c) : 0' c="$c" d="$d")
        if ((HAVE_QSD)); then
            a=$(tr ' ' '\n' <<<"${res[qsd,$job]}" | median)
            ratio=$(calc 'a > 0 ? sprintf("%.2f", b / a) : 0' a="$a" b="$b")
            ratios+="$ratio "
            if [[ -z $slow_r ]] || (($(calc 'r < s' r="$ratio" s="$slow_r"))); then
                slow=$job slow_r=$ratio
            fi
        else
            a="-" ratio="-"
        fi
        shares+="$(calc 's / 100' s="$share") "
        nulls+="$nr "
        echo "| $job | $b | $a | $ratio | $c | $d | $share% | $nr |" >>"$out"
    done
    {
        echo
        if ((HAVE_QSD)); then
            echo "- geomean ratio blkfuse / qsd: **$(tr ' ' '\n' <<<"$ratios" | geomean)**" \
                "(slowest job: $slow, $slow_r)"
        fi
        echo "- geomean share of the ceiling: **$(calc 'g == "-" ? "-" : sprintf("%.0f%%", 100 * g)' \
            g="$(tr ' ' '\n' <<<"$shares" | geomean)")**"
        echo "- geomean null: / nullserve: $(tr ' ' '\n' <<<"$nulls" | geomean)"
        if [[ $how != , ]]; then
            echo "- blkfuse's export: transport ${how%,*}, passthrough ${how#*,}"
        fi
        echo -n "- peak RSS over these jobs: blkfuse $(mib "$(rss_kib "$bf_pid" VmHWM)") MiB"
        echo -n " (its null: export $(mib "$(rss_kib "$bfnull_pid" VmHWM)") MiB)"
        if ((HAVE_QSD)); then
            echo ", qsd $(mib "$(rss_kib "$qsd_pid" VmHWM)") MiB"
        else
            echo
        fi
        echo
    } >>"$out"
    stop_exports
    rm -f "$W/a.$fmt" "$W/b.$fmt"
}

# jobs_passthrough OUT: the jobs on a raw image exported with FUSE passthrough (the kernel reads and
# writes the image itself; root): the mount options that let every promise hold with it.  The
# ceiling stays that of servers answering in user space, so a share above 100% is what
# passthrough is for.
jobs_passthrough() {
    local BF_OPTS="$BF_OPTS -f raw --growable --stats=coarse --passthrough=on"
    jobs_format raw "$1" "raw, passthrough (--growable --stats=coarse --passthrough=on)"
}

# jobs_tmpfs OUT: the jobs on a raw image in a directory of /dev/shm (tmpfs refuses RWF_NOWAIT, so
# even page-cache hits cannot be served without leaving the request's thread), whatever -d says.
jobs_tmpfs() {
    local W
    W=$(mktemp -d /dev/shm/blkfuse-bench-tmpfs.XXXXXX)
    EXTRA_DIRS+=("$W")
    jobs_format raw "$1" "raw, images on tmpfs"
    rm -rf "$W"
}

# jobs_uring OUT: 4 KiB random reads at depths 1 and 32 with the fuse module's enable_uring on
# (switched back at the end of the run), so that blkfuse serves them over FUSE-over-io_uring; the
# null:/ns column is then blkfuse's io_uring transport against libfuse's /dev/fuse loop.
jobs_uring() {
    local JOBS=${URING_JOBS:-"randread-4k-qd1 randread-4k-qd32"}
    [[ -n $URING_RESTORE ]] || URING_RESTORE=$(cat /sys/module/fuse/parameters/enable_uring)
    echo Y >/sys/module/fuse/parameters/enable_uring
    jobs_format raw "$1" "raw, FUSE-over-io_uring (enable_uring on for this part)"
    echo "$URING_RESTORE" >/sys/module/fuse/parameters/enable_uring
}
