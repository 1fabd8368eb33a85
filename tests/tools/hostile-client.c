/* hostile-client.c - a hostile client of a blkfuse daemon's control socket: many connections
 * sending random and mutated requests, some never reading their replies, some hanging up in the
 * middle of a request line.  The daemon must keep serving its other clients and exports.
 *
 * Usage: hostile-client [OPTION]... SOCKET
 *   --requests N      request lines to send in all (default 1000000)
 *   --seed N          random seed (default 1)
 *   --connections N   connections open at once (default 8)
 *   --nowhere DIR     a directory that does not exist: every path in a request starts with it,
 *                     so no mount can find an image, whatever the mutations (required)
 *   --protect STRING  never send a line that contains STRING (the id or mountpoint of an export
 *                     that must survive); may be repeated
 *   --progress FILE   create FILE once a tenth of the requests are sent
 *
 * The requests are mutations of a corpus of valid ones (list, stats, mount, unmount; never
 * quit, and never an unmount of a protected export): fields dropped, added, renamed, duplicated
 * or given odd values of every JSON type; then, for some, bytes flipped, inserted (newlines and
 * NULs among them), deleted or the line cut; and some lines are random bytes.
 *
 * Prints a summary; exits 0 once every request was sent (or 1 on a usage or setup error).
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS   64
#define MAX_PROTECT 16
#define MAX_FIELDS  24
#define LINE_MAX_OUT (80 * 1024)

static uint64_t rng_state;

static uint64_t rnd(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static unsigned below(unsigned n)
{
    return n ? (unsigned)(rnd() % n) : 0;
}

static bool chance(unsigned percent)
{
    return below(100) < percent;
}

/* --- growable buffer ------------------------------------------------------------- */

typedef struct Buf {
    char *p;
    size_t len, cap;
} Buf;

static void buf_reserve(Buf *b, size_t more)
{
    if (b->len + more + 1 > b->cap) {
        b->cap = (b->len + more + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) {
            perror("realloc");
            exit(1);
        }
    }
}

static void buf_add(Buf *b, const void *data, size_t len)
{
    buf_reserve(b, len);
    memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = '\0';
}

static void buf_str(Buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static void buf_consume(Buf *b, size_t n)
{
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

/* --- requests ---------------------------------------------------------------------- */

typedef struct Field {
    char key[64];
    char *value;                /* JSON text, owned */
} Field;

typedef struct Request {
    Field f[MAX_FIELDS];
    int n;
} Request;

static const char *nowhere;
static const char *protect[MAX_PROTECT];
static int n_protect;

static void req_add(Request *r, const char *key, const char *value)
{
    if (r->n == MAX_FIELDS) {
        return;
    }
    snprintf(r->f[r->n].key, sizeof(r->f[r->n].key), "%s", key);
    r->f[r->n].value = strdup(value);
    r->n++;
}

static void req_free(Request *r)
{
    for (int i = 0; i < r->n; i++) {
        free(r->f[i].value);
    }
    r->n = 0;
}

/* A JSON string naming a path under the nowhere directory. */
static char *nowhere_path(const char *leaf)
{
    size_t len = strlen(nowhere) + strlen(leaf) + 8;
    char *s = malloc(len);

    snprintf(s, len, "\"%s/%s\"", nowhere, leaf);
    return s;
}

/* One valid request of the corpus. */
static void corpus_request(Request *r)
{
    static const char *const formats[] = { "\"raw\"", "\"qcow2\"" };
    static const char *const caches[] = {
        "\"writeback\"", "\"writethrough\"", "\"none\"", "\"directsync\"",
    };
    static const char *const options[] = {
        "\"l2-cache-size=1M\"", "\"locking=off\"", "\"offset=512,size=1M\"", "\"\"",
    };
    char *img = nowhere_path("img.raw");
    char *mnt = nowhere_path("mnt");
    char *m1 = nowhere_path("m1");

    switch (below(7)) {
    case 0:
        req_add(r, "cmd", "\"list\"");
        break;
    case 1:
        req_add(r, "cmd", "\"stats\"");
        req_add(r, "mountpoint", m1);
        break;
    case 2:
        req_add(r, "cmd", "\"unmount\"");
        req_add(r, "mountpoint", m1);
        if (chance(50)) {
            req_add(r, "force", chance(50) ? "true" : "false");
        }
        break;
    case 3:
        req_add(r, "cmd", "\"unmount\"");
        req_add(r, "id", "\"nosuch1\"");
        break;
    default:
        req_add(r, "cmd", "\"mount\"");
        req_add(r, "image", img);
        req_add(r, "mountpoint", mnt);
        if (chance(40)) {
            req_add(r, "format", formats[below(2)]);
        }
        if (chance(30)) {
            req_add(r, "cache", caches[below(4)]);
        }
        if (chance(30)) {
            char q[16];
            snprintf(q, sizeof(q), "%u", 1 + below(64));
            req_add(r, "queues", q);
        }
        if (chance(30)) {
            req_add(r, "options", options[below(4)]);
        }
        if (chance(20)) {
            req_add(r, "read_only", "true");
        } else if (chance(20)) {
            req_add(r, "snapshot", "true");
        }
        if (chance(20)) {
            req_add(r, "growable", chance(50) ? "true" : "false");
        }
        if (chance(20)) {
            req_add(r, "allow_other", "false");
        }
        if (chance(20)) {
            req_add(r, "id", "\"hostile1\"");
        }
        if (chance(10)) {
            req_add(r, "allow_remote_backing", "true");
        }
        if (chance(10)) {
            req_add(r, "snapshot_name", "\"snap1\"");
        }
        break;
    }
    free(img);
    free(mnt);
    free(m1);
}

static const char *const known_keys[] = {
    "cmd", "image", "mountpoint", "id", "format", "options", "read_only", "growable",
    "allow_other", "snapshot", "snapshot_name", "cache", "queues", "force",
    "allow_remote_backing", "", "CMD", "queue", "readonly", "x\\u0000y",
};

static const char *const odd_values[] = {
    "-1", "0", "1", "2", "64", "65", "4294967295", "4294967297", "9223372036854775807",
    "-9223372036854775808", "18446744073709551616", "99999999999999999999999999999",
    "1e308", "1e400", "-1e400", "-0", "0.5", "1.0", "2e1", "true", "false", "null", "[]", "{}",
    "[1,2]", "{\"a\":1}", "[[[[]]]]", "\"\"", "\"list\"", "\"stats\"", "\"mount\"",
    "\"unmount\"", "\"LIST\"", "\"none\"", "\"writeback\"", "\"qcow2\"", "\"raw\"", "\"file\"",
    "\"null\"", "\"vmdk\"", "\"\\u0000\"", "\"\\ud800\"", "\"\\udc00x\"", "\"\\u00e9\"",
    "\"\xff\xfe\"", "\"\xc0\xaf\"", "\"a\\nb\"", "\"a,b=c\"", "\"=\"", "\",,,\"",
    "\"l2-cache-size=1E\"", "\"offset=-1\"", "\"size=99999999999999999999\"",
    "\"relative/path\"", "\"..\"", "\"/nonexistent-blkfuse-hostile/x\"", "\"a/b\"",
    "\"id with spaces\"", "\"0123456789012345678901234567890123456789012345678901234567890123456\"",
    "tru", "nul", "\"unterminated", "01", "-", "1.", ".5", "+1", "0x10", "NaN", "Infinity",
};

/* A JSON value chosen to be awkward. */
static char *odd_value(void)
{
    unsigned k = below(1000);

    if (k < 5) {
        /* Nested deeper than the parser allows. */
        unsigned depth = 60 + below(200);
        char *s = malloc(2 * depth + 1);
        memset(s, '[', depth);
        memset(s + depth, ']', depth);
        s[2 * depth] = '\0';
        return s;
    }
    if (k < 7) {
        /* A string of some kilobytes, sometimes past the line limit. */
        size_t n = chance(30) ? 70000 : 1 + below(8000);
        char *s = malloc(n + 3);
        s[0] = '"';
        memset(s + 1, 'a' + below(26), n);
        s[n + 1] = '"';
        s[n + 2] = '\0';
        return s;
    }
    if (k < 60) {
        return nowhere_path(chance(50) ? "img.qcow2" : "dir/../mnt");
    }
    return strdup(odd_values[below(sizeof(odd_values) / sizeof(odd_values[0]))]);
}

/* Structure-level mutations: fields dropped, added, renamed, duplicated, revalued. */
static void mutate_fields(Request *r)
{
    unsigned n = 1 + below(3);

    for (unsigned i = 0; i < n; i++) {
        int j = r->n ? (int)below(r->n) : 0;
        switch (below(6)) {
        case 0:
            if (r->n) {
                free(r->f[j].value);
                r->f[j] = r->f[r->n - 1];
                r->n--;
            }
            break;
        case 1: {
            char *v = odd_value();
            req_add(r, known_keys[below(sizeof(known_keys) / sizeof(known_keys[0]))], v);
            free(v);
            break;
        }
        case 2:
            if (r->n) {
                snprintf(r->f[j].key, sizeof(r->f[j].key), "%s",
                         known_keys[below(sizeof(known_keys) / sizeof(known_keys[0]))]);
            }
            break;
        case 3:
            if (r->n) {
                char key[64];
                char *value = strdup(r->f[j].value);
                memcpy(key, r->f[j].key, sizeof(key));
                req_add(r, key, value);
                free(value);
            }
            break;
        default:
            if (r->n) {
                free(r->f[j].value);
                r->f[j].value = odd_value();
            }
            break;
        }
    }
}

static void serialize(const Request *r, Buf *out)
{
    buf_str(out, chance(5) ? "[" : "{");
    for (int i = 0; i < r->n; i++) {
        if (i) {
            buf_str(out, chance(2) ? "" : ", ");
        }
        buf_str(out, "\"");
        buf_str(out, r->f[i].key);
        buf_str(out, "\": ");
        buf_str(out, r->f[i].value);
    }
    buf_str(out, chance(2) ? "" : "}");
}

/* Byte-level mutations of a serialized line. */
static void mutate_bytes(Buf *line)
{
    static const char specials[] = "\n\0\"\\{}[],: \xff\x80\x01\r";
    unsigned n = 1 + below(4);

    for (unsigned i = 0; i < n && line->len > 0; i++) {
        size_t pos = below(line->len);
        switch (below(5)) {
        case 0:
            line->p[pos] ^= 1u << below(8);
            break;
        case 1:
            line->p[pos] = specials[below(sizeof(specials) - 1)];
            break;
        case 2: {
            size_t len = 1 + below(8);
            if (pos + len > line->len) {
                len = line->len - pos;
            }
            memmove(line->p + pos, line->p + pos + len, line->len - pos - len);
            line->len -= len;
            break;
        }
        case 3: {
            char c = specials[below(sizeof(specials) - 1)];
            buf_reserve(line, 1);
            memmove(line->p + pos + 1, line->p + pos, line->len - pos);
            line->p[pos] = c;
            line->len++;
            break;
        }
        default:
            line->len = pos;            /* cut */
            break;
        }
    }
}

static bool protected_line(const Buf *line)
{
    /* Lines are compared as C strings up to each NUL, like the daemon's fields would be. */
    for (int i = 0; i < n_protect; i++) {
        if (memmem(line->p, line->len, protect[i], strlen(protect[i]))) {
            return true;
        }
    }
    return memmem(line->p, line->len, "quit", 4) != NULL;
}

/* Append one request line (with its newline) to out. */
static void make_line(Buf *out)
{
    Buf line = { 0 };

    do {
        Request r = { .n = 0 };

        line.len = 0;
        if (chance(3)) {
            size_t n = below(200);
            buf_reserve(&line, n);
            for (size_t i = 0; i < n; i++) {
                line.p[line.len++] = (char)rnd();
            }
        } else {
            corpus_request(&r);
            if (chance(75)) {
                mutate_fields(&r);
            }
            serialize(&r, &line);
            req_free(&r);
            if (chance(25)) {
                mutate_bytes(&line);
            }
        }
    } while (protected_line(&line));
    buf_add(out, line.p ? line.p : "", line.len);
    buf_str(out, "\n");
    free(line.p);
}

/* --- connections --------------------------------------------------------------------- */

typedef enum { ROLE_READER, ROLE_NEVER_READS, ROLE_HANGS_UP } Role;

typedef struct Conn {
    int fd;
    Role role;
    long budget;                /* requests this connection sends before it is done */
    Buf out;
    bool idle;                  /* never-reader that has sent its part: holds the slot */
} Conn;

static struct {
    long sent, replies, connections, hangups, refused_by_daemon, idle_closed, stalls;
} stats;

static const char *sock_path;

static int open_conn(void)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", sock_path);
    if (fd < 0) {
        perror("socket");
        exit(1);
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 && errno != EINPROGRESS &&
        errno != EAGAIN) {
        fprintf(stderr, "hostile-client: connect %s: %s\n", sock_path, strerror(errno));
        exit(1);
    }
    stats.connections++;
    return fd;
}

static void conn_start(Conn *c)
{
    unsigned k = below(100);

    c->fd = open_conn();
    c->role = k < 70 ? ROLE_READER : k < 85 ? ROLE_NEVER_READS : ROLE_HANGS_UP;
    c->budget = 1 + below(k < 50 ? 20 : c->role == ROLE_NEVER_READS ? 1000 : 5000);
    c->out.len = 0;
    c->idle = false;
}

static void conn_end(Conn *c)
{
    close(c->fd);
    c->fd = -1;
}

int main(int argc, char **argv)
{
    long total = 1000000;
    unsigned long seed = 1;
    int nconns = 8;
    const char *progress = NULL;
    bool progress_done = false;
    Conn conns[MAX_CONNS];
    struct pollfd pfd[MAX_CONNS];
    struct timespec t0, t1;
    int quiet_polls = 0;
    int i, n;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--requests") && v) {
            total = atol(v);
        } else if (!strcmp(a, "--seed") && v) {
            seed = strtoul(v, NULL, 0);
        } else if (!strcmp(a, "--connections") && v) {
            nconns = atoi(v);
        } else if (!strcmp(a, "--nowhere") && v) {
            nowhere = v;
        } else if (!strcmp(a, "--protect") && v && n_protect < MAX_PROTECT) {
            protect[n_protect++] = v;
        } else if (!strcmp(a, "--progress") && v) {
            progress = v;
        } else if (a[0] != '-' && !sock_path) {
            sock_path = a;
            continue;
        } else {
            fprintf(stderr, "hostile-client: bad argument '%s' (see the source for usage)\n", a);
            return 1;
        }
        i++;
    }
    if (!sock_path || !nowhere || nconns < 1 || nconns > MAX_CONNS || total < 1) {
        fprintf(stderr, "usage: hostile-client [--requests N] [--seed N] [--connections N] "
                "--nowhere DIR [--protect STRING]... [--progress FILE] SOCKET\n");
        return 1;
    }
    if (access(nowhere, F_OK) == 0) {
        fprintf(stderr, "hostile-client: %s exists; give a path that does not\n", nowhere);
        return 1;
    }
    rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
    clock_gettime(CLOCK_MONOTONIC, &t0);

    for (i = 0; i < nconns; i++) {
        memset(&conns[i], 0, sizeof(conns[i]));
        conn_start(&conns[i]);
    }
    while (stats.sent < total) {
        int idle = 0;

        for (i = 0; i < nconns; i++) {
            Conn *c = &conns[i];
            pfd[i].fd = c->fd;
            pfd[i].events = (c->idle ? 0 : POLLOUT) | (c->role != ROLE_NEVER_READS ? POLLIN : 0);
            pfd[i].revents = 0;
            idle += c->idle;
        }
        if (idle == nconns) {
            /* Every slot holds a silent never-reader: let the oldest go. */
            conn_end(&conns[0]);
            conn_start(&conns[0]);
            stats.idle_closed++;
            continue;
        }
        n = poll(pfd, nconns, 100);
        if (n <= 0) {
            /* Never-readers whose sends the daemon no longer takes are done: let them go. */
            bool freed = false;
            for (i = 0; i < nconns; i++) {
                if (conns[i].role == ROLE_NEVER_READS && !conns[i].idle) {
                    conn_end(&conns[i]);
                    conn_start(&conns[i]);
                    stats.stalls++;
                    freed = true;
                }
            }
            if (!freed && ++quiet_polls >= 100) {
                fprintf(stderr, "hostile-client: the daemon took nothing for 10 s\n");
                return 1;
            }
            continue;
        }
        quiet_polls = 0;
        for (i = 0; i < nconns; i++) {
            Conn *c = &conns[i];
            bool dead = false;

            if (pfd[i].revents & POLLIN) {
                char buf[65536];
                ssize_t got = recv(c->fd, buf, sizeof(buf), 0);
                if (got <= 0) {
                    dead = true;
                } else {
                    for (ssize_t k = 0; k < got; k++) {
                        stats.replies += buf[k] == '\n';
                    }
                }
            }
            if (!dead && (pfd[i].revents & POLLOUT)) {
                while (c->out.len < 16384 && c->budget > 0 && stats.sent < total) {
                    make_line(&c->out);
                    c->budget--;
                    stats.sent++;
                    if (c->role == ROLE_HANGS_UP && chance(2)) {
                        /* Hang up in the middle of this line. */
                        size_t cut = below(c->out.len);
                        ssize_t r = send(c->fd, c->out.p, cut, MSG_NOSIGNAL);
                        (void)r;
                        stats.hangups++;
                        dead = true;
                        break;
                    }
                }
                if (!dead && c->out.len) {
                    ssize_t sent = send(c->fd, c->out.p, c->out.len, MSG_NOSIGNAL);
                    if (sent < 0 && errno != EAGAIN) {
                        dead = true;
                        stats.refused_by_daemon++;
                    } else if (sent > 0) {
                        buf_consume(&c->out, sent);
                    }
                    if (c->out.len && c->role == ROLE_NEVER_READS) {
                        c->budget = 0;          /* the daemon stopped reading it: enough */
                        c->out.len = 0;
                    }
                }
                if (!dead && c->budget == 0 && c->out.len == 0) {
                    if (c->role == ROLE_NEVER_READS) {
                        c->idle = true;         /* keep it open, unread, for a while */
                    } else {
                        dead = true;
                    }
                }
            }
            if (!dead && (pfd[i].revents & (POLLERR | POLLHUP)) && !(pfd[i].revents & POLLIN)) {
                dead = true;
                stats.refused_by_daemon++;
            }
            if (dead) {
                conn_end(c);
                conn_start(c);
            }
        }
        if (progress && !progress_done && stats.sent >= total / 10) {
            FILE *f = fopen(progress, "w");
            if (f) {
                fclose(f);
            }
            progress_done = true;
        }
    }
    for (i = 0; i < nconns; i++) {
        conn_end(&conns[i]);
        free(conns[i].out.p);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("hostile-client: %ld requests sent in %.1f s over %ld connections; %ld replies read; "
           "%ld hung up mid-line; %ld dropped by the daemon; %ld idle never-readers closed; "
           "%ld stalls\n",
           stats.sent, (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
           stats.connections, stats.replies, stats.hangups, stats.refused_by_daemon,
           stats.idle_closed, stats.stalls);
    return 0;
}
