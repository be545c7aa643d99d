/* test_scaleout.c - one consumer group, several instances, partitions (and
 * their state) moving while a mixed stream flows:
 *   A, B and C start; a quarter in, B is killed (SIGKILL); half-way, D joins;
 *   three quarters in, C (a static member) restarts.
 * At the end every view, row, output event and DLQ record matches the
 * independent model, and no partition was processed by two instances at once:
 * Postgres records every hand-over of a partition (ts_handoffs, each owner
 * being one instance's continuous holding of it), and an owner that comes
 * back after another one took over would mean they overlapped. Every
 * changelog stays one history (no marker's position goes back): each new
 * owner continued from the newest batch, never from an older snapshot.
 *
 * Alone, with another size or seed:
 *   TS_SCALE_EVENTS=200000 TS_MODEL_SEED=7 TS_TEST_SERVERS=<dir> build/test_scaleout */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_modelrun.h"

static ts_testpipe tp;

static void setup(void) { cr_assert_eq(ts_testpipe_start(&tp), 0, "pipeline did not start"); }
static void teardown(void) { ts_testpipe_stop(&tp); }

TestSuite(scaleout, .init = setup, .fini = teardown, .timeout = 1200);

static unsigned long env_num(const char *name, unsigned long def) {
    const char *v = getenv(name);
    return v && *v ? strtoul(v, NULL, 0) : def;
}

/* Checks every task's hand-overs: owners, in offset order, never return.
 * @returns the number of hand-overs seen. */
static size_t check_handoffs(void) {
    char out[1 << 16];
    cr_assert_eq(ts_testenv_pg_query(tp.pg, out, sizeof(out),
                                     "SELECT task, owner FROM ts_handoffs "
                                     "ORDER BY task, next_offset"),
                 0, "%s", out);
    size_t n = 0;
    char prev_task[256] = "", seen[64][192];
    size_t n_seen = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"), n++) {
        char *bar = strchr(line, '|');
        cr_assert_not_null(bar, "%s", line);
        *bar = '\0';
        const char *owner = bar + 1;
        if (strcmp(line, prev_task) != 0) {
            snprintf(prev_task, sizeof(prev_task), "%s", line);
            n_seen = 0;
        }
        for (size_t i = 0; i < n_seen; i++)
            cr_assert_str_neq(seen[i], owner,
                              "task %s: %s applied batches again after another owner did: two "
                              "instances processed it at the same time",
                              line, owner);
        if (n_seen < 64)
            snprintf(seen[n_seen++], sizeof(seen[0]), "%s", owner);
    }
    return n;
}

Test(scaleout, kill_add_restart_instances_mid_stream) {
    size_t n = env_num("TS_SCALE_EVENTS", 200000);
    uint64_t seed = env_num("TS_MODEL_SEED", 42);
    ts_model_stream *s = ts_model_stream_generate(seed, n, TS_MODEL_ALL);
    ts_model *m = ts_model_create(tp.topo, TS_MODEL_ALL);
    cr_assert_not_null(m);
    ts_model_apply_stream(m, s);

    /* A is the pipeline's own runtime; B and C join it. */
    pid_t b = ts_testpipe_spawn(&tp, "b", NULL);
    pid_t c = ts_testpipe_spawn(&tp, "c", "scaleout-c");
    cr_assert(b > 0 && c > 0);
    size_t q = s->n / 4;

    cr_assert_eq(ts_modelrun_produce(&tp, s, 0, q), 0);
    sleep(4); /* the group settles on three members and works */
    cr_assert_eq(ts_testpipe_reap(b, SIGKILL), 128 + SIGKILL);
    fprintf(stderr, "scaleout: killed B after %zu events\n", q);

    cr_assert_eq(ts_modelrun_produce(&tp, s, q, 2 * q), 0);
    pid_t d = ts_testpipe_spawn(&tp, "d", NULL);
    cr_assert(d > 0);
    fprintf(stderr, "scaleout: D joined after %zu events\n", 2 * q);
    sleep(3);

    cr_assert_eq(ts_modelrun_produce(&tp, s, 2 * q, 3 * q), 0);
    cr_assert_eq(ts_testpipe_reap(c, SIGTERM), 0, "C stops cleanly");
    c = ts_testpipe_spawn(&tp, "c", "scaleout-c");
    cr_assert(c > 0);
    fprintf(stderr, "scaleout: C restarted after %zu events\n", 3 * q);

    cr_assert_eq(ts_modelrun_produce(&tp, s, 3 * q, s->n), 0);
    cr_assert_eq(ts_modelrun_wait(&tp, TS_MODEL_ALL, 600), 0, "see the logs in %s", tp.dir);

    char label[128];
    snprintf(label, sizeof(label), "scaleout: %zu events (seed %llu) over 3-4 instances", s->n,
             (unsigned long long)seed);
    size_t diffs = ts_modelrun_compare(&tp, m, TS_MODEL_ALL, label);
    size_t handoffs = check_handoffs();
    fprintf(stderr, "scaleout: %zu partition hand-overs, none overlapping\n", handoffs);
    /* Every hand-over continued the partition's changelog from its newest
     * batch: no instance resumed from an older snapshot of its own. */
    for (size_t i = 0; i < tp.topo->n_processors; i++) {
        char why[512] = "";
        cr_assert_eq(ts_testpipe_changelog_is_one_history(&tp, tp.topo->processors[i].name, why,
                                                          sizeof(why)),
                     0, "%s (see the logs in %s)", why, tp.dir);
    }
    cr_assert_eq(ts_testpipe_reap(c, SIGTERM), 0);
    cr_assert_eq(ts_testpipe_reap(d, SIGTERM), 0);
    ts_model_destroy(m);
    ts_model_stream_destroy(s);
    cr_assert_eq(diffs, 0, "%zu differences with the model (first ones above)", diffs);
    cr_assert_gt(handoffs, 0);
}
