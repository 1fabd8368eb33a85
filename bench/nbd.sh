# shellcheck shell=bash
# nbd.sh - sourced by bench/run: the "nbd" part.  One image of SIZE random data is served by nbdkit
# (file plugin) on a unix socket; the same fio jobs (4 KiB random reads at depth 1 and 32 by
# default, -J) run, round after round in rotating order, through:
#
#   blkfuse    blkfuse mount nbd+unix:///?socket=... (one connection)
#   blkfuse-2c the same with -o connections=2 (nbdkit offers multi-conn): one queue thread, two
#              connections
#   blkfuse-2q the same with --queues=2: two queue threads, each with its own connection
#   qsd        qemu-storage-daemon's FUSE export of the same NBD image, which it opens itself
#              (--blockdev driver=nbd), if installed
#
# What the issue asks of it: depth 32 at least 3x depth 1 (requests really are in flight together
# on the connection), at least 2x qsd at depth 32, and two connections faster than one.

NBD_JOBS_DEFAULT="randread-4k-qd1 randread-4k-qd32"

# nbd_serve IMAGE SOCKET: nbdkit serving IMAGE on SOCKET.  Sets NBD_SRV_PID.
nbd_serve() {
    local img=$1 sock=$2
    rm -f "$sock"
    nbdkit -f -U "$sock" file "$img" </dev/null >>"$LOGDIR/nbdkit.log" 2>&1 &
    NBD_SRV_PID=$!
    SRV_PIDS+=("$NBD_SRV_PID")
    local i
    for ((i = 0; i < 300; i++)); do
        [[ -S $sock ]] && return 0
        kill -0 "$NBD_SRV_PID" 2>/dev/null || break
        sleep 0.05
    done
    die "nbdkit did not listen on $sock (log: $LOGDIR/nbdkit.log)"
}

# qsd_nbd_mount SOCKET MNT: qemu-storage-daemon's FUSE export of the NBD image on SOCKET.
qsd_nbd_mount() {
    local sock=$1 mnt=$2
    rm -f "$mnt"
    touch "$mnt"
    qemu-storage-daemon \
        --blockdev "driver=nbd,node-name=nbd0,server.type=unix,server.path=$sock" \
        --export "type=fuse,id=exp0,node-name=nbd0,mountpoint=$mnt,writable=on" \
        </dev/null >>"$LOGDIR/qsd.log" 2>&1 &
    QSD_PID=$!
    SRV_PIDS+=("$QSD_PID")
    SRV_MNT[$QSD_PID]=$mnt
    wait_mounted "$mnt" "$QSD_PID" || die "qemu-storage-daemon did not mount $mnt (log: $LOGDIR/qsd.log)"
}

# nbd_run OUT: the jobs over NBD; appends a Markdown section to OUT.
nbd_run() {
    local out=$1 sock=$W/nbd.sock job
    local -a exps=(blkfuse blkfuse-2c blkfuse-2q)
    local -A file=() res=()

    say "== NBD: fio jobs over nbdkit on a unix socket, image of $SIZE, $ROUNDS round(s) of $RUNTIME s"
    head -c "$SIZE" /dev/urandom >"$W/nbd.raw"
    nbd_serve "$W/nbd.raw" "$sock"
    bf_mount -f raw "nbd+unix:///?socket=$sock" "$W/n1.mnt"
    file[blkfuse]=$W/n1.mnt
    bf_mount -f raw -o connections=2 "nbd+unix:///?socket=$sock" "$W/n2.mnt"
    file[blkfuse-2c]=$W/n2.mnt
    bf_mount -f raw --queues=2 "nbd+unix:///?socket=$sock" "$W/n2q.mnt"
    file[blkfuse-2q]=$W/n2q.mnt
    if ((HAVE_QSD)); then
        qsd_nbd_mount "$sock" "$W/nq.mnt"
        file[qsd]=$W/nq.mnt
        exps+=(qsd)
    fi

    run_rounds res fio_turn "$NBD_JOBS" "${exps[@]}"

    {
        echo "### fio jobs over NBD"
        echo
        echo "IOPS, median of $ROUNDS round(s) of $RUNTIME s; a raw image of $SIZE of random data served"
        echo "by nbdkit (file plugin) on a unix socket; blkfuse with one connection, with two on one"
        echo "queue (\`-o connections=2\`) and with two queues of one connection each (\`--queues=2\`),"
        echo "and qemu-storage-daemon's FUSE export of the same NBD image."
        echo
        echo "| job | blkfuse | blkfuse 2 conns | blkfuse 2 queues | qsd | blkfuse / qsd |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    } >>"$out"
    local b b2 bq a ratio
    local -A med=()
    for job in $NBD_JOBS; do
        b=$(tr ' ' '\n' <<<"${res[blkfuse,$job]}" | median)
        b2=$(tr ' ' '\n' <<<"${res[blkfuse-2c,$job]}" | median)
        bq=$(tr ' ' '\n' <<<"${res[blkfuse-2q,$job]}" | median)
        med[blkfuse,$job]=$b med[blkfuse-2c,$job]=$b2 med[blkfuse-2q,$job]=$bq
        if ((HAVE_QSD)); then
            a=$(tr ' ' '\n' <<<"${res[qsd,$job]}" | median)
            ratio=$(calc 'a > 0 ? sprintf("%.2f", b / a) : 0' a="$a" b="$b")
        else
            a="-" ratio="-"
        fi
        echo "| $job | $b | $b2 | $bq | $a | $ratio |" >>"$out"
    done
    echo >>"$out"
    if [[ -n ${med[blkfuse,randread-4k-qd1]:-} && -n ${med[blkfuse,randread-4k-qd32]:-} ]]; then
        echo "- blkfuse randread-4k qd32 / qd1: **$(calc 'a > 0 ? sprintf("%.2f", b / a) : 0' \
            a="${med[blkfuse,randread-4k-qd1]}" b="${med[blkfuse,randread-4k-qd32]}")**" \
            "(the issue asks for at least 3)" >>"$out"
    fi
    for job in $NBD_JOBS; do
        echo "- $job, 2 connections / 1: $(calc 'a > 0 ? sprintf("%.2f", b / a) : 0' \
            a="${med[blkfuse,$job]}" b="${med[blkfuse-2c,$job]}"); 2 queues / 1:" \
            "$(calc 'a > 0 ? sprintf("%.2f", b / a) : 0' \
            a="${med[blkfuse,$job]}" b="${med[blkfuse-2q,$job]}")" >>"$out"
    done
    echo >>"$out"
    stop_exports
    rm -f "$W/nbd.raw"
}
