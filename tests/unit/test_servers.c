/* test_servers.c - ts_servers paths that need no server (starting real ones is
 * covered by the integration tests of the sinks). */
#include <criterion/criterion.h>
#include <string.h>

#include "ts_servers.h"

Test(servers, null_is_harmless) {
    ts_servers_destroy(NULL);
    ts_servers_stop_redis(NULL);
    ts_servers_stop_postgres(NULL);
    cr_assert_null(ts_servers_redis_url(NULL));
    cr_assert_null(ts_servers_pg_conninfo(NULL));
    cr_assert_eq(ts_servers_redis_pid(NULL), 0);
    cr_assert_eq(ts_servers_pg_pid(NULL), 0);
}

Test(servers, refuses_paths_too_long_for_a_socket) {
    char dir[200];
    memset(dir, 'x', sizeof dir - 1);
    dir[0] = '/';
    dir[sizeof dir - 1] = '\0';
    ts_servers *srv = NULL;
    char err[256];
    cr_assert_eq(ts_servers_start_redis(&srv, dir, err, sizeof err), TS_E_INVALID);
    cr_assert_null(srv, "a failed first start leaves nothing behind");
    cr_assert(strstr(err, "too long") != NULL, "%s", err);
    cr_assert_eq(ts_servers_start_redis(&srv, "", err, sizeof err), TS_E_INVALID);
}
