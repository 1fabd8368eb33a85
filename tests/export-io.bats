#!/usr/bin/env bats
# export-io.bats - data through a FUSE export: reads, unaligned writes, EOF,
# growing, truncating, flushing, cache modes, raw slices and the null driver.
#
# The oracle is a plain copy of the image to which the same writes are applied
# with dd; after `blkfuse unmount` the image must be byte-identical to it.

load helpers

setup() {
    export_setup
}

# write_at FILE OFFSET DATAFILE: write DATAFILE to FILE at byte OFFSET with a
# single write(2), without truncating FILE.
write_at() {
    local file=$1 off=$2 data=$3 len
    len=$(stat -c %s "$data")
    dd if="$data" of="$file" bs="$len" count=1 iflag=fullblock \
        oflag=seek_bytes seek="$off" conv=notrunc status=none
}

# read_at FILE OFFSET LENGTH: print LENGTH bytes of FILE at byte OFFSET.
read_at() {
    dd if="$1" bs=64k iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none
}

# random_data FILE LENGTH: LENGTH random bytes in FILE.
random_data() {
    head -c "$2" /dev/urandom >"$1"
}

# size_of FILE
size_of() {
    stat -c %s "$1"
}

# Write a set of unaligned pieces through an export mounted with ARGS and the
# same pieces to a reference copy with dd; both must end up identical, live
# through the export and in the image after unmount.
check_unaligned_writes() {
    local size spec off len i=0

    make_pattern "$IMG" 8M
    cp "$IMG" "$REF"
    size=$(size_of "$IMG")
    blkfuse_mount "$@" "$IMG" "$MP"

    # offset:length -- 1 byte at 0, 511 bytes at 1, 4097 bytes across two
    # 4 KiB boundaries, 1 MiB + 3 at an odd offset, 3 bytes across a 1 MiB
    # boundary, and the very last byte.
    for spec in 0:1 1:511 4095:4097 1000001:$((1048576 + 3)) \
                $((2 * 1048576 - 1)):3 $((size - 1)):1; do
        off=${spec%:*}
        len=${spec#*:}
        i=$((i + 1))
        random_data "$T/piece$i" "$len"
        write_at "$MP" "$off" "$T/piece$i"
        write_at "$REF" "$off" "$T/piece$i"
    done

    [ "$(size_of "$MP")" -eq "$size" ]
    cmp "$MP" "$REF"
    blkfuse unmount "$MP"
    [ "$(size_of "$IMG")" -eq "$size" ]
    cmp "$IMG" "$REF"
}

# Random unaligned, non-overlapping buffered writes (rwstress --size-range)
# through an export mounted with ARGS, checked against a reference copy.
check_random_unaligned_writes() {
    local -a stress=(--offset 3 --length 6M --seed 42 --ops 400 --size-range 1:20000)

    need_tool rwstress
    make_pattern "$IMG" 8M
    cp "$IMG" "$REF"
    blkfuse_mount "$@" "$IMG" "$MP"
    rwstress --file "$MP" "${stress[@]}" --verify
    rwstress --file "$REF" "${stress[@]}"
    cmp "$MP" "$REF"
    blkfuse unmount "$MP"
    cmp "$IMG" "$REF"
}

# --- reads --------------------------------------------------------------------

@test "reads through the export equal the image" {
    make_pattern "$IMG" 64M
    blkfuse_mount "$IMG" "$MP"
    [ "$(size_of "$MP")" -eq $((64 * 1048576)) ]
    cmp "$MP" "$IMG"
    # Unaligned reads from the middle, too.
    cmp <(read_at "$MP" 12345 777777) <(read_at "$IMG" 12345 777777)
}

@test "an image of odd size is exported with that size and reads back whole" {
    random_data "$IMG" $((8 * 1048576 + 1000))
    blkfuse_mount "$IMG" "$MP"
    [ "$(size_of "$MP")" -eq $((8 * 1048576 + 1000)) ]
    cmp "$MP" "$IMG"
}

@test "a read crossing the end is short and a read at the end returns nothing" {
    local size
    make_pattern "$IMG" 8M
    size=$(size_of "$IMG")
    blkfuse_mount "$IMG" "$MP"

    # bs=4096 asks for more than is left: exactly the last 1000 bytes arrive.
    dd if="$MP" of="$T/tail" bs=4096 iflag=skip_bytes skip=$((size - 1000)) status=none
    [ "$(size_of "$T/tail")" -eq 1000 ]
    cmp "$T/tail" <(tail -c 1000 "$IMG")

    dd if="$MP" of="$T/past" bs=4096 iflag=skip_bytes skip="$size" status=none
    [ "$(size_of "$T/past")" -eq 0 ]
}

@test "a read crossing the end of an odd-sized image is short (cache=none)" {
    local size=$((4 * 1048576 + 1000))
    random_data "$IMG" "$size"
    blkfuse_mount --cache=none "$IMG" "$MP"
    run python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print(len(os.pread(fd, 65536, int(sys.argv[2]) - 700)), len(os.pread(fd, 4096, int(sys.argv[2]))))
' "$MP" "$size"
    [ "$status" -eq 0 ]
    [ "$output" = "700 0" ]
}

# --- writes -------------------------------------------------------------------

@test "unaligned writes land exactly (default cache)" {
    check_unaligned_writes
}

@test "unaligned writes land exactly (cache=none, O_DIRECT image)" {
    check_unaligned_writes --cache=none
}

@test "unaligned writes land exactly (cache=directsync)" {
    check_unaligned_writes --cache=directsync
}

@test "unaligned writes land exactly (cache=writethrough)" {
    check_unaligned_writes --cache=writethrough
}

@test "random unaligned buffered writes match a reference copy (default cache)" {
    check_random_unaligned_writes
}

@test "random unaligned buffered writes match a reference copy (cache=none)" {
    check_random_unaligned_writes --cache=none
}

@test "a write past the end fails with ENOSPC and the size stays" {
    local size
    make_pattern "$IMG" 8M
    cp "$IMG" "$REF"
    size=$(size_of "$IMG")
    blkfuse_mount "$IMG" "$MP"

    run --separate-stderr dd if=/dev/zero of="$MP" bs=1 count=1 seek="$size" conv=notrunc
    [ "$status" -ne 0 ]
    [[ $stderr == *"No space left on device"* ]]
    run --separate-stderr dd if=/dev/zero of="$MP" bs=4096 count=1 seek=$((size / 4096 + 10)) conv=notrunc
    [ "$status" -ne 0 ]
    [[ $stderr == *"No space left on device"* ]]

    [ "$(size_of "$MP")" -eq "$size" ]
    blkfuse unmount "$MP"
    [ "$(size_of "$IMG")" -eq "$size" ]
    cmp "$IMG" "$REF"
}

# check_straddling_write SIZE LENGTH ROOM: one pwrite(2) of LENGTH bytes that
# starts ROOM bytes before the end of a SIZE-byte image.  POSIX write(2): when
# there is room for fewer bytes than asked, only as many bytes as there is room
# for are written (a short count, as on a block device); ENOSPC is for a write
# with no room at all.  So ROOM bytes land, and nothing past the end.
check_straddling_write() {
    local size=$1 len=$2 room=$3
    make_pattern "$IMG" "$size"
    cp "$IMG" "$REF"
    blkfuse_mount "$IMG" "$MP"

    random_data "$T/piece" "$len"
    run python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
with open(sys.argv[2], "rb") as f:
    data = f.read()
try:
    print(os.pwrite(fd, data, int(sys.argv[3])))
except OSError as e:
    print("error:", e)
' "$MP" "$T/piece" $((size - room))
    echo "pwrite of $len bytes $room bytes before the end of $size: $output"
    [ "$status" -eq 0 ]
    [ "$output" = "$room" ]
    [ "$(size_of "$MP")" -eq "$size" ]

    head -c "$room" "$T/piece" >"$T/fits"
    write_at "$REF" $((size - room)) "$T/fits"
    blkfuse unmount "$MP"
    [ "$(size_of "$IMG")" -eq "$size" ]
    cmp "$IMG" "$REF"
}

@test "a write straddling the end is short: what fits lands (within the last page)" {
    check_straddling_write $((8 * 1048576)) 4096 100
}

@test "a write straddling the end is short: what fits lands (across the last pages)" {
    check_straddling_write $((8 * 1048576)) 8192 5000
}

@test "a write straddling the end of an odd-sized image is short: what fits lands" {
    check_straddling_write $((8 * 1048576 + 1000)) 4096 100
}

@test "--growable: a write past the end grows the image and the gap reads zeros" {
    local size
    make_pattern "$IMG" 8M
    cp "$IMG" "$REF"
    size=$(size_of "$IMG")
    blkfuse_mount --growable "$IMG" "$MP"

    random_data "$T/piece" 5000
    write_at "$MP" $((size + 1048576)) "$T/piece"
    [ "$(size_of "$MP")" -eq $((size + 1048576 + 5000)) ]
    cmp <(read_at "$MP" "$size" 1048576) <(head -c 1048576 /dev/zero)
    cmp <(read_at "$MP" $((size + 1048576)) 5000) "$T/piece"

    write_at "$REF" $((size + 1048576)) "$T/piece"
    blkfuse unmount "$MP"
    [ "$(size_of "$IMG")" -eq $((size + 1048576 + 5000)) ]
    cmp "$IMG" "$REF"
}

@test "truncate on the export grows (reading zeros) and shrinks the image" {
    make_pattern "$IMG" 8M
    cp "$IMG" "$REF"
    blkfuse_mount "$IMG" "$MP"

    truncate -s 12M "$MP"
    [ "$(size_of "$MP")" -eq $((12 * 1048576)) ]
    [ "$(size_of "$IMG")" -eq $((12 * 1048576)) ]
    cmp <(read_at "$MP" $((8 * 1048576)) $((4 * 1048576))) <(head -c 4M /dev/zero)

    truncate -s 2M "$MP"
    [ "$(size_of "$MP")" -eq $((2 * 1048576)) ]
    # Growing again after a shrink must not bring the old data back.
    truncate -s 3M "$MP"
    cmp <(read_at "$MP" $((2 * 1048576)) 1048576) <(head -c 1M /dev/zero)

    blkfuse unmount "$MP"
    [ "$(size_of "$IMG")" -eq $((3 * 1048576)) ]
    cmp -n $((2 * 1048576)) "$IMG" "$REF"
    cmp <(tail -c 1M "$IMG") <(head -c 1M /dev/zero)
}

@test "fsync and fdatasync reach the daemon and the data is in the image after unmount" {
    make_raw "$IMG" 8M
    cp "$IMG" "$REF"
    blkfuse_mount "$IMG" "$MP"

    # Each sync call must show up as a flush in the export's counters while
    # the file is still open (a close flushes too, which would hide it).
    random_data "$T/piece" 300000
    python3 -c '
import json, os, subprocess, sys
mp, piece = sys.argv[1], sys.argv[2]
def flushes():
    out = subprocess.check_output(["blkfuse", "stats", "--json", mp])
    return json.loads(out)["stats"]["flush"]["ops"]
fd = os.open(mp, os.O_WRONLY)
with open(piece, "rb") as f:
    data = f.read()
assert os.pwrite(fd, data, 777) == len(data)
before = flushes()
os.fsync(fd)
after_fsync = flushes()
assert os.pwrite(fd, data[:4096], 5000000) == 4096
os.fdatasync(fd)
after_fdatasync = flushes()
os.close(fd)
assert after_fsync > before, ("fsync sent no flush", before, after_fsync)
assert after_fdatasync > after_fsync, ("fdatasync sent no flush", after_fsync, after_fdatasync)
' "$MP" "$T/piece"
    write_at "$REF" 777 "$T/piece"
    dd if="$T/piece" of="$REF" bs=4096 count=1 oflag=seek_bytes seek=5000000 conv=notrunc status=none

    # dd's fsync and sync(1) on the file work too.
    random_data "$T/piece2" 70000
    dd if="$T/piece2" of="$MP" bs=64k oflag=seek_bytes seek=6000001 conv=notrunc,fsync status=none
    write_at "$REF" 6000001 "$T/piece2"
    sync "$MP"

    run -0 blkfuse stats --json "$MP"
    python3 -c 'import json, sys; assert json.loads(sys.argv[1])["stats"]["flush"]["failed"] == 0' "$output"

    blkfuse unmount "$MP"
    cmp "$IMG" "$REF"
}

# --- raw slices and the null driver -----------------------------------------------

@test "-o offset=1M,size=4M exports exactly that slice of a raw image" {
    make_pattern "$IMG" 8M
    cp "$IMG" "$REF"
    blkfuse_mount -f raw -o offset=1M,size=4M "$IMG" "$MP"

    [ "$(size_of "$MP")" -eq $((4 * 1048576)) ]
    cmp "$MP" <(dd if="$IMG" bs=1M skip=1 count=4 status=none)

    random_data "$T/first" 4096
    random_data "$T/last" 100
    random_data "$T/mid" 3333
    write_at "$MP" 0 "$T/first"
    write_at "$MP" $((4 * 1048576 - 100)) "$T/last"
    write_at "$MP" 54321 "$T/mid"
    write_at "$REF" $((1048576)) "$T/first"
    write_at "$REF" $((5 * 1048576 - 100)) "$T/last"
    write_at "$REF" $((1048576 + 54321)) "$T/mid"

    # The slice ends at 5 MiB of the image: nothing may be written past it.
    run --separate-stderr dd if=/dev/zero of="$MP" bs=1 count=1 seek=$((4 * 1048576)) conv=notrunc
    [ "$status" -ne 0 ]
    [[ $stderr == *"No space left on device"* ]]

    blkfuse unmount "$MP"
    cmp "$IMG" "$REF"
}

@test "null:64M exports 64 MiB of zeros and accepts writes" {
    blkfuse_mount null:64M "$MP"
    [ "$(size_of "$MP")" -eq $((64 * 1048576)) ]
    cmp "$MP" <(head -c 64M /dev/zero)
    random_data "$T/piece" 65536
    write_at "$MP" 4096 "$T/piece"
    dd if=/dev/urandom of="$MP" bs=1M count=2 seek=10 conv=notrunc,fsync status=none
    blkfuse unmount "$MP"
}
