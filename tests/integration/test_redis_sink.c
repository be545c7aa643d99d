/* test_redis_sink.c - the view sink against a private redis-server. */
#include <criterion/criterion.h>
#include <signal.h>
#include <string.h>
#include <uv.h>

#include "ts_effects.h"
#include "ts_redis_sink.h"
#include "ts_servers.h"
#include "ts_testenv.h"

static ts_testenv_redis redis;
static uv_loop_t loop;

static void setup(void) {
    cr_assert_eq(ts_testenv_redis_start(&redis), 0);
    cr_assert_eq(uv_loop_init(&loop), 0);
}

static void teardown(void) {
    if (redis.srv) /* a test may leave it frozen (SIGSTOP) when it fails */
        kill(ts_servers_redis_pid(redis.srv), SIGCONT);
    ts_testenv_redis_stop(&redis);
}

TestSuite(redis_sink, .init = setup, .fini = teardown, .timeout = 60);

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

static void add(ts_effects *effs, ts_effect_kind kind, const char *a, const char *b, double num) {
    ts_bytes ba = ts_bytes_str(a), bb = ts_bytes_str(b);
    cr_assert_eq(ts_effects_add(effs, kind, &ba, b ? &bb : NULL, NULL, NULL, num), TS_OK);
}

/* Runs the loop until `*flag >= want` or the deadline passes. */
static void run_until(int *flag, int want, double seconds) {
    uint64_t deadline = uv_now(&loop) + (uint64_t)(ts_testenv_timeout(seconds) * 1000);
    while (*flag < want && uv_now(&loop) < deadline)
        uv_run(&loop, UV_RUN_ONCE);
}

/* A 10 ms timer keeps uv_run(ONCE) from blocking forever while we poll. */
static uv_timer_t tick;
static void tick_cb(uv_timer_t *t) { (void)t; }

static void start_tick(void) {
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, tick_cb, 10, 10);
}

/* A sink on the test's server, connected, with the tick running. */
static ts_sink connected_sink(void) {
    ts_sink sink;
    char err[256];
    cr_assert_eq(ts_redis_sink_create(&loop, redis.url, &sink, err, sizeof err), TS_OK, "%s", err);
    start_tick();
    int ready = 0;
    for (int i = 0; i < 200 && !ready; i++) {
        uv_run(&loop, UV_RUN_ONCE);
        ready = sink.ops->healthy(sink.impl);
    }
    cr_assert(ready);
    return sink;
}

/* Freezes the server (SIGSTOP: its socket stays open, nothing answers) and
 * writes `f` to it. @returns the server's pid. */
static pid_t write_to_frozen_server(ts_sink *sink, const ts_flush *f, counts *c) {
    pid_t pid = ts_servers_redis_pid(redis.srv);
    cr_assert_eq(kill(pid, SIGSTOP), 0);
    cr_assert_eq(sink->ops->write(sink->impl, f, on_done, c), TS_OK);
    return pid;
}

static void close_all(ts_sink *sink, counts *c) {
    sink->ops->close(sink->impl, on_closed, c);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(c->closed, 1);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

static void expect(const char *want, const char *fmt, const char *key) {
    char out[512];
    cr_assert_eq(ts_testenv_redis_cmd(redis.url, out, sizeof out, fmt, key), 0, "%s", out);
    cr_expect_str_eq(out, want, "%s %s", fmt, key);
}

Test(redis_sink, writes_a_flush_exactly) {
    char out[256];
    /* Something to delete and something to trim, set up beforehand. */
    ts_testenv_redis_cmd(redis.url, out, sizeof out, "SET gone old");
    ts_testenv_redis_cmd(redis.url, out, sizeof out, "ZADD rank 1 low 2 mid 9 high");

    ts_sink sink;
    char err[256];
    cr_assert_eq(ts_redis_sink_create(&loop, redis.url, &sink, err, sizeof err), TS_OK, "%s", err);
    cr_assert_str_eq(sink.ops->name, "redis");
    start_tick();

    ts_effects *effs = ts_effects_create();
    add(effs, TS_EFF_VIEW_SET, "view:a", "{\"v\":1}", 0);
    add(effs, TS_EFF_VIEW_SET, "view:b", "first", 0);
    add(effs, TS_EFF_VIEW_DEL, "gone", NULL, 0);
    add(effs, TS_EFF_ZADD, "rank", "new", 5.5);
    add(effs, TS_EFF_ZREM, "rank", "mid", 0);
    add(effs, TS_EFF_ZREM_BELOW, "rank", NULL, 2);
    add(effs, TS_EFF_VIEW_SET, "view:b", "second", 0); /* makes the first one dead */
    add(effs, TS_EFF_ROW_UPSERT, "tbl", "x", 0);       /* not a view: ignored */
    cr_assert(ts_effects_at(effs, 1)->dead);

    ts_flush flush = {"p/0", 0, 10, effs};
    counts c = {0};
    cr_assert_eq(sink.ops->write(sink.impl, &flush, on_done, &c), TS_OK);
    cr_assert_eq(c.done, 0, "done must not run inside write");
    run_until(&c.done, 1, 10);
    cr_assert_eq(c.done, 1);
    cr_assert_eq(c.last, TS_OK);
    cr_assert(sink.ops->healthy(sink.impl));

    expect("{\"v\":1}", "GET %s", "view:a");
    expect("second", "GET %s", "view:b");
    expect("0", "EXISTS %s", "gone");
    expect("new,5.5,high,9", "ZRANGE %s 0 -1 WITHSCORES", "rank");

    /* A flush without view effects completes too, on a later iteration. */
    ts_effects *rows = ts_effects_create();
    add(rows, TS_EFF_ROW_DELETE, "tbl", "k", 0);
    ts_flush flush2 = {"p/0", 10, 11, rows};
    cr_assert_eq(sink.ops->write(sink.impl, &flush2, on_done, &c), TS_OK);
    cr_assert_eq(c.done, 1);
    run_until(&c.done, 2, 5);
    cr_assert_eq(c.done, 2);
    cr_assert_eq(c.last, TS_OK);

    close_all(&sink, &c);
    cr_assert_eq(c.done, 2);
    ts_effects_destroy(effs);
    ts_effects_destroy(rows);
}

Test(redis_sink, queues_while_down_and_lands_after_restart) {
    ts_sink sink = connected_sink();

    /* Kill it hard, by PID, the way a crash would. */
    kill(ts_servers_redis_pid(redis.srv), SIGKILL);
    ts_servers_stop_redis(redis.srv);

    ts_effects *effs = ts_effects_create();
    add(effs, TS_EFF_VIEW_SET, "k1", "v1", 0);
    add(effs, TS_EFF_ZADD, "z", "m", 3);
    ts_flush f1 = {"p/1", 0, 5, effs};
    ts_effects *effs2 = ts_effects_create();
    add(effs2, TS_EFF_VIEW_SET, "k2", "v2", 0);
    ts_flush f2 = {"q/0", 0, 7, effs2};
    counts c = {0};
    cr_assert_eq(sink.ops->write(sink.impl, &f1, on_done, &c), TS_OK);
    cr_assert_eq(sink.ops->write(sink.impl, &f2, on_done, &c), TS_OK);

    /* Down for a while: nothing completes and the sink says it is unhealthy. */
    uv_update_time(&loop);
    uint64_t until = uv_now(&loop) + 700;
    while (uv_now(&loop) < until)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert_eq(c.done, 0);
    cr_assert_not(sink.ops->healthy(sink.impl));

    cr_assert_eq(ts_testenv_redis_restart(&redis), 0);
    run_until(&c.done, 2, 15);
    cr_assert_eq(c.done, 2);
    cr_assert_eq(c.last, TS_OK);
    expect("v1", "GET %s", "k1");
    expect("v2", "GET %s", "k2");
    expect("3", "ZSCORE %s m", "z");

    close_all(&sink, &c);
    ts_effects_destroy(effs);
    ts_effects_destroy(effs2);
}

/* A server that stops answering without closing the socket (frozen here
 * with SIGSTOP; a dead peer behind a network partition looks the same) is
 * dropped after the reply timeout, and the flush lands on a new connection
 * once the server answers again. */
Test(redis_sink, a_server_that_stops_replying_is_dropped) {
    ts_sink sink = connected_sink();

    ts_effects *effs = ts_effects_create();
    add(effs, TS_EFF_VIEW_SET, "frozen", "thawed", 0);
    ts_flush f = {"p/2", 0, 3, effs};
    counts c = {0};
    pid_t pid = write_to_frozen_server(&sink, &f, &c);
    uv_update_time(&loop);
    uint64_t until = uv_now(&loop) + 12000; /* the 10 s reply timeout, and a tick */
    while (uv_now(&loop) < until && ts_redis_sink_errors(&sink) == 0)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert_gt(ts_redis_sink_errors(&sink), 0, "the silent connection was not dropped");
    cr_assert_eq(c.done, 0);

    cr_assert_eq(kill(pid, SIGCONT), 0);
    run_until(&c.done, 1, 20);
    cr_assert_eq(c.done, 1);
    cr_assert_eq(c.last, TS_OK);
    expect("thawed", "GET %s", "frozen");
    close_all(&sink, &c);
    ts_effects_destroy(effs);
}

/* Redis killed while our commands sit unread in its socket: the socket
 * fails with ECONNRESET (POLLERR), on which libuv stops the poll handle. The
 * sink must notice at once, not after the reply timeout, and send the flush
 * again to the restarted server. */
Test(redis_sink, a_server_killed_with_unread_commands_is_noticed_at_once) {
    ts_sink sink = connected_sink();

    ts_effects *effs = ts_effects_create();
    add(effs, TS_EFF_VIEW_SET, "unread", "landed", 0);
    ts_flush f = {"p/3", 0, 4, effs};
    counts c = {0};
    pid_t pid = write_to_frozen_server(&sink, &f, &c);
    uv_update_time(&loop);
    uint64_t until = uv_now(&loop) + 300; /* the commands reach the frozen server's socket */
    while (uv_now(&loop) < until)
        uv_run(&loop, UV_RUN_ONCE);
    kill(pid, SIGKILL);
    ts_servers_stop_redis(redis.srv);
    cr_assert_eq(ts_testenv_redis_restart(&redis), 0);
    run_until(&c.done, 1, 5); /* well under the 10 s reply timeout */
    cr_assert_eq(c.done, 1, "the failed connection went unnoticed");
    cr_assert_eq(c.last, TS_OK);
    expect("landed", "GET %s", "unread");
    close_all(&sink, &c);
    ts_effects_destroy(effs);
}

Test(redis_sink, close_fails_pending_writes) {
    ts_sink sink;
    char err[256];
    ts_servers_stop_redis(redis.srv);
    cr_assert_eq(ts_redis_sink_create(&loop, redis.url, &sink, err, sizeof err), TS_OK, "%s", err);
    start_tick();
    ts_effects *effs = ts_effects_create();
    add(effs, TS_EFF_VIEW_SET, "k", "v", 0);
    ts_flush f = {"p/2", 0, 1, effs};
    counts c = {0};
    cr_assert_eq(sink.ops->write(sink.impl, &f, on_done, &c), TS_OK);
    for (int i = 0; i < 5; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(c.done, 0);
    close_all(&sink, &c);
    cr_assert_eq(c.done, 1);
    cr_assert_eq(c.last, TS_E_STOPPED);
    ts_effects_destroy(effs);
}

Test(redis_sink, rejects_bad_urls) {
    ts_sink sink;
    char err[256];
    const char *bad[] = {"http://x",   "redis://",    "redis://h:99999",
                         "unix://rel", "redis://h/x", "unix:///p?x=1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_expect_eq(ts_redis_sink_create(&loop, bad[i], &sink, err, sizeof err), TS_E_CONFIG, "%s",
                     bad[i]);
    cr_assert_eq(uv_loop_close(&loop), 0);
}
