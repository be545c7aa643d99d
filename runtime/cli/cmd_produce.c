/* cmd_produce.c - `tastesync produce <topic> [json | -]`: events in, as a
 * producer would write them.
 *
 * Each event is JSON in the form the samples use ({"BookCreated": {...}}),
 * encoded with the latest version of the topic's schema (ts_encoder_from_json),
 * framed the Confluent way and keyed by the topic's key field. One argument is
 * one event; `-` (or no argument) reads one event per line from stdin and
 * produces each line as soon as it is encoded, so the command can sit at the
 * end of a pipe. The first line that does not encode stops the command with
 * its line number and the field at fault; the lines before it are delivered.
 * The producer is idempotent and every delivery is awaited before exit.
 */
#include <getopt.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ts_avro.h"
#include "ts_kconf.h"

typedef struct ts_produce {
    rd_kafka_t *rk;
    size_t delivered;
    size_t failed;
    char failure[256];
    int32_t last_partition;
    int64_t last_offset;
} ts_produce;

static void ts_produce_delivered(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    (void)rk;
    ts_produce *pr = opaque;
    if (msg->err) {
        if (pr->failed++ == 0)
            snprintf(pr->failure, sizeof(pr->failure), "%s", rd_kafka_err2str(msg->err));
        return;
    }
    pr->delivered++;
    pr->last_partition = msg->partition;
    pr->last_offset = msg->offset;
}

int ts_cli_brokers(const ts_topology *topo, const char *flag, char *out, size_t cap) {
    if (flag && flag[0]) {
        snprintf(out, cap, "%s", flag);
        return 0;
    }
    if (topo->kafka_brokers && topo->kafka_brokers[0]) {
        snprintf(out, cap, "%s", topo->kafka_brokers);
        return 0;
    }
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", topo->state_dir, TS_CLI_BROKERS_FILE);
    FILE *in = fopen(path, "r");
    if (in) {
        int ok = fgets(out, (int)cap, in) != NULL;
        fclose(in);
        out[strcspn(out, "\r\n")] = '\0';
        if (ok && out[0])
            return 0;
    }
    fprintf(stderr,
            "tastesync: no Kafka address: pass --brokers, set TASTESYNC_KAFKA_BROKERS or "
            "kafka.brokers in %s, or start `tastesync run` (it writes %s)\n",
            topo->path, path);
    return -1;
}

/* Sends one encoded event, waiting for room when the local queue is full. */
static int ts_produce_send(ts_produce *pr, const char *topic, const char *key, const char *value,
                           size_t len) {
    for (;;) {
        rd_kafka_resp_err_t kerr = rd_kafka_producev(
            pr->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(key, key ? strlen(key) : 0), RD_KAFKA_V_VALUE((void *)value, len),
            RD_KAFKA_V_END);
        if (kerr == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(pr->rk, 100);
            continue;
        }
        if (kerr) {
            fprintf(stderr, "tastesync: produce to %s: %s\n", topic, rd_kafka_err2str(kerr));
            return -1;
        }
        rd_kafka_poll(pr->rk, 0);
        return 0;
    }
}

/* Encodes one JSON text and produces it. `where` prefixes messages ("" or
 * "stdin:3: "). @returns 0, 2 for a bad event, 1 when Kafka refuses it. */
static int ts_produce_one(ts_produce *pr, ts_encoder *enc, const ts_topic_conf *tc,
                          const char *text, const char *where) {
    json_error_t jerr;
    json_t *event = json_loads(text, 0, &jerr);
    if (!event) {
        fprintf(stderr, "tastesync: %snot JSON: %s (column %d)\n", where, jerr.text, jerr.column);
        return TS_CLI_EXIT_USAGE;
    }
    char *bytes = NULL, why[512];
    size_t len = 0;
    int rc = TS_CLI_EXIT_OK;
    if (ts_encoder_from_json(enc, event, &bytes, &len, why, sizeof(why)) != TS_OK) {
        fprintf(stderr, "tastesync: %s%s: %s\n", where, tc->schema, why);
        rc = TS_CLI_EXIT_USAGE;
    } else {
        const char *key = tc->key_field ? ts_encoder_field_str(enc, tc->key_field) : NULL;
        if (tc->key_field && !key) {
            fprintf(stderr, "tastesync: %sfield '%s' (the key of %s) is missing or null\n", where,
                    tc->key_field, tc->name);
            rc = TS_CLI_EXIT_USAGE;
        } else if (ts_produce_send(pr, tc->name, key, bytes, len) != 0) {
            rc = TS_CLI_EXIT_FAIL;
        }
    }
    free(bytes);
    json_decref(event);
    return rc;
}

/* Produces one event per non-blank line of `in` ('#' lines are comments). */
static int ts_produce_lines(ts_produce *pr, ts_encoder *enc, const ts_topic_conf *tc, FILE *in,
                            size_t *sent) {
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = TS_CLI_EXIT_OK;
    while (rc == TS_CLI_EXIT_OK && getline(&line, &cap, in) >= 0) {
        lineno++;
        const char *p = line + strspn(line, " \t\r\n");
        if (*p == '\0' || *p == '#')
            continue;
        char where[32];
        snprintf(where, sizeof(where), "stdin:%d: ", lineno);
        rc = ts_produce_one(pr, enc, tc, p, where);
        if (rc == TS_CLI_EXIT_OK)
            (*sent)++;
    }
    free(line);
    return rc;
}

static void ts_produce_usage(FILE *out) {
    fprintf(out,
            "usage: tastesync produce <topic> [json | -] [--brokers LIST] [-c topology.yaml]\n\n"
            "Encodes JSON events with the latest Avro schema of <topic> (as declared in\n"
            "topology.yaml), frames them the Confluent way (0x00, schema id, Avro binary),\n"
            "keys them by the topic's key field and produces them, waiting for delivery.\n"
            "An event is the union branch name around its fields, e.g.\n"
            "  {\"BookCreated\": {\"event_id\": \"e1\", \"book_id\": \"b1\", ...}}\n"
            "Times may be epoch milliseconds or ISO-8601 strings. With `-` or no event,\n"
            "reads one event per line from stdin (blank and '#' lines skipped) and stops\n"
            "at the first bad line, naming the line and the field.\n\n"
            "  --brokers LIST   bootstrap servers; default TASTESYNC_KAFKA_BROKERS, then\n"
            "                   kafka.brokers of the topology, then <state dir>/%s\n"
            "                   (written by a running `tastesync run`)\n"
            "  -c FILE          topology (default ./topology.yaml)\n\n"
            "exit codes: 0 delivered, 1 Kafka failure, 2 usage, configuration or bad event\n",
            TS_CLI_BROKERS_FILE);
}

int ts_cli_produce(int argc, char **argv) {
    static const struct option opts[] = {{"brokers", required_argument, NULL, 'b'},
                                         {"config", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *brokers_flag = NULL, *topo_path = NULL;
    int opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "b:c:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'b': brokers_flag = optarg; break;
        case 'c': topo_path = optarg; break;
        case 'h': ts_produce_usage(stdout); return TS_CLI_EXIT_OK;
        default:
            fprintf(stderr, "tastesync produce: bad option '%s'\n", argv[optind - 1]);
            ts_produce_usage(stderr);
            return TS_CLI_EXIT_USAGE;
        }
    }
    int npos = argc - optind;
    if (npos < 1 || npos > 2) {
        ts_produce_usage(stderr);
        return TS_CLI_EXIT_USAGE;
    }
    const char *topic = argv[optind];
    const char *event = npos == 2 && strcmp(argv[optind + 1], "-") != 0 ? argv[optind + 1] : NULL;

    ts_topology *topo = ts_cli_load_topology(topo_path);
    if (!topo)
        return TS_CLI_EXIT_USAGE;
    int rc = TS_CLI_EXIT_USAGE;
    ts_schemas *schemas = NULL;
    ts_encoder *enc = NULL;
    ts_produce pr = {.last_partition = -1, .last_offset = -1};
    char err[1024], brokers[1024];
    const ts_topic_conf *tc = ts_topology_topic(topo, topic);
    if (!tc || !tc->schema) {
        fprintf(stderr, "tastesync: topic '%s' is not declared with a schema in %s\n", topic,
                topo->path);
        goto out;
    }
    if (ts_schemas_load(topo->schemas_dir, &schemas, err, sizeof(err)) != TS_OK) {
        fprintf(stderr, "tastesync: %s\n", err);
        goto out;
    }
    if (!(enc = ts_encoder_create(schemas, tc->schema))) {
        fprintf(stderr, "tastesync: schema subject '%s' of topic %s is not in %s/ids.yaml\n",
                tc->schema, topic, topo->schemas_dir);
        goto out;
    }
    if (ts_cli_brokers(topo, brokers_flag, brokers, sizeof(brokers)) != 0)
        goto out;
    rd_kafka_conf_t *conf = ts_kconf_create(brokers, topo->kafka_config, err, sizeof(err));
    /* A wrong address should fail in seconds, not after librdkafka's 5 minutes.
     * (Keys are partitioned like the Java client: ts_kconf_create sets it.) */
    if (!conf ||
        ts_kconf_set(conf, "enable.idempotence", "true", err, sizeof(err)) != TS_OK ||
        ts_kconf_set(conf, "linger.ms", "5", err, sizeof(err)) != TS_OK ||
        ts_kconf_default(conf, topo->kafka_config, "message.timeout.ms", "15000", err,
                         sizeof(err)) != TS_OK) {
        fprintf(stderr, "tastesync: %s\n", err);
        if (conf)
            rd_kafka_conf_destroy(conf);
        goto out;
    }
    if (ts_kconf_producer(conf, topo->kafka_config, err, sizeof(err)) != TS_OK) {
        fprintf(stderr, "tastesync: %s\n", err);
        rd_kafka_conf_destroy(conf);
        goto out;
    }
    rd_kafka_conf_set_opaque(conf, &pr);
    rd_kafka_conf_set_dr_msg_cb(conf, ts_produce_delivered);
    char kerr[512];
    if (!(pr.rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr)))) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "tastesync: cannot create producer: %s\n", kerr);
        rc = TS_CLI_EXIT_FAIL;
        goto out;
    }

    size_t sent = 0;
    if (event) {
        rc = ts_produce_one(&pr, enc, tc, event, "");
        sent = rc == TS_CLI_EXIT_OK;
    } else {
        rc = ts_produce_lines(&pr, enc, tc, stdin, &sent);
    }
    if (rd_kafka_flush(pr.rk, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "tastesync: events not delivered within 60 s (brokers %s)\n", brokers);
        rc = TS_CLI_EXIT_FAIL;
    } else if (pr.failed) {
        fprintf(stderr, "tastesync: %zu of %zu events not delivered to %s: %s\n", pr.failed, sent,
                brokers, pr.failure);
        rc = TS_CLI_EXIT_FAIL;
    }
    if (event && pr.delivered == 1)
        printf("produced 1 event to %s [%" PRId32 "] at offset %" PRId64 "\n", topic,
               pr.last_partition, pr.last_offset);
    else if (!event || pr.delivered)
        printf("produced %zu events to %s\n", pr.delivered, topic);
out:
    if (pr.rk)
        rd_kafka_destroy(pr.rk);
    ts_encoder_destroy(enc);
    ts_schemas_destroy(schemas);
    ts_topology_destroy(topo);
    return rc;
}
