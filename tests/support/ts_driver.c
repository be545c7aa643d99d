/* ts_driver.c - the in-memory test driver (see ts_driver.h).
 *
 * Four uthash maps stand in for the world outside the processor: the durable
 * state (key -> bytes, read by the context through a ts_state_backend), the
 * views (key -> string or sorted set), the tables (table -> rows by their key
 * values joined with '|') and the emitted events per topic. A send runs one
 * event through ts_ctx_event_begin / process / ts_ctx_event_end exactly as a
 * task does; committing a batch copies the context's writes into the state map
 * and applies the live effects, in order, to the views and tables.
 */
#include "ts_driver.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "ts_avro.h"
#include "ts_ctx.h"
#include "ts_log.h"

#define TS_DRIVER_COMP "driver"

typedef struct ts_driver_kv { /* a state key or a sorted-set member */
    char *key;
    size_t klen;
    char *val;
    size_t vlen;
    double score;
    UT_hash_handle hh;
} ts_driver_kv;

typedef struct ts_driver_view {
    char *key;
    char *str;            /* a string view, or NULL ... */
    ts_driver_kv *zset;   /* ... a sorted set (member -> score) */
    UT_hash_handle hh;
} ts_driver_view;

typedef struct ts_driver_trow {
    char *key; /* key values joined by '|' */
    json_t *cols;
    UT_hash_handle hh;
} ts_driver_trow;

typedef struct ts_driver_table {
    char *name;
    ts_driver_trow *rows;
    UT_hash_handle hh;
} ts_driver_table;

typedef struct ts_driver_msg {
    char *key;
    char *val;
    size_t len;
} ts_driver_msg;

typedef struct ts_driver_topic { /* emitted events, and codecs of one topic */
    char *name;
    ts_encoder *enc;
    ts_decoder *dec;
    ts_driver_msg *msgs;
    size_t count, cap;
    UT_hash_handle hh;
} ts_driver_topic;

struct ts_driver {
    const ts_processor_def *def;
    void *self;
    char *input;
    char *key_field;
    int64_t timestamp_ms;
    int64_t offset; /* of the last event sent */

    ts_schemas *schemas;
    ts_encoder *in_enc; /* the producer's side */
    ts_decoder *in_dec; /* the runtime's side */
    ts_effects *effs;
    ts_ctx *ctx;
    int in_batch;
    int effects_applied; /* the effects list holds an applied batch */

    ts_driver_kv *state;
    ts_driver_view *views;
    ts_driver_table *tables;
    ts_driver_topic *topics;
    char reason[512];
};

/* ---- state backend --------------------------------------------------------- */

static ts_err ts_driver_backend_get(void *impl, const char *key, size_t klen, char **val,
                                    size_t *vlen) {
    ts_driver *d = impl;
    ts_driver_kv *kv = NULL;
    HASH_FIND(hh, d->state, key, klen, kv);
    if (!kv)
        return TS_E_NOTFOUND;
    *val = malloc(kv->vlen ? kv->vlen : 1);
    if (!*val)
        return TS_E_NOMEM;
    memcpy(*val, kv->val, kv->vlen);
    *vlen = kv->vlen;
    return TS_OK;
}

static void ts_driver_kv_free(ts_driver_kv **map, ts_driver_kv *kv) {
    HASH_DEL(*map, kv);
    free(kv->key);
    free(kv->val);
    free(kv);
}

static void ts_driver_kv_clear(ts_driver_kv **map) {
    ts_driver_kv *kv, *tmp;
    HASH_ITER(hh, *map, kv, tmp) { ts_driver_kv_free(map, kv); }
}

/* Finds or adds `key` in `map`. @returns NULL when out of memory. */
static ts_driver_kv *ts_driver_kv_get(ts_driver_kv **map, const char *key, size_t klen) {
    ts_driver_kv *kv = NULL;
    HASH_FIND(hh, *map, key, klen, kv);
    if (kv)
        return kv;
    kv = calloc(1, sizeof(*kv));
    if (!kv || !(kv->key = malloc(klen ? klen : 1))) {
        free(kv);
        return NULL;
    }
    memcpy(kv->key, key, klen);
    kv->klen = klen;
    HASH_ADD_KEYPTR(hh, *map, kv->key, kv->klen, kv);
    return kv;
}

static void ts_driver_state_write(void *arg, const char *key, size_t klen, const char *val,
                                  size_t vlen) {
    ts_driver *d = arg;
    ts_driver_kv *kv = NULL;
    if (!val) {
        HASH_FIND(hh, d->state, key, klen, kv);
        if (kv)
            ts_driver_kv_free(&d->state, kv);
        return;
    }
    kv = ts_driver_kv_get(&d->state, key, klen);
    char *copy = malloc(vlen ? vlen : 1);
    if (!kv || !copy) {
        free(copy);
        ts_log_error(TS_DRIVER_COMP, "out of memory writing state");
        return;
    }
    memcpy(copy, val, vlen);
    free(kv->val);
    kv->val = copy;
    kv->vlen = vlen;
}

/* ---- views ------------------------------------------------------------------- */

static void ts_driver_view_free(ts_driver *d, ts_driver_view *v) {
    HASH_DEL(d->views, v);
    ts_driver_kv_clear(&v->zset);
    free(v->str);
    free(v->key);
    free(v);
}

static ts_driver_view *ts_driver_view_find(ts_driver *d, const char *key) {
    ts_driver_view *v = NULL;
    HASH_FIND_STR(d->views, key, v);
    return v;
}

static ts_driver_view *ts_driver_view_add(ts_driver *d, const char *key) {
    ts_driver_view *v = calloc(1, sizeof(*v));
    if (!v || !(v->key = strdup(key))) {
        free(v);
        return NULL;
    }
    HASH_ADD_KEYPTR(hh, d->views, v->key, strlen(v->key), v);
    return v;
}

/* Applies one view effect like Redis would. @returns -1 on a type clash or no memory. */
static int ts_driver_apply_view(ts_driver *d, const ts_effect *eff) {
    const char *key = eff->a.data;
    ts_driver_view *v = ts_driver_view_find(d, key);
    switch (eff->kind) {
    case TS_EFF_VIEW_SET: {
        /* SET replaces a value of any type. */
        char *copy = strndup(eff->b.data ? eff->b.data : "", eff->b.len);
        if (!copy)
            return -1;
        if (v)
            ts_driver_view_free(d, v);
        if (!(v = ts_driver_view_add(d, key))) {
            free(copy);
            return -1;
        }
        v->str = copy;
        return 0;
    }
    case TS_EFF_VIEW_DEL:
        if (v)
            ts_driver_view_free(d, v);
        return 0;
    case TS_EFF_ZADD: {
        if (!v && !(v = ts_driver_view_add(d, key)))
            return -1;
        if (v->str) {
            ts_log_error(TS_DRIVER_COMP, "ZADD on string view %s (WRONGTYPE)", key);
            return -1;
        }
        ts_driver_kv *m = ts_driver_kv_get(&v->zset, eff->b.data, eff->b.len);
        if (!m)
            return -1;
        m->score = eff->num;
        return 0;
    }
    case TS_EFF_ZREM:
    case TS_EFF_ZREM_BELOW:
        if (!v)
            return 0;
        if (v->str) {
            ts_log_error(TS_DRIVER_COMP, "ZREM on string view %s (WRONGTYPE)", key);
            return -1;
        }
        ts_driver_kv *m, *tmp;
        HASH_ITER(hh, v->zset, m, tmp) {
            if (eff->kind == TS_EFF_ZREM_BELOW ? m->score < eff->num
                                               : (m->klen == eff->b.len &&
                                                  memcmp(m->key, eff->b.data, m->klen) == 0))
                ts_driver_kv_free(&v->zset, m);
        }
        /* Redis removes a sorted set with its last member. */
        if (!v->zset)
            ts_driver_view_free(d, v);
        return 0;
    default:
        return 0;
    }
}

/* ---- tables ------------------------------------------------------------------ */

static void ts_driver_trow_free(ts_driver_table *t, ts_driver_trow *r) {
    HASH_DEL(t->rows, r);
    json_decref(r->cols);
    free(r->key);
    free(r);
}

static void ts_driver_tables_clear(ts_driver *d) {
    ts_driver_table *t, *ttmp;
    HASH_ITER(hh, d->tables, t, ttmp) {
        ts_driver_trow *r, *rtmp;
        HASH_ITER(hh, t->rows, r, rtmp) { ts_driver_trow_free(t, r); }
        HASH_DEL(d->tables, t);
        free(t->name);
        free(t);
    }
}

static ts_driver_table *ts_driver_table_find(ts_driver *d, const char *name) {
    ts_driver_table *t = NULL;
    HASH_FIND_STR(d->tables, name, t);
    return t;
}

/* Applies a row upsert (update the given columns, insert when new) or delete. */
static int ts_driver_apply_row(ts_driver *d, const ts_effect *eff) {
    ts_rowcol cols[64];
    size_t ncols = 0, nkey = 0;
    if (ts_rowcols_unpack(&eff->b, cols, 64, &ncols, &nkey) != TS_OK || nkey == 0) {
        ts_log_error(TS_DRIVER_COMP, "row effect on %s does not unpack", eff->a.data);
        return -1;
    }
    /* The key values joined by '|', as ts_driver_row looks rows up. */
    size_t klen = 0;
    for (size_t i = 0; i < nkey; i++)
        klen += cols[i].value_len + 1;
    char *key = malloc(klen + 1);
    if (!key)
        return -1;
    size_t at = 0;
    for (size_t i = 0; i < nkey; i++) {
        if (i)
            key[at++] = '|';
        if (cols[i].value)
            memcpy(key + at, cols[i].value, cols[i].value_len);
        at += cols[i].value_len;
    }
    key[at] = '\0';

    ts_driver_table *t = ts_driver_table_find(d, eff->a.data);
    ts_driver_trow *r = NULL;
    if (t)
        HASH_FIND_STR(t->rows, key, r);
    if (eff->kind == TS_EFF_ROW_DELETE) {
        if (r)
            ts_driver_trow_free(t, r);
        free(key);
        return 0;
    }
    if (!t) {
        t = calloc(1, sizeof(*t));
        if (!t || !(t->name = strdup(eff->a.data))) {
            free(t);
            free(key);
            return -1;
        }
        HASH_ADD_KEYPTR(hh, d->tables, t->name, strlen(t->name), t);
    }
    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r || !(r->cols = json_object())) {
            free(r);
            free(key);
            return -1;
        }
        r->key = key;
        HASH_ADD_KEYPTR(hh, t->rows, r->key, strlen(r->key), r);
    } else {
        free(key);
    }
    for (size_t i = 0; i < ncols; i++) {
        char *name = strndup(cols[i].name, cols[i].name_len);
        json_t *val = cols[i].value ? json_stringn(cols[i].value, cols[i].value_len)
                                    : json_null();
        if (!name || !val || json_object_set_new(r->cols, name, val) != 0) {
            free(name);
            return -1;
        }
        free(name);
    }
    return 0;
}

/* ---- emitted events ------------------------------------------------------------ */

static ts_driver_topic *ts_driver_topic_get(ts_driver *d, const char *name, int create) {
    ts_driver_topic *t = NULL;
    HASH_FIND_STR(d->topics, name, t);
    if (t || !create)
        return t;
    t = calloc(1, sizeof(*t));
    if (!t || !(t->name = strdup(name))) {
        free(t);
        return NULL;
    }
    HASH_ADD_KEYPTR(hh, d->topics, t->name, strlen(t->name), t);
    return t;
}

static int ts_driver_apply_emit(ts_driver *d, const ts_effect *eff) {
    ts_driver_topic *t = ts_driver_topic_get(d, eff->a.data, 1);
    if (!t)
        return -1;
    if (t->count == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 8;
        ts_driver_msg *msgs = realloc(t->msgs, cap * sizeof(*msgs));
        if (!msgs)
            return -1;
        t->msgs = msgs;
        t->cap = cap;
    }
    ts_driver_msg *m = &t->msgs[t->count];
    m->key = eff->b.data ? strndup(eff->b.data, eff->b.len) : NULL;
    m->val = malloc(eff->c.len ? eff->c.len : 1);
    if ((eff->b.data && !m->key) || !m->val) {
        free(m->key);
        free(m->val);
        return -1;
    }
    memcpy(m->val, eff->c.data, eff->c.len);
    m->len = eff->c.len;
    t->count++;
    return 0;
}

/* The context asks for the encoder of an output topic: the subject named like it. */
static ts_encoder *ts_driver_encoder_for(void *arg, const char *topic) {
    ts_driver *d = arg;
    ts_driver_topic *t = ts_driver_topic_get(d, topic, 1);
    if (t && !t->enc)
        t->enc = ts_encoder_create(d->schemas, topic);
    return t ? t->enc : NULL;
}

static void ts_driver_topics_clear(ts_driver *d) {
    ts_driver_topic *t, *tmp;
    HASH_ITER(hh, d->topics, t, tmp) {
        HASH_DEL(d->topics, t);
        for (size_t i = 0; i < t->count; i++) {
            free(t->msgs[i].key);
            free(t->msgs[i].val);
        }
        free(t->msgs);
        ts_encoder_destroy(t->enc);
        ts_decoder_destroy(t->dec);
        free(t->name);
        free(t);
    }
}

/* ---- life cycle ------------------------------------------------------------------ */

ts_driver *ts_driver_create(const ts_processor_def *def, const char *params_json,
                            const char *input_subject) {
    char err[512] = "";
    json_t *params = NULL;
    ts_driver *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->def = def;
    d->offset = -1;
    d->timestamp_ms = 1700000000000LL;
    if (!(d->input = strdup(input_subject)))
        goto fail;

    if (ts_schemas_load(TS_SOURCE_DIR "/schemas/avro", &d->schemas, err, sizeof(err)) != TS_OK)
        goto fail;
    d->in_enc = ts_encoder_create(d->schemas, input_subject);
    d->in_dec = ts_decoder_create(d->schemas, input_subject);
    if (!d->in_enc || !d->in_dec) {
        snprintf(err, sizeof(err), "no schema subject %s", input_subject);
        goto fail;
    }

    json_error_t jerr;
    params = params_json ? json_loads(params_json, 0, &jerr) : json_object();
    if (!params || !json_is_object(params)) {
        snprintf(err, sizeof(err), "params are not a JSON object: %s",
                 params ? "not an object" : jerr.text);
        goto fail;
    }
    d->self = def->create(params, err, sizeof(err));
    if (!d->self)
        goto fail;
    json_decref(params);
    params = NULL;

    ts_state_backend backend = {ts_driver_backend_get, d};
    if (!(d->effs = ts_effects_create()) ||
        !(d->ctx = ts_ctx_create(&backend, d->effs, ts_driver_encoder_for, d))) {
        snprintf(err, sizeof(err), "out of memory");
        goto fail;
    }
    ts_ctx_defer_views(d->ctx, 1); /* as a task does */
    return d;

fail:
    ts_log_error(TS_DRIVER_COMP, "cannot create a driver for %s: %s", def->name,
                 err[0] ? err : "out of memory");
    json_decref(params);
    ts_driver_destroy(d);
    return NULL;
}

void ts_driver_destroy(ts_driver *d) {
    if (!d)
        return;
    if (d->self)
        d->def->destroy(d->self);
    ts_ctx_destroy(d->ctx);
    ts_effects_destroy(d->effs);
    ts_driver_kv_clear(&d->state);
    ts_driver_view *v, *tmp;
    HASH_ITER(hh, d->views, v, tmp) { ts_driver_view_free(d, v); }
    ts_driver_tables_clear(d);
    ts_driver_topics_clear(d);
    ts_encoder_destroy(d->in_enc);
    ts_decoder_destroy(d->in_dec);
    ts_schemas_destroy(d->schemas);
    free(d->key_field);
    free(d->input);
    free(d);
}

void ts_driver_set_key_field(ts_driver *d, const char *field) {
    free(d->key_field);
    d->key_field = field ? strdup(field) : NULL;
}

void ts_driver_set_time(ts_driver *d, int64_t timestamp_ms) { d->timestamp_ms = timestamp_ms; }

/* ---- sending ---------------------------------------------------------------------- */

/* Forgets the effects of the batch applied before, when a new batch starts. */
static void ts_driver_batch_open(ts_driver *d) {
    if (d->effects_applied) {
        ts_effects_clear(d->effs);
        d->effects_applied = 0;
    }
}

static ts_err ts_driver_apply(ts_driver *d) {
    ts_err result = TS_OK;
    ts_err resolved = ts_ctx_views_resolve(d->ctx);
    if (resolved != TS_OK)
        return resolved;
    if (ts_ctx_writes_foreach(d->ctx, ts_driver_state_write, d) != TS_OK)
        return TS_E_NOMEM;
    ts_ctx_writes_done(d->ctx);
    for (size_t i = 0; i < ts_effects_count(d->effs); i++) {
        const ts_effect *eff = ts_effects_at(d->effs, i);
        if (eff->dead)
            continue;
        int rc = 0;
        switch (eff->kind) {
        case TS_EFF_ROW_UPSERT:
        case TS_EFF_ROW_DELETE:
            rc = ts_driver_apply_row(d, eff);
            break;
        case TS_EFF_EMIT:
            rc = ts_driver_apply_emit(d, eff);
            break;
        default:
            rc = ts_driver_apply_view(d, eff);
            break;
        }
        if (rc != 0)
            result = TS_E_INVALID;
    }
    d->effects_applied = 1;
    return result;
}

ts_err ts_driver_send(ts_driver *d, const char *json_event) {
    char *bytes = NULL;
    size_t len = 0;
    d->reason[0] = '\0';
    ts_driver_batch_open(d);

    json_error_t jerr;
    json_t *doc = json_loads(json_event, 0, &jerr);
    if (!doc) {
        snprintf(d->reason, sizeof(d->reason), "event is not JSON: %s", jerr.text);
        ts_log_error(TS_DRIVER_COMP, "%s", d->reason);
        return TS_E_INVALID;
    }
    ts_err err = ts_encoder_from_json(d->in_enc, doc, &bytes, &len, d->reason, sizeof(d->reason));
    json_decref(doc);
    if (err != TS_OK) {
        ts_log_error(TS_DRIVER_COMP, "cannot encode %s: %s", json_event, d->reason);
        return TS_E_INVALID;
    }
    /* Copied: the encoder's record goes away with the next encode, and the
     * key must live until the event is processed. */
    const char *k = d->key_field ? ts_encoder_field_str(d->in_enc, d->key_field) : NULL;
    char *key = k ? strdup(k) : NULL;
    err = ts_driver_send_bytes(d, key, bytes, len);
    free(key);
    free(bytes);
    return err;
}

ts_err ts_driver_sendf(ts_driver *d, int *counter, const char *type, const char *fields_fmt, ...) {
    char fields[4096], json[4400];
    va_list ap;
    va_start(ap, fields_fmt);
    vsnprintf(fields, sizeof(fields), fields_fmt, ap);
    va_end(ap);
    snprintf(json, sizeof(json), "{\"%s\": {\"event_id\": \"e%d\", %s}}", type, ++*counter,
             fields);
    return ts_driver_send(d, json);
}

ts_err ts_driver_send_bytes(ts_driver *d, const char *key, const void *bytes, size_t len) {
    d->reason[0] = '\0';
    ts_driver_batch_open(d);
    d->offset++;
    avro_value_t *record = NULL;
    const char *type = NULL;
    ts_err err =
        ts_decoder_decode(d->in_dec, bytes, len, &record, &type, d->reason, sizeof(d->reason));
    if (err != TS_OK)
        return err;

    ts_event ev = {
        .type = type,
        .value = record,
        .topic = d->input,
        .partition = 0,
        .offset = d->offset,
        .key = key,
        .timestamp_ms = d->timestamp_ms,
    };
    const char *reason = NULL;
    ts_ctx_event_begin(d->ctx, &ev);
    err = d->def->process(d->self, d->ctx, &ev);
    err = ts_ctx_event_end(d->ctx, err, &reason);
    if (err == TS_E_REJECT && reason)
        snprintf(d->reason, sizeof(d->reason), "%s", reason);

    if (!d->in_batch) {
        ts_err applied = ts_driver_apply(d);
        if (err == TS_OK)
            err = applied;
    }
    return err;
}

const char *ts_driver_last_reason(ts_driver *d) { return d->reason; }

int64_t ts_driver_last_offset(const ts_driver *d) { return d->offset; }

void ts_driver_batch_begin(ts_driver *d) {
    ts_driver_batch_open(d);
    d->in_batch = 1;
}

ts_err ts_driver_batch_commit(ts_driver *d) {
    d->in_batch = 0;
    return ts_driver_apply(d);
}

const ts_effects *ts_driver_effects(const ts_driver *d) { return d->effs; }

/* ---- inspection ------------------------------------------------------------------ */

json_t *ts_driver_view_json(ts_driver *d, const char *key) {
    const char *s = ts_driver_view_str(d, key);
    return s ? json_loads(s, JSON_DECODE_ANY, NULL) : NULL;
}

const char *ts_driver_view_str(ts_driver *d, const char *key) {
    ts_driver_view *v = ts_driver_view_find(d, key);
    return v ? v->str : NULL;
}

size_t ts_driver_view_count(ts_driver *d) { return HASH_COUNT(d->views); }

size_t ts_driver_zset_count(ts_driver *d, const char *key) {
    ts_driver_view *v = ts_driver_view_find(d, key);
    return v ? HASH_COUNT(v->zset) : 0;
}

int ts_driver_zset_score(ts_driver *d, const char *key, const char *member, double *score) {
    ts_driver_view *v = ts_driver_view_find(d, key);
    ts_driver_kv *m = NULL;
    if (v)
        HASH_FIND(hh, v->zset, member, strlen(member), m);
    if (!m)
        return -1;
    *score = m->score;
    return 0;
}

json_t *ts_driver_row(ts_driver *d, const char *table, const char *key_values) {
    ts_driver_table *t = ts_driver_table_find(d, table);
    ts_driver_trow *r = NULL;
    if (t)
        HASH_FIND_STR(t->rows, key_values, r);
    return r ? json_deep_copy(r->cols) : NULL;
}

size_t ts_driver_row_count(ts_driver *d, const char *table) {
    ts_driver_table *t = ts_driver_table_find(d, table);
    return t ? HASH_COUNT(t->rows) : 0;
}

size_t ts_driver_emitted(ts_driver *d, const char *topic) {
    ts_driver_topic *t = ts_driver_topic_get(d, topic, 0);
    return t ? t->count : 0;
}

json_t *ts_driver_emitted_json(ts_driver *d, const char *topic, size_t i) {
    ts_driver_topic *t = ts_driver_topic_get(d, topic, 0);
    if (!t || i >= t->count)
        return NULL;
    if (!t->dec && !(t->dec = ts_decoder_create(d->schemas, topic)))
        return NULL;
    char err[256];
    avro_value_t *record = NULL;
    const char *type = NULL;
    if (ts_decoder_decode(t->dec, t->msgs[i].val, t->msgs[i].len, &record, &type, err,
                          sizeof(err)) != TS_OK) {
        ts_log_error(TS_DRIVER_COMP, "emitted event %zu of %s: %s", i, topic, err);
        return NULL;
    }
    json_t *value = ts_avro_to_json(record);
    if (!value)
        return NULL;
    return json_pack("{s:o, s:s, s:o}", "key", t->msgs[i].key ? json_string(t->msgs[i].key)
                                                              : json_null(),
                     "type", type, "value", value);
}

json_t *ts_driver_state_json(ts_driver *d, const char *store, const char *key) {
    size_t slen = strlen(store), klen = strlen(key);
    char *full = malloc(slen + 1 + klen);
    if (!full)
        return NULL;
    memcpy(full, store, slen);
    full[slen] = '\x1f';
    memcpy(full + slen + 1, key, klen);
    ts_driver_kv *kv = NULL;
    HASH_FIND(hh, d->state, full, slen + 1 + klen, kv);
    free(full);
    return kv ? json_loadb(kv->val, kv->vlen, JSON_DECODE_ANY, NULL) : NULL;
}

size_t ts_driver_state_count(const ts_driver *d) { return HASH_COUNT(d->state); }
