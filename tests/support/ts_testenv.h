/* ts_testenv.h - real servers for tests, private to one test.
 *
 * PostgreSQL: one cluster per ctest run is started by tests/servers.sh (a CTest
 * fixture) in the folder named by env TS_TEST_SERVERS; each test makes its own
 * database in it with ts_testenv_pg_create_db, so tests never collide.
 * Redis: each test starts its own redis-server (ts_servers) in a temp folder.
 * Small synchronous helpers run one Redis command or one SQL query for
 * assertions. Everything here blocks; call it from test code, not callbacks.
 */
#ifndef TS_TESTENV_H
#define TS_TESTENV_H

#include <stddef.h>
#include <sys/types.h>

#include "ts_servers.h"

/** How to run a `tastesync run` child (every string borrowed). */
typedef struct ts_testenv_runtime {
    const char *topology; /* path of the topology file */
    const char *brokers, *redis_url, *pg_conninfo;
    const char *state; /* its state folder */
    const char *group;
    const char *log;      /* stdout and stderr are appended here */
    const char *instance; /* a static instance id, or NULL for none */
} ts_testenv_runtime;

/** Forks and execs `tastesync run` with the addresses of `rt` in its
 * environment; the child dies with its parent. @returns its pid, or -1. */
pid_t ts_testenv_spawn_runtime(const ts_testenv_runtime *rt);

/** Removes `dir` and everything below it (links are not followed). */
void ts_testenv_rmtree(const char *dir);

/** Scales a timeout by env TS_TEST_TIMEOUT_MULTIPLIER (default 1). */
double ts_testenv_timeout(double seconds);

/** Creates a fresh database (name from pid + counter + time) in the cluster of
 * TS_TEST_SERVERS and writes its conninfo into `conninfo`.
 * @returns 0, or -1 with a reason in `conninfo` (no TS_TEST_SERVERS, ...). */
int ts_testenv_pg_create_db(char *conninfo, size_t cap);

/** A private redis-server for one test. */
typedef struct ts_testenv_redis {
    ts_servers *srv;
    char dir[128]; /* temp folder, removed by stop */
    char url[192]; /* "unix://<dir>/redis/redis.sock" */
} ts_testenv_redis;

/** Starts a redis-server in a new folder under /tmp. @returns 0 or -1 (logged). */
int ts_testenv_redis_start(ts_testenv_redis *r);
/** Starts redis again in the same folder (same socket) after ts_servers_stop_redis. */
int ts_testenv_redis_restart(ts_testenv_redis *r);
/** Stops the server by PID and removes the folder. Safe to call twice. */
void ts_testenv_redis_stop(ts_testenv_redis *r);

/** Runs one command (hiredis format string) on a new synchronous connection to
 * `url` (any url of ts_redis_url.h) and renders the reply into `out`: strings and
 * status as-is, integers in decimal, nil as "(nil)", errors as "ERR: <text>",
 * arrays as their elements joined by ','.
 * @returns 0, or -1 when the connection fails (reason in out). */
int ts_testenv_redis_cmd(const char *url, char *out, size_t cap, const char *fmt, ...);

/** Runs `sql` on a new connection and renders the result into `out`: fields
 * joined by '|', rows by '\n', NULL as "(null)"; a command without rows gives "".
 * @returns 0, or -1 on failure (error message in out). */
int ts_testenv_pg_query(const char *conninfo, char *out, size_t cap, const char *sql);

#endif
