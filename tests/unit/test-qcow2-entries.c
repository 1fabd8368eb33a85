/* test-qcow2-entries.c - qcow2 on-disk entry decoding: L2 entries (standard and extended),
 * compressed cluster descriptors for every cluster size, refcount block entries of every
 * width. */
#include <string.h>
#include <glib.h>
#include "block/qcow2.h"
#include "unit-helpers.h"

static void test_l2_standard(void)
{
    BDRVQcow2State s = { .version = 3 };

    qcow2_set_geometry(&s, 16, false, 4);
    g_assert_cmpint(s.l2_size, ==, 8192);
    g_assert_cmpint(s.sc_size, ==, 65536);
    g_assert_cmpint(qcow2_sc_type(&s, 0, 0, 0), ==, QCOW2_SC_UNALLOC_PLAIN);
    g_assert_cmpint(qcow2_sc_type(&s, 0x50000 | QCOW_OFLAG_COPIED, 0, 0), ==,
                    QCOW2_SC_NORMAL);
    g_assert_cmpint(qcow2_sc_type(&s, 0x50000, 0, 0), ==, QCOW2_SC_NORMAL);
    g_assert_cmpint(qcow2_sc_type(&s, QCOW_OFLAG_ZERO, 0, 0), ==, QCOW2_SC_ZERO_PLAIN);
    g_assert_cmpint(qcow2_sc_type(&s, 0x50000 | QCOW_OFLAG_ZERO, 0, 0), ==,
                    QCOW2_SC_ZERO_ALLOC);
    g_assert_cmpint(qcow2_sc_type(&s, QCOW_OFLAG_COMPRESSED | 1234, 0, 0), ==,
                    QCOW2_SC_COMPRESSED);
    /* version 2 has no zero flag */
    s.version = 2;
    g_assert_cmpint(qcow2_sc_type(&s, QCOW_OFLAG_ZERO, 0, 0), ==, QCOW2_SC_INVALID);
}

static void test_l2_extended(void)
{
    BDRVQcow2State s = { .version = 3 };
    uint64_t host = 0x40000 | QCOW_OFLAG_COPIED;
    uint64_t bm = (1ULL << 0) | (1ULL << 31) | (1ULL << (32 + 5));
    uint8_t table[32];

    qcow2_set_geometry(&s, 16, true, 4);
    g_assert_cmpint(s.l2_size, ==, 4096);
    g_assert_cmpint(s.l2_entry_size, ==, 16);
    g_assert_cmpint(s.sc_size, ==, 2048);
    g_assert_cmpint(qcow2_sc_type(&s, host, bm, 0), ==, QCOW2_SC_NORMAL);
    g_assert_cmpint(qcow2_sc_type(&s, host, bm, 31), ==, QCOW2_SC_NORMAL);
    g_assert_cmpint(qcow2_sc_type(&s, host, bm, 5), ==, QCOW2_SC_ZERO_ALLOC);
    g_assert_cmpint(qcow2_sc_type(&s, host, bm, 6), ==, QCOW2_SC_UNALLOC_ALLOC);
    g_assert_cmpint(qcow2_sc_type(&s, 0, 1ULL << 33, 1), ==, QCOW2_SC_ZERO_PLAIN);
    g_assert_cmpint(qcow2_sc_type(&s, 0, 0, 7), ==, QCOW2_SC_UNALLOC_PLAIN);
    /* allocated without a host cluster, or both bits set: damaged */
    g_assert_cmpint(qcow2_sc_type(&s, 0, 1, 0), ==, QCOW2_SC_INVALID);
    g_assert_cmpint(qcow2_sc_type(&s, host, 1 | (1ULL << 32), 0), ==, QCOW2_SC_INVALID);
    /* bit 0 of the descriptor is not a zero flag with extended L2 */
    g_assert_cmpint(qcow2_sc_type(&s, host | 1, 1, 0), ==, QCOW2_SC_NORMAL);

    memset(table, 0, sizeof(table));
    qcow2_l2_set(&s, table, 1, host, bm);
    g_assert_cmphex(qcow2_l2_entry(&s, table, 1), ==, host);
    g_assert_cmphex(qcow2_l2_bitmap(&s, table, 1), ==, bm);
    g_assert_cmphex(qcow2_l2_entry(&s, table, 0), ==, 0);
}

static void test_compressed_descriptor(void)
{
    for (int cb = 9; cb <= 21; cb++) {
        int shift = 62 - (cb - 8);
        uint64_t max_sect = (1ULL << (cb - 8)) - 1;
        uint64_t offs[] = { 0x200, 0x12345, (1ULL << MIN(shift, 56)) - 1 - 0x1000 };

        for (size_t i = 0; i < G_N_ELEMENTS(offs); i++) {
            uint64_t nsect[] = { 0, 1, max_sect };
            for (size_t j = 0; j < G_N_ELEMENTS(nsect); j++) {
                uint64_t off = offs[i] & ((1ULL << shift) - 1);
                uint64_t e = QCOW_OFLAG_COMPRESSED | (nsect[j] << shift) | off;
                uint64_t host, bytes, rs, rl;

                qcow2_compressed_decode(cb, e, &host, &bytes, &rs, &rl);
                g_assert_cmphex(host, ==, off);
                g_assert_cmphex(rs, ==, off & ~511ULL);
                g_assert_cmpuint(rl, ==, (nsect[j] + 1) * 512);
                g_assert_cmpuint(bytes, ==, (nsect[j] + 1) * 512 - (off & 511));
            }
        }
    }
    /* A known value: 64k clusters, offset 0x70000a, 3 additional sectors. */
    {
        uint64_t host, bytes, rs, rl;
        qcow2_compressed_decode(16, QCOW_OFLAG_COMPRESSED | (3ULL << 54) | 0x70000a, &host,
                                &bytes, &rs, &rl);
        g_assert_cmphex(host, ==, 0x70000a);
        g_assert_cmphex(rs, ==, 0x700000);
        g_assert_cmpuint(rl, ==, 2048);
        g_assert_cmpuint(bytes, ==, 2038);
    }
}

static void test_refblock_widths(void)
{
    for (int order = 0; order <= 6; order++) {
        int bits = 1 << order;
        uint64_t max = order == 6 ? UINT64_MAX : (1ULL << bits) - 1;
        uint32_t cs = 512;
        uint64_t entries = (uint64_t)cs * 8 / bits;
        g_autofree uint8_t *blk = g_malloc0(cs);
        GRand *r = g_rand_new_with_seed(order);
        g_autofree uint64_t *shadow = g_new0(uint64_t, entries);
        BDRVQcow2State s;

        qcow2_set_geometry(&s, 9, false, order);
        g_assert_cmpuint(s.refcount_max, ==, max);
        g_assert_cmpuint(1ULL << s.rb_bits, ==, entries);

        for (int n = 0; n < 4000; n++) {
            uint64_t idx = g_rand_int_range(r, 0, entries);
            uint64_t v = ((uint64_t)g_rand_int(r) << 32 | g_rand_int(r)) & max;
            if (n % 7 == 0) {
                v = max;
            }
            qcow2_refblock_set(blk, order, idx, v);
            shadow[idx] = v;
        }
        for (uint64_t i = 0; i < entries; i++) {
            g_assert_cmpuint(qcow2_refblock_get(blk, order, i), ==, shadow[i]);
        }
        /* bit 0 is the least significant bit of sub-byte widths; wider ones are big endian */
        memset(blk, 0, cs);
        qcow2_refblock_set(blk, order, 1, 1);
        switch (order) {
        case 0: g_assert_cmphex(blk[0], ==, 0x02); break;
        case 1: g_assert_cmphex(blk[0], ==, 0x04); break;
        case 2: g_assert_cmphex(blk[0], ==, 0x10); break;
        case 3: g_assert_cmphex(blk[1], ==, 1); break;
        case 4: g_assert_cmphex(blk[3], ==, 1); break;
        case 5: g_assert_cmphex(blk[7], ==, 1); break;
        case 6: g_assert_cmphex(blk[15], ==, 1); break;
        }
        g_rand_free(r);
    }
}

static void test_geometry(void)
{
    BDRVQcow2State s = { .version = 3 };

    for (int cb = 9; cb <= 21; cb++) {
        qcow2_set_geometry(&s, cb, false, 4);
        g_assert_cmpuint((uint64_t)s.l2_size * 8, ==, s.cluster_size);
        g_assert_cmpuint(qcow2_l1_entries_for(&s, 0), ==, 0);
        g_assert_cmpuint(qcow2_l1_entries_for(&s, 1), ==, 1);
        g_assert_cmpuint(qcow2_l1_entries_for(&s, (uint64_t)s.l2_size << cb), ==, 1);
        g_assert_cmpuint(qcow2_l1_entries_for(&s, ((uint64_t)s.l2_size << cb) + 1), ==, 2);
        if (cb >= 14) {
            qcow2_set_geometry(&s, cb, true, 4);
            g_assert_cmpuint(s.sc_size * 32, ==, s.cluster_size);
            g_assert_cmpuint((uint64_t)s.l2_size * 16, ==, s.cluster_size);
        }
    }
}

int main(int argc, char **argv)
{
    uh_test_init(&argc, &argv);
    uh_test_add("/qcow2/entries/l2-standard", test_l2_standard);
    uh_test_add("/qcow2/entries/l2-extended", test_l2_extended);
    uh_test_add("/qcow2/entries/compressed-descriptor", test_compressed_descriptor);
    uh_test_add("/qcow2/entries/refcount-widths", test_refblock_widths);
    uh_test_add("/qcow2/entries/geometry", test_geometry);
    return uh_test_run();
}
