#!/usr/bin/env bats
# cli-basic.bats - blkfuse's command line contract: help, version, usage errors.
#
# Usage errors exit 2, runtime errors exit 1, messages go to stderr as
# "blkfuse: ..." (or "blkfuse COMMAND: ...").  These tests need only the binary.

load helpers

# Matches a message from blkfuse itself at the start of stderr.
BLKFUSE_MSG_RE='^blkfuse( [a-z]+)?: '

@test "blkfuse --help exits 0 and mentions mount" {
    run --separate-stderr blkfuse --help
    [ "$status" -eq 0 ]
    [[ $output == *mount* ]]
}

@test "blkfuse --version prints the version" {
    local version
    version=$(sed -n 's/^#define BLKFUSE_VERSION "\(.*\)"$/\1/p' "$BATS_TEST_DIRNAME/../config.h")
    [ -n "$version" ]
    run --separate-stderr blkfuse --version
    [ "$status" -eq 0 ]
    [[ $output == *"$version"* ]]
}

@test "blkfuse with an unknown command is a usage error" {
    run --separate-stderr blkfuse nosuchcmd
    [ "$status" -eq 2 ]
    [[ $stderr =~ $BLKFUSE_MSG_RE ]]
    [[ $stderr == *nosuchcmd* ]]
}

@test "blkfuse without a command is a usage error" {
    run --separate-stderr blkfuse
    [ "$status" -eq 2 ]
    [ -n "$stderr" ]
}

@test "blkfuse mount without arguments is a usage error" {
    run --separate-stderr blkfuse mount
    [ "$status" -eq 2 ]
    [[ $stderr =~ $BLKFUSE_MSG_RE ]]
}

@test "blkfuse mount with an unknown option names it" {
    cd "$T"
    run --separate-stderr blkfuse mount --bogus x y
    [ "$status" -eq 2 ]
    [[ $stderr =~ $BLKFUSE_MSG_RE ]]
    [[ $stderr == *--bogus* ]]
    [ ! -e y ]
}

@test "blkfuse mount --help exits 0" {
    run --separate-stderr blkfuse mount --help
    [ "$status" -eq 0 ]
    [[ $output == *mount* ]]
}

@test "blkfuse unmount --help exits 0" {
    run --separate-stderr blkfuse unmount --help
    [ "$status" -eq 0 ]
    [[ $output == *unmount* ]]
}

@test "blkfuse unmount without arguments is a usage error" {
    run --separate-stderr blkfuse unmount
    [ "$status" -eq 2 ]
    [[ $stderr =~ $BLKFUSE_MSG_RE ]]
}
