/* user.c - the user processor: profiles and food preferences, per user.
 *
 * Input: user.events (UserRegistered, ProfileUpdated, PreferencesSet,
 * UserDeleted), keyed by user_id, so each user lives in one task and every
 * view and row of a user has that task as its single writer.
 *
 * State (JSON, one store):
 *   "user"  user_id -> {id, email, displayName, profileImageUrl, createdAt,
 *           updatedAt, preferences: {dietaryRestrictions, allergies,
 *           favoriteCuisines, taste, updatedAt}}, times as epoch milliseconds,
 *           preferences.updatedAt null until the first PreferencesSet that
 *           changes something. Removed when the user is deleted, so "never
 *           registered" and "deleted" are the same thing to later events, and
 *           a new UserRegistered starts afresh.
 *
 * Option lists and the taste scale come from params (topology.yaml):
 *   {options: {dietary_restrictions: [...], allergies: [...],
 *              favorite_cuisines: [...]},
 *    taste: {keys: [...], min: 1, max: 5}}
 * A PreferencesSet is checked against them, then normalized: each list becomes
 * the chosen options in option-list order without repeats (the lists are sets,
 * so [vegan, halal] and [halal, vegan, vegan] are the same choice), the taste
 * map its entries in taste-key order. Comparing normalized values says
 * whether anything changed; only then are state, views and rows written and
 * UserPreferenceUpdated emitted. The option lists are published at start as
 * the view preferences:options through the setup hook.
 *
 * As in the storybook processor, each event is validated completely before
 * anything is written, and views and rows are rewritten whole from the new
 * state, so replaying an event yields the same views and rows.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_processor.h"

#define US_STORE "user"
#define US_OUTPUT_TOPIC "user.preference.updated"
#define US_OUTPUT_RECORD "UserPreferenceUpdated"
#define US_NLISTS 3

/* The three option lists: the event/params field name and the view name. */
static const struct {
    const char *field;
    const char *view;
} us_lists[US_NLISTS] = {
    {"dietary_restrictions", "dietaryRestrictions"},
    {"allergies", "allergies"},
    {"favorite_cuisines", "favoriteCuisines"},
};

typedef struct user_proc {
    json_t *options[US_NLISTS]; /* allowed values per list, in display order */
    json_t *taste_keys;         /* allowed taste keys, in display order */
    json_int_t taste_min, taste_max;
} user_proc;

/* ---- parameters --------------------------------------------------------------- */

static void us_destroy(void *self) {
    user_proc *up = self;
    if (!up)
        return;
    for (size_t i = 0; i < US_NLISTS; i++)
        json_decref(up->options[i]);
    json_decref(up->taste_keys);
    free(up);
}

/* Copies `value` (params path `path`) if it is a non-empty array of distinct
 * non-empty strings; NULL with a reason in `err` otherwise. */
static json_t *us_string_list(const json_t *value, const char *path, char *err, size_t errlen) {
    if (!json_is_array(value) || json_array_size(value) == 0) {
        snprintf(err, errlen, "user: params.%s must be a non-empty list of strings", path);
        return NULL;
    }
    size_t i, j;
    const json_t *item;
    json_array_foreach(value, i, item) {
        if (!json_is_string(item) || json_string_length(item) == 0) {
            snprintf(err, errlen, "user: params.%s[%zu] must be a non-empty string", path, i);
            return NULL;
        }
        for (j = 0; j < i; j++) {
            if (json_equal(item, json_array_get(value, j))) {
                snprintf(err, errlen, "user: params.%s lists '%s' twice", path,
                         json_string_value(item));
                return NULL;
            }
        }
    }
    json_t *copy = json_deep_copy(value);
    if (!copy)
        snprintf(err, errlen, "user: out of memory");
    return copy;
}

/* Fails with a reason when `obj` (params path `path`) has a key not in `known`. */
static int us_known_keys(const json_t *obj, const char *path, const char *const *known,
                         char *err, size_t errlen) {
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)obj, key, value) {
        size_t k = 0;
        while (known[k] && strcmp(known[k], key) != 0)
            k++;
        if (!known[k]) {
            snprintf(err, errlen, "user: unknown key params.%s%s%s", path, *path ? "." : "", key);
            return -1;
        }
    }
    return 0;
}

static int us_taste_bound(const json_t *taste, const char *name, json_int_t def, json_int_t *out,
                          char *err, size_t errlen) {
    const json_t *v = json_object_get(taste, name);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v)) {
        snprintf(err, errlen, "user: params.taste.%s must be an integer", name);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

static void *us_create(const json_t *params, char *err, size_t errlen) {
    static const char *const top_keys[] = {"options", "taste", NULL};
    static const char *const option_keys[] = {"dietary_restrictions", "allergies",
                                              "favorite_cuisines", NULL};
    static const char *const taste_keys[] = {"keys", "min", "max", NULL};
    user_proc *up = calloc(1, sizeof(*up));
    if (!up) {
        snprintf(err, errlen, "user: out of memory");
        return NULL;
    }
    const json_t *options = json_object_get(params, "options");
    const json_t *taste = json_object_get(params, "taste");
    char path[64];

    if (us_known_keys(params, "", top_keys, err, errlen) != 0)
        goto fail;
    if (!json_is_object(options) || !json_is_object(taste)) {
        snprintf(err, errlen, "user: params need the mappings 'options' (the three option "
                              "lists) and 'taste' (keys, min, max)");
        goto fail;
    }
    if (us_known_keys(options, "options", option_keys, err, errlen) != 0 ||
        us_known_keys(taste, "taste", taste_keys, err, errlen) != 0)
        goto fail;
    for (size_t i = 0; i < US_NLISTS; i++) {
        snprintf(path, sizeof(path), "options.%s", us_lists[i].field);
        up->options[i] = us_string_list(json_object_get(options, us_lists[i].field), path, err,
                                        errlen);
        if (!up->options[i])
            goto fail;
    }
    up->taste_keys = us_string_list(json_object_get(taste, "keys"), "taste.keys", err, errlen);
    if (!up->taste_keys)
        goto fail;
    /* The contract's scale is 1-5; the bounds are params only so that the
     * options view can publish them beside the keys. */
    if (us_taste_bound(taste, "min", 1, &up->taste_min, err, errlen) != 0 ||
        us_taste_bound(taste, "max", 5, &up->taste_max, err, errlen) != 0)
        goto fail;
    if (up->taste_min > up->taste_max || up->taste_min < 0 || up->taste_max > INT32_MAX) {
        snprintf(err, errlen, "user: params.taste needs 0 <= min <= max, got %lld..%lld",
                 (long long)up->taste_min, (long long)up->taste_max);
        goto fail;
    }
    return up;
fail:
    us_destroy(up);
    return NULL;
}

/* ---- small helpers ------------------------------------------------------------- */

static const char *us_strf(const json_t *obj, const char *field) {
    return json_string_value(json_object_get(obj, field)); /* NULL for null */
}

/* An epoch-milliseconds field as ISO-8601 JSON; null stays null. */
static json_t *us_iso(const json_t *obj, const char *field) {
    const json_t *ms = json_object_get(obj, field);
    if (!json_is_integer(ms))
        return json_null();
    char buf[40];
    return json_string(ts_time_iso((int64_t)json_integer_value(ms), buf, sizeof(buf)));
}

static char *us_key(const char *prefix, const char *id) {
    size_t len = strlen(prefix) + strlen(id) + 1;
    char *key = malloc(len);
    if (key)
        snprintf(key, len, "%s%s", prefix, id);
    return key;
}

/* The part of `email` before its last '@' (a quoted local part may hold '@',
 * a domain never does); NULL when there is none. Caller frees. */
static char *us_local_part(const char *email) {
    const char *at = strrchr(email, '@');
    if (!at || at == email)
        return NULL;
    size_t len = (size_t)(at - email);
    char *local = malloc(len + 1);
    if (local) {
        memcpy(local, email, len);
        local[len] = '\0';
    }
    return local;
}

static int us_list_has(const json_t *list, const char *value) {
    size_t i;
    const json_t *item;
    json_array_foreach(list, i, item) {
        if (strcmp(json_string_value(item), value) == 0)
            return 1;
    }
    return 0;
}

/* ---- views and rows from state ------------------------------------------------ */

/* The profile part of the views (without version). */
static json_t *us_profile_doc(const json_t *user) {
    return json_pack("{s:O?, s:O?, s:O?, s:O?, s:o, s:o}", "id", json_object_get(user, "id"),
                     "email", json_object_get(user, "email"), "displayName",
                     json_object_get(user, "displayName"), "profileImageUrl",
                     json_object_get(user, "profileImageUrl"), "createdAt",
                     us_iso(user, "createdAt"), "updatedAt", us_iso(user, "updatedAt"));
}

/* The preferences part of the views (without version). */
static json_t *us_prefs_doc(const json_t *user) {
    const json_t *prefs = json_object_get(user, "preferences");
    return json_pack("{s:O?, s:O?, s:O?, s:O?, s:o}", "dietaryRestrictions",
                     json_object_get(prefs, "dietaryRestrictions"), "allergies",
                     json_object_get(prefs, "allergies"), "favoriteCuisines",
                     json_object_get(prefs, "favoriteCuisines"), "taste",
                     json_object_get(prefs, "taste"), "updatedAt", us_iso(prefs, "updatedAt"));
}

/* Writes view `prefix``user_id` as `make` shows the stored user, or deletes it
 * when the user is gone. Each view has its own render (below), so a view's
 * "version" is the offset of the last event that changed what it shows. */
static ts_err us_render(ts_ctx *ctx, const char *prefix, const char *user_id,
                        json_t *(*make)(const json_t *user)) {
    char *key = us_key(prefix, user_id);
    if (!key)
        return TS_E_NOMEM;
    json_t *user = ts_ctx_get_json(ctx, US_STORE, user_id);
    ts_err err;
    if (!user) {
        err = ts_ctx_view_del(ctx, key);
    } else {
        json_t *doc = make(user);
        err = doc ? ts_ctx_view_set_json(ctx, key, doc) : TS_E_NOMEM;
        json_decref(doc);
        json_decref(user);
    }
    free(key);
    return err;
}

/* user:info:{id}: {profile: {...}, preferences: {...}, version}. */
static json_t *us_info_doc(const json_t *user) {
    return json_pack("{s:o?, s:o?}", "profile", us_profile_doc(user), "preferences",
                     us_prefs_doc(user));
}

static ts_err us_profile_render(ts_ctx *ctx, const char *user_id) {
    return us_render(ctx, "user:profile:", user_id, us_profile_doc);
}

static ts_err us_prefs_render(ts_ctx *ctx, const char *user_id) {
    return us_render(ctx, "user:preferences:", user_id, us_prefs_doc);
}

static ts_err us_info_render(ts_ctx *ctx, const char *user_id) {
    return us_render(ctx, "user:info:", user_id, us_info_doc);
}

/* Upserts the whole `users` row of `user`; deleted_at < 0 means not deleted. */
static ts_err us_users_row(ts_ctx *ctx, const json_t *user, int64_t deleted_at) {
    ts_row *row = ts_ctx_row_upsert(ctx, "users");
    ts_row_key(row, "user_id", us_strf(user, "id"));
    ts_row_text(row, "email", us_strf(user, "email"));
    ts_row_text(row, "display_name", us_strf(user, "displayName"));
    ts_row_text(row, "profile_image_url", us_strf(user, "profileImageUrl"));
    ts_row_time(row, "created_at", (int64_t)json_integer_value(json_object_get(user, "createdAt")));
    ts_row_time(row, "updated_at", (int64_t)json_integer_value(json_object_get(user, "updatedAt")));
    /* Written every time, so a user registered again after a delete is live again. */
    if (deleted_at >= 0)
        ts_row_time(row, "deleted_at", deleted_at);
    else
        ts_row_text(row, "deleted_at", NULL);
    return ts_row_done(row);
}

static ts_err us_prefs_row(ts_ctx *ctx, const json_t *user) {
    const json_t *prefs = json_object_get(user, "preferences");
    const json_t *updated = json_object_get(prefs, "updatedAt");
    ts_row *row = ts_ctx_row_upsert(ctx, "user_preferences");
    ts_row_key(row, "user_id", us_strf(user, "id"));
    for (size_t i = 0; i < US_NLISTS; i++)
        ts_row_json(row, us_lists[i].field, json_object_get(prefs, us_lists[i].view));
    ts_row_json(row, "taste", json_object_get(prefs, "taste"));
    if (json_is_integer(updated))
        ts_row_time(row, "updated_at", (int64_t)json_integer_value(updated));
    else
        ts_row_text(row, "updated_at", NULL);
    return ts_row_done(row);
}

/* Stores `user` and rewrites what `what` names: profile (view + users row),
 * preferences (view + user_preferences row); user:info always. */
enum { US_PROFILE = 1, US_PREFS = 2 };

static ts_err us_save(ts_ctx *ctx, const json_t *user, int what) {
    const char *id = us_strf(user, "id");
    ts_err err = ts_ctx_put_json(ctx, US_STORE, id, user);
    if (err == TS_OK && (what & US_PROFILE))
        err = ts_ctx_view_render(ctx, us_profile_render, id);
    if (err == TS_OK && (what & US_PROFILE))
        err = us_users_row(ctx, user, -1);
    if (err == TS_OK && (what & US_PREFS))
        err = ts_ctx_view_render(ctx, us_prefs_render, id);
    if (err == TS_OK && (what & US_PREFS))
        err = us_prefs_row(ctx, user);
    if (err == TS_OK)
        err = ts_ctx_view_render(ctx, us_info_render, id);
    return err;
}

/* ---- the events --------------------------------------------------------------- */

static ts_err us_registered(ts_ctx *ctx, const ts_event *ev, const char *user_id, int64_t at) {
    const char *email = ts_event_str(ev, "email");
    char *local = email ? us_local_part(email) : NULL;
    if (!local)
        return ts_ctx_reject(ctx, "UserRegistered for user %s: '%s' is not an email address "
                                  "(no text before '@')",
                             user_id, email ? email : "");
    /* Before any PreferencesSet a user has empty lists, no taste and no
     * preferences.updatedAt: the views say "nothing chosen yet" rather than
     * being absent, so a reader needs no special case. */
    json_t *user = json_pack("{s:s, s:s, s:s, s:n, s:I, s:I, s:{s:[], s:[], s:[], s:{}, s:n}}",
                             "id", user_id, "email", email, "displayName", local,
                             "profileImageUrl", "createdAt", (json_int_t)at, "updatedAt",
                             (json_int_t)at, "preferences", "dietaryRestrictions", "allergies",
                             "favoriteCuisines", "taste", "updatedAt");
    free(local);
    if (!user)
        return TS_E_NOMEM;
    ts_err err = us_save(ctx, user, US_PROFILE | US_PREFS);
    json_decref(user);
    return err;
}

static ts_err us_profile_updated(ts_ctx *ctx, const ts_event *ev, json_t *user, int64_t at) {
    /* Only the fields present change (null = as before); "" resets: the
     * display name to its default, the image to none. */
    const char *name = ts_event_str(ev, "display_name");
    const char *image = ts_event_str(ev, "profile_image_url");
    if (name && *name) {
        json_object_set_new(user, "displayName", json_string(name));
    } else if (name) {
        char *local = us_local_part(us_strf(user, "email"));
        if (!local)
            return TS_E_NOMEM; /* the email was checked at registration */
        json_object_set_new(user, "displayName", json_string(local));
        free(local);
    }
    if (image)
        json_object_set_new(user, "profileImageUrl", *image ? json_string(image) : json_null());
    json_object_set_new(user, "updatedAt", json_integer(at));
    return us_save(ctx, user, US_PROFILE);
}

/* Checks the list `field` of the event against the options and returns it
 * normalized (the chosen options in option order, each once). NULL after a
 * rejection (*err = TS_E_REJECT) or on allocation failure (*err = TS_E_NOMEM). */
static json_t *us_norm_list(const user_proc *up, ts_ctx *ctx, const ts_event *ev, size_t li,
                            const char *user_id, ts_err *err) {
    json_t *given = ts_event_json(ev, us_lists[li].field);
    json_t *norm = NULL;
    size_t i;
    json_t *item;
    if (!json_is_array(given)) {
        *err = ts_ctx_reject(ctx, "PreferencesSet for user %s: no %s list", user_id,
                             us_lists[li].field);
        goto done;
    }
    json_array_foreach(given, i, item) {
        if (!json_is_string(item) || !us_list_has(up->options[li], json_string_value(item))) {
            *err = ts_ctx_reject(ctx, "PreferencesSet for user %s: '%s' is not an allowed %s "
                                      "value (see preferences:options)",
                                 user_id, json_is_string(item) ? json_string_value(item) : "?",
                                 us_lists[li].field);
            goto done;
        }
    }
    *err = TS_E_NOMEM;
    if (!(norm = json_array()))
        goto done;
    json_array_foreach(up->options[li], i, item) {
        if (us_list_has(given, json_string_value(item)) && json_array_append(norm, item) != 0) {
            json_decref(norm);
            norm = NULL;
            goto done;
        }
    }
    *err = TS_OK;
done:
    json_decref(given);
    return norm;
}

/* As us_norm_list, for the taste map: known keys, values in min..max, entries
 * in taste-key order. */
static json_t *us_norm_taste(const user_proc *up, ts_ctx *ctx, const ts_event *ev,
                             const char *user_id, ts_err *err) {
    json_t *given = ts_event_json(ev, "taste");
    json_t *norm = NULL;
    const char *key;
    json_t *value;
    if (!json_is_object(given)) {
        *err = ts_ctx_reject(ctx, "PreferencesSet for user %s: no taste map", user_id);
        goto done;
    }
    json_object_foreach(given, key, value) {
        if (!us_list_has(up->taste_keys, key)) {
            *err = ts_ctx_reject(ctx, "PreferencesSet for user %s: unknown taste key '%s' "
                                      "(see preferences:options)",
                                 user_id, key);
            goto done;
        }
        json_int_t level = json_integer_value(value);
        if (!json_is_integer(value) || level < up->taste_min || level > up->taste_max) {
            *err = ts_ctx_reject(ctx, "PreferencesSet for user %s: taste %s = %lld is outside "
                                      "%lld..%lld",
                                 user_id, key, (long long)level, (long long)up->taste_min,
                                 (long long)up->taste_max);
            goto done;
        }
    }
    *err = TS_E_NOMEM;
    if (!(norm = json_object()))
        goto done;
    size_t i;
    json_t *tk;
    json_array_foreach(up->taste_keys, i, tk) {
        value = json_object_get(given, json_string_value(tk));
        if (value && json_object_set(norm, json_string_value(tk), value) != 0) {
            json_decref(norm);
            norm = NULL;
            goto done;
        }
    }
    *err = TS_OK;
done:
    json_decref(given);
    return norm;
}

/* Fills one side (before/after) of a PreferenceChange: the union's array
 * branch for a list, its map branch for the taste map. */
static int us_fill_side(avro_value_t *change, const char *side, const json_t *value) {
    avro_value_t u, branch, item;
    if (avro_value_get_by_name(change, side, &u, NULL) != 0)
        return -1;
    if (json_is_array(value)) {
        size_t i;
        const json_t *s;
        if (avro_value_set_branch(&u, 0, &branch) != 0)
            return -1;
        json_array_foreach(value, i, s) {
            if (avro_value_append(&branch, &item, NULL) != 0 ||
                avro_value_set_string(&item, json_string_value(s)) != 0)
                return -1;
        }
        return 0;
    }
    const char *key;
    const json_t *level;
    if (avro_value_set_branch(&u, 1, &branch) != 0)
        return -1;
    json_object_foreach((json_t *)value, key, level) {
        if (avro_value_add(&branch, key, &item, NULL, NULL) != 0 ||
            avro_value_set_int(&item, (int32_t)json_integer_value(level)) != 0)
            return -1;
    }
    return 0;
}

/* Emits UserPreferenceUpdated with one change per entry of `changes`
 * ([{field, before, after}], JSON values). */
static ts_err us_emit_changes(ts_ctx *ctx, const char *event_id, const char *user_id,
                              int64_t at, const json_t *changes) {
    avro_value_t *rec = ts_ctx_event_new(ctx, US_OUTPUT_TOPIC, US_OUTPUT_RECORD);
    if (!rec)
        return TS_E_INVALID; /* the topic is not an output, or its schema lacks the record */
    char *out_id = us_key(event_id, ":preference-updated");
    avro_value_t field, list, change, name;
    int rc = out_id ? 0 : -1;
    rc = rc ? rc : avro_value_get_by_name(rec, "event_type", &field, NULL);
    rc = rc ? rc : avro_value_set_string(&field, US_OUTPUT_RECORD);
    rc = rc ? rc : avro_value_get_by_name(rec, "event_id", &field, NULL);
    rc = rc ? rc : avro_value_set_string(&field, out_id);
    rc = rc ? rc : avro_value_get_by_name(rec, "timestamp", &field, NULL);
    rc = rc ? rc : avro_value_set_long(&field, at);
    rc = rc ? rc : avro_value_get_by_name(rec, "user_id", &field, NULL);
    rc = rc ? rc : avro_value_set_string(&field, user_id);
    rc = rc ? rc : avro_value_get_by_name(rec, "changes", &list, NULL);
    size_t i;
    const json_t *c;
    json_array_foreach(changes, i, c) {
        rc = rc ? rc : avro_value_append(&list, &change, NULL);
        rc = rc ? rc : avro_value_get_by_name(&change, "field", &name, NULL);
        rc = rc ? rc : avro_value_set_string(&name, us_strf(c, "field"));
        rc = rc ? rc : us_fill_side(&change, "before", json_object_get(c, "before"));
        rc = rc ? rc : us_fill_side(&change, "after", json_object_get(c, "after"));
    }
    free(out_id);
    if (rc != 0)
        return TS_E_NOMEM;
    return ts_ctx_emit(ctx, US_OUTPUT_TOPIC, user_id, rec);
}

static ts_err us_preferences_set(const user_proc *up, ts_ctx *ctx, const ts_event *ev,
                                 json_t *user, const char *user_id, int64_t at) {
    json_t *norm[US_NLISTS + 1] = {NULL};
    json_t *changes = NULL;
    ts_err err = TS_OK;
    size_t n;
    for (n = 0; n < US_NLISTS && err == TS_OK; n++)
        norm[n] = us_norm_list(up, ctx, ev, n, user_id, &err);
    if (err == TS_OK)
        norm[US_NLISTS] = us_norm_taste(up, ctx, ev, user_id, &err);
    if (err != TS_OK)
        goto done;

    err = TS_E_NOMEM;
    json_t *prefs = json_object_get(user, "preferences");
    if (!json_is_object(prefs) || !(changes = json_array()))
        goto done;
    for (size_t i = 0; i <= US_NLISTS; i++) {
        const char *view = i < US_NLISTS ? us_lists[i].view : "taste";
        const char *field = i < US_NLISTS ? us_lists[i].field : "taste";
        json_t *before = json_object_get(prefs, view);
        if (before && json_equal(before, norm[i]))
            continue;
        json_t *empty = i < US_NLISTS ? json_array() : json_object();
        json_t *change = json_pack("{s:s, s:O, s:O}", "field", field, "before",
                                   before ? before : empty, "after", norm[i]);
        json_decref(empty);
        if (!change || json_array_append_new(changes, change) != 0)
            goto done;
    }
    /* A set that changes nothing is not applied at all: no state, view or row
     * write and no output event, so preferences.updatedAt keeps the time of
     * the last real change. */
    err = TS_OK;
    if (json_array_size(changes) == 0)
        goto done;

    for (size_t i = 0; i <= US_NLISTS; i++)
        json_object_set(prefs, i < US_NLISTS ? us_lists[i].view : "taste", norm[i]);
    json_object_set_new(prefs, "updatedAt", json_integer(at));
    err = us_save(ctx, user, US_PREFS);
    if (err == TS_OK)
        err = us_emit_changes(ctx, ts_event_str(ev, "event_id"), user_id, at, changes);
done:
    for (size_t i = 0; i <= US_NLISTS; i++)
        json_decref(norm[i]);
    json_decref(changes);
    return err;
}

static ts_err us_deleted(ts_ctx *ctx, const json_t *user, const char *user_id, int64_t at) {
    ts_err err = ts_ctx_del(ctx, US_STORE, user_id);
    /* The renders delete the views of a user not stored. */
    if (err == TS_OK)
        err = ts_ctx_view_render(ctx, us_profile_render, user_id);
    if (err == TS_OK)
        err = ts_ctx_view_render(ctx, us_prefs_render, user_id);
    if (err == TS_OK)
        err = ts_ctx_view_render(ctx, us_info_render, user_id);
    if (err == TS_OK)
        err = us_users_row(ctx, user, at);
    if (err == TS_OK) {
        /* Preferences are personal data with no use after the account is gone;
         * a user registered again gets an empty row. */
        ts_row *row = ts_ctx_row_delete(ctx, "user_preferences");
        ts_row_key(row, "user_id", user_id);
        err = ts_row_done(row);
    }
    return err;
}

/* The name of each event type's time field. */
static const char *us_time_field(const char *type) {
    static const struct {
        const char *type, *field;
    } fields[] = {
        {"UserRegistered", "registered_at"},
        {"ProfileUpdated", "updated_at"},
        {"PreferencesSet", "updated_at"},
        {"UserDeleted", "deleted_at"},
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (strcmp(fields[i].type, type) == 0)
            return fields[i].field;
    }
    return NULL;
}

static ts_err us_process(void *self, ts_ctx *ctx, const ts_event *ev) {
    const user_proc *up = self;
    const char *user_id = ts_event_id(ev, "user_id");
    const char *event_id = ts_event_str(ev, "event_id");
    const char *time_field = us_time_field(ev->type);
    int64_t at = 0;

    /* The schema makes these fields required; checking them anyway keeps a
     * malformed producer from reaching the state. */
    if (!time_field)
        return ts_ctx_reject(ctx, "unknown event type %s", ev->type);
    if (!user_id)
        return ts_ctx_reject(ctx, "%s: user_id must be non-empty, at most %d bytes", ev->type,
                             TS_EVENT_MAX_ID_BYTES);
    if (!event_id || !*event_id)
        return ts_ctx_reject(ctx, "%s for user %s: event_id must be non-empty", ev->type,
                             user_id);
    if (strlen(event_id) > TS_EVENT_MAX_SOURCE_ID_BYTES)
        return ts_ctx_reject(ctx, "%s for user %s: event_id must be at most %d bytes (its "
                                  "outputs' ids are derived from it)",
                             ev->type, user_id, TS_EVENT_MAX_SOURCE_ID_BYTES);
    if (ts_event_long(ev, time_field, &at) != 0 || at < 0)
        return ts_ctx_reject(ctx, "%s for user %s: no valid %s", ev->type, user_id, time_field);

    json_t *user = ts_ctx_get_json(ctx, US_STORE, user_id);
    ts_err err;
    if (strcmp(ev->type, "UserRegistered") == 0) {
        err = user ? ts_ctx_reject(ctx, "UserRegistered: user %s is already registered", user_id)
                   : us_registered(ctx, ev, user_id, at);
    } else if (!user) {
        err = ts_ctx_reject(ctx, "%s: user %s is not registered (never registered, or deleted)",
                            ev->type, user_id);
    } else if (strcmp(ev->type, "ProfileUpdated") == 0) {
        err = us_profile_updated(ctx, ev, user, at);
    } else if (strcmp(ev->type, "PreferencesSet") == 0) {
        err = us_preferences_set(up, ctx, ev, user, user_id, at);
    } else {
        err = us_deleted(ctx, user, user_id, at);
    }
    json_decref(user);
    return err;
}

/* Publishes the option lists and the taste scale as preferences:options, so a
 * client builds its preference form from the same lists the rules check. */
static ts_err us_setup(void *self, ts_ctx *ctx) {
    const user_proc *up = self;
    json_t *doc = json_pack("{s:O, s:O, s:O, s:{s:O, s:I, s:I}}", us_lists[0].view,
                            up->options[0], us_lists[1].view, up->options[1], us_lists[2].view,
                            up->options[2], "taste", "keys", up->taste_keys, "min",
                            up->taste_min, "max", up->taste_max);
    if (!doc)
        return TS_E_NOMEM;
    ts_err err = ts_ctx_view_set_json(ctx, "preferences:options", doc);
    json_decref(doc);
    return err;
}

const ts_processor_def ts_processor_user = {
    .name = "user",
    .create = us_create,
    .process = us_process,
    .destroy = us_destroy,
    .setup = us_setup,
};
