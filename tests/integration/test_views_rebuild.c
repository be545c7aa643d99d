/* test_views_rebuild.c - views lost in Redis come back from state alone:
 * FLUSHALL mid-stream, a Redis restart without persistence, and
 * `tastesync views rebuild`. Nothing is reprocessed (the DLQ does not grow). */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ts_testpipe.h"

static ts_testpipe tp;

static void setup(void) { cr_assert_eq(ts_testpipe_start(&tp), 0, "pipeline did not start"); }
static void teardown(void) { ts_testpipe_stop(&tp); }

TestSuite(views_rebuild, .init = setup, .fini = teardown, .timeout = 180);

#define TOPIC "storybook.events"
#define BOOKS 40

/* Produces BOOKS books of 3 users with pages, one rejected event, and deletes. */
static void produce_books(int from) {
    char json[1024];
    for (int i = from; i < from + BOOKS; i++) {
        snprintf(json, sizeof(json),
                 "{\"BookCreated\": {\"event_id\": \"c%d\", \"book_id\": \"b%d\", \"user_id\": "
                 "\"u%d\", \"title\": \"T%d\", \"created_at\": %lld}}",
                 i, i, i % 3, i, 1767225600000LL + i * 1000);
        cr_assert_eq(ts_testpipe_produce_json(&tp, TOPIC, json), 0);
        snprintf(json, sizeof(json),
                 "{\"PageUpserted\": {\"event_id\": \"p%d\", \"book_id\": \"b%d\", \"user_id\": "
                 "\"u%d\", \"page_no\": 1, \"text\": \"page of %d\", \"updated_at\": %lld}}",
                 i, i, i % 3, i, 1767225600000LL + i * 1000 + 500);
        cr_assert_eq(ts_testpipe_produce_json(&tp, TOPIC, json), 0);
        if (i % 7 == 0) {
            snprintf(json, sizeof(json),
                     "{\"BookDeleted\": {\"event_id\": \"d%d\", \"book_id\": \"b%d\", "
                     "\"user_id\": \"u%d\", \"deleted_at\": %lld}}",
                     i, i, i % 3, 1767225600000LL + i * 1000 + 900);
            cr_assert_eq(ts_testpipe_produce_json(&tp, TOPIC, json), 0);
        }
    }
    snprintf(json, sizeof(json),
             "{\"BookUpdated\": {\"event_id\": \"x%d\", \"book_id\": \"nope\", \"user_id\": "
             "\"u0\", \"title\": \"?\", \"updated_at\": 1}}",
             from);
    cr_assert_eq(ts_testpipe_produce_json(&tp, TOPIC, json), 0);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "see %s", tp.log);
}

/* Every view key (runtime bookkeeping aside) with its value, sorted: the
 * whole visible state of Redis as one string. */
static char *snapshot(void) {
    char keys[65536];
    cr_assert_eq(ts_testenv_redis_cmd(tp.redis.url, keys, sizeof(keys), "KEYS %s", "storybook:*"),
                 0);
    size_t cap = 1 << 20, len = 0;
    char *out = calloc(1, cap);
    char *names[512];
    size_t n = 0;
    for (char *k = strtok(keys, ","); k && n < 512; k = strtok(NULL, ","))
        names[n++] = strdup(k);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(names[j], names[i]) < 0) {
                char *t = names[i];
                names[i] = names[j];
                names[j] = t;
            }
    for (size_t i = 0; i < n; i++) {
        char value[16384];
        cr_assert_eq(ts_testenv_redis_cmd(tp.redis.url, value, sizeof(value), "GET %s", names[i]),
                     0);
        len += (size_t)snprintf(out + len, cap - len, "%s=%s\n", names[i], value);
        free(names[i]);
    }
    return out;
}

/* Waits until Redis shows `want` again. */
static void wait_restored(const char *want) {
    char *got = NULL;
    for (int i = 0; i < (int)(ts_testenv_timeout(20) * 10); i++) {
        free(got);
        got = snapshot();
        if (strcmp(got, want) == 0)
            break;
        usleep(100000);
    }
    cr_assert_str_eq(got, want, "views not restored; see %s", tp.log);
    free(got);
}

static size_t dlq_size(void) {
    size_t n = 0;
    rd_kafka_message_t **msgs = ts_testpipe_read_topic(&tp, TOPIC ".dlq", &n);
    ts_testpipe_records_free(msgs, n);
    return n;
}

Test(views_rebuild, flushall_then_views_come_back_from_state) {
    produce_books(0);
    char *before = snapshot();
    cr_assert(strstr(before, "storybook:book:b1=") != NULL, "%s", before);
    cr_assert_eq(dlq_size(), 1);

    char out[256];
    cr_assert_eq(ts_testenv_redis_cmd(tp.redis.url, out, sizeof(out), "FLUSHALL"), 0);
    wait_restored(before);
    free(before);

    /* Processing goes on after the rebuild, and nothing was reprocessed. */
    produce_books(BOOKS);
    char *after = snapshot();
    cr_assert(strstr(after, "storybook:book:b41=") != NULL, "%s", after);
    free(after);
    cr_assert_eq(dlq_size(), 2, "each rejected input reached the DLQ once");
}

Test(views_rebuild, redis_restart_without_persistence) {
    produce_books(0);
    char *before = snapshot();
    ts_servers_stop_redis(tp.redis.srv);
    cr_assert_eq(ts_testenv_redis_restart(&tp.redis), 0);
    wait_restored(before);
    free(before);
}

Test(views_rebuild, on_demand_with_the_cli) {
    produce_books(0);
    char *before = snapshot();
    /* Damage a view behind the runtime's back; the rebuild repairs it. */
    char out[256];
    cr_assert_eq(ts_testenv_redis_cmd(tp.redis.url, out, sizeof(out), "SET %s garbage",
                                      "storybook:book:b1"),
                 0);
    char cmd[1024], group[64];
    snprintf(group, sizeof(group), "test-%ld", (long)getpid());
    snprintf(cmd, sizeof(cmd),
             "TASTESYNC_REDIS_URL=%s TASTESYNC_GROUP=%s %s views rebuild %s/topology.yaml "
             ">/dev/null",
             tp.redis.url, group, TS_BINARY, TS_SOURCE_DIR);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    wait_restored(before);
    free(before);
}
