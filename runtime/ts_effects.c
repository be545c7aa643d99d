/* ts_effects.c - an ordered, coalescing list of effects (see ts_effects.h).
 *
 * Effects live in a growable array in declaration order. A hash (uthash) maps
 * each effect's target ("v|key", "z|key|member", "r|table|keyvalues") to the
 * newest effect on it; adding another effect on the same target marks the old
 * one dead and remembers it, so rolling back a rejected event's effects can
 * revive exactly what they superseded.
 *
 * The byte strings and targets live in an arena of 64 KiB chunks that is
 * reset with the list, so a batch costs a few mallocs instead of five per
 * effect. A rolled-back effect's bytes stay in the arena until the clear:
 * the batch bounds them.
 */
#include "ts_effects.h"

#include <stdlib.h>
#include <string.h>
#include <uthash.h>

typedef struct ts_effects_target {
    char *key; /* the target, NUL-free bytes joined by '\x1f' */
    size_t key_len;
    size_t newest; /* index of the newest effect on this target */
    UT_hash_handle hh;
} ts_effects_target;

typedef struct ts_effects_slot {
    ts_effect eff;
    ts_effects_target *target; /* NULL for effects that never coalesce */
    long superseded;           /* index this effect made dead, or -1 */
} ts_effects_slot;

#define TS_ARENA_CHUNK (64 * 1024)

typedef struct ts_arena_chunk {
    struct ts_arena_chunk *next;
    size_t used, cap;
    char data[];
} ts_arena_chunk;

struct ts_effects {
    ts_effects_slot *slots;
    size_t count, cap;
    size_t bytes; /* payload bytes of every effect, dead ones included */
    ts_effects_target *targets;
    ts_arena_chunk *chunks; /* the first one is the one being filled */
};

/* `n` bytes from the arena, 8-aligned. Large requests get a chunk of their
 * own, put behind the one being filled so its space is not wasted. */
static void *ts_arena_alloc(ts_effects *effs, size_t n) {
    n = (n + 7) & ~(size_t)7;
    ts_arena_chunk *head = effs->chunks;
    if (head && head->cap - head->used >= n) {
        void *p = head->data + head->used;
        head->used += n;
        return p;
    }
    size_t cap = n > TS_ARENA_CHUNK / 4 ? n : TS_ARENA_CHUNK;
    ts_arena_chunk *c = malloc(sizeof(*c) + cap);
    if (!c)
        return NULL;
    c->cap = cap;
    c->used = n;
    if (cap != TS_ARENA_CHUNK && head) {
        c->next = head->next;
        head->next = c;
    } else {
        c->next = head;
        effs->chunks = c;
    }
    return c->data;
}

/* Empties the arena, keeping one standard chunk for the next batch. */
static void ts_arena_reset(ts_effects *effs) {
    ts_arena_chunk *keep = NULL, *c = effs->chunks;
    while (c) {
        ts_arena_chunk *next = c->next;
        if (!keep && c->cap == TS_ARENA_CHUNK) {
            keep = c;
            keep->used = 0;
            keep->next = NULL;
        } else {
            free(c);
        }
        c = next;
    }
    effs->chunks = keep;
}

ts_bytes ts_bytes_str(const char *s) {
    ts_bytes b = {(char *)s, s ? strlen(s) : 0};
    return b;
}

ts_effects *ts_effects_create(void) { return calloc(1, sizeof(ts_effects)); }

void ts_effects_clear(ts_effects *effs) {
    effs->count = 0;
    effs->bytes = 0;
    HASH_CLEAR(hh, effs->targets); /* the targets live in the arena */
    ts_arena_reset(effs);
}

void ts_effects_destroy(ts_effects *effs) {
    if (!effs)
        return;
    ts_effects_clear(effs);
    free(effs->chunks);
    free(effs->slots);
    free(effs);
}

static int ts_bytes_copy(ts_effects *effs, ts_bytes *dst, const ts_bytes *src) {
    dst->data = NULL;
    dst->len = 0;
    if (!src || !src->data)
        return 0;
    /* One spare NUL byte so string-valued fields can be used as C strings. */
    dst->data = ts_arena_alloc(effs, src->len + 1);
    if (!dst->data)
        return -1;
    memcpy(dst->data, src->data, src->len);
    dst->data[src->len] = '\0';
    dst->len = src->len;
    return 0;
}

/* Builds the coalescing target of an effect, or returns 0 for kinds that never
 * coalesce. For rows the key columns are the packed prefix of `b`, so the
 * target is the table plus the packed key columns. */
static size_t ts_effects_target_key(ts_effects *effs, const ts_effect *eff, char **out) {
    const ts_bytes *x = NULL;
    char tag;
    switch (eff->kind) {
    case TS_EFF_VIEW_SET:
    case TS_EFF_VIEW_DEL:
        tag = 'v';
        break;
    case TS_EFF_ZADD:
    case TS_EFF_ZREM:
        tag = 'z';
        x = &eff->b;
        break;
    case TS_EFF_ROW_UPSERT:
    case TS_EFF_ROW_DELETE:
        tag = 'r';
        break;
    default:
        return 0;
    }
    size_t xlen = 0;
    ts_rowcol cols[64];
    size_t ncols = 0, nkey = 0;
    if (tag == 'r') {
        if (ts_rowcols_unpack(&eff->b, cols, 64, &ncols, &nkey) != TS_OK)
            return 0;
        for (size_t i = 0; i < nkey; i++)
            xlen += cols[i].value_len + 1;
    } else if (x) {
        xlen = x->len + 1;
    }
    size_t len = 2 + eff->a.len + xlen;
    char *key = ts_arena_alloc(effs, len);
    if (!key)
        return 0;
    size_t at = 0;
    key[at++] = tag;
    key[at++] = '\x1f';
    memcpy(key + at, eff->a.data, eff->a.len);
    at += eff->a.len;
    if (tag == 'r') {
        for (size_t i = 0; i < nkey; i++) {
            key[at++] = '\x1f';
            if (cols[i].value)
                memcpy(key + at, cols[i].value, cols[i].value_len);
            at += cols[i].value_len;
        }
    } else if (x) {
        key[at++] = '\x1f';
        memcpy(key + at, x->data, x->len);
        at += x->len;
    }
    *out = key;
    return at;
}

ts_err ts_effects_add(ts_effects *effs, ts_effect_kind kind, const ts_bytes *a,
                      const ts_bytes *b, const ts_bytes *c, const ts_bytes *d, double num) {
    if (effs->count == effs->cap) {
        size_t cap = effs->cap ? effs->cap * 2 : 64;
        ts_effects_slot *slots = realloc(effs->slots, cap * sizeof(*slots));
        if (!slots)
            return TS_E_NOMEM;
        effs->slots = slots;
        effs->cap = cap;
    }
    ts_effects_slot *slot = &effs->slots[effs->count];
    memset(slot, 0, sizeof(*slot));
    slot->superseded = -1;
    slot->eff.kind = kind;
    slot->eff.num = num;
    if (ts_bytes_copy(effs, &slot->eff.a, a) || ts_bytes_copy(effs, &slot->eff.b, b) ||
        ts_bytes_copy(effs, &slot->eff.c, c) || ts_bytes_copy(effs, &slot->eff.d, d))
        return TS_E_NOMEM;

    effs->bytes += slot->eff.a.len + slot->eff.b.len + slot->eff.c.len + slot->eff.d.len;
    char *tkey = NULL;
    size_t tlen = ts_effects_target_key(effs, &slot->eff, &tkey);
    if (tlen) {
        ts_effects_target *t = NULL;
        HASH_FIND(hh, effs->targets, tkey, tlen, t);
        if (t) {
            effs->slots[t->newest].eff.dead = 1;
            slot->superseded = (long)t->newest;
        } else {
            t = ts_arena_alloc(effs, sizeof(*t));
            if (!t)
                return TS_E_NOMEM;
            t->key = tkey;
            t->key_len = tlen;
            HASH_ADD_KEYPTR(hh, effs->targets, t->key, t->key_len, t);
        }
        t->newest = effs->count;
        slot->target = t;
    }
    effs->count++;
    return TS_OK;
}

size_t ts_effects_mark(const ts_effects *effs) { return effs->count; }

void ts_effects_rollback(ts_effects *effs, size_t mark) {
    while (effs->count > mark) {
        ts_effects_slot *slot = &effs->slots[--effs->count];
        ts_effects_target *t = slot->target;
        if (t) {
            if (slot->superseded >= 0) {
                effs->slots[slot->superseded].eff.dead = 0;
                t->newest = (size_t)slot->superseded;
            } else {
                HASH_DEL(effs->targets, t);
            }
        }
        effs->bytes -= slot->eff.a.len + slot->eff.b.len + slot->eff.c.len + slot->eff.d.len;
    }
}

size_t ts_effects_bytes(const ts_effects *effs) { return effs->bytes; }

size_t ts_effects_count(const ts_effects *effs) { return effs->count; }

const ts_effect *ts_effects_at(const ts_effects *effs, size_t i) { return &effs->slots[i].eff; }

size_t ts_effects_live(const ts_effects *effs, ts_effect_kind kind) {
    size_t n = 0;
    for (size_t i = 0; i < effs->count; i++) {
        const ts_effect *e = &effs->slots[i].eff;
        if (!e->dead && (kind == 0 || e->kind == kind))
            n++;
    }
    return n;
}

/* ---- serialization ---------------------------------------------------------
 * Blob: "TSE1", then per live effect: u8 kind, f64 num (host order: the blob
 * never leaves the machine that wrote it), and four fields of u32 length
 * (0xFFFFFFFF = absent) + bytes. */

#define TS_EFFECTS_MAGIC "TSE1"
#define TS_ABSENT 0xFFFFFFFFu

typedef struct ts_wbuf {
    char *data;
    size_t len, cap;
    int failed;
} ts_wbuf;

static void ts_wbuf_put(ts_wbuf *w, const void *p, size_t n) {
    if (w->failed)
        return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + n)
            cap *= 2;
        char *data = realloc(w->data, cap);
        if (!data) {
            w->failed = 1;
            return;
        }
        w->data = data;
        w->cap = cap;
    }
    memcpy(w->data + w->len, p, n);
    w->len += n;
}

static void ts_wbuf_field(ts_wbuf *w, const ts_bytes *b) {
    uint32_t len = b->data ? (uint32_t)b->len : TS_ABSENT;
    ts_wbuf_put(w, &len, sizeof(len));
    if (b->data)
        ts_wbuf_put(w, b->data, b->len);
}

static void ts_effects_encode_into(ts_wbuf *w, const ts_effects *effs, size_t from) {
    for (size_t i = from; i < effs->count; i++) {
        const ts_effect *e = &effs->slots[i].eff;
        if (e->dead)
            continue;
        uint8_t kind = (uint8_t)e->kind;
        ts_wbuf_put(w, &kind, 1);
        ts_wbuf_put(w, &e->num, sizeof(e->num));
        ts_wbuf_field(w, &e->a);
        ts_wbuf_field(w, &e->b);
        ts_wbuf_field(w, &e->c);
        ts_wbuf_field(w, &e->d);
    }
}

ts_err ts_effects_encode(const ts_effects *effs, char **out, size_t *len) {
    ts_wbuf w = {0};
    ts_wbuf_put(&w, TS_EFFECTS_MAGIC, 4);
    ts_effects_encode_into(&w, effs, 0);
    if (w.failed) {
        free(w.data);
        return TS_E_NOMEM;
    }
    *out = w.data;
    *len = w.len;
    return TS_OK;
}

ts_err ts_effects_encode_more(const ts_effects *effs, size_t from, char **blob, size_t *len) {
    ts_wbuf w = {*blob, *len, *len, 0};
    ts_effects_encode_into(&w, effs, from);
    *blob = w.data; /* possibly moved by realloc, even when a later one failed */
    if (w.failed)
        return TS_E_NOMEM;
    *len = w.len;
    return TS_OK;
}

static int ts_rbuf_take(const char **p, const char *end, void *dst, size_t n) {
    if ((size_t)(end - *p) < n)
        return -1;
    memcpy(dst, *p, n);
    *p += n;
    return 0;
}

static int ts_rbuf_field(const char **p, const char *end, ts_bytes *b) {
    uint32_t len;
    if (ts_rbuf_take(p, end, &len, sizeof(len)))
        return -1;
    if (len == TS_ABSENT) {
        b->data = NULL;
        b->len = 0;
        return 0;
    }
    if ((size_t)(end - *p) < len)
        return -1;
    b->data = (char *)*p;
    b->len = len;
    *p += len;
    return 0;
}

ts_err ts_effects_decode(ts_effects *effs, const char *blob, size_t len) {
    const char *p = blob, *end = blob + len;
    if (len < 4 || memcmp(blob, TS_EFFECTS_MAGIC, 4) != 0)
        return TS_E_DECODE;
    p += 4;
    while (p < end) {
        uint8_t kind;
        double num;
        ts_bytes a, b, c, d;
        if (ts_rbuf_take(&p, end, &kind, 1) || ts_rbuf_take(&p, end, &num, sizeof(num)) ||
            ts_rbuf_field(&p, end, &a) || ts_rbuf_field(&p, end, &b) ||
            ts_rbuf_field(&p, end, &c) || ts_rbuf_field(&p, end, &d))
            return TS_E_DECODE;
        if (kind < TS_EFF_VIEW_SET || kind > TS_EFF_EMIT)
            return TS_E_DECODE;
        ts_err err = ts_effects_add(effs, (ts_effect_kind)kind, &a, &b, &c, &d, num);
        if (err != TS_OK)
            return err;
    }
    return TS_OK;
}

/* ---- packed rows and headers ------------------------------------------------- */

ts_err ts_rowcols_unpack(const ts_bytes *packed, ts_rowcol *cols, size_t cap, size_t *ncols,
                         size_t *nkey) {
    const char *p = packed->data, *end = packed->data + packed->len;
    uint16_t n, k;
    if (!p || ts_rbuf_take(&p, end, &n, 2) || ts_rbuf_take(&p, end, &k, 2) || k > n || n > cap)
        return TS_E_DECODE;
    for (size_t i = 0; i < n; i++) {
        uint16_t name_len;
        uint32_t value_len;
        if (ts_rbuf_take(&p, end, &name_len, 2) || (size_t)(end - p) < name_len)
            return TS_E_DECODE;
        cols[i].name = p;
        cols[i].name_len = name_len;
        p += name_len;
        if (ts_rbuf_take(&p, end, &value_len, 4))
            return TS_E_DECODE;
        if (value_len == TS_ABSENT) {
            cols[i].value = NULL;
            cols[i].value_len = 0;
            continue;
        }
        if ((size_t)(end - p) < value_len)
            return TS_E_DECODE;
        cols[i].value = p;
        cols[i].value_len = value_len;
        p += value_len;
    }
    *ncols = n;
    *nkey = k;
    return p == end ? TS_OK : TS_E_DECODE;
}

ts_bytes ts_rowcols_pack(const ts_rowcol *cols, size_t n, size_t nkey) {
    ts_wbuf w = {0};
    uint16_t count = (uint16_t)n, keys = (uint16_t)nkey;
    ts_wbuf_put(&w, &count, 2);
    ts_wbuf_put(&w, &keys, 2);
    for (size_t i = 0; i < n; i++) {
        uint16_t name_len = (uint16_t)cols[i].name_len;
        uint32_t value_len = cols[i].value ? (uint32_t)cols[i].value_len : TS_ABSENT;
        ts_wbuf_put(&w, &name_len, 2);
        ts_wbuf_put(&w, cols[i].name, name_len);
        ts_wbuf_put(&w, &value_len, 4);
        if (cols[i].value)
            ts_wbuf_put(&w, cols[i].value, cols[i].value_len);
    }
    ts_bytes b = {NULL, 0};
    if (w.failed) {
        free(w.data);
        return b;
    }
    b.data = w.data;
    b.len = w.len;
    return b;
}

/* Headers use the row layout without the key count. */
ts_err ts_headers_unpack(const ts_bytes *packed, ts_rowcol *headers, size_t cap, size_t *n) {
    const char *p = packed->data, *end = packed->data + packed->len;
    uint16_t count;
    if (!p || ts_rbuf_take(&p, end, &count, 2) || count > cap)
        return TS_E_DECODE;
    for (size_t i = 0; i < count; i++) {
        uint16_t name_len;
        uint32_t value_len;
        if (ts_rbuf_take(&p, end, &name_len, 2) || (size_t)(end - p) < name_len)
            return TS_E_DECODE;
        headers[i].name = p;
        headers[i].name_len = name_len;
        p += name_len;
        if (ts_rbuf_take(&p, end, &value_len, 4) || (size_t)(end - p) < value_len)
            return TS_E_DECODE;
        headers[i].value = p;
        headers[i].value_len = value_len;
        p += value_len;
    }
    *n = count;
    return p == end ? TS_OK : TS_E_DECODE;
}

ts_bytes ts_headers_pack(const char *const *names, const char *const *values, size_t n) {
    ts_wbuf w = {0};
    uint16_t count = (uint16_t)n;
    ts_wbuf_put(&w, &count, 2);
    for (size_t i = 0; i < n; i++) {
        uint16_t name_len = (uint16_t)strlen(names[i]);
        uint32_t value_len = (uint32_t)strlen(values[i]);
        ts_wbuf_put(&w, &name_len, 2);
        ts_wbuf_put(&w, names[i], name_len);
        ts_wbuf_put(&w, &value_len, 4);
        ts_wbuf_put(&w, values[i], value_len);
    }
    ts_bytes b = {NULL, 0};
    if (w.failed) {
        free(w.data);
        return b;
    }
    b.data = w.data;
    b.len = w.len;
    return b;
}
