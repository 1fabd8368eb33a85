#!/usr/bin/env bats
# qcow2-check.bats - `blkfuse check` against `qemu-img check` on damaged qcow2 images.
#
# Each test builds a healthy image with qemu-img/qemu-io, damages it with
# tests/tools/qcow2-poke, proves the damage is there (qemu-img check's exit
# status and one of its findings), and then requires blkfuse check to agree
# with qemu-img check on copies of the image: the same exit status, the same
# finding lines (stderr), the same human summary (stdout) and the same JSON
# counters, without repair, with -r leaks and with -r all.  After blkfuse's
# repair, qemu-img check must find what it finds after its own (clean where
# qemu-img repairs the kind), and the guest data must read as before wherever
# the damage did not touch it.

load helpers

# The images live in memory (/dev/shm when there is one): qemu-img and
# blkfuse flush after their writes, and nothing here needs O_DIRECT.
setup_file() {
    local dir=/dev/shm
    [[ -d $dir && -w $dir ]] || dir=${TMPDIR:-/tmp}
    export CHECK_IMAGES
    CHECK_IMAGES=$(mktemp -d "$dir/blkfuse-check.XXXXXX")
}

teardown_file() {
    rm -rf "$CHECK_IMAGES"
}

setup() {
    blkfuse_setup
    require qemu-img qemu-io
    need_tool qcow2-poke
    mkdir "$CHECK_IMAGES/$BATS_TEST_NUMBER"
    cd "$CHECK_IMAGES/$BATS_TEST_NUMBER"
}

teardown() {
    cd /
    rm -rf "${CHECK_IMAGES:?}/$BATS_TEST_NUMBER"
    blkfuse_teardown
}

poke() {
    qcow2-poke "$@" >/dev/null
}

# base NAME KIND: a healthy 4 MiB image with data (64 KiB clusters), made once
# per file and copied.
#   plain:      clusters 0 header, 1 reftable, 2 refblock, 3 L1, 4 L2,
#               5-6 data at guest 0-128k, 7 data at guest 1M
#   compressed: 5 holds both compressed clusters (guest 0 and 64k), 6 data at 1M
#   snapshot:   snapshot 'snap1' of guest 0-128k (L1 at 7, L2 at 4), then guest 64k rewritten
#   extl2:      extended L2; guest 0 (64k), 4k at 1M, a zero cluster at 2M
#   lazy:       lazy_refcounts=on, guest 0-128k
base() {
    local name=$1 kind=$2
    if [[ ! -e $CHECK_IMAGES/$kind.qcow2 ]]; then
        (cd "$CHECK_IMAGES" && make_base "$kind.qcow2" "$kind")
    fi
    cp "$CHECK_IMAGES/$kind.qcow2" "$name"
}

make_base() {
    local name=$1 kind=$2
    case $kind in
    plain)
        qemu-img create -q -f qcow2 "$name" 4M
        qemu-io -c 'write -P 0xaa 0 128k' -c 'write -P 0xbb 1M 64k' "$name" >/dev/null ;;
    compressed)
        qemu-img create -q -f qcow2 "$name" 4M
        qemu-io -c 'write -c -P 0xaa 0 64k' -c 'write -c -P 0xbb 64k 64k' \
            -c 'write -P 0xcc 1M 64k' "$name" >/dev/null ;;
    snapshot)
        qemu-img create -q -f qcow2 "$name" 4M
        qemu-io -c 'write -P 0xaa 0 128k' "$name" >/dev/null
        qemu-img snapshot -c snap1 "$name"
        qemu-io -c 'write -P 0xbb 64k 64k' "$name" >/dev/null ;;
    extl2)
        qemu-img create -q -f qcow2 -o extended_l2=on "$name" 4M
        qemu-io -c 'write -P 0xaa 0 64k' -c 'write -P 0xbb 1M 4k' -c 'write -z 2M 64k' \
            "$name" >/dev/null ;;
    lazy)
        qemu-img create -q -f qcow2 -o lazy_refcounts=on "$name" 4M
        qemu-io -c 'write -P 0xaa 0 128k' "$name" >/dev/null ;;
    esac
}

# damaged KIND POKE...: base.qcow2 (healthy, kept) and bad.qcow2 (with each POKE
# applied: the arguments of one qcow2-poke command, as one string).
damaged() {
    local kind=$1 p
    shift
    base base.qcow2 "$kind"
    cp base.qcow2 bad.qcow2
    for p in "$@"; do
        eval "poke bad.qcow2 $p"
    done
}

# qemu_finds STATUS LINE: `qemu-img check bad.qcow2` exits STATUS and reports
# LINE (fixed string) among its findings: the damage is really there.
qemu_finds() {
    run qemu-img check bad.qcow2
    echo "qemu-img check: status $status"$'\n'"$output"
    [ "$status" -eq "$1" ]
    [ -z "${2:-}" ] || [[ $output == *"$2"* ]]
}

# agree [CHECK-OPTION...]: qemu-img check and blkfuse check, each on its own
# copy of bad.qcow2 (q.qcow2 and b.qcow2 afterwards), agree on the exit status,
# the finding lines, the human summary and the JSON counters.
agree() {
    local qs bs
    cp bad.qcow2 q.qcow2
    cp bad.qcow2 b.qcow2
    qs=0; qemu-img check "$@" q.qcow2 >q.out 2>q.err || qs=$?
    bs=0; blkfuse check "$@" b.qcow2 >b.out 2>b.err || bs=$?
    # Lines that are not findings: qemu-img's own messages vs blkfuse's.
    grep -v -e '^qemu-img:' -e '^qcow2:' q.err >q.find || true
    grep -v -e '^blkfuse:' b.err >b.find || true
    echo "check $*: qemu-img status $qs, blkfuse status $bs"
    diff -u q.find b.find
    diff -u <(sed 's/q\.qcow2/IMG/g' q.out) <(sed 's/b\.qcow2/IMG/g' b.out)
    [ "$qs" -eq "$bs" ]
    if [[ " $* " != *" -r "* ]]; then
        qemu-img check --output=json "$@" bad.qcow2 >q.json 2>/dev/null || true
        blkfuse check --output=json "$@" bad.qcow2 >b.json 2>/dev/null || true
        json_agree q.json b.json
    fi
}

# json_members FILE: the members of a flat JSON object, one "key":value a line,
# sorted, without filename.
json_members() {
    tr -d ' \n{}' <"$1" | tr ',' '\n' | grep -v '^"filename":' | sort
}

# json_agree A B: two check reports in JSON hold the same members (but filename).
json_agree() {
    diff -u <(json_members "$1") <(json_members "$2")
}

# agree_all: agree without repair, with -r leaks and with -r all.
agree_all() {
    agree
    agree -r leaks
    agree -r all
}

# repaired_clean: after blkfuse check -r all, qemu-img check finds nothing.
repaired_clean() {
    agree -r all
    run qemu-img check b.qcow2
    echo "$output"
    [ "$status" -eq 0 ]
}

# data_intact: b.qcow2 (repaired) shows the guest data of base.qcow2.
data_intact() {
    qemu-img convert -O raw base.qcow2 base.raw
    qemu-img convert -O raw b.qcow2 b.raw
    cmp base.raw b.raw
}

# --- refcounts ---------------------------------------------------------------------

@test "check: leaked cluster (refcount 2 for a data cluster)" {
    damaged plain "refcount 7 2"
    qemu_finds 2 "Leaked cluster 7 refcount=2 reference=1"
    agree_all
    agree -r leaks
    run qemu-img check b.qcow2
    [ "$status" -eq 0 ]
    data_intact
}

@test "check: leaked unused cluster only (exit 3), repaired by -r leaks" {
    damaged plain
    qemu-io -c 'write -P 0xcc 2M 64k' bad.qcow2 >/dev/null
    qemu-io -c 'discard 2M 64k' bad.qcow2 >/dev/null
    poke bad.qcow2 refcount 8 1
    qemu_finds 3 "Leaked cluster 8 refcount=1 reference=0"
    agree_all
    agree -r leaks
    run qemu-img check b.qcow2
    [ "$status" -eq 0 ]
    data_intact
}

@test "check: refcount 0 for a data cluster" {
    damaged plain "refcount 5 0"
    qemu_finds 2 "ERROR cluster 5 refcount=0 reference=1"
    agree_all
    repaired_clean
    data_intact
}

@test "check: refcount 0 for the L2 table" {
    damaged plain "refcount 4 0"
    qemu_finds 2 "ERROR OFLAG_COPIED L2 cluster: l1_index=0 l1_entry=8000000000040000 refcount=0"
    agree_all
    repaired_clean
    data_intact
}

@test "check: refcount 0 for the L1 table" {
    damaged plain "refcount 3 0"
    qemu_finds 2 "ERROR cluster 3 refcount=0 reference=1"
    agree_all
    repaired_clean
    data_intact
}

@test "check: refcount 0 for the refcount block and the refcount table" {
    damaged plain "refcount 2 0" "refcount 1 0"
    qemu_finds 2 "ERROR cluster 1 refcount=0 reference=1"
    agree_all
    repaired_clean
    data_intact
}

@test "check: refcount too low (two L2 entries point to one cluster)" {
    damaged plain "l2 0 2 0x8000000000050000"
    qemu_finds 2 "ERROR cluster 5 refcount=1 reference=2"
    agree_all
    repaired_clean
}

# --- L1 and L2 entries -------------------------------------------------------------

@test "check: L2 entry beyond the end of the file (reported, not repairable)" {
    damaged plain "l2 0 1 0x8000000001000000"
    qemu_finds 2 "exceeding the end of the file by one cluster or more: offset 0x1000000"
    agree_all
}

@test "check: misaligned L2 entry of a data cluster (reported, not repairable)" {
    damaged plain "l2 0 1 0x8000000000060200"
    qemu_finds 2 "ERROR offset=60200: Data cluster is not properly aligned; L2 entry corrupted."
    agree_all
}

@test "check: misaligned preallocated zero cluster (repaired to a zero cluster)" {
    damaged plain "l2 0 1 0x8000000000060201"
    qemu_finds 2 "ERROR offset=60200: Preallocated cluster is not properly aligned"
    agree_all
    repaired_clean
}

@test "check: misaligned L1 entry (reported, not repairable)" {
    base base.qcow2 plain
    qemu-io -c 'write -P 0 0 64k' base.qcow2 >/dev/null    # what the misread L2 sees
    cp base.qcow2 bad.qcow2
    poke bad.qcow2 l1 0 0x8000000000040200
    qemu_finds 2 "ERROR l2_offset=40200: Table is not cluster aligned; L1 entry corrupted"
    agree_all
}

@test "check: metadata overlap (an L2 entry points at the L1 table)" {
    damaged plain "l2 0 2 0x8000000000030000"
    qemu_finds 2 "ERROR cluster 3 refcount=1 reference=2"
    agree_all
    repaired_clean
}

@test "check: reserved bits in L1 and L2 entries" {
    damaged plain "l1 0 0x8000000000040002" "l2 0 0 0x8000000000050002"
    qemu_finds 2 "ERROR found L1 entry with reserved bits set: 8000000000040002"
    agree_all
}

@test "check: OFLAG_COPIED missing in an L1 entry" {
    damaged plain "l1 0 0x40000"
    qemu_finds 2 "ERROR OFLAG_COPIED L2 cluster: l1_index=0 l1_entry=40000 refcount=1"
    agree_all
    repaired_clean
    data_intact
}

@test "check: OFLAG_COPIED wrong in L2 entries (missing, and set with refcount 2)" {
    damaged plain "l2 0 0 0x50000" "refcount 6 2"
    qemu_finds 2 "ERROR OFLAG_COPIED data cluster: l2_entry=50000 refcount=1"
    agree_all
    repaired_clean
    data_intact
}

# --- refcount table and blocks -----------------------------------------------------

@test "check: refcount block beyond the end of the file" {
    damaged plain "reftable 0 0x1000000"
    qemu_finds 2 "ERROR refcount block 0 is outside image"
    agree_all
    repaired_clean
    data_intact
}

@test "check: refcount table entry zero for clusters in use" {
    damaged plain "reftable 0 0"
    qemu_finds 2 "ERROR cluster 0 refcount=0 reference=1"
    agree_all
    repaired_clean
    data_intact
}

# repaired_all [TEXT]: blkfuse check -r all repairs a copy of bad.qcow2 (b.qcow2) with status 0,
# saying TEXT if given, and qemu-img check then finds b.qcow2 clean.
repaired_all() {
    cp bad.qcow2 b.qcow2
    run blkfuse check -r all b.qcow2
    echo "$output"
    [ "$status" -eq 0 ]
    [[ -z ${1:-} || $output == *"$1"* ]]
    run qemu-img check b.qcow2
    echo "$output"
    [ "$status" -eq 0 ]
}

@test "check: misaligned refcount table entry (check not completed; -r all rebuilds)" {
    damaged plain "reftable 0 0x20200"
    qemu_finds 1 "ERROR refcount block 0 is not cluster aligned; refcount table entry corrupted"
    agree
    agree -r leaks
    # qemu-img -r all fails here (it marks the image corrupt, then refuses its own
    # rebuild); blkfuse rebuilds the refcounts.  Documented in blkfuse(1).
    repaired_all "Rebuilding refcount structure"
    data_intact
}

@test "check: reserved bits in a refcount table entry (-r all rebuilds)" {
    damaged plain "reftable 0 '|1'"
    qemu_finds 2 "ERROR refcount table entry 0 has reserved bits set"
    agree
    agree -r leaks
    # qemu-img -r all places the new refcount block over the old one and its
    # overlap check stops it; blkfuse rebuilds.  Documented in blkfuse(1).
    repaired_all
    data_intact
}

@test "check: a rebuild never puts refcounts where an entry past the end of the file points" {
    # L2 entry 2 points to cluster 8, just past the end of the 8-cluster file; refcount 0
    # for a data cluster forces a rebuild.  qemu-img puts the new refcount block in cluster
    # 8, where the guest's cluster then aliases it; blkfuse grows the file past it.
    damaged plain "l2 0 2 0x8000000000080000" "refcount 5 0"
    qemu_finds 2 "offset 0x80000 size 0x10000"
    agree
    agree -r leaks
    cp bad.qcow2 q.qcow2
    run qemu-img check -r all q.qcow2
    [[ $output == *"ERROR refcount block 0 refcount=2"* ]]
    repaired_all
    qemu-io -r -c 'read -P 0xaa 0 128k' -c 'read -P 0 128k 64k' -c 'read -P 0xbb 1M 64k' \
        b.qcow2 | grep -c '^read' | grep -qx 3
}

# --- compressed clusters -----------------------------------------------------------

@test "check: compressed clusters: refcount 0 and refcount too high" {
    damaged compressed "refcount 5 0"
    qemu_finds 2 "ERROR cluster 5 refcount=0 reference=2"
    agree_all
    repaired_clean
    data_intact
    damaged compressed "refcount 5 3"
    qemu_finds 3 "Leaked cluster 5 refcount=3 reference=2"
    agree_all
    repaired_clean
    data_intact
}

@test "check: compressed cluster with the COPIED flag" {
    damaged compressed "l2 0 0 '|0x8000000000000000'"
    qemu_finds 2 "copied flag must never be set for compressed clusters"
    agree_all
}

# --- snapshots ---------------------------------------------------------------------

@test "check: snapshot L1 table with refcount 0, snapshot L2 table leaked" {
    damaged snapshot "refcount 7 0" "refcount 4 2"
    qemu_finds 2 "ERROR cluster 7 refcount=0 reference=1"
    agree_all
    repaired_clean
    data_intact
    qemu-img convert -O raw -l snap1 b.qcow2 snap-after.raw
    qemu-img convert -O raw -l snap1 base.qcow2 snap-before.raw
    cmp snap-before.raw snap-after.raw
}

@test "check: snapshot L1 table misaligned, or past the end of the file" {
    damaged snapshot "snap 0 l1_table_offset 0x70200"
    qemu_finds 2 "ERROR snapshot 1 (snap1) l1_offset=0x70200: L1 table is not cluster aligned"
    agree_all
    damaged snapshot "snap 0 l1_table_offset 0x1000000"
    qemu_finds 2 "offset 0x1000000 size 0x8"
    agree_all
}

@test "check: snapshot L1 table too large (-r all goes further than qemu-img)" {
    damaged snapshot "snap 0 l1_size 0x1000000"
    qemu_finds 2 "l1_size=0x1000000: L1 table is too large; snapshot table entry corrupted"
    agree
    agree -r leaks
    # qemu-img -r all stops at its overlap check (the absurd L1 size overlaps
    # everything); blkfuse frees the leaks as -r leaks does and reports the entry.
    cp bad.qcow2 b.qcow2
    run blkfuse check -r all b.qcow2
    [ "$status" -eq 2 ]
    [[ $output == *"L1 table is too large"* ]]
}

# --- extended L2 -------------------------------------------------------------------

@test "check: extended L2 entries with invalid subcluster bitmaps" {
    damaged extl2 "l2bitmap 0 16 0x100000001" "l2bitmap 0 3 0x1"
    qemu_finds 2 "ERROR offset=60000: Allocated cluster has corrupted subcluster allocation bitmap"
    [[ $output == *"ERROR: Unallocated cluster has non-zero subcluster allocation map"* ]]
    agree_all
    qemu-img create -q -f qcow2 -o extended_l2=on base.qcow2 4M
    qemu-io -c 'write -c -P 0xaa 0 64k' base.qcow2 >/dev/null
    cp base.qcow2 bad.qcow2
    poke bad.qcow2 l2bitmap 0 0 5
    qemu_finds 2 "ERROR compressed cluster 0 with non-zero subcluster allocation bitmap"
    agree_all
}

# --- header bits and fields --------------------------------------------------------

@test "check: dirty lazy-refcount image with damaged refcounts; -r all clears the dirty bit" {
    damaged lazy "header incompat '|1'" "refcount 5 0" "refcount 6 3"
    qemu_finds 2 "Leaked cluster 6 refcount=3 reference=1"
    agree_all
    repaired_clean
    data_intact
    [ "$(qcow2-poke b.qcow2 header incompat)" -eq 0 ]
}

@test "check: the check of a dirty image leaves it dirty; -r leaks of a clean one clears it" {
    damaged lazy "header incompat '|1'" "refcount 6 2"
    blkfuse check bad.qcow2 || [ "$?" -eq 2 ]
    [ "$(qcow2-poke bad.qcow2 header incompat)" -eq 1 ]
    # no repair on open: the leak is still there for qemu-img to see
    qemu_finds 2 "Leaked cluster 6 refcount=2 reference=1"
    agree -r leaks
    [ "$(qcow2-poke b.qcow2 header incompat)" -eq 0 ]
}

@test "check: corrupt bit set; the repair clears it only once the image is consistent" {
    damaged plain "header incompat '|2'" "refcount 7 2"
    qemu_finds 2 "Leaked cluster 7 refcount=2 reference=1"
    agree_all
    agree -r leaks
    [ "$(qcow2-poke b.qcow2 header incompat)" -eq 0 ]
    data_intact
    # errors left: the bit stays
    damaged plain "header incompat '|2'" "l2 0 1 0x8000000001000000"
    agree -r all
    [ "$(qcow2-poke b.qcow2 header incompat)" -eq 2 ]
}

@test "check: L1 table offset past the end of the file" {
    damaged plain "header l1_table_offset 0x1000000"
    qemu_finds 2 "offset 0x1000000 size 0x8"
    agree_all
}

@test "check: refcount table past the end of the file, or of size 0" {
    damaged plain "header refcount_table_offset 0x1000000"
    qemu_finds 2 "ERROR cluster 0 refcount=0 reference=1"
    agree_all
    repaired_clean
    data_intact
    damaged plain "header refcount_table_clusters 0"
    qemu_finds 2 "ERROR cluster 0 refcount=0 reference=1"
    agree_all
    repaired_clean
    data_intact
}

# --- random damage -----------------------------------------------------------------

@test "check: randomly damaged images (fixed seeds): findings agree, repairs leave what qemu-img accepts" {
    local seed kind qs bs
    for seed in $(seq 1 16); do
        case $((seed % 4)) in
        0) kind=plain ;; 1) kind=snapshot ;; 2) kind=compressed ;; 3) kind=extl2 ;;
        esac
        base bad.qcow2 "$kind"
        qcow2-poke bad.qcow2 scramble "$seed" $((1 + seed % 4)) >damage
        echo "seed $seed ($kind): $(tr '\n' ' ' <damage)"
        cp bad.qcow2 q.qcow2
        qs=0; qemu-img check q.qcow2 >q.out 2>q.err || qs=$?
        if ((qs == 1)) && ! grep -q -v -e '^qemu-img:' -e '^qcow2:' q.err; then
            # qemu-img refused the image (no finding): blkfuse must refuse it too
            bs=0; blkfuse check bad.qcow2 >/dev/null 2>&1 || bs=$?
            [ "$bs" -eq 1 ]
        else
            agree
        fi
        # a repair never fails worse than a check, and what it calls clean is clean
        cp bad.qcow2 b.qcow2
        bs=0; blkfuse check -r all b.qcow2 >b.out 2>b.err || bs=$?
        echo "  blkfuse check -r all: $bs"
        ((bs >= 0 && bs <= 3))
        if ((bs == 0)); then
            qemu-img check b.qcow2
        fi
    done
}

# --- healthy images, refusals, usage -----------------------------------------------

@test "check: healthy images of every kind agree (exit 0) and -r changes nothing" {
    local kind
    for kind in plain compressed snapshot extl2 lazy; do
        base bad.qcow2 "$kind"
        cp bad.qcow2 base.qcow2
        agree
        agree -r all
        cmp base.qcow2 b.qcow2
    done
}

@test "check: images qemu-img refuses to open are refused too, naming the problem" {
    local f
    for f in "l1_table_offset 0x30200" "refcount_table_offset 0x10200" "l1_size 0" \
             "snapshots_offset 0x10200:snapshot"; do
        damaged "$( [[ $f == *:snapshot ]] && echo snapshot || echo plain)" "header ${f%:*}"
        run qemu-img check bad.qcow2
        [ "$status" -eq 1 ]
        run --separate-stderr blkfuse check bad.qcow2
        echo "$f: status $status: $stderr"
        [ "$status" -eq 1 ]
        [[ $stderr == "blkfuse: bad.qcow2: "*qcow2* ]]
        [ -z "$output" ]
    done
}

@test "check: raw images cannot be checked (exit 63, as qemu-img)" {
    truncate -s 1M disk.raw
    run qemu-img check disk.raw
    [ "$status" -eq 63 ]
    run blkfuse check disk.raw
    [ "$status" -eq 63 ]
    [[ $output == *"disk.raw: the raw format does not support checks"* ]]
    run blkfuse check -f raw disk.raw
    [ "$status" -eq 63 ]
}

@test "check: human and JSON reports of a damaged image" {
    damaged plain "refcount 7 2" "refcount 5 0"
    run --separate-stderr blkfuse check bad.qcow2
    [ "$status" -eq 2 ]
    [ "$stderr" = "ERROR cluster 5 refcount=0 reference=1
Leaked cluster 7 refcount=2 reference=1
ERROR OFLAG_COPIED data cluster: l2_entry=8000000000050000 refcount=0
ERROR OFLAG_COPIED data cluster: l2_entry=8000000000070000 refcount=2" ]
    [ "$output" = "
3 errors were found on the image.
Data may be corrupted, or further writes to the image may corrupt it.

1 leaked clusters were found on the image.
This means waste of disk space, but no harm to data.
3/64 = 4.69% allocated, 0.00% fragmented, 0.00% compressed clusters
Image end offset: 524288" ]
    run --separate-stderr blkfuse check --output=json bad.qcow2
    [ "$status" -eq 2 ]
    echo "$output" >b.json
    diff -u - <(json_members b.json) <<'EOF'
"allocated-clusters":3
"check-errors":0
"corruptions":3
"format":"qcow2"
"image-end-offset":524288
"leaks":1
"total-clusters":64
EOF
    # the repair: one refcount rebuilt (the COPIED findings go with it), one leak
    cp bad.qcow2 q.qcow2
    qemu-img check -r all --output=json q.qcow2 >q.json 2>/dev/null
    run --separate-stderr blkfuse check -r all --output=json bad.qcow2
    [ "$status" -eq 0 ]
    echo "$output" >b.json
    json_members b.json | grep -qx '"corruptions-fixed":1'
    json_members b.json | grep -qx '"leaks-fixed":1'
    ! json_members b.json | grep -q '"corruptions":'
    json_agree q.json b.json
    run --separate-stderr blkfuse check -r leaks bad.qcow2
    [ "$status" -eq 0 ]
    [[ $output == "No errors were found on the image."* ]]
}

@test "check: a failed repair exits 1 with 'need to rebuild' (-r leaks on refcount 0)" {
    damaged plain "refcount 5 0"
    run --separate-stderr blkfuse check -r leaks bad.qcow2
    [ "$status" -eq 1 ]
    [[ $stderr == *"ERROR need to rebuild refcount structures"* ]]
    [[ $stderr == *"blkfuse: bad.qcow2: check failed: Input/output error"* ]]
    [ -z "$output" ]
}

@test "check: an image in use by a writer is refused; -r needs it unused by readers too" {
    require qemu-storage-daemon
    base disk.qcow2 plain
    qemu-storage-daemon --blockdev driver=file,node-name=f,filename="$PWD/disk.qcow2" \
        --blockdev driver=qcow2,node-name=q,file=f \
        --nbd-server addr.type=unix,addr.path="$T/nbd.sock" \
        --export type=nbd,id=e,node-name=q,writable=on >"$T/qsd.log" 2>&1 3>&- &
    PIDS+=("$!")
    wait_until 10 test -S "$T/nbd.sock"
    run blkfuse check disk.qcow2
    echo "$output"
    [ "$status" -eq 1 ]
    [[ $output == *"disk.qcow2: image is in use by another process"*"writes it"* ]]
    run blkfuse check -r all disk.qcow2
    [ "$status" -eq 1 ]
    kill "${PIDS[-1]}"
    wait "${PIDS[-1]}" || true
    # a reader (qemu-io -r keeps the image open while it waits for input) allows a
    # check but not a repair
    coproc READER { qemu-io -r disk.qcow2; }
    PIDS+=("$READER_PID")
    echo 'read 0 4k' >&"${READER[1]}"
    read -r line <&"${READER[0]}"
    echo "reader: $line"
    run blkfuse check disk.qcow2
    [ "$status" -eq 0 ]
    run blkfuse check -r all disk.qcow2
    echo "$output"
    [ "$status" -eq 1 ]
    [[ $output == *"in use by another process"* ]]
    echo quit >&"${READER[1]}"
}

@test "check --help lists its options; bad options and operands are usage errors (exit 2)" {
    run blkfuse check --help
    [ "$status" -eq 0 ]
    [[ $output == "Usage: blkfuse check [OPTION]... IMAGE"* ]]
    [[ $output == *"--repair leaks|all"* ]]
    [[ $output == *"--output=human|json"* ]]
    base disk.qcow2 plain
    local args
    for args in "-r some disk.qcow2" "--repair=some disk.qcow2" "--output=xml disk.qcow2" \
                "-f nosuch disk.qcow2" "--bogus disk.qcow2" "" "disk.qcow2 extra"; do
        run --separate-stderr blkfuse check $args
        echo "check $args: $status $stderr"
        [ "$status" -eq 2 ]
        [[ $stderr == "blkfuse check: "* ]]
        [ -z "$output" ]
    done
    run --separate-stderr blkfuse check nonexistent.qcow2
    [ "$status" -eq 1 ]
    [[ $stderr == *"nonexistent.qcow2"* ]]
}

# --- the repair of dirty images on a read-write open -------------------------------

@test "a dirty image opened read-write is repaired as check -r all does, COPIED flags too" {
    require_fuse
    # a lazy-refcount image with a snapshot sharing guest cluster 0, dirty, whose L1 and L2
    # entries for that cluster claim it is not shared (COPIED)
    qemu-img create -q -f qcow2 -o lazy_refcounts=on disk.qcow2 4M
    qemu-io -c 'write -P 0xaa 0 64k' disk.qcow2 >/dev/null
    qemu-img snapshot -c S disk.qcow2
    poke disk.qcow2 l1 0 '|0x8000000000000000'
    poke disk.qcow2 l2 0 0 '|0x8000000000000000'
    poke disk.qcow2 header incompat '|1'
    run qemu-img check disk.qcow2
    [[ $output == *"ERROR OFLAG_COPIED data cluster: l2_entry=8000000000050000 refcount=2"* ]]
    blkfuse_mount disk.qcow2 "$T/disk.img"
    # a write to the shared cluster must not land in the snapshot's copy
    printf '\xbb%.0s' $(seq 4096) | dd of="$T/disk.img" bs=4k conv=notrunc,fsync status=none
    blkfuse unmount "$T/disk.img"
    wait_for_unmount "$T/disk.img"
    qemu-img convert -O raw -l S disk.qcow2 snap.raw
    cmp -n 65536 snap.raw <(printf '\xaa%.0s' $(seq 65536))
    qemu-img check disk.qcow2
    qemu-io -r -c 'read -P 0xbb 0 4k' -c 'read -P 0xaa 4k 60k' disk.qcow2 | grep -q '^read 61440'
}
