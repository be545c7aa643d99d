/* test_bad_input.c - bad input never crashes or stalls the runtime (issue 4).
 *
 * Every kind of bad record is produced with ts_testpipe_produce_raw between
 * good events of the same partition key: undecodable bytes, an unknown schema
 * id, truncated Avro, a record of another topic's schema (wrong types), a
 * message over the decoder's size limit, and well-formed events with absurd
 * values that the processor rejects. Each must reach the DLQ unchanged with a
 * reason in its `error` header, in input order, and the good events after it
 * must be applied (views and rows), with the runtime still running. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ts_avro.h"
#include "ts_testpipe.h"

static ts_testpipe tp;
static ts_schemas *schemas;

static void setup(void) {
    cr_assert_eq(ts_testpipe_start(&tp), 0, "pipeline did not start");
    char err[512];
    cr_assert_eq(ts_schemas_load(tp.topo->schemas_dir, &schemas, err, sizeof(err)), TS_OK, "%s",
                 err);
}

static void teardown(void) {
    ts_schemas_destroy(schemas);
    schemas = NULL;
    ts_testpipe_stop(&tp);
}

TestSuite(bad_input, .init = setup, .fini = teardown, .timeout = 240);

#define TOPIC "storybook.events"
#define KEY "u1"

/* Encodes a JSON event with the latest schema of `subject`; caller frees. */
static char *encode(const char *subject, const char *json, size_t *len) {
    char err[512] = "";
    ts_encoder *enc = ts_encoder_create(schemas, subject);
    cr_assert_not_null(enc, "no encoder for %s", subject);
    json_t *ev = json_loads(json, 0, NULL);
    cr_assert_not_null(ev, "bad test JSON %s", json);
    char *bytes = NULL;
    cr_assert_eq(ts_encoder_from_json(enc, ev, &bytes, len, err, sizeof(err)), TS_OK, "%s", err);
    json_decref(ev);
    ts_encoder_destroy(enc);
    return bytes;
}

static void raw(const void *bytes, size_t len) {
    cr_assert_eq(ts_testpipe_produce_raw(&tp, TOPIC, KEY, bytes, len), 0, "produce %zu bytes",
                 len);
}

/* Produces a JSON event encoded as is; @returns its length in bytes. */
static size_t produce(const char *json) {
    size_t len = 0;
    char *bytes = encode(TOPIC, json, &len);
    raw(bytes, len);
    free(bytes);
    return len;
}

static int runtime_alive(void) {
    int status;
    return tp.pid > 0 && waitpid(tp.pid, &status, WNOHANG) == 0;
}

typedef struct bad_rec {
    const char *what, *reason;
    size_t len;
} bad_rec;

Test(bad_input, every_kind_goes_to_the_dlq_and_later_events_are_applied) {
    /* What goes to the DLQ, in order, and a piece of each reason. */
    bad_rec bad[16];
    size_t n_bad = 0;

    produce("{\"BookCreated\": {\"event_id\": \"g1\", \"book_id\": \"b1\", \"user_id\": \"u1\", "
         "\"title\": \"Fox\", \"created_at\": \"2026-01-10T09:00:00.000Z\"}}");

    /* 1. Undecodable bytes (no Confluent frame). */
    raw("{\"not\": \"avro\"}", 15);
    bad[n_bad++] = (bad_rec){"undecodable bytes", "bad magic byte", 15};
    /* 2. An unknown schema id (9999) with a plausible body. */
    static const unsigned char unknown[] = {0, 0, 0, 0x27, 0x0f, 2, 4, 'x', 'y'};
    raw(unknown, sizeof(unknown));
    bad[n_bad++] = (bad_rec){"unknown schema id", "unknown schema id 9999", sizeof(unknown)};
    /* 3. Truncated Avro: a good event cut short. */
    size_t len = 0;
    char *bytes = encode(TOPIC, "{\"PageUpserted\": {\"event_id\": \"t1\", \"book_id\": \"b1\", "
                                "\"user_id\": \"u1\", \"page_no\": 1, \"text\": \"a page of "
                                "text\", \"updated_at\": \"2026-01-10T09:01:00.000Z\"}}",
                         &len);
    raw(bytes, len - 6);
    bad[n_bad++] = (bad_rec){"truncated Avro", "truncated or invalid Avro", len - 6};
    /* An empty value. */
    raw("", 0);
    bad[n_bad++] = (bad_rec){"empty message", "empty message", 0};
    free(bytes);
    /* 4. Wrong types: a record of another topic's schema (user.events). */
    bytes = encode("user.events",
                   "{\"UserRegistered\": {\"event_id\": \"w1\", \"user_id\": \"u1\", \"email\": "
                   "\"a@b.c\", \"registered_at\": \"2026-01-10T09:00:00.000Z\"}}",
                   &len);
    raw(bytes, len);
    bad[n_bad++] = (bad_rec){"wrong types", "schema id 20", len};
    free(bytes);
    /* 5. Oversized: a well-formed event of 600 KiB, over TS_AVRO_MAX_MESSAGE. */
    size_t big = 600 * 1024;
    char *title = malloc(big + 1);
    memset(title, 'T', big);
    title[big] = '\0';
    char *json = malloc(big + 512);
    snprintf(json, big + 512,
             "{\"BookCreated\": {\"event_id\": \"o1\", \"book_id\": \"b9\", \"user_id\": \"u1\", "
             "\"title\": \"%s\", \"created_at\": \"2026-01-10T09:02:00.000Z\"}}",
             title);
    bytes = encode(TOPIC, json, &len);
    cr_assert_gt(len, (size_t)TS_AVRO_MAX_MESSAGE);
    raw(bytes, len);
    bad[n_bad++] = (bad_rec){"oversized", "message too large", len};
    free(bytes);
    free(json);
    free(title);
    /* 6. Absurd values, well-formed: the processor rejects them. */
    len = produce("{\"PageUpserted\": {\"event_id\": \"a1\", \"book_id\": \"b1\", \"user_id\": "
                  "\"u1\", \"page_no\": -7, \"text\": \"minus seven\", "
                  "\"updated_at\": \"2026-01-10T09:03:00.000Z\"}}");
    bad[n_bad++] = (bad_rec){"absurd page_no", "below 1", len};
    len = produce("{\"BookCreated\": {\"event_id\": \"a2\", \"book_id\": \"\", \"user_id\": "
                  "\"u1\", \"title\": \"nameless\", "
                  "\"created_at\": \"2026-01-10T09:04:00.000Z\"}}");
    bad[n_bad++] = (bad_rec){"empty book_id", "must be non-empty", len};

    /* 7. Identifiers too long to be keys: a book_id of 4000 bytes (text no
     * index compresses well: PostgreSQL refuses a btree entry over ~2.7 KB,
     * and the row would be retried for good) and an event_id as long (the
     * dedup key). */
    char long_id[4001];
    unsigned seed = 7;
    for (size_t i = 0; i < sizeof(long_id) - 1; i++) {
        seed = seed * 1103515245u + 12345u;
        long_id[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[(seed >> 16) % 36];
    }
    long_id[sizeof(long_id) - 1] = '\0';
    json = malloc(sizeof(long_id) + 512);
    snprintf(json, sizeof(long_id) + 512,
             "{\"BookCreated\": {\"event_id\": \"l1\", \"book_id\": \"%s\", \"user_id\": "
             "\"u1\", \"title\": \"Long\", \"created_at\": \"2026-01-10T09:04:30.000Z\"}}",
             long_id);
    bad[n_bad++] = (bad_rec){"long book_id", "at most 256 bytes", produce(json)};
    snprintf(json, sizeof(long_id) + 512,
             "{\"BookCreated\": {\"event_id\": \"%s\", \"book_id\": \"b8\", \"user_id\": "
             "\"u1\", \"title\": \"Long\", \"created_at\": \"2026-01-10T09:04:40.000Z\"}}",
             long_id);
    bad[n_bad++] = (bad_rec){"long event_id", "event_id of 4000 bytes", produce(json)};
    free(json);

    /* 8. Text that is not UTF-8 (Avro strings are; PostgreSQL refuses
     * anything else, on every retry). */
    bytes = encode(TOPIC, "{\"BookCreated\": {\"event_id\": \"u8\", \"book_id\": \"b7\", "
                          "\"user_id\": \"u1\", \"title\": \"F~x\", "
                          "\"created_at\": \"2026-01-10T09:04:50.000Z\"}}",
                   &len);
    char *tilde = memchr(bytes, '~', len);
    cr_assert_not_null(tilde);
    *tilde = (char)0xff;
    raw(bytes, len);
    bad[n_bad++] = (bad_rec){"title not UTF-8", "a string is not UTF-8", len};
    free(bytes);

    /* 9. A NUL byte inside a string: valid UTF-8, but the title would be cut
     * short where the processor reads it, and PostgreSQL's text refuses it. */
    bytes = encode(TOPIC, "{\"BookCreated\": {\"event_id\": \"n0\", \"book_id\": \"b5\", "
                          "\"user_id\": \"u1\", \"title\": \"F~x\", "
                          "\"created_at\": \"2026-01-10T09:04:55.000Z\"}}",
                   &len);
    tilde = memchr(bytes, '~', len);
    cr_assert_not_null(tilde);
    *tilde = '\0';
    raw(bytes, len);
    bad[n_bad++] = (bad_rec){"title with a NUL", "a string holds a NUL byte", len};
    free(bytes);

    /* 10. A time no PostgreSQL timestamp holds (year ~285 million): the row
     * would be refused on every retry. */
    len = produce("{\"BookCreated\": {\"event_id\": \"t9\", \"book_id\": \"b6\", \"user_id\": "
                  "\"u1\", \"title\": \"Far\", \"created_at\": 9000000000000000000}}");
    bad[n_bad++] = (bad_rec){"time out of range", "outside the years 1 to 9999", len};

    /* Good events after all of it, on the same partition. */
    produce("{\"PageUpserted\": {\"event_id\": \"g2\", \"book_id\": \"b1\", \"user_id\": \"u1\", "
         "\"page_no\": 1, \"text\": \"one\", \"updated_at\": \"2026-01-10T09:05:00.000Z\"}}");
    produce("{\"BookCreated\": {\"event_id\": \"g3\", \"book_id\": \"b2\", \"user_id\": \"u1\", "
         "\"title\": \"Moon\", \"created_at\": \"2026-01-10T09:06:00.000Z\"}}");

    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0,
                 "the runtime stalled on bad input; see %s", tp.log);
    cr_assert(runtime_alive(), "the runtime died; see %s", tp.log);

    char out[8192];
    cr_assert_eq(ts_testenv_redis_cmd(tp.redis.url, out, sizeof(out), "GET %s",
                                      "storybook:book:b1"),
                 0);
    json_t *book = json_loads(out, 0, NULL);
    cr_assert_not_null(book, "book view: %s", out);
    cr_assert_str_eq(json_string_value(json_object_get(book, "title")), "Fox", "%s", out);
    json_t *pages = json_object_get(book, "pages");
    cr_assert_eq(json_array_size(pages), 1, "only the good page: %s", out);
    cr_assert_str_eq(
        json_string_value(json_object_get(json_array_get(pages, 0), "text")), "one", "%s", out);
    json_decref(book);
    cr_assert_eq(ts_testenv_redis_cmd(tp.redis.url, out, sizeof(out), "EXISTS %s",
                                      "storybook:book:b2"),
                 0);
    cr_assert_str_eq(out, "1", "the event after the bad ones was applied");
    cr_assert_eq(ts_testenv_redis_cmd(tp.redis.url, out, sizeof(out), "EXISTS %s",
                                      "storybook:book:b9"),
                 0);
    cr_assert_str_eq(out, "0", "the oversized event changed nothing");
    cr_assert_eq(ts_testenv_pg_query(tp.pg, out, sizeof(out),
                                     "SELECT book_id, title FROM books ORDER BY book_id"),
                 0, "%s", out);
    cr_assert_str_eq(out, "b1|Fox\nb2|Moon");

    size_t n = 0;
    rd_kafka_message_t **dlq = ts_testpipe_read_topic(&tp, TOPIC ".dlq", &n);
    cr_assert_eq(n, n_bad, "dlq holds %zu records, expected %zu", n, n_bad);
    for (size_t i = 0; i < n; i++) {
        char *reason = ts_testpipe_header(dlq[i], "error");
        char *src = ts_testpipe_header(dlq[i], "source.topic");
        fprintf(stderr, "bad input: %-18s -> dlq (%zu bytes): %s\n", bad[i].what, dlq[i]->len,
                reason ? reason : "(no reason)");
        cr_assert_not_null(reason, "%s: no error header", bad[i].what);
        cr_assert(strstr(reason, bad[i].reason) != NULL, "%s: reason \"%s\" lacks \"%s\"",
                  bad[i].what, reason, bad[i].reason);
        cr_assert_str_eq(src, TOPIC);
        cr_assert_eq(dlq[i]->len, bad[i].len, "%s: the DLQ copy is not unchanged", bad[i].what);
        free(reason);
        free(src);
    }
    ts_testpipe_records_free(dlq, n);
}
