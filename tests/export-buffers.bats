#!/usr/bin/env bats
# export-buffers.bats - the request buffers of the /dev/fuse transport: the first ones of a queue
# have their data area on a transparent huge page (fuse/transport-dev.c), and large writes that
# land there reach the image intact.

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

@test "the first request buffers of a /dev/fuse queue are on transparent huge pages; 1 MiB writes through them are intact" {
    [[ -r /sys/kernel/mm/transparent_hugepage/enabled ]] ||
        skip "the kernel has no transparent huge pages (CONFIG_TRANSPARENT_HUGEPAGE)"
    blkfuse_mount --transport=dev -f raw "$IMG" "$MP"
    pid=$(daemon_pid "$MP")
    [[ -n $pid ]]
    head -c 3M /dev/urandom >"$T/data"
    cp "$IMG" "$REF"
    dd if="$T/data" of="$MP" bs=1M oflag=direct conv=notrunc,fsync status=none
    dd if="$T/data" of="$REF" bs=1M conv=notrunc status=none
    # The handshake's request and the writes: at least one buffer, at most FUSE_DEV_HUGE_BUFS
    # per queue (one queue).
    n=$(huge_buffers "$pid")
    echo "huge-page request buffers: $n"
    ((n >= 1 && n <= 2))
    cmp "$MP" "$REF"
    blkfuse unmount "$MP"
    cmp "$IMG" "$REF"
}
