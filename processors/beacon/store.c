/* store.c - stage 3 of the beacon family: one writer per store.
 *
 * Input: beacon.store-visits (StoreVisit, emitted by the beacon stage for
 * every detection), keyed by store_id. Detections of one store come from many
 * device partitions, so their arrival order here is any interleaving of those
 * partitions; both views are defined so that, once every visit is in, they do
 * not depend on that order:
 *
 *   newest   = the greatest detected_at seen at the store;
 *   present  = customers whose greatest detected_at is >= newest - presence_ttl,
 *              each with that greatest detected_at as score;
 *   traffic  = counts of the visits whose UTC day is the day of `newest`.
 *
 * State (JSON, store "store"): store_id -> {newest, day (epoch ms of 00:00
 * UTC), identified, anonymous, present: {customer_id: ms}}. A visit of an
 * older day than `day` can never count again (newest only grows), so it only
 * updates presence; a visit of a newer day starts the counts afresh. Presence
 * ignores a visit already older than the cutoff, keeps each member's greatest
 * time, and when `newest` moves drops members below the cutoff, from the
 * state and from Redis (ZREMRANGEBYSCORE via ts_ctx_zset_rem_below): the
 * state's map always equals the sorted set, and stays as small as it is.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_processor.h"

#define ST_STORE "store"
#define ST_DAY_MS 86400000LL

typedef struct store {
    int64_t ttl_ms;
} store;

static void *st_create(const json_t *params, char *err, size_t errlen) {
    int64_t ttl = 600;
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)params, key, value) {
        if (strcmp(key, "presence_ttl") != 0) {
            snprintf(err, errlen, "store: unknown parameter '%s' (expected presence_ttl)", key);
            return NULL;
        }
        if (!json_is_integer(value) || json_integer_value(value) <= 0 ||
            json_integer_value(value) > 365LL * 86400) {
            snprintf(err, errlen, "store: presence_ttl must be whole seconds, 1..31536000");
            return NULL;
        }
        ttl = json_integer_value(value);
    }
    store *st = calloc(1, sizeof(*st));
    if (!st) {
        snprintf(err, errlen, "store: out of memory");
        return NULL;
    }
    st->ttl_ms = ttl * 1000;
    return st;
}

static void st_destroy(void *self) { free(self); }

static int64_t st_ms(const json_t *obj, const char *field) {
    return (int64_t)json_integer_value(json_object_get(obj, field));
}

static char *st_key(const char *store_id, const char *suffix) {
    size_t len = strlen("store:") + strlen(store_id) + strlen(suffix) + 1;
    char *key = malloc(len);
    if (key)
        snprintf(key, len, "store:%s%s", store_id, suffix);
    return key;
}

/* Writes store:{id}:traffic from the stored counts (a render: once per batch). */
static ts_err st_traffic_render(ts_ctx *ctx, const char *store_id) {
    json_t *doc = ts_ctx_get_json(ctx, ST_STORE, store_id);
    if (!doc) /* stores are never deleted; a state failure stops the task */
        return TS_OK;
    char day[40];
    ts_time_iso(st_ms(doc, "day"), day, sizeof(day));
    day[10] = '\0'; /* "YYYY-MM-DD" */
    json_t *view = json_pack("{s:s, s:I, s:I, s:s}", "storeId", store_id, "identified",
                             (json_int_t)st_ms(doc, "identified"), "anonymous",
                             (json_int_t)st_ms(doc, "anonymous"), "date", day);
    char *key = st_key(store_id, ":traffic");
    ts_err err = view && key ? ts_ctx_view_set_json(ctx, key, view) : TS_E_NOMEM;
    free(key);
    json_decref(view);
    json_decref(doc);
    return err;
}

/* Applies a visit to the presence map and sorted set (see the top of the file). */
static ts_err st_presence(ts_ctx *ctx, const store *st, json_t *doc, const char *store_id,
                          const char *customer, int64_t at, int advanced) {
    json_t *present = json_object_get(doc, "present");
    int64_t cutoff = st_ms(doc, "newest") - st->ttl_ms;
    char *key = st_key(store_id, ":present");
    if (!key)
        return TS_E_NOMEM;
    ts_err err = TS_OK;
    if (customer && at >= cutoff) {
        json_t *prev = json_object_get(present, customer);
        if (!prev || json_integer_value(prev) < at) {
            json_object_set_new(present, customer, json_integer(at));
            err = ts_ctx_zset_add(ctx, key, customer, (double)at);
        }
    }
    if (err == TS_OK && advanced) {
        int removed = 0;
        const char *member;
        json_t *score;
        void *tmp;
        json_object_foreach_safe(present, tmp, member, score) {
            if (json_integer_value(score) < cutoff) {
                json_object_del(present, member);
                removed = 1;
            }
        }
        if (removed)
            err = ts_ctx_zset_rem_below(ctx, key, (double)cutoff);
    }
    free(key);
    return err;
}

static ts_err st_process(void *self, ts_ctx *ctx, const ts_event *ev) {
    store *st = self;
    const char *event_id = ts_event_id(ev, "event_id");
    const char *store_id = ts_event_id(ev, "store_id");
    const char *device_id = ts_event_id(ev, "device_id");
    const char *customer = ts_event_str(ev, "customer_id"); /* NULL: anonymous */
    int64_t at;
    if (strcmp(ev->type, "StoreVisit") != 0)
        return ts_ctx_reject(ctx, "unknown event type %s", ev->type);
    if (!event_id || !store_id || !device_id)
        return ts_ctx_reject(ctx, "StoreVisit %s: event_id, store_id and device_id must be "
                                  "non-empty, at most %d bytes",
                             event_id ? event_id : "?", TS_EVENT_MAX_ID_BYTES);
    if (customer && !ts_event_id(ev, "customer_id"))
        return ts_ctx_reject(ctx, "StoreVisit %s at store %s: customer_id must be non-empty, "
                                  "at most %d bytes",
                             event_id, store_id, TS_EVENT_MAX_ID_BYTES);
    if (ts_event_long(ev, "detected_at", &at) != 0 || at < 0)
        return ts_ctx_reject(ctx, "StoreVisit %s at store %s: no valid detected_at", event_id,
                             store_id);

    json_t *doc = ts_ctx_get_json(ctx, ST_STORE, store_id);
    int advanced = 0;
    if (!doc) {
        doc = json_pack("{s:I, s:I, s:I, s:I, s:{}}", "newest", (json_int_t)at, "day",
                        (json_int_t)(at - at % ST_DAY_MS), "identified", (json_int_t)0,
                        "anonymous", (json_int_t)0, "present");
        if (!doc)
            return TS_E_NOMEM;
    } else if (at > st_ms(doc, "newest")) {
        json_object_set_new(doc, "newest", json_integer(at));
        advanced = 1;
    }

    /* Traffic: only the day of `newest` is shown, so only it is counted. */
    int64_t day = at - at % ST_DAY_MS;
    int counted = 0;
    if (day > st_ms(doc, "day")) {
        json_object_set_new(doc, "day", json_integer(day));
        json_object_set_new(doc, "identified", json_integer(0));
        json_object_set_new(doc, "anonymous", json_integer(0));
    }
    if (day == st_ms(doc, "day")) {
        const char *field = customer ? "identified" : "anonymous";
        json_object_set_new(doc, field, json_integer(st_ms(doc, field) + 1));
        counted = 1;
    }

    ts_err err = st_presence(ctx, st, doc, store_id, customer, at, advanced);
    if (err == TS_OK)
        err = ts_ctx_put_json(ctx, ST_STORE, store_id, doc);
    if (err == TS_OK && counted)
        err = ts_ctx_view_render(ctx, st_traffic_render, store_id);
    json_decref(doc);
    return err;
}

const ts_processor_def ts_processor_store = {
    .name = "store",
    .create = st_create,
    .process = st_process,
    .destroy = st_destroy,
};
