/* ts_httpget.h - a tiny HTTP/1.0 GET over a loopback socket, for tests that
 * scrape /metrics, /healthz and /readyz. No dependency beyond libc.
 * Blocking; call from test code.
 */
#ifndef TS_HTTPGET_H
#define TS_HTTPGET_H

#include <stddef.h>

/** GETs http://127.0.0.1:`port``path`. On success sets *status to the HTTP
 * status and *body to the response body (malloc'ed, NUL-terminated, owned by
 * the caller; body may be NULL to discard it). `timeout_s` bounds connect,
 * send and every read.
 * @returns 0, or -1 when there was no HTTP answer (refused, timeout,
 *          malformed status line). */
int ts_httpget(int port, const char *path, double timeout_s, int *status, char **body);

/** Polls `path` every 100 ms until it answers `want` or `seconds` pass
 * (scaled by TS_TEST_TIMEOUT_MULTIPLIER). *body (may be NULL) gets the last
 * answer's body (or NULL). @returns 0 when `want` was seen, else -1. */
int ts_httpget_wait(int port, const char *path, int want, double seconds, char **body);

/** A free loopback TCP port chosen by the system (bound to port 0, read back,
 * closed), or -1. For handing a port to a child process. */
int ts_httpget_free_port(void);

/** The value of the sample `series` (name with its labels exactly as
 * rendered, e.g. `x_total{processor="a"}`) in Prometheus text `text`, or
 * `missing` when there is no such line. */
double ts_httpget_sample(const char *text, const char *series, double missing);

/** The sum of every sample whose series starts with `prefix` (e.g.
 * `tastesync_consumer_lag{topic="t",`), and the number summed in *n. */
double ts_httpget_sum(const char *text, const char *prefix, int *n);

#endif
