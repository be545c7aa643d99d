/* cmd_status.c - `tastesync status [topology.yaml]`: every running instance
 * of the topology's group, its partitions, their state (running/restoring),
 * lag, last commit and view freshness.
 *
 * Each instance publishes its status document every second to Redis as
 * ts:status:<group>:<instance>, expiring after a few seconds, so what this
 * prints is live and a stopped instance disappears by itself. */
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "ts_redis_url.h"

static int64_t ts_status_now_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* "1.2 s ago" for a wall-clock time in ms, or "-" when unknown. */
static const char *ts_status_age(const json_t *ms, int64_t now, char *buf, size_t cap) {
    if (!json_is_integer(ms))
        return "-";
    snprintf(buf, cap, "%.1f s ago", (double)(now - json_integer_value(ms)) / 1000.0);
    return buf;
}

static void ts_status_print(const json_t *doc, int64_t now) {
    printf("instance %s (pid %" JSON_INTEGER_FORMAT ")%s\n",
           json_string_value(json_object_get(doc, "instance")),
           json_integer_value(json_object_get(doc, "pid")),
           json_is_true(json_object_get(doc, "stopping")) ? " stopping" : "");
    printf("  %-22s %-10s %10s %8s %16s %16s\n", "partition", "state", "position", "lag",
           "last commit", "newest event");
    size_t i;
    const json_t *t;
    json_array_foreach(json_object_get(doc, "tasks"), i, t) {
        const char *state = json_string_value(json_object_get(t, "state"));
        char pos[32] = "-", lag[32] = "-", commit[32], event[32];
        if (strcmp(state, "restoring") == 0) {
            snprintf(pos, sizeof(pos), "%" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT,
                     json_integer_value(json_object_get(t, "restored")),
                     json_integer_value(json_object_get(t, "toRestore")));
        } else {
            if (json_integer_value(json_object_get(t, "acked")) >= 0)
                snprintf(pos, sizeof(pos), "%" JSON_INTEGER_FORMAT,
                         json_integer_value(json_object_get(t, "acked")));
            if (json_is_integer(json_object_get(t, "lag")))
                snprintf(lag, sizeof(lag), "%" JSON_INTEGER_FORMAT,
                         json_integer_value(json_object_get(t, "lag")));
        }
        printf("  %-22s %-10s %10s %8s %16s %16s\n",
               json_string_value(json_object_get(t, "task")), state, pos, lag,
               ts_status_age(json_object_get(t, "lastCommitAt"), now, commit, sizeof(commit)),
               ts_status_age(json_object_get(t, "newestEventAt"), now, event, sizeof(event)));
    }
}

static int ts_status_key_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int ts_cli_status(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: tastesync status [topology.yaml]\n\n"
               "Shows every running instance of the topology's group: its partitions,\n"
               "their state (running, restoring with progress), acknowledged position,\n"
               "lag, last commit and the age of the newest applied event. Reads the\n"
               "status the instances publish to Redis every second. Exit 1 when no\n"
               "instance is running.\n");
        return TS_CLI_EXIT_OK;
    }
    ts_topology *topo = ts_cli_load_topology(argc > 1 ? argv[1] : NULL);
    if (!topo)
        return TS_CLI_EXIT_USAGE;
    char url[4200], err[512];
    ts_cli_redis_url(topo, url, sizeof(url));
    redisContext *redis = ts_redis_connect_sync(url, err, sizeof(err));
    int rc = TS_CLI_EXIT_FAIL;
    if (!redis) {
        fprintf(stderr, "tastesync: %s\n", err);
        ts_topology_destroy(topo);
        return rc;
    }
    redisReply *keys = redisCommand(redis, "KEYS ts:status:%s:*", topo->group);
    size_t n = keys && keys->type == REDIS_REPLY_ARRAY ? keys->elements : 0;
    const char **names = calloc(n + 1, sizeof(*names));
    for (size_t i = 0; i < n; i++)
        names[i] = keys->element[i]->str;
    qsort(names, n, sizeof(*names), ts_status_key_cmp);
    int64_t now = ts_status_now_ms();
    printf("group %s: %zu running instance%s\n", topo->group, n, n == 1 ? "" : "s");
    for (size_t i = 0; i < n; i++) {
        redisReply *v = redisCommand(redis, "GET %s", names[i]);
        json_t *doc = v && v->type == REDIS_REPLY_STRING ? json_loads(v->str, 0, NULL) : NULL;
        if (doc)
            ts_status_print(doc, now);
        json_decref(doc);
        freeReplyObject(v);
    }
    rc = n > 0 ? TS_CLI_EXIT_OK : TS_CLI_EXIT_FAIL;
    free(names);
    freeReplyObject(keys);
    redisFree(redis);
    ts_topology_destroy(topo);
    return rc;
}
