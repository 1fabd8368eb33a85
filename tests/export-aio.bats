#!/usr/bin/env bats
# export-aio.bats - the file driver's I/O engines (-o aio=io_uring|native|threads): an export
# works with each, the default falls back at run time where io_uring is refused, and a forced
# engine that cannot work is refused at mount with the reason.
#
# BLKFUSE_IO_URING=off stands in for a kernel or sysctl that refuses io_uring.

load helpers

setup() {
    export_setup
}

teardown() {
    blkfuse_teardown
    if [[ -n ${SHM_DIR:-} ]]; then
        rm -rf "$SHM_DIR"
    fi
}

# check_engine ENGINE MOUNT-ARGS...: random unaligned writes, an fsync, a hole punched and a
# range zeroed through an export mounted with MOUNT-ARGS; the export and, after unmount, the
# image equal a reference copy given the same changes; the log names ENGINE as the one used.
check_engine() {
    local engine=$1
    local -a stress=(--offset 5 --length 6M --seed 7 --ops 150 --size-range 1:20000)
    shift

    need_tool rwstress
    make_pattern "$IMG" 8M
    cp "$IMG" "$REF"
    blkfuse_mount -v "$@" "$IMG" "$MP"
    rwstress --file "$MP" "${stress[@]}" --verify
    rwstress --file "$REF" "${stress[@]}"
    python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); os.fsync(fd)' "$MP"
    fallocate --punch-hole --offset 1048576 --length 65536 "$MP"
    fallocate --punch-hole --offset 1048576 --length 65536 "$REF"
    fallocate --zero-range --offset 3000000 --length 70000 "$MP"
    fallocate --zero-range --offset 3000000 --length 70000 "$REF"
    cmp "$MP" "$REF"
    blkfuse unmount "$MP"
    cmp "$IMG" "$REF"
    grep -q "disk.img: I/O engine $engine" "$T/daemon.log"
}

require_io_uring() {
    [[ ${BLKFUSE_IO_URING:-} != off ]] || skip "BLKFUSE_IO_URING=off"
    [[ $(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo 0) == 0 ]] ||
        skip "io_uring is disabled by sysctl kernel.io_uring_disabled"
}

@test "aio=io_uring: the export works through the ring (default cache)" {
    require_io_uring
    check_engine io_uring -o aio=io_uring
}

@test "aio=io_uring: the export works through the ring (cache=none)" {
    require_io_uring
    check_engine io_uring --cache=none -o aio=io_uring
}

@test "aio=native: the export works through libaio (cache=none)" {
    check_engine "native (libaio)" --cache=none -o aio=native
}

@test "aio=threads: the export works through worker threads (default cache)" {
    check_engine threads -o aio=threads
}

@test "aio=threads: the export works through worker threads (cache=none)" {
    check_engine threads --cache=none -o aio=threads
}

@test "the default engine is io_uring where the kernel allows it" {
    require_io_uring
    check_engine io_uring
}

@test "where io_uring is refused, the default falls back to threads and libaio" {
    export BLKFUSE_IO_URING=off
    check_engine threads
    grep -q "io_uring not available (BLKFUSE_IO_URING=off)" "$T/daemon.log"
    check_engine "native (libaio)" --cache=none
}

@test "buffered writes are made inline where the file system refuses RWF_NOWAIT writes" {
    # $T is on ext4 or tmpfs, which refuse RWF_NOWAIT for buffered writes (6.18); a file system
    # that takes them (xfs, btrfs) never needs inline writes.
    python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
try:
    os.pwritev(fd, [b"x" * 4096], 0, os.RWF_NOWAIT)
except OSError as e:
    sys.exit(0 if e.errno == 95 else 1)
sys.exit(1)' "$T/probe" || skip "the file system of $T takes RWF_NOWAIT writes"
    local engine=io_uring   # the default engine's name in the log
    [[ ${BLKFUSE_IO_URING:-} != off &&
       $(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo 0) == 0 ]] || engine=threads
    check_engine $engine
    grep -q "disk.img: the file system refuses RWF_NOWAIT writes: buffered writes of up to 65536 bytes are made inline" "$T/daemon.log"
    : >"$T/daemon.log"
    check_engine $engine -o inline-write-max=1M
    grep -q "buffered writes of up to 1048576 bytes are made inline" "$T/daemon.log"
    : >"$T/daemon.log"
    check_engine $engine -o inline-write-max=0
    grep -q "disk.img: the file system refuses RWF_NOWAIT writes: buffered writes go to worker threads" "$T/daemon.log"
    : >"$T/daemon.log"
    check_engine threads -o aio=threads
    ! grep -q "made inline" "$T/daemon.log"
    run --separate-stderr blkfuse mount -o inline-write-max=lots "$IMG" "$MP"
    [ "$status" -ne 0 ]
    [[ $stderr == *"inline-write-max"* ]]
}

@test "reads from an image in memory (tmpfs) are made inline, and right" {
    [[ $(stat -f -c %T /dev/shm 2>/dev/null) == tmpfs ]] || skip "needs /dev/shm on tmpfs"
    need_tool rwstress
    SHM_DIR=$(mktemp -d /dev/shm/blkfuse-test.XXXXXX)     # removed by teardown
    IMG=$SHM_DIR/disk.img
    make_pattern "$IMG" 8M
    cp "$IMG" "$REF"
    blkfuse_mount -v "$IMG" "$MP"
    rwstress --file "$MP" --offset 5 --length 6M --seed 9 --ops 150 --size-range 1:70000 --verify
    rwstress --file "$REF" --offset 5 --length 6M --seed 9 --ops 150 --size-range 1:70000
    cmp "$MP" "$REF"
    dd if="$MP" bs=64k status=none | cmp - "$REF"
    blkfuse unmount "$MP"
    cmp "$IMG" "$REF"
    grep -q "disk.img: a file in memory that refuses RWF_NOWAIT reads: buffered reads of up to 65536 bytes are made inline" "$T/daemon.log"
}

@test "aio=io_uring where io_uring is refused fails at mount with the reason" {
    make_raw "$IMG" 1M
    export BLKFUSE_IO_URING=off
    run --separate-stderr blkfuse mount -o aio=io_uring "$IMG" "$MP"
    [ "$status" -ne 0 ]
    [[ $stderr == *"aio=io_uring: io_uring is not available here"*"use aio=native or aio=threads"* ]]
    ! is_mounted "$MP"
}

@test "aio=native without O_DIRECT and an unknown engine fail at mount" {
    make_raw "$IMG" 1M
    run --separate-stderr blkfuse mount -o aio=native "$IMG" "$MP"
    [ "$status" -ne 0 ]
    [[ $stderr == *"aio=native needs --cache=none or directsync"* ]]
    run --separate-stderr blkfuse mount -o aio=fast "$IMG" "$MP"
    [ "$status" -ne 0 ]
    [[ $stderr == *"unknown aio engine 'fast': use io_uring, native or threads"* ]]
    ! is_mounted "$MP"
}
