/* ts_kafka_sink.h - the Kafka sink: output events and DLQ records.
 *
 * Writes every live TS_EFF_EMIT effect of a flush (a: topic, b: key, c: value,
 * d: packed headers) through one idempotent librdkafka producer and reports the
 * flush done when every one of its messages is acknowledged by the brokers
 * (acks=all). Other effect kinds are ignored. A message that fails (after
 * librdkafka's own retries) or does not fit the producer queue is produced
 * again after a backoff, never dropped; order within a key is kept (the
 * default `message.timeout.ms` is 0: librdkafka retries without a deadline).
 *
 * Runtime defaults, each overridable through `kafka_config`: linger.ms=0,
 * compression.type=lz4, partitioner=murmur2_random (the Java client's, so the
 * runtime and Java producers put a key in the same partition),
 * statistics.interval.ms=5000 (how the sink learns that brokers are up again).
 * enable.idempotence=true and acks=all are forced.
 *
 * healthy() is zero after a fatal producer error, while no broker connection
 * is up, or while messages wait for a retry. A fatal error (possible with
 * idempotence) is not recovered from: the sink keeps retrying and stays
 * unhealthy, and the process should restart.
 *
 * The sink keeps the loop alive only while writes are in progress.
 * Threading: everything runs on the loop thread (see ts_sink.h).
 */
#ifndef TS_KAFKA_SINK_H
#define TS_KAFKA_SINK_H

#include <jansson.h>
#include <stddef.h>
#include <uv.h>

#include "ts_error.h"
#include "ts_sink.h"

/** Creates the sink and its producer on `loop`.
 *
 * @param loop          the loop every callback runs on; must outlive the sink.
 * @param brokers       bootstrap list "host:port,..." (NULL: from kafka_config).
 * @param kafka_config  JSON object of extra librdkafka properties, passed
 *                      through (see ts_kconf.h); may be NULL. Not kept.
 * @param out           filled with the sink's table and instance. The sink is
 *                      freed by its close operation (after `closed` runs).
 * @returns TS_OK; TS_E_CONFIG for a bad property (named in `err`); TS_E_IO or
 *          TS_E_NOMEM. On failure `out` is untouched and nothing is left behind.
 *
 * Write: every live TS_EFF_EMIT (a: topic, 1..249 bytes; b: key, absent = no
 * key; c: value, absent = null value; d: packed headers or absent). A flush
 * with a bad topic name or malformed headers fails at once with TS_E_INVALID
 * and nothing of it is sent. Close waits up to 2 s for messages librdkafka
 * already holds (blocking the loop), then stops the rest. */
ts_err ts_kafka_sink_create(uv_loop_t *loop, const char *brokers, const json_t *kafka_config,
                            ts_sink *out, char *err, size_t errlen);

/** Failed attempts so far (connects, writes, deliveries), each retried after
 * a backoff; for metrics. `sink` is one this module created. Loop thread. */
uint64_t ts_kafka_sink_errors(const ts_sink *sink);

#endif
