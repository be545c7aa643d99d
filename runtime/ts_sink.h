/* ts_sink.h - what every sink offers the runtime: write a decided batch's
 * effects and say when they are acknowledged.
 *
 * Each sink (Redis views, Postgres rows, Kafka output events) is one file
 * behind this short table. A sink takes the effects of its own kinds from a
 * flush and ignores the rest. It never drops an effect: a transient failure
 * (server down, timeout) is retried with backoff until it succeeds or the sink
 * is closed, so `done` reports TS_OK or, after ts_sink close, TS_E_STOPPED.
 * Every sink's writes are idempotent, so a flush may be written twice (after a
 * crash the pending effects are written again).
 *
 * Threading: every function and callback runs on the loop thread.
 */
#ifndef TS_SINK_H
#define TS_SINK_H

#include <stdint.h>

#include "ts_effects.h"
#include "ts_error.h"

/** One decided batch on its way out. Borrowed by the sink until `done` runs. */
typedef struct ts_flush {
    const char *task_id;   /* "<processor>/<partition>": the single writer of the rows */
    int64_t first_offset;  /* input offsets the batch covers: [first_offset, next_offset) */
    int64_t next_offset;
    const ts_effects *effects;
    const char *owner;     /* "<instance>@<start ms>#<n>": who decided the batch (may be NULL) */
    /* When not NULL, the Kafka sink stores here, before `done`, the offset
     * after the flush's last emit in that emit's partition. A task with a
     * changelog emits its marker last, so this is where the changelog
     * partition ends after the batch (ts_restore compares it at assignment). */
    int64_t *emitted_end;
} ts_flush;

/** Called exactly once per accepted write, on the loop thread. */
typedef void (*ts_sink_done_cb)(void *arg, ts_err status);

typedef struct ts_sink_ops {
    const char *name; /* "redis", "postgres", "kafka" */
    /** Starts writing. Returns TS_OK and later calls `done`; on an immediate
     * failure returns the error and never calls `done`. */
    ts_err (*write)(void *sink, const ts_flush *flush, ts_sink_done_cb done, void *arg);
    /** Reports non-zero when the sink is connected and not retrying. */
    int (*healthy)(void *sink);
    /** Fails every write in progress with TS_E_STOPPED (their `done` runs), closes
     * connections and handles, then calls `closed`; the sink is freed after. */
    void (*close)(void *sink, void (*closed)(void *arg), void *arg);
} ts_sink_ops;

/** A sink: its table and its instance. */
typedef struct ts_sink {
    const ts_sink_ops *ops;
    void *impl;
} ts_sink;

#endif
