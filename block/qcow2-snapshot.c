/* qcow2-snapshot.c - qcow2 internal snapshots: reading the snapshot table, listing it, and
 * presenting one snapshot read-only.  Snapshots are never created or deleted here; writes to
 * the active layer preserve them by copy-on-write (refcount > 1 clusters lack the COPIED flag).
 *
 * Threads: open path (coroutine, main thread) and bdrv_snapshot_list (main thread).
 */
#include <errno.h>
#include <string.h>
#include "block/qcow2.h"
#include "block/util.h"

#define QCOW2_MAX_SNAPSHOT_EXTRA 1024

/* A snapshot table entry (big endian): these fields, then the extra data, the id and the
 * name, padded to 8 bytes. */
#define SN_L1_TABLE_OFFSET      0    /* u64 */
#define SN_L1_SIZE              8    /* u32 entries */
#define SN_ID_SIZE              12   /* u16 */
#define SN_NAME_SIZE            14   /* u16 */
#define SN_DATE_SEC             16   /* u32 */
#define SN_DATE_NSEC            20   /* u32 */
#define SN_VM_CLOCK_NSEC        24   /* u64 */
#define SN_VM_STATE_SIZE        32   /* u32 */
#define SN_EXTRA_SIZE           36   /* u32 bytes of extra data */
#define SN_ENTRY_HDR            40
/* The extra data, as far as it goes: */
#define SN_EXTRA_VM_STATE_SIZE  0    /* u64, replaces the u32 above */
#define SN_EXTRA_DISK_SIZE      8    /* u64 the virtual size when taken */

void qcow2_free_snapshots(BDRVQcow2State *s)
{
    for (uint32_t i = 0; s->snapshots && i < s->nb_snapshots; i++) {
        g_free(s->snapshots[i].id);
        g_free(s->snapshots[i].name);
    }
    g_free(s->snapshots);
    s->snapshots = NULL;
}

int coroutine_fn qcow2_read_snapshots(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t pos = s->snapshots_offset;
    uint8_t hdr[SN_ENTRY_HDR];
    int ret;

    s->snapshots_size = 0;
    if (s->nb_snapshots == 0) {
        return 0;
    }
    if (s->nb_snapshots > QCOW2_MAX_SNAPSHOTS) {
        error_setg(errp, "%s: qcow2: too many snapshots (%u)", bs->filename, s->nb_snapshots);
        return -EINVAL;
    }
    if (!s->snapshots_offset || (s->snapshots_offset & (s->cluster_size - 1))) {
        error_setg(errp, "%s: qcow2: invalid snapshot table offset", bs->filename);
        return -EINVAL;
    }
    s->snapshots = g_new0(Qcow2Snapshot, s->nb_snapshots);
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        Qcow2Snapshot *sn = &s->snapshots[i];
        uint32_t id_len, name_len, extra;
        g_autofree uint8_t *var = NULL;
        uint64_t var_len;

        ret = bdrv_co_pread(bs->file->bs, pos, sizeof(hdr), hdr, 0);
        if (ret < 0) {
            error_setg_errno(errp, ret, "%s: qcow2: cannot read the snapshot table",
                             bs->filename);
            return ret;
        }
        sn->l1_table_offset = ldbe64(hdr + SN_L1_TABLE_OFFSET);
        sn->l1_size = ldbe32(hdr + SN_L1_SIZE);
        id_len = ldbe16(hdr + SN_ID_SIZE);
        name_len = ldbe16(hdr + SN_NAME_SIZE);
        sn->date_sec = ldbe32(hdr + SN_DATE_SEC);
        sn->date_nsec = ldbe32(hdr + SN_DATE_NSEC);
        sn->vm_clock_nsec = ldbe64(hdr + SN_VM_CLOCK_NSEC);
        sn->vm_state_size = ldbe32(hdr + SN_VM_STATE_SIZE);
        extra = ldbe32(hdr + SN_EXTRA_SIZE);
        sn->disk_size = s->size;
        if (extra > QCOW2_MAX_SNAPSHOT_EXTRA) {
            error_setg(errp, "%s: qcow2: snapshot %u has too much extra data", bs->filename, i);
            return -EINVAL;
        }
        var_len = (uint64_t)extra + id_len + name_len;
        var = g_malloc0(var_len + 1);
        if (var_len) {
            ret = bdrv_co_pread(bs->file->bs, pos + sizeof(hdr), var_len, var, 0);
            if (ret < 0) {
                error_setg_errno(errp, ret, "%s: qcow2: cannot read the snapshot table",
                                 bs->filename);
                return ret;
            }
        }
        sn->extra_size = extra;
        if (extra >= SN_EXTRA_VM_STATE_SIZE + 8) {
            sn->vm_state_size = ldbe64(var + SN_EXTRA_VM_STATE_SIZE);
        }
        if (extra >= SN_EXTRA_DISK_SIZE + 8) {
            sn->disk_size = ldbe64(var + SN_EXTRA_DISK_SIZE);
        }
        sn->id = g_strndup((char *)var + extra, id_len);
        sn->name = g_strndup((char *)var + extra + id_len, name_len);
        pos += ROUND_UP(sizeof(hdr) + var_len, 8);
        if (pos - s->snapshots_offset > QCOW2_MAX_SNAPSHOTS_BYTES) {
            error_setg(errp, "%s: qcow2: snapshot table too large", bs->filename);
            return -EFBIG;
        }
        if (((sn->l1_table_offset & (s->cluster_size - 1)) ||
             (uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES) && !s->checking) {
            error_setg(errp, "%s: qcow2: snapshot '%s' has an invalid L1 table", bs->filename,
                       sn->name);
            return -EINVAL;
        }
    }
    s->snapshots_size = pos - s->snapshots_offset;
    return 0;
}

Qcow2Snapshot *qcow2_find_snapshot(BDRVQcow2State *s, const char *id_or_name)
{
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        if (!strcmp(s->snapshots[i].id, id_or_name)) {
            return &s->snapshots[i];
        }
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        if (!strcmp(s->snapshots[i].name, id_or_name)) {
            return &s->snapshots[i];
        }
    }
    return NULL;
}

int coroutine_fn qcow2_load_snapshot(BlockDriverState *bs, const char *id_or_name,
                                     GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Snapshot *sn = qcow2_find_snapshot(s, id_or_name);
    uint64_t bytes;
    uint64_t *l1;
    int ret;

    if (!sn) {
        error_setg(errp, "%s: qcow2: no snapshot '%s'", bs->filename, id_or_name);
        return -ENOENT;
    }
    if (sn->disk_size > (uint64_t)sn->l1_size * ((uint64_t)s->l2_size << s->cluster_bits)) {
        error_setg(errp, "%s: qcow2: snapshot '%s' has an L1 table too small for its size",
                   bs->filename, sn->name);
        return -EINVAL;
    }
    bytes = (uint64_t)sn->l1_size * 8;
    l1 = g_malloc0(MAX(bytes, 8));
    if (bytes) {
        ret = bdrv_co_pread(bs->file->bs, sn->l1_table_offset, bytes, l1, 0);
        if (ret < 0) {
            g_free(l1);
            error_setg_errno(errp, ret, "%s: qcow2: cannot read snapshot L1 table",
                             bs->filename);
            return ret;
        }
    }
    for (uint32_t i = 0; i < sn->l1_size; i++) {
        l1[i] = GUINT64_FROM_BE(l1[i]);
    }
    g_free(s->l1_table);
    s->l1_table = l1;
    s->l1_size = sn->l1_size;
    s->l1_table_offset = sn->l1_table_offset;
    s->size = sn->disk_size;
    s->snapshot_loaded = true;
    return 0;
}

int qcow2_snapshot_list(BlockDriverState *bs, GPtrArray **out)
{
    BDRVQcow2State *s = bs->opaque;
    GPtrArray *a = g_ptr_array_new_with_free_func((GDestroyNotify)block_snapshot_info_free);

    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        Qcow2Snapshot *sn = &s->snapshots[i];
        BlockSnapshotInfo *info = g_new0(BlockSnapshotInfo, 1);

        info->id = g_strdup(sn->id);
        info->name = g_strdup(sn->name);
        info->vm_state_size = sn->vm_state_size;
        info->disk_size = sn->disk_size;
        info->date_sec = sn->date_sec;
        info->date_nsec = sn->date_nsec;
        info->vm_clock_nsec = sn->vm_clock_nsec;
        g_ptr_array_add(a, info);
    }
    *out = a;
    return 0;
}
