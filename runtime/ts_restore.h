/* ts_restore.h - making a task's local state current from its changelog
 * partition before it processes input.
 *
 * The changelog partition is the partition's one history: every owner appends
 * each batch's records and its marker there, in order. A task stores, with its
 * local state, where that partition ended after its own last acknowledged
 * batch ('E' key, ts_state.h). At assignment the partition's end is asked
 * first: when it still ends there, nobody appended since and the local state
 * is current (its decided but unacknowledged batch, if any, is re-sent by the
 * task; without the WAL, ts_state_skip_wal, a crash takes the local state
 * back to its last memtable flush, the stored end with it, so a batch that
 * landed since makes the ends differ, and the batch in flight, if lost, is
 * decided again). Otherwise (another instance owned the partition meanwhile,
 * the local state is gone, or this instance crashed while its batch was
 * landing or after one landed) the state is restored: the task's local keys
 * are dropped, then the partition is read from its start to its end in
 * large fetches and applied to RocksDB in large write batches of whole
 * changelog batches (those closed by a marker), so the result is exactly the
 * state after the last complete batch (records of a torn last batch, after
 * the last marker, are dropped). The last marker's position becomes the
 * task's position, its effects the task's pending effects (re-sent when it
 * starts; after a torn batch they also re-send every key it wrote with its
 * restored value, so that in the changelog the torn records are undone
 * before the next batch, where a later restore reads them in the middle; a
 * torn first batch of a partition, with no marker before it to re-send
 * with, leaves the list of its keys instead ('U' key), which the task
 * deletes in the changelog ahead of its next batch's records), and the end
 * read becomes the stored end; these are written after everything else. A
 * cancelled restore keeps the complete batches it read, with their
 * position, but no end (the next assignment restores again).
 *
 * This does not trust the group's committed offset: a commit can fail (during
 * a rebalance) or be lost (a crash after the acknowledgement), so it can lag
 * the newest owner's position, and an instance resuming from its own older
 * snapshot would append a second, diverging history to the changelog.
 *
 * The work runs on the libuv thread pool (it blocks on Kafka and RocksDB);
 * progress is logged every second (records, rate, ETA).
 */
#ifndef TS_RESTORE_H
#define TS_RESTORE_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "ts_error.h"
#include "ts_state.h"

typedef struct ts_restore ts_restore;

typedef struct ts_restore_spec {
    const char *brokers;
    const json_t *kafka_config; /* may be NULL */
    const char *changelog_topic;
    int32_t partition;
    const char *task_id; /* local keys are tag + task_id + NUL + rest */
    int64_t local_end;   /* the stored changelog end ('E'), -1: none (0 is an
                          * empty changelog's end, so a spec must say -1) */
    ts_state *state;
} ts_restore_spec;

typedef struct ts_restore_stats {
    uint64_t records;   /* changelog records read */
    uint64_t batches;   /* complete batches applied */
    uint64_t stale;     /* complete batches skipped: they did not move the position */
    int64_t position;   /* restored input position, -1 when the changelog was empty */
    int64_t changelog_end; /* the partition's end at assignment */
    int current;        /* the local state was current: nothing was restored */
    double seconds;
} ts_restore_stats;

/** Called on the loop thread when the restore ended (TS_OK, TS_E_STOPPED after
 * ts_restore_cancel, or the failure). The restore is freed after it returns. */
typedef void (*ts_restore_done_cb)(void *arg, ts_err status, const ts_restore_stats *stats);

/** Starts restoring; strings of `spec` are copied. */
ts_err ts_restore_start(uv_loop_t *loop, const ts_restore_spec *spec, ts_restore_done_cb done,
                        void *arg, ts_restore **out);

/** Asks the restore to stop early; `done` still runs, with TS_E_STOPPED. */
void ts_restore_cancel(ts_restore *r);

/** Progress so far (records read, records in the partition), for status. */
void ts_restore_progress(const ts_restore *r, uint64_t *done, uint64_t *total);

#endif
