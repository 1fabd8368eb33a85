/* tool-util.h - what the stand-alone test tools share: die(), a size parser and a seeded
 * pseudo-random generator.
 *
 * Include it after defining `static const char *prog` (the name die() prints first).  Every
 * function here is static inline: a tool gets only what it calls, without unused warnings.
 */
#ifndef TESTS_TOOLS_TOOL_UTIL_H
#define TESTS_TOOLS_TOOL_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Print "PROG: MESSAGE" on stderr and exit with STATUS (2: bad usage). */
static inline void die(int status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

static inline void die(int status, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(status);
}

/* The size S (a number, 0x... in hex, with an optional k, m or g suffix of 1024s) of the
 * option WHAT; dies with a usage error when S is none or exceeds MAX. */
static inline uint64_t parse_size(const char *what, const char *s, uint64_t max)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 0);
    if (errno || end == s || *s == '-') {
        die(2, "invalid %s '%s'", what, s);
    }
    switch (*end) {
    case 'k': case 'K': v <<= 10; end++; break;
    case 'm': case 'M': v <<= 20; end++; break;
    case 'g': case 'G': v <<= 30; end++; break;
    }
    if (*end || v > max) {
        die(2, "invalid %s '%s'", what, s);
    }
    return v;
}

/* --- pseudo-random numbers: xorshift64*, seeded through splitmix64 --- */

static inline uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* xorshift64*: never seeded with 0 (splitmix64 of anything is a fine seed). */
typedef struct { uint64_t s; } Rng;

static inline void rng_init(Rng *r, uint64_t seed)
{
    r->s = splitmix64(seed);
    if (r->s == 0) {
        r->s = 0x2545f4914f6cdd1dULL;
    }
}

static inline uint64_t rng_next(Rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545f4914f6cdd1dULL;
}

#endif
