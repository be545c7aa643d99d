/* ts_redis_sink_int.h - what the Redis sink's files share and no one else
 * sees: ts_redis_sink.c (the connection, and the sink table: write, healthy,
 * close, create), ts_redis_job.c (a job: its MULTI/EXEC built and sent, its
 * EXEC reply settled) and ts_redis_watch.c (the lost-view watch). The API is
 * ts_redis_sink.h; the functions here are named ts_redis__ to tell them from
 * it.
 *
 * Threading: loop thread only.
 */
#ifndef TS_REDIS_SINK_INT_H
#define TS_REDIS_SINK_INT_H

#include <hiredis/async.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "ts_effects.h"
#include "ts_error.h"
#include "ts_redis_sink.h"
#include "ts_redis_url.h"
#include "ts_sink.h"

#define TS_REDIS_BACKOFF_MIN_MS 100
#define TS_REDIS_BACKOFF_MAX_MS 5000

typedef enum ts_redis_state {
    TS_REDIS_DOWN,       /* no context; the retry timer will connect */
    TS_REDIS_CONNECTING, /* context exists, setup commands in flight */
    TS_REDIS_READY,
} ts_redis_state;

typedef enum ts_redis_job_state {
    TS_REDIS_JOB_QUEUED,
    TS_REDIS_JOB_SENT,
    TS_REDIS_JOB_WAITING,
} ts_redis_job_state;

typedef struct ts_redis_sink ts_redis_sink;

typedef struct ts_redis_job {
    struct ts_redis_job *prev, *next; /* the sink's unfinished jobs (utlist DL) */
    ts_redis_sink *sink;
    ts_flush flush; /* copy of the caller's; effects borrowed until done */
    char *task_id;  /* owned copy, flush.task_id points here */
    ts_sink_done_cb done;
    void *arg;
    ts_redis_job_state state;
    int finished;  /* done has run (success, or STOPPED at close) */
    int failures;  /* consecutive failed attempts, to log an error only once */
    int immediate; /* no view effects: completes from the kick timer */
} ts_redis_job;

struct ts_redis_sink {
    uv_loop_t *loop;
    char comp[160]; /* log component: "redis-sink <where>" (no password) */
    ts_redis_url url; /* connection settings */

    redisAsyncContext *ac;
    ts_redis_state state;
    int setup_pending; /* replies still expected before READY */
    int setup_failed;
    int down_logged; /* the current outage was logged */

    ts_redis_job *head;        /* FIFO of unfinished jobs (utlist DL: head->prev is the last) */
    uv_timer_t retry_timer;    /* reconnect and resend after backoff */
    uv_timer_t kick_timer;     /* completes jobs without view effects */
    uv_timer_t stall_timer;    /* every second: drops a connection that stopped replying */
    uint64_t progress_ms;      /* uv_now of the last reply, connect, or idle check */
    int backoff_ms;
    uint64_t errors; /* failed attempts (each backed off), for metrics */

    /* Lost-view watch (ts_redis_sink_watch). */
    char *marker;
    void (*present)(void *arg, const char *const *fields, size_t n);
    void *present_arg;
    uv_timer_t watch_timer;
    int watch_inflight; /* an HKEYS of the marker awaits its reply */
    char **marks;       /* fields to HSET once connected */
    size_t n_marks;
    unsigned mark_gen;  /* bumped when marks are sent */
    unsigned watch_gen; /* mark_gen when the HKEYS in flight was sent */

    int closing;
    int closes_pending;
    void (*closed)(void *arg);
    void *closed_arg;
};

/* ---- ts_redis_sink.c ------------------------------------------------------ */

/** A failed attempt: counts it and, unless closing or the retry timer already
 * runs, arms the retry timer with the current backoff, which then doubles (up
 * to the max). */
void ts_redis__backoff(ts_redis_sink *rs);

/* ---- ts_redis_job.c ------------------------------------------------------- */

/** Frees a job and what it owns (not its borrowed effects); NULL is fine. */
void ts_redis__job_free(ts_redis_job *job);
/** Takes the job out of the FIFO, calls its `done` with `status`, frees it.
 * Only for a job hiredis no longer holds (its EXEC reply has arrived, or it
 * was never sent). */
void ts_redis__job_finish(ts_redis_sink *rs, ts_redis_job *job, ts_err status);
/** Non-zero for the effect kinds this sink writes (the view effects). */
int ts_redis__is_view(ts_effect_kind kind);
/** Queues a job's MULTI, commands and EXEC on the context and marks it SENT.
 * -1 when hiredis refuses (the context is going away). */
int ts_redis__job_send(ts_redis_sink *rs, ts_redis_job *job);
/** Sends every queued job when the connection is ready. */
void ts_redis__send_queued(ts_redis_sink *rs);

/* ---- ts_redis_watch.c ----------------------------------------------------- */

/** When watching and the connection is ready: sends the marks waiting (HSET)
 * and, unless one is in flight, an HKEYS of the marker, whose reply reports
 * the fields present. */
void ts_redis__watch_check(ts_redis_sink *rs);

#endif
