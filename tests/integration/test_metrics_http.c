/* test_metrics_http.c - /metrics, /healthz and /readyz of `tastesync run`: the
 * named series change as events flow, and /readyz follows the sinks.
 *
 * The runtime child inherits TASTESYNC_HTTP_PORT, set to a loopback port the
 * system just handed out (ts_httpget_free_port). */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_httpget.h"
#include "ts_testpipe.h"

static ts_testpipe tp;
static int port;

static void start(int private_pg) {
    port = ts_httpget_free_port();
    cr_assert_gt(port, 0);
    char text[16];
    snprintf(text, sizeof(text), "%d", port);
    setenv("TASTESYNC_HTTP_PORT", text, 1);
    ts_testpipe_opts opts = {.private_pg = private_pg};
    cr_assert_eq(ts_testpipe_start_opts(&tp, &opts), 0, "pipeline did not start");
}

static void teardown(void) {
    if (tp.pid > 0)
        ts_testpipe_runtime_stop(&tp, SIGKILL);
    ts_testpipe_stop(&tp);
    unsetenv("TASTESYNC_HTTP_PORT");
    unsetenv("TASTESYNC_BATCH_MAX_MS");
    unsetenv("TASTESYNC_BATCH_MAX_BUFFERED_BYTES");
}

TestSuite(metrics_http, .fini = teardown, .timeout = 240);

#define TOPIC "storybook.events"
#define DEDUP_BYTES "tastesync_dedup_filter_bytes{processor=\"storybook\"}"
#define KEY_FILTER_BYTES "tastesync_key_filter_bytes{processor=\"storybook\"}"

static char *scrape(void) {
    int status = 0;
    char *body = NULL;
    cr_assert_eq(ts_httpget(port, "/metrics", 5, &status, &body), 0, "no answer; see %s", tp.log);
    cr_assert_eq(status, 200, "/metrics: %d %s", status, body);
    return body;
}

static void produce_books(int first, int n) {
    for (int i = first; i < first + n; i++) {
        char json[512];
        snprintf(json, sizeof(json),
                 "{\"BookCreated\": {\"event_id\": \"m%d\", \"book_id\": \"b%d\", \"user_id\": "
                 "\"u%d\", \"title\": \"T%d\", \"created_at\": \"2026-01-10T09:00:00.000Z\"}}",
                 i, i, i, i);
        cr_assert_eq(ts_testpipe_produce_json(&tp, TOPIC, json), 0, "produce %s", json);
    }
}

/* Polls /metrics until `done(text)` holds; returns the last text. */
static char *scrape_until(int (*done)(const char *text), double seconds) {
    for (int i = 0; i < (int)(ts_testenv_timeout(seconds) * 10); i++) {
        char *text = scrape();
        if (done(text))
            return text;
        free(text);
        usleep(100 * 1000);
    }
    return scrape();
}

/* Waits until /readyz answers 200. */
static void wait_ready(void) {
    char *body = NULL;
    cr_assert_eq(ts_httpget_wait(port, "/readyz", 200, 60, &body), 0, "/readyz: %s; see %s",
                 body ? body : "no answer", tp.log);
    free(body);
}

#define PROCESSED "tastesync_events_processed_total{processor=\"storybook\"}"
#define REJECTED "tastesync_events_rejected_total{processor=\"storybook\"}"

static int all_processed(const char *text) {
    int n = 0;
    double lag = ts_httpget_sum(text, "tastesync_consumer_lag{topic=\"" TOPIC "\",", &n);
    return ts_httpget_sample(text, PROCESSED, 0) >= 21 && n > 0 && lag == 0;
}

Test(metrics_http, series_change_as_events_flow) {
    start(0);
    char *body = NULL;
    cr_assert_eq(ts_httpget_wait(port, "/healthz", 200, 60, &body), 0, "/healthz: %s; see %s",
                 body ? body : "no answer", tp.log);
    free(body);
    cr_assert_eq(ts_httpget_wait(port, "/readyz", 200, 60, &body), 0, "/readyz: %s; see %s",
                 body ? body : "no answer", tp.log);
    cr_assert_str_eq(body, "ready\n");
    free(body);

    char *text = scrape();
    cr_assert(strstr(text, "# TYPE tastesync_events_processed_total counter\n"), "%s", text);
    cr_assert(strstr(text, "# TYPE tastesync_batch_duration_seconds histogram\n"), "%s", text);
    cr_assert_eq(ts_httpget_sample(text, PROCESSED, -1), 0, "%s", text);
    cr_assert_eq(ts_httpget_sample(text, REJECTED, -1), 0, "%s", text);
    cr_assert_eq(ts_httpget_sample(text, "tastesync_ready", -1), 1, "%s", text);
    cr_assert_eq(ts_httpget_sample(text, "tastesync_partitions{state=\"running\"}", -1),
                 8 * (double)tp.topo->n_processors, "every input partition: %s", text);
    cr_assert_eq(ts_httpget_sample(text, "tastesync_sink_up{sink=\"postgres\"}", -1), 1, "%s",
                 text);
    cr_assert_eq(ts_httpget_sample(text, DEDUP_BYTES, -1), 0, "no batch yet: %s", text);
    cr_assert_eq(ts_httpget_sample(text, KEY_FILTER_BYTES, -1), 0, "no batch yet: %s", text);
    free(text);

    produce_books(0, 20);
    cr_assert_eq(ts_testpipe_produce_raw(&tp, TOPIC, "u1", "garbage!", 8), 0);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "not committed; see %s", tp.log);

    text = scrape_until(all_processed, 30);
    cr_assert(all_processed(text), "processed and lag: %s", text);
    cr_assert_eq(ts_httpget_sample(text, PROCESSED, -1), 21, "%s", text);
    cr_assert_eq(ts_httpget_sample(text, REJECTED, -1), 1, "the garbage record: %s", text);
    int n = 0;
    double committed =
        ts_httpget_sum(text, "tastesync_committed_offset{topic=\"" TOPIC "\",", &n);
    cr_assert_eq(committed, 21, "committed offsets add up to the records: %s", text);
    double fresh = ts_httpget_sum(
        text, "tastesync_view_newest_event_timestamp_seconds{processor=\"storybook\",", &n);
    cr_assert(n > 0 && fresh > 1.7e9, "event-time freshness: %s", text);
    double applied = ts_httpget_sum(
        text, "tastesync_view_newest_applied_timestamp_seconds{processor=\"storybook\",", &n);
    cr_assert(n > 0 && applied > 1.7e9, "wall-time freshness: %s", text);
    cr_assert_geq(ts_httpget_sample(text, "tastesync_batch_size_count{processor=\"storybook\"}", 0),
                  1, "%s", text);
    cr_assert_eq(ts_httpget_sample(text,
                                   "tastesync_batch_size_bucket{processor=\"storybook\",le=\"+Inf\"}",
                                   -1),
                 ts_httpget_sample(text, "tastesync_batch_size_count{processor=\"storybook\"}", -2),
                 "%s", text);
    cr_assert_eq(ts_httpget_sample(text, "tastesync_batch_size_sum{processor=\"storybook\"}", -1),
                 21, "%s", text);
    cr_assert_geq(ts_httpget_sample(
                      text, "tastesync_batch_duration_seconds_count{processor=\"storybook\"}", 0),
                  1, "%s", text);
    /* Every batch's first record had a producer timestamp: each batch is
     * counted, with a wait from that timestamp of seconds at most (not the
     * milliseconds since 1970 a unit slip would give). */
    double waits = ts_httpget_sample(
        text, "tastesync_input_wait_seconds_count{processor=\"storybook\"}", 0);
    cr_assert_eq(waits,
                 ts_httpget_sample(
                     text, "tastesync_batch_duration_seconds_count{processor=\"storybook\"}", -1),
                 "%s", text);
    double waited =
        ts_httpget_sample(text, "tastesync_input_wait_seconds_sum{processor=\"storybook\"}", -1);
    cr_assert(waited >= 0 && waited < 60 * waits, "input wait %g s over %g batches: %s", waited,
              waits, text);
    /* The tasks that decided a batch hold a filter of their event ids (at
     * least 1024 ids' room, 2 bytes each). */
    cr_assert_geq(ts_httpget_sample(text, DEDUP_BYTES, -1), 2048, "%s", text);
    cr_assert_geq(ts_httpget_sample(text, KEY_FILTER_BYTES, -1), 2048, "and of its keys: %s", text);
    const char *sinks[] = {"redis", "postgres", "kafka"};
    for (size_t i = 0; i < 3; i++) {
        char series[128];
        snprintf(series, sizeof(series),
                 "tastesync_sink_write_duration_seconds_count{sink=\"%s\"}", sinks[i]);
        cr_assert_geq(ts_httpget_sample(text, series, 0), 1, "%s: %s", series, text);
        snprintf(series, sizeof(series), "tastesync_sink_errors_total{sink=\"%s\"}", sinks[i]);
        cr_assert_eq(ts_httpget_sample(text, series, -1), 0, "%s: %s", series, text);
    }
    free(text);

    /* More events move the counters again. */
    produce_books(100, 5);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "not committed; see %s", tp.log);
    double processed = 0;
    for (int i = 0; i < (int)(ts_testenv_timeout(10) * 10) && processed < 26; i++) {
        text = scrape();
        processed = ts_httpget_sample(text, PROCESSED, 0);
        free(text);
        usleep(100 * 1000);
    }
    cr_assert_eq(processed, 26);

    int status = 0;
    cr_assert_eq(ts_httpget(port, "/nope", 5, &status, NULL), 0);
    cr_assert_eq(status, 404);

    /* A graceful stop closes the endpoint (and, under the sanitizers, finds
     * no leak: the exit status would say so). */
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0, "clean exit; see %s", tp.log);
    cr_assert_neq(ts_httpget(port, "/healthz", 2, &status, NULL), 0, "still serving");
}

Test(metrics_http, readyz_follows_the_row_sink) {
    start(1);
    wait_ready();

    char *body = NULL;
    ts_testpipe_pg_stop(&tp);
    produce_books(0, 3); /* a write that has to wait for PostgreSQL */
    cr_assert_eq(ts_httpget_wait(port, "/readyz", 503, 60, &body), 0, "/readyz: %s; see %s",
                 body ? body : "no answer", tp.log);
    cr_assert(strstr(body, "sink postgres unreachable"), "reason: %s", body);
    free(body);
    int status = 0;
    cr_assert_eq(ts_httpget(port, "/healthz", 5, &status, NULL), 0);
    cr_assert_eq(status, 200, "alive while a sink is down");
    char *text = scrape();
    cr_assert_eq(ts_httpget_sample(text, "tastesync_sink_up{sink=\"postgres\"}", -1), 0, "%s",
                 text);
    cr_assert_gt(ts_httpget_sample(text, "tastesync_sink_errors_total{sink=\"postgres\"}", -1), 0,
                 "%s", text);
    cr_assert_eq(ts_httpget_sample(text, "tastesync_ready", -1), 0, "%s", text);
    free(text);

    cr_assert_eq(ts_testpipe_pg_start(&tp), 0, "postgres restart");
    wait_ready();
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "not committed; see %s", tp.log);
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0, "clean exit; see %s", tp.log);
}

static double backlog_target;

static int backlog_processed(const char *text) {
    return ts_httpget_sample(text, PROCESSED, 0) >= backlog_target;
}

/* Runs the runtime over a backlog of `n` new books (the runtime stopped while
 * they are produced) with TASTESYNC_BATCH_MAX_MS = `max_ms`, and returns the
 * mean size of the batches it took them in. */
static double backlog_mean_batch(int first, int n, const char *max_ms) {
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0, "clean exit; see %s", tp.log);
    setenv("TASTESYNC_BATCH_MAX_MS", max_ms, 1);
    static char texts[3000][256];
    const char *topics[3000], *jsons[3000];
    cr_assert_leq(n, 3000);
    for (int i = 0; i < n; i++) {
        int id = first + i;
        snprintf(texts[i], sizeof(texts[i]),
                 "{\"BookCreated\": {\"event_id\": \"x%d\", \"book_id\": \"xb%d\", "
                 "\"user_id\": \"xu%d\", \"title\": \"T%d\", \"created_at\": "
                 "\"2026-01-10T09:00:00.000Z\"}}",
                 id, id, id, id);
        topics[i] = TOPIC;
        jsons[i] = texts[i];
    }
    cr_assert_eq(ts_testpipe_produce_json_batch(&tp, topics, jsons, (size_t)n), 0);
    cr_assert_eq(ts_testpipe_runtime_start(&tp), 0, "restart; see %s", tp.log);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 120), 0, "not committed; see %s", tp.log);
    backlog_target = n;
    char *text = scrape_until(backlog_processed, 60);
    /* The counters start at zero with each runtime process. */
    double events = ts_httpget_sample(text, "tastesync_batch_size_sum{processor=\"storybook\"}", -1);
    double batches =
        ts_httpget_sample(text, "tastesync_batch_size_count{processor=\"storybook\"}", -1);
    free(text);
    cr_assert_eq(events, n, "every book of the backlog, in batches");
    return events / batches;
}

/* A backlog is taken in batches bounded by time: with batch.max_ms 1 a batch
 * stops after about a millisecond of records, where with 60 s only the fetches
 * and the 256 KiB bound on a batch's effects cut them. */
Test(metrics_http, batch_max_ms_bounds_the_batches_of_a_backlog) {
    start(0);
    wait_ready();
    double unbounded = backlog_mean_batch(0, 3000, "60000");
    double bounded = backlog_mean_batch(3000, 3000, "1");
    cr_assert_lt(bounded, unbounded * 0.6, "mean batch: %.1f with 1 ms, %.1f with 60 s", bounded,
                 unbounded);
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0, "clean exit; see %s", tp.log);
}

static const char *pauses_series = "tastesync_input_pauses_total{processor=\"storybook\"}";

/* Runs the runtime over a backlog of `n` books with titles of `title_bytes`
 * (the runtime stopped while they are produced) and returns how often its
 * partitions paused. */
static double backlog_pauses(int first, int n, size_t title_bytes) {
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0, "clean exit; see %s", tp.log);
    char *title = malloc(title_bytes + 1);
    memset(title, 'P', title_bytes);
    title[title_bytes] = '\0';
    size_t cap = title_bytes + 256;
    char **texts = calloc((size_t)n, sizeof(*texts));
    const char **topics = calloc((size_t)n, sizeof(*topics));
    for (int i = 0; i < n; i++) {
        int id = first + i;
        texts[i] = malloc(cap);
        snprintf(texts[i], cap,
                 "{\"BookCreated\": {\"event_id\": \"p%d\", \"book_id\": \"pb%d\", "
                 "\"user_id\": \"pu%d\", \"title\": \"%s\", \"created_at\": "
                 "\"2026-01-10T09:00:00.000Z\"}}",
                 id, id, id, title);
        topics[i] = TOPIC;
    }
    cr_assert_eq(
        ts_testpipe_produce_json_batch(&tp, topics, (const char *const *)texts, (size_t)n), 0);
    for (int i = 0; i < n; i++)
        free(texts[i]);
    free(texts);
    free(topics);
    free(title);
    cr_assert_eq(ts_testpipe_runtime_start(&tp), 0, "restart; see %s", tp.log);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 120), 0, "not committed; see %s", tp.log);
    backlog_target = n;
    char *text = scrape_until(backlog_processed, 60);
    /* The counters start at zero with each runtime process. */
    cr_assert_eq(ts_httpget_sample(text, PROCESSED, -1), n, "every book of the backlog");
    double pauses = ts_httpget_sample(text, pauses_series, -1);
    free(text);
    return pauses;
}

/* The records a task holds for its next batches are bounded in bytes, not
 * only in count: a backlog of 400 books of 8 KiB (~800 KiB per partition, far
 * below 2 x batch.max_events records) pauses fetching with
 * batch.max_buffered_bytes at 64 KiB, never with the default 16 MiB, and
 * every book is applied either way. */
Test(metrics_http, buffered_bytes_bound_pauses_fetching) {
    start(0);
    wait_ready();
    double unbounded = backlog_pauses(0, 400, 8192);
    setenv("TASTESYNC_BATCH_MAX_BUFFERED_BYTES", "65536", 1);
    double bounded = backlog_pauses(400, 400, 8192);
    unsetenv("TASTESYNC_BATCH_MAX_BUFFERED_BYTES");
    cr_assert_eq(unbounded, 0, "paused %.0f times under the default bound", unbounded);
    cr_assert_gt(bounded, 0, "never paused with 64 KiB; see %s", tp.log);
    char out[64];
    cr_assert_eq(ts_testenv_pg_query(tp.pg, out, sizeof(out),
                                     "SELECT count(*) FROM books WHERE book_id LIKE 'pb%'"),
                 0, "%s", out);
    cr_assert_str_eq(out, "800");
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0, "clean exit; see %s", tp.log);
}
