/* ts_redis_sink.c - view effects into Redis over hiredis async on the libuv loop.
 *
 * The sink owns one hiredis async context at a time (attached to the loop by
 * ts_redis_uv.h) and a FIFO of jobs, one per accepted write. A job is
 * QUEUED (to be sent on the next ready connection), SENT (its MULTI ... EXEC is
 * on the wire; only EXEC carries a callback) or WAITING (its EXEC failed; it is
 * resent when the retry timer fires). A connection becomes ready after the
 * optional AUTH/SELECT and a PING succeed; then every queued job is sent.
 *
 * When a connection drops, hiredis calls every pending callback with a NULL
 * reply (the job goes back to QUEUED) and then the disconnect callback, which
 * schedules a reconnect with backoff. Because writes are whole values, sending
 * a flush again is harmless. Jobs whose flush has no view effects complete
 * from a zero timer so `done` never runs inside `write`.
 *
 * Lifetimes: hiredis may call back into the sink (NULL replies, disconnect)
 * while it frees a context, also after ops->close; so jobs and the sink are
 * freed only in the close callbacks of the sink's own timers, by which point
 * the context is gone (hiredis frees it at once, or when the callback that
 * asked for it returns).
 *
 * This file is the connection (connect, setup, disconnect, backoff, the stall
 * check) and the sink table (write, healthy, close, create); a job's
 * MULTI/EXEC, built and sent, and its EXEC reply are in ts_redis_job.c, the
 * lost-view watch in ts_redis_watch.c (ts_redis_sink_int.h).
 */
#include "ts_redis_sink_int.h"

#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

#include "ts_log.h"
#include "ts_redis_uv.h"

/* A connection whose replies stop coming (a silently dead peer: a network
 * partition, a frozen server, or a socket the loop no longer hears from) is
 * dropped after this long and the jobs are sent again on a new one. */
#define TS_REDIS_REPLY_TIMEOUT_MS 10000

static void ts_redis_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void ts_redis_errf(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- connection ----------------------------------------------------------- */

static void ts_redis_connect(ts_redis_sink *rs);

static void ts_redis_retry_cb(uv_timer_t *timer) {
    ts_redis_sink *rs = timer->data;
    if (rs->closing)
        return;
    if (rs->state == TS_REDIS_DOWN) {
        ts_redis_connect(rs);
        return;
    }
    /* Connected: resend the jobs whose EXEC failed. */
    for (ts_redis_job *job = rs->head; job; job = job->next)
        if (job->state == TS_REDIS_JOB_WAITING)
            job->state = TS_REDIS_JOB_QUEUED;
    ts_redis__send_queued(rs);
}

/* Arms the retry timer with the current backoff and doubles it. */
void ts_redis__backoff(ts_redis_sink *rs) {
    rs->errors++;
    if (rs->closing || uv_is_active((uv_handle_t *)&rs->retry_timer))
        return;
    uv_timer_start(&rs->retry_timer, ts_redis_retry_cb, (uint64_t)rs->backoff_ms, 0);
    rs->backoff_ms *= 2;
    if (rs->backoff_ms > TS_REDIS_BACKOFF_MAX_MS)
        rs->backoff_ms = TS_REDIS_BACKOFF_MAX_MS;
}

static void ts_redis_outage(ts_redis_sink *rs, const char *what, const char *detail) {
    if (!rs->down_logged)
        ts_log_warn(rs->comp, "%s: %s; retrying with backoff", what, detail);
    else
        ts_log_debug(rs->comp, "%s: %s", what, detail);
    rs->down_logged = 1;
}

static void ts_redis_setup_cb(redisAsyncContext *ac, void *reply_, void *privdata) {
    ts_redis_sink *rs = privdata;
    redisReply *reply = reply_;
    if (!reply || rs->closing || rs->ac != ac)
        return;
    rs->progress_ms = uv_now(rs->loop);
    if (reply->type == REDIS_REPLY_ERROR) {
        if (!rs->setup_failed)
            ts_redis_outage(rs, "connection setup failed", reply->str);
        rs->setup_failed = 1;
    }
    if (--rs->setup_pending > 0)
        return;
    if (rs->setup_failed) {
        redisAsyncDisconnect(ac); /* the disconnect callback retries later */
        return;
    }
    ts_log_info(rs->comp, "connected");
    rs->state = TS_REDIS_READY;
    rs->down_logged = 0;
    rs->backoff_ms = TS_REDIS_BACKOFF_MIN_MS;
    ts_redis__send_queued(rs);
    /* A server that restarted without persistence lost every view: look now. */
    ts_redis__watch_check(rs);
}

static void ts_redis_connect_cb(const redisAsyncContext *ac, int status) {
    ts_redis_sink *rs = ac->data;
    if (rs->closing)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns. */
        ts_redis_outage(rs, "connect failed", ac->errstr);
        rs->ac = NULL;
        rs->state = TS_REDIS_DOWN;
        ts_redis__backoff(rs);
        return;
    }
    redisAsyncContext *c = rs->ac;
    rs->setup_failed = 0;
    rs->setup_pending = 0;
    int ok = 1;
    if (rs->url.password) {
        ok &= rs->url.user ? redisAsyncCommand(c, ts_redis_setup_cb, rs, "AUTH %s %s", rs->url.user,
                                           rs->url.password) == REDIS_OK
                       : redisAsyncCommand(c, ts_redis_setup_cb, rs, "AUTH %s", rs->url.password) ==
                             REDIS_OK;
        rs->setup_pending++;
    }
    if (rs->url.db) {
        ok &= redisAsyncCommand(c, ts_redis_setup_cb, rs, "SELECT %d", rs->url.db) == REDIS_OK;
        rs->setup_pending++;
    }
    ok &= redisAsyncCommand(c, ts_redis_setup_cb, rs, "PING") == REDIS_OK;
    rs->setup_pending++;
    if (!ok)
        redisAsyncDisconnect(c);
}

static void ts_redis_disconnect_cb(const redisAsyncContext *ac, int status) {
    ts_redis_sink *rs = ac->data;
    (void)status;
    if (rs->ac == ac)
        rs->ac = NULL;
    rs->state = TS_REDIS_DOWN;
    if (rs->closing)
        return;
    ts_redis_outage(rs, "disconnected", ac->errstr[0] ? ac->errstr : "connection closed");
    /* EXEC callbacks already ran with NULL replies and requeued their jobs;
     * jobs waiting for a retry go with the next connection as well. */
    for (ts_redis_job *job = rs->head; job; job = job->next)
        job->state = TS_REDIS_JOB_QUEUED;
    ts_redis__backoff(rs);
}

static void ts_redis_connect(ts_redis_sink *rs) {
    redisAsyncContext *ac = rs->url.unix_path ? redisAsyncConnectUnix(rs->url.unix_path)
                                          : redisAsyncConnect(rs->url.host, rs->url.port);
    if (!ac || ac->err) {
        ts_redis_outage(rs, "connect failed", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        ts_redis__backoff(rs);
        return;
    }
    ac->data = rs;
    if (ts_redis_uv_attach(ac, rs->loop) != REDIS_OK) {
        ts_redis_outage(rs, "connect failed", "cannot attach to the loop");
        redisAsyncFree(ac);
        ts_redis__backoff(rs);
        return;
    }
    redisAsyncSetConnectCallback(ac, ts_redis_connect_cb);
    redisAsyncSetDisconnectCallback(ac, ts_redis_disconnect_cb);
    rs->ac = ac;
    rs->state = TS_REDIS_CONNECTING;
    rs->progress_ms = uv_now(rs->loop);
}

/* Every second: a connection that owes replies (or is still connecting) and
 * has not made progress for TS_REDIS_REPLY_TIMEOUT_MS is dropped. Freeing
 * the context answers its callbacks with NULL replies (the jobs go back to
 * the queue) and, once connected, runs the disconnect callback (reconnect
 * with backoff); a context still connecting is given up here. */
static void ts_redis_stall_tick(uv_timer_t *timer) {
    ts_redis_sink *rs = timer->data;
    redisAsyncContext *ac = rs->ac;
    uint64_t now = uv_now(rs->loop);
    if (!ac || rs->closing)
        return;
    int owes = ac->replies.head != NULL || rs->state == TS_REDIS_CONNECTING;
    if (!owes) {
        rs->progress_ms = now; /* idle: the clock starts with the next command */
        return;
    }
    if (now - rs->progress_ms < TS_REDIS_REPLY_TIMEOUT_MS)
        return;
    ts_log_warn(rs->comp, "no reply for %llu ms; dropping the connection and reconnecting",
                (unsigned long long)(now - rs->progress_ms));
    int connected = (ac->c.flags & REDIS_CONNECTED) != 0;
    redisAsyncFree(ac);
    if (!connected) {
        rs->ac = NULL;
        rs->state = TS_REDIS_DOWN;
        ts_redis__backoff(rs);
    }
}

/* ---- the sink table ------------------------------------------------------- */

static void ts_redis_kick_cb(uv_timer_t *timer) {
    ts_redis_sink *rs = timer->data;
    ts_redis_job *job = rs->head;
    while (job && !rs->closing) {
        ts_redis_job *next = job->next;
        if (job->immediate)
            ts_redis__job_finish(rs, job, TS_OK);
        job = next;
    }
}

static ts_err ts_redis_sink_write(void *sink, const ts_flush *flush, ts_sink_done_cb done,
                                  void *arg) {
    ts_redis_sink *rs = sink;
    if (rs->closing)
        return TS_E_STOPPED;
    if (!flush || !flush->effects || !done)
        return TS_E_INVALID;
    size_t n = ts_effects_count(flush->effects), views = 0;
    for (size_t i = 0; i < n; i++) {
        const ts_effect *e = ts_effects_at(flush->effects, i);
        if (e->dead || !ts_redis__is_view(e->kind))
            continue;
        int needs_b =
            e->kind == TS_EFF_VIEW_SET || e->kind == TS_EFF_ZADD || e->kind == TS_EFF_ZREM;
        if (!e->a.data || (needs_b && !e->b.data)) {
            ts_log_error(rs->comp, "task %s: view effect %zu lacks its key or value",
                         flush->task_id ? flush->task_id : "?", i);
            return TS_E_INVALID;
        }
        views++;
    }
    ts_redis_job *job = calloc(1, sizeof *job);
    if (!job)
        return TS_E_NOMEM;
    job->sink = rs;
    job->flush = *flush;
    job->task_id = strdup(flush->task_id ? flush->task_id : "?");
    if (!job->task_id) {
        free(job);
        return TS_E_NOMEM;
    }
    job->flush.task_id = job->task_id;
    job->done = done;
    job->arg = arg;
    job->state = TS_REDIS_JOB_QUEUED;
    job->immediate = views == 0;
    DL_APPEND(rs->head, job);
    if (job->immediate)
        uv_timer_start(&rs->kick_timer, ts_redis_kick_cb, 0, 0);
    else if (rs->state == TS_REDIS_READY && ts_redis__job_send(rs, job) != 0)
        ts_log_warn(rs->comp, "sending failed: %s", rs->ac ? rs->ac->errstr : "no connection");
    return TS_OK;
}

static int ts_redis_sink_healthy(void *sink) {
    ts_redis_sink *rs = sink;
    return rs->state == TS_REDIS_READY;
}

static void ts_redis_sink_free(ts_redis_sink *rs) {
    ts_redis_job *job = rs->head;
    while (job) {
        ts_redis_job *next = job->next;
        ts_redis__job_free(job);
        job = next;
    }
    ts_redis_url_free(&rs->url);
    free(rs->marker);
    for (size_t i = 0; i < rs->n_marks; i++)
        free(rs->marks[i]);
    free(rs->marks);
    free(rs);
}

static void ts_redis_handle_closed(uv_handle_t *handle) {
    ts_redis_sink *rs = handle->data;
    if (--rs->closes_pending > 0)
        return;
    if (rs->closed)
        rs->closed(rs->closed_arg);
    ts_redis_sink_free(rs);
}

static void ts_redis_sink_close(void *sink, void (*closed)(void *arg), void *arg) {
    ts_redis_sink *rs = sink;
    if (rs->closing)
        return;
    rs->closing = 1;
    rs->closed = closed;
    rs->closed_arg = arg;
    /* Fail every unfinished write; the jobs stay allocated because hiredis may
     * still hold them as callback data until the context is freed. */
    for (ts_redis_job *job = rs->head; job; job = job->next) {
        if (!job->finished) {
            job->finished = 1;
            job->done(job->arg, TS_E_STOPPED);
        }
    }
    if (rs->ac) {
        redisAsyncContext *ac = rs->ac;
        rs->ac = NULL;
        redisAsyncFree(ac);
    }
    rs->state = TS_REDIS_DOWN;
    rs->closes_pending = 4;
    uv_close((uv_handle_t *)&rs->stall_timer, ts_redis_handle_closed);
    uv_close((uv_handle_t *)&rs->retry_timer, ts_redis_handle_closed);
    uv_close((uv_handle_t *)&rs->kick_timer, ts_redis_handle_closed);
    uv_close((uv_handle_t *)&rs->watch_timer, ts_redis_handle_closed);
}

static const ts_sink_ops ts_redis_sink_ops = {
    .name = "redis",
    .write = ts_redis_sink_write,
    .healthy = ts_redis_sink_healthy,
    .close = ts_redis_sink_close,
};

uint64_t ts_redis_sink_errors(const ts_sink *sink) {
    return ((const ts_redis_sink *)sink->impl)->errors;
}

ts_err ts_redis_sink_create(uv_loop_t *loop, const char *url, ts_sink *out, char *err,
                            size_t errlen) {
    if (!loop || !url || !out) {
        ts_redis_errf(err, errlen, "redis sink: loop, url and out are required");
        return TS_E_INVALID;
    }
    /* hiredis writes with write(2), not send(MSG_NOSIGNAL): a write to a
     * server that just went away (a Redis restart, an outage) raises SIGPIPE,
     * whose default action kills the whole runtime without a log line. The
     * write must fail with EPIPE instead, which the sink retries. Found by
     * tests/integration/test_chaos.c. (Belongs in the process's startup too;
     * see /work/notes/chaos-findings.md.) */
    signal(SIGPIPE, SIG_IGN);
    ts_redis_sink *rs = calloc(1, sizeof *rs);
    if (!rs) {
        ts_redis_errf(err, errlen, "out of memory");
        return TS_E_NOMEM;
    }
    rs->loop = loop;
    rs->backoff_ms = TS_REDIS_BACKOFF_MIN_MS;
    ts_err rc = ts_redis_url_parse(url, &rs->url, err, errlen);
    if (rc == TS_OK)
        snprintf(rs->comp, sizeof rs->comp, "redis-sink %.140s", rs->url.where);
    if (rc != TS_OK) {
        if (rc == TS_E_NOMEM)
            ts_redis_errf(err, errlen, "out of memory");
        ts_redis_sink_free(rs);
        return rc;
    }
    /* Timer init cannot fail on a valid loop; from here on the handles are
     * owned and closing goes through ops->close. */
    uv_timer_init(loop, &rs->retry_timer);
    uv_timer_init(loop, &rs->kick_timer);
    uv_timer_init(loop, &rs->watch_timer);
    uv_timer_init(loop, &rs->stall_timer);
    rs->retry_timer.data = rs;
    rs->kick_timer.data = rs;
    rs->watch_timer.data = rs;
    rs->stall_timer.data = rs;
    uv_timer_start(&rs->stall_timer, ts_redis_stall_tick, 1000, 1000);
    ts_redis_connect(rs);
    out->ops = &ts_redis_sink_ops;
    out->impl = rs;
    return TS_OK;
}
