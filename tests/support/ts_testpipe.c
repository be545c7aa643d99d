/* ts_testpipe.c - the whole pipeline for one integration test (see ts_testpipe.h). */
#include "ts_testpipe.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ts_avro.h"
#include "ts_buf.h"
#include "ts_kconf.h"

static double ts_testpipe_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void ts_testpipe_group(const ts_testpipe *tp, char *out, size_t cap) {
    snprintf(out, cap, "test-%ld", (long)getpid());
    (void)tp;
}

/* Forks and execs `tastesync run` with the pipeline's addresses, its own state
 * folder and log, and (when not NULL) a static instance id. */
static pid_t ts_testpipe_exec(ts_testpipe *tp, const char *state, const char *log,
                              const char *instance) {
    char group[64];
    ts_testpipe_group(tp, group, sizeof(group));
    ts_testenv_runtime rt = {
        .topology = TS_SOURCE_DIR "/topology.yaml",
        .brokers = ts_cluster_bootstraps(tp->cluster),
        .redis_url = tp->redis.url,
        .pg_conninfo = tp->pg,
        .state = state,
        .group = group,
        .log = log,
        .instance = instance,
    };
    return ts_testenv_spawn_runtime(&rt);
}

int ts_testpipe_runtime_start(ts_testpipe *tp) {
    char state[256];
    snprintf(state, sizeof(state), "%s/state", tp->dir);
    pid_t pid = ts_testpipe_exec(tp, state, tp->log, NULL);
    if (pid < 0)
        return -1;
    tp->pid = pid;
    return 0;
}

pid_t ts_testpipe_spawn(ts_testpipe *tp, const char *name, const char *instance) {
    char state[256], log[256];
    snprintf(state, sizeof(state), "%s/state-%s", tp->dir, name);
    snprintf(log, sizeof(log), "%s/%s.log", tp->dir, name);
    return ts_testpipe_exec(tp, state, log, instance);
}

int ts_testpipe_reap(pid_t pid, int sig) {
    kill(pid, sig);
    int status = 0;
    double deadline = ts_testpipe_now() + ts_testenv_timeout(30);
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (ts_testpipe_now() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        usleep(10000);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int ts_testpipe_runtime_stop(ts_testpipe *tp, int sig) {
    if (tp->pid <= 0)
        return -1;
    int status = ts_testpipe_reap(tp->pid, sig);
    tp->pid = 0;
    return status;
}

int ts_testpipe_start(ts_testpipe *tp) { return ts_testpipe_start_opts(tp, NULL); }

int ts_testpipe_start_opts(ts_testpipe *tp, const ts_testpipe_opts *opts) {
    memset(tp, 0, sizeof(*tp));
    snprintf(tp->dir, sizeof(tp->dir), "/tmp/ts-pipe-XXXXXX");
    if (!mkdtemp(tp->dir))
        return -1;
    snprintf(tp->log, sizeof(tp->log), "%s/runtime.log", tp->dir);
    char err[1024];
    if (ts_topology_load(TS_SOURCE_DIR "/topology.yaml", &tp->topo, err, sizeof(err)) != TS_OK) {
        fprintf(stderr, "testpipe: %s\n", err);
        return -1;
    }
    if (ts_cluster_create(1, &tp->cluster, err, sizeof(err)) != TS_OK) {
        fprintf(stderr, "testpipe: %s\n", err);
        return -1;
    }
    for (size_t i = 0; i < tp->topo->n_topics; i++)
        ts_cluster_topic_create(tp->cluster, tp->topo->topics[i].name,
                                tp->topo->topics[i].partitions);
    /* The mock cluster cannot create topics on request: make the runtime's
     * changelogs ("<group>-<processor>-changelog") here. */
    char group[64];
    ts_testpipe_group(tp, group, sizeof(group));
    for (size_t i = 0; i < tp->topo->n_processors; i++) {
        const ts_processor_conf *pc = &tp->topo->processors[i];
        const ts_topic_conf *in = ts_topology_topic(tp->topo, pc->input);
        char name[512];
        snprintf(name, sizeof(name), "%s-%s-changelog", group, pc->name);
        ts_cluster_topic_create(tp->cluster, name, in ? in->partitions : 1);
    }
    if (ts_testenv_redis_start(&tp->redis) != 0)
        return -1;
    if (opts && opts->private_pg) {
        snprintf(tp->pgdir, sizeof(tp->pgdir), "%s/pgsrv", tp->dir);
        /* As root, postgres runs as user postgres and must reach its folder. */
        chmod(tp->dir, 0711);
        if (ts_servers_start_postgres(&tp->pgsrv, tp->pgdir, err, sizeof(err)) != TS_OK) {
            fprintf(stderr, "testpipe: postgres: %s\n", err);
            return -1;
        }
        snprintf(tp->pg, sizeof(tp->pg), "%s", ts_servers_pg_conninfo(tp->pgsrv));
    } else if (ts_testenv_pg_create_db(tp->pg, sizeof(tp->pg)) != 0) {
        fprintf(stderr, "testpipe: %s\n", tp->pg);
        return -1;
    }
    rd_kafka_conf_t *conf = ts_kconf_create(ts_cluster_bootstraps(tp->cluster), NULL, err,
                                            sizeof(err));
    if (!conf)
        return -1;
    rd_kafka_conf_set(conf, "linger.ms", "1", NULL, 0);
    ts_kconf_producer(conf, NULL, err, sizeof(err));
    tp->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!tp->producer)
        return -1;
    return ts_testpipe_runtime_start(tp);
}

static int ts_testpipe_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Copies the runtime's log to stderr when it holds a sanitizer report, so the
 * report reaches the test log where scripts/test.sh looks for it. */
static void ts_testpipe_check_log(const ts_testpipe *tp) {
    FILE *f = fopen(tp->log, "r");
    if (!f)
        return;
    char line[4096];
    int dump = 0;
    while (!dump && fgets(line, sizeof(line), f))
        dump = strstr(line, "Sanitizer") != NULL || strstr(line, "runtime error:") != NULL;
    if (dump) {
        rewind(f);
        fprintf(stderr, "---- runtime log %s ----\n", tp->log);
        while (fgets(line, sizeof(line), f))
            fputs(line, stderr);
    }
    fclose(f);
}

void ts_testpipe_stop(ts_testpipe *tp) {
    if (tp->pid > 0)
        ts_testpipe_runtime_stop(tp, SIGKILL);
    if (tp->log[0])
        ts_testpipe_check_log(tp);
    if (tp->reader) {
        rd_kafka_destroy_flags(tp->reader, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        tp->reader = NULL;
    }
    if (tp->producer) {
        rd_kafka_flush(tp->producer, 5000);
        rd_kafka_destroy(tp->producer);
        tp->producer = NULL;
    }
    ts_testenv_redis_stop(&tp->redis);
    ts_servers_destroy(tp->pgsrv);
    tp->pgsrv = NULL;
    ts_cluster_destroy(tp->cluster);
    tp->cluster = NULL;
    ts_topology_destroy(tp->topo);
    tp->topo = NULL;
    if (tp->dir[0] && !getenv("TS_TEST_KEEP"))
        nftw(tp->dir, ts_testpipe_rm, 16, FTW_DEPTH | FTW_PHYS);
    tp->dir[0] = '\0';
}

int ts_testpipe_produce_raw(ts_testpipe *tp, const char *topic, const char *key,
                            const void *value, size_t len) {
    rd_kafka_resp_err_t err = rd_kafka_producev(
        tp->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(key, key ? strlen(key) : 0), RD_KAFKA_V_VALUE((void *)value, len),
        RD_KAFKA_V_END);
    if (err)
        return -1;
    return rd_kafka_flush(tp->producer, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : -1;
}

int ts_testpipe_produce_json(ts_testpipe *tp, const char *topic, const char *json) {
    const ts_topic_conf *tc = ts_topology_topic(tp->topo, topic);
    if (!tc || !tc->schema)
        return -1;
    char err[512];
    ts_schemas *schemas = NULL;
    if (ts_schemas_load(tp->topo->schemas_dir, &schemas, err, sizeof(err)) != TS_OK)
        return -1;
    ts_encoder *enc = ts_encoder_create(schemas, tc->schema);
    json_t *event = json_loads(json, 0, NULL);
    char *bytes = NULL;
    size_t len = 0;
    int rc = -1;
    if (enc && event && ts_encoder_from_json(enc, event, &bytes, &len, err, sizeof(err)) == TS_OK) {
        const char *key = tc->key_field ? ts_encoder_field_str(enc, tc->key_field) : NULL;
        rc = ts_testpipe_produce_raw(tp, topic, key, bytes, len);
    } else {
        fprintf(stderr, "testpipe: cannot encode %s: %s\n", json, err);
    }
    free(bytes);
    json_decref(event);
    ts_encoder_destroy(enc);
    ts_schemas_destroy(schemas);
    return rc;
}

static rd_kafka_t *ts_testpipe_consumer(ts_testpipe *tp, const char *group) {
    char err[512];
    rd_kafka_conf_t *conf = ts_kconf_create(ts_cluster_bootstraps(tp->cluster), NULL, err,
                                            sizeof(err));
    if (!conf)
        return NULL;
    rd_kafka_conf_set(conf, "group.id", group, NULL, 0);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", NULL, 0);
    return rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
}

/* One consumer per test, kept for its whole life: it never joins the group
 * (assign only, no commits), and only asks for the group's committed offsets.
 * Creating and destroying consumers repeatedly trips the 2.0.2 mock cluster,
 * which then stops answering new connections. */
static rd_kafka_t *ts_testpipe_reader(ts_testpipe *tp) {
    if (!tp->reader) {
        char group[64];
        ts_testpipe_group(tp, group, sizeof(group));
        tp->reader = ts_testpipe_consumer(tp, group);
    }
    return tp->reader;
}

int ts_testpipe_group_progress(rd_kafka_t *rk, const char *topic, int partitions,
                               int64_t *committed, int64_t *end, int *done) {
    *committed = *end = 0;
    *done = 0;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p);
    int rc = rd_kafka_committed(rk, parts, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : -1;
    int all = rc == 0;
    for (int p = 0; rc == 0 && p < partitions; p++) {
        int64_t low = 0, high = 0;
        if (rd_kafka_query_watermark_offsets(rk, topic, p, &low, &high, 5000)) {
            rc = -1;
            break;
        }
        *end += high;
        if (parts->elems[p].offset > 0)
            *committed += parts->elems[p].offset;
        if (high > 0 && parts->elems[p].offset < high)
            all = 0;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    *done = rc == 0 && all;
    return rc;
}

int ts_testpipe_wait_committed(ts_testpipe *tp, const char *topic, double seconds) {
    const ts_topic_conf *tc = ts_topology_topic(tp->topo, topic);
    rd_kafka_t *rk = ts_testpipe_reader(tp);
    if (!tc || !rk)
        return -1;
    double deadline = ts_testpipe_now() + ts_testenv_timeout(seconds);
    int rc = -1;
    while (ts_testpipe_now() < deadline) {
        int64_t committed, end;
        int done = 0;
        ts_testpipe_group_progress(rk, topic, tc->partitions, &committed, &end, &done);
        if (done) {
            rc = 0;
            break;
        }
        usleep(50000);
    }
    if (rc != 0) {
        fprintf(stderr, "testpipe: %s not committed after %.0f s; the runtime's stacks:\n",
                topic, seconds);
        ts_testpipe_dump_stacks(tp);
    }
    return rc;
}

static rd_kafka_message_t **ts_testpipe_read(ts_testpipe *tp, const char *topic, int partitions,
                                             size_t *n) {
    *n = 0;
    rd_kafka_t *rk = ts_testpipe_reader(tp);
    if (!rk)
        return NULL;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(partitions);
    int64_t *ends = calloc((size_t)partitions, sizeof(*ends));
    int open = 0;
    for (int p = 0; p < partitions; p++) {
        int64_t low = 0;
        rd_kafka_query_watermark_offsets(rk, topic, p, &low, &ends[p], 5000);
        if (ends[p] > low) {
            rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
            open++;
        }
    }
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    size_t cap = 64;
    rd_kafka_message_t **msgs = calloc(cap, sizeof(*msgs));
    double deadline = ts_testpipe_now() + ts_testenv_timeout(20);
    while (open > 0 && ts_testpipe_now() < deadline) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);
        if (!msg)
            continue;
        if (msg->err) {
            rd_kafka_message_destroy(msg);
            continue;
        }
        int p = msg->partition;
        int last = msg->offset + 1 >= ends[p];
        if (*n == cap) {
            cap *= 2;
            msgs = realloc(msgs, cap * sizeof(*msgs));
        }
        msgs[(*n)++] = msg;
        if (last)
            open--;
    }
    rd_kafka_assign(rk, NULL);
    free(ends);
    return msgs;
}

rd_kafka_message_t **ts_testpipe_read_topic(ts_testpipe *tp, const char *topic, size_t *n) {
    const ts_topic_conf *tc = ts_topology_topic(tp->topo, topic);
    return ts_testpipe_read(tp, topic, tc ? tc->partitions : 1, n);
}

void ts_testpipe_changelog_topic(const ts_testpipe *tp, const char *processor, char *out,
                                 size_t cap) {
    char group[64];
    ts_testpipe_group(tp, group, sizeof(group));
    snprintf(out, cap, "%s-%s-changelog", group, processor);
}

rd_kafka_message_t **ts_testpipe_read_changelog(ts_testpipe *tp, const char *processor,
                                                size_t *n) {
    *n = 0;
    for (size_t i = 0; i < tp->topo->n_processors; i++) {
        const ts_processor_conf *pc = &tp->topo->processors[i];
        if (strcmp(pc->name, processor) != 0)
            continue;
        const ts_topic_conf *tc = ts_topology_topic(tp->topo, pc->input);
        char topic[256];
        ts_testpipe_changelog_topic(tp, processor, topic, sizeof(topic));
        return ts_testpipe_read(tp, topic, tc ? tc->partitions : 1, n);
    }
    return NULL;
}

int ts_testpipe_changelog_is_one_history(ts_testpipe *tp, const char *processor, char *why,
                                         size_t whylen) {
    size_t n = 0;
    rd_kafka_message_t **msgs = ts_testpipe_read_changelog(tp, processor, &n);
    int64_t last[256];
    for (size_t p = 0; p < sizeof(last) / sizeof(last[0]); p++)
        last[p] = -1;
    size_t markers = 0;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const rd_kafka_message_t *m = msgs[i];
        if (m->key_len != 1 || ((const char *)m->key)[0] != 'M' || m->len < 16 ||
            m->partition < 0 || m->partition >= 256)
            continue;
        int64_t next = ts_buf_be64_load((const char *)m->payload + 8);
        if (next < last[m->partition]) {
            snprintf(why, whylen,
                     "%s changelog [%d] offset %lld: a marker at position %lld after one at %lld",
                     processor, (int)m->partition, (long long)m->offset, (long long)next,
                     (long long)last[m->partition]);
            rc = -1;
        }
        last[m->partition] = next;
        markers++;
    }
    if (rc == 0 && markers == 0) {
        snprintf(why, whylen, "%s changelog: no marker read", processor);
        rc = -1;
    }
    ts_testpipe_records_free(msgs, n);
    return rc;
}

/* The group's committed offsets of every partition of `topic` (-1: none). */
int ts_testpipe_committed(ts_testpipe *tp, const char *topic, int64_t *offsets, int partitions) {
    rd_kafka_t *rk = ts_testpipe_reader(tp);
    if (!rk)
        return -1;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p);
    int rc = rd_kafka_committed(rk, parts, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : -1;
    for (int p = 0; rc == 0 && p < partitions; p++)
        offsets[p] = parts->elems[p].err ? -1 : parts->elems[p].offset;
    rd_kafka_topic_partition_list_destroy(parts);
    return rc;
}

/* A consumer that joins the group for a moment: the group's coordinator
 * takes commits only from members. */
int ts_testpipe_commit(ts_testpipe *tp, const char *topic, const int64_t *offsets,
                       int partitions) {
    char group[64];
    ts_testpipe_group(tp, group, sizeof(group));
    char why[512];
    rd_kafka_conf_t *conf = ts_kconf_create(ts_cluster_bootstraps(tp->cluster), NULL, why,
                                            sizeof(why));
    if (!conf)
        return -1;
    rd_kafka_conf_set(conf, "group.id", group, NULL, 0);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
    /* The runtime's (ts_source.c): the mock coordinator waits for a session
     * timeout after a member leaves before it assigns the next joiner. */
    rd_kafka_conf_set(conf, "session.timeout.ms", "10000", NULL, 0);
    rd_kafka_conf_set(conf, "heartbeat.interval.ms", "1000", NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (!rk)
        return -1;
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    /* Joined once the assignment arrives (the default rebalance handling
     * assigns it while polling). */
    double deadline = ts_testpipe_now() + ts_testenv_timeout(30);
    rd_kafka_topic_partition_list_t *mine = NULL;
    while (!err && ts_testpipe_now() < deadline) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);
        if (msg)
            rd_kafka_message_destroy(msg);
        if (rd_kafka_assignment(rk, &mine) == RD_KAFKA_RESP_ERR_NO_ERROR && mine->cnt > 0)
            break;
        if (mine)
            rd_kafka_topic_partition_list_destroy(mine);
        mine = NULL;
    }
    if (!err && !mine)
        err = RD_KAFKA_RESP_ERR__TIMED_OUT;
    if (mine)
        rd_kafka_topic_partition_list_destroy(mine);
    if (!err) {
        rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(partitions);
        for (int p = 0; p < partitions; p++)
            if (offsets[p] >= 0)
                rd_kafka_topic_partition_list_add(parts, topic, p)->offset = offsets[p];
        err = rd_kafka_commit(rk, parts, 0);
        rd_kafka_topic_partition_list_destroy(parts);
    }
    if (err)
        fprintf(stderr, "testpipe: commit to %s: %s\n", topic, rd_kafka_err2str(err));
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return err ? -1 : 0;
}

void ts_testpipe_records_free(rd_kafka_message_t **msgs, size_t n) {
    for (size_t i = 0; i < n; i++)
        rd_kafka_message_destroy(msgs[i]);
    free(msgs);
}

char *ts_testpipe_header(const rd_kafka_message_t *msg, const char *name) {
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(msg, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    const void *value = NULL;
    size_t size = 0;
    if (rd_kafka_header_get_last(hdrs, name, &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    return strndup(value, size);
}

int ts_testpipe_produce_json_batch(ts_testpipe *tp, const char *const *topics,
                                   const char *const *jsons, size_t n) {
    char err[512];
    ts_schemas *schemas = NULL;
    if (ts_schemas_load(tp->topo->schemas_dir, &schemas, err, sizeof(err)) != TS_OK) {
        fprintf(stderr, "testpipe: %s\n", err);
        return -1;
    }
    enum { MAX_TOPICS = 16 };
    const ts_topic_conf *tcs[MAX_TOPICS];
    ts_encoder *encs[MAX_TOPICS];
    size_t n_enc = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t e = 0;
        while (e < n_enc && strcmp(tcs[e]->name, topics[i]) != 0)
            e++;
        if (e == n_enc) {
            const ts_topic_conf *tc = ts_topology_topic(tp->topo, topics[i]);
            if (!tc || !tc->schema || n_enc == MAX_TOPICS) {
                fprintf(stderr, "testpipe: no schema for topic %s\n", topics[i]);
                rc = -1;
                break;
            }
            tcs[n_enc] = tc;
            encs[n_enc++] = ts_encoder_create(schemas, tc->schema);
        }
        json_t *event = json_loads(jsons[i], 0, NULL);
        char *bytes = NULL;
        size_t len = 0;
        if (!encs[e] || !event ||
            ts_encoder_from_json(encs[e], event, &bytes, &len, err, sizeof(err)) != TS_OK) {
            fprintf(stderr, "testpipe: cannot encode %s: %s\n", jsons[i], err);
            rc = -1;
        } else {
            const char *key = tcs[e]->key_field ? ts_encoder_field_str(encs[e], tcs[e]->key_field)
                                                : NULL;
            rd_kafka_resp_err_t kerr;
            /* A full local queue is waited out, not treated as a failure. */
            while ((kerr = rd_kafka_producev(
                        tp->producer, RD_KAFKA_V_TOPIC(topics[i]),
                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE),
                        RD_KAFKA_V_KEY(key, key ? strlen(key) : 0), RD_KAFKA_V_VALUE(bytes, len),
                        RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
                rd_kafka_poll(tp->producer, 10);
            if (kerr) {
                fprintf(stderr, "testpipe: produce: %s\n", rd_kafka_err2str(kerr));
                free(bytes);
                rc = -1;
            }
            rd_kafka_poll(tp->producer, 0);
        }
        json_decref(event);
    }
    if (rd_kafka_flush(tp->producer, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        rc = -1;
    for (size_t e = 0; e < n_enc; e++)
        ts_encoder_destroy(encs[e]);
    ts_schemas_destroy(schemas);
    return rc;
}

void ts_testpipe_pg_stop(ts_testpipe *tp) {
    if (tp->pgsrv)
        ts_servers_stop_postgres(tp->pgsrv);
}

int ts_testpipe_pg_start(ts_testpipe *tp) {
    char err[512];
    if (!tp->pgsrv) {
        fprintf(stderr, "testpipe: no private postgres\n");
        return -1;
    }
    if (ts_servers_start_postgres(&tp->pgsrv, tp->pgdir, err, sizeof(err)) != TS_OK) {
        fprintf(stderr, "testpipe: postgres: %s\n", err);
        return -1;
    }
    return 0;
}

int ts_testpipe_progress(ts_testpipe *tp, const char *topic, int64_t *committed, int64_t *end) {
    const ts_topic_conf *tc = ts_topology_topic(tp->topo, topic);
    rd_kafka_t *rk = ts_testpipe_reader(tp);
    int done;
    *committed = *end = 0;
    if (!tc || !rk)
        return -1;
    return ts_testpipe_group_progress(rk, topic, tc->partitions, committed, end, &done);
}

void ts_testpipe_dump_stacks(const ts_testpipe *tp) {
    if (tp->pid <= 0)
        return;
    char cmd[256];
    snprintf(cmd, sizeof(cmd),
             "gdb -p %ld -batch -nx -ex 'thread apply all bt' </dev/null >&2 2>/dev/null",
             (long)tp->pid);
    if (system(cmd) != 0)
        fprintf(stderr, "testpipe: no stacks of runtime %ld (is gdb installed?)\n",
                (long)tp->pid);
}

long ts_testpipe_runtime_rss_kib(const ts_testpipe *tp) {
    if (tp->pid <= 0)
        return -1;
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%ld/status", (long)tp->pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kib = -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kib;
}
