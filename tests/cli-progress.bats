#!/usr/bin/env bats
# cli-progress.bats - -p prints progress, as qemu-img -p does, on stderr: for create with full
# preallocation and for check (and repair); only with -p and only when stderr is a terminal
# (script(1) gives the command one).

load helpers

# on_tty COMMAND...: run COMMAND with a pseudo-terminal as stdin, stdout and stderr; the
# terminal's output lands in $T/tty.out.
on_tty() {
    local cmd
    printf -v cmd '%q ' "$@"
    script -qec "$cmd" /dev/null >"$T/tty.out" </dev/null
}

@test "create -p -o preallocation=full: progress up to 100% on a terminal, zeros written" {
    require script
    on_tty blkfuse create -p -f raw -o preallocation=full "$T/full.raw" 64M
    cat -v "$T/tty.out"
    grep -q '(0.00/100%)' "$T/tty.out"
    grep -q '(100.00/100%)' "$T/tty.out"
    # Intermediate steps: 16 chunks of 4 MiB.
    grep -q '(50.00/100%)' "$T/tty.out"
    # Full preallocation writes the zeros: every block allocated.
    [ "$(du -k "$T/full.raw" | cut -f1)" -ge 65536 ]
    [ "$(stat -c %s "$T/full.raw")" -eq $((64 * 1048576)) ]
    cmp -n $((64 * 1048576)) "$T/full.raw" /dev/zero
}

@test "no progress without -p, or when stderr is not a terminal" {
    require script
    on_tty blkfuse create -f raw -o preallocation=full "$T/a.raw" 8M
    run ! grep -q '/100%' "$T/tty.out"
    run --separate-stderr blkfuse create -p -f raw -o preallocation=full "$T/b.raw" 8M
    [ "$status" -eq 0 ]
    [ -z "$stderr" ]
    [ -z "$output" ]
    blkfuse create -f qcow2 "$T/c.qcow2" 8M
    run --separate-stderr blkfuse check -p "$T/c.qcow2"
    [ "$status" -eq 0 ]
    [ -z "$stderr" ]
    [[ $output == "No errors were found on the image."* ]]
}

@test "check -p: progress on a terminal, the report unchanged on stdout" {
    require script qemu-img
    qemu-img create -q -f qcow2 -o preallocation=metadata "$T/m.qcow2" 4G
    on_tty blkfuse check -p "$T/m.qcow2"
    cat -v "$T/tty.out"
    grep -q '(0.00/100%)' "$T/tty.out"
    grep -q '(100.00/100%)' "$T/tty.out"
    [ "$(grep -c '/100%)' "$T/tty.out")" -ge 1 ]
    grep -q 'No errors were found on the image.' "$T/tty.out"
    run blkfuse check -p --output=json "$T/m.qcow2"
    [[ $output == *'"check-errors": 0'* ]]
}

@test "check -p -r leaks: findings and the second pass start on lines of their own" {
    require script qemu-img qemu-io
    need_tool qcow2-poke
    # 64 KiB clusters: 0 header, 1 refcount table, 2 refcount block, 3 L1, 4 L2, 5-20 data
    # at 0-1M, 21 at 2M, freed by the discard; a refcount of 1 makes it leak.
    qemu-img create -q -f qcow2 "$T/l.qcow2" 64M
    qemu-io -c 'write 0 1M' -c 'write 2M 64k' -c 'discard 2M 64k' "$T/l.qcow2" >/dev/null
    qcow2-poke "$T/l.qcow2" refcount 21 1 >/dev/null
    run qemu-img check "$T/l.qcow2"
    [ "$status" -eq 3 ]
    on_tty blkfuse check -p -r leaks "$T/l.qcow2"
    cat -v "$T/tty.out"
    tr '\r' '\n' <"$T/tty.out" >"$T/lines"
    grep -qx 'Repairing cluster 21 refcount=1 reference=0' "$T/lines"
    grep -qx 'Double checking the fixed image now...' "$T/lines"
    grep -q '(50.00/100%)' "$T/tty.out"
    grep -q '(100.00/100%)' "$T/tty.out"
    grep -q 'No errors were found on the image.' "$T/tty.out"
    qemu-img check "$T/l.qcow2"
}
