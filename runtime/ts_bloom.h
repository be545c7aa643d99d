/* ts_bloom.h - a growing bloom filter over byte strings, in memory.
 *
 * Answers "certainly absent" or "maybe present" for keys added before, with
 * no false "absent": a task keeps the event ids it has applied in one, in
 * front of its dedup store, because nearly every lookup there is for an id
 * never seen and a RocksDB miss probes a filter in every sorted run (about a
 * fifth of the runtime's CPU in the 1M-event benchmark, PROFILE.md).
 *
 * Blocked layout: a key sets and tests bits in one 64-byte block (one cache
 * line), 16 bits of filter per key at capacity (~0.1-0.2% false "maybe"). The
 * filter grows by layers: when the newest is full, a twice larger one takes
 * new keys, and a lookup tests every layer, so a task that grows from
 * thousands to millions of ids tests a handful of lines. A layer that cannot
 * be allocated makes the filter answer "maybe" for every key from then on:
 * slower, never wrong.
 *
 * Keys are hashed once (ts_bloom_hash, XXH3 64-bit) so that a caller can
 * test and then add without hashing twice. Not thread-safe: one owner.
 */
#ifndef TS_BLOOM_H
#define TS_BLOOM_H

#include <stddef.h>
#include <stdint.h>

typedef struct ts_bloom ts_bloom;

/** A filter sized for `capacity` keys in its first layer (at least 1024).
 * NULL when out of memory. */
ts_bloom *ts_bloom_create(size_t capacity);
/** Frees; accepts NULL. */
void ts_bloom_destroy(ts_bloom *b);

/** The hash of a key, for ts_bloom_add and ts_bloom_may_contain. */
uint64_t ts_bloom_hash(const void *key, size_t len);
/** Adds a key by its hash. Out of memory for a new layer: the filter says
 * "maybe" to everything from then on (still correct). */
void ts_bloom_add(ts_bloom *b, uint64_t hash);
/** 0: the key was never added. 1: it may have been. */
int ts_bloom_may_contain(const ts_bloom *b, uint64_t hash);

/** Keys added, and bytes of filter held (for logs and metrics). */
size_t ts_bloom_count(const ts_bloom *b);
size_t ts_bloom_bytes(const ts_bloom *b);

#endif
