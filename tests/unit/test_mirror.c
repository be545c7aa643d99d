/* test_mirror.c - the view mirror (ts_mirror.c): view effects applied to a
 * task's copy in RocksDB and read back for a rebuild; deletes of a view or of
 * members below a score see the members the same batch wrote; each task reads
 * only its own. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_mirror.h"
#include "ts_testenv.h"

static char dir[] = "/tmp/ts-mirror-XXXXXX";
static ts_state *st;
static int writes; /* keys written through the write function */

static void setup(void) {
    cr_assert(mkdtemp(dir));
    char err[256];
    cr_assert_eq(ts_state_open(dir, &st, err, sizeof(err)), TS_OK, "%s", err);
}

static void teardown(void) {
    ts_state_close(st);
    ts_testenv_rmtree(dir);
}

TestSuite(mirror, .init = setup, .fini = teardown);

static void write_local(void *arg, ts_state_batch *wb, const char *key, size_t klen,
                        const char *val, size_t vlen) {
    (void)arg;
    writes++;
    if (val)
        ts_state_batch_put(wb, key, klen, val, vlen);
    else
        ts_state_batch_delete(wb, key, klen);
}

static void apply(ts_mirror *m, ts_state_batch *wb, ts_effect_kind kind, const char *a,
                  const char *b, double num) {
    ts_effect e = {.kind = kind, .num = num, .a = ts_bytes_str(a)};
    if (b)
        e.b = ts_bytes_str(b);
    cr_assert_eq(ts_mirror_apply(m, wb, &e), TS_OK);
}

/* Writes the batch to the state and frees it. */
static void write_batch(ts_state_batch *wb) {
    cr_assert_eq(ts_state_write(st, wb), TS_OK);
    ts_state_batch_destroy(wb);
}

/* The mirror of `task` as text, one "set <view>=<value>" or "zadd <view>
 * <member> <score>" per line, in the order read. */
static char *read_back(const char *task) {
    ts_effects *out = ts_effects_create();
    cr_assert_eq(ts_mirror_read(st, task, out), TS_OK);
    static char text[4096];
    size_t len = 0;
    text[0] = '\0';
    for (size_t i = 0; i < ts_effects_count(out); i++) {
        const ts_effect *e = ts_effects_at(out, i);
        if (e->kind == TS_EFF_VIEW_SET)
            len += (size_t)snprintf(text + len, sizeof(text) - len, "set %.*s=%.*s\n",
                                    (int)e->a.len, e->a.data, (int)e->b.len, e->b.data);
        else
            len += (size_t)snprintf(text + len, sizeof(text) - len, "zadd %.*s %.*s %g\n",
                                    (int)e->a.len, e->a.data, (int)e->b.len, e->b.data, e->num);
    }
    ts_effects_destroy(out);
    return text;
}

Test(mirror, views_and_members_read_back_as_written) {
    ts_mirror m;
    ts_mirror_init(&m, st, "p/0", write_local, NULL);
    ts_state_batch *wb = ts_state_batch_create();
    apply(&m, wb, TS_EFF_VIEW_SET, "book:1", "{\"t\":1}", 0);
    apply(&m, wb, TS_EFF_ZADD, "top", "m1", 1);
    apply(&m, wb, TS_EFF_ZADD, "top", "m2", 5.5);
    apply(&m, wb, TS_EFF_ROW_UPSERT, "books", "cols", 0); /* not a view: left */
    write_batch(wb);
    cr_expect_eq(writes, 3, "one key per view effect, none for a row");
    cr_expect_str_eq(read_back("p/0"), "set book:1={\"t\":1}\nzadd top m1 1\nzadd top m2 5.5\n");

    wb = ts_state_batch_create();
    apply(&m, wb, TS_EFF_VIEW_SET, "book:1", "{\"t\":2}", 0);
    apply(&m, wb, TS_EFF_ZREM, "top", "m1", 0);
    write_batch(wb);
    cr_expect_str_eq(read_back("p/0"), "set book:1={\"t\":2}\nzadd top m2 5.5\n");
    ts_mirror_close(&m);
}

Test(mirror, deletes_see_the_members_their_own_batch_wrote) {
    ts_mirror m;
    ts_mirror_init(&m, st, "p/0", write_local, NULL);
    ts_state_batch *wb = ts_state_batch_create();
    apply(&m, wb, TS_EFF_ZADD, "top", "old", 1);
    apply(&m, wb, TS_EFF_ZADD, "top", "keep", 9);
    write_batch(wb);

    wb = ts_state_batch_create();
    apply(&m, wb, TS_EFF_ZADD, "top", "new-low", 0.5); /* not stored yet */
    apply(&m, wb, TS_EFF_ZADD, "top", "new-high", 7);
    apply(&m, wb, TS_EFF_ZREM_BELOW, "top", NULL, 2);
    write_batch(wb);
    cr_expect_str_eq(read_back("p/0"), "zadd top keep 9\nzadd top new-high 7\n");

    wb = ts_state_batch_create();
    apply(&m, wb, TS_EFF_VIEW_SET, "top", "x", 0);
    apply(&m, wb, TS_EFF_ZADD, "top", "newest", 3);
    apply(&m, wb, TS_EFF_VIEW_DEL, "top", NULL, 0); /* the view and every member */
    apply(&m, wb, TS_EFF_ZADD, "other", "m", 1);
    write_batch(wb);
    cr_expect_str_eq(read_back("p/0"), "zadd other m 1\n");
    ts_mirror_close(&m);
}

Test(mirror, each_task_reads_only_its_own) {
    ts_mirror a, b;
    ts_mirror_init(&a, st, "p/0", write_local, NULL);
    ts_mirror_init(&b, st, "p/1", write_local, NULL);
    ts_state_batch *wb = ts_state_batch_create();
    apply(&a, wb, TS_EFF_VIEW_SET, "v", "from 0", 0);
    apply(&b, wb, TS_EFF_VIEW_SET, "v", "from 1", 0);
    apply(&a, wb, TS_EFF_ZADD, "z", "a", 1);
    apply(&b, wb, TS_EFF_ZADD, "z", "b", 2);
    write_batch(wb);
    wb = ts_state_batch_create();
    apply(&b, wb, TS_EFF_VIEW_DEL, "z", NULL, 0); /* task 1's members of z only */
    write_batch(wb);
    cr_expect_str_eq(read_back("p/0"), "set v=from 0\nzadd z a 1\n");
    cr_expect_str_eq(read_back("p/1"), "set v=from 1\n");
    ts_mirror_close(&a);
    ts_mirror_close(&b);
}
