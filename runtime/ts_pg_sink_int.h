/* ts_pg_sink_int.h - what the Postgres sink's files share and no one else
 * sees: ts_pg_sink.c (the sink table, construction and close, and the
 * connection: connect, poll, backoff, the pipeline's dispatch) and
 * ts_pg_job.c (a job: its statements built and sent, its results read and
 * settled). The API is ts_pg_sink.h; the functions here are named ts_pg__ to
 * tell them from it.
 *
 * Threading: loop thread only.
 */
#ifndef TS_PG_SINK_INT_H
#define TS_PG_SINK_INT_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>
#include <uthash.h>
#include <uv.h>

#include "ts_error.h"
#include "ts_pg_plan.h"
#include "ts_pg_sink.h"
#include "ts_sink.h"

#define TS_PG_BACKOFF_MIN_MS 100
#define TS_PG_BACKOFF_MAX_MS 5000

typedef enum ts_pg_state { TS_PG_DOWN, TS_PG_CONNECTING, TS_PG_READY } ts_pg_state;

typedef enum ts_pg_job_state {
    TS_PG_JOB_QUEUED,
    TS_PG_JOB_SENT,
    TS_PG_JOB_WAITING,
} ts_pg_job_state;

typedef struct ts_pg_sink ts_pg_sink;

/* A statement prepared on the current connection, by its key: a row
 * statement's (ts_pg_plan_stmt_key), or "claim". */
typedef struct ts_pg_prepared {
    char *key;
    char name[24];
    const void *job; /* the attempt that prepared it, until it succeeds */
    UT_hash_handle hh;
} ts_pg_prepared;

typedef struct ts_pg_job {
    struct ts_pg_job *prev, *next;   /* all unfinished jobs, FIFO (utlist DL) */
    struct ts_pg_job *next_inflight; /* jobs on the wire, in sending order */
    ts_flush flush;                  /* copy; effects borrowed until done */
    char *task_id;                   /* owned; flush.task_id points here */
    char *owner;                     /* owned; flush.owner points here */
    ts_sink_done_cb done;
    void *arg;
    ts_pg_job_state state;
    int immediate; /* no row effects: completes from the kick timer */
    int finished;
    int failures;
    char **ensure;      /* owned: tables whose partitions each attempt ensures */
    size_t n_ensure;
    int ensure_sent;    /* ensure statements in the current attempt, after the claim */
    ts_pg_plan plan;    /* the current attempt's row statements */
    int single_rows;    /* plan one statement per row (after SQLSTATE 21000) */
    int prepares_sent;  /* statements prepared by the current attempt, before the claim */
    /* results of the current attempt */
    int stmts_done; /* statements whose results were fully read */
    int err_stmt;   /* statement that failed (0 = the claim), -1 none */
    char sqlstate[6];
    char *errmsg;
} ts_pg_job;

/* The poll handle lives in its own allocation because a connection's handle
 * may still be closing when the next connection (new socket) starts. */
typedef struct ts_pg_poll {
    uv_poll_t handle;
    ts_pg_sink *sink; /* NULL once detached from the sink */
    int fd;
    int events;
} ts_pg_poll;

struct ts_pg_sink {
    uv_loop_t *loop;
    char comp[64];
    char *conninfo;
    PGconn *conn;
    ts_pg_state state;
    ts_pg_poll *poll;
    int down_logged;

    ts_pg_job *head; /* unfinished jobs (utlist DL: head->prev is the last) */
    ts_pg_job *inflight_head, *inflight_tail;
    ts_pg_plan_scratch plan_scratch; /* its `cols` also unpack rows to check or list them */
    ts_pg_prepared *prepared;
    unsigned long prepared_seq; /* names: never reused within a session */

    uv_timer_t retry_timer;
    uv_timer_t kick_timer;
    int backoff_ms;
    uint64_t errors; /* failed attempts (each backed off), for metrics */

    int dispatching; /* inside result processing: close must wait */
    int closing;
    int close_deferred;
    int closes_pending;
    void (*closed)(void *arg);
    void *closed_arg;
};

/* ---- ts_pg_sink.c --------------------------------------------------------- */

/** A failed attempt: counts it and, unless the retry timer already runs,
 * starts it with the current backoff, which then doubles (up to the max). */
void ts_pg__backoff(ts_pg_sink *ps);
/** The retry timer: connects when down, else sends the WAITING jobs again. */
void ts_pg__retry_cb(uv_timer_t *timer);

/* ---- ts_pg_job.c ---------------------------------------------------------- */

/** Frees a job and all it owns (not its borrowed effects); NULL is fine. */
void ts_pg__job_free(ts_pg_job *job);
/** Forgets every prepared statement (a new session has none), or only those
 * prepared by `job`'s failed attempt. */
void ts_pg__prepared_forget(ts_pg_sink *ps, const ts_pg_job *job);
/** Takes the job out of the FIFO, calls its `done` with `status`, frees it. */
void ts_pg__job_finish(ts_pg_sink *ps, ts_pg_job *job, ts_err status);
/** Queues a job's statements and its Sync on the connection, and puts it on
 * the `inflight` FIFO. -1 when libpq refuses (the connection is broken). */
int ts_pg__job_send(ts_pg_sink *ps, ts_pg_job *job);
/** Reads every result available, settling jobs at their Sync. */
void ts_pg__read_results(ts_pg_sink *ps);

#endif
