/* test_kafka_sink.c - the Kafka sink on a libuv loop against the mock cluster,
 * and the shared librdkafka conf building. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_cluster.h"
#include "ts_effects.h"
#include "ts_kafka_sink.h"
#include "ts_kconf.h"

/* ---- ts_kconf -------------------------------------------------------------- */

Test(kconf, passes_properties_through) {
    char err[256] = "", val[64];
    size_t len = sizeof(val);
    json_t *cfg = json_pack("{s:s, s:i, s:b}", "client.id", "me", "linger.ms", 7,
                            "enable.idempotence", 1);
    rd_kafka_conf_t *conf = ts_kconf_create("127.0.0.1:9", cfg, err, sizeof(err));
    cr_assert_not_null(conf, "%s", err);
    cr_expect_eq(rd_kafka_conf_get(conf, "bootstrap.servers", val, &len), RD_KAFKA_CONF_OK);
    cr_expect_str_eq(val, "127.0.0.1:9");
    len = sizeof(val);
    cr_expect_eq(rd_kafka_conf_get(conf, "linger.ms", val, &len), RD_KAFKA_CONF_OK);
    cr_expect_str_eq(val, "7");
    len = sizeof(val);
    cr_expect_eq(rd_kafka_conf_get(conf, "client.id", val, &len), RD_KAFKA_CONF_OK);
    cr_expect_str_eq(val, "me");
    /* A default yields to the user's value, and applies where there is none. */
    cr_expect_eq(ts_kconf_default(conf, cfg, "linger.ms", "5", err, sizeof(err)), TS_OK);
    cr_expect_eq(ts_kconf_default(conf, cfg, "compression.type", "lz4", err, sizeof(err)), TS_OK);
    len = sizeof(val);
    rd_kafka_conf_get(conf, "linger.ms", val, &len);
    cr_expect_str_eq(val, "7");
    len = sizeof(val);
    rd_kafka_conf_get(conf, "compression.type", val, &len);
    cr_expect_str_eq(val, "lz4");
    rd_kafka_conf_destroy(conf);
    json_decref(cfg);
}

/* What the runtime checks state values, views and output events against. */
Test(kconf, the_largest_message_is_the_producers_message_max_bytes) {
    cr_expect_eq(ts_kconf_max_message_bytes(NULL), 16777216);
    json_t *cfg = json_pack("{s:s}", "client.id", "me");
    cr_expect_eq(ts_kconf_max_message_bytes(cfg), 16777216, "the runtime's default");
    json_object_set_new(cfg, "message.max.bytes", json_string("2000000"));
    cr_expect_eq(ts_kconf_max_message_bytes(cfg), 2000000, "the user's, as a string");
    json_object_set_new(cfg, "message.max.bytes", json_integer(3000000));
    cr_expect_eq(ts_kconf_max_message_bytes(cfg), 3000000);
    json_object_set_new(cfg, "message.max.bytes", json_string("2MB"));
    cr_expect_eq(ts_kconf_max_message_bytes(cfg), 0, "not a number");
    json_decref(cfg);
}

Test(kconf, names_the_bad_property) {
    struct {
        const char *json, *name;
    } cases[] = {
        {"{\"no.such.thing\": \"1\"}", "no.such.thing"},
        {"{\"linger.ms\": \"soon\"}", "linger.ms"},
        {"{\"client.id\": \"a\", \"acks\": [1]}", "acks"},
        {"[1, 2]", "mapping"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        json_t *cfg = json_loads(cases[i].json, 0, NULL);
        cr_assert_not_null(cfg);
        cr_expect_null(ts_kconf_create("127.0.0.1:9", cfg, err, sizeof(err)), "%s", cases[i].json);
        cr_expect(strstr(err, cases[i].name) != NULL, "%s: %s", cases[i].json, err);
        json_decref(cfg);
    }
}

/* ---- the sink -------------------------------------------------------------- */

static ts_cluster *cl;
static rd_kafka_mock_cluster_t *mcluster;
static uv_loop_t loop;
static ts_sink sink;
static int sink_open;

/* Callback counters. */
static int done_calls, closed_calls;
static ts_err done_status[16];
static uint64_t done_at_ms;

static void on_done(void *arg, ts_err status) {
    (void)arg;
    cr_assert_lt(done_calls, 16);
    done_status[done_calls++] = status;
    done_at_ms = uv_now(&loop);
}

static void on_closed(void *arg) {
    (void)arg;
    closed_calls++;
}

static void setup(void) {
    char err[256] = "";
    cr_assert_eq(ts_cluster_create(1, &cl, err, sizeof(err)), TS_OK, "%s", err);
    mcluster = ts_cluster_mock(cl);
    cr_assert_eq(ts_cluster_topic_create(cl, "out.a", 2), TS_OK);
    cr_assert_eq(ts_cluster_topic_create(cl, "out.b", 1), TS_OK);
    cr_assert_eq(uv_loop_init(&loop), 0);
    done_calls = closed_calls = 0;
    sink_open = 0;
}

static void open_sink(json_t *cfg) {
    char err[256] = "";
    cr_assert_eq(ts_kafka_sink_create(&loop, ts_cluster_bootstraps(cl), cfg, &sink, err,
                                      sizeof(err)),
                 TS_OK, "%s", err);
    cr_assert_str_eq(sink.ops->name, "kafka");
    sink_open = 1;
}

/* Closes the sink, runs the loop until every handle is gone and checks the loop
 * closes cleanly: the sink left nothing behind. */
static void close_sink(void) {
    int before = closed_calls;
    sink.ops->close(sink.impl, on_closed, NULL);
    sink_open = 0;
    cr_assert_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    cr_assert_eq(closed_calls, before + 1);
}

static void teardown(void) {
    if (sink_open)
        close_sink();
    cr_expect_eq(uv_loop_close(&loop), 0);
    ts_cluster_destroy(cl);
    cr_expect_eq(rd_kafka_wait_destroyed(5000), 0);
}

TestSuite(kafka_sink, .init = setup, .fini = teardown, .timeout = 60);

static void add_emit(ts_effects *effs, const char *topic, const char *key, const char *value,
                     const char *const *hnames, const char *const *hvalues, size_t nh) {
    ts_bytes a = ts_bytes_str(topic), b = ts_bytes_str(key), c = ts_bytes_str(value);
    ts_bytes d = {NULL, 0};
    if (nh)
        d = ts_headers_pack(hnames, hvalues, nh);
    cr_assert_eq(ts_effects_add(effs, TS_EFF_EMIT, &a, &b, &c, nh ? &d : NULL, 0), TS_OK);
    free(d.data);
}

/* One consumed message, copied out. */
typedef struct got {
    char key[64], value[128];
    int32_t partition;
    int64_t offset;
    size_t nh;
    char hname[4][32], hvalue[4][64];
} got;

/* Reads every message of `topic` from the start until `want` arrived or a few
 * seconds passed. @returns how many were read. */
static int consume(const char *topic, int partitions, got *out, int want) {
    char err[256];
    rd_kafka_conf_t *conf = ts_kconf_create(ts_cluster_bootstraps(cl), NULL, err, sizeof(err));
    cr_assert_not_null(conf, "%s", err);
    ts_kconf_set(conf, "group.id", "test-consume", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    cr_assert_not_null(rk, "%s", err);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    cr_assert_eq(rd_kafka_assign(rk, parts), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(parts);
    int n = 0;
    /* Keep reading a little past `want` to catch duplicates. */
    for (int idle = 0; idle < (n >= want ? 5 : 50);) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);
        if (!msg) {
            idle++;
            continue;
        }
        if (!msg->err) {
            cr_assert_lt(n, want + 8, "too many messages in %s", topic);
            got *g = &out[n++];
            memset(g, 0, sizeof(*g));
            snprintf(g->key, sizeof(g->key), "%.*s", (int)msg->key_len, (const char *)msg->key);
            snprintf(g->value, sizeof(g->value), "%.*s", (int)msg->len,
                     (const char *)msg->payload);
            g->partition = msg->partition;
            g->offset = msg->offset;
            rd_kafka_headers_t *hdrs;
            if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
                const char *name;
                const void *value;
                size_t size;
                for (size_t i = 0; i < 4 && !rd_kafka_header_get_all(hdrs, i, &name, &value, &size);
                     i++) {
                    snprintf(g->hname[i], sizeof(g->hname[i]), "%s", name);
                    snprintf(g->hvalue[i], sizeof(g->hvalue[i]), "%.*s", (int)size,
                             (const char *)value);
                    g->nh = i + 1;
                }
            }
        }
        rd_kafka_message_destroy(msg);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return n;
}

static const got *find_key(const got *msgs, int n, const char *key) {
    for (int i = 0; i < n; i++)
        if (strcmp(msgs[i].key, key) == 0)
            return &msgs[i];
    return NULL;
}

static ts_flush make_flush(const ts_effects *effs) {
    ts_flush flush = {.task_id = "proc/0", .first_offset = 0, .next_offset = 10, .effects = effs};
    return flush;
}

Test(kafka_sink, writes_emits_with_headers_to_two_topics) {
    open_sink(NULL);
    ts_effects *effs = ts_effects_create();
    const char *hn[] = {"error", "source.topic", "source.offset"};
    const char *hv[] = {"bad rating", "in", "42"};
    add_emit(effs, "out.a", "k1", "v1", hn, hv, 3);
    add_emit(effs, "out.a", "k2", "v2", NULL, NULL, 0);
    /* Not an emit: the Kafka sink ignores it. */
    ts_bytes vk = ts_bytes_str("view:1"), vv = ts_bytes_str("{}");
    cr_assert_eq(ts_effects_add(effs, TS_EFF_VIEW_SET, &vk, &vv, NULL, NULL, 0), TS_OK);
    add_emit(effs, "out.b", "k3", "v3", hn, hv, 1);
    add_emit(effs, "out.b", "k4", "dead", NULL, NULL, 0);
    add_emit(effs, "out.a", NULL, "no key", NULL, NULL, 0);
    /* Emits are never superseded by the effect list itself; mark one dead by
     * hand to check the sink skips whatever the list says is dead. */
    ((ts_effect *)ts_effects_at(effs, 4))->dead = 1;
    ts_flush flush = make_flush(effs);

    cr_assert_eq(sink.ops->write(sink.impl, &flush, on_done, NULL), TS_OK);
    cr_expect_eq(done_calls, 0, "done must not run inside write");
    /* The sink keeps the loop alive until the write is done. */
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(done_calls, 1);
    cr_expect_eq(done_status[0], TS_OK);
    cr_expect(sink.ops->healthy(sink.impl));

    got a[16], b[16];
    int na = consume("out.a", 2, a, 3), nb = consume("out.b", 1, b, 1);
    cr_assert_eq(na, 3);
    cr_assert_eq(nb, 1, "the dead emit must not be sent");
    const got *g = find_key(a, na, "k1");
    cr_assert_not_null(g);
    cr_expect_str_eq(g->value, "v1");
    cr_assert_eq(g->nh, 3);
    for (int i = 0; i < 3; i++) {
        cr_expect_str_eq(g->hname[i], hn[i]);
        cr_expect_str_eq(g->hvalue[i], hv[i]);
    }
    g = find_key(a, na, "k2");
    cr_assert_not_null(g);
    cr_expect_str_eq(g->value, "v2");
    cr_expect_eq(g->nh, 0);
    g = find_key(a, na, "");
    cr_assert_not_null(g, "the keyless message");
    cr_expect_str_eq(g->value, "no key");
    cr_expect_str_eq(b[0].key, "k3");
    cr_expect_str_eq(b[0].value, "v3");
    cr_assert_eq(b[0].nh, 1);
    cr_expect_str_eq(b[0].hname[0], "error");
    cr_expect_str_eq(b[0].hvalue[0], "bad rating");

    close_sink();
    cr_expect_eq(done_calls, 1, "close must not call done again");
    ts_effects_destroy(effs);
}

Test(kafka_sink, flush_without_emits_completes_asynchronously) {
    open_sink(NULL);
    ts_effects *effs = ts_effects_create();
    ts_bytes vk = ts_bytes_str("view:1"), vv = ts_bytes_str("{}");
    cr_assert_eq(ts_effects_add(effs, TS_EFF_VIEW_SET, &vk, &vv, NULL, NULL, 0), TS_OK);
    ts_flush flush = make_flush(effs);
    cr_assert_eq(sink.ops->write(sink.impl, &flush, on_done, NULL), TS_OK);
    cr_expect_eq(done_calls, 0, "done must not run inside write");
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(done_calls, 1);
    cr_expect_eq(done_status[0], TS_OK);
    ts_effects_clear(effs);
    cr_assert_eq(sink.ops->write(sink.impl, &flush, on_done, NULL), TS_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(done_calls, 2);
    close_sink();
    ts_effects_destroy(effs);
}

Test(kafka_sink, rejects_a_bad_emit_at_once) {
    open_sink(NULL);
    ts_effects *effs = ts_effects_create();
    add_emit(effs, "out.a", "k", "v", NULL, NULL, 0);
    ts_bytes a = ts_bytes_str(""), b = ts_bytes_str("k"), c = ts_bytes_str("v");
    cr_assert_eq(ts_effects_add(effs, TS_EFF_EMIT, &a, &b, &c, NULL, 0), TS_OK);
    ts_flush flush = make_flush(effs);
    cr_expect_eq(sink.ops->write(sink.impl, &flush, on_done, NULL), TS_E_INVALID);
    close_sink();
    cr_expect_eq(done_calls, 0, "a write that failed at once never calls done");
    got msgs[4];
    cr_expect_eq(consume("out.a", 2, msgs, 0), 0, "nothing of a rejected flush is sent");
    ts_effects_destroy(effs);
}

Test(kafka_sink, bad_config_is_named) {
    char err[256] = "";
    json_t *cfg = json_pack("{s:s}", "linger.ms", "soon");
    ts_sink other = {NULL, NULL};
    cr_expect_eq(ts_kafka_sink_create(&loop, ts_cluster_bootstraps(cl), cfg, &other, err,
                                      sizeof(err)),
                 TS_E_CONFIG);
    cr_expect(strstr(err, "linger.ms") != NULL, "%s", err);
    cr_expect_null(other.impl);
    json_decref(cfg);
}

/* ---- broker down ----------------------------------------------------------- */

static int healthy_while_down = -1;
static uint64_t up_at_ms;

static void on_bring_up(uv_timer_t *timer) {
    healthy_while_down = sink.ops->healthy(sink.impl);
    cr_assert_eq(done_calls, 1, "the write must wait for the broker");
    up_at_ms = uv_now(&loop);
    rd_kafka_mock_broker_set_up(mcluster, -1);
    uv_close((uv_handle_t *)timer, NULL);
}

static void write_during_outage(int down_ms, int nmsgs) {
    ts_effects *effs = ts_effects_create();
    /* A first flush connects the producer. */
    add_emit(effs, "out.b", "warm", "up", NULL, NULL, 0);
    ts_flush flush = make_flush(effs);
    cr_assert_eq(sink.ops->write(sink.impl, &flush, on_done, NULL), TS_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(done_calls, 1);

    cr_assert_eq(rd_kafka_mock_broker_set_down(mcluster, -1), RD_KAFKA_RESP_ERR_NO_ERROR);
    ts_effects *effs2 = ts_effects_create();
    for (int i = 0; i < nmsgs; i++) {
        char key[16], value[16];
        snprintf(key, sizeof(key), "k%02d", i);
        snprintf(value, sizeof(value), "v%02d", i);
        add_emit(effs2, "out.b", key, value, NULL, NULL, 0);
    }
    ts_flush flush2 = make_flush(effs2);
    cr_assert_eq(sink.ops->write(sink.impl, &flush2, on_done, NULL), TS_OK);
    uv_timer_t up;
    uv_timer_init(&loop, &up);
    uv_timer_start(&up, on_bring_up, down_ms, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(done_calls, 2);
    cr_expect_eq(done_status[1], TS_OK);
    cr_expect_geq(done_at_ms, up_at_ms);
    cr_expect_eq(healthy_while_down, 0, "unhealthy while the broker is down");
    cr_expect(sink.ops->healthy(sink.impl), "healthy again once delivered");

    got msgs[64];
    int n = consume("out.b", 1, msgs, nmsgs + 1);
    cr_assert_eq(n, nmsgs + 1, "nothing lost, nothing doubled");
    cr_expect_str_eq(msgs[0].key, "warm");
    for (int i = 0; i < nmsgs; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%02d", i);
        cr_expect_str_eq(msgs[i + 1].key, key, "in order");
    }
    close_sink();
    ts_effects_destroy(effs);
    ts_effects_destroy(effs2);
}

Test(kafka_sink, broker_down_waits_for_it) {
    open_sink(NULL);
    write_during_outage(1500, 5);
}

Test(kafka_sink, failed_deliveries_are_produced_again) {
    /* Messages time out inside librdkafka long before the broker returns, so
     * the sink's own retry must bring them through. */
    json_t *cfg = json_pack("{s:s}", "message.timeout.ms", "500");
    open_sink(cfg);
    json_decref(cfg);
    write_during_outage(2500, 5);
}

Test(kafka_sink, full_queue_is_retried_in_order) {
    json_t *cfg = json_pack("{s:s}", "queue.buffering.max.messages", "4");
    open_sink(cfg);
    json_decref(cfg);
    const int n = 40;
    ts_effects *effs = ts_effects_create();
    for (int i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%02d", i);
        add_emit(effs, "out.b", key, "v", NULL, NULL, 0);
    }
    ts_flush flush = make_flush(effs);
    cr_assert_eq(sink.ops->write(sink.impl, &flush, on_done, NULL), TS_OK);
    cr_expect_not(sink.ops->healthy(sink.impl), "retrying is not healthy");
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(done_calls, 1);
    cr_expect_eq(done_status[0], TS_OK);
    got msgs[64];
    cr_assert_eq(consume("out.b", 1, msgs, n), n);
    for (int i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%02d", i);
        cr_expect_str_eq(msgs[i].key, key);
    }
    close_sink();
    ts_effects_destroy(effs);
}

/* ---- close ----------------------------------------------------------------- */

static ts_effects *close_effs;

static void on_done_write_again(void *arg, ts_err status) {
    on_done(arg, status);
    ts_flush flush = make_flush(close_effs);
    /* The sink is closing: a new write fails at once. */
    cr_expect_eq(sink.ops->write(sink.impl, &flush, on_done, NULL), TS_E_STOPPED);
}

static void on_close_timer(uv_timer_t *timer) {
    cr_expect_eq(done_calls, 0);
    sink.ops->close(sink.impl, on_closed, NULL);
    sink_open = 0;
    uv_close((uv_handle_t *)timer, NULL);
}

Test(kafka_sink, close_stops_writes_in_progress) {
    open_sink(NULL);
    close_effs = ts_effects_create();
    add_emit(close_effs, "out.a", "k", "v", NULL, NULL, 0);
    rd_kafka_mock_broker_set_down(mcluster, -1);
    ts_flush flush = make_flush(close_effs);
    cr_assert_eq(sink.ops->write(sink.impl, &flush, on_done_write_again, NULL), TS_OK);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, on_close_timer, 300, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(done_calls, 1);
    cr_expect_eq(done_status[0], TS_E_STOPPED);
    cr_expect_eq(closed_calls, 1);
    ts_effects_destroy(close_effs);
}
