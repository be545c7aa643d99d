/* test_bloom.c - the dedup filter never says "absent" for a key it was given,
 * rarely says "maybe" for others, and grows by layers. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "ts_bloom.h"

static uint64_t key_hash(const char *prefix, size_t i) {
    char key[64];
    int len = snprintf(key, sizeof(key), "%s-%zu", prefix, i);
    return ts_bloom_hash(key, (size_t)len);
}

/* Adds n keys "in-<i>", checks every one is "maybe", and returns how many of
 * n other keys "out-<i>" are "maybe" too. */
static size_t false_maybes(ts_bloom *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        ts_bloom_add(b, key_hash("in", i));
    for (size_t i = 0; i < n; i++)
        cr_assert(ts_bloom_may_contain(b, key_hash("in", i)), "key in-%zu lost", i);
    size_t maybe = 0;
    for (size_t i = 0; i < n; i++)
        maybe += (size_t)ts_bloom_may_contain(b, key_hash("out", i));
    return maybe;
}

Test(bloom, at_capacity_no_key_is_lost_and_few_others_are_maybe) {
    ts_bloom *b = ts_bloom_create(100000);
    cr_assert_not_null(b);
    size_t maybe = false_maybes(b, 100000);
    /* 16 bits per key, 10 probes in a cache line: ~0.1-0.2%. */
    cr_assert_lt(maybe, 400, "%zu of 100000 unseen keys were 'maybe'", maybe);
    cr_assert_eq(ts_bloom_count(b), 100000);
    cr_assert_eq(ts_bloom_bytes(b), 100000 * 16 / 8, "one layer, 2 bytes per key");
    ts_bloom_destroy(b);
}

Test(bloom, grows_by_layers_past_its_first_capacity) {
    ts_bloom *b = ts_bloom_create(1000); /* rounded up to 1024 */
    size_t maybe = false_maybes(b, 300000);
    /* Layers of 1K, 2K, ... 256K keys: nine layers tested per unseen key. */
    cr_assert_lt(maybe, 3000, "%zu of 300000 unseen keys were 'maybe'", maybe);
    cr_assert_gt(ts_bloom_bytes(b), 300000 * 2, "grew past its first layer");
    cr_assert_lt(ts_bloom_bytes(b), 1200000, "each layer twice the one before");
    ts_bloom_destroy(b);
}

Test(bloom, an_empty_filter_says_absent) {
    ts_bloom *b = ts_bloom_create(0);
    for (size_t i = 0; i < 1000; i++)
        cr_assert(!ts_bloom_may_contain(b, key_hash("any", i)));
    cr_assert_eq(ts_bloom_hash("e1", 2), ts_bloom_hash("e1", 2));
    cr_assert_neq(ts_bloom_hash("e1", 2), ts_bloom_hash("e2", 2));
    ts_bloom_destroy(b);
    ts_bloom_destroy(NULL);
}
