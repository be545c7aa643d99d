/* test_cli.c - the operator and user subcommands of `tastesync`, run as a
 * user runs them (the built binary, through the shell), against a running
 * pipeline (ts_testpipe): produce, view, dlq list / redrive, check-config,
 * each on its normal path and on bad input (exit code and a message naming
 * the problem). */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include "ts_testpipe.h"

#define TOPOLOGY TS_SOURCE_DIR "/topology.yaml"

/* Runs `tastesync <args>` through the shell with stderr folded into stdout,
 * optionally feeding `input` on stdin. @returns the exit code; output in out. */
static int cli(char *out, size_t cap, const char *input, const char *fmt, ...) {
    char args[4096], cmd[8192], in_path[64] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    if (input) {
        snprintf(in_path, sizeof(in_path), "/tmp/ts-cli-in-XXXXXX");
        int fd = mkstemp(in_path);
        cr_assert(fd >= 0);
        cr_assert_eq(write(fd, input, strlen(input)), (ssize_t)strlen(input));
        close(fd);
    }
    snprintf(cmd, sizeof(cmd), "%s %s 2>&1 < %s", TS_BINARY, args, input ? in_path : "/dev/null");
    FILE *p = popen(cmd, "r");
    cr_assert(p != NULL);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    if (input)
        unlink(in_path);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* ---- without servers -------------------------------------------------------- */

Test(cli_offline, every_subcommand_has_help_and_usage_errors_exit_2) {
    static const char *const cmds[] = {"produce", "view", "dlq", "check-config", "run", "views"};
    char out[8192];
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        cr_assert_eq(cli(out, sizeof(out), NULL, "%s --help", cmds[i]), 0, "%s", cmds[i]);
        cr_assert(strstr(out, "usage: tastesync") != NULL, "%s: %s", cmds[i], out);
    }
    cr_assert_eq(cli(out, sizeof(out), NULL, "nosuch"), 2);
    cr_assert(strstr(out, "unknown command 'nosuch'"), "%s", out);
    cr_assert_eq(cli(out, sizeof(out), NULL, "produce"), 2, "%s", out);
    cr_assert_eq(cli(out, sizeof(out), NULL, "view"), 2, "%s", out);
    cr_assert_eq(cli(out, sizeof(out), NULL, "dlq frobnicate x"), 2, "%s", out);
    cr_assert_eq(cli(out, sizeof(out), NULL, "dlq list storybook.events --limit x -c %s", TOPOLOGY),
                 2);
    cr_assert(strstr(out, "--limit wants a number"), "%s", out);
}

Test(cli_offline, check_config_accepts_the_repository_topology) {
    char out[4096];
    cr_assert_eq(cli(out, sizeof(out), NULL, "check-config %s", TOPOLOGY), 0, "%s", out);
    cr_assert(strncmp(out, "OK ", 3) == 0, "%s", out);
    cr_assert(strstr(out, "6 processors"), "%s", out);
    /* The deployment files' topology too (deploy/README.md). */
    cr_assert_eq(cli(out, sizeof(out), NULL, "check-config %s/deploy/topology.yaml", TS_SOURCE_DIR),
                 0, "%s", out);
}

/* Writes the repository topology with `from` replaced by `to` (and every
 * relative path made absolute) to a temp file; @returns its path (free). */
static char *topology_variant(const char *from, const char *to) {
    FILE *in = fopen(TOPOLOGY, "r");
    cr_assert(in);
    static char text[65536];
    size_t n = fread(text, 1, sizeof(text) - 1, in);
    text[n] = '\0';
    fclose(in);
    char *path = strdup("/tmp/ts-cli-topo-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    FILE *outf = fdopen(fd, "w");
    for (const char *p = text; *p;) {
        if (strncmp(p, from, strlen(from)) == 0) {
            fputs(to, outf);
            p += strlen(from);
        } else if (strncmp(p, " processors/", 12) == 0 || strncmp(p, " schemas/", 9) == 0) {
            fprintf(outf, " %s/", TS_SOURCE_DIR);
            p++;
        } else {
            fputc(*p++, outf);
        }
    }
    fclose(outf);
    return path;
}

Test(cli_offline, check_config_names_an_unknown_processor_with_its_line) {
    char *path = topology_variant("- name: storybook\n", "- name: storybok\n");
    char out[4096];
    cr_assert_eq(cli(out, sizeof(out), NULL, "check-config %s", path), 2, "%s", out);
    char want[512];
    snprintf(want, sizeof(want), "%s:", path);
    cr_assert(strstr(out, want) && strstr(out, "no built-in processor 'storybok'"), "%s", out);
    unlink(path);
    free(path);
}

Test(cli_offline, check_config_names_params_a_processor_refuses) {
    char *path = topology_variant("{presence_ttl: 600}", "{presence_ttl: 600, bogus: 1}");
    char out[4096];
    cr_assert_eq(cli(out, sizeof(out), NULL, "check-config %s", path), 2, "%s", out);
    cr_assert(strstr(out, "processor store: params:") && strstr(out, "'bogus'"), "%s", out);
    unlink(path);
    free(path);
    path = topology_variant("schema: storybook.events}", "schema: storybook.nope}");
    cr_assert_eq(cli(out, sizeof(out), NULL, "check-config %s", path), 2, "%s", out);
    cr_assert(strstr(out, "storybook.nope"), "%s", out);
    unlink(path);
    free(path);
}

/* ---- against a running pipeline ---------------------------------------------- */

static ts_testpipe tp;
static char state_dir[256];

static void setup(void) {
    cr_assert_eq(ts_testpipe_start(&tp), 0, "pipeline did not start");
    /* The same addresses the runtime got, as an operator would export them. */
    snprintf(state_dir, sizeof(state_dir), "%s/state", tp.dir);
    setenv("TASTESYNC_KAFKA_BROKERS", ts_cluster_bootstraps(tp.cluster), 1);
    setenv("TASTESYNC_REDIS_URL", tp.redis.url, 1);
    setenv("TASTESYNC_STATE_DIR", state_dir, 1);
}

static void teardown(void) { ts_testpipe_stop(&tp); }

TestSuite(cli, .init = setup, .fini = teardown, .timeout = 180);

#define BOOK(id, user, title)                                                                  \
    "{\"BookCreated\": {\"event_id\": \"c-" id "\", \"book_id\": \"" id "\", \"user_id\": \"" user \
    "\", \"title\": " title ", \"created_at\": \"2026-01-10T09:00:00Z\"}}"

Test(cli, produce_then_view_a_json_view) {
    char out[8192];
    cr_assert_eq(cli(out, sizeof(out), NULL, "produce storybook.events '%s' -c %s",
                     BOOK("b-fox", "u-ana", "\"The Fox\""), TOPOLOGY),
                 0, "%s", out);
    cr_assert(strstr(out, "produced 1 event to storybook.events ["), "%s", out);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, "storybook.events", 30), 0, "see %s", tp.log);

    cr_assert_eq(cli(out, sizeof(out), NULL, "view storybook:book:b-fox -c %s", TOPOLOGY), 0,
                 "%s", out);
    cr_assert(strstr(out, "\n  \"title\": \"The Fox\""), "pretty JSON: %s", out);
    cr_assert(strstr(out, "\"userId\": \"u-ana\""), "%s", out);
    cr_assert_eq(cli(out, sizeof(out), NULL, "view storybook:book:nope -c %s", TOPOLOGY), 1);
    cr_assert(strstr(out, "no view at key 'storybook:book:nope'"), "%s", out);
}

Test(cli, produce_names_the_bad_field_and_sends_nothing) {
    char out[4096];
    cr_assert_eq(cli(out, sizeof(out), NULL, "produce storybook.events '%s' -c %s",
                     BOOK("b-bad", "u-ana", "42"), TOPOLOGY),
                 2, "%s", out);
    cr_assert(strstr(out, "field 'title'"), "%s", out);
    cr_assert_eq(cli(out, sizeof(out), NULL, "produce storybook.events '{\"BookCreated\": {' -c %s",
                     TOPOLOGY),
                 2, "%s", out);
    cr_assert(strstr(out, "not JSON"), "%s", out);
    cr_assert_eq(cli(out, sizeof(out), NULL, "produce no.such.topic '{}' -c %s", TOPOLOGY), 2);
    cr_assert(strstr(out, "'no.such.topic' is not declared"), "%s", out);
    size_t n = 0;
    rd_kafka_message_t **msgs = ts_testpipe_read_topic(&tp, "storybook.events", &n);
    ts_testpipe_records_free(msgs, n);
    cr_assert_eq(n, 0, "nothing produced");
}

Test(cli, produce_from_stdin_stops_at_the_bad_line) {
    char out[4096];
    const char *lines = "# two books, then a broken event\n" BOOK("b-1", "u-bo", "\"One\"") "\n\n"
        BOOK("b-2", "u-bo", "\"Two\"") "\n{\"BookCreated\": {\"event_id\": \"x\"}}\n"
        BOOK("b-3", "u-bo", "\"Three\"") "\n";
    cr_assert_eq(cli(out, sizeof(out), lines, "produce storybook.events - -c %s", TOPOLOGY), 2,
                 "%s", out);
    cr_assert(strstr(out, "stdin:5: "), "%s", out);
    cr_assert(strstr(out, "produced 2 events to storybook.events"), "%s", out);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, "storybook.events", 30), 0, "see %s", tp.log);
    cr_assert_eq(cli(out, sizeof(out), NULL, "view storybook:books:u-bo -c %s", TOPOLOGY), 0);
    cr_assert(strstr(out, "\"One\"") && strstr(out, "\"Two\"") && !strstr(out, "\"Three\""), "%s",
              out);
}

Test(cli, produce_finds_the_brokers_that_run_wrote) {
    char out[4096], path[512];
    snprintf(path, sizeof(path), "%s/kafka.brokers", state_dir);
    for (int i = 0; i < (int)(ts_testenv_timeout(10) * 10) && access(path, R_OK) != 0; i++)
        usleep(100000);
    cr_assert_eq(access(path, R_OK), 0, "tastesync run wrote %s", path);
    unsetenv("TASTESYNC_KAFKA_BROKERS");
    int rc = cli(out, sizeof(out), NULL, "produce storybook.events '%s' -c %s",
                 BOOK("b-file", "u-cy", "\"Via file\""), TOPOLOGY);
    cr_assert_eq(rc, 0, "%s", out);
    /* And a clear error when nothing names a Kafka at all. */
    setenv("TASTESYNC_STATE_DIR", tp.dir, 1);
    rc = cli(out, sizeof(out), NULL, "produce storybook.events '%s' -c %s",
             BOOK("b-none", "u-cy", "\"x\""), TOPOLOGY);
    cr_assert_eq(rc, 2, "%s", out);
    cr_assert(strstr(out, "no Kafka address"), "%s", out);
}

Test(cli, view_prints_sorted_sets_as_tables_and_plain_strings_as_is) {
    char out[16384], samples[65536];
    FILE *f = fopen(TS_SOURCE_DIR "/processors/inventory/samples.jsonl", "r");
    cr_assert(f);
    samples[fread(samples, 1, sizeof(samples) - 1, f)] = '\0';
    fclose(f);
    cr_assert_eq(cli(out, sizeof(out), samples, "produce inventory.events - -c %s", TOPOLOGY), 0,
                 "%s", out);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, "inventory.events", 30), 0, "see %s", tp.log);
    cr_assert_eq(cli(out, sizeof(out), NULL, "view ranking:products:sold -c %s", TOPOLOGY), 0,
                 "%s", out);
    cr_assert(strncmp(out, "MEMBER", 6) == 0 && strstr(out, "SCORE"), "%s", out);
    cr_assert(strstr(out, "prod-kimchi-1kg"), "%s", out);
    cr_assert(strstr(out, " members)") || strstr(out, " member)"), "%s", out);
    cr_assert_eq(cli(out, sizeof(out), NULL, "view stock:prod-kimchi-1kg -c %s", TOPOLOGY), 0);
    char *end = NULL;
    long stock = strtol(out, &end, 10);
    cr_assert(end != out && *end == '\n' && stock >= 0, "plain integer: %s", out);
}

/* Records of `topic` whose header redriven.from is set. */
static size_t count_redriven(const char *topic) {
    size_t n = 0, redriven = 0;
    rd_kafka_message_t **msgs = ts_testpipe_read_topic(&tp, topic, &n);
    for (size_t i = 0; i < n; i++) {
        char *from = ts_testpipe_header(msgs[i], "redriven.from");
        if (from) {
            cr_assert(strncmp(from, "storybook.events.dlq/", 21) == 0, "%s", from);
            redriven++;
        }
        free(from);
    }
    ts_testpipe_records_free(msgs, n);
    return redriven;
}

Test(cli, dlq_list_and_redrive) {
    char out[16384];
    cr_assert_eq(cli(out, sizeof(out), NULL, "dlq list storybook.events -c %s", TOPOLOGY), 0,
                 "%s", out);
    cr_assert(strstr(out, "storybook.events.dlq: no records"), "%s", out);

    cr_assert_eq(ts_testpipe_produce_raw(&tp, "storybook.events", "k-raw", "not avro", 8), 0);
    cr_assert_eq(ts_testpipe_produce_json(&tp, "storybook.events",
                                          "{\"BookDeleted\": {\"event_id\": \"d-1\", \"book_id\": "
                                          "\"ghost\", \"user_id\": \"u-dee\", \"deleted_at\": 5}}"),
                 0);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, "storybook.events", 30), 0, "see %s", tp.log);

    cr_assert_eq(cli(out, sizeof(out), NULL, "dlq list storybook.events -c %s", TOPOLOGY), 0,
                 "%s", out);
    cr_assert(strncmp(out, "PARTITION", 9) == 0, "%s", out);
    cr_assert(strstr(out, "k-raw") && strstr(out, "bad magic byte"), "%s", out);
    cr_assert(strstr(out, "u-dee") && strstr(out, "ghost"), "%s", out);
    cr_assert(strstr(out, " storybook.events/"), "source position: %s", out);
    cr_assert_eq(cli(out, sizeof(out), NULL, "dlq list storybook.events --limit 1 -c %s",
                     TOPOLOGY),
                 0);
    cr_assert(strstr(out, "stopped at --limit 1"), "%s", out);
    cr_assert_eq(cli(out, sizeof(out), NULL, "dlq list user.profile -c %s", TOPOLOGY), 2);
    cr_assert(strstr(out, "'user.profile' is not the input topic"), "%s", out);

    /* An empty range re-drives nothing; the whole queue re-drives both. */
    cr_assert_eq(cli(out, sizeof(out), NULL, "dlq redrive storybook.events --from 99 -c %s",
                     TOPOLOGY),
                 0, "%s", out);
    cr_assert(strstr(out, "redriven 0 records"), "%s", out);
    cr_assert_eq(cli(out, sizeof(out), NULL, "dlq redrive storybook.events -c %s", TOPOLOGY), 0,
                 "%s", out);
    cr_assert(strstr(out, "redriven 2 records from storybook.events.dlq to storybook.events"),
              "%s", out);
    cr_assert_eq(count_redriven("storybook.events"), 2);

    /* The undecodable record is still undecodable: back in the DLQ, now
     * pointing at its re-driven copy. */
    cr_assert_eq(ts_testpipe_wait_committed(&tp, "storybook.events", 30), 0, "see %s", tp.log);
    cr_assert_eq(cli(out, sizeof(out), NULL, "dlq list storybook.events --limit 0 -c %s",
                     TOPOLOGY),
                 0);
    size_t raw = 0;
    for (const char *p = out; (p = strstr(p, "k-raw")); p++)
        raw++;
    cr_assert_eq(raw, 2, "%s", out);
}

Test(cli, status_shows_the_running_instance_and_its_progress) {
    char out[16384], group[64];
    /* The group is the pipeline's (the runtime got it by environment). */
    snprintf(group, sizeof(group), "test-%ld", (long)getpid());
    setenv("TASTESYNC_GROUP", group, 1);
    cr_assert_eq(cli(out, sizeof(out), NULL, "produce storybook.events '%s' -c %s",
                     BOOK("b-owl", "u-bo", "\"The Owl\""), TOPOLOGY),
                 0, "%s", out);
    cr_assert_eq(ts_testpipe_wait_committed(&tp, "storybook.events", 30), 0, "see %s", tp.log);
    /* Instances publish their status every second. */
    int rc = 1;
    for (int i = 0; i < 50 && rc != 0; i++) {
        rc = cli(out, sizeof(out), NULL, "status %s", TOPOLOGY);
        if (rc != 0 || !strstr(out, "storybook/"))
            usleep(200000);
    }
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "1 running instance"), "%s", out);
    cr_assert(strstr(out, "storybook/"), "%s", out);
    cr_assert(strstr(out, "running"), "%s", out);

    /* Once the runtime stops, its status expires and status says so. */
    cr_assert_eq(ts_testpipe_runtime_stop(&tp, SIGTERM), 0);
    sleep(6);
    cr_assert_eq(cli(out, sizeof(out), NULL, "status %s", TOPOLOGY), 1, "%s", out);
    cr_assert(strstr(out, "0 running instances"), "%s", out);
    unsetenv("TASTESYNC_GROUP");
}
