/* test-control.c - unit tests for the control protocol's request handling (cli/control.c),
 * through a detached dry-run server: requests in, replies out, without sockets, images or
 * mounts.  Every field of every request is validated, hostile JSON is refused cleanly, replies
 * come in order, and over-long lines are refused. */
#include "config.h"
#include "unit-helpers.h"
#include "cli/control.h"
#include "cli/json-util.h"

/* --- helpers -------------------------------------------------------------------- */

/* Run one stream through a fresh dry-run server; returns the reply lines. */
static GPtrArray *run_stream(const void *data, size_t len)
{
    ControlServer *srv = control_server_new_detached(true);
    g_autoptr(GString) out = control_server_process(srv, data, len, getuid());
    GPtrArray *lines = g_ptr_array_new_with_free_func(g_free);
    char **split;

    control_server_free(srv);
    g_assert_true(out->len == 0 || out->str[out->len - 1] == '\n');
    split = g_strsplit(out->str, "\n", -1);
    for (char **l = split; *l; l++) {
        if (**l) {
            g_ptr_array_add(lines, g_strdup(*l));
        }
    }
    g_strfreev(split);
    return lines;
}

/* Send one request line; returns the one reply, parsed. */
static json_t *request(const char *req)
{
    g_autofree char *line = g_strconcat(req, "\n", NULL);
    g_autoptr(GPtrArray) lines = run_stream(line, strlen(line));
    g_autoptr(GError) err = NULL;
    json_t *reply;

    g_assert_cmpuint(lines->len, ==, 1);
    reply = control_parse_json(lines->pdata[0], strlen(lines->pdata[0]), &err);
    g_assert_no_error(err);
    g_assert_nonnull(json_object_get(reply, "ok"));
    return reply;
}

/* req must be refused with EINVAL naming field (NULL: no field) in a message holding what. */
static void refused(const char *req, const char *field, const char *what)
{
    g_autoptr(json_t) r = request(req);
    const char *msg = json_string_value(json_object_get(r, "error"));

    if (g_test_verbose()) {
        g_test_message("%s -> %s", req, msg);
    }
    if (json_util_get_bool(r, "ok", true) || !msg || !strstr(msg, what) ||
        json_util_get_int(r, "errno", 0) != EINVAL ||
        g_strcmp0(json_string_value(json_object_get(r, "field")), field) != 0) {
        g_autofree char *text = json_dumps(r, JSON_COMPACT);
        uh_fail("%s: expected a refusal naming field %s with '%s', got %s", req,
                field ? field : "(none)", what, text);
    }
    if (field) {
        g_autofree char *quoted = g_strdup_printf("\"%s\"", field);
        if (!strstr(msg, quoted)) {
            uh_fail("%s: the message does not name \"%s\": %s", req, field, msg);
        }
    }
}

/* A valid mount request passes validation: the dry run refuses only then. */
static void passes_validation(const char *req)
{
    g_autoptr(json_t) r = request(req);
    const char *msg = json_string_value(json_object_get(r, "error"));

    if (!msg || !strstr(msg, "dry run")) {
        g_autofree char *text = json_dumps(r, JSON_COMPACT);
        uh_fail("%s: expected to pass validation, got %s", req, text);
    }
}

/* --- tests ---------------------------------------------------------------------- */

static void test_list(void)
{
    g_autoptr(json_t) r = request("{\"cmd\": \"list\"}");

    g_assert_true(json_util_get_bool(r, "ok", false));
    g_assert_cmpint(json_util_get_int(r, "pid", 0), ==, getpid());
    g_assert_true(json_is_array(json_object_get(r, "exports")));
}

static void test_valid_requests(void)
{
    g_autoptr(json_t) quit = request("{\"cmd\": \"quit\"}");
    g_autoptr(json_t) stats = request("{\"cmd\": \"stats\", \"mountpoint\": \"/mnt/x\"}");
    g_autoptr(json_t) unmount = request("{\"cmd\": \"unmount\", \"id\": \"e1\"}");

    g_assert_true(json_util_get_bool(quit, "ok", false));
    g_assert_true(json_util_get_bool(stats, "ok", false));
    g_assert_cmpint(json_util_get_int(unmount, "errno", 0), ==, ENOENT);

    passes_validation("{\"cmd\": \"mount\", \"image\": \"/i.img\", \"mountpoint\": \"/m\"}");
    passes_validation("{\"cmd\": \"mount\", \"image\": \"null:1M\", \"mountpoint\": \"/m\"}");
    passes_validation("{\"cmd\": \"mount\", \"image\": \"/i\", \"mountpoint\": \"/m\", "
                      "\"id\": \"a.b-c_d:1@x+y\", \"format\": \"qcow2\", \"options\": "
                      "\"l2-cache-size=1M\", \"read_only\": true, \"growable\": false, "
                      "\"allow_other\": false, \"cache\": \"none\", \"queues\": 64, "
                      "\"allow_remote_backing\": true}");
    passes_validation("{\"cmd\": \"mount\", \"image\": \"/i\", \"mountpoint\": \"/m\", "
                      "\"snapshot\": true, \"queues\": 1}");
    passes_validation("{\"cmd\": \"mount\", \"image\": \"/i\", \"mountpoint\": \"/m\", "
                      "\"snapshot_name\": \"s1\"}");
}

static void test_mount_fields(void)
{
    static const struct {
        const char *extra;
        const char *field;
        const char *what;
    } cases[] = {
        { "\"queues\": -1", "queues", "from 1 to 64, not -1" },
        { "\"queues\": 0", "queues", "from 1 to 64" },
        { "\"queues\": 65", "queues", "from 1 to 64" },
        { "\"queues\": 4294967297", "queues", "from 1 to 64" },
        { "\"queues\": 9223372036854775807", "queues", "from 1 to 64" },
        { "\"queues\": -9223372036854775808", "queues", "from 1 to 64" },
        { "\"queues\": 1e300", "queues", "expected an integer" },
        { "\"queues\": 2.0", "queues", "expected an integer" },
        { "\"queues\": \"4\"", "queues", "expected an integer, not a string" },
        { "\"queues\": null", "queues", "not null" },
        { "\"queues\": [4]", "queues", "not an array" },
        { "\"read_only\": 1", "read_only", "expected a boolean" },
        { "\"read_only\": \"true\"", "read_only", "expected a boolean" },
        { "\"growable\": null", "growable", "expected a boolean" },
        { "\"allow_other\": {}", "allow_other", "expected a boolean" },
        { "\"snapshot\": 0", "snapshot", "expected a boolean" },
        { "\"allow_remote_backing\": \"yes\"", "allow_remote_backing", "expected a boolean" },
        { "\"cache\": \"fast\"", "cache", "writeback, writethrough, none or directsync" },
        { "\"cache\": 1", "cache", "expected a string" },
        { "\"format\": \"vmdk\"", "format", "unknown format" },
        { "\"format\": \"\"", "format", "unknown format" },
        { "\"id\": \"\"", "id", "1 to 64 characters" },
        { "\"id\": \"a/b\"", "id", "only letters" },
        { "\"id\": \"a b\"", "id", "only letters" },
        { "\"id\": \"\\u00e9\"", "id", "only letters" },
        { "\"id\": \"0123456789012345678901234567890123456789012345678901234567890123x\"",
          "id", "longer than 64 bytes" },
        { "\"options\": \"=x\"", "options", "" },
        { "\"options\": 5", "options", "expected a string" },
        { "\"snapshot_name\": \"\"", "snapshot_name", "must not be empty" },
        { "\"snapshot\": true, \"read_only\": true", "snapshot", "cannot be combined" },
        { "\"snapshot\": true, \"snapshot_name\": \"x\"", "snapshot", "cannot be combined" },
        { "\"queue\": 4", "queue", "unknown field for command mount" },
        { "\"force\": true", "force", "unknown field for command mount" },
        { "\"\": 1", "", "unknown field" },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *req = g_strdup_printf("{\"cmd\": \"mount\", \"image\": \"/i.img\", "
                                               "\"mountpoint\": \"/m\", %s}", cases[i].extra);
        refused(req, cases[i].field, cases[i].what);
    }
}

static void test_mount_paths(void)
{
    g_autofree char *long_path = g_strnfill(5000, 'a');
    g_autofree char *req = NULL;

    refused("{\"cmd\": \"mount\", \"mountpoint\": \"/m\"}", "image", "required");
    refused("{\"cmd\": \"mount\", \"image\": \"/i\"}", "mountpoint", "required");
    refused("{\"cmd\": \"mount\", \"image\": \"i.img\", \"mountpoint\": \"/m\"}", "image",
            "absolute path or a protocol name");
    refused("{\"cmd\": \"mount\", \"image\": \"\", \"mountpoint\": \"/m\"}", "image",
            "absolute path");
    refused("{\"cmd\": \"mount\", \"image\": \"gopher:host:1\", \"mountpoint\": \"/m\"}", "image",
            "absolute path or a protocol name");
    refused("{\"cmd\": \"mount\", \"image\": \"/i\", \"mountpoint\": \"m\"}", "mountpoint",
            "absolute path");
    refused("{\"cmd\": \"mount\", \"image\": null, \"mountpoint\": \"/m\"}", "image",
            "expected a string");
    long_path[0] = '/';
    req = g_strdup_printf("{\"cmd\": \"mount\", \"image\": \"%s\", \"mountpoint\": \"/m\"}",
                          long_path);
    refused(req, "image", "longer than");
}

static void test_other_commands(void)
{
    refused("{\"cmd\": \"list\", \"verbose\": true}", "verbose", "unknown field for command list");
    refused("{\"cmd\": \"list\", \"mountpoint\": 1}", "mountpoint", "expected a string");
    refused("{\"cmd\": \"stats\", \"mountpoint\": \"rel\"}", "mountpoint", "absolute path");
    refused("{\"cmd\": \"unmount\"}", "mountpoint", "required");
    refused("{\"cmd\": \"unmount\", \"id\": \"a\", \"mountpoint\": \"/m\"}", "id", "not both");
    refused("{\"cmd\": \"unmount\", \"mountpoint\": \"/m\", \"force\": \"yes\"}", "force",
            "expected a boolean");
    refused("{\"cmd\": \"unmount\", \"id\": \"x y\"}", "id", "only letters");
    refused("{\"cmd\": \"quit\", \"now\": true}", "now", "unknown field for command quit");
    refused("{\"cmd\": \"format-disk\"}", "cmd", "unknown command");
    refused("{\"cmd\": 1}", "cmd", "expected a string");
    refused("{\"cmd\": null}", "cmd", "expected a string");
    refused("{}", "cmd", "required");
    refused("{\"CMD\": \"list\"}", "cmd", "required");
}

/* {"cmd": "list", "x": [[...]]} with levels arrays and objects in all; closed if closed. */
static char *nested_request(int levels, bool closed)
{
    GString *s = g_string_new("{\"cmd\": \"list\", \"x\": ");

    for (int i = 1; i < levels; i++) {
        g_string_append_c(s, '[');
    }
    for (int i = 1; closed && i < levels; i++) {
        g_string_append_c(s, ']');
    }
    if (closed) {
        g_string_append_c(s, '}');
    }
    return g_string_free(s, false);
}

/* Hostile JSON is refused with a reply, never a crash or an allocation it names. */
static void test_hostile_json(void)
{
    g_autofree char *digits = NULL;
    g_autofree char *req = NULL;

    refused("[\"cmd\", \"list\"]", NULL, "a request is a JSON object");
    refused("\"list\"", NULL, "a request is a JSON object");
    refused("{\"cmd\": \"list\"", NULL, "invalid JSON");
    refused("{\"cmd\": \"list\"} {}", NULL, "invalid JSON");
    refused("{\"cmd\": \"li\\u0000st\"}", NULL, "\\u0000");
    refused("{\"cmd\": \"list\", \"cmd\": \"quit\"}", NULL, "duplicate key");
    refused("{\"cmd\": \"list\", \"mountpoint\": \"/\xff\"}", NULL, "invalid UTF-8");
    refused("{\"cmd\": \"list\", \"mountpoint\": \"/\xc0\xaf\"}", NULL, "invalid UTF-8");
    refused("{\"cmd\": \"mount\", \"image\": \"/i\", \"mountpoint\": \"/m\", \"queues\": 1e400}",
            NULL, "out of range");

    refused("{\"cmd\": \"list\", \"a\\u0000b\": 1}", NULL, "\\u0000");
    refused("{\"cmd\": \"list\", \"x\": {\"a\": 1, \"a\": 2}}", NULL, "duplicate key");
    refused("{\"cmd\": \"list\", \"\xff\": 1}", NULL, "invalid UTF-8");
    refused("{\"cmd\": \"list\", \"mountpoint\": \"/\\ud800\"}", NULL, "invalid JSON");
    refused("{\"cmd\": \"list\"} x", NULL, "invalid JSON");
    refused("", NULL, "invalid JSON");

    /* Integers outside int64 and numbers beyond a double are refused by the parser. */
    refused("{\"cmd\": \"mount\", \"image\": \"/i\", \"mountpoint\": \"/m\", "
            "\"queues\": 99999999999999999999999}", NULL, "out of range");
    refused("{\"cmd\": \"mount\", \"image\": \"/i\", \"mountpoint\": \"/m\", "
            "\"queues\": 9223372036854775808}", NULL, "integers must fit in 64 bits");
    refused("{\"cmd\": \"mount\", \"image\": \"/i\", \"mountpoint\": \"/m\", "
            "\"queues\": -9223372036854775809}", NULL, "out of range");

    /* 64 levels parse (and "x" is then refused as unknown); 65 do not, nor do 3000 (past
     * jansson's own limit), closed or not. */
    for (int levels = 60; levels <= 64; levels++) {
        g_autofree char *ok = nested_request(levels, true);
        refused(ok, "x", "unknown field for command list");
    }
    for (int levels = 65; levels <= 70; levels++) {
        g_autofree char *deep = nested_request(levels, true);
        refused(deep, NULL, "nesting deeper than 64 levels");
    }
    {
        g_autofree char *deeper = nested_request(3000, true);
        g_autofree char *open = nested_request(3000, false);
        refused(deeper, NULL, "nesting deeper than 64 levels");
        refused(open, NULL, "nesting deeper than 64 levels");
    }

    digits = g_strnfill(60000, '9');
    req = g_strdup_printf("{\"cmd\": \"mount\", \"image\": \"/i\", \"mountpoint\": \"/m\", "
                          "\"queues\": %s}", digits);
    refused(req, NULL, "out of range");
}

/* A NUL byte in a line is refused; the next line is still served. */
static void test_nul_bytes(void)
{
    static const char stream[] = "{\"cmd\": \"list\"}\0junk\n{\"cmd\": \"li\0st\"}\n"
                                 "{\"cmd\": \"list\"}\n";
    g_autoptr(GPtrArray) lines = run_stream(stream, sizeof(stream) - 1);

    g_assert_cmpuint(lines->len, ==, 3);
    g_assert_nonnull(strstr(lines->pdata[0], "\"ok\":false"));
    g_assert_nonnull(strstr(lines->pdata[1], "\"ok\":false"));
    g_assert_nonnull(strstr(lines->pdata[2], "\"ok\":true"));
}

/* Replies come one per request, in order, whatever the mix. */
static void test_order(void)
{
    static const char stream[] = "{\"cmd\": \"list\"}\n"
                                 "garbage\n"
                                 "\n"
                                 "{\"cmd\": \"unmount\", \"id\": \"nope\"}\r\n"
                                 "{\"cmd\": \"quit\"}\n"
                                 "{\"cmd\": \"list\"}";            /* no newline: dropped */
    g_autoptr(GPtrArray) lines = run_stream(stream, sizeof(stream) - 1);

    g_assert_cmpuint(lines->len, ==, 5);
    g_assert_nonnull(strstr(lines->pdata[0], "\"exports\":[]"));
    g_assert_nonnull(strstr(lines->pdata[1], "invalid JSON"));
    g_assert_nonnull(strstr(lines->pdata[2], "invalid JSON"));
    g_assert_nonnull(strstr(lines->pdata[3], "no such export"));
    g_assert_nonnull(strstr(lines->pdata[4], "\"ok\":true"));
}

/* A line longer than 64 KiB gets one error and ends the connection. */
static void test_long_line(void)
{
    GString *s = g_string_new("{\"cmd\": \"list\"}\n{\"cmd\": \"list\", \"x\": \"");
    g_autoptr(GPtrArray) lines = NULL;

    for (int i = 0; i < 70000; i++) {
        g_string_append_c(s, 'a');
    }
    g_string_append(s, "\"}\n{\"cmd\": \"list\"}\n");
    lines = run_stream(s->str, s->len);
    g_string_free(s, true);
    g_assert_cmpuint(lines->len, ==, 2);
    g_assert_nonnull(strstr(lines->pdata[0], "\"ok\":true"));
    g_assert_nonnull(strstr(lines->pdata[1], "longer than 64 KiB"));
}

/* Many requests in one stream: every one answered (the replies are taken as they come). */
static void test_many(void)
{
    GString *s = g_string_new(NULL);
    g_autoptr(GPtrArray) lines = NULL;

    for (int i = 0; i < 20000; i++) {
        g_string_append(s, "{\"cmd\": \"list\"}\n");
    }
    lines = run_stream(s->str, s->len);
    g_string_free(s, true);
    g_assert_cmpuint(lines->len, ==, 20000);
}

static void test_export_id(void)
{
    g_autoptr(GError) err = NULL;

    g_assert_true(control_check_export_id("export0", NULL));
    g_assert_true(control_check_export_id("a.b_c-d:e@f+g", NULL));
    g_assert_false(control_check_export_id("", &err));
    g_clear_error(&err);
    g_assert_false(control_check_export_id("a\nb", &err));
    g_assert_nonnull(strstr(err->message, "only letters"));
}

static void test_parse_users(void)
{
    g_autoptr(GArray) uids = g_array_new(false, false, sizeof(uid_t));
    g_autoptr(GError) err = NULL;

    g_assert_true(control_parse_users("root,65534,0", uids, NULL));
    g_assert_cmpuint(uids->len, ==, 3);
    g_assert_cmpuint(g_array_index(uids, uid_t, 0), ==, 0);
    g_assert_cmpuint(g_array_index(uids, uid_t, 1), ==, 65534);
    g_assert_false(control_parse_users("no-such-user-here", uids, &err));
    g_assert_nonnull(strstr(err->message, "unknown user 'no-such-user-here'"));
    g_clear_error(&err);
    g_assert_false(control_parse_users("root,", uids, &err));
    g_clear_error(&err);
    g_assert_false(control_parse_users("99999999999", uids, &err));
    g_assert_nonnull(strstr(err->message, "invalid uid"));
}

/* A client of a uid the daemon does not serve gets nothing done. */
static void test_other_uid(void)
{
    ControlServer *srv = control_server_new_detached(true);
    static const char req[] = "{\"cmd\": \"quit\"}\n";
    g_autoptr(GString) out = control_server_process(srv, req, sizeof(req) - 1, 4242);

    g_assert_nonnull(strstr(out->str, "permission denied"));
    g_assert_false(control_server_should_exit(srv));
    control_server_free(srv);
}

int main(int argc, char **argv)
{
    uh_test_init(&argc, &argv);
    uh_test_add("/control/list", test_list);
    uh_test_add("/control/valid-requests", test_valid_requests);
    uh_test_add("/control/mount-fields", test_mount_fields);
    uh_test_add("/control/mount-paths", test_mount_paths);
    uh_test_add("/control/other-commands", test_other_commands);
    uh_test_add("/control/hostile-json", test_hostile_json);
    uh_test_add("/control/nul-bytes", test_nul_bytes);
    uh_test_add("/control/order", test_order);
    uh_test_add("/control/long-line", test_long_line);
    uh_test_add("/control/many", test_many);
    uh_test_add("/control/export-id", test_export_id);
    uh_test_add("/control/parse-users", test_parse_users);
    uh_test_add("/control/other-uid", test_other_uid);
    return uh_test_run();
}
