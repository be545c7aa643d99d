/* ts_redis_uv.h - a hiredis async context driven by a libuv poll handle.
 *
 * hiredis ships this binding (adapters/libuv.h), but the version in Debian 12
 * (0.14.1) drops poll errors: libuv reports POLLERR by stopping the poll
 * handle and calling back with an error status, which that adapter ignores,
 * so hiredis never reads the error and the context stays "connected" with no
 * events at all. A Redis killed while our commands sat unread in its socket
 * (ECONNRESET, hence POLLERR) stalled the sink for good (test_chaos). This
 * binding does what hiredis 1.x does: on an error status it lets hiredis read,
 * which surfaces the error and runs the disconnect callback.
 *
 * Threading: loop thread only.
 */
#ifndef TS_REDIS_UV_H
#define TS_REDIS_UV_H

#include <hiredis/async.h>
#include <uv.h>

/** Attaches `ac` to `loop` (once per context). @returns REDIS_OK or REDIS_ERR. */
int ts_redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop);

#endif
