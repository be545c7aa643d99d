/* ts_pending.h - the stored form of a decided batch's effects (the 'Q' key
 * of ts_state.h): what the sinks must still be sent if the process stops
 * before they acknowledge the batch.
 *
 * Two forms:
 *   marker form  [first BE64][next BE64][effects blob]
 *       The processor's effects only, each view set by key (its value is
 *       the view mirror's, 'V' key of ts_state.h, written by the same batch:
 *       the blob does not repeat it). It is also the value of the batch's
 *       changelog marker, and what a restore stores from the last marker
 *       (the restored mirror then holds those values).
 *   full form    ["TSQ1"][u32 blob length][first][next][effects blob][records]
 *       What a task writes: the marker form (contiguous inside it, so the
 *       marker is sent without a copy) followed by the changelog records the
 *       batch appended, in order. A record is either a reference to a local
 *       key, whose value is read back from the state when it is re-sent
 *       (the batch wrote that value, and the task writes nothing else before
 *       its pending effects are acknowledged), or inline bytes. References
 *       keep the changelog's values out of this record: they are already in
 *       the same RocksDB write batch under their own keys.
 * A marker form never starts with "TSQ1": its first byte is the high byte
 * of a Kafka offset.
 *
 * Threading: none.
 */
#ifndef TS_PENDING_H
#define TS_PENDING_H

#include <stdint.h>

#include "ts_buf.h"
#include "ts_effects.h"
#include "ts_error.h"

/** Starts a full form in `q` (emptied first) for offsets [first, next) with
 * the live effects of `effs`. Appends fail silently into q->failed. */
void ts_pending_begin(ts_buf *q, int64_t first, int64_t next, const ts_effects *effs);
/** Starts a full form in `q` (emptied first) around a marker form `marker`
 * (at least the two offsets), with no records yet: what a restore stores to
 * have changelog records re-sent with the marker it restored to. */
void ts_pending_begin_marker(ts_buf *q, const ts_bytes *marker);
/** Appends a changelog record whose value is the current value of the local
 * key that `changelog_key` stands for (none: a tombstone). */
void ts_pending_add_ref(ts_buf *q, const ts_bytes *changelog_key);
/** Appends a changelog record with its value (data NULL: a tombstone). */
void ts_pending_add_inline(ts_buf *q, const ts_bytes *changelog_key, const ts_bytes *value);
/** The marker form inside a full form begun by ts_pending_begin; borrowed
 * from `q`, valid until the next append to it. */
ts_bytes ts_pending_marker(const ts_buf *q);

/** How the stored effects are re-made: the changelog topic and partition a
 * full form's records go to, and the lookup of the current value of the local
 * key a changelog key stands for (*val malloc'ed, freed by the caller;
 * TS_E_NOTFOUND for a tombstone), which also serves the views by key. */
typedef struct ts_pending_changelog {
    const char *topic; /* NULL: the task has no changelog */
    int32_t partition;
    ts_err (*resolve)(void *arg, const ts_bytes *changelog_key, char **val, size_t *vlen);
    void *arg;
} ts_pending_changelog;

/** Decodes either form into `effs`: the processor's effects (views with
 * their values looked up; a missing one is TS_E_DECODE), then (full form,
 * with a changelog) the changelog records in order and the marker.
 * @returns TS_OK with *first and *next set, TS_E_DECODE if malformed, or an
 * error of `resolve`. */
ts_err ts_pending_decode(const char *val, size_t len, const ts_pending_changelog *changelog,
                         ts_effects *effs, int64_t *first, int64_t *next);

#endif
