/* ts_sample.h - producing JSON-lines events to Kafka, as a producer would.
 *
 * Each line of a sample file is one event in Avro JSON form, e.g.
 * {"BookCreated": {"event_id": "e1", ...}} (see ts_encoder_from_json). It is
 * encoded with the topic's schema, framed (Confluent), keyed by the topic's
 * key field, and produced. A line {"$raw": "text", "$key": "k"} produces the
 * text as-is (an undecodable record, to show the DLQ). Blank lines and lines
 * starting with '#' are skipped.
 *
 * Blocking; for the demo, tests and the command line, not the loop.
 */
#ifndef TS_SAMPLE_H
#define TS_SAMPLE_H

#include <stdint.h>
#include <stdio.h>

#include "ts_topology.h"

/** Where a partition ended after producing: its high watermark. */
typedef struct ts_sample_end {
    char *topic;
    int32_t partition;
    int64_t next_offset;
} ts_sample_end;

typedef struct ts_sample_ends {
    ts_sample_end *items;
    size_t n;
} ts_sample_ends;

/** Produces the sample file of every processor that names one to its input
 * topic, waits for every delivery, and records each input partition's end.
 * *produced counts the records. Errors name the file and line. */
ts_err ts_sample_produce_all(const ts_topology *topo, const char *brokers, size_t *produced,
                             ts_sample_ends *ends, char *err, size_t errlen);

/** Produces the JSON-lines file `path` to `topic`. */
ts_err ts_sample_produce_file(const ts_topology *topo, const char *brokers, const char *topic,
                              const char *path, size_t *produced, char *err, size_t errlen);

/** Prints how many records each processor's DLQ topic holds. */
ts_err ts_sample_print_dlq(const ts_topology *topo, const char *brokers, FILE *out);

void ts_sample_ends_free(ts_sample_ends *ends);

#endif
