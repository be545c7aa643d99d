/* bench_main.c - `tsbench`: the benchmark program run by benchmarks/run.sh.
 *
 * Starts private servers (redis-server and PostgreSQL under a temp folder, the
 * librdkafka mock cluster in this process), measures the component ceilings,
 * generates and pre-encodes the seeded mixed stream of tests/support/ts_model.h,
 * then runs `tastesync run benchmarks/topology.yaml` against those servers for
 * the pipeline figures. Prints a table and writes the results as JSON.
 *
 *   tsbench [--short] [--events N] [--seed S] [--perf perf.data] [--only PHASE] --out FILE
 */
#include <errno.h>
#include <ftw.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "ts_kconf.h"
#include "ts_model.h"
#include "ts_testenv.h"

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int64_t bench_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

pid_t bench_spawn_runtime(const bench_ctx *b, const char *topo, const char *group,
                          const char *state, const char *log, const char *instance) {
    ts_testenv_runtime rt = {
        .topology = topo,
        .brokers = ts_cluster_bootstraps(b->cluster),
        .redis_url = b->redis_url,
        .pg_conninfo = b->pg,
        .state = state,
        .group = group,
        .log = log,
        .instance = instance,
    };
    return ts_testenv_spawn_runtime(&rt);
}

void bench_row(bench_ctx *b, const char *section, const char *name, double value,
               const char *unit, const char *note) {
    json_array_append_new(b->table, json_pack("[s, s, f, s, s]", section, name, value, unit,
                                              note ? note : ""));
    fprintf(stderr, "bench: %-10s %-34s %14.3f %-10s %s\n", section, name, value, unit,
            note ? note : "");
}

static int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double bench_pct(const double *sorted, size_t n, double p) {
    if (n == 0)
        return NAN;
    size_t i = (size_t)ceil(p / 100.0 * (double)n);
    return sorted[i == 0 ? 0 : i - 1];
}

json_t *bench_percentiles(double *lat, size_t n) {
    qsort(lat, n, sizeof(*lat), bench_cmp_double);
    /* Milliseconds, rounded to the microsecond, to keep the JSON small. */
#define MS(x) (round((x)) / 1000.0)
    return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f}", "n", (json_int_t)n, "p50_ms",
                     MS(bench_pct(lat, n, 50)), "p95_ms", MS(bench_pct(lat, n, 95)), "p99_ms",
                     MS(bench_pct(lat, n, 99)), "p999_ms", MS(bench_pct(lat, n, 99.9)),
                     "max_ms", MS(n ? lat[n - 1] : NAN));
#undef MS
}

json_t *bench_rate(size_t n, double seconds) {
    return json_pack("{s:I, s:f, s:f}", "events", (json_int_t)n, "seconds",
                     round(seconds * 1000) / 1000, "per_s",
                     round(seconds > 0 ? (double)n / seconds : 0));
}

rd_kafka_t *bench_producer(bench_ctx *b, int linger_ms) {
    char err[512], linger[16];
    rd_kafka_conf_t *conf = ts_kconf_create(ts_cluster_bootstraps(b->cluster), NULL, err,
                                            sizeof(err));
    if (!conf) {
        fprintf(stderr, "bench: %s\n", err);
        return NULL;
    }
    snprintf(linger, sizeof(linger), "%d", linger_ms);
    rd_kafka_conf_set(conf, "linger.ms", linger, NULL, 0);
    rd_kafka_conf_set(conf, "compression.type", "lz4", NULL, 0);
    rd_kafka_conf_set(conf, "queue.buffering.max.messages", "1000000", NULL, 0);
    rd_kafka_conf_set(conf, "batch.num.messages", "10000", NULL, 0);
    ts_kconf_producer(conf, NULL, err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "bench: producer: %s\n", err);
    }
    return rk;
}

/* Generates the seeded stream and encodes it, so no timing includes JSON or
 * Avro encoding. The JSON text of the first `keep_json` events is kept as the
 * value shape of the component benchmarks. */
static int bench_encode_stream(bench_ctx *b, size_t keep_json) {
    double t0 = bench_now();
    ts_model_stream *s = ts_model_stream_generate(b->seed, b->n_events, TS_MODEL_ALL);
    b->msgs = calloc(s->n, sizeof(*b->msgs));
    enum { MAX_TOPICS = 8 };
    const ts_topic_conf *tcs[MAX_TOPICS];
    ts_encoder *encs[MAX_TOPICS];
    size_t n_enc = 0;
    int rc = 0;
    char err[512];
    for (size_t i = 0; i < s->n && rc == 0; i++) {
        ts_model_event *ev = &s->ev[i];
        size_t e = 0;
        while (e < n_enc && strcmp(tcs[e]->name, ev->topic) != 0)
            e++;
        if (e == n_enc) {
            const ts_topic_conf *tc = ts_topology_topic(b->topo, ev->topic);
            if (!tc || !tc->schema || n_enc == MAX_TOPICS) {
                fprintf(stderr, "bench: no schema for topic %s\n", ev->topic);
                rc = -1;
                break;
            }
            tcs[n_enc] = tc;
            encs[n_enc++] = ts_encoder_create(b->schemas, tc->schema);
        }
        bench_msg *m = &b->msgs[b->n_msgs];
        if (!encs[e] || ts_encoder_from_json(encs[e], ev->json, &m->val, &m->len, err,
                                             sizeof(err)) != TS_OK) {
            fprintf(stderr, "bench: cannot encode event %zu: %s\n", i, err);
            rc = -1;
            break;
        }
        m->topic = ev->topic;
        m->key = ev->key;
        ev->key = NULL;
        if (i < keep_json) {
            /* The record body, as a processor would keep it in state. */
            const char *rec;
            json_t *body;
            json_object_foreach(ev->json, rec, body) m->json = json_dumps(body, JSON_COMPACT);
        }
        json_decref(ev->json); /* the stream can be large: free as we go */
        ev->json = NULL;
        b->n_msgs++;
    }
    for (size_t e = 0; e < n_enc; e++)
        ts_encoder_destroy(encs[e]);
    ts_model_stream_destroy(s);
    size_t bytes = 0;
    for (size_t i = 0; i < b->n_msgs; i++)
        bytes += b->msgs[i].len;
    fprintf(stderr, "bench: generated and encoded %zu events (%.1f MB of Avro) in %.1f s\n",
            b->n_msgs, (double)bytes / 1e6, bench_now() - t0);
    json_object_set_new(json_object_get(b->results, "meta"), "avro_bytes_per_event",
                        json_real(b->n_msgs ? round((double)bytes / (double)b->n_msgs) : 0));
    return rc;
}

static int bench_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void bench_print_table(const bench_ctx *b) {
    printf("\n%-11s %-36s %14s  %-10s %s\n", "section", "measure", "value", "unit", "note");
    printf("%-11s %-36s %14s  %-10s %s\n", "-------", "-------", "-----", "----", "----");
    size_t i;
    json_t *row;
    json_array_foreach(b->table, i, row) {
        double v = json_real_value(json_array_get(row, 2));
        printf("%-11s %-36s %14.*f  %-10s %s\n", json_string_value(json_array_get(row, 0)),
               json_string_value(json_array_get(row, 1)), fabs(v) >= 100 ? 0 : 3, v,
               json_string_value(json_array_get(row, 3)),
               json_string_value(json_array_get(row, 4)));
    }
    fflush(stdout);
}

static void usage(void) {
    fprintf(stderr, "usage: tsbench [--short] [--events N] [--seed S] [--perf perf.data] "
                    "[--only components|restore|pipeline|throughput|rebalance] --out results.json\n");
}

/* Whether a phase runs: all of them, or the one named by --only. */
static int bench_wanted(const char *only, const char *phase) {
    return !only || strcmp(only, phase) == 0;
}

int main(int argc, char **argv) {
    bench_ctx b;
    memset(&b, 0, sizeof(b));
    b.seed = 42;
    const char *out = NULL, *only = NULL;
    size_t events = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--short"))
            b.short_mode = 1;
        else if (!strcmp(argv[i], "--events") && i + 1 < argc)
            events = strtoul(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            b.seed = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--perf") && i + 1 < argc)
            b.perf_out = argv[++i];
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            out = argv[++i];
        else {
            usage();
            return 2;
        }
    }
    if (!out) {
        usage();
        return 2;
    }
    b.n_events = events ? events : b.short_mode ? 20000 : 1000000;

    b.results = json_object();
    b.table = json_array();
    char date[64];
    time_t now = time(NULL);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    struct utsname un;
    uname(&un);
    json_object_set_new(b.results, "meta",
                        json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:s}", "date", date, "mode",
                                  b.short_mode ? "short" : "full", "events",
                                  (json_int_t)b.n_events, "seed", (json_int_t)b.seed, "cpus",
                                  (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "kernel",
                                  un.release, "topology", "benchmarks/topology.yaml"));
    json_object_set_new(b.results, "components", json_object());
    json_object_set_new(b.results, "restore", json_object());
    json_object_set_new(b.results, "pipeline", json_object());

    int rc = 1;
    char err[1024];
    /* Under $TMPDIR when set, as mkdtemp's other users do (e.g. a tmpfs, to
     * tell what the disk adds to a figure). */
    const char *tmp = getenv("TMPDIR");
    snprintf(b.dir, sizeof(b.dir), "%s/ts-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(b.dir)) {
        perror("bench: mkdtemp");
        return 1;
    }
    if (ts_topology_load(TS_SOURCE_DIR "/benchmarks/topology.yaml", &b.topo, err,
                         sizeof(err)) != TS_OK ||
        ts_schemas_load(b.topo->schemas_dir, &b.schemas, err, sizeof(err)) != TS_OK ||
        ts_servers_start_redis(&b.srv, b.dir, err, sizeof(err)) != TS_OK ||
        ts_servers_start_postgres(&b.srv, b.dir, err, sizeof(err)) != TS_OK ||
        ts_cluster_create(1, &b.cluster, err, sizeof(err)) != TS_OK) {
        fprintf(stderr, "bench: setup: %s\n", err);
        goto done;
    }
    b.redis_url = ts_servers_redis_url(b.srv);
    b.pg = ts_servers_pg_conninfo(b.srv);
    for (size_t i = 0; i < b.topo->n_topics; i++)
        ts_cluster_topic_create(b.cluster, b.topo->topics[i].name, b.topo->topics[i].partitions);
    /* The mock cluster cannot create topics on request: make the runtime's
     * changelogs ("<group>-<processor>-changelog", partitioned like the input). */
    for (size_t i = 0; i < b.topo->n_processors; i++) {
        const ts_processor_conf *pc = &b.topo->processors[i];
        const ts_topic_conf *in = ts_topology_topic(b.topo, pc->input);
        char name[512];
        snprintf(name, sizeof(name), "%s-%s-changelog", BENCH_GROUP, pc->name);
        ts_cluster_topic_create(b.cluster, name, in ? in->partitions : 1);
    }

    if (bench_encode_stream(&b, b.short_mode ? 20000 : 300000) != 0)
        goto done;
    if (bench_wanted(only, "components") && bench_components(&b) != 0)
        goto done;
    if (bench_wanted(only, "restore") && bench_restore(&b) != 0)
        goto done;
    /* "throughput": the pipeline phase up to end-to-end throughput only, for
     * quick back-to-back comparisons of two builds. */
    b.throughput_only = only && strcmp(only, "throughput") == 0;
    if ((bench_wanted(only, "pipeline") || b.throughput_only) && bench_pipeline(&b) != 0)
        goto done;
    /* Last: its runtimes write views and rows of their own. */
    if (bench_wanted(only, "rebalance") && bench_rebalance(&b) != 0)
        goto done;
    rc = 0;

done:
    json_object_set_new(b.results, "table", json_incref(b.table));
    json_object_set_new(json_object_get(b.results, "meta"), "complete", json_boolean(rc == 0));
    if (json_dump_file(b.results, out, JSON_INDENT(1) | JSON_PRESERVE_ORDER) != 0)
        fprintf(stderr, "bench: cannot write %s\n", out);
    bench_print_table(&b);
    for (size_t i = 0; i < b.n_msgs; i++) {
        free(b.msgs[i].key);
        free(b.msgs[i].val);
        free(b.msgs[i].json);
    }
    free(b.msgs);
    ts_cluster_destroy(b.cluster);
    ts_servers_destroy(b.srv);
    ts_schemas_destroy(b.schemas);
    ts_topology_destroy(b.topo);
    json_decref(b.table);
    json_decref(b.results);
    if (!getenv("TS_BENCH_KEEP"))
        nftw(b.dir, bench_rm, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
