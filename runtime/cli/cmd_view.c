/* cmd_view.c - `tastesync view <key>`: one view, readable.
 *
 * Reads the key with the command a downstream reader would use, chosen by
 * its Redis type: a string view is pretty-printed when it is JSON and printed
 * as is otherwise (e.g. a stock count); a sorted set is printed as a table of
 * member and score, highest score first (rankings and "newest first" lists
 * read the same way). Hashes, sets and lists, which no processor writes
 * today, are still printed plainly so the command works on any key.
 */
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ts_redis_url.h"

void ts_cli_redis_url(const ts_topology *topo, char *out, size_t cap) {
    if (topo->redis_url && topo->redis_url[0])
        snprintf(out, cap, "%s", topo->redis_url);
    else
        snprintf(out, cap, "unix://%s/redis/redis.sock", topo->state_dir);
}

static void ts_view_print_string(const char *text, size_t len) {
    json_t *doc = json_loadb(text, len, JSON_DECODE_ANY, NULL);
    if (!doc || !(json_is_object(doc) || json_is_array(doc))) {
        fwrite(text, 1, len, stdout);
        putchar('\n');
        json_decref(doc);
        return;
    }
    char *pretty = json_dumps(doc, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
    printf("%s\n", pretty ? pretty : "");
    free(pretty);
    json_decref(doc);
}

/* Prints member/score pairs of a WITHSCORES reply as two aligned columns. */
static void ts_view_print_zset(const redisReply *z) {
    size_t width = 6;
    for (size_t i = 0; i + 1 < z->elements; i += 2)
        if (z->element[i]->len > width)
            width = z->element[i]->len;
    if (width > 100)
        width = 100;
    printf("%-*s  %s\n", (int)width, "MEMBER", "SCORE");
    for (size_t i = 0; i + 1 < z->elements; i += 2)
        printf("%-*s  %s\n", (int)width, z->element[i]->str, z->element[i + 1]->str);
    printf("(%zu member%s)\n", z->elements / 2, z->elements == 2 ? "" : "s");
}

static void ts_view_usage(FILE *out) {
    fprintf(out,
            "usage: tastesync view <key> [-c topology.yaml]\n\n"
            "Prints the view at Redis key <key>: JSON views pretty-printed, sorted sets\n"
            "as a table (member, score; highest score first), other strings as is.\n"
            "Redis is the topology's (TASTESYNC_REDIS_URL or redis.url), else the\n"
            "embedded server of `tastesync run` in the state folder.\n\n"
            "  -c FILE   topology (default ./topology.yaml)\n\n"
            "exit codes: 0 printed, 1 no such key or Redis unreachable, 2 usage/config\n");
}

int ts_cli_view(int argc, char **argv) {
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *topo_path = NULL;
    int opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': topo_path = optarg; break;
        case 'h': ts_view_usage(stdout); return TS_CLI_EXIT_OK;
        default:
            fprintf(stderr, "tastesync view: bad option '%s'\n", argv[optind - 1]);
            ts_view_usage(stderr);
            return TS_CLI_EXIT_USAGE;
        }
    }
    if (argc - optind != 1) {
        ts_view_usage(stderr);
        return TS_CLI_EXIT_USAGE;
    }
    const char *key = argv[optind];
    ts_topology *topo = ts_cli_load_topology(topo_path);
    if (!topo)
        return TS_CLI_EXIT_USAGE;
    char url[4200], err[512];
    ts_cli_redis_url(topo, url, sizeof(url));
    ts_topology_destroy(topo);
    redisContext *redis = ts_redis_connect_sync(url, err, sizeof(err));
    if (!redis) {
        fprintf(stderr, "tastesync: %s\n", err);
        return TS_CLI_EXIT_FAIL;
    }
    int rc = TS_CLI_EXIT_OK;
    redisReply *type = redisCommand(redis, "TYPE %s", key);
    redisReply *val = NULL;
    const char *t = type && type->type == REDIS_REPLY_STATUS ? type->str : NULL;
    if (!t) {
        fprintf(stderr, "tastesync: TYPE %s failed: %s\n", key,
                type && type->str ? type->str : redis->errstr);
        rc = TS_CLI_EXIT_FAIL;
    } else if (strcmp(t, "none") == 0) {
        fprintf(stderr, "tastesync: no view at key '%s'\n", key);
        rc = TS_CLI_EXIT_FAIL;
    } else if (strcmp(t, "string") == 0) {
        val = redisCommand(redis, "GET %s", key);
        if (val && val->type == REDIS_REPLY_STRING)
            ts_view_print_string(val->str, val->len);
    } else if (strcmp(t, "zset") == 0) {
        val = redisCommand(redis, "ZREVRANGE %s 0 -1 WITHSCORES", key);
        if (val && val->type == REDIS_REPLY_ARRAY)
            ts_view_print_zset(val);
    } else if (strcmp(t, "hash") == 0) {
        val = redisCommand(redis, "HGETALL %s", key);
        if (val && val->type == REDIS_REPLY_ARRAY)
            for (size_t i = 0; i + 1 < val->elements; i += 2)
                printf("%s  %s\n", val->element[i]->str, val->element[i + 1]->str);
    } else {
        val = redisCommand(redis, strcmp(t, "list") == 0 ? "LRANGE %s 0 -1" : "SMEMBERS %s", key);
        if (val && val->type == REDIS_REPLY_ARRAY)
            for (size_t i = 0; i < val->elements; i++)
                printf("%s\n", val->element[i]->str);
    }
    if (t && strcmp(t, "none") != 0 && (!val || val->type == REDIS_REPLY_ERROR)) {
        fprintf(stderr, "tastesync: reading %s (%s) failed: %s\n", key, t,
                val && val->str ? val->str : redis->errstr);
        rc = TS_CLI_EXIT_FAIL;
    }
    freeReplyObject(val);
    freeReplyObject(type);
    redisFree(redis);
    return rc;
}
