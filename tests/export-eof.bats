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
    blkfuse_setup
    require_fuse
    IMG=$T/disk.img
    REF=$T/ref.img
    MP=$T/disk.mnt
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

# --- defect: the padding of the last partial sector ------------------------------------------

# A 1000-byte image: 3 bytes at 995, 1 byte at 999, all 1000 bytes, 2 bytes across the last
# sector boundary; the size of the export and of the image stays 1000 after each one.
check_last_sector_writes() {
    local spec off len i=0
    head -c 1000 /dev/urandom >"$IMG"
    cp "$IMG" "$REF"
    blkfuse_mount --cache="$1" "$IMG" "$MP"
    for spec in 995:3 999:1 0:1000 511:2; do
        off=${spec%:*}
        len=${spec#*:}
        i=$((i + 1))
        head -c "$len" /dev/urandom >"$T/piece$i"
        write_at "$MP" "$off" "$T/piece$i"
        write_at "$REF" "$off" "$T/piece$i"
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
    local spec off len i=0 end
    head -c 1000 /dev/urandom >"$IMG"
    cp "$IMG" "$REF"
    blkfuse_mount --growable --cache="$1" "$IMG" "$MP"
    # 3 bytes just past the end; 1 byte inside the last sector; 5 bytes after a gap of a few
    # sectors; 700 bytes straddling the end.
    for spec in 1000:3 1001:1 3000:5 2700:700; do
        off=${spec%:*}
        len=${spec#*:}
        i=$((i + 1))
        head -c "$len" /dev/urandom >"$T/piece$i"
        write_at "$MP" "$off" "$T/piece$i"
        write_at "$REF" "$off" "$T/piece$i"
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
