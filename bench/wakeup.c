/* wakeup.c - what waking a sleeping thread costs on this machine: the round trip of two threads
 * that wake each other in turn through eventfds, both on one CPU, and on two CPUs.
 *
 * Why bench/run measures it: a FUSE request made one at a time costs two such wake-ups (the
 * server's thread for the request, the client for the reply), so this round trip is the floor
 * of every depth-1 figure, and how much cheaper "one CPU" is than "two CPUs" decides how much
 * serving a request on its client's CPU gains (fuse/affinity.c).  It differs between machines
 * far more than the servers do: on one 2-CPU bench machine, whose idle CPUs halted at once, a
 * depth-1 request served across CPUs took about 380 us against 7-9 us on the client's CPU
 * (bench/RESULTS.md, "Depth 1: serve on the client's CPU"); on a later one this program measured
 * 8 us on one CPU and 16-31 us across two.  RESULTS.md shows both figures of the machine it was
 * written on, so that runs on different machines can be compared.
 *
 * usage: wakeup [-n ROUND_TRIPS]
 * Prints one line: "one-cpu US two-cpus US" (medians over 7 batches, microseconds per round
 * trip; two-cpus is "n/a" where the process may use only one CPU).  Between batches both
 * threads sleep 20 ms, so each batch starts, like a depth-1 client, from idle CPUs.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define BATCHES 7

typedef struct {
    int ping, pong;             /* eventfds: the main thread writes ping, the echo thread pong */
    int cpu;                    /* the echo thread's CPU */
    long round_trips;           /* per batch */
} Pair;

static void die(const char *what)
{
    fprintf(stderr, "wakeup: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void pin(int cpu)
{
    cpu_set_t set;

    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) < 0) {
        die("sched_setaffinity");
    }
}

static void take(int fd)
{
    uint64_t v;

    while (read(fd, &v, sizeof(v)) != sizeof(v)) {
        if (errno != EINTR) {
            die("read");
        }
    }
}

static void give(int fd)
{
    uint64_t v = 1;

    while (write(fd, &v, sizeof(v)) != sizeof(v)) {
        if (errno != EINTR) {
            die("write");
        }
    }
}

static void *echo(void *opaque)
{
    Pair *p = opaque;

    pin(p->cpu);
    for (long i = 0; i < BATCHES * p->round_trips; i++) {
        take(p->ping);
        give(p->pong);
    }
    return NULL;
}

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Median microseconds per round trip between the main thread on cpu_a and a thread on cpu_b. */
static double round_trip_us(int cpu_a, int cpu_b, long round_trips)
{
    Pair p = { .cpu = cpu_b, .round_trips = round_trips };
    double took[BATCHES];
    pthread_t t;

    p.ping = eventfd(0, EFD_CLOEXEC);
    p.pong = eventfd(0, EFD_CLOEXEC);
    if (p.ping < 0 || p.pong < 0) {
        die("eventfd");
    }
    pin(cpu_a);
    if ((errno = pthread_create(&t, NULL, echo, &p)) != 0) {
        die("pthread_create");
    }
    for (int b = 0; b < BATCHES; b++) {
        double start;

        usleep(20000);          /* both CPUs idle, as between a depth-1 client's requests */
        start = now_us();
        for (long i = 0; i < round_trips; i++) {
            give(p.ping);
            take(p.pong);
        }
        took[b] = (now_us() - start) / round_trips;
    }
    pthread_join(t, NULL);
    close(p.ping);
    close(p.pong);
    qsort(took, BATCHES, sizeof(took[0]), cmp_double);
    return took[BATCHES / 2];
}

int main(int argc, char **argv)
{
    long round_trips = 2000;
    cpu_set_t allowed;
    int cpus[2], n = 0, opt;

    while ((opt = getopt(argc, argv, "n:")) != -1) {
        if (opt != 'n' || (round_trips = strtol(optarg, NULL, 10)) <= 0) {
            fprintf(stderr, "usage: wakeup [-n ROUND_TRIPS]\n");
            return 2;
        }
    }
    if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0) {
        die("sched_getaffinity");
    }
    for (int c = 0; c < CPU_SETSIZE && n < 2; c++) {
        if (CPU_ISSET(c, &allowed)) {
            cpus[n++] = c;
        }
    }
    printf("one-cpu %.1f", round_trip_us(cpus[0], cpus[0], round_trips));
    if (n == 2) {
        printf(" two-cpus %.1f\n", round_trip_us(cpus[0], cpus[1], round_trips));
    } else {
        printf(" two-cpus n/a\n");
    }
    return 0;
}
