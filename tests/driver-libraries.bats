#!/usr/bin/env bats
# driver-libraries.bats - the remote drivers load their client libraries (libnbd; librados
# and librbd) with dlopen at the first open of their protocol: when a library cannot be
# loaded, the open fails with a message that names its soname and the package to install.
#
# A library that cannot be loaded is simulated with a broken file of its soname in a
# directory first on LD_LIBRARY_PATH, which dlopen tries before the system's copy.

load helpers

# require_feature NAME: skip unless `blkfuse --version` lists the optional feature NAME.
require_feature() {
    [[ $(blkfuse --version) == *"features:"*"$1"* ]] || skip "blkfuse built without $1"
}

# broken_lib SONAME...: an empty file for each SONAME in $T/lib (dlopen: "file too short").
broken_lib() {
    local so
    mkdir -p "$T/lib"
    for so in "$@"; do
        : >"$T/lib/$so"
    done
}

@test "nbd: a libnbd that cannot be loaded is named, with the package to install" {
    require_feature nbd
    broken_lib libnbd.so.0
    run --separate-stderr env LD_LIBRARY_PATH="$T/lib" blkfuse info "nbd+unix:///?socket=$T/none.sock"
    echo "$stderr"
    [ "$status" -eq 1 ]
    [[ $stderr == "blkfuse: nbd: cannot load libnbd.so.0 ($T/lib/libnbd.so.0: "*"): install it (Debian: libnbd0)" ]]
}

@test "nbd: a mount whose libnbd cannot be loaded fails with that message and leaves nothing" {
    require_feature nbd
    require_fuse
    broken_lib libnbd.so.0
    EXPECTED_LOG_ERRORS='cannot load libnbd.so.0'
    run --separate-stderr env LD_LIBRARY_PATH="$T/lib" \
        blkfuse mount --log-file "$BLKFUSE_LOG" -f raw "nbd+unix:///?socket=$T/none.sock" "$T/mp"
    echo "$stderr"
    [ "$status" -eq 1 ]
    [[ $stderr == *"nbd: cannot load libnbd.so.0 ("*"): install it (Debian: libnbd0)"* ]]
    [ ! -e "$T/mp" ]
}

@test "rbd: a librados or librbd that cannot be loaded is named, with the package to install" {
    require_feature rbd
    broken_lib librados.so.2
    run --separate-stderr env LD_LIBRARY_PATH="$T/lib" blkfuse info rbd:pool/image
    echo "$stderr"
    [ "$status" -eq 1 ]
    [[ $stderr == "blkfuse: rbd: cannot load librados.so.2 ($T/lib/librados.so.2: "*"): install it (Debian: librbd1, Ceph 15 or later)" ]]
    # librados loads (the system's), librbd does not
    ldconfig -p 2>/dev/null | grep -q 'librados\.so\.2 ' || skip "needs the system's librados.so.2"
    rm "$T/lib/librados.so.2"
    broken_lib librbd.so.1
    run --separate-stderr env LD_LIBRARY_PATH="$T/lib" blkfuse info rbd:pool/image
    echo "$stderr"
    [ "$status" -eq 1 ]
    [[ $stderr == "blkfuse: rbd: cannot load librbd.so.1 ($T/lib/librbd.so.1: "*"): install it (Debian: librbd1, Ceph 15 or later)" ]]
}
