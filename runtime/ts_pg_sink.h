/* ts_pg_sink.h - the row sink: a flush's row effects into PostgreSQL.
 *
 * One transaction per flush, fenced: the transaction first calls
 * ts_claim_batch(task, next_offset) (created by ts_migrate_apply, which must
 * have run), then one INSERT ... ON CONFLICT DO UPDATE per live ROW_UPSERT and
 * one DELETE per live ROW_DELETE, in order. A batch that was already applied
 * makes ts_claim_batch raise; the transaction rolls back and the write reports
 * TS_OK, so re-sending a flush after a crash applies it once. Values are sent
 * as text parameters of unknown type, so the server casts them to the column
 * types (text[], jsonb, numbers...); identifiers are always double-quoted.
 *
 * libpq runs non-blocking in pipeline mode on one connection watched by a
 * uv_poll_t; flushes are pipelined FIFO. Failures never drop a flush: a lost
 * connection is re-established with backoff (100 ms doubling to 5 s) and the
 * unacknowledged flushes resent; a failed transaction is retried with backoff
 * too (an SQL error such as a missing column is logged once, with the task and
 * the statement, and retried until an operator fixes it). A flush without row
 * effects completes on the next loop iteration without a round trip.
 *
 * Threading: loop thread only.
 */
#ifndef TS_PG_SINK_H
#define TS_PG_SINK_H

#include <uv.h>

#include "ts_error.h"
#include "ts_sink.h"

/** Creates a Postgres sink on `loop` and starts connecting in the background.
 *
 * @param conninfo  libpq connection string or URI; copied.
 * @param out       filled with the table and instance; the instance is freed
 *                  by ops->close after `closed` runs.
 * @returns TS_OK, TS_E_INVALID (NULL argument), TS_E_NOMEM.
 */
ts_err ts_pg_sink_create(uv_loop_t *loop, const char *conninfo, ts_sink *out, char *err,
                         size_t errlen);

/** Failed attempts so far (connects, writes, deliveries), each retried after
 * a backoff; for metrics. `sink` is one this module created. Loop thread. */
uint64_t ts_pg_sink_errors(const ts_sink *sink);

#endif
