/* ts_pg_job.c - a job of the Postgres sink: built, sent, its results settled.
 *
 * A job is one accepted write (ts_pg_sink.c tells how jobs travel the
 * pipeline). Here its attempt is built and queued on the connection (the
 * Parses of statements not prepared yet, the claim, the ensures, the row
 * statements of its plan, a Sync), its results are read in sending order,
 * and at its Sync it is settled: completed, resent at once, or parked until
 * the retry timer (ts_pg__backoff).
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
 * Row statements and the claim are prepared once per connection and then
 * only executed (PostgreSQL parses and plans an upsert once, not once per
 * row or batch): a job that needs a statement not prepared yet queues its
 * Parse first, before the claim, in the same transaction. A failed attempt
 * forgets the statements it prepared (they get new names next time), a new
 * connection forgets all.
 */
#include "ts_pg_sink_int.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

#include "ts_buf.h"
#include "ts_log.h"
#include "ts_migrate.h"

#define TS_PG_NO_PARTITION "23514" /* check_violation: also "no partition ... for row" */
#define TS_PG_ROW_TWICE "21000"    /* cardinality_violation: one upsert names a row twice */

/* ---- jobs ----------------------------------------------------------------- */

void ts_pg__job_free(ts_pg_job *job) {
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
void ts_pg__prepared_forget(ts_pg_sink *ps, const ts_pg_job *job) {
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

void ts_pg__job_finish(ts_pg_sink *ps, ts_pg_job *job, ts_err status) {
    DL_DELETE(ps->head, job);
    job->finished = 1;
    job->done(job->arg, status);
    ts_pg__job_free(job);
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

/* A new prepared statement of `sql` under `key`, its Parse queued in `job`'s
 * attempt; NULL when out of memory or libpq refuses. */
static ts_pg_prepared *ts_pg_prepared_new(ts_pg_sink *ps, ts_pg_job *job, const char *key,
                                          size_t klen, const char *sql) {
    ts_pg_prepared *p = calloc(1, sizeof(*p));
    if (!p || !(p->key = malloc(klen))) {
        free(p);
        return NULL;
    }
    memcpy(p->key, key, klen);
    snprintf(p->name, sizeof p->name, "ts_stmt_%lu", ++ps->prepared_seq);
    p->job = job;
    if (!PQsendPrepare(ps->conn, p->name, sql, 0, NULL)) {
        free(p->key);
        free(p);
        return NULL;
    }
    HASH_ADD_KEYPTR(hh, ps->prepared, p->key, klen, p);
    job->prepares_sent++;
    return p;
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
    return sql->failed ? NULL : ts_pg_prepared_new(ps, job, key->data, key->len, sql->data);
}

/* The claim's prepared statement: every job runs it, and parsed and planned
 * each time it cost PostgreSQL ~10% more samples at 10K latency probes/s
 * (small batches; 14.6 -> 13.1% and 15.7 -> 14.3% of the machine's, two
 * interleaved pairs). Its key is shorter than any row statement's
 * (ts_pg_plan_stmt_key starts with three size_t), so the two never meet. */
static ts_pg_prepared *ts_pg_prepare_claim(ts_pg_sink *ps, ts_pg_job *job) {
    static const char key[] = "claim";
    ts_pg_prepared *p = NULL;
    HASH_FIND(hh, ps->prepared, key, sizeof(key) - 1, p);
    return p ? p : ts_pg_prepared_new(ps, job, key, sizeof(key) - 1, TS_PG_CLAIM_SQL);
}

/* Queues a job's statements and its Sync on the connection. -1 when libpq
 * refuses (the connection is broken). */
int ts_pg__job_send(ts_pg_sink *ps, ts_pg_job *job) {
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
    ts_pg_prepared *claim_stmt = rc == 0 ? ts_pg_prepare_claim(ps, job) : NULL;
    if (!claim_stmt)
        rc = -1;
    for (size_t s = 0; s < plan->n_stmts && rc == 0; s++) {
        ts_buf_reset(&key);
        ts_pg_plan_stmt_key(plan, effs, s, &key);
        if (key.failed || !(stmts[s] = ts_pg_prepare(ps, job, s, &key, &sql)))
            rc = -1;
    }
    char next[24];
    snprintf(next, sizeof next, "%lld", (long long)job->flush.next_offset);
    const char *claim[3] = {job->task_id, next, job->owner};
    if (rc == 0 && !PQsendQueryPrepared(conn, claim_stmt->name, 3, claim, NULL, NULL, 0))
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
        ts_pg__prepared_forget(ps, job);
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
        return strdup("(preparing a statement)");
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

/* ---- results ------------------------------------------------------------- */

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
        ts_pg__prepared_forget(ps, job);
    if (job->err_stmt < 0) {
        ps->backoff_ms = TS_PG_BACKOFF_MIN_MS;
        ts_pg__job_finish(ps, job, TS_OK);
        return;
    }
    if (strcmp(job->sqlstate, TS_MIGRATE_ALREADY_APPLIED) == 0) {
        ts_log_info(ps->comp, "task %s batch [%lld,%lld) was already applied; skipped",
                    job->task_id, (long long)job->flush.first_offset,
                    (long long)job->flush.next_offset);
        ts_pg__job_finish(ps, job, TS_OK);
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
            uv_timer_start(&ps->retry_timer, ts_pg__retry_cb, 0, 0);
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
    ts_pg__backoff(ps);
}

/* Reads every result available, settling jobs at their Sync. */
void ts_pg__read_results(ts_pg_sink *ps) {
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
