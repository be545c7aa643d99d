/* ts_testpipe.h - the whole pipeline for one integration test.
 *
 * A mock Kafka cluster in the test process (real protocol on loopback), a
 * private redis-server, a fresh PostgreSQL database, and `tastesync run` as a
 * child process on the repository's topology.yaml with the addresses given by
 * environment overrides. Helpers produce events as a producer would, wait
 * until the runtime has committed everything, and read topics back.
 * Everything blocks; call from test code.
 */
#ifndef TS_TESTPIPE_H
#define TS_TESTPIPE_H

#include <librdkafka/rdkafka.h>
#include <sys/types.h>

#include "ts_cluster.h"
#include "ts_testenv.h"
#include "ts_topology.h"

typedef struct ts_testpipe {
    char dir[128]; /* temp folder: state, runtime log */
    ts_cluster *cluster;
    ts_testenv_redis redis;
    char pg[512];
    ts_topology *topo;
    pid_t pid;       /* the runtime, or 0 */
    char log[192];   /* the runtime's stderr */
    rd_kafka_t *producer;
    rd_kafka_t *reader; /* assign-only consumer for checks */
} ts_testpipe;

/** Starts the servers and the runtime. @returns 0, or -1 (reason on stderr). */
int ts_testpipe_start(ts_testpipe *tp);
/** Starts the runtime again (after ts_testpipe_runtime_stop). */
int ts_testpipe_runtime_start(ts_testpipe *tp);
/** Sends `sig` to the runtime and waits. @returns its exit status (or 128+signal). */
int ts_testpipe_runtime_stop(ts_testpipe *tp, int sig);
/** Stops everything started; safe after a partial start. */
void ts_testpipe_stop(ts_testpipe *tp);

/** Produces one JSON event (Avro JSON form, see ts_sample.h) to `topic`. */
int ts_testpipe_produce_json(ts_testpipe *tp, const char *topic, const char *json);
/** Produces `n` JSON events in order, event i to topics[i], with one encoder
 * per topic and one flush at the end (much faster than one
 * ts_testpipe_produce_json per event). @returns 0, or -1 at the first event
 * that cannot be encoded or produced (reason on stderr). */
int ts_testpipe_produce_json_batch(ts_testpipe *tp, const char *const *topics,
                                   const char *const *jsons, size_t n);
/** Produces raw bytes with `key`. */
int ts_testpipe_produce_raw(ts_testpipe *tp, const char *topic, const char *key,
                            const void *value, size_t len);
/** Waits until every partition of `topic` is committed by the runtime's group up
 * to its end. @returns 0, or -1 after `seconds` (scaled). */
int ts_testpipe_wait_committed(ts_testpipe *tp, const char *topic, double seconds);
/** Reads every record of `topic` (all partitions, from the start to the end at
 * call time) into a new array. *n is set. Free with ts_testpipe_records_free. */
rd_kafka_message_t **ts_testpipe_read_topic(ts_testpipe *tp, const char *topic, size_t *n);
void ts_testpipe_records_free(rd_kafka_message_t **msgs, size_t n);
/** The value of header `name` of `msg` as a new string, or NULL. */
char *ts_testpipe_header(const rd_kafka_message_t *msg, const char *name);

#endif
