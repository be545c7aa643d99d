/* main.c - `tastesync <command>`: dispatches to the subcommands. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ts_log.h"

typedef struct ts_cli_command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} ts_cli_command;

static const ts_cli_command ts_cli_commands[] = {
    {"run", ts_cli_run, "run the pipeline until SIGINT/SIGTERM"},
    {"demo", ts_cli_demo, "run the pipeline on sample events, print the views, exit"},
    {"views", ts_cli_views, "views rebuild: write every view again from state"},
    {"status", ts_cli_status, "running instances: partitions, state, lag, freshness"},
    {"produce", ts_cli_produce, "encode JSON events (Avro, Confluent framing) and produce them"},
    {"view", ts_cli_view, "print the view stored at a Redis key"},
    {"dlq", ts_cli_dlq, "dlq list | redrive: inspect and re-drive dead-lettered events"},
    {"check-config", ts_cli_check, "validate topology.yaml, schemas and processor params"},
};

static void ts_cli_usage(FILE *out) {
    fprintf(out, "usage: tastesync <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(ts_cli_commands) / sizeof(ts_cli_commands[0]); i++)
        fprintf(out, "  %-13s %s\n", ts_cli_commands[i].name, ts_cli_commands[i].summary);
    fprintf(out, "\n`tastesync <command> --help` for a command's options.\n"
                 "exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error\n");
}

ts_topology *ts_cli_load_topology(const char *path) {
    ts_topology *topo = NULL;
    char err[1024];
    if (ts_topology_load(path ? path : "topology.yaml", &topo, err, sizeof(err)) != TS_OK) {
        fprintf(stderr, "tastesync: %s\n", err);
        return NULL;
    }
    return topo;
}

int main(int argc, char **argv) {
    /* A write to a peer that went away (a Redis restart, an outage) must fail
     * with EPIPE and be retried, not kill the process: hiredis uses write(2). */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        ts_cli_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? TS_CLI_EXIT_USAGE : TS_CLI_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(ts_cli_commands) / sizeof(ts_cli_commands[0]); i++)
        if (strcmp(argv[1], ts_cli_commands[i].name) == 0)
            return ts_cli_commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "tastesync: unknown command '%s'\n", argv[1]);
    ts_cli_usage(stderr);
    return TS_CLI_EXIT_USAGE;
}
