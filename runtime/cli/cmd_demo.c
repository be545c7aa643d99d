/* cmd_demo.c - `tastesync demo [topology.yaml]`: the pipeline end to end.
 *
 * Starts the runtime (embedded stack unless addresses are configured),
 * produces each processor's sample events as a producer would (Avro, Confluent
 * framing, keyed), runs until every input partition is acknowledged up to its
 * end, stops gracefully, and prints what came out: every view in Redis, the
 * row count of every table, and how many records each DLQ holds.
 */
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ts_log.h"
#include "ts_redis_url.h"
#include "ts_runtime.h"
#include "ts_sample.h"

#define TS_DEMO_TIMEOUT_MS 120000

typedef struct ts_demo {
    ts_runtime *rt;
    const ts_topology *topo;
    ts_sample_ends ends; /* where each input partition ends after producing */
    uv_timer_t timer;
    uint64_t waited_ms;
    int quiet_ticks; /* consecutive ticks with nothing left anywhere */
    int caught_up;
} ts_demo;

static void ts_demo_on_closed(uv_handle_t *handle) { (void)handle; }

/* Stops the runtime once every partition it produced to is acknowledged to
 * its end, and then the downstream stages (which read what processors emit)
 * have nothing left either, for a few ticks in a row. */
static void ts_demo_on_timer(uv_timer_t *timer) {
    ts_demo *demo = timer->data;
    demo->waited_ms += 100;
    int done = 1;
    for (size_t i = 0; i < demo->ends.n && done; i++) {
        const ts_sample_end *end = &demo->ends.items[i];
        if (end->next_offset > 0 &&
            ts_runtime_acked(demo->rt, end->topic, end->partition) < end->next_offset)
            done = 0;
    }
    size_t busy = 0;
    ts_runtime_tasks(demo->rt, &busy);
    demo->quiet_ticks = done && busy == 0 && ts_runtime_lag(demo->rt) == 0 ? demo->quiet_ticks + 1 : 0;
    done = demo->quiet_ticks >= 3;
    if (done || demo->waited_ms >= TS_DEMO_TIMEOUT_MS) {
        demo->caught_up = done;
        if (!done)
            ts_log_error("demo", "not caught up after %d s", TS_DEMO_TIMEOUT_MS / 1000);
        uv_close((uv_handle_t *)timer, ts_demo_on_closed);
        ts_runtime_stop(demo->rt);
    }
}

static int ts_demo_key_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void ts_demo_print_json(const char *text) {
    json_t *doc = json_loads(text, JSON_DECODE_ANY, NULL);
    if (!doc) {
        printf("  %s\n", text);
        return;
    }
    char *pretty = json_dumps(doc, JSON_INDENT(2) | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
    for (char *line = strtok(pretty, "\n"); line; line = strtok(NULL, "\n"))
        printf("  %s\n", line);
    free(pretty);
    json_decref(doc);
}

/* Prints every key of the view store: strings (JSON pretty-printed) and
 * sorted sets (member and score), in key order. */
static int ts_demo_print_views(const char *url) {
    char err[256];
    redisContext *rc = ts_redis_connect_sync(url, err, sizeof(err));
    if (!rc) {
        fprintf(stderr, "demo: %s\n", err);
        return -1;
    }
    redisReply *keys = redisCommand(rc, "KEYS *");
    if (!keys || keys->type != REDIS_REPLY_ARRAY) {
        fprintf(stderr, "demo: cannot list views\n");
        freeReplyObject(keys);
        redisFree(rc);
        return -1;
    }
    /* The runtime's own bookkeeping keys ("ts:...") are not views. */
    size_t n = 0;
    const char **names = calloc(keys->elements + 1, sizeof(*names));
    for (size_t i = 0; i < keys->elements; i++)
        if (strncmp(keys->element[i]->str, "ts:", 3) != 0)
            names[n++] = keys->element[i]->str;
    qsort(names, n, sizeof(*names), ts_demo_key_cmp);
    printf("\n== views in Redis (%zu keys) ==\n", n);
    for (size_t i = 0; i < n; i++) {
        redisReply *type = redisCommand(rc, "TYPE %s", names[i]);
        if (type && type->type == REDIS_REPLY_STATUS && strcmp(type->str, "zset") == 0) {
            redisReply *z = redisCommand(rc, "ZRANGE %s 0 -1 WITHSCORES", names[i]);
            printf("%s (sorted set, %zu members)\n", names[i], z ? z->elements / 2 : 0);
            for (size_t m = 0; z && m + 1 < z->elements; m += 2)
                printf("  %-40s %s\n", z->element[m]->str, z->element[m + 1]->str);
            freeReplyObject(z);
        } else {
            redisReply *v = redisCommand(rc, "GET %s", names[i]);
            printf("%s\n", names[i]);
            if (v && v->type == REDIS_REPLY_STRING)
                ts_demo_print_json(v->str);
            freeReplyObject(v);
        }
        freeReplyObject(type);
    }
    free(names);
    freeReplyObject(keys);
    redisFree(rc);
    return 0;
}

/* Prints the row count of every table of the processors (the runtime's own
 * ts_* bookkeeping tables aside). */
static int ts_demo_print_rows(const char *conninfo) {
    PGconn *pg = PQconnectdb(conninfo);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "demo: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return -1;
    }
    PGresult *tables = PQexec(pg, "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON "
                                  "n.oid = c.relnamespace WHERE n.nspname = 'public' AND "
                                  "c.relkind IN ('r', 'p') AND NOT c.relispartition AND "
                                  "c.relname NOT LIKE 'ts\\_%' ORDER BY 1");
    printf("\n== rows in PostgreSQL ==\n");
    for (int i = 0; PQresultStatus(tables) == PGRES_TUPLES_OK && i < PQntuples(tables); i++) {
        const char *name = PQgetvalue(tables, i, 0);
        char *ident = PQescapeIdentifier(pg, name, strlen(name));
        char sql[512];
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", ident);
        PQfreemem(ident);
        PGresult *count = PQexec(pg, sql);
        printf("  %-24s %s rows\n", name,
               PQresultStatus(count) == PGRES_TUPLES_OK ? PQgetvalue(count, 0, 0) : "?");
        PQclear(count);
    }
    PQclear(tables);
    PQfinish(pg);
    return 0;
}

int ts_cli_demo(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: tastesync demo [topology.yaml]\n\n"
               "Starts the pipeline (embedded stack when no addresses are configured),\n"
               "produces every processor's sample events, waits until they are all\n"
               "processed, stops, and prints the views, row counts and DLQ counts.\n");
        return TS_CLI_EXIT_OK;
    }
    ts_topology *topo = ts_cli_load_topology(argc > 1 ? argv[1] : NULL);
    if (!topo)
        return TS_CLI_EXIT_USAGE;
    ts_demo demo = {.topo = topo};
    char err[1024];
    ts_err rc = ts_runtime_create(topo, ts_processor_registry, &demo.rt, err, sizeof(err));
    if (rc != TS_OK) {
        fprintf(stderr, "tastesync: %s\n", err);
        ts_topology_destroy(topo);
        return rc == TS_E_CONFIG ? TS_CLI_EXIT_USAGE : TS_CLI_EXIT_FAIL;
    }
    int exit_code = TS_CLI_EXIT_FAIL;
    size_t produced = 0;
    if (ts_sample_produce_all(topo, ts_runtime_brokers(demo.rt), &produced, &demo.ends, err,
                              sizeof(err)) != TS_OK) {
        fprintf(stderr, "tastesync: %s\n", err);
        goto out;
    }
    printf("produced %zu sample events\n", produced);
    uv_timer_init(ts_runtime_loop(demo.rt), &demo.timer);
    demo.timer.data = &demo;
    uv_timer_start(&demo.timer, ts_demo_on_timer, 100, 100);
    rc = ts_runtime_run(demo.rt);
    if (rc != TS_OK || !demo.caught_up)
        goto out;

    if (ts_demo_print_views(ts_runtime_redis_url(demo.rt)) != 0 ||
        ts_demo_print_rows(ts_runtime_pg_conninfo(demo.rt)) != 0)
        goto out;
    printf("\n== dead-letter queues ==\n");
    if (ts_sample_print_dlq(topo, ts_runtime_brokers(demo.rt), stdout) != TS_OK)
        goto out;
    exit_code = TS_CLI_EXIT_OK;
out:
    ts_sample_ends_free(&demo.ends);
    ts_runtime_destroy(demo.rt);
    ts_topology_destroy(topo);
    return exit_code;
}
