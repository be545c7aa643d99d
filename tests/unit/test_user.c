/* test_user.c - the user processor's rules (CONTRACT.md section 2), run
 * through the in-memory test driver, one test per rule, plus its parameters
 * and the preferences:options view written by its setup hook. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "ts_ctx.h"
#include "ts_driver_check.h"
#include "ts_topology.h"

extern const ts_processor_def ts_processor_user;

#define INPUT "user.events"
#define OUTPUT "user.preference.updated"

/* Short lists, so a test can name a value that is not allowed. */
#define PARAMS                                                                                  \
    "{\"options\": {\"dietary_restrictions\": [\"vegetarian\", \"vegan\", \"halal\", "          \
    "\"gluten_free\"], \"allergies\": [\"peanut\", \"shellfish\", \"milk\"], "                  \
    "\"favorite_cuisines\": [\"korean\", \"japanese\", \"italian\", \"thai\"]}, "               \
    "\"taste\": {\"keys\": [\"spiciness\", \"sweetness\", \"saltiness\", \"sourness\", "        \
    "\"bitterness\"], \"min\": 1, \"max\": 5}}"

static ts_driver *drv;
static int next_event_id;

static ts_driver *new_driver(void) {
    ts_driver *d = ts_driver_create(&ts_processor_user, PARAMS, INPUT);
    cr_assert_not_null(d, "driver for user");
    ts_driver_set_key_field(d, "user_id");
    return d;
}

static void setup(void) {
    drv = new_driver();
    next_event_id = 0;
}

static void teardown(void) { ts_driver_destroy(drv); }

TestSuite(user, .init = setup, .fini = teardown);

#define send_to(d, ...) ts_driver_sendf((d), &next_event_id, __VA_ARGS__)

static ts_err registered_on(ts_driver *d, const char *user, const char *email, const char *at) {
    return send_to(d, "UserRegistered",
                   "\"user_id\": \"%s\", \"email\": \"%s\", \"registered_at\": \"%s\"", user,
                   email, at);
}
static ts_err registered(const char *user, const char *email, const char *at) {
    return registered_on(drv, user, email, at);
}

/* `name_json` and `image_json` are JSON values (e.g. "null", "\"Ann\""). */
static ts_err profile(const char *user, const char *name_json, const char *image_json,
                      const char *at) {
    return send_to(drv, "ProfileUpdated",
                   "\"user_id\": \"%s\", \"display_name\": %s, \"profile_image_url\": %s, "
                   "\"updated_at\": \"%s\"",
                   user, name_json, image_json, at);
}

/* The lists and the taste map are JSON text, e.g. "[\"vegan\"]", "{}". */
static ts_err prefs_on(ts_driver *d, const char *user, const char *diet, const char *allergies,
                       const char *cuisines, const char *taste, const char *at) {
    return send_to(d, "PreferencesSet",
                   "\"user_id\": \"%s\", \"dietary_restrictions\": %s, \"allergies\": %s, "
                   "\"favorite_cuisines\": %s, \"taste\": %s, \"updated_at\": \"%s\"",
                   user, diet, allergies, cuisines, taste, at);
}
static ts_err prefs(const char *user, const char *diet, const char *allergies,
                    const char *cuisines, const char *taste, const char *at) {
    return prefs_on(drv, user, diet, allergies, cuisines, taste, at);
}

static ts_err deleted_on(ts_driver *d, const char *user, const char *at) {
    return send_to(d, "UserDeleted", "\"user_id\": \"%s\", \"deleted_at\": \"%s\"", user, at);
}
static ts_err deleted(const char *user, const char *at) { return deleted_on(drv, user, at); }

static json_t *view(const char *prefix, const char *user) {
    char key[128];
    snprintf(key, sizeof(key), "%s%s", prefix, user);
    return ts_driver_view_json(drv, key);
}

/* Asserts that `value` equals the JSON text `expected`. */
static void expect_json(const json_t *value, const char *expected, const char *what) {
    json_t *want = json_loads(expected, 0, NULL);
    cr_assert_not_null(want, "bad expected JSON %s", expected);
    char *got = value ? json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    cr_expect(value && json_equal(value, want), "%s: got %s, expected %s", what,
              got ? got : "(none)", expected);
    free(got);
    json_decref(want);
}

/* Every view, row, state key and emitted event of `d` as one JSON text. */
static char *snapshot(ts_driver *d, const char *user) {
    static const char *const prefixes[] = {"user:profile:", "user:preferences:", "user:info:"};
    json_t *all = json_object();
    char key[128];
    for (size_t i = 0; i < 3; i++) {
        snprintf(key, sizeof(key), "%s%s", prefixes[i], user);
        const char *s = ts_driver_view_str(d, key);
        json_object_set_new(all, key, s ? json_string(s) : json_null());
    }
    json_t *r = ts_driver_row(d, "users", user);
    json_object_set_new(all, "users", r ? r : json_null());
    r = ts_driver_row(d, "user_preferences", user);
    json_object_set_new(all, "user_preferences", r ? r : json_null());
    json_t *state = ts_driver_state_json(d, "user", user);
    json_object_set_new(all, "state", state ? state : json_null());
    json_t *events = json_array();
    for (size_t i = 0; i < ts_driver_emitted(d, OUTPUT); i++)
        json_array_append_new(events, ts_driver_emitted_json(d, OUTPUT, i));
    json_object_set_new(all, "emitted", events);
    char *text = json_dumps(all, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(all);
    return text;
}

/* ---- parameters and preferences:options ----------------------------------------- */

Test(user, params_without_option_lists_or_with_unknown_keys_are_refused) {
    static const char *const bad[] = {
        "{}",
        "{\"options\": {}, \"taste\": {\"keys\": [\"spiciness\"]}}",
        "{\"options\": {\"dietary_restrictions\": [\"vegan\"], \"allergies\": [\"peanut\"], "
        "\"favorite_cuisines\": [\"thai\"]}, \"taste\": {}}",
        "{\"options\": {\"dietary_restrictions\": [\"vegan\", \"vegan\"], \"allergies\": "
        "[\"peanut\"], \"favorite_cuisines\": [\"thai\"]}, \"taste\": {\"keys\": [\"sweetness\"]}}",
        "{\"options\": {\"dietary_restrictions\": [\"vegan\"], \"allergies\": [\"peanut\"], "
        "\"favorite_cuisines\": [\"thai\"], \"colours\": [\"red\"]}, \"taste\": {\"keys\": "
        "[\"sweetness\"]}}",
        "{\"options\": {\"dietary_restrictions\": [\"vegan\"], \"allergies\": [\"peanut\"], "
        "\"favorite_cuisines\": [\"\"]}, \"taste\": {\"keys\": [\"sweetness\"]}}",
        "{\"options\": {\"dietary_restrictions\": [\"vegan\"], \"allergies\": [\"peanut\"], "
        "\"favorite_cuisines\": [\"thai\"]}, \"taste\": {\"keys\": [\"sweetness\"], \"min\": 5, "
        "\"max\": 1}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *params = json_loads(bad[i], 0, NULL);
        cr_assert_not_null(params, "case %zu", i);
        char err[256] = "";
        void *self = ts_processor_user.create(params, err, sizeof(err));
        cr_expect_null(self, "case %zu accepted: %s", i, bad[i]);
        cr_expect(strncmp(err, "user: ", 6) == 0, "case %zu: reason '%s'", i, err);
        ts_processor_user.destroy(self);
        json_decref(params);
    }
}

/* Runs the setup hook as the runtime does: a context with no state and no event. */
static ts_err no_state(void *impl, const char *key, size_t klen, char **val, size_t *vlen) {
    (void)impl, (void)key, (void)klen, (void)val, (void)vlen;
    return TS_E_NOTFOUND;
}

static json_t *options_view_of(const json_t *params) {
    char err[256] = "";
    void *self = ts_processor_user.create(params, err, sizeof(err));
    cr_assert_not_null(self, "create: %s", err);
    ts_effects *effs = ts_effects_create();
    ts_state_backend none = {no_state, NULL};
    ts_ctx *ctx = ts_ctx_create(&none, effs, NULL, NULL);
    cr_assert_eq(ts_processor_user.setup(self, ctx), TS_OK);
    ts_ctx_destroy(ctx);
    ts_processor_user.destroy(self);

    cr_assert_eq(ts_effects_live(effs, 0), 1, "setup writes exactly one view");
    const ts_effect *e = ts_effects_at(effs, 0);
    cr_assert_eq(e->kind, TS_EFF_VIEW_SET);
    cr_assert_eq(e->a.len, strlen("preferences:options"));
    cr_assert(memcmp(e->a.data, "preferences:options", e->a.len) == 0);
    json_t *doc = json_loadb(e->b.data, e->b.len, 0, NULL);
    ts_effects_destroy(effs);
    cr_assert_not_null(doc);
    return doc;
}

Test(user, setup_writes_preferences_options_from_params) {
    json_t *params = json_loads(PARAMS, 0, NULL);
    json_t *doc = options_view_of(params);
    json_decref(params);
    expect_json(doc,
                "{\"dietaryRestrictions\": [\"vegetarian\", \"vegan\", \"halal\", \"gluten_free\"],"
                " \"allergies\": [\"peanut\", \"shellfish\", \"milk\"],"
                " \"favoriteCuisines\": [\"korean\", \"japanese\", \"italian\", \"thai\"],"
                " \"taste\": {\"keys\": [\"spiciness\", \"sweetness\", \"saltiness\", \"sourness\","
                " \"bitterness\"], \"min\": 1, \"max\": 5}, \"version\": -1}",
                "preferences:options");
    json_decref(doc);
}

/* The lists operators actually run with (topology.yaml) load and publish. */
Test(user, topology_params_are_valid_and_realistic) {
    ts_topology *topo = NULL;
    char err[512] = "";
    cr_assert_eq(ts_topology_load(TS_SOURCE_DIR "/topology.yaml", &topo, err, sizeof(err)), TS_OK,
                 "%s", err);
    const json_t *params = NULL;
    for (size_t i = 0; i < topo->n_processors; i++) {
        if (strcmp(topo->processors[i].name, "user") == 0)
            params = topo->processors[i].params;
    }
    cr_assert_not_null(params, "topology.yaml has a user processor");
    json_t *doc = options_view_of(params);
    ts_topology_destroy(topo);
    cr_expect_geq(json_array_size(json_object_get(doc, "dietaryRestrictions")), 5);
    cr_expect_geq(json_array_size(json_object_get(doc, "allergies")), 5);
    cr_expect_geq(json_array_size(json_object_get(doc, "favoriteCuisines")), 5);
    json_t *taste = json_object_get(doc, "taste");
    expect_json(json_object_get(taste, "keys"),
                "[\"spiciness\", \"sweetness\", \"saltiness\", \"sourness\", \"bitterness\"]",
                "taste keys");
    cr_expect_eq(ifield(taste, "min"), 1);
    cr_expect_eq(ifield(taste, "max"), 5);
    json_decref(doc);
}

/* ---- UserRegistered ----------------------------------------------------------------- */

Test(user, registered_makes_profile_preferences_and_info_views_and_rows) {
    ok(registered("u1", "minji.kim@example.com", "2026-01-10T09:00:00.123Z"));

    json_t *p = view("user:profile:", "u1");
    expect_json(p,
                "{\"id\": \"u1\", \"email\": \"minji.kim@example.com\", \"displayName\": "
                "\"minji.kim\", \"profileImageUrl\": null, \"createdAt\": "
                "\"2026-01-10T09:00:00.123Z\", \"updatedAt\": \"2026-01-10T09:00:00.123Z\", "
                "\"version\": 0}",
                "profile view");
    json_decref(p);

    json_t *pr = view("user:preferences:", "u1");
    expect_json(pr,
                "{\"dietaryRestrictions\": [], \"allergies\": [], \"favoriteCuisines\": [], "
                "\"taste\": {}, \"updatedAt\": null, \"version\": 0}",
                "preferences before any PreferencesSet");
    json_decref(pr);

    json_t *info = view("user:info:", "u1");
    expect_json(info,
                "{\"profile\": {\"id\": \"u1\", \"email\": \"minji.kim@example.com\", "
                "\"displayName\": \"minji.kim\", \"profileImageUrl\": null, \"createdAt\": "
                "\"2026-01-10T09:00:00.123Z\", \"updatedAt\": \"2026-01-10T09:00:00.123Z\"}, "
                "\"preferences\": {\"dietaryRestrictions\": [], \"allergies\": [], "
                "\"favoriteCuisines\": [], \"taste\": {}, \"updatedAt\": null}, \"version\": 0}",
                "info view");
    json_decref(info);

    json_t *row = ts_driver_row(drv, "users", "u1");
    expect_json(row,
                "{\"user_id\": \"u1\", \"email\": \"minji.kim@example.com\", \"display_name\": "
                "\"minji.kim\", \"profile_image_url\": null, \"created_at\": "
                "\"2026-01-10T09:00:00.123Z\", \"updated_at\": \"2026-01-10T09:00:00.123Z\", "
                "\"deleted_at\": null}",
                "users row");
    json_decref(row);
    row = ts_driver_row(drv, "user_preferences", "u1");
    expect_json(row,
                "{\"user_id\": \"u1\", \"dietary_restrictions\": \"{}\", \"allergies\": \"{}\", "
                "\"favorite_cuisines\": \"{}\", \"taste\": \"{}\", \"updated_at\": null}",
                "user_preferences row");
    json_decref(row);
    cr_expect_eq(ts_driver_emitted(drv, OUTPUT), 0, "registration emits nothing");
}

Test(user, display_name_defaults_to_the_part_of_the_email_before_at) {
    ok(registered("u1", "ann@example.com", "2026-01-10T09:00:00Z"));
    ok(registered("u2", "\\\"a@b\\\"@example.com", "2026-01-10T09:00:00Z"));
    json_t *p = view("user:profile:", "u1");
    cr_expect_str_eq(sfield(p, "displayName"), "ann");
    json_decref(p);
    p = view("user:profile:", "u2");
    cr_expect_str_eq(sfield(p, "displayName"), "\"a@b\"", "the last '@' ends the local part");
    json_decref(p);
}

Test(user, registered_without_an_email_local_part_is_rejected) {
    rejected(registered("u1", "no-at-sign", "2026-01-10T09:00:00Z"), "u1");
    rejected(registered("u1", "@example.com", "2026-01-10T09:00:00Z"), "not an email address");
    rejected(registered("u1", "", "2026-01-10T09:00:00Z"), "not an email address");
    cr_expect_eq(ts_driver_view_count(drv), 0);
    cr_expect_eq(ts_driver_state_count(drv), 0);
}

Test(user, registered_again_while_registered_is_rejected_already_registered) {
    ok(registered("u1", "ann@example.com", "2026-01-10T09:00:00Z"));
    char *before = snapshot(drv, "u1");
    rejected(registered("u1", "other@example.com", "2026-01-11T09:00:00Z"), "already registered");
    cr_expect(strstr(ts_driver_last_reason(drv), "u1"), "reason names the user");
    char *after = snapshot(drv, "u1");
    cr_expect_str_eq(after, before, "a rejected registration changes nothing");
    free(before);
    free(after);
}

/* ---- events for users that do not exist ------------------------------------------- */

Test(user, any_event_for_a_user_never_registered_is_rejected) {
    rejected(profile("ghost", "\"Ghost\"", "null", "2026-01-10T09:00:00Z"), "not registered");
    cr_expect(strstr(ts_driver_last_reason(drv), "ghost"), "reason names the user");
    rejected(prefs("ghost", "[]", "[]", "[]", "{}", "2026-01-10T09:00:00Z"), "not registered");
    rejected(deleted("ghost", "2026-01-10T09:00:00Z"), "not registered");
    cr_expect_eq(ts_driver_view_count(drv), 0);
    cr_expect_eq(ts_driver_row_count(drv, "users"), 0);
    cr_expect_eq(ts_driver_row_count(drv, "user_preferences"), 0);
    cr_expect_eq(ts_driver_emitted(drv, OUTPUT), 0);
    cr_expect_eq(ts_driver_state_count(drv), 0);
}

Test(user, any_event_for_a_deleted_user_is_rejected) {
    ok(registered("u1", "ann@example.com", "2026-01-10T09:00:00Z"));
    ok(deleted("u1", "2026-01-11T09:00:00Z"));
    rejected(profile("u1", "\"Ann\"", "null", "2026-01-12T09:00:00Z"), "not registered");
    rejected(prefs("u1", "[\"vegan\"]", "[]", "[]", "{}", "2026-01-12T09:00:00Z"),
             "not registered");
    rejected(deleted("u1", "2026-01-12T09:00:00Z"), "not registered");
    cr_expect_eq(ts_driver_emitted(drv, OUTPUT), 0);
}

/* ---- ProfileUpdated --------------------------------------------------------------- */

Test(user, profile_updated_changes_only_the_fields_it_carries) {
    ok(registered("u1", "ann@example.com", "2026-01-10T09:00:00Z"));
    ok(profile("u1", "\"Ann K\"", "\"https://img/ann.png\"", "2026-01-10T10:00:00Z"));
    ok(profile("u1", "null", "null", "2026-01-10T11:00:00Z"));
    json_t *p = view("user:profile:", "u1");
    cr_expect_str_eq(sfield(p, "displayName"), "Ann K", "null keeps the name");
    cr_expect_str_eq(sfield(p, "profileImageUrl"), "https://img/ann.png", "null keeps the image");
    cr_expect_str_eq(sfield(p, "createdAt"), "2026-01-10T09:00:00.000Z");
    cr_expect_str_eq(sfield(p, "updatedAt"), "2026-01-10T11:00:00.000Z");
    cr_expect_eq(ifield(p, "version"), 2);
    json_decref(p);

    json_t *info = view("user:info:", "u1");
    cr_expect_str_eq(sfield(json_object_get(info, "profile"), "displayName"), "Ann K");
    cr_expect_eq(ifield(info, "version"), 2);
    json_decref(info);
    json_t *row = ts_driver_row(drv, "users", "u1");
    cr_expect_str_eq(sfield(row, "display_name"), "Ann K");
    cr_expect_str_eq(sfield(row, "profile_image_url"), "https://img/ann.png");
    cr_expect_str_eq(sfield(row, "updated_at"), "2026-01-10T11:00:00.000Z");
    json_decref(row);

    /* The preferences view is not rewritten by a profile change. */
    json_t *pr = view("user:preferences:", "u1");
    cr_expect_eq(ifield(pr, "version"), 0);
    json_decref(pr);
}

Test(user, profile_updated_with_empty_strings_resets_name_and_removes_image) {
    ok(registered("u1", "ann@example.com", "2026-01-10T09:00:00Z"));
    ok(profile("u1", "\"Ann K\"", "\"https://img/ann.png\"", "2026-01-10T10:00:00Z"));
    ok(profile("u1", "\"\"", "\"\"", "2026-01-10T11:00:00Z"));
    json_t *p = view("user:profile:", "u1");
    cr_expect_str_eq(sfield(p, "displayName"), "ann", "back to the email's local part");
    cr_expect(json_is_null(json_object_get(p, "profileImageUrl")));
    json_decref(p);
}

/* ---- PreferencesSet: validation --------------------------------------------------- */

Test(user, preferences_set_with_values_outside_the_option_lists_is_rejected) {
    ok(registered("u1", "ann@example.com", "2026-01-10T09:00:00Z"));
    ok(prefs("u1", "[\"vegan\"]", "[\"milk\"]", "[\"thai\"]", "{\"spiciness\": 3}",
             "2026-01-10T10:00:00Z"));
    char *before = snapshot(drv, "u1");
    rejected(prefs("u1", "[\"vegan\", \"paleo\"]", "[]", "[]", "{}", "2026-01-11T00:00:00Z"),
             "'paleo' is not an allowed dietary_restrictions value");
    rejected(prefs("u1", "[]", "[\"cat\"]", "[]", "{}", "2026-01-11T00:00:00Z"),
             "'cat' is not an allowed allergies value");
    rejected(prefs("u1", "[]", "[]", "[\"martian\"]", "{}", "2026-01-11T00:00:00Z"),
             "'martian' is not an allowed favorite_cuisines value");
    rejected(prefs("u1", "[\"Vegan\"]", "[]", "[]", "{}", "2026-01-11T00:00:00Z"),
             "'Vegan'"); /* values are exact, case included */
    cr_expect(strstr(ts_driver_last_reason(drv), "u1"), "reason names the user");
    char *after = snapshot(drv, "u1");
    cr_expect_str_eq(after, before, "rejected sets change nothing and emit nothing");
    free(before);
    free(after);
}

Test(user, preferences_set_with_taste_outside_1_to_5_or_unknown_key_is_rejected) {
    ok(registered("u1", "ann@example.com", "2026-01-10T09:00:00Z"));
    rejected(prefs("u1", "[]", "[]", "[]", "{\"spiciness\": 6}", "2026-01-11T00:00:00Z"),
             "taste spiciness = 6 is outside 1..5");
    rejected(prefs("u1", "[]", "[]", "[]", "{\"sweetness\": 0}", "2026-01-11T00:00:00Z"),
             "taste sweetness = 0 is outside 1..5");
    rejected(prefs("u1", "[]", "[]", "[]", "{\"bitterness\": -2}", "2026-01-11T00:00:00Z"),
             "outside 1..5");
    rejected(prefs("u1", "[]", "[]", "[]", "{\"umami\": 3}", "2026-01-11T00:00:00Z"),
             "unknown taste key 'umami'");
    /* The bounds themselves are allowed. */
    ok(prefs("u1", "[]", "[]", "[]", "{\"spiciness\": 1, \"sweetness\": 5}",
             "2026-01-11T00:00:00Z"));
    cr_expect_eq(ts_driver_emitted(drv, OUTPUT), 1);
}

/* ---- PreferencesSet: effects -------------------------------------------------------- */

Test(user, preferences_set_replaces_the_whole_set_and_empty_arrays_clear_it) {
    ok(registered("u1", "ann@example.com", "2026-01-10T09:00:00Z"));
    ok(prefs("u1", "[\"vegan\", \"halal\"]", "[\"peanut\"]", "[\"thai\", \"korean\"]",
             "{\"spiciness\": 4, \"sweetness\": 2}", "2026-01-10T10:00:00Z"));
    json_t *pr = view("user:preferences:", "u1");
    /* Lists are sets, kept in option-list order; taste in taste-key order. */
    expect_json(pr,
                "{\"dietaryRestrictions\": [\"vegan\", \"halal\"], \"allergies\": [\"peanut\"], "
                "\"favoriteCuisines\": [\"korean\", \"thai\"], \"taste\": {\"spiciness\": 4, "
                "\"sweetness\": 2}, \"updatedAt\": \"2026-01-10T10:00:00.000Z\", \"version\": 1}",
                "preferences after the first set");
    json_decref(pr);

    ok(prefs("u1", "[]", "[\"milk\"]", "[]", "{\"sourness\": 1}", "2026-01-10T11:00:00Z"));
    pr = view("user:preferences:", "u1");
    expect_json(pr,
                "{\"dietaryRestrictions\": [], \"allergies\": [\"milk\"], "
                "\"favoriteCuisines\": [], \"taste\": {\"sourness\": 1}, "
                "\"updatedAt\": \"2026-01-10T11:00:00.000Z\", \"version\": 2}",
                "a set replaces, not merges");
    json_decref(pr);

    ok(prefs("u1", "[]", "[]", "[]", "{}", "2026-01-10T12:00:00Z"));
    pr = view("user:preferences:", "u1");
    expect_json(pr,
                "{\"dietaryRestrictions\": [], \"allergies\": [], \"favoriteCuisines\": [], "
                "\"taste\": {}, \"updatedAt\": \"2026-01-10T12:00:00.000Z\", \"version\": 3}",
                "empty arrays and map clear everything");
    json_decref(pr);

    json_t *info = view("user:info:", "u1");
    expect_json(json_object_get(info, "preferences"),
                "{\"dietaryRestrictions\": [], \"allergies\": [], \"favoriteCuisines\": [], "
                "\"taste\": {}, \"updatedAt\": \"2026-01-10T12:00:00.000Z\"}",
                "info carries the same preferences");
    cr_expect_str_eq(sfield(json_object_get(info, "profile"), "displayName"), "ann");
    cr_expect_eq(ifield(info, "version"), 3);
    json_decref(info);
}

Test(user, preferences_set_upserts_the_user_preferences_row) {
    ok(registered("u1", "ann@example.com", "2026-01-10T09:00:00Z"));
    ok(prefs("u1", "[\"gluten_free\", \"vegetarian\"]", "[]", "[\"japanese\"]",
             "{\"saltiness\": 2, \"spiciness\": 5}", "2026-01-10T10:00:00Z"));
    json_t *row = ts_driver_row(drv, "user_preferences", "u1");
    cr_assert_not_null(row);
    cr_expect_str_eq(sfield(row, "dietary_restrictions"), "{\"vegetarian\",\"gluten_free\"}");
    cr_expect_str_eq(sfield(row, "allergies"), "{}");
    cr_expect_str_eq(sfield(row, "favorite_cuisines"), "{\"japanese\"}");
    json_t *taste = json_loads(sfield(row, "taste"), 0, NULL);
    expect_json(taste, "{\"spiciness\": 5, \"saltiness\": 2}", "taste jsonb");
    json_decref(taste);
    cr_expect_str_eq(sfield(row, "updated_at"), "2026-01-10T10:00:00.000Z");
    json_decref(row);
    cr_expect_eq(ts_driver_row_count(drv, "user_preferences"), 1);
}

Test(user, preferences_set_that_changes_something_emits_user_preference_updated) {
    ok(registered("u1", "ann@example.com", "2026-01-10T09:00:00Z"));
    ok(send_to(drv, "PreferencesSet",
               "\"user_id\": \"u1\", \"dietary_restrictions\": [\"vegan\"], \"allergies\": [], "
               "\"favorite_cuisines\": [\"thai\"], \"taste\": {\"spiciness\": 3}, "
               "\"updated_at\": \"2026-01-10T10:00:00.500Z\""));
    cr_assert_eq(ts_driver_emitted(drv, OUTPUT), 1);
    json_t *e = ts_driver_emitted_json(drv, OUTPUT, 0);
    cr_assert_not_null(e);
    cr_expect_str_eq(sfield(e, "key"), "u1", "keyed by user_id");
    cr_expect_str_eq(sfield(e, "type"), "UserPreferenceUpdated");
    /* allergies stayed empty, so only three fields changed; before is the
     * empty preference set every user starts with. */
    expect_json(json_object_get(e, "value"),
                "{\"event_type\": \"UserPreferenceUpdated\", \"event_id\": "
                "\"e2:preference-updated\", \"timestamp\": 1768039200500, \"user_id\": \"u1\", "
                "\"changes\": ["
                "{\"field\": \"dietary_restrictions\", \"before\": [], \"after\": [\"vegan\"]},"
                "{\"field\": \"favorite_cuisines\", \"before\": [], \"after\": [\"thai\"]},"
                "{\"field\": \"taste\", \"before\": {}, \"after\": {\"spiciness\": 3}}]}",
                "first change");
    json_decref(e);

    ok(prefs("u1", "[\"vegan\"]", "[\"peanut\"]", "[\"thai\"]", "{\"spiciness\": 5}",
             "2026-01-11T10:00:00Z"));
    cr_assert_eq(ts_driver_emitted(drv, OUTPUT), 2);
    e = ts_driver_emitted_json(drv, OUTPUT, 1);
    expect_json(json_object_get(json_object_get(e, "value"), "changes"),
                "[{\"field\": \"allergies\", \"before\": [], \"after\": [\"peanut\"]},"
                "{\"field\": \"taste\", \"before\": {\"spiciness\": 3}, \"after\": "
                "{\"spiciness\": 5}}]",
                "only the changed fields, with before and after");
    cr_expect_str_eq(sfield(json_object_get(e, "value"), "event_id"), "e3:preference-updated");
    json_decref(e);
}

Test(user, preferences_set_that_changes_nothing_emits_nothing) {
    ok(registered("u1", "ann@example.com", "2026-01-10T09:00:00Z"));
    /* Setting the empty set a new user already has changes nothing. */
    ok(prefs("u1", "[]", "[]", "[]", "{}", "2026-01-10T09:30:00Z"));
    cr_expect_eq(ts_driver_emitted(drv, OUTPUT), 0);

    ok(prefs("u1", "[\"vegan\", \"halal\"]", "[\"peanut\", \"milk\"]", "[\"korean\"]",
             "{\"spiciness\": 4, \"sweetness\": 2}", "2026-01-10T10:00:00Z"));
    cr_assert_eq(ts_driver_emitted(drv, OUTPUT), 1);
    char *before = snapshot(drv, "u1");
    /* The same set again, in another order and with a repeat: no change. */
    ok(prefs("u1", "[\"halal\", \"vegan\", \"vegan\"]", "[\"milk\", \"peanut\"]",
             "[\"korean\"]", "{\"sweetness\": 2, \"spiciness\": 4}", "2026-01-11T10:00:00Z"));
    cr_expect_eq(ts_driver_emitted(drv, OUTPUT), 1, "nothing emitted");
    cr_expect_eq(ts_effects_live(ts_driver_effects(drv), 0), 0, "and no view or row written");
    char *after = snapshot(drv, "u1");
    cr_expect_str_eq(after, before, "updatedAt and version stay those of the last change");
    free(before);
    free(after);
}

Test(user, output_event_ids_are_deterministic_across_replays) {
    const char *events[] = {
        "{\"UserRegistered\": {\"event_id\": \"r-1\", \"user_id\": \"u1\", \"email\": "
        "\"a@x.com\", \"registered_at\": \"2026-01-10T09:00:00Z\"}}",
        "{\"PreferencesSet\": {\"event_id\": \"p-7\", \"user_id\": \"u1\", "
        "\"dietary_restrictions\": [\"halal\"], \"allergies\": [], \"favorite_cuisines\": [], "
        "\"taste\": {\"sourness\": 2}, \"updated_at\": \"2026-01-10T10:00:00Z\"}}",
    };
    ts_driver *again = new_driver();
    for (size_t i = 0; i < 2; i++) {
        ok(ts_driver_send(drv, events[i]));
        cr_assert_eq(ts_driver_send(again, events[i]), TS_OK);
    }
    char *a = snapshot(drv, "u1"), *b = snapshot(again, "u1");
    cr_expect_str_eq(a, b, "two clean passes give the same views, rows and events");
    free(a);
    free(b);
    json_t *e = ts_driver_emitted_json(again, OUTPUT, 0);
    cr_expect_str_eq(sfield(json_object_get(e, "value"), "event_id"), "p-7:preference-updated");
    json_decref(e);
    ts_driver_destroy(again);
}

/* ---- UserDeleted and registering again --------------------------------------------- */

Test(user, user_deleted_removes_the_views_and_marks_the_row_deleted) {
    ok(registered("u1", "ann@example.com", "2026-01-10T09:00:00Z"));
    ok(prefs("u1", "[\"vegan\"]", "[]", "[]", "{}", "2026-01-10T10:00:00Z"));
    ok(registered("u2", "ben@example.com", "2026-01-10T09:00:00Z"));
    ok(deleted("u1", "2026-01-12T08:00:00.250Z"));

    cr_expect_null(ts_driver_view_str(drv, "user:profile:u1"));
    cr_expect_null(ts_driver_view_str(drv, "user:preferences:u1"));
    cr_expect_null(ts_driver_view_str(drv, "user:info:u1"));
    cr_expect_eq(ts_driver_view_count(drv), 3, "only u2's three views are left");
    json_t *row = ts_driver_row(drv, "users", "u1");
    cr_assert_not_null(row, "the users row is kept");
    cr_expect_str_eq(sfield(row, "deleted_at"), "2026-01-12T08:00:00.250Z");
    cr_expect_str_eq(sfield(row, "email"), "ann@example.com");
    json_decref(row);
    cr_expect_null(ts_driver_row(drv, "user_preferences", "u1"), "preferences row removed");
    cr_expect_eq(ts_driver_row_count(drv, "user_preferences"), 1);
    cr_expect_null(ts_driver_state_json(drv, "user", "u1"));
    cr_expect_eq(ts_driver_emitted(drv, OUTPUT), 1, "a deletion emits nothing");
}

Test(user, user_registered_after_user_deleted_starts_afresh) {
    ok(registered("u1", "ann@example.com", "2026-01-10T09:00:00Z"));
    ok(profile("u1", "\"Ann\"", "\"https://img/a.png\"", "2026-01-10T09:30:00Z"));
    ok(prefs("u1", "[\"vegan\"]", "[\"milk\"]", "[\"thai\"]", "{\"spiciness\": 2}",
             "2026-01-10T10:00:00Z"));
    ok(deleted("u1", "2026-01-11T00:00:00Z"));
    ok(registered("u1", "ann.new@example.com", "2026-01-12T00:00:00Z"));

    json_t *p = view("user:profile:", "u1");
    expect_json(p,
                "{\"id\": \"u1\", \"email\": \"ann.new@example.com\", \"displayName\": "
                "\"ann.new\", \"profileImageUrl\": null, \"createdAt\": "
                "\"2026-01-12T00:00:00.000Z\", \"updatedAt\": \"2026-01-12T00:00:00.000Z\", "
                "\"version\": 4}",
                "a new profile");
    json_decref(p);
    json_t *pr = view("user:preferences:", "u1");
    expect_json(pr,
                "{\"dietaryRestrictions\": [], \"allergies\": [], \"favoriteCuisines\": [], "
                "\"taste\": {}, \"updatedAt\": null, \"version\": 4}",
                "no preferences carried over");
    json_decref(pr);
    json_t *row = ts_driver_row(drv, "users", "u1");
    cr_expect(json_is_null(json_object_get(row, "deleted_at")), "live again");
    cr_expect_str_eq(sfield(row, "created_at"), "2026-01-12T00:00:00.000Z");
    json_decref(row);
    row = ts_driver_row(drv, "user_preferences", "u1");
    cr_expect_str_eq(sfield(row, "dietary_restrictions"), "{}");
    json_decref(row);

    /* The old preferences are gone: the first set diffs against empty. */
    ok(prefs("u1", "[\"vegan\"]", "[]", "[]", "{}", "2026-01-12T01:00:00Z"));
    json_t *e = ts_driver_emitted_json(drv, OUTPUT, 1);
    expect_json(json_object_get(json_object_get(e, "value"), "changes"),
                "[{\"field\": \"dietary_restrictions\", \"before\": [], \"after\": [\"vegan\"]}]",
                "diff against the fresh empty set");
    json_decref(e);
}

/* ---- batching and samples ---------------------------------------------------------- */

Test(user, a_rejected_event_inside_a_batch_is_undone_alone) {
    ts_driver_batch_begin(drv);
    ok(registered("u1", "ann@example.com", "2026-01-10T09:00:00Z"));
    ok(prefs("u1", "[\"vegan\"]", "[]", "[]", "{}", "2026-01-10T10:00:00Z"));
    rejected(prefs("u1", "[\"halal\"]", "[]", "[]", "{\"spiciness\": 9}", "2026-01-10T11:00:00Z"),
             "outside");
    ok(profile("u1", "\"Ann\"", "null", "2026-01-10T12:00:00Z"));
    cr_assert_eq(ts_driver_batch_commit(drv), TS_OK);

    json_t *info = view("user:info:", "u1");
    expect_json(json_object_get(json_object_get(info, "preferences"), "dietaryRestrictions"),
                "[\"vegan\"]", "the rejected set left no trace");
    cr_expect_str_eq(sfield(json_object_get(info, "profile"), "displayName"), "Ann");
    cr_expect_eq(ifield(info, "version"), 3, "the last applied event's offset");
    json_decref(info);
    cr_expect_eq(ts_driver_emitted(drv, OUTPUT), 1);
}

/* samples.jsonl feeds the demo: every line must encode, and only the events it
 * documents as wrong are rejected. */
Test(user, samples_play_with_only_the_documented_rejects) {
    ts_driver *d = ts_driver_create(&ts_processor_user, NULL, INPUT);
    cr_expect_null(d, "the processor needs its option lists");
    ts_topology *topo = NULL;
    char err[512] = "";
    cr_assert_eq(ts_topology_load(TS_SOURCE_DIR "/topology.yaml", &topo, err, sizeof(err)), TS_OK,
                 "%s", err);
    char *params = NULL;
    for (size_t i = 0; i < topo->n_processors; i++) {
        if (strcmp(topo->processors[i].name, "user") == 0)
            params = json_dumps(topo->processors[i].params, JSON_COMPACT);
    }
    ts_topology_destroy(topo);
    cr_assert_not_null(params);
    d = ts_driver_create(&ts_processor_user, params, INPUT);
    free(params);
    cr_assert_not_null(d);
    ts_driver_set_key_field(d, "user_id");

    FILE *f = fopen(TS_SOURCE_DIR "/processors/user/samples.jsonl", "r");
    cr_assert_not_null(f);
    char line[4096];
    int n = 0, rejects = 0;
    while (fgets(line, sizeof(line), f)) {
        ts_err rc = ts_driver_send(d, line);
        cr_assert(rc == TS_OK || rc == TS_E_REJECT, "line %d: %s (%s)", n + 1, ts_err_name(rc),
                  ts_driver_last_reason(d));
        rejects += rc == TS_E_REJECT;
        n++;
    }
    fclose(f);
    cr_expect_gt(n, 10);
    cr_expect_eq(rejects, 5, "paleo, spiciness 9, unknown user, deleted user, registered twice");
    cr_expect_eq(ts_driver_emitted(d, OUTPUT), 4, "us-0006 changes nothing");
    json_t *info = ts_driver_view_json(d, "user:info:user-minji");
    cr_expect_str_eq(sfield(json_object_get(info, "profile"), "displayName"), "Minji");
    json_decref(info);
    info = ts_driver_view_json(d, "user:info:user-sora");
    cr_expect_str_eq(sfield(json_object_get(info, "profile"), "email"), "sora@example.net");
    json_decref(info);
    ts_driver_destroy(d);
}
