/* cmd_views.c - `tastesync views rebuild [topology.yaml]`.
 *
 * Running instances keep, in the Redis hash ts:views:<group>, one field per
 * task whose views Redis holds whole, and look at it every second. Deleting
 * the hash makes every instance of the group write all its views again from
 * its state, without reprocessing input (as after a Redis restart that lost
 * the data). */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ts_redis_url.h"

int ts_cli_views(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "rebuild") != 0 || (argc > 2 && argv[2][0] == '-')) {
        FILE *out = argc > 1 && strcmp(argv[1], "--help") == 0 ? stdout : stderr;
        fprintf(out, "usage: tastesync views rebuild [topology.yaml]\n\n"
                     "Makes every running instance of the topology's group write all its\n"
                     "views to Redis again from its state (within about a second), without\n"
                     "reprocessing input. Uses the topology's Redis address (or\n"
                     "TASTESYNC_REDIS_URL; the embedded default's socket when unset).\n");
        return out == stdout ? TS_CLI_EXIT_OK : TS_CLI_EXIT_USAGE;
    }
    ts_topology *topo = ts_cli_load_topology(argc > 2 ? argv[2] : NULL);
    if (!topo)
        return TS_CLI_EXIT_USAGE;
    char url[4200];
    ts_cli_redis_url(topo, url, sizeof(url));
    char err[512];
    int rc = TS_CLI_EXIT_FAIL;
    redisContext *redis = ts_redis_connect_sync(url, err, sizeof(err));
    if (!redis) {
        fprintf(stderr, "tastesync: %s\n", err);
    } else {
        redisReply *reply = redisCommand(redis, "DEL ts:views:%s", topo->group);
        if (reply && reply->type == REDIS_REPLY_INTEGER) {
            printf("views of group %s will be rebuilt by its running instances\n", topo->group);
            rc = TS_CLI_EXIT_OK;
        } else {
            fprintf(stderr, "tastesync: DEL failed: %s\n",
                    reply && reply->str ? reply->str : redis->errstr);
        }
        freeReplyObject(reply);
        redisFree(redis);
    }
    ts_topology_destroy(topo);
    return rc;
}
