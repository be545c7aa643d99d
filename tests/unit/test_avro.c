/* test_avro.c - schemas folder, Confluent framing, resolution, bad input. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_avro.h"
#include "ts_processor.h"

#define SCHEMA_DIR TS_SOURCE_DIR "/schemas/avro"

static ts_schemas *schemas;
static char err[512];

static void load_real(void) {
    ts_err rc = ts_schemas_load(SCHEMA_DIR, &schemas, err, sizeof(err));
    cr_assert_eq(rc, TS_OK, "load: %s", err);
}

static void unload(void) {
    ts_schemas_destroy(schemas);
    schemas = NULL;
}

/* ---- temp folders ---- */

static char tmpdir[64];

static void write_file(const char *name, const char *text) {
    char path[256];
    FILE *f;
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static void make_tmp(void) {
    strcpy(tmpdir, "/tmp/ts_avro_XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void rm_tmp(void) {
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "r");
    char *buf;
    long n;
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Encodes a JSON text with `subject`'s encoder. */
static char *encode_json(const char *subject, const char *json_text, size_t *len) {
    ts_encoder *enc = ts_encoder_create(schemas, subject);
    json_error_t jerr;
    json_t *ev = json_loads(json_text, 0, &jerr);
    char *out = NULL;
    ts_err rc;
    cr_assert_not_null(enc, "encoder for %s", subject);
    cr_assert_not_null(ev, "json: %s", jerr.text);
    rc = ts_encoder_from_json(enc, ev, &out, len, err, sizeof(err));
    cr_assert_eq(rc, TS_OK, "from_json: %s", err);
    json_decref(ev);
    ts_encoder_destroy(enc);
    return out;
}

static int32_t frame_id(const char *buf) {
    const unsigned char *b = (const unsigned char *)buf;
    return (int32_t)((uint32_t)b[1] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 8 | b[4]);
}

TestSuite(avro, .init = load_real, .fini = unload);

Test(avro, loads_real_schemas) {
    int32_t id = 0;
    avro_schema_t s = ts_schemas_latest(schemas, "storybook.events", &id);
    cr_assert_not_null(s);
    cr_assert_eq(id, 1);
    cr_assert_eq(avro_typeof(s), AVRO_UNION);
    cr_assert_eq(avro_schema_union_size(s), 5);
    cr_assert_str_eq(avro_schema_name(avro_schema_union_branch(s, 0)), "BookCreated");
    cr_assert_str_eq(avro_schema_name(avro_schema_union_branch(s, 4)), "PageDeleted");
    s = ts_schemas_by_id(schemas, 5);
    cr_assert_not_null(s);
    cr_assert_str_eq(avro_schema_name(s), "PageUpserted");
    cr_assert_null(ts_schemas_by_id(schemas, 99));
    cr_assert_null(ts_schemas_latest(schemas, "nope", NULL));
    cr_assert_geq(ts_schemas_count(schemas), 6); /* storybook's; other families add theirs */
    cr_assert_null(ts_decoder_create(schemas, "nope"));
    cr_assert_null(ts_encoder_create(schemas, "nope"));
}

/* One event of each record, with every field set (and optional ones unset). */
static const struct {
    const char *type;
    const char *fields;
} samples[] = {
    {"BookCreated", "{\"event_id\":\"e1\",\"book_id\":\"b1\",\"user_id\":\"u1\",\"title\":\"T\","
                    "\"cover_image_url\":\"http://c\",\"created_at\":\"2026-11-21T10:00:00Z\"}"},
    {"BookCreated", "{\"event_id\":\"e1b\",\"book_id\":\"b1\",\"user_id\":\"u1\",\"title\":\"T\","
                    "\"created_at\":1700000000123}"},
    {"BookUpdated", "{\"event_id\":\"e2\",\"book_id\":\"b1\",\"user_id\":\"u1\",\"title\":null,"
                    "\"cover_image_url\":\"x\",\"updated_at\":\"2026-11-21T10:00:00.123Z\"}"},
    {"BookDeleted", "{\"event_id\":\"e3\",\"book_id\":\"b1\",\"user_id\":\"u1\","
                    "\"deleted_at\":5}"},
    {"PageUpserted", "{\"event_id\":\"e4\",\"book_id\":\"b1\",\"user_id\":\"u1\",\"page_no\":3,"
                     "\"text\":\"h\\u00e9llo\",\"audio_url\":\"a\",\"updated_at\":0}"},
    {"PageDeleted", "{\"event_id\":\"e5\",\"book_id\":\"b1\",\"user_id\":\"u1\",\"page_no\":3,"
                    "\"deleted_at\":\"2026-01-01T00:00:00+01:00\"}"},
};

/* Expected JSON of the decoded record: the input with times as epoch ms and
 * omitted optionals as null. */
static json_t *expected_json(const char *fields) {
    json_t *j = json_loads(fields, 0, NULL);
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v) {
        if (json_is_string(v) && strstr(key, "_at") != NULL) {
            int64_t ms;
            cr_assert_eq(ts_time_parse_iso(json_string_value(v), &ms), 0);
            json_object_set_new(j, key, json_integer(ms));
        }
    }
    return j;
}

static void check_decoded(ts_decoder *dec, const char *buf, size_t len, const char *type,
                          const char *fields) {
    avro_value_t *rec = NULL;
    const char *got_type = NULL;
    json_t *got, *want;
    const char *key;
    json_t *v;
    ts_err rc = ts_decoder_decode(dec, buf, len, &rec, &got_type, err, sizeof(err));
    cr_assert_eq(rc, TS_OK, "decode %s: %s", type, err);
    cr_assert_str_eq(got_type, type);
    got = ts_avro_to_json(rec);
    want = expected_json(fields);
    json_object_foreach(got, key, v) {
        json_t *w = json_object_get(want, key);
        if (w == NULL) {
            cr_assert(json_is_null(v), "%s.%s should be null", type, key);
        } else {
            char *a = json_dumps(v, JSON_ENCODE_ANY), *b = json_dumps(w, JSON_ENCODE_ANY);
            cr_assert(json_equal(v, w), "%s.%s: got %s want %s", type, key, a, b);
            free(a);
            free(b);
        }
    }
    json_object_foreach(want, key, v) {
        cr_assert_not_null(json_object_get(got, key), "%s.%s missing", type, key);
    }
    json_decref(got);
    json_decref(want);
}

Test(avro, roundtrip_with_union_id_and_record_id) {
    ts_decoder *dec = ts_decoder_create(schemas, "storybook.events");
    size_t i;
    cr_assert_not_null(dec);
    for (i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        char text[1024], subject[64];
        size_t len;
        char *buf;

        /* Written with the union's id. */
        snprintf(text, sizeof(text), "{\"%s\": %s}", samples[i].type, samples[i].fields);
        buf = encode_json("storybook.events", text, &len);
        cr_assert_eq(buf[0], 0);
        cr_assert_eq(frame_id(buf), 1);
        check_decoded(dec, buf, len, samples[i].type, samples[i].fields);
        free(buf);

        /* Written with the record's own id (bare fields object). */
        snprintf(subject, sizeof(subject), "storybook.%s", samples[i].type);
        buf = encode_json(subject, samples[i].fields, &len);
        cr_assert_neq(frame_id(buf), 1);
        check_decoded(dec, buf, len, samples[i].type, samples[i].fields);
        free(buf);

        /* Record subject, wrapped form. */
        buf = encode_json(subject, text, &len);
        check_decoded(dec, buf, len, samples[i].type, samples[i].fields);
        free(buf);
    }
    ts_decoder_destroy(dec);
}

Test(avro, record_decoder_reads_union_message_of_same_record) {
    ts_decoder *dec = ts_decoder_create(schemas, "storybook.BookDeleted");
    size_t len;
    char *buf = encode_json("storybook.events", "{\"BookDeleted\": {\"event_id\":\"e\","
                                                "\"book_id\":\"b\",\"user_id\":\"u\","
                                                "\"deleted_at\":1}}", &len);
    avro_value_t *rec;
    const char *type;
    cr_assert_eq(ts_decoder_decode(dec, buf, len, &rec, &type, err, sizeof(err)), TS_OK, "%s",
                 err);
    cr_assert_str_eq(type, "BookDeleted");
    free(buf);
    /* A different branch cannot be read as BookDeleted. */
    buf = encode_json("storybook.events", "{\"PageDeleted\": {\"event_id\":\"e\","
                                          "\"book_id\":\"b\",\"user_id\":\"u\",\"page_no\":1,"
                                          "\"deleted_at\":1}}", &len);
    cr_assert_eq(ts_decoder_decode(dec, buf, len, &rec, &type, err, sizeof(err)), TS_E_DECODE);
    cr_assert(strstr(err, "cannot be read") != NULL, "%s", err);
    free(buf);
    ts_decoder_destroy(dec);
}

Test(avro, encoder_record_fill_and_field_str) {
    ts_encoder *enc = ts_encoder_create(schemas, "storybook.events");
    ts_decoder *dec = ts_decoder_create(schemas, "storybook.events");
    avro_value_t *rec, f, *out;
    const char *type;
    char *buf;
    size_t len;
    cr_assert_null(ts_encoder_record(enc, "Nope"));
    cr_assert_eq(ts_encoder_encode(enc, &buf, &len), TS_E_INVALID);
    rec = ts_encoder_record(enc, "BookCreated");
    cr_assert_not_null(rec);
    cr_assert_str_eq(ts_encoder_record_name(enc), "BookCreated");
    avro_value_get_by_name(rec, "event_id", &f, NULL);
    avro_value_set_string(&f, "ev");
    avro_value_get_by_name(rec, "book_id", &f, NULL);
    avro_value_set_string(&f, "bk");
    avro_value_get_by_name(rec, "user_id", &f, NULL);
    avro_value_set_string(&f, "us");
    avro_value_get_by_name(rec, "title", &f, NULL);
    avro_value_set_string(&f, "ti");
    avro_value_get_by_name(rec, "created_at", &f, NULL);
    avro_value_set_long(&f, 42);
    /* cover_image_url is left at its default (null). */
    cr_assert_str_eq(ts_encoder_field_str(enc, "user_id"), "us");
    cr_assert_null(ts_encoder_field_str(enc, "cover_image_url"));
    cr_assert_null(ts_encoder_field_str(enc, "created_at"));
    cr_assert_eq(ts_encoder_encode(enc, &buf, &len), TS_OK);
    cr_assert_eq(ts_decoder_decode(dec, buf, len, &out, &type, err, sizeof(err)), TS_OK, "%s", err);
    cr_assert_str_eq(type, "BookCreated");
    {
        ts_event ev = {.type = type, .value = out};
        int64_t ms;
        cr_assert_str_eq(ts_event_str(&ev, "title"), "ti");
        cr_assert_null(ts_event_str(&ev, "cover_image_url"));
        cr_assert_eq(ts_event_long(&ev, "created_at", &ms), 0);
        cr_assert_eq(ms, 42);
    }
    free(buf);
    /* A new record starts empty: nothing of the previous one survives. */
    rec = ts_encoder_record(enc, "BookCreated");
    cr_assert_str_eq(ts_encoder_field_str(enc, "user_id"), "");
    ts_encoder_destroy(enc);
    ts_decoder_destroy(dec);
}

Test(avro, from_json_errors_name_the_field) {
    static const struct {
        const char *json;
        const char *want;
    } cases[] = {
        {"{\"PageDeleted\": {\"event_id\":\"e\",\"book_id\":\"b\",\"user_id\":\"u\","
         "\"page_no\":\"3\",\"deleted_at\":1}}",
         "field 'page_no': expected int, got string"},
        {"{\"PageDeleted\": {\"event_id\":\"e\",\"book_id\":\"b\",\"user_id\":\"u\","
         "\"deleted_at\":1}}",
         "field 'page_no': required"},
        {"{\"PageDeleted\": {\"event_id\":\"e\",\"book_id\":\"b\",\"user_id\":\"u\","
         "\"page_no\":3,\"deleted_at\":1,\"color\":\"red\"}}",
         "field 'color': not in record PageDeleted"},
        {"{\"BookDeleted\": {\"event_id\":\"e\",\"book_id\":\"b\",\"user_id\":\"u\","
         "\"deleted_at\":\"yesterday\"}}",
         "field 'deleted_at': expected ISO-8601 time"},
        {"{\"BookDeleted\": {\"event_id\":\"e\",\"book_id\":\"b\",\"user_id\":\"u\","
         "\"deleted_at\":\"2026-02-30T00:00:00Z\"}}",
         "field 'deleted_at': expected ISO-8601 time"},
        {"{\"BookUpdated\": {\"event_id\":\"e\",\"book_id\":\"b\",\"user_id\":\"u\","
         "\"title\":7,\"updated_at\":1}}",
         "field 'title': expected string, got integer"},
        {"{\"BookDeleted\": {\"event_id\":\"e\",\"book_id\":\"b\",\"user_id\":\"u\","
         "\"deleted_at\":1.5}}",
         "field 'deleted_at': expected timestamp, got number"},
        {"{\"PageDeleted\": {\"event_id\":\"e\",\"book_id\":\"b\",\"user_id\":\"u\","
         "\"page_no\":4294967296,\"deleted_at\":1}}",
         "field 'page_no': int out of range"},
        {"{\"Nope\": {}}", "'Nope' is not a record"},
        {"{\"A\": {}, \"B\": {}}", "event: expected"},
        {"[1]", "event: expected object, got array"},
        {"{\"BookDeleted\": [1]}", "expected object (record BookDeleted), got array"},
    };
    ts_encoder *enc = ts_encoder_create(schemas, "storybook.events");
    size_t i;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *ev = json_loads(cases[i].json, 0, NULL);
        char *out = NULL;
        size_t len;
        cr_assert_not_null(ev, "%s", cases[i].json);
        err[0] = '\0';
        cr_assert_eq(ts_encoder_from_json(enc, ev, &out, &len, err, sizeof(err)), TS_E_INVALID,
                     "case %zu", i);
        cr_assert(strstr(err, cases[i].want) != NULL, "case %zu: got '%s', want '%s'", i, err,
                  cases[i].want);
        cr_assert_null(out);
        json_decref(ev);
    }
    ts_encoder_destroy(enc);
}

Test(avro, iso_times) {
    int64_t ms;
    char buf[40];
    cr_assert_eq(ts_time_parse_iso("2023-11-14T22:13:20.123Z", &ms), 0);
    cr_assert_eq(ms, 1700000000123LL);
    cr_assert_eq(ts_time_parse_iso("2023-11-14T22:13:20Z", &ms), 0);
    cr_assert_eq(ms, 1700000000000LL);
    cr_assert_eq(ts_time_parse_iso("2023-11-15T00:13:20.5+02:00", &ms), 0);
    cr_assert_eq(ms, 1700000000500LL);
    cr_assert_eq(ts_time_parse_iso("1969-12-31T23:59:59.999Z", &ms), 0);
    cr_assert_eq(ms, -1);
    cr_assert_str_eq(ts_time_iso(ms, buf, sizeof(buf)), "1969-12-31T23:59:59.999Z");
    cr_assert_eq(ts_time_parse_iso("2024-02-29T00:00:00Z", &ms), 0);
    cr_assert_str_eq(ts_time_iso(ms, buf, sizeof(buf)), "2024-02-29T00:00:00.000Z");
    cr_assert_neq(ts_time_parse_iso("2023-02-29T00:00:00Z", &ms), 0);
    cr_assert_neq(ts_time_parse_iso("2023-11-14", &ms), 0);
    cr_assert_neq(ts_time_parse_iso("2023-11-14T22:13:20", &ms), 0);
    cr_assert_neq(ts_time_parse_iso("2023-11-14T22:13:20Zjunk", &ms), 0);
    cr_assert_neq(ts_time_parse_iso("", &ms), 0);
}

/* ---- bad input ---- */

static char *valid_message(size_t *len) {
    return encode_json("storybook.events",
                       "{\"PageUpserted\": {\"event_id\":\"e4\",\"book_id\":\"b1\","
                       "\"user_id\":\"u1\",\"page_no\":3,\"text\":\"hello\","
                       "\"image_url\":\"i\",\"updated_at\":1700000000123}}",
                       len);
}

static ts_err decode_bytes(ts_decoder *dec, const void *buf, size_t len) {
    avro_value_t *rec = NULL;
    const char *type = NULL;
    err[0] = '\0';
    return ts_decoder_decode(dec, buf, len, &rec, &type, err, sizeof(err));
}

Test(avro, bad_input_reasons) {
    ts_decoder *dec = ts_decoder_create(schemas, "storybook.events");
    size_t len, i;
    char *good = valid_message(&len);
    char *tmp = malloc(len + 16);

    cr_assert_eq(decode_bytes(dec, good, len), TS_OK, "%s", err);

    cr_assert_eq(decode_bytes(dec, "", 0), TS_E_DECODE);
    cr_assert_str_eq(err, "empty message");
    cr_assert_eq(decode_bytes(dec, NULL, 0), TS_E_DECODE);
    cr_assert_str_eq(err, "empty message");

    cr_assert_eq(decode_bytes(dec, "{\"a\":1}", 7), TS_E_DECODE);
    cr_assert_str_eq(err, "bad magic byte 0x7b");

    cr_assert_eq(decode_bytes(dec, "\0\0\0", 3), TS_E_DECODE);
    cr_assert(strstr(err, "truncated header") != NULL, "%s", err);

    cr_assert_eq(decode_bytes(dec, "\0\0\0\0\x63\x02", 6), TS_E_DECODE);
    cr_assert_str_eq(err, "unknown schema id 99");

    /* Every proper prefix of the body is truncated. */
    for (i = TS_AVRO_HEADER_LEN; i < len; i++) {
        cr_assert_eq(decode_bytes(dec, good, i), TS_E_DECODE, "prefix %zu", i);
        cr_assert_str_eq(err, "truncated or invalid Avro for schema id 1");
    }

    /* Trailing bytes. */
    memcpy(tmp, good, len);
    tmp[len] = 0x02;
    cr_assert_eq(decode_bytes(dec, tmp, len + 1), TS_E_DECODE);
    cr_assert(strstr(err, "trailing bytes") != NULL, "%s", err);

    /* Garbage after a good header: union index 7 of 5. */
    memcpy(tmp, good, 5);
    memcpy(tmp + 5, "\x0e\xff\xff\xff", 4);
    cr_assert_eq(decode_bytes(dec, tmp, 9), TS_E_DECODE);
    cr_assert_str_eq(err, "truncated or invalid Avro for schema id 1");

    /* A string length far beyond the message (avro-c would malloc it). */
    memcpy(tmp, good, 5);
    memcpy(tmp + 5, "\x06\xfe\xff\xff\xff\xff\xff\xff\xff\x7f", 10);
    cr_assert_eq(decode_bytes(dec, tmp, 15), TS_E_DECODE);
    /* Negative length. */
    memcpy(tmp + 5, "\x06\x01", 2);
    cr_assert_eq(decode_bytes(dec, tmp, 7), TS_E_DECODE);
    /* Invalid UTF-8 in a string. */
    memcpy(tmp + 5, "\x06\x02\xff", 3);
    cr_assert_eq(decode_bytes(dec, tmp, 8), TS_E_DECODE);
    cr_assert(strstr(err, "a string is not UTF-8") != NULL, "%s", err);
    /* A NUL byte in a string: valid UTF-8, but no C string or PostgreSQL
     * text holds it. */
    memcpy(tmp + 5, "\x06\x02\x00", 3);
    cr_assert_eq(decode_bytes(dec, tmp, 8), TS_E_DECODE);
    cr_assert(strstr(err, "a string holds a NUL byte") != NULL, "%s", err);
    /* Over-long varint. */
    memcpy(tmp + 5, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11);
    cr_assert_eq(decode_bytes(dec, tmp, 16), TS_E_DECODE);

    /* Still decodes good input after all that. */
    cr_assert_eq(decode_bytes(dec, good, len), TS_OK, "%s", err);
    free(tmp);
    free(good);
    ts_decoder_destroy(dec);
}

Test(avro, random_mutations_never_crash) {
    ts_decoder *dec = ts_decoder_create(schemas, "storybook.events");
    size_t len, i;
    char *good = valid_message(&len);
    char *tmp = malloc(len + 8);
    unsigned seed = 12345;
    int ok = 0;
    for (i = 0; i < 20000; i++) {
        size_t n = len, k;
        memcpy(tmp, good, len);
        for (k = 0; k < 1 + (size_t)rand_r(&seed) % 4; k++)
            tmp[5 + (size_t)rand_r(&seed) % (len - 5)] = (char)rand_r(&seed);
        if (rand_r(&seed) % 4 == 0)
            n = 5 + (size_t)rand_r(&seed) % (len - 4);
        if (decode_bytes(dec, tmp, n) == TS_OK)
            ok++;
        else
            cr_assert(err[0] != '\0');
    }
    cr_assert(ok > 0); /* some mutations hit string contents and still decode */
    free(tmp);
    free(good);
    ts_decoder_destroy(dec);
}

/* ---- resolution with older writers ---- */

static const char *old_book_created =
    "{\"type\":\"record\",\"name\":\"BookCreated\",\"namespace\":\"tastesync.storybook\","
    "\"fields\":[{\"name\":\"event_id\",\"type\":\"string\"},"
    "{\"name\":\"book_id\",\"type\":\"string\"},{\"name\":\"user_id\",\"type\":\"string\"},"
    "{\"name\":\"title\",\"type\":\"string\"},"
    "{\"name\":\"created_at\",\"type\":{\"type\":\"long\",\"logicalType\":\"timestamp-millis\"}},"
    "{\"name\":\"dropped\",\"type\":\"int\",\"default\":0}]}";

static const char *old_book_deleted_int_time =
    "{\"type\":\"record\",\"name\":\"BookDeleted\",\"namespace\":\"tastesync.storybook\","
    "\"fields\":[{\"name\":\"event_id\",\"type\":\"string\"},"
    "{\"name\":\"book_id\",\"type\":\"string\"},{\"name\":\"user_id\",\"type\":\"string\"},"
    "{\"name\":\"deleted_at\",\"type\":\"int\"}]}";

static const char *old_no_title =
    "{\"type\":\"record\",\"name\":\"BookCreated\",\"namespace\":\"tastesync.storybook\","
    "\"fields\":[{\"name\":\"event_id\",\"type\":\"string\"},"
    "{\"name\":\"book_id\",\"type\":\"string\"},{\"name\":\"user_id\",\"type\":\"string\"},"
    "{\"name\":\"created_at\",\"type\":\"long\"}]}";

static void unload_versions(void) {
    unload();
    rm_tmp();
}

static void make_versions(void) {
    char path[512], *events, *text;
    make_tmp();
    snprintf(path, sizeof(path), "%s/storybook/events.avsc", SCHEMA_DIR);
    events = read_text(path);
    write_file("events_v2.avsc", events);
    free(events);
    /* v1 of the union: BookCreated without cover_image_url, and BookDeleted. */
    text = malloc(strlen(old_book_created) + strlen(old_book_deleted_int_time) + 8);
    sprintf(text, "[%s,%s]", old_book_created, old_book_deleted_int_time);
    write_file("events_v1.avsc", text);
    free(text);
    write_file("bc_v1.avsc", old_book_created);
    write_file("bad.avsc", old_no_title);
    write_file("ids.yaml", "schemas:\n"
                           "  - {id: 10, subject: ev, version: 1, file: events_v1.avsc}\n"
                           "  - {id: 11, subject: ev, version: 2, file: events_v2.avsc}\n"
                           "  - {id: 12, subject: bc, version: 1, file: bc_v1.avsc}\n"
                           "  - {id: 13, subject: bad, version: 1, file: bad.avsc}\n");
    ts_schemas_destroy(schemas);
    schemas = NULL;
    cr_assert_eq(ts_schemas_load(tmpdir, &schemas, err, sizeof(err)), TS_OK, "%s", err);
}

Test(avro, older_writer_versions_resolve, .init = make_versions, .fini = unload_versions) {
    ts_decoder *dec = ts_decoder_create(schemas, "ev");
    avro_value_t *rec;
    const char *type;
    char *buf;
    size_t len, pass;
    int32_t id;

    cr_assert_not_null(dec);
    cr_assert_not_null(ts_schemas_latest(schemas, "ev", &id));
    cr_assert_eq(id, 11, "latest version wins");

    /* Twice: the second decode goes through the cached plan. */
    for (pass = 0; pass < 2; pass++) {
        char msg[64];
        ts_event ev;
        int64_t ms;
        json_t *cover;

        /* writer = record v1 (id 12), reader = union v2. */
        buf = encode_json("bc", "{\"event_id\":\"e\",\"book_id\":\"b\",\"user_id\":\"u\","
                                "\"title\":\"Old\",\"created_at\":7,\"dropped\":3}",
                          &len);
        cr_assert_eq(frame_id(buf), 12);
        cr_assert_eq(ts_decoder_decode(dec, buf, len, &rec, &type, err, sizeof(err)), TS_OK,
                     "%s", err);
        cr_assert_str_eq(type, "BookCreated");
        ev = (ts_event){.type = type, .value = rec};
        cr_assert_str_eq(ts_event_str(&ev, "title"), "Old");
        cr_assert_null(ts_event_str(&ev, "cover_image_url")); /* from the default */
        cover = ts_event_json(&ev, "cover_image_url");
        cr_assert(json_is_null(cover));
        json_decref(cover);
        cr_assert_null(ts_event_json(&ev, "dropped"));
        cr_assert_eq(ts_event_long(&ev, "created_at", &ms), 0);
        cr_assert_eq(ms, 7);

        /* writer = union v1 (id 10), branch 0: the same body after index 0. */
        memcpy(msg, "\0\0\0\0\x0a\x00", 6);
        memcpy(msg + 6, buf + 5, len - 5);
        cr_assert_eq(ts_decoder_decode(dec, msg, len + 1, &rec, &type, err, sizeof(err)), TS_OK,
                     "%s", err);
        cr_assert_str_eq(type, "BookCreated");
        ev = (ts_event){.type = type, .value = rec};
        cr_assert_str_eq(ts_event_str(&ev, "user_id"), "u");
        cr_assert_null(ts_event_str(&ev, "cover_image_url"));
        free(buf);

        /* writer = union v1, branch 1: BookDeleted with an int time, promoted to long. */
        memcpy(msg, "\0\0\0\0\x0a\x02\x02" "e\x02" "b\x02" "u\x0c", 13);
        cr_assert_eq(ts_decoder_decode(dec, msg, 13, &rec, &type, err, sizeof(err)), TS_OK, "%s",
                     err);
        cr_assert_str_eq(type, "BookDeleted");
        ev = (ts_event){.type = type, .value = rec};
        cr_assert_eq(ts_event_long(&ev, "deleted_at", &ms), 0);
        cr_assert_eq(ms, 6);
        cr_assert_str_eq(ts_event_str(&ev, "book_id"), "b");
    }

    /* A writer lacking a reader field with no default cannot be read. */
    buf = encode_json("bad", "{\"event_id\":\"e\",\"book_id\":\"b\",\"user_id\":\"u\","
                             "\"created_at\":1}",
                      &len);
    cr_assert_eq(ts_decoder_decode(dec, buf, len, &rec, &type, err, sizeof(err)), TS_E_DECODE);
    cr_assert(strstr(err, "schema id 13 cannot be read as 'ev'") != NULL, "%s", err);
    cr_assert(strstr(err, "field 'title': not in the writer schema and has no default") != NULL,
              "%s", err);
    free(buf);
    ts_decoder_destroy(dec);
}

/* ---- bad schema folders ---- */

static void bad_folder(const char *ids, const char *avsc, const char *want) {
    ts_schemas *s = (ts_schemas *)1;
    make_tmp();
    write_file("ids.yaml", ids);
    if (avsc != NULL)
        write_file("a.avsc", avsc);
    err[0] = '\0';
    cr_assert_eq(ts_schemas_load(tmpdir, &s, err, sizeof(err)), TS_E_CONFIG, "want %s", want);
    cr_assert_null(s);
    cr_assert(strstr(err, want) != NULL, "got '%s', want '%s'", err, want);
    rm_tmp();
}

static const char *rec_a = "{\"type\":\"record\",\"name\":\"A\",\"fields\":[]}";

Test(avro, bad_ids_yaml_gives_file_line) {
    bad_folder("schemas:\n"
               "  - {id: 1, subject: a, version: 1, file: a.avsc}\n"
               "  - {id: 1, subject: b, version: 1, file: a.avsc}\n",
               rec_a, "ids.yaml:3: duplicate id 1");
    bad_folder("schemas:\n"
               "  - {id: 1, subject: a, version: 1, file: a.avsc}\n"
               "  - {id: 2, subject: a, version: 1, file: a.avsc}\n",
               rec_a, "ids.yaml:3: duplicate version 1 of subject 'a'");
    bad_folder("schemas:\n"
               "  - {id: x, subject: a, version: 1, file: a.avsc}\n",
               rec_a, "ids.yaml:2: id must be an integer");
    bad_folder("schemas:\n"
               "  - {id: 1, subject: a, file: a.avsc}\n",
               rec_a, "ids.yaml:2: an entry needs id, subject, version and file");
    bad_folder("schemas:\n"
               "  - id: 1\n"
               "    subject: a\n"
               "    colour: red\n",
               rec_a, "ids.yaml:4: unknown key 'colour'");
    bad_folder("schemas: [\n", rec_a, "ids.yaml:2:");
    bad_folder("other: 1\n", rec_a, "ids.yaml:1: unknown key 'other'");
    bad_folder("schemas:\n"
               "  - {id: 1, subject: a, version: 1, file: ../a.avsc}\n",
               rec_a, "ids.yaml:2: file must be a path inside");
    bad_folder("schemas:\n"
               "  - {id: 1, subject: a, version: 1, file: missing.avsc}\n",
               rec_a, "missing.avsc:");
    bad_folder("schemas:\n"
               "  - {id: 1, subject: a, version: 1, file: a.avsc}\n",
               "{\"type\":\"record\",\n\"name\":\"A\",\n\"fields\":[}", "a.avsc:3:");
    bad_folder("schemas:\n"
               "  - {id: 1, subject: a, version: 1, file: a.avsc}\n",
               "{\"type\":\"record\",\"name\":\"A\",\"fields\":[{\"name\":\"x\",\"type\":\"nope\"}]}",
               "a.avsc:1: unparsable schema");
    {
        ts_schemas *s = NULL;
        cr_assert_eq(ts_schemas_load("/nonexistent-dir", &s, err, sizeof(err)), TS_E_CONFIG);
        cr_assert(strstr(err, "/nonexistent-dir/ids.yaml") != NULL, "%s", err);
    }
}

/* Random bodies behind every known id, direct and resolving plans alike. */
static void random_bodies(const char *subject, int32_t first_id, int32_t last_id) {
    ts_decoder *dec = ts_decoder_create(schemas, subject);
    unsigned seed = 777;
    unsigned char buf[64];
    int32_t id;
    int i;
    cr_assert_not_null(dec);
    for (id = first_id; id <= last_id; id++) {
        for (i = 0; i < 4000; i++) {
            size_t n = 5 + (size_t)rand_r(&seed) % (sizeof(buf) - 5), k;
            buf[0] = 0;
            buf[1] = buf[2] = buf[3] = 0;
            buf[4] = (unsigned char)id;
            for (k = 5; k < n; k++) {
                /* Mostly small bytes so lengths and indexes are often in range. */
                int r = rand_r(&seed);
                buf[k] = (unsigned char)(r % 3 == 0 ? r >> 8 : (r >> 8) % 12);
            }
            (void)decode_bytes(dec, buf, n);
        }
    }
    ts_decoder_destroy(dec);
}

Test(avro, random_bodies_never_crash) {
    random_bodies("storybook.events", 1, 6);
    random_bodies("storybook.PageUpserted", 1, 6);
}

Test(avro, random_bodies_resolving_never_crash, .init = make_versions, .fini = unload_versions) {
    random_bodies("ev", 10, 13);
}
