/* ts_task_apply.c - a batch's records through the processor (see ts_task.h).
 *
 * On a pool thread, each record of the batch is decoded, looked up among the
 * event ids already applied (the "_seen" store) and run through the processor;
 * a record that cannot be decoded, or that the processor rejects, goes to the
 * DLQ with the reason. The batch closes at the bound of its changelog marker
 * or of its event ids, or after the host's max_ms, and is then decided
 * (ts_task_changelog.c). A batch that made a changelog record over the
 * largest Kafka message is run again with every event checked, so that only
 * the event that makes one goes to the DLQ.
 */
#include "ts_task_int.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ts_log.h"

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

/* Room a changelog record's key, headers and framing take beside its value. */
#define TS_TASK_RECORD_OVERHEAD 1024

/* ---- the largest Kafka message -----------------------------------------------
 * A changelog record or marker over the producer's message.max.bytes is
 * refused on every retry: the partition would never move again. Deciding
 * finds such a record (the documents are serialized only then) and the batch
 * is decided again, checking every event (ts_task_fits): the event that makes
 * one goes to the DLQ, the others are applied as before. */

/* Values of 2^28 - 1 bytes and more would make the effects blob longer
 * than ts_effects_encoded_max counts (ts_effects_blob.c): no record of a
 * task carries one, whatever message.max.bytes allows (up to 1 GB). */
#define TS_TASK_MAX_RECORD_BYTES (((size_t)1 << 28) - 2)

/* The largest changelog value (with its key) that fits a message. */
size_t ts_task__record_room(const ts_task *task) {
    size_t max = task->host->max_message_bytes;
    if (max == 0)
        return SIZE_MAX;
    size_t room = max > TS_TASK_RECORD_OVERHEAD ? max - TS_TASK_RECORD_OVERHEAD : 0;
    return room < TS_TASK_MAX_RECORD_BYTES ? room : TS_TASK_MAX_RECORD_BYTES;
}

/* Where a batch closes: near TS_TASK_MAX_MARKER_BYTES of marker, or half the
 * message limit when that is lower, so the event that crosses it has the
 * other half (ts_task_fits). */
static size_t ts_task_marker_bound(const ts_task *task) {
    size_t half = ts_task__record_room(task) / 2;
    return half < TS_TASK_MAX_MARKER_BYTES ? half : TS_TASK_MAX_MARKER_BYTES;
}

/* Whether the current event, which ended well, fits every message it makes:
 * its writes and view values as changelog records, its share of the marker.
 * @returns TS_OK, TS_E_REJECT (reason given to the context) or TS_E_NOMEM. */
static ts_err ts_task_fits(ts_task *task, size_t mark, size_t marker_before) {
    size_t room = ts_task__record_room(task);
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
    /* The filter answers "never seen" for nearly every event without a
     * RocksDB lookup; "maybe" (a redelivery, or under 1% of new ids) asks
     * the store. A record an operator re-drove from the DLQ (`tastesync dlq
     * redrive`, header redriven.from) is processed again although its event
     * id was seen: that is the point of re-driving it after a fix. */
    uint64_t id_hash = event_id ? ts_bloom_hash(event_id, id_len) : 0;
    if (event_id && ts_bloom_may_contain(task->seen_filter, id_hash) && !ts_task_redriven(msg)) {
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
        /* Added now, before the batch is written: a batch that is decided
         * again or never written leaves an id the store lacks, which only
         * costs a lookup. */
        ts_bloom_add(task->seen_filter, id_hash);
        task->batch_id_bytes += id_len + sizeof(TS_TASK_SEEN_STORE) + 1;
        ts_ctx_event_begin(task->ctx, &ev);
        ts_ctx_put(task->ctx, TS_TASK_SEEN_STORE, event_id, "", 0);
        rc = ts_ctx_event_end(task->ctx, TS_OK, NULL);
    }
    return rc;
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
            ts_task__ms_since(&start) >= task->host->max_ms)
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
void ts_task__decide_records(ts_task *task) {
    task->batch_rc = TS_OK;
    task->batch_first = -1;
    task->batch_failed_at = -1;
    if (!task->seen_filter && (task->batch_rc = ts_task__load_filters(task)) != TS_OK) {
        task->batch_done = 0;
        return;
    }
    task->batch_done = ts_task_apply_records(task, task->batch_len, 1);
    if (task->batch_rc != TS_OK || task->batch_first < 0)
        return;
    task->batch_rc = ts_task__decide(task, task->batch_first, task->batch_next);
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
        task->batch_rc = ts_task__decide(task, task->batch_first, task->batch_next);
    else if (task->batch_rc == TS_OK)
        task->batch_rc = TS_E_STATE; /* cannot happen: the same records ran before */
}
