#!/usr/bin/env bats
# mount-helper.bats - blkfuse under mount(8): "mount -t fuse.blkfuse", fstab lines (through
# "mount --fstab FILE", never /etc/fstab), umount(8) ending the export, the helper's own
# flags and exit statuses, and the -o spelling of every "blkfuse mount" option.
#
# mount(8) looks for its helper only in /sbin.  The tests never touch it: each runs mount(8)
# in a private mount namespace in which an overlay on the sbin directory adds the in-tree
# blkfuse as mount.fuse.blkfuse (see in_mount_ns).  Daemons started there live in that
# namespace; teardown kills any left over (their command lines name $T), which ends it.

load helpers

setup() {
    export_setup 4M
}

# Skip unless mount(8) can be run in a private mount namespace with an overlay on sbin.
require_mount_ns() {
    require_root
    require unshare mount umount
    grep -qw overlay /proc/filesystems || skip "needs overlayfs (for a private /sbin)"
    unshare -m --propagation private true 2>/dev/null || skip "needs unshare -m"
}

# in_mount_ns SCRIPT: run SCRIPT (bash) in a private mount namespace where mount(8) finds
# the in-tree blkfuse as /sbin/mount.fuse.blkfuse.  helpers.bash's functions are there.
in_mount_ns() {
    local sbin blkfuse
    sbin=$(readlink -f /sbin)
    blkfuse=$(command -v blkfuse)
    mkdir -p "$T/sbin"
    ln -sf "$blkfuse" "$T/sbin/mount.fuse.blkfuse"
    export -f is_mounted _abspath wait_for_pid_exit _wait _not _pid_alive _now_ms
    unshare -m --propagation private bash -c '
        mount -t overlay blkfuse-test-sbin -o "lowerdir=$1:$2" "$2" ||
            { echo "in_mount_ns: cannot put an overlay on $2" >&2; exit 99; }
        shift 2
        set -e
        eval "$1"' in_mount_ns "$T/sbin" "$sbin" "$1"
}

# The export's daemon pid, from blkfuse list --json (one export).
list_pid() {
    blkfuse list --json | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["pid"])'
}
export -f list_pid

@test "mount -t fuse.blkfuse IMAGE MOUNTPOINT -o ro,format=qcow2 exports it; umount ends it" {
    require_mount_ns
    require qemu-img python3
    qemu-img convert -f raw -O qcow2 "$IMG" "$T/disk.qcow2"
    export IMG MP
    run in_mount_ns '
        mount -t fuse.blkfuse "$T/disk.qcow2" "$MP" -o ro,format=qcow2
        is_mounted "$MP"
        cmp "$MP" "$IMG"
        findmnt -n -o FSTYPE,SOURCE "$MP"
        blkfuse list --json | python3 -c "import json, sys; e = json.load(sys.stdin)[0]; \
            print(\"format\", e[\"format\"], \"read_only\", e[\"read_only\"])"
        ! dd if=/dev/zero of="$MP" bs=512 count=1 conv=notrunc 2>/dev/null
        pid=$(list_pid)
        umount "$MP"
        wait_for_pid_exit "$pid"
        echo "after umount: $(ls -A "$T/run/blkfuse" | wc -l) files in the runtime dir"
        [ ! -e "$MP" ] && echo "mountpoint removed"'
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == *"fuse.blkfuse $T/disk.qcow2"* ]]
    [[ $output == *"format qcow2 read_only True"* ]]
    [[ $output == *"after umount: 0 files in the runtime dir"* ]]
    [[ $output == *"mountpoint removed"* ]]
}

@test "an fstab line (mount --fstab FILE MOUNTPOINT) mounts; fstab-only options are ignored" {
    require_mount_ns
    require python3
    touch "$MP"        # systemd creates missing mountpoints as directories: this one exists
    printf '# test fstab\n%s %s fuse.blkfuse %s 0 0\n' "$IMG" "$MP" \
        'noauto,ro,_netdev,nofail,x-systemd.automount,x-systemd.device-timeout=5,comment=x,nosuid,nodev,noexec,defaults,users,format=raw,cache=writethrough' \
        >"$T/fstab"
    export IMG MP
    run in_mount_ns '
        mount --fstab "$T/fstab" "$MP"
        is_mounted "$MP"
        cmp "$MP" "$IMG"
        blkfuse list --json | python3 -c "import json, sys; e = json.load(sys.stdin)[0]; \
            print(\"format\", e[\"format\"], \"read_only\", e[\"read_only\"], \"cache\", \
                  e.get(\"cache\"))"
        pid=$(list_pid)
        umount "$MP"
        wait_for_pid_exit "$pid"
        ! is_mounted "$MP"
        [ -f "$MP" ] && echo "the mountpoint it did not create stays"
        # -T is --fstab; mounting by the image name works as well.
        mount -T "$T/fstab" "$IMG"
        is_mounted "$MP"
        pid=$(list_pid)
        umount "$MP"
        wait_for_pid_exit "$pid"'
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == *"format raw read_only True"* ]]
    [[ $output == *"the mountpoint it did not create stays"* ]]
}

@test "the mount unit systemd-fstab-generator makes of an fstab line starts and stops" {
    require_mount_ns
    require python3
    local gen=/lib/systemd/system-generators/systemd-fstab-generator unit what where type opts
    [[ -x $gen ]] || skip "needs $gen"
    printf '%s %s fuse.blkfuse noauto,nofail,ro,format=raw,_netdev,x-systemd.device-timeout=5 0 0\n' \
        "$IMG" "$MP" >"$T/fstab"
    mkdir "$T/gen"
    SYSTEMD_FSTAB=$T/fstab "$gen" "$T/gen" "$T/gen" "$T/gen"
    unit=$(ls "$T/gen"/*.mount)
    cat "$unit"
    if command -v systemd-analyze >/dev/null; then
        run systemd-analyze verify --man=no "$unit"
        echo "$output"
        [ -z "$output" ]
    fi
    what=$(sed -n 's/^What=//p' "$unit")
    where=$(sed -n 's/^Where=//p' "$unit")
    type=$(sed -n 's/^Type=//p' "$unit")
    # systemd drops nofail, noauto and auto from Options= and runs
    # "mount WHAT WHERE -t TYPE -o OPTIONS" to start, "umount WHERE -c" to stop.
    opts=$(sed -n 's/^Options=//p' "$unit" | tr ',' '\n' | grep -vxE 'nofail|noauto|auto' |
        paste -sd, -)
    [ "$where" = "$MP" ]
    touch "$MP"         # systemd would create a missing one as a directory
    export what where type opts MP
    run in_mount_ns '
        mount "$what" "$where" -t "$type" -o "$opts"
        is_mounted "$MP"
        blkfuse list --json | python3 -c "import json, sys; e = json.load(sys.stdin)[0]; \
            print(\"read_only\", e[\"read_only\"], \"format\", e[\"format\"])"
        pid=$(list_pid)
        umount "$where" -c
        wait_for_pid_exit "$pid"
        ! is_mounted "$MP"
        echo stopped'
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == *"read_only True format raw"* ]]
    [[ $output == *stopped ]]
}

@test "mount(8) reports a refused mount with the helper's status and message; nothing is left" {
    require_mount_ns
    mkdir "$T/dir"
    export IMG MP
    run in_mount_ns '
        set +e
        mount -t fuse.blkfuse "$T/missing.img" "$MP"; echo "missing image: $?"
        mount -t fuse.blkfuse "$IMG" "$MP" -o format=raw,no-such-option=1; echo "bad option: $?"
        mount -t fuse.blkfuse "$IMG" "$MP" -o queues=many; echo "bad value: $?"
        mount -t fuse.blkfuse "$IMG" "$T/dir"; echo "directory: $?"
        ls -A "$T/run/blkfuse" 2>/dev/null | sed "s/^/left: /"
        [ -e "$MP" ] && echo "left: $MP"
        true'
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == *"missing image: 32"* ]]
    [[ $output == *"no-such-option"* ]]
    [[ $output == *"bad option: 32"* ]]
    [[ $output == *"--queues"*"bad value: 1"* ]]
    [[ $output == *"is a directory"*"directory: 32"* ]]
    [[ $output != *"left: "* ]]
}

@test "mount.fuse.blkfuse: -f mounts nothing, -v says what it runs, -n and -s are accepted" {
    local helper
    helper="$T/mount.fuse.blkfuse"
    ln -s "$(command -v blkfuse)" "$helper"
    run "$helper" "$IMG" "$MP" -f -v -n -s -o ro,format=raw
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == *"blkfuse: mount -o ro,format=raw $IMG $MP"* ]]
    run ! is_mounted "$MP"
    [ ! -e "$MP" ]
    run "$helper" --help
    [ "$status" -eq 0 ]
    [[ $output == *"Usage: "*"IMAGE MOUNTPOINT"* ]]
    run "$helper" "$IMG"
    [ "$status" -eq 1 ]
    run "$helper" "$IMG" "$MP" -q
    [ "$status" -eq 1 ]
    [[ $output == *"unknown mount helper option '-q'"* ]]
    run "$helper" "$IMG" "$MP" -t fuse.other
    [ "$status" -eq 1 ]
}

@test "the helper mounts by itself as mount(8) calls it, and -N enters a mount namespace" {
    require_root
    ln -s "$(command -v blkfuse)" "$T/mount.fuse.blkfuse"
    MOUNTS+=("$MP")
    "$T/mount.fuse.blkfuse" "$IMG" "$MP" -n -o rw,format=raw,id=vm -t fuse.blkfuse -N $$
    is_mounted "$MP"
    cmp "$MP" "$IMG"
    blkfuse list | grep -q '^vm '
    blkfuse unmount "$MP"
}

@test "every option of blkfuse mount has a -o spelling" {
    require python3
    blkfuse_mount -o format=raw,read-only=off,growable,cache=writethrough,queues=2,transport=dev,id=byo,stats=coarse,passthrough=off,allow_other=no,verbose "$IMG" "$MP"
    blkfuse list --json | python3 -c '
import json, sys
e = json.load(sys.stdin)[0]
print(e)
assert e["id"] == "byo" and e["format"] == "raw" and not e["read_only"] and e["growable"]
assert e["queues"] == 2 and e["transport"] == "dev" and e["passthrough_mode"] == "off"
assert e["cache"] == "writethrough" and e["stats_mode"] == "coarse"
'
    blkfuse unmount "$MP"
    # Mount options and the driver's own (raw offset=) in one list.
    blkfuse_mount -o ro,offset=4096,format=raw "$IMG" "$MP"
    [ "$(stat -c %s "$MP")" -eq $((4 * 1048576 - 4096)) ]
    cmp "$MP" "$IMG" 0 4096
    blkfuse list --json | python3 -c '
import json, sys
assert json.load(sys.stdin)[0]["read_only"]'
}

@test "each long option blkfuse mount --help lists is reached by its -o spelling" {
    # --NAME=A with -o NAME=B (or --FLAG with -o FLAG=off) is refused as a contradiction only
    # when -o NAME means --NAME: proof without mounting anything.
    local name arg checked=0
    while read -r name arg; do
        [[ $name == options || $name == help ]] && continue
        if [[ -n $arg ]]; then
            run blkfuse mount "--$name=one" -o "$name=two" "$IMG" "$MP"
        else
            run blkfuse mount "--$name" -o "$name=off" "$IMG" "$MP"
        fi
        [[ $output == *"contradicts --$name"* ]] || { echo "-o $name: $output"; false; }
        ((++checked))
    done < <(blkfuse mount --help |
             sed -nE 's/^ +(-[a-zA-Z], )?--([a-z][a-z-]*)([ =][^ ]+)? .*/\2 \3/p')
    echo "$checked options checked"
    [ "$checked" -ge 17 ]
    [ ! -e "$MP" ]
}

@test "the -o spelling of an option cannot contradict the option given as well" {
    run blkfuse mount --format=raw -o format=qcow2 "$IMG" "$MP"
    [ "$status" -eq 2 ]
    [[ $output == *"-o format=qcow2 contradicts --format"* ]]
    run blkfuse mount -o queues "$IMG" "$MP"
    [ "$status" -eq 2 ]
    [[ $output == *"-o queues needs a value"* ]]
    run blkfuse mount -o growable=maybe "$IMG" "$MP"
    [ "$status" -eq 2 ]
    [[ $output == *"takes no value, or on or off"* ]]
    [ ! -e "$MP" ]
}
