/* ts_bloom.c - a growing, blocked bloom filter (see ts_bloom.h). */
#include "ts_bloom.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define TS_BLOOM_BLOCK_BITS 512 /* one 64-byte cache line */
#define TS_BLOOM_BITS_PER_KEY 16
#define TS_BLOOM_PROBES 10 /* bits set per key, all in its block */
#define TS_BLOOM_MIN_CAPACITY 1024
/* Each layer holds twice the one before: 40 layers are more keys than memory. */
#define TS_BLOOM_MAX_LAYERS 40

typedef struct ts_bloom_layer {
    uint64_t *words; /* nblocks blocks of 8 words */
    size_t nblocks;
    size_t capacity, count;
} ts_bloom_layer;

struct ts_bloom {
    ts_bloom_layer layers[TS_BLOOM_MAX_LAYERS];
    size_t n_layers;
    size_t count;
    int saturated; /* a layer could not be allocated: everything is "maybe" */
};

static int ts_bloom_layer_init(ts_bloom_layer *l, size_t capacity) {
    size_t nblocks = (capacity * TS_BLOOM_BITS_PER_KEY + TS_BLOOM_BLOCK_BITS - 1) /
                     TS_BLOOM_BLOCK_BITS;
    /* Cache-line aligned, so that a key's block is one line. */
    uint64_t *words = aligned_alloc(64, nblocks * 64);
    if (!words)
        return -1;
    memset(words, 0, nblocks * 64);
    *l = (ts_bloom_layer){words, nblocks, capacity, 0};
    return 0;
}

ts_bloom *ts_bloom_create(size_t capacity) {
    ts_bloom *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    if (capacity < TS_BLOOM_MIN_CAPACITY)
        capacity = TS_BLOOM_MIN_CAPACITY;
    if (ts_bloom_layer_init(&b->layers[0], capacity) != 0) {
        free(b);
        return NULL;
    }
    b->n_layers = 1;
    return b;
}

void ts_bloom_destroy(ts_bloom *b) {
    if (!b)
        return;
    for (size_t i = 0; i < b->n_layers; i++)
        free(b->layers[i].words);
    free(b);
}

uint64_t ts_bloom_hash(const void *key, size_t len) { return XXH3_64bits(key, len); }

/* The key's block in a layer: the hash's upper half scaled to the block
 * count (multiply-shift, no division). Its bits within the block: the lower
 * half, multiplied by the golden ratio for each probe, the top 9 bits each
 * time (as RocksDB's FastLocalBloom does). The layer's number shifts the
 * sequence, so that layers' false positives are not the same keys'. */
static uint64_t *ts_bloom_block(const ts_bloom_layer *l, uint64_t hash) {
    size_t block = (size_t)(((hash >> 32) * (uint64_t)l->nblocks) >> 32);
    return l->words + block * (TS_BLOOM_BLOCK_BITS / 64);
}

static uint32_t ts_bloom_seed(uint64_t hash, size_t layer) {
    return (uint32_t)hash ^ (uint32_t)(layer * 0x85ebca6bu);
}

/* The next probe's bit in the block (0..511), advancing the sequence. */
static uint32_t ts_bloom_next_bit(uint32_t *a) {
    uint32_t bit = *a >> 23;
    *a *= 0x9e3779b9u;
    return bit;
}

void ts_bloom_add(ts_bloom *b, uint64_t hash) {
    b->count++;
    if (b->saturated)
        return;
    ts_bloom_layer *l = &b->layers[b->n_layers - 1];
    if (l->count >= l->capacity) {
        if (b->n_layers == TS_BLOOM_MAX_LAYERS ||
            ts_bloom_layer_init(&b->layers[b->n_layers], l->capacity * 2) != 0) {
            b->saturated = 1;
            return;
        }
        l = &b->layers[b->n_layers++];
    }
    uint64_t *block = ts_bloom_block(l, hash);
    uint32_t a = ts_bloom_seed(hash, b->n_layers - 1);
    for (int i = 0; i < TS_BLOOM_PROBES; i++) {
        uint32_t bit = ts_bloom_next_bit(&a);
        block[bit >> 6] |= (uint64_t)1 << (bit & 63);
    }
    l->count++;
}

int ts_bloom_may_contain(const ts_bloom *b, uint64_t hash) {
    if (b->saturated)
        return 1;
    /* The newest layer first: a redelivery is usually of a recent event. */
    for (size_t i = b->n_layers; i-- > 0;) {
        const uint64_t *block = ts_bloom_block(&b->layers[i], hash);
        uint32_t a = ts_bloom_seed(hash, i);
        int all = 1;
        for (int p = 0; p < TS_BLOOM_PROBES && all; p++) {
            uint32_t bit = ts_bloom_next_bit(&a);
            all = (block[bit >> 6] >> (bit & 63)) & 1;
        }
        if (all)
            return 1;
    }
    return 0;
}

size_t ts_bloom_count(const ts_bloom *b) { return b->count; }

size_t ts_bloom_bytes(const ts_bloom *b) {
    size_t bytes = 0;
    for (size_t i = 0; i < b->n_layers; i++)
        bytes += b->layers[i].nblocks * 64;
    return bytes;
}
