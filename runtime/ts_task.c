/* ts_task.c - a task: buffer, batch, decide, flush, acknowledge (see ts_task.h).
 *
 * Life of a batch:
 *   run()   processes buffered records through the processor (or to the DLQ),
 *           then writes state + position + pending effects in one RocksDB batch;
 *   flush   hands the effects to every sink;
 *   acked   when every sink said done: pending deleted, offset committed.
 * Only one batch is in flight per task, which keeps per-partition order and
 * bounds memory: while it is in flight, records pile up in the buffer, and
 * past a high-water mark the partition is paused at the source.
 *
 * run() is split over two threads: the loop thread takes the batch's records
 * out of the buffer (skipping redeliveries, going back for gaps), a pool
 * thread applies them and writes the batch to RocksDB (ts_task_decide_work),
 * and the loop thread takes the result back and flushes (ts_task_decided).
 * While a batch is on the pool, the task is busy: the loop touches nothing
 * the pool thread uses (context, effects, codecs, processor instance).
 */
#include "ts_task.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ts_log.h"
#include "ts_mirror.h"
#include "ts_pending.h"

#define TS_TASK_SEEN_STORE "_seen" /* event ids already applied, for dedup */
/* A batch closes once its changelog marker, which carries its effects (views
 * by key), could reach this size: the marker is one Kafka message, and this
 * keeps it under Kafka's usual 1 MB limit with room for the event that
 * crosses the bound. The views of the batch's renders join the marker only
 * when the batch ends, so the producer and the changelog topics accept more
 * (TS_KCONF_MAX_MESSAGE_BYTES): a large marker must never stop a partition.
 * The bound is on the marker, not on all effects: batches closed at 256 KiB
 * of effects (view values included) were ~3x smaller, and bigger ones cost
 * less per event (a hot key's state, view and changelog record are written
 * once per batch): 44.9K -> 48.3K events/s on the 1M stream (medians of
 * three interleaved pairs, benchmarks/PROFILE.md). */
#define TS_TASK_MAX_MARKER_BYTES (768 * 1024)
/* Records waiting below which a batch is decided without a slot. */
#define TS_TASK_SMALL_BATCH 128
/* Room a changelog record's key, headers and framing take beside its value. */
#define TS_TASK_RECORD_OVERHEAD 1024

struct ts_task {
    const ts_task_host *host;
    const ts_task_spec *spec;
    int32_t partition;
    char id[160];
    char owner[192]; /* "<instance>#<n>", see ts_flush.owner */

    void *proc; /* the processor instance */
    ts_effects *effs;
    ts_ctx *ctx;

    char *state_prefix; /* 'S' id 0x00 */
    size_t state_prefix_len;
    char pos_key[170];
    size_t pos_key_len;
    char pending_key[170];
    size_t pending_key_len;
    char end_key[170]; /* 'E': the changelog end after the last acknowledged batch */
    size_t end_key_len;
    char undo_key[170]; /* 'U': changelog keys to delete ahead of the next batch */
    size_t undo_key_len;
    ts_buf undo;        /* its value, loaded at start (empty: none) */
    ts_mirror mirror; /* the views' copy in the state */
    char *keybuf;     /* scratch: prefix + ctx key */
    size_t keycap;

    int64_t position; /* next input offset to process; -1: none yet */
    int64_t acked;    /* next input offset acknowledged by every sink */
    int64_t batch_event_ms; /* newest record timestamp of the batch in flight */
    int64_t acked_event_ms; /* newest record timestamp acknowledged (freshness) */
    int64_t acked_wall_ms;  /* wall clock of the last acknowledgement */
    ts_task_batch stats;          /* the batch in flight, for host->batched */
    struct timespec batch_start;  /* monotonic */

    rd_kafka_message_t **buf; /* records waiting, in offset order */
    size_t buf_head, buf_len, buf_cap;
    int paused;

    int busy;       /* a flush is in flight */
    int stopped;    /* failed, revoked or shut down: take nothing more */
    int revoked;
    ts_flush flush; /* the flush in flight */
    size_t acks_wanted, acks_got;
    int flush_failed;
    int changelog_failed; /* out of memory while building the changelog */
    int oversize;         /* the batch made a changelog record over the limit */
    int careful;          /* re-deciding such a batch: every event is checked */
    int64_t gap_at;       /* the position a gap was last seen at */
    int gap_seeks;        /* times the source was sent back there */

    int rebuild_wanted;       /* re-materialize the views at the next idle moment */
    int rebuilding;           /* a rebuild flush is in flight */
    ts_effects *rebuild_effs; /* the views read back from the mirror */
    char *ckeybuf;            /* scratch: a changelog record's key */
    size_t ckeycap;
    ts_buf seen_group;        /* the batch's event ids for the changelog, NUL-separated */
    size_t batch_id_bytes;    /* what the batch's event ids add to its group record */
    ts_buf pending;           /* the pending record (ts_pending.h), while a batch is decided */

    ts_decoder *decoder; /* the task's own codecs */
    struct ts_task_encoder {
        const char *topic;
        ts_encoder *enc;
    } encoders[8];
    size_t n_encoders;

    uv_work_t work;             /* step 1 on the pool */
    rd_kafka_message_t **batch; /* the records of the batch being decided */
    size_t batch_len, batch_cap, batch_done;
    int64_t batch_first, batch_next;
    ts_err batch_rc;
    int64_t batch_failed_at; /* offset of the record that failed the batch */
    int pending_acked; /* the stored pending effects are acknowledged, not deleted yet */
    int64_t flush_end;     /* ts_flush.emitted_end of the flush in flight, -1: none */
    int64_t changelog_end; /* of the last acknowledged batch, -1: none */
    int end_unstored;      /* changelog_end is newer than the stored 'E' */
    int held;          /* a batch decided after the revocation, not flushed */
    ts_flush rebuild_flush;
};

/* ---- keys and the state backend ------------------------------------------------ */

static char *ts_task_state_key(ts_task *task, const char *key, size_t klen, size_t *len) {
    size_t need = task->state_prefix_len + klen;
    if (need > task->keycap) {
        char *grown = realloc(task->keybuf, need);
        if (!grown)
            return NULL;
        task->keybuf = grown;
        task->keycap = need;
    }
    memcpy(task->keybuf, task->state_prefix, task->state_prefix_len);
    memcpy(task->keybuf + task->state_prefix_len, key, klen);
    *len = need;
    return task->keybuf;
}

static ts_err ts_task_backend_get(void *impl, const char *key, size_t klen, char **val,
                                  size_t *vlen) {
    ts_task *task = impl;
    size_t len;
    const char *full = ts_task_state_key(task, key, klen, &len);
    if (!full)
        return TS_E_NOMEM;
    return ts_state_get(task->host->state, full, len, val, vlen);
}

/* ---- life ---------------------------------------------------------------------- */

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

static ts_err ts_task_load(ts_task *task, char *err, size_t errlen) {
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

static void ts_task_mirror_write(void *arg, ts_state_batch *wb, const char *key, size_t klen,
                                 const char *val, size_t vlen);

/* The task's encoder of output `topic`, made on first use. */
static ts_encoder *ts_task_encoder_for(void *arg, const char *topic) {
    ts_task *task = arg;
    for (size_t i = 0; i < task->n_encoders; i++)
        if (strcmp(task->encoders[i].topic, topic) == 0)
            return task->encoders[i].enc;
    const char *subject = task->spec->output_schema(task->spec->output_arg, topic);
    if (!subject || task->n_encoders == sizeof(task->encoders) / sizeof(task->encoders[0]))
        return NULL;
    ts_encoder *enc = ts_encoder_create(task->spec->schemas, subject);
    if (!enc)
        return NULL;
    task->encoders[task->n_encoders].topic = topic;
    task->encoders[task->n_encoders++].enc = enc;
    return enc;
}

ts_err ts_task_create(const ts_task_host *host, const ts_task_spec *spec, int32_t partition,
                      ts_task **out, char *err, size_t errlen) {
    ts_task *task = calloc(1, sizeof(*task));
    if (!task)
        return TS_E_NOMEM;
    task->host = host;
    task->spec = spec;
    task->partition = partition;
    task->position = -1;
    task->acked = -1;
    snprintf(task->id, sizeof(task->id), "%s/%" PRId32, spec->name, partition);
    size_t idlen = strlen(task->id);
    task->pos_key[0] = 'P';
    memcpy(task->pos_key + 1, task->id, idlen);
    task->pos_key_len = idlen + 1;
    task->pending_key[0] = 'Q';
    memcpy(task->pending_key + 1, task->id, idlen);
    task->pending_key_len = idlen + 1;
    task->end_key[0] = 'E';
    memcpy(task->end_key + 1, task->id, idlen);
    task->end_key_len = idlen + 1;
    task->undo_key[0] = 'U';
    memcpy(task->undo_key + 1, task->id, idlen);
    task->undo_key_len = idlen + 1;
    task->changelog_end = task->flush_end = -1;
    task->state_prefix_len = idlen + 2;
    task->state_prefix = malloc(task->state_prefix_len);
    task->effs = ts_effects_create();
    ts_state_backend backend = {ts_task_backend_get, task};
    task->ctx = task->effs ? ts_ctx_create(&backend, task->effs, ts_task_encoder_for, task)
                           : NULL;
    if (task->ctx)
        ts_ctx_defer_views(task->ctx, 1);
    task->decoder = ts_decoder_create(spec->schemas, spec->input_schema);
    ts_mirror_init(&task->mirror, host->state, task->id, ts_task_mirror_write, task);
    task->work.data = task;
    if (!task->state_prefix || !task->ctx || !task->decoder ||
        ts_ctx_set_uncached(task->ctx, TS_TASK_SEEN_STORE) != TS_OK) {
        ts_task_destroy(task);
        return TS_E_NOMEM;
    }
    task->state_prefix[0] = 'S';
    memcpy(task->state_prefix + 1, task->id, idlen);
    task->state_prefix[idlen + 1] = '\0';
    task->flush.task_id = task->id;
    task->flush.effects = task->effs;
    snprintf(task->owner, sizeof(task->owner), "%s#%u", host->instance ? host->instance : "?",
             host->owner_seq ? ++*host->owner_seq : 0);
    task->flush.owner = task->owner;
    task->flush.emitted_end = &task->flush_end;

    char perr[256] = "";
    task->proc = spec->def->create(spec->params, perr, sizeof(perr));
    if (!task->proc) {
        snprintf(err, errlen, "processor %s: %s", spec->name, perr);
        ts_task_destroy(task);
        return TS_E_CONFIG;
    }
    ts_err rc = ts_task_load(task, err, errlen);
    if (rc != TS_OK) {
        ts_task_destroy(task);
        return rc;
    }
    *out = task;
    return TS_OK;
}

void ts_task_destroy(ts_task *task) {
    if (!task)
        return;
    for (size_t i = task->buf_head; i < task->buf_len; i++)
        rd_kafka_message_destroy(task->buf[i]);
    free(task->buf);
    if (task->proc)
        task->spec->def->destroy(task->proc);
    ts_ctx_destroy(task->ctx);
    ts_effects_destroy(task->effs);
    ts_effects_destroy(task->rebuild_effs);
    ts_decoder_destroy(task->decoder);
    for (size_t i = 0; i < task->n_encoders; i++)
        ts_encoder_destroy(task->encoders[i].enc);
    for (size_t i = task->batch_done; i < task->batch_len; i++)
        rd_kafka_message_destroy(task->batch[i]);
    free(task->batch);
    free(task->ckeybuf);
    ts_buf_close(&task->seen_group);
    ts_buf_close(&task->undo);
    ts_buf_close(&task->pending);
    free(task->state_prefix);
    free(task->keybuf);
    ts_mirror_close(&task->mirror);
    free(task);
}

const char *ts_task_id(const ts_task *task) { return task->id; }
const char *ts_task_topic(const ts_task *task) { return task->spec->topic; }
int32_t ts_task_partition(const ts_task *task) { return task->partition; }
int64_t ts_task_position(const ts_task *task) { return task->position; }
int64_t ts_task_acked(const ts_task *task) { return task->acked; }
int ts_task_busy(const ts_task *task) { return task->busy; }

void ts_task_freshness(const ts_task *task, int64_t *event_ms, int64_t *acked_ms) {
    *event_ms = task->acked_event_ms;
    *acked_ms = task->acked_wall_ms;
}

int ts_task_ready(const ts_task *task) {
    return !task->busy && !task->stopped &&
           (task->buf_len > task->buf_head || task->rebuild_wanted);
}

int ts_task_rebuilding(const ts_task *task) { return task->rebuild_wanted || task->rebuilding; }

static void ts_task_flush_start(ts_task *task);
static void ts_task_flush_acked(ts_task *task);

ts_err ts_task_start(ts_task *task) {
    if (ts_effects_count(task->effs) > 0) {
        ts_log_info(task->id, "re-sending %zu pending effects of offsets %" PRId64 "..%" PRId64,
                    ts_effects_live(task->effs, 0), task->flush.first_offset,
                    task->flush.next_offset - 1);
        ts_task_flush_start(task);
    }
    return TS_OK;
}

/* ---- input --------------------------------------------------------------------- */

void ts_task_push(ts_task *task, rd_kafka_message_t *msg) {
    if (task->stopped) {
        rd_kafka_message_destroy(msg);
        return;
    }
    if (task->buf_len == task->buf_cap) {
        /* Reclaim the consumed head before growing. */
        if (task->buf_head > 0) {
            memmove(task->buf, task->buf + task->buf_head,
                    (task->buf_len - task->buf_head) * sizeof(*task->buf));
            task->buf_len -= task->buf_head;
            task->buf_head = 0;
        }
        if (task->buf_len == task->buf_cap) {
            size_t cap = task->buf_cap ? task->buf_cap * 2 : 256;
            rd_kafka_message_t **grown = realloc(task->buf, cap * sizeof(*grown));
            if (!grown) {
                /* Dropping the record is safe: the position does not move past
                 * it, so pausing and re-fetching brings it back. */
                rd_kafka_message_destroy(msg);
                return;
            }
            task->buf = grown;
            task->buf_cap = cap;
        }
    }
    task->buf[task->buf_len++] = msg;
    size_t waiting = task->buf_len - task->buf_head;
    if (!task->paused && waiting >= (size_t)task->host->max_events * 2) {
        task->paused = 1;
        task->host->pause(task->host->arg, task, 1);
    }
    if (ts_task_ready(task))
        task->host->schedule(task->host->arg, task);
}

/* Puts the changelog end of the last acknowledged batch into `wb` (with the
 * write that replaces or deletes that batch's pending effects): while it is
 * the partition's end, no other instance appended after this one, and the
 * local state is current (see ts_restore.h). */
static void ts_task_store_end(ts_task *task, ts_state_batch *wb) {
    if (!task->end_unstored)
        return;
    char end[8];
    ts_buf_be64_store(end, task->changelog_end);
    ts_state_batch_put(wb, task->end_key, task->end_key_len, end, 8);
}

/* Deletes the stored pending effects once every sink acknowledged them. */
static void ts_task_forget_pending(ts_task *task) {
    task->pending_acked = 0;
    ts_state_batch *wb = ts_state_batch_create();
    if (!wb)
        return;
    ts_state_batch_delete(wb, task->pending_key, task->pending_key_len);
    ts_task_store_end(task, wb);
    /* Failing to write is harmless: the effects would be re-sent and the
     * sinks' fences skip them; an old changelog end means a restore. */
    if (ts_state_write(task->host->state, wb) == TS_OK)
        task->end_unstored = 0;
    ts_state_batch_destroy(wb);
}

void ts_task_revoke(ts_task *task) {
    for (size_t i = task->buf_head; i < task->buf_len; i++)
        rd_kafka_message_destroy(task->buf[i]);
    task->buf_head = task->buf_len = 0;
    if (task->pending_acked && !task->busy)
        ts_task_forget_pending(task);
    task->stopped = 1;
    task->revoked = 1;
}

int ts_task_revoked(const ts_task *task) { return task->revoked; }

void ts_task_reassign(ts_task *task) {
    task->revoked = 0;
    task->stopped = 0;
    task->paused = 0;
    if (task->held) {
        task->held = 0;
        if (ts_effects_live(task->effs, 0) == 0)
            ts_task_flush_acked(task);
        else
            ts_task_flush_start(task);
    }
}

/* ---- the largest Kafka message -----------------------------------------------
 * A changelog record or marker over the producer's message.max.bytes is
 * refused on every retry: the partition would never move again. Deciding
 * finds such a record (the documents are serialized only then) and the batch
 * is decided again, checking every event (ts_task_fits): the event that makes
 * one goes to the DLQ, the others are applied as before. */

/* The largest changelog value (with its key) that fits a message. */
static size_t ts_task_record_room(const ts_task *task) {
    size_t max = task->host->max_message_bytes;
    if (max == 0)
        return SIZE_MAX;
    return max > TS_TASK_RECORD_OVERHEAD ? max - TS_TASK_RECORD_OVERHEAD : 0;
}

/* Where a batch closes: near TS_TASK_MAX_MARKER_BYTES of marker, or half the
 * message limit when that is lower, so the event that crosses it has the
 * other half (ts_task_fits). */
static size_t ts_task_marker_bound(const ts_task *task) {
    size_t half = ts_task_record_room(task) / 2;
    return half < TS_TASK_MAX_MARKER_BYTES ? half : TS_TASK_MAX_MARKER_BYTES;
}

/* Whether the current event, which ended well, fits every message it makes:
 * its writes and view values as changelog records, its share of the marker.
 * @returns TS_OK, TS_E_REJECT (reason given to the context) or TS_E_NOMEM. */
static ts_err ts_task_fits(ts_task *task, size_t mark, size_t marker_before) {
    size_t room = ts_task_record_room(task);
    if (room == SIZE_MAX)
        return TS_OK;
    size_t largest = ts_ctx_event_largest_write(task->ctx);
    if (largest == SIZE_MAX)
        return TS_E_NOMEM;
    if (largest > room)
        return ts_ctx_reject(task->ctx,
                             "a state value of %zu bytes would exceed the largest Kafka "
                             "message (message.max.bytes %zu) of the changelog",
                             largest, task->host->max_message_bytes);
    for (size_t i = mark; i < ts_effects_count(task->effs); i++) {
        const ts_effect *e = ts_effects_at(task->effs, i);
        size_t size = e->a.len + e->b.len + e->c.len + e->d.len;
        if (!e->dead && size > room)
            return ts_ctx_reject(task->ctx,
                                 "a view, row or output event of %zu bytes would exceed "
                                 "the largest Kafka message (message.max.bytes %zu)",
                                 size, task->host->max_message_bytes);
    }
    size_t share = ts_effects_encoded_max(task->effs, TS_EFFECTS_VIEWS_BY_KEY) - marker_before;
    if (share > room - ts_task_marker_bound(task))
        return ts_ctx_reject(task->ctx,
                             "its effects (%zu bytes) would not fit the batch's changelog "
                             "marker (message.max.bytes %zu)",
                             share, task->host->max_message_bytes);
    return TS_OK;
}

/* Adds the DLQ record of a rejected or undecodable input: the input unchanged,
 * with the reason and its source position in headers. */
static ts_err ts_task_dlq(ts_task *task, const rd_kafka_message_t *msg, const char *reason) {
    char partition[16], offset[24];
    snprintf(partition, sizeof(partition), "%" PRId32, msg->partition);
    snprintf(offset, sizeof(offset), "%" PRId64, msg->offset);
    const char *names[] = {"error", "source.topic", "source.partition", "source.offset"};
    const char *values[] = {reason, task->spec->topic, partition, offset};
    ts_bytes headers = ts_headers_pack(names, values, 4);
    task->stats.rejected++;
    ts_bytes topic = ts_bytes_str(task->spec->dlq_topic);
    ts_bytes key = {msg->key, msg->key ? msg->key_len : 0};
    ts_bytes value = {msg->payload, msg->payload ? msg->len : 0};
    ts_err err = headers.data ? ts_effects_add(task->effs, TS_EFF_EMIT, &topic, &key, &value,
                                               &headers, 0)
                              : TS_E_NOMEM;
    free(headers.data);
    ts_log_debug(task->id, "offset %" PRId64 " to %s: %s", msg->offset, task->spec->dlq_topic,
                 reason);
    return err;
}

static int ts_task_redriven(const rd_kafka_message_t *msg) {
    rd_kafka_headers_t *hdrs = NULL;
    const void *value;
    size_t size;
    return rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
           rd_kafka_header_get_last(hdrs, "redriven.from", &value, &size) ==
               RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* Runs one record through dedup and the processor. Returns TS_OK when the
 * record is handled (applied, skipped or sent to the DLQ). */
static ts_err ts_task_apply(ts_task *task, const rd_kafka_message_t *msg) {
    avro_value_t *record = NULL;
    const char *type = NULL;
    char reason[512];
    ts_err rc = ts_decoder_decode(task->decoder, msg->payload, msg->payload ? msg->len : 0,
                                  &record, &type, reason, sizeof(reason));
    if (rc != TS_OK)
        return ts_task_dlq(task, msg, reason);

    char key[512] = "";
    if (msg->key) {
        size_t n = msg->key_len < sizeof(key) - 1 ? msg->key_len : sizeof(key) - 1;
        memcpy(key, msg->key, n);
        key[n] = '\0';
    }
    rd_kafka_timestamp_type_t tstype;
    ts_event ev = {
        .type = type,
        .value = record,
        .topic = task->spec->topic,
        .partition = task->partition,
        .offset = msg->offset,
        .key = msg->key ? key : NULL,
        .timestamp_ms = rd_kafka_message_timestamp(msg, &tstype),
    };
    const char *event_id = ts_event_str(&ev, "event_id");
    size_t id_len = event_id ? strlen(event_id) : 0;
    if (id_len > TS_EVENT_MAX_ID_BYTES) {
        /* The dedup key and the seed of output ids: kept short (and the
         * batch's record of event ids bounded). */
        snprintf(reason, sizeof(reason), "event_id of %zu bytes (at most %d)", id_len,
                 TS_EVENT_MAX_ID_BYTES);
        return ts_task_dlq(task, msg, reason);
    }

    ts_ctx_event_begin(task->ctx, &ev);
    /* A record an operator re-drove from the DLQ (`tastesync dlq redrive`,
     * header redriven.from) is processed again although its event id was
     * seen: that is the point of re-driving it after a fix. */
    if (event_id && !ts_task_redriven(msg)) {
        const char *seen;
        size_t seen_len;
        rc = ts_ctx_get(task->ctx, TS_TASK_SEEN_STORE, event_id, &seen, &seen_len);
        if (rc == TS_OK)
            return ts_ctx_event_end(task->ctx, TS_OK, NULL); /* a redelivery: no effect */
        if (rc != TS_E_NOTFOUND)
            return ts_ctx_event_end(task->ctx, rc, NULL);
    }
    const char *why = NULL;
    size_t mark = 0, marker_before = 0; /* what the event adds, when it is checked */
    if (task->careful) {
        mark = ts_effects_mark(task->effs);
        marker_before = ts_effects_encoded_max(task->effs, TS_EFFECTS_VIEWS_BY_KEY);
    }
    rc = task->spec->def->process(task->proc, task->ctx, &ev);
    if (rc == TS_OK && task->careful)
        rc = ts_task_fits(task, mark, marker_before);
    rc = ts_ctx_event_end(task->ctx, rc, &why);
    if (rc == TS_E_REJECT) {
        snprintf(reason, sizeof(reason), "%s", why);
        rc = ts_task_dlq(task, msg, reason);
    }
    if (rc != TS_OK)
        return rc;
    if (event_id) {
        task->batch_id_bytes += id_len + sizeof(TS_TASK_SEEN_STORE) + 1;
        ts_ctx_event_begin(task->ctx, &ev);
        ts_ctx_put(task->ctx, TS_TASK_SEEN_STORE, event_id, "", 0);
        rc = ts_ctx_event_end(task->ctx, TS_OK, NULL);
    }
    return rc;
}

/* ---- deciding and flushing ------------------------------------------------------------- */

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
    if (ts_task_record_room(task) < klen + vlen)
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
    const char *full = ts_task_state_key(task, key, klen, &len);
    if (!full)
        return;
    static const char seen[] = TS_TASK_SEEN_STORE "\x1f";
    if (task->spec->changelog_topic && val && vlen == 0 && klen > sizeof(seen) - 1 &&
        memcmp(key, seen, sizeof(seen) - 1) == 0) {
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

static void ts_task_fail(ts_task *task, ts_err err) {
    task->stopped = 1;
    ts_log_error(task->id, "task stopped: %s", ts_err_str(err));
    task->host->failed(task->host->arg, task, err);
}

/* ---- the view mirror (ts_mirror.h) ------------------------------------------ */

static void ts_task_mirror_write(void *arg, ts_state_batch *wb, const char *key, size_t klen,
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
            if (e->b.len + e->c.len + e->d.len > ts_task_record_room(task))
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
static ts_err ts_task_decide(ts_task *task, int64_t first, int64_t next) {
    ts_err resolved = ts_ctx_views_resolve(task->ctx);
    if (resolved != TS_OK)
        return resolved;
    size_t processed = ts_effects_count(task->effs);
    int keep = task->spec->changelog_topic || ts_effects_live(task->effs, 0) > 0;
    /* The write batch and the pending record live for this call only: kept
     * per task, each held a copy of the task's largest batch (~90 MiB of peak
     * RSS over the benchmark's 96 tasks); growing them again costs far less
     * than the batch's other work. */
    ts_state_batch *wb = ts_state_batch_create();
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
        if (marker.len > ts_task_record_room(task))
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
        rc = TS_E_REJECT; /* decided again, event by event (ts_task_decide_records) */
    if (rc == TS_OK)
        ts_task_store_end(task, wb);
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
    ts_state_batch_destroy(wb);
    ts_buf_close(&task->pending);
    return rc;
}

/* Milliseconds since `start` on the monotonic clock. */
static double ts_task_ms_since(const struct timespec *start) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) * 1e3 +
           (double)(now.tv_nsec - start->tv_nsec) / 1e6;
}

/* Step 3: every sink acknowledged the flush. */
static void ts_task_flush_acked(ts_task *task) {
    int had_pending = ts_effects_count(task->effs) > 0;
    ts_effects_clear(task->effs);
    task->busy = 0;
    task->acked = task->flush.next_offset;
    if (task->flush_end >= 0 && task->spec->changelog_topic) {
        task->changelog_end = task->flush_end;
        task->end_unstored = 1;
    }
    task->flush_end = -1;
    if (task->batch_event_ms > task->acked_event_ms)
        task->acked_event_ms = task->batch_event_ms;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    task->acked_wall_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    /* With records waiting, the next batch follows at once and replaces or
     * deletes the pending effects in its own write (a write less per batch
     * on the loop thread); an idle task deletes them now. */
    task->pending_acked = had_pending;
    if (had_pending && !ts_task_ready(task))
        ts_task_forget_pending(task);
    if (task->host->batched && task->stats.events > 0) {
        task->stats.seconds = ts_task_ms_since(&task->batch_start) / 1e3;
        task->host->batched(task->host->arg, task, &task->stats);
        task->stats.events = 0;
    }
    if (!task->stopped)
        task->host->commit(task->host->arg, task, task->acked);
    if (ts_task_ready(task))
        task->host->schedule(task->host->arg, task);
}

static void ts_task_sink_done(void *arg, ts_err status) {
    ts_task *task = arg;
    task->acks_got++;
    if (status != TS_OK)
        task->flush_failed = 1;
    if (task->acks_got < task->acks_wanted)
        return;
    if (task->flush_failed) {
        /* Only a shutdown fails a flush (sinks retry everything else); the
         * pending effects stay in RocksDB and are re-sent at the next start. */
        task->busy = 0;
        task->stopped = 1;
        ts_effects_clear(task->effs);
        return;
    }
    ts_task_flush_acked(task);
}

/* Step 2: hands the decided effects to every sink. */
static void ts_task_flush_start(ts_task *task) {
    task->busy = 1;
    task->acks_got = 0;
    task->flush_failed = 0;
    task->acks_wanted = task->host->n_sinks;
    for (size_t i = 0; i < task->host->n_sinks; i++) {
        ts_sink *sink = &task->host->sinks[i];
        ts_err rc = sink->ops->write(sink->impl, &task->flush, ts_task_sink_done, task);
        if (rc != TS_OK) {
            ts_log_error(task->id, "sink %s refused a flush: %s", sink->ops->name,
                         ts_err_str(rc));
            ts_task_sink_done(task, rc);
        }
    }
}

/* ---- rebuilding views from the mirror --------------------------------------- */

void ts_task_rebuild(ts_task *task) {
    task->rebuild_wanted = 1;
    if (ts_task_ready(task))
        task->host->schedule(task->host->arg, task);
}

static void ts_task_rebuild_done(void *arg, ts_err status) {
    ts_task *task = arg;
    size_t n = ts_effects_live(task->rebuild_effs, 0);
    ts_effects_clear(task->rebuild_effs);
    task->rebuilding = 0;
    task->busy = 0;
    if (status != TS_OK) {
        task->rebuild_wanted = 1; /* shut down first: the next start will do it */
        return;
    }
    ts_log(n ? TS_LOG_INFO : TS_LOG_DEBUG, task->id,
           "rebuilt %zu views and sorted-set members from state", n);
    task->host->rebuilt(task->host->arg, task, n);
    if (ts_task_ready(task))
        task->host->schedule(task->host->arg, task);
}

static void ts_task_rebuild_start(ts_task *task) {
    task->rebuild_wanted = 0;
    if (!task->rebuild_effs && !(task->rebuild_effs = ts_effects_create())) {
        ts_task_fail(task, TS_E_NOMEM);
        return;
    }
    ts_err rc = ts_mirror_read(task->host->state, task->id, task->rebuild_effs);
    if (rc != TS_OK) {
        ts_task_fail(task, rc);
        return;
    }
    task->busy = 1;
    task->rebuilding = 1;
    task->rebuild_flush = (ts_flush){task->id, task->acked, task->acked, task->rebuild_effs};
    ts_sink *views = task->host->views;
    rc = views->ops->write(views->impl, &task->rebuild_flush, ts_task_rebuild_done, task);
    if (rc != TS_OK) {
        ts_log_error(task->id, "view sink refused the rebuild: %s", ts_err_str(rc));
        task->busy = 0;
        task->rebuilding = 0;
        ts_task_fail(task, rc);
    }
}

/* Puts records back in front of the buffer (those a batch did not take). */
static void ts_task_unshift(ts_task *task, rd_kafka_message_t **msgs, size_t n) {
    if (task->stopped) {
        for (size_t i = 0; i < n; i++)
            rd_kafka_message_destroy(msgs[i]);
        return;
    }
    size_t waiting = task->buf_len - task->buf_head;
    if (task->buf_head < n) {
        if (waiting + n > task->buf_cap) {
            rd_kafka_message_t **grown = realloc(task->buf, (waiting + n) * sizeof(*grown));
            if (!grown) {
                /* As in push: the position stays before them, the gap check
                 * fetches them again. */
                for (size_t i = 0; i < n; i++)
                    rd_kafka_message_destroy(msgs[i]);
                return;
            }
            task->buf = grown;
            task->buf_cap = waiting + n;
        }
        memmove(task->buf + n, task->buf + task->buf_head, waiting * sizeof(*task->buf));
        task->buf_head = n;
        task->buf_len = n + waiting;
    }
    task->buf_head -= n;
    memcpy(task->buf + task->buf_head, msgs, n * sizeof(*msgs));
}

/* Runs the batch's first `end` records; when `bounded`, stops earlier once
 * the marker could reach its bound or the records took the host's max_ms
 * (looked at every 8 records: the batch's first views then wait at most that
 * long for the rest). The records stay in the batch until it is decided (a
 * batch may run them twice). @returns how many were run. */
static size_t ts_task_apply_records(ts_task *task, size_t end, int bounded) {
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    size_t bound = ts_task_marker_bound(task), i = 0;
    task->batch_id_bytes = 0;
    for (; i < end; i++) {
        /* The group record of the batch's event ids is one Kafka message
         * too: bounded like the marker (it only binds for long ids or a
         * batch.max_events far above the default). */
        if (bounded && (ts_effects_encoded_max(task->effs, TS_EFFECTS_VIEWS_BY_KEY) >= bound ||
                        task->batch_id_bytes >= bound))
            break;
        if (bounded && i > 0 && i % 8 == 0 && task->host->max_ms > 0 &&
            ts_task_ms_since(&start) >= task->host->max_ms)
            break;
        rd_kafka_message_t *msg = task->batch[i];
        ts_err rc = ts_task_apply(task, msg);
        if (rc != TS_OK) {
            task->batch_rc = rc;
            task->batch_failed_at = msg->offset;
            break;
        }
        if (task->batch_first < 0)
            task->batch_first = msg->offset;
        rd_kafka_timestamp_type_t tstype;
        int64_t ts = rd_kafka_message_timestamp(msg, &tstype);
        if (ts > task->batch_event_ms)
            task->batch_event_ms = ts;
        task->batch_next = msg->offset + 1;
    }
    return i;
}

/* Step 1, on a pool thread: the processor over the batch's records, then the
 * batch written. A batch that made a record over the largest Kafka message
 * is abandoned and run again with every event checked (ts_task_fits). */
static void ts_task_decide_records(ts_task *task) {
    task->batch_rc = TS_OK;
    task->batch_first = -1;
    task->batch_failed_at = -1;
    task->batch_done = ts_task_apply_records(task, task->batch_len, 1);
    if (task->batch_rc != TS_OK || task->batch_first < 0)
        return;
    task->batch_rc = ts_task_decide(task, task->batch_first, task->batch_next);
    if (task->batch_rc == TS_OK || !task->oversize)
        return;
    ts_log_warn(task->id,
                "offsets %" PRId64 "..%" PRId64 " made a changelog record over "
                "message.max.bytes: deciding them again, event by event",
                task->batch_first, task->batch_next - 1);
    ts_effects_clear(task->effs); /* the context forgot the batch's writes */
    task->stats.rejected = 0;
    task->batch_rc = TS_OK;
    task->batch_first = -1;
    task->careful = 1;
    ts_ctx_defer_views(task->ctx, 0);
    size_t done = ts_task_apply_records(task, task->batch_done, 0);
    ts_ctx_defer_views(task->ctx, 1);
    task->careful = 0;
    if (task->batch_rc == TS_OK && done == task->batch_done && task->batch_first >= 0)
        task->batch_rc = ts_task_decide(task, task->batch_first, task->batch_next);
    else if (task->batch_rc == TS_OK)
        task->batch_rc = TS_E_STATE; /* cannot happen: the same records ran before */
}

static void ts_task_decide_work(uv_work_t *req) {
    ts_task *task = req->data;
    ts_task_decide_records(task);
    /* The records the batch took are done with (on this thread, not the loop's). */
    for (size_t i = 0; i < task->batch_done; i++)
        rd_kafka_message_destroy(task->batch[i]);
}

/* Step 1 done, back on the loop thread: flush what was decided. */
static void ts_task_decided(uv_work_t *req, int status) {
    ts_task *task = req->data;
    (void)status; /* work is never cancelled */
    if (task->host->deciding) {
        /* A task waits for a slot only while all were taken. */
        int full = ts_task_host_slots_full(task->host);
        (*task->host->deciding)--;
        if (full)
            task->host->schedule(task->host->arg, task);
    }
    task->stats.events = task->batch_done;
    if (task->batch_rc != TS_OK) {
        if (task->batch_failed_at >= 0)
            ts_log_error(task->id, "offset %" PRId64 ": %s", task->batch_failed_at,
                         ts_err_str(task->batch_rc));
        for (size_t i = task->batch_done; i < task->batch_len; i++)
            rd_kafka_message_destroy(task->batch[i]);
        task->batch_len = task->batch_done = 0;
        ts_ctx_writes_clear(task->ctx);
        ts_effects_clear(task->effs);
        task->busy = 0;
        ts_task_fail(task, task->batch_rc);
        return;
    }
    ts_task_unshift(task, task->batch + task->batch_done, task->batch_len - task->batch_done);
    task->batch_len = task->batch_done = 0;
    task->position = task->batch_next;
    task->flush.first_offset = task->batch_first;
    task->flush.next_offset = task->batch_next;
    if (task->revoked) {
        /* Revoked while the batch was decided: it must not reach the sinks
         * now, when the partition may already be processed elsewhere (a late
         * flush would put older views and changelog records over newer
         * ones). It is held: flushed if the partition comes back to this
         * task, else its pending effects wait in RocksDB for the next task
         * of this partition here whose state is current. */
        task->held = 1;
        task->busy = 0;
        return;
    }
    if (ts_effects_live(task->effs, 0) == 0) {
        ts_task_flush_acked(task); /* not busy any more; schedules what waits */
        return;
    }
    ts_task_flush_start(task);
}

int ts_task_host_slots_full(const ts_task_host *host) {
    return host->max_deciding && host->deciding && *host->deciding >= host->max_deciding;
}

/* Whether a batch may start deciding now (see ts_task_host.max_deciding). A
 * small one always may: it is quick, and one that waits for a slot behind a
 * decide preempted by another process waits longer than the whole batch
 * takes (storybook at 10K events/s, ~5 records a batch: event->view p99 19
 * -> 29 ms with every batch limited). */
static int ts_task_slot_free(const ts_task *task) {
    return !ts_task_host_slots_full(task->host) ||
           task->buf_len - task->buf_head < TS_TASK_SMALL_BATCH;
}

void ts_task_run(ts_task *task) {
    if (!ts_task_ready(task))
        return;
    if (task->rebuild_wanted) {
        ts_task_rebuild_start(task);
        return;
    }
    if (!ts_task_slot_free(task))
        return; /* scheduled again when a decide ends */
    size_t limit = (size_t)task->host->max_events;
    if (task->batch_cap < limit) {
        rd_kafka_message_t **grown = realloc(task->batch, limit * sizeof(*grown));
        if (!grown)
            return; /* the records wait; the next schedule tries again */
        task->batch = grown;
        task->batch_cap = limit;
    }
    task->stats = (ts_task_batch){0};
    clock_gettime(CLOCK_MONOTONIC, &task->batch_start);
    int64_t next = task->position;
    task->batch_len = task->batch_done = 0;
    while (task->buf_head < task->buf_len && task->batch_len < limit) {
        rd_kafka_message_t *msg = task->buf[task->buf_head++];
        if (next >= 0 && msg->offset < next) {
            rd_kafka_message_destroy(msg); /* redelivered below our position */
            continue;
        }
        if (next >= 0 && msg->offset > next) {
            /* Input is never compacted: a gap means the fetch position ran
             * ahead of ours (e.g. after a hand-over). Go back for the missing
             * records; only if they stay missing were they lost to
             * retention, which is reported loudly and then accepted. */
            if (task->gap_at != next || task->gap_seeks < 3) {
                task->gap_seeks = task->gap_at == next ? task->gap_seeks + 1 : 1;
                task->gap_at = next;
                ts_log_warn(task->id, "offsets %" PRId64 "..%" PRId64 " missing: fetching again",
                            next, msg->offset - 1);
                rd_kafka_message_destroy(msg);
                for (size_t i = task->buf_head; i < task->buf_len; i++)
                    rd_kafka_message_destroy(task->buf[i]);
                task->buf_head = task->buf_len = 0;
                task->host->seek(task->host->arg, task, next);
                break;
            }
            ts_log_error(task->id,
                         "input offsets %" PRId64 "..%" PRId64 " are gone (retention?): "
                         "their events were never processed",
                         next, msg->offset - 1);
        }
        task->batch[task->batch_len++] = msg;
        next = msg->offset + 1;
    }
    if (task->buf_head == task->buf_len)
        task->buf_head = task->buf_len = 0;
    if (task->paused && task->buf_len - task->buf_head < (size_t)task->host->max_events) {
        task->paused = 0;
        task->host->pause(task->host->arg, task, 0);
    }
    if (task->batch_len == 0) {
        if (ts_task_ready(task))
            task->host->schedule(task->host->arg, task);
        return; /* everything was a redelivery */
    }
    task->busy = 1;
    if (task->host->deciding)
        (*task->host->deciding)++;
    if (!task->host->loop) {
        ts_task_decide_work(&task->work);
        ts_task_decided(&task->work, 0);
    } else if (uv_queue_work(task->host->loop, &task->work, ts_task_decide_work,
                             ts_task_decided) != 0) {
        ts_task_decide_work(&task->work); /* cannot happen with a valid loop; stay correct */
        ts_task_decided(&task->work, 0);
    }
}
