/* fuzz-fuse.c - libFuzzer harness for the FUSE protocol (fuse/protocol.c): the input is what
 * the kernel would write to /dev/fuse, a stream of requests, each handed to fuse_dispatch() as
 * the /dev/fuse transport hands it (one buffer: header, argument, payload), against an export
 * of a 1 MiB raw image in memory.  Checks: every request that takes an answer gets exactly one,
 * those that take none (FORGET, INTERRUPT...) get none; an error answer carries no data, -errno
 * in the kernel's range; READ data never exceeds what was asked or the buffer; nothing crashes,
 * hangs, leaks or trips a sanitizer.
 *
 * Input layout: one flags byte, then requests.  Each request is a struct fuse_in_header and its
 * bytes; the header's len says how many (clamped to what is left of the input, and at least
 * the header: the harness fixes len up, as the kernel always sends it right).  Flags:
 *   bit 0  read-only export          bit 3  the input brings its own INIT (else one is sent)
 *   bit 1  growable export           bit 4  halt (forced removal) before the last request
 *   bit 2  requests yield once (several in flight, answered out of order)
 * tests/fuzz/mkcorpus-fuse.py writes the seed corpus.
 */
#include "config.h"
#include "fuzz.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "block/aio.h"
#include "block/backend.h"
#include "block/block.h"
#include "block/util.h"
#include "fuse/fuse-int.h"
#include "tests/fuzz/memfile.h"

#define IMG_NAME        MEMFILE_PREFIX ":/img/disk.raw"
#define IMG_SIZE        (1024 * 1024)
#define MAX_REQS        64
#define BUF_DATA_OFF    4096
#define BUF_IN_OFF      (BUF_DATA_OFF - FUSE_WRITE_HDR)
/* READ data lands after BUF_DATA_OFF.  Smaller than a transport's FUSE_MAX_IO, to keep the
 * fuzzer fast: the protocol clamps a READ to out_cap, which this checks too. */
#define OUT_CAP         (128 * 1024)

enum {
    F_READ_ONLY = 1 << 0,
    F_GROWABLE  = 1 << 1,
    F_YIELD     = 1 << 2,
    F_OWN_INIT  = 1 << 3,
    F_HALT      = 1 << 4,
};

typedef struct FuzzReq {
    FuseReq req;
    uint8_t *buf;               /* the transport's buffer, laid out as transport-dev.c's */
    uint32_t read_size;         /* a READ's size, to check the answer against */
    unsigned replies;
} FuzzReq;

typedef struct FuzzExport {
    FuseExport exp;
    FuseQueue q;
} FuzzExport;

static unsigned replies_total;

static int fuzz_reply(FuseReq *req, int error, const void *out_arg, size_t out_arg_len,
                      size_t out_len)
{
    FuzzReq *r = (FuzzReq *)req;

    if (++r->replies > 1) {
        fprintf(stderr, "fuzz-fuse: request %llu (op %u) answered twice\n",
                (unsigned long long)req->in->unique, req->in->opcode);
        abort();
    }
    if (error > 0 || error < -4095 || (error && (out_arg_len || out_len)) ||
        (out_arg_len && out_len) || out_arg_len > 4096 || out_len > req->out_cap ||
        (out_len && (req->in->opcode != FUSE_READ || out_len > r->read_size))) {
        fprintf(stderr, "fuzz-fuse: bad answer to op %u: error %d, arg %zu, data %zu\n",
                req->in->opcode, error, out_arg_len, out_len);
        abort();
    }
    replies_total++;
    return 0;
}

static const FuseTransportOps fuzz_transport = {
    .name = "fuzz",
    .reply = fuzz_reply,
};

static FuzzExport *export_new(uint8_t flags)
{
    FuzzExport *fe = g_new0(FuzzExport, 1);
    FuseExport *exp = &fe->exp;
    bool ro = flags & F_READ_ONLY;

    exp->common.id = g_strdup("fuzz");
    exp->common.refcnt = 1;
    exp->common.read_only = ro;
    exp->common.growable = flags & F_GROWABLE;
    exp->common.blk = blk_new_open(IMG_NAME, "raw", NULL, ro ? 0 : BDRV_O_RDWR, NULL);
    if (!exp->common.blk) {
        fprintf(stderr, "fuzz-fuse: cannot open the in-memory image\n");
        abort();
    }
    exp->main_ctx = aio_get_current();
    exp->queues = &fe->q;
    exp->nr_queues = 1;
    exp->transport = &fuzz_transport;
    fe->q.exp = exp;
    fe->q.ctx = aio_get_current();
    fe->q.fd = -1;
    fuse_protocol_init(exp);
    return fe;
}

static void export_free(FuzzExport *fe)
{
    fuse_protocol_cleanup(&fe->exp);
    blk_unref(fe->exp.common.blk);
    g_free(fe->exp.common.id);
    g_free(fe);
}

/* A request of len bytes (header included) from data, in a buffer of its own. */
static FuzzReq *req_new(FuzzExport *fe, const uint8_t *data, size_t len)
{
    FuzzReq *r = g_new0(FuzzReq, 1);
    struct fuse_in_header *in;

    r->buf = blk_blockalign(BUF_DATA_OFF + MAX(len, OUT_CAP));
    in = (struct fuse_in_header *)(r->buf + BUF_IN_OFF);
    memcpy(in, data, len);
    in->len = len;
    r->req.q = &fe->q;
    r->req.ops = &fuzz_transport;
    r->req.in = in;
    r->req.arg = in + 1;
    r->req.arg_len = len - sizeof(*in);
    r->req.out_buf = r->buf + BUF_DATA_OFF;
    r->req.out_cap = OUT_CAP;
    if (in->opcode == FUSE_READ && r->req.arg_len >= sizeof(struct fuse_read_in)) {
        r->read_size = ((const struct fuse_read_in *)r->req.arg)->size;
    }
    return r;
}

static void req_free(FuzzReq *r)
{
    blk_vfree(r->buf);
    g_free(r);
}

static void send_init(FuzzExport *fe)
{
    struct {
        struct fuse_in_header h;
        struct fuse_init_in i;
    } init = {
        .h = { .opcode = FUSE_INIT, .unique = 1 },
        .i = { .major = FUSE_KERNEL_VERSION, .minor = 45, .max_readahead = 131072,
               .flags = 0xffffffff, .flags2 = 0xffffffff },
    };
    FuzzReq *r = req_new(fe, (const uint8_t *)&init, sizeof(init));

    if (!fuse_dispatch(&r->req) || r->replies != 1 || !fe->exp.got_init) {
        fprintf(stderr, "fuzz-fuse: INIT failed\n");
        abort();
    }
    req_free(r);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    bdrv_register_driver(&bdrv_fuzzmem);
    if (!getenv("FUZZ_LOG")) {
        log_open("/dev/null", NULL);
    }
    aio_get_current();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FuzzReq *reqs[MAX_REQS];
    unsigned nreqs = 0, expected = 0;
    FuzzExport *fe;
    MemFile *img;
    uint8_t flags;
    size_t pos = 1;

    if (size < 1) {
        return 0;
    }
    flags = data[0];
    memfile_yield = flags & F_YIELD;
    img = memfile_new(IMG_NAME);
    memfile_truncate(img, IMG_SIZE);
    fe = export_new(flags);
    replies_total = 0;
    if (!(flags & F_OWN_INIT)) {
        send_init(fe);
        replies_total = 0;
    }

    while (nreqs < MAX_REQS && size - pos >= sizeof(struct fuse_in_header)) {
        struct fuse_in_header h;        /* copied: the input is not aligned */
        size_t len;

        memcpy(&h, data + pos, sizeof(h));
        len = MIN(MAX(h.len, sizeof(h)), MIN(size - pos, FUSE_MAX_REQ_SIZE));
        FuzzReq *r = req_new(fe, data + pos, len);

        pos += len;
        if ((flags & F_HALT) && size - pos < sizeof(struct fuse_in_header)) {
            fe->exp.halted = 1;
        }
        reqs[nreqs++] = r;
        if (fuse_dispatch(&r->req)) {
            expected++;
        } else if (r->replies) {
            fprintf(stderr, "fuzz-fuse: op %u takes no answer but got one\n", h.opcode);
            abort();
        }
    }
    /* Requests that yielded finish on the event loop. */
    while (fe->q.in_flight > 0) {
        aio_poll(aio_get_current(), true);
    }
    if (replies_total != expected) {
        fprintf(stderr, "fuzz-fuse: %u answers to %u requests that take one\n", replies_total,
                expected);
        abort();
    }
    for (unsigned i = 0; i < nreqs; i++) {
        req_free(reqs[i]);
    }
    export_free(fe);
    memfile_clear();
    return 0;
}
