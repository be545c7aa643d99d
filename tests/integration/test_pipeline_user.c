/* test_pipeline_user.c - user events through the whole pipeline: Kafka (mock
 * cluster) -> tastesync run -> Redis views, PostgreSQL rows, the output topic
 * user.preference.updated and the DLQ. */
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

TestSuite(pipeline_user, .init = setup, .fini = teardown, .timeout = 180);

#define TOPIC "user.events"
#define OUTPUT "user.preference.updated"

static void produce(const char *json) {
    cr_assert_eq(ts_testpipe_produce_json(&tp, TOPIC, json), 0, "produce %s", json);
}

static void redis(char *out, size_t cap, const char *fmt, const char *arg) {
    cr_assert_eq(ts_testenv_redis_cmd(tp.redis.url, out, cap, fmt, arg), 0, "redis: %s", out);
}

static json_t *redis_json(const char *key) {
    char out[8192];
    redis(out, sizeof(out), "GET %s", key);
    json_t *doc = json_loads(out, 0, NULL);
    cr_assert_not_null(doc, "%s: %s", key, out);
    return doc;
}

static void sql(char *out, size_t cap, const char *query) {
    cr_assert_eq(ts_testenv_pg_query(tp.pg, out, cap, query), 0, "sql: %s", out);
}

static void wait_all(void) {
    cr_assert_eq(ts_testpipe_wait_committed(&tp, TOPIC, 30), 0,
                 "runtime did not commit everything; see %s", tp.log);
}

static const char *sfield(const json_t *obj, const char *field) {
    return json_string_value(json_object_get(obj, field));
}

Test(pipeline_user, views_rows_output_and_dlq) {
    produce("{\"UserRegistered\": {\"event_id\": \"e1\", \"user_id\": \"u1\", \"email\": "
            "\"minji@example.com\", \"registered_at\": \"2026-01-10T09:00:00.000Z\"}}");
    produce("{\"PreferencesSet\": {\"event_id\": \"e2\", \"user_id\": \"u1\", "
            "\"dietary_restrictions\": [\"halal\", \"vegetarian\"], \"allergies\": [\"peanut\"], "
            "\"favorite_cuisines\": [\"korean\"], \"taste\": {\"spiciness\": 4}, "
            "\"updated_at\": \"2026-01-10T09:10:00.000Z\"}}");
    /* The same set in another order: no change, nothing emitted. */
    produce("{\"PreferencesSet\": {\"event_id\": \"e3\", \"user_id\": \"u1\", "
            "\"dietary_restrictions\": [\"vegetarian\", \"halal\"], \"allergies\": [\"peanut\"], "
            "\"favorite_cuisines\": [\"korean\"], \"taste\": {\"spiciness\": 4}, "
            "\"updated_at\": \"2026-01-10T09:20:00.000Z\"}}");
    /* Three bad inputs, each followed by good ones that must still be applied. */
    produce("{\"PreferencesSet\": {\"event_id\": \"e4\", \"user_id\": \"u1\", "
            "\"dietary_restrictions\": [\"paleo\"], \"allergies\": [], \"favorite_cuisines\": [], "
            "\"taste\": {}, \"updated_at\": \"2026-01-10T09:30:00.000Z\"}}");
    produce("{\"ProfileUpdated\": {\"event_id\": \"e5\", \"user_id\": \"ghost\", "
            "\"display_name\": \"Boo\", \"updated_at\": \"2026-01-10T09:31:00.000Z\"}}");
    cr_assert_eq(ts_testpipe_produce_raw(&tp, TOPIC, "u1", "garbage!", 8), 0);
    produce("{\"ProfileUpdated\": {\"event_id\": \"e6\", \"user_id\": \"u1\", "
            "\"display_name\": \"Minji\", \"updated_at\": \"2026-01-10T09:40:00.000Z\"}}");
    produce("{\"UserRegistered\": {\"event_id\": \"e7\", \"user_id\": \"u2\", \"email\": "
            "\"daniel@example.org\", \"registered_at\": \"2026-01-10T10:00:00.000Z\"}}");
    produce("{\"UserDeleted\": {\"event_id\": \"e8\", \"user_id\": \"u2\", "
            "\"deleted_at\": \"2026-01-11T10:00:00.000Z\"}}");
    /* A redelivery of e2 with other content changes nothing. */
    produce("{\"PreferencesSet\": {\"event_id\": \"e2\", \"user_id\": \"u1\", "
            "\"dietary_restrictions\": [], \"allergies\": [], \"favorite_cuisines\": [], "
            "\"taste\": {}, \"updated_at\": \"2026-01-10T09:50:00.000Z\"}}");
    wait_all();

    json_t *info = redis_json("user:info:u1");
    json_t *profile = json_object_get(info, "profile");
    json_t *prefs = json_object_get(info, "preferences");
    cr_assert_str_eq(sfield(profile, "displayName"), "Minji");
    cr_assert_str_eq(sfield(profile, "email"), "minji@example.com");
    cr_assert_eq(json_array_size(json_object_get(prefs, "dietaryRestrictions")), 2);
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(prefs,
                                                                      "dietaryRestrictions"), 0)),
                     "vegetarian", "option-list order");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(prefs, "taste"),
                                                    "spiciness")),
                 4);
    cr_assert_str_eq(sfield(prefs, "updatedAt"), "2026-01-10T09:10:00.000Z",
                     "the no-change set left updatedAt alone");
    cr_assert(json_integer_value(json_object_get(info, "version")) >= 3);
    json_decref(info);

    json_t *p = redis_json("user:preferences:u1");
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(p, "allergies"), 0)),
                     "peanut");
    json_decref(p);
    p = redis_json("user:profile:u1");
    cr_assert_str_eq(sfield(p, "displayName"), "Minji");
    json_decref(p);

    json_t *options = redis_json("preferences:options");
    cr_assert(json_array_size(json_object_get(options, "dietaryRestrictions")) >= 5);
    cr_assert_eq(json_array_size(json_object_get(json_object_get(options, "taste"), "keys")), 5);
    json_decref(options);

    char out[8192];
    redis(out, sizeof(out), "EXISTS %s", "user:profile:u2");
    cr_assert_str_eq(out, "0", "a deleted user's views are gone");
    redis(out, sizeof(out), "EXISTS %s", "user:info:u2");
    cr_assert_str_eq(out, "0");

    sql(out, sizeof(out),
        "SELECT user_id, display_name, deleted_at IS NOT NULL FROM users ORDER BY user_id");
    cr_assert_str_eq(out, "u1|Minji|f\nu2|daniel|t");
    sql(out, sizeof(out),
        "SELECT user_id, array_to_string(dietary_restrictions, ','), "
        "array_to_string(allergies, ','), taste->>'spiciness', updated_at = "
        "'2026-01-10T09:10:00Z' FROM user_preferences ORDER BY user_id");
    cr_assert_str_eq(out, "u1|vegetarian,halal|peanut|4|t", "u2's row went with u2");

    /* One output event: e2 changed something, e3 did not, e2's redelivery was dropped. */
    size_t n = 0;
    rd_kafka_message_t **msgs = ts_testpipe_read_topic(&tp, OUTPUT, &n);
    cr_assert_eq(n, 1, "one UserPreferenceUpdated, got %zu", n);
    cr_assert_eq(msgs[0]->key_len, 2);
    cr_assert(memcmp(msgs[0]->key, "u1", 2) == 0, "keyed by user_id");
    ts_schemas *schemas = NULL;
    char err[256];
    cr_assert_eq(ts_schemas_load(tp.topo->schemas_dir, &schemas, err, sizeof(err)), TS_OK, "%s",
                 err);
    ts_decoder *dec = ts_decoder_create(schemas, OUTPUT);
    avro_value_t *rec = NULL;
    const char *type = NULL;
    cr_assert_eq(ts_decoder_decode(dec, msgs[0]->payload, msgs[0]->len, &rec, &type, err,
                                   sizeof(err)),
                 TS_OK, "%s", err);
    cr_assert_str_eq(type, "UserPreferenceUpdated"); /* borrowed from the decoder */
    json_t *ev = ts_avro_to_json(rec);
    ts_decoder_destroy(dec);
    ts_schemas_destroy(schemas);
    ts_testpipe_records_free(msgs, n);
    cr_assert_str_eq(sfield(ev, "event_id"), "e2:preference-updated");
    cr_assert_str_eq(sfield(ev, "event_type"), "UserPreferenceUpdated");
    json_t *changes = json_object_get(ev, "changes");
    cr_assert_eq(json_array_size(changes), 4, "all four fields changed from empty");
    cr_assert_str_eq(sfield(json_array_get(changes, 3), "field"), "taste");
    cr_assert_eq(json_integer_value(json_object_get(
                     json_object_get(json_array_get(changes, 3), "after"), "spiciness")),
                 4);
    json_decref(ev);

    msgs = ts_testpipe_read_topic(&tp, TOPIC ".dlq", &n);
    cr_assert_eq(n, 3, "3 records in the DLQ, got %zu", n);
    int paleo = 0, ghost = 0, garbage = 0;
    for (size_t i = 0; i < n; i++) {
        char *error = ts_testpipe_header(msgs[i], "error");
        char *src = ts_testpipe_header(msgs[i], "source.topic");
        cr_assert_not_null(error);
        cr_assert_str_eq(src, TOPIC);
        paleo += strstr(error, "'paleo'") != NULL;
        ghost += strstr(error, "ghost is not registered") != NULL;
        garbage += msgs[i]->len == 8 && memcmp(msgs[i]->payload, "garbage!", 8) == 0;
        free(error);
        free(src);
    }
    ts_testpipe_records_free(msgs, n);
    cr_assert(paleo && ghost && garbage, "reasons: paleo %d, ghost %d, garbage %d", paleo, ghost,
              garbage);

    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0, "graceful stop exits 0");
}

Test(pipeline_user, registered_again_after_restart_and_delete) {
    produce("{\"UserRegistered\": {\"event_id\": \"r1\", \"user_id\": \"u9\", \"email\": "
            "\"sora@example.com\", \"registered_at\": \"2026-02-01T00:00:00.000Z\"}}");
    wait_all();
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0);

    /* While the runtime is down: a second registration (rejected: the state
     * survived the restart), a delete, and a fresh registration. */
    produce("{\"UserRegistered\": {\"event_id\": \"r2\", \"user_id\": \"u9\", \"email\": "
            "\"sora@example.com\", \"registered_at\": \"2026-02-02T00:00:00.000Z\"}}");
    produce("{\"UserDeleted\": {\"event_id\": \"r3\", \"user_id\": \"u9\", "
            "\"deleted_at\": \"2026-02-03T00:00:00.000Z\"}}");
    produce("{\"UserRegistered\": {\"event_id\": \"r4\", \"user_id\": \"u9\", \"email\": "
            "\"sora.new@example.com\", \"registered_at\": \"2026-02-04T00:00:00.000Z\"}}");
    cr_assert_eq(ts_testpipe_runtime_start(&tp), 0);
    wait_all();

    json_t *p = redis_json("user:profile:u9");
    cr_assert_str_eq(sfield(p, "email"), "sora.new@example.com");
    cr_assert_str_eq(sfield(p, "createdAt"), "2026-02-04T00:00:00.000Z");
    json_decref(p);
    char out[1024];
    sql(out, sizeof(out), "SELECT email, deleted_at IS NULL FROM users WHERE user_id = 'u9'");
    cr_assert_str_eq(out, "sora.new@example.com|t");

    size_t n = 0;
    rd_kafka_message_t **dlq = ts_testpipe_read_topic(&tp, TOPIC ".dlq", &n);
    cr_assert_eq(n, 1, "only r2 is rejected (got %zu)", n);
    char *error = ts_testpipe_header(dlq[0], "error");
    cr_assert(error && strstr(error, "already registered"), "reason: %s", error);
    free(error);
    ts_testpipe_records_free(dlq, n);
}
