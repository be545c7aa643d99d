/* bench.h - the benchmark program's shared context (benchmarks/README.md).
 *
 * One run owns private servers (redis-server and PostgreSQL in a temp folder,
 * the librdkafka mock cluster in this process), a pre-encoded mixed stream,
 * and the results: a JSON object written to benchmarks/results/<date>.json and
 * a table printed at the end. Each phase (components, pipeline) adds rows.
 * Single-threaded except where a phase starts its own reader threads.
 */
#ifndef BENCH_H
#define BENCH_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ts_avro.h"
#include "ts_cluster.h"
#include "ts_servers.h"
#include "ts_topology.h"

/** The runtime's consumer group in the benchmark (TASTESYNC_GROUP). */
#define BENCH_GROUP "bench"
/** The topic of the latency probes (and of the rebalance phase's steady
 * input); the transport floor mirrors its partition count. */
#define BENCH_PROBE_TOPIC "storybook.events"
/** The processor that consumes it (its stages are read from the runtime's
 * metrics, labelled by processor). */
#define BENCH_PROBE_PROCESSOR "storybook"

/** One pre-encoded input message (Confluent Avro framing). */
typedef struct bench_msg {
    const char *topic; /* static: an input topic name */
    char *key;         /* owned */
    char *val;         /* owned: Avro bytes */
    size_t len;
    char *json;        /* owned: the event's JSON body (value shapes), or NULL */
} bench_msg;

typedef struct bench_ctx {
    int short_mode;
    size_t n_events;   /* end-to-end stream size */
    uint64_t seed;
    const char *perf_out; /* perf.data path for the end-to-end phase, or NULL */
    int throughput_only;  /* the pipeline phase stops after end-to-end throughput */
    char dir[128];     /* private temp folder */
    ts_servers *srv;
    ts_cluster *cluster;
    const char *redis_url;
    const char *pg;
    ts_topology *topo;
    ts_schemas *schemas;
    bench_msg *msgs;   /* the pre-encoded stream */
    size_t n_msgs;
    json_t *results;   /* {"meta":{}, "components":{}, "restore":{}, "pipeline":{}, "rebalance":{}} */
    json_t *table;     /* array of [section, name, value, unit, note] */
} bench_ctx;

/** Monotonic seconds. */
double bench_now(void);
/** Monotonic nanoseconds (the same clock). */
int64_t bench_now_ns(void);
/** Forks `tastesync run <topo>` pointed at the run's servers by environment,
 * with its own state folder, log and group (and a static instance id when
 * `instance` is not NULL); it dies with the benchmark. @returns its pid, or -1. */
pid_t bench_spawn_runtime(const bench_ctx *b, const char *topo, const char *group,
                          const char *state, const char *log, const char *instance);
/** Adds one printed row (and nothing to results). */
void bench_row(bench_ctx *b, const char *section, const char *name, double value,
               const char *unit, const char *note);
/** Sorts `lat` (microseconds) and stores {n, p50, p95, p99, p999, max} (ms)
 * in a new object. */
json_t *bench_percentiles(double *lat, size_t n);
/** A throughput result object {"events": n, "seconds": s, "per_s": n/s}. */
json_t *bench_rate(size_t n, double seconds);
/** A new mock-cluster producer (lz4, batching); NULL on failure (logged). */
struct rd_kafka_s *bench_producer(bench_ctx *b, int linger_ms);

/** The runtime's /metrics text (malloc'ed), or NULL (no port, no answer). */
char *bench_stages_scrape(int port);
/** Where the time went between two scrapes, by the runtime's own histograms
 * for `processor` (bench_stages.c): {"input_wait", "batch", "sink_write":
 * {"redis", "postgres", "kafka"}} each {count, mean_ms, p99_le_ms}, and
 * "records_per_batch"; a one-line summary in `note`. NULL without both. */
json_t *bench_stages_between(const char *before, const char *after, const char *processor,
                             char *note, size_t note_len);

/** Component ceilings: Kafka consume, Avro decode, RocksDB, Redis, PostgreSQL. */
int bench_components(bench_ctx *b);
/** Producer -> consumer latency of the Kafka cluster alone at the latency
 * phase's 1K and 10K events/s (bench_transport.c): the part of event->view
 * latency spent before the runtime sees an event. */
int bench_transport(bench_ctx *b);
/** Restore rate: changelog records/s into RocksDB through ts_restore, and the
 * raw consume ceiling of the same changelog (bench_restore.c). */
int bench_restore(bench_ctx *b);
/** Rebalance pause: 2 runtimes under steady input, a third joins; the longest
 * stop of acknowledged progress of unmoved vs moved partitions, per assignor
 * (bench_rebalance.c). */
int bench_rebalance(bench_ctx *b);
/** End-to-end throughput, event->view latency, reads, RSS and state size. */
int bench_pipeline(bench_ctx *b);

#endif
