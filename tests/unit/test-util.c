/* test-util.c - unit tests for the small shared helpers: size parsing and formatting, key=value
 * block options, error construction, logging and the alignment/endian helpers. */
#include "config.h"
#include "unit-helpers.h"
#include "block/block.h"

/* --- parse_size ------------------------------------------------------------------------------- */

static void check_size_ok(const char *str, uint64_t expected)
{
    g_autoptr(GError) err = NULL;
    uint64_t v = 12345;

    if (g_test_verbose()) {
        g_test_message("parse_size(\"%s\")", str);
    }
    g_assert_true(parse_size(str, &v, &err));
    g_assert_no_error(err);
    g_assert_cmpuint(v, ==, expected);
}

static void check_size_bad(const char *str)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *quoted = g_strdup_printf("'%s'", str);
    uint64_t v = 0;

    if (g_test_verbose()) {
        g_test_message("parse_size(\"%s\") must fail", str);
    }
    g_assert_false(parse_size(str, &v, &err));
    g_assert_error(err, BLK_ERROR, EINVAL);
    if (err) {
        g_assert_nonnull(strstr(err->message, quoted));     /* names the input */
        g_assert_null(strchr(err->message, '\n'));
    }
    g_assert_false(parse_size(str, &v, NULL));               /* errp may be NULL */
}

static void test_parse_size_plain(void)
{
    check_size_ok("0", 0);
    check_size_ok("1", 1);
    check_size_ok("512", 512);
    check_size_ok("512B", 512);
    check_size_ok("512b", 512);
    check_size_ok("1048576", 1048576);
    check_size_ok("9223372036854775807", INT64_MAX);
}

static void test_parse_size_suffixes(void)
{
    check_size_ok("4k", 4096);
    check_size_ok("4K", 4096);
    check_size_ok("4KB", 4096);
    check_size_ok("4KiB", 4096);
    check_size_ok("4kib", 4096);
    check_size_ok("64k", 65536);
    check_size_ok("1M", UINT64_C(1) << 20);
    check_size_ok("1m", UINT64_C(1) << 20);
    check_size_ok("1MiB", UINT64_C(1) << 20);
    check_size_ok("1MB", UINT64_C(1) << 20);
    check_size_ok("2M", UINT64_C(2) << 20);
    check_size_ok("1G", UINT64_C(1) << 30);
    check_size_ok("10g", UINT64_C(10) << 30);
    check_size_ok("2T", UINT64_C(2) << 40);
    check_size_ok("3P", UINT64_C(3) << 50);
    check_size_ok("7E", UINT64_C(7) << 60);
    check_size_ok("0G", 0);
}

static void test_parse_size_rejects(void)
{
    check_size_bad("");
    check_size_bad("1.5G");
    check_size_bad("-1");
    check_size_bad("+1");
    check_size_bad("12x");
    check_size_bad("k");
    check_size_bad(" 1");
    check_size_bad("1 ");
    check_size_bad("1 k");
    check_size_bad("0x10");
    check_size_bad("1Gi");
    check_size_bad("1KK");
    check_size_bad("1kbb");
    check_size_bad("1bb");
}

static void test_parse_size_overflow(void)
{
    check_size_bad("99999999999E");
    check_size_bad("8E");                       /* 2^63: not an int64 */
    check_size_bad("16E");
    check_size_bad("9223372036854775808");      /* INT64_MAX + 1 */
    check_size_bad("18446744073709551615");
    check_size_bad("18446744073709551616");     /* does not fit in uint64 */
    check_size_bad("99999999999999999999999999");
    check_size_bad("8388608T");                 /* 2^63 */
}

/* --- format_size ------------------------------------------------------------------------------ */

static void check_format(uint64_t n, const char *expected)
{
    g_autofree char *s = format_size(n);

    g_assert_cmpstr(s, ==, expected);
}

static void test_format_size(void)
{
    check_format(0, "0 B");
    check_format(1, "1 B");
    check_format(512, "512 B");
    check_format(1023, "1023 B");
    check_format(1024, "1 KiB");
    check_format(1536, "1.5 KiB");
    check_format(UINT64_C(1) << 20, "1 MiB");
    check_format(UINT64_C(3) << 19, "1.5 MiB");
    check_format(UINT64_C(1) << 30, "1 GiB");
    check_format(UINT64_C(100) << 30, "100 GiB");
    check_format(UINT64_C(1) << 40, "1 TiB");
    check_format(UINT64_C(1) << 50, "1 PiB");
    check_format(UINT64_C(1) << 60, "1 EiB");
    check_format(UINT64_C(1000) << 20, "1000 MiB");
}

/* "For people": a number below 1024 with at most a few digits and a unit, never in exponent
 * notation, whatever the value. */
static void test_format_size_readable(void)
{
    static const uint64_t values[] = {
        1000 * 1024 + 512,              /* 1000.5 KiB */
        (UINT64_C(1) << 20) - 1,        /* 1023.999 KiB */
        (UINT64_C(1) << 30) - 1,
        (UINT64_C(1) << 30) - (UINT64_C(1) << 20),
        UINT64_C(1023) * 1024 * 1024 + 700 * 1024,
        (UINT64_C(1) << 40) + 1,
        UINT64_C(123456789),
        UINT64_MAX,
    };

    for (size_t i = 0; i < G_N_ELEMENTS(values); i++) {
        g_autofree char *s = format_size(values[i]);
        const char *unit;
        double v;
        char *end;

        if (strcspn(s, "eE+") < strcspn(s, " ")) {        /* in the number, not the unit */
            uh_fail("format_size(%" G_GUINT64_FORMAT ") = \"%s\": exponent notation",
                    values[i], s);
            continue;
        }
        v = g_ascii_strtod(s, &end);
        g_assert_true(end != s);
        g_assert_cmpint(*end, ==, ' ');
        unit = end + 1;
        g_assert_true(strcmp(unit, "B") == 0 || strcmp(unit, "KiB") == 0 ||
                      strcmp(unit, "MiB") == 0 || strcmp(unit, "GiB") == 0 ||
                      strcmp(unit, "TiB") == 0 || strcmp(unit, "PiB") == 0 ||
                      strcmp(unit, "EiB") == 0);
        g_assert_cmpfloat(v, >=, 1);
        g_assert_cmpfloat(v, <=, 1024);
    }
}

/* --- block options ----------------------------------------------------------------------------- */

static BlockOptions *opts_from(const char *str)
{
    g_autoptr(GError) err = NULL;
    BlockOptions *opts = block_options_new();

    g_assert_true(block_options_parse(opts, str, &err));
    g_assert_no_error(err);
    return opts;
}

static void test_options_parse(void)
{
    g_autoptr(GError) err = NULL;
    BlockOptions *opts = opts_from("a=1,b=two,,c=x=y,a=3");

    g_assert_cmpuint(g_hash_table_size(opts), ==, 3);
    g_assert_cmpstr(g_hash_table_lookup(opts, "a"), ==, "3");      /* the last one wins */
    g_assert_cmpstr(g_hash_table_lookup(opts, "b"), ==, "two");
    g_assert_cmpstr(g_hash_table_lookup(opts, "c"), ==, "x=y");
    g_hash_table_unref(opts);

    opts = block_options_new();
    g_assert_false(block_options_parse(opts, "a=1,novalue", &err));
    g_assert_error(err, BLK_ERROR, EINVAL);
    if (err) {
        g_assert_nonnull(strstr(err->message, "novalue"));
    }
    g_clear_error(&err);
    g_assert_false(block_options_parse(opts, "=5", &err));
    g_assert_nonnull(err);
    g_hash_table_unref(opts);
}

static void test_options_take_size(void)
{
    g_autoptr(GError) err = NULL;
    BlockOptions *opts = opts_from("size=1M,offset=4k,other=1");
    uint64_t v = 7;
    bool found = false;

    g_assert_true(block_options_take_size(opts, "size", &v, &found, &err));
    g_assert_no_error(err);
    g_assert_true(found);
    g_assert_cmpuint(v, ==, UINT64_C(1) << 20);
    g_assert_false(g_hash_table_contains(opts, "size"));           /* taken */

    g_assert_true(block_options_take_size(opts, "offset", &v, NULL, &err));
    g_assert_cmpuint(v, ==, 4096);

    /* Absent: success, not found, value untouched. */
    v = 99;
    g_assert_true(block_options_take_size(opts, "size", &v, &found, &err));
    g_assert_no_error(err);
    g_assert_false(found);
    g_assert_cmpuint(v, ==, 99);

    g_assert_true(g_hash_table_contains(opts, "other"));
    g_assert_cmpuint(g_hash_table_size(opts), ==, 1);
    g_hash_table_unref(opts);

    /* A NULL table has no options. */
    g_assert_true(block_options_take_size(NULL, "size", &v, &found, &err));
    g_assert_false(found);
    g_assert_cmpuint(v, ==, 99);
}

static void test_options_take_size_bad(void)
{
    g_autoptr(GError) err = NULL;
    BlockOptions *opts = opts_from("size=12x");
    uint64_t v = 0;

    g_assert_false(block_options_take_size(opts, "size", &v, NULL, &err));
    g_assert_error(err, BLK_ERROR, EINVAL);
    if (err) {
        g_assert_nonnull(strstr(err->message, "size"));        /* names the option */
        g_assert_nonnull(strstr(err->message, "12x"));         /* and the value */
    }
    g_hash_table_unref(opts);
}

static void test_options_take_bool(void)
{
    static const struct {
        const char *text;
        bool value;
    } cases[] = {
        { "on", true }, { "true", true }, { "yes", true }, { "1", true },
        { "off", false }, { "false", false }, { "no", false }, { "0", false },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) err = NULL;
        g_autofree char *str = g_strdup_printf("flag=%s", cases[i].text);
        BlockOptions *opts = opts_from(str);
        bool v = !cases[i].value, found = false;

        g_assert_true(block_options_take_bool(opts, "flag", &v, &found, &err));
        g_assert_no_error(err);
        g_assert_true(found);
        g_assert_cmpint(v, ==, cases[i].value);
        g_assert_cmpuint(g_hash_table_size(opts), ==, 0);
        g_hash_table_unref(opts);
    }
}

static void test_options_take_bool_bad(void)
{
    g_autoptr(GError) err = NULL;
    BlockOptions *opts = opts_from("locking=maybe");
    bool v = true, found = false;

    g_assert_false(block_options_take_bool(opts, "locking", &v, &found, &err));
    g_assert_error(err, BLK_ERROR, EINVAL);
    if (err) {
        g_assert_nonnull(strstr(err->message, "locking"));
        g_assert_nonnull(strstr(err->message, "maybe"));
    }
    g_hash_table_unref(opts);

    /* Absent: success, untouched. */
    g_clear_error(&err);
    opts = block_options_new();
    v = true;
    g_assert_true(block_options_take_bool(opts, "locking", &v, &found, &err));
    g_assert_false(found);
    g_assert_true(v);
    g_hash_table_unref(opts);
}

/* --- errors ------------------------------------------------------------------------------------- */

static void test_error_setg_errno(void)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GError) err2 = NULL;
    g_autofree char *expected = g_strdup_printf("open /x/y: %s", g_strerror(ENOENT));
    g_autofree char *expected2 = g_strdup_printf("write 42: %s", g_strerror(ENOSPC));

    error_setg_errno(&err, ENOENT, "open %s", "/x/y");
    g_assert_error(err, BLK_ERROR, ENOENT);
    if (err) {
        g_assert_cmpstr(err->message, ==, expected);
    }
    /* A negative errno means the same. */
    error_setg_errno(&err2, -ENOSPC, "write %d", 42);
    g_assert_error(err2, BLK_ERROR, ENOSPC);
    if (err2) {
        g_assert_cmpstr(err2->message, ==, expected2);
    }
    /* NULL errp is allowed. */
    error_setg_errno(NULL, EIO, "ignored");
}

static void test_error_setg_and_prefix(void)
{
    g_autoptr(GError) err = NULL;

    error_setg(&err, "bad thing %d", 3);
    g_assert_error(err, BLK_ERROR, EINVAL);
    error_prefix(&err, "%s", "img.qcow2");
    if (err) {
        g_assert_cmpstr(err->message, ==, "img.qcow2: bad thing 3");
    }
    error_prefix(NULL, "nothing");
    {
        GError *none = NULL;
        error_prefix(&none, "nothing");             /* no error: stays NULL */
        g_assert_null(none);
    }
}

/* --- logging ------------------------------------------------------------------------------------ */

static void test_log_file(void)
{
    g_autofree char *dir = uh_tmpdir_new();
    g_autofree char *path = g_build_filename(dir, "log", NULL);
    g_autoptr(GError) err = NULL;
    g_autofree char *line = g_strdup_printf("blkfuse[%d]: WARNING: hello 5\n", (int)getpid());
    g_autofree char *debug = g_strdup_printf("blkfuse[%d]: DEBUG: shown\n", (int)getpid());
    g_autofree uint8_t *data = NULL;
    size_t len;

    g_assert_true(log_open(path, &err));
    g_assert_no_error(err);
    log_set_verbose(false);
    log_warning("hello %d", 5);
    log_debug("hidden");
    log_set_verbose(true);
    log_debug("shown");
    log_set_verbose(false);
    g_assert_true(log_open(NULL, &err));           /* back to stderr */

    data = uh_read_file(path, &len);
    data = g_realloc(data, len + 1);
    data[len] = 0;
    g_assert_nonnull(strstr((char *)data, line));
    g_assert_nonnull(strstr((char *)data, debug));
    g_assert_null(strstr((char *)data, "hidden"));
    uh_tmpdir_remove(dir);
}

static void test_log_open_fails(void)
{
    g_autoptr(GError) err = NULL;

    g_assert_false(log_open("/nonexistent-dir-blkfuse/x.log", &err));
    g_assert_nonnull(err);
    if (err) {
        g_assert_nonnull(strstr(err->message, "/nonexistent-dir-blkfuse/x.log"));
        g_assert_nonnull(strstr(err->message, g_strerror(ENOENT)));
    }
    g_assert_true(log_open(NULL, NULL));
}

/* --- arithmetic and byte order --------------------------------------------------------------- */

static void test_alignment_macros(void)
{
    g_assert_cmpint(ROUND_DOWN(4097, 512), ==, 4096);
    g_assert_cmpint(ROUND_DOWN(4096, 512), ==, 4096);
    g_assert_cmpint(ROUND_UP(4097, 512), ==, 4608);
    g_assert_cmpint(ROUND_UP(4096, 512), ==, 4096);
    g_assert_cmpint(ROUND_UP(0, 512), ==, 0);
    g_assert_cmpint(DIV_ROUND_UP(1, 512), ==, 1);
    g_assert_cmpint(DIV_ROUND_UP(1024, 512), ==, 2);
    g_assert_cmpint(DIV_ROUND_UP(1025, 512), ==, 3);
    g_assert_true(IS_ALIGNED(8192, 4096));
    g_assert_false(IS_ALIGNED(8193, 4096));
    g_assert_cmpint(MIN_NON_ZERO(0, 5), ==, 5);
    g_assert_cmpint(MIN_NON_ZERO(5, 0), ==, 5);
    g_assert_cmpint(MIN_NON_ZERO(3, 5), ==, 3);
    g_assert_true(is_power_of_2(1));
    g_assert_true(is_power_of_2(4096));
    g_assert_false(is_power_of_2(0));
    g_assert_false(is_power_of_2(4095));
    g_assert_cmpint(ctz64(1), ==, 0);
    g_assert_cmpint(ctz64(65536), ==, 16);
    g_assert_cmpint(ctz64(0), ==, 64);
    g_assert_cmpint(ctz64(UINT64_C(1) << 63), ==, 63);
}

static void test_byte_order(void)
{
    uint8_t buf[11] = { 0 };

    stbe16(buf + 1, 0x1234);
    g_assert_cmpint(buf[1], ==, 0x12);
    g_assert_cmpint(buf[2], ==, 0x34);
    g_assert_cmpuint(ldbe16(buf + 1), ==, 0x1234);
    stbe32(buf + 1, 0x514649fb);            /* unaligned on purpose */
    g_assert_cmpmem(buf + 1, 4, "QFI\xfb", 4);
    g_assert_cmpuint(ldbe32(buf + 1), ==, 0x514649fb);
    stbe64(buf + 3, UINT64_C(0x0102030405060708));
    for (int i = 0; i < 8; i++) {
        g_assert_cmpint(buf[3 + i], ==, i + 1);
    }
    g_assert_cmphex(ldbe64(buf + 3), ==, UINT64_C(0x0102030405060708));
}

/* Every cache mode parses back from its name, with its flags; NULL is writeback; anything
 * else is refused with a message naming it. */
static void test_cache_mode(void)
{
    static const struct {
        const char *name;
        BlockCacheMode mode;
        int flags;
        bool write_through;
    } modes[] = {
        { "writeback", BLOCK_CACHE_WRITEBACK, 0, false },
        { "writethrough", BLOCK_CACHE_WRITETHROUGH, 0, true },
        { "none", BLOCK_CACHE_NONE, BDRV_O_NOCACHE, false },
        { "directsync", BLOCK_CACHE_DIRECTSYNC, BDRV_O_NOCACHE, true },
    };
    g_autoptr(GError) err = NULL;
    BlockCacheMode mode = BLOCK_CACHE_DIRECTSYNC;

    for (size_t i = 0; i < G_N_ELEMENTS(modes); i++) {
        g_assert_true(block_cache_mode_parse(modes[i].name, &mode, &err));
        g_assert_no_error(err);
        g_assert_cmpint(mode, ==, modes[i].mode);
        g_assert_cmpstr(block_cache_mode_name(mode), ==, modes[i].name);
        g_assert_cmpint(block_cache_mode_open_flags(mode), ==, modes[i].flags);
        g_assert_cmpint(block_cache_mode_write_through(mode), ==, modes[i].write_through);
    }
    g_assert_true(block_cache_mode_parse(NULL, &mode, &err));
    g_assert_cmpint(mode, ==, BLOCK_CACHE_WRITEBACK);
    g_assert_false(block_cache_mode_parse("WriteBack", &mode, NULL));
    g_assert_false(block_cache_mode_parse("unsafe", &mode, &err));
    g_assert_nonnull(err);
    g_assert_cmpstr(err->message, ==, "invalid cache mode 'unsafe': expected writeback, "
                    "writethrough, none or directsync");
}

static void test_clock(void)
{
    int64_t a = get_clock_ns();
    int64_t b;

    g_usleep(2000);
    b = get_clock_ns();
    g_assert_cmpint(a, >, 0);
    g_assert_cmpint(b - a, >=, 1000000);
    g_assert_cmpint(b - a, <, 10 * G_TIME_SPAN_SECOND * 1000);
}

int main(int argc, char **argv)
{
    uh_test_init(&argc, &argv);
    uh_test_add("/util/parse-size/plain", test_parse_size_plain);
    uh_test_add("/util/parse-size/suffixes", test_parse_size_suffixes);
    uh_test_add("/util/parse-size/rejects", test_parse_size_rejects);
    uh_test_add("/util/parse-size/overflow", test_parse_size_overflow);
    uh_test_add("/util/format-size/values", test_format_size);
    uh_test_add("/util/format-size/readable", test_format_size_readable);
    uh_test_add("/util/options/parse", test_options_parse);
    uh_test_add("/util/options/take-size", test_options_take_size);
    uh_test_add("/util/options/take-size-bad", test_options_take_size_bad);
    uh_test_add("/util/options/take-bool", test_options_take_bool);
    uh_test_add("/util/options/take-bool-bad", test_options_take_bool_bad);
    uh_test_add("/util/cache-mode", test_cache_mode);
    uh_test_add("/util/error/setg-errno", test_error_setg_errno);
    uh_test_add("/util/error/setg-prefix", test_error_setg_and_prefix);
    uh_test_add("/util/log/file", test_log_file);
    uh_test_add("/util/log/open-fails", test_log_open_fails);
    uh_test_add("/util/alignment", test_alignment_macros);
    uh_test_add("/util/byte-order", test_byte_order);
    uh_test_add("/util/clock", test_clock);
    return uh_test_run();
}
