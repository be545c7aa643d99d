/* ts_state.c - RocksDB behind the task's state (see ts_state.h).
 *
 * The database is tuned for many small keys written in batches: a shared LRU
 * block cache, bloom filters for point lookups, and a bounded write buffer.
 */
#include "ts_state.h"

#include <pthread.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_buf.h"
#include "ts_log.h"

/* How many used write batches are kept for reuse, and up to what size: one
 * per concurrent writer, and bounded so a rare huge batch gives its memory
 * back (see ts_state_batch_take). */
#define TS_STATE_SPARE_BATCHES 4
#define TS_STATE_SPARE_MAX_BYTES ((size_t)8 << 20)

struct ts_state {
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_cache_t *cache;
    rocksdb_block_based_table_options_t *table;
    rocksdb_readoptions_t *ropts;
    rocksdb_writeoptions_t *wopts;
    rocksdb_env_t *env;
    char *dir;
    /* Write batches already grown, emptied for the next input batch (see
     * ts_state_batch_take); taken and given back by any writing thread. */
    pthread_mutex_t spare_lock;
    ts_state_batch *spare[TS_STATE_SPARE_BATCHES];
    size_t n_spare;
};

/* A write batch: its operations in order, keys and values copied into one
 * buffer. It is written sorted by key: RocksDB's memtable inserts a batch's
 * keys one by one into a skip list and keeps the position of the previous
 * insert, so keys in ascending order cost a few comparisons each instead of
 * a search from the top (memtable inserts were ~12% of the runtime's CPU
 * with the batch in arrival order). A scan during the batch sees its own
 * operations (the view mirror relies on it) by looking through them. */
typedef struct ts_state_batch_op {
    size_t key, klen; /* offsets into bytes */
    size_t val, vlen; /* val SIZE_MAX: a delete */
    size_t seq;       /* order of arrival: the later op on a key wins */
} ts_state_batch_op;

struct ts_state_batch {
    ts_state_batch_op *ops;
    size_t n, cap;
    ts_buf bytes;
    int failed; /* out of memory: the batch is incomplete and must not be written */
    rocksdb_writebatch_t *wb; /* what ts_state_write hands RocksDB, kept cleared */
};

void ts_state_close(ts_state *st) {
    if (!st)
        return;
    if (st->db)
        rocksdb_close(st->db);
    if (st->ropts)
        rocksdb_readoptions_destroy(st->ropts);
    if (st->wopts)
        rocksdb_writeoptions_destroy(st->wopts);
    if (st->opts)
        rocksdb_options_destroy(st->opts);
    if (st->table)
        rocksdb_block_based_options_destroy(st->table);
    if (st->cache)
        rocksdb_cache_destroy(st->cache);
    if (st->env)
        rocksdb_env_destroy(st->env);
    for (size_t i = 0; i < st->n_spare; i++)
        ts_state_batch_destroy(st->spare[i]);
    pthread_mutex_destroy(&st->spare_lock);
    free(st->dir);
    free(st);
}

void ts_state_skip_wal(ts_state *st) {
    rocksdb_writeoptions_disable_WAL(st->wopts, 1);
}

ts_err ts_state_open(const char *dir, ts_state **out, char *err, size_t errlen) {
    ts_state *st = calloc(1, sizeof(*st));
    if (!st)
        return TS_E_NOMEM;
    pthread_mutex_init(&st->spare_lock, NULL);
    st->dir = strdup(dir);
    st->opts = rocksdb_options_create();
    st->cache = rocksdb_cache_create_lru(64u << 20);
    st->table = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(st->table, st->cache);
    rocksdb_block_based_options_set_filter_policy(st->table,
                                                  rocksdb_filterpolicy_create_bloom(10));
    rocksdb_options_set_block_based_table_factory(st->opts, st->table);
    rocksdb_options_set_create_if_missing(st->opts, 1);
    /* 64 MiB memtables, not 32: a document written again before its memtable
     * is flushed costs no flush or compaction, and fewer, larger files mean
     * fewer universal merges. The runtime's CPU per event in the benchmark's
     * 2M-event stream: 75.8 us (32 MiB), 62.7 (64), 60.3 (128); 8 MiB was
     * worse still on 1M events. Peak RSS +75 MiB (one DB per instance). */
    rocksdb_options_set_write_buffer_size(st->opts, 64u << 20);
    /* A bloom filter over the memtable's whole keys: most point lookups of a
     * task are for keys that do not exist (event ids not seen before), and
     * without it each one walks the memtable skip lists. */
    rocksdb_options_set_memtable_prefix_bloom_size_ratio(st->opts, 0.05);
    rocksdb_options_set_memtable_whole_key_filtering(st->opts, 1);
    rocksdb_options_set_max_write_buffer_number(st->opts, 3);
    /* Universal compaction merges sorted runs once there are this many (4 by
     * default). Most lookups are misses that the bloom filters answer, so more
     * runs cost little to read, while merging half as often saved ~7% of the
     * runtime's CPU in the 1M-event benchmark (35.8 -> 33.3 us per event,
     * interleaved runs; the state takes ~40% more disk between merges). */
    rocksdb_options_set_level0_file_num_compaction_trigger(st->opts, 8);
    /* No compression on levels 0 and 1: nearly every byte a task writes is
     * flushed to L0 and compacted into L1 soon after, and LZ4 there took ~4%
     * of the runtime's CPU under load. Deeper levels, which hold most of a
     * large state, keep LZ4. */
    int compression[7] = {rocksdb_no_compression, rocksdb_no_compression};
    for (int level = 2; level < 7; level++)
        compression[level] = rocksdb_lz4_compression;
    rocksdb_options_set_num_levels(st->opts, 7);
    rocksdb_options_set_compression_per_level(st->opts, compression, 7);
    /* Universal compaction: a task's writes are spread over its whole key
     * space (new users, books, event ids), so leveled compaction rewrote most
     * of L1 on every L0 compaction. In the 150k-event benchmark (560k events
     * with the latency probes) compactions wrote 315 MiB instead of 1575 MiB
     * and the state took 130 MiB on disk instead of 345. */
    rocksdb_options_set_compaction_style(st->opts, rocksdb_universal_compaction);
    /* Compactions run at the lowest CPU priority: they can wait, while the
     * loop and the batches being decided share the same cores with them and
     * a compaction running beside a batch shows up in event->view latency. */
    st->env = rocksdb_create_default_env();
    rocksdb_env_lower_thread_pool_cpu_priority(st->env);
    rocksdb_options_set_env(st->opts, st->env);
    rocksdb_options_increase_parallelism(st->opts, 2);
    st->ropts = rocksdb_readoptions_create();
    st->wopts = rocksdb_writeoptions_create();
    /* No fsync per batch: the WAL survives a process kill, which is the crash
     * the runtime promises to survive; machine loss is covered by changelogs. */
    rocksdb_writeoptions_set_sync(st->wopts, 0);
    /* When two tasks' batches are written at once, RocksDB inserts both into
     * the memtable concurrently, and each key then searches the skip list from
     * the top: the batch's keys are written sorted (ts_state_batch), so the
     * position of its previous key is a good start. At 10K latency probes/s
     * (small batches, often concurrent), concurrent memtable inserts took
     * ~1.7% instead of ~2.7% of the machine's samples, rocksdb_write 8.0%
     * instead of 8.7% (two interleaved pairs). */
    rocksdb_writeoptions_set_memtable_insert_hint_per_batch(st->wopts, 1);

    char *rerr = NULL;
    st->db = rocksdb_open(st->opts, dir, &rerr);
    if (!st->db) {
        snprintf(err, errlen, "cannot open state in %s: %s", dir, rerr ? rerr : "unknown");
        rocksdb_free(rerr);
        ts_state_close(st);
        return TS_E_STATE;
    }
    *out = st;
    return TS_OK;
}

ts_err ts_state_get(ts_state *st, const char *key, size_t klen, char **val, size_t *vlen) {
    char *rerr = NULL;
    size_t len = 0;
    char *v = rocksdb_get(st->db, st->ropts, key, klen, &len, &rerr);
    if (rerr) {
        ts_log_error("state", "get failed in %s: %s", st->dir, rerr);
        rocksdb_free(rerr);
        return TS_E_STATE;
    }
    if (!v)
        return TS_E_NOTFOUND;
    /* Hand out memory the caller frees with free(), not rocksdb_free(). */
    char *copy = malloc(len + 1);
    if (!copy) {
        rocksdb_free(v);
        return TS_E_NOMEM;
    }
    memcpy(copy, v, len);
    copy[len] = '\0';
    rocksdb_free(v);
    *val = copy;
    *vlen = len;
    return TS_OK;
}

ts_state_batch *ts_state_batch_create(void) { return calloc(1, sizeof(ts_state_batch)); }

void ts_state_batch_destroy(ts_state_batch *b) {
    if (!b)
        return;
    free(b->ops);
    ts_buf_close(&b->bytes);
    if (b->wb)
        rocksdb_writebatch_destroy(b->wb);
    free(b);
}

/* Batches are taken from the spares when there are some: a new one for every
 * input batch grew its buffers from empty by doubling, copying the bytes
 * about twice more and touching fresh pages, and so did RocksDB's write batch
 * (one string; filling it, rocksdb_writebatch_put, took 2.5-3.0% of the
 * runtime's samples end to end, 0.7-0.9% kept). A batch given back keeps its
 * memory; kept per task instead, each held a copy of the task's largest
 * batch (~90 MiB of peak RSS over the benchmark's 96 tasks). */
ts_state_batch *ts_state_batch_take(ts_state *st) {
    ts_state_batch *b = NULL;
    pthread_mutex_lock(&st->spare_lock);
    if (st->n_spare > 0)
        b = st->spare[--st->n_spare];
    pthread_mutex_unlock(&st->spare_lock);
    return b ? b : ts_state_batch_create();
}

void ts_state_batch_give(ts_state *st, ts_state_batch *b) {
    if (!b)
        return;
    if (b->bytes.cap <= TS_STATE_SPARE_MAX_BYTES) {
        b->n = 0;
        b->failed = 0;
        ts_buf_reset(&b->bytes);
        if (b->wb)
            rocksdb_writebatch_clear(b->wb);
        pthread_mutex_lock(&st->spare_lock);
        if (st->n_spare < TS_STATE_SPARE_BATCHES) {
            st->spare[st->n_spare++] = b;
            b = NULL;
        }
        pthread_mutex_unlock(&st->spare_lock);
    }
    ts_state_batch_destroy(b);
}

static void ts_state_batch_add(ts_state_batch *b, const char *key, size_t klen, const char *val,
                               size_t vlen) {
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        ts_state_batch_op *ops = realloc(b->ops, cap * sizeof(*ops));
        if (!ops) {
            b->failed = 1;
            return;
        }
        b->ops = ops;
        b->cap = cap;
    }
    ts_state_batch_op *op = &b->ops[b->n];
    *op = (ts_state_batch_op){b->bytes.len, klen, SIZE_MAX, 0, b->n};
    ts_buf_put(&b->bytes, key, klen);
    if (val) {
        op->val = b->bytes.len;
        op->vlen = vlen;
        ts_buf_put(&b->bytes, val, vlen);
    }
    if (b->bytes.failed)
        b->failed = 1;
    else
        b->n++;
}

void ts_state_batch_put(ts_state_batch *b, const char *key, size_t klen, const char *val,
                        size_t vlen) {
    ts_state_batch_add(b, key, klen, val ? val : "", vlen);
}

void ts_state_batch_delete(ts_state_batch *b, const char *key, size_t klen) {
    ts_state_batch_add(b, key, klen, NULL, 0);
}

static int ts_state_key_cmp(const char *a, size_t alen, const char *b, size_t blen) {
    int c = memcmp(a, b, alen < blen ? alen : blen);
    return c ? c : (alen > blen) - (alen < blen);
}

/* qsort's comparator has no context argument: the bytes of the batch being
 * sorted, per thread (batches are written from several pool threads). */
static _Thread_local const char *ts_state_sorting;

static int ts_state_op_cmp(const void *pa, const void *pb) {
    const ts_state_batch_op *a = pa, *b = pb;
    int c = ts_state_key_cmp(ts_state_sorting + a->key, a->klen, ts_state_sorting + b->key,
                             b->klen);
    return c ? c : (a->seq > b->seq) - (a->seq < b->seq);
}

ts_err ts_state_write(ts_state *st, ts_state_batch *b) {
    if (b->failed)
        return TS_E_NOMEM;
    const char *bytes = b->bytes.data;
    if (b->n > 1) { /* an empty batch has no ops array at all */
        ts_state_sorting = bytes;
        qsort(b->ops, b->n, sizeof(*b->ops), ts_state_op_cmp);
        ts_state_sorting = NULL;
    }
    /* The ops are sorted now: a scan of this batch still works (it does not
     * rely on order), and the last op of each key is the one written. */
    for (size_t i = 0; i < b->n; i++)
        b->ops[i].seq = i;
    if (!b->wb && !(b->wb = rocksdb_writebatch_create()))
        return TS_E_NOMEM;
    rocksdb_writebatch_t *wb = b->wb;
    for (size_t i = 0; i < b->n; i++) {
        const ts_state_batch_op *op = &b->ops[i];
        if (i + 1 < b->n && ts_state_key_cmp(bytes + op->key, op->klen, bytes + b->ops[i + 1].key,
                                             b->ops[i + 1].klen) == 0)
            continue; /* a later op on the same key wins */
        if (op->val == SIZE_MAX)
            rocksdb_writebatch_delete(wb, bytes + op->key, op->klen);
        else
            rocksdb_writebatch_put(wb, bytes + op->key, op->klen, bytes + op->val, op->vlen);
    }
    char *rerr = NULL;
    rocksdb_write(st->db, st->wopts, wb, &rerr);
    if (rerr) {
        ts_log_error("state", "write failed in %s: %s", st->dir, rerr);
        rocksdb_free(rerr);
        return TS_E_STATE;
    }
    return TS_OK;
}

ts_err ts_state_scan(ts_state *st, const char *prefix, size_t plen,
                     int (*fn)(void *arg, const char *key, size_t klen, const char *val,
                               size_t vlen),
                     void *arg) {
    return ts_state_batch_scan(st, NULL, prefix, plen, fn, arg);
}

/* The batch's newest op on `key`, or NULL. */
static const ts_state_batch_op *ts_state_batch_find(const ts_state_batch *b, const char *key,
                                                    size_t klen) {
    const ts_state_batch_op *found = NULL;
    for (size_t i = 0; i < b->n; i++) {
        const ts_state_batch_op *op = &b->ops[i];
        if (op->klen == klen && memcmp(b->bytes.data + op->key, key, klen) == 0 &&
            (!found || op->seq > found->seq))
            found = op;
    }
    return found;
}

static ts_err ts_state_iter_error(ts_state *st, rocksdb_iterator_t *it) {
    char *rerr = NULL;
    rocksdb_iter_get_error(it, &rerr);
    rocksdb_iter_destroy(it);
    if (!rerr)
        return TS_OK;
    ts_log_error("state", "scan failed in %s: %s", st->dir, rerr);
    rocksdb_free(rerr);
    return TS_E_STATE;
}

/* With a batch: the stored keys the batch does not touch, in key order, then
 * the batch's keys whose newest op is a put. A batch holds one input batch's
 * writes (a few thousand at most), so looking through it is cheap next to
 * the RocksDB iterator. */
ts_err ts_state_batch_scan(ts_state *st, ts_state_batch *b, const char *prefix, size_t plen,
                           int (*fn)(void *arg, const char *key, size_t klen, const char *val,
                                     size_t vlen),
                           void *arg) {
    rocksdb_iterator_t *it = rocksdb_create_iterator(st->db, st->ropts);
    int stopped = 0;
    for (rocksdb_iter_seek(it, prefix, plen); rocksdb_iter_valid(it) && !stopped;
         rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *key = rocksdb_iter_key(it, &klen);
        if (klen < plen || memcmp(key, prefix, plen) != 0)
            break;
        if (b && ts_state_batch_find(b, key, klen))
            continue;
        const char *val = rocksdb_iter_value(it, &vlen);
        stopped = fn(arg, key, klen, val, vlen);
    }
    ts_err rc = ts_state_iter_error(st, it);
    for (size_t i = 0; b && rc == TS_OK && !stopped && i < b->n; i++) {
        const ts_state_batch_op *op = &b->ops[i];
        const char *key = b->bytes.data + op->key;
        if (op->klen < plen || memcmp(key, prefix, plen) != 0 ||
            ts_state_batch_find(b, key, op->klen) != op || op->val == SIZE_MAX)
            continue;
        stopped = fn(arg, key, op->klen, b->bytes.data + op->val, op->vlen);
    }
    return rc;
}

typedef struct ts_state_doomed {
    ts_state *st;
    ts_state_batch *batch;
    size_t n;
    ts_err rc;
} ts_state_doomed;

static int ts_state_doom(void *arg, const char *key, size_t klen, const char *val, size_t vlen) {
    (void)val;
    (void)vlen;
    ts_state_doomed *d = arg;
    ts_state_batch_delete(d->batch, key, klen);
    if (++d->n % 10000 == 0) {
        /* Bound the batch; deleting behind the iterator is safe in RocksDB
         * (the iterator reads a snapshot). */
        d->rc = ts_state_write(d->st, d->batch);
        ts_state_batch_destroy(d->batch);
        d->batch = ts_state_batch_create();
        return d->rc != TS_OK || !d->batch;
    }
    return 0;
}

ts_err ts_state_delete_prefix(ts_state *st, const char *prefix, size_t plen) {
    ts_state_doomed d = {st, ts_state_batch_create(), 0, TS_OK};
    if (!d.batch)
        return TS_E_NOMEM;
    ts_err rc = ts_state_scan(st, prefix, plen, ts_state_doom, &d);
    if (rc == TS_OK)
        rc = d.rc;
    if (rc == TS_OK && d.batch)
        rc = ts_state_write(st, d.batch);
    ts_state_batch_destroy(d.batch);
    return rc;
}

ts_err ts_state_write_ops(ts_state *st, const ts_state_op *ops, size_t n) {
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    for (size_t i = 0; i < n; i++) {
        if (ops[i].val)
            rocksdb_writebatch_put(wb, ops[i].key, ops[i].klen, ops[i].val, ops[i].vlen);
        else
            rocksdb_writebatch_delete(wb, ops[i].key, ops[i].klen);
    }
    char *rerr = NULL;
    rocksdb_write(st->db, st->wopts, wb, &rerr);
    rocksdb_writebatch_destroy(wb);
    if (rerr) {
        ts_log_error("state", "write failed in %s: %s", st->dir, rerr);
        rocksdb_free(rerr);
        return TS_E_STATE;
    }
    return TS_OK;
}

uint64_t ts_state_disk_bytes(ts_state *st) {
    char *v = rocksdb_property_value(st->db, "rocksdb.total-sst-files-size");
    uint64_t n = v ? strtoull(v, NULL, 10) : 0;
    rocksdb_free(v);
    return n;
}
