/* ts_topology.c - loads and validates topology.yaml.
 *
 * libyaml composes the whole file into a node tree (yaml_parser_load); the
 * loader then walks the tree guided by tables. Each table row names a key
 * (dotted inside sections: "kafka.brokers"), its type, default, range and the
 * offset of the field it fills, so one generic walker handles the top level,
 * the sections and the items of the `topics` and `processors` lists; the
 * same tables free the result (ts_topology_destroy) and are the source of
 * runtime/TOPOLOGY.md. The walker rejects unknown and duplicate keys, wrong
 * node kinds, malformed or out-of-range integers and missing required keys,
 * always naming the line (libyaml marks count from zero, messages from one).
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
#include "ts_topology.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "ts_kconf.h"

/* Nesting of `params` beyond this is refused: YAML aliases can point back at
 * an enclosing node, and a cycle would otherwise recurse forever. */
#define TS_TOPO_MAX_DEPTH 32
/* Aliases can also multiply a small file into a huge tree ("billion laughs");
 * converting more nodes than this in `params` is refused. */
#define TS_TOPO_MAX_PARAM_NODES 100000
/* Kafka's own limit on topic names. */
#define TS_TOPO_MAX_TOPIC_NAME 249

/* ---- the tables ---------------------------------------------------------- */

typedef enum ts_topo_type {
    TS_TOPO_STRING,   /* scalar, kept as text (char *) */
    TS_TOPO_PATH,     /* scalar path made absolute (char *) */
    TS_TOPO_INT,      /* plain decimal integer in [min, max] (int) */
    TS_TOPO_SETTINGS, /* mapping of name -> scalar, a JSON object of strings */
    TS_TOPO_OBJECT,   /* any mapping, converted to a JSON object */
    TS_TOPO_NAMES,    /* sequence of scalars (char **, count at count_offset) */
    TS_TOPO_SECTION,  /* mapping whose keys are the rows "<key>.<sub>" */
    TS_TOPO_LIST,     /* sequence of mappings, each walked with `items` */
} ts_topo_type;

#define TS_TOPO_REQUIRED 0x1u  /* the key must be present */
#define TS_TOPO_NONEMPTY 0x2u  /* the text must not be empty or null */
#define TS_TOPO_TOPIC_REF 0x4u /* every value names a topic declared under topics */
#define TS_TOPO_UNIQUE 0x8u    /* no two items of the list share this value */

/* Validates a string value; writes why into `why` and returns non-zero when it
 * is not acceptable. */
typedef int (*ts_topo_check_fn)(const char *value, char *why, size_t whylen);

typedef struct ts_topo_key ts_topo_key;
struct ts_topo_key {
    const char *key;
    ts_topo_type type;
    unsigned flags;
    const char *def; /* default as it would be written in the file, or NULL */
    long min, max;   /* TS_TOPO_INT */
    size_t offset;   /* the field filled */
    size_t count_offset;     /* TS_TOPO_NAMES, TS_TOPO_LIST: the size_t count */
    ts_topo_check_fn check;  /* optional, for strings and names */
    const ts_topo_key *items; /* TS_TOPO_LIST: the table of one item */
    size_t item_size;         /* TS_TOPO_LIST */
    size_t line_offset;       /* TS_TOPO_LIST: the item's int line field */
    const char *item_name;    /* TS_TOPO_LIST: "topic", for messages */
    const char *doc;
};

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

/* The walker keeps one "seen" flag per row in a fixed array. */
#define TS_TOPO_MAX_ROWS 32
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
};

/* ---- loader context ------------------------------------------------------ */

/* A string value that must name a declared topic, with where it was written. */
typedef struct ts_topo_ref {
    const char *name; /* borrowed from the ts_topology */
    int line;
} ts_topo_ref;

typedef struct ts_topo_loader {
    const char *path;       /* as the caller wrote it, for messages */
    const char *env;        /* set while applying an environment variable */
    const char *resolve_dir; /* folder relative paths are resolved against */
    yaml_document_t *doc;
    ts_topology *topo;
    ts_topo_ref *refs;
    size_t n_refs, cap_refs;
    size_t param_nodes;
    ts_err rc; /* first failure; later ones do not overwrite the message */
    char *err;
    size_t errlen;
} ts_topo_loader;

__attribute__((format(printf, 3, 4))) static ts_err ts_topo_fail(ts_topo_loader *ld, int line,
                                                                 const char *fmt, ...) {
    if (ld->rc != TS_OK)
        return ld->rc;
    ld->rc = TS_E_CONFIG;
    if (!ld->err || ld->errlen == 0)
        return ld->rc;
    int n;
    if (ld->env)
        n = snprintf(ld->err, ld->errlen, "%s: %s: ", ld->path, ld->env);
    else if (line > 0)
        n = snprintf(ld->err, ld->errlen, "%s:%d: ", ld->path, line);
    else
        n = snprintf(ld->err, ld->errlen, "%s: ", ld->path);
    if (n >= 0 && (size_t)n < ld->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return ld->rc;
}

static ts_err ts_topo_nomem(ts_topo_loader *ld) {
    if (ld->rc == TS_OK) {
        ld->rc = TS_E_NOMEM;
        if (ld->err && ld->errlen)
            snprintf(ld->err, ld->errlen, "%s: out of memory", ld->path);
    }
    return ld->rc;
}

static int ts_topo_line(const yaml_node_t *node) { return (int)node->start_mark.line + 1; }

static const char *ts_topo_kind(const yaml_node_t *node) {
    switch (node->type) {
    case YAML_SCALAR_NODE: return "a scalar";
    case YAML_SEQUENCE_NODE: return "a sequence";
    case YAML_MAPPING_NODE: return "a mapping";
    default: return "nothing";
    }
}

/* @returns the scalar's text, or NULL (after failing) when the node is not a
 * scalar or holds a NUL byte that C strings would silently cut at. */
static const char *ts_topo_scalar(ts_topo_loader *ld, const yaml_node_t *node, const char *what) {
    if (node->type != YAML_SCALAR_NODE) {
        ts_topo_fail(ld, ts_topo_line(node), "%s: expected a scalar, got %s", what, ts_topo_kind(node));
        return NULL;
    }
    const char *text = (const char *)node->data.scalar.value;
    if (strlen(text) != node->data.scalar.length) {
        ts_topo_fail(ld, ts_topo_line(node), "%s: contains a NUL character", what);
        return NULL;
    }
    return text;
}

/* Only unquoted scalars can be null, booleans or numbers: "5" is a string. */
static int ts_topo_plain(const yaml_node_t *node) {
    return node->type == YAML_SCALAR_NODE && node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static int ts_topo_is_null(const yaml_node_t *node) {
    if (!ts_topo_plain(node))
        return 0;
    const char *s = (const char *)node->data.scalar.value;
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* Parses a YAML core-schema integer (decimal, 0x hex, 0o octal).
 * @returns 0 on success, -1 if the text is not an integer, -2 on overflow. */
static int ts_topo_parse_int(const char *s, long long *out) {
    const char *p = s;
    int neg = 0, base = 10;
    if (*p == '-' || *p == '+')
        neg = *p++ == '-';
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'o') && p == s) {
        base = p[1] == 'x' ? 16 : 8;
        p += 2;
    }
    if (!*p)
        return -1;
    for (const char *q = p; *q; q++) {
        int ok = base == 16 ? (*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f') || (*q >= 'A' && *q <= 'F')
                            : *q >= '0' && *q < '0' + base;
        if (!ok)
            return -1;
    }
    errno = 0;
    unsigned long long v = strtoull(p, NULL, base);
    if (errno == ERANGE || v > (unsigned long long)LLONG_MAX + (neg ? 1u : 0u))
        return -2;
    *out = neg ? (long long)(0 - v) : (long long)v;
    return 0;
}

/* @returns non-zero when `s` is a YAML core-schema decimal float such as
 * 0.5, -1e3 or .25. strtod alone would also take hex, "inf" and spaces. */
static int ts_topo_is_float(const char *s) {
    const char *p = s;
    int digits = 0;
    if (*p == '-' || *p == '+')
        p++;
    while (*p >= '0' && *p <= '9')
        p++, digits++;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            digits++;
    if (!digits)
        return 0;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '-' || *p == '+')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    return *p == '\0';
}

static const ts_topo_key *ts_topo_find(const ts_topo_key *table, const char *key) {
    for (const ts_topo_key *row = table; row->key; row++)
        if (!strcmp(row->key, key))
            return row;
    return NULL;
}

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

/* ---- setters ------------------------------------------------------------- */

/* @returns `rel` made absolute against `dir`, without a leading "./", or NULL
 * when out of memory. */
static char *ts_topo_resolve(const char *dir, const char *rel) {
    if (rel[0] == '/')
        return strdup(rel);
    while (rel[0] == '.' && rel[1] == '/')
        for (rel += 2; *rel == '/'; rel++)
            ;
    if (!strcmp(rel, "."))
        rel = "";
    size_t dl = strlen(dir), rl = strlen(rel);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    while (rl > 0 && rel[rl - 1] == '/')
        rl--;
    char *out = malloc(dl + rl + 2);
    if (!out)
        return NULL;
    memcpy(out, dir, dl);
    size_t n = dl;
    if (rl) {
        if (out[n - 1] != '/')
            out[n++] = '/';
        memcpy(out + n, rel, rl);
        n += rl;
    }
    out[n] = '\0';
    return out;
}

/* Stores text (or NULL for a null value) into a string or path field. `line`
 * is 0 for defaults and the environment. */
static ts_err ts_topo_set_string(ts_topo_loader *ld, const ts_topo_key *row, void *base, const char *text,
                                 int line) {
    char **field = (char **)((char *)base + row->offset);
    if ((row->flags & TS_TOPO_NONEMPTY) && (!text || !*text))
        return ts_topo_fail(ld, line, "'%s' must not be empty", row->key);
    if (text && *text && row->check) {
        char why[128];
        if (row->check(text, why, sizeof(why)))
            return ts_topo_fail(ld, line, "'%s' value '%s' %s", row->key, text, why);
    }
    char *copy = NULL;
    if (text) {
        copy = row->type == TS_TOPO_PATH && *text ? ts_topo_resolve(ld->resolve_dir, text) : strdup(text);
        if (!copy)
            return ts_topo_nomem(ld);
    }
    free(*field);
    *field = copy;
    return TS_OK;
}

static ts_err ts_topo_set_int(ts_topo_loader *ld, const ts_topo_key *row, void *base, const char *text,
                              int line) {
    long long v;
    int rc = ts_topo_parse_int(text, &v);
    if (rc == -1)
        return ts_topo_fail(ld, line, "'%s' must be an integer, got '%s'", row->key, text);
    if (rc == -2 || v < row->min || v > row->max)
        return ts_topo_fail(ld, line, "'%s' must be in %ld..%ld, got %s", row->key, row->min, row->max, text);
    *(int *)((char *)base + row->offset) = (int)v;
    return TS_OK;
}

/* Writes the row's default into `base`, replacing nothing: base is zeroed. */
static ts_err ts_topo_set_default(ts_topo_loader *ld, const ts_topo_key *row, void *base) {
    switch (row->type) {
    case TS_TOPO_STRING:
    case TS_TOPO_PATH:
        if (!row->def)
            return TS_OK;
        {
            /* A NONEMPTY row may still default to nothing; only values given
             * in the file or environment are checked. */
            char **field = (char **)((char *)base + row->offset);
            *field = row->type == TS_TOPO_PATH ? ts_topo_resolve(ld->resolve_dir, row->def) : strdup(row->def);
            return *field ? TS_OK : ts_topo_nomem(ld);
        }
    case TS_TOPO_INT:
        return row->def ? ts_topo_set_int(ld, row, base, row->def, 0) : TS_OK;
    case TS_TOPO_SETTINGS:
    case TS_TOPO_OBJECT: {
        json_t **field = (json_t **)((char *)base + row->offset);
        *field = json_object();
        return *field ? TS_OK : ts_topo_nomem(ld);
    }
    default:
        return TS_OK;
    }
}

static ts_err ts_topo_set_defaults(ts_topo_loader *ld, const ts_topo_key *table, void *base) {
    for (const ts_topo_key *row = table; row->key; row++)
        if (ts_topo_set_default(ld, row, base) != TS_OK)
            return ld->rc;
    return TS_OK;
}

static ts_err ts_topo_add_ref(ts_topo_loader *ld, const char *name, int line) {
    if (ld->n_refs == ld->cap_refs) {
        size_t cap = ld->cap_refs ? ld->cap_refs * 2 : 16;
        ts_topo_ref *refs = realloc(ld->refs, cap * sizeof(*refs));
        if (!refs)
            return ts_topo_nomem(ld);
        ld->refs = refs;
        ld->cap_refs = cap;
    }
    ld->refs[ld->n_refs++] = (ts_topo_ref){name, line};
    return TS_OK;
}

/* ---- YAML to JSON (params) ----------------------------------------------- */

static json_t *ts_topo_scalar_json(ts_topo_loader *ld, const yaml_node_t *node, const char *text) {
    if (!ts_topo_plain(node))
        return json_string(text);
    if (ts_topo_is_null(node))
        return json_null();
    if (!strcmp(text, "true") || !strcmp(text, "True") || !strcmp(text, "TRUE"))
        return json_true();
    if (!strcmp(text, "false") || !strcmp(text, "False") || !strcmp(text, "FALSE"))
        return json_false();
    long long i;
    int rc = ts_topo_parse_int(text, &i);
    if (rc == 0)
        return json_integer((json_int_t)i);
    if (rc == -2) {
        ts_topo_fail(ld, ts_topo_line(node), "integer '%s' is out of range", text);
        return NULL;
    }
    if (ts_topo_is_float(text)) {
        double d = strtod(text, NULL);
        if (!isfinite(d)) {
            ts_topo_fail(ld, ts_topo_line(node), "number '%s' is out of range", text);
            return NULL;
        }
        return json_real(d);
    }
    return json_string(text);
}

/* Converts a node and everything under it. @returns a new reference, or NULL
 * after failing (the message is set). */
static json_t *ts_topo_to_json(ts_topo_loader *ld, yaml_node_t *node, int depth) {
    if (depth > TS_TOPO_MAX_DEPTH) {
        ts_topo_fail(ld, ts_topo_line(node), "params nested deeper than %d levels", TS_TOPO_MAX_DEPTH);
        return NULL;
    }
    if (++ld->param_nodes > TS_TOPO_MAX_PARAM_NODES) {
        ts_topo_fail(ld, ts_topo_line(node), "params hold more than %d values", TS_TOPO_MAX_PARAM_NODES);
        return NULL;
    }
    json_t *out = NULL;
    switch (node->type) {
    case YAML_SCALAR_NODE: {
        const char *text = ts_topo_scalar(ld, node, "params value");
        if (!text)
            return NULL;
        out = ts_topo_scalar_json(ld, node, text);
        break;
    }
    case YAML_SEQUENCE_NODE:
        out = json_array();
        for (yaml_node_item_t *it = node->data.sequence.items.start; out && it < node->data.sequence.items.top;
             it++) {
            json_t *v = ts_topo_to_json(ld, yaml_document_get_node(ld->doc, *it), depth + 1);
            if (!v || json_array_append_new(out, v)) {
                json_decref(out);
                out = NULL;
            }
        }
        break;
    case YAML_MAPPING_NODE:
        out = json_object();
        for (yaml_node_pair_t *p = node->data.mapping.pairs.start; out && p < node->data.mapping.pairs.top; p++) {
            yaml_node_t *knode = yaml_document_get_node(ld->doc, p->key);
            const char *key = ts_topo_scalar(ld, knode, "params key");
            json_t *v = NULL;
            if (key && json_object_get(out, key))
                ts_topo_fail(ld, ts_topo_line(knode), "duplicate key '%s' in params", key);
            else if (key)
                v = ts_topo_to_json(ld, yaml_document_get_node(ld->doc, p->value), depth + 1);
            if (!v || json_object_set_new(out, key, v)) {
                json_decref(out);
                out = NULL;
            }
        }
        break;
    default:
        break;
    }
    if (!out && ld->rc == TS_OK)
        ts_topo_nomem(ld); /* every other way to NULL has set the message */
    return out;
}

/* ---- the walker ---------------------------------------------------------- */

static ts_err ts_topo_walk(ts_topo_loader *ld, const ts_topo_key *table, const char *prefix, const char *where,
                           yaml_node_t *map, void *base, unsigned char *seen);

static ts_err ts_topo_set_settings(ts_topo_loader *ld, const ts_topo_key *row, void *base, yaml_node_t *node) {
    json_t **field = (json_t **)((char *)base + row->offset);
    if (node->type != YAML_MAPPING_NODE && !ts_topo_is_null(node))
        return ts_topo_fail(ld, ts_topo_line(node), "'%s' must be a mapping, got %s", row->key, ts_topo_kind(node));
    if (node->type != YAML_MAPPING_NODE)
        return TS_OK;
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top; p++) {
        yaml_node_t *knode = yaml_document_get_node(ld->doc, p->key);
        yaml_node_t *vnode = yaml_document_get_node(ld->doc, p->value);
        const char *key = ts_topo_scalar(ld, knode, row->key);
        if (!key)
            return ld->rc;
        if (!*key)
            return ts_topo_fail(ld, ts_topo_line(knode), "'%s' has an empty property name", row->key);
        if (json_object_get(*field, key))
            return ts_topo_fail(ld, ts_topo_line(knode), "duplicate key '%s' in %s", key, row->key);
        const char *value = ts_topo_scalar(ld, vnode, key);
        if (!value)
            return ld->rc;
        if (ts_topo_is_null(vnode))
            return ts_topo_fail(ld, ts_topo_line(vnode), "'%s' in %s has no value", key, row->key);
        char why[320];
        if (ts_kconf_check(key, value, why, sizeof(why)) != TS_OK)
            return ts_topo_fail(ld, ts_topo_line(vnode), "%s: %s", row->key, why);
        json_t *v = json_string(value);
        if (!v || json_object_set_new(*field, key, v))
            return ts_topo_nomem(ld);
    }
    return TS_OK;
}

static ts_err ts_topo_set_names(ts_topo_loader *ld, const ts_topo_key *row, void *base, yaml_node_t *node) {
    char ***field = (char ***)((char *)base + row->offset);
    size_t *count = (size_t *)((char *)base + row->count_offset);
    if (node->type != YAML_SEQUENCE_NODE)
        return ts_topo_fail(ld, ts_topo_line(node), "'%s' must be a sequence, got %s", row->key, ts_topo_kind(node));
    size_t n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (n == 0)
        return TS_OK;
    *field = calloc(n, sizeof(char *));
    if (!*field)
        return ts_topo_nomem(ld);
    *count = n; /* the array is zeroed, so destroy may free all n at any time */
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = yaml_document_get_node(ld->doc, node->data.sequence.items.start[i]);
        const char *text = ts_topo_scalar(ld, item, row->key);
        if (!text)
            return ld->rc;
        if ((row->flags & TS_TOPO_NONEMPTY) && (!*text || ts_topo_is_null(item)))
            return ts_topo_fail(ld, ts_topo_line(item), "'%s' holds an empty entry", row->key);
        for (size_t j = 0; j < i; j++)
            if (!strcmp((*field)[j], text))
                return ts_topo_fail(ld, ts_topo_line(item), "'%s' names '%s' twice", row->key, text);
        (*field)[i] = strdup(text);
        if (!(*field)[i])
            return ts_topo_nomem(ld);
        if ((row->flags & TS_TOPO_TOPIC_REF) && ts_topo_add_ref(ld, (*field)[i], ts_topo_line(item)) != TS_OK)
            return ld->rc;
    }
    return TS_OK;
}

static ts_err ts_topo_set_list(ts_topo_loader *ld, const ts_topo_key *row, void *base, yaml_node_t *node) {
    void **field = (void **)((char *)base + row->offset);
    size_t *count = (size_t *)((char *)base + row->count_offset);
    if (ts_topo_is_null(node))
        return TS_OK;
    if (node->type != YAML_SEQUENCE_NODE)
        return ts_topo_fail(ld, ts_topo_line(node), "'%s' must be a sequence, got %s", row->key, ts_topo_kind(node));
    size_t n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (n == 0)
        return TS_OK;
    char *items = calloc(n, row->item_size);
    if (!items)
        return ts_topo_nomem(ld);
    *field = items;
    *count = n; /* zeroed items are safe to destroy */
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = yaml_document_get_node(ld->doc, node->data.sequence.items.start[i]);
        void *ibase = items + i * row->item_size;
        if (item->type != YAML_MAPPING_NODE)
            return ts_topo_fail(ld, ts_topo_line(item), "each %s must be a mapping, got %s", row->item_name,
                                ts_topo_kind(item));
        *(int *)((char *)ibase + row->line_offset) = ts_topo_line(item);
        unsigned char seen[TS_TOPO_MAX_ROWS] = {0};
        if (ts_topo_set_defaults(ld, row->items, ibase) != TS_OK ||
            ts_topo_walk(ld, row->items, "", row->item_name, item, ibase, seen) != TS_OK)
            return ld->rc;
    }
    /* Unique keys are compared once every item is read. */
    for (const ts_topo_key *k = row->items; k->key; k++) {
        if (!(k->flags & TS_TOPO_UNIQUE))
            continue;
        for (size_t i = 1; i < n; i++) {
            const char *vi = *(char **)(items + i * row->item_size + k->offset);
            for (size_t j = 0; j < i; j++) {
                const char *vj = *(char **)(items + j * row->item_size + k->offset);
                if (vi && vj && !strcmp(vi, vj))
                    return ts_topo_fail(ld, *(int *)(items + i * row->item_size + row->line_offset),
                                        "duplicate %s '%s' (first on line %d)", row->item_name, vi,
                                        *(int *)(items + j * row->item_size + row->line_offset));
            }
        }
    }
    return TS_OK;
}

static ts_err ts_topo_set_value(ts_topo_loader *ld, const ts_topo_key *row, void *base, yaml_node_t *node,
                                unsigned char *seen, const ts_topo_key *table) {
    int line = ts_topo_line(node);
    switch (row->type) {
    case TS_TOPO_STRING:
    case TS_TOPO_PATH: {
        const char *text = ts_topo_scalar(ld, node, row->key);
        if (!text)
            return ld->rc;
        if (ts_topo_set_string(ld, row, base, ts_topo_is_null(node) ? NULL : text, line) != TS_OK)
            return ld->rc;
        char *value = *(char **)((char *)base + row->offset);
        if ((row->flags & TS_TOPO_TOPIC_REF) && value)
            return ts_topo_add_ref(ld, value, line);
        return TS_OK;
    }
    case TS_TOPO_INT:
        if (node->type != YAML_SCALAR_NODE || !ts_topo_plain(node))
            return ts_topo_fail(ld, line, "'%s' must be an integer, got %s", row->key,
                                node->type == YAML_SCALAR_NODE ? "a quoted string" : ts_topo_kind(node));
        if (!ts_topo_scalar(ld, node, row->key))
            return ld->rc;
        return ts_topo_set_int(ld, row, base, (const char *)node->data.scalar.value, line);
    case TS_TOPO_SETTINGS:
        return ts_topo_set_settings(ld, row, base, node);
    case TS_TOPO_OBJECT: {
        if (ts_topo_is_null(node))
            return TS_OK;
        if (node->type != YAML_MAPPING_NODE)
            return ts_topo_fail(ld, line, "'%s' must be a mapping, got %s", row->key, ts_topo_kind(node));
        json_t *obj = ts_topo_to_json(ld, node, 0);
        if (!obj)
            return ld->rc;
        json_t **field = (json_t **)((char *)base + row->offset);
        json_decref(*field);
        *field = obj;
        return TS_OK;
    }
    case TS_TOPO_NAMES:
        return ts_topo_set_names(ld, row, base, node);
    case TS_TOPO_LIST:
        return ts_topo_set_list(ld, row, base, node);
    case TS_TOPO_SECTION: {
        if (ts_topo_is_null(node))
            return TS_OK;
        if (node->type != YAML_MAPPING_NODE)
            return ts_topo_fail(ld, line, "'%s' must be a mapping, got %s", row->key, ts_topo_kind(node));
        char prefix[64];
        snprintf(prefix, sizeof(prefix), "%s.", row->key);
        return ts_topo_walk(ld, table, prefix, row->key, node, base, seen);
    }
    }
    return TS_OK;
}

/* Walks one mapping against `table`: the keys of `map` are looked up as
 * `prefix` + key. `seen` has one flag per table row (shared by sections of
 * the same table) to catch duplicates and missing required keys. */
static ts_err ts_topo_walk(ts_topo_loader *ld, const ts_topo_key *table, const char *prefix, const char *where,
                           yaml_node_t *map, void *base, unsigned char *seen) {
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *knode = yaml_document_get_node(ld->doc, p->key);
        yaml_node_t *vnode = yaml_document_get_node(ld->doc, p->value);
        if (knode->type != YAML_SCALAR_NODE)
            return ts_topo_fail(ld, ts_topo_line(knode), "a key in %s must be a scalar, got %s", where,
                                ts_topo_kind(knode));
        const char *key = ts_topo_scalar(ld, knode, "key");
        if (!key)
            return ld->rc;
        char full[64];
        const ts_topo_key *row = NULL;
        /* Dotted keys exist only as sections: "kafka.brokers: x" is unknown. */
        if (!strchr(key, '.') && (size_t)snprintf(full, sizeof(full), "%s%s", prefix, key) < sizeof(full))
            row = ts_topo_find(table, full);
        if (!row)
            return ts_topo_fail(ld, ts_topo_line(knode), "unknown key '%s' in %s", key, where);
        size_t idx = (size_t)(row - table);
        if (seen[idx])
            return ts_topo_fail(ld, ts_topo_line(knode), "duplicate key '%s' in %s", key, where);
        seen[idx] = 1;
        if (ts_topo_set_value(ld, row, base, vnode, seen, table) != TS_OK)
            return ld->rc;
    }
    size_t plen = strlen(prefix);
    for (const ts_topo_key *row = table; row->key; row++)
        if ((row->flags & TS_TOPO_REQUIRED) && !seen[row - table] && !strncmp(row->key, prefix, plen) &&
            !strchr(row->key + plen, '.'))
            return ts_topo_fail(ld, ts_topo_line(map), "%s is missing required key '%s'", where, row->key + plen);
    return TS_OK;
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

/* Frees every field `table` describes in `base`; the same table that filled
 * them, so adding a key cannot leak. */
static void ts_topo_free_fields(const ts_topo_key *table, void *base) {
    for (const ts_topo_key *row = table; row->key; row++) {
        void *field = (char *)base + row->offset;
        switch (row->type) {
        case TS_TOPO_STRING:
        case TS_TOPO_PATH:
            free(*(char **)field);
            break;
        case TS_TOPO_SETTINGS:
        case TS_TOPO_OBJECT:
            json_decref(*(json_t **)field);
            break;
        case TS_TOPO_NAMES: {
            char **names = *(char ***)field;
            size_t n = *(size_t *)((char *)base + row->count_offset);
            for (size_t i = 0; names && i < n; i++)
                free(names[i]);
            free(names);
            break;
        }
        case TS_TOPO_LIST: {
            char *items = *(char **)field;
            size_t n = *(size_t *)((char *)base + row->count_offset);
            for (size_t i = 0; items && i < n; i++)
                ts_topo_free_fields(row->items, items + i * row->item_size);
            free(items);
            break;
        }
        default:
            break;
        }
    }
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
