/* ts_pg_sink.c - row effects into PostgreSQL, libpq pipeline mode on the loop.
 *
 * One connection, driven by a uv_poll_t on PQsocket: while connecting,
 * PQconnectPoll says which direction to wait for; once ready the connection is
 * non-blocking in pipeline mode, always watched for reading and also for
 * writing while PQflush has output left.
 *
 * Each accepted write is a job in a FIFO. Sending a job queues, without any
 * round trip, `SELECT ts_claim_batch(...)`, the row statements of its plan
 * (ts_pg_plan.h: rows alike share multi-row upserts) and a Sync. Everything before a Sync is one implicit transaction: it commits
 * at the Sync, and an error anywhere rolls all of it back and skips the rest.
 * (An explicit BEGIN/COMMIT would leave the session in an aborted transaction
 * after an error and need an extra ROLLBACK round trip.) Results arrive in
 * sending order, so the jobs on the wire form a second FIFO (`inflight`): a
 * job's results are read until its PGRES_PIPELINE_SYNC, remembering the first
 * error. No error, or the fence's SQLSTATE, completes the job; any other error
 * parks it (WAITING) until the retry timer resends it. A lost connection sends
 * every unfinished job again on the next connection.
 *
 * `done` may call back into the sink (write, or close); close during result
 * processing is deferred until the dispatch returns, so the connection is
 * never freed under the loop that reads it.
 *
 * This file is the sink table, its construction and close, and the
 * connection: connect, poll, backoff and the dispatch of what arrives; a
 * job's statements, built and sent, and its results, read and settled, are
 * in ts_pg_job.c (ts_pg_sink_int.h).
 */
#include "ts_pg_sink_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

#include "ts_log.h"

static void ts_pg_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void ts_pg_errf(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Checks a flush's row effects up front, so a malformed one fails the write at
 * once instead of being retried forever. Returns the number of live row
 * effects, or -1 (logged). */
static long ts_pg_validate(ts_pg_sink *ps, const ts_flush *flush) {
    size_t n = ts_effects_count(flush->effects);
    long rows = 0;
    for (size_t i = 0; i < n; i++) {
        const ts_effect *e = ts_effects_at(flush->effects, i);
        if (!ts_pg_plan_is_row(e))
            continue;
        ts_rowcol *cols = ps->plan_scratch.cols;
        size_t ncols = 0, nkey = 0;
        const char *why = NULL;
        if (!e->a.data || e->a.len == 0 || memchr(e->a.data, '\0', e->a.len))
            why = "no table name";
        else if (ts_rowcols_unpack(&e->b, cols, TS_PG_PLAN_MAX_COLS, &ncols, &nkey) != TS_OK)
            why = "malformed packed columns";
        else if (nkey == 0)
            why = "no key column";
        for (size_t c = 0; !why && c < ncols; c++) {
            if (cols[c].name_len == 0 || memchr(cols[c].name, '\0', cols[c].name_len))
                why = "empty column name";
            else if (cols[c].value && memchr(cols[c].value, '\0', cols[c].value_len))
                why = "a value holds a NUL byte";
        }
        if (why) {
            ts_log_error(ps->comp, "task %s: row effect %zu on table %.*s rejected: %s",
                         flush->task_id ? flush->task_id : "?", i, e->a.data ? (int)e->a.len : 1,
                         e->a.data ? e->a.data : "?", why);
            return -1;
        }
        rows++;
    }
    return rows;
}

/* ---- connection ----------------------------------------------------------- */

static void ts_pg_poll_cb(uv_poll_t *handle, int status, int events);
static void ts_pg_connect(ts_pg_sink *ps);
static void ts_pg_kick_if_ready(ts_pg_sink *ps);

/* The last of the sink's handles closed: tells the owner, frees the sink. */
static void ts_pg_free(ts_pg_sink *ps) {
    if (ps->closed)
        ps->closed(ps->closed_arg);
    free(ps->conninfo);
    ts_pg__prepared_forget(ps, NULL);
    ts_pg_plan_scratch_close(&ps->plan_scratch);
    free(ps);
}

static void ts_pg_poll_closed(uv_handle_t *handle) {
    ts_pg_poll *box = handle->data;
    ts_pg_sink *ps = box->sink;
    free(box);
    if (ps && --ps->closes_pending == 0)
        ts_pg_free(ps);
}

/* Stops watching the current socket; the box frees itself when closed. */
static void ts_pg_unwatch(ts_pg_sink *ps) {
    if (!ps->poll)
        return;
    ps->poll->sink = NULL;
    uv_close((uv_handle_t *)&ps->poll->handle, ts_pg_poll_closed);
    ps->poll = NULL;
}

/* Watches the connection's socket for `events`, following a new socket. */
static int ts_pg_watch(ts_pg_sink *ps, int events) {
    int fd = PQsocket(ps->conn);
    if (fd < 0)
        return -1;
    if (ps->poll && ps->poll->fd != fd)
        ts_pg_unwatch(ps);
    if (!ps->poll) {
        ts_pg_poll *box = calloc(1, sizeof *box);
        if (!box)
            return -1;
        if (uv_poll_init(ps->loop, &box->handle, fd) != 0) {
            free(box);
            return -1;
        }
        box->handle.data = box;
        box->sink = ps;
        box->fd = fd;
        ps->poll = box;
    }
    if (ps->poll->events != events || !uv_is_active((uv_handle_t *)&ps->poll->handle)) {
        ps->poll->events = events;
        if (uv_poll_start(&ps->poll->handle, events, ts_pg_poll_cb) != 0)
            return -1;
    }
    return 0;
}

void ts_pg__backoff(ts_pg_sink *ps) {
    ps->errors++;
    if (ps->closing || uv_is_active((uv_handle_t *)&ps->retry_timer))
        return;
    uv_timer_start(&ps->retry_timer, ts_pg__retry_cb, (uint64_t)ps->backoff_ms, 0);
    ps->backoff_ms *= 2;
    if (ps->backoff_ms > TS_PG_BACKOFF_MAX_MS)
        ps->backoff_ms = TS_PG_BACKOFF_MAX_MS;
}

/* Drops the connection; every unfinished job will be sent again. */
static void ts_pg_disconnect(ts_pg_sink *ps) {
    ts_pg_unwatch(ps);
    if (ps->conn)
        PQfinish(ps->conn);
    ps->conn = NULL;
    ps->state = TS_PG_DOWN;
    ts_pg__prepared_forget(ps, NULL);
    ps->inflight_head = ps->inflight_tail = NULL;
    for (ts_pg_job *job = ps->head; job; job = job->next) {
        job->state = TS_PG_JOB_QUEUED;
        job->next_inflight = NULL;
    }
}

static void ts_pg_connection_lost(ts_pg_sink *ps, const char *what) {
    const char *msg = ps->conn ? PQerrorMessage(ps->conn) : "";
    size_t len = strlen(msg);
    while (len > 0 && msg[len - 1] == '\n')
        len--;
    if (!ps->down_logged)
        ts_log_warn(ps->comp, "%s: %.*s; retrying with backoff", what, (int)len, msg);
    else
        ts_log_debug(ps->comp, "%s: %.*s", what, (int)len, msg);
    ps->down_logged = 1;
    ts_pg_disconnect(ps);
    ts_pg__backoff(ps);
}

/* Writes buffered output; keeps watching for writability while some is left. */
static int ts_pg_flush_out(ts_pg_sink *ps) {
    int r = PQflush(ps->conn);
    if (r < 0)
        return -1;
    return ts_pg_watch(ps, UV_READABLE | (r == 1 ? UV_WRITABLE : 0));
}

static void ts_pg_send_queued(ts_pg_sink *ps) {
    if (ps->state != TS_PG_READY)
        return;
    int sent = 0;
    for (ts_pg_job *job = ps->head; job; job = job->next) {
        if (job->state != TS_PG_JOB_QUEUED || job->immediate)
            continue;
        if (ts_pg__job_send(ps, job) != 0) {
            ts_pg_connection_lost(ps, "sending failed");
            return;
        }
        sent = 1;
    }
    if (sent && ts_pg_flush_out(ps) != 0) {
        ts_pg_connection_lost(ps, "sending failed");
        return;
    }
    ts_pg_kick_if_ready(ps);
}

static void ts_pg_notice(void *arg, const char *message) {
    ts_pg_sink *ps = arg;
    ts_log_debug(ps->comp, "notice: %s", message);
}

static void ts_pg_connect(ts_pg_sink *ps) {
    ps->conn = PQconnectStart(ps->conninfo);
    if (!ps->conn || PQstatus(ps->conn) == CONNECTION_BAD) {
        ts_pg_connection_lost(ps, "connect failed");
        return;
    }
    ps->state = TS_PG_CONNECTING;
    /* PQconnectStart has begun connecting: first wait until writable. */
    if (ts_pg_watch(ps, UV_WRITABLE) != 0)
        ts_pg_connection_lost(ps, "connect failed");
}

static void ts_pg_connect_step(ts_pg_sink *ps) {
    switch (PQconnectPoll(ps->conn)) {
    case PGRES_POLLING_READING:
        if (ts_pg_watch(ps, UV_READABLE) != 0)
            ts_pg_connection_lost(ps, "connect failed");
        return;
    case PGRES_POLLING_WRITING:
        if (ts_pg_watch(ps, UV_WRITABLE) != 0)
            ts_pg_connection_lost(ps, "connect failed");
        return;
    case PGRES_POLLING_OK:
        break;
    default:
        ts_pg_connection_lost(ps, "connect failed");
        return;
    }
    if (PQsetnonblocking(ps->conn, 1) != 0 || PQenterPipelineMode(ps->conn) != 1 ||
        ts_pg_watch(ps, UV_READABLE) != 0) {
        ts_pg_connection_lost(ps, "connection setup failed");
        return;
    }
    PQsetNoticeProcessor(ps->conn, ts_pg_notice, ps);
    ps->state = TS_PG_READY;
    ps->down_logged = 0;
    ps->backoff_ms = TS_PG_BACKOFF_MIN_MS;
    ts_log_info(ps->comp, "connected");
    ts_pg_send_queued(ps);
}

static void ts_pg_close_now(ts_pg_sink *ps);
static void ts_pg_kick_cb(uv_timer_t *timer);

/* libpq may read the socket while it writes, so results can wait in its
 * buffer with no readable event to come: look again on the next iteration. */
static void ts_pg_kick_if_ready(ts_pg_sink *ps) {
    if (ps->conn && ps->inflight_head && !PQisBusy(ps->conn))
        uv_timer_start(&ps->kick_timer, ts_pg_kick_cb, 0, 0);
}

/* Reads what arrived, settles jobs, writes what is pending. `consume` reads
 * the socket first (it was readable). */
static void ts_pg_process(ts_pg_sink *ps, int consume) {
    ps->dispatching++;
    if (consume && !PQconsumeInput(ps->conn)) {
        ps->dispatching--;
        ts_pg_connection_lost(ps, "connection lost");
        return;
    }
    ts_pg__read_results(ps);
    ps->dispatching--;
    if (ps->close_deferred) {
        ts_pg_close_now(ps);
        return;
    }
    if (ps->closing || !ps->conn)
        return;
    if (PQstatus(ps->conn) == CONNECTION_BAD || ts_pg_flush_out(ps) != 0) {
        ts_pg_connection_lost(ps, "connection lost");
        return;
    }
    ts_pg_kick_if_ready(ps);
}

static void ts_pg_poll_cb(uv_poll_t *handle, int status, int events) {
    ts_pg_poll *box = handle->data;
    ts_pg_sink *ps = box->sink;
    if (!ps || ps->closing || box != ps->poll)
        return;
    if (status < 0) {
        ts_pg_connection_lost(ps, uv_strerror(status));
        return;
    }
    if (ps->state == TS_PG_CONNECTING) {
        ts_pg_connect_step(ps);
        return;
    }
    ts_pg_process(ps, (events & UV_READABLE) != 0);
}

void ts_pg__retry_cb(uv_timer_t *timer) {
    ts_pg_sink *ps = timer->data;
    if (ps->closing)
        return;
    if (ps->state == TS_PG_DOWN) {
        ts_pg_connect(ps);
        return;
    }
    for (ts_pg_job *job = ps->head; job; job = job->next)
        if (job->state == TS_PG_JOB_WAITING)
            job->state = TS_PG_JOB_QUEUED;
    ts_pg_send_queued(ps);
}

/* ---- the sink table ------------------------------------------------------- */

static void ts_pg_kick_cb(uv_timer_t *timer) {
    ts_pg_sink *ps = timer->data;
    ts_pg_job *job = ps->head;
    while (job && !ps->closing) {
        ts_pg_job *next = job->next;
        if (job->immediate)
            ts_pg__job_finish(ps, job, TS_OK);
        job = next;
    }
    if (!ps->closing && ps->state == TS_PG_READY && ps->inflight_head && !ps->dispatching)
        ts_pg_process(ps, 0);
}

static ts_err ts_pg_sink_write(void *sink, const ts_flush *flush, ts_sink_done_cb done, void *arg) {
    ts_pg_sink *ps = sink;
    if (ps->closing)
        return TS_E_STOPPED;
    if (!flush || !flush->effects || !done || !flush->task_id)
        return TS_E_INVALID;
    long rows = ts_pg_validate(ps, flush);
    if (rows < 0)
        return TS_E_INVALID;
    ts_pg_job *job = calloc(1, sizeof *job);
    if (!job || !(job->task_id = strdup(flush->task_id)) ||
        !(job->owner = strdup(flush->owner ? flush->owner : ""))) {
        if (job)
            free(job->task_id);
        free(job);
        return TS_E_NOMEM;
    }
    job->flush = *flush;
    job->flush.task_id = job->task_id;
    job->flush.owner = job->owner;
    job->done = done;
    job->arg = arg;
    job->err_stmt = -1;
    job->state = TS_PG_JOB_QUEUED;
    job->immediate = rows == 0;
    DL_APPEND(ps->head, job);
    if (job->immediate) {
        uv_timer_start(&ps->kick_timer, ts_pg_kick_cb, 0, 0);
    } else if (ps->state == TS_PG_READY) {
        if (ts_pg__job_send(ps, job) != 0 || ts_pg_flush_out(ps) != 0) {
            /* Not inside result processing unless `done` called us, and then
             * the dispatcher re-checks the connection; dropping it here is safe
             * only outside dispatch. */
            if (!ps->dispatching)
                ts_pg_connection_lost(ps, "sending failed");
        } else {
            ts_pg_kick_if_ready(ps);
        }
    }
    return TS_OK;
}

static int ts_pg_sink_healthy(void *sink) {
    ts_pg_sink *ps = sink;
    if (ps->state != TS_PG_READY)
        return 0;
    for (ts_pg_job *job = ps->head; job; job = job->next)
        if (job->state == TS_PG_JOB_WAITING)
            return 0;
    return 1;
}

static void ts_pg_timer_closed(uv_handle_t *handle) {
    ts_pg_sink *ps = handle->data;
    if (--ps->closes_pending == 0)
        ts_pg_free(ps);
}

static void ts_pg_close_now(ts_pg_sink *ps) {
    ps->close_deferred = 0;
    ts_pg_job *job = ps->head;
    while (job) {
        ts_pg_job *next = job->next;
        ts_pg__job_free(job);
        job = next;
    }
    ps->head = NULL;
    ps->closes_pending = 2;
    if (ps->poll) {
        /* The socket's handle counts too, so `closed` means every handle is
         * gone and the loop can be closed. */
        ps->closes_pending++;
        ts_pg_poll *box = ps->poll;
        ts_pg_unwatch(ps);
        box->sink = ps;
    }
    if (ps->conn)
        PQfinish(ps->conn);
    ps->conn = NULL;
    ps->state = TS_PG_DOWN;
    uv_close((uv_handle_t *)&ps->retry_timer, ts_pg_timer_closed);
    uv_close((uv_handle_t *)&ps->kick_timer, ts_pg_timer_closed);
}

static void ts_pg_sink_close(void *sink, void (*closed)(void *arg), void *arg) {
    ts_pg_sink *ps = sink;
    if (ps->closing)
        return;
    ps->closing = 1;
    ps->closed = closed;
    ps->closed_arg = arg;
    for (ts_pg_job *job = ps->head; job; job = job->next) {
        if (!job->finished) {
            job->finished = 1;
            job->done(job->arg, TS_E_STOPPED);
        }
    }
    if (ps->dispatching)
        ps->close_deferred = 1;
    else
        ts_pg_close_now(ps);
}

static const ts_sink_ops ts_pg_sink_ops = {
    .name = "postgres",
    .write = ts_pg_sink_write,
    .healthy = ts_pg_sink_healthy,
    .close = ts_pg_sink_close,
};

uint64_t ts_pg_sink_errors(const ts_sink *sink) {
    return ((const ts_pg_sink *)sink->impl)->errors;
}

ts_err ts_pg_sink_create(uv_loop_t *loop, const char *conninfo, ts_sink *out, char *err,
                         size_t errlen) {
    if (!loop || !conninfo || !out) {
        ts_pg_errf(err, errlen, "postgres sink: loop, conninfo and out are required");
        return TS_E_INVALID;
    }
    ts_pg_sink *ps = calloc(1, sizeof *ps);
    if (!ps || !(ps->conninfo = strdup(conninfo)) ||
        !(ps->plan_scratch.cols = calloc(TS_PG_PLAN_MAX_COLS, sizeof(ts_rowcol)))) {
        if (ps)
            free(ps->conninfo);
        free(ps);
        ts_pg_errf(err, errlen, "out of memory");
        return TS_E_NOMEM;
    }
    ps->loop = loop;
    ps->backoff_ms = TS_PG_BACKOFF_MIN_MS;
    /* Name the instance by database, never by password. */
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    const char *db = NULL;
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "dbname") == 0 && o->val)
            db = o->val;
    snprintf(ps->comp, sizeof ps->comp, "pg-sink %s", db ? db : "(default db)");
    PQconninfoFree(opts);
    uv_timer_init(loop, &ps->retry_timer);
    uv_timer_init(loop, &ps->kick_timer);
    ps->retry_timer.data = ps;
    ps->kick_timer.data = ps;
    ts_pg_connect(ps);
    out->ops = &ts_pg_sink_ops;
    out->impl = ps;
    return TS_OK;
}
