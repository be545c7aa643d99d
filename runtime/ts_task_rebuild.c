/* ts_task_rebuild.c - a task's views written again from its state (see ts_task.h).
 *
 * When the view store lost a task's views, the runtime asks the task to
 * rebuild them. At its next idle moment the task reads the view mirror in its
 * state (ts_mirror.h) into effects of its own and hands them to the view sink
 * as one flush, without reprocessing input; the task is busy until the sink
 * acknowledges. A rebuild cut short by a shutdown is wanted again.
 */
#include "ts_task_int.h"

#include "ts_log.h"
#include "ts_mirror.h"

void ts_task_rebuild(ts_task *task) {
    task->rebuild_wanted = 1;
    if (ts_task_ready(task))
        task->host->schedule(task->host->arg, task);
}

int ts_task_rebuilding(const ts_task *task) { return task->rebuild_wanted || task->rebuilding; }

static void ts_task_rebuild_done(void *arg, ts_err status) {
    ts_task *task = arg;
    size_t n = ts_effects_live(task->rebuild_effs, 0);
    ts_effects_clear(task->rebuild_effs);
    task->rebuilding = 0;
    task->busy = 0;
    if (status != TS_OK) {
        task->rebuild_wanted = 1; /* shut down first: the next start will do it */
        return;
    }
    ts_log(n ? TS_LOG_INFO : TS_LOG_DEBUG, task->id,
           "rebuilt %zu views and sorted-set members from state", n);
    task->host->rebuilt(task->host->arg, task, n);
    if (ts_task_ready(task))
        task->host->schedule(task->host->arg, task);
}

void ts_task__rebuild_start(ts_task *task) {
    task->rebuild_wanted = 0;
    if (!task->rebuild_effs && !(task->rebuild_effs = ts_effects_create())) {
        ts_task__fail(task, TS_E_NOMEM);
        return;
    }
    ts_err rc = ts_mirror_read(task->host->state, task->id, task->rebuild_effs);
    if (rc != TS_OK) {
        ts_task__fail(task, rc);
        return;
    }
    task->busy = 1;
    task->rebuilding = 1;
    task->rebuild_flush = (ts_flush){task->id, task->acked, task->acked, task->rebuild_effs};
    ts_sink *views = task->host->views;
    rc = views->ops->write(views->impl, &task->rebuild_flush, ts_task_rebuild_done, task);
    if (rc != TS_OK) {
        ts_log_error(task->id, "view sink refused the rebuild: %s", ts_err_str(rc));
        task->busy = 0;
        task->rebuilding = 0;
        ts_task__fail(task, rc);
    }
}
