/* ts_task_recover.c - what a task finds stored when it starts (see ts_task.h).
 *
 * A task's keys (ts_state.h) say where it stopped: 'P' the next input offset,
 * 'U' changelog keys a restore left to delete, 'Q' the pending effects of a
 * decided batch not every sink acknowledged, 'E' the changelog end after the
 * last acknowledged batch. Before a task is made, the runtime reads its
 * position and changelog end to tell whether its state must be restored
 * first (ts_restore.h). Creating the task reads the first three; the pending
 * effects are decoded back into the task's effects (the changelog records
 * among them read from the local keys they refer to), and starting the task
 * re-sends them before it takes records: the sinks' fences skip what arrived.
 * Its first batch loads the event ids of its "_seen" store into an in-memory
 * filter (ts_bloom.h) that answers most dedup lookups without RocksDB.
 */
#include "ts_task_int.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_log.h"
#include "ts_pending.h"

/* An int64 stored under tag + task_id, or -1. */
static int64_t ts_task_stored_int(ts_state *state, char tag, const char *task_id) {
    char key[170];
    size_t idlen = strlen(task_id);
    if (idlen + 1 > sizeof(key))
        return -1;
    key[0] = tag;
    memcpy(key + 1, task_id, idlen);
    char *val = NULL;
    size_t vlen = 0;
    int64_t pos = -1;
    if (ts_state_get(state, key, idlen + 1, &val, &vlen) == TS_OK && vlen == 8)
        pos = ts_buf_be64_load(val);
    free(val);
    return pos;
}

int64_t ts_task_stored_position(ts_state *state, const char *task_id) {
    return ts_task_stored_int(state, 'P', task_id);
}

int64_t ts_task_stored_changelog_end(ts_state *state, const char *task_id) {
    return ts_task_stored_int(state, 'E', task_id);
}

/* The current value of the local key a changelog key stands for: tag, then
 * the task id and its NUL, then the rest (ts_pending's references). */
static ts_err ts_task_changelog_value(void *arg, const ts_bytes *changelog_key, char **val,
                                      size_t *vlen) {
    ts_task *task = arg;
    size_t idlen = strlen(task->id), klen = changelog_key->len + idlen + 1;
    char *key = malloc(klen);
    if (!key)
        return TS_E_NOMEM;
    key[0] = changelog_key->data[0];
    memcpy(key + 1, task->id, idlen + 1);
    memcpy(key + idlen + 2, changelog_key->data + 1, changelog_key->len - 1);
    ts_err rc = ts_state_get(task->host->state, key, klen, val, vlen);
    free(key);
    return rc;
}

ts_err ts_task__load(ts_task *task, char *err, size_t errlen) {
    char *val = NULL;
    size_t vlen = 0;
    ts_err rc = ts_state_get(task->host->state, task->pos_key, task->pos_key_len, &val, &vlen);
    if (rc == TS_OK && vlen == 8)
        task->position = ts_buf_be64_load(val);
    free(val);
    if (rc != TS_OK && rc != TS_E_NOTFOUND) {
        snprintf(err, errlen, "task %s: cannot read its position", task->id);
        return rc;
    }
    task->acked = task->position;

    val = NULL;
    rc = ts_state_get(task->host->state, task->undo_key, task->undo_key_len, &val, &vlen);
    if (rc == TS_OK)
        ts_buf_put(&task->undo, val, vlen);
    free(val);
    if ((rc != TS_OK && rc != TS_E_NOTFOUND) || task->undo.failed) {
        snprintf(err, errlen, "task %s: cannot read the changelog keys to undo", task->id);
        return task->undo.failed ? TS_E_NOMEM : rc;
    }

    val = NULL;
    rc = ts_state_get(task->host->state, task->pending_key, task->pending_key_len, &val, &vlen);
    if (rc == TS_E_NOTFOUND)
        return TS_OK;
    ts_pending_changelog changelog = {task->spec->changelog_topic, task->partition,
                                      ts_task_changelog_value, task};
    if (rc == TS_OK)
        rc = ts_pending_decode(val, vlen, &changelog, task->effs, &task->flush.first_offset,
                               &task->flush.next_offset);
    free(val);
    if (rc != TS_OK) {
        ts_effects_clear(task->effs);
        snprintf(err, errlen, "task %s: pending effects unreadable", task->id);
        return rc == TS_E_DECODE ? TS_E_STATE : rc;
    }
    task->acked = task->flush.first_offset;
    return TS_OK;
}

ts_err ts_task_start(ts_task *task) {
    if (ts_effects_count(task->effs) > 0) {
        ts_log_info(task->id, "re-sending %zu pending effects of offsets %" PRId64 "..%" PRId64,
                    ts_effects_live(task->effs, 0), task->flush.first_offset,
                    task->flush.next_offset - 1);
        ts_task__flush_start(task);
    }
    return TS_OK;
}

/* ---- the filters of event ids and keys ---------------------------------------- */

/* The scan's hashes, collected first so each filter is sized once: u64s
 * appended to a ts_buf. */
typedef struct ts_task_filter_scan {
    size_t prefix_len; /* the task's state prefix */
    ts_buf seen, keys;
} ts_task_filter_scan;

static int ts_task_filter_hash(void *arg, const char *key, size_t klen, const char *val,
                               size_t vlen) {
    (void)val;
    (void)vlen;
    ts_task_filter_scan *scan = arg;
    static const size_t seen_len = sizeof(TS_TASK_SEEN_STORE "\x1f") - 1;
    const char *local = key + scan->prefix_len;
    size_t len = klen - scan->prefix_len;
    int seen = ts_task__is_seen_key(local, len);
    uint64_t hash = seen ? ts_bloom_hash(local + seen_len, len - seen_len)
                         : ts_bloom_hash(local, len);
    ts_buf *into = seen ? &scan->seen : &scan->keys;
    ts_buf_put(into, &hash, sizeof(hash));
    return into->failed ? 1 : 0;
}

static size_t ts_task_hash_count(const ts_buf *hashes) { return hashes->len / sizeof(uint64_t); }

/* A filter of `hashes`, with room for as many new entries again before it
 * grows a layer. NULL when out of memory. */
static ts_bloom *ts_task_filter_of(const ts_buf *hashes) {
    size_t n = ts_task_hash_count(hashes);
    ts_bloom *filter = ts_bloom_create(n * 2);
    for (size_t i = 0; filter && i < n; i++) {
        uint64_t hash;
        memcpy(&hash, hashes->data + i * sizeof(hash), sizeof(hash));
        ts_bloom_add(filter, hash);
    }
    return filter;
}

ts_err ts_task__load_filters(ts_task *task) {
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    /* One scan of all the task's stores: the values are read with the keys
     * (RocksDB has no keys-only scan), ~0.5 us per key on the benchmark's
     * host. */
    ts_task_filter_scan scan = {.prefix_len = task->state_prefix_len};
    ts_err rc = ts_state_scan(task->host->state, task->state_prefix, task->state_prefix_len,
                              ts_task_filter_hash, &scan);
    if (rc == TS_OK && (scan.seen.failed || scan.keys.failed))
        rc = TS_E_NOMEM;
    ts_bloom *seen = rc == TS_OK ? ts_task_filter_of(&scan.seen) : NULL;
    ts_bloom *keys = rc == TS_OK ? ts_task_filter_of(&scan.keys) : NULL;
    if (rc == TS_OK && (!seen || !keys))
        rc = TS_E_NOMEM;
    size_t n_seen = ts_task_hash_count(&scan.seen), n_keys = ts_task_hash_count(&scan.keys);
    ts_buf_close(&scan.seen);
    ts_buf_close(&scan.keys);
    if (rc != TS_OK) {
        ts_bloom_destroy(seen);
        ts_bloom_destroy(keys);
        ts_log_error(task->id, "cannot load the event ids and keys stored before: %s",
                     ts_err_str(rc));
        return rc;
    }
    if (n_seen + n_keys > 0)
        ts_log_info(task->id,
                    "%zu event ids and %zu keys stored before, in filters of %zu KiB (%.0f ms)",
                    n_seen, n_keys, (ts_bloom_bytes(seen) + ts_bloom_bytes(keys)) / 1024,
                    ts_task__ms_since(&start));
    task->seen_filter = seen;
    task->key_filter = keys;
    return TS_OK;
}
