/* ts_runtime_stop.c - the runtime's tick and its stop (see ts_runtime.c).
 *
 * The tick, every TS_RUNTIME_TICK_MS, publishes the status file and the HTTP
 * snapshot once a second, stores every task's acknowledged position again
 * every five seconds, and frees the revoked tasks whose last flush is done.
 * ts_runtime_stop (or SIGINT, SIGTERM, a failed task, restore or source)
 * only marks the runtime stopping; once nothing is in flight (batches,
 * start-time views, restores) the tick closes it all: the group is left, the
 * sinks are closed, and every handle closes, which ends uv_run.
 */
#include "ts_runtime_int.h"

#include "ts_log.h"
#include "ts_restore.h"
#include "ts_source.h"
#include "ts_task.h"

/* ---- stopping ----------------------------------------------------------------------- */

static void ts_runtime_on_handle_closed(uv_handle_t *handle) { (void)handle; }

static void ts_runtime_on_sink_closed(void *arg) {
    ts_runtime *rt = arg;
    rt->sinks_open--;
}

/* Leaves the group, closes the sinks and every handle of the runtime; the
 * loop ends once their close callbacks have run. Safe to call twice, and on a
 * runtime whose create failed half-way. */
void ts_runtime__close_all(ts_runtime *rt) {
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

void ts_runtime__on_tick(uv_timer_t *timer) {
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
            ts_runtime__task_remove(rt, i); /* its last flush is done */
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
        ts_runtime__close_all(rt);
}

void ts_runtime_stop(ts_runtime *rt) {
    if (rt->stopping)
        return;
    rt->stopping = 1;
    ts_log_info("runtime", "stopping: finishing the batches in flight");
}

void ts_runtime__on_signal(uv_signal_t *sig, int signum) {
    ts_runtime *rt = sig->data;
    ts_log_info("runtime", "signal %d", signum);
    ts_runtime_stop(rt);
}
