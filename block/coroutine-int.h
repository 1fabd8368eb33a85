/*
 * coroutine-int.h - what coroutine.c shares with aio.c and nobody else
 *
 * aio_co_schedule keeps an allocation-free list of scheduled coroutines per AioContext: each
 * coroutine carries one link, and a flag that makes scheduling it twice a no-op.  coroutine.c
 * owns the Coroutine structure; aio.c reaches the link and the flag only through these.
 */
#ifndef BLKFUSE_COROUTINE_INT_H
#define BLKFUSE_COROUTINE_INT_H

#include "block/coroutine.h"

#include <stdbool.h>

typedef struct CoScheduleLink {
    struct CoScheduleLink *next;
} CoScheduleLink;

/* The link of CO in its context's schedule list, and back. */
CoScheduleLink *coroutine_sched_link(Coroutine *co);
Coroutine *coroutine_from_sched_link(CoScheduleLink *l);

/* Set CO's scheduled flag: true if it was clear (the caller must queue CO), false if CO is
 * already queued.  The context clears it just before it enters CO. */
bool coroutine_mark_scheduled(Coroutine *co);
void coroutine_clear_scheduled(Coroutine *co);

#endif
