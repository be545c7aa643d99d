/* inventory.c - the inventory processor: stock, purchases, rankings.
 *
 * Input: inventory.events (ProductCreated, StockAdjusted, PurchaseRequested),
 * keyed by product_id, so a product's stock has exactly one writer, the task of
 * its partition, and purchases are decided without locks: one event at a time,
 * in offset order, against the stock the previous event left.
 *
 * State (JSON, two stores):
 *   "product"  product_id -> {id, name, description, price, initialStock,
 *              adjustments, sold, stock, threshold, lowArmed, soldOutArmed,
 *              createdAt, updatedAt}, times as epoch milliseconds. `adjustments`
 *              and `sold` are kept beside `stock` so the invariant
 *              stock = initialStock + adjustments - sold is checked after every
 *              change. `lowArmed`/`soldOutArmed` say whether the next crossing
 *              below the threshold / down to 0 emits an alert ("once per
 *              crossing"); going back to or above the line re-arms it.
 *   "purchase" purchase_id -> the decision {eventId, status, reason, userId,
 *              productId, quantity, totalPrice, remainingStock, at}: a
 *              purchase_id is decided once, and a repeated request (even with
 *              another event_id) changes nothing and gets the first result
 *              again, re-emitted byte for byte with its first event_id.
 *
 * A purchase's own failures (unknown product, quantity <= 0, not enough stock)
 * are answers, not broken rules: they emit PurchaseRejected and write a
 * `purchases` row with status rejected. Only malformed events, a second
 * ProductCreated and a StockAdjusted that would make the stock negative are
 * rejected to the DLQ.
 *
 * Effects are rewritten whole from the new state (views, rows, ranking score),
 * so replaying an event yields the same views and rows.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_log.h"
#include "ts_processor.h"

#define INV_STORE_PRODUCT "product"
#define INV_STORE_PURCHASE "purchase"
#define INV_TOPIC_RESULTS "purchase.results"
#define INV_TOPIC_ALERTS "inventory.alerts"
#define INV_RANKING "ranking:products:sold"

/* The processor takes no parameters (the default threshold is the contract's
 * 10%); an instance exists so every processor has the same shape. */
typedef struct inventory {
    int reserved;
} inventory;

static void *inv_create(const json_t *params, char *err, size_t errlen) {
    (void)params;
    inventory *inv = calloc(1, sizeof(*inv));
    if (!inv)
        snprintf(err, errlen, "inventory: out of memory");
    return inv;
}

static void inv_destroy(void *self) { free(self); }

/* ---- small helpers ------------------------------------------------------------ */

static int64_t inv_int(const json_t *obj, const char *field) {
    return (int64_t)json_integer_value(json_object_get(obj, field));
}

static const char *inv_str(const json_t *obj, const char *field) {
    return json_string_value(json_object_get(obj, field)); /* NULL for null */
}

static void inv_set_int(json_t *obj, const char *field, int64_t v) {
    json_object_set_new(obj, field, json_integer((json_int_t)v));
}

static char *inv_key(const char *prefix, const char *id) {
    size_t len = strlen(prefix) + strlen(id) + 1;
    char *key = malloc(len);
    if (key)
        snprintf(key, len, "%s%s", prefix, id);
    return key;
}

/* The default low-stock threshold: 10% of the initial stock, rounded up. Stock
 * is whole units, so "stock < initial / 10" holds exactly when
 * "stock < ceil(initial / 10)": rounding up keeps the contract's meaning. */
static int64_t inv_default_threshold(int64_t initial_stock) { return (initial_stock + 9) / 10; }

/* ---- output events -------------------------------------------------------------- */

static int inv_field(avro_value_t *rec, const char *name, avro_value_t *field) {
    return avro_value_get_by_name(rec, name, field, NULL);
}

static int inv_put_str(avro_value_t *rec, const char *name, const char *v) {
    avro_value_t f;
    return inv_field(rec, name, &f) || avro_value_set_string(&f, v);
}

static int inv_put_int(avro_value_t *rec, const char *name, int64_t v) {
    avro_value_t f;
    return inv_field(rec, name, &f) || avro_value_set_int(&f, (int32_t)v);
}

static int inv_put_long(avro_value_t *rec, const char *name, int64_t v) {
    avro_value_t f;
    return inv_field(rec, name, &f) || avro_value_set_long(&f, v);
}

static int inv_put_enum(avro_value_t *rec, const char *name, const char *symbol) {
    avro_value_t f;
    if (inv_field(rec, name, &f))
        return -1;
    int index = avro_schema_enum_get_by_name(avro_value_get_schema(&f), symbol);
    return index < 0 || avro_value_set_enum(&f, index);
}

/* Emits the purchase result `dec` (a "purchase" state document). Used for the
 * first decision and, unchanged, for every repeated request. */
static ts_err inv_emit_result(ts_ctx *ctx, const json_t *dec) {
    int accepted = strcmp(inv_str(dec, "status"), "accepted") == 0;
    avro_value_t *rec = ts_ctx_event_new(ctx, INV_TOPIC_RESULTS,
                                         accepted ? "PurchaseAccepted" : "PurchaseRejected");
    if (!rec)
        return TS_E_INVALID;
    int bad = inv_put_str(rec, "event_id", inv_str(dec, "eventId")) ||
              inv_put_str(rec, "purchase_id", inv_str(dec, "purchaseId")) ||
              inv_put_str(rec, "user_id", inv_str(dec, "userId")) ||
              inv_put_str(rec, "product_id", inv_str(dec, "productId")) ||
              inv_put_int(rec, "quantity", inv_int(dec, "quantity"));
    if (accepted)
        bad = bad || inv_put_long(rec, "total_price", inv_int(dec, "totalPrice")) ||
              inv_put_int(rec, "remaining_stock", inv_int(dec, "remainingStock")) ||
              inv_put_long(rec, "purchased_at", inv_int(dec, "at"));
    else
        bad = bad || inv_put_enum(rec, "reason", inv_str(dec, "reason")) ||
              inv_put_long(rec, "rejected_at", inv_int(dec, "at"));
    if (bad) {
        ts_log_error("inventory", "cannot fill the result of purchase %s",
                     inv_str(dec, "purchaseId"));
        return TS_E_INVALID;
    }
    return ts_ctx_emit(ctx, INV_TOPIC_RESULTS, inv_str(dec, "userId"), rec);
}

/* Emits the alerts the stock change of `product` (already updated) crosses into,
 * and arms or disarms them: StockLow on the way below the threshold, SoldOut on
 * the way to 0, each once until the stock climbs back. */
static ts_err inv_alerts(ts_ctx *ctx, json_t *product, const char *input_event_id, int64_t at) {
    int64_t stock = inv_int(product, "stock"), threshold = inv_int(product, "threshold");
    const char *product_id = inv_str(product, "id");
    char event_id[512];
    ts_err err = TS_OK;

    if (stock < threshold && json_is_true(json_object_get(product, "lowArmed"))) {
        avro_value_t *rec = ts_ctx_event_new(ctx, INV_TOPIC_ALERTS, "StockLow");
        if (!rec)
            return TS_E_INVALID;
        snprintf(event_id, sizeof(event_id), "%s:stock-low", input_event_id);
        if (inv_put_str(rec, "event_id", event_id) || inv_put_str(rec, "product_id", product_id) ||
            inv_put_int(rec, "stock", stock) || inv_put_int(rec, "threshold", threshold) ||
            inv_put_long(rec, "at", at))
            return TS_E_INVALID;
        if ((err = ts_ctx_emit(ctx, INV_TOPIC_ALERTS, product_id, rec)) != TS_OK)
            return err;
        json_object_set_new(product, "lowArmed", json_false());
    } else if (stock >= threshold) {
        json_object_set_new(product, "lowArmed", json_true());
    }

    if (stock == 0 && json_is_true(json_object_get(product, "soldOutArmed"))) {
        avro_value_t *rec = ts_ctx_event_new(ctx, INV_TOPIC_ALERTS, "SoldOut");
        if (!rec)
            return TS_E_INVALID;
        snprintf(event_id, sizeof(event_id), "%s:sold-out", input_event_id);
        if (inv_put_str(rec, "event_id", event_id) || inv_put_str(rec, "product_id", product_id) ||
            inv_put_long(rec, "at", at))
            return TS_E_INVALID;
        if ((err = ts_ctx_emit(ctx, INV_TOPIC_ALERTS, product_id, rec)) != TS_OK)
            return err;
        json_object_set_new(product, "soldOutArmed", json_false());
    } else if (stock > 0) {
        json_object_set_new(product, "soldOutArmed", json_true());
    }
    return TS_OK;
}

/* ---- effects from state --------------------------------------------------------- */

/* Writes stock:{id} and product:{id} from the stored product (a render: once
 * per batch, however many events of the batch changed the product). */
static ts_err inv_product_render(ts_ctx *ctx, const char *id) {
    json_t *product = ts_ctx_get_json(ctx, INV_STORE_PRODUCT, id);
    if (!product) /* products are never deleted; a state failure stops the task */
        return TS_OK;
    char num[24], iso_c[40], iso_u[40];
    int64_t stock = inv_int(product, "stock");
    snprintf(num, sizeof(num), "%lld", (long long)stock);
    char *key = inv_key("stock:", id);
    ts_err err = key ? ts_ctx_view_set_str(ctx, key, num) : TS_E_NOMEM;
    free(key);

    ts_time_iso(inv_int(product, "createdAt"), iso_c, sizeof(iso_c));
    ts_time_iso(inv_int(product, "updatedAt"), iso_u, sizeof(iso_u));
    json_t *view = json_pack("{s:s, s:O, s:O, s:I, s:I, s:s, s:s}", "id", id, "name",
                             json_object_get(product, "name"), "description",
                             json_object_get(product, "description"), "price",
                             (json_int_t)inv_int(product, "price"), "currentStock",
                             (json_int_t)stock, "createdAt", iso_c, "updatedAt", iso_u);
    key = inv_key("product:", id);
    if (err == TS_OK)
        err = view && key ? ts_ctx_view_set_json(ctx, key, view) : TS_E_NOMEM;
    free(key);
    json_decref(view);
    json_decref(product);
    return err;
}

/* Stores `product` and rewrites its views and its row. Checks the invariants
 * first: they can only break through a bug here, and a bug must stop the task
 * rather than publish a wrong stock. */
static ts_err inv_product_save(ts_ctx *ctx, const json_t *product) {
    const char *id = inv_str(product, "id");
    int64_t stock = inv_int(product, "stock");
    if (stock < 0 || stock != inv_int(product, "initialStock") + inv_int(product, "adjustments") -
                                  inv_int(product, "sold")) {
        ts_log_error("inventory", "product %s: stock invariant broken (stock %lld)", id,
                     (long long)stock);
        return TS_E_STATE;
    }
    ts_err err = ts_ctx_put_json(ctx, INV_STORE_PRODUCT, id, product);
    if (err == TS_OK)
        err = ts_ctx_view_render(ctx, inv_product_render, id);
    if (err != TS_OK)
        return err;

    ts_row *row = ts_ctx_row_upsert(ctx, "products");
    ts_row_key(row, "product_id", id);
    ts_row_text(row, "name", inv_str(product, "name"));
    ts_row_text(row, "description", inv_str(product, "description"));
    ts_row_long(row, "price", inv_int(product, "price"));
    ts_row_long(row, "stock", stock);
    ts_row_time(row, "created_at", inv_int(product, "createdAt"));
    ts_row_time(row, "updated_at", inv_int(product, "updatedAt"));
    return ts_row_done(row);
}

/* Stores the decision `dec`, writes its `purchases` row and emits its result. */
static ts_err inv_decision_save(ts_ctx *ctx, const json_t *dec) {
    const char *purchase_id = inv_str(dec, "purchaseId");
    int accepted = strcmp(inv_str(dec, "status"), "accepted") == 0;
    ts_err err = ts_ctx_put_json(ctx, INV_STORE_PURCHASE, purchase_id, dec);
    if (err != TS_OK)
        return err;
    ts_row *row = ts_ctx_row_upsert(ctx, "purchases");
    ts_row_key(row, "purchase_id", purchase_id);
    ts_row_text(row, "user_id", inv_str(dec, "userId"));
    ts_row_text(row, "product_id", inv_str(dec, "productId"));
    ts_row_long(row, "quantity", inv_int(dec, "quantity"));
    if (accepted)
        ts_row_long(row, "total_price", inv_int(dec, "totalPrice"));
    else
        ts_row_text(row, "total_price", NULL);
    ts_row_text(row, "status", inv_str(dec, "status"));
    ts_row_text(row, "reason", inv_str(dec, "reason"));
    ts_row_time(row, "decided_at", inv_int(dec, "at"));
    if ((err = ts_row_done(row)) != TS_OK)
        return err;
    return inv_emit_result(ctx, dec);
}

/* The user's purchases set and the sales ranking, after an accepted purchase. */
static ts_err inv_purchase_views(ts_ctx *ctx, const json_t *dec, const json_t *product) {
    char iso[40];
    int64_t at = inv_int(dec, "at");
    ts_time_iso(at, iso, sizeof(iso));
    /* The member is the whole JSON document, built in a fixed key order, so
     * replaying the purchase adds the same member instead of a second one. */
    json_t *member = json_pack("{s:O, s:O, s:O, s:O, s:s}", "purchaseId",
                               json_object_get(dec, "purchaseId"), "productId",
                               json_object_get(dec, "productId"), "quantity",
                               json_object_get(dec, "quantity"), "totalPrice",
                               json_object_get(dec, "totalPrice"), "purchasedAt", iso);
    char *text = member ? json_dumps(member, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    char *key = inv_key("purchases:", inv_str(dec, "userId"));
    ts_err err = text && key ? ts_ctx_zset_add(ctx, key, text, (double)at) : TS_E_NOMEM;
    free(key);
    free(text);
    json_decref(member);
    if (err != TS_OK)
        return err;
    /* One member per product, written only by the product's task: the ranking
     * set has many writers, but each member has one, with an absolute score. */
    return ts_ctx_zset_add(ctx, INV_RANKING, inv_str(product, "id"),
                           (double)inv_int(product, "sold"));
}

/* ---- the events --------------------------------------------------------------- */

static ts_err inv_product_created(ts_ctx *ctx, const ts_event *ev, const char *product_id,
                                  int64_t at, json_t *existing) {
    if (existing)
        return ts_ctx_reject(ctx, "ProductCreated: product %s already exists", product_id);
    const char *name = ts_event_str(ev, "name");
    const char *description = ts_event_str(ev, "description");
    int64_t price, initial, threshold;
    if (!name)
        return ts_ctx_reject(ctx, "ProductCreated for product %s: no name", product_id);
    if (ts_event_long(ev, "price", &price) != 0 || price < 0)
        return ts_ctx_reject(ctx, "ProductCreated for product %s: price must be 0 or more",
                             product_id);
    if (ts_event_long(ev, "initial_stock", &initial) != 0 || initial < 0)
        return ts_ctx_reject(ctx, "ProductCreated for product %s: initial_stock must be 0 or more",
                             product_id);
    if (ts_event_long(ev, "low_stock_threshold", &threshold) != 0)
        threshold = inv_default_threshold(initial);
    else if (threshold < 0)
        return ts_ctx_reject(ctx,
                             "ProductCreated for product %s: low_stock_threshold %lld is negative",
                             product_id, (long long)threshold);

    /* Creation is not a crossing: a product created already low (or empty)
     * alerts only after it has been back above the line. */
    json_t *product = json_pack(
        "{s:s, s:s, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:b, s:I, s:I}", "id", product_id,
        "name", name, "description", description ? json_string(description) : json_null(),
        "price", (json_int_t)price, "initialStock", (json_int_t)initial, "adjustments",
        (json_int_t)0, "sold", (json_int_t)0, "stock", (json_int_t)initial, "threshold",
        (json_int_t)threshold, "lowArmed", initial >= threshold, "soldOutArmed", initial > 0,
        "createdAt", (json_int_t)at, "updatedAt", (json_int_t)at);
    if (!product)
        return TS_E_NOMEM;
    ts_err err = inv_product_save(ctx, product);
    json_decref(product);
    return err;
}

static ts_err inv_stock_adjusted(ts_ctx *ctx, const ts_event *ev, const char *product_id,
                                 int64_t at, json_t *product) {
    int64_t delta;
    if (!product)
        return ts_ctx_reject(ctx, "StockAdjusted: product %s does not exist", product_id);
    if (ts_event_long(ev, "delta", &delta) != 0)
        return ts_ctx_reject(ctx, "StockAdjusted for product %s: no delta", product_id);
    int64_t stock = inv_int(product, "stock") + delta;
    if (stock < 0)
        return ts_ctx_reject(ctx,
                             "StockAdjusted for product %s: delta %lld would make stock %lld "
                             "(stock is never negative)",
                             product_id, (long long)delta, (long long)stock);
    if (stock > INT32_MAX)
        return ts_ctx_reject(ctx, "StockAdjusted for product %s: stock %lld is too large",
                             product_id, (long long)stock);
    inv_set_int(product, "stock", stock);
    inv_set_int(product, "adjustments", inv_int(product, "adjustments") + delta);
    inv_set_int(product, "updatedAt", at);
    const char *event_id = ts_event_str(ev, "event_id");
    ts_err err = inv_alerts(ctx, product, event_id, at);
    return err == TS_OK ? inv_product_save(ctx, product) : err;
}

static ts_err inv_purchase_requested(ts_ctx *ctx, const ts_event *ev, const char *product_id,
                                     int64_t at, json_t *product) {
    const char *event_id = ts_event_str(ev, "event_id");
    const char *purchase_id = ts_event_id(ev, "purchase_id");
    const char *user_id = ts_event_id(ev, "user_id");
    int64_t quantity;
    if (!purchase_id || !user_id)
        return ts_ctx_reject(ctx, "PurchaseRequested for product %s: purchase_id and user_id "
                                  "must be non-empty, at most %d bytes",
                             product_id, TS_EVENT_MAX_ID_BYTES);
    if (ts_event_long(ev, "quantity", &quantity) != 0)
        return ts_ctx_reject(ctx, "PurchaseRequested %s: no quantity", purchase_id);

    /* Decided once: a repeat changes nothing and hears the first answer. */
    json_t *first = ts_ctx_get_json(ctx, INV_STORE_PURCHASE, purchase_id);
    if (first) {
        ts_err err = inv_emit_result(ctx, first);
        json_decref(first);
        return err;
    }

    const char *reason = NULL;
    int64_t total = 0;
    if (!product)
        reason = "UNKNOWN_PRODUCT";
    else if (quantity <= 0)
        reason = "INVALID_QUANTITY";
    else if (inv_int(product, "stock") < quantity)
        reason = "INSUFFICIENT_STOCK";
    else if (__builtin_mul_overflow(inv_int(product, "price"), quantity, &total))
        return ts_ctx_reject(ctx, "PurchaseRequested %s: total price of %lld units overflows",
                             purchase_id, (long long)quantity);

    char out_id[512];
    snprintf(out_id, sizeof(out_id), "%s:%s", event_id, reason ? "rejected" : "accepted");
    int64_t remaining = product ? inv_int(product, "stock") - (reason ? 0 : quantity) : 0;
    json_t *dec = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s?, s:I, s:I, s:I, s:I}", "eventId",
                            out_id, "purchaseId", purchase_id, "status",
                            reason ? "rejected" : "accepted", "userId", user_id, "productId",
                            product_id, "reason", reason, "quantity", (json_int_t)quantity,
                            "totalPrice", (json_int_t)total, "remainingStock",
                            (json_int_t)remaining, "at", (json_int_t)at);
    if (!dec)
        return TS_E_NOMEM;

    ts_err err = TS_OK;
    if (!reason) {
        inv_set_int(product, "stock", remaining);
        inv_set_int(product, "sold", inv_int(product, "sold") + quantity);
        inv_set_int(product, "updatedAt", at);
        err = inv_alerts(ctx, product, event_id, at);
        if (err == TS_OK)
            err = inv_product_save(ctx, product);
        if (err == TS_OK)
            err = inv_purchase_views(ctx, dec, product);
    }
    if (err == TS_OK)
        err = inv_decision_save(ctx, dec);
    json_decref(dec);
    return err;
}

/* The name of each event type's time field. */
static const char *inv_time_field(const char *type) {
    if (strcmp(type, "ProductCreated") == 0)
        return "created_at";
    if (strcmp(type, "StockAdjusted") == 0)
        return "adjusted_at";
    if (strcmp(type, "PurchaseRequested") == 0)
        return "requested_at";
    return NULL;
}

static ts_err inv_process(void *self, ts_ctx *ctx, const ts_event *ev) {
    (void)self;
    const char *time_field = inv_time_field(ev->type);
    const char *product_id = ts_event_id(ev, "product_id");
    const char *event_id = ts_event_str(ev, "event_id");
    int64_t at;

    /* The schema makes these fields required; checking them anyway keeps a
     * malformed producer from reaching the state. */
    if (!time_field)
        return ts_ctx_reject(ctx, "unknown event type %s", ev->type);
    if (!event_id || !*event_id || !product_id)
        return ts_ctx_reject(ctx, "%s: event_id and product_id must be non-empty (product_id at "
                                  "most %d bytes)",
                             ev->type, TS_EVENT_MAX_ID_BYTES);
    if (strlen(event_id) > TS_EVENT_MAX_SOURCE_ID_BYTES)
        return ts_ctx_reject(ctx, "%s for product %s: event_id must be at most %d bytes (its "
                                  "outputs' ids are derived from it)",
                             ev->type, product_id, TS_EVENT_MAX_SOURCE_ID_BYTES);
    if (ts_event_long(ev, time_field, &at) != 0 || at < 0)
        return ts_ctx_reject(ctx, "%s for product %s: no valid %s", ev->type, product_id,
                             time_field);

    json_t *product = ts_ctx_get_json(ctx, INV_STORE_PRODUCT, product_id);
    ts_err err;
    if (strcmp(ev->type, "ProductCreated") == 0)
        err = inv_product_created(ctx, ev, product_id, at, product);
    else if (strcmp(ev->type, "StockAdjusted") == 0)
        err = inv_stock_adjusted(ctx, ev, product_id, at, product);
    else
        err = inv_purchase_requested(ctx, ev, product_id, at, product);
    json_decref(product);
    return err;
}

const ts_processor_def ts_processor_inventory = {
    .name = "inventory",
    .create = inv_create,
    .process = inv_process,
    .destroy = inv_destroy,
};
