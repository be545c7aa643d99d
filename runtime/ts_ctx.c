/* ts_ctx.c - the processor context: state overlay, effects, rejection.
 *
 * State reads go event overlay -> batch overlay -> backend. Writes go to the
 * event overlay; when the event ends well they move into the batch overlay,
 * and when it is rejected they are dropped, together with the effects added
 * since the event began (ts_effects_rollback).
 *
 * The batch overlay outlives the batch: once the owner has made the writes
 * durable (ts_ctx_writes_done) they stay as clean entries, a cache of the
 * task's hot keys in front of RocksDB, bounded by TS_CTX_CACHE_ENTRIES and
 * TS_CTX_CACHE_BYTES (oldest written or read first out). The cache is exact
 * because the task is the only writer of its state while it lives.
 *
 * JSON values are kept parsed. Processors get a deep copy (4-5x cheaper than
 * parsing), so nothing they do to it reaches the state until they write it;
 * or, to only look at it (ts_ctx_read_json), the document itself.
 * A document written is kept by reference (ts_processor.h: the processor does
 * not change it afterwards), saving a second copy per write. It is only
 * serialized when the batch is made durable, once per key however many events
 * of the batch rewrote it.
 *
 * JSON views can be deferred the same way (ts_ctx_defer_views): a view set
 * keeps the processor's document and its version, and ts_ctx_views_resolve
 * serializes only the sets no later event of the batch replaced. A deferred
 * document may share parts with state documents, so none of those may change
 * in place before the views are resolved. The processor does not change what
 * it wrote (ts_processor.h); what the context could change under a deferred
 * view, it copies instead:
 *  - a document lent to an event that deferred a view and did not write it
 *    back is dropped at the event's end (parsed again when next asked), so a
 *    later event, or a failed one, cannot change it in place;
 *  - a document the batch wrote is never lent while views are deferred (a
 *    deep copy, as for one not yet serialized), nor, within the event that
 *    deferred a view, one the event itself wrote.
 *
 * A view render (ts_ctx_view_render) goes further: the event only names the
 * render, and the view is built once per batch from the final state when the
 * views are resolved. No document is kept, so nothing is copied for it; the
 * render itself reads the state by reference, as nothing changes it then.
 */
#include "ts_ctx.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uthash.h>

#include "ts_log.h"
#include "ts_renders.h"

/* 15 significant digits print 0.7 as 0.7 (17 would print 0.69999999999999996)
 * and still round-trip every value a processor computes in practice. */
#define TS_CTX_JSON_FLAGS (JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15))
/* Per context (task). Parsed documents take a few times their text size, so
 * a task holds a few MiB at most. */
#define TS_CTX_CACHE_ENTRIES 2048
#define TS_CTX_CACHE_BYTES (1u << 20)
#define TS_CTX_MAX_UNCACHED 4
/* The times a row may hold: years 1 to 9999, what PostgreSQL's timestamptz
 * and ISO-8601's four-digit years both take. A later one would be refused by
 * PostgreSQL on every retry and stop the partition for good. */
#define TS_ROW_MIN_TIME_MS (-62135596800000LL) /* 0001-01-01T00:00:00.000Z */
#define TS_ROW_MAX_TIME_MS 253402300799999LL   /* 9999-12-31T23:59:59.999Z */

typedef struct ts_ctx_entry {
    char *key;
    size_t klen;
    char *val; /* text; NULL: deleted (or absent, when clean), or not yet serialized */
    size_t vlen;
    json_t *doc;  /* the value parsed, or the document written; owned */
    int unsynced; /* doc is newer than val: serialize before it becomes durable */
    int dirty;    /* written by the batch, not just read */
    int fresh;    /* added to the batch overlay by this batch (read or written) */
    int in_event; /* in the event overlay: written by the current event */
    int lent;     /* doc was handed to the current event (ts_ctx_get_json) */
    UT_hash_handle hh;
} ts_ctx_entry;

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
    int row_refused; /* the event made a row no table may hold: it is rejected */
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
    size_t event_views; /* n_views when the current event began */
    ts_renders *renders;    /* asked for by the batch, run when views are resolved */
    int rendering;          /* in a render: views only, state read-only */
    int64_t render_version; /* the offset the running render writes as "version" */
    char reason[512];

    char *keybuf; /* scratch for store\x1fkey */
    size_t keycap;
    char *valbuf; /* NUL-terminated copy of the last value read */
    size_t valcap;
    char *dumpbuf; /* the last document serialized (ts_ctx_dump) */
    size_t dumpcap;
    ts_row row;
};

ts_ctx *ts_ctx_create(const ts_state_backend *backend, ts_effects *effs,
                      ts_ctx_encoder_fn encoder_for, void *encoder_arg) {
    ts_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    ctx->backend = *backend;
    ctx->effs = effs;
    ctx->encoder_for = encoder_for;
    ctx->encoder_arg = encoder_arg;
    ctx->row.ctx = ctx;
    ctx->renders = ts_renders_create();
    if (!ctx->renders) {
        free(ctx);
        return NULL;
    }
    return ctx;
}

static void ts_ctx_entry_free(ts_ctx_entry *e) {
    free(e->key);
    free(e->val);
    json_decref(e->doc);
    free(e);
}

static void ts_ctx_map_clear(ts_ctx_entry **map) {
    ts_ctx_entry *e, *tmp;
    HASH_ITER(hh, *map, e, tmp) {
        HASH_DEL(*map, e);
        ts_ctx_entry_free(e);
    }
}

static void ts_ctx_row_reset(ts_row *row) {
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

/* Releases the deferred views from index `from` on. */
static void ts_ctx_views_drop(ts_ctx *ctx, size_t from) {
    while (ctx->n_views > from)
        json_decref(ctx->views[--ctx->n_views].doc);
}

void ts_ctx_destroy(ts_ctx *ctx) {
    if (!ctx)
        return;
    ts_ctx_views_drop(ctx, 0);
    free(ctx->views);
    ts_renders_destroy(ctx->renders);
    ts_ctx_map_clear(&ctx->batch);
    ts_ctx_map_clear(&ctx->event);
    ts_ctx_row_reset(&ctx->row);
    for (size_t i = 0; i < ctx->n_uncached; i++)
        free(ctx->uncached[i]);
    free(ctx->row.cols);
    free(ctx->keybuf);
    free(ctx->valbuf);
    free(ctx->dumpbuf);
    free(ctx->lent);
    free(ctx);
}

ts_err ts_ctx_set_uncached(ts_ctx *ctx, const char *store) {
    if (ctx->n_uncached == TS_CTX_MAX_UNCACHED)
        return TS_E_INVALID;
    size_t len = strlen(store);
    char *prefix = malloc(len + 2);
    if (!prefix)
        return TS_E_NOMEM;
    memcpy(prefix, store, len);
    prefix[len] = '\x1f';
    prefix[len + 1] = '\0';
    ctx->uncached_len[ctx->n_uncached] = len + 1;
    ctx->uncached[ctx->n_uncached++] = prefix;
    return TS_OK;
}

void ts_ctx_defer_views(ts_ctx *ctx, int defer) { ctx->defer_views = defer != 0; }

/* Whether the current event deferred a view set. */
static int ts_ctx_event_deferred(const ts_ctx *ctx) { return ctx->n_views > ctx->event_views; }

void ts_ctx_event_begin(ts_ctx *ctx, const ts_event *ev) {
    ctx->ev = ev;
    ctx->event_views = ctx->n_views;
    ctx->effects_mark = ts_effects_mark(ctx->effs);
    ctx->reason[0] = '\0';
    ctx->state_failed = 0;
    ctx->row_refused = 0;
}

/* Removes `e` from the batch overlay and frees it. */
static void ts_ctx_forget(ts_ctx *ctx, ts_ctx_entry *e) {
    if (!e->fresh) {
        ctx->clean_count--;
        ctx->clean_bytes -= e->klen + e->vlen;
    }
    HASH_DEL(ctx->batch, e);
    ts_ctx_entry_free(e);
}

/* The entries this batch added to the batch overlay are its newest ones, in
 * insertion order after every entry kept from earlier batches (those never
 * move): the batch's work walks back from the newest while they are fresh,
 * so it costs the batch's keys, not the whole cache's. */
static ts_ctx_entry *ts_ctx_newest(const ts_ctx *ctx) {
    if (!ctx->batch)
        return NULL;
    UT_hash_table *tbl = ctx->batch->hh.tbl;
    return (ts_ctx_entry *)(void *)((char *)tbl->tail - tbl->hho);
}

/* Moves the event overlay into the batch overlay (the event succeeded). The
 * entry replaced goes, and the new one joins at the young end of the cache. */
static void ts_ctx_event_merge(ts_ctx *ctx) {
    ts_ctx_entry *e, *tmp, *old;
    HASH_ITER(hh, ctx->event, e, tmp) {
        HASH_DEL(ctx->event, e);
        HASH_FIND(hh, ctx->batch, e->key, e->klen, old);
        if (old) {
            if (old->dirty)
                ctx->dirty_count--;
            ts_ctx_forget(ctx, old);
        }
        e->fresh = 1;
        e->in_event = 0;
        HASH_ADD_KEYPTR(hh, ctx->batch, e->key, e->klen, e);
        ctx->dirty_count++;
    }
}

/* Ends the loans of the event. A failed event may have changed a lent
 * document without writing it: the entry drops it and parses its text again
 * when next asked (a lent entry always has its text). Runs before the merge,
 * which may free lent entries. */
static void ts_ctx_loans_end(ts_ctx *ctx, int failed) {
    int deferred = !failed && ts_ctx_event_deferred(ctx);
    for (size_t i = 0; i < ctx->n_lent; i++) {
        ts_ctx_entry *e = ctx->lent[i];
        e->lent = 0;
        ts_ctx_entry *written = NULL;
        if (deferred) /* written back: the merge replaces the entry */
            HASH_FIND(hh, ctx->event, e->key, e->klen, written);
        if (failed || (deferred && !written)) {
            json_decref(e->doc);
            e->doc = NULL;
        }
    }
    ctx->n_lent = 0;
}

ts_err ts_ctx_event_end(ts_ctx *ctx, ts_err result, const char **reason) {
    if (ctx->state_failed)
        result = TS_E_STATE;
    else if (ctx->row_refused && result == TS_OK)
        result = TS_E_REJECT; /* even if the processor let ts_row_done's answer go */
    ts_ctx_loans_end(ctx, result != TS_OK);
    ts_renders_event_end(ctx->renders, result != TS_OK);
    if (result == TS_OK) {
        ts_ctx_event_merge(ctx);
    } else {
        ts_ctx_map_clear(&ctx->event);
        ts_ctx_views_drop(ctx, ctx->event_views);
        ts_effects_rollback(ctx->effs, ctx->effects_mark);
        if (result == TS_E_REJECT && reason)
            *reason = ctx->reason[0] ? ctx->reason : "rejected";
    }
    ts_ctx_row_reset(&ctx->row);
    ctx->ev = NULL;
    return result;
}

/* Serializes `doc` into the context's buffer, NUL-terminated, with room for
 * `extra` more bytes after it. json_dumpb writes into a buffer kept from one
 * document to the next, where json_dumps grows one of its own by doubling
 * and then copies it out. @returns the text's length, or 0 when out of
 * memory (no valid document serializes to nothing). */
static size_t ts_ctx_dump(ts_ctx *ctx, const json_t *doc, size_t extra) {
    for (;;) {
        size_t len = json_dumpb(doc, ctx->dumpbuf, ctx->dumpcap, TS_CTX_JSON_FLAGS);
        if (len == 0)
            return 0;
        if (len + extra < ctx->dumpcap) {
            ctx->dumpbuf[len] = '\0';
            return len;
        }
        size_t cap = len + extra + 1 > 2 * ctx->dumpcap ? len + extra + 1 : 2 * ctx->dumpcap;
        char *grown = realloc(ctx->dumpbuf, cap);
        if (!grown)
            return 0;
        ctx->dumpbuf = grown;
        ctx->dumpcap = cap;
    }
}

/* Gives `e` the text of its document, when the document is newer. */
static ts_err ts_ctx_entry_sync(ts_ctx *ctx, ts_ctx_entry *e) {
    if (!e->unsynced)
        return TS_OK;
    size_t len = ts_ctx_dump(ctx, e->doc, 0);
    char *text = len ? malloc(len + 1) : NULL;
    if (!text)
        return TS_E_NOMEM;
    memcpy(text, ctx->dumpbuf, len + 1);
    free(e->val);
    e->val = text;
    e->vlen = len;
    e->unsynced = 0;
    return TS_OK;
}

size_t ts_ctx_event_largest_write(ts_ctx *ctx) {
    size_t largest = 0;
    ts_ctx_entry *e, *tmp;
    HASH_ITER(hh, ctx->event, e, tmp) {
        if (ts_ctx_entry_sync(ctx, e) != TS_OK)
            return SIZE_MAX;
        if (e->klen + e->vlen > largest)
            largest = e->klen + e->vlen;
    }
    return largest;
}

ts_err ts_ctx_writes_foreach(ts_ctx *ctx,
                             void (*fn)(void *arg, const char *key, size_t klen, const char *val,
                                        size_t vlen),
                             void *arg) {
    for (ts_ctx_entry *e = ts_ctx_newest(ctx); e && e->fresh; e = e->hh.prev) {
        if (!e->dirty)
            continue;
        if (ts_ctx_entry_sync(ctx, e) != TS_OK)
            return TS_E_NOMEM;
        fn(arg, e->key, e->klen, e->val, e->vlen);
    }
    return TS_OK;
}

size_t ts_ctx_writes_count(const ts_ctx *ctx) { return ctx->dirty_count; }

void ts_ctx_writes_clear(ts_ctx *ctx) {
    ts_ctx_views_drop(ctx, 0);
    ts_renders_clear(ctx->renders);
    ts_ctx_map_clear(&ctx->batch);
    ctx->dirty_count = 0;
    ctx->clean_count = ctx->clean_bytes = 0;
}

static int ts_ctx_is_uncached(const ts_ctx *ctx, const ts_ctx_entry *e) {
    for (size_t i = 0; i < ctx->n_uncached; i++) {
        size_t plen = ctx->uncached_len[i];
        if (e->klen >= plen && memcmp(e->key, ctx->uncached[i], plen) == 0)
            return 1;
    }
    return 0;
}

void ts_ctx_writes_done(ts_ctx *ctx) {
    ts_ctx_entry *e, *prev;
    for (e = ts_ctx_newest(ctx); e && e->fresh; e = prev) {
        prev = e->hh.prev;
        /* Absent keys and write-once stores are not worth a place. */
        if ((!e->val && !e->doc) || ts_ctx_is_uncached(ctx, e)) {
            ts_ctx_forget(ctx, e);
            continue;
        }
        e->dirty = e->fresh = 0;
        ctx->clean_count++;
        ctx->clean_bytes += e->klen + e->vlen;
    }
    ctx->dirty_count = 0;
    /* Hash order is insertion order: the oldest entries go first. */
    ts_ctx_entry *tmp;
    HASH_ITER(hh, ctx->batch, e, tmp) {
        if (ctx->clean_count <= TS_CTX_CACHE_ENTRIES && ctx->clean_bytes <= TS_CTX_CACHE_BYTES)
            break;
        ts_ctx_forget(ctx, e);
    }
}

/* A render only reads the state and sets views (ts_processor.h): anything else
 * it tries is a processor bug, which stops the task. */
static int ts_ctx_render_refuses(ts_ctx *ctx, const char *what) {
    if (!ctx->rendering)
        return 0;
    ts_log_error("ctx", "a view render tried to %s (renders only read state and set views)",
                 what);
    ctx->state_failed = 1;
    return 1;
}

/* ---- state -------------------------------------------------------------------- */

static size_t ts_ctx_key(ts_ctx *ctx, const char *store, const char *key) {
    size_t slen = strlen(store), klen = strlen(key), len = slen + 1 + klen;
    if (len > ctx->keycap) {
        char *buf = realloc(ctx->keybuf, len);
        if (!buf)
            return 0;
        ctx->keybuf = buf;
        ctx->keycap = len;
    }
    memcpy(ctx->keybuf, store, slen);
    ctx->keybuf[slen] = '\x1f';
    memcpy(ctx->keybuf + slen + 1, key, klen);
    return len;
}

static ts_ctx_entry *ts_ctx_entry_new(const char *key, size_t klen, const void *val,
                                      size_t vlen, int dirty) {
    ts_ctx_entry *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->key = malloc(klen);
    e->val = val ? malloc(vlen ? vlen : 1) : NULL;
    if (!e->key || (val && !e->val)) {
        free(e->key);
        free(e->val);
        free(e);
        return NULL;
    }
    memcpy(e->key, key, klen);
    e->klen = klen;
    if (val)
        memcpy(e->val, val, vlen);
    e->vlen = vlen;
    e->dirty = dirty;
    return e;
}

/* Copies a value into the context's read buffer with a NUL after it, so JSON
 * parsing and string use are safe. */
static const char *ts_ctx_hold(ts_ctx *ctx, const char *val, size_t vlen) {
    if (vlen + 1 > ctx->valcap) {
        char *buf = realloc(ctx->valbuf, vlen + 1);
        if (!buf)
            return NULL;
        ctx->valbuf = buf;
        ctx->valcap = vlen + 1;
    }
    memcpy(ctx->valbuf, val, vlen);
    ctx->valbuf[vlen] = '\0';
    return ctx->valbuf;
}

/* The entry holding the current value of store/key (reading it from the
 * backend into the batch overlay when it is not there yet), or NULL on a
 * state failure (recorded). */
static ts_ctx_entry *ts_ctx_find(ts_ctx *ctx, const char *store, const char *key) {
    size_t klen = ts_ctx_key(ctx, store, key);
    if (!klen) {
        ctx->state_failed = 1;
        return NULL;
    }
    ts_ctx_entry *e = NULL;
    HASH_FIND(hh, ctx->event, ctx->keybuf, klen, e);
    if (!e)
        HASH_FIND(hh, ctx->batch, ctx->keybuf, klen, e);
    if (e)
        return e;
    char *stored = NULL;
    size_t slen = 0;
    ts_err err = ctx->backend.get(ctx->backend.impl, ctx->keybuf, klen, &stored, &slen);
    if (err != TS_OK && err != TS_E_NOTFOUND) {
        ctx->state_failed = 1;
        return NULL;
    }
    e = ts_ctx_entry_new(ctx->keybuf, klen, stored, slen, 0);
    free(stored);
    if (!e) {
        ctx->state_failed = 1;
        return NULL;
    }
    e->fresh = 1;
    HASH_ADD_KEYPTR(hh, ctx->batch, e->key, e->klen, e);
    return e;
}

ts_err ts_ctx_get(ts_ctx *ctx, const char *store, const char *key, const char **val,
                  size_t *vlen) {
    ts_ctx_entry *e = ts_ctx_find(ctx, store, key);
    if (!e)
        return ctx->state_failed ? TS_E_STATE : TS_E_NOMEM;
    if (ts_ctx_entry_sync(ctx, e) != TS_OK) {
        ctx->state_failed = 1;
        return TS_E_NOMEM;
    }
    if (!e->val)
        return TS_E_NOTFOUND;
    *val = ts_ctx_hold(ctx, e->val, e->vlen);
    if (!*val) {
        ctx->state_failed = 1;
        return TS_E_NOMEM;
    }
    *vlen = e->vlen;
    return TS_OK;
}

/* Puts `e` (a new dirty entry) into the event overlay, replacing the event's
 * earlier write of the key. */
static void ts_ctx_event_put(ts_ctx *ctx, ts_ctx_entry *e) {
    ts_ctx_entry *old = NULL;
    HASH_FIND(hh, ctx->event, e->key, e->klen, old);
    if (old) {
        HASH_DEL(ctx->event, old);
        ts_ctx_entry_free(old);
    }
    e->in_event = 1;
    HASH_ADD_KEYPTR(hh, ctx->event, e->key, e->klen, e);
}

static ts_err ts_ctx_write(ts_ctx *ctx, const char *store, const char *key, const void *val,
                           size_t vlen) {
    if (ts_ctx_render_refuses(ctx, "write state"))
        return TS_E_INVALID;
    size_t klen = ts_ctx_key(ctx, store, key);
    ts_ctx_entry *e = klen ? ts_ctx_entry_new(ctx->keybuf, klen, val, vlen, 1) : NULL;
    if (!e) {
        ctx->state_failed = 1;
        return TS_E_NOMEM;
    }
    ts_ctx_event_put(ctx, e);
    return TS_OK;
}

ts_err ts_ctx_put(ts_ctx *ctx, const char *store, const char *key, const void *val,
                  size_t vlen) {
    return ts_ctx_write(ctx, store, key, val ? val : "", val ? vlen : 0);
}

ts_err ts_ctx_del(ts_ctx *ctx, const char *store, const char *key) {
    return ts_ctx_write(ctx, store, key, NULL, 0);
}

/* The entry of `key` with its document parsed, or NULL when absent (or on a
 * failure, with state_failed set). */
static ts_ctx_entry *ts_ctx_find_doc(ts_ctx *ctx, const char *store, const char *key) {
    ts_ctx_entry *e = ts_ctx_find(ctx, store, key);
    if (!e || (!e->doc && !e->val))
        return NULL;
    if (!e->doc) {
        json_error_t jerr;
        e->doc = json_loadb(e->val, e->vlen, JSON_DECODE_ANY, &jerr);
        if (!e->doc) {
            /* The processor wrote this value itself; unreadable JSON means the
             * store is damaged, which the task must not paper over. */
            ts_log_error("ctx", "state %s/%s is not JSON: %s", store, key, jerr.text);
            ctx->state_failed = 1;
            return NULL;
        }
    }
    return e;
}

json_t *ts_ctx_read_json(ts_ctx *ctx, const char *store, const char *key) {
    ts_ctx_entry *e = ts_ctx_find_doc(ctx, store, key);
    /* Nobody changes it (ts_processor.h), so nothing needs undoing: no copy,
     * and not lent either. */
    return e ? json_incref(e->doc) : NULL;
}

json_t *ts_ctx_get_json(ts_ctx *ctx, const char *store, const char *key) {
    ts_ctx_entry *e = ts_ctx_find_doc(ctx, store, key);
    if (!e)
        return NULL;
    /* A render only reads, and runs after the batch's last event: nothing
     * can change the document while it holds it. */
    if (ctx->rendering)
        return json_incref(e->doc);
    /* Lent rather than copied where a failed event can be undone: the
     * event's own writes are dropped with it, and an entry with its text can
     * parse it again. A write of an earlier event of the batch has no text
     * yet: that one is copied, and so is any write while a deferred view may
     * share its parts (see the top of the file). */
    if (e->in_event && !ts_ctx_event_deferred(ctx))
        return json_incref(e->doc);
    if (e->in_event || e->unsynced || (e->dirty && ctx->n_views)) {
        json_t *copy = json_deep_copy(e->doc);
        if (!copy)
            ctx->state_failed = 1;
        return copy;
    }
    if (!e->lent) {
        if (ctx->n_lent == ctx->lent_cap) {
            size_t cap = ctx->lent_cap ? ctx->lent_cap * 2 : 16;
            ts_ctx_entry **grown = realloc(ctx->lent, cap * sizeof(*grown));
            if (!grown) {
                ctx->state_failed = 1;
                return NULL;
            }
            ctx->lent = grown;
            ctx->lent_cap = cap;
        }
        ctx->lent[ctx->n_lent++] = e;
        e->lent = 1;
    }
    return json_incref(e->doc);
}

ts_err ts_ctx_put_json(ts_ctx *ctx, const char *store, const char *key, const json_t *doc) {
    if (ts_ctx_render_refuses(ctx, "write state"))
        return TS_E_INVALID;
    size_t klen = ts_ctx_key(ctx, store, key);
    ts_ctx_entry *e = klen ? ts_ctx_entry_new(ctx->keybuf, klen, NULL, 0, 1) : NULL;
    if (!e) {
        ctx->state_failed = 1;
        return TS_E_NOMEM;
    }
    /* A reference, not a copy: the context only ever reads the document
     * (to serialize it, or to deep-copy it for a later get). */
    e->doc = json_incref((json_t *)doc);
    e->unsynced = 1;
    ts_ctx_event_put(ctx, e);
    return TS_OK;
}

/* ---- effects ------------------------------------------------------------------ */

static ts_err ts_ctx_effect(ts_ctx *ctx, ts_effect_kind kind, const char *a, const char *b,
                            double num) {
    if (kind != TS_EFF_VIEW_SET && kind != TS_EFF_VIEW_DEL &&
        ts_ctx_render_refuses(ctx, "change a sorted set"))
        return TS_E_INVALID;
    ts_bytes ba = ts_bytes_str(a), bb = ts_bytes_str(b);
    ts_err err = ts_effects_add(ctx->effs, kind, &ba, b ? &bb : NULL, NULL, NULL, num);
    if (err != TS_OK)
        ctx->state_failed = 1;
    return err;
}

/* Serializes object `doc` with "version": `version` as its last member,
 * without changing `doc`: it may share parts with a state document, which the
 * context keeps by reference. Objects dump in insertion order, so the text is
 * what setting the member would give; the member is appended to the text.
 * @returns the text, in the context's buffer until the next serialization,
 * or NULL when out of memory. */
static const char *ts_ctx_dump_versioned(ts_ctx *ctx, json_t *doc, int64_t version) {
    if (json_object_get(doc, "version")) { /* replaced, on a shallow copy */
        json_t *copy = json_copy(doc);
        size_t len = 0;
        if (copy && json_object_set_new(copy, "version", json_integer(version)) == 0)
            len = ts_ctx_dump(ctx, copy, 0);
        json_decref(copy);
        return len ? ctx->dumpbuf : NULL;
    }
    char member[48];
    int n = snprintf(member, sizeof(member), "%s\"version\":%" PRId64 "}",
                     json_object_size(doc) ? "," : "", version);
    size_t len = ts_ctx_dump(ctx, doc, (size_t)n);
    if (!len)
        return NULL;
    if (json_is_object(doc)) /* the text ends with '}' */
        memcpy(ctx->dumpbuf + len - 1, member, (size_t)n + 1);
    return ctx->dumpbuf;
}

/* The "version" of a JSON view set now: the current event's offset, or the
 * running render's, or -1 (setup: no event). */
static int64_t ts_ctx_version(const ts_ctx *ctx) {
    if (ctx->rendering)
        return ctx->render_version;
    return ctx->ev ? ctx->ev->offset : -1;
}

ts_err ts_ctx_view_set_json(ts_ctx *ctx, const char *key, json_t *doc) {
    int64_t version = ts_ctx_version(ctx);
    /* A render's document shares parts with the state: it is serialized at
     * once, as the batch's views are being resolved anyway. */
    if (ctx->defer_views && !ctx->rendering) {
        if (ctx->n_views == ctx->views_cap) {
            size_t cap = ctx->views_cap ? ctx->views_cap * 2 : 64;
            ts_ctx_view *grown = realloc(ctx->views, cap * sizeof(*grown));
            if (!grown) {
                ctx->state_failed = 1;
                return TS_E_NOMEM;
            }
            ctx->views = grown;
            ctx->views_cap = cap;
        }
        ts_err err = ts_ctx_effect(ctx, TS_EFF_VIEW_SET, key, NULL, 0);
        if (err == TS_OK)
            ctx->views[ctx->n_views++] =
                (ts_ctx_view){ts_effects_count(ctx->effs) - 1, version, json_incref(doc)};
        return err;
    }
    const char *text = ts_ctx_dump_versioned(ctx, doc, version);
    if (!text) {
        ctx->state_failed = 1;
        return TS_E_NOMEM;
    }
    return ts_ctx_effect(ctx, TS_EFF_VIEW_SET, key, text, 0);
}

static ts_err ts_ctx_render_run(void *arg, ts_ctx_render_fn render, const char *id,
                                int64_t version) {
    ts_ctx *ctx = arg;
    ctx->rendering = 1;
    ctx->render_version = version;
    ts_err err = render(ctx, id);
    ctx->rendering = 0;
    return ctx->state_failed ? TS_E_STATE : err;
}

ts_err ts_ctx_view_render(ts_ctx *ctx, ts_ctx_render_fn render, const char *id) {
    if (ts_ctx_render_refuses(ctx, "ask for a render"))
        return TS_E_INVALID;
    int64_t version = ts_ctx_version(ctx);
    if (!ctx->defer_views)
        return ts_ctx_render_run(ctx, render, id, version);
    ts_err err = ts_renders_add(ctx->renders, render, id, version);
    if (err != TS_OK)
        ctx->state_failed = 1;
    return err;
}

ts_err ts_ctx_views_resolve(ts_ctx *ctx) {
    /* Renders first: a deferred view set is never for a key a render writes. */
    ts_err err = ts_renders_run(ctx->renders, ts_ctx_render_run, ctx);
    for (size_t i = 0; i < ctx->n_views && err == TS_OK; i++) {
        const ts_ctx_view *v = &ctx->views[i];
        if (ts_effects_at(ctx->effs, v->effect)->dead)
            continue;
        const char *text = ts_ctx_dump_versioned(ctx, v->doc, v->version);
        ts_bytes value = ts_bytes_str(text);
        err = text ? ts_effects_set_b(ctx->effs, v->effect, &value) : TS_E_NOMEM;
    }
    ts_ctx_views_drop(ctx, 0);
    return err;
}

ts_err ts_ctx_view_set_str(ts_ctx *ctx, const char *key, const char *value) {
    return ts_ctx_effect(ctx, TS_EFF_VIEW_SET, key, value, 0);
}

ts_err ts_ctx_view_del(ts_ctx *ctx, const char *key) {
    return ts_ctx_effect(ctx, TS_EFF_VIEW_DEL, key, NULL, 0);
}

ts_err ts_ctx_zset_add(ts_ctx *ctx, const char *key, const char *member, double score) {
    return ts_ctx_effect(ctx, TS_EFF_ZADD, key, member, score);
}

ts_err ts_ctx_zset_rem(ts_ctx *ctx, const char *key, const char *member) {
    return ts_ctx_effect(ctx, TS_EFF_ZREM, key, member, 0);
}

ts_err ts_ctx_zset_rem_below(ts_ctx *ctx, const char *key, double min_score) {
    return ts_ctx_effect(ctx, TS_EFF_ZREM_BELOW, key, NULL, min_score);
}

static ts_row *ts_ctx_row_start(ts_ctx *ctx, ts_effect_kind kind, const char *table) {
    ts_row *row = &ctx->row;
    ts_ctx_row_reset(row);
    if (ts_ctx_render_refuses(ctx, "write a row"))
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
        size_t len = ts_ctx_dump(row->ctx, value, 0);
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
        ts_ctx_row_reset(row);
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
    ts_ctx_row_reset(row);
    if (err != TS_OK)
        ctx->state_failed = 1;
    return err;
}

avro_value_t *ts_ctx_event_new(ts_ctx *ctx, const char *topic, const char *record_name) {
    if (ts_ctx_render_refuses(ctx, "emit an event"))
        return NULL;
    ts_encoder *enc = ctx->encoder_for ? ctx->encoder_for(ctx->encoder_arg, topic) : NULL;
    if (!enc) {
        ts_log_error("ctx", "topic %s is not an output of this processor", topic);
        ctx->state_failed = 1;
        return NULL;
    }
    avro_value_t *rec = ts_encoder_record(enc, record_name);
    if (!rec) {
        ts_log_error("ctx", "topic %s has no record %s", topic, record_name);
        ctx->state_failed = 1;
    }
    return rec;
}

ts_err ts_ctx_emit(ts_ctx *ctx, const char *topic, const char *key, avro_value_t *value) {
    (void)value; /* the encoder holds the record last made by ts_ctx_event_new */
    ts_encoder *enc = ctx->encoder_for ? ctx->encoder_for(ctx->encoder_arg, topic) : NULL;
    char *bytes = NULL;
    size_t len = 0;
    ts_err err = enc ? ts_encoder_encode(enc, &bytes, &len) : TS_E_INVALID;
    if (err != TS_OK) {
        ts_log_error("ctx", "cannot encode an event for %s: %s", topic, ts_err_str(err));
        ctx->state_failed = 1;
        return err;
    }
    ts_bytes bt = ts_bytes_str(topic), bk = ts_bytes_str(key), bv = {bytes, len};
    err = ts_effects_add(ctx->effs, TS_EFF_EMIT, &bt, &bk, &bv, NULL, 0);
    free(bytes);
    if (err != TS_OK)
        ctx->state_failed = 1;
    return err;
}

ts_err ts_ctx_reject(ts_ctx *ctx, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->reason, sizeof(ctx->reason), fmt, ap);
    va_end(ap);
    return TS_E_REJECT;
}
