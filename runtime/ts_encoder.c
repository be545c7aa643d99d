/* ts_encoder.c - values and JSON into Confluent-framed Avro records (ts_avro.h).
 *
 * A generic value of the subject's latest schema, filled by the caller or
 * from JSON by ts_avro_json_fill() (lenient, see ts_avro.h), written by avro-c
 * after the 5-byte frame header.
 */
#include "ts_avro_int.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- conversion paths and errors --------------------------------------------- */

/* Appends a path component; returns the old length to restore. */
size_t ts_avro_path_push(ts_avro_jctx *c, const char *fmt, ...) {
    size_t old = strlen(c->path);
    va_list ap;
    if (old + 1 < sizeof(c->path)) {
        va_start(ap, fmt);
        vsnprintf(c->path + old, sizeof(c->path) - old, fmt, ap);
        va_end(ap);
    }
    return old;
}

size_t ts_avro_path_field(ts_avro_jctx *c, const char *name) {
    return c->path[0] == '\0' ? ts_avro_path_push(c, "%s", name)
                              : ts_avro_path_push(c, ".%s", name);
}

int ts_avro_fail(ts_avro_jctx *c, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->path[0] != '\0')
        ts_avro_seterr(c->err, c->errlen, "field '%s': %s", c->path, msg);
    else
        ts_avro_seterr(c->err, c->errlen, "%s", msg);
    return -1;
}

/* ---- JSON -> Avro -------------------------------------------------------- */

static const char *json_kind(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    default:
        return "null";
    }
}

static int64_t days_from_civil(int64_t y, int m, int d) {
    /* Howard Hinnant's algorithm: exact for the proleptic Gregorian calendar. */
    int64_t era, yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int digits(const char **s, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if ((*s)[i] < '0' || (*s)[i] > '9')
            return -1;
        v = v * 10 + ((*s)[i] - '0');
    }
    *s += n;
    *out = v;
    return 0;
}

int ts_time_parse_iso(const char *s, int64_t *epoch_ms) {
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec, ms = 0, off = 0;
    int64_t days;

    if (digits(&s, 4, &y) || *s++ != '-' || digits(&s, 2, &mo) || *s++ != '-' ||
        digits(&s, 2, &d) || (*s != 'T' && *s != 't' && *s != ' '))
        return -1;
    s++;
    if (digits(&s, 2, &h) || *s++ != ':' || digits(&s, 2, &mi) || *s++ != ':' ||
        digits(&s, 2, &sec))
        return -1;
    if (*s == '.') {
        int n = 0;
        s++;
        while (*s >= '0' && *s <= '9') {
            if (n < 3)
                ms = ms * 10 + (*s - '0');
            n++;
            s++;
        }
        if (n == 0)
            return -1;
        for (; n < 3; n++)
            ms *= 10;
    }
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        int sign = *s == '-' ? -1 : 1, oh, om;
        s++;
        if (digits(&s, 2, &oh) || *s++ != ':' || digits(&s, 2, &om) || oh > 23 || om > 59)
            return -1;
        off = sign * (oh * 60 + om);
    } else {
        return -1;
    }
    if (*s != '\0' || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 ||
        sec > 60)
        return -1;
    if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return -1;
    days = days_from_civil(y, mo, d);
    *epoch_ms = (((days * 24 + h) * 60 + mi - off) * 60 + sec) * 1000 + ms;
    return 0;
}

static int fill_record(ts_avro_jctx *c, const json_t *j, avro_value_t *v, avro_schema_t schema) {
    const json_t *jrec = ts_schemas_named(c->def, schema);
    const json_t *jfields = json_object_get(jrec, "fields");
    size_t n = avro_schema_record_size(schema);
    const char *key;
    const json_t *jv;
    size_t i;

    if (!json_is_object(j))
        return ts_avro_fail(c, "expected object (record %s), got %s", avro_schema_name(schema),
                            json_kind(j));
    json_object_foreach((json_t *)j, key, jv) {
        if (avro_schema_record_field_get_index(schema, key) < 0) {
            size_t old = ts_avro_path_field(c, key);
            ts_avro_fail(c, "not in record %s", avro_schema_name(schema));
            c->path[old] = '\0';
            return -1;
        }
    }
    for (i = 0; i < n; i++) {
        const char *name = avro_schema_record_field_name(schema, (int)i);
        const json_t *jf = json_array_get(jfields, i);
        size_t old = ts_avro_path_field(c, name);
        avro_value_t fv;
        if (avro_value_get_by_index(v, i, &fv, NULL) != 0)
            return ts_avro_fail(c, "%s", avro_strerror());
        jv = json_object_get(j, name);
        if (jv == NULL)
            jv = json_object_get(jf, "default");
        if (jv == NULL)
            return ts_avro_fail(c, "required");
        if (ts_avro_json_fill(c, jv, &fv, json_object_get(jf, "type")) != 0)
            return -1;
        c->path[old] = '\0';
    }
    return 0;
}

static int fill_union(ts_avro_jctx *c, const json_t *j, avro_value_t *v, avro_schema_t schema,
                      const json_t *jtype) {
    size_t n = avro_schema_union_size(schema);
    size_t i;
    char first_err[512] = "";
    int tried = 0;
    avro_value_t bv;

    /* null goes to the null branch when there is one. */
    if (json_is_null(j)) {
        for (i = 0; i < n; i++) {
            if (avro_typeof(avro_schema_union_branch(schema, (int)i)) == AVRO_NULL) {
                if (avro_value_set_branch(v, (int)i, &bv) != 0)
                    return ts_avro_fail(c, "%s", avro_strerror());
                return avro_value_set_null(&bv);
            }
        }
    }
    /* Avro's own JSON form {"type name": value}. */
    if (json_is_object(j) && json_object_size(j) == 1) {
        const char *key = json_object_iter_key(json_object_iter((json_t *)j));
        for (i = 0; i < n; i++) {
            avro_schema_t b = ts_avro_unlink(avro_schema_union_branch(schema, (int)i));
            char *full = ts_avro_is_named(avro_typeof(b)) ? ts_avro_fullname(b) : NULL;
            int match = strcmp(key, avro_schema_type_name(b)) == 0 ||
                        (full != NULL && strcmp(key, full) == 0);
            free(full);
            if (match && avro_typeof(b) != AVRO_RECORD) {
                if (avro_value_set_branch(v, (int)i, &bv) != 0)
                    return ts_avro_fail(c, "%s", avro_strerror());
                return ts_avro_json_fill(c, json_object_get(j, key), &bv, json_array_get(jtype, i));
            }
            if (match) {
                /* A record branch: the wrapper form unless the object is
                 * itself the record (one field named like the type). */
                if (avro_schema_record_field_get_index(b, key) < 0) {
                    if (avro_value_set_branch(v, (int)i, &bv) != 0)
                        return ts_avro_fail(c, "%s", avro_strerror());
                    return ts_avro_json_fill(c, json_object_get(j, key), &bv,
                                             json_array_get(jtype, i));
                }
            }
        }
    }
    /* Otherwise the first branch that takes the value. */
    for (i = 0; i < n; i++) {
        avro_schema_t b = avro_schema_union_branch(schema, (int)i);
        if (avro_typeof(b) == AVRO_NULL)
            continue;
        size_t old = strlen(c->path);
        if (avro_value_set_branch(v, (int)i, &bv) != 0)
            return ts_avro_fail(c, "%s", avro_strerror());
        if (ts_avro_json_fill(c, j, &bv, json_array_get(jtype, i)) == 0)
            return 0;
        c->path[old] = '\0'; /* a failed try may leave its deeper path behind */
        if (!tried)
            snprintf(first_err, sizeof(first_err), "%s", c->err != NULL ? c->err : "");
        tried++;
    }
    if (tried == 1) {
        ts_avro_seterr(c->err, c->errlen, "%s", first_err);
        return -1;
    }
    return ts_avro_fail(c, "no branch of the union takes a %s", json_kind(j));
}

/* Stores JSON `j` into value `v` (lenient rules of ts_encoder_from_json);
 * `jtype` is the JSON schema node of v's type when known (for logical types). */
int ts_avro_json_fill(ts_avro_jctx *c, const json_t *j, avro_value_t *v, const json_t *jtype) {
    avro_schema_t schema = ts_avro_unlink(avro_value_get_schema(v));
    avro_type_t t = avro_typeof(schema);
    const char *tn = avro_schema_type_name(schema);

    jtype = ts_avro_jtype_deref(c->def, jtype, schema);
    switch (t) {
    case AVRO_NULL:
        if (!json_is_null(j))
            return ts_avro_fail(c, "expected null, got %s", json_kind(j));
        return avro_value_set_null(v);
    case AVRO_BOOLEAN:
        if (!json_is_boolean(j))
            return ts_avro_fail(c, "expected boolean, got %s", json_kind(j));
        return avro_value_set_boolean(v, json_is_true(j));
    case AVRO_INT32:
        if (!json_is_integer(j))
            return ts_avro_fail(c, "expected int, got %s", json_kind(j));
        if (json_integer_value(j) < INT32_MIN || json_integer_value(j) > INT32_MAX)
            return ts_avro_fail(c, "int out of range");
        return avro_value_set_int(v, (int32_t)json_integer_value(j));
    case AVRO_INT64:
        if (json_is_string(j) && ts_avro_jtype_is_timestamp_ms(jtype)) {
            int64_t ms;
            if (ts_time_parse_iso(json_string_value(j), &ms) != 0)
                return ts_avro_fail(c, "expected ISO-8601 time or epoch milliseconds, got '%s'",
                                    json_string_value(j));
            return avro_value_set_long(v, ms);
        }
        if (!json_is_integer(j))
            return ts_avro_fail(c, "expected %s, got %s",
                                ts_avro_jtype_is_timestamp_ms(jtype) ? "timestamp" : "long",
                                json_kind(j));
        return avro_value_set_long(v, (int64_t)json_integer_value(j));
    case AVRO_FLOAT:
    case AVRO_DOUBLE:
        if (!json_is_number(j))
            return ts_avro_fail(c, "expected %s, got %s", tn, json_kind(j));
        return t == AVRO_FLOAT ? avro_value_set_float(v, (float)json_number_value(j))
                               : avro_value_set_double(v, json_number_value(j));
    case AVRO_STRING:
        if (!json_is_string(j))
            return ts_avro_fail(c, "expected string, got %s", json_kind(j));
        return avro_value_set_string_len(v, json_string_value(j), json_string_length(j) + 1);
    case AVRO_BYTES:
        if (!json_is_string(j))
            return ts_avro_fail(c, "expected bytes as a string, got %s", json_kind(j));
        return avro_value_set_bytes(v, (void *)json_string_value(j), json_string_length(j));
    case AVRO_FIXED:
        if (!json_is_string(j) || (int64_t)json_string_length(j) != avro_schema_fixed_size(schema))
            return ts_avro_fail(c, "expected a string of %lld bytes",
                                (long long)avro_schema_fixed_size(schema));
        return avro_value_set_fixed(v, (void *)json_string_value(j), json_string_length(j));
    case AVRO_ENUM: {
        int idx;
        if (!json_is_string(j))
            return ts_avro_fail(c, "expected a symbol of enum %s, got %s", tn, json_kind(j));
        idx = avro_schema_enum_get_by_name(schema, json_string_value(j));
        if (idx < 0)
            return ts_avro_fail(c, "'%s' is not a symbol of enum %s", json_string_value(j), tn);
        return avro_value_set_enum(v, idx);
    }
    case AVRO_ARRAY: {
        size_t i;
        const json_t *jv;
        if (!json_is_array(j))
            return ts_avro_fail(c, "expected array, got %s", json_kind(j));
        avro_value_reset(v);
        json_array_foreach(j, i, jv) {
            avro_value_t ev;
            size_t old = ts_avro_path_push(c, "[%zu]", i);
            if (avro_value_append(v, &ev, NULL) != 0)
                return ts_avro_fail(c, "%s", avro_strerror());
            if (ts_avro_json_fill(c, jv, &ev, json_object_get(jtype, "items")) != 0)
                return -1;
            c->path[old] = '\0';
        }
        return 0;
    }
    case AVRO_MAP: {
        const char *key;
        const json_t *jv;
        if (!json_is_object(j))
            return ts_avro_fail(c, "expected object (map), got %s", json_kind(j));
        avro_value_reset(v);
        json_object_foreach((json_t *)j, key, jv) {
            avro_value_t ev;
            size_t old = ts_avro_path_push(c, "[%s]", key);
            if (avro_value_add(v, key, &ev, NULL, NULL) != 0)
                return ts_avro_fail(c, "%s", avro_strerror());
            if (ts_avro_json_fill(c, jv, &ev, json_object_get(jtype, "values")) != 0)
                return -1;
            c->path[old] = '\0';
        }
        return 0;
    }
    case AVRO_UNION:
        return fill_union(c, j, v, schema, json_is_array(jtype) ? jtype : NULL);
    case AVRO_RECORD:
        return fill_record(c, j, v, schema);
    default:
        return ts_avro_fail(c, "unsupported type %s", tn);
    }
}

/* ---- encoder ------------------------------------------------------------- */

struct ts_encoder {
    const ts_schema_def *def;
    avro_value_iface_t *iface;
    avro_value_t value; /* of the subject's schema (union or record) */
    int have_value;
    avro_value_t rec; /* the record being filled (value itself, or its branch) */
    int have_rec;
};

void ts_encoder_destroy(ts_encoder *enc) {
    if (enc == NULL)
        return;
    if (enc->have_value)
        avro_value_decref(&enc->value);
    if (enc->iface != NULL)
        avro_value_iface_decref(enc->iface);
    free(enc);
}

ts_encoder *ts_encoder_create(const ts_schemas *schemas, const char *subject) {
    ts_encoder *enc = calloc(1, sizeof(*enc));
    if (enc == NULL)
        return NULL;
    enc->def = ts_schemas_def_latest(schemas, subject);
    if (enc->def == NULL)
        goto fail;
    enc->iface = avro_generic_class_from_schema(enc->def->schema);
    if (enc->iface == NULL)
        goto fail;
    return enc;
fail:
    ts_encoder_destroy(enc);
    return NULL;
}

/* Starts a fresh value (so nothing of the previous record survives) and
 * selects the record `name`, with defaults applied. */
static avro_value_t *encoder_start(ts_encoder *enc, const char *name, char *err, size_t errlen) {
    avro_schema_t schema = enc->def->schema;
    avro_schema_t rschema = schema;
    int branch = -1;
    size_t i, n;

    enc->have_rec = 0;
    if (avro_typeof(schema) == AVRO_UNION) {
        for (i = 0; i < avro_schema_union_size(schema); i++) {
            avro_schema_t b = ts_avro_unlink(avro_schema_union_branch(schema, (int)i));
            if (avro_typeof(b) == AVRO_RECORD && strcmp(avro_schema_name(b), name) == 0) {
                branch = (int)i;
                rschema = b;
                break;
            }
        }
        if (branch < 0) {
            ts_avro_seterr(err, errlen, "'%s' is not a record of subject '%s'", name,
                           enc->def->subject);
            return NULL;
        }
    } else if (avro_typeof(schema) != AVRO_RECORD || strcmp(avro_schema_name(schema), name) != 0) {
        ts_avro_seterr(err, errlen, "'%s' is not the record of subject '%s'", name,
                       enc->def->subject);
        return NULL;
    }

    if (enc->have_value) {
        avro_value_decref(&enc->value);
        enc->have_value = 0;
    }
    if (avro_generic_value_new(enc->iface, &enc->value) != 0) {
        ts_avro_seterr(err, errlen, "out of memory");
        return NULL;
    }
    enc->have_value = 1;
    if (branch >= 0) {
        if (avro_value_set_branch(&enc->value, branch, &enc->rec) != 0) {
            ts_avro_seterr(err, errlen, "%s", avro_strerror());
            return NULL;
        }
    } else {
        enc->rec = enc->value;
    }

    /* The record's definition once, not per field: finding a named type
     * formats its full name. */
    const json_t *jrec = ts_schemas_named(enc->def, rschema);
    const json_t *jfields = jrec != NULL ? json_object_get(jrec, "fields") : NULL;
    n = avro_schema_record_size(rschema);
    for (i = 0; i < n; i++) {
        const json_t *jf = json_array_get(jfields, i);
        const json_t *dflt = json_object_get(jf, "default");
        avro_value_t fv;
        ts_avro_jctx c = {.def = enc->def, .err = err, .errlen = errlen};
        if (dflt == NULL)
            continue;
        ts_avro_path_field(&c, avro_schema_record_field_name(rschema, (int)i));
        if (avro_value_get_by_index(&enc->rec, i, &fv, NULL) != 0 ||
            ts_avro_json_fill(&c, dflt, &fv, json_object_get(jf, "type")) != 0)
            return NULL;
    }
    enc->have_rec = 1;
    return &enc->rec;
}

avro_value_t *ts_encoder_record(ts_encoder *enc, const char *record_name) {
    return encoder_start(enc, record_name, NULL, 0);
}

ts_err ts_encoder_encode(ts_encoder *enc, char **out, size_t *len) {
    size_t size;
    char *buf;
    avro_writer_t wr;
    uint32_t id;

    if (!enc->have_rec)
        return TS_E_INVALID;
    if (avro_value_sizeof(&enc->value, &size) != 0)
        return TS_E_INVALID;
    buf = malloc(size + TS_AVRO_HEADER_LEN);
    if (buf == NULL)
        return TS_E_NOMEM;
    id = (uint32_t)enc->def->id;
    buf[0] = 0;
    buf[1] = (char)(id >> 24);
    buf[2] = (char)(id >> 16);
    buf[3] = (char)(id >> 8);
    buf[4] = (char)id;
    wr = avro_writer_memory(buf + TS_AVRO_HEADER_LEN, (int64_t)size);
    if (wr == NULL) {
        free(buf);
        return TS_E_NOMEM;
    }
    if (avro_value_write(wr, &enc->value) != 0) {
        avro_writer_free(wr);
        free(buf);
        return TS_E_INVALID;
    }
    avro_writer_free(wr);
    *out = buf;
    *len = size + TS_AVRO_HEADER_LEN;
    return TS_OK;
}

ts_err ts_encoder_from_json(ts_encoder *enc, const json_t *event, char **out, size_t *len,
                            char *err, size_t errlen) {
    avro_schema_t schema = enc->def->schema;
    const char *name;
    const json_t *fields = event;
    avro_value_t *rec;
    ts_avro_jctx c = {.def = enc->def, .err = err, .errlen = errlen};
    ts_err rc;

    if (!json_is_object(event)) {
        ts_avro_seterr(err, errlen, "event: expected object, got %s", json_kind(event));
        return TS_E_INVALID;
    }
    if (avro_typeof(schema) == AVRO_UNION) {
        if (json_object_size(event) != 1) {
            ts_avro_seterr(err, errlen,
                           "event: expected {\"<record name>\": {fields}} for subject '%s'",
                           enc->def->subject);
            return TS_E_INVALID;
        }
        name = json_object_iter_key(json_object_iter((json_t *)event));
        fields = json_object_iter_value(json_object_iter((json_t *)event));
        /* Accept the full name too ("tastesync.x.Record"). */
        if (strrchr(name, '.') != NULL)
            name = strrchr(name, '.') + 1;
    } else {
        name = avro_schema_name(schema);
        if (json_object_size(event) == 1 && json_is_object(json_object_get(event, name)) &&
            avro_schema_record_field_get_index(schema, name) < 0)
            fields = json_object_get(event, name);
    }
    rec = encoder_start(enc, name, err, errlen);
    if (rec == NULL)
        return TS_E_INVALID;
    if (fill_record(&c, fields, rec, avro_value_get_schema(rec)) != 0) {
        enc->have_rec = 0;
        return TS_E_INVALID;
    }
    rc = ts_encoder_encode(enc, out, len);
    if (rc == TS_E_INVALID)
        ts_avro_seterr(err, errlen, "event cannot be encoded: %s", avro_strerror());
    return rc;
}

const char *ts_encoder_field_str(ts_encoder *enc, const char *field) {
    avro_value_t fv;
    const char *s = NULL;
    size_t sz;
    if (!enc->have_rec || avro_value_get_by_name(&enc->rec, field, &fv, NULL) != 0)
        return NULL;
    while (avro_value_get_type(&fv) == AVRO_UNION) {
        avro_value_t bv;
        if (avro_value_get_current_branch(&fv, &bv) != 0)
            return NULL;
        fv = bv;
    }
    if (avro_value_get_type(&fv) != AVRO_STRING || avro_value_get_string(&fv, &s, &sz) != 0)
        return NULL;
    return s;
}

const char *ts_encoder_record_name(const ts_encoder *enc) {
    return enc->have_rec ? avro_schema_name(avro_value_get_schema(&enc->rec)) : NULL;
}
