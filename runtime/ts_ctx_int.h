/* ts_ctx_int.h - the processor context's own parts, shared by its files and no
 * one else: ts_ctx.c (the context: state overlay, events, emits, rejection),
 * ts_ctx_views.c (view sets, renders and sorted sets) and ts_row.c (the row
 * builder). The API is ts_ctx.h and ts_processor.h.
 *
 * Threading: as ts_ctx.h.
 */
#ifndef TS_CTX_INT_H
#define TS_CTX_INT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "ts_ctx.h"
#include "ts_renders.h"

#define TS_CTX_MAX_UNCACHED 4

/* A key of the state overlay (ts_ctx.c). */
typedef struct ts_ctx_entry ts_ctx_entry;

/* A view set whose value is serialized when the batch's views are resolved. */
typedef struct ts_ctx_view {
    size_t effect;   /* index of its TS_EFF_VIEW_SET effect */
    int64_t version; /* the offset of the event that set it */
    json_t *doc;     /* a reference */
} ts_ctx_view;

typedef struct ts_ctx_col {
    char *name;
    char *value;
    size_t value_len;
} ts_ctx_col;

struct ts_row {
    ts_ctx *ctx;
    ts_effect_kind kind;
    char *table;
    ts_ctx_col *cols;
    size_t ncols, cap, nkey;
    char *bad_column; /* the first column given a value no row may hold */
    int64_t bad_ms;   /* its value: a time out of range */
};

struct ts_ctx {
    ts_state_backend backend;
    ts_effects *effs;
    ts_ctx_encoder_fn encoder_for;
    void *encoder_arg;

    ts_ctx_entry *batch; /* batch overlay and cache (dirty and clean entries) */
    ts_ctx_entry *event; /* event overlay (all dirty) */
    size_t dirty_count;
    size_t clean_count, clean_bytes; /* the entries kept from earlier batches */
    int row_refused;                 /* the event made a row no table may hold: it is rejected */
    char *uncached[TS_CTX_MAX_UNCACHED]; /* "store\x1f" prefixes kept for one batch only */
    size_t uncached_len[TS_CTX_MAX_UNCACHED];
    size_t n_uncached;

    const ts_event *ev;
    ts_ctx_entry **lent; /* batch entries whose doc the current event holds */
    size_t n_lent, lent_cap;
    size_t effects_mark;
    int state_failed;

    int defer_views;
    ts_ctx_view *views; /* deferred view sets of the batch, in effect order */
    size_t n_views, views_cap;
    size_t event_views;     /* n_views when the current event began */
    ts_renders *renders;    /* asked for by the batch, run when views are resolved */
    int rendering;          /* in a render: views only, state read-only */
    int64_t render_version; /* the offset the running render writes as "version" */
    char reason[512];

    char *keybuf; /* scratch for store\x1fkey */
    size_t keycap;
    char *valbuf; /* NUL-terminated copy of the last value read */
    size_t valcap;
    char *dumpbuf; /* the last document serialized (ts_ctx__dump) */
    size_t dumpcap;
    ts_row row;
};

/* ---- ts_ctx.c ------------------------------------------------------------- */

/** Serializes `doc` into ctx->dumpbuf, NUL-terminated, with room for `extra`
 * more bytes after it. @returns the text's length, or 0 when out of memory. */
size_t ts_ctx__dump(ts_ctx *ctx, const json_t *doc, size_t extra);
/** In a render, logs that it tried to do `what`, records a state failure and
 * @returns 1; otherwise @returns 0. */
int ts_ctx__render_refuses(ts_ctx *ctx, const char *what);

/* ---- ts_ctx_views.c ------------------------------------------------------- */

/** Releases the deferred views from index `from` on. */
void ts_ctx__views_drop(ts_ctx *ctx, size_t from);

/* ---- ts_row.c ------------------------------------------------------------- */

/** Empties `row` (its column array stays, for the next row). */
void ts_ctx__row_reset(ts_row *row);

#endif
