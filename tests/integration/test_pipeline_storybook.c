/* test_pipeline_storybook.c - storybook events through the whole pipeline:
 * Kafka (mock cluster) -> tastesync run -> Redis views, PostgreSQL rows, DLQ. */
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

TestSuite(pipeline_storybook, .init = setup, .fini = teardown, .timeout = 180);

#define TOPIC "storybook.events"

static void produce(const char *json) {
    cr_assert_eq(ts_testpipe_produce_json(&tp, TOPIC, json), 0, "produce %s", json);
}

static void redis(char *out, size_t cap, const char *fmt, const char *arg) {
    cr_assert_eq(ts_testenv_redis_cmd(tp.redis.url, out, cap, fmt, arg), 0, "redis: %s", out);
}

static void sql(char *out, size_t cap, const char *query) {
    cr_assert_eq(ts_testenv_pg_query(tp.pg, out, cap, query), 0, "sql: %s", out);
}

static void wait_all(void) {
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 30), 0,
                 "runtime did not commit everything; see %s", tp.log);
}

Test(pipeline_storybook, views_rows_and_dlq) {
    produce("{\"BookCreated\": {\"event_id\": \"e1\", \"book_id\": \"b1\", \"user_id\": \"u1\", "
            "\"title\": \"Fox\", \"created_at\": \"2026-01-10T09:00:00.000Z\"}}");
    produce("{\"PageUpserted\": {\"event_id\": \"e2\", \"book_id\": \"b1\", \"user_id\": \"u1\", "
            "\"page_no\": 2, \"text\": \"two\", \"updated_at\": \"2026-01-10T09:02:00.000Z\"}}");
    produce("{\"PageUpserted\": {\"event_id\": \"e3\", \"book_id\": \"b1\", \"user_id\": \"u1\", "
            "\"page_no\": 1, \"text\": \"one\", \"updated_at\": \"2026-01-10T09:03:00.000Z\"}}");
    /* Three bad inputs, each followed by good ones that must still be applied. */
    produce("{\"BookUpdated\": {\"event_id\": \"e4\", \"book_id\": \"nope\", \"user_id\": \"u1\", "
            "\"title\": \"X\", \"updated_at\": \"2026-01-10T09:04:00.000Z\"}}");
    produce("{\"PageUpserted\": {\"event_id\": \"e5\", \"book_id\": \"b1\", \"user_id\": \"u2\", "
            "\"page_no\": 3, \"text\": \"intruder\", \"updated_at\": \"2026-01-10T09:05:00.000Z\"}}");
    cr_assert_eq(ts_testpipe_produce_raw(&tp, TOPIC, "u1", "garbage!", 8), 0);
    produce("{\"BookCreated\": {\"event_id\": \"e6\", \"book_id\": \"b2\", \"user_id\": \"u1\", "
            "\"title\": \"Moon\", \"created_at\": \"2026-01-11T09:00:00.000Z\"}}");
    /* A redelivery of e3 with different content changes nothing. */
    produce("{\"PageUpserted\": {\"event_id\": \"e3\", \"book_id\": \"b1\", \"user_id\": \"u1\", "
            "\"page_no\": 1, \"text\": \"REPLAYED\", \"updated_at\": \"2026-01-10T09:09:00.000Z\"}}");
    wait_all();

    char out[8192];
    redis(out, sizeof(out), "GET %s", "storybook:book:b1");
    json_t *book = json_loads(out, 0, NULL);
    cr_assert_not_null(book, "book view: %s", out);
    cr_assert_str_eq(json_string_value(json_object_get(book, "userId")), "u1");
    json_t *pages = json_object_get(book, "pages");
    cr_assert_eq(json_array_size(pages), 2, "pages: %s", out);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(pages, 0), "pageNo")), 1);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(pages, 0), "text")), "one");
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(pages, 1), "pageNo")), 2);
    /* version: the input offset of the last event applied to this view (e3). */
    cr_assert(json_integer_value(json_object_get(book, "version")) >= 2, "version: %s", out);
    json_decref(book);

    redis(out, sizeof(out), "GET %s", "storybook:books:u1");
    json_t *list = json_loads(out, 0, NULL);
    cr_assert_eq(json_array_size(list), 2, "list: %s", out);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 0), "id")), "b2",
                     "newest first: %s", out);
    json_decref(list);

    sql(out, sizeof(out), "SELECT book_id, user_id, title FROM books ORDER BY book_id");
    cr_assert_str_eq(out, "b1|u1|Fox\nb2|u1|Moon");
    sql(out, sizeof(out), "SELECT book_id, page_no, text FROM book_pages ORDER BY page_no");
    cr_assert_str_eq(out, "b1|1|one\nb1|2|two");

    size_t n = 0;
    rd_kafka_message_t **dlq = ts_testpipe_read_topic(&tp, TOPIC ".dlq", &n);
    cr_assert_eq(n, 3, "3 records in the DLQ, got %zu", n);
    int garbage = 0;
    for (size_t i = 0; i < n; i++) {
        char *error = ts_testpipe_header(dlq[i], "error");
        char *src = ts_testpipe_header(dlq[i], "source.topic");
        char *off = ts_testpipe_header(dlq[i], "source.offset");
        cr_assert_not_null(error);
        cr_assert_str_eq(src, TOPIC);
        cr_assert_not_null(off);
        if (dlq[i]->len == 8 && memcmp(dlq[i]->payload, "garbage!", 8) == 0)
            garbage = 1;
        free(error);
        free(src);
        free(off);
    }
    cr_assert(garbage, "undecodable bytes reach the DLQ unchanged");
    ts_testpipe_records_free(dlq, n);

    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0, "graceful stop exits 0");
}

Test(pipeline_storybook, restart_resumes_without_reapplying) {
    produce("{\"BookCreated\": {\"event_id\": \"r1\", \"book_id\": \"b9\", \"user_id\": \"u9\", "
            "\"title\": \"Before\", \"created_at\": \"2026-02-01T00:00:00.000Z\"}}");
    wait_all();
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0);

    /* While it is down, more input arrives; after the restart it is applied
     * once, from the stored position. */
    produce("{\"BookUpdated\": {\"event_id\": \"r2\", \"book_id\": \"b9\", \"user_id\": \"u9\", "
            "\"title\": \"After\", \"updated_at\": \"2026-02-02T00:00:00.000Z\"}}");
    cr_assert_eq(ts_testpipe_runtime_start(&tp), 0);
    wait_all();
    char out[4096];
    redis(out, sizeof(out), "GET %s", "storybook:book:b9");
    json_t *book = json_loads(out, 0, NULL);
    cr_assert_str_eq(json_string_value(json_object_get(book, "title")), "After", "%s", out);
    json_decref(book);
    size_t n = 0;
    rd_kafka_message_t **dlq = ts_testpipe_read_topic(&tp, TOPIC ".dlq", &n);
    cr_assert_eq(n, 0, "a restart must not reject already-applied events (got %zu)", n);
    ts_testpipe_records_free(dlq, n);
}

/* Produces a PageUpserted of `text` for page `page` of book `book` of user u7
 * (event id "<book>-<page>"). */
static void produce_page(const char *book, int page, const char *text) {
    size_t cap = strlen(text) + 512;
    char *json = malloc(cap);
    cr_assert(json);
    snprintf(json, cap,
             "{\"PageUpserted\": {\"event_id\": \"%s-%d\", \"book_id\": \"%s\", "
             "\"user_id\": \"u7\", \"page_no\": %d, \"text\": \"%s\", "
             "\"updated_at\": \"2026-03-02T00:01:00.000Z\"}}",
             book, page, book, page, text);
    produce(json);
    free(json);
}

/* Produces a BookCreated of book `book` titled `title` for user u7 (event id
 * "c-<book>"). */
static void produce_titled_book(const char *book, const char *title) {
    size_t cap = strlen(title) + 512;
    char *json = malloc(cap);
    cr_assert(json);
    snprintf(json, cap,
             "{\"BookCreated\": {\"event_id\": \"c-%s\", \"book_id\": \"%s\", "
             "\"user_id\": \"u7\", \"title\": \"%s\", "
             "\"created_at\": \"2026-03-02T00:00:00.000Z\"}}",
             book, book, title);
    produce(json);
    free(json);
}

static void produce_book(const char *book) { produce_titled_book(book, "Big"); }

static char *text_of(size_t len) {
    char *text = malloc(len + 1);
    cr_assert(text);
    memset(text, 'p', len);
    text[len] = '\0';
    return text;
}

/* A batch's changelog marker carries its rows. Input that waited (one user:
 * one partition, one batch by batch.max_events) holds ~1.8 MB of rows in 60
 * pages of 30 KB: the batch closes near 768 KiB of marker, more batches
 * follow. Then two pages of 510 KB: the second crosses the bound, and their
 * batch's marker (~1.02 MB) is over Kafka's default limit of 1,000,000 bytes,
 * which the runtime's producer raises: a marker that size must not stop the
 * partition. */
Test(pipeline_storybook, batches_of_large_rows_are_written_and_acknowledged) {
    produce_book("warm");
    wait_all();
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0);

    char book[32];
    char *text = text_of(30000);
    for (int b = 0; b < 6; b++) {
        snprintf(book, sizeof(book), "big-%d", b);
        produce_book(book);
        for (int p = 1; p <= 10; p++)
            produce_page(book, p, text);
    }
    free(text);
    text = text_of(510000);
    produce_book("huge-0");
    produce_book("huge-1");
    produce_page("huge-0", 1, text);
    produce_page("huge-1", 1, text);
    free(text);

    cr_assert_eq(ts_testpipe_runtime_start(&tp), 0);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0,
                 "the large batches were not written and acknowledged; see %s", tp.log);
    char out[256];
    sql(out, sizeof(out),
        "SELECT count(*), sum(length(text)) FROM book_pages WHERE book_id LIKE 'big-%'");
    cr_expect_str_eq(out, "60|1800000");
    sql(out, sizeof(out),
        "SELECT count(*), sum(length(text)) FROM book_pages WHERE book_id LIKE 'huge-%'");
    cr_expect_str_eq(out, "2|1020000");
    size_t n = 0;
    rd_kafka_message_t **dlq = ts_testpipe_read_topic(&tp, TOPIC ".dlq", &n);
    cr_expect_eq(n, 0, "nothing rejected (got %zu)", n);
    ts_testpipe_records_free(dlq, n);
}

/* A user's book list is one state value (and view). Books with titles of
 * 500 KB (input records are at most 512 KiB) make it pass, at the 34th
 * book, the largest message the runtime's producer sends (16 MiB), which
 * would stop the partition for good: no changelog record that size is ever
 * written. That book goes to the DLQ with the reason; the books before and
 * after it are applied. */
Test(pipeline_storybook, an_event_that_would_make_a_state_value_too_large_goes_to_the_dlq) {
    char *title = text_of(500000), book[32];
    for (int b = 0; b < 35; b++) {
        snprintf(book, sizeof(book), b < 34 ? "long-%02d" : "after", b);
        produce_titled_book(book, b < 34 ? title : "Short");
        /* The mock cluster keeps ~5 MiB per partition: a few books at a time. */
        if (b % 4 == 3 || b == 34)
            cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0,
                         "the partition did not get past book %d; see %s", b, tp.log);
    }
    free(title);

    char out[256];
    sql(out, sizeof(out), "SELECT count(*), min(book_id), max(book_id) FROM books "
                          "WHERE user_id = 'u7'");
    cr_expect_str_eq(out, "34|after|long-32");
    redis(out, sizeof(out), "EXISTS storybook:book:%s", "long-33");
    cr_expect_str_eq(out, "0");
    redis(out, sizeof(out), "EXISTS storybook:book:%s", "after");
    cr_expect_str_eq(out, "1");
    redis(out, sizeof(out), "STRLEN storybook:books:%s", "u7");
    long len = strtol(out, NULL, 10);
    cr_expect(len > 33 * 500000 && len < 16777216,
              "the list view holds 33 long books and the short one: %ld bytes", len);

    size_t n = 0;
    rd_kafka_message_t **dlq = ts_testpipe_read_topic(&tp, TOPIC ".dlq", &n);
    cr_assert_eq(n, 1, "one book rejected (got %zu)", n);
    char *reason = ts_testpipe_header(dlq[0], "error");
    char *offset = ts_testpipe_header(dlq[0], "source.offset");
    cr_assert_not_null(reason);
    cr_expect(strstr(reason, "message.max.bytes"), "reason: %s", reason);
    cr_expect_str_eq(offset ? offset : "", "33", "the 34th book's record");
    free(reason);
    free(offset);
    ts_testpipe_records_free(dlq, n);
}
