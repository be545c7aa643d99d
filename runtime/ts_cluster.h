/* ts_cluster.h - Kafka clusters: the embedded mock cluster, and topic creation
 * on any cluster.
 *
 * The embedded cluster is librdkafka's mock cluster (rdkafka_mock.h): real
 * Kafka protocol on loopback ports, so any Kafka client can use it, but
 * everything is in memory, nothing is compacted, and each partition keeps only
 * its newest ~5 MiB of record batches (older batches vanish silently). The mock
 * brokers do not implement the CreateTopics admin request; create the embedded
 * cluster's topics with ts_cluster_topic_create. They do auto-create a topic
 * with 4 partitions on first use, so create topics before any client uses them.
 *
 * Threading: the mock cluster runs on its own thread; these functions may be
 * called from any thread, but each blocks until the cluster has answered, so
 * call them at startup or in tests, not on a busy loop.
 */
#ifndef TS_CLUSTER_H
#define TS_CLUSTER_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stddef.h>

#include "ts_error.h"

typedef struct ts_cluster ts_cluster;

/** Starts a mock cluster of `brokers` (>= 1) brokers listening on OS-chosen
 * loopback ports. On success *out is owned by the caller (ts_cluster_destroy).
 * @returns TS_OK, TS_E_INVALID or TS_E_IO (detail in `err`). */
ts_err ts_cluster_create(int brokers, ts_cluster **out, char *err, size_t errlen);

/** @returns the bootstrap list "127.0.0.1:NNNN,..."; valid until destroy. */
const char *ts_cluster_bootstraps(const ts_cluster *cl);

/** Creates `topic` with `partitions` partitions and replication factor 1.
 * A topic that already exists is left as it is and reported as TS_OK.
 * @returns TS_OK, TS_E_INVALID or TS_E_IO. */
ts_err ts_cluster_topic_create(ts_cluster *cl, const char *topic, int partitions);

/** @returns the librdkafka mock cluster, for tests that inject errors or take
 * brokers down (rd_kafka_mock_*). Borrowed; valid until destroy. */
rd_kafka_mock_cluster_t *ts_cluster_mock(ts_cluster *cl);

/** Stops the brokers and frees the cluster; accepts NULL. Clients still
 * connected see their brokers go away. */
void ts_cluster_destroy(ts_cluster *cl);

/** Makes sure topics exist on a real cluster, through the Admin API
 * (CreateTopics, replication factor: the broker's default). Blocking, for
 * startup only. Only missing topics are created; a topic that already exists
 * is fine (a differing partition count is logged as a warning, never changed).
 * A cluster without a controller (the mock cluster) cannot create topics: then
 * a missing topic is an error naming it.
 *
 * @param brokers       bootstrap list.
 * @param kafka_config  librdkafka pass-through properties (see ts_kconf.h), or NULL.
 * @param names         `n` topic names.
 * @param partitions    `n` partition counts (>= 1).
 * @param compacted     `n` flags, non-zero for `cleanup.policy=compact`; NULL for none.
 * @param timeout_ms    overall bound of the call.
 * @returns TS_OK; TS_E_CONFIG for a bad kafka_config; TS_E_IO when the
 *          cluster cannot be reached or refuses a topic (detail in `err`). */
ts_err ts_cluster_topics_ensure(const char *brokers, const json_t *kafka_config,
                                const char *const *names, const int *partitions,
                                const int *compacted, size_t n, int timeout_ms, char *err,
                                size_t errlen);

#endif
