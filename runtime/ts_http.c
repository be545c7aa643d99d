/* ts_http.c - /metrics, /healthz and /readyz over libmicrohttpd.
 *
 * The daemon runs its own polling thread (MHD_USE_AUTO_INTERNAL_THREAD picks
 * epoll on Linux, so descriptor numbers above FD_SETSIZE are fine). The only
 * data shared with the loop thread is the snapshot: the rendered metrics
 * text, the readiness flag and reason, and the monotonic time it was
 * published. The loop thread swaps a new text in under the mutex (and frees
 * the old one outside it); a request copies what it needs under the mutex
 * and builds its response from the copy, so a slow client never holds the
 * lock and the loop never waits for the network.
 */
#include "ts_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "ts_log.h"

#define TS_HTTP_STALE_MS_DEFAULT 5000
#define TS_HTTP_CONNECTION_LIMIT 64
#define TS_HTTP_CONNECTION_TIMEOUT_S 10

struct ts_http {
    struct MHD_Daemon *daemon;
    int port;
    int64_t stale_ms;
    atomic_int starting;  /* inside ts_http_create: messages explain a failure */
    char start_err[256]; /* the daemon's last message while starting */

    pthread_mutex_t lock; /* guards everything below */
    char *metrics;
    size_t metrics_len;
    int ready;
    char reason[256];
    int64_t published_ms; /* monotonic; 0: nothing published yet */
};

static int64_t ts_http_now_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static void ts_http_logger(void *cls, const char *fmt, va_list ap) {
    ts_http *http = cls;
    char msg[256];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    /* start_err is read only when the start failed, when no daemon thread
     * exists; a thread logging during a successful start writes it unread. */
    if (atomic_load(&http->starting))
        snprintf(http->start_err, sizeof(http->start_err), "%s", msg);
    ts_log_debug("http", "%s", msg);
}

/* Queues a response whose body is `body` (malloc'ed, consumed). */
static enum MHD_Result ts_http_reply(struct MHD_Connection *conn, unsigned status,
                                     const char *type, char *body, size_t len) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result ts_http_text(struct MHD_Connection *conn, unsigned status,
                                    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static enum MHD_Result ts_http_text(struct MHD_Connection *conn, unsigned status,
                                    const char *fmt, ...) {
    char *body = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&body, fmt, ap);
    va_end(ap);
    if (n < 0)
        return MHD_NO;
    return ts_http_reply(conn, status, "text/plain; charset=utf-8", body, (size_t)n);
}

static enum MHD_Result ts_http_answer(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls) {
    (void)version;
    (void)upload_data;
    (void)con_cls;
    ts_http *http = cls;
    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* a body is ignored; answer once it is read */
        return MHD_YES;
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return ts_http_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");

    int metrics = strcmp(url, "/metrics") == 0, healthz = strcmp(url, "/healthz") == 0;
    int readyz = strcmp(url, "/readyz") == 0;
    if (!metrics && !healthz && !readyz)
        return ts_http_text(conn, MHD_HTTP_NOT_FOUND,
                            "not found: try /metrics, /healthz or /readyz\n");

    char *text = NULL, reason[256];
    size_t len = 0;
    int nomem = 0;
    pthread_mutex_lock(&http->lock);
    int64_t published = http->published_ms;
    int ready = http->ready;
    snprintf(reason, sizeof(reason), "%s", http->reason);
    if (metrics && http->metrics) {
        len = http->metrics_len;
        text = malloc(len + 1);
        if (text)
            memcpy(text, http->metrics, len);
        nomem = !text;
    }
    pthread_mutex_unlock(&http->lock);
    if (nomem)
        return MHD_NO;

    int64_t age = published ? ts_http_now_ms() - published : -1;
    if (metrics) {
        if (!text)
            return ts_http_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "starting\n");
        return ts_http_reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text,
                             len);
    }
    if (age < 0)
        return ts_http_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "starting\n");
    if (age > http->stale_ms)
        return ts_http_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE,
                            "stale: the loop last reported %.1f s ago\n", (double)age / 1000.0);
    if (healthz)
        return ts_http_text(conn, MHD_HTTP_OK, "ok\n");
    if (!ready)
        return ts_http_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "%s\n",
                            reason[0] ? reason : "not ready");
    return ts_http_text(conn, MHD_HTTP_OK, "ready\n");
}

ts_err ts_http_create(const char *host, int port, int stale_ms, ts_http **out, char *err,
                      size_t errlen) {
    if (port < 0 || port > 65535 || stale_ms < 0) {
        snprintf(err, errlen, "http: port %d or staleness %d ms out of range", port, stale_ms);
        return TS_E_CONFIG;
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host ? host : "0.0.0.0", &addr.sin_addr) != 1) {
        snprintf(err, errlen, "http: '%s' is not an IPv4 address", host);
        return TS_E_CONFIG;
    }
    ts_http *http = calloc(1, sizeof(*http));
    if (!http)
        return TS_E_NOMEM;
    if (pthread_mutex_init(&http->lock, NULL) != 0) {
        free(http);
        return TS_E_NOMEM;
    }
    http->stale_ms = stale_ms ? stale_ms : TS_HTTP_STALE_MS_DEFAULT;
    errno = 0;
    atomic_store(&http->starting, 1);
    http->daemon = MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, (uint16_t)port, NULL, NULL,
        ts_http_answer, http, MHD_OPTION_EXTERNAL_LOGGER, ts_http_logger, http,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)TS_HTTP_CONNECTION_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)TS_HTTP_CONNECTION_TIMEOUT_S, MHD_OPTION_END);
    if (!http->daemon) {
        int saved = errno;
        snprintf(err, errlen, "http: cannot serve on %s:%d: %s",
                 host ? host : "0.0.0.0", port,
                 http->start_err[0] ? http->start_err
                                    : (saved ? strerror(saved) : "libmicrohttpd refused"));
        ts_http_destroy(http);
        return TS_E_IO;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(http->daemon,
                                                           MHD_DAEMON_INFO_BIND_PORT);
    http->port = info ? info->port : port;
    *out = http;
    return TS_OK;
}

int ts_http_port(const ts_http *http) { return http->port; }

void ts_http_publish(ts_http *http, char *metrics, size_t len, int ready, const char *reason) {
    char *old = NULL;
    int64_t now = ts_http_now_ms();
    pthread_mutex_lock(&http->lock);
    if (metrics) {
        old = http->metrics;
        http->metrics = metrics;
        http->metrics_len = len;
    }
    http->ready = ready;
    snprintf(http->reason, sizeof(http->reason), "%s", reason ? reason : "");
    http->published_ms = now ? now : 1;
    pthread_mutex_unlock(&http->lock);
    free(old); /* outside the lock: a request copying never waits for free */
}

void ts_http_destroy(ts_http *http) {
    if (!http)
        return;
    if (http->daemon)
        MHD_stop_daemon(http->daemon);
    pthread_mutex_destroy(&http->lock);
    free(http->metrics);
    free(http);
}
