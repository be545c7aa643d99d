/* test_inventory.c - the inventory processor's rules (CONTRACT.md section 3),
 * one test per rule, run through the in-memory test driver: views, rows,
 * emitted results and alerts, rejects with their reasons, the invariants. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_driver_check.h"

extern const ts_processor_def ts_processor_inventory;

#define RESULTS "purchase.results"
#define ALERTS "inventory.alerts"

static ts_driver *drv;
static int next_event_id;

static ts_driver *new_driver(void) {
    ts_driver *d = ts_driver_create(&ts_processor_inventory, NULL, "inventory.events");
    cr_assert_not_null(d, "driver for inventory");
    ts_driver_set_key_field(d, "product_id");
    return d;
}

static void setup(void) {
    drv = new_driver();
    next_event_id = 0;
}

static void teardown(void) { ts_driver_destroy(drv); }

TestSuite(inventory, .init = setup, .fini = teardown);

#define send_to(d, ...) ts_driver_sendf((d), &next_event_id, __VA_ARGS__)

static ts_err created_on(ts_driver *d, const char *product, long long price, int stock) {
    return send_to(d, "ProductCreated",
                   "\"product_id\": \"%s\", \"name\": \"Name of %s\", \"price\": %lld, "
                   "\"initial_stock\": %d, \"created_at\": \"2026-01-01T00:00:00Z\"",
                   product, product, price, stock);
}
static ts_err created(const char *product, long long price, int stock) {
    return created_on(drv, product, price, stock);
}

static ts_err created_thr(const char *product, long long price, int stock, int threshold) {
    return send_to(drv, "ProductCreated",
                   "\"product_id\": \"%s\", \"name\": \"N\", \"price\": %lld, "
                   "\"initial_stock\": %d, \"low_stock_threshold\": %d, "
                   "\"created_at\": \"2026-01-01T00:00:00Z\"",
                   product, price, stock, threshold);
}

static ts_err adjusted_on(ts_driver *d, const char *product, int delta) {
    return send_to(d, "StockAdjusted",
                   "\"product_id\": \"%s\", \"delta\": %d, \"reason\": \"count\", "
                   "\"adjusted_at\": \"2026-01-02T00:00:00Z\"",
                   product, delta);
}
static ts_err adjusted(const char *product, int delta) { return adjusted_on(drv, product, delta); }

/* A purchase at 2026-01-03T00:00:<sec>Z. */
static ts_err purchase_on(ts_driver *d, const char *purchase, const char *user, const char *product,
                          int quantity, int sec) {
    return send_to(d, "PurchaseRequested",
                   "\"purchase_id\": \"%s\", \"user_id\": \"%s\", \"product_id\": \"%s\", "
                   "\"quantity\": %d, \"requested_at\": \"2026-01-03T00:00:%02dZ\"",
                   purchase, user, product, quantity, sec);
}
static ts_err purchase(const char *purchase_id, const char *user, const char *product,
                       int quantity, int sec) {
    return purchase_on(drv, purchase_id, user, product, quantity, sec);
}

static const char *stock_of(const char *product) {
    char key[128];
    snprintf(key, sizeof(key), "stock:%s", product);
    return ts_driver_view_str(drv, key);
}

static json_t *product_view(const char *product) {
    char key[128];
    snprintf(key, sizeof(key), "product:%s", product);
    return ts_driver_view_json(drv, key);
}

/* The i-th event emitted to `topic`, {"key", "type", "value"}; asserts it exists. */
static json_t *emitted(ts_driver *d, const char *topic, size_t i) {
    json_t *e = ts_driver_emitted_json(d, topic, i);
    cr_assert_not_null(e, "no event %zu on %s", i, topic);
    return e;
}

static const char *vfield(const json_t *e, const char *field) {
    return sfield(json_object_get(e, "value"), field);
}

static json_int_t vint(const json_t *e, const char *field) {
    return ifield(json_object_get(e, "value"), field);
}

/* Counts results of `type` among everything emitted to purchase.results. */
static size_t results_of_type(ts_driver *d, const char *type) {
    size_t n = 0, total = ts_driver_emitted(d, RESULTS);
    for (size_t i = 0; i < total; i++) {
        json_t *e = emitted(d, RESULTS, i);
        if (strcmp(sfield(e, "type"), type) == 0)
            n++;
        json_decref(e);
    }
    return n;
}

/* Everything observable of `d` for products p1..p3 and users u1..u2 (and,
 * with `with_events`, every emitted event), as one JSON text, to compare. */
static char *snapshot(ts_driver *d, int with_events) {
    static const char *const views[] = {"stock:p1", "stock:p2", "stock:p3", "product:p1",
                                        "product:p2", "product:p3"};
    json_t *all = json_object();
    for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++) {
        const char *s = ts_driver_view_str(d, views[i]);
        json_object_set_new(all, views[i], s ? json_string(s) : json_null());
    }
    static const char *const products[] = {"p1", "p2", "p3"};
    for (size_t i = 0; i < 3; i++) {
        double score = -1;
        ts_driver_zset_score(d, "ranking:products:sold", products[i], &score);
        json_object_set_new(all, products[i], json_real(score));
        json_t *row = ts_driver_row(d, "products", products[i]);
        char name[32];
        snprintf(name, sizeof(name), "row.%s", products[i]);
        json_object_set_new(all, name, row ? row : json_null());
    }
    json_object_set_new(all, "purchases.u1",
                        json_integer((json_int_t)ts_driver_zset_count(d, "purchases:u1")));
    json_object_set_new(all, "purchases.u2",
                        json_integer((json_int_t)ts_driver_zset_count(d, "purchases:u2")));
    json_object_set_new(all, "rows.purchases",
                        json_integer((json_int_t)ts_driver_row_count(d, "purchases")));
    json_t *events = json_array();
    const char *topics[] = {RESULTS, ALERTS};
    for (size_t t = 0; t < (with_events ? 2u : 0u); t++) {
        for (size_t i = 0; i < ts_driver_emitted(d, topics[t]); i++)
            json_array_append_new(events, emitted(d, topics[t], i));
    }
    json_object_set_new(all, "events", events);
    json_object_set_new(all, "state", json_integer((json_int_t)ts_driver_state_count(d)));
    char *text = json_dumps(all, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(all);
    return text;
}

/* ---- products ------------------------------------------------------------------ */

Test(inventory, product_created_makes_stock_and_product_views_and_row) {
    ok(send_to(drv, "ProductCreated",
               "\"product_id\": \"p1\", \"name\": \"Kimchi\", \"description\": \"Spicy\", "
               "\"price\": 15900, \"initial_stock\": 20, "
               "\"created_at\": \"2026-01-02T03:04:05.678Z\""));
    cr_expect_str_eq(stock_of("p1"), "20", "stock is a plain integer string");
    json_t *v = product_view("p1");
    cr_assert_not_null(v);
    cr_expect_str_eq(sfield(v, "id"), "p1");
    cr_expect_str_eq(sfield(v, "name"), "Kimchi");
    cr_expect_str_eq(sfield(v, "description"), "Spicy");
    cr_expect_eq(ifield(v, "price"), 15900);
    cr_expect_eq(ifield(v, "currentStock"), 20);
    cr_expect_str_eq(sfield(v, "createdAt"), "2026-01-02T03:04:05.678Z");
    cr_expect_str_eq(sfield(v, "updatedAt"), "2026-01-02T03:04:05.678Z");
    cr_expect_eq(ifield(v, "version"), 0);
    cr_expect_eq(json_object_size(v), 8);
    json_decref(v);

    json_t *row = ts_driver_row(drv, "products", "p1");
    cr_assert_not_null(row);
    cr_expect_str_eq(sfield(row, "name"), "Kimchi");
    cr_expect_str_eq(sfield(row, "description"), "Spicy");
    cr_expect_str_eq(sfield(row, "price"), "15900");
    cr_expect_str_eq(sfield(row, "stock"), "20");
    cr_expect_str_eq(sfield(row, "created_at"), "2026-01-02T03:04:05.678Z");
    json_decref(row);
    cr_expect_eq(ts_driver_emitted(drv, ALERTS), 0);
}

Test(inventory, product_without_description_shows_null) {
    ok(created("p1", 100, 5));
    json_t *v = product_view("p1");
    cr_expect(json_is_null(json_object_get(v, "description")));
    json_decref(v);
    json_t *row = ts_driver_row(drv, "products", "p1");
    cr_expect(json_is_null(json_object_get(row, "description")));
    json_decref(row);
}

Test(inventory, product_created_for_an_existing_product_is_rejected) {
    ok(created("p1", 100, 5));
    rejected(created("p1", 1, 999), "ProductCreated: product p1 already exists");
    cr_expect_str_eq(stock_of("p1"), "5");
    json_t *v = product_view("p1");
    cr_expect_eq(ifield(v, "price"), 100);
    cr_expect_eq(ifield(v, "version"), 0);
    json_decref(v);
}

Test(inventory, product_created_with_negative_price_stock_or_threshold_is_rejected) {
    rejected(created("p1", -1, 5), "price must be 0 or more");
    rejected(created("p1", 1, -5), "initial_stock must be 0 or more");
    rejected(created_thr("p1", 1, 5, -1), "low_stock_threshold -1 is negative");
    cr_expect_eq(ts_driver_view_count(drv), 0);
    cr_expect_eq(ts_driver_state_count(drv), 0);
    cr_expect_eq(ts_driver_row_count(drv, "products"), 0);
}

/* ---- purchases -------------------------------------------------------------------- */

Test(inventory, purchase_with_product_quantity_and_stock_is_accepted_total_price_is_price_x_quantity) {
    ok(created("p1", 15900, 20));
    ok(purchase("pur1", "u1", "p1", 3, 7));
    cr_expect_str_eq(stock_of("p1"), "17", "stock -= quantity");

    cr_assert_eq(ts_driver_emitted(drv, RESULTS), 1);
    json_t *e = emitted(drv, RESULTS, 0);
    cr_expect_str_eq(sfield(e, "key"), "u1", "results are keyed by user_id");
    cr_expect_str_eq(sfield(e, "type"), "PurchaseAccepted");
    cr_expect_str_eq(vfield(e, "event_id"), "e2:accepted");
    cr_expect_str_eq(vfield(e, "purchase_id"), "pur1");
    cr_expect_str_eq(vfield(e, "user_id"), "u1");
    cr_expect_str_eq(vfield(e, "product_id"), "p1");
    cr_expect_eq(vint(e, "quantity"), 3);
    cr_expect_eq(vint(e, "total_price"), 47700);
    cr_expect_eq(vint(e, "remaining_stock"), 17);
    json_decref(e);

    json_t *v = product_view("p1");
    cr_expect_eq(ifield(v, "currentStock"), 17);
    cr_expect_str_eq(sfield(v, "updatedAt"), "2026-01-03T00:00:07.000Z");
    cr_expect_eq(ifield(v, "version"), 1);
    json_decref(v);

    json_t *row = ts_driver_row(drv, "purchases", "pur1");
    cr_assert_not_null(row);
    cr_expect_str_eq(sfield(row, "user_id"), "u1");
    cr_expect_str_eq(sfield(row, "product_id"), "p1");
    cr_expect_str_eq(sfield(row, "quantity"), "3");
    cr_expect_str_eq(sfield(row, "total_price"), "47700");
    cr_expect_str_eq(sfield(row, "status"), "accepted");
    cr_expect(json_is_null(json_object_get(row, "reason")));
    cr_expect_str_eq(sfield(row, "decided_at"), "2026-01-03T00:00:07.000Z");
    json_decref(row);
    row = ts_driver_row(drv, "products", "p1");
    cr_expect_str_eq(sfield(row, "stock"), "17");
    json_decref(row);
}

Test(inventory, large_price_times_quantity_is_exact_in_krw) {
    ok(created("p1", 3000000000LL, 10));
    ok(purchase("pur1", "u1", "p1", 7, 1));
    json_t *e = emitted(drv, RESULTS, 0);
    cr_expect_eq(vint(e, "total_price"), 21000000000LL, "a long, beyond 32 bits");
    json_decref(e);
}

Test(inventory, purchase_of_an_unknown_product_is_rejected_unknown_product) {
    ok(purchase("pur1", "u1", "ghost", 1, 1));
    cr_assert_eq(ts_driver_emitted(drv, RESULTS), 1);
    json_t *e = emitted(drv, RESULTS, 0);
    cr_expect_str_eq(sfield(e, "type"), "PurchaseRejected");
    cr_expect_str_eq(sfield(e, "key"), "u1");
    cr_expect_str_eq(vfield(e, "event_id"), "e1:rejected");
    cr_expect_str_eq(vfield(e, "reason"), "UNKNOWN_PRODUCT");
    cr_expect_str_eq(vfield(e, "product_id"), "ghost");
    cr_expect_eq(vint(e, "quantity"), 1);
    json_decref(e);
    cr_expect_null(stock_of("ghost"));
    cr_expect_eq(ts_driver_zset_count(drv, "purchases:u1"), 0);
    json_t *row = ts_driver_row(drv, "purchases", "pur1");
    cr_assert_not_null(row);
    cr_expect_str_eq(sfield(row, "status"), "rejected");
    cr_expect_str_eq(sfield(row, "reason"), "UNKNOWN_PRODUCT");
    cr_expect(json_is_null(json_object_get(row, "total_price")));
    json_decref(row);
}

Test(inventory, quantity_zero_or_negative_is_rejected_invalid_quantity) {
    ok(created("p1", 100, 10));
    ok(purchase("pur1", "u1", "p1", 0, 1));
    ok(purchase("pur2", "u1", "p1", -2, 2));
    cr_expect_str_eq(stock_of("p1"), "10");
    cr_assert_eq(ts_driver_emitted(drv, RESULTS), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *e = emitted(drv, RESULTS, i);
        cr_expect_str_eq(sfield(e, "type"), "PurchaseRejected");
        cr_expect_str_eq(vfield(e, "reason"), "INVALID_QUANTITY");
        json_decref(e);
    }
    json_t *row = ts_driver_row(drv, "purchases", "pur2");
    cr_expect_str_eq(sfield(row, "reason"), "INVALID_QUANTITY");
    cr_expect_str_eq(sfield(row, "quantity"), "-2");
    json_decref(row);
}

Test(inventory, quantity_above_stock_is_rejected_insufficient_stock_and_stock_is_unchanged) {
    ok(created("p1", 100, 3));
    ok(purchase("pur1", "u1", "p1", 4, 1));
    cr_expect_str_eq(stock_of("p1"), "3");
    json_t *e = emitted(drv, RESULTS, 0);
    cr_expect_str_eq(sfield(e, "type"), "PurchaseRejected");
    cr_expect_str_eq(vfield(e, "reason"), "INSUFFICIENT_STOCK");
    cr_expect_eq(vint(e, "rejected_at"), 1767398401000LL);
    json_decref(e);
    cr_expect_eq(ts_driver_zset_count(drv, "purchases:u1"), 0);
    cr_expect_eq(ts_driver_zset_count(drv, "ranking:products:sold"), 0);
    json_t *v = product_view("p1");
    cr_expect_eq(ifield(v, "version"), 0, "a rejected purchase does not touch the product");
    json_decref(v);
}

Test(inventory, purchase_of_exactly_the_stock_is_accepted) {
    ok(created("p1", 100, 3));
    ok(purchase("pur1", "u1", "p1", 3, 1));
    cr_expect_str_eq(stock_of("p1"), "0");
    json_t *e = emitted(drv, RESULTS, 0);
    cr_expect_str_eq(sfield(e, "type"), "PurchaseAccepted");
    cr_expect_eq(vint(e, "remaining_stock"), 0);
    json_decref(e);
}

Test(inventory, a_repeated_purchase_id_changes_nothing_and_gets_the_first_result_again) {
    ok(created("p1", 100, 10));
    ok(purchase("pur1", "u1", "p1", 2, 1));
    char *before = snapshot(drv, 0);
    /* The same purchase_id under a new event_id, asking for more: nothing moves. */
    ok(purchase("pur1", "u1", "p1", 5, 9));
    cr_expect_str_eq(stock_of("p1"), "8");
    cr_assert_eq(ts_driver_emitted(drv, RESULTS), 2, "the first result is re-emitted");
    json_t *first = emitted(drv, RESULTS, 0), *again = emitted(drv, RESULTS, 1);
    cr_expect(json_equal(first, again), "re-emitted result equals the first, event_id included");
    cr_expect_str_eq(vfield(again, "event_id"), "e2:accepted");
    cr_expect_eq(vint(again, "quantity"), 2);
    json_decref(first);
    json_decref(again);
    json_t *row = ts_driver_row(drv, "purchases", "pur1");
    cr_expect_str_eq(sfield(row, "quantity"), "2");
    cr_expect_str_eq(sfield(row, "decided_at"), "2026-01-03T00:00:01.000Z");
    json_decref(row);
    double score;
    cr_expect_eq(ts_driver_zset_score(drv, "ranking:products:sold", "p1", &score), 0);
    cr_expect_eq(score, 2.0);
    cr_expect_eq(ts_driver_zset_count(drv, "purchases:u1"), 1);
    char *after = snapshot(drv, 0);
    cr_expect_str_eq(after, before, "views, rows and state are untouched");
    free(before);
    free(after);
}

Test(inventory, a_rejected_purchase_id_stays_rejected_after_a_restock) {
    ok(created("p1", 100, 1));
    ok(purchase("pur1", "u1", "p1", 5, 1));
    ok(adjusted("p1", 10));
    ok(purchase("pur1", "u1", "p1", 5, 2));
    cr_expect_str_eq(stock_of("p1"), "11");
    json_t *again = emitted(drv, RESULTS, 1);
    cr_expect_str_eq(sfield(again, "type"), "PurchaseRejected");
    cr_expect_str_eq(vfield(again, "reason"), "INSUFFICIENT_STOCK");
    cr_expect_str_eq(vfield(again, "event_id"), "e2:rejected");
    json_decref(again);
    /* Likewise an unknown product's purchase, once the product exists. */
    ok(purchase("pur2", "u1", "p2", 1, 3));
    ok(created("p2", 5, 5));
    ok(purchase("pur2", "u1", "p2", 1, 4));
    json_t *e = emitted(drv, RESULTS, 3);
    cr_expect_str_eq(vfield(e, "reason"), "UNKNOWN_PRODUCT");
    json_decref(e);
    cr_expect_str_eq(stock_of("p2"), "5");
}

/* ---- stock adjustments ---------------------------------------------------------- */

Test(inventory, stock_adjusted_adds_and_removes_units) {
    ok(created("p1", 100, 10));
    ok(adjusted("p1", 5));
    cr_expect_str_eq(stock_of("p1"), "15");
    ok(adjusted("p1", -15));
    cr_expect_str_eq(stock_of("p1"), "0");
    json_t *v = product_view("p1");
    cr_expect_eq(ifield(v, "currentStock"), 0);
    cr_expect_str_eq(sfield(v, "updatedAt"), "2026-01-02T00:00:00.000Z");
    cr_expect_str_eq(sfield(v, "createdAt"), "2026-01-01T00:00:00.000Z");
    json_decref(v);
    json_t *row = ts_driver_row(drv, "products", "p1");
    cr_expect_str_eq(sfield(row, "stock"), "0");
    json_decref(row);
}

Test(inventory, stock_adjusted_that_would_make_stock_negative_is_rejected) {
    ok(created("p1", 100, 10));
    ok(purchase("pur1", "u1", "p1", 4, 1));
    rejected(adjusted("p1", -7), "delta -7 would make stock -1 (stock is never negative)");
    cr_expect_str_eq(stock_of("p1"), "6");
    cr_expect_eq(ts_driver_emitted(drv, ALERTS), 0, "a rejected adjustment alerts nothing");
    json_t *v = product_view("p1");
    cr_expect_eq(ifield(v, "version"), 1);
    json_decref(v);
}

Test(inventory, stock_adjusted_for_an_unknown_product_is_rejected) {
    rejected(adjusted("p9", 5), "StockAdjusted: product p9 does not exist");
    cr_expect_eq(ts_driver_view_count(drv), 0);
    cr_expect_eq(ts_driver_state_count(drv), 0);
}

/* ---- alerts -------------------------------------------------------------------------- */

Test(inventory, stock_low_when_stock_falls_below_default_threshold_of_10_percent_once_per_crossing) {
    ok(created("p1", 100, 50)); /* threshold 5 */
    ok(purchase("pur1", "u1", "p1", 45, 1)); /* 5: not below */
    cr_expect_eq(ts_driver_emitted(drv, ALERTS), 0);
    ok(purchase("pur2", "u1", "p1", 1, 2)); /* 4: below */
    cr_assert_eq(ts_driver_emitted(drv, ALERTS), 1);
    json_t *e = emitted(drv, ALERTS, 0);
    cr_expect_str_eq(sfield(e, "type"), "StockLow");
    cr_expect_str_eq(sfield(e, "key"), "p1");
    cr_expect_str_eq(vfield(e, "event_id"), "e3:stock-low");
    cr_expect_str_eq(vfield(e, "product_id"), "p1");
    cr_expect_eq(vint(e, "stock"), 4);
    cr_expect_eq(vint(e, "threshold"), 5);
    cr_expect_eq(vint(e, "at"), 1767398402000LL);
    json_decref(e);
    ok(purchase("pur3", "u1", "p1", 1, 3)); /* 3: still below, same crossing */
    ok(adjusted("p1", -1));                 /* 2 */
    cr_expect_eq(ts_driver_emitted(drv, ALERTS), 1, "once per crossing");
}

Test(inventory, default_threshold_rounds_10_percent_up) {
    ok(created("p1", 100, 15)); /* 10% = 1.5: stock 1 is below, 2 is not */
    ok(purchase("pur1", "u1", "p1", 13, 1));
    cr_expect_eq(ts_driver_emitted(drv, ALERTS), 0, "2 is not below 1.5");
    ok(purchase("pur2", "u1", "p1", 1, 2));
    cr_assert_eq(ts_driver_emitted(drv, ALERTS), 1);
    json_t *e = emitted(drv, ALERTS, 0);
    cr_expect_eq(vint(e, "threshold"), 2);
    json_decref(e);
}

Test(inventory, explicit_low_stock_threshold_is_used) {
    ok(created_thr("p1", 100, 100, 30));
    ok(adjusted("p1", -70)); /* 30 */
    cr_expect_eq(ts_driver_emitted(drv, ALERTS), 0);
    ok(adjusted("p1", -1)); /* 29: below, by an adjustment */
    cr_assert_eq(ts_driver_emitted(drv, ALERTS), 1);
    json_t *e = emitted(drv, ALERTS, 0);
    cr_expect_str_eq(sfield(e, "type"), "StockLow");
    cr_expect_eq(vint(e, "threshold"), 30);
    cr_expect_eq(vint(e, "stock"), 29);
    json_decref(e);
}

Test(inventory, stock_adjusted_back_above_threshold_re_arms_stock_low) {
    ok(created_thr("p1", 100, 10, 5));
    ok(purchase("pur1", "u1", "p1", 6, 1)); /* 4: StockLow */
    ok(adjusted("p1", 1));                  /* 5: back at the line, re-armed */
    ok(purchase("pur2", "u1", "p1", 1, 2)); /* 4: StockLow again */
    ok(adjusted("p1", 10));                 /* 14 */
    ok(purchase("pur3", "u1", "p1", 9, 3)); /* 5: not below */
    ok(purchase("pur4", "u1", "p1", 2, 4)); /* 3: StockLow a third time */
    cr_assert_eq(ts_driver_emitted(drv, ALERTS), 3);
    json_t *e = emitted(drv, ALERTS, 1);
    cr_expect_str_eq(vfield(e, "event_id"), "e4:stock-low");
    json_decref(e);
    e = emitted(drv, ALERTS, 2);
    cr_expect_str_eq(vfield(e, "event_id"), "e7:stock-low");
    json_decref(e);
}

Test(inventory, sold_out_when_stock_reaches_0_once_until_restocked) {
    ok(created_thr("p1", 100, 10, 0)); /* threshold 0: StockLow never fires */
    ok(purchase("pur1", "u1", "p1", 10, 1));
    cr_assert_eq(ts_driver_emitted(drv, ALERTS), 1);
    json_t *e = emitted(drv, ALERTS, 0);
    cr_expect_str_eq(sfield(e, "type"), "SoldOut");
    cr_expect_str_eq(sfield(e, "key"), "p1");
    cr_expect_str_eq(vfield(e, "event_id"), "e2:sold-out");
    cr_expect_eq(vint(e, "at"), 1767398401000LL);
    json_decref(e);
    ok(purchase("pur2", "u1", "p1", 1, 2)); /* rejected, still 0 */
    ok(adjusted("p1", 0));
    cr_expect_eq(ts_driver_emitted(drv, ALERTS), 1, "once per crossing");
    ok(adjusted("p1", 2));                  /* re-armed */
    ok(purchase("pur3", "u1", "p1", 2, 3)); /* 0 again */
    cr_assert_eq(ts_driver_emitted(drv, ALERTS), 2);
    e = emitted(drv, ALERTS, 1);
    cr_expect_str_eq(sfield(e, "type"), "SoldOut");
    cr_expect_str_eq(vfield(e, "event_id"), "e6:sold-out");
    json_decref(e);
}

Test(inventory, one_purchase_crossing_both_lines_emits_stock_low_then_sold_out) {
    ok(created("p1", 100, 20)); /* threshold 2 */
    ok(purchase("pur1", "u1", "p1", 20, 1));
    cr_assert_eq(ts_driver_emitted(drv, ALERTS), 2);
    json_t *a = emitted(drv, ALERTS, 0), *b = emitted(drv, ALERTS, 1);
    cr_expect_str_eq(sfield(a, "type"), "StockLow");
    cr_expect_eq(vint(a, "stock"), 0);
    cr_expect_str_eq(sfield(b, "type"), "SoldOut");
    json_decref(a);
    json_decref(b);
}

Test(inventory, a_product_created_empty_or_low_alerts_only_after_recovering) {
    ok(created("p1", 100, 0));
    ok(adjusted("p1", 0));
    cr_expect_eq(ts_driver_emitted(drv, ALERTS), 0, "creation is not a crossing");
    ok(adjusted("p1", 1));
    ok(purchase("pur1", "u1", "p1", 1, 1));
    cr_assert_eq(ts_driver_emitted(drv, ALERTS), 1);
    json_t *e = emitted(drv, ALERTS, 0);
    cr_expect_str_eq(sfield(e, "type"), "SoldOut");
    json_decref(e);
}

/* ---- views of purchases ------------------------------------------------------------- */

Test(inventory, purchases_view_holds_accepted_purchases_scored_by_purchase_time) {
    ok(created("p1", 1000, 10));
    ok(created("p2", 250, 10));
    ok(purchase("pur1", "u1", "p1", 2, 5));
    ok(purchase("pur2", "u1", "p2", 4, 9));
    ok(purchase("pur3", "u1", "p2", 99, 10)); /* rejected: not listed */
    ok(purchase("pur4", "u2", "p1", 1, 11));
    cr_expect_eq(ts_driver_zset_count(drv, "purchases:u1"), 2);
    cr_expect_eq(ts_driver_zset_count(drv, "purchases:u2"), 1);
    double score = 0;
    const char *m1 = "{\"purchaseId\":\"pur1\",\"productId\":\"p1\",\"quantity\":2,"
                     "\"totalPrice\":2000,\"purchasedAt\":\"2026-01-03T00:00:05.000Z\"}";
    cr_expect_eq(ts_driver_zset_score(drv, "purchases:u1", m1, &score), 0, "member %s", m1);
    cr_expect_eq(score, 1767398405000.0);
    const char *m2 = "{\"purchaseId\":\"pur2\",\"productId\":\"p2\",\"quantity\":4,"
                     "\"totalPrice\":1000,\"purchasedAt\":\"2026-01-03T00:00:09.000Z\"}";
    cr_expect_eq(ts_driver_zset_score(drv, "purchases:u1", m2, &score), 0, "member %s", m2);
    cr_expect_eq(score, 1767398409000.0);
}

Test(inventory, ranking_products_sold_scores_total_units_sold) {
    ok(created("p1", 1, 100));
    ok(created("p2", 1, 100));
    ok(purchase("a", "u1", "p1", 3, 1));
    ok(purchase("b", "u2", "p1", 4, 2));
    ok(purchase("c", "u1", "p2", 5, 3));
    ok(purchase("d", "u1", "p2", 500, 4)); /* rejected: not counted */
    ok(adjusted("p1", -10));               /* adjustments are not sales */
    double s1 = 0, s2 = 0;
    cr_expect_eq(ts_driver_zset_score(drv, "ranking:products:sold", "p1", &s1), 0);
    cr_expect_eq(ts_driver_zset_score(drv, "ranking:products:sold", "p2", &s2), 0);
    cr_expect_eq(s1, 7.0);
    cr_expect_eq(s2, 5.0);
    cr_expect_eq(ts_driver_zset_count(drv, "ranking:products:sold"), 2);
}

/* ---- invariants -------------------------------------------------------------------- */

Test(inventory, ten_in_stock_twenty_requests_of_one_exactly_ten_accepted,
     .description = "10 in stock, 20 requests of 1 -> exactly 10 accepted") {
    ok(created("p1", 100, 10));
    ts_driver_batch_begin(drv); /* all in one batch, as a burst would come */
    for (int i = 0; i < 20; i++) {
        char id[16], user[16];
        snprintf(id, sizeof(id), "pur%d", i);
        snprintf(user, sizeof(user), "u%d", i % 3);
        ok(purchase(id, user, "p1", 1, i));
    }
    cr_assert_eq(ts_driver_batch_commit(drv), TS_OK);
    cr_expect_eq(results_of_type(drv, "PurchaseAccepted"), 10);
    cr_expect_eq(results_of_type(drv, "PurchaseRejected"), 10);
    cr_expect_str_eq(stock_of("p1"), "0");
    for (int i = 0; i < 20; i++) {
        char id[16];
        snprintf(id, sizeof(id), "pur%d", i);
        json_t *row = ts_driver_row(drv, "purchases", id);
        cr_expect_str_eq(sfield(row, "status"), i < 10 ? "accepted" : "rejected", "%s", id);
        json_decref(row);
    }
    double sold = 0;
    ts_driver_zset_score(drv, "ranking:products:sold", "p1", &sold);
    cr_expect_eq(sold, 10.0);
}

/* A long mixed stream: after every event the stock is never negative and
 * accepted quantities = initial stock + adjustments - current stock. */
Test(inventory, stock_never_negative_and_accepted_equals_initial_plus_adjustments_minus_stock) {
    ok(created("p1", 10, 25));
    long long adjustments = 0, accepted = 0;
    unsigned seed = 12345;
    for (int i = 0; i < 300; i++) {
        seed = seed * 1103515245u + 12345u;
        int r = (int)((seed >> 16) % 100);
        char id[16];
        snprintf(id, sizeof(id), "pur%d", i % 250); /* some purchase_ids repeat */
        if (r < 15) {
            int delta = (int)((seed >> 8) % 21) - 10;
            ts_err err = adjusted("p1", delta);
            if (err == TS_OK)
                adjustments += delta;
            else
                cr_assert_eq(err, TS_E_REJECT);
        } else {
            size_t before = ts_driver_emitted(drv, RESULTS);
            ok(purchase(id, "u1", "p1", (int)((seed >> 4) % 6) - 1, i % 60));
            cr_assert_eq(ts_driver_emitted(drv, RESULTS), before + 1);
            json_t *e = emitted(drv, RESULTS, before);
            /* Count only first decisions: a repeat re-emits an old result. */
            char first_id[32];
            snprintf(first_id, sizeof(first_id), "e%d:accepted", next_event_id);
            if (strcmp(vfield(e, "event_id"), first_id) == 0)
                accepted += vint(e, "quantity");
            json_decref(e);
        }
        long long stock = atoll(stock_of("p1"));
        cr_assert_geq(stock, 0, "stock never negative (event %d)", i);
        cr_assert_eq(accepted, 25 + adjustments - stock, "event %d", i);
    }
    json_t *st = ts_driver_state_json(drv, "product", "p1");
    cr_expect_eq(ifield(st, "sold"), accepted);
    cr_expect_eq(ifield(st, "adjustments"), adjustments);
    json_decref(st);
    double sold = 0;
    ts_driver_zset_score(drv, "ranking:products:sold", "p1", &sold);
    cr_expect_eq((long long)sold, accepted);
}

/* ---- determinism, batching ----------------------------------------------------------- */

static void play(ts_driver *d) {
    cr_assert_eq(created_on(d, "p1", 100, 10), TS_OK);
    cr_assert_eq(created_on(d, "p2", 50, 3), TS_OK);
    cr_assert_eq(purchase_on(d, "a", "u1", "p1", 4, 1), TS_OK);
    cr_assert_eq(adjusted_on(d, "p2", -5), TS_E_REJECT);
    cr_assert_eq(purchase_on(d, "b", "u2", "p2", 3, 2), TS_OK);
    cr_assert_eq(purchase_on(d, "c", "u1", "p1", 6, 3), TS_OK);
    cr_assert_eq(purchase_on(d, "a", "u1", "p1", 1, 4), TS_OK);
    cr_assert_eq(adjusted_on(d, "p1", 2), TS_OK);
    cr_assert_eq(created_on(d, "p1", 1, 1), TS_E_REJECT);
    cr_assert_eq(purchase_on(d, "d", "u2", "p1", 2, 5), TS_OK);
    cr_assert_eq(purchase_on(d, "e", "u2", "p3", 1, 6), TS_OK);
}

Test(inventory, output_event_ids_are_deterministic_and_batching_changes_nothing) {
    play(drv);
    int played = next_event_id;
    next_event_id = 0;
    ts_driver *batched = new_driver();
    ts_driver_batch_begin(batched);
    play(batched);
    cr_assert_eq(ts_driver_batch_commit(batched), TS_OK);
    cr_assert_eq(next_event_id, played);
    char *a = snapshot(drv, 1), *b = snapshot(batched, 1);
    cr_expect_str_eq(b, a);
    free(a);
    free(b);
    cr_expect_eq(ts_driver_emitted(batched, RESULTS), 6);
    cr_expect_eq(ts_driver_emitted(batched, ALERTS), 6, "p2 once, p1 twice: low + sold out");
    ts_driver_destroy(batched);
}

Test(inventory, malformed_events_are_rejected) {
    rejected(send_to(drv, "PurchaseRequested",
                     "\"purchase_id\": \"\", \"user_id\": \"u1\", \"product_id\": \"p1\", "
                     "\"quantity\": 1, \"requested_at\": 0"),
             "purchase_id and user_id must be non-empty");
    rejected(send_to(drv, "StockAdjusted",
                     "\"product_id\": \"\", \"delta\": 1, \"reason\": \"r\", \"adjusted_at\": 0"),
             "product_id must be non-empty");
    cr_expect_eq(ts_driver_emitted(drv, RESULTS), 0);
    cr_expect_eq(ts_driver_state_count(drv), 0);
}

/* samples.jsonl is what the demo and benchmarks feed in: every line encodes,
 * and only the two events it documents as wrong are rejected. */
Test(inventory, samples_play_with_only_the_documented_rejects) {
    FILE *f = fopen(TS_SOURCE_DIR "/processors/inventory/samples.jsonl", "r");
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
    cr_expect_str_eq(stock_of("prod-kimchi-1kg"), "1");
    cr_expect_str_eq(stock_of("prod-gochujang-500g"), "9");
    cr_expect_str_eq(stock_of("prod-sesame-oil"), "36");
    /* 6 accepted, 3 rejected, and pur-1002's repeat re-emits its acceptance. */
    cr_expect_eq(results_of_type(drv, "PurchaseAccepted"), 7);
    cr_expect_eq(results_of_type(drv, "PurchaseRejected"), 3);
    cr_expect_eq(ts_driver_emitted(drv, ALERTS), 3);
}
