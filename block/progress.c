/* progress.c - the process-wide progress listener of long block operations (see progress.h). */
#include "config.h"
#include "block/progress.h"

#include <glib.h>

static BlockProgressFn progress_fn;        /* atomic: drivers read it from any thread */
static void *progress_opaque;
static double progress_lo, progress_hi = 100.0;
static double progress_last;               /* never go back: passes may restart their count */

void block_progress_set(BlockProgressFn fn, void *opaque)
{
    progress_opaque = opaque;
    progress_lo = 0.0;
    progress_hi = 100.0;
    progress_last = 0.0;
    __atomic_store_n(&progress_fn, fn, __ATOMIC_RELEASE);
}

void block_progress_range(double lo, double hi)
{
    progress_lo = lo;
    progress_hi = hi;
}

void block_progress_report(uint64_t done, uint64_t total)
{
    BlockProgressFn fn = __atomic_load_n(&progress_fn, __ATOMIC_ACQUIRE);
    double pct;

    if (!fn || total == 0) {
        return;
    }
    pct = progress_lo + (progress_hi - progress_lo) * MIN(done, total) / (double)total;
    if (pct < progress_last) {
        return;
    }
    progress_last = pct;
    fn(progress_opaque, pct);
}
