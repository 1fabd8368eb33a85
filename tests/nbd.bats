#!/usr/bin/env bats
# nbd.bats - images served over NBD (the nbd protocol driver on libnbd): raw and
# qcow2 on nbdkit and qemu-storage-daemon, on a unix socket and on 127.0.0.1;
# the server's view of the image is the oracle (qemu-img convert from the
# server, or the file the server serves).

load helpers
load nbd-helpers

setup() {
    nbd_setup
}

@test "nbd: raw on nbdkit memory over a unix socket: writes read back, and the server holds them" {
    require_nbdkit
    start_nbdkit mem memory 64M
    blkfuse_mount "$(nbd_unix_uri mem)" "$MP"
    [[ $(stat -c %s "$MP") == 67108864 ]]
    head -c 3M /dev/urandom >"$T/data"
    dd if="$T/data" of="$MP" bs=1M seek=5 conv=notrunc,fsync status=none
    cmp <(dd if="$MP" bs=1M skip=5 count=3 status=none) "$T/data"
    # A second client of the server sees what blkfuse wrote.
    qemu-img convert -f raw -O raw "$(nbd_unix_uri mem)" "$T/server.img"
    cmp "$MP" "$T/server.img"
    blkfuse unmount "$MP"
}

@test "nbd: raw on nbdkit file over 127.0.0.1: contents equal the served file, writes reach it" {
    require_nbdkit
    make_pattern "$T/served.img" 16M
    start_nbdkit_tcp tcp file "$T/served.img"
    blkfuse_mount -f raw "nbd://127.0.0.1:$NBD_PORT/" "$MP"
    cmp "$MP" "$T/served.img"
    head -c 1000 /dev/urandom >"$T/data"
    dd if="$T/data" of="$MP" bs=1000 seek=12345 conv=notrunc status=none
    blkfuse unmount "$MP"
    cmp <(dd if="$T/served.img" bs=1000 skip=12345 count=1 status=none) "$T/data"
}

@test "nbd: a qcow2 image on qemu-storage-daemon is probed, written, and passes qemu-img check" {
    require_qsd
    qemu-img create -q -f qcow2 "$T/disk.qcow2" 32M
    qemu-io -f qcow2 -c 'write -P 0x5a 1M 2M' "$T/disk.qcow2" >/dev/null
    # NBD cannot grow the file: give the qcow2 room for new clusters.
    truncate -s 48M "$T/disk.qcow2"
    start_qsd qsd "$T/disk.qcow2"
    blkfuse_mount "$(nbd_unix_uri qsd disk)" "$MP"
    run blkfuse list
    [[ $output == *qcow2* ]]
    [[ $(stat -c %s "$MP") == 33554432 ]]
    qemu-io -f raw -c 'read -P 0x5a 1M 2M' -c 'write -P 0x33 20M 1M' "$MP" >/dev/null
    head -c 1M /dev/urandom >"$T/data"
    dd if="$T/data" of="$MP" bs=1M seek=7 conv=notrunc,fsync status=none
    blkfuse unmount "$MP"
    stop_server "$NBD_PID"
    qemu-img check -q "$T/disk.qcow2"
    qemu-io -f qcow2 -c 'read -P 0x5a 1M 2M' -c 'read -P 0x33 20M 1M' "$T/disk.qcow2" >/dev/null
    qemu-img convert -f qcow2 -O raw "$T/disk.qcow2" "$T/flat.img"
    cmp <(dd if="$T/flat.img" bs=1M skip=7 count=1 status=none) "$T/data"
}

@test "nbd: an unreachable server fails the mount at once, with one line naming it" {
    local start
    start=$(_now_ms)
    run blkfuse mount --log-file "$T/daemon.log" "nbd+unix:///?socket=$T/nobody.sock" "$MP"
    ((status != 0))
    [[ ${#lines[@]} == 1 ]]
    [[ $output == *"NBD server unix:$T/nobody.sock"* ]]
    port=$(free_port)
    run blkfuse mount --log-file "$T/daemon.log" "nbd://127.0.0.1:$port/disk" "$MP"
    ((status != 0))
    [[ ${#lines[@]} == 1 ]]
    [[ $output == *"NBD server 127.0.0.1:$port"* ]]
    (($(_now_ms) - start < 10000))
    EXPECTED_LOG_ERRORS="NBD server"
}

@test "nbd: a server that accepts but never answers fails the mount after -o connect-timeout" {
    require python3
    # A socket that listens (the connection is accepted by the kernel) and never says a word.
    python3 -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(8)
open(sys.argv[2], "w").close()
time.sleep(120)' "$T/mute.sock" "$T/mute.ready" 3>&- &
    PIDS+=($!)
    wait_until 10 test -e "$T/mute.ready"
    start=$(_now_ms)
    run blkfuse mount --log-file "$T/daemon.log" -f raw -o connect-timeout=1 \
        "nbd+unix:///?socket=$T/mute.sock" "$MP"
    ((status != 0))
    [[ ${#lines[@]} == 1 ]]
    [[ $output == *"NBD server unix:$T/mute.sock: no answer within 1 s"* ]]
    elapsed=$(($(_now_ms) - start))
    ((elapsed >= 900 && elapsed < 8000))
    EXPECTED_LOG_ERRORS="NBD server"
}

@test "nbd: a read-only server: a read-write mount says to use -r, and -r mounts it read-only" {
    require_nbdkit
    start_nbdkit ro -r memory 8M
    run blkfuse mount --log-file "$T/daemon.log" -f raw "$(nbd_unix_uri ro)" "$MP"
    ((status != 0))
    [[ $output == *"NBD server unix:$T/ro.sock exports it read-only"*"-r"* ]]
    blkfuse_mount -r -f raw "$(nbd_unix_uri ro)" "$MP"
    [[ $(stat -c %a "$MP") == 400 ]]
    cmp <(head -c 8M /dev/zero) "$MP"
    blkfuse unmount "$MP"
    EXPECTED_LOG_ERRORS="read-only"
}

@test "nbd: list and info show the URI without secrets, the server and the connections" {
    require_nbdkit
    start_nbdkit mem memory 8M
    run blkfuse info "$(nbd_unix_uri mem)"
    ((status == 0))
    [[ $output == *"image: nbd+unix:///?socket=$T/mem.sock"* ]]
    [[ $output == *"server: unix:$T/mem.sock"* ]]
    [[ $output == *"connections: 1"* ]]
    blkfuse_mount -f raw "$(nbd_unix_uri mem)&tls-psk-file=/secret/keys.psk" "$MP"
    run blkfuse list
    [[ $output == *"nbd+unix:///?socket=$T/mem.sock"* ]]
    [[ $output != *secret* ]]
    ! grep -q secret "$T/daemon.log"
    blkfuse unmount "$MP"

    start_nbdkit_tcp tcp memory 8M
    blkfuse_mount -f raw "nbd://joe:hunter2@127.0.0.1:$NBD_PORT/?tls-psk-file=/secret/k.psk" "$MP"
    run blkfuse list --json
    [[ $output == *"nbd://joe@127.0.0.1:$NBD_PORT/"* ]]
    [[ $output == *'"server": "127.0.0.1:'$NBD_PORT'"'* ]]
    [[ $output != *hunter2* && $output != *secret* ]]
    ! grep -q -e hunter2 -e secret "$T/daemon.log"
    blkfuse unmount "$MP"
}

@test "nbd: bad options are refused with the option's name" {
    require_nbdkit
    start_nbdkit mem memory 8M
    run blkfuse mount -o connections=0 -f raw "$(nbd_unix_uri mem)" "$MP"
    ((status != 0))
    [[ $output == *connections* ]]
    run blkfuse mount -o tls-psk-file=/etc/hostname -f raw "$(nbd_unix_uri mem)" "$MP"
    ((status != 0))
    [[ $output == *nbds://* ]]
    run blkfuse mount -o bogus=1 -f raw "$(nbd_unix_uri mem)" "$MP"
    ((status != 0))
    [[ $output == *bogus* ]]
}

@test "nbd: trims, zero writes and FUA reach the server; SEEK_DATA/SEEK_HOLE and st_blocks follow its map" {
    require_nbdkit
    nbdkit --dump-plugin file >/dev/null 2>&1 || skip "nbdkit has no file plugin"
    make_raw "$T/served.img" 16M
    head -c 4M /dev/urandom | dd of="$T/served.img" bs=1M seek=2 conv=notrunc status=none
    start_nbdkit log --filter=log file "$T/served.img" logfile="$T/nbdkit.log"
    blkfuse_mount -f raw --cache=writethrough "$(nbd_unix_uri log)" "$MP"
    run python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print(os.lseek(fd, 0, os.SEEK_DATA), os.lseek(fd, 2 << 20, os.SEEK_HOLE))' "$MP"
    [[ $output == "2097152 6291456" ]]
    # The server's map (4 MiB of data) is what st_blocks says.
    (($(stat -c %b "$MP") * 512 == 4 << 20))
    # Write-through: the write goes with FUA.
    dd if=/dev/urandom of="$MP" bs=4k count=1 seek=100 conv=notrunc status=none
    grep -q "Write .*offset=0x64000 count=0x1000 fua=1" "$T/nbdkit.log"
    # Punching a hole trims (or zeroes with trim allowed); the file loses its blocks.
    fallocate -p -o 3M -l 1M "$MP"
    grep -qE "(Trim|Zero) .*offset=0x300000 count=0x100000" "$T/nbdkit.log"
    # Zeroing a range keeps it allocated: a zero write without trim.
    fallocate -z -o 4M -l 64k "$MP"
    grep -q "Zero .*offset=0x400000 count=0x10000 trim=0" "$T/nbdkit.log"
    blkfuse unmount "$MP"
    cmp <(dd if="$T/served.img" bs=1M skip=3 count=1 status=none) <(head -c 1M /dev/zero)
    cmp <(dd if="$T/served.img" bs=64k skip=64 count=1 status=none) <(head -c 64k /dev/zero)
    (($(stat -c %b "$T/served.img") * 512 < 4 << 20))
}

@test "nbd: connections=2 opens two connections to a multi-conn server, and falls back to one without" {
    require_nbdkit
    make_pattern "$T/served.img" 8M
    start_nbdkit log --filter=log file "$T/served.img" logfile="$T/nbdkit.log"
    blkfuse_mount -f raw -o connections=2 "$(nbd_unix_uri log)" "$MP"
    run blkfuse list --json
    [[ $output == *'"connections": 2'* ]]
    cmp "$MP" "$T/served.img"
    grep -q "connection=2 " "$T/nbdkit.log"
    blkfuse unmount "$MP"

    # A server without multi-conn: one connection, and a line in the log.
    start_nbdkit single --filter=multi-conn file "$T/served.img" multi-conn-mode=disable
    blkfuse_mount -f raw -o connections=4 "$(nbd_unix_uri single)" "$MP"
    grep -q "does not offer multi-conn: using 1 connection" "$T/daemon.log"
    run blkfuse list --json
    [[ $output == *'"connections": 1'* ]]
    blkfuse unmount "$MP"
}

@test "nbd: --queues 2: fio verify over the queues' own connections and over a shared one" {
    require_nbdkit
    require fio
    # nbdkit offers multi-conn: each queue has its own connection, driven by its own loop.
    # Without multi-conn the queues share the main loop's connection (cross-thread wake-ups).
    start_nbdkit own memory 64M
    start_nbdkit shared --filter=multi-conn memory 64M multi-conn-mode=disable
    for srv in own shared; do
        blkfuse_mount -f raw --queues 2 "$(nbd_unix_uri $srv)" "$MP"
        fio --name=v --filename="$MP" --rw=randwrite --bs=4k --size=16M --iodepth=16 \
            --ioengine=libaio --direct=1 --numjobs=2 --offset_increment=24M \
            --verify=crc32c --verify_fatal=1 --verify_state_save=0 --randrepeat=1 \
            --output="$T/fio.out"
        qemu-img convert -f raw -O raw "$(nbd_unix_uri $srv)" "$T/server.img"
        cmp "$MP" "$T/server.img"
        blkfuse unmount "$MP"
    done
}

@test "nbd: nbds+unix:// with a pre-shared key: the right key mounts, a wrong user is refused" {
    require_nbdkit
    nbdkit --dump-config | grep -qx 'tls=yes' || skip "nbdkit was built without TLS"
    echo "alice:$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$T/keys.psk"
    chmod 600 "$T/keys.psk"
    start_nbdkit tls --tls=require --tls-psk="$T/keys.psk" memory 8M
    # The server wants TLS: a plain connection is refused, naming it.
    run blkfuse mount --log-file "$T/daemon.log" -f raw "$(nbd_unix_uri tls)" "$MP"
    ((status != 0))
    [[ $output == *"NBD server unix:$T/tls.sock"*TLS* ]]
    run blkfuse mount --log-file "$T/daemon.log" -f raw -o "tls-psk-file=$T/keys.psk,tls-username=bob" \
        "nbds+unix:///?socket=$T/tls.sock" "$MP"
    ((status != 0))
    [[ $output == *"bob"* ]]
    blkfuse_mount -f raw -o "tls-psk-file=$T/keys.psk,tls-username=alice" \
        "nbds+unix:///?socket=$T/tls.sock" "$MP"
    head -c 1M /dev/urandom >"$T/data"
    dd if="$T/data" of="$MP" bs=1M conv=notrunc,fsync status=none
    cmp <(head -c 1M "$MP") "$T/data"
    blkfuse unmount "$MP"
    EXPECTED_LOG_ERRORS="NBD server"
}
