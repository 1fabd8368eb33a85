/* memfile.h - an in-memory protocol driver for fuzz harnesses: "fuzzmem:NAME" opens a sparse
 * in-memory file registered by the harness, so a harness drives the real block layer (bdrv_open,
 * the backend, format drivers) without touching the host file system, without worker threads
 * and deterministically.
 *
 * Files behave like a regular file on a file system with holes: reads past the end or in holes
 * return zeros, writes past the end grow the file, write_zeroes/discard punch holes and keep the
 * size.  Memory is bounded: at most MEMFILE_MAX_PAGES pages hold data (writes that need more
 * fail with ENOSPC, like a full disk) and the size stays below MEMFILE_MAX_SIZE (EFBIG, like a
 * file system's largest file).
 *
 * With memfile_yield set, every request first yields to the event loop once, as a real
 * asynchronous request would, so that concurrent requests interleave (deterministically: the
 * event loop runs scheduled coroutines in order).
 *
 * Threads: main thread only (the harness runs one event loop).
 */
#ifndef TESTS_FUZZ_MEMFILE_H
#define TESTS_FUZZ_MEMFILE_H

#include <errno.h>
#include <string.h>
#include <glib.h>
#include "block/aio.h"
#include "block/block.h"
#include "block/coroutine.h"
#include "block/util.h"

#define MEMFILE_PREFIX      "fuzzmem"
#define MEMFILE_PAGE        4096
#define MEMFILE_MAX_PAGES   (64 * 1024 * 1024 / MEMFILE_PAGE)
#define MEMFILE_MAX_SIZE    (16LL << 40)

typedef struct MemPage {
    uint64_t index;             /* key */
    uint8_t data[MEMFILE_PAGE];
} MemPage;

typedef struct MemFile {
    char *name;                 /* "fuzzmem:..." */
    GHashTable *pages;          /* &page->index -> MemPage, owned */
    int64_t size;
} MemFile;

static GHashTable *memfile_table;   /* name -> MemFile, owned */
static MemFile *memfile_fallback;   /* opened for unregistered names, or NULL */
static uint64_t memfile_pages;      /* pages held by all files */
static bool memfile_yield;

static void memfile_free(gpointer p)
{
    MemFile *f = p;

    memfile_pages -= g_hash_table_size(f->pages);
    g_hash_table_destroy(f->pages);
    g_free(f->name);
    g_free(f);
}

/* A new empty file called name (replacing any of that name). */
static inline MemFile *memfile_new(const char *name)
{
    MemFile *f = g_new0(MemFile, 1);

    if (!memfile_table) {
        memfile_table = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, memfile_free);
    }
    f->name = g_strdup(name);
    f->pages = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, g_free);
    g_hash_table_replace(memfile_table, f->name, f);
    return f;
}

/* Forget every file (nodes using them must be closed). */
static inline void memfile_clear(void)
{
    memfile_fallback = NULL;
    if (memfile_table) {
        g_hash_table_remove_all(memfile_table);
    }
}

static MemPage *memfile_page(MemFile *f, uint64_t index)
{
    return g_hash_table_lookup(f->pages, &index);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Copy len bytes into the file at offset; returns 0 or -ENOSPC/-EFBIG. */
static inline int memfile_write(MemFile *f, int64_t offset, const void *buf, int64_t len)
{
    const uint8_t *p = buf;
    int64_t end = offset + len;

    if (offset < 0 || len < 0 || end > MEMFILE_MAX_SIZE) {
        return -EFBIG;
    }
    while (offset < end) {
        uint64_t index = offset / MEMFILE_PAGE;
        size_t in = offset % MEMFILE_PAGE;
        size_t n = MIN((int64_t)(MEMFILE_PAGE - in), end - offset);
        MemPage *pg = memfile_page(f, index);

        if (!pg) {
            if (all_zero(p, n)) {
                goto next;          /* a hole reads as zeros already */
            }
            if (memfile_pages >= MEMFILE_MAX_PAGES) {
                return -ENOSPC;
            }
            pg = g_new0(MemPage, 1);
            pg->index = index;
            g_hash_table_insert(f->pages, &pg->index, pg);
            memfile_pages++;
        }
        memcpy(pg->data + in, p, n);
next:
        offset += n;
        p += n;
    }
    f->size = MAX(f->size, end);
    return 0;
}

static void memfile_read(MemFile *f, int64_t offset, void *buf, int64_t len)
{
    uint8_t *p = buf;
    int64_t end = offset + len;

    while (offset < end) {
        uint64_t index = offset / MEMFILE_PAGE;
        size_t in = offset % MEMFILE_PAGE;
        size_t n = MIN((int64_t)(MEMFILE_PAGE - in), end - offset);
        MemPage *pg = offset < f->size ? memfile_page(f, index) : NULL;

        if (pg) {
            memcpy(p, pg->data + in, n);
        } else {
            memset(p, 0, n);
        }
        offset += n;
        p += n;
    }
}

typedef struct PageRange {
    uint64_t first, end;        /* page indexes [first, end) */
} PageRange;

static gboolean page_in_range(gpointer key, gpointer value, gpointer opaque)
{
    const PageRange *r = opaque;
    uint64_t index = *(uint64_t *)key;

    return index >= r->first && index < r->end;
}

/* Drop the pages [first, end): by index when the range is small, else by walking the pages
 * held (a range can span billions of pages of a sparse file). */
static void memfile_drop_pages(MemFile *f, uint64_t first, uint64_t end)
{
    PageRange r = { first, end };

    if (end <= first) {
        return;
    }
    if (end - first <= g_hash_table_size(f->pages)) {
        for (uint64_t i = first; i < end; i++) {
            if (g_hash_table_remove(f->pages, &i)) {
                memfile_pages--;
            }
        }
    } else {
        memfile_pages -= g_hash_table_foreach_remove(f->pages, page_in_range, &r);
    }
}

/* The first page in [index, end) that the file holds, or end: by index when the range is
 * small, else by walking the pages held (as memfile_drop_pages). */
static uint64_t memfile_next_page(MemFile *f, uint64_t index, uint64_t end)
{
    GHashTableIter it;
    gpointer key;
    uint64_t next = end;

    if (end <= index || end - index <= g_hash_table_size(f->pages)) {
        while (index < end && !memfile_page(f, index)) {
            index++;
        }
        return MIN(index, end);
    }
    g_hash_table_iter_init(&it, f->pages);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        uint64_t i = *(uint64_t *)key;

        if (i >= index && i < next) {
            next = i;
        }
    }
    return next;
}

/* Zero the bytes [offset, end) inside one page. */
static void memfile_zero_partial(MemFile *f, int64_t offset, int64_t end)
{
    MemPage *pg = memfile_page(f, offset / MEMFILE_PAGE);

    if (pg && end > offset) {
        memset(pg->data + offset % MEMFILE_PAGE, 0, end - offset);
    }
}

/* Make [offset, offset + len) read as zeros (inside the file; the size does not change). */
static void memfile_zero(MemFile *f, int64_t offset, int64_t len)
{
    int64_t end = MIN(offset + len, f->size);
    int64_t first_full = ROUND_UP(offset, MEMFILE_PAGE);
    int64_t last_full = ROUND_DOWN(end, MEMFILE_PAGE);

    if (offset >= end) {
        return;
    }
    if (first_full >= last_full) {
        /* no whole page inside: at most two partial pages */
        int64_t mid = MIN(end, first_full);
        memfile_zero_partial(f, offset, mid);
        memfile_zero_partial(f, mid, end);
        return;
    }
    memfile_zero_partial(f, offset, first_full);
    memfile_drop_pages(f, first_full / MEMFILE_PAGE, last_full / MEMFILE_PAGE);
    memfile_zero_partial(f, last_full, end);
}

static void memfile_truncate(MemFile *f, int64_t size)
{
    if (size < f->size) {
        memfile_zero(f, size, f->size - size);
    }
    f->size = size;
}

/* --- the driver --- */

typedef struct BDRVMemState {
    MemFile *f;
} BDRVMemState;

static void coroutine_fn mem_maybe_yield(void)
{
    Coroutine *self = coroutine_self();

    if (memfile_yield && self) {
        aio_co_schedule(coroutine_get_context(self), self);
        coroutine_yield();
    }
}

static int mem_open(BlockDriverState *bs, BlockOptions *opts, int flags, GError **errp)
{
    BDRVMemState *s = bs->opaque;

    s->f = memfile_table ? g_hash_table_lookup(memfile_table, bs->filename) : NULL;
    if (!s->f) {
        s->f = memfile_fallback;
    }
    if (!s->f) {
        error_setg(errp, "%s: no such in-memory file", bs->filename);
        return -ENOENT;
    }
    return 0;
}

static int coroutine_fn mem_co_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                     void *buf, BdrvRequestFlags flags)
{
    BDRVMemState *s = bs->opaque;

    mem_maybe_yield();
    if (offset < 0) {
        return -EINVAL;         /* as pread(2) */
    }
    memfile_read(s->f, offset, buf, bytes);
    return 0;
}

static int coroutine_fn mem_co_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      const void *buf, BdrvRequestFlags flags)
{
    BDRVMemState *s = bs->opaque;

    mem_maybe_yield();
    if (offset < 0) {
        return -EINVAL;         /* as pwrite(2) */
    }
    return memfile_write(s->f, offset, buf, bytes);
}

static int coroutine_fn mem_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                             BdrvRequestFlags flags)
{
    BDRVMemState *s = bs->opaque;

    mem_maybe_yield();
    if (offset < 0) {
        return -EINVAL;         /* as fallocate(2) */
    }
    memfile_zero(s->f, offset, bytes);
    return 0;
}

static int coroutine_fn mem_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVMemState *s = bs->opaque;

    mem_maybe_yield();
    if (offset < 0) {
        return -EINVAL;
    }
    memfile_zero(s->f, offset, bytes);
    return 0;
}

static int coroutine_fn mem_co_flush(BlockDriverState *bs)
{
    mem_maybe_yield();
    return 0;
}

static int coroutine_fn mem_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                        PreallocMode prealloc, GError **errp)
{
    BDRVMemState *s = bs->opaque;

    mem_maybe_yield();
    if (offset < 0 || offset > MEMFILE_MAX_SIZE) {
        error_setg(errp, "%s: cannot resize to %" G_GINT64_FORMAT " bytes", bs->filename,
                   offset);
        return -EFBIG;
    }
    memfile_truncate(s->f, offset);
    return 0;
}

static int coroutine_fn mem_co_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                            int64_t *pnum, int64_t *map,
                                            BlockDriverState **file)
{
    BDRVMemState *s = bs->opaque;
    uint64_t first = offset / MEMFILE_PAGE;
    uint64_t end = DIV_ROUND_UP(offset + bytes, MEMFILE_PAGE);
    bool data = memfile_page(s->f, first) != NULL;
    uint64_t next = first + 1;

    /* The whole run: a run of holes can span terabytes of a sparse file (lseek's walk). */
    if (data) {
        while (next < end && memfile_page(s->f, next)) {
            next++;
        }
    } else {
        next = memfile_next_page(s->f, next, end);
    }
    *pnum = MIN((int64_t)(next * MEMFILE_PAGE), offset + bytes) - offset;
    *map = offset;
    *file = bs;
    return (data ? BDRV_BLOCK_DATA : BDRV_BLOCK_ZERO) | BDRV_BLOCK_OFFSET_VALID;
}

static int64_t mem_getlength(BlockDriverState *bs)
{
    BDRVMemState *s = bs->opaque;

    return s->f->size;
}

static int64_t mem_get_allocated_file_size(BlockDriverState *bs)
{
    BDRVMemState *s = bs->opaque;

    return (int64_t)g_hash_table_size(s->f->pages) * MEMFILE_PAGE;
}

static const BlockDriver bdrv_fuzzmem = {
    .format_name                    = MEMFILE_PREFIX,
    .instance_size                  = sizeof(BDRVMemState),
    .is_protocol                    = true,
    .protocol_prefix                = MEMFILE_PREFIX,
    .bdrv_open                      = mem_open,
    .bdrv_co_pread                  = mem_co_pread,
    .bdrv_co_pwrite                 = mem_co_pwrite,
    .bdrv_co_pwrite_zeroes          = mem_co_pwrite_zeroes,
    .bdrv_co_pdiscard               = mem_co_pdiscard,
    .bdrv_co_flush                  = mem_co_flush,
    .bdrv_co_truncate               = mem_co_truncate,
    .bdrv_co_block_status           = mem_co_block_status,
    .bdrv_getlength                 = mem_getlength,
    .bdrv_get_allocated_file_size   = mem_get_allocated_file_size,
};

#endif
