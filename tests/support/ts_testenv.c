/* ts_testenv.c - private servers and assertion helpers for tests (see ts_testenv.h).
 *
 * The shared PostgreSQL cluster is described by DIR/env (written by
 * tests/servers.sh): KEY=VALUE lines for PGHOST, PGPORT and PGUSER. A fresh
 * database per test is created through the "postgres" database; its name holds
 * the pid, a counter and the time so two runs or two tests never meet.
 */
#include "ts_testenv.h"
#include "ts_redis_url.h"

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

pid_t ts_testenv_spawn_runtime(const ts_testenv_runtime *rt) {
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(rt->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, STDERR_FILENO);
        dup2(fd, STDOUT_FILENO);
        close(fd);
    }
    setenv("TASTESYNC_KAFKA_BROKERS", rt->brokers, 1);
    setenv("TASTESYNC_REDIS_URL", rt->redis_url, 1);
    setenv("TASTESYNC_POSTGRES_CONNINFO", rt->pg_conninfo, 1);
    setenv("TASTESYNC_STATE_DIR", rt->state, 1);
    setenv("TASTESYNC_GROUP", rt->group, 1);
    if (rt->instance)
        setenv("TASTESYNC_INSTANCE_ID", rt->instance, 1);
    else
        unsetenv("TASTESYNC_INSTANCE_ID");
    execl(TS_BINARY, TS_BINARY, "run", rt->topology, (char *)NULL);
    _exit(127);
}

double ts_testenv_timeout(double seconds) {
    const char *m = getenv("TS_TEST_TIMEOUT_MULTIPLIER");
    double mult = m ? atof(m) : 1.0;
    return seconds * (mult > 0 ? mult : 1.0);
}

/* Reads KEY from DIR/env into out. */
static int ts_testenv_env_get(const char *dir, const char *key, char *out, size_t cap) {
    char path[512];
    snprintf(path, sizeof path, "%s/env", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[512];
    size_t klen = strlen(key);
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strncmp(line, key, klen) == 0 && line[klen] == '=') {
            snprintf(out, cap, "%s", line + klen + 1);
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

int ts_testenv_pg_create_db(char *conninfo, size_t cap) {
    static unsigned counter; /* test support only: tests run one per process */
    const char *dir = getenv("TS_TEST_SERVERS");
    char host[256], port[32], user[64];
    if (!dir || ts_testenv_env_get(dir, "PGHOST", host, sizeof host) != 0 ||
        ts_testenv_env_get(dir, "PGPORT", port, sizeof port) != 0 ||
        ts_testenv_env_get(dir, "PGUSER", user, sizeof user) != 0) {
        snprintf(conninfo, cap, "TS_TEST_SERVERS not set or %s/env unreadable",
                 dir ? dir : "(unset)");
        return -1;
    }
    char admin[512], dbname[64], sql[128];
    snprintf(admin, sizeof admin, "host=%s port=%s user=%s dbname=postgres", host, port, user);
    snprintf(dbname, sizeof dbname, "ts_test_%ld_%u_%ld", (long)getpid(), ++counter,
             (long)time(NULL) % 100000);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", dbname);
    char out[256];
    if (ts_testenv_pg_query(admin, out, sizeof out, sql) != 0) {
        snprintf(conninfo, cap, "%s", out);
        return -1;
    }
    snprintf(conninfo, cap, "host=%s port=%s user=%s dbname=%s", host, port, user, dbname);
    return 0;
}

int ts_testenv_redis_start(ts_testenv_redis *r) {
    memset(r, 0, sizeof *r);
    snprintf(r->dir, sizeof r->dir, "/tmp/ts-redis-XXXXXX");
    if (!mkdtemp(r->dir)) {
        perror("mkdtemp");
        r->dir[0] = '\0';
        return -1;
    }
    return ts_testenv_redis_restart(r);
}

int ts_testenv_redis_restart(ts_testenv_redis *r) {
    char err[256];
    if (ts_servers_start_redis(&r->srv, r->dir, err, sizeof err) != TS_OK) {
        fprintf(stderr, "ts_testenv: redis: %s\n", err);
        return -1;
    }
    snprintf(r->url, sizeof r->url, "%s", ts_servers_redis_url(r->srv));
    return 0;
}

void ts_testenv_redis_stop(ts_testenv_redis *r) {
    ts_servers_destroy(r->srv);
    r->srv = NULL;
    if (r->dir[0]) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", r->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "ts_testenv: could not remove %s\n", r->dir);
        r->dir[0] = '\0';
    }
}

static void ts_testenv_render(const redisReply *reply, char *out, size_t cap) {
    size_t len = strlen(out);
    if (len >= cap)
        return;
    switch (reply->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        snprintf(out + len, cap - len, "%.*s", (int)reply->len, reply->str);
        break;
    case REDIS_REPLY_ERROR:
        snprintf(out + len, cap - len, "ERR: %.*s", (int)reply->len, reply->str);
        break;
    case REDIS_REPLY_INTEGER:
        snprintf(out + len, cap - len, "%lld", reply->integer);
        break;
    case REDIS_REPLY_NIL:
        snprintf(out + len, cap - len, "(nil)");
        break;
    case REDIS_REPLY_ARRAY:
        for (size_t i = 0; i < reply->elements; i++) {
            if (i > 0) {
                len = strlen(out);
                if (len + 1 < cap)
                    snprintf(out + len, cap - len, ",");
            }
            ts_testenv_render(reply->element[i], out, cap);
        }
        break;
    }
}

int ts_testenv_redis_cmd(const char *url, char *out, size_t cap, const char *fmt, ...) {
    out[0] = '\0';
    redisContext *c = ts_redis_connect_sync(url, out, cap);
    if (!c)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    redisReply *reply = redisvCommand(c, fmt, ap);
    va_end(ap);
    int rc = 0;
    if (!reply) {
        snprintf(out, cap, "command failed: %s", c->errstr);
        rc = -1;
    } else {
        ts_testenv_render(reply, out, cap);
        freeReplyObject(reply);
    }
    redisFree(c);
    return rc;
}

int ts_testenv_pg_query(const char *conninfo, char *out, size_t cap, const char *sql) {
    out[0] = '\0';
    PGconn *conn = PQconnectdb(conninfo);
    int rc = 0;
    if (PQstatus(conn) != CONNECTION_OK) {
        snprintf(out, cap, "connect: %s", PQerrorMessage(conn));
        PQfinish(conn);
        return -1;
    }
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK) {
        size_t len = 0;
        for (int row = 0; row < PQntuples(res); row++) {
            for (int col = 0; col < PQnfields(res); col++) {
                const char *v = PQgetisnull(res, row, col) ? "(null)" : PQgetvalue(res, row, col);
                const char *sep = col > 0 ? "|" : (row > 0 ? "\n" : "");
                if (len < cap)
                    len += (size_t)snprintf(out + len, cap - len, "%s%s", sep, v);
            }
        }
    } else if (st != PGRES_COMMAND_OK) {
        snprintf(out, cap, "%s", PQerrorMessage(conn));
        rc = -1;
    }
    PQclear(res);
    PQfinish(conn);
    return rc;
}

static int ts_testenv_rm_entry(const char *path, const struct stat *sb, int flag,
                               struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void ts_testenv_rmtree(const char *dir) {
    nftw(dir, ts_testenv_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
