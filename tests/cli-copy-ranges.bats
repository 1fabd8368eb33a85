#!/usr/bin/env bats
# cli-copy-ranges.bats - blkfuse copy-ranges: the ranges listed on standard input, and only
# those, go from SOURCE to the same offsets of DEST, zeros included unless --sparse; DEST keeps
# its size; bad input stops the copy with a message naming the line.

load helpers

setup() {
    blkfuse_setup
    # SOURCE: 1 MiB of random data with a zero block at 64 KiB..72 KiB; DEST: 2 MiB of 0xff.
    head -c 1M /dev/urandom >"$T/src"
    dd if=/dev/zero of="$T/src" bs=4k seek=16 count=2 conv=notrunc status=none
    head -c 2M /dev/zero | tr '\0' '\377' >"$T/dst"
    cp "$T/dst" "$T/model"
}

# model OFF LEN: what copy-ranges should do to DEST, done to $T/model with dd.
model() {
    dd if="$T/src" of="$T/model" bs=4k iflag=skip_bytes,count_bytes oflag=seek_bytes \
        skip="$1" seek="$1" count="$2" conv=notrunc status=none
}

@test "copy-ranges copies exactly the listed ranges, zeros included, and keeps DEST's size" {
    printf '%s\n' "0 4096" "" "65536 12288" "  300000 1  " "1048000 576" >"$T/ranges"
    run -0 blkfuse copy-ranges "$T/src" "$T/dst" <"$T/ranges"
    model 0 4096
    model 65536 12288
    model 300000 1
    model 1048000 576
    cmp "$T/dst" "$T/model"
    [ "$(stat -c %s "$T/dst")" -eq $((2 * 1024 * 1024)) ]
    # The zero block inside a range was written (it hides what DEST held there).
    [ "$(od -An -tx1 -j 65536 -N 4 "$T/dst" | tr -d ' ')" = 00000000 ]
}

@test "copy-ranges --sparse leaves blocks of zeros unwritten, and a new DEST sparse" {
    echo "0 1048576" | blkfuse copy-ranges --sparse "$T/src" "$T/dst"
    model 0 1048576
    # The zero blocks at 64 KiB..72 KiB kept DEST's 0xff.
    dd if=/dev/zero bs=4k count=2 status=none | tr '\0' '\377' |
        dd of="$T/model" bs=4k seek=16 conv=notrunc status=none
    cmp "$T/dst" "$T/model"
    # A new file: created, and the zero blocks are holes.
    truncate -s 4M "$T/zeros"
    echo "0 4194304" | blkfuse copy-ranges --sparse "$T/zeros" "$T/new"
    [ "$(stat -c %s "$T/new")" -eq 0 ] || [ "$(stat -c %b "$T/new")" -eq 0 ]
    echo "0 1048576" | blkfuse copy-ranges --sparse "$T/src" "$T/new2"
    cmp "$T/src" "$T/new2"
    [ "$(($(stat -c %b "$T/new2") * 512))" -lt 1048576 ]
}

@test "copy-ranges stops at a malformed line or a range past SOURCE's end, naming the line" {
    local bad
    for bad in "12" "a 4096" "4096 x" "1 2 3" "-1 4096" "9223372036854775807 2"; do
        run --separate-stderr blkfuse copy-ranges "$T/src" "$T/dst" <<<"$(printf '0 512\n%s\n' "$bad")"
        echo "'$bad': status=$status stderr=$stderr"
        [ "$status" -eq 1 ]
        [[ $stderr == *"line 2"* ]]
    done
    run --separate-stderr blkfuse copy-ranges "$T/src" "$T/dst" <<<"1048000 4096"
    [ "$status" -eq 1 ]
    [[ $stderr == *"$T/src ends at 1048576"*"line 1"* ]]
    run --separate-stderr blkfuse copy-ranges "$T/nonexistent" "$T/dst" </dev/null
    [ "$status" -eq 1 ]
    [[ $stderr == *"$T/nonexistent: cannot open"* ]]
}

@test "copy-ranges --sparse reads none of SOURCE's holes (counted through an export)" {
    require qemu-img qemu-io
    require_fuse
    qemu-img create -q -f qcow2 "$T/sparse.qcow2" 64M
    qemu-io -f qcow2 -c "write -P 7 2M 64k" -c "write -P 9 40M 128k" "$T/sparse.qcow2" >/dev/null
    blkfuse_mount -r "$T/sparse.qcow2" "$T/s.img"
    echo "0 67108864" | blkfuse copy-ranges --sparse "$T/s.img" "$T/copy.raw"
    cmp "$T/s.img" "$T/copy.raw"
    run -0 blkfuse stats --json "$T/s.img"
    read_bytes=$(sed -n 's/^ *"bytes_read": \([0-9]*\),$/\1/p' <<<"$output")
    echo "read $read_bytes bytes of 67108864 (cmp read all 67108864 once)"
    # cmp read the whole file once; copy-ranges only the 192 KiB of data.
    [ "$read_bytes" -le $((67108864 + 1048576)) ]
}

@test "copy-ranges on a full file system fails naming DEST, with status 1" {
    require_root
    grep -qw tmpfs /proc/filesystems || skip "needs tmpfs"
    # A 256 KiB tmpfs that 1 MiB of ranges cannot fit in.
    mount_dev tmpfs "$T/small" -t tmpfs -o size=256k
    echo "0 1048576" >"$T/ranges"
    run --separate-stderr blkfuse copy-ranges "$T/src" "$T/small/dst" <"$T/ranges"
    echo "$stderr"
    [ "$status" -eq 1 ]
    [[ $stderr == "blkfuse: $T/small/dst: write of "*"No space left on device"* ]]
    # With --sparse too (only the data is written, and it still does not fit).
    rm "$T/small/dst"
    run --separate-stderr blkfuse copy-ranges --sparse "$T/src" "$T/small/dst" <"$T/ranges"
    echo "$stderr"
    [ "$status" -eq 1 ]
    [[ $stderr == "blkfuse: $T/small/dst: "*"No space left on device"* ]]
}

@test "copy-ranges to a DEST that refuses every write (/dev/full) fails naming it, status 1" {
    [[ -c /dev/full && -w /dev/full ]] || skip "needs a writable /dev/full"
    run --separate-stderr blkfuse copy-ranges "$T/src" /dev/full <<<"0 4096"
    echo "$stderr"
    [ "$status" -eq 1 ]
    [[ $stderr == "blkfuse: /dev/full: write of 4096 bytes at 0: No space left on device" ]]
}
