/* ts_metrics.h - a small registry of counters, gauges and histograms with
 * labels, rendered in the Prometheus text exposition format 0.0.4.
 *
 * A registry holds families (a name, a help line, a type, label names); a
 * family holds one series per distinct tuple of label values, created on
 * first use. Histograms have fixed bucket bounds chosen when the family is
 * declared. Families render in declaration order, series in creation order.
 * Names follow Prometheus: [a-zA-Z_:][a-zA-Z0-9_:]* for families,
 * [a-zA-Z_][a-zA-Z0-9_]* for labels ("le" is reserved for histograms).
 *
 * Threading: not thread-safe. The runtime owns its registry and touches it
 * only on the loop thread; other threads see rendered text (ts_http.h).
 */
#ifndef TS_METRICS_H
#define TS_METRICS_H

#include <stddef.h>

#include "ts_error.h"

typedef struct ts_metrics ts_metrics;
/** One family of the registry; owned by it, valid until ts_metrics_destroy. */
typedef struct ts_metric ts_metric;

typedef enum ts_metric_type {
    TS_METRIC_COUNTER,
    TS_METRIC_GAUGE,
    TS_METRIC_HISTOGRAM,
} ts_metric_type;

/** @returns an empty registry, or NULL when out of memory. */
ts_metrics *ts_metrics_create(void);

/** Frees the registry, its families and series; accepts NULL. */
void ts_metrics_destroy(ts_metrics *m);

/** Declares a family. `name`, `help` and the `n_labels` names of `labels` are
 * copied. For a histogram, `bounds` holds `n_bounds` strictly increasing
 * finite upper bounds (copied; the +Inf bucket is implicit); other types pass
 * NULL, 0.
 * @returns the family, or NULL for an invalid or duplicate name, bad bounds,
 *          or out of memory. */
ts_metric *ts_metrics_declare(ts_metrics *m, ts_metric_type type, const char *name,
                              const char *help, const char *const *labels, size_t n_labels,
                              const double *bounds, size_t n_bounds);

/** Adds `v` to the series of `values` (one string per label name of the
 * family, any bytes; NULL when the family has no labels). For a counter `v`
 * must be >= 0.
 * @returns TS_OK, TS_E_INVALID (negative counter increment, histogram
 *          family), TS_E_NOMEM. */
ts_err ts_metrics_add(ts_metric *metric, const char *const *values, double v);

/** Sets the series of `values` to `v`: a gauge, or a counter mirroring a
 * count kept elsewhere (which must not go down).
 * @returns TS_OK, TS_E_INVALID (histogram family), TS_E_NOMEM. */
ts_err ts_metrics_set(ts_metric *metric, const char *const *values, double v);

/** Records one observation `v` in the histogram series of `values`: it
 * counts in every bucket whose bound is >= v, in _count, and adds to _sum.
 * @returns TS_OK, TS_E_INVALID (not a histogram), TS_E_NOMEM. */
ts_err ts_metrics_observe(ts_metric *metric, const char *const *values, double v);

/** Drops every series of the family (e.g. per-partition gauges rebuilt from
 * the current assignment before each render). */
void ts_metrics_reset(ts_metric *metric);

/** Renders the whole registry: per family "# HELP", "# TYPE", then its
 * samples (histograms as _bucket{...,le="..."}, _sum, _count). A family
 * without series renders its HELP and TYPE only.
 * @returns a NUL-terminated malloc'ed text owned by the caller (*len set to
 *          its length when len is not NULL), or NULL when out of memory. */
char *ts_metrics_render(const ts_metrics *m, size_t *len);

#endif
