/* ts_modelrun.c - model stream through a pipeline, and the check (see ts_modelrun.h). */
#include "ts_modelrun.h"

#include <stdio.h>
#include <stdlib.h>

static const char *const ts_modelrun_inputs[] = {"storybook.events", "user.events",
                                                 "inventory.events", "beacon.detections"};

int ts_modelrun_produce(ts_testpipe *tp, const ts_model_stream *s, size_t from, size_t to) {
    if (to > s->n)
        to = s->n;
    if (from >= to)
        return 0;
    size_t n = to - from;
    const char **topics = calloc(n, sizeof(*topics));
    char **jsons = calloc(n, sizeof(*jsons));
    int rc = topics && jsons ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        topics[i] = s->ev[from + i].topic;
        jsons[i] = json_dumps(s->ev[from + i].json, JSON_COMPACT);
    }
    if (rc == 0)
        rc = ts_testpipe_produce_json_batch(tp, topics, (const char *const *)jsons, n);
    for (size_t i = 0; jsons && i < n; i++)
        free(jsons[i]);
    free(jsons);
    free(topics);
    return rc;
}

int ts_modelrun_wait(ts_testpipe *tp, unsigned families, double seconds) {
    for (size_t i = 0; i < 4; i++) {
        if ((families & (1u << i)) &&
            ts_testpipe_wait_committed(tp, ts_modelrun_inputs[i], seconds) != 0) {
            fprintf(stderr, "modelrun: %s not committed in %.0f s\n", ts_modelrun_inputs[i],
                    seconds);
            return -1;
        }
    }
    /* The beacon family's later stages read what the first one emits. */
    const char *downstream[] = {"customer-events", "beacon.store-visits"};
    for (size_t i = 0; (families & TS_MODEL_BEACON) && i < 2; i++) {
        if (ts_testpipe_wait_committed(tp, downstream[i], seconds) != 0) {
            fprintf(stderr, "modelrun: %s not committed in %.0f s\n", downstream[i], seconds);
            return -1;
        }
    }
    return 0;
}

static void ts_modelrun_read(ts_testpipe *tp, json_t *into, const char *topic,
                             const char *subject) {
    size_t n = 0;
    rd_kafka_message_t **msgs = ts_testpipe_read_topic(tp, topic, &n);
    json_object_set_new(into, topic,
                        ts_model_decode_records(tp->topo->schemas_dir, subject, msgs, n));
    ts_testpipe_records_free(msgs, n);
}

size_t ts_modelrun_compare(ts_testpipe *tp, ts_model *m, unsigned families, const char *label) {
    const json_t *exp = ts_model_expected(m);
    char err[512];
    json_t *redis = ts_model_read_redis(tp->redis.url, err, sizeof(err));
    json_t *pg = redis ? ts_model_read_pg(tp->pg, exp, err, sizeof(err)) : NULL;
    if (!redis || !pg) {
        fprintf(stderr, "%s: cannot read the outcome: %s\n", label, err);
        json_decref(redis);
        return (size_t)-1;
    }
    json_t *topics = json_object();
    for (size_t i = 0; i < 4; i++) {
        if (!(families & (1u << i)))
            continue;
        char dlq[128];
        snprintf(dlq, sizeof(dlq), "%s.dlq", ts_modelrun_inputs[i]);
        ts_modelrun_read(tp, topics, ts_modelrun_inputs[i], ts_modelrun_inputs[i]);
        ts_modelrun_read(tp, topics, dlq, ts_modelrun_inputs[i]);
    }
    const char *out;
    json_t *unused;
    json_object_foreach(json_object_get(exp, "outputs"), out, unused)
        ts_modelrun_read(tp, topics, out, out);
    /* Views of families left out of this run are not the model's business. */
    const char *ignore[2] = {NULL, NULL};
    if (!(families & TS_MODEL_USER))
        ignore[0] = "preferences:options";
    ts_model_counts c;
    size_t diffs = ts_model_compare(exp, redis, pg, topics, ignore, stderr, 20, &c);
    fprintf(stderr,
            "%s: compared %zu views, %zu rows, %zu output events, %zu dlq records: %zu "
            "differences\n",
            label, c.views, c.rows, c.outputs, c.dlq, diffs);
    json_decref(topics);
    json_decref(pg);
    json_decref(redis);
    return diffs;
}
