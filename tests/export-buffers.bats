#!/usr/bin/env bats
# export-buffers.bats - the request buffers of the /dev/fuse transport: while requests are large,
# a queue reads them into (at most two) buffers whose data area is a transparent huge page
# (fuse/transport-dev.c); small requests never make one; writes through either reach the image
# intact.

# run-tests: alone (huge pages for the daemon's buffers: other files' memory use could deny them)
load helpers

setup() {
    export_setup 8M
}

# huge_buffers PID: how many mappings of the daemon are the data area of a request buffer on a
# huge page: 2 MiB advised MADV_HUGEPAGE ("hg" in VmFlags; madvise splits it off its mapping).
huge_buffers() {
    local line len=0 n=0
    while read -r line; do
        if [[ $line =~ ^([0-9a-f]+)-([0-9a-f]+)\  ]]; then
            len=$((16#${BASH_REMATCH[2]} - 16#${BASH_REMATCH[1]}))
        elif [[ $line == VmFlags:* && $line == *" hg"* ]] && ((len == 2097152)); then
            n=$((n + 1))
        fi
    done <"/proc/$1/smaps"
    echo "$n"
}

@test "large requests are read into transparent huge pages, small ones are not; the data is intact" {
    [[ -r /sys/kernel/mm/transparent_hugepage/enabled ]] ||
        skip "the kernel has no transparent huge pages (CONFIG_TRANSPARENT_HUGEPAGE)"
    # One queue: the bound below is per queue.
    blkfuse_mount --transport=dev --queues=1 -f raw "$IMG" "$MP"
    pid=$(daemon_pid "$MP")
    [[ -n $pid ]]
    head -c 4M /dev/urandom >"$T/data"
    cp "$IMG" "$REF"
    # 4 KiB writes: no huge-page buffer.
    dd if="$T/data" of="$MP" bs=4k count=64 oflag=direct conv=notrunc,fsync status=none
    dd if="$T/data" of="$REF" bs=4k count=64 conv=notrunc status=none
    n=$(huge_buffers "$pid")
    echo "huge-page request buffers after 4 KiB writes: $n"
    ((n == 0))
    # 1 MiB writes: from the second on, into one (at most two per queue; one queue here).
    dd if="$T/data" of="$MP" bs=1M count=3 seek=1 skip=1 oflag=direct conv=notrunc,fsync status=none
    dd if="$T/data" of="$REF" bs=1M count=3 seek=1 skip=1 conv=notrunc status=none
    n=$(huge_buffers "$pid")
    echo "huge-page request buffers after 1 MiB writes: $n"
    ((n >= 1 && n <= 2))
    # Small requests again, some of them read into the huge-page buffer: intact too.
    dd if="$T/data" of="$MP" bs=512 count=8 seek=9000 skip=9000 oflag=direct conv=notrunc \
        status=none
    dd if="$T/data" of="$REF" bs=512 count=8 seek=9000 skip=9000 conv=notrunc status=none
    cmp "$MP" "$REF"
    blkfuse unmount "$MP"
    cmp "$IMG" "$REF"
}
