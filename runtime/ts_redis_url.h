/* ts_redis_url.h - Redis addresses as URLs, and plain connections to them.
 *
 * "redis://[[user]:password@]host[:port][/db]" or "unix:///path/to.sock[?db=N]".
 * Parsed once here for every user (the view sink, the CLI, tests).
 */
#ifndef TS_REDIS_URL_H
#define TS_REDIS_URL_H

#include <hiredis/hiredis.h>
#include <stddef.h>

#include "ts_error.h"

typedef struct ts_redis_url {
    char *unix_path; /* set for unix:// urls */
    char *host;      /* set for redis:// urls */
    int port;
    char *user;      /* NULL: none (AUTH password only) */
    char *password;  /* NULL: no AUTH */
    int db;
    char where[160]; /* "host:port" or the socket path, for logs (no secrets) */
} ts_redis_url;

/** Parses `url` into `out` (zeroed first). TS_E_CONFIG with a reason in err. */
ts_err ts_redis_url_parse(const char *url, ts_redis_url *out, char *err, size_t errlen);
/** Frees the strings; accepts a zeroed struct. */
void ts_redis_url_free(ts_redis_url *u);

/** Opens a blocking connection to `url`, with AUTH and SELECT done.
 * @returns the context (redisFree), or NULL with a reason in err. */
redisContext *ts_redis_connect_sync(const char *url, char *err, size_t errlen);

#endif
