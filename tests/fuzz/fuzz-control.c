/* fuzz-control.c - libFuzzer harness for the control protocol: the input is the byte stream
 * one client sends on a connection; a dry-run server (cli/control.c) processes it without
 * sockets, images or mounts.  Checks: every reply is one line holding a JSON object with a
 * boolean "ok" (and an "error" string when false); there is never more than one reply per line
 * received; nothing crashes, leaks, or trips a sanitizer. */
#include "config.h"
#include "fuzz.h"
#include "cli/control.h"
#include "cli/json-util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void check_reply(const char *line, size_t len)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(json_t) r = control_parse_json(line, len, &err);
    json_t *ok;

    if (!r || !json_is_object(r)) {
        fprintf(stderr, "fuzz-control: reply is not a JSON object: %.*s (%s)\n", (int)len, line,
                err ? err->message : "not an object");
        abort();
    }
    ok = json_object_get(r, "ok");
    if (!json_is_boolean(ok) ||
        (!json_is_true(ok) && !json_string_value(json_object_get(r, "error")))) {
        fprintf(stderr, "fuzz-control: reply without \"ok\" or \"error\": %.*s\n", (int)len,
                line);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ControlServer *srv = control_server_new_detached(true);
    GString *out = control_server_process(srv, data, size, getuid());
    size_t lines_in = 0, replies = 0;
    const char *p = out->str, *end = out->str + out->len;

    for (size_t i = 0; i < size; i++) {
        lines_in += data[i] == '\n';
    }
    if (out->len && out->str[out->len - 1] != '\n') {
        fprintf(stderr, "fuzz-control: the output does not end with a newline\n");
        abort();
    }
    while (p < end) {
        const char *nl = memchr(p, '\n', end - p);
        check_reply(p, nl - p);
        replies++;
        p = nl + 1;
    }
    /* One reply per complete line, plus at most one for an over-long last line. */
    if (replies > lines_in + 1) {
        fprintf(stderr, "fuzz-control: %zu replies to %zu lines\n", replies, lines_in);
        abort();
    }
    g_string_free(out, true);
    control_server_free(srv);
    return 0;
}
