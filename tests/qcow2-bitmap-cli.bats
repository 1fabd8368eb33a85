#!/usr/bin/env bats
# qcow2-bitmap-cli.bats - `blkfuse bitmap` (--add, --remove, --clear, --enable, --disable, -g)
# against qemu-img: the bitmaps it makes are the ones qemu-img bitmap makes (qemu-img info
# lists the same names, granularities and flags; qemu-img check finds no error and no leak),
# it refuses what qemu-img refuses, and `blkfuse info` shows bitmaps in qemu-img info's layout
# (and in --json with its member names).  QEMU's view of a bitmap's bits is read through
# qemu-nbd -B and qemu-img map (see tests/qcow2-bitmap.bats).

load helpers

setup() {
    blkfuse_setup
    require qemu-img qemu-io
}

# bitmaps_of IMAGE: "NAME GRANULARITY FLAGS" per bitmap, from qemu-img info --output=json.
bitmaps_of() {
    qemu-img info -U --output=json "$1" | tr -d ' \n' |
        grep -o '{"flags":\[[^]]*\],"name":"[^"]*","granularity":[0-9]*}' |
        sed 's/{"flags":\[\([^]]*\)\],"name":"\([^"]*\)","granularity":\([0-9]*\)}/\2 \3 [\1]/' |
        tr -d '"'
}

# check_clean IMAGE: qemu-img check finds no errors and no leaks.
check_clean() {
    run qemu-img check "$1"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output != *leaked* ]]
}

@test "blkfuse bitmap: --help, bad options and missing actions" {
    run blkfuse bitmap --help
    [ "$status" -eq 0 ]
    [[ $output == *"--add"* && $output == *"--granularity"* && $output == *"--disable"* ]]
    qemu-img create -q -f qcow2 "$T/a.qcow2" 16M
    run blkfuse bitmap "$T/a.qcow2" b1
    [ "$status" -eq 2 ]
    [[ $output == *"need at least one of --add"* ]]
    run blkfuse bitmap --clear -g 64k "$T/a.qcow2" b1
    [ "$status" -eq 2 ]
    [[ $output == *"--granularity only goes with --add"* ]]
    run blkfuse bitmap --enable --disable "$T/a.qcow2" b1
    [ "$status" -eq 2 ]
    run blkfuse bitmap --add --bogus "$T/a.qcow2" b1
    [ "$status" -eq 2 ]
    run blkfuse bitmap --add "$T/a.qcow2"
    [ "$status" -eq 2 ]
    run blkfuse bitmap --add -g 12x "$T/a.qcow2" b1
    [ "$status" -eq 2 ]
}

@test "blkfuse bitmap: --add, --disable, --enable, --clear, --remove as qemu-img sees them" {
    qemu-img create -q -f qcow2 "$T/a.qcow2" 64M
    blkfuse bitmap --add "$T/a.qcow2" b1
    blkfuse bitmap "$T/a.qcow2" --add -g 128k b2     # options after operands, as qemu-img
    blkfuse bitmap --add --disable "$T/a.qcow2" b3
    run bitmaps_of "$T/a.qcow2"
    echo "$output"
    [ "$output" = "$(printf '%s\n' 'b1 65536 [auto]' 'b2 131072 [auto]' 'b3 65536 []')" ]
    check_clean "$T/a.qcow2"

    # QEMU tracks writes in them: they are valid bitmaps to it
    qemu-io -f qcow2 -c 'write 1M 64k' "$T/a.qcow2" >/dev/null
    if command -v qemu-nbd >/dev/null; then
        [ "$(dirty_map "$T/a.qcow2" b1)" = "1048576+65536" ]
        [ "$(dirty_map "$T/a.qcow2" b2)" = "1048576+131072" ]
        [ -z "$(dirty_map "$T/a.qcow2" b3)" ]
    fi

    blkfuse bitmap --clear "$T/a.qcow2" b1
    blkfuse bitmap --disable "$T/a.qcow2" b2
    blkfuse bitmap --enable "$T/a.qcow2" b3
    run bitmaps_of "$T/a.qcow2"
    echo "$output"
    [ "$output" = "$(printf '%s\n' 'b1 65536 [auto]' 'b2 131072 []' 'b3 65536 [auto]')" ]
    check_clean "$T/a.qcow2"
    if command -v qemu-nbd >/dev/null; then
        [ -z "$(dirty_map "$T/a.qcow2" b1)" ]
        [ "$(dirty_map "$T/a.qcow2" b2)" = "1048576+131072" ]     # cleared only b1
    fi

    blkfuse bitmap --remove "$T/a.qcow2" b2
    run bitmaps_of "$T/a.qcow2"
    [ "$output" = "$(printf '%s\n' 'b1 65536 [auto]' 'b3 65536 [auto]')" ]
    check_clean "$T/a.qcow2"
    blkfuse bitmap --remove "$T/a.qcow2" b1
    blkfuse bitmap --remove "$T/a.qcow2" b3
    run bitmaps_of "$T/a.qcow2"
    [ -z "$output" ]
    check_clean "$T/a.qcow2"
    # the extension is gone, and with it the autoclear bit (byte 95, bit 0)
    [ "$(od -An -tu1 -j95 -N1 "$T/a.qcow2" | tr -d ' ')" = 0 ]
}

@test "blkfuse bitmap: qemu-img removes, clears and uses what blkfuse adds, and the reverse" {
    qemu-img create -q -f qcow2 "$T/a.qcow2" 16M
    blkfuse bitmap --add "$T/a.qcow2" mine
    qemu-img bitmap --add "$T/a.qcow2" theirs
    qemu-img bitmap --disable "$T/a.qcow2" mine
    blkfuse bitmap --disable "$T/a.qcow2" theirs
    run bitmaps_of "$T/a.qcow2"
    [ "$output" = "$(printf '%s\n' 'mine 65536 []' 'theirs 65536 []')" ]
    qemu-img bitmap --remove "$T/a.qcow2" mine
    blkfuse bitmap --remove "$T/a.qcow2" theirs
    run bitmaps_of "$T/a.qcow2"
    [ -z "$output" ]
    check_clean "$T/a.qcow2"
}

@test "blkfuse bitmap: default granularity as qemu-img's (the cluster size within 4k..64k)" {
    local cs want
    for cs in 512 4k 64k 2M; do
        rm -f "$T/a.qcow2" "$T/q.qcow2"
        qemu-img create -q -f qcow2 -o cluster_size=$cs "$T/a.qcow2" 64M
        qemu-img create -q -f qcow2 -o cluster_size=$cs "$T/q.qcow2" 64M
        blkfuse bitmap --add "$T/a.qcow2" b
        qemu-img bitmap --add "$T/q.qcow2" b
        want=$(bitmaps_of "$T/q.qcow2")
        [ "$(bitmaps_of "$T/a.qcow2")" = "$want" ]
        check_clean "$T/a.qcow2"
    done
}

@test "blkfuse bitmap: refuses what qemu-img refuses, and then changes nothing" {
    qemu-img create -q -f qcow2 "$T/a.qcow2" 16M
    blkfuse bitmap --add "$T/a.qcow2" b1
    cp "$T/a.qcow2" "$T/before.qcow2"
    run blkfuse bitmap --add "$T/a.qcow2" b1
    [ "$status" -eq 1 ]
    [[ $output == *"bitmap 'b1' already exists"* ]]
    run blkfuse bitmap --remove "$T/a.qcow2" nope
    [ "$status" -eq 1 ]
    [[ $output == *"bitmap 'nope' not found"* ]]
    run blkfuse bitmap --clear "$T/a.qcow2" nope
    [ "$status" -eq 1 ]
    for g in 256 3k 4G; do
        run blkfuse bitmap --add -g $g "$T/a.qcow2" b2
        echo "$output"
        [ "$status" -eq 1 ]
        [[ $output == *"invalid granularity"* ]]
    done
    run blkfuse bitmap --add "$T/a.qcow2" "$(printf 'x%.0s' {1..1024})"
    [ "$status" -eq 1 ]
    # a refused action later on the line: the earlier one is not done either
    run blkfuse bitmap --add --remove "$T/a.qcow2" b1
    [ "$status" -eq 1 ]
    cmp "$T/a.qcow2" "$T/before.qcow2"

    qemu-img create -q -f qcow2 -o compat=0.10 "$T/v2.qcow2" 16M
    run blkfuse bitmap --add "$T/v2.qcow2" b1
    [ "$status" -eq 1 ]
    [[ $output == *"version 2"* ]]
    qemu-img create -q -f raw "$T/r.raw" 16M
    run blkfuse bitmap --add -f raw "$T/r.raw" b1
    [ "$status" -eq 1 ]
    [[ $output == *"no persistent bitmaps"* ]]
}

@test "blkfuse bitmap: an inconsistent (in-use) bitmap can only be removed" {
    require python3
    qemu-img create -q -f qcow2 "$T/a.qcow2" 16M
    qemu-img bitmap --add "$T/a.qcow2" b1
    qemu-img bitmap --add "$T/a.qcow2" b2
    # set the in-use flag of the first directory entry (flags at byte 12, bit 0)
    poke_byte "$T/a.qcow2" $(($(bitmap_directory "$T/a.qcow2") + 15)) 3
    run bitmaps_of "$T/a.qcow2"
    [[ $output == *"b1 65536 [in-use,auto]"* ]]
    run blkfuse bitmap --clear "$T/a.qcow2" b1
    [ "$status" -eq 1 ]
    [[ $output == *"inconsistent"*"remove it"* ]]
    run blkfuse bitmap --disable "$T/a.qcow2" b1
    [ "$status" -eq 1 ]
    blkfuse bitmap --remove "$T/a.qcow2" b1
    run bitmaps_of "$T/a.qcow2"
    [ "$output" = "b2 65536 [auto]" ]
    check_clean "$T/a.qcow2"
}

@test "blkfuse bitmap: refuses an image in use, as qemu-img does" {
    require_fuse
    qemu-img create -q -f qcow2 "$T/a.qcow2" 16M
    blkfuse_mount "$T/a.qcow2" "$T/mp"
    run blkfuse bitmap --add "$T/a.qcow2" b1
    echo "$output"
    [ "$status" -eq 1 ]
    blkfuse unmount "$T/mp"
    run bitmaps_of "$T/a.qcow2"
    [ -z "$output" ]
}

@test "blkfuse info: bitmaps in qemu-img info's layout, and in --json" {
    local want
    qemu-img create -q -f qcow2 "$T/a.qcow2" 16M
    qemu-img bitmap --add "$T/a.qcow2" b1
    qemu-img bitmap --add -g 1M --disable "$T/a.qcow2" b2
    # qemu-img's section: "bitmaps:" and the lines indented under it, de-indented by 4
    qemu-img info "$T/a.qcow2" |
        awk '/^    bitmaps:/ { on = 1; print substr($0, 5); next }
             on && /^        / { print substr($0, 5); next } { on = 0 }' >"$T/want"
    blkfuse info "$T/a.qcow2" |
        awk '/^bitmaps:/ { on = 1; print; next } on && /^    / { print; next } { on = 0 }' \
        >"$T/got"
    cat "$T/got"
    [ -s "$T/want" ]
    diff "$T/want" "$T/got"
    run blkfuse info --json "$T/a.qcow2"
    echo "$output"
    want='"bitmaps":[{"flags":["auto"],"name":"b1","granularity":65536},'
    want+='{"flags":[],"name":"b2","granularity":1048576}]'
    tr -d ' \n' <<<"$output" | grep -qF "$want"
    # no bitmaps: no section
    qemu-img create -q -f qcow2 "$T/n.qcow2" 16M
    run blkfuse info "$T/n.qcow2"
    [[ $output != *bitmaps* ]]
}

@test "blkfuse bitmap: an overlay whose backing file name follows the header extensions" {
    qemu-img create -q -f qcow2 "$T/base.qcow2" 16M
    qemu-io -f qcow2 -c 'write -P 3 0 16M' "$T/base.qcow2" >/dev/null
    qemu-img create -q -f qcow2 -b "$T/base.qcow2" -F qcow2 "$T/ov.qcow2"
    # the extension does not fit before the name: the name moves behind it
    blkfuse bitmap --add "$T/ov.qcow2" b1
    blkfuse bitmap --add -g 4k "$T/ov.qcow2" b2
    run qemu-img info "$T/ov.qcow2"
    echo "$output"
    [[ $output == *"backing file: $T/base.qcow2"* ]]
    run bitmaps_of "$T/ov.qcow2"
    [ "$output" = "$(printf '%s\n' 'b1 65536 [auto]' 'b2 4096 [auto]')" ]
    check_clean "$T/ov.qcow2"
    qemu-img compare "$T/ov.qcow2" "$T/base.qcow2"
    qemu-io -f qcow2 -c 'write -P 4 5M 4k' "$T/ov.qcow2" >/dev/null
    if command -v qemu-nbd >/dev/null; then
        [ "$(dirty_map "$T/ov.qcow2" b2)" = "5242880+4096" ]
    fi
    blkfuse bitmap --remove "$T/ov.qcow2" b1
    blkfuse bitmap --remove "$T/ov.qcow2" b2
    run qemu-img info "$T/ov.qcow2"
    [[ $output == *"backing file: $T/base.qcow2"* && $output != *bitmaps* ]]
    check_clean "$T/ov.qcow2"
}
