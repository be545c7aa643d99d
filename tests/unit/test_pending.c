/* test_pending.c - the stored form of a decided batch (ts_pending.c): its two
 * forms, references (changelog values, view values) resolved at re-send, and
 * malformed records refused. */
#include <criterion/criterion.h>
#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_pending.h"

/* The local state the references resolve against: changelog key -> value. */
typedef struct fake_local {
    const char *keys[4], *vals[4];
    size_t n, lookups;
} fake_local;

static ts_err fake_resolve(void *arg, const ts_bytes *key, char **val, size_t *vlen) {
    fake_local *fl = arg;
    fl->lookups++;
    for (size_t i = 0; i < fl->n; i++)
        if (strlen(fl->keys[i]) == key->len && memcmp(fl->keys[i], key->data, key->len) == 0) {
            *val = strdup(fl->vals[i]);
            *vlen = strlen(fl->vals[i]);
            return TS_OK;
        }
    return TS_E_NOTFOUND;
}

static ts_effects *processor_effects(void) {
    ts_effects *effs = ts_effects_create();
    ts_bytes k = ts_bytes_str("books:u1"), v = ts_bytes_str("[1,2]");
    cr_assert_eq(ts_effects_add(effs, TS_EFF_VIEW_SET, &k, &v, NULL, NULL, 0), TS_OK);
    ts_bytes t = ts_bytes_str("orders"), m = ts_bytes_str("o-7");
    cr_assert_eq(ts_effects_add(effs, TS_EFF_EMIT, &t, &m, &v, NULL, 0), TS_OK);
    return effs;
}

static int bytes_eq(const ts_bytes *b, const char *s) {
    return b->data && b->len == strlen(s) && memcmp(b->data, s, b->len) == 0;
}

Test(pending, a_full_form_resends_the_changelog_with_current_values_and_the_marker) {
    ts_effects *effs = processor_effects();
    ts_buf q = {0};
    ts_pending_begin(&q, 40, 45, effs);
    ts_bytes s1 = ts_bytes_str("Sshelf\x1fu1"), gone = ts_bytes_str("Vold:view");
    ts_bytes z = ts_bytes_str("Z40"), ids = {"a\0b", 3};
    ts_pending_add_ref(&q, &s1);
    ts_pending_add_inline(&q, &z, &ids);
    ts_pending_add_ref(&q, &gone);
    cr_assert_not(q.failed);

    fake_local local = {{"Sshelf\x1fu1", "Vbooks:u1"}, {"{\"n\":3}", "[1,2]"}, 2, 0};
    ts_pending_changelog cl = {"app-changelog", 5, fake_resolve, &local};
    ts_effects *back = ts_effects_create();
    int64_t first = 0, next = 0;
    cr_assert_eq(ts_pending_decode(q.data, q.len, &cl, back, &first, &next), TS_OK);
    cr_expect_eq(first, 40);
    cr_expect_eq(next, 45);
    cr_assert_eq(ts_effects_count(back), 6, "2 processor effects, 3 records, the marker");
    cr_expect_eq(ts_effects_at(back, 0)->kind, TS_EFF_VIEW_SET);
    cr_expect(bytes_eq(&ts_effects_at(back, 0)->b, "[1,2]"), "the view's value from its mirror");
    cr_expect(bytes_eq(&ts_effects_at(back, 1)->b, "o-7"));

    const ts_effect *rec = ts_effects_at(back, 2);
    cr_expect_eq(rec->kind, TS_EFF_EMIT);
    cr_expect(bytes_eq(&rec->a, "app-changelog"));
    cr_expect_eq(rec->num, 6.0, "partition + 1");
    cr_expect(bytes_eq(&rec->c, "{\"n\":3}"), "the reference reads the local value");
    rec = ts_effects_at(back, 3);
    cr_expect(rec->c.len == 3 && memcmp(rec->c.data, "a\0b", 3) == 0, "inline bytes as stored");
    rec = ts_effects_at(back, 4);
    cr_expect(bytes_eq(&rec->b, "Vold:view"));
    cr_expect_null(rec->c.data, "a key gone from the state is a tombstone");
    cr_expect_eq(local.lookups, 3, "the view and two references");

    /* The marker is the marker form, which a restore stores and decodes. */
    rec = ts_effects_at(back, 5);
    cr_expect(bytes_eq(&rec->b, "M"));
    ts_bytes marker = ts_pending_marker(&q);
    size_t copies = 0;
    for (const char *p = marker.data, *end = marker.data + marker.len;
         (p = memmem(p, (size_t)(end - p), "[1,2]", 5)); p += 5)
        copies++;
    cr_expect_eq(copies, 1, "the output event's value only, not the view's");
    cr_assert_eq(rec->c.len, marker.len);
    cr_expect_eq(memcmp(rec->c.data, marker.data, marker.len), 0);
    uint64_t be;
    memcpy(&be, marker.data, 8);
    cr_expect_eq(be64toh(be), 40);

    ts_effects *restored = ts_effects_create();
    cr_assert_eq(ts_pending_decode(marker.data, marker.len, &cl, restored, &first, &next), TS_OK);
    cr_expect_eq(ts_effects_count(restored), 2, "a marker form holds the processor's effects only");
    cr_expect_eq(next, 45);

    ts_effects_destroy(restored);
    ts_effects_destroy(back);
    ts_effects_destroy(effs);
    ts_buf_close(&q);
}

Test(pending, without_a_changelog_only_the_processor_effects_come_back) {
    ts_effects *effs = processor_effects();
    ts_buf q = {0};
    ts_pending_begin(&q, 7, 9, effs);
    fake_local local = {{"Vbooks:u1"}, {"[1,2]"}, 1, 0};
    ts_pending_changelog none = {NULL, 0, fake_resolve, &local};
    ts_effects *back = ts_effects_create();
    int64_t first, next;
    cr_assert_eq(ts_pending_decode(q.data, q.len, &none, back, &first, &next), TS_OK);
    cr_expect_eq(ts_effects_count(back), 2);
    cr_expect_eq(first, 7);

    local.n = 0; /* the mirror lost the view: the record is not usable */
    ts_effects_clear(back);
    cr_expect_eq(ts_pending_decode(q.data, q.len, &none, back, &first, &next), TS_E_DECODE);
    ts_effects_destroy(back);
    ts_effects_destroy(effs);
    ts_buf_close(&q);
}

Test(pending, truncated_or_unknown_records_are_refused) {
    ts_effects *effs = processor_effects();
    ts_buf q = {0};
    ts_pending_begin(&q, 1, 2, effs);
    ts_bytes k = ts_bytes_str("Sk");
    ts_pending_add_ref(&q, &k);
    fake_local local = {{"Sk", "Vbooks:u1"}, {"v", "[1,2]"}, 2, 0};
    ts_pending_changelog cl = {"cl", 0, fake_resolve, &local};
    int64_t first, next;
    size_t whole_marker = 8 + ts_pending_marker(&q).len; /* a valid form with no records */
    for (size_t cut = 1; cut < q.len; cut++) {
        if (cut == whole_marker)
            continue;
        ts_effects *back = ts_effects_create();
        cr_expect_eq(ts_pending_decode(q.data, cut, &cl, back, &first, &next), TS_E_DECODE,
                     "cut at %zu of %zu", cut, q.len);
        ts_effects_destroy(back);
    }
    q.data[q.len - 7] = 'X'; /* the record's form byte */
    ts_effects *back = ts_effects_create();
    cr_expect_eq(ts_pending_decode(q.data, q.len, &cl, back, &first, &next), TS_E_DECODE);
    ts_effects_destroy(back);
    ts_effects_destroy(effs);
    ts_buf_close(&q);
}

/* The bytes ts_effects_encode_to appends for `effs` with `flags`. */
static size_t encoded_len(const ts_effects *effs, int flags) {
    ts_buf out = {0};
    cr_assert_eq(ts_effects_encode_to(effs, &out, flags), TS_OK);
    size_t len = out.len;
    ts_buf_close(&out);
    return len;
}

/* A task closes its batch by this bound, so that its marker (views by key)
 * stays below Kafka's message limit: it must never be below the real size. */
Test(pending, the_encoded_size_is_bounded_before_the_blob_is_made) {
    ts_effects *effs = ts_effects_create();
    char big[4096];
    memset(big, 'x', sizeof(big));
    ts_bytes view = ts_bytes_str("books:u1"), value = {big, sizeof(big)};
    ts_bytes table = ts_bytes_str("orders"), key = ts_bytes_str("o-7"), body = {big, 100};
    cr_assert_eq(ts_effects_add(effs, TS_EFF_VIEW_SET, &view, &value, NULL, NULL, 0), TS_OK);
    cr_assert_eq(ts_effects_add(effs, TS_EFF_EMIT, &table, &key, &body, NULL, 0), TS_OK);
    /* With no dead effect, the bound is the size in the first layout (TSE1):
     * the current one is shorter. */
    cr_expect_geq(ts_effects_encoded_max(effs, 0), encoded_len(effs, 0));
    cr_expect_geq(ts_effects_encoded_max(effs, TS_EFFECTS_VIEWS_BY_KEY),
                  encoded_len(effs, TS_EFFECTS_VIEWS_BY_KEY));
    cr_expect_lt(ts_effects_encoded_max(effs, 0) - encoded_len(effs, 0), 40,
                 "the bound is not far above the size either");
    cr_expect_lt(ts_effects_encoded_max(effs, TS_EFFECTS_VIEWS_BY_KEY), 1000,
                 "by key, a view's value is not counted");

    /* A view set again (the first one dead), one rolled back, one whose
     * value comes later (a deferred view). */
    cr_assert_eq(ts_effects_add(effs, TS_EFF_VIEW_SET, &view, &body, NULL, NULL, 0), TS_OK);
    size_t kept = ts_effects_mark(effs);
    cr_assert_eq(ts_effects_add(effs, TS_EFF_EMIT, &table, &key, &value, NULL, 0), TS_OK);
    ts_effects_rollback(effs, kept);
    ts_bytes later = ts_bytes_str("later:1");
    cr_assert_eq(ts_effects_add(effs, TS_EFF_VIEW_SET, &later, NULL, NULL, NULL, 0), TS_OK);
    cr_assert_eq(ts_effects_set_b(effs, kept, &value), TS_OK);
    for (int flags = 0; flags <= TS_EFFECTS_VIEWS_BY_KEY; flags++)
        cr_expect_geq(ts_effects_encoded_max(effs, flags), encoded_len(effs, flags),
                      "flags %d: the bound is below the real size", flags);
    cr_expect_lt(ts_effects_encoded_max(effs, TS_EFFECTS_VIEWS_BY_KEY), 1000);
    cr_expect_gt(ts_effects_encoded_max(effs, 0), 2 * sizeof(big));
    ts_effects_destroy(effs);
}

/* A cleared list gives a large slot array back (ts_effects_clear): what is
 * added next, on a fresh array, still coalesces, rolls back and revives. */
Test(pending, a_list_cleared_after_a_large_batch_works_as_new) {
    ts_effects *effs = ts_effects_create();
    char key[32];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 5000; i++) {
            snprintf(key, sizeof(key), "v:%d", i % 2500);
            ts_bytes view = ts_bytes_str(key), value = ts_bytes_str(round ? "new" : "old");
            cr_assert_eq(ts_effects_add(effs, TS_EFF_VIEW_SET, &view, &value, NULL, NULL, 0),
                         TS_OK);
        }
        cr_expect_eq(ts_effects_count(effs), 5000);
        cr_expect_eq(ts_effects_live(effs, 0), 2500, "round %d: sets of one key coalesce", round);
        ts_effects_clear(effs);
        cr_expect_eq(ts_effects_count(effs), 0);
    }
    ts_bytes view = ts_bytes_str("v:1"), first = ts_bytes_str("first"), second = ts_bytes_str("2");
    cr_assert_eq(ts_effects_add(effs, TS_EFF_VIEW_SET, &view, &first, NULL, NULL, 0), TS_OK);
    size_t mark = ts_effects_mark(effs);
    cr_assert_eq(ts_effects_add(effs, TS_EFF_VIEW_SET, &view, &second, NULL, NULL, 0), TS_OK);
    cr_expect(ts_effects_at(effs, 0)->dead);
    ts_effects_rollback(effs, mark);
    cr_expect_eq(ts_effects_count(effs), 1);
    cr_expect_not(ts_effects_at(effs, 0)->dead, "the rolled-back set revives the first");
    cr_expect(bytes_eq(&ts_effects_at(effs, 0)->b, "first"));
    ts_effects_destroy(effs);
}
