/* test_state.c - the RocksDB state (ts_state.c): a write batch applied
 * whole with the later of two ops on a key winning, a batch given back and
 * taken again that starts empty, and a scan during a batch that sees the
 * batch's own puts and deletes. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_state.h"
#include "ts_testenv.h"

static char dir[] = "/tmp/ts-state-XXXXXX";
static ts_state *st;

static void setup(void) {
    cr_assert(mkdtemp(dir));
    char err[256];
    cr_assert_eq(ts_state_open(dir, &st, err, sizeof(err)), TS_OK, "%s", err);
}

static void teardown(void) {
    ts_state_close(st);
    ts_testenv_rmtree(dir);
}

TestSuite(state, .init = setup, .fini = teardown);

static void put(ts_state_batch *b, const char *k, const char *v) {
    ts_state_batch_put(b, k, strlen(k), v, strlen(v));
}

/* The stored value of `k` as a string, "-" when absent. */
static const char *get(const char *k) {
    static char out[64];
    char *val = NULL;
    size_t len = 0;
    ts_err rc = ts_state_get(st, k, strlen(k), &val, &len);
    snprintf(out, sizeof(out), "%s", rc == TS_OK ? val : "-");
    free(val);
    return out;
}

Test(state, an_empty_batch_writes_nothing) {
    ts_state_batch *b = ts_state_batch_create();
    cr_assert_eq(ts_state_write(st, b), TS_OK);
    cr_expect_str_eq(get("Wa"), "-");
    ts_state_batch_destroy(b);
}

Test(state, a_batch_is_written_whole_and_the_later_op_on_a_key_wins) {
    ts_state_batch *b = ts_state_batch_create();
    put(b, "Wz", "1");
    put(b, "Wa", "1");
    put(b, "Wm", "1");
    put(b, "Wa", "2");
    ts_state_batch_delete(b, "Wm", 2);
    put(b, "Wq", "1");
    ts_state_batch_delete(b, "Wq", 2);
    put(b, "Wq", "3");
    cr_assert_eq(ts_state_write(st, b), TS_OK);
    cr_expect_str_eq(get("Wa"), "2");
    cr_expect_str_eq(get("Wm"), "-");
    cr_expect_str_eq(get("Wq"), "3");
    cr_expect_str_eq(get("Wz"), "1");
    ts_state_batch_destroy(b);
}

Test(state, a_batch_given_back_is_taken_again_empty) {
    ts_state_batch *b = ts_state_batch_take(st);
    put(b, "Wa", "1");
    put(b, "Wc", "1");
    cr_assert_eq(ts_state_write(st, b), TS_OK);
    ts_state_batch_give(st, b);
    /* Wc deleted by another batch: the spare's old put must not return. */
    ts_state_batch *other = ts_state_batch_create();
    ts_state_batch_delete(other, "Wc", 2);
    cr_assert_eq(ts_state_write(st, other), TS_OK);
    ts_state_batch_destroy(other);
    ts_state_batch *again = ts_state_batch_take(st);
    cr_expect_eq(again, b, "the spare is reused");
    put(again, "Wx", "9");
    cr_assert_eq(ts_state_write(st, again), TS_OK);
    cr_expect_str_eq(get("Wc"), "-", "nothing of the first batch is written again");
    cr_expect_str_eq(get("Wx"), "9");
    cr_expect_str_eq(get("Wa"), "1");
    ts_state_batch_give(st, again);
}

typedef struct seen {
    char keys[16][16], vals[16][16];
    size_t n, stop_after;
} seen;

static int collect(void *arg, const char *key, size_t klen, const char *val, size_t vlen) {
    seen *s = arg;
    snprintf(s->keys[s->n], sizeof(s->keys[0]), "%.*s", (int)klen, key);
    snprintf(s->vals[s->n], sizeof(s->vals[0]), "%.*s", (int)vlen, val);
    s->n++;
    return s->stop_after && s->n == s->stop_after;
}

static const char *value_of(const seen *s, const char *key) {
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->keys[i], key) == 0)
            return s->vals[i];
    return "-";
}

Test(state, a_scan_during_a_batch_sees_the_batch_own_writes) {
    ts_state_batch *b = ts_state_batch_create();
    put(b, "Wu-a", "1");
    put(b, "Wv-b", "1");
    put(b, "Wv-c", "1");
    put(b, "Wx-a", "1");
    cr_assert_eq(ts_state_write(st, b), TS_OK);
    ts_state_batch_destroy(b);

    b = ts_state_batch_create();
    ts_state_batch_delete(b, "Wv-b", 4); /* stored, deleted by the batch */
    put(b, "Wv-c", "2");                 /* stored, replaced by the batch */
    put(b, "Wv-d", "1");                 /* new */
    put(b, "Wv-e", "1");
    ts_state_batch_delete(b, "Wv-e", 4); /* new and deleted again */
    seen s = {0};
    cr_assert_eq(ts_state_batch_scan(st, b, "Wv-", 3, collect, &s), TS_OK);
    cr_expect_eq(s.n, 2, "%zu keys", s.n);
    cr_expect_str_eq(value_of(&s, "Wv-c"), "2");
    cr_expect_str_eq(value_of(&s, "Wv-d"), "1");
    cr_expect_str_eq(value_of(&s, "Wv-b"), "-");
    cr_expect_str_eq(value_of(&s, "Wv-e"), "-");

    seen first = {.stop_after = 1};
    cr_assert_eq(ts_state_batch_scan(st, b, "Wv-", 3, collect, &first), TS_OK);
    cr_expect_eq(first.n, 1, "the scan stops when told to");

    cr_assert_eq(ts_state_write(st, b), TS_OK);
    seen after = {0};
    cr_assert_eq(ts_state_scan(st, "Wv-", 3, collect, &after), TS_OK);
    cr_expect_eq(after.n, 2);
    cr_expect_str_eq(after.keys[0], "Wv-c", "a plain scan is in key order");
    cr_expect_str_eq(after.keys[1], "Wv-d");
    ts_state_batch_destroy(b);
}
