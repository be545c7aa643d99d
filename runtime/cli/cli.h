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

#endif
