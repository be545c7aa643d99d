/* ts_source.h - the Kafka source: one consumer-group member on the libuv loop.
 *
 * librdkafka runs its own threads; the consumer queue signals a pipe when it
 * becomes non-empty, a uv_poll_t watches the pipe, and the loop thread drains
 * the queue in bounded rounds (never blocking, never busy-polling). Rebalances
 * (eager roundrobin by default, cooperative-sticky on request) are served on
 * the loop thread too: the
 * handler says where each newly assigned partition starts (from the task's
 * stored position) and is told of revocations. Offsets are committed only
 * when the runtime says so (after its sinks acknowledged).
 *
 * Threading: loop thread only.
 */
#ifndef TS_SOURCE_H
#define TS_SOURCE_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <uv.h>

#include "ts_error.h"

typedef struct ts_source ts_source;

#define TS_SOURCE_REFUSE (-1000)
#define TS_SOURCE_LATER (-1001)

typedef struct ts_source_handler {
    /** A partition was assigned. @returns the offset to start from (an
     * offset, or RD_KAFKA_OFFSET_BEGINNING), TS_SOURCE_LATER to hold it
     * (assigned but paused) until the handler calls ts_source_assign (after
     * checking or restoring state), or TS_SOURCE_REFUSE (it stays
     * unassigned). */
    int64_t (*assigned)(void *arg, const char *topic, int32_t partition);
    /** A partition was revoked or lost; its records stop arriving. */
    void (*revoked)(void *arg, const char *topic, int32_t partition);
    /** How many revoked partitions still have a batch on its way to the
     * sinks (may be NULL: none). The revocation is completed (the partitions
     * given back to the group) once none has, or after TS_SOURCE_DRAIN_MS:
     * the handler calls ts_source_drained when that may have changed. */
    size_t (*draining)(void *arg);
    /** A record; the handler owns `msg` (rd_kafka_message_destroy). */
    void (*record)(void *arg, rd_kafka_message_t *msg);
    /** The consumer hit a fatal error. */
    void (*failed)(void *arg, const char *reason);
    void *arg;
} ts_source_handler;

/** Creates the consumer and subscribes to `topics`. `handler` is copied. */
ts_err ts_source_create(uv_loop_t *loop, const char *brokers, const json_t *kafka_config,
                        const char *group, const char *const *topics, size_t n_topics,
                        const ts_source_handler *handler, ts_source **out, char *err,
                        size_t errlen);
/** Longest wait for revoked partitions' batches before the revocation is
 * completed anyway (a sink outage must not hold the group's rebalance). */
#define TS_SOURCE_DRAIN_MS 10000

/** Completes a revocation that waits for batches (handler.draining) when
 * none is left or the wait is over; otherwise does nothing. */
void ts_source_drained(ts_source *src);

/** Starts fetching a partition the handler held (TS_SOURCE_LATER: assigned,
 * but paused), from `offset` (or RD_KAFKA_OFFSET_BEGINNING). */
void ts_source_assign(ts_source *src, const char *topic, int32_t partition, int64_t offset);

/** Pauses (pause != 0) or resumes fetching one partition. */
void ts_source_pause(ts_source *src, const char *topic, int32_t partition, int pause);
/** Stores `next_offset` as the partition's offset to commit; librdkafka
 * commits the stored offsets of all partitions together within
 * auto.commit.interval.ms (100 ms), and at revocation and close. A commit can
 * fail (e.g. during a rebalance); the next one repairs it. */
void ts_source_store_offset(ts_source *src, const char *topic, int32_t partition,
                            int64_t next_offset);
/** The partition's end offset as last seen by the fetcher (cached, no round
 * trip). @returns 0 with *high set, or -1 when not known yet. */
int ts_source_end(ts_source *src, const char *topic, int32_t partition, int64_t *high);
/** Leaves the group (revocations are reported), closes the handles and frees
 * the source once they are closed. Blocks briefly for the group leave. */
void ts_source_close(ts_source *src);

#endif
