/* test_pipeline_inventory.c - inventory events through the whole pipeline:
 * Kafka (mock cluster) -> tastesync run -> Redis views, PostgreSQL rows,
 * purchase.results and inventory.alerts topics, DLQ; and the stock invariants
 * across a kill -9 of the runtime. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_avro.h"
#include "ts_testpipe.h"

static ts_testpipe tp;

static void setup(void) { cr_assert_eq(ts_testpipe_start(&tp), 0, "pipeline did not start"); }

static void teardown(void) {
    if (tp.pid > 0)
        ts_testpipe_runtime_stop(&tp, SIGKILL);
    ts_testpipe_stop(&tp);
}

TestSuite(pipeline_inventory, .init = setup, .fini = teardown, .timeout = 240);

#define TOPIC "inventory.events"
#define RESULTS "purchase.results"
#define ALERTS "inventory.alerts"

static void produce(const char *json) {
    cr_assert_eq(ts_testpipe_produce_json(&tp, TOPIC, json), 0, "produce %s", json);
}

static void product(const char *eid, const char *id, int price, int stock) {
    char json[512];
    snprintf(json, sizeof(json),
             "{\"ProductCreated\": {\"event_id\": \"%s\", \"product_id\": \"%s\", \"name\": "
             "\"Product %s\", \"price\": %d, \"initial_stock\": %d, "
             "\"created_at\": \"2026-03-01T00:00:00.000Z\"}}",
             eid, id, id, price, stock);
    produce(json);
}

static void purchase(const char *eid, const char *pid, const char *user, const char *id, int qty) {
    char json[512];
    snprintf(json, sizeof(json),
             "{\"PurchaseRequested\": {\"event_id\": \"%s\", \"purchase_id\": \"%s\", "
             "\"user_id\": \"%s\", \"product_id\": \"%s\", \"quantity\": %d, "
             "\"requested_at\": \"2026-03-01T10:00:00.000Z\"}}",
             eid, pid, user, id, qty);
    produce(json);
}

static void adjust(const char *eid, const char *id, int delta) {
    char json[512];
    snprintf(json, sizeof(json),
             "{\"StockAdjusted\": {\"event_id\": \"%s\", \"product_id\": \"%s\", \"delta\": %d, "
             "\"reason\": \"count\", \"adjusted_at\": \"2026-03-01T11:00:00.000Z\"}}",
             eid, id, delta);
    produce(json);
}

static void redis(char *out, size_t cap, const char *fmt, const char *a, const char *b) {
    cr_assert_eq(ts_testenv_redis_cmd(tp.redis.url, out, cap, fmt, a, b), 0, "redis: %s", out);
}

static void sql(char *out, size_t cap, const char *query) {
    cr_assert_eq(ts_testenv_pg_query(tp.pg, out, cap, query), 0, "sql: %s", out);
}

static void wait_all(void) {
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0,
                 "runtime did not commit everything; see %s", tp.log);
}

/* Every record of `topic` decoded to {"key", "type", "value"}, in a new array. */
static json_t *read_events(const char *topic) {
    char err[256];
    ts_schemas *schemas = NULL;
    cr_assert_eq(ts_schemas_load(TS_SOURCE_DIR "/schemas/avro", &schemas, err, sizeof(err)), TS_OK,
                 "%s", err);
    ts_decoder *dec = ts_decoder_create(schemas, topic);
    cr_assert_not_null(dec);
    size_t n = 0;
    rd_kafka_message_t **msgs = ts_testpipe_read_topic(&tp, topic, &n);
    json_t *all = json_array();
    for (size_t i = 0; i < n; i++) {
        avro_value_t *rec = NULL;
        const char *type = NULL;
        cr_assert_eq(ts_decoder_decode(dec, msgs[i]->payload, msgs[i]->len, &rec, &type, err,
                                       sizeof(err)),
                     TS_OK, "%s record %zu: %s", topic, i, err);
        json_array_append_new(all, json_pack("{s:s%, s:s, s:o}", "key", (const char *)msgs[i]->key,
                                             msgs[i]->key_len, "type", type, "value",
                                             ts_avro_to_json(rec)));
    }
    ts_testpipe_records_free(msgs, n);
    ts_decoder_destroy(dec);
    ts_schemas_destroy(schemas);
    return all;
}

static const char *vstr(const json_t *e, const char *field) {
    return json_string_value(json_object_get(json_object_get(e, "value"), field));
}

/* The distinct results (by event_id) of `events` whose type is `type`. */
static size_t distinct_of_type(const json_t *events, const char *type) {
    json_t *seen = json_object();
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e) {
        if (strcmp(json_string_value(json_object_get(e, "type")), type) == 0)
            json_object_set(seen, vstr(e, "event_id"), json_true());
    }
    size_t n = json_object_size(seen);
    json_decref(seen);
    return n;
}

Test(pipeline_inventory, views_rows_topics_and_dlq) {
    product("c1", "pa", 1500, 10); /* threshold 1 */
    product("c2", "pb", 700, 5);   /* threshold 1 */
    /* 12 requests of 1 for pa: exactly 10 accepted. */
    for (int i = 0; i < 12; i++) {
        char eid[16], pid[16];
        snprintf(eid, sizeof(eid), "pr%d", i);
        snprintf(pid, sizeof(pid), "pur-a%d", i);
        purchase(eid, pid, i % 2 ? "u2" : "u1", "pa", 1);
    }
    purchase("pb1", "pur-b1", "u1", "pb", 2);
    purchase("pb1-again", "pur-b1", "u1", "pb", 3); /* repeat: changes nothing */
    purchase("px", "pur-x", "u2", "nope", 1);       /* UNKNOWN_PRODUCT, not a DLQ reject */
    purchase("pz", "pur-z", "u2", "pb", 0);         /* INVALID_QUANTITY */
    /* Three bad inputs for the DLQ. */
    adjust("adj-bad", "pb", -100);
    product("c1-again", "pa", 1, 999);
    cr_assert_eq(ts_testpipe_produce_raw(&tp, TOPIC, "pa", "garbage!", 8), 0);
    adjust("adj-ok", "pb", 4);
    wait_all();

    char out[8192];
    redis(out, sizeof(out), "GET %s", "stock:pa", NULL);
    cr_assert_str_eq(out, "0");
    redis(out, sizeof(out), "GET %s", "stock:pb", NULL);
    cr_assert_str_eq(out, "7", "5 - 2 + 4");
    redis(out, sizeof(out), "GET %s", "product:pb", NULL);
    json_t *view = json_loads(out, 0, NULL);
    cr_assert_not_null(view, "product view: %s", out);
    cr_assert_eq(json_integer_value(json_object_get(view, "currentStock")), 7, "%s", out);
    cr_assert_eq(json_integer_value(json_object_get(view, "price")), 700);
    cr_assert_str_eq(json_string_value(json_object_get(view, "updatedAt")),
                     "2026-03-01T11:00:00.000Z");
    cr_assert(json_integer_value(json_object_get(view, "version")) > 0, "%s", out);
    json_decref(view);
    redis(out, sizeof(out), "ZSCORE %s %s", "ranking:products:sold", "pa");
    cr_assert_str_eq(out, "10");
    redis(out, sizeof(out), "ZSCORE %s %s", "ranking:products:sold", "pb");
    cr_assert_str_eq(out, "2");
    redis(out, sizeof(out), "ZCARD %s", "purchases:u1", NULL);
    cr_assert_str_eq(out, "6", "5 of pa and pur-b1");
    redis(out, sizeof(out), "ZRANGEBYSCORE %s -inf +inf", "purchases:u2", NULL);
    cr_assert(strstr(out, "{\"purchaseId\":\"pur-a1\",\"productId\":\"pa\",\"quantity\":1,"
                          "\"totalPrice\":1500,\"purchasedAt\":\"2026-03-01T10:00:00.000Z\"}"),
              "%s", out);

    sql(out, sizeof(out), "SELECT product_id, price, stock FROM products ORDER BY product_id");
    cr_assert_str_eq(out, "pa|1500|0\npb|700|7");
    sql(out, sizeof(out),
        "SELECT status, coalesce(reason, '-'), count(*), sum(quantity) FROM purchases "
        "GROUP BY 1, 2 ORDER BY 1, 2");
    cr_assert_str_eq(out, "accepted|-|11|12\nrejected|INSUFFICIENT_STOCK|2|2\n"
                          "rejected|INVALID_QUANTITY|1|0\nrejected|UNKNOWN_PRODUCT|1|1");
    sql(out, sizeof(out), "SELECT quantity, total_price FROM purchases WHERE purchase_id = 'pur-b1'");
    cr_assert_str_eq(out, "2|1400", "the first request decided pur-b1");

    json_t *results = read_events(RESULTS);
    cr_assert_geq(json_array_size(results), 16, "one result per request at least");
    cr_assert_eq(distinct_of_type(results, "PurchaseAccepted"), 11);
    cr_assert_eq(distinct_of_type(results, "PurchaseRejected"), 4);
    size_t i, again = 0;
    json_t *e;
    json_array_foreach(results, i, e) {
        cr_assert_str_eq(json_string_value(json_object_get(e, "key")), vstr(e, "user_id"),
                         "results are keyed by user_id");
        if (strcmp(vstr(e, "purchase_id"), "pur-b1") == 0) {
            cr_assert_str_eq(vstr(e, "event_id"), "pb1:accepted", "the first result, again");
            again++;
        }
    }
    cr_assert_geq(again, 2, "the repeat re-emits the first result");
    json_decref(results);

    json_t *alerts = read_events(ALERTS);
    cr_assert_eq(distinct_of_type(alerts, "StockLow"), 1, "pa once; pb never below 1");
    cr_assert_eq(distinct_of_type(alerts, "SoldOut"), 1);
    json_array_foreach(alerts, i, e) {
        cr_assert_str_eq(json_string_value(json_object_get(e, "key")), "pa");
        cr_assert_str_eq(vstr(e, "product_id"), "pa");
    }
    json_decref(alerts);

    size_t n = 0;
    rd_kafka_message_t **dlq = ts_testpipe_read_topic(&tp, TOPIC ".dlq", &n);
    cr_assert_eq(n, 3, "3 records in the DLQ, got %zu", n);
    int negative = 0, twice = 0;
    for (size_t k = 0; k < n; k++) {
        char *error = ts_testpipe_header(dlq[k], "error");
        char *src = ts_testpipe_header(dlq[k], "source.topic");
        cr_assert_not_null(error);
        cr_assert_str_eq(src, TOPIC);
        negative += strstr(error, "stock is never negative") != NULL;
        twice += strstr(error, "product pa already exists") != NULL;
        free(error);
        free(src);
    }
    cr_assert_eq(negative, 1);
    cr_assert_eq(twice, 1);
    ts_testpipe_records_free(dlq, n);

    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0, "graceful stop exits 0");
}

/* kill -9 while purchases stream in, restart: still exactly `stock` accepted,
 * the stock view, row and ranking agree, and every result kept its event_id. */
Test(pipeline_inventory, invariants_hold_across_kill_9) {
    product("k0", "pk", 100, 30);
    wait_all();
    for (int i = 0; i < 60; i++) {
        char eid[16], pid[16];
        snprintf(eid, sizeof(eid), "kr%d", i);
        snprintf(pid, sizeof(pid), "pur-k%d", i);
        purchase(eid, pid, "u1", "pk", 1);
        if (i == 30)
            cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGKILL), 128 + SIGKILL);
    }
    cr_assert_eq(ts_testpipe_runtime_start(&tp), 0);
    wait_all();

    char out[4096];
    redis(out, sizeof(out), "GET %s", "stock:pk", NULL);
    cr_assert_str_eq(out, "0");
    redis(out, sizeof(out), "ZSCORE %s %s", "ranking:products:sold", "pk");
    cr_assert_str_eq(out, "30");
    redis(out, sizeof(out), "ZCARD %s", "purchases:u1", NULL);
    cr_assert_str_eq(out, "30");
    sql(out, sizeof(out), "SELECT stock FROM products WHERE product_id = 'pk'");
    cr_assert_str_eq(out, "0");
    sql(out, sizeof(out), "SELECT status, count(*) FROM purchases GROUP BY 1 ORDER BY 1");
    cr_assert_str_eq(out, "accepted|30\nrejected|30");
    /* The first 30 requests are the accepted ones, whatever was replayed. */
    sql(out, sizeof(out),
        "SELECT count(*) FROM purchases WHERE status = 'accepted' AND "
        "substr(purchase_id, 6)::int < 30");
    cr_assert_str_eq(out, "30");

    json_t *results = read_events(RESULTS);
    cr_assert_eq(distinct_of_type(results, "PurchaseAccepted"), 30);
    cr_assert_eq(distinct_of_type(results, "PurchaseRejected"), 30);
    json_decref(results);
    json_t *alerts = read_events(ALERTS);
    cr_assert_eq(distinct_of_type(alerts, "StockLow"), 1);
    cr_assert_eq(distinct_of_type(alerts, "SoldOut"), 1);
    json_decref(alerts);
}
