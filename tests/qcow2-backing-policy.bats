#!/usr/bin/env bats
# qcow2-backing-policy.bats - which backing file an image's header may name:
# a plain local path is opened (a relative one from the image's directory,
# never the current one); a protocol or json: name (nbd:, null:, null-co://,
# json:{...}) only with --allow-remote-backing, for mount, mount --daemon,
# info and create.

load helpers
load control-helpers

setup() {
    blkfuse_setup
    require qemu-img
    # Every test mounts on $T/m, if anything; a mount that should fail but does not
    # is cleaned up by teardown.
    MOUNTS+=("$T/m")
    EXPECTED_LOG_ERRORS="is not a local path|json: names are not supported|unknown protocol"
}

# top_with_backing NAME IMAGE: a 4 MiB qcow2 IMAGE whose header names the
# backing file NAME (format raw), written without opening NAME.
top_with_backing() {
    qemu-img create -q -f qcow2 -u -b "$1" -F raw "$2" 4M
}

@test "mount refuses a json:, null-co:// or nbd: backing name, naming the option" {
    require_fuse
    local name
    for name in 'json:{"driver":"raw","file":{"driver":"file","filename":"/etc/passwd"}}' \
        'null-co://' 'nbd:localhost:10809' 'nbd+unix:///x?socket=/tmp/s'; do
        top_with_backing "$name" "$T/top.qcow2"
        run --separate-stderr blkfuse mount --log-file "$T/daemon.log" "$T/top.qcow2" "$T/m"
        echo "$name: $stderr"
        [ "$status" -ne 0 ]
        [[ $stderr == *"backing file '$name' is not a local path"* ]]
        [[ $stderr == *"--allow-remote-backing"* ]]
        ! is_mounted "$T/m"
    done
}

@test "with --allow-remote-backing, a protocol blkfuse lacks or json: still fails clearly" {
    require_fuse
    top_with_backing 'json:{"driver":"null-co"}' "$T/json.qcow2"
    run --separate-stderr blkfuse mount --log-file "$T/daemon.log" --allow-remote-backing "$T/json.qcow2" "$T/m"
    [ "$status" -ne 0 ]
    [[ $stderr == *"json: names are not supported"* ]]
    top_with_backing 'null-co://' "$T/nullco.qcow2"
    run --separate-stderr blkfuse mount --log-file "$T/daemon.log" --allow-remote-backing "$T/nullco.qcow2" \
        "$T/m"
    [ "$status" -ne 0 ]
    [[ $stderr == *"unknown protocol 'null-co'"* ]]
    ! is_mounted "$T/m"
}

@test "a null: backing file opens only with --allow-remote-backing, also through mount --daemon" {
    require_fuse
    require python3
    top_with_backing null:4M "$T/top.qcow2"
    run --separate-stderr blkfuse mount --log-file "$T/daemon.log" "$T/top.qcow2" "$T/m"
    [ "$status" -ne 0 ]
    [[ $stderr == *"backing file 'null:4M' is not a local path"* ]]

    blkfuse_mount --allow-remote-backing "$T/top.qcow2" "$T/m"
    cmp "$T/m" <(head -c 4M /dev/zero)
    blkfuse unmount "$T/m"

    SOCK=$T/s.sock
    start_serve
    run blkfuse mount --daemon "$SOCK" "$T/top.qcow2" "$T/m"
    [ "$status" -ne 0 ]
    [[ $output == *"is not a local path"*"--allow-remote-backing"* ]]
    ! is_mounted "$T/m"
    blkfuse_mount --daemon "$SOCK" --allow-remote-backing "$T/top.qcow2" "$T/m"
    cmp "$T/m" <(head -c 4M /dev/zero)
    blkfuse unmount "$T/m"
}

@test "--snapshot of a null: image needs no option: the overlay's backing name is the user's" {
    require_fuse
    blkfuse_mount --snapshot null:16M "$T/m"
    [[ $(stat -c %s "$T/m") -eq 16777216 ]]
    blkfuse unmount "$T/m"
}

@test "info shows the image without a protocol backing file (with a warning) unless allowed" {
    top_with_backing null:4M "$T/top.qcow2"
    run --separate-stderr blkfuse info --json "$T/top.qcow2"
    [ "$status" -eq 0 ]
    [[ $stderr == *"warning"*"backing file 'null:4M' is not a local path"* ]]
    [[ $(json_get backing_file <<<"$output") == null:4M ]]
    [[ $(json_get backing_chain <<<"$output" | python3 -c 'import sys; print(sys.stdin.read().count("filename"))') -eq 1 ]]

    run --separate-stderr blkfuse info --json --allow-remote-backing "$T/top.qcow2"
    [ "$status" -eq 0 ]
    [[ -z $stderr ]]
    [[ $(json_get backing_chain 1 filename <<<"$output") == null:4M ]]
}

@test "create refuses a protocol backing name unless --allow-remote-backing is given" {
    run blkfuse create -f qcow2 -b null:4M -F raw "$T/top.qcow2"
    [ "$status" -eq 2 ]
    [[ $output == *"--backing 'null:4M' is not a local path"* ]]
    [[ ! -e $T/top.qcow2 ]]
    blkfuse create -f qcow2 -b null:4M -F raw --allow-remote-backing "$T/top.qcow2"
    [[ $(qemu-img info --output=json "$T/top.qcow2" | json_get backing-filename) == null:4M ]]
    [[ $(qemu-img info --output=json "$T/top.qcow2" | json_get virtual-size) -eq 4194304 ]]
}

# base_and_decoy: $T/img/top.qcow2 whose backing file is the relative name
# "backing/base:1.raw" (a colon after a slash: a path, not a protocol), and a
# decoy with other contents at the same relative name in $T/elsewhere.
base_and_decoy() {
    mkdir -p "$T/img/backing" "$T/elsewhere/backing"
    make_pattern "$T/img/backing/base:1.raw" 4M
    head -c 4M /dev/urandom >"$T/elsewhere/backing/base:1.raw"
    (cd "$T/img" && qemu-img create -q -f qcow2 -u -b "backing/base:1.raw" -F raw top.qcow2 4M)
    [[ $(qemu-img info --output=json "$T/img/top.qcow2" | json_get backing-filename) == "backing/base:1.raw" ]]
}

@test "a relative backing name is found in the image's directory, not the current one" {
    require_fuse
    base_and_decoy
    (cd "$T/elsewhere" && blkfuse mount --log-file "$T/daemon.log" ../img/top.qcow2 "$T/m" 3>&-)
    MOUNTS+=("$T/m")
    cmp "$T/m" "$T/img/backing/base:1.raw"
    blkfuse unmount "$T/m"

    run blkfuse info --json "$T/img/top.qcow2"
    [ "$status" -eq 0 ]
    [[ $(json_get backing_chain 1 filename <<<"$output") == "$T/img/backing/base:1.raw" ]]
    (cd "$T/elsewhere" && blkfuse info --json ../img/top.qcow2) >"$T/info.json"
    [[ $(json_get backing_chain 1 filename <"$T/info.json") == "$T/img/backing/base:1.raw" ]]
}

@test "a serve daemon started in another directory finds a relative backing file" {
    require_fuse
    require python3
    base_and_decoy
    SOCK=$T/s.sock
    (cd "$T/elsewhere" && start_serve && echo "$SERVE_PID" >"$T/serve.pid")
    PIDS+=("$(cat "$T/serve.pid")")
    (cd "$T/elsewhere" && blkfuse mount --daemon "$SOCK" ../img/top.qcow2 "$T/m")
    MOUNTS+=("$T/m")
    is_mounted "$T/m"
    cmp "$T/m" "$T/img/backing/base:1.raw"
    blkfuse unmount "$T/m"
}
