#!/usr/bin/env bats
# fuzz-regressions.bats - every input that once crashed a fuzz harness (tests/fuzz/regressions/
# NAME/*) runs again through that harness (build/tests/fuzz/replay-NAME, built by `make
# check` with the ordinary compiler) and must return cleanly; so must the seed corpus
# (tests/fuzz/corpus/NAME/), a fixed set of inputs that reaches most of the harness's code.
# In a sanitizer build (./configure --enable-sanitizers) ASan/UBSan reports fail them too.

load helpers

# In a sanitizer build, a UBSan report must fail the replay as an ASan one does (UBSan
# only prints by default).
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

# replay_dir NAME: replay each regression of harness NAME in its own process, so that one
# failure does not hide the others; fails naming every input that did not pass.
replay_dir() {
    local name=$1 top replay f failed=()
    top="$(cd "$BATS_TEST_DIRNAME/.." && pwd -P)"
    replay="$top/build/tests/fuzz/replay-$name"
    [[ -x $replay ]] || { echo "missing $replay: run make check"; return 1; }
    for f in "$top"/tests/fuzz/regressions/"$name"/*; do
        [[ -f $f ]] || continue
        if ! (cd "$T" && "$replay" "$f") >"$T/replay.log" 2>&1; then
            echo "--- $f:"
            tail -n 30 "$T/replay.log"
            failed+=("$(basename "$f")")
        fi
    done
    [[ -z $(ls -A "$T" | grep -v '^replay.log$\|^run$\|^\.owner$\|^daemon.log$') ]] ||
        { echo "the replay left files behind:"; ls -A "$T"; return 1; }
    ((${#failed[@]} == 0)) || { echo "failed: ${failed[*]}"; return 1; }
}

# replay_corpus NAME: the seed corpus of harness NAME, in one process.
replay_corpus() {
    local name=$1 top
    top="$(cd "$BATS_TEST_DIRNAME/.." && pwd -P)"
    cd "$T"
    run "$top/build/tests/fuzz/replay-$name" "$top/tests/fuzz/corpus/$name"
    echo "$output" | tail -n 30
    [ "$status" -eq 0 ]
    [[ ${lines[-1]} == "ok "* ]]
}

@test "qcow2 fuzz regressions replay cleanly" {
    replay_dir qcow2
}

@test "qcow2 fuzz seed corpus replays cleanly" {
    replay_corpus qcow2
}
