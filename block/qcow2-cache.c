/* qcow2-cache.c - the qcow2 metadata table cache: cluster-sized L2 tables or refcount
 * blocks, read on a miss, pinned while in use, evicted least recently used first, written back
 * in the crash-safe order (an L2 table only after qcow2_pre_l2_write).
 *
 * Threads: everything here runs with BDRVQcow2State.lock held (coroutines for what does I/O).
 */
#include <errno.h>
#include <string.h>
#include "block/qcow2.h"
#include "block/util.h"

Qcow2Cache *qcow2_cache_new(int size, bool is_l2, uint32_t table_size)
{
    Qcow2Cache *c = g_new0(Qcow2Cache, 1);

    c->size = MAX(size, 4);
    c->table_size = table_size;
    c->is_l2 = is_l2;
    c->entries = g_new0(Qcow2CacheEntry, c->size);
    c->index = g_hash_table_new(g_int64_hash, g_int64_equal);
    return c;
}

void qcow2_cache_free(Qcow2Cache *c)
{
    if (!c) {
        return;
    }
    for (int i = 0; i < c->size; i++) {
        if (c->entries[i].table) {
            blk_vfree(c->entries[i].table);
        }
    }
    g_hash_table_destroy(c->index);
    g_free(c->entries);
    g_free(c);
}

static Qcow2CacheEntry *cache_find_table(Qcow2Cache *c, void *table)
{
    for (int i = 0; i < c->size; i++) {
        if (c->entries[i].table == table && c->entries[i].offset) {
            return &c->entries[i];
        }
    }
    g_assert_not_reached();
}

static int coroutine_fn cache_write_entry(BlockDriverState *bs, Qcow2Cache *c,
                                          Qcow2CacheEntry *e)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (!e->dirty) {
        return 0;
    }
    if (c->is_l2) {
        ret = qcow2_pre_l2_write(bs);
        if (ret < 0) {
            return ret;
        }
    }
    ret = qcow2_meta_pwrite(bs, c->is_l2 ? QCOW2_META_L2 : QCOW2_META_REFBLOCK,
                            c->is_l2 ? "an L2 table" : "a refcount block", e->offset,
                            c->table_size, e->table);
    if (ret < 0) {
        return ret;
    }
    e->dirty = false;
    if (!c->is_l2) {
        s->rc_unsynced = true;
    }
    return 0;
}

/* A slot for a new table: a free one, else the least recently used unpinned one, written back
 * first when dirty (not after the image was found corrupt: nothing more is written). */
static int coroutine_fn cache_take_slot(BlockDriverState *bs, Qcow2Cache *c,
                                        Qcow2CacheEntry **slot)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2CacheEntry *e = NULL;
    int ret;

    for (int i = 0; i < c->size; i++) {
        Qcow2CacheEntry *x = &c->entries[i];
        if (x->pins) {
            continue;
        }
        if (!x->offset) {
            e = x;
            break;
        }
        if (!e || x->lru < e->lru) {
            e = x;
        }
    }
    if (!e) {
        return -ENOMEM;
    }
    if (e->offset) {
        e->pins++;   /* keep it while writing back */
        ret = s->corrupt_stop ? 0 : cache_write_entry(bs, c, e);
        e->pins--;
        if (ret < 0) {
            return ret;
        }
        g_hash_table_remove(c->index, &e->offset);
        e->offset = 0;
    }
    *slot = e;
    return 0;
}

int coroutine_fn qcow2_cache_get(BlockDriverState *bs, Qcow2Cache *c, uint64_t offset,
                                 bool fresh, void **table)
{
    BDRVQcow2State *s = bs->opaque;
    gpointer v;
    Qcow2CacheEntry *e = NULL;
    int ret;

    if (offset == 0 || (offset & (s->cluster_size - 1))) {
        return -EIO;
    }
    v = g_hash_table_lookup(c->index, &offset);
    if (v) {
        e = &c->entries[GPOINTER_TO_INT(v) - 1];
        if (fresh) {
            memset(e->table, 0, c->table_size);
        }
        e->pins++;
        e->lru = ++c->lru_counter;
        *table = e->table;
        return 0;
    }

    ret = cache_take_slot(bs, c, &e);
    if (ret < 0) {
        return ret;
    }
    if (!e->table) {
        e->table = blk_blockalign(c->table_size);
    }
    e->pins = 1;
    if (fresh) {
        memset(e->table, 0, c->table_size);
    } else {
        c->misses++;
        ret = bdrv_co_pread(bs->file->bs, offset, c->table_size, e->table, 0);
        if (ret < 0) {
            e->pins = 0;
            return ret;
        }
    }
    e->offset = offset;
    e->dirty = false;
    e->stale = false;
    e->lru = ++c->lru_counter;
    g_hash_table_insert(c->index, &e->offset, GINT_TO_POINTER((int)(e - c->entries) + 1));
    *table = e->table;
    return 0;
}

int coroutine_fn qcow2_cache_get_new(BlockDriverState *bs, Qcow2Cache *c, uint64_t offset,
                                     const char *what, void **table)
{
    /* before the cache hands out the cluster as an empty table (it may hold another one) */
    int ret = qcow2_pre_write(bs, QCOW2_META_NONE, what, offset, c->table_size);

    if (ret < 0) {
        return ret;
    }
    return qcow2_cache_get(bs, c, offset, true, table);
}

void qcow2_cache_put(Qcow2Cache *c, void *table)
{
    Qcow2CacheEntry *e = cache_find_table(c, table);
    g_assert(e->pins > 0);
    e->pins--;
    if (e->pins == 0 && e->stale) {
        g_hash_table_remove(c->index, &e->offset);
        e->offset = 0;
        e->dirty = false;
        e->stale = false;
    }
}

void qcow2_cache_mark_dirty(Qcow2Cache *c, void *table)
{
    cache_find_table(c, table)->dirty = true;
}

int coroutine_fn qcow2_cache_write(BlockDriverState *bs, Qcow2Cache *c, void *table)
{
    Qcow2CacheEntry *e = cache_find_table(c, table);
    e->dirty = true;
    return cache_write_entry(bs, c, e);
}

int coroutine_fn qcow2_cache_flush(BlockDriverState *bs, Qcow2Cache *c)
{
    int result = 0;

    for (int i = 0; i < c->size; i++) {
        Qcow2CacheEntry *e = &c->entries[i];
        if (e->offset && e->dirty) {
            int ret;
            e->pins++;
            ret = cache_write_entry(bs, c, e);
            e->pins--;
            if (ret < 0 && result == 0) {
                result = ret;
            }
        }
    }
    return result;
}

bool qcow2_cache_has_dirty(Qcow2Cache *c)
{
    for (int i = 0; i < c->size; i++) {
        if (c->entries[i].offset && c->entries[i].dirty) {
            return true;
        }
    }
    return false;
}

int qcow2_cache_drop_dirty(Qcow2Cache *c)
{
    int n = 0;

    for (int i = 0; c && i < c->size; i++) {
        Qcow2CacheEntry *e = &c->entries[i];
        if (!e->offset || !e->dirty) {
            continue;
        }
        e->dirty = false;
        n++;
        if (e->pins) {
            e->stale = true;    /* a caller still holds it: forget it at its last put */
        } else {
            g_hash_table_remove(c->index, &e->offset);
            e->offset = 0;
        }
    }
    return n;
}

void qcow2_cache_discard(Qcow2Cache *c, uint64_t offset)
{
    gpointer v = g_hash_table_lookup(c->index, &offset);
    Qcow2CacheEntry *e;

    if (!v) {
        return;
    }
    e = &c->entries[GPOINTER_TO_INT(v) - 1];
    if (e->pins) {
        return;
    }
    g_hash_table_remove(c->index, &e->offset);
    e->offset = 0;
    e->dirty = false;
}
