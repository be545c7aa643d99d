/* ts_avro_int.h - what the Avro files share and no one else sees:
 * ts_schemas.c (the schema registry), ts_decoder.c (framed records into
 * reader values, with schema resolution) and ts_encoder.c (values and JSON
 * into framed records). The API is ts_avro.h.
 *
 * Threading: as ts_avro.h.
 */
#ifndef TS_AVRO_INT_H
#define TS_AVRO_INT_H

#include <avro.h>
#include <jansson.h>
#include <stdint.h>
#include <uthash.h>

#include "ts_avro.h"

typedef struct ts_named_def {
    char *fullname;
    const json_t *node; /* borrowed from the def's json */
    UT_hash_handle hh;
} ts_named_def;

typedef struct ts_schema_def {
    int32_t id;
    int version;
    char *subject;
    char *file;
    avro_schema_t schema;
    json_t *json;
    ts_named_def *named; /* full name -> JSON definition */
} ts_schema_def;

struct ts_schemas {
    ts_schema_def *defs;
    size_t count;
};

/* A conversion between JSON and Avro values (and schema resolution, which
 * fills reader fields from their JSON defaults): the target schema's
 * definitions, where errors go, and the path of the field being converted. */
typedef struct ts_avro_jctx {
    const ts_schema_def *def; /* the reader/target schema's definitions */
    char *err;
    size_t errlen;
    char path[256];
} ts_avro_jctx;

/* ---- ts_schemas.c ----------------------------------------------------------- */

/** Formats into `err` (NULL or errlen 0: nothing). */
void ts_avro_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** Full name of an avro-c named schema (record, enum, fixed); caller frees. */
char *ts_avro_fullname(avro_schema_t schema);
/** The JSON definition of named schema `schema` in `def`, or NULL. */
const json_t *ts_schemas_named(const ts_schema_def *def, avro_schema_t schema);
/** `jtype` with a reference to a named type replaced by its definition. */
const json_t *ts_avro_jtype_deref(const ts_schema_def *def, const json_t *jtype,
                                  avro_schema_t schema);
/** Whether JSON type `jtype` is a long with logicalType timestamp-millis. */
int ts_avro_jtype_is_timestamp_ms(const json_t *jtype);
/** The schema registered under `id`, or NULL. */
const ts_schema_def *ts_schemas_def_by_id(const ts_schemas *schemas, int32_t id);
/** The latest version of `subject`, or NULL. */
const ts_schema_def *ts_schemas_def_latest(const ts_schemas *schemas, const char *subject);
/** `s` with links followed. */
avro_schema_t ts_avro_unlink(avro_schema_t s);
/** Whether values of type `t` have a name (record, enum, fixed). */
int ts_avro_is_named(avro_type_t t);

/* ---- ts_encoder.c ----------------------------------------------------------- */

/** Appends a path component; @returns the old length to restore. */
size_t ts_avro_path_push(ts_avro_jctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/** Appends field `name` to the path; @returns the old length to restore. */
size_t ts_avro_path_field(ts_avro_jctx *c, const char *name);
/** Sets the conversion's error, prefixed with the path. @returns -1. */
int ts_avro_fail(ts_avro_jctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Fills `v` from JSON `j`, of JSON schema type `jtype` (ts_avro.h's
 * lenient rules). @returns 0, or -1 with the error set. */
int ts_avro_json_fill(ts_avro_jctx *c, const json_t *j, avro_value_t *v, const json_t *jtype);

#endif
