/* ts_topology.c - loads and validates topology.yaml.
 *
 * libyaml composes the whole file into a node tree (yaml_parser_load); the
 * tables here describe the topology's keys. Each row names a key (dotted
 * inside sections: "kafka.brokers"), its type, default, range and the offset
 * of the field it fills, so the one generic walker of ts_topology_walk.c
 * handles the top level, the sections and the items of the `topics` and
 * `processors` lists (`params` become JSON in ts_topology_json.c); the same
 * tables free the result (ts_topology_destroy) and are the source of
 * runtime/TOPOLOGY.md.
 *
 * After the walk come the checks that span several places: duplicate topic
 * and processor names, processor inputs and outputs that must name declared
 * topics with a schema, and the dead-letter topic `<input>.dlq` that every
 * input needs (added with the input's partition count when not declared).
 * Environment overrides go through the same per-key setters as the file, so
 * they are validated the same way; relative paths in the file resolve against
 * the file's folder, relative paths from the environment against the current
 * directory.
 */
#include "ts_topology_int.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

/* Kafka's own limit on topic names. */
#define TS_TOPO_MAX_TOPIC_NAME 249

/* ---- the tables ---------------------------------------------------------- */

static int ts_topo_check_topic(const char *value, char *why, size_t whylen);
static int ts_topo_check_group(const char *value, char *why, size_t whylen);
static int ts_topo_check_ident(const char *value, char *why, size_t whylen);

static const ts_topo_key ts_topo_topic_keys[] = {
    {.key = "name", .type = TS_TOPO_STRING, .flags = TS_TOPO_REQUIRED | TS_TOPO_NONEMPTY | TS_TOPO_UNIQUE,
     .offset = offsetof(ts_topic_conf, name), .check = ts_topo_check_topic,
     .doc = "Kafka topic name ([A-Za-z0-9._-], at most 249 characters)"},
    {.key = "partitions", .type = TS_TOPO_INT, .flags = TS_TOPO_REQUIRED, .min = 1, .max = 1024,
     .offset = offsetof(ts_topic_conf, partitions),
     .doc = "number of partitions: the maximum parallelism of its processor"},
    {.key = "key", .type = TS_TOPO_STRING, .flags = TS_TOPO_NONEMPTY,
     .offset = offsetof(ts_topic_conf, key_field),
     .doc = "record field whose value is the message key; absent: no key"},
    {.key = "schema", .type = TS_TOPO_STRING, .flags = TS_TOPO_NONEMPTY,
     .offset = offsetof(ts_topic_conf, schema),
     .doc = "schema subject in <schemas>/ids.yaml; required for processor inputs and outputs"},
    {0},
};

static const ts_topo_key ts_topo_processor_keys[] = {
    {.key = "name", .type = TS_TOPO_STRING, .flags = TS_TOPO_REQUIRED | TS_TOPO_NONEMPTY | TS_TOPO_UNIQUE,
     .offset = offsetof(ts_processor_conf, name), .check = ts_topo_check_ident,
     .doc = "the built-in processor to run ([A-Za-z0-9_], its folder under processors/)"},
    {.key = "input", .type = TS_TOPO_STRING, .flags = TS_TOPO_REQUIRED | TS_TOPO_NONEMPTY | TS_TOPO_TOPIC_REF,
     .offset = offsetof(ts_processor_conf, input),
     .doc = "the topic it consumes (declared under topics)"},
    {.key = "outputs", .type = TS_TOPO_NAMES, .flags = TS_TOPO_NONEMPTY | TS_TOPO_TOPIC_REF,
     .offset = offsetof(ts_processor_conf, outputs), .count_offset = offsetof(ts_processor_conf, n_outputs),
     .doc = "topics it may emit events to (declared under topics)"},
    {.key = "migrations", .type = TS_TOPO_PATH, .flags = TS_TOPO_NONEMPTY,
     .offset = offsetof(ts_processor_conf, migrations),
     .doc = "folder of *.sql migrations for its rows; absent: none"},
    {.key = "samples", .type = TS_TOPO_PATH, .flags = TS_TOPO_NONEMPTY,
     .offset = offsetof(ts_processor_conf, samples),
     .doc = "file of sample events, one JSON object a line; absent: none"},
    {.key = "params", .type = TS_TOPO_OBJECT, .def = "{}",
     .offset = offsetof(ts_processor_conf, params),
     .doc = "processor parameters, handed to it as a JSON object"},
    {0},
};

static const ts_topo_key ts_topo_keys[] = {
    {.key = "group", .type = TS_TOPO_STRING, .flags = TS_TOPO_NONEMPTY, .def = "tastesync",
     .offset = offsetof(ts_topology, group), .check = ts_topo_check_group,
     .doc = "consumer group id; prefix of internal topics and state"},
    {.key = "kafka", .type = TS_TOPO_SECTION, .doc = "Kafka connection"},
    {.key = "kafka.brokers", .type = TS_TOPO_STRING, .def = "",
     .offset = offsetof(ts_topology, kafka_brokers),
     .doc = "bootstrap servers host:port,...; empty: embedded mock cluster"},
    {.key = "kafka.config", .type = TS_TOPO_SETTINGS, .def = "{}",
     .offset = offsetof(ts_topology, kafka_config),
     .doc = "librdkafka properties passed through (SASL, TLS, ...), values kept as strings"},
    {.key = "redis", .type = TS_TOPO_SECTION, .doc = "Redis connection"},
    {.key = "redis.url", .type = TS_TOPO_STRING, .def = "",
     .offset = offsetof(ts_topology, redis_url),
     .doc = "redis://[:pass@]host:port[/db] or unix:///path[?db=N]; empty: embedded redis-server"},
    {.key = "postgres", .type = TS_TOPO_SECTION, .doc = "PostgreSQL connection"},
    {.key = "postgres.conninfo", .type = TS_TOPO_STRING, .def = "",
     .offset = offsetof(ts_topology, pg_conninfo),
     .doc = "libpq connection string or URI; empty: embedded PostgreSQL"},
    {.key = "state", .type = TS_TOPO_SECTION, .doc = "local state"},
    {.key = "state.dir", .type = TS_TOPO_PATH, .flags = TS_TOPO_NONEMPTY, .def = ".run",
     .offset = offsetof(ts_topology, state_dir),
     .doc = "folder of RocksDB state and embedded servers"},
    {.key = "state.wal", .type = TS_TOPO_INT, .def = "0", .min = 0, .max = 1,
     .offset = offsetof(ts_topology, state_wal),
     .doc = "1: RocksDB also writes its WAL, so a crash restarts from the local state"},
    {.key = "schemas", .type = TS_TOPO_PATH, .flags = TS_TOPO_NONEMPTY, .def = "schemas/avro",
     .offset = offsetof(ts_topology, schemas_dir),
     .doc = "folder holding ids.yaml and the Avro schemas"},
    {.key = "batch", .type = TS_TOPO_SECTION, .doc = "batching of input records per task"},
    {.key = "batch.max_events", .type = TS_TOPO_INT, .def = "5000", .min = 1, .max = 1000000,
     .offset = offsetof(ts_topology, batch_max_events),
     .doc = "most records in one batch"},
    {.key = "batch.max_ms", .type = TS_TOPO_INT, .def = "20", .min = 1, .max = 60000,
     .offset = offsetof(ts_topology, batch_max_ms),
     .doc = "longest wait in milliseconds to fill a batch"},
    {.key = "batch.max_buffered_bytes", .type = TS_TOPO_INT, .def = "16777216", .min = 65536,
     .max = 1073741824, .offset = offsetof(ts_topology, batch_max_buffered_bytes),
     .doc = "most bytes of fetched records a task holds for its next batches"},
    {.key = "http_port", .type = TS_TOPO_INT, .def = "0", .min = 0, .max = 65535,
     .offset = offsetof(ts_topology, http_port),
     .doc = "port of /metrics, /healthz, /readyz; 0: no HTTP endpoint"},
    {.key = "topics", .type = TS_TOPO_LIST,
     .offset = offsetof(ts_topology, topics), .count_offset = offsetof(ts_topology, n_topics),
     .items = ts_topo_topic_keys, .item_size = sizeof(ts_topic_conf),
     .line_offset = offsetof(ts_topic_conf, line), .item_name = "topic",
     .doc = "the topics read and written"},
    {.key = "processors", .type = TS_TOPO_LIST,
     .offset = offsetof(ts_topology, processors), .count_offset = offsetof(ts_topology, n_processors),
     .items = ts_topo_processor_keys, .item_size = sizeof(ts_processor_conf),
     .line_offset = offsetof(ts_processor_conf, line), .item_name = "processor",
     .doc = "the processors run"},
    {0},
};

/* The walker's seen[] holds TS_TOPO_MAX_ROWS rows (ts_topology_int.h). */
_Static_assert(sizeof(ts_topo_keys) / sizeof(ts_topo_keys[0]) <= TS_TOPO_MAX_ROWS, "seen[] too small");
_Static_assert(sizeof(ts_topo_topic_keys) / sizeof(ts_topo_topic_keys[0]) <= TS_TOPO_MAX_ROWS, "seen[] too small");
_Static_assert(sizeof(ts_topo_processor_keys) / sizeof(ts_topo_processor_keys[0]) <= TS_TOPO_MAX_ROWS,
               "seen[] too small");

/* Environment variables that override a key after the file is loaded. */
static const struct {
    const char *env;
    const char *key;
    int empty_is_unset; /* "" means "not set" rather than "set to empty" */
} ts_topo_env[] = {
    {"TASTESYNC_KAFKA_BROKERS", "kafka.brokers", 0},
    {"TASTESYNC_REDIS_URL", "redis.url", 0},
    {"TASTESYNC_POSTGRES_CONNINFO", "postgres.conninfo", 0},
    {"TASTESYNC_STATE_DIR", "state.dir", 1},
    {"TASTESYNC_STATE_WAL", "state.wal", 1},
    {"TASTESYNC_GROUP", "group", 1},
    {"TASTESYNC_HTTP_PORT", "http_port", 1},
    {"TASTESYNC_BATCH_MAX_EVENTS", "batch.max_events", 1},
    {"TASTESYNC_BATCH_MAX_MS", "batch.max_ms", 1},
    {"TASTESYNC_BATCH_MAX_BUFFERED_BYTES", "batch.max_buffered_bytes", 1},
};

/* ---- name checks --------------------------------------------------------- */

static int ts_topo_check_topic(const char *value, char *why, size_t whylen) {
    size_t len = strlen(value);
    if (len > TS_TOPO_MAX_TOPIC_NAME) {
        snprintf(why, whylen, "is longer than %d characters", TS_TOPO_MAX_TOPIC_NAME);
        return -1;
    }
    if (!strcmp(value, ".") || !strcmp(value, "..")) {
        snprintf(why, whylen, "is not a valid Kafka topic name");
        return -1;
    }
    for (const char *p = value; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-')) {
            snprintf(why, whylen, "may hold only letters, digits, '.', '_' and '-'");
            return -1;
        }
    return 0;
}

/* The group prefixes internal topic names (<group>-<store>-changelog), so it
 * obeys the topic-name rules with room left for the suffix. */
static int ts_topo_check_group(const char *value, char *why, size_t whylen) {
    if (strlen(value) > 128) {
        snprintf(why, whylen, "is longer than 128 characters");
        return -1;
    }
    return ts_topo_check_topic(value, why, whylen);
}

/* A processor name is the suffix of a C symbol (ts_processor_<name>). */
static int ts_topo_check_ident(const char *value, char *why, size_t whylen) {
    for (const char *p = value; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_')) {
            snprintf(why, whylen, "may hold only letters, digits and '_'");
            return -1;
        }
    return 0;
}

/* ---- checks across the file ---------------------------------------------- */

static ts_err ts_topo_cross_check(ts_topo_loader *ld) {
    ts_topology *topo = ld->topo;
    for (size_t i = 0; i < ld->n_refs; i++) {
        const ts_topic_conf *t = ts_topology_topic(topo, ld->refs[i].name);
        if (!t)
            return ts_topo_fail(ld, ld->refs[i].line, "topic '%s' is not declared under topics", ld->refs[i].name);
        if (!t->schema)
            return ts_topo_fail(ld, ld->refs[i].line, "topic '%s' (line %d) has no schema", t->name, t->line);
    }
    /* Every input needs its dead-letter topic with the same partitions, so a
     * rejected record can keep its partition. Only inputs are looked at, so an
     * added DLQ topic never gets a DLQ of its own. */
    for (size_t i = 0; i < topo->n_processors; i++) {
        const ts_processor_conf *pc = &topo->processors[i];
        const ts_topic_conf *in = ts_topology_topic(topo, pc->input);
        char name[TS_TOPO_MAX_TOPIC_NAME + 8];
        int n = snprintf(name, sizeof(name), "%s.dlq", in->name);
        if (n < 0 || n > TS_TOPO_MAX_TOPIC_NAME)
            return ts_topo_fail(ld, in->line, "topic '%s' leaves no room for its '.dlq' topic", in->name);
        const ts_topic_conf *dlq = ts_topology_topic(topo, name);
        if (dlq) {
            if (dlq->partitions != in->partitions)
                return ts_topo_fail(ld, dlq->line, "topic '%s' must have the %d partitions of '%s', has %d", name,
                                    in->partitions, in->name, dlq->partitions);
            continue;
        }
        int in_line = in->line, in_parts = in->partitions;
        ts_topic_conf *topics = realloc(topo->topics, (topo->n_topics + 1) * sizeof(*topics));
        if (!topics)
            return ts_topo_nomem(ld);
        topo->topics = topics;
        ts_topic_conf *t = &topo->topics[topo->n_topics];
        memset(t, 0, sizeof(*t));
        topo->n_topics++;
        t->partitions = in_parts;
        t->line = in_line;
        if (!(t->name = strdup(name)))
            return ts_topo_nomem(ld);
    }
    return TS_OK;
}

static ts_err ts_topo_apply_env(ts_topo_loader *ld) {
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof(cwd)))
        snprintf(cwd, sizeof(cwd), "/");
    ld->resolve_dir = cwd;
    for (size_t i = 0; i < sizeof(ts_topo_env) / sizeof(ts_topo_env[0]); i++) {
        const char *value = getenv(ts_topo_env[i].env);
        if (!value || (ts_topo_env[i].empty_is_unset && !*value))
            continue;
        ld->env = ts_topo_env[i].env;
        const ts_topo_key *row = ts_topo_find(ts_topo_keys, ts_topo_env[i].key);
        ts_err rc = row->type == TS_TOPO_INT ? ts_topo_set_int(ld, row, ld->topo, value, 0)
                                             : ts_topo_set_string(ld, row, ld->topo, value, 0);
        if (rc != TS_OK)
            return ld->rc;
        ld->env = NULL;
    }
    ld->resolve_dir = ld->topo->base_dir;
    return TS_OK;
}

/* ---- load and destroy ---------------------------------------------------- */

static ts_err ts_topo_load_file(ts_topo_loader *ld, const char *path) {
    ts_topology *topo = ld->topo;
    topo->path = realpath(path, NULL);
    if (!topo->path)
        return ts_topo_fail(ld, 0, "cannot open: %s", strerror(errno));
    const char *slash = strrchr(topo->path, '/');
    size_t dl = slash == topo->path ? 1 : (size_t)(slash - topo->path);
    topo->base_dir = strndup(topo->path, dl);
    if (!topo->base_dir)
        return ts_topo_nomem(ld);
    ld->resolve_dir = topo->base_dir;

    FILE *fp = fopen(topo->path, "rb");
    if (!fp)
        return ts_topo_fail(ld, 0, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        return ts_topo_fail(ld, 0, "is not a regular file");
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    int have_doc = 0;
    if (!yaml_parser_initialize(&parser)) {
        fclose(fp);
        return ts_topo_nomem(ld);
    }
    yaml_parser_set_input_file(&parser, fp);
    if (!yaml_parser_load(&parser, &doc)) {
        ts_topo_fail(ld, (int)parser.problem_mark.line + 1, "%s%s%s", parser.problem ? parser.problem : "bad YAML",
                     parser.context ? " " : "", parser.context ? parser.context : "");
        goto out;
    }
    have_doc = 1;
    ld->doc = &doc;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || ts_topo_is_null(root)) {
        ts_topo_fail(ld, 1, "the file is empty");
        goto out;
    }
    if (root->type != YAML_MAPPING_NODE) {
        ts_topo_fail(ld, ts_topo_line(root), "the top level must be a mapping, got %s", ts_topo_kind(root));
        goto out;
    }
    /* A second document would be ignored silently by a reader expecting one. */
    yaml_document_t next;
    if (!yaml_parser_load(&parser, &next)) {
        ts_topo_fail(ld, (int)parser.problem_mark.line + 1, "%s", parser.problem ? parser.problem : "bad YAML");
        goto out;
    }
    yaml_node_t *next_root = yaml_document_get_root_node(&next);
    int next_line = next_root ? (int)next.start_mark.line + 1 : 0;
    yaml_document_delete(&next);
    if (next_root) {
        ts_topo_fail(ld, next_line, "the file holds more than one YAML document");
        goto out;
    }
    unsigned char seen[TS_TOPO_MAX_ROWS] = {0};
    if (ts_topo_set_defaults(ld, ts_topo_keys, topo) == TS_OK &&
        ts_topo_walk(ld, ts_topo_keys, "", "the top level", root, topo, seen) == TS_OK)
        ts_topo_cross_check(ld);
out:
    if (have_doc)
        yaml_document_delete(&doc);
    ld->doc = NULL;
    yaml_parser_delete(&parser);
    fclose(fp);
    return ld->rc;
}

ts_err ts_topology_load(const char *path, ts_topology **out, char *err, size_t errlen) {
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    ts_topo_loader ld = {.path = path ? path : "(null)", .err = err, .errlen = errlen};
    if (!path || !*path)
        return ts_topo_fail(&ld, 0, "no topology file given");
    ld.topo = calloc(1, sizeof(*ld.topo));
    if (!ld.topo)
        return ts_topo_nomem(&ld);
    if (ts_topo_load_file(&ld, path) == TS_OK)
        ts_topo_apply_env(&ld);
    free(ld.refs);
    if (ld.rc != TS_OK) {
        ts_topology_destroy(ld.topo);
        return ld.rc;
    }
    *out = ld.topo;
    return TS_OK;
}

void ts_topology_destroy(ts_topology *topo) {
    if (!topo)
        return;
    ts_topo_free_fields(ts_topo_keys, topo);
    free(topo->path);
    free(topo->base_dir);
    free(topo);
}

const ts_topic_conf *ts_topology_topic(const ts_topology *topo, const char *name) {
    if (!topo || !name)
        return NULL;
    for (size_t i = 0; i < topo->n_topics; i++)
        if (topo->topics[i].name && !strcmp(topo->topics[i].name, name))
            return &topo->topics[i];
    return NULL;
}
