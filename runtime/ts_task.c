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
 *
 * This file is the task, its buffer, the hand-over of a batch to the pool
 * and back, and the flush; applying the batch's records is in
 * ts_task_apply.c, the batch's write and changelog records in
 * ts_task_changelog.c, what a task finds stored at start in ts_task_recover.c
 * and the views' rebuild in ts_task_rebuild.c (ts_task_int.h).
 */
#include "ts_task_int.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ts_log.h"
#include "ts_mirror.h"

/* Records waiting below which a batch is decided without a slot. */
#define TS_TASK_SMALL_BATCH 128

/* ---- keys and the state backend ------------------------------------------------ */

char *ts_task__state_key(ts_task *task, const char *key, size_t klen, size_t *len) {
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

int ts_task__is_seen_key(const char *key, size_t klen) {
    static const char seen[] = TS_TASK_SEEN_STORE "\x1f";
    return klen > sizeof(seen) - 1 && memcmp(key, seen, sizeof(seen) - 1) == 0;
}

static ts_err ts_task_backend_get(void *impl, const char *key, size_t klen, char **val,
                                  size_t *vlen) {
    ts_task *task = impl;
    /* Most reads that reach the store are of a key never written (the first
     * event of a new user, book or device): the filter answers those without
     * a RocksDB lookup, which for a missing key probes every sorted run.
     * Event ids have their own filter, asked before they are looked up. */
    if (task->key_filter && !ts_task__is_seen_key(key, klen) &&
        !ts_bloom_may_contain(task->key_filter, ts_bloom_hash(key, klen)))
        return TS_E_NOTFOUND;
    size_t len;
    const char *full = ts_task__state_key(task, key, klen, &len);
    if (!full)
        return TS_E_NOMEM;
    return ts_state_get(task->host->state, full, len, val, vlen);
}

/* ---- life ---------------------------------------------------------------------- */

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
    ts_mirror_init(&task->mirror, host->state, task->id, ts_task__mirror_write, task);
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
    snprintf(task->owner, sizeof(task->owner), "%s@%" PRId64 "#%u",
             host->instance ? host->instance : "?", host->started_ms,
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
    ts_err rc = ts_task__load(task, err, errlen);
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
    ts_bloom_destroy(task->seen_filter);
    ts_bloom_destroy(task->key_filter);
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
size_t ts_task_dedup_bytes(const ts_task *task) { return task->seen_filter_bytes; }

size_t ts_task_key_filter_bytes(const ts_task *task) { return task->key_filter_bytes; }

void ts_task_freshness(const ts_task *task, int64_t *event_ms, int64_t *acked_ms) {
    *event_ms = task->acked_event_ms;
    *acked_ms = task->acked_wall_ms;
}

int ts_task_ready(const ts_task *task) {
    return !task->busy && !task->stopped &&
           (task->buf_len > task->buf_head || task->rebuild_wanted);
}

static void ts_task_flush_acked(ts_task *task);

/* ---- input --------------------------------------------------------------------- */

/* What a waiting record counts against host->max_buffered_bytes. */
static size_t ts_task_record_bytes(const rd_kafka_message_t *msg) {
    return msg->len + msg->key_len;
}

/* Whether the records waiting are over a bound: the count alone would let a
 * task hold 2 * max_events records of up to 512 KiB each (GiBs) before its
 * partition pauses. */
static int ts_task_buffer_full(const ts_task *task) {
    size_t max_bytes = task->host->max_buffered_bytes;
    return task->buf_len - task->buf_head >= (size_t)task->host->max_events * 2 ||
           (max_bytes > 0 && task->buf_bytes >= max_bytes);
}

/* Whether a paused partition may fetch again: well below both bounds, so a
 * backlog does not pause and resume it at every batch. */
static int ts_task_buffer_low(const ts_task *task) {
    size_t max_bytes = task->host->max_buffered_bytes;
    return task->buf_len - task->buf_head < (size_t)task->host->max_events &&
           (max_bytes == 0 || task->buf_bytes < max_bytes / 2);
}

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
    task->buf_bytes += ts_task_record_bytes(msg);
    if (!task->paused && ts_task_buffer_full(task)) {
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
void ts_task__store_end(ts_task *task, ts_state_batch *wb) {
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
    ts_task__store_end(task, wb);
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
    task->buf_bytes = 0;
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
            ts_task__flush_start(task);
    }
}

/* ---- deciding and flushing ------------------------------------------------------------- */

void ts_task__fail(ts_task *task, ts_err err) {
    task->stopped = 1;
    ts_log_error(task->id, "task stopped: %s", ts_err_str(err));
    task->host->failed(task->host->arg, task, err);
}

/* Milliseconds since `start` on the monotonic clock. */
double ts_task__ms_since(const struct timespec *start) {
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
        task->stats.seconds = ts_task__ms_since(&task->batch_start) / 1e3;
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
void ts_task__flush_start(ts_task *task) {
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
    for (size_t i = 0; i < n; i++)
        task->buf_bytes += ts_task_record_bytes(msgs[i]);
}

static void ts_task_decide_work(uv_work_t *req) {
    ts_task *task = req->data;
    ts_task__decide_records(task);
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
    task->seen_filter_bytes = task->seen_filter ? ts_bloom_bytes(task->seen_filter) : 0;
    task->key_filter_bytes = task->key_filter ? ts_bloom_bytes(task->key_filter) : 0;
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
        ts_task__fail(task, task->batch_rc);
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
    ts_task__flush_start(task);
}

/* Seconds from `msg`'s timestamp to now, or -1 when it has none. A producer
 * whose clock runs ahead would make it negative: 0 then. */
static double ts_task_input_wait(const rd_kafka_message_t *msg) {
    int64_t ts = rd_kafka_message_timestamp(msg, NULL);
    if (ts <= 0)
        return -1;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double wait = (double)now.tv_sec + (double)now.tv_nsec / 1e9 - (double)ts / 1e3;
    return wait > 0 ? wait : 0;
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
        ts_task__rebuild_start(task);
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
        task->buf_bytes -= ts_task_record_bytes(msg);
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
                task->buf_bytes = 0;
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
    if (task->paused && ts_task_buffer_low(task)) {
        task->paused = 0;
        task->host->pause(task->host->arg, task, 0);
    }
    if (task->batch_len == 0) {
        if (ts_task_ready(task))
            task->host->schedule(task->host->arg, task);
        return; /* everything was a redelivery */
    }
    task->stats.input_wait_seconds = ts_task_input_wait(task->batch[0]);
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
