/* ts_task.h - one task per assigned input partition: a batch, a commit.
 *
 * A task buffers the partition's records, and when it is scheduled runs the
 * processor over up to `max_events` of them, then decides the batch:
 *   1. one RocksDB write batch holds the state changes, the new input position
 *      and the batch's pending effects; once written, the batch is decided;
 *   2. the effects go to every sink (views, rows, output events and DLQ);
 *   3. when every sink has acknowledged, the pending effects are deleted and the
 *      consumer offset is committed; the next batch may start.
 * On start, a task re-sends the pending effects a crash left behind, so every
 * decided batch reaches every sink at least once, and the sinks' fences make it
 * count once. (Without RocksDB's WAL, the runtime's default, a crash can also
 * lose a decided batch locally, which is then decided again from its input,
 * or the state is restored from the changelog; see ts_restore.h.) Records
 * below the stored position are skipped (redelivery), and an input whose
 * event_id was already seen changes nothing.
 *
 * Threading: every function on the loop thread. Step 1 (running the processor
 * over the batch and writing it to RocksDB) runs on the loop's thread pool when
 * the host gives a loop, so tasks of different partitions decide at the same
 * time on different cores; each task has its own codecs, context and effects,
 * and one batch in flight, so nothing of a task is touched by two threads.
 */
#ifndef TS_TASK_H
#define TS_TASK_H

#include <librdkafka/rdkafka.h>
#include <uv.h>

#include "ts_avro.h"
#include "ts_ctx.h"
#include "ts_processor.h"
#include "ts_sink.h"
#include "ts_state.h"

typedef struct ts_task ts_task;

/** One batch every sink acknowledged, for metrics (ts_task_host.batched). */
typedef struct ts_task_batch {
    size_t events;   /* input records the batch consumed (rejected ones included) */
    size_t rejected; /* of those, records sent to the DLQ */
    double seconds;  /* from the batch's start to the last sink's acknowledgement */
    /* How long its first record had existed when the batch started: from the
     * record's timestamp (its producer's clock) to the start. With `seconds`
     * it spans the record's whole way to the views. < 0: no timestamp. */
    double input_wait_seconds;
} ts_task_batch;

/** What a task needs from the runtime that hosts it. Borrowed; outlives tasks. */
typedef struct ts_task_host {
    uv_loop_t *loop; /* step 1 runs on its thread pool; NULL: inline */
    ts_state *state;
    ts_sink *sinks;
    size_t n_sinks;
    int max_events;
    int max_ms; /* a batch stops taking records after this long; 0: no limit */
    /* Fetched records a task holds for its next batches: past 2 * max_events
     * of them or this many bytes (keys and values), its partition pauses;
     * below max_events and half the bytes, it resumes. 0: no byte bound. */
    size_t max_buffered_bytes;
    /* The largest message the Kafka sink produces (message.max.bytes), 0: no
     * limit. A changelog record (a state or view value) over it could never
     * be written: the event that makes one goes to the DLQ instead. */
    size_t max_message_bytes;
    /** Pauses (pause != 0) or resumes the task's partition at the source. */
    void (*pause)(void *arg, ts_task *task, int pause);
    /** Makes the source fetch the task's partition again from `offset`. */
    void (*seek)(void *arg, ts_task *task, int64_t offset);
    /** Commits `next_offset` of the task's partition at the source. */
    void (*commit)(void *arg, ts_task *task, int64_t next_offset);
    /** Asks for ts_task_run to be called soon (the task has work). */
    void (*schedule)(void *arg, ts_task *task);
    /** Reports that the task stopped for good (fatal state or processor failure). */
    void (*failed)(void *arg, ts_task *task, ts_err err);
    /** Reports that a rebuild asked with ts_task_rebuild is written (n views). */
    void (*rebuilt)(void *arg, ts_task *task, size_t n_views);
    /** Reports a batch every sink acknowledged (loop thread); may be NULL. */
    void (*batched)(void *arg, ts_task *task, const ts_task_batch *batch);
    ts_sink *views; /* the view sink (one of `sinks`), for rebuilds */
    const char *instance;  /* names the owner of the tasks' batches */
    int64_t started_ms;    /* the process's start (wall clock): an instance
                            * restarted under the same name is another owner */
    unsigned *owner_seq;   /* numbers each task's holding of its partition */
    /* Batches being decided on the pool now, shared by the host's tasks, and
     * how many large ones may start while that many are (0: no limit; small
     * batches never wait). A task that finds no slot keeps its records; it is
     * scheduled again when a decide ends. */
    unsigned *deciding;
    unsigned max_deciding;
    void *arg;
} ts_task_host;

/** Whether every decide slot of `host` is taken (never, without a limit). */
int ts_task_host_slots_full(const ts_task_host *host);

/** What a task runs: the processor and its input. Borrowed; outlives the task. */
typedef struct ts_task_spec {
    const ts_processor_def *def;
    const char *name;  /* processor name: tasks are "<name>/<partition>" */
    const json_t *params;
    const char *topic; /* input topic */
    const char *dlq_topic;
    const char *changelog_topic;        /* NULL: no changelog */
    /* Codecs are made per task (they hold buffers; tasks run on pool threads). */
    const ts_schemas *schemas;
    const char *input_schema; /* subject of the input topic's schema */
    /** The schema subject of output `topic`, or NULL when it is not an output. */
    const char *(*output_schema)(void *arg, const char *topic);
    void *output_arg;
} ts_task_spec;

/** Creates a task for `partition`; reads its stored position and pending effects. */
ts_err ts_task_create(const ts_task_host *host, const ts_task_spec *spec, int32_t partition,
                      ts_task **out, char *err, size_t errlen);
/** Reads the stored input position of task `task_id` from `state`
 * (-1 when the task has no local state). */
int64_t ts_task_stored_position(ts_state *state, const char *task_id);
/** Reads the stored end of task `task_id`'s changelog partition after its last
 * acknowledged batch (-1 when none is stored). */
int64_t ts_task_stored_changelog_end(ts_state *state, const char *task_id);

/** Frees the task and every buffered record; accepts NULL. Only when idle. */
void ts_task_destroy(ts_task *task);

const char *ts_task_id(const ts_task *task);
const char *ts_task_topic(const ts_task *task);
int32_t ts_task_partition(const ts_task *task);
/** Next input offset to process (stored), or -1 when the task has no state yet. */
int64_t ts_task_position(const ts_task *task);
/** Next input offset whose effects every sink acknowledged. */
int64_t ts_task_acked(const ts_task *task);

/** Freshness of the task's views: the newest input timestamp (producer or log
 * append time, ms) whose effects are acknowledged, and the wall time of that
 * acknowledgement; 0 when nothing was acknowledged yet. */
void ts_task_freshness(const ts_task *task, int64_t *event_ms, int64_t *acked_ms);

/** Re-sends pending effects, if any; then the task takes records. */
ts_err ts_task_start(ts_task *task);
/** Takes ownership of a record of the task's partition. */
void ts_task_push(ts_task *task, rd_kafka_message_t *msg);
/** Runs one batch over the buffered records and starts its flush. */
void ts_task_run(ts_task *task);
/** Non-zero while a flush is in flight. */
int ts_task_busy(const ts_task *task);
/** Bytes of the task's in-memory filter of event ids applied, as of its
 * last decided batch (0 before its first). Loop thread. */
size_t ts_task_dedup_bytes(const ts_task *task);
/** Bytes of the task's in-memory filter of state keys, likewise. */
size_t ts_task_key_filter_bytes(const ts_task *task);
/** Non-zero when the task has buffered records and no flush in flight. */
int ts_task_ready(const ts_task *task);
/** Asks the task to write every view it owns again, from the mirror in its
 * state (no input is reprocessed). Runs when the task is next idle, as one
 * flush to the view sink: string views are set whole, and the task's members
 * of sorted sets are added back (other tasks may own other members). */
void ts_task_rebuild(ts_task *task);
/** Non-zero while a rebuild is wanted or in flight. */
int ts_task_rebuilding(const ts_task *task);

/** Drops buffered records; the in-flight flush, if any, completes. A batch
 * being decided when the revocation comes is not flushed (the partition may
 * be processed elsewhere already): it is held for ts_task_reassign, and
 * otherwise its pending effects stay stored for the partition's next task. */
void ts_task_revoke(ts_task *task);
/** Non-zero after ts_task_revoke (until ts_task_reassign). */
int ts_task_revoked(const ts_task *task);
/** Takes the partition back after a revocation, before the task was removed;
 * flushes a held batch. */
void ts_task_reassign(ts_task *task);

#endif
