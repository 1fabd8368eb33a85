/* fuzz-json.c - libFuzzer harness for the control protocol's JSON parser and writer
 * (cli/json.c): any input either fails to parse with an error message, or parses into a tree
 * whose compact and pretty forms parse back into a tree that writes the same text. */
#include "config.h"
#include "fuzz.h"
#include "cli/json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fail(const char *what, const char *text)
{
    fprintf(stderr, "fuzz-json: %s: %s\n", what, text);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonValue) v = json_parse((const char *)data, size, &err);
    g_autoptr(JsonValue) again = NULL;
    g_autoptr(JsonValue) from_pretty = NULL;
    g_autofree char *text = NULL;
    g_autofree char *text2 = NULL;
    g_autofree char *pretty = NULL;
    g_autofree char *text3 = NULL;

    if (!v) {
        if (!err || strncmp(err->message, "invalid JSON at offset ", 23) != 0) {
            fail("a parse error without its message", err ? err->message : "(none)");
        }
        return 0;
    }
    text = json_to_string(v);
    again = json_parse(text, strlen(text), NULL);
    if (!again) {
        fail("the writer's output does not parse", text);
    }
    text2 = json_to_string(again);
    if (strcmp(text, text2) != 0) {
        fail("a round trip changed the text", text2);
    }
    pretty = json_to_string_pretty(v);
    from_pretty = json_parse(pretty, strlen(pretty), NULL);
    if (!from_pretty) {
        fail("the pretty output does not parse", pretty);
    }
    text3 = json_to_string(from_pretty);
    if (strcmp(text, text3) != 0) {
        fail("the pretty form reads back differently", text3);
    }
    return 0;
}
