/* ts_kconf.c - librdkafka conf building shared by every Kafka client.
 *
 * A conf is `bootstrap.servers` followed by the user's pass-through properties
 * in the order of the JSON object. librdkafka validates each property as it is
 * set; its message is prefixed with the property's name so a bad line in
 * topology.yaml is easy to find. Values that are JSON numbers or booleans are
 * accepted too, because YAML authors rarely quote `linger.ms: 5`.
 */
#include "ts_kconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_log.h"

ts_err ts_kconf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *err,
                    size_t errlen) {
    char why[256];
    if (rd_kafka_conf_set(conf, name, value, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka config: %s: %s", name, why);
        return TS_E_CONFIG;
    }
    return TS_OK;
}

ts_err ts_kconf_default(rd_kafka_conf_t *conf, const json_t *kafka_config, const char *name,
                        const char *value, char *err, size_t errlen) {
    if (kafka_config && json_object_get(kafka_config, name))
        return TS_OK;
    return ts_kconf_set(conf, name, value, err, errlen);
}

/* librdkafka logs from its own threads; ts_log is thread-safe, so its lines
 * join the runtime's own, named after the client instance. Syslog levels:
 * 0-3 are errors, 4 warnings, 5-6 notices and info, 7 debug. */
static void ts_kconf_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    ts_log_level lvl = level <= 3   ? TS_LOG_ERROR
                       : level == 4 ? TS_LOG_WARN
                       : level <= 6 ? TS_LOG_INFO
                                    : TS_LOG_DEBUG;
    char comp[128];
    snprintf(comp, sizeof(comp), "kafka %s", rd_kafka_name(rk));
    ts_log(lvl, comp, "%s: %s", fac, buf);
}

/* Writes the text of a scalar JSON value into `buf`; NULL if it is not a scalar. */
static const char *ts_kconf_scalar(const json_t *value, char *buf, size_t buflen) {
    switch (json_typeof(value)) {
    case JSON_STRING:
        return json_string_value(value);
    case JSON_INTEGER:
        snprintf(buf, buflen, "%" JSON_INTEGER_FORMAT, json_integer_value(value));
        return buf;
    case JSON_REAL:
        snprintf(buf, buflen, "%.17g", json_real_value(value));
        return buf;
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    default:
        return NULL;
    }
}

rd_kafka_conf_t *ts_kconf_create(const char *brokers, const json_t *kafka_config, char *err,
                                 size_t errlen) {
    if (kafka_config && !json_is_object(kafka_config)) {
        snprintf(err, errlen, "kafka config: must be a mapping of librdkafka properties");
        return NULL;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, ts_kconf_log);
    if (brokers && *brokers && ts_kconf_set(conf, "bootstrap.servers", brokers, err, errlen))
        goto fail;
    if (kafka_config) {
        const char *name;
        json_t *value;
        /* jansson's iteration macros take a non-const object but do not modify it. */
        json_object_foreach((json_t *)kafka_config, name, value) {
            char buf[64];
            const char *text = ts_kconf_scalar(value, buf, sizeof(buf));
            if (!text) {
                snprintf(err, errlen, "kafka config: %s: value must be a string, number or boolean",
                         name);
                goto fail;
            }
            if (ts_kconf_set(conf, name, text, err, errlen))
                goto fail;
        }
    }
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

ts_err ts_kconf_producer(rd_kafka_conf_t *conf, const json_t *kafka_config, char *err,
                         size_t errlen) {
    /* Every producer of the project partitions keys alike, and like Java
     * clients do: a key must land in one partition whoever writes it. */
    return ts_kconf_default(conf, kafka_config, "partitioner", "murmur2_random", err, errlen);
}

ts_err ts_kconf_check(const char *name, const char *value, char *why, size_t whylen) {
    if (strcmp(name, "message.max.bytes") != 0)
        return TS_OK;
    char *end;
    long long n = strtoll(value, &end, 10);
    long long max = strtoll(TS_KCONF_MAX_MESSAGE_BYTES, NULL, 10);
    if (end != value && *end == '\0' && n >= TS_KCONF_MIN_MESSAGE_BYTES && n <= max)
        return TS_OK;
    snprintf(
        why, whylen,
        "'message.max.bytes' must be a number from %d (an input record of Kafka's default "
        "limit, 1 MB, must fit a DLQ record beside a batch's marker) to %lld (what the changelog "
        "topics accept), got '%s'",
        TS_KCONF_MIN_MESSAGE_BYTES, max, value);
    return TS_E_CONFIG;
}

size_t ts_kconf_max_message_bytes(const json_t *kafka_config) {
    const json_t *v = kafka_config ? json_object_get(kafka_config, "message.max.bytes") : NULL;
    if (json_is_integer(v))
        return json_integer_value(v) > 0 ? (size_t)json_integer_value(v) : 0;
    const char *text = json_is_string(v) ? json_string_value(v) : TS_KCONF_MAX_MESSAGE_BYTES;
    char *end;
    long long n = strtoll(text, &end, 10);
    return n > 0 && *end == '\0' ? (size_t)n : 0;
}
