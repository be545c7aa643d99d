/* test_effects_blob.c - the serialized effects list (ts_effects_blob.c):
 * every kind comes back as it went in, rows of one shape carry their column
 * names once, the size never passes the bound a task closes its batch by,
 * and blobs of the first layout ("TSE1") still decode. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_effects.h"

static ts_bytes row_of(const char *id, const char *title, int ncols) {
    ts_rowcol cols[300];
    char names[300][16];
    for (int i = 0; i < ncols; i++) {
        snprintf(names[i], sizeof(names[i]), i == 0 ? "book_id" : "col_%d", i);
        cols[i] = (ts_rowcol){names[i], strlen(names[i]), i == 0 ? id : title,
                              i == 0 ? strlen(id) : (title ? strlen(title) : 0)};
    }
    return ts_rowcols_pack(cols, (size_t)ncols, 1);
}

static void add_row(ts_effects *effs, ts_effect_kind kind, const char *table,
                    const ts_bytes *row) {
    ts_bytes t = ts_bytes_str(table);
    cr_assert_eq(ts_effects_add(effs, kind, &t, row, NULL, NULL, 0), TS_OK);
}

static ts_bytes encode(const ts_effects *effs, int flags) {
    ts_buf out = {0};
    cr_assert_eq(ts_effects_encode_to(effs, &out, flags), TS_OK);
    return (ts_bytes){out.data, out.len};
}

static int same_bytes(const ts_bytes *x, const ts_bytes *y) {
    if (!x->data || !y->data)
        return !x->data && !y->data;
    return x->len == y->len && memcmp(x->data, y->data, x->len) == 0;
}

/* The live effects of `effs` in order, against every effect of `back`. */
static void expect_same_live(const ts_effects *effs, const ts_effects *back) {
    size_t j = 0;
    for (size_t i = 0; i < ts_effects_count(effs); i++) {
        const ts_effect *e = ts_effects_at(effs, i);
        if (e->dead)
            continue;
        cr_assert_lt(j, ts_effects_count(back), "effect %zu is missing", i);
        const ts_effect *g = ts_effects_at(back, j++);
        cr_expect_eq(g->kind, e->kind, "effect %zu", i);
        cr_expect(memcmp(&g->num, &e->num, sizeof(double)) == 0, "effect %zu: num %g vs %g", i,
                  g->num, e->num);
        cr_expect(same_bytes(&g->a, &e->a), "effect %zu: a", i);
        cr_expect(same_bytes(&g->b, &e->b), "effect %zu: b", i);
        cr_expect(same_bytes(&g->c, &e->c), "effect %zu: c", i);
        cr_expect(same_bytes(&g->d, &e->d), "effect %zu: d", i);
    }
    cr_expect_eq(j, ts_effects_count(back), "no effect added on the way back");
}

Test(effects_blob, every_kind_comes_back_as_it_went_in) {
    ts_effects *effs = ts_effects_create();
    ts_bytes k = ts_bytes_str("books:u1"), v = ts_bytes_str("[1,2]"), empty = {"", 0};
    cr_assert_eq(ts_effects_add(effs, TS_EFF_VIEW_SET, &k, &v, NULL, NULL, 0), TS_OK);
    ts_bytes k2 = ts_bytes_str("shelf:u1");
    cr_assert_eq(ts_effects_add(effs, TS_EFF_VIEW_DEL, &k2, NULL, NULL, NULL, 0), TS_OK);
    ts_bytes z = ts_bytes_str("top"), m = ts_bytes_str("{\"id\":\"p1\"}");
    cr_assert_eq(ts_effects_add(effs, TS_EFF_ZADD, &z, &m, NULL, NULL, 1712.25), TS_OK);
    ts_bytes m2 = ts_bytes_str("p2");
    cr_assert_eq(ts_effects_add(effs, TS_EFF_ZADD, &z, &m2, NULL, NULL, -0.0), TS_OK);
    cr_assert_eq(ts_effects_add(effs, TS_EFF_ZREM, &z, &empty, NULL, NULL, 0), TS_OK);
    cr_assert_eq(ts_effects_add(effs, TS_EFF_ZREM_BELOW, &z, NULL, NULL, NULL, -3.5), TS_OK);
    ts_bytes r1 = row_of("b1", "Moon", 6), r2 = row_of("b2", NULL, 6), del = row_of("b3", "", 1);
    add_row(effs, TS_EFF_ROW_UPSERT, "books", &r1);
    add_row(effs, TS_EFF_ROW_UPSERT, "books", &r2);
    add_row(effs, TS_EFF_ROW_DELETE, "books", &del);
    add_row(effs, TS_EFF_ROW_UPSERT, "book_pages", &r1); /* same names, other table */
    const char *names[] = {"error"}, *values[] = {"bad"};
    ts_bytes headers = ts_headers_pack(names, values, 1);
    ts_bytes topic = ts_bytes_str("out"), key = ts_bytes_str("u1"), body = {"\0\x01\xff", 3};
    cr_assert_eq(ts_effects_add(effs, TS_EFF_EMIT, &topic, &key, &body, &headers, 3), TS_OK);
    cr_assert_eq(ts_effects_add(effs, TS_EFF_EMIT, &topic, NULL, NULL, NULL, 0), TS_OK);
    add_row(effs, TS_EFF_ROW_UPSERT, "books", &r1); /* supersedes the first: dead */

    ts_bytes blob = encode(effs, 0);
    cr_expect(memcmp(blob.data, "TSE2", 4) == 0);
    ts_effects *back = ts_effects_create();
    cr_assert_eq(ts_effects_decode(back, blob.data, blob.len), TS_OK);
    expect_same_live(effs, back);

    /* By key, a view set comes back without its value, the rest as before. */
    free(blob.data);
    blob = encode(effs, TS_EFFECTS_VIEWS_BY_KEY);
    ts_effects *keyed = ts_effects_create();
    cr_assert_eq(ts_effects_decode(keyed, blob.data, blob.len), TS_OK);
    cr_expect_eq(ts_effects_at(keyed, 0)->kind, TS_EFF_VIEW_SET);
    cr_expect_null(ts_effects_at(keyed, 0)->b.data);
    cr_expect_eq(ts_effects_count(keyed), ts_effects_count(back));

    /* Every cut short of the end is refused, never read past. */
    for (size_t len = 4; len < blob.len; len++) {
        ts_effects *part = ts_effects_create();
        ts_err rc = ts_effects_decode(part, blob.data, len);
        cr_expect(rc == TS_E_DECODE || ts_effects_count(part) < ts_effects_count(keyed),
                  "a blob cut at %zu of %zu bytes", len, blob.len);
        ts_effects_destroy(part);
    }
    free(blob.data);
    free(r1.data);
    free(r2.data);
    free(del.data);
    free(headers.data);
    ts_effects_destroy(keyed);
    ts_effects_destroy(back);
    ts_effects_destroy(effs);
}

/* Encodes `effs` (no view sets: by key they come back without values),
 * checks the size against the bound and that the blob decodes to the same
 * live effects. @returns the blob's length. */
static size_t round_trip(const ts_effects *effs, int flags) {
    ts_bytes blob = encode(effs, flags);
    cr_expect_leq(blob.len, ts_effects_encoded_max(effs, flags));
    ts_effects *back = ts_effects_create();
    cr_assert_eq(ts_effects_decode(back, blob.data, blob.len), TS_OK);
    expect_same_live(effs, back);
    free(blob.data);
    ts_effects_destroy(back);
    return blob.len;
}

/* A batch's rows are most of its blob; their names come once per shape. */
Test(effects_blob, rows_of_one_shape_carry_their_names_once) {
    ts_effects *effs = ts_effects_create();
    char id[16];
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof(id), "b%d", i);
        ts_bytes row = row_of(id, "The Moon and the Owl", 8);
        add_row(effs, TS_EFF_ROW_UPSERT, "books", &row);
        free(row.data);
    }
    size_t len = round_trip(effs, TS_EFFECTS_VIEWS_BY_KEY);
    size_t bound = ts_effects_encoded_max(effs, TS_EFFECTS_VIEWS_BY_KEY);
    /* The first layout (what the bound counts) packed every row with its
     * names: all but the first row's are saved, and more. */
    size_t names = 8 * 2 + strlen("book_id") + 7 * strlen("col_1");
    cr_expect_lt(len + 999 * names, bound, "%zu bytes against %zu in the first layout", len,
                 bound);
    ts_effects_destroy(effs);
}

/* Past 127 shapes, or 256 columns, rows are written packed, and still come back. */
Test(effects_blob, rows_past_the_shape_limits_are_written_whole) {
    ts_effects *effs = ts_effects_create();
    char table[16];
    for (int i = 0; i < 200; i++) {
        ts_bytes row = row_of("b1", "t", 1 + i % 150);
        snprintf(table, sizeof(table), "t%d", i);
        add_row(effs, TS_EFF_ROW_UPSERT, table, &row);
        free(row.data);
    }
    ts_bytes wide = row_of("b9", "w", 300);
    add_row(effs, TS_EFF_ROW_UPSERT, "wide", &wide);
    free(wide.data);
    for (int flags = 0; flags <= TS_EFFECTS_VIEWS_BY_KEY; flags++)
        round_trip(effs, flags);
    ts_effects_destroy(effs);
}

/* What a runtime before "TSE2" stored (a pending record) or sent (a marker). */
Test(effects_blob, a_blob_of_the_first_layout_still_decodes) {
    ts_effects *effs = ts_effects_create();
    ts_bytes row = row_of("b1", "Moon", 4);
    ts_buf v1 = {0};
    ts_buf_put(&v1, "TSE1", 4);
    struct {
        uint8_t kind;
        double num;
        ts_bytes a, b, c, d;
    } in[] = {
        {TS_EFF_VIEW_SET, 0, ts_bytes_str("books:u1"), {NULL, 0}, {NULL, 0}, {NULL, 0}},
        {TS_EFF_ZADD, 2.5, ts_bytes_str("top"), ts_bytes_str("p1"), {NULL, 0}, {NULL, 0}},
        {TS_EFF_ROW_UPSERT, 0, ts_bytes_str("books"), row, {NULL, 0}, {NULL, 0}},
        {TS_EFF_EMIT, 1, ts_bytes_str("out"), ts_bytes_str("k"), ts_bytes_str("v"), {NULL, 0}},
    };
    for (size_t i = 0; i < 4; i++) {
        ts_buf_put(&v1, &in[i].kind, 1);
        ts_buf_put(&v1, &in[i].num, sizeof(double));
        ts_buf_field(&v1, &in[i].a);
        ts_buf_field(&v1, &in[i].b);
        ts_buf_field(&v1, &in[i].c);
        ts_buf_field(&v1, &in[i].d);
        cr_assert_eq(ts_effects_add(effs, in[i].kind, &in[i].a, &in[i].b, &in[i].c, &in[i].d,
                                    in[i].num),
                     TS_OK);
    }
    ts_effects *back = ts_effects_create();
    cr_assert_eq(ts_effects_decode(back, v1.data, v1.len), TS_OK);
    expect_same_live(effs, back);
    ts_effects *none = ts_effects_create();
    cr_expect_eq(ts_effects_decode(none, "TSE3", 4), TS_E_DECODE, "an unknown layout");
    ts_effects_destroy(none);
    ts_effects_destroy(back);
    ts_effects_destroy(effs);
    ts_buf_close(&v1);
    free(row.data);
}
