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
 * Yielding the CPU with each reply, in LOCAL mode, FUSE-over-io_uring only.  Why: the reply
 * wakes the client from the queue thread, on the client's own CPU; the scheduler sees that
 * CPU busy (the queue thread still runs) and the other one idle, and moves the client there;
 * its next request goes to that CPU's queue, whose reply moves it back.  Every request then
 * pays a cross-CPU wake-up both ways (fio at depth 1: thousands of migrations a second over
 * the ring, a hundred over /dev/fuse, whose every queue wakes for every request and keeps the
 * other CPUs briefly busy).  A CPU that runs only SCHED_IDLE threads counts as idle for that
 * choice.  So the system call that commits a reply runs at SCHED_IDLE, alone (what else was
 * queued is submitted first): the client wakes on its own CPU and preempts the queue thread
 * at once, and the thread, back from the call when the client sleeps again, returns to the
 * daemon's policy.  4 KiB reads at depth 1 twice as fast on the bench machine (bench/RESULTS.md).
 * Only that call: a whole thread at SCHED_IDLE would wait behind any other work on its CPU
 * (write-back, the loop device), and the kernel's io_uring workers that it creates inherit its
 * policy.  That call too waits behind other work when its CPU has some: a yield that took
 * longer than FUSE_YIELD_SLOW_US, twice within FUSE_YIELD_SLOW_SPAN yields, pauses them (50
 * times as long, at least 100 ms).  Only where the way back is allowed (the kernel asks
 * CAP_SYS_NICE, or an RLIMIT_NICE of the daemon's nice value, to leave SCHED_IDLE: tried once,
 * by a thread of its own, at setup) and the daemon runs SCHED_OTHER or SCHED_BATCH (a
 * real-time daemon keeps its priority).
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
#include <pthread.h>

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

/* A thread of its own: whether a thread may go to SCHED_IDLE and back to *opaque's policy. */
static void *fuse_idle_trial(void *opaque)
{
    const int *policy = opaque;
    struct sched_param none = { 0 };

    if (sched_setscheduler(0, SCHED_IDLE, &none) < 0) {
        return NULL;
    }
    return sched_setscheduler(0, *policy, &none) == 0 ? (void *)1 : NULL;
}

/* Main thread, at setup: whether LOCAL-mode queues may run SCHED_IDLE (see the top). */
static bool fuse_idle_possible(FuseExport *exp)
{
    int policy = sched_getscheduler(0);
    pthread_t t;
    void *ok = NULL;

    exp->aff_policy = policy;
    if (policy < 0 ||
        ((policy & ~SCHED_RESET_ON_FORK) != SCHED_OTHER &&
         (policy & ~SCHED_RESET_ON_FORK) != SCHED_BATCH)) {
        log_debug("export %s: the daemon runs with scheduling policy %d: its queue threads keep "
                  "it", exp->common.id, policy);
        return false;
    }
    if (pthread_create(&t, NULL, fuse_idle_trial, &exp->aff_policy) != 0) {
        return false;
    }
    pthread_join(t, &ok);
    if (!ok) {
        log_debug("export %s: a thread may not leave SCHED_IDLE here (that needs CAP_SYS_NICE, "
                  "or RLIMIT_NICE 20): the queue threads keep the daemon's priority",
                  exp->common.id);
    }
    return ok != NULL;
}

/* Main thread, before the queues start: the queues' CPUs, and whether to follow at all. */
void fuse_affinity_setup(FuseExport *exp, bool follow)
{
    const cpu_set_t *allowed = &exp->aff_allowed;
    unsigned i = 0;

    exp->aff_on = false;
    exp->aff_yield = false;
    for (unsigned q = 0; q < exp->nr_queues; q++) {
        exp->queues[q].aff_cpu = -1;
        exp->queues[q].aff_pinned = -1;
        exp->queues[q].aff_listening = true;
        exp->queues[q].aff_yield_since_slow = FUSE_YIELD_SLOW_SPAN;
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
        exp->aff_yield = fuse_idle_possible(exp);
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

bool fuse_affinity_yield_due(FuseQueue *q)
{
    return __atomic_load_n(&q->aff_idle, __ATOMIC_RELAXED) &&
           g_get_monotonic_time() >= q->aff_yield_paused_until;
}

bool fuse_affinity_yield(FuseQueue *q, void (*commit)(void *), void *opaque)
{
    struct sched_param none = { 0 };
    int64_t start, took;

    if (sched_setscheduler(0, SCHED_IDLE, &none) < 0) {
        return false;
    }
    start = g_get_monotonic_time();
    commit(opaque);
    if (sched_setscheduler(0, q->exp->aff_policy, &none) < 0) {
        /* Tried at setup: failing now is worth a warning, and no more tries. */
        log_warning("export %s: queue %u: cannot leave idle priority (%s)", q->exp->common.id,
                    q->index, g_strerror(errno));
        __atomic_store_n(&q->exp->aff_yield, false, __ATOMIC_RELAXED);
        __atomic_store_n(&q->aff_idle, false, __ATOMIC_RELAXED);
        return true;
    }
    /* The client runs a few microseconds before it sleeps again.  Longer, twice within
     * FUSE_YIELD_SLOW_SPAN yields (once is the host or an interrupt now and then), and
     * something else takes the CPU meanwhile (the thread at idle priority waits behind any
     * other work): no yields for a while, as without them. */
    __atomic_store_n(&q->aff_yields, q->aff_yields + 1, __ATOMIC_RELAXED);
    took = g_get_monotonic_time() - start;
    if (took <= FUSE_YIELD_SLOW_US) {
        q->aff_yield_since_slow = MIN(q->aff_yield_since_slow + 1, FUSE_YIELD_SLOW_SPAN);
    } else if (q->aff_yield_since_slow >= FUSE_YIELD_SLOW_SPAN) {
        q->aff_yield_since_slow = 0;
    } else {
        int64_t pause = CLAMP(FUSE_YIELD_PAUSE_FACTOR * took, FUSE_YIELD_PAUSE_MIN_US,
                              FUSE_YIELD_PAUSE_MAX_US);

        q->aff_yield_since_slow = 0;
        q->aff_yield_paused_until = start + took + pause;
        __atomic_store_n(&q->aff_yield_pauses, q->aff_yield_pauses + 1, __ATOMIC_RELAXED);
    }
    return true;
}

/* Queue thread: take the export's current mode.  (Over /dev/fuse, a queue that stops taking
 * requests stops watching its fd; queue 0 always watches its own, and sees the unmount.) */
void fuse_affinity_apply(FuseQueue *q)
{
    FuseExport *exp = q->exp;
    int mode = __atomic_load_n(&exp->aff_mode, __ATOMIC_ACQUIRE);
    int cpu = mode == FUSE_AFF_LOCAL ? q->aff_cpu : -1;
    bool listen = mode == FUSE_AFF_LOCAL || q->index == 0 || exp->transport->queue_per_cpu;
    bool idle = mode == FUSE_AFF_LOCAL && __atomic_load_n(&exp->aff_yield, __ATOMIC_RELAXED);

    if (!exp->aff_on || q->stopping) {
        return;         /* stopped queues take no requests whatever the mode */
    }
    aio_set_serial(q->ctx, mode == FUSE_AFF_LOCAL);
    if (cpu != q->aff_pinned && (cpu >= 0 || q->aff_pinned >= 0)) {
        fuse_affinity_pin(q, cpu);
    }
    __atomic_store_n(&q->aff_idle, idle, __ATOMIC_RELAXED);     /* read by list */
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
            .yields = __atomic_load_n(&q->aff_idle, __ATOMIC_RELAXED),
            .yields_done = __atomic_load_n(&q->aff_yields, __ATOMIC_RELAXED),
            .yield_pauses = __atomic_load_n(&q->aff_yield_pauses, __ATOMIC_RELAXED),
            .requests = __atomic_load_n(&q->requests, __ATOMIC_RELAXED),
        };
    }
}
