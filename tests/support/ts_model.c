/* ts_model.c - an independent model of the contract (see ts_model.h).
 *
 * The generator keeps a rough belief of each family's world (which books,
 * users and products exist) only to make most events valid; the model decides.
 * The model keeps its state in jansson objects (a few hundred thousand small
 * values at most) and writes the expected views and rows as whole values, the
 * way the contract describes them: a view is what a reader gets with one
 * command. It follows CONTRACT.md and, where the contract leaves a choice
 * open, the processors' README.md files (never their code).
 *
 * Every expected JSON view records which event last changed it ("vmin") and
 * under which partition key its writer runs ("vtopic", "vkey"); the comparison
 * turns that into offsets with the input topics read back from Kafka.
 */
#include "ts_model.h"

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ts_avro.h"
#include "ts_processor.h"
#include "ts_redis_url.h"

#define T_SB "storybook.events"
#define T_USER "user.events"
#define T_PREF "user.preference.updated"
#define T_INV "inventory.events"
#define T_RESULTS "purchase.results"
#define T_ALERTS "inventory.alerts"
#define T_BEACON "beacon.detections"
#define T_CUST "customer-events"
#define T_VISITS "beacon.store-visits"

/* ==== PRNG: splitmix64, so a seed means the same stream on every platform ==== */

typedef struct ts_model_rng {
    uint64_t s;
} ts_model_rng;

static uint64_t rng_next(ts_model_rng *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int rng_below(ts_model_rng *r, int n) { return (int)(rng_next(r) % (uint64_t)n); }
static int rng_pct(ts_model_rng *r, int pct) { return rng_below(r, 100) < pct; }
static int rng_range(ts_model_rng *r, int lo, int hi) { return lo + rng_below(r, hi - lo + 1); }

/* ==== small JSON helpers ====================================================== */

static json_t *jiso(int64_t ms) {
    char buf[40];
    return json_string(ts_time_iso(ms, buf, sizeof(buf)));
}

static json_t *jstrf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *jstrf(const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return json_string(buf);
}

static const char *jstr(const json_t *o, const char *k) {
    return json_string_value(json_object_get(o, k));
}

/* A field that may be absent, null or a value: absent and null are both null. */
static json_t *jopt(const json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return v ? json_incref(v) : json_null();
}

static int64_t jtime(const json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    if (json_is_integer(v))
        return json_integer_value(v);
    int64_t ms = 0;
    if (json_is_string(v))
        ts_time_parse_iso(json_string_value(v), &ms);
    return ms;
}

/* Child object `k` of `o`, created when absent. */
static json_t *jchild(json_t *o, const char *k) {
    json_t *c = json_object_get(o, k);
    if (!c) {
        c = json_object();
        json_object_set_new(o, k, c);
    }
    return c;
}

/* ==== generator =============================================================== */

#define GEN_STEP_MS 2600 /* time per event: 100k events ~ 3 days */
#define GEN_JITTER 1299  /* |J| < STEP/2 keeps every time unique, see gen_time */
#define GEN_BASE_MS INT64_C(1768003200000) /* 2026-01-10T00:00:00Z */

typedef struct gen_book {
    char id[48];
    int user;
    int live;
    unsigned pages; /* bit p: page p believed present */
} gen_book;

typedef struct gen {
    ts_model_rng rng;
    ts_model_stream *s;
    size_t cap;
    size_t pos;
    unsigned families;
    /* storybook */
    int sb_users;
    gen_book *books;
    size_t n_books, cap_books;
    /* user */
    int us_users;
    int *us_state;    /* 0 never, 1 registered, 2 deleted */
    json_t **us_last; /* last PreferencesSet body per user, for no-op sets */
    /* inventory */
    int inv_products, inv_created, inv_purchases;
    /* beacon */
    int bc_devices;
    int *bc_bound;     /* believed customer index + 1, 0 unbound */
    int *bc_store;     /* current store */
    int64_t *bc_last;  /* last detection time */
    int bc_active[6];
} gen;

/* Time of position i: BASE + STEP*i + 10*J + (i % 10). Two positions with the
 * same time would need i = i' (mod 10), so |i - i'| >= 10 and |J - J'| >= STEP:
 * impossible with |J| < STEP/2. Unique times keep "latest by event time" free
 * of ties. */
static int64_t gen_time(gen *g, int jitter) {
    int j = jitter ? rng_range(&g->rng, -GEN_JITTER / 10, GEN_JITTER / 10) * 10 : 0;
    return GEN_BASE_MS + (int64_t)GEN_STEP_MS * (int64_t)g->pos + (int64_t)j +
           (int64_t)(g->pos % 10);
}

static void gen_push(gen *g, const char *topic, const char *key, const char *type, json_t *body) {
    if (g->s->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 1024;
        g->s->ev = realloc(g->s->ev, g->cap * sizeof(*g->s->ev));
    }
    ts_model_event *ev = &g->s->ev[g->s->n++];
    ev->topic = topic;
    ev->key = strdup(key);
    ev->event_id = strdup(jstr(body, "event_id"));
    ev->json = json_object();
    json_object_set_new(ev->json, type, body);
}

static json_t *gen_body(gen *g, const char *prefix) {
    json_t *b = json_object();
    json_object_set_new(b, "event_id", jstrf("%s-%06zu", prefix, g->pos));
    return b;
}

/* ---- storybook ---- */

static gen_book *gen_sb_live(gen *g, int user) {
    gen_book *cand[64];
    int n = 0;
    for (size_t i = 0; i < g->n_books && n < 64; i++)
        if (g->books[i].user == user && g->books[i].live)
            cand[n++] = &g->books[i];
    return n ? cand[rng_below(&g->rng, n)] : NULL;
}

static void gen_storybook(gen *g) {
    ts_model_rng *r = &g->rng;
    int user = rng_below(r, g->sb_users);
    char uid[32];
    snprintf(uid, sizeof(uid), "sb-user-%03d", user);
    int64_t t = gen_time(g, 1);
    json_t *b = gen_body(g, "sb");
    json_object_set_new(b, "user_id", json_string(uid));
    gen_book *bk = gen_sb_live(g, user);
    int roll = rng_below(r, 100);
    if (!bk || roll < 12) {
        gen_book *re = NULL;
        if (rng_pct(r, 20))
            for (size_t i = 0; i < g->n_books && !re; i++)
                if (g->books[i].user == user && !g->books[i].live)
                    re = &g->books[i];
        if (!re) {
            if (g->n_books == g->cap_books) {
                g->cap_books = g->cap_books ? g->cap_books * 2 : 256;
                g->books = realloc(g->books, g->cap_books * sizeof(*g->books));
            }
            re = &g->books[g->n_books++];
            snprintf(re->id, sizeof(re->id), "book-%03d-%zu", user, g->pos);
            re->user = user;
        }
        re->live = 1;
        re->pages = 0;
        json_object_set_new(b, "book_id", json_string(re->id));
        json_object_set_new(b, "title", jstrf("Story %zu of %s", g->pos, uid));
        if (rng_pct(r, 60))
            json_object_set_new(b, "cover_image_url",
                                jstrf("https://cdn.example.com/covers/%s.png", re->id));
        json_object_set_new(b, "created_at", jiso(t));
        gen_push(g, T_SB, uid, "BookCreated", b);
        return;
    }
    const char *type;
    int page = rng_range(r, 1, 8);
    if (roll < 90) {
        json_object_set_new(b, "book_id", json_string(bk->id));
    } else if (roll < 95) {
        /* Another user's book: rejected, as unknown in another partition or
         * as not the owner in the same one. Never a BookCreated. */
        int other = (user + 1 + rng_below(r, g->sb_users - 1)) % g->sb_users;
        gen_book *ob = gen_sb_live(g, other);
        json_object_set_new(b, "book_id", json_string(ob ? ob->id : "book-none"));
        bk = NULL;
    } else {
        json_object_set_new(b, "book_id", jstrf("book-unknown-%zu", g->pos));
        bk = NULL;
    }
    int kind = rng_below(r, 100);
    if (kind < 50) {
        type = "PageUpserted";
        if (rng_pct(r, 2))
            page = 0;
        json_object_set_new(b, "page_no", json_integer(page));
        json_object_set_new(b, "text", jstrf("Page %d, written at %zu.", page, g->pos));
        if (rng_pct(r, 50))
            json_object_set_new(b, "image_url",
                                jstrf("https://cdn.example.com/pages/%zu.png", g->pos));
        if (rng_pct(r, 30))
            json_object_set_new(b, "audio_url",
                                jstrf("https://cdn.example.com/audio/%zu.mp3", g->pos));
        json_object_set_new(b, "updated_at", jiso(t));
        if (bk && page >= 1)
            bk->pages |= 1u << page;
    } else if (kind < 65) {
        type = "PageDeleted";
        if (bk && bk->pages && rng_pct(r, 85)) {
            do
                page = rng_range(r, 1, 8);
            while (!(bk->pages & (1u << page)));
        }
        json_object_set_new(b, "page_no", json_integer(page));
        json_object_set_new(b, "deleted_at", jiso(t));
        if (bk)
            bk->pages &= ~(1u << page);
    } else if (kind < 92) {
        type = "BookUpdated";
        if (rng_pct(r, 70))
            json_object_set_new(b, "title", jstrf("Retitled %zu", g->pos));
        if (rng_pct(r, 50))
            json_object_set_new(b, "cover_image_url",
                                jstrf("https://cdn.example.com/covers/v%zu.png", g->pos));
        json_object_set_new(b, "updated_at", jiso(t));
    } else {
        type = "BookDeleted";
        json_object_set_new(b, "deleted_at", jiso(t));
        if (bk)
            bk->live = 0;
    }
    gen_push(g, T_SB, uid, type, b);
}

/* ---- user ---- */

static const char *const gen_diets[] = {"vegetarian", "vegan", "pescatarian", "halal",
                                        "kosher", "gluten_free", "dairy_free"};
static const char *const gen_allergies[] = {"peanut", "tree_nut", "milk", "egg",
                                            "wheat", "soy", "shellfish", "sesame"};
static const char *const gen_cuisines[] = {"korean", "japanese", "chinese", "italian",
                                           "french", "mexican", "thai", "indian"};
static const char *const gen_tastes[] = {"spiciness", "sweetness", "saltiness", "sourness",
                                         "bitterness"};

static json_t *gen_list(gen *g, const char *const *opts, int n) {
    json_t *a = json_array();
    int k = rng_below(&g->rng, 4);
    for (int i = 0; i < k; i++) /* duplicates allowed: the lists are sets */
        json_array_append_new(a, json_string(opts[rng_below(&g->rng, n)]));
    return a;
}

static void gen_user(gen *g) {
    ts_model_rng *r = &g->rng;
    int u = rng_below(r, g->us_users);
    char uid[32];
    snprintf(uid, sizeof(uid), "us-%04d", u);
    int64_t t = gen_time(g, 1);
    json_t *b = gen_body(g, "us");
    json_object_set_new(b, "user_id", json_string(uid));
    int st = g->us_state[u];
    int roll = rng_below(r, 100);
    if ((st == 0 && roll < 92) || (st == 2 && roll < 60) || (st == 1 && roll < 2)) {
        if (rng_pct(r, 2))
            json_object_set_new(b, "email", json_string("@example.com"));
        else
            json_object_set_new(b, "email", jstrf("user%d.%zu@example.com", u, g->pos % 7));
        json_object_set_new(b, "registered_at", jiso(t));
        if (st != 1)
            g->us_state[u] = 1;
        gen_push(g, T_USER, uid, "UserRegistered", b);
        return;
    }
    if (st == 1 && roll < 6) {
        json_object_set_new(b, "deleted_at", jiso(t));
        g->us_state[u] = 2;
        gen_push(g, T_USER, uid, "UserDeleted", b);
        return;
    }
    if (st == 1 && roll < 60) {
        if (g->us_last[u] && rng_pct(r, 15)) {
            /* The same set again: changes nothing, emits nothing. */
            json_t *same = json_deep_copy(g->us_last[u]);
            json_object_set_new(same, "event_id", json_incref(json_object_get(b, "event_id")));
            json_object_set_new(same, "updated_at", jiso(t));
            json_decref(b);
            gen_push(g, T_USER, uid, "PreferencesSet", same);
            return;
        }
        json_object_set_new(b, "dietary_restrictions", gen_list(g, gen_diets, 7));
        json_object_set_new(b, "allergies", gen_list(g, gen_allergies, 8));
        json_object_set_new(b, "favorite_cuisines", gen_list(g, gen_cuisines, 8));
        json_t *taste = json_object();
        for (int i = 0; i < 5; i++)
            if (rng_pct(r, 50))
                json_object_set_new(taste, gen_tastes[i], json_integer(rng_range(r, 1, 5)));
        json_object_set_new(b, "taste", taste);
        int bad = rng_below(r, 100);
        if (bad < 3)
            json_array_append_new(json_object_get(b, "favorite_cuisines"), json_string("durian"));
        else if (bad < 5)
            json_object_set_new(taste, "spiciness", json_integer(9));
        else if (bad < 6)
            json_object_set_new(taste, "umami", json_integer(3));
        else if (bad < 7)
            json_array_append_new(json_object_get(b, "allergies"), json_string("Peanut"));
        json_object_set_new(b, "updated_at", jiso(t));
        json_decref(g->us_last[u]);
        g->us_last[u] = json_deep_copy(b);
        gen_push(g, T_USER, uid, "PreferencesSet", b);
        return;
    }
    /* A profile update; for a user never registered or deleted, rejected. */
    int f = rng_below(r, 100);
    if (f < 70)
        json_object_set_new(b, "display_name",
                            rng_pct(r, 8) ? json_string("") : jstrf("Name %zu", g->pos));
    if (f >= 40)
        json_object_set_new(b, "profile_image_url",
                            rng_pct(r, 8) ? json_string("")
                                          : jstrf("https://cdn.example.com/a/%zu.png", g->pos));
    json_object_set_new(b, "updated_at", jiso(t));
    gen_push(g, T_USER, uid, "ProfileUpdated", b);
}

/* ---- inventory ---- */

#define GEN_HOT 5

static void gen_product_id(int i, char *out, size_t cap) {
    if (i < GEN_HOT)
        snprintf(out, cap, "prod-hot-%d", i);
    else
        snprintf(out, cap, "prod-%04d", i);
}

static void gen_inventory(gen *g) {
    ts_model_rng *r = &g->rng;
    int64_t t = gen_time(g, 1);
    json_t *b = gen_body(g, "inv");
    char pid[32];
    int roll = rng_below(r, 100);
    if (g->inv_created == 0 || (roll < 7 && g->inv_created < g->inv_products)) {
        int i = g->inv_created++;
        gen_product_id(i, pid, sizeof(pid));
        json_object_set_new(b, "product_id", json_string(pid));
        json_object_set_new(b, "name", jstrf("Product %d", i));
        if (rng_pct(r, 50))
            json_object_set_new(b, "description", jstrf("Made in batch %zu.", g->pos));
        json_object_set_new(b, "price", json_integer(rng_range(r, 10, 500) * 100));
        int stock = i < GEN_HOT ? rng_range(r, 60, 200) : rng_range(r, 3, 40);
        json_object_set_new(b, "initial_stock", json_integer(stock));
        if (rng_pct(r, 50))
            json_object_set_new(b, "low_stock_threshold", json_integer(rng_range(r, 0, stock / 3)));
        json_object_set_new(b, "created_at", jiso(t));
        gen_push(g, T_INV, pid, "ProductCreated", b);
        return;
    }
    int p = rng_pct(r, 55) ? rng_below(r, g->inv_created < GEN_HOT ? g->inv_created : GEN_HOT)
                           : rng_below(r, g->inv_created);
    gen_product_id(p, pid, sizeof(pid));
    if (roll < 8) {
        /* Rejected: a second creation, or a negative price. */
        json_object_set_new(b, "product_id", json_string(pid));
        json_object_set_new(b, "name", json_string("Duplicate"));
        json_object_set_new(b, "price", json_integer(rng_pct(r, 50) ? -100 : 100));
        json_object_set_new(b, "initial_stock", json_integer(5));
        json_object_set_new(b, "created_at", jiso(t));
        gen_push(g, T_INV, pid, "ProductCreated", b);
        return;
    }
    if (roll < 20) {
        int delta = rng_pct(r, 85) ? rng_range(r, 1, p < GEN_HOT ? 80 : 20) : -rng_range(r, 1, 10);
        if (rng_pct(r, 3))
            snprintf(pid, sizeof(pid), "prod-none-%zu", g->pos);
        json_object_set_new(b, "product_id", json_string(pid));
        json_object_set_new(b, "delta", json_integer(delta));
        json_object_set_new(b, "reason", json_string(delta > 0 ? "restock" : "damaged"));
        json_object_set_new(b, "adjusted_at", jiso(t));
        gen_push(g, T_INV, pid, "StockAdjusted", b);
        return;
    }
    int q = rng_range(r, 1, 3);
    char pur[32], user[32];
    snprintf(pur, sizeof(pur), "pur-%06d", g->inv_purchases++);
    snprintf(user, sizeof(user), "us-%04d", rng_below(r, g->us_users));
    int bad = rng_below(r, 100);
    if (bad < 3)
        q = rng_pct(r, 50) ? 0 : -1;
    else if (bad < 6)
        snprintf(pid, sizeof(pid), "prod-none-%zu", g->pos);
    else if (bad < 9 && g->inv_purchases > 10) {
        /* A repeat of an earlier purchase of this stream: decided once. Find
         * one in the stream (same product, so the same partition). */
        for (size_t k = g->s->n; k-- > 0 && k + 400 > g->s->n;) {
            json_t *pr = json_object_get(g->s->ev[k].json, "PurchaseRequested");
            if (pr) {
                json_t *rep = json_deep_copy(pr);
                json_object_set_new(rep, "event_id",
                                    json_incref(json_object_get(b, "event_id")));
                json_object_set_new(rep, "requested_at", jiso(t));
                json_decref(b);
                gen_push(g, T_INV, jstr(rep, "product_id"), "PurchaseRequested", rep);
                return;
            }
        }
    }
    json_object_set_new(b, "purchase_id", json_string(pur));
    json_object_set_new(b, "user_id", json_string(user));
    json_object_set_new(b, "product_id", json_string(pid));
    json_object_set_new(b, "quantity", json_integer(q));
    json_object_set_new(b, "requested_at", jiso(t));
    gen_push(g, T_INV, pid, "PurchaseRequested", b);
}

/* ---- beacon ---- */

#define GEN_STORES 6

static void gen_beacon(gen *g) {
    ts_model_rng *r = &g->rng;
    /* Detection times of one device only grow (no jitter): "the previous 60 s"
     * is then the same under every reading. */
    int64_t t = gen_time(g, 0);
    int slot = rng_below(r, 6);
    if (g->bc_active[slot] < 0 || rng_pct(r, 4)) {
        int d = rng_below(r, g->bc_devices);
        g->bc_active[slot] = d;
        /* A new visit may be at another store, but only after a minute away. */
        if (g->bc_last[d] == 0 || t - g->bc_last[d] > 60000)
            g->bc_store[d] = rng_below(r, GEN_STORES);
    }
    int d = g->bc_active[slot];
    g->bc_last[d] = t;
    char dev[32], store[32], beacon[32], cust[32];
    snprintf(dev, sizeof(dev), "dev-%04d", d);
    snprintf(store, sizeof(store), "store-%d", g->bc_store[d]);
    snprintf(beacon, sizeof(beacon), "bcn-%d-%d", g->bc_store[d], rng_below(r, 4));
    /* A customer may own two devices (different partitions). */
    snprintf(cust, sizeof(cust), "cust-%04d", d % (g->bc_devices * 7 / 10 + 1));
    json_t *b = gen_body(g, "bc");
    json_object_set_new(b, "device_id", json_string(dev));
    json_object_set_new(b, "store_id", json_string(store));
    json_object_set_new(b, "beacon_id", json_string(rng_pct(r, 1) ? "" : beacon));
    int roll = rng_below(r, 100);
    if ((!g->bc_bound[d] && roll < 15) || roll < 4) {
        json_object_set_new(b, "source", json_string("QR"));
        json_object_set_new(b, "rssi", json_integer(0));
        json_object_set_new(b, "customer_id", json_string(cust));
        g->bc_bound[d] = 1;
    } else if (g->bc_bound[d] && roll < 9) {
        json_object_set_new(b, "source", json_string("APP"));
        json_object_set_new(b, "rssi", json_integer(rng_range(r, -90, -45)));
        json_object_set_new(b, "customer_id", json_string(cust));
    } else {
        static const int edges[] = {-60, -61, -75, -76};
        int rssi = rng_pct(r, 15) ? edges[rng_below(r, 4)] : rng_range(r, -95, -45);
        json_object_set_new(b, "source", json_string("BEACON"));
        json_object_set_new(b, "rssi", json_integer(rssi));
    }
    json_object_set_new(b, "detected_at", jiso(t));
    gen_push(g, T_BEACON, dev, "BeaconDetected", b);
}

ts_model_stream *ts_model_stream_generate(uint64_t seed, size_t n, unsigned families) {
    gen g;
    memset(&g, 0, sizeof(g));
    g.rng.s = seed;
    g.s = calloc(1, sizeof(*g.s));
    g.families = families ? families : TS_MODEL_ALL;
    g.sb_users = (int)(n / 250) + 8;
    g.us_users = (int)(n / 120) + 8;
    g.us_state = calloc((size_t)g.us_users, sizeof(int));
    g.us_last = calloc((size_t)g.us_users, sizeof(json_t *));
    g.inv_products = (int)(n / 150) + GEN_HOT + 2;
    g.bc_devices = (int)(n / 150) + 10;
    g.bc_bound = calloc((size_t)g.bc_devices, sizeof(int));
    g.bc_store = calloc((size_t)g.bc_devices, sizeof(int));
    g.bc_last = calloc((size_t)g.bc_devices, sizeof(int64_t));
    for (int i = 0; i < 6; i++)
        g.bc_active[i] = -1;
    unsigned fams[4] = {TS_MODEL_STORYBOOK, TS_MODEL_USER, TS_MODEL_INVENTORY, TS_MODEL_BEACON};
    for (g.pos = 0; g.s->n < n; g.pos++) {
        if (g.s->n > 50 && rng_pct(&g.rng, 1)) {
            /* An exact redelivery of an earlier event. */
            const ts_model_event *old = &g.s->ev[rng_below(&g.rng, (int)g.s->n)];
            json_t *body = json_object_iter_value(json_object_iter(old->json));
            gen_push(&g, old->topic, old->key, json_object_iter_key(json_object_iter(old->json)),
                     json_incref(body));
            continue;
        }
        unsigned f;
        do
            f = fams[rng_below(&g.rng, 4)];
        while (!(f & g.families));
        if (f == TS_MODEL_STORYBOOK)
            gen_storybook(&g);
        else if (f == TS_MODEL_USER)
            gen_user(&g);
        else if (f == TS_MODEL_INVENTORY)
            gen_inventory(&g);
        else
            gen_beacon(&g);
    }
    for (int i = 0; i < g.us_users; i++)
        json_decref(g.us_last[i]);
    free(g.us_last);
    free(g.us_state);
    free(g.books);
    free(g.bc_bound);
    free(g.bc_store);
    free(g.bc_last);
    return g.s;
}

void ts_model_stream_destroy(ts_model_stream *s) {
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->ev[i].key);
        free(s->ev[i].event_id);
        json_decref(s->ev[i].json);
    }
    free(s->ev);
    free(s);
}

/* ==== the model =============================================================== */

struct ts_model {
    unsigned families;
    json_t *expected; /* {"views", "rows", "dlq", "outputs"} */
    json_t *views, *rows, *dlq, *outputs;
    json_t *seen;  /* topic -> {event_id: true} */
    json_t *state; /* family state, see each family */
    /* user params */
    json_t *options; /* {dietary_restrictions: [...], allergies, favorite_cuisines} */
    json_t *taste_keys;
    int taste_min, taste_max;
    /* beacon params */
    int min_conf;        /* hundredths */
    int64_t presence_ms; /* store presence_ttl */
};

static void m_reject(ts_model *m, const ts_model_event *ev, const char *reason) {
    json_object_set_new(jchild(m->dlq, ev->topic), ev->event_id, json_string(reason));
}

static void m_view_json(ts_model *m, const char *key, json_t *doc, const ts_model_event *ev,
                        const char *vmin) {
    json_t *v = json_object();
    json_object_set_new(v, "kind", json_string("json"));
    json_object_set_new(v, "value", doc);
    if (vmin)
        json_object_set_new(v, "vmin", json_string(vmin));
    json_object_set_new(v, "vtopic", json_string(ev->topic));
    json_object_set_new(v, "vkey", json_string(ev->key));
    json_object_set_new(m->views, key, v);
}

static void m_view_str(ts_model *m, const char *key, const char *text) {
    json_t *v = json_object();
    json_object_set_new(v, "kind", json_string("str"));
    json_object_set_new(v, "value", json_string(text));
    json_object_set_new(m->views, key, v);
}

static void m_view_del(ts_model *m, const char *key) { json_object_del(m->views, key); }

/* Members that are JSON objects are compared in a canonical text. */
static char *m_member_canon(const char *member) {
    if (member[0] == '{') {
        json_t *j = json_loads(member, 0, NULL);
        if (j) {
            char *s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
            json_decref(j);
            return s;
        }
    }
    return strdup(member);
}

static void m_zadd(ts_model *m, const char *key, const char *member, double score) {
    json_t *v = json_object_get(m->views, key);
    if (!v) {
        v = json_object();
        json_object_set_new(v, "kind", json_string("zset"));
        json_object_set_new(v, "value", json_object());
        json_object_set_new(m->views, key, v);
    }
    char *c = m_member_canon(member);
    json_object_set_new(json_object_get(v, "value"), c, json_real(score));
    free(c);
}

static void m_row(ts_model *m, const char *table, const char *pk, json_t *row) {
    json_object_set_new(jchild(m->rows, table), pk, row);
}

static void m_row_del(ts_model *m, const char *table, const char *pk) {
    json_object_del(jchild(m->rows, table), pk);
}

static void m_out(ts_model *m, const char *topic, const char *event_id, const char *type,
                  const char *key, json_t *value) {
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string(type));
    json_object_set_new(o, "key", json_string(key));
    json_object_set_new(o, "value", value);
    json_object_set_new(jchild(m->outputs, topic), event_id, o);
}

/* ---- storybook (CONTRACT section 4, processors/storybook/README.md) ---- */

static int m_cmp_books(const void *a, const void *b) {
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int64_t cx = jtime(x, "createdAt"), cy = jtime(y, "createdAt");
    if (cx != cy)
        return cx > cy ? -1 : 1;
    return strcmp(jstr(x, "id"), jstr(y, "id"));
}

static void m_sb_list(ts_model *m, const ts_model_event *ev, const char *user) {
    json_t *books = jchild(m->state, "sb_book");
    json_t *mine = jchild(jchild(m->state, "sb_user"), user);
    size_t n = json_object_size(mine), i = 0;
    json_t **arr = calloc(n + 1, sizeof(*arr));
    const char *id;
    json_t *unused;
    json_object_foreach(mine, id, unused) {
        json_t *bk = json_object_get(books, id);
        json_t *e = json_object();
        json_object_set(e, "id", json_object_get(bk, "id"));
        json_object_set(e, "title", json_object_get(bk, "title"));
        json_object_set(e, "coverImageUrl", json_object_get(bk, "coverImageUrl"));
        json_object_set_new(e, "pageCount", json_integer((json_int_t)json_object_size(
                                                json_object_get(bk, "pages"))));
        json_object_set_new(e, "createdAt", jiso(jtime(bk, "createdAt")));
        json_object_set_new(e, "updatedAt", jiso(jtime(bk, "updatedAt")));
        arr[i++] = e;
    }
    qsort(arr, n, sizeof(*arr), m_cmp_books);
    json_t *list = json_array();
    for (i = 0; i < n; i++)
        json_array_append_new(list, arr[i]);
    free(arr);
    char key[128];
    snprintf(key, sizeof(key), "storybook:books:%s", user);
    m_view_json(m, key, list, ev, NULL);
    json_object_del(json_object_get(m->views, key), "vtopic"); /* an array: no version */
}

static void m_sb_book(ts_model *m, const ts_model_event *ev, json_t *bk, int64_t deleted) {
    const char *id = jstr(bk, "id");
    json_t *row = json_object();
    json_object_set(row, "book_id", json_object_get(bk, "id"));
    json_object_set(row, "user_id", json_object_get(bk, "userId"));
    json_object_set(row, "title", json_object_get(bk, "title"));
    json_object_set(row, "cover_image_url", json_object_get(bk, "coverImageUrl"));
    json_object_set_new(row, "created_at", jiso(jtime(bk, "createdAt")));
    json_object_set_new(row, "updated_at", jiso(jtime(bk, "updatedAt")));
    json_object_set_new(row, "deleted_at", deleted ? jiso(deleted) : json_null());
    m_row(m, "books", id, row);
    char key[128];
    snprintf(key, sizeof(key), "storybook:book:%s", id);
    if (deleted) {
        m_view_del(m, key);
        return;
    }
    json_t *pages = json_array();
    for (int p = 1; p <= 64; p++) {
        char pn[16];
        snprintf(pn, sizeof(pn), "%d", p);
        json_t *pg = json_object_get(json_object_get(bk, "pages"), pn);
        if (!pg)
            continue;
        json_t *e = json_object();
        json_object_set_new(e, "pageNo", json_integer(p));
        json_object_set(e, "text", json_object_get(pg, "text"));
        json_object_set(e, "imageUrl", json_object_get(pg, "imageUrl"));
        json_object_set(e, "audioUrl", json_object_get(pg, "audioUrl"));
        json_array_append_new(pages, e);
    }
    json_t *doc = json_object();
    json_object_set(doc, "id", json_object_get(bk, "id"));
    json_object_set(doc, "userId", json_object_get(bk, "userId"));
    json_object_set(doc, "title", json_object_get(bk, "title"));
    json_object_set(doc, "coverImageUrl", json_object_get(bk, "coverImageUrl"));
    json_object_set_new(doc, "pages", pages);
    json_object_set_new(doc, "createdAt", jiso(jtime(bk, "createdAt")));
    json_object_set_new(doc, "updatedAt", jiso(jtime(bk, "updatedAt")));
    m_view_json(m, key, doc, ev, ev->event_id);
}

static void m_storybook(ts_model *m, const ts_model_event *ev, const char *type, json_t *b) {
    json_t *books = jchild(m->state, "sb_book");
    const char *bid = jstr(b, "book_id"), *uid = jstr(b, "user_id");
    json_t *bk = json_object_get(books, bid);
    char why[256];
    if (strcmp(type, "BookCreated") == 0) {
        if (bk) {
            snprintf(why, sizeof(why), "book %s exists", bid);
            return m_reject(m, ev, why);
        }
        bk = json_object();
        json_object_set_new(bk, "id", json_string(bid));
        json_object_set_new(bk, "userId", json_string(uid));
        json_object_set_new(bk, "title", jopt(b, "title"));
        json_object_set_new(bk, "coverImageUrl", jopt(b, "cover_image_url"));
        json_object_set_new(bk, "createdAt", json_integer(jtime(b, "created_at")));
        json_object_set_new(bk, "updatedAt", json_integer(jtime(b, "created_at")));
        json_object_set_new(bk, "pages", json_object());
        json_object_set_new(books, bid, bk);
        json_object_set_new(jchild(jchild(m->state, "sb_user"), uid), bid, json_true());
        m_sb_book(m, ev, bk, 0);
        m_sb_list(m, ev, uid);
        return;
    }
    if (!bk) {
        snprintf(why, sizeof(why), "unknown book %s", bid);
        return m_reject(m, ev, why);
    }
    if (strcmp(jstr(bk, "userId"), uid) != 0) {
        snprintf(why, sizeof(why), "book %s is not owned by %s", bid, uid);
        return m_reject(m, ev, why);
    }
    json_t *pages = json_object_get(bk, "pages");
    char pn[32];
    json_int_t page = json_integer_value(json_object_get(b, "page_no"));
    snprintf(pn, sizeof(pn), "%lld", (long long)page);
    int64_t t;
    if (strcmp(type, "BookUpdated") == 0) {
        t = jtime(b, "updated_at");
        json_t *v;
        if ((v = json_object_get(b, "title")) && !json_is_null(v))
            json_object_set(bk, "title", v);
        if ((v = json_object_get(b, "cover_image_url")) && !json_is_null(v))
            json_object_set(bk, "coverImageUrl", v);
    } else if (strcmp(type, "PageUpserted") == 0) {
        if (page < 1)
            return m_reject(m, ev, "page_no < 1");
        t = jtime(b, "updated_at");
        json_t *pg = json_object();
        json_object_set_new(pg, "text", jopt(b, "text"));
        json_object_set_new(pg, "imageUrl", jopt(b, "image_url"));
        json_object_set_new(pg, "audioUrl", jopt(b, "audio_url"));
        json_object_set_new(pages, pn, pg);
        json_t *row = json_object();
        json_object_set_new(row, "book_id", json_string(bid));
        json_object_set_new(row, "page_no", json_integer(page));
        json_object_set_new(row, "text", jopt(b, "text"));
        json_object_set_new(row, "image_url", jopt(b, "image_url"));
        json_object_set_new(row, "audio_url", jopt(b, "audio_url"));
        json_object_set_new(row, "updated_at", jiso(t));
        char pk[128];
        snprintf(pk, sizeof(pk), "%s|%s", bid, pn);
        m_row(m, "book_pages", pk, row);
    } else if (strcmp(type, "PageDeleted") == 0) {
        if (page < 1 || !json_object_get(pages, pn)) {
            snprintf(why, sizeof(why), "book %s has no page %s", bid, pn);
            return m_reject(m, ev, why);
        }
        t = jtime(b, "deleted_at");
        json_object_del(pages, pn);
        char pk[128];
        snprintf(pk, sizeof(pk), "%s|%s", bid, pn);
        m_row_del(m, "book_pages", pk);
    } else { /* BookDeleted */
        t = jtime(b, "deleted_at");
        const char *p;
        json_t *unused;
        json_object_foreach(pages, p, unused) {
            char pk[128];
            snprintf(pk, sizeof(pk), "%s|%s", bid, p);
            m_row_del(m, "book_pages", pk);
        }
        /* BookDeleted sets deleted_at; the README's "every change sets updatedAt"
         * is about a book that goes on existing, so the row keeps its last one. */
        m_sb_book(m, ev, bk, t);
        json_object_del(jchild(jchild(m->state, "sb_user"), uid), bid);
        json_object_del(books, bid);
        m_sb_list(m, ev, uid);
        return;
    }
    json_object_set_new(bk, "updatedAt", json_integer(t));
    m_sb_book(m, ev, bk, 0);
    m_sb_list(m, ev, uid);
}

/* ---- user (CONTRACT section 2, processors/user/README.md) ---- */

/* Checks and normalizes one option list: option-list order, each value once.
 * @returns the new list, or NULL (bad value copied into why). */
static json_t *m_us_norm(const json_t *opts, const json_t *given, char *why, size_t cap) {
    size_t i, j;
    json_t *v;
    json_array_foreach(given, i, v) {
        int ok = 0;
        json_t *o;
        json_array_foreach(opts, j, o) ok |= json_equal(o, v);
        if (!ok) {
            snprintf(why, cap, "value %s not allowed", json_string_value(v));
            return NULL;
        }
    }
    json_t *out = json_array();
    json_t *o;
    json_array_foreach(opts, j, o) {
        int in = 0;
        json_array_foreach(given, i, v) in |= json_equal(o, v);
        if (in)
            json_array_append(out, o);
    }
    return out;
}

static json_t *m_us_profile(const json_t *u) {
    json_t *p = json_object();
    json_object_set(p, "id", json_object_get(u, "id"));
    json_object_set(p, "email", json_object_get(u, "email"));
    json_object_set(p, "displayName", json_object_get(u, "displayName"));
    json_object_set(p, "profileImageUrl", json_object_get(u, "profileImageUrl"));
    json_object_set_new(p, "createdAt", jiso(jtime(u, "createdAt")));
    json_object_set_new(p, "updatedAt", jiso(jtime(u, "updatedAt")));
    return p;
}

static json_t *m_us_prefs(const json_t *u) {
    json_t *pr = json_object_get(u, "prefs");
    json_t *p = json_object();
    json_object_set(p, "dietaryRestrictions", json_object_get(pr, "dietary_restrictions"));
    json_object_set(p, "allergies", json_object_get(pr, "allergies"));
    json_object_set(p, "favoriteCuisines", json_object_get(pr, "favorite_cuisines"));
    json_object_set(p, "taste", json_object_get(pr, "taste"));
    json_t *t = json_object_get(pr, "updatedAt");
    json_object_set_new(p, "updatedAt", json_is_integer(t) ? jiso(json_integer_value(t)) : json_null());
    return p;
}

/* Writes the views and rows of user `u` after a change; which = 1 profile,
 * 2 preferences, 3 both. */
static void m_us_write(ts_model *m, const ts_model_event *ev, json_t *u, int which,
                       int64_t deleted) {
    const char *id = jstr(u, "id");
    char key[128];
    if (which & 1) {
        json_t *row = json_object();
        json_object_set_new(row, "user_id", json_string(id));
        json_object_set(row, "email", json_object_get(u, "email"));
        json_object_set(row, "display_name", json_object_get(u, "displayName"));
        json_object_set(row, "profile_image_url", json_object_get(u, "profileImageUrl"));
        json_object_set_new(row, "created_at", jiso(jtime(u, "createdAt")));
        json_object_set_new(row, "updated_at", jiso(jtime(u, "updatedAt")));
        json_object_set_new(row, "deleted_at", deleted ? jiso(deleted) : json_null());
        m_row(m, "users", id, row);
    }
    if (deleted) {
        m_row_del(m, "user_preferences", id);
        snprintf(key, sizeof(key), "user:profile:%s", id);
        m_view_del(m, key);
        snprintf(key, sizeof(key), "user:preferences:%s", id);
        m_view_del(m, key);
        snprintf(key, sizeof(key), "user:info:%s", id);
        m_view_del(m, key);
        return;
    }
    if (which & 1) {
        snprintf(key, sizeof(key), "user:profile:%s", id);
        m_view_json(m, key, m_us_profile(u), ev, ev->event_id);
    }
    if (which & 2) {
        json_t *pr = json_object_get(u, "prefs");
        json_t *row = json_object();
        json_object_set_new(row, "user_id", json_string(id));
        json_object_set(row, "dietary_restrictions", json_object_get(pr, "dietary_restrictions"));
        json_object_set(row, "allergies", json_object_get(pr, "allergies"));
        json_object_set(row, "favorite_cuisines", json_object_get(pr, "favorite_cuisines"));
        json_object_set(row, "taste", json_object_get(pr, "taste"));
        json_t *t = json_object_get(pr, "updatedAt");
        json_object_set_new(row, "updated_at",
                            json_is_integer(t) ? jiso(json_integer_value(t)) : json_null());
        m_row(m, "user_preferences", id, row);
        snprintf(key, sizeof(key), "user:preferences:%s", id);
        m_view_json(m, key, m_us_prefs(u), ev, ev->event_id);
    }
    json_t *info = json_object();
    json_object_set_new(info, "profile", m_us_profile(u));
    json_object_set_new(info, "preferences", m_us_prefs(u));
    snprintf(key, sizeof(key), "user:info:%s", id);
    m_view_json(m, key, info, ev, ev->event_id);
}

static const char *const m_us_fields[] = {"dietary_restrictions", "allergies",
                                          "favorite_cuisines"};

static void m_user(ts_model *m, const ts_model_event *ev, const char *type, json_t *b) {
    json_t *users = jchild(m->state, "us_user");
    const char *uid = jstr(b, "user_id");
    json_t *u = json_object_get(users, uid);
    char why[256];
    if (strcmp(type, "UserRegistered") == 0) {
        if (u) {
            snprintf(why, sizeof(why), "user %s already registered", uid);
            return m_reject(m, ev, why);
        }
        const char *email = jstr(b, "email");
        const char *at = strrchr(email, '@');
        size_t local = at ? (size_t)(at - email) : strlen(email);
        if (local == 0) {
            snprintf(why, sizeof(why), "user %s: bad email", uid);
            return m_reject(m, ev, why);
        }
        int64_t t = jtime(b, "registered_at");
        u = json_object();
        json_object_set_new(u, "id", json_string(uid));
        json_object_set_new(u, "email", json_string(email));
        json_object_set_new(u, "displayName", json_stringn(email, local));
        json_object_set_new(u, "profileImageUrl", json_null());
        json_object_set_new(u, "createdAt", json_integer(t));
        json_object_set_new(u, "updatedAt", json_integer(t));
        json_t *pr = json_object();
        for (int i = 0; i < 3; i++)
            json_object_set_new(pr, m_us_fields[i], json_array());
        json_object_set_new(pr, "taste", json_object());
        json_object_set_new(pr, "updatedAt", json_null());
        json_object_set_new(u, "prefs", pr);
        json_object_set_new(users, uid, u);
        m_us_write(m, ev, u, 3, 0);
        return;
    }
    if (!u) {
        snprintf(why, sizeof(why), "user %s is not registered", uid);
        return m_reject(m, ev, why);
    }
    if (strcmp(type, "UserDeleted") == 0) {
        m_us_write(m, ev, u, 1, jtime(b, "deleted_at"));
        json_object_del(users, uid);
        return;
    }
    if (strcmp(type, "ProfileUpdated") == 0) {
        json_t *v;
        if ((v = json_object_get(b, "display_name")) && !json_is_null(v)) {
            if (json_string_length(v) == 0) {
                const char *email = jstr(u, "email");
                json_object_set_new(u, "displayName",
                                    json_stringn(email, (size_t)(strrchr(email, '@') - email)));
            } else {
                json_object_set(u, "displayName", v);
            }
        }
        if ((v = json_object_get(b, "profile_image_url")) && !json_is_null(v))
            json_object_set_new(u, "profileImageUrl",
                                json_string_length(v) ? json_incref(v) : json_null());
        json_object_set_new(u, "updatedAt", json_integer(jtime(b, "updated_at")));
        m_us_write(m, ev, u, 1, 0);
        return;
    }
    /* PreferencesSet: check everything, then diff. */
    json_t *now = json_object();
    for (int i = 0; i < 3; i++) {
        json_t *n = m_us_norm(json_object_get(m->options, m_us_fields[i]),
                              json_object_get(b, m_us_fields[i]), why, sizeof(why));
        if (!n) {
            json_decref(now);
            return m_reject(m, ev, why);
        }
        json_object_set_new(now, m_us_fields[i], n);
    }
    json_t *taste = json_object();
    const char *tk;
    json_t *tv;
    json_object_foreach(json_object_get(b, "taste"), tk, tv) {
        int known = 0;
        size_t j;
        json_t *o;
        json_array_foreach(m->taste_keys, j, o) known |= strcmp(json_string_value(o), tk) == 0;
        json_int_t lv = json_integer_value(tv);
        if (!known || lv < m->taste_min || lv > m->taste_max) {
            json_decref(taste);
            json_decref(now);
            snprintf(why, sizeof(why), "taste %s=%lld not allowed", tk, (long long)lv);
            return m_reject(m, ev, why);
        }
        json_object_set(taste, tk, tv);
    }
    json_object_set_new(now, "taste", taste);
    json_t *pr = json_object_get(u, "prefs");
    json_t *changes = json_array();
    static const char *const all[] = {"dietary_restrictions", "allergies", "favorite_cuisines",
                                      "taste"};
    for (int i = 0; i < 4; i++) {
        json_t *before = json_object_get(pr, all[i]), *after = json_object_get(now, all[i]);
        if (json_equal(before, after))
            continue;
        json_t *c = json_object();
        json_object_set_new(c, "field", json_string(all[i]));
        json_object_set(c, "before", before);
        json_object_set(c, "after", after);
        json_array_append_new(changes, c);
    }
    if (json_array_size(changes) == 0) {
        json_decref(changes);
        json_decref(now);
        return; /* changes nothing at all */
    }
    int64_t t = jtime(b, "updated_at");
    json_object_set_new(now, "updatedAt", json_integer(t));
    json_object_set_new(u, "prefs", now);
    m_us_write(m, ev, u, 2, 0);
    char oid[160];
    snprintf(oid, sizeof(oid), "%s:preference-updated", ev->event_id);
    json_t *out = json_object();
    json_object_set_new(out, "event_type", json_string("UserPreferenceUpdated"));
    json_object_set_new(out, "event_id", json_string(oid));
    json_object_set_new(out, "timestamp", json_integer(t));
    json_object_set_new(out, "user_id", json_string(uid));
    json_object_set_new(out, "changes", changes);
    m_out(m, T_PREF, oid, "UserPreferenceUpdated", uid, out);
}

/* ---- inventory (CONTRACT section 3, processors/inventory/README.md) ---- */

static void m_inv_write(ts_model *m, const ts_model_event *ev, json_t *p) {
    const char *id = jstr(p, "id");
    char key[128], num[32];
    json_int_t stock = json_integer_value(json_object_get(p, "stock"));
    snprintf(key, sizeof(key), "stock:%s", id);
    snprintf(num, sizeof(num), "%lld", (long long)stock);
    m_view_str(m, key, num);
    json_t *doc = json_object();
    json_object_set(doc, "id", json_object_get(p, "id"));
    json_object_set(doc, "name", json_object_get(p, "name"));
    json_object_set(doc, "description", json_object_get(p, "description"));
    json_object_set(doc, "price", json_object_get(p, "price"));
    json_object_set_new(doc, "currentStock", json_integer(stock));
    json_object_set_new(doc, "createdAt", jiso(jtime(p, "createdAt")));
    json_object_set_new(doc, "updatedAt", jiso(jtime(p, "updatedAt")));
    snprintf(key, sizeof(key), "product:%s", id);
    m_view_json(m, key, doc, ev, ev->event_id);
    json_t *row = json_object();
    json_object_set_new(row, "product_id", json_string(id));
    json_object_set(row, "name", json_object_get(p, "name"));
    json_object_set(row, "description", json_object_get(p, "description"));
    json_object_set(row, "price", json_object_get(p, "price"));
    json_object_set_new(row, "stock", json_integer(stock));
    json_object_set_new(row, "created_at", jiso(jtime(p, "createdAt")));
    json_object_set_new(row, "updated_at", jiso(jtime(p, "updatedAt")));
    m_row(m, "products", id, row);
}

/* Alerts after a stock change at time t; re-arming when back at the line. */
static void m_inv_alerts(ts_model *m, const ts_model_event *ev, json_t *p, int64_t t) {
    json_int_t stock = json_integer_value(json_object_get(p, "stock"));
    json_int_t thr = json_integer_value(json_object_get(p, "threshold"));
    const char *id = jstr(p, "id");
    char oid[160];
    if (json_is_true(json_object_get(p, "lowArmed")) && stock < thr) {
        json_object_set_new(p, "lowArmed", json_false());
        snprintf(oid, sizeof(oid), "%s:stock-low", ev->event_id);
        json_t *o = json_object();
        json_object_set_new(o, "event_id", json_string(oid));
        json_object_set_new(o, "product_id", json_string(id));
        json_object_set_new(o, "stock", json_integer(stock));
        json_object_set_new(o, "threshold", json_integer(thr));
        json_object_set_new(o, "at", json_integer(t));
        m_out(m, T_ALERTS, oid, "StockLow", id, o);
    } else if (stock >= thr) {
        json_object_set_new(p, "lowArmed", json_true());
    }
    if (json_is_true(json_object_get(p, "soldOutArmed")) && stock == 0) {
        json_object_set_new(p, "soldOutArmed", json_false());
        snprintf(oid, sizeof(oid), "%s:sold-out", ev->event_id);
        json_t *o = json_object();
        json_object_set_new(o, "event_id", json_string(oid));
        json_object_set_new(o, "product_id", json_string(id));
        json_object_set_new(o, "at", json_integer(t));
        m_out(m, T_ALERTS, oid, "SoldOut", id, o);
    } else if (stock > 0) {
        json_object_set_new(p, "soldOutArmed", json_true());
    }
}

static void m_inventory(ts_model *m, const ts_model_event *ev, const char *type, json_t *b) {
    json_t *products = jchild(m->state, "inv_product");
    const char *pid = jstr(b, "product_id");
    json_t *p = json_object_get(products, pid);
    char why[256];
    if (strcmp(type, "ProductCreated") == 0) {
        json_int_t price = json_integer_value(json_object_get(b, "price"));
        json_int_t init = json_integer_value(json_object_get(b, "initial_stock"));
        json_t *lt = json_object_get(b, "low_stock_threshold");
        if (p || price < 0 || init < 0 || (json_is_integer(lt) && json_integer_value(lt) < 0)) {
            snprintf(why, sizeof(why), "product %s exists or has a negative value", pid);
            return m_reject(m, ev, why);
        }
        int64_t t = jtime(b, "created_at");
        json_int_t thr = json_is_integer(lt) ? json_integer_value(lt) : (init + 9) / 10;
        p = json_object();
        json_object_set_new(p, "id", json_string(pid));
        json_object_set_new(p, "name", jopt(b, "name"));
        json_object_set_new(p, "description", jopt(b, "description"));
        json_object_set_new(p, "price", json_integer(price));
        json_object_set_new(p, "stock", json_integer(init));
        json_object_set_new(p, "sold", json_integer(0));
        json_object_set_new(p, "threshold", json_integer(thr));
        json_object_set_new(p, "lowArmed", json_boolean(init >= thr));
        json_object_set_new(p, "soldOutArmed", json_boolean(init > 0));
        json_object_set_new(p, "createdAt", json_integer(t));
        json_object_set_new(p, "updatedAt", json_integer(t));
        json_object_set_new(products, pid, p);
        m_inv_write(m, ev, p);
        return;
    }
    if (strcmp(type, "StockAdjusted") == 0) {
        json_int_t delta = json_integer_value(json_object_get(b, "delta"));
        json_int_t stock = p ? json_integer_value(json_object_get(p, "stock")) + delta : -1;
        if (!p || stock < 0 || stock > INT32_MAX) {
            snprintf(why, sizeof(why), "product %s unknown or stock would be %lld", pid,
                     (long long)stock);
            return m_reject(m, ev, why);
        }
        int64_t t = jtime(b, "adjusted_at");
        json_object_set_new(p, "stock", json_integer(stock));
        json_object_set_new(p, "updatedAt", json_integer(t));
        m_inv_alerts(m, ev, p, t);
        m_inv_write(m, ev, p);
        return;
    }
    /* PurchaseRequested */
    json_t *decided = jchild(m->state, "inv_purchase");
    const char *pur = jstr(b, "purchase_id"), *uid = jstr(b, "user_id");
    if (json_object_get(decided, pur))
        return; /* decided once: the first result is re-emitted with its own id */
    json_object_set_new(decided, pur, json_true());
    json_int_t q = json_integer_value(json_object_get(b, "quantity"));
    int64_t t = jtime(b, "requested_at");
    const char *reason = NULL;
    if (!p)
        reason = "UNKNOWN_PRODUCT";
    else if (q <= 0)
        reason = "INVALID_QUANTITY";
    else if (json_integer_value(json_object_get(p, "stock")) < q)
        reason = "INSUFFICIENT_STOCK";
    char oid[160];
    json_t *row = json_object();
    json_object_set_new(row, "purchase_id", json_string(pur));
    json_object_set_new(row, "user_id", json_string(uid));
    json_object_set_new(row, "product_id", json_string(pid));
    json_object_set_new(row, "quantity", json_integer(q));
    json_object_set_new(row, "decided_at", jiso(t));
    json_t *o = json_object();
    json_object_set_new(o, "purchase_id", json_string(pur));
    json_object_set_new(o, "user_id", json_string(uid));
    json_object_set_new(o, "product_id", json_string(pid));
    json_object_set_new(o, "quantity", json_integer(q));
    if (reason) {
        snprintf(oid, sizeof(oid), "%s:rejected", ev->event_id);
        json_object_set_new(o, "event_id", json_string(oid));
        json_object_set_new(o, "reason", json_string(reason));
        json_object_set_new(o, "rejected_at", json_integer(t));
        m_out(m, T_RESULTS, oid, "PurchaseRejected", uid, o);
        json_object_set_new(row, "total_price", json_null());
        json_object_set_new(row, "status", json_string("rejected"));
        json_object_set_new(row, "reason", json_string(reason));
        m_row(m, "purchases", pur, row);
        return;
    }
    json_int_t stock = json_integer_value(json_object_get(p, "stock")) - q;
    json_int_t sold = json_integer_value(json_object_get(p, "sold")) + q;
    json_int_t total = json_integer_value(json_object_get(p, "price")) * q;
    json_object_set_new(p, "stock", json_integer(stock));
    json_object_set_new(p, "sold", json_integer(sold));
    json_object_set_new(p, "updatedAt", json_integer(t));
    snprintf(oid, sizeof(oid), "%s:accepted", ev->event_id);
    json_object_set_new(o, "event_id", json_string(oid));
    json_object_set_new(o, "total_price", json_integer(total));
    json_object_set_new(o, "remaining_stock", json_integer(stock));
    json_object_set_new(o, "purchased_at", json_integer(t));
    m_out(m, T_RESULTS, oid, "PurchaseAccepted", uid, o);
    json_object_set_new(row, "total_price", json_integer(total));
    json_object_set_new(row, "status", json_string("accepted"));
    json_object_set_new(row, "reason", json_null());
    m_row(m, "purchases", pur, row);
    json_t *member = json_object();
    json_object_set_new(member, "purchaseId", json_string(pur));
    json_object_set_new(member, "productId", json_string(pid));
    json_object_set_new(member, "quantity", json_integer(q));
    json_object_set_new(member, "totalPrice", json_integer(total));
    json_object_set_new(member, "purchasedAt", jiso(t));
    char *mtext = json_dumps(member, JSON_COMPACT);
    char key[128];
    snprintf(key, sizeof(key), "purchases:%s", uid);
    m_zadd(m, key, mtext, (double)t);
    free(mtext);
    json_decref(member);
    m_zadd(m, "ranking:products:sold", pid, (double)sold);
    m_inv_alerts(m, ev, p, t);
    m_inv_write(m, ev, p);
}

/* ---- beacon (CONTRACT section 1, processors/beacon/README.md) ---- */

static void m_beacon(ts_model *m, const ts_model_event *ev, json_t *b) {
    const char *dev = jstr(b, "device_id"), *store = jstr(b, "store_id");
    const char *bcn = jstr(b, "beacon_id"), *source = jstr(b, "source");
    json_t *cust_v = json_object_get(b, "customer_id");
    const char *cust = json_string_value(cust_v);
    int64_t t = jtime(b, "detected_at");
    if (!*ev->event_id || !*dev || !*store || !*bcn || (cust && !*cust) || t < 0)
        return m_reject(m, ev, "empty id or negative time");
    json_t *d = jchild(jchild(m->state, "bc_dev"), dev);
    json_t *seen = jchild(d, "seen");
    int conf = -1; /* hundredths; -1: none computed */
    const char *who = NULL;
    if (cust) {
        conf = strcmp(source, "QR") == 0 ? 100 : 90;
        who = cust;
        json_t *bound_at = json_object_get(d, "boundAt");
        if (!bound_at || t >= json_integer_value(bound_at)) {
            json_object_set_new(d, "customerId", json_string(cust));
            json_object_set_new(d, "boundAt", json_integer(t));
        }
    } else if ((who = jstr(d, "customerId"))) {
        json_int_t rssi = json_integer_value(json_object_get(b, "rssi"));
        conf = rssi >= -60 ? 80 : rssi >= -75 ? 60 : 30;
        json_t *prev = json_object_get(seen, store);
        if (prev && t - json_integer_value(prev) >= 0 && t - json_integer_value(prev) <= 60000)
            conf = conf + 10 > 95 ? 95 : conf + 10;
    }
    json_t *prev = json_object_get(seen, store);
    if (!prev || json_integer_value(prev) < t)
        json_object_set_new(seen, store, json_integer(t));
    int accepted = who && conf >= m->min_conf;
    char oid[160], vid[160];
    snprintf(oid, sizeof(oid), "%s:identified", ev->event_id);
    snprintf(vid, sizeof(vid), "%s:visit", ev->event_id);
    if (accepted) {
        json_t *o = json_object();
        json_object_set_new(o, "event_id", json_string(oid));
        json_object_set_new(o, "customer_id", json_string(who));
        json_object_set_new(o, "store_id", json_string(store));
        json_object_set_new(o, "beacon_id", json_string(bcn));
        json_object_set_new(o, "device_id", json_string(dev));
        json_object_set_new(o, "confidence", json_real(conf / 100.0));
        json_object_set_new(o, "detected_at", json_integer(t));
        json_object_set_new(o, "identified_at", json_string("$any")); /* Kafka timestamp */
        m_out(m, T_CUST, oid, "CustomerIdentified", who, json_deep_copy(o));
        /* Stage `customer`: the row, and the view of the greatest detected_at. */
        json_t *row = json_object();
        json_object_set_new(row, "event_id", json_string(oid));
        json_object_set_new(row, "customer_id", json_string(who));
        json_object_set_new(row, "store_id", json_string(store));
        json_object_set_new(row, "beacon_id", json_string(bcn));
        json_object_set_new(row, "device_id", json_string(dev));
        json_object_set_new(row, "confidence", json_real(conf / 100.0));
        json_object_set_new(row, "detected_at", jiso(t));
        json_object_set_new(row, "identified_at", json_string("$any"));
        m_row(m, "customer_identities", oid, row);
        json_decref(o);
        json_t *cs = jchild(jchild(m->state, "bc_cust"), who);
        json_t *cur = json_object_get(cs, "detectedAt");
        if (!cur || t > json_integer_value(cur) ||
            (t == json_integer_value(cur) && strcmp(oid, jstr(cs, "eventId")) > 0)) {
            json_object_set_new(cs, "detectedAt", json_integer(t));
            json_object_set_new(cs, "eventId", json_string(oid));
            json_t *doc = json_object();
            json_object_set_new(doc, "customerId", json_string(who));
            json_object_set_new(doc, "storeId", json_string(store));
            json_object_set_new(doc, "beaconId", json_string(bcn));
            json_object_set_new(doc, "deviceId", json_string(dev));
            json_object_set_new(doc, "confidence", json_real(conf / 100.0));
            json_object_set_new(doc, "detectedAt", jiso(t));
            json_object_set_new(doc, "identifiedAt", json_string("$any"));
            char key[128];
            snprintf(key, sizeof(key), "customer:%s", who);
            ts_model_event cev = {.topic = T_CUST, .key = (char *)who, .event_id = oid};
            m_view_json(m, key, doc, &cev, oid);
        }
    }
    json_t *v = json_object();
    json_object_set_new(v, "event_id", json_string(vid));
    json_object_set_new(v, "store_id", json_string(store));
    json_object_set_new(v, "device_id", json_string(dev));
    json_object_set_new(v, "customer_id", accepted ? json_string(who) : json_null());
    json_object_set_new(v, "confidence", conf >= 0 ? json_real(conf / 100.0) : json_null());
    json_object_set_new(v, "detected_at", json_integer(t));
    m_out(m, T_VISITS, vid, "StoreVisit", store, v);
    /* Stage `store`: functions of the set of visits (see the beacon README). */
    json_t *st = jchild(jchild(m->state, "bc_store"), store);
    json_t *newest = json_object_get(st, "newest");
    if (!newest || json_integer_value(newest) < t)
        json_object_set_new(st, "newest", json_integer(t));
    char day[16], iso[40];
    ts_time_iso(t, iso, sizeof(iso));
    snprintf(day, sizeof(day), "%.10s", iso);
    json_t *cnt = json_object_get(jchild(st, "days"), day);
    if (!cnt) {
        cnt = json_pack("[ii]", 0, 0);
        json_object_set_new(json_object_get(st, "days"), day, cnt);
    }
    json_array_set_new(cnt, accepted ? 0 : 1,
                       json_integer(json_integer_value(json_array_get(cnt, accepted ? 0 : 1)) + 1));
    if (accepted) {
        json_t *mem = jchild(st, "members");
        json_t *mt = json_object_get(mem, who);
        if (!mt || json_integer_value(mt) < t)
            json_object_set_new(mem, who, json_integer(t));
    }
}

/* Materializes the store views, which depend on every visit of the store. */
static void m_beacon_finish(ts_model *m) {
    const char *store;
    json_t *st;
    json_object_foreach(jchild(m->state, "bc_store"), store, st) {
        int64_t newest = json_integer_value(json_object_get(st, "newest"));
        char key[128], iso[40], day[16];
        ts_time_iso(newest, iso, sizeof(iso));
        snprintf(day, sizeof(day), "%.10s", iso);
        json_t *cnt = json_object_get(json_object_get(st, "days"), day);
        json_t *doc = json_object();
        json_object_set_new(doc, "storeId", json_string(store));
        json_object_set(doc, "identified", json_array_get(cnt, 0));
        json_object_set(doc, "anonymous", json_array_get(cnt, 1));
        json_object_set_new(doc, "date", json_string(day));
        snprintf(key, sizeof(key), "store:%s:traffic", store);
        ts_model_event sev = {.topic = T_VISITS, .key = (char *)store};
        m_view_json(m, key, doc, &sev, NULL);
        snprintf(key, sizeof(key), "store:%s:present", store);
        m_view_del(m, key);
        const char *c;
        json_t *mt;
        json_object_foreach(json_object_get(st, "members"), c, mt) {
            if (json_integer_value(mt) >= newest - m->presence_ms)
                m_zadd(m, key, c, (double)json_integer_value(mt));
        }
    }
}

/* ---- model lifecycle ---- */

static const json_t *m_params(const ts_topology *topo, const char *proc) {
    for (size_t i = 0; i < topo->n_processors; i++)
        if (strcmp(topo->processors[i].name, proc) == 0)
            return topo->processors[i].params;
    return NULL;
}

ts_model *ts_model_create(const ts_topology *topo, unsigned families) {
    ts_model *m = calloc(1, sizeof(*m));
    m->families = families ? families : TS_MODEL_ALL;
    m->expected = json_object();
    m->views = jchild(m->expected, "views");
    m->rows = jchild(m->expected, "rows");
    m->dlq = jchild(m->expected, "dlq");
    m->outputs = jchild(m->expected, "outputs");
    m->seen = json_object();
    m->state = json_object();
    m->min_conf = 60;
    m->presence_ms = 600000;
    m->taste_min = 1;
    m->taste_max = 5;
    if (m->families & TS_MODEL_STORYBOOK) {
        jchild(m->rows, "books");
        jchild(m->rows, "book_pages");
        jchild(m->dlq, T_SB);
    }
    if (m->families & TS_MODEL_USER) {
        const json_t *p = m_params(topo, "user");
        m->options = json_deep_copy(json_object_get(p, "options"));
        json_t *taste = json_object_get(p, "taste");
        m->taste_keys = json_deep_copy(json_object_get(taste, "keys"));
        if (json_is_integer(json_object_get(taste, "min")))
            m->taste_min = (int)json_integer_value(json_object_get(taste, "min"));
        if (json_is_integer(json_object_get(taste, "max")))
            m->taste_max = (int)json_integer_value(json_object_get(taste, "max"));
        if (!json_is_object(m->options) || !json_is_array(m->taste_keys)) {
            fprintf(stderr, "model: topology has no user options\n");
            ts_model_destroy(m);
            return NULL;
        }
        jchild(m->rows, "users");
        jchild(m->rows, "user_preferences");
        jchild(m->dlq, T_USER);
        jchild(m->outputs, T_PREF);
        /* Written at start from the params. */
        json_t *doc = json_object();
        json_object_set(doc, "dietaryRestrictions", json_object_get(m->options, "dietary_restrictions"));
        json_object_set(doc, "allergies", json_object_get(m->options, "allergies"));
        json_object_set(doc, "favoriteCuisines", json_object_get(m->options, "favorite_cuisines"));
        json_object_set_new(doc, "taste", json_pack("{s:O,s:i,s:i}", "keys", m->taste_keys, "min",
                                                    m->taste_min, "max", m->taste_max));
        json_t *v = json_pack("{s:s,s:o,s:i}", "kind", "json", "value", doc, "vfixed", -1);
        json_object_set_new(m->views, "preferences:options", v);
    }
    if (m->families & TS_MODEL_INVENTORY) {
        jchild(m->rows, "products");
        jchild(m->rows, "purchases");
        jchild(m->dlq, T_INV);
        jchild(m->outputs, T_RESULTS);
        jchild(m->outputs, T_ALERTS);
    }
    if (m->families & TS_MODEL_BEACON) {
        json_t *mc = json_object_get(m_params(topo, "beacon"), "min_confidence");
        if (json_is_number(mc))
            m->min_conf = (int)lround(json_number_value(mc) * 100);
        json_t *ttl = json_object_get(m_params(topo, "store"), "presence_ttl");
        if (json_is_number(ttl))
            m->presence_ms = (int64_t)llround(json_number_value(ttl) * 1000);
        jchild(m->rows, "customer_identities");
        jchild(m->dlq, T_BEACON);
        jchild(m->outputs, T_CUST);
        jchild(m->outputs, T_VISITS);
    }
    return m;
}

void ts_model_destroy(ts_model *m) {
    if (!m)
        return;
    json_decref(m->expected);
    json_decref(m->seen);
    json_decref(m->state);
    json_decref(m->options);
    json_decref(m->taste_keys);
    free(m);
}

void ts_model_apply(ts_model *m, const ts_model_event *ev) {
    json_t *seen = jchild(m->seen, ev->topic);
    if (json_object_get(seen, ev->event_id))
        return; /* a redelivery has no effect beyond the first delivery */
    json_object_set_new(seen, ev->event_id, json_true());
    void *it = json_object_iter(ev->json);
    const char *type = json_object_iter_key(it);
    json_t *body = json_object_iter_value(it);
    if (strcmp(ev->topic, T_SB) == 0 && (m->families & TS_MODEL_STORYBOOK))
        m_storybook(m, ev, type, body);
    else if (strcmp(ev->topic, T_USER) == 0 && (m->families & TS_MODEL_USER))
        m_user(m, ev, type, body);
    else if (strcmp(ev->topic, T_INV) == 0 && (m->families & TS_MODEL_INVENTORY))
        m_inventory(m, ev, type, body);
    else if (strcmp(ev->topic, T_BEACON) == 0 && (m->families & TS_MODEL_BEACON))
        m_beacon(m, ev, body);
}

void ts_model_apply_stream(ts_model *m, const ts_model_stream *s) {
    for (size_t i = 0; i < s->n; i++)
        ts_model_apply(m, &s->ev[i]);
}

const json_t *ts_model_expected(ts_model *m) {
    if (m->families & TS_MODEL_BEACON)
        m_beacon_finish(m);
    return m->expected;
}

/* ==== readers ================================================================= */

json_t *ts_model_read_redis(const char *url, char *err, size_t errlen) {
    redisContext *c = ts_redis_connect_sync(url, err, errlen);
    if (!c)
        return NULL;
    json_t *keys = json_array();
    char cursor[32] = "0";
    do {
        redisReply *r = redisCommand(c, "SCAN %s COUNT 1000", cursor);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            snprintf(err, errlen, "SCAN failed");
            if (r)
                freeReplyObject(r);
            json_decref(keys);
            redisFree(c);
            return NULL;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        /* "ts:..." keys are the runtime's bookkeeping, not views. */
        for (size_t i = 0; i < r->element[1]->elements; i++)
            if (strncmp(r->element[1]->element[i]->str, "ts:", 3) != 0)
                json_array_append_new(keys, json_string(r->element[1]->element[i]->str));
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    size_t n = json_array_size(keys);
    for (size_t i = 0; i < n; i++)
        redisAppendCommand(c, "TYPE %s", json_string_value(json_array_get(keys, i)));
    char **types = calloc(n + 1, sizeof(*types));
    for (size_t i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) == REDIS_OK && r)
            types[i] = strdup(r->str ? r->str : "?");
        if (r)
            freeReplyObject(r);
    }
    for (size_t i = 0; i < n; i++) {
        const char *k = json_string_value(json_array_get(keys, i));
        if (types[i] && strcmp(types[i], "zset") == 0)
            redisAppendCommand(c, "ZRANGE %s 0 -1 WITHSCORES", k);
        else
            redisAppendCommand(c, "GET %s", k);
    }
    json_t *out = json_object();
    for (size_t i = 0; i < n; i++) {
        const char *k = json_string_value(json_array_get(keys, i));
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r)
            continue;
        json_t *v = json_object();
        if (r->type == REDIS_REPLY_ARRAY) {
            json_t *z = json_object();
            for (size_t j = 0; j + 1 < r->elements; j += 2) {
                char *canon = m_member_canon(r->element[j]->str);
                json_object_set_new(z, canon, json_real(strtod(r->element[j + 1]->str, NULL)));
                free(canon);
            }
            json_object_set_new(v, "kind", json_string("zset"));
            json_object_set_new(v, "value", z);
        } else if (r->type == REDIS_REPLY_STRING) {
            json_t *doc = json_loads(r->str, JSON_DECODE_ANY, NULL);
            if (json_is_object(doc) || json_is_array(doc)) {
                json_object_set_new(v, "kind", json_string("json"));
                json_object_set_new(v, "value", doc);
            } else {
                json_decref(doc);
                json_object_set_new(v, "kind", json_string("str"));
                json_object_set_new(v, "value", json_string(r->str));
            }
        } else {
            json_object_set_new(v, "kind", json_string(types[i] ? types[i] : "?"));
        }
        json_object_set_new(out, k, v);
        freeReplyObject(r);
    }
    for (size_t i = 0; i < n; i++)
        free(types[i]);
    free(types);
    json_decref(keys);
    redisFree(c);
    return out;
}

json_t *ts_model_read_pg(const char *conninfo, const json_t *expected, char *err,
                         size_t errlen) {
    PGconn *pg = PQconnectdb(conninfo);
    if (PQstatus(pg) != CONNECTION_OK) {
        snprintf(err, errlen, "%s", PQerrorMessage(pg));
        PQfinish(pg);
        return NULL;
    }
    PQclear(PQexec(pg, "SET TimeZone = 'UTC'"));
    json_t *out = json_object();
    const char *table;
    json_t *unused;
    json_object_foreach(json_object_get(expected, "rows"), table, unused) {
        char sql[256];
        snprintf(sql, sizeof(sql), "SELECT to_jsonb(t)::text FROM %s t", table);
        PGresult *res = PQexec(pg, sql);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            snprintf(err, errlen, "%s: %s", table, PQerrorMessage(pg));
            PQclear(res);
            json_decref(out);
            PQfinish(pg);
            return NULL;
        }
        json_t *rows = json_array();
        for (int i = 0; i < PQntuples(res); i++)
            json_array_append_new(rows, json_loads(PQgetvalue(res, i, 0), 0, NULL));
        json_object_set_new(out, table, rows);
        PQclear(res);
    }
    PQfinish(pg);
    return out;
}

json_t *ts_model_decode_records(const char *schemas_dir, const char *subject,
                                rd_kafka_message_t *const *msgs, size_t n) {
    char err[512];
    ts_schemas *schemas = NULL;
    json_t *out = json_array();
    if (ts_schemas_load(schemas_dir, &schemas, err, sizeof(err)) != TS_OK)
        return out;
    ts_decoder *dec = ts_decoder_create(schemas, subject);
    for (size_t i = 0; i < n; i++) {
        const rd_kafka_message_t *msg = msgs[i];
        avro_value_t *rec = NULL;
        const char *type = NULL;
        json_t *r = json_object();
        json_object_set_new(r, "key", msg->key ? json_stringn(msg->key, msg->key_len) : json_null());
        json_object_set_new(r, "partition", json_integer(msg->partition));
        json_object_set_new(r, "offset", json_integer(msg->offset));
        if (dec && ts_decoder_decode(dec, msg->payload, msg->len, &rec, &type, err,
                                     sizeof(err)) == TS_OK) {
            json_object_set_new(r, "type", json_string(type));
            json_object_set_new(r, "value", ts_avro_to_json(rec));
        } else {
            json_object_set_new(r, "value", json_null());
        }
        json_array_append_new(out, r);
    }
    ts_decoder_destroy(dec);
    ts_schemas_destroy(schemas);
    return out;
}

/* ==== comparison ============================================================== */

/* Whether `s` is a time as Postgres or a view writes it; *ms gets it. */
static int m_is_time(const char *s, int64_t *ms) {
    return strlen(s) >= 19 && s[4] == '-' && s[10] == 'T' && ts_time_parse_iso(s, ms) == 0;
}

static int m_equal(const json_t *e, const json_t *a) {
    if (json_is_string(e) && strcmp(json_string_value(e), "$any") == 0)
        return a != NULL;
    if (!a)
        return 0;
    if (json_is_number(e) && json_is_number(a)) {
        double x = json_number_value(e), y = json_number_value(a);
        return fabs(x - y) <= 1e-9 * (fabs(x) > 1 ? fabs(x) : 1);
    }
    if (json_is_string(e) && json_is_string(a)) {
        if (strcmp(json_string_value(e), json_string_value(a)) == 0)
            return 1;
        int64_t x, y;
        /* Rows: Postgres renders times as "...+00:00"; views must be exact. */
        return m_is_time(json_string_value(e), &x) && m_is_time(json_string_value(a), &y) &&
               strchr(json_string_value(a), '+') && x == y;
    }
    if (json_is_array(e) && json_is_array(a)) {
        if (json_array_size(e) != json_array_size(a))
            return 0;
        for (size_t i = 0; i < json_array_size(e); i++)
            if (!m_equal(json_array_get(e, i), json_array_get(a, i)))
                return 0;
        return 1;
    }
    if (json_is_object(e) && json_is_object(a)) {
        if (json_object_size(e) != json_object_size(a))
            return 0;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)e, k, v) if (!m_equal(v, json_object_get(a, k))) return 0;
        return 1;
    }
    return json_equal((json_t *)e, (json_t *)a);
}

typedef struct m_report {
    FILE *out;
    size_t max, n;
} m_report;

static void m_diff(m_report *r, const char *what, const char *key, const json_t *e,
                   const json_t *a) {
    if (r->n++ >= r->max || !r->out)
        return;
    char *es = e ? json_dumps(e, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    char *as = a ? json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    fprintf(r->out, "DIFF %s %s\n  expected: %.600s\n  actual:   %.600s\n", what, key,
            es ? es : "(absent)", as ? as : "(absent)");
    free(es);
    free(as);
}

/* Offsets of the input records of (topic, key), for version checks:
 * "topic\x1fkey" -> [[offset, event_id], ...] in offset order. */
static json_t *m_offsets(const json_t *topics) {
    json_t *idx = json_object();
    const char *topic;
    json_t *recs;
    json_object_foreach((json_t *)topics, topic, recs) {
        size_t i;
        json_t *rec;
        json_array_foreach(recs, i, rec) {
            const char *key = jstr(rec, "key");
            if (!key)
                continue;
            char k[512];
            snprintf(k, sizeof(k), "%s\x1f%s", topic, key);
            json_t *ev_id = json_object_get(json_object_get(rec, "value"), "event_id");
            json_t *list = json_object_get(idx, k);
            if (!list) {
                list = json_array();
                json_object_set_new(idx, k, list);
            }
            json_array_append_new(list, json_pack("[IO]", (json_int_t)json_integer_value(
                                                              json_object_get(rec, "offset")),
                                                  ev_id ? ev_id : json_null()));
        }
    }
    return idx;
}

static int m_version_ok(const json_t *idx, const json_t *exp, json_int_t version, int have) {
    if (!have)
        return 0;
    json_t *fixed = json_object_get(exp, "vfixed");
    if (fixed)
        return version == json_integer_value(fixed);
    const char *topic = jstr(exp, "vtopic"), *key = jstr(exp, "vkey");
    char k[512];
    snprintf(k, sizeof(k), "%s\x1f%s", topic ? topic : "", key ? key : "");
    const json_t *list = topic ? json_object_get(idx, k) : NULL;
    if (!list)
        return version >= 0; /* offsets unknown: only the sign */
    const char *vmin = jstr(exp, "vmin");
    json_int_t lo = vmin ? -1 : 0;
    size_t i;
    json_t *e;
    json_array_foreach((json_t *)list, i, e) {
        if (vmin && lo < 0 && json_is_string(json_array_get(e, 1)) &&
            strcmp(json_string_value(json_array_get(e, 1)), vmin) == 0)
            lo = json_integer_value(json_array_get(e, 0));
    }
    if (lo < 0)
        return 0;
    json_array_foreach((json_t *)list, i, e) {
        if (json_integer_value(json_array_get(e, 0)) == version)
            return version >= lo;
    }
    return 0;
}

static const char *const m_pk_cols[][3] = {
    {"books", "book_id", NULL},          {"book_pages", "book_id", "page_no"},
    {"users", "user_id", NULL},          {"user_preferences", "user_id", NULL},
    {"products", "product_id", NULL},    {"purchases", "purchase_id", NULL},
    {"customer_identities", "event_id", NULL},
};

static void m_pk(const char *table, const json_t *row, char *out, size_t cap) {
    out[0] = '\0';
    for (size_t t = 0; t < sizeof(m_pk_cols) / sizeof(m_pk_cols[0]); t++) {
        if (strcmp(m_pk_cols[t][0], table) != 0)
            continue;
        for (int c = 1; c < 3 && m_pk_cols[t][c]; c++) {
            json_t *v = json_object_get(row, m_pk_cols[t][c]);
            char part[256];
            if (json_is_integer(v))
                snprintf(part, sizeof(part), "%lld", (long long)json_integer_value(v));
            else
                snprintf(part, sizeof(part), "%s", json_string_value(v) ? json_string_value(v) : "");
            size_t len = strlen(out);
            snprintf(out + len, cap - len, "%s%s", c > 1 ? "|" : "", part);
        }
    }
}

size_t ts_model_compare(const json_t *expected, const json_t *redis, const json_t *pg,
                        const json_t *topics, const char *const *ignore, FILE *out,
                        size_t max_report, ts_model_counts *counts) {
    m_report r = {.out = out, .max = max_report};
    ts_model_counts c = {0};
    json_t *idx = m_offsets(topics);
    const char *k;
    json_t *e;
    /* Views: no missing, no extra, equal values. */
    json_object_foreach(json_object_get(expected, "views"), k, e) {
        c.views++;
        json_t *a = json_object_get(redis, k);
        const char *kind = jstr(e, "kind");
        if (!a || strcmp(kind, jstr(a, "kind")) != 0) {
            m_diff(&r, "view", k, json_object_get(e, "value"), a ? json_object_get(a, "value") : NULL);
            continue;
        }
        json_t *ev = json_object_get(e, "value"), *av = json_object_get(a, "value");
        if (strcmp(kind, "json") == 0 && json_is_object(ev)) {
            json_t *copy = json_deep_copy(av);
            json_t *ver = json_object_get(copy, "version");
            int ok = m_version_ok(idx, e, json_integer_value(ver), json_is_integer(ver));
            json_object_del(copy, "version");
            if (!m_equal(ev, copy))
                m_diff(&r, "view", k, ev, av);
            else if (!ok)
                m_diff(&r, "view version", k, e, av);
            json_decref(copy);
        } else if (!m_equal(ev, av)) {
            m_diff(&r, "view", k, ev, av);
        }
    }
    json_object_foreach((json_t *)redis, k, e) {
        if (json_object_get(json_object_get(expected, "views"), k))
            continue;
        int skip = 0;
        for (size_t i = 0; ignore && ignore[i] && !skip; i++)
            skip = strncmp(k, ignore[i], strlen(ignore[i])) == 0;
        if (!skip)
            m_diff(&r, "extra view", k, NULL, json_object_get(e, "value"));
    }
    /* Rows, by primary key. */
    const char *table;
    json_t *exp_rows;
    json_object_foreach(json_object_get(expected, "rows"), table, exp_rows) {
        json_t *act = json_object();
        size_t i;
        json_t *row;
        json_array_foreach(json_object_get(pg, table), i, row) {
            char pk[512];
            m_pk(table, row, pk, sizeof(pk));
            json_object_set(act, pk, row);
        }
        char what[128];
        snprintf(what, sizeof(what), "row %s", table);
        json_object_foreach(exp_rows, k, e) {
            c.rows++;
            json_t *a = json_object_get(act, k);
            if (!m_equal(e, a))
                m_diff(&r, what, k, e, a);
        }
        json_object_foreach(act, k, e) {
            if (!json_object_get(exp_rows, k))
                m_diff(&r, what, k, NULL, e);
        }
        json_decref(act);
    }
    /* Output topics: every expected logical event present, duplicates only
     * with the same content, nothing unexpected. */
    json_t *exp_out;
    json_object_foreach(json_object_get(expected, "outputs"), table, exp_out) {
        json_t *found = json_object();
        size_t i;
        json_t *rec;
        char what[128];
        snprintf(what, sizeof(what), "output %s", table);
        json_array_foreach(json_object_get(topics, table), i, rec) {
            const char *id = jstr(json_object_get(rec, "value"), "event_id");
            json_t *x = id ? json_object_get(exp_out, id) : NULL;
            json_t *got = json_pack("{s:O,s:O,s:O}", "type", json_object_get(rec, "type"), "key",
                                    json_object_get(rec, "key"), "value",
                                    json_object_get(rec, "value"));
            if (!x || !m_equal(x, got))
                m_diff(&r, what, id ? id : "(no event_id)", x, got);
            else
                json_object_set_new(found, id, json_true());
            json_decref(got);
        }
        json_object_foreach(exp_out, k, e) {
            c.outputs++;
            if (!json_object_get(found, k))
                m_diff(&r, what, k, e, NULL);
        }
        json_decref(found);
    }
    /* DLQ: the set of rejected event ids. */
    json_t *exp_dlq;
    json_object_foreach(json_object_get(expected, "dlq"), table, exp_dlq) {
        char dlq[128];
        snprintf(dlq, sizeof(dlq), "%s.dlq", table);
        json_t *found = json_object();
        size_t i;
        json_t *rec;
        json_array_foreach(json_object_get(topics, dlq), i, rec) {
            const char *id = jstr(json_object_get(rec, "value"), "event_id");
            if (!id || !json_object_get(exp_dlq, id))
                m_diff(&r, dlq, id ? id : "(undecodable)", NULL, json_object_get(rec, "value"));
            else
                json_object_set_new(found, id, json_true());
        }
        json_object_foreach(exp_dlq, k, e) {
            c.dlq++;
            if (!json_object_get(found, k))
                m_diff(&r, dlq, k, e, NULL);
        }
        json_decref(found);
    }
    json_decref(idx);
    c.differences = r.n;
    if (counts)
        *counts = c;
    return r.n;
}
