/* ts_source.c - a librdkafka consumer-group member driven by the libuv loop.
 *
 * The consumer queue (with the main queue forwarded into it, so logs, errors
 * and rebalances arrive there too) writes a byte to a pipe whenever it turns
 * non-empty. The poll callback empties the pipe and takes up to a few rounds of
 * records; if the queue still has more, an idle handle continues next loop
 * iteration, because the pipe will not be written again until the queue has
 * been empty.
 */
#include "ts_source.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_kconf.h"
#include "ts_log.h"

#define TS_SOURCE_ROUND 1024 /* records per consume call */
#define TS_SOURCE_ROUNDS 8   /* rounds per wake-up before yielding */

struct ts_source {
    uv_loop_t *loop;
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    ts_source_handler handler;
    int pipefd[2];
    uv_poll_t poll;
    uv_idle_t idle;
    uv_timer_t keepalive; /* polls at least every second, see ts_source_on_keepalive */
    int handles_open;
    int closing;
    rd_kafka_topic_partition_list_t *eager; /* the assignment, eager protocol only */
    /* A revocation waiting for the revoked partitions' batches in flight (see
     * ts_source_drained): the partitions, the protocol, and until when. */
    rd_kafka_topic_partition_list_t *drain;
    int drain_cooperative;
    uint64_t drain_until; /* uv_now */
    rd_kafka_message_t *msgs[TS_SOURCE_ROUND];
};

/* Adds (add != 0) or removes partitions. The cooperative protocol changes the
 * assignment incrementally; with the eager one the whole assignment is set,
 * so the source keeps it. */
static void ts_source_apply(ts_source *src, rd_kafka_t *rk,
                            const rd_kafka_topic_partition_list_t *parts, int cooperative,
                            int add) {
    if (cooperative) {
        /* A partition whose assignment was deferred (its state still being
         * restored) is not in the assignment yet: unassigning it would fail
         * the whole call, so only what is assigned is given back. */
        rd_kafka_topic_partition_list_t *mine = NULL, *drop = NULL;
        if (!add && rd_kafka_assignment(rk, &mine) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            drop = rd_kafka_topic_partition_list_new(parts->cnt);
            for (int i = 0; i < parts->cnt; i++)
                if (rd_kafka_topic_partition_list_find(mine, parts->elems[i].topic,
                                                       parts->elems[i].partition))
                    rd_kafka_topic_partition_list_add(drop, parts->elems[i].topic,
                                                      parts->elems[i].partition);
            rd_kafka_topic_partition_list_destroy(mine);
            parts = drop;
        }
        rd_kafka_error_t *e = add ? rd_kafka_incremental_assign(rk, parts)
                                  : rd_kafka_incremental_unassign(rk, parts);
        if (drop)
            rd_kafka_topic_partition_list_destroy(drop);
        if (e) {
            ts_log_error("source", "incremental %s: %s", add ? "assign" : "unassign",
                         rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
        return;
    }
    if (!add) {
        rd_kafka_topic_partition_list_destroy(src->eager);
        src->eager = rd_kafka_topic_partition_list_new(0);
        rd_kafka_assign(rk, NULL);
        return;
    }
    for (int i = 0; i < parts->cnt; i++)
        rd_kafka_topic_partition_list_add(src->eager, parts->elems[i].topic,
                                          parts->elems[i].partition)
            ->offset = parts->elems[i].offset;
    rd_kafka_assign(rk, src->eager);
}

static void ts_source_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                rd_kafka_topic_partition_list_t *parts, void *opaque) {
    ts_source *src = opaque;
    int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_topic_partition_list_t *take = rd_kafka_topic_partition_list_new(parts->cnt);
        rd_kafka_topic_partition_list_t *held = rd_kafka_topic_partition_list_new(parts->cnt);
        int later = 0;
        for (int i = 0; i < parts->cnt; i++) {
            rd_kafka_topic_partition_t *p = &parts->elems[i];
            int64_t start = src->handler.assigned(src->handler.arg, p->topic, p->partition);
            if (start == TS_SOURCE_REFUSE)
                continue;
            if (start == TS_SOURCE_LATER) {
                /* Taken now, as the group expects, but held (paused) until
                 * the handler's state is ready; ts_source_assign then seeks.
                 * The offset meanwhile is a placeholder: an absolute one,
                 * so librdkafka asks nothing that could land after the seek. */
                later++;
                start = 0;
                rd_kafka_topic_partition_list_add(held, p->topic, p->partition);
            }
            rd_kafka_topic_partition_list_add(take, p->topic, p->partition)->offset = start;
        }
        ts_log_info("source", "assigned %d partitions (%s), %d of them held while restoring",
                    take->cnt, cooperative ? "cooperative" : "eager", later);
        ts_source_apply(src, rk, take, cooperative, 1);
        /* librdkafka keeps a partition's pause across an unassign and a new
         * assignment: one held or paused for backpressure before a rebalance
         * would stay silent forever. Resume what is not held now. */
        rd_kafka_topic_partition_list_t *go = rd_kafka_topic_partition_list_new(take->cnt);
        for (int i = 0; i < take->cnt; i++)
            if (!rd_kafka_topic_partition_list_find(held, take->elems[i].topic,
                                                    take->elems[i].partition))
                rd_kafka_topic_partition_list_add(go, take->elems[i].topic,
                                                  take->elems[i].partition);
        if (go->cnt > 0)
            rd_kafka_resume_partitions(rk, go);
        rd_kafka_topic_partition_list_destroy(go);
        if (held->cnt > 0)
            rd_kafka_pause_partitions(rk, held);
        rd_kafka_topic_partition_list_destroy(held);
        rd_kafka_topic_partition_list_destroy(take);
    } else {
        for (int i = 0; i < parts->cnt; i++)
            src->handler.revoked(src->handler.arg, parts->elems[i].topic,
                                 parts->elems[i].partition);
        ts_log_info("source", "revoked %d partitions (%s)", parts->cnt, rd_kafka_err2str(err));
        size_t draining = src->handler.draining ? src->handler.draining(src->handler.arg) : 0;
        if (draining > 0 && !src->closing && !src->drain) {
            /* A batch still on its way to Redis or the changelog would land
             * after the partition's next owner wrote newer views and records
             * (PostgreSQL is fenced, those are not): the partitions go back
             * to the group only when those batches are acknowledged. */
            ts_log_info("source", "revocation waits for %zu batch(es) in flight", draining);
            src->drain = rd_kafka_topic_partition_list_copy(parts);
            src->drain_cooperative = cooperative;
            src->drain_until = uv_now(src->loop) + TS_SOURCE_DRAIN_MS;
            return;
        }
        ts_source_apply(src, rk, parts, cooperative, 0);
    }
}

/* Gives the partitions of a waiting revocation back to the group. */
static void ts_source_drain_end(ts_source *src) {
    rd_kafka_topic_partition_list_t *parts = src->drain;
    src->drain = NULL;
    ts_source_apply(src, src->rk, parts, src->drain_cooperative, 0);
    rd_kafka_topic_partition_list_destroy(parts);
}

void ts_source_drained(ts_source *src) {
    if (!src || !src->drain)
        return;
    size_t left = src->handler.draining(src->handler.arg);
    if (left > 0 && uv_now(src->loop) < src->drain_until)
        return;
    if (left > 0)
        ts_log_warn("source",
                    "revocation completed with %zu batch(es) still in flight after %d ms "
                    "(a sink is slow or down): their views may land after the new owner's",
                    left, TS_SOURCE_DRAIN_MS);
    else
        ts_log_info("source", "revocation completed: the batches in flight are acknowledged");
    ts_source_drain_end(src);
}

static void ts_source_commit_done(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                  rd_kafka_topic_partition_list_t *offsets, void *opaque) {
    (void)rk;
    (void)offsets;
    (void)opaque;
    /* A failed commit is harmless: the runtime's position lives in RocksDB,
     * and the committed offset is for lag monitoring. */
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        ts_log_debug("source", "offset commit: %s", rd_kafka_err2str(err));
}

static void ts_source_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    ts_source *src = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_fatal_error(rk, why, sizeof(why));
        ts_log_error("source", "fatal consumer error: %s", why);
        src->handler.failed(src->handler.arg, why);
        return;
    }
    ts_log_warn("source", "%s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* Takes up to TS_SOURCE_ROUNDS rounds of records. @returns non-zero when the
 * queue may hold more. */
static int ts_source_drain(ts_source *src) {
    for (int round = 0; round < TS_SOURCE_ROUNDS && !src->closing; round++) {
        ssize_t n = rd_kafka_consume_batch_queue(src->queue, 0, src->msgs, TS_SOURCE_ROUND);
        if (n <= 0)
            return 0;
        for (ssize_t i = 0; i < n; i++) {
            rd_kafka_message_t *msg = src->msgs[i];
            if (msg->err) {
                if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    ts_log_warn("source", "%s [%" PRId32 "]: %s",
                                msg->rkt ? rd_kafka_topic_name(msg->rkt) : "-", msg->partition,
                                rd_kafka_message_errstr(msg));
                rd_kafka_message_destroy(msg);
                continue;
            }
            src->handler.record(src->handler.arg, msg);
        }
        if (n < TS_SOURCE_ROUND)
            return 0;
    }
    return !src->closing;
}

static void ts_source_on_idle(uv_idle_t *idle) {
    ts_source *src = idle->data;
    if (!ts_source_drain(src))
        uv_idle_stop(idle);
}

/* librdkafka counts a member that has not polled for max.poll.interval.ms as
 * dead and leaves the group. When nothing arrives (idle input, every
 * partition paused) the pipe never fires, so poll anyway once a second. */
static void ts_source_on_keepalive(uv_timer_t *timer) {
    ts_source *src = timer->data;
    if (ts_source_drain(src))
        uv_idle_start(&src->idle, ts_source_on_idle);
}

static void ts_source_on_readable(uv_poll_t *poll, int status, int events) {
    (void)status;
    (void)events;
    ts_source *src = poll->data;
    char sink[64];
    while (read(src->pipefd[0], sink, sizeof(sink)) > 0)
        ;
    if (ts_source_drain(src))
        uv_idle_start(&src->idle, ts_source_on_idle);
}

static void ts_source_free(ts_source *src) {
    if (src->eager)
        rd_kafka_topic_partition_list_destroy(src->eager);
    if (src->drain)
        rd_kafka_topic_partition_list_destroy(src->drain);
    if (src->pipefd[0] >= 0)
        close(src->pipefd[0]);
    if (src->pipefd[1] >= 0)
        close(src->pipefd[1]);
    free(src);
}

static void ts_source_on_close(uv_handle_t *handle) {
    ts_source *src = handle->data;
    if (--src->handles_open == 0)
        ts_source_free(src);
}

ts_err ts_source_create(uv_loop_t *loop, const char *brokers, const json_t *kafka_config,
                        const char *group, const char *const *topics, size_t n_topics,
                        const ts_source_handler *handler, ts_source **out, char *err,
                        size_t errlen) {
    ts_source *src = calloc(1, sizeof(*src));
    if (!src)
        return TS_E_NOMEM;
    src->loop = loop;
    src->handler = *handler;
    src->pipefd[0] = src->pipefd[1] = -1;
    src->eager = rd_kafka_topic_partition_list_new(0);

    rd_kafka_conf_t *conf = ts_kconf_create(brokers, kafka_config, err, errlen);
    if (!conf) {
        ts_source_free(src);
        return TS_E_CONFIG;
    }
    /* Defaults first: a user's kafka.config may override the tuning ones. */
    static const char *const defaults[][2] = {
        /* The task stores an offset once its batch is acknowledged
         * (ts_source_store_offset); librdkafka commits what is stored, all
         * partitions in one request, every interval and when partitions are
         * revoked or the consumer closes. Committed offsets serve lag
         * monitoring only (ts_restore.h decides currency from the
         * changelog), so one request per interval instead of one per batch
         * costs nothing in safety. */
        {"enable.auto.commit", "true"},
        {"enable.auto.offset.store", "false"},
        {"auto.commit.interval.ms", "100"},
        {"auto.offset.reset", "earliest"},
        /* Eager by default: with librdkafka 2.0.2, cooperative-sticky and
         * manual commits lose the assignment when a commit meets a rebalance
         * (librdkafka issue #4059, fixed in 2.8.3). kafka.config may choose
         * cooperative-sticky where the library is newer. */
        {"partition.assignment.strategy", "roundrobin"},
        {"fetch.wait.max.ms", "10"},
        {"fetch.error.backoff.ms", "50"},
        {"session.timeout.ms", "10000"},
        {"heartbeat.interval.ms", "1000"},
        {"queued.max.messages.kbytes", "32768"},
    };
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
        if (kafka_config && json_object_get(kafka_config, defaults[i][0]) &&
            strcmp(defaults[i][0], "enable.auto.commit") != 0 &&
            strcmp(defaults[i][0], "enable.auto.offset.store") != 0)
            continue;
        if (ts_kconf_set(conf, defaults[i][0], defaults[i][1], err, errlen) != TS_OK) {
            rd_kafka_conf_destroy(conf);
            ts_source_free(src);
            return TS_E_CONFIG;
        }
    }
    if (ts_kconf_set(conf, "group.id", group, err, errlen) != TS_OK) {
        rd_kafka_conf_destroy(conf);
        ts_source_free(src);
        return TS_E_CONFIG;
    }
    rd_kafka_conf_set_opaque(conf, src);
    rd_kafka_conf_set_rebalance_cb(conf, ts_source_rebalance);
    rd_kafka_conf_set_offset_commit_cb(conf, ts_source_commit_done);
    rd_kafka_conf_set_error_cb(conf, ts_source_error);

    char kerr[512];
    src->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, kerr, sizeof(kerr));
    if (!src->rk) {
        snprintf(err, errlen, "cannot create consumer: %s", kerr);
        rd_kafka_conf_destroy(conf);
        ts_source_free(src);
        return TS_E_CONFIG;
    }
    rd_kafka_poll_set_consumer(src->rk);
    src->queue = rd_kafka_queue_get_consumer(src->rk);

    if (pipe2(src->pipefd, O_NONBLOCK | O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto fail;
    }
    rd_kafka_queue_io_event_enable(src->queue, src->pipefd[1], "1", 1);

    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new((int)n_topics);
    for (size_t i = 0; i < n_topics; i++)
        rd_kafka_topic_partition_list_add(subs, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t serr = rd_kafka_subscribe(src->rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (serr) {
        snprintf(err, errlen, "subscribe: %s", rd_kafka_err2str(serr));
        goto fail;
    }

    uv_poll_init(loop, &src->poll, src->pipefd[0]);
    uv_idle_init(loop, &src->idle);
    uv_timer_init(loop, &src->keepalive);
    src->poll.data = src->idle.data = src->keepalive.data = src;
    src->handles_open = 3;
    uv_timer_start(&src->keepalive, ts_source_on_keepalive, 1000, 1000);
    uv_poll_start(&src->poll, UV_READABLE, ts_source_on_readable);
    /* Records may already be queued, and the pipe is written only on the
     * queue's next empty -> non-empty change: look once now. */
    uv_idle_start(&src->idle, ts_source_on_idle);
    *out = src;
    return TS_OK;

fail:
    rd_kafka_queue_destroy(src->queue);
    rd_kafka_destroy(src->rk);
    ts_source_free(src);
    return TS_E_IO;
}

/* A list of one partition, for the librdkafka calls that take lists. */
static rd_kafka_topic_partition_list_t *ts_source_one(const char *topic, int32_t partition,
                                                      int64_t offset) {
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, topic, partition)->offset = offset;
    return parts;
}

void ts_source_assign(ts_source *src, const char *topic, int32_t partition, int64_t offset) {
    rd_kafka_topic_partition_list_t *parts = ts_source_one(topic, partition, offset);
    /* Records fetched while it was held were dropped: start over from the
     * handler's position (asynchronously), then fetch again. */
    rd_kafka_error_t *e = rd_kafka_seek_partitions(src->rk, parts, 0);
    if (e) {
        ts_log_error("source", "seek %s [%" PRId32 "]: %s", topic, partition,
                     rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    rd_kafka_resume_partitions(src->rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
}

void ts_source_pause(ts_source *src, const char *topic, int32_t partition, int pause) {
    rd_kafka_topic_partition_list_t *parts = ts_source_one(topic, partition, RD_KAFKA_OFFSET_INVALID);
    if (pause)
        rd_kafka_pause_partitions(src->rk, parts);
    else
        rd_kafka_resume_partitions(src->rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
}

void ts_source_store_offset(ts_source *src, const char *topic, int32_t partition,
                            int64_t next_offset) {
    rd_kafka_topic_partition_list_t *parts = ts_source_one(topic, partition, next_offset);
    /* Fails only for a partition no longer assigned: its next owner commits. */
    rd_kafka_offsets_store(src->rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
}

int ts_source_end(ts_source *src, const char *topic, int32_t partition, int64_t *high) {
    int64_t low = -1;
    *high = -1;
    if (rd_kafka_get_watermark_offsets(src->rk, topic, partition, &low, high) ||
        *high < 0)
        return -1;
    return 0;
}

void ts_source_close(ts_source *src) {
    if (!src)
        return;
    src->closing = 1;
    if (src->drain)
        ts_source_drain_end(src);
    rd_kafka_queue_io_event_enable(src->queue, -1, NULL, 0);
    /* Leaving the group serves the final revocation through our rebalance
     * callback, on this thread. */
    rd_kafka_consumer_close(src->rk);
    rd_kafka_queue_destroy(src->queue);
    rd_kafka_destroy(src->rk);
    if (src->handles_open == 0) {
        ts_source_free(src);
        return;
    }
    uv_close((uv_handle_t *)&src->poll, ts_source_on_close);
    uv_close((uv_handle_t *)&src->idle, ts_source_on_close);
    uv_close((uv_handle_t *)&src->keepalive, ts_source_on_close);
}
