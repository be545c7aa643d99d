/* test_pipeline_beacon.c - beacon detections through the whole pipeline:
 * Kafka (mock cluster) -> beacon -> customer-events / beacon.store-visits ->
 * customer, store -> Redis views, PostgreSQL rows (partitions created as
 * needed), output topic and DLQ. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_testpipe.h"

static ts_testpipe tp;

static void setup(void) { cr_assert_eq(ts_testpipe_start(&tp), 0, "pipeline did not start"); }

static void teardown(void) {
    if (tp.pid > 0)
        ts_testpipe_runtime_stop(&tp, SIGKILL);
    ts_testpipe_stop(&tp);
}

TestSuite(pipeline_beacon, .init = setup, .fini = teardown, .timeout = 180);

#define TOPIC "beacon.detections"

static void detect(const char *eid, const char *device, const char *store, const char *source,
                   int rssi, const char *customer, const char *at) {
    char json[1024], cust[160] = "";
    if (customer)
        snprintf(cust, sizeof cust, "\"customer_id\": \"%s\", ", customer);
    snprintf(json, sizeof json,
             "{\"BeaconDetected\": {\"event_id\": \"%s\", \"device_id\": \"%s\", \"store_id\": "
             "\"%s\", \"beacon_id\": \"bcn-1\", \"source\": \"%s\", \"rssi\": %d, %s"
             "\"detected_at\": \"%s\"}}",
             eid, device, store, source, rssi, cust, at);
    cr_assert_eq(ts_testpipe_produce_json(&tp, TOPIC, json), 0, "produce %s", json);
}

static void redis(char *out, size_t cap, const char *fmt, const char *arg) {
    cr_assert_eq(ts_testenv_redis_cmd(tp.redis.url, out, cap, fmt, arg), 0, "redis: %s", out);
}

static void sql(char *out, size_t cap, const char *query) {
    cr_assert_eq(ts_testenv_pg_query(tp.pg, out, cap, query), 0, "sql: %s", out);
}

/* The stages run one after the other: wait for each input in turn. */
static void wait_all(void) {
    static const char *const topics[] = {TOPIC, "customer-events", "beacon.store-visits"};
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(ts_testpipe_wait_committed(&tp, topics[i], 30), 0,
                     "runtime did not commit %s; see %s", topics[i], tp.log);
}

Test(pipeline_beacon, views_rows_topics_and_dlq) {
    detect("e1", "dev-1", "s1", "QR", 0, "c1", "2026-01-31T23:59:45.000Z");
    detect("e2", "dev-1", "s1", "BEACON", -70, NULL, "2026-02-01T00:00:30.000Z"); /* 0.7 */
    detect("e3", "dev-2", "s1", "APP", -50, "c2", "2026-02-01T00:01:00.000Z");
    detect("e4", "dev-9", "s1", "BEACON", -40, NULL, "2026-02-01T00:02:00.000Z"); /* anonymous */
    detect("e5", "dev-2", "s2", "BEACON", -90, NULL, "2026-02-01T00:03:00.000Z"); /* 0.3 */
    detect("e6", "", "s1", "BEACON", -40, NULL, "2026-02-01T00:04:00.000Z");    /* reject */
    cr_assert_eq(ts_testpipe_produce_raw(&tp, TOPIC, "dev-1", "garbage!", 8), 0);
    /* A redelivery of e3 changes nothing. */
    detect("e3", "dev-2", "s1", "APP", -50, "c2", "2026-02-01T00:01:00.000Z");
    wait_all();

    char out[8192];
    redis(out, sizeof out, "GET %s", "customer:c1");
    json_t *v = json_loads(out, 0, NULL);
    cr_assert_not_null(v, "customer:c1 = %s", out);
    cr_expect_str_eq(json_string_value(json_object_get(v, "detectedAt")),
                     "2026-02-01T00:00:30.000Z", "%s", out);
    cr_expect(strstr(out, "\"confidence\":0.7,") != NULL, "%s", out);
    cr_expect(json_integer_value(json_object_get(v, "version")) >= 0, "%s", out);
    json_decref(v);

    redis(out, sizeof out, "ZRANGE %s 0 -1 WITHSCORES", "store:s1:present");
    cr_expect_str_eq(out, "c1,1769904030000,c2,1769904060000");
    redis(out, sizeof out, "GET %s", "store:s1:traffic");
    v = json_loads(out, 0, NULL);
    cr_assert_not_null(v, "traffic = %s", out);
    cr_expect_str_eq(json_string_value(json_object_get(v, "date")), "2026-02-01", "%s", out);
    cr_expect_eq(json_integer_value(json_object_get(v, "identified")), 2, "%s", out);
    cr_expect_eq(json_integer_value(json_object_get(v, "anonymous")), 1, "%s", out);
    json_decref(v);
    redis(out, sizeof out, "GET %s", "store:s2:traffic");
    cr_expect(strstr(out, "\"anonymous\":1") && strstr(out, "\"identified\":0"),
              "below min_confidence counts as anonymous: %s", out);

    sql(out, sizeof out,
        "SELECT event_id, customer_id, store_id, confidence FROM customer_identities "
        "ORDER BY detected_at");
    cr_expect_str_eq(out, "e1:identified|c1|s1|1\ne2:identified|c1|s1|0.7\n"
                          "e3:identified|c2|s1|0.9");
    sql(out, sizeof out,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'customer_identities'::regclass ORDER BY 1");
    cr_expect_str_eq(out, "customer_identities_202601\ncustomer_identities_202602",
                     "month partitions created as needed");

    size_t n = 0;
    rd_kafka_message_t **msgs = ts_testpipe_read_topic(&tp, "customer-events", &n);
    cr_expect_eq(n, 3, "three identifications, got %zu", n);
    for (size_t i = 0; i < n; i++)
        cr_expect(msgs[i]->key_len == 2 && msgs[i]->len > 5 &&
                      ((const char *)msgs[i]->payload)[0] == 0,
                  "keyed by customer_id, Confluent framing");
    ts_testpipe_records_free(msgs, n);

    msgs = ts_testpipe_read_topic(&tp, TOPIC ".dlq", &n);
    cr_assert_eq(n, 2, "2 records in the DLQ, got %zu", n);
    int garbage = 0;
    for (size_t i = 0; i < n; i++) {
        char *error = ts_testpipe_header(msgs[i], "error");
        char *src = ts_testpipe_header(msgs[i], "source.topic");
        cr_assert_not_null(error);
        cr_expect_str_eq(src, TOPIC);
        if (msgs[i]->len == 8 && memcmp(msgs[i]->payload, "garbage!", 8) == 0)
            garbage = 1;
        else
            cr_expect(strstr(error, "e6") != NULL, "reason names the event: %s", error);
        free(error);
        free(src);
    }
    cr_expect(garbage, "undecodable bytes reach the DLQ unchanged");
    ts_testpipe_records_free(msgs, n);

    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0, "graceful stop exits 0");
}
