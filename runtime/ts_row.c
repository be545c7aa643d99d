/* ts_row.c - the row builder (ts_processor.h): a processor names a table,
 * adds the key columns then the value columns, and ts_row_done packs them
 * into one TS_EFF_ROW_UPSERT or TS_EFF_ROW_DELETE effect for the PostgreSQL
 * sink.
 *
 * The context holds a single row, emptied when each event ends. A column no
 * row may hold (a time out of range) does not stop the build: the whole row
 * is refused by ts_row_done, which rejects the event.
 */
#include "ts_ctx_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_log.h"

/* The times a row may hold: years 1 to 9999, what PostgreSQL's timestamptz
 * and ISO-8601's four-digit years both take. A later one would be refused by
 * PostgreSQL on every retry and stop the partition for good. */
#define TS_ROW_MIN_TIME_MS (-62135596800000LL) /* 0001-01-01T00:00:00.000Z */
#define TS_ROW_MAX_TIME_MS 253402300799999LL   /* 9999-12-31T23:59:59.999Z */

void ts_ctx__row_reset(ts_row *row) {
    for (size_t i = 0; i < row->ncols; i++) {
        free(row->cols[i].name);
        free(row->cols[i].value);
    }
    row->ncols = row->nkey = 0;
    free(row->table);
    row->table = NULL;
    free(row->bad_column);
    row->bad_column = NULL;
}

static ts_row *ts_ctx_row_start(ts_ctx *ctx, ts_effect_kind kind, const char *table) {
    ts_row *row = &ctx->row;
    ts_ctx__row_reset(row);
    if (ts_ctx__render_refuses(ctx, "write a row"))
        return row; /* ts_row_done fails: no table */
    row->kind = kind;
    row->table = strdup(table);
    if (!row->table)
        ctx->state_failed = 1;
    return row;
}

ts_row *ts_ctx_row_upsert(ts_ctx *ctx, const char *table) {
    return ts_ctx_row_start(ctx, TS_EFF_ROW_UPSERT, table);
}

ts_row *ts_ctx_row_delete(ts_ctx *ctx, const char *table) {
    return ts_ctx_row_start(ctx, TS_EFF_ROW_DELETE, table);
}

static void ts_row_add(ts_row *row, const char *column, const char *value, size_t len) {
    if (row->ncols == row->cap) {
        size_t cap = row->cap ? row->cap * 2 : 16;
        ts_ctx_col *cols = realloc(row->cols, cap * sizeof(*cols));
        if (!cols) {
            row->ctx->state_failed = 1;
            return;
        }
        row->cols = cols;
        row->cap = cap;
    }
    ts_ctx_col *col = &row->cols[row->ncols];
    col->name = strdup(column);
    col->value = value ? strndup(value, len) : NULL;
    col->value_len = len;
    if (!col->name || (value && !col->value)) {
        free(col->name);
        free(col->value);
        row->ctx->state_failed = 1;
        return;
    }
    row->ncols++;
}

void ts_row_key(ts_row *row, const char *column, const char *value) {
    /* Key columns come first: the packed layout and the sink rely on it. */
    if (row->ncols != row->nkey) {
        ts_log_error("ctx", "row %s: key column %s after a value column", row->table, column);
        row->ctx->state_failed = 1;
        return;
    }
    ts_row_add(row, column, value, value ? strlen(value) : 0);
    row->nkey = row->ncols;
}

void ts_row_text(ts_row *row, const char *column, const char *value) {
    ts_row_add(row, column, value, value ? strlen(value) : 0);
}

void ts_row_long(ts_row *row, const char *column, int64_t value) {
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%lld", (long long)value);
    ts_row_add(row, column, buf, (size_t)n);
}

void ts_row_double(ts_row *row, const char *column, double value) {
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "%.17g", value);
    ts_row_add(row, column, buf, (size_t)n);
}

void ts_row_time(ts_row *row, const char *column, int64_t epoch_ms) {
    if (epoch_ms < TS_ROW_MIN_TIME_MS || epoch_ms > TS_ROW_MAX_TIME_MS) {
        if (!row->bad_column) { /* the row is refused whole by ts_row_done */
            row->bad_column = strdup(column);
            row->bad_ms = epoch_ms;
            if (!row->bad_column)
                row->ctx->state_failed = 1;
        }
        return;
    }
    char buf[40];
    ts_time_iso(epoch_ms, buf, sizeof(buf));
    ts_row_add(row, column, buf, strlen(buf));
}

/* Writes a Postgres array literal of strings: {"a","b \"c\""}. */
static char *ts_row_array_literal(const json_t *arr) {
    size_t cap = 16, len = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    out[len++] = '{';
    size_t i;
    const json_t *item;
    json_array_foreach(arr, i, item) {
        const char *s = json_is_string(item) ? json_string_value(item) : "";
        size_t need = len + 2 * strlen(s) + 5;
        if (need > cap) {
            while (cap < need)
                cap *= 2;
            char *grown = realloc(out, cap);
            if (!grown) {
                free(out);
                return NULL;
            }
            out = grown;
        }
        if (i)
            out[len++] = ',';
        out[len++] = '"';
        for (; *s; s++) {
            if (*s == '"' || *s == '\\')
                out[len++] = '\\';
            out[len++] = *s;
        }
        out[len++] = '"';
    }
    out[len++] = '}';
    out[len] = '\0';
    return out;
}

void ts_row_json(ts_row *row, const char *column, const json_t *value) {
    if (!value || json_is_null(value)) {
        ts_row_add(row, column, NULL, 0);
    } else if (json_is_string(value)) {
        ts_row_add(row, column, json_string_value(value), json_string_length(value));
    } else if (json_is_array(value)) {
        char *lit = ts_row_array_literal(value);
        if (!lit) {
            row->ctx->state_failed = 1;
            return;
        }
        ts_row_add(row, column, lit, strlen(lit));
        free(lit);
    } else {
        size_t len = ts_ctx__dump(row->ctx, value, 0);
        if (!len) {
            row->ctx->state_failed = 1;
            return;
        }
        ts_row_add(row, column, row->ctx->dumpbuf, len);
    }
}

ts_err ts_row_done(ts_row *row) {
    ts_ctx *ctx = row->ctx;
    if (ctx->state_failed || !row->table)
        return TS_E_STATE;
    if (row->bad_column) {
        ctx->row_refused = 1;
        ts_err rc = ts_ctx_reject(ctx,
                                  "%s.%s: time %" PRId64 " ms is outside the years 1 to 9999 "
                                  "(PostgreSQL and ISO-8601 dates)",
                                  row->table, row->bad_column, row->bad_ms);
        ts_ctx__row_reset(row);
        return rc;
    }
    ts_rowcol cols[64];
    if (row->ncols > 64 || row->nkey == 0) {
        ts_log_error("ctx", "row %s: %zu columns, %zu key columns", row->table, row->ncols,
                     row->nkey);
        ctx->state_failed = 1;
        return TS_E_INVALID;
    }
    for (size_t i = 0; i < row->ncols; i++) {
        cols[i].name = row->cols[i].name;
        cols[i].name_len = strlen(row->cols[i].name);
        cols[i].value = row->cols[i].value;
        cols[i].value_len = row->cols[i].value_len;
    }
    ts_bytes packed = ts_rowcols_pack(cols, row->ncols, row->nkey);
    ts_bytes table = ts_bytes_str(row->table);
    ts_err err = packed.data ? ts_effects_add(ctx->effs, row->kind, &table, &packed, NULL, NULL, 0)
                             : TS_E_NOMEM;
    free(packed.data);
    ts_ctx__row_reset(row);
    if (err != TS_OK)
        ctx->state_failed = 1;
    return err;
}
