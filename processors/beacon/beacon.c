/* beacon.c - stage 1 of the beacon family: detections -> identifications.
 *
 * Input: beacon.detections (BeaconDetected), keyed by device_id, so every
 * detection of a device is seen by one task, in order.
 *
 * State (JSON, store "device"): device_id -> {customerId, boundAt, seen}:
 * the customer the device is bound to (null when never bound) with the event
 * time of that binding, and `seen`: store_id -> the newest detected_at of the
 * device at that store, kept only for stores seen within the repeat window
 * (60 s) of the device's newest detection, so the document stays small.
 *
 * Confidence is computed in hundredths (integers), so 0.6 + 0.1 is exactly
 * 0.7 and a threshold of 0.7 behaves as a reader expects:
 *   with customer_id      QR 100, APP and BEACON 90; binds the device;
 *   bound, no customer_id rssi >= -60: 80, -75..-61: 60, below -75: 30,
 *                         +10 (at most 95) when the device was detected at the
 *                         same store at most 60 s of event time earlier;
 *   unbound, no customer  anonymous (no confidence).
 * An identification with confidence >= min_confidence is accepted and emits
 * CustomerIdentified (key customer_id, event id "<event_id>:identified").
 * Every detection also emits StoreVisit to the internal topic
 * beacon.store-visits (key store_id, event id "<event_id>:visit"), with the
 * customer only when accepted: the store stage counts the rest as anonymous.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_processor.h"

#define BC_STORE_DEVICE "device"
#define BC_TOPIC_IDENTIFIED "customer-events"
#define BC_TOPIC_VISITS "beacon.store-visits"
#define BC_REPEAT_WINDOW_MS 60000

typedef struct beacon {
    double min_confidence;
} beacon;

static void *bc_create(const json_t *params, char *err, size_t errlen) {
    double min = 0.6;
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)params, key, value) {
        if (strcmp(key, "min_confidence") != 0) {
            snprintf(err, errlen, "beacon: unknown parameter '%s' (expected min_confidence)", key);
            return NULL;
        }
        if (!json_is_number(value) || json_number_value(value) < 0 ||
            json_number_value(value) > 1) {
            snprintf(err, errlen, "beacon: min_confidence must be a number in 0..1");
            return NULL;
        }
        min = json_number_value(value);
    }
    beacon *bc = calloc(1, sizeof(*bc));
    if (!bc) {
        snprintf(err, errlen, "beacon: out of memory");
        return NULL;
    }
    bc->min_confidence = min;
    return bc;
}

static void bc_destroy(void *self) { free(self); }

/* The detection as read from the event. */
typedef struct bc_input {
    const char *event_id, *device_id, *store_id, *beacon_id, *source, *customer_id;
    int64_t rssi, at;
} bc_input;

/* ---- confidence ------------------------------------------------------------- */

static int bc_rssi_pct(int64_t rssi) {
    if (rssi >= -60)
        return 80;
    if (rssi >= -75)
        return 60;
    return 30;
}

/* Updates the device's `seen` map with a detection at `store` at `at` and
 * drops stores older than the repeat window of the newest detection. */
static void bc_seen_update(json_t *seen, const char *store, int64_t at) {
    json_t *prev = json_object_get(seen, store);
    /* An out-of-order older detection must not hide the newer one. */
    if (!prev || json_integer_value(prev) < at)
        json_object_set_new(seen, store, json_integer(at));
    int64_t newest = at;
    const char *k;
    json_t *v;
    json_object_foreach(seen, k, v) {
        if (json_integer_value(v) > newest)
            newest = json_integer_value(v);
    }
    void *tmp;
    json_object_foreach_safe(seen, tmp, k, v) {
        if (json_integer_value(v) < newest - BC_REPEAT_WINDOW_MS)
            json_object_del(seen, k);
    }
}

/* ---- output events ------------------------------------------------------------ */

static int bc_set_str(avro_value_t *rec, const char *field, const char *s) {
    avro_value_t f;
    return avro_value_get_by_name(rec, field, &f, NULL) || avro_value_set_string(&f, s);
}

static int bc_set_long(avro_value_t *rec, const char *field, int64_t v) {
    avro_value_t f;
    return avro_value_get_by_name(rec, field, &f, NULL) || avro_value_set_long(&f, v);
}

static int bc_set_double(avro_value_t *rec, const char *field, double v) {
    avro_value_t f;
    return avro_value_get_by_name(rec, field, &f, NULL) || avro_value_set_double(&f, v);
}

/* Sets branch 1 (the value) of an optional ["null", T] field. */
static int bc_set_opt_str(avro_value_t *rec, const char *field, const char *s) {
    avro_value_t f, b;
    return avro_value_get_by_name(rec, field, &f, NULL) || avro_value_set_branch(&f, 1, &b) ||
           avro_value_set_string(&b, s);
}

static int bc_set_opt_double(avro_value_t *rec, const char *field, double v) {
    avro_value_t f, b;
    return avro_value_get_by_name(rec, field, &f, NULL) || avro_value_set_branch(&f, 1, &b) ||
           avro_value_set_double(&b, v);
}

static char *bc_id(const char *event_id, const char *suffix) {
    size_t len = strlen(event_id) + strlen(suffix) + 1;
    char *id = malloc(len);
    if (id)
        snprintf(id, len, "%s%s", event_id, suffix);
    return id;
}

static ts_err bc_emit_identified(ts_ctx *ctx, const ts_event *ev, const bc_input *in,
                                 const char *customer, double confidence) {
    avro_value_t *rec = ts_ctx_event_new(ctx, BC_TOPIC_IDENTIFIED, "CustomerIdentified");
    char *id = bc_id(in->event_id, ":identified");
    if (!rec || !id) {
        free(id);
        return rec ? TS_E_NOMEM : TS_E_INVALID;
    }
    /* identified_at: when the detection reached the pipeline (its Kafka
     * timestamp), which replays identically; never before the detection. */
    int64_t identified_at = ev->timestamp_ms > in->at ? ev->timestamp_ms : in->at;
    int bad = bc_set_str(rec, "event_id", id) || bc_set_str(rec, "customer_id", customer) ||
              bc_set_str(rec, "store_id", in->store_id) ||
              bc_set_str(rec, "beacon_id", in->beacon_id) ||
              bc_set_str(rec, "device_id", in->device_id) ||
              bc_set_double(rec, "confidence", confidence) ||
              bc_set_long(rec, "detected_at", in->at) ||
              bc_set_long(rec, "identified_at", identified_at);
    free(id);
    return bad ? TS_E_INVALID : ts_ctx_emit(ctx, BC_TOPIC_IDENTIFIED, customer, rec);
}

/* `customer` NULL: anonymous traffic; `confidence` < 0: none computed. */
static ts_err bc_emit_visit(ts_ctx *ctx, const bc_input *in, const char *customer,
                            double confidence) {
    avro_value_t *rec = ts_ctx_event_new(ctx, BC_TOPIC_VISITS, "StoreVisit");
    char *id = bc_id(in->event_id, ":visit");
    if (!rec || !id) {
        free(id);
        return rec ? TS_E_NOMEM : TS_E_INVALID;
    }
    int bad = bc_set_str(rec, "event_id", id) || bc_set_str(rec, "store_id", in->store_id) ||
              bc_set_str(rec, "device_id", in->device_id) ||
              (customer && bc_set_opt_str(rec, "customer_id", customer)) ||
              (confidence >= 0 && bc_set_opt_double(rec, "confidence", confidence)) ||
              bc_set_long(rec, "detected_at", in->at);
    free(id);
    return bad ? TS_E_INVALID : ts_ctx_emit(ctx, BC_TOPIC_VISITS, in->store_id, rec);
}

/* ---- process ------------------------------------------------------------------ */

static ts_err bc_process(void *self, ts_ctx *ctx, const ts_event *ev) {
    beacon *bc = self;
    bc_input in = {
        .event_id = ts_event_str(ev, "event_id"),
        .device_id = ts_event_id(ev, "device_id"),
        .store_id = ts_event_id(ev, "store_id"),
        .beacon_id = ts_event_id(ev, "beacon_id"),
        .source = ts_event_enum(ev, "source"),
        .customer_id = ts_event_str(ev, "customer_id"),
    };
    /* The schema makes these required; checking them keeps a malformed
     * producer from reaching the state. */
    if (strcmp(ev->type, "BeaconDetected") != 0)
        return ts_ctx_reject(ctx, "unknown event type %s", ev->type);
    if (!in.event_id || !*in.event_id || !in.device_id || !in.store_id || !in.beacon_id ||
        !in.source)
        return ts_ctx_reject(ctx, "BeaconDetected %s: event_id, device_id, store_id, beacon_id "
                                  "and source must be non-empty (ids at most %d bytes)",
                             in.event_id ? in.event_id : "?", TS_EVENT_MAX_ID_BYTES);
    if (strlen(in.event_id) > TS_EVENT_MAX_SOURCE_ID_BYTES)
        return ts_ctx_reject(ctx, "BeaconDetected of device %s: event_id must be at most %d "
                                  "bytes (its outputs' ids are derived from it)",
                             in.device_id, TS_EVENT_MAX_SOURCE_ID_BYTES);
    if (ts_event_long(ev, "detected_at", &in.at) != 0 || in.at < 0)
        return ts_ctx_reject(ctx, "BeaconDetected %s of device %s: no valid detected_at",
                             in.event_id, in.device_id);
    if (ts_event_long(ev, "rssi", &in.rssi) != 0)
        return ts_ctx_reject(ctx, "BeaconDetected %s of device %s: no rssi", in.event_id,
                             in.device_id);
    if (in.customer_id && !ts_event_id(ev, "customer_id"))
        return ts_ctx_reject(ctx, "BeaconDetected %s of device %s: customer_id must be "
                                  "non-empty, at most %d bytes",
                             in.event_id, in.device_id, TS_EVENT_MAX_ID_BYTES);

    json_t *dev = ts_ctx_get_json(ctx, BC_STORE_DEVICE, in.device_id);
    if (!dev && !(dev = json_pack("{s:n, s:I, s:{}}", "customerId", "boundAt", (json_int_t)-1,
                                  "seen")))
        return TS_E_NOMEM;
    json_t *seen = json_object_get(dev, "seen");
    if (!json_is_object(seen)) {
        json_object_set_new(dev, "seen", json_object());
        seen = json_object_get(dev, "seen");
    }

    const char *customer = NULL; /* whom this detection would identify */
    int pct = -1;
    char *bound = NULL;
    if (in.customer_id) {
        customer = in.customer_id;
        pct = strcmp(in.source, "QR") == 0 ? 100 : 90;
        /* The latest binding by event time wins; an older one that arrives
         * late still identifies its own customer but does not rebind. */
        if (json_integer_value(json_object_get(dev, "boundAt")) <= in.at) {
            json_object_set_new(dev, "customerId", json_string(in.customer_id));
            json_object_set_new(dev, "boundAt", json_integer(in.at));
        }
    } else if (json_is_string(json_object_get(dev, "customerId"))) {
        bound = strdup(json_string_value(json_object_get(dev, "customerId")));
        if (!bound) {
            json_decref(dev);
            return TS_E_NOMEM;
        }
        customer = bound;
        pct = bc_rssi_pct(in.rssi);
        json_t *prev = json_object_get(seen, in.store_id);
        if (prev && in.at - json_integer_value(prev) >= 0 &&
            in.at - json_integer_value(prev) <= BC_REPEAT_WINDOW_MS)
            pct = pct + 10 > 95 ? 95 : pct + 10;
    }
    bc_seen_update(seen, in.store_id, in.at);

    ts_err err = ts_ctx_put_json(ctx, BC_STORE_DEVICE, in.device_id, dev);
    double confidence = pct >= 0 ? pct / 100.0 : -1;
    /* A tiny tolerance, so that min_confidence 0.7 (not exact in binary)
     * accepts a computed 0.7. */
    int accepted = customer && confidence + 1e-9 >= bc->min_confidence;
    if (err == TS_OK && accepted)
        err = bc_emit_identified(ctx, ev, &in, customer, confidence);
    if (err == TS_OK)
        err = bc_emit_visit(ctx, &in, accepted ? customer : NULL, confidence);
    free(bound);
    json_decref(dev);
    return err;
}

const ts_processor_def ts_processor_beacon = {
    .name = "beacon",
    .create = bc_create,
    .process = bc_process,
    .destroy = bc_destroy,
};
