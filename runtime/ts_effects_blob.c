/* ts_effects_blob.c - the serialized form of an effects list (see
 * ts_effects.h): the pending effects a task stores with its batch and the
 * value of the batch's changelog marker.
 *
 * "TSE2" (written): the magic, then per live effect
 *     u8 head        the kind in the low 4 bits; 0x40: a number follows;
 *                    0x80: `b` is a row in shape form
 *     [f64 num]      host order (the blob never leaves the machine that
 *                    wrote it; a restore reads its own changelog)
 *     a              compact field (ts_buf_vfield)
 *     b              compact field, or in shape form: varint shape id, and
 *                    when the id is new (the next one), the shape: u16
 *                    ncols, u16 nkey, per column u16 name length and name;
 *                    then the row's values as compact fields
 *     c, d           compact fields
 * A batch writes rows of a few tables in many rows each, and a packed row
 * carries its column names (ts_rowcols): a row of the 1M benchmark stream
 * took 251 bytes, the rows half of the blob. Shapes send each set of
 * column names once per blob, and compact fields save the three of four
 * length bytes that short strings never use.
 *
 * "TSE1" (still read, for the pending records and changelog markers that a
 * runtime before TSE2 wrote): per effect u8 kind, f64 num, four ts_buf
 * fields.
 *
 * TSE2 never takes more bytes than TSE1 would for the same effects (what
 * ts_effects_encoded_max counts) while every string is below 2^28 - 1 bytes
 * (longer ones make records no task sends, ts_task__record_room): a compact
 * field is at most as long as a field, the head and number at most as long
 * as TSE1's, and a shape form at most as long as the packed row it stands
 * for (a one-byte id, as shapes are at most TS_BLOB_MAX_SHAPES, instead of
 * the u32 length; a new shape's names as long as in the packed row).
 */
#include "ts_effects.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define TS_BLOB_MAGIC_V1 "TSE1"
#define TS_BLOB_MAGIC_V2 "TSE2"
#define TS_BLOB_KIND_MASK 0x0f
#define TS_BLOB_HAS_NUM 0x40
#define TS_BLOB_ROW_SHAPE 0x80
/* Shapes a blob defines (ids fit one varint byte); later rows of other
 * shapes are written as packed rows. */
#define TS_BLOB_MAX_SHAPES 127
/* Columns of a row written in shape form; wider rows stay packed. */
#define TS_BLOB_MAX_COLS 256

/* A set of column names: borrowed from the first row that had it (the
 * encoder: the effects' bytes; the decoder: the blob). */
typedef struct ts_blob_shape {
    uint64_t hash;
    size_t ncols, nkey;
    ts_rowcol *names; /* ncols entries; only name and name_len are used */
} ts_blob_shape;

typedef struct ts_blob_shapes {
    ts_blob_shape list[TS_BLOB_MAX_SHAPES];
    size_t count;
    ts_rowcol cols[TS_BLOB_MAX_COLS]; /* the row being written or read */
} ts_blob_shapes;

/* ~12 KiB (the names of up to 127 shapes and one row's columns): once per
 * blob, i.e. per batch. */
static ts_blob_shapes *ts_blob_shapes_create(void) { return calloc(1, sizeof(ts_blob_shapes)); }

static void ts_blob_shapes_destroy(ts_blob_shapes *shapes) {
    if (!shapes)
        return;
    for (size_t i = 0; i < shapes->count; i++)
        free(shapes->list[i].names);
    free(shapes);
}

static uint64_t ts_blob_names_hash(const ts_rowcol *cols, size_t ncols, size_t nkey) {
    uint64_t h = XXH3_64bits_withSeed(NULL, 0, ncols * 65536 + nkey);
    for (size_t i = 0; i < ncols; i++)
        h = XXH3_64bits_withSeed(cols[i].name, cols[i].name_len, h);
    return h;
}

static int ts_blob_shape_is(const ts_blob_shape *shape, uint64_t hash, const ts_rowcol *cols,
                            size_t ncols, size_t nkey) {
    if (shape->hash != hash || shape->ncols != ncols || shape->nkey != nkey)
        return 0;
    for (size_t i = 0; i < ncols; i++)
        if (shape->names[i].name_len != cols[i].name_len ||
            memcmp(shape->names[i].name, cols[i].name, cols[i].name_len) != 0)
            return 0;
    return 1;
}

/* Adds the names of `cols` as the next shape. @returns its id, or -1 when
 * out of memory. */
static long ts_blob_shape_add(ts_blob_shapes *shapes, uint64_t hash, const ts_rowcol *cols,
                              size_t ncols, size_t nkey) {
    ts_blob_shape *shape = &shapes->list[shapes->count];
    shape->names = malloc((ncols ? ncols : 1) * sizeof(*shape->names));
    if (!shape->names)
        return -1;
    memcpy(shape->names, cols, ncols * sizeof(*cols));
    shape->hash = hash;
    shape->ncols = ncols;
    shape->nkey = nkey;
    return (long)shapes->count++;
}

/* Writes row `packed` in shape form and marks the effect's head (at
 * `head_at` in `out`) so. @returns 0, or -1 when the row must be written as
 * a packed row instead (too wide, too many shapes, or unreadable). */
static int ts_blob_put_row(ts_blob_shapes *shapes, ts_buf *out, size_t head_at,
                           const ts_bytes *packed) {
    size_t ncols, nkey;
    if (ts_rowcols_unpack(packed, shapes->cols, TS_BLOB_MAX_COLS, &ncols, &nkey) != TS_OK)
        return -1;
    uint64_t hash = ts_blob_names_hash(shapes->cols, ncols, nkey);
    long id = -1;
    for (size_t i = 0; i < shapes->count && id < 0; i++)
        if (ts_blob_shape_is(&shapes->list[i], hash, shapes->cols, ncols, nkey))
            id = (long)i;
    int is_new = id < 0;
    if (is_new && (shapes->count == TS_BLOB_MAX_SHAPES ||
                   (id = ts_blob_shape_add(shapes, hash, shapes->cols, ncols, nkey)) < 0))
        return -1;
    out->data[head_at] = (char)((uint8_t)out->data[head_at] | TS_BLOB_ROW_SHAPE);
    ts_buf_varint(out, (uint64_t)id);
    if (is_new) {
        uint16_t n16 = (uint16_t)ncols, k16 = (uint16_t)nkey;
        ts_buf_put(out, &n16, 2);
        ts_buf_put(out, &k16, 2);
        for (size_t i = 0; i < ncols; i++) {
            uint16_t len = (uint16_t)shapes->cols[i].name_len;
            ts_buf_put(out, &len, 2);
            ts_buf_put(out, shapes->cols[i].name, len);
        }
    }
    for (size_t i = 0; i < ncols; i++) {
        ts_bytes value = {(char *)shapes->cols[i].value, shapes->cols[i].value_len};
        ts_buf_vfield(out, &value);
    }
    return 0;
}

ts_err ts_effects_encode_to(const ts_effects *effs, ts_buf *out, int flags) {
    static const ts_bytes absent = {NULL, 0};
    ts_blob_shapes *shapes = ts_blob_shapes_create();
    if (!shapes) {
        out->failed = 1;
        return TS_E_NOMEM;
    }
    ts_buf_put(out, TS_BLOB_MAGIC_V2, 4);
    for (size_t i = 0; i < ts_effects_count(effs) && !out->failed; i++) {
        const ts_effect *e = ts_effects_at(effs, i);
        if (e->dead)
            continue;
        uint8_t head = (uint8_t)e->kind;
        uint64_t num_bits;
        memcpy(&num_bits, &e->num, sizeof(num_bits));
        if (num_bits != 0) /* only +0.0 is left out: -0.0 keeps its sign */
            head |= TS_BLOB_HAS_NUM;
        size_t head_at = out->len;
        ts_buf_put(out, &head, 1);
        if (head & TS_BLOB_HAS_NUM)
            ts_buf_put(out, &e->num, sizeof(e->num));
        ts_buf_vfield(out, &e->a);
        int is_row = e->kind == TS_EFF_ROW_UPSERT || e->kind == TS_EFF_ROW_DELETE;
        int by_key = (flags & TS_EFFECTS_VIEWS_BY_KEY) && e->kind == TS_EFF_VIEW_SET;
        if (!(is_row && e->b.data && !out->failed &&
              ts_blob_put_row(shapes, out, head_at, &e->b) == 0))
            ts_buf_vfield(out, by_key ? &absent : &e->b);
        ts_buf_vfield(out, &e->c);
        ts_buf_vfield(out, &e->d);
    }
    ts_blob_shapes_destroy(shapes);
    return out->failed ? TS_E_NOMEM : TS_OK;
}

/* ---- decoding ------------------------------------------------------------------ */

/* Reads the next shape definition. @returns TS_OK, TS_E_DECODE or
 * TS_E_NOMEM. */
static ts_err ts_blob_read_shape(ts_blob_shapes *shapes, ts_reader *r) {
    uint16_t n16, k16;
    if (shapes->count == TS_BLOB_MAX_SHAPES || ts_reader_take(r, &n16, 2) ||
        ts_reader_take(r, &k16, 2) || k16 > n16 || n16 > TS_BLOB_MAX_COLS)
        return TS_E_DECODE;
    for (size_t i = 0; i < n16; i++) {
        uint16_t len;
        if (ts_reader_take(r, &len, 2) || ts_reader_left(r) < len)
            return TS_E_DECODE;
        shapes->cols[i].name = r->p;
        shapes->cols[i].name_len = len;
        r->p += len;
    }
    return ts_blob_shape_add(shapes, 0, shapes->cols, n16, k16) < 0 ? TS_E_NOMEM : TS_OK;
}

/* Reads a row in shape form back into a packed row (malloc'ed, given to
 * *packed). @returns TS_OK, TS_E_DECODE or TS_E_NOMEM. */
static ts_err ts_blob_read_row(ts_blob_shapes *shapes, ts_reader *r, ts_bytes *packed) {
    uint64_t id;
    if (ts_reader_varint(r, &id) || id > shapes->count)
        return TS_E_DECODE;
    ts_err rc = id == shapes->count ? ts_blob_read_shape(shapes, r) : TS_OK;
    if (rc != TS_OK)
        return rc;
    const ts_blob_shape *shape = &shapes->list[id];
    for (size_t i = 0; i < shape->ncols; i++) {
        ts_bytes value;
        if (ts_reader_vfield(r, &value))
            return TS_E_DECODE;
        shapes->cols[i].name = shape->names[i].name;
        shapes->cols[i].name_len = shape->names[i].name_len;
        shapes->cols[i].value = value.data;
        shapes->cols[i].value_len = value.len;
    }
    *packed = ts_rowcols_pack(shapes->cols, shape->ncols, shape->nkey);
    return packed->data ? TS_OK : TS_E_NOMEM;
}

/* One TSE2 effect into `effs`. */
static ts_err ts_blob_read_v2(ts_blob_shapes *shapes, ts_reader *r, ts_effects *effs) {
    uint8_t head;
    double num = 0;
    ts_bytes a, b, c, d;
    if (ts_reader_take(r, &head, 1) ||
        ((head & TS_BLOB_HAS_NUM) && ts_reader_take(r, &num, sizeof(num))) ||
        ts_reader_vfield(r, &a))
        return TS_E_DECODE;
    uint8_t kind = head & TS_BLOB_KIND_MASK;
    if ((head & ~(TS_BLOB_KIND_MASK | TS_BLOB_HAS_NUM | TS_BLOB_ROW_SHAPE)) ||
        kind < TS_EFF_VIEW_SET || kind > TS_EFF_EMIT)
        return TS_E_DECODE;
    ts_bytes row = {NULL, 0};
    if (head & TS_BLOB_ROW_SHAPE) {
        if (kind != TS_EFF_ROW_UPSERT && kind != TS_EFF_ROW_DELETE)
            return TS_E_DECODE;
        ts_err rc = ts_blob_read_row(shapes, r, &row);
        if (rc != TS_OK)
            return rc;
        b = row;
    } else if (ts_reader_vfield(r, &b)) {
        return TS_E_DECODE;
    }
    ts_err rc = ts_reader_vfield(r, &c) || ts_reader_vfield(r, &d)
                    ? TS_E_DECODE
                    : ts_effects_add(effs, (ts_effect_kind)kind, &a, &b, &c, &d, num);
    free(row.data);
    return rc;
}

/* One TSE1 effect into `effs`. */
static ts_err ts_blob_read_v1(ts_reader *r, ts_effects *effs) {
    uint8_t kind;
    double num;
    ts_bytes a, b, c, d;
    if (ts_reader_take(r, &kind, 1) || ts_reader_take(r, &num, sizeof(num)) ||
        ts_reader_field(r, &a) || ts_reader_field(r, &b) || ts_reader_field(r, &c) ||
        ts_reader_field(r, &d))
        return TS_E_DECODE;
    if (kind < TS_EFF_VIEW_SET || kind > TS_EFF_EMIT)
        return TS_E_DECODE;
    return ts_effects_add(effs, (ts_effect_kind)kind, &a, &b, &c, &d, num);
}

ts_err ts_effects_decode(ts_effects *effs, const char *blob, size_t len) {
    int v2 = len >= 4 && memcmp(blob, TS_BLOB_MAGIC_V2, 4) == 0;
    if (!v2 && (len < 4 || memcmp(blob, TS_BLOB_MAGIC_V1, 4) != 0))
        return TS_E_DECODE;
    ts_blob_shapes *shapes = v2 ? ts_blob_shapes_create() : NULL;
    if (v2 && !shapes)
        return TS_E_NOMEM;
    ts_reader r = {blob + 4, blob + len};
    ts_err rc = TS_OK;
    while (rc == TS_OK && ts_reader_left(&r) > 0)
        rc = v2 ? ts_blob_read_v2(shapes, &r, effs) : ts_blob_read_v1(&r, effs);
    ts_blob_shapes_destroy(shapes);
    return rc;
}
