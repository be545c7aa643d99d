/* ts_decoder.c - Confluent-framed Avro records into reader values (ts_avro.h).
 *
 * The frame gives the writer id. Per writer id the decoder caches a plan:
 * "direct" when the writer schema equals the reader (or one branch of the
 * reader union; avro-c then reads straight into the reader value), else
 * "resolve": avro-c reads into a value of the writer schema and resolve_copy()
 * applies Avro schema resolution into the reader value. avro-c has its own
 * resolver (avro_resolved_writer_new) but it cannot fill reader fields that
 * are missing from the writer from their defaults (avro-c does not keep
 * defaults at all), and that is the common evolution case, so resolution is
 * done here. Before avro-c sees any bytes, wire_check() walks them against the
 * writer schema with strict bounds: avro-c trusts length prefixes (it mallocs
 * whatever a string length says) and loops on any block count, so unchecked
 * input could exhaust memory or spin.
 */
#include "ts_avro_int.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WIRE_MAX_DEPTH 64
#define RESOLVE_MAX_DEPTH 64

/* ---- wire check ------------------------------------------------------------
 * Walks Avro binary against a schema without allocating, proving every length,
 * index and count is in bounds so avro-c can then read it safely. */

typedef struct wire {
    const uint8_t *p;
    size_t len;
    size_t pos;
    size_t items_left;      /* bounds elements of zero-size types (arrays of null) */
    const char *bad_string; /* why the check failed on a string, if it did */
} wire;

static int wire_varint(wire *w, int maxbytes, int64_t *out) {
    uint64_t v = 0;
    int i;
    for (i = 0; i < maxbytes; i++) {
        uint8_t b;
        if (w->pos >= w->len)
            return -1;
        b = w->p[w->pos++];
        if (i == 9 && (b & 0x7e) != 0) /* more than 64 bits */
            return -1;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *out = (int64_t)((v >> 1) ^ (~(v & 1) + 1));
            return 0;
        }
    }
    return -1;
}

static int utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}

/* Takes a string (or map key) of n bytes at the walker's position, or names
 * what is wrong with it: not UTF-8, or a NUL byte inside. U+0000 is valid
 * UTF-8, but nothing downstream can hold it: processors read text as C
 * strings (it would cut the text short, silently), and PostgreSQL's text
 * refuses it (a row retried for good). */
static int wire_string(wire *w, size_t n) {
    const uint8_t *s = w->p + w->pos;
    if (memchr(s, 0, n) != NULL)
        w->bad_string = "a string holds a NUL byte";
    else if (!utf8_valid(s, n))
        w->bad_string = "a string is not UTF-8";
    else
        return 0;
    return -1;
}

static int wire_check(wire *w, avro_schema_t schema, int depth) {
    int64_t v;
    size_t i;

    if (depth > WIRE_MAX_DEPTH)
        return -1;
    switch (avro_typeof(schema)) {
    case AVRO_NULL:
        return 0;
    case AVRO_BOOLEAN:
        if (w->pos >= w->len || w->p[w->pos] > 1)
            return -1;
        w->pos++;
        return 0;
    case AVRO_INT32:
        if (wire_varint(w, 5, &v) != 0 || v < INT32_MIN || v > INT32_MAX)
            return -1;
        return 0;
    case AVRO_INT64:
        return wire_varint(w, 10, &v);
    case AVRO_FLOAT:
    case AVRO_DOUBLE: {
        size_t n = avro_typeof(schema) == AVRO_FLOAT ? 4 : 8;
        if (w->len - w->pos < n)
            return -1;
        w->pos += n;
        return 0;
    }
    case AVRO_STRING:
    case AVRO_BYTES:
        if (wire_varint(w, 10, &v) != 0 || v < 0 || (uint64_t)v > w->len - w->pos)
            return -1;
        if (avro_typeof(schema) == AVRO_STRING && wire_string(w, (size_t)v) != 0)
            return -1;
        w->pos += (size_t)v;
        return 0;
    case AVRO_FIXED: {
        int64_t n = avro_schema_fixed_size(schema);
        if (n < 0 || (uint64_t)n > w->len - w->pos)
            return -1;
        w->pos += (size_t)n;
        return 0;
    }
    case AVRO_ENUM:
        if (wire_varint(w, 5, &v) != 0 || v < 0 || v >= avro_schema_enum_number_of_symbols(schema))
            return -1;
        return 0;
    case AVRO_UNION:
        if (wire_varint(w, 10, &v) != 0 || v < 0 || (uint64_t)v >= avro_schema_union_size(schema))
            return -1;
        return wire_check(w, avro_schema_union_branch(schema, (int)v), depth + 1);
    case AVRO_RECORD:
        for (i = 0; i < avro_schema_record_size(schema); i++) {
            if (wire_check(w, avro_schema_record_field_get_by_index(schema, (int)i), depth + 1) !=
                0)
                return -1;
        }
        return 0;
    case AVRO_ARRAY:
    case AVRO_MAP: {
        int is_map = avro_typeof(schema) == AVRO_MAP;
        avro_schema_t items =
            is_map ? avro_schema_map_values(schema) : avro_schema_array_items(schema);
        for (;;) {
            int64_t count;
            if (wire_varint(w, 10, &count) != 0)
                return -1;
            if (count == 0)
                return 0;
            if (count < 0) {
                int64_t bsize;
                if (count == INT64_MIN || wire_varint(w, 10, &bsize) != 0 || bsize < 0 ||
                    (uint64_t)bsize > w->len - w->pos)
                    return -1;
                count = -count;
            }
            if ((uint64_t)count > w->items_left)
                return -1;
            w->items_left -= (size_t)count;
            for (; count > 0; count--) {
                if (is_map) {
                    if (wire_varint(w, 10, &v) != 0 || v < 0 || (uint64_t)v > w->len - w->pos)
                        return -1;
                    if (wire_string(w, (size_t)v) != 0)
                        return -1;
                    w->pos += (size_t)v;
                }
                if (wire_check(w, items, depth + 1) != 0)
                    return -1;
            }
        }
    }
    case AVRO_LINK:
        return wire_check(w, avro_schema_link_target(schema), depth + 1);
    default:
        return -1;
    }
}

/* ---- resolution ---------------------------------------------------------- */

/* Can a writer value of type w be read as r (Avro promotion rules)? */
static int promotes(avro_type_t w, avro_type_t r) {
    switch (w) {
    case AVRO_INT32:
        return r == AVRO_INT64 || r == AVRO_FLOAT || r == AVRO_DOUBLE;
    case AVRO_INT64:
        return r == AVRO_FLOAT || r == AVRO_DOUBLE;
    case AVRO_FLOAT:
        return r == AVRO_DOUBLE;
    case AVRO_STRING:
        return r == AVRO_BYTES;
    case AVRO_BYTES:
        return r == AVRO_STRING;
    default:
        return 0;
    }
}

/* The reader-union branch a writer schema resolves to, or -1. */
static int union_match(avro_schema_t runion, avro_schema_t wschema) {
    size_t n = avro_schema_union_size(runion);
    avro_type_t wt = avro_typeof(wschema);
    size_t i;
    for (i = 0; i < n; i++) {
        avro_schema_t b = ts_avro_unlink(avro_schema_union_branch(runion, (int)i));
        if (avro_typeof(b) != wt)
            continue;
        if (!ts_avro_is_named(wt) || strcmp(avro_schema_name(b), avro_schema_name(wschema)) == 0)
            return (int)i;
    }
    for (i = 0; i < n; i++) {
        avro_schema_t b = ts_avro_unlink(avro_schema_union_branch(runion, (int)i));
        if (promotes(wt, avro_typeof(b)))
            return (int)i;
    }
    return -1;
}

/* JSON definition of reader record field i, or NULL. */
static const json_t *record_field_json(const ts_schema_def *def, avro_schema_t record, size_t i) {
    const json_t *jrec = ts_schemas_named(def, record);
    return jrec != NULL ? json_array_get(json_object_get(jrec, "fields"), i) : NULL;
}

/* Copies writer value src into reader value dst with Avro schema resolution. */
static int resolve_copy(ts_avro_jctx *c, avro_value_t *src, avro_value_t *dst, int depth) {
    avro_type_t st = avro_value_get_type(src);
    avro_type_t dt = avro_value_get_type(dst);
    avro_schema_t ss = ts_avro_unlink(avro_value_get_schema(src));
    avro_schema_t ds = ts_avro_unlink(avro_value_get_schema(dst));
    avro_value_t sb, db;
    size_t i, n = 0;

    if (depth > RESOLVE_MAX_DEPTH)
        return ts_avro_fail(c, "value nested too deeply");
    if (st == AVRO_UNION) {
        if (avro_value_get_current_branch(src, &sb) != 0)
            return ts_avro_fail(c, "writer union has no branch");
        return resolve_copy(c, &sb, dst, depth + 1);
    }
    if (dt == AVRO_UNION) {
        int b = union_match(ds, ss);
        if (b < 0)
            return ts_avro_fail(c, "writer type %s matches no branch of the reader union",
                                avro_schema_type_name(ss));
        if (avro_value_set_branch(dst, b, &db) != 0)
            return ts_avro_fail(c, "%s", avro_strerror());
        return resolve_copy(c, src, &db, depth + 1);
    }
    if (st != dt && !promotes(st, dt))
        return ts_avro_fail(c, "writer type %s cannot be read as %s", avro_schema_type_name(ss),
                            avro_schema_type_name(ds));
    if (ts_avro_is_named(st) && strcmp(avro_schema_name(ss), avro_schema_name(ds)) != 0)
        return ts_avro_fail(c, "writer type %s cannot be read as %s", avro_schema_name(ss),
                            avro_schema_name(ds));

    switch (st) {
    case AVRO_NULL:
        return avro_value_set_null(dst) == 0 ? 0 : ts_avro_fail(c, "%s", avro_strerror());
    case AVRO_BOOLEAN: {
        int b;
        avro_value_get_boolean(src, &b);
        return avro_value_set_boolean(dst, b);
    }
    case AVRO_INT32:
    case AVRO_INT64:
    case AVRO_FLOAT:
    case AVRO_DOUBLE: {
        int64_t l = 0;
        double d = 0;
        if (st == AVRO_INT32) {
            int32_t x = 0;
            avro_value_get_int(src, &x);
            l = x;
            d = x;
        } else if (st == AVRO_INT64) {
            avro_value_get_long(src, &l);
            d = (double)l;
        } else if (st == AVRO_FLOAT) {
            float f = 0;
            avro_value_get_float(src, &f);
            d = f;
        } else {
            avro_value_get_double(src, &d);
        }
        switch (dt) {
        case AVRO_INT32:
            return avro_value_set_int(dst, (int32_t)l);
        case AVRO_INT64:
            return avro_value_set_long(dst, l);
        case AVRO_FLOAT:
            return avro_value_set_float(dst, (float)d);
        default:
            return avro_value_set_double(dst, d);
        }
    }
    case AVRO_STRING:
    case AVRO_BYTES: {
        const void *p = NULL;
        size_t sz = 0;
        if (st == AVRO_STRING) {
            const char *s = NULL;
            avro_value_get_string(src, &s, &sz);
            p = s;
            sz = sz > 0 ? sz - 1 : 0; /* avro-c string sizes count the NUL */
        } else {
            avro_value_get_bytes(src, &p, &sz);
        }
        if (dt == AVRO_STRING) {
            /* set_string_len wants the size with a NUL that bytes lack. */
            char *tmp = malloc(sz + 1);
            int rc;
            if (tmp == NULL)
                return ts_avro_fail(c, "out of memory");
            memcpy(tmp, p, sz);
            tmp[sz] = '\0';
            rc = avro_value_set_string_len(dst, tmp, sz + 1);
            free(tmp);
            return rc;
        }
        return avro_value_set_bytes(dst, (void *)p, sz);
    }
    case AVRO_FIXED: {
        const void *p = NULL;
        size_t sz = 0;
        avro_value_get_fixed(src, &p, &sz);
        if ((int64_t)sz != avro_schema_fixed_size(ds))
            return ts_avro_fail(c, "fixed size differs");
        return avro_value_set_fixed(dst, (void *)p, sz);
    }
    case AVRO_ENUM: {
        int idx = 0, ridx;
        const char *sym;
        avro_value_get_enum(src, &idx);
        sym = avro_schema_enum_get(ss, idx);
        ridx = sym != NULL ? avro_schema_enum_get_by_name(ds, sym) : -1;
        if (ridx < 0) {
            const json_t *jenum = ts_schemas_named(c->def, ds);
            const char *dflt = json_string_value(json_object_get(jenum, "default"));
            ridx = dflt != NULL ? avro_schema_enum_get_by_name(ds, dflt) : -1;
            if (ridx < 0)
                return ts_avro_fail(c, "symbol '%s' is not in the reader enum", sym ? sym : "?");
        }
        return avro_value_set_enum(dst, ridx);
    }
    case AVRO_ARRAY:
        avro_value_get_size(src, &n);
        for (i = 0; i < n; i++) {
            size_t old = ts_avro_path_push(c, "[%zu]", i);
            if (avro_value_get_by_index(src, i, &sb, NULL) != 0 ||
                avro_value_append(dst, &db, NULL) != 0 || resolve_copy(c, &sb, &db, depth + 1) != 0)
                return -1;
            c->path[old] = '\0';
        }
        return 0;
    case AVRO_MAP:
        avro_value_get_size(src, &n);
        for (i = 0; i < n; i++) {
            const char *key;
            size_t old;
            if (avro_value_get_by_index(src, i, &sb, &key) != 0 ||
                avro_value_add(dst, key, &db, NULL, NULL) != 0)
                return ts_avro_fail(c, "%s", avro_strerror());
            old = ts_avro_path_push(c, "[%s]", key);
            if (resolve_copy(c, &sb, &db, depth + 1) != 0)
                return -1;
            c->path[old] = '\0';
        }
        return 0;
    case AVRO_RECORD:
        n = avro_schema_record_size(ds);
        for (i = 0; i < n; i++) {
            const char *name = avro_schema_record_field_name(ds, (int)i);
            size_t old = ts_avro_path_field(c, name);
            if (avro_value_get_by_index(dst, i, &db, NULL) != 0)
                return ts_avro_fail(c, "%s", avro_strerror());
            if (avro_value_get_by_name(src, name, &sb, NULL) == 0) {
                if (resolve_copy(c, &sb, &db, depth + 1) != 0)
                    return -1;
            } else {
                const json_t *jf = record_field_json(c->def, ds, i);
                const json_t *dflt = json_object_get(jf, "default");
                if (dflt == NULL)
                    return ts_avro_fail(c, "not in the writer schema and has no default");
                if (ts_avro_json_fill(c, dflt, &db, json_object_get(jf, "type")) != 0)
                    return -1;
            }
            c->path[old] = '\0';
        }
        return 0;
    default:
        return ts_avro_fail(c, "unsupported type %s", avro_schema_type_name(ss));
    }
}

/* ---- decoder ------------------------------------------------------------- */

typedef struct plan {
    int32_t id;
    const ts_schema_def *writer;
    int direct;                 /* avro-c reads straight into the reader */
    int branch;                 /* reader union branch for a direct read, or -1 */
    avro_value_iface_t *wiface; /* resolve: value of the writer schema */
    avro_value_t wvalue;
    UT_hash_handle hh;
} plan;

struct ts_decoder {
    const ts_schemas *schemas;
    const ts_schema_def *reader;
    avro_value_iface_t *iface;
    avro_value_t value;
    int have_value;
    avro_value_t branch; /* the record handed out when the reader is a union */
    avro_reader_t rd;
    plan *plans;
};

static void plan_destroy(plan *p) {
    if (p->wiface != NULL) {
        if (p->wvalue.iface != NULL)
            avro_value_decref(&p->wvalue);
        avro_value_iface_decref(p->wiface);
    }
    free(p);
}

void ts_decoder_destroy(ts_decoder *dec) {
    plan *p, *tmp;
    if (dec == NULL)
        return;
    HASH_ITER(hh, dec->plans, p, tmp) {
        HASH_DEL(dec->plans, p);
        plan_destroy(p);
    }
    if (dec->have_value && dec->value.iface != NULL)
        avro_value_decref(&dec->value);
    if (dec->iface != NULL)
        avro_value_iface_decref(dec->iface);
    if (dec->rd != NULL)
        avro_reader_free(dec->rd);
    free(dec);
}

ts_decoder *ts_decoder_create(const ts_schemas *schemas, const char *subject) {
    ts_decoder *dec = calloc(1, sizeof(*dec));
    if (dec == NULL)
        return NULL;
    dec->schemas = schemas;
    dec->reader = ts_schemas_def_latest(schemas, subject);
    if (dec->reader == NULL)
        goto fail;
    dec->iface = avro_generic_class_from_schema(dec->reader->schema);
    if (dec->iface == NULL || avro_generic_value_new(dec->iface, &dec->value) != 0)
        goto fail;
    dec->have_value = 1;
    dec->rd = avro_reader_memory(NULL, 0);
    if (dec->rd == NULL)
        goto fail;
    return dec;
fail:
    ts_decoder_destroy(dec);
    return NULL;
}

static plan *plan_create(ts_decoder *dec, const ts_schema_def *writer) {
    avro_schema_t r = dec->reader->schema;
    avro_schema_t w = writer->schema;
    plan *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->id = writer->id;
    p->writer = writer;
    p->branch = -1;
    if (avro_schema_equal(w, r)) {
        p->direct = 1;
    } else if (avro_typeof(r) == AVRO_UNION && avro_typeof(w) != AVRO_UNION) {
        size_t i;
        for (i = 0; i < avro_schema_union_size(r); i++) {
            if (avro_schema_equal(avro_schema_union_branch(r, (int)i), w)) {
                p->direct = 1;
                p->branch = (int)i;
                break;
            }
        }
    }
    if (!p->direct) {
        p->wiface = avro_generic_class_from_schema(w);
        if (p->wiface == NULL)
            goto fail;
        if (avro_generic_value_new(p->wiface, &p->wvalue) != 0) {
            avro_value_iface_decref(p->wiface);
            p->wiface = NULL;
            goto fail;
        }
    }
    HASH_ADD(hh, dec->plans, id, sizeof(p->id), p);
    return p;
fail:
    plan_destroy(p);
    return NULL;
}

ts_err ts_decoder_decode(ts_decoder *dec, const void *buf, size_t len, avro_value_t **record,
                         const char **type, char *err, size_t errlen) {
    const uint8_t *b = buf;
    int32_t id;
    plan *p = NULL;
    wire w;
    avro_value_t *out = &dec->value;

    if (len == 0 || buf == NULL) {
        ts_avro_seterr(err, errlen, "empty message");
        return TS_E_DECODE;
    }
    /* Refused before parsing: a huge record would be decoded into memory (and
     * its strings copied into views) for an event no producer should send. */
    if (len > TS_AVRO_MAX_MESSAGE) {
        ts_avro_seterr(err, errlen, "message too large (%zu bytes, at most %d)", len,
                       TS_AVRO_MAX_MESSAGE);
        return TS_E_DECODE;
    }
    if (b[0] != 0) {
        ts_avro_seterr(err, errlen, "bad magic byte 0x%02x", b[0]);
        return TS_E_DECODE;
    }
    if (len < TS_AVRO_HEADER_LEN) {
        ts_avro_seterr(err, errlen, "truncated header (%zu bytes)", len);
        return TS_E_DECODE;
    }
    id = (int32_t)(((uint32_t)b[1] << 24) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 8) |
                   (uint32_t)b[4]);
    HASH_FIND(hh, dec->plans, &id, sizeof(id), p);
    if (p == NULL) {
        const ts_schema_def *writer = ts_schemas_def_by_id(dec->schemas, id);
        if (writer == NULL) {
            ts_avro_seterr(err, errlen, "unknown schema id %d", (int)id);
            return TS_E_DECODE;
        }
        p = plan_create(dec, writer);
        if (p == NULL) {
            ts_avro_seterr(err, errlen, "out of memory");
            return TS_E_NOMEM;
        }
    }

    w.p = b + TS_AVRO_HEADER_LEN;
    w.len = len - TS_AVRO_HEADER_LEN;
    w.pos = 0;
    w.items_left = w.len + 1024;
    w.bad_string = NULL;
    if (wire_check(&w, p->writer->schema, 0) != 0) {
        ts_avro_seterr(err, errlen, "truncated or invalid Avro for schema id %d%s%s", (int)id,
                       w.bad_string ? ": " : "", w.bad_string ? w.bad_string : "");
        return TS_E_DECODE;
    }
    if (w.pos != w.len) {
        ts_avro_seterr(err, errlen, "trailing bytes after Avro for schema id %d (%zu of %zu used)",
                       (int)id, w.pos, w.len);
        return TS_E_DECODE;
    }

    avro_reader_memory_set_source(dec->rd, (const char *)w.p, (int64_t)w.len);
    /* The value is reused from message to message (no allocation per decode);
     * reset it so nothing of the previous message survives. */
    avro_value_reset(&dec->value);
    if (p->direct) {
        avro_value_t target = dec->value;
        if (p->branch >= 0 && avro_value_set_branch(&dec->value, p->branch, &target) != 0)
            goto invalid;
        if (avro_value_read(dec->rd, &target) != 0)
            goto invalid;
    } else {
        char reason[256] = "";
        ts_avro_jctx c = {.def = dec->reader, .err = reason, .errlen = sizeof(reason)};
        avro_value_reset(&p->wvalue);
        if (avro_value_read(dec->rd, &p->wvalue) != 0)
            goto invalid;
        if (resolve_copy(&c, &p->wvalue, &dec->value, 0) != 0) {
            ts_avro_seterr(err, errlen, "schema id %d cannot be read as '%s': %s", (int)id,
                           dec->reader->subject, reason);
            return TS_E_DECODE;
        }
    }

    if (avro_value_get_type(&dec->value) == AVRO_UNION) {
        if (avro_value_get_current_branch(&dec->value, &dec->branch) != 0)
            goto invalid;
        out = &dec->branch;
    }
    *record = out;
    *type = avro_schema_type_name(ts_avro_unlink(avro_value_get_schema(out)));
    return TS_OK;
invalid:
    ts_avro_seterr(err, errlen, "truncated or invalid Avro for schema id %d: %s", (int)id,
                   avro_strerror());
    return TS_E_DECODE;
}
