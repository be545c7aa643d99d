/* ts_error.h - the one error enum of the project.
 *
 * Zero is success. Every code has a name and a readable string, both taken
 * from TS_ERRNO_MAP so they cannot drift apart. The codes tell the caller what
 * to do next: RETRY (try again later, nothing lost), REJECT (this input breaks
 * a rule: to the DLQ), DECODE (bytes that are not a valid event: to the DLQ),
 * FATAL (stop the process).
 */
#ifndef TS_ERROR_H
#define TS_ERROR_H

#define TS_ERRNO_MAP(XX)                                                    \
    XX(OK, "success")                                                       \
    XX(NOMEM, "out of memory")                                              \
    XX(INVALID, "invalid argument")                                         \
    XX(CONFIG, "bad configuration")                                         \
    XX(DECODE, "message cannot be decoded")                                 \
    XX(REJECT, "event breaks a rule")                                       \
    XX(NOTFOUND, "not found")                                               \
    XX(RETRY, "temporary failure, retry later")                             \
    XX(IO, "input/output error")                                            \
    XX(STATE, "state store failure")                                        \
    XX(STOPPED, "stopped")                                                  \
    XX(FATAL, "fatal failure")

typedef enum ts_err {
#define TS_ERR_ENUM(name, str) TS_E_##name,
    TS_ERRNO_MAP(TS_ERR_ENUM)
#undef TS_ERR_ENUM
    TS_E__COUNT
} ts_err;

#define TS_OK TS_E_OK

/** @returns the code's name, e.g. "RETRY"; never NULL. */
const char *ts_err_name(ts_err err);

/** @returns a readable description of the code; never NULL. */
const char *ts_err_str(ts_err err);

/** @returns non-zero when the failure is temporary and the operation may be retried. */
int ts_err_is_retriable(ts_err err);

#endif
