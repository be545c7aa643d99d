/* ts_mirror.c - the view mirror (see ts_mirror.h).
 *
 * Keys: tag ('V' or 'W'), the task id and its NUL, the view's key, and for a
 * sorted set's member a NUL and the member. A member's value is its score,
 * the bytes of a double.
 */
#include "ts_mirror.h"

#include <stdlib.h>
#include <string.h>

void ts_mirror_init(ts_mirror *m, ts_state *state, const char *task_id, ts_mirror_write_fn write,
                    void *arg) {
    *m = (ts_mirror){.state = state, .task_id = task_id, .write = write, .arg = arg};
}

void ts_mirror_close(ts_mirror *m) {
    free(m->keybuf);
    m->keybuf = NULL;
    m->keycap = 0;
}

/* The mirror key of `view` (and `member`, unless NULL) in the mirror's
 * scratch buffer, valid until the next call. @returns NULL when out of memory. */
static char *ts_mirror_key(ts_mirror *m, char tag, const ts_bytes *view, const ts_bytes *member,
                           size_t *len) {
    size_t idlen = strlen(m->task_id);
    size_t need = 1 + idlen + 1 + view->len + (member ? 1 + member->len : 0);
    if (need > m->keycap) {
        char *grown = realloc(m->keybuf, need);
        if (!grown)
            return NULL;
        m->keybuf = grown;
        m->keycap = need;
    }
    char *p = m->keybuf;
    *p++ = tag;
    memcpy(p, m->task_id, idlen);
    p += idlen;
    *p++ = '\0';
    memcpy(p, view->data, view->len);
    p += view->len;
    if (member) {
        *p++ = '\0';
        memcpy(p, member->data, member->len);
        p += member->len;
    }
    *len = (size_t)(p - m->keybuf);
    return m->keybuf;
}

/* The keys a scan found to delete: collected first, as the scan must not see
 * its own deletes. */
typedef struct ts_mirror_doomed {
    char **keys;
    size_t *lens;
    size_t n, cap;
    int below; /* only members with a score below `min` */
    double min;
    int failed;
} ts_mirror_doomed;

static int ts_mirror_collect(void *arg, const char *key, size_t klen, const char *val,
                             size_t vlen) {
    ts_mirror_doomed *d = arg;
    double score;
    if (d->below) {
        if (vlen != sizeof(score))
            return 0;
        memcpy(&score, val, sizeof(score));
        if (!(score < d->min))
            return 0;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        char **keys = realloc(d->keys, cap * sizeof(*keys));
        if (keys)
            d->keys = keys;
        size_t *lens = keys ? realloc(d->lens, cap * sizeof(*lens)) : NULL;
        if (!lens)
            return d->failed = 1;
        d->lens = lens;
        d->cap = cap;
    }
    if (!(d->keys[d->n] = malloc(klen)))
        return d->failed = 1;
    memcpy(d->keys[d->n], key, klen);
    d->lens[d->n++] = klen;
    return 0;
}

/* Deletes the mirrored members of sorted set `view` (those below `min` when
 * `below`), seeing the batch's own earlier writes. */
static ts_err ts_mirror_drop(ts_mirror *m, ts_state_batch *wb, const ts_bytes *view, int below,
                             double min) {
    size_t plen;
    ts_bytes none = {"", 0};
    const char *prefix = ts_mirror_key(m, 'W', view, &none, &plen);
    char *copy = prefix ? malloc(plen) : NULL; /* the scratch is reused by the writes */
    if (!copy)
        return TS_E_NOMEM;
    memcpy(copy, prefix, plen);
    ts_mirror_doomed d = {.below = below, .min = min};
    ts_err rc = ts_state_batch_scan(m->state, wb, copy, plen, ts_mirror_collect, &d);
    if (rc == TS_OK && d.failed)
        rc = TS_E_NOMEM;
    for (size_t i = 0; i < d.n; i++) {
        if (rc == TS_OK)
            m->write(m->arg, wb, d.keys[i], d.lens[i], NULL, 0);
        free(d.keys[i]);
    }
    free(d.keys);
    free(d.lens);
    free(copy);
    return rc;
}

ts_err ts_mirror_apply(ts_mirror *m, ts_state_batch *wb, const ts_effect *e) {
    const ts_effect eff = *e; /* the write function may move the list `e` is in */
    double score = eff.num;
    size_t len;
    char *key;
    switch (eff.kind) {
    case TS_EFF_VIEW_SET:
        if (!(key = ts_mirror_key(m, 'V', &eff.a, NULL, &len)))
            return TS_E_NOMEM;
        m->write(m->arg, wb, key, len, eff.b.data, eff.b.len);
        return TS_OK;
    case TS_EFF_VIEW_DEL:
        if (!(key = ts_mirror_key(m, 'V', &eff.a, NULL, &len)))
            return TS_E_NOMEM;
        m->write(m->arg, wb, key, len, NULL, 0);
        return ts_mirror_drop(m, wb, &eff.a, 0, 0);
    case TS_EFF_ZADD:
        if (!(key = ts_mirror_key(m, 'W', &eff.a, &eff.b, &len)))
            return TS_E_NOMEM;
        m->write(m->arg, wb, key, len, (const char *)&score, sizeof(score));
        return TS_OK;
    case TS_EFF_ZREM:
        if (!(key = ts_mirror_key(m, 'W', &eff.a, &eff.b, &len)))
            return TS_E_NOMEM;
        m->write(m->arg, wb, key, len, NULL, 0);
        return TS_OK;
    case TS_EFF_ZREM_BELOW:
        return ts_mirror_drop(m, wb, &eff.a, 1, eff.num);
    default:
        return TS_OK;
    }
}

/* ---- reading it back ------------------------------------------------------ */

typedef struct ts_mirror_reading {
    size_t skip; /* the tag, the task id and its NUL */
    ts_effects *out;
    int failed;
} ts_mirror_reading;

static int ts_mirror_read_view(void *arg, const char *key, size_t klen, const char *val,
                               size_t vlen) {
    ts_mirror_reading *r = arg;
    ts_bytes view = {(char *)key + r->skip, klen - r->skip}, value = {(char *)val, vlen};
    if (ts_effects_add(r->out, TS_EFF_VIEW_SET, &view, &value, NULL, NULL, 0) != TS_OK)
        return r->failed = 1;
    return 0;
}

static int ts_mirror_read_member(void *arg, const char *key, size_t klen, const char *val,
                                 size_t vlen) {
    ts_mirror_reading *r = arg;
    const char *view = key + r->skip, *sep = memchr(view, '\0', klen - r->skip);
    double score;
    if (!sep || vlen != sizeof(score))
        return 0; /* not a member key: leave it */
    memcpy(&score, val, sizeof(score));
    ts_bytes bview = {(char *)view, (size_t)(sep - view)};
    ts_bytes member = {(char *)sep + 1, klen - r->skip - bview.len - 1};
    if (ts_effects_add(r->out, TS_EFF_ZADD, &bview, &member, NULL, NULL, score) != TS_OK)
        return r->failed = 1;
    return 0;
}

ts_err ts_mirror_read(ts_state *state, const char *task_id, ts_effects *out) {
    size_t idlen = strlen(task_id);
    char *prefix = malloc(idlen + 2);
    if (!prefix)
        return TS_E_NOMEM;
    memcpy(prefix + 1, task_id, idlen + 1); /* with its NUL */
    ts_mirror_reading r = {.skip = idlen + 2, .out = out};
    prefix[0] = 'V';
    ts_err rc = ts_state_scan(state, prefix, idlen + 2, ts_mirror_read_view, &r);
    prefix[0] = 'W';
    if (rc == TS_OK && !r.failed)
        rc = ts_state_scan(state, prefix, idlen + 2, ts_mirror_read_member, &r);
    free(prefix);
    return rc == TS_OK && r.failed ? TS_E_NOMEM : rc;
}
