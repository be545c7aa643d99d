/* ts_avro.c - schema registry file, Confluent-framed Avro decoding and encoding.
 *
 * Schemas: <dir>/ids.yaml lists {id, subject, version, file}; each file is
 * parsed twice, by avro-c (the schema used for reading and writing) and by
 * jansson (kept for what avro-c drops: field defaults and logical types).
 * Named types of each file are indexed by full name so a record's JSON
 * definition is one hash lookup away.
 *
 * Decoding: the frame gives the writer id. Per writer id the decoder caches a
 * plan: "direct" when the writer schema equals the reader (or one branch of
 * the reader union; avro-c then reads straight into the reader value), else
 * "resolve": avro-c reads into a value of the writer schema and resolve_copy()
 * applies Avro schema resolution into the reader value. avro-c has its own
 * resolver (avro_resolved_writer_new) but it cannot fill reader fields that
 * are missing from the writer from their defaults (avro-c does not keep
 * defaults at all), and that is the common evolution case, so resolution is
 * done here. Before avro-c sees any bytes, wire_check() walks them against the
 * writer schema with strict bounds: avro-c trusts length prefixes (it mallocs
 * whatever a string length says) and loops on any block count, so unchecked
 * input could exhaust memory or spin.
 *
 * Encoding: a generic value of the subject's latest schema, filled by the
 * caller or from JSON by json_fill() (lenient, see ts_avro.h), written by
 * avro-c after the 5-byte frame header.
 */
#include "ts_avro.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>
#include <yaml.h>

#define WIRE_MAX_DEPTH 64
#define RESOLVE_MAX_DEPTH 64

/* ---- schemas ------------------------------------------------------------- */

typedef struct named_def {
    char *fullname;
    const json_t *node; /* borrowed from the def's json */
    UT_hash_handle hh;
} named_def;

typedef struct schema_def {
    int32_t id;
    int version;
    char *subject;
    char *file;
    avro_schema_t schema;
    json_t *json;
    named_def *named; /* full name -> JSON definition */
} schema_def;

struct ts_schemas {
    schema_def *defs;
    size_t count;
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static char *fullname_of(const char *ns, const char *name) {
    char *out;
    if (strchr(name, '.') != NULL || ns == NULL || ns[0] == '\0')
        return strdup(name);
    if (asprintf(&out, "%s.%s", ns, name) < 0)
        return NULL;
    return out;
}

/* Full name of an avro-c named schema (record, enum, fixed); caller frees. */
static char *schema_fullname(avro_schema_t schema) {
    return fullname_of(avro_schema_namespace(schema), avro_schema_name(schema));
}

static int named_add(schema_def *def, const char *ns, const char *name, const json_t *node) {
    named_def *nd = calloc(1, sizeof(*nd));
    named_def *old;
    if (nd == NULL)
        return -1;
    nd->fullname = fullname_of(ns, name);
    if (nd->fullname == NULL) {
        free(nd);
        return -1;
    }
    nd->node = node;
    HASH_FIND_STR(def->named, nd->fullname, old);
    if (old != NULL) { /* avro-c already rejected real duplicates; keep the first */
        free(nd->fullname);
        free(nd);
        return 0;
    }
    HASH_ADD_KEYPTR(hh, def->named, nd->fullname, strlen(nd->fullname), nd);
    return 0;
}

/* Indexes every named type under `node`, following Avro's namespace rules. */
static int named_walk(schema_def *def, const json_t *node, const char *ns) {
    size_t i;
    const json_t *elem;
    const char *type;
    const char *name;
    const char *own_ns;
    char *inner_ns = NULL;
    int rc = 0;

    if (json_is_array(node)) {
        json_array_foreach(node, i, elem) {
            if (named_walk(def, elem, ns) != 0)
                return -1;
        }
        return 0;
    }
    if (!json_is_object(node))
        return 0;
    if (!json_is_string(json_object_get(node, "type")))
        return named_walk(def, json_object_get(node, "type"), ns);
    type = json_string_value(json_object_get(node, "type"));
    if (strcmp(type, "array") == 0)
        return named_walk(def, json_object_get(node, "items"), ns);
    if (strcmp(type, "map") == 0)
        return named_walk(def, json_object_get(node, "values"), ns);
    name = json_string_value(json_object_get(node, "name"));
    if (name == NULL)
        return 0;
    own_ns = json_string_value(json_object_get(node, "namespace"));
    if (own_ns == NULL)
        own_ns = ns;
    if (strchr(name, '.') != NULL) {
        /* A dotted name carries its own namespace, which nested types inherit. */
        inner_ns = strndup(name, (size_t)(strrchr(name, '.') - name));
        if (inner_ns == NULL)
            return -1;
        own_ns = inner_ns;
    }
    if (named_add(def, own_ns, name, node) != 0) {
        rc = -1;
    } else if (strcmp(type, "record") == 0 || strcmp(type, "error") == 0) {
        json_array_foreach(json_object_get(node, "fields"), i, elem) {
            if (named_walk(def, json_object_get(elem, "type"), own_ns) != 0) {
                rc = -1;
                break;
            }
        }
    }
    free(inner_ns);
    return rc;
}

static const json_t *named_find(const schema_def *def, avro_schema_t schema) {
    named_def *nd = NULL;
    char *full = schema_fullname(schema);
    if (full == NULL)
        return NULL;
    HASH_FIND_STR(def->named, full, nd);
    free(full);
    return nd != NULL ? nd->node : NULL;
}

/* JSON type node of a field/branch resolved to its definition when it names
 * a type; NULL-safe. */
static const json_t *jtype_deref(const schema_def *def, const json_t *jtype, avro_schema_t schema) {
    if (jtype == NULL || json_is_string(jtype)) {
        avro_type_t t = avro_typeof(schema);
        if (t == AVRO_RECORD || t == AVRO_ENUM || t == AVRO_FIXED)
            return named_find(def, schema);
    }
    if (json_is_object(jtype) && json_is_object(json_object_get(jtype, "type")))
        return json_object_get(jtype, "type");
    return jtype;
}

static int jtype_is_timestamp_ms(const json_t *jtype) {
    const char *lt;
    if (!json_is_object(jtype))
        return 0;
    lt = json_string_value(json_object_get(jtype, "logicalType"));
    return lt != NULL && strcmp(lt, "timestamp-millis") == 0;
}

static void def_close(schema_def *def) {
    named_def *nd, *tmp;
    HASH_ITER(hh, def->named, nd, tmp) {
        HASH_DEL(def->named, nd);
        free(nd->fullname);
        free(nd);
    }
    if (def->schema != NULL)
        avro_schema_decref(def->schema);
    json_decref(def->json);
    free(def->subject);
    free(def->file);
}

void ts_schemas_destroy(ts_schemas *schemas) {
    size_t i;
    if (schemas == NULL)
        return;
    for (i = 0; i < schemas->count; i++)
        def_close(&schemas->defs[i]);
    free(schemas->defs);
    free(schemas);
}

static const schema_def *def_by_id(const ts_schemas *schemas, int32_t id) {
    size_t i;
    for (i = 0; i < schemas->count; i++) {
        if (schemas->defs[i].id == id)
            return &schemas->defs[i];
    }
    return NULL;
}

static const schema_def *def_latest(const ts_schemas *schemas, const char *subject) {
    const schema_def *best = NULL;
    size_t i;
    for (i = 0; i < schemas->count; i++) {
        const schema_def *def = &schemas->defs[i];
        if (strcmp(def->subject, subject) == 0 && (best == NULL || def->version > best->version))
            best = def;
    }
    return best;
}

avro_schema_t ts_schemas_latest(const ts_schemas *schemas, const char *subject, int32_t *id) {
    const schema_def *def = def_latest(schemas, subject);
    if (def == NULL)
        return NULL;
    if (id != NULL)
        *id = def->id;
    return def->schema;
}

avro_schema_t ts_schemas_by_id(const ts_schemas *schemas, int32_t id) {
    const schema_def *def = def_by_id(schemas, id);
    return def != NULL ? def->schema : NULL;
}

size_t ts_schemas_count(const ts_schemas *schemas) {
    return schemas->count;
}

/* Reads and parses one .avsc file into def (schema, json, named index). */
static ts_err def_load_file(schema_def *def, const char *dir, char *err, size_t errlen) {
    char *path = NULL;
    json_error_t jerr;
    char *text = NULL;
    ts_err rc = TS_E_CONFIG;

    if (asprintf(&path, "%s/%s", dir, def->file) < 0)
        return TS_E_NOMEM;
    def->json = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (def->json == NULL) {
        seterr(err, errlen, "%s:%d: %s", path, jerr.line, jerr.text);
        goto out;
    }
    /* avro-c parses from text; re-dump the document we just validated. */
    text = json_dumps(def->json, JSON_COMPACT);
    if (text == NULL) {
        rc = TS_E_NOMEM;
        goto out;
    }
    if (avro_schema_from_json_length(text, strlen(text), &def->schema) != 0) {
        def->schema = NULL;
        seterr(err, errlen, "%s:1: unparsable schema: %s", path, avro_strerror());
        goto out;
    }
    if (named_walk(def, def->json, NULL) != 0) {
        rc = TS_E_NOMEM;
        goto out;
    }
    rc = TS_OK;
out:
    free(text);
    free(path);
    return rc;
}

static const char *yscalar(yaml_node_t *node) {
    return node != NULL && node->type == YAML_SCALAR_NODE ? (const char *)node->data.scalar.value
                                                          : NULL;
}

static int parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    long v;
    if (s == NULL || *s == '\0')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Fills def's id/subject/version/file from one ids.yaml entry. */
static ts_err parse_entry(yaml_document_t *doc, yaml_node_t *item, const char *ypath,
                          schema_def *def, char *err, size_t errlen) {
    yaml_node_pair_t *pair;
    int line = (int)item->start_mark.line + 1;
    long v;
    int have_id = 0;

    if (item->type != YAML_MAPPING_NODE) {
        seterr(err, errlen, "%s:%d: an entry must be a mapping {id, subject, version, file}",
               ypath, line);
        return TS_E_CONFIG;
    }
    for (pair = item->data.mapping.pairs.start; pair < item->data.mapping.pairs.top; pair++) {
        yaml_node_t *knode = yaml_document_get_node(doc, pair->key);
        yaml_node_t *vnode = yaml_document_get_node(doc, pair->value);
        const char *key = yscalar(knode);
        const char *val = yscalar(vnode);
        int vline = (int)(vnode != NULL ? vnode->start_mark.line : knode->start_mark.line) + 1;
        if (key == NULL || val == NULL) {
            seterr(err, errlen, "%s:%d: keys and values must be scalars", ypath, vline);
            return TS_E_CONFIG;
        }
        if (strcmp(key, "id") == 0) {
            if (parse_int(val, 1, INT32_MAX, &v) != 0) {
                seterr(err, errlen, "%s:%d: id must be an integer from 1 to %d, got '%s'", ypath,
                       vline, INT32_MAX, val);
                return TS_E_CONFIG;
            }
            def->id = (int32_t)v;
            have_id = 1;
        } else if (strcmp(key, "version") == 0) {
            if (parse_int(val, 1, INT_MAX, &v) != 0) {
                seterr(err, errlen, "%s:%d: version must be a positive integer, got '%s'", ypath,
                       vline, val);
                return TS_E_CONFIG;
            }
            def->version = (int)v;
        } else if (strcmp(key, "subject") == 0 || strcmp(key, "file") == 0) {
            char **dst = key[0] == 's' ? &def->subject : &def->file;
            if (val[0] == '\0' || *dst != NULL) {
                seterr(err, errlen, "%s:%d: empty or repeated '%s'", ypath, vline, key);
                return TS_E_CONFIG;
            }
            if (key[0] == 'f' && (val[0] == '/' || strstr(val, "..") != NULL)) {
                seterr(err, errlen, "%s:%d: file must be a path inside the schema folder", ypath,
                       vline);
                return TS_E_CONFIG;
            }
            *dst = strdup(val);
            if (*dst == NULL)
                return TS_E_NOMEM;
        } else {
            seterr(err, errlen, "%s:%d: unknown key '%s' (expected id, subject, version, file)",
                   ypath, vline, key);
            return TS_E_CONFIG;
        }
    }
    if (!have_id || def->subject == NULL || def->version == 0 || def->file == NULL) {
        seterr(err, errlen, "%s:%d: an entry needs id, subject, version and file", ypath, line);
        return TS_E_CONFIG;
    }
    return TS_OK;
}

/* Parses ids.yaml into s->defs (files not yet loaded). */
static ts_err parse_ids(ts_schemas *s, const char *ypath, char *err, size_t errlen) {
    FILE *f;
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_node_t *root;
    yaml_node_t *seq = NULL;
    yaml_node_pair_t *pair;
    yaml_node_item_t *it;
    ts_err rc = TS_E_CONFIG;
    size_t n;

    f = fopen(ypath, "r");
    if (f == NULL) {
        seterr(err, errlen, "%s: %s", ypath, strerror(errno));
        return TS_E_CONFIG;
    }
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        return TS_E_NOMEM;
    }
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        seterr(err, errlen, "%s:%d: %s", ypath, (int)parser.problem_mark.line + 1,
               parser.problem != NULL ? parser.problem : "invalid YAML");
        yaml_parser_delete(&parser);
        fclose(f);
        return TS_E_CONFIG;
    }
    root = yaml_document_get_root_node(&doc);
    if (root == NULL || root->type != YAML_MAPPING_NODE) {
        seterr(err, errlen, "%s:%d: expected a mapping with key 'schemas'", ypath,
               root != NULL ? (int)root->start_mark.line + 1 : 1);
        goto out;
    }
    for (pair = root->data.mapping.pairs.start; pair < root->data.mapping.pairs.top; pair++) {
        yaml_node_t *knode = yaml_document_get_node(&doc, pair->key);
        const char *key = yscalar(knode);
        if (key != NULL && strcmp(key, "schemas") == 0) {
            seq = yaml_document_get_node(&doc, pair->value);
        } else {
            seterr(err, errlen, "%s:%d: unknown key '%s' (expected 'schemas')", ypath,
                   (int)knode->start_mark.line + 1, key != NULL ? key : "?");
            goto out;
        }
    }
    if (seq == NULL || seq->type != YAML_SEQUENCE_NODE) {
        seterr(err, errlen, "%s:%d: 'schemas' must be a list", ypath,
               seq != NULL ? (int)seq->start_mark.line + 1 : 1);
        goto out;
    }
    n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    s->defs = calloc(n > 0 ? n : 1, sizeof(*s->defs));
    if (s->defs == NULL) {
        rc = TS_E_NOMEM;
        goto out;
    }
    for (it = seq->data.sequence.items.start; it < seq->data.sequence.items.top; it++) {
        yaml_node_t *item = yaml_document_get_node(&doc, *it);
        schema_def *def = &s->defs[s->count++];
        int line = (int)item->start_mark.line + 1;
        size_t j;
        rc = parse_entry(&doc, item, ypath, def, err, errlen);
        if (rc != TS_OK)
            goto out;
        for (j = 0; j + 1 < s->count; j++) {
            if (s->defs[j].id == def->id) {
                seterr(err, errlen, "%s:%d: duplicate id %d", ypath, line, (int)def->id);
                rc = TS_E_CONFIG;
                goto out;
            }
            if (s->defs[j].version == def->version &&
                strcmp(s->defs[j].subject, def->subject) == 0) {
                seterr(err, errlen, "%s:%d: duplicate version %d of subject '%s'", ypath, line,
                       def->version, def->subject);
                rc = TS_E_CONFIG;
                goto out;
            }
        }
    }
    rc = TS_OK;
out:
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}

ts_err ts_schemas_load(const char *dir, ts_schemas **out, char *err, size_t errlen) {
    ts_schemas *s;
    char *ypath = NULL;
    ts_err rc;
    size_t i;

    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL || asprintf(&ypath, "%s/ids.yaml", dir) < 0) {
        free(s);
        return TS_E_NOMEM;
    }
    rc = parse_ids(s, ypath, err, errlen);
    for (i = 0; rc == TS_OK && i < s->count; i++)
        rc = def_load_file(&s->defs[i], dir, err, errlen);
    free(ypath);
    if (rc != TS_OK) {
        ts_schemas_destroy(s);
        return rc;
    }
    *out = s;
    return TS_OK;
}

/* ---- wire check ------------------------------------------------------------
 * Walks Avro binary against a schema without allocating, proving every length,
 * index and count is in bounds so avro-c can then read it safely. */

typedef struct wire {
    const uint8_t *p;
    size_t len;
    size_t pos;
    size_t items_left; /* bounds elements of zero-size types (arrays of null) */
    int not_utf8;      /* the check failed on a string that is not UTF-8 */
} wire;

static int wire_varint(wire *w, int maxbytes, int64_t *out) {
    uint64_t v = 0;
    int i;
    for (i = 0; i < maxbytes; i++) {
        uint8_t b;
        if (w->pos >= w->len)
            return -1;
        b = w->p[w->pos++];
        if (i == 9 && (b & 0x7e) != 0) /* more than 64 bits */
            return -1;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *out = (int64_t)((v >> 1) ^ (~(v & 1) + 1));
            return 0;
        }
    }
    return -1;
}

static int utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}

static int wire_check(wire *w, avro_schema_t schema, int depth) {
    int64_t v;
    size_t i;

    if (depth > WIRE_MAX_DEPTH)
        return -1;
    switch (avro_typeof(schema)) {
    case AVRO_NULL:
        return 0;
    case AVRO_BOOLEAN:
        if (w->pos >= w->len || w->p[w->pos] > 1)
            return -1;
        w->pos++;
        return 0;
    case AVRO_INT32:
        if (wire_varint(w, 5, &v) != 0 || v < INT32_MIN || v > INT32_MAX)
            return -1;
        return 0;
    case AVRO_INT64:
        return wire_varint(w, 10, &v);
    case AVRO_FLOAT:
    case AVRO_DOUBLE: {
        size_t n = avro_typeof(schema) == AVRO_FLOAT ? 4 : 8;
        if (w->len - w->pos < n)
            return -1;
        w->pos += n;
        return 0;
    }
    case AVRO_STRING:
    case AVRO_BYTES:
        if (wire_varint(w, 10, &v) != 0 || v < 0 || (uint64_t)v > w->len - w->pos)
            return -1;
        if (avro_typeof(schema) == AVRO_STRING && !utf8_valid(w->p + w->pos, (size_t)v)) {
            w->not_utf8 = 1;
            return -1;
        }
        w->pos += (size_t)v;
        return 0;
    case AVRO_FIXED: {
        int64_t n = avro_schema_fixed_size(schema);
        if (n < 0 || (uint64_t)n > w->len - w->pos)
            return -1;
        w->pos += (size_t)n;
        return 0;
    }
    case AVRO_ENUM:
        if (wire_varint(w, 5, &v) != 0 || v < 0 ||
            v >= avro_schema_enum_number_of_symbols(schema))
            return -1;
        return 0;
    case AVRO_UNION:
        if (wire_varint(w, 10, &v) != 0 || v < 0 || (uint64_t)v >= avro_schema_union_size(schema))
            return -1;
        return wire_check(w, avro_schema_union_branch(schema, (int)v), depth + 1);
    case AVRO_RECORD:
        for (i = 0; i < avro_schema_record_size(schema); i++) {
            if (wire_check(w, avro_schema_record_field_get_by_index(schema, (int)i), depth + 1) !=
                0)
                return -1;
        }
        return 0;
    case AVRO_ARRAY:
    case AVRO_MAP: {
        int is_map = avro_typeof(schema) == AVRO_MAP;
        avro_schema_t items =
            is_map ? avro_schema_map_values(schema) : avro_schema_array_items(schema);
        for (;;) {
            int64_t count;
            if (wire_varint(w, 10, &count) != 0)
                return -1;
            if (count == 0)
                return 0;
            if (count < 0) {
                int64_t bsize;
                if (count == INT64_MIN || wire_varint(w, 10, &bsize) != 0 || bsize < 0 ||
                    (uint64_t)bsize > w->len - w->pos)
                    return -1;
                count = -count;
            }
            if ((uint64_t)count > w->items_left)
                return -1;
            w->items_left -= (size_t)count;
            for (; count > 0; count--) {
                if (is_map) {
                    if (wire_varint(w, 10, &v) != 0 || v < 0 || (uint64_t)v > w->len - w->pos)
                        return -1;
                    if (!utf8_valid(w->p + w->pos, (size_t)v)) {
                        w->not_utf8 = 1;
                        return -1;
                    }
                    w->pos += (size_t)v;
                }
                if (wire_check(w, items, depth + 1) != 0)
                    return -1;
            }
        }
    }
    case AVRO_LINK:
        return wire_check(w, avro_schema_link_target(schema), depth + 1);
    default:
        return -1;
    }
}

/* ---- resolution ---------------------------------------------------------- */

typedef struct jctx {
    const schema_def *def; /* the reader/target schema's definitions */
    char *err;
    size_t errlen;
    char path[256];
} jctx;

static int json_fill(jctx *c, const json_t *j, avro_value_t *v, const json_t *jtype);

static avro_schema_t unlink_schema(avro_schema_t s) {
    while (s != NULL && avro_typeof(s) == AVRO_LINK)
        s = avro_schema_link_target(s);
    return s;
}

static int is_named(avro_type_t t) {
    return t == AVRO_RECORD || t == AVRO_ENUM || t == AVRO_FIXED;
}

/* Can a writer value of type w be read as r (Avro promotion rules)? */
static int promotes(avro_type_t w, avro_type_t r) {
    switch (w) {
    case AVRO_INT32:
        return r == AVRO_INT64 || r == AVRO_FLOAT || r == AVRO_DOUBLE;
    case AVRO_INT64:
        return r == AVRO_FLOAT || r == AVRO_DOUBLE;
    case AVRO_FLOAT:
        return r == AVRO_DOUBLE;
    case AVRO_STRING:
        return r == AVRO_BYTES;
    case AVRO_BYTES:
        return r == AVRO_STRING;
    default:
        return 0;
    }
}

/* The reader-union branch a writer schema resolves to, or -1. */
static int union_match(avro_schema_t runion, avro_schema_t wschema) {
    size_t n = avro_schema_union_size(runion);
    avro_type_t wt = avro_typeof(wschema);
    size_t i;
    for (i = 0; i < n; i++) {
        avro_schema_t b = unlink_schema(avro_schema_union_branch(runion, (int)i));
        if (avro_typeof(b) != wt)
            continue;
        if (!is_named(wt) || strcmp(avro_schema_name(b), avro_schema_name(wschema)) == 0)
            return (int)i;
    }
    for (i = 0; i < n; i++) {
        avro_schema_t b = unlink_schema(avro_schema_union_branch(runion, (int)i));
        if (promotes(wt, avro_typeof(b)))
            return (int)i;
    }
    return -1;
}

static size_t path_push(jctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends a path component; returns the old length to restore. */
static size_t path_push(jctx *c, const char *fmt, ...) {
    size_t old = strlen(c->path);
    va_list ap;
    if (old + 1 < sizeof(c->path)) {
        va_start(ap, fmt);
        vsnprintf(c->path + old, sizeof(c->path) - old, fmt, ap);
        va_end(ap);
    }
    return old;
}

static size_t path_field(jctx *c, const char *name) {
    return c->path[0] == '\0' ? path_push(c, "%s", name) : path_push(c, ".%s", name);
}

static int fail(jctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(jctx *c, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->path[0] != '\0')
        seterr(c->err, c->errlen, "field '%s': %s", c->path, msg);
    else
        seterr(c->err, c->errlen, "%s", msg);
    return -1;
}

/* JSON definition of reader record field i, or NULL. */
static const json_t *record_field_json(const schema_def *def, avro_schema_t record, size_t i) {
    const json_t *jrec = named_find(def, record);
    return jrec != NULL ? json_array_get(json_object_get(jrec, "fields"), i) : NULL;
}

/* Copies writer value src into reader value dst with Avro schema resolution. */
static int resolve_copy(jctx *c, avro_value_t *src, avro_value_t *dst, int depth) {
    avro_type_t st = avro_value_get_type(src);
    avro_type_t dt = avro_value_get_type(dst);
    avro_schema_t ss = unlink_schema(avro_value_get_schema(src));
    avro_schema_t ds = unlink_schema(avro_value_get_schema(dst));
    avro_value_t sb, db;
    size_t i, n = 0;

    if (depth > RESOLVE_MAX_DEPTH)
        return fail(c, "value nested too deeply");
    if (st == AVRO_UNION) {
        if (avro_value_get_current_branch(src, &sb) != 0)
            return fail(c, "writer union has no branch");
        return resolve_copy(c, &sb, dst, depth + 1);
    }
    if (dt == AVRO_UNION) {
        int b = union_match(ds, ss);
        if (b < 0)
            return fail(c, "writer type %s matches no branch of the reader union",
                        avro_schema_type_name(ss));
        if (avro_value_set_branch(dst, b, &db) != 0)
            return fail(c, "%s", avro_strerror());
        return resolve_copy(c, src, &db, depth + 1);
    }
    if (st != dt && !promotes(st, dt))
        return fail(c, "writer type %s cannot be read as %s", avro_schema_type_name(ss),
                    avro_schema_type_name(ds));
    if (is_named(st) && strcmp(avro_schema_name(ss), avro_schema_name(ds)) != 0)
        return fail(c, "writer type %s cannot be read as %s", avro_schema_name(ss),
                    avro_schema_name(ds));

    switch (st) {
    case AVRO_NULL:
        return avro_value_set_null(dst) == 0 ? 0 : fail(c, "%s", avro_strerror());
    case AVRO_BOOLEAN: {
        int b;
        avro_value_get_boolean(src, &b);
        return avro_value_set_boolean(dst, b);
    }
    case AVRO_INT32:
    case AVRO_INT64:
    case AVRO_FLOAT:
    case AVRO_DOUBLE: {
        int64_t l = 0;
        double d = 0;
        if (st == AVRO_INT32) {
            int32_t x = 0;
            avro_value_get_int(src, &x);
            l = x;
            d = x;
        } else if (st == AVRO_INT64) {
            avro_value_get_long(src, &l);
            d = (double)l;
        } else if (st == AVRO_FLOAT) {
            float f = 0;
            avro_value_get_float(src, &f);
            d = f;
        } else {
            avro_value_get_double(src, &d);
        }
        switch (dt) {
        case AVRO_INT32:
            return avro_value_set_int(dst, (int32_t)l);
        case AVRO_INT64:
            return avro_value_set_long(dst, l);
        case AVRO_FLOAT:
            return avro_value_set_float(dst, (float)d);
        default:
            return avro_value_set_double(dst, d);
        }
    }
    case AVRO_STRING:
    case AVRO_BYTES: {
        const void *p = NULL;
        size_t sz = 0;
        if (st == AVRO_STRING) {
            const char *s = NULL;
            avro_value_get_string(src, &s, &sz);
            p = s;
            sz = sz > 0 ? sz - 1 : 0; /* avro-c string sizes count the NUL */
        } else {
            avro_value_get_bytes(src, &p, &sz);
        }
        if (dt == AVRO_STRING) {
            /* set_string_len wants the size with a NUL that bytes lack. */
            char *tmp = malloc(sz + 1);
            int rc;
            if (tmp == NULL)
                return fail(c, "out of memory");
            memcpy(tmp, p, sz);
            tmp[sz] = '\0';
            rc = avro_value_set_string_len(dst, tmp, sz + 1);
            free(tmp);
            return rc;
        }
        return avro_value_set_bytes(dst, (void *)p, sz);
    }
    case AVRO_FIXED: {
        const void *p = NULL;
        size_t sz = 0;
        avro_value_get_fixed(src, &p, &sz);
        if ((int64_t)sz != avro_schema_fixed_size(ds))
            return fail(c, "fixed size differs");
        return avro_value_set_fixed(dst, (void *)p, sz);
    }
    case AVRO_ENUM: {
        int idx = 0, ridx;
        const char *sym;
        avro_value_get_enum(src, &idx);
        sym = avro_schema_enum_get(ss, idx);
        ridx = sym != NULL ? avro_schema_enum_get_by_name(ds, sym) : -1;
        if (ridx < 0) {
            const json_t *jenum = named_find(c->def, ds);
            const char *dflt = json_string_value(json_object_get(jenum, "default"));
            ridx = dflt != NULL ? avro_schema_enum_get_by_name(ds, dflt) : -1;
            if (ridx < 0)
                return fail(c, "symbol '%s' is not in the reader enum", sym ? sym : "?");
        }
        return avro_value_set_enum(dst, ridx);
    }
    case AVRO_ARRAY:
        avro_value_get_size(src, &n);
        for (i = 0; i < n; i++) {
            size_t old = path_push(c, "[%zu]", i);
            if (avro_value_get_by_index(src, i, &sb, NULL) != 0 ||
                avro_value_append(dst, &db, NULL) != 0 || resolve_copy(c, &sb, &db, depth + 1) != 0)
                return -1;
            c->path[old] = '\0';
        }
        return 0;
    case AVRO_MAP:
        avro_value_get_size(src, &n);
        for (i = 0; i < n; i++) {
            const char *key;
            size_t old;
            if (avro_value_get_by_index(src, i, &sb, &key) != 0 ||
                avro_value_add(dst, key, &db, NULL, NULL) != 0)
                return fail(c, "%s", avro_strerror());
            old = path_push(c, "[%s]", key);
            if (resolve_copy(c, &sb, &db, depth + 1) != 0)
                return -1;
            c->path[old] = '\0';
        }
        return 0;
    case AVRO_RECORD:
        n = avro_schema_record_size(ds);
        for (i = 0; i < n; i++) {
            const char *name = avro_schema_record_field_name(ds, (int)i);
            size_t old = path_field(c, name);
            if (avro_value_get_by_index(dst, i, &db, NULL) != 0)
                return fail(c, "%s", avro_strerror());
            if (avro_value_get_by_name(src, name, &sb, NULL) == 0) {
                if (resolve_copy(c, &sb, &db, depth + 1) != 0)
                    return -1;
            } else {
                const json_t *jf = record_field_json(c->def, ds, i);
                const json_t *dflt = json_object_get(jf, "default");
                if (dflt == NULL)
                    return fail(c, "not in the writer schema and has no default");
                if (json_fill(c, dflt, &db, json_object_get(jf, "type")) != 0)
                    return -1;
            }
            c->path[old] = '\0';
        }
        return 0;
    default:
        return fail(c, "unsupported type %s", avro_schema_type_name(ss));
    }
}

/* ---- JSON -> Avro -------------------------------------------------------- */

static const char *json_kind(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    default:
        return "null";
    }
}

static int64_t days_from_civil(int64_t y, int m, int d) {
    /* Howard Hinnant's algorithm: exact for the proleptic Gregorian calendar. */
    int64_t era, yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int digits(const char **s, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if ((*s)[i] < '0' || (*s)[i] > '9')
            return -1;
        v = v * 10 + ((*s)[i] - '0');
    }
    *s += n;
    *out = v;
    return 0;
}

int ts_time_parse_iso(const char *s, int64_t *epoch_ms) {
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec, ms = 0, off = 0;
    int64_t days;

    if (digits(&s, 4, &y) || *s++ != '-' || digits(&s, 2, &mo) || *s++ != '-' ||
        digits(&s, 2, &d) || (*s != 'T' && *s != 't' && *s != ' '))
        return -1;
    s++;
    if (digits(&s, 2, &h) || *s++ != ':' || digits(&s, 2, &mi) || *s++ != ':' ||
        digits(&s, 2, &sec))
        return -1;
    if (*s == '.') {
        int n = 0;
        s++;
        while (*s >= '0' && *s <= '9') {
            if (n < 3)
                ms = ms * 10 + (*s - '0');
            n++;
            s++;
        }
        if (n == 0)
            return -1;
        for (; n < 3; n++)
            ms *= 10;
    }
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        int sign = *s == '-' ? -1 : 1, oh, om;
        s++;
        if (digits(&s, 2, &oh) || *s++ != ':' || digits(&s, 2, &om) || oh > 23 || om > 59)
            return -1;
        off = sign * (oh * 60 + om);
    } else {
        return -1;
    }
    if (*s != '\0' || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 ||
        sec > 60)
        return -1;
    if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return -1;
    days = days_from_civil(y, mo, d);
    *epoch_ms = (((days * 24 + h) * 60 + mi - off) * 60 + sec) * 1000 + ms;
    return 0;
}

static int fill_record(jctx *c, const json_t *j, avro_value_t *v, avro_schema_t schema) {
    const json_t *jrec = named_find(c->def, schema);
    const json_t *jfields = json_object_get(jrec, "fields");
    size_t n = avro_schema_record_size(schema);
    const char *key;
    const json_t *jv;
    size_t i;

    if (!json_is_object(j))
        return fail(c, "expected object (record %s), got %s", avro_schema_name(schema),
                    json_kind(j));
    json_object_foreach((json_t *)j, key, jv) {
        if (avro_schema_record_field_get_index(schema, key) < 0) {
            size_t old = path_field(c, key);
            fail(c, "not in record %s", avro_schema_name(schema));
            c->path[old] = '\0';
            return -1;
        }
    }
    for (i = 0; i < n; i++) {
        const char *name = avro_schema_record_field_name(schema, (int)i);
        const json_t *jf = json_array_get(jfields, i);
        size_t old = path_field(c, name);
        avro_value_t fv;
        if (avro_value_get_by_index(v, i, &fv, NULL) != 0)
            return fail(c, "%s", avro_strerror());
        jv = json_object_get(j, name);
        if (jv == NULL)
            jv = json_object_get(jf, "default");
        if (jv == NULL)
            return fail(c, "required");
        if (json_fill(c, jv, &fv, json_object_get(jf, "type")) != 0)
            return -1;
        c->path[old] = '\0';
    }
    return 0;
}

static int fill_union(jctx *c, const json_t *j, avro_value_t *v, avro_schema_t schema,
                      const json_t *jtype) {
    size_t n = avro_schema_union_size(schema);
    size_t i;
    char first_err[512] = "";
    int tried = 0;
    avro_value_t bv;

    /* null goes to the null branch when there is one. */
    if (json_is_null(j)) {
        for (i = 0; i < n; i++) {
            if (avro_typeof(avro_schema_union_branch(schema, (int)i)) == AVRO_NULL) {
                if (avro_value_set_branch(v, (int)i, &bv) != 0)
                    return fail(c, "%s", avro_strerror());
                return avro_value_set_null(&bv);
            }
        }
    }
    /* Avro's own JSON form {"type name": value}. */
    if (json_is_object(j) && json_object_size(j) == 1) {
        const char *key = json_object_iter_key(json_object_iter((json_t *)j));
        for (i = 0; i < n; i++) {
            avro_schema_t b = unlink_schema(avro_schema_union_branch(schema, (int)i));
            char *full = is_named(avro_typeof(b)) ? schema_fullname(b) : NULL;
            int match = strcmp(key, avro_schema_type_name(b)) == 0 ||
                        (full != NULL && strcmp(key, full) == 0);
            free(full);
            if (match && avro_typeof(b) != AVRO_RECORD) {
                if (avro_value_set_branch(v, (int)i, &bv) != 0)
                    return fail(c, "%s", avro_strerror());
                return json_fill(c, json_object_get(j, key), &bv, json_array_get(jtype, i));
            }
            if (match) {
                /* A record branch: the wrapper form unless the object is
                 * itself the record (one field named like the type). */
                if (avro_schema_record_field_get_index(b, key) < 0) {
                    if (avro_value_set_branch(v, (int)i, &bv) != 0)
                        return fail(c, "%s", avro_strerror());
                    return json_fill(c, json_object_get(j, key), &bv, json_array_get(jtype, i));
                }
            }
        }
    }
    /* Otherwise the first branch that takes the value. */
    for (i = 0; i < n; i++) {
        avro_schema_t b = avro_schema_union_branch(schema, (int)i);
        if (avro_typeof(b) == AVRO_NULL)
            continue;
        size_t old = strlen(c->path);
        if (avro_value_set_branch(v, (int)i, &bv) != 0)
            return fail(c, "%s", avro_strerror());
        if (json_fill(c, j, &bv, json_array_get(jtype, i)) == 0)
            return 0;
        c->path[old] = '\0'; /* a failed try may leave its deeper path behind */
        if (!tried)
            snprintf(first_err, sizeof(first_err), "%s", c->err != NULL ? c->err : "");
        tried++;
    }
    if (tried == 1) {
        seterr(c->err, c->errlen, "%s", first_err);
        return -1;
    }
    return fail(c, "no branch of the union takes a %s", json_kind(j));
}

/* Stores JSON `j` into value `v` (lenient rules of ts_encoder_from_json);
 * `jtype` is the JSON schema node of v's type when known (for logical types). */
static int json_fill(jctx *c, const json_t *j, avro_value_t *v, const json_t *jtype) {
    avro_schema_t schema = unlink_schema(avro_value_get_schema(v));
    avro_type_t t = avro_typeof(schema);
    const char *tn = avro_schema_type_name(schema);

    jtype = jtype_deref(c->def, jtype, schema);
    switch (t) {
    case AVRO_NULL:
        if (!json_is_null(j))
            return fail(c, "expected null, got %s", json_kind(j));
        return avro_value_set_null(v);
    case AVRO_BOOLEAN:
        if (!json_is_boolean(j))
            return fail(c, "expected boolean, got %s", json_kind(j));
        return avro_value_set_boolean(v, json_is_true(j));
    case AVRO_INT32:
        if (!json_is_integer(j))
            return fail(c, "expected int, got %s", json_kind(j));
        if (json_integer_value(j) < INT32_MIN || json_integer_value(j) > INT32_MAX)
            return fail(c, "int out of range");
        return avro_value_set_int(v, (int32_t)json_integer_value(j));
    case AVRO_INT64:
        if (json_is_string(j) && jtype_is_timestamp_ms(jtype)) {
            int64_t ms;
            if (ts_time_parse_iso(json_string_value(j), &ms) != 0)
                return fail(c, "expected ISO-8601 time or epoch milliseconds, got '%s'",
                            json_string_value(j));
            return avro_value_set_long(v, ms);
        }
        if (!json_is_integer(j))
            return fail(c, "expected %s, got %s",
                        jtype_is_timestamp_ms(jtype) ? "timestamp" : "long", json_kind(j));
        return avro_value_set_long(v, (int64_t)json_integer_value(j));
    case AVRO_FLOAT:
    case AVRO_DOUBLE:
        if (!json_is_number(j))
            return fail(c, "expected %s, got %s", tn, json_kind(j));
        return t == AVRO_FLOAT ? avro_value_set_float(v, (float)json_number_value(j))
                               : avro_value_set_double(v, json_number_value(j));
    case AVRO_STRING:
        if (!json_is_string(j))
            return fail(c, "expected string, got %s", json_kind(j));
        return avro_value_set_string_len(v, json_string_value(j), json_string_length(j) + 1);
    case AVRO_BYTES:
        if (!json_is_string(j))
            return fail(c, "expected bytes as a string, got %s", json_kind(j));
        return avro_value_set_bytes(v, (void *)json_string_value(j), json_string_length(j));
    case AVRO_FIXED:
        if (!json_is_string(j) || (int64_t)json_string_length(j) != avro_schema_fixed_size(schema))
            return fail(c, "expected a string of %lld bytes",
                        (long long)avro_schema_fixed_size(schema));
        return avro_value_set_fixed(v, (void *)json_string_value(j), json_string_length(j));
    case AVRO_ENUM: {
        int idx;
        if (!json_is_string(j))
            return fail(c, "expected a symbol of enum %s, got %s", tn, json_kind(j));
        idx = avro_schema_enum_get_by_name(schema, json_string_value(j));
        if (idx < 0)
            return fail(c, "'%s' is not a symbol of enum %s", json_string_value(j), tn);
        return avro_value_set_enum(v, idx);
    }
    case AVRO_ARRAY: {
        size_t i;
        const json_t *jv;
        if (!json_is_array(j))
            return fail(c, "expected array, got %s", json_kind(j));
        avro_value_reset(v);
        json_array_foreach(j, i, jv) {
            avro_value_t ev;
            size_t old = path_push(c, "[%zu]", i);
            if (avro_value_append(v, &ev, NULL) != 0)
                return fail(c, "%s", avro_strerror());
            if (json_fill(c, jv, &ev, json_object_get(jtype, "items")) != 0)
                return -1;
            c->path[old] = '\0';
        }
        return 0;
    }
    case AVRO_MAP: {
        const char *key;
        const json_t *jv;
        if (!json_is_object(j))
            return fail(c, "expected object (map), got %s", json_kind(j));
        avro_value_reset(v);
        json_object_foreach((json_t *)j, key, jv) {
            avro_value_t ev;
            size_t old = path_push(c, "[%s]", key);
            if (avro_value_add(v, key, &ev, NULL, NULL) != 0)
                return fail(c, "%s", avro_strerror());
            if (json_fill(c, jv, &ev, json_object_get(jtype, "values")) != 0)
                return -1;
            c->path[old] = '\0';
        }
        return 0;
    }
    case AVRO_UNION:
        return fill_union(c, j, v, schema, json_is_array(jtype) ? jtype : NULL);
    case AVRO_RECORD:
        return fill_record(c, j, v, schema);
    default:
        return fail(c, "unsupported type %s", tn);
    }
}

/* ---- decoder ------------------------------------------------------------- */

typedef struct plan {
    int32_t id;
    const schema_def *writer;
    int direct;               /* avro-c reads straight into the reader */
    int branch;               /* reader union branch for a direct read, or -1 */
    avro_value_iface_t *wiface; /* resolve: value of the writer schema */
    avro_value_t wvalue;
    UT_hash_handle hh;
} plan;

struct ts_decoder {
    const ts_schemas *schemas;
    const schema_def *reader;
    avro_value_iface_t *iface;
    avro_value_t value;
    int have_value;
    avro_value_t branch; /* the record handed out when the reader is a union */
    avro_reader_t rd;
    plan *plans;
};

static void plan_destroy(plan *p) {
    if (p->wiface != NULL) {
        if (p->wvalue.iface != NULL)
            avro_value_decref(&p->wvalue);
        avro_value_iface_decref(p->wiface);
    }
    free(p);
}

void ts_decoder_destroy(ts_decoder *dec) {
    plan *p, *tmp;
    if (dec == NULL)
        return;
    HASH_ITER(hh, dec->plans, p, tmp) {
        HASH_DEL(dec->plans, p);
        plan_destroy(p);
    }
    if (dec->have_value && dec->value.iface != NULL)
        avro_value_decref(&dec->value);
    if (dec->iface != NULL)
        avro_value_iface_decref(dec->iface);
    if (dec->rd != NULL)
        avro_reader_free(dec->rd);
    free(dec);
}

ts_decoder *ts_decoder_create(const ts_schemas *schemas, const char *subject) {
    ts_decoder *dec = calloc(1, sizeof(*dec));
    if (dec == NULL)
        return NULL;
    dec->schemas = schemas;
    dec->reader = def_latest(schemas, subject);
    if (dec->reader == NULL)
        goto fail;
    dec->iface = avro_generic_class_from_schema(dec->reader->schema);
    if (dec->iface == NULL || avro_generic_value_new(dec->iface, &dec->value) != 0)
        goto fail;
    dec->have_value = 1;
    dec->rd = avro_reader_memory(NULL, 0);
    if (dec->rd == NULL)
        goto fail;
    return dec;
fail:
    ts_decoder_destroy(dec);
    return NULL;
}

static plan *plan_create(ts_decoder *dec, const schema_def *writer) {
    avro_schema_t r = dec->reader->schema;
    avro_schema_t w = writer->schema;
    plan *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->id = writer->id;
    p->writer = writer;
    p->branch = -1;
    if (avro_schema_equal(w, r)) {
        p->direct = 1;
    } else if (avro_typeof(r) == AVRO_UNION && avro_typeof(w) != AVRO_UNION) {
        size_t i;
        for (i = 0; i < avro_schema_union_size(r); i++) {
            if (avro_schema_equal(avro_schema_union_branch(r, (int)i), w)) {
                p->direct = 1;
                p->branch = (int)i;
                break;
            }
        }
    }
    if (!p->direct) {
        p->wiface = avro_generic_class_from_schema(w);
        if (p->wiface == NULL)
            goto fail;
        if (avro_generic_value_new(p->wiface, &p->wvalue) != 0) {
            avro_value_iface_decref(p->wiface);
            p->wiface = NULL;
            goto fail;
        }
    }
    HASH_ADD(hh, dec->plans, id, sizeof(p->id), p);
    return p;
fail:
    plan_destroy(p);
    return NULL;
}

ts_err ts_decoder_decode(ts_decoder *dec, const void *buf, size_t len, avro_value_t **record,
                         const char **type, char *err, size_t errlen) {
    const uint8_t *b = buf;
    int32_t id;
    plan *p = NULL;
    wire w;
    avro_value_t *out = &dec->value;

    if (len == 0 || buf == NULL) {
        seterr(err, errlen, "empty message");
        return TS_E_DECODE;
    }
    /* Refused before parsing: a huge record would be decoded into memory (and
     * its strings copied into views) for an event no producer should send. */
    if (len > TS_AVRO_MAX_MESSAGE) {
        seterr(err, errlen, "message too large (%zu bytes, at most %d)", len,
               TS_AVRO_MAX_MESSAGE);
        return TS_E_DECODE;
    }
    if (b[0] != 0) {
        seterr(err, errlen, "bad magic byte 0x%02x", b[0]);
        return TS_E_DECODE;
    }
    if (len < TS_AVRO_HEADER_LEN) {
        seterr(err, errlen, "truncated header (%zu bytes)", len);
        return TS_E_DECODE;
    }
    id = (int32_t)(((uint32_t)b[1] << 24) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 8) |
                   (uint32_t)b[4]);
    HASH_FIND(hh, dec->plans, &id, sizeof(id), p);
    if (p == NULL) {
        const schema_def *writer = def_by_id(dec->schemas, id);
        if (writer == NULL) {
            seterr(err, errlen, "unknown schema id %d", (int)id);
            return TS_E_DECODE;
        }
        p = plan_create(dec, writer);
        if (p == NULL) {
            seterr(err, errlen, "out of memory");
            return TS_E_NOMEM;
        }
    }

    w.p = b + TS_AVRO_HEADER_LEN;
    w.len = len - TS_AVRO_HEADER_LEN;
    w.pos = 0;
    w.items_left = w.len + 1024;
    w.not_utf8 = 0;
    if (wire_check(&w, p->writer->schema, 0) != 0) {
        seterr(err, errlen, "truncated or invalid Avro for schema id %d%s", (int)id,
               w.not_utf8 ? ": a string is not UTF-8" : "");
        return TS_E_DECODE;
    }
    if (w.pos != w.len) {
        seterr(err, errlen, "trailing bytes after Avro for schema id %d (%zu of %zu used)",
               (int)id, w.pos, w.len);
        return TS_E_DECODE;
    }

    avro_reader_memory_set_source(dec->rd, (const char *)w.p, (int64_t)w.len);
    /* The value is reused from message to message (no allocation per decode);
     * reset it so nothing of the previous message survives. */
    avro_value_reset(&dec->value);
    if (p->direct) {
        avro_value_t target = dec->value;
        if (p->branch >= 0 && avro_value_set_branch(&dec->value, p->branch, &target) != 0)
            goto invalid;
        if (avro_value_read(dec->rd, &target) != 0)
            goto invalid;
    } else {
        char reason[256] = "";
        jctx c = {.def = dec->reader, .err = reason, .errlen = sizeof(reason)};
        avro_value_reset(&p->wvalue);
        if (avro_value_read(dec->rd, &p->wvalue) != 0)
            goto invalid;
        if (resolve_copy(&c, &p->wvalue, &dec->value, 0) != 0) {
            seterr(err, errlen, "schema id %d cannot be read as '%s': %s", (int)id,
                   dec->reader->subject, reason);
            return TS_E_DECODE;
        }
    }

    if (avro_value_get_type(&dec->value) == AVRO_UNION) {
        if (avro_value_get_current_branch(&dec->value, &dec->branch) != 0)
            goto invalid;
        out = &dec->branch;
    }
    *record = out;
    *type = avro_schema_type_name(unlink_schema(avro_value_get_schema(out)));
    return TS_OK;
invalid:
    seterr(err, errlen, "truncated or invalid Avro for schema id %d: %s", (int)id,
           avro_strerror());
    return TS_E_DECODE;
}

/* ---- encoder ------------------------------------------------------------- */

struct ts_encoder {
    const schema_def *def;
    avro_value_iface_t *iface;
    avro_value_t value; /* of the subject's schema (union or record) */
    int have_value;
    avro_value_t rec;   /* the record being filled (value itself, or its branch) */
    int have_rec;
};

void ts_encoder_destroy(ts_encoder *enc) {
    if (enc == NULL)
        return;
    if (enc->have_value)
        avro_value_decref(&enc->value);
    if (enc->iface != NULL)
        avro_value_iface_decref(enc->iface);
    free(enc);
}

ts_encoder *ts_encoder_create(const ts_schemas *schemas, const char *subject) {
    ts_encoder *enc = calloc(1, sizeof(*enc));
    if (enc == NULL)
        return NULL;
    enc->def = def_latest(schemas, subject);
    if (enc->def == NULL)
        goto fail;
    enc->iface = avro_generic_class_from_schema(enc->def->schema);
    if (enc->iface == NULL)
        goto fail;
    return enc;
fail:
    ts_encoder_destroy(enc);
    return NULL;
}

/* Starts a fresh value (so nothing of the previous record survives) and
 * selects the record `name`, with defaults applied. */
static avro_value_t *encoder_start(ts_encoder *enc, const char *name, char *err, size_t errlen) {
    avro_schema_t schema = enc->def->schema;
    avro_schema_t rschema = schema;
    int branch = -1;
    size_t i, n;

    enc->have_rec = 0;
    if (avro_typeof(schema) == AVRO_UNION) {
        for (i = 0; i < avro_schema_union_size(schema); i++) {
            avro_schema_t b = unlink_schema(avro_schema_union_branch(schema, (int)i));
            if (avro_typeof(b) == AVRO_RECORD && strcmp(avro_schema_name(b), name) == 0) {
                branch = (int)i;
                rschema = b;
                break;
            }
        }
        if (branch < 0) {
            seterr(err, errlen, "'%s' is not a record of subject '%s'", name, enc->def->subject);
            return NULL;
        }
    } else if (avro_typeof(schema) != AVRO_RECORD || strcmp(avro_schema_name(schema), name) != 0) {
        seterr(err, errlen, "'%s' is not the record of subject '%s'", name, enc->def->subject);
        return NULL;
    }

    if (enc->have_value) {
        avro_value_decref(&enc->value);
        enc->have_value = 0;
    }
    if (avro_generic_value_new(enc->iface, &enc->value) != 0) {
        seterr(err, errlen, "out of memory");
        return NULL;
    }
    enc->have_value = 1;
    if (branch >= 0) {
        if (avro_value_set_branch(&enc->value, branch, &enc->rec) != 0) {
            seterr(err, errlen, "%s", avro_strerror());
            return NULL;
        }
    } else {
        enc->rec = enc->value;
    }

    /* The record's definition once, not per field: finding a named type
     * formats its full name. */
    const json_t *jrec = named_find(enc->def, rschema);
    const json_t *jfields = jrec != NULL ? json_object_get(jrec, "fields") : NULL;
    n = avro_schema_record_size(rschema);
    for (i = 0; i < n; i++) {
        const json_t *jf = json_array_get(jfields, i);
        const json_t *dflt = json_object_get(jf, "default");
        avro_value_t fv;
        jctx c = {.def = enc->def, .err = err, .errlen = errlen};
        if (dflt == NULL)
            continue;
        path_field(&c, avro_schema_record_field_name(rschema, (int)i));
        if (avro_value_get_by_index(&enc->rec, i, &fv, NULL) != 0 ||
            json_fill(&c, dflt, &fv, json_object_get(jf, "type")) != 0)
            return NULL;
    }
    enc->have_rec = 1;
    return &enc->rec;
}

avro_value_t *ts_encoder_record(ts_encoder *enc, const char *record_name) {
    return encoder_start(enc, record_name, NULL, 0);
}

ts_err ts_encoder_encode(ts_encoder *enc, char **out, size_t *len) {
    size_t size;
    char *buf;
    avro_writer_t wr;
    uint32_t id;

    if (!enc->have_rec)
        return TS_E_INVALID;
    if (avro_value_sizeof(&enc->value, &size) != 0)
        return TS_E_INVALID;
    buf = malloc(size + TS_AVRO_HEADER_LEN);
    if (buf == NULL)
        return TS_E_NOMEM;
    id = (uint32_t)enc->def->id;
    buf[0] = 0;
    buf[1] = (char)(id >> 24);
    buf[2] = (char)(id >> 16);
    buf[3] = (char)(id >> 8);
    buf[4] = (char)id;
    wr = avro_writer_memory(buf + TS_AVRO_HEADER_LEN, (int64_t)size);
    if (wr == NULL) {
        free(buf);
        return TS_E_NOMEM;
    }
    if (avro_value_write(wr, &enc->value) != 0) {
        avro_writer_free(wr);
        free(buf);
        return TS_E_INVALID;
    }
    avro_writer_free(wr);
    *out = buf;
    *len = size + TS_AVRO_HEADER_LEN;
    return TS_OK;
}

ts_err ts_encoder_from_json(ts_encoder *enc, const json_t *event, char **out, size_t *len,
                            char *err, size_t errlen) {
    avro_schema_t schema = enc->def->schema;
    const char *name;
    const json_t *fields = event;
    avro_value_t *rec;
    jctx c = {.def = enc->def, .err = err, .errlen = errlen};
    ts_err rc;

    if (!json_is_object(event)) {
        seterr(err, errlen, "event: expected object, got %s", json_kind(event));
        return TS_E_INVALID;
    }
    if (avro_typeof(schema) == AVRO_UNION) {
        if (json_object_size(event) != 1) {
            seterr(err, errlen, "event: expected {\"<record name>\": {fields}} for subject '%s'",
                   enc->def->subject);
            return TS_E_INVALID;
        }
        name = json_object_iter_key(json_object_iter((json_t *)event));
        fields = json_object_iter_value(json_object_iter((json_t *)event));
        /* Accept the full name too ("tastesync.x.Record"). */
        if (strrchr(name, '.') != NULL)
            name = strrchr(name, '.') + 1;
    } else {
        name = avro_schema_name(schema);
        if (json_object_size(event) == 1 && json_is_object(json_object_get(event, name)) &&
            avro_schema_record_field_get_index(schema, name) < 0)
            fields = json_object_get(event, name);
    }
    rec = encoder_start(enc, name, err, errlen);
    if (rec == NULL)
        return TS_E_INVALID;
    if (fill_record(&c, fields, rec, avro_value_get_schema(rec)) != 0) {
        enc->have_rec = 0;
        return TS_E_INVALID;
    }
    rc = ts_encoder_encode(enc, out, len);
    if (rc == TS_E_INVALID)
        seterr(err, errlen, "event cannot be encoded: %s", avro_strerror());
    return rc;
}

const char *ts_encoder_field_str(ts_encoder *enc, const char *field) {
    avro_value_t fv;
    const char *s = NULL;
    size_t sz;
    if (!enc->have_rec || avro_value_get_by_name(&enc->rec, field, &fv, NULL) != 0)
        return NULL;
    while (avro_value_get_type(&fv) == AVRO_UNION) {
        avro_value_t bv;
        if (avro_value_get_current_branch(&fv, &bv) != 0)
            return NULL;
        fv = bv;
    }
    if (avro_value_get_type(&fv) != AVRO_STRING || avro_value_get_string(&fv, &s, &sz) != 0)
        return NULL;
    return s;
}

const char *ts_encoder_record_name(const ts_encoder *enc) {
    return enc->have_rec ? avro_schema_name(avro_value_get_schema(&enc->rec)) : NULL;
}
