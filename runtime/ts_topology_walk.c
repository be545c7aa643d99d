/* ts_topology_walk.c - the table-driven walker that fills a struct from a
 * YAML mapping (ts_topology_int.h).
 *
 * Each table row (ts_topo_key) names a key (dotted inside sections:
 * "kafka.brokers"), its type, default, range and the offset of the field it
 * fills, so one walker handles the top level, the sections and the items of
 * lists; the same rows free what they filled (ts_topo_free_fields). The
 * walker rejects unknown and duplicate keys, wrong node kinds, malformed or
 * out-of-range integers and missing required keys, always naming the line
 * (libyaml marks count from zero, messages from one). Values go through
 * per-type setters, which the environment overrides use too, so both are
 * validated the same way; path values resolve against the loader's
 * resolve_dir. Two types know their use: SETTINGS values are checked as
 * librdkafka properties (ts_kconf.h), and values of TOPIC_REF rows are
 * recorded in the loader for the checks that follow the walk
 * (ts_topology.c). The first failure is kept in the loader context.
 */
#include "ts_topology_int.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_kconf.h"

/* ---- errors and nodes ---------------------------------------------------- */

ts_err ts_topo_fail(ts_topo_loader *ld, int line, const char *fmt, ...) {
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

ts_err ts_topo_nomem(ts_topo_loader *ld) {
    if (ld->rc == TS_OK) {
        ld->rc = TS_E_NOMEM;
        if (ld->err && ld->errlen)
            snprintf(ld->err, ld->errlen, "%s: out of memory", ld->path);
    }
    return ld->rc;
}

int ts_topo_line(const yaml_node_t *node) {
    return (int)node->start_mark.line + 1;
}

const char *ts_topo_kind(const yaml_node_t *node) {
    switch (node->type) {
    case YAML_SCALAR_NODE:
        return "a scalar";
    case YAML_SEQUENCE_NODE:
        return "a sequence";
    case YAML_MAPPING_NODE:
        return "a mapping";
    default:
        return "nothing";
    }
}

/* @returns the scalar's text, or NULL (after failing) when the node is not a
 * scalar or holds a NUL byte that C strings would silently cut at. */
const char *ts_topo_scalar(ts_topo_loader *ld, const yaml_node_t *node, const char *what) {
    if (node->type != YAML_SCALAR_NODE) {
        ts_topo_fail(ld, ts_topo_line(node), "%s: expected a scalar, got %s", what,
                     ts_topo_kind(node));
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
int ts_topo_plain(const yaml_node_t *node) {
    return node->type == YAML_SCALAR_NODE && node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

int ts_topo_is_null(const yaml_node_t *node) {
    if (!ts_topo_plain(node))
        return 0;
    const char *s = (const char *)node->data.scalar.value;
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* Parses a YAML core-schema integer (decimal, 0x hex, 0o octal).
 * @returns 0 on success, -1 if the text is not an integer, -2 on overflow. */
int ts_topo_parse_int(const char *s, long long *out) {
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
        int ok = base == 16 ? (*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f') ||
                                  (*q >= 'A' && *q <= 'F')
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

const ts_topo_key *ts_topo_find(const ts_topo_key *table, const char *key) {
    for (const ts_topo_key *row = table; row->key; row++)
        if (!strcmp(row->key, key))
            return row;
    return NULL;
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
ts_err ts_topo_set_string(ts_topo_loader *ld, const ts_topo_key *row, void *base, const char *text,
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
        copy = row->type == TS_TOPO_PATH && *text ? ts_topo_resolve(ld->resolve_dir, text)
                                                  : strdup(text);
        if (!copy)
            return ts_topo_nomem(ld);
    }
    free(*field);
    *field = copy;
    return TS_OK;
}

ts_err ts_topo_set_int(ts_topo_loader *ld, const ts_topo_key *row, void *base, const char *text,
                       int line) {
    long long v;
    int rc = ts_topo_parse_int(text, &v);
    if (rc == -1)
        return ts_topo_fail(ld, line, "'%s' must be an integer, got '%s'", row->key, text);
    if (rc == -2 || v < row->min || v > row->max)
        return ts_topo_fail(ld, line, "'%s' must be in %ld..%ld, got %s", row->key, row->min,
                            row->max, text);
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
            *field = row->type == TS_TOPO_PATH ? ts_topo_resolve(ld->resolve_dir, row->def)
                                               : strdup(row->def);
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

ts_err ts_topo_set_defaults(ts_topo_loader *ld, const ts_topo_key *table, void *base) {
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

/* ---- the walker ---------------------------------------------------------- */

/* The node of a row that takes a mapping: 1 a mapping to read, 0 null (the
 * row keeps its default), -1 anything else (the load failed: ld->rc). */
static int ts_topo_mapping_or_null(ts_topo_loader *ld, const ts_topo_key *row,
                                   const yaml_node_t *node) {
    if (node->type == YAML_MAPPING_NODE)
        return 1;
    if (ts_topo_is_null(node))
        return 0;
    ts_topo_fail(ld, ts_topo_line(node), "'%s' must be a mapping, got %s", row->key,
                 ts_topo_kind(node));
    return -1;
}

static ts_err ts_topo_set_settings(ts_topo_loader *ld, const ts_topo_key *row, void *base,
                                   yaml_node_t *node) {
    json_t **field = (json_t **)((char *)base + row->offset);
    int mapping = ts_topo_mapping_or_null(ld, row, node);
    if (mapping <= 0)
        return mapping < 0 ? ld->rc : TS_OK;
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
         p++) {
        yaml_node_t *knode = yaml_document_get_node(ld->doc, p->key);
        yaml_node_t *vnode = yaml_document_get_node(ld->doc, p->value);
        const char *key = ts_topo_scalar(ld, knode, row->key);
        if (!key)
            return ld->rc;
        if (!*key)
            return ts_topo_fail(ld, ts_topo_line(knode), "'%s' has an empty property name",
                                row->key);
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

/* The length of sequence `node`, the value of `row`'s key; fails on any
 * other kind of node. */
static ts_err ts_topo_sequence_len(ts_topo_loader *ld, const ts_topo_key *row, yaml_node_t *node,
                                   size_t *n) {
    if (node->type != YAML_SEQUENCE_NODE)
        return ts_topo_fail(ld, ts_topo_line(node), "'%s' must be a sequence, got %s", row->key,
                            ts_topo_kind(node));
    *n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    return TS_OK;
}

static ts_err ts_topo_set_names(ts_topo_loader *ld, const ts_topo_key *row, void *base,
                                yaml_node_t *node) {
    char ***field = (char ***)((char *)base + row->offset);
    size_t *count = (size_t *)((char *)base + row->count_offset);
    size_t n = 0;
    if (ts_topo_sequence_len(ld, row, node, &n) != TS_OK)
        return ld->rc;
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
                return ts_topo_fail(ld, ts_topo_line(item), "'%s' names '%s' twice", row->key,
                                    text);
        (*field)[i] = strdup(text);
        if (!(*field)[i])
            return ts_topo_nomem(ld);
        if ((row->flags & TS_TOPO_TOPIC_REF) &&
            ts_topo_add_ref(ld, (*field)[i], ts_topo_line(item)) != TS_OK)
            return ld->rc;
    }
    return TS_OK;
}

static ts_err ts_topo_set_list(ts_topo_loader *ld, const ts_topo_key *row, void *base,
                               yaml_node_t *node) {
    void **field = (void **)((char *)base + row->offset);
    size_t *count = (size_t *)((char *)base + row->count_offset);
    if (ts_topo_is_null(node))
        return TS_OK;
    size_t n = 0;
    if (ts_topo_sequence_len(ld, row, node, &n) != TS_OK)
        return ld->rc;
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
            return ts_topo_fail(ld, ts_topo_line(item), "each %s must be a mapping, got %s",
                                row->item_name, ts_topo_kind(item));
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

static ts_err ts_topo_set_value(ts_topo_loader *ld, const ts_topo_key *row, void *base,
                                yaml_node_t *node, unsigned char *seen, const ts_topo_key *table) {
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
                                node->type == YAML_SCALAR_NODE ? "a quoted string"
                                                               : ts_topo_kind(node));
        if (!ts_topo_scalar(ld, node, row->key))
            return ld->rc;
        return ts_topo_set_int(ld, row, base, (const char *)node->data.scalar.value, line);
    case TS_TOPO_SETTINGS:
        return ts_topo_set_settings(ld, row, base, node);
    case TS_TOPO_OBJECT: {
        int mapping = ts_topo_mapping_or_null(ld, row, node);
        if (mapping <= 0)
            return mapping < 0 ? ld->rc : TS_OK;
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
        int mapping = ts_topo_mapping_or_null(ld, row, node);
        if (mapping <= 0)
            return mapping < 0 ? ld->rc : TS_OK;
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
ts_err ts_topo_walk(ts_topo_loader *ld, const ts_topo_key *table, const char *prefix,
                    const char *where, yaml_node_t *map, void *base, unsigned char *seen) {
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *knode = yaml_document_get_node(ld->doc, p->key);
        yaml_node_t *vnode = yaml_document_get_node(ld->doc, p->value);
        if (knode->type != YAML_SCALAR_NODE)
            return ts_topo_fail(ld, ts_topo_line(knode), "a key in %s must be a scalar, got %s",
                                where, ts_topo_kind(knode));
        const char *key = ts_topo_scalar(ld, knode, "key");
        if (!key)
            return ld->rc;
        char full[64];
        const ts_topo_key *row = NULL;
        /* Dotted keys exist only as sections: "kafka.brokers: x" is unknown. */
        if (!strchr(key, '.') &&
            (size_t)snprintf(full, sizeof(full), "%s%s", prefix, key) < sizeof(full))
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
        if ((row->flags & TS_TOPO_REQUIRED) && !seen[row - table] &&
            !strncmp(row->key, prefix, plen) && !strchr(row->key + plen, '.'))
            return ts_topo_fail(ld, ts_topo_line(map), "%s is missing required key '%s'", where,
                                row->key + plen);
    return TS_OK;
}

/* ---- freeing ------------------------------------------------------------ */

/* Frees every field `table` describes in `base`; the same table that filled
 * them, so adding a key cannot leak. */
void ts_topo_free_fields(const ts_topo_key *table, void *base) {
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
