/* ts_topology_json.c - YAML to JSON, for the `params` of a processor
 * (ts_topology_int.h).
 *
 * A node of the loaded document and everything under it become a jansson
 * value: mappings objects, sequences arrays, and scalars by the YAML core
 * schema: only unquoted scalars can be null, booleans, integers (decimal,
 * 0x hex, 0o octal) or decimal floats; anything else, and every quoted
 * scalar, stays a string. Out-of-range numbers, duplicate keys, too deep
 * nesting and too many values fail the load with the node's line.
 */
#include "ts_topology_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Nesting of `params` beyond this is refused: YAML aliases can point back at
 * an enclosing node, and a cycle would otherwise recurse forever. */
#define TS_TOPO_MAX_DEPTH 32
/* Aliases can also multiply a small file into a huge tree ("billion laughs");
 * converting more nodes than this in `params` is refused. */
#define TS_TOPO_MAX_PARAM_NODES 100000

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
json_t *ts_topo_to_json(ts_topo_loader *ld, yaml_node_t *node, int depth) {
    if (depth > TS_TOPO_MAX_DEPTH) {
        ts_topo_fail(ld, ts_topo_line(node), "params nested deeper than %d levels",
                     TS_TOPO_MAX_DEPTH);
        return NULL;
    }
    if (++ld->param_nodes > TS_TOPO_MAX_PARAM_NODES) {
        ts_topo_fail(ld, ts_topo_line(node), "params hold more than %d values",
                     TS_TOPO_MAX_PARAM_NODES);
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
        for (yaml_node_item_t *it = node->data.sequence.items.start;
             out && it < node->data.sequence.items.top; it++) {
            json_t *v = ts_topo_to_json(ld, yaml_document_get_node(ld->doc, *it), depth + 1);
            if (!v || json_array_append_new(out, v)) {
                json_decref(out);
                out = NULL;
            }
        }
        break;
    case YAML_MAPPING_NODE:
        out = json_object();
        for (yaml_node_pair_t *p = node->data.mapping.pairs.start;
             out && p < node->data.mapping.pairs.top; p++) {
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
