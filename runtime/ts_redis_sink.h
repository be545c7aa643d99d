/* ts_redis_sink.h - the view sink: a flush's view effects into Redis.
 *
 * A write sends the flush's live view effects (VIEW_SET -> SET, VIEW_DEL -> DEL,
 * ZADD, ZREM, ZREM_BELOW -> ZREMRANGEBYSCORE key -inf (score) in their order as
 * one MULTI/EXEC pipeline and reports `done` when EXEC's reply arrives. Other
 * effect kinds are ignored; a flush without view effects completes on the next
 * loop iteration. Several writes may be in flight at once. When the connection
 * drops (or a command fails) the sink reconnects with backoff (100 ms doubling
 * to 5 s) and resends whole flushes, which is safe because every command
 * writes a whole value. See ts_sink.h for the table's contract.
 *
 * Threading: loop thread only.
 */
#ifndef TS_REDIS_SINK_H
#define TS_REDIS_SINK_H

#include <uv.h>

#include "ts_error.h"
#include "ts_sink.h"

/** Creates a Redis sink on `loop` and starts connecting (in the background; a
 * server that is down is retried, writes wait for it).
 *
 * @param url  "redis://[[user]:password@]host[:port][/db]" or
 *             "unix:///path/to.sock[?db=N]"; copied.
 * @param out  filled with the sink's table and instance on success; the
 *             instance is freed by ops->close (after `closed` runs).
 * @returns TS_OK; TS_E_CONFIG for a malformed url (detail in err); TS_E_NOMEM.
 */
ts_err ts_redis_sink_create(uv_loop_t *loop, const char *url, ts_sink *out, char *err,
                            size_t errlen);

/** Watches for lost views. `marker` names a hash with one field per task
 * whose views are complete in this Redis; a Redis restarted empty, a FLUSHALL
 * or `tastesync views rebuild` (which deletes it) makes fields disappear. At
 * every connect and every second the sink reads the hash's fields and calls
 * `present(arg, fields, n)` on the loop thread (fields borrowed for the call).
 * `marker` is copied. Writes in progress are not affected. */
void ts_redis_sink_watch(ts_sink *sink, const char *marker,
                         void (*present)(void *arg, const char *const *fields, size_t n),
                         void *arg);

/** Sets `key` to `value` with a time to live of `ttl_s` seconds, when
 * connected (dropped otherwise: for status documents that are rewritten
 * every second and must vanish with their writer). Both are copied. */
void ts_redis_sink_publish(ts_sink *sink, const char *key, const char *value, int ttl_s);

/** Adds `field` to the marker (once connected): that task's views are
 * complete. */
void ts_redis_sink_mark(ts_sink *sink, const char *field);

/** Failed attempts so far (connects, writes, deliveries), each retried after
 * a backoff; for metrics. `sink` is one this module created. Loop thread. */
uint64_t ts_redis_sink_errors(const ts_sink *sink);

#endif
