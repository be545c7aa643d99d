/* ts_runtime_metrics.c - the runtime's metrics, health and readiness.
 *
 * The runtime owns a metrics registry and updates it only on the loop thread:
 * counters and histograms as batches and sink writes complete, per-partition
 * gauges rebuilt from the tasks once a second. With http_port set, that
 * second also renders the registry and readiness into a snapshot for the
 * HTTP thread (ts_http.h), which never sees a runtime object. */
#include "ts_runtime_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ts_kafka_sink.h"
#include "ts_log.h"
#include "ts_pg_sink.h"
#include "ts_redis_sink.h"

static const double ts_runtime_seconds_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                   0.25,  0.5,    1,     2.5,  5,     10,   30};
static const double ts_runtime_size_bounds[] = {1, 5, 10, 50, 100, 500, 1000, 2500, 5000, 10000};

static double ts_runtime_since(const struct timespec *start) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

ts_err ts_runtime_metrics_init(ts_runtime *rt) {
    ts_runtime_metrics *mx = &rt->mx;
    const char *tp[] = {"topic", "partition"}, *pp[] = {"processor", "partition"};
    const char *proc[] = {"processor"}, *sink[] = {"sink"}, *state[] = {"state"};
    const double *secs = ts_runtime_seconds_bounds, *size = ts_runtime_size_bounds;
    size_t n_secs = sizeof(ts_runtime_seconds_bounds) / sizeof(double);
    size_t n_size = sizeof(ts_runtime_size_bounds) / sizeof(double);
    ts_metrics *m = mx->reg = ts_metrics_create();
    if (!m)
        return TS_E_NOMEM;
#define TS_RT_DECLARE(field, type, name, help, labels, n, b, nb)                         \
    if (!(mx->field = ts_metrics_declare(m, type, name, help, labels, n, b, nb)))         \
        return TS_E_NOMEM;
    TS_RT_DECLARE(lag, TS_METRIC_GAUGE, "tastesync_consumer_lag",
                  "Records of the partition not yet acknowledged by every sink (end offset "
                  "minus committed offset).", tp, 2, NULL, 0)
    TS_RT_DECLARE(committed, TS_METRIC_GAUGE, "tastesync_committed_offset",
                  "Last committed offset of the partition: the next input offset, every "
                  "effect before it acknowledged by every sink.", tp, 2, NULL, 0)
    TS_RT_DECLARE(processed, TS_METRIC_COUNTER, "tastesync_events_processed_total",
                  "Input records processed in acknowledged batches (rejected ones included).",
                  proc, 1, NULL, 0)
    TS_RT_DECLARE(rejected, TS_METRIC_COUNTER, "tastesync_events_rejected_total",
                  "Input records sent to the dead-letter topic (undecodable or rejected).", proc,
                  1, NULL, 0)
    TS_RT_DECLARE(pauses, TS_METRIC_COUNTER, "tastesync_input_pauses_total",
                  "Times a partition stopped fetching because its task held 2 x "
                  "batch.max_events records or batch.max_buffered_bytes of them (backpressure).",
                  proc, 1, NULL, 0)
    TS_RT_DECLARE(dedup_bytes, TS_METRIC_GAUGE, "tastesync_dedup_filter_bytes",
                  "Memory of the in-memory filters of event ids already applied (2 bytes per "
                  "id; they answer the dedup lookup of a new id without RocksDB).",
                  proc, 1, NULL, 0)
    TS_RT_DECLARE(key_filter_bytes, TS_METRIC_GAUGE, "tastesync_key_filter_bytes",
                  "Memory of the in-memory filters of state keys (2 bytes per key; they answer "
                  "the read of a key never written without RocksDB).",
                  proc, 1, NULL, 0)
    TS_RT_DECLARE(batch_size, TS_METRIC_HISTOGRAM, "tastesync_batch_size",
                  "Input records per batch.", proc, 1, size, n_size)
    TS_RT_DECLARE(batch_seconds, TS_METRIC_HISTOGRAM, "tastesync_batch_duration_seconds",
                  "Time from a batch's start to the last sink's acknowledgement.", proc, 1, secs,
                  n_secs)
    TS_RT_DECLARE(input_wait, TS_METRIC_HISTOGRAM, "tastesync_input_wait_seconds",
                  "Time from a batch's first record's timestamp (its producer's clock) to the "
                  "batch's start: the producer's linger, the broker, the fetch and the wait "
                  "behind the partition's previous batch.",
                  proc, 1, secs, n_secs)
    TS_RT_DECLARE(sink_seconds, TS_METRIC_HISTOGRAM, "tastesync_sink_write_duration_seconds",
                  "Time from handing a batch to a sink to its acknowledgement (retries "
                  "included).", sink, 1, secs, n_secs)
    TS_RT_DECLARE(sink_errors, TS_METRIC_COUNTER, "tastesync_sink_errors_total",
                  "Failed sink attempts (connects, writes, deliveries), each retried.", sink, 1,
                  NULL, 0)
    TS_RT_DECLARE(sink_up, TS_METRIC_GAUGE, "tastesync_sink_up",
                  "1 when the sink is connected and not retrying, else 0.", sink, 1, NULL, 0)
    TS_RT_DECLARE(restored, TS_METRIC_GAUGE, "tastesync_restore_records_restored",
                  "Changelog records restored so far, per partition being restored.", pp, 2,
                  NULL, 0)
    TS_RT_DECLARE(to_restore, TS_METRIC_GAUGE, "tastesync_restore_records_to_restore",
                  "Changelog records to restore in all, per partition being restored.", pp, 2,
                  NULL, 0)
    TS_RT_DECLARE(fresh_event, TS_METRIC_GAUGE, "tastesync_view_newest_event_timestamp_seconds",
                  "Event time (record timestamp) of the newest input whose effects every sink "
                  "acknowledged.", pp, 2, NULL, 0)
    TS_RT_DECLARE(fresh_wall, TS_METRIC_GAUGE, "tastesync_view_newest_applied_timestamp_seconds",
                  "Wall time at which that newest input's effects were acknowledged.", pp, 2,
                  NULL, 0)
    TS_RT_DECLARE(tasks, TS_METRIC_GAUGE, "tastesync_partitions",
                  "Input partitions held by this instance, by state.", state, 1, NULL, 0)
    TS_RT_DECLARE(ready, TS_METRIC_GAUGE, "tastesync_ready",
                  "1 when every assigned partition is restored and running and every sink is "
                  "up (what /readyz answers), else 0.", NULL, 0, NULL, 0)
    TS_RT_DECLARE(started, TS_METRIC_GAUGE, "tastesync_start_time_seconds",
                  "Unix time the process started.", NULL, 0, NULL, 0)
#undef TS_RT_DECLARE
    /* Counters exist from the start, so a rate over the first events works. */
    ts_err rc = ts_metrics_set(mx->started, NULL, (double)rt->started_ms / 1000.0);
    for (size_t i = 0; rc == TS_OK && i < rt->n_procs; i++) {
        const char *name[] = {rt->procs[i].spec.name};
        rc = ts_metrics_add(mx->processed, name, 0);
        if (rc == TS_OK)
            rc = ts_metrics_add(mx->rejected, name, 0);
        if (rc == TS_OK)
            rc = ts_metrics_add(mx->pauses, name, 0);
    }
    return rc;
}

/* host.batched: a batch every sink acknowledged. */
void ts_runtime_batched(void *arg, ts_task *task, const ts_task_batch *batch) {
    ts_runtime *rt = arg;
    ts_runtime_proc *proc = ts_runtime_proc_for(rt, ts_task_topic(task));
    const char *name[] = {proc ? proc->spec.name : "?"};
    ts_metrics_add(rt->mx.processed, name, (double)batch->events);
    ts_metrics_add(rt->mx.rejected, name, (double)batch->rejected);
    ts_metrics_observe(rt->mx.batch_size, name, (double)batch->events);
    ts_metrics_observe(rt->mx.batch_seconds, name, batch->seconds);
    if (batch->input_wait_seconds >= 0)
        ts_metrics_observe(rt->mx.input_wait, name, batch->input_wait_seconds);
}

/* Tasks write through a wrapper of each sink that times every write from
 * its start to its `done`; everything else passes through to the sink. */
typedef struct ts_runtime_meter_write {
    ts_runtime_meter *meter;
    ts_sink_done_cb done;
    void *arg;
    struct timespec start;
} ts_runtime_meter_write;

static void ts_runtime_metered_done(void *arg, ts_err status) {
    ts_runtime_meter_write *w = arg;
    ts_runtime_meter *meter = w->meter;
    ts_sink_done_cb done = w->done;
    void *done_arg = w->arg;
    if (status == TS_OK) {
        const char *name[] = {meter->inner->ops->name};
        ts_metrics_observe(meter->rt->mx.sink_seconds, name, ts_runtime_since(&w->start));
    }
    free(w);
    done(done_arg, status);
}

static ts_err ts_runtime_metered_write(void *impl, const ts_flush *flush, ts_sink_done_cb done,
                                       void *arg) {
    ts_runtime_meter *meter = impl;
    ts_runtime_meter_write *w = malloc(sizeof(*w));
    if (!w)
        return TS_E_NOMEM;
    *w = (ts_runtime_meter_write){meter, done, arg, {0, 0}};
    clock_gettime(CLOCK_MONOTONIC, &w->start);
    ts_err rc = meter->inner->ops->write(meter->inner->impl, flush, ts_runtime_metered_done, w);
    if (rc != TS_OK)
        free(w); /* the sink never calls done after refusing */
    return rc;
}

static int ts_runtime_metered_healthy(void *impl) {
    ts_runtime_meter *meter = impl;
    return meter->inner->ops->healthy(meter->inner->impl);
}

static void ts_runtime_metered_close(void *impl, void (*closed)(void *arg), void *arg) {
    ts_runtime_meter *meter = impl;
    meter->inner->ops->close(meter->inner->impl, closed, arg);
}

/* Points rt->metered[i] at a wrapper of rt->sinks[i] (same name). */
void ts_runtime_meter_sinks(ts_runtime *rt) {
    for (size_t i = 0; i < rt->n_sinks; i++) {
        ts_runtime_meter *meter = &rt->meters[i];
        meter->rt = rt;
        meter->inner = &rt->sinks[i];
        meter->ops = (ts_sink_ops){
            .name = rt->sinks[i].ops->name,
            .write = ts_runtime_metered_write,
            .healthy = ts_runtime_metered_healthy,
            .close = ts_runtime_metered_close,
        };
        rt->metered[i] = (ts_sink){&meter->ops, meter};
    }
}

/* Whether the instance should receive traffic; `why` says why not. */
static int ts_runtime_readiness(const ts_runtime *rt, char *why, size_t len) {
    if (rt->stopping || rt->closing) {
        snprintf(why, len, "stopping");
        return 0;
    }
    if (rt->restores) {
        uint64_t done = 0, total = 0;
        ts_restore_progress(rt->restores->restore, &done, &total);
        snprintf(why, len, "restoring %s from its changelog (%" PRIu64 " of %" PRIu64 " records)",
                 rt->restores->task_id, done, total);
        return 0;
    }
    for (size_t i = 0; i < rt->n_sinks; i++) {
        if (!rt->sinks[i].ops->healthy(rt->sinks[i].impl)) {
            snprintf(why, len, "sink %s unreachable (retrying)", rt->sinks[i].ops->name);
            return 0;
        }
    }
    if (rt->n_tasks == 0) {
        snprintf(why, len, "no partition assigned yet");
        return 0;
    }
    snprintf(why, len, "ready");
    return 1;
}

/* Rebuilds the gauges of the current tasks and restores (per partition, and
 * the per-processor sums of the tasks' filters). */
static void ts_runtime_metrics_refresh(ts_runtime *rt, int ready) {
    ts_runtime_metrics *mx = &rt->mx;
    ts_metric *rebuilt[] = {mx->lag,        mx->committed,   mx->restored,
                            mx->to_restore, mx->fresh_event, mx->fresh_wall,
                            mx->dedup_bytes, mx->key_filter_bytes};
    for (size_t i = 0; i < sizeof(rebuilt) / sizeof(rebuilt[0]); i++)
        ts_metrics_reset(rebuilt[i]);
    size_t running = 0, revoking = 0, restoring = 0;
    for (size_t i = 0; i < rt->n_tasks; i++) {
        ts_task *task = rt->tasks[i];
        const char *topic = ts_task_topic(task);
        ts_runtime_proc *proc = ts_runtime_proc_for(rt, topic);
        char part[16];
        snprintf(part, sizeof(part), "%" PRId32, ts_task_partition(task));
        const char *tp[] = {topic, part}, *pp[] = {proc ? proc->spec.name : "?", part};
        if (ts_task_revoked(task)) {
            revoking++;
            continue;
        }
        running++;
        const char *proc_name[] = {pp[0]}; /* summed over the processor's tasks */
        ts_metrics_add(mx->dedup_bytes, proc_name, (double)ts_task_dedup_bytes(task));
        ts_metrics_add(mx->key_filter_bytes, proc_name, (double)ts_task_key_filter_bytes(task));
        int64_t acked = ts_task_acked(task), end = -1, event_ms, acked_ms;
        if (acked >= 0)
            ts_metrics_set(mx->committed, tp, (double)acked);
        if (rt->source && ts_source_end(rt->source, topic, ts_task_partition(task), &end) == 0 &&
            end >= 0)
            ts_metrics_set(mx->lag, tp, (double)(end > acked ? end - (acked < 0 ? 0 : acked) : 0));
        ts_task_freshness(task, &event_ms, &acked_ms);
        if (event_ms > 0)
            ts_metrics_set(mx->fresh_event, pp, (double)event_ms / 1000.0);
        if (acked_ms > 0)
            ts_metrics_set(mx->fresh_wall, pp, (double)acked_ms / 1000.0);
    }
    for (ts_runtime_restore *rr = rt->restores; rr; rr = rr->next) {
        uint64_t done = 0, total = 0;
        char part[16];
        snprintf(part, sizeof(part), "%" PRId32, rr->partition);
        const char *pp[] = {rr->proc->spec.name, part};
        ts_restore_progress(rr->restore, &done, &total);
        ts_metrics_set(mx->restored, pp, (double)done);
        ts_metrics_set(mx->to_restore, pp, (double)total);
        restoring++;
    }
    ts_metrics_set(mx->tasks, (const char *[]){"running"}, (double)running);
    ts_metrics_set(mx->tasks, (const char *[]){"restoring"}, (double)restoring);
    ts_metrics_set(mx->tasks, (const char *[]){"revoking"}, (double)revoking);
    /* sinks[] is redis, postgres, kafka (ts_runtime_start_sinks). */
    uint64_t (*const errors[])(const ts_sink *) = {ts_redis_sink_errors, ts_pg_sink_errors,
                                                   ts_kafka_sink_errors};
    for (size_t i = 0; i < rt->n_sinks && i < 3; i++) {
        const char *name[] = {rt->sinks[i].ops->name};
        ts_metrics_set(mx->sink_errors, name, (double)errors[i](&rt->sinks[i]));
        ts_metrics_set(mx->sink_up, name, rt->sinks[i].ops->healthy(rt->sinks[i].impl) ? 1 : 0);
    }
    ts_metrics_set(mx->ready, NULL, ready ? 1 : 0);
}

/* Hands the HTTP thread a new snapshot (once a second, loop thread). */
void ts_runtime_publish_http(ts_runtime *rt) {
    if (!rt->http)
        return;
    char why[256];
    int ready = ts_runtime_readiness(rt, why, sizeof(why));
    ts_runtime_metrics_refresh(rt, ready);
    size_t len = 0;
    char *text = ts_metrics_render(rt->mx.reg, &len);
    /* Out of memory: keep serving the previous text; health still advances. */
    ts_http_publish(rt->http, text, len, ready, why);
}

/* Serves /metrics, /healthz and /readyz when http_port is set. */
ts_err ts_runtime_start_http(ts_runtime *rt, char *err, size_t errlen) {
    if (rt->topo->http_port == 0)
        return TS_OK;
    ts_err rc = ts_http_create(NULL, rt->topo->http_port, 0, &rt->http, err, errlen);
    if (rc != TS_OK)
        return rc;
    ts_log_info("runtime", "serving /metrics, /healthz and /readyz on port %d",
                ts_http_port(rt->http));
    ts_runtime_publish_http(rt);
    return TS_OK;
}

/* The instance's status document, published every second to Redis as
 * ts:status:<group>:<instance> (expiring with its writer), read by
 * `tastesync status`. */
void ts_runtime_publish_status(ts_runtime *rt) {
    json_t *doc = json_object(), *tasks = json_array();
    json_object_set_new(doc, "instance", json_string(rt->instance));
    json_object_set_new(doc, "pid", json_integer(getpid()));
    json_object_set_new(doc, "startedAt", json_integer(rt->started_ms));
    json_object_set_new(doc, "updatedAt", json_integer(ts_runtime_wall_ms()));
    json_object_set_new(doc, "stopping", json_boolean(rt->stopping));
    if (rt->http)
        json_object_set_new(doc, "httpPort", json_integer(ts_http_port(rt->http)));
    for (size_t i = 0; i < rt->n_tasks; i++) {
        ts_task *task = rt->tasks[i];
        int64_t end = -1, event_ms, acked_ms;
        if (rt->source)
            ts_source_end(rt->source, ts_task_topic(task), ts_task_partition(task), &end);
        ts_task_freshness(task, &event_ms, &acked_ms);
        int64_t acked = ts_task_acked(task);
        json_t *t = json_object();
        json_object_set_new(t, "task", json_string(ts_task_id(task)));
        json_object_set_new(t, "topic", json_string(ts_task_topic(task)));
        json_object_set_new(t, "partition", json_integer(ts_task_partition(task)));
        json_object_set_new(t, "state", json_string(ts_task_revoked(task) ? "revoking" : "running"));
        json_object_set_new(t, "position", json_integer(ts_task_position(task)));
        json_object_set_new(t, "acked", json_integer(acked));
        json_object_set_new(t, "end", json_integer(end));
        json_object_set_new(t, "lag", end < 0 ? json_null()
                                              : json_integer(end - (acked < 0 ? 0 : acked)));
        json_object_set_new(t, "lastCommitAt", acked_ms ? json_integer(acked_ms) : json_null());
        json_object_set_new(t, "newestEventAt", event_ms ? json_integer(event_ms) : json_null());
        json_array_append_new(tasks, t);
    }
    for (ts_runtime_restore *rr = rt->restores; rr; rr = rr->next) {
        uint64_t done, total;
        ts_restore_progress(rr->restore, &done, &total);
        json_t *t = json_object();
        json_object_set_new(t, "task", json_string(rr->task_id));
        json_object_set_new(t, "topic", json_string(rr->proc->spec.topic));
        json_object_set_new(t, "partition", json_integer(rr->partition));
        json_object_set_new(t, "state", json_string("restoring"));
        json_object_set_new(t, "restored", json_integer((json_int_t)done));
        json_object_set_new(t, "toRestore", json_integer((json_int_t)total));
        json_array_append_new(tasks, t);
    }
    json_object_set_new(doc, "tasks", tasks);
    char *text = json_dumps(doc, JSON_COMPACT);
    char key[512];
    snprintf(key, sizeof(key), "ts:status:%s:%s", rt->topo->group, rt->instance);
    if (text && rt->n_sinks > 0)
        ts_redis_sink_publish(&rt->sinks[0], key, text, 5);
    free(text);
    json_decref(doc);
}
