/* ts_runtime_assign.c - the runtime's tasks and the partitions the source
 * assigns them (see ts_runtime.c).
 *
 * A partition assigned by the group is first checked against its processor's
 * changelog and restored from it unless the local state is current
 * (ts_restore.h); only then is its task created and started, and the source
 * told where to read from. A revoked partition cancels its restore, or
 * revokes its task, which stays in the list until its last flush is done
 * (the tick, ts_runtime_stop.c). Records go to their task's buffer.
 *
 * The task host's callbacks (ts_task_host) are here too: the idle handle that
 * runs the ready tasks, pausing, seeking and storing offsets at the source,
 * and a task's failure, which stops the runtime.
 */
#include "ts_runtime_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_log.h"
#include "ts_restore.h"
#include "ts_source.h"
#include "ts_task.h"

/* ---- tasks ------------------------------------------------------------------------ */

ts_task *ts_runtime__task_find(const ts_runtime *rt, const char *topic, int32_t partition) {
    for (size_t i = 0; i < rt->n_tasks; i++)
        if (ts_task_partition(rt->tasks[i]) == partition &&
            strcmp(ts_task_topic(rt->tasks[i]), topic) == 0)
            return rt->tasks[i];
    return NULL;
}

void ts_runtime__task_remove(ts_runtime *rt, size_t i) {
    ts_task_destroy(rt->tasks[i]);
    rt->tasks[i] = rt->tasks[--rt->n_tasks];
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

void ts_runtime__schedule(void *arg, ts_task *task) {
    (void)task;
    ts_runtime *rt = arg;
    if (!rt->stopping)
        uv_idle_start(&rt->work, ts_runtime_on_work);
}

void ts_runtime__pause(void *arg, ts_task *task, int pause) {
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

void ts_runtime__seek(void *arg, ts_task *task, int64_t offset) {
    ts_runtime *rt = arg;
    if (rt->source && !rt->closing)
        ts_source_assign(rt->source, ts_task_topic(task), ts_task_partition(task), offset);
}

void ts_runtime__commit(void *arg, ts_task *task, int64_t next_offset) {
    ts_runtime *rt = arg;
    if (rt->source && !rt->closing)
        ts_source_store_offset(rt->source, ts_task_topic(task), ts_task_partition(task),
                               next_offset);
}

void ts_runtime__task_failed(void *arg, ts_task *task, ts_err err) {
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
    ts_task *task = ts_runtime__task_find(rt, topic, partition);
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
            ts_runtime__task_remove(rt, i);
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
    ts_task *task = ts_runtime__task_find(rt, rd_kafka_topic_name(msg->rkt), msg->partition);
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

ts_err ts_runtime__start_source(ts_runtime *rt, char *err, size_t errlen) {
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
