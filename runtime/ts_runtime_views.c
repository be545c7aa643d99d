/* ts_runtime_views.c - the views the runtime writes itself (see ts_runtime.c).
 *
 * At start, every processor with a setup runs it once, without state, and
 * its views go to the view sink under "<processor>/setup". Afterwards the
 * view sink reports, every second, which tasks' views Redis holds whole: a
 * processor's start-time views missing there are sent again, and a task
 * missing there writes its views again from its state (ts_task_rebuild).
 */
#include "ts_runtime_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_log.h"
#include "ts_redis_sink.h"
#include "ts_task.h"

/* ---- start-time views ----------------------------------------------------------- */

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
ts_err ts_runtime__setup_views(ts_runtime *rt, char *err, size_t errlen) {
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

void ts_runtime__views_present(void *arg, const char *const *fields, size_t n) {
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

void ts_runtime__rebuilt(void *arg, ts_task *task, size_t n_views) {
    ts_runtime *rt = arg;
    (void)n_views;
    ts_redis_sink_mark(&rt->sinks[0], ts_task_id(task));
}
