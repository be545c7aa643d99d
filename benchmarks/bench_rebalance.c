/* bench_rebalance.c - what a rebalance costs the partitions that do not move.
 *
 * Two runtimes (`tastesync run benchmarks/topology.yaml`, instances rb-a and
 * rb-b) share a consumer group; storybook events are produced at a steady
 * BENCH_RB_RATE per second over its partitions (the topology's count). After
 * a warm-up a third instance (rb-c) joins. Every 250 ms the instances' status
 * documents in Redis are read: per task its owner and `acked`, the input
 * position whose views, rows and outputs every sink acknowledged (not the
 * Kafka committed offset: the mock cluster refuses commits while a group
 * rebalances, so committed offsets stall even where processing goes on). Per
 * partition, the longest interval without acknowledged progress in the window
 * from the join to the end is its pause; a partition "moved" when its owner
 * differs before and after the join. Reported: the longest pause of unmoved
 * and of moved partitions, and as the reference the longest gap in the same
 * span of time before the join.
 *
 * Run once with the runtime's default assignor and once with
 * cooperative-sticky (a copy of the topology with that kafka.config).
 */
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "ts_testenv.h"
#include "ts_testpipe.h"

#define BENCH_RB_TOPIC BENCH_PROBE_TOPIC
#define BENCH_RB_MAX_PARTS 64 /* storybook.events partitions followed */
#define BENCH_RB_RATE 2000   /* events/s offered */
#define BENCH_RB_WARMUP 8.0  /* s of steady input before the join */
#define BENCH_RB_AFTER 15.0  /* s observed after the join */

typedef struct bench_rb_sample {
    double t;
    int64_t committed[BENCH_RB_MAX_PARTS]; /* acked positions, from the status */
} bench_rb_sample;

static pid_t bench_rb_spawn(bench_ctx *b, const char *topo, const char *group,
                            const char *name) {
    char log[256], state[256];
    snprintf(log, sizeof(log), "%s/%s-%s.log", b->dir, group, name);
    snprintf(state, sizeof(state), "%s/state-%s-%s", b->dir, group, name);
    return bench_spawn_runtime(b, topo, group, state, log, name);
}

/* Owner of each partition of BENCH_RB_TOPIC ("running" tasks only), from the
 * status documents of the instances; -1 when none. With `acked`, also each
 * partition's acknowledged position there (-1: none). */
static void bench_rb_owners(bench_ctx *b, const char *group, const char *const *names, int n,
                            int parts, int *owner, int64_t *acked) {
    static char out[1 << 18];
    for (int p = 0; p < parts; p++) {
        owner[p] = -1;
        if (acked)
            acked[p] = -1;
    }
    for (int i = 0; i < n; i++) {
        if (ts_testenv_redis_cmd(b->redis_url, out, sizeof(out), "GET ts:status:%s:%s", group,
                                 names[i]) != 0)
            continue;
        json_t *doc = json_loads(out, 0, NULL), *t;
        size_t k;
        json_array_foreach(json_object_get(doc, "tasks"), k, t) {
            const char *topic = json_string_value(json_object_get(t, "topic"));
            const char *state = json_string_value(json_object_get(t, "state"));
            json_int_t p = json_integer_value(json_object_get(t, "partition"));
            if (topic && state && !strcmp(topic, BENCH_RB_TOPIC) && !strcmp(state, "running") &&
                p >= 0 && p < parts) {
                owner[p] = i;
                json_int_t a = json_integer_value(json_object_get(t, "acked"));
                if (acked && a > acked[p])
                    acked[p] = a;
            }
        }
        json_decref(doc);
    }
}

/* Longest time between two increases of partition p's acknowledged position
 * in samples [from, to), counting the span up to `to` if it never moved again. */
static double bench_rb_gap(const bench_rb_sample *s, size_t from, size_t to, int p) {
    double worst = 0, last = s[from].t;
    int64_t best = s[from].committed[p];
    for (size_t i = from + 1; i < to; i++) {
        /* Progress is a new highest position: a task seen again after a
         * sample without an owner (-1) has not progressed by that. */
        if (s[i].committed[p] > best) {
            best = s[i].committed[p];
            if (s[i].t - last > worst)
                worst = s[i].t - last;
            last = s[i].t;
        }
    }
    if (to > from && s[to - 1].t - last > worst)
        worst = s[to - 1].t - last;
    return worst;
}

/* One run: 2 instances, steady input, a third joins. */
static int bench_rb_run(bench_ctx *b, const char *label, const char *topo, const char *group) {
    const ts_topic_conf *input = ts_topology_topic(b->topo, BENCH_RB_TOPIC);
    int parts = input ? input->partitions : 0;
    if (parts <= 0 || parts > BENCH_RB_MAX_PARTS) {
        fprintf(stderr, "bench: rebalance: %s has %d partitions (1..%d followed)\n",
                BENCH_RB_TOPIC, parts, BENCH_RB_MAX_PARTS);
        return -1;
    }
    /* The changelogs of this group (the mock cluster cannot create them). */
    for (size_t i = 0; i < b->topo->n_processors; i++) {
        const ts_processor_conf *pc = &b->topo->processors[i];
        const ts_topic_conf *in = ts_topology_topic(b->topo, pc->input);
        char name[512];
        snprintf(name, sizeof(name), "%s-%s-changelog", group, pc->name);
        ts_cluster_topic_create(b->cluster, name, in ? in->partitions : 1);
    }
    size_t n_in = 0;
    size_t *idx = malloc(b->n_msgs * sizeof(*idx));
    for (size_t i = 0; idx && i < b->n_msgs; i++)
        if (!strcmp(b->msgs[i].topic, BENCH_RB_TOPIC))
            idx[n_in++] = i;
    size_t cap = (size_t)((BENCH_RB_WARMUP + BENCH_RB_AFTER + 70) * 5);
    bench_rb_sample *s = calloc(cap, sizeof(*s));
    rd_kafka_t *prod = bench_producer(b, 5);
    const char *names[3] = {"rb-a", "rb-b", "rb-c"};
    pid_t pids[3] = {0, 0, 0};
    int rc = -1;
    if (!idx || n_in == 0 || !s || !prod)
        goto done;
    pids[0] = bench_rb_spawn(b, topo, group, names[0]);
    pids[1] = bench_rb_spawn(b, topo, group, names[1]);

    /* Steady input from now on; the clock of the phase starts when both
     * instances run tasks of the topic. */
    double t0 = bench_now(), next_sample = t0, joined_at = 0, start = 0;
    size_t sent = 0, n_s = 0, join_sample = 0, start_sample = 0;
    int before[BENCH_RB_MAX_PARTS], after[BENCH_RB_MAX_PARTS];
    while (n_s < cap) {
        double now = bench_now();
        size_t due = (size_t)((now - t0) * BENCH_RB_RATE);
        for (; sent < due; sent++) {
            const bench_msg *m = &b->msgs[idx[sent % n_in]];
            rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(BENCH_RB_TOPIC),
                              RD_KAFKA_V_KEY(m->key, strlen(m->key)),
                              RD_KAFKA_V_VALUE(m->val, m->len), RD_KAFKA_V_END);
        }
        rd_kafka_poll(prod, 0);
        if (now >= next_sample) {
            next_sample = now + 0.25;
            /* The status documents are rewritten every second; reading
             * them 4 times as often bounds the error of a gap to ~0.25 s. */
            int owners[BENCH_RB_MAX_PARTS];
            bench_rb_owners(b, group, names, joined_at ? 3 : 2, parts, owners, s[n_s].committed);
            s[n_s++].t = now;
        }
        if (!start && now - t0 > 2) {
            int owners[BENCH_RB_MAX_PARTS], a = 0, bb = 0;
            bench_rb_owners(b, group, names, 2, parts, owners, NULL);
            for (int p = 0; p < parts; p++) {
                a += owners[p] == 0;
                bb += owners[p] == 1;
            }
            if (a && bb && a + bb == parts) {
                start = now;
                start_sample = n_s;
            } else if (now - t0 > 60) {
                fprintf(stderr, "bench: rebalance: the first two instances never settled\n");
                goto done;
            }
        }
        if (start && !joined_at && now - start >= BENCH_RB_WARMUP) {
            bench_rb_owners(b, group, names, 2, parts, before, NULL);
            pids[2] = bench_rb_spawn(b, topo, group, names[2]);
            joined_at = now;
            join_sample = n_s;
            fprintf(stderr, "bench: rebalance (%s): rb-c joins\n", label);
        }
        if (joined_at && now - joined_at >= BENCH_RB_AFTER)
            break;
        usleep(1000);
    }
    if (!joined_at)
        goto done;
    bench_rb_owners(b, group, names, 3, parts, after, NULL);
    rd_kafka_flush(prod, 10000);

    /* The same length of time before the join is the reference. */
    size_t span = n_s - join_sample;
    size_t ref_from = join_sample - start_sample > span ? join_sample - span : start_sample;
    double unmoved = 0, moved = 0, ref = 0;
    int n_unmoved = 0, n_moved = 0, n_unknown = 0;
    for (int p = 0; p < parts; p++) {
        double gap = bench_rb_gap(s, join_sample, n_s, p);
        double g0 = bench_rb_gap(s, ref_from, join_sample, p);
        if (g0 > ref)
            ref = g0;
        if (before[p] < 0 || after[p] < 0) {
            n_unknown++;
            if (gap > moved)
                moved = gap;
        } else if (before[p] == after[p]) {
            n_unmoved++;
            if (gap > unmoved)
                unmoved = gap;
        } else {
            n_moved++;
            if (gap > moved)
                moved = gap;
        }
    }
    json_t *r = json_pack("{s:s, s:i, s:f, s:f, s:f, s:i, s:i, s:i}", "assignor", label,
                          "rate_per_s", BENCH_RB_RATE, "unmoved_max_pause_ms",
                          unmoved * 1000, "moved_max_pause_ms", moved * 1000,
                          "reference_max_gap_ms", ref * 1000, "unmoved", n_unmoved, "moved",
                          n_moved, "owner_unknown", n_unknown);
    json_object_set_new(json_object_get(b->results, "rebalance"), label, r);
    char name[96], note[200];
    snprintf(note, sizeof(note),
             "%d of %d partitions kept their owner; no-progress gap before the join: %.0f ms",
             n_unmoved, parts, ref * 1000);
    snprintf(name, sizeof(name), "pause_unmoved_max(%s)", label);
    bench_row(b, "rebalance", name, unmoved * 1000, "ms", note);
    snprintf(note, sizeof(note), "%d partitions moved to the new instance (+%d owner unknown)",
             n_moved, n_unknown);
    snprintf(name, sizeof(name), "pause_moved_max(%s)", label);
    bench_row(b, "rebalance", name, moved * 1000, "ms", note);
    rc = 0;

done:
    for (int i = 2; i >= 0; i--) {
        if (pids[i] <= 0)
            continue;
        kill(pids[i], SIGTERM);
        int status;
        double deadline = bench_now() + 30;
        while (waitpid(pids[i], &status, WNOHANG) == 0) {
            if (bench_now() > deadline) {
                kill(pids[i], SIGKILL);
                waitpid(pids[i], &status, 0);
                break;
            }
            usleep(20000);
        }
    }
    if (prod)
        rd_kafka_destroy(prod);
    free(s);
    free(idx);
    return rc;
}

/* A copy of the benchmark topology choosing the cooperative-sticky assignor. */
static int bench_rb_cooperative_topology(bench_ctx *b, char *path, size_t cap) {
    snprintf(path, cap, "%s/topology-cooperative.yaml", b->dir);
    FILE *in = fopen(TS_SOURCE_DIR "/benchmarks/topology.yaml", "r");
    FILE *out = fopen(path, "w");
    char line[1024];
    int ok = in && out;
    while (ok && fgets(line, sizeof(line), in)) {
        if (!strncmp(line, "  config:", 9))
            fputs("  config: {compression.type: lz4, partition.assignment.strategy: "
                  "cooperative-sticky}\n",
                  out);
        else {
            /* Paths are relative to the topology's folder: make them absolute. */
            char *rel = strstr(line, " ../");
            if (rel) {
                *rel = '\0';
                fprintf(out, "%s " TS_SOURCE_DIR "/%s", line, rel + 4);
            } else {
                fputs(line, out);
            }
        }
    }
    if (in)
        fclose(in);
    if (out)
        fclose(out);
    return ok ? 0 : -1;
}

int bench_rebalance(bench_ctx *b) {
    json_object_set_new(b->results, "rebalance", json_object());
    if (bench_rb_run(b, "roundrobin", TS_SOURCE_DIR "/benchmarks/topology.yaml", "benchrb") != 0)
        return -1;
    char topo[256];
    if (bench_rb_cooperative_topology(b, topo, sizeof(topo)) != 0)
        return -1;
    return bench_rb_run(b, "cooperative-sticky", topo, "benchrbc");
}
