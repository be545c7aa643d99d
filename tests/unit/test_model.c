/* test_model.c - the test model itself (tests/support/ts_model.h): the
 * generator is deterministic, and the comparison sees every kind of difference
 * (a test oracle that never fails proves nothing). No servers. */
#include <criterion/criterion.h>
#include <string.h>

#include "ts_model.h"

static ts_topology *topo;

static void setup(void) {
    char err[512];
    cr_assert_eq(ts_topology_load(TS_SOURCE_DIR "/topology.yaml", &topo, err, sizeof(err)), TS_OK,
                 "%s", err);
}

static void teardown(void) { ts_topology_destroy(topo); }

TestSuite(model, .init = setup, .fini = teardown);

Test(model, same_seed_same_stream_other_seed_other_stream) {
    ts_model_stream *a = ts_model_stream_generate(7, 3000, TS_MODEL_ALL);
    ts_model_stream *b = ts_model_stream_generate(7, 3000, TS_MODEL_ALL);
    ts_model_stream *c = ts_model_stream_generate(8, 3000, TS_MODEL_ALL);
    cr_assert_eq(a->n, 3000);
    cr_assert_eq(b->n, 3000);
    int differ = 0;
    for (size_t i = 0; i < a->n; i++) {
        cr_assert_str_eq(a->ev[i].topic, b->ev[i].topic);
        cr_assert(json_equal(a->ev[i].json, b->ev[i].json), "event %zu differs", i);
        differ |= !json_equal(a->ev[i].json, c->ev[i].json);
    }
    cr_assert(differ);
    ts_model_stream_destroy(a);
    ts_model_stream_destroy(b);
    ts_model_stream_destroy(c);
}

Test(model, stream_mixes_families_and_redeliveries) {
    ts_model_stream *s = ts_model_stream_generate(42, 5000, TS_MODEL_ALL);
    size_t per[4] = {0}, redelivered = 0;
    const char *topics[] = {"storybook.events", "user.events", "inventory.events",
                            "beacon.detections"};
    json_t *ids = json_object();
    for (size_t i = 0; i < s->n; i++) {
        for (int f = 0; f < 4; f++)
            per[f] += strcmp(s->ev[i].topic, topics[f]) == 0;
        if (json_object_get(ids, s->ev[i].event_id))
            redelivered++;
        json_object_set_new(ids, s->ev[i].event_id, json_true());
    }
    json_decref(ids);
    for (int f = 0; f < 4; f++)
        cr_assert(per[f] > 1000, "%s: %zu events", topics[f], per[f]);
    cr_assert(redelivered > 10 && redelivered < 200, "%zu redeliveries", redelivered);
    ts_model_stream_destroy(s);
}

/* The model's own expectation, seen as the sinks would hold it, compares
 * equal; then each kind of damage is reported. */
Test(model, comparison_reports_each_kind_of_difference) {
    ts_model_stream *s = ts_model_stream_generate(42, 3000, TS_MODEL_STORYBOOK | TS_MODEL_USER |
                                                                TS_MODEL_INVENTORY);
    ts_model *m = ts_model_create(topo, TS_MODEL_STORYBOOK | TS_MODEL_USER | TS_MODEL_INVENTORY);
    ts_model_apply_stream(m, s);
    const json_t *exp = ts_model_expected(m);

    /* Build "actual" sinks from the expectation. */
    json_t *redis = json_object(), *pg = json_object(), *topics = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(exp, "views"), k, v) {
        json_t *a = json_pack("{s:O,s:O}", "kind", json_object_get(v, "kind"), "value",
                              json_object_get(v, "value"));
        if (strcmp(json_string_value(json_object_get(v, "kind")), "json") == 0 &&
            json_is_object(json_object_get(a, "value"))) {
            json_t *copy = json_deep_copy(json_object_get(a, "value"));
            json_object_set_new(copy, "version", json_integer(-1));
            json_object_set_new(a, "value", copy);
        }
        json_object_set_new(redis, k, a);
    }
    json_object_foreach(json_object_get(exp, "rows"), k, v) {
        json_t *rows = json_array();
        const char *pk;
        json_t *row;
        json_object_foreach(v, pk, row) json_array_append(rows, row);
        json_object_set_new(pg, k, rows);
    }
    json_object_foreach(json_object_get(exp, "outputs"), k, v) {
        json_t *recs = json_array();
        const char *id;
        json_t *o;
        json_object_foreach(v, id, o) json_array_append(recs, o);
        json_object_set_new(topics, k, recs);
    }
    json_object_foreach(json_object_get(exp, "dlq"), k, v) {
        char dlq[128];
        snprintf(dlq, sizeof(dlq), "%s.dlq", k);
        json_t *recs = json_array();
        const char *id;
        json_t *o;
        json_object_foreach(v, id, o)
            json_array_append_new(recs, json_pack("{s:{s:s}}", "value", "event_id", id));
        json_object_set_new(topics, dlq, recs);
    }
    ts_model_counts c;
    /* Versions: without input topics only ">= 0" can be checked, and -1 fails
     * it except for preferences:options (fixed -1). */
    size_t base = ts_model_compare(exp, redis, pg, topics, NULL, NULL, 0, &c);
    cr_assert(c.views > 100 && c.rows > 100 && c.outputs > 100 && c.dlq > 10);
    cr_assert_gt(base, 100, "a version of -1 is reported: %zu", base);
    json_object_foreach(redis, k, v) {
        json_t *val = json_object_get(v, "value");
        if (json_is_object(val) && json_object_get(val, "version") &&
            strcmp(k, "preferences:options") != 0)
            json_object_set_new(val, "version", json_integer(0));
    }
    cr_assert_eq(ts_model_compare(exp, redis, pg, topics, NULL, stderr, 3, &c), 0,
                 "the expectation itself compares equal");

    json_object_set_new(redis, "stray:key", json_pack("{s:s,s:s}", "kind", "str", "value", "x"));
    cr_assert_eq(ts_model_compare(exp, redis, pg, topics, NULL, NULL, 0, &c), 1, "extra view");
    const char *ignore[] = {"stray:", NULL};
    cr_assert_eq(ts_model_compare(exp, redis, pg, topics, ignore, NULL, 0, &c), 0, "ignored");

    json_t *stock = NULL;
    json_object_foreach(redis, k, v) if (!stock && strncmp(k, "stock:", 6) == 0) stock = v;
    json_object_set_new(stock, "value", json_string("-1"));
    cr_assert_eq(ts_model_compare(exp, redis, pg, topics, ignore, NULL, 0, &c), 1, "wrong stock");

    json_array_remove(json_object_get(pg, "purchases"), 0);
    json_array_remove(json_object_get(topics, "purchase.results"), 0);
    json_array_remove(json_object_get(topics, "user.events.dlq"), 0);
    size_t d = ts_model_compare(exp, redis, pg, topics, ignore, NULL, 0, &c);
    cr_assert_eq(d, 4, "wrong stock, missing row, output event and dlq record: %zu", d);

    json_decref(redis);
    json_decref(pg);
    json_decref(topics);
    ts_model_destroy(m);
    ts_model_stream_destroy(s);
}
