/* ts_avro.h - Avro schemas, and the Confluent wire format in both directions.
 *
 * Every message value is framed as byte 0 = 0x00, bytes 1-4 = the writer
 * schema id (big-endian int32), then Avro binary. Ids are assigned in one file,
 * <schema dir>/ids.yaml (see schemas/avro/README.md).
 *
 *   ts_schemas  every schema of ids.yaml, by id and by subject (immutable once
 *               loaded, so it may be shared read-only between threads).
 *   ts_decoder  framed bytes -> a record of one reader subject, resolving any
 *               older or narrower writer schema (Avro schema resolution,
 *               defaults included).
 *   ts_encoder  a record (filled by hand or from JSON) -> framed bytes.
 *
 * Decoders and encoders are not thread-safe; use one per thread (or task).
 * They borrow the ts_schemas they were made from, which must outlive them.
 *
 * One file each: ts_schemas.c, ts_decoder.c, ts_encoder.c (with the JSON
 * conversion both use: defaults in resolution); what they share is in
 * ts_avro_int.h.
 */
#ifndef TS_AVRO_H
#define TS_AVRO_H

#include <avro.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "ts_error.h"

/** Size of the Confluent frame header (magic byte + schema id). */
#define TS_AVRO_HEADER_LEN 5
/* The largest message ts_decoder_decode accepts. No event of the contract
 * comes near it; a bigger one is refused before any parsing ("message too
 * large") so one record can never make a task allocate without bound, and its
 * DLQ copy (the message plus a few headers) stays under librdkafka's default
 * message.max.bytes of 1,000,000. */
#define TS_AVRO_MAX_MESSAGE (512 * 1024)

/* ---- schemas ----------------------------------------------------------- */

typedef struct ts_schemas ts_schemas;

/** Loads <dir>/ids.yaml and every .avsc file it names.
 * @returns TS_OK and a new set in *out (free with ts_schemas_destroy), or
 * TS_E_CONFIG with "file:line: problem" (line where known) in err for a
 * missing or malformed file, a duplicate id or subject version, or a schema
 * that does not parse. TS_E_NOMEM on allocation failure. */
ts_err ts_schemas_load(const char *dir, ts_schemas **out, char *err, size_t errlen);

/** Frees the set and every schema in it. Accepts NULL. */
void ts_schemas_destroy(ts_schemas *schemas);

/** @returns the latest (highest) version of `subject`, borrowed from the set,
 * or NULL if the subject is unknown. When `id` is not NULL it receives that
 * version's schema id. */
avro_schema_t ts_schemas_latest(const ts_schemas *schemas, const char *subject, int32_t *id);

/** @returns the schema with id `id`, borrowed from the set, or NULL. */
avro_schema_t ts_schemas_by_id(const ts_schemas *schemas, int32_t id);

/** @returns the number of schemas in the set. */
size_t ts_schemas_count(const ts_schemas *schemas);

/* ---- decoding ---------------------------------------------------------- */

typedef struct ts_decoder ts_decoder;

/** Creates a decoder to the latest version of `subject` (the reader schema).
 * @returns NULL if the subject is unknown or memory runs out. */
ts_decoder *ts_decoder_create(const ts_schemas *schemas, const char *subject);

/** Frees the decoder and its cached resolvers. Accepts NULL. */
void ts_decoder_destroy(ts_decoder *dec);

/** Decodes one framed message of `len` bytes.
 * On success returns TS_OK, *record is the decoded record (the union branch
 * already taken when the reader is a union) and *type its name without
 * namespace; both are owned by the decoder and valid until the next decode or
 * destroy. On failure returns TS_E_DECODE with a readable reason in err
 * ("empty message", "message too large (N bytes, at most 524288)", "bad
 * magic byte 0x7b", "unknown schema id 99", "truncated or invalid Avro for
 * schema id 2", "trailing bytes after Avro for schema id 2", ...). Any input
 * is safe: the bytes are checked against the writer schema before avro-c
 * reads them. One resolver per writer id is cached. */
ts_err ts_decoder_decode(ts_decoder *dec, const void *buf, size_t len, avro_value_t **record,
                         const char **type, char *err, size_t errlen);

/* ---- encoding ---------------------------------------------------------- */

typedef struct ts_encoder ts_encoder;

/** Creates an encoder for the latest version of `subject` (a union of
 * records or a single record). @returns NULL if unknown or out of memory. */
ts_encoder *ts_encoder_create(const ts_schemas *schemas, const char *subject);

/** Frees the encoder. Accepts NULL. */
void ts_encoder_destroy(ts_encoder *enc);

/** @returns an empty record of the branch named `record_name` (short name) to
 * fill, with every field that has a default already set to it (so optional
 * fields start as null). Owned by the encoder and reset by the next call to
 * ts_encoder_record or ts_encoder_from_json. NULL if the subject has no such
 * record. */
avro_value_t *ts_encoder_record(ts_encoder *enc, const char *record_name);

/** Encodes the record last returned by ts_encoder_record, framed with the
 * subject's latest id. *out is malloc'ed (caller frees), *len its size.
 * @returns TS_OK, TS_E_INVALID if no record was started or a field was left
 * unset, TS_E_NOMEM. */
ts_err ts_encoder_encode(ts_encoder *enc, char **out, size_t *len);

/** Encodes a JSON event, e.g. {"BookCreated": {...fields}} (the union branch
 * name; a single-record subject also accepts the bare fields object).
 * Lenient where Avro JSON is strict: optional fields take the plain value or
 * null, and fields with a default may be omitted; timestamp-millis fields take
 * an integer or an ISO-8601 string ("2026-11-21T10:00:00Z", optional fraction,
 * "Z" or "+hh:mm"); enums take the symbol; arrays and maps are JSON arrays and
 * objects; bytes and fixed are strings. Unknown fields are an error.
 * @returns TS_OK with *out malloc'ed (caller frees), or TS_E_INVALID with a
 * reason naming the field in err ("field 'page_no': expected int, got string").
 * The encoded record stays readable through ts_encoder_field_str. `event` is
 * borrowed. */
ts_err ts_encoder_from_json(ts_encoder *enc, const json_t *event, char **out, size_t *len,
                            char *err, size_t errlen);

/** @returns the string field `field` (optional fields: when set) of the record
 * last started or encoded, borrowed until the next record; NULL if there is no
 * such string. */
const char *ts_encoder_field_str(ts_encoder *enc, const char *field);

/** @returns the short name of the record last started or encoded, or NULL. */
const char *ts_encoder_record_name(const ts_encoder *enc);

/* ---- helpers ----------------------------------------------------------- */

/** Parses an ISO-8601 UTC time "YYYY-MM-DDTHH:MM:SS[.fff][Z|+hh:mm|-hh:mm]"
 * (a space is accepted for 'T') into epoch milliseconds.
 * @returns 0, or -1 if `s` is not such a time. */
int ts_time_parse_iso(const char *s, int64_t *epoch_ms);

/** Converts any Avro value to JSON: records and maps to objects, arrays to
 * arrays, unions to the branch's value, null to json null, enums to their
 * symbol, bytes and fixed to strings. @returns a new reference, or NULL when
 * out of memory. Defined in ts_event.c. */
json_t *ts_avro_to_json(const avro_value_t *value);

#endif
