#!/usr/bin/env bats
# export-access.bats - who may open an export: its mode and owner, chmod and
# chown on it, EROFS for write bits on a read-only export, other users with and
# without --allow-other, and O_DIRECT opens.

load helpers

# The user that is not the mounting one.
OTHER_UID=65534

setup() {
    export_setup 4M
    # Let the other user reach the mountpoint, so only the export can refuse.
    chmod 0755 "$T"
}

# as_other CMD...: run CMD as the other user, without supplementary groups.
as_other() {
    setpriv --reuid="$OTHER_UID" --regid="$OTHER_UID" --clear-groups "$@"
}

# refused_to_other CMD...: CMD, run as the other user, fails with "Permission denied" and
# prints nothing on stdout.
refused_to_other() {
    run --separate-stderr as_other "$@"
    [ "$status" -ne 0 ]
    [[ $stderr == *"Permission denied"* ]]
    [ -z "$output" ]
}

# require_other: skip unless the tests can switch to the other user.
require_other() {
    require_root
    require setpriv
    as_other true 2>/dev/null || skip "cannot run as uid $OTHER_UID"
}

@test "a read-write export is mode 0600, owned by the mounting user" {
    blkfuse_mount "$IMG" "$MP"
    [ "$(stat -c %a "$MP")" = 600 ]
    [ "$(stat -c %u "$MP")" -eq "$(id -u)" ]
    [ "$(stat -c %g "$MP")" -eq "$(id -g)" ]
    [ "$(stat -c %F "$MP")" = "regular file" ]
}

@test "a read-only export is mode 0400, owned by the mounting user" {
    blkfuse_mount -r "$IMG" "$MP"
    [ "$(stat -c %a "$MP")" = 400 ]
    [ "$(stat -c %u "$MP")" -eq "$(id -u)" ]
}

@test "chmod and chown change what stat shows" {
    require_root
    blkfuse_mount "$IMG" "$MP"
    chmod 0640 "$MP"
    [ "$(stat -c %a "$MP")" = 640 ]
    chown "$OTHER_UID" "$MP"
    [ "$(stat -c %u "$MP")" -eq "$OTHER_UID" ]
    [ "$(stat -c %a "$MP")" = 640 ]
    chown ":$OTHER_UID" "$MP"
    [ "$(stat -c %g "$MP")" -eq "$OTHER_UID" ]
    # The data is unaffected.
    cmp "$MP" "$IMG"
}

@test "read-only export: chmod with write bits fails with EROFS, without works" {
    blkfuse_mount -r "$IMG" "$MP"
    run --separate-stderr chmod 0644 "$MP"
    [ "$status" -ne 0 ]
    [[ $stderr == *"Read-only file system"* ]]
    [ "$(stat -c %a "$MP")" = 400 ]
    run --separate-stderr chmod 0600 "$MP"
    [ "$status" -ne 0 ]
    [[ $stderr == *"Read-only file system"* ]]
    chmod 0440 "$MP"
    [ "$(stat -c %a "$MP")" = 440 ]
    chmod 0444 "$MP"
    [ "$(stat -c %a "$MP")" = 444 ]
}

@test "without --allow-other another user cannot read, whatever the mode" {
    require_other
    blkfuse_mount "$IMG" "$MP"
    chmod 0644 "$MP"
    refused_to_other cat "$MP"
}

@test "with --allow-other another user can read after chmod 0644" {
    require_other
    blkfuse_mount --allow-other "$IMG" "$MP"
    chmod 0644 "$MP"
    run --separate-stderr as_other sha256sum "$MP"
    [ "$status" -eq 0 ]
    [ "${output%% *}" = "$(sha256sum <"$IMG" | cut -d' ' -f1)" ]
    # Read, not write: 0644 gives the others no write permission.
    refused_to_other dd if=/dev/zero of="$MP" bs=512 count=1 conv=notrunc
}

@test "with --allow-other another user still cannot read a 0600 export" {
    require_other
    blkfuse_mount --allow-other "$IMG" "$MP"
    refused_to_other cat "$MP"
}

@test "with --allow-other chown to another user lets that user read a 0600 export" {
    require_other
    blkfuse_mount --allow-other "$IMG" "$MP"
    chown "$OTHER_UID" "$MP"
    [ "$(stat -c %a "$MP")" = 600 ]
    run --separate-stderr as_other sha256sum "$MP"
    [ "$status" -eq 0 ]
    [ "${output%% *}" = "$(sha256sum <"$IMG" | cut -d' ' -f1)" ]
}

@test "O_DIRECT reads and writes work through the export" {
    head -c 1M /dev/urandom >"$T/piece"
    cp "$IMG" "$T/ref"
    dd if="$T/piece" of="$T/ref" bs=64k seek=16 conv=notrunc status=none
    blkfuse_mount "$IMG" "$MP"
    dd if="$T/piece" of="$MP" bs=64k seek=16 oflag=direct conv=notrunc status=none
    dd if="$MP" of="$T/direct.out" bs=64k iflag=direct status=none
    cmp "$T/direct.out" "$T/ref"
    # A direct read from an offset inside the written piece.
    dd if="$MP" of="$T/direct.part" bs=4096 skip=260 count=3 iflag=direct status=none
    cmp -n 12288 "$T/direct.part" <(tail -c +$((260 * 4096 + 1)) "$T/ref")
    blkfuse unmount "$MP"
    cmp "$IMG" "$T/ref"
}
