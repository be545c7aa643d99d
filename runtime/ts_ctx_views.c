/* ts_ctx_views.c - the context's effects on the view sink (Redis): JSON and
 * string view sets, view deletes, view renders and sorted sets.
 *
 * A JSON view set is serialized at once, with its "version" member; with
 * deferred views (ts_ctx_defer_views) it keeps the processor's document
 * instead, and ts_ctx_views_resolve serializes, after the batch's last event,
 * only the sets no later event replaced. A render asked for while views are
 * deferred runs then too, once per batch, from the final state. What the state
 * side must copy so that nothing changes a deferred document is told at the
 * top of ts_ctx.c.
 */
#include "ts_ctx_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ts_ctx_defer_views(ts_ctx *ctx, int defer) {
    ctx->defer_views = defer != 0;
}

/* Releases the deferred views from index `from` on. */
void ts_ctx__views_drop(ts_ctx *ctx, size_t from) {
    while (ctx->n_views > from)
        json_decref(ctx->views[--ctx->n_views].doc);
}

static ts_err ts_ctx_effect(ts_ctx *ctx, ts_effect_kind kind, const char *a, const char *b,
                            double num) {
    if (kind != TS_EFF_VIEW_SET && kind != TS_EFF_VIEW_DEL &&
        ts_ctx__render_refuses(ctx, "change a sorted set"))
        return TS_E_INVALID;
    ts_bytes ba = ts_bytes_str(a), bb = ts_bytes_str(b);
    ts_err err = ts_effects_add(ctx->effs, kind, &ba, b ? &bb : NULL, NULL, NULL, num);
    if (err != TS_OK)
        ctx->state_failed = 1;
    return err;
}

/* Serializes object `doc` with "version": `version` as its last member,
 * without changing `doc`: it may share parts with a state document, which the
 * context keeps by reference. Objects dump in insertion order, so the text is
 * what setting the member would give; the member is appended to the text.
 * @returns the text, in the context's buffer until the next serialization,
 * or NULL when out of memory. */
static const char *ts_ctx_dump_versioned(ts_ctx *ctx, json_t *doc, int64_t version) {
    if (json_object_get(doc, "version")) { /* replaced, on a shallow copy */
        json_t *copy = json_copy(doc);
        size_t len = 0;
        if (copy && json_object_set_new(copy, "version", json_integer(version)) == 0)
            len = ts_ctx__dump(ctx, copy, 0);
        json_decref(copy);
        return len ? ctx->dumpbuf : NULL;
    }
    char member[48];
    int n = snprintf(member, sizeof(member), "%s\"version\":%" PRId64 "}",
                     json_object_size(doc) ? "," : "", version);
    size_t len = ts_ctx__dump(ctx, doc, (size_t)n);
    if (!len)
        return NULL;
    if (json_is_object(doc)) /* the text ends with '}' */
        memcpy(ctx->dumpbuf + len - 1, member, (size_t)n + 1);
    return ctx->dumpbuf;
}

/* The "version" of a JSON view set now: the current event's offset, or the
 * running render's, or -1 (setup: no event). */
static int64_t ts_ctx_version(const ts_ctx *ctx) {
    if (ctx->rendering)
        return ctx->render_version;
    return ctx->ev ? ctx->ev->offset : -1;
}

ts_err ts_ctx_view_set_json(ts_ctx *ctx, const char *key, json_t *doc) {
    int64_t version = ts_ctx_version(ctx);
    /* A render's document shares parts with the state: it is serialized at
     * once, as the batch's views are being resolved anyway. */
    if (ctx->defer_views && !ctx->rendering) {
        if (ctx->n_views == ctx->views_cap) {
            size_t cap = ctx->views_cap ? ctx->views_cap * 2 : 64;
            ts_ctx_view *grown = realloc(ctx->views, cap * sizeof(*grown));
            if (!grown) {
                ctx->state_failed = 1;
                return TS_E_NOMEM;
            }
            ctx->views = grown;
            ctx->views_cap = cap;
        }
        ts_err err = ts_ctx_effect(ctx, TS_EFF_VIEW_SET, key, NULL, 0);
        if (err == TS_OK)
            ctx->views[ctx->n_views++] =
                (ts_ctx_view){ts_effects_count(ctx->effs) - 1, version, json_incref(doc)};
        return err;
    }
    const char *text = ts_ctx_dump_versioned(ctx, doc, version);
    if (!text) {
        ctx->state_failed = 1;
        return TS_E_NOMEM;
    }
    return ts_ctx_effect(ctx, TS_EFF_VIEW_SET, key, text, 0);
}

static ts_err ts_ctx_render_run(void *arg, ts_ctx_render_fn render, const char *id,
                                int64_t version) {
    ts_ctx *ctx = arg;
    ctx->rendering = 1;
    ctx->render_version = version;
    ts_err err = render(ctx, id);
    ctx->rendering = 0;
    return ctx->state_failed ? TS_E_STATE : err;
}

ts_err ts_ctx_view_render(ts_ctx *ctx, ts_ctx_render_fn render, const char *id) {
    if (ts_ctx__render_refuses(ctx, "ask for a render"))
        return TS_E_INVALID;
    int64_t version = ts_ctx_version(ctx);
    if (!ctx->defer_views)
        return ts_ctx_render_run(ctx, render, id, version);
    ts_err err = ts_renders_add(ctx->renders, render, id, version);
    if (err != TS_OK)
        ctx->state_failed = 1;
    return err;
}

ts_err ts_ctx_views_resolve(ts_ctx *ctx) {
    /* Renders first: a deferred view set is never for a key a render writes. */
    ts_err err = ts_renders_run(ctx->renders, ts_ctx_render_run, ctx);
    for (size_t i = 0; i < ctx->n_views && err == TS_OK; i++) {
        const ts_ctx_view *v = &ctx->views[i];
        if (ts_effects_at(ctx->effs, v->effect)->dead)
            continue;
        const char *text = ts_ctx_dump_versioned(ctx, v->doc, v->version);
        ts_bytes value = ts_bytes_str(text);
        err = text ? ts_effects_set_b(ctx->effs, v->effect, &value) : TS_E_NOMEM;
    }
    ts_ctx__views_drop(ctx, 0);
    return err;
}

ts_err ts_ctx_view_set_str(ts_ctx *ctx, const char *key, const char *value) {
    return ts_ctx_effect(ctx, TS_EFF_VIEW_SET, key, value, 0);
}

ts_err ts_ctx_view_del(ts_ctx *ctx, const char *key) {
    return ts_ctx_effect(ctx, TS_EFF_VIEW_DEL, key, NULL, 0);
}

ts_err ts_ctx_zset_add(ts_ctx *ctx, const char *key, const char *member, double score) {
    return ts_ctx_effect(ctx, TS_EFF_ZADD, key, member, score);
}

ts_err ts_ctx_zset_rem(ts_ctx *ctx, const char *key, const char *member) {
    return ts_ctx_effect(ctx, TS_EFF_ZREM, key, member, 0);
}

ts_err ts_ctx_zset_rem_below(ts_ctx *ctx, const char *key, double min_score) {
    return ts_ctx_effect(ctx, TS_EFF_ZREM_BELOW, key, NULL, min_score);
}
