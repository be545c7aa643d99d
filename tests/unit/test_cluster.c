/* test_cluster.c - the embedded mock Kafka cluster and topic creation. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ts_cluster.h"
#include "ts_kconf.h"

static ts_cluster *cl;

static void setup(void) {
    char err[256] = "";
    cr_assert_eq(ts_cluster_create(3, &cl, err, sizeof(err)), TS_OK, "%s", err);
}

static void teardown(void) {
    ts_cluster_destroy(cl);
    cl = NULL;
    /* Every librdkafka handle is gone, so no thread outlives the test. */
    cr_expect_eq(rd_kafka_wait_destroyed(5000), 0);
}

TestSuite(cluster, .init = setup, .fini = teardown, .timeout = 60);

Test(cluster, bootstraps_are_loopback_brokers) {
    const char *bs = ts_cluster_bootstraps(cl);
    cr_assert_not_null(bs);
    int brokers = 1;
    for (const char *p = bs; *p; p++)
        brokers += *p == ',';
    cr_expect_eq(brokers, 3, "bootstraps %s", bs);
    cr_expect(strncmp(bs, "127.0.0.1:", 10) == 0, "bootstraps %s", bs);
    cr_expect_not_null(ts_cluster_mock(cl));
}

/* The TCP_NODELAY of the broker side of the connection from local port
 * `client_port` to `broker_port` (the mock brokers run in this process), or
 * -1 while the broker has not accepted it. */
static int broker_side_nodelay(int broker_port, int client_port) {
    DIR *dir = opendir("/proc/self/fd");
    cr_assert_not_null(dir);
    int nodelay = -1;
    struct dirent *d;
    while (nodelay < 0 && (d = readdir(dir)) != NULL) {
        int fd = atoi(d->d_name);
        struct sockaddr_in local, peer;
        socklen_t llen = sizeof(local), plen = sizeof(peer);
        if (fd <= 2 || getsockname(fd, (struct sockaddr *)&local, &llen) != 0 ||
            getpeername(fd, (struct sockaddr *)&peer, &plen) != 0 ||
            local.sin_family != AF_INET || ntohs(local.sin_port) != broker_port ||
            ntohs(peer.sin_port) != client_port)
            continue;
        int on = 0;
        socklen_t olen = sizeof(on);
        cr_assert_eq(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &olen), 0);
        nodelay = on != 0;
    }
    closedir(dir);
    return nodelay;
}

/* A Kafka broker turns Nagle's algorithm off; a mock broker that kept it
 * held each small response until the client's next request. */
Test(cluster, brokers_send_without_nagle) {
    const char *bs = ts_cluster_bootstraps(cl);
    for (const char *p = bs; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
        int broker_port = atoi(strchr(p, ':') + 1);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(broker_port)};
        inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
        cr_assert_eq(connect(s, (struct sockaddr *)&to, sizeof(to)), 0, "broker %s", p);
        struct sockaddr_in me;
        socklen_t len = sizeof(me);
        cr_assert_eq(getsockname(s, (struct sockaddr *)&me, &len), 0);
        int nodelay = -1;
        for (int i = 0; i < 200 && nodelay < 0; i++, usleep(10000))
            nodelay = broker_side_nodelay(broker_port, ntohs(me.sin_port));
        cr_expect_eq(nodelay, 1, "broker on port %d: TCP_NODELAY %d (-1: not accepted)",
                     broker_port, nodelay);
        close(s);
    }
}

Test(cluster, rejects_bad_arguments) {
    char err[256] = "";
    ts_cluster *other = (ts_cluster *)0x1;
    cr_expect_eq(ts_cluster_create(0, &other, err, sizeof(err)), TS_E_INVALID);
    cr_expect_null(other);
    cr_expect_neq(err[0], '\0');
    cr_expect_eq(ts_cluster_topic_create(cl, "", 1), TS_E_INVALID);
    cr_expect_eq(ts_cluster_topic_create(cl, "t", 0), TS_E_INVALID);
}

/* Reads the partition count of `topic` as a client sees it; -1 if absent. */
static int partition_count(const char *topic) {
    char err[256];
    rd_kafka_conf_t *conf = ts_kconf_create(ts_cluster_bootstraps(cl), NULL, err, sizeof(err));
    cr_assert_not_null(conf, "%s", err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    cr_assert_not_null(rk, "%s", err);
    const struct rd_kafka_metadata *md;
    cr_assert_eq(rd_kafka_metadata(rk, 1, NULL, &md, 5000), RD_KAFKA_RESP_ERR_NO_ERROR);
    int cnt = -1;
    for (int i = 0; i < md->topic_cnt; i++)
        if (strcmp(md->topics[i].topic, topic) == 0)
            cnt = md->topics[i].partition_cnt;
    rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    return cnt;
}

Test(cluster, topic_create_is_idempotent) {
    cr_assert_eq(ts_cluster_topic_create(cl, "orders", 6), TS_OK);
    cr_expect_eq(partition_count("orders"), 6);
    /* Existing: fine, and left as it is. */
    cr_assert_eq(ts_cluster_topic_create(cl, "orders", 2), TS_OK);
    cr_expect_eq(partition_count("orders"), 6);
    cr_expect_eq(partition_count("absent"), -1);
}

Test(cluster, produce_consume_round_trip) {
    char err[512];
    const int n = 20, partitions = 3;
    cr_assert_eq(ts_cluster_topic_create(cl, "rt", partitions), TS_OK);

    rd_kafka_conf_t *conf = ts_kconf_create(ts_cluster_bootstraps(cl), NULL, err, sizeof(err));
    cr_assert_not_null(conf, "%s", err);
    rd_kafka_t *producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    cr_assert_not_null(producer, "%s", err);
    for (int i = 0; i < n; i++) {
        char key[16], value[32];
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(value, sizeof(value), "value %d", i);
        cr_assert_eq(rd_kafka_producev(producer, RD_KAFKA_V_TOPIC("rt"),
                                       RD_KAFKA_V_KEY(key, strlen(key)),
                                       RD_KAFKA_V_VALUE(value, strlen(value)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    cr_assert_eq(rd_kafka_flush(producer, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(producer);

    conf = ts_kconf_create(ts_cluster_bootstraps(cl), NULL, err, sizeof(err));
    cr_assert_not_null(conf, "%s", err);
    cr_assert_eq(ts_kconf_set(conf, "group.id", "test-round-trip", err, sizeof(err)), TS_OK);
    rd_kafka_t *consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    cr_assert_not_null(consumer, "%s", err);
    rd_kafka_poll_set_consumer(consumer);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; p++)
        rd_kafka_topic_partition_list_add(parts, "rt", p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    cr_assert_eq(rd_kafka_assign(consumer, parts), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(parts);

    int seen[20] = {0}, got = 0;
    for (int tries = 0; got < n && tries < 100; tries++) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(consumer, 100);
        if (!msg)
            continue;
        if (!msg->err) {
            int k = -1;
            char value[32], expect[32];
            cr_assert(sscanf((const char *)msg->key, "k%d", &k) == 1 && k >= 0 && k < n);
            snprintf(value, sizeof(value), "%.*s", (int)msg->len, (const char *)msg->payload);
            snprintf(expect, sizeof(expect), "value %d", k);
            cr_expect_str_eq(value, expect);
            seen[k]++;
            got++;
        }
        rd_kafka_message_destroy(msg);
    }
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
    cr_assert_eq(got, n);
    for (int i = 0; i < n; i++)
        cr_expect_eq(seen[i], 1, "key k%d seen %d times", i, seen[i]);
}

Test(cluster, topics_ensure_on_mock_checks_existence) {
    char err[512] = "";
    cr_assert_eq(ts_cluster_topic_create(cl, "a", 2), TS_OK);
    cr_assert_eq(ts_cluster_topic_create(cl, "b", 1), TS_OK);
    const char *names[] = {"a", "b"};
    const int partitions[] = {2, 4}; /* b differs: a warning, not an error */
    const int compacted[] = {0, 1};
    cr_expect_eq(ts_cluster_topics_ensure(ts_cluster_bootstraps(cl), NULL, names, partitions,
                                          compacted, 2, 5000, err, sizeof(err)),
                 TS_OK, "%s", err);

    /* The mock cannot create topics, so a missing one is reported by name. */
    const char *missing[] = {"a", "not-there"};
    cr_expect_eq(ts_cluster_topics_ensure(ts_cluster_bootstraps(cl), NULL, missing, partitions,
                                          NULL, 2, 5000, err, sizeof(err)),
                 TS_E_IO);
    cr_expect(strstr(err, "not-there") != NULL, "%s", err);
    cr_expect_eq(partition_count("not-there"), -1, "the check must not auto-create");
}

Test(cluster, topics_ensure_rejects_bad_input) {
    char err[512] = "";
    const char *names[] = {"a"};
    const int partitions[] = {1}, zero[] = {0};
    cr_expect_eq(ts_cluster_topics_ensure(ts_cluster_bootstraps(cl), NULL, names, zero, NULL, 1,
                                          1000, err, sizeof(err)),
                 TS_E_INVALID);
    json_t *cfg = json_pack("{s:s}", "no.such.property", "1");
    cr_expect_eq(ts_cluster_topics_ensure(ts_cluster_bootstraps(cl), cfg, names, partitions, NULL,
                                          1, 1000, err, sizeof(err)),
                 TS_E_CONFIG);
    cr_expect(strstr(err, "no.such.property") != NULL, "%s", err);
    json_decref(cfg);
    cr_expect_eq(ts_cluster_topics_ensure(ts_cluster_bootstraps(cl), NULL, names, partitions, NULL,
                                          0, 1000, err, sizeof(err)),
                 TS_OK);
}

Test(cluster, topics_ensure_unreachable_cluster_fails) {
    char err[512] = "";
    const char *names[] = {"a"};
    const int partitions[] = {1};
    /* Port 1 on loopback: nothing listens there, so the bounded wait expires. */
    cr_expect_eq(ts_cluster_topics_ensure("127.0.0.1:1", NULL, names, partitions, NULL, 1, 1500,
                                          err, sizeof(err)),
                 TS_E_IO);
    cr_expect_neq(err[0], '\0');
}
