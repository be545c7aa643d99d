/* test_beacon.c - the beacon family's rules (CONTRACT.md section 1), one test
 * per rule, through the in-memory driver: stage `beacon` (detections ->
 * CustomerIdentified + StoreVisit), stage `customer` (customer view and rows)
 * and stage `store` (presence and traffic views), and the three chained. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_driver_check.h"

extern const ts_processor_def ts_processor_beacon;
extern const ts_processor_def ts_processor_customer;
extern const ts_processor_def ts_processor_store;

#define IDENTIFIED "customer-events"
#define VISITS "beacon.store-visits"

static ts_driver *drv;

static ts_driver *beacon_driver(const char *params) {
    ts_driver *d = ts_driver_create(&ts_processor_beacon, params, "beacon.detections");
    cr_assert_not_null(d, "driver for beacon");
    ts_driver_set_key_field(d, "device_id");
    return d;
}

static ts_driver *customer_driver(void) {
    ts_driver *d = ts_driver_create(&ts_processor_customer, NULL, IDENTIFIED);
    cr_assert_not_null(d, "driver for customer");
    ts_driver_set_key_field(d, "customer_id");
    return d;
}

static ts_driver *store_driver(const char *params) {
    ts_driver *d = ts_driver_create(&ts_processor_store, params, VISITS);
    cr_assert_not_null(d, "driver for store");
    ts_driver_set_key_field(d, "store_id");
    return d;
}

static void teardown(void) {
    ts_driver_destroy(drv);
    drv = NULL;
}

TestSuite(beacon, .fini = teardown);
TestSuite(customer, .fini = teardown);
TestSuite(store, .fini = teardown);

/* ---- helpers --------------------------------------------------------------------- */

/* Sends a BeaconDetected; `customer` NULL = no customer_id. */
static ts_err detect(ts_driver *d, const char *eid, const char *device, const char *store,
                     const char *source, int rssi, const char *customer, const char *at) {
    char json[2048], cust[512] = "";
    if (customer)
        snprintf(cust, sizeof cust, "\"customer_id\": \"%s\", ", customer);
    snprintf(json, sizeof json,
             "{\"BeaconDetected\": {\"event_id\": \"%s\", \"device_id\": \"%s\", \"store_id\": "
             "\"%s\", \"beacon_id\": \"bcn-1\", \"source\": \"%s\", \"rssi\": %d, %s"
             "\"detected_at\": \"%s\"}}",
             eid, device, store, source, rssi, cust, at);
    return ts_driver_send(d, json);
}

/* Sends a StoreVisit; `customer` NULL = anonymous. */
static ts_err visit(ts_driver *d, const char *eid, const char *store, const char *device,
                    const char *customer, const char *at) {
    char json[2048], cust[512] = "";
    if (customer)
        snprintf(cust, sizeof cust, "\"customer_id\": \"%s\", \"confidence\": 0.8, ", customer);
    snprintf(json, sizeof json,
             "{\"StoreVisit\": {\"event_id\": \"%s\", \"store_id\": \"%s\", \"device_id\": "
             "\"%s\", %s\"detected_at\": \"%s\"}}",
             eid, store, device, cust, at);
    return ts_driver_send(d, json);
}

static ts_err identified(ts_driver *d, const char *eid, const char *customer, const char *store,
                         double confidence, const char *at) {
    char json[1024];
    snprintf(json, sizeof json,
             "{\"CustomerIdentified\": {\"event_id\": \"%s\", \"customer_id\": \"%s\", "
             "\"store_id\": \"%s\", \"beacon_id\": \"bcn-1\", \"device_id\": \"dev-1\", "
             "\"confidence\": %.2f, \"detected_at\": \"%s\", \"identified_at\": \"%s\"}}",
             eid, customer, store, confidence, at, at);
    return ts_driver_send(d, json);
}

/* The i-th event emitted to `topic`'s value; *key set to its key. New reference. */
static json_t *emitted(const char *topic, size_t i) {
    json_t *e = ts_driver_emitted_json(drv, topic, i);
    cr_assert_not_null(e, "no event %zu on %s", i, topic);
    return e;
}

static double value_conf(const json_t *e) {
    return json_number_value(json_object_get(json_object_get(e, "value"), "confidence"));
}

/* The confidence of the last CustomerIdentified, or -1 when the last detection
 * emitted none (its StoreVisit has no customer). */
static double last_confidence(size_t n_before) {
    size_t n = ts_driver_emitted(drv, IDENTIFIED);
    if (n == n_before)
        return -1;
    json_t *e = emitted(IDENTIFIED, n - 1);
    double c = value_conf(e);
    json_decref(e);
    return c;
}

#define conf_eq(got, want) cr_expect((got) > (want)-1e-9 && (got) < (want) + 1e-9, \
                                     "confidence %.3f, expected %.3f", (got), (want))

/* ---- stage 1: beacon ----------------------------------------------------------------- */

Test(beacon, qr_scan_identifies_with_confidence_1,
     .description = "QR detection with customer_id -> confidence 1.0, CustomerIdentified keyed "
                    "by customer_id with a deterministic id") {
    drv = beacon_driver(NULL);
    ts_driver_set_time(drv, 1768035600500LL); /* 2026-01-10T09:00:00.500Z */
    ok(detect(drv, "d1", "dev-1", "s1", "QR", 0, "c1", "2026-01-10T09:00:00.000Z"));
    cr_assert_eq(ts_driver_emitted(drv, IDENTIFIED), 1);
    json_t *e = emitted(IDENTIFIED, 0);
    cr_expect_str_eq(sfield(e, "key"), "c1");
    cr_expect_str_eq(sfield(e, "type"), "CustomerIdentified");
    json_t *v = json_object_get(e, "value");
    cr_expect_str_eq(sfield(v, "event_id"), "d1:identified");
    cr_expect_str_eq(sfield(v, "customer_id"), "c1");
    cr_expect_str_eq(sfield(v, "store_id"), "s1");
    cr_expect_str_eq(sfield(v, "beacon_id"), "bcn-1");
    cr_expect_str_eq(sfield(v, "device_id"), "dev-1");
    conf_eq(value_conf(e), 1.0);
    cr_expect_eq(json_integer_value(json_object_get(v, "detected_at")), 1768035600000LL);
    cr_expect_eq(json_integer_value(json_object_get(v, "identified_at")), 1768035600500LL,
                 "identified_at is the input's Kafka timestamp");
    json_decref(e);
}

Test(beacon, app_detection_identifies_with_confidence_0_9,
     .description = "APP detection with customer_id -> confidence 0.9") {
    drv = beacon_driver(NULL);
    ok(detect(drv, "d1", "dev-1", "s1", "APP", -80, "c1", "2026-01-10T09:00:00.000Z"));
    conf_eq(last_confidence(0), 0.9);
}

Test(beacon, qr_binding_then_anonymous_at_minus_70_gives_0_6,
     .description = "QR binding then anonymous detection at -70 dBm -> 0.6") {
    drv = beacon_driver(NULL);
    ok(detect(drv, "d1", "dev-1", "s1", "QR", 0, "c1", "2026-01-10T09:00:00.000Z"));
    /* At another store, so the repeat bonus does not apply. */
    ok(detect(drv, "d2", "dev-1", "s2", "BEACON", -70, NULL, "2026-01-10T09:00:30.000Z"));
    cr_assert_eq(ts_driver_emitted(drv, IDENTIFIED), 2);
    json_t *e = emitted(IDENTIFIED, 1);
    cr_expect_str_eq(sfield(e, "key"), "c1", "the bound customer is identified");
    cr_expect_str_eq(sfield(json_object_get(e, "value"), "event_id"), "d2:identified");
    conf_eq(value_conf(e), 0.6);
    json_decref(e);
}

Test(beacon, rssi_bands_of_a_bound_device,
     .description = "bound device without customer_id: rssi >= -60 -> 0.8, -75..-61 -> 0.6, "
                    "below -75 -> 0.3") {
    static const struct {
        int rssi;
        double want;
    } rows[] = {{-40, 0.8}, {-60, 0.8}, {-61, 0.6}, {-75, 0.6}, {-76, 0.3}, {-95, 0.3}};
    drv = beacon_driver("{\"min_confidence\": 0.3}");
    ok(detect(drv, "bind", "dev-1", "s0", "QR", 0, "c1", "2026-01-10T08:00:00.000Z"));
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char eid[16], store[16];
        snprintf(eid, sizeof eid, "d%zu", i);
        snprintf(store, sizeof store, "s%zu", i + 1); /* a fresh store: no repeat bonus */
        size_t before = ts_driver_emitted(drv, IDENTIFIED);
        ok(detect(drv, eid, "dev-1", store, "BEACON", rows[i].rssi, NULL,
                  "2026-01-10T09:00:00.000Z"));
        double got = last_confidence(before);
        cr_expect(got > rows[i].want - 1e-9 && got < rows[i].want + 1e-9,
                  "rssi %d -> %.2f, expected %.2f", rows[i].rssi, got, rows[i].want);
    }
}

Test(beacon, repeat_within_60s_at_same_store_adds_0_1,
     .description = "repeat within 60 s at same store adds 0.1 capped at 0.95") {
    drv = beacon_driver(NULL);
    ok(detect(drv, "d1", "dev-1", "s1", "QR", 0, "c1", "2026-01-10T09:00:00.000Z"));
    ok(detect(drv, "d2", "dev-1", "s1", "BEACON", -50, NULL, "2026-01-10T09:01:00.000Z"));
    conf_eq(last_confidence(1), 0.9); /* 0.8 + 0.1, exactly 60 s later */
    ok(detect(drv, "d3", "dev-1", "s1", "BEACON", -70, NULL, "2026-01-10T09:01:10.000Z"));
    conf_eq(last_confidence(2), 0.7);
    ok(detect(drv, "d4", "dev-1", "s1", "BEACON", -50, NULL, "2026-01-10T09:01:20.000Z"));
    double c = last_confidence(3);
    cr_expect(c <= 0.95 + 1e-9, "capped at 0.95: %.3f", c);
    conf_eq(c, 0.9);
}

Test(beacon, no_repeat_bonus_after_60s_or_at_another_store,
     .description = "repeat more than 60 s later or at another store adds nothing") {
    drv = beacon_driver(NULL);
    ok(detect(drv, "d1", "dev-1", "s1", "QR", 0, "c1", "2026-01-10T09:00:00.000Z"));
    ok(detect(drv, "d2", "dev-1", "s1", "BEACON", -70, NULL, "2026-01-10T09:01:00.001Z"));
    conf_eq(last_confidence(1), 0.6);
    ok(detect(drv, "d3", "dev-1", "s2", "BEACON", -70, NULL, "2026-01-10T09:01:10.000Z"));
    conf_eq(last_confidence(2), 0.6);
}

Test(beacon, latest_binding_wins,
     .description = "a detection with customer_id rebinds the device: the latest binding (by "
                    "event time) wins") {
    drv = beacon_driver(NULL);
    ok(detect(drv, "d1", "dev-1", "s1", "QR", 0, "c1", "2026-01-10T09:00:00.000Z"));
    ok(detect(drv, "d2", "dev-1", "s1", "APP", -50, "c2", "2026-01-10T09:10:00.000Z"));
    /* An older binding arriving late identifies its own customer... */
    ok(detect(drv, "d3", "dev-1", "s1", "QR", 0, "c1", "2026-01-10T09:05:00.000Z"));
    json_t *e = emitted(IDENTIFIED, 2);
    cr_expect_str_eq(sfield(e, "key"), "c1");
    json_decref(e);
    /* ...but does not take the device back. */
    ok(detect(drv, "d4", "dev-1", "s9", "BEACON", -50, NULL, "2026-01-10T09:20:00.000Z"));
    cr_assert_eq(ts_driver_emitted(drv, IDENTIFIED), 4);
    e = emitted(IDENTIFIED, 3);
    cr_expect_str_eq(sfield(e, "key"), "c2");
    json_decref(e);
}

Test(beacon, unbound_device_without_customer_is_anonymous_traffic,
     .description = "unbound device without customer_id is anonymous traffic") {
    drv = beacon_driver(NULL);
    ok(detect(drv, "d1", "dev-9", "s1", "BEACON", -40, NULL, "2026-01-10T09:00:00.000Z"));
    cr_expect_eq(ts_driver_emitted(drv, IDENTIFIED), 0, "nobody is identified");
    cr_assert_eq(ts_driver_emitted(drv, VISITS), 1, "but the store sees a visit");
    json_t *e = emitted(VISITS, 0);
    cr_expect_str_eq(sfield(e, "key"), "s1");
    json_t *v = json_object_get(e, "value");
    cr_expect_str_eq(sfield(v, "event_id"), "d1:visit");
    cr_expect(json_is_null(json_object_get(v, "customer_id")), "anonymous");
    cr_expect(json_is_null(json_object_get(v, "confidence")), "no confidence");
    json_decref(e);
}

Test(beacon, below_min_confidence_is_not_identified,
     .description = "bound device below min_confidence (-80 dBm -> 0.3 < 0.6) emits no "
                    "CustomerIdentified and counts as anonymous") {
    drv = beacon_driver(NULL);
    ok(detect(drv, "d1", "dev-1", "s1", "QR", 0, "c1", "2026-01-10T09:00:00.000Z"));
    ok(detect(drv, "d2", "dev-1", "s2", "BEACON", -80, NULL, "2026-01-10T09:00:10.000Z"));
    cr_expect_eq(ts_driver_emitted(drv, IDENTIFIED), 1);
    cr_assert_eq(ts_driver_emitted(drv, VISITS), 2);
    json_t *e = emitted(VISITS, 1);
    json_t *v = json_object_get(e, "value");
    cr_expect(json_is_null(json_object_get(v, "customer_id")), "counted as anonymous");
    conf_eq(json_number_value(json_object_get(v, "confidence")), 0.3);
    json_decref(e);
}

Test(beacon, min_confidence_comes_from_params,
     .description = "min_confidence from params: 0.7 accepts 0.6 + 0.1 and refuses 0.6") {
    drv = beacon_driver("{\"min_confidence\": 0.7}");
    ok(detect(drv, "d1", "dev-1", "s1", "QR", 0, "c1", "2026-01-10T09:00:00.000Z"));
    ok(detect(drv, "d2", "dev-1", "s2", "BEACON", -70, NULL, "2026-01-10T09:00:10.000Z"));
    cr_expect_eq(ts_driver_emitted(drv, IDENTIFIED), 1, "0.6 < 0.7");
    ok(detect(drv, "d3", "dev-1", "s2", "BEACON", -70, NULL, "2026-01-10T09:00:20.000Z"));
    cr_expect_eq(ts_driver_emitted(drv, IDENTIFIED), 2, "0.6 + 0.1 >= 0.7");
    cr_expect_null(ts_driver_create(&ts_processor_beacon, "{\"min_confidence\": 2}",
                                    "beacon.detections"),
                   "min_confidence above 1 is refused");
    cr_expect_null(ts_driver_create(&ts_processor_beacon, "{\"min_conf\": 0.5}",
                                    "beacon.detections"),
                   "unknown parameter is refused");
}

Test(beacon, every_detection_visits_its_store_with_deterministic_ids,
     .description = "every detection emits StoreVisit keyed by store_id; a redelivery emits the "
                    "same event ids") {
    drv = beacon_driver(NULL);
    ok(detect(drv, "d1", "dev-1", "s1", "QR", 0, "c1", "2026-01-10T09:00:00.000Z"));
    ok(detect(drv, "d1", "dev-1", "s1", "QR", 0, "c1", "2026-01-10T09:00:00.000Z"));
    cr_assert_eq(ts_driver_emitted(drv, VISITS), 2);
    cr_assert_eq(ts_driver_emitted(drv, IDENTIFIED), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *e = emitted(VISITS, i);
        cr_expect_str_eq(sfield(e, "key"), "s1");
        cr_expect_str_eq(sfield(json_object_get(e, "value"), "event_id"), "d1:visit");
        cr_expect_str_eq(sfield(json_object_get(e, "value"), "customer_id"), "c1");
        json_decref(e);
        e = emitted(IDENTIFIED, i);
        cr_expect_str_eq(sfield(json_object_get(e, "value"), "event_id"), "d1:identified");
        json_decref(e);
    }
}

Test(beacon, malformed_detection_is_rejected,
     .description = "a detection with an empty or too long device_id or customer_id, or an "
                    "event_id too long to derive its outputs' ids from, is rejected and changes "
                    "nothing") {
    drv = beacon_driver(NULL);
    rejected(detect(drv, "d1", "", "s1", "BEACON", -50, NULL, "2026-01-10T09:00:00.000Z"),
             "d1");
    rejected(detect(drv, "d2", "dev-1", "s1", "APP", -50, "", "2026-01-10T09:00:00.000Z"),
             "customer_id must be non-empty");
    char longest[TS_EVENT_MAX_ID_BYTES + 2];
    memset(longest, 'x', sizeof(longest) - 1);
    longest[sizeof(longest) - 1] = '\0';
    rejected(detect(drv, "d3", longest, "s1", "APP", -50, NULL, "2026-01-10T09:00:00.000Z"),
             "at most 256 bytes");
    rejected(detect(drv, "d4", "dev-1", "s1", "APP", -50, longest, "2026-01-10T09:00:00.000Z"),
             "customer_id must be non-empty, at most 256 bytes");
    longest[TS_EVENT_MAX_SOURCE_ID_BYTES + 1] = '\0';
    rejected(detect(drv, longest, "dev-1", "s1", "APP", -50, NULL, "2026-01-10T09:00:00.000Z"),
             "event_id must be at most 224 bytes");
    cr_expect_eq(ts_driver_state_count(drv), 0);
    cr_expect_eq(ts_driver_emitted(drv, VISITS), 0);
    cr_expect_eq(ts_driver_emitted(drv, IDENTIFIED), 0);
    /* One byte shorter is taken, and the ids derived from it are ids. */
    longest[TS_EVENT_MAX_SOURCE_ID_BYTES] = '\0';
    ok(detect(drv, longest, "dev-1", "s1", "QR", -50, "c1", "2026-01-10T09:00:00.000Z"));
    json_t *e = emitted(IDENTIFIED, 0);
    const char *id = sfield(json_object_get(e, "value"), "event_id");
    cr_assert(id && strlen(id) > TS_EVENT_MAX_SOURCE_ID_BYTES &&
                  strlen(id) <= TS_EVENT_MAX_ID_BYTES,
              "derived id of %zu bytes", id ? strlen(id) : 0);
    json_decref(e);
}

/* ---- stage 2: customer ----------------------------------------------------------------- */

Test(customer, view_shows_latest_identification_by_event_time,
     .description = "customer:{id} is the latest accepted identification by event time; an "
                    "older one arriving later does not replace it") {
    drv = customer_driver();
    ok(identified(drv, "i1", "c1", "s1", 0.9, "2026-01-10T09:00:00.000Z"));
    ok(identified(drv, "i2", "c1", "s2", 0.7, "2026-01-10T09:30:00.000Z"));
    ok(identified(drv, "i3", "c1", "s3", 1.0, "2026-01-10T09:10:00.000Z"));
    const char *text = ts_driver_view_str(drv, "customer:c1");
    cr_assert_not_null(text);
    cr_expect_str_eq(text,
                     "{\"customerId\":\"c1\",\"storeId\":\"s2\",\"beaconId\":\"bcn-1\","
                     "\"deviceId\":\"dev-1\",\"confidence\":0.7,"
                     "\"detectedAt\":\"2026-01-10T09:30:00.000Z\","
                     "\"identifiedAt\":\"2026-01-10T09:30:00.000Z\",\"version\":1}",
                     "view: %s", text);
}

Test(customer, equal_times_resolve_by_event_id_in_any_order,
     .description = "two identifications at the same detected_at: the greater event_id is shown, "
                    "whatever their order") {
    drv = customer_driver();
    ok(identified(drv, "i2", "c1", "s2", 0.9, "2026-01-10T09:00:00.000Z"));
    ok(identified(drv, "i1", "c1", "s1", 0.9, "2026-01-10T09:00:00.000Z"));
    json_t *v = ts_driver_view_json(drv, "customer:c1");
    cr_expect_str_eq(sfield(v, "storeId"), "s2");
    json_decref(v);
}

Test(customer, every_identification_is_a_row,
     .description = "every identification is a customer_identities row keyed by (event_id, "
                    "detected_at)") {
    drv = customer_driver();
    ok(identified(drv, "i1", "c1", "s1", 0.9, "2026-01-10T09:00:00.000Z"));
    ok(identified(drv, "i2", "c1", "s2", 0.6, "2026-02-10T09:00:00.000Z"));
    cr_expect_eq(ts_driver_row_count(drv, "customer_identities"), 2);
    json_t *row = ts_driver_row(drv, "customer_identities", "i2|2026-02-10T09:00:00.000Z");
    cr_assert_not_null(row);
    cr_expect_str_eq(sfield(row, "customer_id"), "c1");
    cr_expect_str_eq(sfield(row, "store_id"), "s2");
    cr_expect_str_eq(sfield(row, "beacon_id"), "bcn-1");
    cr_expect_str_eq(sfield(row, "device_id"), "dev-1");
    cr_expect_eq(strtod(sfield(row, "confidence"), NULL), 0.6);
    cr_expect_str_eq(sfield(row, "identified_at"), "2026-02-10T09:00:00.000Z");
    json_decref(row);
}

Test(customer, bad_confidence_is_rejected,
     .description = "a CustomerIdentified with confidence outside 0..1 is rejected") {
    drv = customer_driver();
    rejected(identified(drv, "i1", "c1", "s1", 1.5, "2026-01-10T09:00:00.000Z"), "confidence");
    cr_expect_null(ts_driver_view_str(drv, "customer:c1"));
    cr_expect_eq(ts_driver_row_count(drv, "customer_identities"), 0);
}

/* ---- stage 3: store -------------------------------------------------------------------- */

static double score(const char *key, const char *member) {
    double s = -1;
    if (ts_driver_zset_score(drv, key, member, &s) != 0)
        return -1;
    return s;
}

Test(store, identified_visit_makes_the_customer_present,
     .description = "an identified visit adds customer_id to store:{id}:present with score = "
                    "detected_at in ms; the score never goes back") {
    drv = store_driver(NULL);
    ok(visit(drv, "v1", "s1", "dev-1", "c1", "2026-01-10T09:00:10.000Z"));
    ok(visit(drv, "v2", "s1", "dev-1", "c1", "2026-01-10T09:00:00.000Z"));
    ok(visit(drv, "v3", "s1", "dev-2", NULL, "2026-01-10T09:00:20.000Z"));
    cr_expect_eq(ts_driver_zset_count(drv, "store:s1:present"), 1, "anonymous is not present");
    cr_expect_eq(score("store:s1:present", "c1"), 1768035610000.0);
}

Test(store, presence_expires_after_presence_ttl_of_event_time,
     .description = "presence expires after presence_ttl of event time") {
    drv = store_driver(NULL); /* 600 s */
    ok(visit(drv, "v1", "s1", "dev-1", "c1", "2026-01-10T09:00:00.000Z"));
    ok(visit(drv, "v2", "s1", "dev-2", "c2", "2026-01-10T09:05:00.000Z"));
    ok(visit(drv, "v3", "s1", "dev-3", NULL, "2026-01-10T09:10:00.000Z"));
    cr_expect_eq(score("store:s1:present", "c1"), 1768035600000.0,
                 "exactly presence_ttl old: still present");
    ok(visit(drv, "v4", "s1", "dev-3", NULL, "2026-01-10T09:10:00.001Z"));
    cr_expect_eq(score("store:s1:present", "c1"), -1, "older than presence_ttl: removed");
    cr_expect_eq(score("store:s1:present", "c2"), 1768035900000.0);
    /* A late visit already older than the cutoff does not bring c1 back. */
    ok(visit(drv, "v5", "s1", "dev-1", "c1", "2026-01-10T09:00:00.000Z"));
    cr_expect_eq(ts_driver_zset_count(drv, "store:s1:present"), 1);
}

Test(store, presence_ttl_comes_from_params,
     .description = "presence_ttl from params (60 s)") {
    drv = store_driver("{\"presence_ttl\": 60}");
    ok(visit(drv, "v1", "s1", "dev-1", "c1", "2026-01-10T09:00:00.000Z"));
    ok(visit(drv, "v2", "s1", "dev-2", "c2", "2026-01-10T09:01:00.500Z"));
    cr_expect_eq(ts_driver_zset_count(drv, "store:s1:present"), 1);
    cr_expect_eq(score("store:s1:present", "c2"), 1768035660500.0);
    cr_expect_null(ts_driver_create(&ts_processor_store, "{\"presence_ttl\": 0}", VISITS));
}

Test(store, traffic_counts_identified_and_anonymous,
     .description = "store:{id}:traffic counts identified and anonymous visits of the current "
                    "UTC day") {
    drv = store_driver(NULL);
    ok(visit(drv, "v1", "s1", "dev-1", "c1", "2026-01-10T09:00:00.000Z"));
    ok(visit(drv, "v2", "s1", "dev-2", NULL, "2026-01-10T09:01:00.000Z"));
    ok(visit(drv, "v3", "s1", "dev-3", NULL, "2026-01-10T09:02:00.000Z"));
    json_t *v = ts_driver_view_json(drv, "store:s1:traffic");
    cr_assert_not_null(v);
    cr_expect_str_eq(sfield(v, "storeId"), "s1");
    cr_expect_eq(json_integer_value(json_object_get(v, "identified")), 1);
    cr_expect_eq(json_integer_value(json_object_get(v, "anonymous")), 2);
    cr_expect_str_eq(sfield(v, "date"), "2026-01-10");
    cr_expect_eq(json_integer_value(json_object_get(v, "version")), 2);
    json_decref(v);
}

Test(store, traffic_resets_at_the_utc_day_boundary,
     .description = "traffic resets at the UTC day boundary; a late visit of the previous day "
                    "does not change today's counts") {
    drv = store_driver(NULL);
    ok(visit(drv, "v1", "s1", "dev-1", "c1", "2026-01-10T23:59:59.999Z"));
    ok(visit(drv, "v2", "s1", "dev-2", NULL, "2026-01-11T00:00:00.000Z"));
    json_t *v = ts_driver_view_json(drv, "store:s1:traffic");
    cr_expect_str_eq(sfield(v, "date"), "2026-01-11");
    cr_expect_eq(json_integer_value(json_object_get(v, "identified")), 0);
    cr_expect_eq(json_integer_value(json_object_get(v, "anonymous")), 1);
    json_decref(v);
    ok(visit(drv, "v3", "s1", "dev-3", "c3", "2026-01-10T23:59:00.000Z"));
    v = ts_driver_view_json(drv, "store:s1:traffic");
    cr_expect_eq(json_integer_value(json_object_get(v, "identified")), 0);
    cr_expect_eq(json_integer_value(json_object_get(v, "version")), 1, "not rewritten");
    json_decref(v);
}

/* The views of store s1 without versions, as one string. */
static char *store_snapshot(void) {
    json_t *all = json_object();
    json_t *t = ts_driver_view_json(drv, "store:s1:traffic");
    json_object_del(t, "version");
    json_object_set_new(all, "traffic", t ? t : json_null());
    static const char *const members[] = {"c1", "c2", "c3", "c4"};
    for (size_t i = 0; i < 4; i++)
        json_object_set_new(all, members[i], json_real(score("store:s1:present", members[i])));
    json_object_set_new(all, "count",
                        json_integer((json_int_t)ts_driver_zset_count(drv, "store:s1:present")));
    char *text = json_dumps(all, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(all);
    return text;
}

Test(store, views_do_not_depend_on_the_interleaving,
     .description = "presence and traffic are the same for any interleaving of the device "
                    "partitions") {
    /* Visits of two device partitions: each in its own time order, merged in
     * every interleaving drawn below. */
    static const struct {
        const char *eid, *device, *customer, *at;
    } p1[] = {{"a1", "dev-1", "c1", "2026-01-10T23:50:00.000Z"},
              {"a2", "dev-1", NULL, "2026-01-10T23:58:00.000Z"},
              {"a3", "dev-1", "c1", "2026-01-11T00:01:00.000Z"},
              {"a4", "dev-1", "c3", "2026-01-11T00:02:00.000Z"}},
      p2[] = {{"b1", "dev-2", "c2", "2026-01-10T23:49:00.000Z"},
              {"b2", "dev-2", NULL, "2026-01-11T00:00:30.000Z"},
              {"b3", "dev-2", "c4", "2026-01-11T00:12:30.000Z"},
              {"b4", "dev-2", NULL, "2026-01-10T23:59:59.000Z"}};
    char *first = NULL;
    unsigned seed = 7;
    for (int round = 0; round < 40; round++) {
        drv = store_driver(NULL);
        size_t i = 0, j = 0;
        while (i < 4 || j < 4) {
            seed = seed * 1103515245u + 12345u;
            int take1 = j == 4 || (i < 4 && ((seed >> 16) & 1));
            if (take1) {
                ok(visit(drv, p1[i].eid, "s1", p1[i].device, p1[i].customer, p1[i].at));
                i++;
            } else {
                ok(visit(drv, p2[j].eid, "s1", p2[j].device, p2[j].customer, p2[j].at));
                j++;
            }
        }
        char *snap = store_snapshot();
        if (!first)
            first = snap;
        else {
            cr_expect_str_eq(snap, first, "interleaving %d differs", round);
            free(snap);
        }
        ts_driver_destroy(drv);
        drv = NULL;
    }
    /* newest 00:12:30: day 2026-01-11 has a3 a4 b2 b3 (identified 3, anonymous 1);
     * present: c4 (00:12:30), c3 (00:02:00 is 10.5 min old: gone), c1 (gone). */
    json_t *snap = json_loads(first, 0, NULL);
    json_t *t = json_object_get(snap, "traffic");
    cr_expect_eq(json_integer_value(json_object_get(t, "identified")), 3, "%s", first);
    cr_expect_eq(json_integer_value(json_object_get(t, "anonymous")), 1, "%s", first);
    cr_expect_eq(json_integer_value(json_object_get(snap, "count")), 1, "%s", first);
    json_decref(snap);
    free(first);
}

/* ---- the three stages chained ------------------------------------------------------------ */

/* Feeds every event `from` emitted to `topic` (from index *next on) to `to`. */
static void forward(ts_driver *from, const char *topic, ts_driver *to, size_t *next) {
    size_t n = ts_driver_emitted(from, topic);
    for (; *next < n; (*next)++) {
        json_t *e = ts_driver_emitted_json(from, topic, *next);
        json_t *wrapped = json_pack("{s:O}", sfield(e, "type"), json_object_get(e, "value"));
        char *text = json_dumps(wrapped, JSON_COMPACT);
        cr_assert_eq(ts_driver_send(to, text), TS_OK, "%s: %s", text, ts_driver_last_reason(to));
        free(text);
        json_decref(wrapped);
        json_decref(e);
    }
}

Test(beacon, three_stages_chained,
     .description = "detections through beacon -> customer and store: views and rows") {
    drv = beacon_driver(NULL);
    ts_driver *cu = customer_driver(), *st = store_driver(NULL);
    ok(detect(drv, "d1", "dev-1", "s1", "QR", 0, "c1", "2026-01-10T09:00:00.000Z"));
    ok(detect(drv, "d2", "dev-1", "s1", "BEACON", -70, NULL, "2026-01-10T09:00:30.000Z"));
    ok(detect(drv, "d3", "dev-9", "s1", "BEACON", -50, NULL, "2026-01-10T09:00:40.000Z"));
    size_t ni = 0, nv = 0;
    forward(drv, IDENTIFIED, cu, &ni);
    forward(drv, VISITS, st, &nv);
    json_t *v = ts_driver_view_json(cu, "customer:c1");
    cr_assert_not_null(v);
    cr_expect_str_eq(sfield(v, "detectedAt"), "2026-01-10T09:00:30.000Z");
    cr_expect(json_real_value(json_object_get(v, "confidence")) > 0.699 &&
              json_real_value(json_object_get(v, "confidence")) < 0.701);
    json_decref(v);
    cr_expect_eq(ts_driver_row_count(cu, "customer_identities"), 2);
    v = ts_driver_view_json(st, "store:s1:traffic");
    cr_expect_eq(json_integer_value(json_object_get(v, "identified")), 2);
    cr_expect_eq(json_integer_value(json_object_get(v, "anonymous")), 1);
    json_decref(v);
    double s = 0;
    cr_expect_eq(ts_driver_zset_score(st, "store:s1:present", "c1", &s), 0);
    cr_expect_eq(s, 1768035630000.0);
    ts_driver_destroy(cu);
    ts_driver_destroy(st);
}
