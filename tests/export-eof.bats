#!/usr/bin/env bats
# export-eof.bats - the end of an exported raw image whose size is not a multiple of the sector
# size, in every cache mode: writes into the last partial sector leave the image's size alone,
# a --growable export grows exactly to the end of a write, and what an O_DIRECT write that runs
# past the end returns.
#
# The oracle is a copy of the image that gets the same writes with dd.

load helpers

CACHE_MODES=(writeback writethrough none directsync)

setup() {
    export_setup
}

# write_at FILE OFFSET DATAFILE: one write(2) of DATAFILE at byte OFFSET of FILE.
write_at() {
    local len
    len=$(stat -c %s "$3")
    dd if="$3" of="$1" bs="$len" count=1 iflag=fullblock oflag=seek_bytes seek="$2" \
        conv=notrunc status=none
}

size_of() {
    stat -c %s "$1"
}

# expect_size SIZE FILE...: each FILE is SIZE bytes long.
expect_size() {
    local size=$1 f
    shift
    for f in "$@"; do
        if [[ $(size_of "$f") -ne $size ]]; then
            echo "$f: $(size_of "$f") bytes, expected $size" >&2
            return 1
        fi
    done
}

# mount_1000 ARGS...: IMG made 1000 random bytes, REF its copy, and IMG mounted on MP with ARGS.
mount_1000() {
    head -c 1000 /dev/urandom >"$IMG"
    cp "$IMG" "$REF"
    blkfuse_mount "$@" "$IMG" "$MP"
}

# write_both OFFSET:LENGTH: LENGTH random bytes, written at OFFSET of the export and of REF.
write_both() {
    local off=${1%:*} len=${1#*:}
    head -c "$len" /dev/urandom >"$T/piece@$off"
    write_at "$MP" "$off" "$T/piece@$off"
    write_at "$REF" "$off" "$T/piece@$off"
}

# --- defect: the padding of the last partial sector ------------------------------------------

# A 1000-byte image: 3 bytes at 995, 1 byte at 999, all 1000 bytes, 2 bytes across the last
# sector boundary; the size of the export and of the image stays 1000 after each one.
check_last_sector_writes() {
    local spec
    mount_1000 --cache="$1"
    for spec in 995:3 999:1 0:1000 511:2; do
        write_both "$spec"
        expect_size 1000 "$MP" "$IMG"
    done
    cmp "$MP" "$REF"
    blkfuse unmount "$MP"
    expect_size 1000 "$IMG"
    cmp "$IMG" "$REF"
}

@test "writes into the last partial sector keep a 1000-byte image at 1000 bytes (every cache mode)" {
    local mode
    for mode in "${CACHE_MODES[@]}"; do
        echo "cache=$mode"
        check_last_sector_writes "$mode"
    done
}

# --growable: a write past the end grows the image to exactly the end of the write.
check_growable_writes() {
    local spec end
    mount_1000 --growable --cache="$1"
    # 3 bytes just past the end; 1 byte inside the last sector; 5 bytes after a gap of a few
    # sectors; 700 bytes straddling the end.
    for spec in 1000:3 1001:1 3000:5 2700:700; do
        write_both "$spec"
        end=$(size_of "$REF")
        expect_size "$end" "$MP" "$IMG"
    done
    expect_size 3400 "$IMG"
    cmp "$MP" "$REF"
    blkfuse unmount "$MP"
    cmp "$IMG" "$REF"
}

@test "--growable grows a raw image exactly to the end of each write (every cache mode)" {
    local mode
    for mode in "${CACHE_MODES[@]}"; do
        echo "cache=$mode"
        check_growable_writes "$mode"
    done
}

# --- O_DIRECT writes that run past the end -----------------------------------------------------

# fill_ref FILE OFFSET LENGTH: LENGTH bytes of 0x5a (what dwrite writes) at OFFSET of FILE.
fill_ref() {
    head -c "$3" /dev/zero | tr '\0' '\132' >"$T/fill"
    write_at "$1" "$2" "$T/fill"
}

@test "an O_DIRECT write(2) straddling the end returns the bytes that fit (every cache mode)" {
    local mode
    need_tool dwrite
    for mode in "${CACHE_MODES[@]}"; do
        echo "cache=$mode"
        mount_1000 --cache="$mode"
        # 512 bytes at 512: 488 fit.
        run -0 dwrite --direct "$MP" 512 512
        [ "$output" = 488 ]
        fill_ref "$REF" 512 488
        # 4096 bytes at 0: 1000 fit.
        run -0 dwrite --direct --fill 0x5a "$MP" 0 4096
        [ "$output" = 1000 ]
        fill_ref "$REF" 0 1000
        # Nothing fits: ENOSPC.
        run -0 dwrite --direct "$MP" 1024 512
        [ "$output" = ENOSPC ]
        expect_size 1000 "$MP" "$IMG"
        # dd reports the short count, then the error for the rest.
        run dd if=/dev/zero of="$MP" bs=512 seek=1 count=1 oflag=direct conv=notrunc
        [ "$status" -ne 0 ]
        [[ $output == *"No space left on device"* ]]
        [[ $output == *"488 bytes"* ]]
        head -c 488 /dev/zero >"$T/zeros"
        write_at "$REF" 512 "$T/zeros"
        cmp "$MP" "$REF"
        blkfuse unmount "$MP"
        expect_size 1000 "$IMG"
        cmp "$IMG" "$REF"
    done
}

@test "--growable: an O_DIRECT write past the end grows the image to its end" {
    need_tool dwrite
    mount_1000 --growable --cache=none
    run -0 dwrite --direct "$MP" 512 1024
    [ "$output" = 1024 ]
    fill_ref "$REF" 512 1024
    expect_size 1536 "$MP" "$IMG" "$REF"
    blkfuse unmount "$MP"
    cmp "$IMG" "$REF"
}

# The kernel's asynchronous direct-I/O path (io_submit, io_uring) turns a short write into EIO
# (fs/fuse/file.c, fuse_get_res_by_io); the man page says so.  What fits is written all the same.
@test "an asynchronous O_DIRECT write straddling the end fails with EIO, and what fits is written" {
    need_tool dwrite
    mount_1000
    run -0 dwrite --aio --direct "$MP" 512 512
    [ "$output" = EIO ]
    fill_ref "$REF" 512 488
    # Asynchronous, but not O_DIRECT: the kernel runs it synchronously; the count is short.
    run -0 dwrite --aio --fill 0x5a "$MP" 0 4096
    [ "$output" = 1000 ]
    fill_ref "$REF" 0 1000
    expect_size 1000 "$MP"
    blkfuse unmount "$MP"
    cmp "$IMG" "$REF"
}

# The start of the Python scripts of the next tests: the export mp (argv[1]) opened with
# O_DIRECT (direct) and without (buffered); block(b) is a page-aligned page of byte b.
PY_TWO_OPENS='
import mmap, os, sys
mp, PS = sys.argv[1], 4096
def block(b):
    m = mmap.mmap(-1, PS)
    m.write(bytes([b]) * PS)
    return m
direct = os.open(mp, os.O_RDWR | os.O_DIRECT)
buffered = os.open(mp, os.O_RDWR)
'

# O_DIRECT opens bypass the page cache (FOPEN_DIRECT_IO); other, buffered opens of the export
# still see what they write, and they see theirs.
@test "O_DIRECT and buffered opens of one export see each other's writes" {
    make_raw "$IMG" 1M
    blkfuse_mount "$IMG" "$MP"
    run -0 python3 -c "$PY_TWO_OPENS"'
# A page the buffered open has cached, then written with O_DIRECT.
os.pread(buffered, PS, 0)
os.pwritev(direct, [block(0x11)], 0)
assert os.pread(buffered, PS, 0) == bytes([0x11]) * PS, "buffered read after O_DIRECT write"
# A shared mapping of the buffered open, faulted in before the O_DIRECT write.
m = mmap.mmap(buffered, 2 * PS, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[0]
os.pwritev(direct, [block(0x22)], 0)
assert m[0] == 0x22, "mapped read after O_DIRECT write"
# A store into the mapping, then an O_DIRECT read.
m[PS] = 0x33
r = block(0)
os.preadv(direct, [r], PS)
assert r[0] == 0x33, "O_DIRECT read after a store into a shared mapping"
m.close()
# A buffered write, then an O_DIRECT read.
os.pwrite(buffered, bytes([0x44]) * PS, 2 * PS)
os.preadv(direct, [r], 2 * PS)
assert r[:] == bytes([0x44]) * PS, "O_DIRECT read after a buffered write"
# An O_DIRECT descriptor can be mapped privately.
p = mmap.mmap(direct, PS, mmap.MAP_PRIVATE, mmap.PROT_READ)
assert p[0] == 0x22
' "$MP"
    blkfuse unmount "$MP"
}

# MAP_SHARED of an O_DIRECT descriptor (FUSE_DIRECT_IO_ALLOW_MMAP, kernel 6.6 and later; before,
# the kernel refuses it with ENODEV, as the man page says): the mapping, the descriptor's own
# O_DIRECT reads and writes, and a buffered open agree, and stores reach the image.
@test "an O_DIRECT descriptor can be mapped shared, coherently with its reads and writes" {
    make_raw "$IMG" 1M
    blkfuse_mount "$IMG" "$MP"
    run python3 -c "$PY_TWO_OPENS"'
try:
    m = mmap.mmap(direct, 4 * PS, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
except OSError as e:
    print("MAP_SHARED of an O_DIRECT descriptor:", e.strerror)
    sys.exit(3)
# An O_DIRECT write of the same descriptor, after the page was faulted in.
m[0]
os.pwritev(direct, [block(0x51)], 0)
assert m[0] == 0x51 and m[PS - 1] == 0x51, "mapped read after an O_DIRECT write"
# A store into the mapping, then an O_DIRECT read and a buffered read.
m[PS:2 * PS] = bytes([0x52]) * PS
r = block(0)
os.preadv(direct, [r], PS)
assert r[:] == bytes([0x52]) * PS, "O_DIRECT read after a store into the mapping"
assert os.pread(buffered, PS, PS) == bytes([0x52]) * PS, "buffered read after a store"
# A buffered write, then the mapping.
os.pwrite(buffered, bytes([0x53]) * PS, 2 * PS)
assert m[2 * PS] == 0x53, "mapped read after a buffered write"
m[3 * PS:4 * PS] = bytes([0x54]) * PS
m.flush()
m.close()
' "$MP"
    echo "$output"
    if [ "$status" -eq 3 ]; then
        # Only kernels without FUSE_DIRECT_IO_ALLOW_MMAP (before 6.6) may refuse.
        local v=$(uname -r)
        [[ $output == *"No such device"* ]]
        (( ${v%%.*} < 6 || (${v%%.*} == 6 && $(cut -d. -f2 <<<"$v") < 6) ))
        skip "this kernel ($v) refuses MAP_SHARED of O_DIRECT FUSE files"
    fi
    [ "$status" -eq 0 ]
    blkfuse unmount "$MP"
    # Every store reached the image.
    python3 -c '
import sys
d = open(sys.argv[1], "rb").read(4 * 4096)
assert d == bytes([0x51]) * 4096 + bytes([0x52]) * 4096 + bytes([0x53]) * 4096 + bytes([0x54]) * 4096
' "$IMG"
}
