/* ts_renders.h - the view renders a batch asked for (ts_ctx_view_render).
 *
 * Each (function, id) pair is kept once, with the offset of the last event
 * that asked for it, in the order it was first asked for. The asks of the
 * current event can be undone (the event was rejected) or kept (it ended
 * well); the context runs the survivors once, after the batch's last event.
 *
 * Threading: none; owned by one context.
 */
#ifndef TS_RENDERS_H
#define TS_RENDERS_H

#include <stddef.h>
#include <stdint.h>

#include "ts_error.h"
#include "ts_processor.h"

typedef struct ts_renders ts_renders;

ts_renders *ts_renders_create(void);
/** Frees everything; accepts NULL. */
void ts_renders_destroy(ts_renders *rs);

/** Asks for `fn`(`id`) on behalf of the current event, at offset `version`
 * (`id` is copied). */
ts_err ts_renders_add(ts_renders *rs, ts_ctx_render_fn fn, const char *id, int64_t version);
/** Ends the current event: keeps its asks, or, when `failed`, undoes them
 * (an ask it repeated goes back to the earlier event's offset). */
void ts_renders_event_end(ts_renders *rs, int failed);

/** Forgets every render (the batch is abandoned). */
void ts_renders_clear(ts_renders *rs);
/** Number of renders asked for (by ended events and the current one). */
size_t ts_renders_count(const ts_renders *rs);
/** Calls `each` for every render in the order first asked for, stopping at
 * the first result other than TS_OK, and returns that result; then forgets
 * them all (also on failure). */
ts_err ts_renders_run(ts_renders *rs,
                      ts_err (*each)(void *arg, ts_ctx_render_fn fn, const char *id,
                                     int64_t version),
                      void *arg);

#endif
