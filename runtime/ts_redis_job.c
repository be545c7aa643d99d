/* ts_redis_job.c - a job of the Redis sink: its MULTI/EXEC built and sent,
 * its EXEC reply settled.
 *
 * A job is one accepted write (ts_redis_sink.c tells its states and how a
 * dropped connection requeues it). Sending it queues MULTI, one command per
 * live view effect in the flush's order, and EXEC on the context; only EXEC
 * carries a callback. Its reply completes the job, or parks it (WAITING) until
 * the retry timer (ts_redis__backoff); a NULL reply (the connection is going
 * away) puts it back in the queue.
 */
#include "ts_redis_sink_int.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

#include "ts_log.h"

/* ---- jobs ----------------------------------------------------------------- */

void ts_redis__job_free(ts_redis_job *job) {
    if (!job)
        return;
    free(job->task_id);
    free(job);
}

/* Completes a job: out of the list, `done` called, freed. The job is no longer
 * referenced by hiredis (its EXEC reply has arrived, or it was never sent). */
void ts_redis__job_finish(ts_redis_sink *rs, ts_redis_job *job, ts_err status) {
    DL_DELETE(rs->head, job);
    job->finished = 1;
    job->done(job->arg, status);
    ts_redis__job_free(job);
}

int ts_redis__is_view(ts_effect_kind kind) {
    return kind == TS_EFF_VIEW_SET || kind == TS_EFF_VIEW_DEL || kind == TS_EFF_ZADD ||
           kind == TS_EFF_ZREM || kind == TS_EFF_ZREM_BELOW;
}

static void ts_redis_exec_cb(redisAsyncContext *ac, void *reply, void *privdata);

/* Queues one job's MULTI, commands and EXEC on the context (hiredis buffers
 * them and writes when the socket is writable). */
int ts_redis__job_send(ts_redis_sink *rs, ts_redis_job *job) {
    redisAsyncContext *ac = rs->ac;
    if (redisAsyncCommand(ac, NULL, NULL, "MULTI") != REDIS_OK)
        return -1;
    const ts_effects *effs = job->flush.effects;
    size_t n = ts_effects_count(effs);
    for (size_t i = 0; i < n; i++) {
        const ts_effect *e = ts_effects_at(effs, i);
        if (e->dead || !ts_redis__is_view(e->kind))
            continue;
        const char *argv[4];
        size_t argvlen[4];
        char num[48];
        int argc = 0;
        switch (e->kind) {
        case TS_EFF_VIEW_SET:
            argv[argc] = "SET", argvlen[argc++] = 3;
            argv[argc] = e->a.data, argvlen[argc++] = e->a.len;
            argv[argc] = e->b.data, argvlen[argc++] = e->b.len;
            break;
        case TS_EFF_VIEW_DEL:
            argv[argc] = "DEL", argvlen[argc++] = 3;
            argv[argc] = e->a.data, argvlen[argc++] = e->a.len;
            break;
        case TS_EFF_ZADD:
            snprintf(num, sizeof num, "%.17g", e->num);
            argv[argc] = "ZADD", argvlen[argc++] = 4;
            argv[argc] = e->a.data, argvlen[argc++] = e->a.len;
            argv[argc] = num, argvlen[argc++] = strlen(num);
            argv[argc] = e->b.data, argvlen[argc++] = e->b.len;
            break;
        case TS_EFF_ZREM:
            argv[argc] = "ZREM", argvlen[argc++] = 4;
            argv[argc] = e->a.data, argvlen[argc++] = e->a.len;
            argv[argc] = e->b.data, argvlen[argc++] = e->b.len;
            break;
        case TS_EFF_ZREM_BELOW:
            /* "(" makes the bound exclusive: members with score < num go. */
            snprintf(num, sizeof num, "(%.17g", e->num);
            argv[argc] = "ZREMRANGEBYSCORE", argvlen[argc++] = 16;
            argv[argc] = e->a.data, argvlen[argc++] = e->a.len;
            argv[argc] = "-inf", argvlen[argc++] = 4;
            argv[argc] = num, argvlen[argc++] = strlen(num);
            break;
        default:
            break;
        }
        if (redisAsyncCommandArgv(ac, NULL, NULL, argc, argv, argvlen) != REDIS_OK)
            return -1;
    }
    if (redisAsyncCommand(ac, ts_redis_exec_cb, job, "EXEC") != REDIS_OK)
        return -1;
    job->state = TS_REDIS_JOB_SENT;
    return 0;
}

/* Sends every queued job when the connection is ready. */
void ts_redis__send_queued(ts_redis_sink *rs) {
    if (rs->state != TS_REDIS_READY || !rs->ac)
        return;
    for (ts_redis_job *job = rs->head; job; job = job->next) {
        if (job->state != TS_REDIS_JOB_QUEUED || job->immediate)
            continue;
        if (ts_redis__job_send(rs, job) != 0) {
            /* Only fails when the context is going away; the disconnect
             * callback requeues and reconnects. */
            ts_log_warn(rs->comp, "sending failed: %s", rs->ac->errstr);
            return;
        }
    }
}

/* ---- the EXEC reply ------------------------------------------------------- */

static void ts_redis_exec_cb(redisAsyncContext *ac, void *reply_, void *privdata) {
    (void)ac;
    ts_redis_job *job = privdata;
    ts_redis_sink *rs = job->sink;
    redisReply *reply = reply_;
    if (reply)
        rs->progress_ms = uv_now(rs->loop);
    if (job->finished || rs->closing)
        return;
    if (!reply) {
        /* The connection is going away; the disconnect callback reconnects. */
        job->state = TS_REDIS_JOB_QUEUED;
        return;
    }
    const char *why = NULL;
    char buf[256];
    if (reply->type == REDIS_REPLY_ERROR) {
        why = reply->str;
    } else if (reply->type == REDIS_REPLY_NIL) {
        why = "transaction aborted";
    } else if (reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->elements; i++)
            if (reply->element[i]->type == REDIS_REPLY_ERROR) {
                snprintf(buf, sizeof buf, "command %zu of the flush: %s", i + 1,
                         reply->element[i]->str);
                why = buf;
                break;
            }
    }
    if (!why) {
        rs->backoff_ms = TS_REDIS_BACKOFF_MIN_MS;
        ts_redis__job_finish(rs, job, TS_OK);
        return;
    }
    /* A command Redis refuses (wrong type, out of memory) is not dropped: an
     * operator has to fix it, and the flush is resent until it lands. */
    if (job->failures++ == 0)
        ts_log_error(rs->comp, "write of task %s offsets [%lld,%lld) failed: %s; retrying",
                     job->flush.task_id, (long long)job->flush.first_offset,
                     (long long)job->flush.next_offset, why);
    job->state = TS_REDIS_JOB_WAITING;
    ts_redis__backoff(rs);
}
