/* ts_runtime_int.h - the runtime's own parts, shared by its files and no one
 * else: ts_runtime.c (the process: create, run and destroy; the stack,
 * processors, outputs and sinks), ts_runtime_assign.c (the tasks and the
 * partitions the source assigns them: restores, revocations, the task host's
 * callbacks), ts_runtime_views.c (the start-time views, and views found
 * missing written again), ts_runtime_stop.c (the tick and stopping) and
 * ts_runtime_metrics.c (metrics, health and readiness). The API is
 * ts_runtime.h; the functions here named ts_runtime__ are shared only among
 * these files (the older ones below keep a single underscore).
 *
 * Threading: the loop thread, like the runtime.
 */
#ifndef TS_RUNTIME_INT_H
#define TS_RUNTIME_INT_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "ts_avro.h"
#include "ts_cluster.h"
#include "ts_http.h"
#include "ts_metrics.h"
#include "ts_restore.h"
#include "ts_runtime.h"
#include "ts_servers.h"
#include "ts_sink.h"
#include "ts_source.h"
#include "ts_state.h"
#include "ts_task.h"

/* The tick's period (ts_runtime_stop.c). */
#define TS_RUNTIME_TICK_MS 50

typedef struct ts_runtime_proc {
    const ts_processor_conf *conf;
    ts_task_spec spec;
    char *dlq_topic;
    char *changelog_topic; /* <group>-<processor>-changelog */
} ts_runtime_proc;

/* A partition whose state is being restored before its task starts. */
typedef struct ts_runtime_restore {
    ts_runtime *rt;
    ts_runtime_proc *proc;
    int32_t partition;
    char task_id[160];
    ts_restore *restore;
    int revoked;
    struct ts_runtime_restore *next;
} ts_runtime_restore;

/* The views a processor declares at start (ts_processor_def.setup), on their
 * way to the view sink. */
typedef struct ts_runtime_setup {
    ts_runtime *rt;
    char task_id[128];
    ts_effects *effs;
    ts_flush flush;
    int in_flight;
} ts_runtime_setup;

/* The metrics the runtime keeps (ts_runtime_metrics.c). */
typedef struct ts_runtime_metrics {
    ts_metrics *reg;
    ts_metric *lag, *committed, *processed, *rejected, *pauses, *batch_size, *batch_seconds,
        *input_wait, *dedup_bytes, *key_filter_bytes;
    ts_metric *sink_seconds, *sink_errors, *sink_up, *restored, *to_restore;
    ts_metric *fresh_event, *fresh_wall, *tasks, *ready, *started;
} ts_runtime_metrics;

/* A sink as tasks see it: the runtime's sink behind a timing wrapper. */
typedef struct ts_runtime_meter {
    ts_runtime *rt;
    ts_sink *inner;
    ts_sink_ops ops;
} ts_runtime_meter;

/* An output topic and its schema subject, proven encodable at start. */
typedef struct ts_runtime_output {
    const char *topic;
    const char *schema;
} ts_runtime_output;

struct ts_runtime {
    const ts_topology *topo;
    uv_loop_t loop;
    int loop_ready;

    ts_cluster *cluster;
    ts_servers *servers;
    char *brokers, *redis_url, *pg_conninfo;

    ts_schemas *schemas;
    ts_state *state;
    ts_runtime_proc *procs;
    size_t n_procs;
    ts_runtime_setup *setups; /* one per processor */
    ts_runtime_output *outputs;
    size_t n_outputs;

    ts_sink sinks[3];
    size_t n_sinks, sinks_open;
    ts_runtime_meter meters[3];
    ts_sink metered[3]; /* what tasks write to: sinks[] behind meters[] */
    ts_source *source;
    ts_task_host host;

    ts_task **tasks;
    size_t n_tasks, cap_tasks;
    ts_runtime_restore *restores;

    uv_idle_t work;
    size_t next_run;   /* where ts_runtime_on_work starts */
    unsigned deciding; /* batches on the pool now (ts_task_host.deciding) */
    uv_timer_t tick;
    uv_signal_t sigint, sigterm;
    int handles_ready;
    int stopping, closing;
    char instance[128];  /* TASTESYNC_INSTANCE_ID, or host-pid */
    int64_t started_ms;
    unsigned ticks;
    unsigned owner_seq;
    json_t *source_config; /* kafka.config, plus group.instance.id when set */
    ts_err exit_err;
    ts_runtime_metrics mx;
    ts_http *http; /* NULL unless http_port is set */
};

/* ---- ts_runtime.c --------------------------------------------------------- */

/** The processor reading `topic`, or NULL. */
ts_runtime_proc *ts_runtime_proc_for(ts_runtime *rt, const char *topic);
/** Wall-clock milliseconds since the epoch. */
int64_t ts_runtime_wall_ms(void);

/* ---- ts_runtime_assign.c -------------------------------------------------- */

/** The task of (topic, partition), or NULL. */
ts_task *ts_runtime__task_find(const ts_runtime *rt, const char *topic, int32_t partition);
/** Destroys rt->tasks[i] and takes it out of the list. */
void ts_runtime__task_remove(ts_runtime *rt, size_t i);
/** ts_task_host.schedule: runs the ready tasks from the idle handle `work`. */
void ts_runtime__schedule(void *arg, ts_task *task);
/** ts_task_host.pause: pauses or resumes the task's partition at the source. */
void ts_runtime__pause(void *arg, ts_task *task, int pause);
/** ts_task_host.seek: sends the source back to `offset` of the task's partition. */
void ts_runtime__seek(void *arg, ts_task *task, int64_t offset);
/** ts_task_host.commit: stores the task's next offset at the source. */
void ts_runtime__commit(void *arg, ts_task *task, int64_t next_offset);
/** ts_task_host.failed: logs the task's failure and stops the runtime. */
void ts_runtime__task_failed(void *arg, ts_task *task, ts_err err);
/** Creates the source, subscribed to every processor's input topic. */
ts_err ts_runtime__start_source(ts_runtime *rt, char *err, size_t errlen);

/* ---- ts_runtime_views.c --------------------------------------------------- */

/** Runs every processor's setup and sends its views to the view sink. */
ts_err ts_runtime__setup_views(ts_runtime *rt, char *err, size_t errlen);
/** The view sink's report of the tasks whose views Redis holds whole
 * (ts_redis_sink_watch): the missing ones are written again. */
void ts_runtime__views_present(void *arg, const char *const *fields, size_t n);
/** ts_task_host.rebuilt: marks the task's views whole again. */
void ts_runtime__rebuilt(void *arg, ts_task *task, size_t n_views);

/* ---- ts_runtime_stop.c ---------------------------------------------------- */

/** Leaves the group, closes the sinks and every handle of the runtime. Safe to
 * call twice, and on a runtime whose create failed half-way. */
void ts_runtime__close_all(ts_runtime *rt);
/** The tick (`tick`, every TS_RUNTIME_TICK_MS). */
void ts_runtime__on_tick(uv_timer_t *timer);
/** SIGINT and SIGTERM: stops the runtime. */
void ts_runtime__on_signal(uv_signal_t *sig, int signum);

/* ---- ts_runtime_metrics.c ------------------------------------------------- */

/** Creates the registry and every metric. @returns TS_OK or TS_E_NOMEM. */
ts_err ts_runtime_metrics_init(ts_runtime *rt);
/** ts_task_host.batched: counts a decided batch. */
void ts_runtime_batched(void *arg, ts_task *task, const ts_task_batch *batch);
/** Puts every sink behind a timing wrapper (rt->metered, what tasks write to). */
void ts_runtime_meter_sinks(ts_runtime *rt);
/** Starts the HTTP endpoint when http_port is set. */
ts_err ts_runtime_start_http(ts_runtime *rt, char *err, size_t errlen);
/** Renders the metrics and readiness for the HTTP endpoint (once a second). */
void ts_runtime_publish_http(ts_runtime *rt);
/** Writes the status file of `tastesync status` (once a second). */
void ts_runtime_publish_status(ts_runtime *rt);

#endif
