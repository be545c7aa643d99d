/* ts_pg_plan.c - the SQL statements that write a flush's row effects (see
 * ts_pg_plan.h). */
#include "ts_pg_plan.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

/* Multi-row chunk sizes, largest first; 1 ends every group. */
static const size_t ts_pg_plan_chunks[] = {64, 16, 4, 2, 1};

/* Rows that may share statements: one table, kind and column list. */
typedef struct ts_pg_plan_group {
    char *sig; /* NULL: a statement of its own (a delete, or single rows) */
    size_t sig_len;
    size_t *members; /* effect indexes, in effect order */
    size_t n, cap;
    size_t ncols;
    UT_hash_handle hh;
} ts_pg_plan_group;

/* ---- SQL text --------------------------------------------------------------- */

/* SQL text in a ts_buf, kept NUL-terminated for libpq (the NUL after `len`). */
static void ts_pg_plan_put(ts_buf *b, const char *s, size_t n) {
    if (ts_buf_grow(b, n + 1) != 0)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void ts_pg_plan_str(ts_buf *b, const char *s) { ts_pg_plan_put(b, s, strlen(s)); }

/* A double-quoted identifier ("" inside), so reserved words and any case
 * work, and no name can inject SQL. */
static void ts_pg_plan_ident(ts_buf *b, const char *name, size_t len) {
    ts_pg_plan_put(b, "\"", 1);
    for (size_t i = 0; i < len; i++)
        ts_pg_plan_put(b, name[i] == '"' ? "\"\"" : &name[i], name[i] == '"' ? 2 : 1);
    ts_pg_plan_put(b, "\"", 1);
}

/* Table names may be schema-qualified: each dot-separated part is quoted. */
static void ts_pg_plan_table(ts_buf *b, const char *name, size_t len) {
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || name[i] == '.') {
            if (start > 0)
                ts_pg_plan_put(b, ".", 1);
            ts_pg_plan_ident(b, name + start, i - start);
            start = i + 1;
        }
    }
}

static void ts_pg_plan_param(ts_buf *b, size_t n) {
    char num[24];
    int len = snprintf(num, sizeof num, "$%zu", n);
    ts_pg_plan_put(b, num, (size_t)len);
}

static void ts_pg_plan_names(ts_buf *sql, const ts_rowcol *cols, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (i)
            ts_pg_plan_str(sql, ", ");
        ts_pg_plan_ident(sql, cols[i].name, cols[i].name_len);
    }
}

/* INSERT of `nrows` rows of `cols` into `table`, updating the non-key
 * columns of rows that exist. */
static void ts_pg_plan_upsert_sql(ts_buf *sql, const ts_bytes *table, const ts_rowcol *cols,
                                  size_t ncols, size_t nkey, size_t nrows) {
    ts_pg_plan_str(sql, "INSERT INTO ");
    ts_pg_plan_table(sql, table->data, table->len);
    ts_pg_plan_str(sql, " (");
    ts_pg_plan_names(sql, cols, ncols);
    ts_pg_plan_str(sql, ") VALUES ");
    size_t param = 0;
    for (size_t r = 0; r < nrows; r++) {
        ts_pg_plan_str(sql, r ? ", (" : "(");
        for (size_t i = 0; i < ncols; i++) {
            if (i)
                ts_pg_plan_str(sql, ", ");
            ts_pg_plan_param(sql, ++param);
        }
        ts_pg_plan_str(sql, ")");
    }
    ts_pg_plan_str(sql, " ON CONFLICT (");
    ts_pg_plan_names(sql, cols, nkey);
    if (ncols == nkey) {
        ts_pg_plan_str(sql, ") DO NOTHING");
        return;
    }
    ts_pg_plan_str(sql, ") DO UPDATE SET ");
    for (size_t i = nkey; i < ncols; i++) {
        if (i > nkey)
            ts_pg_plan_str(sql, ", ");
        ts_pg_plan_ident(sql, cols[i].name, cols[i].name_len);
        ts_pg_plan_str(sql, " = EXCLUDED.");
        ts_pg_plan_ident(sql, cols[i].name, cols[i].name_len);
    }
}

/* DELETE of one row by its key; a NULL key value becomes "IS NULL" (no
 * parameter). */
static void ts_pg_plan_delete_sql(ts_buf *sql, const ts_bytes *table, const ts_rowcol *cols,
                                  size_t nkey) {
    ts_pg_plan_str(sql, "DELETE FROM ");
    ts_pg_plan_table(sql, table->data, table->len);
    ts_pg_plan_str(sql, " WHERE ");
    size_t param = 0;
    for (size_t i = 0; i < nkey; i++) {
        if (i)
            ts_pg_plan_str(sql, " AND ");
        ts_pg_plan_ident(sql, cols[i].name, cols[i].name_len);
        if (!cols[i].value) {
            ts_pg_plan_str(sql, " IS NULL");
        } else {
            ts_pg_plan_str(sql, " = ");
            ts_pg_plan_param(sql, ++param);
        }
    }
}

/* ---- planning ---------------------------------------------------------------- */

int ts_pg_plan_is_row(const ts_effect *e) {
    return !e->dead && (e->kind == TS_EFF_ROW_UPSERT || e->kind == TS_EFF_ROW_DELETE);
}

/* Unpacks a row into the scratch's columns. */
static int ts_pg_plan_cols(ts_pg_plan *plan, const ts_effect *e, size_t *ncols, size_t *nkey) {
    ts_pg_plan_scratch *x = plan->scratch;
    if (!x->cols && !(x->cols = malloc(TS_PG_PLAN_MAX_COLS * sizeof(*x->cols))))
        return -1;
    return ts_rowcols_unpack(&e->b, x->cols, TS_PG_PLAN_MAX_COLS, ncols, nkey) == TS_OK ? 0 : -1;
}

/* The grouping signature of an upsert: table, then each column name, then
 * the key column count, NUL-separated. */
static void ts_pg_plan_sig(ts_buf *sig, const ts_effect *e, const ts_rowcol *cols, size_t ncols,
                           size_t nkey) {
    ts_buf_reset(sig);
    ts_buf_put(sig, e->a.data, e->a.len);
    for (size_t i = 0; i < ncols; i++) {
        ts_buf_put(sig, "", 1);
        ts_buf_put(sig, cols[i].name, cols[i].name_len);
    }
    char n[24];
    int len = snprintf(n, sizeof n, "%c%zu", '\0', nkey);
    ts_buf_put(sig, n, (size_t)len);
}

static int ts_pg_plan_member(ts_pg_plan_group *g, size_t effect) {
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 8;
        size_t *m = realloc(g->members, cap * sizeof(*m));
        if (!m)
            return -1;
        g->members = m;
        g->cap = cap;
    }
    g->members[g->n++] = effect;
    return 0;
}

/* The group a row joins, new ones appended to `order` (first appearance). */
static ts_pg_plan_group *ts_pg_plan_group_of(ts_pg_plan_group **by_sig, ts_pg_plan_group ***order,
                                             size_t *n_order, size_t *cap_order, const ts_buf *sig,
                                             size_t ncols) {
    ts_pg_plan_group *g = NULL;
    if (sig)
        HASH_FIND(hh, *by_sig, sig->data, sig->len, g);
    if (g)
        return g;
    if (*n_order == *cap_order) {
        size_t cap = *cap_order ? *cap_order * 2 : 16;
        ts_pg_plan_group **grown = realloc(*order, cap * sizeof(*grown));
        if (!grown)
            return NULL;
        *order = grown;
        *cap_order = cap;
    }
    if (!(g = calloc(1, sizeof(*g))))
        return NULL;
    g->ncols = ncols;
    if (sig) {
        if (!(g->sig = malloc(sig->len))) {
            free(g);
            return NULL;
        }
        memcpy(g->sig, sig->data, sig->len);
        g->sig_len = sig->len;
        HASH_ADD_KEYPTR(hh, *by_sig, g->sig, g->sig_len, g);
    }
    (*order)[(*n_order)++] = g;
    return g;
}

/* The largest chunk size for `left` rows of `ncols` columns. */
static size_t ts_pg_plan_chunk(size_t left, size_t ncols) {
    for (size_t i = 0; i < sizeof(ts_pg_plan_chunks) / sizeof(ts_pg_plan_chunks[0]); i++) {
        size_t c = ts_pg_plan_chunks[i];
        if (c <= left && c * ncols <= TS_PG_PLAN_MAX_PARAMS)
            return c;
    }
    return 1;
}

/* Lays the groups out as statements. */
static int ts_pg_plan_emit(ts_pg_plan *plan, ts_pg_plan_group **order, size_t n_order) {
    size_t n_rows = 0;
    for (size_t g = 0; g < n_order; g++)
        n_rows += order[g]->n;
    size_t *rows = realloc(plan->rows, (n_rows ? n_rows : 1) * sizeof(*rows));
    if (rows)
        plan->rows = rows;
    ts_pg_plan_stmt *stmts = realloc(plan->stmts, (n_rows ? n_rows : 1) * sizeof(*stmts));
    if (stmts)
        plan->stmts = stmts;
    if (!rows || !stmts)
        return -1;
    for (size_t g = 0; g < n_order; g++) {
        const ts_pg_plan_group *grp = order[g];
        for (size_t done = 0; done < grp->n;) {
            size_t c = grp->sig ? ts_pg_plan_chunk(grp->n - done, grp->ncols) : 1;
            plan->stmts[plan->n_stmts++] = (ts_pg_plan_stmt){plan->n_rows, c};
            memcpy(plan->rows + plan->n_rows, grp->members + done, c * sizeof(*rows));
            plan->n_rows += c;
            done += c;
        }
    }
    return 0;
}

ts_err ts_pg_plan_build(ts_pg_plan *plan, const ts_effects *effs, int single_rows,
                        ts_pg_plan_scratch *scratch) {
    plan->n_rows = plan->n_stmts = 0;
    plan->scratch = scratch;
    ts_pg_plan_group *by_sig = NULL, **order = NULL;
    size_t n_order = 0, cap_order = 0;
    ts_buf sig = {0};
    int rc = 0;
    size_t n = ts_effects_count(effs);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const ts_effect *e = ts_effects_at(effs, i);
        if (!ts_pg_plan_is_row(e))
            continue;
        size_t ncols, nkey;
        if (ts_pg_plan_cols(plan, e, &ncols, &nkey) != 0) {
            rc = -1;
            break;
        }
        int shared = !single_rows && e->kind == TS_EFF_ROW_UPSERT;
        if (shared)
            ts_pg_plan_sig(&sig, e, scratch->cols, ncols, nkey);
        ts_pg_plan_group *g = sig.failed ? NULL
                                         : ts_pg_plan_group_of(&by_sig, &order, &n_order,
                                                               &cap_order, shared ? &sig : NULL,
                                                               ncols);
        if (!g || ts_pg_plan_member(g, i) != 0)
            rc = -1;
    }
    if (rc == 0)
        rc = ts_pg_plan_emit(plan, order, n_order);
    HASH_CLEAR(hh, by_sig);
    for (size_t g = 0; g < n_order; g++) {
        free(order[g]->sig);
        free(order[g]->members);
        free(order[g]);
    }
    free(order);
    ts_buf_close(&sig);
    if (rc != 0)
        plan->n_rows = plan->n_stmts = 0;
    return rc == 0 ? TS_OK : TS_E_NOMEM;
}

/* ---- statements ---------------------------------------------------------------- */

const ts_effect *ts_pg_plan_first(const ts_pg_plan *plan, const ts_effects *effs, size_t s) {
    return ts_effects_at(effs, plan->rows[plan->stmts[s].at]);
}

/* The first row of statement `s`, unpacked into the scratch's columns, or
 * NULL with `out` marked failed. */
static const ts_effect *ts_pg_plan_stmt_row(ts_pg_plan *plan, const ts_effects *effs, size_t s,
                                            ts_buf *out, size_t *ncols, size_t *nkey) {
    const ts_effect *e = ts_pg_plan_first(plan, effs, s);
    if (ts_pg_plan_cols(plan, e, ncols, nkey) == 0)
        return e;
    out->failed = 1;
    return NULL;
}

void ts_pg_plan_stmt_key(ts_pg_plan *plan, const ts_effects *effs, size_t s, ts_buf *key) {
    size_t ncols, nkey;
    const ts_effect *e = ts_pg_plan_stmt_row(plan, effs, s, key, &ncols, &nkey);
    if (!e)
        return;
    const ts_rowcol *cols = plan->scratch->cols;
    size_t head[3] = {(size_t)e->kind, plan->stmts[s].n, nkey};
    ts_buf_put(key, head, sizeof(head));
    ts_buf_put(key, e->a.data, e->a.len);
    size_t named = e->kind == TS_EFF_ROW_UPSERT ? ncols : nkey;
    for (size_t i = 0; i < named; i++) {
        ts_buf_put(key, "", 1);
        ts_buf_put(key, cols[i].name, cols[i].name_len);
    }
    if (e->kind == TS_EFF_ROW_DELETE) { /* a NULL key is written as IS NULL */
        ts_buf_put(key, "", 1);
        for (size_t i = 0; i < nkey; i++)
            ts_buf_put(key, cols[i].value ? "v" : "n", 1);
    }
}

void ts_pg_plan_sql(ts_pg_plan *plan, const ts_effects *effs, size_t s, ts_buf *sql) {
    size_t ncols, nkey;
    const ts_effect *e = ts_pg_plan_stmt_row(plan, effs, s, sql, &ncols, &nkey);
    if (!e)
        return;
    if (e->kind == TS_EFF_ROW_UPSERT)
        ts_pg_plan_upsert_sql(sql, &e->a, plan->scratch->cols, ncols, nkey, plan->stmts[s].n);
    else
        ts_pg_plan_delete_sql(sql, &e->a, plan->scratch->cols, nkey);
}

const char *const *ts_pg_plan_params(ts_pg_plan *plan, const ts_effects *effs, size_t s,
                                     ts_buf *vals, size_t *n) {
    const ts_pg_plan_stmt *st = &plan->stmts[s];
    ts_pg_plan_scratch *x = plan->scratch;
    size_t np = 0;
    ts_buf_reset(vals);
    if (!x->params_cap) { /* a statement may have no parameter: still an array */
        x->offsets = malloc(16 * sizeof(*x->offsets));
        x->params = malloc(16 * sizeof(*x->params));
        if (!x->offsets || !x->params)
            return NULL;
        x->params_cap = 16;
    }
    for (size_t r = 0; r < st->n; r++) {
        const ts_effect *e = ts_effects_at(effs, plan->rows[st->at + r]);
        size_t ncols, nkey;
        if (ts_pg_plan_cols(plan, e, &ncols, &nkey) != 0)
            return NULL;
        size_t count = e->kind == TS_EFF_ROW_UPSERT ? ncols : nkey;
        if (np + count > x->params_cap) {
            size_t cap = (np + count) * 2;
            size_t *offsets = realloc(x->offsets, cap * sizeof(*offsets));
            if (offsets)
                x->offsets = offsets;
            const char **params = offsets ? realloc(x->params, cap * sizeof(*params)) : NULL;
            if (!params)
                return NULL;
            x->params = params;
            x->params_cap = cap;
        }
        for (size_t c = 0; c < count; c++) {
            const ts_rowcol *col = &x->cols[c];
            if (e->kind == TS_EFF_ROW_DELETE && !col->value)
                continue; /* written as IS NULL */
            x->offsets[np++] = col->value ? vals->len : SIZE_MAX;
            if (col->value) {
                ts_buf_put(vals, col->value, col->value_len);
                ts_buf_put(vals, "", 1); /* the terminator */
            }
        }
    }
    if (vals->failed)
        return NULL;
    /* Pointers last: `vals` may have moved while growing. */
    for (size_t k = 0; k < np; k++)
        x->params[k] = x->offsets[k] == SIZE_MAX ? NULL : vals->data + x->offsets[k];
    *n = np;
    return x->params;
}

void ts_pg_plan_close(ts_pg_plan *plan) {
    free(plan->rows);
    free(plan->stmts);
    memset(plan, 0, sizeof(*plan));
}

void ts_pg_plan_scratch_close(ts_pg_plan_scratch *scratch) {
    free(scratch->cols);
    free(scratch->offsets);
    free(scratch->params);
    memset(scratch, 0, sizeof(*scratch));
}
