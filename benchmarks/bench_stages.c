/* bench_stages.c - where an offered rate's event->view time goes, as the
 * runtime itself timed it: two scrapes of its /metrics (before and after the
 * rate) and the difference of its histograms for the probes' processor.
 *
 * A batch's input wait (its first record's timestamp to the batch's start:
 * the producer's linger, the mock broker, the fetch and the wait behind the
 * partition's previous batch) plus the batch's duration (to the last sink's
 * acknowledgement) bound the time of its oldest record; each sink's write
 * duration says which one the batch waited for. Means are exact; the p99s
 * are the upper bounds of the histogram buckets that hold them (1, 2.5, 5,
 * 10, 25, 50 ms ...).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "ts_httpget.h"

#define BENCH_STAGES_BOUNDS 32

char *bench_stages_scrape(int port) {
    int status = 0;
    char *body = NULL;
    if (port <= 0 || ts_httpget(port, "/metrics", 5, &status, &body) != 0 || status != 200) {
        free(body);
        return NULL;
    }
    return body;
}

/* The cumulative buckets of `name`{`labels`}: bounds (seconds, +Inf last;
 * `le` may be NULL) and counts, in the order rendered. @returns how many. */
static size_t bench_stages_buckets(const char *text, const char *name, const char *labels,
                                   double *le, double *count) {
    char prefix[256];
    int plen = snprintf(prefix, sizeof(prefix), "%s_bucket{%s,le=\"", name, labels);
    size_t n = 0;
    for (const char *line = text; line && *line && n < BENCH_STAGES_BOUNDS;) {
        if (strncmp(line, prefix, (size_t)plen) == 0) {
            const char *v = line + plen;
            if (le)
                le[n] = strncmp(v, "+Inf", 4) == 0 ? INFINITY : strtod(v, NULL);
            const char *end = strstr(v, "} ");
            count[n++] = end ? strtod(end + 2, NULL) : 0;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return n;
}

/* Adds {"mean_ms", "p99_le_ms", "count"} of histogram `name`{`labels`}
 * between the two scrapes to `out` under `key`; @returns the mean (ms), or
 * NAN when nothing was observed. */
static double bench_stages_hist(json_t *out, const char *key, const char *before,
                                const char *after, const char *name, const char *labels) {
    char series[256];
    snprintf(series, sizeof(series), "%s_count{%s}", name, labels);
    double count = ts_httpget_sample(after, series, 0) - ts_httpget_sample(before, series, 0);
    snprintf(series, sizeof(series), "%s_sum{%s}", name, labels);
    double sum = ts_httpget_sample(after, series, 0) - ts_httpget_sample(before, series, 0);
    if (count <= 0)
        return NAN;
    double le[BENCH_STAGES_BOUNDS], c1[BENCH_STAGES_BOUNDS], c0[BENCH_STAGES_BOUNDS];
    size_t n = bench_stages_buckets(after, name, labels, le, c1);
    size_t n0 = bench_stages_buckets(before, name, labels, NULL, c0);
    double p99 = INFINITY;
    for (size_t i = 0; i < n; i++) {
        double earlier = i < n0 ? c0[i] : 0; /* a series first seen now had none */
        if (c1[i] - earlier >= 0.99 * count) {
            p99 = le[i];
            break;
        }
    }
    double mean_ms = sum / count * 1e3;
    json_t *h = json_object();
    json_object_set_new(h, "count", json_integer((json_int_t)count));
    json_object_set_new(h, "mean_ms", json_real(mean_ms));
    json_object_set_new(h, "p99_le_ms", isinf(p99) ? json_null() : json_real(p99 * 1e3));
    json_object_set_new(out, key, h);
    return mean_ms;
}

json_t *bench_stages_between(const char *before, const char *after, const char *processor,
                             char *note, size_t note_len) {
    if (!before || !after)
        return NULL;
    char labels[128];
    snprintf(labels, sizeof(labels), "processor=\"%s\"", processor);
    json_t *out = json_object();
    bench_stages_hist(out, "input_wait", before, after, "tastesync_input_wait_seconds", labels);
    double batch = bench_stages_hist(out, "batch", before, after,
                                     "tastesync_batch_duration_seconds", labels);
    static const char *const sinks[] = {"redis", "postgres", "kafka"};
    double sink_ms[3];
    json_t *by_sink = json_object();
    for (size_t i = 0; i < 3; i++) {
        char sink[64];
        snprintf(sink, sizeof(sink), "sink=\"%s\"", sinks[i]);
        sink_ms[i] = bench_stages_hist(by_sink, sinks[i], before, after,
                                       "tastesync_sink_write_duration_seconds", sink);
    }
    json_object_set_new(out, "sink_write", by_sink);
    char series[256];
    snprintf(series, sizeof(series), "tastesync_batch_size_sum{%s}", labels);
    double records = ts_httpget_sample(after, series, 0) - ts_httpget_sample(before, series, 0);
    json_t *b = json_object_get(out, "batch");
    double batches = b ? (double)json_integer_value(json_object_get(b, "count")) : 0;
    json_object_set_new(out, "records_per_batch",
                        json_real(batches > 0 ? records / batches : 0));
    json_t *wp = json_object_get(json_object_get(out, "input_wait"), "p99_le_ms");
    json_t *bp = b ? json_object_get(b, "p99_le_ms") : NULL;
    snprintf(note, note_len,
             "mean (p99 <= %g ms); batch mean %.2f ms (p99 <= %g), sinks redis %.2f, "
             "postgres %.2f, kafka %.2f; %.0f batches of %.1f records",
             wp && json_is_real(wp) ? json_real_value(wp) : INFINITY, batch,
             bp && json_is_real(bp) ? json_real_value(bp) : INFINITY, sink_ms[0], sink_ms[1],
             sink_ms[2], batches, batches > 0 ? records / batches : 0);
    return out;
}
