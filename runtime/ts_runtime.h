/* ts_runtime.h - one process of the pipeline: one libuv loop hosting the
 * source, the tasks and the sinks of a topology.
 *
 * Creating a runtime prepares everything that may fail before the loop runs:
 * the embedded stack when no address is configured (mock Kafka cluster,
 * redis-server, PostgreSQL in the state folder), topics, migrations, schemas,
 * the state database and the sinks. ts_runtime_run then serves until
 * ts_runtime_stop (or SIGINT/SIGTERM): the batches in flight finish and are
 * committed, the group is left, every handle is closed.
 *
 * Threading: create, run and destroy on one thread; stop from the loop thread.
 */
#ifndef TS_RUNTIME_H
#define TS_RUNTIME_H

#include <stdint.h>
#include <uv.h>

#include "ts_processor.h"
#include "ts_topology.h"

typedef struct ts_runtime ts_runtime;

/** Builds the runtime for `topo` (borrowed; must outlive it) with the built-in
 * processors of `registry`. On failure returns the error with a readable
 * message in `err`; everything started so far is stopped. */
ts_err ts_runtime_create(const ts_topology *topo, const ts_processor_def *const *registry,
                         ts_runtime **out, char *err, size_t errlen);

/** Runs the loop until stopped. @returns TS_OK after a clean stop, or the
 * error that stopped it (a task that failed, a fatal consumer error). */
ts_err ts_runtime_run(ts_runtime *rt);

/** Asks the runtime to stop gracefully (loop thread, or a signal). */
void ts_runtime_stop(ts_runtime *rt);

/** Stops whatever it started and frees; accepts NULL. */
void ts_runtime_destroy(ts_runtime *rt);

/** The loop, to add one's own timers (the demo does). */
uv_loop_t *ts_runtime_loop(ts_runtime *rt);

/** Effective addresses (embedded ones when nothing was configured). */
const char *ts_runtime_brokers(const ts_runtime *rt);
const char *ts_runtime_redis_url(const ts_runtime *rt);
const char *ts_runtime_pg_conninfo(const ts_runtime *rt);

/** Next input offset of (topic, partition) that every sink acknowledged, or -1
 * when the partition is not assigned here or has not acknowledged anything. */
int64_t ts_runtime_acked(const ts_runtime *rt, const char *topic, int32_t partition);

/** Records not yet acknowledged over every assigned partition (end offset as
 * last seen by the fetcher minus the acknowledged position), or -1 while some
 * partition's end or position is not known yet. */
int64_t ts_runtime_lag(const ts_runtime *rt);

/** Number of tasks (assigned partitions) and of those with a flush in flight. */
size_t ts_runtime_tasks(const ts_runtime *rt, size_t *busy);

#endif
