/* ts_pending.c - the stored form of a decided batch's effects (see ts_pending.h).
 *
 * A changelog record of a full form: u8 'R' + key field (a reference), or
 * u8 'I' + key field + value field (inline). The changelog key stands for a
 * local key of the task; resolving it is the caller's business. */
#include "ts_pending.h"

#include <stdlib.h>
#include <string.h>

#define TS_PENDING_MAGIC "TSQ1"
#define TS_PENDING_HEAD 8 /* magic + u32 blob length, before the marker form */
#define TS_PENDING_OFFSETS 16

void ts_pending_begin(ts_buf *q, int64_t first, int64_t next, const ts_effects *effs) {
    ts_buf_reset(q);
    uint32_t blob_len = 0;
    ts_buf_put(q, TS_PENDING_MAGIC, 4);
    ts_buf_put(q, &blob_len, 4);
    ts_buf_put_be64(q, first);
    ts_buf_put_be64(q, next);
    size_t before = q->len;
    ts_effects_encode_to(effs, q, TS_EFFECTS_VIEWS_BY_KEY);
    if (!q->failed) {
        blob_len = (uint32_t)(q->len - before);
        memcpy(q->data + 4, &blob_len, 4);
    }
}

void ts_pending_begin_marker(ts_buf *q, const ts_bytes *marker) {
    ts_buf_reset(q);
    uint32_t blob_len = (uint32_t)(marker->len - TS_PENDING_OFFSETS);
    ts_buf_put(q, TS_PENDING_MAGIC, 4);
    ts_buf_put(q, &blob_len, 4);
    ts_buf_put(q, marker->data, marker->len);
}

void ts_pending_add_ref(ts_buf *q, const ts_bytes *changelog_key) {
    ts_buf_put(q, "R", 1);
    ts_buf_field(q, changelog_key);
}

void ts_pending_add_inline(ts_buf *q, const ts_bytes *changelog_key, const ts_bytes *value) {
    ts_buf_put(q, "I", 1);
    ts_buf_field(q, changelog_key);
    ts_buf_field(q, value);
}

ts_bytes ts_pending_marker(const ts_buf *q) {
    uint32_t blob_len;
    memcpy(&blob_len, q->data + 4, 4);
    return (ts_bytes){q->data + TS_PENDING_HEAD, TS_PENDING_OFFSETS + blob_len};
}

/* Adds one changelog record (value absent: a tombstone). */
static ts_err ts_pending_emit(ts_effects *effs, const ts_pending_changelog *cl,
                              const ts_bytes *key, const ts_bytes *value) {
    ts_bytes topic = ts_bytes_str(cl->topic);
    return ts_effects_add(effs, TS_EFF_EMIT, &topic, key, value, NULL,
                          (double)cl->partition + 1);
}

static ts_err ts_pending_decode_records(ts_reader *r, const ts_pending_changelog *cl,
                                        ts_effects *effs) {
    while (ts_reader_left(r) > 0) {
        char form;
        ts_bytes key, value;
        if (ts_reader_take(r, &form, 1) || ts_reader_field(r, &key) || !key.data)
            return TS_E_DECODE;
        if (form == 'I') {
            if (ts_reader_field(r, &value))
                return TS_E_DECODE;
            ts_err rc = ts_pending_emit(effs, cl, &key, &value);
            if (rc != TS_OK)
                return rc;
            continue;
        }
        if (form != 'R')
            return TS_E_DECODE;
        char *val = NULL;
        size_t vlen = 0;
        ts_err rc = cl->resolve(cl->arg, &key, &val, &vlen);
        if (rc != TS_OK && rc != TS_E_NOTFOUND)
            return rc;
        value = (ts_bytes){rc == TS_OK ? val : NULL, vlen};
        rc = ts_pending_emit(effs, cl, &key, &value);
        free(val);
        if (rc != TS_OK)
            return rc;
    }
    return TS_OK;
}

/* Adds the effects of blob `blob` to `effs`, each view set written by key
 * with its value read back from the view mirror (changelog key "V" + view). */
static ts_err ts_pending_decode_effects(const char *blob, size_t len,
                                        const ts_pending_changelog *cl, ts_effects *effs) {
    ts_effects *stored = ts_effects_create();
    if (!stored)
        return TS_E_NOMEM;
    ts_err rc = ts_effects_decode(stored, blob, len);
    ts_buf key = {0};
    for (size_t i = 0; rc == TS_OK && i < ts_effects_count(stored); i++) {
        const ts_effect *e = ts_effects_at(stored, i);
        if (e->kind != TS_EFF_VIEW_SET || e->b.data) {
            rc = ts_effects_add(effs, e->kind, &e->a, &e->b, &e->c, &e->d, e->num);
            continue;
        }
        ts_buf_reset(&key);
        ts_buf_put(&key, "V", 1);
        ts_buf_put(&key, e->a.data, e->a.len);
        if (key.failed) {
            rc = TS_E_NOMEM;
            break;
        }
        char *val = NULL;
        size_t vlen = 0;
        ts_bytes mirror_key = {key.data, key.len};
        rc = cl && cl->resolve ? cl->resolve(cl->arg, &mirror_key, &val, &vlen) : TS_E_DECODE;
        if (rc == TS_E_NOTFOUND)
            rc = TS_E_DECODE; /* the batch that wrote the view wrote its mirror */
        ts_bytes value = {val, vlen};
        if (rc == TS_OK)
            rc = ts_effects_add(effs, e->kind, &e->a, &value, NULL, NULL, e->num);
        free(val);
    }
    ts_buf_close(&key);
    ts_effects_destroy(stored);
    return rc;
}

ts_err ts_pending_decode(const char *val, size_t len, const ts_pending_changelog *changelog,
                         ts_effects *effs, int64_t *first, int64_t *next) {
    size_t blob_len = len >= TS_PENDING_OFFSETS ? len - TS_PENDING_OFFSETS : 0;
    int full = len >= TS_PENDING_HEAD && memcmp(val, TS_PENDING_MAGIC, 4) == 0;
    const char *marker = val;
    if (full) {
        uint32_t n;
        memcpy(&n, val + 4, 4);
        marker = val + TS_PENDING_HEAD;
        blob_len = n;
        if (len < TS_PENDING_HEAD + TS_PENDING_OFFSETS ||
            blob_len > len - TS_PENDING_HEAD - TS_PENDING_OFFSETS)
            return TS_E_DECODE;
    } else if (len < TS_PENDING_OFFSETS) {
        return TS_E_DECODE;
    }
    ts_err rc = ts_pending_decode_effects(marker + TS_PENDING_OFFSETS, blob_len, changelog, effs);
    if (rc != TS_OK)
        return rc;
    *first = ts_buf_be64_load(marker);
    *next = ts_buf_be64_load(marker + 8);
    if (!full || !changelog || !changelog->topic)
        return TS_OK;
    const char *records = marker + TS_PENDING_OFFSETS + blob_len;
    ts_reader r = {records, val + len};
    rc = ts_pending_decode_records(&r, changelog, effs);
    if (rc != TS_OK)
        return rc;
    ts_bytes key = {"M", 1}, value = {(char *)marker, TS_PENDING_OFFSETS + blob_len};
    return ts_pending_emit(effs, changelog, &key, &value);
}
