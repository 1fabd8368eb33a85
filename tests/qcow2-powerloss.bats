#!/usr/bin/env bats
# qcow2-powerloss.bats - power loss at every write of every qcow2 allocation path.
#
# For each allocation path (a base image and a script of requests) in each configuration
# (default, lazy_refcounts=on, 512-byte clusters, extended_l2=on, over a backing file; and
# refcount_bits=2 under `make soak`), tests/tools/powerloss runs the script once with a trace to
# find its
# crash points (the writes, zero writes, discards, truncates and flushes that reach the image
# file, data and metadata alike), then crashes it at each one through the fault-injection
# filter's powerfail rule: mode=all (everything since the last flush is lost) everywhere; at the
# flushes and the last point, where the most changes are pending, also mode=lose-one for each
# pending change (everything survives but that one: every "B reached the disk without the A it
# needs" pair shows).  `make soak` (POWERLOSS_SOAK=1) adds mode=random with 8 seeds
# ($POWERLOSS_SEEDS), does all of it at every point, reads every image with qemu-img too, and
# runs what is too slow for make check (see soak_only).  After each
# crash: qemu-img check finds no corruption (leaks allowed), blkfuse reopens the image
# (repairing a dirty lazy-refcounts image first), and every write acknowledged before the last
# successful flush reads back, every byte no request touched reads as before (zeros or backing
# data), and bytes touched after that flush read old or new data.
#
# A path that a configuration cannot reach cheaply is run with the smallest cluster size that
# reaches it (refcount block and table growth need images of 2^n clusters).

load helpers

setup_file() {
    # Pattern data shared by the tests (read-only): what the backing file holds, and what
    # fill writes.
    make_pattern "$BATS_FILE_TMPDIR/pattern" 16M
    tr 'a-z' 'A-Z' <"$BATS_FILE_TMPDIR/pattern" >"$BATS_FILE_TMPDIR/data"
}

setup() {
    blkfuse_setup
    require qemu-img qemu-io
    need_tool powerloss
    # Scratch copies on tmpfs when there is one: every run copies the image and qcow2 flushes.
    if [[ -d /dev/shm && -w /dev/shm ]]; then
        WORK=$(mktemp -d /dev/shm/blkfuse-powerloss.XXXXXX)
    else
        WORK=$T/work
        mkdir "$WORK"
    fi
    BASE=$T/base.qcow2
    SCRIPT=$T/script
    SNAPSHOT=
    PATTERN=$BATS_FILE_TMPDIR/pattern
    DATA=$BATS_FILE_TMPDIR/data
}

teardown() {
    [[ -n ${WORK:-} && $WORK != "$T"/* ]] && rm -rf "$WORK"
    blkfuse_teardown
}

# --- configurations -----------------------------------------------------------------

# opts CONFIG: the qemu-img create options of a configuration.
opts() {
    case $1 in
    default | backing) echo "compat=1.1" ;;
    lazy) echo "compat=1.1,lazy_refcounts=on" ;;
    c512) echo "compat=1.1,cluster_size=512" ;;
    extl2) echo "compat=1.1,extended_l2=on" ;;
    rc2) echo "compat=1.1,refcount_bits=2" ;;
    *) echo "unknown configuration $1" >&2; return 1 ;;
    esac
}

# new_base CONFIG SIZE [EXTRA_OPTS]: an empty $BASE of SIZE in CONFIG; over a backing file of
# pattern data for the backing configuration (or always with WITH_BACKING=1).
new_base() {
    local config=$1 size=$2 o
    o=$(opts "$config")${3:+,$3}
    rm -f "$BASE"
    if [[ $config == backing || ${WITH_BACKING:-} == 1 ]]; then
        make_backing
        qemu-img create -q -f qcow2 -o "$o" -b "$T/backing.qcow2" -F qcow2 "$BASE" "$size"
    else
        qemu-img create -q -f qcow2 -o "$o" "$BASE" "$size"
    fi
}

# make_backing: $T/backing.qcow2, 16 MiB of pattern data (other than fill's).
make_backing() {
    [[ -f $T/backing.qcow2 ]] || qemu-img convert -f raw -O qcow2 "$PATTERN" "$T/backing.qcow2"
}

# fill OFFSET LENGTH: write pattern data into $BASE with qemu-io (not blkfuse).
fill() {
    local off len n
    off=$(numfmt --from=iec "${1^^}")
    len=$(numfmt --from=iec "${2^^}")
    while ((len > 0)); do
        n=$((len > 8388608 ? 8388608 : len))
        qemu-io -f qcow2 -c "write -s $DATA $off $n" "$BASE" >/dev/null
        off=$((off + n))
        len=$((len - n))
    done
}

# image_end: where $BASE's allocated clusters end in the file, by qemu-img.
image_end() {
    qemu-img check --output=json "$BASE" | sed -n 's/.*"image-end-offset": *\([0-9]*\).*/\1/p'
}

# fill_file_to BYTES CLUSTER: write clusters of data from virtual offset 0 on until $BASE's
# clusters end at least BYTES into the file; prints the next unwritten virtual offset.
fill_file_to() {
    local target=$1 cs=$2 off=0 end n
    end=$(image_end)
    while ((end < target)); do
        n=$(((target - end) / cs))
        ((n > 0)) || n=1
        fill "$off" $((n * cs))
        off=$((off + n * cs))
        end=$(image_end)
    done
    echo "$off"
}

# script LINE...: the script of requests.
script() {
    printf '%s\n' "$@" >"$SCRIPT"
}

# soak_only: skip unless under `make soak` (for the parts make check cannot afford).
soak_only() {
    [[ -n ${POWERLOSS_SOAK:-} ]] || skip "too slow for make check: make soak runs it"
}

# crash: run the power-loss tool on $BASE and $SCRIPT.
crash() {
    local args=(--work="$WORK")
    [[ -n $SNAPSHOT ]] && args+=(--snapshot="$SNAPSHOT")
    if [[ -n ${POWERLOSS_SOAK:-} ]]; then
        args+=(--seeds="${POWERLOSS_SEEDS:-8}" --random-everywhere --qemu-read-all)
    fi
    run powerloss "${args[@]}" "$BASE" "$SCRIPT"
    printf '%s\n' "$output" | grep -v '^    line' | head -40
    [[ $output == *"powerloss: $BASE: "*" crash points, "* ]]
    [ "$status" -eq 0 ]
}

# --- allocation paths ----------------------------------------------------------------
# Each path_NAME CONFIG builds $BASE and $SCRIPT; the base holds data that must survive.

# The first write to an empty image: a new L2 table, a data cluster and their refcounts.
path_first_write() {
    new_base "$1" 8M
    script "write 1M 64k" "flush" "write 5M 4k" "flush"
}

# A write that needs a new refcount block: the file is filled up to the end of what the first
# refcount block covers (cluster_size * 8 / refcount_bits clusters).
path_refcount_block() {
    local config=$1 cs=65536 rb=16 extra= covered off
    case $config in
    c512) cs=512 ;;
    rc2) cs=512; rb=2; extra=cluster_size=512 ;;
    extl2) cs=16384; rb=64; extra=cluster_size=16k,refcount_bits=64 ;;  # a 40 MiB file, ~15 s
    *) cs=4096; extra=cluster_size=4k ;;
    esac
    covered=$((cs * 8 / rb * cs))
    new_base "$config" $((covered + 8 * 1048576)) "$extra"
    off=$(fill_file_to $((covered - 3 * cs)) "$cs")
    script "write $off $((4 * cs))" "flush" "write $((off + 8 * cs)) $((2 * cs))" "flush"
}

# A write that needs the refcount table to grow: the file is filled up to the end of what the
# first refcount table cluster covers (needs 512-byte clusters to stay small).
path_refcount_table() {
    local config=$1 cs=512 rb=16 covered off
    case $config in
    rc2 | extl2) skip "needs a file of 64 MiB or more in this configuration" ;;
    esac
    # (the default configuration with 512-byte clusters is the 512-byte one: not run twice)
    covered=$((cs / 8 * cs * 8 / rb * cs))
    new_base "$config" $((covered + 4 * 1048576)) cluster_size=512
    off=$(fill_file_to $((covered - 3 * cs)) "$cs")
    script "write $off $((8 * cs))" "flush" "write $((off + 16 * cs)) $((4 * cs))" "flush"
}

# A write past the L1 table after the image grew: the L1 table is replaced by a bigger one.
path_l1_grow() {
    local config=$1 size=1M grow=1G at=$((1024 - 64))M
    if [[ $config == c512 ]]; then
        grow=4M at=3M       # one L1 cluster covers 2 MiB here
    fi
    new_base "$config" "$size"
    fill 0 256k
    script "truncate $grow" "flush" "write $at 64k" "flush" "write 512k 4k" "flush"
}

# Partial-cluster copy-on-write from the backing file: the written part is new, the rest of
# the cluster must come from the backing file, in every configuration.
path_cow_backing() {
    WITH_BACKING=1 new_base "$1" 8M
    script "write $((1048576 + 4096)) 4k" "flush" \
        "write $((2097152 + 65536 - 4096)) 8k" "flush" \
        "write $((3145728 + 1000)) 100" "flush"
}

# Allocating writes of multi-cluster runs (one allocation, one data write, one L2 update per
# run): one that starts and ends inside a cluster (copy-on-write fill at both ends) and crosses
# the end of an L2 table, and a longer one whose run also gets a new L2 table first.
path_runs() {
    local config=$1 cs=4096 es=8 extra=cluster_size=4k l2
    case $config in
    c512) cs=512 extra= ;;
    extl2) cs=16384 es=16 extra=cluster_size=16k ;;
    esac
    l2=$((cs / es * cs))
    new_base "$config" $((2 * l2 + 1048576)) "$extra"
    fill 0 $((4 * cs))
    script "write $((l2 - 3 * cs - 100)) $((6 * cs + 300))" "flush" \
        "write $((l2 + 8 * cs + 1000)) $((64 * cs))" "flush"
}

# unit CONFIG: the size unit of the paths below: 1 MiB, or 64 KiB with 512-byte clusters
# (where every MiB zeroed, freed or preallocated costs dozens of metadata writes).
unit() {
    [[ $1 == c512 ]] && echo 65536 || echo 1048576
}

# Rewrite of compressed clusters (made by qemu-img convert -c): a partial write decompresses
# and copies, a whole-cluster write frees the compressed one, a zero write unmaps one.
path_compressed() {
    local config=$1 o u
    o=$(opts "$config")
    u=$(unit "$config")
    head -c $((4 * u)) "$DATA" >"$T/cdata"
    rm -f "$BASE"
    if [[ $config == backing ]]; then
        make_backing
        qemu-img convert -q -c -f raw -O qcow2 -o "$o" -B "$T/backing.qcow2" -F qcow2 \
            "$T/cdata" "$BASE"
    else
        qemu-img convert -q -c -f raw -O qcow2 -o "$o" "$T/cdata" "$BASE"
    fi
    script "write $((u + 4096)) 4k" "flush" "write $((2 * u)) 64k" "flush" \
        "zero $((3 * u)) 64k unmap" "flush" "write $((3 * u + u / 2 + 100)) 1000" "flush"
}

# Rewrite of clusters shared with an internal snapshot: copy-on-write, refcounts dropping from
# 2 to 1; the snapshot must read as before throughout.
path_snapshot() {
    local u
    u=$(unit "$1")
    new_base "$1" $((8 * u))
    fill 0 $((4 * u))
    qemu-img snapshot -c before "$BASE"
    SNAPSHOT=before
    script "write $((u + 4096)) 4k" "flush" "write $((2 * u)) 128k" "flush" \
        "zero $((3 * u)) 128k unmap" "flush" "write $((3 * u)) 4k" "flush"
}

# Zero and discard that free clusters, then writes that allocate again and reuse the freed
# clusters, which hold old data: stale data must never show, nor be taken for metadata.  The
# write at 600M needs a new L2 table (one covers 512 MiB with 64 KiB clusters), which goes
# into a freed cluster; with 512-byte clusters every 32 KiB needs one anyway.
path_free_reuse() {
    local u size=1G far="write 600M 64k"
    u=$(unit "$1")
    [[ $1 == c512 ]] && size=$((8 * u)) far="write $((7 * u)) 4k"
    new_base "$1" "$size"
    fill 0 $((4 * u))
    script "zero 0 $u unmap" "flush" "discard $u $u" "flush" "$far" "flush" \
        "write $((6 * u)) $((u / 2))" "flush" "write $((u / 2)) 64k" "flush"
}

# Shrink (frees clusters past the end) and grow (the new part reads as zeros).
path_shrink_grow() {
    local u
    u=$(unit "$1")
    new_base "$1" $((8 * u))
    fill 0 $((8 * u))
    script "truncate $((4 * u))" "flush" "truncate $((8 * u))" "write $((7 * u)) 64k" "flush" \
        "truncate $((2 * u))" "truncate $((6 * u))" "flush" "write $((5 * u)) 4k" "flush"
}

# Preallocation: a range reserved without changing what it reads, writes into it, and grows
# with preallocation=falloc and metadata.
path_prealloc() {
    local k
    k=$(($(unit "$1") / 1024))
    new_base "$1" $((8192 * k))
    fill 0 $((1024 * k))
    script "preallocate $((2048 * k)) $((1024 * k))" "flush" \
        "write $((2048 * k + 64 * k)) 4k" "flush" \
        "truncate $((9216 * k)) falloc" "flush" "write $((8704 * k)) 4k" "flush" \
        "truncate $((10240 * k)) metadata" "write $((9728 * k)) 4k" "flush"
}

# run_path PATH CONFIG
run_path() {
    [[ $2 == rc2 ]] && soak_only
    "path_$1" "$2"
    crash
}

# --- the tool finds what it must find ---------------------------------------------------

@test "powerloss: the tool reports data lost after a flush (a disk ignoring flushes)" {
    new_base default 8M
    fill 0 1M
    script "write 1M 64k" "flush" "write 2M 64k" "flush" "write 3M 64k" "flush"
    run powerloss --work="$WORK" --test-skip-flushes "$BASE" "$SCRIPT"
    printf '%s\n' "$output" | grep -v '^    line' | head -20
    [ "$status" -eq 1 ]
    [[ $output == *"FAIL $BASE: crash point "*" mode=all: read by blkfuse: 65536 bad bytes; the first at offset 1048576"* ]]
    [[ $output == *"line 2: flush 0 0: flushed"* ]]
}

@test "powerloss: the tool reports an image qemu-img check finds corrupt" {
    new_base default 8M
    fill 0 1M
    script "write 1M 64k" "flush" "write 2M 64k" "flush"
    run powerloss --work="$WORK" --test-corrupt "$BASE" "$SCRIPT"
    printf '%s\n' "$output" | grep -v '^    line' | head -20
    [ "$status" -eq 1 ]
    [[ $output == *"FAIL $BASE: crash point 0/"*" mode=all: qemu-img check exit 2:"* ]]
    [[ $output != *"powerloss: $BASE: "*" 0 failed"* ]]
}

# --- allocation paths x configurations --------------------------------------------------

@test "powerloss: first write to an empty image (default)" { run_path first_write default; }
@test "powerloss: first write to an empty image (lazy_refcounts)" { run_path first_write lazy; }
@test "powerloss: first write to an empty image (512-byte clusters)" { run_path first_write c512; }
@test "powerloss: first write to an empty image (extended_l2)" { run_path first_write extl2; }
@test "powerloss: first write to an empty image (backing file)" { run_path first_write backing; }
@test "powerloss: first write to an empty image (refcount_bits=2)" { run_path first_write rc2; }

@test "powerloss: new refcount block (default)" { run_path refcount_block default; }
@test "powerloss: new refcount block (lazy_refcounts)" { run_path refcount_block lazy; }
@test "powerloss: new refcount block (512-byte clusters)" { run_path refcount_block c512; }
@test "powerloss: new refcount block (extended_l2)" { run_path refcount_block extl2; }
@test "powerloss: new refcount block (backing file)" { run_path refcount_block backing; }
@test "powerloss: new refcount block (refcount_bits=2)" { run_path refcount_block rc2; }

@test "powerloss: refcount table growth (lazy_refcounts)" { run_path refcount_table lazy; }
@test "powerloss: refcount table growth (512-byte clusters)" { run_path refcount_table c512; }
@test "powerloss: refcount table growth (backing file)" { run_path refcount_table backing; }

@test "powerloss: write past the L1 table after growing (default)" { run_path l1_grow default; }
@test "powerloss: write past the L1 table after growing (lazy_refcounts)" { run_path l1_grow lazy; }
@test "powerloss: write past the L1 table after growing (512-byte clusters)" { run_path l1_grow c512; }
@test "powerloss: write past the L1 table after growing (extended_l2)" { run_path l1_grow extl2; }
@test "powerloss: write past the L1 table after growing (backing file)" { run_path l1_grow backing; }
@test "powerloss: write past the L1 table after growing (refcount_bits=2)" { run_path l1_grow rc2; }

@test "powerloss: multi-cluster runs across an L2 table's end (default)" { run_path runs default; }
@test "powerloss: multi-cluster runs across an L2 table's end (lazy_refcounts)" { run_path runs lazy; }
@test "powerloss: multi-cluster runs across an L2 table's end (512-byte clusters)" { run_path runs c512; }
@test "powerloss: multi-cluster runs across an L2 table's end (extended_l2)" { run_path runs extl2; }
@test "powerloss: multi-cluster runs across an L2 table's end (backing file)" { run_path runs backing; }
@test "powerloss: multi-cluster runs across an L2 table's end (refcount_bits=2)" { run_path runs rc2; }

@test "powerloss: partial-cluster copy-on-write from the backing file (default)" { run_path cow_backing default; }
@test "powerloss: partial-cluster copy-on-write from the backing file (lazy_refcounts)" { run_path cow_backing lazy; }
@test "powerloss: partial-cluster copy-on-write from the backing file (512-byte clusters)" { run_path cow_backing c512; }
@test "powerloss: partial-cluster copy-on-write from the backing file (extended_l2)" { run_path cow_backing extl2; }
@test "powerloss: partial-cluster copy-on-write from the backing file (refcount_bits=2)" { run_path cow_backing rc2; }

@test "powerloss: rewrite of compressed clusters (default)" { run_path compressed default; }
@test "powerloss: rewrite of compressed clusters (lazy_refcounts)" { run_path compressed lazy; }
@test "powerloss: rewrite of compressed clusters (512-byte clusters)" { run_path compressed c512; }
@test "powerloss: rewrite of compressed clusters (extended_l2)" { run_path compressed extl2; }
@test "powerloss: rewrite of compressed clusters (backing file)" { run_path compressed backing; }
@test "powerloss: rewrite of compressed clusters (refcount_bits=2)" { run_path compressed rc2; }

@test "powerloss: rewrite of clusters shared with a snapshot (default)" { run_path snapshot default; }
@test "powerloss: rewrite of clusters shared with a snapshot (lazy_refcounts)" { run_path snapshot lazy; }
@test "powerloss: rewrite of clusters shared with a snapshot (512-byte clusters)" { run_path snapshot c512; }
@test "powerloss: rewrite of clusters shared with a snapshot (extended_l2)" { run_path snapshot extl2; }
@test "powerloss: rewrite of clusters shared with a snapshot (backing file)" { run_path snapshot backing; }
@test "powerloss: rewrite of clusters shared with a snapshot (refcount_bits=2)" { run_path snapshot rc2; }

@test "powerloss: zero and discard free clusters, writes reuse them (default)" { run_path free_reuse default; }
@test "powerloss: zero and discard free clusters, writes reuse them (lazy_refcounts)" { run_path free_reuse lazy; }
@test "powerloss: zero and discard free clusters, writes reuse them (512-byte clusters)" { run_path free_reuse c512; }
@test "powerloss: zero and discard free clusters, writes reuse them (extended_l2)" { run_path free_reuse extl2; }
@test "powerloss: zero and discard free clusters, writes reuse them (backing file)" { run_path free_reuse backing; }
@test "powerloss: zero and discard free clusters, writes reuse them (refcount_bits=2)" { run_path free_reuse rc2; }

@test "powerloss: shrink and grow (default)" { run_path shrink_grow default; }
@test "powerloss: shrink and grow (lazy_refcounts)" { run_path shrink_grow lazy; }
@test "powerloss: shrink and grow (512-byte clusters)" { run_path shrink_grow c512; }
@test "powerloss: shrink and grow (extended_l2)" { run_path shrink_grow extl2; }
@test "powerloss: shrink and grow (backing file)" { run_path shrink_grow backing; }
@test "powerloss: shrink and grow (refcount_bits=2)" { run_path shrink_grow rc2; }

@test "powerloss: preallocation (default)" { run_path prealloc default; }
@test "powerloss: preallocation (lazy_refcounts)" { run_path prealloc lazy; }
@test "powerloss: preallocation (512-byte clusters)" { run_path prealloc c512; }
@test "powerloss: preallocation (extended_l2)" { run_path prealloc extl2; }
@test "powerloss: preallocation (backing file)" { run_path prealloc backing; }
@test "powerloss: preallocation (refcount_bits=2)" { run_path prealloc rc2; }
