/* json.c - a small JSON value tree, a strict parser for untrusted input, and a writer. */
#include "config.h"
#include "cli/json.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

/* Limits for untrusted input. */
#define JSON_MAX_DEPTH 64
#define JSON_MAX_TEXT  (16 * 1024 * 1024)

typedef struct {
    char *key;
    JsonValue *value;
} JsonMember;

struct JsonValue {
    JsonType type;
    union {
        bool b;
        int64_t i;
        double d;
        char *s;
        GPtrArray *array;               /* of JsonValue *, owned */
        struct {
            GPtrArray *members;         /* of JsonMember *, owned, in insertion order */
            GHashTable *index;          /* key (borrowed from the member) -> JsonMember * */
        } object;
    } u;
};

static GQuark json_error_quark(void)
{
    return g_quark_from_static_string("json");
}

/* --- construction --------------------------------------------------------------- */

static JsonValue *json_new(JsonType type)
{
    JsonValue *v = g_new0(JsonValue, 1);

    v->type = type;
    return v;
}

JsonValue *json_new_null(void)
{
    return json_new(JSON_NULL);
}

JsonValue *json_new_bool(bool b)
{
    JsonValue *v = json_new(JSON_BOOL);

    v->u.b = b;
    return v;
}

JsonValue *json_new_int(int64_t n)
{
    JsonValue *v = json_new(JSON_INT);

    v->u.i = n;
    return v;
}

JsonValue *json_new_double(double d)
{
    JsonValue *v = json_new(JSON_DOUBLE);

    v->u.d = d;
    return v;
}

/* Takes ownership of s, which must not be NULL. */
static JsonValue *json_new_string_take(char *s)
{
    JsonValue *v = json_new(JSON_STRING);

    v->u.s = s;
    return v;
}

JsonValue *json_new_string(const char *s)
{
    if (!s) {
        return json_new_null();
    }
    return json_new_string_take(g_strdup(s));
}

JsonValue *json_new_array(void)
{
    JsonValue *v = json_new(JSON_ARRAY);

    v->u.array = g_ptr_array_new_with_free_func((GDestroyNotify)json_free);
    return v;
}

static void json_member_free(JsonMember *m)
{
    g_free(m->key);
    json_free(m->value);
    g_free(m);
}

JsonValue *json_new_object(void)
{
    JsonValue *v = json_new(JSON_OBJECT);

    v->u.object.members = g_ptr_array_new_with_free_func((GDestroyNotify)json_member_free);
    v->u.object.index = g_hash_table_new(g_str_hash, g_str_equal);
    return v;
}

void json_free(JsonValue *v)
{
    if (!v) {
        return;
    }
    switch (v->type) {
    case JSON_STRING:
        g_free(v->u.s);
        break;
    case JSON_ARRAY:
        g_ptr_array_unref(v->u.array);
        break;
    case JSON_OBJECT:
        /* The index borrows its keys from the members: drop it first. */
        g_hash_table_unref(v->u.object.index);
        g_ptr_array_unref(v->u.object.members);
        break;
    default:
        break;
    }
    g_free(v);
}

JsonType json_type(const JsonValue *v)
{
    return v ? v->type : JSON_NULL;
}

/* --- containers ----------------------------------------------------------------- */

void json_array_append(JsonValue *arr, JsonValue *v)
{
    if (!arr || arr->type != JSON_ARRAY || v == arr) {
        g_critical("%s: not an array", G_STRFUNC);
        json_free(v);
        return;
    }
    g_ptr_array_add(arr->u.array, v ? v : json_new_null());
}

void json_object_set(JsonValue *obj, const char *key, JsonValue *v)
{
    JsonMember *m;

    if (!obj || obj->type != JSON_OBJECT || !key || v == obj) {
        g_critical("%s: not an object or no key", G_STRFUNC);
        json_free(v);
        return;
    }
    if (!v) {
        v = json_new_null();
    }
    m = g_hash_table_lookup(obj->u.object.index, key);
    if (m) {
        json_free(m->value);
        m->value = v;
        return;
    }
    m = g_new(JsonMember, 1);
    m->key = g_strdup(key);
    m->value = v;
    g_ptr_array_add(obj->u.object.members, m);
    g_hash_table_insert(obj->u.object.index, m->key, m);
}

void json_object_set_string(JsonValue *obj, const char *key, const char *s)
{
    json_object_set(obj, key, json_new_string(s));
}

void json_object_set_int(JsonValue *obj, const char *key, int64_t n)
{
    json_object_set(obj, key, json_new_int(n));
}

void json_object_set_bool(JsonValue *obj, const char *key, bool b)
{
    json_object_set(obj, key, json_new_bool(b));
}

void json_object_set_double(JsonValue *obj, const char *key, double d)
{
    json_object_set(obj, key, json_new_double(d));
}

/* --- accessors ------------------------------------------------------------------ */

/* True if d is a whole number that int64_t can hold; stores it in *out. */
static bool double_to_int64(double d, int64_t *out)
{
    /* -2^63 is exact in a double, 2^63 is the first value past INT64_MAX; NaN fails both. */
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) {
        return false;
    }
    if ((double)(int64_t)d != d) {
        return false;
    }
    *out = (int64_t)d;
    return true;
}

JsonValue *json_object_get(const JsonValue *obj, const char *key)
{
    JsonMember *m;

    if (!obj || obj->type != JSON_OBJECT || !key) {
        return NULL;
    }
    m = g_hash_table_lookup(obj->u.object.index, key);
    return m ? m->value : NULL;
}

const char *json_object_get_string(const JsonValue *obj, const char *key)
{
    return json_get_string(json_object_get(obj, key));
}

int64_t json_object_get_int(const JsonValue *obj, const char *key, int64_t dflt)
{
    JsonValue *v = json_object_get(obj, key);
    int64_t n;

    if (v && v->type == JSON_INT) {
        return v->u.i;
    }
    if (v && v->type == JSON_DOUBLE && double_to_int64(v->u.d, &n)) {
        return n;
    }
    return dflt;
}

bool json_object_get_bool(const JsonValue *obj, const char *key, bool dflt)
{
    JsonValue *v = json_object_get(obj, key);

    return v && v->type == JSON_BOOL ? v->u.b : dflt;
}

double json_object_get_double(const JsonValue *obj, const char *key, double dflt)
{
    JsonValue *v = json_object_get(obj, key);

    if (v && v->type == JSON_DOUBLE) {
        return v->u.d;
    }
    if (v && v->type == JSON_INT) {
        return (double)v->u.i;
    }
    return dflt;
}

guint json_array_length(const JsonValue *arr)
{
    return arr && arr->type == JSON_ARRAY ? arr->u.array->len : 0;
}

JsonValue *json_array_get(const JsonValue *arr, guint i)
{
    if (i >= json_array_length(arr)) {
        return NULL;
    }
    return g_ptr_array_index(arr->u.array, i);
}

guint json_object_size(const JsonValue *obj)
{
    return obj && obj->type == JSON_OBJECT ? obj->u.object.members->len : 0;
}

bool json_object_iter(const JsonValue *obj, guint i, const char **key, JsonValue **value)
{
    JsonMember *m;

    if (i >= json_object_size(obj)) {
        return false;
    }
    m = g_ptr_array_index(obj->u.object.members, i);
    if (key) {
        *key = m->key;
    }
    if (value) {
        *value = m->value;
    }
    return true;
}

bool json_get_bool(const JsonValue *v)
{
    return v && v->type == JSON_BOOL ? v->u.b : false;
}

int64_t json_get_int(const JsonValue *v)
{
    int64_t n;

    if (v && v->type == JSON_INT) {
        return v->u.i;
    }
    if (v && v->type == JSON_DOUBLE && double_to_int64(v->u.d, &n)) {
        return n;
    }
    return 0;
}

double json_get_double(const JsonValue *v)
{
    if (v && v->type == JSON_DOUBLE) {
        return v->u.d;
    }
    if (v && v->type == JSON_INT) {
        return (double)v->u.i;
    }
    return 0.0;
}

const char *json_get_string(const JsonValue *v)
{
    return v && v->type == JSON_STRING ? v->u.s : NULL;
}

/* --- UTF-8 ---------------------------------------------------------------------- */

static bool is_cont(guchar c)
{
    return (c & 0xc0) == 0x80;
}

/*
 * Length of the well-formed UTF-8 sequence at p (at most avail bytes), or 0 if it is not
 * one: stray continuation bytes, overlong forms, surrogates and code points past U+10FFFF
 * are all rejected (RFC 3629).
 */
static gsize utf8_sequence_length(const guchar *p, gsize avail)
{
    guchar c = p[0];
    guchar lo = 0x80, hi = 0xbf;        /* allowed range of the second byte */
    gsize n;

    if (c < 0x80) {
        return 1;
    } else if (c < 0xc2) {
        return 0;
    } else if (c < 0xe0) {
        n = 2;
    } else if (c < 0xf0) {
        n = 3;
        if (c == 0xe0) {
            lo = 0xa0;                  /* overlong */
        } else if (c == 0xed) {
            hi = 0x9f;                  /* surrogates */
        }
    } else if (c < 0xf5) {
        n = 4;
        if (c == 0xf0) {
            lo = 0x90;                  /* overlong */
        } else if (c == 0xf4) {
            hi = 0x8f;                  /* past U+10FFFF */
        }
    } else {
        return 0;
    }
    if (avail < n || p[1] < lo || p[1] > hi) {
        return 0;
    }
    for (gsize k = 2; k < n; k++) {
        if (!is_cont(p[k])) {
            return 0;
        }
    }
    return n;
}

/* --- parser --------------------------------------------------------------------- */

typedef struct {
    const char *text;
    gsize len;
    gsize pos;
    GError **errp;
} JsonParser;

static void G_GNUC_PRINTF(3, 4) parse_error(JsonParser *p, gsize offset, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(p->errp, json_error_quark(), 0, "invalid JSON at offset %zu: %s", offset, msg);
}

static bool at_end(JsonParser *p)
{
    return p->pos >= p->len;
}

static guchar peek(JsonParser *p)
{
    return (guchar)p->text[p->pos];
}

/* Sets the error for the byte at the current position, or for the end of input. */
static void unexpected(JsonParser *p, const char *where)
{
    guchar c;

    if (at_end(p)) {
        parse_error(p, p->pos, "unexpected end of input");
        return;
    }
    c = peek(p);
    if (g_ascii_isprint(c)) {
        parse_error(p, p->pos, "unexpected character '%c'%s", c, where);
    } else {
        parse_error(p, p->pos, "unexpected byte 0x%02x%s", c, where);
    }
}

static void skip_whitespace(JsonParser *p)
{
    while (!at_end(p)) {
        char c = p->text[p->pos];

        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            break;
        }
        p->pos++;
    }
}

/* Checks that a value can start here, or sets "unexpected end of input". */
static bool need_more(JsonParser *p)
{
    if (at_end(p)) {
        parse_error(p, p->pos, "unexpected end of input");
        return false;
    }
    return true;
}

/* Reads the 4 hex digits of a \u escape at p->pos + 2 (p->pos is on the backslash). */
static bool parse_hex4(JsonParser *p, gunichar *out)
{
    gunichar cp = 0;

    for (gsize k = 2; k < 6; k++) {
        int digit;

        if (p->pos + k >= p->len) {
            parse_error(p, p->len, "unexpected end of input");
            return false;
        }
        digit = g_ascii_xdigit_value(p->text[p->pos + k]);
        if (digit < 0) {
            parse_error(p, p->pos, "invalid \\u escape");
            return false;
        }
        cp = cp << 4 | (gunichar)digit;
    }
    *out = cp;
    return true;
}

/* Parses one \u escape (two for a surrogate pair) at p->pos and appends it as UTF-8. */
static bool parse_unicode_escape(JsonParser *p, GString *out)
{
    gsize start = p->pos;
    gunichar cp, low;

    if (!parse_hex4(p, &cp)) {
        return false;
    }
    p->pos += 6;
    if (cp >= 0xdc00 && cp <= 0xdfff) {
        parse_error(p, start, "lone low surrogate in \\u escape");
        return false;
    }
    if (cp >= 0xd800 && cp <= 0xdbff) {
        if (p->len - p->pos < 2 || p->text[p->pos] != '\\' || p->text[p->pos + 1] != 'u') {
            parse_error(p, start, "lone high surrogate in \\u escape");
            return false;
        }
        if (!parse_hex4(p, &low)) {
            return false;
        }
        if (low < 0xdc00 || low > 0xdfff) {
            parse_error(p, start, "lone high surrogate in \\u escape");
            return false;
        }
        p->pos += 6;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
    }
    if (cp == 0) {
        parse_error(p, start, "\\u0000 is not allowed in strings");
        return false;
    }
    g_string_append_unichar(out, cp);
    return true;
}

/* Parses the string at p->pos (on the opening quote). Returns it, or NULL with the error set. */
static char *parse_string(JsonParser *p)
{
    g_autoptr(GString) out = g_string_new(NULL);

    p->pos++;
    for (;;) {
        gsize run = p->pos;
        guchar c;
        gsize n;

        /* Take a run of plain ASCII at once. */
        while (!at_end(p) && peek(p) >= 0x20 && peek(p) < 0x80 && peek(p) != '"' &&
               peek(p) != '\\') {
            p->pos++;
        }
        if (p->pos > run) {
            g_string_append_len(out, p->text + run, p->pos - run);
        }
        if (at_end(p)) {
            parse_error(p, p->pos, "unexpected end of input in string");
            return NULL;
        }
        c = peek(p);
        if (c == '"') {
            p->pos++;
            return g_string_free(g_steal_pointer(&out), false);
        }
        if (c == '\\') {
            char e;

            if (p->pos + 1 >= p->len) {
                parse_error(p, p->len, "unexpected end of input in string");
                return NULL;
            }
            e = p->text[p->pos + 1];
            switch (e) {
            case '"':  g_string_append_c(out, '"');  break;
            case '\\': g_string_append_c(out, '\\'); break;
            case '/':  g_string_append_c(out, '/');  break;
            case 'b':  g_string_append_c(out, '\b'); break;
            case 'f':  g_string_append_c(out, '\f'); break;
            case 'n':  g_string_append_c(out, '\n'); break;
            case 'r':  g_string_append_c(out, '\r'); break;
            case 't':  g_string_append_c(out, '\t'); break;
            case 'u':
                if (!parse_unicode_escape(p, out)) {
                    return NULL;
                }
                continue;
            default:
                if (g_ascii_isprint(e)) {
                    parse_error(p, p->pos, "invalid escape '\\%c'", e);
                } else {
                    parse_error(p, p->pos, "invalid escape");
                }
                return NULL;
            }
            p->pos += 2;
            continue;
        }
        if (c < 0x20) {
            parse_error(p, p->pos, "control character 0x%02x in string", c);
            return NULL;
        }
        n = utf8_sequence_length((const guchar *)p->text + p->pos, p->len - p->pos);
        if (n == 0) {
            parse_error(p, p->pos, "invalid UTF-8 in string");
            return NULL;
        }
        g_string_append_len(out, p->text + p->pos, n);
        p->pos += n;
    }
}

static void skip_digits(JsonParser *p)
{
    while (!at_end(p) && g_ascii_isdigit(peek(p))) {
        p->pos++;
    }
}

/* Requires at least one digit at p->pos, then skips them all. */
static bool need_digits(JsonParser *p, const char *after)
{
    if (at_end(p) || !g_ascii_isdigit(peek(p))) {
        if (at_end(p)) {
            parse_error(p, p->pos, "unexpected end of input");
        } else {
            parse_error(p, p->pos, "expected a digit after %s", after);
        }
        return false;
    }
    skip_digits(p);
    return true;
}

/* Number grammar of RFC 8259: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static JsonValue *parse_number(JsonParser *p)
{
    gsize start = p->pos;
    bool integral = true;
    g_autofree char *token = NULL;
    double d;

    if (peek(p) == '-') {
        p->pos++;
    }
    if (!need_more(p)) {
        return NULL;
    }
    if (peek(p) == '0') {
        p->pos++;
        if (!at_end(p) && g_ascii_isdigit(peek(p))) {
            parse_error(p, start, "leading zeros are not allowed");
            return NULL;
        }
    } else if (!need_digits(p, "'-'")) {
        return NULL;
    }
    if (!at_end(p) && peek(p) == '.') {
        integral = false;
        p->pos++;
        if (!need_digits(p, "'.'")) {
            return NULL;
        }
    }
    if (!at_end(p) && (peek(p) == 'e' || peek(p) == 'E')) {
        integral = false;
        p->pos++;
        if (!at_end(p) && (peek(p) == '+' || peek(p) == '-')) {
            p->pos++;
        }
        if (!need_digits(p, "the exponent")) {
            return NULL;
        }
    }

    /* The text need not be NUL-terminated: convert a copy. */
    token = g_strndup(p->text + start, p->pos - start);
    if (integral) {
        gint64 n;

        errno = 0;
        n = g_ascii_strtoll(token, NULL, 10);
        if (errno != ERANGE) {
            return json_new_int(n);
        }
    }
    d = g_ascii_strtod(token, NULL);
    if (isinf(d)) {
        parse_error(p, start, "number out of range");
        return NULL;
    }
    return json_new_double(d);
}

static JsonValue *parse_literal(JsonParser *p)
{
    static const struct {
        const char *word;
        JsonType type;
        bool b;
    } literals[] = {
        { "true",  JSON_BOOL, true },
        { "false", JSON_BOOL, false },
        { "null",  JSON_NULL, false },
    };

    for (gsize k = 0; k < G_N_ELEMENTS(literals); k++) {
        gsize n = strlen(literals[k].word);

        if (p->len - p->pos >= n && memcmp(p->text + p->pos, literals[k].word, n) == 0) {
            p->pos += n;
            return literals[k].type == JSON_BOOL ? json_new_bool(literals[k].b) : json_new_null();
        }
    }
    parse_error(p, p->pos, "invalid literal");
    return NULL;
}

static JsonValue *parse_value(JsonParser *p, int depth);

/* depth counts the containers enclosing the elements, this one included. */
static JsonValue *parse_array(JsonParser *p, int depth)
{
    g_autoptr(JsonValue) arr = json_new_array();

    p->pos++;
    skip_whitespace(p);
    if (!at_end(p) && peek(p) == ']') {
        p->pos++;
        return g_steal_pointer(&arr);
    }
    for (;;) {
        JsonValue *elem = parse_value(p, depth);

        if (!elem) {
            return NULL;
        }
        g_ptr_array_add(arr->u.array, elem);
        skip_whitespace(p);
        if (!at_end(p) && peek(p) == ',') {
            p->pos++;
        } else if (!at_end(p) && peek(p) == ']') {
            p->pos++;
            return g_steal_pointer(&arr);
        } else {
            if (at_end(p)) {
                unexpected(p, "");
            } else {
                parse_error(p, p->pos, "expected ',' or ']'");
            }
            return NULL;
        }
    }
}

static JsonValue *parse_object(JsonParser *p, int depth)
{
    g_autoptr(JsonValue) obj = json_new_object();

    p->pos++;
    skip_whitespace(p);
    if (!at_end(p) && peek(p) == '}') {
        p->pos++;
        return g_steal_pointer(&obj);
    }
    for (;;) {
        g_autofree char *key = NULL;
        gsize key_start;
        JsonValue *value;

        skip_whitespace(p);
        if (!need_more(p)) {
            return NULL;
        }
        if (peek(p) != '"') {
            parse_error(p, p->pos, "expected a string key");
            return NULL;
        }
        key_start = p->pos;
        key = parse_string(p);
        if (!key) {
            return NULL;
        }
        if (json_object_get(obj, key)) {
            /* Parsers disagree on which one wins: refuse rather than guess. */
            parse_error(p, key_start, "duplicate key");
            return NULL;
        }
        skip_whitespace(p);
        if (!need_more(p)) {
            return NULL;
        }
        if (peek(p) != ':') {
            parse_error(p, p->pos, "expected ':'");
            return NULL;
        }
        p->pos++;
        value = parse_value(p, depth);
        if (!value) {
            return NULL;
        }
        json_object_set(obj, key, value);
        skip_whitespace(p);
        if (!at_end(p) && peek(p) == ',') {
            p->pos++;
        } else if (!at_end(p) && peek(p) == '}') {
            p->pos++;
            return g_steal_pointer(&obj);
        } else {
            if (at_end(p)) {
                unexpected(p, "");
            } else {
                parse_error(p, p->pos, "expected ',' or '}'");
            }
            return NULL;
        }
    }
}

/* Parses the value at p->pos (after whitespace); depth containers enclose it. */
static JsonValue *parse_value(JsonParser *p, int depth)
{
    guchar c;
    char *s;

    skip_whitespace(p);
    if (!need_more(p)) {
        return NULL;
    }
    c = peek(p);
    switch (c) {
    case '[':
    case '{':
        if (depth >= JSON_MAX_DEPTH) {
            parse_error(p, p->pos, "nesting deeper than %d levels", JSON_MAX_DEPTH);
            return NULL;
        }
        return c == '[' ? parse_array(p, depth + 1) : parse_object(p, depth + 1);
    case '"':
        s = parse_string(p);
        return s ? json_new_string_take(s) : NULL;
    case '-':
    case '0' ... '9':
        return parse_number(p);
    default:
        if (g_ascii_isalpha(c)) {
            return parse_literal(p);
        }
        unexpected(p, "");
        return NULL;
    }
}

JsonValue *json_parse(const char *text, gsize len, GError **errp)
{
    JsonParser p = { .text = text, .len = len, .pos = 0, .errp = errp };
    g_autoptr(JsonValue) v = NULL;

    g_return_val_if_fail(text != NULL || len == 0, NULL);

    if (len > JSON_MAX_TEXT) {
        parse_error(&p, JSON_MAX_TEXT, "text longer than 16 MiB");
        return NULL;
    }
    v = parse_value(&p, 0);
    if (!v) {
        return NULL;
    }
    skip_whitespace(&p);
    if (!at_end(&p)) {
        unexpected(&p, " after the value");
        return NULL;
    }
    return g_steal_pointer(&v);
}

/* --- writer --------------------------------------------------------------------- */

static void write_string(GString *out, const char *s)
{
    const guchar *p = (const guchar *)s;
    const guchar *end = p + strlen(s);

    g_string_append_c(out, '"');
    while (p < end) {
        const guchar *run = p;
        guchar c;
        gsize n;

        /* Copy a run of bytes that need no escape at once. */
        while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\') {
            p++;
        }
        if (p > run) {
            g_string_append_len(out, (const char *)run, p - run);
            continue;
        }
        c = *p;
        if (c == '"' || c == '\\') {
            g_string_append_c(out, '\\');
            g_string_append_c(out, c);
            p++;
        } else if (c < 0x20) {
            g_string_append_printf(out, "\\u%04x", c);
            p++;
        } else if ((n = utf8_sequence_length(p, end - p)) == 0) {
            g_string_append(out, "\\ufffd");
            p++;
        } else {
            g_string_append_len(out, (const char *)p, n);
            p += n;
        }
    }
    g_string_append_c(out, '"');
}

static void write_double(GString *out, double d)
{
    char buf[G_ASCII_DTOSTR_BUF_SIZE];

    if (!isfinite(d)) {
        g_string_append(out, "null");
        return;
    }
    /* "%.17g" is exact; g_ascii_formatd ignores the locale's decimal comma. */
    g_ascii_formatd(buf, sizeof(buf), "%.17g", d);
    g_string_append(out, buf);
    if (!strpbrk(buf, ".eE")) {
        /* Keep it a double when read back: 1 -> 1.0, -0 -> -0.0. */
        g_string_append(out, ".0");
    }
}

static void write_newline(GString *out, int indent)
{
    g_string_append_c(out, '\n');
    for (int k = 0; k < indent; k++) {
        g_string_append(out, "  ");
    }
}

/* indent < 0 writes the compact form; otherwise the pretty one at that level. */
static void write_value(GString *out, const JsonValue *v, int indent)
{
    bool pretty = indent >= 0;
    guint n;

    switch (json_type(v)) {
    case JSON_NULL:
        g_string_append(out, "null");
        break;
    case JSON_BOOL:
        g_string_append(out, v->u.b ? "true" : "false");
        break;
    case JSON_INT:
        g_string_append_printf(out, "%" PRId64, v->u.i);
        break;
    case JSON_DOUBLE:
        write_double(out, v->u.d);
        break;
    case JSON_STRING:
        write_string(out, v->u.s);
        break;
    case JSON_ARRAY:
        n = v->u.array->len;
        g_string_append_c(out, '[');
        for (guint i = 0; i < n; i++) {
            if (i > 0) {
                g_string_append_c(out, ',');
            }
            if (pretty) {
                write_newline(out, indent + 1);
            }
            write_value(out, g_ptr_array_index(v->u.array, i), pretty ? indent + 1 : -1);
        }
        if (pretty && n > 0) {
            write_newline(out, indent);
        }
        g_string_append_c(out, ']');
        break;
    case JSON_OBJECT:
        n = v->u.object.members->len;
        g_string_append_c(out, '{');
        for (guint i = 0; i < n; i++) {
            JsonMember *m = g_ptr_array_index(v->u.object.members, i);

            if (i > 0) {
                g_string_append_c(out, ',');
            }
            if (pretty) {
                write_newline(out, indent + 1);
            }
            write_string(out, m->key);
            g_string_append(out, pretty ? ": " : ":");
            write_value(out, m->value, pretty ? indent + 1 : -1);
        }
        if (pretty && n > 0) {
            write_newline(out, indent);
        }
        g_string_append_c(out, '}');
        break;
    }
}

char *json_to_string(const JsonValue *v)
{
    GString *out = g_string_new(NULL);

    write_value(out, v, -1);
    return g_string_free(out, false);
}

char *json_to_string_pretty(const JsonValue *v)
{
    GString *out = g_string_new(NULL);

    write_value(out, v, 0);
    return g_string_free(out, false);
}
