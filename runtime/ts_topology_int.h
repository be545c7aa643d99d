/* ts_topology_int.h - what the topology loader's files share and no one else
 * sees: ts_topology.c (the topology's key tables, name checks, checks across
 * the file, load and destroy), ts_topology_walk.c (the generic table-driven
 * walker: loader context, setters, the walk itself and freeing) and
 * ts_topology_json.c (YAML to JSON, for `params`). The API is ts_topology.h.
 *
 * Threading: as ts_topology.h (load once, read-only after).
 */
#ifndef TS_TOPOLOGY_INT_H
#define TS_TOPOLOGY_INT_H

#include <jansson.h>
#include <stddef.h>
#include <yaml.h>

#include "ts_error.h"
#include "ts_topology.h"

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
    const char *def;          /* default as it would be written in the file, or NULL */
    long min, max;            /* TS_TOPO_INT */
    size_t offset;            /* the field filled */
    size_t count_offset;      /* TS_TOPO_NAMES, TS_TOPO_LIST: the size_t count */
    ts_topo_check_fn check;   /* optional, for strings and names */
    const ts_topo_key *items; /* TS_TOPO_LIST: the table of one item */
    size_t item_size;         /* TS_TOPO_LIST */
    size_t line_offset;       /* TS_TOPO_LIST: the item's int line field */
    const char *item_name;    /* TS_TOPO_LIST: "topic", for messages */
    const char *doc;
};

/* The walker keeps one "seen" flag per row in a fixed array. */
#define TS_TOPO_MAX_ROWS 32

/* ---- loader context ------------------------------------------------------ */

/* A string value that must name a declared topic, with where it was written:
 * recorded by the walker, checked by ts_topology.c once the file is read. */
typedef struct ts_topo_ref {
    const char *name; /* borrowed from the ts_topology */
    int line;
} ts_topo_ref;

typedef struct ts_topo_loader {
    const char *path;        /* as the caller wrote it, for messages */
    const char *env;         /* set while applying an environment variable */
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

/* ---- ts_topology_walk.c -------------------------------------------------- */

/** Fails the load with "path:line: message" ("path: ENV: message" while an
 * environment variable is applied; line 0: no line). Only the first failure
 * is kept. @returns the load's error code. */
ts_err ts_topo_fail(ts_topo_loader *ld, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** Fails the load with "out of memory" (unless it failed already). */
ts_err ts_topo_nomem(ts_topo_loader *ld);
/** The node's line for messages (libyaml counts from zero). */
int ts_topo_line(const yaml_node_t *node);
/** "a scalar", "a sequence", "a mapping", for messages. */
const char *ts_topo_kind(const yaml_node_t *node);
/** The scalar's text, or NULL after failing (not a scalar, or a NUL byte). */
const char *ts_topo_scalar(ts_topo_loader *ld, const yaml_node_t *node, const char *what);
/** Non-zero for an unquoted scalar: only those can be null, booleans or numbers. */
int ts_topo_plain(const yaml_node_t *node);
/** Non-zero for a plain null: empty, "~" or "null" in any of its spellings. */
int ts_topo_is_null(const yaml_node_t *node);
/** Parses a YAML core-schema integer (decimal, 0x hex, 0o octal).
 * @returns 0 on success, -1 if the text is not an integer, -2 on overflow. */
int ts_topo_parse_int(const char *s, long long *out);
/** The row of `table` named `key`, or NULL. */
const ts_topo_key *ts_topo_find(const ts_topo_key *table, const char *key);
/** Stores text (NULL: a null value) into a string or path row's field. */
ts_err ts_topo_set_string(ts_topo_loader *ld, const ts_topo_key *row, void *base, const char *text,
                          int line);
/** Parses and range-checks an integer row's value into its field. */
ts_err ts_topo_set_int(ts_topo_loader *ld, const ts_topo_key *row, void *base, const char *text,
                       int line);
/** Writes every row's default into the zeroed `base`. */
ts_err ts_topo_set_defaults(ts_topo_loader *ld, const ts_topo_key *table, void *base);
/** Walks mapping `map` against `table` into `base` (see the definition). */
ts_err ts_topo_walk(ts_topo_loader *ld, const ts_topo_key *table, const char *prefix,
                    const char *where, yaml_node_t *map, void *base, unsigned char *seen);
/** Frees every field `table` describes in `base`. */
void ts_topo_free_fields(const ts_topo_key *table, void *base);

/* ---- ts_topology_json.c -------------------------------------------------- */

/** Converts a node and everything under it (`params`). @returns a new
 * reference, or NULL after failing. */
json_t *ts_topo_to_json(ts_topo_loader *ld, yaml_node_t *node, int depth);

#endif
