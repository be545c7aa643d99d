/* test_storybook.c - the storybook processor's rules (CONTRACT.md section 4),
 * run through the in-memory test driver, plus the driver's own guarantees
 * (a rejected event is undone inside a batch, batching does not change results). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "ts_ctx.h"
#include "ts_driver_check.h"

extern const ts_processor_def ts_processor_storybook;

static ts_driver *drv;
static int next_event_id;

static ts_driver *new_driver(void) {
    ts_driver *d = ts_driver_create(&ts_processor_storybook, NULL, "storybook.events");
    cr_assert_not_null(d, "driver for storybook");
    ts_driver_set_key_field(d, "user_id");
    return d;
}

static void setup(void) {
    drv = new_driver();
    next_event_id = 0;
}

static void teardown(void) { ts_driver_destroy(drv); }

TestSuite(storybook, .init = setup, .fini = teardown);

#define send_to(d, ...) ts_driver_sendf((d), &next_event_id, __VA_ARGS__)

static ts_err created_on(ts_driver *d, const char *book, const char *user, const char *title,
                         const char *at) {
    return send_to(d, "BookCreated",
                   "\"book_id\": \"%s\", \"user_id\": \"%s\", \"title\": \"%s\", "
                   "\"created_at\": \"%s\"",
                   book, user, title, at);
}
static ts_err created(const char *book, const char *user, const char *title, const char *at) {
    return created_on(drv, book, user, title, at);
}

static ts_err page_on(ts_driver *d, const char *book, const char *user, int no, const char *text,
                      const char *at) {
    return send_to(d, "PageUpserted",
                   "\"book_id\": \"%s\", \"user_id\": \"%s\", \"page_no\": %d, \"text\": \"%s\", "
                   "\"updated_at\": \"%s\"",
                   book, user, no, text, at);
}
static ts_err page(const char *book, const char *user, int no, const char *text, const char *at) {
    return page_on(drv, book, user, no, text, at);
}

static ts_err page_deleted(const char *book, const char *user, int no, const char *at) {
    return send_to(drv, "PageDeleted",
                   "\"book_id\": \"%s\", \"user_id\": \"%s\", \"page_no\": %d, "
                   "\"deleted_at\": \"%s\"",
                   book, user, no, at);
}

static ts_err deleted_on(ts_driver *d, const char *book, const char *user, const char *at) {
    return send_to(d, "BookDeleted",
                   "\"book_id\": \"%s\", \"user_id\": \"%s\", \"deleted_at\": \"%s\"", book, user,
                   at);
}
static ts_err deleted(const char *book, const char *user, const char *at) {
    return deleted_on(drv, book, user, at);
}

static ts_err updated(const char *book, const char *user, const char *title_json,
                      const char *cover_json, const char *at) {
    return send_to(drv, "BookUpdated",
                   "\"book_id\": \"%s\", \"user_id\": \"%s\", \"title\": %s, "
                   "\"cover_image_url\": %s, \"updated_at\": \"%s\"",
                   book, user, title_json, cover_json, at);
}

static json_t *book_view(const char *book) {
    char key[128];
    snprintf(key, sizeof(key), "storybook:book:%s", book);
    return ts_driver_view_json(drv, key);
}

static json_t *list_view(const char *user) {
    char key[128];
    snprintf(key, sizeof(key), "storybook:books:%s", user);
    return ts_driver_view_json(drv, key);
}

/* Every view, row and state key of `d`, as one JSON document, to compare worlds. */
static char *snapshot(ts_driver *d, const char *const *views, size_t nviews) {
    json_t *all = json_object();
    for (size_t i = 0; i < nviews; i++) {
        const char *s = ts_driver_view_str(d, views[i]);
        json_object_set_new(all, views[i], s ? json_string(s) : json_null());
    }
    json_object_set_new(all, "rows.books", json_integer((json_int_t)ts_driver_row_count(d, "books")));
    json_object_set_new(all, "rows.pages",
                        json_integer((json_int_t)ts_driver_row_count(d, "book_pages")));
    json_object_set_new(all, "state", json_integer((json_int_t)ts_driver_state_count(d)));
    json_object_set_new(all, "views", json_integer((json_int_t)ts_driver_view_count(d)));
    char *text = json_dumps(all, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(all);
    return text;
}

/* ---- views ------------------------------------------------------------------- */

Test(storybook, book_created_makes_detail_and_list_views) {
    ok(created("b1", "u1", "The Fox", "2026-01-02T03:04:05.678Z"));
    json_t *v = book_view("b1");
    cr_assert_not_null(v);
    cr_expect_str_eq(sfield(v, "id"), "b1");
    cr_expect_str_eq(sfield(v, "userId"), "u1");
    cr_expect_str_eq(sfield(v, "title"), "The Fox");
    cr_expect(json_is_null(json_object_get(v, "coverImageUrl")), "absent cover is null");
    cr_expect_eq(json_array_size(json_object_get(v, "pages")), 0);
    cr_expect_str_eq(sfield(v, "createdAt"), "2026-01-02T03:04:05.678Z");
    cr_expect_str_eq(sfield(v, "updatedAt"), "2026-01-02T03:04:05.678Z");
    cr_expect_eq(ifield(v, "version"), 0);
    json_decref(v);

    json_t *l = list_view("u1");
    cr_assert(json_is_array(l));
    cr_assert_eq(json_array_size(l), 1);
    json_t *e = json_array_get(l, 0);
    cr_expect_str_eq(sfield(e, "id"), "b1");
    cr_expect_str_eq(sfield(e, "title"), "The Fox");
    cr_expect(json_is_null(json_object_get(e, "coverImageUrl")));
    cr_expect_eq(ifield(e, "pageCount"), 0);
    cr_expect_str_eq(sfield(e, "createdAt"), "2026-01-02T03:04:05.678Z");
    cr_expect_str_eq(sfield(e, "updatedAt"), "2026-01-02T03:04:05.678Z");
    cr_expect_null(json_object_get(e, "version"), "the list is an array: no version");
    cr_expect_eq(json_object_size(e), 6);
    json_decref(l);
}

Test(storybook, created_with_cover_shows_cover) {
    ok(send_to(drv, "BookCreated",
               "\"book_id\": \"b1\", \"user_id\": \"u1\", \"title\": \"T\", "
               "\"cover_image_url\": \"https://img/c.png\", \"created_at\": 1700000000000"));
    json_t *v = book_view("b1");
    cr_expect_str_eq(sfield(v, "coverImageUrl"), "https://img/c.png");
    cr_expect_str_eq(sfield(v, "createdAt"), "2023-11-14T22:13:20.000Z");
    json_decref(v);
}

Test(storybook, page_upserted_twice_gives_pages_in_page_order) {
    ok(created("b1", "u1", "T", "2026-01-01T00:00:00Z"));
    ok(page("b1", "u1", 2, "second", "2026-01-01T00:00:02Z"));
    ok(send_to(drv, "PageUpserted",
               "\"book_id\": \"b1\", \"user_id\": \"u1\", \"page_no\": 1, \"text\": \"first\", "
               "\"image_url\": \"https://i/1.png\", \"audio_url\": \"https://a/1.mp3\", "
               "\"updated_at\": \"2026-01-01T00:00:03Z\""));
    json_t *v = book_view("b1");
    json_t *pages = json_object_get(v, "pages");
    cr_assert_eq(json_array_size(pages), 2);
    json_t *p1 = json_array_get(pages, 0), *p2 = json_array_get(pages, 1);
    cr_expect_eq(ifield(p1, "pageNo"), 1);
    cr_expect_str_eq(sfield(p1, "text"), "first");
    cr_expect_str_eq(sfield(p1, "imageUrl"), "https://i/1.png");
    cr_expect_str_eq(sfield(p1, "audioUrl"), "https://a/1.mp3");
    cr_expect_eq(ifield(p2, "pageNo"), 2);
    cr_expect(json_is_null(json_object_get(p2, "imageUrl")));
    cr_expect(json_is_null(json_object_get(p2, "audioUrl")));
    cr_expect_eq(json_object_size(p2), 4);
    cr_expect_str_eq(sfield(v, "updatedAt"), "2026-01-01T00:00:03.000Z", "a page change sets updatedAt");
    cr_expect_str_eq(sfield(v, "createdAt"), "2026-01-01T00:00:00.000Z");
    json_decref(v);

    json_t *l = list_view("u1");
    cr_expect_eq(ifield(json_array_get(l, 0), "pageCount"), 2);
    cr_expect_str_eq(sfield(json_array_get(l, 0), "updatedAt"), "2026-01-01T00:00:03.000Z");
    json_decref(l);
}

Test(storybook, page_upserted_again_replaces_the_page) {
    ok(created("b1", "u1", "T", "2026-01-01T00:00:00Z"));
    ok(send_to(drv, "PageUpserted",
               "\"book_id\": \"b1\", \"user_id\": \"u1\", \"page_no\": 1, \"text\": \"old\", "
               "\"image_url\": \"https://i/1.png\", \"updated_at\": \"2026-01-01T00:00:01Z\""));
    ok(page("b1", "u1", 1, "new", "2026-01-01T00:00:02Z"));
    json_t *v = book_view("b1");
    json_t *pages = json_object_get(v, "pages");
    cr_assert_eq(json_array_size(pages), 1);
    cr_expect_str_eq(sfield(json_array_get(pages, 0), "text"), "new");
    cr_expect(json_is_null(json_object_get(json_array_get(pages, 0), "imageUrl")),
              "an upsert replaces the whole page");
    json_decref(v);
    cr_expect_eq(ts_driver_row_count(drv, "book_pages"), 1);
}

Test(storybook, book_updated_changes_only_present_fields) {
    ok(send_to(drv, "BookCreated",
               "\"book_id\": \"b1\", \"user_id\": \"u1\", \"title\": \"Old\", "
               "\"cover_image_url\": \"https://c/1\", \"created_at\": \"2026-01-01T00:00:00Z\""));
    ok(updated("b1", "u1", "\"New\"", "null", "2026-01-01T00:01:00Z"));
    json_t *v = book_view("b1");
    cr_expect_str_eq(sfield(v, "title"), "New");
    cr_expect_str_eq(sfield(v, "coverImageUrl"), "https://c/1", "null cover means unchanged");
    cr_expect_str_eq(sfield(v, "updatedAt"), "2026-01-01T00:01:00.000Z");
    json_decref(v);

    ok(updated("b1", "u1", "null", "\"https://c/2\"", "2026-01-01T00:02:00Z"));
    v = book_view("b1");
    cr_expect_str_eq(sfield(v, "title"), "New", "null title means unchanged");
    cr_expect_str_eq(sfield(v, "coverImageUrl"), "https://c/2");
    json_decref(v);

    json_t *l = list_view("u1");
    cr_expect_str_eq(sfield(json_array_get(l, 0), "title"), "New");
    cr_expect_str_eq(sfield(json_array_get(l, 0), "coverImageUrl"), "https://c/2");
    cr_expect_str_eq(sfield(json_array_get(l, 0), "updatedAt"), "2026-01-01T00:02:00.000Z");
    json_decref(l);

    json_t *row = ts_driver_row(drv, "books", "b1");
    cr_expect_str_eq(sfield(row, "title"), "New");
    cr_expect_str_eq(sfield(row, "cover_image_url"), "https://c/2");
    cr_expect_str_eq(sfield(row, "updated_at"), "2026-01-01T00:02:00.000Z");
    json_decref(row);
}

Test(storybook, list_newest_first_ties_by_id) {
    ok(created("b-mid", "u1", "Mid", "2026-01-02T00:00:00Z"));
    ok(created("b-old", "u1", "Old", "2026-01-01T00:00:00Z"));
    ok(created("b-new", "u1", "New", "2026-01-03T00:00:00Z"));
    ok(created("b-tie-z", "u1", "TieZ", "2026-01-02T00:00:00Z"));
    ok(created("b-tie-a", "u1", "TieA", "2026-01-02T00:00:00Z"));
    ok(created("b-other", "u2", "Other", "2026-01-05T00:00:00Z"));
    /* A later update does not move a book: the order is by creation. */
    ok(updated("b-old", "u1", "\"Old2\"", "null", "2026-02-01T00:00:00Z"));

    const char *want[] = {"b-new", "b-mid", "b-tie-a", "b-tie-z", "b-old"};
    json_t *l = list_view("u1");
    cr_assert_eq(json_array_size(l), 5);
    for (size_t i = 0; i < 5; i++)
        cr_expect_str_eq(sfield(json_array_get(l, i), "id"), want[i], "position %zu", i);
    json_decref(l);
    l = list_view("u2");
    cr_expect_eq(json_array_size(l), 1, "a user's list holds only their books");
    json_decref(l);
}

Test(storybook, version_is_offset_of_last_event_applied) {
    ok(created("b1", "u1", "One", "2026-01-01T00:00:00Z"));  /* offset 0 */
    ok(created("b2", "u1", "Two", "2026-01-01T00:00:01Z"));  /* offset 1 */
    ok(page("b1", "u1", 1, "p", "2026-01-01T00:00:02Z"));     /* offset 2 */
    rejected(page("b1", "u1", 0, "p", "2026-01-01T00:00:03Z"), "page_no"); /* offset 3 */
    ok(updated("b2", "u1", "\"Two!\"", "null", "2026-01-01T00:00:04Z")); /* offset 4 */
    cr_expect_eq(ts_driver_last_offset(drv), 4);
    json_t *v1 = book_view("b1"), *v2 = book_view("b2");
    cr_expect_eq(ifield(v1, "version"), 2);
    cr_expect_eq(ifield(v2, "version"), 4);
    json_decref(v1);
    json_decref(v2);
}

/* ---- rejects ------------------------------------------------------------------- */

Test(storybook, book_updated_for_unknown_book_is_rejected_and_changes_nothing) {
    ok(created("b1", "u1", "T", "2026-01-01T00:00:00Z"));
    const char *views[] = {"storybook:book:b1", "storybook:books:u1", "storybook:book:b9"};
    char *before = snapshot(drv, views, 3);
    rejected(updated("b9", "u1", "\"X\"", "null", "2026-01-01T00:01:00Z"), "b9");
    cr_expect(strstr(ts_driver_last_reason(drv), "does not exist"));
    cr_expect_eq(ts_effects_live(ts_driver_effects(drv), 0), 0, "no effect survives");
    char *after = snapshot(drv, views, 3);
    cr_expect_str_eq(after, before);
    free(before);
    free(after);
}

Test(storybook, events_for_unknown_book_are_rejected) {
    rejected(updated("b9", "u1", "\"X\"", "null", "2026-01-01T00:00:00Z"), "book b9 does not exist");
    rejected(deleted("b9", "u1", "2026-01-01T00:00:00Z"), "book b9 does not exist");
    rejected(page("b9", "u1", 1, "t", "2026-01-01T00:00:00Z"), "book b9 does not exist");
    rejected(page_deleted("b9", "u1", 1, "2026-01-01T00:00:00Z"), "book b9 does not exist");
    cr_expect_eq(ts_driver_view_count(drv), 0);
    cr_expect_eq(ts_driver_state_count(drv), 0);
    cr_expect_eq(ts_driver_row_count(drv, "books"), 0);
}

Test(storybook, wrong_owner_is_rejected) {
    ok(created("b1", "u1", "T", "2026-01-01T00:00:00Z"));
    ok(page("b1", "u1", 1, "t", "2026-01-01T00:00:01Z"));
    const char *views[] = {"storybook:book:b1", "storybook:books:u1", "storybook:books:u2"};
    char *before = snapshot(drv, views, 3);
    rejected(updated("b1", "u2", "\"Mine\"", "null", "2026-01-01T00:01:00Z"),
             "user u2 is not the owner of book b1");
    rejected(deleted("b1", "u2", "2026-01-01T00:01:00Z"), "not the owner");
    rejected(page("b1", "u2", 2, "t", "2026-01-01T00:01:00Z"), "not the owner");
    rejected(page_deleted("b1", "u2", 1, "2026-01-01T00:01:00Z"), "not the owner");
    rejected(created("b1", "u2", "Steal", "2026-01-01T00:01:00Z"), "already exists");
    char *after = snapshot(drv, views, 3);
    cr_expect_str_eq(after, before);
    free(before);
    free(after);
}

Test(storybook, book_created_for_existing_book_is_rejected) {
    ok(created("b1", "u1", "T", "2026-01-01T00:00:00Z"));
    rejected(created("b1", "u1", "Again", "2026-01-02T00:00:00Z"), "book b1 already exists");
    json_t *v = book_view("b1");
    cr_expect_str_eq(sfield(v, "title"), "T");
    cr_expect_eq(ifield(v, "version"), 0);
    json_decref(v);
}

Test(storybook, page_no_below_one_is_rejected) {
    ok(created("b1", "u1", "T", "2026-01-01T00:00:00Z"));
    rejected(page("b1", "u1", 0, "t", "2026-01-01T00:00:01Z"), "page_no 0 is below 1");
    rejected(page("b1", "u1", -3, "t", "2026-01-01T00:00:01Z"), "page_no -3");
    rejected(page_deleted("b1", "u1", 0, "2026-01-01T00:00:01Z"), "below 1");
    cr_expect_eq(ts_driver_row_count(drv, "book_pages"), 0);
    json_t *v = book_view("b1");
    cr_expect_eq(json_array_size(json_object_get(v, "pages")), 0);
    json_decref(v);
}

Test(storybook, page_deleted_of_missing_page_is_rejected) {
    ok(created("b1", "u1", "T", "2026-01-01T00:00:00Z"));
    ok(page("b1", "u1", 1, "t", "2026-01-01T00:00:01Z"));
    rejected(page_deleted("b1", "u1", 2, "2026-01-01T00:00:02Z"), "book b1 has no page 2");
    json_t *v = book_view("b1");
    cr_expect_str_eq(sfield(v, "updatedAt"), "2026-01-01T00:00:01.000Z");
    json_decref(v);
}

Test(storybook, undecodable_json_event_is_refused_by_the_encoder) {
    cr_expect_eq(send_to(drv, "PageUpserted",
                         "\"book_id\": \"b1\", \"user_id\": \"u1\", \"page_no\": \"one\", "
                         "\"text\": \"t\", \"updated_at\": 0"),
                 TS_E_INVALID);
    cr_expect(strstr(ts_driver_last_reason(drv), "page_no"), "%s", ts_driver_last_reason(drv));
    cr_expect_eq(ts_driver_last_offset(drv), -1, "no message was produced");
}

/* ---- deletes ------------------------------------------------------------------- */

Test(storybook, page_delete_removes_page_and_row) {
    ok(created("b1", "u1", "T", "2026-01-01T00:00:00Z"));
    ok(page("b1", "u1", 1, "one", "2026-01-01T00:00:01Z"));
    ok(page("b1", "u1", 2, "two", "2026-01-01T00:00:02Z"));
    ok(page("b1", "u1", 3, "three", "2026-01-01T00:00:03Z"));
    ok(page_deleted("b1", "u1", 2, "2026-01-01T00:00:04Z"));
    json_t *v = book_view("b1");
    json_t *pages = json_object_get(v, "pages");
    cr_assert_eq(json_array_size(pages), 2);
    cr_expect_eq(ifield(json_array_get(pages, 0), "pageNo"), 1);
    cr_expect_eq(ifield(json_array_get(pages, 1), "pageNo"), 3);
    cr_expect_str_eq(sfield(v, "updatedAt"), "2026-01-01T00:00:04.000Z");
    json_decref(v);
    json_t *l = list_view("u1");
    cr_expect_eq(ifield(json_array_get(l, 0), "pageCount"), 2);
    json_decref(l);
    cr_expect_eq(ts_driver_row_count(drv, "book_pages"), 2);
    json_t *gone = ts_driver_row(drv, "book_pages", "b1|2");
    cr_expect_null(gone);
    json_decref(gone);
    json_t *kept = ts_driver_row(drv, "book_pages", "b1|3");
    cr_expect_str_eq(sfield(kept, "text"), "three");
    json_decref(kept);
}

Test(storybook, book_deleted_removes_book_view_and_list_becomes_empty) {
    ok(created("b1", "u1", "T", "2026-01-01T00:00:00Z"));
    ok(page("b1", "u1", 1, "t", "2026-01-01T00:00:01Z"));
    ok(deleted("b1", "u1", "2026-01-01T00:00:02Z"));
    cr_expect_null(ts_driver_view_str(drv, "storybook:book:b1"));
    cr_expect_str_eq(ts_driver_view_str(drv, "storybook:books:u1"), "[]");
    cr_expect_null(ts_driver_state_json(drv, "book", "b1"), "book state gone");
    cr_expect_null(ts_driver_state_json(drv, "user_books", "u1"), "empty list not stored");
    rejected(page("b1", "u1", 2, "t", "2026-01-01T00:00:03Z"), "does not exist");
    rejected(deleted("b1", "u1", "2026-01-01T00:00:03Z"), "does not exist");
}

Test(storybook, book_deleted_keeps_other_books_in_list) {
    ok(created("b1", "u1", "One", "2026-01-01T00:00:00Z"));
    ok(created("b2", "u1", "Two", "2026-01-02T00:00:00Z"));
    ok(deleted("b2", "u1", "2026-01-03T00:00:00Z"));
    json_t *l = list_view("u1");
    cr_assert_eq(json_array_size(l), 1);
    cr_expect_str_eq(sfield(json_array_get(l, 0), "id"), "b1");
    json_decref(l);
    json_t *v = book_view("b1");
    cr_expect_not_null(v);
    json_decref(v);
}

Test(storybook, rows_books_deleted_at_set_and_pages_removed) {
    ok(created("b1", "u1", "T", "2026-01-01T00:00:00Z"));
    json_t *row = ts_driver_row(drv, "books", "b1");
    cr_assert_not_null(row);
    cr_expect_str_eq(sfield(row, "book_id"), "b1");
    cr_expect_str_eq(sfield(row, "user_id"), "u1");
    cr_expect_str_eq(sfield(row, "title"), "T");
    cr_expect(json_is_null(json_object_get(row, "cover_image_url")));
    cr_expect_str_eq(sfield(row, "created_at"), "2026-01-01T00:00:00.000Z");
    cr_expect(json_is_null(json_object_get(row, "deleted_at")));
    json_decref(row);

    ok(page("b1", "u1", 1, "one", "2026-01-01T00:00:01Z"));
    ok(page("b1", "u1", 2, "two", "2026-01-01T00:00:02Z"));
    json_t *p = ts_driver_row(drv, "book_pages", "b1|1");
    cr_assert_not_null(p);
    cr_expect_str_eq(sfield(p, "page_no"), "1");
    cr_expect_str_eq(sfield(p, "text"), "one");
    cr_expect(json_is_null(json_object_get(p, "image_url")));
    cr_expect_str_eq(sfield(p, "updated_at"), "2026-01-01T00:00:01.000Z");
    json_decref(p);

    ok(deleted("b1", "u1", "2026-01-01T00:00:09Z"));
    row = ts_driver_row(drv, "books", "b1");
    cr_assert_not_null(row, "the books row stays, marked deleted");
    cr_expect_str_eq(sfield(row, "deleted_at"), "2026-01-01T00:00:09.000Z");
    json_decref(row);
    cr_expect_eq(ts_driver_row_count(drv, "book_pages"), 0);
}

Test(storybook, recreate_after_delete_starts_afresh) {
    ok(send_to(drv, "BookCreated",
               "\"book_id\": \"b1\", \"user_id\": \"u1\", \"title\": \"First\", "
               "\"cover_image_url\": \"https://c/1\", \"created_at\": \"2026-01-01T00:00:00Z\""));
    ok(page("b1", "u1", 1, "old page", "2026-01-01T00:00:01Z"));
    ok(deleted("b1", "u1", "2026-01-01T00:00:02Z"));
    /* A different user may take the id once the book is gone. */
    ok(created("b1", "u2", "Second", "2026-01-05T00:00:00Z"));
    json_t *v = book_view("b1");
    cr_expect_str_eq(sfield(v, "userId"), "u2");
    cr_expect_str_eq(sfield(v, "title"), "Second");
    cr_expect(json_is_null(json_object_get(v, "coverImageUrl")));
    cr_expect_eq(json_array_size(json_object_get(v, "pages")), 0, "old pages are gone");
    cr_expect_str_eq(sfield(v, "createdAt"), "2026-01-05T00:00:00.000Z");
    json_decref(v);
    cr_expect_str_eq(ts_driver_view_str(drv, "storybook:books:u1"), "[]");
    json_t *l = list_view("u2");
    cr_expect_eq(json_array_size(l), 1);
    json_decref(l);
    json_t *row = ts_driver_row(drv, "books", "b1");
    cr_expect(json_is_null(json_object_get(row, "deleted_at")), "live again");
    cr_expect(json_is_null(json_object_get(row, "cover_image_url")));
    cr_expect_str_eq(sfield(row, "user_id"), "u2");
    json_decref(row);
    rejected(updated("b1", "u1", "\"X\"", "null", "2026-01-06T00:00:00Z"), "not the owner");
}

/* ---- batching and undo ----------------------------------------------------------- */

static const char *const world_views[] = {"storybook:book:b1", "storybook:book:b2",
                                          "storybook:book:b3", "storybook:books:u1",
                                          "storybook:books:u2"};

static void play(ts_driver *d) {
    cr_assert_eq(created_on(d, "b1", "u1", "One", "2026-01-01T00:00:00Z"), TS_OK);
    cr_assert_eq(page_on(d, "b1", "u1", 1, "a", "2026-01-01T00:00:01Z"), TS_OK);
    cr_assert_eq(created_on(d, "b2", "u1", "Two", "2026-01-01T00:00:02Z"), TS_OK);
    cr_assert_eq(page_on(d, "b2", "u2", 1, "stolen", "2026-01-01T00:00:03Z"), TS_E_REJECT);
    cr_assert_eq(page_on(d, "b2", "u1", 3, "c", "2026-01-01T00:00:04Z"), TS_OK);
    cr_assert_eq(created_on(d, "b3", "u2", "Three", "2026-01-01T00:00:05Z"), TS_OK);
    cr_assert_eq(deleted_on(d, "b1", "u1", "2026-01-01T00:00:06Z"), TS_OK);
    cr_assert_eq(page_on(d, "b1", "u1", 2, "late", "2026-01-01T00:00:07Z"), TS_E_REJECT);
    cr_assert_eq(page_on(d, "b2", "u1", 1, "b", "2026-01-01T00:00:08Z"), TS_OK);
}

Test(storybook, one_batch_gives_the_same_world_as_one_event_per_batch) {
    play(drv);
    ts_driver *batched = new_driver();
    ts_driver_batch_begin(batched);
    play(batched);
    cr_assert_eq(ts_driver_batch_commit(batched), TS_OK);
    char *a = snapshot(drv, world_views, 5), *b = snapshot(batched, world_views, 5);
    cr_expect_str_eq(b, a);
    free(a);
    free(b);
    cr_expect_eq(ts_driver_row_count(batched, "books"), 3);
    cr_expect_eq(ts_driver_row_count(batched, "book_pages"), 2);
    ts_driver_destroy(batched);
}

/* A processor that does everything a processor can, then rejects events whose
 * title is "bad": the context must undo all of it, inside a batch too. */
static void *half_create(const json_t *params, char *err, size_t errlen) {
    (void)params;
    (void)err;
    (void)errlen;
    return malloc(1);
}

static ts_err half_process(void *self, ts_ctx *ctx, const ts_event *ev) {
    (void)self;
    const char *book = ts_event_str(ev, "book_id");
    const char *title = ts_event_str(ev, "title");
    json_t *doc = json_pack("{s:s}", "title", title);
    ts_ctx_put_json(ctx, "s", book, doc);
    char key[64];
    snprintf(key, sizeof(key), "v:%s", book);
    ts_ctx_view_set_json(ctx, key, doc);
    json_decref(doc);
    ts_ctx_zset_add(ctx, "z", book, 1.0);
    ts_row *row = ts_ctx_row_upsert(ctx, "t");
    ts_row_key(row, "id", book);
    ts_row_text(row, "title", title);
    ts_row_done(row);
    avro_value_t *out = ts_ctx_event_new(ctx, "storybook.events", "BookDeleted");
    avro_value_t field;
    avro_value_get_by_name(out, "event_id", &field, NULL);
    avro_value_set_string(&field, "out-1");
    avro_value_get_by_name(out, "book_id", &field, NULL);
    avro_value_set_string(&field, book);
    avro_value_get_by_name(out, "user_id", &field, NULL);
    avro_value_set_string(&field, "u1");
    avro_value_get_by_name(out, "deleted_at", &field, NULL);
    avro_value_set_long(&field, 42);
    ts_err err = ts_ctx_emit(ctx, "storybook.events", book, out);
    if (err != TS_OK)
        return err;
    if (strcmp(title, "bad") == 0)
        return ts_ctx_reject(ctx, "bad title for %s", book);
    return TS_OK;
}

static const ts_processor_def half_def = {"half", half_create, half_process, free};

Test(storybook, ctx_undoes_a_rejected_events_state_and_effects) {
    ts_driver *d = ts_driver_create(&half_def, "{}", "storybook.events");
    cr_assert_not_null(d);
    ts_driver_batch_begin(d);
    cr_assert_eq(created_on(d, "b1", "u1", "good", "2026-01-01T00:00:00Z"), TS_OK);
    cr_assert_eq(created_on(d, "b1", "u1", "bad", "2026-01-01T00:00:01Z"), TS_E_REJECT);
    cr_assert_eq(created_on(d, "b2", "u1", "bad", "2026-01-01T00:00:02Z"), TS_E_REJECT);
    cr_expect_str_eq(ts_driver_last_reason(d), "bad title for b2");
    cr_assert_eq(created_on(d, "b3", "u1", "good", "2026-01-01T00:00:03Z"), TS_OK);
    cr_assert_eq(ts_driver_batch_commit(d), TS_OK);

    /* b1 keeps what its good event wrote, though the bad one overwrote it. */
    json_t *s1 = ts_driver_state_json(d, "s", "b1");
    cr_expect_str_eq(sfield(s1, "title"), "good");
    json_decref(s1);
    cr_expect_null(ts_driver_state_json(d, "s", "b2"));
    cr_expect_eq(ts_driver_state_count(d), 2);

    json_t *v1 = ts_driver_view_json(d, "v:b1");
    cr_expect_str_eq(sfield(v1, "title"), "good");
    cr_expect_eq(ifield(v1, "version"), 0, "the good event's offset");
    json_decref(v1);
    cr_expect_null(ts_driver_view_str(d, "v:b2"));
    double score;
    cr_expect_eq(ts_driver_zset_score(d, "z", "b1", &score), 0);
    cr_expect_eq(ts_driver_zset_score(d, "z", "b2", &score), -1);
    cr_expect_eq(ts_driver_zset_count(d, "z"), 2);

    json_t *r1 = ts_driver_row(d, "t", "b1");
    cr_expect_str_eq(sfield(r1, "title"), "good");
    json_decref(r1);
    cr_expect_eq(ts_driver_row_count(d, "t"), 2);

    cr_assert_eq(ts_driver_emitted(d, "storybook.events"), 2);
    json_t *e = ts_driver_emitted_json(d, "storybook.events", 1);
    cr_assert_not_null(e);
    cr_expect_str_eq(sfield(e, "key"), "b3");
    cr_expect_str_eq(sfield(e, "type"), "BookDeleted");
    cr_expect_str_eq(sfield(json_object_get(e, "value"), "book_id"), "b3");
    json_decref(e);
    ts_driver_destroy(d);
}

Test(storybook, driver_rejects_bad_params_and_unknown_subject) {
    cr_expect_null(ts_driver_create(&ts_processor_storybook, "[1]", "storybook.events"));
    cr_expect_null(ts_driver_create(&ts_processor_storybook, "{", "storybook.events"));
    cr_expect_null(ts_driver_create(&ts_processor_storybook, NULL, "no.such.topic"));
}

/* samples.jsonl is what operators and benchmarks feed in: every line must
 * encode, and only the two events it documents as wrong are rejected. */
Test(storybook, samples_play_with_only_the_documented_rejects) {
    FILE *f = fopen(TS_SOURCE_DIR "/processors/storybook/samples.jsonl", "r");
    cr_assert_not_null(f);
    char line[4096];
    int n = 0, rejects = 0;
    while (fgets(line, sizeof(line), f)) {
        ts_err err = ts_driver_send(drv, line);
        cr_assert(err == TS_OK || err == TS_E_REJECT, "line %d: %s (%s)", n + 1,
                  ts_err_name(err), ts_driver_last_reason(drv));
        if (err == TS_E_REJECT)
            rejects++;
        n++;
    }
    fclose(f);
    cr_expect_gt(n, 10);
    cr_expect_eq(rejects, 2);
    json_t *l = list_view("user-ana");
    cr_expect_eq(json_array_size(l), 2);
    cr_expect_str_eq(sfield(json_array_get(l, 0), "id"), "book-moon", "re-created, newest");
    json_decref(l);
}
