/* cli.h - the tastesync command line: one file per subcommand.
 *
 * Exit codes (all subcommands): 0 success, 1 runtime failure, 2 usage or
 * configuration error.
 */
#ifndef TS_CLI_H
#define TS_CLI_H

#include "ts_processor.h"
#include "ts_topology.h"

#define TS_CLI_EXIT_OK 0
#define TS_CLI_EXIT_FAIL 1
#define TS_CLI_EXIT_USAGE 2

/** Loads the topology at `path` (NULL: ./topology.yaml), printing the error. */
ts_topology *ts_cli_load_topology(const char *path);

int ts_cli_run(int argc, char **argv);
int ts_cli_demo(int argc, char **argv);
int ts_cli_views(int argc, char **argv);
int ts_cli_status(int argc, char **argv);
int ts_cli_produce(int argc, char **argv);
int ts_cli_view(int argc, char **argv);
int ts_cli_dlq(int argc, char **argv);
int ts_cli_check(int argc, char **argv);

/** Name of the file in the state folder where `run` writes the bootstrap
 * address of the Kafka it uses (the embedded cluster's is only known then). */
#define TS_CLI_BROKERS_FILE "kafka.brokers"

/** Picks the Kafka bootstrap list for a client command: `flag` (--brokers)
 * when set, else the topology's (TASTESYNC_KAFKA_BROKERS or kafka.brokers),
 * else what a running `tastesync run` wrote to <state dir>/kafka.brokers.
 * @returns 0 with the list in `out`, or -1 after printing why to stderr.
 * Defined in cmd_produce.c. */
int ts_cli_brokers(const ts_topology *topo, const char *flag, char *out, size_t cap);

/** The Redis URL of the views: the topology's (TASTESYNC_REDIS_URL or
 * redis.url), else the embedded server's socket in the state folder.
 * Defined in cmd_view.c. */
void ts_cli_redis_url(const ts_topology *topo, char *out, size_t cap);

#endif
