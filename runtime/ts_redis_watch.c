/* ts_redis_watch.c - the Redis sink's lost-view watch (ts_redis_sink_watch).
 *
 * A hash (the marker) holds one field per task whose views are complete in
 * this Redis. A restart without persistence or a FLUSHALL removes it with the
 * views, and `tastesync views rebuild` deletes it; every second (and at each
 * connect) the sink reads its fields and reports them, so each task can see
 * whether its views must be written again.
 *
 * Also here: ts_redis_sink_publish, a status key set on the same connection
 * (its reply, like a mark's, is ignored).
 */
#include "ts_redis_sink_int.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

static void ts_redis_watch_reply(redisAsyncContext *ac, void *reply_, void *privdata) {
    ts_redis_sink *rs = privdata;
    redisReply *reply = reply_;
    if (rs->closing)
        return;
    rs->watch_inflight = 0;
    if (reply)
        rs->progress_ms = uv_now(rs->loop);
    /* A reply that may predate a mark sent since would report that task's
     * views as missing: skip it, the next tick looks again. */
    if (!reply || rs->ac != ac || reply->type != REDIS_REPLY_ARRAY ||
        rs->watch_gen != rs->mark_gen)
        return;
    const char **fields = calloc(reply->elements + 1, sizeof(*fields));
    if (!fields)
        return;
    size_t n = 0;
    for (size_t i = 0; i < reply->elements; i++)
        if (reply->element[i]->type == REDIS_REPLY_STRING)
            fields[n++] = reply->element[i]->str;
    rs->present(rs->present_arg, fields, n);
    free(fields);
}

static void ts_redis_mark_reply(redisAsyncContext *ac, void *reply_, void *privdata) {
    (void)ac;
    (void)reply_;
    (void)privdata; /* a lost HSET only means one more rebuild later */
}

void ts_redis__watch_check(ts_redis_sink *rs) {
    if (!rs->marker || rs->state != TS_REDIS_READY || rs->closing)
        return;
    for (size_t i = 0; i < rs->n_marks; i++) {
        redisAsyncCommand(rs->ac, ts_redis_mark_reply, rs, "HSET %s %s 1", rs->marker,
                          rs->marks[i]);
        free(rs->marks[i]);
    }
    if (rs->n_marks) {
        rs->n_marks = 0;
        rs->mark_gen++;
    }
    if (!rs->watch_inflight) {
        rs->watch_gen = rs->mark_gen;
        rs->watch_inflight = redisAsyncCommand(rs->ac, ts_redis_watch_reply, rs, "HKEYS %s",
                                               rs->marker) == REDIS_OK;
    }
}

static void ts_redis_watch_tick(uv_timer_t *timer) { ts_redis__watch_check(timer->data); }

void ts_redis_sink_watch(ts_sink *sink, const char *marker,
                         void (*present)(void *arg, const char *const *fields, size_t n),
                         void *arg) {
    ts_redis_sink *rs = sink->impl;
    free(rs->marker);
    rs->marker = strdup(marker);
    rs->present = present;
    rs->present_arg = arg;
    uv_timer_start(&rs->watch_timer, ts_redis_watch_tick, 1000, 1000);
    ts_redis__watch_check(rs);
}

void ts_redis_sink_publish(ts_sink *sink, const char *key, const char *value, int ttl_s) {
    ts_redis_sink *rs = sink->impl;
    if (rs->state != TS_REDIS_READY || rs->closing)
        return;
    redisAsyncCommand(rs->ac, ts_redis_mark_reply, rs, "SET %s %s EX %d", key, value, ttl_s);
}

void ts_redis_sink_mark(ts_sink *sink, const char *field) {
    ts_redis_sink *rs = sink->impl;
    char **marks = realloc(rs->marks, (rs->n_marks + 1) * sizeof(*marks));
    if (!marks)
        return;
    rs->marks = marks;
    if ((rs->marks[rs->n_marks] = strdup(field)))
        rs->n_marks++;
    ts_redis__watch_check(rs);
}
