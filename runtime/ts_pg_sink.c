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
 * Partitions created as needed: a row statement failing with SQLSTATE 23514
 * (a check violation, which is also what "no partition of relation ... found
 * for row" is) adds its table to the job's `ensure` list and resends the job
 * at once. From then on each attempt of the job queues, after the claim and
 * in the same transaction, one `SELECT ts_partition_ensure_rows(table, rows)`
 * per listed table, with the job's upserted rows of that table as a JSON
 * array; the function (ts_migrate.h) finds the partition key column in the
 * catalog and creates each missing partition of a table registered in
 * ts_partitioning, and does nothing for any other table. So an ordinary check
 * violation costs one extra attempt and is then handled as any SQL error.
 *
 * Row statements are prepared once per connection and then only executed
 * (PostgreSQL parses and plans an upsert once, not once per row): a job whose
 * rows need a statement not prepared yet queues its Parse first, before the
 * claim, in the same transaction. A failed attempt forgets the statements it
 * prepared (they get new names next time), a new connection forgets all.
 *
 * `done` may call back into the sink (write, or close); close during result
 * processing is deferred until the dispatch returns, so the connection is
 * never freed under the loop that reads it.
 */
#include "ts_pg_sink.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "ts_buf.h"
#include "ts_log.h"
#include "ts_migrate.h"
#include "ts_pg_plan.h"

#define TS_PG_BACKOFF_MIN_MS 100
#define TS_PG_BACKOFF_MAX_MS 5000
#define TS_PG_NO_PARTITION "23514" /* check_violation: also "no partition ... for row" */
#define TS_PG_ROW_TWICE "21000"    /* cardinality_violation: one upsert names a row twice */

typedef enum ts_pg_state { TS_PG_DOWN, TS_PG_CONNECTING, TS_PG_READY } ts_pg_state;

typedef enum ts_pg_job_state {
    TS_PG_JOB_QUEUED,
    TS_PG_JOB_SENT,
    TS_PG_JOB_WAITING,
} ts_pg_job_state;

typedef struct ts_pg_sink ts_pg_sink;

/* A row statement prepared on the current connection, by its key
 * (ts_pg_plan_stmt_key). */
typedef struct ts_pg_prepared {
    char *key;
    char name[24];
    const void *job; /* the attempt that prepared it, until it succeeds */
    UT_hash_handle hh;
} ts_pg_prepared;

typedef struct ts_pg_job {
    struct ts_pg_job *next;          /* all unfinished jobs, FIFO */
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

    ts_pg_job *head, *tail;
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

/* ---- jobs ----------------------------------------------------------------- */

static void ts_pg_job_free(ts_pg_job *job) {
    if (!job)
        return;
    free(job->task_id);
    free(job->owner);
    free(job->errmsg);
    for (size_t i = 0; i < job->n_ensure; i++)
        free(job->ensure[i]);
    free(job->ensure);
    ts_pg_plan_close(&job->plan);
    free(job);
}

static void ts_pg_prepared_drop(ts_pg_sink *ps, ts_pg_prepared *p) {
    HASH_DEL(ps->prepared, p);
    free(p->key);
    free(p);
}

/* Forgets every prepared statement (a new session has none), or only those
 * prepared by `job`'s failed attempt (maybe not prepared at all). */
static void ts_pg_prepared_forget(ts_pg_sink *ps, const ts_pg_job *job) {
    ts_pg_prepared *p, *tmp;
    HASH_ITER(hh, ps->prepared, p, tmp) {
        if (!job || p->job == job)
            ts_pg_prepared_drop(ps, p);
    }
}

/* The attempt of `job` succeeded: what it prepared is prepared for good. */
static void ts_pg_prepared_confirm(ts_pg_sink *ps, const ts_pg_job *job) {
    ts_pg_prepared *p, *tmp;
    HASH_ITER(hh, ps->prepared, p, tmp) {
        if (p->job == job)
            p->job = NULL;
    }
}

static void ts_pg_job_reset_attempt(ts_pg_job *job) {
    job->stmts_done = 0;
    job->err_stmt = -1;
    job->sqlstate[0] = '\0';
    free(job->errmsg);
    job->errmsg = NULL;
}

static void ts_pg_job_unlink(ts_pg_sink *ps, ts_pg_job *job) {
    ts_pg_job **pp = &ps->head, *prev = NULL;
    while (*pp && *pp != job) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = job->next;
    if (ps->tail == job)
        ps->tail = prev;
    job->next = NULL;
}

static void ts_pg_job_finish(ts_pg_sink *ps, ts_pg_job *job, ts_err status) {
    ts_pg_job_unlink(ps, job);
    job->finished = 1;
    job->done(job->arg, status);
    ts_pg_job_free(job);
}

#define TS_PG_CLAIM_SQL "SELECT ts_claim_batch($1::text, $2::bigint, $3::text)"
#define TS_PG_ENSURE_SQL "SELECT ts_partition_ensure_rows($1::text, $2::jsonb)"

static int ts_pg_effect_on(const ts_effect *e, const char *table) {
    size_t len = strlen(table);
    return e->a.len == len && memcmp(e->a.data, table, len) == 0;
}

/* The live upserted rows of `table` in a job, as a JSON array of
 * {column: text or null} objects (malloc'ed text), for
 * ts_partition_ensure_rows. A value that is not UTF-8 becomes null: it cannot
 * be a partition key, which is a time. NULL when out of memory. */
static char *ts_pg_job_rows_json(ts_pg_sink *ps, const ts_pg_job *job, const char *table) {
    json_t *rows = json_array();
    size_t n = ts_effects_count(job->flush.effects);
    for (size_t i = 0; rows && i < n; i++) {
        const ts_effect *e = ts_effects_at(job->flush.effects, i);
        if (e->dead || e->kind != TS_EFF_ROW_UPSERT || !ts_pg_effect_on(e, table))
            continue;
        ts_rowcol *cols = ps->plan_scratch.cols;
        size_t ncols, nkey;
        ts_rowcols_unpack(&e->b, cols, TS_PG_PLAN_MAX_COLS, &ncols, &nkey); /* validated */
        json_t *row = json_object();
        for (size_t c = 0; row && c < ncols; c++) {
            json_t *v = cols[c].value
                            ? json_stringn(cols[c].value, cols[c].value_len)
                            : NULL;
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)cols[c].name_len, cols[c].name);
            json_object_set_new(row, name, v ? v : json_null());
        }
        if (!row || json_array_append_new(rows, row) != 0) {
            json_decref(rows);
            rows = NULL;
        }
    }
    char *text = rows ? json_dumps(rows, JSON_COMPACT) : NULL;
    json_decref(rows);
    return text;
}

/* The prepared statement for statement `s` of the job's plan, whose key is
 * `key`; when it is new, its SQL text is made (in `sql`) and its Parse queued. */
static ts_pg_prepared *ts_pg_prepare(ts_pg_sink *ps, ts_pg_job *job, size_t s,
                                     const ts_buf *key, ts_buf *sql) {
    ts_pg_prepared *p = NULL;
    HASH_FIND(hh, ps->prepared, key->data, key->len, p);
    if (p)
        return p;
    ts_buf_reset(sql);
    ts_pg_plan_sql(&job->plan, job->flush.effects, s, sql);
    if (sql->failed)
        return NULL;
    p = calloc(1, sizeof(*p));
    if (!p || !(p->key = malloc(key->len))) {
        free(p);
        return NULL;
    }
    memcpy(p->key, key->data, key->len);
    snprintf(p->name, sizeof p->name, "ts_row_%lu", ++ps->prepared_seq);
    p->job = job;
    if (!PQsendPrepare(ps->conn, p->name, sql->data, 0, NULL)) {
        free(p->key);
        free(p);
        return NULL;
    }
    HASH_ADD_KEYPTR(hh, ps->prepared, p->key, key->len, p);
    job->prepares_sent++;
    return p;
}

/* Queues a job's statements and its Sync on the connection. -1 when libpq
 * refuses (the connection is broken). */
static int ts_pg_job_send(ts_pg_sink *ps, ts_pg_job *job) {
    PGconn *conn = ps->conn;
    const ts_effects *effs = job->flush.effects;
    ts_pg_plan *plan = &job->plan;
    if (ts_pg_plan_build(plan, effs, job->single_rows, &ps->plan_scratch) != TS_OK)
        return -1;
    ts_buf key = {0}, sql = {0}, vals = {0};
    ts_pg_prepared **stmts = malloc((plan->n_stmts ? plan->n_stmts : 1) * sizeof(*stmts));
    int rc = stmts ? 0 : -1;
    /* First the statements this job needs and the connection has not prepared:
     * in the job's transaction, before the claim. */
    job->prepares_sent = 0;
    for (size_t s = 0; s < plan->n_stmts && rc == 0; s++) {
        ts_buf_reset(&key);
        ts_pg_plan_stmt_key(plan, effs, s, &key);
        if (key.failed || !(stmts[s] = ts_pg_prepare(ps, job, s, &key, &sql)))
            rc = -1;
    }
    char next[24];
    snprintf(next, sizeof next, "%lld", (long long)job->flush.next_offset);
    const char *claim[3] = {job->task_id, next, job->owner};
    if (rc == 0 && !PQsendQueryParams(conn, TS_PG_CLAIM_SQL, 3, NULL, claim, NULL, NULL, 0))
        rc = -1;
    for (size_t t = 0; t < job->n_ensure && rc == 0; t++) {
        char *rows = ts_pg_job_rows_json(ps, job, job->ensure[t]);
        const char *args[2] = {job->ensure[t], rows};
        if (!rows || !PQsendQueryParams(conn, TS_PG_ENSURE_SQL, 2, NULL, args, NULL, NULL, 0))
            rc = -1;
        free(rows);
    }
    for (size_t s = 0; s < plan->n_stmts && rc == 0; s++) {
        size_t np = 0;
        const char *const *params = ts_pg_plan_params(plan, effs, s, &vals, &np);
        if (!params || !PQsendQueryPrepared(conn, stmts[s]->name, (int)np, params, NULL, NULL, 0))
            rc = -1;
    }
    free(stmts);
    ts_buf_close(&key);
    ts_buf_close(&sql);
    ts_buf_close(&vals);
    if (rc != 0 || !PQpipelineSync(conn)) {
        ts_pg_prepared_forget(ps, job);
        return -1;
    }
    ts_pg_job_reset_attempt(job);
    job->ensure_sent = (int)job->n_ensure;
    job->state = TS_PG_JOB_SENT;
    job->next_inflight = NULL;
    if (ps->inflight_tail)
        ps->inflight_tail->next_inflight = job;
    else
        ps->inflight_head = job;
    ps->inflight_tail = job;
    return 0;
}

/* The plan's statement behind result `idx` of the current attempt, or -1
 * (a Parse, the claim or an ensure). */
static long ts_pg_job_row_stmt(const ts_pg_job *job, int idx) {
    idx -= job->prepares_sent + 1 + job->ensure_sent;
    return idx >= 0 && (size_t)idx < job->plan.n_stmts ? idx : -1;
}

/* Rebuilds statement `idx` of a job's attempt for an error message. */
static char *ts_pg_job_stmt_text(ts_pg_job *job, int idx) {
    int rel = idx - job->prepares_sent;
    if (rel < 0)
        return strdup("(preparing a row statement)");
    if (rel == 0)
        return strdup(TS_PG_CLAIM_SQL);
    if (rel <= job->ensure_sent)
        return strdup(TS_PG_ENSURE_SQL);
    long s = ts_pg_job_row_stmt(job, idx);
    if (s < 0)
        return NULL;
    ts_buf sql = {0};
    ts_pg_plan_sql(&job->plan, job->flush.effects, (size_t)s, &sql);
    return sql.data;
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
    ts_pg_prepared_forget(ps, NULL);
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

static void ts_pg_retry_cb(uv_timer_t *timer);

static void ts_pg_backoff(ts_pg_sink *ps) {
    ps->errors++;
    if (ps->closing || uv_is_active((uv_handle_t *)&ps->retry_timer))
        return;
    uv_timer_start(&ps->retry_timer, ts_pg_retry_cb, (uint64_t)ps->backoff_ms, 0);
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
    ts_pg_prepared_forget(ps, NULL);
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
    ts_pg_backoff(ps);
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
        if (ts_pg_job_send(ps, job) != 0) {
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

/* Errors worth retrying as they are: connection trouble, serialization
 * failures and deadlocks, lack of resources, operator intervention. */
static int ts_pg_retriable(const char *sqlstate) {
    return strncmp(sqlstate, "08", 2) == 0 || strncmp(sqlstate, "40", 2) == 0 ||
           strncmp(sqlstate, "53", 2) == 0 || strncmp(sqlstate, "57", 2) == 0 ||
           strcmp(sqlstate, "55P03") == 0;
}

/* The table of the job's failed row statement joins its `ensure` list.
 * @returns 1 when it was added, 0 when it was there already (or the failed
 * statement is not a row, or memory ran out): nothing new to try. */
static int ts_pg_job_add_ensure(ts_pg_sink *ps, ts_pg_job *job) {
    long s = ts_pg_job_row_stmt(job, job->err_stmt);
    if (s < 0)
        return 0;
    const ts_effect *failed = ts_pg_plan_first(&job->plan, job->flush.effects, (size_t)s);
    if (!failed || failed->kind != TS_EFF_ROW_UPSERT)
        return 0;
    for (size_t t = 0; t < job->n_ensure; t++)
        if (ts_pg_effect_on(failed, job->ensure[t]))
            return 0;
    char **list = realloc(job->ensure, (job->n_ensure + 1) * sizeof *list);
    if (!list)
        return 0;
    job->ensure = list;
    if (!(list[job->n_ensure] = strndup(failed->a.data, failed->a.len)))
        return 0;
    job->n_ensure++;
    ts_log_info(ps->comp, "task %s batch [%lld,%lld): %s; creating partitions of %s as needed",
                job->task_id, (long long)job->flush.first_offset,
                (long long)job->flush.next_offset, job->errmsg ? job->errmsg : "?",
                list[job->n_ensure - 1]);
    return 1;
}

/* A job's Sync arrived: decide its fate. */
static void ts_pg_job_settle(ts_pg_sink *ps, ts_pg_job *job) {
    /* The Parses come first: an error after them means they all took. */
    if (job->err_stmt < 0 || job->err_stmt >= job->prepares_sent)
        ts_pg_prepared_confirm(ps, job);
    else
        ts_pg_prepared_forget(ps, job);
    if (job->err_stmt < 0) {
        ps->backoff_ms = TS_PG_BACKOFF_MIN_MS;
        ts_pg_job_finish(ps, job, TS_OK);
        return;
    }
    if (strcmp(job->sqlstate, TS_MIGRATE_ALREADY_APPLIED) == 0) {
        ts_log_info(ps->comp, "task %s batch [%lld,%lld) was already applied; skipped",
                    job->task_id, (long long)job->flush.first_offset,
                    (long long)job->flush.next_offset);
        ts_pg_job_finish(ps, job, TS_OK);
        return;
    }
    int row_twice = strcmp(job->sqlstate, TS_PG_ROW_TWICE) == 0 && !job->single_rows &&
                    ts_pg_job_row_stmt(job, job->err_stmt) >= 0;
    if (row_twice) {
        ts_log_info(ps->comp, "task %s batch [%lld,%lld): %s; writing its rows one at a time",
                    job->task_id, (long long)job->flush.first_offset,
                    (long long)job->flush.next_offset, job->errmsg ? job->errmsg : "?");
        job->single_rows = 1;
    }
    if (row_twice ||
        (strcmp(job->sqlstate, TS_PG_NO_PARTITION) == 0 && ts_pg_job_add_ensure(ps, job))) {
        /* Not a failure yet: resend at once, one row per statement or
         * creating the missing partitions. */
        job->state = TS_PG_JOB_WAITING;
        if (!ps->closing) {
            uv_timer_stop(&ps->retry_timer);
            uv_timer_start(&ps->retry_timer, ts_pg_retry_cb, 0, 0);
        }
        return;
    }
    const char *msg = job->errmsg ? job->errmsg : "?";
    if (ts_pg_retriable(job->sqlstate)) {
        ts_log(job->failures == 0 ? TS_LOG_WARN : TS_LOG_DEBUG, ps->comp,
               "task %s batch [%lld,%lld): %s (SQLSTATE %s); retrying", job->task_id,
               (long long)job->flush.first_offset, (long long)job->flush.next_offset, msg,
               job->sqlstate);
    } else if (job->failures == 0) {
        /* Not going to fix itself: say so once, loudly, with the statement. */
        char *stmt = ts_pg_job_stmt_text(job, job->err_stmt);
        ts_log_error(ps->comp,
                     "task %s batch [%lld,%lld) failed: %s (SQLSTATE %s) in statement: %s; "
                     "retrying until fixed",
                     job->task_id, (long long)job->flush.first_offset,
                     (long long)job->flush.next_offset, msg, job->sqlstate, stmt ? stmt : "?");
        free(stmt);
    }
    job->failures++;
    job->state = TS_PG_JOB_WAITING;
    ts_pg_backoff(ps);
}

/* Reads every result available, settling jobs at their Sync. */
static void ts_pg_read_results(ts_pg_sink *ps) {
    int nulls = 0;
    while (ps->inflight_head && !ps->closing && ps->conn) {
        if (PQstatus(ps->conn) == CONNECTION_BAD || PQisBusy(ps->conn))
            break;
        PGresult *res = PQgetResult(ps->conn);
        ts_pg_job *job = ps->inflight_head;
        if (!res) {
            /* The end of one statement's results; two in a row would mean
             * libpq has nothing more for us. */
            if (++nulls >= 2)
                break;
            job->stmts_done++;
            continue;
        }
        nulls = 0;
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_FATAL_ERROR && job->err_stmt < 0) {
            const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
            snprintf(job->sqlstate, sizeof job->sqlstate, "%s", state ? state : "?????");
            job->errmsg = strdup(msg ? msg : PQresultErrorMessage(res));
            job->err_stmt = job->stmts_done;
        }
        PQclear(res);
        if (st == PGRES_PIPELINE_SYNC) {
            ps->inflight_head = job->next_inflight;
            if (!ps->inflight_head)
                ps->inflight_tail = NULL;
            job->next_inflight = NULL;
            ts_pg_job_settle(ps, job);
        }
    }
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
    ts_pg_read_results(ps);
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

static void ts_pg_retry_cb(uv_timer_t *timer) {
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
            ts_pg_job_finish(ps, job, TS_OK);
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
    if (ps->tail)
        ps->tail->next = job;
    else
        ps->head = job;
    ps->tail = job;
    if (job->immediate) {
        uv_timer_start(&ps->kick_timer, ts_pg_kick_cb, 0, 0);
    } else if (ps->state == TS_PG_READY) {
        if (ts_pg_job_send(ps, job) != 0 || ts_pg_flush_out(ps) != 0) {
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
        ts_pg_job_free(job);
        job = next;
    }
    ps->head = ps->tail = NULL;
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
