/* ts_effects.h - an ordered, coalescing list of a batch's effects.
 *
 * Processors declare effects (through ts_ctx); a batch collects them here; the
 * sinks read them. Each effect is a kind and up to four byte strings plus a
 * number, so the whole list serializes to one blob that is stored in RocksDB
 * with the batch (the "pending effects") and re-sent after a crash.
 *
 * Coalescing: an effect that wholly replaces what an earlier one wrote (a view
 * set or delete of the same key, a sorted-set add or remove of the same member,
 * an upsert or delete of the same row) marks the earlier one dead. Survivors keep
 * their order, which preserves the result of the full sequence.
 *
 * Threading: none; owned by one task at a time.
 */
#ifndef TS_EFFECTS_H
#define TS_EFFECTS_H

#include <stddef.h>
#include <stdint.h>

#include "ts_buf.h"
#include "ts_error.h"

typedef enum ts_effect_kind {
    TS_EFF_VIEW_SET = 1, /* a: key, b: value */
    TS_EFF_VIEW_DEL,     /* a: key */
    TS_EFF_ZADD,         /* a: key, b: member, num: score */
    TS_EFF_ZREM,         /* a: key, b: member */
    TS_EFF_ZREM_BELOW,   /* a: key, num: remove members with score < num */
    TS_EFF_ROW_UPSERT,   /* a: table, b: packed columns (ts_rowcols) */
    TS_EFF_ROW_DELETE,   /* a: table, b: packed key columns */
    TS_EFF_EMIT,         /* a: topic, b: key, c: value bytes (absent: a tombstone),
                            d: packed headers, num: partition + 1 (0: by key) */
} ts_effect_kind;

typedef struct ts_effect {
    ts_effect_kind kind;
    int dead; /* superseded by a later effect on the same target */
    double num;
    ts_bytes a, b, c, d;
} ts_effect;

typedef struct ts_effects ts_effects;

ts_effects *ts_effects_create(void);
/** Frees the list and every effect; accepts NULL. */
void ts_effects_destroy(ts_effects *effs);
/** Drops every effect, keeping the allocation of a small list (a large one
 * is given back). */
void ts_effects_clear(ts_effects *effs);

/** Appends an effect; the byte strings are copied. Coalesces as described above.
 * `c` and `d` may be NULL. */
ts_err ts_effects_add(ts_effects *effs, ts_effect_kind kind, const ts_bytes *a,
                      const ts_bytes *b, const ts_bytes *c, const ts_bytes *d, double num);

/** Position marker for undoing the effects of one rejected event. */
size_t ts_effects_mark(const ts_effects *effs);
/** Removes every effect added after `mark` and revives what they superseded. */
void ts_effects_rollback(ts_effects *effs, size_t mark);

/** Number of effects, dead ones included; ts_effects_at(i) for i < count. */
size_t ts_effects_count(const ts_effects *effs);
const ts_effect *ts_effects_at(const ts_effects *effs, size_t i);
/** Sets `b` of effect `i` (copied), which was added without one: a view set
 * whose value is serialized after its batch's last event (ts_ctx.h). */
ts_err ts_effects_set_b(ts_effects *effs, size_t i, const ts_bytes *b);
/** Number of live effects of `kind` (0 = of any kind). */
size_t ts_effects_live(const ts_effects *effs, ts_effect_kind kind);

/** ts_effects_encode_to flag: a view set is written without its value (absent);
 * whoever decodes the blob looks the value up by the view's key. */
#define TS_EFFECTS_VIEWS_BY_KEY 1

/** Appends the serialized live effects (a blob) to `out`; TS_E_NOMEM if it
 * failed (then out->failed is set). `flags`: 0 or TS_EFFECTS_VIEWS_BY_KEY. */
ts_err ts_effects_encode_to(const ts_effects *effs, ts_buf *out, int flags);
/** At most how many bytes ts_effects_encode_to would append with `flags`
 * (dead effects counted too): bounds the size of a blob before it is made. */
size_t ts_effects_encoded_max(const ts_effects *effs, int flags);
/** Appends the effects of a blob made by ts_effects_encode_to, as they were
 * written (a view set by key has an absent value). TS_E_DECODE if malformed. */
ts_err ts_effects_decode(ts_effects *effs, const char *blob, size_t len);

/** ts_bytes from a C string (NULL stays absent). */
ts_bytes ts_bytes_str(const char *s);

/* ---- packed row columns ----------------------------------------------------
 * A row effect's `b`: the columns of one row, key columns first.
 * Layout: u16 ncols, u16 nkey, then per column: u16 name length, name,
 * u32 value length (0xFFFFFFFF = NULL), value. */

typedef struct ts_rowcol {
    const char *name; /* not NUL-terminated: use name_len */
    size_t name_len;
    const char *value; /* NULL = SQL NULL; not NUL-terminated */
    size_t value_len;
} ts_rowcol;

/** Packs `n` columns, the first `nkey` of them the primary key, into a new
 * malloc'ed blob (data NULL on allocation failure). */
ts_bytes ts_rowcols_pack(const ts_rowcol *cols, size_t n, size_t nkey);

/** Unpacks up to `cap` columns of a packed row into `cols`.
 * @returns TS_OK with *ncols and *nkey set, or TS_E_DECODE. */
ts_err ts_rowcols_unpack(const ts_bytes *packed, ts_rowcol *cols, size_t cap, size_t *ncols,
                         size_t *nkey);

/* ---- packed headers --------------------------------------------------------
 * An emit effect's `d`: u16 count, then per header u16 name length, name,
 * u32 value length, value. */

/** Unpacks up to `cap` headers into parallel arrays of borrowed, not
 * NUL-terminated names and values. @returns TS_OK with *n set, or TS_E_DECODE. */
ts_err ts_headers_unpack(const ts_bytes *packed, ts_rowcol *headers, size_t cap, size_t *n);

/** Packs `n` headers (names and NUL-terminated values) into a new malloc'ed blob. */
ts_bytes ts_headers_pack(const char *const *names, const char *const *values, size_t n);

#endif
