/* ts_migrate.c - versioned migrations applied once (see ts_migrate.h).
 *
 * Synchronous libpq on a private connection. For every migration, in order:
 * BEGIN; take a transaction advisory lock (so two instances starting together
 * queue up here); create ts_migrations if needed; skip the migration when its
 * name is recorded; otherwise run its text (simple query protocol, so a file
 * may hold many statements), record it and COMMIT. Any failure rolls the one
 * migration back and stops.
 */
#include "ts_migrate.h"

#include <dirent.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ts_log.h"

#define TS_MIGRATE_COMP "migrate"

static const char ts_migrate_builtin_name[] = "tastesync/0001_offsets.sql";

/* The Postgres sink's fence: one row per task with the offset after its last
 * applied batch. The upsert changes the row only when the batch is newer, so
 * "no row affected" means the batch (or a later one) was already applied. */
static const char ts_migrate_builtin_sql[] =
    "CREATE TABLE IF NOT EXISTS ts_offsets (\n"
    "  task text PRIMARY KEY,\n"
    "  next_offset bigint NOT NULL,\n"
    "  updated_at timestamptz NOT NULL DEFAULT now());\n"
    "CREATE OR REPLACE FUNCTION ts_claim_batch(p_task text, p_next_offset bigint)\n"
    "RETURNS void LANGUAGE plpgsql AS $fn$\n"
    "BEGIN\n"
    "  INSERT INTO ts_offsets AS o (task, next_offset, updated_at)\n"
    "  VALUES (p_task, p_next_offset, now())\n"
    "  ON CONFLICT (task) DO UPDATE\n"
    "    SET next_offset = EXCLUDED.next_offset, updated_at = EXCLUDED.updated_at\n"
    "    WHERE o.next_offset < EXCLUDED.next_offset;\n"
    "  IF NOT FOUND THEN\n"
    "    RAISE EXCEPTION 'batch of task % ending at offset % was already applied',\n"
    "      p_task, p_next_offset USING ERRCODE = '" TS_MIGRATE_ALREADY_APPLIED "';\n"
    "  END IF;\n"
    "END\n"
    "$fn$;\n";

/* Partitions created as needed. A range-partitioned table registered in
 * ts_partitioning(parent, unit) gets its partitions on demand:
 * ts_partition_ensure(parent, at) creates [date_trunc(unit, at), +1 unit) of
 * UTC time, named <parent>_YYYY / _YYYYMM / _YYYYMMDD (year / month / week
 * and day), unless it exists; ts_partition_ensure_rows(parent, rows) does so
 * for the partition key value of every row of a JSON array of {column: text}
 * objects, looking the key column up in the catalog, and ignores a table that
 * is not registered. The Postgres sink calls the latter when a flush fails
 * with "no partition of relation ... found for row" (SQLSTATE 23514). An
 * advisory lock per partition name serializes concurrent creators, so the
 * second one finds the partition instead of failing on it. */
static const char ts_migrate_partition_name[] = "tastesync/0002_partitioning.sql";

static const char ts_migrate_partition_sql[] =
    "CREATE TABLE IF NOT EXISTS ts_partitioning (\n"
    "  parent text PRIMARY KEY,\n"
    "  unit text NOT NULL CHECK (unit IN ('day', 'week', 'month', 'year')));\n"
    "CREATE OR REPLACE FUNCTION ts_partition_ensure(p_parent text, p_at timestamptz)\n"
    "RETURNS text LANGUAGE plpgsql AS $fn$\n"
    "DECLARE\n"
    "  v_unit text;\n"
    "  v_rel regclass;\n"
    "  v_schema text;\n"
    "  v_name text;\n"
    "  v_lo timestamp;\n"
    "  v_hi timestamp;\n"
    "BEGIN\n"
    "  SELECT unit INTO v_unit FROM ts_partitioning WHERE parent = p_parent;\n"
    "  IF v_unit IS NULL THEN\n"
    "    RAISE EXCEPTION 'table % is not registered in ts_partitioning', p_parent\n"
    "      USING ERRCODE = '22023';\n"
    "  END IF;\n"
    "  v_rel := p_parent::regclass;\n"
    "  v_lo := date_trunc(v_unit, p_at AT TIME ZONE 'UTC');\n"
    "  v_hi := v_lo + ('1 ' || v_unit)::interval;\n"
    "  SELECT n.nspname, c.relname INTO v_schema, v_name\n"
    "    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = v_rel;\n"
    "  v_name := v_name || '_' || to_char(v_lo, CASE v_unit WHEN 'year' THEN 'YYYY'\n"
    "    WHEN 'month' THEN 'YYYYMM' ELSE 'YYYYMMDD' END);\n"
    "  PERFORM pg_advisory_xact_lock(hashtext('tastesync.partition:' || v_schema || '.' || "
    "v_name));\n"
    "  IF to_regclass(format('%I.%I', v_schema, v_name)) IS NULL THEN\n"
    "    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',\n"
    "      v_schema, v_name, v_rel, v_lo::text || '+00', v_hi::text || '+00');\n"
    "  END IF;\n"
    "  RETURN format('%I.%I', v_schema, v_name);\n"
    "END\n"
    "$fn$;\n"
    "CREATE OR REPLACE FUNCTION ts_partition_ensure_rows(p_parent text, p_rows jsonb)\n"
    "RETURNS void LANGUAGE plpgsql AS $fn$\n"
    "DECLARE\n"
    "  v_col text;\n"
    "  v_at text;\n"
    "BEGIN\n"
    "  IF NOT EXISTS (SELECT 1 FROM ts_partitioning WHERE parent = p_parent) THEN\n"
    "    RETURN;\n"
    "  END IF;\n"
    "  SELECT a.attname INTO v_col FROM pg_partitioned_table pt\n"
    "    JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]\n"
    "    WHERE pt.partrelid = p_parent::regclass AND pt.partnatts = 1 AND pt.partstrat = 'r';\n"
    "  IF v_col IS NULL THEN\n"
    "    RETURN;\n"
    "  END IF;\n"
    "  FOR v_at IN SELECT DISTINCT r ->> v_col FROM jsonb_array_elements(p_rows) r\n"
    "             WHERE r ->> v_col IS NOT NULL LOOP\n"
    "    PERFORM ts_partition_ensure(p_parent, v_at::timestamptz);\n"
    "  END LOOP;\n"
    "END\n"
    "$fn$;\n";

/* Who applied each batch. A flush names its owner: "<instance>#<n>", one
 * continuous holding of the partition by one task object. ts_offsets keeps
 * the last owner, and every change of owner is recorded in ts_handoffs, so an
 * owner that appears twice in a task's hand-overs (ordered by offset) means
 * two instances processed the partition at the same time. */
static const char ts_migrate_owner_name[] = "tastesync/0003_owners.sql";

static const char ts_migrate_owner_sql[] =
    "ALTER TABLE ts_offsets ADD COLUMN IF NOT EXISTS owner text;\n"
    "CREATE TABLE IF NOT EXISTS ts_handoffs (\n"
    "  task text NOT NULL,\n"
    "  next_offset bigint NOT NULL,\n"
    "  owner text NOT NULL,\n"
    "  at timestamptz NOT NULL DEFAULT now(),\n"
    "  PRIMARY KEY (task, next_offset));\n"
    "CREATE OR REPLACE FUNCTION ts_claim_batch(p_task text, p_next_offset bigint, p_owner text)\n"
    "RETURNS void LANGUAGE plpgsql AS $fn$\n"
    "DECLARE\n"
    "  v_owner text;\n"
    "BEGIN\n"
    "  SELECT owner INTO v_owner FROM ts_offsets WHERE task = p_task;\n"
    "  PERFORM ts_claim_batch(p_task, p_next_offset);\n"
    "  UPDATE ts_offsets SET owner = p_owner WHERE task = p_task;\n"
    "  IF v_owner IS DISTINCT FROM p_owner THEN\n"
    "    INSERT INTO ts_handoffs (task, next_offset, owner) VALUES (p_task, p_next_offset, p_owner)\n"
    "    ON CONFLICT DO NOTHING;\n"
    "  END IF;\n"
    "END\n"
    "$fn$;\n";

/* The claim with one write: 0003's version wrote the task's ts_offsets row
 * twice per batch (the offset through the two-argument claim, then the
 * owner) in four statements; PostgreSQL's CPU per batch is mostly this
 * function. Same fence, same hand-over records. */
static const char ts_migrate_claim_name[] = "tastesync/0004_claim_one_write.sql";

static const char ts_migrate_claim_sql[] =
    "CREATE OR REPLACE FUNCTION ts_claim_batch(p_task text, p_next_offset bigint, p_owner text)\n"
    "RETURNS void LANGUAGE plpgsql AS $fn$\n"
    "DECLARE\n"
    "  v_owner text;\n"
    "BEGIN\n"
    "  SELECT owner INTO v_owner FROM ts_offsets WHERE task = p_task;\n"
    "  INSERT INTO ts_offsets AS o (task, next_offset, updated_at, owner)\n"
    "  VALUES (p_task, p_next_offset, now(), p_owner)\n"
    "  ON CONFLICT (task) DO UPDATE\n"
    "    SET next_offset = EXCLUDED.next_offset, updated_at = EXCLUDED.updated_at,\n"
    "        owner = EXCLUDED.owner\n"
    "    WHERE o.next_offset < EXCLUDED.next_offset;\n"
    "  IF NOT FOUND THEN\n"
    "    RAISE EXCEPTION 'batch of task % ending at offset % was already applied',\n"
    "      p_task, p_next_offset USING ERRCODE = '" TS_MIGRATE_ALREADY_APPLIED "';\n"
    "  END IF;\n"
    "  IF v_owner IS DISTINCT FROM p_owner THEN\n"
    "    INSERT INTO ts_handoffs (task, next_offset, owner) VALUES (p_task, p_next_offset, p_owner)\n"
    "    ON CONFLICT DO NOTHING;\n"
    "  END IF;\n"
    "END\n"
    "$fn$;\n";

static void ts_migrate_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void ts_migrate_errf(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void ts_migrate_notice(void *arg, const char *message) {
    (void)arg;
    ts_log_debug(TS_MIGRATE_COMP, "%s", message);
}

/* Runs one command; returns 0 when it succeeded (and gives the result to
 * *out if out is non-NULL), -1 with the server's message in err. */
static int ts_migrate_exec(PGconn *conn, const char *sql, const char *param, PGresult **out,
                           char *err, size_t errlen) {
    PGresult *res =
        param ? PQexecParams(conn, sql, 1, NULL, &param, NULL, NULL, 0) : PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        ts_migrate_errf(err, errlen, "%s", PQerrorMessage(conn));
        size_t len = strlen(err);
        while (len > 0 && err[len - 1] == '\n')
            err[--len] = '\0';
        PQclear(res);
        return -1;
    }
    if (out)
        *out = res;
    else
        PQclear(res);
    return 0;
}

/* Applies one migration unless recorded; *applied tells whether it ran. */
static ts_err ts_migrate_one(PGconn *conn, const char *name, const char *sql, int *applied,
                             char *err, size_t errlen) {
    char msg[1024];
    PGresult *res = NULL;
    *applied = 0;
    if (ts_migrate_exec(conn, "BEGIN", NULL, NULL, msg, sizeof msg) != 0 ||
        ts_migrate_exec(conn, "SELECT pg_advisory_xact_lock(hashtext('tastesync.migrate'))", NULL,
                        NULL, msg, sizeof msg) != 0 ||
        ts_migrate_exec(conn,
                        "CREATE TABLE IF NOT EXISTS ts_migrations (name text PRIMARY KEY, "
                        "applied_at timestamptz NOT NULL DEFAULT now())",
                        NULL, NULL, msg, sizeof msg) != 0 ||
        ts_migrate_exec(conn, "SELECT 1 FROM ts_migrations WHERE name = $1", name, &res, msg,
                        sizeof msg) != 0)
        goto fail;
    int recorded = PQntuples(res) > 0;
    PQclear(res);
    if (recorded) {
        if (ts_migrate_exec(conn, "COMMIT", NULL, NULL, msg, sizeof msg) != 0)
            goto fail;
        return TS_OK;
    }
    if (ts_migrate_exec(conn, sql, NULL, NULL, msg, sizeof msg) != 0 ||
        ts_migrate_exec(conn, "INSERT INTO ts_migrations (name) VALUES ($1)", name, NULL, msg,
                        sizeof msg) != 0 ||
        ts_migrate_exec(conn, "COMMIT", NULL, NULL, msg, sizeof msg) != 0)
        goto fail;
    *applied = 1;
    ts_log_info(TS_MIGRATE_COMP, "applied migration %s", name);
    return TS_OK;
fail:
    /* After an error the transaction is aborted; ROLLBACK ends it (and is
     * harmless when BEGIN itself failed). */
    PQclear(PQexec(conn, "ROLLBACK"));
    ts_migrate_errf(err, errlen, "migration %s: %s", name, msg);
    ts_log_error(TS_MIGRATE_COMP, "migration %s failed: %s", name, msg);
    return TS_E_FATAL;
}

static int ts_migrate_is_sql(const struct dirent *de) {
    size_t len = strlen(de->d_name);
    return de->d_name[0] != '.' && len > 4 && strcmp(de->d_name + len - 4, ".sql") == 0;
}

/* Byte order, whatever the locale. */
static int ts_migrate_by_name(const struct dirent **a, const struct dirent **b) {
    return strcmp((*a)->d_name, (*b)->d_name);
}

static char *ts_migrate_read(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nbuf = realloc(buf, cap);
            if (!nbuf) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nbuf;
        }
        size_t n = fread(buf + len, 1, 4096, f);
        len += n;
        if (n < 4096)
            break;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

/* Applies the *.sql files of one folder in name order. */
static ts_err ts_migrate_dir(PGconn *conn, const char *dir, const char *owner, int *count,
                             char *err, size_t errlen) {
    struct dirent **list = NULL;
    int n = scandir(dir, &list, ts_migrate_is_sql, ts_migrate_by_name);
    if (n < 0) {
        ts_migrate_errf(err, errlen, "migrations folder %s: %s", dir, strerror(errno));
        return TS_E_CONFIG;
    }
    size_t dlen = strlen(dir);
    while (dlen > 1 && dir[dlen - 1] == '/')
        dlen--;
    ts_err rc = TS_OK;
    int i = 0;
    for (; i < n && rc == TS_OK; i++) {
        char path[4096], name[1024];
        snprintf(path, sizeof path, "%.*s/%s", (int)dlen, dir, list[i]->d_name);
        snprintf(name, sizeof name, "%s/%s", owner, list[i]->d_name);
        char *sql = ts_migrate_read(path);
        if (!sql) {
            ts_migrate_errf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            rc = TS_E_CONFIG;
        } else {
            int applied;
            rc = ts_migrate_one(conn, name, sql, &applied, err, errlen);
            *count += applied;
            free(sql);
        }
        free(list[i]);
    }
    for (; i < n; i++)
        free(list[i]);
    free(list);
    return rc;
}

ts_err ts_migrate_apply(const char *conninfo, const char *const *dirs, const char *const *owners,
                        size_t n_dirs, char *err, size_t errlen) {
    if (!conninfo || (n_dirs > 0 && (!dirs || !owners))) {
        ts_migrate_errf(err, errlen, "no conninfo or folders");
        return TS_E_INVALID;
    }
    /* The server may still be starting (embedded default, containers). */
    PGconn *conn = NULL;
    for (int attempt = 0; attempt < 50; attempt++) {
        conn = PQconnectdb(conninfo);
        if (PQstatus(conn) == CONNECTION_OK)
            break;
        if (attempt == 49) {
            ts_migrate_errf(err, errlen, "cannot connect for migrations: %s", PQerrorMessage(conn));
            PQfinish(conn);
            return TS_E_RETRY;
        }
        PQfinish(conn);
        conn = NULL;
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
    PQsetNoticeProcessor(conn, ts_migrate_notice, NULL);
    static const struct {
        const char *name, *sql;
    } builtin[] = {
        {ts_migrate_builtin_name, ts_migrate_builtin_sql},
        {ts_migrate_partition_name, ts_migrate_partition_sql},
        {ts_migrate_owner_name, ts_migrate_owner_sql},
        {ts_migrate_claim_name, ts_migrate_claim_sql},
    };
    int count = 0, applied = 0;
    ts_err rc = TS_OK;
    for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]) && rc == TS_OK; i++) {
        rc = ts_migrate_one(conn, builtin[i].name, builtin[i].sql, &applied, err, errlen);
        count += applied;
    }
    for (size_t i = 0; i < n_dirs && rc == TS_OK; i++)
        rc = ts_migrate_dir(conn, dirs[i], owners[i], &count, err, errlen);
    PQfinish(conn);
    if (rc == TS_OK)
        ts_log_info(TS_MIGRATE_COMP, "migrations up to date (%d applied now)", count);
    return rc;
}
