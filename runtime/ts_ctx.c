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
 *
 * The view sink's effects (view sets, deferred or not, renders and sorted
 * sets) are in ts_ctx_views.c, the row builder in ts_row.c; the types the three
 * files share in ts_ctx_int.h.
 */
#include "ts_ctx_int.h"

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

struct ts_ctx_entry {
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

void ts_ctx_destroy(ts_ctx *ctx) {
    if (!ctx)
        return;
    ts_ctx__views_drop(ctx, 0);
    free(ctx->views);
    ts_renders_destroy(ctx->renders);
    ts_ctx_map_clear(&ctx->batch);
    ts_ctx_map_clear(&ctx->event);
    ts_ctx__row_reset(&ctx->row);
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
        ts_ctx__views_drop(ctx, ctx->event_views);
        ts_effects_rollback(ctx->effs, ctx->effects_mark);
        if (result == TS_E_REJECT && reason)
            *reason = ctx->reason[0] ? ctx->reason : "rejected";
    }
    ts_ctx__row_reset(&ctx->row);
    ctx->ev = NULL;
    return result;
}

/* Serializes `doc` into the context's buffer, NUL-terminated, with room for
 * `extra` more bytes after it. json_dumpb writes into a buffer kept from one
 * document to the next, where json_dumps grows one of its own by doubling
 * and then copies it out. @returns the text's length, or 0 when out of
 * memory (no valid document serializes to nothing). */
size_t ts_ctx__dump(ts_ctx *ctx, const json_t *doc, size_t extra) {
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
    size_t len = ts_ctx__dump(ctx, e->doc, 0);
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
    ts_ctx__views_drop(ctx, 0);
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
int ts_ctx__render_refuses(ts_ctx *ctx, const char *what) {
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
    if (ts_ctx__render_refuses(ctx, "write state"))
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
    if (ts_ctx__render_refuses(ctx, "write state"))
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

avro_value_t *ts_ctx_event_new(ts_ctx *ctx, const char *topic, const char *record_name) {
    if (ts_ctx__render_refuses(ctx, "emit an event"))
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
