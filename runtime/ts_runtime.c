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
 * Metrics, health and readiness are in ts_runtime_metrics.c; the types both
 * files share in ts_runtime_int.h.
 */
#include "ts_runtime_int.h"

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
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
#include "ts_restore.h"
#include "ts_servers.h"
#include "ts_source.h"
#include "ts_state.h"
#include "ts_task.h"

#define TS_RUNTIME_TICK_MS 50

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

/* ---- tasks ------------------------------------------------------------------------ */

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

static ts_task *ts_runtime_task_find(const ts_runtime *rt, const char *topic, int32_t partition) {
    for (size_t i = 0; i < rt->n_tasks; i++)
        if (ts_task_partition(rt->tasks[i]) == partition &&
            strcmp(ts_task_topic(rt->tasks[i]), topic) == 0)
            return rt->tasks[i];
    return NULL;
}

static void ts_runtime_task_remove(ts_runtime *rt, size_t i) {
    ts_task_destroy(rt->tasks[i]);
    rt->tasks[i] = rt->tasks[--rt->n_tasks];
}

ts_runtime_proc *ts_runtime_proc_for(ts_runtime *rt, const char *topic) {
    for (size_t i = 0; i < rt->n_procs; i++)
        if (strcmp(rt->procs[i].spec.topic, topic) == 0)
            return &rt->procs[i];
    return NULL;
}

/* Runs every task that has work, starting one further each time so that
 * with all decide slots taken no task always comes first. Stops when no task
 * is ready, or none can start (a decide's end schedules again). */
static void ts_runtime_on_work(uv_idle_t *idle) {
    ts_runtime *rt = idle->data;
    int more = 0;
    size_t n = rt->n_tasks, first = n ? rt->next_run++ % n : 0;
    for (size_t k = 0; k < n && !rt->stopping; k++) {
        ts_task *task = rt->tasks[(first + k) % n];
        ts_task_run(task);
        more |= ts_task_ready(task);
    }
    if (!more || rt->stopping || ts_task_host_slots_full(&rt->host))
        uv_idle_stop(idle);
}

static void ts_runtime_schedule(void *arg, ts_task *task) {
    (void)task;
    ts_runtime *rt = arg;
    if (!rt->stopping)
        uv_idle_start(&rt->work, ts_runtime_on_work);
}

static void ts_runtime_pause(void *arg, ts_task *task, int pause) {
    ts_runtime *rt = arg;
    if (!rt->source || rt->closing)
        return;
    ts_source_pause(rt->source, ts_task_topic(task), ts_task_partition(task), pause);
    if (pause) {
        ts_runtime_proc *proc = ts_runtime_proc_for(rt, ts_task_topic(task));
        const char *name[] = {proc ? proc->spec.name : "?"};
        ts_metrics_add(rt->mx.pauses, name, 1);
    }
}

static void ts_runtime_seek(void *arg, ts_task *task, int64_t offset) {
    ts_runtime *rt = arg;
    if (rt->source && !rt->closing)
        ts_source_assign(rt->source, ts_task_topic(task), ts_task_partition(task), offset);
}

static void ts_runtime_commit(void *arg, ts_task *task, int64_t next_offset) {
    ts_runtime *rt = arg;
    if (rt->source && !rt->closing)
        ts_source_store_offset(rt->source, ts_task_topic(task), ts_task_partition(task),
                               next_offset);
}

static void ts_runtime_task_failed(void *arg, ts_task *task, ts_err err) {
    ts_runtime *rt = arg;
    ts_log_error("runtime", "task %s failed (%s): stopping", ts_task_id(task), ts_err_name(err));
    if (rt->exit_err == TS_OK)
        rt->exit_err = err;
    ts_runtime_stop(rt);
}

/* ---- source handler --------------------------------------------------------------- */

/* Creates and starts the task of (proc, partition); returns where to start. */
static int64_t ts_runtime_task_start(ts_runtime *rt, ts_runtime_proc *proc, int32_t partition) {
    char err[512];
    if (rt->n_tasks == rt->cap_tasks) {
        size_t cap = rt->cap_tasks ? rt->cap_tasks * 2 : 16;
        ts_task **grown = realloc(rt->tasks, cap * sizeof(*grown));
        if (!grown)
            return TS_SOURCE_REFUSE;
        rt->tasks = grown;
        rt->cap_tasks = cap;
    }
    ts_task *task = NULL;
    ts_err rc = ts_task_create(&rt->host, &proc->spec, partition, &task, err, sizeof(err));
    if (rc != TS_OK) {
        ts_log_error("runtime", "%s", err);
        if (rt->exit_err == TS_OK)
            rt->exit_err = rc;
        ts_runtime_stop(rt);
        return TS_SOURCE_REFUSE;
    }
    rt->tasks[rt->n_tasks++] = task;
    ts_task_start(task);
    int64_t pos = ts_task_position(task);
    ts_log_info(ts_task_id(task), "started at %s%" PRId64, pos < 0 ? "the beginning " : "offset ",
                pos < 0 ? (int64_t)0 : pos);
    return pos < 0 ? RD_KAFKA_OFFSET_BEGINNING : pos;
}

static void ts_runtime_restored(void *arg, ts_err status, const ts_restore_stats *stats) {
    ts_runtime_restore *rr = arg, **pp;
    ts_runtime *rt = rr->rt;
    for (pp = &rt->restores; *pp != rr; pp = &(*pp)->next)
        ;
    *pp = rr->next;
    if (status == TS_OK && !rr->revoked && !rt->stopping) {
        if (stats->current)
            ts_log_info(rr->task_id,
                        "local state is current: the changelog still ends at %" PRId64
                        " (checked in %.2f s)",
                        stats->changelog_end, stats->seconds);
        else if (stats->records == 0)
            ts_log_info(rr->task_id, "the changelog is empty: starting without state");
        else
            ts_log_info(rr->task_id,
                        "restored %" PRIu64 " changelog records (%" PRIu64 " batches) in %.2f s "
                        "(%.0f records/s), position %" PRId64,
                        stats->records, stats->batches, stats->seconds,
                        stats->seconds > 0 ? (double)stats->records / stats->seconds : 0.0,
                        stats->position);
        int64_t start = ts_runtime_task_start(rt, rr->proc, rr->partition);
        if (start != TS_SOURCE_REFUSE && rt->source)
            ts_source_assign(rt->source, rr->proc->spec.topic, rr->partition, start);
    } else if (status != TS_OK && status != TS_E_STOPPED) {
        ts_log_error(rr->task_id, "restore failed: %s", ts_err_str(status));
        if (rt->exit_err == TS_OK)
            rt->exit_err = status;
        ts_runtime_stop(rt);
    }
    free(rr);
}

/* The local state is checked against the processor's changelog and restored
 * from it unless current (ts_restore.h). The group's committed offset is not
 * trusted for that: it can lag the newest owner's position. */
static int64_t ts_runtime_assigned(void *arg, const char *topic, int32_t partition) {
    ts_runtime *rt = arg;
    ts_runtime_proc *proc = ts_runtime_proc_for(rt, topic);
    if (!proc || rt->stopping)
        return TS_SOURCE_REFUSE;
    ts_task *task = ts_runtime_task_find(rt, topic, partition);
    if (task) {
        /* Revoked while a batch was decided or flushed and given back before
         * it was removed: its state is current, so it goes on (a batch
         * decided after the revocation is flushed now). */
        ts_task_reassign(task);
        ts_log_info(ts_task_id(task), "re-assigned while flushing");
        return ts_task_position(task) < 0 ? RD_KAFKA_OFFSET_BEGINNING : ts_task_position(task);
    }
    char task_id[160];
    snprintf(task_id, sizeof(task_id), "%s/%" PRId32, proc->spec.name, partition);
    int64_t local = ts_task_stored_position(rt->state, task_id);
    int64_t local_end = ts_task_stored_changelog_end(rt->state, task_id);

    ts_runtime_restore *rr = calloc(1, sizeof(*rr));
    if (!rr)
        return TS_SOURCE_REFUSE;
    rr->rt = rt;
    rr->proc = proc;
    rr->partition = partition;
    snprintf(rr->task_id, sizeof(rr->task_id), "%s", task_id);
    ts_restore_spec spec = {
        .brokers = rt->brokers,
        .kafka_config = rt->topo->kafka_config,
        .changelog_topic = proc->changelog_topic,
        .partition = partition,
        .task_id = task_id,
        .local_end = local_end,
        .state = rt->state,
    };
    ts_log_info(task_id, "checking local state (position %" PRId64 ", changelog end %" PRId64
                         ") against %s",
                local, local_end, proc->changelog_topic);
    if (ts_restore_start(&rt->loop, &spec, ts_runtime_restored, rr, &rr->restore) != TS_OK) {
        free(rr);
        return TS_SOURCE_REFUSE;
    }
    rr->next = rt->restores;
    rt->restores = rr;
    return TS_SOURCE_LATER;
}

static void ts_runtime_revoked(void *arg, const char *topic, int32_t partition) {
    ts_runtime *rt = arg;
    for (ts_runtime_restore *rr = rt->restores; rr; rr = rr->next) {
        if (rr->partition == partition && strcmp(rr->proc->spec.topic, topic) == 0 &&
            !rr->revoked) {
            rr->revoked = 1;
            ts_restore_cancel(rr->restore);
            return;
        }
    }
    for (size_t i = 0; i < rt->n_tasks; i++) {
        ts_task *task = rt->tasks[i];
        if (ts_task_partition(task) != partition || strcmp(ts_task_topic(task), topic) != 0)
            continue;
        ts_task_revoke(task);
        if (!ts_task_busy(task))
            ts_runtime_task_remove(rt, i);
        return;
    }
}

/* Revoked tasks whose last batch is still deciding or on its way to the sinks
 * (a revoked task stays in the list until it is not busy, see the tick). */
static size_t ts_runtime_draining(void *arg) {
    ts_runtime *rt = arg;
    size_t n = 0;
    for (size_t i = 0; i < rt->n_tasks; i++)
        n += ts_task_revoked(rt->tasks[i]) && ts_task_busy(rt->tasks[i]);
    return n;
}

static void ts_runtime_record(void *arg, rd_kafka_message_t *msg) {
    ts_runtime *rt = arg;
    ts_task *task = ts_runtime_task_find(rt, rd_kafka_topic_name(msg->rkt), msg->partition);
    if (!task) {
        rd_kafka_message_destroy(msg);
        return;
    }
    ts_task_push(task, msg);
}

static void ts_runtime_source_failed(void *arg, const char *reason) {
    ts_runtime *rt = arg;
    ts_log_error("runtime", "source failed: %s", reason);
    if (rt->exit_err == TS_OK)
        rt->exit_err = TS_E_FATAL;
    ts_runtime_stop(rt);
}

static ts_err ts_runtime_setup_send(ts_runtime_setup *setup);

/* ---- lost views ---------------------------------------------------------------------
 * The view sink reports, every second, which tasks' views Redis holds whole;
 * a task missing there (Redis restarted empty, FLUSHALL, `tastesync views
 * rebuild`) writes its views again from its state, without reprocessing. */

static int ts_runtime_field_in(const char *id, const char *const *fields, size_t n) {
    for (size_t f = 0; f < n; f++)
        if (strcmp(fields[f], id) == 0)
            return 1;
    return 0;
}

static void ts_runtime_views_present(void *arg, const char *const *fields, size_t n) {
    ts_runtime *rt = arg;
    for (size_t i = 0; rt->setups && i < rt->n_procs && !rt->stopping; i++) {
        ts_runtime_setup *setup = &rt->setups[i];
        if (setup->effs && !setup->in_flight && !ts_runtime_field_in(setup->task_id, fields, n))
            ts_runtime_setup_send(setup);
    }
    for (size_t i = 0; i < rt->n_tasks && !rt->stopping; i++) {
        ts_task *task = rt->tasks[i];
        if (ts_task_revoked(task) || ts_task_rebuilding(task))
            continue;
        if (!ts_runtime_field_in(ts_task_id(task), fields, n))
            ts_task_rebuild(task);
    }
}

static void ts_runtime_rebuilt(void *arg, ts_task *task, size_t n_views) {
    ts_runtime *rt = arg;
    (void)n_views;
    ts_redis_sink_mark(&rt->sinks[0], ts_task_id(task));
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

/* ---- stopping ----------------------------------------------------------------------- */

static void ts_runtime_on_handle_closed(uv_handle_t *handle) { (void)handle; }

static void ts_runtime_on_sink_closed(void *arg) {
    ts_runtime *rt = arg;
    rt->sinks_open--;
}

/* Leaves the group, closes the sinks and every handle of the runtime; the
 * loop ends once their close callbacks have run. Safe to call twice, and on a
 * runtime whose create failed half-way. */
static void ts_runtime_close_all(ts_runtime *rt) {
    if (rt->closing)
        return;
    rt->closing = 1;
    if (rt->source) {
        ts_log_info("runtime", "leaving the group and closing");
        ts_source_close(rt->source); /* revocations free the idle tasks */
        rt->source = NULL;
    }
    for (size_t i = 0; i < rt->n_sinks; i++)
        rt->sinks[i].ops->close(rt->sinks[i].impl, ts_runtime_on_sink_closed, rt);
    rt->n_sinks = 0;
    if (rt->handles_ready) {
        uv_close((uv_handle_t *)&rt->work, ts_runtime_on_handle_closed);
        uv_close((uv_handle_t *)&rt->tick, ts_runtime_on_handle_closed);
        uv_close((uv_handle_t *)&rt->sigint, ts_runtime_on_handle_closed);
        uv_close((uv_handle_t *)&rt->sigterm, ts_runtime_on_handle_closed);
    }
}

int64_t ts_runtime_wall_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* Stores every task's acknowledged position again. librdkafka forgets the
 * stored offset of a partition when it is assigned (again), so a partition
 * with no new input would otherwise keep a stale committed offset (and show
 * as lag) forever. */
static void ts_runtime_recommit(ts_runtime *rt) {
    for (size_t i = 0; rt->source && i < rt->n_tasks; i++) {
        ts_task *task = rt->tasks[i];
        if (!ts_task_revoked(task) && ts_task_acked(task) >= 0)
            ts_source_store_offset(rt->source, ts_task_topic(task), ts_task_partition(task),
                             ts_task_acked(task));
    }
}

static void ts_runtime_on_tick(uv_timer_t *timer) {
    ts_runtime *rt = timer->data;
    if (++rt->ticks % (1000 / TS_RUNTIME_TICK_MS) == 1 && !rt->closing) {
        ts_runtime_publish_status(rt);
        ts_runtime_publish_http(rt);
    }
    if (rt->ticks % (5000 / TS_RUNTIME_TICK_MS) == 0 && !rt->closing && !rt->stopping)
        ts_runtime_recommit(rt);
    size_t busy = 0;
    for (size_t i = 0; i < rt->n_tasks;) {
        ts_task *task = rt->tasks[i];
        if (ts_task_busy(task)) {
            busy++;
            i++;
        } else if (ts_task_revoked(task)) {
            ts_runtime_task_remove(rt, i); /* its last flush is done */
        } else {
            i++;
        }
    }
    if (rt->source && !rt->closing)
        ts_source_drained(rt->source); /* a revocation may wait for those just done */
    for (size_t i = 0; rt->setups && i < rt->n_procs; i++)
        busy += rt->setups[i].in_flight != 0;
    for (ts_runtime_restore *rr = rt->restores; rr; rr = rr->next) {
        if (rt->stopping && !rr->revoked) {
            rr->revoked = 1;
            ts_restore_cancel(rr->restore);
        }
        busy++;
    }
    if (rt->stopping && !rt->closing && busy == 0)
        ts_runtime_close_all(rt);
}

void ts_runtime_stop(ts_runtime *rt) {
    if (rt->stopping)
        return;
    rt->stopping = 1;
    ts_log_info("runtime", "stopping: finishing the batches in flight");
}

static void ts_runtime_on_signal(uv_signal_t *sig, int signum) {
    ts_runtime *rt = sig->data;
    ts_log_info("runtime", "signal %d", signum);
    ts_runtime_stop(rt);
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

static ts_err ts_runtime_start_source(ts_runtime *rt, char *err, size_t errlen) {
    const char **topics = calloc(rt->n_procs, sizeof(*topics));
    if (!topics)
        return TS_E_NOMEM;
    for (size_t i = 0; i < rt->n_procs; i++)
        topics[i] = rt->procs[i].spec.topic;
    ts_source_handler handler = {
        .assigned = ts_runtime_assigned,
        .revoked = ts_runtime_revoked,
        .draining = ts_runtime_draining,
        .record = ts_runtime_record,
        .failed = ts_runtime_source_failed,
        .arg = rt,
    };
    ts_err rc = ts_source_create(&rt->loop, rt->brokers, rt->source_config, rt->topo->group,
                                 topics, rt->n_procs, &handler, &rt->source, err, errlen);
    free(topics);
    return rc;
}

static ts_err ts_runtime_setup_get(void *impl, const char *key, size_t klen, char **val,
                                   size_t *vlen) {
    (void)impl;
    (void)key;
    (void)klen;
    (void)val;
    (void)vlen;
    return TS_E_NOTFOUND; /* setup runs without state */
}

static void ts_runtime_setup_done(void *arg, ts_err status) {
    ts_runtime_setup *setup = arg;
    setup->in_flight = 0;
    if (status != TS_OK)
        return;
    ts_log_debug(setup->task_id, "%zu views written", ts_effects_live(setup->effs, 0));
    ts_redis_sink_mark(&setup->rt->sinks[0], setup->task_id);
}

/* (Re)writes a processor's start-time views. */
static ts_err ts_runtime_setup_send(ts_runtime_setup *setup) {
    ts_sink *views = &setup->rt->sinks[0];
    setup->in_flight = 1;
    ts_err rc = views->ops->write(views->impl, &setup->flush, ts_runtime_setup_done, setup);
    if (rc != TS_OK)
        setup->in_flight = 0;
    return rc;
}

/* Runs every processor's setup and sends its views to the view sink. */
static ts_err ts_runtime_setup_views(ts_runtime *rt, char *err, size_t errlen) {
    rt->setups = calloc(rt->n_procs, sizeof(*rt->setups));
    if (!rt->setups)
        return TS_E_NOMEM;
    for (size_t i = 0; i < rt->n_procs; i++) {
        const ts_task_spec *spec = &rt->procs[i].spec;
        ts_runtime_setup *setup = &rt->setups[i];
        setup->rt = rt;
        if (!spec->def->setup)
            continue;
        snprintf(setup->task_id, sizeof(setup->task_id), "%s/setup", spec->name);
        setup->effs = ts_effects_create();
        ts_state_backend none = {ts_runtime_setup_get, NULL};
        ts_ctx *ctx = setup->effs ? ts_ctx_create(&none, setup->effs, NULL, NULL) : NULL;
        char perr[256] = "";
        void *proc = ctx ? spec->def->create(spec->params, perr, sizeof(perr)) : NULL;
        ts_err rc = proc ? spec->def->setup(proc, ctx) : TS_E_CONFIG;
        spec->def->destroy(proc);
        ts_ctx_destroy(ctx);
        for (size_t e = 0; rc == TS_OK && e < ts_effects_count(setup->effs); e++) {
            ts_effect_kind kind = ts_effects_at(setup->effs, e)->kind;
            if (kind >= TS_EFF_ROW_UPSERT)
                rc = TS_E_INVALID;
        }
        if (rc != TS_OK) {
            snprintf(err, errlen, "processor %s: setup failed: %s", spec->name,
                     perr[0] ? perr : ts_err_str(rc));
            return rc == TS_E_INVALID ? TS_E_CONFIG : rc;
        }
        setup->flush = (ts_flush){setup->task_id, 0, 1, setup->effs};
        rc = ts_runtime_setup_send(setup);
        if (rc != TS_OK) {
            snprintf(err, errlen, "processor %s: setup views refused: %s", spec->name,
                     ts_err_str(rc));
            return rc;
        }
    }
    return TS_OK;
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
        .pause = ts_runtime_pause,
        .commit = ts_runtime_commit,
        .seek = ts_runtime_seek,
        .schedule = ts_runtime_schedule,
        .failed = ts_runtime_task_failed,
        .rebuilt = ts_runtime_rebuilt,
        .batched = ts_runtime_batched,
        .views = &rt->metered[0],
        .instance = rt->instance,
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
        ts_redis_sink_watch(&rt->sinks[0], marker, ts_runtime_views_present, rt);
        rc = ts_runtime_setup_views(rt, err, errlen);
    }
    /* Before joining the group: a port in use fails the start without
     * making the group rebalance twice. */
    if (rc == TS_OK)
        rc = ts_runtime_start_http(rt, err, errlen);
    if (rc == TS_OK)
        rc = ts_runtime_start_source(rt, err, errlen);
    if (rc == TS_OK) {
        uv_idle_init(&rt->loop, &rt->work);
        uv_timer_init(&rt->loop, &rt->tick);
        uv_signal_init(&rt->loop, &rt->sigint);
        uv_signal_init(&rt->loop, &rt->sigterm);
        rt->work.data = rt->tick.data = rt->sigint.data = rt->sigterm.data = rt;
        rt->handles_ready = 1;
        uv_timer_start(&rt->tick, ts_runtime_on_tick, TS_RUNTIME_TICK_MS, TS_RUNTIME_TICK_MS);
        uv_signal_start(&rt->sigint, ts_runtime_on_signal, SIGINT);
        uv_signal_start(&rt->sigterm, ts_runtime_on_signal, SIGTERM);
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
        ts_runtime_close_all(rt);
        uv_run(&rt->loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&rt->loop) != 0)
            ts_log_warn("runtime", "loop closed with handles still open");
    }
    while (rt->n_tasks > 0)
        ts_runtime_task_remove(rt, rt->n_tasks - 1);
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
    ts_task *task = ts_runtime_task_find(rt, topic, partition);
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
