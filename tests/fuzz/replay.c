/* replay.c - runs a libFuzzer harness without libFuzzer, for 'make check': every argument is
 * an input file, or a directory whose files (sorted by name, dot files skipped) are inputs, each
 * passed once to LLVMFuzzerTestOneInput.  A crash or abort in the harness fails the run; so
 * do an input that takes longer than REPLAY_SLOW_SEC (inputs take milliseconds, even under
 * sanitizers: a slow one is a bug, as a libFuzzer "slow unit" or timeout is) and an argument
 * that cannot be read.  Prints how many inputs were replayed. */
#include "config.h"
#include "fuzz.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

#define REPLAY_SLOW_SEC 10

static unsigned replayed;

static void replay_file(const char *path)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *data = NULL;
    gsize len;
    int64_t start, took;

    if (!g_file_get_contents(path, &data, &len, &err)) {
        fprintf(stderr, "replay: %s\n", err->message);
        exit(1);
    }
    start = g_get_monotonic_time();
    LLVMFuzzerTestOneInput((const uint8_t *)data, len);
    took = g_get_monotonic_time() - start;
    if (took > REPLAY_SLOW_SEC * G_USEC_PER_SEC) {
        fprintf(stderr, "replay: %s took %.1f s (more than %d s)\n", path,
                took / (double)G_USEC_PER_SEC, REPLAY_SLOW_SEC);
        exit(1);
    }
    replayed++;
}

static int compare_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void replay_dir(const char *path)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GDir) dir = g_dir_open(path, 0, &err);
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    const char *name;

    if (!dir) {
        fprintf(stderr, "replay: %s\n", err->message);
        exit(1);
    }
    while ((name = g_dir_read_name(dir))) {
        if (name[0] != '.') {
            g_ptr_array_add(names, g_build_filename(path, name, NULL));
        }
    }
    g_ptr_array_sort(names, compare_names);
    for (guint i = 0; i < names->len; i++) {
        replay_file(names->pdata[i]);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE-OR-DIRECTORY...\n", argv[0]);
        return 2;
    }
    if (LLVMFuzzerInitialize) {
        LLVMFuzzerInitialize(&argc, &argv);
    }
    for (int i = 1; i < argc; i++) {
        if (g_file_test(argv[i], G_FILE_TEST_IS_DIR)) {
            replay_dir(argv[i]);
        } else {
            replay_file(argv[i]);
        }
    }
    printf("%s: %u inputs replayed\n", argv[0], replayed);
    return 0;
}
