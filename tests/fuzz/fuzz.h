/* fuzz.h - the entry points every harness here defines, called by libFuzzer or by replay.c
 * (which replays a corpus without libFuzzer, for the normal build and valgrind). */
#ifndef TESTS_FUZZ_FUZZ_H
#define TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Optional: once, before the first input. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
/* One input; returns 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
