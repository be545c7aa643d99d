/* test_ctx.c - the processor context's state: overlays, rejection, and the
 * cache of hot keys that outlives a batch (ts_ctx.c). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_ctx.h"

/* A backend of at most 16 keys that counts its reads. */
typedef struct fake_store {
    char *keys[16], *vals[16];
    size_t n, gets;
} fake_store;

static ts_err fake_get(void *impl, const char *key, size_t klen, char **val, size_t *vlen) {
    fake_store *fs = impl;
    fs->gets++;
    for (size_t i = 0; i < fs->n; i++) {
        if (strlen(fs->keys[i]) == klen && memcmp(fs->keys[i], key, klen) == 0) {
            if (!fs->vals[i])
                return TS_E_NOTFOUND;
            *vlen = strlen(fs->vals[i]);
            *val = strdup(fs->vals[i]);
            return TS_OK;
        }
    }
    return TS_E_NOTFOUND;
}

static void fake_write(void *arg, const char *key, size_t klen, const char *val, size_t vlen) {
    fake_store *fs = arg;
    size_t i = 0;
    while (i < fs->n && !(strlen(fs->keys[i]) == klen && memcmp(fs->keys[i], key, klen) == 0))
        i++;
    if (i == fs->n)
        fs->keys[fs->n++] = strndup(key, klen);
    free(fs->vals[i]);
    fs->vals[i] = val ? strndup(val, vlen) : NULL;
}

static fake_store store;
static ts_effects *effs;
static ts_ctx *ctx;
static ts_event ev = {.type = "T", .topic = "t", .offset = 1};

static void setup(void) {
    memset(&store, 0, sizeof(store));
    effs = ts_effects_create();
    ts_state_backend backend = {fake_get, &store};
    ctx = ts_ctx_create(&backend, effs, NULL, NULL);
    cr_assert(ctx);
}

static void teardown(void) {
    ts_ctx_destroy(ctx);
    ts_effects_destroy(effs);
    for (size_t i = 0; i < store.n; i++) {
        free(store.keys[i]);
        free(store.vals[i]);
    }
}

/* Makes the batch durable in the fake store, as a task does. */
static void commit_batch(void) {
    cr_assert_eq(ts_ctx_writes_foreach(ctx, fake_write, &store), TS_OK);
    ts_ctx_writes_done(ctx);
}

static json_t *read_doc(const char *s, const char *k) {
    ts_ctx_event_begin(ctx, &ev);
    json_t *doc = ts_ctx_get_json(ctx, s, k);
    ts_ctx_event_end(ctx, TS_OK, NULL);
    return doc;
}

static void write_doc(const char *s, const char *k, json_t *doc, ts_err result) {
    ts_ctx_event_begin(ctx, &ev);
    cr_assert_eq(ts_ctx_put_json(ctx, s, k, doc), TS_OK);
    ts_ctx_event_end(ctx, result, NULL);
}

/* One event that reads the document, adds 1 to its "n" and writes it back,
 * then ends with `result`. @returns the document read (a reference). */
static json_t *bump(const char *s, const char *k, ts_err result) {
    ts_ctx_event_begin(ctx, &ev);
    json_t *doc = ts_ctx_get_json(ctx, s, k);
    cr_assert(doc);
    json_object_set_new(doc, "n", json_integer(json_integer_value(json_object_get(doc, "n")) + 1));
    cr_assert_eq(ts_ctx_put_json(ctx, s, k, doc), TS_OK);
    ts_ctx_event_end(ctx, result, NULL);
    return doc;
}

static json_int_t read_n(const char *s, const char *k) {
    json_t *doc = read_doc(s, k);
    json_int_t n = json_integer_value(json_object_get(doc, "n"));
    json_decref(doc);
    return n;
}

TestSuite(ctx, .init = setup, .fini = teardown);

Test(ctx, a_written_document_is_serialized_once_when_the_batch_becomes_durable) {
    for (int i = 1; i <= 3; i++) {
        json_t *doc = json_pack("{s:i}", "n", i);
        write_doc("s", "k", doc, TS_OK);
        json_decref(doc);
    }
    cr_assert_eq(store.n, 0, "nothing is durable before the batch is");
    commit_batch();
    cr_assert_eq(store.n, 1);
    cr_assert_str_eq(store.keys[0], "s\x1fk");
    cr_assert_str_eq(store.vals[0], "{\"n\":3}");
}

Test(ctx, hot_keys_are_read_from_the_backend_once_across_batches) {
    store.keys[0] = strdup("s\x1fk");
    store.vals[0] = strdup("{\"n\":1}");
    store.n = 1;
    for (int batch = 0; batch < 5; batch++) {
        json_decref(bump("s", "k", TS_OK));
        commit_batch();
    }
    cr_assert_eq(store.gets, 1, "read %zu times", store.gets);
    cr_assert_str_eq(store.vals[0], "{\"n\":6}");
}

Test(ctx, a_failed_event_undoes_its_changes_to_the_documents_it_read) {
    json_t *doc = json_pack("{s:i}", "n", 1);
    write_doc("s", "k", doc, TS_OK);
    json_decref(doc);
    /* Written by an earlier event of the batch (no text yet): a copy. */
    json_decref(bump("s", "k", TS_E_REJECT));
    cr_assert_eq(read_n("s", "k"), 1);
    commit_batch();

    /* Durable, with its text: the context's own document, undone by parsing
     * the text again; whether written back or only changed. */
    json_t *first = read_doc("s", "k"), *again = read_doc("s", "k");
    cr_expect_eq(first, again, "a read-only use is not copied");
    json_decref(first);
    json_decref(again);
    json_decref(bump("s", "k", TS_E_REJECT));
    cr_assert_eq(read_n("s", "k"), 1);
    ts_ctx_event_begin(ctx, &ev);
    doc = ts_ctx_get_json(ctx, "s", "k");
    json_object_set_new(doc, "n", json_integer(42));
    json_decref(doc);
    ts_ctx_event_end(ctx, TS_E_STATE, NULL);
    cr_assert_eq(read_n("s", "k"), 1);

    /* And an event that succeeds keeps its write. */
    json_decref(bump("s", "k", TS_OK));
    cr_assert_eq(read_n("s", "k"), 2);
    commit_batch();
    cr_assert_str_eq(store.vals[0], "{\"n\":2}");
    cr_assert_eq(store.gets, 0, "everything came from the context");
}

Test(ctx, a_read_only_document_is_never_copied_and_a_list_rebuilt_around_it_shares_parts) {
    json_t *list = json_pack("[{s:s}, {s:s}]", "id", "a", "id", "b");
    write_doc("s", "k", list, TS_OK);
    /* Written by an earlier event of the batch: ts_ctx_get_json copies it,
     * ts_ctx_read_json gives the document itself. */
    ts_ctx_event_begin(ctx, &ev);
    json_t *copy = ts_ctx_get_json(ctx, "s", "k"), *own = ts_ctx_read_json(ctx, "s", "k");
    cr_expect_neq(copy, list);
    cr_expect_eq(own, list, "read-only: not a copy");
    cr_expect_null(ts_ctx_read_json(ctx, "s", "absent"));
    /* Rebuilt without the first entry, sharing the second; then rejected. */
    json_t *rebuilt = json_array();
    json_array_append(rebuilt, json_array_get(own, 1));
    cr_assert_eq(ts_ctx_put_json(ctx, "s", "k", rebuilt), TS_OK);
    ts_ctx_event_end(ctx, TS_E_REJECT, NULL);
    json_decref(copy);
    json_decref(own);
    json_decref(rebuilt);
    /* The rejected rebuild left the stored list whole; an accepted one
     * replaces it, sharing the entry it kept. */
    ts_ctx_event_begin(ctx, &ev);
    own = ts_ctx_read_json(ctx, "s", "k");
    cr_assert_eq(json_array_size(own), 2);
    rebuilt = json_array();
    json_array_append(rebuilt, json_array_get(own, 1));
    cr_assert_eq(ts_ctx_put_json(ctx, "s", "k", rebuilt), TS_OK);
    ts_ctx_event_end(ctx, TS_OK, NULL);
    cr_expect_eq(json_array_get(rebuilt, 0), json_array_get(list, 1), "the entry is shared");
    json_decref(own);
    json_decref(rebuilt);
    json_decref(list);
    commit_batch();
    cr_assert_str_eq(store.vals[0], "[{\"id\":\"b\"}]");
    cr_assert_eq(store.gets, 1, "only the absent key was asked of the backend");
}

Test(ctx, a_view_of_a_written_document_is_versioned_without_changing_the_state) {
    json_t *doc = json_pack("{s:i, s:[i]}", "n", 1, "list", 7);
    ts_ctx_event_begin(ctx, &ev);
    cr_assert_eq(ts_ctx_put_json(ctx, "s", "k", doc), TS_OK);
    cr_assert_eq(ts_ctx_view_set_json(ctx, "v", doc), TS_OK);
    json_t *empty = json_object();
    cr_assert_eq(ts_ctx_view_set_json(ctx, "e", empty), TS_OK);
    json_decref(empty);
    ts_ctx_event_end(ctx, TS_OK, NULL);
    json_decref(doc);
    char want[64];
    snprintf(want, sizeof(want), "{\"n\":1,\"list\":[7],\"version\":%lld}", (long long)ev.offset);
    cr_assert_str_eq(ts_effects_at(effs, 0)->b.data, want);
    snprintf(want, sizeof(want), "{\"version\":%lld}", (long long)ev.offset);
    cr_assert_str_eq(ts_effects_at(effs, 1)->b.data, want);
    commit_batch();
    cr_assert_str_eq(store.vals[0], "{\"n\":1,\"list\":[7]}");
}

static void count_write(void *arg, const char *key, size_t klen, const char *val, size_t vlen) {
    (void)key, (void)klen, (void)val, (void)vlen;
    (*(size_t *)arg)++;
}

static void write_raw(const char *key, const char *val) {
    ts_ctx_event_begin(ctx, &ev);
    cr_assert_eq(ts_ctx_put(ctx, "s", key, val, strlen(val)), TS_OK);
    ts_ctx_event_end(ctx, TS_OK, NULL);
}

Test(ctx, a_batch_makes_durable_only_its_own_writes_and_the_cache_stays_bounded) {
    /* 16 values of 100 KiB: more than the cache's 1 MiB, so the oldest go. */
    size_t big = 100 * 1024;
    char *val = malloc(big + 1);
    memset(val, 'x', big);
    val[big] = '\0';
    char key[16];
    for (int batch = 0; batch < 2; batch++) {
        for (int i = batch * 8; i < batch * 8 + 8; i++) {
            snprintf(key, sizeof(key), "k%d", i);
            write_raw(key, val);
        }
        size_t written = 0;
        cr_assert_eq(ts_ctx_writes_foreach(ctx, count_write, &written), TS_OK);
        cr_assert_eq(written, 8, "batch %d made %zu keys durable", batch, written);
        commit_batch();
    }
    free(val);
    /* A rewrite of a cached key replaces its entry, and is the next batch's only write. */
    write_raw("k15", "small");
    size_t written = 0;
    cr_assert_eq(ts_ctx_writes_foreach(ctx, count_write, &written), TS_OK);
    cr_assert_eq(written, 1);
    commit_batch();

    size_t before = store.gets;
    const char *got;
    size_t len;
    ts_ctx_event_begin(ctx, &ev);
    cr_assert_eq(ts_ctx_get(ctx, "s", "k14", &got, &len), TS_OK);
    cr_assert_eq(store.gets, before, "a recent key is served from the cache");
    cr_assert_eq(ts_ctx_get(ctx, "s", "k15", &got, &len), TS_OK);
    cr_assert_str_eq(got, "small");
    cr_assert_eq(ts_ctx_get(ctx, "s", "k0", &got, &len), TS_OK);
    cr_assert_eq(len, big);
    cr_assert_eq(store.gets, before + 1, "the oldest key was evicted and read again");
    ts_ctx_event_end(ctx, TS_OK, NULL);
}

Test(ctx, a_rejected_event_leaves_the_cached_value_as_it_was) {
    json_t *doc = json_pack("{s:i}", "n", 1);
    write_doc("s", "k", doc, TS_OK);
    json_decref(doc);
    commit_batch();
    json_decref(bump("s", "k", TS_E_REJECT));
    json_t *got = read_doc("s", "k");
    cr_assert_eq(json_integer_value(json_object_get(got, "n")), 1);
    json_decref(got);
    commit_batch();
    cr_assert_str_eq(store.vals[0], "{\"n\":1}");
}

Test(ctx, an_abandoned_batch_is_forgotten_and_read_again) {
    json_t *doc = json_pack("{s:i}", "n", 1);
    write_doc("s", "k", doc, TS_OK);
    json_decref(doc);
    ts_ctx_writes_clear(ctx); /* the batch failed: nothing of it is true */
    cr_assert_null(read_doc("s", "k"));
    cr_assert_eq(store.gets, 1);
}

Test(ctx, a_deleted_key_reads_as_absent_and_then_from_the_backend) {
    json_t *doc = json_pack("{s:i}", "n", 1);
    write_doc("s", "k", doc, TS_OK);
    json_decref(doc);
    commit_batch();
    ts_ctx_event_begin(ctx, &ev);
    cr_assert_eq(ts_ctx_del(ctx, "s", "k"), TS_OK);
    cr_assert_null(ts_ctx_get_json(ctx, "s", "k"));
    ts_ctx_event_end(ctx, TS_OK, NULL);
    commit_batch();
    cr_assert_null(store.vals[0]);
    size_t before = store.gets;
    cr_assert_null(read_doc("s", "k"));
    cr_assert_eq(store.gets, before + 1, "absent keys are not cached across batches");
}

Test(ctx, an_uncached_store_is_read_from_the_backend_every_batch) {
    cr_assert_eq(ts_ctx_set_uncached(ctx, "_seen"), TS_OK);
    for (int batch = 0; batch < 3; batch++) {
        ts_ctx_event_begin(ctx, &ev);
        const char *val;
        size_t vlen;
        ts_err rc = ts_ctx_get(ctx, "_seen", "e1", &val, &vlen);
        cr_assert_eq(rc, batch == 0 ? TS_E_NOTFOUND : TS_OK);
        cr_assert_eq(ts_ctx_put(ctx, "_seen", "e1", "", 0), TS_OK);
        ts_ctx_event_end(ctx, TS_OK, NULL);
        commit_batch();
    }
    cr_assert_eq(store.gets, 3);
}

Test(ctx, raw_reads_see_a_json_write_of_the_same_event) {
    json_t *doc = json_pack("{s:s}", "a", "b");
    ts_ctx_event_begin(ctx, &ev);
    cr_assert_eq(ts_ctx_put_json(ctx, "s", "k", doc), TS_OK);
    const char *val;
    size_t vlen;
    cr_assert_eq(ts_ctx_get(ctx, "s", "k", &val, &vlen), TS_OK);
    cr_assert_str_eq(val, "{\"a\":\"b\"}");
    ts_ctx_event_end(ctx, TS_OK, NULL);
    json_decref(doc);
}

/* ---- deferred views ---------------------------------------------------------- */

/* The value of the live view set of `key` in the batch's effects, or NULL. */
static const char *live_view(const char *key) {
    for (size_t i = 0; i < ts_effects_count(effs); i++) {
        const ts_effect *e = ts_effects_at(effs, i);
        if (!e->dead && e->kind == TS_EFF_VIEW_SET && strcmp(e->a.data, key) == 0)
            return e->b.data ? e->b.data : "(no value)";
    }
    return NULL;
}

/* An event at `offset` that sets view `key` to `doc` and ends with `result`. */
static void set_view(int64_t offset, const char *key, json_t *doc, ts_err result) {
    ts_event at = {.type = "T", .topic = "t", .offset = offset};
    ts_ctx_event_begin(ctx, &at);
    cr_assert_eq(ts_ctx_view_set_json(ctx, key, doc), TS_OK);
    ts_ctx_event_end(ctx, result, NULL);
    json_decref(doc);
}

Test(ctx, deferred_views_are_serialized_once_per_key_at_the_batch_end) {
    ts_ctx_defer_views(ctx, 1);
    set_view(1, "v", json_pack("{s:i}", "n", 1), TS_OK);
    set_view(2, "w", json_pack("{s:i}", "n", 2), TS_OK);
    set_view(3, "v", json_pack("{s:i}", "n", 3), TS_OK);
    cr_assert_str_eq(live_view("v"), "(no value)", "not serialized before the batch ends");
    cr_assert_eq(ts_ctx_views_resolve(ctx), TS_OK);
    cr_assert_str_eq(live_view("v"), "{\"n\":3,\"version\":3}");
    cr_assert_str_eq(live_view("w"), "{\"n\":2,\"version\":2}");
    cr_assert_null(ts_effects_at(effs, 0)->b.data, "the replaced set is never serialized");
}

Test(ctx, a_rejected_event_takes_its_deferred_view_back) {
    ts_ctx_defer_views(ctx, 1);
    set_view(1, "v", json_pack("{s:i}", "n", 1), TS_OK);
    set_view(2, "v", json_pack("{s:i}", "n", 2), TS_E_REJECT);
    cr_assert_eq(ts_ctx_views_resolve(ctx), TS_OK);
    cr_assert_str_eq(live_view("v"), "{\"n\":1,\"version\":1}");
}

/* One event at `offset` that appends `tag` to the "tags" of s/k in place and
 * writes the document back, ending with `result`. */
static void add_tag(int64_t offset, const char *tag, ts_err result) {
    ts_event at = {.type = "T", .topic = "t", .offset = offset};
    ts_ctx_event_begin(ctx, &at);
    json_t *doc = ts_ctx_get_json(ctx, "s", "k");
    cr_assert(doc);
    json_array_append_new(json_object_get(doc, "tags"), json_string(tag));
    cr_assert_eq(ts_ctx_put_json(ctx, "s", "k", doc), TS_OK);
    ts_ctx_event_end(ctx, result, NULL);
    json_decref(doc);
}

Test(ctx, a_deferred_view_is_not_changed_by_later_events_changing_the_state_it_shares) {
    store.keys[0] = strdup("s\x1fk");
    store.vals[0] = strdup("{\"tags\":[\"a\"]}");
    store.n = 1;
    ts_ctx_defer_views(ctx, 1);
    /* The view shares the state's array (as processors' views do, json_pack "O"). */
    ts_event first = {.type = "T", .topic = "t", .offset = 1};
    ts_ctx_event_begin(ctx, &first);
    json_t *doc = ts_ctx_get_json(ctx, "s", "k");
    json_t *view = json_pack("{s:O}", "tags", json_object_get(doc, "tags"));
    cr_assert_eq(ts_ctx_view_set_json(ctx, "v1", view), TS_OK);
    ts_ctx_event_end(ctx, TS_OK, NULL);
    json_decref(view);
    json_decref(doc);
    add_tag(2, "b", TS_OK);       /* an event that changes the state in place */
    add_tag(3, "c", TS_E_REJECT); /* and one that does, then fails */
    cr_assert_eq(ts_ctx_views_resolve(ctx), TS_OK);
    cr_assert_str_eq(live_view("v1"), "{\"tags\":[\"a\"],\"version\":1}");
    commit_batch();
    cr_assert_str_eq(store.vals[0], "{\"tags\":[\"a\",\"b\"]}");
}

Test(ctx, a_deferred_view_is_not_changed_when_its_event_rewrites_what_it_wrote) {
    ts_ctx_defer_views(ctx, 1);
    ts_event at = {.type = "T", .topic = "t", .offset = 1};
    ts_ctx_event_begin(ctx, &at);
    json_t *doc = json_pack("{s:[s]}", "tags", "a");
    cr_assert_eq(ts_ctx_put_json(ctx, "s", "k", doc), TS_OK);
    json_t *view = json_pack("{s:O}", "tags", json_object_get(doc, "tags"));
    cr_assert_eq(ts_ctx_view_set_json(ctx, "v1", view), TS_OK);
    json_decref(view);
    json_decref(doc);
    json_t *again = ts_ctx_get_json(ctx, "s", "k");
    json_array_append_new(json_object_get(again, "tags"), json_string("b"));
    cr_assert_eq(ts_ctx_put_json(ctx, "s", "k", again), TS_OK);
    json_decref(again);
    ts_ctx_event_end(ctx, TS_OK, NULL);
    cr_assert_eq(ts_ctx_views_resolve(ctx), TS_OK);
    cr_assert_str_eq(live_view("v1"), "{\"tags\":[\"a\"],\"version\":1}");
    commit_batch();
    cr_assert_str_eq(store.vals[0], "{\"tags\":[\"a\",\"b\"]}");
}

/* ---- view renders ------------------------------------------------------------- */

static int renders_run; /* calls of the renders below */

/* Shows s/{id} as view "r:{id}" ({"n": ...}), or deletes it when absent. */
static ts_err render_n(ts_ctx *c, const char *id) {
    renders_run++;
    char key[64];
    snprintf(key, sizeof(key), "r:%s", id);
    json_t *doc = ts_ctx_get_json(c, "s", id);
    if (!doc)
        return ts_ctx_view_del(c, key);
    json_t *view = json_pack("{s:O}", "n", json_object_get(doc, "n"));
    ts_err err = ts_ctx_view_set_json(c, key, view);
    json_decref(view);
    json_decref(doc);
    return err;
}

/* A render that breaks the rule: it writes state. */
static ts_err render_writing(ts_ctx *c, const char *id) {
    return ts_ctx_put(c, "s", id, "x", 1);
}

/* An event at `offset` that stores {"n": n} under s/{id} (deletes it when
 * n < 0), asks for render_n(id) and ends with `result`. */
static void store_and_render(int64_t offset, const char *id, int n, ts_err result) {
    ts_event at = {.type = "T", .topic = "t", .offset = offset};
    ts_ctx_event_begin(ctx, &at);
    if (n >= 0) {
        json_t *doc = json_pack("{s:i}", "n", n);
        cr_assert_eq(ts_ctx_put_json(ctx, "s", id, doc), TS_OK);
        json_decref(doc);
    } else {
        cr_assert_eq(ts_ctx_del(ctx, "s", id), TS_OK);
    }
    cr_assert_eq(ts_ctx_view_render(ctx, render_n, id), TS_OK);
    ts_ctx_event_end(ctx, result, NULL);
}

static int live_del(const char *key) {
    for (size_t i = 0; i < ts_effects_count(effs); i++) {
        const ts_effect *e = ts_effects_at(effs, i);
        if (!e->dead && e->kind == TS_EFF_VIEW_DEL && strcmp(e->a.data, key) == 0)
            return 1;
    }
    return 0;
}

Test(ctx, a_render_runs_once_per_batch_from_the_final_state) {
    renders_run = 0;
    ts_ctx_defer_views(ctx, 1);
    store_and_render(1, "a", 1, TS_OK);
    store_and_render(2, "b", 2, TS_OK);
    store_and_render(3, "a", 3, TS_OK);
    cr_assert_eq(renders_run, 0, "nothing is rendered before the batch ends");
    cr_assert_null(live_view("r:a"));
    cr_assert_eq(ts_ctx_views_resolve(ctx), TS_OK);
    cr_assert_eq(renders_run, 2, "one render per (render, id), not per event");
    cr_assert_str_eq(live_view("r:a"), "{\"n\":3,\"version\":3}");
    cr_assert_str_eq(live_view("r:b"), "{\"n\":2,\"version\":2}");
    /* The next batch starts with no renders asked for. */
    cr_assert_eq(ts_ctx_views_resolve(ctx), TS_OK);
    cr_assert_eq(renders_run, 2);
}

Test(ctx, a_rejected_event_takes_its_render_asks_back) {
    renders_run = 0;
    ts_ctx_defer_views(ctx, 1);
    store_and_render(1, "a", 1, TS_OK);
    store_and_render(2, "a", 2, TS_E_REJECT); /* repeats an ask: its version goes */
    store_and_render(3, "b", 3, TS_E_REJECT); /* a new ask: it goes entirely */
    cr_assert_eq(ts_ctx_views_resolve(ctx), TS_OK);
    cr_assert_eq(renders_run, 1);
    cr_assert_str_eq(live_view("r:a"), "{\"n\":1,\"version\":1}");
    cr_assert_null(live_view("r:b"));
}

Test(ctx, a_render_of_deleted_state_deletes_the_view) {
    ts_ctx_defer_views(ctx, 1);
    store_and_render(1, "a", 1, TS_OK);
    store_and_render(2, "a", -1, TS_OK);
    cr_assert_eq(ts_ctx_views_resolve(ctx), TS_OK);
    cr_assert_null(live_view("r:a"));
    cr_assert(live_del("r:a"));
}

Test(ctx, without_deferred_views_a_render_runs_at_once) {
    renders_run = 0;
    store_and_render(4, "a", 7, TS_OK);
    cr_assert_eq(renders_run, 1);
    cr_assert_str_eq(live_view("r:a"), "{\"n\":7,\"version\":4}");
}

Test(ctx, a_render_that_writes_state_fails_the_batch) {
    ts_ctx_defer_views(ctx, 1);
    ts_ctx_event_begin(ctx, &ev);
    cr_assert_eq(ts_ctx_view_render(ctx, render_writing, "a"), TS_OK);
    cr_assert_eq(ts_ctx_event_end(ctx, TS_OK, NULL), TS_OK);
    cr_assert_eq(ts_ctx_views_resolve(ctx), TS_E_STATE);
    cr_assert_eq(ts_ctx_writes_count(ctx), 0, "the render's write was refused");
}

/* What a task checks against the largest Kafka message: the current event's
 * writes, key and serialized value, and only those. */
Test(ctx, an_events_largest_write_is_measured_on_its_serialized_documents) {
    json_t *small = json_pack("{s:i}", "n", 1);
    write_doc("s", "earlier", small, TS_OK); /* another event's write */
    ts_ctx_event_begin(ctx, &ev);
    cr_expect_eq(ts_ctx_event_largest_write(ctx), 0, "nothing written yet");
    json_t *big = json_pack("{s:s}", "text", "0123456789");
    cr_assert_eq(ts_ctx_put_json(ctx, "s", "k", big), TS_OK);
    cr_assert_eq(ts_ctx_put(ctx, "raw", "r", "abc", 3), TS_OK);
    /* "s\x1fk" and {"text":"0123456789"} */
    cr_expect_eq(ts_ctx_event_largest_write(ctx), 3 + 21);
    cr_expect_eq(ts_ctx_event_end(ctx, TS_OK, NULL), TS_OK);
    commit_batch();
    size_t i = 0;
    while (i < store.n && strcmp(store.keys[i], "s\x1fk") != 0)
        i++;
    cr_assert_lt(i, store.n);
    cr_expect_str_eq(store.vals[i], "{\"text\":\"0123456789\"}",
                     "the value measured is the one written");
    json_decref(big);
    json_decref(small);
}

Test(ctx, a_row_time_no_table_may_hold_rejects_the_event_even_if_the_processor_lets_it_go) {
    /* The years 1 to 9999 are stored. */
    ts_ctx_event_begin(ctx, &ev);
    ts_row *row = ts_ctx_row_upsert(ctx, "books");
    ts_row_key(row, "book_id", "b1");
    ts_row_time(row, "created_at", 253402300799999LL); /* 9999-12-31T23:59:59.999Z */
    cr_assert_eq(ts_row_done(row), TS_OK);
    cr_assert_eq(ts_ctx_event_end(ctx, TS_OK, NULL), TS_OK);
    cr_assert_eq(ts_effects_live(effs, 0), 1);

    /* One millisecond later is refused, with the state the event wrote. */
    ts_ctx_event_begin(ctx, &ev);
    cr_assert_eq(ts_ctx_put(ctx, "s", "k", "v", 1), TS_OK);
    row = ts_ctx_row_upsert(ctx, "books");
    ts_row_key(row, "book_id", "b2");
    ts_row_time(row, "created_at", 253402300800000LL);
    cr_assert_eq(ts_row_done(row), TS_E_REJECT);
    const char *why = NULL;
    /* The processor went on as if nothing happened: still rejected. */
    cr_assert_eq(ts_ctx_event_end(ctx, TS_OK, &why), TS_E_REJECT);
    cr_assert(why && strstr(why, "books.created_at") && strstr(why, "years 1 to 9999"), "%s",
              why ? why : "(none)");
    cr_assert_eq(ts_effects_live(effs, 0), 1, "the refused row's event added nothing");
    ts_ctx_event_begin(ctx, &ev);
    const char *val;
    size_t len;
    cr_assert_eq(ts_ctx_get(ctx, "s", "k", &val, &len), TS_E_NOTFOUND);
    ts_ctx_event_end(ctx, TS_OK, NULL);

    /* The next event is not marked by the last one's refusal. */
    ts_ctx_event_begin(ctx, &ev);
    row = ts_ctx_row_upsert(ctx, "books");
    ts_row_key(row, "book_id", "b3");
    ts_row_time(row, "created_at", -62135596800000LL); /* 0001-01-01T00:00:00.000Z */
    cr_assert_eq(ts_row_done(row), TS_OK);
    cr_assert_eq(ts_ctx_event_end(ctx, TS_OK, NULL), TS_OK);
    cr_assert_eq(ts_effects_live(effs, 0), 2);
}
