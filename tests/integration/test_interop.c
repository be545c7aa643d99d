/* test_interop.c - an event produced by another Avro implementation (Node's
 * avsc, from the .avsc file alone) and another Kafka client (kcat) is
 * processed like any other. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "ts_testpipe.h"

static ts_testpipe tp;

static void setup(void) { cr_assert_eq(ts_testpipe_start(&tp), 0, "pipeline did not start"); }
static void teardown(void) { ts_testpipe_stop(&tp); }

TestSuite(interop, .init = setup, .fini = teardown, .timeout = 120);

/* Encodes `json` with avsc under schema `id` of `avsc` and produces it with kcat. */
static void produce_elsewhere(const char *avsc, int id, const char *key, const char *json) {
    char bin[256], cmd[4096];
    snprintf(bin, sizeof(bin), "%s/event-%d.bin", tp.dir, id);
    snprintf(cmd, sizeof(cmd),
             "node %s/tests/interop/encode.js %s/schemas/avro/%s %d '%s' %s && "
             "kcat -b %s -t storybook.events -k %s -P %s",
             TS_SOURCE_DIR, TS_SOURCE_DIR, avsc, id, json, bin, ts_cluster_bootstraps(tp.cluster),
             key, bin);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}

Test(interop, avsc_and_kcat_event_is_processed) {
    /* Written with the record's own schema (id 2) and with the topic's union (id 1). */
    produce_elsewhere("storybook/BookCreated.avsc", 2, "u7",
                      "{\"event_id\":\"js-1\",\"book_id\":\"js-book\",\"user_id\":\"u7\","
                      "\"title\":\"From JavaScript\",\"created_at\":1767225600000}");
    produce_elsewhere("storybook/events.avsc", 1, "u7",
                      "{\"PageUpserted\":{\"event_id\":\"js-2\",\"book_id\":\"js-book\",\"user_id\":\"u7\","
                      "\"page_no\":1,\"text\":\"hello\",\"updated_at\":1767225660000}}");
    cr_assert_eq(ts_testpipe_wait_committed(&tp, "storybook.events", 30), 0,
                 "not committed; see %s", tp.log);
    char out[4096];
    cr_assert_eq(ts_testenv_redis_cmd(tp.redis.url, out, sizeof(out), "GET %s",
                                      "storybook:book:js-book"), 0, "%s", out);
    json_t *book = json_loads(out, 0, NULL);
    cr_assert_not_null(book, "view: %s", out);
    cr_assert_str_eq(json_string_value(json_object_get(book, "title")), "From JavaScript");
    cr_assert_str_eq(json_string_value(json_object_get(book, "createdAt")),
                     "2026-01-01T00:00:00.000Z");
    cr_assert_eq(json_array_size(json_object_get(book, "pages")), 1, "%s", out);
    json_decref(book);
    size_t n = 0;
    rd_kafka_message_t **dlq = ts_testpipe_read_topic(&tp, "storybook.events.dlq", &n);
    cr_assert_eq(n, 0, "nothing rejected");
    ts_testpipe_records_free(dlq, n);
}
