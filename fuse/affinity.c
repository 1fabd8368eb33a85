/* affinity.c - which CPU serves a request: the client's own while requests come one at a time,
 * any while many are in flight.
 *
 * Why: a request that wakes a thread sleeping on another CPU pays a cross-CPU wake-up, and its
 * reply pays another.  Where idle CPUs halt (virtual machines, power saving), each costs tens
 * to hundreds of microseconds: a client reading 4 KiB at a time gets 5-10k requests a second
 * from a thread on the other CPU, and 40-70k from one on its own CPU (bench/RESULTS.md,
 * "Depth 1: serve on the client's CPU").  With many requests in flight it is the other way
 * round: the client and the thread serving it should each have a CPU.
 *
 * How, per export, in one of two modes (exp->aff_mode):
 * - LOCAL: every queue thread is pinned to its own CPU (queue->aff_cpu), and every queue
 *   takes requests.  Over /dev/fuse a new request wakes every queue waiting for one (the
 *   queues' fds are clones on one connection); the thread on the client's CPU runs as soon as
 *   the client sleeps and wins the request, the others find nothing (a few microseconds of an
 *   otherwise idle CPU).  With FUSE-over-io_uring the kernel itself hands a request to the
 *   queue of the CPU that issued it.
 * - SPREAD: the threads may run on any CPU they were allowed at start; over /dev/fuse only
 *   queue 0 takes requests (every queue waking for every request of a deep queue costs more
 *   than it gives), with FUSE-over-io_uring every queue still takes its CPU's.
 * Every FUSE_AFFINITY_WINDOW requests a queue looks at the most requests the export had in
 * flight meanwhile, or that it found waiting at once (requests answered at once are never two
 * in flight, so the transports look for a second one waiting: now and then a read ahead over
 * /dev/fuse; with io_uring, the completions of other requests already on the ring, block I/O's
 * not counted).  More than one switches to SPREAD; FUSE_AFFINITY_CALM windows in a row at one
 * switch back to LOCAL.  The queue that switches
 * tells the others with a bottom half (fuse_affinity_apply_bh).
 *
 * On for FUSE-over-io_uring, and over /dev/fuse with --queues=auto (the default: one queue per
 * CPU, at most FUSE_AUTO_QUEUES_MAX).  --queues=N over /dev/fuse: N queues that take any
 * request and run where the scheduler puts them, as before.  Never outside the CPUs the
 * daemon was allowed at start (taskset, cpusets); a failed sched_setaffinity leaves the thread
 * where it is.
 */
#include "config.h"
#include "fuse/fuse-int.h"
#include "block/util.h"

#include <errno.h>

/* Main thread, at create: the CPUs the daemon may use (taskset, cpusets), read once; and how
 * many queues --queues=auto makes over /dev/fuse: one per such CPU, up to
 * FUSE_AUTO_QUEUES_MAX (every waiting queue wakes for each request). */
unsigned fuse_affinity_init(FuseExport *exp)
{
    exp->aff_known = sched_getaffinity(0, sizeof(exp->aff_allowed), &exp->aff_allowed) == 0;
    if (!exp->aff_known) {
        log_debug("export %s: cannot read the CPUs it may use (%s): one queue, where the "
                  "scheduler puts it", exp->common.id, g_strerror(errno));
        return 1;
    }
    return CLAMP(CPU_COUNT(&exp->aff_allowed), 1, FUSE_AUTO_QUEUES_MAX);
}

/* Main thread, before the queues start: the queues' CPUs, and whether to follow at all. */
void fuse_affinity_setup(FuseExport *exp, bool follow)
{
    const cpu_set_t *allowed = &exp->aff_allowed;
    unsigned i = 0;

    exp->aff_on = false;
    for (unsigned q = 0; q < exp->nr_queues; q++) {
        exp->queues[q].aff_cpu = -1;
        exp->queues[q].aff_pinned = -1;
        exp->queues[q].aff_listening = true;
    }
    if (!follow || !exp->aff_known) {
        return;
    }
    if (exp->transport->queue_per_cpu) {
        /* The kernel's queue N gets what CPU N issues. */
        for (unsigned q = 0; q < exp->nr_queues; q++) {
            if (q < CPU_SETSIZE && CPU_ISSET(q, allowed)) {
                exp->queues[q].aff_cpu = q;
            }
        }
    } else {
        /* Queue N on the N-th CPU the daemon may use. */
        for (int cpu = 0; cpu < CPU_SETSIZE && i < exp->nr_queues; cpu++) {
            if (CPU_ISSET(cpu, allowed)) {
                exp->queues[i++].aff_cpu = cpu;
            }
        }
    }
    exp->aff_mode = FUSE_AFF_LOCAL;
    exp->aff_on = true;
}

static void fuse_affinity_pin(FuseQueue *q, int cpu)
{
    cpu_set_t one, *set = &q->exp->aff_allowed;

    if (cpu >= 0) {
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        set = &one;
    }
    if (sched_setaffinity(0, sizeof(cpu_set_t), set) < 0) {
        log_debug("export %s: queue %u: cannot move to %s%d (%s); it stays where it is",
                  q->exp->common.id, q->index, cpu >= 0 ? "CPU " : "all its CPUs but ",
                  MAX(cpu, 0), g_strerror(errno));
        return;
    }
    __atomic_store_n(&q->aff_pinned, cpu, __ATOMIC_RELAXED);     /* read by list */
}

/* Queue thread: take the export's current mode.  (Over /dev/fuse, a queue that stops taking
 * requests stops watching its fd; queue 0 always watches its own, and sees the unmount.) */
void fuse_affinity_apply(FuseQueue *q)
{
    FuseExport *exp = q->exp;
    int mode = __atomic_load_n(&exp->aff_mode, __ATOMIC_ACQUIRE);
    int cpu = mode == FUSE_AFF_LOCAL ? q->aff_cpu : -1;
    bool listen = mode == FUSE_AFF_LOCAL || q->index == 0 || exp->transport->queue_per_cpu;

    if (!exp->aff_on || q->stopping) {
        return;         /* stopped queues take no requests whatever the mode */
    }
    aio_set_serial(q->ctx, mode == FUSE_AFF_LOCAL);
    if (cpu != q->aff_pinned && (cpu >= 0 || q->aff_pinned >= 0)) {
        fuse_affinity_pin(q, cpu);
    }
    if (listen != q->aff_listening && exp->transport->queue_listen) {
        exp->transport->queue_listen(q, listen);
        __atomic_store_n(&q->aff_listening, listen, __ATOMIC_RELAXED);  /* read by list */
    }
}

static void fuse_affinity_apply_bh(void *opaque)
{
    fuse_affinity_apply(opaque);
}

void fuse_affinity_window(FuseQueue *q)
{
    FuseExport *exp = q->exp;
    int mode = __atomic_load_n(&exp->aff_mode, __ATOMIC_ACQUIRE);
    int want = mode;

    if (q->aff_depth > 1) {
        q->aff_calm = 0;
        want = FUSE_AFF_SPREAD;
    } else if (++q->aff_calm >= FUSE_AFFINITY_CALM) {
        want = FUSE_AFF_LOCAL;
    }
    q->aff_count = 0;
    q->aff_depth = 0;
    if (want == mode || q->stopping ||
        !__atomic_compare_exchange_n(&exp->aff_mode, &mode, want, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        return;
    }
    __atomic_add_fetch(&exp->aff_switches, 1, __ATOMIC_RELAXED);
    /* The other queues' contexts live until every queue thread has exited (queue.c), so this
     * one, still running, may schedule on them; one that has stopped ignores it. */
    for (unsigned i = 0; i < exp->nr_queues; i++) {
        if (i != q->index) {
            aio_bh_schedule(exp->queues[i].ctx, fuse_affinity_apply_bh, &exp->queues[i]);
        }
    }
    fuse_affinity_apply(q);
}

const char *fuse_affinity_mode_name(FuseExport *exp)
{
    if (!exp->aff_on) {
        return "fixed";
    }
    return __atomic_load_n(&exp->aff_mode, __ATOMIC_RELAXED) == FUSE_AFF_LOCAL ? "local"
                                                                               : "spread";
}

/* Main thread (list, stats). */
void fuse_affinity_queues(FuseExport *exp, BlockExportQueues *info)
{
    info->affinity = fuse_affinity_mode_name(exp);
    info->switches = __atomic_load_n(&exp->aff_switches, __ATOMIC_RELAXED);
    info->nr = exp->nr_queues;
    info->queue = g_new0(BlockExportQueue, exp->nr_queues);
    for (unsigned i = 0; i < exp->nr_queues; i++) {
        FuseQueue *q = &exp->queues[i];

        info->queue[i] = (BlockExportQueue){
            .cpu = q->aff_cpu,
            .pinned = __atomic_load_n(&q->aff_pinned, __ATOMIC_RELAXED),
            .taking = __atomic_load_n(&q->aff_listening, __ATOMIC_RELAXED),
            .requests = __atomic_load_n(&q->requests, __ATOMIC_RELAXED),
        };
    }
}
