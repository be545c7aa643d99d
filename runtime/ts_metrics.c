/* ts_metrics.c - counters, gauges and histograms rendered as Prometheus text.
 *
 * A registry is a list of families in declaration order. Each family keeps
 * its series in a uthash table keyed by the label values joined with NUL
 * bytes (values are arbitrary bytes short of NUL), which also keeps creation
 * order for rendering. A series renders its label set once, escaped, when it
 * is created, so rendering is a walk that prints numbers. Histogram series
 * count observations per bucket (not cumulated) and cumulate while rendering,
 * which keeps an observation O(buckets) with no division of labour between
 * writers and the reader: there is one thread.
 */
#include "ts_metrics.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Allocation failures inside uthash leave the table intact and mark the
 * element, so an insert can report TS_E_NOMEM instead of exiting. */
#define HASH_NONFATAL_OOM 1
#define uthash_nonfatal_oom(elt) ((elt)->oom = 1)
#include <uthash.h>

typedef struct ts_metrics_series {
    char *key; /* label values joined by NUL */
    size_t keylen;
    char *labels;      /* `a="x",b="y"`, escaped; "" without labels */
    double value;      /* counter, gauge; a histogram's sum */
    uint64_t count;    /* histogram observations */
    uint64_t *buckets; /* histogram: per bound, not cumulated */
    int oom;
    UT_hash_handle hh;
} ts_metrics_series;

struct ts_metric {
    ts_metric_type type;
    char *name;
    char *help;
    char **labels;
    size_t n_labels;
    double *bounds;
    size_t n_bounds;
    ts_metrics_series *series;
    struct ts_metric *next;
};

struct ts_metrics {
    ts_metric *head, *tail;
};

/* ---- names and escaping ------------------------------------------------------ */

static int ts_metrics_name_ok(const char *s, int colon) {
    if (!s || !*s)
        return 0;
    for (const char *p = s; *p; p++) {
        char c = *p;
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                    (colon && c == ':');
        if (!alpha && !(p != s && c >= '0' && c <= '9'))
            return 0;
    }
    return 1;
}

/* Label values escape backslash, double quote and newline; HELP text escapes
 * backslash and newline only (format 0.0.4). */
static void ts_metrics_escape(FILE *f, const char *s, int quote) {
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\\\", f);
        else if (*s == '\n')
            fputs("\\n", f);
        else if (quote && *s == '"')
            fputs("\\\"", f);
        else
            fputc(*s, f);
    }
}

/* Writes `v` the way Prometheus reads it back exactly: integers without an
 * exponent, others in the shortest form that round-trips. */
static void ts_metrics_number(FILE *f, double v) {
    if (isnan(v)) {
        fputs("NaN", f);
    } else if (isinf(v)) {
        fputs(v > 0 ? "+Inf" : "-Inf", f);
    } else if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        fprintf(f, "%.0f", v);
    } else {
        char buf[40];
        snprintf(buf, sizeof(buf), "%.15g", v);
        if (strtod(buf, NULL) != v)
            snprintf(buf, sizeof(buf), "%.17g", v);
        fputs(buf, f);
    }
}

/* ---- registry ---------------------------------------------------------------- */

ts_metrics *ts_metrics_create(void) { return calloc(1, sizeof(ts_metrics)); }

static void ts_metrics_series_free(ts_metrics_series *s) {
    if (!s)
        return;
    free(s->key);
    free(s->labels);
    free(s->buckets);
    free(s);
}

static void ts_metrics_family_free(ts_metric *metric) {
    if (!metric)
        return;
    ts_metrics_reset(metric);
    for (size_t i = 0; metric->labels && i < metric->n_labels; i++)
        free(metric->labels[i]);
    free(metric->labels);
    free(metric->bounds);
    free(metric->name);
    free(metric->help);
    free(metric);
}

void ts_metrics_destroy(ts_metrics *m) {
    if (!m)
        return;
    ts_metric *metric = m->head;
    while (metric) {
        ts_metric *next = metric->next;
        ts_metrics_family_free(metric);
        metric = next;
    }
    free(m);
}

ts_metric *ts_metrics_declare(ts_metrics *m, ts_metric_type type, const char *name,
                              const char *help, const char *const *labels, size_t n_labels,
                              const double *bounds, size_t n_bounds) {
    if (!ts_metrics_name_ok(name, 1) || (n_labels && !labels) ||
        (type == TS_METRIC_HISTOGRAM) != (n_bounds > 0) || (n_bounds && !bounds))
        return NULL;
    for (ts_metric *other = m->head; other; other = other->next)
        if (strcmp(other->name, name) == 0)
            return NULL;
    for (size_t i = 0; i < n_labels; i++) {
        if (!ts_metrics_name_ok(labels[i], 0) || strncmp(labels[i], "__", 2) == 0 ||
            (type == TS_METRIC_HISTOGRAM && strcmp(labels[i], "le") == 0))
            return NULL;
    }
    for (size_t i = 0; i < n_bounds; i++)
        if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
            return NULL;

    ts_metric *metric = calloc(1, sizeof(*metric));
    if (!metric)
        return NULL;
    metric->type = type;
    metric->name = strdup(name);
    metric->help = strdup(help ? help : "");
    metric->labels = calloc(n_labels + 1, sizeof(*metric->labels));
    metric->bounds = n_bounds ? malloc(n_bounds * sizeof(*bounds)) : NULL;
    int ok = metric->name && metric->help && metric->labels && (!n_bounds || metric->bounds);
    for (size_t i = 0; ok && i < n_labels; i++) {
        metric->labels[i] = strdup(labels[i]);
        metric->n_labels++;
        ok = metric->labels[i] != NULL;
    }
    if (!ok) {
        ts_metrics_family_free(metric);
        return NULL;
    }
    if (n_bounds)
        memcpy(metric->bounds, bounds, n_bounds * sizeof(*bounds));
    metric->n_bounds = n_bounds;
    if (m->tail)
        m->tail->next = metric;
    else
        m->head = metric;
    m->tail = metric;
    return metric;
}

/* ---- series ------------------------------------------------------------------ */

static char *ts_metrics_label_text(const ts_metric *metric, const char *const *values) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    for (size_t i = 0; i < metric->n_labels; i++) {
        fprintf(f, "%s%s=\"", i ? "," : "", metric->labels[i]);
        ts_metrics_escape(f, values[i], 1);
        fputc('"', f);
    }
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* Finds or creates the series of `values`; NULL when out of memory. */
static ts_metrics_series *ts_metrics_series_get(ts_metric *metric, const char *const *values) {
    size_t keylen = 0;
    for (size_t i = 0; i < metric->n_labels; i++)
        keylen += strlen(values[i]) + 1;
    char stack[256], *key = keylen <= sizeof(stack) ? stack : malloc(keylen);
    if (!key)
        return NULL;
    size_t at = 0;
    for (size_t i = 0; i < metric->n_labels; i++) {
        size_t n = strlen(values[i]) + 1;
        memcpy(key + at, values[i], n);
        at += n;
    }
    ts_metrics_series *s = NULL;
    HASH_FIND(hh, metric->series, key, keylen, s);
    if (s) {
        if (key != stack)
            free(key);
        return s;
    }
    s = calloc(1, sizeof(*s));
    if (s) {
        s->keylen = keylen;
        s->key = malloc(keylen ? keylen : 1);
        s->labels = ts_metrics_label_text(metric, values);
        if (metric->type == TS_METRIC_HISTOGRAM)
            s->buckets = calloc(metric->n_bounds, sizeof(*s->buckets));
    }
    if (key != stack)
        free(key);
    if (!s || !s->key || !s->labels || (metric->type == TS_METRIC_HISTOGRAM && !s->buckets)) {
        ts_metrics_series_free(s);
        return NULL;
    }
    at = 0;
    for (size_t i = 0; i < metric->n_labels; i++) {
        size_t n = strlen(values[i]) + 1;
        memcpy(s->key + at, values[i], n);
        at += n;
    }
    HASH_ADD_KEYPTR(hh, metric->series, s->key, s->keylen, s);
    if (s->oom) {
        ts_metrics_series_free(s);
        return NULL;
    }
    return s;
}

ts_err ts_metrics_add(ts_metric *metric, const char *const *values, double v) {
    if (metric->type == TS_METRIC_HISTOGRAM || (metric->type == TS_METRIC_COUNTER && v < 0))
        return TS_E_INVALID;
    ts_metrics_series *s = ts_metrics_series_get(metric, values);
    if (!s)
        return TS_E_NOMEM;
    s->value += v;
    return TS_OK;
}

ts_err ts_metrics_set(ts_metric *metric, const char *const *values, double v) {
    if (metric->type == TS_METRIC_HISTOGRAM)
        return TS_E_INVALID;
    ts_metrics_series *s = ts_metrics_series_get(metric, values);
    if (!s)
        return TS_E_NOMEM;
    s->value = v;
    return TS_OK;
}

ts_err ts_metrics_observe(ts_metric *metric, const char *const *values, double v) {
    if (metric->type != TS_METRIC_HISTOGRAM)
        return TS_E_INVALID;
    ts_metrics_series *s = ts_metrics_series_get(metric, values);
    if (!s)
        return TS_E_NOMEM;
    /* The first bound that holds v; later buckets get it when cumulated. */
    for (size_t i = 0; i < metric->n_bounds; i++) {
        if (v <= metric->bounds[i]) {
            s->buckets[i]++;
            break;
        }
    }
    s->count++;
    s->value += v;
    return TS_OK;
}

void ts_metrics_reset(ts_metric *metric) {
    ts_metrics_series *s, *tmp;
    HASH_ITER(hh, metric->series, s, tmp) {
        HASH_DELETE(hh, metric->series, s);
        ts_metrics_series_free(s);
    }
}

/* ---- rendering --------------------------------------------------------------- */

static void ts_metrics_render_histogram(FILE *f, const ts_metric *metric,
                                        const ts_metrics_series *s) {
    const char *sep = s->labels[0] ? "," : "";
    uint64_t cumulated = 0;
    for (size_t i = 0; i < metric->n_bounds; i++) {
        cumulated += s->buckets[i];
        fprintf(f, "%s_bucket{%s%sle=\"", metric->name, s->labels, sep);
        ts_metrics_number(f, metric->bounds[i]);
        fprintf(f, "\"} %llu\n", (unsigned long long)cumulated);
    }
    fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", metric->name, s->labels, sep,
            (unsigned long long)s->count);
    const char *open = s->labels[0] ? "{" : "", *close = s->labels[0] ? "}" : "";
    fprintf(f, "%s_sum%s%s%s ", metric->name, open, s->labels, close);
    ts_metrics_number(f, s->value);
    fprintf(f, "\n%s_count%s%s%s %llu\n", metric->name, open, s->labels, close,
            (unsigned long long)s->count);
}

char *ts_metrics_render(const ts_metrics *m, size_t *len) {
    static const char *const types[] = {"counter", "gauge", "histogram"};
    char *text = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    if (!f)
        return NULL;
    for (const ts_metric *metric = m->head; metric; metric = metric->next) {
        fprintf(f, "# HELP %s ", metric->name);
        ts_metrics_escape(f, metric->help, 0);
        fprintf(f, "\n# TYPE %s %s\n", metric->name, types[metric->type]);
        for (const ts_metrics_series *s = metric->series; s; s = s->hh.next) {
            if (metric->type == TS_METRIC_HISTOGRAM) {
                ts_metrics_render_histogram(f, metric, s);
                continue;
            }
            if (s->labels[0])
                fprintf(f, "%s{%s} ", metric->name, s->labels);
            else
                fprintf(f, "%s ", metric->name);
            ts_metrics_number(f, s->value);
            fputc('\n', f);
        }
    }
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    if (len)
        *len = n;
    return text;
}
