/* ts_sample.c - JSON lines to Kafka (see ts_sample.h).
 *
 * One short-lived idempotent producer per call; every record is awaited, so
 * when a call returns TS_OK everything it produced is in the log.
 */
#include "ts_sample.h"

#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>

#include "ts_avro.h"
#include "ts_kconf.h"
#include "ts_log.h"

typedef struct ts_sample_producer {
    rd_kafka_t *rk;
    int failed;
    char failure[256];
} ts_sample_producer;

static void ts_sample_delivered(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    (void)rk;
    ts_sample_producer *sp = opaque;
    if (msg->err && !sp->failed) {
        sp->failed = 1;
        snprintf(sp->failure, sizeof(sp->failure), "delivery failed: %s",
                 rd_kafka_err2str(msg->err));
    }
}

static ts_err ts_sample_producer_open(ts_sample_producer *sp, const ts_topology *topo,
                                      const char *brokers, char *err, size_t errlen) {
    memset(sp, 0, sizeof(*sp));
    rd_kafka_conf_t *conf = ts_kconf_create(brokers, topo->kafka_config, err, errlen);
    if (!conf)
        return TS_E_CONFIG;
    if (ts_kconf_set(conf, "enable.idempotence", "true", err, errlen) != TS_OK ||
        ts_kconf_set(conf, "linger.ms", "5", err, errlen) != TS_OK) {
        rd_kafka_conf_destroy(conf);
        return TS_E_CONFIG;
    }
    if (ts_kconf_producer(conf, topo->kafka_config, err, errlen) != TS_OK) {
        rd_kafka_conf_destroy(conf);
        return TS_E_CONFIG;
    }
    rd_kafka_conf_set_opaque(conf, sp);
    rd_kafka_conf_set_dr_msg_cb(conf, ts_sample_delivered);
    char kerr[512];
    sp->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr));
    if (!sp->rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "cannot create producer: %s", kerr);
        return TS_E_IO;
    }
    return TS_OK;
}

static ts_err ts_sample_producer_close(ts_sample_producer *sp, char *err, size_t errlen) {
    ts_err rc = TS_OK;
    if (rd_kafka_flush(sp->rk, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, errlen, "records not delivered within 30 s");
        rc = TS_E_IO;
    } else if (sp->failed) {
        snprintf(err, errlen, "%s", sp->failure);
        rc = TS_E_IO;
    }
    rd_kafka_destroy(sp->rk);
    return rc;
}

static ts_err ts_sample_send(ts_sample_producer *sp, const char *topic, const char *key,
                             const void *value, size_t len, char *err, size_t errlen) {
    for (;;) {
        rd_kafka_resp_err_t kerr = rd_kafka_producev(
            sp->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(key, key ? strlen(key) : 0), RD_KAFKA_V_VALUE((void *)value, len),
            RD_KAFKA_V_END);
        if (kerr == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(sp->rk, 100);
            continue;
        }
        if (kerr) {
            snprintf(err, errlen, "produce to %s: %s", topic, rd_kafka_err2str(kerr));
            return TS_E_IO;
        }
        rd_kafka_poll(sp->rk, 0);
        return TS_OK;
    }
}

static ts_err ts_sample_file(ts_sample_producer *sp, ts_encoder *enc, const ts_topic_conf *tc,
                             const char *path, size_t *produced, char *err, size_t errlen) {
    FILE *in = fopen(path, "r");
    if (!in) {
        snprintf(err, errlen, "%s: cannot open", path);
        return TS_E_IO;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0;
    ts_err rc = TS_OK;
    while (rc == TS_OK && (len = getline(&line, &cap, in)) >= 0) {
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '\n' || *p == '#')
            continue;
        json_error_t jerr;
        json_t *event = json_loads(p, 0, &jerr);
        if (!event) {
            snprintf(err, errlen, "%s:%d: not JSON: %s", path, lineno, jerr.text);
            rc = TS_E_INVALID;
            break;
        }
        const char *raw = json_string_value(json_object_get(event, "$raw"));
        if (raw) {
            const char *key = json_string_value(json_object_get(event, "$key"));
            rc = ts_sample_send(sp, tc->name, key, raw, strlen(raw), err, errlen);
        } else {
            char *bytes = NULL, why[512];
            size_t blen = 0;
            if (ts_encoder_from_json(enc, event, &bytes, &blen, why, sizeof(why)) != TS_OK) {
                snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
                rc = TS_E_INVALID;
            } else {
                const char *key = tc->key_field ? ts_encoder_field_str(enc, tc->key_field) : NULL;
                rc = ts_sample_send(sp, tc->name, key, bytes, blen, err, errlen);
            }
            free(bytes);
        }
        json_decref(event);
        if (rc == TS_OK)
            (*produced)++;
    }
    free(line);
    fclose(in);
    return rc;
}

ts_err ts_sample_produce_file(const ts_topology *topo, const char *brokers, const char *topic,
                              const char *path, size_t *produced, char *err, size_t errlen) {
    const ts_topic_conf *tc = ts_topology_topic(topo, topic);
    if (!tc || !tc->schema) {
        snprintf(err, errlen, "topic %s is not declared with a schema in %s", topic, topo->path);
        return TS_E_CONFIG;
    }
    ts_schemas *schemas = NULL;
    ts_err rc = ts_schemas_load(topo->schemas_dir, &schemas, err, errlen);
    if (rc != TS_OK)
        return rc;
    ts_encoder *enc = ts_encoder_create(schemas, tc->schema);
    ts_sample_producer sp;
    if (!enc) {
        snprintf(err, errlen, "schema subject %s unknown", tc->schema);
        rc = TS_E_CONFIG;
    } else if ((rc = ts_sample_producer_open(&sp, topo, brokers, err, errlen)) == TS_OK) {
        rc = ts_sample_file(&sp, enc, tc, path, produced, err, errlen);
        char cerr[256];
        ts_err crc = ts_sample_producer_close(&sp, cerr, sizeof(cerr));
        if (rc == TS_OK && crc != TS_OK) {
            snprintf(err, errlen, "%s", cerr);
            rc = crc;
        }
    }
    ts_encoder_destroy(enc);
    ts_schemas_destroy(schemas);
    return rc;
}

/* Queries the high watermark of every partition of `topic` into `ends`. */
static ts_err ts_sample_watermarks(rd_kafka_t *rk, const ts_topic_conf *tc, ts_sample_ends *ends) {
    ts_sample_end *grown =
        realloc(ends->items, (ends->n + (size_t)tc->partitions) * sizeof(*grown));
    if (!grown)
        return TS_E_NOMEM;
    ends->items = grown;
    for (int32_t p = 0; p < tc->partitions; p++) {
        int64_t low = 0, high = 0;
        rd_kafka_resp_err_t kerr =
            rd_kafka_query_watermark_offsets(rk, tc->name, p, &low, &high, 10000);
        if (kerr) {
            ts_log_error("sample", "watermarks of %s [%" PRId32 "]: %s", tc->name, p,
                         rd_kafka_err2str(kerr));
            return TS_E_IO;
        }
        ts_sample_end *end = &ends->items[ends->n++];
        end->topic = strdup(tc->name);
        end->partition = p;
        end->next_offset = high;
    }
    return TS_OK;
}

ts_err ts_sample_produce_all(const ts_topology *topo, const char *brokers, size_t *produced,
                             ts_sample_ends *ends, char *err, size_t errlen) {
    *produced = 0;
    ts_err rc = TS_OK;
    for (size_t i = 0; rc == TS_OK && i < topo->n_processors; i++) {
        const ts_processor_conf *pc = &topo->processors[i];
        if (pc->samples)
            rc = ts_sample_produce_file(topo, brokers, pc->input, pc->samples, produced, err,
                                        errlen);
    }
    if (rc != TS_OK)
        return rc;
    ts_sample_producer sp;
    rc = ts_sample_producer_open(&sp, topo, brokers, err, errlen);
    for (size_t i = 0; rc == TS_OK && i < topo->n_processors; i++) {
        const ts_topic_conf *tc = ts_topology_topic(topo, topo->processors[i].input);
        if (tc && (rc = ts_sample_watermarks(sp.rk, tc, ends)) != TS_OK)
            snprintf(err, errlen, "cannot read the end offsets of %s", tc->name);
    }
    if (sp.rk)
        rd_kafka_destroy(sp.rk);
    return rc;
}

ts_err ts_sample_print_dlq(const ts_topology *topo, const char *brokers, FILE *out) {
    char err[256];
    ts_sample_producer sp;
    ts_err rc = ts_sample_producer_open(&sp, topo, brokers, err, sizeof(err));
    if (rc != TS_OK)
        return rc;
    for (size_t i = 0; rc == TS_OK && i < topo->n_processors; i++) {
        char name[512];
        snprintf(name, sizeof(name), "%s.dlq", topo->processors[i].input);
        const ts_topic_conf *tc = ts_topology_topic(topo, name);
        ts_sample_ends ends = {0};
        if (tc && (rc = ts_sample_watermarks(sp.rk, tc, &ends)) == TS_OK) {
            int64_t total = 0;
            for (size_t e = 0; e < ends.n; e++)
                total += ends.items[e].next_offset;
            fprintf(out, "  %-28s %" PRId64 " records\n", name, total);
        }
        ts_sample_ends_free(&ends);
    }
    rd_kafka_destroy(sp.rk);
    return rc;
}

void ts_sample_ends_free(ts_sample_ends *ends) {
    for (size_t i = 0; i < ends->n; i++)
        free(ends->items[i].topic);
    free(ends->items);
    ends->items = NULL;
    ends->n = 0;
}
