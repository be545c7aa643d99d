/* ts_runtime.c - the process: embedded stack, source, tasks, sinks, one loop.
 *
 * The loop's phases, in the order a record meets them:
 *   poll    the source's pipe turns readable; records go to their task's buffer;
 *   idle    `work` runs one batch of every ready task (then stops itself);
 *   poll    the sinks' sockets; acknowledgements complete flushes, which
 *           commit offsets and make tasks ready again;
 *   timer   `tick` frees revoked tasks and drives a graceful stop.
 * Stopping: no new batch starts; once no flush is in flight the group is left,
 * the sinks are closed, and every handle closes, which ends uv_run.
 *
 * This file creates the process (the embedded cluster or the configured one,
 * the servers, migrations, processors and their outputs, the state, the
 * sinks), runs its loop and destroys it. The tasks and the partitions the
 * source assigns them are in ts_runtime_assign.c, the views the runtime
 * writes itself in ts_runtime_views.c, the tick and stopping in
 * ts_runtime_stop.c, metrics, health and readiness in ts_runtime_metrics.c;
 * the types the files share in ts_runtime_int.h.
 */
#include "ts_runtime_int.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ts_avro.h"
#include "ts_cluster.h"
#include "ts_http.h"
#include "ts_kafka_sink.h"
#include "ts_kconf.h"
#include "ts_log.h"
#include "ts_metrics.h"
#include "ts_migrate.h"
#include "ts_pg_sink.h"
#include "ts_redis_sink.h"
#include "ts_servers.h"
#include "ts_source.h"
#include "ts_state.h"
#include "ts_task.h"

/* ---- small helpers -------------------------------------------------------------- */

static int ts_runtime_mkdirs(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static int ts_runtime_rm_entry(const char *path, const struct stat *sb, int flag,
                               struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void ts_runtime_rmtree(const char *path) {
    nftw(path, ts_runtime_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char *ts_runtime_join(const char *dir, const char *name) {
    size_t len = strlen(dir) + strlen(name) + 2;
    char *path = malloc(len);
    if (path)
        snprintf(path, len, "%s/%s", dir, name);
    return path;
}

static int ts_runtime_empty(const char *s) { return !s || !*s; }

int64_t ts_runtime_wall_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* One large batch decided at a time per core (small ones never wait, see
 * ts_task.c). The pool has 4 threads (restores and assignment checks, which
 * mostly wait, need them too); 4 decides on 2 cores only took turns on the
 * cores, and RocksDB's writers spin while another writes. On the 300k
 * benchmark stream, 2 cores: +12-15% events/s, 28-32 instead of 34-37 us of
 * runtime CPU per event. */
static unsigned ts_runtime_decide_slots(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

ts_runtime_proc *ts_runtime_proc_for(ts_runtime *rt, const char *topic) {
    for (size_t i = 0; i < rt->n_procs; i++)
        if (strcmp(rt->procs[i].spec.topic, topic) == 0)
            return &rt->procs[i];
    return NULL;
}

/* ---- create / run / destroy ------------------------------------------------------------ */

/* The changelog topic of a processor: "<group>-<processor>-changelog". */
static char *ts_runtime_changelog_name(const ts_topology *topo, const ts_processor_conf *pc) {
    size_t len = strlen(topo->group) + strlen(pc->name) + 12;
    char *name = malloc(len);
    if (name)
        snprintf(name, len, "%s-%s-changelog", topo->group, pc->name);
    return name;
}

/* Starts the embedded cluster or checks the configured one, and makes sure
 * every topic exists: the topology's, and each processor's changelog
 * (compacted, partitioned like its input). */
static ts_err ts_runtime_start_kafka(ts_runtime *rt, char *err, size_t errlen) {
    const ts_topology *topo = rt->topo;
    size_t n = topo->n_topics + topo->n_processors;
    const char **names = calloc(n, sizeof(*names));
    char **owned = calloc(topo->n_processors + 1, sizeof(*owned));
    int *parts = calloc(n, sizeof(*parts));
    int *compacted = calloc(n, sizeof(*compacted));
    ts_err rc = names && owned && parts && compacted ? TS_OK : TS_E_NOMEM;
    size_t k = 0;
    for (size_t i = 0; rc == TS_OK && i < topo->n_topics; i++, k++) {
        names[k] = topo->topics[i].name;
        parts[k] = topo->topics[i].partitions;
    }
    for (size_t i = 0; rc == TS_OK && i < topo->n_processors; i++, k++) {
        const ts_topic_conf *in = ts_topology_topic(topo, topo->processors[i].input);
        names[k] = owned[i] = ts_runtime_changelog_name(topo, &topo->processors[i]);
        parts[k] = in ? in->partitions : 1;
        compacted[k] = 1;
        if (!names[k])
            rc = TS_E_NOMEM;
    }
    if (rc == TS_OK && ts_runtime_empty(topo->kafka_brokers)) {
        rc = ts_cluster_create(1, &rt->cluster, err, errlen);
        for (size_t i = 0; rc == TS_OK && i < n; i++)
            rc = ts_cluster_topic_create(rt->cluster, names[i], parts[i]);
        if (rc == TS_OK) {
            rt->brokers = strdup(ts_cluster_bootstraps(rt->cluster));
            ts_log_info("runtime",
                        "embedded Kafka (librdkafka mock cluster, in memory) at %s: produce "
                        "with e.g. kcat -b %s -t %s -P",
                        rt->brokers, rt->brokers, topo->topics[0].name);
        }
    } else if (rc == TS_OK) {
        rt->brokers = strdup(topo->kafka_brokers);
        rc = ts_cluster_topics_ensure(rt->brokers, topo->kafka_config, names, parts, compacted, n,
                                      30000, err, errlen);
    }
    for (size_t i = 0; owned && i < topo->n_processors; i++)
        free(owned[i]);
    free(owned);
    free(names);
    free(parts);
    free(compacted);
    if (rc == TS_OK && !rt->brokers)
        rc = TS_E_NOMEM;
    return rc;
}

static ts_err ts_runtime_start_servers(ts_runtime *rt, char *err, size_t errlen) {
    const ts_topology *topo = rt->topo;
    ts_err rc = TS_OK;
    if (ts_runtime_empty(topo->redis_url)) {
        rc = ts_servers_start_redis(&rt->servers, topo->state_dir, err, errlen);
        if (rc == TS_OK)
            rt->redis_url = strdup(ts_servers_redis_url(rt->servers));
    } else {
        rt->redis_url = strdup(topo->redis_url);
    }
    if (rc != TS_OK)
        return rc;
    if (ts_runtime_empty(topo->pg_conninfo)) {
        rc = ts_servers_start_postgres(&rt->servers, topo->state_dir, err, errlen);
        if (rc == TS_OK)
            rt->pg_conninfo = strdup(ts_servers_pg_conninfo(rt->servers));
    } else {
        rt->pg_conninfo = strdup(topo->pg_conninfo);
    }
    if (rc == TS_OK && (!rt->redis_url || !rt->pg_conninfo))
        rc = TS_E_NOMEM;
    if (rc == TS_OK)
        ts_log_info("runtime", "views in %s, rows in \"%s\"", rt->redis_url, rt->pg_conninfo);
    return rc;
}

static ts_err ts_runtime_migrate(ts_runtime *rt, char *err, size_t errlen) {
    const char **dirs = calloc(rt->topo->n_processors + 1, sizeof(*dirs));
    const char **owners = calloc(rt->topo->n_processors + 1, sizeof(*owners));
    size_t n = 0;
    for (size_t i = 0; dirs && owners && i < rt->topo->n_processors; i++) {
        if (rt->topo->processors[i].migrations) {
            dirs[n] = rt->topo->processors[i].migrations;
            owners[n++] = rt->topo->processors[i].name;
        }
    }
    ts_err rc = dirs && owners ? ts_migrate_apply(rt->pg_conninfo, dirs, owners, n, err, errlen)
                               : TS_E_NOMEM;
    free(dirs);
    free(owners);
    return rc;
}

/* For tasks, which make their own encoders: the subject of an output topic,
 * or NULL when the topic is not an output. */
static const char *ts_runtime_output_schema(void *arg, const char *topic) {
    ts_runtime *rt = arg;
    for (size_t i = 0; i < rt->n_outputs; i++)
        if (strcmp(rt->outputs[i].topic, topic) == 0)
            return rt->outputs[i].schema;
    return NULL;
}

/* Registers an output topic, once its schema is proven encodable. */
static ts_err ts_runtime_add_output(ts_runtime *rt, const char *topic, char *err,
                                    size_t errlen) {
    if (ts_runtime_output_schema(rt, topic))
        return TS_OK;
    const ts_topic_conf *tc = ts_topology_topic(rt->topo, topic);
    ts_encoder *probe = tc && tc->schema ? ts_encoder_create(rt->schemas, tc->schema) : NULL;
    int encodable = probe != NULL;
    ts_encoder_destroy(probe);
    if (!encodable) {
        snprintf(err, errlen, "%s:%d: output topic %s has no known schema", rt->topo->path,
                 tc ? tc->line : 0, topic);
        return TS_E_CONFIG;
    }
    rt->outputs[rt->n_outputs].topic = tc->name;
    rt->outputs[rt->n_outputs++].schema = tc->schema;
    return TS_OK;
}

static ts_err ts_runtime_build_procs(ts_runtime *rt, const ts_processor_def *const *registry,
                                     char *err, size_t errlen) {
    const ts_topology *topo = rt->topo;
    size_t n_out = 0;
    for (size_t i = 0; i < topo->n_processors; i++)
        n_out += topo->processors[i].n_outputs;
    rt->procs = calloc(topo->n_processors, sizeof(*rt->procs));
    rt->outputs = calloc(n_out + 1, sizeof(*rt->outputs));
    if (!rt->procs || !rt->outputs)
        return TS_E_NOMEM;
    for (size_t i = 0; i < topo->n_processors; i++) {
        const ts_processor_conf *pc = &topo->processors[i];
        ts_runtime_proc *proc = &rt->procs[rt->n_procs++];
        proc->conf = pc;
        proc->spec.def = ts_processor_find(registry, pc->name);
        if (!proc->spec.def) {
            snprintf(err, errlen, "%s:%d: unknown processor '%s'", topo->path, pc->line,
                     pc->name);
            return TS_E_CONFIG;
        }
        const ts_topic_conf *in = ts_topology_topic(topo, pc->input);
        /* Each task makes its own decoder; this one proves the schema works. */
        ts_decoder *probe = in && in->schema ? ts_decoder_create(rt->schemas, in->schema) : NULL;
        int decodable = probe != NULL;
        ts_decoder_destroy(probe);
        if (!decodable) {
            snprintf(err, errlen, "%s:%d: input topic %s has no known schema", topo->path,
                     in ? in->line : pc->line, pc->input);
            return TS_E_CONFIG;
        }
        size_t dlq_len = strlen(pc->input) + 5;
        proc->dlq_topic = malloc(dlq_len);
        if (!proc->dlq_topic)
            return TS_E_NOMEM;
        snprintf(proc->dlq_topic, dlq_len, "%s.dlq", pc->input);
        proc->changelog_topic = ts_runtime_changelog_name(topo, pc);
        if (!proc->changelog_topic)
            return TS_E_NOMEM;
        proc->spec.changelog_topic = proc->changelog_topic;
        proc->spec.name = pc->name;
        proc->spec.params = pc->params;
        proc->spec.topic = pc->input;
        proc->spec.dlq_topic = proc->dlq_topic;
        proc->spec.schemas = rt->schemas;
        proc->spec.input_schema = in->schema;
        proc->spec.output_schema = ts_runtime_output_schema;
        proc->spec.output_arg = rt;
        for (size_t o = 0; o < pc->n_outputs; o++) {
            ts_err rc = ts_runtime_add_output(rt, pc->outputs[o], err, errlen);
            if (rc != TS_OK)
                return rc;
        }
    }
    return TS_OK;
}

static ts_err ts_runtime_start_sinks(ts_runtime *rt, char *err, size_t errlen) {
    ts_err rc = ts_redis_sink_create(&rt->loop, rt->redis_url, &rt->sinks[rt->n_sinks], err,
                                     errlen);
    if (rc == TS_OK)
        rt->n_sinks++;
    if (rc == TS_OK) {
        rc = ts_pg_sink_create(&rt->loop, rt->pg_conninfo, &rt->sinks[rt->n_sinks], err, errlen);
        if (rc == TS_OK)
            rt->n_sinks++;
    }
    if (rc == TS_OK) {
        rc = ts_kafka_sink_create(&rt->loop, rt->brokers, rt->topo->kafka_config,
                                  &rt->sinks[rt->n_sinks], err, errlen);
        if (rc == TS_OK)
            rt->n_sinks++;
    }
    rt->sinks_open = rt->n_sinks;
    return rc;
}

ts_err ts_runtime_create(const ts_topology *topo, const ts_processor_def *const *registry,
                         ts_runtime **out, char *err, size_t errlen) {
    ts_runtime *rt = calloc(1, sizeof(*rt));
    if (!rt)
        return TS_E_NOMEM;
    rt->topo = topo;
    rt->started_ms = ts_runtime_wall_ms();
    /* A stable instance id also makes this a static member of the group, so
     * a quick restart moves no partition. */
    const char *instance = getenv("TASTESYNC_INSTANCE_ID");
    rt->source_config = topo->kafka_config ? json_deep_copy(topo->kafka_config) : json_object();
    if (instance && *instance) {
        snprintf(rt->instance, sizeof(rt->instance), "%s", instance);
        json_object_set_new(rt->source_config, "group.instance.id", json_string(instance));
    } else {
        char host[64] = "host";
        gethostname(host, sizeof(host) - 1);
        snprintf(rt->instance, sizeof(rt->instance), "%s-%ld", host, (long)getpid());
    }
    ts_err rc = uv_loop_init(&rt->loop) == 0 ? TS_OK : TS_E_IO;
    rt->loop_ready = rc == TS_OK;
    if (rc == TS_OK && ts_runtime_mkdirs(topo->state_dir) != 0) {
        snprintf(err, errlen, "cannot create state folder %s: %s", topo->state_dir,
                 strerror(errno));
        rc = TS_E_IO;
    }
    if (rc == TS_OK && ts_runtime_empty(topo->kafka_brokers)) {
        /* The embedded cluster lives in memory and starts empty, so local state
         * and rows from an earlier run would be ahead of it: start afresh. */
        const char *stale[] = {"state", "pg", "redis"};
        for (size_t i = 0; i < 3; i++) {
            char *path = ts_runtime_join(topo->state_dir, stale[i]);
            if (path)
                ts_runtime_rmtree(path);
            free(path);
        }
    }
    if (rc == TS_OK)
        rc = ts_runtime_start_kafka(rt, err, errlen);
    if (rc == TS_OK)
        rc = ts_runtime_start_servers(rt, err, errlen);
    if (rc == TS_OK)
        rc = ts_runtime_migrate(rt, err, errlen);
    if (rc == TS_OK)
        rc = ts_schemas_load(topo->schemas_dir, &rt->schemas, err, errlen);
    if (rc == TS_OK)
        rc = ts_runtime_build_procs(rt, registry, err, errlen);
    if (rc == TS_OK && (rc = ts_runtime_metrics_init(rt)) != TS_OK)
        snprintf(err, errlen, "metrics: %s", ts_err_str(rc));
    if (rc == TS_OK) {
        char *dir = ts_runtime_join(topo->state_dir, "state");
        rc = dir ? ts_state_open(dir, &rt->state, err, errlen) : TS_E_NOMEM;
        free(dir);
        /* Every task's keys are in its changelog partition: the WAL only
         * saves a restore after a crash, for a second copy of every batch's
         * bytes written on the deciding thread (Kafka Streams skips it too);
         * state.wal keeps it for operators who want fast crash restarts. */
        if (rc == TS_OK && !topo->state_wal)
            ts_state_skip_wal(rt->state);
    }
    rt->host = (ts_task_host){
        .loop = &rt->loop,
        .state = rt->state,
        .sinks = rt->metered,
        .max_events = topo->batch_max_events,
        .max_ms = topo->batch_max_ms,
        .max_buffered_bytes = (size_t)topo->batch_max_buffered_bytes,
        .max_message_bytes = ts_kconf_max_message_bytes(topo->kafka_config),
        .pause = ts_runtime__pause,
        .commit = ts_runtime__commit,
        .seek = ts_runtime__seek,
        .schedule = ts_runtime__schedule,
        .failed = ts_runtime__task_failed,
        .rebuilt = ts_runtime__rebuilt,
        .batched = ts_runtime_batched,
        .views = &rt->metered[0],
        .instance = rt->instance,
        .started_ms = rt->started_ms,
        .owner_seq = &rt->owner_seq,
        .deciding = &rt->deciding,
        .max_deciding = ts_runtime_decide_slots(),
        .arg = rt,
    };
    if (rc == TS_OK)
        rc = ts_runtime_start_sinks(rt, err, errlen);
    rt->host.n_sinks = rt->n_sinks;
    ts_runtime_meter_sinks(rt);
    if (rc == TS_OK) {
        char marker[256];
        snprintf(marker, sizeof(marker), "ts:views:%s", topo->group);
        ts_redis_sink_watch(&rt->sinks[0], marker, ts_runtime__views_present, rt);
        rc = ts_runtime__setup_views(rt, err, errlen);
    }
    /* Before joining the group: a port in use fails the start without
     * making the group rebalance twice. */
    if (rc == TS_OK)
        rc = ts_runtime_start_http(rt, err, errlen);
    if (rc == TS_OK)
        rc = ts_runtime__start_source(rt, err, errlen);
    if (rc == TS_OK) {
        uv_idle_init(&rt->loop, &rt->work);
        uv_timer_init(&rt->loop, &rt->tick);
        uv_signal_init(&rt->loop, &rt->sigint);
        uv_signal_init(&rt->loop, &rt->sigterm);
        rt->work.data = rt->tick.data = rt->sigint.data = rt->sigterm.data = rt;
        rt->handles_ready = 1;
        uv_timer_start(&rt->tick, ts_runtime__on_tick, TS_RUNTIME_TICK_MS, TS_RUNTIME_TICK_MS);
        uv_signal_start(&rt->sigint, ts_runtime__on_signal, SIGINT);
        uv_signal_start(&rt->sigterm, ts_runtime__on_signal, SIGTERM);
    }
    if (rc != TS_OK) {
        ts_runtime_destroy(rt);
        return rc;
    }
    *out = rt;
    return TS_OK;
}

ts_err ts_runtime_run(ts_runtime *rt) {
    uv_run(&rt->loop, UV_RUN_DEFAULT);
    return rt->exit_err;
}

void ts_runtime_destroy(ts_runtime *rt) {
    if (!rt)
        return;
    ts_http_destroy(rt->http); /* waits for its thread; it only reads its snapshot */
    if (rt->loop_ready) {
        /* After a clean stop this finds nothing left; after a failed create
         * it closes what was opened. */
        ts_runtime__close_all(rt);
        uv_run(&rt->loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&rt->loop) != 0)
            ts_log_warn("runtime", "loop closed with handles still open");
    }
    while (rt->n_tasks > 0)
        ts_runtime__task_remove(rt, rt->n_tasks - 1);
    free(rt->tasks);
    for (size_t i = 0; i < rt->n_procs; i++) {
        free(rt->procs[i].dlq_topic);
        free(rt->procs[i].changelog_topic);
    }
    for (size_t i = 0; rt->setups && i < rt->n_procs; i++)
        ts_effects_destroy(rt->setups[i].effs);
    free(rt->setups);
    free(rt->procs);
    free(rt->outputs);
    ts_state_close(rt->state);
    ts_schemas_destroy(rt->schemas);
    ts_servers_destroy(rt->servers);
    ts_cluster_destroy(rt->cluster);
    ts_metrics_destroy(rt->mx.reg);
    json_decref(rt->source_config);
    free(rt->brokers);
    free(rt->redis_url);
    free(rt->pg_conninfo);
    free(rt);
}

uv_loop_t *ts_runtime_loop(ts_runtime *rt) { return &rt->loop; }
const char *ts_runtime_brokers(const ts_runtime *rt) { return rt->brokers; }
const char *ts_runtime_redis_url(const ts_runtime *rt) { return rt->redis_url; }
const char *ts_runtime_pg_conninfo(const ts_runtime *rt) { return rt->pg_conninfo; }

int64_t ts_runtime_acked(const ts_runtime *rt, const char *topic, int32_t partition) {
    ts_task *task = ts_runtime__task_find(rt, topic, partition);
    return task ? ts_task_acked(task) : -1;
}

int64_t ts_runtime_lag(const ts_runtime *rt) {
    int64_t lag = 0;
    for (size_t i = 0; i < rt->n_tasks; i++) {
        ts_task *task = rt->tasks[i];
        int64_t high, acked = ts_task_acked(task);
        if (!rt->source ||
            ts_source_end(rt->source, ts_task_topic(task), ts_task_partition(task), &high) != 0)
            return -1;
        if (high > 0 && acked < 0)
            return -1;
        if (high > acked && high > 0)
            lag += high - (acked < 0 ? 0 : acked);
    }
    return lag;
}

size_t ts_runtime_tasks(const ts_runtime *rt, size_t *busy) {
    size_t n = 0;
    for (size_t i = 0; i < rt->n_tasks; i++)
        n += ts_task_busy(rt->tasks[i]) != 0;
    if (busy)
        *busy = n;
    return rt->n_tasks;
}
