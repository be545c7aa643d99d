/* ts_event.c - field accessors over a decoded event, and small helpers.
 *
 * An event's value is an avro-c generic record. A field is looked up by name;
 * unions (optional fields are ["null", T]) are unwrapped to their current
 * branch, and a null branch, a missing field or a value of another type all
 * read as "missing" so processors test one condition. ts_avro_to_json turns any
 * Avro value into jansson, for views and rows. The helpers processors need
 * without I/O (registry lookup, ISO time) live here too.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_avro.h"
#include "ts_processor.h"

/* Finds `field` of the event record with unions unwrapped; 0 when present and
 * not null. */
static int event_field(const ts_event *ev, const char *field, avro_value_t *out) {
    avro_value_t v;
    if (ev == NULL || ev->value == NULL || field == NULL ||
        avro_value_get_type(ev->value) != AVRO_RECORD ||
        avro_value_get_by_name(ev->value, field, &v, NULL) != 0)
        return -1;
    while (avro_value_get_type(&v) == AVRO_UNION) {
        avro_value_t b;
        if (avro_value_get_current_branch(&v, &b) != 0)
            return -1;
        v = b;
    }
    if (avro_value_get_type(&v) == AVRO_NULL)
        return -1;
    *out = v;
    return 0;
}

const char *ts_event_str(const ts_event *ev, const char *field) {
    avro_value_t v;
    const char *s;
    size_t sz;
    if (event_field(ev, field, &v) != 0 || avro_value_get_type(&v) != AVRO_STRING ||
        avro_value_get_string(&v, &s, &sz) != 0)
        return NULL;
    return s;
}

const char *ts_event_id(const ts_event *ev, const char *field) {
    avro_value_t v;
    const char *s;
    size_t sz; /* with the NUL */
    if (event_field(ev, field, &v) != 0 || avro_value_get_type(&v) != AVRO_STRING ||
        avro_value_get_string(&v, &s, &sz) != 0 || sz < 2 || sz - 1 > TS_EVENT_MAX_ID_BYTES ||
        strlen(s) != sz - 1)
        return NULL;
    return s;
}

int ts_event_long(const ts_event *ev, const char *field, int64_t *out) {
    avro_value_t v;
    if (event_field(ev, field, &v) != 0)
        return -1;
    switch (avro_value_get_type(&v)) {
    case AVRO_INT32: {
        int32_t i;
        if (avro_value_get_int(&v, &i) != 0)
            return -1;
        *out = i;
        return 0;
    }
    case AVRO_INT64:
        return avro_value_get_long(&v, out) == 0 ? 0 : -1;
    default:
        return -1;
    }
}

int ts_event_double(const ts_event *ev, const char *field, double *out) {
    avro_value_t v;
    if (event_field(ev, field, &v) != 0)
        return -1;
    switch (avro_value_get_type(&v)) {
    case AVRO_FLOAT: {
        float f;
        if (avro_value_get_float(&v, &f) != 0)
            return -1;
        *out = f;
        return 0;
    }
    case AVRO_DOUBLE:
        return avro_value_get_double(&v, out) == 0 ? 0 : -1;
    default:
        return -1;
    }
}

const char *ts_event_enum(const ts_event *ev, const char *field) {
    avro_value_t v;
    int idx;
    if (event_field(ev, field, &v) != 0 || avro_value_get_type(&v) != AVRO_ENUM ||
        avro_value_get_enum(&v, &idx) != 0)
        return NULL;
    return avro_schema_enum_get(avro_value_get_schema(&v), idx);
}

json_t *ts_event_json(const ts_event *ev, const char *field) {
    avro_value_t v;
    if (ev == NULL || ev->value == NULL || field == NULL ||
        avro_value_get_type(ev->value) != AVRO_RECORD ||
        avro_value_get_by_name(ev->value, field, &v, NULL) != 0)
        return NULL;
    return ts_avro_to_json(&v);
}

/* Bytes that are not UTF-8 become a string of their ISO-8859-1 code points,
 * as Avro's JSON encoding does for bytes. */
static json_t *bytes_to_json(const void *p, size_t n) {
    const unsigned char *b = p;
    json_t *j = json_stringn(p, n);
    char *tmp;
    size_t i, k = 0;
    if (j != NULL)
        return j;
    tmp = malloc(2 * n + 1);
    if (tmp == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        if (b[i] < 0x80) {
            tmp[k++] = (char)b[i];
        } else {
            tmp[k++] = (char)(0xc0 | (b[i] >> 6));
            tmp[k++] = (char)(0x80 | (b[i] & 0x3f));
        }
    }
    j = json_stringn(tmp, k);
    free(tmp);
    return j;
}

static json_t *real_to_json(double d) {
    /* JSON has no NaN or infinity. */
    return isfinite(d) ? json_real(d) : json_null();
}

json_t *ts_avro_to_json(const avro_value_t *value) {
    avro_value_t *v = (avro_value_t *)value; /* avro-c getters take non-const */
    switch (avro_value_get_type(v)) {
    case AVRO_NULL:
        return json_null();
    case AVRO_BOOLEAN: {
        int b = 0;
        avro_value_get_boolean(v, &b);
        return json_boolean(b);
    }
    case AVRO_INT32: {
        int32_t i = 0;
        avro_value_get_int(v, &i);
        return json_integer(i);
    }
    case AVRO_INT64: {
        int64_t l = 0;
        avro_value_get_long(v, &l);
        return json_integer((json_int_t)l);
    }
    case AVRO_FLOAT: {
        float f = 0;
        avro_value_get_float(v, &f);
        return real_to_json(f);
    }
    case AVRO_DOUBLE: {
        double d = 0;
        avro_value_get_double(v, &d);
        return real_to_json(d);
    }
    case AVRO_STRING: {
        const char *s = NULL;
        size_t sz = 0;
        avro_value_get_string(v, &s, &sz);
        return bytes_to_json(s, sz > 0 ? sz - 1 : 0); /* avro-c counts the NUL */
    }
    case AVRO_BYTES: {
        const void *p = NULL;
        size_t sz = 0;
        avro_value_get_bytes(v, &p, &sz);
        return bytes_to_json(p, sz);
    }
    case AVRO_FIXED: {
        const void *p = NULL;
        size_t sz = 0;
        avro_value_get_fixed(v, &p, &sz);
        return bytes_to_json(p, sz);
    }
    case AVRO_ENUM: {
        int idx = 0;
        const char *sym;
        avro_value_get_enum(v, &idx);
        sym = avro_schema_enum_get(avro_value_get_schema(v), idx);
        return sym != NULL ? json_string(sym) : json_null();
    }
    case AVRO_UNION: {
        avro_value_t b;
        if (avro_value_get_current_branch(v, &b) != 0)
            return json_null();
        return ts_avro_to_json(&b);
    }
    case AVRO_ARRAY:
    case AVRO_MAP:
    case AVRO_RECORD: {
        avro_type_t t = avro_value_get_type(v);
        json_t *out = t == AVRO_ARRAY ? json_array() : json_object();
        size_t i, n = 0;
        if (out == NULL)
            return NULL;
        avro_value_get_size(v, &n);
        for (i = 0; i < n; i++) {
            avro_value_t e;
            const char *name = NULL;
            json_t *je;
            int rc;
            if (avro_value_get_by_index(v, i, &e, &name) != 0)
                goto fail;
            je = ts_avro_to_json(&e);
            if (je == NULL)
                goto fail;
            if (t == AVRO_ARRAY)
                rc = json_array_append_new(out, je);
            else
                rc = json_object_set_new(out, name, je);
            if (rc != 0)
                goto fail;
            continue;
        fail:
            json_decref(out);
            return NULL;
        }
        return out;
    }
    default:
        return json_null();
    }
}

const ts_processor_def *ts_processor_find(const ts_processor_def *const *registry,
                                          const char *name) {
    if (registry == NULL || name == NULL)
        return NULL;
    for (; *registry != NULL; registry++) {
        if ((*registry)->name != NULL && strcmp((*registry)->name, name) == 0)
            return *registry;
    }
    return NULL;
}

char *ts_time_iso(int64_t epoch_ms, char *buf, size_t buflen) {
    /* Floor division so times before 1970 keep a positive millisecond part. */
    int64_t ms = epoch_ms % 1000;
    int64_t secs = epoch_ms / 1000;
    int64_t days, rem, z, era, doe, yoe, y, doy, mp, d, m;
    if (ms < 0) {
        ms += 1000;
        secs -= 1;
    }
    days = secs / 86400;
    rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days -= 1;
    }
    /* civil_from_days (Howard Hinnant): no gmtime, no time_t range limits. */
    z = days + 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    y = yoe + era * 400;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    if (y >= 0 && y <= 9999 && buflen >= 25) {
        /* By hand: every view carries a few of these, and snprintf with seven
         * conversions showed in the profile. */
        static const char layout[] = "0000-00-00T00:00:00.000Z";
        const int64_t parts[] = {y, m, d, rem / 3600, rem % 3600 / 60, rem % 60, ms};
        const int at[] = {0, 5, 8, 11, 14, 17, 20}, width[] = {4, 2, 2, 2, 2, 2, 3};
        memcpy(buf, layout, sizeof(layout));
        for (int i = 0; i < 7; i++) {
            int64_t v = parts[i];
            for (int k = width[i] - 1; k >= 0; k--, v /= 10)
                buf[at[i] + k] = (char)('0' + v % 10);
        }
        return buf;
    }
    snprintf(buf, buflen, "%04lld-%02lld-%02lldT%02lld:%02lld:%02lld.%03lldZ", (long long)y,
             (long long)m, (long long)d, (long long)(rem / 3600), (long long)(rem % 3600 / 60),
             (long long)(rem % 60), (long long)ms);
    return buf;
}
