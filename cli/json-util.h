/* json-util.h - the few helpers blkfuse adds to jansson (<jansson.h>, used directly
 * everywhere else): an autoptr for json_t, values made from C data that jansson would refuse
 * (a NULL or non-UTF-8 string, a number that is not finite), and member getters with a default.
 *
 * Ownership, as jansson has it: every json_t is reference counted; json_object_set_new and
 * json_array_append_new take the caller's reference, json_object_set and json_array_append add
 * one.  The constructors below return a new reference; the getters borrow from the tree. */
#ifndef CLI_JSON_UTIL_H
#define CLI_JSON_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include <jansson.h>

G_DEFINE_AUTOPTR_CLEANUP_FUNC(json_t, json_decref)

/* A JSON string of s, never NULL: JSON null for a NULL s, and bytes that are not UTF-8 (a path
 * may hold any) written as U+FFFD, where json_string() would fail. */
static inline json_t *json_util_string(const char *s)
{
    json_t *v = NULL;

    if (!s) {
        return json_null();
    }
    if (g_utf8_validate(s, -1, NULL)) {
        v = json_string(s);
    } else {
        g_autofree char *valid = g_utf8_make_valid(s, -1);
        v = json_string(valid);
    }
    return v ? v : json_null();
}

/* A JSON number of d, never NULL: JSON null for NaN and the infinities, which JSON cannot
 * write (json_real() fails on them). */
static inline json_t *json_util_real(double d)
{
    json_t *v = json_real(d);

    return v ? v : json_null();
}

/* The integer member key of obj (an integral real such as 2.0 counts too); dflt when obj is
 * not an object, or the member is absent, of another type or outside the int64 range. */
static inline int64_t json_util_get_int(const json_t *obj, const char *key, int64_t dflt)
{
    json_t *v = json_object_get(obj, key);
    double d;

    if (json_is_integer(v)) {
        return json_integer_value(v);
    }
    if (!json_is_real(v)) {
        return dflt;
    }
    d = json_real_value(v);
    /* -2^63 <= d < 2^63, and no fraction (NaN fails the comparisons). */
    if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == (double)(int64_t)d) {
        return (int64_t)d;
    }
    return dflt;
}

/* The boolean member key of obj; dflt when absent or of another type. */
static inline bool json_util_get_bool(const json_t *obj, const char *key, bool dflt)
{
    json_t *v = json_object_get(obj, key);

    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* The number member key of obj (integers convert); dflt when absent or of another type. */
static inline double json_util_get_double(const json_t *obj, const char *key, double dflt)
{
    json_t *v = json_object_get(obj, key);

    return json_is_number(v) ? json_number_value(v) : dflt;
}

#endif
