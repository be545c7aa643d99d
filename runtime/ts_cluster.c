/* ts_cluster.c - the embedded Kafka cluster and topic creation.
 *
 * The embedded cluster is a librdkafka mock cluster hosted by a dedicated
 * rd_kafka_t that is never used as a client: the mock cluster needs a handle
 * for its logging and lives on its own thread, and the handle must outlive it
 * (librdkafka asserts that every mock cluster is destroyed before its handle).
 *
 * Topic creation on a real cluster goes through the Admin API on a short-lived
 * producer handle: a metadata request finds the topics that are missing, and
 * one CreateTopics request, waited for on a private queue, creates them. The
 * mock brokers have no controller and do not implement CreateTopics, so
 * against them only the existence check is done.
 */
#include "ts_cluster.h"

#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "ts_kconf.h"
#include "ts_log.h"

struct ts_cluster {
    rd_kafka_t *rk;                 /* hosts the mock cluster only */
    rd_kafka_mock_cluster_t *mcluster;
    char *bootstraps;               /* our copy, stable until destroy */
};

/* Whether `port` is one of the "host:port,host:port" in `bootstraps`. */
static int ts_cluster_listens_on(const char *bootstraps, int port) {
    for (const char *p = bootstraps; p && *p;) {
        const char *comma = strchr(p, ',');
        const char *colon = memchr(p, ':', comma ? (size_t)(comma - p) : strlen(p));
        if (colon && atoi(colon + 1) == port)
            return 1;
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

/* librdkafka's mock brokers leave Nagle's algorithm on, where a Kafka broker
 * turns it off. A small response then waits in the broker's socket until the
 * client acknowledges the previous one, which the client's kernel delays
 * until its next request (or 40 ms): a produce was acknowledged only when
 * the next one was sent (3 ms apart: p50 3.2 ms instead of 0.12). Accepted
 * sockets inherit TCP_NODELAY from the listening socket, so the brokers'
 * listening sockets get it, found among this process's descriptors by the
 * ports in `bootstraps`. @returns how many were set. */
static int ts_cluster_nodelay(const char *bootstraps) {
    DIR *dir = opendir("/proc/self/fd");
    if (!dir)
        return 0;
    int set = 0;
    struct dirent *d;
    while ((d = readdir(dir)) != NULL) {
        int fd = atoi(d->d_name);
        struct sockaddr_storage addr;
        socklen_t len = sizeof(addr);
        int listening = 0;
        socklen_t optlen = sizeof(listening);
        if (fd <= 2 || getsockname(fd, (struct sockaddr *)&addr, &len) != 0 ||
            getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) != 0 || !listening)
            continue;
        int port = addr.ss_family == AF_INET    ? ntohs(((struct sockaddr_in *)&addr)->sin_port)
                   : addr.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&addr)->sin6_port)
                                                : -1;
        int on = 1;
        if (ts_cluster_listens_on(bootstraps, port) &&
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) == 0)
            set++;
    }
    closedir(dir);
    return set;
}

ts_err ts_cluster_create(int brokers, ts_cluster **out, char *err, size_t errlen) {
    char why[256];
    *out = NULL;
    if (brokers < 1) {
        snprintf(err, errlen, "mock cluster: broker count must be >= 1, not %d", brokers);
        return TS_E_INVALID;
    }
    ts_cluster *cl = calloc(1, sizeof(*cl));
    if (!cl) {
        snprintf(err, errlen, "mock cluster: out of memory");
        return TS_E_NOMEM;
    }
    ts_err rc = TS_E_IO;
    rd_kafka_conf_t *conf = ts_kconf_create(NULL, NULL, err, errlen);
    if (!conf)
        goto fail;
    /* The host handle never connects anywhere: its notice about having no
     * bootstrap servers is noise, so only warnings and errors are logged. */
    if ((rc = ts_kconf_set(conf, "client.id", "tastesync-mock-cluster", err, errlen)) ||
        (rc = ts_kconf_set(conf, "log_level", "4", err, errlen)))
        goto fail_conf;
    rc = TS_E_IO;
    cl->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!cl->rk) {
        snprintf(err, errlen, "mock cluster: cannot create host handle: %s", why);
        goto fail_conf;
    }
    cl->mcluster = rd_kafka_mock_cluster_new(cl->rk, brokers);
    if (!cl->mcluster) {
        snprintf(err, errlen, "mock cluster: cannot start %d brokers (see librdkafka log)", brokers);
        goto fail;
    }
    cl->bootstraps = strdup(rd_kafka_mock_cluster_bootstraps(cl->mcluster));
    if (!cl->bootstraps) {
        snprintf(err, errlen, "mock cluster: out of memory");
        rc = TS_E_NOMEM;
        goto fail;
    }
    int nodelay = ts_cluster_nodelay(cl->bootstraps);
    if (nodelay < brokers)
        ts_log_warn("kafka mock-cluster",
                    "Nagle's algorithm stays on for %d of %d broker(s): their small responses "
                    "may wait for the client's next request",
                    brokers - nodelay, brokers);
    ts_log_info("kafka mock-cluster", "%d broker(s) listening on %s", brokers, cl->bootstraps);
    *out = cl;
    return TS_OK;
fail_conf:
    /* rd_kafka_new consumes the conf only on success. */
    rd_kafka_conf_destroy(conf);
fail:
    ts_cluster_destroy(cl);
    return rc;
}

const char *ts_cluster_bootstraps(const ts_cluster *cl) { return cl->bootstraps; }

rd_kafka_mock_cluster_t *ts_cluster_mock(ts_cluster *cl) { return cl->mcluster; }

ts_err ts_cluster_topic_create(ts_cluster *cl, const char *topic, int partitions) {
    if (!topic || !*topic || partitions < 1)
        return TS_E_INVALID;
    rd_kafka_resp_err_t kerr = rd_kafka_mock_topic_create(cl->mcluster, topic, partitions, 1);
    if (kerr == RD_KAFKA_RESP_ERR_NO_ERROR || kerr == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
        return TS_OK;
    ts_log_error("kafka mock-cluster", "cannot create topic %s: %s", topic, rd_kafka_err2str(kerr));
    return TS_E_IO;
}

void ts_cluster_destroy(ts_cluster *cl) {
    if (!cl)
        return;
    /* The mock cluster first: librdkafka refuses to destroy a handle that
     * still hosts one. */
    if (cl->mcluster)
        rd_kafka_mock_cluster_destroy(cl->mcluster);
    if (cl->rk)
        rd_kafka_destroy(cl->rk);
    free(cl->bootstraps);
    free(cl);
}

/* ---- topics on any cluster ------------------------------------------------ */

static int64_t ts_cluster_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int ts_cluster_remains(int64_t deadline) {
    int64_t left = deadline - ts_cluster_now_ms();
    return left > 0 ? (int)left : 0;
}

/* Sends one CreateTopics request for the topics listed in `which` and waits
 * for its result. A topic that exists already (created meanwhile) is success. */
static ts_err ts_cluster_create_topics(rd_kafka_t *rk, const char *const *names,
                                       const int *partitions, const int *compacted,
                                       const size_t *which, size_t n, int timeout_ms, char *err,
                                       size_t errlen) {
    char why[256];
    ts_err rc = TS_E_IO;
    rd_kafka_event_t *ev = NULL;
    rd_kafka_queue_t *rkqu = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *options = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_NewTopic_t **new_topics = calloc(n, sizeof(*new_topics));
    if (!new_topics) {
        snprintf(err, errlen, "create topics: out of memory");
        rc = TS_E_NOMEM;
        goto done;
    }
    /* Both timeouts are the whole budget: the operation timeout makes the
     * controller answer only once the topics exist. */
    if (rd_kafka_AdminOptions_set_request_timeout(options, timeout_ms, why, sizeof(why)) ||
        rd_kafka_AdminOptions_set_operation_timeout(options, timeout_ms, why, sizeof(why))) {
        snprintf(err, errlen, "create topics: %s", why);
        goto done;
    }
    for (size_t j = 0; j < n; j++) {
        size_t i = which[j];
        /* Replication -1: the broker's default.replication.factor (Kafka >= 2.4). */
        new_topics[j] = rd_kafka_NewTopic_new(names[i], partitions[i], -1, why, sizeof(why));
        if (!new_topics[j]) {
            snprintf(err, errlen, "create topics: %s: %s", names[i], why);
            rc = TS_E_INVALID;
            goto done;
        }
        if (compacted && compacted[i] &&
            (rd_kafka_NewTopic_set_config(new_topics[j], "cleanup.policy", "compact") ||
             rd_kafka_NewTopic_set_config(new_topics[j], "max.message.bytes",
                                          TS_KCONF_MAX_MESSAGE_BYTES))) {
            snprintf(err, errlen, "create topics: %s: cannot set its config", names[i]);
            goto done;
        }
    }
    rd_kafka_CreateTopics(rk, new_topics, n, options, rkqu);
    ev = rd_kafka_queue_poll(rkqu, timeout_ms + 1000);
    if (!ev) {
        snprintf(err, errlen, "create topics: no answer within %d ms", timeout_ms);
        goto done;
    }
    if (rd_kafka_event_error(ev)) {
        snprintf(err, errlen, "create topics: %s", rd_kafka_event_error_string(ev));
        goto done;
    }
    size_t cnt = 0;
    const rd_kafka_topic_result_t **results =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
    for (size_t i = 0; i < cnt; i++) {
        rd_kafka_resp_err_t terr = rd_kafka_topic_result_error(results[i]);
        if (terr == RD_KAFKA_RESP_ERR_NO_ERROR)
            ts_log_info("kafka topics", "created topic %s", rd_kafka_topic_result_name(results[i]));
        else if (terr != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            const char *msg = rd_kafka_topic_result_error_string(results[i]);
            snprintf(err, errlen, "create topics: %s: %s", rd_kafka_topic_result_name(results[i]),
                     msg ? msg : rd_kafka_err2str(terr));
            goto done;
        }
    }
    rc = TS_OK;
done:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (new_topics) {
        rd_kafka_NewTopic_destroy_array(new_topics, n);
        free(new_topics);
    }
    rd_kafka_AdminOptions_destroy(options);
    rd_kafka_queue_destroy(rkqu);
    return rc;
}

/* Whether the cluster names a controller that is one of its brokers. The mock
 * cluster names none (broker 0 of brokers 1..N), and the Admin API would wait
 * for it until the timeout. */
static int ts_cluster_has_controller(rd_kafka_t *rk, const struct rd_kafka_metadata *md) {
    int32_t controller = rd_kafka_controllerid(rk, 0);
    for (int b = 0; b < md->broker_cnt; b++)
        if (md->brokers[b].id == controller)
            return 1;
    return 0;
}

/* Compares the cluster's topics with the wanted ones: the missing ones go to
 * `missing` (indices), a different partition count is a warning. */
static ts_err ts_cluster_ensure(rd_kafka_t *rk, const char *const *names, const int *partitions,
                                const int *compacted, size_t n, int64_t deadline, char *err,
                                size_t errlen) {
    const struct rd_kafka_metadata *md = NULL;
    /* All topics, so the request cannot auto-create the ones it asks about. */
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(rk, 1, NULL, &md, ts_cluster_remains(deadline));
    if (kerr) {
        snprintf(err, errlen, "topics: cannot read cluster metadata: %s", rd_kafka_err2str(kerr));
        return TS_E_IO;
    }
    size_t *missing = calloc(n, sizeof(*missing)), nmissing = 0;
    if (!missing) {
        rd_kafka_metadata_destroy(md);
        snprintf(err, errlen, "topics: out of memory");
        return TS_E_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const struct rd_kafka_metadata_topic *found = NULL;
        for (int t = 0; t < md->topic_cnt && !found; t++)
            if (strcmp(md->topics[t].topic, names[i]) == 0 && !md->topics[t].err)
                found = &md->topics[t];
        if (!found)
            missing[nmissing++] = i;
        else if (found->partition_cnt != partitions[i])
            ts_log_warn("kafka topics", "topic %s has %d partitions, configured %d; left as it is",
                        names[i], found->partition_cnt, partitions[i]);
    }
    ts_err rc = TS_OK;
    if (nmissing > 0 && !ts_cluster_has_controller(rk, md)) {
        snprintf(err, errlen,
                 "topics: %s does not exist and the cluster cannot create topics (no "
                 "controller: an embedded mock cluster?)",
                 names[missing[0]]);
        rc = TS_E_IO;
    } else if (nmissing > 0) {
        rc = ts_cluster_create_topics(rk, names, partitions, compacted, missing, nmissing,
                                      ts_cluster_remains(deadline), err, errlen);
    }
    free(missing);
    rd_kafka_metadata_destroy(md);
    return rc;
}

ts_err ts_cluster_topics_ensure(const char *brokers, const json_t *kafka_config,
                                const char *const *names, const int *partitions,
                                const int *compacted, size_t n, int timeout_ms, char *err,
                                size_t errlen) {
    char why[256];
    if (n == 0)
        return TS_OK;
    for (size_t i = 0; i < n; i++)
        if (!names[i] || !*names[i] || partitions[i] < 1) {
            snprintf(err, errlen, "topics: topic %zu: needs a name and >= 1 partitions", i);
            return TS_E_INVALID;
        }
    int64_t deadline = ts_cluster_now_ms() + timeout_ms;
    rd_kafka_conf_t *conf = ts_kconf_create(brokers, kafka_config, err, errlen);
    if (!conf)
        return TS_E_CONFIG;
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "topics: cannot create admin client: %s", why);
        return TS_E_CONFIG;
    }
    ts_err rc = ts_cluster_ensure(rk, names, partitions, compacted, n, deadline, err, errlen);
    rd_kafka_destroy(rk);
    return rc;
}
