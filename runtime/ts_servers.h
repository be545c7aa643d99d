/* ts_servers.h - a private redis-server and PostgreSQL cluster in a folder.
 *
 * The runtime's embedded default (no addresses configured) and the tests use
 * real servers that nobody else can reach: they listen only on unix sockets
 * inside a given folder, so two instances on one machine never collide and no
 * port is ever fixed. Every server started here is a child process that gets
 * SIGTERM when its parent dies, and ts_servers_destroy stops it by PID.
 *
 * Threading: a ts_servers belongs to one thread. The start and destroy calls
 * block (they wait for a server to answer or to exit); call them at startup and
 * shutdown, never from a loop callback on the hot path.
 */
#ifndef TS_SERVERS_H
#define TS_SERVERS_H

#include <stddef.h>
#include <sys/types.h>

#include "ts_error.h"

typedef struct ts_servers ts_servers;

/** Starts redis-server (found on PATH) in `<dir>/redis`, listening ONLY on the
 * unix socket `<dir>/redis/redis.sock` (port 0, no persistence), and waits up
 * to 10 s until it answers PING. Its log goes to `<dir>/redis/redis.log`.
 *
 * @param srv_inout  *srv_inout NULL: a ts_servers is created and stored there
 *                   on success (on failure it stays NULL). Otherwise the redis
 *                   server is added to the given one; it must not have a redis
 *                   running already (one that was stopped may be started again,
 *                   on the same socket).
 * @param dir        the folder (created if missing); copied.
 * @returns TS_OK; TS_E_INVALID (redis already running, path too long for a
 *          socket); TS_E_IO (could not start or it never answered), with
 *          detail in err.
 */
ts_err ts_servers_start_redis(ts_servers **srv_inout, const char *dir, char *err, size_t errlen);

/** Starts PostgreSQL (the newest /usr/lib/postgresql/<ver>/bin) with its data
 * in `<dir>/pg/data` (initdb once if missing; trust auth, fsync off), TCP off
 * (listen_addresses='') and its socket in `<dir>/pg`; logs go to
 * `<dir>/pg/initdb.log` and `<dir>/pg/postgres.log`. Waits up to 30 s until it
 * accepts connections and creates database "tastesync" if missing.
 *
 * PostgreSQL refuses to run as root: when the process is root, `<dir>/pg` is
 * given to user `postgres`, `<dir>` gets o+x so that user can reach it, and
 * initdb and postgres run as that user. Root clients still reach the socket.
 *
 * @param srv_inout  as for ts_servers_start_redis.
 * @returns TS_OK, TS_E_INVALID (already running), TS_E_NOTFOUND (no
 *          PostgreSQL installed, no user postgres), TS_E_IO.
 */
ts_err ts_servers_start_postgres(ts_servers **srv_inout, const char *dir, char *err, size_t errlen);

/** @returns "unix://<dir>/redis/redis.sock", owned by srv; NULL when no redis
 * was started. Valid until ts_servers_destroy. */
const char *ts_servers_redis_url(const ts_servers *srv);

/** @returns "host=<dir>/pg dbname=tastesync user=<superuser>", owned by srv;
 * NULL when no PostgreSQL was started. Valid until ts_servers_destroy. */
const char *ts_servers_pg_conninfo(const ts_servers *srv);

/** @returns the PID of the running redis-server or postgres postmaster, or 0. */
pid_t ts_servers_redis_pid(const ts_servers *srv);
pid_t ts_servers_pg_pid(const ts_servers *srv);

/** Stops the redis-server (SIGTERM, waits up to 5 s, then SIGKILL) and reaps
 * it; a later ts_servers_start_redis may start a new one on the same socket.
 * Harmless when it already exited or was never started. */
void ts_servers_stop_redis(ts_servers *srv);

/** Stops PostgreSQL (SIGINT = fast shutdown, waits up to 10 s, then SIGKILL). */
void ts_servers_stop_postgres(ts_servers *srv);

/** Stops every server it started, by PID, and frees srv. Accepts NULL. */
void ts_servers_destroy(ts_servers *srv);

#endif
