/* test_restore.c - state follows its partition: an instance whose local state
 * is gone restores it from the changelog before processing, a batch whose
 * changelog records never landed before a crash reaches the changelog at the
 * restart (from its pending record), a clean restart with local state
 * restores nothing, an instance whose snapshot is older than the changelog
 * restores even when the group's committed offset lags, and the records of a
 * torn batch left in the changelog do not count, in its middle or as the
 * partition's first batch, and an instance restarted under the same static id
 * is another owner. */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h> /* after rdkafka.h */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_testpipe.h"

static ts_testpipe tp;

static void setup(void) { cr_assert_eq(ts_testpipe_start(&tp), 0, "pipeline did not start"); }
static void teardown(void) { ts_testpipe_stop(&tp); }

TestSuite(restore, .init = setup, .fini = teardown, .timeout = 180);

#define TOPIC "storybook.events"

/* Produces event `i` of `fmt` (its four %d: event, book, user i % users,
 * title). */
static void produce_of(const char *fmt, int i, int users) {
    char json[1024];
    snprintf(json, sizeof(json), fmt, i, i, i % users, i);
    cr_assert_eq(ts_testpipe_produce_json(&tp, TOPIC, json), 0, "%s", json);
}

static void produce(const char *fmt, int i) { produce_of(fmt, i, 5); }

static void produce_created(int i) {
    produce("{\"BookCreated\": {\"event_id\": \"c%d\", \"book_id\": \"b%d\", \"user_id\": "
            "\"u%d\", \"title\": \"T%d\", \"created_at\": 1767225600000}}",
            i);
}

static void produce_updated(int i) {
    produce("{\"BookUpdated\": {\"event_id\": \"up%d\", \"book_id\": \"b%d\", \"user_id\": "
            "\"u%d\", \"title\": \"Again %d\", \"updated_at\": 1767225700000}}",
            i);
}

static void produce_books(int from, int to) {
    for (int i = from; i < to; i++) {
        produce_created(i);
        produce("{\"PageUpserted\": {\"event_id\": \"p%d\", \"book_id\": \"b%d\", \"user_id\": "
                "\"u%d\", \"page_no\": 1, \"text\": \"page %d\", \"updated_at\": 1767225601000}}",
                i);
    }
}

/* Lines of the runtime's log (every run's) that contain `needle`. */
static int log_count(const char *needle) {
    FILE *f = fopen(tp.log, "r");
    if (!f)
        return 0;
    char line[4096];
    int found = 0;
    while (fgets(line, sizeof(line), f))
        found += strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

static int log_has(const char *needle) { return log_count(needle) > 0; }

/* The last runtime log lines about where its storybook tasks started, for a
 * failure's message (the log goes with the test's folder). */
static const char *start_lines(void) {
    static char out[1 << 16];
    size_t len = 0;
    out[0] = '\0';
    FILE *f = fopen(tp.log, "r");
    if (!f)
        return "(no log)";
    char line[4096];
    while (fgets(line, sizeof(line), f)) {
        if (!strstr(line, "storybook/") ||
            !(strstr(line, "started at") || strstr(line, "local state") ||
              strstr(line, "re-sending") || strstr(line, "restored") || strstr(line, "level=warn") ||
              strstr(line, "level=error")))
            continue;
        size_t n = strlen(line);
        if (len + n + 1 > sizeof(out))
            break;
        memcpy(out + len, line, n + 1);
        len += n;
    }
    fclose(f);
    /* The last 40 lines: the last run's. */
    const char *tail = out + len;
    for (int lines = 0; tail > out && lines <= 40; tail--)
        lines += tail[-1] == '\n';
    return tail;
}

static void wipe_local_state(void) {
    char state[256];
    snprintf(state, sizeof(state), "%s/state", tp.dir);
    ts_testenv_rmtree(state);
}

static size_t dlq_size(void) {
    size_t n = 0;
    rd_kafka_message_t **msgs = ts_testpipe_read_topic(&tp, TOPIC ".dlq", &n);
    ts_testpipe_records_free(msgs, n);
    return n;
}

Test(restore, lost_local_state_comes_back_from_the_changelog) {
    produce_books(0, 50);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "see %s", tp.log);
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGKILL), 128 + SIGKILL);

    /* The instance comes back on a new disk: no local state at all. */
    wipe_local_state();
    cr_assert_eq(ts_testpipe_runtime_start(&tp), 0);

    /* Updates of books created before: accepted only if the state is back. */
    for (int i = 0; i < 50; i++)
        produce_updated(i);
    /* A producer's retry of an event applied before the loss: a no-op only if
     * the event ids came back too (a second BookCreated would be rejected). */
    produce_created(9);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "see %s", tp.log);
    cr_assert(log_has("restored"), "a restore happened (see %s)", tp.log);
    cr_assert_eq(dlq_size(), 0, "nothing rejected: every book and every event id was restored");

    char out[4096];
    cr_assert_eq(ts_testenv_redis_cmd(tp.redis.url, out, sizeof(out), "GET %s",
                                      "storybook:book:b7"), 0);
    json_t *book = json_loads(out, 0, NULL);
    cr_assert_str_eq(json_string_value(json_object_get(book, "title")), "Again 7", "%s", out);
    cr_assert_eq(json_array_size(json_object_get(book, "pages")), 1, "%s", out);
    json_decref(book);
    cr_assert_eq(ts_testenv_pg_query(tp.pg, out, sizeof(out),
                                     "SELECT count(*) FROM books WHERE title LIKE 'Again %'"),
                 0);
    cr_assert_str_eq(out, "50");
}

/* Waits until one of the books b<from>..b<to - 1> of user u<user> (books i
 * with i % 5 == user, see produce()) has a view in Redis.
 * @returns its number, or -1. */
static int wait_book_of(int user, int from, int to, double seconds) {
    char key[64], out[4096];
    for (double waited = 0; waited < seconds; waited += 0.05) {
        for (int i = from; i < to; i++) {
            if (i % 5 != user)
                continue;
            snprintf(key, sizeof(key), "storybook:book:b%d", i);
            if (ts_testenv_redis_cmd(tp.redis.url, out, sizeof(out), "GET %s", key) == 0 &&
                out[0] == '{')
                return i;
        }
        usleep(50000);
    }
    return -1;
}

#define PRODUCE_API_KEY 0 /* Kafka's ApiKey of Produce requests */

/* A batch is decided (in RocksDB) and flushed, its changelog cannot land,
 * the runtime is killed; after the restart the batch reaches the changelog.
 * `wal`: state.wal (RocksDB's write-ahead log kept or not). */
static void killed_before_its_changelog_landed(int wal) {
    /* Runtimes started from now on inherit it (ts_testenv_spawn_runtime);
     * the one the setup started stops cleanly below, which keeps its state
     * either way. */
    setenv("TASTESYNC_STATE_WAL", wal ? "1" : "0", 1);
    /* Every Produce request fails (retriably) once the runtime is up again:
     * its batches reach RocksDB, Redis and PostgreSQL, never the changelog. */
    produce_books(0, 1);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "see %s", tp.log);
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0);
    /* Only creations: a book of the stuck batch is written by no later one,
     * so the changelog can only have it from the restart. */
    for (int i = 1; i < 20; i++)
        produce_created(i);
    rd_kafka_mock_cluster_t *mock = ts_cluster_mock(tp.cluster);
    enum { N_ERRORS = 100000 };
    static rd_kafka_resp_err_t errors[N_ERRORS];
    for (size_t i = 0; i < N_ERRORS; i++)
        errors[i] = RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS;
    rd_kafka_mock_push_request_errors_array(mock, PRODUCE_API_KEY, N_ERRORS, errors);
    cr_assert_eq(ts_testpipe_runtime_start(&tp), 0);
    /* A book's view means its batch was decided (in RocksDB) and flushed:
     * the changelog's share of that flush cannot land, so the task keeps
     * its pending record, and its later batches wait behind it. Two tasks
     * (the producer's murmur2 partitioner, 8 partitions): u2's partition 6,
     * whose changelog has book 0's batch, and u1's partition 0, whose
     * changelog is empty (its stored end is 0). */
    int decided = wait_book_of(1, 1, 20, 60);
    cr_assert_geq(decided, 1, "no batch of u1 was decided (see %s)", tp.log);
    cr_assert_geq(wait_book_of(2, 1, 20, 60), 1, "no batch of u2 was decided (see %s)", tp.log);
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGKILL), 128 + SIGKILL);

    /* The restart brings the batch to the changelog. The changelog still
     * ends where the local state says (nothing of the batch landed), so the
     * local state is current: no restore. With the WAL the decided batch
     * survived the kill and its pending record is re-sent (its changelog
     * records read back from the local state, ts_pending's references).
     * Without it the kill lost what was not flushed yet, the decided batch
     * with its pending record, so the batch is decided again from its
     * input. */
    rd_kafka_mock_clear_request_errors(mock, PRODUCE_API_KEY);
    cr_assert_eq(ts_testpipe_runtime_start(&tp), 0);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "see %s", tp.log);
    cr_assert(!log_has("restored"), "no restore: nothing of it landed (see %s)", tp.log);
    if (wal)
        cr_assert_geq(log_count("re-sending"), 2, "both pending batches were re-sent (see %s):\n%s",
                      tp.log, start_lines());
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0);

    /* From the changelog alone, the books and their event ids are back. */
    wipe_local_state();
    cr_assert_eq(ts_testpipe_runtime_start(&tp), 0);
    for (int i = 0; i < 20; i++)
        produce_updated(i);
    produce_created(decided);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "see %s", tp.log);
    cr_assert(log_has("restored"), "a restore happened (see %s)", tp.log);
    cr_assert_eq(dlq_size(), 0, "nothing rejected: every book and event id reached the changelog");
    char out[4096], key[64], title[64];
    snprintf(key, sizeof(key), "storybook:book:b%d", decided);
    snprintf(title, sizeof(title), "Again %d", decided);
    cr_assert_eq(ts_testenv_redis_cmd(tp.redis.url, out, sizeof(out), "GET %s", key), 0);
    json_t *book = json_loads(out, 0, NULL);
    cr_assert_str_eq(json_string_value(json_object_get(book, "title")), title, "%s", out);
    json_decref(book);
    unsetenv("TASTESYNC_STATE_WAL");
}

Test(restore, a_batch_killed_before_its_changelog_landed_reaches_it_at_restart) {
    killed_before_its_changelog_landed(0);
}

Test(restore, with_the_wal_a_batch_killed_before_its_changelog_landed_is_re_sent) {
    killed_before_its_changelog_landed(1);
}

Test(restore, clean_restart_keeps_local_state) {
    produce_books(0, 20);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "see %s", tp.log);
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0);
    cr_assert_eq(ts_testpipe_runtime_start(&tp), 0);
    produce_books(20, 30);
    /* A producer's retry of an event applied before the restart: a no-op
     * only if the restarted task knows its id (its dedup filter is loaded
     * from the local state; a second BookCreated would be rejected). */
    produce_created(5);
    /* Documents stored before the restart are found through the key filter
     * loaded from the local state: an update of an earlier book (rejected if
     * the book were missed), lists that grew on both sides of the restart. */
    produce_updated(7);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "see %s", tp.log);
    /* (The log holds both runs; the first found an empty changelog.) Without
     * the WAL, only the clean stop's flush keeps the state. */
    cr_assert(log_has("local state is current"), "the local checkpoint was used (see %s)",
              tp.log);
    cr_assert(!log_has("restored"), "nothing was restored (see %s)", tp.log);
    cr_assert(log_has("keys stored before"), "the filters were loaded (see %s)", tp.log);
    cr_assert_eq(dlq_size(), 0, "the retry of c5 was dropped as a duplicate, b7 was found");
    char out[8192];
    cr_assert_eq(ts_testenv_redis_cmd(tp.redis.url, out, sizeof(out), "GET storybook:book:b7"),
                 0);
    json_t *book = json_loads(out, 0, NULL);
    cr_expect_str_eq(json_string_value(json_object_get(book, "title")), "Again 7", "%s", out);
    json_decref(book);
    cr_assert_eq(ts_testenv_redis_cmd(tp.redis.url, out, sizeof(out), "GET storybook:books:u2"),
                 0);
    json_t *list = json_loads(out, 0, NULL);
    cr_expect_eq(json_array_size(list), 6, "b2, b7, ... b27: %s", out);
    json_decref(list);
}

/* Books of users s0..s39: every partition of the topic gets some. */
static void produce_spread(int from, int to) {
    for (int i = from; i < to; i++)
        produce_of("{\"BookCreated\": {\"event_id\": \"s%d\", \"book_id\": \"sb%d\", "
                   "\"user_id\": \"s%d\", \"title\": \"S%d\", \"created_at\": 1767225600000}}",
                   i, 40);
}

/* An instance restarted under the same static id (TASTESYNC_INSTANCE_ID) is
 * another owner of its partitions in ts_handoffs. Owners were named by the
 * instance and a number counted from 1 in each process, so a restarted
 * static member could take its previous run's name for a partition: a
 * legitimate hand-over back to it looked like an overlap (test_scaleout
 * failed so once), and an overlap with its own previous run could hide. */
Test(restore, a_static_member_restarted_is_another_owner) {
    /* The setup's runtime, still starting, had no static id. */
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGKILL), 128 + SIGKILL);
    pid_t s = ts_testpipe_spawn(&tp, "s", "restore-static");
    cr_assert_gt(s, 0);
    produce_spread(0, 80);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "see %s/s.log", tp.dir);
    cr_assert_eq(ts_testpipe_reap(s, SIGTERM), 0, "see %s/s.log", tp.dir);
    s = ts_testpipe_spawn(&tp, "s", "restore-static"); /* its state folder again */
    cr_assert_gt(s, 0);
    produce_spread(80, 160); /* the same 40 users: the same partitions */
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "see %s/s.log", tp.dir);
    cr_assert_eq(ts_testpipe_reap(s, SIGTERM), 0, "see %s/s.log", tp.dir);
    char out[4096];
    cr_assert_eq(ts_testenv_pg_query(tp.pg, out, sizeof(out),
                                     "SELECT count(*), count(*) FILTER (WHERE owners >= 2) "
                                     "FROM (SELECT task, count(DISTINCT owner) AS owners "
                                     "FROM ts_handoffs WHERE owner LIKE 'restore-static%' "
                                     "AND task LIKE 'storybook/%' GROUP BY task) t"),
                 0, "%s", out);
    int tasks = 0, handed_over = 0;
    cr_assert_eq(sscanf(out, "%d|%d", &tasks, &handed_over), 2, "%s", out);
    cr_assert_gt(tasks, 0, "the static member's batches are recorded");
    cr_assert_eq(handed_over, tasks, "every task's second run is another owner: %s", out);
}

Test(restore, an_old_snapshot_is_not_resumed_when_the_committed_offset_lags) {
    enum { PARTS = 8 };
    const ts_topic_conf *tc = ts_topology_topic(tp.topo, TOPIC);
    cr_assert(tc && tc->partitions <= PARTS);
    int parts = tc->partitions;

    /* This instance processes the first books and stops: its snapshot is
     * at L. */
    produce_books(0, 30);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "see %s", tp.log);
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0);
    int64_t at_l[PARTS];
    cr_assert_eq(ts_testpipe_committed(&tp, TOPIC, at_l, parts), 0);

    /* Instance A (its own state) takes over and goes further, to X. */
    pid_t a = ts_testpipe_spawn(&tp, "a", NULL);
    cr_assert_gt(a, 0);
    for (int i = 0; i < 30; i++)
        produce_updated(i);
    produce_books(30, 40);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "see %s/a.log", tp.dir);
    cr_assert_eq(ts_testpipe_reap(a, SIGTERM), 0);

    /* The group's committed offsets lag A's position (as after a commit lost
     * in a rebalance or a crash right after an acknowledgement). */
    cr_assert_eq(ts_testpipe_commit(&tp, TOPIC, at_l, parts), 0);

    /* The first instance comes back: its snapshot at L is older than the
     * changelog, however far the group committed. It must restore, not
     * resume from L. */
    cr_assert_eq(ts_testpipe_runtime_start(&tp), 0);
    produce_books(40, 50);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "see %s", tp.log);
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0);
    char why[512] = "";
    cr_assert_eq(ts_testpipe_changelog_is_one_history(&tp, "storybook", why, sizeof(why)), 0,
                 "%s (see %s and %s/a.log)", why, tp.log, tp.dir);
    cr_assert_eq(dlq_size(), 0, "nothing rejected (see %s)", tp.log);

    char out[4096];
    cr_assert_eq(ts_testenv_pg_query(tp.pg, out, sizeof(out),
                                     "SELECT count(*) FROM books WHERE title LIKE 'Again %'"),
                 0);
    cr_assert_str_eq(out, "30");
    cr_assert_eq(ts_testenv_pg_query(tp.pg, out, sizeof(out), "SELECT count(*) FROM books"), 0);
    cr_assert_str_eq(out, "50");
}

/* The changelog partition holding book `book`'s state record. */
static int32_t changelog_partition_of(const char *book) {
    char key[64];
    int klen = snprintf(key, sizeof(key), "Sbook\x1f%s", book);
    size_t n = 0;
    rd_kafka_message_t **msgs = ts_testpipe_read_changelog(&tp, "storybook", &n);
    int32_t partition = -1;
    for (size_t i = 0; i < n && partition < 0; i++)
        if (msgs[i]->key_len == (size_t)klen && memcmp(msgs[i]->key, key, (size_t)klen) == 0)
            partition = msgs[i]->partition;
    ts_testpipe_records_free(msgs, n);
    return partition;
}

static void produce_changelog(int32_t partition, const char *key, size_t klen, const char *value,
                              size_t vlen) {
    char topic[256];
    ts_testpipe_changelog_topic(&tp, "storybook", topic, sizeof(topic));
    cr_assert_eq(rd_kafka_producev(tp.producer, RD_KAFKA_V_TOPIC(topic),
                                   RD_KAFKA_V_PARTITION(partition),
                                   RD_KAFKA_V_KEY(key, klen), RD_KAFKA_V_VALUE((void *)value, vlen),
                                   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                 RD_KAFKA_RESP_ERR_NO_ERROR);
    cr_assert_eq(rd_kafka_flush(tp.producer, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* Appends `bytes` of incompressible values to changelog partition `p` in
 * records of 256 KiB (keys of no task, never completed by a marker). */
static void produce_changelog_junk(int32_t p, size_t bytes) {
    size_t len = 256 * 1024;
    char *value = malloc(len);
    cr_assert(value);
    uint64_t x = 88172645463325252u;
    for (size_t sent = 0; sent < bytes; sent += len) {
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            value[i] = (char)x;
        }
        produce_changelog(p, "junk", 4, value, len);
    }
    free(value);
}

Test(restore, a_changelog_that_lost_its_head_is_named_at_restore) {
    produce_books(0, 10);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "see %s", tp.log);
    int32_t p = changelog_partition_of("b3");
    cr_assert_geq(p, 0);
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGKILL), 128 + SIGKILL);
    cr_expect_not(log_has("older records are gone"), "a full changelog is not named");
    /* Past the mock cluster's ~5 MiB: it drops the partition's oldest sets. */
    produce_changelog_junk(p, 6u << 20);
    wipe_local_state();
    cr_assert_eq(ts_testpipe_runtime_start(&tp), 0);
    produce_books(10, 12);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "see %s", tp.log);
    char needle[128];
    snprintf(needle, sizeof(needle), "storybook-changelog [%" PRId32 "] starts at offset", p);
    cr_assert(log_has(needle), "the restore named the lost head (see %s)", tp.log);
    cr_assert(log_has("older records are gone"), "see %s", tp.log);
}

/* Appends to changelog partition `p` what an owner's batch that changed book
 * b3 (now titled `title`) and applied event `event_id` writes: b3's state
 * record and the batch's group record of event ids (key `group_key`). */
static void produce_b3_batch(int32_t p, const char *title, const char *group_key,
                             const char *event_id) {
    static const char book_key[] = "Sbook\x1f" "b3";
    char book[512], seen[64];
    int blen = snprintf(book, sizeof(book),
                        "{\"id\": \"b3\", \"userId\": \"u3\", \"title\": \"%s\", "
                        "\"coverImageUrl\": null, \"createdAt\": 1767225600000, "
                        "\"updatedAt\": 1767225700000, \"pages\": []}",
                        title);
    int slen = snprintf(seen, sizeof(seen), "_seen\x1f%s", event_id);
    produce_changelog(p, book_key, sizeof(book_key) - 1, book, (size_t)blen);
    produce_changelog(p, group_key, strlen(group_key), seen, (size_t)slen);
}

/* Processes books b0..b9, stops the runtime, and returns the changelog
 * partition holding book b3. */
static int32_t b3_partition_after_ten_books(void) {
    produce_books(0, 10);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "see %s", tp.log);
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0);
    int32_t p = changelog_partition_of("b3");
    cr_assert_geq(p, 0, "book b3 is in the changelog");
    return p;
}

/* Once everything produced is processed, nothing is in the DLQ and book b3
 * has `title`. */
static void b3_has_title(const char *title) {
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "see %s", tp.log);
    cr_assert_eq(dlq_size(), 0, "see %s", tp.log);
    char out[4096];
    cr_assert_eq(ts_testenv_redis_cmd(tp.redis.url, out, sizeof(out), "GET %s",
                                      "storybook:book:b3"), 0);
    json_t *book = json_loads(out, 0, NULL);
    cr_assert_str_eq(json_string_value(json_object_get(book, "title")), title, "%s (see %s)",
                     out, tp.log);
    json_decref(book);
}

/* After a restore past torn records of book b3 and the event id of its next
 * event, that event is applied once it is processed (nothing in the DLQ):
 * book b3 has `title`, and book b103, written after the torn records,
 * survived. */
static void torn_records_did_not_count(const char *title) {
    b3_has_title(title);
    char out[4096];
    cr_assert_eq(ts_testenv_redis_cmd(tp.redis.url, out, sizeof(out), "GET %s",
                                      "storybook:book:b103"), 0);
    cr_assert(out[0] == '{', "book b103 survived the restores: %s", out);
}

Test(restore, a_torn_batch_in_the_middle_of_the_changelog_is_undone) {
    /* An owner died while its batch was landing: two of its records reached
     * the changelog, its marker did not. It had changed book b3 and applied
     * event up3 (so it remembered its id). */
    int32_t p = b3_partition_after_ten_books();
    produce_b3_batch(p, "TORN", "Z999999", "up3");

    /* The next owner restores (the torn tail is dropped) and goes on: its
     * batches follow the torn records in the changelog. */
    wipe_local_state();
    cr_assert_eq(ts_testpipe_runtime_start(&tp), 0);
    produce_created(103); /* user u3: the same partition as book b3 */
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "see %s", tp.log);
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0);

    /* A later restore reads the torn records in the middle of the changelog:
     * they must not count. Else book b3 would be "TORN" and the real up3,
     * taken for a duplicate, would be dropped. */
    wipe_local_state();
    cr_assert_eq(ts_testpipe_runtime_start(&tp), 0);
    produce_updated(3);
    torn_records_did_not_count("Again 3");
}

/* An owner died while the first batch of a partition was landing: records
 * reached the changelog, no marker ever did. The next owner's restore finds
 * nothing to restore, and the next owner deletes those records in the
 * changelog ahead of its own first batch: else a later restore would read
 * them as part of that batch. */
Test(restore, a_torn_first_batch_is_undone_by_the_next_owner) {
    /* Nothing processed yet: every changelog partition is empty. Whichever
     * partition user u3 maps to gets the torn batch: all of them do. */
    for (int i = 0; i < 300 && !log_has("started at"); i++)
        usleep(100000);
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0, "see %s", tp.log);
    const ts_topic_conf *in = ts_topology_topic(tp.topo, TOPIC);
    cr_assert_not_null(in);
    for (int32_t p = 0; p < in->partitions; p++)
        produce_b3_batch(p, "TORN", "Z999999", "c3");

    /* The next owner: its first batch on u3's partition (book b103). */
    wipe_local_state();
    cr_assert_eq(ts_testpipe_runtime_start(&tp), 0);
    produce_created(103);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 60), 0, "see %s", tp.log);
    cr_assert(log_has("holds a torn first batch (3 keys"), "see %s", tp.log);
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0);

    /* A later restore reads the torn records before that batch: they must
     * not count. Else book b3 would exist ("TORN") and event c3, taken for a
     * duplicate, would be dropped. */
    wipe_local_state();
    cr_assert_eq(ts_testpipe_runtime_start(&tp), 0);
    produce_created(3);
    torn_records_did_not_count("T3");
}

/* An owner that lost the partition without noticing (a zombie: paused past
 * its session, cut off) appends a complete batch after the new owner's: it
 * changed book b3 and applied event up3, and its marker ends where one of the
 * owner's earlier batches ended (a copy of the partition's first marker). A
 * restore skips it: else book b3 would be "STALE", up3 would be taken for a
 * duplicate, and the position would go back. */
Test(restore, a_stale_batch_appended_by_a_zombie_is_skipped) {
    int32_t p = b3_partition_after_ten_books();
    size_t n = 0;
    rd_kafka_message_t **msgs = ts_testpipe_read_changelog(&tp, "storybook", &n);
    char *marker = NULL;
    size_t marker_len = 0;
    for (size_t i = 0; i < n && !marker; i++)
        if (msgs[i]->partition == p && msgs[i]->key_len == 1 &&
            ((const char *)msgs[i]->key)[0] == 'M') {
            marker_len = msgs[i]->len;
            marker = malloc(marker_len);
            memcpy(marker, msgs[i]->payload, marker_len);
        }
    ts_testpipe_records_free(msgs, n);
    cr_assert_not_null(marker, "a marker in partition %d", (int)p);

    produce_b3_batch(p, "STALE", "Z999998", "up3");
    produce_changelog(p, "M", 1, marker, marker_len);
    free(marker);

    wipe_local_state();
    cr_assert_eq(ts_testpipe_runtime_start(&tp), 0);
    produce_updated(3);
    b3_has_title("Again 3");
    cr_assert(log_has("written by an instance that had lost the partition; skipped"), "see %s",
              tp.log);
}
