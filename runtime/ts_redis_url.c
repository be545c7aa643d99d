/* ts_redis_url.c - Redis URL parsing and blocking connections (see ts_redis_url.h). */
#include "ts_redis_url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ts_redis_url_int(const char *s, size_t len, int *out) {
    if (len == 0 || len > 9)
        return -1;
    int v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

void ts_redis_url_free(ts_redis_url *u) {
    free(u->unix_path);
    free(u->host);
    free(u->user);
    free(u->password);
    memset(u, 0, sizeof(*u));
}

static ts_err ts_redis_url_unix(const char *url, ts_redis_url *u, char *err, size_t errlen) {
    const char *path = url + 7;
    const char *q = strchr(path, '?');
    size_t plen = q ? (size_t)(q - path) : strlen(path);
    if (plen == 0 || path[0] != '/') {
        snprintf(err, errlen, "redis url %s: unix:// needs an absolute path", url);
        return TS_E_CONFIG;
    }
    if (q && (strncmp(q, "?db=", 4) != 0 || ts_redis_url_int(q + 4, strlen(q + 4), &u->db))) {
        snprintf(err, errlen, "redis url %s: only ?db=N may follow the path", url);
        return TS_E_CONFIG;
    }
    if (!(u->unix_path = strndup(path, plen)))
        return TS_E_NOMEM;
    snprintf(u->where, sizeof(u->where), "%s", u->unix_path);
    return TS_OK;
}

ts_err ts_redis_url_parse(const char *url, ts_redis_url *u, char *err, size_t errlen) {
    memset(u, 0, sizeof(*u));
    ts_err rc;
    if (strncmp(url, "unix://", 7) == 0) {
        rc = ts_redis_url_unix(url, u, err, errlen);
        if (rc != TS_OK)
            ts_redis_url_free(u);
        return rc;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen, "redis url %s: must start with redis:// or unix://", url);
        return TS_E_CONFIG;
    }
    const char *p = url + 8;
    const char *at = strrchr(p, '@');
    rc = TS_OK;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon) {
            snprintf(err, errlen, "redis url: credentials must be [user]:password@");
            return TS_E_CONFIG;
        }
        if ((colon > p && !(u->user = strndup(p, (size_t)(colon - p)))) ||
            !(u->password = strndup(colon + 1, (size_t)(at - colon - 1)))) {
            ts_redis_url_free(u);
            return TS_E_NOMEM;
        }
        p = at + 1;
    }
    const char *slash = strchr(p, '/');
    size_t hplen = slash ? (size_t)(slash - p) : strlen(p);
    const char *colon = memchr(p, ':', hplen);
    size_t hlen = colon ? (size_t)(colon - p) : hplen;
    u->port = 6379;
    if (hlen == 0 || (colon && ts_redis_url_int(colon + 1, hplen - hlen - 1, &u->port) != 0) ||
        u->port <= 0 || u->port > 65535 ||
        (slash && slash[1] && ts_redis_url_int(slash + 1, strlen(slash + 1), &u->db) != 0)) {
        snprintf(err, errlen, "redis url: expected redis://[[user]:password@]host[:port][/db]");
        ts_redis_url_free(u);
        return TS_E_CONFIG;
    }
    if (!(u->host = strndup(p, hlen))) {
        ts_redis_url_free(u);
        return TS_E_NOMEM;
    }
    snprintf(u->where, sizeof(u->where), "%s:%d", u->host, u->port);
    return TS_OK;
}

/* Runs one setup command and checks for an error reply. */
static int ts_redis_url_setup(redisContext *rc, char *err, size_t errlen, const char *what,
                              redisReply *reply) {
    int ok = reply && reply->type != REDIS_REPLY_ERROR;
    if (!ok)
        snprintf(err, errlen, "redis %s failed: %s", what,
                 reply ? reply->str : (rc->errstr[0] ? rc->errstr : "no reply"));
    if (reply)
        freeReplyObject(reply);
    return ok;
}

redisContext *ts_redis_connect_sync(const char *url, char *err, size_t errlen) {
    ts_redis_url u;
    if (ts_redis_url_parse(url, &u, err, errlen) != TS_OK)
        return NULL;
    redisContext *rc = u.unix_path ? redisConnectUnix(u.unix_path) : redisConnect(u.host, u.port);
    if (!rc || rc->err) {
        snprintf(err, errlen, "cannot connect to redis at %s: %s", u.where,
                 rc ? rc->errstr : "out of memory");
        redisFree(rc);
        ts_redis_url_free(&u);
        return NULL;
    }
    int ok = 1;
    if (u.password)
        ok = ts_redis_url_setup(rc, err, errlen, "AUTH",
                                u.user ? redisCommand(rc, "AUTH %s %s", u.user, u.password)
                                       : redisCommand(rc, "AUTH %s", u.password));
    if (ok && u.db)
        ok = ts_redis_url_setup(rc, err, errlen, "SELECT", redisCommand(rc, "SELECT %d", u.db));
    ts_redis_url_free(&u);
    if (!ok) {
        redisFree(rc);
        return NULL;
    }
    return rc;
}
