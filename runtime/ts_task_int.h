/* ts_task_int.h - what the task's files share and no one else sees:
 * ts_task.c (the task: its buffer, batches, the hand-over to the pool,
 * flushes, acknowledgements and revocation), ts_task_apply.c (a batch's
 * records through the processor, and the largest Kafka message),
 * ts_task_changelog.c (a batch decided: its write batch and changelog
 * records), ts_task_recover.c (what a task finds stored at start) and
 * ts_task_rebuild.c (the views written again from the mirror). The API is
 * ts_task.h; the functions here are named ts_task__ to tell them from it.
 *
 * Threading: as ts_task.h.
 */
#ifndef TS_TASK_INT_H
#define TS_TASK_INT_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "ts_avro.h"
#include "ts_bloom.h"
#include "ts_buf.h"
#include "ts_ctx.h"
#include "ts_effects.h"
#include "ts_mirror.h"
#include "ts_sink.h"
#include "ts_state.h"
#include "ts_task.h"

#define TS_TASK_SEEN_STORE "_seen" /* event ids already applied, for dedup */

struct ts_task {
    const ts_task_host *host;
    const ts_task_spec *spec;
    int32_t partition;
    char id[160];
    char owner[192]; /* "<instance>@<start ms>#<n>", see ts_flush.owner */

    void *proc; /* the processor instance */
    ts_effects *effs;
    ts_ctx *ctx;

    char *state_prefix; /* 'S' id 0x00 */
    size_t state_prefix_len;
    char pos_key[170];
    size_t pos_key_len;
    char pending_key[170];
    size_t pending_key_len;
    char end_key[170]; /* 'E': the changelog end after the last acknowledged batch */
    size_t end_key_len;
    char undo_key[170]; /* 'U': changelog keys to delete ahead of the next batch */
    size_t undo_key_len;
    ts_buf undo;        /* its value, loaded at start (empty: none) */
    ts_mirror mirror; /* the views' copy in the state */
    char *keybuf;     /* scratch: prefix + ctx key */
    size_t keycap;

    int64_t position; /* next input offset to process; -1: none yet */
    int64_t acked;    /* next input offset acknowledged by every sink */
    int64_t batch_event_ms; /* newest record timestamp of the batch in flight */
    int64_t acked_event_ms; /* newest record timestamp acknowledged (freshness) */
    int64_t acked_wall_ms;  /* wall clock of the last acknowledgement */
    ts_task_batch stats;          /* the batch in flight, for host->batched */
    struct timespec batch_start;  /* monotonic */

    rd_kafka_message_t **buf; /* records waiting, in offset order */
    size_t buf_head, buf_len, buf_cap;
    size_t buf_bytes; /* keys and values of the records waiting */
    int paused;

    int busy;       /* a flush is in flight */
    int stopped;    /* failed, revoked or shut down: take nothing more */
    int revoked;
    ts_flush flush; /* the flush in flight */
    size_t acks_wanted, acks_got;
    int flush_failed;
    int changelog_failed; /* out of memory while building the changelog */
    int oversize;         /* the batch made a changelog record over the limit */
    int careful;          /* re-deciding such a batch: every event is checked */
    int64_t gap_at;       /* the position a gap was last seen at */
    int gap_seeks;        /* times the source was sent back there */

    int rebuild_wanted;       /* re-materialize the views at the next idle moment */
    int rebuilding;           /* a rebuild flush is in flight */
    ts_effects *rebuild_effs; /* the views read back from the mirror */
    char *ckeybuf;            /* scratch: a changelog record's key */
    size_t ckeycap;
    ts_buf seen_group;        /* the batch's event ids for the changelog, NUL-separated */
    ts_bloom *seen_filter;    /* every event id in the "_seen" store (and maybe others);
                               * NULL until the first batch loads it */
    ts_bloom *key_filter;     /* every key of the task's other stores (and maybe
                               * others), loaded with seen_filter */
    size_t seen_filter_bytes; /* its size after the last decided batch, for the loop */
    size_t key_filter_bytes;  /* likewise */
    size_t batch_id_bytes;    /* what the batch's event ids add to its group record */
    ts_buf pending;           /* the pending record (ts_pending.h), while a batch is decided */

    ts_decoder *decoder; /* the task's own codecs */
    struct ts_task_encoder {
        const char *topic;
        ts_encoder *enc;
    } encoders[8];
    size_t n_encoders;

    uv_work_t work;             /* step 1 on the pool */
    rd_kafka_message_t **batch; /* the records of the batch being decided */
    size_t batch_len, batch_cap, batch_done;
    int64_t batch_first, batch_next;
    ts_err batch_rc;
    int64_t batch_failed_at; /* offset of the record that failed the batch */
    int pending_acked; /* the stored pending effects are acknowledged, not deleted yet */
    int64_t flush_end;     /* ts_flush.emitted_end of the flush in flight, -1: none */
    int64_t changelog_end; /* of the last acknowledged batch, -1: none */
    int end_unstored;      /* changelog_end is newer than the stored 'E' */
    int held;          /* a batch decided after the revocation, not flushed */
    ts_flush rebuild_flush;
};

/* ---- ts_task.c ------------------------------------------------------------ */

/** The local key of state key `key` ('S' id 0x00 key) in the task's scratch
 * buffer, valid until the next call; NULL when out of memory. */
char *ts_task__state_key(ts_task *task, const char *key, size_t klen, size_t *len);
/** Puts the changelog end of the last acknowledged batch into `wb`, when the
 * stored one is older. */
void ts_task__store_end(ts_task *task, ts_state_batch *wb);
/** Step 2: hands the decided effects to every sink. */
void ts_task__flush_start(ts_task *task);
/** Stops the task for good and reports it to the host. */
void ts_task__fail(ts_task *task, ts_err err);
/** Milliseconds since `start` on the monotonic clock. */
double ts_task__ms_since(const struct timespec *start);

/* ---- ts_task_apply.c ------------------------------------------------------ */

/** Step 1, on a pool thread: the processor over the batch's records, then the
 * batch decided (ts_task__decide); the outcome in task->batch_*. */
void ts_task__decide_records(ts_task *task);
/** The largest changelog value (with its key) that fits a message. */
size_t ts_task__record_room(const ts_task *task);

/* ---- ts_task_changelog.c -------------------------------------------------- */

/** Writes the batch of offsets first..next-1 (state, position, view mirror,
 * pending effects) in one RocksDB write batch, with its changelog records.
 * TS_E_REJECT: a record over the largest Kafka message (task->oversize). */
ts_err ts_task__decide(ts_task *task, int64_t first, int64_t next);
/** The view mirror's write (ts_mirror.h): a local write and its changelog record. */
void ts_task__mirror_write(void *arg, ts_state_batch *wb, const char *key, size_t klen,
                           const char *val, size_t vlen);

/* ---- ts_task_recover.c ---------------------------------------------------- */

/** Reads the task's stored position, changelog keys to undo and pending effects. */
ts_err ts_task__load(ts_task *task, char *err, size_t errlen);
/** Loads the ids of the task's "_seen" store into task->seen_filter and the
 * keys of its other stores into task->key_filter: on a pool thread, before
 * the task's first batch (after any restore). */
ts_err ts_task__load_filters(ts_task *task);
/** Whether local key `key` (store, 0x1f, key) is in the task's "_seen" store. */
int ts_task__is_seen_key(const char *key, size_t klen);

/* ---- ts_task_rebuild.c ---------------------------------------------------- */

/** Reads the views from the mirror and hands them to the view sink. */
void ts_task__rebuild_start(ts_task *task);

#endif
