/* test-fuse-protocol.c - unit tests for the FUSE protocol (fuse/protocol.c) without a mount: a
 * fake transport hands fuse_dispatch() requests built as the kernel builds them and records the
 * one reply each gets.  Covers INIT negotiation, the requests refused before INIT, unknown ops,
 * short arguments, ops without a reply, the byte-stream split of argument and payload, READ
 * into the transport's buffer, WRITE from it, opens counted (and an interrupted open not). */
#include "config.h"
#include "unit-helpers.h"
#include "fuse/fuse-int.h"
#include "block/backend.h"

static char *test_dir;

#define IMG_SIZE (1024 * 1024)

/* --- the fake transport ---------------------------------------------------------------------- */

typedef struct TestReq {
    FuseReq req;
    struct fuse_in_header in;
    uint8_t arg[256 + 8192];            /* argument, then payload, as /dev/fuse delivers them */
    uint8_t *out_buf;
    /* the reply */
    bool replied;
    unsigned replies;
    int error;
    uint8_t out[FUSE_MAX_IO];
    size_t out_len;
    int reply_ret;                      /* what the transport's reply returns (-ENOENT: gone) */
} TestReq;

static int test_reply(FuseReq *req, int error, const void *out_arg, size_t out_arg_len,
                      size_t out_len)
{
    TestReq *t = (TestReq *)req;

    g_assert(!(out_arg_len && out_len));
    t->replies++;
    t->replied = true;
    t->error = error;
    if (out_arg_len) {
        g_assert_cmpuint(out_arg_len, <=, sizeof(t->out));
        memcpy(t->out, out_arg, out_arg_len);
        t->out_len = out_arg_len;
    } else {
        g_assert_cmpuint(out_len, <=, req->out_cap);
        memcpy(t->out, req->out_buf, out_len);
        t->out_len = out_len;
    }
    return t->reply_ret;
}

static const FuseTransportOps test_transport = {
    .name = "test",
    .reply = test_reply,
};

typedef struct TestExport {
    FuseExport exp;                     /* first: the protocol's view */
    FuseQueue q;
} TestExport;

static TestExport *test_export_new(const char *image, const char *format, bool read_only,
                                   bool growable)
{
    TestExport *te = g_new0(TestExport, 1);
    FuseExport *exp = &te->exp;
    g_autoptr(GError) err = NULL;

    exp->common.id = g_strdup("test");
    exp->common.refcnt = 1;
    exp->common.read_only = read_only;
    exp->common.growable = growable;
    exp->common.blk = blk_new_open(image, format, NULL, read_only ? 0 : BDRV_O_RDWR, &err);
    g_assert_no_error(err);
    exp->main_ctx = aio_get_current();
    exp->queues = &te->q;
    exp->nr_queues = 1;
    exp->transport = &test_transport;
    te->q.exp = exp;
    te->q.ctx = aio_get_current();
    te->q.fd = -1;
    fuse_protocol_init(exp);
    return te;
}

static void test_export_free(TestExport *te)
{
    g_assert_cmpuint(te->q.in_flight, ==, 0);
    fuse_protocol_cleanup(&te->exp);
    blk_unref(te->exp.common.blk);
    g_free(te->exp.common.id);
    g_free(te);
}

/* A request: opcode, its argument (arg_len bytes), then payload. */
static TestReq *req_new(TestExport *te, uint32_t opcode, const void *arg, size_t arg_len,
                        const void *payload, size_t payload_len)
{
    static uint64_t unique;
    TestReq *t = g_new0(TestReq, 1);

    g_assert_cmpuint(arg_len + payload_len, <=, sizeof(t->arg));
    t->in.opcode = opcode;
    t->in.unique = ++unique;
    t->in.nodeid = FUSE_ROOT_ID;
    t->in.len = sizeof(t->in) + arg_len + payload_len;
    memcpy(t->arg, arg, arg_len);
    if (payload_len) {
        memcpy(t->arg + arg_len, payload, payload_len);
    }
    t->out_buf = blk_blockalign(FUSE_MAX_IO);
    t->req.q = &te->q;
    t->req.ops = &test_transport;
    t->req.in = &t->in;
    t->req.arg = t->arg;
    t->req.arg_len = arg_len + payload_len;
    t->req.out_buf = t->out_buf;
    t->req.out_cap = FUSE_MAX_IO;
    return t;
}

static void req_free(TestReq *t)
{
    blk_vfree(t->out_buf);
    g_free(t);
}

/* Dispatch t and wait for its reply (coroutines may yield to the event loop).  Returns
 * fuse_dispatch's result; a request that takes a reply got exactly one. */
static bool run(TestReq *t)
{
    bool wants_reply = fuse_dispatch(&t->req);

    if (wants_reply) {
        uh_poll_until(&t->replied);
        g_assert_cmpuint(t->replies, ==, 1);
        g_assert_cmpuint(t->req.q->in_flight, ==, 0);
    } else {
        g_assert(!t->replied);
    }
    return wants_reply;
}

/* Run a request and return its error (0 or -errno); the reply is in t. */
static int run_req(TestReq *t)
{
    g_assert(run(t));
    return t->error;
}

static struct blkfuse_init_out do_init(TestExport *te, uint32_t minor, uint64_t offered,
                                       int *error)
{
    struct fuse_init_in in = {
        .major = FUSE_KERNEL_VERSION, .minor = minor, .max_readahead = 128 * 1024,
        .flags = (uint32_t)offered, .flags2 = (uint32_t)(offered >> 32),
    };
    struct blkfuse_init_out out = { 0 };
    TestReq *t = req_new(te, FUSE_INIT, &in, sizeof(in), NULL, 0);

    *error = run_req(t);
    if (*error == 0) {
        g_assert_cmpuint(t->out_len, ==, sizeof(out));
        memcpy(&out, t->out, sizeof(out));
    }
    req_free(t);
    return out;
}

static TestExport *ready_export(const char *image, bool read_only, bool growable)
{
    TestExport *te = test_export_new(image, NULL, read_only, growable);
    int error;

    do_init(te, 45, ~0ULL, &error);
    g_assert_cmpint(error, ==, 0);
    return te;
}

static char *new_image(const char *name, uint8_t **contents)
{
    char *path = g_build_filename(test_dir, name, NULL);
    uint8_t *data = uh_create_pattern_file(path, IMG_SIZE, g_str_hash(name));

    if (contents) {
        *contents = data;
    } else {
        g_free(data);
    }
    return path;
}

/* --- INIT ------------------------------------------------------------------------------------ */

static void test_init_negotiation(void)
{
    TestExport *te = test_export_new("null:1M", NULL, false, false);
    uint64_t offered = ~0ULL;
    struct blkfuse_init_out out;
    uint64_t agreed;
    int error;

    /* Nothing but INIT before INIT. */
    TestReq *t = req_new(te, FUSE_GETATTR, &(struct fuse_getattr_in){ 0 },
                         sizeof(struct fuse_getattr_in), NULL, 0);
    g_assert_cmpint(run_req(t), ==, -EIO);
    req_free(t);

    out = do_init(te, 45, offered, &error);
    g_assert_cmpint(error, ==, 0);
    agreed = out.flags | (uint64_t)out.flags2 << 32;
    g_assert_cmpuint(out.major, ==, FUSE_KERNEL_VERSION);
    g_assert_cmpuint(out.minor, ==, FUSE_KERNEL_MINOR_VERSION);
    g_assert_cmpuint(out.max_write, ==, FUSE_MAX_IO);
    g_assert_cmpuint(out.max_pages, ==, FUSE_MAX_IO / 4096);
    g_assert_cmpuint(out.max_readahead, ==, 128 * 1024);    /* never more than offered */
    g_assert_cmpuint(out.time_gran, ==, 1);
    g_assert_cmpuint(agreed & FUSE_ASYNC_READ, !=, 0);
    g_assert_cmpuint(agreed & FUSE_ASYNC_DIO, !=, 0);
    g_assert_cmpuint(agreed & FUSE_MAX_PAGES, !=, 0);
    g_assert_cmpuint(agreed & FUSE_INIT_EXT, !=, 0);
    g_assert_cmpuint(agreed & FUSE_DIRECT_IO_ALLOW_MMAP, !=, 0);   /* MAP_SHARED of O_DIRECT */
    /* Never asked: O_TRUNC must come as a SETATTR, writes must not be cached. */
    g_assert_cmpuint(agreed & FUSE_ATOMIC_O_TRUNC, ==, 0);
    g_assert_cmpuint(agreed & FUSE_WRITEBACK_CACHE, ==, 0);
    g_assert_cmpuint(agreed & FUSE_POSIX_LOCKS, ==, 0);
    /* Only when a part of the export asks for them. */
    g_assert_cmpuint(agreed & (FUSE_PASSTHROUGH | FUSE_OVER_IO_URING), ==, 0);
    g_assert_cmpuint(te->exp.init_flags, ==, agreed);
    g_assert_cmpuint(te->exp.kernel_flags, ==, offered);
    g_assert(te->exp.got_init);

    /* A second INIT is a protocol error. */
    do_init(te, 45, offered, &error);
    g_assert_cmpint(error, ==, -EPROTO);
    test_export_free(te);
}

static void test_init_wants(void)
{
    TestExport *te = test_export_new("null:1M", NULL, false, false);
    struct blkfuse_init_out out;
    int error;

    /* Asked for and offered: agreed, with the stack depth passthrough needs. */
    te->exp.init_want = FUSE_PASSTHROUGH | FUSE_OVER_IO_URING;
    te->exp.max_stack_depth = 1;
    out = do_init(te, 45, FUSE_INIT_EXT | FUSE_PASSTHROUGH | FUSE_ASYNC_READ, &error);
    g_assert_cmpint(error, ==, 0);
    g_assert_cmpuint(out.flags2, ==, (uint32_t)(FUSE_PASSTHROUGH >> 32));
    g_assert_cmpuint(out.flags, ==, FUSE_INIT_EXT | FUSE_ASYNC_READ);
    g_assert_cmpuint(out.max_stack_depth, ==, 1);
    g_assert_cmpuint(te->exp.init_flags & FUSE_OVER_IO_URING, ==, 0);     /* not offered */
    test_export_free(te);

    /* Without FUSE_INIT_EXT the upper half is not there. */
    te = test_export_new("null:1M", NULL, false, false);
    te->exp.init_want = FUSE_PASSTHROUGH;
    out = do_init(te, 45, FUSE_PASSTHROUGH | FUSE_DIRECT_IO_ALLOW_MMAP | FUSE_ASYNC_READ,
                  &error);
    g_assert_cmpint(error, ==, 0);
    g_assert_cmpuint(out.flags2, ==, 0);
    g_assert_cmpuint(out.max_stack_depth, ==, 0);
    test_export_free(te);
}

static void test_init_old_kernel(void)
{
    TestExport *te = test_export_new("null:1M", NULL, false, false);
    int error;

    do_init(te, 27, ~0ULL, &error);
    g_assert_cmpint(error, ==, -EPROTO);
    g_assert(!te->exp.got_init);
    test_export_free(te);
}

static void test_init_newer_major(void)
{
    TestExport *te = test_export_new("null:1M", NULL, false, false);
    struct fuse_init_in in = { .major = FUSE_KERNEL_VERSION + 1, .minor = 0 };
    TestReq *t = req_new(te, FUSE_INIT, &in, sizeof(in), NULL, 0);

    /* Answered with our major, no error: the kernel then sends INIT again. */
    g_assert_cmpint(run_req(t), ==, 0);
    g_assert_cmpuint(((struct blkfuse_init_out *)t->out)->major, ==, FUSE_KERNEL_VERSION);
    g_assert(!te->exp.got_init);
    req_free(t);
    test_export_free(te);
}

/* --- dispatch -------------------------------------------------------------------------------- */

static void test_unknown_and_short(void)
{
    TestExport *te = ready_export("null:1M", false, false);
    struct fuse_read_in rd = { .size = 4096 };
    TestReq *t;

    t = req_new(te, FUSE_MKDIR, &(struct fuse_mkdir_in){ 0 }, sizeof(struct fuse_mkdir_in),
                "d", 2);
    g_assert_cmpint(run_req(t), ==, -ENOSYS);
    req_free(t);
    t = req_new(te, 4242, NULL, 0, NULL, 0);
    g_assert_cmpint(run_req(t), ==, -ENOSYS);
    req_free(t);
    /* A READ whose argument is cut short. */
    t = req_new(te, FUSE_READ, &rd, 8, NULL, 0);
    g_assert_cmpint(run_req(t), ==, -EINVAL);
    req_free(t);
    /* A WRITE whose data is shorter than it says. */
    struct fuse_write_in wr = { .offset = 0, .size = 4096 };
    t = req_new(te, FUSE_WRITE, &wr, sizeof(wr), "abc", 3);
    g_assert_cmpint(run_req(t), ==, -EINVAL);
    req_free(t);
    test_export_free(te);
}

static void test_no_reply_ops(void)
{
    TestExport *te = ready_export("null:1M", false, false);
    struct fuse_forget_one one = { .nodeid = FUSE_ROOT_ID, .nlookup = 1 };
    TestReq *t;

    t = req_new(te, FUSE_FORGET, &(struct fuse_forget_in){ 1 }, sizeof(struct fuse_forget_in),
                NULL, 0);
    g_assert(!run(t));
    req_free(t);
    t = req_new(te, FUSE_BATCH_FORGET, &(struct fuse_batch_forget_in){ 1 },
                sizeof(struct fuse_batch_forget_in), &one, sizeof(one));
    g_assert(!run(t));
    req_free(t);
    t = req_new(te, FUSE_INTERRUPT, &(struct fuse_interrupt_in){ 7 },
                sizeof(struct fuse_interrupt_in), NULL, 0);
    g_assert(!run(t));
    req_free(t);
    test_export_free(te);
}

static void test_lookup_getattr_statfs(void)
{
    TestExport *te = ready_export("null:64M", false, false);
    struct fuse_attr_out *attr;
    struct fuse_statfs_out *st;
    TestReq *t;

    t = req_new(te, FUSE_LOOKUP, NULL, 0, "x", 2);
    g_assert_cmpint(run_req(t), ==, -ENOTDIR);
    req_free(t);

    t = req_new(te, FUSE_GETATTR, &(struct fuse_getattr_in){ 0 },
                sizeof(struct fuse_getattr_in), NULL, 0);
    g_assert_cmpint(run_req(t), ==, 0);
    g_assert_cmpuint(t->out_len, ==, sizeof(*attr));
    attr = (void *)t->out;
    g_assert_cmpuint(attr->attr.ino, ==, FUSE_ROOT_ID);
    g_assert_cmpuint(attr->attr.size, ==, 64 << 20);
    g_assert_cmpuint(attr->attr.mode, ==, S_IFREG | 0600);
    g_assert_cmpuint(attr->attr.uid, ==, getuid());
    g_assert_cmpuint(attr->attr_valid, ==, 1);
    req_free(t);

    t = req_new(te, FUSE_STATFS, NULL, 0, NULL, 0);
    g_assert_cmpint(run_req(t), ==, 0);
    st = (void *)t->out;
    g_assert_cmpuint(st->st.blocks, ==, (64 << 20) / 4096);
    g_assert_cmpuint(st->st.bsize, ==, 4096);
    req_free(t);
    test_export_free(te);
}

/* --- I/O ------------------------------------------------------------------------------------- */

static void test_read_write(void)
{
    uint8_t *contents;
    g_autofree char *path = new_image("rw.img", &contents);
    TestExport *te = ready_export(path, false, false);
    uint8_t data[8192];
    TestReq *t;

    /* READ lands in the transport's buffer and is answered from it. */
    t = req_new(te, FUSE_READ, &(struct fuse_read_in){ .offset = 12345, .size = 5000 },
                sizeof(struct fuse_read_in), NULL, 0);
    g_assert_cmpint(run_req(t), ==, 0);
    g_assert_cmpuint(t->out_len, ==, 5000);
    g_assert(memcmp(t->out, contents + 12345, 5000) == 0);
    req_free(t);

    /* Short at the end of file, empty past it. */
    t = req_new(te, FUSE_READ, &(struct fuse_read_in){ .offset = IMG_SIZE - 100, .size = 4096 },
                sizeof(struct fuse_read_in), NULL, 0);
    g_assert_cmpint(run_req(t), ==, 0);
    g_assert_cmpuint(t->out_len, ==, 100);
    req_free(t);
    t = req_new(te, FUSE_READ, &(struct fuse_read_in){ .offset = IMG_SIZE, .size = 4096 },
                sizeof(struct fuse_read_in), NULL, 0);
    g_assert_cmpint(run_req(t), ==, 0);
    g_assert_cmpuint(t->out_len, ==, 0);
    req_free(t);

    /* WRITE takes its data from the payload after the argument. */
    uh_fill_pattern(data, sizeof(data), 0, 99);
    t = req_new(te, FUSE_WRITE, &(struct fuse_write_in){ .offset = 4096, .size = sizeof(data) },
                sizeof(struct fuse_write_in), data, sizeof(data));
    g_assert_cmpint(run_req(t), ==, 0);
    g_assert_cmpuint(((struct fuse_write_out *)t->out)->size, ==, sizeof(data));
    req_free(t);
    t = req_new(te, FUSE_READ, &(struct fuse_read_in){ .offset = 4096, .size = sizeof(data) },
                sizeof(struct fuse_read_in), NULL, 0);
    g_assert_cmpint(run_req(t), ==, 0);
    g_assert(memcmp(t->out, data, sizeof(data)) == 0);
    req_free(t);

    /* Straddling the end: what fits, a short count; past it: ENOSPC. */
    t = req_new(te, FUSE_WRITE,
                &(struct fuse_write_in){ .offset = IMG_SIZE - 1000, .size = sizeof(data) },
                sizeof(struct fuse_write_in), data, sizeof(data));
    g_assert_cmpint(run_req(t), ==, 0);
    g_assert_cmpuint(((struct fuse_write_out *)t->out)->size, ==, 1000);
    req_free(t);
    t = req_new(te, FUSE_WRITE, &(struct fuse_write_in){ .offset = IMG_SIZE, .size = 10 },
                sizeof(struct fuse_write_in), data, 10);
    g_assert_cmpint(run_req(t), ==, -ENOSPC);
    req_free(t);

    /* FSYNC and FLUSH answer once the data is flushed. */
    t = req_new(te, FUSE_FSYNC, &(struct fuse_fsync_in){ 0 }, sizeof(struct fuse_fsync_in),
                NULL, 0);
    g_assert_cmpint(run_req(t), ==, 0);
    req_free(t);

    /* After a forced removal everything fails with EIO. */
    te->exp.halted = 1;
    t = req_new(te, FUSE_READ, &(struct fuse_read_in){ .offset = 0, .size = 4096 },
                sizeof(struct fuse_read_in), NULL, 0);
    g_assert_cmpint(run_req(t), ==, -EIO);
    req_free(t);
    test_export_free(te);
    g_free(contents);
}

static void test_read_only(void)
{
    g_autofree char *path = new_image("ro.img", NULL);
    TestExport *te = ready_export(path, true, false);
    TestReq *t;

    t = req_new(te, FUSE_OPEN, &(struct fuse_open_in){ .flags = O_RDWR },
                sizeof(struct fuse_open_in), NULL, 0);
    g_assert_cmpint(run_req(t), ==, -EROFS);
    req_free(t);
    t = req_new(te, FUSE_WRITE, &(struct fuse_write_in){ .offset = 0, .size = 3 },
                sizeof(struct fuse_write_in), "abc", 3);
    g_assert_cmpint(run_req(t), ==, -EROFS);
    req_free(t);
    t = req_new(te, FUSE_FALLOCATE, &(struct fuse_fallocate_in){ .offset = 0, .length = 4096 },
                sizeof(struct fuse_fallocate_in), NULL, 0);
    g_assert_cmpint(run_req(t), ==, -EROFS);
    req_free(t);
    t = req_new(te, FUSE_SETATTR, &(struct fuse_setattr_in){ .valid = FATTR_SIZE, .size = 0 },
                sizeof(struct fuse_setattr_in), NULL, 0);
    g_assert_cmpint(run_req(t), ==, -EROFS);
    req_free(t);
    test_export_free(te);
}

static void test_open_release(void)
{
    TestExport *te = ready_export("null:1M", false, false);
    struct blkfuse_open_out *out;
    TestReq *t;

    t = req_new(te, FUSE_OPEN, &(struct fuse_open_in){ .flags = O_RDWR | O_DIRECT },
                sizeof(struct fuse_open_in), NULL, 0);
    g_assert_cmpint(run_req(t), ==, 0);
    out = (void *)t->out;
    g_assert_cmpuint(out->open_flags, ==, FOPEN_KEEP_CACHE | FOPEN_DIRECT_IO);
    g_assert_cmpuint(te->exp.open_count, ==, 1);
    req_free(t);

    t = req_new(te, FUSE_OPEN, &(struct fuse_open_in){ .flags = O_RDONLY },
                sizeof(struct fuse_open_in), NULL, 0);
    g_assert_cmpint(run_req(t), ==, 0);
    g_assert_cmpuint(((struct blkfuse_open_out *)t->out)->open_flags, ==, FOPEN_KEEP_CACHE);
    g_assert_cmpuint(te->exp.open_count, ==, 2);
    req_free(t);

    /* The kernel no longer waits for this OPEN (interrupted): no RELEASE will come for it. */
    t = req_new(te, FUSE_OPEN, &(struct fuse_open_in){ .flags = O_RDONLY },
                sizeof(struct fuse_open_in), NULL, 0);
    t->reply_ret = -ENOENT;
    g_assert_cmpint(run_req(t), ==, 0);
    g_assert_cmpuint(te->exp.open_count, ==, 2);
    req_free(t);

    for (int i = 0; i < 2; i++) {
        t = req_new(te, FUSE_RELEASE, &(struct fuse_release_in){ 0 },
                    sizeof(struct fuse_release_in), NULL, 0);
        g_assert_cmpint(run_req(t), ==, 0);
        req_free(t);
    }
    g_assert_cmpuint(te->exp.open_count, ==, 0);
    test_export_free(te);
}

static void test_setattr_lseek(void)
{
    g_autofree char *path = g_build_filename(test_dir, "sparse.img", NULL);
    TestExport *te;
    TestReq *t;
    int fd;

    /* 1 MiB: data at [256k, 260k), the rest a hole. */
    fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, IMG_SIZE), ==, 0);
    g_assert_cmpint(pwrite(fd, "data", 4, 256 * 1024), ==, 4);
    close(fd);
    te = ready_export(path, false, false);

    t = req_new(te, FUSE_LSEEK, &(struct fuse_lseek_in){ .offset = 0, .whence = SEEK_DATA },
                sizeof(struct fuse_lseek_in), NULL, 0);
    g_assert_cmpint(run_req(t), ==, 0);
    g_assert_cmpuint(((struct fuse_lseek_out *)t->out)->offset, ==, 256 * 1024);
    req_free(t);
    t = req_new(te, FUSE_LSEEK,
                &(struct fuse_lseek_in){ .offset = 256 * 1024, .whence = SEEK_HOLE },
                sizeof(struct fuse_lseek_in), NULL, 0);
    g_assert_cmpint(run_req(t), ==, 0);
    g_assert_cmpuint(((struct fuse_lseek_out *)t->out)->offset, >, 256 * 1024);
    req_free(t);
    t = req_new(te, FUSE_LSEEK, &(struct fuse_lseek_in){ .offset = 0, .whence = SEEK_END },
                sizeof(struct fuse_lseek_in), NULL, 0);
    g_assert_cmpint(run_req(t), ==, -EINVAL);
    req_free(t);

    /* SETATTR: size and mode; the reply carries the new attributes. */
    t = req_new(te, FUSE_SETATTR,
                &(struct fuse_setattr_in){ .valid = FATTR_SIZE | FATTR_MODE,
                                           .size = 2 * IMG_SIZE, .mode = 0644 },
                sizeof(struct fuse_setattr_in), NULL, 0);
    g_assert_cmpint(run_req(t), ==, 0);
    g_assert_cmpuint(((struct fuse_attr_out *)t->out)->attr.size, ==, 2 * IMG_SIZE);
    g_assert_cmpuint(((struct fuse_attr_out *)t->out)->attr.mode, ==, S_IFREG | 0644);
    req_free(t);
    g_assert_cmpint(uh_file_size(path), ==, 2 * IMG_SIZE);

    /* FALLOCATE: punching a hole needs KEEP_SIZE, as on a local file. */
    t = req_new(te, FUSE_FALLOCATE,
                &(struct fuse_fallocate_in){ .offset = 0, .length = 4096,
                                             .mode = FALLOC_FL_PUNCH_HOLE },
                sizeof(struct fuse_fallocate_in), NULL, 0);
    g_assert_cmpint(run_req(t), ==, -EOPNOTSUPP);
    req_free(t);
    test_export_free(te);
}

int main(int argc, char **argv)
{
    int ret;

    uh_test_init(&argc, &argv);
    test_dir = uh_tmpdir_new();
    aio_get_current();
    uh_test_add("/fuse-protocol/init/negotiation", test_init_negotiation);
    uh_test_add("/fuse-protocol/init/wants", test_init_wants);
    uh_test_add("/fuse-protocol/init/old-kernel", test_init_old_kernel);
    uh_test_add("/fuse-protocol/init/newer-major", test_init_newer_major);
    uh_test_add("/fuse-protocol/dispatch/unknown-and-short", test_unknown_and_short);
    uh_test_add("/fuse-protocol/dispatch/no-reply", test_no_reply_ops);
    uh_test_add("/fuse-protocol/attr/lookup-getattr-statfs", test_lookup_getattr_statfs);
    uh_test_add("/fuse-protocol/io/read-write", test_read_write);
    uh_test_add("/fuse-protocol/io/read-only", test_read_only);
    uh_test_add("/fuse-protocol/open-release", test_open_release);
    uh_test_add("/fuse-protocol/setattr-lseek-fallocate", test_setattr_lseek);
    ret = uh_test_run();
    uh_tmpdir_remove(test_dir);
    g_free(test_dir);
    return ret;
}
