#!/usr/bin/env bats
# fuzz-regressions.bats - every libFuzzer harness (tests/fuzz/fuzz-NAME.c), built
# without libFuzzer by `make check` (build/tests/fuzz/fuzz-NAME), replays its
# seed corpus tests/fuzz/corpus/NAME/ and the inputs that once made it fail,
# tests/fuzz/regressions/NAME/: none may crash, abort, trip a sanitizer or take minutes.

load helpers

# In a sanitizer build, a UBSan report must fail the replay as an ASan one does (UBSan
# only prints by default).
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

FUZZ_DIR="$BATS_TEST_DIRNAME/fuzz"

@test "every fuzz harness is built for the replay" {
    local src name
    for src in "$FUZZ_DIR"/fuzz-*.c; do
        [[ -e $src ]] || continue
        name=$(basename "$src" .c)
        need_tool "../fuzz/$name"
    done
}

@test "every fuzz harness replays its seeds and regression inputs without a failure" {
    local src name dirs d
    for src in "$FUZZ_DIR"/fuzz-*.c; do
        [[ -e $src ]] || continue
        name=$(basename "$src" .c)
        name=${name#fuzz-}
        dirs=()
        for d in "$FUZZ_DIR/corpus/$name" "$FUZZ_DIR/regressions/$name"; do
            [[ -d $d ]] && dirs+=("$d")
        done
        ((${#dirs[@]})) || continue
        # Bounded: an input that makes a harness spin (a walk over terabytes of holes once
        # did) fails here instead of holding the suite.
        run timeout 300 "$TEST_TOOLS_DIR/../fuzz/fuzz-$name" "${dirs[@]}"
        echo "$output"
        [ "$status" -eq 0 ]
        [[ $output == *" inputs replayed"* ]]
    done
}
