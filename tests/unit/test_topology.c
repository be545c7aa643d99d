/* test_topology.c - the topology.yaml loader: the real file, a table of bad
 * files with the message each must produce, defaults, path resolution,
 * environment overrides and the conversion of `params` to JSON. */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_kconf.h"
#include "ts_testenv.h"
#include "ts_topology.h"

static char tmpdir[PATH_MAX];

static const char *const env_names[] = {"TASTESYNC_KAFKA_BROKERS", "TASTESYNC_REDIS_URL",
                                        "TASTESYNC_POSTGRES_CONNINFO", "TASTESYNC_STATE_DIR",
                                        "TASTESYNC_GROUP", "TASTESYNC_BATCH_MAX_EVENTS",
                                        "TASTESYNC_BATCH_MAX_MS"};

static void setup(void) {
    /* The developer's shell must not change what the tests see. */
    for (size_t i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++)
        unsetenv(env_names[i]);
    char tmpl[] = "/tmp/ts-topology-XXXXXX";
    cr_assert_not_null(mkdtemp(tmpl));
    /* realpath: /tmp may be a symlink, and the loader reports real paths. */
    cr_assert_not_null(realpath(tmpl, tmpdir));
}

static void teardown(void) {
    if (tmpdir[0])
        ts_testenv_rmtree(tmpdir);
}

TestSuite(topology, .init = setup, .fini = teardown);

/* Writes `text` to <tmpdir>/<name> and returns the path (static buffer). */
static const char *write_file(const char *name, const char *text) {
    static char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *fp = fopen(path, "w");
    cr_assert_not_null(fp);
    fputs(text, fp);
    fclose(fp);
    return path;
}

static ts_topology *load_ok(const char *text) {
    const char *path = write_file("topology.yaml", text);
    ts_topology *topo = NULL;
    char err[512];
    ts_err rc = ts_topology_load(path, &topo, err, sizeof(err));
    cr_assert_eq(rc, TS_OK, "load failed: %s", err);
    cr_assert_not_null(topo);
    return topo;
}

static char *joined(const char *a, const char *b) {
    static char buf[2 * PATH_MAX];
    snprintf(buf, sizeof(buf), "%s/%s", a, b);
    return buf;
}

Test(topology, real_file_loads) {
    char src[PATH_MAX];
    cr_assert_not_null(realpath(TS_SOURCE_DIR, src));
    ts_topology *topo = NULL;
    char err[512];
    ts_err rc = ts_topology_load(TS_SOURCE_DIR "/topology.yaml", &topo, err, sizeof(err));
    cr_assert_eq(rc, TS_OK, "%s", err);

    cr_expect_str_eq(topo->path, joined(src, "topology.yaml"));
    cr_expect_str_eq(topo->base_dir, src);
    cr_expect_str_eq(topo->group, "tastesync");
    cr_expect_str_eq(topo->kafka_brokers, "");
    cr_expect(json_is_object(topo->kafka_config) && json_object_size(topo->kafka_config) == 0);
    cr_expect_str_eq(topo->redis_url, "");
    cr_expect_str_eq(topo->pg_conninfo, "");
    cr_expect_str_eq(topo->state_dir, joined(src, ".run"));
    cr_expect_str_eq(topo->schemas_dir, joined(src, "schemas/avro"));
    cr_expect_eq(topo->batch_max_events, 5000);
    cr_expect_eq(topo->batch_max_ms, 20);
    cr_expect_eq(topo->batch_max_buffered_bytes, 16 << 20);
    cr_expect_eq(topo->http_port, 0);

    /* Every processor's input has its DLQ, declared or added. */
    for (size_t i = 0; i < topo->n_processors; i++) {
        char name[512];
        snprintf(name, sizeof(name), "%s.dlq", topo->processors[i].input);
        cr_expect_not_null(ts_topology_topic(topo, name), "%s", name);
    }
    const ts_topic_conf *in = ts_topology_topic(topo, "storybook.events");
    cr_assert_not_null(in);
    cr_expect_gt(in->partitions, 0);
    cr_expect_str_eq(in->key_field, "user_id");
    cr_expect_str_eq(in->schema, "storybook.events");
    cr_expect_gt(in->line, 0);
    const ts_topic_conf *dlq = ts_topology_topic(topo, "storybook.events.dlq");
    cr_assert_not_null(dlq);
    cr_expect_eq(dlq->partitions, in->partitions, "a DLQ is partitioned like its input");
    cr_expect_null(dlq->schema);
    cr_expect_null(dlq->key_field);

    const ts_processor_conf *pc = NULL;
    for (size_t i = 0; i < topo->n_processors && !pc; i++)
        if (strcmp(topo->processors[i].name, "storybook") == 0)
            pc = &topo->processors[i];
    cr_assert_not_null(pc, "the storybook processor");
    cr_expect_str_eq(pc->input, "storybook.events");
    cr_expect_eq(pc->n_outputs, 0);
    cr_expect_str_eq(pc->migrations, joined(src, "processors/storybook/sql"));
    cr_expect_str_eq(pc->samples, joined(src, "processors/storybook/samples.jsonl"));
    cr_expect(json_is_object(pc->params) && json_object_size(pc->params) == 0);
    cr_expect_gt(pc->line, in->line);
    ts_topology_destroy(topo);
}

Test(topology, defaults) {
    ts_topology *topo = load_ok("topics:\n"
                                "  - {name: in, partitions: 2, schema: s}\n"
                                "processors:\n"
                                "  - {name: p, input: in}\n");
    cr_expect_str_eq(topo->group, "tastesync");
    cr_expect_str_eq(topo->kafka_brokers, "");
    cr_expect_str_eq(topo->redis_url, "");
    cr_expect_str_eq(topo->pg_conninfo, "");
    cr_expect(json_is_object(topo->kafka_config) && json_object_size(topo->kafka_config) == 0);
    cr_expect_str_eq(topo->state_dir, joined(tmpdir, ".run"));
    cr_expect_str_eq(topo->schemas_dir, joined(tmpdir, "schemas/avro"));
    cr_expect_eq(topo->batch_max_events, 5000);
    cr_expect_eq(topo->batch_max_ms, 20);
    cr_expect_eq(topo->batch_max_buffered_bytes, 16 << 20);
    cr_expect_eq(topo->http_port, 0);
    cr_expect_null(topo->topics[0].key_field);
    const ts_processor_conf *pc = &topo->processors[0];
    cr_expect_null(pc->outputs);
    cr_expect_eq(pc->n_outputs, 0);
    cr_expect_null(pc->migrations);
    cr_expect_null(pc->samples);
    cr_expect(json_is_object(pc->params) && json_object_size(pc->params) == 0);
    cr_expect_not_null(ts_topology_topic(topo, "in.dlq"));
    cr_expect_null(ts_topology_topic(topo, "nope"));
    ts_topology_destroy(topo);

    /* An empty mapping is a valid (if idle) topology: a dev broker reads it. */
    topo = load_ok("{}\n");
    cr_expect_eq(topo->n_topics, 0);
    cr_expect_eq(topo->n_processors, 0);
    ts_topology_destroy(topo);
    ts_topology_destroy(NULL);
}

Test(topology, values_and_paths) {
    ts_topology *topo = load_ok("group: shop-1\n"
                                "kafka:\n"
                                "  brokers: k1:9092,k2:9092\n"
                                "  config: {acks: all, enable.idempotence: true, linger.ms: 5, sasl.password: '0x1',\n"
                                "           message.max.bytes: 2097152}\n"
                                "redis: {url: 'redis://r:6379/2'}\n"
                                "postgres: {conninfo: 'host=pg dbname=ts'}\n"
                                "state: {dir: ./data/state/}\n"
                                "schemas: /opt/schemas\n"
                                "batch: {max_events: 1000000, max_ms: 60000, max_buffered_bytes: 65536}\n"
                                "http_port: 65535\n"
                                "topics:\n"
                                "  - {name: a, partitions: 1024, schema: a}\n"
                                "  - {name: b, partitions: 3, schema: b, key: id}\n"
                                "  - {name: a.dlq, partitions: 1024}\n"
                                "processors:\n"
                                "  - name: p_1\n"
                                "    input: a\n"
                                "    outputs: [b]\n"
                                "    migrations: ../sql\n"
                                "    samples: samples.jsonl\n");
    cr_expect_str_eq(topo->group, "shop-1");
    cr_expect_str_eq(topo->kafka_brokers, "k1:9092,k2:9092");
    cr_expect_eq(json_object_size(topo->kafka_config), 5);
    cr_expect_eq(ts_kconf_max_message_bytes(topo->kafka_config), 2097152, "the lowest allowed");
    cr_expect_str_eq(json_string_value(json_object_get(topo->kafka_config, "acks")), "all");
    cr_expect_str_eq(json_string_value(json_object_get(topo->kafka_config, "enable.idempotence")), "true");
    cr_expect_str_eq(json_string_value(json_object_get(topo->kafka_config, "linger.ms")), "5");
    cr_expect_str_eq(json_string_value(json_object_get(topo->kafka_config, "sasl.password")), "0x1");
    cr_expect_str_eq(topo->redis_url, "redis://r:6379/2");
    cr_expect_str_eq(topo->pg_conninfo, "host=pg dbname=ts");
    cr_expect_str_eq(topo->state_dir, joined(tmpdir, "data/state"));
    cr_expect_str_eq(topo->schemas_dir, "/opt/schemas");
    cr_expect_eq(topo->batch_max_events, 1000000);
    cr_expect_eq(topo->batch_max_ms, 60000);
    cr_expect_eq(topo->batch_max_buffered_bytes, 65536);
    cr_expect_eq(topo->http_port, 65535);
    /* The declared DLQ is kept, not doubled. */
    cr_expect_eq(topo->n_topics, 3);
    cr_expect_str_eq(ts_topology_topic(topo, "b")->key_field, "id");
    const ts_processor_conf *pc = &topo->processors[0];
    cr_assert_eq(pc->n_outputs, 1);
    cr_expect_str_eq(pc->outputs[0], "b");
    cr_expect_str_eq(pc->migrations, joined(tmpdir, "../sql"));
    cr_expect_str_eq(pc->samples, joined(tmpdir, "samples.jsonl"));
    ts_topology_destroy(topo);
}

Test(topology, params_become_json) {
    ts_topology *topo = load_ok("topics: [{name: in, partitions: 1, schema: s}]\n"
                                "processors:\n"
                                "  - name: p\n"
                                "    input: in\n"
                                "    params:\n"
                                "      int: 42\n"
                                "      neg: -7\n"
                                "      hex: 0x1F\n"
                                "      big: 9223372036854775807\n"
                                "      real: 0.6\n"
                                "      exp: 1e3\n"
                                "      dot: .5\n"
                                "      yes: true\n"
                                "      no: False\n"
                                "      nothing: null\n"
                                "      tilde: ~\n"
                                "      empty:\n"
                                "      quoted_int: '5'\n"
                                "      quoted_bool: \"true\"\n"
                                "      word: yes\n"
                                "      version: 1.2.3\n"
                                "      list: [vegan, 3, 2.5, false, [x]]\n"
                                "      nested: {a: {b: 1}, c: []}\n");
    json_t *p = topo->processors[0].params;
    cr_assert(json_is_object(p));
    cr_expect(json_is_integer(json_object_get(p, "int")) && json_integer_value(json_object_get(p, "int")) == 42);
    cr_expect_eq(json_integer_value(json_object_get(p, "neg")), -7);
    cr_expect_eq(json_integer_value(json_object_get(p, "hex")), 31);
    cr_expect_eq(json_integer_value(json_object_get(p, "big")), 9223372036854775807LL);
    cr_expect(json_is_real(json_object_get(p, "real")));
    cr_expect_float_eq(json_real_value(json_object_get(p, "real")), 0.6, 1e-12);
    cr_expect_float_eq(json_real_value(json_object_get(p, "exp")), 1000.0, 1e-9);
    cr_expect_float_eq(json_real_value(json_object_get(p, "dot")), 0.5, 1e-12);
    cr_expect(json_is_true(json_object_get(p, "yes")));
    cr_expect(json_is_false(json_object_get(p, "no")));
    cr_expect(json_is_null(json_object_get(p, "nothing")));
    cr_expect(json_is_null(json_object_get(p, "tilde")));
    cr_expect(json_is_null(json_object_get(p, "empty")));
    cr_expect_str_eq(json_string_value(json_object_get(p, "quoted_int")), "5");
    cr_expect_str_eq(json_string_value(json_object_get(p, "quoted_bool")), "true");
    cr_expect_str_eq(json_string_value(json_object_get(p, "word")), "yes", "YAML 1.2: only true/false are booleans");
    cr_expect_str_eq(json_string_value(json_object_get(p, "version")), "1.2.3");
    json_t *list = json_object_get(p, "list");
    cr_assert(json_is_array(list) && json_array_size(list) == 5);
    cr_expect_str_eq(json_string_value(json_array_get(list, 0)), "vegan");
    cr_expect_eq(json_integer_value(json_array_get(list, 1)), 3);
    cr_expect(json_is_real(json_array_get(list, 2)));
    cr_expect(json_is_false(json_array_get(list, 3)));
    cr_expect(json_is_array(json_array_get(list, 4)));
    json_t *nested = json_object_get(p, "nested");
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(nested, "a"), "b")), 1);
    cr_expect(json_is_array(json_object_get(nested, "c")));
    cr_expect_eq(json_object_size(p), 18);
    ts_topology_destroy(topo);
}

Test(topology, environment_overrides) {
    cr_assert_eq(chdir(tmpdir), 0);
    setenv("TASTESYNC_KAFKA_BROKERS", "kafka:9092", 1);
    setenv("TASTESYNC_REDIS_URL", "unix:///run/redis.sock?db=3", 1);
    setenv("TASTESYNC_POSTGRES_CONNINFO", "postgresql://u@db/ts", 1);
    setenv("TASTESYNC_STATE_DIR", "var/state", 1); /* relative to the current directory */
    setenv("TASTESYNC_GROUP", "other", 1);
    ts_topology *topo = load_ok("group: g\n"
                                "kafka: {brokers: 'file:9092'}\n"
                                "redis: {url: 'redis://file'}\n"
                                "postgres: {conninfo: 'dbname=file'}\n"
                                "state: {dir: /file/state}\n");
    cr_expect_str_eq(topo->kafka_brokers, "kafka:9092");
    cr_expect_str_eq(topo->redis_url, "unix:///run/redis.sock?db=3");
    cr_expect_str_eq(topo->pg_conninfo, "postgresql://u@db/ts");
    cr_expect_str_eq(topo->state_dir, joined(tmpdir, "var/state"));
    cr_expect_str_eq(topo->group, "other");
    ts_topology_destroy(topo);

    setenv("TASTESYNC_BATCH_MAX_EVENTS", "300", 1);
    setenv("TASTESYNC_BATCH_MAX_MS", "2", 1);
    setenv("TASTESYNC_BATCH_MAX_BUFFERED_BYTES", "1048576", 1);
    topo = load_ok("group: g\nbatch: {max_events: 10, max_ms: 50}\n");
    cr_expect_eq(topo->batch_max_events, 300);
    cr_expect_eq(topo->batch_max_ms, 2);
    cr_expect_eq(topo->batch_max_buffered_bytes, 1048576);
    ts_topology_destroy(topo);
    unsetenv("TASTESYNC_BATCH_MAX_BUFFERED_BYTES");
    setenv("TASTESYNC_BATCH_MAX_MS", "0", 1); /* checked like the file: 1..60000 */
    char err0[512];
    ts_topology *bad0 = (ts_topology *)1;
    cr_expect_eq(ts_topology_load(write_file("topology.yaml", "group: g\n"), &bad0, err0,
                                  sizeof(err0)),
                 TS_E_CONFIG);
    cr_expect(strstr(err0, "TASTESYNC_BATCH_MAX_MS"), "got: %s", err0);
    unsetenv("TASTESYNC_BATCH_MAX_EVENTS");
    unsetenv("TASTESYNC_BATCH_MAX_MS");

    /* An empty address means "embedded", so it overrides; an empty group or
     * state dir means "not set". */
    setenv("TASTESYNC_KAFKA_BROKERS", "", 1);
    setenv("TASTESYNC_GROUP", "", 1);
    setenv("TASTESYNC_STATE_DIR", "", 1);
    topo = load_ok("group: g\nkafka: {brokers: 'file:9092'}\nstate: {dir: /file/state}\n");
    cr_expect_str_eq(topo->kafka_brokers, "");
    cr_expect_str_eq(topo->group, "g");
    cr_expect_str_eq(topo->state_dir, "/file/state");
    ts_topology_destroy(topo);

    /* Overrides are validated like the file. */
    setenv("TASTESYNC_GROUP", "bad group", 1);
    const char *path = write_file("topology.yaml", "group: g\n");
    char err[512];
    ts_topology *bad = (ts_topology *)1;
    cr_expect_eq(ts_topology_load(path, &bad, err, sizeof(err)), TS_E_CONFIG);
    cr_expect_null(bad);
    cr_expect(strstr(err, "TASTESYNC_GROUP") && strstr(err, "bad group"), "got: %s", err);
}

Test(topology, missing_file) {
    ts_topology *topo = NULL;
    char err[512];
    cr_expect_eq(ts_topology_load(joined(tmpdir, "absent.yaml"), &topo, err, sizeof(err)), TS_E_CONFIG);
    cr_expect_null(topo);
    cr_expect(strstr(err, "absent.yaml: cannot open"), "got: %s", err);
    cr_expect_eq(ts_topology_load(tmpdir, &topo, err, sizeof(err)), TS_E_CONFIG);
    cr_expect(strstr(err, "is not a regular file"), "got: %s", err);
    cr_expect_eq(ts_topology_load("", &topo, err, sizeof(err)), TS_E_CONFIG);
    /* A too-small buffer truncates the message but stays a C string. */
    char tiny[8];
    cr_expect_eq(ts_topology_load(joined(tmpdir, "absent.yaml"), &topo, tiny, sizeof(tiny)), TS_E_CONFIG);
    cr_expect_eq(strlen(tiny), sizeof(tiny) - 1);
    cr_expect_eq(ts_topology_load(joined(tmpdir, "absent.yaml"), &topo, NULL, 0), TS_E_CONFIG);
}

/* ---- bad files ----------------------------------------------------------- */

#define GOOD_TOPIC "topics:\n  - {name: in, partitions: 2, schema: s}\n" /* lines 1-2 */

static const struct bad_case {
    const char *name;
    const char *yaml;
    const char *expect; /* substring of the message, after "<path>:" */
} bad_cases[] = {
    {"unknown top-level key", "group: g\ngrup: h\n", "2: unknown key 'grup' in the top level"},
    {"unknown topic key", "topics:\n  - name: in\n    partitons: 4\n", "3: unknown key 'partitons' in topic"},
    {"unknown section key", "kafka:\n  brokers: x\n  broker: y\n", "3: unknown key 'broker' in kafka"},
    {"unknown processor key", GOOD_TOPIC "processors:\n  - {name: p, input: in, output: [in]}\n",
     "4: unknown key 'output' in processor"},
    {"dotted key is not a section path", "kafka.brokers: x\n", "1: unknown key 'kafka.brokers'"},
    {"duplicate key", "group: a\nhttp_port: 1\ngroup: b\n", "3: duplicate key 'group' in the top level"},
    {"duplicate section", "batch: {max_ms: 5}\nbatch: {max_events: 5}\n", "2: duplicate key 'batch'"},
    {"duplicate key inside a section", "batch:\n  max_ms: 5\n  max_ms: 6\n", "3: duplicate key 'max_ms' in batch"},
    {"partitions zero", "topics:\n  - {name: in, partitions: 0}\n", "2: 'partitions' must be in 1..1024, got 0"},
    {"partitions too many", "topics:\n- name: in\n  partitions: 1025\n", "3: 'partitions' must be in 1..1024, got 1025"},
    {"partitions quoted", "topics:\n  - {name: in, partitions: '4'}\n",
     "2: 'partitions' must be an integer, got a quoted string"},
    {"partitions a word", "topics:\n  - {name: in, partitions: four}\n", "2: 'partitions' must be an integer, got 'four'"},
    {"partitions a float", "topics:\n  - {name: in, partitions: 2.5}\n", "2: 'partitions' must be an integer"},
    {"partitions a sequence", "topics:\n  - {name: in, partitions: [1]}\n",
     "2: 'partitions' must be an integer, got a sequence"},
    {"partitions overflow", "topics:\n  - {name: in, partitions: 99999999999999999999}\n",
     "2: 'partitions' must be in 1..1024"},
    {"max_events zero", "batch:\n  max_events: 0\n", "2: 'batch.max_events' must be in 1..1000000, got 0"},
    {"max_events too big", "batch:\n  max_events: 1000001\n", "2: 'batch.max_events' must be in 1..1000000"},
    {"max_ms zero", "batch: {max_ms: 0}\n", "1: 'batch.max_ms' must be in 1..60000, got 0"},
    {"max_buffered_bytes too small", "batch: {max_buffered_bytes: 4096}\n",
     "1: 'batch.max_buffered_bytes' must be in 65536..1073741824, got 4096"},
    {"max_ms too big", "\nbatch: {max_ms: 60001}\n", "2: 'batch.max_ms' must be in 1..60000, got 60001"},
    {"http_port negative", "http_port: -1\n", "1: 'http_port' must be in 0..65535, got -1"},
    {"http_port too big", "http_port: 65536\n", "1: 'http_port' must be in 0..65535, got 65536"},
    {"group a mapping", "group: {a: 1}\n", "1: group: expected a scalar, got a mapping"},
    {"group empty", "group: ''\n", "1: 'group' must not be empty"},
    {"group bad characters", "group: 'a b'\n", "1: 'group' value 'a b' may hold only"},
    {"section a scalar", "kafka: localhost\n", "1: 'kafka' must be a mapping, got a scalar"},
    {"config a sequence", "kafka:\n  config: [a]\n", "2: 'kafka.config' must be a mapping, got a sequence"},
    {"config value a mapping", "kafka:\n  config:\n    acks: {x: 1}\n", "3: acks: expected a scalar, got a mapping"},
    {"config value null", "kafka:\n  config:\n    acks:\n", "3: 'acks' in kafka.config has no value"},
    {"message limit too low", "kafka:\n  config:\n    acks: all\n    message.max.bytes: 1000000\n",
     "4: kafka.config: 'message.max.bytes' must be a number from 2097152"},
    {"message limit too high", "kafka:\n  config:\n    message.max.bytes: 16777217\n",
     "3: kafka.config: 'message.max.bytes' must be a number from 2097152 (an input record of "
     "Kafka's default limit, 1 MB, must fit a DLQ record beside a batch's marker) to 16777216"},
    {"message limit not a number", "kafka:\n  config:\n    message.max.bytes: 2MB\n",
     "3: kafka.config: 'message.max.bytes' must be a number from 2097152"},
    {"topics a mapping", "topics: {name: in}\n", "1: 'topics' must be a sequence, got a mapping"},
    {"topic a scalar", "topics:\n  - in\n", "2: each topic must be a mapping, got a scalar"},
    {"topic without name", "topics:\n  - {partitions: 1}\n", "2: topic is missing required key 'name'"},
    {"topic without partitions", "topics:\n\n  - name: in\n", "3: topic is missing required key 'partitions'"},
    {"topic name empty", "topics:\n  - {name: '', partitions: 1}\n", "2: 'name' must not be empty"},
    {"topic name null", "topics:\n  - {name: ~, partitions: 1}\n", "2: 'name' must not be empty"},
    {"topic name bad", "topics:\n  - {name: 'in/x', partitions: 1}\n", "2: 'name' value 'in/x' may hold only"},
    {"topic name with NUL", "topics:\n  - {name: \"a\\0b\", partitions: 1}\n", "2: name: contains a NUL character"},
    {"duplicate topic", "topics:\n  - {name: in, partitions: 1}\n  - {name: x, partitions: 1}\n"
                        "  - {name: in, partitions: 2}\n",
     "4: duplicate topic 'in' (first on line 2)"},
    {"processor without input", GOOD_TOPIC "processors:\n  - name: p\n", "4: processor is missing required key 'input'"},
    {"processor without name", GOOD_TOPIC "processors:\n  - input: in\n", "4: processor is missing required key 'name'"},
    {"processor name bad", GOOD_TOPIC "processors:\n  - {name: my-proc, input: in}\n",
     "4: 'name' value 'my-proc' may hold only letters, digits and '_'"},
    {"duplicate processor", GOOD_TOPIC "processors:\n  - {name: p, input: in}\n  - {name: p, input: in}\n",
     "5: duplicate processor 'p' (first on line 4)"},
    {"input undeclared", GOOD_TOPIC "processors:\n  - name: p\n    input: nope\n",
     "5: topic 'nope' is not declared under topics"},
    {"output undeclared", GOOD_TOPIC "processors:\n  - name: p\n    input: in\n    outputs:\n      - in\n      - out\n",
     "8: topic 'out' is not declared under topics"},
    {"outputs a scalar", GOOD_TOPIC "processors:\n  - {name: p, input: in, outputs: in}\n",
     "4: 'outputs' must be a sequence, got a scalar"},
    {"output twice", GOOD_TOPIC "processors:\n  - {name: p, input: in, outputs: [in, in]}\n",
     "4: 'outputs' names 'in' twice"},
    {"output empty", GOOD_TOPIC "processors:\n  - {name: p, input: in, outputs: ['']}\n",
     "4: 'outputs' holds an empty entry"},
    {"input without schema", "topics:\n  - {name: raw, partitions: 2}\nprocessors:\n  - {name: p, input: raw}\n",
     "4: topic 'raw' (line 2) has no schema"},
    {"dlq with other partitions", GOOD_TOPIC "  - {name: in.dlq, partitions: 3}\nprocessors:\n  - {name: p, input: in}\n",
     "3: topic 'in.dlq' must have the 2 partitions of 'in', has 3"},
    {"params a sequence", GOOD_TOPIC "processors:\n  - {name: p, input: in, params: [1]}\n",
     "4: 'params' must be a mapping, got a sequence"},
    {"params duplicate key", GOOD_TOPIC "processors:\n  - name: p\n    input: in\n    params:\n      a: 1\n      a: 2\n",
     "8: duplicate key 'a' in params"},
    {"params integer overflow", GOOD_TOPIC "processors:\n  - name: p\n    input: in\n    params: {n: 99999999999999999999}\n",
     "6: integer '99999999999999999999' is out of range"},
    {"params float overflow", GOOD_TOPIC "processors:\n  - name: p\n    input: in\n    params: {n: 1e999}\n",
     "6: number '1e999' is out of range"},
    {"params key a mapping", GOOD_TOPIC "processors:\n  - name: p\n    input: in\n    params: {{a: 1}: 2}\n",
     "6: params key: expected a scalar, got a mapping"},
    {"params cycle", GOOD_TOPIC "processors:\n  - name: p\n    input: in\n    params: &loop {self: *loop}\n",
     "6: params nested deeper than 32 levels"},
    {"params alias bomb", GOOD_TOPIC "processors:\n  - name: p\n    input: in\n    params:\n"
                          "      a: &a [1,1,1,1,1,1,1,1,1,1]\n      b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                          "      c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n      d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                          "      e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
     "7: params hold more than 100000 values"},
    {"key not a scalar", "[a]: 1\n", "1: a key in the top level must be a scalar, got a sequence"},
    {"syntax error", "group: g\nkafka:\n  brokers: [x\n", "4: "},
    {"bad indentation", "group: g\n  http_port: 1\n", "2: mapping values are not allowed"},
    {"empty file", "# nothing but a comment\n", "1: the file is empty"},
    {"top level a sequence", "- a\n- b\n", "1: the top level must be a mapping, got a sequence"},
    {"two documents", "group: a\n---\ngroup: b\n", "2: the file holds more than one YAML document"},
};

Test(topology, bad_files) {
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *bc = &bad_cases[i];
        const char *path = write_file("bad.yaml", bc->yaml);
        char expect[1024];
        int n = snprintf(expect, sizeof(expect), "%s:%s", path, bc->expect);
        cr_assert(n > 0 && (size_t)n < sizeof(expect));
        ts_topology *topo = (ts_topology *)1;
        char err[1024];
        ts_err rc = ts_topology_load(path, &topo, err, sizeof(err));
        cr_expect_eq(rc, TS_E_CONFIG, "[%s] expected TS_E_CONFIG, got %d", bc->name, (int)rc);
        cr_expect_null(topo, "[%s] *out must be NULL on failure", bc->name);
        if (rc == TS_OK)
            ts_topology_destroy(topo);
        cr_expect(strstr(err, expect) != NULL, "[%s]\n  expected: %s\n  got:      %s", bc->name, expect, err);
    }
}

/* runtime/TOPOLOGY.md is written from the key tables; every key it documents
 * must be one the loader knows (checked by feeding each key a null value: any
 * complaint is fine except "unknown key"). */
Test(topology, reference_doc_names_real_keys) {
    FILE *fp = fopen(TS_SOURCE_DIR "/runtime/TOPOLOGY.md", "r");
    cr_assert_not_null(fp);
    char line[1024];
    const char *section = NULL;
    int checked = 0;
    while (fgets(line, sizeof(line), fp)) {
        if (!strncmp(line, "## ", 3))
            section = strstr(line, "`topics`") ? "topics" : strstr(line, "`processors`") ? "processors"
                      : strstr(line, "Top level")                                 ? "top"
                                                                                  : NULL;
        if (!section || strncmp(line, "| `", 3))
            continue;
        char key[128];
        cr_assert_eq(sscanf(line, "| `%127[^`]`", key), 1, "row: %s", line);
        char yaml[512];
        char *dot = strchr(key, '.');
        if (!strcmp(section, "top") && dot)
            snprintf(yaml, sizeof(yaml), "%.*s:\n  %s: ~\n", (int)(dot - key), key, dot + 1);
        else if (!strcmp(section, "top"))
            snprintf(yaml, sizeof(yaml), "%s: ~\n", key);
        else
            snprintf(yaml, sizeof(yaml), "%s:\n  - {%s: ~}\n", section, key);
        const char *path = write_file("doc.yaml", yaml);
        ts_topology *topo = NULL;
        char err[512] = "";
        ts_topology_load(path, &topo, err, sizeof(err));
        ts_topology_destroy(topo);
        cr_expect_null(strstr(err, "unknown key"), "documented key '%s' (%s) is unknown: %s", key, section, err);
        checked++;
    }
    fclose(fp);
    cr_expect_eq(checked, 14 + 4 + 6, "rows found in TOPOLOGY.md");

    /* The check above means something: a bad key is refused that way. */
    ts_topology *topo = NULL;
    char err[512];
    ts_topology_load(write_file("doc.yaml", "topics:\n  - {colour: ~}\n"), &topo, err, sizeof(err));
    cr_expect(strstr(err, "unknown key 'colour' in topic"), "got: %s", err);
}
