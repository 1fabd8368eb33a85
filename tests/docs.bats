#!/usr/bin/env bats
# docs.bats - the man pages render without warnings and document every option --help lists.

load helpers

ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"

@test "man pages render with man -l without warnings" {
    require man
    local page
    for page in "$ROOT"/man/*.[0-9]; do
        run env LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$page"
        [ "$status" -eq 0 ]
        run bash -c "LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l '$page' 2>&1 >/dev/null"
        [ -z "$output" ] || { echo "$page: $output"; false; }
    done
}

@test "blkfuse(1) documents every long option of every command's --help" {
    local cmd opt missing=()
    for cmd in mount unmount list stats info create serve check bitmap map copy-ranges; do
        for opt in $(blkfuse "$cmd" --help | grep -oE -- '--[a-z][a-z-]*' | sort -u); do
            # man escapes '-' as '\-'
            grep -qF -- "${opt//-/\\-}" "$ROOT/man/blkfuse.1" || missing+=("$cmd $opt")
        done
    done
    [ ${#missing[@]} -eq 0 ] || { printf 'not in man/blkfuse.1: %s\n' "${missing[@]}"; false; }
}

@test "the README names the test command and every command" {
    local cmd
    grep -q "make check" "$ROOT/README.md"
    for cmd in mount unmount list stats info create serve check bitmap map copy-ranges; do
        grep -q "blkfuse $cmd" "$ROOT/README.md" || { echo "README lacks blkfuse $cmd"; false; }
    done
}
