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
/* Slots a cleared list keeps for the next batch (96 KiB); a larger array is
 * given back. */
#define TS_EFFECTS_KEPT_SLOTS 1024

typedef struct ts_arena_chunk {
    struct ts_arena_chunk *next;
    size_t used, cap;
    char data[];
} ts_arena_chunk;

struct ts_effects {
    ts_effects_slot *slots;
    size_t count, cap;
    size_t bytes; /* payload bytes of every effect, dead ones included */
    size_t keyed; /* what encoding them all with views by key would take */
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
    effs->keyed = 0;
    HASH_CLEAR(hh, effs->targets); /* the targets live in the arena */
    ts_arena_reset(effs);
    /* A task keeps its list from batch to batch, and one large batch would
     * leave it holding ~96 bytes per effect for good (batches under load
     * reach tens of thousands of effects with their changelog records): 1M
     * stream, three interleaved runs each, peak RSS 745-785 -> 695-699 MiB
     * over the benchmark's 96 tasks, events/s within the host's noise. */
    if (effs->cap > TS_EFFECTS_KEPT_SLOTS) {
        free(effs->slots);
        effs->slots = NULL;
        effs->cap = 0;
    }
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

/* What the first blob layout ("TSE1", ts_effects_blob.c) writes for `e`:
 * kind, number, four length prefixes and the bytes (without a view set's
 * value when by key). It bounds what the current layout writes. */
#define TS_EFFECTS_ENCODED_HEAD (1 + sizeof(double) + 4 * sizeof(uint32_t))

static size_t ts_effects_keyed_size(const ts_effect *e) {
    size_t value = e->kind == TS_EFF_VIEW_SET ? 0 : e->b.len;
    return TS_EFFECTS_ENCODED_HEAD + e->a.len + value + e->c.len + e->d.len;
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
    effs->keyed += ts_effects_keyed_size(&slot->eff);
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
        effs->keyed -= ts_effects_keyed_size(&slot->eff);
    }
}

size_t ts_effects_encoded_max(const ts_effects *effs, int flags) {
    size_t all = effs->bytes + effs->count * TS_EFFECTS_ENCODED_HEAD;
    return 4 + (flags & TS_EFFECTS_VIEWS_BY_KEY ? effs->keyed : all); /* 4: the magic */
}

size_t ts_effects_count(const ts_effects *effs) { return effs->count; }

const ts_effect *ts_effects_at(const ts_effects *effs, size_t i) { return &effs->slots[i].eff; }

ts_err ts_effects_set_b(ts_effects *effs, size_t i, const ts_bytes *b) {
    ts_effect *eff = &effs->slots[i].eff;
    effs->bytes -= eff->b.len;
    effs->keyed -= ts_effects_keyed_size(eff);
    if (ts_bytes_copy(effs, &eff->b, b))
        return TS_E_NOMEM;
    effs->bytes += eff->b.len;
    effs->keyed += ts_effects_keyed_size(eff);
    return TS_OK;
}

size_t ts_effects_live(const ts_effects *effs, ts_effect_kind kind) {
    size_t n = 0;
    for (size_t i = 0; i < effs->count; i++) {
        const ts_effect *e = &effs->slots[i].eff;
        if (!e->dead && (kind == 0 || e->kind == kind))
            n++;
    }
    return n;
}

/* ---- packed rows and headers ------------------------------------------------- */

/* A column or header name: u16 length, bytes. */
static int ts_effects_read_name(ts_reader *r, ts_rowcol *col) {
    uint16_t len;
    if (ts_reader_take(r, &len, 2) || ts_reader_left(r) < len)
        return -1;
    col->name = r->p;
    col->name_len = len;
    r->p += len;
    return 0;
}

static void ts_effects_put_name(ts_buf *w, const char *name, size_t len) {
    uint16_t len16 = (uint16_t)len;
    ts_buf_put(w, &len16, 2);
    ts_buf_put(w, name, len16);
}

/* Hands the buffer's bytes over as a ts_bytes (data NULL if building failed). */
static ts_bytes ts_effects_packed(ts_buf *w) {
    if (w->failed) {
        ts_buf_close(w);
        return (ts_bytes){NULL, 0};
    }
    return (ts_bytes){w->data, w->len};
}

ts_err ts_rowcols_unpack(const ts_bytes *packed, ts_rowcol *cols, size_t cap, size_t *ncols,
                         size_t *nkey) {
    ts_reader r = {packed->data, packed->data + packed->len};
    uint16_t n, k;
    if (!packed->data || ts_reader_take(&r, &n, 2) || ts_reader_take(&r, &k, 2) || k > n ||
        n > cap)
        return TS_E_DECODE;
    for (size_t i = 0; i < n; i++) {
        ts_bytes value;
        if (ts_effects_read_name(&r, &cols[i]) || ts_reader_field(&r, &value))
            return TS_E_DECODE;
        cols[i].value = value.data; /* NULL: SQL NULL */
        cols[i].value_len = value.len;
    }
    *ncols = n;
    *nkey = k;
    return ts_reader_left(&r) == 0 ? TS_OK : TS_E_DECODE;
}

ts_bytes ts_rowcols_pack(const ts_rowcol *cols, size_t n, size_t nkey) {
    ts_buf w = {0};
    uint16_t count = (uint16_t)n, keys = (uint16_t)nkey;
    ts_buf_put(&w, &count, 2);
    ts_buf_put(&w, &keys, 2);
    for (size_t i = 0; i < n; i++) {
        ts_effects_put_name(&w, cols[i].name, cols[i].name_len);
        ts_bytes value = {(char *)cols[i].value, cols[i].value_len};
        ts_buf_field(&w, &value);
    }
    return ts_effects_packed(&w);
}

/* Headers use the row layout without the key count; a value is never absent. */
ts_err ts_headers_unpack(const ts_bytes *packed, ts_rowcol *headers, size_t cap, size_t *n) {
    ts_reader r = {packed->data, packed->data + packed->len};
    uint16_t count;
    if (!packed->data || ts_reader_take(&r, &count, 2) || count > cap)
        return TS_E_DECODE;
    for (size_t i = 0; i < count; i++) {
        ts_bytes value;
        if (ts_effects_read_name(&r, &headers[i]) || ts_reader_field(&r, &value) || !value.data)
            return TS_E_DECODE;
        headers[i].value = value.data;
        headers[i].value_len = value.len;
    }
    *n = count;
    return ts_reader_left(&r) == 0 ? TS_OK : TS_E_DECODE;
}

ts_bytes ts_headers_pack(const char *const *names, const char *const *values, size_t n) {
    ts_buf w = {0};
    uint16_t count = (uint16_t)n;
    ts_buf_put(&w, &count, 2);
    for (size_t i = 0; i < n; i++) {
        ts_effects_put_name(&w, names[i], strlen(names[i]));
        ts_bytes value = {(char *)values[i], strlen(values[i])};
        ts_buf_field(&w, &value);
    }
    return ts_effects_packed(&w);
}
