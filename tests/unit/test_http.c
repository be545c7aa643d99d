/* test_http.c - /metrics, /healthz, /readyz served from published snapshots,
 * on a loopback port the system chooses. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_http.h"
#include "ts_httpget.h"

static ts_http *http;

static void teardown(void) { ts_http_destroy(http); }

TestSuite(http, .fini = teardown, .timeout = 30);

static int get(const char *path, char **body) {
    int status = 0;
    cr_assert_eq(ts_httpget(ts_http_port(http), path, 5, &status, body), 0, "GET %s", path);
    return status;
}

static void start(int stale_ms) {
    char err[256] = "";
    cr_assert_eq(ts_http_create("127.0.0.1", 0, stale_ms, &http, err, sizeof(err)), TS_OK, "%s",
                 err);
    cr_assert_gt(ts_http_port(http), 0);
}

Test(http, before_the_first_snapshot_nothing_is_healthy) {
    start(0);
    char *body;
    cr_assert_eq(get("/healthz", &body), 503);
    cr_assert_str_eq(body, "starting\n");
    free(body);
    cr_assert_eq(get("/readyz", NULL), 503);
    cr_assert_eq(get("/metrics", NULL), 503);
}

Test(http, serves_the_latest_snapshot) {
    start(0);
    const char *text = "# TYPE a gauge\na 1\n";
    ts_http_publish(http, strdup(text), strlen(text), 0, "restoring storybook/3 (10/20 records)");
    char *body;
    cr_assert_eq(get("/metrics", &body), 200);
    cr_assert_str_eq(body, text);
    free(body);
    cr_assert_eq(get("/healthz", &body), 200);
    cr_assert_str_eq(body, "ok\n");
    free(body);
    cr_assert_eq(get("/readyz", &body), 503);
    cr_assert_str_eq(body, "restoring storybook/3 (10/20 records)\n");
    free(body);

    /* Readiness flips; NULL metrics keeps the previous text. */
    ts_http_publish(http, NULL, 0, 1, NULL);
    cr_assert_eq(get("/readyz", &body), 200);
    cr_assert_str_eq(body, "ready\n");
    free(body);
    cr_assert_eq(get("/metrics", &body), 200);
    cr_assert_str_eq(body, text);
    free(body);

    const char *next = "# TYPE a gauge\na 2\n";
    ts_http_publish(http, strdup(next), strlen(next), 1, NULL);
    cr_assert_eq(get("/metrics", &body), 200);
    cr_assert_str_eq(body, next);
    free(body);
}

Test(http, unknown_paths_and_methods) {
    start(0);
    ts_http_publish(http, strdup("x 1\n"), 4, 1, NULL);
    cr_assert_eq(get("/", NULL), 404);
    cr_assert_eq(get("/metrics/x", NULL), 404);
}

Test(http, a_stale_snapshot_is_neither_healthy_nor_ready) {
    start(200);
    ts_http_publish(http, strdup("x 1\n"), 4, 1, NULL);
    cr_assert_eq(get("/healthz", NULL), 200);
    cr_assert_eq(get("/readyz", NULL), 200);
    usleep(400 * 1000);
    char *body;
    cr_assert_eq(get("/healthz", &body), 503);
    cr_assert(strncmp(body, "stale:", 6) == 0, "%s", body);
    free(body);
    cr_assert_eq(get("/readyz", NULL), 503);
    cr_assert_eq(get("/metrics", NULL), 200, "the last text is still served");
    ts_http_publish(http, NULL, 0, 1, NULL);
    cr_assert_eq(get("/healthz", NULL), 200);
}

Test(http, a_taken_port_is_an_error) {
    start(0);
    ts_http *other = NULL;
    char err[256] = "";
    cr_assert_eq(ts_http_create("127.0.0.1", ts_http_port(http), 0, &other, err, sizeof(err)),
                 TS_E_IO);
    cr_assert_null(other);
    cr_assert(strstr(err, "cannot serve"), "%s", err);
    cr_assert_eq(ts_http_create("not-an-ip", 0, 0, &other, err, sizeof(err)), TS_E_CONFIG);
}
