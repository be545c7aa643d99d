/* ts_buf.h - byte strings, a growable byte buffer, and a reader over bytes.
 *
 * The runtime's stored and shipped blobs (pending effects, changelog group
 * records) are built by appending to a ts_buf and read back with a
 * ts_reader. A field is a u32 length in host order (0xFFFFFFFF = absent)
 * followed by the bytes: these blobs never leave the machine that wrote them.
 * A compact field has a varint length instead, for blobs of many small
 * strings.
 *
 * A ts_buf is embedded in its owner (init by zeroing, close with
 * ts_buf_close). An allocation failure sets `failed` and makes every later
 * append a no-op, so a builder checks once at the end.
 *
 * Threading: none; owned by one thread at a time.
 */
#ifndef TS_BUF_H
#define TS_BUF_H

#include <endian.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/** A byte string; `data` NULL means absent (distinct from empty). */
typedef struct ts_bytes {
    char *data;
    size_t len;
} ts_bytes;

typedef struct ts_buf {
    char *data;
    size_t len, cap;
    int failed; /* an append ran out of memory: the contents are incomplete */
} ts_buf;

/** Makes room for `n` more bytes after `len` (len unchanged): data[len ..
 * len + n) may then be written. @returns 0, or -1 (and sets `failed`). */
int ts_buf_grow(ts_buf *buf, size_t n);
/** Appends `n` bytes. */
void ts_buf_put(ts_buf *buf, const void *p, size_t n);
/** Appends a field: u32 length (0xFFFFFFFF when `b->data` is NULL), bytes. */
void ts_buf_field(ts_buf *buf, const ts_bytes *b);
/** Appends an unsigned LEB128 varint: 7 bits a byte, low bits first (one
 * byte below 128, at most four below 2^28). */
void ts_buf_varint(ts_buf *buf, uint64_t v);
/** Appends a compact field: varint of the length + 1 (0 when `b->data` is
 * NULL), bytes. No longer than a field for any length below 2^28 - 1. */
void ts_buf_vfield(ts_buf *buf, const ts_bytes *b);
/** Empties the buffer (and clears `failed`), keeping its memory. */
void ts_buf_reset(ts_buf *buf);
/** Frees the memory; the buffer is empty and usable again. */
void ts_buf_close(ts_buf *buf);

/** Big-endian int64 (positions and offsets in stored values and markers:
 * the same bytes on any host): writes 8 bytes at `p`. */
static inline void ts_buf_be64_store(void *p, int64_t v) {
    uint64_t be = htobe64((uint64_t)v);
    memcpy(p, &be, 8);
}
/** Reads a big-endian int64 from 8 bytes at `p`. */
static inline int64_t ts_buf_be64_load(const void *p) {
    uint64_t be;
    memcpy(&be, p, 8);
    return (int64_t)be64toh(be);
}
/** Appends a big-endian int64. */
static inline void ts_buf_put_be64(ts_buf *buf, int64_t v) {
    char b[8];
    ts_buf_be64_store(b, v);
    ts_buf_put(buf, b, 8);
}

/** Reads bytes in order; borrowed, valid while the bytes are. */
typedef struct ts_reader {
    const char *p, *end;
} ts_reader;

/** Copies the next `n` bytes into `dst`. @returns 0, or -1 if fewer remain. */
int ts_reader_take(ts_reader *r, void *dst, size_t n);
/** The next field, borrowed (data NULL when absent). @returns 0, or -1 if
 * it is truncated. */
int ts_reader_field(ts_reader *r, ts_bytes *b);
/** The next varint (ts_buf_varint). @returns 0, or -1 if truncated or over
 * 64 bits. */
int ts_reader_varint(ts_reader *r, uint64_t *v);
/** The next compact field (ts_buf_vfield), borrowed. @returns 0, or -1. */
int ts_reader_vfield(ts_reader *r, ts_bytes *b);
/** Bytes not read yet. */
size_t ts_reader_left(const ts_reader *r);

#endif
