/* progress.h - how far a long block operation has got, for the CLI's -p (create with full
 * preallocation, check and repair).
 *
 * One process-wide listener, set by a CLI command around the one operation it runs (the daemon
 * never sets one).  Drivers report from whichever thread runs the operation; with no listener a
 * report costs one atomic load.
 */
#ifndef BLOCK_PROGRESS_H
#define BLOCK_PROGRESS_H

#include <stdint.h>

/* Called with the operation's progress, 0.0 to 100.0, never going back. */
typedef void (*BlockProgressFn)(void *opaque, double percent);

/* Set (or with NULL, clear) the listener; reports map into [lo, hi] percent of the whole,
 * so that one command can run several passes (see block_progress_range). */
void block_progress_set(BlockProgressFn fn, void *opaque);

/* Reports from now on cover [lo, hi] percent of the listener's whole (default 0..100). */
void block_progress_range(double lo, double hi);

/* done of total units of the current pass are done (total 0: nothing to say). */
void block_progress_report(uint64_t done, uint64_t total);

#endif
