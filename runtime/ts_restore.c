/* ts_restore.c - a task's state from its changelog partition (see ts_restore.h).
 *
 * Runs as a uv_work_t: the worker thread owns a short-lived assign-only
 * consumer (which also asks the partition's end) and writes RocksDB directly
 * (RocksDB is thread-safe; nothing else touches this task's keys while it
 * restores). The consumer starts at the partition's known low offset (a
 * logical "beginning" costs an offset lookup of ~0.5 s) and takes whatever is
 * queued per call. Records are copied into
 * a chunk (one arena, no allocation per record); a marker completes the batch
 * before it, and once the chunk holds enough complete batches they are sorted
 * by key and written as one plain write batch. The position and pending
 * effects are written last, so the local state only ever holds whole batches
 * and a position only once everything before it is written.
 */
#include "ts_restore.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ts_buf.h"
#include "ts_kconf.h"
#include "ts_log.h"
#include "ts_pending.h"

#define TS_RESTORE_FETCH 4096                 /* records per consume call */
#define TS_RESTORE_CHUNK_OPS 65536            /* records per RocksDB write, about */
#define TS_RESTORE_CHUNK_BYTES (16u << 20)    /* or bytes per write */

struct ts_restore {
    uv_work_t work;
    char *brokers, *topic, *task_id;
    json_t *kafka_config;
    int32_t partition;
    int64_t local_end;
    ts_state *state;
    ts_restore_done_cb done;
    void *arg;

    atomic_int cancel;
    atomic_uint_least64_t read, total;
    ts_err status;
    ts_restore_stats stats;
};

static double ts_restore_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Drops every local key of the task: state, view mirror, position, pending,
 * changelog end. */
static ts_err ts_restore_drop_local(ts_restore *r) {
    size_t idlen = strlen(r->task_id);
    char *key = malloc(idlen + 2);
    if (!key)
        return TS_E_NOMEM;
    memcpy(key + 1, r->task_id, idlen + 1); /* with its NUL */
    ts_err rc = TS_OK;
    const char tags[] = {'S', 'V', 'W'};
    for (size_t i = 0; i < sizeof(tags) && rc == TS_OK; i++) {
        key[0] = tags[i];
        rc = ts_state_delete_prefix(r->state, key, idlen + 2);
    }
    ts_state_batch *wb = rc == TS_OK ? ts_state_batch_create() : NULL;
    if (wb) {
        key[0] = 'P';
        ts_state_batch_delete(wb, key, idlen + 1);
        key[0] = 'Q';
        ts_state_batch_delete(wb, key, idlen + 1);
        key[0] = 'E';
        ts_state_batch_delete(wb, key, idlen + 1);
        key[0] = 'U';
        ts_state_batch_delete(wb, key, idlen + 1);
        rc = ts_state_write(r->state, wb);
        ts_state_batch_destroy(wb);
    } else if (rc == TS_OK) {
        rc = TS_E_NOMEM;
    }
    free(key);
    return rc;
}

/* The records of complete batches not written yet, and those of the batch
 * being read (after the last marker). Keys (tag + task_id + NUL + rest) and
 * values are copied into one growing arena, so a record costs two memcpy and
 * no allocation; `ops` holds offsets into the arena, turned into pointers only
 * when the chunk is written. */
typedef struct ts_restore_op {
    size_t koff, klen, voff, vlen; /* vlen SIZE_MAX: a delete */
} ts_restore_op;

typedef struct ts_restore_chunk {
    ts_buf arena;
    ts_restore_op *ops;
    ts_state_op *sops; /* the ops as pointers, at write time */
    size_t n, n_complete, ops_cap, sops_cap;
    rd_kafka_message_t *mark; /* the last marker read */
    int64_t mark_next;        /* its input position */
    ts_buf torn_groups;       /* keys of the group records since it, NUL-separated */
} ts_restore_chunk;

static void ts_restore_chunk_free(ts_restore_chunk *c) {
    ts_buf_close(&c->arena);
    ts_buf_close(&c->torn_groups);
    free(c->ops);
    free(c->sops);
    if (c->mark)
        rd_kafka_message_destroy(c->mark);
}

static char *ts_restore_reserve(ts_restore_chunk *c, size_t len) {
    if (ts_buf_grow(&c->arena, len) != 0)
        return NULL;
    char *at = c->arena.data + c->arena.len;
    c->arena.len += len;
    return at;
}

/* Key order, and arrival order among equal keys (the arena is filled in
 * arrival order), so the later write of a key stays the later one. */
static int ts_restore_op_cmp(const void *pa, const void *pb) {
    const ts_state_op *a = pa, *b = pb;
    size_t n = a->klen < b->klen ? a->klen : b->klen;
    int c = memcmp(a->key, b->key, n);
    if (c == 0)
        c = (a->klen > b->klen) - (a->klen < b->klen);
    return c ? c : (a->key > b->key) - (a->key < b->key);
}

/* Writes the complete batches held, in one write. */
static ts_err ts_restore_chunk_write(ts_restore *r, ts_restore_chunk *c) {
    if (c->n_complete == 0)
        return TS_OK;
    if (c->n_complete > c->sops_cap) {
        ts_state_op *grown = realloc(c->sops, c->n_complete * sizeof(*grown));
        if (!grown)
            return TS_E_NOMEM;
        c->sops = grown;
        c->sops_cap = c->n_complete;
    }
    for (size_t i = 0; i < c->n_complete; i++) {
        const ts_restore_op *op = &c->ops[i];
        c->sops[i] = (ts_state_op){c->arena.data + op->koff, op->klen,
                                   op->vlen == SIZE_MAX ? NULL : c->arena.data + op->voff,
                                   op->vlen == SIZE_MAX ? 0 : op->vlen};
    }
    /* Sorted, the memtable inserts walk the skip list forward instead of
     * searching it from the top for every record (twice the rate). */
    qsort(c->sops, c->n_complete, sizeof(*c->sops), ts_restore_op_cmp);
    ts_err rc = ts_state_write_ops(r->state, c->sops, c->n_complete);
    /* A chunk is written at a marker, so nothing follows its batches. */
    c->n = c->n_complete = 0;
    ts_buf_reset(&c->arena);
    return rc;
}

static ts_err ts_restore_grow_ops(ts_restore_chunk *c) {
    if (c->n < c->ops_cap)
        return TS_OK;
    size_t cap = c->ops_cap ? c->ops_cap * 2 : 4096;
    ts_restore_op *grown = realloc(c->ops, cap * sizeof(*grown));
    if (!grown)
        return TS_E_NOMEM;
    c->ops = grown;
    c->ops_cap = cap;
    return TS_OK;
}

/* A group record ("Z<first offset>"): state keys with empty values (a batch's
 * event ids), NUL-separated, one record instead of one per key. */
static ts_err ts_restore_apply_group(ts_restore *r, ts_restore_chunk *c,
                                     const rd_kafka_message_t *msg) {
    const char *p = msg->payload, *end = p ? p + msg->len : NULL;
    size_t idlen = strlen(r->task_id);
    while (p && p < end) {
        const char *nul = memchr(p, '\0', (size_t)(end - p));
        size_t rest = nul ? (size_t)(nul - p) : (size_t)(end - p);
        size_t klen = 1 + idlen + 1 + rest;
        if (ts_restore_grow_ops(c) != TS_OK)
            return TS_E_NOMEM;
        char *key = ts_restore_reserve(c, klen);
        if (!key)
            return TS_E_NOMEM;
        key[0] = 'S';
        memcpy(key + 1, r->task_id, idlen + 1);
        memcpy(key + 2 + idlen, p, rest);
        size_t koff = (size_t)(key - c->arena.data);
        c->ops[c->n++] = (ts_restore_op){koff, klen, koff + klen, 0};
        p += rest + 1;
    }
    return TS_OK;
}

/* Drops a complete batch that does not move the position past the last
 * marker's: an owner that lost the partition without noticing yet (a zombie:
 * paused past its session, cut off) can still append a batch after the new
 * owner's. Processing is deterministic, so a batch that ends past the
 * position holds the values as of its end, whoever wrote it, and is applied;
 * one that ends at or before it would take its keys, its event ids and the
 * position back to an older point. Its records stay in the changelog and
 * every later restore skips them the same way (compaction may still drop an
 * owner's record a zombie's later record shadows: fencing the writer is the
 * full answer). */
static void ts_restore_skip_stale(ts_restore *r, ts_restore_chunk *c, int64_t first,
                                  int64_t next) {
    if (r->stats.stale == 0)
        ts_log_warn(r->task_id,
                    "the changelog holds a batch of input %" PRId64 "..%" PRId64
                    " after one that ended at %" PRId64
                    ": written by an instance that had lost the partition; skipped",
                    first, next - 1, c->mark_next);
    r->stats.stale++;
    c->n = c->n_complete;
    ts_buf_reset(&c->torn_groups);
}

/* Adds one changelog record to the chunk. A marker ("M") completes the
 * batch before it; complete batches are written once the chunk is large. */
static ts_err ts_restore_apply(ts_restore *r, ts_restore_chunk *c, rd_kafka_message_t *msg,
                               int *kept) {
    *kept = 0;
    if (!msg->key || msg->key_len == 0)
        return TS_OK; /* not ours: ignore rather than fail the restore */
    const char *k = msg->key;
    if (k[0] == 'M') {
        if (!msg->payload || msg->len < 16)
            return TS_E_DECODE;
        int64_t next = ts_buf_be64_load((const char *)msg->payload + 8);
        if (c->mark && next <= c->mark_next) {
            ts_restore_skip_stale(r, c, ts_buf_be64_load(msg->payload), next);
            return TS_OK;
        }
        if (c->mark)
            rd_kafka_message_destroy(c->mark);
        c->mark = msg; /* kept: its effects become the pending ones */
        c->mark_next = next;
        *kept = 1;
        c->n_complete = c->n;
        ts_buf_reset(&c->torn_groups);
        r->stats.batches++;
        r->stats.position = c->mark_next;
        if (c->n >= TS_RESTORE_CHUNK_OPS || c->arena.len >= TS_RESTORE_CHUNK_BYTES)
            return ts_restore_chunk_write(r, c);
        return TS_OK;
    }
    if (k[0] == 'Z') {
        ts_buf_put(&c->torn_groups, k, msg->key_len);
        ts_buf_put(&c->torn_groups, "", 1);
        return c->torn_groups.failed ? TS_E_NOMEM : ts_restore_apply_group(r, c, msg);
    }
    if (k[0] != 'S' && k[0] != 'V' && k[0] != 'W')
        return TS_OK;
    if (ts_restore_grow_ops(c) != TS_OK)
        return TS_E_NOMEM;
    size_t idlen = strlen(r->task_id), klen = msg->key_len + idlen + 1;
    size_t vlen = msg->payload ? msg->len : 0;
    char *key = ts_restore_reserve(c, klen + vlen);
    if (!key)
        return TS_E_NOMEM;
    key[0] = k[0];
    memcpy(key + 1, r->task_id, idlen + 1);
    memcpy(key + 2 + idlen, k + 1, msg->key_len - 1);
    if (msg->payload)
        memcpy(key + klen, msg->payload, vlen);
    size_t koff = (size_t)(key - c->arena.data);
    c->ops[c->n++] = (ts_restore_op){koff, klen, koff + klen, msg->payload ? vlen : SIZE_MAX};
    return TS_OK;
}

/* Calls `each` with the changelog key of every record of the torn batch
 * (after the last marker, or with none before it): its state records
 * (group 0), then its group records (group 1). @returns TS_E_NOMEM when a
 * key could not be made. */
static ts_err ts_restore_torn_keys(ts_restore *r, const ts_restore_chunk *c,
                                   void (*each)(void *arg, const ts_bytes *ckey, int group),
                                   void *arg) {
    size_t idlen = strlen(r->task_id);
    ts_buf ckey = {0};
    for (size_t i = c->n_complete; i < c->n; i++) {
        /* Local key tag + task_id + NUL + rest; changelog key tag + rest. */
        const char *key = c->arena.data + c->ops[i].koff;
        ts_buf_reset(&ckey);
        ts_buf_put(&ckey, key, 1);
        ts_buf_put(&ckey, key + 2 + idlen, c->ops[i].klen - 2 - idlen);
        if (!ckey.failed)
            each(arg, &(ts_bytes){ckey.data, ckey.len}, 0);
    }
    for (size_t at = 0; at < c->torn_groups.len;) {
        const char *key = c->torn_groups.data + at;
        size_t klen = strlen(key);
        each(arg, &(ts_bytes){(char *)key, klen}, 1);
        at += klen + 1;
    }
    ts_err rc = ckey.failed ? TS_E_NOMEM : TS_OK;
    ts_buf_close(&ckey);
    return rc;
}

/* A state key is re-sent with its restored value, read back when it is
 * sent; a group record is deleted. */
static void ts_restore_pending_add(void *arg, const ts_bytes *ckey, int group) {
    static const ts_bytes tombstone = {NULL, 0};
    if (group)
        ts_pending_add_inline(arg, ckey, &tombstone);
    else
        ts_pending_add_ref(arg, ckey);
}

/* The pending effects to store for the last marker. Records after it are a
 * torn batch: the instance that wrote them died before its marker. They stay
 * in the changelog, and the next owner's batches follow them, so a later
 * restore would take them as part of that owner's first batch (and
 * compaction keeps them where no later record has their key). So when there
 * are any, the pending effects become a full form that re-sends, before the
 * marker, every key they wrote with its restored value (or a tombstone), and
 * a tombstone for each of their group records: in the changelog, the torn
 * batch is then undone by the batch that follows it. */
static ts_err ts_restore_pending(ts_restore *r, ts_restore_chunk *c, ts_buf *q) {
    ts_bytes marker = {c->mark->payload, c->mark->len};
    ts_pending_begin_marker(q, &marker);
    ts_err rc = ts_restore_torn_keys(r, c, ts_restore_pending_add, q);
    return rc == TS_OK && q->failed ? TS_E_NOMEM : rc;
}

typedef struct ts_restore_undo {
    ts_buf *list;
    size_t n;
} ts_restore_undo;

static void ts_restore_undo_add(void *arg, const ts_bytes *ckey, int group) {
    (void)group; /* with no value to restore, every key is deleted */
    ts_restore_undo *u = arg;
    ts_buf_field(u->list, ckey);
    u->n++;
}

/* The changelog keys of a torn batch (its records and group records, as
 * ts_buf fields) when no marker precedes it: nothing to re-send with (a
 * pending record needs a marker), so the task deletes them in the changelog
 * ahead of its next batch's records instead ('U' key, ts_state.h). Else a
 * later restore would take them as part of that batch: state of events not
 * applied yet (an event id among them would be taken for a duplicate). */
static ts_err ts_restore_undo_list(ts_restore *r, const ts_restore_chunk *c, ts_buf *list,
                                   size_t *n) {
    ts_restore_undo u = {list, 0};
    ts_err rc = ts_restore_torn_keys(r, c, ts_restore_undo_add, &u);
    *n = u.n;
    return rc == TS_OK && list->failed ? TS_E_NOMEM : rc;
}

/* Ends the restore: the complete batches still held are written, and only
 * then the position and the pending effects of the last marker, and, when
 * the partition was read to its end, that end (the changelog end the local
 * state now matches: the next assignment finds it current). A crash before
 * that leaves no position (ts_restore_drop_local deleted it), so the next
 * start restores again; the records of a torn last batch are dropped.
 * (Writing without the WAL and flushing once at the end was measured slower:
 * the flush is on the critical path, the WAL append is not much.) */
static ts_err ts_restore_finish(ts_restore *r, ts_restore_chunk *c, int64_t end) {
    int torn = c->n > c->n_complete || c->torn_groups.len > 0;
    size_t torn_keys = 0;
    ts_buf q = {0}, u = {0};
    ts_err rc = TS_OK;
    if (end >= 0 && torn)
        rc = c->mark ? ts_restore_pending(r, c, &q) : ts_restore_undo_list(r, c, &u, &torn_keys);
    c->n = c->n_complete; /* drop the torn batch, if any */
    if (rc == TS_OK)
        rc = ts_restore_chunk_write(r, c);
    if (rc != TS_OK || (!c->mark && end < 0)) {
        ts_buf_close(&q);
        ts_buf_close(&u);
        return rc;
    }
    size_t idlen = strlen(r->task_id);
    char *key = malloc(idlen + 1);
    ts_state_batch *wb = ts_state_batch_create();
    if (!key || !wb) {
        free(key);
        ts_state_batch_destroy(wb);
        ts_buf_close(&q);
        ts_buf_close(&u);
        return TS_E_NOMEM;
    }
    memcpy(key + 1, r->task_id, idlen);
    if (c->mark) {
        key[0] = 'P';
        ts_state_batch_put(wb, key, idlen + 1, (const char *)c->mark->payload + 8, 8);
        key[0] = 'Q';
        if (q.len > 0)
            ts_state_batch_put(wb, key, idlen + 1, q.data, q.len);
        else
            ts_state_batch_put(wb, key, idlen + 1, c->mark->payload, c->mark->len);
    }
    if (u.len > 0) {
        ts_log_info(r->task_id,
                    "the changelog holds a torn first batch (%zu keys, no marker): they are "
                    "deleted there ahead of the next batch",
                    torn_keys);
        key[0] = 'U';
        ts_state_batch_put(wb, key, idlen + 1, u.data, u.len);
    }
    if (end >= 0) {
        char be[8];
        ts_buf_be64_store(be, end);
        key[0] = 'E';
        ts_state_batch_put(wb, key, idlen + 1, be, 8);
    }
    rc = ts_state_write(r->state, wb);
    ts_state_batch_destroy(wb);
    free(key);
    ts_buf_close(&q);
    ts_buf_close(&u);
    return rc;
}

static rd_kafka_t *ts_restore_consumer(ts_restore *r, char *err, size_t errlen) {
    rd_kafka_conf_t *conf = ts_kconf_create(r->brokers, r->kafka_config, err, errlen);
    if (!conf)
        return NULL;
    /* Large fetches: a restore reads one partition start to end as fast as
     * the broker serves it. */
    static const char *const settings[][2] = {
        {"group.id", "tastesync-restore"},
        {"enable.auto.commit", "false"},
        {"enable.partition.eof", "true"},
        {"fetch.max.bytes", "52428800"},
        {"max.partition.fetch.bytes", "16777216"},
        {"queued.min.messages", "500000"},
        {"fetch.wait.max.ms", "10"},
        /* The first fetch of a fresh consumer can meet a not-yet-known
         * leader; the default 500 ms backoff would be most of a small
         * restore. */
        {"fetch.error.backoff.ms", "10"},
    };
    for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++)
        if (ts_kconf_set(conf, settings[i][0], settings[i][1], err, errlen) != TS_OK) {
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    char kerr[256];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, kerr, sizeof(kerr));
    if (!rk) {
        snprintf(err, errlen, "restore consumer: %s", kerr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* The partition's start and end offsets, asked again until Kafka answers or
 * the restore is cancelled (a broker that is down pauses the assignment, it
 * does not fail the instance). */
static ts_err ts_restore_bounds(ts_restore *r, rd_kafka_t *rk, int64_t *low, int64_t *high) {
    for (int attempt = 0;; attempt++) {
        rd_kafka_resp_err_t kerr =
            rd_kafka_query_watermark_offsets(rk, r->topic, r->partition, low, high, 5000);
        if (!kerr)
            return TS_OK;
        if (atomic_load(&r->cancel))
            return TS_E_STOPPED;
        if (attempt % 6 == 0)
            ts_log_warn(r->task_id, "end of %s [%" PRId32 "] unknown: %s; asking again", r->topic,
                        r->partition, rd_kafka_err2str(kerr));
        for (int i = 0; i < 10 && !atomic_load(&r->cancel); i++)
            uv_sleep(100);
    }
}

/* Reads [low, high) of the changelog partition into the local state. */
static ts_err ts_restore_read(ts_restore *r, rd_kafka_t *rk, int64_t low, int64_t high) {
    atomic_store(&r->total, (uint64_t)(high - low));
    if (high <= low)
        return ts_restore_finish(r, &(ts_restore_chunk){0}, high);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    /* From the known start: a logical offset would cost an offset lookup. */
    rd_kafka_topic_partition_list_add(parts, r->topic, r->partition)->offset = low;
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);

    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(rk);
    rd_kafka_message_t **msgs = malloc(TS_RESTORE_FETCH * sizeof(*msgs));
    ts_restore_chunk chunk = {0};
    ts_err rc = msgs ? TS_OK : TS_E_NOMEM;
    double t0 = ts_restore_now(), last_log = t0;
    int64_t next = low;
    while (rc == TS_OK && next < high && !atomic_load(&r->cancel)) {
        /* consume_batch waits for a full batch or its timeout, which at the
         * end of the partition would be pure waiting: take what is queued,
         * and block for one record only when nothing is. */
        ssize_t n = rd_kafka_consume_batch_queue(q, 0, msgs, TS_RESTORE_FETCH);
        if (n == 0 && (msgs[0] = rd_kafka_consume_queue(q, 200)))
            n = 1;
        for (ssize_t i = 0; i < n; i++) {
            rd_kafka_message_t *msg = msgs[i];
            int kept = 0;
            if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                next = msg->offset > next ? msg->offset : next;
            } else if (msg->err) {
                ts_log_warn(r->task_id, "restore: %s", rd_kafka_message_errstr(msg));
            } else if (rc == TS_OK) {
                rc = ts_restore_apply(r, &chunk, msg, &kept);
                next = msg->offset + 1;
                r->stats.records++;
            }
            if (!kept)
                rd_kafka_message_destroy(msg);
        }
        atomic_store(&r->read, (uint64_t)(next - low));
        double now = ts_restore_now();
        if (now - last_log >= 1.0) {
            double rate = (double)(next - low) / (now - t0);
            ts_log_info(r->task_id,
                        "restoring from %s: %" PRId64 "/%" PRId64 " records, %.0f records/s, "
                        "ETA %.0f s",
                        r->topic, next - low, high - low, rate,
                        rate > 0 ? (double)(high - next) / rate : 0.0);
            last_log = now;
        }
    }
    if (rc == TS_OK && atomic_load(&r->cancel))
        rc = TS_E_STOPPED;
    /* Stopped or not, the complete batches read so far are a consistent
     * state: keep them (with their position) rather than throw them away. */
    if (rc == TS_OK || rc == TS_E_STOPPED) {
        ts_err frc = ts_restore_finish(r, &chunk, rc == TS_OK ? high : -1);
        if (frc != TS_OK)
            rc = frc;
    }
    ts_restore_chunk_free(&chunk);
    free(msgs);
    rd_kafka_queue_destroy(q);
    rd_kafka_assign(rk, NULL);
    return rc;
}

static void ts_restore_work(uv_work_t *req) {
    ts_restore *r = req->data;
    double t0 = ts_restore_now();
    r->stats.position = -1;
    char err[512];
    rd_kafka_t *rk = ts_restore_consumer(r, err, sizeof(err));
    if (!rk) {
        ts_log_error(r->task_id, "restore: %s", err);
        r->status = TS_E_CONFIG;
        return;
    }
    int64_t low = 0, high = 0;
    r->status = ts_restore_bounds(r, rk, &low, &high);
    if (r->status == TS_OK && r->local_end >= 0 && high == r->local_end) {
        /* Nobody appended since this instance's last acknowledged batch (an
         * end of 0 included: a task whose changelog was empty keeps the
         * batch it decided, and re-sends it, instead of deciding it again). */
        r->stats.current = 1;
    } else if (r->status == TS_OK) {
        /* A compacted changelog keeps its first offset; one that starts
         * later lost records (a retention, or the embedded mock cluster's
         * ~5 MiB per partition), and what they held cannot come back. */
        if (low > 0)
            ts_log_warn(r->task_id,
                        "restore: %s [%" PRId32 "] starts at offset %" PRId64
                        ", not 0: its older records are gone (retention, or the mock "
                        "cluster's ~5 MiB per partition), so state they held is not restored",
                        r->topic, r->partition, low);
        r->status = ts_restore_drop_local(r);
        if (r->status == TS_OK)
            r->status = ts_restore_read(r, rk, low, high);
    }
    r->stats.changelog_end = high;
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    r->stats.seconds = ts_restore_now() - t0;
}

static void ts_restore_free(ts_restore *r) {
    free(r->brokers);
    free(r->topic);
    free(r->task_id);
    json_decref(r->kafka_config);
    free(r);
}

static void ts_restore_after(uv_work_t *req, int status) {
    ts_restore *r = req->data;
    if (status == UV_ECANCELED)
        r->status = TS_E_STOPPED;
    r->done(r->arg, r->status, &r->stats);
    ts_restore_free(r);
}

ts_err ts_restore_start(uv_loop_t *loop, const ts_restore_spec *spec, ts_restore_done_cb done,
                        void *arg, ts_restore **out) {
    ts_restore *r = calloc(1, sizeof(*r));
    if (!r)
        return TS_E_NOMEM;
    r->brokers = strdup(spec->brokers);
    r->topic = strdup(spec->changelog_topic);
    r->task_id = strdup(spec->task_id);
    r->kafka_config = spec->kafka_config ? json_deep_copy(spec->kafka_config) : NULL;
    r->partition = spec->partition;
    r->local_end = spec->local_end;
    r->state = spec->state;
    r->done = done;
    r->arg = arg;
    r->work.data = r;
    if (!r->brokers || !r->topic || !r->task_id) {
        ts_restore_free(r);
        return TS_E_NOMEM;
    }
    if (uv_queue_work(loop, &r->work, ts_restore_work, ts_restore_after) != 0) {
        ts_restore_free(r);
        return TS_E_IO;
    }
    *out = r;
    return TS_OK;
}

void ts_restore_cancel(ts_restore *r) {
    atomic_store(&r->cancel, 1);
    uv_cancel((uv_req_t *)&r->work); /* succeeds only if it has not started */
}

void ts_restore_progress(const ts_restore *r, uint64_t *done, uint64_t *total) {
    *done = atomic_load(&((ts_restore *)r)->read);
    *total = atomic_load(&((ts_restore *)r)->total);
}
