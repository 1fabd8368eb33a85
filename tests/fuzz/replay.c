/* replay.c - run a libFuzzer harness on given inputs without libFuzzer, for the regression
 * replay in `make check`: built with the ordinary compiler and linked with one
 * tests/fuzz/fuzz-NAME.c as build/tests/fuzz/replay-NAME.
 *
 * Usage: replay-NAME FILE|DIR...   (a DIR means every file in it, in name order)
 *
 * Calls LLVMFuzzerInitialize once (if the harness has one), then LLVMFuzzerTestOneInput on
 * each file, printing "ok N - FILE" after each.  A bug shows as a crash, an abort or a
 * sanitizer report (in a sanitizer build), so the exit status says whether all inputs passed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int cmp_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void add_path(GPtrArray *files, const char *path)
{
    g_autoptr(GError) err = NULL;
    GDir *dir;
    const char *name;
    g_autoptr(GPtrArray) names = NULL;

    if (!g_file_test(path, G_FILE_TEST_IS_DIR)) {
        g_ptr_array_add(files, g_strdup(path));
        return;
    }
    dir = g_dir_open(path, 0, &err);
    if (!dir) {
        fprintf(stderr, "replay: %s\n", err->message);
        exit(2);
    }
    names = g_ptr_array_new_with_free_func(g_free);
    while ((name = g_dir_read_name(dir))) {
        if (name[0] != '.') {
            g_ptr_array_add(names, g_build_filename(path, name, NULL));
        }
    }
    g_dir_close(dir);
    g_ptr_array_sort(names, cmp_names);
    for (guint i = 0; i < names->len; i++) {
        g_ptr_array_add(files, g_strdup(names->pdata[i]));
    }
}

int main(int argc, char **argv)
{
    g_autoptr(GPtrArray) files = g_ptr_array_new_with_free_func(g_free);

    if (argc < 2 || !strcmp(argv[1], "--help")) {
        fprintf(argc < 2 ? stderr : stdout, "Usage: %s FILE|DIR...\n", argv[0]);
        return argc < 2 ? 2 : 0;
    }
    for (int i = 1; i < argc; i++) {
        add_path(files, argv[i]);
    }
    if (LLVMFuzzerInitialize) {
        LLVMFuzzerInitialize(&argc, &argv);
    }
    printf("1..%u\n", files->len);
    fflush(stdout);
    for (guint i = 0; i < files->len; i++) {
        g_autoptr(GError) err = NULL;
        g_autofree char *data = NULL;
        gsize len = 0;

        if (!g_file_get_contents(files->pdata[i], &data, &len, &err)) {
            printf("not ok %u - %s: %s\n", i + 1, (char *)files->pdata[i], err->message);
            return 1;
        }
        LLVMFuzzerTestOneInput((const uint8_t *)data, len);
        printf("ok %u - %s\n", i + 1, (char *)files->pdata[i]);
        fflush(stdout);
    }
    return 0;
}
