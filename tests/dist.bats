#!/usr/bin/env bats
# dist.bats - the release tarball: `make dist` packs exactly the files git tracks, and
# `make distcheck` configures, builds, installs and uninstalls from the unpacked tarball alone.

load helpers

setup() {
    blkfuse_setup
    REPO=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
    git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1 ||
        skip "not a git checkout (make dist packs the files git tracks)"
    [[ -f $REPO/Makefile ]] || skip "not configured"
    VERSION=$(sed -n 's/^VERSION = //p' "$REPO/config.mk")
}

@test "make dist packs exactly the files git tracks, under blkfuse-VERSION/" {
    make -C "$REPO" --no-print-directory dist DIST_DIR="$T"
    [ -f "$T/blkfuse-$VERSION.tar.gz" ]
    tar -tzf "$T/blkfuse-$VERSION.tar.gz" | grep -v '/$' | sed "s|^blkfuse-$VERSION/||" |
        sort >"$T/packed"
    git -C "$REPO" ls-files | sort >"$T/tracked"
    diff -u "$T/tracked" "$T/packed"
    # Nothing of the build or the configuration travels.
    run ! grep -E '^(build|config\.mk|config\.h|Makefile)(/|$)' "$T/packed"
    # Executables stay executable.
    tar -tvzf "$T/blkfuse-$VERSION.tar.gz" "blkfuse-$VERSION/configure" | grep -q '^-rwx'
}

@test "make distcheck builds, installs and uninstalls from the tarball alone" {
    run make -C "$REPO" --no-print-directory distcheck DIST_DIR="$T" DISTCHECK_TARGET=all
    echo "$output" | tail -20
    [ "$status" -eq 0 ]
    [[ $output == *"blkfuse-$VERSION.tar.gz is ready for distribution"* ]]
    [[ $output == *"blkfuse $VERSION"* ]]
}
