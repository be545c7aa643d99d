/* ts_model.h - an independent model of the contract, for whole-stream tests.
 *
 * Three parts, usable apart (issue 4's chaos test reuses them):
 * - a generator: a realistic mixed stream of all four families, in the JSON
 *   event form of ts_encoder_from_json ({"BookCreated": {...}}), from a fixed
 *   seed (own PRNG, so the same seed gives the same stream everywhere);
 * - the model: the rules of CONTRACT.md (and, where it is silent, the choices
 *   documented in processors/<family>/README.md), written from the spec and not
 *   from the processors' code. It gives the expected final views, rows, DLQ
 *   event ids and output events of one clean pass;
 * - readers of what the real sinks hold (Redis, PostgreSQL, Kafka topics) and a
 *   comparison that reports differences.
 *
 * The expected state is a JSON document (see ts_model_expected), so a test can
 * print or save it. Everything blocks; one test thread.
 */
#ifndef TS_MODEL_H
#define TS_MODEL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <librdkafka/rdkafka.h>

#include "ts_topology.h"

/* Families, as a bit set. */
#define TS_MODEL_STORYBOOK 0x1u
#define TS_MODEL_USER 0x2u
#define TS_MODEL_INVENTORY 0x4u
#define TS_MODEL_BEACON 0x8u
#define TS_MODEL_ALL 0xfu

/** One input event of a generated stream. */
typedef struct ts_model_event {
    const char *topic; /* static string: the input topic */
    char *key;         /* the partition key (owned) */
    char *event_id;    /* owned */
    json_t *json;      /* {"<Record>": {fields}} (owned reference) */
} ts_model_event;

typedef struct ts_model_stream {
    ts_model_event *ev;
    size_t n;
} ts_model_stream;

/** Generates `n` events of the families in `families` from `seed`. Event times
 * grow with the position (about 2.6 s per event, so 100k events span three UTC
 * days) with up to 13 s of jitter, and are unique. About 1% of the events are
 * exact redeliveries of earlier ones. @returns a new stream (never NULL). */
ts_model_stream *ts_model_stream_generate(uint64_t seed, size_t n, unsigned families);
/** Frees the stream; accepts NULL. */
void ts_model_stream_destroy(ts_model_stream *s);

typedef struct ts_model ts_model;

/** Creates an empty model of `families`, with the processors' params (option
 * lists, min_confidence, presence_ttl) from `topo` (borrowed during the call).
 * @returns NULL when the params are unusable (reason on stderr). */
ts_model *ts_model_create(const ts_topology *topo, unsigned families);
/** Frees the model; accepts NULL. */
void ts_model_destroy(ts_model *m);

/** Applies one input event (in the order of its partition key; events of
 * different keys may come in any order). */
void ts_model_apply(ts_model *m, const ts_model_event *ev);
/** Applies every event of `s` in order. */
void ts_model_apply_stream(ts_model *m, const ts_model_stream *s);

/** The expected final state, borrowed from the model (valid until the next
 * apply or destroy):
 * {"views":   {key: {"kind": "json"|"str"|"zset", "value": doc | text |
 *                    {member: score}, "vmin": event_id or absent,
 *                    "vtopic": topic, "vkey": partition key, "vfixed": n}},
 *  "rows":    {table: {primary key: {column: value}}},
 *  "dlq":     {input topic: {event_id: reason}},
 *  "outputs": {topic: {event_id: {"type": record, "key": key, "value": {...}}}}}
 * A JSON view's "value" has no "version": the actual one must be the offset of
 * an event of partition key `vkey` in `vtopic` at or after the event `vmin`
 * (or exactly `vfixed`; or only >= 0 when neither is known). The string "$any"
 * as an expected value matches anything. */
const json_t *ts_model_expected(ts_model *m);

/* ---- what the sinks hold ------------------------------------------------------- */

/** Reads every Redis key: {key: {"kind": ..., "value": ...}} like the views of
 * ts_model_expected (JSON strings parsed when they parse; zset members as
 * text). @returns a new object, or NULL with a reason in err. */
json_t *ts_model_read_redis(const char *url, char *err, size_t errlen);
/** Reads every row of the tables named in `expected`'s "rows" (times in UTC).
 * @returns a new object {table: [row, ...]}, or NULL with a reason in err. */
json_t *ts_model_read_pg(const char *conninfo, const json_t *expected, char *err,
                         size_t errlen);

/** Decodes `n` records read from a topic whose values have schema `subject`
 * (for a DLQ: the input topic) with the schemas of `schemas_dir`. @returns a
 * new array of {"key", "type", "value" (null when it does not decode),
 * "partition", "offset"}. */
json_t *ts_model_decode_records(const char *schemas_dir, const char *subject,
                                rd_kafka_message_t *const *msgs, size_t n);

/** What ts_model_compare looked at. */
typedef struct ts_model_counts {
    size_t views, rows, outputs, dlq, differences;
} ts_model_counts;

/** Compares `expected` (ts_model_expected) with what the sinks hold:
 * `redis` (ts_model_read_redis), `pg` (ts_model_read_pg), `topics` (topic ->
 * array of decoded records {"key", "type", "value", "partition", "offset"}:
 * the output topics, the DLQ topics as "<topic>.dlq" and the input topics,
 * whose offsets give the views' versions). Views of families the model does
 * not cover are ignored when their key starts with a prefix in `ignore` (NULL
 * terminated, may be NULL). Prints the first `max_report` differences to
 * `out`. @returns the number of differences (also in counts). */
size_t ts_model_compare(const json_t *expected, const json_t *redis, const json_t *pg,
                        const json_t *topics, const char *const *ignore, FILE *out,
                        size_t max_report, ts_model_counts *counts);

#endif
