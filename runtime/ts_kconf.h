/* ts_kconf.h - librdkafka configuration from a bootstrap list and the
 * pass-through settings of topology.yaml.
 *
 * Every Kafka client of the runtime (consumer, producer, admin) starts from
 * the same conf: `bootstrap.servers` plus the user's own librdkafka properties,
 * so a setting such as `security.protocol` is written once and reaches them all.
 * The conf also routes librdkafka's log lines into ts_log, named after the client.
 *
 * Threading: any thread; no shared state.
 */
#ifndef TS_KCONF_H
#define TS_KCONF_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "ts_error.h"

/* The largest message the runtime produces, and what the changelog topics it
 * creates accept (max.message.bytes): a batch's changelog marker carries its
 * effects, and a task closes its batch near 768 KiB of marker, but the views
 * its renders set are only known once the batch ends, and a single event may
 * be large: Kafka's default 1 MB limit would stop the partition for good
 * (every retry refused). Topics created by hand need the same setting. */
#define TS_KCONF_MAX_MESSAGE_BYTES "16777216"
/* The lowest `message.max.bytes` the runtime works with: a batch's changelog
 * marker closes at half the limit (at most 768 KiB), and the other half must
 * hold the share of the event that crosses it, which for an input record
 * sent to the DLQ is the record itself with its headers: 2 MiB leaves ~1.25
 * MiB, room for a record of Kafka's default topic limit (~1 MB). */
#define TS_KCONF_MIN_MESSAGE_BYTES (2 * 1024 * 1024)

/** Checks a kafka.config property the runtime depends on beyond librdkafka's
 * own validation: `message.max.bytes` must be a number from
 * TS_KCONF_MIN_MESSAGE_BYTES to TS_KCONF_MAX_MESSAGE_BYTES (what the changelog
 * topics the runtime creates accept). Other properties pass.
 * @returns TS_OK, or TS_E_CONFIG with the reason in `why`. */
ts_err ts_kconf_check(const char *name, const char *value, char *why, size_t whylen);

/** The largest message a producer of the runtime sends: `message.max.bytes`
 * of `kafka_config` (NULL: none), else TS_KCONF_MAX_MESSAGE_BYTES.
 * @returns bytes, or 0 when the setting is not a positive number (librdkafka
 * refuses it when the producer is made). */
size_t ts_kconf_max_message_bytes(const json_t *kafka_config);

/** Builds a new librdkafka conf.
 *
 * @param brokers       bootstrap list "host:port,..."; NULL or "" leaves
 *                      `bootstrap.servers` unset (it may come from `kafka_config`).
 * @param kafka_config  JSON object of librdkafka properties, applied after
 *                      `brokers` (so it may override it); NULL for none. Values are
 *                      strings; integers, reals and booleans are turned into their
 *                      text for convenience. Anything else is an error.
 * @param err           on failure, a message naming the offending property.
 * @returns a conf owned by the caller (consumed by rd_kafka_new on success,
 *          otherwise freed with rd_kafka_conf_destroy), or NULL on failure. */
rd_kafka_conf_t *ts_kconf_create(const char *brokers, const json_t *kafka_config, char *err,
                                 size_t errlen);

/** Sets one property on `conf`, writing "kafka config: <name>: <reason>" to `err`
 * on failure. @returns TS_OK or TS_E_CONFIG. */
ts_err ts_kconf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *err,
                    size_t errlen);

/** Sets `name` to `value` unless `kafka_config` already names it, so runtime
 * defaults (e.g. `linger.ms`) yield to the user's choice.
 * @returns TS_OK or TS_E_CONFIG. */
ts_err ts_kconf_default(rd_kafka_conf_t *conf, const json_t *kafka_config, const char *name,
                        const char *value, char *err, size_t errlen);

/** Applies what every producer of the project shares: keys partitioned with
 * murmur2_random (as Java clients do), unless kafka_config says otherwise. */
ts_err ts_kconf_producer(rd_kafka_conf_t *conf, const json_t *kafka_config, char *err,
                         size_t errlen);

#endif
