/* ts_pg_plan.h - the SQL statements that write a flush's row effects.
 *
 * A plan orders a flush's live row effects into statements. Upserts of the
 * same table with the same columns go together into multi-row statements
 * (`INSERT .. VALUES (..), (..) .. ON CONFLICT .. DO UPDATE`) of 64, 16, 4 or
 * 2 rows, so PostgreSQL runs one executor for many rows instead of one per
 * row; what is left over, and every delete, is one statement per row. The
 * fixed chunk sizes keep the number of distinct statements (each prepared
 * once per connection) small.
 *
 * Why grouping is safe: effects coalesce per table and key (ts_effects.h), so
 * no two statements of a flush touch the same row and no multi-row statement
 * names a key twice; a group takes the place of its first row, so rows move
 * only earlier, and only behind rows of other tables. A sink table's foreign
 * keys to another sink table must therefore be DEFERRABLE INITIALLY DEFERRED
 * (the whole flush is one transaction). Two key texts naming one row (e.g.
 * two spellings of one timestamp) make a multi-row upsert fail with SQLSTATE
 * 21000; the sink then plans the flush again with `single_rows`.
 *
 * Threading: none; a plan belongs to one job.
 */
#ifndef TS_PG_PLAN_H
#define TS_PG_PLAN_H

#include <stddef.h>

#include "ts_buf.h"
#include "ts_effects.h"
#include "ts_error.h"

#define TS_PG_PLAN_MAX_COLS 1600   /* PostgreSQL's own limit per table */
#define TS_PG_PLAN_MAX_PARAMS 65535 /* the protocol's limit per statement */

/** One statement: the rows rows[at .. at + n) of the plan, all of one table,
 * kind and column list. */
typedef struct ts_pg_plan_stmt {
    size_t at, n;
} ts_pg_plan_stmt;

/** Working memory the plans of one sink share (they are used one at a time). */
typedef struct ts_pg_plan_scratch {
    ts_rowcol *cols; /* an unpacked row */
    size_t *offsets; /* parameter values in ts_pg_plan_params */
    const char **params;
    size_t params_cap;
} ts_pg_plan_scratch;

typedef struct ts_pg_plan {
    size_t *rows;           /* effect indexes, in statement order */
    ts_pg_plan_stmt *stmts; /* in sending order */
    size_t n_rows, n_stmts;
    ts_pg_plan_scratch *scratch; /* borrowed */
} ts_pg_plan;

/** Whether `e` is a live row effect (an upsert or a delete). */
int ts_pg_plan_is_row(const ts_effect *e);

/** Plans the live row effects of `effs` (validated: every row unpacks, has a
 * key column, no NUL bytes); one statement per row when `single_rows`.
 * Replaces the plan's previous contents; the plan uses `scratch` from now on. */
ts_err ts_pg_plan_build(ts_pg_plan *plan, const ts_effects *effs, int single_rows,
                        ts_pg_plan_scratch *scratch);

/** Appends to `key` what determines statement `s`'s SQL text (kind, row
 * count, table, column names, key columns, a delete's NULL keys) in far
 * fewer bytes than the text: a cache of prepared statements looks them up by
 * it and makes the text only when it prepares one. */
void ts_pg_plan_stmt_key(ts_pg_plan *plan, const ts_effects *effs, size_t s, ts_buf *key);

/** Appends statement `s`'s SQL text to `sql` (NUL-terminated, for libpq). */
void ts_pg_plan_sql(ts_pg_plan *plan, const ts_effects *effs, size_t s, ts_buf *sql);

/** The parameter values of statement `s` for PQsendQueryPrepared: `vals` is
 * emptied and holds the NUL-terminated texts; the returned array (the plan's,
 * valid until its next call) points into it, NULL for SQL NULL. Sets *n.
 * @returns NULL when out of memory. */
const char *const *ts_pg_plan_params(ts_pg_plan *plan, const ts_effects *effs, size_t s,
                                     ts_buf *vals, size_t *n);

/** The first row effect of statement `s` (its table names the statement's). */
const ts_effect *ts_pg_plan_first(const ts_pg_plan *plan, const ts_effects *effs, size_t s);

/** Frees the plan's memory; it is empty and usable again. */
void ts_pg_plan_close(ts_pg_plan *plan);
/** Frees the scratch's memory; it is empty and usable again. */
void ts_pg_plan_scratch_close(ts_pg_plan_scratch *scratch);

#endif
