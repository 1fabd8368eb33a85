/* test-passthrough.c - unit tests for the passthrough rules (fuse/passthrough.c): every rule
 * alone refuses with its own reason, all of them together are reported at once, a read-only
 * export needs no --growable, and the facts gathered from export options. */
#include "config.h"
#include "unit-helpers.h"
#include "fuse/passthrough.h"

/* The facts of an export where every rule holds. */
static FusePassthroughFacts all_hold(void)
{
    return (FusePassthroughFacts) {
        .format_raw_given = true, .raw_over_file = true, .regular_file = true,
        .cache_writeback = true, .growable = true, .coarse_stats = true, .privileged = true,
    };
}

static void test_all_hold(void)
{
    FusePassthroughFacts f = all_hold();

    g_assert_null(fuse_passthrough_refusals(&f));
}

static void test_read_only_needs_no_growable(void)
{
    FusePassthroughFacts f = all_hold();

    f.growable = false;
    f.read_only = true;
    g_assert_null(fuse_passthrough_refusals(&f));
}

/* Break one rule of an export where all hold; the refusal names it, and only it. */
static void check_one(void (*breaker)(FusePassthroughFacts *f), const char *phrase)
{
    FusePassthroughFacts f = all_hold();
    g_autofree char *why = NULL;

    breaker(&f);
    why = fuse_passthrough_refusals(&f);
    g_assert_nonnull(why);
    if (!strstr(why, phrase)) {
        g_error("refusal \"%s\" does not say \"%s\"", why, phrase);
    }
    g_assert_null(strstr(why, "; "));
}

static void no_raw(FusePassthroughFacts *f) { f->raw_over_file = false; }
static void not_regular(FusePassthroughFacts *f) { f->regular_file = false; }
static void probed(FusePassthroughFacts *f) { f->format_raw_given = false; }
static void sliced(FusePassthroughFacts *f) { f->sliced = true; }
static void faults(FusePassthroughFacts *f) { f->faults = true; }
static void cache(FusePassthroughFacts *f) { f->cache_writeback = false; }
static void fixed_end(FusePassthroughFacts *f) { f->growable = false; }
static void full_stats(FusePassthroughFacts *f) { f->coarse_stats = false; }
static void unprivileged(FusePassthroughFacts *f) { f->privileged = false; }

static void test_each_rule(void)
{
    check_one(no_raw, "not a raw image in a local file");
    check_one(not_regular, "not a regular file");
    check_one(probed, "-f raw");
    check_one(sliced, "offset=/size=");
    check_one(faults, "fault-rules=");
    check_one(cache, "--cache is not writeback");
    check_one(fixed_end, "--growable");
    check_one(full_stats, "--stats=coarse");
    check_one(unprivileged, "CAP_SYS_ADMIN");
}

static void test_all_reasons_at_once(void)
{
    FusePassthroughFacts f = { 0 };
    g_autofree char *why = fuse_passthrough_refusals(&f);
    g_auto(GStrv) parts = g_strsplit(why, "; ", -1);

    /* Not raw, not given as raw, cache, end, stats, privilege. */
    g_assert_cmpuint(g_strv_length(parts), ==, 6);
}

static void test_snapshot(void)
{
    FusePassthroughFacts f = all_hold();
    g_autofree char *why = NULL;

    /* The graph of --snapshot is a qcow2 overlay; one reason names the option. */
    f.snapshot = true;
    f.raw_over_file = false;
    why = fuse_passthrough_refusals(&f);
    g_assert_cmpstr(why, ==, "--snapshot sends writes to an overlay");
}

static void test_option_facts(void)
{
    g_autoptr(GHashTable) opts = block_options_new();
    BlockExportOptions eo = { .format = "raw", .opts = opts, .growable = true,
                              .coarse_stats = true };
    FusePassthroughFacts f;

    fuse_passthrough_option_facts(&f, &eo);
    g_assert_true(f.format_raw_given && f.cache_writeback && f.growable && f.coarse_stats);
    g_assert_false(f.sliced || f.faults || f.snapshot || f.read_only);

    g_hash_table_replace(opts, g_strdup("size"), g_strdup("1M"));
    g_hash_table_replace(opts, g_strdup("fault-rules"), g_strdup("/dev/null"));
    eo.format = NULL;
    eo.cache = "directsync";
    fuse_passthrough_option_facts(&f, &eo);
    g_assert_true(f.sliced && f.faults);
    g_assert_false(f.format_raw_given || f.cache_writeback);
}

static void test_modes(void)
{
    BlockExportPassthrough m;

    g_assert_true(fuse_passthrough_mode_parse("on", &m) && m == BLK_EXP_PASSTHROUGH_ON);
    g_assert_true(fuse_passthrough_mode_parse("off", &m) && m == BLK_EXP_PASSTHROUGH_OFF);
    g_assert_true(fuse_passthrough_mode_parse("auto", &m) && m == BLK_EXP_PASSTHROUGH_AUTO);
    g_assert_false(fuse_passthrough_mode_parse("yes", &m));
    g_assert_cmpstr(fuse_passthrough_mode_name(BLK_EXP_PASSTHROUGH_AUTO), ==, "auto");
    g_assert_cmpstr(fuse_passthrough_mode_name(BLK_EXP_PASSTHROUGH_ON), ==, "on");
}

int main(int argc, char **argv)
{
    uh_test_init(&argc, &argv);
    uh_test_add("/passthrough/all-hold", test_all_hold);
    uh_test_add("/passthrough/read-only-needs-no-growable", test_read_only_needs_no_growable);
    uh_test_add("/passthrough/each-rule", test_each_rule);
    uh_test_add("/passthrough/all-reasons-at-once", test_all_reasons_at_once);
    uh_test_add("/passthrough/snapshot", test_snapshot);
    uh_test_add("/passthrough/option-facts", test_option_facts);
    uh_test_add("/passthrough/modes", test_modes);
    return uh_test_run();
}
