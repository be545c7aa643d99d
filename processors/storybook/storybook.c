/* storybook.c - the storybook processor: books and their pages, per user.
 *
 * Input: storybook.events (BookCreated, BookUpdated, BookDeleted, PageUpserted,
 * PageDeleted), keyed by user_id, so every book of a user lives in one task.
 *
 * State (JSON, two stores):
 *   "book"       book_id -> {id, userId, title, coverImageUrl, createdAt,
 *                updatedAt, pages: [{pageNo, text, imageUrl, audioUrl}]}, times
 *                as epoch milliseconds, pages sorted by pageNo. A deleted book
 *                is removed, so a later BookCreated with its id starts afresh.
 *   "user_books" user_id -> [{id, title, coverImageUrl, pageCount, createdAt,
 *                updatedAt}] newest first: the summaries the list view is made
 *                of, kept beside the books so an event reads two keys, not one
 *                key per book of the user. A list is only ever rebuilt (its
 *                entries are shared with the list before it), never changed
 *                in place.
 *
 * Each event is validated completely before anything is written (a rejected
 * event is undone by the context, but half-done work would be a trap for the
 * next reader of this code). Then the state is updated, the affected rows are
 * rewritten whole from the new state and the affected views are asked for
 * (ts_ctx_view_render: built whole from the state once the batch's last event
 * has ended), which makes every effect idempotent: replaying an event yields
 * the same views and rows.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_processor.h"

#define SB_STORE_BOOK "book"
#define SB_STORE_LIST "user_books"

/* The processor takes no parameters; an instance exists so that every
 * processor has the same shape (and a later parameter has a home). */
typedef struct storybook {
    int reserved;
} storybook;

/* The fields every storybook event carries. */
typedef struct sb_input {
    const char *type;
    const char *book_id;
    const char *user_id;
    int64_t at; /* the event's own time field (created_at, updated_at, deleted_at) */
} sb_input;

static void *sb_create(const json_t *params, char *err, size_t errlen) {
    (void)params;
    storybook *sb = calloc(1, sizeof(*sb));
    if (!sb)
        snprintf(err, errlen, "storybook: out of memory");
    return sb;
}

static void sb_destroy(void *self) { free(self); }

/* ---- small JSON helpers ------------------------------------------------------- */

/* A string, or JSON null for NULL. */
static json_t *sb_str_or_null(const char *s) { return s ? json_string(s) : json_null(); }

static int64_t sb_ms(const json_t *obj, const char *field) {
    return (int64_t)json_integer_value(json_object_get(obj, field));
}

static const char *sb_strf(const json_t *obj, const char *field) {
    return json_string_value(json_object_get(obj, field)); /* NULL for null */
}

/* Replaces the epoch-milliseconds field `field` of `obj` by its ISO-8601 form. */
static void sb_iso_field(json_t *obj, const char *field) {
    char buf[40];
    ts_time_iso(sb_ms(obj, field), buf, sizeof(buf));
    json_object_set_new(obj, field, json_string(buf));
}

static char *sb_key(const char *prefix, const char *id) {
    size_t len = strlen(prefix) + strlen(id) + 1;
    char *key = malloc(len);
    if (key)
        snprintf(key, len, "%s%s", prefix, id);
    return key;
}

/* Index of page `page_no` in the sorted pages array, or -1. */
static long sb_page_find(const json_t *pages, int64_t page_no) {
    size_t i;
    const json_t *page;
    json_array_foreach(pages, i, page) {
        if (sb_ms(page, "pageNo") == page_no)
            return (long)i;
    }
    return -1;
}

/* ---- effects from state --------------------------------------------------------- */

/* Writes the detail view of book `book_id` from the stored book, or deletes it
 * when the book is gone (a render: once per batch). */
static ts_err sb_book_render(ts_ctx *ctx, const char *book_id) {
    char *key = sb_key("storybook:book:", book_id);
    if (!key)
        return TS_E_NOMEM;
    json_t *book = ts_ctx_get_json(ctx, SB_STORE_BOOK, book_id);
    if (!book) {
        ts_err err = ts_ctx_view_del(ctx, key);
        free(key);
        return err;
    }
    json_t *view = json_pack("{s:O?, s:O?, s:O?, s:O?, s:O?, s:I, s:I}", "id",
                             json_object_get(book, "id"), "userId",
                             json_object_get(book, "userId"), "title",
                             json_object_get(book, "title"), "coverImageUrl",
                             json_object_get(book, "coverImageUrl"), "pages",
                             json_object_get(book, "pages"), "createdAt",
                             (json_int_t)sb_ms(book, "createdAt"), "updatedAt",
                             (json_int_t)sb_ms(book, "updatedAt"));
    ts_err err = TS_E_NOMEM;
    if (view) {
        sb_iso_field(view, "createdAt");
        sb_iso_field(view, "updatedAt");
        err = ts_ctx_view_set_json(ctx, key, view);
    }
    free(key);
    json_decref(view);
    json_decref(book);
    return err;
}

/* Upserts the whole `books` row of `book`; deleted_at < 0 means not deleted. */
static ts_err sb_book_row(ts_ctx *ctx, const json_t *book, int64_t deleted_at) {
    ts_row *row = ts_ctx_row_upsert(ctx, "books");
    ts_row_key(row, "book_id", sb_strf(book, "id"));
    ts_row_text(row, "user_id", sb_strf(book, "userId"));
    ts_row_text(row, "title", sb_strf(book, "title"));
    ts_row_text(row, "cover_image_url", sb_strf(book, "coverImageUrl"));
    ts_row_time(row, "created_at", sb_ms(book, "createdAt"));
    ts_row_time(row, "updated_at", sb_ms(book, "updatedAt"));
    /* Written every time, so a book created again after a delete is live again. */
    if (deleted_at >= 0)
        ts_row_time(row, "deleted_at", deleted_at);
    else
        ts_row_text(row, "deleted_at", NULL);
    return ts_row_done(row);
}

static ts_err sb_page_row_delete(ts_ctx *ctx, const char *book_id, int64_t page_no) {
    ts_row *row = ts_ctx_row_delete(ctx, "book_pages");
    char no[24];
    snprintf(no, sizeof(no), "%lld", (long long)page_no);
    ts_row_key(row, "book_id", book_id);
    ts_row_key(row, "page_no", no);
    return ts_row_done(row);
}

/* The list entry (state form, times in ms) of `book`. */
static json_t *sb_summary(const json_t *book) {
    return json_pack("{s:O?, s:O?, s:O?, s:I, s:I, s:I}", "id", json_object_get(book, "id"),
                     "title", json_object_get(book, "title"), "coverImageUrl",
                     json_object_get(book, "coverImageUrl"), "pageCount",
                     (json_int_t)json_array_size(json_object_get(book, "pages")), "createdAt",
                     (json_int_t)sb_ms(book, "createdAt"), "updatedAt",
                     (json_int_t)sb_ms(book, "updatedAt"));
}

/* Newest first by createdAt; equal times by id, ascending, so the order is total
 * and does not depend on the order events arrived in. */
static int sb_summary_before(const json_t *a, const json_t *b) {
    int64_t ca = sb_ms(a, "createdAt"), cb = sb_ms(b, "createdAt");
    if (ca != cb)
        return ca > cb;
    return strcmp(sb_strf(a, "id"), sb_strf(b, "id")) < 0;
}

/* Writes the list view of `user_id` from the stored summaries (a render:
 * once per batch, however many of the user's books the batch changed). */
static ts_err sb_list_render(ts_ctx *ctx, const char *user_id) {
    ts_err err = TS_E_NOMEM;
    json_t *list = ts_ctx_get_json(ctx, SB_STORE_LIST, user_id);
    json_t *view = json_array();
    char *key = sb_key("storybook:books:", user_id);
    if (!view || !key)
        goto done;
    /* The view's entries are shallow copies (only the two times differ from
     * the state's entries), not a deep copy of the whole list. */
    size_t i;
    json_t *entry;
    json_array_foreach(list, i, entry) {
        json_t *shown = json_copy(entry);
        if (!shown || json_array_append_new(view, shown) != 0)
            goto done;
        sb_iso_field(shown, "createdAt");
        sb_iso_field(shown, "updatedAt");
    }
    err = ts_ctx_view_set_json(ctx, key, view); /* an array: no "version" */
done:
    free(key);
    json_decref(view);
    json_decref(list);
    return err;
}

/* Replaces (or, with `book` NULL, removes) the entry of `book_id` in the list of
 * `user_id`, stores the list and asks for the list view. The list is rebuilt
 * around the entries it keeps (shared with the stored list, never changed in
 * place), which costs a pointer per book instead of a copy of every entry. */
static ts_err sb_list_update(ts_ctx *ctx, const char *user_id, const char *book_id,
                             const json_t *book) {
    json_t *stored = ts_ctx_read_json(ctx, SB_STORE_LIST, user_id);
    json_t *list = json_array();
    json_t *entry = book ? sb_summary(book) : NULL;
    ts_err err = TS_E_NOMEM;
    if (!list || (book && !entry))
        goto done;
    size_t i;
    json_t *kept;
    json_array_foreach(stored, i, kept) {
        if (strcmp(sb_strf(kept, "id"), book_id) == 0)
            continue;
        if (entry && sb_summary_before(entry, kept)) {
            if (json_array_append(list, entry) != 0)
                goto done;
            json_decref(entry);
            entry = NULL;
        }
        if (json_array_append(list, kept) != 0)
            goto done;
    }
    if (entry && json_array_append(list, entry) != 0)
        goto done;
    /* An empty list is not kept: a user without books has no state (and an
     * empty list view). */
    err = json_array_size(list) ? ts_ctx_put_json(ctx, SB_STORE_LIST, user_id, list)
                                : ts_ctx_del(ctx, SB_STORE_LIST, user_id);
    if (err == TS_OK)
        err = ts_ctx_view_render(ctx, sb_list_render, user_id);
done:
    json_decref(entry);
    json_decref(list);
    json_decref(stored);
    return err;
}

/* Stores `book` and rewrites its detail view, its list entry and its row. */
static ts_err sb_book_save(ts_ctx *ctx, const json_t *book) {
    ts_err err = ts_ctx_put_json(ctx, SB_STORE_BOOK, sb_strf(book, "id"), book);
    if (err == TS_OK)
        err = ts_ctx_view_render(ctx, sb_book_render, sb_strf(book, "id"));
    if (err == TS_OK)
        err = sb_list_update(ctx, sb_strf(book, "userId"), sb_strf(book, "id"), book);
    if (err == TS_OK)
        err = sb_book_row(ctx, book, -1);
    return err;
}

/* ---- the events --------------------------------------------------------------- */

static ts_err sb_book_created(ts_ctx *ctx, const ts_event *ev, const sb_input *in,
                              json_t *existing) {
    if (existing)
        return ts_ctx_reject(ctx, "BookCreated: book %s already exists", in->book_id);
    const char *title = ts_event_str(ev, "title");
    if (!title)
        return ts_ctx_reject(ctx, "BookCreated for book %s: no title", in->book_id);
    json_t *book = json_pack("{s:s, s:s, s:s, s:o, s:I, s:I, s:[]}", "id", in->book_id,
                             "userId", in->user_id, "title", title, "coverImageUrl",
                             sb_str_or_null(ts_event_str(ev, "cover_image_url")), "createdAt",
                             (json_int_t)in->at, "updatedAt", (json_int_t)in->at, "pages");
    if (!book)
        return TS_E_NOMEM;
    ts_err err = sb_book_save(ctx, book);
    json_decref(book);
    return err;
}

static ts_err sb_book_updated(ts_ctx *ctx, const ts_event *ev, const sb_input *in,
                              json_t *book) {
    /* Only the fields present change: an optional left null means "as before". */
    const char *title = ts_event_str(ev, "title");
    const char *cover = ts_event_str(ev, "cover_image_url");
    if (title)
        json_object_set_new(book, "title", json_string(title));
    if (cover)
        json_object_set_new(book, "coverImageUrl", json_string(cover));
    json_object_set_new(book, "updatedAt", json_integer(in->at));
    return sb_book_save(ctx, book);
}

static ts_err sb_book_deleted(ts_ctx *ctx, const sb_input *in, json_t *book) {
    ts_err err = ts_ctx_del(ctx, SB_STORE_BOOK, in->book_id);
    if (err == TS_OK) /* the render deletes the view of a book not stored */
        err = ts_ctx_view_render(ctx, sb_book_render, in->book_id);
    if (err == TS_OK)
        err = sb_list_update(ctx, in->user_id, in->book_id, NULL);
    if (err == TS_OK)
        err = sb_book_row(ctx, book, in->at);
    size_t i;
    json_t *page;
    json_array_foreach(json_object_get(book, "pages"), i, page) {
        if (err == TS_OK)
            err = sb_page_row_delete(ctx, in->book_id, sb_ms(page, "pageNo"));
    }
    return err;
}

static ts_err sb_page_upserted(ts_ctx *ctx, const ts_event *ev, const sb_input *in,
                               json_t *book, int64_t page_no) {
    const char *text = ts_event_str(ev, "text");
    const char *image = ts_event_str(ev, "image_url");
    const char *audio = ts_event_str(ev, "audio_url");
    if (!text)
        return ts_ctx_reject(ctx, "PageUpserted for book %s page %lld: no text", in->book_id,
                             (long long)page_no);
    json_t *page = json_pack("{s:I, s:s, s:o, s:o}", "pageNo", (json_int_t)page_no, "text",
                             text, "imageUrl", sb_str_or_null(image), "audioUrl",
                             sb_str_or_null(audio));
    if (!page)
        return TS_E_NOMEM;
    json_t *pages = json_object_get(book, "pages");
    long at = sb_page_find(pages, page_no);
    int rc;
    if (at >= 0) {
        rc = json_array_set_new(pages, (size_t)at, page);
    } else {
        size_t pos = 0;
        while (pos < json_array_size(pages) && sb_ms(json_array_get(pages, pos), "pageNo") < page_no)
            pos++;
        rc = json_array_insert_new(pages, pos, page);
    }
    if (rc != 0)
        return TS_E_NOMEM;
    json_object_set_new(book, "updatedAt", json_integer(in->at));

    ts_err err = sb_book_save(ctx, book);
    if (err != TS_OK)
        return err;
    ts_row *row = ts_ctx_row_upsert(ctx, "book_pages");
    char no[24];
    snprintf(no, sizeof(no), "%lld", (long long)page_no);
    ts_row_key(row, "book_id", in->book_id);
    ts_row_key(row, "page_no", no);
    ts_row_text(row, "text", text);
    ts_row_text(row, "image_url", image);
    ts_row_text(row, "audio_url", audio);
    ts_row_time(row, "updated_at", in->at);
    return ts_row_done(row);
}

static ts_err sb_page_deleted(ts_ctx *ctx, const sb_input *in, json_t *book, int64_t page_no) {
    json_t *pages = json_object_get(book, "pages");
    long at = sb_page_find(pages, page_no);
    if (at < 0)
        return ts_ctx_reject(ctx, "PageDeleted: book %s has no page %lld", in->book_id,
                             (long long)page_no);
    json_array_remove(pages, (size_t)at);
    json_object_set_new(book, "updatedAt", json_integer(in->at));
    ts_err err = sb_book_save(ctx, book);
    if (err == TS_OK)
        err = sb_page_row_delete(ctx, in->book_id, page_no);
    return err;
}

/* The name of each event type's time field. */
static const char *sb_time_field(const char *type) {
    static const struct {
        const char *type, *field;
    } fields[] = {
        {"BookCreated", "created_at"},  {"BookUpdated", "updated_at"},
        {"BookDeleted", "deleted_at"},  {"PageUpserted", "updated_at"},
        {"PageDeleted", "deleted_at"},
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (strcmp(fields[i].type, type) == 0)
            return fields[i].field;
    }
    return NULL;
}

static ts_err sb_process(void *self, ts_ctx *ctx, const ts_event *ev) {
    (void)self;
    sb_input in = {ev->type, ts_event_id(ev, "book_id"), ts_event_id(ev, "user_id"), 0};
    const char *time_field = sb_time_field(ev->type);

    /* The schema makes these fields required; checking them anyway keeps a
     * malformed producer from reaching the state. */
    if (!time_field)
        return ts_ctx_reject(ctx, "unknown event type %s", ev->type);
    if (!in.book_id || !in.user_id)
        return ts_ctx_reject(ctx, "%s: book_id and user_id must be non-empty, at most %d bytes",
                             ev->type, TS_EVENT_MAX_ID_BYTES);
    if (ts_event_long(ev, time_field, &in.at) != 0 || in.at < 0)
        return ts_ctx_reject(ctx, "%s for book %s: no valid %s", ev->type, in.book_id,
                             time_field);
    int64_t page_no = 0;
    int is_page = strncmp(ev->type, "Page", 4) == 0;
    if (is_page) {
        if (ts_event_long(ev, "page_no", &page_no) != 0)
            return ts_ctx_reject(ctx, "%s for book %s: no page_no", ev->type, in.book_id);
        if (page_no < 1)
            return ts_ctx_reject(ctx, "%s for book %s: page_no %lld is below 1", ev->type,
                                 in.book_id, (long long)page_no);
    }

    json_t *book = ts_ctx_get_json(ctx, SB_STORE_BOOK, in.book_id);
    ts_err err;
    if (strcmp(ev->type, "BookCreated") == 0) {
        err = sb_book_created(ctx, ev, &in, book);
    } else if (!book) {
        err = ts_ctx_reject(ctx, "%s: book %s does not exist", ev->type, in.book_id);
    } else if (!json_is_string(json_object_get(book, "userId")) ||
               strcmp(sb_strf(book, "userId"), in.user_id) != 0) {
        err = ts_ctx_reject(ctx, "%s: user %s is not the owner of book %s", ev->type,
                            in.user_id, in.book_id);
    } else if (strcmp(ev->type, "BookUpdated") == 0) {
        err = sb_book_updated(ctx, ev, &in, book);
    } else if (strcmp(ev->type, "BookDeleted") == 0) {
        err = sb_book_deleted(ctx, &in, book);
    } else if (strcmp(ev->type, "PageUpserted") == 0) {
        err = sb_page_upserted(ctx, ev, &in, book, page_no);
    } else {
        err = sb_page_deleted(ctx, &in, book, page_no);
    }
    json_decref(book);
    return err;
}

const ts_processor_def ts_processor_storybook = {
    .name = "storybook",
    .create = sb_create,
    .process = sb_process,
    .destroy = sb_destroy,
};
