/* test-qcow2-order.c - crash-safe write order of the qcow2 driver's allocation paths.
 *
 * A recording node sits between the qcow2 node and its file: every write (with its data),
 * flush and truncate is kept in order.  Replaying the trace gives, at each write, the image as
 * written so far and the image as durable so far (what a power loss right then would leave,
 * in the worst case: everything since the last flush lost).  The checks, at each write that
 * makes metadata point somewhere:
 *   - an L1 entry, a refcount table entry or the header's L1 / refcount table offset points
 *     only at a table that is durable, whose own refcount is durable (unless the durable
 *     header has the lazy-refcounts dirty bit);
 *   - an L2 entry points only at a cluster whose refcount is durable (same exception) and whose
 *     contents (the data, and the copy-on-write fill) are durable: after a power loss a range
 *     written but not flushed reads old or new data, never the cluster's earlier contents;
 *   - the header's size grows only when the new area reads as zeros in the durable image;
 *     without a backing file it shrinks only when the durable image maps nothing beyond it;
 *     with one, no entry is unmapped (letting the backing file show through) inside the
 *     durable size; the node's size does not grow before the header is written.
 * Each scenario runs in each mode: default, lazy refcounts, 512-byte clusters, extended L2,
 * backing file. */
#include <sys/stat.h>
#include "block/qcow2.h"
#include "unit-helpers.h"
#include "test-qcow2-util.h"

static char *tmpdir;

/* --- the recording node --------------------------------------------------------------------- */

typedef struct Event {
    char kind;                  /* 'W' write, 'F' flush, 'T' truncate */
    uint64_t off, len;          /* W: range; T: new length */
    uint8_t *data;              /* W */
    int64_t top_len;            /* the qcow2 node's size when the request was made */
} Event;

static GArray *events;          /* Event */
static BlockDriverState *top;   /* the qcow2 node */

static void record(char kind, uint64_t off, uint64_t len, const void *data)
{
    Event e = { .kind = kind, .off = off, .len = len, .top_len = bdrv_getlength(top) };

    if (data) {
        e.data = g_memdup2(data, len);
    }
    g_array_append_val(events, e);
}

static int coroutine_fn rec_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                  void *buf, BdrvRequestFlags flags)
{
    return bdrv_co_pread(bs->file->bs, offset, bytes, buf, flags);
}

static int coroutine_fn rec_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   const void *buf, BdrvRequestFlags flags)
{
    int ret = bdrv_co_pwrite(bs->file->bs, offset, bytes, buf, flags);

    if (ret >= 0) {
        record('W', offset, bytes, buf);
    }
    return ret;
}

static int coroutine_fn rec_flush(BlockDriverState *bs)
{
    int ret = bdrv_co_flush(bs->file->bs);

    if (ret >= 0) {
        record('F', 0, 0, NULL);
    }
    return ret;
}

static int coroutine_fn rec_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                     PreallocMode prealloc, GError **errp)
{
    int ret = bdrv_co_truncate(bs->file->bs, offset, exact, prealloc, errp);

    if (ret >= 0) {
        record('T', offset, 0, NULL);
    }
    return ret;
}

static int coroutine_fn rec_preallocate(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    return bdrv_co_preallocate(bs->file->bs, offset, bytes);
}

static int64_t rec_getlength(BlockDriverState *bs)
{
    return bdrv_getlength(bs->file->bs);
}

static const BlockDriver bdrv_record = {
    .format_name         = "record",
    .instance_size       = 1,
    .bdrv_co_pread       = rec_pread,
    .bdrv_co_pwrite      = rec_pwrite,
    .bdrv_co_flush       = rec_flush,
    .bdrv_co_truncate    = rec_truncate,
    .bdrv_co_preallocate = rec_preallocate,
    .bdrv_getlength      = rec_getlength,
};

/* Put a recording node between bs and its file; it goes away with bs. */
static void insert_recorder(BlockDriverState *bs)
{
    BlockDriverState *file = bs->file->bs;
    BlockDriverState *rec = g_new0(BlockDriverState, 1);

    rec->drv = &bdrv_record;
    rec->opaque = g_malloc0(1);
    rec->filename = g_strdup(file->filename);
    rec->open_flags = file->open_flags;
    rec->refcnt = 1;
    rec->bl = file->bl;
    g_mutex_init(&rec->reqs_lock);
    rec->file = g_new0(BdrvChild, 1);
    rec->file->name = g_strdup("file");
    rec->file->bs = file;
    bs->file->bs = rec;
    top = bs;
}

static void events_clear(void)
{
    for (guint i = 0; events && i < events->len; i++) {
        g_free(g_array_index(events, Event, i).data);
    }
    if (events) {
        g_array_set_size(events, 0);
    } else {
        events = g_array_new(FALSE, FALSE, sizeof(Event));
    }
}

/* --- images in memory ----------------------------------------------------------------------- */

typedef struct Img {
    uint8_t *b;
    uint64_t len;
} Img;

static uint64_t g64(const Img *m, uint64_t off)
{
    return off + 8 <= m->len ? ldbe64(m->b + off) : 0;
}

static uint32_t g32(const Img *m, uint64_t off)
{
    return off + 4 <= m->len ? ldbe32(m->b + off) : 0;
}

static void img_resize(Img *m, uint64_t len)
{
    if (len > m->len) {
        m->b = g_realloc(m->b, len);
        memset(m->b + m->len, 0, len - m->len);
    }
    m->len = len;
}

static void img_write(Img *m, uint64_t off, const uint8_t *d, uint64_t n)
{
    if (off + n > m->len) {
        img_resize(m, off + n);
    }
    memcpy(m->b + off, d, n);
}

static uint8_t img_byte(const Img *m, uint64_t off)
{
    return off < m->len ? m->b[off] : 0;
}

static bool img_same(const Img *a, const Img *b, uint64_t off, uint64_t n)
{
    for (uint64_t i = off; i < off + n; i++) {
        if (img_byte(a, i) != img_byte(b, i)) {
            return false;
        }
    }
    return true;
}

typedef struct Geo {
    int cb;
    uint64_t cs;
    int order;
    bool extl2;
    int esz;                    /* L2 entry size */
    uint64_t l1_off, rt_off, size, incompat;
    uint32_t l1_size, rt_clusters;
} Geo;

static void geo(const Img *m, Geo *g)
{
    bool v3 = g32(m, 4) >= 3;

    g->cb = g32(m, 20);
    g->cs = 1ULL << g->cb;
    g->size = g64(m, 24);
    g->l1_size = g32(m, 36);
    g->l1_off = g64(m, 40);
    g->rt_off = g64(m, 48);
    g->rt_clusters = g32(m, 56);
    g->incompat = v3 ? g64(m, 72) : 0;
    g->order = v3 ? (int)g32(m, 96) : 4;
    g->extl2 = g->incompat & QCOW2_INCOMPAT_EXTL2;
    g->esz = g->extl2 ? 16 : 8;
}

static uint64_t refcount(const Img *m, uint64_t host)
{
    Geo g;
    uint64_t ci, rb_bits, rb;

    geo(m, &g);
    ci = host >> g.cb;
    rb_bits = g.cb + 3 - g.order;
    if ((ci >> rb_bits) * 8 >= (uint64_t)g.rt_clusters << g.cb) {
        return 0;
    }
    rb = g64(m, g.rt_off + (ci >> rb_bits) * 8) & REFT_OFFSET_MASK;
    if (!rb || rb + g.cs > m->len) {
        return 0;
    }
    return qcow2_refblock_get(m->b + rb, g.order, ci & ((1ULL << rb_bits) - 1));
}

/* The L2 entry (and bitmap) of guest cluster gc, or 0. */
static uint64_t l2_entry(const Img *m, uint64_t gc, uint64_t *bitmap)
{
    Geo g;
    uint64_t l1i, l2;

    geo(m, &g);
    l1i = gc >> (g.cb - (g.extl2 ? 4 : 3));
    *bitmap = 0;
    if (l1i >= g.l1_size) {
        return 0;
    }
    l2 = g64(m, g.l1_off + l1i * 8) & L1E_OFFSET_MASK;
    if (!l2) {
        return 0;
    }
    l2 += (gc & ((g.cs / g.esz) - 1)) * g.esz;
    *bitmap = g.extl2 ? g64(m, l2 + 8) : 0;
    return g64(m, l2);
}

/* --- the checks ----------------------------------------------------------------------------- */

typedef struct Checker {
    Img vol, dur;               /* written so far; durable so far */
    uint64_t backing_len;       /* bytes of non-zero backing data (0: none) */
    GArray *pending;            /* indices of writes since the last flush */
    int64_t size_before;        /* node size before the checked operation (-1: no check) */
    guint op_first, op_last;    /* events of the checked operation */
    const char *name;
    int failures;
} Checker;

#define FAIL(c, ...) do { \
        g_autofree char *m_ = g_strdup_printf(__VA_ARGS__); \
        g_printerr("%s: %s\n", (c)->name, m_); \
        (c)->failures++; \
    } while (0)

static bool dur_dirty(Checker *c)
{
    Geo g;
    geo(&c->dur, &g);
    return g.incompat & QCOW2_INCOMPAT_DIRTY;
}

/* A table (or data) of len bytes at off is about to be pointed at by event i.  self_rb: off
 * is a refcount block that holds its own refcount (it lies in the range it describes). */
static void need_durable(Checker *c, guint i, const char *what, uint64_t off, uint64_t len,
                         bool contents, bool self_rb)
{
    uint64_t rc;

    if (contents && !img_same(&c->vol, &c->dur, off, len)) {
        FAIL(c, "event %u points at %s %#" G_GINT64_MODIFIER "x whose contents are not durable",
             i, what, off);
    }
    if (off >= c->dur.len) {
        FAIL(c, "event %u points at %s %#" G_GINT64_MODIFIER "x past the durable end of the "
             "file (%#" G_GINT64_MODIFIER "x)", i, what, off, c->dur.len);
    }
    if (self_rb) {
        Geo g;
        uint64_t rb_bits;

        geo(&c->dur, &g);
        rb_bits = g.cb + 3 - g.order;
        rc = off + g.cs <= c->dur.len ?
             qcow2_refblock_get(c->dur.b + off, g.order, (off >> g.cb) & ((1ULL << rb_bits) - 1)) :
             0;
    } else {
        rc = refcount(&c->dur, off);
    }
    if (!dur_dirty(c) && rc == 0) {
        FAIL(c, "event %u points at %s %#" G_GINT64_MODIFIER "x whose refcount is not durable",
             i, what, off);
    }
}

/* Does guest byte p read as zero in the durable image?  (No compressed clusters here.) */
static bool dur_reads_zero(Checker *c, uint64_t p)
{
    Geo g;
    uint64_t bm, en, host;
    bool alloc, zero;

    geo(&c->dur, &g);
    en = l2_entry(&c->dur, p >> g.cb, &bm);
    host = en & L2E_OFFSET_MASK;
    if (g.extl2) {
        int sc = (p & (g.cs - 1)) >> (g.cb - 5);
        alloc = (bm >> sc) & 1;
        zero = (bm >> (32 + sc)) & 1;
    } else {
        zero = en & QCOW_OFLAG_ZERO;
        alloc = host && !zero;
    }
    if (zero) {
        return true;
    }
    if (alloc) {
        return img_byte(&c->dur, host + (p & (g.cs - 1))) == 0;
    }
    return p >= c->backing_len;
}

/* The subclusters (bit 0 without extended L2) of an L2 entry that read the backing file. */
static uint32_t backing_shows(const Geo *g, uint64_t entry, uint64_t bitmap)
{
    if (entry & QCOW_OFLAG_COMPRESSED) {
        return 0;
    }
    if (g->extl2) {
        return ~(uint32_t)(bitmap | (bitmap >> 32));
    }
    return !(entry & (L2E_OFFSET_MASK | QCOW_OFLAG_ZERO));
}

static bool overlaps(const Event *e, uint64_t off, uint64_t len)
{
    return e->off < off + len && off < e->off + e->len;
}

/* The 8-byte field at off as it will be after e (e applied on top of vol). */
static uint64_t after64(Checker *c, const Event *e, uint64_t off)
{
    uint8_t b[8];
    for (int k = 0; k < 8; k++) {
        uint64_t p = off + k;
        b[k] = p >= e->off && p < e->off + e->len ? e->data[p - e->off] : img_byte(&c->vol, p);
    }
    return ldbe64(b);
}

static void check_write(Checker *c, guint i, const Event *e)
{
    Geo g;

    geo(&c->vol, &g);

    /* L1 entries */
    if (g.l1_size && overlaps(e, g.l1_off, (uint64_t)g.l1_size * 8)) {
        for (uint64_t p = MAX(e->off, g.l1_off) & ~7ULL;
             p < MIN(e->off + e->len, g.l1_off + g.l1_size * 8ULL); p += 8) {
            uint64_t nv = after64(c, e, p) & L1E_OFFSET_MASK;
            if (nv && nv != (g64(&c->vol, p) & L1E_OFFSET_MASK)) {
                need_durable(c, i, "L2 table", nv, g.cs, true, false);
            }
        }
    }
    /* refcount table entries */
    if (overlaps(e, g.rt_off, (uint64_t)g.rt_clusters << g.cb)) {
        for (uint64_t p = MAX(e->off, g.rt_off) & ~7ULL;
             p < MIN(e->off + e->len, g.rt_off + ((uint64_t)g.rt_clusters << g.cb)); p += 8) {
            uint64_t nv = after64(c, e, p) & REFT_OFFSET_MASK;
            uint64_t ti = (p - g.rt_off) / 8, rb_bits = g.cb + 3 - g.order;
            if (nv && nv != (g64(&c->vol, p) & REFT_OFFSET_MASK)) {
                need_durable(c, i, "refcount block", nv, g.cs, true,
                             ((nv >> g.cb) >> rb_bits) == ti);
            }
        }
    }
    /* header: new L1 table, new refcount table, new size */
    if (overlaps(e, 36, 24)) {
        uint64_t l1 = after64(c, e, 40), rt = after64(c, e, 48);
        uint32_t l1_size = after64(c, e, 32) & 0xffffffff;
        uint32_t rtc = after64(c, e, 52) & 0xffffffff;
        if (l1 != g.l1_off && l1_size) {
            need_durable(c, i, "L1 table", l1, (uint64_t)l1_size * 8, true, false);
        }
        if (rt != g.rt_off && !img_same(&c->vol, &c->dur, rt, (uint64_t)rtc << g.cb)) {
            FAIL(c, "event %u points at refcount table %#" G_GINT64_MODIFIER "x whose "
                 "contents are not durable", i, rt);
        }
    }
    if (overlaps(e, 24, 8)) {
        uint64_t ns = after64(c, e, 24);
        if (ns < g.size && !c->backing_len) {
            /* shrink: nothing mapped beyond the new end, durably */
            for (uint64_t gc = DIV_ROUND_UP(ns, g.cs); gc < DIV_ROUND_UP(g.size, g.cs); gc++) {
                uint64_t bm, en = l2_entry(&c->dur, gc, &bm);
                if (en & (L2E_OFFSET_MASK | QCOW_OFLAG_COMPRESSED)) {
                    FAIL(c, "event %u shrinks to %" G_GUINT64_FORMAT " while cluster %"
                         G_GUINT64_FORMAT " is still mapped on disk", i, ns, gc);
                    break;
                }
            }
        } else if (ns > g.size) {
            /* grow: the new area reads zeros, durably (where old data or the backing file
             * could show through) */
            uint64_t end = MIN(ns, MAX(ROUND_UP(g.size, g.cs), c->backing_len));
            for (uint64_t p = g.size; p < end; p++) {
                if (!dur_reads_zero(c, p)) {
                    FAIL(c, "event %u grows to %" G_GUINT64_FORMAT " while byte %"
                         G_GUINT64_FORMAT " reads non-zero on disk", i, ns, p);
                    break;
                }
            }
        }
    }
    /* with a backing file: no L1 entry cleared inside the durable size */
    if (c->backing_len && g.l1_size && overlaps(e, g.l1_off, (uint64_t)g.l1_size * 8)) {
        Geo dg;
        uint64_t span = (g.cs / g.esz) * g.cs;

        geo(&c->dur, &dg);
        for (uint64_t p = MAX(e->off, g.l1_off) & ~7ULL;
             p < MIN(e->off + e->len, g.l1_off + g.l1_size * 8ULL); p += 8) {
            uint64_t start = (p - g.l1_off) / 8 * span;
            if ((g64(&c->vol, p) & L1E_OFFSET_MASK) && !(after64(c, e, p) & L1E_OFFSET_MASK) &&
                start < MIN(dg.size, c->backing_len)) {
                FAIL(c, "event %u unmaps guest %#" G_GINT64_MODIFIER "x inside the durable "
                     "size %" G_GUINT64_FORMAT ": the backing file shows through", i, start,
                     dg.size);
            }
        }
    }
    /* L2 entries: a whole-table write of a table the L1 table points to */
    if (e->len == g.cs && !(e->off & (g.cs - 1))) {
        bool active = false;
        uint64_t ai = 0;
        Geo dg;

        geo(&c->dur, &dg);
        for (uint32_t k = 0; k < g.l1_size && !active; k++) {
            active = (g64(&c->vol, g.l1_off + k * 8ULL) & L1E_OFFSET_MASK) == e->off;
            ai = k;
        }
        for (uint64_t k = 0; active && k < g.cs / g.esz; k++) {
            uint64_t ne = ldbe64(e->data + k * g.esz), oe = g64(&c->vol, e->off + k * g.esz);
            uint64_t nb = g.extl2 ? ldbe64(e->data + k * 16 + 8) : 0;
            uint64_t ob = g.extl2 ? g64(&c->vol, e->off + k * 16 + 8) : 0;
            uint64_t host = ne & L2E_OFFSET_MASK;
            uint64_t guest = (ai * (g.cs / g.esz) + k) << g.cb;
            if (c->backing_len && guest < MIN(dg.size, c->backing_len) &&
                (backing_shows(&g, ne, nb) & ~backing_shows(&g, oe, ob))) {
                FAIL(c, "event %u unmaps guest %#" G_GINT64_MODIFIER "x inside the durable "
                     "size %" G_GUINT64_FORMAT ": the backing file shows through", i, guest,
                     dg.size);
            }
            if ((ne == oe && nb == ob) || !host || (ne & QCOW_OFLAG_COMPRESSED)) {
                continue;
            }
            need_durable(c, i, "data cluster", host, g.cs, true, false);
        }
    }
}

/* Replay events[from..) and check every write. */
static void check_events(Checker *c, const char *img_path, guint from)
{
    (void)img_path;
    for (guint i = from; i < events->len; i++) {
        const Event *e = &g_array_index(events, Event, i);

        if (c->size_before >= 0 && i >= c->op_first && i < c->op_last &&
            e->top_len != c->size_before) {
            FAIL(c, "event %u: the node's size changed to %" G_GINT64_FORMAT " before the "
                 "resize was done", i, e->top_len);
            c->size_before = -1;
        }
        switch (e->kind) {
        case 'W':
            check_write(c, i, e);
            img_write(&c->vol, e->off, e->data, e->len);
            g_array_append_val(c->pending, i);
            break;
        case 'T':
            img_resize(&c->vol, e->off);
            g_array_append_val(c->pending, i);
            break;
        case 'F':
            for (guint k = 0; k < c->pending->len; k++) {
                const Event *p = &g_array_index(events, Event, g_array_index(c->pending, guint, k));
                if (p->kind == 'W') {
                    img_write(&c->dur, p->off, p->data, p->len);
                } else {
                    img_resize(&c->dur, p->off);
                }
            }
            g_array_set_size(c->pending, 0);
            break;
        }
    }
}

/* --- scenarios ------------------------------------------------------------------------------ */

typedef struct Mode {
    const char *name;
    const char *create;         /* qemu-img create options */
    bool backing;
} Mode;

static const Mode modes[] = {
    { "default", "", false },
    { "lazy refcounts", "-o lazy_refcounts=on", false },
    { "512-byte clusters", "-o cluster_size=512", false },
    { "extended L2", "-o extended_l2=on,cluster_size=16k", false },
    { "backing file", "", true },
};

typedef struct Run {
    Checker c;
    char *img;
    BlockDriverState *bs;
    Geo g;
    uint64_t span;              /* guest bytes one L2 table maps */
} Run;

/* Cluster size and L2 entry size of a mode, and so the guest bytes one L2 table maps. */
static uint64_t mode_span(const Mode *m)
{
    uint64_t cs = strstr(m->create, "cluster_size=512") ? 512 :
                  strstr(m->create, "cluster_size=16k") ? 16384 : 65536;
    uint64_t esz = strstr(m->create, "extended_l2=on") ? 16 : 8;
    return cs / esz * cs;
}

/* Create r.qcow2 in mode m (extra: more qemu-img create options), run the shell command prep
 * on it (or NULL), open it read-write with the recorder below it. */
static void run_start(Run *r, const Mode *m, const char *scenario, uint64_t size,
                      const char *extra, const char *prep)
{
    g_autofree char *out = NULL, *cmd = NULL;
    g_autoptr(GError) err = NULL;
    Img base = { 0 };
    size_t len;

    memset(r, 0, sizeof(*r));
    r->c.name = g_strdup_printf("%s, %s", scenario, m->name);
    r->c.size_before = -1;
    r->c.pending = g_array_new(FALSE, FALSE, sizeof(guint));
    r->img = g_build_filename(tmpdir, "r.qcow2", NULL);
    if (m->backing) {
        r->c.backing_len = MIN(size, 8 << 20);
        cmd = g_strdup_printf("rm -f r.qcow2 back.raw && qemu-img create -q -f raw back.raw %"
                              G_GUINT64_FORMAT " && qemu-io -f raw -c 'write -P 0x6b 0 %"
                              G_GUINT64_FORMAT "' back.raw >/dev/null && qemu-img create -q "
                              "-f qcow2 %s %s -b back.raw -F raw r.qcow2", size,
                              r->c.backing_len, m->create, extra);
    } else {
        cmd = g_strdup_printf("rm -f r.qcow2 && qemu-img create -q -f qcow2 %s %s r.qcow2 %"
                              G_GUINT64_FORMAT, m->create, extra, size);
    }
    if (qt_sh(&out, "cd '%s' && %s", tmpdir, cmd) != 0) {
        g_error("%s: %s: %s", r->c.name, cmd, out);
    }
    if (prep && qt_sh(&out, "cd '%s' && %s", tmpdir, prep) != 0) {
        g_error("%s: %s: %s", r->c.name, prep, out);
    }
    r->bs = bdrv_open(r->img, "qcow2", NULL, BDRV_O_RDWR, &err);
    g_assert_nonnull(r->bs);
    events_clear();
    insert_recorder(r->bs);
    base.b = uh_read_file(r->img, &len);
    base.len = len;
    r->c.vol.b = g_memdup2(base.b, MAX(len, 1));
    r->c.vol.len = len;
    r->c.dur = base;
    geo(&r->c.vol, &r->g);
    r->span = (r->g.cs / r->g.esz) * r->g.cs;
}

/* Close, check the whole trace, and check the image with qemu-img.  Returns the failures. */
static int run_finish(Run *r)
{
    g_autofree char *out = NULL;
    int failures;

    bdrv_unref(r->bs);
    check_events(&r->c, r->img, 0);
    if (qt_sh(&out, "qemu-img check '%s'", r->img) != 0) {
        FAIL(&r->c, "qemu-img check: %s", out);
    }
    failures = r->c.failures;
    g_free(r->c.vol.b);
    g_free(r->c.dur.b);
    g_array_free(r->c.pending, TRUE);
    g_free((char *)r->c.name);
    g_free(r->img);
    events_clear();
    return failures;
}

static int pwrite_byte(BlockDriverState *bs, uint64_t off, uint64_t len, int v)
{
    uint8_t *buf = blk_blockalign(len);
    int ret;

    memset(buf, v, len);
    ret = bdrv_pwrite(bs, off, len, buf);
    blk_vfree(buf);
    return ret;
}

/* New L2 tables: small writes under four L1 entries that have no table yet; then under four
 * whose tables an internal snapshot shares, so each is copied (a new table with contents). */
static int scenario_new_l2(const Mode *m)
{
    Run r;
    uint64_t span = mode_span(m);
    g_autofree char *prep = NULL;
    GString *cmd = g_string_new("qemu-io");
    int failures;

    run_start(&r, m, "new L2 tables", 4 * span, "", NULL);
    g_assert_cmpuint(r.span, ==, span);
    for (int i = 0; i < 4; i++) {
        g_assert_cmpint(pwrite_byte(r.bs, i * span + 4096, 4096, 0x10 + i), ==, 0);
    }
    g_assert_cmpint(bdrv_flush(r.bs), ==, 0);
    failures = run_finish(&r);

    for (int i = 0; i < 4; i++) {
        g_string_append_printf(cmd, " -c 'write -P %d %" G_GUINT64_FORMAT " 4k'", 0x20 + i,
                               i * span);
    }
    g_string_append(cmd, " r.qcow2 >/dev/null && qemu-img snapshot -c S r.qcow2");
    prep = g_string_free(cmd, FALSE);
    run_start(&r, m, "copied L2 tables", 4 * span, "", prep);
    for (int i = 0; i < 4; i++) {
        g_assert_cmpint(pwrite_byte(r.bs, i * span + 8192, 4096, 0x30 + i), ==, 0);
    }
    g_assert_cmpint(bdrv_flush(r.bs), ==, 0);
    return failures + run_finish(&r);
}

/* Copy-on-write: partial writes into clusters that get a new host cluster (fill from the
 * backing file or zeros), and with extended L2 a second subcluster of the same cluster. */
static int scenario_cow(const Mode *m)
{
    Run r;
    uint64_t cs;

    run_start(&r, m, "copy-on-write fill", 8 << 20, "", NULL);
    cs = r.g.cs;
    /* first touch of each L2 table and of the refcounts out of the way, flushed */
    g_assert_cmpint(pwrite_byte(r.bs, 0, cs, 1), ==, 0);
    g_assert_cmpint(bdrv_flush(r.bs), ==, 0);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 4; i++) {
            uint64_t c = 16 + i * 7;
            /* a different part of cluster c each round: round 0 allocates it, later rounds
             * (extended L2) allocate further subclusters */
            uint64_t off = c * cs + round * (cs / 4) + 100;
            g_assert_cmpint(pwrite_byte(r.bs, off, 300, 0x20 + round), ==, 0);
        }
        g_assert_cmpint(bdrv_flush(r.bs), ==, 0);
    }
    return run_finish(&r);
}

/* Multi-cluster runs (one allocation, one data write, one L2 update each): runs that start
 * and end inside a cluster (fill at both ends, from the backing file or zeros), one across the
 * end of an L2 table, long ones whose host clusters cross refcount blocks (64-bit refcounts:
 * a block covers only cs / 8 clusters). */
static int scenario_runs(const Mode *m)
{
    Run r;
    uint64_t cs, span;

    run_start(&r, m, "multi-cluster runs", MAX(8 << 20, 2 * mode_span(m)), "-o refcount_bits=64",
              NULL);
    cs = r.g.cs;
    span = r.span;
    g_assert_cmpint(bdrv_getlength(r.bs), >, span + 2 * cs);
    g_assert_cmpint(pwrite_byte(r.bs, span - cs - 300, 3 * cs + 600, 0x50), ==, 0);
    g_assert_cmpint(pwrite_byte(r.bs, (2 << 20) + 333, (1 << 20) + 1000, 0x51), ==, 0);
    g_assert_cmpint(bdrv_flush(r.bs), ==, 0);
    g_assert_cmpint(pwrite_byte(r.bs, (4 << 20) - 5 * cs, 10 * cs, 0x52), ==, 0);
    g_assert_cmpint(bdrv_flush(r.bs), ==, 0);
    return run_finish(&r);
}

/* Preallocated clusters (zero flag with a host cluster): a partial write fills the rest of
 * the cluster with zeros; that must be durable before the entry loses its zero flag.  Then a
 * grow with preallocation=falloc: the file reaches the new clusters before entries do. */
static int scenario_prealloc(const Mode *m)
{
    Run r;
    uint64_t cs;

    if (m->backing) {
        return 0;       /* preallocation with a backing file needs extended L2 */
    }
    run_start(&r, m, "preallocated clusters", 4 << 20, "-o preallocation=metadata", NULL);
    cs = r.g.cs;
    g_assert_cmpint(bdrv_pwrite_zeroes(r.bs, 0, 2 << 20, 0), ==, 0);     /* zero flag, host kept */
    g_assert_cmpint(bdrv_flush(r.bs), ==, 0);
    for (int i = 0; i < 4; i++) {
        g_assert_cmpint(pwrite_byte(r.bs, (3 + i * 5) * cs + 100, 200, 0x30 + i), ==, 0);
    }
    g_assert_cmpint(bdrv_flush(r.bs), ==, 0);
    g_assert_cmpint(bdrv_truncate(r.bs, 6 << 20, true, PREALLOC_MODE_FALLOC, NULL), ==, 0);
    g_assert_cmpint(bdrv_flush(r.bs), ==, 0);
    return run_finish(&r);
}

/* Many new refcount blocks at once, and a refcount table that grows. */
static int scenario_refblocks(const Mode *m)
{
    Run r;

    run_start(&r, m, "new refcount blocks", 8 << 20, "-o refcount_bits=64", NULL);
    for (int i = 0; i < 6; i++) {
        g_assert_cmpint(pwrite_byte(r.bs, i * (1 << 20), 1 << 20, 0x40 + i), ==, 0);
    }
    g_assert_cmpint(bdrv_flush(r.bs), ==, 0);
    return run_finish(&r);
}

/* Growing: a new L1 table, and the area past the old end reads zeros before the size is
 * published (the tail of the last cluster held data, as QEMU leaves it after a shrink). */
static int scenario_grow(const Mode *m)
{
    Run r;
    uint8_t *buf = blk_blockalign(8 << 20);
    int64_t old = (4 << 20) - 1536;

    /* QEMU leaves the data of the last cluster's tail in place when it shrinks */
    run_start(&r, m, "grow", 4 << 20, "", "qemu-io -c 'write -P 0x55 0 4M' r.qcow2 >/dev/null "
              "&& qemu-img resize -q --shrink r.qcow2 4192768");
    g_assert_cmpint(bdrv_getlength(r.bs), ==, old);
    r.c.size_before = old;
    r.c.op_first = events->len;
    g_assert_cmpint(bdrv_truncate(r.bs, 64 << 20, true, PREALLOC_MODE_OFF, NULL), ==, 0);
    r.c.op_last = events->len;
    g_assert_cmpint(bdrv_getlength(r.bs), ==, 64 << 20);
    g_assert_cmpint(bdrv_pread(r.bs, old, (8 << 20) - old, buf), ==, 0);
    for (int64_t i = 0; i < (8 << 20) - old; i++) {
        if (buf[i]) {
            g_error("grow, %s: byte %" G_GINT64_FORMAT " reads %#x", m->name, old + i, buf[i]);
        }
    }
    blk_vfree(buf);
    return run_finish(&r);
}

/* Shrinking: the header's size comes down only once nothing beyond it is mapped on disk. */
static int scenario_shrink(const Mode *m)
{
    Run r;

    run_start(&r, m, "shrink", 8 << 20, "", NULL);
    g_assert_cmpint(pwrite_byte(r.bs, 0, 8 << 20, 0x66), ==, 0);
    g_assert_cmpint(bdrv_flush(r.bs), ==, 0);
    g_assert_cmpint(bdrv_truncate(r.bs, (3 << 20) + 512, true, PREALLOC_MODE_OFF, NULL), ==, 0);
    return run_finish(&r);
}

typedef int (*Scenario)(const Mode *m);

static void run_all_modes(Scenario fn)
{
    int failures = 0;

    if (!qt_have_qemu_img()) {
        g_test_skip("qemu-img/qemu-io not installed");
        return;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(modes); i++) {
        failures += fn(&modes[i]);
    }
    if (failures) {
        uh_fail("%d ordering violations", failures);
    }
}

static void test_new_l2(void)     { run_all_modes(scenario_new_l2); }
static void test_cow(void)        { run_all_modes(scenario_cow); }
static void test_runs(void)       { run_all_modes(scenario_runs); }
static void test_prealloc(void)   { run_all_modes(scenario_prealloc); }
static void test_refblocks(void)  { run_all_modes(scenario_refblocks); }
static void test_grow(void)       { run_all_modes(scenario_grow); }
static void test_shrink(void)     { run_all_modes(scenario_shrink); }

int main(int argc, char **argv)
{
    int ret;

    uh_test_init(&argc, &argv);
    log_set_verbose(false);
    tmpdir = uh_tmpdir_new();
    events_clear();
    uh_test_add("/qcow2-order/new-l2-table", test_new_l2);
    uh_test_add("/qcow2-order/copy-on-write", test_cow);
    uh_test_add("/qcow2-order/multi-cluster-runs", test_runs);
    uh_test_add("/qcow2-order/preallocated", test_prealloc);
    uh_test_add("/qcow2-order/refcount-blocks", test_refblocks);
    uh_test_add("/qcow2-order/grow", test_grow);
    uh_test_add("/qcow2-order/shrink", test_shrink);
    ret = uh_test_run();
    events_clear();
    g_array_free(events, TRUE);
    qt_sh(NULL, "rm -rf '%s'", tmpdir);
    g_free(tmpdir);
    return ret;
}
