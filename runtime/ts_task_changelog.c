/* ts_task_changelog.c - a batch decided: its write batch and changelog records.
 *
 * On a pool thread, after its records ran (ts_task_apply.c), a batch is
 * decided by one RocksDB write batch: its state writes, the view mirror, the
 * new input position and its pending effects. With a changelog, each of those
 * local writes is also a record of the task's changelog partition, appended
 * to the batch's effects; the batch's event ids travel as one group record,
 * and its marker closes it. The pending record (ts_pending.h) holds the
 * marker and refers to the changelog records' values, which the same write
 * batch stores.
 */
#include "ts_task_int.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_mirror.h"
#include "ts_pending.h"

/* ---- local writes and the changelog ----------------------------------------
 * Every write of state or of the view mirror goes to the batch's RocksDB write
 * batch and, as a record of the changelog topic, to the task's partition of
 * it: key = the local key without the task id (tag + rest), value = the value
 * or none (a tombstone). The event ids a batch remembers (empty values of
 * the "_seen" store, one per input record) travel together as one group
 * record, key "Z<first offset>", value the keys NUL-separated. A batch's
 * records are followed by its marker (key "M"), so a restore can tell
 * complete batches from a torn last one. */

static void ts_task_local(ts_task *task, ts_state_batch *wb, const char *key, size_t klen,
                          const char *val, size_t vlen) {
    if (val)
        ts_state_batch_put(wb, key, klen, val, vlen);
    else
        ts_state_batch_delete(wb, key, klen);
    if (!task->spec->changelog_topic)
        return;
    if (ts_task__record_room(task) < klen + vlen)
        task->oversize = 1;
    size_t skip = strlen(task->id) + 1; /* the id and its NUL, after the tag */
    if (klen - skip > task->ckeycap) {
        char *grown = realloc(task->ckeybuf, klen - skip);
        if (!grown) {
            task->changelog_failed = 1;
            return;
        }
        task->ckeybuf = grown;
        task->ckeycap = klen - skip;
    }
    char *ckey = task->ckeybuf;
    ckey[0] = key[0];
    memcpy(ckey + 1, key + 1 + skip, klen - 1 - skip);
    ts_bytes topic = ts_bytes_str(task->spec->changelog_topic), k = {ckey, klen - skip};
    ts_bytes v = {(char *)val, vlen};
    /* Straight into the batch's effects; the pending record refers to the
     * value, which this write batch stores under the local key. */
    if (ts_effects_add(task->effs, TS_EFF_EMIT, &topic, &k, &v, NULL,
                       (double)task->partition + 1) != TS_OK)
        task->changelog_failed = 1;
    ts_pending_add_ref(&task->pending, &k);
}

/* Adds a state key of the event-id store to the batch's group record. */
static void ts_task_seen_add(ts_task *task, const char *key, size_t klen) {
    if (task->seen_group.len > 0)
        ts_buf_put(&task->seen_group, "", 1); /* the separator */
    ts_buf_put(&task->seen_group, key, klen);
}

static void ts_task_write_state(void *arg, const char *key, size_t klen, const char *val,
                                size_t vlen) {
    void **pair = arg;
    ts_task *task = pair[0];
    ts_state_batch *wb = pair[1];
    size_t len;
    const char *full = ts_task__state_key(task, key, klen, &len);
    if (!full)
        return;
    int is_seen = ts_task__is_seen_key(key, klen);
    if (val && !is_seen && task->key_filter)
        ts_bloom_add(task->key_filter, ts_bloom_hash(key, klen));
    if (task->spec->changelog_topic && val && vlen == 0 && is_seen) {
        /* One event id per input record: in the changelog they travel as one
         * group record per batch ("Z"), not one record each. */
        ts_state_batch_put(wb, full, len, "", 0);
        ts_task_seen_add(task, key, klen);
        return;
    }
    ts_task_local(task, wb, full, len, val, vlen);
}

/* The batch's group record of event ids, keyed by its first offset so that
 * compaction keeps every batch's. */
static ts_err ts_task_add_seen_group(ts_task *task, int64_t first) {
    if (task->seen_group.failed)
        return TS_E_NOMEM;
    if (task->seen_group.len == 0)
        return TS_OK;
    char key[32];
    int klen = snprintf(key, sizeof(key), "Z%" PRId64, first);
    ts_bytes topic = ts_bytes_str(task->spec->changelog_topic), k = {key, (size_t)klen};
    ts_bytes v = {task->seen_group.data, task->seen_group.len};
    ts_err rc = ts_effects_add(task->effs, TS_EFF_EMIT, &topic, &k, &v, NULL,
                               (double)task->partition + 1);
    ts_pending_add_inline(&task->pending, &k, &v); /* not a local key's value */
    ts_buf_reset(&task->seen_group);
    return rc;
}

/* ---- the view mirror (ts_mirror.h) ------------------------------------------ */

void ts_task__mirror_write(void *arg, ts_state_batch *wb, const char *key, size_t klen,
                           const char *val, size_t vlen) {
    ts_task_local(arg, wb, key, klen, val, vlen);
}

/* Mirrors the views among the first `n` effects (the processor's; the
 * changelog records appended behind them are not views), and finds output
 * events too large to send. Writing locally appends changelog records, which
 * may move the list: effects are looked up by index, and the byte strings (in
 * the list's arena) do not move. */
static ts_err ts_task_mirror(ts_task *task, ts_state_batch *wb, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const ts_effect *e = ts_effects_at(task->effs, i);
        if (e->dead)
            continue;
        if (e->kind == TS_EFF_EMIT) { /* an output event or a DLQ record */
            if (e->b.len + e->c.len + e->d.len > ts_task__record_room(task))
                task->oversize = 1;
            continue;
        }
        ts_err rc = ts_mirror_apply(&task->mirror, wb, e);
        if (rc != TS_OK)
            return rc;
    }
    return TS_OK;
}

/* Deletes in the changelog, ahead of this batch's records, the keys of a torn
 * first batch that a restore found ('U', ts_restore.h), and the list with
 * this batch's write. */
static ts_err ts_task_undo_torn(ts_task *task, ts_state_batch *wb) {
    if (task->undo.len == 0 || !task->spec->changelog_topic)
        return TS_OK;
    ts_bytes topic = ts_bytes_str(task->spec->changelog_topic);
    const ts_bytes tombstone = {NULL, 0};
    ts_reader r = {task->undo.data, task->undo.data + task->undo.len};
    while (ts_reader_left(&r) > 0) {
        ts_bytes k;
        if (ts_reader_field(&r, &k) != 0 || !k.data || k.len == 0)
            return TS_E_STATE; /* not a list the restore wrote */
        if (ts_effects_add(task->effs, TS_EFF_EMIT, &topic, &k, &tombstone, NULL,
                           (double)task->partition + 1) != TS_OK)
            return TS_E_NOMEM;
        ts_pending_add_inline(&task->pending, &k, &tombstone);
    }
    ts_state_batch_delete(wb, task->undo_key, task->undo_key_len);
    return TS_OK;
}

/* Step 1: makes the batch durable and decided: state, position, view mirror
 * and pending effects in one RocksDB write batch. With a changelog, every
 * local write is also appended to the effects as a changelog record, then the
 * marker, which carries the batch's own effects (views, rows, output events)
 * so that an instance restoring this partition can re-send them. The pending
 * record holds the marker and refers to the changelog records' values
 * (ts_pending.h). */
ts_err ts_task__decide(ts_task *task, int64_t first, int64_t next) {
    ts_err resolved = ts_ctx_views_resolve(task->ctx);
    if (resolved != TS_OK)
        return resolved;
    size_t processed = ts_effects_count(task->effs);
    int keep = task->spec->changelog_topic || ts_effects_live(task->effs, 0) > 0;
    /* The write batch and the pending record live for this call only: kept
     * per task, each held a copy of the task's largest batch (~90 MiB of peak
     * RSS over the benchmark's 96 tasks). The batch comes from the state's
     * few spares (grown already); the pending record grows again, which
     * costs far less than the batch's other work. */
    ts_state_batch *wb = ts_state_batch_take(task->host->state);
    if (!wb)
        return TS_E_NOMEM;
    ts_pending_begin(&task->pending, first, next, task->effs);
    task->changelog_failed = 0;
    task->oversize = 0;
    ts_buf_reset(&task->seen_group);
    void *pair[2] = {task, wb};
    ts_err rc = ts_task_undo_torn(task, wb);
    if (rc == TS_OK)
        rc = ts_ctx_writes_foreach(task->ctx, ts_task_write_state, pair);
    if (rc == TS_OK)
        rc = ts_task_add_seen_group(task, first);
    char pos[8];
    ts_buf_be64_store(pos, next);
    ts_state_batch_put(wb, task->pos_key, task->pos_key_len, pos, 8);
    if (rc == TS_OK)
        rc = ts_task_mirror(task, wb, processed);
    if (rc == TS_OK && (task->changelog_failed || task->pending.failed))
        rc = TS_E_NOMEM;
    if (rc == TS_OK && task->spec->changelog_topic) {
        ts_bytes topic = ts_bytes_str(task->spec->changelog_topic), key = {"M", 1};
        ts_bytes marker = ts_pending_marker(&task->pending);
        if (marker.len > ts_task__record_room(task))
            task->oversize = 1;
        rc = ts_effects_add(task->effs, TS_EFF_EMIT, &topic, &key, &marker, NULL,
                            (double)task->partition + 1);
    }
    if (rc == TS_OK && keep)
        ts_state_batch_put(wb, task->pending_key, task->pending_key_len, task->pending.data,
                           task->pending.len);
    else if (rc == TS_OK && task->pending_acked)
        ts_state_batch_delete(wb, task->pending_key, task->pending_key_len);
    if (rc == TS_OK && task->oversize)
        rc = TS_E_REJECT; /* decided again, event by event (ts_task__decide_records) */
    if (rc == TS_OK)
        ts_task__store_end(task, wb);
    if (rc == TS_OK)
        rc = ts_state_write(task->host->state, wb);
    if (rc == TS_OK) {
        task->pending_acked = task->end_unstored = 0;
        ts_buf_reset(&task->undo); /* sent with this batch, or re-sent with it */
    }
    if (rc == TS_OK)
        ts_ctx_writes_done(task->ctx); /* they serve as the cache of hot keys now */
    else
        ts_ctx_writes_clear(task->ctx);
    ts_state_batch_give(task->host->state, wb);
    ts_buf_close(&task->pending);
    return rc;
}
