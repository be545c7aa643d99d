/* ts_servers.c - private redis-server and PostgreSQL child processes.
 *
 * Each server is a child process started with fork + exec. Everything the
 * child needs (argv, the log file descriptor, the user to become) is prepared
 * before fork, because the parent may have other threads (librdkafka) and the
 * child may only make async-signal-safe calls until exec. The child drops to
 * user `postgres` first when PostgreSQL is started as root, and then asks for
 * a parent-death signal (the order matters: changing credentials clears it), so
 * a crashed runtime never leaves servers behind. Readiness is checked with the
 * servers' own clients (a hiredis PING, libpq PQping) while watching that the
 * child is still alive. Stopping is by PID: a polite signal, a bounded wait,
 * then SIGKILL, and always a waitpid so no zombie remains.
 */
#include "ts_servers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ts_log.h"

#define TS_SERVERS_PATH_MAX 1024

struct ts_servers {
    pid_t redis_pid;
    char *redis_dir;
    char *redis_url;
    pid_t pg_pid;
    char *pg_dir;
    char *pg_conninfo;
};

static void ts_servers_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void ts_servers_errf(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* snprintf that reports truncation (paths must fit, or we fail loudly). */
#define TS_SERVERS_FMT(buf, ...) ((size_t)snprintf(buf, sizeof buf, __VA_ARGS__) >= sizeof buf)

static double ts_servers_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void ts_servers_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* mkdir -p; existing folders are fine. */
static int ts_servers_mkdirs(const char *path, mode_t mode) {
    char buf[TS_SERVERS_PATH_MAX];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) == -1 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, mode) == -1 && errno != EEXIST)
        return -1;
    return 0;
}

static char *ts_servers_strdupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *ts_servers_strdupf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

/* Finds an executable on PATH; returns 0 and fills out. Done in the parent
 * because execvp is not async-signal-safe. */
static int ts_servers_which(const char *name, char *out, size_t cap) {
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = strchr(path, ':');
        size_t n = end ? (size_t)(end - path) : strlen(path);
        if (n > 0 && (size_t)snprintf(out, cap, "%.*s/%s", (int)n, path, name) < cap &&
            access(out, X_OK) == 0)
            return 0;
        path += n;
        if (*path == ':')
            path++;
    }
    return -1;
}

/* The newest PostgreSQL bin folder under /usr/lib/postgresql. */
static int ts_servers_pg_bindir(char *out, size_t cap) {
    DIR *d = opendir("/usr/lib/postgresql");
    if (!d)
        return -1;
    long best = -1;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char *end;
        long v = strtol(de->d_name, &end, 10);
        if (end == de->d_name || *end != '\0' || v <= best)
            continue;
        char probe[TS_SERVERS_PATH_MAX];
        if (!TS_SERVERS_FMT(probe, "/usr/lib/postgresql/%ld/bin/postgres", v) &&
            access(probe, X_OK) == 0)
            best = v;
    }
    closedir(d);
    if (best < 0)
        return -1;
    snprintf(out, cap, "/usr/lib/postgresql/%ld/bin", best);
    return 0;
}

/* Who a child runs as: uid (uid_t)-1 means "stay who we are". */
typedef struct ts_servers_user {
    uid_t uid;
    gid_t gid;
} ts_servers_user;

/* Forks and execs argv[0] with stdout/stderr appended to logpath. Only
 * async-signal-safe calls happen in the child. */
static ts_err ts_servers_spawn(char *const argv[], const char *logpath, const ts_servers_user *user,
                               int deathsig, pid_t *pid_out, char *err, size_t errlen) {
    int logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd == -1) {
        ts_servers_errf(err, errlen, "open %s: %s", logpath, strerror(errno));
        return TS_E_IO;
    }
    if (user && user->uid != (uid_t)-1 && fchown(logfd, user->uid, user->gid) == -1) {
        /* Not fatal: the child writes through the inherited descriptor. */
    }
    int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == -1) {
        ts_servers_errf(err, errlen, "fork: %s", strerror(errno));
        close(logfd);
        if (nullfd != -1)
            close(nullfd);
        return TS_E_IO;
    }
    if (pid == 0) {
        /* Its own process group: Ctrl-C in the terminal reaches the runtime,
         * which finishes its batches and then stops the servers itself;
         * PDEATHSIG still ends them if the runtime dies. */
        setpgid(0, 0);
        if (nullfd != -1)
            dup2(nullfd, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        /* The runtime's own descriptors (Kafka sockets, RocksDB files) must not
         * stay open in a server that may outlive it for a moment. */
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        if (user && user->uid != (uid_t)-1) {
            if (setgroups(0, NULL) == -1 || setgid(user->gid) == -1 || setuid(user->uid) == -1)
                _exit(126);
        }
        /* After the credential change, which would clear it. */
        prctl(PR_SET_PDEATHSIG, deathsig);
        if (getppid() != parent)
            _exit(1);
        execv(argv[0], argv);
        _exit(127);
    }
    close(logfd);
    if (nullfd != -1)
        close(nullfd);
    *pid_out = pid;
    return TS_OK;
}

/* Sends sig, waits up to timeout_ms for the child to exit, then SIGKILL.
 * Always reaps it. */
static void ts_servers_stop_pid(pid_t pid, int sig, int timeout_ms) {
    if (pid <= 0)
        return;
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid)
        return; /* it had already exited */
    kill(pid, sig);
    double deadline = ts_servers_now() + timeout_ms / 1000.0;
    while (ts_servers_now() < deadline) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (r == -1 && errno == ECHILD))
            return;
        ts_servers_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
        ;
}

/* Non-zero while the child runs. */
static int ts_servers_alive(pid_t pid) {
    int status;
    pid_t r = waitpid(pid, &status, WNOHANG);
    return r == 0;
}

static ts_servers *ts_servers_get(ts_servers **srv_inout, int *created) {
    *created = 0;
    if (*srv_inout)
        return *srv_inout;
    ts_servers *srv = calloc(1, sizeof *srv);
    if (srv)
        *created = 1;
    return srv;
}

/* ---- redis ---------------------------------------------------------------- */

ts_err ts_servers_start_redis(ts_servers **srv_inout, const char *dir, char *err, size_t errlen) {
    const char *comp = "servers";
    if (!srv_inout || !dir || !*dir) {
        ts_servers_errf(err, errlen, "no folder given");
        return TS_E_INVALID;
    }
    int created;
    ts_servers *srv = ts_servers_get(srv_inout, &created);
    if (!srv) {
        ts_servers_errf(err, errlen, "out of memory");
        return TS_E_NOMEM;
    }
    if (srv->redis_pid > 0) {
        ts_servers_errf(err, errlen, "redis already running (pid %d)", (int)srv->redis_pid);
        return TS_E_INVALID;
    }
    ts_err rc = TS_OK;
    char bin[TS_SERVERS_PATH_MAX], rdir[TS_SERVERS_PATH_MAX], sock[TS_SERVERS_PATH_MAX];
    char logpath[TS_SERVERS_PATH_MAX];
    struct sockaddr_un sun;
    if (TS_SERVERS_FMT(rdir, "%s/redis", dir) || TS_SERVERS_FMT(sock, "%s/redis.sock", rdir) ||
        TS_SERVERS_FMT(logpath, "%s/redis.log", rdir) || strlen(sock) >= sizeof sun.sun_path) {
        ts_servers_errf(err, errlen, "socket path %s is too long for a unix socket", sock);
        rc = TS_E_INVALID;
        goto fail;
    }
    if (ts_servers_which("redis-server", bin, sizeof bin) != 0) {
        ts_servers_errf(err, errlen, "redis-server not found on PATH");
        rc = TS_E_NOTFOUND;
        goto fail;
    }
    if (ts_servers_mkdirs(rdir, 0700) != 0) {
        ts_servers_errf(err, errlen, "mkdir %s: %s", rdir, strerror(errno));
        rc = TS_E_IO;
        goto fail;
    }
    /* clang-format off */
    char *argv[] = {bin,
                    "--port", "0",                /* no TCP at all */
                    "--unixsocket", sock,
                    "--unixsocketperm", "700",
                    "--save", "",                 /* no persistence */
                    "--appendonly", "no",
                    "--dir", rdir,
                    "--daemonize", "no",
                    "--logfile", "",              /* stdout, i.e. the log file */
                    NULL};
    /* clang-format on */
    pid_t pid;
    rc = ts_servers_spawn(argv, logpath, NULL, SIGTERM, &pid, err, errlen);
    if (rc != TS_OK)
        goto fail;

    /* Wait until it answers PING (and notice if it died instead). */
    double deadline = ts_servers_now() + 10.0;
    int ready = 0;
    while (!ready && ts_servers_now() < deadline && ts_servers_alive(pid)) {
        struct timeval tv = {0, 200000};
        redisContext *c = redisConnectUnixWithTimeout(sock, tv);
        if (c && !c->err) {
            redisReply *reply = redisCommand(c, "PING");
            ready = reply && reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "PONG") == 0;
            if (reply)
                freeReplyObject(reply);
        }
        redisFree(c);
        if (!ready)
            ts_servers_sleep_ms(20);
    }
    if (!ready) {
        ts_servers_stop_pid(pid, SIGKILL, 0);
        ts_servers_errf(err, errlen, "redis-server did not answer PING within 10 s (see %s)",
                        logpath);
        rc = TS_E_IO;
        goto fail;
    }
    free(srv->redis_dir);
    free(srv->redis_url);
    srv->redis_dir = strdup(rdir);
    srv->redis_url = ts_servers_strdupf("unix://%s", sock);
    srv->redis_pid = pid;
    if (!srv->redis_dir || !srv->redis_url) {
        ts_servers_stop_redis(srv);
        ts_servers_errf(err, errlen, "out of memory");
        rc = TS_E_NOMEM;
        goto fail;
    }
    ts_log_info(comp, "redis-server started pid=%d socket=%s log=%s", (int)pid, sock, logpath);
    *srv_inout = srv;
    return TS_OK;
fail:
    if (created)
        ts_servers_destroy(srv);
    return rc;
}

/* ---- PostgreSQL ----------------------------------------------------------- */

/* Runs a child to completion (initdb). */
static ts_err ts_servers_run(char *const argv[], const char *logpath, const ts_servers_user *user,
                             char *err, size_t errlen) {
    pid_t pid;
    ts_err rc = ts_servers_spawn(argv, logpath, user, SIGKILL, &pid, err, errlen);
    if (rc != TS_OK)
        return rc;
    int status;
    while (waitpid(pid, &status, 0) == -1) {
        if (errno != EINTR) {
            ts_servers_errf(err, errlen, "waitpid: %s", strerror(errno));
            return TS_E_IO;
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        ts_servers_errf(err, errlen, "%s failed (status %d, see %s)", argv[0], status, logpath);
        return TS_E_IO;
    }
    return TS_OK;
}

/* Creates database "tastesync" unless it exists. */
static ts_err ts_servers_pg_createdb(const char *conninfo, char *err, size_t errlen) {
    PGconn *conn = PQconnectdb(conninfo);
    ts_err rc = TS_OK;
    if (PQstatus(conn) != CONNECTION_OK) {
        ts_servers_errf(err, errlen, "connect: %s", PQerrorMessage(conn));
        rc = TS_E_IO;
        goto out;
    }
    PGresult *res = PQexec(conn, "SELECT 1 FROM pg_database WHERE datname = 'tastesync'");
    int exists = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0;
    PQclear(res);
    if (!exists) {
        res = PQexec(conn, "CREATE DATABASE tastesync");
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            ts_servers_errf(err, errlen, "CREATE DATABASE tastesync: %s", PQerrorMessage(conn));
            rc = TS_E_IO;
        }
        PQclear(res);
    }
out:
    PQfinish(conn);
    return rc;
}

ts_err ts_servers_start_postgres(ts_servers **srv_inout, const char *dir, char *err,
                                 size_t errlen) {
    const char *comp = "servers";
    if (!srv_inout || !dir || !*dir) {
        ts_servers_errf(err, errlen, "no folder given");
        return TS_E_INVALID;
    }
    int created;
    ts_servers *srv = ts_servers_get(srv_inout, &created);
    if (!srv) {
        ts_servers_errf(err, errlen, "out of memory");
        return TS_E_NOMEM;
    }
    if (srv->pg_pid > 0) {
        ts_servers_errf(err, errlen, "postgres already running (pid %d)", (int)srv->pg_pid);
        return TS_E_INVALID;
    }
    ts_err rc = TS_OK;
    char bindir[TS_SERVERS_PATH_MAX], pgdir[TS_SERVERS_PATH_MAX], data[TS_SERVERS_PATH_MAX];
    char initdb[TS_SERVERS_PATH_MAX], postgres[TS_SERVERS_PATH_MAX], probe[TS_SERVERS_PATH_MAX];
    char initlog[TS_SERVERS_PATH_MAX], log[TS_SERVERS_PATH_MAX];
    char sockopt[TS_SERVERS_PATH_MAX + 64];
    char *conninfo = NULL, *pingconn = NULL;
    struct sockaddr_un sun;
    ts_servers_user user = {(uid_t)-1, (gid_t)-1};
    const char *username;

    if (ts_servers_pg_bindir(bindir, sizeof bindir) != 0) {
        ts_servers_errf(err, errlen, "no PostgreSQL under /usr/lib/postgresql/*/bin");
        rc = TS_E_NOTFOUND;
        goto fail;
    }
    if (TS_SERVERS_FMT(pgdir, "%s/pg", dir) || TS_SERVERS_FMT(data, "%s/data", pgdir) ||
        TS_SERVERS_FMT(initdb, "%s/initdb", bindir) ||
        TS_SERVERS_FMT(postgres, "%s/postgres", bindir) ||
        TS_SERVERS_FMT(initlog, "%s/initdb.log", pgdir) ||
        TS_SERVERS_FMT(log, "%s/postgres.log", pgdir) ||
        TS_SERVERS_FMT(probe, "%s/PG_VERSION", data) ||
        TS_SERVERS_FMT(sockopt, "unix_socket_directories=%s", pgdir) ||
        strlen(pgdir) + sizeof("/.s.PGSQL.5432") > sizeof sun.sun_path) {
        ts_servers_errf(err, errlen, "folder %s is too long for a unix socket", pgdir);
        rc = TS_E_INVALID;
        goto fail;
    }
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("postgres");
        if (!pw) {
            ts_servers_errf(err, errlen, "running as root and there is no user postgres");
            rc = TS_E_NOTFOUND;
            goto fail;
        }
        user.uid = pw->pw_uid;
        user.gid = pw->pw_gid;
        username = "postgres";
    } else {
        struct passwd *pw = getpwuid(geteuid());
        username = pw ? pw->pw_name : "postgres";
    }
    if (ts_servers_mkdirs(pgdir, 0700) != 0) {
        ts_servers_errf(err, errlen, "mkdir %s: %s", pgdir, strerror(errno));
        rc = TS_E_IO;
        goto fail;
    }
    if (user.uid != (uid_t)-1) {
        struct stat st;
        /* The postgres user must be able to reach its folder: give the caller's
         * folder o+x (search only, no listing). */
        if (stat(dir, &st) == 0 && !(st.st_mode & S_IXOTH))
            chmod(dir, (st.st_mode & 07777) | S_IXOTH);
        if (chown(pgdir, user.uid, user.gid) == -1) {
            ts_servers_errf(err, errlen, "chown %s: %s", pgdir, strerror(errno));
            rc = TS_E_IO;
            goto fail;
        }
    }
    if (access(probe, F_OK) != 0) {
        char userarg[64];
        snprintf(userarg, sizeof userarg, "--username=%s", username);
        char *argv[] = {
            initdb,       "-D", data, userarg, "--auth=trust", "--no-sync", "--encoding=UTF8",
            "--locale=C", NULL};
        rc = ts_servers_run(argv, initlog, &user, err, errlen);
        if (rc != TS_OK)
            goto fail;
        ts_log_info(comp, "initdb done data=%s", data);
    }
    char *argv[] = {postgres,
                    "-D",
                    data,
                    "-c",
                    "listen_addresses=",
                    "-c",
                    sockopt,
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    NULL};
    pid_t pid;
    /* SIGINT is PostgreSQL's fast shutdown: no waiting for clients. */
    rc = ts_servers_spawn(argv, log, &user, SIGINT, &pid, err, errlen);
    if (rc != TS_OK)
        goto fail;

    conninfo = ts_servers_strdupf("host=%s dbname=tastesync user=%s", pgdir, username);
    pingconn =
        ts_servers_strdupf("host=%s dbname=postgres user=%s connect_timeout=2", pgdir, username);
    if (!conninfo || !pingconn) {
        ts_servers_stop_pid(pid, SIGINT, 10000);
        ts_servers_errf(err, errlen, "out of memory");
        rc = TS_E_NOMEM;
        goto fail;
    }
    double deadline = ts_servers_now() + 30.0;
    int ready = 0;
    while (!ready && ts_servers_now() < deadline && ts_servers_alive(pid)) {
        ready = PQping(pingconn) == PQPING_OK;
        if (!ready)
            ts_servers_sleep_ms(50);
    }
    if (!ready) {
        ts_servers_stop_pid(pid, SIGINT, 10000);
        ts_servers_errf(err, errlen, "postgres did not accept connections within 30 s (see %s)",
                        log);
        rc = TS_E_IO;
        goto fail;
    }
    rc = ts_servers_pg_createdb(pingconn, err, errlen);
    if (rc != TS_OK) {
        ts_servers_stop_pid(pid, SIGINT, 10000);
        goto fail;
    }
    free(pingconn);
    free(srv->pg_dir);
    free(srv->pg_conninfo);
    srv->pg_dir = strdup(pgdir);
    srv->pg_conninfo = conninfo;
    srv->pg_pid = pid;
    ts_log_info(comp, "postgres started pid=%d data=%s socket_dir=%s log=%s", (int)pid, data, pgdir,
                log);
    *srv_inout = srv;
    return TS_OK;
fail:
    free(conninfo);
    free(pingconn);
    if (created)
        ts_servers_destroy(srv);
    return rc;
}

const char *ts_servers_redis_url(const ts_servers *srv) {
    return srv && srv->redis_pid > 0 ? srv->redis_url : NULL;
}

const char *ts_servers_pg_conninfo(const ts_servers *srv) {
    return srv && srv->pg_pid > 0 ? srv->pg_conninfo : NULL;
}

pid_t ts_servers_redis_pid(const ts_servers *srv) { return srv ? srv->redis_pid : 0; }

pid_t ts_servers_pg_pid(const ts_servers *srv) { return srv ? srv->pg_pid : 0; }

void ts_servers_stop_redis(ts_servers *srv) {
    if (!srv || srv->redis_pid <= 0)
        return;
    ts_servers_stop_pid(srv->redis_pid, SIGTERM, 5000);
    ts_log_info("servers", "redis-server stopped pid=%d", (int)srv->redis_pid);
    srv->redis_pid = 0;
}

void ts_servers_stop_postgres(ts_servers *srv) {
    if (!srv || srv->pg_pid <= 0)
        return;
    ts_servers_stop_pid(srv->pg_pid, SIGINT, 10000);
    ts_log_info("servers", "postgres stopped pid=%d", (int)srv->pg_pid);
    srv->pg_pid = 0;
}

void ts_servers_destroy(ts_servers *srv) {
    if (!srv)
        return;
    ts_servers_stop_redis(srv);
    ts_servers_stop_postgres(srv);
    free(srv->redis_dir);
    free(srv->redis_url);
    free(srv->pg_dir);
    free(srv->pg_conninfo);
    free(srv);
}
