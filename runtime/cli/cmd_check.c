/* cmd_check.c - `tastesync check-config [topology.yaml]`: everything `run`
 * would refuse at start, found without starting anything.
 *
 * Loads the topology (the loader reports "file:line: problem"), loads every
 * schema of ids.yaml, then checks what spans the files: each topic's schema
 * subject is known and every record it can carry has the topic's key field
 * as a string, and each processor is built in and accepts its params (its
 * create() is called and the instance destroyed at once; processors do no
 * I/O, so this has no effect anywhere). Errors name the topology line.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ts_avro.h"

/* @returns 1 when `field` of `record` is a string or an optional string. */
static int ts_check_string_field(avro_schema_t record, const char *field) {
    avro_schema_t f = avro_schema_record_field_get(record, field);
    if (!f)
        return 0;
    if (is_avro_string(f))
        return 1;
    if (!is_avro_union(f))
        return 0;
    for (size_t i = 0; i < avro_schema_union_size(f); i++) {
        avro_schema_t branch = avro_schema_union_branch(f, (int)i);
        if (!is_avro_null(branch) && !is_avro_string(branch))
            return 0;
    }
    return 1;
}

/* Checks one topic; on a problem writes it to err and returns -1. */
static int ts_check_topic(const ts_topology *topo, const ts_schemas *schemas,
                          const ts_topic_conf *tc, char *err, size_t errlen) {
    if (!tc->schema)
        return 0;
    avro_schema_t schema = ts_schemas_latest(schemas, tc->schema, NULL);
    if (!schema) {
        snprintf(err, errlen, "%s:%d: topic %s: schema subject '%s' is not in %s/ids.yaml",
                 topo->path, tc->line, tc->name, tc->schema, topo->schemas_dir);
        return -1;
    }
    if (!tc->key_field)
        return 0;
    size_t n = is_avro_union(schema) ? avro_schema_union_size(schema) : 1;
    for (size_t i = 0; i < n; i++) {
        avro_schema_t rec = is_avro_union(schema) ? avro_schema_union_branch(schema, (int)i)
                                                  : schema;
        if (!is_avro_record(rec) || !ts_check_string_field(rec, tc->key_field)) {
            snprintf(err, errlen,
                     "%s:%d: topic %s: key '%s' is not a string field of record %s of schema '%s'",
                     topo->path, tc->line, tc->name, tc->key_field,
                     is_avro_record(rec) ? avro_schema_name(rec) : "(not a record)", tc->schema);
            return -1;
        }
    }
    return 0;
}

/* Checks one processor; on a problem writes it to err and returns -1. */
static int ts_check_processor(const ts_topology *topo, const ts_processor_conf *pc, char *err,
                              size_t errlen) {
    const ts_processor_def *def = ts_processor_find(ts_processor_registry, pc->name);
    if (!def) {
        size_t len = (size_t)snprintf(err, errlen, "%s:%d: no built-in processor '%s' (known:",
                                      topo->path, pc->line, pc->name);
        for (size_t i = 0; ts_processor_registry[i] && len < errlen; i++)
            len += (size_t)snprintf(err + len, errlen - len, " %s", ts_processor_registry[i]->name);
        if (len < errlen)
            snprintf(err + len, errlen - len, ")");
        return -1;
    }
    char why[512] = "";
    void *self = def->create(pc->params, why, sizeof(why));
    if (!self) {
        snprintf(err, errlen, "%s:%d: processor %s: params: %s", topo->path, pc->line, pc->name,
                 why[0] ? why : "refused");
        return -1;
    }
    def->destroy(self);
    return 0;
}

int ts_cli_check(int argc, char **argv) {
    if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
        int help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0;
        fprintf(help ? stdout : stderr,
                "usage: tastesync check-config [topology.yaml]\n\n"
                "Validates the topology (default ./topology.yaml) without starting anything:\n"
                "its keys and values, the schemas of ids.yaml, each topic's schema and key\n"
                "field, and that every processor exists and accepts its params. Prints OK,\n"
                "or the first problem as file:line: problem.\n\n"
                "exit codes: 0 valid, 2 invalid\n");
        return help ? TS_CLI_EXIT_OK : TS_CLI_EXIT_USAGE;
    }
    ts_topology *topo = ts_cli_load_topology(argc == 2 ? argv[1] : NULL);
    if (!topo)
        return TS_CLI_EXIT_USAGE;
    ts_schemas *schemas = NULL;
    char err[2048];
    int ok = ts_schemas_load(topo->schemas_dir, &schemas, err, sizeof(err)) == TS_OK;
    for (size_t i = 0; ok && i < topo->n_topics; i++)
        ok = ts_check_topic(topo, schemas, &topo->topics[i], err, sizeof(err)) == 0;
    for (size_t i = 0; ok && i < topo->n_processors; i++)
        ok = ts_check_processor(topo, &topo->processors[i], err, sizeof(err)) == 0;
    if (ok)
        printf("OK %s: %zu topics, %zu processors, %zu schemas\n", topo->path, topo->n_topics,
               topo->n_processors, ts_schemas_count(schemas));
    else
        fprintf(stderr, "tastesync: %s\n", err);
    ts_schemas_destroy(schemas);
    ts_topology_destroy(topo);
    return ok ? TS_CLI_EXIT_OK : TS_CLI_EXIT_USAGE;
}
