#!/usr/bin/env bats
# export-passthrough.bats - --passthrough: the kernel reads and writes the image itself (the
# export's own read and write counters stay 0 while the data flows), the data and writes are the
# image's, the promises that still hold (read-only, the end of a growable file, the image lock),
# each refusal of --passthrough=on with its reason, and auto falling back silently.

load helpers
load control-helpers

setup() {
    export_setup 8M
}

# The options with which every rule holds (as root).
PT_OPTS=(-f raw --growable --stats=coarse)

# require_passthrough: skip unless root and the kernel offers FUSE passthrough.
require_passthrough() {
    require_root
    local out status=0
    make_pattern "$T/probe.img" 64K
    out=$(blkfuse mount --log-file "$T/probe.log" "${PT_OPTS[@]}" --passthrough=on \
          "$T/probe.img" "$T/probe.mnt" 3>&- 2>&1) || status=$?
    if ((status != 0)); then
        [[ $out == *"does not offer FUSE passthrough"* ]] && skip "the kernel has no FUSE passthrough"
        echo "require_passthrough: $out" >&2
        return 1
    fi
    blkfuse unmount "$T/probe.mnt"
}

# pt_json MOUNTPOINT KEY...: a member of the export's `blkfuse stats --json`.
pt_json() {
    local mp=$1
    shift
    blkfuse stats --json "$mp" | json_get "$@"
}

image_unchanged() {
    [ "$(sha256sum <"$IMG")" = "$SUM" ]
}

@test "passthrough: reads never reach blkfuse, and the data is the image's" {
    require_passthrough
    blkfuse_mount "${PT_OPTS[@]}" --passthrough=on "$IMG" "$MP"
    [ "$(pt_json "$MP" passthrough)" = True ]
    cmp "$MP" "$IMG"
    cmp <(dd if="$MP" bs=64k iflag=direct status=none) "$IMG"
    [ "$(pt_json "$MP" stats read ops)" -eq 0 ]
    [ "$(pt_json "$MP" stats read bytes)" -eq 0 ]
    blkfuse unmount "$MP"

    # The same reads without passthrough are counted: the check above can fail.
    blkfuse_mount "${PT_OPTS[@]}" --passthrough=off "$IMG" "$MP"
    [ "$(pt_json "$MP" passthrough)" = False ]
    [ "$(pt_json "$MP" passthrough_reason)" = "--passthrough=off" ]
    cmp <(dd if="$MP" bs=64k iflag=direct status=none) "$IMG"
    [ "$(pt_json "$MP" stats read ops)" -gt 0 ]
}

@test "passthrough: buffered, O_DIRECT and mmap writes land in the image, uncounted" {
    require_passthrough
    cp "$IMG" "$T/expect"
    blkfuse_mount "${PT_OPTS[@]}" --passthrough=on "$IMG" "$MP"
    head -c 100000 /dev/urandom >"$T/data"
    dd if="$T/data" of="$MP" bs=1 seek=12345 conv=notrunc status=none
    dd if="$T/data" of="$T/expect" bs=1 seek=12345 conv=notrunc status=none
    dd if="$T/data" of="$MP" bs=64k count=1 seek=16 oflag=direct conv=notrunc status=none
    dd if="$T/data" of="$T/expect" bs=64k count=1 seek=16 conv=notrunc status=none
    python3 -c '
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
m = mmap.mmap(fd, 8192, offset=4 << 20)
m[100:104] = b"MMAP"
m.flush()' "$MP"
    printf MMAP | dd of="$T/expect" bs=1 seek=$(((4 << 20) + 100)) conv=notrunc status=none
    cmp "$MP" "$T/expect"
    cmp "$IMG" "$T/expect"
    [ "$(pt_json "$MP" stats write ops)" -eq 0 ]
    # fsync still reaches blkfuse, which flushes the image.
    python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); os.fsync(fd)' "$MP"
    [ "$(pt_json "$MP" stats flush ops)" -gt 0 ]
}

@test "passthrough: a flush after the kernel's writes reaches the image's disk" {
    # The block layer skips an fdatasync when nothing was written since the last one (io.c);
    # the kernel's passthrough writes never pass through it, so the export must say them.
    require_passthrough
    require strace
    blkfuse_mount "${PT_OPTS[@]}" --passthrough=on -o aio=threads "$IMG" "$MP"
    python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); os.fsync(fd)' "$MP"
    strace -f -e trace=fdatasync -o "$T/trace" -p "$(daemon_pid "$MP")" 2>"$T/strace.err" &
    local strace_pid=$!
    wait_for_log "$T/strace.err" "attached"
    head -c 65536 /dev/urandom | python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
os.pwrite(fd, sys.stdin.buffer.read(), 1 << 20)
os.fsync(fd)' "$MP"
    kill -INT "$strace_pid"
    wait "$strace_pid" || true
    [ "$(pt_json "$MP" stats write ops)" -eq 0 ]
    grep -q "fdatasync(.*= 0" "$T/trace"
}

@test "passthrough: a write past the end grows the image; size, SEEK_DATA and fallocate see it" {
    require_passthrough
    blkfuse_mount "${PT_OPTS[@]}" --passthrough=on "$IMG" "$MP"
    printf 'past the end' | dd of="$MP" bs=1 seek=$((12 << 20)) conv=notrunc status=none
    [ "$(stat -c %s "$IMG")" -eq $(((12 << 20) + 12)) ]
    [ "$(stat -c %s "$MP")" -eq $(((12 << 20) + 12)) ]
    [ "$(pt_json "$MP" size)" -eq $(((12 << 20) + 12)) ]
    # blkfuse answers SEEK_DATA itself: it must know the new end.
    run -0 python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print(os.lseek(fd, 9 << 20, os.SEEK_DATA))' "$MP"
    [ "$output" -eq $((12 << 20)) ]
    # ...and so does fallocate: a hole punched in the grown part reads as zeros.
    fallocate -p -o $((12 << 20)) -l 4096 "$MP"
    cmp <(dd if="$MP" bs=1 skip=$((12 << 20)) status=none) <(head -c 12 /dev/zero)
}

@test "passthrough: the file's mtime follows writes made by the kernel" {
    require_passthrough
    blkfuse_mount "${PT_OPTS[@]}" --passthrough=on "$IMG" "$MP"
    touch -d 2001-01-01 "$IMG" "$MP"
    [ "$(stat -c %Y "$MP")" -eq "$(date -d 2001-01-01 +%s)" ]
    dd if=/dev/zero of="$MP" bs=4k count=1 conv=notrunc status=none
    [ "$(stat -c %Y "$MP")" -gt "$(date -d 2002-01-01 +%s)" ]
}

@test "passthrough: a read-only export still refuses every write; the image is untouched" {
    require_passthrough
    blkfuse_mount -r -f raw --stats=coarse --passthrough=on "$IMG" "$MP"
    [ "$(pt_json "$MP" passthrough)" = True ]
    cmp "$MP" "$IMG"
    run --separate-stderr dd if=/dev/zero of="$MP" bs=4k count=1 conv=notrunc
    [ "$status" -ne 0 ]
    [[ $stderr == *"Read-only file system"* ]]
    run python3 -c '
import errno, mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    os.pwrite(fd, b"x", 0)
    sys.exit("pwrite on a read-only descriptor worked")
except OSError as e:
    assert e.errno == errno.EBADF, e
try:
    mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    sys.exit("a writable shared mapping worked")
except OSError as e:
    assert e.errno == errno.EACCES, e
print("refused")' "$MP"
    [ "$status" -eq 0 ]
    [ "$output" = refused ]
    run truncate -s 1M "$MP"
    [ "$status" -ne 0 ]
    run fallocate -p -o 0 -l 4096 "$MP"
    [ "$status" -ne 0 ]
    blkfuse unmount "$MP"
    image_unchanged
}

@test "--passthrough=on refuses, with the reason, each rule that does not hold" {
    refused() {     # refused PHRASE ARGS...: the mount fails, says PHRASE, mounts nothing
        local phrase=$1
        shift
        run --separate-stderr blkfuse mount --log-file "$T/refused.log" --passthrough=on "$@" \
            "$MP" 3>&-
        echo "blkfuse mount $*: status $status: $stderr" >&2
        [ "$status" -ne 0 ]
        [[ $stderr == *"--passthrough=on"* ]]
        [[ $stderr == *"$phrase"* ]]
        ! is_mounted "$MP"
    }
    qemu_img=$(command -v qemu-img || true)
    refused "not given as -f raw" --growable --stats=coarse "$IMG"
    refused "not growable" -f raw --stats=coarse "$IMG"
    refused "add --stats=coarse" -f raw --growable "$IMG"
    refused "export part of the file" "${PT_OPTS[@]}" -o offset=4096 "$IMG"
    refused "export part of the file" "${PT_OPTS[@]}" -o size=4M "$IMG"
    echo "error op=read offset=1M length=4k count=0" >"$T/rules"
    refused "fault-rules" "${PT_OPTS[@]}" -o "fault-rules=$T/rules" "$IMG"
    refused "--cache is not writeback" "${PT_OPTS[@]}" --cache=none "$IMG"
    refused "--cache is not writeback" "${PT_OPTS[@]}" --cache=writethrough "$IMG"
    refused "--snapshot sends writes to an overlay" -f raw --stats=coarse --snapshot "$IMG"
    refused "not a raw image in a local file" -f raw --growable --stats=coarse null:8M
    if [[ -n $qemu_img ]]; then
        qemu-img create -q -f qcow2 "$T/disk.qcow2" 8M
        refused "not a raw image in a local file" -f qcow2 --growable --stats=coarse \
            "$T/disk.qcow2"
    fi
    # All the reasons at once.
    refused "not growable (the kernel would grow the image" "$IMG"
    [[ $stderr == *"add --stats=coarse"* ]]
    image_unchanged
}

@test "--passthrough=on refuses without CAP_SYS_ADMIN; auto falls back silently" {
    require_root
    require setpriv unshare
    # Without the capability at all: refused before anything is mounted.
    run --separate-stderr setpriv --bounding-set=-sys_admin --inh-caps=-sys_admin \
        blkfuse mount --log-file "$T/refused.log" "${PT_OPTS[@]}" --passthrough=on "$IMG" "$MP" 3>&-
    [ "$status" -ne 0 ]
    [[ $stderr == *"only a process with CAP_SYS_ADMIN"* ]]
    ! is_mounted "$MP"

    # Root of a user namespace: it may mount FUSE, but the kernel wants CAP_SYS_ADMIN in the
    # initial namespace for passthrough.  The mounts live in the namespace's own mount table.
    unshare -Urm true 2>/dev/null || skip "cannot make a user namespace"
    run --separate-stderr unshare -Urm bash -c '
        export XDG_RUNTIME_DIR=$1/ns
        mkdir -p "$XDG_RUNTIME_DIR"
        shift
        trap "blkfuse unmount --force \"\$MP\" 2>/dev/null" EXIT
        MP=$1 IMG=$2
        if blkfuse mount --log-file "$XDG_RUNTIME_DIR/log" -f raw --growable --stats=coarse \
               --passthrough=on "$IMG" "$MP"; then
            echo "mounted with --passthrough=on"
            exit 1
        fi
        blkfuse mount --log-file "$XDG_RUNTIME_DIR/log" -f raw --growable --stats=coarse \
            "$IMG" "$MP" || exit 1
        blkfuse stats "$MP" | grep "^passthrough:" >&2
        cmp "$MP" "$IMG" || exit 1
        blkfuse unmount "$MP"' ns "$T" "$MP" "$IMG" 3>&-
    echo "$stderr" >&2
    [ "$status" -eq 0 ]
    [[ $stderr == *"--passthrough=on: "*"CAP_SYS_ADMIN in the initial user namespace"* ]]
    [[ $stderr == *"passthrough: off (auto: "*"CAP_SYS_ADMIN"* ]]
    [ "$(grep -c "cannot keep\|--passthrough=on" <<<"$stderr")" -eq 1 ]
}

@test "auto uses passthrough when every rule holds, and falls back silently when one fails" {
    require_passthrough
    blkfuse_mount "${PT_OPTS[@]}" "$IMG" "$MP"
    [ "$(pt_json "$MP" passthrough)" = True ]
    [ "$(pt_json "$MP" passthrough_mode)" = auto ]
    run -0 blkfuse list
    [[ $output == *"rw,grow,pt"* ]]
    blkfuse unmount "$MP"

    # Not growable: no passthrough, and a write past the end still fails with ENOSPC.
    run --separate-stderr blkfuse mount --log-file "$T/daemon.log" -f raw --stats=coarse \
        "$IMG" "$MP" 3>&-
    MOUNTS+=("$MP")
    [ "$status" -eq 0 ]
    [ -z "$stderr" ]
    [ "$(pt_json "$MP" passthrough)" = False ]
    [[ $(pt_json "$MP" passthrough_reason) == *"not growable"* ]]
    run --separate-stderr dd if=/dev/zero of="$MP" bs=4k count=1 seek=2048 conv=notrunc
    [ "$status" -ne 0 ]
    [[ $stderr == *"No space left on device"* ]]
    run -0 blkfuse stats "$MP"
    [[ $output == *"passthrough: off (auto: "*"not growable"* ]]
    blkfuse unmount "$MP"
    image_unchanged

    # Default settings: per-request statistics hold, so no passthrough.
    blkfuse_mount -f raw --growable "$IMG" "$MP"
    [ "$(pt_json "$MP" passthrough)" = False ]
    [[ $(pt_json "$MP" passthrough_reason) == *"--stats=coarse"* ]]
}

@test "passthrough: an image on a file system stacked too deep is refused (ELOOP)" {
    require_passthrough
    blkfuse_mount "${PT_OPTS[@]}" --passthrough=on "$IMG" "$MP"
    # The export's own mount has the maximal stacking depth: nothing can pass through to it.
    run --separate-stderr blkfuse mount --log-file "$T/daemon2.log" "${PT_OPTS[@]}" \
        --passthrough=on "$MP" "$T/inner.mnt" 3>&-
    [ "$status" -ne 0 ]
    [[ $stderr == *"stacked too deep"* ]]
    ! is_mounted "$T/inner.mnt"
    blkfuse_mount "${PT_OPTS[@]}" "$MP" "$T/inner.mnt"
    [ "$(pt_json "$T/inner.mnt" passthrough)" = False ]
    cmp "$T/inner.mnt" "$IMG"
    blkfuse unmount "$T/inner.mnt"
}

@test "passthrough: the image stays locked while a file is open, even after --force" {
    require_passthrough
    blkfuse_mount "${PT_OPTS[@]}" --passthrough=on "$IMG" "$MP"
    exec 7<>"$MP"
    blkfuse unmount --force "$MP"
    ! is_mounted "$MP"
    # The open file still reaches the image through the kernel, so the lock must hold.
    printf 'still here' >&7
    run --separate-stderr blkfuse mount --log-file "$T/daemon2.log" -f raw "$IMG" "$T/again.mnt" 3>&-
    [ "$status" -ne 0 ]
    [[ $stderr == *"in use by another process"* ]]
    [ "$(head -c 10 "$IMG")" = "still here" ]
    exec 7>&-
    # Closed: the image is free at once.
    blkfuse_mount -f raw "$IMG" "$T/again.mnt"
}

@test "passthrough through a serve daemon's mount request, shown by list" {
    require_passthrough
    SOCK=$T/serve.sock
    start_serve
    blkfuse_mount --daemon "$SOCK" "${PT_OPTS[@]}" --passthrough=on "$IMG" "$MP"
    run -0 blkfuse list --json
    [ "$(json_get 0 passthrough <<<"$output")" = True ]
    [ "$(json_get 0 passthrough_mode <<<"$output")" = on ]
    [ "$(json_get 0 stats_mode <<<"$output")" = coarse ]
    cmp "$MP" "$IMG"
    run ctl '{"cmd": "mount", "image": "'"$IMG"'", "mountpoint": "'"$T/b.mnt"'", "passthrough": "maybe"}'
    [[ $output == *'"field":"passthrough"'* || $output == *'"field": "passthrough"'* ]]
}
