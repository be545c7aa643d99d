/* ts_state.h - the instance's durable state: one RocksDB database.
 *
 * One database per instance (one memory budget: a shared block cache and
 * write-buffer limit), with the task in every key, so a task's state, input
 * position and pending effects are written by one atomic write batch.
 * Key layout (bytes):
 *   'S' task_id 0x00 store 0x1f key   processor state
 *   'P' task_id                        input position (next offset, int64 BE)
 *   'E' task_id                        end of the changelog partition after the
 *                                      task's last acknowledged batch (int64 BE)
 *   'Q' task_id                        pending effects of the decided batch
 *                                      (ts_pending.h)
 *   'V' task_id 0x00 view              the view's value as last written
 *   'W' task_id 0x00 view 0x00 member  a sorted-set view's member -> score
 *   'U' task_id                        changelog keys to delete ahead of the
 *                                      next batch's records (a torn first
 *                                      batch, ts_restore.h), as ts_buf fields
 * The V/W mirror lets a task re-materialize its views from state alone
 * (after Redis lost them) without reprocessing input.
 * RocksDB's malloc'ed errptr strings and values are translated here; nothing
 * outside sees them.
 *
 * Threading: RocksDB is thread-safe; tasks write their batches from the
 * libuv pool's threads, the loop thread reads and writes the rest. A
 * ts_state_batch belongs to one thread at a time.
 */
#ifndef TS_STATE_H
#define TS_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "ts_error.h"

typedef struct ts_state ts_state;
typedef struct ts_state_batch ts_state_batch;

/** Opens (creating if missing) the database in `dir`. */
ts_err ts_state_open(const char *dir, ts_state **out, char *err, size_t errlen);
/** Closes and frees; accepts NULL. Flushes what was written without the WAL. */
void ts_state_close(ts_state *st);

/** From now on, writes skip RocksDB's write-ahead log. Only for a database
 * whose every key can be rebuilt from elsewhere (the runtime's: each task's
 * keys from its changelog partition). A clean close still keeps everything;
 * a crash loses the writes since the last memtable flush, as a whole: the
 * database comes back as it was at that flush (one column family, flushed
 * in order), i.e. older but consistent, and the stored changelog end tells
 * whether the task must restore (ts_restore.h). */
void ts_state_skip_wal(ts_state *st);

/** Reads a raw key. On TS_OK *val is malloc'ed (caller frees). TS_E_NOTFOUND if absent. */
ts_err ts_state_get(ts_state *st, const char *key, size_t klen, char **val, size_t *vlen);

/** A write batch: every change of one input batch, applied atomically. Keys
 * and values are copied. An allocation failure makes ts_state_write refuse
 * the batch (TS_E_NOMEM). Create returns NULL when out of memory. */
ts_state_batch *ts_state_batch_create(void);
void ts_state_batch_destroy(ts_state_batch *b);
/** Like create, but an empty batch used before when `st` kept one: its
 * memory already grown to a batch's size. Any thread. */
ts_state_batch *ts_state_batch_take(ts_state *st);
/** Instead of destroy: empties `b` and keeps it for ts_state_batch_take (a
 * few, not too large ones; the rest are freed). Accepts NULL. Any thread. */
void ts_state_batch_give(ts_state *st, ts_state_batch *b);
void ts_state_batch_put(ts_state_batch *b, const char *key, size_t klen, const char *val,
                        size_t vlen);
void ts_state_batch_delete(ts_state_batch *b, const char *key, size_t klen);
/** Writes the batch atomically (no fsync; WAL on unless ts_state_skip_wal:
 * then it survives a clean close, else also a process kill).
 * The batch is left sorted by key: write it once, then destroy (or give) it. */
ts_err ts_state_write(ts_state *st, ts_state_batch *b);

/** Calls `fn` for each key starting with `prefix`, in key order; stops when
 * `fn` returns non-zero. */
ts_err ts_state_scan(ts_state *st, const char *prefix, size_t plen,
                     int (*fn)(void *arg, const char *key, size_t klen, const char *val,
                               size_t vlen),
                     void *arg);

/** Like ts_state_scan, over the database as it will be once `b` is written
 * (the batch's puts and deletes included): the stored keys in key order,
 * then the batch's own, in the order they were added. */
ts_err ts_state_batch_scan(ts_state *st, ts_state_batch *b, const char *prefix, size_t plen,
                           int (*fn)(void *arg, const char *key, size_t klen, const char *val,
                                     size_t vlen),
                           void *arg);

/** Deletes every key starting with `prefix`, in batches. */
ts_err ts_state_delete_prefix(ts_state *st, const char *prefix, size_t plen);

/** One write of ts_state_write_ops: a put, or a delete when val is NULL. */
typedef struct ts_state_op {
    const char *key;
    size_t klen;
    const char *val;
    size_t vlen;
} ts_state_op;

/** Writes `n` operations atomically as one plain write batch (no index, so
 * cheaper per record than a ts_state_batch; durable like ts_state_write):
 * for bulk loads such as a restore. Among ops on the same key the later one
 * wins. The ops are only read during the call. Any thread. */
ts_err ts_state_write_ops(ts_state *st, const ts_state_op *ops, size_t n);

/** Approximate bytes on disk (SST + WAL), for reporting. */
uint64_t ts_state_disk_bytes(ts_state *st);

#endif
