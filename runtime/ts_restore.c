/* ts_restore.c - a task's state from its changelog partition (see ts_restore.h).
 *
 * Runs as a uv_work_t: the worker thread owns a short-lived assign-only
 * consumer and writes RocksDB directly (RocksDB is thread-safe; nothing else
 * touches this task's keys while it restores). Records between two markers
 * are collected in one write batch and applied when the second marker
 * arrives, so the local state only ever holds whole batches.
 */
#include "ts_restore.h"

#include <endian.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ts_kconf.h"
#include "ts_log.h"

#define TS_RESTORE_FETCH 4096

struct ts_restore {
    uv_work_t work;
    char *brokers, *topic, *task_id;
    json_t *kafka_config;
    int32_t partition;
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

/* Drops every local key of the task: state, view mirror, position, pending. */
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
        rc = ts_state_write(r->state, wb);
        ts_state_batch_destroy(wb);
    } else if (rc == TS_OK) {
        rc = TS_E_NOMEM;
    }
    free(key);
    return rc;
}

/* Adds one changelog record to the batch being collected. Marker records
 * ("M") close the batch: it is written with the position and the pending
 * effects the marker carries. */
static ts_err ts_restore_apply(ts_restore *r, ts_state_batch **wb, const rd_kafka_message_t *msg,
                               char **keybuf, size_t *keycap) {
    if (!msg->key || msg->key_len == 0)
        return TS_OK; /* not ours: ignore rather than fail the restore */
    const char *k = msg->key;
    size_t idlen = strlen(r->task_id);
    if (k[0] == 'M') {
        if (!msg->payload || msg->len < 16)
            return TS_E_DECODE;
        uint64_t next_be;
        memcpy(&next_be, (const char *)msg->payload + 8, 8);
        char pos[8];
        memcpy(pos, &next_be, 8);
        char *key = *keybuf;
        key[0] = 'P';
        memcpy(key + 1, r->task_id, idlen);
        ts_state_batch_put(*wb, key, idlen + 1, pos, 8);
        key[0] = 'Q';
        ts_state_batch_put(*wb, key, idlen + 1, msg->payload, msg->len);
        ts_err rc = ts_state_write(r->state, *wb);
        ts_state_batch_destroy(*wb);
        *wb = ts_state_batch_create();
        if (!*wb)
            return TS_E_NOMEM;
        r->stats.batches++;
        r->stats.position = (int64_t)be64toh(next_be);
        return rc;
    }
    if (k[0] != 'S' && k[0] != 'V' && k[0] != 'W')
        return TS_OK;
    size_t need = msg->key_len + idlen + 1;
    if (need > *keycap) {
        char *grown = realloc(*keybuf, need);
        if (!grown)
            return TS_E_NOMEM;
        *keybuf = grown;
        *keycap = need;
    }
    char *key = *keybuf;
    key[0] = k[0];
    memcpy(key + 1, r->task_id, idlen + 1);
    memcpy(key + 2 + idlen, k + 1, msg->key_len - 1);
    if (msg->payload)
        ts_state_batch_put(*wb, key, need, msg->payload, msg->len);
    else
        ts_state_batch_delete(*wb, key, need);
    return TS_OK;
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

static ts_err ts_restore_read(ts_restore *r, rd_kafka_t *rk) {
    int64_t low = 0, high = 0;
    rd_kafka_resp_err_t kerr =
        rd_kafka_query_watermark_offsets(rk, r->topic, r->partition, &low, &high, 10000);
    if (kerr) {
        ts_log_error(r->task_id, "restore: end of %s [%" PRId32 "]: %s", r->topic, r->partition,
                     rd_kafka_err2str(kerr));
        return TS_E_RETRY;
    }
    atomic_store(&r->total, (uint64_t)(high - low));
    if (high <= low)
        return TS_OK;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, r->topic, r->partition)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);

    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(rk);
    rd_kafka_message_t **msgs = malloc(TS_RESTORE_FETCH * sizeof(*msgs));
    ts_state_batch *wb = ts_state_batch_create();
    size_t keycap = 256;
    char *keybuf = malloc(keycap + strlen(r->task_id) + 2);
    keycap += strlen(r->task_id) + 2;
    ts_err rc = msgs && wb && keybuf ? TS_OK : TS_E_NOMEM;
    double t0 = ts_restore_now(), last_log = t0;
    int64_t next = low;
    while (rc == TS_OK && next < high && !atomic_load(&r->cancel)) {
        ssize_t n = rd_kafka_consume_batch_queue(q, 500, msgs, TS_RESTORE_FETCH);
        for (ssize_t i = 0; i < n; i++) {
            rd_kafka_message_t *msg = msgs[i];
            if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                next = msg->offset > next ? msg->offset : next;
            } else if (msg->err) {
                ts_log_warn(r->task_id, "restore: %s", rd_kafka_message_errstr(msg));
            } else if (rc == TS_OK) {
                rc = ts_restore_apply(r, &wb, msg, &keybuf, &keycap);
                next = msg->offset + 1;
                r->stats.records++;
            }
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
    /* What is left in `wb` is a batch without its marker: dropped. */
    ts_state_batch_destroy(wb);
    free(keybuf);
    free(msgs);
    rd_kafka_queue_destroy(q);
    rd_kafka_assign(rk, NULL);
    return rc;
}

static void ts_restore_work(uv_work_t *req) {
    ts_restore *r = req->data;
    double t0 = ts_restore_now();
    r->stats.position = -1;
    r->status = ts_restore_drop_local(r);
    if (r->status != TS_OK)
        return;
    char err[512];
    rd_kafka_t *rk = ts_restore_consumer(r, err, sizeof(err));
    if (!rk) {
        ts_log_error(r->task_id, "restore: %s", err);
        r->status = TS_E_CONFIG;
        return;
    }
    r->status = ts_restore_read(r, rk);
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
