/* test-json.c - unit tests for the control protocol's JSON tree, parser and writer. */
#include "config.h"
#include "cli/json.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* --- helpers -------------------------------------------------------------------- */

static JsonValue *parse_ok(const char *text)
{
    g_autoptr(GError) err = NULL;
    JsonValue *v = json_parse(text, strlen(text), &err);

    g_assert_no_error(err);
    g_assert_nonnull(v);
    return v;
}

/* text must fail at byte offset with a message containing what. */
static void check_parse_error_len(const char *text, gsize len, gsize offset, const char *what)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *prefix = g_strdup_printf("invalid JSON at offset %zu: ", offset);
    JsonValue *v = json_parse(text, len, &err);

    if (g_test_verbose()) {
        g_test_message("%s -> %s", text, err ? err->message : "(no error)");
    }
    g_assert_null(v);
    g_assert_error(err, g_quark_from_static_string("json"), 0);
    g_assert_true(g_str_has_prefix(err->message, prefix));
    g_assert_nonnull(strstr(err->message, what));
    g_assert_null(strchr(err->message, '\n'));
}

static void check_parse_error(const char *text, gsize offset, const char *what)
{
    check_parse_error_len(text, strlen(text), offset, what);
}

/* text parses and writes back compactly as expected. */
static void check_rewrite(const char *text, const char *expected)
{
    g_autoptr(JsonValue) v = parse_ok(text);
    g_autofree char *out = json_to_string(v);

    g_assert_cmpstr(out, ==, expected);
}

static void check_round_trip(const char *text)
{
    check_rewrite(text, text);
}

static char *write_compact(JsonValue *v)
{
    g_autoptr(JsonValue) owned = v;

    return json_to_string(owned);
}

/* The string value that the JSON text of one string decodes to. */
static char *parse_string_value(const char *text)
{
    g_autoptr(JsonValue) v = parse_ok(text);

    g_assert_cmpint(json_type(v), ==, JSON_STRING);
    return g_strdup(json_get_string(v));
}

/* --- building ------------------------------------------------------------------- */

static void test_build_scalars(void)
{
    g_autoptr(JsonValue) n = json_new_null();
    g_autoptr(JsonValue) t = json_new_bool(true);
    g_autoptr(JsonValue) i = json_new_int(-42);
    g_autoptr(JsonValue) d = json_new_double(2.5);
    g_autoptr(JsonValue) s = json_new_string("disk.img");
    g_autoptr(JsonValue) a = json_new_array();
    g_autoptr(JsonValue) o = json_new_object();

    g_assert_cmpint(json_type(n), ==, JSON_NULL);
    g_assert_cmpint(json_type(t), ==, JSON_BOOL);
    g_assert_cmpint(json_type(i), ==, JSON_INT);
    g_assert_cmpint(json_type(d), ==, JSON_DOUBLE);
    g_assert_cmpint(json_type(s), ==, JSON_STRING);
    g_assert_cmpint(json_type(a), ==, JSON_ARRAY);
    g_assert_cmpint(json_type(o), ==, JSON_OBJECT);
    g_assert_cmpint(json_type(NULL), ==, JSON_NULL);

    g_assert_true(json_get_bool(t));
    g_assert_cmpint(json_get_int(i), ==, -42);
    g_assert_cmpfloat(json_get_double(d), ==, 2.5);
    g_assert_cmpstr(json_get_string(s), ==, "disk.img");
    g_assert_cmpuint(json_array_length(a), ==, 0);
    g_assert_cmpuint(json_object_size(o), ==, 0);
    json_free(NULL);
}

static void test_build_string_copies(void)
{
    char buf[] = "original";
    g_autoptr(JsonValue) s = json_new_string(buf);

    buf[0] = 'X';
    g_assert_cmpstr(json_get_string(s), ==, "original");
}

static void test_build_null_values(void)
{
    g_autoptr(JsonValue) s = json_new_string(NULL);
    g_autoptr(JsonValue) arr = json_new_array();
    g_autoptr(JsonValue) obj = json_new_object();
    g_autofree char *arr_text = NULL;
    g_autofree char *obj_text = NULL;

    g_assert_cmpint(json_type(s), ==, JSON_NULL);
    json_array_append(arr, NULL);
    json_array_append(arr, json_new_string(NULL));
    json_object_set_string(obj, "a", NULL);
    json_object_set(obj, "b", NULL);
    arr_text = json_to_string(arr);
    obj_text = json_to_string(obj);
    g_assert_cmpstr(arr_text, ==, "[null,null]");
    g_assert_cmpstr(obj_text, ==, "{\"a\":null,\"b\":null}");
    g_assert_nonnull(json_object_get(obj, "a"));
    g_assert_null(json_object_get_string(obj, "a"));
}

static void test_build_key_order(void)
{
    static const char *const keys[] = { "zeta", "alpha", "mid", "beta", "a", "" };
    g_autoptr(JsonValue) obj = json_new_object();
    g_autofree char *text = NULL;
    const char *key;
    JsonValue *value;
    guint i;

    for (i = 0; i < G_N_ELEMENTS(keys); i++) {
        json_object_set_int(obj, keys[i], i);
    }
    g_assert_cmpuint(json_object_size(obj), ==, G_N_ELEMENTS(keys));
    for (i = 0; json_object_iter(obj, i, &key, &value); i++) {
        g_assert_cmpstr(key, ==, keys[i]);
        g_assert_cmpint(json_get_int(value), ==, i);
    }
    g_assert_cmpuint(i, ==, G_N_ELEMENTS(keys));
    text = json_to_string(obj);
    g_assert_cmpstr(text, ==, "{\"zeta\":0,\"alpha\":1,\"mid\":2,\"beta\":3,\"a\":4,\"\":5}");

    /* Parsing keeps the order of the text too. */
    check_round_trip("{\"z\":1,\"y\":2,\"x\":{\"c\":3,\"b\":4,\"a\":5}}");
}

static void test_build_replace_key(void)
{
    g_autoptr(JsonValue) obj = json_new_object();
    g_autofree char *text = NULL;

    json_object_set_int(obj, "a", 1);
    json_object_set_string(obj, "b", "two");
    json_object_set_bool(obj, "c", false);
    json_object_set_string(obj, "a", "replaced");       /* another type */
    json_object_set(obj, "b", json_new_array());        /* old string freed */
    json_object_set_double(obj, "c", 0.5);
    g_assert_cmpuint(json_object_size(obj), ==, 3);
    g_assert_cmpstr(json_object_get_string(obj, "a"), ==, "replaced");
    g_assert_cmpint(json_type(json_object_get(obj, "b")), ==, JSON_ARRAY);
    text = json_to_string(obj);
    g_assert_cmpstr(text, ==, "{\"a\":\"replaced\",\"b\":[],\"c\":0.5}");
}

static void test_build_nested(void)
{
    g_autoptr(JsonValue) obj = json_new_object();
    JsonValue *list = json_new_array();
    JsonValue *inner = json_new_object();
    g_autofree char *text = NULL;

    json_object_set_string(inner, "name", "disk0");
    json_object_set_int(inner, "size", 1073741824);
    json_array_append(list, inner);
    json_array_append(list, json_new_bool(true));
    json_object_set(obj, "exports", list);
    json_object_set_bool(obj, "ok", true);
    text = json_to_string(obj);
    g_assert_cmpstr(text, ==,
                    "{\"exports\":[{\"name\":\"disk0\",\"size\":1073741824},true],\"ok\":true}");
    g_assert_true(json_array_get(json_object_get(obj, "exports"), 0) == inner);
}

static void test_build_misuse(void)
{
    g_autoptr(JsonValue) num = json_new_int(1);
    g_autoptr(JsonValue) obj = json_new_object();

    /* A programming error is reported, and the value handed over is freed, not leaked. */
    g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*not an array*");
    json_array_append(num, json_new_string("lost"));
    g_test_assert_expected_messages();
    g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*not an object*");
    json_object_set_string(num, "k", "lost");
    g_test_assert_expected_messages();
    g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*no key*");
    json_object_set(obj, NULL, json_new_array());
    g_test_assert_expected_messages();
    g_assert_cmpuint(json_object_size(obj), ==, 0);
    g_assert_cmpint(json_get_int(num), ==, 1);
}

/* --- accessors ------------------------------------------------------------------ */

static void test_access_defaults(void)
{
    g_autoptr(JsonValue) obj = parse_ok("{\"s\":\"text\",\"i\":7,\"d\":1.5,\"b\":true,"
                                        "\"n\":null,\"a\":[1],\"o\":{}}");
    g_autoptr(JsonValue) arr = json_new_array();
    JsonValue *v = NULL;
    const char *key = "unchanged";
    guint i;

    /* Absent keys. */
    g_assert_null(json_object_get(obj, "missing"));
    g_assert_null(json_object_get_string(obj, "missing"));
    g_assert_cmpint(json_object_get_int(obj, "missing", -1), ==, -1);
    g_assert_true(json_object_get_bool(obj, "missing", true));
    g_assert_false(json_object_get_bool(obj, "missing", false));
    g_assert_cmpfloat(json_object_get_double(obj, "missing", 9.5), ==, 9.5);
    g_assert_null(json_object_get(obj, NULL));

    /* Keys of another type. */
    g_assert_null(json_object_get_string(obj, "i"));
    g_assert_null(json_object_get_string(obj, "n"));
    g_assert_null(json_object_get_string(obj, "o"));
    g_assert_cmpint(json_object_get_int(obj, "s", -1), ==, -1);
    g_assert_cmpint(json_object_get_int(obj, "b", -1), ==, -1);
    g_assert_cmpint(json_object_get_int(obj, "d", -1), ==, -1);    /* not integral */
    g_assert_cmpint(json_object_get_int(obj, "n", -1), ==, -1);
    g_assert_true(json_object_get_bool(obj, "i", true));
    g_assert_true(json_object_get_bool(obj, "s", true));
    g_assert_false(json_object_get_bool(obj, "n", false));
    g_assert_cmpfloat(json_object_get_double(obj, "s", 9.5), ==, 9.5);
    g_assert_cmpfloat(json_object_get_double(obj, "a", 9.5), ==, 9.5);

    /* Matching types, with the documented conversions. */
    g_assert_cmpstr(json_object_get_string(obj, "s"), ==, "text");
    g_assert_cmpint(json_object_get_int(obj, "i", -1), ==, 7);
    g_assert_true(json_object_get_bool(obj, "b", false));
    g_assert_cmpfloat(json_object_get_double(obj, "d", 0), ==, 1.5);
    g_assert_cmpfloat(json_object_get_double(obj, "i", 0), ==, 7.0);
    g_assert_cmpint(json_type(json_object_get(obj, "n")), ==, JSON_NULL);

    /* Not an object, or no value at all. */
    g_assert_null(json_object_get(arr, "s"));
    g_assert_null(json_object_get(NULL, "s"));
    g_assert_null(json_object_get_string(NULL, "s"));
    g_assert_cmpint(json_object_get_int(NULL, "i", 3), ==, 3);
    g_assert_true(json_object_get_bool(NULL, "b", true));
    g_assert_cmpfloat(json_object_get_double(arr, "d", 2.0), ==, 2.0);
    g_assert_cmpuint(json_object_size(arr), ==, 0);
    g_assert_cmpuint(json_object_size(NULL), ==, 0);
    g_assert_false(json_object_iter(arr, 0, &key, NULL));
    g_assert_false(json_object_iter(NULL, 0, &key, NULL));
    g_assert_cmpstr(key, ==, "unchanged");

    /* Arrays. */
    g_assert_cmpuint(json_array_length(obj), ==, 0);
    g_assert_cmpuint(json_array_length(NULL), ==, 0);
    g_assert_null(json_array_get(obj, 0));
    g_assert_null(json_array_get(NULL, 0));
    g_assert_null(json_array_get(arr, 0));
    g_assert_cmpuint(json_array_length(json_object_get(obj, "a")), ==, 1);
    g_assert_null(json_array_get(json_object_get(obj, "a"), 1));
    g_assert_null(json_array_get(json_object_get(obj, "a"), G_MAXUINT));

    /* Scalar accessors on every other type. */
    for (i = 0; json_object_iter(obj, i, NULL, &v); i++) {
        if (json_type(v) != JSON_BOOL) {
            g_assert_false(json_get_bool(v));
        }
        if (json_type(v) != JSON_INT) {
            g_assert_cmpint(json_get_int(v), ==, 0);
        }
        if (json_type(v) != JSON_INT && json_type(v) != JSON_DOUBLE) {
            g_assert_cmpfloat(json_get_double(v), ==, 0.0);
        }
        if (json_type(v) != JSON_STRING) {
            g_assert_null(json_get_string(v));
        }
    }
    g_assert_false(json_get_bool(NULL));
    g_assert_cmpint(json_get_int(NULL), ==, 0);
    g_assert_cmpfloat(json_get_double(NULL), ==, 0.0);
    g_assert_null(json_get_string(NULL));
}

static void test_access_int_from_double(void)
{
    g_autoptr(JsonValue) obj = json_new_object();

    json_object_set_double(obj, "three", 3.0);
    json_object_set_double(obj, "neg", -1e15);
    json_object_set_double(obj, "half", 3.5);
    json_object_set_double(obj, "min", -9223372036854775808.0);
    json_object_set_double(obj, "too-big", 9223372036854775808.0);
    json_object_set_double(obj, "huge", 1e300);
    json_object_set_double(obj, "nan", NAN);
    json_object_set_double(obj, "inf", INFINITY);

    g_assert_cmpint(json_object_get_int(obj, "three", -1), ==, 3);
    g_assert_cmpint(json_object_get_int(obj, "neg", -1), ==, -1000000000000000);
    g_assert_cmpint(json_object_get_int(obj, "half", -1), ==, -1);
    g_assert_cmpint(json_object_get_int(obj, "min", -1), ==, INT64_MIN);
    g_assert_cmpint(json_object_get_int(obj, "too-big", -1), ==, -1);
    g_assert_cmpint(json_object_get_int(obj, "huge", -1), ==, -1);
    g_assert_cmpint(json_object_get_int(obj, "nan", -1), ==, -1);
    g_assert_cmpint(json_object_get_int(obj, "inf", -1), ==, -1);
    g_assert_cmpint(json_get_int(json_object_get(obj, "three")), ==, 3);
    g_assert_cmpint(json_get_int(json_object_get(obj, "half")), ==, 0);

    /* From text: 1e3 and 2.0 are doubles but integral. */
    g_autoptr(JsonValue) parsed = parse_ok("{\"a\":1e3,\"b\":2.0,\"c\":2.5}");
    g_assert_cmpint(json_type(json_object_get(parsed, "a")), ==, JSON_DOUBLE);
    g_assert_cmpint(json_object_get_int(parsed, "a", -1), ==, 1000);
    g_assert_cmpint(json_object_get_int(parsed, "b", -1), ==, 2);
    g_assert_cmpint(json_object_get_int(parsed, "c", -1), ==, -1);
}

static void test_access_iter(void)
{
    g_autoptr(JsonValue) obj = parse_ok("{\"first\":1,\"second\":[2],\"third\":\"3\"}");
    const char *key = NULL;
    JsonValue *value = NULL;

    g_assert_true(json_object_iter(obj, 0, &key, &value));
    g_assert_cmpstr(key, ==, "first");
    g_assert_cmpint(json_get_int(value), ==, 1);
    g_assert_true(json_object_iter(obj, 1, &key, NULL));
    g_assert_cmpstr(key, ==, "second");
    g_assert_true(json_object_iter(obj, 2, NULL, &value));
    g_assert_cmpstr(json_get_string(value), ==, "3");
    g_assert_false(json_object_iter(obj, 3, &key, &value));
    g_assert_false(json_object_iter(obj, G_MAXUINT, &key, &value));
}

/* --- writing -------------------------------------------------------------------- */

static void test_write_compact(void)
{
    g_autoptr(JsonValue) obj = json_new_object();
    JsonValue *b = json_new_array();
    g_autofree char *text = NULL;

    json_object_set_int(obj, "a", 1);
    json_array_append(b, json_new_bool(true));
    json_array_append(b, json_new_null());
    json_object_set(obj, "b", b);
    text = json_to_string(obj);
    g_assert_cmpstr(text, ==, "{\"a\":1,\"b\":[true,null]}");

    g_free(text);
    text = write_compact(json_new_string(""));
    g_assert_cmpstr(text, ==, "\"\"");
    g_free(text);
    text = write_compact(json_new_bool(false));
    g_assert_cmpstr(text, ==, "false");
    g_free(text);
    text = json_to_string(NULL);
    g_assert_cmpstr(text, ==, "null");
}

static void test_write_pretty(void)
{
    g_autoptr(JsonValue) v = parse_ok("{\"a\":1,\"b\":[true,null,{}],\"c\":{\"d\":\"x\",\"e\":[]},"
                                      "\"f\":[[1,2]]}");
    g_autoptr(JsonValue) scalar = json_new_int(5);
    g_autoptr(JsonValue) empty = json_new_array();
    g_autofree char *text = json_to_string_pretty(v);
    g_autofree char *scalar_text = json_to_string_pretty(scalar);
    g_autofree char *empty_text = json_to_string_pretty(empty);

    g_assert_cmpstr(text, ==,
                    "{\n"
                    "  \"a\": 1,\n"
                    "  \"b\": [\n"
                    "    true,\n"
                    "    null,\n"
                    "    {}\n"
                    "  ],\n"
                    "  \"c\": {\n"
                    "    \"d\": \"x\",\n"
                    "    \"e\": []\n"
                    "  },\n"
                    "  \"f\": [\n"
                    "    [\n"
                    "      1,\n"
                    "      2\n"
                    "    ]\n"
                    "  ]\n"
                    "}");
    g_assert_cmpstr(scalar_text, ==, "5");
    g_assert_cmpstr(empty_text, ==, "[]");

    /* The pretty form is JSON too, and means the same. */
    g_autoptr(JsonValue) again = parse_ok(text);
    g_autofree char *compact = json_to_string(v);
    g_autofree char *compact_again = json_to_string(again);
    g_assert_cmpstr(compact, ==, compact_again);
}

static void test_write_escapes(void)
{
    g_autoptr(GString) raw = g_string_new(NULL);
    g_autoptr(GString) expected = g_string_new("\"");
    g_autofree char *text = NULL;

    for (int c = 1; c < 0x20; c++) {
        g_string_append_c(raw, c);
        g_string_append_printf(expected, "\\u%04x", c);
    }
    g_string_append(raw, "\"\\/ ~\x7f" "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    g_string_append(expected, "\\\"\\\\/ ~\x7f" "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
    text = write_compact(json_new_string(raw->str));
    g_assert_cmpstr(text, ==, expected->str);

    /* And back. */
    g_autofree char *back = parse_string_value(text);
    g_assert_cmpstr(back, ==, raw->str);

    /* Keys are escaped the same way. */
    g_autoptr(JsonValue) obj = json_new_object();
    json_object_set_int(obj, "a\"b\n", 1);
    g_autofree char *obj_text = json_to_string(obj);
    g_assert_cmpstr(obj_text, ==, "{\"a\\\"b\\u000a\":1}");
}

static void test_write_invalid_utf8(void)
{
    /* A stray continuation byte, a truncated sequence, an overlong '/', a surrogate. */
    g_autofree char *text = write_compact(json_new_string("a\x80" "b\xc3" "c\xc0\xaf" "d\xed\xa0\x80"));
    g_autoptr(JsonValue) back = NULL;

    g_assert_cmpstr(text, ==, "\"a\\ufffdb\\ufffdc\\ufffd\\ufffdd\\ufffd\\ufffd\\ufffd\"");
    back = parse_ok(text);
    g_assert_true(g_utf8_validate(json_get_string(back), -1, NULL));
}

static void check_double_round_trip(double d)
{
    g_autofree char *text = write_compact(json_new_double(d));
    g_autoptr(JsonValue) back = parse_ok(text);

    g_assert_cmpint(json_type(back), ==, JSON_DOUBLE);
    g_assert_cmpmem(&d, sizeof(d), &(double){ json_get_double(back) }, sizeof(d));
}

static void test_write_doubles(void)
{
    static const double values[] = {
        0.0, -0.0, 1.0, -1.0, 0.5, 0.1, 1.0 / 3.0, 2.0 / 3.0, 1e20, 1e22, 1e300, -1e-300,
        123456789.125, 9007199254740993.0, 9223372036854775808.0, DBL_MAX, -DBL_MAX, DBL_MIN,
        DBL_EPSILON, 4.9406564584124654e-324,
    };
    g_autofree char *text = NULL;

    for (gsize k = 0; k < G_N_ELEMENTS(values); k++) {
        check_double_round_trip(values[k]);
    }
    for (int k = 0; k < 1000; k++) {
        double d;
        guint64 bits = (guint64)g_test_rand_int() << 32 | (guint32)g_test_rand_int();

        memcpy(&d, &bits, sizeof(d));
        if (isfinite(d)) {
            check_double_round_trip(d);
        }
    }

    text = write_compact(json_new_double(1.0));
    g_assert_cmpstr(text, ==, "1.0");
    g_free(text);
    text = write_compact(json_new_double(-0.0));
    g_assert_cmpstr(text, ==, "-0.0");
    g_free(text);
    text = write_compact(json_new_double(0.5));
    g_assert_cmpstr(text, ==, "0.5");
    g_free(text);
    text = write_compact(json_new_double(1e20));
    g_assert_cmpstr(text, ==, "1e+20");
    g_free(text);
    text = write_compact(json_new_double(NAN));
    g_assert_cmpstr(text, ==, "null");
    g_free(text);
    text = write_compact(json_new_double(INFINITY));
    g_assert_cmpstr(text, ==, "null");
    g_free(text);
    text = write_compact(json_new_double(-INFINITY));
    g_assert_cmpstr(text, ==, "null");
}

/* --- parsing -------------------------------------------------------------------- */

static void test_parse_scalars(void)
{
    g_autoptr(JsonValue) t = parse_ok("true");
    g_autoptr(JsonValue) f = parse_ok("false");
    g_autoptr(JsonValue) n = parse_ok("null");
    g_autoptr(JsonValue) i = parse_ok("-17");
    g_autoptr(JsonValue) z = parse_ok("0");
    g_autoptr(JsonValue) d = parse_ok("-0.25e1");
    g_autoptr(JsonValue) s = parse_ok("\"hi\"");
    g_autoptr(JsonValue) a = parse_ok("[]");
    g_autoptr(JsonValue) o = parse_ok("{}");

    g_assert_cmpint(json_type(t), ==, JSON_BOOL);
    g_assert_true(json_get_bool(t));
    g_assert_cmpint(json_type(f), ==, JSON_BOOL);
    g_assert_false(json_get_bool(f));
    g_assert_cmpint(json_type(n), ==, JSON_NULL);
    g_assert_cmpint(json_type(i), ==, JSON_INT);
    g_assert_cmpint(json_get_int(i), ==, -17);
    g_assert_cmpint(json_type(z), ==, JSON_INT);
    g_assert_cmpint(json_type(d), ==, JSON_DOUBLE);
    g_assert_cmpfloat(json_get_double(d), ==, -2.5);
    g_assert_cmpstr(json_get_string(s), ==, "hi");
    g_assert_cmpint(json_type(a), ==, JSON_ARRAY);
    g_assert_cmpint(json_type(o), ==, JSON_OBJECT);
}

static void test_parse_escapes(void)
{
    static const struct {
        const char *text;
        const char *value;
    } cases[] = {
        { "\"\\\"\"", "\"" },
        { "\"\\\\\"", "\\" },
        { "\"\\/\"", "/" },
        { "\"\\b\"", "\b" },
        { "\"\\f\"", "\f" },
        { "\"\\n\"", "\n" },
        { "\"\\r\"", "\r" },
        { "\"\\t\"", "\t" },
        { "\"\\u0041\"", "A" },
        { "\"\\u0001\"", "\x01" },
        { "\"\\u001F\"", "\x1f" },
        { "\"\\u00e9\"", "\xc3\xa9" },
        { "\"\\u00E9\"", "\xc3\xa9" },
        { "\"\\u07ff\"", "\xdf\xbf" },
        { "\"\\u0800\"", "\xe0\xa0\x80" },
        { "\"\\u20AC\"", "\xe2\x82\xac" },
        { "\"\\uFFFF\"", "\xef\xbf\xbf" },
        { "\"a\\tb\\nc\\\\d\\\"e\\/f\"", "a\tb\nc\\d\"e/f" },
        { "\"\\\\u0041\"", "\\u0041" },
    };

    for (gsize k = 0; k < G_N_ELEMENTS(cases); k++) {
        g_autofree char *value = parse_string_value(cases[k].text);

        g_assert_cmpstr(value, ==, cases[k].value);
    }
}

static void test_parse_surrogates(void)
{
    g_autofree char *grin = parse_string_value("\"\\ud83d\\ude00\"");
    g_autofree char *first = parse_string_value("\"\\uD800\\uDC00\"");
    g_autofree char *last = parse_string_value("\"\\uDBFF\\uDFFF\"");
    g_autofree char *mixed = parse_string_value("\"x\\uD834\\uDD1Ey\"");

    g_assert_cmpstr(grin, ==, "\xf0\x9f\x98\x80");      /* U+1F600 */
    g_assert_cmpstr(first, ==, "\xf0\x90\x80\x80");     /* U+10000 */
    g_assert_cmpstr(last, ==, "\xf4\x8f\xbf\xbf");      /* U+10FFFF */
    g_assert_cmpstr(mixed, ==, "x\xf0\x9d\x84\x9ey");   /* U+1D11E */

    /* Written back as raw UTF-8, which reads back the same. */
    check_rewrite("\"\\ud83d\\ude00\"", "\"\xf0\x9f\x98\x80\"");
}

static void test_parse_utf8(void)
{
    /* Raw 2-, 3- and 4-byte sequences, including the edges of each range. */
    static const char *const valid[] = {
        "\"\xc2\x80\"", "\"\xdf\xbf\"", "\"\xe0\xa0\x80\"", "\"\xed\x9f\xbf\"",
        "\"\xee\x80\x80\"", "\"\xef\xbf\xbf\"", "\"\xf0\x90\x80\x80\"", "\"\xf4\x8f\xbf\xbf\"",
        "\"gr\xc3\xbc\xc3\x9f \xe2\x82\xac \xf0\x9f\x98\x80\"",
    };

    for (gsize k = 0; k < G_N_ELEMENTS(valid); k++) {
        check_round_trip(valid[k]);
    }
}

static void test_parse_int64_limits(void)
{
    g_autoptr(JsonValue) max = parse_ok("9223372036854775807");
    g_autoptr(JsonValue) min = parse_ok("-9223372036854775808");
    g_autoptr(JsonValue) over = parse_ok("9223372036854775808");
    g_autoptr(JsonValue) under = parse_ok("-9223372036854775809");
    g_autoptr(JsonValue) huge = parse_ok("123456789012345678901234567890");
    g_autoptr(JsonValue) neg_zero = parse_ok("-0");

    g_assert_cmpint(json_type(max), ==, JSON_INT);
    g_assert_cmpint(json_get_int(max), ==, INT64_MAX);
    g_assert_cmpint(json_type(min), ==, JSON_INT);
    g_assert_cmpint(json_get_int(min), ==, INT64_MIN);
    g_assert_cmpint(json_type(over), ==, JSON_DOUBLE);
    g_assert_cmpfloat(json_get_double(over), ==, 9223372036854775808.0);
    g_assert_cmpint(json_type(under), ==, JSON_DOUBLE);
    g_assert_cmpfloat(json_get_double(under), ==, -9223372036854775809.0);
    g_assert_cmpint(json_type(huge), ==, JSON_DOUBLE);
    g_assert_cmpfloat(json_get_double(huge), ==, 123456789012345678901234567890.0);
    g_assert_cmpint(json_type(neg_zero), ==, JSON_INT);
    g_assert_cmpint(json_get_int(neg_zero), ==, 0);

    check_round_trip("[9223372036854775807,-9223372036854775808,0,-1]");

    g_autofree char *max_text = write_compact(json_new_int(INT64_MAX));
    g_autofree char *min_text = write_compact(json_new_int(INT64_MIN));
    g_assert_cmpstr(max_text, ==, "9223372036854775807");
    g_assert_cmpstr(min_text, ==, "-9223372036854775808");
}

static void test_parse_doubles(void)
{
    static const struct {
        const char *text;
        double value;
    } cases[] = {
        { "0.5", 0.5 },
        { "-0.5", -0.5 },
        { "1e2", 100.0 },
        { "1E2", 100.0 },
        { "1e+2", 100.0 },
        { "1e-2", 0.01 },
        { "0e0", 0.0 },
        { "-0.0", -0.0 },
        { "3.141592653589793", 3.141592653589793 },
        { "1.7976931348623157e308", DBL_MAX },
        { "2.2250738585072014e-308", DBL_MIN },
        { "4.9406564584124654e-324", 4.9406564584124654e-324 },
        { "1e-400", 0.0 },                      /* underflows to zero: fine */
        { "0.1000000000000000000000000000001", 0.1 },
    };

    for (gsize k = 0; k < G_N_ELEMENTS(cases); k++) {
        g_autoptr(JsonValue) v = parse_ok(cases[k].text);

        g_assert_cmpint(json_type(v), ==, JSON_DOUBLE);
        g_assert_cmpmem(&cases[k].value, sizeof(double),
                        &(double){ json_get_double(v) }, sizeof(double));
    }
    check_round_trip("[0.5,-1.5,1e+20,1.0,-0.0,3.0517578125e-05]");
    check_rewrite("[1E2,1e-2,0.10]", "[100.0,0.01,0.10000000000000001]");
}

static void test_parse_whitespace(void)
{
    check_rewrite(" \t\r\n{ \"a\" : [ 1 , 2 ] ,\n\"b\"\t:\r{ } } \n\r\t", "{\"a\":[1,2],\"b\":{}}");
    check_rewrite("\n\n\"x\"\n", "\"x\"");
    check_rewrite("[ ]", "[]");
    check_rewrite("{\r\n}", "{}");
}

static void test_parse_round_trip(void)
{
    static const char *const texts[] = {
        "null", "true", "false", "0", "-1", "\"\"", "[]", "{}", "[[]]", "[{}]", "{\"\":{}}",
        "{\"a\":1,\"b\":[true,null]}",
        "{\"command\":\"export-add\",\"id\":17,\"args\":{\"name\":\"disk0\","
        "\"path\":\"/var/lib/images/a b.qcow2\",\"read-only\":false,\"cache\":null,"
        "\"size\":1073741824,\"ratio\":0.75,\"tags\":[\"x\",\"y\",[1,[2,[3]]]]}}",
    };

    for (gsize k = 0; k < G_N_ELEMENTS(texts); k++) {
        g_autoptr(JsonValue) v = parse_ok(texts[k]);
        g_autofree char *compact = json_to_string(v);
        g_autofree char *pretty = json_to_string_pretty(v);
        g_autoptr(JsonValue) again = parse_ok(pretty);
        g_autofree char *compact_again = json_to_string(again);

        g_assert_cmpstr(compact, ==, texts[k]);
        g_assert_cmpstr(compact_again, ==, texts[k]);
    }
}

static void test_parse_nesting(void)
{
    for (int depth = 63; depth <= 65; depth++) {
        g_autoptr(GString) arrays = g_string_new(NULL);
        g_autoptr(GString) objects = g_string_new(NULL);
        g_autoptr(GString) mixed = g_string_new(NULL);

        for (int k = 0; k < depth; k++) {
            g_string_append_c(arrays, '[');
            g_string_append(objects, "{\"k\":");
            g_string_append(mixed, k % 2 ? "{\"k\":" : "[");
        }
        g_string_append(objects, "1");
        g_string_append(mixed, "null");
        for (int k = depth - 1; k >= 0; k--) {
            g_string_append_c(arrays, ']');
            g_string_append_c(objects, '}');
            g_string_append_c(mixed, k % 2 ? '}' : ']');
        }
        if (depth <= 64) {
            g_autoptr(JsonValue) a = parse_ok(arrays->str);
            g_autoptr(JsonValue) o = parse_ok(objects->str);
            g_autoptr(JsonValue) m = parse_ok(mixed->str);
            g_autofree char *text = json_to_string(a);
            g_autofree char *otext = json_to_string(o);
            g_autofree char *mtext = json_to_string(m);

            g_assert_cmpstr(text, ==, arrays->str);
            g_assert_cmpstr(otext, ==, objects->str);
            g_assert_cmpstr(mtext, ==, mixed->str);
        } else {
            /* The 65th opening bracket is at offset 64 in the arrays, 5 * 64 in the objects. */
            check_parse_error(arrays->str, 64, "nesting deeper than 64 levels");
            check_parse_error(objects->str, 5 * 64, "nesting deeper than 64 levels");
            check_parse_error(mixed->str, 32 + 5 * 32, "nesting deeper than 64 levels");
        }
    }

    /* Far deeper input must fail the same way, not exhaust the stack. */
    g_autofree char *deep = g_strnfill(1000000, '[');
    check_parse_error(deep, 64, "nesting deeper than 64 levels");
}

static void test_parse_length(void)
{
    /* The text need not be NUL-terminated, and bytes past len are ignored. */
    static const char buf[] = "{\"a\":12345}garbage";
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonValue) v = json_parse(buf, 11, &err);
    g_autoptr(JsonValue) num = NULL;
    g_autoptr(JsonValue) str = NULL;

    g_assert_no_error(err);
    g_assert_cmpint(json_object_get_int(v, "a", 0), ==, 12345);

    /* A number cut by len, followed by more digits in memory. */
    num = json_parse("12345", 3, &err);
    g_assert_no_error(err);
    g_assert_cmpint(json_get_int(num), ==, 123);
    str = json_parse("\"ab\"", 3, &err);
    g_assert_null(str);
    g_assert_error(err, g_quark_from_static_string("json"), 0);

    check_parse_error_len("", 0, 0, "unexpected end of input");
    check_parse_error_len(NULL, 0, 0, "unexpected end of input");
    check_parse_error_len("1\0", 2, 1, "unexpected byte 0x00 after the value");
    check_parse_error_len("\"a\0b\"", 5, 2, "control character 0x00 in string");
}

static void test_parse_too_large(void)
{
    gsize limit = 16 * 1024 * 1024;
    g_autofree char *text = g_malloc(limit + 1);
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonValue) v = NULL;

    /* Exactly 16 MiB is accepted: a string of that size in total. */
    text[0] = '"';
    memset(text + 1, 'x', limit - 2);
    text[limit - 1] = '"';
    text[limit] = ' ';
    v = json_parse(text, limit, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(strlen(json_get_string(v)), ==, limit - 2);

    /* One byte more is not, even if it is only whitespace. */
    check_parse_error_len(text, limit + 1, limit, "text longer than 16 MiB");
}

static void test_parse_error_format(void)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonValue) v = json_parse("{\"abc\":1,\"de\"  1}", 17, &err);

    g_assert_null(v);
    g_assert_error(err, g_quark_from_static_string("json"), 0);
    g_assert_cmpstr(err->message, ==, "invalid JSON at offset 15: expected ':'");

    /* errp may be NULL. */
    g_assert_null(json_parse("nope", 4, NULL));
}

typedef struct {
    const char *text;
    gsize offset;
    const char *what;
} InvalidCase;

static void check_invalid_cases(const InvalidCase *cases, gsize n)
{
    for (gsize k = 0; k < n; k++) {
        check_parse_error(cases[k].text, cases[k].offset, cases[k].what);
    }
}

static void test_parse_invalid_truncated(void)
{
    static const InvalidCase cases[] = {
        { "   ", 3, "unexpected end of input" },
        { "[", 1, "unexpected end of input" },
        { "[1", 2, "unexpected end of input" },
        { "[1,", 3, "unexpected end of input" },
        { "{", 1, "unexpected end of input" },
        { "{\"a\"", 4, "unexpected end of input" },
        { "{\"a\":", 5, "unexpected end of input" },
        { "{\"a\":1", 6, "unexpected end of input" },
        { "{\"a\":1,", 7, "unexpected end of input" },
        { "\"abc", 4, "unexpected end of input in string" },
        { "\"abc\\", 5, "unexpected end of input in string" },
        { "\"\\u12", 5, "unexpected end of input" },
        { "\"\\ud83d", 1, "lone high surrogate" },
        { "\"\\ud83d\\u", 9, "unexpected end of input" },
        { "-", 1, "unexpected end of input" },
        { "1.", 2, "unexpected end of input" },
        { "1e", 2, "unexpected end of input" },
        { "1e+", 3, "unexpected end of input" },
        { "tru", 0, "invalid literal" },
        { "nul", 0, "invalid literal" },
        { "\"\xe2\x82", 1, "invalid UTF-8" },
    };

    check_invalid_cases(cases, G_N_ELEMENTS(cases));
}

static void test_parse_invalid_trailing(void)
{
    static const InvalidCase cases[] = {
        { "1 2", 2, "unexpected character '2' after the value" },
        { "{}x", 2, "unexpected character 'x' after the value" },
        { "[] []", 3, "after the value" },
        { "truex", 4, "after the value" },
        { "null,", 4, "after the value" },
        { "\"a\"\"b\"", 3, "after the value" },
        { "{\"a\":1}}", 7, "after the value" },
        { "[1]]", 3, "after the value" },
        { "0 \x01", 2, "unexpected byte 0x01 after the value" },
        { "1\xc2\xa0", 1, "unexpected byte 0xc2 after the value" },
    };

    check_invalid_cases(cases, G_N_ELEMENTS(cases));
}

static void test_parse_invalid_escapes(void)
{
    static const InvalidCase cases[] = {
        { "\"\\a\"", 1, "invalid escape '\\a'" },
        { "\"ab\\x41\"", 3, "invalid escape '\\x'" },
        { "\"\\'\"", 1, "invalid escape" },
        { "\"\\U0041\"", 1, "invalid escape '\\U'" },
        { "\"\\0\"", 1, "invalid escape" },
        { "\"\\\x01\"", 1, "invalid escape" },
        { "\"\\u\"", 1, "invalid \\u escape" },
        { "\"\\u12\"", 1, "invalid \\u escape" },
        { "\"\\u12g4\"", 1, "invalid \\u escape" },
        { "\"\\u-123\"", 1, "invalid \\u escape" },
        { "\"\\u0000\"", 1, "\\u0000 is not allowed" },
        { "\"\\ud83d\\u12x4\"", 7, "invalid \\u escape" },
    };

    check_invalid_cases(cases, G_N_ELEMENTS(cases));
}

static void test_parse_invalid_surrogates(void)
{
    static const InvalidCase cases[] = {
        { "\"\\ud83d\"", 1, "lone high surrogate" },
        { "\"\\ud83dx\"", 1, "lone high surrogate" },
        { "\"\\ud83d\\n\"", 1, "lone high surrogate" },
        { "\"\\ud83d\\ud83d\"", 1, "lone high surrogate" },
        { "\"\\ud83d\\u0041\"", 1, "lone high surrogate" },
        { "\"ab\\ude00\"", 3, "lone low surrogate" },
        { "\"\\uDC00\\uD800\"", 1, "lone low surrogate" },
        { "\"\\uDFFF\"", 1, "lone low surrogate" },
        /* Surrogates encoded directly in UTF-8 (CESU-8) are not UTF-8. */
        { "\"\xed\xa0\xbd\xed\xb8\x80\"", 1, "invalid UTF-8" },
    };

    check_invalid_cases(cases, G_N_ELEMENTS(cases));
}

static void test_parse_invalid_utf8(void)
{
    static const InvalidCase cases[] = {
        { "\"\x80\"", 1, "invalid UTF-8 in string" },           /* stray continuation */
        { "\"ab\xbf\"", 3, "invalid UTF-8 in string" },
        { "\"\xc3\"", 1, "invalid UTF-8 in string" },           /* truncated 2-byte */
        { "\"\xc3x\"", 1, "invalid UTF-8 in string" },
        { "\"\xe2\x82x\"", 1, "invalid UTF-8 in string" },      /* truncated 3-byte */
        { "\"\xf0\x9f\x98x\"", 1, "invalid UTF-8 in string" },  /* truncated 4-byte */
        { "\"\xc0\xaf\"", 1, "invalid UTF-8 in string" },       /* overlong '/' */
        { "\"\xc1\xbf\"", 1, "invalid UTF-8 in string" },
        { "\"\xe0\x80\xaf\"", 1, "invalid UTF-8 in string" },
        { "\"\xe0\x9f\xbf\"", 1, "invalid UTF-8 in string" },
        { "\"\xf0\x80\x80\xaf\"", 1, "invalid UTF-8 in string" },
        { "\"\xf0\x8f\xbf\xbf\"", 1, "invalid UTF-8 in string" },
        { "\"\xed\xa0\x80\"", 1, "invalid UTF-8 in string" },   /* U+D800 */
        { "\"\xed\xbf\xbf\"", 1, "invalid UTF-8 in string" },   /* U+DFFF */
        { "\"\xf4\x90\x80\x80\"", 1, "invalid UTF-8 in string" }, /* U+110000 */
        { "\"\xf5\x80\x80\x80\"", 1, "invalid UTF-8 in string" },
        { "\"\xfe\"", 1, "invalid UTF-8 in string" },
        { "\"\xff\"", 1, "invalid UTF-8 in string" },
        { "{\"k\xff\":1}", 3, "invalid UTF-8 in string" },      /* in a key */
        { "\xef\xbb\xbf{}", 0, "unexpected byte 0xef" },        /* no BOM */
        { "\xc3\xa9", 0, "unexpected byte 0xc3" },              /* outside a string */
    };

    check_invalid_cases(cases, G_N_ELEMENTS(cases));
}

static void test_parse_invalid_control_chars(void)
{
    static const InvalidCase cases[] = {
        { "\"a\nb\"", 2, "control character 0x0a in string" },
        { "\"\t\"", 1, "control character 0x09 in string" },
        { "\"\x1f\"", 1, "control character 0x1f in string" },
        { "\"\r\"", 1, "control character 0x0d in string" },
        { "{\"a\x01\":1}", 3, "control character 0x01 in string" },
        { "\x0c" "1", 0, "unexpected byte 0x0c" },              /* form feed is no whitespace */
        { "\x0b" "1", 0, "unexpected byte 0x0b" },
    };

    check_invalid_cases(cases, G_N_ELEMENTS(cases));
}

static void test_parse_invalid_numbers(void)
{
    static const InvalidCase cases[] = {
        { "01", 0, "leading zeros are not allowed" },
        { "00", 0, "leading zeros are not allowed" },
        { "-01", 0, "leading zeros are not allowed" },
        { "[1,007]", 3, "leading zeros are not allowed" },
        { "+1", 0, "unexpected character '+'" },
        { "-", 1, "unexpected end of input" },
        { "-a", 1, "expected a digit after '-'" },
        { "- 1", 1, "expected a digit after '-'" },
        { ".5", 0, "unexpected character '.'" },
        { "1.", 2, "unexpected end of input" },
        { "1.e5", 2, "expected a digit after '.'" },
        { "1.5.3", 3, "after the value" },
        { "1e", 2, "unexpected end of input" },
        { "1e+", 3, "unexpected end of input" },
        { "1ex", 2, "expected a digit after the exponent" },
        { "1e+-2", 3, "expected a digit after the exponent" },
        { "0x10", 1, "unexpected character 'x' after the value" },
        { "1e400", 0, "number out of range" },
        { "-1e400", 0, "number out of range" },
        { "[1,2e999999999999]", 3, "number out of range" },
    };

    check_invalid_cases(cases, G_N_ELEMENTS(cases));
}

static void test_parse_invalid_bare_words(void)
{
    static const InvalidCase cases[] = {
        { "hello", 0, "invalid literal" },
        { "True", 0, "invalid literal" },
        { "NULL", 0, "invalid literal" },
        { "nil", 0, "invalid literal" },
        { "undefined", 0, "invalid literal" },
        { "NaN", 0, "invalid literal" },
        { "Infinity", 0, "invalid literal" },
        { "-Infinity", 1, "expected a digit after '-'" },
        { "{key:1}", 1, "expected a string key" },
        { "['a']", 1, "unexpected character '''" },
        { "[1,fals]", 3, "invalid literal" },
        { "{\"a\":nul}", 5, "invalid literal" },
    };

    check_invalid_cases(cases, G_N_ELEMENTS(cases));
}

static void test_parse_invalid_structure(void)
{
    static const InvalidCase cases[] = {
        { "", 0, "unexpected end of input" },
        { "]", 0, "unexpected character ']'" },
        { "}", 0, "unexpected character '}'" },
        { ",", 0, "unexpected character ','" },
        { "[1,]", 3, "unexpected character ']'" },
        { "[,1]", 1, "unexpected character ','" },
        { "[1 2]", 3, "expected ',' or ']'" },
        { "[1;2]", 2, "expected ',' or ']'" },
        { "[1}", 2, "expected ',' or ']'" },
        { "{\"a\":1,}", 7, "expected a string key" },
        { "{,}", 1, "expected a string key" },
        { "{\"a\" 1}", 5, "expected ':'" },
        { "{\"a\"=1}", 4, "expected ':'" },
        { "{\"a\":1 \"b\":2}", 7, "expected ',' or '}'" },
        { "{\"a\":1]", 6, "expected ',' or '}'" },
        { "{\"a\"}", 4, "expected ':'" },
        { "{1:2}", 1, "expected a string key" },
        { "/* c */ 1", 0, "unexpected character '/'" },
    };

    check_invalid_cases(cases, G_N_ELEMENTS(cases));
}

static void test_parse_invalid_duplicate_keys(void)
{
    static const InvalidCase cases[] = {
        { "{\"a\":1,\"a\":2}", 7, "duplicate key" },
        { "{\"a\":1,\"b\":2,\"\\u0061\":3}", 13, "duplicate key" },
        { "{\"x\":{\"a\":1,\"a\":1}}", 12, "duplicate key" },
    };
    g_autoptr(JsonValue) nested = parse_ok("{\"a\":{\"a\":{\"a\":1}}}");

    check_invalid_cases(cases, G_N_ELEMENTS(cases));
    g_assert_cmpuint(json_object_size(nested), ==, 1);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    g_test_add_func("/json/build/scalars", test_build_scalars);
    g_test_add_func("/json/build/string-copies", test_build_string_copies);
    g_test_add_func("/json/build/null-values", test_build_null_values);
    g_test_add_func("/json/build/key-order", test_build_key_order);
    g_test_add_func("/json/build/replace-key", test_build_replace_key);
    g_test_add_func("/json/build/nested", test_build_nested);
    g_test_add_func("/json/build/misuse", test_build_misuse);
    g_test_add_func("/json/access/defaults", test_access_defaults);
    g_test_add_func("/json/access/int-from-double", test_access_int_from_double);
    g_test_add_func("/json/access/iter", test_access_iter);
    g_test_add_func("/json/write/compact", test_write_compact);
    g_test_add_func("/json/write/pretty", test_write_pretty);
    g_test_add_func("/json/write/escapes", test_write_escapes);
    g_test_add_func("/json/write/invalid-utf8", test_write_invalid_utf8);
    g_test_add_func("/json/write/doubles", test_write_doubles);
    g_test_add_func("/json/parse/scalars", test_parse_scalars);
    g_test_add_func("/json/parse/escapes", test_parse_escapes);
    g_test_add_func("/json/parse/surrogates", test_parse_surrogates);
    g_test_add_func("/json/parse/utf8", test_parse_utf8);
    g_test_add_func("/json/parse/int64-limits", test_parse_int64_limits);
    g_test_add_func("/json/parse/doubles", test_parse_doubles);
    g_test_add_func("/json/parse/whitespace", test_parse_whitespace);
    g_test_add_func("/json/parse/round-trip", test_parse_round_trip);
    g_test_add_func("/json/parse/nesting", test_parse_nesting);
    g_test_add_func("/json/parse/length", test_parse_length);
    g_test_add_func("/json/parse/too-large", test_parse_too_large);
    g_test_add_func("/json/parse/error-format", test_parse_error_format);
    g_test_add_func("/json/parse/invalid/truncated", test_parse_invalid_truncated);
    g_test_add_func("/json/parse/invalid/trailing", test_parse_invalid_trailing);
    g_test_add_func("/json/parse/invalid/escapes", test_parse_invalid_escapes);
    g_test_add_func("/json/parse/invalid/surrogates", test_parse_invalid_surrogates);
    g_test_add_func("/json/parse/invalid/utf8", test_parse_invalid_utf8);
    g_test_add_func("/json/parse/invalid/control-chars", test_parse_invalid_control_chars);
    g_test_add_func("/json/parse/invalid/numbers", test_parse_invalid_numbers);
    g_test_add_func("/json/parse/invalid/bare-words", test_parse_invalid_bare_words);
    g_test_add_func("/json/parse/invalid/structure", test_parse_invalid_structure);
    g_test_add_func("/json/parse/invalid/duplicate-keys", test_parse_invalid_duplicate_keys);

    return g_test_run();
}
