#!/usr/bin/env bats
# completion.bats - bash completion (completion/blkfuse.bash), called as bash calls it: with
# COMP_WORDS and COMP_CWORD set.  The options it offers for each command are exactly those
# 'blkfuse CMD --help' lists, and its formats those blkfuse knows, so neither can drift.

load helpers

ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd -P)"

setup() {
    blkfuse_setup
    source "$ROOT/completion/blkfuse.bash"
}

# comp WORD...: complete the last WORD of the command line "WORD..."; print the
# candidates sorted, one a line.
comp() {
    COMP_WORDS=("$@")
    COMP_CWORD=$(($# - 1))
    COMPREPLY=()
    _blkfuse
    printf '%s\n' ${COMPREPLY[@]+"${COMPREPLY[@]}"} | sort
}

# help_options CMD: the options 'blkfuse CMD --help' lists, short and long, sorted.
help_options() {
    blkfuse "$1" --help | sed -nE 's/^ +(-([a-zA-Z]), )?(--[a-z][a-z-]*).*/\2 \3/p' |
        tr ' ' '\n' | sed '/^$/d; s/^\([a-zA-Z]\)$/-\1/' | sort -u
}

@test "the commands complete, with --help and --version" {
    run comp blkfuse ""
    [ "$status" -eq 0 ]
    for cmd in mount unmount list stats info create serve check --help --version; do
        grep -qx -- "$cmd" <<<"$output" || { echo "missing $cmd in: $output"; false; }
    done
    run comp blkfuse un
    [ "$output" = unmount ]
}

@test "every command's options are exactly those its --help lists" {
    local cmd
    for cmd in mount unmount list stats info create serve check; do
        run diff <(help_options "$cmd") <(comp blkfuse "$cmd" -)
        [ "$status" -eq 0 ] || { echo "blkfuse $cmd: --help (<) and completion (>) differ:"; \
            echo "$output"; false; }
        # At least the long options, never empty.
        [ "$(help_options "$cmd" | wc -l)" -ge 2 ]
    done
    [ "$(comp blkfuse mount --rea)" = --read-only ]
}

@test "format names are those blkfuse knows" {
    local known
    known=$(blkfuse mount -f no-such-format a b 2>&1 | sed -n 's/.*(known: \(.*\)).*/\1/p' |
        tr -d ',' | tr ' ' '\n' | sort)
    [ -n "$known" ]
    [ "$(comp blkfuse mount -f "")" = "$known" ]
    [ "$(comp blkfuse create --format=q)" = --format=qcow2 ]
    [ "$(comp blkfuse create -b base.qcow2 -F "")" = "$known" ]
    [ "$(comp blkfuse info --format = r)" = raw ]
}

@test "option values complete: cache modes, transports, -o keys, repair modes" {
    # "--cache=writet" is one word when COMP_WORDBREAKS has no '=': the reply keeps "--cache=".
    [ "$(comp blkfuse mount --cache=writet)" = --cache=writethrough ]
    [ "$(comp blkfuse mount --cache = di)" = directsync ]
    [ "$(comp blkfuse mount --transport "")" = "$(printf 'auto\ndev\nuring')" ]
    [ "$(comp blkfuse mount --passthrough o)" = "$(printf 'off\non')" ]
    [ "$(comp blkfuse mount -o ro,form)" = ro,format= ]
    [ "$(comp blkfuse create -o cluster_size=64k,lazy)" = cluster_size=64k,lazy_refcounts= ]
    [ "$(comp blkfuse check -r a)" = all ]
    [ "$(comp blkfuse check --output j)" = json ]
    # mount -r is --read-only, a flag: the next word is the image.
    touch "$T/disk.qcow2"
    [ "$(comp blkfuse mount -r "$T/disk.q")" = "$T/disk.qcow2" ]
}

@test "image files complete for mount, info, check and create; not past the operands" {
    touch "$T/disk.qcow2" "$T/disk.raw"
    [ "$(comp blkfuse mount "$T/disk.q")" = "$T/disk.qcow2" ]
    [ "$(comp blkfuse mount -f qcow2 "$T/disk.qcow2" "$T/disk.r")" = "$T/disk.raw" ]
    [ -z "$(comp blkfuse mount "$T/disk.qcow2" "$T/disk.raw" "$T/d")" ]
    [ "$(comp blkfuse info "$T/disk.r")" = "$T/disk.raw" ]
    [ "$(comp blkfuse check -r leaks "$T/disk.q")" = "$T/disk.qcow2" ]
    [ "$(comp blkfuse create -f qcow2 -o compat=1.1 "$T/disk.q")" = "$T/disk.qcow2" ]
    [ -z "$(comp blkfuse create "$T/new.qcow2" "1")" ]
}

@test "unmount, umount and stats complete the mountpoints of mounted exports" {
    require_fuse
    make_pattern "$T/a.img" 1M
    make_pattern "$T/b.img" 1M
    blkfuse_mount "$T/a.img" "$T/a.mnt"
    blkfuse_mount "$T/b.img" "$T/b.mnt"
    run comp blkfuse unmount ""
    echo "$output"
    [ "$output" = "$(printf '%s\n%s' "$T/a.mnt" "$T/b.mnt")" ]
    [ "$(comp blkfuse stats --json "$T/a")" = "$T/a.mnt" ]
    [ "$(comp blkfuse umount --force "$T/b")" = "$T/b.mnt" ]
    [ -z "$(comp blkfuse stats "$T/a.mnt" "")" ]
    blkfuse unmount "$T/a.mnt"
    [ "$(comp blkfuse unmount "")" = "$T/b.mnt" ]
}

@test "mountpoints with spaces and either JSON layout (key: or key :) complete whole" {
    blkfuse() {
        printf '[\n  {\n    "id": "a",\n    "mountpoint": "/mnt/with space.img",\n  },\n'
        printf '  {\n    "mountpoint" : "/mnt/plain.img"\n  }\n]\n'
    }
    [ "$(comp blkfuse unmount /mnt/w)" = "/mnt/with space.img" ]
    [ "$(comp blkfuse unmount /mnt/p)" = "/mnt/plain.img" ]
    unset -f blkfuse
}
