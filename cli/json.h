/* json.h - a small JSON value tree, parser and writer for the control protocol. */
#ifndef CLI_JSON_H
#define CLI_JSON_H

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

typedef enum { JSON_NULL, JSON_BOOL, JSON_INT, JSON_DOUBLE, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonType;
typedef struct JsonValue JsonValue;   /* opaque */

JsonValue *json_new_null(void);
JsonValue *json_new_bool(bool b);
JsonValue *json_new_int(int64_t n);
JsonValue *json_new_double(double d);
JsonValue *json_new_string(const char *s);        /* copies; NULL s gives a JSON null */
JsonValue *json_new_array(void);
JsonValue *json_new_object(void);                 /* keeps insertion order when written */
void json_free(JsonValue *v);                     /* NULL-safe, recursive */
G_DEFINE_AUTOPTR_CLEANUP_FUNC(JsonValue, json_free)
JsonType json_type(const JsonValue *v);           /* JSON_NULL for a NULL v */

/* Containers take ownership of the added value. Setting an existing key replaces it
 * (the member keeps its position).  A NULL v is stored as a JSON null. */
void json_array_append(JsonValue *arr, JsonValue *v);
void json_object_set(JsonValue *obj, const char *key, JsonValue *v);
/* Convenience setters */
void json_object_set_string(JsonValue *obj, const char *key, const char *s);
void json_object_set_int(JsonValue *obj, const char *key, int64_t n);
void json_object_set_bool(JsonValue *obj, const char *key, bool b);
void json_object_set_double(JsonValue *obj, const char *key, double d);

/* Accessors: return NULL / the default when absent or of another type. Never abort.
 * Returned values and strings are borrowed from the tree. */
JsonValue *json_object_get(const JsonValue *obj, const char *key);
const char *json_object_get_string(const JsonValue *obj, const char *key);   /* NULL if absent/not string */
int64_t json_object_get_int(const JsonValue *obj, const char *key, int64_t dflt); /* accepts integral doubles too */
bool json_object_get_bool(const JsonValue *obj, const char *key, bool dflt);
double json_object_get_double(const JsonValue *obj, const char *key, double dflt); /* ints convert */
guint json_array_length(const JsonValue *arr);   /* 0 if not an array */
JsonValue *json_array_get(const JsonValue *arr, guint i);   /* NULL past the end */
guint json_object_size(const JsonValue *obj);    /* 0 if not an object */
/* Iterate object members in order: returns the i-th key and value, false past the end.
 * key and value may be NULL. */
bool json_object_iter(const JsonValue *obj, guint i, const char **key, JsonValue **value);
/* Scalar accessors: false / 0 / 0.0 / NULL for another type, with the same conversions as above. */
bool json_get_bool(const JsonValue *v);  int64_t json_get_int(const JsonValue *v);
double json_get_double(const JsonValue *v);  const char *json_get_string(const JsonValue *v);

/* Parse a complete JSON text (surrounding whitespace allowed; anything else after the value is
 * an error). Returns NULL with *errp set (GError domain: g_quark_from_static_string("json"),
 * code 0) and a message with the byte offset: "invalid JSON at offset 12: expected ':'". Nesting
 * deeper than 64 levels and texts > 16 MiB are errors (untrusted input). Full string escapes
 * including \uXXXX with surrogate pairs to UTF-8; reject invalid UTF-8 and control chars in strings;
 * numbers: integers that fit int64 become JSON_INT, others JSON_DOUBLE.
 * Also rejected, because C strings and lookups by key could not represent them faithfully:
 * \u0000 in strings, duplicate keys in an object, and numbers too large for a double. */
JsonValue *json_parse(const char *text, gsize len, GError **errp);

/* Serialize compactly on one line (no newline at the end): {"a":1,"b":[true,null]}. Strings
 * escaped per RFC 8259 (control characters as \u00XX, '"' and '\\' escaped; '/' not escaped);
 * doubles with "%.17g" but written so they round-trip and always stay valid JSON (no nan/inf:
 * write null). Caller frees.  Bytes of a string that are not valid UTF-8 are written as
 * \ufffd so that the output is always valid JSON. */
char *json_to_string(const JsonValue *v);
/* Pretty form for humans: 2-space indentation, one member per line, no newline at the end.
 * Caller frees. */
char *json_to_string_pretty(const JsonValue *v);

#endif
