#!/usr/bin/env bats
# bench.bats - bench/run (make bench) works end to end: a quick run (one fio job of 1 s through
# blkfuse, qemu-storage-daemon if installed, nullserve and null:) writes its results and leaves
# nothing behind; bad options are refused before anything starts.  The figures are not checked:
# timing belongs to `make bench`, never to a test.

load helpers

BENCH_RUN="$BATS_TEST_DIRNAME/../bench/run"

@test "bench/run --help describes the options" {
    run --separate-stderr "$BENCH_RUN" --help
    [ "$status" -eq 0 ]
    [[ $output == *--rounds* && $output == *--quick* && $output == *--mount-opts* ]]
}

@test "bench/run refuses bad options and job names before starting anything" {
    run --separate-stderr "$BENCH_RUN" --rounds 0
    [ "$status" -eq 2 ]
    [[ $stderr == *--rounds* ]]
    run --separate-stderr "$BENCH_RUN" --jobs randread-4k-qdX
    [ "$status" -eq 2 ]
    [[ $stderr == *"bad job name 'randread-4k-qdX'"* ]]
    run --separate-stderr "$BENCH_RUN" --parts nosuchpart
    [ "$status" -eq 2 ]
    [[ $stderr == *nosuchpart* ]]
    run --separate-stderr "$BENCH_RUN" --bogus
    [ "$status" -eq 2 ]
}

@test "bench/run --quick writes a results table and cleans up after itself" {
    require fio
    require_fuse
    local scratch
    # an old file: its tables go, its hand-written last section stays
    printf '# old\n\n| seqread-1M-qd1 | 1 |\n\n## Where the time goes\n\nprofiles\n' \
        >"$T/RESULTS.md"
    run --separate-stderr "$BENCH_RUN" --quick --output "$T/RESULTS.md"
    echo "$stderr"
    [ "$status" -eq 0 ]
    ! grep -q '^# old' "$T/RESULTS.md"
    ! grep -q '^| seqread-1M-qd1 | 1 |' "$T/RESULTS.md"
    [ "$(tail -n 3 "$T/RESULTS.md")" = $'## Where the time goes\n\nprofiles' ]
    grep -q '^- kernel: ' "$T/RESULTS.md"
    grep -q '^- CPUs: [0-9]' "$T/RESULTS.md"
    grep -q '^- blkfuse: .*commit ' "$T/RESULTS.md"
    grep -Eq '^- wake-up round trip .*: [0-9.]+ us on one CPU(, [0-9.]+ us across two CPUs|; across two CPUs not measured \(the run may use only one\));' \
        "$T/RESULTS.md"
    # the row of the one job: blkfuse IOPS, then qsd's (or "-"), ratio, nullserve, null:, share
    grep -Eq '^\| randread-4k-qd1 \| [0-9]+ \| ([0-9.]+|-) \| ([0-9.]+|-) \| [0-9.]+ \| [0-9.]+ \| [0-9]+% \| [0-9.]+ \|$' \
        "$T/RESULTS.md"
    grep -q '^- peak RSS over these jobs: blkfuse [0-9.]* MiB' "$T/RESULTS.md"
    if command -v qemu-storage-daemon >/dev/null; then
        grep -q '^- geomean ratio blkfuse / qsd: ' "$T/RESULTS.md"
    else
        grep -q 'qemu-storage-daemon not found' "$T/RESULTS.md"
    fi
    # the scratch directory, its mounts and its daemons are gone
    scratch=$(sed -n 's/^bench: images on .*(\(.*blkfuse-bench\.[A-Za-z0-9]*\)).*/\1/p' <<<"$stderr")
    [ -n "$scratch" ]
    [ ! -e "$scratch" ]
    run findmnt -rn -o TARGET
    [[ $output != *"$scratch"* ]]
    run pgrep -f "$scratch"
    [ "$status" -eq 1 ]
}

@test "bench/wakeup times a wake-up round trip on one CPU and across two, n/a with one CPU" {
    require cc
    cc -O2 -Wall -o "$T/wakeup" "$BATS_TEST_DIRNAME/../bench/wakeup.c" -lpthread
    run --separate-stderr "$T/wakeup" -n 200
    [ "$status" -eq 0 ]
    if [ "$(nproc)" -ge 2 ]; then
        [[ $output =~ ^one-cpu\ [0-9]+\.[0-9]\ two-cpus\ [0-9]+\.[0-9]$ ]]
    fi
    run --separate-stderr taskset -c "$(taskset -pc $$ | sed 's/.*: *//; s/[-,].*//')" "$T/wakeup" -n 200
    [ "$status" -eq 0 ]
    [[ $output =~ ^one-cpu\ [0-9]+\.[0-9]\ two-cpus\ n/a$ ]]
    run --separate-stderr "$T/wakeup" -n 0
    [ "$status" -eq 2 ]
    [[ $stderr == *usage* ]]
}

@test "bench/run on one CPU says the wake-up across two was not measured" {
    require fio
    require_fuse
    local cpu
    cpu=$(taskset -pc $$ | sed 's/.*: *//; s/[-,].*//')
    run --separate-stderr taskset -c "$cpu" "$BENCH_RUN" --quick --output "$T/RESULTS.md"
    echo "$stderr"
    [ "$status" -eq 0 ]
    grep -Eq '^- wake-up round trip .*: [0-9.]+ us on one CPU; across two CPUs not measured \(the run may use only one\);' \
        "$T/RESULTS.md"
}

@test "bench/run -p 'tmpfs passthrough': images on tmpfs, and an export the kernel serves itself" {
    require fio
    require_fuse
    require_root
    run --separate-stderr "$BENCH_RUN" --quick -d ext4 -p "tmpfs passthrough" --output "$T/RESULTS.md"
    echo "$stderr"
    [ "$status" -eq 0 ]
    grep -q '^- images on: ext4 in RAM' "$T/RESULTS.md"
    grep -q '^### fio jobs, raw, images on tmpfs$' "$T/RESULTS.md"
    grep -q '^### fio jobs, raw, passthrough' "$T/RESULTS.md"
    [ "$(grep -Ec '^\| randread-4k-qd1 \| [0-9]+ \|' "$T/RESULTS.md")" -eq 2 ]
    # the tmpfs part's directory is gone
    run ls -d /dev/shm/blkfuse-bench-tmpfs.*
    [ "$status" -ne 0 ]
    grep -Eq '^\| randread-4k-qd1 \| [0-9]+ \| ([0-9.]+|-) \| ([0-9.]+|-) \| [0-9.]+ \| [0-9.]+ \| [0-9]+% \| [0-9.]+ \|$' \
        "$T/RESULTS.md"
    # the export really was in passthrough (the bench says what it measured)
    grep -q "^- blkfuse's export: transport [a-z]*, passthrough true" "$T/RESULTS.md"
}
