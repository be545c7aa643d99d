/* bench_restore.c - how fast a task's state comes back from its changelog.
 *
 * A changelog topic of BENCH_RESTORE_PARTS partitions is filled as ts_task
 * writes one (see ts_task.c, "local writes and the changelog"): per batch,
 * BENCH_RESTORE_BATCH records keyed tag + rest ('S' store 0x1f key for state,
 * 'V' view for the view mirror, two state records per mirror record) whose
 * values are the stream's own JSON bodies, then the batch's marker "M" =
 * [first][next][effects], the effects being a few view writes. The figures:
 *   - the raw consume ceiling of that topic (one assign-only consumer, the
 *     fetch settings of ts_restore, no RocksDB);
 *   - ts_restore of every partition at once, as an instance that was just
 *     given them does (the runtime starts one restore per partition on the
 *     libuv thread pool), from the first start to the last done callback;
 *   - ts_restore of one partition alone.
 * Each restore's result is checked: its position must be the partition's end
 * (the last record is a marker).
 *
 * The mock cluster keeps only ~5 MiB of record batches per partition, so the
 * records are spread over 16 partitions (1M records: ~62k each).
 */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bench.h"
#include "ts_effects.h"
#include "ts_kconf.h"
#include "ts_pending.h"
#include "ts_log.h"
#include "ts_restore.h"
#include "ts_state.h"

#define BENCH_RESTORE_TOPIC "bench-restore-changelog"
#define BENCH_RESTORE_PARTS 16
#define BENCH_RESTORE_BATCH 300 /* state records per batch (between markers) */

static json_t *bench_section(bench_ctx *b) { return json_object_get(b->results, "restore"); }

/* One marker value (ts_pending's marker form) with 5 view writes. */
static char *bench_marker(bench_ctx *b, size_t nj, int64_t first, int64_t next, size_t *len) {
    ts_effects *effs = ts_effects_create();
    char *val = NULL;
    for (int i = 0; i < 5 && effs; i++) {
        char key[64];
        snprintf(key, sizeof(key), "bench:view:%lld:%d", (long long)first, i);
        const char *json = b->msgs[((size_t)first + (size_t)i) % nj].json;
        ts_bytes k = ts_bytes_str(key), v = ts_bytes_str(json);
        ts_effects_add(effs, TS_EFF_VIEW_SET, &k, &v, NULL, NULL, 0);
    }
    ts_buf q = {0};
    if (effs) {
        ts_pending_begin(&q, first, next, effs);
        ts_bytes marker = q.failed ? (ts_bytes){NULL, 0} : ts_pending_marker(&q);
        if (marker.data && (val = malloc(marker.len))) {
            memcpy(val, marker.data, marker.len);
            *len = marker.len;
        }
    }
    ts_buf_close(&q);
    ts_effects_destroy(effs);
    return val;
}

/* Fills the changelog: `per_part` records per partition, batches closed by
 * markers. @returns 0, with the bytes (keys + values) produced in *bytes. */
static int bench_restore_fill(bench_ctx *b, size_t per_part, size_t *bytes) {
    size_t nj = 0;
    while (nj < b->n_msgs && b->msgs[nj].json)
        nj++;
    if (nj == 0)
        return -1;
    rd_kafka_t *prod = bench_producer(b, 50);
    if (!prod)
        return -1;
    *bytes = 0;
    char key[512];
    size_t j = 0;
    int rc = 0;
    for (int32_t p = 0; p < BENCH_RESTORE_PARTS && rc == 0; p++) {
        int64_t offset = 0, first = 0;
        size_t in_batch = 0;
        for (size_t i = 0; i < per_part && rc == 0; i++) {
            const char *val;
            size_t klen, vlen;
            char *marker = NULL;
            /* The partition ends with a marker, as a clean changelog does. */
            if (in_batch == BENCH_RESTORE_BATCH || i + 1 == per_part) {
                marker = bench_marker(b, nj, first, offset + 1000, &vlen);
                if (!marker) {
                    rc = -1;
                    break;
                }
                key[0] = 'M';
                klen = 1;
                val = marker;
                in_batch = 0;
                first = offset + 1;
            } else {
                const bench_msg *m = &b->msgs[j++ % nj];
                int n = in_batch % 3 == 2
                            ? snprintf(key, sizeof(key), "V%s:%s:%zu", "bench:view", m->key, i)
                            : snprintf(key, sizeof(key), "S%s%c%s#%zu", "state", 0x1f, m->key, i);
                klen = (size_t)n < sizeof(key) ? (size_t)n : sizeof(key) - 1;
                val = m->json;
                vlen = strlen(val);
                in_batch++;
            }
            rd_kafka_resp_err_t err;
            while ((err = rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(BENCH_RESTORE_TOPIC),
                                            RD_KAFKA_V_PARTITION(p), RD_KAFKA_V_KEY(key, klen),
                                            RD_KAFKA_V_VALUE((void *)val, vlen),
                                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                            RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
                rd_kafka_poll(prod, 10);
            free(marker);
            if (err) {
                fprintf(stderr, "bench: restore: produce: %s\n", rd_kafka_err2str(err));
                rc = -1;
            }
            rd_kafka_poll(prod, 0);
            *bytes += klen + vlen;
            offset++;
        }
    }
    if (rd_kafka_flush(prod, 120000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "bench: restore: produce did not finish\n");
        rc = -1;
    }
    /* The mock cluster drops a partition's oldest batches beyond ~5 MiB:
     * a changelog that lost its start would restore only its tail. */
    for (int32_t p = 0; p < BENCH_RESTORE_PARTS && rc == 0; p++) {
        int64_t low = -1, high = -1;
        if (rd_kafka_query_watermark_offsets(prod, BENCH_RESTORE_TOPIC, p, &low, &high, 10000) ||
            low != 0 || (size_t)high != per_part) {
            fprintf(stderr, "bench: restore: partition %d holds %lld..%lld, not 0..%zu\n", p,
                    (long long)low, (long long)high, per_part);
            rc = -1;
        }
    }
    rd_kafka_destroy(prod);
    return rc;
}

/* The consume ceiling: every partition, start to end, no RocksDB. */
static int bench_restore_consume(bench_ctx *b, size_t total, size_t bytes) {
    char err[512];
    rd_kafka_conf_t *conf = ts_kconf_create(ts_cluster_bootstraps(b->cluster), NULL, err,
                                            sizeof(err));
    if (!conf)
        return -1;
    /* The same fetch settings as ts_restore's consumer. */
    rd_kafka_conf_set(conf, "group.id", "bench-restore", NULL, 0);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", NULL, 0);
    rd_kafka_conf_set(conf, "fetch.max.bytes", "52428800", NULL, 0);
    rd_kafka_conf_set(conf, "max.partition.fetch.bytes", "16777216", NULL, 0);
    rd_kafka_conf_set(conf, "queued.min.messages", "500000", NULL, 0);
    rd_kafka_conf_set(conf, "fetch.wait.max.ms", "10", NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_poll_set_consumer(rk);
    double t0 = bench_now();
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(16);
    for (int p = 0; p < BENCH_RESTORE_PARTS; p++)
        rd_kafka_topic_partition_list_add(parts, BENCH_RESTORE_TOPIC, p)->offset = 0;
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(rk);
    enum { N = 4096 };
    rd_kafka_message_t **msgs = malloc(N * sizeof(*msgs));
    size_t got = 0;
    int eofs = 0;
    double deadline = bench_now() + 120;
    while (msgs && eofs < BENCH_RESTORE_PARTS && bench_now() < deadline) {
        ssize_t n = rd_kafka_consume_batch_queue(q, 100, msgs, N);
        for (ssize_t i = 0; i < n; i++) {
            if (msgs[i]->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
                eofs++;
            else if (!msgs[i]->err)
                got++;
            rd_kafka_message_destroy(msgs[i]);
        }
    }
    double dt = bench_now() - t0;
    free(msgs);
    rd_kafka_queue_destroy(q);
    rd_kafka_assign(rk, NULL);
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    json_t *r = bench_rate(got, dt);
    json_object_set_new(r, "mb_per_s", json_real(dt > 0 ? (double)bytes / 1e6 / dt : 0));
    json_object_set_new(bench_section(b), "consume", r);
    char note[160];
    snprintf(note, sizeof(note), "changelog, %d partitions, one consumer, no RocksDB, %.0f MB/s",
             BENCH_RESTORE_PARTS, dt > 0 ? (double)bytes / 1e6 / dt : 0);
    bench_row(b, "restore", "changelog_consume", dt > 0 ? (double)got / dt : 0, "records/s", note);
    if (got != total)
        fprintf(stderr, "bench: restore: consumed %zu of %zu records\n", got, total);
    return got == total ? 0 : -1;
}

typedef struct bench_restore_run {
    int pending;
    int failed;
    uint64_t records;
    int64_t want_position;
} bench_restore_run;

static void bench_restore_done(void *arg, ts_err status, const ts_restore_stats *stats) {
    bench_restore_run *run = arg;
    run->pending--;
    run->records += stats->records;
    if (status != TS_OK || stats->position != run->want_position) {
        fprintf(stderr, "bench: restore: %s, position %lld (want %lld)\n", ts_err_str(status),
                (long long)stats->position, (long long)run->want_position);
        run->failed = 1;
    }
}

/* Restores partitions [from, to) at once into a fresh database. */
static int bench_restore_once(bench_ctx *b, int32_t from, int32_t to, size_t per_part,
                              const char *dirname, double *secs, uint64_t *records) {
    char dir[256], err[512];
    snprintf(dir, sizeof(dir), "%s/%s", b->dir, dirname);
    ts_state *st = NULL;
    if (ts_state_open(dir, &st, err, sizeof(err)) != TS_OK) {
        fprintf(stderr, "bench: restore: %s\n", err);
        return -1;
    }
    ts_state_skip_wal(st); /* as the runtime's */
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* The last marker's "next" is its offset + 1000 (bench_restore_fill): a
     * position no changelog offset gives by accident. */
    bench_restore_run run = {0, 0, 0, (int64_t)per_part - 1 + 1000};
    double t0 = bench_now();
    for (int32_t p = from; p < to; p++) {
        char task[64];
        snprintf(task, sizeof(task), "restorebench/%d", p);
        ts_restore_spec spec = {
            .brokers = ts_cluster_bootstraps(b->cluster),
            .changelog_topic = BENCH_RESTORE_TOPIC,
            .partition = p,
            .task_id = task,
            .local_end = -1, /* no local state: restore */
            .state = st,
        };
        ts_restore *r;
        if (ts_restore_start(&loop, &spec, bench_restore_done, &run, &r) != TS_OK)
            run.failed = 1;
        else
            run.pending++;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    *secs = bench_now() - t0;
    *records = run.records;
    uv_loop_close(&loop);
    ts_state_close(st);
    return run.failed ? -1 : 0;
}

int bench_restore(bench_ctx *b) {
    size_t total = b->short_mode ? 50000 : 1000000;
    size_t per_part = total / BENCH_RESTORE_PARTS;
    total = per_part * BENCH_RESTORE_PARTS;
    ts_cluster_topic_create(b->cluster, BENCH_RESTORE_TOPIC, BENCH_RESTORE_PARTS);
    size_t bytes = 0;
    double t0 = bench_now();
    if (bench_restore_fill(b, per_part, &bytes) != 0)
        return -1;
    fprintf(stderr, "bench: restore: %zu changelog records (%.1f MB) produced in %.1f s\n", total,
            (double)bytes / 1e6, bench_now() - t0);
    if (bench_restore_consume(b, total, bytes) != 0)
        return -1;

    /* The restores log progress every second; that is for operators. */
    ts_log_set_level(TS_LOG_WARN);
    double secs = 0, one_secs = 0;
    uint64_t records = 0, one_records = 0;
    int rc = bench_restore_once(b, 0, BENCH_RESTORE_PARTS, per_part, "restore-all", &secs,
                                &records);
    if (rc == 0)
        rc = bench_restore_once(b, 0, 1, per_part, "restore-one", &one_secs, &one_records);
    ts_log_set_level(TS_LOG_INFO);
    if (rc != 0)
        return -1;

    char note[200];
    json_t *r = bench_rate(records, secs);
    json_object_set_new(r, "mb_per_s", json_real(secs > 0 ? (double)bytes / 1e6 / secs : 0));
    json_object_set_new(r, "partitions", json_integer(BENCH_RESTORE_PARTS));
    json_object_set_new(bench_section(b), "restore_all", r);
    snprintf(note, sizeof(note),
             "ts_restore, %d partitions at once into RocksDB, %.0f MB/s, %.2f s",
             BENCH_RESTORE_PARTS, secs > 0 ? (double)bytes / 1e6 / secs : 0, secs);
    bench_row(b, "restore", "restore_records", secs > 0 ? (double)records / secs : 0,
              "records/s", note);
    double one_bytes = (double)bytes / BENCH_RESTORE_PARTS;
    r = bench_rate(one_records, one_secs);
    json_object_set_new(r, "mb_per_s", json_real(one_secs > 0 ? one_bytes / 1e6 / one_secs : 0));
    json_object_set_new(bench_section(b), "restore_one", r);
    snprintf(note, sizeof(note), "ts_restore, one partition of %zu records alone, %.2f s",
             per_part, one_secs);
    bench_row(b, "restore", "restore_one_partition",
              one_secs > 0 ? (double)one_records / one_secs : 0, "records/s", note);
    return 0;
}
