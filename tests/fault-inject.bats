#!/usr/bin/env bats
# fault-inject.bats - the fault-injection filter through a mount (-o fault-rules=PATH): chosen
# requests fail with the chosen errno, others pass; bad rules files fail the mount by name.
# Every rule's details are covered by tests/unit/test-fault.c.

load helpers

setup() {
    export_setup 4M
    RULES=$T/rules
}

@test "fault-rules: a read of the chosen range fails with EIO, the rest reads fine" {
    echo "error op=read offset=1M length=4k count=0   # the second MiB's first block" >"$RULES"
    blkfuse_mount -f raw -o "fault-rules=$RULES" --cache=none "$IMG" "$MP"
    run --separate-stderr dd if="$MP" of=/dev/null bs=4k skip=256 count=1 iflag=direct
    [ "$status" -ne 0 ]
    [[ $stderr == *"Input/output error"* ]]
    cmp <(dd if="$MP" bs=1M count=1 iflag=direct status=none) \
        <(dd if="$IMG" bs=1M count=1 status=none)
    cmp <(dd if="$MP" bs=4k skip=257 iflag=direct status=none) \
        <(dd if="$IMG" bs=4k skip=257 status=none)
}

@test "fault-rules: errno=ENOSPC on the third write reaches the writer" {
    echo "error op=write after=2 errno=ENOSPC" >"$RULES"
    blkfuse_mount -f raw -o "fault-rules=$RULES" --cache=none "$IMG" "$MP"
    dd if=/dev/zero of="$MP" bs=4k count=1 seek=0 conv=notrunc oflag=direct status=none
    dd if=/dev/zero of="$MP" bs=4k count=1 seek=1 conv=notrunc oflag=direct status=none
    run --separate-stderr dd if=/dev/zero of="$MP" bs=4k count=1 seek=2 conv=notrunc \
        oflag=direct
    [ "$status" -ne 0 ]
    [[ $stderr == *"No space left on device"* ]]
    dd if=/dev/zero of="$MP" bs=4k count=1 seek=3 conv=notrunc oflag=direct status=none
    blkfuse unmount "$MP"
    # blocks 0, 1 and 3 were zeroed; block 2 still holds the pattern
    cmp <(head -c 8192 "$IMG") <(head -c 8192 /dev/zero)
    ! cmp -s <(dd if="$IMG" bs=4k skip=2 count=1 status=none) <(head -c 4096 /dev/zero)
    cmp <(dd if="$IMG" bs=4k skip=3 count=1 status=none) <(head -c 4096 /dev/zero)
}

@test "fault-rules: a bad rules file fails the mount naming the file, line and word" {
    printf '# comment\nerror op=read errno=EBOGUS\n' >"$RULES"
    run --separate-stderr blkfuse mount -f raw -o "fault-rules=$RULES" "$IMG" "$MP" 3>&-
    [ "$status" -ne 0 ]
    [[ $stderr == *"$RULES:2:"*"errno=EBOGUS"* ]]
    ! is_mounted "$MP"
}

@test "fault-rules: powerfail keeps what was fsynced, drops the rest, and says where" {
    EXPECTED_LOG_ERRORS='Input/output error'
    printf 'powerfail op=write after=2\ntrace path=%s\n' "$T/trace" >"$RULES"
    cp "$IMG" "$T/orig.img"
    blkfuse_mount -f raw -o "fault-rules=$RULES" --cache=none "$IMG" "$MP"
    # write 1, flushed; write 2, not flushed, reads back; write 3 finds the power gone.
    # One open file throughout: closing it would flush.
    run python3 - "$MP" <<'PY'
import errno, mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)           # page-aligned zeros
os.pwrite(fd, buf, 0)
os.fsync(fd)
os.pwrite(fd, buf, 4096)
back = mmap.mmap(-1, 8192)
assert os.preadv(fd, [back], 0) == 8192 and back[:] == bytes(8192)
try:
    os.pwrite(fd, buf, 8192)
    print("third write succeeded")
except OSError as e:
    print("third write:", errno.errorcode[e.errno])
try:
    os.close(fd)
except OSError:
    pass
PY
    [ "$status" -eq 0 ]
    [ "$output" = "third write: EIO" ]
    run --separate-stderr dd if="$MP" of=/dev/null bs=4k count=1 iflag=direct
    [ "$status" -ne 0 ]
    [[ $stderr == *"Input/output error"* ]]
    blkfuse unmount "$MP"
    grep -q "power failure at write offset 8192 length 4096" "$T/daemon.log"
    cmp <(head -c 4096 "$IMG") <(head -c 4096 /dev/zero)
    cmp <(tail -c +4097 "$IMG") <(tail -c +4097 "$T/orig.img")
    grep -qx "write 0 4096" "$T/trace"
    grep -qx "flush 0 0" "$T/trace"
    grep -qx "write 8192 4096" "$T/trace"
}
