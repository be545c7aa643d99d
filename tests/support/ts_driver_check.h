/* ts_driver_check.h - the assertions every processor's unit tests share.
 *
 * Test code only (Criterion). ok() and rejected() expect the test's driver in
 * a variable named `drv`, whose last rejection reason they print or check. */
#ifndef TS_DRIVER_CHECK_H
#define TS_DRIVER_CHECK_H

#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "ts_driver.h"

/** Asserts that `expr` (a ts_driver_send* call) applied the event. */
#define ok(expr)                                                                                \
    do {                                                                                        \
        ts_err err_ = (expr);                                                                   \
        cr_assert_eq(err_, TS_OK, "%s -> %s (%s)", #expr, ts_err_name(err_),                    \
                     ts_driver_last_reason(drv));                                               \
    } while (0)

/** Asserts that `expr` was rejected with a reason containing `needle`. */
#define rejected(expr, needle)                                                                  \
    do {                                                                                        \
        ts_err err_ = (expr);                                                                   \
        cr_assert_eq(err_, TS_E_REJECT, "%s -> %s, expected REJECT", #expr, ts_err_name(err_)); \
        cr_assert(strstr(ts_driver_last_reason(drv), needle), "reason '%s' lacks '%s'",         \
                  ts_driver_last_reason(drv), needle);                                          \
    } while (0)

static inline const char *sfield(const json_t *obj, const char *field) {
    return json_string_value(json_object_get(obj, field));
}

static inline json_int_t ifield(const json_t *obj, const char *field) {
    return json_integer_value(json_object_get(obj, field));
}

#endif
