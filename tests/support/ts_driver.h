/* ts_driver.h - the in-memory test driver: a processor without servers.
 *
 * Like Kafka Streams' TopologyTestDriver. The driver holds one processor
 * instance, a context (ts_ctx) over an in-memory state store, and in-memory
 * stand-ins for the sinks: a "Redis" of strings and sorted sets, "tables" of
 * rows by primary key, and the list of emitted events per topic. Each event is
 * encoded from JSON the way a producer would (Confluent framing, the input
 * subject's schema), decoded the way the runtime does, and processed at the
 * next offset of partition 0. After each event (or each batch, see
 * ts_driver_batch_begin) the state writes and effects are applied at once.
 *
 * Schemas come from TS_SOURCE_DIR "/schemas/avro". Output topics are encoded
 * with the subject named like the topic.
 *
 * The driver does not drop redelivered event_ids (the runtime does): sending
 * the same event twice processes it twice.
 *
 * Threading: none; one test thread.
 */
#ifndef TS_DRIVER_H
#define TS_DRIVER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "ts_effects.h"
#include "ts_error.h"
#include "ts_processor.h"

typedef struct ts_driver ts_driver;

/** Creates a driver for `def` with `params_json` (a JSON object as text; NULL
 * = {}) reading topic `input_subject` (also the decoder's subject). @returns
 * NULL on failure, after logging why (bad schemas, unknown subject, bad
 * params, processor create failed). */
ts_driver *ts_driver_create(const ts_processor_def *def, const char *params_json,
                            const char *input_subject);
/** Destroys the processor instance and everything the driver holds; accepts NULL. */
void ts_driver_destroy(ts_driver *d);

/** Makes the message key of each sent event the string field `field` of the
 * event (as the topology's key_field). Without it events have no key. */
void ts_driver_set_key_field(ts_driver *d, const char *field);
/** Sets the Kafka timestamp of the following events (default 1700000000000). */
void ts_driver_set_time(ts_driver *d, int64_t timestamp_ms);

/** Sends one event, `{"BookCreated": {...}}` (see ts_encoder_from_json: optional
 * fields may be omitted, timestamps may be ISO strings). Encodes, decodes,
 * processes it at the next offset and, outside a batch, applies its state
 * writes and effects. @returns the process result: TS_OK or TS_E_REJECT (reason
 * via ts_driver_last_reason); TS_E_INVALID when the JSON cannot be encoded
 * (reason logged and kept as the last reason); TS_E_DECODE when the bytes do not
 * decode; other codes as the processor or context returned them. A failed
 * encode uses no offset; everything else does. */
ts_err ts_driver_send(ts_driver *d, const char *json_event);
/** @returns the reason of the last rejected (or unencodable) event, "" if none;
 * borrowed until the next send. */
/** Sends `{"<type>": {"event_id": "e<n>", <fields>}}`, the fields formatted
 * printf-style, n = ++*counter (a counter the caller owns, so several drivers
 * can replay the same event ids). */
ts_err ts_driver_sendf(ts_driver *d, int *counter, const char *type, const char *fields_fmt, ...)
    __attribute__((format(printf, 4, 5)));

/** Like ts_driver_send, with the message value as framed Avro bytes (as the
 * runtime receives it) and the message key (may be NULL). Undecodable bytes
 * give TS_E_DECODE with the reason in ts_driver_last_reason. */
ts_err ts_driver_send_bytes(ts_driver *d, const char *key, const void *bytes, size_t len);

const char *ts_driver_last_reason(ts_driver *d);
/** @returns the offset the last sent event had (-1 before the first). */
int64_t ts_driver_last_offset(const ts_driver *d);

/** Groups the following sends into one batch: state writes and effects are
 * applied only at ts_driver_batch_commit, as the runtime does (effects coalesce,
 * a rejected event in the middle is undone alone). */
void ts_driver_batch_begin(ts_driver *d);
/** Applies the batch opened by ts_driver_batch_begin. @returns TS_OK, or
 * TS_E_INVALID if an effect could not be applied (e.g. ZADD on a string view). */
ts_err ts_driver_batch_commit(ts_driver *d);

/** The effects of the last applied batch (or of the open batch so far, whose
 * JSON view sets have no value until the commit serializes them);
 * borrowed until the next send or commit. */
const ts_effects *ts_driver_effects(const ts_driver *d);

/* ---- what the sinks would hold ---------------------------------------------- */

/** @returns string view `key` parsed as JSON (new reference), or NULL when absent,
 * not a string view or not JSON. */
json_t *ts_driver_view_json(ts_driver *d, const char *key);
/** @returns string view `key` (borrowed until the next send or commit), or NULL. */
const char *ts_driver_view_str(ts_driver *d, const char *key);
/** @returns the number of views (strings and sorted sets) that exist. */
size_t ts_driver_view_count(ts_driver *d);

/** @returns the number of members of sorted set `key` (0 when absent). */
size_t ts_driver_zset_count(ts_driver *d, const char *key);
/** Reads the score of `member` in sorted set `key`. @returns 0, or -1 when absent. */
int ts_driver_zset_score(ts_driver *d, const char *key, const char *member, double *score);

/** @returns the row of `table` whose key column values, joined by '|' in key
 * order, are `key_values` ("b1" or "b1|2"), as an object of column -> text
 * value or null (new reference); NULL when there is no such row. */
json_t *ts_driver_row(ts_driver *d, const char *table, const char *key_values);
/** @returns the number of rows of `table`. */
size_t ts_driver_row_count(ts_driver *d, const char *table);

/** @returns the number of events emitted to `topic`. */
size_t ts_driver_emitted(ts_driver *d, const char *topic);
/** Decodes the `i`-th event emitted to `topic` (0 = first). @returns a new
 * object {"key": key or null, "type": record name, "value": {fields}}, or NULL
 * when there is no such event or it does not decode. */
json_t *ts_driver_emitted_json(ts_driver *d, const char *topic, size_t i);

/* ---- state --------------------------------------------------------------------- */

/** @returns the durable value of `key` in `store` as JSON (new reference), or NULL. */
json_t *ts_driver_state_json(ts_driver *d, const char *store, const char *key);
/** @returns the number of durable state keys (all stores). */
size_t ts_driver_state_count(const ts_driver *d);

#endif
