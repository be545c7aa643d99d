/* ts_schemas.c - the schema registry file (see ts_avro.h).
 *
 * <dir>/ids.yaml lists {id, subject, version, file}; each file is parsed
 * twice, by avro-c (the schema used for reading and writing) and by jansson
 * (kept for what avro-c drops: field defaults and logical types). Named types
 * of each file are indexed by full name so a record's JSON definition is one
 * hash lookup away.
 */
#include "ts_avro_int.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

void ts_avro_seterr(char *err, size_t errlen, const char *fmt, ...) {
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
char *ts_avro_fullname(avro_schema_t schema) {
    return fullname_of(avro_schema_namespace(schema), avro_schema_name(schema));
}

static int named_add(ts_schema_def *def, const char *ns, const char *name, const json_t *node) {
    ts_named_def *nd = calloc(1, sizeof(*nd));
    ts_named_def *old;
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
static int named_walk(ts_schema_def *def, const json_t *node, const char *ns) {
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

const json_t *ts_schemas_named(const ts_schema_def *def, avro_schema_t schema) {
    ts_named_def *nd = NULL;
    char *full = ts_avro_fullname(schema);
    if (full == NULL)
        return NULL;
    HASH_FIND_STR(def->named, full, nd);
    free(full);
    return nd != NULL ? nd->node : NULL;
}

/* JSON type node of a field/branch resolved to its definition when it names
 * a type; NULL-safe. */
const json_t *ts_avro_jtype_deref(const ts_schema_def *def, const json_t *jtype,
                                  avro_schema_t schema) {
    if (jtype == NULL || json_is_string(jtype)) {
        avro_type_t t = avro_typeof(schema);
        if (t == AVRO_RECORD || t == AVRO_ENUM || t == AVRO_FIXED)
            return ts_schemas_named(def, schema);
    }
    if (json_is_object(jtype) && json_is_object(json_object_get(jtype, "type")))
        return json_object_get(jtype, "type");
    return jtype;
}

int ts_avro_jtype_is_timestamp_ms(const json_t *jtype) {
    const char *lt;
    if (!json_is_object(jtype))
        return 0;
    lt = json_string_value(json_object_get(jtype, "logicalType"));
    return lt != NULL && strcmp(lt, "timestamp-millis") == 0;
}

static void def_close(ts_schema_def *def) {
    ts_named_def *nd, *tmp;
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

const ts_schema_def *ts_schemas_def_by_id(const ts_schemas *schemas, int32_t id) {
    size_t i;
    for (i = 0; i < schemas->count; i++) {
        if (schemas->defs[i].id == id)
            return &schemas->defs[i];
    }
    return NULL;
}

const ts_schema_def *ts_schemas_def_latest(const ts_schemas *schemas, const char *subject) {
    const ts_schema_def *best = NULL;
    size_t i;
    for (i = 0; i < schemas->count; i++) {
        const ts_schema_def *def = &schemas->defs[i];
        if (strcmp(def->subject, subject) == 0 && (best == NULL || def->version > best->version))
            best = def;
    }
    return best;
}

avro_schema_t ts_schemas_latest(const ts_schemas *schemas, const char *subject, int32_t *id) {
    const ts_schema_def *def = ts_schemas_def_latest(schemas, subject);
    if (def == NULL)
        return NULL;
    if (id != NULL)
        *id = def->id;
    return def->schema;
}

avro_schema_t ts_schemas_by_id(const ts_schemas *schemas, int32_t id) {
    const ts_schema_def *def = ts_schemas_def_by_id(schemas, id);
    return def != NULL ? def->schema : NULL;
}

size_t ts_schemas_count(const ts_schemas *schemas) {
    return schemas->count;
}

/* Reads and parses one .avsc file into def (schema, json, named index). */
static ts_err def_load_file(ts_schema_def *def, const char *dir, char *err, size_t errlen) {
    char *path = NULL;
    json_error_t jerr;
    char *text = NULL;
    ts_err rc = TS_E_CONFIG;

    if (asprintf(&path, "%s/%s", dir, def->file) < 0)
        return TS_E_NOMEM;
    def->json = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (def->json == NULL) {
        ts_avro_seterr(err, errlen, "%s:%d: %s", path, jerr.line, jerr.text);
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
        ts_avro_seterr(err, errlen, "%s:1: unparsable schema: %s", path, avro_strerror());
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
                          ts_schema_def *def, char *err, size_t errlen) {
    yaml_node_pair_t *pair;
    int line = (int)item->start_mark.line + 1;
    long v;
    int have_id = 0;

    if (item->type != YAML_MAPPING_NODE) {
        ts_avro_seterr(err, errlen,
                       "%s:%d: an entry must be a mapping {id, subject, version, file}", ypath,
                       line);
        return TS_E_CONFIG;
    }
    for (pair = item->data.mapping.pairs.start; pair < item->data.mapping.pairs.top; pair++) {
        yaml_node_t *knode = yaml_document_get_node(doc, pair->key);
        yaml_node_t *vnode = yaml_document_get_node(doc, pair->value);
        const char *key = yscalar(knode);
        const char *val = yscalar(vnode);
        int vline = (int)(vnode != NULL ? vnode->start_mark.line : knode->start_mark.line) + 1;
        if (key == NULL || val == NULL) {
            ts_avro_seterr(err, errlen, "%s:%d: keys and values must be scalars", ypath, vline);
            return TS_E_CONFIG;
        }
        if (strcmp(key, "id") == 0) {
            if (parse_int(val, 1, INT32_MAX, &v) != 0) {
                ts_avro_seterr(err, errlen, "%s:%d: id must be an integer from 1 to %d, got '%s'",
                               ypath, vline, INT32_MAX, val);
                return TS_E_CONFIG;
            }
            def->id = (int32_t)v;
            have_id = 1;
        } else if (strcmp(key, "version") == 0) {
            if (parse_int(val, 1, INT_MAX, &v) != 0) {
                ts_avro_seterr(err, errlen, "%s:%d: version must be a positive integer, got '%s'",
                               ypath, vline, val);
                return TS_E_CONFIG;
            }
            def->version = (int)v;
        } else if (strcmp(key, "subject") == 0 || strcmp(key, "file") == 0) {
            char **dst = key[0] == 's' ? &def->subject : &def->file;
            if (val[0] == '\0' || *dst != NULL) {
                ts_avro_seterr(err, errlen, "%s:%d: empty or repeated '%s'", ypath, vline, key);
                return TS_E_CONFIG;
            }
            if (key[0] == 'f' && (val[0] == '/' || strstr(val, "..") != NULL)) {
                ts_avro_seterr(err, errlen, "%s:%d: file must be a path inside the schema folder",
                               ypath, vline);
                return TS_E_CONFIG;
            }
            *dst = strdup(val);
            if (*dst == NULL)
                return TS_E_NOMEM;
        } else {
            ts_avro_seterr(err, errlen,
                           "%s:%d: unknown key '%s' (expected id, subject, version, file)", ypath,
                           vline, key);
            return TS_E_CONFIG;
        }
    }
    if (!have_id || def->subject == NULL || def->version == 0 || def->file == NULL) {
        ts_avro_seterr(err, errlen, "%s:%d: an entry needs id, subject, version and file", ypath,
                       line);
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
        ts_avro_seterr(err, errlen, "%s: %s", ypath, strerror(errno));
        return TS_E_CONFIG;
    }
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        return TS_E_NOMEM;
    }
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        ts_avro_seterr(err, errlen, "%s:%d: %s", ypath, (int)parser.problem_mark.line + 1,
                       parser.problem != NULL ? parser.problem : "invalid YAML");
        yaml_parser_delete(&parser);
        fclose(f);
        return TS_E_CONFIG;
    }
    root = yaml_document_get_root_node(&doc);
    if (root == NULL || root->type != YAML_MAPPING_NODE) {
        ts_avro_seterr(err, errlen, "%s:%d: expected a mapping with key 'schemas'", ypath,
                       root != NULL ? (int)root->start_mark.line + 1 : 1);
        goto out;
    }
    for (pair = root->data.mapping.pairs.start; pair < root->data.mapping.pairs.top; pair++) {
        yaml_node_t *knode = yaml_document_get_node(&doc, pair->key);
        const char *key = yscalar(knode);
        if (key != NULL && strcmp(key, "schemas") == 0) {
            seq = yaml_document_get_node(&doc, pair->value);
        } else {
            ts_avro_seterr(err, errlen, "%s:%d: unknown key '%s' (expected 'schemas')", ypath,
                           (int)knode->start_mark.line + 1, key != NULL ? key : "?");
            goto out;
        }
    }
    if (seq == NULL || seq->type != YAML_SEQUENCE_NODE) {
        ts_avro_seterr(err, errlen, "%s:%d: 'schemas' must be a list", ypath,
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
        ts_schema_def *def = &s->defs[s->count++];
        int line = (int)item->start_mark.line + 1;
        size_t j;
        rc = parse_entry(&doc, item, ypath, def, err, errlen);
        if (rc != TS_OK)
            goto out;
        for (j = 0; j + 1 < s->count; j++) {
            if (s->defs[j].id == def->id) {
                ts_avro_seterr(err, errlen, "%s:%d: duplicate id %d", ypath, line, (int)def->id);
                rc = TS_E_CONFIG;
                goto out;
            }
            if (s->defs[j].version == def->version &&
                strcmp(s->defs[j].subject, def->subject) == 0) {
                ts_avro_seterr(err, errlen, "%s:%d: duplicate version %d of subject '%s'", ypath,
                               line, def->version, def->subject);
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

avro_schema_t ts_avro_unlink(avro_schema_t s) {
    while (s != NULL && avro_typeof(s) == AVRO_LINK)
        s = avro_schema_link_target(s);
    return s;
}

int ts_avro_is_named(avro_type_t t) {
    return t == AVRO_RECORD || t == AVRO_ENUM || t == AVRO_FIXED;
}
