/* bench_components.c - each component's ceiling, alone, with the stream's shapes.
 *
 * Every figure uses the pre-encoded mixed stream: its Avro messages for Kafka
 * and avro-c, its partition keys in the runtime's state-key layout
 * ('S' task 0x00 store 0x1f key) with the events' JSON bodies as values for
 * RocksDB, JSON documents as view values for Redis, and rows of the `books`
 * table's shape for PostgreSQL. Each measures one client in this process
 * against the servers of the run (the same ones the runtime uses later), so
 * the figures are ceilings of a part, not of the pipeline.
 */
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "ts_kconf.h"
#include "ts_redis_url.h"

#define BENCH_TOPIC "bench.consume"
#define BENCH_PARTS 16

static void bench_put(bench_ctx *b, const char *name, json_t *val, const char *unit,
                      const char *note) {
    json_object_set(json_object_get(b->results, "components"), name, val);
    bench_row(b, "component", name, json_real_value(json_object_get(val, "per_s")), unit, note);
    json_decref(val);
}

static size_t bench_min(size_t a, size_t b) { return a < b ? a : b; }

/* ---- Kafka ------------------------------------------------------------------ */

static int bench_kafka_consume(bench_ctx *b) {
    size_t n = bench_min(b->n_msgs, b->short_mode ? 20000 : 500000);
    ts_cluster_topic_create(b->cluster, BENCH_TOPIC, BENCH_PARTS);
    rd_kafka_t *prod = bench_producer(b, 20);
    if (!prod)
        return -1;
    for (size_t i = 0; i < n; i++) {
        while (rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(BENCH_TOPIC),
                                 RD_KAFKA_V_KEY(b->msgs[i].key, strlen(b->msgs[i].key)),
                                 RD_KAFKA_V_VALUE(b->msgs[i].val, b->msgs[i].len),
                                 RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(prod, 10);
        rd_kafka_poll(prod, 0);
    }
    int flushed = rd_kafka_flush(prod, 120000) == RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_destroy(prod);
    if (!flushed) {
        fprintf(stderr, "bench: kafka: produce did not finish\n");
        return -1;
    }

    char err[512];
    rd_kafka_conf_t *conf = ts_kconf_create(ts_cluster_bootstraps(b->cluster), NULL, err,
                                            sizeof(err));
    if (!conf)
        return -1;
    rd_kafka_conf_set(conf, "group.id", "bench-consume", NULL, 0);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(BENCH_PARTS);
    for (int p = 0; p < BENCH_PARTS; p++)
        rd_kafka_topic_partition_list_add(parts, BENCH_TOPIC, p)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    size_t got = 0, bytes = 0;
    double t0 = 0, deadline = bench_now() + 120;
    while (got < n && bench_now() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (!m->err) {
            if (got++ == 0)
                t0 = bench_now();
            bytes += m->len;
        }
        rd_kafka_message_destroy(m);
    }
    double dt = bench_now() - t0;
    rd_kafka_assign(rk, NULL);
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (got < n)
        fprintf(stderr, "bench: kafka: consumed only %zu of %zu\n", got, n);
    bench_put(b, "kafka_consume", bench_rate(got, dt), "msgs/s",
              "librdkafka consumer, mock cluster, 16 partitions, lz4");
    return 0;
}

/* ---- Avro ------------------------------------------------------------------- */

static int bench_avro_decode(bench_ctx *b) {
    size_t n = b->n_msgs;
    enum { MAX_TOPICS = 8 };
    const char *topics[MAX_TOPICS];
    ts_decoder *decs[MAX_TOPICS];
    size_t nd = 0;
    char err[256];
    size_t ok = 0;
    /* Decoders created (and their resolvers cached) before timing. */
    for (size_t i = 0; i < n; i++) {
        size_t d = 0;
        while (d < nd && strcmp(topics[d], b->msgs[i].topic) != 0)
            d++;
        if (d == nd && nd < MAX_TOPICS) {
            topics[nd] = b->msgs[i].topic;
            decs[nd++] = ts_decoder_create(b->schemas, ts_topology_topic(b->topo,
                                                                         b->msgs[i].topic)->schema);
        }
    }
    double t0 = bench_now();
    for (size_t i = 0; i < n; i++) {
        size_t d = 0;
        while (topics[d] != b->msgs[i].topic)
            d++;
        avro_value_t *rec;
        const char *type;
        if (decs[d] && ts_decoder_decode(decs[d], b->msgs[i].val, b->msgs[i].len, &rec, &type,
                                         err, sizeof(err)) == TS_OK)
            ok++;
    }
    double dt = bench_now() - t0;
    for (size_t d = 0; d < nd; d++)
        ts_decoder_destroy(decs[d]);
    bench_put(b, "avro_decode", bench_rate(ok, dt), "records/s",
              "ts_decoder (avro-c with resolution), one thread");
    return ok == n ? 0 : -1;
}

/* ---- RocksDB ---------------------------------------------------------------- */

/* 'S' task 0x00 store 0x1f key, as ts_state.h lays state keys out. */
static size_t bench_state_key(char *out, size_t cap, const bench_msg *m, size_t salt) {
    int len = salt ? snprintf(out, cap, "S%s-%u%c%s%c%s#%zu", m->topic,
                              (unsigned)(m->key[0] % 16), 0, "state", 0x1f, m->key, salt)
                   : snprintf(out, cap, "S%s-%u%c%s%c%s", m->topic, (unsigned)(m->key[0] % 16),
                              0, "state", 0x1f, m->key);
    return (size_t)len < cap ? (size_t)len : cap - 1;
}

static int bench_rocksdb(bench_ctx *b) {
    size_t n = 0;
    while (n < b->n_msgs && b->msgs[n].json)
        n++;
    char path[256];
    snprintf(path, sizeof(path), "%s/rocksdb-bench", b->dir);
    rocksdb_options_t *opt = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(opt, 1);
    rocksdb_options_set_compression(opt, rocksdb_lz4_compression);
    char *errptr = NULL;
    rocksdb_t *db = rocksdb_open(opt, path, &errptr);
    if (!db) {
        fprintf(stderr, "bench: rocksdb: %s\n", errptr);
        free(errptr);
        rocksdb_options_destroy(opt);
        return -1;
    }
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_disable_WAL(wo, 1); /* as the runtime writes (ts_state_skip_wal) */
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    char key[512];
    enum { BATCH = 1000 };

    /* Random puts: each event a distinct key (its partition key + position). */
    double t0 = bench_now();
    for (size_t i = 0; i < n; i++) {
        size_t kl = bench_state_key(key, sizeof(key), &b->msgs[i], i + 1);
        rocksdb_writebatch_put(wb, key, kl, b->msgs[i].json, strlen(b->msgs[i].json));
        if ((i + 1) % BATCH == 0 || i + 1 == n) {
            rocksdb_write(db, wo, wb, &errptr);
            rocksdb_writebatch_clear(wb);
            if (errptr)
                break;
        }
    }
    double dt = bench_now() - t0;
    bench_put(b, "rocksdb_batch_put", bench_rate(n, dt), "puts/s",
              "1000 puts per write batch, distinct keys, no WAL (as the runtime)");

    /* Read-modify-write of the stream's own (skewed) keys: get, append, put. */
    char *buf = NULL;
    size_t cap = 0;
    t0 = bench_now();
    for (size_t i = 0; i < n && !errptr; i++) {
        size_t kl = bench_state_key(key, sizeof(key), &b->msgs[i], 0);
        size_t vl = 0;
        char *old = rocksdb_get(db, ro, key, kl, &vl, &errptr);
        size_t jl = strlen(b->msgs[i].json);
        /* The state value is bounded like a processor's: the event's body plus
         * what was there, capped at 1 KiB. */
        size_t keep = old ? (vl > 1024 - jl ? 1024 - jl : vl) : 0;
        if (cap < keep + jl) {
            cap = keep + jl;
            buf = realloc(buf, cap);
        }
        memcpy(buf, b->msgs[i].json, jl);
        if (keep)
            memcpy(buf + jl, old, keep);
        rocksdb_free(old);
        rocksdb_writebatch_put(wb, key, kl, buf, jl + keep);
        if ((i + 1) % BATCH == 0 || i + 1 == n) {
            rocksdb_write(db, wo, wb, &errptr);
            rocksdb_writebatch_clear(wb);
        }
    }
    dt = bench_now() - t0;
    free(buf);
    bench_put(b, "rocksdb_read_modify_write", bench_rate(n, dt), "rmw/s",
              "get + put of the stream's keys, 1000 per write batch");
    int rc = 0;
    if (errptr) {
        fprintf(stderr, "bench: rocksdb: %s\n", errptr);
        free(errptr);
        rc = -1;
    }
    rocksdb_writebatch_destroy(wb);
    rocksdb_readoptions_destroy(ro);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_close(db);
    rocksdb_options_destroy(opt);
    return rc;
}

/* ---- Redis ------------------------------------------------------------------ */

static redisContext *bench_redis_connect(const char *url) {
    char err[256];
    redisContext *c = ts_redis_connect_sync(url, err, sizeof(err));
    if (!c)
        fprintf(stderr, "bench: redis: %s\n", err);
    return c;
}

/* Sends `n` commands in pipelines of 1000 and reads every reply. */
static int bench_redis_run(bench_ctx *b, redisContext *c, int zadd, size_t n, double *secs) {
    enum { PIPE = 1000 };
    size_t nj = 0;
    while (nj < b->n_msgs && b->msgs[nj].json)
        nj++;
    char key[256];
    double t0 = bench_now();
    for (size_t i = 0; i < n; i += PIPE) {
        size_t m = bench_min(PIPE, n - i);
        for (size_t j = i; j < i + m; j++) {
            const bench_msg *msg = &b->msgs[j % nj];
            if (zadd) {
                snprintf(key, sizeof(key), "bench:rank:%zu", j % 64);
                redisAppendCommand(c, "ZADD %s %f %s", key, (double)(j % 1000), msg->key);
            } else {
                snprintf(key, sizeof(key), "bench:view:%s:%zu", msg->key, j % 50000);
                redisAppendCommand(c, "SET %s %s", key, msg->json);
            }
        }
        for (size_t j = 0; j < m; j++) {
            redisReply *r = NULL;
            if (redisGetReply(c, (void **)&r) != REDIS_OK) {
                fprintf(stderr, "bench: redis: %s\n", c->errstr);
                return -1;
            }
            freeReplyObject(r);
        }
    }
    *secs = bench_now() - t0;
    return 0;
}

static int bench_redis(bench_ctx *b) {
    redisContext *c = bench_redis_connect(b->redis_url);
    if (!c)
        return -1;
    size_t n = b->short_mode ? 20000 : 500000;
    double dt = 0;
    int rc = bench_redis_run(b, c, 0, n, &dt);
    if (rc == 0)
        bench_put(b, "redis_pipelined_set", bench_rate(n, dt), "cmds/s",
                  "hiredis, unix socket, 1000 per pipeline, JSON values");
    if (rc == 0 && (rc = bench_redis_run(b, c, 1, n, &dt)) == 0)
        bench_put(b, "redis_pipelined_zadd", bench_rate(n, dt), "cmds/s",
                  "hiredis, unix socket, 1000 per pipeline, 64 sorted sets");
    redisReply *r = redisCommand(c, "FLUSHALL");
    freeReplyObject(r);
    redisFree(c);
    return rc;
}

/* ---- PostgreSQL ------------------------------------------------------------- */

static int bench_pg_exec(PGconn *pg, const char *sql) {
    PGresult *res = PQexec(pg, sql);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_COPY_IN;
    if (!ok)
        fprintf(stderr, "bench: postgres: %s: %s", sql, PQerrorMessage(pg));
    PQclear(res);
    return ok ? 0 : -1;
}

/* Row i of the `books` shape; the key space is 100k books so later rows update. */
static void bench_pg_row(size_t i, char f[6][96]) {
    snprintf(f[0], 96, "bench-book-%zu", i % 100000);
    snprintf(f[1], 96, "sb-user-%03zu", i % 4000);
    snprintf(f[2], 96, "Story %zu of sb-user-%03zu", i, i % 4000);
    snprintf(f[3], 96, "https://cdn.example.com/covers/book-%zu.png", i);
    snprintf(f[4], 96, "2026-01-%02zuT09:00:00.000Z", 1 + i % 28);
    snprintf(f[5], 96, "2026-02-%02zuT09:00:00.000Z", 1 + i % 28);
}

#define BENCH_UPSERT_TAIL                                                                  \
    " ON CONFLICT (book_id) DO UPDATE SET user_id = EXCLUDED.user_id, title = "           \
    "EXCLUDED.title, cover_image_url = EXCLUDED.cover_image_url, updated_at = "           \
    "EXCLUDED.updated_at"

static int bench_pg_upsert(bench_ctx *b, PGconn *pg, size_t n, size_t per_stmt, double *secs) {
    size_t cap = per_stmt * 48 + 256;
    char *sql = malloc(cap);
    size_t len = (size_t)snprintf(sql, cap, "INSERT INTO bench_books (book_id, user_id, title, "
                                            "cover_image_url, created_at, updated_at) VALUES ");
    for (size_t r = 0; r < per_stmt; r++)
        len += (size_t)snprintf(sql + len, cap - len, "%s($%zu,$%zu,$%zu,$%zu,$%zu,$%zu)",
                                r ? "," : "", r * 6 + 1, r * 6 + 2, r * 6 + 3, r * 6 + 4,
                                r * 6 + 5, r * 6 + 6);
    snprintf(sql + len, cap - len, "%s", BENCH_UPSERT_TAIL);
    char(*fields)[6][96] = malloc(per_stmt * sizeof(*fields));
    const char **params = malloc(per_stmt * 6 * sizeof(*params));
    PGresult *res = PQprepare(pg, per_stmt > 1 ? "bench_multi" : "bench_one", sql,
                              (int)(per_stmt * 6), NULL);
    int rc = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : -1;
    PQclear(res);
    (void)b;
    double t0 = bench_now();
    for (size_t i = 0; i < n && rc == 0; i += per_stmt) {
        /* A key space of 100k books with rows in one statement never colliding. */
        for (size_t r = 0; r < per_stmt; r++) {
            bench_pg_row(i + r, fields[r]);
            for (int k = 0; k < 6; k++)
                params[r * 6 + (size_t)k] = fields[r][k];
        }
        res = PQexecPrepared(pg, per_stmt > 1 ? "bench_multi" : "bench_one",
                             (int)(per_stmt * 6), params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            fprintf(stderr, "bench: postgres upsert: %s", PQerrorMessage(pg));
            rc = -1;
        }
        PQclear(res);
    }
    *secs = bench_now() - t0;
    if (rc != 0)
        fprintf(stderr, "bench: postgres: %s", PQerrorMessage(pg));
    free(params);
    free(fields);
    free(sql);
    return rc;
}

static int bench_pg_copy(PGconn *pg, size_t n, double *secs) {
    double t0 = bench_now();
    int rc = bench_pg_exec(pg, "COPY bench_books_copy (book_id, user_id, title, cover_image_url, "
                               "created_at, updated_at) FROM STDIN");
    char line[640], f[6][96];
    for (size_t i = 0; i < n && rc == 0; i++) {
        bench_pg_row(i, f);
        int len = snprintf(line, sizeof(line), "%s\t%s\t%s\t%s\t%s\t%s\n", f[0], f[1], f[2],
                           f[3], f[4], f[5]);
        if (PQputCopyData(pg, line, len) != 1)
            rc = -1;
    }
    if (PQputCopyEnd(pg, rc ? "aborted" : NULL) != 1)
        rc = -1;
    PGresult *res;
    while ((res = PQgetResult(pg)) != NULL) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            fprintf(stderr, "bench: postgres copy: %s", PQerrorMessage(pg));
            rc = -1;
        }
        PQclear(res);
    }
    *secs = bench_now() - t0;
    return rc;
}

static int bench_postgres(bench_ctx *b) {
    PGconn *pg = PQconnectdb(b->pg);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "bench: postgres: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return -1;
    }
    const char *ddl =
        "CREATE TABLE bench_books (book_id text PRIMARY KEY, user_id text NOT NULL, title "
        "text NOT NULL, cover_image_url text, created_at timestamptz NOT NULL, updated_at "
        "timestamptz NOT NULL, deleted_at timestamptz);"
        "CREATE INDEX ON bench_books (user_id);"
        "CREATE TEMP TABLE bench_books_copy (LIKE bench_books);";
    int rc = bench_pg_exec(pg, ddl);
    size_t n = b->short_mode ? 10000 : 300000;
    double dt = 0;
    if (rc == 0 && (rc = bench_pg_upsert(b, pg, n, 1000, &dt)) == 0)
        bench_put(b, "pg_multirow_upsert", bench_rate(n, dt), "rows/s",
                  "INSERT .. ON CONFLICT DO UPDATE, 1000 rows per statement (books shape)");
    if (rc == 0 && (rc = bench_pg_copy(pg, n, &dt)) == 0)
        bench_put(b, "pg_copy", bench_rate(n, dt), "rows/s",
                  "COPY FROM STDIN into a staging table (no keys), text format");
    size_t n1 = b->short_mode ? 500 : 5000;
    if (rc == 0 && (rc = bench_pg_upsert(b, pg, n1, 1, &dt)) == 0)
        bench_put(b, "pg_single_upsert", bench_rate(n1, dt), "rows/s",
                  "one autocommitted upsert per row (what per-event writes cost)");
    if (rc == 0)
        rc = bench_pg_exec(pg, "DROP TABLE bench_books; DROP TABLE bench_books_copy;");
    PQfinish(pg);
    return rc;
}

int bench_components(bench_ctx *b) {
    fprintf(stderr, "bench: component ceilings\n");
    if (bench_kafka_consume(b) != 0 || bench_avro_decode(b) != 0 || bench_rocksdb(b) != 0 ||
        bench_redis(b) != 0 || bench_postgres(b) != 0 || bench_transport(b) != 0)
        return -1;
    /* The slowest part, by events it can take per second. */
    const char *slowest = NULL;
    double low = 0;
    const char *parts[] = {"kafka_consume", "avro_decode", "rocksdb_read_modify_write",
                           "redis_pipelined_zadd", "pg_multirow_upsert"};
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        double v = json_real_value(json_object_get(
            json_object_get(json_object_get(b->results, "components"), parts[i]), "per_s"));
        if (!slowest || v < low) {
            slowest = parts[i];
            low = v;
        }
    }
    json_object_set_new(json_object_get(b->results, "components"), "slowest",
                        json_pack("{s:s, s:f}", "name", slowest, "per_s", low));
    return 0;
}
