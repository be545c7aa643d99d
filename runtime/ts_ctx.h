/* ts_ctx.h - the runtime side of the processor context (ts_processor.h).
 *
 * A context serves one task: it holds the state written by the batch in
 * progress (an overlay in front of the task's durable store), the batch's
 * effects, and the current event. Each event runs between ts_ctx_event_begin
 * and ts_ctx_event_end; a rejected event's state writes and effects are undone
 * there. The owner (a task, or the test driver) reads the batch's state writes
 * with ts_ctx_writes_foreach to make them durable, then calls
 * ts_ctx_writes_done, after which they serve as a cache of hot keys. The owner
 * must be the only writer of the backend while the context lives.
 *
 * Threading: one thread at a time (the task's).
 */
#ifndef TS_CTX_H
#define TS_CTX_H

#include "ts_avro.h"
#include "ts_effects.h"
#include "ts_processor.h"

/** Where state lives beyond the batch: RocksDB for a task, a map in tests. */
typedef struct ts_state_backend {
    /** Reads the durable value of `key` (store name, 0x1f, key). On TS_OK *val is
     * malloc'ed and owned by the caller. TS_E_NOTFOUND when absent. */
    ts_err (*get)(void *impl, const char *key, size_t klen, char **val, size_t *vlen);
    void *impl;
} ts_state_backend;

/** Finds the encoder of an output topic; NULL when the topic is not an output. */
typedef ts_encoder *(*ts_ctx_encoder_fn)(void *arg, const char *topic);

/** Creates a context over `backend` (copied) that adds effects to `effs`
 * (borrowed; must outlive the context). `encoder_for` may be NULL (no outputs). */
ts_ctx *ts_ctx_create(const ts_state_backend *backend, ts_effects *effs,
                      ts_ctx_encoder_fn encoder_for, void *encoder_arg);
void ts_ctx_destroy(ts_ctx *ctx);

/** Starts processing `ev` (borrowed until ts_ctx_event_end). */
void ts_ctx_event_begin(ts_ctx *ctx, const ts_event *ev);
/** Ends the current event with the processor's result. On TS_E_REJECT undoes
 * its writes and effects and sets *reason (borrowed until the next event) to
 * the rejection reason. @returns `result`, or TS_E_STATE when a state read or
 * write failed during the event (which the processor cannot hide). */
ts_err ts_ctx_event_end(ts_ctx *ctx, ts_err result, const char **reason);

/** Calls `fn` for each key the batch wrote (val NULL = deleted), serializing
 * the JSON documents written first. @returns TS_E_NOMEM when one could not be
 * serialized (nothing is durable then: the batch must be abandoned). */
ts_err ts_ctx_writes_foreach(ts_ctx *ctx,
                             void (*fn)(void *arg, const char *key, size_t klen,
                                        const char *val, size_t vlen),
                             void *arg);
/** Number of keys the batch wrote. */
size_t ts_ctx_writes_count(const ts_ctx *ctx);
/** The batch's writes are durable: they stay as clean entries in the context's
 * cache of hot keys (bounded; the oldest go first). */
void ts_ctx_writes_done(ts_ctx *ctx);
/** Forgets the batch's writes (the batch is abandoned) and the whole cache. */
void ts_ctx_writes_clear(ts_ctx *ctx);
/** With `defer` set, from the next batch on a JSON view set
 * (ts_ctx_view_set_json) keeps its document and is serialized by
 * ts_ctx_views_resolve, after the batch's last event, unless a later event of
 * the batch replaced it (in the benchmark's stream 73% of view sets were
 * replaced within their batch), and renders run then too; the effect's value
 * is absent until then. With `defer` 0 (the default) each is done at once.
 * Change it only between batches. */
void ts_ctx_defer_views(ts_ctx *ctx, int defer);
/** Serializes the documents the current event wrote (each is serialized
 * once however it is done) and @returns the size of its largest write, key
 * and value, or SIZE_MAX when out of memory: what a task checks against the
 * largest record its changelog takes. */
size_t ts_ctx_event_largest_write(ts_ctx *ctx);
/** Runs the view renders the batch asked for (ts_ctx_view_render), then gives
 * each deferred view set that is still live its value. Call after the batch's
 * last event, before its effects are read. On failure (TS_E_NOMEM: a view
 * could not be serialized; TS_E_STATE or another code: a render failed or
 * broke its rules) the batch must be abandoned. */
ts_err ts_ctx_views_resolve(ts_ctx *ctx);
/** Keys of `store` stay in the context for one batch only: for write-once data
 * that is rarely read again (e.g. the ids of events already applied). At most
 * 4 stores. */
ts_err ts_ctx_set_uncached(ts_ctx *ctx, const char *store);

#endif
