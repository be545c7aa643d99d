/* ts_redis_uv.c - a hiredis async context driven by a libuv poll handle (see
 * ts_redis_uv.h). */
#include "ts_redis_uv.h"

#include <stdlib.h>

/* The poll handle of one context and the events hiredis asked for. */
typedef struct ts_redis_uv {
    redisAsyncContext *ac; /* NULL once hiredis cleaned up */
    uv_poll_t handle;
    int events; /* what hiredis wants, and the handle polls for */
} ts_redis_uv;

static void ts_redis_uv_on_poll(uv_poll_t *handle, int status, int events) {
    ts_redis_uv *p = handle->data;
    /* An error status (POLLERR: libuv has stopped the handle) means the
     * socket failed: a read makes hiredis see why and disconnect. */
    if (status != 0)
        events = UV_READABLE;
    if (p->ac && (events & UV_READABLE))
        redisAsyncHandleRead(p->ac);
    if (p->ac && (events & UV_WRITABLE))
        redisAsyncHandleWrite(p->ac);
}

/* Polls for `events` from now on. hiredis asks for writes with every command
 * it queues and for reads after every write: the handle is restarted only
 * when the set of events changes (or libuv stopped it on an error), since
 * each uv_poll_start removes the descriptor from epoll and the next loop turn
 * adds it back, two system calls per Redis command otherwise. */
static void ts_redis_uv_set(ts_redis_uv *p, int events) {
    int active = uv_is_active((uv_handle_t *)&p->handle);
    if (events == p->events && active == (events != 0))
        return;
    p->events = events;
    if (events)
        uv_poll_start(&p->handle, events, ts_redis_uv_on_poll);
    else
        uv_poll_stop(&p->handle);
}

static void ts_redis_uv_add_read(void *arg) {
    ts_redis_uv *p = arg;
    ts_redis_uv_set(p, p->events | UV_READABLE);
}

static void ts_redis_uv_del_read(void *arg) {
    ts_redis_uv *p = arg;
    ts_redis_uv_set(p, p->events & ~UV_READABLE);
}

static void ts_redis_uv_add_write(void *arg) {
    ts_redis_uv *p = arg;
    ts_redis_uv_set(p, p->events | UV_WRITABLE);
}

static void ts_redis_uv_del_write(void *arg) {
    ts_redis_uv *p = arg;
    ts_redis_uv_set(p, p->events & ~UV_WRITABLE);
}

static void ts_redis_uv_closed(uv_handle_t *handle) { free(handle->data); }

/* hiredis frees the context: the handle goes (it may be the context's last
 * reader, so it must not call into hiredis again). */
static void ts_redis_uv_cleanup(void *arg) {
    ts_redis_uv *p = arg;
    p->ac = NULL;
    uv_close((uv_handle_t *)&p->handle, ts_redis_uv_closed);
}

int ts_redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop) {
    if (ac->ev.data)
        return REDIS_ERR;
    ts_redis_uv *p = calloc(1, sizeof(*p));
    if (!p)
        return REDIS_ERR;
    if (uv_poll_init(loop, &p->handle, ac->c.fd) != 0) {
        free(p);
        return REDIS_ERR;
    }
    p->handle.data = p;
    p->ac = ac;
    ac->ev.data = p;
    ac->ev.addRead = ts_redis_uv_add_read;
    ac->ev.delRead = ts_redis_uv_del_read;
    ac->ev.addWrite = ts_redis_uv_add_write;
    ac->ev.delWrite = ts_redis_uv_del_write;
    ac->ev.cleanup = ts_redis_uv_cleanup;
    return REDIS_OK;
}
