/* ts_http.h - the operator's HTTP endpoint: /metrics, /healthz, /readyz.
 *
 * A libmicrohttpd daemon with its own thread serves a snapshot that the loop
 * thread publishes (ts_http_publish), typically once a second: the metrics
 * text, whether the process is ready, and why not. The HTTP thread never
 * touches runtime objects; it copies the latest snapshot under a mutex.
 *
 *   GET /metrics  200, text/plain; version=0.0.4 (503 before the first snapshot)
 *   GET /healthz  200 "ok" while the latest snapshot is younger than the
 *                 staleness limit (the loop is alive), else 503
 *   GET /readyz   200 "ready" when the latest snapshot says ready and is
 *                 fresh, else 503 with a one-line reason
 *   anything else 404; methods other than GET and HEAD 405.
 *
 * Threading: create, publish and destroy on one thread (the loop thread);
 * requests are answered on the daemon's thread.
 */
#ifndef TS_HTTP_H
#define TS_HTTP_H

#include <stddef.h>

#include "ts_error.h"

typedef struct ts_http ts_http;

/** Starts serving on `host`:`port`.
 *
 * @param host      IPv4 address to bind, e.g. "127.0.0.1"; NULL binds 0.0.0.0.
 * @param port      0 lets the system choose a free port (see ts_http_port).
 * @param stale_ms  age after which a snapshot no longer counts as alive
 *                  (/healthz and /readyz answer 503); 0 means 5000.
 * @returns TS_OK with *out owned by the caller; TS_E_CONFIG for a bad host;
 *          TS_E_IO when the port cannot be bound (detail in err); TS_E_NOMEM. */
ts_err ts_http_create(const char *host, int port, int stale_ms, ts_http **out, char *err,
                      size_t errlen);

/** @returns the port actually bound. */
int ts_http_port(const ts_http *http);

/** Replaces the snapshot. Takes ownership of `metrics` (malloc'ed, `len`
 * bytes; may be NULL to keep serving the previous text); `reason` (copied,
 * may be NULL) is the one-line answer of /readyz when `ready` is zero. The
 * snapshot's age starts now. */
void ts_http_publish(ts_http *http, char *metrics, size_t len, int ready, const char *reason);

/** Stops the daemon (waits for its thread) and frees; accepts NULL. */
void ts_http_destroy(ts_http *http);

#endif
