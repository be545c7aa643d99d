/* test_metrics.c - the metrics registry and its Prometheus text rendering. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_metrics.h"

static ts_metrics *m;

static void setup(void) { cr_assert_not_null(m = ts_metrics_create()); }
static void teardown(void) { ts_metrics_destroy(m); }

TestSuite(metrics, .init = setup, .fini = teardown);

static char *render(void) {
    size_t len = 0;
    char *text = ts_metrics_render(m, &len);
    cr_assert_not_null(text);
    cr_assert_eq(strlen(text), len);
    return text;
}

Test(metrics, counter_and_gauge_text) {
    const char *labels[] = {"processor"};
    ts_metric *c = ts_metrics_declare(m, TS_METRIC_COUNTER, "t_events_total", "Events seen.",
                                      labels, 1, NULL, 0);
    ts_metric *g = ts_metrics_declare(m, TS_METRIC_GAUGE, "t_up", "Up.", NULL, 0, NULL, 0);
    cr_assert_not_null(c);
    cr_assert_not_null(g);
    cr_assert_eq(ts_metrics_add(c, (const char *[]){"a"}, 2), TS_OK);
    cr_assert_eq(ts_metrics_add(c, (const char *[]){"b"}, 1), TS_OK);
    cr_assert_eq(ts_metrics_add(c, (const char *[]){"a"}, 3), TS_OK);
    cr_assert_eq(ts_metrics_set(g, NULL, 0.25), TS_OK);
    char *text = render();
    cr_assert_str_eq(text, "# HELP t_events_total Events seen.\n"
                           "# TYPE t_events_total counter\n"
                           "t_events_total{processor=\"a\"} 5\n"
                           "t_events_total{processor=\"b\"} 1\n"
                           "# HELP t_up Up.\n"
                           "# TYPE t_up gauge\n"
                           "t_up 0.25\n");
    free(text);
}

Test(metrics, histogram_buckets_are_cumulative) {
    const double bounds[] = {0.01, 0.1, 1};
    const char *labels[] = {"sink"};
    ts_metric *h = ts_metrics_declare(m, TS_METRIC_HISTOGRAM, "t_seconds", "Latency.", labels, 1,
                                      bounds, 3);
    cr_assert_not_null(h);
    /* Binary fractions keep the sum exact; 1 sits on a bound and counts there. */
    const double obs[] = {0.0078125, 0.0078125, 0.0625, 1, 7};
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(ts_metrics_observe(h, (const char *[]){"redis"}, obs[i]), TS_OK);
    char *text = render();
    cr_assert_str_eq(text, "# HELP t_seconds Latency.\n"
                           "# TYPE t_seconds histogram\n"
                           "t_seconds_bucket{sink=\"redis\",le=\"0.01\"} 2\n"
                           "t_seconds_bucket{sink=\"redis\",le=\"0.1\"} 3\n"
                           "t_seconds_bucket{sink=\"redis\",le=\"1\"} 4\n"
                           "t_seconds_bucket{sink=\"redis\",le=\"+Inf\"} 5\n"
                           "t_seconds_sum{sink=\"redis\"} 8.078125\n"
                           "t_seconds_count{sink=\"redis\"} 5\n");
    free(text);
}

Test(metrics, histogram_without_labels) {
    const double bounds[] = {1, 10};
    ts_metric *h = ts_metrics_declare(m, TS_METRIC_HISTOGRAM, "t_size", "Size.", NULL, 0, bounds,
                                      2);
    cr_assert_eq(ts_metrics_observe(h, NULL, 10), TS_OK);
    char *text = render();
    cr_assert(strstr(text, "t_size_bucket{le=\"1\"} 0\n"), "%s", text);
    cr_assert(strstr(text, "t_size_bucket{le=\"10\"} 1\n"), "%s", text);
    cr_assert(strstr(text, "t_size_bucket{le=\"+Inf\"} 1\n"), "%s", text);
    cr_assert(strstr(text, "t_size_sum 10\nt_size_count 1\n"), "%s", text);
    free(text);
}

Test(metrics, label_values_and_help_are_escaped) {
    const char *labels[] = {"task", "topic"};
    ts_metric *g = ts_metrics_declare(m, TS_METRIC_GAUGE, "t_g", "A \\ back\nslash \"quoted\".",
                                      labels, 2, NULL, 0);
    cr_assert_eq(ts_metrics_set(g, (const char *[]){"a\"b\\c\nd", "x y"}, 1), TS_OK);
    char *text = render();
    cr_assert_str_eq(text, "# HELP t_g A \\\\ back\\nslash \"quoted\".\n"
                           "# TYPE t_g gauge\n"
                           "t_g{task=\"a\\\"b\\\\c\\nd\",topic=\"x y\"} 1\n");
    free(text);
}

Test(metrics, label_tuples_do_not_collide) {
    const char *labels[] = {"a", "b"};
    ts_metric *g = ts_metrics_declare(m, TS_METRIC_GAUGE, "t_g", "", labels, 2, NULL, 0);
    ts_metrics_set(g, (const char *[]){"ab", ""}, 1);
    ts_metrics_set(g, (const char *[]){"a", "b"}, 2);
    char *text = render();
    cr_assert(strstr(text, "t_g{a=\"ab\",b=\"\"} 1\n"), "%s", text);
    cr_assert(strstr(text, "t_g{a=\"a\",b=\"b\"} 2\n"), "%s", text);
    free(text);
}

Test(metrics, numbers_round_trip) {
    ts_metric *g = ts_metrics_declare(m, TS_METRIC_GAUGE, "t_n", "", (const char *[]){"k"}, 1,
                                      NULL, 0);
    ts_metrics_set(g, (const char *[]){"big"}, 1767000000123.0);
    ts_metrics_set(g, (const char *[]){"neg"}, -3);
    ts_metrics_set(g, (const char *[]){"third"}, 1.0 / 3.0);
    ts_metrics_set(g, (const char *[]){"inf"}, INFINITY);
    ts_metrics_set(g, (const char *[]){"nan"}, NAN);
    char *text = render();
    cr_assert(strstr(text, "t_n{k=\"big\"} 1767000000123\n"), "%s", text);
    cr_assert(strstr(text, "t_n{k=\"neg\"} -3\n"), "%s", text);
    const char *third = strstr(text, "t_n{k=\"third\"} ");
    cr_assert_not_null(third);
    cr_assert_eq(strtod(third + strlen("t_n{k=\"third\"} "), NULL), 1.0 / 3.0);
    cr_assert(strstr(text, "t_n{k=\"inf\"} +Inf\n"), "%s", text);
    cr_assert(strstr(text, "t_n{k=\"nan\"} NaN\n"), "%s", text);
    free(text);
}

Test(metrics, reset_drops_series) {
    ts_metric *g = ts_metrics_declare(m, TS_METRIC_GAUGE, "t_lag", "Lag.", (const char *[]){"p"},
                                      1, NULL, 0);
    ts_metrics_set(g, (const char *[]){"0"}, 5);
    ts_metrics_set(g, (const char *[]){"1"}, 6);
    ts_metrics_reset(g);
    ts_metrics_set(g, (const char *[]){"1"}, 7);
    char *text = render();
    cr_assert_str_eq(text, "# HELP t_lag Lag.\n# TYPE t_lag gauge\nt_lag{p=\"1\"} 7\n");
    free(text);
}

Test(metrics, misuse_is_refused) {
    const double up[] = {1, 2}, down[] = {2, 1};
    cr_assert_null(ts_metrics_declare(m, TS_METRIC_GAUGE, "1bad", "", NULL, 0, NULL, 0));
    cr_assert_null(ts_metrics_declare(m, TS_METRIC_GAUGE, "bad-name", "", NULL, 0, NULL, 0));
    cr_assert_null(ts_metrics_declare(m, TS_METRIC_GAUGE, "g", "", (const char *[]){"a:b"}, 1,
                                      NULL, 0));
    cr_assert_null(ts_metrics_declare(m, TS_METRIC_HISTOGRAM, "h", "", (const char *[]){"le"}, 1,
                                      up, 2));
    cr_assert_null(ts_metrics_declare(m, TS_METRIC_HISTOGRAM, "h", "", NULL, 0, down, 2));
    cr_assert_null(ts_metrics_declare(m, TS_METRIC_HISTOGRAM, "h", "", NULL, 0, NULL, 0));
    cr_assert_null(ts_metrics_declare(m, TS_METRIC_COUNTER, "c", "", NULL, 0, up, 2));
    ts_metric *c = ts_metrics_declare(m, TS_METRIC_COUNTER, "ns:c_total", "", NULL, 0, NULL, 0);
    cr_assert_not_null(c);
    cr_assert_null(ts_metrics_declare(m, TS_METRIC_GAUGE, "ns:c_total", "", NULL, 0, NULL, 0),
                   "duplicate name");
    cr_assert_eq(ts_metrics_add(c, NULL, -1), TS_E_INVALID);
    cr_assert_eq(ts_metrics_observe(c, NULL, 1), TS_E_INVALID);
    ts_metric *h = ts_metrics_declare(m, TS_METRIC_HISTOGRAM, "h", "", NULL, 0, up, 2);
    cr_assert_eq(ts_metrics_add(h, NULL, 1), TS_E_INVALID);
    cr_assert_eq(ts_metrics_set(h, NULL, 1), TS_E_INVALID);
}

Test(metrics, empty_family_renders_its_header) {
    ts_metrics_declare(m, TS_METRIC_COUNTER, "t_total", "Nothing yet.", (const char *[]){"x"}, 1,
                       NULL, 0);
    char *text = render();
    cr_assert_str_eq(text, "# HELP t_total Nothing yet.\n# TYPE t_total counter\n");
    free(text);
}

Test(metrics, many_series_and_long_values) {
    ts_metric *g = ts_metrics_declare(m, TS_METRIC_GAUGE, "t_g", "", (const char *[]){"k"}, 1,
                                      NULL, 0);
    char big[1000];
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    ts_metrics_set(g, (const char *[]){big}, 42);
    for (int i = 0; i < 500; i++) {
        char k[16];
        snprintf(k, sizeof(k), "%d", i);
        ts_metrics_add(g, (const char *[]){k}, i);
        ts_metrics_add(g, (const char *[]){k}, 1);
    }
    char *text = render();
    cr_assert(strstr(text, "t_g{k=\"499\"} 500\n"), "last series");
    cr_assert(strstr(text, "vvv\"} 42\n"), "long value");
    free(text);
}
