/* test_model_stream.c - a long mixed stream of all four families through the
 * whole pipeline gives exactly the views, rows, output events and DLQ records
 * of an independent model of the contract (tests/support/ts_model.h).
 *
 * Size and seed come from env TS_MODEL_EVENTS (default 100000) and
 * TS_MODEL_SEED (default 42); TS_MODEL_FAMILIES (bit set: 1 storybook, 2 user,
 * 4 inventory, 8 beacon; default 15) narrows it while a family is worked on. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ts_model.h"
#include "ts_modelrun.h"
#include "ts_testpipe.h"

static ts_testpipe tp;

static void setup(void) { cr_assert_eq(ts_testpipe_start(&tp), 0, "pipeline did not start"); }

static void teardown(void) {
    if (tp.pid > 0)
        ts_testpipe_runtime_stop(&tp, SIGKILL);
    ts_testpipe_stop(&tp);
}

TestSuite(model_stream, .init = setup, .fini = teardown, .timeout = 1200);

static unsigned long env_num(const char *name, unsigned long def) {
    const char *v = getenv(name);
    return v && *v ? strtoul(v, NULL, 0) : def;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads `topic` back and decodes it with `subject` into topics[topic]. */
Test(model_stream, mixed_stream_matches_the_model) {
    size_t n = env_num("TS_MODEL_EVENTS", 100000);
    uint64_t seed = env_num("TS_MODEL_SEED", 42);
    unsigned families = (unsigned)env_num("TS_MODEL_FAMILIES", TS_MODEL_ALL);
    double t0 = now_s();

    ts_model_stream *s = ts_model_stream_generate(seed, n, families);
    ts_model *m = ts_model_create(tp.topo, families);
    cr_assert_not_null(m);
    ts_model_apply_stream(m, s);

    cr_assert_eq(ts_modelrun_produce(&tp, s, 0, s->n), 0, "produce");
    double t1 = now_s();
    cr_assert_eq(ts_modelrun_wait(&tp, families, 240), 0, "see %s", tp.log);
    double t2 = now_s();

    char label[256];
    snprintf(label, sizeof(label), "model stream: %zu events (seed %llu, families 0x%x)", s->n,
             (unsigned long long)seed, families);
    size_t diffs = ts_modelrun_compare(&tp, m, families, label);
    fprintf(stderr, "model stream: produce %.1f s, process %.1f s, compare %.1f s\n", t1 - t0,
            t2 - t1, now_s() - t2);
    if (getenv("TS_MODEL_DUMP")) {
        FILE *f = fopen(getenv("TS_MODEL_DUMP"), "w");
        if (f) {
            json_dumpf(ts_model_expected(m), f, JSON_INDENT(1) | JSON_SORT_KEYS);
            fclose(f);
        }
    }
    ts_model_destroy(m);
    ts_model_stream_destroy(s);
    cr_assert_eq(diffs, 0, "%zu differences with the model (first ones above)", diffs);
}
