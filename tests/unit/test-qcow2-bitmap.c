/* test-qcow2-bitmap.c - qcow2 persistent dirty bitmaps: the bitmap directory parser against
 * QEMU's constraints (every rule that must refuse an entry, counts, broken entries), and the
 * in-memory bits (ranges at every granularity, across chunk boundaries, against a plain
 * array of booleans). */
#include "block/qcow2.h"
#include "unit-helpers.h"

/* A directory entry as QEMU writes it (name padded to 8 bytes); returns its size. */
static size_t put_entry(uint8_t *p, uint64_t table_off, uint32_t table_size, uint32_t flags,
                        int type, int gb, const char *name, uint32_t extra)
{
    size_t n = strlen(name), size = ROUND_UP(24 + n + extra, 8);

    memset(p, 0, size);
    stbe64(p, table_off);
    stbe32(p + 8, table_size);
    stbe32(p + 12, flags);
    p[16] = type;
    p[17] = gb;
    stbe16(p + 18, n);
    stbe32(p + 20, extra);
    memcpy(p + 24 + extra, name, n);
    return size;
}

static void geometry(BDRVQcow2State *s, int cluster_bits)
{
    memset(s, 0, sizeof(*s));
    qcow2_set_geometry(s, cluster_bits, false, 4);
}

static void test_parse_valid(void)
{
    BDRVQcow2State s;
    uint8_t dir[256];
    size_t n = 0;
    g_autoptr(GError) err = NULL;
    g_autoptr(GPtrArray) list = NULL;
    Qcow2Bitmap *bm;

    geometry(&s, 16);
    /* 1 GiB at 64 KiB: 16384 bits = 2048 bytes, one table entry */
    n += put_entry(dir + n, 0x30000, 1, QCOW2_BME_AUTO, 1, 16, "daily", 0);
    n += put_entry(dir + n, 0x40000, 1, QCOW2_BME_IN_USE, 1, 9, "an-inconsistent-one", 0);
    list = qcow2_bitmaps_parse_dir(&s, dir, n, 2, 1ULL << 30, &err);
    g_assert_no_error(err);
    g_assert_nonnull(list);
    g_assert_cmpuint(list->len, ==, 2);
    bm = g_ptr_array_index(list, 0);
    g_assert_cmpstr(bm->name, ==, "daily");
    g_assert_cmpuint(bm->table_offset, ==, 0x30000);
    g_assert_cmpint(bm->granularity_bits, ==, 16);
    g_assert_false(bm->inconsistent);
    bm = g_ptr_array_index(list, 1);
    g_assert_true(bm->inconsistent);

    g_assert_cmpuint(qcow2_bitmap_data_bytes(1ULL << 30, 16), ==, 2048);
    g_assert_cmpuint(qcow2_bitmap_data_bytes((1ULL << 30) + 1, 16), ==, 2049);
    g_assert_cmpuint(qcow2_bitmap_table_entries(&s, 1ULL << 40, 16), ==, 32);
}

typedef struct BadCase {
    const char *what;
    uint64_t table_off;
    uint32_t table_size, flags;
    int type, gb;
    const char *name;
    uint32_t extra;
    const char *message;
} BadCase;

static void test_parse_refused(void)
{
    static const BadCase cases[] = {
        { "granularity too small", 0x30000, 1, 0, 1, 8, "a", 0, "unsupported granularity" },
        { "granularity too large", 0x30000, 1, 0, 1, 32, "a", 0, "unsupported granularity" },
        { "unknown type", 0x30000, 1, 0, 2, 16, "a", 0, "unknown bitmap type" },
        { "reserved flag", 0x30000, 1, 4, 1, 16, "a", 0, "unknown flags" },
        { "no name", 0x30000, 1, 0, 1, 16, "", 0, "invalid name length" },
        { "unaligned table", 0x30200, 1, 0, 1, 16, "a", 0, "invalid bitmap table offset" },
        { "table at 0", 0, 1, 0, 1, 16, "a", 0, "invalid bitmap table offset" },
        { "empty table", 0x30000, 0, 0, 1, 16, "a", 0, "invalid bitmap table size" },
        { "table too large", 0x30000, 0x8001, 0, 1, 16, "a", 0, "invalid bitmap table size" },
        { "table too small", 0x30000, 1, 0, 1, 9, "a", 0, "too small for the image size" },
        { "extra data", 0x30000, 1, 0, 1, 16, "a", 8, "extra data is not supported" },
    };
    BDRVQcow2State s;

    geometry(&s, 16);
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        const BadCase *c = &cases[i];
        uint8_t dir[128];
        size_t n = put_entry(dir, c->table_off, c->table_size, c->flags, c->type, c->gb,
                             c->name, c->extra);
        g_autoptr(GError) err = NULL;
        /* 1 GiB: at 512-byte granularity 2 Mi bits need 4 table entries */
        GPtrArray *list = qcow2_bitmaps_parse_dir(&s, dir, n, 1, 1ULL << 30, &err);

        if (g_test_verbose()) {
            g_test_message("%s: %s", c->what, err ? err->message : "accepted");
        }
        if (list) {
            g_ptr_array_free(list, TRUE);
        }
        g_assert_null(list);
        g_assert_nonnull(err);
        g_assert_true(err && strstr(err->message, c->message));
    }

    /* an in-use bitmap may have any size (QEMU: not stored after a resize) */
    {
        uint8_t dir[64];
        size_t n = put_entry(dir, 0x30000, 1, QCOW2_BME_IN_USE, 1, 9, "a", 0);
        g_autoptr(GError) err = NULL;
        g_autoptr(GPtrArray) list = qcow2_bitmaps_parse_dir(&s, dir, n, 1, 1ULL << 30, &err);
        g_assert_no_error(err);
        g_assert_nonnull(list);
    }
}

static void test_parse_counts(void)
{
    BDRVQcow2State s;
    uint8_t dir[256];
    size_t n = 0;

    geometry(&s, 16);
    n += put_entry(dir + n, 0x30000, 1, 0, 1, 16, "a", 0);
    n += put_entry(dir + n, 0x40000, 1, 0, 1, 16, "b", 0);
    {
        g_autoptr(GError) err = NULL;
        g_assert_null(qcow2_bitmaps_parse_dir(&s, dir, n, 1, 1 << 20, &err));
        g_assert_true(err && strstr(err->message, "more bitmaps"));
    }
    {
        g_autoptr(GError) err = NULL;
        g_assert_null(qcow2_bitmaps_parse_dir(&s, dir, n, 3, 1 << 20, &err));
        g_assert_true(err && strstr(err->message, "fewer bitmaps"));
    }
    for (size_t cut = 1; cut < 32; cut++) {
        g_autoptr(GError) err = NULL;
        g_assert_null(qcow2_bitmaps_parse_dir(&s, dir, n - cut, 2, 1 << 20, &err));
        g_assert_nonnull(err);
    }
}

/* Set ranges in a bitmap with 512-byte clusters (4096 bits per chunk) and compare every bit
 * with a plain array. */
static void test_bits(void)
{
    static const int grans[] = { 9, 12, 16 };

    for (size_t g = 0; g < G_N_ELEMENTS(grans); g++) {
        BDRVQcow2State s;
        Qcow2Bitmap *bm = g_new0(Qcow2Bitmap, 1);
        int gb = grans[g];
        uint64_t size = (3ULL << 20) * (1ULL << (gb - 9)) + 12345;
        uint64_t bits = DIV_ROUND_UP(size, 1ULL << gb);
        g_autofree bool *want = g_new0(bool, bits);
        GRand *rnd = g_rand_new_with_seed(42 + g);

        geometry(&s, 9);
        g_mutex_init(&s.bitmap_lock);
        s.bitmaps = g_ptr_array_new_with_free_func((GDestroyNotify)qcow2_bitmap_free);
        bm->name = g_strdup("t");
        bm->granularity_bits = gb;
        bm->flags = QCOW2_BME_AUTO | QCOW2_BME_IN_USE;
        bm->store = true;
        bm->size = size;
        bm->nchunks = qcow2_bitmap_table_entries(&s, size, gb);
        bm->chunks = g_new0(uint8_t *, bm->nchunks);
        g_ptr_array_add(s.bitmaps, bm);
        s.bitmaps_tracking = true;

        for (int i = 0; i < 200; i++) {
            uint64_t off = g_rand_int_range(rnd, 0, size);
            uint64_t len = g_rand_int_range(rnd, 1, 1 << (gb + g_rand_int_range(rnd, 0, 14)));

            qcow2_bitmaps_set_dirty(&s, off, len);
            for (uint64_t b = off >> gb; b < bits && b <= (off + len - 1) >> gb; b++) {
                want[b] = true;
            }
        }
        qcow2_bitmaps_set_dirty(&s, size - 1, 100);     /* past the end: clamped */
        want[bits - 1] = true;
        for (uint64_t b = 0; b < bits; b++) {
            if (qcow2_bitmap_get(&s, bm, b) != want[b]) {
                uh_fail("granularity 2^%d: bit %" G_GUINT64_FORMAT " is %d, want %d", gb, b,
                        qcow2_bitmap_get(&s, bm, b), want[b]);
                break;
            }
        }
        /* nothing past the last bit */
        g_assert_false(qcow2_bitmap_get(&s, bm, bits));
        g_rand_free(rnd);
        qcow2_bitmaps_free(&s);
    }
}

int main(int argc, char **argv)
{
    uh_test_init(&argc, &argv);
    uh_test_add("/qcow2-bitmap/parse/valid", test_parse_valid);
    uh_test_add("/qcow2-bitmap/parse/refused", test_parse_refused);
    uh_test_add("/qcow2-bitmap/parse/counts", test_parse_counts);
    uh_test_add("/qcow2-bitmap/bits", test_bits);
    return uh_test_run();
}
