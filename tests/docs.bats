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

@test "the README's first command installs exactly the packages .ci/run installs" {
    local first readme ci
    first=$(awk '/^## Quick start/ { q = 1 } q && /^```sh/ { getline; print; exit }' "$ROOT/README.md")
    [[ $first == *"apt-get install -y "*" && ./configure && make demo" ]] ||
        { echo "unexpected first command: $first"; false; }
    readme=$(sed 's/.*apt-get install -y //; s/ &&.*//' <<<"$first" | tr ' ' '\n' | sort)
    ci=$(sed -n '/^packages=(/,/^)/p' "$ROOT/.ci/run" | sed '1d;$d' | tr -s ' \n' '\n\n' |
        sed '/^$/d' | sort)
    [ -n "$ci" ]
    diff <(echo "$readme") <(echo "$ci") || { echo "README and .ci/run install different packages"; false; }
}
