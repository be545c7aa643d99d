/* ts_topology.h - topology.yaml: which topics feed which processors, where
 * views and rows go, and parameters.
 *
 * The loader (libyaml) validates the whole file and stops at the first
 * problem with a message "path:line: problem". Relative paths in the file
 * are resolved against the file's folder. Environment variables override the
 * addresses and secrets (TASTESYNC_KAFKA_BROKERS, TASTESYNC_REDIS_URL,
 * TASTESYNC_POSTGRES_CONNINFO, TASTESYNC_STATE_DIR, TASTESYNC_GROUP,
 * TASTESYNC_HTTP_PORT).
 * The structure is plain data, owned by the ts_topology and read-only after load.
 */
#ifndef TS_TOPOLOGY_H
#define TS_TOPOLOGY_H

#include <jansson.h>
#include <stddef.h>

#include "ts_error.h"

typedef struct ts_topic_conf {
    char *name;
    int partitions;  /* >= 1 */
    char *key_field; /* record field that is the message key; NULL for none */
    char *schema;    /* schema subject in schemas/ids.yaml; NULL for DLQ topics */
    int line;        /* where it was declared, for messages */
} ts_topic_conf;

typedef struct ts_processor_conf {
    char *name;         /* names a built-in processor */
    char *input;        /* input topic (declared under topics) */
    char **outputs;     /* output topics (declared under topics) */
    size_t n_outputs;
    char *migrations;   /* absolute folder of *.sql migrations, or NULL */
    char *samples;      /* absolute path of sample events (JSON lines), or NULL */
    json_t *params;     /* the params mapping as a JSON object (never NULL) */
    int line;
} ts_processor_conf;

typedef struct ts_topology {
    char *path;          /* absolute path of the file */
    char *base_dir;      /* its folder */
    char *group;         /* consumer group id and prefix of internal names ("name:") */
    char *kafka_brokers; /* NULL or "": embedded mock cluster */
    json_t *kafka_config; /* object of librdkafka settings (string values) passed through */
    char *redis_url;     /* NULL or "": embedded redis-server. redis://[:pass@]host:port[/db] or unix:///path[?db=N] */
    char *pg_conninfo;   /* NULL or "": embedded PostgreSQL. A libpq connection string or URI */
    char *state_dir;     /* absolute; RocksDB state and embedded servers' folders */
    int state_wal;       /* 1: RocksDB also writes its WAL (fast crash restarts) */
    char *schemas_dir;   /* absolute folder holding ids.yaml */
    int batch_max_events;         /* default 5000 */
    int batch_max_ms;             /* default 20 */
    int batch_max_buffered_bytes; /* default 16 MiB */
    int http_port;                /* 0: no HTTP endpoint (default) */
    ts_topic_conf *topics;
    size_t n_topics;
    ts_processor_conf *processors;
    size_t n_processors;
} ts_topology;

/** Loads and validates `path`. On failure returns TS_E_CONFIG and writes
 * "path:line: problem" to `err`. On success *out is owned by the caller. */
ts_err ts_topology_load(const char *path, ts_topology **out, char *err, size_t errlen);

/** Frees everything; accepts NULL. */
void ts_topology_destroy(ts_topology *topo);

/** @returns the topic named `name`, or NULL. */
const ts_topic_conf *ts_topology_topic(const ts_topology *topo, const char *name);

#endif
