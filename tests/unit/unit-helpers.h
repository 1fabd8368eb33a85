/* unit-helpers.h - helpers shared by the block-layer unit tests: a per-test watchdog, temp dirs
 * under /tmp, files with known contents, shell commands (qemu-img), running code in a coroutine
 * until it finishes, and waiting on a condition while polling the current event loop. */
#ifndef TESTS_UNIT_HELPERS_H
#define TESTS_UNIT_HELPERS_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>
#include "block/aio.h"
#include "block/coroutine.h"
#include "block/util.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define UH_HAVE_VALGRIND_H 1
#endif
#endif

/* --- watchdog ----------------------------------------------------------------------------- */

/* Seconds one test may take before the binary aborts (so a hang is a failure, not a timeout of
 * the whole run).  Generous, because valgrind runs everything several times slower. */
#define UH_TEST_TIMEOUT 120

static const char *uh_current_test;

static void uh_alarm_handler(int sig)
{
    static const char msg[] = "unit test watchdog: test did not finish in time: ";
    ssize_t r;

    r = write(2, msg, sizeof(msg) - 1);
    if (uh_current_test) {
        r = write(2, uh_current_test, strlen(uh_current_test));
    }
    r = write(2, "\n", 1);
    (void)r;
    abort();
}

typedef struct UhTest {
    const char *path;
    GTestFunc fn;
} UhTest;

static void uh_run_test(gconstpointer data)
{
    const UhTest *t = data;

    uh_current_test = t->path;
    signal(SIGALRM, uh_alarm_handler);
    alarm(UH_TEST_TIMEOUT);
    t->fn();
    alarm(0);
    uh_current_test = NULL;
}

static UhTest uh_tests[128];
static unsigned uh_n_tests;

/* g_test_add_func with a watchdog around the test. */
static inline void uh_test_add(const char *path, GTestFunc fn)
{
    UhTest *t;

    g_assert_cmpuint(uh_n_tests, <, G_N_ELEMENTS(uh_tests));
    t = &uh_tests[uh_n_tests++];
    t->path = path;
    t->fn = fn;
    g_test_add_data_func(path, t, uh_run_test);
}

/* g_test_init plus what every binary here wants: a failed check marks its test failed and the
 * remaining tests still run (a check that cannot be continued from uses g_assert). */
static inline void uh_test_init(int *argc, char ***argv)
{
    g_test_init(argc, argv, NULL);
    g_test_set_nonfatal_assertions();
    /* Idle worker threads of the block layer's pool exit instead of parking in GLib's global
     * pool, so that none is left alive at exit (valgrind reports live threads' TLS). */
    g_thread_pool_set_max_unused_threads(0);
}

/* g_test_run; under valgrind, then give idle pool workers time to exit (GLib retires a
 * non-exclusive pool's idle worker after half a second). */
static inline int uh_test_run(void)
{
    int ret = g_test_run();

#ifdef UH_HAVE_VALGRIND_H
    if (RUNNING_ON_VALGRIND) {
        g_usleep(800 * 1000);
    }
#endif
    return ret;
}

/* Mark the current test failed with a message on stderr (where tests/run-tests shows it). */
#define uh_fail(...) \
    do { \
        g_autofree char *uh_msg_ = g_strdup_printf(__VA_ARGS__); \
        g_printerr("%s:%d: %s\n", __FILE__, __LINE__, uh_msg_); \
        g_test_fail(); \
    } while (0)

/* Run fn in a forked child, for code that may abort the whole process.  Returns true if the
 * child finished fn without a crash and without a failed check; its messages go to this
 * process's stdout/stderr.  The verdict travels through a pipe rather than the exit status: under
 * valgrind the child's exit status also reflects its leak check, which sees the TLS of this
 * process's threads (absent in the child) as lost. */
static inline bool uh_run_in_child(GTestFunc fn)
{
    int fds[2];
    pid_t pid;
    int status = 0;
    char verdict = 0;

    g_assert(pipe2(fds, O_CLOEXEC) == 0);
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    g_assert(pid >= 0);
    if (pid == 0) {
        ssize_t r;

        close(fds[0]);
        alarm(UH_TEST_TIMEOUT);
        fn();
        fflush(stdout);
        verdict = g_test_failed() ? 'F' : 'P';
        r = write(fds[1], &verdict, 1);
        _exit(r == 1 ? 0 : 1);
    }
    close(fds[1]);
    if (read(fds[0], &verdict, 1) != 1) {
        verdict = 0;
    }
    close(fds[0]);
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    if (verdict == 'P') {
        return true;
    }
    if (WIFSIGNALED(status)) {
        g_printerr("child process killed by signal %d (%s)\n", WTERMSIG(status),
                   g_strsignal(WTERMSIG(status)));
    } else if (verdict == 'F') {
        g_printerr("child process: a check failed\n");
    } else {
        g_printerr("child process exited with status %d\n", WEXITSTATUS(status));
    }
    return false;
}

/* --- temp dirs and files -------------------------------------------------------------------- */

/* A fresh directory under /tmp (not $TMPDIR: it may be a tmpfs without O_DIRECT). */
static inline char *uh_tmpdir_new(void)
{
    char *dir = g_strdup("/tmp/blkfuse-unit.XXXXXX");

    g_assert_nonnull(g_mkdtemp(dir));
    return dir;
}

/* Remove dir and everything in it (flat: the tests create no subdirectories). */
static inline void uh_tmpdir_remove(const char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    const char *name;

    if (!d) {
        return;
    }
    while ((name = g_dir_read_name(d))) {
        g_autofree char *p = g_build_filename(dir, name, NULL);
        g_unlink(p);
    }
    g_dir_close(d);
    g_assert_cmpint(g_rmdir(dir), ==, 0);
}

/* Deterministic, position-dependent bytes: no two nearby offsets look alike. */
static inline void uh_fill_pattern(uint8_t *buf, size_t len, uint64_t start, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        uint64_t x = (start + i) * 0x9E3779B97F4A7C15ull + seed * 0xBF58476D1CE4E5B9ull;
        buf[i] = (uint8_t)(x >> 56) ^ (uint8_t)(start + i);
    }
}

/* Create path with exactly len bytes of buf (len may be 0). */
static inline void uh_write_file(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

    g_assert_cmpint(fd, >=, 0);
    if (len) {
        g_assert_cmpint(pwrite(fd, buf, len, 0), ==, (ssize_t)len);
    }
    g_assert_cmpint(close(fd), ==, 0);
}

/* Create path with len bytes of the pattern for seed; returns the contents (g_free). */
static inline uint8_t *uh_create_pattern_file(const char *path, size_t len, unsigned seed)
{
    uint8_t *buf = g_malloc(MAX(len, 1));

    uh_fill_pattern(buf, len, 0, seed);
    uh_write_file(path, buf, len);
    return buf;
}

/* Create path with len bytes of the pattern for seed, when the contents are not needed. */
static inline void uh_make_pattern_file(const char *path, size_t len, unsigned seed)
{
    g_free(uh_create_pattern_file(path, len, seed));
}

/* The whole file, read with plain pread; *len gets its size. */
static inline uint8_t *uh_read_file(const char *path, size_t *len)
{
    g_autoptr(GError) err = NULL;
    char *data = NULL;
    gsize n = 0;

    g_assert_true(g_file_get_contents(path, &data, &n, &err));
    g_assert_no_error(err);
    *len = n;
    return (uint8_t *)data;
}

static inline int64_t uh_file_size(const char *path)
{
    struct stat st;

    g_assert_cmpint(stat(path, &st), ==, 0);
    return st.st_size;
}

/* --- shell --------------------------------------------------------------------------------- */

/* Run a shell command; returns its exit status (-1 if it did not exit), output in *out. */
static inline int uh_sh(char **out, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static inline int uh_sh(char **out, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *cmd = NULL;
    g_autofree char *o = NULL, *e = NULL;
    char *argv[] = { (char *)"/bin/sh", (char *)"-c", NULL, NULL };
    g_autoptr(GError) err = NULL;
    int status = -1;

    va_start(ap, fmt);
    cmd = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    argv[2] = cmd;
    if (!g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &o, &e, &status, &err)) {
        g_test_message("cannot run '%s': %s", cmd, err->message);
        return -1;
    }
    if (out) {
        *out = g_strconcat(o ? o : "", e ? e : "", NULL);
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        g_test_message("'%s' failed: %s%s", cmd, o ? o : "", e ? e : "");
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static inline bool uh_have_command(const char *cmd)
{
    g_autofree char *path = g_find_program_in_path(cmd);

    return path != NULL;
}

/* --- coroutines and event loops ------------------------------------------------------------ */

/* Poll the calling thread's event loop (blocking) until *flag becomes true. */
static inline void uh_poll_until(const bool *flag)
{
    AioContext *ctx = aio_get_current();

    while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE)) {
        aio_poll(ctx, true);
    }
}

/* Poll (blocking) until the counter reaches target. */
static inline void uh_poll_until_count(const unsigned *counter, unsigned target)
{
    AioContext *ctx = aio_get_current();

    while (__atomic_load_n(counter, __ATOMIC_ACQUIRE) < target) {
        aio_poll(ctx, true);
    }
}

/* From a coroutine: let the event loop run once, then continue (schedule self, yield). */
static inline void coroutine_fn uh_co_yield_to_loop(void)
{
    Coroutine *self = coroutine_self();

    g_assert_nonnull(self);
    aio_co_schedule(coroutine_get_context(self), self);
    coroutine_yield();
}

#endif
