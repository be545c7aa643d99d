/* test_event.c - event field accessors, Avro to JSON, time formatting, registry lookup. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_avro.h"
#include "ts_processor.h"

static const char *all_schema =
    "{\"type\":\"record\",\"name\":\"All\",\"namespace\":\"t\",\"fields\":["
    "{\"name\":\"s\",\"type\":\"string\"},"
    "{\"name\":\"opt\",\"type\":[\"null\",\"string\"],\"default\":null},"
    "{\"name\":\"n\",\"type\":\"int\"},"
    "{\"name\":\"l\",\"type\":\"long\"},"
    "{\"name\":\"at\",\"type\":{\"type\":\"long\",\"logicalType\":\"timestamp-millis\"}},"
    "{\"name\":\"d\",\"type\":\"double\"},"
    "{\"name\":\"f\",\"type\":\"float\"},"
    "{\"name\":\"flag\",\"type\":\"boolean\"},"
    "{\"name\":\"e\",\"type\":{\"type\":\"enum\",\"name\":\"Color\",\"symbols\":[\"RED\",\"GREEN\"]}},"
    "{\"name\":\"oe\",\"type\":[\"null\",\"Color\"],\"default\":null},"
    "{\"name\":\"optl\",\"type\":[\"null\",\"long\"],\"default\":null},"
    "{\"name\":\"arr\",\"type\":{\"type\":\"array\",\"items\":\"string\"}},"
    "{\"name\":\"m\",\"type\":{\"type\":\"map\",\"values\":\"int\"}},"
    "{\"name\":\"b\",\"type\":\"bytes\"},"
    "{\"name\":\"inner\",\"type\":{\"type\":\"record\",\"name\":\"Inner\",\"fields\":["
    "  {\"name\":\"x\",\"type\":\"int\"},"
    "  {\"name\":\"y\",\"type\":[\"null\",\"double\"],\"default\":null}]}},"
    "{\"name\":\"inners\",\"type\":{\"type\":\"array\",\"items\":\"Inner\"},\"default\":[]}"
    "]}";

static char tmpdir[64];
static ts_schemas *schemas;
static ts_encoder *enc;
static ts_decoder *dec;
static char err[512];

static void write_file(const char *name, const char *text) {
    char path[256];
    FILE *f;
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static void setup(void) {
    strcpy(tmpdir, "/tmp/ts_event_XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    write_file("all.avsc", all_schema);
    write_file("ids.yaml", "schemas:\n  - {id: 7, subject: all, version: 1, file: all.avsc}\n");
    cr_assert_eq(ts_schemas_load(tmpdir, &schemas, err, sizeof(err)), TS_OK, "%s", err);
    enc = ts_encoder_create(schemas, "all");
    dec = ts_decoder_create(schemas, "all");
    cr_assert_not_null(enc);
    cr_assert_not_null(dec);
}

static void teardown(void) {
    char cmd[128];
    ts_encoder_destroy(enc);
    ts_decoder_destroy(dec);
    ts_schemas_destroy(schemas);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

/* Encodes JSON and decodes it back into an event. */
static ts_event decode_json(const char *text) {
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    char *buf = NULL;
    size_t len;
    ts_event ev = {.topic = "t", .partition = 0};
    cr_assert_not_null(j, "%s", jerr.text);
    cr_assert_eq(ts_encoder_from_json(enc, j, &buf, &len, err, sizeof(err)), TS_OK, "%s", err);
    json_decref(j);
    cr_assert_eq(ts_decoder_decode(dec, buf, len, &ev.value, &ev.type, err, sizeof(err)), TS_OK,
                 "%s", err);
    free(buf);
    return ev;
}

static const char *full_event =
    "{\"s\":\"hi\",\"opt\":\"there\",\"n\":-5,\"l\":9000000000,\"at\":\"2023-11-14T22:13:20.123Z\","
    "\"d\":2.5,\"f\":0.25,\"flag\":true,\"e\":\"GREEN\",\"oe\":\"RED\",\"optl\":12,"
    "\"arr\":[\"a\",\"b\"],\"m\":{\"k\":1,\"j\":2},\"b\":\"raw\","
    "\"inner\":{\"x\":1,\"y\":0.5},\"inners\":[{\"x\":2},{\"x\":3,\"y\":1.5}]}";

static const char *minimal_event =
    "{\"s\":\"\",\"n\":0,\"l\":0,\"at\":0,\"d\":0,\"f\":0,\"flag\":false,\"e\":\"RED\","
    "\"arr\":[],\"m\":{},\"b\":\"\",\"inner\":{\"x\":0}}";

TestSuite(event, .init = setup, .fini = teardown);

Test(event, scalar_accessors) {
    ts_event ev = decode_json(full_event);
    int64_t l;
    double d;
    cr_assert_str_eq(ev.type, "All");
    cr_assert_str_eq(ts_event_str(&ev, "s"), "hi");
    cr_assert_str_eq(ts_event_str(&ev, "opt"), "there");
    cr_assert_eq(ts_event_long(&ev, "n", &l), 0);
    cr_assert_eq(l, -5);
    cr_assert_eq(ts_event_long(&ev, "l", &l), 0);
    cr_assert_eq(l, 9000000000LL);
    cr_assert_eq(ts_event_long(&ev, "at", &l), 0);
    cr_assert_eq(l, 1700000000123LL);
    cr_assert_eq(ts_event_long(&ev, "optl", &l), 0);
    cr_assert_eq(l, 12);
    cr_assert_eq(ts_event_double(&ev, "d", &d), 0);
    cr_assert_float_eq(d, 2.5, 1e-12);
    cr_assert_eq(ts_event_double(&ev, "f", &d), 0);
    cr_assert_float_eq(d, 0.25, 1e-12);
    cr_assert_str_eq(ts_event_enum(&ev, "e"), "GREEN");
    cr_assert_str_eq(ts_event_enum(&ev, "oe"), "RED");
}

Test(event, missing_null_and_wrong_type_read_as_missing) {
    ts_event ev = decode_json(minimal_event);
    int64_t l = 77;
    double d = 7.7;
    cr_assert_str_eq(ts_event_str(&ev, "s"), "");
    cr_assert_null(ts_event_str(&ev, "opt"));       /* optional, null */
    cr_assert_null(ts_event_str(&ev, "nope"));      /* no such field */
    cr_assert_null(ts_event_str(&ev, "n"));         /* not a string */
    cr_assert_eq(ts_event_long(&ev, "optl", &l), -1);
    cr_assert_eq(ts_event_long(&ev, "s", &l), -1);
    cr_assert_eq(ts_event_long(&ev, "d", &l), -1);
    cr_assert_eq(l, 77, "untouched when missing");
    cr_assert_eq(ts_event_double(&ev, "n", &d), -1);
    cr_assert_eq(ts_event_double(&ev, "nope", &d), -1);
    cr_assert_null(ts_event_enum(&ev, "oe"));
    cr_assert_null(ts_event_enum(&ev, "s"));
    cr_assert_null(ts_event_json(&ev, "nope"));
    {
        json_t *j = ts_event_json(&ev, "opt");
        cr_assert(json_is_null(j));
        json_decref(j);
    }
    {
        ts_event empty = {0};
        cr_assert_null(ts_event_str(&empty, "s"));
        cr_assert_null(ts_event_json(&empty, "s"));
    }
}

Test(event, ids_are_non_empty_and_at_most_the_longest_id) {
    char text[TS_EVENT_MAX_ID_BYTES + 256], id[TS_EVENT_MAX_ID_BYTES + 2];
    memset(id, 'i', sizeof(id) - 1);
    id[TS_EVENT_MAX_ID_BYTES] = '\0'; /* exactly the longest */
    snprintf(text, sizeof(text),
             "{\"s\":\"%s\",\"opt\":\"\",\"n\":0,\"l\":0,\"at\":0,\"d\":0,\"f\":0,"
             "\"flag\":false,\"e\":\"RED\",\"arr\":[],\"m\":{},\"b\":\"\",\"inner\":{\"x\":0}}",
             id);
    ts_event ev = decode_json(text);
    cr_assert_str_eq(ts_event_id(&ev, "s"), id);
    cr_assert_null(ts_event_id(&ev, "opt"), "empty");
    cr_assert_null(ts_event_id(&ev, "n"), "not a string");
    cr_assert_null(ts_event_id(&ev, "nope"), "missing");
    id[TS_EVENT_MAX_ID_BYTES] = 'i'; /* one byte longer */
    id[TS_EVENT_MAX_ID_BYTES + 1] = '\0';
    snprintf(text, sizeof(text),
             "{\"s\":\"%s\",\"n\":0,\"l\":0,\"at\":0,\"d\":0,\"f\":0,\"flag\":false,"
             "\"e\":\"RED\",\"arr\":[],\"m\":{},\"b\":\"\",\"inner\":{\"x\":0}}",
             id);
    ev = decode_json(text);
    cr_assert_null(ts_event_id(&ev, "s"), "longer than TS_EVENT_MAX_ID_BYTES");
    cr_assert_not_null(ts_event_str(&ev, "s"), "still a string");
    /* A NUL inside would make two ids one key: not an id. */
    avro_value_t field;
    cr_assert_eq(avro_value_get_by_name(ev.value, "s", &field, NULL), 0);
    cr_assert_eq(avro_value_set_string_len(&field, "a\0b", 4), 0); /* the length counts a NUL */
    cr_assert_null(ts_event_id(&ev, "s"), "an id with a NUL inside");
}

static void assert_json(json_t *got, const char *want_text) {
    json_t *want = json_loads(want_text, JSON_DECODE_ANY, NULL);
    char *g = json_dumps(got, JSON_ENCODE_ANY | JSON_SORT_KEYS);
    cr_assert_not_null(want, "bad expected JSON %s", want_text);
    cr_assert(json_equal(got, want), "got %s want %s", g, want_text);
    free(g);
    json_decref(want);
    json_decref(got);
}

Test(event, fields_to_json) {
    ts_event ev = decode_json(full_event);
    assert_json(ts_event_json(&ev, "arr"), "[\"a\",\"b\"]");
    assert_json(ts_event_json(&ev, "m"), "{\"k\":1,\"j\":2}");
    assert_json(ts_event_json(&ev, "inner"), "{\"x\":1,\"y\":0.5}");
    assert_json(ts_event_json(&ev, "inners"), "[{\"x\":2,\"y\":null},{\"x\":3,\"y\":1.5}]");
    assert_json(ts_event_json(&ev, "e"), "\"GREEN\"");
    assert_json(ts_event_json(&ev, "oe"), "\"RED\"");
    assert_json(ts_event_json(&ev, "b"), "\"raw\"");
    assert_json(ts_event_json(&ev, "flag"), "true");
    assert_json(ts_event_json(&ev, "at"), "1700000000123");
    assert_json(ts_event_json(&ev, "opt"), "\"there\"");
    assert_json(ts_avro_to_json(ev.value),
                "{\"s\":\"hi\",\"opt\":\"there\",\"n\":-5,\"l\":9000000000,"
                "\"at\":1700000000123,\"d\":2.5,\"f\":0.25,\"flag\":true,\"e\":\"GREEN\","
                "\"oe\":\"RED\",\"optl\":12,\"arr\":[\"a\",\"b\"],\"m\":{\"k\":1,\"j\":2},"
                "\"b\":\"raw\",\"inner\":{\"x\":1,\"y\":0.5},"
                "\"inners\":[{\"x\":2,\"y\":null},{\"x\":3,\"y\":1.5}]}");

    ev = decode_json(minimal_event);
    assert_json(ts_event_json(&ev, "arr"), "[]");
    assert_json(ts_event_json(&ev, "m"), "{}");
    assert_json(ts_event_json(&ev, "inners"), "[]"); /* from the default */
}

Test(event, nested_errors_name_the_path) {
    static const struct {
        const char *json;
        const char *want;
    } cases[] = {
        {"{\"s\":\"\",\"n\":0,\"l\":0,\"at\":0,\"d\":0,\"f\":0,\"flag\":false,\"e\":\"RED\","
         "\"arr\":[\"a\",1],\"m\":{},\"b\":\"\",\"inner\":{\"x\":0}}",
         "field 'arr[1]': expected string, got integer"},
        {"{\"s\":\"\",\"n\":0,\"l\":0,\"at\":0,\"d\":0,\"f\":0,\"flag\":false,\"e\":\"RED\","
         "\"arr\":[],\"m\":{\"q\":\"x\"},\"b\":\"\",\"inner\":{\"x\":0}}",
         "field 'm[q]': expected int, got string"},
        {"{\"s\":\"\",\"n\":0,\"l\":0,\"at\":0,\"d\":0,\"f\":0,\"flag\":false,\"e\":\"BLUE\","
         "\"arr\":[],\"m\":{},\"b\":\"\",\"inner\":{\"x\":0}}",
         "field 'e': 'BLUE' is not a symbol of enum Color"},
        {"{\"s\":\"\",\"n\":0,\"l\":0,\"at\":0,\"d\":0,\"f\":0,\"flag\":false,\"e\":\"RED\","
         "\"arr\":[],\"m\":{},\"b\":\"\",\"inner\":{\"x\":0,\"y\":\"no\"}}",
         "field 'inner.y': expected double, got string"},
        {"{\"s\":\"\",\"n\":0,\"l\":0,\"at\":0,\"d\":0,\"f\":0,\"flag\":1,\"e\":\"RED\","
         "\"arr\":[],\"m\":{},\"b\":\"\",\"inner\":{\"x\":0}}",
         "field 'flag': expected boolean, got integer"},
    };
    size_t i;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *j = json_loads(cases[i].json, 0, NULL);
        char *buf = NULL;
        size_t len;
        cr_assert_not_null(j, "case %zu", i);
        cr_assert_eq(ts_encoder_from_json(enc, j, &buf, &len, err, sizeof(err)), TS_E_INVALID);
        cr_assert(strstr(err, cases[i].want) != NULL, "case %zu: got '%s' want '%s'", i, err,
                  cases[i].want);
        json_decref(j);
    }
}

Test(event, avro_json_union_form_accepted) {
    ts_event ev = decode_json(
        "{\"s\":\"\",\"opt\":{\"string\":\"w\"},\"n\":0,\"l\":0,\"at\":0,\"d\":0,\"f\":0,"
        "\"flag\":false,\"e\":\"RED\",\"oe\":{\"t.Color\":\"GREEN\"},\"arr\":[],\"m\":{},"
        "\"b\":\"\",\"inner\":{\"x\":0}}");
    cr_assert_str_eq(ts_event_str(&ev, "opt"), "w");
    cr_assert_str_eq(ts_event_enum(&ev, "oe"), "GREEN");
}

Test(event, time_iso) {
    char buf[32];
    cr_assert_str_eq(ts_time_iso(1700000000123LL, buf, sizeof(buf)), "2023-11-14T22:13:20.123Z");
    cr_assert_str_eq(ts_time_iso(0, buf, sizeof(buf)), "1970-01-01T00:00:00.000Z");
    cr_assert_str_eq(ts_time_iso(-1, buf, sizeof(buf)), "1969-12-31T23:59:59.999Z");
    cr_assert_str_eq(ts_time_iso(1795302208123LL, buf, sizeof(buf)), "2026-11-21T23:03:28.123Z");
    cr_assert_str_eq(ts_time_iso(951782400000LL, buf, sizeof(buf)), "2000-02-29T00:00:00.000Z");
}

static void *noop_create(const json_t *params, char *e, size_t elen) {
    (void)params;
    (void)e;
    (void)elen;
    return NULL;
}

Test(event, processor_find) {
    static const ts_processor_def a = {.name = "alpha", .create = noop_create};
    static const ts_processor_def b = {.name = "beta", .create = noop_create};
    const ts_processor_def *const reg[] = {&a, &b, NULL};
    cr_assert_eq(ts_processor_find(reg, "alpha"), &a);
    cr_assert_eq(ts_processor_find(reg, "beta"), &b);
    cr_assert_null(ts_processor_find(reg, "gamma"));
    cr_assert_null(ts_processor_find(reg, NULL));
}
