/* cmd_run.c - `tastesync run [topology.yaml]`: the long-running pipeline. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ts_log.h"
#include "ts_runtime.h"

int ts_cli_run(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: tastesync run [topology.yaml]\n\n"
               "Runs the processors of the topology until SIGINT or SIGTERM, then finishes\n"
               "the batches in flight, commits and exits 0. With no Kafka, Redis or\n"
               "PostgreSQL address configured it starts them embedded (see README).\n");
        return TS_CLI_EXIT_OK;
    }
    ts_topology *topo = ts_cli_load_topology(argc > 1 ? argv[1] : NULL);
    if (!topo)
        return TS_CLI_EXIT_USAGE;
    ts_runtime *rt = NULL;
    char err[1024];
    ts_err rc = ts_runtime_create(topo, ts_processor_registry, &rt, err, sizeof(err));
    if (rc != TS_OK) {
        fprintf(stderr, "tastesync: %s\n", err);
        ts_topology_destroy(topo);
        return rc == TS_E_CONFIG ? TS_CLI_EXIT_USAGE : TS_CLI_EXIT_FAIL;
    }
    /* Where the client commands (produce, dlq) find this Kafka when nothing
     * else names it: the embedded cluster's port is only known now. */
    char brokers_path[4200];
    snprintf(brokers_path, sizeof(brokers_path), "%s/%s", topo->state_dir, TS_CLI_BROKERS_FILE);
    FILE *bf = fopen(brokers_path, "w");
    if (!bf || fprintf(bf, "%s\n", ts_runtime_brokers(rt)) < 0)
        ts_log_warn("runtime", "cannot write %s; clients need --brokers", brokers_path);
    if (bf)
        fclose(bf);
    ts_log_info("runtime", "running; Ctrl-C to stop");
    rc = ts_runtime_run(rt);
    if (bf)
        remove(brokers_path); /* a stopped run's address would only mislead */
    ts_runtime_destroy(rt);
    ts_topology_destroy(topo);
    return rc == TS_OK ? TS_CLI_EXIT_OK : TS_CLI_EXIT_FAIL;
}
