#!/usr/bin/env bats
# cli-usage.bats - usage errors of every subcommand (exit 2, a message on
# stderr naming the problem, nothing created), the options each --help lists,
# and runtime errors (exit 1).  Complements cli-basic.bats; needs no FUSE.

load helpers

setup() {
    blkfuse_setup
    cd "$T"
    truncate -s 1M disk.img
}

# expect_usage_error FRAGMENT COMMAND-ARGS...: `blkfuse COMMAND-ARGS...` exits 2
# with nothing on stdout, a "blkfuse..." message containing FRAGMENT on stderr,
# and leaves no mountpoint file behind.
expect_usage_error() {
    local fragment=$1
    shift
    run --separate-stderr blkfuse "$@"
    echo "status=$status stdout=[$output] stderr=[$stderr]"
    [ "$status" -eq 2 ]
    [ -z "$output" ]
    [[ $stderr == blkfuse* ]]
    [[ $stderr == *"$fragment"* ]]
    [ ! -e mp ]
}

# --- mount ----------------------------------------------------------------------

@test "mount with only an image is a usage error naming the missing MOUNTPOINT" {
    expect_usage_error MOUNTPOINT mount disk.img
}

@test "mount with an extra operand is a usage error naming it" {
    expect_usage_error extra-operand mount disk.img mp extra-operand
}

@test "mount with an unknown short option is a usage error naming it" {
    expect_usage_error -Z mount -Z disk.img mp
}

@test "mount --queues 0 is a usage error naming --queues" {
    expect_usage_error --queues mount --queues 0 disk.img mp
    [[ $stderr == *"'0'"* ]]
}

@test "mount --queues=abc and --queues=65 are usage errors" {
    expect_usage_error abc mount --queues=abc disk.img mp
    expect_usage_error 65 mount --queues=65 disk.img mp
}

@test "mount --cache=bogus is a usage error naming the mode" {
    expect_usage_error bogus mount --cache=bogus disk.img mp
    [[ $stderr == *--cache* ]]
}

@test "mount -f nosuchformat is a usage error naming the format" {
    expect_usage_error nosuchformat mount -f nosuchformat disk.img mp
}

@test "a mount usage error points to mount --help and starts no daemon" {
    expect_usage_error "blkfuse mount --help" mount --cache=bogus disk.img mp
    run -0 blkfuse list --json
    python3 -c 'import json, sys; assert json.loads(sys.argv[1]) == [], sys.argv[1]' "$output"
}

# --- the other subcommands ----------------------------------------------------------

@test "unmount with an extra operand is a usage error naming it" {
    expect_usage_error second unmount first second
}

@test "unmount with an unknown option is a usage error naming it" {
    expect_usage_error --bogus unmount --bogus mp
}

@test "list with an operand or an unknown option is a usage error" {
    expect_usage_error stray list stray
    expect_usage_error --bogus list --bogus
}

@test "stats without a mountpoint or with two is a usage error" {
    expect_usage_error MOUNTPOINT stats
    expect_usage_error b stats a b
}

@test "info and create without an image are usage errors" {
    expect_usage_error IMAGE info
    expect_usage_error IMAGE create
}

@test "serve with an operand is a usage error naming it" {
    expect_usage_error stray serve stray
}

@test "an unknown option before the command is a usage error naming it" {
    expect_usage_error --bogus --bogus
}

# --- help and version ------------------------------------------------------------------

@test "every subcommand's --help exits 0 with its usage line on stdout" {
    local cmd
    for cmd in mount unmount list stats info create serve; do
        run --separate-stderr blkfuse "$cmd" --help
        echo "$cmd: status=$status stderr=[$stderr]"
        [ "$status" -eq 0 ]
        [ -z "$stderr" ]
        [[ ${lines[0]} == "Usage: blkfuse $cmd "* ]]
        [[ $output == *--help* ]]
    done
}

@test "mount --help lists the mount options" {
    local opt
    run -0 --separate-stderr blkfuse mount --help
    for opt in --format --read-only --growable --cache= --queues= --options \
               --snapshot --allow-other --foreground --log-file= --verbose; do
        [[ $output == *"$opt"* ]] || { echo "mount --help lacks $opt"; false; }
    done
    # Each cache mode --cache accepts is documented.
    for opt in writeback writethrough none directsync; do
        [[ $output == *"$opt"* ]] || { echo "mount --help lacks cache mode $opt"; false; }
    done
}

@test "unmount --help lists --force, list and stats --help list --json" {
    run -0 blkfuse unmount --help
    [[ $output == *--force* ]]
    run -0 blkfuse list --help
    [[ $output == *--json* ]]
    run -0 blkfuse stats --help
    [[ $output == *--json* ]]
}

@test "the top-level --help names every subcommand" {
    local cmd
    run -0 --separate-stderr blkfuse --help
    for cmd in mount unmount list stats info create serve; do
        [[ $output == *"  $cmd "* ]] || { echo "--help lacks $cmd"; false; }
    done
}

@test "blkfuse --version prints one line 'blkfuse VERSION' on stdout only" {
    run -0 --separate-stderr blkfuse --version
    [ -z "$stderr" ]
    [ "${#lines[@]}" -eq 1 ]
    [[ $output =~ ^blkfuse\ [0-9]+\.[0-9]+\.[0-9]+ ]]
}

@test "blkfuse --version lists the optional features config.h says were built in" {
    local config=$BATS_TEST_DIRNAME/../config.h define feature listed
    run -0 blkfuse --version
    echo "$output"
    [[ $output == *"(features: "*")" ]]
    listed=" $(sed 's/.*(features: \(.*\))$/\1/; s/,//g' <<<"$output") "
    for define in LIBURING:io_uring LIBNBD:nbd LIBRBD:rbd ZLIB:zlib ZSTD:zstd; do
        feature=${define#*:}
        if grep -q "^#define CONFIG_${define%%:*} 1" "$config"; then
            [[ $listed == *" $feature "* ]] || { echo "$feature missing"; false; }
        else
            [[ $listed != *" $feature "* ]] || { echo "$feature listed"; false; }
        fi
    done
}

# --- runtime errors exit 1 ----------------------------------------------------------------

@test "unmount of a file that is not a blkfuse mount fails with exit 1" {
    touch plain
    run --separate-stderr blkfuse unmount plain
    [ "$status" -eq 1 ]
    [[ $stderr == *plain* ]]
    [ -f plain ]
}

@test "stats of a file that is not a blkfuse mount fails with exit 1" {
    touch plain
    run --separate-stderr blkfuse stats plain
    [ "$status" -eq 1 ]
    [[ $stderr == *plain* ]]
}

@test "info with a protocol format that does not match the name fails with a message" {
    # format "file" for a "null:" name used to return no node and no error: a crash
    run --separate-stderr blkfuse info -f file null:1M
    echo "status=$status stderr=[$stderr]"
    [ "$status" -eq 1 ]
    [[ $stderr == *"null:1M: format file does not match the file name"* ]]
}
