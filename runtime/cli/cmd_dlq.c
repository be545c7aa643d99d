/* cmd_dlq.c - `tastesync dlq list|redrive <input-topic>`: the dead-letter
 * queue of an input topic, read and re-driven.
 *
 * A processor's rejected or undecodable inputs go unchanged to
 * `<input>.dlq` with headers `error`, `source.topic`, `source.partition` and
 * `source.offset`. Both subcommands read that topic with a consumer that only
 * assigns partitions (it joins no group and commits nothing, so it never
 * disturbs the runtime), one partition after the other from the first
 * selected offset to the end as it was when the command started, so the
 * output is in (partition, offset) order and the command always ends.
 *
 * `redrive` re-produces each selected record's original key and value bytes
 * to the input topic, in its original partition (so the record stays in
 * order with the other events of its key), with one header `redriven.from` =
 * "<dlq topic>/<partition>/<offset>" telling where it came from. It is meant
 * for after a fix (of the producer's data, a schema, or a processor): records
 * that still fail land in the DLQ again, with their new source offset.
 */
#include <getopt.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "ts_kconf.h"

#define TS_DLQ_READ_TIMEOUT_MS 30000

typedef struct ts_dlq {
    const ts_topology *topo;
    const ts_topic_conf *input;
    const ts_topic_conf *dlq;
    int32_t partition; /* -1: every partition */
    int64_t from, to;  /* inclusive offset range; -1: unbounded */
    long limit;        /* list: at most this many records; -1: no limit */
    rd_kafka_t *consumer;
    rd_kafka_t *producer; /* redrive only */
    size_t seen;
    size_t failed; /* redrive deliveries that failed */
    char failure[256];
} ts_dlq;

static void ts_dlq_delivered(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    (void)rk;
    ts_dlq *dq = opaque;
    if (msg->err && dq->failed++ == 0)
        snprintf(dq->failure, sizeof(dq->failure), "%s", rd_kafka_err2str(msg->err));
}

/* The value of header `name` into `out` ("" when absent). */
static const char *ts_dlq_header(const rd_kafka_message_t *msg, const char *name, char *out,
                                 size_t cap) {
    rd_kafka_headers_t *hdrs = NULL;
    const void *value = NULL;
    size_t size = 0;
    out[0] = '\0';
    if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_header_get_last(hdrs, name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        value)
        snprintf(out, cap, "%.*s", (int)size, (const char *)value);
    return out;
}

static void ts_dlq_list_one(ts_dlq *dq, const rd_kafka_message_t *msg) {
    char error[1024], stopic[256], spart[32], soff[32], source[320];
    ts_dlq_header(msg, "error", error, sizeof(error));
    ts_dlq_header(msg, "source.topic", stopic, sizeof(stopic));
    ts_dlq_header(msg, "source.partition", spart, sizeof(spart));
    ts_dlq_header(msg, "source.offset", soff, sizeof(soff));
    snprintf(source, sizeof(source), "%s/%s/%s", stopic, spart, soff);
    if (dq->seen == 0)
        printf("%-9s %-8s %-24s %-32s %s\n", "PARTITION", "OFFSET", "KEY", "SOURCE", "ERROR");
    printf("%-9" PRId32 " %-8" PRId64 " %-24.*s %-32s %s\n", msg->partition, msg->offset,
           msg->key ? (int)msg->key_len : 1, msg->key ? (const char *)msg->key : "-", source,
           error);
}

static int ts_dlq_redrive_one(ts_dlq *dq, const rd_kafka_message_t *msg) {
    char spart[32], from[512];
    ts_dlq_header(msg, "source.partition", spart, sizeof(spart));
    char *end = NULL;
    long p = strtol(spart, &end, 10);
    int32_t partition = spart[0] && *end == '\0' && p >= 0 && p < dq->input->partitions
                            ? (int32_t)p
                            : RD_KAFKA_PARTITION_UA;
    snprintf(from, sizeof(from), "%s/%" PRId32 "/%" PRId64, dq->dlq->name, msg->partition,
             msg->offset);
    for (;;) {
        rd_kafka_resp_err_t kerr = rd_kafka_producev(
            dq->producer, RD_KAFKA_V_TOPIC(dq->input->name), RD_KAFKA_V_PARTITION(partition),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(msg->key, msg->key_len),
            RD_KAFKA_V_VALUE(msg->payload, msg->len),
            RD_KAFKA_V_HEADER("redriven.from", from, (ssize_t)strlen(from)), RD_KAFKA_V_END);
        if (kerr == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(dq->producer, 100);
            continue;
        }
        if (kerr) {
            fprintf(stderr, "tastesync: produce to %s: %s\n", dq->input->name,
                    rd_kafka_err2str(kerr));
            return -1;
        }
        rd_kafka_poll(dq->producer, 0);
        return 0;
    }
}

static int64_t ts_dlq_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads the selected records of one partition, in offset order.
 * @returns 0, or -1 after printing why. */
static int ts_dlq_partition(ts_dlq *dq, int32_t p) {
    int64_t low = 0, high = 0;
    rd_kafka_resp_err_t kerr =
        rd_kafka_query_watermark_offsets(dq->consumer, dq->dlq->name, p, &low, &high, 10000);
    if (kerr) {
        fprintf(stderr, "tastesync: offsets of %s [%" PRId32 "]: %s\n", dq->dlq->name, p,
                rd_kafka_err2str(kerr));
        return -1;
    }
    int64_t first = dq->from > low ? dq->from : low;
    int64_t last = dq->to >= 0 && dq->to < high - 1 ? dq->to : high - 1;
    if (first > last)
        return 0;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, dq->dlq->name, p)->offset = first;
    kerr = rd_kafka_assign(dq->consumer, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (kerr) {
        fprintf(stderr, "tastesync: assign %s [%" PRId32 "]: %s\n", dq->dlq->name, p,
                rd_kafka_err2str(kerr));
        return -1;
    }
    int rc = 0;
    int64_t deadline = ts_dlq_now_ms() + TS_DLQ_READ_TIMEOUT_MS, next = first;
    while (next <= last && (dq->limit < 0 || (long)dq->seen < dq->limit)) {
        if (ts_dlq_now_ms() > deadline) {
            fprintf(stderr, "tastesync: %s [%" PRId32 "] stopped at offset %" PRId64
                            " of %" PRId64 " (no data within %d s)\n",
                    dq->dlq->name, p, next, last, TS_DLQ_READ_TIMEOUT_MS / 1000);
            rc = -1;
            break;
        }
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(dq->consumer, 200);
        if (!msg)
            continue;
        if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(msg);
            continue;
        }
        if (msg->err) {
            fprintf(stderr, "tastesync: reading %s: %s\n", dq->dlq->name,
                    rd_kafka_message_errstr(msg));
            rd_kafka_message_destroy(msg);
            rc = -1;
            break;
        }
        if (msg->partition == p && msg->offset >= next && msg->offset <= last) {
            next = msg->offset + 1;
            if (dq->producer)
                rc = ts_dlq_redrive_one(dq, msg);
            else
                ts_dlq_list_one(dq, msg);
            dq->seen++;
        }
        rd_kafka_message_destroy(msg);
        if (rc != 0)
            break;
    }
    rd_kafka_assign(dq->consumer, NULL);
    return rc;
}

static rd_kafka_t *ts_dlq_client(ts_dlq *dq, rd_kafka_type_t type, const char *brokers) {
    char err[1024];
    rd_kafka_conf_t *conf = ts_kconf_create(brokers, dq->topo->kafka_config, err, sizeof(err));
    ts_err rc = conf ? TS_OK : TS_E_CONFIG;
    /* librdkafka wants a group for assign(); this one is never joined and
     * nothing is committed to it. */
    char group[512];
    snprintf(group, sizeof(group), "%s.cli", dq->topo->group);
    if (rc == TS_OK && type == RD_KAFKA_CONSUMER)
        rc = ts_kconf_set(conf, "group.id", group, err, sizeof(err));
    if (rc == TS_OK && type == RD_KAFKA_CONSUMER)
        rc = ts_kconf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
    if (rc == TS_OK && type == RD_KAFKA_PRODUCER) {
        rc = ts_kconf_producer(conf, dq->topo->kafka_config, err, sizeof(err));
        if (rc == TS_OK)
            rc = ts_kconf_set(conf, "enable.idempotence", "true", err, sizeof(err));
        if (rc == TS_OK)
            rc = ts_kconf_default(conf, dq->topo->kafka_config, "message.timeout.ms", "15000", err,
                                  sizeof(err));
        if (rc == TS_OK) {
            rd_kafka_conf_set_opaque(conf, dq);
            rd_kafka_conf_set_dr_msg_cb(conf, ts_dlq_delivered);
        }
    }
    if (rc != TS_OK) {
        fprintf(stderr, "tastesync: %s\n", err);
        if (conf)
            rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof(err));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "tastesync: cannot create Kafka client: %s\n", err);
    }
    return rk;
}

static void ts_dlq_usage(FILE *out) {
    fprintf(out,
            "usage: tastesync dlq list <input-topic> [--limit N] [options]\n"
            "       tastesync dlq redrive <input-topic> [--from OFF] [--to OFF] [options]\n\n"
            "list     prints the records of <input-topic>.dlq, in (partition, offset)\n"
            "         order: partition, offset, key, source (topic/partition/offset of\n"
            "         the original input) and the error that rejected it.\n"
            "redrive  re-produces those records' original key and bytes to <input-topic>\n"
            "         (in their original partition) with a header redriven.from =\n"
            "         \"<dlq topic>/<partition>/<offset>\", after a fix; prints how many.\n\n"
            "  --from OFF       first DLQ offset (in every selected partition)\n"
            "  --to OFF         last DLQ offset, inclusive\n"
            "  --partition P    only DLQ partition P\n"
            "  --limit N        list at most N records (default 100; 0: all)\n"
            "  --brokers LIST   bootstrap servers; default as for `tastesync produce`\n"
            "  -c FILE          topology (default ./topology.yaml)\n\n"
            "exit codes: 0 ok, 1 Kafka failure, 2 usage or configuration error\n");
}

/* Parses a non-negative decimal; -1 when malformed. */
static long long ts_dlq_number(const char *s) {
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    return s[0] >= '0' && s[0] <= '9' && *end == '\0' ? v : -1;
}

int ts_cli_dlq(int argc, char **argv) {
    static const struct option opts[] = {{"brokers", required_argument, NULL, 'b'},
                                         {"config", required_argument, NULL, 'c'},
                                         {"from", required_argument, NULL, 'f'},
                                         {"to", required_argument, NULL, 't'},
                                         {"partition", required_argument, NULL, 'p'},
                                         {"limit", required_argument, NULL, 'n'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *brokers_flag = NULL, *topo_path = NULL;
    ts_dlq dq = {.partition = -1, .from = -1, .to = -1, .limit = 100};
    int opt, limit_set = 0, longindex = 0;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "b:c:h", opts, &longindex)) != -1) {
        int numeric = opt == 'f' || opt == 't' || opt == 'p' || opt == 'n';
        long long v = numeric ? ts_dlq_number(optarg) : 0;
        if (v < 0) {
            fprintf(stderr, "tastesync dlq: --%s wants a number >= 0, got '%s'\n",
                    opts[longindex].name, optarg);
            return TS_CLI_EXIT_USAGE;
        }
        switch (opt) {
        case 'b': brokers_flag = optarg; break;
        case 'c': topo_path = optarg; break;
        case 'f': dq.from = v; break;
        case 't': dq.to = v; break;
        case 'p': dq.partition = v > INT32_MAX ? INT32_MAX : (int32_t)v; break;
        case 'n': dq.limit = v == 0 ? -1 : (long)v; limit_set = 1; break;
        case 'h': ts_dlq_usage(stdout); return TS_CLI_EXIT_OK;
        default:
            fprintf(stderr, "tastesync dlq: bad option '%s'\n", argv[optind - 1]);
            ts_dlq_usage(stderr);
            return TS_CLI_EXIT_USAGE;
        }
    }
    const char *sub = optind < argc ? argv[optind] : "";
    int redrive = strcmp(sub, "redrive") == 0;
    if ((!redrive && strcmp(sub, "list") != 0) || argc - optind != 2) {
        ts_dlq_usage(stderr);
        return TS_CLI_EXIT_USAGE;
    }
    if (redrive && limit_set) {
        fprintf(stderr, "tastesync dlq: --limit is for list; redrive takes --from/--to\n");
        return TS_CLI_EXIT_USAGE;
    }
    if (redrive)
        dq.limit = -1;
    if (dq.from >= 0 && dq.to >= 0 && dq.from > dq.to) {
        fprintf(stderr, "tastesync dlq: --from %" PRId64 " is after --to %" PRId64 "\n", dq.from,
                dq.to);
        return TS_CLI_EXIT_USAGE;
    }
    const char *input = argv[optind + 1];
    ts_topology *topo = ts_cli_load_topology(topo_path);
    if (!topo)
        return TS_CLI_EXIT_USAGE;
    dq.topo = topo;
    int rc = TS_CLI_EXIT_USAGE;
    char name[512], brokers[1024];
    snprintf(name, sizeof(name), "%s.dlq", input);
    dq.input = ts_topology_topic(topo, input);
    dq.dlq = ts_topology_topic(topo, name);
    if (!dq.input || !dq.dlq) {
        fprintf(stderr, "tastesync: '%s' is not the input topic of a processor in %s\n", input,
                topo->path);
        goto out;
    }
    if (dq.partition >= dq.dlq->partitions) {
        fprintf(stderr, "tastesync: %s has partitions 0..%d\n", name, dq.dlq->partitions - 1);
        goto out;
    }
    if (ts_cli_brokers(topo, brokers_flag, brokers, sizeof(brokers)) != 0)
        goto out;
    rc = TS_CLI_EXIT_FAIL;
    if (!(dq.consumer = ts_dlq_client(&dq, RD_KAFKA_CONSUMER, brokers)))
        goto out;
    if (redrive && !(dq.producer = ts_dlq_client(&dq, RD_KAFKA_PRODUCER, brokers)))
        goto out;
    int ok = 1;
    for (int32_t p = 0; ok && p < dq.dlq->partitions; p++)
        if (dq.partition < 0 || p == dq.partition)
            ok = ts_dlq_partition(&dq, p) == 0;
    if (redrive) {
        if (rd_kafka_flush(dq.producer, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            fprintf(stderr, "tastesync: records not delivered within 60 s\n");
            ok = 0;
        } else if (dq.failed) {
            fprintf(stderr, "tastesync: %zu records not delivered: %s\n", dq.failed, dq.failure);
            ok = 0;
        }
        printf("redriven %zu records from %s to %s\n", dq.seen - dq.failed, name, input);
    } else if (dq.seen == 0) {
        printf("%s: no records%s\n", name, dq.from >= 0 || dq.to >= 0 || dq.partition >= 0
                                                ? " in the selected range" : "");
    } else if (dq.limit >= 0 && (long)dq.seen >= dq.limit) {
        printf("(stopped at --limit %ld; --limit 0 lists all)\n", dq.limit);
    }
    rc = ok ? TS_CLI_EXIT_OK : TS_CLI_EXIT_FAIL;
out:
    if (dq.consumer)
        rd_kafka_destroy_flags(dq.consumer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (dq.producer)
        rd_kafka_destroy(dq.producer);
    ts_topology_destroy(topo);
    return rc;
}
