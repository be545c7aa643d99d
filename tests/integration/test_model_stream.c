/* test_model_stream.c - a long mixed stream of all four families through the
 * whole pipeline gives exactly the views, rows, output events and DLQ records
 * of an independent model of the contract (tests/support/ts_model.h).
 *
 * Size and seed come from env TS_MODEL_EVENTS (default 100000) and
 * TS_MODEL_SEED (default 42); TS_MODEL_FAMILIES (bit set: 1 storybook, 2 user,
 * 4 inventory, 8 beacon; default 15) narrows it while a family is worked on. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ts_model.h"
#include "ts_testpipe.h"

static ts_testpipe tp;

static void setup(void) { cr_assert_eq(ts_testpipe_start(&tp), 0, "pipeline did not start"); }

static void teardown(void) {
    if (tp.pid > 0)
        ts_testpipe_runtime_stop(&tp, SIGKILL);
    ts_testpipe_stop(&tp);
}

TestSuite(model_stream, .init = setup, .fini = teardown, .timeout = 1200);

static unsigned long env_num(const char *name, unsigned long def) {
    const char *v = getenv(name);
    return v && *v ? strtoul(v, NULL, 0) : def;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads `topic` back and decodes it with `subject` into topics[topic]. */
static void read_topic(json_t *topics, const char *topic, const char *subject) {
    size_t n = 0;
    rd_kafka_message_t **msgs = ts_testpipe_read_topic(&tp, topic, &n);
    json_object_set_new(topics, topic,
                        ts_model_decode_records(tp.topo->schemas_dir, subject, msgs, n));
    ts_testpipe_records_free(msgs, n);
}

Test(model_stream, mixed_stream_matches_the_model) {
    size_t n = env_num("TS_MODEL_EVENTS", 100000);
    uint64_t seed = env_num("TS_MODEL_SEED", 42);
    unsigned families = (unsigned)env_num("TS_MODEL_FAMILIES", TS_MODEL_ALL);
    double t0 = now_s();

    ts_model_stream *s = ts_model_stream_generate(seed, n, families);
    ts_model *m = ts_model_create(tp.topo, families);
    cr_assert_not_null(m);
    ts_model_apply_stream(m, s);
    const json_t *exp = ts_model_expected(m);

    const char **topics = calloc(s->n, sizeof(*topics));
    char **jsons = calloc(s->n, sizeof(*jsons));
    for (size_t i = 0; i < s->n; i++) {
        topics[i] = s->ev[i].topic;
        jsons[i] = json_dumps(s->ev[i].json, JSON_COMPACT);
    }
    cr_assert_eq(ts_testpipe_produce_json_batch(&tp, topics, (const char *const *)jsons, s->n), 0,
                 "produce");
    for (size_t i = 0; i < s->n; i++)
        free(jsons[i]);
    free(jsons);
    free(topics);
    double t1 = now_s();

    /* Input topics, then the second stage of the beacon family. */
    const char *inputs[] = {"storybook.events", "user.events", "inventory.events",
                            "beacon.detections"};
    for (size_t i = 0; i < 4; i++)
        if (families & (1u << i))
            cr_assert_eq(ts_testpipe_wait_committed(&tp, inputs[i], 240), 0,
                         "%s not committed; see %s", inputs[i], tp.log);
    if (families & TS_MODEL_BEACON) {
        cr_assert_eq(ts_testpipe_wait_committed(&tp, "customer-events", 120), 0,
                     "customer-events not committed; see %s", tp.log);
        cr_assert_eq(ts_testpipe_wait_committed(&tp, "beacon.store-visits", 120), 0,
                     "beacon.store-visits not committed; see %s", tp.log);
    }
    double t2 = now_s();

    char err[512];
    json_t *redis = ts_model_read_redis(tp.redis.url, err, sizeof(err));
    cr_assert_not_null(redis, "redis: %s", err);
    json_t *pg = ts_model_read_pg(tp.pg, exp, err, sizeof(err));
    cr_assert_not_null(pg, "postgres: %s", err);
    json_t *read = json_object();
    for (size_t i = 0; i < 4; i++) {
        if (!(families & (1u << i)))
            continue;
        char dlq[128];
        snprintf(dlq, sizeof(dlq), "%s.dlq", inputs[i]);
        read_topic(read, inputs[i], inputs[i]);
        read_topic(read, dlq, inputs[i]);
    }
    const char *out;
    json_t *unused;
    json_object_foreach(json_object_get(exp, "outputs"), out, unused) read_topic(read, out, out);

    /* Views of families left out of this run are not the model's business. */
    const char *ignore[8];
    size_t ni = 0;
    if (!(families & TS_MODEL_USER))
        ignore[ni++] = "preferences:options";
    ignore[ni] = NULL;
    ts_model_counts c;
    size_t diffs = ts_model_compare(exp, redis, pg, read, ignore, stderr, 20, &c);
    fprintf(stderr,
            "model stream: %zu events (seed %llu, families 0x%x): compared %zu views, %zu rows, "
            "%zu output events, %zu dlq records: %zu differences "
            "(produce %.1f s, process %.1f s, compare %.1f s)\n",
            s->n, (unsigned long long)seed, families, c.views, c.rows, c.outputs, c.dlq, diffs,
            t1 - t0, t2 - t1, now_s() - t2);
    if (getenv("TS_MODEL_DUMP")) {
        FILE *f = fopen(getenv("TS_MODEL_DUMP"), "w");
        if (f) {
            json_dumpf(exp, f, JSON_INDENT(1) | JSON_SORT_KEYS);
            fclose(f);
        }
    }
    json_decref(read);
    json_decref(pg);
    json_decref(redis);
    ts_model_destroy(m);
    ts_model_stream_destroy(s);
    cr_assert_eq(diffs, 0, "%zu differences with the model (first ones above)", diffs);
}
