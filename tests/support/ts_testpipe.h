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
#include <stdint.h>
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
    ts_servers *pgsrv;  /* a private PostgreSQL cluster (opts.private_pg), or NULL */
    char pgdir[160];    /* its folder, under dir */
} ts_testpipe;

/** How ts_testpipe_start_opts differs from ts_testpipe_start. Zero = the same. */
typedef struct ts_testpipe_opts {
    /* Run a PostgreSQL cluster of this test alone (ts_servers_start_postgres
     * in a folder under dir) instead of a database in the shared fixture
     * cluster, so the test may stop it (ts_testpipe_pg_stop/_pg_start). Costs
     * an initdb (a few seconds). */
    int private_pg;
} ts_testpipe_opts;

/** Starts the servers and the runtime. @returns 0, or -1 (reason on stderr). */
int ts_testpipe_start(ts_testpipe *tp);
/** ts_testpipe_start with options (opts may be NULL). */
int ts_testpipe_start_opts(ts_testpipe *tp, const ts_testpipe_opts *opts);
/** Stops the private PostgreSQL cluster (opts.private_pg), by PID. */
void ts_testpipe_pg_stop(ts_testpipe *tp);
/** Starts the private PostgreSQL cluster again, same socket and data.
 * @returns 0, or -1 (reason on stderr; also when there is no private cluster). */
int ts_testpipe_pg_start(ts_testpipe *tp);
/** Sums, over the partitions of `topic`, the runtime group's committed offsets
 * (a partition without a commit counts 0) into *committed and the end offsets
 * into *end. @returns 0, or -1 when the cluster does not answer. */
int ts_testpipe_progress(ts_testpipe *tp, const char *topic, int64_t *committed, int64_t *end);
/** Prints every thread's stack of the runtime to stderr (gdb attaches for a
 * moment): what a test shows when the runtime seems hung. */
void ts_testpipe_dump_stacks(const ts_testpipe *tp);
/** The VmRSS of the runtime process in KiB, or -1 (no runtime, unreadable). */
long ts_testpipe_runtime_rss_kib(const ts_testpipe *tp);
/** Starts the runtime again (after ts_testpipe_runtime_stop). */
int ts_testpipe_runtime_start(ts_testpipe *tp);
/** Sends `sig` to the runtime and waits. @returns its exit status (or 128+signal). */
int ts_testpipe_runtime_stop(ts_testpipe *tp, int sig);
/** Starts one more runtime of the same group (scale-out), with its own state
 * folder <dir>/state-<name> and log <dir>/<name>.log; `instance` (may be NULL)
 * becomes TASTESYNC_INSTANCE_ID (a static member). @returns its pid or -1.
 * The caller stops it with ts_testpipe_reap. */
pid_t ts_testpipe_spawn(ts_testpipe *tp, const char *name, const char *instance);
/** Sends `sig` to `pid` and waits (SIGKILL after a timeout). @returns its exit
 * status, or 128 + signal. */
int ts_testpipe_reap(pid_t pid, int sig);

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
/** With `rk` a consumer of the group (never joined): sums over the topic's
 * `partitions` the committed offsets and the end offsets, and sets *done when
 * every non-empty partition is committed to its end. @returns 0, or -1 when
 * Kafka did not answer. */
int ts_testpipe_group_progress(rd_kafka_t *rk, const char *topic, int partitions,
                               int64_t *committed, int64_t *end, int *done);
/** Reads every record of `topic` (all partitions, from the start to the end at
 * call time) into a new array. *n is set. Free with ts_testpipe_records_free. */
rd_kafka_message_t **ts_testpipe_read_topic(ts_testpipe *tp, const char *topic, size_t *n);
/** The name of processor `processor`'s changelog topic. */
void ts_testpipe_changelog_topic(const ts_testpipe *tp, const char *processor, char *out,
                                 size_t cap);
/** Reads every record of processor `processor`'s changelog topic (all the
 * partitions of its input) like ts_testpipe_read_topic. */
rd_kafka_message_t **ts_testpipe_read_changelog(ts_testpipe *tp, const char *processor,
                                                size_t *n);
void ts_testpipe_records_free(rd_kafka_message_t **msgs, size_t n);
/** Checks that processor `processor`'s changelog is one history: in every
 * partition, the markers' positions never go back (as they would after an
 * instance resumed from an old snapshot and appended a second history).
 * @returns 0, or -1 with the first offending marker (or none read) in `why`. */
int ts_testpipe_changelog_is_one_history(ts_testpipe *tp, const char *processor, char *why,
                                         size_t whylen);
/** The runtime group's committed offsets of partitions 0..partitions-1 of
 * `topic` into offsets[] (-1: none). @returns 0, or -1 when Kafka did not answer. */
int ts_testpipe_committed(ts_testpipe *tp, const char *topic, int64_t *offsets, int partitions);
/** Commits offsets[] (skipping negative ones) for the runtime group, as an
 * operator resetting offsets would: only while no instance is in the group.
 * @returns 0, or -1 (reason on stderr). */
int ts_testpipe_commit(ts_testpipe *tp, const char *topic, const int64_t *offsets,
                       int partitions);
/** The value of header `name` of `msg` as a new string, or NULL. */
char *ts_testpipe_header(const rd_kafka_message_t *msg, const char *name);

#endif
