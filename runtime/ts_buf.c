/* ts_buf.c - a growable byte buffer and a reader (see ts_buf.h).
 *
 * The buffer doubles its capacity when it grows, so appending n bytes in
 * small pieces costs O(n) copies and O(log n) reallocations. */
#include "ts_buf.h"

#include <stdlib.h>
#include <string.h>

#define TS_BUF_ABSENT 0xFFFFFFFFu
#define TS_BUF_FIRST_CAP 256

int ts_buf_grow(ts_buf *buf, size_t n) {
    if (buf->failed)
        return -1;
    if (buf->len + n <= buf->cap)
        return 0;
    size_t cap = buf->cap ? buf->cap : TS_BUF_FIRST_CAP;
    while (cap < buf->len + n)
        cap *= 2;
    char *data = realloc(buf->data, cap);
    if (!data) {
        buf->failed = 1;
        return -1;
    }
    buf->data = data;
    buf->cap = cap;
    return 0;
}

void ts_buf_put(ts_buf *buf, const void *p, size_t n) {
    if (n == 0 || ts_buf_grow(buf, n) != 0)
        return;
    memcpy(buf->data + buf->len, p, n);
    buf->len += n;
}

void ts_buf_field(ts_buf *buf, const ts_bytes *b) {
    uint32_t len = b->data ? (uint32_t)b->len : TS_BUF_ABSENT;
    ts_buf_put(buf, &len, sizeof(len));
    if (b->data)
        ts_buf_put(buf, b->data, b->len);
}

void ts_buf_varint(ts_buf *buf, uint64_t v) {
    uint8_t bytes[10];
    size_t n = 0;
    while (v >= 0x80) {
        bytes[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    bytes[n++] = (uint8_t)v;
    ts_buf_put(buf, bytes, n);
}

void ts_buf_vfield(ts_buf *buf, const ts_bytes *b) {
    ts_buf_varint(buf, b->data ? (uint64_t)b->len + 1 : 0);
    if (b->data)
        ts_buf_put(buf, b->data, b->len);
}

void ts_buf_reset(ts_buf *buf) {
    buf->len = 0;
    buf->failed = 0;
}

void ts_buf_close(ts_buf *buf) {
    free(buf->data);
    *buf = (ts_buf){0};
}

int ts_reader_take(ts_reader *r, void *dst, size_t n) {
    if ((size_t)(r->end - r->p) < n)
        return -1;
    memcpy(dst, r->p, n);
    r->p += n;
    return 0;
}

int ts_reader_field(ts_reader *r, ts_bytes *b) {
    uint32_t len;
    if (ts_reader_take(r, &len, sizeof(len)))
        return -1;
    if (len == TS_BUF_ABSENT) {
        *b = (ts_bytes){NULL, 0};
        return 0;
    }
    if ((size_t)(r->end - r->p) < len)
        return -1;
    *b = (ts_bytes){(char *)r->p, len};
    r->p += len;
    return 0;
}

int ts_reader_varint(ts_reader *r, uint64_t *v) {
    uint64_t value = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (r->p == r->end)
            return -1;
        uint8_t byte = (uint8_t)*r->p++;
        value |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *v = value;
            return 0;
        }
    }
    return -1;
}

int ts_reader_vfield(ts_reader *r, ts_bytes *b) {
    uint64_t n;
    if (ts_reader_varint(r, &n))
        return -1;
    if (n == 0) {
        *b = (ts_bytes){NULL, 0};
        return 0;
    }
    if ((uint64_t)(r->end - r->p) < n - 1)
        return -1;
    *b = (ts_bytes){(char *)r->p, (size_t)(n - 1)};
    r->p += n - 1;
    return 0;
}

size_t ts_reader_left(const ts_reader *r) { return (size_t)(r->end - r->p); }
