/* bench_transport.c - the latency floor of Kafka alone: producer -> consumer.
 *
 * The event->view latency of the pipeline (bench_pipeline.c) starts when the
 * probe producer is called, so it includes the producer's linger and the
 * broker's fetch before the runtime sees an event. This measures that part
 * alone, with nothing else running: the latency phase's producer settings
 * (bench_producer, linger 5 ms) at its 1K and 10K events/s, to a topic of
 * as many partitions as the probes' (storybook.events), and a consumer with
 * the runtime's settings (the topology's kafka config). The mock broker
 * holds a fetch that found no data for the whole fetch.wait.max.ms, where a
 * real broker answers as soon as data arrives, so on the mock this floor is
 * higher than on a real cluster.
 */
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "ts_kconf.h"

#define BENCH_TR_TOPIC "bench.transport"
#define BENCH_TR_VALUE 160 /* bytes, about a probe's Avro value */

typedef struct bench_tr {
    rd_kafka_t *consumer;
    int partitions; /* as many as the probes' topic */
    double *lat_us; /* per message, by its sequence number */
    size_t n;
    atomic_size_t got;
    atomic_int stop;
} bench_tr;

/* Value: sequence number, then the send time (ns), then padding. */
static void *bench_tr_consume(void *arg) {
    bench_tr *tr = arg;
    while (!atomic_load(&tr->stop)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(tr->consumer, 50);
        if (!m)
            continue;
        if (!m->err && m->len >= 16) {
            int64_t now = bench_now_ns(), seq, sent;
            memcpy(&seq, m->payload, 8);
            memcpy(&sent, (const char *)m->payload + 8, 8);
            if (seq >= 0 && (size_t)seq < tr->n) {
                tr->lat_us[seq] = (double)(now - sent) / 1000.0;
                atomic_fetch_add(&tr->got, 1);
            }
        }
        rd_kafka_message_destroy(m);
    }
    return NULL;
}

static rd_kafka_t *bench_tr_consumer(bench_ctx *b, int partitions) {
    char err[512];
    rd_kafka_conf_t *conf =
        ts_kconf_create(ts_cluster_bootstraps(b->cluster), b->topo->kafka_config, err, sizeof(err));
    if (!conf) {
        fprintf(stderr, "bench: transport: %s\n", err);
        return NULL;
    }
    rd_kafka_conf_set(conf, "group.id", "bench-transport", NULL, 0);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "bench: transport: %s\n", err);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; p++)
        rd_kafka_topic_partition_list_add(parts, BENCH_TR_TOPIC, p)->offset = RD_KAFKA_OFFSET_END;
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    return rk;
}

/* Produces `n` messages paced at `rate`/s with sequence numbers from `base`. */
static void bench_tr_produce(rd_kafka_t *prod, size_t base, size_t n, double rate) {
    char val[BENCH_TR_VALUE] = {0}, key[32];
    double t0 = bench_now();
    for (size_t k = 0; k < n; k++) {
        double wait = t0 + (double)k / rate - bench_now();
        if (wait > 0.0005) {
            struct timespec ts = {0, (long)(wait * 1e9)};
            nanosleep(&ts, NULL);
        }
        int64_t seq = (int64_t)(base + k), sent = bench_now_ns();
        memcpy(val, &seq, 8);
        memcpy(val + 8, &sent, 8);
        int klen = snprintf(key, sizeof(key), "u%zu", base + k);
        while (rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(BENCH_TR_TOPIC),
                                 RD_KAFKA_V_KEY(key, (size_t)klen),
                                 RD_KAFKA_V_VALUE(val, sizeof(val)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(prod, 1);
        rd_kafka_poll(prod, 0);
    }
    rd_kafka_flush(prod, 10000);
}

int bench_transport(bench_ctx *b) {
    static const double rates[] = {1000, 10000};
    double secs = b->short_mode ? 1 : 4;
    size_t counts[2] = {(size_t)(rates[0] * secs), (size_t)(rates[1] * secs)};
    const ts_topic_conf *probes = ts_topology_topic(b->topo, BENCH_PROBE_TOPIC);
    bench_tr tr = {.n = counts[0] + counts[1], .partitions = probes ? probes->partitions : 0};
    tr.lat_us = calloc(tr.n, sizeof(*tr.lat_us));
    if (tr.partitions > 0) {
        ts_cluster_topic_create(b->cluster, BENCH_TR_TOPIC, tr.partitions);
        tr.consumer = bench_tr_consumer(b, tr.partitions);
    } else {
        fprintf(stderr, "bench: transport: the topology has no %s\n", BENCH_PROBE_TOPIC);
    }
    rd_kafka_t *prod = tr.consumer ? bench_producer(b, 5) : NULL;
    pthread_t th;
    int started = prod && tr.lat_us && pthread_create(&th, NULL, bench_tr_consume, &tr) == 0;
    int rc = started ? 0 : -1;
    if (started) {
        /* Warm-up: connections up and the consumer fetching before the clock. */
        bench_tr_produce(prod, tr.n, 200, 1000);
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
    }
    json_t *out = json_object();
    size_t base = 0;
    for (int r = 0; r < 2 && rc == 0; r++) {
        size_t n = counts[r];
        bench_tr_produce(prod, base, n, rates[r]);
        double deadline = bench_now() + 10;
        while (atomic_load(&tr.got) < base + n && bench_now() < deadline) {
            struct timespec ts = {0, 10000000};
            nanosleep(&ts, NULL);
        }
        double *lat = malloc(n * sizeof(*lat));
        size_t got = 0;
        for (size_t k = 0; k < n && lat; k++)
            if (tr.lat_us[base + k] > 0)
                lat[got++] = tr.lat_us[base + k];
        json_t *p = bench_percentiles(lat, got);
        free(lat);
        char name[64], note[160];
        snprintf(name, sizeof(name), "%.0f", rates[r]);
        json_object_set(out, name, p);
        snprintf(note, sizeof(note),
                 "producer (linger 5 ms) -> consumer, %d partitions, nothing else running; "
                 "p50 %.2f max %.1f ms",
                 tr.partitions, json_real_value(json_object_get(p, "p50_ms")),
                 json_real_value(json_object_get(p, "max_ms")));
        snprintf(name, sizeof(name), "kafka_transport_p99@%.0fk/s", rates[r] / 1000);
        bench_row(b, "component", name, json_real_value(json_object_get(p, "p99_ms")), "ms", note);
        json_decref(p);
        base += n;
    }
    json_object_set_new(json_object_get(b->results, "components"), "kafka_transport_latency", out);
    if (started) {
        atomic_store(&tr.stop, 1);
        pthread_join(th, NULL);
    }
    if (prod)
        rd_kafka_destroy(prod);
    if (tr.consumer) {
        rd_kafka_assign(tr.consumer, NULL);
        rd_kafka_destroy_flags(tr.consumer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    }
    free(tr.lat_us);
    return rc;
}
