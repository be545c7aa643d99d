/* ts_renders.c - a batch's view renders: a hash by (function, id) whose
 * insertion order is the order first asked for, plus the list of entries the
 * current event touched, so that a rejected event can be undone without a
 * walk over the whole batch. */
#include "ts_renders.h"

#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "ts_buf.h"

typedef struct ts_render {
    char *key; /* the function pointer's bytes, then the id with its NUL */
    size_t klen;
    ts_ctx_render_fn fn;
    const char *id; /* inside key */
    int64_t version;
    int64_t version_before; /* before the current event asked */
    int kept;               /* asked for by an event that ended well */
    int touched;            /* in the current event's list */
    UT_hash_handle hh;
} ts_render;

struct ts_renders {
    ts_render *all;
    ts_render **touched; /* by the current event */
    size_t n_touched, touched_cap;
    ts_buf key; /* scratch: the key being looked up */
};

ts_renders *ts_renders_create(void) { return calloc(1, sizeof(ts_renders)); }

static void ts_renders_forget(ts_renders *rs, ts_render *r) {
    HASH_DEL(rs->all, r);
    free(r->key);
    free(r);
}

void ts_renders_clear(ts_renders *rs) {
    ts_render *r, *tmp;
    HASH_ITER(hh, rs->all, r, tmp) { ts_renders_forget(rs, r); }
    rs->n_touched = 0;
}

void ts_renders_destroy(ts_renders *rs) {
    if (!rs)
        return;
    ts_renders_clear(rs);
    free(rs->touched);
    ts_buf_close(&rs->key);
    free(rs);
}

ts_err ts_renders_add(ts_renders *rs, ts_ctx_render_fn fn, const char *id, int64_t version) {
    ts_buf_reset(&rs->key);
    ts_buf_put(&rs->key, &fn, sizeof(fn));
    ts_buf_put(&rs->key, id, strlen(id) + 1);
    if (rs->key.failed)
        return TS_E_NOMEM;
    size_t klen = rs->key.len;
    ts_render *r = NULL;
    HASH_FIND(hh, rs->all, rs->key.data, klen, r);
    if (!r) {
        r = calloc(1, sizeof(*r));
        char *key = malloc(klen);
        if (!r || !key) {
            free(r);
            free(key);
            return TS_E_NOMEM;
        }
        memcpy(key, rs->key.data, klen);
        r->key = key;
        r->klen = klen;
        r->fn = fn;
        r->id = key + sizeof(fn);
        HASH_ADD_KEYPTR(hh, rs->all, r->key, r->klen, r);
    }
    if (!r->touched) {
        if (rs->n_touched == rs->touched_cap) {
            size_t cap = rs->touched_cap ? rs->touched_cap * 2 : 16;
            ts_render **grown = realloc(rs->touched, cap * sizeof(*grown));
            if (!grown) {
                if (!r->kept)
                    ts_renders_forget(rs, r);
                return TS_E_NOMEM;
            }
            rs->touched = grown;
            rs->touched_cap = cap;
        }
        rs->touched[rs->n_touched++] = r;
        r->touched = 1;
        r->version_before = r->version;
    }
    r->version = version;
    return TS_OK;
}

void ts_renders_event_end(ts_renders *rs, int failed) {
    for (size_t i = 0; i < rs->n_touched; i++) {
        ts_render *r = rs->touched[i];
        r->touched = 0;
        if (!failed)
            r->kept = 1;
        else if (r->kept)
            r->version = r->version_before;
        else
            ts_renders_forget(rs, r);
    }
    rs->n_touched = 0;
}

size_t ts_renders_count(const ts_renders *rs) { return HASH_COUNT(rs->all); }

ts_err ts_renders_run(ts_renders *rs,
                      ts_err (*each)(void *arg, ts_ctx_render_fn fn, const char *id,
                                     int64_t version),
                      void *arg) {
    ts_err err = TS_OK;
    for (ts_render *r = rs->all; r && err == TS_OK; r = r->hh.next)
        err = each(arg, r->fn, r->id, r->version);
    ts_renders_clear(rs);
    return err;
}
