/* customer.c - stage 2 of the beacon family: one writer per customer.
 *
 * Input: customer-events (CustomerIdentified, emitted by the beacon stage),
 * keyed by customer_id, so a customer's view has a single writer.
 *
 * Every identification becomes a row of customer_identities (upserted by its
 * primary key (event_id, detected_at), so a replay writes the same row). The
 * view customer:{customer_id} shows the latest identification by event time:
 * state store "customer" keeps, per customer, the detected_at and event_id of
 * the identification the view shows; an identification replaces it when it
 * is newer, or equally new with a greater event_id (so equal times resolve
 * the same way whatever order they arrive in).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_processor.h"

#define CU_STORE "customer"
#define CU_TABLE "customer_identities"

typedef struct customer {
    int reserved; /* no parameters yet */
} customer;

static void *cu_create(const json_t *params, char *err, size_t errlen) {
    if (json_object_size(params) > 0) {
        snprintf(err, errlen, "customer: takes no parameters");
        return NULL;
    }
    customer *cu = calloc(1, sizeof(*cu));
    if (!cu)
        snprintf(err, errlen, "customer: out of memory");
    return cu;
}

static void cu_destroy(void *self) { free(self); }

typedef struct cu_input {
    const char *event_id, *customer_id, *store_id, *beacon_id, *device_id;
    double confidence;
    int64_t detected_at, identified_at;
} cu_input;

static ts_err cu_row(ts_ctx *ctx, const cu_input *in) {
    char at[40];
    ts_time_iso(in->detected_at, at, sizeof(at));
    ts_row *row = ts_ctx_row_upsert(ctx, CU_TABLE);
    ts_row_key(row, "event_id", in->event_id);
    /* Part of the key: the table is partitioned by it. */
    ts_row_key(row, "detected_at", at);
    ts_row_text(row, "customer_id", in->customer_id);
    ts_row_text(row, "store_id", in->store_id);
    ts_row_text(row, "beacon_id", in->beacon_id);
    ts_row_text(row, "device_id", in->device_id);
    ts_row_double(row, "confidence", in->confidence);
    ts_row_time(row, "identified_at", in->identified_at);
    return ts_row_done(row);
}

/* Writes customer:{id} (the context adds "version", the event's offset). */
static ts_err cu_view(ts_ctx *ctx, const cu_input *in) {
    char detected[40], identified[40];
    ts_time_iso(in->detected_at, detected, sizeof(detected));
    ts_time_iso(in->identified_at, identified, sizeof(identified));
    json_t *view = json_pack("{s:s, s:s, s:s, s:s, s:f, s:s, s:s}", "customerId",
                             in->customer_id, "storeId", in->store_id, "beaconId", in->beacon_id,
                             "deviceId", in->device_id, "confidence", in->confidence,
                             "detectedAt", detected, "identifiedAt", identified);
    size_t len = strlen("customer:") + strlen(in->customer_id) + 1;
    char *key = malloc(len);
    ts_err err = TS_E_NOMEM;
    if (view && key) {
        snprintf(key, len, "customer:%s", in->customer_id);
        err = ts_ctx_view_set_json(ctx, key, view);
    }
    free(key);
    json_decref(view);
    return err;
}

static ts_err cu_process(void *self, ts_ctx *ctx, const ts_event *ev) {
    (void)self;
    cu_input in = {
        .event_id = ts_event_id(ev, "event_id"),
        .customer_id = ts_event_id(ev, "customer_id"),
        .store_id = ts_event_id(ev, "store_id"),
        .beacon_id = ts_event_id(ev, "beacon_id"),
        .device_id = ts_event_id(ev, "device_id"),
    };
    if (strcmp(ev->type, "CustomerIdentified") != 0)
        return ts_ctx_reject(ctx, "unknown event type %s", ev->type);
    if (!in.event_id || !in.customer_id || !in.store_id || !in.beacon_id || !in.device_id)
        return ts_ctx_reject(ctx, "CustomerIdentified %s: event_id, customer_id, store_id, "
                                  "beacon_id and device_id must be non-empty, at most %d bytes",
                             in.event_id ? in.event_id : "?", TS_EVENT_MAX_ID_BYTES);
    if (ts_event_long(ev, "detected_at", &in.detected_at) != 0 || in.detected_at < 0 ||
        ts_event_long(ev, "identified_at", &in.identified_at) != 0 || in.identified_at < 0)
        return ts_ctx_reject(ctx, "CustomerIdentified %s of customer %s: no valid detected_at "
                                  "or identified_at",
                             in.event_id, in.customer_id);
    if (ts_event_double(ev, "confidence", &in.confidence) != 0 || !(in.confidence >= 0) ||
        in.confidence > 1)
        return ts_ctx_reject(ctx, "CustomerIdentified %s of customer %s: confidence not in 0..1",
                             in.event_id, in.customer_id);

    ts_err err = cu_row(ctx, &in);
    if (err != TS_OK)
        return err;
    json_t *cur = ts_ctx_get_json(ctx, CU_STORE, in.customer_id);
    int newer = 1;
    if (cur) {
        int64_t cur_at = json_integer_value(json_object_get(cur, "detectedAt"));
        const char *cur_id = json_string_value(json_object_get(cur, "eventId"));
        newer = in.detected_at > cur_at ||
                (in.detected_at == cur_at && (!cur_id || strcmp(in.event_id, cur_id) >= 0));
    }
    json_decref(cur);
    if (!newer)
        return TS_OK; /* an older identification arrived late: the view stays */
    json_t *doc = json_pack("{s:I, s:s}", "detectedAt", (json_int_t)in.detected_at, "eventId",
                            in.event_id);
    err = doc ? ts_ctx_put_json(ctx, CU_STORE, in.customer_id, doc) : TS_E_NOMEM;
    json_decref(doc);
    if (err == TS_OK)
        err = cu_view(ctx, &in);
    return err;
}

const ts_processor_def ts_processor_customer = {
    .name = "customer",
    .create = cu_create,
    .process = cu_process,
    .destroy = cu_destroy,
};
