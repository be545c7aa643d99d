/* test_pg_sink.c - migrations and the row sink against real PostgreSQL. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "ts_effects.h"
#include "ts_migrate.h"
#include "ts_pg_sink.h"
#include "ts_servers.h"
#include "ts_testenv.h"

static char conninfo[512];
static char migdir[128];
static uv_loop_t loop;
static uv_timer_t tick;

static void tick_cb(uv_timer_t *t) { (void)t; }

static void write_file(const char *dir, const char *name, const char *text) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static void rm_rf(const char *dir) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* The schema every sink test uses, as the app's migrations folder. */
static void make_migrations(void) {
    snprintf(migdir, sizeof migdir, "/tmp/ts-mig-XXXXXX");
    cr_assert_not_null(mkdtemp(migdir));
    write_file(
        migdir, "001_tables.sql",
        "CREATE TABLE items (id text PRIMARY KEY, n int, tags text[], doc jsonb, note text);\n"
        "CREATE TABLE pairs (a text, b int, v text, PRIMARY KEY (a, b));\n"
        "CREATE TABLE writes (n int NOT NULL);\n"
        "INSERT INTO writes VALUES (0);\n"
        "CREATE FUNCTION count_write() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN UPDATE writes SET n = n + 1; RETURN NULL; END $$;\n"
        "CREATE TRIGGER items_count AFTER INSERT OR UPDATE OR DELETE ON items\n"
        "  FOR EACH ROW EXECUTE FUNCTION count_write();\n");
    write_file(migdir, "002_seed.sql", "INSERT INTO items (id, n) VALUES ('seed', 0);\n");
    write_file(migdir, "README.txt", "not a migration\n");
}

static void setup(void) {
    cr_assert_eq(ts_testenv_pg_create_db(conninfo, sizeof conninfo), 0, "%s", conninfo);
    make_migrations();
    cr_assert_eq(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, tick_cb, 10, 10);
}

static void teardown(void) { rm_rf(migdir); }

TestSuite(pg_sink, .init = setup, .fini = teardown, .timeout = 120);

static void migrate(const char *ci) {
    char err[512];
    const char *dirs[] = {migdir}, *owners[] = {"test"};
    cr_assert_eq(ts_migrate_apply(ci, dirs, owners, 1, err, sizeof err), TS_OK, "%s", err);
}

static void query(const char *ci, const char *sql, const char *want) {
    char out[1024];
    cr_assert_eq(ts_testenv_pg_query(ci, out, sizeof out, sql), 0, "%s: %s", sql, out);
    cr_expect_str_eq(out, want, "%s", sql);
}

typedef struct counts {
    int done, closed;
    ts_err last;
} counts;

static void on_done(void *arg, ts_err status) {
    counts *c = arg;
    c->done++;
    c->last = status;
}

static void on_closed(void *arg) { ((counts *)arg)->closed++; }

static void run_until(int *flag, int want, double seconds) {
    uv_update_time(&loop);
    uint64_t deadline = uv_now(&loop) + (uint64_t)(ts_testenv_timeout(seconds) * 1000);
    while (*flag < want && uv_now(&loop) < deadline)
        uv_run(&loop, UV_RUN_ONCE);
}

static void run_for(int ms) {
    uv_update_time(&loop);
    uint64_t until = uv_now(&loop) + (uint64_t)ms;
    while (uv_now(&loop) < until)
        uv_run(&loop, UV_RUN_ONCE);
}

static void close_all(ts_sink *sink, counts *c) {
    sink->ops->close(sink->impl, on_closed, c);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(c->closed, 1);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* Adds a row effect; names/values alternate, NULL value = SQL NULL. */
static void row(ts_effects *effs, ts_effect_kind kind, const char *table, size_t nkey, size_t n,
                const char *const *nv) {
    ts_rowcol cols[16];
    for (size_t i = 0; i < n; i++) {
        cols[i].name = nv[2 * i];
        cols[i].name_len = strlen(nv[2 * i]);
        cols[i].value = nv[2 * i + 1];
        cols[i].value_len = nv[2 * i + 1] ? strlen(nv[2 * i + 1]) : 0;
    }
    ts_bytes packed = ts_rowcols_pack(cols, n, nkey);
    cr_assert_not_null(packed.data);
    ts_bytes t = ts_bytes_str(table);
    cr_assert_eq(ts_effects_add(effs, kind, &t, &packed, NULL, NULL, 0), TS_OK);
    free(packed.data);
}

static ts_sink connect_sink(const char *ci) {
    ts_sink sink;
    char err[256];
    cr_assert_eq(ts_pg_sink_create(&loop, ci, &sink, err, sizeof err), TS_OK, "%s", err);
    cr_assert_str_eq(sink.ops->name, "postgres");
    for (int i = 0; i < 500 && !sink.ops->healthy(sink.impl); i++)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert(sink.ops->healthy(sink.impl));
    return sink;
}

/* Writes `flush` and waits until the sink acknowledges it with TS_OK. */
static void write_acked(ts_sink *sink, const ts_flush *flush, counts *c) {
    int want = c->done + 1;
    cr_assert_eq(sink->ops->write(sink->impl, flush, on_done, c), TS_OK);
    run_until(&c->done, want, 10);
    cr_assert_eq(c->done, want);
    cr_assert_eq(c->last, TS_OK);
}

Test(pg_sink, migrations_apply_once) {
    migrate(conninfo);
    migrate(conninfo); /* applies nothing: the seed row would double */
    const char *want = "tastesync/0001_offsets.sql\ntastesync/0002_partitioning.sql\n"
                       "tastesync/0003_owners.sql\ntastesync/0004_claim_one_write.sql\n"
                       "test/001_tables.sql\ntest/002_seed.sql";
    query(conninfo, "SELECT name FROM ts_migrations ORDER BY applied_at, name COLLATE \"C\"", want);
    query(conninfo, "SELECT count(*) FROM items", "1");

    /* A failing migration is rolled back and reported, naming the file. */
    write_file(migdir, "003_bad.sql", "CREATE TABLE t3 (x int); SELECT nope;");
    char err[512];
    const char *dirs[] = {migdir}, *owners[] = {"test"};
    cr_assert_eq(ts_migrate_apply(conninfo, dirs, owners, 1, err, sizeof err), TS_E_FATAL);
    cr_expect(strstr(err, "003_bad.sql") != NULL, "%s", err);
    query(conninfo, "SELECT count(*) FROM pg_tables WHERE tablename = 't3'", "0");
    const char *missing[] = {"/nonexistent/migrations"};
    cr_assert_eq(ts_migrate_apply(conninfo, missing, owners, 1, err, sizeof err), TS_E_CONFIG);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(pg_sink, upserts_deletes_nulls_arrays_json) {
    migrate(conninfo);
    ts_testenv_pg_query(conninfo, (char[64]){0}, 64, "INSERT INTO items (id, n) VALUES ('old', 7)");
    ts_sink sink = connect_sink(conninfo);

    ts_effects *effs = ts_effects_create();
    row(effs, TS_EFF_ROW_UPSERT, "items", 1, 5,
        (const char *[]){"id", "a", "n", "1", "tags", "{x,\"y z\"}", "doc", "{\"k\": [1, 2]}",
                         "note", NULL});
    row(effs, TS_EFF_ROW_UPSERT, "items", 1, 2, (const char *[]){"id", "b", "n", "1"});
    row(effs, TS_EFF_ROW_UPSERT, "items", 1, 3,
        (const char *[]){"id", "b", "n", "2", "note", "it's \"quoted\""}); /* b's first is dead */
    row(effs, TS_EFF_ROW_DELETE, "items", 1, 1, (const char *[]){"id", "old"});
    row(effs, TS_EFF_ROW_UPSERT, "public.pairs", 2, 3,
        (const char *[]){"a", "p", "b", "1", "v", "one"});
    row(effs, TS_EFF_ROW_UPSERT, "pairs", 2, 2, (const char *[]){"a", "q", "b", "2"});
    ts_bytes k = ts_bytes_str("view"), v = ts_bytes_str("x");
    cr_assert_eq(ts_effects_add(effs, TS_EFF_VIEW_SET, &k, &v, NULL, NULL, 0), TS_OK);

    ts_flush flush = {"proc/0", 0, 10, effs};
    counts c = {0};
    cr_assert_eq(sink.ops->write(sink.impl, &flush, on_done, &c), TS_OK);
    cr_assert_eq(c.done, 0);
    run_until(&c.done, 1, 10);
    cr_assert_eq(c.done, 1);
    cr_assert_eq(c.last, TS_OK);

    query(conninfo, "SELECT id, n, tags[2], doc->'k'->>1, note FROM items ORDER BY id",
          "a|1|y z|2|(null)\nb|2|(null)|(null)|it's \"quoted\"\nseed|0|(null)|(null)|(null)");
    query(conninfo, "SELECT a, b, v FROM pairs ORDER BY a", "p|1|one\nq|2|(null)");
    query(conninfo, "SELECT task, next_offset FROM ts_offsets", "proc/0|10");

    /* The next flush updates a row in place and deletes one. */
    ts_effects *effs2 = ts_effects_create();
    row(effs2, TS_EFF_ROW_UPSERT, "items", 1, 3,
        (const char *[]){"id", "a", "n", "5", "tags", NULL});
    row(effs2, TS_EFF_ROW_DELETE, "pairs", 2, 2, (const char *[]){"a", "p", "b", "1"});
    ts_flush flush2 = {"proc/0", 10, 12, effs2};
    cr_assert_eq(sink.ops->write(sink.impl, &flush2, on_done, &c), TS_OK);
    run_until(&c.done, 2, 10);
    cr_assert_eq(c.last, TS_OK);
    query(conninfo, "SELECT n, tags IS NULL, doc->>'k' FROM items WHERE id = 'a'", "5|t|[1, 2]");
    query(conninfo, "SELECT count(*) FROM pairs", "1");

    /* No row effects: done on a later iteration, no round trip. */
    ts_effects *empty = ts_effects_create();
    ts_flush flush3 = {"proc/0", 12, 13, empty};
    cr_assert_eq(sink.ops->write(sink.impl, &flush3, on_done, &c), TS_OK);
    cr_assert_eq(c.done, 2);
    run_until(&c.done, 3, 5);
    cr_assert_eq(c.last, TS_OK);

    /* Malformed: a row without key columns is refused at once. */
    ts_effects *bad = ts_effects_create();
    row(bad, TS_EFF_ROW_UPSERT, "items", 0, 1, (const char *[]){"id", "z"});
    ts_flush flush4 = {"proc/0", 13, 14, bad};
    cr_assert_eq(sink.ops->write(sink.impl, &flush4, on_done, &c), TS_E_INVALID);

    close_all(&sink, &c);
    cr_assert_eq(c.done, 3);
    ts_effects_destroy(effs);
    ts_effects_destroy(effs2);
    ts_effects_destroy(empty);
    ts_effects_destroy(bad);
}

Test(pg_sink, same_flush_twice_applies_once) {
    migrate(conninfo);
    ts_sink sink = connect_sink(conninfo);
    ts_effects *effs = ts_effects_create();
    row(effs, TS_EFF_ROW_UPSERT, "items", 1, 2, (const char *[]){"id", "a", "n", "1"});
    row(effs, TS_EFF_ROW_UPSERT, "items", 1, 2, (const char *[]){"id", "b", "n", "1"});
    ts_flush flush = {"proc/3", 100, 120, effs};
    counts c = {0};
    /* Both in flight at once, as after a crash with a re-send. */
    cr_assert_eq(sink.ops->write(sink.impl, &flush, on_done, &c), TS_OK);
    cr_assert_eq(sink.ops->write(sink.impl, &flush, on_done, &c), TS_OK);
    run_until(&c.done, 2, 10);
    cr_assert_eq(c.done, 2);
    cr_assert_eq(c.last, TS_OK);
    /* The seed row's insert counted once, the two rows once each. */
    query(conninfo, "SELECT n FROM writes", "3");

    /* A newer flush lands; an older one arriving late is skipped. */
    ts_effects *newer = ts_effects_create();
    row(newer, TS_EFF_ROW_UPSERT, "items", 1, 2, (const char *[]){"id", "a", "n", "3"});
    ts_flush fnew = {"proc/3", 120, 130, newer};
    cr_assert_eq(sink.ops->write(sink.impl, &fnew, on_done, &c), TS_OK);
    run_until(&c.done, 3, 10);
    ts_effects *older = ts_effects_create();
    row(older, TS_EFF_ROW_UPSERT, "items", 1, 2, (const char *[]){"id", "a", "n", "2"});
    ts_flush fold = {"proc/3", 110, 125, older};
    cr_assert_eq(sink.ops->write(sink.impl, &fold, on_done, &c), TS_OK);
    run_until(&c.done, 4, 10);
    cr_assert_eq(c.done, 4);
    cr_assert_eq(c.last, TS_OK);
    query(conninfo, "SELECT n FROM items WHERE id = 'a'", "3");
    query(conninfo, "SELECT n FROM writes", "4");
    query(conninfo, "SELECT next_offset FROM ts_offsets WHERE task = 'proc/3'", "130");
    cr_assert(sink.ops->healthy(sink.impl));

    close_all(&sink, &c);
    ts_effects_destroy(effs);
    ts_effects_destroy(newer);
    ts_effects_destroy(older);
}

/* Rows of one table with the same columns share multi-row statements (chunks
 * of 64, 16, 4, 2, 1 rows), counted by a statement-level trigger. */
Test(pg_sink, rows_alike_share_multi_row_statements) {
    migrate(conninfo);
    query(conninfo,
          "CREATE TABLE bulk (id text PRIMARY KEY, n int, note text);"
          "CREATE TABLE bulk_stmts (n int NOT NULL); INSERT INTO bulk_stmts VALUES (0);"
          "CREATE FUNCTION count_stmt() RETURNS trigger LANGUAGE plpgsql AS $$\n"
          "BEGIN UPDATE bulk_stmts SET n = n + 1; RETURN NULL; END $$;"
          "CREATE TRIGGER bulk_count AFTER INSERT ON bulk FOR EACH STATEMENT "
          "EXECUTE FUNCTION count_stmt();"
          "INSERT INTO bulk VALUES ('gone', 0, NULL); UPDATE bulk_stmts SET n = 0",
          "");
    ts_sink sink = connect_sink(conninfo);
    ts_effects *effs = ts_effects_create();
    char id[32], n[32];
    for (int i = 0; i < 150; i++) { /* 64 + 64 + 16 + 4 + 2 */
        snprintf(id, sizeof id, "r%03d", i);
        snprintf(n, sizeof n, "%d", i);
        row(effs, TS_EFF_ROW_UPSERT, "bulk", 1, 2, (const char *[]){"id", id, "n", n});
        if (i % 50 == 7) { /* other columns, between them: 2 + 1 */
            snprintf(id, sizeof id, "note%d", i);
            row(effs, TS_EFF_ROW_UPSERT, "bulk", 1, 2, (const char *[]){"id", id, "note", n});
        }
    }
    row(effs, TS_EFF_ROW_DELETE, "bulk", 1, 1, (const char *[]){"id", "gone"});
    ts_flush flush = {"proc/6", 0, 160, effs};
    counts c = {0};
    write_acked(&sink, &flush, &c);
    query(conninfo, "SELECT count(*), sum(n), min(id), max(id) FROM bulk WHERE n IS NOT NULL",
          "150|11175|r000|r149");
    query(conninfo, "SELECT string_agg(id || '=' || note, ',' ORDER BY id) FROM bulk "
                    "WHERE note IS NOT NULL",
          "note107=107,note57=57,note7=7");
    query(conninfo, "SELECT count(*) FROM bulk WHERE id = 'gone'", "0");
    query(conninfo, "SELECT n FROM bulk_stmts", "7");
    close_all(&sink, &c);
    ts_effects_destroy(effs);
}

/* Prepared statements are found again by what shapes their text (table,
 * columns, row count, a delete's NULL keys): statements that differ only in
 * column names or in a NULL key never share one, in one session. */
Test(pg_sink, statements_of_other_shapes_never_share_a_prepared_one) {
    migrate(conninfo);
    ts_sink sink = connect_sink(conninfo);
    counts c = {0};
    ts_effects *e1 = ts_effects_create();
    row(e1, TS_EFF_ROW_UPSERT, "items", 1, 2, (const char *[]){"id", "a", "n", "1"});
    row(e1, TS_EFF_ROW_UPSERT, "items", 1, 2, (const char *[]){"id", "b", "n", "2"});
    row(e1, TS_EFF_ROW_UPSERT, "pairs", 2, 3, (const char *[]){"a", "p", "b", "1", "v", "one"});
    row(e1, TS_EFF_ROW_UPSERT, "pairs", 2, 3, (const char *[]){"a", "q", "b", "2", "v", "two"});
    write_acked(&sink, &(ts_flush){"proc/8", 0, 4, e1}, &c);

    /* One row each, same column count, other names; a delete by a NULL key
     * (IS NULL: one parameter). */
    ts_effects *e2 = ts_effects_create();
    row(e2, TS_EFF_ROW_UPSERT, "items", 1, 2, (const char *[]){"id", "c", "note", "x"});
    row(e2, TS_EFF_ROW_UPSERT, "items", 1, 2, (const char *[]){"id", "a", "n", "5"});
    row(e2, TS_EFF_ROW_DELETE, "pairs", 2, 2, (const char *[]){"a", "p", "b", NULL});
    write_acked(&sink, &(ts_flush){"proc/8", 4, 7, e2}, &c);

    /* The same delete by a whole key: two parameters. */
    ts_effects *e3 = ts_effects_create();
    row(e3, TS_EFF_ROW_DELETE, "pairs", 2, 2, (const char *[]){"a", "q", "b", "2"});
    row(e3, TS_EFF_ROW_DELETE, "pairs", 2, 2, (const char *[]){"a", "r", "b", NULL});
    write_acked(&sink, &(ts_flush){"proc/8", 7, 9, e3}, &c);

    query(conninfo, "SELECT id, n, note FROM items ORDER BY id",
          "a|5|(null)\nb|2|(null)\nc|(null)|x\nseed|0|(null)");
    query(conninfo, "SELECT a, b, v FROM pairs ORDER BY a", "p|1|one");
    close_all(&sink, &c);
    ts_effects_destroy(e1);
    ts_effects_destroy(e2);
    ts_effects_destroy(e3);
}

/* Two key texts naming one row ("1" and "01" of an int key) do not coalesce
 * as effects but would hit the row twice in one multi-row upsert (SQLSTATE
 * 21000): the flush is written again one row per statement, in order. */
Test(pg_sink, one_row_named_twice_falls_back_to_single_rows) {
    migrate(conninfo);
    query(conninfo, "CREATE TABLE nums (k int PRIMARY KEY, v text)", "");
    ts_sink sink = connect_sink(conninfo);
    ts_effects *effs = ts_effects_create();
    row(effs, TS_EFF_ROW_UPSERT, "nums", 1, 2, (const char *[]){"k", "1", "v", "first"});
    row(effs, TS_EFF_ROW_UPSERT, "nums", 1, 2, (const char *[]){"k", "01", "v", "second"});
    row(effs, TS_EFF_ROW_UPSERT, "nums", 1, 2, (const char *[]){"k", "2", "v", "two"});
    ts_flush flush = {"proc/7", 0, 3, effs};
    counts c = {0};
    write_acked(&sink, &flush, &c);
    query(conninfo, "SELECT string_agg(k || '=' || v, ',' ORDER BY k) FROM nums",
          "1=second,2=two");
    close_all(&sink, &c);
    ts_effects_destroy(effs);
}

Test(pg_sink, sql_error_is_retried_until_fixed) {
    migrate(conninfo);
    ts_sink sink = connect_sink(conninfo);
    ts_effects *effs = ts_effects_create();
    row(effs, TS_EFF_ROW_UPSERT, "items", 1, 2, (const char *[]){"id", "a", "later", "v"});
    ts_flush flush = {"proc/4", 0, 1, effs};
    counts c = {0};
    cr_assert_eq(sink.ops->write(sink.impl, &flush, on_done, &c), TS_OK);
    run_for(400);
    cr_assert_eq(c.done, 0, "a failing flush is never reported done");
    cr_assert_not(sink.ops->healthy(sink.impl));
    query(conninfo, "ALTER TABLE items ADD COLUMN later text", "");
    run_until(&c.done, 1, 15);
    cr_assert_eq(c.done, 1);
    cr_assert_eq(c.last, TS_OK);
    query(conninfo, "SELECT later FROM items WHERE id = 'a'", "v");
    cr_assert(sink.ops->healthy(sink.impl));
    close_all(&sink, &c);
    ts_effects_destroy(effs);
}

Test(pg_sink, partitions_are_created_as_needed) {
    /* events: registered, by month; plain: partitioned but not registered;
     * checked: registered, with a CHECK that no partition can satisfy. */
    write_file(migdir, "003_parts.sql",
               "CREATE TABLE events (id text, at timestamptz, v int, PRIMARY KEY (id, at))\n"
               "  PARTITION BY RANGE (at);\n"
               "CREATE TABLE plain (id text, at timestamptz, PRIMARY KEY (id, at))\n"
               "  PARTITION BY RANGE (at);\n"
               "CREATE TABLE checked (id text, at timestamptz, v int CHECK (v > 0),\n"
               "  PRIMARY KEY (id, at)) PARTITION BY RANGE (at);\n"
               "INSERT INTO ts_partitioning VALUES ('events', 'month'), ('checked', 'day');\n");
    migrate(conninfo);
    ts_sink sink = connect_sink(conninfo);
    ts_effects *effs = ts_effects_create();
    /* Two months in one flush, one of them at the very edge of the month in UTC. */
    row(effs, TS_EFF_ROW_UPSERT, "events", 2, 3,
        (const char *[]){"id", "a", "at", "2026-01-31T23:59:59.999Z", "v", "1"});
    row(effs, TS_EFF_ROW_UPSERT, "events", 2, 3,
        (const char *[]){"id", "b", "at", "2026-02-01T00:00:00.000Z", "v", "2"});
    ts_flush flush = {"proc/7", 0, 2, effs};
    counts c = {0};
    cr_assert_eq(sink.ops->write(sink.impl, &flush, on_done, &c), TS_OK);
    run_until(&c.done, 1, 15);
    cr_assert_eq(c.done, 1);
    cr_assert_eq(c.last, TS_OK);
    query(conninfo, "SELECT tableoid::regclass, id FROM events ORDER BY id",
          "events_202601|a\nevents_202602|b");
    /* Existing partitions are reused; the function is idempotent. */
    query(conninfo, "SELECT ts_partition_ensure('events', '2026-02-14T12:00:00Z')",
          "public.events_202602");
    query(conninfo, "SELECT ts_partition_ensure('checked', '2026-02-14T23:30:00-02:00')",
          "public.checked_20260215");

    /* An unregistered table gets no partition: the flush keeps failing. */
    ts_effects *effs2 = ts_effects_create();
    row(effs2, TS_EFF_ROW_UPSERT, "plain", 2, 2,
        (const char *[]){"id", "x", "at", "2026-03-01T00:00:00.000Z"});
    ts_flush flush2 = {"proc/8", 0, 1, effs2};
    counts c2 = {0};
    cr_assert_eq(sink.ops->write(sink.impl, &flush2, on_done, &c2), TS_OK);
    run_for(400);
    cr_assert_eq(c2.done, 0, "no partition for an unregistered table");
    query(conninfo, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'plain'::regclass", "0");
    query(conninfo, "INSERT INTO ts_partitioning VALUES ('plain', 'year')", "");
    run_until(&c2.done, 1, 15);
    cr_assert_eq(c2.last, TS_OK, "registered later: the retry creates it");
    query(conninfo, "SELECT tableoid::regclass FROM plain", "plain_2026");

    /* A real CHECK violation (same SQLSTATE) is retried like any error. */
    ts_effects *effs3 = ts_effects_create();
    row(effs3, TS_EFF_ROW_UPSERT, "checked", 2, 3,
        (const char *[]){"id", "y", "at", "2026-03-01T10:00:00.000Z", "v", "-1"});
    ts_flush flush3 = {"proc/9", 0, 1, effs3};
    counts c3 = {0};
    cr_assert_eq(sink.ops->write(sink.impl, &flush3, on_done, &c3), TS_OK);
    run_for(400);
    cr_assert_eq(c3.done, 0, "a check violation is never reported done");
    query(conninfo, "SELECT count(*) FROM checked", "0");
    close_all(&sink, &c3);
    cr_assert_eq(c3.last, TS_E_STOPPED);
    ts_effects_destroy(effs);
    ts_effects_destroy(effs2);
    ts_effects_destroy(effs3);
}

Test(pg_sink, close_fails_pending_writes) {
    /* Nobody listens here: the write waits, close fails it. */
    ts_sink sink;
    char err[256];
    cr_assert_eq(ts_pg_sink_create(&loop, "host=/nonexistent dbname=x", &sink, err, sizeof err),
                 TS_OK);
    ts_effects *effs = ts_effects_create();
    row(effs, TS_EFF_ROW_UPSERT, "items", 1, 1, (const char *[]){"id", "a"});
    ts_flush flush = {"proc/5", 0, 1, effs};
    counts c = {0};
    cr_assert_eq(sink.ops->write(sink.impl, &flush, on_done, &c), TS_OK);
    run_for(300);
    cr_assert_eq(c.done, 0);
    cr_assert_not(sink.ops->healthy(sink.impl));
    close_all(&sink, &c);
    cr_assert_eq(c.done, 1);
    cr_assert_eq(c.last, TS_E_STOPPED);
    ts_effects_destroy(effs);
}

Test(pg_sink, server_restart_mid_stream) {
    /* A private cluster, because this test stops it. */
    char dir[64] = "/tmp/ts-pg-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    ts_servers *srv = NULL;
    char err[512];
    cr_assert_eq(ts_servers_start_postgres(&srv, dir, err, sizeof err), TS_OK, "%s", err);
    char ci[256];
    snprintf(ci, sizeof ci, "%s", ts_servers_pg_conninfo(srv));
    migrate(ci);
    ts_sink sink = connect_sink(ci);

    ts_effects *e1 = ts_effects_create();
    row(e1, TS_EFF_ROW_UPSERT, "items", 1, 2, (const char *[]){"id", "a", "n", "1"});
    ts_flush f1 = {"proc/6", 0, 1, e1};
    counts c = {0};
    cr_assert_eq(sink.ops->write(sink.impl, &f1, on_done, &c), TS_OK);
    run_until(&c.done, 1, 10);
    cr_assert_eq(c.last, TS_OK);

    ts_servers_stop_postgres(srv);
    ts_effects *e2 = ts_effects_create();
    row(e2, TS_EFF_ROW_UPSERT, "items", 1, 2, (const char *[]){"id", "b", "n", "2"});
    ts_flush f2 = {"proc/6", 1, 2, e2};
    cr_assert_eq(sink.ops->write(sink.impl, &f2, on_done, &c), TS_OK);
    run_for(500);
    cr_assert_eq(c.done, 1);
    cr_assert_not(sink.ops->healthy(sink.impl));

    cr_assert_eq(ts_servers_start_postgres(&srv, dir, err, sizeof err), TS_OK, "%s", err);
    run_until(&c.done, 2, 20);
    cr_assert_eq(c.done, 2);
    cr_assert_eq(c.last, TS_OK);
    query(ci, "SELECT id, n FROM items ORDER BY id", "a|1\nb|2\nseed|0");
    query(ci, "SELECT next_offset FROM ts_offsets", "2");

    close_all(&sink, &c);
    ts_servers_destroy(srv);
    rm_rf(dir);
    ts_effects_destroy(e1);
    ts_effects_destroy(e2);
}
