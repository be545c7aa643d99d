/* ts_mirror.h - the view mirror: a task's views kept in its own state.
 *
 * Every view effect of a batch is also applied to a copy in RocksDB ('V' keys
 * for a view's value, 'W' keys for a sorted set's members, see ts_state.h), in
 * the batch's own write batch, so the views can be rebuilt from the state
 * alone (after Redis lost them, or on the instance a partition moved to: the
 * mirror travels in the changelog like any state).
 *
 * The mirror does not write by itself: each key goes through the owner's
 * write function, which also records it in the changelog.
 *
 * Threading: one mirror per task, used by whichever thread runs the task.
 */
#ifndef TS_MIRROR_H
#define TS_MIRROR_H

#include <stddef.h>

#include "ts_effects.h"
#include "ts_error.h"
#include "ts_state.h"

/** Writes one key of the mirror into `wb` (val NULL: deletes it). */
typedef void (*ts_mirror_write_fn)(void *arg, ts_state_batch *wb, const char *key, size_t klen,
                                   const char *val, size_t vlen);

typedef struct ts_mirror {
    ts_state *state;
    const char *task_id; /* in every key; borrowed */
    ts_mirror_write_fn write;
    void *arg;
    char *keybuf; /* scratch: the key being written */
    size_t keycap;
} ts_mirror;

/** Sets up a mirror of task `task_id`'s views (borrowed, must outlive it). */
void ts_mirror_init(ts_mirror *m, ts_state *state, const char *task_id, ts_mirror_write_fn write,
                    void *arg);
/** Frees the mirror's scratch; accepts a mirror never initialized (zeroed). */
void ts_mirror_close(ts_mirror *m);

/** Applies `e` to the mirror if it is a view effect (others are left), as of
 * the state with `wb`'s writes: deleting a view or members below a score
 * deletes the members the batch itself wrote too. `e` is copied first, so it
 * may point into a list the write function appends to.
 * @returns TS_OK, TS_E_NOMEM or an error of the state. */
ts_err ts_mirror_apply(ts_mirror *m, ts_state_batch *wb, const ts_effect *e);

/** Adds to `out` the views the state mirrors: a view set per 'V' key and a
 * member added per 'W' key (sorted sets are never deleted here: several
 * tasks may own members of one set).
 * @returns TS_OK, TS_E_NOMEM or an error of the state. */
ts_err ts_mirror_read(ts_state *state, const char *task_id, ts_effects *out);

#endif
